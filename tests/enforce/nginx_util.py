"""Real nginx for tests: its own config, prefix, logs and ports in a temporary directory.

nginx runs in the foreground (``daemon off``) as a child of the test, is waited for on its
port, and is stopped (SIGQUIT, then SIGKILL) at teardown even when the test fails. Tests
skip, saying how to install it, when there is no nginx binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.enforce.servers import free_port

# The contract body of a blocked request (DESIGN.md §3), byte for byte.
BLOCKED_BODY = (
    '{"error": {"message": "Country, region, or territory not supported", '
    '"type": "request_forbidden", "param": null, "code": "unsupported_country_region_territory"}}'
)


def nginx_binary() -> str:
    """The nginx executable, or skip the test with install instructions."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.skip("nginx is not installed: apt-get install nginx (CI installs it)")
    return found


def _main_conf(prefix: Path, http: str) -> str:
    temp = prefix / "tmp"
    # Workers drop to an unprivileged user when nginx starts as root; pytest's temporary
    # directories are private to root, so stay root there (loopback-only test servers).
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        f"error_log {prefix}/logs/error.log warn;\n"
        f"pid {prefix}/nginx.pid;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {temp}/body;\n"
        f"    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n"
        f"    uwsgi_temp_path {temp}/uwsgi;\n"
        f"    scgi_temp_path {temp}/scgi;\n"
        f"{http}\n"
        "}\n"
    )


def write_config(prefix: Path, http: str) -> Path:
    """``prefix/nginx.conf`` with ``http`` as the body of the ``http { }`` block."""
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_main_conf(prefix, http))
    return conf


def check_config(prefix: Path, http: str) -> tuple[float, str]:
    """``nginx -t`` on a config: ``(seconds, output)``; fails the test if nginx refuses it."""
    binary = nginx_binary()
    conf = write_config(prefix, http)
    started = time.perf_counter()
    done = subprocess.run(
        [
            binary,
            "-t",
            "-q",
            "-p",
            str(prefix),
            "-e",
            str(prefix / "logs/error.log"),
            "-c",
            str(conf),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        pytest.fail(f"nginx -t refused the config:\n{done.stderr}\n{conf.read_text()[:4000]}")
    return seconds, done.stderr


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            pytest.fail(f"nginx exited with {proc.returncode}:\n{_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nginx did not listen on {port}:\n{_tail(log)}")
            time.sleep(0.02)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no error log)"


@contextlib.contextmanager
def run_nginx(prefix: Path, http: str, port: int) -> Iterator[Path]:
    """Start nginx with ``http`` (which listens on 127.0.0.1:``port``); yields the prefix.

    Stopped at exit: SIGQUIT (graceful), SIGKILL if it lingers; its error log is attached
    to the failure message of a test that fails to start it.
    """
    binary = nginx_binary()
    conf = write_config(prefix, http)
    log = prefix / "logs" / "error.log"
    with (prefix / "logs" / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-e", str(log), "-c", str(conf), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait_for_port(port, proc, log)
        yield prefix
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(port: int, path: str = "/", headers: Mapping[str, str] | None = None) -> Reply:
    """One GET to 127.0.0.1:``port``; 4xx/5xx are replies, not exceptions."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers or {}))
    # No proxies from the environment: everything here is loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=20) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def as_client(ip: str) -> dict[str, str]:
    """Headers that make nginx (realip, trusting 127.0.0.1) see ``ip`` as the client."""
    return {"X-Forwarded-For": ip}


# --- a test upstream -------------------------------------------------------------------------


@dataclass
class EchoUpstream:
    """An ASGI app answering 200 with the request headers it received, as JSON; remembers
    every request, so a test can tell that a blocked one never arrived."""

    seen: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        headers[":path"] = scope["path"]
        self.seen.append(headers)
        body = json.dumps(headers).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


__all__ = [
    "BLOCKED_BODY",
    "EchoUpstream",
    "Reply",
    "as_client",
    "check_config",
    "free_port",
    "get",
    "nginx_binary",
    "run_nginx",
    "write_config",
]
