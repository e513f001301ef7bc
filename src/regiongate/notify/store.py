"""Notice state in the SQL store: campaigns and deliveries, next to the accounts tables.

``NoticeStore`` shares the accounts store's database, engine settings and Alembic
environment: ``migrate()`` runs the same script location, so revision 0001 (accounts) and 0002
(notices) both apply, to a new database or one already at 0001.

Every state change is one atomic statement or transaction:

- ``plan`` creates the campaign and inserts deliveries with ``ON CONFLICT DO NOTHING`` on
  (campaign, org, channel) in one transaction, so re-planning adds only what is new.
- ``claim`` moves one delivery to ``sending`` with a conditional ``UPDATE ... WHERE id = :id
  AND version = :seen``: of two senders that saw the same pending delivery, exactly one
  changes a row, and the other moves on to the next one.
- ``finish`` records the outcome only if the caller still holds the claim
  (``WHERE status = 'sending' AND claimed_by = :me``).

A delivery left in ``sending`` by a sender that died is claimed again by the next sender, once
its claimer is known to be gone (a process on this host that no longer exists) or its lease
has run out (a claim older than ``lease`` seconds, for senders on other hosts).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from regiongate.accounts.model import Org
from regiongate.accounts.store.base import StoreUnavailable
from regiongate.accounts.store.sql import SQLStore
from regiongate.notify.model import Campaign, Channel, Delivery, Status
from regiongate.notify.schema import campaigns, deliveries

__all__ = [
    "DEFAULT_LEASE",
    "Claim",
    "NewDelivery",
    "NoticeStore",
    "PlanResult",
    "claimer_gone",
    "new_claimer",
]

T = TypeVar("T")
DEFAULT_LEASE: Final = 600.0  # seconds a claim holds against senders on other hosts
_BATCH: Final = 20  # candidates read per claim attempt


def new_claimer() -> str:
    """Who claims: ``host:pid:random``, so a later sender can tell whether we are gone."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    try:  # a killed child its parent has not reaped yet is a zombie: gone all the same
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] in {"Z", "X"}
    except (OSError, IndexError):
        return False


def claimer_gone(claimer: str | None) -> bool:
    """Whether the sender that claimed a delivery is certainly dead: a process of this host
    that no longer exists. A claimer elsewhere is never presumed dead (its lease decides)."""
    if not claimer:
        return True
    host, _, rest = claimer.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if int(pid_text) == os.getpid():
        return False  # a claimer of this very process is alive by definition
    return _process_gone(int(pid_text))


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery ``plan`` is asked to insert."""

    org: str
    channel: Channel
    recipient: str
    language: str
    message_id: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery a sender now holds (``sending``), and the status it was claimed from:
    ``sending`` means a sender that is gone left it in flight, so it is being resent."""

    delivery: Delivery
    previous: Status


@dataclass(frozen=True, slots=True)
class PlanResult:
    campaign: Campaign
    campaign_created: bool
    added: list[Delivery]
    existing: list[Delivery]  # already planned earlier (left exactly as they were)


