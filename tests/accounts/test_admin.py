"""The admin API: every route authenticated, every change audited, no 5xx for any input, and
the raw API key nowhere (not in a response, not in the database)."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks
from starlette.applications import Starlette
from starlette.routing import Route

from regiongate.accounts import admin as admin_module
from regiongate.accounts.admin import (
    MOUNT,
    OPERATIONS,
    admin_app,
    openapi_document,
    tokens_from_settings,
)
from regiongate.accounts.identity import KeyHasher
from regiongate.accounts.model import Event, State
from regiongate.accounts.service import RulesEngine
from regiongate.accounts.store import Store, StoreUnavailable
from regiongate.accounts.tokens import Role, Tokens, new_token
from regiongate.config import AdminSettings
from regiongate.errors import ConfigError
from regiongate.policy import load_policy
from tests.accounts.stores import open_store

RAW_KEY = "sk-live-NEVER-STORE-ME-0123456789abcdef"
SAMPLE_PARAMS = {"org_id": "org-sample", "key_id": "kid_" + "0" * 32, "review_id": "rv_sample"}


class Api:
    """The admin app behind httpx's ASGI transport, on one event loop for the whole test."""

    def __init__(self, app: Starlette, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.runner = asyncio.Runner()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://admin"
        )
        self.seen: list[str] = []  # every response body, to look for the raw key

    def __call__(
        self,
        method: str,
        path: str,
        *,
        as_: str | None = "ops",
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        h = dict(headers or {})
        if as_ is not None:
            h.setdefault("Authorization", f"Bearer {self.tokens[as_]}")
        if json_body is not None:
            content = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        response = self.runner.run(self.client.request(method, path, content=content, headers=h))
        self.seen.append(response.text)
        return response

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()


def make_tokens() -> tuple[Tokens, dict[str, str]]:
    secrets: dict[str, str] = {}
    entries = []
    for name, role in (("watcher", "viewer"), ("ops", "operator"), ("root", "admin")):
        token, entry = new_token(name, role)
        secrets[name] = token
        entries.append(entry)
    return Tokens.parse("\n".join(entries), source="test-tokens.toml"), secrets


HASHER = KeyHasher(b"k" * 32)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store("sqlite", tmp_path)


@pytest.fixture
def app(store: Store) -> tuple[Starlette, dict[str, str]]:
    tokens, secrets = make_tokens()
    rules = RulesEngine(store, lambda: load_policy("api-2024"))
    return admin_app(store, rules, HASHER, tokens), secrets


@pytest.fixture
def api(app: tuple[Starlette, dict[str, str]]) -> Iterator[Api]:
    client = Api(*app)
    yield client
    client.close()


def endpoints(app: Starlette) -> list[tuple[str, str]]:
    """(method, concrete path) for every route of the app, path parameters filled in."""
    out: list[tuple[str, str]] = []
    for route in app.routes:
        assert isinstance(route, Route)
        path = route.path
        for name in route.param_convertors:
            path = path.replace("{" + name + "}", SAMPLE_PARAMS[name])
        assert "{" not in path, f"no sample for a parameter of {route.path}"
        out.extend((method, path) for method in sorted(route.methods or ()))
    return out


def audit_actions(api: Api, actor: str) -> list[str]:
    entries = api("GET", "/audit?limit=1000", as_="watcher").json()["entries"]
    return [e["action"] for e in entries if e["actor"] == actor]


# --- tokens --------------------------------------------------------------------------------------


def test_new_token_round_trips_through_the_file(tmp_path: Path) -> None:
    token, entry = new_token("deploy-bot", "admin")
    assert len(token) >= 40 and token not in entry
    path = tmp_path / "tokens.toml"
    path.write_text(entry)
    tokens = Tokens.load(path)
    assert tokens.check(f"Bearer {token}") == ("deploy-bot", Role.ADMIN)
    assert tokens.check(f"bearer   {token}  ") == ("deploy-bot", Role.ADMIN)
    for bad in (
        None,
        "",
        token,
        f"Basic {token}",
        f"Bearer {token}x",
        "Bearer ",
        "Bearer " + "a" * 5000,
    ):
        assert tokens.check(bad) is None


def test_check_compares_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens, secrets = make_tokens()
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr("regiongate.accounts.tokens.hmac.compare_digest", counting)
    for header in (
        f"Bearer {secrets['watcher']}",
        f"Bearer {secrets['root']}",
        "Bearer nope",
        None,
    ):
        calls.clear()
        tokens.check(header)
        assert len(calls) == len(tokens) == 3  # no early exit on the first match


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[token]\n", "not valid TOML"),
        ("", "no [[token]] entries"),
        ("token = 3\n", "array of tables"),
        ('[[tokens]]\nname = "a"\n', "unknown key 'tokens'"),
        ('[[token]]\nname = "a"\nrole = "viewer"\n', "sha256 is missing"),
        ('[[token]]\nname = "a"\nrole = "boss"\nsha256 = "' + "0" * 64 + '"\n', "role 'boss'"),
        ('[[token]]\nname = "a"\nrole = "viewer"\nsha256 = "xyz"\n', "64 hex digits"),
        ('[[token]]\nname = "a b"\nrole = "viewer"\nsha256 = "' + "0" * 64 + '"\n', "name"),
        ('[[token]]\nname = 1\nrole = "viewer"\nsha256 = "' + "0" * 64 + '"\n', "must be a string"),
        ('[[token]]\nname = "a"\nrole = "viewer"\ntoken = "x"\nsha256 = "' + "0" * 64 + '"\n',
         "unknown key 'token'"),
        ('[[token]]\nname = "a"\nrole = "viewer"\nsha256 = "' + "0" * 64 + '"\n'
         '[[token]]\nname = "a"\nrole = "admin"\nsha256 = "' + "1" * 64 + '"\n', "appears twice"),
        ('[[token]]\nname = "a"\nrole = "viewer"\nsha256 = "' + "0" * 64 + '"\n'
         '[[token]]\nname = "b"\nrole = "admin"\nsha256 = "' + "0" * 64 + '"\n', "digest of another"),
    ],
)  # fmt: skip
def test_malformed_tokens_file_names_the_file_and_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "admin-tokens.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Tokens.load(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_tokens_from_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such tokens file"):
        tokens_from_settings(AdminSettings(tokens_file=str(tmp_path / "missing.toml")))
    _, entry = new_token("ops", "viewer")
    (tmp_path / "t.toml").write_text(entry)
    assert tokens_from_settings(AdminSettings(tokens_file=str(tmp_path / "t.toml"))).names == (
        "ops",
    )


