"""The compiled snapshot: one versioned, checksummed file, mmap-loaded, answering lookups.

File layout (all integers little-endian)::

    0   8   magic b"RGSNAP01"
    8   4   format version
    12  4   header length H
    16  32  SHA-256 of the header bytes
    48  H   header, UTF-8 JSON: sources, dates, counts, code tables, section table,
            file size and the SHA-256 of the body
    ... body: numpy sections, each 64-byte aligned

A snapshot that is truncated, altered or of another version is refused with
:class:`SnapshotError`; the caller keeps serving the one it has.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import hashlib
import ipaddress
import json
import mmap
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from regiongate.errors import SnapshotError
from regiongate.intel.addresses import V4_MAX, parse_ip
from regiongate.intel.consensus import make_origin
from regiongate.intel.model import FLAG_BITS, Consensus, Flag, Origin, SourceAnswer
from regiongate.paths import snapshot_path

__all__ = [
    "FORMAT_VERSION",
    "INVALID",
    "MAGIC",
    "SPLIT_BIT",
    "LookupColumns",
    "Snapshot",
    "open_snapshot",
    "write_snapshot",
]

MAGIC: Final = b"RGSNAP01"
FORMAT_VERSION: Final = 1
SPLIT_BIT: Final = 0x80000000
_PREFIX: Final = 48
_ALIGN: Final = 64
_INVALID_ROW: Final = -1

INVALID: Final = Origin(flags=frozenset({Flag.INVALID}), note="not an IP address")


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def write_snapshot(
    out: Path, header: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]
) -> dict[str, Any]:
    """Write ``arrays`` and ``header`` as a snapshot file at ``out``; returns the full header."""
    sections: dict[str, list[Any]] = {}
    body = hashlib.sha256()
    offset = 0
    chunks: list[tuple[int, bytes | memoryview]] = []
    for name, arr in arrays.items():
        data = np.ascontiguousarray(arr)
        if data.dtype.byteorder == ">":
            raise ValueError(f"section {name} must be little-endian or byte-order free")
        raw = data.data.cast("B") if data.nbytes else memoryview(b"")
        start = _align(offset)
        pad = start - offset
        if pad:
            body.update(b"\x00" * pad)
            chunks.append((pad, b"\x00" * pad))
        body.update(raw)
        chunks.append((len(raw), raw))
        sections[name] = [start, data.nbytes, data.dtype.str, list(data.shape)]
        offset = start + data.nbytes
    full = dict(header)
    full["format_version"] = FORMAT_VERSION
    full["sections"] = sections
    full["body_size"] = offset
    full["body_sha256"] = body.hexdigest()
    head = json.dumps(full, separators=(",", ":"), sort_keys=True).encode()
    body_offset = _align(_PREFIX + len(head))
    full_size = body_offset + offset
    # The header records where the body starts and how long the file is; both are fixed by
    # the header length, which these two fields do not change (fixed-width padding).
    full["body_offset"] = body_offset
    full["file_size"] = full_size
    head = json.dumps(full, separators=(",", ":"), sort_keys=True).encode()
    if _align(_PREFIX + len(head)) != body_offset:
        body_offset = _align(_PREFIX + len(head))
        full["body_offset"] = body_offset
        full["file_size"] = body_offset + offset
        head = json.dumps(full, separators=(",", ":"), sort_keys=True).encode()
        if _align(_PREFIX + len(head)) != body_offset:  # pragma: no cover - needs 64 digits
            raise SnapshotError("internal error: header does not settle")
    prefix = (
        MAGIC
        + FORMAT_VERSION.to_bytes(4, "little")
        + len(head).to_bytes(4, "little")
        + hashlib.sha256(head).digest()
    )
    with out.open("wb") as fh:
        fh.write(prefix)
        fh.write(head)
        fh.write(b"\x00" * (body_offset - _PREFIX - len(head)))
        for _, chunk in chunks:
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return full


@dataclass(frozen=True, slots=True)
class LookupColumns:
    """Columnar results of :meth:`Snapshot.lookup_many`, one entry per input address.

    ``row`` is the snapshot row (``-1`` for invalid input); ``country_idx`` and
    ``subdivision_idx`` index ``countries``/``subdivisions`` (0 = none); ``flags`` is a bitmask
    of :data:`regiongate.intel.model.FLAG_BITS`; ``asn`` is 0 when unknown.
    """

    row: npt.NDArray[np.int64]
    country_idx: npt.NDArray[np.uint16]
    subdivision_idx: npt.NDArray[np.uint16]
    flags: npt.NDArray[np.uint16]
    asn: npt.NDArray[np.uint32]
    countries: npt.NDArray[np.str_]
    subdivisions: npt.NDArray[np.str_]

    @property
    def country(self) -> npt.NDArray[np.str_]:
        """ISO 3166-1 codes ('' when unknown)."""
        return self.countries[self.country_idx]

    @property
    def subdivision(self) -> npt.NDArray[np.str_]:
        """ISO 3166-2 codes ('' when none)."""
        return self.subdivisions[self.subdivision_idx]

    def has_flag(self, flag: Flag) -> npt.NDArray[np.bool_]:
        """A boolean mask of the addresses carrying ``flag``."""
        mask: npt.NDArray[np.bool_] = (self.flags & np.uint16(FLAG_BITS[flag])) != 0
        return mask

    def __len__(self) -> int:
        return len(self.row)


class Snapshot:
    """A loaded snapshot. Thread-safe for lookups; ``lookup`` caches recent addresses."""

    lookup: Callable[[object], Origin]
    """``lookup(ip) -> Origin``: never raises; malformed input gives the ``invalid`` flag."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        consensus: Consensus | str = Consensus.ANY,
        verify: bool = True,
        cache_size: int = 1 << 16,
    ) -> None:
        self.path = Path(path)
        try:
            self.consensus = Consensus(consensus)
        except ValueError:
            raise SnapshotError(
                f"unknown consensus {consensus!r}; expected one of "
                + ", ".join(c.value for c in Consensus)
            ) from None
        if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
            raise SnapshotError("snapshots are little-endian; this host is big-endian")
        try:
            with self.path.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < _PREFIX:
                    raise SnapshotError(f"{self.path}: truncated ({size} bytes), not a snapshot")
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise SnapshotError(
                f"no snapshot at {self.path}: run `regiongate data install`"
            ) from None
        except (OSError, ValueError) as exc:
            raise SnapshotError(f"{self.path}: cannot open snapshot ({exc})") from exc
        self.header = self._read_header(size, verify)
        self._arrays = self._map_sections()
        self._bind_tables()
        self._raw_values: list[list[list[Any]]] | None = None
        self._answers: dict[tuple[int, int], SourceAnswer] = {}
        self._cache_size = cache_size
        self._origins: list[Origin | None] = [None] * self.rows
        self.lookup = self._make_lookup()

    # --- loading -------------------------------------------------------------------------------

    def _read_header(self, size: int, verify: bool) -> dict[str, Any]:
        mm = self._mm
        if mm[:8] != MAGIC:
            raise SnapshotError(f"{self.path}: not a regiongate snapshot (bad magic)")
        version = int.from_bytes(mm[8:12], "little")
        if version != FORMAT_VERSION:
            raise SnapshotError(
                f"{self.path}: snapshot format v{version}, this regiongate reads "
                f"v{FORMAT_VERSION}: run `regiongate data install` again"
            )
        hlen = int.from_bytes(mm[12:16], "little")
        if _PREFIX + hlen > size:
            raise SnapshotError(f"{self.path}: truncated in the header")
        head = mm[_PREFIX : _PREFIX + hlen]
        if hashlib.sha256(head).digest() != mm[16:48]:
            raise SnapshotError(f"{self.path}: header checksum mismatch (corrupt)")
        try:
            header: dict[str, Any] = json.loads(head)
        except ValueError as exc:  # pragma: no cover - checksum guards it
            raise SnapshotError(f"{self.path}: unreadable header ({exc})") from exc
        if header.get("file_size") != size:
            raise SnapshotError(
                f"{self.path}: {size} bytes, the header says {header.get('file_size')}: "
                "truncated or partial write"
            )
        if verify:
            self._check_body(header)
        return header

    def _check_body(self, header: dict[str, Any]) -> None:
        body = memoryview(self._mm)[header["body_offset"] :]
        try:
            digest = hashlib.sha256(body).hexdigest()
        finally:
            body.release()
        if digest != header["body_sha256"]:
            raise SnapshotError(f"{self.path}: body checksum mismatch (corrupt)")

    def verify(self) -> None:
        """Check the body against its checksum, as opening does unless told not to
        (``verify=False``): a :class:`SnapshotError` if they differ. Safe beside lookups in
        other threads; the hashing releases the GIL (~0.1 s for the installed snapshot), so
        a command can open without it and check while it starts up."""
        self._check_body(self.header)

    def _map_sections(self) -> dict[str, npt.NDArray[Any]]:
        base = self.header["body_offset"]
        out: dict[str, npt.NDArray[Any]] = {}
        try:
            for name, (off, nbytes, dtype, shape) in self.header["sections"].items():
                dt = np.dtype(dtype)
                count = nbytes // dt.itemsize if dt.itemsize else 0
                arr = np.frombuffer(self._mm, dtype=dt, count=count, offset=base + off)
                out[name] = arr.reshape(shape)
        except (KeyError, ValueError, TypeError) as exc:
            raise SnapshotError(f"{self.path}: malformed section table ({exc})") from exc
        return out

    def _bind_tables(self) -> None:
        a = self._arrays
        c = self.consensus.value
        try:
            self.rows = len(a["rows"])
            self._row_table = a["rows"]
            self._row_country = a[f"row_country_{c}"]
            self._row_subdivision = a[f"row_subdivision_{c}"]
            self._row_flags = a[f"row_flags_{c}"]
            self._row_asn = a["row_asn"]
            self._v4_top = a["v4_top"]
            self._v4_l2_start = a["v4_l2_start"]
            self._v4_l2_row = a["v4_l2_row"]
            self._v4_start = a["v4_start"]
            self._v4_row = a["v4_row"]
            self._v6_hi = a["v6_hi"]
            self._v6_lo = a["v6_lo"]
            self._v6_row = a["v6_row"]
            if len(self._v4_top) != 1 << 24:
                raise SnapshotError(f"{self.path}: IPv4 table has the wrong size")
            # memoryviews for the scalar hot path: indexing one is ~4x faster than numpy's.
            self._m_top = a["v4_top"].data.cast("B").cast("I")
            self._m_l2_off = a["v4_l2_off"].data.cast("B").cast("I")
            self._m_l2_start = a["v4_l2_start"].data.cast("B").cast("I")
            self._m_l2_row = a["v4_l2_row"].data.cast("B").cast("I")
            self._m_v6_hi = a["v6_hi"].data.cast("B").cast("Q")
            self._m_v6_lo = a["v6_lo"].data.cast("B").cast("Q")
            self._m_v6_row = a["v6_row"].data.cast("B").cast("I")
        except KeyError as exc:
            raise SnapshotError(f"{self.path}: missing section {exc}") from exc
        self.countries = np.array(self.header["countries"], dtype="U2")
        self.subdivisions = np.array(self.header["subdivisions"], dtype="U6")

    # --- answers -------------------------------------------------------------------------------

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Provenance of every source: name, format, data date, ranges, license."""
        return list(self.header["sources"])

    def _answer(self, source: int, value: int) -> SourceAnswer:
        """What source number ``source`` says in its answer number ``value``: built when
        first asked for (a snapshot holds ~95k answers; a process needs a few thousand)."""
        answer = self._answers.get((source, value))
        if answer is None:
            v = self._raw_answer(source, value)
            answer = self._answers[(source, value)] = SourceAnswer(
                source=self.header["sources"][source]["name"],
                country=v[0],
                subdivision=v[1],
                region=v[2],
                asn=v[3],
                org=v[4],
                kind=v[5],
                provider=v[6],
            )
        return answer

    def _raw_answer(self, source: int, value: int) -> list[Any]:
        """Answer number ``value`` of source number ``source`` as the snapshot stores it:
        decoded alone where the snapshot says where it is (``values_spans``), else out of
        every answer, decoded once (snapshots compiled before the spans were kept)."""
        spans = self._arrays.get("values_spans")
        base = self._arrays.get("values_base")
        text = self._arrays["values_json"]
        if spans is not None and base is not None:
            got = None
            try:
                first = int(base[source])  # the source's answers: up to the next source's
                last = int(base[source + 1]) if source + 1 < len(base) else len(spans)
                if 0 <= value < last - first:
                    start, end = spans[first + value].tolist()
                    got = json.loads(text[start:end].tobytes()) if 0 <= start < end else None
            except (IndexError, ValueError):
                pass
            if not isinstance(got, list) or len(got) != 7:
                raise SnapshotError(f"{self.path}: answer {value} of source {source} unreadable")
            return got
        raw = self._raw_values
        if raw is None:
            raw = _decode_untracked(text.tobytes())
            if not isinstance(raw, list) or len(raw) != len(self.header["sources"]):
                raise SnapshotError(f"{self.path}: source answers do not match its sources")
            self._raw_values = raw
        return raw[source][value]

    def origin_for_row(self, row: int) -> Origin:
        """The ``Origin`` of a snapshot row (as returned by :meth:`row_of`); cached."""
        if row < 0:
            return INVALID
        origin = self._origins[row]
        if origin is None:
            answer = self._answer
            answers = [answer(j, v) for j, v in enumerate(self._row_table[row].tolist()) if v]
            origin = make_origin(answers, self.consensus)
            self._origins[row] = origin
        return origin

    def _make_lookup(self) -> Callable[[object], Origin]:
        # Everything the hot path touches is a local of this closure: no attribute lookups.
        top = self._m_top
        l2_off = self._m_l2_off
        l2_start = self._m_l2_start
        l2_row = self._m_l2_row
        origins = self._origins
        origin_for_row = self.origin_for_row
        row_of_slow = self._row_of_slow
        pton = socket.inet_pton
        af4 = socket.AF_INET
        from_bytes = int.from_bytes
        bisect_right = bisect.bisect_right
        cache: dict[str, Origin] = {}
        cache_get = cache.get
        cache_size = self._cache_size

        def lookup(ip: object) -> Origin:
            hit = cache_get(ip) if type(ip) is str else None
            if hit is not None:
                return hit
            try:
                a = from_bytes(pton(af4, ip), "big")  # type: ignore[arg-type]
            except (OSError, TypeError, ValueError):
                row = row_of_slow(ip)
            else:
                row = top[a >> 8]
                if row & SPLIT_BIT:
                    j = row & 0x7FFFFFFF
                    row = l2_row[bisect_right(l2_start, a, l2_off[j], l2_off[j + 1]) - 1]
            origin = origins[row] if row >= 0 else INVALID
            if origin is None:
                origin = origin_for_row(row)
            if type(ip) is str and cache_size:
                if len(cache) >= cache_size:
                    cache.clear()
                cache[ip] = origin
            return origin

        return lookup

    def lookup_value(self, version: int, value: int) -> Origin:
        """The ``Origin`` of an address already parsed to ``(version, integer)`` (IPv4-mapped
        addresses must already be IPv4): the gateway parses each client address once."""
        row = self.row_of_value(version, value)
        origin = self._origins[row]
        return origin if origin is not None else self.origin_for_row(row)

    def row_of_value(self, version: int, value: int) -> int:
        """The snapshot row of an address already parsed to ``(version, integer)``."""
        if version == 4:
            row: int = self._m_top[value >> 8]
            if row & SPLIT_BIT:
                j = row & 0x7FFFFFFF
                k = bisect.bisect_right(
                    self._m_l2_start, value, self._m_l2_off[j], self._m_l2_off[j + 1]
                )
                row = self._m_l2_row[k - 1]
            return row
        return self._m_v6_row[self._v6_index(value)]

    def row_of(self, ip: object) -> int:
        """The snapshot row of an address; ``-1`` if it is not an address. Never raises."""
        return self._row_of_slow(ip)

    def _row_of_slow(self, ip: object) -> int:
        parsed = parse_ip(ip)
        if parsed is None:
            return _INVALID_ROW
        return self.row_of_value(*parsed)

    def _v6_index(self, value: int) -> int:
        hi, lo = value >> 64, value & 0xFFFFFFFFFFFFFFFF
        h = self._m_v6_hi
        first = bisect.bisect_left(h, hi)
        last = bisect.bisect_right(h, hi, first)
        # Among the pieces starting in the same upper 64 bits, compare the lower 64; if none
        # starts at or below, the piece is the last one of a lower prefix.
        return bisect.bisect_right(self._m_v6_lo, lo, first, last) - 1

    def _v6_first(self, i: int) -> int:
        return (int(self._v6_hi[i]) << 64) | int(self._v6_lo[i])

    def network_of(self, ip: object) -> str | None:
        """The largest CIDR block around ``ip`` on which every source's answer is the same."""
        parsed = parse_ip(ip)
        if parsed is None:
            return None
        version, value = parsed
        if version == 4:
            starts: Any = self._v4_start
            i = int(np.searchsorted(starts, value, side="right")) - 1
            first = int(starts[i])
            last = int(starts[i + 1]) - 1 if i + 1 < len(starts) else V4_MAX
            make: Any = ipaddress.IPv4Address
        else:
            i = self._v6_index(value)
            first = self._v6_first(i)
            last = self._v6_first(i + 1) - 1 if i + 1 < len(self._v6_hi) else (1 << 128) - 1
            make = ipaddress.IPv6Address
        for net in ipaddress.summarize_address_range(make(first), make(last)):
            if int(net.network_address) <= value <= int(net.broadcast_address):
                return str(net)
        return None  # pragma: no cover - the range contains value by construction

    # --- columnar ------------------------------------------------------------------------------

    def rows_v4(self, addrs: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        """Rows of IPv4 addresses given as integers (any integer dtype), vectorised."""
        a = np.asarray(addrs)
        if a.dtype != np.uint32:
            a = a.astype(np.uint32)
        v = self._v4_top[a >> np.uint32(8)]
        split = (v & np.uint32(SPLIT_BIT)) != 0
        rows: npt.NDArray[np.int64] = v.astype(np.int64)
        if split.any():
            sub = a[split]
            k = np.searchsorted(self._v4_l2_start, sub, side="right") - 1
            rows[split] = self._v4_l2_row[k]
        return rows

    def rows_v6(
        self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.int64]:
        """Rows of IPv6 addresses given as their upper and lower 64 bits, vectorised: the
        piece :meth:`row_of_value` finds for each, by the same two-level search."""
        hi = np.asarray(hi, dtype=np.uint64)
        lo = np.asarray(lo, dtype=np.uint64)
        # the pieces starting in the same upper 64 bits: [first, last)
        first = np.searchsorted(self._v6_hi, hi, side="left")
        last = np.searchsorted(self._v6_hi, hi, side="right")
        # among them, bisect on the lower 64 bits (a right bisect: where lo would go after any
        # equal start), all addresses at once; a group is a handful of pieces at most
        a, b = first, last
        while True:
            open_ = a < b
            if not open_.any():
                break
            mid = (a + b) // 2
            below = open_ & (self._v6_lo[np.minimum(mid, len(self._v6_lo) - 1)] <= lo)
            a = np.where(below, mid + 1, a)
            b = np.where(open_ & ~below, mid, b)
        # no piece starts at or below: the last piece of a lower prefix
        return self._v6_row[a - 1].astype(np.int64)

    def lookup_many(self, ips: Iterable[object] | npt.NDArray[Any]) -> LookupColumns:
        """Look up many addresses at once: a numpy array of IPv4 integers, or any iterable of
        address strings (IPv4, IPv6, malformed: all answered). Returns columns."""
        if isinstance(ips, np.ndarray) and ips.dtype.kind in "ui":
            rows = self.rows_v4(ips)
        else:
            rows = self._rows_from_text(ips)
        return self.columns(rows)

    def columns(self, rows: npt.NDArray[np.int64]) -> LookupColumns:
        """Gather the per-row answer columns for an array of rows (``-1`` = invalid)."""
        invalid = rows < 0
        safe = np.where(invalid, 0, rows) if invalid.any() else rows
        flags = self._row_flags[safe]
        if invalid.any():
            flags = flags.copy()
            flags[invalid] = FLAG_BITS[Flag.INVALID]
        return LookupColumns(
            row=rows,
            country_idx=self._row_country[safe],
            subdivision_idx=self._row_subdivision[safe],
            flags=flags,
            asn=self._row_asn[safe],
            countries=self.countries,
            subdivisions=self.subdivisions,
        )

    def _rows_from_text(self, ips: Iterable[object]) -> npt.NDArray[np.int64]:
        pton = socket.inet_pton
        af4 = socket.AF_INET
        ints: list[int] = []
        slow: list[tuple[int, object]] = []
        for i, ip in enumerate(ips):
            try:
                ints.append(int.from_bytes(pton(af4, ip), "big"))  # type: ignore[arg-type]
            except (OSError, TypeError, ValueError):
                ints.append(0)
                slow.append((i, ip))
        rows = self.rows_v4(np.asarray(ints, dtype=np.uint32))
        for i, ip in slow:
            rows[i] = self._row_of_slow(ip)
        return rows

    # --- introspection -------------------------------------------------------------------------

    def iter_ranges(self, version: int) -> Iterator[tuple[int, int, int]]:
        """Yield ``(first, last, row)`` for every range of one address family, in order."""
        if version == 4:
            starts = self._v4_start.tolist()
            rows = self._v4_row.tolist()
            top = V4_MAX
            for i, s in enumerate(starts):
                yield s, (starts[i + 1] - 1 if i + 1 < len(starts) else top), rows[i]
        else:
            raw = [
                (h << 64) | lo
                for h, lo in zip(self._v6_hi.tolist(), self._v6_lo.tolist(), strict=True)
            ]
            rows = self._v6_row.tolist()
            for i, s in enumerate(raw):
                yield s, (raw[i + 1] - 1 if i + 1 < len(raw) else (1 << 128) - 1), rows[i]

    def close(self) -> None:
        """Unmap the file now. Lookups after this raise ``SnapshotError``.

        The lookup closure holds memoryviews into the mapping; they are released explicitly,
        otherwise the mapping would live until the garbage collector breaks the
        snapshot ↔ closure cycle (a reloading service would hold several snapshots at once).
        """
        if self._mm.closed:
            return
        for name in list(vars(self)):
            if name.startswith("_m_"):
                view = getattr(self, name)
                with contextlib.suppress(BufferError):
                    view.release()
        for name in list(vars(self)):
            if name.startswith(("_m_", "_v4", "_v6", "_row")):
                delattr(self, name)
        self._arrays.clear()
        path = self.path

        def closed(ip: object) -> Origin:
            raise SnapshotError(f"{path}: snapshot is closed")

        self.lookup = closed
        # A caller may still hold a numpy view of a section; then the GC unmaps later.
        with contextlib.suppress(BufferError):
            self._mm.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_untracked(data: bytes) -> Any:
    """JSON holding ~300k small lists (the answers of every source), decoded with the
    cyclic garbage collector paused: its allocations would otherwise set off collections over
    the heap as it grows, and none of these objects can form a cycle. Measured: 27-30 ms
    against 47-56 ms; an `impact` run makes two full collections instead of three."""
    paused = gc.isenabled()
    gc.disable()
    try:
        return json.loads(data)
    finally:
        if paused:
            gc.enable()


def open_snapshot(
    path: str | os.PathLike[str] | None = None,
    *,
    consensus: Consensus | str = Consensus.ANY,
    verify: bool = True,
    cache_size: int = 1 << 16,
) -> Snapshot:
    """Open the snapshot at ``path`` (default: the installed one under ``$REGIONGATE_HOME``)."""
    return Snapshot(
        path if path is not None else snapshot_path(),
        consensus=consensus,
        verify=verify,
        cache_size=cache_size,
    )
