"""``regiongate export``: nginx geo maps and nftables sets compiled from a policy.

Every export is checked against an independent oracle: the policy's decision for each
snapshot range, with exempt networks carved out (netaddr), compared as address sets.
"""

from __future__ import annotations

import bisect
import datetime as dt
import io
import ipaddress
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from netaddr import IPRange, IPSet
from typer.testing import CliRunner

from regiongate.cli.export import export_app
from regiongate.enforce.export import ExportStats, _cidrs, export_nftables, export_nginx_geo
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import Action, Policy, load_policy

ENFORCING = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)
NOTICE = dt.datetime(2024, 7, 1, 12, tzinfo=dt.UTC)
BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

DENY = """
name = "deny-kr-cn"
version = "3"
unsupported = ["KR", "CN"]
{mode}
[exemptions]
accounts = ["acct-1"]
networks = ["4.0.0.128/25", "2001:4001::/64", "192.0.2.0/24"]
"""

Exporter = Callable[..., ExportStats]


@pytest.fixture
def deny_policy(tmp_path: Path) -> Path:
    path = tmp_path / "deny.toml"
    path.write_text(DENY.format(mode=""))
    return path


def run_export(
    exporter: Exporter, snapshot_path: Path, policy: Policy, at: dt.datetime, **kw: object
) -> tuple[str, ExportStats]:
    buf = io.StringIO()
    with Snapshot(snapshot_path, consensus=policy.consensus) as snap:
        stats = exporter(snap, policy, at, buf, **kw)
    return buf.getvalue(), stats


def body_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


# --- the oracle ------------------------------------------------------------------------------


def expected_sets(snapshot_path: Path, policy: Policy, at: dt.datetime) -> dict[Action, IPSet]:
    """Addresses per action, straight from the policy over every snapshot range."""
    phase = policy.phase_at(at.timestamp())
    sets = {a: IPSet() for a in Action}
    with Snapshot(snapshot_path, consensus=policy.consensus) as snap:
        for version in (4, 6):
            make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
            for first, last, row in snap.iter_ranges(version):
                action = policy.engine.explain(snap.origin_for_row(row), phase).action
                sets[action].add(IPRange(str(make(first)), str(make(last))))
    exempt = IPSet(policy.exempt_networks)
    for action in (Action.FLAG, Action.BLOCK):
        sets[Action.ALLOW] |= sets[action] & exempt
        sets[action] -= exempt
    return sets


def parse_geo(text: str) -> tuple[Action, dict[Action, IPSet]]:
    """``default`` and the listed prefixes per action; fails on anything unexpected."""
    lines = body_lines(text)
    if lines[0].startswith("geo "):
        assert lines[-1] == "}"
        lines = lines[1:-1]
    default_line, *entries = lines
    default = Action(re.fullmatch(r"default (\w+);", default_line)[1])  # type: ignore[index]
    sets = {a: IPSet() for a in Action}
    seen: set[str] = set()
    for line in entries:
        net, action = re.fullmatch(r"(\S+/\d+) (allow|flag|block);", line).groups()  # type: ignore[union-attr]
        assert net not in seen
        seen.add(net)
        assert str(ipaddress.ip_network(net)) == net  # canonical, host bits clear
        sets[Action(action)].add(net)
    return default, sets


def parse_nft(text: str, table: str = "regiongate") -> dict[int, list[tuple[str, str]]]:
    """The elements added to ``blocked_v4``/``blocked_v6``, as ``(first, last)`` text."""
    out: dict[int, list[tuple[str, str]]] = {4: [], 6: []}
    for m in re.finditer(rf"add element inet {table} blocked_v([46]) \{{\n(.*?)\n\}}", text, re.S):
        version = int(m[1])
        items = [item.strip() for item in m[2].split(",\n")]
        for item in items:
            assert item and "," not in item
            if "/" in item:
                net = ipaddress.ip_network(item)
                assert str(net) == item
                out[version].append((str(net.network_address), str(net.broadcast_address)))
            elif "-" in item:
                first, last = item.split("-")
                out[version].append((first, last))
            else:
                out[version].append((item, item))
    return out


def nft_set(elements: dict[int, list[tuple[str, str]]]) -> IPSet:
    s = IPSet()
    for version in (4, 6):
        for first, last in elements[version]:
            s.add(IPRange(first, last))
    return s


# --- nginx geo ------------------------------------------------------------------------------


