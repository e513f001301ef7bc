"""Proxied requests relayed inside uvicorn's protocol, without an ASGI request.

Through ASGI, a proxied request costs uvicorn a scope, a task, a request-response cycle and a
``send()`` per message (with two regular expressions per response header), and the proxy a task's
worth of awaits on futures: several times what the decision and the two HTTP exchanges need.
:class:`Relay` is one proxied exchange driven by callbacks instead: the client's protocol
(:class:`~regiongate.enforce.inline.InlineDecisions`) decides the request when its headers are
read and writes it to a kept-alive upstream connection; the upstream connection calls
:meth:`Relay.news` once per read, and what that read brought goes to the client in one write
(status line, headers and a small body together, where uvicorn writes each part on its own).

The answer is the one the ASGI path gives, byte for byte (tests compare them): the same
forwarded headers, hop-by-hop fields dropped both ways, uvicorn's framing of the response
(``Content-Length`` kept, else chunked), the same JSON 502/504 when the upstream fails before
its answer starts, and a connection closed when it fails after. The same flow control: reading
from the upstream pauses while the client's transport is paused. The same timeouts:
``connect_timeout`` to connect, ``read_timeout`` for each wait on the upstream. A kept-alive
connection the upstream closed as the request went out is retried once on a new one, as
:meth:`UpstreamPool.request` does.

A request's body (one with a ``Content-Length``) is written to the upstream as the client's
reads bring it, held while a connection is being made (reading from the client paused past
64 KiB, and while the upstream does not read); an answer that comes before the body's end
stops it, and that connection is not used again.

Which requests are relayed is the protocol's choice (see ``inline.py``): plain HTTP/1.1
requests with no body or a ``Content-Length`` one. The rest, and every request of a server
whose uvicorn lacks what the protocol reads, go through ASGI as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE

from regiongate.enforce.proxy import NOT_PASSED_ON, hop_by_hop, upstream_failure
from regiongate.enforce.responses import json_response
from regiongate.enforce.upstream import IDEMPOTENT, UpstreamBroken

if TYPE_CHECKING:
    from regiongate.enforce.inline import InlineDecisions
    from regiongate.enforce.proxy import ReverseProxy
    from regiongate.enforce.upstream import _Connection

__all__ = ["Relay"]

log = logging.getLogger("regiongate.proxy")

# Body bytes held for an upstream connection being made before the client is paused (as
# uvicorn holds a request body for an ASGI app).
_HIGH_WATER: Final = 65536
_NO_BODY_STATUS: Final = (204, 304)


class _NoEvent:
    """uvicorn's protocol sets its cycle's ``message_event`` when the client leaves."""

    @staticmethod
    def set() -> None:
        return None


_NO_EVENT: Final = _NoEvent()


class Relay:
    """One proxied exchange, standing in uvicorn's protocol as its request cycle (so that
    pipelined requests wait for it, and a graceful shutdown closes the connection after it)."""

    message_event = _NO_EVENT

    def __init__(
        self,
        protocol: InlineDecisions,
        proxy: ReverseProxy,
        method: bytes,
        head: bytes,
        keep_alive: bool,
        length: int = 0,
    ) -> None:
        self.protocol = protocol
        # The protocol's loop, the running one: self.loop costs a getpid()
        # system call on Python 3.11, and an exchange asked for it five times.
        self.loop = protocol.loop
        self.proxy = proxy
        self.pool = proxy.pool
        self.method = method
        self.request = head
        self.is_head = method == b"HEAD"
        # uvicorn's protocol reads and writes these of its cycle.
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.conn: _Connection | None = None
        self.started = False
        self.chunked = False
        self.retried = False
        # The request's body (its Content-Length): sent as it arrives; held while there is no
        # connection yet, reading from the client paused when too much is held or the
        # upstream does not read.
        self.has_body = length > 0
        self.body_done = not self.has_body
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.client_paused = False
        self.last = 0.0  # when the upstream last moved (read_timeout counts from it)
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    # --- the exchange --------------------------------------------------------------------------

    def start(self) -> None:
        conn = self.pool.take_idle()
        if conn is None:
            self.task = self.loop.create_task(self._connect())
        else:
            self._send(conn)

    async def _connect(self) -> None:
        """No idle connection: wait for one (a new one, or one released when the pool is full)."""
        try:
            conn = await self.pool.acquire()
        except Exception as exc:  # OSError: timed out, cannot connect (else: logged as well)
            self._refuse(exc)
            return
        self.task = None
        if self.disconnected:
            self.pool.release(conn)
            return
        self._send(conn)

    def _send(self, conn: _Connection) -> None:
        conn._begin(head=self.is_head)
        transport = conn.transport
        if transport is None or conn.lost:  # (not after take_idle or acquire)
            self._failed_before_answer(conn, UpstreamBroken("the upstream closed the connection"))
            return
        conn.sink = self
        self.conn = conn
        if self.pending:
            transport.write(b"".join([self.request, *self.pending]))
            self.pending.clear()
            self.pending_size = 0
            if self.client_paused and not conn._write_paused:
                self._resume_client()
        else:
            transport.write(self.request)
        if conn._write_paused and not self.body_done:
            self._pause_client()
        loop = self.loop
        self.last = loop.time()
        if self.timer is None:
            self.timer = loop.call_later(self.pool.read_timeout, self._expire)

    def body(self, chunk: bytes) -> None:
        """A piece of the request's body from the client."""
        if self.response_complete:
            return  # answered (early) or the client is gone: the rest is dropped
        conn = self.conn
        if conn is None:  # connecting
            self.pending.append(chunk)
            self.pending_size += len(chunk)
            if self.pending_size > _HIGH_WATER:
                self._pause_client()
            return
        if conn.headers_done:  # answered before the body's end: the rest is not sent
            conn.cut = True
            return
        if conn.lost or conn.error is not None or conn.transport is None:
            return  # news() answers for it
        conn.transport.write(chunk)
        self.last = self.loop.time()
        if conn._write_paused:
            self._pause_client()

    def body_end(self) -> None:
        """The body is all read (the upstream's read timeout counts from here, as through
        ASGI, where the wait for the answer starts after the last write)."""
        self.body_done = True
        self.last = self.loop.time()

    def drained(self) -> None:
        """The upstream has read what it was sent: the client's body flows again."""
        self.last = self.loop.time()
        if self.client_paused:
            self._resume_client()

    def _pause_client(self) -> None:
        if not self.client_paused:
            self.client_paused = True
            self.protocol.flow.pause_reading()

    def _resume_client(self) -> None:
        self.client_paused = False
        self.protocol.flow.resume_reading()

    def news(self) -> None:
        """The upstream connection's state moved: hand on what it read, in one write."""
        conn = self.conn
        if conn is None or self.response_complete:
            return
        out: list[bytes] = []
        if not self.started:
            if not conn.headers_done:
                if conn.error is not None:
                    self._failed_before_answer(conn, conn.error)
                return
            if (
                not self.body_done
                or conn._write_paused
                or (conn.transport is not None and conn.transport.get_write_buffer_size())
            ):
                # Answered before the body's end, or with some of it still to go out: the
                # rest is not the upstream's to read, and the connection is not reused.
                conn.cut = True
            if not self._head(conn, out):
                return
        chunks = conn.chunks
        if chunks:
            if self.chunked:
                for chunk in chunks:
                    out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                out.extend(chunks)
            chunks.clear()
            conn.buffered = 0
        transport = self.protocol.transport
        if conn.complete:
            if self.chunked:
                out.append(b"0\r\n\r\n")
            transport.write(b"".join(out))
            self._finish()
            return
        if out:
            transport.write(b"".join(out))
        if conn.error is not None:
            self._failed_after_start("bad_gateway", conn.error)
            return
        self.last = self.loop.time()
        if self.protocol.flow.write_paused and not conn._reading_paused and conn.transport:
            conn._reading_paused = True  # until the client has read some (resume())
            conn.transport.pause_reading()

    def _head(self, conn: _Connection, out: list[bytes]) -> bool:
        """The answer's status line and headers, framed as uvicorn frames an ASGI answer."""
        self.started = True
        status = conn.status
        line = STATUS_LINE.get(status)
        drop = hop_by_hop(conn.headers, NOT_PASSED_ON)
        kept = [(n, v) for n, v in conn.headers if n not in drop]
        if (
            line is None
            or HEADER_RE.search(b"".join([n for n, _ in kept]))
            or HEADER_VALUE_RE.search(b"".join([v for _, v in kept]))
        ):
            # uvicorn refuses such a start (after marking the response started): the
            # connection is closed with nothing sent.
            self._failed_after_start(
                "bad_gateway", UpstreamBroken(f"the upstream's answer cannot be relayed: {status}")
            )
            return False
        out.append(line)
        for name, value in self.protocol.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        length = False
        for name, value in kept:
            if name == b"content-length":
                length = True
            out += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        if not length and not self.is_head and status not in _NO_BODY_STATUS:
            self.chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        out.append(b"\r\n")
        return True

    def resume(self) -> None:
        """The client reads again: so does the upstream connection."""
        conn = self.conn
        if conn is not None and conn._reading_paused:
            _resume(conn)

    # --- endings -------------------------------------------------------------------------------

    def _failed_before_answer(self, conn: _Connection, exc: BaseException) -> None:
        self.pool.release(conn)
        self.conn = None
        if (
            not self.retried
            and not self.has_body
            and conn.reused
            and not conn.got_bytes
            and self.method.decode("latin-1") in IDEMPOTENT
            and isinstance(exc, UpstreamBroken)
        ):
            # A kept-alive connection the upstream closed as this request went out: sent
            # again on a new connection, as browsers, urllib3 and nginx do.
            self.retried = True
            self.task = self.loop.create_task(self._connect())
            return
        self._refuse(exc)

    def _refuse(self, exc: BaseException) -> None:
        """The upstream failed before its answer started: the JSON error is the client's."""
        self.task = None
        if self.response_complete:
            return
        status, code, body = upstream_failure(exc)
        self.proxy.on_error(code)
        log.warning("upstream error (%s): %r", code, exc)
        status, headers, data = json_response(status, body)
        self.protocol.write_answer(status, headers, data, self.keep_alive, self.is_head)
        self._finish()

    def _failed_after_start(self, code: str, exc: BaseException) -> None:
        """The upstream failed mid-answer: the client's connection is closed, so that it sees
        a truncated answer rather than a false end."""
        self.proxy.on_error(code)
        log.warning("upstream failed mid-response: %r", exc)
        self._finish(served=False)

    def _expire(self) -> None:
        self.timer = None
        if self.response_complete:
            return
        loop = self.loop
        timeout = self.pool.read_timeout
        left = self.last + timeout - loop.time()
        conn = self.conn
        if (
            left > 0
            or self.protocol.flow.write_paused
            or (not self.body_done and not (conn is not None and conn._write_paused))
        ):
            # The upstream moved since, or the client is the slow one, reading the answer or
            # sending the body (not the upstream's to answer for, as through ASGI): watch again.
            self.timer = loop.call_later(max(left, timeout / 10), self._expire)
            return
        exc = TimeoutError("the upstream did not answer in time")
        if self.started:
            self._failed_after_start("upstream_timeout", exc)
        elif self.conn is not None:
            conn, self.conn = self.conn, None
            self.pool.release(conn)  # not complete: closed
            self._refuse(exc)

    def _finish(self, *, served: bool = True) -> None:
        """The exchange is over: the connection goes back to the pool (or is closed), and the
        client's protocol reads on or closes (it closes when the answer was not ``served``
        whole, which uvicorn does not count as a response)."""
        self.response_complete = True
        self._stop()
        protocol = self.protocol
        if protocol._relay is self:
            protocol._relay = None
        if not (served and self.keep_alive):
            protocol.transport.close()
        if served:
            protocol.on_response_complete()

    def client_gone(self) -> None:
        """The client closed its connection: the exchange stops, its connection closed."""
        if self.response_complete:
            return
        self.disconnected = True
        self.response_complete = True
        self._stop()
        self.proxy.on_error("client_disconnect")

    def _stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and asyncio.current_task() is not self.task:
            self.task.cancel()
        self.task = None
        conn, self.conn = self.conn, None
        if conn is not None:
            if conn._reading_paused and conn.complete:
                _resume(conn)  # kept for the next exchange: reading
            self.pool.release(conn)


def _resume(conn: _Connection) -> None:
    conn._reading_paused = False
    if conn.transport is not None and not conn.lost:
        conn.transport.resume_reading()
