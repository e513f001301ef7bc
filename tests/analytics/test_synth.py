"""``regiongate logs synth``: seeded synthetic access logs whose truth a replay can check."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import importlib.util
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from regiongate.accounts.signals import language_country, timezone_country
from regiongate.analytics.synth import (
    FIELDS,
    HINT_FIELDS,
    NGINX_LOG_FORMAT,
    UNKNOWN_LABEL,
    UNSUPPORTED,
    Truth,
    iter_lines,
    synthesize,
    territory_label,
    truth_path,
)
from regiongate.cli.logs import logs_app
from regiongate.clientip import ClientIPConfig, ClientResolver
from regiongate.errors import RegiongateError
from regiongate.intel.model import Flag
from regiongate.intel.snapshot import Snapshot
from tests.conftest import realdata_snapshot

PROXIES = ("10.0.0.1", "10.0.0.2")
ANON = frozenset({Flag.TOR, Flag.VPN, Flag.HOSTING, Flag.PROXY, Flag.RELAY})
START = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
HAS_ZSTD = importlib.util.find_spec("zstandard") is not None
NGINX_LINE = re.compile(
    r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "(\S+) (\S+) HTTP/1\.1" '
    r'(\d{3}) (\d+) "-" "([^"]*)" "([^"]*)" (\S+) (\S+)$'
)
SUFFIX = {None: "", "gzip": ".gz", "zstd": ".zst"}


def _records(path: Path, fmt: str) -> Iterator[dict[str, Any] | None]:
    """Every line of the log as a record of FIELDS (``None``: the line does not parse)."""
    lines = iter_lines(path)
    if fmt == "csv":
        assert next(lines) == ",".join(FIELDS)
        for row in csv.reader(lines):
            yield dict(zip(FIELDS, row, strict=True)) if len(row) == len(FIELDS) else None
        return
    for line in lines:
        if fmt == "jsonl":
            try:
                obj = json.loads(line)
            except ValueError:
                yield None
                continue
            assert list(obj) == list(FIELDS)
            yield obj
        else:
            m = NGINX_LINE.match(line)
            if m is None:
                yield None
                continue
            peer, when, method, path_, status, size, ua, xff, org, key = m.groups()
            t = dt.datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z")
            yield {
                "time": t.isoformat(),
                "remote_addr": peer,
                "x_forwarded_for": None if xff == "-" else xff,
                "org": org,
                "key_id": key,
                "method": method,
                "path": path_,
                "status": status,
                "bytes": size,
                "user_agent": ua,
            }


@dataclass
class Replay:
    """What a line-by-line reading of a synthetic log finds, in the truth's terms."""

    unparsed: int = 0
    bad_address: int = 0
    lines: Counter[str] = field(default_factory=Counter)
    territories: dict[str, Counter[str]] = field(default_factory=dict)
    anonymizer: Counter[str] = field(default_factory=Counter)
    flags: dict[str, Counter[str]] = field(default_factory=dict)
    proxied: Counter[str] = field(default_factory=Counter)
    ipv6: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    forged: int = 0
    times: list[dt.datetime] = field(default_factory=list)


def replay(path: Path, fmt: str, snap: Snapshot) -> Replay:
    resolver = ClientResolver(ClientIPConfig(trusted_proxies=PROXIES))
    r = Replay()
    for rec in _records(path, fmt):
        if rec is None:
            r.unparsed += 1
            continue
        xff = rec["x_forwarded_for"] or None
        client = resolver.resolve_text(rec["remote_addr"], {"x-forwarded-for": xff} if xff else {})
        if client.ip is None:
            r.bad_address += 1
            r.bad[rec["org"]] += 1
            continue
        origin = snap.lookup(client.ip)
        label = territory_label(origin.country, origin.subdivision)
        # The label is where the address really is.
        if label == UNKNOWN_LABEL:
            assert origin.country is None
        else:
            assert label in origin.territories, (client.ip, label, origin)
        org = rec["org"]
        r.lines[org] += 1
        r.keys[rec["key_id"]] += 1
        r.territories.setdefault(org, Counter())[label] += 1
        anon = origin.flags & ANON
        if anon:
            r.anonymizer[org] += 1
            for flag in anon:
                r.flags.setdefault(org, Counter())[str(flag)] += 1
        if rec["remote_addr"] in PROXIES:
            r.proxied[org] += 1
            entries = [e.strip() for e in xff.split(",")] if xff else []
            # A forged entry left of the client never becomes the client.
            untrusted = [e for e in entries if e not in PROXIES]
            assert untrusted[-1] == client.ip
            if len(untrusted) > 1:
                r.forged += 1
        else:
            assert client.ip == rec["remote_addr"]
        if client.version == 6:
            r.ipv6[org] += 1
        r.times.append(dt.datetime.fromisoformat(rec["time"].replace("Z", "+00:00")))
    return r


