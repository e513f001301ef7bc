"""Accounts in the request path: suspension refuses everything, strikes and payments change
state by the policy's rules, events carry key ids (never keys)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from regiongate import RegionGate
from regiongate.accounts.model import Key, Payment, State
from regiongate.accounts.service import Accounts
from regiongate.accounts.store import Store
from regiongate.clientip import ClientIPConfig, ClientResolver
from regiongate.config import AccountsSettings
from regiongate.enforce.gate import Gate, GateState
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import load_policy
from tests.accounts.stores import open_store

US, CN = "3.0.0.1", "4.0.0.1"
NOTICE = dt.datetime(2024, 7, 1, tzinfo=dt.UTC).timestamp()
ENFORCE = dt.datetime(2024, 7, 10, tzinfo=dt.UTC).timestamp()
POLICY = """
name = "test-accounts"
version = "1"
supported = ["US", "CA", "UA", "DE"]
unsupported = ["UA-43"]
notice_from = 2024-06-25
enforce_from = 2024-07-09
[accounts]
strikes = 3
window = "1h"
payments = "suspend"
[exemptions]
accounts = ["org-vip"]
"""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class World:
    """A gate with accounts on a real store, in front of a tiny app."""

    def __init__(self, store: Store, snapshot: Path, tmp: Path, policy_text: str = POLICY,
                 **settings: Any) -> None:  # fmt: skip
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "policy.toml"
        path.write_text(policy_text)
        self.policy = load_policy(path)
        self.clock = Clock(NOTICE)
        self.store = store
        self.gate = Gate(
            GateState(
                snapshot=Snapshot(snapshot),
                policy=self.policy,
                resolver=ClientResolver(ClientIPConfig(trusted_proxies=("127.0.0.1/32",))),
                snapshot_stamp=None,
                policy_stamp=None,
                loaded_at=0.0,
            ),
            clock=self.clock,
        )
        self.accounts = Accounts(
            store,
            AccountsSettings(spool_dir=str(tmp / "spool"), **settings),
            lambda: self.gate.state.policy,
            clock=self.clock,
            secret=b"s" * 32,
        )
        self.reached: list[str | None] = []

        async def endpoint(request: Request) -> JSONResponse:
            await request.body()  # as an API does (the end-user hint is read on the way)
            self.reached.append(request.headers.get("x-regiongate-territory"))
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/v1/{rest:path}", endpoint, methods=["GET", "POST"])])
        self.app = RegionGate(app, gate=self.gate, accounts=self.accounts)
        for org in ("org-a", "org-b", "org-vip"):
            store.upsert_org(org, actor="test")
        store.add_key(Key(self.kid("sk-a"), "org-a"), actor="test")
        store.add_key(Key(self.kid("sk-b"), "org-b"), actor="test")
        store.add_key(Key(self.kid("sk-vip"), "org-vip"), actor="test")
        self.accounts.start()

    def kid(self, key: str) -> str:
        return self.accounts.hasher.key_id(key)

    def get(
        self, key: str | None, client: str, extra: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = {"X-Forwarded-For": client, **(extra or {})}
        if key:
            headers["Authorization"] = f"Bearer {key}"

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                return await c.get("/v1/models", headers=headers)

        return asyncio.run(go())

    def settle(self) -> None:
        """Events written and rules applied; the cache has seen the changes."""
        assert self.accounts.sink.flush(20)
        self.accounts.cache.refresh()

    def state(self, org: str) -> State:
        found = self.store.get_org(org)
        assert found is not None
        return found.state


@pytest.fixture
def world(tmp_path: Path, tiny_snapshot_path: Path) -> Iterator[World]:
    for store in open_store("sqlite", tmp_path):
        w = World(store, tiny_snapshot_path, tmp_path)
        yield w
        w.accounts.close()


def test_forged_regiongate_headers_never_reach_the_app_for_a_keyed_request(world: World) -> None:
    forged = {"X-Regiongate-Territory": "US", "X-Regiongate-Decision": "allow"}
    for key in ("sk-a", "sk-vip", None):  # an account, an exempt one, and none
        world.reached.clear()
        assert world.get(key, CN, forged).status_code == 200  # the notice phase: flagged
        assert world.reached == ["CN"], key


def test_suspended_org_is_refused_for_every_key_and_territory(world: World) -> None:
    assert world.get("sk-a", US).status_code == 200
    world.store.transition("org-a", State.SUSPENDED, actor="admin:ops", reason="manual")
    world.settle()
    for client in (US, CN):
        r = world.get("sk-a", client)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "account_deactivated"
    assert world.get("sk-b", US).status_code == 200  # others unaffected
    world.settle()
    events = world.store.count_events("org-a")
    assert events == 3  # the allowed one and the two refusals are all on record
    world.store.transition("org-a", State.APPEAL_PENDING, actor="admin:ops", reason="appeal")
    world.settle()
    assert world.get("sk-a", US).status_code == 403
    world.store.transition("org-a", State.REINSTATED, actor="admin:ops", reason="granted")
    world.settle()
    assert world.get("sk-a", US).status_code == 200


def test_strikes_warn_in_notice_and_suspend_in_enforcement(world: World) -> None:
    for _ in range(3):  # notice phase: CN is flagged, passes, and strikes
        assert world.get("sk-a", CN).status_code == 200
    world.settle()
    assert world.state("org-a") is State.WARNED
    warned = [e for e in world.store.audit(org="org-a") if e.action == "state"][-1]
    assert warned.actor == "rule:strikes" and len(warned.evidence) == 3
    world.clock.now = ENFORCE
    for _ in range(2):  # enforcement: blocked, and still striking (old ones out of window)
        assert world.get("sk-a", CN).status_code == 403
    world.settle()
    assert world.state("org-a") is State.WARNED
    assert world.get("sk-a", CN).status_code == 403
    world.settle()
    assert world.state("org-a") is State.SUSPENDED
    assert world.get("sk-a", US).json()["error"]["code"] == "account_deactivated"
    assert world.state("org-b") is State.ACTIVE


def test_exempt_org_is_never_struck(world: World) -> None:
    world.clock.now = ENFORCE
    for _ in range(5):
        world.get("sk-vip", CN)
    world.settle()
    assert world.state("org-vip") is State.ACTIVE


def test_payment_from_unsupported_territory_suspends(world: World) -> None:
    rules = world.accounts.rules
    new, changed = rules.on_payment(
        Payment("pay-1", "org-b", ENFORCE, card_country="US", billing_country="US"), actor="t"
    )
    assert new and changed is None and world.state("org-b") is State.ACTIVE
    new, changed = rules.on_payment(
        Payment("pay-2", "org-b", ENFORCE, card_country="RU", billing_country="US"), actor="t"
    )
    assert new and changed is not None and changed.state is State.SUSPENDED
    entry = [e for e in world.store.audit(org="org-b") if e.action == "state"][-1]
    assert entry.actor == "rule:payments" and entry.evidence == ("pay-2",)
    assert "card RU" in entry.reason
    world.settle()
    assert world.get("sk-b", US).status_code == 403  # clean traffic, refused all the same


def test_unknown_keys_pass_or_are_refused(tmp_path: Path, tiny_snapshot_path: Path) -> None:
    for store in open_store("sqlite", tmp_path):
        w = World(store, tiny_snapshot_path, tmp_path)
        assert w.get("sk-nobody", US).status_code == 200
        assert w.get("sk-nobody", CN).status_code == 200  # the notice phase: flagged
        assert w.get(None, US).status_code == 200
        assert w.accounts.unknown_key_requests == 2
        assert w.reached == ["US", "CN", "US"]  # passed on with the territory header
        w.settle()
        assert [w.store.count_events(o) for o in ("org-a", "org-b", "org-vip")] == [0, 0, 0]
        w.accounts.close()
        strict = World(store, tiny_snapshot_path, tmp_path / "b", unknown_keys="block")
        r = strict.get("sk-nobody", US)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert strict.get("sk-a", US).status_code == 200
        strict.accounts.close()


def test_raw_key_is_never_stored(world: World, tmp_path: Path) -> None:
    secret_key = "sk-live-DO-NOT-STORE-0123456789"
    world.store.add_key(Key(world.kid(secret_key), "org-a"), actor="test")
    world.settle()
    world.get(secret_key, CN)
    world.settle()
    assert world.store.count_events("org-a") == 1
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret_key.encode() not in path.read_bytes(), path


def test_dry_run_changes_no_state(tmp_path: Path, tiny_snapshot_path: Path) -> None:
    for store in open_store("sqlite", tmp_path):
        w = World(store, tiny_snapshot_path, tmp_path,
                  POLICY.replace('version = "1"', 'version = "1"\nmode = "dry-run"'))  # fmt: skip
        w.clock.now = ENFORCE
        for _ in range(5):
            assert w.get("sk-a", CN).status_code == 200
        w.settle()
        assert w.state("org-a") is State.ACTIVE
        w.accounts.close()
