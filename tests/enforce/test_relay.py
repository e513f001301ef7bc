"""Proxied requests relayed inside uvicorn's protocol (enforce/relay.py), against the same
gateway proxying through ASGI: byte for byte the same answers to the client and the same
requests to the upstream, in the same order, on the same connections."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httptools
import pytest

from tests.enforce.servers import free_port
from tests.enforce.test_inline import (
    CLOSE,
    US,
    exchange,
    gateway,
    held_stream,
    keyed,
    keyed_gateway,
    request,
    without_date,
)

CN = "4.0.0.1"
HUGE = 256 * 1024 * 1024

# What the scripted upstream answers, by path. A HEAD request gets the head only.
ANSWERS: dict[str, bytes] = {
    "/cl": b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}',
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "/204": b"HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n",
    "/304": b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
    "/418": b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n",
    "/interim": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/hop": b"HTTP/1.1 200 OK\r\nConnection: X-Drop\r\nX-Drop: yes\r\nKeep-Alive: timeout=5\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: upstream/1.0\r\n"
    b"Proxy-Authenticate: Basic\r\nX-Keep: 1\r\nContent-Length: 2\r\n\r\nok",
    "/big": b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000,
    "/bigchunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (n, b"y" * n) for n in (70_000, 90_000, 1))
    + b"0\r\n\r\n",
    "/query": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nq",
    "/garbage": b"NOT HTTP AT ALL\r\n\r\n",
    "/bad-header": b"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\nContent-Length: 0\r\n\r\n",
}
# Answered, then the connection closed: a body to the end of the connection, one cut short,
# and an answer that says it closes.
CLOSING: dict[str, bytes] = {
    "/eof": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    "/cut": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    "/nothing": b"",
}


class Scripted:
    """A raw HTTP/1.1 upstream that answers from the scripts above and records, per
    connection, every request it read (head and body)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request)
        self.connections = 0
        self.sent = 0  # bytes of /huge sent
        self.release = threading.Event()  # /hold reads its body
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            t = threading.Thread(target=self.serve, args=(conn, self.connections), daemon=True)
            t.start()
            self.threads.append(t)

    def serve(self, conn: socket.socket, number: int) -> None:
        buf = b""
        answered = 0
        conn.settimeout(0.1)
        with conn:
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        if self.stop.is_set():
                            return
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif name.strip().lower() == b"transfer-encoding":  # (small bodies)
                        while not (buf.startswith(b"0\r\n\r\n") or b"\r\n0\r\n\r\n" in buf):
                            data = conn.recv(65536)
                            if not data:
                                return
                            buf += data
                        length = buf.index(b"0\r\n\r\n") + 5
                method, target = head.split(b" ")[:2]
                path = target.split(b"?")[0].decode()
                if path == "/late":  # the answer comes a while after the body
                    conn.settimeout(30)
                    parts, have = [buf], len(buf)
                    while have < length:
                        data = conn.recv(65536)
                        parts.append(data)
                        have += len(data)
                    buf = b"".join(parts)
                    self.requests.append((number, head + b"\r\n\r\n" + buf[:length]))
                    buf = buf[length:]
                    self.stop.wait(0.4)
                    conn.sendall(ANSWERS["/cl"])
                    conn.settimeout(0.1)
                    continue
                if path == "/hold":  # the body is read only once the test says so
                    self.release.wait(30)
                    conn.settimeout(30)
                if path == "/early":  # answered before the body is read
                    conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                    answered += 1
                parts, have = [buf], len(buf)  # (a list: bodies of hundreds of MB)
                while have < length:
                    try:
                        data = conn.recv(1 << 20)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    parts.append(data)
                    have += len(data)
                buf = b"".join(parts)
                body, buf = buf[:length], buf[length:]
                self.requests.append((number, head + b"\r\n\r\n" + body))
                if path == "/early":
                    continue
                if path == "/reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if path == "/silent":
                    self.stop.wait(30)
                    return
                if path == "/stall":  # the answer starts, then nothing more
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                    self.stop.wait(30)
                    return
                if path == "/huge":  # HUGE bytes, sent as fast as they are read
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE)
                    piece = b"z" * 65536
                    conn.settimeout(30)  # held back while the client does not read
                    while self.sent < HUGE:
                        conn.sendall(piece)
                        self.sent += len(piece)
                    continue
                if path == "/first-only" and answered:
                    return  # a kept-alive connection closed as the next request came
                answer = ANSWERS.get(path) or CLOSING.get(path, ANSWERS["/cl"])
                if path == "/first-only":
                    answer = ANSWERS["/cl"]
                if method == b"HEAD" and b"HTTP/1.1 " in answer:  # the heads, no body
                    last = answer.rindex(b"HTTP/1.1 ")
                    answer = answer[: answer.index(b"\r\n\r\n", last) + 4]
                conn.settimeout(20)  # (a loaded machine may read slowly)
                conn.sendall(answer)
                conn.settimeout(0.1)
                answered += 1
                if path in CLOSING:
                    return