# --- authentication and roles ---------------------------------------------------------------------


def test_every_route_refuses_a_missing_or_wrong_token(
    api: Api, app: tuple[Starlette, dict[str, str]]
) -> None:
    routes = endpoints(app[0])
    assert len({(m, p) for m, p in routes if m != "HEAD"}) == len(OPERATIONS)
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic b3BzOng="}):
            r = api(method, path, as_=None, headers=headers, json_body={})
            assert r.status_code == 401, (method, path, headers)
            assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)
            if method != "HEAD":
                assert r.json()["error"]["type"] == "authentication_error"


def test_viewer_cannot_mutate(api: Api, app: tuple[Starlette, dict[str, str]]) -> None:
    api("PUT", "/orgs/org-sample", json_body={})
    mutations = [(m, p) for m, p in endpoints(app[0]) if m not in {"GET", "HEAD"}]
    assert {m for m, _ in mutations} == {"PUT", "POST", "DELETE"}
    for method, path in mutations:
        r = api(method, path, as_="watcher", json_body={})
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["code"] == "insufficient_role"
    assert audit_actions(api, "admin:watcher") == []
    for method, path in endpoints(app[0]):
        if method == "GET":
            assert api(method, path, as_="watcher").status_code in (200, 404), path


def test_openapi_describes_every_route(api: Api, app: tuple[Starlette, dict[str, str]]) -> None:
    doc = api("GET", "/openapi.json", as_="watcher").json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    described = {
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS[m.group(1)], path))
        for path, ops in doc["paths"].items()
        for method in ops
    }
    assert described == {(m, p) for m, p in endpoints(app[0]) if m != "HEAD"}
    for ops in doc["paths"].values():
        for spec in ops.values():
            assert {"401", "403"} <= set(spec["responses"])
    body = doc["paths"]["/payments"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PaymentCreate"}
    assert doc["components"]["schemas"]["PaymentCreate"]["additionalProperties"] is False
    assert doc == openapi_document()


def test_store_unavailable_is_503(tmp_path: Path) -> None:
    class Down:
        url = "sqlite:///down"

        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreUnavailable("store sqlite:///down: connection refused")

            return fail

    tokens, secrets = make_tokens()
    down: Any = Down()
    api = Api(admin_app(down, RulesEngine(down, lambda: load_policy("api-2024")), HASHER, tokens),
              secrets)  # fmt: skip
    try:
        for method, path, body in (
            ("GET", "/orgs", None),
            ("GET", "/orgs/a", None),
            ("POST", "/payments", {"id": "p", "org": "a"}),
            ("POST", "/orgs/a/state", {"state": "suspended", "reason": "x"}),
        ):
            r = api(method, path, json_body=body)
            assert r.status_code == 503, path
            assert r.json()["error"]["code"] == "store_unavailable"
            assert "down" not in r.text  # the store's URL stays in the log
    finally:
        api.close()


def test_mounted_at_admin_api(app: tuple[Starlette, dict[str, str]]) -> None:
    """How the gateway mounts it: a raw ASGI dispatch on the prefix, with root_path set."""
    admin, secrets = app

    async def gateway(scope: Any, receive: Any, send: Any) -> None:
        path = scope["path"]
        if scope["type"] == "http" and (path == MOUNT or path.startswith(MOUNT + "/")):
            root = scope.get("root_path", "") + MOUNT
            await admin({**scope, "root_path": root}, receive, send)
            return
        raise AssertionError(f"not for the admin API: {path}")

    api = Api(gateway, secrets)  # type: ignore[arg-type]
    try:
        assert api("GET", f"{MOUNT}/orgs").json()["orgs"] == []
        assert api("PUT", f"{MOUNT}/orgs/o1", json_body={}).status_code == 201
        assert api("GET", f"{MOUNT}/orgs/o1").status_code == 200
        assert api("GET", f"{MOUNT}/orgs", as_=None).status_code == 401
        assert api("GET", f"{MOUNT}/openapi.json").json()["servers"] == [{"url": MOUNT}]
        assert api("GET", f"{MOUNT}/nothing").status_code == 404
    finally:
        api.close()


# --- the routes ----------------------------------------------------------------------------------


def test_orgs_create_update_list_and_detail(api: Api) -> None:
    r = api("PUT", "/orgs/org-a", json_body={"name": "Acme", "email": "ops@acme.test"})
    assert r.status_code == 201
    assert r.json() == {
        "id": "org-a", "name": "Acme", "email": "ops@acme.test", "state": "active",
        "state_since": 0.0, "version": 0,
    }  # fmt: skip
    r = api("PUT", "/orgs/org-a", json_body={"name": "Acme Inc"})
    assert r.status_code == 200 and r.json()["name"] == "Acme Inc"
    assert r.json()["email"] == "ops@acme.test"
    assert api("PUT", "/orgs/org-b", json_body={}).status_code == 201
    assert api("PUT", "/orgs/org-c", json_body={}).status_code == 201

    r = api("GET", "/orgs", as_="watcher")
    assert r.status_code == 200 and [o["id"] for o in r.json()["orgs"]] == [
        "org-a",
        "org-b",
        "org-c",
    ]
    r = api("GET", "/orgs?limit=1&offset=1", as_="watcher")
    assert r.json() == {"orgs": [r.json()["orgs"][0]], "limit": 1, "offset": 1}
    assert r.json()["orgs"][0]["id"] == "org-b"
    assert api("GET", "/orgs?state=suspended", as_="watcher").json()["orgs"] == []

    detail = api("GET", "/orgs/org-a", as_="watcher").json()
    assert detail["org"]["name"] == "Acme Inc" and detail["keys"] == []
    assert [e["action"] for e in detail["audit"]] == ["org.create", "org.update", "org.update"]
    assert {e["actor"] for e in detail["audit"]} == {"admin:ops"}

    r = api("GET", "/orgs/nobody", as_="watcher")
    assert r.status_code == 404 and r.json()["error"]["code"] == "org_not_found"


def test_org_detail_holds_the_newest_50_audit_entries(api: Api, store: Store) -> None:
    api("PUT", "/orgs/busy", json_body={})
    api("PUT", "/orgs/other", json_body={})
    for i in range(70):
        store.upsert_org("busy", name=f"n{i}", actor="test")
        store.upsert_org("other", name=f"n{i}", actor="test")
    audit = api("GET", "/orgs/busy", as_="watcher").json()["audit"]
    assert len(audit) == 50
    assert [e["detail"]["name"] for e in audit] == [f"n{i}" for i in range(20, 70)]
    assert {e["org"] for e in audit} == {"busy"}


def test_keys_register_revoke(api: Api, store: Store) -> None:
    api("PUT", "/orgs/org-a", json_body={})
    api("PUT", "/orgs/org-b", json_body={})
    kid = HASHER.key_id(RAW_KEY)

    r = api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY, "label": "prod"})
    assert r.status_code == 201
    assert r.json()["key_id"] == kid and r.json()["org"] == "org-a" and r.json()["label"] == "prod"
    assert store.key_orgs() == {kid: "org-a"}
    # again: the same record (200), label kept; another organisation: refused
    r = api("POST", "/orgs/org-a/keys", json_body={"key_id": kid})
    assert r.status_code == 200 and r.json()["label"] == "prod"
    r = api("POST", "/orgs/org-b/keys", json_body={"key": RAW_KEY})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_conflict"
    r = api("POST", "/orgs/nobody/keys", json_body={"key": "sk-other"})
    assert r.status_code == 404
    other = "kid_" + "ab" * 16
    assert api("POST", "/orgs/org-b/keys", json_body={"key_id": other}).status_code == 201

    r = api("DELETE", f"/keys/{kid}")
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert store.key_orgs() == {other: "org-b"}
    r = api("DELETE", f"/keys/{kid}")  # idempotent
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = api("DELETE", "/keys/kid_" + "f" * 32)
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"

    assert audit_actions(api, "admin:ops").count("key.add") == 3
    assert audit_actions(api, "admin:ops").count("key.revoke") == 1


