"""Readers for IP data sources: MaxMind DB (any schema), CSV range files, Tor geoip, iporigin;
anonymizer and hosting feeds (Tor exits, cloud ranges, Private Relay, CIDR lists) are read by
:mod:`regiongate.intel.feeds`.

Each reader turns one file into :class:`Ranges`: sorted lists of ``(start, end, value id)`` per
address family, with interned :class:`RangeValue` rows. Readers are strict: a file that does
not parse is refused with the file and line named, never half-read, because a silently
dropped range is an address the policy cannot see.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import ipaddress
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, NamedTuple

from regiongate.errors import SourceError
from regiongate.intel.addresses import V4_MAX
from regiongate.intel.regions import subdivision_code, subdivision_from_iso

__all__ = [
    "FORMATS",
    "RangeValue",
    "Ranges",
    "RangesBuilder",
    "detect_format",
    "normalize_country",
    "normalize_format",
    "read_csv_ranges",
    "read_iporigin",
    "read_mmdb",
    "read_source",
]

FORMATS: Final = (
    "mmdb",
    "csv",
    "tor-geoip",
    "iporigin",
    # regiongate.intel.feeds
    "tor-exits",
    "aws",
    "gcp",
    "azure",
    "apple-relay",
    "cidr",
    "hosting-asns",
)

# Codes some sources use for "somewhere in a region" or "unknown": not a territory.
_PSEUDO_COUNTRIES: Final = frozenset({"EU", "AP", "A1", "A2", "O1", "ZZ", "XX", "--", "??", ""})
_COUNTRY_ALIASES: Final = {"UK": "GB"}
_COUNTRY_RE: Final = re.compile(r"^[A-Z]{2}$")
_MMDB_MARKER: Final = b"\xab\xcd\xefMaxMind.com"


class RangeValue(NamedTuple):
    """What a source says about one range. Field order is part of the snapshot format."""

    country: str | None = None
    subdivision: str | None = None
    region: str | None = None
    asn: int | None = None
    org: str | None = None
    kind: str | None = None
    provider: str | None = None


@dataclass(slots=True)
class Family:
    """Ranges of one address family, in file order (sorted for mmdb, maybe not for CSV)."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    vids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(slots=True)
class Ranges:
    """One source file's content: interned values (id 0 is "no answer") and ranges."""

    values: list[RangeValue]
    v4: Family
    v6: Family
    data_date: str | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)


class RangesBuilder:
    """Collects ranges, interning values and merging adjacent ranges with the same value."""

    def __init__(self) -> None:
        self.values: list[RangeValue] = [RangeValue()]
        self._ids: dict[RangeValue, int] = {}
        self.v4 = Family()
        self.v6 = Family()

    def value_id(self, value: RangeValue) -> int:
        """Intern ``value`` and return its id (never 0)."""
        vid = self._ids.get(value)
        if vid is None:
            vid = self._ids[value] = len(self.values)
            self.values.append(value)
        return vid

    def add(self, version: int, start: int, end: int, vid: int) -> None:
        """Add ``[start, end]`` with value ``vid``; merges with an adjacent previous range."""
        fam = self.v4 if version == 4 else self.v6
        if fam.vids and fam.vids[-1] == vid and fam.ends[-1] + 1 == start:
            fam.ends[-1] = end
            return
        fam.starts.append(start)
        fam.ends.append(end)
        fam.vids.append(vid)

    def build(self, *, data_date: str | None = None, description: str = "") -> Ranges:
        return Ranges(self.values, self.v4, self.v6, data_date=data_date, description=description)


def normalize_country(code: object) -> str | None:
    """An ISO 3166-1 alpha-2 code, or ``None`` for pseudo-codes (EU, AP, ??) and junk."""
    if not isinstance(code, str):
        return None
    c = code.strip().upper()
    c = _COUNTRY_ALIASES.get(c, c)
    if c in _PSEUDO_COUNTRIES or not _COUNTRY_RE.match(c):
        return None
    return c


