"""Replay access logs against a policy: who would it block, from where, since when.

The replay is columnar end to end, as DESIGN.md asks: DuckDB reads the logs (JSON lines,
CSV, Parquet, nginx combined; gzip and zstd by extension) and parses times, and hands Arrow
batches of ``batch_size`` rows to numpy, so memory stays bounded whatever the log's size. A
second thread turns each batch's distinct IPv4 peers into integers and cuts its distinct
forwarding headers into entries (numpy over the Arrow buffers) while the main thread works
on the batch before. Per batch:

1. **Client address.** A line whose peer is not a trusted proxy is its own client. A trusted
   peer's client is found by walking its ``X-Forwarded-For`` entries right to left, in numpy,
   for chains of up to three IPv4 entries within the hop limit. Everything else (IPv6, ports,
   brackets, longer chains, garbage) goes through :class:`regiongate.clientip.ClientResolver`
   itself, one distinct (peer, chain) at a time, memoised — exactly the gateway's rules.
2. **Intel.** ``Snapshot.rows_v4`` maps the integers to snapshot rows (57M/s).
3. **Policy.** Decisions depend on the row and on the phase the line's time falls in (before
   notice, notice, enforcement), so each distinct (row, phase) is decided once with the real
   ``policy.decide`` and the answers are gathered with numpy. Lines of exempt organisations or
   from exempt networks are decided one by one with their account and address.
4. **Aggregates** by (phase, action, territory), by organisation, by organisation and
   territory, and by day, with ``bincount`` (``np.unique`` where keys are sparse).

A line is **affected** when the policy blocks its client once enforcement is on (the decision
at ``max(line time, enforce_from)``, or at ``--at``), whatever the phase at the time. A line
whose time or client cannot be read is **malformed**: counted and reported, never fatal.

:func:`replay_reference` does the same one line at a time in plain Python (``json.loads``,
the resolver, ``Snapshot.lookup``, ``policy.decide``); the tests check that both agree.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import gzip
import io
import itertools
import json
import math
import re
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from regiongate.clientip import _MAPPED, ClientIPConfig, ClientResolver
from regiongate.errors import RegiongateError
from regiongate.intel.model import FLAG_BITS, Flag, Origin
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import Action, Context, Decision, Phase, Policy

__all__ = [
    "FORMATS",
    "KEY_PREFIX",
    "FieldMap",
    "ImpactReport",
    "LineFilter",
    "detect_format",
    "replay",
    "replay_reference",
]

FORMATS: Final = ("jsonl", "csv", "parquet", "nginx")
ACTIONS: Final = ("allow", "flag", "block")
_ACTION_CODE: Final = {Action.ALLOW: 0, Action.FLAG: 1, Action.BLOCK: 2}
_ANON_BITS: Final = sum(FLAG_BITS[f] for f in (Flag.TOR, Flag.VPN, Flag.PROXY, Flag.HOSTING,
                                                 Flag.RELAY))  # fmt: skip
_NO_ORG: Final = "(none)"
# A line without an org whose key id no known organisation owns is reported under the key id
# with this prefix (not mistaken for, nor merged with, an organisation's id).
KEY_PREFIX: Final = "key:"
_DAY: Final = 86400.0

# nginx: the combined format, optionally followed by "$http_x_forwarded_for" $org $key_id
# (the log_format `regiongate logs synth --format nginx` writes; docs/impact.md).
# Spelled out in character classes that RE2 (DuckDB) and Python's re read alike: no \d, \s or
# \S, whose sets differ between the two (RE2's \s has no vertical tab, Python's \d takes any
# script's digits). $time_local is nginx's own layout, offset within a day.
_FIELD = r"[^\t\n\f\r ]+"
NGINX_RE: Final = (
    rf"^({_FIELD}) {_FIELD} {_FIELD} "
    r"\[([0-9]{2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} "
    r"[+-](?:[01][0-9]|2[0-3])[0-5][0-9])\] "
    rf'"([^"]*)" ([0-9]{{3}}) ({_FIELD}) "([^"]*)" "([^"]*)"'
    rf'(?: "([^"]*)")?(?: ({_FIELD}))?(?: ({_FIELD}))?'
)
_NGINX_NAMES: Final = ("remote_addr", "time_local", "request", "status", "bytes", "referer",
                       "user_agent", "x_forwarded_for", "org", "key_id")  # fmt: skip
_COLUMN: Final = re.compile(r"[A-Za-z0-9_@.$-]{1,100}")
# What both replays take for a blank line (skipped: no log line), as DuckDB's readers do:
# ASCII blanks only (a line of U+00A0 is a malformed line, not a blank one).
_BLANK_CHARS: Final = " \t\n\r\f\v"
# The longest CSV or nginx log line read (DuckDB's max_line_size; its default is 2 MB): a longer
# line is malformed in both replays (see _too_long for how DuckDB measures it).
MAX_LINE_BYTES: Final = 16 << 20


@dataclass(frozen=True)
class FieldMap:
    """Which source field holds what. Defaults fit ``logs synth`` and common exports."""

    time: str = "time"
    peer: str = "remote_addr"
    xff: str | None = "x_forwarded_for"
    org: str | None = "org"
    key: str | None = "key_id"
    path: str | None = "path"  # read only when --path filters on it
    status: str | None = "status"  # read only when --status filters on it

    @classmethod
    def parse(cls, specs: Iterable[str], base: FieldMap | None = None) -> FieldMap:
        """``time=@timestamp``, ``peer=client_ip``, ``xff=`` (none), ... over ``base``."""
        values = dict((base or cls()).__dict__)
        for spec in specs:
            name, sep, column = spec.partition("=")
            name = name.strip()
            if not sep or name not in values:
                raise RegiongateError(
                    f"--field {spec!r}: use NAME=COLUMN with NAME one of {', '.join(values)}"
                )
            column = column.strip()
            if name in ("time", "peer") and not column:
                raise RegiongateError(f"--field {spec!r}: {name} needs a column")
            if column and not _COLUMN.fullmatch(column):
                raise RegiongateError(f"--field {spec!r}: {column!r} is not a column name")
            values[name] = column or None
        return cls(**values)


@dataclass(frozen=True)
class LineFilter:
    """Which lines count: those whose path starts with one of ``paths`` (the API's own
    endpoints, say, without health checks or static files) and whose status falls in one of
    ``statuses`` (inclusive ranges). Empty means no condition. A line that cannot be read is
    malformed whatever its path; a readable one left out by the filter is counted as filtered.
    """

    paths: tuple[str, ...] = ()
    statuses: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, paths: Iterable[str] = (), statuses: Iterable[str] = ()) -> LineFilter:
        """``paths``: prefixes such as ``/v1/``; ``statuses``: ``200``, ``2xx``, ``400-499``,
        each alone or comma-separated."""
        prefixes = []
        for prefix in paths:
            if not prefix.startswith("/") or any(c.isspace() for c in prefix):
                raise RegiongateError(
                    f"--path {prefix!r}: give a path prefix starting with / (e.g. /v1/)"
                )
            prefixes.append(prefix)
        ranges = []
        for spec in statuses:
            for part in spec.split(","):
                ranges.append(_status_range(part.strip(), spec))
        return cls(tuple(dict.fromkeys(prefixes)), tuple(dict.fromkeys(ranges)))

    def __bool__(self) -> bool:
        return bool(self.paths or self.statuses)

    def keeps(self, path: object, status: object) -> bool:
        """The rule, one line at a time (the reference replay's)."""
        if self.paths and not (isinstance(path, str) and path.startswith(self.paths)):
            return False
        if self.statuses:
            code = _status_code(status)
            return code is not None and any(lo <= code <= hi for lo, hi in self.statuses)
        return True

    def sql(self, path: str, status: str) -> str:
        """The same rule over the text columns ``path`` and ``status``."""
        terms = []
        if self.paths:
            terms.append(" OR ".join(f"starts_with({path}, {_sql_str(p)})" for p in self.paths))
        if self.statuses:
            code = (f"CASE WHEN regexp_full_match({status}, '[0-9]{{3}}') "
                    f"THEN CAST({status} AS INTEGER) END")  # fmt: skip
            terms.append(" OR ".join(f"{code} BETWEEN {lo} AND {hi}" for lo, hi in self.statuses))
        return "coalesce(" + " AND ".join(f"({t})" for t in terms) + ", false)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "statuses": [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in self.statuses],
        }


_STATUS: Final = re.compile(r"([1-5])xx|([1-5]\d\d)(?:-([1-5]\d\d))?")


def _status_range(part: str, spec: str) -> tuple[int, int]:
    m = _STATUS.fullmatch(part.lower())
    if m is None or (m.group(3) and int(m.group(3)) < int(m.group(2))):
        raise RegiongateError(
            f"--status {spec!r}: use codes (200), classes (2xx) or ranges (400-499), "
            "comma-separated"
        )
    if m.group(1):
        return int(m.group(1)) * 100, int(m.group(1)) * 100 + 99
    return int(m.group(2)), int(m.group(3) or m.group(2))


def _status_code(value: object) -> int | None:
    """A status is three ASCII digits as logged (or a JSON integer); anything else is none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value) if value is not None else ""
    return int(text) if len(text) == 3 and text.isascii() and text.isdigit() else None


def _bare_name(path: str) -> str:
    """``path`` in lower case without a compression suffix."""
    name = path.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        name = name.removesuffix(suffix)
    return name


def _is_tsv(path: str) -> bool:
    return _bare_name(path).endswith(".tsv")


def detect_format(path: str) -> str:
    name = _bare_name(path)
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".log", ".txt")) or "access" in Path(name).name:
        return "nginx"
    raise RegiongateError(
        f"{path}: cannot tell the log format; give --format ({', '.join(FORMATS)})"
    )


# --- the report ---------------------------------------------------------------------------------


@dataclass
class _OrgStats:
    requests: int = 0
    affected: int = 0
    anonymized: int = 0
    first: float = math.inf
    last: float = -math.inf
    actions: list[int] = field(default_factory=lambda: [0, 0, 0])
    territories: Counter[str] = field(default_factory=Counter)
    unsupported: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)  # "allow->block": n


def _ranked(counts: Counter[str]) -> dict[str, int]:
    """Most first, ties by name: the same report whatever order the lines were counted in
    (batches of any size, or the per-line reference)."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


_PHASE_ORDER: Final = {phase.label: int(phase) for phase in Phase}


