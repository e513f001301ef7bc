"""The review queue and event details, on every backend (SQLite, PostgreSQL, Redis), and
migration 0003 from a database at 0002."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from regiongate.accounts.model import REVIEW_DECISIONS, Event, Review, State
from regiongate.accounts.store import Store, StoreUnavailable
from regiongate.accounts.store.sql import SQLStore
from tests.accounts.stores import BACKENDS, open_store, pg_private_schema

MIGRATIONS = Path(__file__).parents[2] / "src/regiongate/accounts/store/migrations"
T = 1_700_000_000.0
WHY = {"signals": {"lang": 0.4, "tz": 0.3}, "events": ["ev-1", "ev-2"]}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from open_store(request.param, tmp_path)


def review_entries(store: Store, org: str, action: str) -> list[tuple[str, ...]]:
    return [e.evidence for e in store.audit(org=org) if e.action == action]


# --- opening -------------------------------------------------------------------------------------


def test_open_review_is_listed_open(store: Store) -> None:
    review, opened = store.open_review("org-a", 0.82, WHY, actor="rule:circumvention", at=T)
    assert opened is True
    assert review.id.startswith("rv_") and review.org == "org-a"
    assert (review.opened_at, review.updated, review.score) == (T, T, 0.82)
    assert review.explanation == WHY and review.status == "open"
    assert (review.closed_at, review.closed_by, review.note) == (None, None, "")
    assert store.list_reviews() == [review]
    assert store.get_review(review.id) == review
    org = store.get_org("org-a")  # created on first sight, and not refused for it
    assert org is not None and org.state is State.ACTIVE
    [entry] = [e for e in store.audit(org="org-a") if e.action == "review.open"]
    assert entry.evidence == (review.id,) and entry.detail == {"score": 0.82}
    assert entry.actor == "rule:circumvention" and entry.at == T


def test_opening_again_refreshes_the_open_review(store: Store) -> None:
    first, _ = store.open_review("org-a", 0.6, {"v": 1}, actor="rule", at=T)
    again, opened = store.open_review("org-a", 0.9, {"v": 2}, actor="rule", at=T + 60)
    assert opened is False
    assert again.id == first.id and again.opened_at == T
    assert (again.score, again.explanation, again.updated) == (0.9, {"v": 2}, T + 60)
    assert store.get_review(first.id) == again
    assert store.list_reviews(status=None) == [again]
    assert review_entries(store, "org-a", "review.open") == [(first.id,)]  # no second entry


def test_get_review_unknown_is_none(store: Store) -> None:
    assert store.get_review("rv_nope") is None
    assert store.list_reviews() == []


@pytest.mark.parametrize("bad", ["", "x" * 201, "a\nb", "\x00"])
def test_open_review_refuses_bad_org_ids(store: Store, bad: str) -> None:
    with pytest.raises(ValueError, match="organisation id"):
        store.open_review(bad, 0.5, {}, actor="rule", at=T)
    assert store.list_reviews(status=None) == []


@pytest.mark.parametrize(
    ("score", "explanation", "at", "match"),
    [
        (float("nan"), {}, T, "score"),
        (float("inf"), {}, T, "score"),
        ("high", {}, T, "score"),
        (0.5, {"x": float("nan")}, T, "explanation"),
        (0.5, {"x": object()}, T, "explanation"),
        (0.5, ["not", "a", "dict"], T, "explanation"),
        (0.5, {}, float("nan"), "time"),
    ],
)
def test_open_review_refuses_bad_values(
    store: Store, score: object, explanation: object, at: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        store.open_review("org-a", score, explanation, actor="rule", at=at)  # type: ignore[arg-type]
    assert store.list_reviews(status=None) == []
    assert store.get_org("org-a") is None  # refused before anything was written


# --- closing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("decision", REVIEW_DECISIONS)
def test_close_with_each_decision(store: Store, decision: str) -> None:
    review, _ = store.open_review("org-a", 0.7, WHY, actor="rule", at=T)
    closed = store.close_review(
        review.id, decision, actor="admin:ops", note="looked at it", at=T + 300
    )
    assert closed is not None
    assert (closed.id, closed.status, closed.closed_at, closed.updated) == (
        review.id,
        decision,
        T + 300,
        T + 300,
    )
    assert (closed.closed_by, closed.note, closed.score, closed.opened_at) == (
        "admin:ops",
        "looked at it",
        0.7,
        T,
    )
    assert store.get_review(review.id) == closed
    assert store.list_reviews() == []
    assert store.list_reviews(status=decision) == [closed]
    [entry] = [e for e in store.audit(org="org-a") if e.action == "review.close"]
    assert entry.evidence == (review.id,) and entry.actor == "admin:ops" and entry.at == T + 300
    assert entry.detail == {"decision": decision, "note": "looked at it", "score": 0.7}
    # Closing is the store's part only: the decision's state change is the caller's.
    org = store.get_org("org-a")
    assert org is not None and org.state is State.ACTIVE


def test_closing_twice_or_unknown_is_none(store: Store) -> None:
    review, _ = store.open_review("org-a", 0.7, {}, actor="rule", at=T)
    assert store.close_review(review.id, "warned", actor="admin:a", at=T + 1) is not None
    assert store.close_review(review.id, "suspended", actor="admin:b", at=T + 2) is None
    after = store.get_review(review.id)
    assert after is not None and (after.status, after.closed_by) == ("warned", "admin:a")
    assert store.close_review("rv_nope", "dismissed", actor="admin:a", at=T) is None
    assert review_entries(store, "org-a", "review.close") == [(review.id,)]


@pytest.mark.parametrize(
    ("decision", "actor", "note", "at", "match"),
    [
        ("banned", "admin:a", "", T, "decision"),
        ("open", "admin:a", "", T, "decision"),
        ("", "admin:a", "", T, "decision"),
        ("warned", "", "", T, "actor"),
        ("warned", "admin:a", "n" * 2001, T, "note"),
        ("warned", "admin:a", "", float("inf"), "time"),
    ],
)
def test_close_review_refuses_bad_input(
    store: Store, decision: str, actor: str, note: str, at: float, match: str
) -> None:
    review, _ = store.open_review("org-a", 0.7, {}, actor="rule", at=T)
    with pytest.raises(ValueError, match=match):
        store.close_review(review.id, decision, actor=actor, note=note, at=at)
    assert store.get_review(review.id) == review  # still open, untouched
    assert review_entries(store, "org-a", "review.close") == []


def test_longest_note_is_kept(store: Store) -> None:
    review, _ = store.open_review("org-a", 0.7, {}, actor="rule", at=T)
    closed = store.close_review(review.id, "dismissed", actor="admin:a", note="n" * 2000, at=T)
    assert closed is not None and closed.note == "n" * 2000


def test_closed_review_lets_a_new_one_open(store: Store) -> None:
    first, _ = store.open_review("org-a", 0.6, {}, actor="rule", at=T)
    store.close_review(first.id, "dismissed", actor="admin:a", at=T + 10)
    second, opened = store.open_review("org-a", 0.8, {"again": True}, actor="rule", at=T + 20)
    assert opened is True and second.id != first.id and second.opened_at == T + 20
    assert [r.id for r in store.list_reviews()] == [second.id]
    assert [r.id for r in store.list_reviews(status=None, org="org-a")] == [second.id, first.id]
    assert review_entries(store, "org-a", "review.open") == [(first.id,), (second.id,)]


# --- listing -------------------------------------------------------------------------------------


def test_list_by_status_org_and_limit_newest_first(store: Store) -> None:
    ids: dict[str, str] = {}
    for i, org in enumerate(["org-a", "org-b", "org-c", "org-d"]):
        ids[org] = store.open_review(org, 0.5 + i / 10, {}, actor="rule", at=T + i)[0].id
    store.close_review(ids["org-b"], "warned", actor="admin:a", at=T + 100)
    store.close_review(ids["org-c"], "dismissed", actor="admin:a", at=T + 100)
    ids["org-b2"] = store.open_review("org-b", 0.9, {}, actor="rule", at=T + 200)[0].id

    def listed(**kw: object) -> list[str]:
        return [r.id for r in store.list_reviews(**kw)]  # type: ignore[arg-type]

    assert listed() == [ids["org-b2"], ids["org-d"], ids["org-a"]]
    assert listed(limit=2) == [ids["org-b2"], ids["org-d"]]
    assert listed(limit=0) == []
    assert listed(status=None) == [ids[o] for o in ("org-b2", "org-d", "org-c", "org-b", "org-a")]
    assert listed(status=None, limit=3) == [ids["org-b2"], ids["org-d"], ids["org-c"]]
    assert listed(status="warned") == [ids["org-b"]]
    assert listed(status="dismissed") == [ids["org-c"]]
    assert listed(status="suspended") == []
    assert listed(org="org-b") == [ids["org-b2"]]
    assert listed(org="org-b", status=None) == [ids["org-b2"], ids["org-b"]]
    assert listed(org="org-b", status=None, limit=1) == [ids["org-b2"]]
    assert listed(org="org-b", status="warned") == [ids["org-b"]]
    assert listed(org="org-c") == []
    assert listed(org="org-nobody", status=None) == []


def test_list_reviews_refuses_an_unknown_status(store: Store) -> None:
    with pytest.raises(ValueError, match="status"):
        store.list_reviews(status="closed")


def test_unreachable_store_says_so_for_reviews() -> None:
    from regiongate.accounts.store.redis import RedisStore

    for down in (
        SQLStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1),
        RedisStore("redis://127.0.0.1:1/0", connect_timeout=1),
    ):
        try:
            with pytest.raises(StoreUnavailable):
                down.open_review("org-a", 0.5, {}, actor="rule", at=T)
            with pytest.raises(StoreUnavailable):
                down.list_reviews()
            with pytest.raises(StoreUnavailable):
                down.close_review("rv_x", "warned", actor="admin:a", at=T)
        finally:
            down.close()


# --- races ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("known", [True, False], ids=["known-org", "new-org"])
def test_racing_openers_open_one_review(store: Store, known: bool) -> None:
    # A known organisation is the sharper race: creating a new one already serialises the
    # openers on SQL, so only there do two inserts meet the one-open-review index.
    if known:
        store.upsert_org("org-r", actor="test")
    results: list[tuple[Review, bool]] = []
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        results.append(store.open_review("org-r", 0.5 + i / 100, {"i": i}, actor="rule", at=T + i))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert sum(opened for _, opened in results) == 1
    assert len({r.id for r, _ in results}) == 1
    [review] = store.list_reviews(status=None, org="org-r")
    assert review.status == "open"
    assert len(review_entries(store, "org-r", "review.open")) == 1
    assert len([e for e in store.audit(org="org-r") if e.action == "org.create"]) == 1


def test_racing_closers_close_once(store: Store) -> None:
    review, _ = store.open_review("org-r", 0.5, {}, actor="rule", at=T)
    results: list[Review | None] = []
    barrier = threading.Barrier(6)

    def go(decision: str) -> None:
        barrier.wait()
        results.append(store.close_review(review.id, decision, actor="admin:a", at=T + 1))

    threads = [threading.Thread(target=go, args=(REVIEW_DECISIONS[i % 3],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    [closed] = [r for r in results if r is not None]
    assert store.get_review(review.id) == closed
    assert len(review_entries(store, "org-r", "review.close")) == 1


# --- event details -------------------------------------------------------------------------------


def detailed(i: int, detail: str = "") -> Event:
    return Event(f"ev-d-{i}", "org-d", "kid-1", T + i, "CN", "vpn", "flag", "tor", True, detail)


def test_events_with_detail_are_added_on_every_backend(store: Store) -> None:
    batch = [detailed(0), detailed(1, "user=ab12;lang=CN;tz=CN"), detailed(2, "x" * 500)]
    assert store.add_events(batch) == 3
    assert store.add_events(batch) == 0
    assert store.count_events("org-d") == 3


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("replay", [False, True], ids=["copy", "replay"])
def test_event_detail_round_trips_into_rg_events(
    backend: str, replay: bool, tmp_path: Path
) -> None:
    for store in open_store(backend, tmp_path):
        assert isinstance(store, SQLStore)
        batch = [
            detailed(0),
            detailed(1, "user=ab12;lang=CN;tz=CN;cloud=aws/ap-east-1"),
            detailed(2, "odd\ttab\\slash\nline"),
            detailed(3, "x" * 500),  # longer than the column: cut, not refused
        ]
        if replay:  # on PostgreSQL: the temporary-table path, not the straight COPY
            assert store.add_events(batch[:1]) == 1
        assert store.add_events(batch) == (3 if replay else 4)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, detail FROM rg_events ORDER BY id"))
            found = {r.id: r.detail for r in rows}
        assert found == {
            "ev-d-0": "",
            "ev-d-1": "user=ab12;lang=CN;tz=CN;cloud=aws/ap-east-1",
            "ev-d-2": "odd\ttab\\slash\nline",
            "ev-d-3": "x" * 400,
        }


# --- migration 0003 ------------------------------------------------------------------------------


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """PostgreSQL in a schema of its own, so that migrating does not touch the shared one."""
    yield from pg_private_schema("rg_review_test")


def alembic(store: SQLStore, action: str, revision: str) -> None:
    with store.engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, revision)


def version(store: SQLStore) -> str | None:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0003_upgrades_a_database_at_0002(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_schema_url")
    )
    old = SQLStore(url)
    try:
        alembic(old, "upgrade", "0002")  # what an installation before reviews has
        old.upsert_org("org-1", name="Acme", actor="test")
        with old.engine.begin() as conn:  # an event as the code before 0003 wrote it
            conn.execute(
                sa.text(
                    "INSERT INTO rg_events (id, org, key_id, at, territory, flags, action, "
                    "rule, strike) VALUES ('ev-old', 'org-1', 'kid', 1.0, 'CN', '', 'flag', "
                    "'tor', true)"
                )
            )
        assert "rg_reviews" not in sa.inspect(old.engine).get_table_names()
    finally:
        old.close()

    store = SQLStore(url)
    try:
        store.migrate()
        store.migrate()  # idempotent
        assert version(store) == "0003"
        assert "rg_reviews" in sa.inspect(store.engine).get_table_names()
        with store.engine.connect() as conn:
            detail = conn.execute(sa.text("SELECT detail FROM rg_events WHERE id = 'ev-old'"))
            assert detail.scalar_one() == ""  # old rows get the default
        org = store.get_org("org-1")
        assert org is not None and org.name == "Acme"  # the data is kept
        assert store.add_events([detailed(1, "lang=CN")]) == 1
        assert store.strike_events("org-1", 0) == (1, ["ev-old"])
        review, opened = store.open_review("org-1", 0.9, {}, actor="rule", at=T)
        assert opened and store.list_reviews() == [review]
        # The partial unique index is there: a second open review cannot be inserted.
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO rg_reviews (id, org, opened_at, score, updated) "
                    "VALUES ('rv_dup', 'org-1', 1.0, 0.5, 1.0)"
                )
            )

        alembic(store, "downgrade", "0002")
        assert version(store) == "0002"
        inspector = sa.inspect(store.engine)
        assert "rg_reviews" not in inspector.get_table_names()
        assert "detail" not in {c["name"] for c in inspector.get_columns("rg_events")}
        assert store.count_events() == 2  # the events themselves are kept
    finally:
        store.close()

    again = SQLStore(url)
    try:
        again.migrate()
        assert version(again) == "0003"
    finally:
        again.close()
