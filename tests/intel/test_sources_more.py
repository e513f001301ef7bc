"""More anonymizer and hosting sources: Tor exits, cloud ranges, Private Relay, CIDR lists,
hosting ASNs; ``--from`` for each; data dates and staleness."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from pathlib import Path

import pycountry
import pytest
from typer.testing import CliRunner

from regiongate.cli.app import app
from regiongate.errors import DataError, SourceError
from regiongate.intel.cloud_regions import CLOUD_REGIONS, region_territory
from regiongate.intel.compile import SourceInfo, compile_snapshot
from regiongate.intel.feeds import (
    HOSTING_ASN_SOURCE,
    hosting_from_asns,
    packaged_hosting_asns,
    read_apple_relay,
    read_aws,
    read_azure,
    read_cidr_list,
    read_gcp,
    read_hosting_asns,
    read_tor_exits,
)
from regiongate.intel.install import install, parse_from, stale_warnings, with_format
from regiongate.intel.model import Flag
from regiongate.intel.readers import (
    Ranges,
    RangeValue,
    detect_format,
    normalize_format,
    read_source,
)
from regiongate.intel.regions import is_valid_subdivision
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import load_policy
from regiongate.policy.model import Action, Context
from tests.conftest import build_snapshot, write_mmdb

runner = CliRunner()
TODAY = dt.datetime.now(dt.UTC).date()
AFTER_ENFORCEMENT = Context(at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())


def v4(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _values(ranges: Ranges) -> list[tuple[int, int, int, RangeValue]]:
    """(version, start, end, value) of every range."""
    out = []
    for version, fam in ((4, ranges.v4), (6, ranges.v6)):
        for s, e, vid in zip(fam.starts, fam.ends, fam.vids, strict=True):
            out.append((version, s, e, ranges.values[vid]))
    return out


def _age(path: Path, days: int) -> Path:
    t = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).timestamp()
    os.utime(path, (t, t))
    return path


# --- sample files ---------------------------------------------------------------------------------


def tor_list(d: Path) -> Path:
    p = d / "torbulkexitlist"
    p.write_text("# Tor exits\n185.220.101.1\n185.220.101.2\n\n2a0b:f4c2::1\n")
    return p


def aws_json(d: Path) -> Path:
    p = d / "ip-ranges.json"
    p.write_text(
        json.dumps(
            {
                "syncToken": "1763000000",
                "createDate": "2026-11-20-21-13-07",
                "prefixes": [
                    {"ip_prefix": "18.162.0.0/16", "region": "ap-east-1", "service": "AMAZON"},
                    {"ip_prefix": "18.162.0.0/16", "region": "ap-east-1", "service": "EC2"},
                    {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "S3"},
                    {"ip_prefix": "52.94.76.0/22", "region": "GLOBAL", "service": "AMAZON"},
                    {"ip_prefix": "15.230.0.0/24", "region": "xx-new-9", "service": "AMAZON"},
                ],
                "ipv6_prefixes": [
                    {"ipv6_prefix": "2406:da60::/36", "region": "ap-east-1", "service": "EC2"}
                ],
            }
        )
    )
    return p


def gcp_json(d: Path) -> Path:
    p = d / "cloud.json"
    p.write_text(
        json.dumps(
            {
                "syncToken": "1763000001",
                "creationTime": "2026-11-21T10:11:12.123456",
                "prefixes": [
                    {
                        "ipv4Prefix": "34.96.128.0/20",
                        "service": "Google Cloud",
                        "scope": "asia-east2",
                    },
                    {
                        "ipv4Prefix": "34.1.208.0/20",
                        "service": "Google Cloud",
                        "scope": "europe-west2",
                    },
                    {
                        "ipv6Prefix": "2600:1900:41a0::/44",
                        "service": "Google Cloud",
                        "scope": "asia-east2",
                    },
                ],
            }
        )
    )
    return p


def azure_json(d: Path) -> Path:
    p = d / "ServiceTags_Public_20261116.json"
    p.write_text(
        json.dumps(
            {
                "changeNumber": 412,
                "cloud": "Public",
                "values": [
                    {
                        "name": "AzureCloud",
                        "id": "AzureCloud",
                        "properties": {
                            "changeNumber": 300,
                            "region": "",
                            "addressPrefixes": ["20.2.0.0/16", "20.40.0.0/13"],
                        },
                    },
                    {
                        "name": "AzureCloud.eastasia",
                        "id": "AzureCloud.eastasia",
                        "properties": {
                            "changeNumber": 40,
                            "region": "eastasia",
                            "addressPrefixes": ["20.2.0.0/16", "2603:1040:207::/48"],
                        },
                    },
                    {
                        "name": "AzureCloud.uksouth",
                        "id": "AzureCloud.uksouth",
                        "properties": {
                            "changeNumber": 41,
                            "region": "uksouth",
                            "addressPrefixes": ["20.26.0.0/16"],
                        },
                    },
                ],
            }
        )
    )
    return p


RELAY_ROWS = (
    "172.224.226.0/27,GB,GB-EN,London,\n"
    "172.224.226.32/27,RU,RU-MOW,Moscow,\n"
    "172.224.226.64/27,UA,UA-43,Simferopol,\n"
    "172.224.226.96/27,JP,JP-13,Tokyo,\n"
    "172.224.226.128/27,US,,,\n"
    "2a02:26f7:b3c0:4000::/64,DE,DE-BE,Berlin,\n"
)


def relay_csv(d: Path, name: str = "egress-ip-ranges.csv") -> Path:
    p = d / name
    p.write_text(RELAY_ROWS)
    return p


def cidr_list(d: Path) -> Path:
    p = d / "anon.txt"
    p.write_text(
        "# Updated: 2026-10-01\n"
        "91.10.0.0/16,vpn,ExampleVPN\n"
        "45.80.0.0/22,proxy\n"
        "2001:db8:1::/48,hosting,ExampleHost  # a comment\n"
    )
    return p


# --- readers ---------------------------------------------------------------------------------------


def test_tor_exit_list(tmp_path: Path) -> None:
    path = _age(tor_list(tmp_path), 1)
    ranges = read_tor_exits(path)
    got = _values(ranges)
    assert [(v, s, e) for v, s, e, _ in got] == [
        (4, v4("185.220.101.1"), v4("185.220.101.2")),  # adjacent exits merge
        (6, int(ipaddress.IPv6Address("2a0b:f4c2::1")), int(ipaddress.IPv6Address("2a0b:f4c2::1"))),
    ]
    assert got[0][3] == RangeValue(kind="tor", provider="Tor")
    assert ranges.data_date == (TODAY - dt.timedelta(days=1)).isoformat()  # from the mtime
    assert detect_format(path) == "tor-exits"
    plain = tmp_path / "exits.txt"
    plain.write_text("1.2.3.4\n5.6.7.8\n")
    assert detect_format(plain) == "tor-exits"


def test_tor_exit_addresses_format_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "exit-addresses"
    p.write_text(
        "ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E\n"
        "Published 2026-11-22 06:47:38\n"
        "LastStatus 2026-11-22 13:00:00\n"
        "ExitAddress 162.247.74.201 2026-11-22 13:34:42\n"
    )
    ranges = read_tor_exits(p)
    assert ranges.data_date == "2026-11-22"
    assert _values(ranges)[0][1] == v4("162.247.74.201")
    assert detect_format(p) == "tor-exits"
    bad = tmp_path / "torbulkexitlist"
    bad.write_text("1.2.3.4\nnot-an-address\n")
    with pytest.raises(SourceError, match=r"torbulkexitlist:2: 'not-an-address' is not an address"):
        read_tor_exits(bad)
    bad.write_text("1.2.3.4 5.6.7.8\n")
    with pytest.raises(SourceError, match=r"torbulkexitlist:1: .* one address a line"):
        read_tor_exits(bad)
    bad.write_text("# nothing\n")
    with pytest.raises(SourceError, match=r"torbulkexitlist: no addresses"):
        read_tor_exits(bad)


def test_aws(tmp_path: Path) -> None:
    path = aws_json(tmp_path)
    ranges = read_aws(path)
    assert ranges.data_date == "2026-11-20"
    assert "xx-new-9" in ranges.description  # a region the table does not know is reported
    by_start = {(v, s): val for v, s, _, val in _values(ranges)}
    hk = by_start[(4, v4("18.162.0.0"))]
    assert hk == RangeValue(country="HK", region="ap-east-1", kind="hosting", provider="aws")
    assert by_start[(4, v4("3.5.140.0"))].country == "KR"
    glob = by_start[(4, v4("52.94.76.0"))]
    assert (glob.country, glob.region, glob.kind) == (None, None, "hosting")
    assert by_start[(4, v4("15.230.0.0"))].region == "xx-new-9"
    assert by_start[(6, int(ipaddress.IPv6Address("2406:da60::")))].country == "HK"
    assert detect_format(path) == "aws"


def test_gcp_and_azure(tmp_path: Path) -> None:
    gcp = read_gcp(gcp_json(tmp_path))
    assert gcp.data_date == "2026-11-21"
    by_start = {(v, s): val for v, s, _, val in _values(gcp)}
    assert by_start[(4, v4("34.96.128.0"))] == RangeValue(
        country="HK", region="asia-east2", kind="hosting", provider="gcp"
    )
    assert by_start[(4, v4("34.1.208.0"))].country == "GB"
    assert detect_format(tmp_path / "cloud.json") == "gcp"

    path = azure_json(tmp_path)
    azure = read_azure(path)
    assert azure.data_date == "2026-11-16"  # from the file name
    assert "changeNumber 412" in azure.description
    by_start = {(v, s): val for v, s, _, val in _values(azure)}
    # 20.2.0.0/16 is in the global AzureCloud tag (no region) and in AzureCloud.eastasia:
    # the regional answer wins.
    assert by_start[(4, v4("20.2.0.0"))] == RangeValue(
        country="HK", region="eastasia", kind="hosting", provider="azure"
    )
    assert by_start[(4, v4("20.40.0.0"))].country is None
    assert by_start[(4, v4("20.26.0.0"))].country == "GB"
    assert detect_format(path) == "azure"
    undated = tmp_path / "azure-tags.json"
    undated.write_text(path.read_text())
    _age(undated, 3)
    assert read_azure(undated).data_date == (TODAY - dt.timedelta(days=3)).isoformat()


@pytest.mark.parametrize(
    ("name", "text", "reader", "match"),
    [
        ("ip-ranges.json", '{"prefixes": [', read_aws, r"ip-ranges\.json: not valid JSON"),
        (
            "ip-ranges.json",
            '{"syncToken": "1"}',
            read_aws,
            r"ip-ranges\.json: not an AWS .*no 'prefixes'",
        ),
        ("ip-ranges.json", "[1, 2]", read_aws, r"ip-ranges\.json: not an AWS .* not an object"),
        (
            "ip-ranges.json",
            '{"prefixes": [{"ip_prefix": "18.162.0.0/16"}, {"ip_prefix": "300.1.0.0/16"}]}',
            read_aws,
            r"ip-ranges\.json:prefixes\[1\]: '300\.1\.0\.0/16' is not an address",
        ),
        (
            "ip-ranges.json",
            '{"prefixes": [{"region": "us-east-1"}]}',
            read_aws,
            r"ip-ranges\.json:prefixes\[0\]: no 'ip_prefix'",
        ),
        (
            "cloud.json",
            '{"prefixes": [7]}',
            read_gcp,
            r"cloud\.json:prefixes\[0\]: expected an object",
        ),
        ("cloud.json", '{"prefixes": []}', read_gcp, r"cloud\.json: no prefixes"),
        (
            "tags.json",
            '{"changeNumber": 1, "values": [{"name": "x"}]}',
            read_azure,
            r"tags\.json:values\[0\]: no 'properties'",
        ),
        (
            "tags.json",
            '{"values": [{"properties": {"addressPrefixes": ["1.2.3.0/24", 5]}}]}',
            read_azure,
            r"tags\.json:values\[0\]\.addressPrefixes\[1\]",
        ),
    ],
)
def test_cloud_errors_name_the_file(
    tmp_path: Path, name: str, text: str, reader: object, match: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SourceError, match=match):
        reader(path)  # type: ignore[operator]


def test_unknown_json_is_refused_at_detection(tmp_path: Path) -> None:
    path = tmp_path / "what.json"
    path.write_text('{"hello": "world"}')
    with pytest.raises(SourceError, match=r"what\.json: a JSON file of an unknown kind"):
        detect_format(path)


# --- the region table ------------------------------------------------------------------------------


def test_hong_kong_regions_are_in_hong_kong() -> None:
    assert region_territory("aws", "ap-east-1") == "HK"
    assert region_territory("gcp", "asia-east2") == "HK"
    assert region_territory("azure", "eastasia") == "HK"
    assert region_territory("azure", "EastAsia") == "HK"
    # Neighbours that are not.
    assert region_territory("gcp", "asia-east1") == "TW"
    assert region_territory("aws", "cn-north-1") == "CN"
    assert region_territory("azure", "southeastasia") == "SG"
    assert region_territory("aws", None) is None
    assert region_territory("aws", "GLOBAL") is None
    assert region_territory("nope", "eastasia") is None


def test_region_table_codes_are_valid_iso() -> None:
    for provider, table in CLOUD_REGIONS.items():
        assert len(table) >= 30, provider
        for region, code in table.items():
            if "-" in code:
                assert is_valid_subdivision(code), (provider, region, code)
            else:
                assert pycountry.countries.get(alpha_2=code) is not None, (provider, region, code)
    aws = CLOUD_REGIONS["aws"]
    for region in ("us-east-1", "eu-west-2", "ap-southeast-1", "sa-east-1", "me-central-1"):
        assert region in aws


# --- Apple Private Relay ----------------------------------------------------------------------------


def test_apple_relay_reader(tmp_path: Path) -> None:
    path = _age(relay_csv(tmp_path), 10)
    ranges = read_apple_relay(path)
    assert ranges.data_date == (TODAY - dt.timedelta(days=10)).isoformat()
    by_start = {(v, s): val for v, s, _, val in _values(ranges)}
    gb = by_start[(4, v4("172.224.226.0"))]
    assert gb == RangeValue(
        country="GB",
        subdivision="GB-ENG",  # Apple's GB-EN is ISO 3166-2 GB-ENG
        region="GB-EN",
        kind="relay",
        provider="apple-private-relay",
    )
    assert by_start[(4, v4("172.224.226.32"))].subdivision == "RU-MOW"
    assert by_start[(4, v4("172.224.226.64"))].subdivision == "UA-43"
    us = by_start[(4, v4("172.224.226.128"))]
    assert (us.country, us.subdivision, us.region) == ("US", None, None)
    assert by_start[(6, int(ipaddress.IPv6Address("2a02:26f7:b3c0:4000::")))].subdivision == "DE-BE"
    assert detect_format(path) == "apple-relay"
    # Detected by shape too, whatever the file is called.
    assert detect_format(relay_csv(tmp_path, "relay.csv")) == "apple-relay"


def test_apple_relay_errors(tmp_path: Path) -> None:
    bad = tmp_path / "egress-ip-ranges.csv"
    bad.write_text("172.224.226.0/27,GB,GB-EN,London,\n172.224.226.32/99,RU,RU-MOW,Moscow,\n")
    with pytest.raises(SourceError, match=r"egress-ip-ranges\.csv:2: '172\.224\.226\.32/99'"):
        read_apple_relay(bad)
    bad.write_text("172.224.226.0/27,Britain,,London,\n")
    with pytest.raises(SourceError, match=r"egress-ip-ranges\.csv:1: 'Britain' is not a country"):
        read_apple_relay(bad)
    bad.write_text("172.224.226.0/27\n")
    with pytest.raises(SourceError, match=r"egress-ip-ranges\.csv:1: expected 'prefix,country"):
        read_apple_relay(bad)


def test_private_relay_declared_region_decides_under_api_2024(tmp_path: Path) -> None:
    """A relay range declared in an unsupported region is blocked, one declared in a supported
    region passes — whatever the registry says about Apple's egress servers."""
    registry = write_mmdb(
        tmp_path / "registry.mmdb",
        [
            ("172.224.0.0/16", {"country": {"iso_code": "US"}}),
            # An egress server registered in Hong Kong (unsupported) for Japanese users.
            ("172.225.0.0/16", {"country": {"iso_code": "HK"}}),
        ],
    )
    relay = tmp_path / "egress-ip-ranges.csv"
    relay.write_text(RELAY_ROWS + "172.225.1.0/24,JP,JP-13,Tokyo,\n")
    snap_path = build_snapshot(
        tmp_path / "relay.rgsnap", [("registry", [registry]), ("apple-relay", [relay])]
    )
    policy = load_policy("api-2024")
    with Snapshot(snap_path) as snap:

        def decide(ip: str) -> tuple[Action, tuple[str, ...]]:
            origin = snap.lookup(ip)
            assert Flag.RELAY in origin.flags
            return policy.decide(origin, AFTER_ENFORCEMENT).action, origin.territories

        assert decide("172.224.226.1") == (Action.ALLOW, ("GB", "GB-ENG"))
        assert decide("172.224.226.33") == (Action.BLOCK, ("RU", "RU-MOW"))
        assert decide("172.224.226.65") == (Action.BLOCK, ("UA", "UA-43"))
        assert decide("172.224.226.97") == (Action.ALLOW, ("JP", "JP-13"))
        # The declared user location replaces the registry's HK for this egress range.
        assert decide("172.225.1.1") == (Action.ALLOW, ("JP", "JP-13"))
        origin = snap.lookup("172.225.1.1")
        assert {a.source for a in origin.sources} == {"registry", "apple-relay"}
        assert Flag.DISPUTED not in origin.flags
        # Outside the relay ranges the registry answers as before.
        hk = snap.lookup("172.225.2.1")
        assert hk.territories == ("HK",)
        assert policy.decide(hk, AFTER_ENFORCEMENT).action is Action.BLOCK


