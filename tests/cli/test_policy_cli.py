from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from regiongate.cli import app

runner = CliRunner()


def test_lookup_with_policy_and_dates(tiny_snapshot_path: Path) -> None:
    args = [
        "lookup",
        "2.0.1.1",
        "3.0.0.1",
        "bogus",
        "--json",
        "--policy",
        "api-2024",
        "--snapshot",
        str(tiny_snapshot_path),
    ]
    after = json.loads(runner.invoke(app, [*args, "--at", "2024-08-01"]).stdout)
    crimea, us, bogus = (r["decision"] for r in after)
    assert crimea["action"] == "block" and crimea["territory"] == "UA-43"
    assert crimea["code"] == "unsupported_country_region_territory"
    assert crimea["policy"] == "api-2024@2024-07-09" and crimea["phase"] == "enforce"
    assert us["action"] == "allow" and us["territory"] == "US"
    assert bogus["action"] == "block" and bogus["territory"] is None
    during = json.loads(runner.invoke(app, [*args, "--at", "2024-07-01T12:00:00Z"]).stdout)
    assert during[0]["decision"]["action"] == "flag" and during[0]["decision"]["phase"] == "notice"
    before = json.loads(runner.invoke(app, [*args, "--at", "2024-01-01"]).stdout)
    assert before[0]["decision"]["action"] == "allow"


def test_lookup_policy_errors(tiny_snapshot_path: Path, tmp_path: Path) -> None:
    snap = ["--snapshot", str(tiny_snapshot_path)]
    result = runner.invoke(app, ["lookup", "1.0.0.1", "--policy", "nope", *snap])
    assert result.exit_code == 2 and "no policy file or preset" in result.stderr
    result = runner.invoke(
        app, ["lookup", "1.0.0.1", "--policy", "api-2024", "--at", "someday", *snap]
    )
    assert result.exit_code == 2 and "not an ISO 8601" in result.output
    text = runner.invoke(
        app, ["lookup", "2.0.1.1", "--policy", "api-2024", "--at", "2025-01-01", *snap]
    )
    assert (
        text.exit_code == 0 and "block" in text.output and "UA-43 is not supported" in text.output
    )


def test_policy_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        'name = "g"\nversion = "1"\nsupported = ["US", "UA"]\nunsupported = ["@occupied-ua"]\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\nversion = "1"\nsupported = ["US", "UA-34"]\n')
    result = runner.invoke(app, ["policy", "validate", str(good), "api-2024"])
    assert result.exit_code == 0 and "g@1" in result.output
    result = runner.invoke(app, ["policy", "validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert (
        "bad.toml: supported[1]: 'UA-34' is not an ISO 3166-2 subdivision code; did you mean UA-43?"
        in result.stderr
    )
    result = runner.invoke(app, ["policy", "validate", str(bad), "--json"])
    data = json.loads(result.stdout)
    assert data[0]["valid"] is False and "UA-43" in data[0]["error"]


def test_policy_show() -> None:
    result = runner.invoke(app, ["policy", "show", "api-2024", "--json", "--at", "2024-07-01"])
    data = json.loads(result.stdout)
    assert data["phase"] == "notice" and data["unsupported"] == ["UA-09", "UA-14", "UA-40", "UA-43"]
    assert len(data["supported"]) == 188 and data["response"]["status"] == 403
    result = runner.invoke(app, ["policy", "show", "sanctions-comprehensive"])
    assert result.exit_code == 0 and "UA-43" in result.output and "OFAC" in result.output


def test_policy_diff() -> None:
    result = runner.invoke(
        app,
        [
            "policy",
            "diff",
            "api-2024",
            "api-2024",
            "--at",
            "2024-06-01",
            "--at-b",
            "2024-07-01",
            "--json",
        ],
    )
    changes = {c["territory"]: (c["before"], c["after"]) for c in json.loads(result.stdout)}
    assert changes["CN"] == ("allow", "flag") and changes["UA-43"] == ("allow", "flag")
    assert "US" not in changes and "UA" not in changes
    result = runner.invoke(
        app,
        ["policy", "diff", "sanctions-comprehensive", "api-2024", "--at", "2025-01-01", "--json"],
    )
    changes = {c["territory"]: (c["before"], c["after"]) for c in json.loads(result.stdout)}
    assert changes["CN"] == ("allow", "block") and changes["RU"] == ("allow", "block")
    assert "CU" not in changes and "UA-43" not in changes and "US" not in changes
    result = runner.invoke(app, ["policy", "diff", "api-2024", "api-2024"])
    assert "no territory changes action" in result.output


def test_policy_schema() -> None:
    result = runner.invoke(app, ["policy", "schema"])
    schema = json.loads(result.stdout)
    assert schema["title"] == "regiongate policy" and "actions" in schema["properties"]
