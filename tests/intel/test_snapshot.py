from __future__ import annotations

import ipaddress
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regiongate.errors import SnapshotError
from regiongate.intel import INVALID, Consensus, Flag, Snapshot, open_snapshot
from regiongate.intel.readers import RangeValue, read_source
from tests.conftest import TINY_ORDER

# --- answers ------------------------------------------------------------------------------------


def test_agreeing_sources(tiny_snapshot: Snapshot) -> None:
    o = tiny_snapshot.lookup("1.0.0.1")
    assert (o.country, o.subdivision, o.territories) == ("AU", "AU-NSW", ("AU", "AU-NSW"))
    assert o.asn == 64500 and o.org == "Example Net, Inc."
    assert o.flags == frozenset()
    assert [s.source for s in o.sources] == ["geo-a", "flat", "csv", "asn"]
    assert tiny_snapshot.network_of("1.0.0.1") == "1.0.0.0/25"


def test_range_boundaries_inside_one_24(tiny_snapshot: Snapshot) -> None:
    # 1.0.0.128/25 is Tor in iporigin: the /24 is split at .128.
    assert Flag.TOR not in tiny_snapshot.lookup("1.0.0.127").flags
    assert Flag.TOR in tiny_snapshot.lookup("1.0.0.128").flags
    assert Flag.TOR in tiny_snapshot.lookup("1.0.0.255").flags
    assert tiny_snapshot.lookup("1.0.1.0").flags == {Flag.UNKNOWN}
    # Adjacent ranges of one source: 3.0.0.0/25 US, 3.0.0.128/25 CA.
    assert tiny_snapshot.lookup("3.0.0.0").country == "US"
    assert tiny_snapshot.lookup("3.0.0.127").country == "US"
    assert tiny_snapshot.lookup("3.0.0.128").country == "CA"
    assert tiny_snapshot.lookup("3.0.0.255").country == "CA"
    assert tiny_snapshot.lookup("2.255.255.255").flags == {Flag.UNKNOWN}
    assert tiny_snapshot.lookup("0.255.255.255").flags == {Flag.PRIVATE}


def test_first_and_last_addresses(tiny_snapshot: Snapshot) -> None:
    assert Flag.PRIVATE in tiny_snapshot.lookup("0.0.0.0").flags
    assert Flag.PRIVATE in tiny_snapshot.lookup("255.255.255.255").flags
    assert Flag.PRIVATE in tiny_snapshot.lookup("::").flags
    assert tiny_snapshot.lookup("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").flags == {Flag.PRIVATE}
    assert tiny_snapshot.lookup("fe00::").flags == {Flag.UNKNOWN}


def test_more_specific_source_range_and_gaps(tiny_snapshot: Snapshot) -> None:
    o = tiny_snapshot.lookup("5.5.5.5")  # geo-a FR inside csv's DE /8: sources disagree
    assert o.country == "FR" and Flag.DISPUTED in o.flags
    assert o.territories == ("FR", "DE")
    assert tiny_snapshot.lookup("5.5.6.0").country == "DE"
    assert tiny_snapshot.lookup("5.5.6.0").flags == frozenset()
    assert tiny_snapshot.lookup("9.0.0.1").flags == {Flag.UNKNOWN}  # "??" in the csv


def test_disputed_crimea_under_each_consensus(tiny_snapshot_path: Path) -> None:
    with Snapshot(tiny_snapshot_path, consensus="any") as snap:
        o = snap.lookup("2.0.1.1")
        # geo-a: UA/UA-43; flat: RU/"Republic of Crimea" → UA-43; csv: RU.
        assert (o.country, o.subdivision) == ("RU", "UA-43")
        assert o.territories == ("RU", "UA-43", "UA")
        assert Flag.DISPUTED in o.flags
        assert [(s.source, s.country, s.subdivision) for s in o.sources] == [
            ("geo-a", "UA", "UA-43"),
            ("flat", "RU", "UA-43"),
            ("csv", "RU", None),
        ]
    with Snapshot(tiny_snapshot_path, consensus=Consensus.MAJORITY) as snap:
        o = snap.lookup("2.0.1.1")
        assert (o.country, o.subdivision, o.territories) == ("RU", "UA-43", ("RU", "UA-43"))
    with Snapshot(tiny_snapshot_path, consensus="primary") as snap:
        o = snap.lookup("2.0.1.1")
        assert (o.country, o.subdivision, o.territories) == ("UA", "UA-43", ("UA", "UA-43"))
        assert Flag.DISPUTED in o.flags
    with pytest.raises(SnapshotError, match="unknown consensus 'most'"):
        Snapshot(tiny_snapshot_path, consensus="most")