# --- CIDR lists ------------------------------------------------------------------------------------


def test_cidr_list(tmp_path: Path) -> None:
    path = _age(cidr_list(tmp_path), 5)
    ranges = read_cidr_list(path)
    assert ranges.data_date == "2026-10-01"  # from the comment, not the mtime
    got = [(v, s, val) for v, s, _, val in _values(ranges)]
    assert got == [
        (4, v4("91.10.0.0"), RangeValue(kind="vpn", provider="ExampleVPN")),
        (4, v4("45.80.0.0"), RangeValue(kind="proxy")),
        (
            6,
            int(ipaddress.IPv6Address("2001:db8:1::")),
            RangeValue(kind="hosting", provider="ExampleHost"),
        ),
    ]
    assert detect_format(path) == "cidr"
    plain = tmp_path / "vpn-ranges.txt"
    plain.write_text("10.0.0.0/8\n192.0.2.7\n")
    assert detect_format(plain) == "cidr"
    with pytest.raises(
        SourceError, match=r"vpn-ranges\.txt:1: no kind for '10\.0\.0\.0/8'.*vpn:list"
    ):
        read_source(plain)
    by_kind = read_source(plain, "cidr:vpn")
    assert {val.kind for *_, val in _values(by_kind)} == {"vpn"}
    assert len(by_kind) == 2
    _age(plain, 0)
    assert by_kind.data_date is not None


