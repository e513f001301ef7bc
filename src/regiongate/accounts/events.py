"""Events leave the request path through a bounded queue and reach the store in batches.

``EventSink.put`` is all a request pays: an append to a deque. A writer thread takes batches
(up to ``batch_size``, or whatever arrived within ``flush_interval``) and writes them to the
store. An event is *acknowledged* once it is committed in the store or fsynced to the spool;
``acknowledged`` counts them (it is exported as a metric), and nothing acknowledged is lost:

- the store is down → the batch is appended to the spool (one JSON line per event, fsync) and
  the writer retries the store every ``retry_interval``; when it answers, the spool is replayed
  in batches and removed. Event ids make the replay idempotent: a replay interrupted by a
  crash is simply replayed again, and nothing is counted twice.
- the queue is full (the store is slower than the traffic) → the event goes straight to the
  spool, so the queue stays bounded.
- a clean shutdown (``close``) drains the queue to the store or the spool.

An event still in the queue when the process is killed was never acknowledged. The spool is
read back on start, so a spool left by a killed process is replayed by the next one.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from regiongate.accounts.model import Event
from regiongate.accounts.store.base import Store, StoreUnavailable

__all__ = ["EventSink", "event_id_factory"]

log = logging.getLogger("regiongate.events")

_SPOOL_NAME: Final = "events.spool"


def event_id_factory() -> Callable[[], str]:
    """Unique event ids, cheap enough for every request: a random per-process prefix and a
    counter (``os.urandom`` per event would cost a system call each)."""
    prefix = f"e{int(time.time()):x}{os.urandom(6).hex()}-"
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):x}"


class EventSink:
    def __init__(
        self,
        store: Store,
        spool_dir: Path,
        *,
        batch_size: int = 5000,
        queue_size: int = 100_000,
        flush_interval: float = 0.05,
        retry_interval: float = 1.0,
        on_written: Callable[[Sequence[Event]], None] | None = None,
    ) -> None:
        self.store = store
        self.spool_dir = spool_dir
        self.spool_path = spool_dir / _SPOOL_NAME
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.on_written = on_written
        self._queue: deque[Event] = deque()
        self._spool_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.store_up = True
        # Counters (read by /metrics; written by one thread each, or under the spool lock).
        self.accepted = 0
        self.acknowledged = 0
        self.written = 0  # new rows in the store (replays excluded)
        self.spooled = 0
        self.replayed = 0
        self._replays = 0
        self._busy = False

    # --- request path --------------------------------------------------------------------------

    def put(self, event: Event) -> None:
        self.accepted += 1
        if len(self._queue) >= self.queue_size:
            self._spool([event])  # overload: the queue stays bounded, the event is kept
            return
        self._queue.append(event)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def spool_size(self) -> int:
        try:
            return self.spool_path.stat().st_size
        except OSError:
            return 0

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._run, name="regiongate-events", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Drain the queue (to the store, or the spool if it is down) and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._queue:  # the thread did not finish in time, or never ran
            self._spool(self._drain(len(self._queue)))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty and the spool replayed (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.acknowledged >= self.accepted and not self._queue and not self._busy
            if done and self.store_up and not self._spool_files():
                return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def _spool_files(self) -> list[Path]:
        files = list(self.spool_dir.glob("events.replay-*"))
        if self.spool_path.exists():
            files.append(self.spool_path)
        return files

    # --- writer thread -------------------------------------------------------------------------

    def _drain(self, n: int) -> list[Event]:
        out = []
        popleft = self._queue.popleft
        for _ in range(n):
            try:
                out.append(popleft())
            except IndexError:
                break
        return out

    def _run(self) -> None:
        next_retry = 0.0
        replay_due = self.spool_path.exists() or any(self.spool_dir.glob("events.replay-*"))
        while True:
            stopping = self._stop.is_set()
            if not stopping and len(self._queue) < self.batch_size:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
            now = time.monotonic()
            if (replay_due or not self.store_up) and now >= next_retry:
                if self._replay():
                    replay_due = False
                else:
                    next_retry = now + self.retry_interval
            while self._queue:
                # Busy from before the batch leaves the queue until its rules have run, so
                # that flush() cannot see an empty queue with a batch in between.
                self._busy = True
                batch = self._drain(self.batch_size)
                if self.store_up and not replay_due:
                    try:
                        self.written += self.store.add_events(batch)
                    except StoreUnavailable as exc:
                        log.error(
                            "event store unavailable, spooling to %s: %s", self.spool_path, exc
                        )
                        self.store_up = False
                        replay_due = True
                        next_retry = time.monotonic() + self.retry_interval
                    except Exception:
                        # A bug or a refused row must not lose the batch: keep it for replay.
                        log.exception("event batch not written; spooled for replay")
                        self.store_up = False
                        replay_due = True
                        next_retry = time.monotonic() + self.retry_interval
                    else:
                        self.acknowledged += len(batch)
                        self._notify(batch)
                        if stopping or len(self._queue) >= self.batch_size:
                            continue
                        # Less than a batch left: it waits for the next interval with what
                        # arrives meanwhile. Written at once, the few events that came in
                        # during a write made batches of tens under load, each paying a
                        # statement and a commit (figure 15; docs/performance.md).
                        break
                self._spool(batch)
                if not stopping:
                    break  # back to the top: wait, then retry the store
            self._busy = False
            if stopping and not self._queue:
                if replay_due or self._spool_files():
                    self._replay()
                return

    def _notify(self, batch: Sequence[Event]) -> None:
        if self.on_written is not None:
            try:
                self.on_written(batch)
            except StoreUnavailable as exc:
                log.warning("account rules not evaluated (store unavailable): %s", exc)
            except Exception:
                log.exception("account rules failed on a written batch")

    # --- spool ---------------------------------------------------------------------------------

    def _spool(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        data = "".join(json.dumps(e.to_dict(), separators=(",", ":")) + "\n" for e in batch)
        with self._spool_lock:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.spool_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, data.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self.spooled += len(batch)
            self.acknowledged += len(batch)

    def _replay(self) -> bool:
        """Write the spool to the store and remove it. ``True`` when all of it is in."""
        while True:
            with self._spool_lock:
                try:
                    self.store.ping()
                except Exception as exc:  # StoreUnavailable, or a driver error while down
                    log.debug("store still unavailable: %s", exc)
                    self.store_up = False
                    return False
                # Move the spool aside: events spooled while we replay go to a new file.
                if self.spool_path.exists():
                    self._replays += 1
                    aside = self.spool_dir / f"events.replay-{os.getpid()}-{self._replays}"
                    os.replace(self.spool_path, aside)
                pending = sorted(self.spool_dir.glob("events.replay-*"))
                if not pending:
                    self.store_up = True
                    return True
            for path in pending:
                if not self._replay_file(path):
                    return False

    def _replay_file(self, path: Path) -> bool:
        batch: list[Event] = []
        total = 0
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for lineno, line in enumerate(fh, 1):
                    try:
                        batch.append(Event.from_dict(json.loads(line)))
                    except (ValueError, KeyError, TypeError):
                        # A torn last line from a crash mid-write: never acknowledged.
                        log.warning("%s:%d: unreadable spooled event skipped", path, lineno)
                        continue
                    if len(batch) >= self.batch_size:
                        self._write_replayed(batch)
                        total += len(batch)
                        batch = []
                if batch:
                    self._write_replayed(batch)
                    total += len(batch)
        except StoreUnavailable as exc:
            log.error("spool replay interrupted, will retry: %s", exc)
            self.store_up = False
            return False
        path.unlink()
        log.warning("replayed %d spooled events from %s", total, path)
        return True

    def _write_replayed(self, batch: list[Event]) -> None:
        new = self.store.add_events(batch)
        self.replayed += new
        self.written += new
        self._notify(batch)
