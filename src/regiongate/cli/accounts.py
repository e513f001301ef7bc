"""``regiongate accounts``, ``payments`` and ``audit``: the account store from the command line.

- ``accounts list / show`` read organisations, their keys, payments and audit trail;
  ``accounts suspend / reinstate / warn / appeal`` move an organisation by hand (audited as
  ``cli:$USER``); ``accounts import`` loads the key registry (raw keys are hashed at once and
  never stored or printed).
- ``accounts reviews / review`` list the review queue (organisations the circumvention score
  flagged, each with its explained score) and decide one: dismissed, warned or suspended.
- ``payments import`` records payments and applies the policy's payments rule.
- ``audit export`` streams the append-only audit log as JSON lines or CSV.

Imports read CSV (header row), a JSON array of objects or JSON lines, validate every row
before writing anything (all or nothing), and name ``FILE:LINE``, the row and the field of
every problem. Exit codes: 0 done, 1 a state change refused or with nothing to do, 2 bad
input, bad configuration or a store that does not answer.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import math
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TextIO, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from regiongate.accounts.model import (
    AuditEntry,
    Key,
    Org,
    Payment,
    State,
    TransitionError,
    valid_id,
)
from regiongate.cli.files import atomic_output
from regiongate.errors import RegiongateError

if TYPE_CHECKING:
    from regiongate.accounts.identity import KeyHasher
    from regiongate.accounts.store import Store
    from regiongate.config import Settings
    from regiongate.policy import Policy

__all__ = ["accounts_app", "audit_app", "payments_app"]

accounts_app = typer.Typer(
    help="Organisations: their API keys, state (active, warned, suspended, appeal_pending, "
    "reinstated) and audit trail.",
    no_args_is_help=True,
)
payments_app = typer.Typer(
    help="Record payments and apply the policy's payments rule.", no_args_is_help=True
)
audit_app = typer.Typer(help="Export the append-only audit log.", no_args_is_help=True)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")

PAGE: Final = 1000  # audit entries (and organisations) read per store call
MAX_PROBLEMS: Final = 50  # bad rows printed before "... and N more"
_KEY_ID = re.compile(r"kid_[0-9a-f]{32}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_TERRITORY = re.compile(r"[A-Z]{2}(-[A-Z0-9]{1,3})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_MAX_KEY: Final = 512  # the gateway never reads a longer key from a header
_LATEST: Final = 253_402_300_800.0  # 10000-01-01: beyond it a timestamp is not seconds


class InputFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"


class AuditFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


# --- options -------------------------------------------------------------------------------------

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
        help="Account store (overrides store.url): sqlite:///PATH, postgresql://..., redis://...",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
OrgArg = Annotated[str, typer.Argument(metavar="ORG", help="Organisation id.", show_default=False)]
ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (kept in the audit log).", show_default=False)
]
FileArg = Annotated[
    Path,
    typer.Argument(
        metavar="FILE", help="CSV, JSON array or JSON lines; - for stdin.", show_default=False
    ),
]
FormatOption = Annotated[
    InputFormat | None,
    typer.Option("--format", help="Input format (default: from the extension, else the content)."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Validate and report what would change; write nothing.")
]


# --- plumbing ------------------------------------------------------------------------------------


def _die(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _actor() -> str:
    return f"cli:{os.environ.get('USER') or 'unknown'}"


def _safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
        query = parts.query
        if "password" in query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs])
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable URL>"


def _store_down(exc: Exception, url: str) -> typer.Exit:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = re.sub(r"^store \S+: ", "", line)  # the backends name the store; we do, once
    return _die(f"account store {_safe_url(url)} is unavailable: {line}")


def _settings(config: Path | None, store_url: str | None) -> Settings:
    from regiongate.config import load_settings

    try:
        return load_settings(config, overrides={"store": {"url": store_url}})
    except RegiongateError as exc:
        raise _die(str(exc)) from None


@contextlib.contextmanager
def _open_store(settings: Settings) -> Iterator[Store]:
    """The configured store; a store that does not answer (now or midway) exits 2."""
    from regiongate.accounts.store import StoreUnavailable, store_from_url

    url = settings.store_url()
    try:
        store = store_from_url(url)
    except StoreUnavailable as exc:
        raise _store_down(exc, url) from None
    except ValueError as exc:
        raise _die(str(exc)) from None
    try:
        yield store
    except StoreUnavailable as exc:
        raise _store_down(exc, url) from None
    finally:
        store.close()


def _when(ts: float) -> str:
    if not ts:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _check_org(org: str) -> str:
    if not valid_id(org):
        raise typer.BadParameter("must be 1-200 printable characters", param_hint="ORG")
    return org


def _check_reason(reason: str) -> str:
    if not reason.strip():
        raise typer.BadParameter("must not be empty", param_hint="--reason")
    return reason.strip()


def _all_orgs(store: Store, state: State | None) -> list[Org]:
    orgs: list[Org] = []
    while True:
        page = store.list_orgs(state=state, limit=PAGE, offset=len(orgs))
        orgs.extend(page)
        if len(page) < PAGE:
            return orgs


def _audit_pages(store: Store, *, org: str | None, since: int) -> Iterator[list[AuditEntry]]:
    seq = since
    while True:
        page = store.audit(org=org, since_seq=seq, limit=PAGE)
        if page:
            yield page
            seq = page[-1].seq
        if len(page) < PAGE:
            return


# --- accounts list / show ------------------------------------------------------------------------


@accounts_app.command("list")
def accounts_list(
    state: Annotated[State | None, typer.Option("--state", help="Only this state.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Organisations: id, name, state, since when, and how many live keys."""
    settings = _settings(config, store)
    with _open_store(settings) as st:
        orgs = _all_orgs(st, state)
        counts: dict[str, int] = {}
        for key in st.list_keys():
            if not key.revoked:
                counts[key.org] = counts.get(key.org, 0) + 1
    if as_json:
        _print_json([{**o.to_dict(), "keys": counts.get(o.id, 0)} for o in orgs])
        return
    if not orgs:
        err.print("no organisations" + (f" in state {state}" if state else ""), highlight=False)
        return
    table = Table(title_justify="left")
    for col in ("org", "name", "state", "since", "keys"):
        table.add_column(col, justify="right" if col == "keys" else "left")
    for o in orgs:
        style = {"suspended": "bold red", "appeal_pending": "red", "warned": "yellow"}
        text = str(o.state)
        shown = f"[{style[text]}]{text}[/]" if text in style else text
        table.add_row(
            escape(o.id), escape(o.name), shown, _when(o.state_since), str(counts.get(o.id, 0))
        )
    out.print(table)
    by_state: dict[str, int] = {}
    for o in orgs:
        by_state[str(o.state)] = by_state.get(str(o.state), 0) + 1
    out.print(
        f"{len(orgs)} organisations: " + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())),
        highlight=False,
    )