def test_ipv6_and_mapped(tiny_snapshot: Snapshot) -> None:
    o = tiny_snapshot.lookup("2001:4000::1")
    assert o.country == "JP" and Flag.VPN in o.flags
    assert tiny_snapshot.lookup("2001:4000:0:1::").flags == frozenset()
    # 2001:4001::/48 lies outside 2001:4000::/32: only geo-a knows it.
    assert tiny_snapshot.lookup("2001:4001::5").territories == ("KR",)
    assert tiny_snapshot.lookup("2001:4001:1::").flags == {Flag.UNKNOWN}
    assert tiny_snapshot.lookup("2001:4000:ffff:ffff:ffff:ffff:ffff:ffff").country == "JP"
    assert tiny_snapshot.lookup("2001:4001:0:ffff:ffff:ffff:ffff:ffff").country == "KR"
    assert tiny_snapshot.lookup("2001:3fff:ffff:ffff:ffff:ffff:ffff:ffff").flags == {Flag.UNKNOWN}
    assert tiny_snapshot.lookup("::ffff:1.0.0.1") is tiny_snapshot.lookup("1.0.0.1")
    assert tiny_snapshot.lookup("::ffff:7.0.0.9").flags == {Flag.RELAY, Flag.UNKNOWN}
    assert tiny_snapshot.network_of("2001:4000::1") == "2001:4000::/64"
    assert tiny_snapshot.network_of("junk") is None


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "100.64.0.1",
        "169.254.0.1",
        "::1",
        "fd00::1",
        "fe80::1%lo",
    ],
)
def test_private(tiny_snapshot: Snapshot, ip: str) -> None:
    o = tiny_snapshot.lookup(ip)
    assert o.flags == {Flag.PRIVATE} and o.country is None and o.note


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "bogus",
        "1.2.3",
        "127.1",
        "1.2.3.4:80",
        "\x00",
        "🙂",
        "a" * 100_000,
        None,
        7,
        b"1.1.1.1",
        3.5,
    ],
)
def test_invalid_never_raises(tiny_snapshot: Snapshot, junk: object) -> None:
    assert tiny_snapshot.lookup(junk) is INVALID
    assert tiny_snapshot.row_of(junk) == -1


@given(st.text(max_size=50))
def test_lookup_never_raises_on_any_string(text: str) -> None:
    snap = _shared()
    origin = snap.lookup(text)
    assert origin.flags


_SNAP: list[Snapshot] = []


def _shared() -> Snapshot:
    return _SNAP[0]


@pytest.fixture(autouse=True)
def _share(tiny_snapshot: Snapshot) -> None:
    _SNAP[:] = [tiny_snapshot]


def test_cache_is_bounded(tiny_snapshot_path: Path) -> None:
    with Snapshot(tiny_snapshot_path, cache_size=4) as snap:
        answers = [snap.lookup(f"1.0.0.{i}") for i in range(20)]
        assert all(a is answers[0] for a in answers)
        assert snap.lookup("1.0.0.200").flags == {Flag.TOR}


# --- the snapshot agrees with its sources ---------------------------------------------------------


def _reference(files: dict[str, Path]) -> dict[str, list[tuple[int, int, int, RangeValue]]]:
    out = {}
    for name in TINY_ORDER:
        r = read_source(files[name])
        rows = []
        for version, fam in ((4, r.v4), (6, r.v6)):
            for s, e, v in zip(fam.starts, fam.ends, fam.vids, strict=True):
                rows.append((version, s, e, r.values[v]))
        out[name] = rows
    return out


