"""make_origin against a plain statement of its rules, on every mix of answers hypothesis finds."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from regiongate.intel.consensus import make_origin
from regiongate.intel.model import Consensus, Flag, Origin, SourceAnswer
from regiongate.intel.regions import subdivision_country

_KINDS = {"tor": Flag.TOR, "vpn": Flag.VPN, "hosting": Flag.HOSTING, "datacenter": Flag.HOSTING,
          "cloud": Flag.HOSTING, "cdn": Flag.HOSTING, "bot": Flag.HOSTING, "proxy": Flag.PROXY,
          "relay": Flag.RELAY}  # fmt: skip


def _pick(values: Sequence[str], consensus: Consensus) -> str | None:
    if not values:
        return None
    if consensus is Consensus.PRIMARY:
        return values[0]
    best = max(values.count(v) for v in values)
    return next(v for v in values if values.count(v) == best)


def reference(answers: Sequence[SourceAnswer], consensus: Consensus) -> Origin:
    """The rules written out one at a time, with no shortcuts."""
    for a in answers:
        if a.kind == "special":
            return Origin(flags=frozenset({Flag.PRIVATE}), sources=(a,), consensus=consensus,
                          note=a.provider)  # fmt: skip
    declared = [a for a in answers if a.kind == "relay" and a.country is not None]
    located = declared or list(answers)
    countries = [a.country for a in located if a.country is not None]
    subdivisions = [a.subdivision for a in located if a.subdivision is not None]
    flags = {_KINDS[a.kind] for a in answers if a.kind in _KINDS}
    disputed = (
        len(set(countries)) > 1
        or len(set(subdivisions)) > 1
        or any(
            a.subdivision and a.country and subdivision_country(a.subdivision) != a.country
            for a in located
        )
    )
    country = _pick(countries, consensus)
    subdivision = _pick(
        [
            a.subdivision
            for a in located
            if a.subdivision is not None
            and (a.country == country or subdivision_country(a.subdivision) == country)
        ],
        consensus,
    )
    if subdivision is None and consensus is Consensus.ANY and subdivisions:
        subdivision = subdivisions[0]
    wanted = [country, subdivision]
    if consensus is Consensus.ANY:
        wanted += [*countries, *subdivisions]
    territories = list(dict.fromkeys(t for t in wanted if t is not None))
    if country is None and subdivision is None:
        flags.add(Flag.UNKNOWN)
    if disputed:
        flags.add(Flag.DISPUTED)
    with_asn = [a for a in answers if a.asn is not None]
    return Origin(country=country, subdivision=subdivision, territories=tuple(territories),
                  asn=with_asn[0].asn if with_asn else None,
                  org=with_asn[0].org if with_asn else None, flags=frozenset(flags),
                  sources=tuple(answers), consensus=consensus)  # fmt: skip


answer = st.builds(
    SourceAnswer,
    source=st.sampled_from(["a", "b", "c"]),
    country=st.sampled_from([None, "UA", "RU", "US", "CN"]),
    subdivision=st.sampled_from([None, "UA-43", "UA-40", "UA-09", "RU-MOW", "US-CA", "CN-BJ"]),
    asn=st.sampled_from([None, 13335, 4134]),
    org=st.sampled_from([None, "Example"]),
    kind=st.sampled_from([None, "tor", "vpn", "cloud", "relay", "proxy", "special", "other"]),
    provider=st.sampled_from([None, "iana"]),
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(answer, max_size=6), st.sampled_from(list(Consensus)))
def test_make_origin_follows_the_rules(answers: list[SourceAnswer], consensus: Consensus) -> None:
    got, want = make_origin(answers, consensus), reference(answers, consensus)
    for name in ("country", "subdivision", "territories", "asn", "org", "flags", "sources",
                 "consensus", "note"):  # fmt: skip
        assert getattr(got, name) == getattr(want, name), name


def test_flag_sets_are_shared() -> None:
    one = make_origin([SourceAnswer(source="a", country="US", kind="vpn")], Consensus.ANY)
    two = make_origin([SourceAnswer(source="b", country="CN", kind="vpn")], Consensus.ANY)
    assert one.flags is two.flags == frozenset({Flag.VPN})