@contextlib.contextmanager
def scripted() -> Iterator[Scripted]:
    up = Scripted()
    thread = threading.Thread(target=up.run, daemon=True)
    thread.start()
    try:
        yield up
    finally:
        up.stop.set()
        thread.join(timeout=5)
        for t in up.threads:
            t.join(timeout=5)
        up.sock.close()


def get(path: str, client: str | None = US, *lines: str, method: str = "GET") -> bytes:
    return request(path, client, *lines, method=method)


class _Answer:
    """httptools callbacks: whether one answer is complete."""

    def __init__(self, head: bool) -> None:
        self.head = head
        self.done = False

    def on_headers_complete(self) -> None:
        self.done = self.head  # (the parser does not know it answers a HEAD request)

    def on_message_complete(self) -> None:
        self.done = True


def one_by_one(port: int, requests: list[bytes]) -> bytes:
    """Each request sent when the answer before it is complete, on one connection; all that
    the server sent, until it closed or the last answer was complete."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        for data in requests:
            s.sendall(data)
            answer = _Answer(data.startswith(b"HEAD "))
            parser = httptools.HttpResponseParser(answer)
            while not answer.done:
                chunk = s.recv(65536)
                out.append(chunk)
                if not chunk:
                    return b"".join(out)
                with contextlib.suppress(httptools.HttpParserError):
                    parser.feed_data(chunk)
        s.settimeout(0.05)
        with contextlib.suppress(TimeoutError):
            while chunk := s.recv(65536):
                out.append(chunk)
    return b"".join(out)


# The requests, each sent when the answer before it is complete (or, as a bytes, all in one
# write), and the ASGI requests the relaying server should see.
CASES: dict[str, tuple[list[bytes] | bytes, list[str]]] = {
    "answers of every framing, kept alive": (
        [
            get("/cl"),
            get("/chunked"),
            get("/204"),
            get("/304"),
            get("/418"),
            get("/interim"),
            get("/hop"),
            get("/big"),
            get("/query?a=1&b=%20x"),
            get("/cl", US, "Content-Length: 0"),
            get("/cl", US, CLOSE),
        ],
        [],
    ),
    "HEAD": ([get("/cl", method="HEAD"), get("/chunked", US, CLOSE, method="HEAD")], []),
    "blocked and allowed": (
        [
            get("/cl", CN),
            get("/cl", "10.9.9.9, 203.0.113.7, 127.0.0.1, " + US),
            get("/cl", CN, CLOSE),
        ],
        [],
    ),
    "headers as the middleware and the proxy forward them": (
        [
            get(
                "/cl",
                US,
                "X-Regiongate-Territory: XX",
                "x-regiongate-decision: allow",
                "Connection: keep-alive, X-Secret",
                "X-Secret: 1",
                "Keep-Alive: 5",
                "TE: trailers",
                "Proxy-Authorization: Basic eA==",
                "Accept: */*",
                "X-Forwarded-Host: spoofed",
            ),
            get("/cl", None, "Host: other", "X-Forwarded-Proto: ftp", CLOSE),
        ],
        [],
    ),
    "answers that close the upstream's connection": (
        [get("/eof"), get("/close"), get("/cl", US, CLOSE)],
        [],
    ),
    "an answer cut short closes the client's connection": ([get("/cut"), get("/cl")], []),
    "an upstream that is not HTTP": ([get("/garbage"), get("/cl", US, CLOSE)], []),
    "an answer uvicorn cannot write": ([get("/bad-header"), get("/cl")], []),
    "no answer at all": ([get("/nothing"), get("/cl", US, CLOSE)], []),
    "reset": ([get("/reset"), get("/cl", US, CLOSE)], []),
    "the keep-alive race: sent again on a new connection": (
        [get("/first-only"), get("/first-only"), get("/cl", US, CLOSE)],
        [],
    ),
    "pipelined behind a relayed request: through ASGI, in order": (
        get("/cl")
        + get("/healthz")
        + get("/cl", US, "Content-Length: 2", method="POST")
        + b"{}"
        + get("/cl", US, "Transfer-Encoding: chunked", method="POST")
        + b"2\r\n{}\r\n0\r\n\r\n"
        + get("/cl")
        + get("/cl", US, CLOSE),
        ["/healthz", "/cl", "/cl", "/cl", "/cl"],
    ),
    "bodies with a length": (
        [
            get("/cl", US, "Content-Length: 7", "Content-Type: application/json", method="POST")
            + b'{"a":1}',
            get("/chunked", US, "Content-Length: 1048576", method="PUT") + b"b" * 1048576,
            get("/cl", CN, "Content-Length: 5", method="POST") + b"12345",  # blocked: dropped
            get("/204", US, "Content-Length: 3", CLOSE, method="POST") + b"end",
        ],
        [],
    ),
    "not relayed: chunked bodies, HTTP/1.0, percent-encoded paths, the gateway's own, Expect": (
        [
            get("/cl", US, "Transfer-Encoding: chunked", method="POST") + b"0\r\n\r\n",
            get("/c%6c"),
            get("/readyz", None),
            get("/cl", US, "Expect: 100-continue", "Content-Length: 0"),
            get("/cl").replace(b"HTTP/1.1", b"HTTP/1.0"),
        ],
        ["/cl", "/cl", "/readyz", "/cl", "/cl"],
    ),
}


def run_both(
    snapshot: Path, data: list[bytes] | bytes, upstream: str | None = None, **server: Any
) -> list[tuple[bytes, list[str], list[tuple[int, bytes]], int]]:
    """(answer, ASGI paths, upstream requests, requests served) through ASGI, then relayed."""
    out = []
    for inline in (False, True):
        with scripted() as up:
            target = upstream or f"http://127.0.0.1:{up.port}"
            with gateway(snapshot, inline=inline, upstream=target, server=server) as (
                port,
                counter,
                srv,
            ):
                answer = exchange(port, data) if isinstance(data, bytes) else one_by_one(port, data)
                served = srv.server_state.total_requests
        port_b = b"127.0.0.1:%d" % up.port  # (each run's upstream has a port of its own)
        requests = [(n, r.replace(port_b, b"127.0.0.1:UP")) for n, r in up.requests]
        answer = without_date(answer).replace(port_b, b"127.0.0.1:UP")
        out.append((answer, counter.paths, requests, served))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_relayed_answers_equal_the_asgi_answers(tiny_snapshot_path: Path, case: str) -> None:
    data, asgi_paths = CASES[case]
    (reference, ref_paths, ref_upstream, ref_served), (answer, paths, upstream, served) = run_both(
        tiny_snapshot_path, data
    )
    assert ref_paths  # the reference server answers every request through ASGI
    assert paths == asgi_paths
    assert answer == reference
    assert answer.count(b"HTTP/1.") == reference.count(b"HTTP/1.") > 0
    assert upstream == ref_upstream
    assert served == ref_served


def test_relayed_answers_are_what_the_client_should_get(tiny_snapshot_path: Path) -> None:
    """Not only the same as through ASGI: right. Hop-by-hop fields gone both ways, the
    verdict's headers in, chunked answers re-framed, HEAD without a body."""
    data = CASES["answers of every framing, kept alive"][0]
    (_, _, _, _), (answer, _, upstream, _) = run_both(tiny_snapshot_path, data)
    answers = answer.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b" ", 1)[0] for a in answers] == [
        b"200", b"200", b"204", b"304", b"418", b"200", b"200", b"200", b"200", b"200", b"200"
    ]  # fmt: skip
    assert answers[0].endswith(b'content-length: 11\r\n\r\n{"ok":true}')
    assert answers[1].endswith(
        b"x-a: 1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert b"x-keep: 1" in answers[6] and b"x-drop" not in answers[6].lower()
    assert b"keep-alive" not in answers[6] and b"proxy-authenticate" not in answers[6]
    assert answers[5].endswith(b"content-length: 2\r\n\r\nok")  # the 103 was not passed on
    assert answers[7].endswith(b"x" * 300_000)
    assert answers[-1].endswith(b"connection: close\r\n\r\n" + b'{"ok":true}')
    assert len({n for n, _ in upstream}) == 1  # one kept-alive upstream connection
    first = upstream[0][1]
    assert first.startswith(b"GET /cl HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"x-regiongate-territory: US\r\nx-regiongate-decision: allow\r\n" in first
    assert b"x-forwarded-for: 3.0.0.1, 127.0.0.1\r\n" in first
    assert upstream[8][1].startswith(b"GET /query?a=1&b=%20x HTTP/1.1\r\n")


@pytest.mark.parametrize("inline", [False, True])
def test_the_upstreams_date_and_server_are_not_passed_on(
    tiny_snapshot_path: Path, inline: bool
) -> None:
    """As nginx's proxy_pass: the answer has the gateway's own Date only (two would
    contradict each other), and no Server naming what runs behind it; both paths."""
    with (
        scripted() as up,
        gateway(tiny_snapshot_path, inline=inline, upstream=f"http://127.0.0.1:{up.port}") as (
            port,
            _,
            _,
        ),
    ):
        raw = one_by_one(port, [get("/hop", US, CLOSE)])
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert raw.startswith(b"HTTP/1.1 200 ") and head.count(b"\r\ndate: ") == 1
    assert b"2024" not in head and b"server:" not in head and b"x-keep: 1" in head


def test_a_chunked_answer_in_many_reads_arrives_whole(tiny_snapshot_path: Path) -> None:
    """Re-framed chunk by chunk as the upstream's reads come (so not comparable byte for byte
    with another run): the body is whole."""
    with (
        scripted() as up,
        gateway(tiny_snapshot_path, inline=True, upstream=f"http://127.0.0.1:{up.port}") as (
            port,
            counter,
            _,
        ),
    ):
        raw = one_by_one(port, [get("/bigchunks", US, CLOSE)])
    assert counter.paths == []
    body: list[bytes] = []

    class Read(_Answer):
        def on_body(self, chunk: bytes) -> None:
            body.append(chunk)

    answer = Read(head=False)
    httptools.HttpResponseParser(answer).feed_data(raw)
    assert answer.done and b"".join(body) == b"y" * 160_001


def test_upstream_down_and_slow_are_the_asgi_answers(tiny_snapshot_path: Path) -> None:
    data = [get("/cl"), get("/cl", US, CLOSE)]
    down = f"http://127.0.0.1:{free_port()}"
    (reference, _, _, _), (answer, paths, _, _) = run_both(tiny_snapshot_path, data, down)
    assert answer == reference and paths == []
    assert answer.count(b"HTTP/1.1 502 ") == 2 and b'"code":"bad_gateway"' in answer
    data = [get("/silent", US, CLOSE)]
    (reference, _, _, _), (answer, paths, _, _) = run_both(
        tiny_snapshot_path, data, upstream_read_timeout=0.3
    )
    assert answer == reference and paths == []
    assert answer.startswith(b"HTTP/1.1 504 ") and b'"code":"upstream_timeout"' in answer
    # A failed relay's answer is framed for its own request, not for the one pipelined
    # behind it (a 502 to a GET has its body; to a HEAD, none).
    data2 = get("/cl") + get("/cl", US, method="HEAD") + get("/cl", US, CLOSE, method="HEAD")
    data2 += get("/cl", US, method="HEAD")  # (after the close: unanswered)
    (reference, _, _, _), (answer, paths, _, _) = run_both(tiny_snapshot_path, data2, down)
    assert answer == reference and paths == ["/cl", "/cl"]
    data2 = get("/cl", US, method="HEAD") + get("/cl", US, CLOSE)
    (reference, _, _, _), (answer, paths, _, _) = run_both(tiny_snapshot_path, data2, down)
    assert answer == reference and paths == ["/cl"]
    assert answer.count(b"HTTP/1.1 502 ") == 2 and answer.count(b'"code":"bad_gateway"') == 1
    data = [get("/stall", US), get("/cl")]
    (reference, _, _, ref_served), (answer, paths, _, served) = run_both(
        tiny_snapshot_path, data, upstream_read_timeout=0.3
    )
    assert answer == reference and paths == [] and served == ref_served == 0
    assert answer.endswith(b"content-length: 100\r\n\r\npartial")  # then closed


def test_a_slow_client_holds_the_upstream_back(tiny_snapshot_path: Path) -> None:
    """While the client does not read, the gateway stops reading from the upstream: what
    the upstream manages to send stays within the sockets' buffers, not the whole answer
    taken into the gateway's memory. Then all of it arrives."""
    with (
        scripted() as up,
        gateway(tiny_snapshot_path, inline=True, upstream=f"http://127.0.0.1:{up.port}") as (
            port,
            counter,
            _,
        ),
        socket.socket() as s,
    ):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.connect(("127.0.0.1", port))
        s.sendall(get("/huge", US, CLOSE))
        sent = -1
        while sent != up.sent:  # until the upstream is held back (it stops sending)
            sent = up.sent
            up.stop.wait(0.5)
        assert 0 < sent < HUGE // 4, sent
        s.settimeout(20)
        received = 0
        while chunk := s.recv(1 << 20):
            received += len(chunk)
    assert counter.paths == []
    assert up.sent == HUGE and received > HUGE


def test_keyed_requests_relayed_equal_the_asgi_ones(
    tiny_snapshot_path: Path, tmp_path: Path
) -> None:
    """Requests with API keys meet the account checks as through the middleware: the same
    answers (a suspended organisation's 403, an unknown key's 401 when they are blocked), the
    same requests upstream, the same events on record."""
    data = [
        keyed("sk-a", US, path="/cl"),
        keyed("sk-a", CN, path="/cl"),
        keyed("sk-s", US, path="/cl"),
        keyed("sk-nobody", US, path="/cl"),
        keyed(None, US, path="/cl"),
        keyed("sk-a", US, CLOSE, path="/cl"),
    ]
    runs = []
    for inline in (False, True):
        tmp = tmp_path / str(inline)
        tmp.mkdir()
        with (
            scripted() as up,
            keyed_gateway(
                tiny_snapshot_path,
                tmp,
                inline=inline,
                unknown_keys="block",
                upstream=f"http://127.0.0.1:{up.port}",
            ) as (port, counter, store),
        ):
            answer = without_date(one_by_one(port, data))
            assert bool(counter.paths) is not inline  # relayed: none reach the ASGI app
        rows = store._run(  # type: ignore[attr-defined]
            lambda c: c.exec_driver_sql(
                "SELECT org, territory, action FROM rg_events ORDER BY at, rowid"
            ).fetchall()
        )
        port_b = b"127.0.0.1:%d" % up.port
        upstream = [r.replace(port_b, b"UP") for _, r in up.requests]
        runs.append((answer, upstream, [tuple(r) for r in rows]))
    assert runs[0] == runs[1]
    answer, upstream, events = runs[1]
    statuses = [a.split(b" ", 1)[0] for a in answer.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"200", b"403", b"403", b"401", b"200", b"200"]
    assert len(upstream) == 3 and all(b"authorization: Bearer sk-a" in r for r in upstream[::2])
    assert events == [
        ("org-a", "US", "allow"),
        ("org-a", "CN", "block"),
        ("org-s", "US", "refused"),
        ("org-a", "US", "allow"),
    ]


def test_an_answer_before_the_body_ends_it(tiny_snapshot_path: Path) -> None:
    """The upstream answers (413) before it has read the body: the answer is the client's,
    the rest of the body is not sent, that upstream connection is not used again, and the
    client's connection goes on with its next request."""
    size = 32 * 1024 * 1024  # more than the sockets buffer: the answer comes mid-body
    data = [
        get("/early", US, f"Content-Length: {size}", method="POST") + b"e" * size,
        get("/cl", US, CLOSE),
    ]
    (reference, _, ref_upstream, _), (answer, paths, upstream, _) = run_both(
        tiny_snapshot_path, data
    )
    assert answer == reference and paths == []
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.endswith(b'{"ok":true}')
    assert [n for n, _ in upstream] == [n for n, _ in ref_upstream] == [2]  # /cl, anew


def test_an_upstream_that_does_not_read_holds_the_client_back(tiny_snapshot_path: Path) -> None:
    """While the upstream does not read the body, the gateway stops reading it from the
    client: what the client manages to send stays within the sockets' buffers. Then all of it
    arrives."""
    size = 256 * 1024 * 1024
    with (
        scripted() as up,
        gateway(tiny_snapshot_path, inline=True, upstream=f"http://127.0.0.1:{up.port}") as (
            port,
            counter,
            _,
        ),
        socket.create_connection(("127.0.0.1", port), timeout=30) as s,
    ):
        progress = [0]

        def upload() -> None:
            s.sendall(get("/hold", US, f"Content-Length: {size}", CLOSE, method="PUT"))
            piece = b"u" * 65536
            for _ in range(size // len(piece)):
                s.sendall(piece)
                progress[0] += len(piece)

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        sent = -1
        while sent != progress[0]:  # until the client is held back (it stops sending)
            sent = progress[0]
            up.stop.wait(0.5)
        assert 0 < sent < size // 4, sent
        up.release.set()
        sender.join(timeout=60)
        answer = exchange_rest(s)
    assert counter.paths == []
    assert progress[0] == size and answer.startswith(b"HTTP/1.1 200 ")
    ((_, received),) = up.requests
    assert len(received.partition(b"\r\n\r\n")[2]) == size


def exchange_rest(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_graceful_shutdown_lets_a_relayed_stream_finish(tiny_snapshot_path: Path) -> None:
    """Shutting down while a relayed answer streams: the answer ends whole, then the
    connection closes (as uvicorn's own request cycle ends under a graceful shutdown)."""
    with held_stream(tiny_snapshot_path, get("/gated/stream")) as (
        control,
        counter,
        server,
        s,
        seen,
    ):
        server.should_exit = True
        (protocol,) = server.server_state.connections
        while protocol.cycle.keep_alive:  # until the server has asked the connection to end
            time.sleep(0.05)
        control.first_chunk_seen.set()
        while chunk := s.recv(65536):  # to the end: the server closes the connection
            seen += chunk
    assert counter.paths == []
    assert seen.startswith(b"HTTP/1.1 200 ") and seen.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


def test_the_read_timeout_counts_from_the_end_of_a_slow_upload(tiny_snapshot_path: Path) -> None:
    """A body sent slowly: the upstream's time to answer counts from the body's end (as
    through ASGI, where the wait for the answer starts after the last write), not from the
    request's head."""
    head = get("/late", US, "Content-Length: 4", method="POST")
    answers = []
    for inline in (False, True):
        with (
            scripted() as up,
            gateway(
                tiny_snapshot_path,
                inline=inline,
                upstream=f"http://127.0.0.1:{up.port}",
                server={"upstream_read_timeout": 1.0},
            ) as (port, counter, _),
            socket.create_connection(("127.0.0.1", port), timeout=20) as s,
        ):
            s.sendall(head)
            time.sleep(0.9)  # the upstream then answers 0.4 s after the body: 1.3 s in all
            s.sendall(b"body")
            answer = _Answer(head=False)
            parser = httptools.HttpResponseParser(answer)
            raw = b""
            while not answer.done:
                chunk = s.recv(65536)
                assert chunk, raw
                raw += chunk
                parser.feed_data(chunk)
            answers.append(without_date(raw))
            assert bool(counter.paths) is not inline
    assert answers[0] == answers[1]
    assert answers[1].startswith(b"HTTP/1.1 200 ")


def test_server_inline_false_answers_every_request_through_asgi(tiny_snapshot_path: Path) -> None:
    """``server.inline = false`` (or ``REGIONGATE_SERVER_INLINE=false``): uvicorn's own
    protocol, every request an ASGI request, the same answers."""
    from regiongate.config import load_settings
    from regiongate.enforce.app import GatewayApp
    from regiongate.enforce.gate import Gate
    from regiongate.enforce.server import uvicorn_config
    from tests.enforce.servers import gateway_settings, run_server
    from tests.enforce.test_inline import DECIDE, Counting

    assert load_settings(env={"REGIONGATE_SERVER_INLINE": "false"}).server.inline is False
    data = [get(DECIDE, CN), get("/cl"), get("/cl", US, CLOSE)]
    with scripted() as up:
        port = free_port()
        settings = gateway_settings(
            tiny_snapshot_path, port, f"http://127.0.0.1:{up.port}", inline=False
        )
        app = GatewayApp(settings, Gate.from_settings(settings))
        cfg = uvicorn_config(app, settings, log_level="warning")
        assert cfg.http == "httptools"
        counter = cfg.app = Counting(app)
        with run_server(cfg):
            answer = one_by_one(port, data)
    assert counter.paths == [DECIDE, "/cl", "/cl"]
    statuses = [a.split(b" ", 1)[0] for a in answer.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [b"403", b"200", b"200"]


# Paths whose answers do not depend on timing (no stalls, no early answers, no chunk
# boundaries that vary from run to run).
_RANDOM_PATHS = ["/cl", "/chunked", "/204", "/304", "/418", "/interim", "/hop", "/big",
                 "/query?x=1", "/eof", "/close", "/garbage", "/first-only", "/healthz"]  # fmt: skip


def _random_request(rng: random.Random) -> bytes:
    method = rng.choice(["GET", "GET", "GET", "HEAD", "POST", "DELETE"])
    client = rng.choice([US, US, US, CN, None, "10.9.9.9, 127.0.0.1, " + US])
    path = rng.choice(_RANDOM_PATHS)
    lines = []
    if rng.random() < 0.2:
        lines.append("X-Regiongate-Decision: allow")
    if method == "POST":
        body = b"x" * rng.choice([0, 1, 100, 70_000])
        return get(path, client, f"Content-Length: {len(body)}", *lines, method=method) + body
    return get(path, client, *lines, method=method)


@pytest.mark.parametrize("seed", range(int(os.environ.get("RELAY_SEEDS", "8"))))
def test_random_sequences_relayed_equal_the_asgi_answers(
    tiny_snapshot_path: Path, seed: int
) -> None:
    """Seeded random sequences of requests (methods, bodies, clients, answers of every kind),
    sent one by one or all in one write: the same bytes both ways, upstream and client.
    ``RELAY_SEEDS=200`` runs more of them (120 passed when this was written)."""
    rng = random.Random(seed)
    requests = [_random_request(rng) for _ in range(rng.randint(3, 9))]
    requests.append(get("/cl", US, CLOSE))
    data: list[bytes] | bytes = requests if seed % 2 else b"".join(requests)
    (reference, _, ref_upstream, ref_served), (answer, _, upstream, served) = run_both(
        tiny_snapshot_path, data
    )
    assert answer == reference
    assert upstream == ref_upstream
    assert served == ref_served
