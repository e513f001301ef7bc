"""Who gets a notice: the affected organisations of an impact report, and their contacts.

An organisation is affected when its ``affected_requests`` reach ``min_requests`` and its
``affected_share`` reaches ``min_share``. Its notice goes to every channel its contact entry
names (an e-mail address and/or a webhook URL); without an entry, to the e-mail address the
accounts store has for it; without either it is reported as having no contact, never
dropped silently. Every notice carries its own evidence (counts, share, territories, first
and last seen) and the enforcement date, so that what it says can be checked afterwards.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from regiongate.accounts.model import Org, valid_id
from regiongate.errors import RegiongateError
from regiongate.notify.inputs import Contact, ImpactReport, OrgImpact, parse_time, valid_email
from regiongate.notify.model import Campaign, Channel, message_id_for
from regiongate.notify.store import NewDelivery
from regiongate.policy import Policy

__all__ = ["DEFAULT_TEMPLATE", "Plan", "PlanError", "build_plan"]

DEFAULT_TEMPLATE = "unsupported-territory"


class PlanError(RegiongateError):
    """The inputs do not make a campaign (wrong policy, no enforcement date, ...)."""


@dataclass(frozen=True, slots=True)
class Plan:
    campaign: Campaign
    deliveries: list[NewDelivery]
    no_contact: list[OrgImpact] = field(default_factory=list)
    below_threshold: list[OrgImpact] = field(default_factory=list)


def _enforce_from(policy: Policy, report: ImpactReport) -> dt.datetime:
    if policy.enforce_from is not None:
        return policy.enforce_from
    if report.enforce_from is not None:
        return parse_time(report.enforce_from)
    raise PlanError(
        f"policy {policy.ref} has no enforce_from: a notice must say from when requests are blocked"
    )


def build_plan(
    policy: Policy,
    report: ImpactReport,
    *,
    campaign_id: str | None = None,
    language: str = "en",
    min_requests: int = 1,
    min_share: float = 0.0,
    contacts: dict[str, Contact] | None = None,
    lookup: Callable[[str], Org | None] = lambda _org: None,
    product: str | None = None,
    support: str | None = None,
    domain: str = "regiongate.local",
    now: float | None = None,
) -> Plan:
    """The campaign and its deliveries (nothing is written: ``NoticeStore.plan`` does that)."""
    if report.policy != policy.ref:
        raise PlanError(
            f"{report.source} is an impact report for {report.policy}, not for {policy.ref}"
        )
    enforce = _enforce_from(policy, report)
    name = campaign_id or policy.ref
    if not valid_id(name):
        raise PlanError(f"campaign name {name!r:.80} must be 1-200 printable characters")
    notice_from = policy.notice_from.isoformat() if policy.notice_from else report.notice_from
    params: dict[str, Any] = {
        "policy_name": policy.name,
        "notice_from": notice_from,
        "enforce_from": enforce.isoformat(),
        "block_code": policy.response.code,
        "suspension": policy.accounts.strikes > 0 and str(policy.mode) == "enforce",
        "product": product,
        "support": support,
        "impact": report.source,
        "impact_generated_at": report.generated_at,
        "min_requests": min_requests,
        "min_share": min_share,
        "message_id_domain": domain,
    }
    campaign = Campaign(
        id=name,
        policy=policy.ref,
        created=time.time() if now is None else now,
        enforce_from=enforce.timestamp(),
        template=DEFAULT_TEMPLATE,
        language=language,
        params=params,
    )
    planned: list[NewDelivery] = []
    no_contact: list[OrgImpact] = []
    below: list[OrgImpact] = []
    for impact in report.orgs:
        if impact.affected_requests < max(1, min_requests) or impact.affected_share < min_share:
            below.append(impact)
            continue
        contact = (contacts or {}).get(impact.org)
        org = lookup(impact.org)
        targets: list[tuple[Channel, str]] = []
        if contact is not None and (contact.email or contact.webhook_url):
            if contact.email:
                targets.append((Channel.EMAIL, contact.email))
            if contact.webhook_url:
                targets.append((Channel.WEBHOOK, contact.webhook_url))
        elif org is not None and org.email and valid_email(org.email):
            targets.append((Channel.EMAIL, org.email))
        if not targets:
            no_contact.append(impact)
            continue
        org_name = (contact.name if contact else None) or (org.name if org else "") or impact.org
        evidence = {
            **impact.to_dict(),
            "org_name": org_name,
            "policy": policy.ref,
            "notice_from": notice_from,
            "enforce_from": enforce.isoformat(),
            "impact_generated_at": report.generated_at,
        }
        lang = (contact.language if contact else None) or language
        message_id = message_id_for(name, impact.org, domain)
        planned.extend(
            NewDelivery(
                org=impact.org,
                channel=channel,
                recipient=recipient,
                language=lang,
                message_id=message_id,
                evidence=evidence,
            )
            for channel, recipient in targets
        )
    return Plan(campaign, planned, no_contact, below)
