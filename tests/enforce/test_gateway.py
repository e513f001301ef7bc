"""The gateway as a real server (uvicorn) in front of real upstreams, driven by real clients:
the official OpenAI SDK, aiohttp for WebSockets and streaming uploads, raw sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from regiongate.enforce.app import GatewayApp
from tests.enforce.servers import free_port, serve_app, serve_gateway
from tests.enforce.upstreams import (
    Control,
    controlled_upstream,
    resetting_server,
    silent_server,
)

US, CN, CRIMEA = "3.0.0.1", "4.0.0.1", "2.0.3.4"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def control() -> Control:
    return Control()


@pytest.fixture(scope="module")
def upstream(control: Control) -> Iterator[int]:
    with serve_app(controlled_upstream(control)) as port:
        yield port


@pytest.fixture(scope="module")
def gateway(tiny_snapshot_path: Path, upstream: int) -> Iterator[tuple[int, GatewayApp]]:
    with serve_gateway(tiny_snapshot_path, f"http://127.0.0.1:{upstream}") as gw:
        yield gw


def sdk(port: int, client_ip: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="sk-test",
        max_retries=0,
        timeout=30,
        default_headers={"X-Forwarded-For": client_ip},
    )


# --- the OpenAI SDK ------------------------------------------------------------------------------


@pytest.mark.parametrize("client_ip", [CN, CRIMEA])
def test_sdk_blocked_territory_raises_permission_denied(
    gateway: tuple[int, GatewayApp], client_ip: str
) -> None:
    port, _ = gateway
    with sdk(port, client_ip) as client, pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="demo-1", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 403
    assert info.value.code == "unsupported_country_region_territory"
    assert info.value.type == "request_forbidden"
    assert info.value.message.endswith("Country, region, or territory not supported")


def test_sdk_allowed_completion(gateway: tuple[int, GatewayApp]) -> None:
    port, _ = gateway
    with sdk(port, US) as client:
        reply = client.chat.completions.create(model="demo-1", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content is not None
    assert reply.choices[0].message.content.endswith("[territory US]")


def test_sdk_streamed_completion(gateway: tuple[int, GatewayApp]) -> None:
    port, _ = gateway
    with sdk(port, US) as client:
        stream = client.chat.completions.create(model="demo-1", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 10
    assert "".join(pieces).endswith("[territory US]")


def test_stream_arrives_chunk_by_chunk(gateway: tuple[int, GatewayApp], control: Control) -> None:
    """The upstream sends its second event only after the client has received the first:
    possible only if the gateway forwards each chunk as it comes (no buffering)."""
    port, _ = gateway
    control.first_chunk_seen.clear()
    control.stream_ended.clear()
    got: list[bytes] = []

    async def go() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/gated/stream", headers={"X-Forwarded-For": US}) as r,
        ):
            assert r.status == 200
            async for chunk in r.content.iter_any():
                got.append(chunk)
                control.first_chunk_seen.set()

    asyncio.run(go())
    body = b"".join(got)
    assert b'"n": 2' in body and b"TIMEOUT" not in body
    assert control.stream_ended.is_set()


# --- WebSockets ---------------------------------------------------------------------------------


def test_websocket_proxied(gateway: tuple[int, GatewayApp]) -> None:
    port, _ = gateway

    async def go() -> tuple[str, bytes]:
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(
                f"ws://127.0.0.1:{port}/v1/ws/echo", headers={"X-Forwarded-For": US}
            ) as ws,
        ):
            await ws.send_str("hello")
            text = (await ws.receive(timeout=10)).data
            await ws.send_bytes(b"\x00\x01binary")
            data = (await ws.receive(timeout=10)).data
            return text, data

    assert asyncio.run(go()) == ("hello", b"\x00\x01binary")


def test_websocket_blocked(gateway: tuple[int, GatewayApp]) -> None:
    port, _ = gateway

    async def go() -> int:
        async with aiohttp.ClientSession() as s:
            try:
                async with s.ws_connect(
                    f"ws://127.0.0.1:{port}/v1/ws/echo", headers={"X-Forwarded-For": CN}
                ):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(go()) == 403


# --- upstream failures ----------------------------------------------------------------------------


def _post(port: int, path: str, client_ip: str = US) -> tuple[int, dict[str, object]]:
    async def go() -> tuple[int, dict[str, object]]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{port}{path}", json={}, headers={"X-Forwarded-For": client_ip}
            ) as r,
        ):
            return r.status, json.loads(await r.read())

    return asyncio.run(go())


def test_upstream_down_is_502(tiny_snapshot_path: Path) -> None:
    dead = free_port()  # nothing listens there
    with serve_gateway(tiny_snapshot_path, f"http://127.0.0.1:{dead}") as (port, app):
        status, body = _post(port, "/v1/chat/completions")
        assert status == 502
        assert body["error"]["code"] == "bad_gateway"  # type: ignore[index]
        assert app.gate.stats.upstream_errors["bad_gateway"] == 1
        # Blocked requests are answered without trying the upstream at all.
        assert _post(port, "/v1/chat/completions", CN)[0] == 403
        assert app.gate.stats.upstream_errors["bad_gateway"] == 1


def test_upstream_reset_is_502(tiny_snapshot_path: Path) -> None:
    with (
        resetting_server() as bad,
        serve_gateway(tiny_snapshot_path, f"http://127.0.0.1:{bad}") as (port, _),
    ):
        status, body = _post(port, "/v1/chat/completions")
        assert status == 502 and body["error"]["type"] == "upstream_error"  # type: ignore[index]


def test_upstream_slow_is_504(tiny_snapshot_path: Path, upstream: int) -> None:
    with serve_gateway(
        tiny_snapshot_path, f"http://127.0.0.1:{upstream}", upstream_read_timeout=0.3
    ) as (port, _):

        async def go() -> tuple[int, dict[str, object]]:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"http://127.0.0.1:{port}/gated/slow", headers={"X-Forwarded-For": US}) as r,
            ):
                return r.status, json.loads(await r.read())

        status, body = asyncio.run(go())
        assert status == 504 and body["error"]["code"] == "upstream_timeout"  # type: ignore[index]


def test_client_disconnect_mid_stream_cancels_upstream(
    gateway: tuple[int, GatewayApp], control: Control
) -> None:
    port, _ = gateway
    control.stream_cancelled.clear()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"GET /gated/endless HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: "
            + US.encode()
            + b"\r\n\r\n"
        )
        data = b""
        while b"data: 1" not in data:
            data += sock.recv(4096)
    # The upstream generator is cancelled once the gateway notices the client has gone.
    assert control.stream_cancelled.wait(20)


@pytest.mark.parametrize("with_body", [False, True])
def test_client_disconnect_before_the_answer_drops_the_upstream_request(
    tiny_snapshot_path: Path, with_body: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that gives up while the upstream is still thinking (a long completion) makes
    the gateway drop the upstream connection: the upstream's work is not wasted to the end."""
    import regiongate.enforce.proxy as proxy_module

    # The watcher starts at once (not after 50 ms): by the time the upstream has the request,
    # the gateway is watching for the client, with no sleep in the test.
    monkeypatch.setattr(proxy_module, "_WATCH_AFTER", 0.0)
    with (
        silent_server() as (upstream, got_request, closed),
        serve_gateway(tiny_snapshot_path, f"http://127.0.0.1:{upstream}") as (port, _),
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        body = b'{"model": "demo-1"}'
        head = b"POST" if with_body else b"GET"
        sock.sendall(
            head
            + b" /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: "
            + US.encode()
            + (b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body if with_body else b"\r\n\r\n")
        )
        assert got_request.wait(10)
        sock.close()
        assert closed.wait(10)


# --- big uploads, headers -----------------------------------------------------------------------


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_100mb_upload_streams_with_flat_memory(gateway: tuple[int, GatewayApp]) -> None:
    port, _ = gateway
    size = 100 * 1024 * 1024
    chunk = b"x" * (256 * 1024)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib())
            time.sleep(0.02)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(chunk)):
            yield chunk

    async def go() -> dict[str, object]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{port}/v1/echo",
                data=body(),
                headers={"X-Forwarded-For": US, "Content-Type": "application/octet-stream"},
            ) as r,
        ):
            assert r.status == 200
            return dict(await r.json())

    before = _rss_kib()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = asyncio.run(go())
    finally:
        done.set()
        sampler.join()
    assert result["bytes"] == size
    # Client, gateway and upstream all run in this process: had any of them buffered the
    # body, memory would have grown by 100 MB.
    assert (peak[0] - before) < 40 * 1024, f"RSS grew by {(peak[0] - before) // 1024} MiB"


