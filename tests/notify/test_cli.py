"""``notices plan`` and ``notices status`` (and ``send``'s input errors) from the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from regiongate.accounts.store.sql import SQLStore
from regiongate.cli.notices import notices_app
from regiongate.notify.model import message_id_for

from .conftest import POLICY, POLICY_REF, org_entry, write_contacts, write_impact

runner = CliRunner()


def run(db_url: str, *args: object) -> Result:
    """``regiongate notices ARGS --store DB_URL`` (``args`` start with ``"notices"``)."""
    assert args[0] == "notices"
    return runner.invoke(notices_app, [*map(str, args[1:]), "--store", db_url])


def run_json(db_url: str, *args: object) -> Any:
    result = run(db_url, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def report(home: Path) -> Path:
    return write_impact(
        home / "impact.json",
        [
            org_entry("acme", requests=1200, affected=300),
            org_entry("globex", requests=50, affected=50, territories={"RU": 30, "UA-43": 20}),
            org_entry("initech", requests=10_000, affected=3),  # 0.03%: below --min-share
            org_entry("hooli", requests=500, affected=100),  # only in the accounts store
            org_entry("umbrella", requests=900, affected=90),  # no contact anywhere
        ],
    )


@pytest.fixture
def contacts(home: Path) -> Path:
    return write_contacts(
        home / "contacts.csv",
        [
            {"org": "acme", "email": "ops@acme.test", "language": "zh-CN", "name": "Acme"},
            {"org": "globex", "email": "sec@globex.test", "webhook_url": "https://hooks.test/g"},
            {"org": "initech", "email": "it@initech.test"},
        ],
    )


def accounts_email(db_url: str, org: str, email: str) -> None:
    store = SQLStore(db_url)
    store.migrate()
    store.upsert_org(org, name=org.title(), email=email, actor="test")
    store.close()


def test_plan_one_notice_per_affected_org_and_channel(
    db_url: str, report: Path, contacts: Path
) -> None:
    accounts_email(db_url, "hooli", "admin@hooli.test")
    doc = run_json(
        db_url, "notices", "plan", "--policy", POLICY, "--impact", report,
        "--contacts", contacts, "--min-share", "0.01", "--product", "Example API",
    )  # fmt: skip
    assert doc["campaign"]["id"] == POLICY_REF and doc["campaign_created"]
    assert doc["campaign"]["enforce_from"] == 1720483200.0
    added = {(d["org"], d["channel"]): d for d in doc["added"]}
    assert set(added) == {
        ("acme", "email"),
        ("globex", "email"),
        ("globex", "webhook"),
        ("hooli", "email"),
    }
    assert added["acme", "email"]["language"] == "zh-Hans"  # from the contacts file
    assert added["hooli", "email"]["recipient"] == "admin@hooli.test"  # from the accounts store
    assert added["globex", "webhook"]["recipient"] == "https://hooks.test/g"
    assert doc["no_contact"] == [
        {"org": "umbrella", "affected_requests": 90, "affected_share": 0.1}
    ]
    assert doc["below_threshold"] == ["initech"]
    # Each notice carries its own evidence and the enforcement date.
    ev = added["globex", "webhook"]["evidence"]
    assert ev["requests"] == 50 and ev["affected_requests"] == 50 and ev["affected_share"] == 1.0
    assert ev["unsupported_territories"] == {"RU": 30, "UA-43": 20}
    assert ev["first_seen"] == "2024-05-01T00:00:03+00:00"
    assert ev["last_seen"] == "2024-06-01T12:00:00+00:00"
    assert ev["enforce_from"] == "2024-07-09T00:00:00+00:00"
    assert ev["org_name"] == "globex" and ev["policy"] == POLICY_REF
    # One Message-ID per (campaign, org), whatever the channel.
    assert added["globex", "email"]["message_id"] == added["globex", "webhook"]["message_id"]
    assert added["acme", "email"]["message_id"] == message_id_for(
        POLICY_REF, "acme", "regiongate.local"
    )


def test_replanning_adds_only_new_orgs(db_url: str, report: Path, contacts: Path) -> None:
    args = ("notices", "plan", "--policy", POLICY, "--impact", report, "--contacts", contacts)
    first = run_json(db_url, *args)
    assert len(first["added"]) == 4
    again = run_json(db_url, *args)
    assert again["added"] == [] and len(again["already_planned"]) == 4
    assert not again["campaign_created"]
    # The next report has one more organisation with a contact: only it is added.
    doc = json.loads(report.read_text())
    doc["orgs"].append(org_entry("stark", requests=100, affected=60))
    report.write_text(json.dumps(doc))
    with contacts.open("a") as f:
        f.write("stark,tony@stark.test,,,\n")
    third = run_json(db_url, *args)
    assert [(d["org"], d["channel"]) for d in third["added"]] == [("stark", "email")]
    status = run_json(db_url, "notices", "status")
    assert status["campaigns"][0]["totals"]["pending"] == 5


def test_plan_lists_orgs_without_contact(db_url: str, report: Path) -> None:
    result = run(db_url, "notices", "plan", "--policy", POLICY, "--impact", report)
    assert result.exit_code == 0, result.output
    assert "0 notices added" in result.stdout
    assert "the enforcement date 2024-07-09 00:00 UTC has passed" in result.stderr
    for org in ("acme", "globex", "initech", "hooli", "umbrella"):
        assert f"no contact: {org}" in result.stderr


def test_plan_skips_entries_that_name_no_organisation(
    db_url: str, home: Path, contacts: Path
) -> None:
    """What `regiongate impact` reports for lines without an org ("(none)") or under an id
    read from the log that is no organisation id is listed, not planned, and not fatal."""
    from regiongate.analytics import impact
    from regiongate.notify import inputs

    assert (inputs.NO_ORG, inputs.KEY_PREFIX) == (impact._NO_ORG, impact.KEY_PREFIX)
    odd = ["(none)", "key:kid_9", "kid\tx", "k" * 300]
    report = write_impact(
        home / "odd.json", [org_entry("acme", requests=1200, affected=300),
                            *(org_entry(o, requests=10, affected=10) for o in odd)],
    )  # fmt: skip
    doc = run_json(db_url, "notices", "plan", "--policy", POLICY, "--impact", report,
                   "--contacts", contacts)  # fmt: skip
    assert [d["org"] for d in doc["added"]] == ["acme"]
    assert doc["not_organisations"] == odd and doc["no_contact"] == []
    result = run(db_url, "notices", "plan", "--policy", POLICY, "--impact", report,
                 "--campaign", "other")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "skipped 4 report entries that name no organisation" in result.stderr
    assert "no contact: (none)" not in result.stderr


def test_plan_thresholds(db_url: str, report: Path, contacts: Path) -> None:
    doc = run_json(
        db_url, "notices", "plan", "--policy", POLICY, "--impact", report,
        "--contacts", contacts, "--min-requests", "100", "--campaign", "big-only",
    )  # fmt: skip
    assert doc["campaign"]["id"] == "big-only"
    assert sorted({d["org"] for d in doc["added"]}) == ["acme"]
    assert sorted(doc["below_threshold"]) == ["globex", "initech", "umbrella"]
    assert [o["org"] for o in doc["no_contact"]] == ["hooli"]  # 100 affected: it counts


def test_plan_input_errors_are_one_line(db_url: str, home: Path, report: Path) -> None:
    base = ("notices", "plan", "--policy", POLICY)
    line = one_line_error(run(db_url, *base, "--impact", home / "missing.json"))
    assert "missing.json: no such file" in line
    broken = home / "broken.json"
    broken.write_text('{"policy": "api-2024@2024-07-09", "orgs": [')
    assert "broken.json:1: not valid JSON" in one_line_error(run(db_url, *base, "--impact", broken))
    bad = write_impact(home / "bad.json", [{**org_entry("acme"), "affected_share": 7}])
    line = one_line_error(run(db_url, *base, "--impact", bad))
    assert "bad.json: orgs[0].affected_share: must be between 0 and 1 (7)" in line
    other = write_impact(home / "other.json", [org_entry("acme")], policy="other@1")
    line = one_line_error(run(db_url, *base, "--impact", other))
    assert "is an impact report for other@1, not for api-2024@2024-07-09" in line
    contacts = write_contacts(home / "c.csv", [{"org": "acme", "email": "not-an-address"}])
    line = one_line_error(run(db_url, *base, "--impact", report, "--contacts", contacts))
    assert "c.csv:2: email 'not-an-address' is not an e-mail address" in line
    typo = home / "typo.csv"
    typo.write_text("org,mail\nacme,x@y.test\n")
    line = one_line_error(run(db_url, *base, "--impact", report, "--contacts", typo))
    assert "typo.csv:1: header: unknown column 'mail'" in line
    lang = write_contacts(home / "l.csv", [{"org": "acme", "email": "a@b.test", "language": "fr"}])
    line = one_line_error(run(db_url, *base, "--impact", report, "--contacts", lang))
    assert "l.csv:2: language 'fr' has no templates" in line
    line = one_line_error(run(db_url, "notices", "plan", "--policy", "nope", "--impact", report))
    assert "no policy file or preset named 'nope'" in line


def test_unreachable_store_is_one_line(report: Path, home: Path) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    url = "postgresql://nobody:secret@127.0.0.1:1/none"
    line = one_line_error(run(url, "notices", "status"))
    assert "store unavailable" in line and "secret" not in line
    line = one_line_error(run(url, "notices", "plan", "--policy", POLICY, "--impact", report))
    assert "store unavailable" in line
    line = one_line_error(run("redis://127.0.0.1:6379/0", "notices", "status"))
    assert "notices need an SQL store" in line
    line = one_line_error(run("sqlite:////proc/forbidden/x.db", "notices", "status"))
    assert "store unavailable" in line


def test_status_counts_and_send_needs_its_configuration(
    db_url: str, report: Path, contacts: Path, home: Path
) -> None:
    run_json(db_url, "notices", "plan", "--policy", POLICY, "--impact", report,
             "--contacts", contacts)  # fmt: skip
    doc = run_json(db_url, "notices", "status")
    (entry,) = doc["campaigns"]
    assert entry["campaign"] == POLICY_REF and entry["total"] == 4
    assert entry["counts"]["email"]["pending"] == 3 and entry["counts"]["webhook"]["pending"] == 1
    assert entry["problems"] == []
    text = run(db_url, "notices", "status")
    assert text.exit_code == 0 and "pending" in text.stdout and POLICY_REF in text.stdout
    assert run(db_url, "notices", "status", "--campaign", "nope").exit_code == 1

    line = one_line_error(run(db_url, "notices", "send", "--sender", "n@provider.test"))
    assert "3 e-mail notices to send, but no --smtp URL" in line
    line = one_line_error(
        run(db_url, "notices", "send", "--smtp", "smtp://127.0.0.1:1", "--sender", "n@p.test")
    )
    assert "1 webhook notices to send, but no --webhook-secret-file" in line
    line = one_line_error(run(db_url, "notices", "send", "--rate", "fast"))
    assert "--rate: rate 'fast' is not N/s" in line
    line = one_line_error(run(db_url, "notices", "send", "--smtp", "http://x"))
    assert "must be smtp://HOST[:PORT]" in line
    line = one_line_error(
        run(db_url, "notices", "send", "--webhook-secret-file", home / "nosecret")
    )
    assert "nosecret: cannot read" in line