def check_against_truth(path: Path, fmt: str, snap: Snapshot, truth: Truth) -> Replay:
    r = replay(path, fmt, snap)
    m = truth.malformed
    assert r.unparsed == m["truncated"] + m["garbage"]
    assert r.bad_address == m["bad_address"]
    assert m["total"] == m["truncated"] + m["garbage"] + m["bad_address"]
    assert truth.valid_lines == truth.lines - m["total"] == sum(r.lines.values())
    assert r.forged == truth.forged_xff_lines
    assert sum(r.proxied.values()) == truth.proxied_lines
    for o in truth.orgs:
        assert o.lines == r.lines[o.org], o.org
        assert o.territories == dict(r.territories.get(o.org, {})), o.org
        assert sum(o.user_territories.values()) == o.lines
        assert o.anonymizer_lines == r.anonymizer[o.org], o.org
        assert o.flags == dict(r.flags.get(o.org, {})), o.org
        assert o.proxied_lines == r.proxied[o.org], o.org
        assert o.ipv6_lines == r.ipv6[o.org], o.org
        assert o.bad_address == r.bad[o.org], o.org
        assert o.key_lines == {k: r.keys[k] for k in o.keys}, o.org
        assert all(re.fullmatch(r"kid_[0-9a-f]{32}", k) for k in o.keys)
        assert 1 <= len(o.keys) <= 5
        assert re.fullmatch(rf"org-{o.kind}-\d+", o.org)
        unsupported = sum(c for t, c in o.territories.items() if t in UNSUPPORTED)
        assert o.expected_unsupported_share == pytest.approx(
            unsupported / max(o.lines, 1), abs=1e-6
        )
    assert r.times == sorted(r.times)
    return r


@pytest.fixture(scope="module")
def tiny(tiny_snapshot_path: Path) -> Iterator[Snapshot]:
    snap = Snapshot(tiny_snapshot_path)
    yield snap
    snap.close()


def _synth(snap: Snapshot, out: Path, **kw: Any) -> Truth:
    params: dict[str, Any] = {
        "lines": 20_000,
        "orgs": 30,
        "seed": 7,
        "start": START,
        "days": 2.0,
        "fmt": "jsonl",
        "compress": None,
        "proxies": list(PROXIES),
        "malformed_share": 0.004,
    }
    params.update(kw)
    return synthesize(out, snapshot=snap, **params)


def test_same_seed_same_bytes(tiny: Snapshot, tmp_path: Path) -> None:
    for compress in (None, "gzip"):
        a = _synth(tiny, tmp_path / f"a{SUFFIX[compress]}", compress=compress, chunk_size=3000)
        b = _synth(tiny, tmp_path / f"b{SUFFIX[compress]}", compress=compress, chunk_size=3000)
        assert (tmp_path / f"a{SUFFIX[compress]}").read_bytes() == (
            tmp_path / f"b{SUFFIX[compress]}"
        ).read_bytes()
        assert a.to_dict()["orgs"] == b.to_dict()["orgs"]
    _synth(tiny, tmp_path / "c", seed=8)
    assert (tmp_path / "a").read_bytes() != (tmp_path / "c").read_bytes()


