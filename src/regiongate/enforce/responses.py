"""Small ASGI response helpers (no framework: the gate sits in front of every request)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from regiongate.enforce.asgi import Send

__all__ = ["json_response", "send_json", "send_plain"]


def json_response(
    status: int, body: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A JSON answer as (status, headers, body)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return (
        status,
        [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
         *headers],
        data,
    )  # fmt: skip


async def send_json(
    send: Send,
    status: int,
    body: Any,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    status, start, data = json_response(status, body, headers)
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": data})


async def send_plain(
    send: Send,
    status: int,
    text: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(text)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": text})


def error_body(message: str, type_: str, code: str) -> dict[str, Any]:
    """The error shape API clients (the OpenAI SDK among them) already parse."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}
