"""From every source's answer to one :class:`Origin`, by a named consensus strategy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from regiongate.intel.model import FLAG_BITS, Consensus, Flag, Origin, SourceAnswer
from regiongate.intel.regions import subdivision_country

__all__ = ["KIND_NAMES", "RELAY_KIND", "SPECIAL_KIND", "make_origin"]

# The kind of the built-in pseudo-source that marks IANA special-purpose space.
SPECIAL_KIND: Final = "special"

# Anonymizer/network kinds as sources name them → regiongate flags.
_KIND_FLAGS: Final = {
    "tor": Flag.TOR,
    "vpn": Flag.VPN,
    "hosting": Flag.HOSTING,
    "datacenter": Flag.HOSTING,
    "cloud": Flag.HOSTING,
    # CDN edges and declared crawlers are servers, not people's connections.
    "cdn": Flag.HOSTING,
    "bot": Flag.HOSTING,
    "proxy": Flag.PROXY,
    "relay": Flag.RELAY,
}

# The kinds a source may give a range (CIDR lists are checked against these).
KIND_NAMES: Final = frozenset(_KIND_FLAGS)

# A relay egress range that names a country declares where its *users* are (Apple iCloud
# Private Relay publishes each egress range with the user's country and ISO 3166-2 region).
RELAY_KIND: Final = "relay"


def _pick(values: Sequence[str], consensus: Consensus) -> str | None:
    """The primary or the most common value; ties go to the higher-priority source."""
    if not values:
        return None
    if consensus is Consensus.PRIMARY or len(values) == 1:
        return values[0]
    counts: dict[str, int] = {}  # (a dict, not a Counter: 3x cheaper for a handful of values)
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def make_origin(answers: Sequence[SourceAnswer], consensus: Consensus) -> Origin:
    """Combine source answers (in priority order) into an ``Origin``."""
    # One pass for the kinds: flags, IANA special space, declared user locations.
    bits = 0
    declared = False
    for a in answers:
        kind = a.kind
        if kind is not None:
            if kind == SPECIAL_KIND:
                return Origin(flags=_PRIVATE, sources=(a,), consensus=consensus, note=a.provider)
            bits |= _KIND_BITS.get(kind, 0)
            if kind == RELAY_KIND and a.country is not None:
                declared = True
    # Declared user locations win: where a relay source names the country (and region) its
    # users are in, that is where the request comes from, whatever registries say about the
    # egress server; the other sources' countries and subdivisions are not counted. Every
    # other part of their answers (ASN, flags) still is.
    located = (
        [a for a in answers if a.kind == RELAY_KIND and a.country is not None]
        if declared
        else answers
    )
    countries: list[str] = []
    subdivisions: list[str] = []
    disputed = False
    for a in located:
        c, s = a.country, a.subdivision
        if c is not None:
            countries.append(c)
        if s is not None:
            subdivisions.append(s)
            # A source that files an occupied region under another country (Crimea under RU)
            # is a dispute in itself, whatever the other sources say.
            if c is not None and _sub_country(s) != c:
                disputed = True
    if not disputed:
        disputed = _differ(countries) or _differ(subdivisions)
    country = _pick(countries, consensus)
    # The subdivision must belong with the chosen country: named by a source that gave that
    # country, or an ISO 3166-2 code of it.
    if subdivisions:
        candidates = [
            a.subdivision
            for a in located
            if a.subdivision is not None
            and (a.country == country or _sub_country(a.subdivision) == country)
        ]
        subdivision = _pick(candidates, consensus)
        if subdivision is None and consensus is Consensus.ANY:
            # Compliance wants the most specific territory any source names, even when the
            # source that names it disagrees on the country (Luhansk filed under RU elsewhere).
            subdivision = subdivisions[0]
    else:
        subdivision = None
    if consensus is Consensus.ANY and (disputed or len(countries) > 1 or len(subdivisions) > 1):
        territories: list[str] = []
        for t in (country, subdivision, *countries, *subdivisions):
            if t is not None and t not in territories:
                territories.append(t)
    else:  # the other names are all the same as the chosen ones
        territories = [t for t in (country, subdivision) if t is not None]
    if country is None and subdivision is None:
        bits |= _UNKNOWN_BIT
    if disputed:
        bits |= _DISPUTED_BIT
    asn = org = None
    for a in answers:
        if a.asn is not None:
            asn, org = a.asn, a.org
            break
    return Origin(
        country=country,
        subdivision=subdivision,
        territories=tuple(territories),
        asn=asn,
        org=org,
        flags=_flag_set(bits),
        sources=tuple(answers),
        consensus=consensus,
    )


def _differ(values: list[str]) -> bool:
    """True if ``values`` holds two different values."""
    if len(values) < 2:
        return False
    first = values[0]
    return any(v != first for v in values)


_SUB_COUNTRY: dict[str, str] = {}


def _sub_country(code: str) -> str:
    """:func:`subdivision_country`, remembered (a few thousand codes at most)."""
    got = _SUB_COUNTRY.get(code)
    if got is None:
        got = subdivision_country(code)
        if len(_SUB_COUNTRY) < 65536:
            _SUB_COUNTRY[code] = got
    return got


_KIND_BITS: Final = {kind: FLAG_BITS[flag] for kind, flag in _KIND_FLAGS.items()}
_UNKNOWN_BIT: Final = FLAG_BITS[Flag.UNKNOWN]
_DISPUTED_BIT: Final = FLAG_BITS[Flag.DISPUTED]
_BY_BITS: dict[int, frozenset[Flag]] = {}
_PRIVATE: Final = frozenset({Flag.PRIVATE})


def _flag_set(bits: int) -> frozenset[Flag]:
    """The interned set of flags of a bit mask."""
    got = _BY_BITS.get(bits)
    if got is None:
        got = _BY_BITS[bits] = _interned(
            frozenset(flag for flag, bit in FLAG_BITS.items() if bits & bit)
        )
    return got


_FLAG_SETS: dict[frozenset[Flag], frozenset[Flag]] = {}


def _interned(flags: frozenset[Flag]) -> frozenset[Flag]:
    """One object per distinct set of flags (a few dozen): keyed by it, a dict finds an entry
    by identity, without hashing enum members (a Python-level ``__hash__`` each)."""
    return _FLAG_SETS.setdefault(flags, flags)