def test_payment_from_russia_suspends_the_org(api: Api, store: Store) -> None:
    api("PUT", "/orgs/org-a", json_body={})
    r = api("POST", "/payments", json_body={
        "id": "pay-1", "org": "org-a", "card_country": "us", "billing_country": "DE",
        "amount": 20, "currency": "usd", "at": "2024-07-10T12:00:00Z",
    })  # fmt: skip
    assert r.status_code == 201 and r.json() == {"new": True, "state_changed": None}
    [payment] = store.list_payments("org-a")
    assert (payment.card_country, payment.currency, payment.at) == ("US", "USD", 1720612800.0)

    r = api("POST", "/payments", json_body={"id": "pay-2", "org": "org-a", "card_country": "RU",
                                             "at": 1720612900})  # fmt: skip
    assert r.status_code == 201
    assert r.json()["new"] is True and r.json()["state_changed"]["state"] == "suspended"
    org = store.get_org("org-a")
    assert org is not None and org.state is State.SUSPENDED

    r = api("POST", "/payments", json_body={"id": "pay-2", "org": "org-a", "card_country": "RU"})
    assert r.status_code == 200 and r.json() == {"new": False, "state_changed": None}

    entries = api("GET", "/audit?org=org-a", as_="watcher").json()["entries"]
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("admin:ops", "org.create"),
        ("admin:ops", "payment"),
        ("admin:ops", "payment"),
        ("rule:payments", "state"),
    ]
    assert entries[-1]["evidence"] == ["pay-2"]
    # a payment for an organisation not seen before creates it (payments may come first)
    r = api(
        "POST", "/payments", json_body={"id": "pay-3", "org": "org-new", "billing_country": "UA-43"}
    )
    assert r.json()["state_changed"]["state"] == "suspended"


