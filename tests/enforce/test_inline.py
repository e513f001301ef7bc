"""The decision endpoint answered inside uvicorn's protocol (enforce/inline.py), against the
same gateway answering through ASGI: byte for byte the same answers, in the same order, on
the same connections; only what can be answered inline is."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regiongate.enforce.app import GatewayApp
from regiongate.enforce.gate import Gate
from regiongate.enforce.inline import InlineDecisions
from regiongate.enforce.server import uvicorn_config
from tests.enforce.servers import free_port, gateway_settings, run_server, serve_app
from tests.enforce.upstreams import Control, controlled_upstream

US, CN = "3.0.0.1", "4.0.0.1"
DECIDE = "/_regiongate/decide"


class Counting:
    """The gateway app, counting the HTTP requests that reach it as ASGI requests."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@contextlib.contextmanager
def gateway(
    snapshot: Path,
    *,
    inline: bool,
    upstream: str | None = None,
    server: dict[str, Any] | None = None,
    **config: Any,
) -> Iterator[tuple[int, Counting, Any]]:
    """The gateway under `serve`'s uvicorn configuration (``server``: its settings, ``config``:
    uvicorn's); ``inline=False``: uvicorn's own httptools protocol (every request an ASGI
    request). Yields (port, counter, server)."""
    port = free_port()
    settings = gateway_settings(snapshot, port, upstream, **(server or {}))
    app = GatewayApp(settings, Gate.from_settings(settings))
    cfg = uvicorn_config(app, settings, log_level="warning")
    assert isinstance(cfg.http, type) and issubclass(cfg.http, InlineDecisions)
    if not inline:
        cfg.http = "httptools"
    counter = cfg.app = Counting(app)
    for key, value in config.items():
        setattr(cfg, key, value)
    with run_server(cfg) as server:
        yield port, counter, server