def _str(value: object) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _asn(value: object) -> int | None:
    """ASNs arrive as ints, "15169" or "AS15169"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 1 << 32 else None
    if isinstance(value, str):
        s = value.strip().upper().removeprefix("AS")
        if s.isdigit():
            n = int(s)
            return n if 0 < n < 1 << 32 else None
    return None


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "y", "t"}
    return bool(value)


# --- MaxMind DB ------------------------------------------------------------------------------

# Anonymizer traits, as GeoIP2 Anonymous IP / Enterprise (``is_*``) and IPinfo privacy
# (bare names) spell them, mapped to regiongate's anonymizer kinds.
_TRAIT_KINDS: Final = (
    ("is_tor_exit_node", "tor"),
    ("tor", "tor"),
    ("is_anonymous_vpn", "vpn"),
    ("vpn", "vpn"),
    ("relay", "relay"),
    ("is_public_proxy", "proxy"),
    ("is_residential_proxy", "proxy"),
    ("is_anonymous_proxy", "proxy"),
    ("proxy", "proxy"),
    ("is_hosting_provider", "hosting"),
    ("hosting", "hosting"),
)


def _mmdb_value(rec: Any) -> RangeValue | None:
    """Extract a value from a record of any of the common schemas."""
    if not isinstance(rec, dict):
        return None
    country: str | None = None
    c = rec.get("country")
    if isinstance(c, dict):
        country = normalize_country(c.get("iso_code"))
    elif isinstance(c, str):
        country = normalize_country(c)
    if country is None:
        country = normalize_country(rec.get("country_code"))
    if country is None:
        rc = rec.get("registered_country")
        if isinstance(rc, dict):
            country = normalize_country(rc.get("iso_code"))
    subdivision = region = None
    subs = rec.get("subdivisions")
    if isinstance(subs, list) and subs and isinstance(subs[0], dict):
        first = subs[0]
        subdivision = subdivision_from_iso(country, _str(first.get("iso_code")))
        names = first.get("names")
        if isinstance(names, dict):
            region = _str(names.get("en"))
    if region is None:
        for key in ("state1", "region", "subdivision_1_name", "state"):
            region = _str(rec.get(key))
            if region is not None:
                break
    if subdivision is None and region is not None:
        subdivision = subdivision_code(country, region)
    asn = _asn(rec.get("autonomous_system_number"))
    if asn is None:
        asn = _asn(rec.get("asn"))
    org = None
    for key in ("autonomous_system_organization", "as_name", "asn_org", "organization", "org"):
        org = _str(rec.get(key))
        if org is not None:
            break
    kind = None
    traits = rec.get("traits")
    for holder in (traits, rec) if isinstance(traits, dict) else (rec,):
        for key, name in _TRAIT_KINDS:
            if key in holder and _truthy(holder[key]):
                kind = name
                break
        if kind is not None:
            break
    provider = _str(rec.get("service")) if kind is not None else None
    value = RangeValue(country, subdivision, region, asn, org, kind, provider)
    return None if value == RangeValue() else value


def read_mmdb(path: Path) -> Ranges:
    """Read every network of a MaxMind DB file (GeoIP2, GeoLite2, DB-IP, IPinfo, ip-location-db)."""
    try:
        import maxminddb
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise SourceError("the maxminddb package is missing: pip install maxminddb") from exc
    try:
        # MODE_AUTO silently falls back to pure Python (~15x slower); CI sets
        # MAXMINDDB_REQUIRE_EXTENSION so that a missing C extension fails loudly instead.
        mode = (
            maxminddb.MODE_MMAP_EXT
            if os.environ.get("MAXMINDDB_REQUIRE_EXTENSION")
            else maxminddb.MODE_AUTO
        )
        reader = maxminddb.open_database(str(path), mode)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise SourceError(f"{path}: not a readable MaxMind DB file ({exc})") from exc
    builder = RangesBuilder()
    try:
        meta = reader.metadata()
        data_date = dt.datetime.fromtimestamp(meta.build_epoch, dt.UTC).date().isoformat()
        description = f"{meta.database_type} (MaxMind DB, IPv{meta.ip_version})"
        # Records of flat schemas repeat a handful of shapes; memoise the extraction on the
        # fields that matter so that 15M records cost a dict lookup each, not a parse.
        memo: dict[tuple[Any, ...], int] = {}
        add = builder.add
        for network, rec in reader:
            key = _memo_key(rec)
            vid = memo.get(key) if key is not None else None
            if vid is None:
                value = _mmdb_value(rec)
                vid = 0 if value is None else builder.value_id(value)
                if key is not None:
                    memo[key] = vid
            if vid == 0:
                continue
            # ``num_addresses`` builds the broadcast address object: 2 µs a record. The
            # shift is the same number without it.
            start = int(network.network_address)
            size = 1 << (network.max_prefixlen - network.prefixlen)
            add(network.version, start, start + size - 1, vid)
    except maxminddb.InvalidDatabaseError as exc:
        raise SourceError(f"{path}: corrupt MaxMind DB file ({exc})") from exc
    finally:
        reader.close()
    return builder.build(data_date=data_date, description=description)


def _memo_key(rec: Any) -> tuple[Any, ...] | None:
    # ip-location-db's flat records: the value depends only on these fields.
    if isinstance(rec, dict) and "country_code" in rec and "country" not in rec:
        return (
            rec.get("country_code"),
            rec.get("state1"),
            rec.get("autonomous_system_number"),
            rec.get("autonomous_system_organization"),
        )
    return None


# --- CSV range files -------------------------------------------------------------------------

_HEADER_ALIASES: Final = {
    "start": ("start", "ip_range_start", "range_start", "start_ip", "first", "from", "ip_start"),
    "end": ("end", "ip_range_end", "range_end", "end_ip", "last", "to", "ip_end"),
    "network": ("network", "cidr", "prefix", "ip_prefix", "range"),
    "country": ("country", "country_code", "cc", "country_iso_code", "iso_code"),
    "region": ("region", "state1", "subdivision_1_name", "state", "region_name"),
    "subdivision": ("subdivision", "subdivision_code", "iso_3166_2", "region_code"),
    "asn": ("asn", "as_number", "autonomous_system_number"),
    "org": ("org", "as_name", "asn_org", "organization", "autonomous_system_organization"),
    "kind": ("kind", "type", "category"),
    "provider": ("provider", "service", "name"),
}


def _parse_endpoint(text: str) -> tuple[int, int] | None:
    """An address as text or as a decimal integer (Tor's IPv4 geoip file)."""
    t = text.strip()
    if t.isdigit():
        n = int(t)
        return (4, n) if n <= V4_MAX else None
    try:
        a = ipaddress.ip_address(t)
    except ValueError:
        return None
    return a.version, int(a)


def _looks_like_header(row: list[str]) -> bool:
    first = row[0].strip()
    return _parse_endpoint(first) is None and "/" not in first


def _column_map(header: list[str]) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    mapping: dict[str, int] = {}
    for role, aliases in _HEADER_ALIASES.items():
        for alias in aliases:
            if alias in names:
                mapping[role] = names.index(alias)
                break
    return mapping


def _positional_map(row: list[str]) -> dict[str, int]:
    """Guess columns of a header-less file from its first row."""
    first = row[0].strip()
    if "/" in first:  # network,country[,region...]
        mapping = {"network": 0}
        if len(row) > 1:
            mapping["country"] = 1
        if len(row) > 2:
            mapping["region"] = 2
        return mapping
    mapping = {"start": 0, "end": 1}
    if len(row) >= 4 and row[2].strip().isdigit():  # start,end,asn,org (ip-location-db asn)
        mapping.update(asn=2, org=3)
    elif len(row) >= 3:  # start,end,country[,state1,state2,city,...] (ip-location-db)
        mapping["country"] = 2
        if len(row) >= 6:
            mapping["region"] = 3
    return mapping


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


_GENERATED_RE: Final = re.compile(r"#\s*(?:Generated|Date|Updated)\s*:\s*(.+)$", re.IGNORECASE)


def _comment_date(line: str) -> str | None:
    m = _GENERATED_RE.match(line.strip())
    if not m:
        return None
    text = m.group(1).strip()
    for fmt in ("%a, %d %b %Y %H:%M:%S %Z", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _rows(path: Path, meta: dict[str, str]) -> Iterator[tuple[int, list[str]]]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                date = _comment_date(stripped)
                if date and "data_date" not in meta:
                    meta["data_date"] = date
                continue
            try:
                row = next(csv.reader([line]))
            except csv.Error as exc:
                raise SourceError(f"{path}:{lineno}: not a CSV line ({exc})") from exc
            yield lineno, row


def read_csv_ranges(path: Path) -> Ranges:
    """Read a CSV range file: ``start,end,...`` (addresses or integers) or ``network,...``.

    Columns come from a header row when there is one (``start``/``ip_range_start``,
    ``country``/``country_code``, ``state1``/``region``, ``asn``, ``org``/``as_name``,
    ``kind``, ``provider``...), otherwise from the shape of the first row (``start,end,country``,
    ``start,end,asn,org``, ip-location-db's ``start,end,country,state1,state2,city,...``).
    Tor's ``geoip``/``geoip6`` files are this format with integer or IPv6 endpoints.
    """
    builder = RangesBuilder()
    meta: dict[str, str] = {}
    mapping: dict[str, int] | None = None
    width = 0
    try:
        for lineno, row in _rows(path, meta):
            if mapping is None:
                if _looks_like_header(row):
                    mapping = _column_map(row)
                    if not ({"start", "end"} <= mapping.keys() or "network" in mapping):
                        raise SourceError(
                            f"{path}:{lineno}: header {row!r} names no start/end or network "
                            "column; expected e.g. 'start,end,country'"
                        )
                    width = len(row)
                    continue
                mapping = _positional_map(row)
                width = max(mapping.values()) + 1
            if len(row) < width:
                raise SourceError(
                    f"{path}:{lineno}: expected at least {width} columns, got {len(row)}: {row!r}"
                )
            _add_csv_row(builder, path, lineno, row, mapping)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc})") from exc
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from exc
    if mapping is None:
        raise SourceError(f"{path}: no ranges in file")
    return builder.build(data_date=meta.get("data_date"), description="CSV ranges")


