"""``RegionGate``: pure ASGI middleware that enforces a policy in front of any ASGI app.

Usage with Starlette or FastAPI::

    from regiongate import RegionGate
    app = RegionGate(app, policy="api-2024", trusted_proxies=["10.0.0.0/8"])

A blocked request gets the 403 JSON body at once and never reaches the app; an allowed one
reaches it with ``X-Regiongate-Territory`` and ``X-Regiongate-Decision`` set (any the client
sent are removed first) and the :class:`~regiongate.enforce.gate.Verdict` in
``scope["regiongate"]``.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable
from pathlib import Path

from regiongate.clientip import ClientIPConfig, ClientResolver
from regiongate.enforce.asgi import ASGIApp, Receive, Scope, Send
from regiongate.enforce.gate import _OWN_HEADERS, Gate, GateState
from regiongate.intel.snapshot import Snapshot, open_snapshot
from regiongate.policy import Action, Policy, Response, load_policy

__all__ = ["RegionGate"]

# RFC 6455 close code "policy violation", for WebSocket handshakes when the server cannot
# send an HTTP denial response.
_WS_POLICY_VIOLATION = 1008
_BLOCK = Action.BLOCK
_name = operator.itemgetter(0)


class RegionGate:
    """Enforce a regiongate policy in front of ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        gate: Gate | None = None,
        policy: Policy | str = "api-2024",
        snapshot: Snapshot | str | Path | None = None,
        trusted_proxies: Iterable[str] = ("127.0.0.1/32", "::1/128"),
        forwarded_header: str = "x-forwarded-for",
        account_header: str | None = None,
    ) -> None:
        self.app = app
        if gate is None:
            pol = load_policy(policy) if isinstance(policy, str) else policy
            snap = (
                snapshot
                if isinstance(snapshot, Snapshot)
                else open_snapshot(snapshot, consensus=pol.consensus)
            )
            resolver = ClientResolver(
                ClientIPConfig(trusted_proxies=tuple(trusted_proxies), header=forwarded_header)
            )
            gate = Gate(
                GateState(
                    snapshot=snap,
                    policy=pol,
                    resolver=resolver,
                    snapshot_stamp=None,
                    policy_stamp=None,
                    loaded_at=0.0,
                )
            )
        self.gate = gate
        self._check = gate.check
        self._account_header = account_header.lower().encode() if account_header else None
        self._blocked_cache: (
            tuple[Response, tuple[int, list[tuple[bytes, bytes]], bytes]] | None
        ) = None

    def _blocked(self, response: Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The blocked response, serialised once per policy response (not per request)."""
        cached = self._blocked_cache
        if cached is None or cached[0] is not response:
            body = json.dumps(response.body(), separators=(",", ":")).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            cached = self._blocked_cache = (response, (response.status, headers, body))
        return cached[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        headers = scope["headers"]
        if self._account_header is None:
            verdict = self._check(client[0] if client else None, headers)
        else:
            account = None
            for name, value in headers:
                if name == self._account_header:
                    account = value.decode("latin-1")
                    break
            verdict = self.gate.check(client[0] if client else None, headers, account=account)
        decision = verdict.decision
        if decision.action is _BLOCK:
            response = self.gate.state.policy.response
            if kind == "http":
                status, start_headers, body = self._blocked(response)
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [*start_headers, *verdict.extra_headers],
                    }
                )
                await send({"type": "http.response.body", "body": body})
            else:
                await _deny_websocket(scope, receive, send, response.status, response.body())
            return
        if _OWN_HEADERS.isdisjoint(map(_name, headers)):  # the usual case, at C speed
            forwarded = headers + list(verdict.extra_headers)
        else:  # the client sent X-Regiongate-* itself: drop those
            forwarded = [h for h in headers if h[0] not in _OWN_HEADERS]
            forwarded += verdict.extra_headers
        scope = dict(scope)
        scope["headers"] = forwarded
        scope["regiongate"] = verdict
        await self.app(scope, receive, send)


async def _deny_websocket(
    scope: Scope, receive: Receive, send: Send, status: int, body: object
) -> None:
    message = await receive()  # websocket.connect
    if message.get("type") != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        data = json.dumps(body).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": data})
    else:
        await send({"type": "websocket.close", "code": _WS_POLICY_VIOLATION})
