"""One behaviour suite, every backend: SQLite, the real PostgreSQL and the real Redis."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regiongate.accounts.model import Event, Key, Payment, State, TransitionError
from regiongate.accounts.store import Store, StoreUnavailable, store_from_url
from tests.accounts.stores import BACKENDS, open_store


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from open_store(request.param, tmp_path)


def ev(i: int, org: str = "org-a", *, strike: bool = True, at: float | None = None) -> Event:
    return Event(
        id=f"ev-{org}-{i}",
        org=org,
        key_id="kid-1",
        at=time.time() if at is None else at,
        territory="CN" if strike else "US",
        flags="vpn" if i % 2 else "",
        action="flag" if strike else "allow",
        rule="unsupported-territory" if strike else "supported-territory",
        strike=strike,
    )


def test_orgs_and_keys(store: Store) -> None:
    org = store.upsert_org("org-a", name="Acme", email="ops@acme.test", actor="test")
    assert (org.id, org.name, org.email, org.state) == (
        "org-a",
        "Acme",
        "ops@acme.test",
        State.ACTIVE,
    )
    store.upsert_org("org-a", name="Acme Ltd", actor="test")  # email kept
    again = store.get_org("org-a")
    assert again is not None and again.name == "Acme Ltd" and again.email == "ops@acme.test"
    assert store.get_org("nobody") is None
    store.add_key(Key("kid-1", "org-a", "prod"), actor="test")
    store.add_key(Key("kid-2", "org-a", "dev"), actor="test")
    with pytest.raises(ValueError, match="does not exist"):
        store.add_key(Key("kid-3", "org-nope"), actor="test")
    store.upsert_org("org-b", actor="test")
    with pytest.raises(ValueError, match="another organisation"):
        store.add_key(Key("kid-1", "org-b"), actor="test")
    assert store.key_orgs() == {"kid-1": "org-a", "kid-2": "org-a"}
    assert store.revoke_key("kid-2", actor="test") is True
    assert store.revoke_key("kid-2", actor="test") is False
    assert store.revoke_key("kid-none", actor="test") is False
    assert store.key_orgs() == {"kid-1": "org-a"}
    key = store.get_key("kid-2")
    assert key is not None and key.revoked and key.org == "org-a" and key.label == "dev"
    assert [k.key_id for k in store.list_keys("org-a")] == ["kid-1", "kid-2"]
    assert [o.id for o in store.list_orgs()] == ["org-a", "org-b"]


@pytest.mark.parametrize("bad", ["", "x" * 201, "a\nb", "\x00"])
def test_bad_ids_are_refused(store: Store, bad: str) -> None:
    with pytest.raises(ValueError):
        store.upsert_org(bad, actor="test")


def test_events_are_idempotent_by_id(store: Store) -> None:
    batch = [ev(i) for i in range(1000)]
    assert store.add_events(batch) == 1000
    assert store.add_events(batch) == 0  # a replay
    assert store.add_events([*batch[:10], ev(1000), ev(1001)]) == 2
    assert store.add_events([]) == 0
    assert store.count_events() == 1002
    assert store.count_events("org-a") == 1002
    assert store.count_events("org-b") == 0


def test_event_text_survives_round_trip(store: Store) -> None:
    odd = Event("ev\\x\tq", "org\\a\tb", "kid\n1", 1.5, None, "tor,vpn", "block", "tor", True)
    assert store.add_events([odd]) == 1
    assert store.add_events([odd]) == 0
    assert store.strike_events("org\\a\tb", 0) == (1, ["ev\\x\tq"])


@pytest.mark.parametrize("n", [1, 255, 256, 2001])
def test_sqlite_events_round_trip_exactly(tmp_path: Path, n: int) -> None:
    """SQLite takes a batch as multi-row INSERTs of a few fixed sizes: every field comes back
    as it went in (times to the last bit, in order), and a replay inserts nothing."""
    from regiongate.accounts.store import sql

    store = store_from_url(f"sqlite:///{tmp_path}/events.db")  # the schema made
    assert isinstance(store, sql.SQLStore)
    rng = random.Random(7)
    batch = [
        Event(
            f"ev-{i}",
            "org-\u00e9\u4e2d",
            "kid-\U0001f600",
            rng.uniform(0, 2e9) + rng.random(),
            None if i % 3 else "UA-43",
            "tor,vpn" if i % 2 else "",
            "block",
            "tor",
            bool(i % 2),
            'user="x";lang=zh' * (i % 2),
        )
        for i in range(n - 1)
    ]
    batch.append(Event("ev-tiny", "org-a", "k", 5e-324, "CN", "", "allow", "", False))
    assert store.add_events(batch) == len(batch)
    assert store.add_events(batch) == 0  # a replay
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, org, key_id, at, territory, flags, action, rule, strike, detail "
            "FROM rg_events ORDER BY rowid"
        ).fetchall()
    assert [Event(*r[:8], bool(r[8]), r[9]) for r in rows] == batch
    store.close()


def test_sqlite_event_statements_are_few() -> None:
    from regiongate.accounts.store.sql import _EVENT_ROWS, _chunk_sizes

    sizes = {n: _chunk_sizes(n) for n in range(0, 3 * _EVENT_ROWS)}
    assert all(sum(s) == n for n, s in sizes.items())
    used = {size for s in sizes.values() for size in s}
    assert max(used) == _EVENT_ROWS and len(used) <= _EVENT_ROWS.bit_length()


def test_strike_window(store: Store) -> None:
    now = time.time()
    old = [ev(i, at=now - 7200) for i in range(5)]
    recent = [ev(i, at=now - 60 + i) for i in range(5, 12)]
    clean = [ev(i, strike=False) for i in range(12, 20)]
    store.add_events([*old, *recent, *clean])
    n, ids = store.strike_events("org-a", now - 3600, limit=3)
    assert n == 7
    assert ids == ["ev-org-a-11", "ev-org-a-10", "ev-org-a-9"]  # newest first
    assert store.strike_events("org-a", 0)[0] == 12
    assert store.strike_events("org-b", 0) == (0, [])


def test_payments(store: Store) -> None:
    p = Payment("pay-1", "org-p", 100.0, card_country="RU", billing_country="DE", currency="EUR",
                amount=20.0)  # fmt: skip
    assert store.add_payment(p, actor="import") is True
    assert store.add_payment(p, actor="import") is False
    assert store.list_payments("org-p") == [p]
    assert store.get_org("org-p") is not None  # created on first sight
    entries = [e for e in store.audit(org="org-p") if e.action == "payment"]
    assert len(entries) == 1 and entries[0].evidence == ("pay-1",)


def test_transitions_and_audit(store: Store) -> None:
    store.upsert_org("org-a", actor="test")
    org = store.transition("org-a", State.WARNED, actor="rule:strikes", reason="12 strikes",
                           evidence=["ev-1", "ev-2"])  # fmt: skip
    assert org is not None and org.state is State.WARNED and org.version == 1
    with pytest.raises(TransitionError, match="not allowed"):
        store.transition("org-a", State.APPEAL_PENDING, actor="x", reason="r")
    # Same state: nothing to do.
    assert store.transition("org-a", State.WARNED, actor="x", reason="r") is None
    # An expectation that does not hold: nothing done.
    assert store.transition("org-a", State.SUSPENDED, actor="x", reason="r",
                            expect=[State.ACTIVE]) is None  # fmt: skip
    suspended = store.transition("org-a", State.SUSPENDED, actor="admin:ops", reason="payments")
    assert suspended is not None and suspended.state is State.SUSPENDED
    assert store.refused_orgs() == {"org-a": State.SUSPENDED}
    store.transition("org-a", State.APPEAL_PENDING, actor="admin:ops", reason="appeal filed")
    assert store.refused_orgs() == {"org-a": State.APPEAL_PENDING}
    store.transition("org-a", State.REINSTATED, actor="admin:ops", reason="appeal granted")
    assert store.refused_orgs() == {}
    forced = store.transition("org-a", State.APPEAL_PENDING, actor="admin:ops", reason="odd",
                              force=True)  # fmt: skip
    assert forced is not None
    states = [(e.from_state, e.to_state, e.actor) for e in store.audit(org="org-a")
              if e.action == "state"]  # fmt: skip
    assert states == [
        ("active", "warned", "rule:strikes"),
        ("warned", "suspended", "admin:ops"),
        ("suspended", "appeal_pending", "admin:ops"),
        ("appeal_pending", "reinstated", "admin:ops"),
        ("reinstated", "appeal_pending", "admin:ops"),
    ]
    first = next(e for e in store.audit(org="org-a") if e.action == "state")
    assert first.evidence == ("ev-1", "ev-2") and first.reason == "12 strikes"
    seqs = [e.seq for e in store.audit()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_transition_creates_unknown_org(store: Store) -> None:
    org = store.transition("org-new", State.SUSPENDED, actor="rule:payments", reason="RU card")
    assert org is not None and org.state is State.SUSPENDED
    assert store.get_org("org-new") is not None


def test_racing_transitions_apply_once(store: Store) -> None:
    store.upsert_org("org-r", actor="test")
    results: list[object] = []

    def go() -> None:
        results.append(store.transition("org-r", State.SUSPENDED, actor="rule", reason="race",
                                        expect=[State.ACTIVE, State.WARNED]))  # fmt: skip

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert [e.to_state for e in store.audit(org="org-r") if e.action == "state"] == ["suspended"]


def test_change_feed(store: Store) -> None:
    start = store.last_seq()
    store.upsert_org("org-c", actor="test")
    store.add_key(Key("kid-c", "org-c"), actor="test")
    store.add_events([ev(1, "org-c")])  # events are not changes
    store.transition("org-c", State.SUSPENDED, actor="test", reason="r")
    store.revoke_key("kid-c", actor="test")
    changes = store.changes_since(start)
    assert [c.action for c in changes] == ["key.add", "state", "key.revoke"]
    assert store.changes_since(changes[-1].seq) == []
    assert store.last_seq() >= changes[-1].seq


def test_unreachable_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        store_from_url("postgresql://postgres@127.0.0.1:1/test")
    with pytest.raises(StoreUnavailable):
        store_from_url("redis://127.0.0.1:1/0")


@pytest.mark.parametrize("url", ["mysql://x", "nonsense", "http://x"])
def test_unknown_store_url(url: str) -> None:
    with pytest.raises(ValueError, match="store URL"):
        store_from_url(url)