def test_cidr_list_errors(tmp_path: Path) -> None:
    bad = tmp_path / "list.txt"
    bad.write_text("10.0.0.0/8,vpn\n10.1.0.0/33,vpn\n")
    with pytest.raises(SourceError, match=r"list\.txt:2: '10\.1\.0\.0/33' is not an address"):
        read_cidr_list(bad)
    bad.write_text("10.0.0.0/8,teleport\n")
    with pytest.raises(SourceError, match=r"list\.txt:1: unknown kind 'teleport'"):
        read_cidr_list(bad)
    with pytest.raises(SourceError, match="unknown kind 'teleport'"):
        normalize_format("cidr:teleport")
    with pytest.raises(SourceError, match="unknown format 'bogus'"):
        normalize_format("bogus")
    assert normalize_format("VPN") == "cidr:vpn"
    assert normalize_format("aws") == "aws"


# --- hosting ASNs ----------------------------------------------------------------------------------


EXPECTED_HOSTING_ASNS = (
    *(16509, 14618, 15169, 396982, 8075, 14061, 16276, 24940, 63949, 20473),
    *(45102, 37963, 132203, 45090, 31898, 12876, 51167, 60781, 16265),
)


def test_packaged_hosting_asns() -> None:
    asns, date = packaged_hosting_asns()
    assert date is not None
    for asn in EXPECTED_HOSTING_ASNS:
        assert asn in asns, asn
    assert asns[16509] == "Amazon AWS" and asns[24940] == "Hetzner"


