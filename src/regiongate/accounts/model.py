"""The values of account enforcement: states and their transitions, events, payments, audit.

An organisation's state moves along::

    active ──► warned ──► suspended ──► appeal_pending ──► reinstated
       ▲          │           ▲  ▲             │                │
       └──────────┘           │  └─────────────┘ (appeal denied) │
                              └──────────────────────────────────┘ (strikes again)

Every transition is recorded in an append-only audit log with who made it (``actor``), why
(``reason``) and the evidence behind it (event and payment ids). Automatic transitions come
from the rules (strikes, payments); manual ones from an operator.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple

__all__ = [
    "ALLOWED",
    "REVIEW_DECISIONS",
    "AuditEntry",
    "Event",
    "Key",
    "Org",
    "Payment",
    "Review",
    "State",
    "TransitionError",
    "new_id",
    "valid_id",
]


class State(StrEnum):
    ACTIVE = "active"
    WARNED = "warned"
    SUSPENDED = "suspended"
    APPEAL_PENDING = "appeal_pending"
    REINSTATED = "reinstated"

    @property
    def refused(self) -> bool:
        """Whether requests of an organisation in this state are refused."""
        return self in (State.SUSPENDED, State.APPEAL_PENDING)


# Which transitions exist. Manual changes by an admin may go anywhere else too (``force``),
# and are audited like the rest.
ALLOWED: Final[dict[State, frozenset[State]]] = {
    State.ACTIVE: frozenset({State.WARNED, State.SUSPENDED}),
    State.WARNED: frozenset({State.ACTIVE, State.SUSPENDED}),
    State.SUSPENDED: frozenset({State.APPEAL_PENDING, State.REINSTATED}),
    State.APPEAL_PENDING: frozenset({State.SUSPENDED, State.REINSTATED}),
    State.REINSTATED: frozenset({State.WARNED, State.SUSPENDED, State.ACTIVE}),
}


class TransitionError(ValueError):
    """A state change that is not allowed from the current state (or a stale expectation)."""


def valid_id(value: str) -> bool:
    """The rule for every id an operator or a report gives (organisations, keys, reviews,
    campaigns): 1-200 printable characters."""
    return 0 < len(value) <= 200 and value.isprintable()


def new_id(prefix: str) -> str:
    """A unique, time-ordered id: ``prefix`` + 12 hex digits of milliseconds + 16 random."""
    return f"{prefix}{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


class Event(NamedTuple):
    """One decision on an identified request.

    A NamedTuple: one is built per identified request (3x cheaper than a frozen dataclass),
    and its fields are, in order, the row the SQL store inserts (no per-event conversion).
    """

    id: str
    org: str
    key_id: str
    at: float  # POSIX seconds
    territory: str | None
    flags: str  # comma-separated anonymizer/other flags, sorted ("tor,vpn"; "" for none)
    action: str  # allow | flag | block | refused (a suspended organisation's request)
    rule: str  # the decision's rule name ("unsupported-territory", "tor", ...)
    strike: bool  # counts toward the strike rule
    # What the request hinted about who is behind it, for the circumvention signals:
    # ``key=value`` pairs joined by ";" (``user=<hash>;lang=CN;tz=CN;cloud=aws/ap-east-1``),
    # "" for none. See :mod:`regiongate.accounts.signals`.
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org": self.org,
            "key_id": self.key_id,
            "at": self.at,
            "territory": self.territory,
            "flags": self.flags,
            "action": self.action,
            "rule": self.rule,
            "strike": self.strike,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        flags = d.get("flags") or ""
        return cls(
            id=str(d["id"]),
            org=str(d["org"]),
            key_id=str(d["key_id"]),
            at=float(d["at"]),
            territory=d.get("territory"),
            flags=flags if isinstance(flags, str) else ",".join(map(str, flags)),
            action=str(d["action"]),
            rule=str(d.get("rule") or ""),
            strike=bool(d.get("strike")),
            detail=str(d.get("detail") or ""),  # spool files written before it: none
        )


@dataclass(frozen=True, slots=True)
class Payment:
    """A payment made by an organisation, with where it came from."""

    id: str
    org: str
    at: float
    card_country: str | None = None  # issuing country of the card (ISO 3166-1 alpha-2)
    billing_country: str | None = None  # billing address country (or an ISO 3166-2 code)
    method: str = "card"
    currency: str | None = None
    amount: float | None = None

    def territories(self) -> tuple[str, ...]:
        return tuple(t for t in (self.card_country, self.billing_country) if t)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org": self.org,
            "at": self.at,
            "card_country": self.card_country,
            "billing_country": self.billing_country,
            "method": self.method,
            "currency": self.currency,
            "amount": self.amount,
        }


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str = ""
    email: str | None = None
    state: State = State.ACTIVE
    state_since: float = 0.0
    version: int = 0  # bumped on every state change (optimistic concurrency)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "state": str(self.state),
            "state_since": self.state_since,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str  # the keyed hash of the API key; the key itself is never stored
    org: str
    label: str = ""
    created: float = 0.0
    revoked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "org": self.org,
            "label": self.label,
            "created": self.created,
            "revoked": self.revoked,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the append-only audit log."""

    seq: int
    at: float
    org: str | None
    actor: str  # "rule:strikes", "rule:payments", "admin:<token name>", "cli:<user>"
    action: str  # "state", "org.upsert", "key.add", "key.revoke", "payment", ...
    reason: str = ""
    from_state: str | None = None
    to_state: str | None = None
    evidence: tuple[str, ...] = field(default_factory=tuple)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "org": self.org,
            "actor": self.actor,
            "action": self.action,
            "reason": self.reason,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "evidence": list(self.evidence),
            "detail": self.detail,
        }


# How a review ends: nothing to do, or the organisation is warned or suspended.
REVIEW_DECISIONS: Final = ("dismissed", "warned", "suspended")


@dataclass(frozen=True, slots=True)
class Review:
    """An organisation flagged for a person to look at, with the score that flagged it.

    ``status`` is ``open`` until someone decides (one of :data:`REVIEW_DECISIONS`). An
    organisation has at most one open review; while it is open, a new score refreshes
    ``score``, ``explanation`` and ``updated`` instead of opening another.
    """

    id: str
    org: str
    opened_at: float
    score: float
    explanation: dict[str, Any] = field(default_factory=dict)
    status: str = "open"
    updated: float = 0.0
    closed_at: float | None = None
    closed_by: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org": self.org,
            "opened_at": self.opened_at,
            "score": self.score,
            "explanation": self.explanation,
            "status": self.status,
            "updated": self.updated,
            "closed_at": self.closed_at,
            "closed_by": self.closed_by,
            "note": self.note,
        }