def test_state_route_suspends_and_refuses_what_is_not_allowed(api: Api, store: Store) -> None:
    api("PUT", "/orgs/org-a", json_body={})
    body = {"state": "suspended", "reason": "manual review", "evidence": ["ticket-42"]}
    r = api("POST", "/orgs/org-a/state", json_body=body)
    assert r.status_code == 200
    assert r.json()["state"] == "suspended" and r.json()["version"] == 1
    assert store.refused_orgs() == {"org-a": State.SUSPENDED}
    [entry] = [e for e in store.audit(org="org-a") if e.action == "state"]
    assert (entry.actor, entry.reason, entry.evidence) == (
        "admin:ops",
        "manual review",
        ("ticket-42",),
    )
    assert (entry.from_state, entry.to_state) == ("active", "suspended")

    r = api("POST", "/orgs/org-a/state", json_body=body)
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_change"
    r = api("POST", "/orgs/org-a/state", json_body={"state": "warned", "reason": "x"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "transition_not_allowed"
    r = api("POST", "/orgs/nobody/state", json_body=body)
    assert r.status_code == 404 and store.get_org("nobody") is None

    # force: admins only
    forced = {"state": "warned", "reason": "support call", "force": True}
    r = api("POST", "/orgs/org-a/state", json_body=forced)
    assert r.status_code == 403 and r.json()["error"]["param"] == "force"
    r = api("POST", "/orgs/org-a/state", as_="root", json_body=forced)
    assert r.status_code == 200 and r.json()["state"] == "warned"
    last = store.audit(org="org-a")[-1]
    assert (last.actor, last.from_state, last.to_state) == ("admin:root", "suspended", "warned")
    r = api("POST", "/orgs/org-a/state", json_body={"state": "active", "reason": "ok"})
    assert r.status_code == 200 and r.json()["state"] == "active"


def test_audit_paging_and_event_count(api: Api, store: Store) -> None:
    api("PUT", "/orgs/org-a", json_body={"name": "A"})
    api("PUT", "/orgs/org-b", json_body={})
    store.add_events([
        Event.from_dict({"id": f"ev{i}", "org": "org-a" if i % 3 else "org-b", "key_id": "kid_x",
                         "at": 1.0 + i, "territory": "US", "action": "allow", "rule": "ok"})
        for i in range(9)
    ])  # fmt: skip
    assert api("GET", "/events/count", as_="watcher").json() == {"org": None, "count": 9}
    assert api("GET", "/events/count?org=org-a", as_="watcher").json() == {
        "org": "org-a",
        "count": 6,
    }

    page = api("GET", "/audit?limit=2", as_="watcher").json()
    assert len(page["entries"]) == 2
    rest = api("GET", f"/audit?since={page['next']}", as_="watcher").json()
    assert [e["seq"] for e in rest["entries"]] == [page["next"] + 1]
    assert api("GET", f"/audit?since={rest['next']}", as_="watcher").json() == {
        "entries": [], "next": rest["next"],
    }  # fmt: skip
    org_b = api("GET", "/audit?org=org-b", as_="watcher").json()["entries"]
    assert [e["action"] for e in org_b] == ["org.create"]


def test_every_admin_mutation_is_audited(api: Api) -> None:
    api("PUT", "/orgs/org-a", json_body={"name": "A"})
    api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY})
    api("DELETE", f"/keys/{HASHER.key_id(RAW_KEY)}")
    api("POST", "/payments", json_body={"id": "p1", "org": "org-a", "card_country": "US"})
    api("POST", "/orgs/org-a/state", json_body={"state": "warned", "reason": "r"})
    api("POST", "/orgs/org-a/state", as_="root",
        json_body={"state": "active", "reason": "r", "force": True})  # fmt: skip
    assert audit_actions(api, "admin:ops") == [
        "org.create", "org.update", "key.add", "key.revoke", "payment", "state",
    ]  # fmt: skip
    assert audit_actions(api, "admin:root") == ["state"]


