"""The compiler against a slow reference, on random sources that overlap each other and
themselves, with boundaries packed into a few /24s so that DIR-24-8 splits are exercised."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regiongate.errors import DataError
from regiongate.intel.compile import SourceInfo, compile_snapshot, merge_ranges
from regiongate.intel.readers import RangesBuilder, RangeValue, read_csv_ranges
from regiongate.intel.snapshot import Snapshot

BASE4 = int(ipaddress.IPv4Address("20.0.0.0"))
BASE6 = int(ipaddress.IPv6Address("2a00::"))
COUNTRIES = ["US", "DE", "FR", "JP", "CN", "RU"]

ranges_st = st.lists(
    st.tuples(st.integers(0, 1200), st.integers(0, 700), st.sampled_from(COUNTRIES)),
    min_size=1,
    max_size=12,
)


def _write(path: Path, base: int, ranges: list[tuple[int, int, str]], v6: bool) -> None:
    make = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    lines = [f"{make(base + s)},{make(base + s + n)},{c}" for s, n, c in ranges]
    path.write_text("\n".join(lines) + "\n")


def _reference(ranges: list[tuple[int, int, str]], offset: int) -> str | None:
    # The most specific range wins; among equal sizes, the later line.
    best: tuple[int, int, str] | None = None
    for line, (s, n, c) in enumerate(ranges):
        if s <= offset <= s + n and (best is None or (n, -line) < (best[0], -best[1])):
            best = (n, line, c)
    return None if best is None else best[2]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=ranges_st, b=ranges_st, v6=st.booleans())
def test_compiled_snapshot_matches_reference(
    tmp_path_factory: pytest.TempPathFactory,
    a: list[tuple[int, int, str]],
    b: list[tuple[int, int, str]],
    v6: bool,
) -> None:
    d = tmp_path_factory.mktemp("c")
    base = BASE6 if v6 else BASE4
    _write(d / "a.csv", base, a, v6)
    _write(d / "b.csv", base, b, v6)
    loaded = []
    for name in ("a", "b"):
        r = read_csv_ranges(d / f"{name}.csv")
        loaded.append((SourceInfo(name=name, format="csv"), r))
    out = d / "s.rgsnap"
    compile_snapshot(loaded, out)
    make = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    with Snapshot(out, consensus="primary") as snap:
        offsets = list(range(-2, 1905))
        for off in offsets:
            o = snap.lookup(str(make(base + off)))
            got = {s.source: s.country for s in o.sources}
            want = {k: v for k, v in (("a", _reference(a, off)), ("b", _reference(b, off))) if v}
            assert got == want, (off, o)
        if not v6:
            cols = snap.lookup_many(np.arange(base - 2, base + 1905, dtype=np.uint32))
            scalar = [snap.lookup(str(make(base + off))).country or "" for off in offsets]
            assert list(cols.country) == scalar


def test_merge_ranges_reinterns_values() -> None:
    one, two = RangesBuilder(), RangesBuilder()
    one.add(4, 0, 9, one.value_id(RangeValue("US")))
    two.add(6, 0, 9, two.value_id(RangeValue("DE")))
    two.add(6, 10, 19, two.value_id(RangeValue("US")))
    merged = merge_ranges([one.build(data_date="2026-01-01"), two.build(data_date="2026-02-01")])
    assert merged.values == [RangeValue(), RangeValue("US"), RangeValue("DE")]
    assert merged.v6.vids == [2, 1] and merged.v4.vids == [1]
    assert merged.data_date == "2026-02-01"


def test_reserved_and_duplicate_names(tmp_path: Path) -> None:
    r = RangesBuilder().build()
    with pytest.raises(DataError, match="duplicate"):
        compile_snapshot([(SourceInfo(name="x", format="t"), r)] * 2, tmp_path / "s")
    with pytest.raises(DataError, match="reserved"):
        compile_snapshot([(SourceInfo(name="iana-special", format="t"), r)], tmp_path / "s")


def test_empty_sources_compile_to_private_and_unknown(tmp_path: Path) -> None:
    compile_snapshot(
        [(SourceInfo(name="empty", format="t"), RangesBuilder().build())], tmp_path / "s"
    )
    with Snapshot(tmp_path / "s") as snap:
        assert snap.lookup("8.8.8.8").flags == {"unknown"}
        assert snap.lookup("192.168.1.1").flags == {"private"}
        assert snap.lookup("2a00::1").flags == {"unknown"}