def _expected(
    ref: dict[str, list[tuple[int, int, int, RangeValue]]], version: int, value: int
) -> dict[str, RangeValue]:
    got = {}
    for name, rows in ref.items():
        best = None
        for ver, s, e, val in rows:
            # most specific range wins
            if ver == version and s <= value <= e and (best is None or e - s < best[0]):
                best = (e - s, val)
        if best is not None:
            got[name] = best[1]
    return got


_BOUNDARIES = sorted(
    {
        int(ipaddress.IPv4Address(x)) + d
        for x in [
            "1.0.0.0",
            "1.0.0.128",
            "1.0.1.0",
            "2.0.0.0",
            "2.1.0.0",
            "3.0.0.0",
            "3.0.0.128",
            "3.0.1.0",
            "5.0.0.0",
            "5.5.5.0",
            "5.5.6.0",
            "6.0.0.0",
            "7.0.0.0",
            "7.0.1.0",
            "9.0.0.0",
            "9.0.1.0",
            "10.0.0.0",
            "11.0.0.0",
        ]
        for d in (-1, 0, 1)
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.sampled_from(_BOUNDARIES).map(lambda n: (4, n)),
        st.integers(0, 2**32 - 1).map(lambda n: (4, n)),
        st.integers(0x20014000 << 96, (0x20014002 << 96) - 1).map(lambda n: (6, n)),
        st.integers(0, 2**128 - 1).map(lambda n: (6, n)),
    )
)
def test_property_snapshot_answers_what_the_sources_say(addr: tuple[int, int]) -> None:
    snap = _shared()
    ref = _REF[0]
    version, value = addr
    text = str(ipaddress.IPv6Address(value) if version == 6 else ipaddress.IPv4Address(value))
    origin = snap.lookup(text)
    if version == 6 and ipaddress.IPv6Address(value).ipv4_mapped is not None:
        version, value = 4, value & 0xFFFFFFFF
    if Flag.PRIVATE in origin.flags:
        return  # special-purpose space answers "private", whatever the sources say
    expected = _expected(ref, version, value)
    got = {
        s.source: RangeValue(s.country, s.subdivision, s.region, s.asn, s.org, s.kind, s.provider)
        for s in origin.sources
    }
    assert got == expected


_REF: list[dict[str, list[tuple[int, int, int, RangeValue]]]] = []


@pytest.fixture(autouse=True)
def _ref(tiny_files: dict[str, Path]) -> None:
    if not _REF:
        _REF.append(_reference(tiny_files))


# --- columnar -----------------------------------------------------------------------------------


def test_lookup_many_matches_lookup(tiny_snapshot: Snapshot) -> None:
    rng = np.random.default_rng(7)
    addrs = np.concatenate(
        [
            rng.integers(0, 2**32, 20_000, dtype=np.uint64),
            np.array(_BOUNDARIES, dtype=np.uint64) % 2**32,
        ]
    ).astype(np.uint32)
    cols = tiny_snapshot.lookup_many(addrs)
    assert len(cols) == len(addrs)
    for i in range(0, len(addrs), 97):
        o = tiny_snapshot.lookup(str(ipaddress.IPv4Address(int(addrs[i]))))
        assert cols.country[i] == (o.country or "")
        assert cols.subdivision[i] == (o.subdivision or "")
        assert int(cols.asn[i]) == (o.asn or 0)
        assert {f for f in Flag if cols.has_flag(f)[i]} == set(o.flags)


@pytest.mark.parametrize("which", ["tiny", "installed"])
def test_rows_v6_match_row_of_value(tiny_snapshot: Snapshot, which: str) -> None:
    """The vectorised IPv6 search finds the row the scalar one does: random addresses, every
    piece's first address and its neighbours, both ends of the space."""
    import random

    snap = tiny_snapshot if which == "tiny" else _installed_or_skip()
    rng = random.Random(11)
    starts = [(int(h) << 64) | int(lo) for h, lo in zip(snap._v6_hi, snap._v6_lo, strict=True)]
    values = {0, 2**128 - 1, *(rng.getrandbits(128) for _ in range(5000))}
    for start in rng.sample(starts, min(len(starts), 3000)):
        values.update(v % 2**128 for v in (start - 1, start, start + 1))
    ordered = sorted(values)
    hi = np.array([v >> 64 for v in ordered], dtype=np.uint64)
    lo = np.array([v & (2**64 - 1) for v in ordered], dtype=np.uint64)
    got = snap.rows_v6(hi, lo)
    assert got.dtype == np.int64
    assert got.tolist() == [snap.row_of_value(6, v) for v in ordered]
    assert snap.rows_v6(hi[:0], lo[:0]).tolist() == []


