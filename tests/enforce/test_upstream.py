"""The proxy's HTTP/1.1 upstream client against scripted servers on real sockets: what each
side writes is exactly what the test says, so framing, reuse and failures are pinned down."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from regiongate.enforce.upstream import UpstreamBroken, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def run(handler: Handler, test: Callable[[UpstreamPool, list[int]], Awaitable[None]],
        **pool_args: float) -> list[int]:  # fmt: skip
    """Serve ``handler`` (called per connection with its number) and run ``test`` against a
    pool to it; returns the connection numbers seen."""
    seen: list[int] = []

    async def main() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(len(seen))
            try:
                await handler(reader, writer, seen[-1])
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        args: dict[str, float] = {"read_timeout": 5, **pool_args}
        pool = UpstreamPool(f"http://127.0.0.1:{port}", **args)  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(test(pool, seen), 20)
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    return seen


async def _get(pool: UpstreamPool, method: str = "GET", body: AsyncIterator[bytes] | None = None,
               chunked: bool = False, headers: list[tuple[bytes, bytes]] | None = None
               ) -> tuple[int, bytes]:  # fmt: skip
    resp = await pool.request(method, b"/x?q=1", headers or [], body, chunked=chunked)
    try:
        return resp.status, b"".join([c async for c in resp.body()])
    finally:
        resp.release()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def keep_answering(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
    """A kept-alive upstream: ``OK`` to every request on the connection."""
    while True:
        await _head(r)
        w.write(OK)
        await w.drain()


def test_keep_alive_connection_is_reused() -> None:
    heads: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        while True:
            heads.append(await _head(r))
            w.write(OK)
            await w.drain()

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        for _ in range(5):
            assert await _get(pool) == (200, b"ok")

    assert run(handler, test) == [0]  # one connection for five requests
    assert heads[0].startswith(b"GET /x?q=1 HTTP/1.1\r\nhost: 127.0.0.1:")


def test_closed_keep_alive_connection_is_retried_without_a_body() -> None:
    """The upstream closes a kept-alive connection as the next request arrives (the race
    every pooling client meets): a bodiless request goes again on a new connection."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await _head(r)
        w.write(OK)
        await w.drain()
        await _head(r)  # the second request on this connection: closed unanswered

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        assert await _get(pool) == (200, b"ok")
        assert await _get(pool) == (200, b"ok")

    assert run(handler, test) == [0, 1]


def test_closed_connection_with_a_body_or_not_idempotent_is_not_resent() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        head = await _head(r)
        if b"content-length: 3" in head:
            await r.readexactly(3)
        w.write(OK)
        await w.drain()
        await _head(r)

    for method, body, headers in (("POST", _chunks(b"abc"), [(b"content-length", b"3")]),
                                  ("POST", None, [])):  # fmt: skip

        async def test(pool: UpstreamPool, seen: list[int]) -> None:
            assert await _get(pool) == (200, b"ok")
            with pytest.raises(UpstreamBroken):
                await _get(pool, method, body, headers=headers)  # noqa: B023

        assert run(handler, test) == [0]


def test_idle_connections_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    import regiongate.enforce.upstream as upstream

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        for _ in range(3):
            assert await _get(pool) == (200, b"ok")

    monkeypatch.setattr(upstream, "_IDLE_MAX", -1.0)  # every idle connection is too old
    assert run(keep_answering, test) == [0, 1, 2]


