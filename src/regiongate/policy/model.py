"""The values the policy engine works with: actions, phases, modes, context, decisions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

__all__ = ["Action", "Context", "Decision", "Mode", "Phase"]


class Action(StrEnum):
    """What happens to a request. Ordered by severity: the strictest applicable one wins."""

    ALLOW = "allow"
    FLAG = "flag"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.FLAG: 1, Action.BLOCK: 2}


class Phase(IntEnum):
    """Where the clock stands relative to the policy's dates."""

    BEFORE_NOTICE = 0  # nothing happens yet
    NOTICE = 1  # unsupported traffic passes but is flagged (and counted toward notices)
    ENFORCE = 2  # unsupported traffic is blocked

    @property
    def label(self) -> str:
        return ("before-notice", "notice", "enforce")[self]


class Mode(StrEnum):
    """``dry-run`` computes and records every decision but never blocks."""

    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


class Context(NamedTuple):
    """What a decision may depend on besides the address: the time and who is asking.

    ``at`` is POSIX seconds (the clock is injected: a decision is a pure function of its
    inputs); ``client`` is the parsed client address ``(version, int)`` for network
    exemptions. A NamedTuple rather than a frozen dataclass: one is built per request, and
    this is 2.5x cheaper to build (measured: 180 ns vs 450 ns).
    """

    at: float
    account: str | None = None
    client: tuple[int, int] | None = None

    @classmethod
    def at_time(
        cls,
        when: dt.datetime,
        *,
        account: str | None = None,
        client: tuple[int, int] | None = None,
    ) -> Context:
        """A context at ``when`` (a naive datetime is taken as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return cls(when.timestamp(), account, client)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome for one request, with everything needed to explain it.

    ``action`` is what happens; ``intended`` is what the policy would do if it were enforcing
    (they differ in dry-run mode, where blocks become flags). ``code`` is the response code of
    a block or flag; ``territory`` the territory the decision rests on; ``reasons`` the rules
    that matched and what the sources said.
    """

    action: Action
    intended: Action
    code: str | None
    territory: str | None
    reasons: tuple[str, ...]
    policy: str
    phase: Phase
    mode: Mode
    exempt: bool = False
    # A short, stable name of what decided it, for metrics labels: "supported-territory",
    # "unsupported-territory", "unknown", "private", "invalid", "exempt", or a flag ("tor").
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "intended": str(self.intended),
            "code": self.code,
            "territory": self.territory,
            "reasons": list(self.reasons),
            "policy": self.policy,
            "phase": self.phase.label,
            "mode": str(self.mode),
            "exempt": self.exempt,
            "rule": self.rule,
        }
