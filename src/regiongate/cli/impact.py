"""``regiongate impact``: replay access logs against a policy and report who is affected."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from regiongate.cli.files import write_atomic
from regiongate.errors import RegiongateError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from regiongate.config import Settings
    from regiongate.intel.snapshot import Snapshot

__all__ = ["impact"]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _keep_freed_memory() -> bool:
    """Have glibc's allocator keep freed blocks of up to 32 MiB for reuse instead of handing
    them back to the kernel, and Arrow allocate through it too. A replay frees and allocates
    arrays of ~8 MiB per batch; given back, each new one is faulted in and zeroed again by
    the kernel (measured: ~1.5 s of system time per 10M lines, 0.8 CPU-s of it saved this
    way; Arrow's own allocator, mimalloc, gives pages back on its own schedule: through
    malloc, 0.3 CPU-s less again and 60 MiB less memory at the peak). Elsewhere (no
    ``mallopt``) nothing changes (False). The command's process ends with the replay, so
    the settings do too."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    done = mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(32 << 20))
    if not (done and mallopt(ctypes.c_int(m_trim_threshold), ctypes.c_int(1 << 30))):
        return False
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    return True


def impact(
    logs: Annotated[list[Path], typer.Argument(help="Access logs (one format; .gz/.zst ok).")],
    policy: Annotated[str, typer.Option(help="Policy file or preset name.")] = "api-2024",
    against: Annotated[
        str | None, typer.Option(help="Compare with this policy: what changes from it.")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="Decide every line as of this ISO date/time (default: its own time)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="jsonl, csv, parquet or nginx (default: by name)."),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            help="NAME=COLUMN for time, peer, xff, org, key, path, status (e.g. --field "
            "time=@timestamp; --field xff= for none).",
        ),
    ] = None,
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            help="Count only lines whose path starts with this (repeatable, e.g. --path /v1/).",
        ),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Count only lines with these statuses: codes, classes, ranges (e.g. 2xx,429).",
        ),
    ] = None,
    resolve_keys: Annotated[
        bool,
        typer.Option(
            "--resolve-keys",
            help="Lines without an org count for the org owning their key id (account store).",
        ),
    ] = False,
    store_url: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="Account store for --resolve-keys (overrides store.url); implies it.",
        ),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="CIDR whose X-Forwarded-For is believed (default: server.trusted_proxies).",
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report.")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write per-org CSV.")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the HTML report.")
    ] = None,
    snapshot: Annotated[Path | None, typer.Option(help="Snapshot file.")] = None,
    batch_size: Annotated[int, typer.Option(help="Lines per batch (memory bound).")] = 500_000,
    top: Annotated[int, typer.Option(help="Organisations shown in the terminal.")] = 15,
) -> None:
    """Replay access logs against a policy: who would it block, from where, since when."""
    from regiongate.analytics.impact import FieldMap, LineFilter, replay
    from regiongate.analytics.report import render_html
    from regiongate.clientip import ClientIPConfig
    from regiongate.config import load_settings
    from regiongate.intel.snapshot import open_snapshot
    from regiongate.policy import load_policy

    when = None
    if at is not None:
        try:
            parsed = dt.datetime.fromisoformat(at)
        except ValueError:
            raise typer.BadParameter(f"--at {at!r} is not an ISO 8601 date or datetime") from None
        when = (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    if batch_size < 1000:
        raise typer.BadParameter("--batch-size must be at least 1000")
    try:
        settings = load_settings(overrides={"store": {"url": store_url}})
        pol = load_policy(policy)
        other = load_policy(against) if against else None
        # The snapshots' checksums are checked in a thread while the replay starts (hashing
        # releases the GIL): ~0.1 s off a start-up that runs on one core. Nothing is written
        # before the check has passed, and a failure a corrupt snapshot caused is reported
        # as the corruption.
        snap = open_snapshot(snapshot, consensus=pol.consensus, verify=False)
        other_snap = (
            open_snapshot(snapshot, consensus=other.consensus, verify=False)
            if other is not None and other.consensus is not pol.consensus
            else None
        )
        checked = _checking(snap, other_snap)
        proxies = tuple(trusted_proxy) if trusted_proxy else tuple(settings.server.trusted_proxies)
        config = ClientIPConfig(
            trusted_proxies=proxies,
            header=settings.server.forwarded_header,
            hop_limit=settings.server.hop_limit,
        )
        fields = FieldMap.parse(field or [])
        keep = LineFilter.parse(path or [], status or [])
        key_orgs = _key_orgs(settings) if resolve_keys or store_url else None
        _keep_freed_memory()
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]replaying[/] {task.fields[lines]:,} lines"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("replay", total=None, lines=0)
            seen = [0]

            def advance(n: int) -> None:
                seen[0] += n
                progress.update(task, lines=seen[0])

            try:
                report = replay(
                    [str(p) for p in logs],
                    policy=pol,
                    snapshot=snap,
                    against=other,
                    against_snapshot=other_snap,
                    at=when,
                    client_ip=config,
                    fmt=fmt,
                    fields=fields,
                    keep=keep,
                    key_orgs=key_orgs,
                    batch_size=batch_size,
                    progress=advance,
                )
            except BaseException:
                checked.result()  # a corrupt snapshot's error, rather than what it caused
                raise
            checked.result()
    except RegiongateError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    data = report.to_dict()
    if json_out:
        write_atomic(json_out, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if csv_out:
        import io

        buf = io.StringIO()
        report.write_csv(buf)
        write_atomic(csv_out, buf.getvalue())
    if html_out:
        write_atomic(html_out, render_html(data))
    _summary(data, top)
    for label, written in (("JSON", json_out), ("CSV", csv_out), ("HTML", html_out)):
        if written:
            err.print(f"wrote {label} report {written}")


def _checking(*snapshots: Snapshot | None) -> Future[None]:
    """The snapshots' checksums, checked in a thread of their own (see the caller)."""
    from concurrent.futures import ThreadPoolExecutor

    def check() -> None:
        for snap in snapshots:
            if snap is not None:
                snap.verify()

    pool = ThreadPoolExecutor(1, thread_name_prefix="regiongate-verify")
    try:
        return pool.submit(check)
    finally:
        pool.shutdown(wait=False)


def _key_orgs(settings: Settings) -> dict[str, str]:
    """Key id → organisation, from the account store (revoked keys too: old lines used them).
    A store that does not exist is an error (not created empty); one without keys a warning."""
    from regiongate.cli.accounts import _open_store

    url = settings.store_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise RegiongateError(
            f"--resolve-keys: no account store at {url.removeprefix('sqlite:///')} "
            "(give --store URL, or import the keys with `regiongate accounts`)"
        )
    with _open_store(settings) as store:
        owners = {key.key_id: key.org for key in store.list_keys()}
    if not owners:
        err.print("[yellow]warning:[/] the account store has no keys: key ids stay as they are")
    return owners


def _summary(data: dict[str, object], top: int) -> None:
    lines: Any = data["lines"]
    totals: Any = data["totals"]
    err.print(
        f"[bold]{data['policy']}[/]"
        + (f" against [bold]{data['against']}[/]" if data.get("against") else "")
        + f": {lines['total']:,} lines, {lines['malformed']:,} malformed"
        + (f", {lines['filtered']:,} filtered out" if lines.get("filtered") else "")
        + "; "
        f"{totals['affected_organisations']:,} of {totals['organisations']:,} organisations "
        f"and {totals['affected_requests']:,} requests affected",
        highlight=False,
    )
    if lines.get("filtered") and lines["filtered"] == lines["parsed"]:
        err.print(
            "[yellow]warning:[/] --path/--status left out every readable line: check them "
            "and the path and status fields (--field path=COLUMN, --field status=COLUMN)",
            highlight=False,
        )
    table = Table(title="by territory", title_justify="left")
    for name in ("territory", "requests", "allow", "flag", "block"):
        table.add_column(name, justify="left" if name == "territory" else "right")
    for row in totals["by_territory"][:top]:
        table.add_row(row["territory"], *(f"{row[k]:,}" for k in ("requests", "allow", "flag",
                                                                   "block")))  # fmt: skip
    out.print(table)
    orgs = [o for o in data["orgs"] if o["affected_requests"]][:top]  # type: ignore[attr-defined]
    if orgs:
        t2 = Table(title="most affected organisations", title_justify="left")
        for name in ("org", "requests", "affected", "share", "unsupported territories"):
            t2.add_column(name, justify="right" if name in ("requests", "affected", "share")
                          else "left")  # fmt: skip
        for o in orgs:
            t2.add_row(
                escape(o["org"]),
                f"{o['requests']:,}",
                f"{o['affected_requests']:,}",
                f"{100 * o['affected_share']:.1f}%",
                ", ".join(f"{k} {v:,}" for k, v in o["unsupported_territories"].items()),
            )
        out.print(t2)