@pytest.mark.parametrize(
    ("fmt", "compress"),
    [
        ("jsonl", None),
        ("csv", None),
        ("nginx", None),
        ("jsonl", "gzip"),
        ("csv", "gzip"),
        ("nginx", "gzip"),
        pytest.param(
            "jsonl",
            "zstd",
            marks=pytest.mark.skipif(not HAS_ZSTD, reason="zstandard is not installed"),
        ),
        pytest.param(
            "nginx",
            "zstd",
            marks=pytest.mark.skipif(not HAS_ZSTD, reason="zstandard is not installed"),
        ),
    ],
)
def test_formats_parse_back_to_the_truth(
    tiny: Snapshot, tmp_path: Path, fmt: str, compress: str | None
) -> None:
    out = tmp_path / f"access.{fmt}{SUFFIX[compress]}"
    truth = _synth(tiny, out, fmt=fmt, compress=compress)
    if compress == "gzip":
        assert out.read_bytes()[:2] == b"\x1f\x8b"
        with gzip.open(out, "rb") as fh:
            fh.read()
    assert Truth.load(truth_path(out)) == truth
    assert truth.header_lines == (1 if fmt == "csv" else 0)
    r = check_against_truth(out, fmt, tiny, truth)
    # A Poisson stream over the requested span.
    assert r.times[0] >= START and r.times[-1] <= START + dt.timedelta(days=2.2)
    assert r.times[-1] >= START + dt.timedelta(days=1.8)
    assert 0.25 < truth.proxied_lines / truth.valid_lines < 0.35


def test_kinds_and_fallbacks_on_a_tiny_snapshot(tiny: Snapshot, tmp_path: Path) -> None:
    truth = _synth(tiny, tmp_path / "log.jsonl", orgs=40)
    kinds = Counter(o.kind for o in truth.orgs)
    assert set(kinds) == {"ordinary", "unsupported", "vpn", "reseller", "traveller"}
    assert sum(kinds.values()) == 40
    # The tiny data has CN and Crimea as the only unsupported territories: every other home
    # fell back to them, and says so.
    for o in truth.orgs:
        if o.kind in ("unsupported", "vpn"):
            assert o.home in ("CN", "UA-43")
            assert o.true_unsupported_share == 1.0
            if o.home_requested != o.home:
                assert o.fallback and o.home_requested in o.fallback
                assert any(f.startswith(f"{o.org}: ") for f in truth.fallbacks)
        if o.kind == "unsupported" and o.lines:
            assert o.expected_unsupported_share == 1.0
            assert o.anonymizer_lines == 0
        if o.kind == "vpn" and o.lines > 50:
            assert o.anonymizer_lines > 0.5 * o.lines
            assert o.flags and set(o.flags) <= {"tor", "vpn"}
            assert o.expected_unsupported_share < 0.5
        if o.kind in ("ordinary", "traveller"):
            assert o.home in ("US", "CA", "DE", "AU")
        if o.kind == "traveller" and o.lines > 200:
            assert o.travel in ("CN", "UA-43")
            assert 0 < o.territories.get(o.travel, 0) < 0.15 * o.lines
        if o.kind == "reseller":
            # No hosting ranges in the tiny data: an anonymizer range stands in, and is noted.
            assert o.fallback and "hosting" in o.fallback
            assert len(o.territories) == 1 and o.anonymizer_lines == o.lines
            assert o.true_unsupported_share > 0.5
            assert o.expected_unsupported_share == 0.0
    # Resellers are among the biggest senders.
    volumes = sorted(o.lines for o in truth.orgs)
    for o in truth.orgs:
        if o.kind == "reseller":
            assert o.lines >= volumes[-4] and o.lines > 0.3 * volumes[-1]


def test_malformed_lines_are_counted(tiny: Snapshot, tmp_path: Path) -> None:
    for fmt in ("jsonl", "csv", "nginx"):
        out = tmp_path / f"bad.{fmt}"
        truth = _synth(tiny, out, fmt=fmt, lines=5000, malformed_share=0.1)
        m = truth.malformed
        assert 350 < m["total"] < 650
        assert min(m["truncated"], m["garbage"], m["bad_address"]) > 50
        assert sum(o.malformed for o in truth.orgs) == m["total"]
        check_against_truth(out, fmt, tiny, truth)