def test_hosting_asn_list_errors(tmp_path: Path) -> None:
    p = tmp_path / "asns.csv"
    p.write_text("asn,provider,note\nAS64500,Example Cloud,\nfoo,Bar,\n")
    with pytest.raises(SourceError, match=r"asns\.csv:3: 'foo' is not an AS number"):
        read_hosting_asns(p)
    p.write_text("asn,provider\n64500,\n")
    with pytest.raises(SourceError, match=r"asns\.csv:2: AS64500 has no provider"):
        read_hosting_asns(p)
    p.write_text("asn,provider\nAS64500,Example Cloud\n")
    assert read_hosting_asns(p)[0] == {64500: "Example Cloud"}
    assert detect_format(p) == "hosting-asns"


def _asn_csv(d: Path) -> Path:
    p = d / "asn.csv"
    p.write_text(
        "5.9.0.0,5.9.255.255,24940,Hetzner Online GmbH\n"
        "8.8.8.0,8.8.8.255,15169,GOOGLE\n"
        "9.9.9.0,9.9.9.255,19281,QUAD9-AS-1\n"
        "45.20.0.0,45.20.0.255,64500,Example Cloud\n"
    )
    return p


def test_hosting_from_asns(tmp_path: Path) -> None:
    asn_ranges = read_source(_asn_csv(tmp_path))
    asns, _ = packaged_hosting_asns()
    derived = hosting_from_asns([asn_ranges], asns)
    got = [(s, val) for _, s, _, val in _values(derived)]
    assert got == [
        (v4("5.9.0.0"), RangeValue(kind="hosting", provider="Hetzner")),
        (v4("8.8.8.0"), RangeValue(kind="hosting", provider="Google")),
    ]


