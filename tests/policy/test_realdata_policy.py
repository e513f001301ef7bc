"""The presets on the real installed data (skips, saying how to install it, when absent)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from regiongate.intel import Snapshot
from regiongate.policy import Action, Context, load_policy
from tests.conftest import realdata_snapshot
from tests.intel.test_realdata import OCCUPIED

pytestmark = pytest.mark.realdata
AFTER = Context.at_time(dt.datetime(2024, 8, 1))


@pytest.fixture(scope="module")
def snap() -> Iterator[Snapshot]:
    with Snapshot(realdata_snapshot(), consensus=load_policy("api-2024").consensus) as s:
        yield s


@pytest.mark.parametrize(
    ("ip", "action"),
    [
        ("8.8.8.8", Action.ALLOW),
        ("114.114.114.114", Action.BLOCK),
        ("202.67.240.1", Action.BLOCK),
        ("175.45.176.1", Action.BLOCK),
        ("5.255.255.242", Action.BLOCK),
        ("2a02:6b8::1", Action.BLOCK),
        ("10.0.0.1", Action.ALLOW),
        ("not-an-ip", Action.BLOCK),
    ],
)
def test_api_2024_on_well_known_addresses(snap: Snapshot, ip: str, action: Action) -> None:
    assert load_policy("api-2024").decide(snap.lookup(ip), AFTER).action is action


@pytest.mark.parametrize(("ip", "region"), OCCUPIED)
@pytest.mark.parametrize("preset", ["api-2024", "sanctions-comprehensive"])
def test_occupied_regions_blocked_whichever_source_places_them(
    snap: Snapshot, ip: str, region: str, preset: str
) -> None:
    d = load_policy(preset).decide(snap.lookup(ip), AFTER)
    assert d.action is Action.BLOCK, d
    assert d.territory == region
    assert any(r.startswith(f"{region} is not supported") for r in d.reasons)
