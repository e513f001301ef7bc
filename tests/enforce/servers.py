"""Real servers for gateway tests: uvicorn in a background thread, on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from regiongate.config import Settings, load_settings
from regiongate.enforce.app import GatewayApp
from regiongate.enforce.gate import Gate
from regiongate.enforce.server import uvicorn_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_app(app: Any, port: int | None = None, **config: Any) -> Iterator[int]:
    """Run an ASGI app with uvicorn in a thread; yields its port."""
    port = port or free_port()
    cfg = config.pop("uvicorn_config", None) or uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="auto", **config
    )
    with run_server(cfg):
        yield port


@contextlib.contextmanager
def run_server(cfg: uvicorn.Config) -> Iterator[uvicorn.Server]:
    """Run uvicorn on ``cfg`` in a thread until the block ends; yields the server."""
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def gateway_settings(snapshot: Path, port: int, upstream: str | None, **server: Any) -> Settings:
    policy = server.pop("policy", "api-2024")
    return load_settings(
        env={},
        overrides={
            "server": {"listen": f"127.0.0.1:{port}", "upstream": upstream, **server},
            "policy": {"source": policy, "watch": False},
            "data": {"snapshot": str(snapshot)},
        },
    )


@contextlib.contextmanager
def serve_gateway(
    snapshot: Path, upstream: str | None, **server: Any
) -> Iterator[tuple[int, GatewayApp]]:
    port = free_port()
    settings = gateway_settings(snapshot, port, upstream, **server)
    app = GatewayApp(settings, Gate.from_settings(settings))
    with serve_app(app, port, uvicorn_config=uvicorn_config(app, settings, log_level="warning")):
        yield port, app
