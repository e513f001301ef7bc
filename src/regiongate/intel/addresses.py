"""Address parsing and the IANA special-purpose ranges.

Parsing is strict: only the canonical textual forms are addresses. ``inet_aton``-style
shorthands ("127.1", "0x7f.1", "010.0.0.1") are refused, because two parsers that disagree on
what an address means are a classic way to slip past an access check.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Final

__all__ = [
    "MAPPED_V4_PREFIX",
    "SPECIAL_V4",
    "SPECIAL_V6",
    "V4_MAX",
    "V6_MAX",
    "parse_ip",
]

V4_MAX: Final = (1 << 32) - 1
V6_MAX: Final = (1 << 128) - 1
# ::ffff:0:0/96, IPv4-mapped IPv6 addresses: resolved as the IPv4 address they carry.
MAPPED_V4_PREFIX: Final = 0xFFFF << 32

_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_MAX_TEXT = 256


def parse_ip(text: object) -> tuple[int, int] | None:
    """Parse an address into ``(version, integer)``; ``None`` when it is not an address.

    Accepts canonical IPv4 dotted quads, IPv6 text (with an optional zone id, which is
    dropped, and optional surrounding brackets) and ``ipaddress`` objects. IPv4-mapped IPv6
    addresses come back as IPv4. Never raises.
    """
    if isinstance(text, str):
        try:
            return 4, int.from_bytes(_inet_pton(_AF_INET, text), "big")
        except (OSError, ValueError):
            pass
        if len(text) > _MAX_TEXT:
            return None
        s = text.strip()
        if s.startswith("[") and s.endswith("]"):
            s = s[1:-1]
        zone = s.find("%")
        if zone > 0:
            s = s[:zone]
        try:
            return 4, int.from_bytes(_inet_pton(_AF_INET, s), "big")
        except (OSError, ValueError):
            pass
        try:
            value = int.from_bytes(_inet_pton(_AF_INET6, s), "big")
        except (OSError, ValueError):
            return None
    elif isinstance(text, ipaddress.IPv4Address):
        return 4, int(text)
    elif isinstance(text, ipaddress.IPv6Address):
        value = int(text)
    else:
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & V4_MAX
    return 6, value


def _net(cidr: str) -> tuple[int, int]:
    network = ipaddress.ip_network(cidr)
    return int(network.network_address), int(network.broadcast_address)


# IANA IPv4 and IPv6 special-purpose address registries (RFC 6890 and successors). None of
# these is a client on the public Internet; the policy decides what to do with them.
_SPECIAL_V4_TEXT: Final = (
    ("0.0.0.0/8", "this network (RFC 791)"),
    ("10.0.0.0/8", "private use (RFC 1918)"),
    ("100.64.0.0/10", "shared address space, CGNAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link local (RFC 3927)"),
    ("172.16.0.0/12", "private use (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private use (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved, limited broadcast (RFC 1112, RFC 919)"),
)
_SPECIAL_V6_TEXT: Final = (
    ("::/8", "reserved by IETF: unspecified, loopback, IPv4-compatible (RFC 4291)"),
    ("64:ff9b::/96", "IPv4/IPv6 translation, NAT64 (RFC 6052)"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("2001:10::/28", "deprecated ORCHID (RFC 4843)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "segment routing SIDs (RFC 9602)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link local (RFC 4291)"),
    ("fec0::/10", "deprecated site local (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
)
# (first, last, description), sorted, as integers.
SPECIAL_V4: Final = tuple(sorted((*_net(c), d) for c, d in _SPECIAL_V4_TEXT))
SPECIAL_V6: Final = tuple(sorted((*_net(c), d) for c, d in _SPECIAL_V6_TEXT))
