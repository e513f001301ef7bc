"""Readers for anonymizer and hosting feeds: Tor exits, cloud ranges, Private Relay, CIDR lists.

- ``tor-exits``: Tor's bulk exit list (one address a line, ``#`` comments) or the
  ``exit-addresses`` format (``ExitAddress IP DATE TIME`` lines) → kind ``tor``.
- ``aws`` / ``gcp`` / ``azure``: the providers' published range files → kind ``hosting``,
  provider ``aws``/``gcp``/``azure``, the cloud region kept as ``region`` and mapped to the
  territory it is in (:mod:`regiongate.intel.cloud_regions`) as the source's country.
- ``apple-relay``: Apple iCloud Private Relay egress ranges (``prefix,country,region,city,``)
  → kind ``relay``, provider ``apple-private-relay``, the declared user country and ISO 3166-2
  region as the answer (the consensus lets a declared user location win over registry
  countries, see :mod:`regiongate.intel.consensus`).
- ``cidr``: generic lists, ``cidr[,kind[,provider]]`` a line; ``cidr:KIND`` gives the kind of
  lines that name none.
- ``hosting-asns``: ``asn,provider[,note]`` lists; not ranges but ASNs whose ranges (as the
  ASN sources give them) are flagged ``hosting`` at compile time (:func:`hosting_from_asns`).

Data dates come from the file's own date fields (``createDate``, ``creationTime``, a date in
an Azure file name, ``# Updated:`` comments, ``Published`` lines) and otherwise from the
file's modification time. :data:`STALE_AFTER_DAYS` is how old each kind may get before
``data install`` and ``data info`` warn.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

from regiongate.errors import SourceError
from regiongate.intel.cloud_regions import region_territory
from regiongate.intel.consensus import KIND_NAMES
from regiongate.intel.readers import (
    Ranges,
    RangesBuilder,
    RangeValue,
    _comment_date,
    _open_text,
    normalize_country,
)
from regiongate.intel.regions import subdivision_country, subdivision_from_iso

__all__ = [
    "DEFAULT_STALE_DAYS",
    "FEED_FORMATS",
    "HOSTING_ASN_SOURCE",
    "STALE_AFTER_DAYS",
    "detect_feed",
    "hosting_asns_digest",
    "hosting_from_asns",
    "packaged_hosting_asns",
    "read_apple_relay",
    "read_aws",
    "read_azure",
    "read_cidr_list",
    "read_feed",
    "read_gcp",
    "read_hosting_asns",
    "read_tor_exits",
]

FEED_FORMATS: Final = ("tor-exits", "aws", "gcp", "azure", "apple-relay", "cidr", "hosting-asns")

# Days after its data date that a source counts as stale. Tor exits churn within hours, cloud
# ranges within weeks; registry and city data slowly.
STALE_AFTER_DAYS: Final[Mapping[str, int]] = {
    "tor-exits": 2,
    "aws": 30,
    "gcp": 30,
    "azure": 30,
    "apple-relay": 90,
    "cidr": 90,
    "hosting-asns": 365,  # ASNs change hands slowly
}
DEFAULT_STALE_DAYS: Final = 180  # the other formats (MaxMind DB, CSV, Tor geoip, iporigin)

# The name of the derived source that flags the ranges of hosting ASNs.
HOSTING_ASN_SOURCE: Final = "hosting-asn"

_PACKAGED_ASNS: Final = "hosting_asns.csv"
_SAMPLE_LINES: Final = 20
_REGION_CODE_RE: Final = re.compile(r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
_FILE_DATE_RE: Final = re.compile(r"(20\d{2})(\d{2})(\d{2})")
# Codes Apple's egress list uses for the nations of the UK, which ISO 3166-2 spells otherwise.
_RELAY_REGION_ALIASES: Final = {
    "GB-EN": "GB-ENG",
    "GB-SC": "GB-SCT",
    "GB-WA": "GB-WLS",
    "GB-NI": "GB-NIR",
}


def _mtime_date(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date().isoformat()


def _network(path: Path, where: str, text: str) -> tuple[int, int, int]:
    """(version, first, last) of a CIDR or a single address; IPv4-mapped IPv6 becomes IPv4."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise SourceError(f"{path}:{where}: {text!r} is not an address or network") from exc
    if (
        isinstance(net, ipaddress.IPv6Network)
        and net.network_address.ipv4_mapped is not None
        and net.prefixlen >= 96
    ):
        mapped = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        return 4, int(mapped.network_address), int(mapped.broadcast_address)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _data_lines(path: Path) -> Iterable[tuple[int, str, str | None]]:
    """(line number, content without comments, comment date) of a text file."""
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                stripped = line.strip()
                if not stripped:
                    continue
                if stripped.startswith("#"):
                    yield lineno, "", _comment_date(stripped)
                    continue
                content = stripped.split(" #", 1)[0].strip()
                yield lineno, content, None
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from exc


