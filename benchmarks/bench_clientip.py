"""Client address resolution, measured beside naive baselines in the same run.

Usage::

    python benchmarks/bench_clientip.py [--quick]

Every figure is the median time per resolution over several repetitions, each a loop over
distinct requests (seeded random client addresses, six realistic ASGI headers). Subject and
baseline repetitions are interleaved, so drifts in machine speed hit both alike, and the
garbage collector is off inside a timed region. Timings are never asserted.

Baselines:

- ``naive-leftmost``: ``ipaddress.ip_address(xff.split(",")[0].strip())``, the left-most
  X-Forwarded-For entry. Fast, and wrong: the client writes that entry.
- ``straightforward``: the secure walk written plainly: ``ipaddress.ip_address(hop)`` for each
  entry right to left, ``any(addr in net for net in networks)``.

``import bench_clientip`` has no side effects; ``run(quick)`` returns the rows as dicts so the
main runner can include them.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import random
import statistics
import time
from collections.abc import Callable, Sequence

from regiongate.clientip import ClientIPConfig, ClientResolver

TARGET_NS = 1000.0  # the 3-hop X-Forwarded-For chain, median per resolution
TRUSTED = ("10.0.0.0/8", "127.0.0.1/32", "::1/128")
PEER = "10.0.0.3"
COMMON = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"python-httpx/0.27"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"x-request-id", b"5b1f3c0e-8d2a-4f43-9a63-2f0d1c7e9b11"),
]

Headers = list[tuple[bytes, bytes]]
Request = tuple[str, Headers]


def _clients(rng: random.Random, n: int) -> list[str]:
    return [str(ipaddress.IPv4Address(rng.randrange(0x0B000000, 0xDF000000))) for _ in range(n)]


def _xff(value: str) -> Headers:
    return [*COMMON, (b"x-forwarded-for", value.encode("latin-1"))]


def workloads(n: int, seed: int = 7) -> dict[str, list[Request]]:
    """Requests per figure; each figure gets ``n`` distinct client addresses."""
    rng = random.Random(seed)
    clients = _clients(rng, n)
    forged = _clients(rng, n)

    forged_chain = ", ".join(f"6.6.{i % 256}.{i // 256 % 256}" for i in range(9_000))
    huge = _xff(f"{forged_chain}, 203.0.113.7, 10.0.0.1, 10.0.0.2")

    def proxy() -> str:
        return str(ipaddress.IPv4Address(rng.randrange(0x0A000000, 0x0B000000)))

    return {
        # A direct client sending a forged header: nothing is walked.
        "untrusted-peer": [
            (c, _xff(f"{f}, 10.0.0.1")) for c, f in zip(clients, forged, strict=True)
        ],
        "xff-3hop": [(PEER, _xff(f"{c}, 10.0.0.1, 10.0.0.2")) for c in clients],
        # The same shape through proxies that change on every request: every memo misses.
        "xff-3hop-cold": [(proxy(), _xff(f"{c}, {proxy()}, {proxy()}")) for c in clients],
        # 100 KB of forged entries left of the real client: the work must stay bounded.
        "xff-100kb": [(PEER, huge)] * n,
        "forwarded-3hop": [
            (
                PEER,
                [
                    *COMMON,
                    (b"forwarded", f"for={c}, for=10.0.0.1;proto=https, for=10.0.0.2".encode()),
                ],
            )
            for c in clients
        ],
    }


def naive_leftmost(peer: str, headers: Headers) -> object:
    """The anti-example: believe the left-most X-Forwarded-For entry."""
    for name, value in headers:
        if name == b"x-forwarded-for":
            return ipaddress.ip_address(value.decode("latin-1").split(",")[0].strip())
    return ipaddress.ip_address(peer)


def straightforward(
    networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> Callable[[str, Headers], object]:
    """The secure right-to-left walk, written the obvious way on ``ipaddress`` objects."""

    def trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr in net for net in networks)

    def resolve(peer: str, headers: Headers) -> object:
        addr = ipaddress.ip_address(peer)
        if not trusted(addr):
            return addr
        values = [v.decode("latin-1") for n, v in headers if n == b"x-forwarded-for"]
        entries = ",".join(values).split(",")[-17:] if values else []
        for entry in reversed(entries):
            addr = ipaddress.ip_address(entry.strip())
            if not trusted(addr):
                return addr
        return addr

    return resolve


def _timed(fn: Callable[[str, Headers], object], requests: Sequence[Request]) -> float:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for peer, headers in requests:
            fn(peer, headers)
        return time.perf_counter() - t0
    finally:
        if was_enabled:
            gc.enable()


def run(quick: bool) -> list[dict[str, object]]:
    """Measure every figure; one dict per row (ns per resolution, ratios, target)."""
    n, reps = (5_000, 5) if quick else (50_000, 9)
    loads = workloads(n)
    config = ClientIPConfig(trusted_proxies=TRUSTED)
    fwd_config = ClientIPConfig(trusted_proxies=TRUSTED, header="forwarded")
    plain = straightforward([ipaddress.ip_network(c) for c in TRUSTED])
    cases: dict[str, tuple[Callable[[str, Headers], object], list[Request]]] = {
        "untrusted-peer": (ClientResolver(config).resolve, loads["untrusted-peer"]),
        "untrusted-peer/straightforward": (plain, loads["untrusted-peer"]),
        "xff-3hop": (ClientResolver(config).resolve, loads["xff-3hop"]),
        "xff-3hop/naive-leftmost": (naive_leftmost, loads["xff-3hop"]),
        "xff-3hop/straightforward": (plain, loads["xff-3hop"]),
        "xff-3hop-cold": (ClientResolver(config).resolve, loads["xff-3hop-cold"]),
        "xff-3hop-cold/straightforward": (plain, loads["xff-3hop-cold"]),
        "xff-100kb": (ClientResolver(config).resolve, loads["xff-100kb"]),
        "xff-100kb/straightforward": (plain, loads["xff-100kb"]),
        "forwarded-3hop": (ClientResolver(fwd_config).resolve, loads["forwarded-3hop"]),
    }
    for fn, requests in cases.values():  # warm-up: memos, caches, specialisation
        _timed(fn, requests)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, (fn, requests) in cases.items():
            samples[name].append(_timed(fn, requests) / len(requests) * 1e9)
    median = {name: statistics.median(values) for name, values in samples.items()}

    rows: list[dict[str, object]] = []
    for name in cases:
        if "/" in name:
            continue
        row: dict[str, object] = {
            "figure": f"clientip {name}",
            "ns_per_op": round(median[name], 1),
            "requests": n,
            "reps": reps,
        }
        baselines = {
            b.split("/", 1)[1]: median[b] for b in cases if b.startswith(f"{name}/") and "/" in b
        }
        for baseline, value in baselines.items():
            row[f"{baseline}_ns"] = round(value, 1)
            row[f"speedup_vs_{baseline}"] = round(value / median[name], 2)
        if name == "xff-3hop":
            row["target"] = f"<= {TARGET_NS:.0f} ns"
            row["met"] = median[name] <= TARGET_NS
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller workload, fewer reps")
    args = parser.parse_args(argv)
    rows = run(args.quick)
    print(f"{'figure':<28} {'ns/op':>9}   baselines (ns/op, speed-up)          target")
    for row in rows:
        extras = [
            f"{key[:-3]} {row[key]:.0f} ns ({row[f'speedup_vs_{key[:-3]}']}x)"
            for key in row
            if key.endswith("_ns") and key != "ns_per_op"
        ]
        target = ""
        if "target" in row:
            target = f"{row['target']}: {'met' if row['met'] else 'NOT met'}"
        line = f"{row['figure']:<28} {row['ns_per_op']:>9.1f}   {'; '.join(extras):<36} {target}"
        print(line.rstrip())


if __name__ == "__main__":
    main()
