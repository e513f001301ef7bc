"""An API behind ``regiongate.RegionGate``, the pure ASGI middleware.

Run it (after ``regiongate data install``)::

    uvicorn examples.starlette_app:app --port 8000

    curl -s localhost:8000/v1/whoami -H 'X-Forwarded-For: 8.8.8.8'          # 200, US
    curl -s localhost:8000/v1/whoami -H 'X-Forwarded-For: 114.114.114.114'  # 403, CN

The middleware resolves the client (trusting X-Forwarded-For only from the loopback proxy),
locates it in the installed snapshot and applies the ``api-2024`` policy. Blocked requests get
the contract 403 and never reach the app; allowed ones carry ``X-Regiongate-Territory`` and
``X-Regiongate-Decision``, and the full verdict is in ``request.scope["regiongate"]``.
FastAPI works the same way: ``app.add_middleware(RegionGate, policy="api-2024")``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from regiongate import RegionGate


async def whoami(request: Request) -> JSONResponse:
    verdict = request.scope["regiongate"]
    return JSONResponse(
        {
            "client": verdict.client.ip,
            "territory": request.headers["x-regiongate-territory"],
            "decision": request.headers["x-regiongate-decision"],
            "policy": verdict.decision.policy,
            "reasons": list(verdict.decision.reasons),
        }
    )


def create_app(**gate_options: object) -> Starlette:
    """The example app; ``gate_options`` go to ``RegionGate`` (policy, snapshot, ...)."""
    options = {"policy": "api-2024", "trusted_proxies": ("127.0.0.1/32", "::1/128")}
    options.update(gate_options)
    return Starlette(
        routes=[Route("/v1/whoami", whoami)],
        middleware=[Middleware(RegionGate, **options)],
    )


app = create_app()
