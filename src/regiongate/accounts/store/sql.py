"""The SQL store: SQLite (the embedded default, WAL) and PostgreSQL, on SQLAlchemy 2 Core.

The schema is created and upgraded by Alembic (``migrate()``; the migrations ship inside the
package). State changes use optimistic concurrency: ``UPDATE ... WHERE version = :seen``, so
two gateways racing to suspend the same organisation cannot both succeed, and the audit entry
is written in the same transaction as the change. Event batches are inserted with
``ON CONFLICT DO NOTHING`` on the event id (idempotent replay); on PostgreSQL through
``COPY`` into a temporary table first, which is what makes ingestion fast. An organisation
has at most one open review because a partial unique index (``rg_reviews_one_open``) says so:
a racing second insert does nothing, and its caller refreshes the winner's review instead.
"""

from __future__ import annotations

import functools
import io
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from regiongate.accounts.model import (
    ALLOWED,
    AuditEntry,
    Event,
    Key,
    Org,
    Payment,
    Review,
    State,
    TransitionError,
    new_id,
)
from regiongate.accounts.store.base import (
    StoreUnavailable,
    check_close,
    check_id,
    check_review_status,
    explanation_json,
    finite,
)
from regiongate.accounts.store.schema import audit, events, keys, orgs, payments, reviews

__all__ = ["SQLStore"]

T = TypeVar("T")
_CHANGE_ACTIONS = ("state", "key.add", "key.revoke")
_MIGRATIONS = Path(__file__).with_name("migrations")
_DETAIL_MAX = 400  # rg_events.detail is VARCHAR(400): PostgreSQL refuses a longer one


