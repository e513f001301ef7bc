"""Real gateway processes (``regiongate serve``) sharing one PostgreSQL or Redis store: strikes counted
across them, a suspension enforced by all within a second, and ``kill -9`` under load losing
no acknowledged event."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from regiongate.accounts.identity import KeyHasher, load_secret
from regiongate.accounts.model import Key, State
from regiongate.accounts.store import Store, StoreUnavailable, store_from_url
from tests.accounts.stores import PG_URL, REDIS_URL
from tests.enforce.servers import free_port

US, CN = "3.0.0.1", "4.0.0.1"
POLICY = """
name = "processes"
version = "1"
supported = ["US", "CA"]
notice_from = 2024-06-25
enforce_from = 2024-07-09
[accounts]
strikes = 5
window = "1h"
"""


REDIS_DB15 = REDIS_URL.rsplit("/", 1)[0] + "/15"  # a database of its own: flushed by the test


def _open(url: str) -> Store:
    try:
        return store_from_url(url)
    except StoreUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{url} not answering: {exc}")
        pytest.skip(f"{url} not answering: {exc}")


@pytest.fixture(params=["postgresql", "redis"])
def shared(request: pytest.FixtureRequest) -> Iterator[tuple[str, Store]]:
    """The store every gateway process of a test shares, empty, and its URL."""
    url = PG_URL if request.param == "postgresql" else REDIS_DB15
    store = _open(url)
    store.truncate_for_tests()  # type: ignore[attr-defined]
    yield url, store
    store.truncate_for_tests()  # type: ignore[attr-defined]
    store.close()


@pytest.fixture
def pg() -> Iterator[Store]:
    store = _open(PG_URL)
    store.truncate_for_tests()  # type: ignore[attr-defined]
    yield store
    store.truncate_for_tests()  # type: ignore[attr-defined]
    store.close()


class Gateway:
    def __init__(
        self, home: Path, snapshot: Path, name: str, upstream: int, store_url: str = PG_URL
    ) -> None:
        self.port = free_port()
        self.home = home
        config = home / f"{name}.toml"
        policy = home / "policy.toml"
        policy.write_text(POLICY)
        config.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
upstream = "http://127.0.0.1:{upstream}"
[policy]
source = "{policy}"
watch = false
[data]
snapshot = "{snapshot}"
[store]
url = "{store_url}"
[accounts]
spool_dir = "{home / ("spool-" + name)}"
"""
        )
        env = {**os.environ, "REGIONGATE_HOME": str(home)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "regiongate", "serve", "--config", str(config),
             "--log-level", "warning"],
            env=env,
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.proc)

    sent: ClassVar[dict[str, int]] = {}  # requests per key, over every gateway

    def get(self, key: str, client: str) -> tuple[int, str]:
        Gateway.sent[key] = Gateway.sent.get(key, 0) + 1
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/models",
            headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": client},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        m = re.search(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@contextlib.contextmanager
def upstream(home: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "regiongate", "demo-upstream", "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "REGIONGATE_HOME": str(home)},
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def register(store: Store, home: Path, org: str, key: str) -> None:
    kid = KeyHasher(load_secret(home / "key-secret")).key_id(key)
    store.upsert_org(org, actor="test")
    store.add_key(Key(kid, org), actor="test")


def wait_for(predicate: object, timeout: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


def test_two_gateways_share_strikes_and_suspensions(
    shared: tuple[str, Store], tmp_path: Path, tiny_snapshot_path: Path
) -> None:
    url, pg = shared
    Gateway.sent.clear()
    with upstream(tmp_path) as up:
        # The key secret is shared through REGIONGATE_HOME; create it before both start.
        register(pg, tmp_path, "org-a", "sk-a")
        register(pg, tmp_path, "org-b", "sk-b")
        a = Gateway(tmp_path, tiny_snapshot_path, "a", up, url)
        b = Gateway(tmp_path, tiny_snapshot_path, "b", up, url)
        try:
            assert a.get("sk-a", US)[0] == 200 and b.get("sk-a", US)[0] == 200
            # Strikes from both processes add up: 3 on A, 2 on B make 5.
            for _ in range(3):
                assert a.get("sk-a", CN)[0] == 403
            for _ in range(2):
                assert b.get("sk-a", CN)[0] == 403
            wait_for(lambda: (o := pg.get_org("org-a")) is not None
                     and o.state is State.SUSPENDED, 10)  # fmt: skip
            wait_for(lambda: a.get("sk-a", US)[0] == 403 and b.get("sk-a", US)[0] == 403, 2)
            status, body = b.get("sk-a", US)
            assert status == 403 and "account_deactivated" in body
            # A suspension made through one is enforced by both within a second.
            assert a.get("sk-b", US)[0] == 200 and b.get("sk-b", US)[0] == 200
            pg.transition("org-b", State.SUSPENDED, actor="admin:test", reason="manual")
            seconds = wait_for(
                lambda: a.get("sk-b", US)[0] == 403 and b.get("sk-b", US)[0] == 403, 1.0
            )
            assert seconds <= 1.0
            entry = [e for e in pg.audit(org="org-a") if e.action == "state"][-1]
            assert entry.actor == "rule:strikes" and len(entry.evidence) == 5
        finally:
            a.stop()
            b.stop()
        # A clean stop drains every queue: every request made is an event in the store.
        assert pg.count_events("org-a") == Gateway.sent["sk-a"]
        assert pg.count_events("org-b") == Gateway.sent["sk-b"]


def test_kill_9_under_load_loses_no_acknowledged_event(
    pg: Store, tmp_path: Path, tiny_snapshot_path: Path
) -> None:
    with upstream(tmp_path) as up:
        register(pg, tmp_path, "org-load", "sk-load")
        gw = Gateway(tmp_path, tiny_snapshot_path, "load", up)
        stop = threading.Event()
        sent = [0]

        def load() -> None:
            while not stop.is_set():
                try:
                    gw.get("sk-load", US if sent[0] % 3 else CN)
                except (OSError, http.client.HTTPException):  # the kill
                    return
                sent[0] += 1

        workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            acked = 0.0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline or acked < 200:
                acked = gw.metric("regiongate_events_acknowledged_total")
                time.sleep(0.05)
            gw.proc.send_signal(signal.SIGKILL)
            gw.proc.wait(10)
        finally:
            stop.set()
            for w in workers:
                w.join(10)
        assert acked >= 200
        stored = pg.count_events("org-load")
        # Every event acknowledged before the kill is in the store (or in the spool, which the
        # next start replays).
        spool = tmp_path / "spool-load"
        spooled = sum(1 for p in spool.glob("events*") for _ in p.open()) if spool.exists() else 0
        assert stored + spooled >= acked, (stored, spooled, acked)
        # A restart replays whatever the killed process had spooled; still no duplicates.
        gw2 = Gateway(tmp_path, tiny_snapshot_path, "load", up)
        gw2.stop()
        assert pg.count_events("org-load") >= acked