def _add_csv_row(
    builder: RangesBuilder, path: Path, lineno: int, row: list[str], mapping: dict[str, int]
) -> None:
    def col(role: str) -> str | None:
        i = mapping.get(role)
        return _str(row[i]) if i is not None and i < len(row) else None

    version: int
    net = col("network")
    if net is not None:
        try:
            network = ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise SourceError(f"{path}:{lineno}: {net!r} is not a network") from exc
        version, start = network.version, int(network.network_address)
        end = int(network.broadcast_address)
    else:
        first = _parse_endpoint(row[mapping["start"]])
        last = _parse_endpoint(row[mapping["end"]])
        if first is None or last is None:
            raise SourceError(
                f"{path}:{lineno}: {row[mapping['start']]!r}-{row[mapping['end']]!r} is not an "
                "address range"
            )
        if first[0] != last[0] or first[1] > last[1]:
            raise SourceError(f"{path}:{lineno}: range {row[0]!r}-{row[1]!r} is inverted or mixed")
        version, start, end = first[0], first[1], last[1]
    if version == 6 and start >> 32 == 0xFFFF and end >> 32 == 0xFFFF:
        version, start, end = 4, start & V4_MAX, end & V4_MAX
    country = normalize_country(col("country"))
    region = col("region")
    subdivision = None
    sub_text = col("subdivision")
    if sub_text is not None:
        subdivision = subdivision_from_iso(country, sub_text)
    if subdivision is None and region is not None:
        subdivision = subdivision_code(country, region)
    kind = col("kind")
    value = RangeValue(
        country,
        subdivision,
        region,
        _asn(col("asn")),
        col("org"),
        kind.lower() if kind else None,
        col("provider"),
    )
    if value == RangeValue():
        return  # "??" and friends: the source has no answer here
    builder.add(version, start, end, builder.value_id(value))