def test_install_flags_hosting_asns_with_user_additions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    geo = write_mmdb(tmp_path / "geo.mmdb", [("5.9.0.0/16", {"country": {"iso_code": "DE"}})])
    extra_asns = tmp_path / "my-asns.csv"
    extra_asns.write_text("asn,provider,note\n64500,Example Cloud,our own list\n")
    result = install(
        home=home,
        extra=[
            parse_from(str(geo)),
            parse_from(str(_asn_csv(tmp_path))),
            parse_from(str(extra_asns)),
        ],
        defaults=(),
    )
    names = [s["name"] for s in result.header["sources"]]
    assert HOSTING_ASN_SOURCE in names and "my-asns" not in names
    hosting = next(s for s in result.header["sources"] if s["name"] == HOSTING_ASN_SOURCE)
    assert "my-asns" in hosting["attribution"]
    with Snapshot(home / "intel.rgsnap") as snap:
        o = snap.lookup("5.9.1.1")
        assert Flag.HOSTING in o.flags and o.asn == 24940 and o.country == "DE"
        assert any(a.provider == "Hetzner" for a in o.sources)
        assert Flag.HOSTING in snap.lookup("45.20.0.1").flags  # the user's addition
        assert Flag.HOSTING not in snap.lookup("9.9.9.9").flags  # Quad9 is not listed


