"""The proxy's HTTP/1.1 client for its one upstream: pooled keep-alive connections, bodies
streamed both ways, responses parsed by httptools (llhttp, in C).

Why not aiohttp's client (which still carries the WebSockets): profiled under load through
``regiongate serve``, aiohttp's client was about half of the gateway's CPU per proxied request
(URL objects, header multidicts, auto headers, tracing hooks, a payload writer per request).
A proxy to one fixed upstream needs none of it: it writes the request head it already has as
bytes, and hands the response's chunks on as they arrive. Measured in docs/performance.md.

What it does, as a reverse proxy must:

- Requests: a body is written as it arrives, with the client's ``Content-Length`` or, when
  the client sent it chunked, re-framed as chunked; writing waits while the upstream reads
  slowly (flow control both ways).
- Responses: interim 1xx answers are skipped; a body is delimited by its length, its chunks,
  or the end of the connection; a HEAD answer has none. Reading pauses while the client is
  slower than the upstream (at most ``_HIGH_WATER`` bytes wait).
- Connections are reused only after a complete exchange the upstream agreed to keep alive.
  A reused connection that the upstream had already closed (a keep-alive race) is retried
  once on a new one when the request has no body (nothing was lost).
- Timeouts: ``connect_timeout`` to connect, ``read_timeout`` for each wait on the upstream.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Final, Protocol, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["IDEMPOTENT", "Sink", "UpstreamBroken", "UpstreamPool", "UpstreamResponse"]

# Response bytes held for a slow client before reading from the upstream pauses.
_HIGH_WATER: Final = 1 << 20
# Methods sent again after the keep-alive race (RFC 9110 9.2.2).
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# An idle connection older than this is closed rather than reused: upstreams close idle
# keep-alive connections (gunicorn after 2 s, uvicorn 5 s, nginx 75 s), and a request with a
# body sent on one that is just closing cannot be sent again.
_IDLE_MAX: Final = 1.5


class UpstreamBroken(ConnectionError):
    """The upstream closed, reset or sent something that is not HTTP."""


class Sink(Protocol):
    """What runs an exchange by callbacks: :meth:`news` when the connection's state moved,
    :meth:`drained` when the upstream has read what it was sent."""

    def news(self) -> None: ...

    def drained(self) -> None: ...


class _Connection(asyncio.Protocol):
    """One connection to the upstream; one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.reused = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._write_paused = False
        self._reading_paused = False
        # An exchange answered by callbacks instead of awaited (enforce/relay.py): told of news
        # once per read from the upstream, and when the connection is lost.
        self.sink: Sink | None = None
        self._feeding = False
        # One parser for the connection's life: after a complete answer it is ready for the
        # next one (a connection is reused only then).
        self.parser = httptools.HttpResponseParser(self)
        self._begin(head=False)

    def _begin(self, *, head: bool) -> None:
        """Fresh state for the next exchange."""
        self.head = head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.until_eof = False
        self.got_bytes = False
        self.cut = False  # the request body was not sent to its end
        self.error: BaseException | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.complete or self.error is not None:
            # Bytes after a complete answer (or after an error): never reused.
            self.error = self.error or UpstreamBroken("the upstream sent more than its answer")
            self._abort()
            return
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamBroken("the upstream switched protocols on a plain request"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"the upstream's answer is not HTTP: {exc}"))
        else:
            if self.error is not None:  # set by a callback: a second answer
                self._abort()
        finally:
            self._feeding = False
        if self.sink is not None:
            self.sink.news()  # all of this read at once: one write to the client

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.complete and self.error is None:
            if self.headers_done and self.until_eof and exc is None:
                self.complete = True  # a body delimited by the end of the connection
            else:
                self.error = UpstreamBroken(
                    f"the upstream closed the connection: {exc}"
                    if exc
                    else "the upstream closed the connection"
                )
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(self.error or UpstreamBroken("connection lost"))
        self.pool._lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self.sink is not None:
            self.sink.drained()

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: nothing of it is read
            self.error = self.error or UpstreamBroken("the upstream sent more than its answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.complete:  # a second answer to one request
            self.error = UpstreamBroken("the upstream sent more than its answer")
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim answer (100 Continue, 103 Early Hints): skipped
            return
        self.status = status
        self.headers_done = True
        # (llhttp answers this only inside the message's callbacks)
        self.keep_alive = self.parser.should_keep_alive()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # an early answer: the body need not be sent on
        if self.head or status in (204, 304):
            self.complete = True
        else:
            framed = False
            for name, value in self.headers:
                if name == b"content-length" or (
                    name == b"transfer-encoding" and b"chunked" in value.lower()
                ):
                    framed = True
                    break
            self.until_eof = not framed
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return  # a HEAD answer's announced body is not read
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered >= _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True
            self._wake()

    # --- the exchange --------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._abort()
        self._wake()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self.sink is not None:
            if not self._feeding:
                self.sink.news()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        """Until the parser has news (or ``timeout`` seconds: ``TimeoutError``)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await _within(self._waiter, timeout)
        finally:
            self._waiter = None

    async def write(self, data: bytes, timeout: float) -> None:
        if self.lost or self.transport is None:
            raise self.error or UpstreamBroken("the upstream closed the connection")
        self.transport.write(data)
        if self._write_paused:  # until the upstream has read enough of it
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await _within(self._drained, timeout)
            finally:
                self._drained = None

    async def response(self, timeout: float) -> None:
        """Wait for the answer's status and headers."""
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)
        if self.error is not None and not self.complete:
            raise self.error

    async def body(self, timeout: float) -> AsyncIterator[bytes]:
        """The answer's body, chunk by chunk as it arrives."""
        chunks = self.chunks
        while True:
            while chunks:
                chunk = chunks.popleft()
                self.buffered -= len(chunk)
                if self._reading_paused and self.buffered < _HIGH_WATER // 4 and self.transport:
                    self._reading_paused = False
                    self.transport.resume_reading()
                yield chunk
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.head
            and not self.until_eof
            and not self.lost
            and not self.cut
            and self.error is None
            and self.keep_alive
            and not self.chunks
        )


