"""Compile a policy over a snapshot into address maps that existing data planes enforce.

regiongate stays the control plane; nginx (a ``geo`` map) or the kernel (nftables interval
sets) applies the decisions at line rate. The decision is computed once per distinct snapshot
row, adjacent ranges with the same action are merged, and the file is written line by line.

What an address map cannot express: exemptions by account, and every action that depends on
who is asking (sticky account state, strikes, suspensions). Those need the gateway or its
decision endpoint; both exports say so in their header. Exempt *networks* are expressible and
map to ``allow``.

nginx's ``geo`` module accepts CIDR prefixes for IPv4 and IPv6 but ``ranges`` (``a-b``) only
for IPv4, and a ``geo`` block is in one mode or the other; so the nginx export writes CIDR
prefixes for both families. nftables interval sets take ``a-b`` ranges and prefixes alike.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from regiongate import __version__
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import Action, Phase, Policy

__all__ = [
    "NFT_NAME",
    "NGINX_VARIABLE",
    "ExportStats",
    "export_nftables",
    "export_nginx_geo",
]

NGINX_VARIABLE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""What ``--variable`` may be: an nginx variable name without the ``$``."""
NFT_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
"""What ``--table`` may be: a plain nftables identifier (no quoting needed)."""

_ACTIONS: Final = (Action.ALLOW, Action.FLAG, Action.BLOCK)
_BITS: Final = {4: 32, 6: 128}
_BATCH: Final = 1024  # lines joined per write(): fewer calls, bounded memory

Range = tuple[int, int, Action]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportStats:
    """What an export wrote.

    ``ranges_v4``/``ranges_v6`` count the merged ranges per action (the whole address space of
    each family, after merging adjacent ranges with the same action); ``entries`` the address
    entries written (geo prefixes, or set elements); ``lines`` and ``bytes`` the output size.
    ``default`` is the nginx ``default`` value (``None`` for nftables).
    """

    format: str
    policy: str
    phase: Phase
    at: dt.datetime
    ranges_v4: Mapping[Action, int]
    ranges_v6: Mapping[Action, int]
    entries: int
    lines: int
    bytes: int
    default: Action | None = None

    @property
    def ranges(self) -> dict[Action, int]:
        """Merged ranges per action, both families together."""
        return {a: self.ranges_v4.get(a, 0) + self.ranges_v6.get(a, 0) for a in _ACTIONS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "policy": self.policy,
            "phase": self.phase.label,
            "at": self.at.isoformat(),
            "default": str(self.default) if self.default is not None else None,
            "ranges": {str(a): n for a, n in self.ranges.items()},
            "ranges_v4": {str(a): self.ranges_v4.get(a, 0) for a in _ACTIONS},
            "ranges_v6": {str(a): self.ranges_v6.get(a, 0) for a in _ACTIONS},
            "entries": self.entries,
            "lines": self.lines,
            "bytes": self.bytes,
        }


# --- compiling the policy into ranges --------------------------------------------------------


@dataclass(slots=True)
class _Compiled:
    policy: Policy
    at: dt.datetime
    phase: Phase
    v4: list[Range] = field(default_factory=list)
    v6: list[Range] = field(default_factory=list)

    def family(self, version: int) -> list[Range]:
        return self.v4 if version == 4 else self.v6

    def counts(self, version: int) -> dict[Action, int]:
        counts = dict.fromkeys(_ACTIONS, 0)
        for _, _, action in self.family(version):
            counts[action] += 1
        return counts


def _as_datetime(at: dt.datetime | float) -> dt.datetime:
    if isinstance(at, dt.datetime):
        return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(at, dt.UTC)


def _exempt_intervals(policy: Policy, version: int) -> list[tuple[int, int]]:
    """The policy's exempt networks of one family as sorted, disjoint, merged intervals."""
    spans = sorted(
        (int(n.network_address), int(n.broadcast_address))
        for n in (ipaddress.ip_network(text, strict=False) for text in policy.exempt_networks)
        if n.version == version
    )
    merged: list[tuple[int, int]] = []
    for first, last in spans:
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _overlay(pieces: Iterable[Range], exempt: Sequence[tuple[int, int]]) -> Iterator[Range]:
    """``pieces`` (in order) with the ``exempt`` intervals (in order) turned to allow."""
    i, n = 0, len(exempt)
    for first, last, action in pieces:
        while i < n and exempt[i][1] < first:
            i += 1
        if action is Action.ALLOW or i == n or exempt[i][0] > last:
            yield first, last, action
            continue
        cur = first
        j = i
        while j < n and exempt[j][0] <= last:
            lo, hi = exempt[j]
            if lo > cur:
                yield cur, lo - 1, action
            yield max(cur, lo), min(hi, last), Action.ALLOW
            cur = hi + 1
            if hi >= last:
                break
            j += 1
        if cur <= last:
            yield cur, last, action