# --- iporigin ----------------------------------------------------------------------------------

_IPORIGIN_HEADER: Final = struct.Struct("<8sHQHII")
_IPORIGIN_V4: Final = struct.Struct("<IIH")
_IPORIGIN_V6: Final = struct.Struct("<16s16sH")


def read_iporigin(path: Path) -> Ranges:
    """Read iporigin's packed ``ranges.bin`` (format v1): provider and kind per range."""
    blob = path.read_bytes()
    try:
        magic, version, built_at, n_labels, n_v4, n_v6 = _IPORIGIN_HEADER.unpack_from(blob, 0)
        if magic != b"IPORIGIN":
            raise SourceError(f"{path}: not an iporigin dataset (bad magic)")
        if version != 1:
            raise SourceError(f"{path}: iporigin dataset format v{version}, only v1 is supported")
        off = _IPORIGIN_HEADER.size
        labels: list[tuple[str, str]] = []
        for _ in range(n_labels):
            (length,) = struct.unpack_from("<H", blob, off)
            off += 2
            provider, _, kind = blob[off : off + length].decode("utf-8").partition("\t")
            labels.append((provider, kind))
            off += length
        need = off + n_v4 * _IPORIGIN_V4.size + n_v6 * _IPORIGIN_V6.size
        if len(blob) != need:
            raise SourceError(f"{path}: iporigin dataset is {len(blob)} bytes, expected {need}")
        builder = RangesBuilder()
        vids = [builder.value_id(_iporigin_value(p, k)) for p, k in labels]
        records: list[tuple[int, int, int, int]] = []
        for start, end, label in _IPORIGIN_V4.iter_unpack(blob[off : off + n_v4 * 10]):
            records.append((4, start, end, label))
        off += n_v4 * _IPORIGIN_V4.size
        for s6, e6, label in _IPORIGIN_V6.iter_unpack(blob[off:]):
            records.append((6, int.from_bytes(s6, "big"), int.from_bytes(e6, "big"), label))
        for version_, start, end, label in records:
            if label >= len(vids) or start > end:
                raise SourceError(f"{path}: iporigin range {start}-{end} is malformed")
            builder.add(version_, start, end, vids[label])
    except (struct.error, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: truncated or corrupt iporigin dataset ({exc})") from exc
    date = dt.datetime.fromtimestamp(built_at, dt.UTC).date().isoformat()
    return builder.build(data_date=date, description="iporigin ranges")


def _iporigin_value(provider: str, kind: str) -> RangeValue:
    # Apple iCloud Private Relay is listed as a VPN; regiongate keeps relays apart because the
    # relay egress declares the user's own region (see the circumvention docs).
    k = kind.strip().lower()
    if "private relay" in provider.lower():
        k = "relay"
    return RangeValue(kind=k or None, provider=provider or None)


# --- detection -------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """Guess a file's format from its content: ``mmdb``, ``iporigin``, ``tor-geoip`` or ``csv``."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4096)
            fh.seek(max(0, size - 128 * 1024))
            tail = fh.read()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from exc
    if _MMDB_MARKER in tail:
        return "mmdb"
    if head.startswith(b"IPORIGIN"):
        return "iporigin"
    if b"\x00" in head and not head.startswith(b"\x1f\x8b"):
        raise SourceError(f"{path}: binary file of an unknown format")
    if b"geoip-db-tool" in head or path.name in {"geoip", "geoip6"}:
        return "tor-geoip"
    if not head.startswith(b"\x1f\x8b"):
        from regiongate.intel.feeds import detect_feed

        feed = detect_feed(path, head)
        if feed is not None:
            return feed
    return "csv"


def normalize_format(fmt: str) -> str:
    """A format as ``--format`` or a ``--from FORMAT:PATH`` prefix gives it → one of
    :data:`FORMATS`, or ``cidr:KIND`` for a CIDR list whose lines default to ``KIND`` (a bare
    kind, ``vpn``, is short for ``cidr:vpn``). Raises ``SourceError`` for anything else."""
    from regiongate.intel.consensus import KIND_NAMES

    text = fmt.strip().lower()
    base, sep, option = text.partition(":")
    if base in KIND_NAMES and not sep:
        return f"cidr:{base}"
    if base == "cidr" and sep:
        if option not in KIND_NAMES:
            raise SourceError(
                f"format {fmt!r}: unknown kind {option!r}; expected one of "
                f"{', '.join(sorted(KIND_NAMES))}"
            )
        return f"cidr:{option}"
    if base in FORMATS and not sep:
        return base
    raise SourceError(
        f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}, or a kind "
        f"({', '.join(sorted(KIND_NAMES))}) for a CIDR list"
    )


def read_source(path: Path, fmt: str | None = None) -> Ranges:
    """Read one source file, detecting its format unless ``fmt`` names one of :data:`FORMATS`
    (or ``cidr:KIND``)."""
    fmt = fmt or detect_format(path)
    if fmt == "mmdb":
        return read_mmdb(path)
    if fmt in {"csv", "tor-geoip"}:
        return read_csv_ranges(path)
    if fmt == "iporigin":
        return read_iporigin(path)
    if fmt.partition(":")[0] in FORMATS:
        from regiongate.intel.feeds import read_feed

        return read_feed(path, fmt)
    raise SourceError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