def test_chunked_request_body_is_reframed() -> None:
    got: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        head = await _head(r)
        assert b"transfer-encoding: chunked" in head
        got.append(await r.readuntil(b"0\r\n\r\n"))
        w.write(OK)

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        assert await _get(pool, "POST", _chunks(b"hello ", b"", b"world"), chunked=True) == (
            200,
            b"ok",
        )

    run(handler, test)
    assert got == [b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"]


def test_head_answer_has_no_body_and_closes() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await _head(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        await w.drain()
        await r.read()

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        assert await _get(pool, "HEAD") == (200, b"")
        assert await _get(pool, "HEAD") == (200, b"")

    assert run(handler, test) == [0, 1]  # never reused: the parser expected a body


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", b"until the end"),  # delimited by close
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", b"ok"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            b"abc",
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
def test_answer_framing(answer: bytes, body: bytes) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await _head(r)
        w.write(answer)
        await w.drain()
        if b"content-length" not in answer and b"chunked" not in answer and b"204" not in answer:
            w.close()  # the end of the body
        else:
            await r.read()

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        status, got = await _get(pool)
        assert got == body
        assert status in (200, 204)

    run(handler, test)


def test_early_answer_ends_the_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upstream that reads no body and answers (413) while the proxy waits for it to read
    gets its answer through at once (not a 504 after the read timeout), and the connection,
    with the body half sent, is not reused."""
    import regiongate.enforce.upstream as upstream

    stop, stalled = asyncio.Event(), asyncio.Event()
    pause = upstream._Connection.pause_writing

    def paused(self: upstream._Connection) -> None:
        stalled.set()  # the proxy's writes have backed up: it is waiting for the upstream
        pause(self)

    monkeypatch.setattr(upstream._Connection, "pause_writing", paused)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await _head(r)
        await stalled.wait()
        w.write(b"HTTP/1.1 413 Too Large\r\ncontent-length: 3\r\n\r\nbig")
        await w.drain()
        await stop.wait()  # reads nothing more: the proxy's writes back up

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            yield b"x" * 65536
            await asyncio.sleep(0)

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        try:
            got = await _get(pool, "POST", endless(), headers=[(b"content-length", b"655360000")])
            assert got == (413, b"big")
            assert not pool._idle
        finally:
            stop.set()

    run(handler, test, read_timeout=3)  # a TimeoutError here is the bug


def test_a_second_answer_is_not_taken_for_the_next() -> None:
    """An upstream that answers twice to one request: the first answer is read whole (its
    headers alone), and the connection is never reused for the next request."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await _head(r)
        w.write(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-extra: 1\r\n\r\nextra")
        await w.drain()
        await r.read()

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        resp = await pool.request("GET", b"/", [])
        assert resp.headers == [(b"content-length", b"2")]
        assert b"".join([c async for c in resp.body()]) == b"ok"
        resp.release()
        assert await _get(pool) == (200, b"ok")

    assert run(handler, test) == [0, 1]


def test_not_http_and_reset_are_broken() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await _head(r)
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n" if n == 0 else b"HTTP/1.1 200 OK\r\ncontent-le")
        await w.drain()

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        for _ in range(2):
            with pytest.raises(UpstreamBroken):
                await _get(pool)

    run(handler, test)


def test_read_timeout_mid_body() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await _head(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await w.drain()
        await r.read()

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        resp = await pool.request("GET", b"/", [])
        parts = []
        with pytest.raises(TimeoutError):
            async for chunk in resp.body():
                parts.append(chunk)
        resp.release()
        assert parts == [b"half"]
        assert not pool._idle

    run(handler, test, read_timeout=0.2)


def test_connections_are_capped_and_waiters_served() -> None:
    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        results = await asyncio.gather(*(_get(pool) for _ in range(20)))
        assert results == [(200, b"ok")] * 20

    assert run(keep_answering, test, max_connections=2) == [0, 1]


def test_waiters_come_before_requests_that_take_an_idle_connection() -> None:
    """With every connection in use, a request that waits is served before one that comes
    later and asks for an idle connection without waiting (the gateway's relay does that):
    the room a release makes is the waiter's."""

    async def test(pool: UpstreamPool, seen: list[int]) -> None:
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.01)  # waiting now: the only connection is held
        held.complete = held.keep_alive = True  # (as after a whole exchange)
        pool.release(held)
        assert pool.take_idle() is None  # not while a woken waiter has not taken it
        got = await waiter
        assert got is held and got.reused
        assert pool.take_idle() is None  # in use again
        got.complete = got.keep_alive = True
        pool.release(got)
        assert pool.take_idle() is got  # nobody waits: taken at once

    assert run(keep_answering, test, max_connections=1) == [0]


def test_cannot_connect_is_an_oserror() -> None:
    async def main() -> None:
        pool = UpstreamPool("http://127.0.0.1:9", connect_timeout=2)
        with pytest.raises(OSError):
            await pool.request("GET", b"/", [])
        assert pool._open == 0

    asyncio.run(main())


def test_bad_upstream_url() -> None:
    for url in ("ftp://x", "http://", "localhost:80"):
        with pytest.raises(ValueError, match="http"):
            UpstreamPool(url)


def test_https_upstream_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An https:// upstream: the certificate is checked against the trust store (here a
    throwaway CA given by SSL_CERT_FILE, as OpenSSL reads it), and its name against the host."""
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main(trusted: bool) -> None:
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await _head(r)
                w.write(OK)
                await w.drain()
            except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        if trusted:
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        else:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        pool = UpstreamPool(f"https://127.0.0.1:{port}")
        try:
            if trusted:
                assert await _get(pool) == (200, b"ok")
            else:
                with pytest.raises(ssl.SSLCertVerificationError):
                    await _get(pool)
        finally:
            await pool.close()
            server.close()

    asyncio.run(main(trusted=True))
    asyncio.run(main(trusted=False))


# --- through the proxy (driven over ASGI, as uvicorn drives it) ---------------------------------


def test_client_leaving_mid_upload_never_completes_the_body_upstream() -> None:
    """A chunked upload cut short by the client's disconnect must not reach the upstream as a
    complete body (no final empty chunk): the upstream sees the connection drop instead."""
    from regiongate.enforce.proxy import ReverseProxy

    async def main() -> list[str]:
        seen: list[str] = []
        done = asyncio.Event()

        async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await _head(r)
                await r.readuntil(b"0\r\n\r\n")
                seen.append("complete")
                w.write(OK)
                await w.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                seen.append("cut")
            finally:
                done.set()
                w.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        proxy = ReverseProxy(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        messages = [{"type": "http.request", "body": b"first half", "more_body": True},
                    {"type": "http.disconnect"}]  # fmt: skip
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/up", "raw_path": b"/up",
                 "query_string": b"", "client": ("203.0.113.9", 1234),
                 "headers": [(b"host", b"gw"), (b"transfer-encoding", b"chunked")]}  # fmt: skip
        await proxy(scope, receive, send)  # type: ignore[arg-type]
        await asyncio.wait_for(done.wait(), 10)
        await proxy.close()
        server.close()
        assert sent == []  # nobody left to answer
        return seen

    assert asyncio.run(main()) == ["cut"]
