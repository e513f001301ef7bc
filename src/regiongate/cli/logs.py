"""``regiongate logs``: synthetic API access logs with their ground truth (``logs synth``), and
how well the circumvention score finds the resellers and VPN users in them (``logs evaluate``).
"""

from __future__ import annotations

import datetime as dt
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from regiongate.analytics.detection import DetectionReport
    from regiongate.analytics.synth import Truth

__all__ = ["logs_app"]

logs_app = typer.Typer(
    help="Access logs: synthesize realistic ones, with the ground truth beside them, for "
    "demos, tests and benchmarks of `regiongate impact`; evaluate circumvention detection "
    "on them.",
    no_args_is_help=True,
)


# The choices of regiongate.analytics.synth.LogFormat and Compression, without importing it
# (and numpy) for every command line.
class _Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    NGINX = "nginx"


class _Compress(StrEnum):
    GZIP = "gzip"
    ZSTD = "zstd"


@logs_app.callback()
def _logs() -> None:
    """Access logs: synthesize realistic ones with their ground truth; evaluate detection."""


def _parse_mix(specs: list[str] | None) -> dict[str, float] | None:
    """``--mix ordinary=0.5,reseller=0.1 --mix saas=0.1`` → shares (kinds not named: 0)."""
    if not specs:
        return None
    from regiongate.analytics.synth import KINDS

    mix: dict[str, float] = {}
    for spec in specs:
        for part in spec.split(","):
            kind, sep, value = part.strip().partition("=")
            kind = kind.strip()
            if not sep or kind not in KINDS:
                raise typer.BadParameter(
                    f"{part.strip()!r}: give KIND=SHARE with KIND one of {', '.join(KINDS)}",
                    param_hint="--mix",
                )
            try:
                share = float(value)
            except ValueError:
                raise typer.BadParameter(
                    f"{part.strip()!r}: {value.strip()!r} is not a number", param_hint="--mix"
                ) from None
            if not share >= 0 or share == float("inf"):
                raise typer.BadParameter(
                    f"{part.strip()!r}: a share is a number >= 0", param_hint="--mix"
                )
            mix[kind] = share
    return mix