# --- Tor exits -----------------------------------------------------------------------------------


def read_tor_exits(path: Path) -> Ranges:
    """Tor's bulk exit list (``torbulkexitlist``) or ``exit-addresses`` → kind ``tor``."""
    builder = RangesBuilder()
    vid = builder.value_id(RangeValue(kind="tor", provider="Tor"))
    dates: list[str] = []
    ranges: list[tuple[int, int, int]] = []
    for lineno, content, date in _data_lines(path):
        if date:
            dates.append(date)
        if not content:
            continue
        words = content.split()
        head = words[0]
        if head in {"ExitNode", "LastStatus"}:
            continue
        if head == "Published":
            if len(words) >= 2:
                with contextlib.suppress(ValueError):
                    dates.append(dt.date.fromisoformat(words[1]).isoformat())
            continue
        if head == "ExitAddress":
            if len(words) < 2:
                raise SourceError(f"{path}:{lineno}: ExitAddress line without an address")
            head = words[1]
        elif len(words) != 1 or "," in head:
            raise SourceError(
                f"{path}:{lineno}: {content!r} is not one address; a Tor exit list has one "
                "address a line"
            )
        ranges.append(_network(path, str(lineno), head))
    if not ranges:
        raise SourceError(f"{path}: no addresses in the Tor exit list")
    for version, start, end in sorted(ranges):
        builder.add(version, start, end, vid)
    data_date = max(dates) if dates else _mtime_date(path)
    return builder.build(data_date=data_date, description=f"Tor exit list ({len(ranges)} exits)")


# --- cloud range files ---------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        with _open_text(path) as fh:
            return json.load(fh)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not UTF-8 text ({exc})") from exc
    except ValueError as exc:
        raise SourceError(f"{path}: not valid JSON ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot read ({exc})") from exc


def _entries(path: Path, doc: Any, key: str, what: str) -> list[Any]:
    if not isinstance(doc, dict):
        raise SourceError(f"{path}: not {what} (the top level is not an object)")
    entries = doc.get(key)
    if not isinstance(entries, list):
        raise SourceError(f"{path}: not {what} (no {key!r} list)")
    return entries


def _cloud_ranges(
    path: Path,
    provider: str,
    networks: Iterable[tuple[str, str, str | None]],
    *,
    data_date: str | None,
    description: str,
) -> Ranges:
    """Ranges of a cloud file: (where, network, region) → hosting in the region's territory.

    A prefix listed several times (AWS per service, Azure per service tag and in the global
    ``AzureCloud`` tag) keeps the first answer that names a region."""
    builder = RangesBuilder()
    chosen: dict[tuple[int, int, int], RangeValue] = {}
    unmapped: set[str] = set()
    for where, text, region in networks:
        key = _network(path, where, text)
        region = region.strip() if region else None
        if region is not None and region.lower() in {"global", ""}:
            region = None
        code = region_territory(provider, region)
        if region is not None and code is None:
            unmapped.add(region)
        country = subdivision_country(code) if code else None
        subdivision = code if code and "-" in code else None
        value = RangeValue(country, subdivision, region, None, None, "hosting", provider)
        old = chosen.get(key)
        if old is None or (old.region is None and region is not None):
            chosen[key] = value
    if not chosen:
        raise SourceError(f"{path}: no prefixes in the {provider} range file")
    for (version, start, end), value in sorted(chosen.items()):
        builder.add(version, start, end, builder.value_id(value))
    if unmapped:
        description += f"; regions without a territory: {', '.join(sorted(unmapped))}"
    return builder.build(data_date=data_date or _mtime_date(path), description=description)


def _parse_date(text: object, formats: Sequence[str]) -> str | None:
    if not isinstance(text, str):
        return None
    for fmt in formats:
        try:
            return dt.datetime.strptime(text.strip(), fmt).date().isoformat()
        except ValueError:
            continue
    try:
        return dt.datetime.fromisoformat(text.strip()[:19]).date().isoformat()
    except ValueError:
        return None


def _field(path: Path, where: str, entry: Any, key: str) -> str:
    if not isinstance(entry, dict):
        raise SourceError(f"{path}:{where}: expected an object, got {entry!r}")
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SourceError(f"{path}:{where}: no {key!r} string in {entry!r}")
    return value