# --- --from for each format --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "name", "fmt", "kind"),
    [
        ("aws:/data/ip-ranges.json", "ip-ranges", "aws", "path"),
        ("clouds=gcp:/data/cloud.json", "clouds", "gcp", "path"),
        (
            "azure:https://example.invalid/ServiceTags_Public_20261116.json",
            "servicetags-public-20261116",
            "azure",
            "url",
        ),
        ("tor-exits:/data/exits", "exits", "tor-exits", "path"),
        ("relay=apple-relay:/data/egress-ip-ranges.csv", "relay", "apple-relay", "path"),
        ("myvpn=vpn:/data/list.txt", "myvpn", "cidr:vpn", "path"),
        ("cidr:proxy:/data/proxies.txt", "proxies", "cidr:proxy", "path"),
        ("cidr:/data/anon.txt", "anon", "cidr", "path"),
        ("hosting-asns:/data/asns.csv", "asns", "hosting-asns", "path"),
        ("/data/GeoIP2-City.mmdb", "geoip2-city", None, "path"),
        ("https://example.invalid/x.csv", "x", None, "url"),
    ],
)
def test_parse_from_format_prefix(arg: str, name: str, fmt: str | None, kind: str) -> None:
    spec = parse_from(arg)
    assert (spec.name, spec.format, spec.kind) == (name, fmt, kind)
    assert ":" not in spec.location.removeprefix("https://")


