"""RegionGate as pure ASGI middleware, in process (httpx's ASGI transport)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from regiongate import RegionGate
from regiongate.clientip import ClientIPConfig, ClientResolver
from regiongate.enforce.gate import Gate, GateState, Verdict
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import load_policy

BLOCKED_BODY = {
    "error": {
        "message": "Country, region, or territory not supported",
        "type": "request_forbidden",
        "param": None,
        "code": "unsupported_country_region_territory",
    }
}


def make_app(calls: list[dict[str, Any]]) -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        verdict: Verdict = request.scope["regiongate"]
        calls.append(dict(request.headers))
        return JSONResponse(
            {
                "territory": request.headers.get("x-regiongate-territory"),
                "decision": request.headers.get("x-regiongate-decision"),
                "client": verdict.client.ip,
                "reasons": list(verdict.decision.reasons),
            }
        )

    return Starlette(routes=[Route("/v1/{rest:path}", endpoint, methods=["GET", "POST"])])


def client_for(app: Any, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(peer, 41000)), base_url="http://gw"
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def gate_for(snapshot: Path, **config: Any) -> Gate:
    """A gate on the tiny snapshot with api-2024 and a resolver of ``config``."""
    return Gate(
        GateState(
            snapshot=Snapshot(snapshot),
            policy=load_policy("api-2024"),
            resolver=ClientResolver(ClientIPConfig(**config)),
            snapshot_stamp=None,
            policy_stamp=None,
            loaded_at=0.0,
        )
    )


@pytest.fixture
def gated(tiny_snapshot_path: Path) -> tuple[RegionGate, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []
    app = RegionGate(make_app(calls), policy="api-2024", snapshot=Snapshot(tiny_snapshot_path))
    return app, calls


def test_blocked_request_never_reaches_the_app(
    gated: tuple[RegionGate, list[dict[str, Any]]],
) -> None:
    app, calls = gated

    async def go() -> httpx.Response:
        async with client_for(app) as c:
            return await c.post(
                "/v1/chat/completions", headers={"X-Forwarded-For": "4.0.0.9"}, json={}
            )

    r = run(go())
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/json"
    assert r.json() == BLOCKED_BODY
    assert r.headers["x-regiongate-territory"] == "CN"
    assert r.headers["x-regiongate-decision"] == "block"
    assert calls == []


def test_allowed_request_carries_headers_and_strips_forged_ones(
    gated: tuple[RegionGate, list[dict[str, Any]]],
) -> None:
    app, calls = gated

    async def go() -> httpx.Response:
        async with client_for(app) as c:
            return await c.get(
                "/v1/models",
                headers={
                    "X-Forwarded-For": "3.0.0.1",
                    "X-Regiongate-Territory": "US",  # forged by the client: must be replaced
                    "X-Regiongate-Decision": "allow",
                },
            )

    r = run(go())
    assert r.status_code == 200
    body = r.json()
    assert body["territory"] == "US" and body["decision"] == "allow" and body["client"] == "3.0.0.1"
    (seen,) = calls
    assert seen["x-regiongate-territory"] == "US"  # one value, the gate's


def test_forged_territory_header_cannot_unblock(
    gated: tuple[RegionGate, list[dict[str, Any]]],
) -> None:
    app, calls = gated

    async def go() -> httpx.Response:
        async with client_for(app) as c:
            return await c.get(
                "/v1/models",
                headers={"X-Forwarded-For": "2.0.3.4", "X-Regiongate-Decision": "allow"},
            )

    r = run(go())
    assert r.status_code == 403 and r.headers["x-regiongate-territory"] == "UA-43"
    assert calls == []


@pytest.mark.parametrize(
    ("peer", "xff", "status", "client"),
    [
        # An untrusted peer's headers are ignored: its own address decides.
        ("4.0.0.1", "3.0.0.1", 403, None),
        ("3.0.0.1", "4.0.0.1", 200, "3.0.0.1"),
        # Forged left-most entry behind the trusted proxy: the right-most untrusted hop wins.
        ("127.0.0.1", "4.0.0.1, 3.0.0.1", 200, "3.0.0.1"),
        ("127.0.0.1", "3.0.0.1, 4.0.0.1", 403, None),
        # Garbage in the chain: invalid client, which api-2024 blocks.
        ("127.0.0.1", "3.0.0.1, not-an-ip", 403, None),
        # Private client behind the proxy: allowed by api-2024 (internal traffic).
        ("127.0.0.1", "10.1.2.3", 200, "10.1.2.3"),
    ],
)
def test_client_resolution_through_the_middleware(
    gated: tuple[RegionGate, list[dict[str, Any]]],
    peer: str,
    xff: str,
    status: int,
    client: str | None,
) -> None:
    app, _ = gated

    async def go() -> httpx.Response:
        async with client_for(app, peer) as c:
            return await c.get("/v1/models", headers={"X-Forwarded-For": xff})

    r = run(go())
    assert r.status_code == status
    if client:
        assert r.json()["client"] == client


def test_trusted_proxy_verdict_is_never_reused_for_a_forwarded_client(
    gated: tuple[RegionGate, list[dict[str, Any]]],
) -> None:
    # The gate remembers verdicts for peers that connect directly. A trusted proxy's own
    # request (no forwarding header) must not be remembered: its next request names a client.
    app, _ = gated

    async def go() -> list[int]:
        async with client_for(app, "127.0.0.1") as c:
            statuses = []
            for headers in ({}, {"X-Forwarded-For": "4.0.0.1"}, {}, {"X-Forwarded-For": "4.0.0.1"}):
                statuses.append((await c.get("/v1/models", headers=headers)).status_code)
            return statuses

    assert run(go()) == [200, 403, 200, 403]


def test_direct_client_verdict_is_remembered_and_exact(
    gated: tuple[RegionGate, list[dict[str, Any]]],
) -> None:
    # An untrusted peer: the same answer every time, whatever headers it sends.
    app, _ = gated

    async def go(peer: str) -> list[int]:
        async with client_for(app, peer) as c:
            return [
                (await c.get("/v1/models", headers={"X-Forwarded-For": xff})).status_code
                for xff in ("3.0.0.1", "4.0.0.1", "3.0.0.1")
            ]

    assert run(go("4.0.0.1")) == [403, 403, 403]
    assert run(go("3.0.0.1")) == [200, 200, 200]


@pytest.mark.parametrize("forged", [False, True])
def test_headers_as_any_iterable_of_pairs(tiny_snapshot_path: Path, forged: bool) -> None:
    """ASGI promises an iterable of pairs, not a list: a tuple from some server works, and
    a forged X-Regiongate-* header in it is still dropped."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])

    app = RegionGate(inner, snapshot=Snapshot(tiny_snapshot_path))
    sent = ((b"x-regiongate-decision", b"allow"),) if forged else ()
    headers = ((b"host", b"gw"), *sent, (b"accept", b"*/*"))
    for _ in range(3):  # the first requests and the remembered verdict
        scope = {"type": "http", "path": "/v1/x", "headers": headers, "client": ("3.0.0.1", 1)}
        run(app(scope, None, None))
        assert scope["headers"] is headers  # the server's scope is not changed
    want = [
        (b"host", b"gw"),
        (b"accept", b"*/*"),
        (b"x-regiongate-territory", b"US"),
        (b"x-regiongate-decision", b"allow"),
    ]
    assert seen == [want] * 3