class NoticeStore:
    """Campaigns and deliveries on SQLite (``sqlite:///PATH``) or PostgreSQL."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in {"sqlite", "postgresql", "postgres", "postgresql+psycopg"}:
            raise ValueError(
                f"store URL {url!r}: notices need an SQL store (sqlite:///PATH or postgresql://...)"
            )
        self.url = url
        try:
            self.accounts = SQLStore(url, connect_timeout=connect_timeout)
        except OSError as exc:  # the SQLite file's directory cannot be created
            raise StoreUnavailable(f"store {url}: {exc.strerror or exc}") from None
        self.engine = self.accounts.engine
        self.dialect = self.accounts.dialect

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
        return self.engine.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Create or upgrade the schema (accounts and notices; idempotent)."""
        self.accounts.migrate()

    def close(self) -> None:
        self.accounts.close()

    def ping(self) -> None:
        self.accounts.ping()

    def get_org(self, org_id: str) -> Org | None:
        """The organisation in the accounts store (its ``email`` is the fallback contact)."""
        return self.accounts.get_org(org_id)

    def _insert_ignore(self, conn: Connection, table: sa.Table, row: dict[str, Any]) -> Any:
        """Insert ``row`` unless a unique key has it; its primary key, or ``None``."""
        insert: Any
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        pk = next(iter(table.primary_key.columns))
        found = conn.execute(insert(table).values(row).on_conflict_do_nothing().returning(pk))
        row_ = found.first()
        return None if row_ is None else row_[0]

    # --- campaigns -----------------------------------------------------------------------------

    def get_campaign(self, campaign_id: str) -> Campaign | None:
        return self._run(lambda c: _campaign(c, campaign_id))

    def list_campaigns(self) -> list[Campaign]:
        query = sa.select(campaigns).order_by(campaigns.c.created, campaigns.c.id)
        return self._run(lambda c: [_campaign_from(r._mapping) for r in c.execute(query)])

    # --- planning ------------------------------------------------------------------------------

    def plan(self, campaign: Campaign, planned: Sequence[NewDelivery]) -> PlanResult:
        """Create ``campaign`` unless it exists (same policy required) and add the deliveries
        it does not have yet, all in one transaction."""

        def go(conn: Connection) -> PlanResult:
            created = False
            existing_campaign = _campaign(conn, campaign.id)
            if existing_campaign is None:
                created = self._insert_ignore(conn, campaigns, _campaign_row(campaign)) is not None
                existing_campaign = _campaign(conn, campaign.id)
                if existing_campaign is None:  # pragma: no cover - inserted or raced in
                    raise RuntimeError(f"campaign {campaign.id!r} vanished")
            if existing_campaign.policy != campaign.policy:
                raise ValueError(
                    f"campaign {campaign.id!r} is for policy {existing_campaign.policy}, not "
                    f"{campaign.policy}; choose another --campaign"
                )
            now = time.time()
            added: list[Delivery] = []
            existing: list[Delivery] = []
            for d in planned:
                new_id = self._insert_ignore(
                    conn,
                    deliveries,
                    {
                        "campaign": campaign.id,
                        "org": d.org,
                        "channel": str(d.channel),
                        "recipient": d.recipient,
                        "language": d.language,
                        "status": str(Status.PENDING),
                        "attempts": 0,
                        "message_id": d.message_id,
                        "evidence": json.dumps(d.evidence, sort_keys=True, ensure_ascii=False),
                        "created": now,
                        "updated": now,
                        "version": 0,
                    },
                )
                row = conn.execute(
                    sa.select(deliveries).where(
                        deliveries.c.campaign == campaign.id,
                        deliveries.c.org == d.org,
                        deliveries.c.channel == str(d.channel),
                    )
                ).first()
                if row is None:  # pragma: no cover - inserted or there already
                    raise RuntimeError(f"delivery to {d.org!r} vanished")
                (added if new_id is not None else existing).append(_delivery_from(row._mapping))
            return PlanResult(existing_campaign, created, added, existing)

        return self._run(go)

    # --- deliveries ----------------------------------------------------------------------------

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        query = sa.select(deliveries).where(deliveries.c.id == delivery_id)

        def go(conn: Connection) -> Delivery | None:
            row = conn.execute(query).first()
            return None if row is None else _delivery_from(row._mapping)

        return self._run(go)

    def list_deliveries(
        self,
        campaign: str | None = None,
        *,
        statuses: Iterable[Status] | None = None,
        org: str | None = None,
    ) -> list[Delivery]:
        query = sa.select(deliveries).order_by(deliveries.c.campaign, deliveries.c.id)
        if campaign is not None:
            query = query.where(deliveries.c.campaign == campaign)
        if statuses is not None:
            query = query.where(deliveries.c.status.in_([str(s) for s in statuses]))
        if org is not None:
            query = query.where(deliveries.c.org == org)
        return self._run(lambda c: [_delivery_from(r._mapping) for r in c.execute(query)])

    def counts(self, campaign: str | None = None) -> dict[tuple[str, str, str], int]:
        """(campaign, channel, status) → how many deliveries."""
        c = deliveries.c
        query = sa.select(c.campaign, c.channel, c.status, sa.func.count()).group_by(
            c.campaign, c.channel, c.status
        )
        if campaign is not None:
            query = query.where(c.campaign == campaign)
        return self._run(lambda conn: {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(query)})

    def _work(self, campaign: str | None, channels: Iterable[Channel]) -> list[Any]:
        where: list[Any] = [deliveries.c.channel.in_([str(ch) for ch in channels])]
        if campaign is not None:
            where.append(deliveries.c.campaign == campaign)
        return where

    def claim(
        self,
        claimer: str,
        *,
        campaign: str | None = None,
        channels: Iterable[Channel] = tuple(Channel),
        max_attempts: int = 5,
        lease: float = DEFAULT_LEASE,
        now: float | None = None,
        gone: Callable[[str | None], bool] = claimer_gone,
    ) -> Claim | None:
        """Claim one delivery for ``claimer`` (status ``sending``, attempts + 1), or ``None``.

        In order: a delivery left in ``sending`` by a sender that is gone (or whose lease ran
        out), then pending ones, then failed ones whose retry time has come and that have
        attempts left. Each claim is one conditional UPDATE on the row's version.
        """
        when = time.time() if now is None else now
        c = deliveries.c
        base = self._work(campaign, channels)
        cols = (c.id, c.version, c.status, c.claimed_by, c.lease_until)

        def take(row: Any) -> Claim | None:
            def go(conn: Connection) -> Claim | None:
                changed = conn.execute(
                    deliveries.update()
                    .where(c.id == row.id, c.version == row.version)
                    .values(
                        status=str(Status.SENDING),
                        claimed_by=claimer,
                        lease_until=when + lease,
                        attempts=c.attempts + 1,
                        version=c.version + 1,
                        updated=when,
                    )
                ).rowcount
                if changed != 1:
                    return None
                got = conn.execute(sa.select(deliveries).where(c.id == row.id)).first()
                if got is None:  # pragma: no cover - updated in this very transaction
                    return None
                return Claim(_delivery_from(got._mapping), Status(row.status))

            return self._run(go)

        stuck = self._run(
            lambda conn: list(
                conn.execute(
                    sa.select(*cols).where(*base, c.status == str(Status.SENDING)).order_by(c.id)
                )
            )
        )
        for row in stuck:
            if row.claimed_by == claimer:
                continue
            if (row.lease_until is not None and row.lease_until < when) or gone(row.claimed_by):
                got = take(row)
                if got is not None:
                    return got
        ready = sa.or_(
            c.status == str(Status.PENDING),
            sa.and_(
                c.status == str(Status.FAILED),
                c.next_attempt.is_not(None),
                c.next_attempt <= when,
                c.attempts < max_attempts,
            ),
        )
        query = sa.select(*cols).where(*base, ready).order_by(c.id).limit(_BATCH)
        for _ in range(1000):  # each round, others took every candidate we saw: read again
            rows = self._run(lambda conn: list(conn.execute(query)))
            if not rows:
                return None
            for row in rows:
                got = take(row)
                if got is not None:
                    return got
        raise StoreUnavailable("deliveries kept being claimed under us; try again")

    def finish(
        self,
        delivery: Delivery,
        claimer: str,
        status: Status,
        *,
        error: str | None = None,
        next_attempt: float | None = None,
        now: float | None = None,
    ) -> bool:
        """Record the outcome of a claimed delivery. ``False`` if ``claimer`` no longer holds
        it (its lease ran out and another sender took it over): nothing is changed then."""
        if status is Status.SENDING or status is Status.PENDING:
            raise ValueError(f"a delivery cannot finish as {status}")
        c = deliveries.c
        statement = (
            deliveries.update()
            .where(
                c.id == delivery.id,
                c.status == str(Status.SENDING),
                c.claimed_by == claimer,
            )
            .values(
                status=str(status),
                last_error=None if status is Status.DELIVERED else (error or "")[:4000],
                next_attempt=next_attempt if status is Status.FAILED else None,
                claimed_by=None,
                lease_until=None,
                version=c.version + 1,
                updated=time.time() if now is None else now,
            )
        )
        return bool(self._run(lambda conn: conn.execute(statement).rowcount == 1))

    def work(self, campaign: str | None = None, *, max_attempts: int = 5) -> dict[Channel, int]:
        """channel → deliveries a sender would still try (pending, in flight, retryable)."""
        c = deliveries.c
        todo = sa.or_(
            c.status.in_([str(Status.PENDING), str(Status.SENDING)]),
            sa.and_(
                c.status == str(Status.FAILED),
                c.next_attempt.is_not(None),
                c.attempts < max_attempts,
            ),
        )
        query = sa.select(c.channel, sa.func.count()).where(todo).group_by(c.channel)
        if campaign is not None:
            query = query.where(c.campaign == campaign)
        rows = self._run(lambda conn: list(conn.execute(query)))
        return {Channel(r[0]): int(r[1]) for r in rows}

    def next_retry_at(
        self,
        *,
        campaign: str | None = None,
        channels: Iterable[Channel] = tuple(Channel),
        max_attempts: int = 5,
    ) -> float | None:
        """When the earliest retryable failed delivery is due (``None``: none is)."""
        c = deliveries.c
        query = sa.select(sa.func.min(c.next_attempt)).where(
            *self._work(campaign, channels),
            c.status == str(Status.FAILED),
            c.next_attempt.is_not(None),
            c.attempts < max_attempts,
        )
        value = self._run(lambda conn: conn.execute(query).scalar())
        return None if value is None else float(value)


