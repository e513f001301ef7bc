"""A demo upstream that speaks enough of the OpenAI API for the SDK to use it.

``POST /v1/chat/completions`` answers with a canned completion, or streams it as Server-Sent
Events one token at a time (``stream: true``), with a delay per token so that streaming is
visible; ``GET /v1/models``; ``POST /v1/echo`` returns the request's body size and the
``X-Regiongate-*`` headers it saw; ``/v1/ws/echo`` is a WebSocket echo. It is a test double
for a real API, not a model.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["create_app"]

_REPLY = "Hello from the regiongate demo upstream. Your request was allowed through the gate."


def _tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def create_app(*, token_delay: float = 0.05) -> Starlette:
    """The demo upstream app; ``token_delay`` seconds between streamed tokens."""

    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse(
                {"error": {"message": "body is not JSON", "type": "invalid_request_error",
                           "param": None, "code": None}},
                status_code=400,
            )  # fmt: skip
        model = str(body.get("model", "demo-1"))
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        seen = {
            "territory": request.headers.get("x-regiongate-territory"),
            "decision": request.headers.get("x-regiongate-decision"),
        }
        reply = _REPLY + (f" [territory {seen['territory']}]" if seen["territory"] else "")
        if body.get("stream"):
            delay = float(request.headers.get("x-demo-token-delay", token_delay))

            async def events() -> AsyncIterator[bytes]:
                for i, token in enumerate(_tokens(reply)):
                    chunk: dict[str, Any] = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": token}
                                if i == 0
                                else {"content": token},
                                "finish_reason": None,
                            }
                        ],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
                    await asyncio.sleep(delay)
                final = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield f"data: {json.dumps(final)}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": len(_tokens(reply)),
                          "total_tokens": 5 + len(_tokens(reply))},
                "regiongate": seen,
            }
        )  # fmt: skip

    async def models(request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": "demo-1", "object": "model", "created": 0,
                                         "owned_by": "regiongate-demo"}]}
        )  # fmt: skip

    async def echo(request: Request) -> Response:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse(
            {
                "bytes": size,
                "method": request.method,
                "headers": {k: v for k, v in request.headers.items() if k.startswith("x-")},
            }
        )

    async def ws_echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                elif message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            return

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/echo", echo, methods=["POST", "PUT", "GET"]),
            WebSocketRoute("/v1/ws/echo", ws_echo),
        ]
    )
