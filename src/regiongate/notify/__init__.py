"""Notices: tell affected organisations, before enforcement, what will happen and when.

From an impact report (``regiongate impact ... --json FILE``) ``notices plan`` makes one
delivery per affected organisation and channel, each carrying its own evidence; ``notices
send`` delivers them by e-mail and signed webhook; ``notices status`` reports where they are.

- :mod:`.model` — campaigns, deliveries, channels, statuses, the deterministic Message-ID.
- :mod:`.store` — ``NoticeStore``: the notice tables on SQLite or PostgreSQL (migration 0002
  of the accounts store's Alembic environment), atomic claims.
- :mod:`.inputs` — reading and validating the impact report and the contacts file.
- :mod:`.plan` — who gets a notice, where, in which language.
- :mod:`.render` — jinja2 templates, English and Simplified Chinese, text and HTML.
- :mod:`.send` — SMTP and webhooks, token-bucket rate limit, retries; its docstring states
  the delivery guarantee: exactly once per (campaign, organisation, channel) in the store,
  and on the wire at least once, a duplicate being possible only for the single message in
  flight at a crash, resent with the same Message-ID / Idempotency-Key.
- :mod:`.webhook` — the ``X-Regiongate-Signature`` scheme, for senders and receivers.
"""

from __future__ import annotations

from regiongate.notify.model import Campaign, Channel, Delivery, Status, message_id_for
from regiongate.notify.store import Claim, NewDelivery, NoticeStore
from regiongate.notify.webhook import sign, verify_signature

__all__ = [
    "Campaign",
    "Channel",
    "Claim",
    "Delivery",
    "NewDelivery",
    "NoticeStore",
    "Status",
    "message_id_for",
    "sign",
    "verify_signature",
]
