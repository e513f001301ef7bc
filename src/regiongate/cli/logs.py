"""``regiongate logs``: synthetic API access logs with their ground truth (``logs synth``)."""

from __future__ import annotations

import datetime as dt
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from regiongate.analytics.synth import Truth

__all__ = ["logs_app"]

logs_app = typer.Typer(
    help="Access logs: synthesize realistic ones, with the ground truth beside them, for "
    "demos, tests and benchmarks of `regiongate impact`.",
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
    """Access logs: synthesize realistic ones with their ground truth."""


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
    snapshot: Annotated[
        Path | None, typer.Option(help="Snapshot file (default: the installed one).")
    ] = None,
) -> None:
    """Write a seeded, realistic API access log and its ground truth (OUT.truth.json).

    Organisations of five kinds (ordinary, unsupported, vpn, reseller, traveller) send
    Zipf-distributed traffic from addresses drawn from the snapshot, about 30% through the
    trusted proxies, with a small share of malformed lines.
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