def request(path: str, client: str | None = US, *lines: str, method: str = "GET") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: gw"]
    if client:
        head.append(f"X-Forwarded-For: {client}")
    return ("\r\n".join([*head, *lines]) + "\r\n\r\n").encode()


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` in one write; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def without_date(raw: bytes) -> bytes:
    return b"".join(line for line in raw.splitlines(True) if not line.startswith(b"date: "))


CLOSE = "Connection: close"
# (the requests, sent in one write; the ASGI requests the inline server should see)
CASES: dict[str, tuple[bytes, list[str]]] = {
    "decisions in a row": (
        request(DECIDE, US)
        + request(DECIDE, CN)
        + request(DECIDE, "10.9.9.9, 203.0.113.7, 127.0.0.1, " + CN)  # a chain
        + request(DECIDE, "not-an-address")
        + request(DECIDE, None)  # loopback's own: the peer itself
        + request(DECIDE + "/v1/chat/completions?stream=true", US)
        + request(DECIDE + "/envoy/v1/chat/completions", US, method="POST")
        + request(DECIDE + "/envoy/v1/chat/completions", CN, method="POST")
        + request("/_regiongate/%64ecide", CN)  # decoded, the decision path: through ASGI
        + request(DECIDE, US, CLOSE),  # pipelined behind it: through ASGI too
        [DECIDE, DECIDE],
    ),
    "HEAD": (request(DECIDE, CN, method="HEAD") + request(DECIDE, US, CLOSE, method="HEAD"), []),
    "HTTP/1.0 closes": (request(DECIDE, CN).replace(b"HTTP/1.1", b"HTTP/1.0"), []),
    "nothing after Connection: close": (request(DECIDE, CN, CLOSE) + request(DECIDE, US), []),
    "a body goes through ASGI, in order": (
        request(DECIDE, CN)
        + request(DECIDE, US, "Content-Length: 2")
        + b"{}"
        + request(DECIDE, CN)
        + request(DECIDE, US, "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
        + request(DECIDE, US, "Content-Length: 0", CLOSE),
        # all but the first: the requests behind one with a body are pipelined behind it (the
        # write is read at once: loopback delivers a small write whole)
        [DECIDE] * 4,
    ),
    "other paths are ASGI requests": (
        request("/healthz") + request(DECIDE, CN) + request("/_regiongate/decidex", US, CLOSE),
        ["/healthz", DECIDE, "/_regiongate/decidex"],
    ),
    "Expect: 100-continue": (
        request(DECIDE, US, "Expect: 100-continue", "Content-Length: 0", CLOSE),
        [DECIDE],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_inline_answers_equal_the_asgi_answers(tiny_snapshot_path: Path, case: str) -> None:
    data, asgi_paths = CASES[case]
    with gateway(tiny_snapshot_path, inline=False) as (port, counter, server):
        reference = exchange(port, data)
        assert counter.paths  # the reference server answers every request through ASGI
        served = server.server_state.total_requests
    with gateway(tiny_snapshot_path, inline=True) as (port, counter, server):
        answered = exchange(port, data)
        assert counter.paths == asgi_paths
        assert server.server_state.total_requests == served  # none answered that was not
    assert without_date(answered) == without_date(reference)
    assert answered.count(b"HTTP/1.") == reference.count(b"HTTP/1.") > 0


def test_inline_answers_are_the_contract(tiny_snapshot_path: Path) -> None:
    """What nginx and Envoy read: 204 or 403 with the JSON body, the X-Regiongate-* headers on
    both, 200 with an empty body under /envoy; HEAD gets no body; keep-alive holds."""
    data = (
        request(DECIDE, US)
        + request(DECIDE, CN)
        + request(DECIDE, CN, method="HEAD")
        + request(DECIDE + "/envoy/x", US, CLOSE)
    )
    with gateway(tiny_snapshot_path, inline=True) as (port, counter, _):
        raw = exchange(port, data)
        assert counter.paths == []
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b" ", 1)[0] for a in answers] == [b"204", b"403", b"403", b"200"]
    assert b"x-regiongate-territory: US\r\nx-regiongate-decision: allow\r\n\r\n" in answers[0]
    assert b"x-regiongate-decision: block" in answers[1]
    assert answers[1].endswith(b'"code":"unsupported_country_region_territory"}}')
    assert b"content-length: 153\r\n" in answers[2] and answers[2].endswith(b"block\r\n\r\n")
    assert answers[3].endswith(b"content-length: 0\r\nconnection: close\r\n\r\n")


def test_inline_decisions_are_counted(tiny_snapshot_path: Path) -> None:
    with gateway(tiny_snapshot_path, inline=True) as (port, counter, server):
        exchange(port, request(DECIDE, CN) + request(DECIDE, US, CLOSE))
        metrics = exchange(port, request("/metrics", None, CLOSE)).decode()
        assert server.server_state.total_requests == 3
    assert counter.paths == ["/metrics"]
    blocked = [line for line in metrics.splitlines() if 'territory="CN"' in line]
    assert any(line.startswith("regiongate_decisions_total") for line in blocked), metrics


@contextlib.contextmanager
def held_stream(
    snapshot: Path, data: bytes
) -> Iterator[tuple[Control, Counting, Any, socket.socket, bytes]]:
    """The inline gateway in front of an upstream whose /gated/stream holds its answer after
    the first event until the test sets ``control.first_chunk_seen``; ``data`` sent on one
    connection, read until that first event. Yields (control, counter, server, the client's
    socket, what it has read)."""
    control = Control()
    with (
        serve_app(controlled_upstream(control)) as up,
        gateway(snapshot, inline=True, upstream=f"http://127.0.0.1:{up}") as (
            port,
            counter,
            server,
        ),
        socket.create_connection(("127.0.0.1", port), timeout=20) as s,
    ):
        s.sendall(data)
        seen = b""
        while b'data: {"n": 1}' not in seen:
            chunk = s.recv(65536)
            assert chunk, seen
            seen += chunk
        yield control, counter, server, s, seen


def test_a_request_behind_an_inline_answer_keeps_its_connection(tiny_snapshot_path: Path) -> None:
    """An inline answer arms the keep-alive timer; a request read with it (here a stream the
    upstream holds open) must disarm it, or the connection is cut mid-response."""
    data = request(DECIDE, US) + request("/gated/stream", US, CLOSE)
    with held_stream(tiny_snapshot_path, data) as (control, counter, server, s, seen):
        # The stream is under way, its upstream waiting on the test: the connection is busy.
        (protocol,) = server.server_state.connections
        assert protocol.timeout_keep_alive_task is None
        control.first_chunk_seen.set()
        while chunk := s.recv(65536):
            seen += chunk
    assert seen.startswith(b"HTTP/1.1 204 ") and seen.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert counter.paths == []  # the stream relayed inside the protocol too (relay.py)


def test_a_uvicorn_without_what_the_inline_answers_read_answers_through_asgi(
    tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn's protocol internals are not its API: should a version rename one the inline
    answers read, the gateway says so once and answers every request the ASGI way."""
    from regiongate.enforce import inline

    monkeypatch.setattr(inline, "_NEEDED", (*inline._NEEDED, "renamed_in_a_later_uvicorn"))
    data = request(DECIDE, CN) + request(DECIDE, US, CLOSE)
    with gateway(tiny_snapshot_path, inline=True) as (port, counter, _):
        answered = exchange(port, data)
        answered_again = exchange(port, data)
    assert counter.paths == [DECIDE] * 4
    assert answered.startswith(b"HTTP/1.1 403 ") and b"HTTP/1.1 204 " in answered
    assert without_date(answered) == without_date(answered_again)
    logged = [
        r.getMessage() for r in caplog.records if "renamed_in_a_later_uvicorn" in r.getMessage()
    ]
    assert len(logged) == 1 and "answered as ASGI requests" in logged[0]


@contextlib.contextmanager
def keyed_gateway(
    snapshot: Path,
    tmp: Path,
    *,
    inline: bool,
    unknown_keys: str = "allow",
    upstream: str | None = None,
) -> Iterator[tuple[int, Counting, Any]]:
    """The gateway with accounts on a SQLite store: org-a (key sk-a) in good standing, org-s
    (key sk-s) suspended. Yields (port, counter, store)."""
    from regiongate.accounts.model import Key, State
    from regiongate.accounts.service import Accounts
    from regiongate.accounts.store import store_from_url
    from regiongate.config import AccountsSettings

    store = store_from_url(f"sqlite:///{tmp}/accounts.db")
    port = free_port()
    settings = gateway_settings(snapshot, port, upstream)
    gate = Gate.from_settings(settings)
    accounts = Accounts(
        store,
        AccountsSettings(spool_dir=str(tmp / "spool"), unknown_keys=unknown_keys),
        lambda: gate.state.policy,
        secret=b"s" * 32,
    )
    for org, key in (("org-a", "sk-a"), ("org-s", "sk-s")):
        store.upsert_org(org, actor="test")
        store.add_key(Key(accounts.hasher.key_id(key), org), actor="test")
    store.transition("org-s", State.SUSPENDED, actor="test", reason="test")
    app = GatewayApp(settings, gate, accounts=accounts)
    cfg = uvicorn_config(app, settings, log_level="warning")
    if not inline:
        cfg.http = "httptools"
    counter = cfg.app = Counting(app)
    with run_server(cfg):  # the lifespan starts the accounts (and closes them)
        accounts.cache.refresh()
        yield port, counter, store
        assert accounts.sink.flush(20)
    store.close()


def keyed(key: str | None, client: str, *lines: str, path: str = DECIDE) -> bytes:
    auth = (f"Authorization: Bearer {key}",) if key else ()
    return request(path, client, *auth, *lines)


@pytest.mark.parametrize("unknown_keys", ["allow", "block"])
def test_keyed_decisions_inline_equal_the_asgi_ones(
    tiny_snapshot_path: Path, tmp_path: Path, unknown_keys: str
) -> None:
    """A request with an API key to the decision endpoint: the account checks first (a
    suspended organisation's 403, an unknown key's 401 when they are blocked), its event on
    record; the same answers and the same events inline as through ASGI."""
    data = (
        keyed("sk-a", US)
        + keyed("sk-a", CN)
        + keyed("sk-s", US)
        + keyed("sk-nobody", US)
        + keyed(None, CN)
        + keyed("sk-a", US, CLOSE)
    )
    answers, events = [], []
    for inline in (False, True):
        tmp = tmp_path / str(inline)
        tmp.mkdir()
        with keyed_gateway(tiny_snapshot_path, tmp, inline=inline, unknown_keys=unknown_keys) as (
            port,
            counter,
            store,
        ):
            answers.append(without_date(exchange(port, data)))
            assert bool(counter.paths) is not inline  # inline: none reach the ASGI app
        rows = store._run(  # type: ignore[attr-defined]
            lambda c: c.exec_driver_sql(
                "SELECT org, territory, action FROM rg_events ORDER BY at, rowid"
            ).fetchall()
        )
        events.append([tuple(r) for r in rows])
    assert answers[0] == answers[1]
    statuses = [a.split(b" ", 1)[0] for a in answers[1].split(b"HTTP/1.1 ")[1:]]
    unknown = b"401" if unknown_keys == "block" else b"204"
    assert statuses == [b"204", b"403", b"403", unknown, b"403", b"204"]
    assert b'"code":"account_deactivated"' in answers[1]
    assert (
        events[0]
        == events[1]
        == [
            ("org-a", "US", "allow"),
            ("org-a", "CN", "block"),
            ("org-s", "US", "refused"),
            ("org-a", "US", "allow"),
        ]
    )


def test_a_decision_that_raises_is_answered_as_uvicorn_answers_an_app_that_raised(
    tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged, 500, connection closed; inline it is not run a second time through ASGI."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the gate")

    monkeypatch.setattr(Gate, "check", broken)
    data = request(DECIDE, US) + request(DECIDE, CN)  # the second: after the close, unanswered
    answers = []
    for inline in (False, True):
        with gateway(tiny_snapshot_path, inline=inline) as (port, counter, _):
            answers.append(without_date(exchange(port, data)))
            assert counter.paths == ([] if inline else [DECIDE])
    assert answers[0] == answers[1]
    assert answers[1].startswith(b"HTTP/1.1 500 ") and answers[1].count(b"HTTP/1.1") == 1
    assert answers[1].endswith(b"connection: close\r\n\r\nInternal Server Error")
    assert any("a bug in the gate" in (r.exc_text or "") for r in caplog.records)