@dataclass
class ImpactReport:
    """Everything the replay found; ``to_dict`` is the JSON contract (docs/impact.md)."""

    policy: Policy
    against: Policy | None = None
    at: float | None = None
    files: list[str] = field(default_factory=list)
    total_lines: int = 0
    malformed: int = 0
    filtered: int = 0  # readable lines the filter left out
    keep: LineFilter = field(default_factory=lambda: LineFilter())
    # (phase label, action, territory) -> requests
    totals: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    orgs: dict[str, _OrgStats] = field(default_factory=dict)
    # day (ISO date) -> [requests, affected]
    days: dict[str, list[int]] = field(default_factory=dict)
    changed: Counter[str] = field(default_factory=Counter)
    malformed_examples: list[str] = field(default_factory=list)

    def org(self, name: str) -> _OrgStats:
        stats = self.orgs.get(name)
        if stats is None:
            stats = self.orgs[name] = _OrgStats()
        return stats

    @property
    def parsed(self) -> int:
        return self.total_lines - self.malformed

    def to_dict(self) -> dict[str, Any]:
        p = self.policy
        by_territory: dict[str, dict[str, int]] = {}
        by_phase: dict[str, dict[str, int]] = {}
        by_action = dict.fromkeys(ACTIONS, 0)
        for (phase, action, territory), n in self.totals.items():
            t = by_territory.setdefault(territory, {"requests": 0, **dict.fromkeys(ACTIONS, 0)})
            t["requests"] += n
            t[action] += n
            ph = by_phase.setdefault(phase, dict.fromkeys(ACTIONS, 0))
            ph[action] += n
            by_action[action] += n
        orgs = []
        for name, s in sorted(self.orgs.items(), key=lambda kv: (-kv[1].affected, kv[0])):
            entry: dict[str, Any] = {
                "org": name,
                "requests": s.requests,
                "affected_requests": s.affected,
                "affected_share": s.affected / s.requests if s.requests else 0.0,
                "first_seen": _iso(s.first),
                "last_seen": _iso(s.last),
                "territories": _ranked(s.territories),
                "unsupported_territories": _ranked(s.unsupported),
                "anonymizer_share": s.anonymized / s.requests if s.requests else 0.0,
                "actions": dict(zip(ACTIONS, s.actions, strict=True)),
            }
            if self.against is not None:
                entry["changed"] = _ranked(s.changed)
            orgs.append(entry)
        affected_orgs = sum(1 for s in self.orgs.values() if s.affected)
        return {
            "policy": p.ref,
            "policy_name": p.name,
            "against": self.against.ref if self.against else None,
            "notice_from": p.notice_from.isoformat() if p.notice_from else None,
            "enforce_from": p.enforce_from.isoformat() if p.enforce_from else None,
            "at": _iso(self.at) if self.at is not None else None,
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": self.files,
            "lines": {
                "total": self.total_lines,
                "parsed": self.parsed,
                "malformed": self.malformed,
                "filtered": self.filtered,
            },
            "filter": self.keep.to_dict(),
            "malformed_examples": self.malformed_examples,
            "totals": {
                "by_action": by_action,
                "by_phase": dict(sorted(by_phase.items(), key=lambda kv: _PHASE_ORDER[kv[0]])),
                "by_territory": [
                    {"territory": t, **v}
                    for t, v in sorted(
                        by_territory.items(), key=lambda kv: (-kv[1]["requests"], kv[0])
                    )
                ],
                "organisations": len(self.orgs),
                "affected_organisations": affected_orgs,
                "affected_requests": sum(s.affected for s in self.orgs.values()),
                "changed": _ranked(self.changed) if self.against else None,
            },
            "days": [
                {"day": d, "requests": v[0], "affected": v[1]} for d, v in sorted(self.days.items())
            ],
            "orgs": orgs,
        }

    def write_csv(self, out: io.TextIOBase | Any) -> None:
        """One row per organisation."""
        w = csv.writer(out)
        w.writerow(["org", "requests", "affected_requests", "affected_share", "first_seen",
                    "last_seen", "territories", "unsupported_territories", "anonymizer_share",
                    "allow", "flag", "block"])  # fmt: skip
        for o in self.to_dict()["orgs"]:
            w.writerow([
                o["org"], o["requests"], o["affected_requests"], f"{o['affected_share']:.6f}",
                o["first_seen"], o["last_seen"],
                " ".join(f"{k}:{v}" for k, v in o["territories"].items()),
                " ".join(f"{k}:{v}" for k, v in o["unsupported_territories"].items()),
                f"{o['anonymizer_share']:.6f}",
                o["actions"]["allow"], o["actions"]["flag"], o["actions"]["block"],
            ])  # fmt: skip


def _iso(ts: float) -> str | None:
    if ts is None or not math.isfinite(ts):
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


# --- decisions ------------------------------------------------------------------------------------


class _Decider:
    """Decisions per snapshot row, cached in flat arrays, and per time segment by table.

    A decision is a function of the row (its ``Origin``) and the phase: the engine's
    ``outcome`` gives the row's intended action, territory and rule once, and
    ``phase_action`` turns the intended action into the action of each segment. Segments are
    the stretches between the policy's dates (or the single ``--at``), plus one last segment,
    "once enforcement is on", for ``affected``.
    """

    def __init__(self, policy: Policy, snapshot: Snapshot, at: float | None, nrows: int) -> None:
        self.policy = policy
        self.snapshot = snapshot
        bounds = sorted(
            {d.timestamp() for d in (policy.notice_from, policy.enforce_from) if d is not None}
        )
        self.at = at
        self.bounds = np.asarray(bounds if at is None else [], dtype=np.float64)
        reps = [at] if at is not None else [(bounds[0] - 1.0) if bounds else 0.0, *bounds]
        enforce = policy.enforce_from.timestamp() if policy.enforce_from else None
        if enforce is not None:
            reps.append(enforce if at is None else max(at, enforce))
        else:
            reps.append(reps[-1])
        self.reps = reps
        self.nseg = len(reps)
        self.enforce_seg = self.nseg - 1
        phases = [policy.phase_at(r) for r in reps]
        self.phase_label = [ph.label for ph in phases]
        engine = policy.engine
        # table[seg, intended] -> action code
        self.table = np.asarray(
            [[_ACTION_CODE[engine.phase_action(a, ph)] for a in _ACTION_CODE] for ph in phases],
            dtype=np.int64,
        )
        self.invalid_row = nrows  # row index for unreadable clients
        self.core = np.full(nrows + 1, -1, dtype=np.int8)
        self.territory = np.zeros(nrows + 1, dtype=np.int32)
        self.unsupported = np.zeros(nrows + 1, dtype=np.bool_)
        self.territories: list[str] = ["unknown"]
        self._tcode: dict[str, int] = {"unknown": 0}
        self._invalid = Origin(flags=frozenset({Flag.INVALID}), note="unreadable client address")

    def tcode(self, territory: str | None) -> int:
        if territory is None:
            return 0
        code = self._tcode.get(territory)
        if code is None:
            code = self._tcode[territory] = len(self.territories)
            self.territories.append(territory)
        return code

    def origin(self, row: int) -> Origin:
        if row < 0 or row == self.invalid_row:
            return self._invalid
        return self.snapshot.origin_for_row(row)

    def segments(self, ts: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Each time's segment: how many of the policy's dates it is at or after (a time
        that is not a number, on a malformed line: none). A comparison per date (a policy has
        one or two): a fifth of the time of a binary search over a million lines."""
        seg = np.zeros(len(ts), dtype=np.int64)
        if self.at is None:
            for bound in self.bounds.tolist():
                seg += ts >= bound
        return seg

    def fill(self, rows: npt.NDArray[np.int64]) -> None:
        """Decide every row not decided yet."""
        missing = rows[self.core[rows] < 0]
        if not len(missing):
            return
        outcome = self.policy.engine.outcome
        for row in np.unique(missing).tolist():
            intended, territory, rule = outcome(self.origin(row))
            self.core[row] = _ACTION_CODE[intended]
            self.territory[row] = self.tcode(territory)
            self.unsupported[row] = rule == "unsupported-territory"

    def actions(self, rows: npt.NDArray[np.int64], seg: npt.NDArray[np.int64]) -> Any:
        return self.table[seg, self.core[rows]]

    def decide_one(self, row: int, seg: int, account: str | None,
                   client: tuple[int, int] | None) -> Decision:  # fmt: skip
        return self.policy.decide(self.origin(row), Context(self.reps[seg], account, client))


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The columns of a CSV or Parquet source by lower-case name, each as the query names it
    (of names that differ only in case the first counts). A CSV file's header is read here,
    not by DuckDB's sniffer: its columns are ``c0``, ``c1``, ... after ``skip`` lines."""

    columns: dict[str, str]
    width: int = 0  # CSV: the header's column count
    skip: int = 0  # CSV: the lines up to and including the header


def _raise_csv_field_limit() -> None:
    """Fields up to 1 GiB for the csv module: a record over the line limit is read whole and
    then refused, as DuckDB refuses it (csv's own 128 KiB limit would cut it up). The limit is
    process-wide: raised, never lowered."""
    if csv.field_size_limit() < 1 << 30:
        csv.field_size_limit(1 << 30)


def _csv_header(path: str) -> tuple[list[str], int]:
    """The header of a CSV file: its first record with a field that is not blank. Also how
    many records DuckDB is to skip to reach the rows (its ``skip`` counts records: a quoted
    line end inside the header is no extra line)."""
    import zstandard

    _raise_csv_field_limit()
    try:
        with _open_text(path, "replace", "") as fh:
            for n, row in enumerate(csv.reader(fh, delimiter="\t" if _is_tsv(path) else ","), 1):
                if not _blank_record(row):
                    return row, n
    except (OSError, EOFError, ValueError, csv.Error, zstandard.ZstdError) as exc:
        raise RegiongateError(f"{path}: the header cannot be read ({exc})") from None
    return [], 0


def _blank_record(row: list[str]) -> bool:
    """A CSV record of ASCII blanks only (a blank line): no header, and no row."""
    return not any(field.strip(_BLANK_CHARS) for field in row)


def _layout(con: Any, files: Sequence[str], fmt: str, fields: FieldMap) -> _Layout | None:
    """The columns of a CSV file or Parquet files (JSON lines declare theirs; nginx has its
    own). ``None`` for the other formats."""
    columns: dict[str, str] = {}
    if fmt == "csv":
        names, skip = _csv_header(files[0])
        for i, name in enumerate(names):
            columns.setdefault(name.strip().lower(), f"c{i}")
        return _Layout(columns, len(names), skip)
    if fmt == "parquet":
        quoted = "[" + ", ".join(_sql_str(f) for f in files) + "]"
        rows = con.execute(f"DESCRIBE SELECT * FROM {_reader_sql(quoted, files, fmt, fields)}")
        for r in rows.fetchall():
            columns.setdefault(str(r[0]).lower(), str(r[0]))
        return _Layout(columns)
    return None


def _source_sql(files: Sequence[str], fmt: str, fields: FieldMap,
                layout: _Layout | None = None) -> str:  # fmt: skip
    """A query yielding (ts, peer, xff, org, key, path, status) as text, one row per line.

    ``layout``: the columns a CSV or Parquet source has (matched ignoring case); a mapped
    optional field it lacks reads as NULL, a missing time or peer column is an error naming
    it, and so is a missing path or status column a filter needs (``_batches`` unmaps them
    when none does)."""
    quoted = "[" + ", ".join(_sql_str(f) for f in files) + "]"

    def col(name: str | None, required: bool = False) -> str:
        if name is None:
            return "NULL::VARCHAR"
        if not _COLUMN.fullmatch(name):  # FieldMap.parse checks too; this guards the SQL
            raise RegiongateError(f"{name!r} is not a column name")
        if layout is None:
            return f'CAST("{name}" AS VARCHAR)'
        ident = layout.columns.get(name.lower())
        if ident is None:
            if required:
                raise RegiongateError(
                    f"{', '.join(files)}: no column {name!r} (there are "
                    f"{', '.join(sorted(layout.columns))}); map one with --field"
                )
            return "NULL::VARCHAR"
        return 'CAST("' + ident.replace('"', '""') + '" AS VARCHAR)'

    if fmt == "nginx":
        names = "[" + ", ".join(_sql_str(n) for n in _NGINX_NAMES) + "]"
        # Whole lines, read as one CSV column split at a byte nginx never writes unescaped
        # (it logs control bytes as \xXX unless escape=none): a raw 0x01 ends what is read of
        # a line (the per-line reference does the same). Blank lines are no lines.
        blank = " || ".join(f"chr({ord(c)})" for c in _BLANK_CHARS)
        lines = (f"read_csv({quoted}, columns={{'line': 'VARCHAR'}}, delim='\x01', quote='', "
                 "escape='', header=false, auto_detect=false, strict_mode=false, "
                 f"max_line_size={MAX_LINE_BYTES}, ignore_errors=true, "
                 f"store_rejects=true{_compression_sql(files)})")  # fmt: skip
        return (
            "SELECT CAST(epoch(try_strptime(m.time_local, '%d/%b/%Y:%H:%M:%S %z')) AS DOUBLE) "
            "AS ts, nullif(m.remote_addr, '') AS peer, nullif(m.x_forwarded_for, '-') AS xff, "
            "nullif(nullif(m.org, ''), '-') AS org, nullif(nullif(m.key_id, ''), '-') AS key, "
            "nullif(split_part(m.request, ' ', 2), '') AS path, m.status AS status "
            f"FROM (SELECT regexp_extract(line, {_sql_str(NGINX_RE)}, {names}) AS m "
            f"FROM {lines} WHERE trim(line, {blank}) <> '')"
        )
    t = col(fields.time, required=True)
    source = _reader_sql(quoted, files, fmt, fields, layout)
    return (
        f"SELECT {_TIME_SQL.format(t=t)} AS ts, {col(fields.peer, required=True)} AS peer, "
        f"{col(fields.xff)} AS xff, nullif({col(fields.org)}, '') AS org, "
        f"nullif({col(fields.key)}, '') AS key, {col(fields.path, required=True)} AS path, "
        f"{col(fields.status, required=True)} AS status FROM {source}"
    )


# Times a report can show: years 1 to 9999, UTC (epoch seconds). Outside: malformed (a time in
# milliseconds, say).
TIME_MIN: Final = -62135596800.0
TIME_MAX: Final = 253402300800.0
# A time field (JSON lines, CSV, Parquet): a timestamp DuckDB's cast reads (in UTC when it has
# no offset: the connection's time zone is set to UTC), else seconds. Microseconds over 1e6, one
# rounding, as the per-line reference divides (DuckDB's epoch() multiplies by 1e-6: an ulp off).
_TIME_SQL: Final = (
    "coalesce(CAST(epoch_us(try_cast({t} AS TIMESTAMPTZ)) AS DOUBLE) / 1e6, "
    "try_cast({t} AS DOUBLE))"
)


def _reader_sql(quoted: str, files: Sequence[str], fmt: str, fields: FieldMap,
                layout: _Layout | None = None) -> str:  # fmt: skip
    if fmt == "jsonl":
        wanted = (fields.time, fields.peer, fields.xff, fields.org, fields.key, fields.path,
                  fields.status)  # fmt: skip
        columns = ", ".join(
            f"{_sql_str(c)}: 'VARCHAR'" for c in dict.fromkeys(c for c in wanted if c)
        )
        return (f"read_json({quoted}, format='newline_delimited', ignore_errors=true, "
                f"columns={{{columns}}}, maximum_object_size=1048576"
                f"{_compression_sql(files)})")  # fmt: skip
    if fmt == "csv":
        # RFC 4180 quoting ("" inside quotes is a quote), leniently: a quote left open or text
        # after a closing one is read as DuckDB reads it, and lines may end either way (strict
        # mode stops the whole read at a file whose line ends change). A row with fewer fields
        # than the header is rejected (malformed); extra fields are dropped. No sniffing: the
        # header is read by _layout. Parallel reading copes with quoted newlines this way.
        if layout is None or not layout.width:
            raise RegiongateError(f"{', '.join(files)}: no header to read the columns by")
        delim = "\t" if _is_tsv(files[0]) else ","
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(layout.width))
        return (f"read_csv({quoted}, columns={{{columns}}}, header=false, skip={layout.skip}, "
                f"auto_detect=false, delim={_sql_str(delim)}, quote='\"', escape='\"', "
                "strict_mode=false, ignore_errors=true, store_rejects=true, "
                f"max_line_size={MAX_LINE_BYTES}{_compression_sql(files)})")  # fmt: skip
    if fmt == "parquet":
        return f"read_parquet({quoted}, union_by_name=true)"
    raise RegiongateError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _query(files: Sequence[str], fmt: str, fields: FieldMap, keep: LineFilter,
           layout: _Layout | None = None) -> str:  # fmt: skip
    # Text crosses as it is: the addresses become integers in numpy (parse_v4, ~2x faster than
    # SQL regexes), and the forwarding chain is cut into entries there too (_cut_chains: 1.8 CPU-s
    # per 10M lines less than split_part in SQL). The key crosses only for lines without an
    # organisation (it stands in for one), and the filter only as its answer.
    extra = ""
    if fmt == "nginx" or fields.key is not None:
        extra += ", CASE WHEN org IS NULL THEN key END AS key"
    if keep:
        extra += f", {keep.sql('path', 'status')} AS keep"
    return (f"WITH src AS ({_source_sql(files, fmt, fields, layout)}) "
            f"SELECT CASE WHEN ts >= {TIME_MIN} AND ts < {TIME_MAX} THEN ts END AS ts, "
            f"peer, org, xff{extra} FROM src")  # fmt: skip


