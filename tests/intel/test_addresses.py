from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regiongate.intel.addresses import SPECIAL_V4, SPECIAL_V6, parse_ip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0", (4, 0)),
        ("255.255.255.255", (4, 2**32 - 1)),
        ("8.8.8.8", (4, 0x08080808)),
        ("::", (6, 0)),
        ("::1", (6, 1)),
        ("2001:db8::1", (6, int(ipaddress.IPv6Address("2001:db8::1")))),
        ("::ffff:8.8.8.8", (4, 0x08080808)),
        ("::FFFF:0808:0808", (4, 0x08080808)),
        ("[2001:db8::1]", (6, int(ipaddress.IPv6Address("2001:db8::1")))),
        ("fe80::1%eth0", (6, int(ipaddress.IPv6Address("fe80::1")))),
        (" 8.8.8.8 ", (4, 0x08080808)),
        (ipaddress.IPv4Address("1.2.3.4"), (4, 0x01020304)),
        (ipaddress.IPv6Address("::ffff:1.2.3.4"), (4, 0x01020304)),
    ],
)
def test_parse_valid(text: object, expected: tuple[int, int]) -> None:
    assert parse_ip(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "1.2.3",
        "127.1",  # inet_aton shorthand: two parsers disagreeing is a bypass
        "0x7f.0.0.1",
        "010.0.0.1",  # octal-looking
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.4:80",
        "1.2.3.4\x00",
        "::g",
        "1::2::3",
        "[::1",
        "%eth0",
        "8.8.8.8/32",
        "１.２.３.４",  # fullwidth digits
        "a" * 100_000,
        None,
        42,
        b"8.8.8.8",
        ["8.8.8.8"],
    ],
)
def test_parse_invalid(text: object) -> None:
    assert parse_ip(text) is None


@given(st.text(max_size=64))
def test_parse_never_raises_and_agrees_with_ipaddress(text: str) -> None:
    parsed = parse_ip(text)
    if parsed is None:
        return
    version, value = parsed
    s = text.strip().strip("[]").split("%")[0]
    addr = ipaddress.ip_address(s)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    assert (addr.version, int(addr)) == (version, value)


@given(st.integers(0, 2**32 - 1))
def test_parse_roundtrip_v4(n: int) -> None:
    assert parse_ip(str(ipaddress.IPv4Address(n))) == (4, n)


@given(st.integers(0, 2**128 - 1))
def test_parse_roundtrip_v6(n: int) -> None:
    addr = ipaddress.IPv6Address(n)
    expected = (4, n & 0xFFFFFFFF) if addr.ipv4_mapped else (6, n)
    assert parse_ip(str(addr)) == expected


def test_special_ranges_are_sorted_and_only_nest() -> None:
    for table in (SPECIAL_V4, SPECIAL_V6):
        assert list(table) == sorted(table)
        for i, (first, last, desc) in enumerate(table):
            assert first <= last and desc
            for other_first, other_last, _ in table[i + 1 :]:
                overlap = other_first <= last and first <= other_last
                nested = first <= other_first and other_last <= last
                assert not overlap or nested


def test_special_ranges_cover_the_usual_suspects() -> None:
    def covered(ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        table = SPECIAL_V4 if a.version == 4 else SPECIAL_V6
        return any(f <= int(a) <= last for f, last, _ in table)

    for ip in [
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "2001:db8::1",
    ]:
        assert covered(ip), ip
    for ip in ["8.8.8.8", "100.63.255.255", "100.128.0.0", "172.32.0.0", "2a00::1", "2001:4860::1"]:
        assert not covered(ip), ip