@accounts_app.command("show")
def accounts_show(
    org: OrgArg,
    last: Annotated[int, typer.Option("--last", min=0, help="Audit entries to show.")] = 20,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """One organisation: its state, keys, payments and latest audit entries."""
    _check_org(org)
    settings = _settings(config, store)
    with _open_store(settings) as st:
        found = st.get_org(org)
        if found is None:
            raise _die(f"no organisation {org!r} (see `regiongate accounts list`)", 1)
        keys = st.list_keys(org)
        payments = st.list_payments(org)
        reviews = st.list_reviews(org=org, status=None, limit=5)
        recent: deque[AuditEntry] = deque(maxlen=last)
        for page in _audit_pages(st, org=org, since=0):
            recent.extend(page)
    if as_json:
        _print_json(
            {
                "org": found.to_dict(),
                "keys": [k.to_dict() for k in keys],
                "payments": [p.to_dict() for p in payments],
                "reviews": [r.to_dict() for r in reviews],
                "audit": [e.to_dict() for e in recent],
            }
        )
        return
    head = Table(title=f"[bold]{escape(found.id)}[/]", show_header=False, title_justify="left")
    head.add_column("field", style="dim")
    head.add_column("value")
    head.add_row("name", escape(found.name) or "—")
    head.add_row("email", escape(found.email or "—"))
    head.add_row("state", f"{found.state} since {_when(found.state_since)}")
    head.add_row("keys", f"{sum(not k.revoked for k in keys)} live, {len(keys)} in all")
    head.add_row("payments", str(len(payments)))
    open_reviews = [r for r in reviews if r.status == "open"]
    if open_reviews:
        r = open_reviews[0]
        head.add_row(
            "review",
            f"{escape(r.id)} open since {_when(r.opened_at)}: circumvention score {r.score:.1f}"
            + (f" ({escape(str(r.explanation.get('pattern')))})"
               if r.explanation.get("pattern") else ""),
        )  # fmt: skip
    out.print(head)
    if keys:
        table = Table(title="keys", title_justify="left")
        table.add_column("key id", no_wrap=True, min_width=36)  # whole: it is what to copy
        for col in ("label", "created", "revoked"):
            table.add_column(col, overflow="fold")
        for k in keys:
            table.add_row(k.key_id, escape(k.label), _when(k.created), "yes" if k.revoked else "")
        out.print(table)
    if payments:
        table = Table(title="payments", title_justify="left")
        for col in ("id", "at", "card", "billing", "method", "amount"):
            table.add_column(col, justify="right" if col == "amount" else "left")
        for p in payments:
            amount = "" if p.amount is None else f"{p.amount:g} {p.currency or ''}".strip()
            table.add_row(
                escape(p.id),
                _when(p.at),
                p.card_country or "",
                p.billing_country or "",
                escape(p.method),
                escape(amount),
            )
        out.print(table)
    if recent:
        table = Table(title=f"audit (last {len(recent)})", title_justify="left")
        for col in ("seq", "at", "actor", "action", "change", "reason"):
            table.add_column(col, justify="right" if col == "seq" else "left", overflow="fold")
        for e in recent:
            change = f"{e.from_state} → {e.to_state}" if e.to_state else ""
            table.add_row(
                str(e.seq), _when(e.at), escape(e.actor), escape(e.action), change, escape(e.reason)
            )
        out.print(table)


# --- accounts suspend / reinstate / warn / appeal ------------------------------------------------


def _transition(
    org: str,
    to: State,
    *,
    reason: str,
    evidence: Sequence[str] = (),
    force: bool = False,
    can_force: bool = False,
    config: Path | None,
    store: str | None,
    as_json: bool,
) -> None:
    _check_org(org)
    reason = _check_reason(reason)
    actor = _actor()
    settings = _settings(config, store)

    def refused(message: str, state: State) -> typer.Exit:
        if as_json:
            _print_json({"org": org, "changed": False, "state": str(state), "error": message})
        return _die(message, 1)

    with _open_store(settings) as st:
        before = st.get_org(org)
        if before is None:
            raise _die(f"no organisation {org!r} (see `regiongate accounts list`)", 1)
        try:
            after = st.transition(
                org, to, actor=actor, reason=reason, evidence=evidence, force=force
            )
        except TransitionError as exc:
            hint = "; --force to override" if can_force and not force else ""
            raise refused(f"{exc}{hint}", before.state) from None
        if after is None:
            now = st.get_org(org) or before
            raise refused(f"{org} is already {now.state}: nothing to do", now.state)
    if as_json:
        _print_json(
            {
                "org": org,
                "changed": True,
                "from": str(before.state),
                "to": str(after.state),
                "actor": actor,
                "reason": reason,
                "evidence": list(evidence),
                "forced": force,
            }
        )
        return
    out.print(
        f"{escape(org)}: {before.state} → [bold]{after.state}[/] by {escape(actor)}"
        f"{' (forced)' if force else ''}: {escape(reason)}",
        highlight=False,
    )


@accounts_app.command("suspend")
def accounts_suspend(
    org: OrgArg,
    reason: ReasonOption,
    evidence: Annotated[
        list[str] | None,
        typer.Option("--evidence", metavar="ID", help="Event or payment id (repeatable)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Even from a state that does not lead there.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Suspend an organisation: the gateway refuses its requests (403 account_deactivated)."""
    _transition(
        org,
        State.SUSPENDED,
        reason=reason,
        evidence=evidence or (),
        force=force,
        can_force=True,
        config=config,
        store=store,
        as_json=as_json,
    )


@accounts_app.command("reinstate")
def accounts_reinstate(
    org: OrgArg,
    reason: ReasonOption,
    force: Annotated[
        bool, typer.Option("--force", help="Even from a state that does not lead there.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Reinstate a suspended (or appealing) organisation: its requests are served again."""
    _transition(
        org,
        State.REINSTATED,
        reason=reason,
        force=force,
        can_force=True,
        config=config,
        store=store,
        as_json=as_json,
    )


@accounts_app.command("warn")
def accounts_warn(
    org: OrgArg,
    reason: ReasonOption,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Warn an organisation (its requests are still served)."""
    _transition(org, State.WARNED, reason=reason, config=config, store=store, as_json=as_json)


@accounts_app.command("appeal")
def accounts_appeal(
    org: OrgArg,
    reason: ReasonOption,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Record a suspended organisation's appeal (appeal_pending; still refused meanwhile)."""
    _transition(
        org, State.APPEAL_PENDING, reason=reason, config=config, store=store, as_json=as_json
    )


class ReviewStatus(StrEnum):
    OPEN = "open"
    DISMISSED = "dismissed"
    WARNED = "warned"
    SUSPENDED = "suspended"
    ALL = "all"


class Decision(StrEnum):
    DISMISSED = "dismissed"
    WARNED = "warned"
    SUSPENDED = "suspended"


def _top_signals(explanation: dict[str, Any], k: int = 3) -> str:
    signals = explanation.get("signals")
    if not isinstance(signals, list):
        return ""
    parts = [
        f"{s.get('signal')} {float(s.get('points', 0)):.0f}"
        for s in signals[:k]
        if isinstance(s, dict) and float(s.get("points", 0) or 0) > 0
    ]
    return ", ".join(parts)


@accounts_app.command("reviews")
def accounts_reviews(
    status: Annotated[
        ReviewStatus, typer.Option("--status", help="open (default), a decision, or all.")
    ] = ReviewStatus.OPEN,
    org: Annotated[
        str | None, typer.Option("--org", metavar="ORG", help="Only this organisation.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """The review queue: organisations the circumvention score flagged, newest first."""
    if org is not None:
        _check_org(org)
    settings = _settings(config, store)
    with _open_store(settings) as st:
        found = st.list_reviews(
            status=None if status is ReviewStatus.ALL else str(status), org=org, limit=limit
        )
    if as_json:
        _print_json([r.to_dict() for r in found])
        return
    if not found:
        err.print(f"no reviews ({status})", highlight=False)
        return
    table = Table(title_justify="left")
    for col in ("review", "org", "score", "pattern", "opened", "status", "top signals"):
        table.add_column(col, justify="right" if col == "score" else "left")
    for r in found:
        table.add_row(
            escape(r.id),
            escape(r.org),
            f"{r.score:.1f}",
            escape(str(r.explanation.get("pattern", ""))),
            _when(r.opened_at),
            r.status if r.status == "open" else f"{r.status} by {escape(r.closed_by or '?')}",
            escape(_top_signals(r.explanation)),
        )
    out.print(table)
    out.print(f"{len(found)} reviews; `regiongate accounts review ID` to see and decide one")


@accounts_app.command("review")
def accounts_review(
    review_id: Annotated[str, typer.Argument(metavar="ID", help="Review id (rv_...).")],
    decision: Annotated[
        Decision | None,
        typer.Option("--decision", help="Close it: dismissed, warned or suspended."),
    ] = None,
    note: Annotated[str, typer.Option("--note", help="Why (kept in the audit log).")] = "",
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Show a review's explained score; with --decision, decide it (the state changes too)."""
    from regiongate.accounts.service import ReviewClosed, decide_review

    if not valid_id(review_id):
        raise typer.BadParameter("must be 1-200 printable characters", param_hint="ID")
    if len(note) > 2000 or not note.isprintable():
        raise typer.BadParameter("at most 2000 printable characters", param_hint="--note")
    settings = _settings(config, store)
    with _open_store(settings) as st:
        if decision is None:
            review = st.get_review(review_id)
            if review is None:
                raise _die(f"no review {review_id!r} (see `regiongate accounts reviews`)", 1)
            changed = None
        else:
            try:
                outcome = decide_review(
                    st, review_id, str(decision), actor=_actor(), note=note.strip()
                )
            except ReviewClosed as exc:
                raise _die(str(exc), 1) from None
            if outcome is None:
                raise _die(f"no review {review_id!r} (see `regiongate accounts reviews`)", 1)
            review, changed = outcome
    if as_json:
        _print_json(
            {
                "review": review.to_dict(),
                "state_changed": None if changed is None else changed.to_dict(),
            }
        )
        return
    pattern = review.explanation.get("pattern")
    out.print(
        f"[bold]{escape(review.id)}[/] {escape(review.org)}: score {review.score:.1f}"
        f"{f' ({escape(str(pattern))})' if pattern else ''}, {review.status}, "
        f"opened {_when(review.opened_at)}",
        highlight=False,
    )
    explanation = review.explanation
    signals = explanation.get("signals") if isinstance(explanation, dict) else None
    if isinstance(signals, list) and signals:
        table = Table(title_justify="left")
        for col in ("signal", "value", "weight", "points", "because"):
            table.add_column(col, justify="left" if col in ("signal", "because") else "right")
        for sig in signals:
            if not isinstance(sig, dict):
                continue
            table.add_row(
                escape(str(sig.get("signal"))),
                f"{float(sig.get('value', 0)):.2f}",
                f"{float(sig.get('weight', 0)):g}",
                f"{float(sig.get('points', 0)):.1f}",
                escape(str(sig.get("detail", ""))),
            )
        out.print(table)
    if decision is not None:
        moved = f"; {review.org} is now {changed.state}" if changed is not None else ""
        out.print(f"decided: {review.status}{escape(moved)}", highlight=False)


# --- input files ---------------------------------------------------------------------------------


class InputFileError(RegiongateError):
    """An input file that cannot be imported; ``problems`` are ``FILE:LINE: ...`` lines."""

    def __init__(self, problems: list[str], summary: str) -> None:
        super().__init__(summary)
        self.problems = problems
        self.summary = summary


@dataclass(frozen=True, slots=True)
class _Row:
    number: int  # 1-based, data rows only
    line: int  # where the row starts in the file
    values: dict[str, Any]


class _FieldError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _field(errors: list[_FieldError], check: Callable[..., T], *args: Any, **kw: Any) -> T | None:
    """``check(*args, **kw)``, or ``None`` with its error appended to ``errors``."""
    try:
        return check(*args, **kw)
    except _FieldError as exc:
        errors.append(exc)
        return None


def _read_text(file: Path) -> tuple[str, str]:
    """(name for messages, text) of ``file`` (``-``: stdin)."""
    name = "<stdin>" if str(file) == "-" else str(file)
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except FileNotFoundError:
        raise InputFileError([], f"{name}: no such file") from None
    except OSError as exc:
        raise InputFileError([], f"{name}: cannot read ({exc.strerror})") from None
    try:
        return name, raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputFileError([], f"{name}:{line}: not UTF-8 text") from None


def _detect(name: str, text: str) -> InputFormat:
    suffix = Path(name).suffix.lower()
    first = text.lstrip()[:1]
    if suffix in {".jsonl", ".ndjson"}:
        return InputFormat.JSONL
    if suffix == ".csv":
        return InputFormat.CSV
    if first == "[":
        return InputFormat.JSON
    if first == "{" or suffix == ".json":
        return InputFormat.JSONL
    return InputFormat.CSV


def _unknown(key: str, allowed: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown field {key!r} (fields: {', '.join(allowed)}){hint}"


def _csv_rows(
    name: str, text: str, fields: Sequence[str], required: Sequence[str], problems: list[str]
) -> list[_Row]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[_Row] = []
    prev = 0
    try:
        for values in reader:
            start, prev = prev + 1, reader.line_num
            if not any(v.strip() for v in values):
                continue  # a blank line
            if header is None:
                header = [v.strip().lower() for v in values]
                at = f"{name}:{start}: header"
                bad = [f"{at}: an empty column name" for h in header if not h]
                bad += [f"{at}: {_unknown(h, fields)}" for h in header if h and h not in fields]
                bad += [
                    f"{at}: column {h!r} twice" for i, h in enumerate(header) if h in header[:i]
                ]
                bad += [f"{at}: no {r!r} column" for r in required if r not in header]
                if bad:
                    raise InputFileError(bad, f"{name}: the header row is wrong")
                continue
            number = len(rows) + 1
            if len(values) > len(header):
                problems.append(
                    f"{name}:{start}: row {number}: {len(values)} values, but the header has "
                    f"{len(header)} columns"
                )
            cells = {h: v for h, v in zip(header, values, strict=False) if v.strip()}
            rows.append(_Row(number, start, cells))
    except csv.Error as exc:
        raise InputFileError([], f"{name}:{reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise InputFileError([], f"{name}:1: empty: a CSV file needs a header row")
    return rows


def _json_rows(name: str, text: str) -> list[tuple[int, Any]]:
    """The elements of a JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    counted, line = 0, 1

    def line_at(pos: int) -> int:
        nonlocal counted, line
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        return pos

    pos = skip(0)
    if text[pos : pos + 1] != "[":
        raise InputFileError([], f"{name}:{line_at(pos)}: expected a JSON array of objects")
    items: list[tuple[int, Any]] = []
    pos = skip(pos + 1)
    if text[pos : pos + 1] != "]":
        while True:
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise InputFileError(
                    [], f"{name}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
                ) from None
            items.append((line_at(pos), value))
            pos = skip(end)
            if text[pos : pos + 1] == ",":
                pos = skip(pos + 1)
                continue
            if text[pos : pos + 1] == "]":
                break
            raise InputFileError(
                [], f"{name}:{line_at(pos)}: not valid JSON (expected ',' or ']' in the array)"
            )
    rest = skip(pos + 1)
    if rest < len(text):
        raise InputFileError([], f"{name}:{line_at(rest)}: not valid JSON (data after the array)")
    return items


def _jsonl_rows(name: str, text: str) -> list[tuple[int, Any]]:
    items: list[tuple[int, Any]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            whole = ""
            if not items:
                with contextlib.suppress(ValueError):
                    json.loads(text)
                    whole = "; the file is one JSON document: give an array of objects"
            raise InputFileError(
                [], f"{name}:{number}: not valid JSON ({exc.msg}, column {exc.colno}){whole}"
            ) from None
    return items


def _read_rows(
    file: Path,
    fmt: InputFormat | None,
    fields: Sequence[str],
    required: Sequence[str],
    problems: list[str],
) -> tuple[str, list[_Row]]:
    """Every row of ``file`` as field → value (absent or blank values left out); structural
    problems raise ``InputFileError``, row problems are appended to ``problems``."""
    name, text = _read_text(file)
    fmt = fmt or _detect(name, text)
    if fmt is InputFormat.CSV:
        return name, _csv_rows(name, text, fields, required, problems)
    items = _json_rows(name, text) if fmt is InputFormat.JSON else _jsonl_rows(name, text)
    rows: list[_Row] = []
    for number, (line, value) in enumerate(items, 1):
        if not isinstance(value, dict):
            problems.append(
                f"{name}:{line}: row {number}: expected an object, not {type(value).__name__}"
            )
            value = {}
        cells: dict[str, Any] = {}
        for key, v in value.items():
            k = key.strip().lower()
            if k not in fields:
                problems.append(f"{name}:{line}: row {number}: {_unknown(key, fields)}")
            elif v is not None and not (isinstance(v, str) and not v.strip()):
                cells[k] = v
        rows.append(_Row(number, line, cells))
    return name, rows


def _text(row: _Row, name: str, *, required: bool = False, limit: int = 200) -> str | None:
    value = row.values.get(name)
    if value is None:
        if required:
            raise _FieldError(name, "is required")
        return None
    if not isinstance(value, str):
        raise _FieldError(name, f"must be a string, not {type(value).__name__}")
    value = value.strip()
    if len(value) > limit:
        raise _FieldError(name, f"is longer than {limit} characters")
    if not value.isprintable():
        raise _FieldError(name, "contains control characters")
    return value


def _number(row: _Row, name: str) -> float | None:
    value = row.values.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _FieldError(name, f"must be a number, not {type(value).__name__}")
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value.strip()):
            raise _FieldError(name, f"{value.strip()!r:.40} is not a number")
        value = float(value)
    if not math.isfinite(value):
        raise _FieldError(name, "must be a finite number")
    return float(value)


def _timestamp(row: _Row, name: str) -> float:
    value = row.values.get(name)
    if value is None:
        raise _FieldError(name, "is required")
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _FieldError(
                name, f"{value.strip()!r:.40} is not ISO 8601 (2024-07-09T12:00Z) or epoch seconds"
            ) from None
        seconds = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    else:
        number = _number(row, name)
        seconds = 0.0 if number is None else number
    if not 0 <= seconds < _LATEST:
        hint = " (milliseconds? give seconds)" if seconds >= _LATEST else ""
        raise _FieldError(name, f"{seconds:g} is not a time after 1970 in epoch seconds{hint}")
    return seconds


@lru_cache(maxsize=1)
def _territories() -> frozenset[str]:
    import pycountry

    codes = {c.alpha_2 for c in pycountry.countries} | {s.code for s in pycountry.subdivisions}
    codes.add("XK")  # Kosovo: user-assigned, but what every payment processor uses
    return frozenset(codes)


def _territory(row: _Row, name: str) -> str | None:
    value = _text(row, name, limit=10)
    if value is None:
        return None
    code = value.upper()
    if not _TERRITORY.fullmatch(code):
        raise _FieldError(
            name, f"{value!r} is not a country code (2 letters, or ISO 3166-2 like UA-43)"
        )
    if code not in _territories():
        raise _FieldError(name, f"{code!r} is not an ISO 3166 country or subdivision code")
    return code


def _fail_rows(name: str, problems: list[str]) -> InputFileError:
    rows = {p.split(": row ", 1)[1].split(":", 1)[0] for p in problems if ": row " in p}
    what = f"{len(rows)} bad rows" if rows else f"{len(problems)} problems"
    return InputFileError(problems, f"{name}: {what}; nothing was imported")


def _report_input_error(exc: InputFileError) -> typer.Exit:
    for problem in exc.problems[:MAX_PROBLEMS]:
        err.print(escape(problem), highlight=False)
    if len(exc.problems) > MAX_PROBLEMS:
        err.print(f"... and {len(exc.problems) - MAX_PROBLEMS} more", highlight=False)
    return _die(exc.summary)


def _summary(title: str, rows: Sequence[tuple[str, str]]) -> None:
    table = Table(title=escape(title), show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("", justify="right")
    for what, value in rows:
        table.add_row(what, escape(value))
    out.print(table)


# --- accounts import -----------------------------------------------------------------------------

_KEY_FIELDS: Final = ("org", "name", "email", "key", "key_id", "label")


@dataclass(slots=True)
class _OrgPlan:
    name: str | None = None
    email: str | None = None
    name_row: int = 0
    email_row: int = 0


@dataclass(slots=True)
class _KeyPlan:
    key_id: str
    org: str
    label: str | None
    row: _Row
    raw: bool  # from a raw key: never name its value


@dataclass(slots=True)
class _KeyImport:
    rows: int = 0
    orgs: dict[str, _OrgPlan] = field(default_factory=dict)
    keys: dict[str, _KeyPlan] = field(default_factory=dict)
    orgs_created: list[str] = field(default_factory=list)
    orgs_updated: list[str] = field(default_factory=list)
    orgs_unchanged: int = 0
    keys_added: list[Key] = field(default_factory=list)
    keys_updated: list[Key] = field(default_factory=list)
    keys_unchanged: int = 0
    keys_revoked: list[str] = field(default_factory=list)  # listed but revoked: left revoked


def _key_rows(
    name: str, rows: list[_Row], hasher: Callable[[], KeyHasher], problems: list[str]
) -> _KeyImport:
    plan = _KeyImport(rows=len(rows))
    for row in rows:
        where = f"{name}:{row.line}: row {row.number}"
        errors: list[_FieldError] = []
        org = _field(errors, _text, row, "org", required=True)
        org_name = _field(errors, _text, row, "name", limit=500)
        email = _field(errors, _text, row, "email", limit=500)
        label = _field(errors, _text, row, "label", limit=500)
        if email is not None and not _EMAIL.fullmatch(email):
            errors.append(_FieldError("email", f"{email!r} is not an email address"))
        key_id: str | None = None
        raw = "key" in row.values
        if raw and "key_id" in row.values:
            errors.append(_FieldError("key", "give key or key_id, not both"))
        elif raw:
            value = row.values["key"]
            if not isinstance(value, str):
                errors.append(_FieldError("key", f"must be a string, not {type(value).__name__}"))
            elif len(value.strip()) > _MAX_KEY:
                errors.append(_FieldError("key", f"is longer than {_MAX_KEY} characters"))
            elif not value.strip().isprintable() or any(c.isspace() for c in value.strip()):
                errors.append(_FieldError("key", "contains spaces or control characters"))
            else:
                key_id = hasher().key_id(value.strip())
        elif "key_id" in row.values:
            value = row.values["key_id"]
            text = value.strip().lower() if isinstance(value, str) else ""
            if not _KEY_ID.fullmatch(text):  # the value is not shown: it may be a raw key
                errors.append(
                    _FieldError(
                        "key_id",
                        "not a key id (kid_ and 32 hex digits); a raw API key goes in 'key'",
                    )
                )
            else:
                key_id = text
        if org is not None:
            known = plan.orgs.setdefault(org, _OrgPlan())
            for attr, value in (("name", org_name), ("email", email)):
                seen: str | None = getattr(known, attr)
                if value is None:
                    continue
                if seen is None:
                    setattr(known, attr, value)
                    setattr(known, f"{attr}_row", row.number)
                elif seen != value:
                    first = getattr(known, f"{attr}_row")
                    errors.append(
                        _FieldError(attr, f"{value!r} differs from {seen!r} on row {first}")
                    )
        if org is not None and key_id is not None:
            other = plan.keys.get(key_id)
            what = "key" if raw else "key_id"
            if other is None:
                plan.keys[key_id] = _KeyPlan(key_id, org, label, row, raw)
            elif other.org != org:
                errors.append(
                    _FieldError(
                        what, f"the same key is on row {other.row.number} for {other.org!r}"
                    )
                )
            elif label is not None and other.label not in (None, label):
                errors.append(
                    _FieldError("label", f"{label!r} differs from row {other.row.number}")
                )
            elif label is not None:
                other.label = label
        problems.extend(f"{where}: {e}" for e in errors)
    return plan


def _plan_keys(store: Store, plan: _KeyImport, name: str, problems: list[str]) -> None:
    """Compare with the store: what is new, what changes, what conflicts."""
    for org_id, want in plan.orgs.items():
        have = store.get_org(org_id)
        if have is None:
            plan.orgs_created.append(org_id)
        elif (want.name is not None and want.name != have.name) or (
            want.email is not None and want.email != have.email
        ):
            plan.orgs_updated.append(org_id)
        else:
            plan.orgs_unchanged += 1
    existing = {k.key_id: k for k in store.list_keys()}
    for key_id, listed in plan.keys.items():
        stored = existing.get(key_id)
        if stored is None:
            plan.keys_added.append(Key(key_id, listed.org, listed.label or ""))
        elif stored.org != listed.org:
            what = "key" if listed.raw else "key_id"
            problems.append(
                f"{name}:{listed.row.line}: row {listed.row.number}: {what}: already registered "
                f"to organisation {stored.org!r}"
            )
        elif stored.revoked:
            plan.keys_revoked.append(key_id)
        elif listed.label is not None and listed.label != stored.label:
            plan.keys_updated.append(Key(key_id, listed.org, listed.label, stored.created))
        else:
            plan.keys_unchanged += 1


@accounts_app.command("import")
def accounts_import(
    file: FileArg,
    dry_run: DryRunOption = False,
    fmt: FormatOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Import the key registry: organisations and their API keys.

    Fields: org (required), name, email, and key (a raw API key: hashed at once, never stored
    or printed) or key_id (kid_...), label. Organisations are created or updated, keys added.
    Every row is checked first: one bad row and nothing is written. A key listed again after
    it was revoked stays revoked.
    """
    from regiongate.accounts.service import key_hasher

    settings = _settings(config, store)
    hashers: list[KeyHasher] = []

    def hasher() -> KeyHasher:
        if not hashers:
            hashers.append(key_hasher(settings.accounts))
        return hashers[0]

    actor = _actor()
    problems: list[str] = []
    try:
        name, rows = _read_rows(file, fmt, _KEY_FIELDS, ("org",), problems)
        plan = _key_rows(name, rows, hasher, problems)
        if problems:
            raise _fail_rows(name, problems)
        with _open_store(settings) as st:
            _plan_keys(st, plan, name, problems)
            if problems:
                raise _fail_rows(name, problems)
            if not dry_run:
                for org_id in [*plan.orgs_created, *plan.orgs_updated]:
                    want = plan.orgs[org_id]
                    st.upsert_org(org_id, name=want.name, email=want.email, actor=actor)
                for key in [*plan.keys_added, *plan.keys_updated]:
                    st.add_key(key, actor=actor)
    except InputFileError as exc:
        raise _report_input_error(exc) from None
    except RegiongateError as exc:  # the key secret
        raise _die(str(exc)) from None
    for key_id in plan.keys_revoked:
        err.print(f"[yellow]warning:[/] {key_id} is revoked; left revoked", highlight=False)
    counts = {
        "rows": plan.rows,
        "orgs_created": len(plan.orgs_created),
        "orgs_updated": len(plan.orgs_updated),
        "orgs_unchanged": plan.orgs_unchanged,
        "keys_added": len(plan.keys_added),
        "keys_updated": len(plan.keys_updated),
        "keys_unchanged": plan.keys_unchanged,
        "keys_revoked": len(plan.keys_revoked),
    }
    if as_json:
        _print_json({"file": name, "dry_run": dry_run, **counts})
        return
    title = f"{name}: " + ("dry run, nothing written" if dry_run else "imported")
    labels = {
        "keys_revoked": "keys left revoked",
    }
    _summary(title, [(labels.get(k, k.replace("_", " ")), f"{v:,}") for k, v in counts.items()])


# --- payments import -----------------------------------------------------------------------------

_PAYMENT_FIELDS: Final = (
    "id",
    "org",
    "at",
    "card_country",
    "billing_country",
    "method",
    "currency",
    "amount",
)


def _payment_rows(name: str, rows: list[_Row], problems: list[str]) -> tuple[list[Payment], int]:
    """The valid payments in file order (each id once), and how many rows repeated one."""
    payments: dict[str, tuple[Payment, int]] = {}
    repeated = 0
    for row in rows:
        errors: list[_FieldError] = []
        pid = _field(errors, _text, row, "id", required=True)
        org = _field(errors, _text, row, "org", required=True)
        at = _field(errors, _timestamp, row, "at")
        card = _field(errors, _territory, row, "card_country")
        billing = _field(errors, _territory, row, "billing_country")
        method = _field(errors, _text, row, "method", limit=40)
        currency = _field(errors, _text, row, "currency", limit=10)
        amount = _field(errors, _number, row, "amount")
        if currency is not None and not _CURRENCY.fullmatch(currency.upper()):
            errors.append(_FieldError("currency", f"{currency!r} is not 3 letters (ISO 4217)"))
        where = f"{name}:{row.line}: row {row.number}"
        if errors or pid is None or org is None or at is None:
            problems.extend(f"{where}: {e}" for e in errors)
            continue
        payment = Payment(
            id=pid,
            org=org,
            at=at,
            card_country=card,
            billing_country=billing,
            method=method or "card",
            currency=currency.upper() if currency else None,
            amount=amount,
        )
        seen = payments.get(payment.id)
        if seen is None:
            payments[payment.id] = (payment, row.number)
        elif seen[0] != payment:
            problems.append(
                f"{where}: id: payment {payment.id!r} is also on row {seen[1]}, with other values"
            )
        else:
            repeated += 1
    return [p for p, _ in payments.values()], repeated


def _simulate(payments: Sequence[Payment], states: dict[str, State], policy: Policy) -> None:
    """What the payments rule would do (``--dry-run``): update ``states`` in place."""
    rules = policy.accounts
    if rules.payments == "ignore":
        return
    target = State.SUSPENDED if rules.payments == "suspend" else State.WARNED
    expect = (
        {State.ACTIVE, State.WARNED, State.REINSTATED}
        if target is State.SUSPENDED
        else {State.ACTIVE, State.REINSTATED}
    )
    for p in payments:
        if p.org in policy.exempt_accounts:
            continue
        if any(not policy.is_supported(t) for t in p.territories()):
            state = states.get(p.org, State.ACTIVE)
            if state in expect and state is not target:
                states[p.org] = target


@payments_app.command("import")
def payments_import(
    file: FileArg,
    dry_run: DryRunOption = False,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy", help="Policy file or preset name (default: the configured policy.source)."
        ),
    ] = None,
    fmt: FormatOption = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Import payments and apply the policy's payments rule to the new ones.

    Fields: id, org, at (ISO 8601 or epoch seconds), card_country, billing_country (ISO
    3166-1 alpha-2, or ISO 3166-2 like UA-43), method, currency, amount. A payment whose card
    or billing territory the policy does not support suspends (or warns) its organisation.
    Idempotent: payments already recorded are counted as duplicates and not applied again.
    """
    from regiongate.accounts.service import RulesEngine
    from regiongate.policy import load_policy

    settings = _settings(config, store)
    try:
        pol = load_policy(policy or settings.policy.source)
    except RegiongateError as exc:
        raise _die(str(exc)) from None
    actor = _actor()
    problems: list[str] = []
    try:
        name, rows = _read_rows(file, fmt, _PAYMENT_FIELDS, ("id", "org", "at"), problems)
        payments, repeated = _payment_rows(name, rows, problems)
        if problems:
            raise _fail_rows(name, problems)
    except InputFileError as exc:
        raise _report_input_error(exc) from None
    changed: dict[str, State] = {}
    with _open_store(settings) as st:
        orgs = sorted({p.org for p in payments})
        known = {pid.id for org in orgs for pid in st.list_payments(org)}
        fresh = [p for p in payments if p.id not in known]
        duplicates = repeated + len(payments) - len(fresh)
        if dry_run:
            before: dict[str, State] = {}
            for org in orgs:
                found = st.get_org(org)
                before[org] = found.state if found else State.ACTIVE
            after = dict(before)
            _simulate(fresh, after, pol)
            changed = {o: s for o, s in after.items() if s is not before[o]}
            new = len(fresh)
        else:
            engine = RulesEngine(st, lambda: pol)
            new = 0
            for p in fresh:
                added, moved = engine.on_payment(p, actor=actor)
                new += added
                duplicates += not added
                if moved is not None:
                    changed[moved.id] = moved.state
    suspended = sorted(o for o, s in changed.items() if s is State.SUSPENDED)
    warned = sorted(o for o, s in changed.items() if s is State.WARNED)
    if as_json:
        _print_json(
            {
                "file": name,
                "dry_run": dry_run,
                "policy": pol.ref,
                "rows": len(rows),
                "new": new,
                "duplicates": duplicates,
                "suspended": suspended,
                "warned": warned,
            }
        )
        return
    title = f"{name}: " + ("dry run, nothing written" if dry_run else "imported") + f" ({pol.ref})"
    _summary(
        title,
        [
            ("rows", f"{len(rows):,}"),
            ("new", f"{new:,}"),
            ("duplicates", f"{duplicates:,}"),
            (f"suspended ({len(suspended)})", ", ".join(suspended) or "—"),
            (f"warned ({len(warned)})", ", ".join(warned) or "—"),
        ],
    )


# --- audit export --------------------------------------------------------------------------------

_AUDIT_COLUMNS: Final = (
    "seq",
    "at",
    "org",
    "actor",
    "action",
    "reason",
    "from_state",
    "to_state",
    "evidence",
    "detail",
)


def _write_audit(pages: Iterator[list[AuditEntry]], fh: TextIO, fmt: AuditFormat) -> int:
    n = 0
    if fmt is AuditFormat.CSV:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(_AUDIT_COLUMNS)
        for page in pages:
            for e in page:
                writer.writerow(
                    (
                        e.seq,
                        repr(e.at),
                        e.org or "",
                        e.actor,
                        e.action,
                        e.reason,
                        e.from_state or "",
                        e.to_state or "",
                        json.dumps(list(e.evidence), ensure_ascii=False),
                        json.dumps(e.detail, ensure_ascii=False, sort_keys=True),
                    )
                )
            n += len(page)
        return n
    for page in pages:
        fh.write("".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in page))
        n += len(page)
    return n


@audit_app.command("export")
def audit_export(
    org: Annotated[str | None, typer.Option("--org", help="Only this organisation.")] = None,
    since: Annotated[
        int, typer.Option("--since", metavar="SEQ", min=0, help="Only entries after this seq.")
    ] = 0,
    fmt: Annotated[
        AuditFormat | None,
        typer.Option("--format", help="jsonl or csv (default: csv for -o *.csv, else jsonl)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write here (atomically) instead of stdout."
        ),
    ] = None,
    config: ConfigOption = None,
    store: StoreOption = None,
) -> None:
    """Every audit entry, oldest first (streamed from the store 1000 at a time).

    CSV columns: seq, at (epoch seconds), org, actor, action, reason, from_state, to_state,
    evidence (a JSON array) and detail (a JSON object).
    """
    if org is not None:
        _check_org(org)
    if fmt is None:
        fmt = AuditFormat.CSV if output and output.suffix.lower() == ".csv" else AuditFormat.JSONL
    settings = _settings(config, store)
    with _open_store(settings) as st:
        try:
            # 0600: the audit log names people and email addresses.
            with atomic_output(output, mode=0o600, newline="") as fh:
                n = _write_audit(_audit_pages(st, org=org, since=since), fh, fmt)
        except OSError as exc:
            raise _die(f"cannot write {output or 'stdout'}: {exc.strerror or exc}") from None
    err.print(f"{n:,} audit entries to {output or 'stdout'} ({fmt})", highlight=False)
