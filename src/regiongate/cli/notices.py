"""``regiongate notices``: warn affected organisations before a policy is enforced.

- ``notices plan`` reads an impact report (``regiongate impact ... --json FILE``) and plans one
  notice per affected organisation and channel, recipient from ``--contacts`` or the accounts
  store; organisations without any contact are listed, not dropped. Re-planning a campaign
  adds only what is new.
- ``notices send`` delivers what is pending (and retries what failed) by e-mail and signed
  webhook, rate-limited and resumable after a crash (see ``regiongate.notify.send`` for the
  exact delivery guarantee).
- ``notices status`` counts notices by status and channel and lists the failed and bounced.

Exit codes: 0 done; 1 ``send`` left notices bounced or failed, or a channel stopped, or a
campaign does not exist; 2 bad input, bad configuration or a store that does not answer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from regiongate.errors import RegiongateError

if TYPE_CHECKING:
    from regiongate.config import Settings
    from regiongate.notify.model import Delivery
    from regiongate.notify.send import Outcome
    from regiongate.notify.store import NoticeStore

__all__ = ["main", "notices_app"]

notices_app = typer.Typer(
    help="Notices to affected organisations before enforcement: plan, send, status.",
    no_args_is_help=True,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+")
_STATUSES = ("pending", "sending", "delivered", "failed", "bounced")


class Language(StrEnum):
    EN = "en"
    ZH_HANS = "zh-Hans"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        help="Configuration TOML (default: $REGIONGATE_CONFIG, else built-ins).",
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="Store with the notice tables (overrides store.url): sqlite:///PATH or "
        "postgresql://...",
    ),
]
CampaignOption = Annotated[
    str | None,
    typer.Option("--campaign", metavar="NAME", help="Only this campaign (default: all)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


# --- plumbing ------------------------------------------------------------------------------------


def _die(message: str, code: int = 2) -> typer.Exit:
    text = " ".join(message.split()) or "failed"
    err.print(f"[bold red]error:[/] {escape(text)}", highlight=False)
    return typer.Exit(code)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _settings(config: Path | None, store_url: str | None) -> Settings:
    from regiongate.config import load_settings

    try:
        return load_settings(config, overrides={"store": {"url": store_url}})
    except RegiongateError as exc:
        raise _die(str(exc)) from None


def _store_down(exc: Exception) -> typer.Exit:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = re.sub(r"^store (\S+): ", r"\1: ", line)
    return _die(f"store unavailable: {line}")


@contextlib.contextmanager
def _open_store(settings: Settings) -> Iterator[NoticeStore]:
    """The notice store (schema migrated); a store that does not answer exits 2."""
    from regiongate.accounts.store import StoreUnavailable
    from regiongate.notify.store import NoticeStore

    url = settings.store_url()
    try:
        store = NoticeStore(url)
    except StoreUnavailable as exc:
        raise _store_down(exc) from None
    except ValueError as exc:
        raise _die(str(exc)) from None
    try:
        try:
            store.migrate()
        except StoreUnavailable as exc:
            raise _store_down(exc) from None
        try:
            yield store
        except StoreUnavailable as exc:
            raise _store_down(exc) from None
    finally:
        store.close()


def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _share(value: float) -> str:
    from regiongate.notify.render import format_share

    return f"{format_share(value)}%"


# --- plan ----------------------------------------------------------------------------------------


@notices_app.command("plan")
def plan(
    policy: Annotated[
        str, typer.Option("--policy", metavar="P", help="Policy file or preset the report is for.")
    ],
    impact: Annotated[
        Path,
        typer.Option(
            "--impact", metavar="FILE", help="Impact report (`regiongate impact --json`)."
        ),
    ],
    min_requests: Annotated[
        int,
        typer.Option("--min-requests", metavar="N", min=1, help="Least affected requests."),
    ] = 1,
    min_share: Annotated[
        float,
        typer.Option(
            "--min-share", metavar="F", min=0.0, max=1.0, help="Least affected share (0-1)."
        ),
    ] = 0.0,
    contacts: Annotated[
        Path | None,
        typer.Option(
            "--contacts",
            metavar="FILE",
            help="CSV or JSON: org, email, webhook_url, language, name (else the org's e-mail "
            "in the accounts store).",
        ),
    ] = None,
    language: Annotated[
        Language, typer.Option("--language", help="Language where a contact names none.")
    ] = Language.EN,
    campaign: Annotated[
        str | None,
        typer.Option("--campaign", metavar="NAME", help="Campaign name [default: the policy ref]."),
    ] = None,
    product: Annotated[
        str | None,
        typer.Option("--product", metavar="NAME", help="What the notice calls the API."),
    ] = None,
    support: Annotated[
        str | None,
        typer.Option(
            "--support", metavar="CONTACT", help="Support address or URL the notice names."
        ),
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Plan one notice per affected organisation (idempotent: re-planning adds only new ones)."""
    from regiongate.notify.inputs import load_contacts, load_impact
    from regiongate.notify.plan import build_plan
    from regiongate.policy import load_policy

    settings = _settings(config, store)
    try:
        pol = load_policy(policy)
        report = load_impact(impact)
        contact_map = load_contacts(contacts) if contacts is not None else None
    except RegiongateError as exc:
        raise _die(str(exc)) from None
    sender = settings.notify.sender or ""
    domain = sender.rpartition("@")[2].strip("<> ") if "@" in sender else "regiongate.local"
    with _open_store(settings) as st:
        existing = st.get_campaign(campaign or pol.ref)
        if existing is not None:
            domain = str(existing.params.get("message_id_domain") or domain)
        try:
            planned = build_plan(
                pol,
                report,
                campaign_id=campaign,
                language=str(language),
                min_requests=min_requests,
                min_share=min_share,
                contacts=contact_map,
                lookup=st.get_org,
                product=product,
                support=support,
                domain=domain,
            )
            result = st.plan(planned.campaign, planned.deliveries)
        except (RegiongateError, ValueError) as exc:
            raise _die(str(exc)) from None
    c = result.campaign
    if c.enforce_from <= time.time():
        err.print(
            f"[yellow]warning:[/] the enforcement date {_when(c.enforce_from)} has passed: these "
            "notices announce a change that is already in force",
            highlight=False,
        )
    no_contact = [
        {"org": o.org, "affected_requests": o.affected_requests, "affected_share": o.affected_share}
        for o in planned.no_contact
    ]
    if as_json:
        _print_json(
            {
                "campaign": c.to_dict(),
                "campaign_created": result.campaign_created,
                "added": [d.to_dict() for d in result.added],
                "already_planned": [d.to_dict() for d in result.existing],
                "no_contact": no_contact,
                "below_threshold": [o.org for o in planned.below_threshold],
                "not_organisations": report.not_organisations,
            }
        )
        return
    out.print(
        f"campaign [bold]{escape(c.id)}[/] ({'new' if result.campaign_created else 'existing'}): "
        f"policy {escape(c.policy)}, requests blocked from {_when(c.enforce_from)}",
        highlight=False,
    )
    if result.added:
        table = Table(title="planned now", title_justify="left")
        for col in ("org", "channel", "recipient", "language", "affected", "share"):
            table.add_column(
                col,
                justify="right" if col in {"affected", "share"} else "left",
                overflow="fold",
            )
        for d in result.added:
            table.add_row(
                escape(d.org),
                str(d.channel),
                escape(d.recipient),
                d.language,
                f"{int(d.evidence.get('affected_requests') or 0):,}",
                _share(float(d.evidence.get("affected_share") or 0.0)),
            )
        out.print(table)
    out.print(
        f"{len(result.added)} notices added, {len(result.existing)} already planned; "
        f"{len(planned.below_threshold)} organisations unaffected or below the thresholds "
        f"(affected requests >= {min_requests}, share >= {_share(min_share)})",
        highlight=False,
    )
    if report.not_organisations:
        shown = ", ".join(repr(o)[:40] for o in report.not_organisations[:5])
        more = len(report.not_organisations) - 5
        err.print(
            f"skipped {len(report.not_organisations)} report entries that name no organisation "
            f"(lines without one, or ids that are not organisation ids): {escape(shown)}"
            + (f" and {more} more" if more > 0 else ""),
            highlight=False,
        )
    if planned.no_contact:
        err.print(
            f"[yellow]no contact[/] for {len(planned.no_contact)} affected organisations "
            "(not planned; add them to --contacts or give them an e-mail in the accounts "
            "store):",
            highlight=False,
        )
        for o in planned.no_contact:
            s = "" if o.affected_requests == 1 else "s"
            err.print(
                f"  no contact: {escape(o.org)} ({o.affected_requests:,} affected request{s}, "
                f"{_share(o.affected_share)})",
                highlight=False,
            )