def test_parse_from_format_errors() -> None:
    with pytest.raises(DataError, match="unknown format 'bogus'"):
        parse_from("bogus:/data/x.csv")
    with pytest.raises(DataError, match="unknown kind 'teleport'"):
        parse_from("cidr:teleport:/data/x.csv")
    with pytest.raises(DataError, match="give a path"):
        parse_from("aws:")
    with pytest.raises(DataError, match="--format 'nope'"):
        with_format(parse_from("/data/x.csv"), "nope")
    assert with_format(parse_from("/data/x.csv"), "hosting").format == "cidr:hosting"


def _files(d: Path) -> dict[str, Path]:
    plain = d / "proxies.txt"
    plain.write_text("45.80.4.0/22\n")
    return {
        "tor": tor_list(d),
        "aws": aws_json(d),
        "gcp": gcp_json(d),
        "azure": azure_json(d),
        "relay": relay_csv(d),
        "cidr": cidr_list(d),
        "proxies": plain,
    }


def test_install_each_format_by_detection_and_prefix(tmp_path: Path) -> None:
    files = _files(tmp_path)
    home = tmp_path / "home"
    result = install(
        home=home,
        extra=[
            parse_from(f"tor={files['tor']}"),
            parse_from(f"aws={files['aws']}"),
            parse_from(f"gcp={files['gcp']}"),
            parse_from(f"azure={files['azure']}"),
            parse_from(f"relay={files['relay']}"),
            parse_from(f"anon={files['cidr']}"),
            parse_from(f"proxies=proxy:{files['proxies']}"),
        ],
        defaults=(),
    )
    formats = {s["name"]: s["format"] for s in result.header["sources"]}
    assert formats == {
        "iana-special": "builtin",
        "tor": "tor-exits",
        "aws": "aws",
        "gcp": "gcp",
        "azure": "azure",
        "relay": "apple-relay",
        "anon": "cidr",
        "proxies": "cidr:proxy",
    }
    dates = {s["name"]: s["data_date"] for s in result.header["sources"]}
    assert dates["aws"] == "2026-11-20" and dates["azure"] == "2026-11-16"
    with Snapshot(home / "intel.rgsnap") as snap:
        assert Flag.TOR in snap.lookup("185.220.101.2").flags
        hk = snap.lookup("18.162.5.5")
        assert Flag.HOSTING in hk.flags and hk.territories == ("HK",)
        assert snap.lookup("34.96.130.1").territories == ("HK",)
        assert snap.lookup("20.2.3.4").territories == ("HK",)
        assert snap.lookup("172.224.226.33").territories == ("RU", "RU-MOW")
        assert Flag.VPN in snap.lookup("91.10.1.1").flags
        assert Flag.PROXY in snap.lookup("45.80.5.5").flags
        aws = next(a for a in snap.lookup("18.162.5.5").sources if a.source == "aws")
        assert (aws.region, aws.provider) == ("ap-east-1", "aws")