def _parse_start(value: str | None) -> dt.datetime:
    from regiongate.analytics.synth import DEFAULT_START

    if value is None:
        return DEFAULT_START
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or datetime (2026-07-01, 2026-07-01T12:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop returns


def _summary(truth: Truth, out: Path, seconds: float) -> None:
    from rich.markup import escape
    from rich.table import Table

    from regiongate.analytics.synth import KINDS, truth_path
    from regiongate.cli.app import out as console

    table = Table(
        title=f"[bold]{escape(str(out))}[/]: {truth.lines:,} lines, seed {truth.seed}",
        title_justify="left",
        caption_justify="left",
    )
    for col in ("kind", "orgs", "lines", "share", "unsupported", "anonymized", "fallbacks"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    valid = max(truth.valid_lines, 1)
    for kind in KINDS:
        orgs = [o for o in truth.orgs if o.kind == kind]
        if not orgs:
            continue
        lines = sum(o.lines for o in orgs)
        located = sum(o.expected_unsupported_share * o.lines for o in orgs)
        anonymized = sum(o.anonymizer_lines for o in orgs)
        table.add_row(
            kind,
            f"{len(orgs):,}",
            f"{lines:,}",
            f"{lines / valid:.1%}",
            f"{round(located):,}",
            f"{anonymized:,}",
            f"{sum(1 for o in orgs if o.fallback):,}",
        )
    m = truth.malformed
    table.add_row(
        "[dim]malformed[/]",
        "",
        f"{m['total']:,}",
        f"{m['total'] / max(truth.lines, 1):.2%}",
        "",
        "",
        "",
    )
    size = out.stat().st_size if out.exists() else 0
    table.caption = (
        f"malformed: {m['truncated']:,} truncated, {m['garbage']:,} garbage, "
        f"{m['bad_address']:,} bad address; {truth.proxied_lines:,} through a trusted proxy "
        f"({truth.forged_xff_lines:,} with a forged X-Forwarded-For entry)\n"
        f"unsupported: lines whose client address locates in "
        f"{', '.join(truth.unsupported)}\n"
        f"{_size(size)} in {seconds:.1f} s ({truth.lines / max(seconds, 1e-9):,.0f} lines/s); "
        f"truth: {escape(str(truth_path(out)))}"
    )
    console.print(table)


@logs_app.command("synth")
def synth(
    out: Annotated[
        Path,
        typer.Argument(
            help="The log file to write (the truth goes to OUT.truth.json).", show_default=False
        ),
    ],
    lines: Annotated[int, typer.Option(min=0, help="Log lines to write.")] = 100_000,
    orgs: Annotated[int, typer.Option(min=1, help="Organisations.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    fmt: Annotated[
        _Format,
        typer.Option(
            "--format",
            help="Line format: JSON lines, CSV with a header, or nginx combined followed by "
            '"$http_x_forwarded_for" $org $key_id.',
        ),
    ] = _Format.JSONL,
    compress: Annotated[
        _Compress | None,
        typer.Option(help="Compress the log (default: by the name: .gz gzip, .zst zstd, else no)."),
    ] = None,
    level: Annotated[
        int | None,
        typer.Option(min=1, max=22, help="Compression level (default: 3, gzip and zstd)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Time of the first line, ISO 8601 (default: 2026-07-01T00:00Z)."),
    ] = None,
    days: Annotated[float, typer.Option(min=0.0, help="Days the log spans.")] = 1.0,
    proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--proxy",
            help="A trusted reverse proxy address, repeatable (default: 10.0.0.1 and 10.0.0.2).",
        ),
    ] = None,
    malformed: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of malformed lines.")
    ] = 0.001,
    ipv6: Annotated[
        float,
        typer.Option(
            "--ipv6",
            min=0.0,
            max=1.0,
            help="Share of an organisation's home traffic from IPv6, where the snapshot has "
            "IPv6 ranges for its territory.",
        ),
    ] = 0.04,
    snapshot: Annotated[
        Path | None, typer.Option(help="Snapshot file (default: the installed one).")
    ] = None,
    mix: Annotated[
        list[str] | None,
        typer.Option(
            "--mix",
            metavar="KIND=SHARE,...",
            help="Shares of organisation kinds (ordinary, unsupported, vpn, reseller, traveller, "
            "saas); kinds not named get none. Default: ordinary=0.7,unsupported=0.1,vpn=0.08,"
            "reseller=0.02,traveller=0.1.",
        ),
    ] = None,
    hints: Annotated[
        bool,
        typer.Option(
            "--hints",
            help="Add request hints (end user, Accept-Language, time zone) to every line, and "
            "payment countries to the truth; jsonl and csv only.",
        ),
    ] = False,
) -> None:
    """Write a seeded, realistic API access log and its ground truth (OUT.truth.json).

    Organisations of five kinds (ordinary, unsupported, vpn, reseller, traveller; saas on
    request with --mix) send Zipf-distributed traffic from addresses drawn from the snapshot,
    about 30% through the trusted proxies, with a small share of malformed lines.
    """
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from regiongate.analytics.synth import synthesize
    from regiongate.cli.app import _fail, err
    from regiongate.errors import RegiongateError
    from regiongate.intel.snapshot import open_snapshot

    when = _parse_start(start)
    shares = _parse_mix(mix)
    if hints and fmt is _Format.NGINX:
        raise typer.BadParameter(
            "the nginx format has no fields for request hints; use --format jsonl or csv",
            param_hint="--hints",
        )
    started = time.perf_counter()
    try:
        with (
            open_snapshot(snapshot) as snap,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            ) as bar,
        ):
            task = bar.add_task("synthesizing", total=lines)
            truth = synthesize(
                out,
                snapshot=snap,
                lines=lines,
                orgs=orgs,
                seed=seed,
                start=when,
                days=days,
                fmt=fmt.value,
                compress=compress.value if compress is not None else _by_name(out),
                compress_level=level,
                proxies=proxy or None,
                malformed_share=malformed,
                ipv6_share=ipv6,
                mix=shares,
                hints=hints,
                progress=lambda done: bar.update(task, completed=done),
            )
    except RegiongateError as exc:
        raise _fail(exc) from exc
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot write {escape(str(out))}: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    for note in truth.fallbacks[:10]:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if len(truth.fallbacks) > 10:
        err.print(f"[yellow]note:[/] ... {len(truth.fallbacks) - 10} more in the truth file")
    _summary(truth, out, time.perf_counter() - started)