def test_nginx_geo_tiny_api_2024(tiny_snapshot_path: Path) -> None:
    policy = load_policy("api-2024")
    text, stats = run_export(export_nginx_geo, tiny_snapshot_path, policy, ENFORCING)
    assert body_lines(text) == [
        "default allow;",
        "1.0.0.128/25 flag;",  # Tor
        "2.0.0.0/16 block;",  # Crimea
        "4.0.0.0/24 block;",  # CN
        "2001:4000::/64 flag;",  # VPN
    ]
    assert stats.default is Action.ALLOW and stats.entries == 4
    assert stats.lines == len(text.splitlines()) and stats.bytes == len(text.encode())
    # Merged: AU/unknown/US/CA/DE/FR/private neighbours collapse into a few allow ranges.
    assert stats.ranges_v4 == {Action.ALLOW: 4, Action.FLAG: 1, Action.BLOCK: 2}
    assert stats.ranges_v6 == {Action.ALLOW: 2, Action.FLAG: 1, Action.BLOCK: 0}
    assert stats.ranges == {Action.ALLOW: 6, Action.FLAG: 2, Action.BLOCK: 2}
    d = stats.to_dict()
    assert d["phase"] == "enforce" and d["policy"] == "api-2024@2024-07-09"
    assert d["ranges"] == {"allow": 6, "flag": 2, "block": 2}
    json.dumps(d)


def test_nginx_geo_header_and_full_block(tiny_snapshot_path: Path) -> None:
    policy = load_policy("api-2024")
    text, _ = run_export(
        export_nginx_geo, tiny_snapshot_path, policy, ENFORCING, full=True, variable="rg"
    )
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "regiongate export nginx-geo --full" in header
    assert "policy api-2024@2024-07-09" in header
    assert "phase enforce at 2024-08-01T00:00:00+00:00" in header
    assert "snapshot created " in header
    assert "source csv: data date 2026-06-25, 5 ranges" in header
    assert "IPv4 ranges after merging by action: allow 4, flag 1, block 2" in header
    assert "exemptions by\n# account" in header  # what the map cannot express is said
    lines = body_lines(text)
    assert lines[0] == "geo $remote_addr $rg {" and lines[-1] == "}"
    assert "    default allow;" in text.splitlines()


def test_nginx_geo_deterministic(tiny_snapshot_path: Path, deny_policy: Path) -> None:
    for exporter in (export_nginx_geo, export_nftables):
        for ref in ("api-2024", str(deny_policy)):
            a, _ = run_export(exporter, tiny_snapshot_path, load_policy(ref), ENFORCING)
            b, _ = run_export(exporter, tiny_snapshot_path, load_policy(ref), ENFORCING)
            assert a == b


@pytest.mark.parametrize("when", [BEFORE, NOTICE, ENFORCING], ids=["before", "notice", "enforce"])
@pytest.mark.parametrize("ref", ["api-2024", "deny", "sanctions-comprehensive"])
def test_nginx_geo_matches_policy_everywhere(
    tiny_snapshot_path: Path, deny_policy: Path, ref: str, when: dt.datetime
) -> None:
    policy = load_policy(str(deny_policy) if ref == "deny" else ref)
    text, stats = run_export(export_nginx_geo, tiny_snapshot_path, policy, when)
    default, listed = parse_geo(text)
    expected = expected_sets(tiny_snapshot_path, policy, when)
    assert listed[default] == IPSet()
    everything = IPSet(["0.0.0.0/0", "::/0"])
    for action in Action:
        want = expected[action]
        got = listed[action] if action is not default else everything - sum_sets(listed)
        assert got == want, action
    assert stats.entries == sum(len(list(s.iter_cidrs())) for s in listed.values())


def sum_sets(sets: dict[Action, IPSet]) -> IPSet:
    total = IPSet()
    for s in sets.values():
        total |= s
    return total


