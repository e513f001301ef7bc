"""Tiny ASGI apps the gateway benchmarks serve as baselines and upstreams."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


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


class InlineNoContent(HttpToolsProtocol):
    """uvicorn's httptools protocol answering every request with a bare 204 as soon as its
    headers are read, without an ASGI request: the least any answer given inside the protocol
    costs (the decision endpoint's inline answers, enforce/inline.py, are measured against it
    too)."""

    def on_headers_complete(self) -> None:
        date = b"".join(b"%s: %s\r\n" % pair for pair in self.server_state.default_headers)
        self.transport.write(STATUS_LINE[204] + date + b"\r\n")
        self.on_response_complete()

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass


if __name__ == "__main__":  # python bench_apps.py PORT: InlineNoContent on 127.0.0.1:PORT
    import uvicorn

    uvicorn.run(no_content, host="127.0.0.1", port=int(sys.argv[1]), http=InlineNoContent,
                loop="uvloop", log_level="warning", access_log=False, server_header=False,
                proxy_headers=False)  # fmt: skip