def test_raw_key_is_never_returned_or_stored(api: Api, store: Store, tmp_path: Path) -> None:
    api("PUT", "/orgs/org-a", json_body={})
    api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY, "label": "prod"})
    api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY})
    api("POST", "/orgs/org-b/keys", json_body={"key": RAW_KEY})  # 404: no such org
    api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY, "key_id": "kid_" + "0" * 32})
    api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY, "label": 7})
    api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY + "\u0000"})
    api("POST", "/orgs/org-a/keys", json_body={"key_id": RAW_KEY})  # a key where an id goes
    api("POST", "/orgs/org-a/keys", json_body={"key": RAW_KEY * 20})  # too long
    api("GET", "/orgs/org-a", as_="watcher")
    api("GET", "/audit", as_="watcher")
    api("GET", "/openapi.json", as_="watcher")
    assert len(api.seen) == 12
    assert not any(RAW_KEY in text for text in api.seen)
    assert store.key_orgs() == {HASHER.key_id(RAW_KEY): "org-a"}
    store.close()  # checkpoint the WAL into the file, then read every byte left on disk
    files = list(tmp_path.glob("accounts.db*"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert RAW_KEY.encode() not in data, path
        assert RAW_KEY.encode("utf-16-le") not in data, path


@pytest.mark.parametrize(
    ("method", "path", "content", "ctype", "status", "code"),
    [
        ("PUT", "/orgs/a", b"{", None, 400, "invalid_json"),
        ("PUT", "/orgs/a", b"", None, 400, "invalid_json"),
        ("PUT", "/orgs/a", b"\xff\xfe", None, 400, "invalid_json"),
        ("PUT", "/orgs/a", b'{"name": "\\ud800"}', None, 400, "invalid_json"),
        ("PUT", "/orgs/a", b"[]", None, 422, "invalid_body"),
        ("PUT", "/orgs/a", b'{"name": 5}', None, 422, "invalid_body"),
        ("PUT", "/orgs/a", b'{"nmae": "x"}', None, 422, "invalid_body"),
        ("PUT", "/orgs/a", b'{"name": "' + b"x" * 201 + b'"}', None, 422, "invalid_body"),
        ("PUT", "/orgs/a", b'{"name": "a\\u0000b"}', None, 422, "invalid_body"),
        ("PUT", "/orgs/a", b'{"name": "a\\u0085b"}', None, 422, "invalid_body"),
        ("PUT", "/orgs/a", b'{"email": "not-an-email"}', None, 422, "invalid_body"),
        ("PUT", "/orgs/a", b"{}", "text/plain", 415, "unsupported_media_type"),
        ("PUT", "/orgs/a", b'{"name": "' + b"x" * 70_000 + b'"}', None, 413, "body_too_large"),
        ("PUT", "/orgs/" + "x" * 201, b"{}", None, 400, "invalid_parameter"),
        ("PUT", "/orgs/a%00b", b"{}", None, 400, "invalid_parameter"),
        ("POST", "/orgs/a/keys", b"{}", None, 422, "invalid_body"),
        ("POST", "/orgs/a/keys", b'{"key": ""}', None, 422, "invalid_body"),
        ("POST", "/orgs/a/keys", b'{"key": "' + b"k" * 513 + b'"}', None, 422, "invalid_body"),
        ("POST", "/orgs/a/keys", b'{"key_id": "kid_XYZ"}', None, 422, "invalid_body"),
        ("POST", "/orgs/a/keys", b'{"key": "a", "key_id": "kid_' + b"0" * 32 + b'"}', None, 422,
         "invalid_body"),
        ("POST", "/payments", b'{"org": "a"}', None, 422, "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "at": "yesterday"}', None, 422,
         "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "at": 1e999}', None, 422, "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "at": 1720612800000}', None, 422,
         "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "at": "9999-12-31T23:59:59+00:00"}',
         None, 422, "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "at": true}', None, 422, "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "card_country": "ZZ"}', None, 422,
         "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "billing_country": "UA-99"}', None, 422,
         "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "amount": -1}', None, 422, "invalid_body"),
        ("POST", "/payments", b'{"id": "p\\u200b", "org": "a"}', None, 422, "invalid_body"),
        ("POST", "/payments", b'{"id": "p", "org": "a", "extra": 1}', None, 422, "invalid_body"),
        ("POST", "/orgs/a/state", b'{"state": "banished", "reason": "x"}', None, 422,
         "invalid_body"),
        ("POST", "/orgs/a/state", b'{"state": "suspended"}', None, 422, "invalid_body"),
        ("POST", "/orgs/a/state", b'{"state": "suspended", "reason": ""}', None, 422,
         "invalid_body"),
        ("POST", "/orgs/a/state", b'{"state": "suspended", "reason": "   "}', None, 422,
         "invalid_body"),
        ("POST", "/orgs/a/state", b'{"state": "suspended", "reason": "x", "force": "yes"}', None,
         422, "invalid_body"),
        ("POST", "/orgs/a/state", b'{"state": "suspended", "reason": "x", "evidence": "e"}', None,
         422, "invalid_body"),
        ("GET", "/orgs?state=gone", None, None, 400, "invalid_parameter"),
        ("GET", "/orgs?limit=0", None, None, 400, "invalid_parameter"),
        ("GET", "/orgs?limit=1_0", None, None, 400, "invalid_parameter"),
        ("GET", "/orgs?offset=" + "9" * 5000, None, None, 400, "invalid_parameter"),
        ("GET", "/orgs?offset=-1", None, None, 400, "invalid_parameter"),
        ("GET", "/audit?since=x", None, None, 400, "invalid_parameter"),
        ("GET", "/audit?org=", None, None, 400, "invalid_parameter"),
        ("GET", "/events/count?org=a%0Ab", None, None, 400, "invalid_parameter"),
        ("GET", "/keys/x", None, None, 405, "method_not_allowed"),
        ("GET", "/nowhere", None, None, 404, "not_found"),
    ],
)  # fmt: skip
def test_malformed_requests_are_4xx(
    api: Api, method: str, path: str, content: bytes | None, ctype: str | None, status: int,
    code: str,
) -> None:  # fmt: skip
    api("PUT", "/orgs/a", json_body={})
    headers = {"Content-Type": ctype or "application/json"} if content is not None else {}
    r = api(method, path, as_="root", content=content, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]


# --- no 5xx, whatever the schema lets a client send ------------------------------------------------


@pytest.fixture
def admin_schema(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    for store in open_store("sqlite", tmp_path):
        tokens, secrets = make_tokens()
        rules = RulesEngine(store, lambda: load_policy("api-2024"))
        app = admin_app(store, rules, HASHER, tokens)
        store.upsert_org("org-sample", actor="test")
        auth = {"Authorization": f"Bearer {secrets['root']}"}
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=auth)
        schema.config.update(headers=auth)
        yield schema, auth


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["positive", "negative"])  # fmt: skip
@pytest.mark.parametrize("op", OPERATIONS, ids=[f"{o.method} {o.path}" for o in OPERATIONS])
def test_generated_requests_never_get_a_5xx(
    admin_schema: tuple[Any, dict[str, str]], op: Any, mode: GenerationMode
) -> None:
    if mode is GenerationMode.NEGATIVE and not (op.params or op.body):
        pytest.skip("nothing to make invalid")
    schema, auth = admin_schema
    operation = schema[op.path][op.method]

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case: Any) -> None:
        # Every built-in check (server errors, status codes, response schemas, negative data
        # rejected...) but "schema-valid data accepted": a schema cannot say "printable".
        response = case.call_and_validate(
            headers=auth, excluded_checks=[checks.positive_data_acceptance]
        )
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400 and case.method != "HEAD":
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

    check()