# --- rows ----------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _campaign(conn: Connection, campaign_id: str) -> Campaign | None:
    row = conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id)).first()
    return None if row is None else _campaign_from(row._mapping)


def _campaign_row(campaign: Campaign) -> dict[str, Any]:
    row = campaign.to_dict()
    row["params"] = json.dumps(campaign.params, sort_keys=True, ensure_ascii=False)
    return row


def _campaign_from(m: Any) -> Campaign:
    return Campaign(
        id=m["id"],
        policy=m["policy"],
        created=float(m["created"]),
        enforce_from=float(m["enforce_from"]),
        template=m["template"],
        language=m["language"],
        params=json.loads(m["params"] or "{}"),
    )


def _delivery_from(m: Any) -> Delivery:
    return Delivery(
        id=int(m["id"]),
        campaign=m["campaign"],
        org=m["org"],
        channel=Channel(m["channel"]),
        recipient=m["recipient"],
        language=m["language"],
        status=Status(m["status"]),
        attempts=int(m["attempts"]),
        last_error=m["last_error"],
        message_id=m["message_id"],
        evidence=json.loads(m["evidence"] or "{}"),
        created=float(m["created"]),
        updated=float(m["updated"]),
        next_attempt=None if m["next_attempt"] is None else float(m["next_attempt"]),
        claimed_by=m["claimed_by"],
        lease_until=None if m["lease_until"] is None else float(m["lease_until"]),
        version=int(m["version"]),
    )
