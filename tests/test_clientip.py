"""Client address resolution: spoofing tables, parsing, configuration and properties.

A small reference implementation built on ``ipaddress`` (slow, obvious) is the second opinion
for the property tests: the fast resolver must agree with it on generated chains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from regiongate.clientip import (
    CdnRule,
    ClientAddress,
    ClientIPConfig,
    ClientResolver,
)
from regiongate.errors import RegiongateError

TRUSTED = ("127.0.0.1/32", "10.0.0.0/8", "192.168.1.1", "::1/128", "fd00::/8")
CF_NETS = ("173.245.48.0/20", "2400:cb00::/32")
FASTLY_NETS = ("151.101.0.0/16",)


def xff(**kwargs: object) -> ClientResolver:
    return ClientResolver(ClientIPConfig(trusted_proxies=TRUSTED, **kwargs))  # type: ignore[arg-type]


def fwd(**kwargs: object) -> ClientResolver:
    return ClientResolver(
        ClientIPConfig(trusted_proxies=TRUSTED, header="forwarded", **kwargs)  # type: ignore[arg-type]
    )


def cdn() -> ClientResolver:
    return ClientResolver(
        ClientIPConfig(
            trusted_proxies=TRUSTED,
            cdn=(
                CdnRule(header="cf-connecting-ip", networks=CF_NETS),
                CdnRule(header="fastly-client-ip", networks=FASTLY_NETS),
            ),
        )
    )


def asgi(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode()) for n, v in pairs]


# --- X-Forwarded-For spoofing table -------------------------------------------------------------

# (peer, X-Forwarded-For lines, expected ip or None when invalid, expected source)
XFF_CASES: list[tuple[str, tuple[str, ...], str | None, str]] = [
    # The client wrote the left-most entry; the proxy appended the real address.
    ("10.0.0.1", ("6.6.6.6, 203.0.113.7",), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("1.1.1.1, 2.2.2.2, 203.0.113.7",), "203.0.113.7", "x-forwarded-for"),
    # A forged chain from an untrusted peer is ignored whole.
    ("203.0.113.9", ("10.0.0.2, 1.2.3.4",), "203.0.113.9", "peer"),
    ("203.0.113.9", ("127.0.0.1",), "203.0.113.9", "peer"),
    # Trusted hops are skipped right to left, the first untrusted one is the client.
    ("10.0.0.1", ("203.0.113.7, 10.0.0.2, 10.0.0.3",), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("9.9.9.9, 203.0.113.7, 10.0.0.2",), "203.0.113.7", "x-forwarded-for"),
    # Every entry trusted: the request started at the left-most host.
    ("10.0.0.1", ("10.0.0.9, 10.0.0.2",), "10.0.0.9", "x-forwarded-for"),
    # Garbage between trusted hops, or where the client should be: invalid, never skipped.
    ("10.0.0.1", ("203.0.113.7, garbage, 10.0.0.2",), None, "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7, , 10.0.0.2",), None, "x-forwarded-for"),
    ("10.0.0.1", ("unknown",), None, "x-forwarded-for"),
    ("10.0.0.1", ("127.1",), None, "x-forwarded-for"),  # inet_aton shorthand
    ("10.0.0.1", ("010.0.0.1",), None, "x-forwarded-for"),  # octal-looking
    ("10.0.0.1", ("203.0.113.7/32",), None, "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7:99999",), None, "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7:",), None, "x-forwarded-for"),
    ("10.0.0.1", ("[203.0.113.7]",), None, "x-forwarded-for"),
    ("10.0.0.1", ("1.2.3.4%eth0",), None, "x-forwarded-for"),
    ("10.0.0.1", ("2001:db8::1:80",), "2001:db8::1:80", "x-forwarded-for"),  # valid IPv6
    ("10.0.0.1", ("[2001:db8::1",), None, "x-forwarded-for"),
    ("10.0.0.1", ("１.２.３.４",), None, "x-forwarded-for"),  # fullwidth digits
    # A garbage entry left of the client is never reached.
    ("10.0.0.1", ("garbage, 203.0.113.7",), "203.0.113.7", "x-forwarded-for"),
    # Ports, brackets, zone ids, IPv4-mapped.
    ("10.0.0.1", ("203.0.113.7:8080",), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("2001:db8::1",), "2001:db8::1", "x-forwarded-for"),
    ("10.0.0.1", ("[2001:db8::1]",), "2001:db8::1", "x-forwarded-for"),
    ("10.0.0.1", ("[2001:DB8:0::1]:443",), "2001:db8::1", "x-forwarded-for"),
    ("10.0.0.1", ("fe80::1%eth0",), "fe80::1", "x-forwarded-for"),
    ("10.0.0.1", ("[fe80::1%25]:80",), "fe80::1", "x-forwarded-for"),
    ("10.0.0.1", ("::ffff:203.0.113.7",), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("[::ffff:cb00:7107]:1",), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7, ::ffff:10.0.0.2",), "203.0.113.7", "x-forwarded-for"),
    ("::ffff:10.0.0.1", ("203.0.113.7",), "203.0.113.7", "x-forwarded-for"),
    ("::1", ("203.0.113.7, fd00::5",), "203.0.113.7", "x-forwarded-for"),
    ("[::1]", ("203.0.113.7",), "203.0.113.7", "x-forwarded-for"),
    # Blanks around entries are fine; an absent or blank header leaves the peer.
    ("10.0.0.1", ("\t203.0.113.7 ,  10.0.0.2 ",), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", (), "10.0.0.1", "peer"),
    ("10.0.0.1", ("",), "10.0.0.1", "peer"),
    ("10.0.0.1", ("  ",), "10.0.0.1", "peer"),
    # Several header lines are one list, in order.
    ("10.0.0.1", ("6.6.6.6", "203.0.113.7", "10.0.0.2"), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7", "10.0.0.2, 10.0.0.3"), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("10.0.0.2", "203.0.113.7"), "203.0.113.7", "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7", ""), "203.0.113.7", "x-forwarded-for"),
    # Prefix-string trap: 192.168.1.1 (a /32) must not trust 192.168.1.10 or 192.168.1.100.
    ("10.0.0.1", ("203.0.113.7, 192.168.1.10",), "192.168.1.10", "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7, 192.168.1.100",), "192.168.1.100", "x-forwarded-for"),
    ("10.0.0.1", ("203.0.113.7, 192.168.1.1",), "203.0.113.7", "x-forwarded-for"),
    ("192.168.1.10", ("203.0.113.7",), "192.168.1.10", "peer"),
    ("100.0.0.1", ("203.0.113.7",), "100.0.0.1", "peer"),  # "10" is not a prefix of "100"
    # Malformed peers are invalid, not trusted and not guessed.
    ("10.0.0.1x", ("203.0.113.7",), None, "peer"),
    ("", ("203.0.113.7",), None, "peer"),
    ("127.1", ("203.0.113.7",), None, "peer"),
]


@pytest.mark.parametrize(("peer", "lines", "ip", "source"), XFF_CASES)
def test_xff_table(peer: str, lines: tuple[str, ...], ip: str | None, source: str) -> None:
    resolver = xff()
    headers = asgi(("host", "example.com"), *[("x-forwarded-for", line) for line in lines])
    for _ in range(3):  # again with every memo warm: the same answer
        got = resolver.resolve(peer, headers)
        assert (got.ip, got.source) == (ip, source), got
        assert (got.invalid is None) == (ip is not None), got
        if ip is not None:
            addr = ipaddress.ip_address(ip)
            assert (got.version, got.value) == (addr.version, int(addr))
        else:
            assert got.version is None and got.value is None


def test_hops_are_the_trusted_hops_nearest_first() -> None:
    got = xff().resolve_text("10.0.0.1", {"X-Forwarded-For": "6.6.6.6, 1.2.3.4, 10.0.0.3, ::1"})
    assert got == ClientAddress(
        ip="1.2.3.4",
        version=4,
        value=0x01020304,
        source="x-forwarded-for",
        hops=("10.0.0.1", "::1", "10.0.0.3"),
    )
    assert xff().resolve_text("8.8.8.8", {}).hops == ()
    assert xff().resolve_text("10.0.0.1", {}).hops == ()


def test_answer_is_a_real_frozen_client_address() -> None:
    resolver = xff()
    headers = asgi(("x-forwarded-for", "1.2.3.4, 10.0.0.2"))
    answers = [resolver.resolve("10.0.0.1", headers) for _ in range(3)]  # walk, then memo
    expected = ClientAddress(
        ip="1.2.3.4", version=4, value=0x01020304, source="x-forwarded-for", hops=answers[0].hops
    )
    for got in answers:
        assert type(got) is ClientAddress
        assert got == expected and hash(got) == hash(expected)
        with pytest.raises(AttributeError):
            got.ip = "6.6.6.6"  # type: ignore[misc]


def test_invalid_reason_names_the_entry_and_is_short() -> None:
    resolver = xff()
    got = resolver.resolve_text("10.0.0.1", {"x-forwarded-for": "1.2.3.4, evil\n" + "x" * 5000})
    assert got.ip is None and got.invalid is not None
    assert "evil\\n" in got.invalid and "\n" not in got.invalid
    assert len(got.invalid) < 200
    assert got.hops == ("10.0.0.1",)


@pytest.mark.parametrize("pad", [0, 1, 127, 128, 150, 2000])
def test_blanks_around_an_entry_do_not_count_and_memos_do_not_change_the_answer(pad: int) -> None:
    """However many blanks pad an entry, it is the entry they surround: read alike by the
    walk, and by the shortcut through a chain already proven trusted (which once answered a
    padded left-most entry the walk refused)."""
    blank = " " * pad
    for header, want in ((f"{blank}198.51.100.7{blank}, 10.0.0.2", "198.51.100.7"),
                         (f"3.3.3.3,{blank}2001:db8::7\t{blank}", "2001:db8::7"),
                         (f"{blank}[2001:db8::8]:443{blank}", "2001:db8::8")):  # fmt: skip
        cold = xff().resolve_text("10.0.0.1", {"x-forwarded-for": header})
        warm = xff()
        warm.resolve_text("10.0.0.1", {"x-forwarded-for": "1.1.1.1, 10.0.0.2"})  # proves the chain
        again = warm.resolve_text("10.0.0.1", {"x-forwarded-for": header})
        assert cold.ip == again.ip == want, (pad, header)
    # an entry is still limited, blanks aside
    long = xff().resolve_text("10.0.0.1", {"x-forwarded-for": "3.3.3.3, fe80::1%" + "e" * 200})
    assert long.ip is None and long.invalid is not None


def test_both_headers_present_only_the_configured_one_is_read() -> None:
    headers = asgi(("forwarded", "for=198.51.100.1"), ("x-forwarded-for", "203.0.113.7, 10.0.0.2"))
    assert xff().resolve("10.0.0.1", headers).ip == "203.0.113.7"
    assert fwd().resolve("10.0.0.1", headers).ip == "198.51.100.1"
    assert fwd().resolve("10.0.0.1", asgi(("x-forwarded-for", "1.2.3.4"))).source == "peer"
    assert xff().resolve("10.0.0.1", asgi(("forwarded", "for=1.2.3.4"))).source == "peer"


def test_header_names_are_matched_as_asgi_gives_them() -> None:
    # ASGI lowercases names; resolve_text lowercases for its callers.
    assert xff().resolve("10.0.0.1", [(b"X-Forwarded-For", b"1.2.3.4")]).source == "peer"
    assert xff().resolve_text("10.0.0.1", [("X-Forwarded-For", "1.2.3.4")]).ip == "1.2.3.4"


# --- size and hop limits ------------------------------------------------------------------------


def test_huge_header_costs_only_the_hop_limit() -> None:
    forged = ", ".join(f"6.6.{i % 256}.{i // 256 % 256}" for i in range(10_000))
    value = forged + ", 203.0.113.7, 10.0.0.2"
    assert len(value) > 100_000
    got = xff().resolve_text("10.0.0.1", {"x-forwarded-for": value})
    assert got.ip == "203.0.113.7"
    # A huge header of trusted entries is too long a chain, not a long walk.
    got = xff().resolve_text("10.0.0.1", {"x-forwarded-for": ", ".join(["10.0.0.2"] * 20_000)})
    assert got.ip is None and got.invalid == "forwarding chain longer than 16 hops"
    got = xff().resolve_text("10.0.0.1", {"x-forwarded-for": "9" * 200_000})
    assert got.ip is None and got.invalid is not None and len(got.invalid) < 200


@pytest.mark.parametrize(
    ("limit", "trusted_entries", "client_first", "valid"),
    [
        (1, 1, True, True),  # client, one trusted proxy
        (1, 2, True, False),  # two trusted proxies would have to be walked
        (1, 2, False, True),  # two entries, both trusted: the left-most is the client
        (1, 3, False, False),
        (3, 3, True, True),
        (3, 4, True, False),
        (3, 4, False, True),
        (3, 5, False, False),
        (16, 16, True, True),
        (16, 17, True, False),
    ],
)
def test_hop_limit(limit: int, trusted_entries: int, client_first: bool, valid: bool) -> None:
    entries = [f"10.0.1.{i}" for i in range(trusted_entries)]
    if client_first:
        entries.insert(0, "203.0.113.7")
    cases = [
        (xff(hop_limit=limit), "x-forwarded-for", ", ".join(entries)),
        (fwd(hop_limit=limit), "forwarded", ", ".join(f"for={e}" for e in entries)),
    ]
    for resolver, header, value in cases:
        for _ in range(2):
            got = resolver.resolve_text("10.0.0.1", {header: value})
            if valid:
                assert got.ip == entries[0] and got.invalid is None, got
                assert len(got.hops) == 1 + len(entries) - 1
            else:
                assert got.ip is None
                assert got.invalid == f"forwarding chain longer than {limit} hops"


# --- Forwarded (RFC 7239) -----------------------------------------------------------------------

FORWARDED_CASES: list[tuple[str, str | None]] = [
    ("for=203.0.113.7", "203.0.113.7"),
    ("for=203.0.113.7:8080", "203.0.113.7"),
    ('for="203.0.113.7:8080"', "203.0.113.7"),
    ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
    ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
    ('for="[::ffff:203.0.113.7]"', "203.0.113.7"),
    ('for="203.0.113.7:_abc"', "203.0.113.7"),  # obfuscated port, real address
    ("For=203.0.113.7", "203.0.113.7"),
    ("FOR=203.0.113.7;PROTO=https", "203.0.113.7"),
    ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
    ("proto=https;for=203.0.113.7;host=example.com", "203.0.113.7"),
    ("for=6.6.6.6, for=203.0.113.7", "203.0.113.7"),
    ("for=203.0.113.7, for=10.0.0.2;proto=https, For=127.0.0.1", "203.0.113.7"),
    ('for=203.0.113.7;ext="a, b, for=1.2.3.4", for=10.0.0.2', "203.0.113.7"),
    ('for=203.0.113.7;ext="quote \\" inside"', "203.0.113.7"),
    ("for=203.0.113.7 ; proto=https", "203.0.113.7"),
    ("for=10.0.0.9, for=10.0.0.2", "10.0.0.9"),  # all trusted: the left-most
    # Not a usable client.
    ("for=unknown", None),
    ("for=UNKNOWN, for=10.0.0.2", None),
    ("for=_hidden", None),
    ("for=_hidden, for=10.0.0.2", None),
    ("for=203.0.113.7, for=_hidden", None),
    ("proto=https", None),  # no for=
    ("for=203.0.113.7;for=6.6.6.6", None),  # repeated parameter
    ("for=2001:db8::1", None),  # IPv6 must be bracketed
    ("for=[2001:db8::1]:80", "2001:db8::1"),  # should be quoted; accepted bare
    ('for="[2001:db8::1"', None),
    ("for=203.0.113.7 proto=https", None),
    ('for="203.0.113.7', None),  # unterminated quote
    ("for=203.0.113.7, garbage, for=10.0.0.2", None),
    ("for=203.0.113.7,, for=10.0.0.2", None),
    ("for=127.1", None),
    ('for="\x00203.0.113.7"', None),
    # A forged, unbalanced quote left of the real client does not reach it.
    ('x="oops, for=203.0.113.7', "203.0.113.7"),
]


@pytest.mark.parametrize(("value", "ip"), FORWARDED_CASES)
def test_forwarded_table(value: str, ip: str | None) -> None:
    resolver = fwd()
    for _ in range(2):
        got = resolver.resolve_text("10.0.0.1", {"Forwarded": value})
        assert got.ip == ip, got
        assert got.source == "forwarded"
        assert (got.invalid is None) == (ip is not None)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("for=unknown", "for=unknown"),
        ("for=_hidden", "obfuscated identifier '_hidden'"),
        ("by=10.0.0.1", "Forwarded element without for=: 'by=10.0.0.1'"),
    ],
)
def test_forwarded_reasons(value: str, reason: str) -> None:
    assert fwd().resolve_text("10.0.0.1", {"forwarded": value}).invalid == reason


def test_forwarded_from_untrusted_peer_is_ignored() -> None:
    got = fwd().resolve_text("203.0.113.9", {"forwarded": "for=10.0.0.2"})
    assert (got.ip, got.source) == ("203.0.113.9", "peer")


def test_forwarded_several_lines() -> None:
    got = fwd().resolve_text(
        "10.0.0.1", [("forwarded", "for=6.6.6.6"), ("forwarded", 'for=203.0.113.7, for="[::1]"')]
    )
    assert got.ip == "203.0.113.7"


# --- CDN headers --------------------------------------------------------------------------------

CF_EDGE = "173.245.48.5"
FASTLY_EDGE = "151.101.1.1"

# (peer, headers, expected ip or None, expected source)
CDN_CASES: list[tuple[str, tuple[tuple[str, str], ...], str | None, str]] = [
    # Behind our proxy, the edge is the first untrusted hop: its header names the client.
    (
        "10.0.0.1",
        (("x-forwarded-for", f"6.6.6.6, {CF_EDGE}"), ("cf-connecting-ip", "203.0.113.7")),
        "203.0.113.7",
        "cdn:cf-connecting-ip",
    ),
    (
        "10.0.0.1",
        (("x-forwarded-for", FASTLY_EDGE), ("fastly-client-ip", "2001:db8::7")),
        "2001:db8::7",
        "cdn:fastly-client-ip",
    ),
    # Only the rule whose ranges hold the edge is read.
    (
        "10.0.0.1",
        (("x-forwarded-for", FASTLY_EDGE), ("cf-connecting-ip", "203.0.113.7")),
        FASTLY_EDGE,
        "x-forwarded-for",
    ),
    # A CDN header from anyone else is ignored: the client itself, a trusted proxy.
    (
        "10.0.0.1",
        (("x-forwarded-for", "6.6.6.6"), ("cf-connecting-ip", "203.0.113.7")),
        "6.6.6.6",
        "x-forwarded-for",
    ),
    ("10.0.0.1", (("cf-connecting-ip", "203.0.113.7"),), "10.0.0.1", "peer"),
    ("6.6.6.6", (("cf-connecting-ip", "203.0.113.7"),), "6.6.6.6", "peer"),
    # An untrusted peer is the answer even when it is a CDN edge: headers are all ignored.
    (CF_EDGE, (("cf-connecting-ip", "203.0.113.7"),), CF_EDGE, "peer"),
    # The edge without its header is the client.
    ("10.0.0.1", (("x-forwarded-for", CF_EDGE),), CF_EDGE, "x-forwarded-for"),
    # Present but malformed or repeated: invalid.
    (
        "10.0.0.1",
        (("x-forwarded-for", CF_EDGE), ("cf-connecting-ip", "203.0.113.7, 6.6.6.6")),
        None,
        "cdn:cf-connecting-ip",
    ),
    (
        "10.0.0.1",
        (("x-forwarded-for", CF_EDGE), ("cf-connecting-ip", "")),
        None,
        "cdn:cf-connecting-ip",
    ),
    (
        "10.0.0.1",
        (
            ("x-forwarded-for", CF_EDGE),
            ("cf-connecting-ip", "203.0.113.7"),
            ("cf-connecting-ip", "203.0.113.7"),
        ),
        None,
        "cdn:cf-connecting-ip",
    ),
]


@pytest.mark.parametrize(("peer", "headers", "ip", "source"), CDN_CASES)
def test_cdn_table(
    peer: str, headers: tuple[tuple[str, str], ...], ip: str | None, source: str
) -> None:
    resolver = cdn()
    for _ in range(2):
        got = resolver.resolve(peer, asgi(*headers))
        assert (got.ip, got.source) == (ip, source), got
        assert (got.invalid is None) == (ip is not None)


def test_cdn_edge_is_recorded_as_a_hop() -> None:
    got = cdn().resolve(
        "10.0.0.1",
        asgi(("x-forwarded-for", f"{CF_EDGE}, 10.0.0.2"), ("cf-connecting-ip", "203.0.113.7")),
    )
    assert got.hops == ("10.0.0.1", "10.0.0.2", CF_EDGE)


def test_cdn_edge_at_a_trusted_peer_without_forwarding_header() -> None:
    # A CDN that connects directly must be listed as trusted for its header to be read.
    resolver = ClientResolver(
        ClientIPConfig(
            trusted_proxies=CF_NETS,
            cdn=(CdnRule(header="cf-connecting-ip", networks=CF_NETS),),
        )
    )
    got = resolver.resolve(CF_EDGE, asgi(("cf-connecting-ip", "203.0.113.7")))
    assert (got.ip, got.source) == ("203.0.113.7", "cdn:cf-connecting-ip")


# --- peers --------------------------------------------------------------------------------------


def test_unix_socket_peer() -> None:
    strict = xff()
    assert strict.resolve(None, asgi(("x-forwarded-for", "203.0.113.7"))).invalid == (
        "no peer address"
    )
    assert not strict.is_trusted(None)
    lenient = xff(trust_unix_socket=True)
    assert lenient.is_trusted(None)
    got = lenient.resolve(None, asgi(("x-forwarded-for", "203.0.113.7, 10.0.0.2")))
    assert (got.ip, got.hops) == ("203.0.113.7", ("10.0.0.2",))
    got = lenient.resolve(None, [])
    assert got.ip is None and got.invalid is not None and "unix socket" in got.invalid


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("10.0.0.1", True),
        ("10.255.255.255", True),
        ("11.0.0.0", False),
        ("127.0.0.1", True),
        ("127.0.0.10", False),
        ("127.0.0.2", False),
        ("192.168.1.1", True),
        ("192.168.1.10", False),
        ("192.168.1.100", False),
        ("192.168.1.1:443", True),
        ("::ffff:10.1.2.3", True),
        ("::1", True),
        ("::2", False),
        ("[::1]:80", True),
        ("fd12::1", True),
        ("fe00::1", False),
        ("10.0.0.1x", False),
        ("", False),
    ],
)
def test_is_trusted(address: str, trusted: bool) -> None:
    assert xff().is_trusted(address) is trusted


def test_mapped_and_single_address_networks() -> None:
    resolver = ClientResolver(
        ClientIPConfig(trusted_proxies=("::ffff:10.0.0.0/104", " 172.16.0.0/12 ", "2001:db8::5"))
    )
    assert resolver.is_trusted("10.9.9.9")
    assert resolver.is_trusted("172.31.0.1") and not resolver.is_trusted("172.32.0.1")
    assert resolver.is_trusted("2001:db8::5") and not resolver.is_trusted("2001:db8::6")
    # ::/0 is IPv6 only: trusting every IPv4 client must be written as 0.0.0.0/0.
    everyone6 = ClientResolver(ClientIPConfig(trusted_proxies=("::/0",)))
    assert everyone6.is_trusted("2001:db8::1") and not everyone6.is_trusted("1.2.3.4")


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (ClientIPConfig(trusted_proxies=("10.0.0.0/33",)), "10.0.0.0/33"),
        (ClientIPConfig(trusted_proxies=("10.0.0.1/8",)), "10.0.0.1/8"),
        (ClientIPConfig(trusted_proxies=("10.0.0/8",)), "10.0.0/8"),
        (ClientIPConfig(trusted_proxies=("010.0.0.0/8",)), "010.0.0.0/8"),
        (ClientIPConfig(trusted_proxies=("10.0.0.0/",)), "10.0.0.0/"),
        (ClientIPConfig(trusted_proxies=("10.0.0.0/-1",)), "10.0.0.0/-1"),
        (ClientIPConfig(trusted_proxies=("10.0.0.0/８",)), "10.0.0.0/８"),
        (ClientIPConfig(trusted_proxies=("fe80::1%eth0",)), "fe80::1%eth0"),
        (ClientIPConfig(trusted_proxies=("2001:db8::/129",)), "2001:db8::/129"),
        (ClientIPConfig(trusted_proxies=("localhost",)), "localhost"),
        (ClientIPConfig(trusted_proxies=("",)), "''"),
        (ClientIPConfig(trusted_proxies="10.0.0.0/8"), "10.0.0.0/8"),  # type: ignore[arg-type]
        (ClientIPConfig(header="x-real-ip"), "x-real-ip"),
        (ClientIPConfig(header="x-forwarded-for, forwarded"), "x-forwarded-for, forwarded"),
        (ClientIPConfig(hop_limit=0), "0"),
        (ClientIPConfig(hop_limit=-3), "-3"),
        (ClientIPConfig(hop_limit=10**9), str(10**9)),
        (ClientIPConfig(hop_limit=True), "True"),
        (ClientIPConfig(hop_limit="16"), "'16'"),  # type: ignore[arg-type]
        (ClientIPConfig(cdn=(CdnRule(header="bad header", networks=CF_NETS),)), "bad header"),
        (ClientIPConfig(cdn=(CdnRule(header="x-forwarded-for", networks=CF_NETS),)), "x-forw"),
        (ClientIPConfig(cdn=(CdnRule(header="cf-connecting-ip", networks=()),)), "cf-conn"),
        (ClientIPConfig(cdn=(CdnRule(header="cf-connecting-ip", networks=("x",)),)), "'x'"),
    ],
)
def test_bad_config_raises_naming_the_value(config: ClientIPConfig, named: str) -> None:
    with pytest.raises(RegiongateError) as info:
        ClientResolver(config)
    assert named in str(info.value)


def test_config_is_normalised() -> None:
    resolver = ClientResolver(ClientIPConfig(header=" Forwarded ", trusted_proxies=["10.0.0.0/8"]))  # type: ignore[arg-type]
    assert resolver.resolve_text("10.0.0.1", {"forwarded": "for=1.2.3.4"}).ip == "1.2.3.4"


# --- never raises -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "headers"),
    [
        (b"10.0.0.1", []),
        (42, []),
        (["10.0.0.1"], []),
        ("10.0.0.1", None),
        ("10.0.0.1", [(b"x-forwarded-for",)]),
        ("10.0.0.1", [(b"x-forwarded-for", "1.2.3.4")]),  # str where bytes belong
        ("10.0.0.1", [(b"x-forwarded-for", b"1.2.3.4\x00")]),
        ("10.0.0.1", [(b"x-forwarded-for", b"\xff\xfe")]),
        ("10.0.0.1\x00", []),
        ("\udcff", []),
    ],
)
def test_resolve_never_raises_on_odd_inputs(peer: object, headers: object) -> None:
    got = xff().resolve(peer, headers)  # type: ignore[arg-type]
    assert isinstance(got, ClientAddress)
    assert got.ip is None or got.source == "peer"


def test_resolve_text_never_raises_on_odd_inputs() -> None:
    assert xff().resolve_text("10.0.0.1", {"x-forwarded-for": "1.2.3.4\u2603"}).ip is None
    assert xff().resolve_text("10.0.0.1", 42).ip is None  # type: ignore[arg-type]
    assert xff().resolve_text("10.0.0.1", [("a",)]).ip is None  # type: ignore[list-item]


# --- properties ---------------------------------------------------------------------------------

header_bytes = st.binary(max_size=200) | st.sampled_from(
    [b"x-forwarded-for", b"forwarded", b"cf-connecting-ip", b"fastly-client-ip"]
)
headers_strategy = st.lists(st.tuples(header_bytes, st.binary(max_size=300)), max_size=8)
untrusted_v4 = st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))
untrusted_v6 = st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v)))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(peer=untrusted_v4 | untrusted_v6, headers=headers_strategy)
def test_untrusted_peer_is_always_the_answer(peer: str, headers: list[tuple[bytes, bytes]]) -> None:
    resolvers = [cdn(), fwd()]
    assume(not resolvers[0].is_trusted(peer))
    addr = ipaddress.ip_address(peer)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for resolver in resolvers:
        got = resolver.resolve(peer, headers)
        assert got == ClientAddress(
            ip=str(addr), version=addr.version, value=int(addr), source="peer", hops=()
        )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    peer=st.none() | st.text(max_size=50) | st.sampled_from(["10.0.0.1", "::1", "127.0.0.1"]),
    headers=headers_strategy,
)
def test_never_raises(peer: str | None, headers: list[tuple[bytes, bytes]]) -> None:
    for resolver in (cdn(), fwd(trust_unix_socket=True), xff(hop_limit=1)):
        got = resolver.resolve(peer, headers)
        assert isinstance(got, ClientAddress)
        assert (got.ip is None) == (got.invalid is not None)
        text_headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        assert isinstance(resolver.resolve_text(peer, text_headers), ClientAddress)


# The reference: obvious code on ipaddress objects, the same rules, no memo, no speed.
REF_NETS = [ipaddress.ip_network(c) for c in TRUSTED]


def ref_parse(entry: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    entry = entry.strip(" \t")
    host = entry
    if entry.startswith("[") and "]" in entry:
        host, _, rest = entry[1:].partition("]")
        if rest and not (rest[0] == ":" and rest[1:].isdigit() and int(rest[1:]) < 65536):
            return None
        if "." in host and ":" not in host:
            return None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
        if not (port.isdigit() and int(port) < 65536):
            return None
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def ref_trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(addr in net for net in REF_NETS)


def reference(peer: str, entries: Sequence[str], limit: int) -> tuple[str | None, str]:
    """(client ip or None when invalid, source)."""
    addr = ref_parse(peer)
    if addr is None:
        return None, "peer"
    if not ref_trusted(addr) or not ",".join(entries).strip(" \t"):
        return str(addr), "peer"
    for walked, entry in enumerate(reversed(entries)):
        hop = ref_parse(entry)
        if hop is None:
            return None, "x-forwarded-for"
        if not ref_trusted(hop) or walked == len(entries) - 1:
            return str(hop), "x-forwarded-for"
        if walked == limit:  # `limit` trusted hops behind, and this one is trusted too
            return None, "x-forwarded-for"
    raise AssertionError("unreachable")


entry_strategy = st.one_of(
    st.sampled_from(
        ["10.0.0.2", "10.200.3.4", " 127.0.0.1", "192.168.1.1", "192.168.1.10", "::1", "fd00::9"]
    ),
    st.sampled_from(["[::1]:80", "10.0.0.3:8080", "::ffff:10.0.0.7", "[fd00::1]"]),
    untrusted_v4,
    untrusted_v6,
    untrusted_v4.map(lambda a: f"{a}:443"),
    untrusted_v6.map(lambda a: f"[{a}]:443"),
    st.sampled_from(["", " ", "unknown", "127.1", "1.2.3.4:", "[::1", "_x", "1.2.3.4.5"]),
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    peer=st.sampled_from(["10.0.0.1", "::1", "192.168.1.1", "203.0.113.9", "bad"]),
    chains=st.lists(st.lists(entry_strategy, min_size=1, max_size=7), min_size=1, max_size=4),
    limit=st.integers(1, 5),
)
def test_agrees_with_reference(peer: str, chains: list[list[str]], limit: int) -> None:
    # The same resolver answers several requests so that its memos are exercised.
    resolver = xff(hop_limit=limit)
    for entries in chains * 2:
        got = resolver.resolve(peer, asgi(("x-forwarded-for", ", ".join(entries))))
        assert (got.ip, got.source) == reference(peer, entries, limit), (entries, got)


@pytest.mark.parametrize("limit", [1, 2, 16])
@pytest.mark.parametrize("forged", [0, 1, 2, 3, 5000])
@pytest.mark.parametrize("trusted", [0, 1, 2, 3, 17])
def test_long_headers_are_cut_without_changing_the_answer(
    limit: int, forged: int, trusted: int
) -> None:
    # Past 4 KB only the tail of the header is decoded: every answer must be the reference's.
    entries = [f"6.6.6.{i % 250}" for i in range(forged)] + ["203.0.113.7"]
    entries += [f"10.0.2.{i}" for i in range(trusted)]
    resolver = xff(hop_limit=limit)
    got = resolver.resolve("10.0.0.1", asgi(("x-forwarded-for", ", ".join(entries))))
    assert (got.ip, got.source) == reference("10.0.0.1", entries, limit)
    entries[0] = "garbage"
    got = resolver.resolve("10.0.0.1", asgi(("x-forwarded-for", ", ".join(entries))))
    assert (got.ip, got.source) == reference("10.0.0.1", entries, limit)
