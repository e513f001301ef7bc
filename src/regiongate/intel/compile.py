"""Compile several sources into one snapshot: non-overlapping ranges, one row of answers each.

The address space of each family is cut at every boundary of every source; each piece gets
a row (one value id per source), rows are interned, adjacent pieces with the same row are
merged. IPv4 then gets a DIR-24-8 style table (Gupta, Lin, McKeown 1998): a direct array over
the top 24 bits, with a short sorted list only for the /24s that are split. IPv6 is a sorted
table. Everything here is vectorised with numpy: the real data has ~15M networks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from regiongate import __version__
from regiongate.errors import DataError
from regiongate.intel.addresses import SPECIAL_V4, SPECIAL_V6, V4_MAX, V6_MAX
from regiongate.intel.consensus import SPECIAL_KIND, make_origin
from regiongate.intel.model import FLAG_BITS, Consensus, SourceAnswer
from regiongate.intel.readers import Family, Ranges, RangesBuilder, RangeValue
from regiongate.intel.snapshot import SPLIT_BIT, write_snapshot

__all__ = ["SPECIAL_SOURCE", "SourceInfo", "compile_snapshot", "merge_ranges"]

SPECIAL_SOURCE = "iana-special"

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInfo:
    """Provenance of one source, kept in the snapshot header."""

    name: str
    format: str
    data_date: str | None = None
    license: str = ""
    attribution: str = ""
    origin: str = ""
    files: tuple[dict[str, Any], ...] = ()
    ranges: int = 0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "data_date": self.data_date,
            "license": self.license,
            "attribution": self.attribution,
            "origin": self.origin,
            "files": list(self.files),
            "ranges": self.ranges,
            "description": self.description,
            **self.extra,
        }


def merge_ranges(parts: Sequence[Ranges]) -> Ranges:
    """Merge several files of one source (say, its IPv4 and IPv6 files) into one ``Ranges``."""
    if len(parts) == 1:
        return parts[0]
    builder = RangesBuilder()
    for part in parts:
        remap = [0] + [builder.value_id(v) for v in part.values[1:]]
        for version, fam in ((4, part.v4), (6, part.v6)):
            target = builder.v4 if version == 4 else builder.v6
            target.starts.extend(fam.starts)
            target.ends.extend(fam.ends)
            target.vids.extend(remap[v] for v in fam.vids)
    dates = sorted(d for d in (p.data_date for p in parts) if d)
    return builder.build(
        data_date=dates[-1] if dates else None,
        description="; ".join(dict.fromkeys(p.description for p in parts if p.description)),
    )


def _special_ranges() -> Ranges:
    builder = RangesBuilder()
    for version, table in ((4, SPECIAL_V4), (6, SPECIAL_V6)):
        for start, end, desc in table:
            vid = builder.value_id(RangeValue(kind=SPECIAL_KIND, provider=desc))
            builder.add(version, start, end, vid)
    return builder.build(description="IANA special-purpose address registries")


# --- per-family arrays ---------------------------------------------------------------------------


def _keys(values: Sequence[int], version: int) -> npt.NDArray[Any]:
    """Sortable numpy keys: uint64 for IPv4, 16-byte big-endian strings for IPv6."""
    if version == 4:
        return np.asarray(values, dtype=np.uint64)
    blob = b"".join(v.to_bytes(16, "big") for v in values)
    return np.frombuffer(blob, dtype="S16").copy() if values else np.zeros(0, dtype="S16")


def _normalised(fam: Family, version: int) -> tuple[list[int], list[int], list[int]]:
    """Sorted, non-overlapping ranges; where a source overlaps itself the most specific wins."""
    order = sorted(range(len(fam)), key=fam.starts.__getitem__)
    starts = [fam.starts[i] for i in order]
    ends = [fam.ends[i] for i in order]
    vids = [fam.vids[i] for i in order]
    if all(s > e for s, e in zip(starts[1:], ends[:-1], strict=False)):
        return starts, ends, vids
    top = V4_MAX if version == 4 else V6_MAX
    bounds = sorted(set(starts) | {e + 1 for e in ends if e < top})
    pos = {b: i for i, b in enumerate(bounds)}
    painted = np.zeros(len(bounds), dtype=np.int64)
    # Biggest first, so smaller (more specific) ranges paint over them; among equals the
    # later line wins, as in a routing table built from an ordered list.
    by_size = sorted(range(len(starts)), key=lambda i: (-(ends[i] - starts[i]), order[i]))
    for i in by_size:
        a = pos[starts[i]]
        b = pos[ends[i] + 1] if ends[i] < top else len(bounds)
        painted[a:b] = vids[i]
    out_s: list[int] = []
    out_e: list[int] = []
    out_v: list[int] = []
    for k, b in enumerate(bounds):
        v = int(painted[k])
        end = bounds[k + 1] - 1 if k + 1 < len(bounds) else top
        if v == 0:
            continue
        if out_v and out_v[-1] == v and out_e[-1] + 1 == b:
            out_e[-1] = end
        else:
            out_s.append(b)
            out_e.append(end)
            out_v.append(v)
    return out_s, out_e, out_v


def _cut(
    families: Sequence[tuple[list[int], list[int], list[int]]], version: int
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int32]]:
    """Cut the space at every source boundary; return piece starts and the (pieces × sources)
    matrix of value ids."""
    top = V4_MAX if version == 4 else V6_MAX
    boundary_lists: list[npt.NDArray[Any]] = [_keys([0], version)]
    keyed = []
    for starts, ends, vids in families:
        ks, ke = _keys(starts, version), _keys(ends, version)
        keyed.append((ks, ke, np.asarray(vids, dtype=np.int32)))
        boundary_lists.append(ks)
        boundary_lists.append(_keys([e + 1 for e in ends if e < top], version))
    cuts = np.unique(np.concatenate(boundary_lists))
    matrix = np.zeros((len(cuts), len(families)), dtype=np.int32)
    for j, (ks, ke, kv) in enumerate(keyed):
        if len(ks) == 0:
            continue
        idx = np.searchsorted(ks, cuts, side="right") - 1
        safe = np.clip(idx, 0, None)
        inside = (idx >= 0) & (cuts <= ke[safe])
        matrix[:, j] = np.where(inside, kv[safe], 0)
    return cuts, matrix


def _merge_adjacent(
    cuts: npt.NDArray[Any], rows: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    keep = np.ones(len(rows), dtype=bool)
    keep[1:] = rows[1:] != rows[:-1]
    return cuts[keep], rows[keep]


def _dir24(
    starts: npt.NDArray[np.uint32], rows: npt.NDArray[np.uint32]
) -> dict[str, npt.NDArray[Any]]:
    """The IPv4 lookup table: ``top[a >> 8]`` is a row, or ``SPLIT_BIT | j`` for split /24 j."""
    prefixes = np.arange(1 << 24, dtype=np.uint32) << np.uint32(8)
    first = np.searchsorted(starts, prefixes, side="right") - 1
    top = rows[first].astype(np.uint32)
    inner = starts[(starts & np.uint32(255)) != 0]
    split = np.unique(inner >> np.uint32(8))
    if len(split) >= SPLIT_BIT:  # pragma: no cover - 2^31 split /24s cannot exist
        raise DataError("too many split /24s")
    top[split] = np.uint32(SPLIT_BIT) | np.arange(len(split), dtype=np.uint32)
    heads = split << np.uint32(8)
    l2_start = np.sort(np.concatenate([heads, inner])).astype(np.uint32)
    l2_row = rows[np.searchsorted(starts, l2_start, side="right") - 1].astype(np.uint32)
    l2_off = np.append(np.searchsorted(l2_start, heads, side="left"), len(l2_start))
    return {
        "v4_top": top,
        "v4_l2_off": l2_off.astype(np.uint32),
        "v4_l2_start": l2_start,
        "v4_l2_row": l2_row,
    }


def compile_snapshot(
    sources: Sequence[tuple[SourceInfo, Ranges]],
    out: Path,
    *,
    created: dt.datetime | None = None,
    inputs_digest: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compile ``sources`` (highest priority first) into a snapshot file at ``out``.

    Returns the snapshot header. The file is written to ``out`` directly; installing it
    atomically is the caller's job (see :mod:`regiongate.intel.install`).
    """
    say = progress or (lambda _msg: None)
    names = [info.name for info, _ in sources]
    if len(set(names)) != len(names):
        raise DataError(f"duplicate source names: {names}")
    if SPECIAL_SOURCE in names:
        raise DataError(f"{SPECIAL_SOURCE!r} is a reserved source name")
    special = SourceInfo(
        name=SPECIAL_SOURCE,
        format="builtin",
        license="public domain",
        attribution="IANA special-purpose address registries",
        description="private, loopback, link-local, CGNAT, documentation and other reserved space",
    )
    all_sources = [(special, _special_ranges()), *sources]
    per_family: dict[int, tuple[npt.NDArray[Any], npt.NDArray[np.int32]]] = {}
    for version in (4, 6):
        say(f"cutting IPv{version} space")
        fams = [
            _normalised(ranges.v4 if version == 4 else ranges.v6, version)
            for _, ranges in all_sources
        ]
        per_family[version] = _cut(fams, version)
    say("interning rows")
    n4 = len(per_family[4][0])
    stacked = np.concatenate(
        [np.zeros((1, len(all_sources)), dtype=np.int32), per_family[4][1], per_family[6][1]]
    )
    table, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    # Row 0 is "nothing known": the all-zero row sorts first and was put in on purpose.
    if table[0].any():  # pragma: no cover - guarded by construction
        raise DataError("internal error: row 0 is not empty")
    cuts4, rows4 = _merge_adjacent(per_family[4][0], inverse[1 : 1 + n4])
    cuts6, rows6 = _merge_adjacent(per_family[6][0], inverse[1 + n4 :])
    say("building IPv4 table")
    arrays: dict[str, npt.NDArray[Any]] = {}
    starts4 = cuts4.astype(np.uint32)
    arrays.update(_dir24(starts4, rows4.astype(np.uint32)))
    arrays["v4_start"] = starts4
    arrays["v4_row"] = rows4.astype(np.uint32)
    words = np.frombuffer(cuts6.tobytes(), dtype=">u8").reshape(-1, 2)
    arrays["v6_hi"] = words[:, 0].astype("<u8")
    arrays["v6_lo"] = words[:, 1].astype("<u8")
    arrays["v6_row"] = rows6.astype(np.uint32)
    arrays["rows"] = table.astype(np.int32)
    say("resolving consensus")
    values = [[list(v) for v in ranges.values] for _, ranges in all_sources]
    answers_by_source = [
        [SourceAnswer(source=info.name, **v._asdict()) for v in ranges.values]
        for info, ranges in all_sources
    ]
    countries: dict[str, int] = {"": 0}
    subdivisions: dict[str, int] = {"": 0}
    asn_col = np.zeros(len(table), dtype=np.uint32)
    for consensus in Consensus:
        c_col = np.zeros(len(table), dtype=np.uint16)
        s_col = np.zeros(len(table), dtype=np.uint16)
        f_col = np.zeros(len(table), dtype=np.uint16)
        for r, row in enumerate(table.tolist()):
            answers = [answers_by_source[j][v] for j, v in enumerate(row) if v]
            origin = make_origin(answers, consensus)
            c_col[r] = countries.setdefault(origin.country or "", len(countries))
            s_col[r] = subdivisions.setdefault(origin.subdivision or "", len(subdivisions))
            f_col[r] = sum(FLAG_BITS[f] for f in origin.flags)
            asn_col[r] = origin.asn or 0
        arrays[f"row_country_{consensus}"] = c_col
        arrays[f"row_subdivision_{consensus}"] = s_col
        arrays[f"row_flags_{consensus}"] = f_col
    arrays["row_asn"] = asn_col
    # Values are only needed to explain an address; kept out of the header so that loading
    # the snapshot does not pay for parsing them, with where each one is in that text.
    text, spans, base = _values_json(values)
    arrays["values_json"] = np.frombuffer(text, dtype=np.uint8)
    arrays["values_spans"] = spans
    arrays["values_base"] = base
    infos = []
    for info, ranges in all_sources:
        d = info.to_dict()
        d["ranges"] = len(ranges)
        d["data_date"] = info.data_date or ranges.data_date
        infos.append(d)
    header: dict[str, Any] = {
        "created": (created or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "compiler": f"regiongate {__version__}",
        "inputs_digest": inputs_digest,
        "sources": infos,
        "countries": list(countries),
        "subdivisions": list(subdivisions),
        "counts": {
            "rows": len(table),
            "v4_ranges": len(starts4),
            "v4_split_24s": len(arrays["v4_l2_off"]) - 1,
            "v6_ranges": len(cuts6),
        },
    }
    say("writing snapshot")
    return write_snapshot(out, header, arrays)


def _values_json(
    values: list[list[list[Any]]],
) -> tuple[bytes, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every source's answers as one JSON text (``json.dumps`` of ``values``, compact, byte
    for byte), with each answer's span in it, ``(start, end)``, and where each source's
    answers begin among the spans: a reader decodes just the answers it is asked for
    (a process needs a few thousand of ~300k; decoding them all cost 50 ms, and as much
    again to free at exit)."""
    parts: list[str] = ["["]
    spans: list[tuple[int, int]] = []
    base: list[int] = []
    pos = 1
    for j, answers in enumerate(values):
        head = ",[" if j else "["
        parts.append(head)
        pos += len(head)
        base.append(len(spans))
        for v, answer in enumerate(answers):
            if v:
                parts.append(",")
                pos += 1
            piece = json.dumps(answer, separators=(",", ":"))  # ASCII: a character a byte
            parts.append(piece)
            spans.append((pos, pos + len(piece)))
            pos += len(piece)
        parts.append("]")
        pos += 1
    parts.append("]")
    text = "".join(parts).encode("ascii")
    return (
        text,
        np.asarray(spans, dtype=np.int64).reshape(-1, 2),
        np.asarray(base, dtype=np.int64),
    )
