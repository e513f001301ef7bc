"""Running the gateway with uvicorn.

Why uvicorn: the gateway needs in-process lifespan hooks, a SIGHUP handler on its own event
loop, and programmatic start-up in tests; uvicorn with uvloop and httptools gives all three.
granian serves a plain ASGI app faster (docs/gateway.md has the same-run comparison), and
remains an option for deployments that do not need SIGHUP reloads.
"""

from __future__ import annotations

import importlib.util
import logging

import uvicorn

from regiongate.config import Settings
from regiongate.enforce.app import GatewayApp
from regiongate.enforce.gate import Gate

__all__ = ["build", "run", "split_listen", "uvicorn_config"]


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def build(settings: Settings) -> GatewayApp:
    """Load the gate (snapshot, policy) and build the app; raises ``RegiongateError``."""
    return GatewayApp(settings, Gate.from_settings(settings))


def uvicorn_config(
    app: GatewayApp, settings: Settings, *, log_level: str = "info"
) -> uvicorn.Config:
    host, port = split_listen(settings.server.listen)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        lifespan="on",
        # regiongate resolves the client itself, with its own trust rules: uvicorn must not
        # rewrite the peer address from forwarding headers first.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        ws_max_size=16 * 1024 * 1024,
    )


def run(settings: Settings, *, log_level: str = "info") -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    app = build(settings)
    uvicorn.Server(uvicorn_config(app, settings, log_level=log_level)).run()
