"""Tiny ASGI apps the gateway benchmarks serve as baselines and upstreams."""

from __future__ import annotations

import asyncio
from typing import Any


async def no_content(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with 204: the baseline for the decision endpoint."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Sends one event at once, then the rest after 50 ms: for time to first byte."""
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/event-stream")]}
    )  # fmt: skip
    await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
    await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
