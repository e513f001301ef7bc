"""The ``regiongate serve`` application: operational endpoints, the decision endpoint, and
the gate in front of the reverse proxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from regiongate.config import Settings
from regiongate.enforce.asgi import ASGIApp, Receive, Scope, Send
from regiongate.enforce.gate import Gate, Verdict
from regiongate.enforce.metrics import registry_for, render
from regiongate.enforce.middleware import RegionGate
from regiongate.enforce.proxy import ReverseProxy
from regiongate.enforce.responses import error_body, json_response, send_json, send_plain
from regiongate.errors import RegiongateError
from regiongate.policy import Action

if TYPE_CHECKING:
    from regiongate.accounts.service import Accounts

__all__ = ["GatewayApp"]

log = logging.getLogger("regiongate.gateway")

_BLOCK = Action.BLOCK
_NO_CONTENT_LENGTH: Final = (b"content-length", b"0")

ADMIN_MOUNT = "/admin/api"
_OWN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


class GatewayApp:
    """One ASGI app: ``/healthz``, ``/readyz``, ``/metrics``, the decision endpoint, and
    everything else through :class:`RegionGate` to the upstream (when one is configured)."""

    def __init__(
        self,
        settings: Settings,
        gate: Gate,
        *,
        watch_interval: float = 2.0,
        accounts: Accounts | None = None,
        admin: ASGIApp | None = None,
    ) -> None:
        self.settings = settings
        self.admin = admin
        self.gate = gate
        self.accounts = accounts
        self.decision_path = settings.server.decision_path.rstrip("/")
        # Envoy's HTTP ext_authz allows only on 200 (nginx auth_request takes any 2xx): point
        # Envoy's path_prefix here and allowed requests get 200, blocked ones the same 403.
        self.envoy_path = self.decision_path + "/envoy"
        self._decision_prefix = self.decision_path + "/"
        self.proxy: ReverseProxy | None = None
        s = settings.server
        if s.upstream:
            self.proxy = ReverseProxy(
                s.upstream,
                connect_timeout=s.upstream_connect_timeout,
                read_timeout=s.upstream_read_timeout,
                max_connections=s.upstream_max_connections,
                on_error=self._count_upstream_error,
            )
        self.gated = RegionGate(self.proxy or _no_upstream, gate=gate, accounts=accounts)
        self.registry = registry_for(gate, accounts)
        self._watch_interval = watch_interval
        self._watcher: asyncio.Task[None] | None = None

    def _count_upstream_error(self, kind: str) -> None:
        errors = self.gate.stats.upstream_errors
        errors[kind] = errors.get(kind, 0) + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind == "http":
            path: str = scope["path"]
            if self.is_decision_path(path):
                # The decision endpoint (nginx auth_request): the hot path. Under `serve`, most
                # of its requests are answered before they become ASGI requests at all
                # (enforce/inline.py); this is the same answer for the rest.
                status, headers, body = self.decide_now(path, scope["headers"], scope.get("client"))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            if path == ADMIN_MOUNT or path.startswith(ADMIN_MOUNT + "/"):
                await self._admin(scope, receive, send)
                return
            if path == "/healthz":
                await send_json(send, 200, {"status": "ok"})
                return
            if path == "/readyz":
                await self._ready(scope, send)
                return
            if path == "/metrics":
                await self._metrics(scope, send)
                return
        await self.gated(scope, receive, send)

    # --- endpoints ------------------------------------------------------------------------------

    def is_decision_path(self, path: str) -> bool:
        return path == self.decision_path or path.startswith(self._decision_prefix)

    def answers_itself(self, path: str) -> bool:
        """Whether the gateway answers ``path`` itself rather than through the proxy."""
        return (
            path in _OWN_PATHS
            or self.is_decision_path(path)
            or path == ADMIN_MOUNT
            or path.startswith(ADMIN_MOUNT + "/")
        )

    def decide_now(
        self, path: str, headers: Sequence[tuple[bytes, bytes]], client: tuple[str, int] | None
    ) -> tuple[int, Sequence[tuple[bytes, bytes]], bytes]:
        """The decision endpoint's answer to a request for ``path`` (a decision path) with
        ``headers`` from ``client``: status, headers and body, decided now."""
        verdict, answer = self.screen(headers, client)
        if answer is not None:
            return answer
        if path == self.decision_path:
            return 204, verdict.extra_headers, b""
        return self._allowed_status(path, verdict.extra_headers)

    def screen(
        self, headers: Sequence[tuple[bytes, bytes]], client: tuple[str, int] | None
    ) -> tuple[Verdict, tuple[int, Sequence[tuple[bytes, bytes]], bytes] | None]:
        """A request's verdict, and the answer (status, headers, body) that refuses it, or
        ``None`` when it may go on. A request with an API key meets the account checks first,
        as through the middleware (its event is recorded; a suspended organisation's or an
        unknown key's denial is the answer). For the answers given inside uvicorn's protocol;
        an allowed request's event is recorded here, with no end-user id from its body."""
        accounts = self.accounts
        if accounts is not None and (identity := accounts.identify(headers)) is not None:
            verdict, denial = self.gated.account_verdict(headers, client, accounts, identity)
            if denial is not None:
                return verdict, json_response(*denial, verdict.extra_headers)
            if identity.org is not None:  # an unknown key leaves no event
                accounts.record(identity, verdict, headers=headers)
        else:
            verdict = self.gate.check(client[0] if client else None, headers)
        if verdict.decision.action is _BLOCK:
            return verdict, self.gated.blocked_answer(verdict)
        return verdict, None

    def _allowed_status(
        self, path: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[int, Sequence[tuple[bytes, bytes]], bytes]:
        """An allowed decision under ``path``: 204 for nginx ``auth_request``; 200 (with an
        empty body's length, so it needs no chunked framing) under ``<decision_path>/envoy``
        for Envoy ext_authz (HTTP), which denies on anything else."""
        if path == self.envoy_path or path.startswith(self.envoy_path + "/"):
            return 200, [*headers, _NO_CONTENT_LENGTH], b""
        return 204, headers, b""

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The admin API: never gated or proxied; only from loopback and trusted networks
        (others get the same 404 as a gateway without it), then bearer tokens decide."""
        if self.admin is None or not self._trusted_peer(scope):
            await send_json(send, 404, error_body("Not found", "invalid_request_error",
                                                  "not_found"))  # fmt: skip
            return
        root = scope.get("root_path", "") + ADMIN_MOUNT
        await self.admin({**scope, "root_path": root}, receive, send)

    def _trusted_peer(self, scope: Scope) -> bool:
        client = scope.get("client")
        peer = client[0] if client else None
        return peer in {"127.0.0.1", "::1"} or self.gate.state.resolver.is_trusted(peer)

    async def _ready(self, scope: Scope, send: Send) -> None:
        state = self.gate.state
        body: dict[str, Any] = {"status": "ready"}
        if self._trusted_peer(scope):
            body.update(
                policy=state.policy.ref,
                phase=state.policy.phase_at(self.gate.clock()).label,
                snapshot=state.snapshot.header.get("created"),
                upstream=self.settings.server.upstream,
            )
        await send_json(send, 200, body)

    async def _metrics(self, scope: Scope, send: Send) -> None:
        if not self._trusted_peer(scope):
            await send_plain(send, 403, b"metrics are served to trusted networks only\n")
            return
        await send_plain(
            send, 200, render(self.registry), b"text/plain; version=0.0.4; charset=utf-8"
        )

    # --- lifespan and reload ----------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.accounts is not None:
                    await asyncio.to_thread(self.accounts.start)
                if self.settings.policy.watch and self._watch_interval > 0:
                    self._watcher = asyncio.ensure_future(self._watch())
                self._install_sighup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._watcher is not None:
                    self._watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._watcher
                if self.proxy is not None:
                    await self.proxy.close()
                if self.accounts is not None:
                    # Drain the event queue to the store (or the spool) before exiting.
                    await asyncio.to_thread(self.accounts.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def reload(self, *, force: bool = False) -> None:
        """Reload changed files; a broken one is refused and logged, the old state serves on."""
        try:
            changed = self.gate.reload(force=force)
        except RegiongateError as exc:
            log.error("reload refused, still serving the previous state: %s", exc)
            return
        if changed:
            log.warning("reloaded: %s", ", ".join(changed))

    def _install_sighup(self) -> None:
        """SIGHUP reloads the policy and snapshot (off the event loop: loading verifies a
        checksum over the whole snapshot)."""
        loop = asyncio.get_running_loop()

        def on_hup() -> None:
            loop.run_in_executor(None, lambda: self.reload(force=True))

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, on_hup)

    async def _watch(self) -> None:
        """Poll the snapshot and policy files; stat() every few seconds is all it costs."""
        while True:
            await asyncio.sleep(self._watch_interval)
            await asyncio.to_thread(self.reload)


async def _no_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await send_json(
            send,
            502,
            error_body(
                "No upstream is configured (server.upstream)", "upstream_error", "no_upstream"
            ),
        )
    elif scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1011})
