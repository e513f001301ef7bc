from __future__ import annotations

import gzip
import ipaddress
from pathlib import Path

import pytest

from regiongate.errors import SourceError
from regiongate.intel.readers import (
    Ranges,
    RangeValue,
    detect_format,
    normalize_country,
    read_csv_ranges,
    read_iporigin,
    read_mmdb,
    read_source,
)
from tests.conftest import write_iporigin, write_mmdb


def v4(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def v6(ip: str) -> int:
    return int(ipaddress.IPv6Address(ip))


def ranges4(r: Ranges) -> list[tuple[int, int, RangeValue]]:
    return [(s, e, r.values[v]) for s, e, v in zip(r.v4.starts, r.v4.ends, r.v4.vids, strict=True)]


def ranges6(r: Ranges) -> list[tuple[int, int, RangeValue]]:
    return [(s, e, r.values[v]) for s, e, v in zip(r.v6.starts, r.v6.ends, r.v6.vids, strict=True)]


# --- MaxMind DB ---------------------------------------------------------------------------------


def test_mmdb_geoip2_nested_schema(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "city.mmdb",
        [
            (
                "2.0.0.0/16",
                {
                    "country": {"iso_code": "UA"},
                    "subdivisions": [{"iso_code": "43", "names": {"en": "Crimea"}}],
                },
            ),
            ("2.1.0.0/16", {"registered_country": {"iso_code": "DE"}}),
            ("2a00::/32", {"country": {"iso_code": "RU"}, "subdivisions": [{"iso_code": "MOW"}]}),
        ],
    )
    r = read_mmdb(path)
    assert ranges4(r) == [
        (v4("2.0.0.0"), v4("2.0.255.255"), RangeValue("UA", "UA-43", "Crimea")),
        (v4("2.1.0.0"), v4("2.1.255.255"), RangeValue("DE")),
    ]
    assert ranges6(r) == [
        (v6("2a00::"), v6("2a00:0:ffff:ffff:ffff:ffff:ffff:ffff"), RangeValue("RU", "RU-MOW"))
    ]
    assert r.data_date is not None and len(r.data_date) == 10


def test_mmdb_flat_ip_location_db_schema_merges_adjacent(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "flat.mmdb",
        [
            ("5.0.0.0/25", {"country_code": "RU", "state1": "Crimea", "city": "Simferopol"}),
            ("5.0.0.128/25", {"country_code": "RU", "state1": "Crimea", "city": "Kerch"}),
            (
                "5.0.1.0/24",
                {"country_code": "RU", "state1": "Sebastopol City", "city": "Sevastopol"},
            ),
            ("5.0.2.0/24", {"country_code": "RU", "state1": "Rostov", "city": "Donetsk"}),
            ("5.0.3.0/24", {"country_code": "ZZ", "state1": "", "city": ""}),
        ],
    )
    r = read_mmdb(path)
    # Same country and region, different cities: one range (cities are never used).
    assert ranges4(r) == [
        (v4("5.0.0.0"), v4("5.0.0.255"), RangeValue("RU", "UA-43", "Crimea")),
        (v4("5.0.1.0"), v4("5.0.1.255"), RangeValue("RU", "UA-40", "Sebastopol City")),
        (v4("5.0.2.0"), v4("5.0.2.255"), RangeValue("RU", "RU-ROS", "Rostov")),
    ]


def test_mmdb_ipinfo_and_anonymizer_schemas(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "mixed.mmdb",
        [
            (
                "6.0.0.0/24",
                {
                    "country": "US",
                    "region": "California",
                    "asn": "AS15169",
                    "as_name": "Google LLC",
                },
            ),
            ("6.0.1.0/24", {"is_anonymous": True, "is_anonymous_vpn": True}),
            ("6.0.2.0/24", {"is_anonymous": True, "is_tor_exit_node": True}),
            ("6.0.3.0/24", {"vpn": "true", "relay": "false", "service": "ExampleVPN"}),
            (
                "6.0.4.0/24",
                {"country": {"iso_code": "NL"}, "traits": {"is_hosting_provider": True}},
            ),
            (
                "6.0.5.0/24",
                {"autonomous_system_number": 64500, "autonomous_system_organization": "Ex"},
            ),
        ],
    )
    got = {ipaddress.IPv4Address(s).compressed: val for s, _, val in ranges4(read_mmdb(path))}
    assert got["6.0.0.0"] == RangeValue("US", "US-CA", "California", 15169, "Google LLC")
    assert got["6.0.1.0"] == RangeValue(kind="vpn")
    assert got["6.0.2.0"] == RangeValue(kind="tor")
    assert got["6.0.3.0"] == RangeValue(kind="vpn", provider="ExampleVPN")
    assert got["6.0.4.0"] == RangeValue("NL", kind="hosting")
    assert got["6.0.5.0"] == RangeValue(asn=64500, org="Ex")


@pytest.mark.parametrize(
    "content",
    [b"", b"not a database at all", b"\xab\xcd\xefMaxMind.com" + b"\x00" * 10],
)
def test_mmdb_corrupt_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mmdb"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=r"bad\.mmdb"):
        read_mmdb(path)


def test_mmdb_truncated_is_refused(tmp_path: Path) -> None:
    good = write_mmdb(tmp_path / "good.mmdb", [("1.0.0.0/8", {"country_code": "AU"})])
    data = good.read_bytes()
    bad = tmp_path / "trunc.mmdb"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceError):
        read_source(bad, "mmdb")


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_shapes(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("1.0.0.0,1.0.0.255,au\n1.0.1.0,1.0.1.255,EU\n")
    assert ranges4(read_csv_ranges(tmp_path / "a.csv")) == [
        (v4("1.0.0.0"), v4("1.0.0.255"), RangeValue("AU"))
    ]
    (tmp_path / "b.csv").write_text('16777216,16777471,13335,"Cloudflare, Inc."\n')
    assert ranges4(read_csv_ranges(tmp_path / "b.csv")) == [
        (v4("1.0.0.0"), v4("1.0.0.255"), RangeValue(asn=13335, org="Cloudflare, Inc."))
    ]
    (tmp_path / "c.csv").write_text("1.0.0.0,1.0.0.255,UA,Luhansk,,Alchevsk,,48.4,38.8,\n")
    assert ranges4(read_csv_ranges(tmp_path / "c.csv")) == [
        (v4("1.0.0.0"), v4("1.0.0.255"), RangeValue("UA", "UA-09", "Luhansk"))
    ]
    (tmp_path / "d.csv").write_text(
        "network,kind,provider\n10.0.0.0/8,vpn,Corp\n2001:db8::/32,tor,\n"
    )
    r = read_csv_ranges(tmp_path / "d.csv")
    assert ranges4(r) == [
        (v4("10.0.0.0"), v4("10.255.255.255"), RangeValue(kind="vpn", provider="Corp"))
    ]
    assert ranges6(r)[0][2] == RangeValue(kind="tor")


def test_csv_header_and_gzip(tmp_path: Path) -> None:
    text = "ip_range_start,ip_range_end,country_code,subdivision\n2.0.0.0,2.0.0.255,UA,UA-43\n"
    path = tmp_path / "h.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert ranges4(read_source(path)) == [
        (v4("2.0.0.0"), v4("2.0.0.255"), RangeValue("UA", "UA-43"))
    ]