def _merge(pieces: Iterable[Range]) -> list[Range]:
    """Adjacent pieces with the same action joined into one range."""
    out: list[Range] = []
    it = iter(pieces)
    try:
        first, last, action = next(it)
    except StopIteration:
        return out
    for f, l, a in it:  # noqa: E741 - first/last pairs read best as f, l
        if a is action and f == last + 1:
            last = l
        else:
            out.append((first, last, action))
            first, last, action = f, l, a
    out.append((first, last, action))
    return out


def _compile(snapshot: Snapshot, policy: Policy, at: dt.datetime | float) -> _Compiled:
    when = _as_datetime(at)
    phase = policy.phase_at(when.timestamp())
    compiled = _Compiled(policy=policy, at=when, phase=phase)
    explain = policy.engine.explain
    origin_for_row = snapshot.origin_for_row
    # Rows are shared by both families: one decision per distinct row, reused for every range.
    actions: list[Action | None] = [None] * snapshot.rows

    def decided(version: int) -> Iterator[Range]:
        for first, last, row in snapshot.iter_ranges(version):
            action = actions[row]
            if action is None:
                action = actions[row] = explain(origin_for_row(row), phase).action
            yield first, last, action

    for version in (4, 6):
        pieces: Iterable[Range] = decided(version)
        exempt = _exempt_intervals(policy, version)
        if exempt:
            pieces = _overlay(pieces, exempt)
        compiled.family(version).extend(_merge(pieces))
    return compiled


# --- address text ------------------------------------------------------------------------------


def _addr_text(version: int) -> Any:
    if version == 4:
        ntoa = socket.inet_ntoa
        return lambda value: ntoa(value.to_bytes(4, "big"))
    ntop, af6 = socket.inet_ntop, socket.AF_INET6
    return lambda value: ntop(af6, value.to_bytes(16, "big"))


def _cidrs(first: int, last: int, bits: int) -> Iterator[tuple[int, int]]:
    """The fewest CIDR prefixes ``(network, prefix_length)`` covering ``first..last``."""
    while first <= last:
        span = last - first + 1
        size = 1 << (span.bit_length() - 1)  # the largest power of two that fits the span
        if first:
            size = min(size, first & -first)  # ... and the alignment of ``first`` allows
        yield first, bits - size.bit_length() + 1
        first += size


def _prefix_count(first: int, last: int, bits: int) -> int:
    return sum(1 for _ in _cidrs(first, last, bits))