def _engine_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes (kill -9)
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class SQLStore:
    """A store on SQLite (``sqlite:///PATH``) or PostgreSQL (``postgresql://...``)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.dialect = "postgresql" if url.startswith(("postgresql", "postgres")) else "sqlite"
        args: dict[str, Any] = {}
        if self.dialect == "sqlite":
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            args["connect_args"] = {"timeout": 10, "check_same_thread": False}
        else:
            args["connect_args"] = {"connect_timeout": max(1, int(connect_timeout))}
            args["pool_pre_ping"] = True
            args["pool_size"] = 8
        try:
            self.engine: Engine = sa.create_engine(_engine_url(url), **args)
        except (sa_exc.ArgumentError, ImportError, ValueError) as exc:
            raise ValueError(f"store URL {url!r}: {exc}") from None
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _on_sqlite_connect)

    # --- plumbing ------------------------------------------------------------------------------

    def _run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction; connection failures become ``StoreUnavailable``."""
        try:
            with self.engine.begin() as conn:
                return fn(conn)
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise StoreUnavailable(f"store {self._safe_url()}: {_first_line(exc)}") from exc
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(f"store {self._safe_url()}: {_first_line(exc)}") from exc
            raise

    def _safe_url(self) -> str:
        return sa.engine.make_url(_engine_url(self.url)).render_as_string(hide_password=True)

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        def upgrade(conn: Connection) -> None:
            cfg = Config()
            cfg.set_main_option("script_location", str(_MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

        self._run(upgrade)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        self._run(lambda c: c.execute(sa.text("SELECT 1")).scalar())

    def _audit(
        self,
        conn: Connection,
        *,
        org: str | None,
        actor: str,
        action: str,
        reason: str = "",
        from_state: str | None = None,
        to_state: str | None = None,
        evidence: Iterable[str] = (),
        detail: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        conn.execute(
            audit.insert().values(
                at=time.time() if at is None else at,
                org=org,
                actor=actor,
                action=action,
                reason=reason,
                from_state=from_state,
                to_state=to_state,
                evidence=json.dumps(list(evidence)),
                detail=json.dumps(detail or {}, sort_keys=True),
            )
        )

    def _insert_ignore(self, conn: Connection, table: sa.Table, row: dict[str, Any]) -> bool:
        """Insert ``row`` unless its key exists; whether it was inserted. (RETURNING, since
        the driver's rowcount is not reliable for ON CONFLICT DO NOTHING.)"""
        insert: Any
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        pk = next(iter(table.primary_key.columns))
        statement = insert(table).values(row).on_conflict_do_nothing().returning(pk)
        return conn.execute(statement).first() is not None

    # --- organisations and keys ----------------------------------------------------------------

    def _ensure_org(self, conn: Connection, org_id: str, actor: str) -> None:
        exists = conn.execute(sa.select(orgs.c.id).where(orgs.c.id == org_id)).first()
        if exists is None and self._insert_ignore(conn, orgs, {"id": org_id, "state": "active"}):
            self._audit(conn, org=org_id, actor=actor, action="org.create")

    def upsert_org(
        self, org_id: str, *, name: str | None = None, email: str | None = None, actor: str
    ) -> Org:
        check_id(org_id, "organisation id")

        def go(conn: Connection) -> Org:
            self._ensure_org(conn, org_id, actor)
            changes = {k: v for k, v in (("name", name), ("email", email)) if v is not None}
            if changes:
                conn.execute(orgs.update().where(orgs.c.id == org_id).values(**changes))
                self._audit(conn, org=org_id, actor=actor, action="org.update", detail=changes)
            return self._existing(conn, org_id)

        return self._run(go)

    def _org(self, conn: Connection, org_id: str) -> Org | None:
        row = conn.execute(sa.select(orgs).where(orgs.c.id == org_id)).first()
        return _org_from(row._mapping) if row is not None else None

    def _existing(self, conn: Connection, org_id: str) -> Org:
        org = self._org(conn, org_id)
        if org is None:  # created in this very transaction: cannot happen
            raise RuntimeError(f"organisation {org_id!r} vanished")
        return org

    def get_org(self, org_id: str) -> Org | None:
        return self._run(lambda c: self._org(c, org_id))

    def list_orgs(
        self, *, state: State | None = None, limit: int = 1000, offset: int = 0
    ) -> list[Org]:
        query = sa.select(orgs).order_by(orgs.c.id).limit(limit).offset(offset)
        if state is not None:
            query = query.where(orgs.c.state == str(state))
        return self._run(lambda c: [_org_from(r._mapping) for r in c.execute(query)])

    def add_key(self, key: Key, *, actor: str) -> Key:
        check_id(key.key_id, "key id")

        def go(conn: Connection) -> Key:
            if self._org(conn, key.org) is None:
                raise ValueError(f"organisation {key.org!r} does not exist")
            created = key.created or time.time()
            row = conn.execute(sa.select(keys).where(keys.c.key_id == key.key_id)).first()
            if row is not None:
                if row.org != key.org:
                    raise ValueError(f"key {key.key_id} belongs to another organisation")
                conn.execute(
                    keys.update()
                    .where(keys.c.key_id == key.key_id)
                    .values(label=key.label, revoked=False)
                )
            else:
                conn.execute(
                    keys.insert().values(
                        key_id=key.key_id, org=key.org, label=key.label, created=created
                    )
                )
            self._audit(
                conn, org=key.org, actor=actor, action="key.add", detail={"key_id": key.key_id}
            )
            return Key(key.key_id, key.org, key.label, created if row is None else row.created)

        return self._run(go)

    def revoke_key(self, key_id: str, *, actor: str) -> bool:
        def go(conn: Connection) -> bool:
            row = conn.execute(sa.select(keys).where(keys.c.key_id == key_id)).first()
            if row is None or row.revoked:
                return False
            conn.execute(keys.update().where(keys.c.key_id == key_id).values(revoked=True))
            self._audit(
                conn, org=row.org, actor=actor, action="key.revoke", detail={"key_id": key_id}
            )
            return True

        return self._run(go)

    def get_key(self, key_id: str) -> Key | None:
        def go(conn: Connection) -> Key | None:
            row = conn.execute(sa.select(keys).where(keys.c.key_id == key_id)).first()
            return _key_from(row._mapping) if row is not None else None

        return self._run(go)

    def list_keys(self, org: str | None = None) -> list[Key]:
        query = sa.select(keys).order_by(keys.c.org, keys.c.key_id)
        if org is not None:
            query = query.where(keys.c.org == org)
        return self._run(lambda c: [_key_from(r._mapping) for r in c.execute(query)])

    # --- events and payments -------------------------------------------------------------------

    def add_events(self, batch: Sequence[Event]) -> int:
        if not batch:
            return 0
        if self.dialect == "postgresql":
            return self._run(lambda c: _copy_events(c, batch))

        rows = _bounded(batch)

        def go(conn: Connection) -> int:
            before = conn.exec_driver_sql("SELECT total_changes()").scalar_one()
            # Multi-row VALUES statements of fixed sizes (a few prepared statements, kept in
            # the driver's cache): the rows are bound in C and each statement is one step with
            # the GIL released. executemany takes the GIL back for every row, and a JSON array
            # through json_each costs 2.7x the CPU (json_extract parses each row's array ten
            # times); figure 15, docs/performance.md.
            start, n = 0, len(rows)
            for size in _chunk_sizes(n):
                part = rows[start : start + size]
                conn.exec_driver_sql(_insert_events_sql(size), tuple(chain.from_iterable(part)))
                start += size
            return int(conn.exec_driver_sql("SELECT total_changes()").scalar_one() - before)

        return self._run(go)

    def count_events(self, org: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(events)
        if org is not None:
            query = query.where(events.c.org == org)
        return int(self._run(lambda c: c.execute(query).scalar_one()))

    def strike_events(self, org: str, since: float, limit: int = 100) -> tuple[int, list[str]]:
        where = sa.and_(events.c.org == org, events.c.strike.is_(True), events.c.at >= since)

        def go(conn: Connection) -> tuple[int, list[str]]:
            n = conn.execute(sa.select(sa.func.count()).select_from(events).where(where))
            ids = conn.execute(
                sa.select(events.c.id).where(where).order_by(events.c.at.desc()).limit(limit)
            )
            return int(n.scalar_one()), [r.id for r in ids]

        return self._run(go)

    def add_payment(self, payment: Payment, *, actor: str) -> bool:
        check_id(payment.id, "payment id")
        check_id(payment.org, "organisation id")

        def go(conn: Connection) -> bool:
            self._ensure_org(conn, payment.org, actor)
            inserted = self._insert_ignore(conn, payments, payment.to_dict())
            if inserted:
                self._audit(
                    conn,
                    org=payment.org,
                    actor=actor,
                    action="payment",
                    evidence=[payment.id],
                    detail=payment.to_dict(),
                )
            return bool(inserted)

        return self._run(go)

    def list_payments(self, org: str) -> list[Payment]:
        query = sa.select(payments).where(payments.c.org == org).order_by(payments.c.at)
        return self._run(lambda c: [Payment(**dict(r._mapping)) for r in c.execute(query)])

    # --- state and audit -----------------------------------------------------------------------

    def transition(
        self,
        org_id: str,
        to: State,
        *,
        actor: str,
        reason: str,
        evidence: Iterable[str] = (),
        expect: Iterable[State] | None = None,
        force: bool = False,
        at: float | None = None,
    ) -> Org | None:
        check_id(org_id, "organisation id")
        expected = None if expect is None else frozenset(expect)
        evidence = list(evidence)
        when = time.time() if at is None else at

        def go(conn: Connection) -> Org | None:
            self._ensure_org(conn, org_id, actor)
            for _ in range(20):
                org = self._existing(conn, org_id)
                if expected is not None and org.state not in expected:
                    return None
                if org.state is to:
                    return None
                if not force and to not in ALLOWED[org.state]:
                    raise TransitionError(
                        f"{org_id}: {org.state} → {to} is not allowed "
                        f"(from {org.state}: {', '.join(sorted(ALLOWED[org.state]))})"
                    )
                updated = conn.execute(
                    orgs.update()
                    .where(orgs.c.id == org_id, orgs.c.version == org.version)
                    .values(state=str(to), state_since=when, version=org.version + 1)
                ).rowcount
                if updated:
                    self._audit(
                        conn,
                        org=org_id,
                        actor=actor,
                        action="state",
                        reason=reason,
                        from_state=str(org.state),
                        to_state=str(to),
                        evidence=evidence,
                        at=when,
                    )
                    return Org(org.id, org.name, org.email, to, when, org.version + 1)
            raise StoreUnavailable(f"{org_id}: state kept changing under us; try again")

        return self._run(go)

    def audit(
        self, *, org: str | None = None, since_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        query = sa.select(audit).where(audit.c.seq > since_seq).order_by(audit.c.seq).limit(limit)
        if org is not None:
            query = query.where(audit.c.org == org)
        return self._run(lambda c: [_audit_from(r._mapping) for r in c.execute(query)])

    def changes_since(self, seq: int, limit: int = 10_000) -> list[AuditEntry]:
        query = (
            sa.select(audit)
            .where(audit.c.seq > seq, audit.c.action.in_(_CHANGE_ACTIONS))
            .order_by(audit.c.seq)
            .limit(limit)
        )
        return self._run(lambda c: [_audit_from(r._mapping) for r in c.execute(query)])

    def refused_orgs(self) -> dict[str, State]:
        refused = [str(s) for s in State if s.refused]
        query = sa.select(orgs.c.id, orgs.c.state).where(orgs.c.state.in_(refused))
        return self._run(lambda c: {r.id: State(r.state) for r in c.execute(query)})

    def key_orgs(self) -> dict[str, str]:
        query = sa.select(keys.c.key_id, keys.c.org).where(keys.c.revoked.is_(False))
        return self._run(lambda c: {r.key_id: r.org for r in c.execute(query)})

    def last_seq(self) -> int:
        return int(
            self._run(lambda c: c.execute(sa.select(sa.func.max(audit.c.seq))).scalar()) or 0
        )

    # --- the review queue (circumvention) ------------------------------------------------------

    def open_review(
        self, org: str, score: float, explanation: dict[str, Any], *, actor: str, at: float
    ) -> tuple[Review, bool]:
        check_id(org, "organisation id")
        score = finite(score, "review score")
        when = finite(at, "review time")
        text = explanation_json(explanation)

        def go(conn: Connection) -> tuple[Review, bool]:
            self._ensure_org(conn, org, actor)
            # Refresh the open review, or insert one; the partial unique index on open
            # reviews turns a racing second insert into a no-op, and the loop then finds
            # (and refreshes) the winner's. One closed meanwhile: the loop opens a new one.
            for _ in range(20):
                row = conn.execute(
                    sa.select(reviews.c.id).where(reviews.c.org == org, reviews.c.status == "open")
                ).first()
                if row is not None:
                    refreshed = conn.execute(
                        reviews.update()
                        .where(reviews.c.id == row.id, reviews.c.status == "open")
                        .values(score=score, explanation=text, updated=when)
                    ).rowcount
                    if refreshed:
                        return self._existing_review(conn, row.id), False
                    continue
                review_id = new_id("rv_")
                values = {
                    "id": review_id,
                    "org": org,
                    "opened_at": when,
                    "score": score,
                    "explanation": text,
                    "status": "open",
                    "updated": when,
                    "note": "",
                }
                if self._insert_ignore(conn, reviews, values):
                    self._audit(
                        conn,
                        org=org,
                        actor=actor,
                        action="review.open",
                        evidence=[review_id],
                        detail={"score": score},
                        at=when,
                    )
                    return self._existing_review(conn, review_id), True
            raise StoreUnavailable(f"{org}: its review kept changing under us; try again")

        return self._run(go)

    def _existing_review(self, conn: Connection, review_id: str) -> Review:
        row = conn.execute(sa.select(reviews).where(reviews.c.id == review_id)).first()
        if row is None:  # written in this very transaction: cannot happen
            raise RuntimeError(f"review {review_id!r} vanished")
        return _review_from(row._mapping)

    def get_review(self, review_id: str) -> Review | None:
        def go(conn: Connection) -> Review | None:
            row = conn.execute(sa.select(reviews).where(reviews.c.id == review_id)).first()
            return _review_from(row._mapping) if row is not None else None

        return self._run(go)

    def list_reviews(
        self, *, status: str | None = "open", org: str | None = None, limit: int = 100
    ) -> list[Review]:
        check_review_status(status)
        if limit <= 0:
            return []
        query = (
            sa.select(reviews)
            .order_by(reviews.c.opened_at.desc(), reviews.c.id.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(reviews.c.status == status)
        if org is not None:
            query = query.where(reviews.c.org == org)
        return self._run(lambda c: [_review_from(r._mapping) for r in c.execute(query)])

    def close_review(
        self, review_id: str, decision: str, *, actor: str, note: str = "", at: float
    ) -> Review | None:
        check_id(review_id, "review id")
        check_close(decision, actor, note)
        when = finite(at, "review time")

        def go(conn: Connection) -> Review | None:
            closed = conn.execute(
                reviews.update()
                .where(reviews.c.id == review_id, reviews.c.status == "open")
                .values(status=decision, closed_at=when, closed_by=actor, note=note, updated=when)
            ).rowcount
            if not closed:
                return None
            review = self._existing_review(conn, review_id)
            self._audit(
                conn,
                org=review.org,
                actor=actor,
                action="review.close",
                evidence=[review_id],
                detail={"decision": decision, "note": note, "score": review.score},
                at=when,
            )
            return review

        return self._run(go)

    def truncate_for_tests(self) -> None:
        """Empty every table (the behaviour suite's fixture; never called by the product)."""

        def go(conn: Connection) -> None:
            for table in (audit, reviews, payments, events, keys, orgs):
                conn.execute(table.delete())

        self._run(go)


# --- rows ----------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _copy_events(conn: Connection, batch: Sequence[Event]) -> int:
    """PostgreSQL: COPY the batch straight into the table; if some ids are already there (a
    spool replay), roll that back and COPY into a temporary table, then insert what is new.
    Straight COPY is ~2-3x faster than COPY + INSERT ... SELECT (docs/performance.md)."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise StoreUnavailable("PostgreSQL connection lost")
    import psycopg

    data = _copy_data(batch)
    columns = "(id, org, key_id, at, territory, flags, action, rule, strike, detail)"
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT rg_copy")
        try:
            with cur.copy(f"COPY rg_events {columns} FROM STDIN") as copy:
                copy.write(data)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT rg_copy")
        else:
            cur.execute("RELEASE SAVEPOINT rg_copy")
            return len(batch)
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS rg_events_in "
            "(LIKE rg_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY rg_events_in {columns} FROM STDIN") as copy:
            copy.write(data)
        cur.execute(
            "INSERT INTO rg_events SELECT DISTINCT ON (id) * FROM rg_events_in "
            "ON CONFLICT (id) DO NOTHING"
        )
        return int(cur.rowcount)


def _copy_data(batch: Sequence[Event]) -> str:
    buf = io.StringIO()
    write = buf.write
    for e in batch:
        write(
            "\t".join(
                (
                    _copy_text(e.id),
                    _copy_text(e.org),
                    _copy_text(e.key_id),
                    repr(e.at),
                    "\\N" if e.territory is None else _copy_text(e.territory),
                    _copy_text(e.flags),
                    _copy_text(e.action),
                    _copy_text(e.rule),
                    "t" if e.strike else "f",
                    _copy_text(e.detail[:_DETAIL_MAX]),
                )
            )
        )
        write("\n")
    return buf.getvalue()


# Rows per multi-row INSERT: 256 x 10 columns = 2,560 parameters, within SQLite's limit of
# 32,766 (3.32 and later; 999 before, where 64 rows fit).
_EVENT_ROWS: Final = 256 if sqlite3.sqlite_version_info >= (3, 32) else 64
_EVENT_COLUMNS: Final = "(id, org, key_id, at, territory, flags, action, rule, strike, detail)"


def _chunk_sizes(n: int) -> list[int]:
    """``n`` rows as full statements of ``_EVENT_ROWS``, then the rest in powers of two: a
    batch of any size uses at most a few distinct statements (each prepared once)."""
    sizes = [_EVENT_ROWS] * (n // _EVENT_ROWS)
    rest = n % _EVENT_ROWS
    bit = _EVENT_ROWS
    while rest:
        bit >>= 1
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


@functools.cache
def _insert_events_sql(rows: int) -> str:
    """INSERT OR IGNORE of ``rows`` events (an Event is the row: fields in column order)."""
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT OR IGNORE INTO rg_events {_EVENT_COLUMNS} VALUES {values}"  # noqa: S608 (placeholders only)


def _bounded(batch: Sequence[Event]) -> Sequence[Event]:
    """``batch`` with any ``detail`` cut to what its column holds (SQLite would keep it whole,
    PostgreSQL would refuse it: both now store the same). Usually ``batch`` itself."""
    if all(len(e.detail) <= _DETAIL_MAX for e in batch):
        return batch
    return [e._replace(detail=e.detail[:_DETAIL_MAX]) for e in batch]


def _copy_text(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def _org_from(m: Any) -> Org:
    return Org(m["id"], m["name"], m["email"], State(m["state"]), m["state_since"], m["version"])


def _key_from(m: Any) -> Key:
    return Key(m["key_id"], m["org"], m["label"], m["created"], bool(m["revoked"]))


def _audit_from(m: Any) -> AuditEntry:
    return AuditEntry(
        seq=int(m["seq"]),
        at=float(m["at"]),
        org=m["org"],
        actor=m["actor"],
        action=m["action"],
        reason=m["reason"],
        from_state=m["from_state"],
        to_state=m["to_state"],
        evidence=tuple(json.loads(m["evidence"] or "[]")),
        detail=json.loads(m["detail"] or "{}"),
    )


# --- reviews -------------------------------------------------------------------------------------


def _review_from(m: Any) -> Review:
    return Review(
        id=m["id"],
        org=m["org"],
        opened_at=float(m["opened_at"]),
        score=float(m["score"]),
        explanation=json.loads(m["explanation"] or "{}"),
        status=m["status"],
        updated=float(m["updated"]),
        closed_at=None if m["closed_at"] is None else float(m["closed_at"]),
        closed_by=m["closed_by"],
        note=m["note"] or "",
    )
