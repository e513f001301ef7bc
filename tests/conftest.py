"""Shared fixtures: tiny data files written by the tests themselves."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from regiongate.intel.compile import SourceInfo, compile_snapshot, merge_ranges
from regiongate.intel.readers import read_source
from regiongate.intel.snapshot import Snapshot
from regiongate.paths import snapshot_path


def write_mmdb(
    path: Path,
    entries: Iterable[tuple[str, dict[str, Any]]],
    *,
    database_type: str = "GeoIP2-City",
) -> Path:
    """A MaxMind DB file with exactly ``entries`` (CIDR, record); IPv4 lives in ::/96."""
    writer = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type=database_type, description="test"
    )
    for cidr, record in entries:
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path


def write_iporigin(
    path: Path,
    labels: Sequence[tuple[str, str]],
    v4: Sequence[tuple[str, str, int]],
    v6: Sequence[tuple[str, str, int]] = (),
    built_at: int = 1_790_000_000,
) -> Path:
    """iporigin's ``ranges.bin`` v1: header, labels, then IPv4 and IPv6 (start, end, label)."""
    blob = bytearray(
        struct.pack("<8sHQHII", b"IPORIGIN", 1, built_at, len(labels), len(v4), len(v6))
    )
    for provider, kind in labels:
        text = f"{provider}\t{kind}".encode()
        blob += struct.pack("<H", len(text)) + text
    for s, e, label in v4:
        blob += struct.pack(
            "<IIH", int(ipaddress.IPv4Address(s)), int(ipaddress.IPv4Address(e)), label
        )
    for s, e, label in v6:
        blob += struct.pack(
            "<16s16sH", ipaddress.IPv6Address(s).packed, ipaddress.IPv6Address(e).packed, label
        )
    path.write_bytes(bytes(blob))
    return path


def build_snapshot(out: Path, sources: Sequence[tuple[str, Sequence[Path]]]) -> Path:
    """Compile named sources (files read with format detection) into ``out``."""
    loaded = []
    for name, files in sources:
        ranges = merge_ranges([read_source(f) for f in files])
        loaded.append((SourceInfo(name=name, format="test", ranges=len(ranges)), ranges))
    compile_snapshot(loaded, out)
    return out


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three geo sources that agree and disagree on purpose, an ASN file and iporigin ranges.

    - 1.0.0.0/24: all say AU.
    - 2.0.0.0/16: geo-a says UA with subdivision 43 (Crimea), flat says RU/"Republic of Crimea",
      csv says RU: disputed, territories UA-43, UA, RU.
    - 3.0.0.0-3.0.0.127 US and 3.0.0.128-3.0.0.255 CA in geo-a (adjacent ranges in one /24).
    - 4.0.0.0/24 CN in csv only.
    - 5.0.0.0/8 DE in csv only; geo-a has 5.5.5.0/24 FR inside it (more specific source).
    - 2001:4000::/32 JP everywhere; 2001:4001::/48 KR in geo-a only.
    - ASN 64500 on 1.0.0.0/24, iporigin tor on 1.0.0.128/25 and vpn on 2001:4000::/64.
    """
    d = tmp_path_factory.mktemp("tiny")
    geo_a = write_mmdb(
        d / "geo-a.mmdb",
        [
            ("1.0.0.0/24", {"country": {"iso_code": "AU"}}),
            (
                "2.0.0.0/16",
                {
                    "country": {"iso_code": "UA"},
                    "subdivisions": [{"iso_code": "43", "names": {"en": "Crimea"}}],
                },
            ),
            ("3.0.0.0/25", {"country": {"iso_code": "US"}}),
            ("3.0.0.128/25", {"country": {"iso_code": "CA"}}),
            ("5.5.5.0/24", {"country": {"iso_code": "FR"}}),
            ("2001:4000::/32", {"country": {"iso_code": "JP"}}),
            ("2001:4001::/48", {"country": {"iso_code": "KR"}}),
        ],
    )
    flat = write_mmdb(
        d / "flat.mmdb",
        [
            ("1.0.0.0/24", {"country_code": "AU", "state1": "New South Wales", "city": "Sydney"}),
            (
                "2.0.0.0/16",
                {"country_code": "RU", "state1": "Republic of Crimea", "city": "Simferopol"},
            ),
            ("2001:4000::/32", {"country_code": "JP", "state1": "", "city": ""}),
        ],
        database_type="dbip-city",
    )
    csv = d / "ranges.csv"
    csv.write_text(
        "# Generated: Thu, 25 Jun 2026 04:33:59 GMT\n"
        "1.0.0.0,1.0.0.255,AU\n"
        "2.0.0.0,2.0.255.255,RU\n"
        "4.0.0.0,4.0.0.255,CN\n"
        "5.0.0.0,5.255.255.255,DE\n"
        "9.0.0.0,9.0.0.255,??\n"
        "2001:4000::,2001:4000:ffff:ffff:ffff:ffff:ffff:ffff,JP\n"
    )
    asn = d / "asn.csv"
    asn.write_text('1.0.0.0,1.0.0.255,64500,"Example Net, Inc."\n')
    iporigin = write_iporigin(
        d / "ranges.bin",
        [("Tor", "tor"), ("ExampleVPN", "vpn"), ("Apple Private Relay", "vpn")],
        [("1.0.0.128", "1.0.0.255", 0), ("7.0.0.0", "7.0.0.255", 2)],
        [("2001:4000::", "2001:4000::ffff:ffff:ffff:ffff", 1)],
    )
    return {"geo-a": geo_a, "flat": flat, "csv": csv, "asn": asn, "iporigin": iporigin}


TINY_ORDER = ("geo-a", "flat", "csv", "asn", "iporigin")


@pytest.fixture(scope="session")
def tiny_snapshot_path(
    tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("snap") / "tiny.rgsnap"
    return build_snapshot(out, [(name, [tiny_files[name]]) for name in TINY_ORDER])


@pytest.fixture
def tiny_snapshot(tiny_snapshot_path: Path) -> Iterable[Snapshot]:
    snap = Snapshot(tiny_snapshot_path)
    yield snap
    snap.close()


def realdata_snapshot() -> Path:
    """The installed snapshot, or skip with instructions."""
    path = snapshot_path()
    if not path.is_file():
        pytest.skip(
            f"real data not installed at {path}: run `regiongate data install` (or `make data`)"
        )
    return path