class _Writer:
    """Counts what goes out; batches lines into few ``write`` calls."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._buf: list[str] = []
        self.lines = 0
        self.bytes = 0

    def line(self, text: str = "") -> None:
        self._buf.append(text)
        if len(self._buf) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            chunk = "\n".join(self._buf) + "\n"
            self._out.write(chunk)
            self.lines += len(self._buf)
            self.bytes += len(chunk.encode())
            self._buf.clear()


def _header(w: _Writer, title: str, command: str, snapshot: Snapshot, compiled: _Compiled) -> None:
    """The provenance comment both formats start with. Only inputs appear in it (no clock),
    so the same inputs give the same bytes."""
    p = compiled.policy
    h = snapshot.header
    w.line(f"# {title}")
    w.line(f"# generated by regiongate {__version__}: {command}")
    w.line(f"# policy {p.ref} (mode {p.mode}, consensus {snapshot.consensus})")
    w.line(f"# phase {compiled.phase.label} at {compiled.at.isoformat()}")
    w.line(f"# snapshot created {h.get('created', '?')} by {h.get('compiler', '?')}")
    for s in snapshot.sources:
        w.line(
            f"#   source {s.get('name')}: data date {s.get('data_date') or 'n/a'}, "
            f"{s.get('ranges', 0):,} ranges"
        )
    for version in (4, 6):
        counts = compiled.counts(version)
        text = ", ".join(f"{a} {counts[a]:,}" for a in _ACTIONS)
        w.line(f"# IPv{version} ranges after merging by action: {text}")
    w.line("# Not expressed in an address map, so not enforced by this file: exemptions by")
    w.line("# account, and every action that depends on the account (sticky state, strikes,")
    w.line(
        "# suspensions). Put the regiongate gateway or its decision endpoint in front for those."
    )
    if p.exempt_networks:
        w.line("# Exempt networks map to allow: " + ", ".join(p.exempt_networks))


# --- nginx geo -------------------------------------------------------------------------------


def export_nginx_geo(
    snapshot: Snapshot,
    policy: Policy,
    at: dt.datetime | float,
    out: TextIO,
    *,
    variable: str = "regiongate_action",
    full: bool = False,
) -> ExportStats:
    """Write an nginx ``geo`` map of client addresses to ``allow``/``flag``/``block``.

    The body (for ``geo $remote_addr $<variable> { include FILE; }``), or with ``full`` the
    whole ``geo`` block. ``default`` is the action that would take the most lines; only the
    prefixes with another action are listed, IPv4 first, each family in ascending order.
    """
    if not NGINX_VARIABLE.match(variable):
        raise ValueError(f"{variable!r} is not an nginx variable name (letters, digits, _)")
    compiled = _compile(snapshot, policy, at)
    prefixes = dict.fromkeys(_ACTIONS, 0)
    for version in (4, 6):
        bits = _BITS[version]
        for first, last, action in compiled.family(version):
            prefixes[action] += _prefix_count(first, last, bits)
    # Ties go to the least severe action, so the choice is deterministic.
    default = max(_ACTIONS, key=lambda a: (prefixes[a], -a.severity))
    listed = sum(n for a, n in prefixes.items() if a is not default)

    w = _Writer(out)
    command = "regiongate export nginx-geo" + (" --full" if full else "")
    _header(w, "nginx geo map: client address -> regiongate action", command, snapshot, compiled)
    w.line(f"# {listed:,} CIDR prefixes listed; every other address is `default` ({default}).")
    w.line("# CIDR prefixes for both families: the geo `ranges` mode takes IPv4 only.")
    indent = ""
    if full:
        w.line(f"geo $remote_addr ${variable} {{")
        indent = "    "
    else:
        w.line(f"# use: geo $remote_addr ${variable} {{ include /path/to/this/file; }}")
    w.line(f"{indent}default {default};")
    for version in (4, 6):
        bits = _BITS[version]
        text = _addr_text(version)
        for first, last, action in compiled.family(version):
            if action is default:
                continue
            suffix = f" {action};"
            for net, plen in _cidrs(first, last, bits):
                w.line(f"{indent}{text(net)}/{plen}{suffix}")
    if full:
        w.line("}")
    w.flush()
    return ExportStats(
        format="nginx-geo",
        policy=policy.ref,
        phase=compiled.phase,
        at=compiled.at,
        ranges_v4=compiled.counts(4),
        ranges_v6=compiled.counts(6),
        entries=listed,
        lines=w.lines,
        bytes=w.bytes,
        default=default,
    )


# --- nftables --------------------------------------------------------------------------------


def _nft_element(first: int, last: int, bits: int, text: Any) -> str:
    if first == last:
        return str(text(first))
    span = last - first + 1
    if span & (span - 1) == 0 and first % span == 0:
        return f"{text(first)}/{bits - span.bit_length() + 1}"
    return f"{text(first)}-{text(last)}"


def export_nftables(
    snapshot: Snapshot,
    policy: Policy,
    at: dt.datetime | float,
    out: TextIO,
    *,
    table: str = "regiongate",
    chain: bool = False,
) -> ExportStats:
    """Write an ``nft -f`` file: ``table inet <table>`` with interval sets ``blocked_v4`` and
    ``blocked_v6`` holding the ``block`` ranges (``flag`` passes at this layer), and with
    ``chain`` an input chain that drops what those addresses initiate.

    Loading it again replaces the sets' contents atomically (one ``nft -f`` transaction:
    declare, flush, add), and keeps any rules of your own in the table.
    """
    if not NFT_NAME.match(table):
        raise ValueError(f"{table!r} is not an nftables table name (a letter, then [A-Za-z0-9_])")
    compiled = _compile(snapshot, policy, at)
    w = _Writer(out)
    command = f"regiongate export nftables --table {table}" + (" --chain" if chain else "")
    _header(w, "nftables sets of blocked client addresses", command, snapshot, compiled)
    blocked = {v: compiled.counts(v)[Action.BLOCK] for v in (4, 6)}
    w.line(
        f"# blocked_v4: {blocked[4]:,} ranges, blocked_v6: {blocked[6]:,} ranges; "
        "`flag` is not a block at this layer."
    )
    w.line("# load: nft -f FILE (declares, flushes and refills the sets in one transaction)")
    w.line("")
    w.line(f"table inet {table} {{")
    for version in (4, 6):
        w.line(f"    set blocked_v{version} {{")
        w.line(f"        type ipv{version}_addr")
        w.line("        flags interval")
        w.line("    }")
    if chain:
        w.line("    chain input {")
        w.line("        type filter hook input priority -10; policy accept;")
        w.line("    }")
    w.line("}")
    for version in (4, 6):
        w.line(f"flush set inet {table} blocked_v{version}")
    if chain:
        # Only what a blocked address initiates (conntrack's original direction): replies to
        # this host's own outbound connections (DNS, mirrors) still arrive.
        w.line(f"flush chain inet {table} input")
        w.line(f"add rule inet {table} input ct direction original ip saddr @blocked_v4 drop")
        w.line(f"add rule inet {table} input ct direction original ip6 saddr @blocked_v6 drop")
    entries = 0
    for version in (4, 6):
        bits = _BITS[version]
        text = _addr_text(version)
        elements = [
            (first, last)
            for first, last, action in compiled.family(version)
            if action is Action.BLOCK
        ]
        if not elements:
            continue
        w.line(f"add element inet {table} blocked_v{version} {{")
        for k, (first, last) in enumerate(elements):
            sep = "," if k + 1 < len(elements) else ""
            w.line(f"    {_nft_element(first, last, bits, text)}{sep}")
        w.line("}")
        entries += len(elements)
    w.flush()
    return ExportStats(
        format="nftables",
        policy=policy.ref,
        phase=compiled.phase,
        at=compiled.at,
        ranges_v4=compiled.counts(4),
        ranges_v6=compiled.counts(6),
        entries=entries,
        lines=w.lines,
        bytes=w.bytes,
    )