def test_exempt_networks_become_allow(tiny_snapshot_path: Path, deny_policy: Path) -> None:
    policy = load_policy(deny_policy)
    text, _ = run_export(export_nginx_geo, tiny_snapshot_path, policy, ENFORCING)
    lines = body_lines(text)
    assert "4.0.0.0/25 block;" in lines  # CN minus the exempt 4.0.0.128/25
    assert not any(line.startswith("4.0.0.128") for line in lines)
    # KR 2001:4001::/48 minus the exempt /64
    assert "2001:4001::/64 block;" not in lines
    assert "2001:4001:0:1::/64 block;" in lines and "2001:4001:0:8000::/49 block;" in lines
    assert "2001:4001:1::/48 block;" not in lines
    assert "# Exempt networks map to allow: 4.0.0.128/25, 2001:4001::/64, 192.0.2.0/24" in text
    nft, _ = run_export(export_nftables, tiny_snapshot_path, policy, ENFORCING)
    assert parse_nft(nft) == {
        4: [("4.0.0.0", "4.0.0.127")],
        6: [("2001:4001:0:1::", "2001:4001:0:ffff:ffff:ffff:ffff:ffff")],
    }


def test_before_notice_everything_allowed(tiny_snapshot_path: Path) -> None:
    policy = load_policy("api-2024")
    text, stats = run_export(export_nginx_geo, tiny_snapshot_path, policy, BEFORE)
    assert body_lines(text) == ["default allow;"]
    assert stats.ranges == {Action.ALLOW: 2, Action.FLAG: 0, Action.BLOCK: 0}
    assert stats.phase.label == "before-notice"


def test_bad_names_refused(tiny_snapshot_path: Path) -> None:
    policy = load_policy("api-2024")
    with Snapshot(tiny_snapshot_path) as snap:
        with pytest.raises(ValueError, match="nginx variable"):
            export_nginx_geo(snap, policy, ENFORCING, io.StringIO(), variable="$x y")
        with pytest.raises(ValueError, match="nftables table"):
            export_nftables(snap, policy, ENFORCING, io.StringIO(), table="a b")


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_cidrs_v4_are_the_minimal_cover(a: int, b: int) -> None:
    first, last = min(a, b), max(a, b)
    got = [f"{ipaddress.IPv4Address(n)}/{p}" for n, p in _cidrs(first, last, 32)]
    want = ipaddress.summarize_address_range(
        ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
    )
    assert got == [str(n) for n in want]


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1))
def test_cidrs_v6_are_the_minimal_cover(a: int, b: int) -> None:
    first, last = min(a, b), max(a, b)
    got = [f"{ipaddress.IPv6Address(n)}/{p}" for n, p in _cidrs(first, last, 128)]
    want = ipaddress.summarize_address_range(
        ipaddress.IPv6Address(first), ipaddress.IPv6Address(last)
    )
    assert got == [str(n) for n in want]


def test_cidrs_edges() -> None:
    assert list(_cidrs(0, 2**32 - 1, 32)) == [(0, 0)]
    assert list(_cidrs(0, 2**128 - 1, 128)) == [(0, 0)]
    assert list(_cidrs(2**32 - 1, 2**32 - 1, 32)) == [(2**32 - 1, 32)]
    assert list(_cidrs(5, 4, 32)) == []


# --- nftables -------------------------------------------------------------------------------


@pytest.mark.parametrize("when", [BEFORE, NOTICE, ENFORCING], ids=["before", "notice", "enforce"])
@pytest.mark.parametrize("ref", ["api-2024", "deny", "sanctions-comprehensive"])
def test_nftables_sets_hold_exactly_the_blocked_ranges(
    tiny_snapshot_path: Path, deny_policy: Path, ref: str, when: dt.datetime
) -> None:
    policy = load_policy(str(deny_policy) if ref == "deny" else ref)
    text, stats = run_export(export_nftables, tiny_snapshot_path, policy, when)
    elements = parse_nft(text)
    assert nft_set(elements) == expected_sets(tiny_snapshot_path, policy, when)[Action.BLOCK]
    # Merged: no two elements touch or overlap, and they are in ascending order.
    for version in (4, 6):
        spans = [
            (int(ipaddress.ip_address(a)), int(ipaddress.ip_address(b)))
            for a, b in elements[version]
        ]
        assert all(a <= b for a, b in spans)
        assert all(prev[1] + 1 < nxt[0] for prev, nxt in itertools.pairwise(spans))
        assert len(spans) == (stats.ranges_v4 if version == 4 else stats.ranges_v6)[Action.BLOCK]
    assert stats.entries == len(elements[4]) + len(elements[6])
    assert stats.default is None


