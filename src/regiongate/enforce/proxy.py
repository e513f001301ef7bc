"""The reverse proxy: an ASGI app that forwards to one upstream, streaming both ways.

HTTP goes through :mod:`.upstream`, a lean HTTP/1.1 client of our own (httptools parsing,
pooled keep-alive connections); WebSockets through aiohttp's client. Why: docs/gateway.md
(aiohttp's client was ~18k requests/s against httpx's ~0.7k here, and then about half of the
gateway's CPU per proxied request; the lean client takes a fraction of that).

Bodies are never buffered: request bodies are forwarded chunk by chunk as the client sends
them, responses chunk by chunk as the upstream sends them, so Server-Sent Events reach the
client token by token. A client that disconnects mid-stream cancels the
upstream request. Upstream failures before the response starts become a JSON 502 (cannot
connect, reset) or 504 (timeout); after it started, the connection is aborted so the client
sees a truncated response rather than a false end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from regiongate.enforce.asgi import Message, Receive, Scope, Send
from regiongate.enforce.responses import error_body, send_json
from regiongate.enforce.upstream import UpstreamPool, UpstreamResponse

__all__ = [
    "HOP_BY_HOP",
    "ReverseProxy",
    "UpstreamError",
    "forward_headers",
    "hop_by_hop",
    "upstream_failure",
]

log = logging.getLogger("regiongate.proxy")

# RFC 9110 §7.6.1 hop-by-hop fields, plus the non-standard ones proxies still meet.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
_WS_HANDSHAKE: Final = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
     b"sec-websocket-protocol", b"sec-websocket-accept"}
)  # fmt: skip


class UpstreamError(Exception):
    """The upstream failed mid-response; the client connection is aborted."""


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


# An answer's fields not passed on to the client besides the hop-by-hop ones, as nginx's
# proxy_pass hides them: the server adds its own Date (two would contradict each other), and
# the upstream's Server says what runs behind the gateway.
NOT_PASSED_ON: Final = HOP_BY_HOP | {b"date", b"server"}


def hop_by_hop(
    headers: list[tuple[bytes, bytes]], base: frozenset[bytes] = HOP_BY_HOP
) -> frozenset[bytes]:
    """The fields not to forward: ``base`` (the standard hop-by-hop ones), plus any that a
    ``Connection`` field names (names are lower-case, as ASGI and httptools give them)."""
    named = [value for name, value in headers if name == b"connection"]
    if not named:
        return base
    names = set(base)
    for value in named:
        names.update(v.strip().lower() for v in value.split(b","))
    return frozenset(names)


def forward_headers(
    raw: Iterable[tuple[bytes, bytes]],
    client: str | None,
    scheme: str,
    *,
    websocket: bool = False,
    chunked: bool = False,
) -> list[tuple[bytes, bytes]]:
    """The client's headers for the upstream: hop-by-hop ones (and ``Host``) dropped,
    ``X-Forwarded-For/-Host/-Proto`` set (``client``: the peer's address). Names are
    lower-case already (as ASGI and httptools give them).

    The body's framing is the proxy's, never the client's to remove: ``Content-Length`` goes
    on as the client sent it (what the body reader delivers), whatever a ``Connection`` field
    names; a chunked body is re-framed by the upstream client. (A client that named
    ``content-length`` in ``Connection`` would otherwise have its body read by the upstream as
    a request of its own, on a connection then reused.)"""
    raw = raw if isinstance(raw, list) else list(raw)
    drop = hop_by_hop(raw) | {b"host", b"content-length"}
    if websocket:
        drop |= _WS_HANDSHAKE
    if client:
        drop |= {b"x-forwarded-for"}
    out = [(n, v) for n, v in raw if n not in drop]
    length = next((v for n, v in raw if n == b"content-length"), None)
    if length is not None and not chunked and not websocket:
        out.append((b"content-length", length))
    if client:
        prior = [v for n, v in raw if n == b"x-forwarded-for"]
        out.append((b"x-forwarded-for", b", ".join([*prior, client.encode("latin-1")])))
    host = next((v for n, v in raw if n == b"host"), None)
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-proto", scheme.encode("latin-1")))
    return out


def upstream_failure(exc: BaseException) -> tuple[int, str, dict[str, Any]]:
    """What a client is answered when the upstream failed before its answer started (status,
    error code, JSON body): 504 for a timeout, else 502 (cannot connect, reset, not HTTP)."""
    if isinstance(exc, TimeoutError):
        status, code, message = 504, "upstream_timeout", "The upstream did not answer in time"
    else:
        status, code, message = 502, "bad_gateway", "The upstream is unavailable"
    return status, code, error_body(message, "upstream_error", code)


# How long an exchange runs before a task starts watching for the client's disconnect.
_WATCH_AFTER: Final = 0.05


class ReverseProxy:
    """Forward every HTTP request and WebSocket to ``upstream``."""

    def __init__(
        self,
        upstream: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_connections: int = 512,
        on_error: Any = None,
    ) -> None:
        self.pool = UpstreamPool(  # checks the URL: ValueError
            upstream,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
        )
        self.upstream = upstream.rstrip("/")
        # The upstream URL's path, put before every request's path.
        self.base_target = urlsplit(upstream).path.rstrip("/").encode("latin-1")
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None  # WebSockets
        self.on_error = on_error or (lambda kind: None)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, limit_per_host=self._max_connections
                ),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        await self.pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, scope: Scope, websocket: bool = False) -> str:
        path = scope.get("raw_path") or scope["path"].encode()
        if isinstance(path, bytes):
            path = path.decode("latin-1")
        query = scope.get("query_string", b"")
        url: str = self.upstream + path
        if query:
            url += "?" + query.decode("latin-1")
        if websocket:
            url = "ws" + url[4:]  # http → ws, https → wss
        return url

    def _target(self, scope: Scope) -> bytes:
        path = scope.get("raw_path") or scope["path"].encode()
        if isinstance(path, str):
            path = path.encode("latin-1")
        query: bytes = scope.get("query_string", b"")
        target: bytes = self.base_target + path
        return target + b"?" + query if query else target

    def _forward_headers(
        self, scope: Scope, websocket: bool = False, chunked: bool = False
    ) -> list[tuple[bytes, bytes]]:
        client = scope.get("client")
        return forward_headers(
            scope["headers"],
            client[0] if client else None,
            scope.get("scheme", "http"),
            websocket=websocket,
            chunked=chunked,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    # --- HTTP ----------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward one request in this task. The client's disconnect cancels the exchange (the
        upstream connection is dropped, not read to the end): it is seen by the request body's
        reader, and, once the exchange has run for ``_WATCH_AFTER`` seconds, by a watcher task
        (most exchanges end sooner and never start one: ~10% more requests a second)."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("the proxy runs in an asyncio task")
        body_done = asyncio.Event()
        gone = finished = False
        watcher: asyncio.Future[None] | None = None

        def client_gone() -> None:
            nonlocal gone
            if not gone and not finished:
                gone = True
                task.cancel()

        async def body() -> AsyncIterator[bytes]:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    # Raised, not returned: a body cut short must never look complete to the
                    # upstream (a chunked one would get its final empty chunk).
                    body_done.set()
                    gone = True
                    raise _ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    body_done.set()
                    return

        headers = scope["headers"]
        chunked = any(n == b"transfer-encoding" for n, _ in headers)
        has_body = chunked or any(
            n == b"content-length" and v.strip() not in (b"", b"0") for n, v in headers
        )
        if not has_body:
            body_done.set()

        async def watch_disconnect() -> None:
            await body_done.wait()  # receive() is the body reader's until the body is read
            while not gone:
                message = await receive()
                if message["type"] == "http.disconnect":
                    client_gone()

        def start_watching() -> None:
            nonlocal watcher
            if not finished:
                watcher = asyncio.ensure_future(watch_disconnect())

        timer = asyncio.get_running_loop().call_later(_WATCH_AFTER, start_watching)
        try:
            await self._exchange(scope, send, body() if has_body else None, chunked)
        except asyncio.CancelledError:
            if not gone:
                raise  # not the client leaving: shutdown, or the server's own cancel
            task.uncancel()
            self.on_error("client_disconnect")
        except UpstreamError:
            if not gone:
                raise
            self.on_error("client_disconnect")
        except _ClientGone:
            self.on_error("client_disconnect")
        finally:
            finished = True
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _exchange(
        self, scope: Scope, send: Send, data: AsyncIterator[bytes] | None, chunked: bool
    ) -> None:
        started = False
        response: UpstreamResponse | None = None
        try:
            response = await self.pool.request(
                scope["method"],
                self._target(scope),
                self._forward_headers(scope, chunked=chunked),
                data,
                chunked=chunked,
            )
            drop = hop_by_hop(response.headers, NOT_PASSED_ON)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [(n, v) for n, v in response.headers if n not in drop],
                }
            )
            started = True
            async for chunk in response.body():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError as exc:  # timed out; cannot connect, reset, closed, not HTTP
            await self._fail(send, started, exc)
        finally:
            if response is not None:
                response.release()

    async def _fail(self, send: Send, started: bool, exc: BaseException) -> None:
        status, code, body = upstream_failure(exc)
        self.on_error(code)
        if started:
            log.warning("upstream failed mid-response: %r", exc)
            raise UpstreamError(str(exc)) from exc
        log.warning("upstream error (%s): %r", code, exc)
        await send_json(send, status, body)

    # --- WebSocket -----------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        first: Message = await receive()
        if first["type"] != "websocket.connect":
            return
        protocols = tuple(scope.get("subprotocols") or ())
        try:
            upstream = await self._client().ws_connect(
                self._url(scope, websocket=True),
                headers=[
                    (n.decode("latin-1"), v.decode("latin-1"))
                    for n, v in self._forward_headers(scope, websocket=True)
                ],
                protocols=protocols,
                autoping=True,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.on_error("bad_gateway")
            log.warning("websocket upstream error: %r", exc)
            await send({"type": "websocket.close", "code": 1011})
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.protocol})

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    if message.get("text") is not None:
                        await upstream.send_str(message["text"])
                    elif message.get("bytes") is not None:
                        await upstream.send_bytes(message["bytes"])
                elif message["type"] == "websocket.disconnect":
                    await upstream.close(code=message.get("code", 1000))
                    return

        async def upstream_to_client() -> None:
            async for msg in upstream:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await send({"type": "websocket.send", "text": msg.data})
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await send({"type": "websocket.send", "bytes": msg.data})
                else:
                    break
            code = upstream.close_code or 1000
            await send({"type": "websocket.close", "code": code})

        tasks = {
            asyncio.ensure_future(client_to_upstream()),
            asyncio.ensure_future(upstream_to_client()),
        }
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            await upstream.close()
