"""The decision endpoint answered inside uvicorn's HTTP protocol, before a request becomes an
ASGI request.

An nginx ``auth_request`` or Envoy ext_authz request is small and fixed in shape: headers, no
body, an answer of a status line and two or three headers that the gateway decides in about a
microsecond. Made into an ASGI request it costs uvicorn far more than that: a scope, a task on
the event loop, a request-response cycle, two ``send()`` calls, and two regular expressions per
response header. :class:`InlineDecisions` is uvicorn's own httptools protocol that, when the
parser has read a request's headers, answers a decision request at once with the gateway's
own answer (:meth:`GatewayApp.decide_now`, the same one the ASGI path sends) and lets every
other request go on as uvicorn would.

A request is answered inline only when nothing about it needs the ASGI machinery: no request
of the same connection still in progress (pipelined requests stay in order), no body
(``Content-Length: 0`` or none, not chunked), no ``Expect: 100-continue``, no upgrade, a
client that reads what it is sent (the transport is not paused), and a server with no access
log, no concurrency limit and no root path. A request with an API key meets the account checks
here too (its event recorded, a refusal answered), as it would through ASGI. Everything else,
including a request whose URL uvicorn's parser refuses, takes uvicorn's path unchanged.
Keep-alive, ``HTTP/1.0``, ``Connection: close``, ``HEAD``, the keep-alive timer and a decision
that raises (logged, 500, connection closed) are handled as uvicorn's request cycle handles
them (tests compare the two answers).

What it reads of uvicorn's protocol are internals, not an API: they are checked on the first
connection, and a uvicorn without them answers every request the ASGI way and logs why.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

if TYPE_CHECKING:
    from regiongate.enforce.app import GatewayApp

__all__ = ["InlineDecisions", "inline_protocol"]

log = logging.getLogger("regiongate.gateway")


# What the inline answer reads of uvicorn's protocol (its internals, not its API): checked once,
# on the first connection; a uvicorn without them gets its own protocol's answers, and a log line.
_NEEDED: Final = ("parser", "flow.write_paused", "cycle", "expect_100_continue", "access_log",
                  "limit_concurrency", "root_path", "server_state.default_headers", "transport",
                  "client", "url", "headers", "on_response_complete",
                  "_unset_keepalive_if_required")  # fmt: skip


_ERROR_HEADERS: Final = ((b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", b"21"))  # fmt: skip


class InlineDecisions(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering the gateway's decision requests inline."""

    gateway: GatewayApp
    _decision_url: bytes  # the decision path as a request target starts with it
    _fits: bool | None = None  # this uvicorn has what the inline answers read (None: unknown)
    _inline = False  # the current request was answered inline: its parser events are done

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._fits is None:
            type(self)._fits = _fits_uvicorn(self)

    def on_message_begin(self) -> None:
        if self._fits:
            self._inline = False
            # A request has begun: the connection is not idle. An inline answer arms the
            # keep-alive timer, and a request after it in the same read must not be cut off by
            # that timer (uvicorn itself never completes a response while it parses a read).
            self._unset_keepalive_if_required()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._fits and self.url.startswith(self._decision_url) and self._answer_inline():
            self._inline = True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._inline:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._inline:
            super().on_message_complete()

    def _answer_inline(self) -> bool:
        """Answer the request now if it is a decision request that can be: see the module."""
        cycle = self.cycle
        if (
            (cycle is not None and not cycle.response_complete)
            or self.flow.write_paused
            or self.expect_100_continue
            or self.access_log
            or self.limit_concurrency is not None
            or self.root_path
            or self.parser.should_upgrade()
        ):
            return False
        headers = self.headers
        for name, value in headers:
            if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
                return False
        gateway = self.gateway
        url = self.url
        if url == self._decision_url:  # nginx's auth_request asks for the path itself
            path = gateway.decision_path
        else:  # the path as uvicorn reads it for the scope
            try:
                path = httptools.parse_url(url).path.decode("ascii")
            except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
                return False  # uvicorn's path gives its own answer
            if "%" in path:
                path = urllib.parse.unquote(path)
            if not gateway.is_decision_path(path):
                return False
        parser = self.parser
        try:
            status, extra, body = gateway.decide_now(path, headers, self.client)
        except Exception:
            # As uvicorn answers an ASGI app that raised: logged, 500, connection closed. Not
            # run again through ASGI: what it did before it raised (an event) stays done once.
            log.exception("Exception in the decision endpoint")
            status, extra, body = 500, _ERROR_HEADERS, b"Internal Server Error"
            keep_alive = False
        else:
            keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        out = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        for name, value in extra:
            out += (name, b": ", value, b"\r\n")
        if not keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        if body and parser.get_method() != b"HEAD":
            out.append(body)
        transport = self.transport
        transport.write(b"".join(out))
        if not keep_alive:
            transport.close()
        self.on_response_complete()  # counts it, arms the keep-alive timer, reads on
        return True


def _fits_uvicorn(protocol: HttpToolsProtocol) -> bool:
    """Whether uvicorn's protocol has what the inline answers read, as a request sets it up."""
    HttpToolsProtocol.on_message_begin(protocol)  # what the start of a request makes
    missing = []
    for name in _NEEDED:
        try:
            operator.attrgetter(name)(protocol)
        except AttributeError:
            missing.append(name)
    if missing:
        log.error(
            "uvicorn %s's HTTP protocol has no %s: decision requests are answered as ASGI "
            "requests (slower, the same answers)",
            uvicorn.__version__,
            ", ".join(missing),
        )
    return not missing


def inline_protocol(app: GatewayApp) -> type[InlineDecisions]:
    """uvicorn's ``http`` protocol class for ``app`` (``uvicorn.Config(http=...)``)."""
    attrs: dict[str, Any] = {
        "gateway": app,
        "_decision_url": urllib.parse.quote(app.decision_path).encode("ascii"),
    }
    return type("InlineDecisionsFor", (InlineDecisions,), attrs)
