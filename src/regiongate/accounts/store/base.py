"""What every account store does, whatever it is built on.

A store keeps organisations, API keys (by key id only), decision events, payments and the
append-only audit log. Every method is synchronous and thread-safe: the gateway calls the
store from its writer thread and its cache refresher, the admin API from a thread pool.
A store that cannot be reached raises :class:`StoreUnavailable`; everything else that goes
wrong with a caller's input raises ``ValueError`` (or :class:`TransitionError`).

Consistency rules every backend keeps (the behaviour suite in ``tests/accounts`` checks them
on SQLite, PostgreSQL and Redis):

- ``add_events`` is idempotent by event id: replaying a batch inserts nothing twice and
  returns how many were new.
- ``transition`` is atomic: the state check, the state change and its audit entry happen
  together or not at all, and two racing transitions cannot both apply (``expect``).
- every mutation appends to the audit log; ``changes_since`` is the feed gateways poll to
  keep their caches current.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from regiongate.accounts.model import (
    REVIEW_DECISIONS,
    AuditEntry,
    Event,
    Key,
    Org,
    Payment,
    Review,
    State,
    valid_id,
)
from regiongate.errors import RegiongateError

__all__ = [
    "Store",
    "StoreUnavailable",
    "check_close",
    "check_id",
    "check_review_status",
    "explanation_json",
    "finite",
]

_NOTE_MAX: Final = 2000
_REVIEW_STATUSES: Final = ("open", *REVIEW_DECISIONS)


class StoreUnavailable(RegiongateError):
    """The store cannot be reached (connection refused, timed out, server gone)."""


def check_id(value: object, what: str) -> None:
    """Organisation, key, event and payment ids: 1-200 printable characters."""
    if not isinstance(value, str) or not valid_id(value):
        raise ValueError(f"{what} must be 1-200 printable characters, not {value!r:.80}")


def finite(value: object, what: str) -> float:
    """``value`` as a finite float, or ``ValueError`` naming ``what``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, not {value!r:.80}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return number


def explanation_json(explanation: object) -> str:
    """A review's explanation as JSON text (a dict of plain JSON values)."""
    if not isinstance(explanation, dict):
        raise ValueError(f"review explanation must be a dict, not {type(explanation).__name__}")
    try:
        return json.dumps(explanation, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"review explanation must be plain JSON: {exc}") from None


def check_review_status(status: str | None) -> None:
    if status is not None and status not in _REVIEW_STATUSES:
        raise ValueError(
            f"review status must be one of {', '.join(_REVIEW_STATUSES)}, not {status!r:.80}"
        )


def check_close(decision: str, actor: str, note: str) -> None:
    """The arguments of ``close_review``."""
    if decision not in REVIEW_DECISIONS:
        raise ValueError(
            f"review decision must be one of {', '.join(REVIEW_DECISIONS)}, not {decision!r:.80}"
        )
    check_id(actor, "actor")
    if not isinstance(note, str) or len(note) > _NOTE_MAX:
        raise ValueError(f"review note must be text of at most {_NOTE_MAX} characters")


class Store(Protocol):
    url: str

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent)."""

    def close(self) -> None: ...

    def ping(self) -> None:
        """Return if the store answers; raise ``StoreUnavailable`` otherwise."""

    # --- organisations and keys ----------------------------------------------------------------

    def upsert_org(
        self, org_id: str, *, name: str | None = None, email: str | None = None, actor: str
    ) -> Org: ...

    def get_org(self, org_id: str) -> Org | None: ...

    def list_orgs(
        self, *, state: State | None = None, limit: int = 1000, offset: int = 0
    ) -> list[Org]: ...

    def add_key(self, key: Key, *, actor: str) -> Key:
        """Register a key for an existing organisation (``ValueError`` if it has none)."""

    def revoke_key(self, key_id: str, *, actor: str) -> bool: ...

    def get_key(self, key_id: str) -> Key | None: ...

    def list_keys(self, org: str | None = None) -> list[Key]: ...

    # --- events and payments -------------------------------------------------------------------

    def add_events(self, events: Sequence[Event]) -> int:
        """Insert the events whose ids are new; return how many were."""

    def count_events(self, org: str | None = None) -> int: ...

    def strike_events(self, org: str, since: float, limit: int = 100) -> tuple[int, list[str]]:
        """How many strike events ``org`` has at or after ``since``, and the newest ids."""

    def add_payment(self, payment: Payment, *, actor: str) -> bool:
        """Record a payment (idempotent by id); ``True`` if it was new."""

    def list_payments(self, org: str) -> list[Payment]: ...

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
        """Move ``org_id`` to ``to`` and audit it, atomically.

        ``expect``: only if the current state is one of these (else ``None``, nothing done).
        Without ``force`` the move must be in :data:`ALLOWED` (else ``TransitionError``).
        An organisation that does not exist yet is created ``active`` first.
        """

    def audit(
        self, *, org: str | None = None, since_seq: int = 0, limit: int = 1000
    ) -> list[AuditEntry]: ...

    def changes_since(self, seq: int, limit: int = 10_000) -> list[AuditEntry]:
        """Audit entries after ``seq`` that change what a gateway enforces (state, keys)."""

    def refused_orgs(self) -> dict[str, State]:
        """Every organisation whose requests are refused now (suspended, appeal pending)."""

    def key_orgs(self) -> dict[str, str]:
        """key id → organisation, for every key not revoked."""

    def last_seq(self) -> int: ...

    # --- the review queue (circumvention) ------------------------------------------------------

    def open_review(
        self, org: str, score: float, explanation: dict[str, Any], *, actor: str, at: float
    ) -> tuple[Review, bool]:
        """Flag ``org`` for review; ``(review, True)`` if a new one was opened.

        If ``org`` already has an open review, that one gets the new score, explanation and
        ``updated`` time and comes back with ``False`` (no second review, no audit entry).
        Opening is audited (``review.open``, evidence: the review id) and creates the
        organisation (``active``) if it does not exist yet. Atomic: two racing callers open
        one review between them.
        """

    def get_review(self, review_id: str) -> Review | None: ...

    def list_reviews(
        self, *, status: str | None = "open", org: str | None = None, limit: int = 100
    ) -> list[Review]:
        """Reviews newest first (by ``opened_at``); ``status=None``: every status."""

    def close_review(
        self, review_id: str, decision: str, *, actor: str, note: str = "", at: float
    ) -> Review | None:
        """Close an open review with ``decision`` (one of ``REVIEW_DECISIONS``, else
        ``ValueError``) and audit it (``review.close``); ``None`` if it is not open (already
        closed, or no such review). The state change a decision implies is the caller's.
        """