def _by_name(out: Path) -> str | None:
    """The compression a file name asks for: a ``.gz`` file that is not gzip would fool
    every reader, ``regiongate impact`` included."""
    name = out.name.lower()
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith((".zst", ".zstd")):
        return "zstd"
    return None


@logs_app.command("evaluate")
def evaluate(
    log: Annotated[
        Path,
        typer.Argument(help="A log `logs synth` wrote (jsonl, csv or nginx).", show_default=False),
    ],
    truth: Annotated[
        Path | None, typer.Option(help="Its truth (default: LOG.truth.json).", show_default=False)
    ] = None,
    policy: Annotated[str, typer.Option(help="Policy file or preset name.")] = "api-2024",
    window: Annotated[
        str | None,
        typer.Option(
            help="Traffic scored: a duration (6h, 2d) or 'log' for the whole log (default: the "
            "policy's accounts.circumvention window)."
        ),
    ] = None,
    snapshot: Annotated[
        Path | None, typer.Option(help="Snapshot file (default: the installed one).")
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Organisations listed (top scores).")] = 15,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """How well the circumvention score finds resellers and VPN users in a synthetic log.

    Replays the log as the gateway would (client address, snapshot, policy, request hints),
    scores every organisation at the log's end and compares with the truth: precision and
    recall of reseller and of circumvention (reseller or vpn) detection, false-positive rates
    on ordinary, saas and traveller organisations, and a threshold sweep (docs/detection.md).
    """
    import json
    import sys

    from rich.markup import escape
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from regiongate.analytics.detection import evaluate as run
    from regiongate.analytics.synth import Truth, truth_path
    from regiongate.cli.app import _fail, err
    from regiongate.errors import RegiongateError
    from regiongate.intel.snapshot import open_snapshot
    from regiongate.policy import load_policy
    from regiongate.policy.document import parse_duration

    truth_file = truth if truth is not None else truth_path(log)
    try:
        if not log.is_file():
            raise RegiongateError(f"{log}: no such log file")
        if not truth_file.is_file():
            raise RegiongateError(
                f"{truth_file}: no truth file (give --truth, or synthesize the log with "
                "`regiongate logs synth`)"
            )
        known = Truth.load(truth_file)
        seconds: float | None = None
        if window == "log":
            seconds = _span(known)
        elif window is not None:
            try:
                seconds = parse_duration(window)
            except ValueError as exc:
                raise typer.BadParameter(f"{window!r}: {exc}", param_hint="--window") from None
        pol = load_policy(policy)
        with (
            open_snapshot(snapshot, consensus=pol.consensus) as snap,
            Progress(
                SpinnerColumn(),
                TextColumn("[bold]replaying[/] {task.fields[lines]:,} lines"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            ) as bar,
        ):
            task = bar.add_task("replay", total=None, lines=0)
            seen = [0]

            def advance(n: int) -> None:
                seen[0] += n
                bar.update(task, lines=seen[0])

            report = run(log, known, snap, pol, window=seconds, progress=advance)
    except RegiongateError as exc:
        raise _fail(exc) from exc
    except OSError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return
    _evaluation(report, top)


def _span(truth: Truth) -> float:
    """The seconds from the truth's first line to its last (at least a minute)."""
    import datetime as dt

    def at(text: str | None) -> float | None:
        if not text:
            return None
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    first, last = at(truth.first_time), at(truth.last_time)
    if first is None or last is None:
        return 60.0
    return max(60.0, last - first + 1.0)


_SHORT = {"ordinary": "ord.", "traveller": "trav."}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _evaluation(report: DetectionReport, top: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    from regiongate.analytics.detection import CIRCUMVENTION, NEGATIVE_KINDS, RESELLER
    from regiongate.cli.app import err
    from regiongate.cli.app import out as console

    hours = report.window / 3600
    console.print(
        f"[bold]{escape(report.log)}[/]: {report.lines:,} lines ({report.malformed:,} "
        f"malformed), {report.policy}: review at {report.review:g}, suspend at "
        f"{report.suspend:g}, at least {report.min_requests} requests in a {hours:g} h window",
        highlight=False,
    )
    kinds = Table(title="by kind", title_justify="left")
    for col in ("kind", "orgs", "scored", "median", "max", "review", "suspend"):
        kinds.add_column(col, justify="left" if col == "kind" else "right")
    for row in report.kinds():
        kinds.add_row(
            row["kind"],
            f"{row['orgs']:,}",
            f"{row['scored']:,}",
            "—" if row["median_score"] is None else f"{row['median_score']:.1f}",
            "—" if row["max_score"] is None else f"{row['max_score']:.1f}",
            f"{row['review']:,} ({_pct(row['review_share'])})",
            f"{row['suspend']:,} ({_pct(row['suspend_share'])})",
        )
    console.print(kinds)

    results = Table(title="detection", title_justify="left")
    for col in ("", f"at review ({report.review:g})", f"at suspend ({report.suspend:g})"):
        results.add_column(col, justify="left" if not col else "right")
    suspend = report.suspend or None
    for label, positives in (("reseller", RESELLER), ("circumvention", CIRCUMVENTION)):
        at_review, at_suspend = report.rates(positives), report.rates(positives, suspend)
        for name in ("precision", "recall"):
            results.add_row(
                f"{label} {name}",
                _pct(getattr(at_review, name)),
                _pct(getattr(at_suspend, name)) if suspend else "—",
            )
    fp_review = report.false_positive_rates()
    fp_suspend = report.false_positive_rates(suspend)
    for kind in NEGATIVE_KINDS:
        results.add_row(
            f"false positives: {kind}",
            _pct(fp_review[kind]),
            _pct(fp_suspend[kind]) if suspend else "—",
        )
    console.print(results)

    sweep = Table(
        title="threshold sweep: precision (P), recall (R) and false positives when flagging at "
        "a score of at least",
        title_justify="left",
    )
    for col in ("at", "resel. P", "resel. R", "circ. P", "circ. R",
                *(f"FP {_SHORT.get(k, k)}" for k in NEGATIVE_KINDS)):  # fmt: skip
        sweep.add_column(col, justify="right")
    for row in report.sweep():
        sweep.add_row(
            str(row["threshold"]),
            _pct(row["reseller"]["precision"]),
            _pct(row["reseller"]["recall"]),
            _pct(row["circumvention"]["precision"]),
            _pct(row["circumvention"]["recall"]),
            *(_pct(row["false_positive_rate"][k]) for k in NEGATIVE_KINDS),
        )
    console.print(sweep)

    if top:
        ranked = sorted(report.orgs, key=lambda o: (-o.points, o.org))
        shown = ranked[:top]
        missed = [o for o in ranked[top:] if o.kind in CIRCUMVENTION and not o.flagged]
        orgs = Table(
            title=f"organisations: the {len(shown)} top scores"
            + (f" and {len(missed)} missed" if missed else ""),
            title_justify="left",
        )
        for col in ("org", "kind", "requests", "score", "verdict", "top signals"):
            orgs.add_column(col, justify="right" if col in ("requests", "score") else "left")
        for o in (*shown, *missed):
            if o.would_suspend:
                verdict = "[red]suspend[/]"
            elif o.flagged:
                verdict = "[yellow]review[/]"
            elif not o.scored:
                verdict = "[dim]too few requests[/]"
            else:
                verdict = "—"
            if o.kind in CIRCUMVENTION and not o.flagged:
                verdict += " [red](missed)[/]"
            orgs.add_row(
                escape(o.org),
                o.kind,
                f"{o.requests:,}",
                f"{o.points:.1f}",
                verdict,
                ", ".join(f"{s} {p:.0f}" for s, p in o.top()),
            )
        console.print(orgs)
    for note in report.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