def read_aws(path: Path) -> Ranges:
    """AWS ``ip-ranges.json``: ``prefixes[].ip_prefix``, ``ipv6_prefixes[].ipv6_prefix``."""
    doc = _load_json(path)
    what = "an AWS ip-ranges.json"
    v4 = _entries(path, doc, "prefixes", what)
    v6 = doc.get("ipv6_prefixes", [])
    if not isinstance(v6, list):
        raise SourceError(f"{path}: not {what} ('ipv6_prefixes' is not a list)")

    def networks() -> Iterable[tuple[str, str, str | None]]:
        lists = (("prefixes", "ip_prefix", v4), ("ipv6_prefixes", "ipv6_prefix", v6))
        for key, field, entries in lists:
            for i, entry in enumerate(entries):
                where = f"{key}[{i}]"
                prefix = _field(path, where, entry, field)
                yield where, prefix, entry.get("region")

    date = _parse_date(doc.get("createDate"), ("%Y-%m-%d-%H-%M-%S",))
    return _cloud_ranges(
        path,
        "aws",
        networks(),
        data_date=date,
        description=f"AWS ip-ranges (syncToken {doc.get('syncToken', '?')})",
    )


def read_gcp(path: Path) -> Ranges:
    """GCP ``cloud.json`` (``prefixes[].ipv4Prefix``/``ipv6Prefix``, ``scope``); ``goog.json``
    (no scope) reads as provider ``google``."""
    doc = _load_json(path)
    entries = _entries(path, doc, "prefixes", "a GCP cloud.json")
    scoped = any(isinstance(e, dict) and "scope" in e for e in entries)

    def networks() -> Iterable[tuple[str, str, str | None]]:
        for i, entry in enumerate(entries):
            where = f"prefixes[{i}]"
            if not isinstance(entry, dict):
                raise SourceError(f"{path}:{where}: expected an object, got {entry!r}")
            field = "ipv4Prefix" if "ipv4Prefix" in entry else "ipv6Prefix"
            yield where, _field(path, where, entry, field), entry.get("scope")

    date = _parse_date(doc.get("creationTime"), ())
    return _cloud_ranges(
        path,
        "gcp" if scoped else "google",
        networks(),
        data_date=date,
        description=f"GCP {'cloud' if scoped else 'goog'}.json (syncToken {doc.get('syncToken')})",
    )


def read_azure(path: Path) -> Ranges:
    """Azure service tags (``values[].properties.addressPrefixes`` and ``region``); the data
    date is the date in the file name (``ServiceTags_Public_20261116.json``), else its mtime."""
    doc = _load_json(path)
    entries = _entries(path, doc, "values", "an Azure service tags file")

    def networks() -> Iterable[tuple[str, str, str | None]]:
        for i, entry in enumerate(entries):
            where = f"values[{i}]"
            props = entry.get("properties") if isinstance(entry, dict) else None
            if not isinstance(props, dict):
                raise SourceError(f"{path}:{where}: no 'properties' object")
            prefixes = props.get("addressPrefixes")
            if not isinstance(prefixes, list):
                raise SourceError(f"{path}:{where}: no 'addressPrefixes' list")
            region = props.get("region")
            name = region if isinstance(region, str) else None
            for j, text in enumerate(prefixes):
                if not isinstance(text, str):
                    raise SourceError(f"{path}:{where}.addressPrefixes[{j}]: {text!r}")
                yield f"{where}.addressPrefixes[{j}]", text, name

    date = None
    if m := _FILE_DATE_RE.search(path.name):
        try:
            date = dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:
            date = None
    return _cloud_ranges(
        path,
        "azure",
        networks(),
        data_date=date,
        description=f"Azure service tags (changeNumber {doc.get('changeNumber', '?')})",
    )


# --- Apple iCloud Private Relay -----------------------------------------------------------------


def _relay_subdivision(country: str | None, code: str) -> str | None:
    c = code.strip().upper()
    c = _RELAY_REGION_ALIASES.get(c, c)
    return subdivision_from_iso(country, c) if c else None