# --- send ----------------------------------------------------------------------------------------


@notices_app.command("send")
def send(
    campaign: CampaignOption = None,
    smtp: Annotated[
        str | None,
        typer.Option(
            "--smtp",
            metavar="URL",
            help="smtp://[USER:PASS@]HOST[:PORT] or smtps://... [default: notify.smtp_url].",
        ),
    ] = None,
    sender: Annotated[
        str | None,
        typer.Option("--sender", metavar="ADDR", help="From address [default: notify.sender]."),
    ] = None,
    webhook_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--webhook-secret-file", metavar="FILE", help="Shared secret that signs webhooks."
        ),
    ] = None,
    rate: Annotated[
        str, typer.Option("--rate", metavar="N/s", help="Most notices per second (or N/m, N/h).")
    ] = "10/s",
    burst: Annotated[
        int, typer.Option("--burst", min=1, help="Notices that may go at once within the rate.")
    ] = 1,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", metavar="K", min=1, help="Attempts per notice.")
    ] = 5,
    backoff: Annotated[
        float,
        typer.Option("--backoff", min=0.0, help="First retry delay in seconds (doubles)."),
    ] = 2.0,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds per SMTP step or webhook call.")
    ] = 30.0,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Deliver pending notices (and retry failed ones): e-mail and signed webhooks."""
    from regiongate.notify.model import Channel
    from regiongate.notify.send import Sender, SmtpConfig, parse_rate

    settings = _settings(config, store)
    try:
        per_second = parse_rate(rate)
    except ValueError as exc:
        raise _die(f"--rate: {exc}") from None
    smtp_url = smtp or settings.notify.smtp_url
    from_addr = sender or settings.notify.sender
    try:
        smtp_config = SmtpConfig.from_url(smtp_url, timeout=timeout) if smtp_url else None
    except ValueError as exc:
        raise _die(str(exc)) from None
    if from_addr is not None and not _EMAIL.fullmatch(from_addr.strip()):
        raise _die(f"--sender {from_addr!r} is not an e-mail address")
    secret: bytes | None = None
    if webhook_secret_file is not None:
        try:
            secret = webhook_secret_file.read_bytes().strip()
        except OSError as exc:
            raise _die(f"{webhook_secret_file}: cannot read ({exc.strerror})") from None
        if not secret:
            raise _die(f"{webhook_secret_file}: the webhook secret is empty")

    def show(delivery: Delivery, outcome: Outcome) -> None:
        if as_json:
            return
        style = {"delivered": "green", "bounced": "bold red", "failed": "red"}[str(outcome.status)]
        retry = " (will retry)" if outcome.retry and str(outcome.status) == "failed" else ""
        out.print(
            f"[{style}]{outcome.status}[/]{retry} {escape(delivery.org)} {delivery.channel} "
            f"{escape(delivery.recipient)}: {escape(outcome.detail)}",
            highlight=False,
        )

    with _open_store(settings) as st:
        if campaign is not None and st.get_campaign(campaign) is None:
            raise _die(f"no campaign {campaign!r} (see `regiongate notices status`)", 1)
        work = st.work(campaign, max_attempts=max_attempts)
        if work.get(Channel.EMAIL) and (smtp_config is None or from_addr is None):
            missing = "--smtp URL (notify.smtp_url)" if smtp_config is None else ""
            if from_addr is None:
                missing += (" and " if missing else "") + "--sender ADDR (notify.sender)"
            raise _die(f"{work[Channel.EMAIL]} e-mail notices to send, but no {missing}")
        if work.get(Channel.WEBHOOK) and secret is None:
            raise _die(
                f"{work[Channel.WEBHOOK]} webhook notices to send, but no --webhook-secret-file"
            )
        worker = Sender(
            st,
            campaign=campaign,
            smtp=smtp_config,
            sender=from_addr.strip() if from_addr else None,
            webhook_secret=secret,
            rate=per_second,
            burst=burst,
            max_attempts=max_attempts,
            backoff=backoff,
            timeout=timeout,
            on_result=show,
        )
        import asyncio  # (here: the other commands start without it)

        report = asyncio.run(worker.run())
    if as_json:
        _print_json(report.to_dict())
    else:
        parts = [
            f"{report.delivered} delivered",
            f"{report.bounced} bounced",
            f"{report.failed + report.exhausted} failed",
        ]
        if report.retrying:
            parts.append(f"{report.retrying} failed attempts retried")
        if report.resent:
            parts.append(f"{report.resent} resent after an interrupted run (same Message-ID)")
        if report.lost_claims:
            parts.append(f"{report.lost_claims} taken over by another sender")
        out.print(", ".join(parts), highlight=False)
        for channel, why in report.stopped.items():
            err.print(f"[bold red]{channel} stopped:[/] {escape(why)}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


# --- status --------------------------------------------------------------------------------------


@notices_app.command("status")
def status(
    campaign: CampaignOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Notices by status and channel; the failed and bounced ones with their errors."""
    from regiongate.notify.model import Status

    settings = _settings(config, store)
    with _open_store(settings) as st:
        if campaign is not None:
            found = st.get_campaign(campaign)
            if found is None:
                raise _die(f"no campaign {campaign!r} (see `regiongate notices status`)", 1)
            chosen = [found]
        else:
            chosen = st.list_campaigns()
        counts = st.counts(campaign)
        problems = st.list_deliveries(campaign, statuses=(Status.FAILED, Status.BOUNCED))
    report: list[dict[str, Any]] = []
    for c in chosen:
        by_channel: dict[str, dict[str, int]] = {}
        totals = dict.fromkeys(_STATUSES, 0)
        for (cid, channel, state), n in sorted(counts.items()):
            if cid != c.id:
                continue
            by_channel.setdefault(channel, dict.fromkeys(_STATUSES, 0))[state] = n
            totals[state] = totals.get(state, 0) + n
        report.append(
            {
                "campaign": c.id,
                "policy": c.policy,
                "created": c.created,
                "enforce_from": dt.datetime.fromtimestamp(c.enforce_from, dt.UTC).isoformat(),
                "counts": by_channel,
                "totals": totals,
                "total": sum(totals.values()),
                "problems": [
                    {
                        "org": d.org,
                        "channel": str(d.channel),
                        "recipient": d.recipient,
                        "status": str(d.status),
                        "attempts": d.attempts,
                        "error": d.last_error,
                        "retry_at": d.next_attempt,
                        "updated": d.updated,
                    }
                    for d in problems
                    if d.campaign == c.id
                ],
            }
        )
    if as_json:
        _print_json({"campaigns": report})
        return
    if not report:
        err.print("no notice campaigns (plan one with `regiongate notices plan`)")
        return
    for entry in report:
        table = Table(
            title=f"[bold]{escape(entry['campaign'])}[/] — policy {escape(entry['policy'])}, "
            f"requests blocked from {entry['enforce_from'][:16].replace('T', ' ')} UTC",
            title_justify="left",
        )
        table.add_column("channel")
        for s in (*_STATUSES, "total"):
            table.add_column(s, justify="right")
        for channel, row in sorted(entry["counts"].items()):
            table.add_row(channel, *(str(row[s]) for s in _STATUSES), str(sum(row.values())))
        totals = entry["totals"]
        table.add_row("[bold]all[/]", *(str(totals[s]) for s in _STATUSES), str(entry["total"]))
        out.print(table)
        if entry["problems"]:
            bad = Table(title="failed and bounced", title_justify="left")
            for col in ("org", "channel", "recipient", "status", "attempts", "error"):
                bad.add_column(
                    col, overflow="fold", justify="right" if col == "attempts" else "left"
                )
            for p in entry["problems"]:
                bad.add_row(
                    escape(p["org"]),
                    p["channel"],
                    escape(p["recipient"]),
                    p["status"],
                    str(p["attempts"]),
                    escape(p["error"] or ""),
                )
            out.print(bad)


def main() -> None:
    """Run ``notices`` on its own (``python -m regiongate.cli.notices``)."""
    notices_app(prog_name="regiongate notices")


if __name__ == "__main__":
    main()
