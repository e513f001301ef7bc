"""Well-known addresses in the real installed data (``regiongate data install``).

CI installs the data, so these run there; elsewhere they skip and say how to install it.
The addresses for the occupied regions were found in the data itself (see docs/data.md):
for each region some placed there by DB-IP's region names while the registries say RU, and
some that every source files under UA.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from regiongate.intel import Consensus, Flag, Snapshot
from tests.conftest import realdata_snapshot

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def snap() -> Iterator[Snapshot]:
    with Snapshot(realdata_snapshot()) as s:
        yield s


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "US"),
        ("114.114.114.114", "CN"),
        ("202.67.240.1", "HK"),
        ("175.45.176.1", "KP"),
        ("5.255.255.242", "RU"),
        ("2a02:6b8::1", "RU"),
        ("::ffff:8.8.8.8", "US"),
    ],
)
def test_well_known_addresses(snap: Snapshot, ip: str, country: str) -> None:
    o = snap.lookup(ip)
    assert o.country == country, o
    assert country in o.territories
    # Every default geo source agrees on these.
    assert {a.country for a in o.sources if a.country} == {country}


def test_well_known_networks(snap: Snapshot) -> None:
    o = snap.lookup("8.8.8.8")
    assert o.asn == 15169 and Flag.HOSTING in o.flags
    assert snap.lookup("5.255.255.242").asn == 13238  # Yandex
    assert snap.lookup("10.0.0.1").flags == {Flag.PRIVATE}
    assert snap.lookup("100.64.1.1").flags == {Flag.PRIVATE}


OCCUPIED = [
    # Crimea: registries say RU, DB-IP names the region.
    ("5.3.41.1", "UA-43"),
    ("94.126.24.1", "UA-43"),
    ("2001:678:128::1", "UA-43"),
    # Sevastopol.
    ("5.3.52.1", "UA-40"),
    ("2a02:2b18::1", "UA-40"),
    # Donetsk: one filed under UA everywhere, one that registries call RU.
    ("89.209.221.25", "UA-14"),
    ("178.158.138.1", "UA-14"),
    ("2001:678:788::1", "UA-14"),
    # Luhansk.
    ("178.54.250.1", "UA-09"),
    ("45.10.32.1", "UA-09"),
    ("2001:678:724::1", "UA-09"),
]


@pytest.mark.parametrize(("ip", "region"), OCCUPIED)
def test_occupied_regions(snap: Snapshot, ip: str, region: str) -> None:
    o = snap.lookup(ip)
    assert region in o.territories, o
    assert o.subdivision == region
    named_by = [a.source for a in o.sources if a.subdivision == region]
    assert named_by, "some source must name the region"


def test_occupied_region_lookup_many_agrees(snap: Snapshot) -> None:
    ips = ["5.3.41.1", "5.3.52.1", "89.209.221.25", "178.54.250.1", "8.8.8.8"]
    cols = snap.lookup_many(ips)
    assert list(cols.subdivision) == ["UA-43", "UA-40", "UA-14", "UA-09", "US-CA"]
    assert list(cols.country) == [snap.lookup(ip).country or "" for ip in ips]


def test_consensus_strategies_on_disputed_space() -> None:
    path = realdata_snapshot()
    with Snapshot(path, consensus=Consensus.MAJORITY) as s:
        o = s.lookup("45.10.32.1")  # Luhansk per DB-IP, RU per both registries
        assert o.country == "RU" and o.territories == ("RU",)
        assert Flag.DISPUTED in o.flags
    with Snapshot(path, consensus=Consensus.ANY) as s:
        assert set(s.lookup("45.10.32.1").territories) == {"RU", "UA", "UA-09"}


def test_random_addresses_agree_between_scalar_and_vector(snap: Snapshot) -> None:
    rng = np.random.default_rng(2026)
    addrs = rng.integers(0, 2**32, 5000, dtype=np.uint64).astype(np.uint32)
    cols = snap.lookup_many(addrs)
    for i, a in enumerate(addrs.tolist()):
        ip = f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
        o = snap.lookup(ip)
        assert cols.country[i] == (o.country or "")
        assert snap.origin_for_row(int(cols.row[i])) is o
