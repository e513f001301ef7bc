"""Account benchmarks (issue: accounts), each against a baseline measured in the same run.

- 14: event ingestion into PostgreSQL through the store (COPY + insert-if-new, idempotent),
  vs SQLAlchemy Core ``executemany`` of plain INSERTs into the same table; SQLite and Redis
  through their stores for reference.
- 15: ``regiongate serve`` throughput with account checks (a registered key on every request:
  key hashing, the state check, an event per request written by the background writer) vs the
  same gateway with accounts off (wrk, same upstream).

Needs PostgreSQL and Redis on 127.0.0.1 (figures whose server is down are skipped), the
installed data, ``wrk`` and ``nginx``. Timings are never asserted.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PG_URL = os.environ.get("REGIONGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REGIONGATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def _events(n: int, tag: str) -> list[Any]:
    from regiongate.accounts.model import Event

    now = time.time()
    return [
        Event(f"b{tag}-{i}", f"org-{i % 1000}", f"kid_{i % 5000:032x}", now, "US", "", "allow",
              "supported-territory", False)
        for i in range(n)
    ]  # fmt: skip


def _rate(store: Any, events: list[Any], batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(events), batch):
        store.add_events(events[i : i + batch])
    return len(events) / (time.perf_counter() - t0)


def fig_ingest(quick: bool) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from regiongate.accounts.store import StoreUnavailable, store_from_url
    from regiongate.accounts.store.schema import events as events_table

    n, batch, runs = (50_000, 5000, 2) if quick else (200_000, 5000, 3)
    rows: list[dict[str, Any]] = []
    try:
        pg = store_from_url(PG_URL)
    except StoreUnavailable as exc:
        return [{"figure": "14", "name": "event ingestion, PostgreSQL", "skipped": str(exc)}]
    ours, naive = [], []
    engine = pg.engine  # type: ignore[attr-defined]
    for r in range(runs):
        pg.truncate_for_tests()  # type: ignore[attr-defined]
        ours.append(_rate(pg, _events(n, f"s{r}"), batch))
        pg.truncate_for_tests()  # type: ignore[attr-defined]
        evs = _events(n, f"n{r}")
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            with engine.begin() as conn:
                conn.execute(
                    sa.insert(events_table),
                    [
                        {"id": e.id, "org": e.org, "key_id": e.key_id, "at": e.at,
                         "territory": e.territory, "flags": e.flags, "action": e.action,
                         "rule": e.rule, "strike": e.strike}
                        for e in evs[i : i + batch]
                    ],
                )  # fmt: skip
        naive.append(n / (time.perf_counter() - t0))
    replay = _events(n, "s0")[: n // 2]
    pg.truncate_for_tests()  # type: ignore[attr-defined]
    pg.add_events(replay)
    replay_rate = _rate(pg, replay, batch)  # all duplicates: what a spool replay costs
    pg.truncate_for_tests()  # type: ignore[attr-defined]
    pg.close()
    o, b = statistics.median(ours), statistics.median(naive)
    rows.append({"figure": "14", "name": "event ingestion into PostgreSQL (store.add_events)",
                 "value": o, "unit": "/s", "baseline": "SQLAlchemy executemany INSERT",
                 "baseline_value": b, "ratio": o / b, "target": ">=50k/s", "met": o >= 50_000,
                 "note": f"{n:,} events in batches of {batch:,}, idempotent (COPY; COPY + INSERT "
                 f"ON CONFLICT DO NOTHING when ids repeat), median of {runs}; "
                 f"replaying duplicates: {replay_rate:,.0f}/s"})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        lite = store_from_url(f"sqlite:///{tmp}/bench.db")
        rate = statistics.median(_rate(lite, _events(n, f"l{r}"), batch) for r in range(runs))
        lite.close()
    rows.append({"figure": "14", "name": "event ingestion into SQLite (store.add_events)",
                 "value": rate, "unit": "/s", "baseline": "PostgreSQL store, same run",
                 "baseline_value": o, "ratio": rate / o,
                 "note": "WAL, synchronous=NORMAL, multi-row INSERT OR IGNORE ... VALUES "
                 "of 256 rows (the rest in powers of two)"})  # fmt: skip
    try:
        from regiongate.accounts.store.redis import RedisStore

        red = RedisStore(REDIS_URL, prefix=f"rgbench:{os.getpid()}:")
        red.migrate()
        try:
            rate = statistics.median(_rate(red, _events(n, f"r{r}"), batch) for r in range(runs))
        finally:
            red.truncate_for_tests()
            red.close()
        rows.append({"figure": "14", "name": "event ingestion into Redis (store.add_events)",
                     "value": rate, "unit": "/s", "baseline": "PostgreSQL store, same run",
                     "baseline_value": o, "ratio": rate / o,
                     "note": "one Lua script per 5,000 events, idempotent"})  # fmt: skip
    except StoreUnavailable as exc:
        rows.append({"figure": "14", "name": "event ingestion, Redis", "skipped": str(exc)})
    return rows


def fig_account_throughput(quick: bool) -> list[dict[str, Any]]:
    import bench_gateway as bg
    from regiongate.accounts.identity import KeyHasher, load_secret
    from regiongate.accounts.model import Key
    from regiongate.accounts.store import store_from_url

    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        return [{"figure": "15", "name": "gateway throughput with account checks",
                 "skipped": "needs wrk and nginx (apt-get install wrk nginx)"}]  # fmt: skip
    seconds = 2 if quick else 5
    with tempfile.TemporaryDirectory() as home:
        env = {"REGIONGATE_HOME": home, "REGIONGATE_DATA_SNAPSHOT": str(_snapshot())}
        store = store_from_url(f"sqlite:///{home}/regiongate.db")
        kid = KeyHasher(load_secret(Path(home) / "key-secret")).key_id("sk-bench")
        store.upsert_org("org-bench", actor="bench")
        store.add_key(Key(kid, "org-bench"), actor="bench")
        store.close()
        up, ng, on, off = bg._free_port(), bg._free_port(), bg._free_port(), bg._free_port()
        upstream = f"http://127.0.0.1:{up}"
        header = "Authorization: Bearer sk-bench"
        with (
            bg._nginx(up, ng),
            bg._process(bg._serve(on, upstream), on, env=env),
            bg._process(bg._serve(off, upstream), off,
                        env={**env, "REGIONGATE_ACCOUNTS_ENABLED": "false"}),
        ):  # fmt: skip
            url_on, url_off = (
                f"http://127.0.0.1:{on}/v1/models",
                f"http://127.0.0.1:{off}/v1/models",
            )
            bg._wrk(url_on, 1, header=header)  # warm-up
            bg._wrk(url_off, 1, header=header)
            with_acc, without = [], []
            for _ in range(2 if quick else 3):
                without.append(bg._wrk(url_off, seconds, header=header))
                with_acc.append(bg._wrk(url_on, seconds, header=header))
        store = store_from_url(f"sqlite:///{home}/regiongate.db")
        recorded = store.count_events("org-bench")
        store.close()
    w, b = statistics.median(with_acc), statistics.median(without)
    return [{"figure": "15", "name": "gateway throughput with account checks (serve + wrk)",
             "value": w, "unit": "/s", "baseline": "same gateway, accounts off",
             "baseline_value": b, "ratio": w / b, "target": ">=0.90x", "met": w / b >= 0.9,
             "note": f"every request keyed (HMAC key id, state check, one event each, SQLite "
             f"store); {recorded:,} events recorded; "
             f"wrk 1 thread, 32 connections, {seconds} s"}]  # fmt: skip


def _snapshot() -> Path:
    from regiongate.paths import snapshot_path

    return snapshot_path()


def run(quick: bool) -> list[dict[str, Any]]:
    return [*fig_ingest(quick), *fig_account_throughput(quick)]


if __name__ == "__main__":
    for row in run("--quick" in sys.argv):
        print(row)