def _check_filter_fields(keep: LineFilter, fields: FieldMap) -> None:
    for wanted, name, option in ((keep.paths, fields.path, "--path"),
                                 (keep.statuses, fields.status, "--status")):  # fmt: skip
        if wanted and name is None:
            what = option.removeprefix("--")
            raise RegiongateError(
                f"{option} needs the {what} field: map it with --field {what}=COLUMN"
            )


def _batches(files: Sequence[str], fmt: str, fields: FieldMap, keep: LineFilter,
             batch_size: int, threads: int | None, walk: _Walk,
             rejected: list[int]) -> Iterator[_Lines]:  # fmt: skip
    """The lines of ``files`` in batches, read and joined in one thread and made ready for
    numpy (:func:`_prepare`) in another, while the caller works on the batch before.

    Lines of a CSV or nginx log that DuckDB's CSV reader rejects (a row that does not fit the
    header, bytes that are not UTF-8) never reach a batch: their count goes to ``rejected``."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET enable_progress_bar = false")  # ours is on stderr; DuckDB's would mix in
    con.execute("SET TimeZone = 'UTC'")  # a time without an offset is UTC, whatever the host's
    # path and status are read only to filter on (a JSON field costs its parse on every line)
    fields = dataclasses.replace(fields, path=fields.path if keep.paths else None,
                                 status=fields.status if keep.statuses else None)  # fmt: skip
    try:
        layout = _layout(con, files, fmt, fields)
        if layout is not None and fmt == "csv" and not layout.width:
            return  # no header (an empty file, blank lines only): no lines
        query = _query(files, fmt, fields, keep, layout)
        reader = con.sql(query).to_arrow_reader(batch_size)
        # Two threads: one drives DuckDB, one prepares what it hands over, with a helper for
        # the forwarding chains (numpy releases the GIL: the two overlap).
        with ThreadPoolExecutor(1, thread_name_prefix="regiongate-impact-chains") as pool:
            prepare = functools.partial(_prepare, walk=walk, pool=pool)
            yield from _prefetch(map(prepare, _prefetch(_coalesced(reader, batch_size))))
    except (duckdb.Error, OSError, pa.ArrowException) as exc:
        # DuckDB's errors come through the Arrow stream too (a truncated gzip file: OSError)
        text = str(exc).strip()
        line = text.splitlines()[0] if text else type(exc).__name__
        raise RegiongateError(f"reading {', '.join(files)}: {line}") from None
    finally:
        if fmt in ("csv", "nginx"):
            try:
                # one row per error: a row missing two fields has two
                count = con.execute(
                    "SELECT count(DISTINCT (scan_id, file_id, line)) FROM reject_errors"
                ).fetchone()
                rejected.append(int(count[0]) if count else 0)
            except duckdb.Error:
                pass  # nothing was read
        con.close()


@dataclass(slots=True)
class _Lines:
    """A batch of lines as numpy columns: what needs no state of the replay's, computed in
    the reading thread (Arrow and numpy release the GIL: on 2 cores this overlaps with the
    decisions on the batch before). Peers and forwarding chains come as the batch's
    distinct values, resolved once each, and each line's index among them."""

    ts: npt.NDArray[np.float64]
    peers: _Peers
    peer_index: npt.NDArray[np.intp]  # into peers; -1: none
    chains: _Chains
    chain_index: npt.NDArray[np.intp]  # into chains; -1: none
    org_index: npt.NDArray[np.intp]  # into org_names; -1: no organisation
    org_names: list[str]
    key_index: npt.NDArray[np.intp] | None  # into key_names, for lines without an org
    key_names: list[str]
    keep: npt.NDArray[np.bool_] | None  # the line filter's answer; None: no filter


def _prepare(batch: Any, walk: _Walk, pool: Executor | None = None) -> _Lines:
    """A batch made ready for numpy; ``pool``: where to resolve its forwarding chains
    meanwhile (the largest part of the work)."""
    chains = pool.submit(_chains_of, batch.column("xff"), walk) if pool is not None else None
    peers, peer_index = _encode(_as_string(batch.column("peer")))
    org_names, org_index = _encode(batch.column("org"))
    names = batch.schema.names
    keys = _encode(batch.column("key")) if "key" in names else None
    keep = batch.column("keep") if "keep" in names else None
    chain_table, chain_index = (
        chains.result() if chains is not None else _chains_of(batch.column("xff"), walk)
    )
    return _Lines(
        ts=np.asarray(batch.column("ts").to_numpy(zero_copy_only=False), dtype=np.float64),
        peers=walk.peers(peers),
        peer_index=peer_index,
        chains=chain_table,
        chain_index=chain_index,
        org_index=org_index,
        org_names=org_names.to_pylist(),
        key_index=keys[1] if keys is not None and (keys[1] >= 0).any() else None,
        key_names=keys[0].to_pylist() if keys is not None else [],
        keep=np.asarray(keep.fill_null(False), dtype=np.bool_) if keep is not None else None,
    )