def read_apple_relay(path: Path) -> Ranges:
    """Apple's ``egress-ip-ranges.csv``: ``prefix,country,region,city,`` → kind ``relay``,
    provider ``apple-private-relay``, the declared user country and ISO 3166-2 region."""
    builder = RangesBuilder()
    count = 0
    data_date: str | None = None
    subdivisions: dict[tuple[str | None, str | None], str | None] = {}
    for lineno, content, date in _data_lines(path):
        data_date = data_date or date
        if not content:
            continue
        try:
            row = next(csv.reader([content]))
        except csv.Error as exc:
            raise SourceError(f"{path}:{lineno}: not a CSV line ({exc})") from exc
        if lineno == 1 and row and row[0].strip().lower() in {"prefix", "network", "cidr"}:
            continue  # a header
        if len(row) < 2:
            raise SourceError(
                f"{path}:{lineno}: expected 'prefix,country,region,city,', got {content!r}"
            )
        version, start, end = _network(path, str(lineno), row[0])
        raw_country = row[1].strip()
        country = normalize_country(raw_country)
        if raw_country and country is None:
            raise SourceError(f"{path}:{lineno}: {raw_country!r} is not a country code")
        region = row[2].strip() if len(row) > 2 and row[2].strip() else None
        key = (country, region)
        if key not in subdivisions:  # ~300k rows, a few thousand distinct regions
            subdivisions[key] = _relay_subdivision(country, region) if region else None
        subdivision = subdivisions[key]
        value = RangeValue(country, subdivision, region, None, None, "relay", "apple-private-relay")
        builder.add(version, start, end, builder.value_id(value))
        count += 1
    if count == 0:
        raise SourceError(f"{path}: no ranges in the Private Relay egress list")
    return builder.build(
        data_date=data_date or _mtime_date(path),
        description=f"Apple iCloud Private Relay egress ranges ({count})",
    )


# --- generic CIDR lists --------------------------------------------------------------------------


def _kind(path: Path, lineno: int, text: str) -> str:
    k = text.strip().lower()
    if k not in KIND_NAMES:
        kinds = ", ".join(sorted(KIND_NAMES))
        raise SourceError(f"{path}:{lineno}: unknown kind {text!r}; expected one of {kinds}")
    return k


def read_cidr_list(path: Path, kind: str | None = None) -> Ranges:
    """``cidr[,kind[,provider]]`` a line (``#`` comments); ``kind`` is the default kind."""
    default = _kind(path, 0, kind) if kind else None
    builder = RangesBuilder()
    count = 0
    data_date: str | None = None
    for lineno, content, date in _data_lines(path):
        data_date = data_date or date
        if not content:
            continue
        row = [c.strip() for c in content.split(",")]
        if count == 0 and row[0].lower() in {"cidr", "network", "prefix"}:
            continue  # a header
        version, start, end = _network(path, str(lineno), row[0])
        line_kind = _kind(path, lineno, row[1]) if len(row) > 1 and row[1] else default
        if line_kind is None:
            raise SourceError(
                f"{path}:{lineno}: no kind for {row[0]!r}; write 'cidr,kind[,provider]' lines "
                "or give the kind: --from NAME=KIND:PATH (e.g. vpn:list.txt)"
            )
        provider = row[2] if len(row) > 2 and row[2] else None
        value = RangeValue(kind=line_kind, provider=provider)
        builder.add(version, start, end, builder.value_id(value))
        count += 1
    if count == 0:
        raise SourceError(f"{path}: no ranges in the CIDR list")
    return builder.build(
        data_date=data_date or _mtime_date(path), description=f"CIDR list ({count} ranges)"
    )


# --- hosting ASNs --------------------------------------------------------------------------------


def read_hosting_asns(path: Path) -> tuple[dict[int, str], str | None]:
    """An ``asn,provider[,note]`` list (header optional, ``#`` comments) → ({asn: provider},
    the ``# Updated:`` date)."""
    asns: dict[int, str] = {}
    data_date: str | None = None
    for lineno, content, date in _data_lines(path):
        data_date = data_date or date
        if not content:
            continue
        row = next(csv.reader([content]))
        first = row[0].strip()
        if first.lower() == "asn":
            continue
        text = first.upper().removeprefix("AS")
        if not text.isdigit() or not 0 < int(text) < 1 << 32:
            raise SourceError(f"{path}:{lineno}: {first!r} is not an AS number")
        provider = row[1].strip() if len(row) > 1 else ""
        if not provider:
            raise SourceError(f"{path}:{lineno}: AS{text} has no provider")
        asns[int(text)] = provider
    if not asns:
        raise SourceError(f"{path}: no AS numbers in the hosting ASN list")
    return asns, data_date


def _packaged_path() -> Path:
    return Path(str(resources.files("regiongate.intel").joinpath("data", _PACKAGED_ASNS)))


def packaged_hosting_asns() -> tuple[dict[int, str], str | None]:
    """The curated list shipped with regiongate (``regiongate/intel/data/hosting_asns.csv``)."""
    return read_hosting_asns(_packaged_path())