def _installed_or_skip() -> Snapshot:
    from regiongate.errors import RegiongateError

    try:
        return open_snapshot(None)
    except (RegiongateError, OSError):
        pytest.skip("no installed snapshot")


def test_lookup_many_text_mixed(tiny_snapshot: Snapshot) -> None:
    ips = ["1.0.0.1", "2001:4000::1", "bogus", "::ffff:3.0.0.200", "10.0.0.1", None]
    cols = tiny_snapshot.lookup_many(ips)
    assert list(cols.country) == ["AU", "JP", "", "CA", "", ""]
    assert list(cols.has_flag(Flag.INVALID)) == [False, False, True, False, False, True]
    assert list(cols.has_flag(Flag.PRIVATE)) == [False, False, False, False, True, False]
    assert list(cols.has_flag(Flag.VPN)) == [False, True, False, False, False, False]
    assert cols.row[2] == -1
    assert tiny_snapshot.origin_for_row(int(cols.row[0])) is tiny_snapshot.lookup("1.0.0.1")


def test_iter_ranges_covers_the_space(tiny_snapshot: Snapshot) -> None:
    for version, top in ((4, 2**32 - 1), (6, 2**128 - 1)):
        ranges = list(tiny_snapshot.iter_ranges(version))
        assert ranges[0][0] == 0 and ranges[-1][1] == top
        for (_, last, row), (first, _, next_row) in itertools.pairwise(ranges):
            assert last + 1 == first and row != next_row


# --- refusing bad files -------------------------------------------------------------------------