def _chains_of(col: Any, walk: _Walk) -> tuple[_Chains, npt.NDArray[np.intp]]:
    """A batch's distinct forwarding headers, walked (:meth:`_Walk.chains`), and each line's
    index among them."""
    values, index = _encode(_as_string(col))
    return walk.chains(values), index


def _as_string(col: Any) -> Any:
    import pyarrow as pa

    return col if col.type == pa.string() else col.cast(pa.string())


def _encode(col: Any) -> tuple[Any, npt.NDArray[np.intp]]:
    """Arrow's dictionary encoding of a column (an array, or a table's chunked column): the
    distinct values, and each line's index among them (-1 for a null).

    The chunks of an encoded column share one dictionary (Arrow keeps one hash table across
    them); should a version of Arrow not, they are unified first."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(col)
    if not isinstance(encoded, pa.ChunkedArray):
        index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
        return encoded.dictionary, index.astype(np.intp)
    chunks = encoded.chunks
    if not chunks:
        return pa.array([], type=col.type), np.zeros(0, np.intp)
    last = chunks[-1].dictionary
    if not all(c.dictionary is last or c.dictionary.equals(last) for c in chunks):
        chunks = encoded.unify_dictionaries().chunks
        last = chunks[-1].dictionary
    parts = [
        (c.indices.fill_null(-1) if c.indices.null_count else c.indices).to_numpy(
            zero_copy_only=False
        )
        for c in chunks
    ]
    return last, np.concatenate(parts, dtype=np.intp)  # (widened as they are joined)


def _coalesced(reader: Any, rows: int) -> Iterator[Any]:
    """Tables of about ``rows`` rows. DuckDB's readers hand over ~60k rows at a time whatever
    size is asked for; each batch costs fixed work in numpy (dictionaries, group-bys, a loop
    over the organisations seen), and addresses repeat across batches, so the batches are
    grouped into one table before they cross. The table keeps them as chunks, uncopied
    (joining them into one array cost 1.1 CPU-s per 10M lines): the dictionary encoding and
    numpy read chunked columns as they are. A group stops at 256 MiB too: memory stays
    bounded however long the lines."""
    import pyarrow as pa

    pending: list[Any] = []
    have = size = 0
    for batch in reader:
        pending.append(batch)
        have += batch.num_rows
        size += batch.nbytes
        if have >= rows or size >= _JOIN_BYTES:
            yield pa.Table.from_batches(pending)
            pending, have, size = [], 0, 0
    if pending:
        yield pa.Table.from_batches(pending)


_JOIN_BYTES: Final = 256 << 20


def _prefetch(reader: Any, depth: int = 2) -> Iterator[Any]:
    """Read the next batches in a thread while the caller works on this one: DuckDB parses
    (GIL released) while numpy aggregates. At most ``depth`` batches wait: memory stays
    bounded."""
    import queue
    import threading

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def pump() -> None:
        try:
            for batch in reader:
                while not stop.is_set():
                    try:
                        q.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    thread = threading.Thread(target=pump, name="regiongate-impact-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(10)


# --- the vectorised replay -----------------------------------------------------------------------


class _Trusted:
    """The trusted proxies, as the resolver matches them (``trusted_networks``: an
    IPv4-mapped network is IPv4), for arrays of addresses: one test per prefix length."""

    def __init__(self, resolver: ClientResolver) -> None:
        v4, v6 = resolver.trusted_networks
        self.v4 = [(np.uint64(shift), np.asarray(sorted(nums), np.uint64)) for shift, nums in v4]
        self.v6 = [(shift, sorted(nums)) for shift, nums in v6]

    def v4_mask(self, values: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """Whether each IPv4 address (an integer) is a trusted proxy."""
        mask = np.zeros(len(values), dtype=np.bool_)
        for shift, nums in self.v4:
            prefix = values >> shift
            if len(nums) > 4:
                mask |= np.isin(prefix, nums)
            else:  # a few networks (the usual): compared one by one, cheaper than isin
                for num in nums:
                    mask |= prefix == num
        return mask

    def v6_mask(
        self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.bool_]:
        """Whether each IPv6 address (upper and lower 64 bits) is a trusted proxy."""
        mask = np.zeros(len(hi), dtype=np.bool_)
        for shift, nums in self.v6:
            for num in nums:
                if shift >= 128:  # ::/0
                    mask[:] = True
                elif shift >= 64:
                    mask |= (hi >> np.uint64(shift - 64)) == np.uint64(num)
                else:
                    low = num & ((1 << (64 - shift)) - 1)
                    mask |= (hi == np.uint64(num >> (64 - shift))) & (
                        (lo >> np.uint64(shift)) == np.uint64(low)
                    )
        return mask


_PARSE_SLICE: Final = 1 << 17


class _Blanks:
    """Where the blanks (spaces and tabs: what trimming removes around an entry) of a byte
    buffer are, in runs, to skip them from any position at once. Built from the blank bytes
    alone (a chain has about one), never a pass of integers over every byte."""

    def __init__(self, data: npt.NDArray[np.uint8]) -> None:
        # one byte more, never blank: position len(data) (a span's end) and -1 read it
        self.mask = np.append((data == 32) | (data == 9), False)
        self.pos = np.flatnonzero(self.mask)
        first = np.ones(len(self.pos), dtype=np.bool_)
        first[1:] = np.diff(self.pos) != 1  # a blank that starts a run
        run = np.cumsum(first) - 1
        starts = np.flatnonzero(first)
        # per blank: the first position of its run, and the first one past it
        self.run_start = self.pos[starts][run]
        ends = np.append(starts[1:], len(self.pos)) - 1 if len(starts) else starts
        self.run_end = (self.pos[ends] + 1)[run]

    def after(self, at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The first position at or after each of ``at`` that is not a blank."""
        if not len(self.pos):
            return at
        j = np.minimum(np.searchsorted(self.pos, at), len(self.pos) - 1)
        return np.where(self.mask[at], self.run_end[j], at)

    def before(self, at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Each of ``at`` moved back over the blanks right before it."""
        if not len(self.pos):
            return at
        j = np.minimum(np.searchsorted(self.pos, at - 1), len(self.pos) - 1)
        return np.where(self.mask[at - 1], self.run_start[j], at)


@dataclass(slots=True)
class _Peers:
    """Distinct peer addresses, each read as a client address on its own (its snapshot row)
    and as a proxy (trusted or not), then one entry more for a line without one (index -1)."""

    values: Any  # the Arrow strings
    given: npt.NDArray[np.bool_]  # not empty (a line without an address is malformed)
    v4: npt.NDArray[np.uint64]
    v6: npt.NDArray[np.bool_]  # plain IPv6 (not IPv4-mapped): hi, lo
    hi: npt.NDArray[np.uint64]
    lo: npt.NDArray[np.uint64]
    readable: npt.NDArray[np.bool_]  # canonical IPv4 or plain IPv6: the rest is the resolver's
    trusted: npt.NDArray[np.bool_]
    row: npt.NDArray[np.int64]  # -1 where not readable


@dataclass(slots=True)
class _Chains:
    """Distinct forwarding headers, each walked as if a trusted proxy had sent it, then one
    entry more for a line without one (index -1): whether it has entries, whether the walk
    found the client here (else the resolver walks it), and that client (IPv4 ``client``, or
    IPv6 ``hi``/``lo`` where ``v6``) with its snapshot row."""

    values: Any  # the Arrow strings
    has: npt.NDArray[np.bool_]
    walked: npt.NDArray[np.bool_]
    v6: npt.NDArray[np.bool_]
    client: npt.NDArray[np.uint64]
    hi: npt.NDArray[np.uint64]
    lo: npt.NDArray[np.uint64]
    row: npt.NDArray[np.int64]  # -1 where not walked


def _with_none(*cols: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
    """Each column with one entry more, a zero (False), for index -1."""
    return [np.append(c, np.zeros(1, c.dtype)) for c in cols]


class _Walk:
    """Client addresses found in numpy, once per distinct peer and forwarding header of a
    batch (a batch of 500k lines holds ~70k of each), as the resolver finds them: IPv4 and
    plain IPv6 peers; behind a trusted peer, X-Forwarded-For chains of up to ``depth``
    entries walked from the right while ``depth`` is within the hop limit, their entries
    canonical IPv4 (or the right-most plain IPv6). Anything else is left to the resolver.

    Per line, the main thread then only picks these answers by index. (Remembering the
    previous batch's values, matched with ``index_in``, was tried: only 65% of a batch's peers
    and 47% of its chains were in the batch before, and the matching cost about what it
    saved.)"""

    def __init__(self, trusted: _Trusted, snapshot: Snapshot, depth: int, xff: bool) -> None:
        self.trusted = trusted
        self.snapshot = snapshot
        self.depth = depth
        self.xff = xff  # the forwarding header is X-Forwarded-For: walked here

    def peers(self, values: Any) -> _Peers:
        import pyarrow.compute as pc

        v4, v4_ok, v6_ok, hi, lo = _peer_cols(values)
        trusted = v4_ok & self.trusted.v4_mask(v4)
        if self.trusted.v6 and v6_ok.any():
            trusted |= v6_ok & self.trusted.v6_mask(hi, lo)
        row = np.where(v4_ok, self.snapshot.rows_v4(v4), -1)
        if v6_ok.any():
            row[v6_ok] = self.snapshot.rows_v6(hi[v6_ok], lo[v6_ok])
        given = np.asarray(pc.greater(pc.binary_length(values), 0))
        given, v4, v6_ok, hi, lo, readable, trusted = _with_none(
            given, v4, v6_ok, hi, lo, v4_ok | v6_ok, trusted
        )
        return _Peers(values, given, v4, v6_ok, hi, lo, readable, trusted, np.append(row, -1))

    def chains(self, values: Any) -> _Chains:
        mask = self.trusted.v4_mask
        proxied: list[npt.NDArray[np.bool_]] = []  # the right-most entry a trusted proxy

        def deeper(count: Any, last: Any, last_ok: Any) -> npt.NDArray[np.bool_]:
            proxied.append(last_ok & mask(last))
            wanted: npt.NDArray[np.bool_] = proxied[0] & (count >= 2) & (count <= self.depth)
            return wanted & self.xff

        count, last, last_ok, p1, p1_ok, p2, p2_ok, v6, hi, lo = _cut_chains(values, 3, deeper)
        n = len(count)
        client = np.zeros(n, np.uint64)
        walked = np.zeros(n, np.bool_)
        row = np.full(n, -1, np.int64)
        if self.xff:
            simple = last_ok & ~proxied[0]  # the right-most entry is no proxy: the client
            if self.trusted.v6 and v6.any():
                v6 &= ~self.trusted.v6_mask(hi, lo)
            # The right-most entry is a trusted proxy: walk one or two more entries; an
            # untrusted entry is the client, and so is the left-most when all are trusted.
            step = last_ok & ~simple & (count >= 2) & (count <= self.depth) & p1_ok
            p1_trusted = mask(p1)
            at1 = step & (~p1_trusted | (count == 2))
            at2 = step & p1_trusted & (count == 3) & p2_ok
            client = np.where(simple, last, np.where(at1, p1, np.where(at2, p2, 0)))
            v4 = simple | at1 | at2
            walked = v4 | v6
            row = np.where(v4, self.snapshot.rows_v4(client), -1)
            if v6.any():
                row[v6] = self.snapshot.rows_v6(hi[v6], lo[v6])
        else:
            v6 = np.zeros(n, np.bool_)
        has, walked, v6, client, hi, lo = _with_none(count > 0, walked, v6, client, hi, lo)
        return _Chains(values, has, walked, v6, client, hi, lo, np.append(row, -1))


def _cut_chains(
    values: Any,
    depth: int,
    deeper: Callable[[Any, Any, Any], npt.NDArray[np.bool_]] | None = None,
) -> list[npt.NDArray[Any]]:
    """Each forwarding header of ``values`` cut into entries, in numpy: how many entries (0
    for a blank header), the right-most ``depth`` as IPv4 integers with their validity, and
    the right-most as IPv6 (:func:`_parse_v6`: valid, upper and lower 64 bits).
    An entry that is not a canonical IPv4 address (IPv6, a port, stray text) is just not
    valid here: such lines go to the exact resolver. ``deeper(count, value, valid)``, given
    the right-most entries, says which headers need the entries left of them (the rest read
    as none: not valid, 0); without it, all do."""
    offsets, data = _text_buffers(values)
    start, end = offsets[:-1], offsets[1:]
    # entries: the commas of each value, counted by binary search in all commas' positions
    commas = np.append(np.flatnonzero(data == 44), len(data))  # a sentinel past every end
    hi = np.searchsorted(commas, end)
    k = hi - np.searchsorted(commas, start)
    blanks = _Blanks(data)
    count = np.where(blanks.after(start) < end, k + 1, 0)  # a header of blanks only is no header
    n = len(count)

    def entry(i: int, rows: Any) -> tuple[Any, Any, Any, Any]:
        """The i-th entry from the right of headers ``rows``: value, validity, span."""
        h, kk, first = hi[rows], k[rows], start[rows]
        right = end[rows] if i == 0 else commas[np.maximum(h - i, 0)]
        left = np.where(kk > i, commas[np.maximum(h - i - 1, 0)] + 1, first)
        left = np.minimum(blanks.after(left), right)
        right = np.maximum(blanks.before(right), left)
        v, ok = _parse_spans(data, left, np.where(kk >= i, right - left, 0))
        return v, ok & (count[rows] > i), left, right

    last, last_ok, left, right = entry(0, slice(None))
    out: list[npt.NDArray[Any]] = [count, last, last_ok]
    # the right-most entry as IPv6 too (valid, upper and lower 64 bits)
    last6 = _parse_v6([], np.zeros(0, np.int64), n)
    maybe = np.flatnonzero(~last_ok & (count > 0) & (right - left >= 2) & (right - left <= 45))
    if len(maybe):
        text = data.tobytes()
        spans = zip(left[maybe].tolist(), right[maybe].tolist(), strict=True)
        last6 = _parse_v6([text[a:b].decode("latin-1") for a, b in spans], maybe, n)
    # Further entries only where asked for (a third of a batch's distinct headers, behind a
    # trusted proxy: cutting them for all was 60% of this function).
    rows = np.flatnonzero(deeper(count, last, last_ok)) if deeper is not None else slice(None)
    for i in range(1, depth):
        v, ok = entry(i, rows)[:2]
        if deeper is None:
            out += [v, ok]
            continue
        value, valid = np.zeros(n, np.uint64), np.zeros(n, np.bool_)
        value[rows], valid[rows] = v, ok
        out += [value, valid]
    return out + list(last6)


def _peer_cols(values: Any) -> list[npt.NDArray[Any]]:
    """Distinct peer addresses (an Arrow string array) as columns: IPv4 (value, valid), then
    IPv6 (valid, upper and lower 64 bits; see :func:`_parse_v6`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    v4, v4_ok = parse_v4(values)
    rest = np.flatnonzero(~v4_ok)  # (a few percent: the rest are IPv4)
    texts = values.take(pa.array(rest))
    colon = np.asarray(pc.match_substring(texts, ":").fill_null(False))
    maybe = rest[colon]
    v6_ok, hi, lo = _parse_v6(texts.filter(pa.array(colon)).to_pylist(), maybe, len(values))
    return [v4, v4_ok, v6_ok, hi, lo]


def _parse_v6(
    texts: Sequence[str], where: npt.NDArray[np.int64], n: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """IPv6 ``texts`` (found at rows ``where`` of ``n``) as (valid, upper and lower 64 bits).
    Plain text only, as ``inet_pton`` reads it, as the resolver does, and not IPv4-mapped (the
    resolver reads that as IPv4): a zone id, brackets, a port or blanks are left to the
    resolver, which reads them with the rest of its rules."""
    valid = np.zeros(n, dtype=np.bool_)
    hi = np.zeros(n, dtype=np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    if not len(texts):
        return valid, hi, lo
    pton, af6, zeros = socket.inet_pton, socket.AF_INET6, bytes(16)
    packed, read = [], []
    for text in texts:
        try:
            packed.append(pton(af6, text))
            read.append(True)
        except (OSError, ValueError):
            packed.append(zeros)
            read.append(False)
    words = np.frombuffer(b"".join(packed), dtype=">u8").astype(np.uint64).reshape(-1, 2)
    h, low = words[:, 0], words[:, 1]
    mapped = (h == 0) & ((low >> np.uint64(32)) == np.uint64(_MAPPED))
    valid[where] = np.asarray(read, dtype=np.bool_) & ~mapped
    hi[where], lo[where] = h, low
    return valid, hi, lo


def parse_v4(arr: Any) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """Canonical dotted-quad IPv4 text (an Arrow string array) to integers, vectorised over
    the Arrow buffers: (values, valid). Canonical as the gateway reads addresses: four
    decimal octets 0-255, no leading zeros, no spaces or signs (``clientip``).

    Long arrays go in slices of 128k: the temporaries (16 bytes a span, several of them)
    stay small.
    """
    import pyarrow as pa

    if arr.type != pa.string():
        arr = arr.cast(pa.string())
    offsets, data = _text_buffers(arr)
    start = offsets[:-1]
    length = offsets[1:] - start
    if arr.null_count:
        length = np.where(np.asarray(arr.is_valid()), length, 0)
    return _parse_spans(data, start, length)


def _text_buffers(arr: Any) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """(offsets, bytes) of an Arrow string array, offsets made absolute in the byte buffer;
    the bytes end in ``_PAD`` zeros, so that a window of 16 bytes from any offset reads
    inside them (:func:`_parse_slice`) and any clipped index reads safely."""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    pad = np.zeros(_PAD, np.uint8)
    data = np.concatenate([np.frombuffer(bufs[2], dtype=np.uint8), pad]) if bufs[2] else pad
    return offsets.astype(np.int64), data


_PAD: Final = 16


def _parse_spans(
    data: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """:func:`parse_v4` of the byte spans ``data[start:start+length]``, every span at once
    (in slices: see :func:`parse_v4`). Spans too short or too long for an address are not
    looked at."""
    n = len(start)
    fits = (length >= 7) & (length <= 15)
    picked = int(np.count_nonzero(fits))
    if picked < n * 7 // 8:  # parse the few that may be addresses
        values, valid = np.zeros(n, np.uint64), np.zeros(n, np.bool_)
        if picked:
            where = np.flatnonzero(fits)
            values[where], valid[where] = _parse_spans(data, start[where], length[where])
        return values, valid
    if n <= _PARSE_SLICE:
        return _parse_slice(data, start, length)
    values = np.empty(n, np.uint64)
    valid = np.empty(n, np.bool_)
    for i in range(0, n, _PARSE_SLICE):
        j = i + _PARSE_SLICE
        values[i:j], valid[i:j] = _parse_slice(data, start[i:j], length[i:j])
    return values, valid


def _parse_slice(
    data: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
    """The spans' bytes as rows of 16 (a strided view of ``data``, which ends in ``_PAD``
    zeros, gathered a row at a time), checked all at once; then the rows with three dots
    have their dots found in one pass over every row, and their four octets read from the
    digits between (2.4x the speed of reading the spans a column of characters at a time)."""
    n = len(start)
    ok = (length >= 7) & (length <= 15)
    ln = np.where(ok, length, 0).astype(np.uint8)
    rows = np.lib.stride_tricks.sliding_window_view(data, _PAD)[start]
    inside = ln[:, None] > _COLUMNS  # the span's own bytes (not those after it)
    digit = rows - np.uint8(48)  # wraps below "0": a digit is 0-9
    dot = (rows == 46) & inside
    stray = ~((digit <= 9) | dot) & inside
    words = stray.view(np.uint64)  # 16 flags a row, as two words: any set is a stray byte
    ok &= (words[:, 0] | words[:, 1]) == 0
    words = dot.view(np.uint64)  # a flag is 0 or 1: the bytes of a word sum by multiplying
    top = np.uint64(56)
    dots = ((words[:, 0] * _BYTE_SUM) >> top) + ((words[:, 1] * _BYTE_SUM) >> top)
    ok &= dots == 3
    # the rows with three dots: their dots are consecutive among all the dots' positions
    three = np.flatnonzero(ok)
    at = np.flatnonzero(dot)
    first_dot = (np.cumsum(dots) - dots)[three].astype(np.int64)
    base = three * _PAD
    d1, d2, d3 = (at[first_dot + i] - base for i in range(3))
    flat = digit.ravel()
    good = np.ones(len(three), np.bool_)
    value = np.zeros(len(three), np.uint32)
    for left, right in ((0, d1), (d1 + 1, d2), (d2 + 1, d3), (d3 + 1, ln[three])):
        width = right - left
        good &= (width >= 1) & (width <= 3)
        p = base + left
        a, b, c = (flat[p + i].astype(np.uint16) for i in range(3))
        octet = np.where(width == 1, a, np.where(width == 2, a * 10 + b, a * 100 + b * 10 + c))
        good &= (octet <= 255) & ((width == 1) | (a != 0))  # no leading zero
        value = (value << np.uint32(8)) | octet.astype(np.uint32)
    values = np.zeros(n, np.uint64)
    values[three] = value
    ok[three] = good
    return values, ok


_COLUMNS: Final = np.arange(_PAD, dtype=np.uint8)
_BYTE_SUM: Final = np.uint64(0x0101010101010101)


def replay(
    files: Sequence[str],
    *,
    policy: Policy,
    snapshot: Snapshot,
    against: Policy | None = None,
    against_snapshot: Snapshot | None = None,
    at: float | None = None,
    client_ip: ClientIPConfig | None = None,
    fmt: str | None = None,
    fields: FieldMap | None = None,
    keep: LineFilter | None = None,
    key_orgs: Mapping[str, str] | None = None,
    batch_size: int = 500_000,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImpactReport:
    """Replay ``files`` (one format) through resolution, intel and ``policy``.

    ``keep`` says which lines count (the rest are counted as filtered); a line without an
    organisation is its key's: ``key_orgs[key]`` (the accounts store's keys), else
    ``"key:" + key``."""
    if not files:
        raise RegiongateError("no log files given")
    for f in files:
        if not Path(f).is_file():
            raise RegiongateError(f"{f}: no such file")
    fmt = fmt or detect_format(files[0])
    fields = fields or FieldMap()
    config = client_ip or ClientIPConfig()
    resolver = ClientResolver(config)
    vector_xff = config.header.strip().lower() == "x-forwarded-for"
    # Chains of up to three entries are walked in numpy when the hop limit lets the resolver
    # walk them all (a longer chain, or a tighter limit, is the exact resolver's).
    walk = _Walk(_Trusted(resolver), snapshot, min(3, config.hop_limit + 1), vector_xff)
    import pyarrow as pa

    nrows = len(snapshot._row_flags)  # the row count of this snapshot
    main = _Decider(policy, snapshot, at, nrows)
    other = (
        _Decider(against, against_snapshot or snapshot, at, nrows) if against is not None else None
    )
    keep = keep or LineFilter()
    _check_filter_fields(keep, fields)
    key_orgs = key_orgs or {}
    report = ImpactReport(policy=policy, against=against, at=at, files=list(files), keep=keep)
    row_flags = snapshot._row_flags
    exempt_orgs = policy.exempt_accounts | (against.exempt_accounts if against else frozenset())
    exempt_nets = bool(policy.exempt_networks or (against.exempt_networks if against else ()))
    memo: dict[tuple[str, str | None], tuple[int, tuple[int, int] | None]] = {}
    org_codes: dict[str, int] = {}
    org_names: list[str] = []
    rejected: list[int] = []  # lines the CSV reader turned away, per read
    tallies = _OrgTallies()

    def codes(names: Iterable[str]) -> list[int]:
        """Replay-wide codes of organisation names, new ones numbered as they come."""
        local = []
        for name in names:
            code = org_codes.get(name)
            if code is None:
                code = org_codes[name] = len(org_names)
                org_names.append(name)
            local.append(code)
        return local

    # CSV files are read one by one: each has its own header (columns in any order, some
    # missing) and delimiter, and DuckDB counts rejected rows only per single-schema read.
    # An empty file has no lines (nor a header to read them by).
    groups = [[f] for f in files if Path(f).stat().st_size] if fmt == "csv" else [list(files)]
    for lines in itertools.chain.from_iterable(
        _batches(group, fmt, fields, keep, batch_size, threads, walk, rejected) for group in groups
    ):
        n = len(lines.ts)
        report.total_lines += n
        ts = lines.ts
        peers, chains = lines.peers, lines.chains
        pi, xi = lines.peer_index, lines.chain_index
        ok = peers.given[pi] & np.isfinite(ts)
        bad = ~ok
        if bad.any():
            report.malformed += int(bad.sum())
        if lines.keep is not None:
            out = ok & ~lines.keep
            report.filtered += int(out.sum())
            ok &= lines.keep
        # 1. client address: what the batch's distinct peers and chains resolve to in numpy
        # (_Walk), picked per line; the rest (odd spellings, long chains, IPv6 deeper in a
        # chain, another forwarding header) by the resolver, line by line
        trusted = peers.trusted[pi]
        via_xff = trusted & chains.has[xi]
        unreadable = ~peers.readable[pi]
        if vector_xff:
            slow = ok & (unreadable | (via_xff & ~chains.walked[xi]))
        else:
            slow = ok & (unreadable | trusted)
        rows = np.where(via_xff, chains.row[xi], peers.row[pi])
        slow_clients: dict[int, tuple[int, int] | None] = {}
        if slow.any():
            where = np.flatnonzero(slow)
            texts = peers.values.take(pa.array(pi[where])).to_pylist()
            xs = xi[where]
            raw = chains.values.take(pa.array(xs, mask=xs < 0)).to_pylist()
            for j, i in enumerate(where.tolist()):
                peer, chain = texts[j].strip(), (raw[j] or "").strip() or None
                key = (peer, chain)
                got = memo.get(key)
                if got is None:
                    headers = [(config.header, chain)] if chain is not None else []
                    resolved = resolver.resolve_text(peer, headers)
                    value = (
                        (resolved.version or 4, resolved.value)
                        if resolved.value is not None
                        else None
                    )
                    row = snapshot.row_of_value(*value) if value is not None else -1
                    if len(memo) > 1_000_000:
                        memo.clear()
                    got = memo[key] = (row, value)
                rows[i] = got[0]
                slow_clients[i] = got[1]
        rows = np.where(rows < 0, nrows, rows)
        # 2-3. decisions per row, actions per (row, segment)
        seg = main.segments(ts)
        main.fill(rows)  # (uncounted lines' rows too: copying out the counted cost more)
        action = main.actions(rows, seg)
        affected = main.table[main.enforce_seg][main.core[rows]] == 2
        territory = main.territory[rows].astype(np.int64)
        enf_territory = territory.copy()
        unsupported = main.unsupported[rows]
        if other is not None:
            other.fill(rows)
            other_action = other.actions(rows, other.segments(ts))
        # organisations: the line's own, else its key's, else (none)
        idx = lines.org_index
        nameless = idx < 0
        with_key = np.zeros(n, dtype=np.bool_)
        if lines.key_index is not None:
            with_key = nameless & (lines.key_index >= 0)
        none_code = org_codes.get(_NO_ORG)
        if none_code is None and (nameless & ~with_key).any():
            none_code = org_codes[_NO_ORG] = len(org_names)
            org_names.append(_NO_ORG)
        by_org = codes(lines.org_names)
        lookup = np.asarray([*by_org, none_code if none_code is not None else 0], dtype=np.int64)
        org = lookup[idx]  # -1 indexes the last element: (none)
        if lines.key_index is not None and with_key.any():
            by_key = np.asarray(
                codes(key_orgs.get(k) or KEY_PREFIX + k for k in lines.key_names), dtype=np.int64
            )
            org[with_key] = by_key[lines.key_index[with_key]]
        # exemptions: decide those lines one by one, with their account and address
        special = np.zeros(n, dtype=np.bool_)
        if exempt_orgs:
            exempt_codes = [org_codes[o] for o in exempt_orgs if o in org_codes]
            if exempt_codes:
                special |= np.isin(org, exempt_codes)
        if exempt_nets:
            special |= ok  # any line may sit in an exempt network: decide each with its address
        special &= ok
        if special.any():
            addrs = {
                i: slow_clients.get(i)
                if slow[i]
                else _address(peers, chains, int(pi[i]), int(xi[i]), bool(via_xff[i]))
                for i in np.flatnonzero(special).tolist()
            }
            _decide_special(special, rows, seg, org, org_names, addrs, main, other, action,
                            affected, territory, enf_territory, unsupported,
                            other_action if other is not None else None)  # fmt: skip
        anon = (row_flags[np.minimum(rows, nrows - 1)] & np.uint16(_ANON_BITS)) != 0
        anon &= rows < nrows
        _aggregate(report, tallies, ok, ts, org, len(org_names), action, affected, territory,
                   enf_territory, unsupported, anon, seg, main,
                   other_action if other is not None else None)  # fmt: skip
        if progress is not None:
            progress(n)
    tallies.fold(report, org_names, main.territories, _CHANGES)
    report.total_lines += sum(rejected)
    report.malformed += sum(rejected)
    return report


def _address(peers: _Peers, chains: _Chains, p: int, x: int,
             via_chain: bool) -> tuple[int, int]:  # fmt: skip
    """The client address (version, value) of a line the walk resolved: its chain's client
    behind a trusted proxy, else its peer."""
    if via_chain:
        if chains.v6[x]:
            return 6, (int(chains.hi[x]) << 64) | int(chains.lo[x])
        return 4, int(chains.client[x])
    if peers.v6[p]:
        return 6, (int(peers.hi[p]) << 64) | int(peers.lo[p])
    return 4, int(peers.v4[p])


def _decide_special(
    special: npt.NDArray[np.bool_],
    rows: npt.NDArray[np.int64],
    seg: npt.NDArray[np.int64],
    org: npt.NDArray[np.int64],
    org_names: list[str],
    addrs: dict[int, tuple[int, int] | None],
    main: _Decider,
    other: _Decider | None,
    action: npt.NDArray[np.int64],
    affected: npt.NDArray[np.bool_],
    territory: npt.NDArray[np.int64],
    enf_territory: npt.NDArray[np.int64],
    unsupported: npt.NDArray[np.bool_],
    other_action: npt.NDArray[np.int64] | None,
) -> None:
    memo: dict[tuple[int, int, str, tuple[int, int] | None],
               tuple[int, int, bool, int, bool, int]] = {}  # fmt: skip
    for i in np.flatnonzero(special).tolist():
        account = org_names[org[i]]
        account = None if account == _NO_ORG else account
        addr = addrs[i]
        k = (int(rows[i]), int(seg[i]), account or "", addr)
        got = memo.get(k)
        if got is None:
            now = main.decide_one(int(rows[i]), int(seg[i]), account, addr)
            enf = main.decide_one(int(rows[i]), main.enforce_seg, account, addr)
            oa = -1
            if other is not None:
                od = other.decide_one(int(rows[i]), int(seg[i]) if other.nseg == main.nseg else 0,
                                      account, addr)  # fmt: skip
                oa = _ACTION_CODE[od.action]
            got = memo[k] = (
                _ACTION_CODE[now.action], main.tcode(now.territory), enf.action is Action.BLOCK,
                main.tcode(enf.territory), enf.rule == "unsupported-territory", oa,
            )  # fmt: skip
        action[i], territory[i], affected[i], enf_territory[i], unsupported[i] = got[:5]
        if other_action is not None:
            other_action[i] = got[5]


class _OrgTallies:
    """What the replay counts per organisation, kept in numpy by organisation code over all
    batches and put into the report once at the end (``fold``): updating each organisation's
    entry in Python after every batch cost ~0.15 s per 10M lines. Counts by (organisation,
    territory) are kept as each batch's distinct keys, ``code << 20 | territory``."""

    _SHIFT: Final = 20  # territory codes: a few hundred at most

    def __init__(self) -> None:
        self.requests = np.zeros(0, np.int64)
        self.affected = np.zeros(0, np.int64)
        self.anonymized = np.zeros(0, np.int64)
        self.actions = np.zeros((0, 3), np.int64)
        self.first = np.zeros(0, np.float64)
        self.last = np.zeros(0, np.float64)
        self.territories: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        self.unsupported: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        self.changed: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []

    def grow(self, norg: int) -> None:
        """Room for organisation codes up to ``norg``."""
        have = len(self.requests)
        if norg <= have:
            return
        more = norg - have
        self.requests = np.concatenate([self.requests, np.zeros(more, np.int64)])
        self.affected = np.concatenate([self.affected, np.zeros(more, np.int64)])
        self.anonymized = np.concatenate([self.anonymized, np.zeros(more, np.int64)])
        self.actions = np.concatenate([self.actions, np.zeros((more, 3), np.int64)])
        self.first = np.concatenate([self.first, np.full(more, np.inf)])
        self.last = np.concatenate([self.last, np.full(more, -np.inf)])

    def count(self, parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
              org: npt.NDArray[np.int64], other: npt.NDArray[np.int64],
              size: int, norg: int) -> None:  # fmt: skip
        """Count a batch's (organisation, ``other``) pairs into ``parts``; ``other`` is below
        ``size``, and organisation codes from ``norg`` on are not counted (:func:`_aggregate`
        puts uncounted lines there). Parts are merged once they hold many keys: memory stays
        bounded by the distinct pairs, however many batches."""
        keys, counts = _tally(org * size + other, (len(self.requests) or 1) * size)
        if len(keys) and keys[-1] >= norg * size:  # (keys come sorted)
            cut = int(np.searchsorted(keys, norg * size))
            keys, counts = keys[:cut], counts[:cut]
        o, t = np.divmod(keys, size)
        parts.append(((o << self._SHIFT) | t, counts))
        if len(parts) > 1 and sum(len(k) for k, _ in parts) > _MERGE_KEYS:
            parts[:] = [_merged(parts)]

    def fold(self, report: ImpactReport, org_names: list[str], territories: list[str],
             changes: list[str]) -> None:  # fmt: skip
        """Everything counted, into ``report``'s organisations."""
        present = np.flatnonzero(self.requests)
        for code, r, f, la, af, ano, (a0, a1, a2) in zip(
            present.tolist(),
            self.requests[present].tolist(),
            self.first[present].tolist(),
            self.last[present].tolist(),
            self.affected[present].tolist(),
            self.anonymized[present].tolist(),
            self.actions[present].tolist(),
            strict=True,
        ):
            s = report.org(org_names[code])
            s.requests += r
            s.affected += af
            s.anonymized += ano
            s.first = min(s.first, f)
            s.last = max(s.last, la)
            s.actions[0] += a0
            s.actions[1] += a1
            s.actions[2] += a2
        mask = (1 << self._SHIFT) - 1
        for parts, names, attr in ((self.territories, territories, "territories"),
                                   (self.unsupported, territories, "unsupported"),
                                   (self.changed, changes, "changed")):  # fmt: skip
            if not parts:
                continue
            keys, counts = _merged(parts)
            for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
                counter = getattr(report.orgs[org_names[k >> self._SHIFT]], attr)
                counter[names[k & mask]] += c
        for stats in report.orgs.values():  # the report's changes: its organisations' summed
            report.changed.update(stats.changed)


_MERGE_KEYS: Final = 1 << 20


def _merged(
    parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Counted keys, several lists of them, as one: each distinct key with its total."""
    keys, inverse = np.unique(np.concatenate([k for k, _ in parts]), return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate([c for _, c in parts]))
    return keys, counts.astype(np.int64)  # (sums of counts: exact in float64 below 2**53)


def _aggregate(
    report: ImpactReport,
    tallies: _OrgTallies,
    ok: npt.NDArray[np.bool_],
    ts: npt.NDArray[np.float64],
    org: npt.NDArray[np.int64],
    norg: int,
    action: npt.NDArray[np.int64],
    affected: npt.NDArray[np.bool_],
    territory: npt.NDArray[np.int64],
    enf_territory: npt.NDArray[np.int64],
    unsupported: npt.NDArray[np.bool_],
    anon: npt.NDArray[np.bool_],
    seg: npt.NDArray[np.int64],
    main: _Decider,
    other_action: npt.NDArray[np.int64] | None,
) -> None:
    # Lines not counted (malformed, filtered out) stay where they are rather than being cut
    # out (a copy of every column cost a quarter of this function): they count for an
    # organisation of their own, code ``norg``, whose counts are dropped, at the time of a
    # counted line, whose day's count they are taken from again.
    bad = len(ok) - int(np.count_nonzero(ok))
    if bad == len(ok):
        return
    counted = int(np.argmax(ok))  # a counted line
    if bad:
        org = np.where(ok, org, norg)
        ts = np.where(ok, ts, ts[counted])
        affected = affected & ok
    nterr = len(main.territories)
    # totals by (segment, action, territory)
    key = (seg * 3 + action) * nterr + territory
    size = main.nseg * 3 * nterr
    if bad:
        key = np.where(ok, key, size)
    keys, counts = _tally(key, size + 1)
    for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
        if k == size:
            continue
        s, rest = divmod(k, 3 * nterr)
        a, t = divmod(rest, nterr)
        report.totals[(main.phase_label[s], ACTIONS[a], main.territories[t])] += c
    # per organisation, into the replay's tallies
    tallies.grow(norg + 1)
    tallies.requests[:norg] += np.bincount(org, minlength=norg + 1)[:norg]
    tallies.affected[:norg] += _counts(org, affected, norg + 1)[:norg]
    tallies.anonymized[:norg] += _counts(org, anon, norg + 1)[:norg]
    by_action = np.bincount(org * 3 + action, minlength=(norg + 1) * 3)
    tallies.actions[:norg] += by_action[: norg * 3].reshape(norg, 3)
    np.minimum.at(tallies.first, org, ts)
    np.maximum.at(tallies.last, org, ts)
    tallies.first[norg], tallies.last[norg] = np.inf, -np.inf  # the uncounted lines' slot
    tallies.count(tallies.territories, org, territory, nterr, norg)
    sel = affected & unsupported
    if sel.any():
        tallies.count(tallies.unsupported, org[sel], enf_territory[sel], nterr, norg)
    # by day
    day = np.floor(ts / _DAY).astype(np.int64)  # as the reference: -1e-320 s is 1970-01-01
    low = int(day.min())
    if int(day.max()) - low <= len(day) + 366:  # a dense range of days: counted in place
        day -= low
        dreq = np.bincount(day)
        if bad:
            dreq[int(day[counted])] -= bad
        daff = np.bincount(day[affected], minlength=len(dreq))
        dkeys = np.flatnonzero(dreq)
        dreq, daff, dkeys = dreq[dkeys], daff[dkeys], dkeys + low
    else:  # far-flung stamps: sort them
        dkeys, dinv = np.unique(day, return_inverse=True)
        dreq = np.bincount(dinv)
        if bad:  # (that day keeps its counted line)
            dreq[int(dinv[counted])] -= bad
        daff = np.bincount(dinv[affected], minlength=len(dreq))
    for d, r, a in zip(dkeys.tolist(), dreq.tolist(), daff.tolist(), strict=True):
        label = dt.datetime.fromtimestamp(d * _DAY, dt.UTC).date().isoformat()
        entry = report.days.setdefault(label, [0, 0])
        entry[0] += int(r)
        entry[1] += int(a)
    # what changes from the other policy to this one: (from, to) as one of nine codes
    if other_action is not None:
        oa = other_action
        diff = oa != action  # (uncounted lines: the uncounted organisation's)
        if diff.any():
            tallies.count(tallies.changed, org[diff], oa[diff] * 3 + action[diff], 9, norg)


def _counts(codes: npt.NDArray[np.int64], picked: npt.NDArray[np.bool_],
            n: int) -> npt.NDArray[np.int64]:  # fmt: skip
    """How many of the ``picked`` lines each of ``n`` codes has. Few lines: a bincount of
    those picked; many: the picks as weights (picking half the lines of a batch mispredicts
    its branches: 2.5 against 0.8 ms per 500k lines)."""
    if np.count_nonzero(picked) * 8 < len(picked):
        return np.bincount(codes[picked], minlength=n)
    return np.bincount(codes, weights=picked, minlength=n).astype(np.int64)


# The nine (from, to) codes of a change of action, as the report names them.
_CHANGES: Final = [f"{ACTIONS[frm]}->{ACTIONS[to]}" for frm in range(3) for to in range(3)]


def _tally(
    keys: npt.NDArray[np.int64], size: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The distinct ``keys`` (all in ``[0, size)``) and how often each occurs: counted in
    place when the key space is not much larger than the keys (``np.bincount``: one pass),
    sorted otherwise (``np.unique``: a sort, 4-5x the time on a million keys)."""
    if size <= max(4 * len(keys), 1 << 16):
        counts = np.bincount(keys, minlength=size)
        present = np.flatnonzero(counts)
        return present, counts[present]
    return np.unique(keys, return_counts=True)


# --- the per-line reference -----------------------------------------------------------------------


def compression_of(path: str) -> str:
    """``gzip``, ``zstd`` or ``none``: by the file's first bytes, whatever its name says."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise RegiongateError(f"{path}: {exc.strerror or exc}") from None
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def _compression_sql(files: Sequence[str]) -> str:
    """The ``compression`` argument for DuckDB's readers: the files' own when they agree (a
    name need not say it), else DuckDB's guess from each name."""
    kinds = {compression_of(f) for f in files}
    return f", compression='{kinds.pop()}'" if len(kinds) == 1 else ""


def _open_text(path: str, errors: str = "replace", newline: str | None = None) -> Any:
    """``path`` as text, decompressed. ``newline``: as for :func:`open` (``None``: any of
    ``\\n``, ``\\r\\n``, ``\\r`` ends a line; ``"\\n"``: only ``\\n`` does, as for DuckDB's
    JSON reader)."""
    # utf-8-sig: a byte-order mark at the start is no part of the first line (DuckDB skips it)
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors=errors, newline=newline)
    if kind == "zstd":
        import zstandard

        return io.TextIOWrapper(
            zstandard.ZstdDecompressor().stream_reader(open(path, "rb")),
            encoding="utf-8-sig",
            errors=errors,
            newline=newline,
        )
    return open(path, encoding="utf-8-sig", errors=errors, newline=newline)


def _not_utf8(text: str) -> bool:
    """Whether ``text`` (read with ``surrogateescape``) held bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parse_time(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    # microseconds over 1e6, as _TIME_SQL divides (timestamp() rounds once more, exactly)
    since = (when if when.tzinfo else when.replace(tzinfo=dt.UTC)) - _EPOCH
    return float(since // _MICROSECOND) / 1e6


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)


class _Obj(dict[str, Any]):
    """A JSON object as DuckDB's reader takes it: a repeated key keeps its first value; the
    pairs as written are kept for the object's text (DuckDB gives nested objects as written,
    repeats included)."""

    pairs: list[tuple[str, Any]]

    @classmethod
    def of(cls, pairs: list[tuple[str, Any]]) -> _Obj:
        obj = cls()
        for key, value in pairs:
            obj.setdefault(key, value)
        obj.pairs = pairs
        return obj


class _Raw(str):
    """A JSON number or constant kept as written: ``NaN``, ``Infinity``, ``1e400``."""


def _json_float(text: str) -> float | _Raw:
    value = float(text)
    return value if math.isfinite(value) else _Raw(text)


def _json_text(value: object) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, _Obj):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _json_text(v)
                              for k, v in value.pairs) + "}"  # fmt: skip
    if isinstance(value, list):
        return "[" + ",".join(map(_json_text, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


def _as_text(value: object) -> str | None:
    """A JSON value as the text DuckDB's VARCHAR columns give: strings as they are, numbers
    as Python prints them (as written when out of range), ``true``/``false``, objects and
    arrays as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _json_text(value)


_TRAILING_COMMA: Final = re.compile(r",[ \t\r\n]*[}\]]")


def _without_trailing_commas(line: str) -> str:
    """``line`` without the commas right before a closing brace or bracket (outside strings),
    which DuckDB's JSON reader allows: ``{"a": 1,}`` reads as ``{"a": 1}``."""
    out: list[str] = []
    in_string = escaped = False
    last = ""  # the last character outside strings that is not a blank
    for i, ch in enumerate(line):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "," and _TRAILING_COMMA.match(line, i) and last not in "[{,":
            continue  # (after a value only: "[,]" stays malformed)
        if not in_string and ch not in " \t\r\n":
            last = ch
        out.append(ch)
    return "".join(out)


def _json_record(line: str) -> dict[str, Any] | None:
    """A JSON-lines record as DuckDB's reader takes it; ``None`` when it refuses the line (not
    JSON, not an object, or a string holding half of a surrogate pair)."""
    if _TRAILING_COMMA.search(line):
        line = _without_trailing_commas(line)
    try:
        obj = json.loads(line, object_pairs_hook=_Obj.of, parse_float=_json_float,
                         parse_constant=_Raw)  # fmt: skip
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    if "\\u" in line:  # an escape may have made a lone surrogate, which is not UTF-8
        try:
            _json_text(obj).encode("utf-8")
        except UnicodeEncodeError:
            return None
    return obj


_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


class _TimeReader:
    """Times read as the vectorised replay reads them: the same SQL expression (DuckDB's
    timestamp cast, else a number of seconds), one distinct text at a time."""

    def __init__(self) -> None:
        import duckdb

        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._sql = "SELECT " + _TIME_SQL.format(t="CAST($1 AS VARCHAR)")
        self._memo: dict[str, float | None] = {}

    def __call__(self, value: object) -> float | None:
        if type(value) is int or type(value) is float:
            return float(value)  # what DuckDB's cast makes of the number's text
        text = _as_text(value)
        if text is None:
            return None
        if _RFC3339.fullmatch(text):  # the common case, which both read alike: no query
            got = _parse_time(text)
            if got is not None:
                return got  # (else DuckDB may still read it: hour 24, say)
        if text in self._memo:
            return self._memo[text]
        row = self._con.execute(self._sql, [text]).fetchone()
        got = float(row[0]) if row and row[0] is not None else None
        if len(self._memo) >= 100_000:
            self._memo.clear()
        self._memo[text] = got
        return got


def _reference_lines(
    path: str, fmt: str, fields: FieldMap, *, strict_utf8: bool = False
) -> Iterator[dict[str, Any] | None]:
    """Records of a log, ``None`` for a line that cannot be read. ``strict_utf8``: a line with
    bytes that are not UTF-8 cannot be (DuckDB's readers turn it away); otherwise such bytes
    read as U+FFFD. Lines of ASCII blanks are skipped, as DuckDB skips them."""
    errors = "surrogateescape" if strict_utf8 else "replace"
    # JSON lines end at \n only (DuckDB's reader); csv wants the line ends as they are; an
    # nginx line's carriage return counts toward the line limit as in DuckDB
    newline = {"jsonl": "\n", "csv": "", "nginx": ""}.get(fmt)
    with _open_text(path, errors, newline) as fh:
        if fmt == "jsonl":
            for line in fh:
                if not line.strip(_BLANK_CHARS):
                    continue
                if strict_utf8 and _not_utf8(line):
                    yield None
                    continue
                yield _json_record(line)
        elif fmt == "csv":
            yield from _reference_csv(fh, path, strict_utf8)
        elif fmt == "nginx":
            pattern = re.compile(NGINX_RE)
            for line in fh:
                if strict_utf8 and _too_long(line, quoted=False):
                    yield None
                    continue
                line = line.split("\x01", 1)[0].rstrip("\r\n")  # see _source_sql
                if not line.strip(_BLANK_CHARS):
                    continue
                if strict_utf8 and _not_utf8(line):
                    yield None
                    continue
                m = pattern.match(line)
                if m is None:
                    yield None
                    continue
                rec = dict(zip(_NGINX_NAMES, m.groups(), strict=True))
                try:
                    when = dt.datetime.strptime(rec["time_local"], "%d/%b/%Y:%H:%M:%S %z")
                except (TypeError, ValueError):
                    rec["time"] = None
                else:
                    rec["time"] = when.timestamp()
                for k in ("x_forwarded_for", "org", "key_id"):
                    if rec.get(k) in ("-", ""):
                        rec[k] = None
                parts = (rec["request"] or "").split(" ")
                rec["path"] = parts[1] if len(parts) > 1 and parts[1] else None
                yield rec
        else:
            raise RegiongateError(f"the reference replay does not read {fmt}")


def _too_long(raw: str, *, quoted: bool = True) -> bool:
    """Whether DuckDB's CSV reader refuses a line (or a record spanning lines) as longer than
    ``MAX_LINE_BYTES``, mirrored from how it measures: with quoting on (CSV) the bytes without
    the line's end must not exceed the limit; without (nginx lines) a carriage return before
    the line feed counts and the limit itself is too long; a last line without an end is
    refused at the limit either way."""
    if not quoted:
        size = len(raw.removesuffix("\n").encode("utf-8", "surrogateescape"))
        return size >= MAX_LINE_BYTES
    if raw.endswith("\r\n"):
        body, ended = raw[:-2], True
    elif raw.endswith(("\n", "\r")):
        body, ended = raw[:-1], True
    else:
        body, ended = raw, False
    size = len(body.encode("utf-8", "surrogateescape"))
    return size > MAX_LINE_BYTES or (not ended and size >= MAX_LINE_BYTES)


def _reference_csv(fh: Any, path: str, strict_utf8: bool) -> Iterator[dict[str, Any] | None]:
    """CSV records by header name (blanks trimmed, lower case; of names that differ only in
    case the first counts), as the vectorised replay reads them: the header is the first
    record with fields; a record too long or with fewer fields than the header is malformed;
    extra fields are dropped."""
    _raise_csv_field_limit()
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in fh:
            consumed.append(line)
            yield line

    reader = csv.reader(lines(), delimiter="\t" if _is_tsv(path) else ",")
    names: list[str] = []
    while _blank_record(names):
        try:
            names = next(reader)
        except StopIteration:
            return
        except csv.Error:
            return  # no header to read by: the vectorised replay refuses the file
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name.strip().lower(), i)
    while True:
        consumed.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield None
            continue
        if not row:
            continue  # a blank line is no row (DuckDB skips it too)
        if len(row) < len(names) or _too_long("".join(consumed)):
            yield None
            continue
        if strict_utf8 and any(_not_utf8(v) for v in row[: len(names)]):
            yield None  # (fields past the header's are dropped unread, as DuckDB drops them)
            continue
        yield {name: row[i] for name, i in index.items()}


def replay_reference(
    files: Sequence[str],
    *,
    policy: Policy,
    snapshot: Snapshot,
    at: float | None = None,
    client_ip: ClientIPConfig | None = None,
    fmt: str | None = None,
    fields: FieldMap | None = None,
    keep: LineFilter | None = None,
    key_orgs: Mapping[str, str] | None = None,
) -> ImpactReport:
    """The same replay, one line at a time in plain Python: the tests' reference."""
    fmt = fmt or detect_format(files[0])
    fields = fields or FieldMap()
    if fmt == "nginx":
        fields = FieldMap(time="time", peer="remote_addr", xff="x_forwarded_for", org="org",
                          key="key_id", path="path", status="status")  # fmt: skip
    keep = keep or LineFilter()
    _check_filter_fields(keep, fields)
    if fmt == "csv":  # CSV columns are matched ignoring case, as DuckDB does
        fields = FieldMap(**{k: v.lower() if v else v for k, v in fields.__dict__.items()})
    key_orgs = key_orgs or {}
    config = client_ip or ClientIPConfig()
    resolver = ClientResolver(config)
    report = ImpactReport(policy=policy, at=at, files=list(files), keep=keep)
    enforce = policy.enforce_from.timestamp() if policy.enforce_from else None
    invalid = Origin(flags=frozenset({Flag.INVALID}), note="unreadable client address")
    read_time = _TimeReader()
    for path in files:
        for rec in _reference_lines(path, fmt, fields, strict_utf8=True):
            report.total_lines += 1
            if not rec:
                ts = None
            elif fmt == "nginx":
                ts = rec["time"]
            else:
                ts = read_time(rec.get(fields.time))
            peer = _as_text(rec.get(fields.peer)) if rec else None
            peer = peer.strip() if peer else None
            if ts is None or peer is None or not TIME_MIN <= ts < TIME_MAX or rec is None:
                report.malformed += 1
                continue
            if keep and not keep.keeps(
                rec.get(fields.path) if fields.path else None,
                rec.get(fields.status) if fields.status else None,
            ):
                report.filtered += 1
                continue
            xff = _as_text(rec.get(fields.xff)) if fields.xff else None
            xff = xff.strip() if xff else None
            org_name = _as_text(rec.get(fields.org)) if fields.org else None
            key = _as_text(rec.get(fields.key)) if fields.key else None
            if not org_name:
                org_name = (key_orgs.get(key) or KEY_PREFIX + key) if key else _NO_ORG
            headers = [(config.header, xff)] if xff else []
            resolved = resolver.resolve_text(peer, headers)
            origin = snapshot.lookup(resolved.ip) if resolved.ip is not None else invalid
            account = None if org_name == _NO_ORG else org_name
            client = (resolved.version or 4, resolved.value) if resolved.value is not None else None
            when = at if at is not None else ts
            now = policy.decide(origin, Context(when, account, client))
            enf_at = max(when, enforce) if enforce is not None else when
            enf = policy.decide(origin, Context(enf_at, account, client))
            phase = policy.phase_at(when).label
            territory = now.territory or "unknown"
            report.totals[(phase, str(now.action), territory)] += 1
            s = report.org(org_name)
            s.requests += 1
            s.actions[_ACTION_CODE[now.action]] += 1
            s.territories[territory] += 1
            s.first = min(s.first, ts)
            s.last = max(s.last, ts)
            if origin.flags & {Flag.TOR, Flag.VPN, Flag.PROXY, Flag.HOSTING, Flag.RELAY}:
                s.anonymized += 1
            hit = enf.action is Action.BLOCK
            if hit:
                s.affected += 1
                if enf.rule == "unsupported-territory":
                    s.unsupported[enf.territory or "unknown"] += 1
            day = dt.datetime.fromtimestamp(math.floor(ts / _DAY) * _DAY, dt.UTC).date()
            entry = report.days.setdefault(day.isoformat(), [0, 0])
            entry[0] += 1
            entry[1] += int(hit)
    return report


def phase_of(policy: Policy, at: float) -> Phase:
    return policy.phase_at(at)