def hosting_asns_digest() -> str:
    """SHA-256 of the packaged list (part of the install's inputs digest)."""
    return hashlib.sha256(_packaged_path().read_bytes()).hexdigest()


def hosting_from_asns(sources: Sequence[Ranges], asns: Mapping[int, str]) -> Ranges:
    """Ranges of ``sources`` whose ASN is in ``asns``, as kind ``hosting`` with the provider.

    Every source that gives ASNs counts (overlaps resolve as for any source: the most
    specific range wins)."""
    builder = RangesBuilder()
    for ranges in sources:
        remap = [0] * len(ranges.values)
        for i, value in enumerate(ranges.values):
            if value.asn is not None and (provider := asns.get(value.asn)) is not None:
                remap[i] = builder.value_id(RangeValue(kind="hosting", provider=provider))
        if not any(remap):
            continue
        for version, fam in ((4, ranges.v4), (6, ranges.v6)):
            target = builder.v4 if version == 4 else builder.v6
            for start, end, vid in zip(fam.starts, fam.ends, fam.vids, strict=True):
                if new := remap[vid]:
                    target.starts.append(start)
                    target.ends.append(end)
                    target.vids.append(new)
    return builder.build(description=f"ranges of {len(asns)} hosting ASNs")


# --- detection and dispatch ----------------------------------------------------------------------


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return False
    return True


def detect_feed(path: Path, head: bytes) -> str | None:
    """One of :data:`FEED_FORMATS` if ``head`` (the first bytes of ``path``) looks like one."""
    name = path.name.lower()
    text = head.decode("utf-8", errors="replace")
    if text.lstrip("\ufeff \t\r\n").startswith("{"):
        if '"ip_prefix"' in text or '"ipv6_prefix"' in text or '"createDate"' in text:
            return "aws"
        if '"ipv4Prefix"' in text or '"ipv6Prefix"' in text or '"creationTime"' in text:
            return "gcp"
        if '"changeNumber"' in text and '"values"' in text:
            return "azure"
        raise SourceError(
            f"{path}: a JSON file of an unknown kind; expected AWS ip-ranges.json, GCP "
            "cloud.json or Azure service tags (or give the format: --from aws:PATH)"
        )
    if name in {"torbulkexitlist", "exit-addresses"}:
        return "tor-exits"
    if "egress-ip-ranges" in name:
        return "apple-relay"
    lines = text.splitlines()
    if len(head) >= 4096 and lines:
        lines = lines[:-1]  # maybe cut short
    rows = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    rows = rows[:_SAMPLE_LINES]
    if not rows:
        return None
    if all(r.split()[0] in {"ExitNode", "ExitAddress", "Published", "LastStatus"} for r in rows):
        return "tor-exits"
    if all(_is_address(r) for r in rows):
        return "tor-exits"
    cells = [c.strip() for c in rows[0].split(",")]
    if cells[0].lower() == "asn" and len(cells) > 1 and cells[1].lower() == "provider":
        return "hosting-asns"
    if {c.lower() for c in cells} <= {"cidr", "network", "prefix", "kind", "provider"}:
        if len(rows) < 2:  # a CIDR-list header: look at the first data row
            return None
        cells = [c.strip() for c in rows[1].split(",")]
    if not _is_network(cells[0]):
        return None
    if (
        len(cells) == 5
        and cells[4] == ""
        and re.fullmatch(r"[A-Z]{2}", cells[1])
        and (cells[2] == "" or _REGION_CODE_RE.match(cells[2]))
    ):
        return "apple-relay"
    if len(cells) == 1 or cells[1].lower() in KIND_NAMES:
        return "cidr"
    return None


def read_feed(path: Path, fmt: str) -> Ranges:
    """Read ``path`` as feed format ``fmt`` (``cidr:KIND`` gives a CIDR list's default kind)."""
    base, _, option = fmt.partition(":")
    if base == "tor-exits":
        return read_tor_exits(path)
    if base == "aws":
        return read_aws(path)
    if base == "gcp":
        return read_gcp(path)
    if base == "azure":
        return read_azure(path)
    if base == "apple-relay":
        return read_apple_relay(path)
    if base == "cidr":
        return read_cidr_list(path, option or None)
    if base == "hosting-asns":
        raise SourceError(
            f"{path}: a hosting ASN list is applied to the ASN sources at install, not read as "
            "ranges"
        )
    raise SourceError(f"{path}: unknown format {fmt!r}")