def test_tor_geoip_files(tmp_path: Path) -> None:
    g4 = tmp_path / "geoip"
    g4.write_text(
        "# This file has been converted from the IPFire Location database\n"
        "# using Tor's geoip-db-tool\n#\n# Generated: Thu, 25 Jun 2026 04:33:59 GMT\n"
        "15726992,15726999,??\n16777216,16777471,AU\n16777472,16778239,CN\n16778240,16779263,EU\n"
    )
    g6 = tmp_path / "geoip6"
    g6.write_text(
        "2001::,2001:0:ffff:ffff:ffff:ffff:ffff:ffff,??\n2001:2::,2001:2:0:ffff:ffff:ffff:ffff:ffff,JP\n"
    )
    assert detect_format(g4) == "tor-geoip"
    r4 = read_source(g4)
    assert r4.data_date == "2026-06-25"
    # Pseudo-codes (??, EU, AP) are "no answer", not territories.
    assert ranges4(r4) == [
        (v4("1.0.0.0"), v4("1.0.0.255"), RangeValue("AU")),
        (v4("1.0.1.0"), v4("1.0.3.255"), RangeValue("CN")),
    ]
    assert ranges6(read_source(g6)) == [
        (v6("2001:2::"), v6("2001:2:0:ffff:ffff:ffff:ffff:ffff"), RangeValue("JP"))
    ]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("1.0.0.0,1.0.0.255,AU\n1.0.1.0,banana,AU\n", r"bad\.csv:2: '1\.0\.1\.0'-'banana'"),
        ("1.0.0.255,1.0.0.0,AU\n", "inverted"),
        ("1.0.0.0,::1,AU\n", "inverted or mixed"),
        ("1.0.0.0,1.0.0.255,AU\n1.0.1.0\n", "expected at least 3 columns"),
        ("foo,bar,baz\n1,2,3\n", "names no start/end"),
        ("# only a comment\n", "no ranges"),
        ("999/8,AU\n", "not a network"),
    ],
)
def test_csv_malformed_is_refused_with_line(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SourceError, match=match):
        read_csv_ranges(path)