async def _within(future: asyncio.Future[None], timeout: float) -> None:
    """Await ``future``, failing it with ``TimeoutError`` after ``timeout`` seconds (a timer
    handle: cheaper than ``asyncio.timeout`` on a path taken once per chunk)."""
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("the upstream did not answer in time"))


class UpstreamResponse:
    """An answer being received: ``status``, ``headers`` (names lower-case), ``body()``.
    ``release()`` hands the connection back (or closes it); always call it."""

    def __init__(self, pool: UpstreamPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self._released = False

    def body(self) -> AsyncIterator[bytes]:
        return self._conn.body(self._pool.read_timeout)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._conn)


class UpstreamPool:
    """Connections to one upstream (``http://`` or ``https://host[:port]``), at most
    ``max_connections`` at once; further requests wait for one."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_connections: int = 512,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"upstream {url!r} must be an http:// or https:// URL")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        default_port = (parts.scheme == "https" and self.port == 443) or (
            parts.scheme == "http" and self.port == 80
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = (host if default_port else f"{host}:{self.port}").encode("idna")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._woken = 0  # waiters told of room that have not yet taken it
        self._closed = False

    # --- connections ---------------------------------------------------------------------------

    def take_idle(self, *, turn: bool = False) -> _Connection | None:
        """A kept-alive connection ready for a request, if one is idle (no waiting). Not
        while requests wait for one (they come first), unless it is one of them (``turn``)."""
        if (self._waiting or self._woken) and not turn:
            return None
        now = time.monotonic()  # not the loop's time: no getpid() (see Relay.loop)
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if conn.lost or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > _IDLE_MAX:
                conn.transport.abort()  # connection_lost counts it out
                continue
            conn.reused = True
            return conn
        return None

    async def acquire(self) -> _Connection:
        """A connection for one exchange: an idle one, a new one, or the next one released
        when ``max_connections`` are open (first come, first served). Hand it back with
        :meth:`release`."""
        woken = False
        while True:
            conn = self.take_idle(turn=woken)
            if conn is not None:
                return conn
            if self._open < self.max_connections and (woken or not (self._waiting or self._woken)):
                return await self._connect()
            waiter = asyncio.get_running_loop().create_future()
            if woken:  # woken, and the room taken meanwhile: first in line again
                self._waiting.appendleft(waiter)
            else:
                self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._woken -= 1
                    self._wake_one()  # woken, then cancelled: the room goes to the next
                raise
            self._woken -= 1
            woken = True

    async def _connect(self) -> _Connection:
        if self._closed:
            raise UpstreamBroken("the upstream pool is closed")
        loop = asyncio.get_running_loop()
        self._open += 1
        made: list[_Connection] = []

        def protocol() -> _Connection:
            made.append(_Connection(self))
            return made[-1]

        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(protocol, self.host, self.port, ssl=self.ssl)
        except BaseException:
            if made and made[0].transport is not None:
                # Connected, then cancelled: its connection_lost counts it out.
                made[0].transport.abort()
            else:
                self._open -= 1
                self._wake_one()
            raise
        return made[0]

    def release(self, conn: _Connection) -> None:
        """Take a connection back after its exchange: kept for the next one if the exchange
        was complete and the upstream keeps it alive, else closed."""
        conn.sink = None
        if conn.reusable and not self._closed:
            conn.reused = False  # (its state is made fresh when it is next used)
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._wake_one()
        elif not conn.lost and conn.transport is not None:
            conn.transport.abort()  # connection_lost counts it out

    def _lost(self, conn: _Connection) -> None:
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                return

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()

    # --- one exchange --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None = None,
        *,
        chunked: bool = False,
    ) -> UpstreamResponse:
        """Send a request (``target``: path and query; ``headers`` without ``Host`` and
        framing other than the client's ``Content-Length``) and wait for the answer's head.
        Raises ``TimeoutError``, ``OSError`` (cannot connect) or :class:`UpstreamBroken`."""
        head = self.head(method, target, headers, chunked)
        for attempt in (0, 1):
            conn = await self.acquire()
            conn._begin(head=method == "HEAD")
            try:
                await conn.write(head, self.read_timeout)
                if body is not None:
                    await self._send_body(conn, body, chunked)
                await conn.response(self.read_timeout)
            except UpstreamBroken:
                self.release(conn)
                # A kept-alive connection the upstream closed as this request went out (it
                # may have read it: it did not answer): an idempotent request without a body
                # is sent again on a new connection, as browsers, urllib3 and nginx do.
                if (attempt == 0 and conn.reused and not conn.got_bytes and body is None
                        and method in IDEMPOTENT):  # fmt: skip
                    continue
                raise
            except BaseException:
                self.release(conn)
                raise
            return UpstreamResponse(self, conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def head(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], chunked: bool
    ) -> bytes:
        """A request's head as sent to the upstream."""
        lines = [method.encode("latin-1"), b" ", target or b"/", b" HTTP/1.1\r\nhost: ",
                 self.host_header, b"\r\n"]  # fmt: skip
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _send_body(
        self, conn: _Connection, body: AsyncIterator[bytes], chunked: bool
    ) -> None:
        """Write the request body; stop early if the upstream answers before its end (a 413,
        say): that answer is the client's."""
        timeout = self.read_timeout
        try:
            async for chunk in body:
                if conn.headers_done:
                    conn.cut = True
                    return
                if conn.error is not None:
                    raise conn.error
                if chunk:
                    await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk,
                                     timeout)  # fmt: skip
                    if conn.headers_done:  # answered while the upstream was not reading
                        conn.cut = True
                        return
            if chunked:
                await conn.write(b"0\r\n\r\n", timeout)
        except UpstreamBroken:
            conn.cut = True
            if not conn.headers_done:
                raise
