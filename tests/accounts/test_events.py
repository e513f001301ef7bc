"""The event path: batches reach the store; a real outage spools to disk and replays exactly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regiongate.accounts.events import EventSink, event_id_factory
from regiongate.accounts.model import Event
from regiongate.accounts.store import Store, StoreUnavailable, store_from_url
from regiongate.accounts.store.sql import SQLStore
from tests.accounts.outage import Outage
from tests.accounts.stores import PG_URL, open_store


def make_events(n: int, org: str = "org-e", start: int = 0) -> list[Event]:
    now = time.time()
    return [
        Event(f"ev-{org}-{i}", org, "kid_x", now, "CN", "", "flag", "unsupported-territory", True)
        for i in range(start, start + n)
    ]


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store("sqlite", tmp_path)


@pytest.fixture
def pg_behind_outage() -> Iterator[tuple[SQLStore, Outage]]:
    try:
        store_from_url(PG_URL).close()
    except StoreUnavailable as exc:
        pytest.skip(f"PostgreSQL not answering: {exc}")
    with Outage(5432) as outage:
        store = SQLStore(f"postgresql://postgres@127.0.0.1:{outage.port}/test", connect_timeout=1)
        store.migrate()
        store.truncate_for_tests()
        yield store, outage
        outage.restore()
        store.truncate_for_tests()
        store.close()


def test_event_ids_unique() -> None:
    a, b = event_id_factory(), event_id_factory()
    ids = {a() for _ in range(10_000)} | {b() for _ in range(10_000)}
    assert len(ids) == 20_000


def test_batches_reach_the_store(sqlite_store: Store, tmp_path: Path) -> None:
    written: list[int] = []
    sink = EventSink(sqlite_store, tmp_path / "spool", batch_size=1000,
                     on_written=lambda b: written.append(len(b)))  # fmt: skip
    sink.start()
    for e in make_events(5000):
        sink.put(e)
    assert sink.flush(20)
    sink.close()
    assert sqlite_store.count_events() == 5000
    assert sink.accepted == sink.acknowledged == sink.written == 5000
    assert sum(written) == 5000 and max(written) <= 1000
    assert sink.spooled == 0 and not (tmp_path / "spool" / "events.spool").exists()


class SlowStore:
    """The SQLite store, with each batch taking ``delay`` seconds longer to write."""

    def __init__(self, store: Store, delay: float) -> None:
        self.store = store
        self.delay = delay

    def add_events(self, batch: list[Event]) -> int:
        time.sleep(self.delay)
        return self.store.add_events(batch)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_a_steady_stream_is_written_in_batches_per_interval(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """Under a steady stream, what arrives while a batch is written waits for the next
    interval (with what comes meanwhile) instead of going out at once as a batch of a few:
    at most one partial batch per flush interval, however long each write takes."""
    written: list[int] = []
    interval, delay = 0.1, 0.01
    sink = EventSink(SlowStore(sqlite_store, delay), tmp_path / "spool",  # type: ignore[arg-type]
                     batch_size=10_000, flush_interval=interval,
                     on_written=lambda b: written.append(len(b)))  # fmt: skip
    sink.start()
    events = make_events(1200)
    started = time.monotonic()
    for i, e in enumerate(events):
        sink.put(e)
        if i % 10 == 9:
            time.sleep(0.005)  # ~2,000 events a second for ~0.6 s
    assert sink.flush(20)
    elapsed = time.monotonic() - started
    sink.close()
    assert sum(written) == 1200 == sqlite_store.count_events()
    # Writing whatever was queued after each write made a batch every ~delay seconds.
    assert len(written) <= elapsed / interval + 2, (len(written), elapsed, written)


def test_outage_spools_and_replays_exactly(
    pg_behind_outage: tuple[SQLStore, Outage], tmp_path: Path
) -> None:
    store, outage = pg_behind_outage
    sink = EventSink(store, tmp_path / "spool", batch_size=500, retry_interval=0.2)
    sink.start()
    for e in make_events(2000):
        sink.put(e)
    assert sink.flush(20)
    outage.cut()
    for e in make_events(3000, start=2000):
        sink.put(e)
    deadline = time.time() + 20
    while sink.acknowledged < 5000 and time.time() < deadline:
        time.sleep(0.05)
    assert sink.acknowledged == 5000  # every event durable: in the store or the spool
    assert not sink.store_up and sink.spooled == 3000
    assert (tmp_path / "spool" / "events.spool").stat().st_size > 0
    outage.restore()
    assert sink.flush(30), "spool not replayed after recovery"
    sink.close()
    assert store.count_events() == 5000  # exact: nothing lost, nothing twice
    assert sink.replayed == 3000
    assert list((tmp_path / "spool").iterdir()) == []


def test_spool_left_by_a_dead_process_is_replayed_idempotently(
    sqlite_store: Store, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    events = make_events(300)
    sqlite_store.add_events(events[:100])  # the dead process had written some of them already
    lines = [json.dumps(e.to_dict()) for e in events]
    # ... and died mid-write: a torn last line, never acknowledged.
    (spool / "events.spool").write_text("\n".join(lines) + '\n{"id": "ev-torn", "org"')
    sink = EventSink(sqlite_store, spool)
    sink.start()
    assert sink.flush(20)
    sink.close()
    assert sqlite_store.count_events() == 300
    assert sink.replayed == 200


def test_full_queue_spills_to_the_spool(sqlite_store: Store, tmp_path: Path) -> None:
    sink = EventSink(sqlite_store, tmp_path / "spool", queue_size=100)  # writer not started
    for e in make_events(250):
        sink.put(e)
    assert sink.pending == 100 and sink.spooled == 150 and sink.acknowledged == 150
    sink.start()
    assert sink.flush(20)
    sink.close()
    assert sqlite_store.count_events() == 250


def test_close_drains_to_the_store(sqlite_store: Store, tmp_path: Path) -> None:
    sink = EventSink(sqlite_store, tmp_path / "spool", flush_interval=5)
    sink.start()
    for e in make_events(1234):
        sink.put(e)
    sink.close()
    assert sqlite_store.count_events() == 1234 and sink.acknowledged == 1234