def test_nftables_tiny_api_2024_structure(tiny_snapshot_path: Path) -> None:
    policy = load_policy("api-2024")
    text, _ = run_export(export_nftables, tiny_snapshot_path, policy, ENFORCING)
    assert parse_nft(text) == {4: [("2.0.0.0", "2.0.255.255"), ("4.0.0.0", "4.0.0.255")], 6: []}
    assert "add element inet regiongate blocked_v4 {\n    2.0.0.0/16,\n    4.0.0.0/24\n}" in text
    assert "blocked_v6 {" in text and "add element inet regiongate blocked_v6" not in text
    assert "type ipv4_addr" in text and "type ipv6_addr" in text
    assert text.count("flags interval") == 2
    assert "flush set inet regiongate blocked_v4" in text
    assert "chain input" not in text  # only with chain=True


def test_nftables_notice_and_dry_run_block_nothing(
    tiny_snapshot_path: Path, tmp_path: Path
) -> None:
    dry = tmp_path / "dry.toml"
    dry.write_text(DENY.format(mode='mode = "dry-run"'))
    for policy, when in ((load_policy("api-2024"), NOTICE), (load_policy(dry), ENFORCING)):
        text, stats = run_export(export_nftables, tiny_snapshot_path, policy, when)
        assert parse_nft(text) == {4: [], 6: []}
        assert "add element" not in text
        assert stats.ranges[Action.BLOCK] == 0 and stats.ranges[Action.FLAG] > 0
        assert stats.entries == 0


def test_nftables_chain_and_table(tiny_snapshot_path: Path) -> None:
    policy = load_policy("api-2024")
    text, _ = run_export(
        export_nftables, tiny_snapshot_path, policy, ENFORCING, table="edge", chain=True
    )
    assert "table inet edge {" in text
    assert "type filter hook input priority -10; policy accept;" in text
    assert "flush chain inet edge input" in text
    assert "add rule inet edge input ct direction original ip saddr @blocked_v4 drop" in text
    assert "add rule inet edge input ct direction original ip6 saddr @blocked_v6 drop" in text
    assert parse_nft(text, "edge")[4] == [("2.0.0.0", "2.0.255.255"), ("4.0.0.0", "4.0.0.255")]