def test_non_http_scopes_pass_through(tiny_snapshot_path: Path) -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    app = RegionGate(inner, snapshot=Snapshot(tiny_snapshot_path))
    run(app({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


@pytest.mark.parametrize("extension", [True, False])
def test_websocket_denied(tiny_snapshot_path: Path, extension: bool) -> None:
    reached: list[bool] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    app = RegionGate(inner, snapshot=Snapshot(tiny_snapshot_path))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/v1/ws",
        "headers": [(b"x-forwarded-for", b"4.0.0.1")],
        "client": ("127.0.0.1", 5000),
        "extensions": {"websocket.http.response": {}} if extension else {},
    }
    run(app(scope, receive, send))
    assert reached == []
    if extension:
        assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 403
    else:
        assert sent == [{"type": "websocket.close", "code": 1008}]


def test_account_exemption_via_header(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text(
        'name = "p"\nversion = "1"\nsupported = ["US"]\n[exemptions]\naccounts = ["org-qa"]\n'
    )
    calls: list[dict[str, Any]] = []
    app = RegionGate(
        make_app(calls),
        policy=str(policy),
        snapshot=Snapshot(tiny_snapshot_path),
        account_header="X-Org",
    )

    async def go(org: str) -> int:
        async with client_for(app) as c:
            r = await c.get("/v1/x", headers={"X-Forwarded-For": "4.0.0.1", "X-Org": org})
            return r.status_code

    assert run(go("org-qa")) == 200
    assert run(go("org-other")) == 403


def test_forwarded_verdicts_are_remembered_exactly(tiny_snapshot_path: Path) -> None:
    """Behind a trusted proxy a (peer, X-Forwarded-For) pair is remembered from its second
    request on; every answer stays the one a fresh resolution gives."""
    g = gate_for(tiny_snapshot_path, trusted_proxies=("127.0.0.1/32", "10.0.0.0/8"))
    fresh = gate_for(tiny_snapshot_path, trusted_proxies=("127.0.0.1/32", "10.0.0.0/8"))
    cases = [
        [(b"x-forwarded-for", b"3.0.0.1")],
        [(b"x-forwarded-for", b"4.0.0.1")],
        [(b"x-forwarded-for", b"4.0.0.1, 10.0.0.7")],  # a trusted hop: still CN
        [(b"x-forwarded-for", b"9.9.9.9, 3.0.0.1")],  # forged left-most: US
        [(b"x-forwarded-for", b"3.0.0.1"), (b"x-forwarded-for", b"4.0.0.1")],  # two lines
        [(b"x-forwarded-for", b"not an address")],
        [],
    ]
    for _ in range(3):
        for headers in cases:
            got = g.check("127.0.0.1", headers)
            want = fresh.check("127.0.0.1", headers)
            assert (got.client.ip, got.decision.action, got.decision.territory) == (
                want.client.ip,
                want.decision.action,
                want.decision.territory,
            ), headers
    # not the two-line case nor the one without a header
    assert g._forwarded_size == sum(map(len, g._forwarded.values())) == 5
    # a repeat is answered from the memo: the very same verdict object
    once = g.check("127.0.0.1", cases[1])
    assert g.check("127.0.0.1", cases[1]) is once and once.decision.action.value == "block"
    # another trusted peer with the same header value is its own key
    assert g.check("10.1.2.3", cases[1]).client.ip == "4.0.0.1"
    # an untrusted peer's header is never read, memo or not
    for _ in range(3):
        assert g.check("3.0.0.9", cases[1]).client.ip == "3.0.0.9"
    # a new state (a reload) is not answered from the old memo
    g.state = GateState(
        snapshot=g.state.snapshot,
        policy=load_policy("sanctions-comprehensive"),
        resolver=g.state.resolver,
        snapshot_stamp=None,
        policy_stamp=None,
        loaded_at=1.0,
    )
    assert g.check("127.0.0.1", cases[1]).decision.policy.startswith("sanctions")


def test_remembered_verdicts_end_with_their_phase(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    """A remembered verdict is valid until the policy's next phase begins: the middleware's
    own shortcut through the memo (direct peers) and the gate's (behind a trusted proxy) give
    the new phase's answer from its first second on."""
    import datetime as dt

    policy = tmp_path / "p.toml"
    policy.write_text(
        'name = "p"\nversion = "1"\nsupported = ["US"]\n'
        "notice_from = 2026-02-01\nenforce_from = 2026-03-01\n"
    )
    now = [0.0]
    gate = Gate(
        GateState(
            snapshot=Snapshot(tiny_snapshot_path),
            policy=load_policy(str(policy)),
            resolver=ClientResolver(ClientIPConfig(trusted_proxies=("127.0.0.1/32",))),
            snapshot_stamp=None,
            policy_stamp=None,
            loaded_at=0.0,
        ),
        clock=lambda: now[0],
    )
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["regiongate"].decision.action.value)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RegionGate(inner, gate=gate)

    def status(peer: str, headers: list[tuple[bytes, bytes]]) -> str:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        scope = {"type": "http", "path": "/v1/x", "headers": headers, "client": (peer, 1)}
        run(app(scope, receive, send))
        return "403" if sent[0]["status"] == 403 else seen[-1]

    def at(day: str) -> float:
        return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()

    def remembered() -> list[Any]:
        return [*gate.direct, *(v for by in gate._forwarded.values() for v in by)]

    cn_direct: tuple[str, list[tuple[bytes, bytes]]] = ("4.0.0.1", [])
    cn_behind_proxy = ("127.0.0.1", [(b"x-forwarded-for", b"4.0.0.1")])
    for (peer, headers), key in ((cn_direct, "4.0.0.1"), (cn_behind_proxy, b"4.0.0.1")):
        gate.direct.clear()
        gate._forwarded.clear()
        now[0] = at("2026-01-31T23:59:58")
        assert [status(peer, headers) for _ in range(3)] == ["allow"] * 3
        assert remembered() == [key]
        now[0] = at("2026-02-01T00:00:00")
        assert [status(peer, headers) for _ in range(3)] == ["flag"] * 3
        now[0] = at("2026-02-28T23:59:59.5")
        assert status(peer, headers) == "flag"
        now[0] = at("2026-03-01T00:00:00")
        assert [status(peer, headers) for _ in range(3)] == ["403"] * 3
        assert remembered() == [key]


def test_new_clients_are_not_remembered_on_their_first_request(tiny_snapshot_path: Path) -> None:
    g = gate_for(tiny_snapshot_path, trusted_proxies=("127.0.0.1/32",))
    for i in range(200):
        g.check(f"5.0.{i}.1", [])
        g.check("127.0.0.1", [(b"x-forwarded-for", f"5.1.{i}.1".encode())])
    assert not g.direct and not g._forwarded
    g.check("5.0.7.1", [])
    g.check("127.0.0.1", [(b"x-forwarded-for", b"5.1.7.1")])
    assert list(g.direct) == ["5.0.7.1"]
    assert {peer: list(by_value) for peer, by_value in g._forwarded.items()} == {
        "127.0.0.1": [b"5.1.7.1"]
    }


def test_cdn_rules_turn_the_forwarded_memo_off() -> None:
    from regiongate.clientip import CdnRule

    assert ClientResolver(ClientIPConfig()).forwarded_only == b"x-forwarded-for"
    assert ClientResolver(ClientIPConfig(header="forwarded")).forwarded_only is None
    cdn = (CdnRule(header="cf-connecting-ip", networks=("173.245.48.0/20",)),)
    assert ClientResolver(ClientIPConfig(cdn=cdn)).forwarded_only is None


def test_every_decision_is_counted_once_memo_hits_and_folds_included(
    tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memoised verdicts count their hits in their memo entry; a full memo folds them into
    the totals before it is cleared. Whatever path a request takes, /metrics counts it once."""
    import regiongate.enforce.gate as gate_module

    monkeypatch.setattr(gate_module, "_DIRECT_MEMO", 16)  # clear (and fold) often
    g = gate_for(tiny_snapshot_path, trusted_proxies=("127.0.0.1/32",))
    sent = {"block": 0, "allow": 0}
    for i in range(400):
        if i % 3 == 0:  # a direct client from CN, among 12 that repeat
            verdict = g.check(f"4.0.0.{i % 12 + 1}", [])
        elif i % 3 == 1:  # through the trusted proxy, from the US, 20 clients
            verdict = g.check("127.0.0.1", [(b"x-forwarded-for", f"3.0.0.{i % 20 + 1}".encode())])
        else:  # 40 more US clients: more than the memo holds
            verdict = g.check(f"3.0.0.{i % 40 + 1}", [])
        sent[verdict.decision.action.value] += 1
    totals = g.stats.decisions()
    counted = {"block": 0, "allow": 0}
    for (action, _territory, _rule), n in totals.items():
        counted[action] += n
    assert counted == sent
    assert sum(g.stats.latency()) == 400
    hits = g.stats.latency()[0]  # memo hits are counted under a microsecond
    assert hits > 50, hits
