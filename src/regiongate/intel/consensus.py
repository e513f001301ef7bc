"""From every source's answer to one :class:`Origin`, by a named consensus strategy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from regiongate.intel.model import Consensus, Flag, Origin, SourceAnswer
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
    for a in answers:
        if a.kind == SPECIAL_KIND:
            return Origin(
                flags=frozenset({Flag.PRIVATE}),
                sources=(a,),
                consensus=consensus,
                note=a.provider,
            )
    # Declared user locations win: where a relay source names the country (and region) its
    # users are in, that is where the request comes from, whatever registries say about the
    # egress server; the other sources' countries and subdivisions are not counted. Every
    # other part of their answers (ASN, flags) still is.
    declared = [a for a in answers if a.kind == RELAY_KIND and a.country is not None]
    located = declared or answers
    countries = [a.country for a in located if a.country is not None]
    subdivisions = [a.subdivision for a in located if a.subdivision is not None]
    flags: set[Flag] = set()
    for a in answers:
        if a.kind is not None and (flag := _KIND_FLAGS.get(a.kind)) is not None:
            flags.add(flag)
    disputed = len(set(countries)) > 1 or len(set(subdivisions)) > 1
    for a in located:
        # A source that files an occupied region under another country (Crimea under RU) is
        # a dispute in itself, whatever the other sources say.
        if (
            a.subdivision is not None
            and a.country is not None
            and subdivision_country(a.subdivision) != a.country
        ):
            disputed = True
    country = _pick(countries, consensus)
    # The subdivision must belong with the chosen country: named by a source that gave that
    # country, or an ISO 3166-2 code of it.
    candidates = [
        a.subdivision
        for a in located
        if a.subdivision is not None
        and (a.country == country or subdivision_country(a.subdivision) == country)
    ]
    subdivision = _pick(candidates, consensus)
    if subdivision is None and consensus is Consensus.ANY and subdivisions:
        # Compliance wants the most specific territory any source names, even when the
        # source that names it disagrees on the country (Luhansk filed under RU elsewhere).
        subdivision = subdivisions[0]
    territories: list[str] = []
    if consensus is Consensus.ANY:
        wanted = [country, subdivision, *countries, *subdivisions]
    else:
        wanted = [country, subdivision]
    for t in wanted:
        if t is not None and t not in territories:
            territories.append(t)
    if country is None and subdivision is None:
        flags.add(Flag.UNKNOWN)
    if disputed:
        flags.add(Flag.DISPUTED)
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
        flags=_interned(frozenset(flags)),
        sources=tuple(answers),
        consensus=consensus,
    )


_FLAG_SETS: dict[frozenset[Flag], frozenset[Flag]] = {}


def _interned(flags: frozenset[Flag]) -> frozenset[Flag]:
    """One object per distinct set of flags (a few dozen): keyed by it, a dict finds an entry
    by identity, without hashing enum members (a Python-level ``__hash__`` each)."""
    return _FLAG_SETS.setdefault(flags, flags)
