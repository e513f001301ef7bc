from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from regiongate import __version__
from regiongate.cli import app
from tests.conftest import write_mmdb

runner = CliRunner()


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("lookup", "data"):
        assert command in result.output


def test_the_command_moves_what_its_imports_made_out_of_the_collectors_way() -> None:
    """``main()`` freezes the objects its imports made before the command runs (the
    collector then walks only what the command makes, at exit too); the command still
    answers."""
    import subprocess
    import sys

    code = (
        "import gc, sys\n"
        "from regiongate.cli import main\n"
        "before = gc.get_freeze_count()\n"
        "sys.argv = ['regiongate', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(before, gc.get_freeze_count(), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    before, after = map(int, done.stderr.split())
    assert before == 0 and after > 10_000
    assert __version__ in done.stdout


def test_lookup_json_contract(tiny_snapshot_path: Path) -> None:
    ips = ["2.0.1.1", "1.0.0.200", "10.0.0.1", "not-an-ip", "2001:4000::1"]
    result = runner.invoke(app, ["lookup", *ips, "--json", "--snapshot", str(tiny_snapshot_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["ip"] for d in data] == ips
    for d in data:
        assert set(d) >= {
            "ip",
            "country",
            "subdivision",
            "asn",
            "network",
            "flags",
            "sources",
            "decision",
        }
        assert set(d["decision"]) >= {"action", "code", "territory", "reasons", "policy"}
        # No --policy: the configured one (api-2024 by default) decides.
        assert d["decision"]["policy"] == "api-2024@2024-07-09"
    crimea, tor, private, invalid, v6 = data
    assert crimea["decision"]["action"] == "block"
    assert crimea["decision"]["code"] == "unsupported_country_region_territory"
    assert crimea["decision"]["territory"] == "UA-43"
    assert private["decision"]["action"] == "allow"
    assert invalid["decision"]["action"] == "block"
    assert v6["decision"]["action"] == "flag"  # api-2024: vpn = "flag"
    assert (crimea["country"], crimea["subdivision"]) == ("RU", "UA-43")
    assert crimea["flags"] == ["disputed"]
    assert crimea["network"] == "2.0.0.0/16"
    assert {s["source"]: s.get("country") for s in crimea["sources"]} == {
        "geo-a": "UA",
        "flat": "RU",
        "csv": "RU",
    }
    assert tor["flags"] == ["tor"] and tor["asn"] == 64500
    assert private["flags"] == ["private"] and private["network"] == "10.0.0.0/8"
    assert invalid["flags"] == ["invalid"] and invalid["network"] is None
    assert v6["flags"] == ["vpn"] and v6["country"] == "JP"


def test_lookup_consensus_option(tiny_snapshot_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "lookup",
            "2.0.1.1",
            "--json",
            "--consensus",
            "primary",
            "--snapshot",
            str(tiny_snapshot_path),
        ],
    )
    assert json.loads(result.stdout)[0]["country"] == "UA"
    result = runner.invoke(
        app, ["lookup", "2.0.1.1", "--consensus", "most", "--snapshot", str(tiny_snapshot_path)]
    )
    assert result.exit_code == 2


def test_lookup_text_output(tiny_snapshot_path: Path) -> None:
    result = runner.invoke(app, ["lookup", "2.0.1.1", "--snapshot", str(tiny_snapshot_path)])
    assert result.exit_code == 0
    assert "UA-43" in result.output and "disputed" in result.output and "geo-a" in result.output


def test_lookup_without_data_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path / "empty"))
    result = runner.invoke(app, ["lookup", "8.8.8.8"])
    assert result.exit_code == 2
    assert "regiongate data install" in result.stderr


def test_lookup_corrupt_snapshot(tmp_path: Path, tiny_snapshot_path: Path) -> None:
    bad = tmp_path / "bad.rgsnap"
    bad.write_bytes(tiny_snapshot_path.read_bytes()[:1000])
    result = runner.invoke(app, ["lookup", "8.8.8.8", "--snapshot", str(bad)])
    assert result.exit_code == 2 and "truncated" in result.stderr


def test_data_install_info_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("REGIONGATE_HOME", str(home))
    geo = write_mmdb(tmp_path / "corp.mmdb", [("1.0.0.0/24", {"country": {"iso_code": "AU"}})])
    result = runner.invoke(app, ["data", "install", "--no-defaults", "--from", str(geo), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["changed"] is True and [s["name"] for s in out["sources"]] == ["corp"]
    result = runner.invoke(app, ["data", "install", "--no-defaults"])
    assert result.exit_code == 0 and "already up to date" in result.output
    result = runner.invoke(app, ["data", "info", "--json"])
    assert json.loads(result.stdout)["counts"]["rows"] >= 2
    result = runner.invoke(app, ["data", "info"])
    assert "corp" in result.output
    result = runner.invoke(app, ["lookup", "1.0.0.1", "--json"])
    assert json.loads(result.stdout)[0]["country"] == "AU"
    result = runner.invoke(app, ["data", "remove", "corp"])
    assert result.exit_code == 0
    result = runner.invoke(app, ["data", "remove", "corp"])
    assert result.exit_code == 2 and "no user source" in result.stderr


def test_data_install_bad_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path / "home"))
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["data", "install", "--no-defaults", "--from", str(junk)])
    assert result.exit_code == 2 and "junk.mmdb" in result.stderr
    result = runner.invoke(app, ["data", "install", "--no-defaults", "--from", "ftp://x/y"])
    assert result.exit_code == 2 and "unsupported URL scheme" in result.stderr


def test_serve_refuses_bad_setup(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--upstream", "ftp://x", "--snapshot", str(tmp_path / "s")]
    )
    assert result.exit_code == 2 and "must be an http" in result.stderr
    result = runner.invoke(
        app, ["serve", "--upstream", "http://127.0.0.1:9", "--snapshot", str(tmp_path / "s")]
    )
    assert result.exit_code == 2 and "regiongate data install" in result.stderr
    result = runner.invoke(app, ["serve", "--policy", "nope", "--snapshot", str(tmp_path / "s")])
    assert result.exit_code == 2 and "no policy file or preset" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nhop_limit = 99\n")
    result = runner.invoke(app, ["serve", "--config", str(bad)])
    assert result.exit_code == 2 and "server.hop_limit" in result.stderr