def test_cli_install_from_with_prefix_and_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path / "home"))
    files = _files(tmp_path)
    result = runner.invoke(
        app,
        [
            "data", "install", "--no-defaults", "--json",
            "--from", f"clouds=aws:{files['aws']}",
            "--from", f"myvpn=vpn:{files['proxies']}",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {s["name"]: s["format"] for s in out["sources"]} == {
        "clouds": "aws",
        "myvpn": "cidr:vpn",
    }
    result = runner.invoke(
        app,
        [
            "data",
            "install",
            "--no-defaults",
            "--from",
            str(files["proxies"]),
            "--format",
            "hosting",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["lookup", "45.80.5.5", "--json"])
    assert "hosting" in json.loads(result.stdout)[0]["flags"]
    result = runner.invoke(app, ["data", "install", "--from", "bogus:/x", "--no-defaults"])
    assert result.exit_code != 0 and "unknown format 'bogus'" in result.stderr


# --- staleness -----------------------------------------------------------------------------------------


def test_stale_warnings_per_kind() -> None:
    def source(name: str, fmt: str, days: int, limit: int | None = None) -> dict[str, object]:
        d: dict[str, object] = {
            "name": name,
            "format": fmt,
            "data_date": (TODAY - dt.timedelta(days=days)).isoformat(),
        }
        if limit is not None:
            d["stale_after_days"] = limit
        return d

    header = {
        "sources": [
            source("tor-old", "tor-exits", 3),
            source("tor-new", "tor-exits", 2),
            source("aws-old", "aws", 31),
            source("gcp-new", "gcp", 29),
            source("relay-old", "apple-relay", 91),
            source("vpn-new", "cidr:vpn", 80),
            source("geo", "mmdb", 170),
            source("geo-old", "mmdb", 181),
            source("custom", "csv", 11, limit=10),
        ]
    }
    warned = [w.split(":")[0] for w in stale_warnings(header, TODAY)]
    assert warned == ["tor-old", "aws-old", "relay-old", "geo-old", "custom"]
    assert "stale after 2 days" in stale_warnings(header, TODAY)[0]


def test_install_and_info_warn_about_stale_tor_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("REGIONGATE_HOME", str(home))
    exits = _age(tor_list(tmp_path), 4)
    result = install(home=home, extra=[parse_from(f"tor={exits}")], defaults=())
    assert any(
        w.startswith("tor: data from") and "stale after 2 days" in w for w in result.warnings
    )
    tor = next(s for s in result.header["sources"] if s["name"] == "tor")
    assert tor["stale_after_days"] == 2
    again = install(home=home, defaults=())
    assert not again.changed and any(w.startswith("tor:") for w in again.warnings)
    cli = runner.invoke(app, ["data", "info"])
    assert cli.exit_code == 0
    assert "tor: data from" in cli.stderr
    (tmp_path / "fresh").mkdir()
    fresh = tor_list(tmp_path / "fresh")  # the same content, downloaded now
    result = install(home=home, extra=[parse_from(f"tor={fresh}")], defaults=())
    assert not [w for w in result.warnings if w.startswith("tor:")]


def test_compile_keeps_the_source_answers(tmp_path: Path) -> None:
    """A relay answer without a country (iporigin's kind) changes no territory."""
    geo = write_mmdb(tmp_path / "g.mmdb", [("7.0.0.0/24", {"country": {"iso_code": "HK"}})])
    relay = tmp_path / "r.txt"
    relay.write_text("7.0.0.0/24,relay,Apple Private Relay\n")
    from regiongate.intel.compile import merge_ranges

    loaded = [
        (SourceInfo(name=n, format="test"), merge_ranges([read_source(p)]))
        for n, p in (("geo", geo), ("relay", relay))
    ]
    out = tmp_path / "s.rgsnap"
    compile_snapshot(loaded, out)
    with Snapshot(out) as snap:
        o = snap.lookup("7.0.0.1")
        assert o.territories == ("HK",) and Flag.RELAY in o.flags