def _nft_check_usable(tmp_path: Path) -> str:
    nft = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if nft is None:
        pytest.skip("nft is not installed: apt-get install nftables")
    probe = tmp_path / "probe.nft"
    probe.write_text("table inet probe {\n    set s {\n        type ipv4_addr\n    }\n}\n")
    done = subprocess.run(
        [nft, "-c", "-f", str(probe)], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        pytest.skip(f"`nft -c` does not work in this sandbox: {done.stderr.strip()}")
    return nft


@pytest.mark.parametrize("ref", ["api-2024", "deny"])
def test_nftables_file_accepted_by_nft(
    tiny_snapshot_path: Path, deny_policy: Path, tmp_path: Path, ref: str
) -> None:
    nft = _nft_check_usable(tmp_path)
    policy = load_policy(str(deny_policy) if ref == "deny" else ref)
    text, _ = run_export(export_nftables, tiny_snapshot_path, policy, ENFORCING, chain=True)
    path = tmp_path / "regiongate.nft"
    path.write_text(text)
    done = subprocess.run(
        [nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.realdata
def test_nftables_real_data_accepted_by_nft(tmp_path: Path) -> None:
    from tests.conftest import realdata_snapshot

    snapshot = realdata_snapshot()
    nft = _nft_check_usable(tmp_path)
    policy = load_policy("api-2024")
    path = tmp_path / "real.nft"
    with Snapshot(snapshot, consensus=policy.consensus) as snap, path.open("w") as fh:
        stats = export_nftables(snap, policy, ENFORCING, fh, chain=True)
    assert stats.ranges[Action.BLOCK] > 1000
    done = subprocess.run(
        [nft, "-c", "-f", str(path)], capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr[:2000]
    elements = parse_nft(path.read_text())
    assert len(elements[4]) == stats.ranges_v4[Action.BLOCK] > 1000
    assert len(elements[6]) == stats.ranges_v6[Action.BLOCK] > 1000

    def blocked(ip: str) -> bool:
        value = int(ipaddress.ip_address(ip))
        spans = [
            (int(ipaddress.ip_address(a)), int(ipaddress.ip_address(b)))
            for a, b in elements[ipaddress.ip_address(ip).version]
        ]
        k = bisect.bisect_right(spans, (value, 2**128)) - 1
        return k >= 0 and spans[k][0] <= value <= spans[k][1]

    assert [ip for ip in ("114.114.114.114", "5.3.41.1", "178.54.250.1") if not blocked(ip)] == []
    assert not blocked("8.8.8.8")


# --- the command line -----------------------------------------------------------------------

runner = CliRunner()
cli = typer.Typer()
cli.add_typer(export_app, name="export")


def test_cli_nginx_geo_to_file(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "rg.geo"
    args = ["--snapshot", str(tiny_snapshot_path), "--at", "2024-08-01", "-o", str(out)]
    result = runner.invoke(cli, ["export", "nginx-geo", "--policy", "api-2024", *args])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "nginx-geo: api-2024@2024-07-09, phase enforce" in result.stderr
    assert "default allow; 4 entries" in result.stderr
    expected, _ = run_export(
        export_nginx_geo, tiny_snapshot_path, load_policy("api-2024"), ENFORCING
    )
    assert out.read_text() == expected
    assert not list(tmp_path.glob(".rg.geo.*"))  # the temporary file was renamed
    assert out.stat().st_mode & 0o777 == 0o644


def test_cli_nginx_geo_stdout_full_variable(tiny_snapshot_path: Path) -> None:
    result = runner.invoke(
        cli,
        [
            "export",
            "nginx-geo",
            "--policy",
            "api-2024",
            "--snapshot",
            str(tiny_snapshot_path),
            "--at",
            "2024-08-01T00:00:00Z",
            "--full",
            "--variable",
            "rg_act",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "geo $remote_addr $rg_act {" in result.stdout
    assert "2.0.0.0/16 block;" in result.stdout
    assert "nginx-geo:" not in result.stdout  # the summary goes to stderr


def test_cli_nftables_json(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "rg.nft"
    result = runner.invoke(
        cli,
        [
            "export",
            "nftables",
            "--policy",
            "api-2024",
            "--snapshot",
            str(tiny_snapshot_path),
            "--at",
            "2024-08-01",
            "-o",
            str(out),
            "--json",
            "--table",
            "edge",
            "--chain",
        ],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["format"] == "nftables" and stats["entries"] == 2
    assert stats["ranges"]["block"] == 2 and stats["output"] == str(out)
    assert stats["policy"] == "api-2024@2024-07-09" and stats["phase"] == "enforce"
    assert "table inet edge {" in out.read_text()
    # Without -o the data owns stdout; the JSON goes to stderr.
    result = runner.invoke(
        cli,
        [
            "export",
            "nftables",
            "--policy",
            "api-2024",
            "--snapshot",
            str(tiny_snapshot_path),
            "--at",
            "2024-08-01",
            "--json",
        ],
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("# nftables sets")
    assert json.loads(result.stderr)["entries"] == 2


def test_cli_policy_defaults_to_configured_source(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "regiongate.toml"
    config.write_text(
        f'[policy]\nsource = "sanctions-comprehensive"\n[data]\nsnapshot = "{tiny_snapshot_path}"\n'
    )
    result = runner.invoke(
        cli, ["export", "nftables", "--config", str(config), "--at", "2024-08-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stderr)["policy"].startswith("sanctions-comprehensive@")


@pytest.mark.parametrize("command", ["nginx-geo", "nftables"])
def test_cli_missing_snapshot(command: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        cli,
        [
            "export",
            command,
            "--policy",
            "api-2024",
            "--snapshot",
            str(tmp_path / "none.rgsnap"),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert "error:" in result.stderr and "regiongate data install" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["nginx-geo", "nftables"])
def test_cli_bad_policy(command: str, tiny_snapshot_path: Path) -> None:
    result = runner.invoke(
        cli,
        ["export", command, "--policy", "no-such-policy", "--snapshot", str(tiny_snapshot_path)],
    )
    assert result.exit_code == 2
    assert "error:" in result.stderr and "no-such-policy" in result.stderr
    assert result.stdout == ""


def test_cli_bad_arguments(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    snap = ["--snapshot", str(tiny_snapshot_path), "--policy", "api-2024"]
    bad = [
        ["nginx-geo", *snap, "--variable", "$oops"],
        ["nftables", *snap, "--table", "no spaces"],
        ["nftables", *snap, "--at", "yesterday"],
    ]
    for args in bad:
        result = runner.invoke(cli, ["export", *args])
        assert result.exit_code == 2, args
    result = runner.invoke(cli, ["export", "nftables", *snap, "-o", str(tmp_path / "no/dir/f")])
    assert result.exit_code == 2
    assert "cannot write" in result.stderr