def test_truncated_snapshot_refused(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    data = tiny_snapshot_path.read_bytes()
    for cut in (0, 10, 47, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.rgsnap"
        bad.write_bytes(data[:cut])
        with pytest.raises(SnapshotError):
            Snapshot(bad)


def test_corrupt_snapshot_refused(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    data = bytearray(tiny_snapshot_path.read_bytes())
    header_end = 48 + int.from_bytes(data[12:16], "little")
    for pos, match in (
        (60, "header checksum"),
        (len(data) - 5, "body checksum"),
        (header_end + 200, "body checksum"),
    ):
        bad = tmp_path / "bad.rgsnap"
        flipped = bytearray(data)
        flipped[pos] ^= 0x40
        bad.write_bytes(bytes(flipped))
        with pytest.raises(SnapshotError, match=match):
            Snapshot(bad)
    bad.write_bytes(b"XXXXXXXX" + bytes(data[8:]))
    with pytest.raises(SnapshotError, match="bad magic"):
        Snapshot(bad)
    bad.write_bytes(bytes(data[:8]) + (99).to_bytes(4, "little") + bytes(data[12:]))
    with pytest.raises(SnapshotError, match="format v99"):
        Snapshot(bad)
    bad.write_bytes(bytes(data) + b"extra")
    with pytest.raises(SnapshotError, match="truncated or partial"):
        Snapshot(bad)


def test_verify_checks_the_body_of_a_snapshot_opened_without(
    tiny_snapshot_path: Path, tmp_path: Path
) -> None:
    """``verify=False`` opens a snapshot whose body is corrupt (the header still checked);
    ``verify()`` then finds what opening would have."""
    Snapshot(tiny_snapshot_path, verify=False).verify()  # a sound one passes
    data = bytearray(tiny_snapshot_path.read_bytes())
    data[len(data) - 5] ^= 0x40
    bad = tmp_path / "bad.rgsnap"
    bad.write_bytes(bytes(data))
    snap = Snapshot(bad, verify=False)
    with pytest.raises(SnapshotError, match="body checksum"):
        snap.verify()
    data[60] ^= 0x40  # the header is checked either way
    bad.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="header checksum"):
        Snapshot(bad, verify=False)


def test_missing_snapshot_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="regiongate data install"):
        open_snapshot(tmp_path / "nope.rgsnap")


def test_snapshot_survives_replacement_of_its_file(
    tiny_snapshot_path: Path, tmp_path: Path
) -> None:
    live = tmp_path / "live.rgsnap"
    shutil.copy(tiny_snapshot_path, live)
    with Snapshot(live) as snap:
        live.unlink()  # an install renames a new file over it; the mapping stays valid
        assert snap.lookup("1.0.0.1").country == "AU"


def test_header_carries_provenance(tiny_snapshot: Snapshot) -> None:
    h = tiny_snapshot.header
    assert [s["name"] for s in h["sources"]] == ["iana-special", *TINY_ORDER]
    assert h["counts"]["rows"] == tiny_snapshot.rows
    assert len(h["body_sha256"]) == 64 and h["format_version"] == 1
    assert next(s for s in h["sources"] if s["name"] == "csv")["data_date"] == "2026-06-25"


def test_close_unmaps_now(tiny_snapshot_path: Path) -> None:
    snap = Snapshot(tiny_snapshot_path)
    old_lookup = snap.lookup
    assert old_lookup("1.0.0.1").country == "AU"
    snap.close()
    assert snap._mm.closed  # released without waiting for the garbage collector
    with pytest.raises(SnapshotError, match="closed"):
        snap.lookup("1.0.0.1")
    with pytest.raises(ValueError, match="released"):
        old_lookup("1.0.0.2")  # a captured lookup fails loudly, never reads freed memory
    snap.close()  # idempotent


def test_answers_decoded_with_the_collector_paused_and_left_as_found() -> None:
    import gc
    import json

    from regiongate.intel.snapshot import _decode_untracked

    data = json.dumps([[["RU", "UA-43", None, 1, "x", None, None]] * 3] * 2).encode()
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            assert _decode_untracked(data) == json.loads(data)
            assert gc.isenabled() is enabled
            with pytest.raises(ValueError):
                _decode_untracked(b"[[1, 2")  # a damaged section: the error, the state kept
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_answers_are_decoded_one_by_one_where_the_snapshot_says_where(
    tiny_snapshot_path: Path,
) -> None:
    """The answers' text is the compact JSON of them all, byte for byte (what snapshots
    before the spans hold, and what they are still read by); each span decodes to its own
    answer; a snapshot without spans answers the same by decoding them all."""
    import json

    from regiongate.intel.compile import _values_json

    values = [[[None] * 7, ["RU", "UA-43", None, 1, 'a "b", [c]', None, None]],
              [[None] * 7], [[None] * 7, ["CN", None, "Beijing", 2, "é", "vpn", "x"]] * 2]  # fmt: skip
    text, spans, base = _values_json(values)
    assert text == json.dumps(values, separators=(",", ":")).encode()
    for j, answers in enumerate(values):
        for v, answer in enumerate(answers):
            start, end = spans[base[j] + v]
            assert json.loads(text[start:end]) == answer
    with Snapshot(tiny_snapshot_path) as fast, Snapshot(tiny_snapshot_path) as whole:
        del whole._arrays["values_spans"], whole._arrays["values_base"]
        every = json.loads(fast._arrays["values_json"].tobytes())
        assert len(every) == len(fast.header["sources"]) == len(fast._arrays["values_base"])
        for j, answers in enumerate(every):
            for v in range(1, len(answers)):
                assert fast._answer(j, v) == whole._answer(j, v)
                assert fast._answer(j, v).country == answers[v][0]
        assert fast._raw_values is None and whole._raw_values is not None
        with pytest.raises(SnapshotError, match="unreadable"):  # past its source's answers
            fast._answer(0, len(every[0]))
        fast._arrays["values_spans"] = fast._arrays["values_spans"][:1]  # damaged: refused
        fast._answers.clear()
        with pytest.raises(SnapshotError, match="unreadable"):
            fast._answer(len(every) - 1, 1)