def test_forwarding_headers_to_upstream(gateway: tuple[int, GatewayApp]) -> None:
    port, _ = gateway

    async def go() -> dict[str, str]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                f"http://127.0.0.1:{port}/gated/headers",
                headers={
                    "X-Forwarded-For": US,
                    "X-Regiongate-Territory": "forged",
                    "Connection": "keep-alive, X-Secret-Hop",
                    "X-Secret-Hop": "must not pass",
                    "Host": "api.example",
                },
            ) as r,
        ):
            return dict(await r.json())

    seen = asyncio.run(go())
    assert seen["x-regiongate-territory"] == "US" and seen["x-regiongate-decision"] == "allow"
    assert seen["x-forwarded-for"] == f"{US}, 127.0.0.1"
    assert seen["x-forwarded-host"] == "api.example" and seen["x-forwarded-proto"] == "http"
    assert "x-secret-hop" not in seen


def test_body_framing_cannot_be_dropped_by_the_client(gateway: tuple[int, GatewayApp]) -> None:
    """``Connection: content-length`` must not strip the body's length on the way upstream:
    the upstream would read the body as a request of its own (request smuggling)."""
    port, _ = gateway

    async def go() -> tuple[dict[str, str], int]:
        smuggled = b"GET /gated/headers HTTP/1.1\r\nhost: x\r\n\r\n"
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"http://127.0.0.1:{port}/gated/headers",
                data=smuggled,
                headers={"X-Forwarded-For": US, "Connection": "content-length"},
            ) as r:
                seen = dict(await r.json())
            async with s.get(f"http://127.0.0.1:{port}/gated/headers",
                             headers={"X-Forwarded-For": US}) as r2:  # fmt: skip
                return seen, len(dict(await r2.json()))

    seen, _ = asyncio.run(go())
    assert seen["content-length"] == str(len(b"GET /gated/headers HTTP/1.1\r\nhost: x\r\n\r\n"))