# --- the review queue and signals ----------------------------------------------------------------


def test_review_queue_list_show_decide(api: Api, store: Store) -> None:
    explanation = {"score": 72.5, "signals": [{"signal": "vpn", "points": 30.0}]}
    for org in ("org-r1", "org-r2"):
        store.open_review(org, 72.5, explanation, actor="rule:circumvention", at=1000.0)
    r = api("GET", "/reviews", as_="watcher")
    assert r.status_code == 200
    reviews = r.json()["reviews"]
    assert [x["org"] for x in reviews] == ["org-r2", "org-r1"] or len(reviews) == 2
    first = next(x for x in reviews if x["org"] == "org-r1")
    assert first["status"] == "open" and first["explanation"] == explanation
    assert api("GET", f"/reviews/{first['id']}", as_="watcher").json()["org"] == "org-r1"
    assert api("GET", "/reviews/rv_missing", as_="watcher").status_code == 404
    assert api("GET", "/reviews?status=banished", as_="watcher").status_code == 400
    assert api("GET", "/reviews?org=org-r2", as_="watcher").json()["reviews"][0]["org"] == "org-r2"
    # viewers look, operators decide
    body = {"decision": "suspended", "note": "fan-out from one cloud region"}
    assert api("POST", f"/reviews/{first['id']}", as_="watcher", json_body=body).status_code == 403
    r = api("POST", f"/reviews/{first['id']}", json_body=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["review"]["status"] == "suspended" and out["review"]["closed_by"] == "admin:ops"
    assert out["state_changed"]["state"] == "suspended"
    again = api("POST", f"/reviews/{first['id']}", json_body=body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "review_closed"
    bad = api("POST", f"/reviews/{first['id']}", json_body={"decision": "banished"})
    assert bad.status_code == 422
    assert (
        api("POST", "/reviews/rv_missing", json_body={"decision": "dismissed"}).status_code == 404
    )
    assert [x["org"] for x in api("GET", "/reviews?status=suspended").json()["reviews"]] == [
        "org-r1"
    ]
    actions = audit_actions(api, "admin:ops")
    assert "review.close" in actions and "state" in actions


def test_signals_route_explains_the_score(store: Store) -> None:
    tokens, secrets = make_tokens()
    rules = RulesEngine(store, lambda: load_policy("api-2024"))
    api = Api(admin_app(store, rules, HASHER, tokens), secrets)
    try:
        assert api("GET", "/orgs/org-quiet/signals", as_="watcher").status_code == 404
        now = time.time()
        rules.circumvention.tracker.add(
            [
                Event(f"e{i}", "org-vpn", "kid_x", now - i, "DE", "vpn", "flag", "vpn", False)
                for i in range(40)
            ]
        )
        r = api("GET", "/orgs/org-vpn/signals", as_="watcher")
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["requests"] == 40 and data["signals"][0]["signal"] == "vpn"
        assert data["score"] == pytest.approx(sum(s["points"] for s in data["signals"]), abs=0.05)
        assert data["explanation"].startswith("circumvention score")
        assert data["thresholds"]["review"] == 40
    finally:
        api.close()


def test_the_admin_module_exports() -> None:
    assert admin_module.MOUNT == MOUNT == "/admin/api"
    assert admin_module.Tokens is Tokens
