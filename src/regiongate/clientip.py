"""The request's real client address, found without trusting what the client wrote.

Trust starts at the socket peer. Forwarding headers are read only when the peer is inside the
configured trusted networks, and then walked right to left: every entry a trusted proxy
appended is checked, and the first entry that is *not* a trusted proxy is the client. The
left-most entries of ``X-Forwarded-For`` are written by whoever sent the request, so they are
never believed on their own (the anti-example is "take the left-most entry").

Threat model in short:

- An untrusted peer's forwarding and CDN headers are ignored entirely: the peer is the client.
- A malformed entry met during the walk makes the answer *invalid*: it is never skipped, since
  skipping it would let a forged entry to its left be believed.
- Trusted networks are matched as networks on integers, never as string prefixes.
- Work is bounded by ``hop_limit`` whatever the size of the header; a longer chain of trusted
  hops is invalid.
- Addresses are parsed strictly (``127.1`` and ``010.0.0.1`` are not addresses), ports,
  brackets and IPv6 zone ids are dropped, and ``::ffff:a.b.c.d`` is the IPv4 address it carries.
- ``resolve`` never raises: anything it cannot read is an invalid answer, not an exception.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from regiongate.errors import RegiongateError

__all__ = ["CdnRule", "ClientAddress", "ClientIPConfig", "ClientResolver"]

XFF: Final = "x-forwarded-for"
FORWARDED: Final = "forwarded"
MAX_HOP_LIMIT: Final = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CdnRule:
    """A CDN whose edges put the client address in ``header``; believed only from ``networks``."""

    header: str  # e.g. "cf-connecting-ip", "true-client-ip", "fastly-client-ip"
    networks: tuple[str, ...]  # CIDRs of that CDN's edge addresses


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientIPConfig:
    """Where the client address may be read from; compiled once by :class:`ClientResolver`."""

    # CIDRs ("10.0.0.0/8", "::1/128"); a bare address is a /32 or /128.
    trusted_proxies: tuple[str, ...] = ()
    # "x-forwarded-for" or "forwarded" (RFC 7239): exactly one is read, never both.
    header: str = XFF
    # At most this many trusted entries of the header are walked.
    hop_limit: int = 16
    # A peer of None (unix socket) counts as trusted.
    trust_unix_socket: bool = False
    cdn: tuple[CdnRule, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAddress:
    """The resolved client: its address, where it was read from and the trusted hops passed."""

    ip: str | None  # normalised text; IPv4-mapped IPv6 comes back as IPv4; None when invalid
    version: int | None
    value: int | None  # the address as an integer
    source: str  # "peer", "x-forwarded-for", "forwarded" or "cdn:<header>"
    hops: tuple[str, ...]  # the trusted hops walked, nearest (the peer) first
    invalid: str | None = None  # why there is no valid client address


# --- address parsing ---------------------------------------------------------------------------

# (text, version, integer); version 0 is the unix-socket peer, which has no address.
_Hop = tuple[str, int, int]
_K = TypeVar("_K")
_V = TypeVar("_V")
_Nets = tuple[tuple[int, frozenset[int]], ...]  # (shift, network numbers) per prefix length

_pton = socket.inet_pton
_ntop = socket.inet_ntop
_AF_INET: Final = socket.AF_INET
_AF_INET6: Final = socket.AF_INET6
_from_bytes = int.from_bytes
_V4_MAX: Final = (1 << 32) - 1
_MAPPED: Final = 0xFFFF  # value >> 32 of ::ffff:0:0/96
_MAX_ENTRY: Final = 128  # longer than any address with brackets, zone id and port
_MAX_ELEMENT: Final = 512  # a Forwarded element (for=, by=, proto=, host=)
_MAX_SHOWN: Final = 60
_BIG_HEADER: Final = 4096  # bytes; an X-Forwarded-For longer than this is cut before decoding
_MAX_CHAIN: Final = 256  # longest run of proxy entries remembered as one string
_PEER_MEMO_SIZE: Final = 256
_HOP_MEMO_SIZE: Final = 1024
_CHAIN_MEMO_SIZE: Final = 64  # per peer
_UNIX_PEER: Final[_Hop] = ("", 0, 0)

_ZONE = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_OBF = re.compile(r"_[A-Za-z0-9._-]+")
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# qdtext and quoted-pair of RFC 9110, obs-text included; control characters are refused.
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 7239 wants a node with ":" or "[" quoted; proxies that leave it bare are common and the
# node is parsed strictly either way, so a bare value may hold them too.
_BARE = r"[!#$%&'*+.^_`|~0-9A-Za-z:\[\]-]+"
_SIMPLE_FOR = re.compile(_BARE)
_PAIR = re.compile(rf"[ \t]*(?:({_TCHARS})=({_BARE}|{_QUOTED}))?[ \t]*(?:;|\Z)")
_QUOTED_PAIR = re.compile(r"\\(.)")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


def _show(text: str) -> str:
    """``text`` quoted for a reason string: escaped, and cut short when long."""
    if len(text) > _MAX_SHOWN:
        return repr(text[:_MAX_SHOWN]) + f"... ({len(text)} characters)"
    return repr(text)


def _text(version: int, value: int) -> str:
    """Canonical text, the same as ``str(ipaddress.ip_address(...))`` gives."""
    if version == 4:
        return _ntop(_AF_INET, value.to_bytes(4, "big"))
    if value >> 32 == 0:
        # inet_ntop writes ::/96 as "::1.2.3.4" (deprecated IPv4-compatible); RFC 5952 does not.
        return str(ipaddress.IPv6Address(value))
    return _ntop(_AF_INET6, value.to_bytes(16, "big"))


def _port_ok(port: str, *, obfuscated: bool = False) -> bool:
    if port.isascii() and port.isdigit():
        return len(port) <= 5 and int(port) <= 65535
    return obfuscated and _OBF.fullmatch(port) is not None


def _v4(text: str) -> _Hop | None:
    try:
        value = _from_bytes(_pton(_AF_INET, text), "big")
    except (OSError, ValueError):
        return None
    return text, 4, value


def _v6(text: str) -> _Hop | None:
    """IPv6 text with an optional zone id (dropped); IPv4-mapped comes back as IPv4."""
    zone = text.find("%")
    if zone >= 0:
        if _ZONE.fullmatch(text, zone + 1) is None:
            return None
        text = text[:zone]
    try:
        value = _from_bytes(_pton(_AF_INET6, text), "big")
    except (OSError, ValueError):
        return None
    if value >> 32 == _MAPPED:
        value &= _V4_MAX
        return _text(4, value), 4, value
    return _text(6, value), 6, value


def _parse_entry(entry: str) -> _Hop | None:
    """One X-Forwarded-For entry (or a peer or CDN header value); ``None`` when malformed.

    Accepts ``1.2.3.4``, ``1.2.3.4:8080``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443`` and zone ids (``fe80::1%eth0``), with surrounding blanks.
    """
    # Blanks around an entry are not part of it: the length limit counts what they surround
    # (every path, the walk, the memo of proven chains and the log replay's numpy, reads
    # the same entry alike however it is padded).
    entry = entry.strip(" \t")
    if len(entry) > _MAX_ENTRY:
        return None
    try:
        return entry, 4, _from_bytes(_pton(_AF_INET, entry), "big")
    except (OSError, ValueError):
        pass
    if entry.startswith("["):
        close = entry.find("]")
        rest = entry[close + 1 :]
        if close < 0 or (rest and not (rest[0] == ":" and _port_ok(rest[1:]))):
            return None
        return _v6(entry[1:close])
    colons = entry.count(":")
    if colons == 1:
        host, port = entry.split(":")
        return _v4(host) if _port_ok(port) else None
    return _v6(entry) if colons else None


def _parse_node(node: str) -> _Hop | str:
    """The value of an RFC 7239 ``for=`` parameter, unquoted; a reason string when not usable."""
    try:
        return node, 4, _from_bytes(_pton(_AF_INET, node), "big")
    except (OSError, ValueError):
        pass
    if node.lower() == "unknown":
        return "for=unknown"
    if node.startswith("_"):
        return f"obfuscated identifier {_show(node)}"
    if node.startswith("["):
        close = node.find("]")
        rest = node[close + 1 :]
        if close >= 0 and (not rest or (rest[0] == ":" and _port_ok(rest[1:], obfuscated=True))):
            hop = _v6(node[1:close])
            if hop is not None:
                return hop
    elif node.count(":") <= 1:
        host, colon, port = node.partition(":")
        if not colon or _port_ok(port, obfuscated=True):
            hop = _v4(host)
            if hop is not None:
                return hop
    return f"malformed Forwarded node {_show(node)}"


def _forwarded_for(element: str) -> _Hop | str | None:
    """The ``for=`` node of one Forwarded element: a reason string when it has no usable one,
    ``None`` when the text is not a well-formed element at all."""
    if len(element) > _MAX_ELEMENT:
        return f"Forwarded element too long: {_show(element)}"
    simple = element.strip(" \t")
    if simple[:4].lower() == "for=" and _SIMPLE_FOR.fullmatch(simple, 4) is not None:
        return _parse_node(simple[4:])  # the usual "for=1.2.3.4", without the tokenizer
    node: str | None = None
    pos, end = 0, len(element)
    while pos < end:
        match = _PAIR.match(element, pos)
        if match is None or match.end() == pos:
            return None
        pos = match.end()
        name, value = match.group(1, 2)
        if name is not None and name.lower() == "for":
            if node is not None:
                return f"for= repeated in Forwarded element {_show(element)}"
            if value.startswith('"'):
                value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
            node = value
    if node is None:
        return f"Forwarded element without for=: {_show(element)}"
    return _parse_node(node)


# --- configuration ----------------------------------------------------------------------------


def _parse_cidr(text: object, what: str) -> tuple[int, int, int]:
    """``(version, prefix length, network number)``; raises naming the value when malformed."""
    if not isinstance(text, str):
        raise RegiongateError(f"{what}: expected a CIDR string such as '10.0.0.0/8', not {text!r}")
    address, slash, prefix_text = text.strip().partition("/")
    hop = _v4(address) if ":" not in address else None
    if hop is None and ":" in address and "%" not in address:
        try:
            hop = address, 6, _from_bytes(_pton(_AF_INET6, address), "big")
        except (OSError, ValueError):
            hop = None
    if hop is None:
        raise RegiongateError(
            f"{what}: {text!r} is not a network; write it as a CIDR such as '10.0.0.0/8' or "
            "'2001:db8::/32', or a single address"
        )
    _, version, value = hop
    bits = 32 if version == 4 else 128
    if not slash:
        prefix = bits
    elif prefix_text.isascii() and prefix_text.isdigit() and len(prefix_text) <= 3:
        prefix = int(prefix_text)
    else:
        prefix = -1
    if not 0 <= prefix <= bits:
        raise RegiongateError(f"{what}: {text!r} has a bad prefix length (0 to {bits} allowed)")
    if value & ((1 << (bits - prefix)) - 1):
        raise RegiongateError(
            f"{what}: {text!r} has host bits set; write the network address, e.g. "
            f"'{_text(version, value >> (bits - prefix) << (bits - prefix))}/{prefix}'"
        )
    return version, prefix, value


def _compile(cidrs: object, what: str) -> tuple[_Nets, _Nets]:
    """IPv4 and IPv6 networks grouped by prefix length: one set lookup per distinct length."""
    if isinstance(cidrs, str) or not isinstance(cidrs, Iterable):
        raise RegiongateError(f"{what}: expected a tuple of CIDR strings, not {cidrs!r}")
    groups: dict[tuple[int, int], set[int]] = {}
    for cidr in cidrs:
        version, prefix, value = _parse_cidr(cidr, what)
        if version == 6 and value >> 32 == _MAPPED and prefix >= 96:
            # ::ffff:a.b.c.d/p: addresses are matched after normalisation, so as IPv4. A wider
            # IPv6 network (::/0) does not trust IPv4: that takes 0.0.0.0/0, on purpose.
            version, prefix, value = 4, prefix - 96, value & _V4_MAX
        bits = 32 if version == 4 else 128
        groups.setdefault((version, bits - prefix), set()).add(value >> (bits - prefix))
    # Longest prefixes first: most trusted proxies are single addresses.
    ordered = sorted(groups.items(), key=lambda item: item[0][1])
    v4 = tuple((shift, frozenset(nets)) for (version, shift), nets in ordered if version == 4)
    v6 = tuple((shift, frozenset(nets)) for (version, shift), nets in ordered if version == 6)
    return v4, v6


def _inside(nets: tuple[_Nets, _Nets], version: int, value: int) -> bool:
    if version == 0:
        return False
    for shift, numbers in nets[version == 6]:  # noqa: SIM110 - a generator costs 3x here
        if value >> shift in numbers:
            return True
    return False


@dataclass(frozen=True, slots=True)
class _CompiledCdn:
    header: bytes
    source: str
    networks: tuple[_Nets, _Nets]


def _compile_cdn(rules: object) -> tuple[_CompiledCdn, ...]:
    if isinstance(rules, CdnRule) or not isinstance(rules, Iterable):
        raise RegiongateError(f"cdn: expected a tuple of CdnRule, not {rules!r}")
    compiled: list[_CompiledCdn] = []
    for rule in rules:
        if not isinstance(rule, CdnRule):
            raise RegiongateError(f"cdn: expected a CdnRule, not {rule!r}")
        name = rule.header.strip().lower() if isinstance(rule.header, str) else ""
        if _HEADER_NAME.fullmatch(name) is None or name in (XFF, FORWARDED):
            raise RegiongateError(
                f"cdn: {rule.header!r} is not usable as a CDN client header; give the header "
                "the CDN sets, such as 'cf-connecting-ip'"
            )
        if not rule.networks:
            raise RegiongateError(f"cdn: the rule for {name!r} lists no networks")
        networks = _compile(rule.networks, f"cdn networks of {name!r}")
        compiled.append(_CompiledCdn(name.encode("ascii"), f"cdn:{name}", networks))
    return tuple(compiled)


def _remember(memo: dict[_K, _V], key: _K, value: _V, size: int) -> None:
    """Add to a bounded memo, starting afresh when it is full (no eviction bookkeeping)."""
    if len(memo) >= size:
        memo.clear()
    memo[key] = value


def _xff_tail(raw: bytes, limit: int) -> bytes:
    """The last ``limit + 1`` entries of a long X-Forwarded-For, and an empty entry in front
    of them when anything was cut: the walk reads no further than that, and the empty entry
    still tells it that the chain goes on. Nothing else of the header is copied or decoded."""
    end = len(raw)
    for _ in range(limit + 1):
        end = raw.rfind(b",", 0, end)
        if end < 0:
            return raw
    return raw[end:]


# --- results ------------------------------------------------------------------------------------


class _Unfrozen:
    """ClientAddress's slot layout without the frozen ``__setattr__``.

    The hot path fills one of these and then makes it a ClientAddress by assigning
    ``__class__`` (allowed: same slots, same base). The frozen dataclass ``__init__`` calls
    ``object.__setattr__`` once per field, about 700 ns here, as much as all the rest of the
    hot path; this costs about 150 ns. The result is an ordinary frozen ClientAddress in every
    respect (type, equality, hash, immutability); a test holds it to that.
    """

    __slots__ = ClientAddress.__slots__

    ip: str | None
    version: int | None
    value: int | None
    source: str
    hops: tuple[str, ...]
    invalid: str | None


_new = object.__new__


def _answer(hop: _Hop, source: str, hops: tuple[str, ...]) -> ClientAddress:
    result = _new(_Unfrozen)
    result.ip, result.version, result.value = hop
    result.source = source
    result.hops = hops
    result.invalid = None
    result.__class__ = ClientAddress  # type: ignore[assignment]
    return result  # type: ignore[return-value]


def _invalid(source: str, hops: Sequence[str], reason: str) -> ClientAddress:
    return ClientAddress(
        ip=None, version=None, value=None, source=source, hops=tuple(hops), invalid=reason
    )


# --- the resolver ---------------------------------------------------------------------------


class ClientResolver:
    """Finds each request's client address under one :class:`ClientIPConfig`.

    Thread-safe. The only mutable state is bounded memos of strings already proven to be
    trusted: peers, single hops, and whole runs of hops ("chains") right of the left-most
    entry. Only trusted strings go in, and each memo is cleared when full, so forged entries
    can cost speed but can neither grow memory without limit nor change an answer.
    """

    __slots__ = (
        "_cdn",
        "_config",
        "_header",
        "_hop_memo",
        "_limit",
        "_nets",
        "_peer_memo",
        "_trust_unix",
        "_v4",
        "_xff",
    )

    def __init__(self, config: ClientIPConfig) -> None:
        """Compile ``config``; raises :class:`RegiongateError` naming any bad value."""
        header = config.header.strip().lower() if isinstance(config.header, str) else None
        if header not in (XFF, FORWARDED):
            raise RegiongateError(
                f"unknown forwarding header {config.header!r}: use {XFF!r} or {FORWARDED!r}"
            )
        limit = config.hop_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HOP_LIMIT:
            raise RegiongateError(
                f"hop_limit {limit!r} is out of range: use an integer from 1 to {MAX_HOP_LIMIT}"
            )
        self._config = config
        self._header = header.encode("ascii")
        self._xff = header == XFF
        self._limit = limit
        self._trust_unix = bool(config.trust_unix_socket)
        self._nets = _compile(config.trusted_proxies, "trusted_proxies")
        self._v4 = self._nets[0]
        self._cdn = _compile_cdn(config.cdn)
        # peer string -> (its hop, {chain right of the left-most entry -> hops walked})
        self._peer_memo: dict[object, tuple[_Hop, dict[str, tuple[str, ...]]]] = {}
        self._hop_memo: dict[str, _Hop] = {}

    @property
    def config(self) -> ClientIPConfig:
        """The configuration this resolver was compiled from."""
        return self._config

    @property
    def forwarded_only(self) -> bytes | None:
        """The one header :meth:`resolve` reads, when its answer is a function of the peer
        and that header's value alone (``X-Forwarded-For`` without CDN rules); else ``None``.
        Callers may then remember answers by ``(peer, value)``."""
        return self._header if self._xff and not self._cdn else None

    def is_known_proxy(self, peer: object) -> bool:
        """Whether ``peer`` is a trusted proxy this resolver has resolved a request from
        recently (a dict lookup; ``False`` says nothing: the peer may be one not seen lately).
        """
        return peer in self._peer_memo

    @property
    def trusted_networks(self) -> tuple[_Nets, _Nets]:
        """The trusted proxies as this resolver matches them: IPv4 and IPv6 networks, each as
        ``(shift, network numbers)`` per prefix length (an address is inside when ``value >>
        shift`` is one of the numbers); an IPv4-mapped IPv6 network counts as IPv4."""
        return self._nets

    def is_trusted(self, address: str | None) -> bool:
        """Whether ``address`` (a peer, or a forwarding entry) is a trusted proxy."""
        if address is None:
            return self._trust_unix
        if not isinstance(address, str):
            return False
        hop = _parse_entry(address)
        return hop is not None and _inside(self._nets, hop[1], hop[2])

    def resolve_text(
        self, peer: str | None, headers: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> ClientAddress:
        """:meth:`resolve` with ``str`` headers (names in any case), for the CLI and tests.

        Characters outside latin-1 become ``?``, which no address contains.
        """
        try:
            items = headers.items() if isinstance(headers, Mapping) else headers
            raw = [
                (
                    name.strip().lower().encode("latin-1", "replace"),
                    value.encode("latin-1", "replace"),
                )
                for name, value in items
            ]
        except Exception:
            return _invalid("peer", (), "unreadable request headers")
        return self.resolve(peer, raw)

    def resolve(self, peer: str | None, headers: Sequence[tuple[bytes, bytes]]) -> ClientAddress:
        """The client of a request from ``peer`` with ASGI ``headers``; never raises."""
        # Inline, the common case: a trusted peer, an X-Forwarded-For whose entries right of
        # the left-most are a chain of proxies already proven trusted. Everything else goes to
        # the careful walk. A function call here costs about as much as a hop.
        try:
            known = self._peer_memo.get(peer)
            if known is None:
                # Most often a client connecting directly: answer it here when it is IPv4.
                try:
                    value = _from_bytes(_pton(_AF_INET, peer), "big")  # type: ignore[arg-type]
                except (OSError, ValueError, TypeError):
                    pass
                else:
                    for shift, numbers in self._v4:
                        if value >> shift in numbers:
                            break
                    else:
                        result = _new(_Unfrozen)  # _answer((peer, 4, value), "peer", ()), inline
                        result.ip = peer
                        result.version = 4
                        result.value = value
                        result.source = "peer"
                        result.hops = ()
                        result.invalid = None
                        result.__class__ = ClientAddress  # type: ignore[assignment]
                        return result  # type: ignore[return-value]
                checked = self._check_peer(peer)
                if isinstance(checked, ClientAddress):
                    return checked
                known = checked
            first, chains = known
            want = self._header
            raw: bytes | None = None
            lines: list[bytes] | None = None
            for name, line in headers:
                if name == want:
                    if raw is None:
                        raw = line
                    elif lines is None:
                        lines = [raw, line]
                    else:
                        lines.append(line)
            if lines is not None:
                # Several header lines are one comma-separated list, in order (RFC 9110 5.3);
                # a blank line adds no entry.
                raw = b",".join(line for line in lines if line.strip(b" \t"))
            if not raw:
                return self._from_peer(first, headers)
            if len(raw) > _BIG_HEADER and self._xff:
                raw = _xff_tail(raw, self._limit)
            text = raw.decode("latin-1")
            if not self._xff:
                return self._walk_forwarded(first, text, headers)
            comma = text.find(",")
            hops: tuple[str, ...] | None
            if comma < 0:
                # One entry (one proxy in front, the common case): an untrusted IPv4 address
                # is the client, with no walk (anything else: the walk's rules).
                entry = text.strip(" \t")
                try:
                    value = _from_bytes(_pton(_AF_INET, entry), "big")
                except (OSError, ValueError):
                    return self._walk_xff(first, chains, text, headers)
                if _inside(self._nets, 4, value):
                    return self._walk_xff(first, chains, text, headers)
                hops = (first[0],) if first[1] else ()
            else:
                # (A chain longer than _MAX_CHAIN is never remembered: do not hash a huge one.)
                hops = chains.get(text[comma:]) if len(text) - comma <= _MAX_CHAIN else None
                if hops is None:
                    return self._walk_xff(first, chains, text, headers)
                # Every entry right of the first comma is a proven proxy: the left-most is the
                # client.
                entry = text[:comma].strip(" \t")
                try:
                    value = _from_bytes(_pton(_AF_INET, entry), "big")
                except (OSError, ValueError):
                    return self._walk_xff(first, chains, text, headers)
            if self._cdn:
                return self._finish((entry, 4, value), XFF, hops, headers)
            result = _new(_Unfrozen)  # _answer((entry, 4, value), XFF, hops), inline
            result.ip = entry
            result.version = 4
            result.value = value
            result.source = XFF
            result.hops = hops
            result.invalid = None
            result.__class__ = ClientAddress  # type: ignore[assignment]
            return result  # type: ignore[return-value]
        except Exception as exc:  # fail closed on inputs nobody planned for
            return _invalid("peer", (), f"unreadable request ({type(exc).__name__})")

    def _check_peer(self, peer: object) -> tuple[_Hop, dict[str, tuple[str, ...]]] | ClientAddress:
        """The peer as the first trusted hop, or the final answer when it is not trusted."""
        if peer is None:
            if not self._trust_unix:
                return _invalid("peer", (), "no peer address")
            hop = _UNIX_PEER
        else:
            checked = self._parse_peer(peer)
            if isinstance(checked, ClientAddress):
                return checked
            hop = checked
        known: tuple[_Hop, dict[str, tuple[str, ...]]] = (hop, {})
        _remember(self._peer_memo, peer, known, _PEER_MEMO_SIZE)
        return known

    def _parse_peer(self, peer: object) -> _Hop | ClientAddress:
        """A trusted peer's hop, or the answer itself for any other peer."""
        if not isinstance(peer, str):
            return _invalid("peer", (), f"malformed peer address {peer!r:.{_MAX_SHOWN}}")
        hop = _parse_entry(peer)
        if hop is None:
            return _invalid("peer", (), f"malformed peer address {_show(peer)}")
        if not _inside(self._nets, hop[1], hop[2]):
            return _answer(hop, "peer", ())
        return hop

    def _from_peer(self, first: _Hop, headers: Sequence[tuple[bytes, bytes]]) -> ClientAddress:
        """No forwarding header: the trusted peer itself is the client."""
        if not first[1]:
            return _invalid("peer", (), "no peer address (unix socket) and no forwarding header")
        return self._finish(first, "peer", (), headers)

    def _walk_xff(
        self,
        first: _Hop,
        chains: dict[str, tuple[str, ...]],
        text: str,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> ClientAddress:
        """X-Forwarded-For right to left, at most ``hop_limit`` trusted entries."""
        limit = self._limit
        # rsplit bounds the work: parts[0] holds everything left of the last `limit` entries.
        parts = text.rsplit(",", limit)
        overflow = False
        if len(parts) > limit:
            comma = parts[0].rfind(",")
            if comma >= 0:
                parts[0] = parts[0][comma + 1 :]
                overflow = True
        memo = self._hop_memo
        nets = self._nets
        hops = [first[0]] if first[1] else []
        for index in range(len(parts) - 1, -1, -1):
            part = parts[index]
            hop = memo.get(part)
            if hop is None:
                parsed = _parse_entry(part)
                if parsed is None:
                    if not text.strip(" \t"):
                        return self._from_peer(first, headers)
                    return _invalid(XFF, hops, f"malformed {XFF} entry {_show(part)}")
                hop = parsed
                if not _inside(nets, hop[1], hop[2]):
                    return self._finish(hop, XFF, hops, headers)
                if len(part) <= _MAX_ENTRY:
                    _remember(memo, part, hop, _HOP_MEMO_SIZE)
            if index == 0:
                if overflow:
                    break
                # Every entry is a trusted host: the request started at the left-most one.
                return self._finish(hop, XFF, hops, headers)
            hops.append(hop[0])
            if index == 1 and not overflow:
                # Everything right of parts[0] is proven trusted: remember the chain, so the next
                # request through it reads only its left-most entry.
                chain = text[len(parts[0]) :]
                if len(chain) <= _MAX_CHAIN:
                    _remember(chains, chain, tuple(hops), _CHAIN_MEMO_SIZE)
        return _invalid(XFF, hops, f"forwarding chain longer than {limit} hops")

    def _walk_forwarded(
        self, first: _Hop, text: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> ClientAddress:
        """RFC 7239 elements right to left, at most ``hop_limit`` trusted ones.

        Elements are cut at commas from the right; a piece that is not a well-formed element
        but holds a quote is joined with the piece on its left (the comma was inside a quoted
        string). A piece that starts inside a quoted string can never parse as an element when
        the whole element is well formed, so proxies' elements are always cut right; and the
        element the first trusted proxy wrote for the client is cut right whatever the client
        wrote to its left.
        """
        if not text.strip(" \t"):
            return self._from_peer(first, headers)
        memo = self._hop_memo
        limit = self._limit
        hops = [first[0]] if first[1] else []
        walked = 0
        end = len(text)
        while True:
            start = text.rfind(",", 0, end)
            element = text[start + 1 : end]
            while True:
                hop = memo.get(element)
                if hop is not None:
                    break
                parsed = _forwarded_for(element)
                if isinstance(parsed, tuple):
                    hop = parsed
                    if not _inside(self._nets, hop[1], hop[2]):
                        return self._finish(hop, FORWARDED, hops, headers)
                    if len(element) <= _MAX_ELEMENT:
                        _remember(memo, element, hop, _HOP_MEMO_SIZE)
                    break
                if parsed is not None or '"' not in element or start < 0:
                    reason = parsed or f"malformed Forwarded element {_show(element)}"
                    return _invalid(FORWARDED, hops, reason)
                # Not well formed but quoted: the comma is inside a quoted string. Join the
                # piece on its left (the element is never longer than _MAX_ELEMENT).
                start = text.rfind(",", 0, start)
                element = text[start + 1 : end]
            if start < 0:
                # Every element is a trusted host: the request started at the left-most one.
                return self._finish(hop, FORWARDED, hops, headers)
            if walked == limit:
                return _invalid(FORWARDED, hops, f"forwarding chain longer than {limit} hops")
            walked += 1
            hops.append(hop[0])
            end = start

    def _finish(
        self,
        client: _Hop,
        source: str,
        hops: Sequence[str],
        headers: Sequence[tuple[bytes, bytes]],
    ) -> ClientAddress:
        """The answer for ``client``, unless it is a CDN edge that names the client itself."""
        for rule in self._cdn:
            if not _inside(rule.networks, client[1], client[2]):
                continue
            values = [value for name, value in headers if name == rule.header]
            if not values:
                continue
            # The edge is a hop now: it is trusted to name the client, and only for that.
            hops = (*hops, client[0])
            name = rule.source[4:]
            if len(values) > 1:
                return _invalid(rule.source, hops, f"{name} header repeated")
            text = values[0].decode("latin-1")
            hop = _parse_entry(text)
            if hop is None:
                return _invalid(rule.source, hops, f"malformed {name} header {_show(text)}")
            return _answer(hop, rule.source, tuple(hops))
        return _answer(client, source, tuple(hops))
