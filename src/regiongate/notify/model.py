"""The values of notices: campaigns, deliveries, their channels and statuses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "LANGUAGES",
    "Campaign",
    "Channel",
    "Delivery",
    "Status",
    "message_id_for",
    "normalise_language",
]

# The languages the templates are written in. Others are mapped onto them where that is
# unambiguous (``zh``, ``zh-CN`` → ``zh-Hans``) and refused otherwise.
LANGUAGES: Final = ("en", "zh-Hans")
_ALIASES: Final = {
    "en": "en",
    "en-us": "en",
    "en-gb": "en",
    "english": "en",
    "zh": "zh-Hans",
    "zh-hans": "zh-Hans",
    "zh-cn": "zh-Hans",
    "zh-sg": "zh-Hans",
    "zh-hans-cn": "zh-Hans",
    "zh_hans": "zh-Hans",
    "zh_cn": "zh-Hans",
}


def normalise_language(value: str) -> str:
    """``en`` or ``zh-Hans`` for any common spelling of them; ``ValueError`` otherwise."""
    found = _ALIASES.get(value.strip().lower().replace("_", "-"))
    if found is None:
        raise ValueError(f"language {value!r} has no templates (use {' or '.join(LANGUAGES)})")
    return found


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class Status(StrEnum):
    PENDING = "pending"  # planned, never tried
    SENDING = "sending"  # claimed by a sender (at most one per sender at a time)
    DELIVERED = "delivered"  # the server accepted it (250 / 2xx)
    FAILED = "failed"  # retryable when ``next_attempt`` is set and attempts remain
    BOUNCED = "bounced"  # permanent SMTP refusal (5xx); never retried

    @property
    def final(self) -> bool:
        return self in (Status.DELIVERED, Status.BOUNCED)


def message_id_for(campaign: str, org: str, domain: str) -> str:
    """The Message-ID (and webhook Idempotency-Key) of ``campaign``'s notice to ``org``:
    the same on every attempt, so that receivers can drop a resent duplicate."""
    digest = hashlib.sha256(f"{campaign}\x00{org}".encode()).hexdigest()[:32]
    return f"<notice.{digest}@{domain}>"


@dataclass(frozen=True, slots=True)
class Campaign:
    """One round of notices for one policy (``policy`` is its ``name@version``)."""

    id: str
    policy: str
    created: float
    enforce_from: float  # POSIX seconds: when affected requests start to be blocked
    template: str = "unsupported-territory"
    language: str = "en"  # for organisations whose contact names none
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "policy": self.policy,
            "created": self.created,
            "enforce_from": self.enforce_from,
            "template": self.template,
            "language": self.language,
            "params": self.params,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notice to one organisation over one channel, with the evidence it states."""

    id: int
    campaign: str
    org: str
    channel: Channel
    recipient: str  # an e-mail address or a webhook URL
    language: str
    status: Status
    attempts: int
    last_error: str | None
    message_id: str  # also the webhook Idempotency-Key
    evidence: dict[str, Any]
    created: float
    updated: float
    next_attempt: float | None = None  # a failed delivery's earliest retry (None: permanent)
    claimed_by: str | None = None
    lease_until: float | None = None
    version: int = 0

    @property
    def idempotency_key(self) -> str:
        return self.message_id.strip("<>")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "campaign": self.campaign,
            "org": self.org,
            "channel": str(self.channel),
            "recipient": self.recipient,
            "language": self.language,
            "status": str(self.status),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "message_id": self.message_id,
            "evidence": self.evidence,
            "created": self.created,
            "updated": self.updated,
            "next_attempt": self.next_attempt,
        }