def test_proxies_forged_entries_and_mix(tiny: Snapshot, tmp_path: Path) -> None:
    out = tmp_path / "log.csv"
    truth = _synth(
        tiny,
        out,
        fmt="csv",
        proxies=["192.168.7.7"],
        proxy_share=0.9,
        forged_share=0.5,
        mix={"ordinary": 1.0},
    )
    assert {o.kind for o in truth.orgs} == {"ordinary"}
    assert truth.forged_xff_lines > 0.4 * truth.valid_lines
    resolver = ClientResolver(ClientIPConfig(trusted_proxies=("192.168.7.7",)))
    naive_wrong = 0
    for rec in _records(out, "csv"):
        if rec is None or rec["remote_addr"] != "192.168.7.7":
            continue
        client = resolver.resolve_text(
            rec["remote_addr"], {"x-forwarded-for": rec["x_forwarded_for"]}
        )
        if client.ip is None:
            continue
        left = rec["x_forwarded_for"].split(",")[0].strip()
        naive_wrong += left != client.ip
        assert tiny.lookup(client.ip).country in ("US", "CA", "DE", "AU")
    assert naive_wrong == truth.forged_xff_lines


def test_bad_parameters(tiny: Snapshot, tmp_path: Path) -> None:
    bad: list[dict[str, Any]] = [
        {"fmt": "xml"},
        {"compress": "bz2"},
        {"proxies": ["10.0.0.300"]},
        {"proxies": []},
        {"lines": -1},
        {"orgs": 0},
        {"days": 0.0},
        {"malformed_share": 1.5},
        {"ipv6_share": -0.1},
        {"ipv6_share": 1.01},
        {"proxy_share": 2.0},
        {"mix": {"pirates": 1.0}},
        {"mix": {"ordinary": 0.0}},
        {"compress": "gzip", "compress_level": 12},
        {"compress_level": 3},
    ]
    for kw in bad:
        with pytest.raises(RegiongateError):
            _synth(tiny, tmp_path / "x.jsonl", **kw)
    assert not list(tmp_path.iterdir())


