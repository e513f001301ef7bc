"""``regiongate export``: compile the policy into nginx ``geo`` maps and nftables sets."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from regiongate.cli.files import atomic_output

if TYPE_CHECKING:
    from regiongate.enforce.export import ExportStats
    from regiongate.intel.snapshot import Snapshot
    from regiongate.policy import Policy

__all__ = ["export_app"]

export_app = typer.Typer(
    help="Compile the policy into nginx geo maps and nftables sets (regiongate as control "
    "plane, the existing data plane enforcing at line rate).",
    no_args_is_help=True,
)

PolicyOption = Annotated[
    str | None,
    typer.Option(
        "--policy", help="Policy file or preset name (default: the configured policy.source)."
    ),
]
AtOption = Annotated[
    str | None,
    typer.Option("--at", help="Decide as of this ISO date or datetime (default: now, UTC)."),
]
SnapshotOption = Annotated[
    Path | None,
    typer.Option(help="Snapshot file (default: data.snapshot, else the installed one)."),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Write here (atomically: a reader never sees half a file) instead of stdout.",
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(help="Configuration TOML (default: $REGIONGATE_CONFIG, else built-ins)."),
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the counts as JSON instead of the summary line (to stdout with -o, "
        "else to stderr: stdout carries the data).",
    ),
]

Exporter = Callable[["Snapshot", "Policy", float, TextIO], "ExportStats"]


def _run(
    exporter: Exporter,
    *,
    policy: str | None,
    at: str | None,
    snapshot: Path | None,
    output: Path | None,
    config: Path | None,
    as_json: bool,
) -> None:
    from rich.markup import escape

    from regiongate.cli.app import _fail, _parse_at, err
    from regiongate.config import load_settings
    from regiongate.errors import RegiongateError
    from regiongate.intel.snapshot import open_snapshot
    from regiongate.policy import load_policy

    when = _parse_at(at)
    started = time.perf_counter()
    try:
        settings = load_settings(config) if policy is None or snapshot is None else None
        pol = load_policy(policy or (settings.policy.source if settings else "api-2024"))
        snap_path = snapshot
        if snap_path is None and settings is not None and settings.data.snapshot:
            snap_path = Path(settings.data.snapshot)
        with open_snapshot(snap_path, consensus=pol.consensus) as snap:
            # 0644: nginx workers may need to read it.
            with atomic_output(output, mode=0o644) as fh:
                stats = exporter(snap, pol, when.timestamp(), fh)
            created = snap.header.get("created", "?")
    except RegiongateError as exc:
        raise _fail(exc) from exc
    except OSError as exc:
        where = escape(str(output or "stdout"))
        err.print(f"[bold red]error:[/] cannot write {where}: {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
    seconds = time.perf_counter() - started
    if as_json:
        data = stats.to_dict()
        data.update(
            output=str(output) if output else None,
            snapshot_created=created,
            seconds=round(seconds, 3),
        )
        stream = sys.stdout if output is not None else sys.stderr
        stream.write(json.dumps(data, indent=2) + "\n")
        return
    ranges = " / ".join(f"{a} {n:,}" for a, n in stats.ranges.items())
    default = f", default {stats.default}" if stats.default is not None else ""
    err.print(
        f"{stats.format}: {stats.policy}, phase {stats.phase.label} at "
        f"{stats.at:%Y-%m-%d %H:%M}Z; ranges {ranges}{default}; {stats.entries:,} entries, "
        f"{stats.lines:,} lines, {stats.bytes:,} bytes to {output or 'stdout'} in {seconds:.1f} s",
        highlight=False,
        markup=False,
    )


def _check_variable(value: str) -> str:
    from regiongate.enforce.export import NGINX_VARIABLE

    if not NGINX_VARIABLE.match(value):
        raise typer.BadParameter(f"{value!r}: an nginx variable name, without the $")
    return value


def _check_table(value: str) -> str:
    from regiongate.enforce.export import NFT_NAME

    if not NFT_NAME.match(value):
        raise typer.BadParameter(f"{value!r}: a letter, then letters, digits or _")
    return value


@export_app.command("nginx-geo")
def nginx_geo(
    policy: PolicyOption = None,
    at: AtOption = None,
    snapshot: SnapshotOption = None,
    output: OutputOption = None,
    variable: Annotated[
        str,
        typer.Option(
            help="The variable the geo block sets (with --full).", callback=_check_variable
        ),
    ] = "regiongate_action",
    full: Annotated[
        bool,
        typer.Option(help="Write the whole `geo $remote_addr $VAR { ... }` block, not its body."),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """An nginx geo map: client address → allow, flag or block.

    Use it with `geo $remote_addr $regiongate_action { include FILE; }` and
    `if ($regiongate_action = block) { return 403 ...; }` (docs/nginx.md).
    """
    from regiongate.enforce.export import export_nginx_geo

    def run(snap: Snapshot, pol: Policy, at_: float, out: TextIO) -> ExportStats:
        return export_nginx_geo(snap, pol, at_, out, variable=variable, full=full)

    _run(
        run, policy=policy, at=at, snapshot=snapshot, output=output, config=config, as_json=as_json
    )


@export_app.command("nftables")
def nftables(
    policy: PolicyOption = None,
    at: AtOption = None,
    snapshot: SnapshotOption = None,
    output: OutputOption = None,
    table: Annotated[
        str, typer.Option(help="The `inet` table to define.", callback=_check_table)
    ] = "regiongate",
    chain: Annotated[
        bool,
        typer.Option(help="Also define an input chain dropping what blocked addresses send."),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """An `nft -f` file: interval sets blocked_v4 / blocked_v6 of the blocked addresses.

    Only `block` goes in the sets; `flag` needs the gateway. Loading the file again replaces
    the sets' contents in one transaction.
    """
    from regiongate.enforce.export import export_nftables

    def run(snap: Snapshot, pol: Policy, at_: float, out: TextIO) -> ExportStats:
        return export_nftables(snap, pol, at_, out, table=table, chain=chain)

    _run(
        run, policy=policy, at=at, snapshot=snapshot, output=output, config=config, as_json=as_json
    )