def test_csv_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("1.0.0.0,1.0.0.255,AU,Zürich\n".encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8"):
        read_csv_ranges(path)


# --- iporigin -----------------------------------------------------------------------------------


def test_iporigin(tmp_path: Path) -> None:
    path = write_iporigin(
        tmp_path / "ranges.bin",
        [("Tor", "tor"), ("Apple Private Relay", "vpn"), ("Amazon AWS", "hosting")],
        [("1.0.0.0", "1.0.0.255", 0), ("1.0.1.0", "1.0.1.255", 1)],
        [("2600:1f00::", "2600:1fff:ffff:ffff:ffff:ffff:ffff:ffff", 2)],
    )
    assert detect_format(path) == "iporigin"
    r = read_iporigin(path)
    assert ranges4(r) == [
        (v4("1.0.0.0"), v4("1.0.0.255"), RangeValue(kind="tor", provider="Tor")),
        (v4("1.0.1.0"), v4("1.0.1.255"), RangeValue(kind="relay", provider="Apple Private Relay")),
    ]
    assert ranges6(r)[0][2] == RangeValue(kind="hosting", provider="Amazon AWS")
    assert r.data_date == "2026-09-21"


def test_iporigin_truncated_and_bad_magic(tmp_path: Path) -> None:
    path = write_iporigin(tmp_path / "ranges.bin", [("Tor", "tor")], [("1.0.0.0", "1.0.0.255", 0)])
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(SourceError, match="expected"):
        read_iporigin(path)
    path.write_bytes(data[:20])
    with pytest.raises(SourceError):
        read_iporigin(path)
    path.write_bytes(b"NOTORIGN" + data[8:])
    with pytest.raises(SourceError, match="bad magic"):
        read_iporigin(path)
    bad_label = write_iporigin(tmp_path / "l.bin", [("Tor", "tor")], [("1.0.0.0", "1.0.0.255", 7)])
    with pytest.raises(SourceError, match="malformed"):
        read_iporigin(bad_label)


# --- misc ---------------------------------------------------------------------------------------


def test_detect_format_refuses_unknown_binary(tmp_path: Path) -> None:
    path = tmp_path / "x.dat"
    path.write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(SourceError, match="unknown format"):
        read_source(path)
    with pytest.raises(SourceError, match="unknown format 'xml'"):
        read_source(tmp_path / "x.dat", "xml")
    with pytest.raises(SourceError, match="cannot read"):
        detect_format(tmp_path / "missing")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("us", "US"),
        (" GB ", "GB"),
        ("UK", "GB"),
        ("EU", None),
        ("AP", None),
        ("??", None),
        ("", None),
        ("USA", None),
        ("1A", None),
        (None, None),
        (840, None),
    ],
)
def test_normalize_country(code: object, expected: str | None) -> None:
    assert normalize_country(code) == expected
