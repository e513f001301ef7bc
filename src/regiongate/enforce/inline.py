"""The decision endpoint answered, and plain proxied requests relayed, inside uvicorn's HTTP
protocol, before a request becomes an ASGI request.

An nginx ``auth_request`` or Envoy ext_authz request is small and fixed in shape: headers, no
body, an answer of a status line and two or three headers that the gateway decides in about a
microsecond. Made into an ASGI request it costs uvicorn far more than that: a scope, a task on
the event loop, a request-response cycle, two ``send()`` calls, and two regular expressions per
response header. :class:`InlineDecisions` is uvicorn's own httptools protocol that, when the
parser has read a request's headers, answers a decision request at once with the gateway's
own answer (:meth:`GatewayApp.decide_now`, the same one the ASGI path sends). Under ``serve``
with an upstream, a plain HTTP/1.1 request for any other path (not the gateway's own
endpoints, no percent-encoded path) is decided the same way and, when allowed, relayed to the
upstream by callbacks (:mod:`.relay`). Every other request goes on as uvicorn would.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from regiongate.enforce.middleware import gated_headers
from regiongate.enforce.proxy import forward_headers
from regiongate.enforce.relay import Relay

if TYPE_CHECKING:
    from regiongate.enforce.app import GatewayApp

__all__ = ["InlineDecisions", "inline_protocol"]

log = logging.getLogger("regiongate.gateway")


# What the inline answer reads of uvicorn's protocol (its internals, not its API): checked once,
# on the first connection; a uvicorn without them gets its own protocol's answers, and a log line.
_NEEDED: Final = ("parser", "flow.write_paused", "cycle", "expect_100_continue", "access_log",
                  "limit_concurrency", "root_path", "server_state.default_headers", "transport",
                  "client", "url", "headers", "scheme", "on_response_complete",
                  "_unset_keepalive_if_required", "server_state.total_requests")  # fmt: skip


_ERROR_HEADERS: Final = ((b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", b"21"))  # fmt: skip


class InlineDecisions(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering the gateway's decision requests inline."""

    gateway: GatewayApp
    _decision_url: bytes  # the decision path as a request target starts with it
    _fits: bool | None = None  # this uvicorn has what the inline answers read (None: unknown)
    _inline = False  # the current request was answered inline: its parser events are done
    _relaying = False  # proxied requests are relayed here (the gateway has an upstream)
    _bodies = False  # requests with a Content-Length body too (not when bodies are read)
    _relay: Relay | None = None  # the exchange in progress

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
        if self._fits:
            if self.url.startswith(self._decision_url):
                if self._answer_inline():
                    self._inline = True
                    return
            elif self._relaying and self._relay_inline():
                self._inline = True
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._inline:
            super().on_body(body)
        elif self._relay is not None:
            self._relay.body(body)

    def on_message_complete(self) -> None:
        if not self._inline:
            super().on_message_complete()
        elif self._relay is not None:
            self._relay.body_end()

    def connection_lost(self, exc: Exception | None) -> None:
        relay = self._relay
        if relay is not None:
            self._relay = None
            relay.client_gone()
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._relay is not None:
            self._relay.resume()

    def _plain(self, length: bool = False) -> bool:
        """Whether the request just read can be answered here, not through ASGI (the module);
        ``length``: a body with a ``Content-Length`` is fine."""
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
        for name, value in self.headers:
            if name == b"transfer-encoding" or (
                name == b"content-length" and value != b"0" and not length
            ):
                return False
        return True

    def _answer_inline(self) -> bool:
        """Answer the request now if it is a decision request that can be: see the module."""
        if not self._plain():
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
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        try:
            answer = gateway.decide_now(path, self.headers, self.client)
        except Exception:
            self._raised()
        else:
            self.write_answer(*answer, keep_alive, parser.get_method() == b"HEAD")
        self.on_response_complete()  # counts it, arms the keep-alive timer, reads on
        return True

    def _relay_inline(self) -> bool:
        """Relay the request to the upstream now if it is a plain one (``relay.py``)."""
        url = self.url
        parser = self.parser
        path = url.partition(b"?")[0]
        if (
            url[:1] != b"/"  # absolute or asterisk form: uvicorn's parsing
            or b"%" in path
            or b"#" in url
            or url.endswith(b"?")
            or parser.get_http_version() != "1.1"
            or not self._plain(length=self._bodies)
        ):
            return False
        gateway = self.gateway
        try:
            if gateway.answers_itself(path.decode("ascii")):
                return False
        except UnicodeDecodeError:
            return False
        proxy = gateway.proxy
        if proxy is None:  # (not with _relaying)
            return False
        headers = self.headers
        client = self.client
        keep_alive = parser.should_keep_alive()
        try:
            verdict, answer = gateway.screen(headers, client)
        except Exception:
            self._raised()
            self.on_response_complete()
            return True
        if answer is not None:  # a body that follows is read and dropped, as through ASGI
            self.write_answer(*answer, keep_alive, parser.get_method() == b"HEAD")
            self.on_response_complete()
            return True
        length = 0
        for name, value in headers:
            if name == b"content-length":
                length = int(value)  # (the parser has checked it)
        # As the middleware hands an allowed request on, then as the proxy forwards it.
        forwarded = forward_headers(
            gated_headers(headers, verdict.extra_headers),
            client[0] if client else None,
            self.scheme or "http",
        )
        method = parser.get_method()
        head = proxy.pool.head(method.decode("ascii"), proxy.base_target + url, forwarded, False)
        relay = Relay(self, proxy, method, head, keep_alive, length)
        # As uvicorn's request cycle: pipelined requests wait for it, shutdown sees it.
        self.cycle = relay  # type: ignore[assignment]
        self._relay = relay
        relay.start()
        return True

    def _raised(self) -> None:
        """As uvicorn answers an ASGI app that raised: logged, 500, connection closed. Not run
        again through ASGI: what it did before it raised (an event) stays done once."""
        log.exception("Exception in the gateway's decision")
        head = self.parser.get_method() == b"HEAD"
        self.write_answer(500, _ERROR_HEADERS, b"Internal Server Error", False, head)

    def write_answer(
        self,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        head: bool,
    ) -> None:
        """Write a whole answer (as uvicorn writes one an ASGI app sends); ``head``: to a
        ``HEAD`` request (no body). Given, not read from the parser: an answer written later
        (a relay's 502) may find the parser at a pipelined request behind it."""
        out = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            out += (name, b": ", value, b"\r\n")
        for name, value in headers:
            out += (name, b": ", value, b"\r\n")
        if not keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        if body and not head:
            out.append(body)
        transport = self.transport
        transport.write(b"".join(out))
        if not keep_alive:
            transport.close()


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
        "_relaying": app.proxy is not None,
        # With the end-user id read from bodies (accounts.end_user_body), requests with a body
        # go through the middleware, which reads it.
        "_bodies": not (app.accounts is not None and app.accounts.end_user_body),
    }
    return type("InlineDecisionsFor", (InlineDecisions,), attrs)
