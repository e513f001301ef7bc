"""Test upstreams: the demo API, plus ones that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from regiongate.demo.upstream import create_app


class Control:
    """Shared between a test and its upstream: events the upstream waits on or reports."""

    def __init__(self) -> None:
        self.first_chunk_seen = threading.Event()
        self.stream_ended = threading.Event()
        self.stream_cancelled = threading.Event()
        self.hits = 0


def controlled_upstream(control: Control) -> Starlette:
    """/gated/stream sends one event, then waits until the TEST has received it before
    sending the rest: a proxy that buffered would deadlock here (and the test would fail
    on its bounded wait), so streaming is tested causally, without timing."""

    async def gated_stream(request: Request) -> Response:
        control.hits += 1

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b'data: {"n": 1}\n\n'
                got = await asyncio.to_thread(control.first_chunk_seen.wait, 20)
                yield b'data: {"n": 2}\n\n' if got else b'data: "TIMEOUT"\n\n'
                yield b"data: [DONE]\n\n"
                control.stream_ended.set()
            except BaseException:
                control.stream_cancelled.set()
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    async def endless(request: Request) -> Response:
        control.hits += 1

        async def events() -> AsyncIterator[bytes]:
            try:
                for i in range(10_000):
                    yield f"data: {i}\n\n".encode()
                    await asyncio.sleep(0.05)
            finally:
                control.stream_cancelled.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def slow(request: Request) -> Response:
        await asyncio.sleep(5)
        return JSONResponse({"late": True})

    async def headers(request: Request) -> Response:
        control.hits += 1
        return JSONResponse(dict(request.headers))

    return Starlette(
        routes=[
            Route("/gated/stream", gated_stream, methods=["GET", "POST"]),
            Route("/gated/endless", endless),
            Route("/gated/slow", slow),
            Route("/gated/headers", headers, methods=["GET", "POST"]),
            Mount("/", app=create_app(token_delay=0.001)),
        ]
    )


@contextlib.contextmanager
def resetting_server() -> Iterator[int]:
    """Accepts connections and resets them at once (SO_LINGER 0)."""
    import struct

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[int, threading.Event, threading.Event]]:
    """Reads a request and never answers; (port, request read, connection closed by peer)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()
    got_request, closed = threading.Event(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.settimeout(0.2)
            with conn:
                while not stop.is_set():
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        closed.set()
                        break
                    got_request.set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1]), got_request, closed
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()