def test_untrusted_peer_cannot_spoof_through_the_proxy(
    tiny_snapshot_path: Path, upstream: int
) -> None:
    # Only 10.0.0.0/8 is trusted: this test's loopback connection is not, so its
    # X-Forwarded-For is ignored and the client is 127.0.0.1 itself (private: allowed).
    with serve_gateway(
        tiny_snapshot_path, f"http://127.0.0.1:{upstream}", trusted_proxies=["10.0.0.0/8"]
    ) as (port, _):
        status, body = _post(port, "/gated/headers", CN)
        assert status == 200 and body["x-regiongate-territory"] == "unknown"


def test_operational_endpoints(gateway: tuple[int, GatewayApp]) -> None:
    port, _ = gateway

    async def go() -> tuple[
        int, str, dict[str, object], tuple[int, dict[str, str]], tuple[int, dict[str, str]]
    ]:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                metrics = (r.status, await r.text())
            async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                ready = await r.json()
            async with s.get(
                f"http://127.0.0.1:{port}/_regiongate/decide", headers={"X-Forwarded-For": CN}
            ) as r:
                blocked = (r.status, {k.lower(): v for k, v in r.headers.items()})
            async with s.get(
                f"http://127.0.0.1:{port}/_regiongate/decide/v1/chat",
                headers={"X-Forwarded-For": US},
            ) as r:
                allowed = (r.status, {k.lower(): v for k, v in r.headers.items()})
            # Envoy ext_authz (HTTP) prefixes the original path and method and allows on 200.
            async with s.post(
                f"http://127.0.0.1:{port}/_regiongate/decide/envoy/v1/chat/completions",
                headers={"X-Forwarded-For": US},
            ) as r:
                envoy_allowed = (r.status, r.headers["x-regiongate-decision"], await r.read())
            async with s.post(
                f"http://127.0.0.1:{port}/_regiongate/decide/envoy/v1/chat/completions",
                headers={"X-Forwarded-For": CN},
            ) as r:
                envoy_blocked = (r.status, await r.json())
            assert envoy_allowed == (200, "allow", b"")
            assert envoy_blocked[0] == 403
            assert envoy_blocked[1]["error"]["code"] == "unsupported_country_region_territory"
            return metrics[0], metrics[1], ready, blocked, allowed

    status, text, ready, blocked, allowed = asyncio.run(go())
    assert status == 200
    assert (
        'regiongate_decisions_total{action="block",reason="unsupported-territory",territory="CN"}'
        in text
    )
    assert "regiongate_decision_seconds_bucket" in text and "regiongate_data_age_seconds" in text
    assert ready["policy"] == "api-2024@2024-07-09" and ready["phase"] == "enforce"
    assert blocked[0] == 403 and blocked[1]["x-regiongate-territory"] == "CN"
    assert allowed[0] == 204 and allowed[1]["x-regiongate-decision"] == "allow"