def test_zstd_without_zstandard_is_a_clear_error(
    tiny: Snapshot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if it were not installed
    with pytest.raises(RegiongateError, match="pip install zstandard"):
        _synth(tiny, tmp_path / "x.jsonl.zst", compress="zstd")


def test_empty_log(tiny: Snapshot, tmp_path: Path) -> None:
    truth = _synth(tiny, tmp_path / "empty.csv", fmt="csv", lines=0)
    assert (tmp_path / "empty.csv").read_text() == ",".join(FIELDS) + "\n"
    assert truth.lines == truth.valid_lines == 0 and truth.first_time is None


def test_nginx_format_is_documented() -> None:
    assert NGINX_LOG_FORMAT.startswith("log_format regiongate '$remote_addr - - [$time_local]")
    assert NGINX_LOG_FORMAT.endswith('"$http_x_forwarded_for" $org $key_id\';')


def test_cli(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "access.log.gz"
    args = ["synth", str(out), "--lines", "3000", "--orgs", "12", "--seed", "3"]
    args += ["--format", "nginx", "--compress", "gzip", "--snapshot", str(tiny_snapshot_path)]
    result = runner.invoke(logs_app, args)
    assert result.exit_code == 0, result.output
    assert "reseller" in result.output and "malformed" in result.output
    truth = Truth.load(truth_path(out))
    assert truth.lines == 3000 and truth.params["format"] == "nginx"
    assert len(list(iter_lines(out))) == 3000

    result = runner.invoke(logs_app, [*args, "--format", "yaml"])
    assert result.exit_code == 2 and "yaml" in result.output
    result = runner.invoke(logs_app, ["synth", str(out), "--snapshot", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no snapshot" in result.output
    result = runner.invoke(logs_app, ["synth", str(out), "--start", "yesterday"])
    assert result.exit_code == 2


@pytest.mark.realdata
def test_cli_ipv6_share(tmp_path: Path) -> None:
    """--ipv6 sets the share of home traffic from IPv6 (none at 0; the tiny snapshot has too
    few IPv6 homes, so the real one); out of range is refused."""
    snapshot = realdata_snapshot()
    runner = CliRunner()
    ipv6 = {}
    for share in ("0", "0.6"):
        out = tmp_path / f"v6-{share}.jsonl"
        args = ["synth", str(out), "--lines", "4000", "--orgs", "30", "--seed", "5",
                "--snapshot", str(snapshot), "--ipv6", share]  # fmt: skip
        result = runner.invoke(logs_app, args)
        assert result.exit_code == 0, result.output
        truth = Truth.load(truth_path(out))
        assert truth.params["ipv6_share"] == float(share)
        ipv6[share] = sum(o.ipv6_lines for o in truth.orgs)
        records = [json.loads(line) for line in iter_lines(out)
                   if line.startswith('{"') and line.endswith("}")]  # fmt: skip
        clients = [str(r["x_forwarded_for"] or r["remote_addr"]) for r in records]
        assert any(":" in client for client in clients) == (share != "0")
    assert ipv6["0"] == 0 < ipv6["0.6"]
    result = runner.invoke(logs_app, ["synth", str(tmp_path / "x.jsonl"), "--ipv6", "1.5"])
    assert result.exit_code == 2 and "--ipv6" in result.output


@pytest.mark.realdata
@pytest.mark.slow
def test_real_snapshot_addresses_locate(tmp_path: Path) -> None:
    path = realdata_snapshot()
    with Snapshot(path) as snap:
        out = tmp_path / "real.jsonl.gz"
        truth = synthesize(
            out,
            snapshot=snap,
            lines=200_000,
            orgs=400,
            seed=11,
            fmt="jsonl",
            compress="gzip",
            mix={"ordinary": 0.5, "unsupported": 0.3, "vpn": 0.1, "reseller": 0.02,
                 "traveller": 0.08},
        )  # fmt: skip
        homes = {o.home for o in truth.orgs if o.kind == "unsupported"}
        assert {"CN", "RU", "IR", "UA-43"} <= homes
        for o in truth.orgs:
            if o.home_requested in ("CN", "RU", "IR", "UA-43"):
                assert o.home == o.home_requested and o.fallback is None
        check_against_truth(out, "jsonl", snap, truth)
        for o in truth.orgs:
            if o.kind == "unsupported" and o.lines:
                assert set(o.territories) == {o.home}
            if o.kind == "vpn" and o.lines > 100:
                assert o.anonymizer_lines > 0.5 * o.lines
            if o.kind == "reseller" and o.lines:
                assert o.flags.get("hosting") == o.lines
                assert o.true_unsupported_share > 0.5


# --- the default output, request hints and saas --------------------------------------------------

# sha256 of the default output (lines=20_000, orgs=40, all else default) on the tiny snapshot,
# and of its truth's organisations, recorded before saas and request hints existed: neither
# may change a byte of the default output. (A numpy release that changed the Generator's
# streams would trip this too: regenerate only for such a reason, and say so.)
GOLDEN_LOG = {
    "jsonl": "3cecc798cceb7343d58d8eb1b26435fdc1de95bf3427e4ed307c6b2272ff5a81",
    "csv": "13cf2134c25ecaea900ea9262f26fce037b8110be6255fd43baf71cfc71cd537",
    "nginx": "040fafa5ee8fa3dc814f0df4a77b789642166ab6bbbf174056e4a890017cd888",
}
GOLDEN_ORGS = "8234f28f5b13ddad4308a7814857cd905145e0ad12a7fd4a9e979ed923ba7efe"
FIVE = ["ordinary", "unsupported", "vpn", "reseller", "traveller"]
ALL_KINDS = {"ordinary": 0.4, "unsupported": 0.1, "vpn": 0.1, "reseller": 0.1,
             "traveller": 0.1, "saas": 0.2}  # fmt: skip


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def test_default_output_is_unchanged(tiny: Snapshot, tmp_path: Path) -> None:
    for fmt, digest in GOLDEN_LOG.items():
        out = tmp_path / f"golden.{fmt}"
        truth = synthesize(out, snapshot=tiny, fmt=fmt, lines=20_000, orgs=40)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest, fmt
        data = truth.to_dict()
        assert _digest(data["orgs"]) == GOLDEN_ORGS
        assert list(data["params"]["mix"]) == FIVE and "hints" not in data["params"]
        assert not any("payment_country" in o for o in data["orgs"])


def _hinted(path: Path) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for line in iter_lines(path):
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append(None)
    return out


def test_hints_add_fields_and_change_nothing_else(tiny: Snapshot, tmp_path: Path) -> None:
    mix = {k: v for k, v in ALL_KINDS.items() if k != "saas"}
    plain = _synth(tiny, tmp_path / "plain.jsonl", mix=mix)
    hinted = _synth(tiny, tmp_path / "hinted.jsonl", mix=mix, hints=True)
    a = list(iter_lines(tmp_path / "plain.jsonl"))
    b = list(iter_lines(tmp_path / "hinted.jsonl"))
    assert len(a) == len(b)
    counts: dict[str, Counter[str]] = {}
    for line_a, line_b in zip(a, b, strict=True):
        try:
            rec = json.loads(line_b)
        except ValueError:
            assert line_a == line_b  # a malformed line is the same line
            continue
        if "user" not in rec:
            assert line_a == line_b  # a bad-address line carries no hints
            continue
        assert list(rec) == [*FIELDS, *HINT_FIELDS]
        assert {k: v for k, v in rec.items() if k not in HINT_FIELDS} == json.loads(line_a)
        for name in HINT_FIELDS:
            assert rec[name] is None or (isinstance(rec[name], str) and rec[name])
            if rec[name] is not None:
                counts.setdefault(rec["org"], Counter())[name] += 1
    # The truth: the same, plus what the hints add; it reads back.
    assert hinted.params["hints"] is True and "hints" not in plain.params
    for p, h in zip(plain.orgs, hinted.orgs, strict=True):
        assert p.to_dict() == {
            k: v
            for k, v in h.to_dict().items()
            if k not in ("payment_country", "end_users", "hint_lines")
        }
        assert h.payment_country and h.end_users is not None
        assert h.hint_lines == {n: counts.get(h.org, Counter())[n] for n in HINT_FIELDS}
    assert Truth.load(truth_path(tmp_path / "hinted.jsonl")) == hinted


def test_hints_in_csv(tiny: Snapshot, tmp_path: Path) -> None:
    out = tmp_path / "hinted.csv"
    truth = _synth(tiny, out, fmt="csv", hints=True, lines=5000, mix=ALL_KINDS)
    rows = list(csv.reader(iter_lines(out)))
    assert rows[0] == [*FIELDS, *HINT_FIELDS]
    full = [r for r in rows[1:] if len(r) == len(FIELDS) + len(HINT_FIELDS)]
    assert len(full) > 0.99 * truth.valid_lines
    languages = Counter(r[-2] for r in full if r[-2])
    assert any("," in lang for lang in languages)  # quoted: "en-US,en;q=0.9"
    assert all(r[-1] == "" or "/" in r[-1] or r[-1] == "UTC" for r in full)


def test_hints_are_realistic_per_kind(tiny: Snapshot, tmp_path: Path) -> None:
    out = tmp_path / "kinds.jsonl"
    truth = _synth(tiny, out, lines=60_000, orgs=60, mix=ALL_KINDS, hints=True)
    kinds = Counter(o.kind for o in truth.orgs)
    assert set(kinds) == set(ALL_KINDS)
    users: dict[str, set[str]] = {}
    langs: dict[str, Counter[str | None]] = {}
    zones: dict[str, Counter[str | None]] = {}
    lines = with_zone = 0
    for rec in _hinted(out):
        if rec is None or "user" not in rec:
            continue
        lines += 1
        org = rec["org"]
        if rec["user"] is not None:
            users.setdefault(org, set()).add(rec["user"])
        if rec["accept_language"] is not None:
            langs.setdefault(org, Counter())[language_country(rec["accept_language"])] += 1
        if rec["timezone"] is not None:
            with_zone += 1
            zones.setdefault(org, Counter())[timezone_country(rec["timezone"])] += 1
    assert 0.2 < with_zone / lines < 0.4  # most requests carry no time zone
    bad = set(UNSUPPORTED) | {"RU"}
    for o in truth.orgs:
        country = o.home.split("-")[0]
        said = langs.get(o.org, Counter())
        n = sum(said.values())
        assert o.end_users is not None and len(users.get(o.org, ())) <= o.end_users
        if o.kind in ("ordinary", "traveller", "saas"):
            # People in supported countries: never an unsupported language.
            assert not bad & set(said), (o.org, said)
            assert o.payment_country == country
        if o.kind in ("ordinary", "traveller", "unsupported", "vpn"):
            assert o.end_users <= 40  # an organisation's own few people
            if n >= 30:  # their home's languages wherever their addresses are
                home = said[country] + (said["RU"] if o.home.startswith("UA-") else 0)
                assert home + said[None] + said["US"] >= 0.9 * n, (o.org, said)
                assert home >= 0.5 * n, (o.org, said)
        if o.kind == "vpn" and o.lines > 200 and n >= 30:
            assert o.expected_unsupported_share < 0.5  # the address moved, the language not
        if o.kind == "unsupported":
            assert o.payment_country == country
        if o.kind == "vpn":
            assert o.payment_country == country or o.payment_country not in UNSUPPORTED
        if o.kind in ("reseller", "saas"):
            assert o.end_users == 0 or o.end_users >= 100
            if o.end_users and o.lines > 2000:
                assert len(users[o.org]) > 50  # many end users behind one range
        if o.kind == "reseller" and n >= 100:
            away = sum(c for t, c in said.items() if t in bad)
            assert away >= 0.25 * n, (o.org, said)  # the end users' own languages
            assert o.true_unsupported_share > 0.5
        if o.kind == "saas":
            assert o.true_unsupported_share == 0.0
            assert len(o.territories) == 1 and o.anonymizer_lines == o.lines


def test_saas_has_no_share_by_default(tiny: Snapshot, tmp_path: Path) -> None:
    truth = _synth(tiny, tmp_path / "d.jsonl", lines=1000)
    assert "saas" not in {o.kind for o in truth.orgs}
    truth = _synth(tiny, tmp_path / "s.jsonl", lines=1000, mix={"ordinary": 1, "saas": 1})
    assert Counter(o.kind for o in truth.orgs) == {"ordinary": 15, "saas": 15}
    assert list(truth.params["mix"]) == [*FIVE, "saas"]


def test_hints_need_jsonl_or_csv(tiny: Snapshot, tmp_path: Path, tiny_snapshot_path: Path) -> None:
    with pytest.raises(RegiongateError, match="nginx format has no fields for request hints"):
        _synth(tiny, tmp_path / "x.log", fmt="nginx", hints=True)
    runner = CliRunner()
    out = tmp_path / "y.log"
    args = ["synth", str(out), "--format", "nginx", "--hints"]
    result = runner.invoke(logs_app, [*args, "--snapshot", str(tiny_snapshot_path)])
    assert result.exit_code == 2 and "--hints" in result.output
    assert not list(tmp_path.iterdir())


def test_cli_mix_and_hints(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "mixed.jsonl"
    args = ["synth", str(out), "--lines", "2000", "--orgs", "10", "--hints", "--snapshot",
            str(tiny_snapshot_path)]  # fmt: skip
    result = runner.invoke(logs_app, [*args, "--mix", "ordinary=1,saas=1"])
    assert result.exit_code == 0, result.output
    assert "saas" in result.output
    truth = Truth.load(truth_path(out))
    assert {o.kind for o in truth.orgs} == {"ordinary", "saas"} and truth.params["hints"]
    result = runner.invoke(logs_app, [*args, "--mix", "ordinary=1", "--mix", "vpn=1"])
    assert {o.kind for o in Truth.load(truth_path(out)).orgs} == {"ordinary", "vpn"}
    for bad in ("pirates=1", "saas", "saas=lots", "saas=-1"):
        result = runner.invoke(logs_app, [*args, "--mix", bad])
        assert result.exit_code == 2 and "--mix" in result.output, bad


def test_damaged_truth_is_a_clear_error(tiny: Snapshot, tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    _synth(tiny, out, lines=500)
    path = truth_path(out)
    data = json.loads(path.read_text())
    del data["orgs"][0]["kind"]
    path.write_text(json.dumps(data))
    with pytest.raises(RegiongateError, match="damaged"):
        Truth.load(path)
    del data["lines"]
    path.write_text(json.dumps(data))
    with pytest.raises(RegiongateError, match=r"damaged .*lines"):
        Truth.load(path)
    path.write_text('{"format": "regiongate-synth-truth/1", ')
    with pytest.raises(RegiongateError, match="cannot read the truth"):
        Truth.load(path)
