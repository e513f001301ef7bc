"""``regiongate accounts / payments / audit`` against a real SQLite store in a temp dir."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from regiongate.cli.accounts import accounts_app, audit_app, payments_app

runner = CliRunner()

app = typer.Typer()
app.add_typer(accounts_app, name="accounts")
app.add_typer(payments_app, name="payments")
app.add_typer(audit_app, name="audit")

RAW_KEYS = ("sk-acme-RAWSECRET-0001", "sk-acme-RAWSECRET-0002", "sk-globex-RAWSECRET-0003")
KEYS_CSV = (
    "org,name,email,key,label\n"
    f"acme,Acme Corp,ops@acme.test,{RAW_KEYS[0]},prod\n"
    f"acme,,,{RAW_KEYS[1]},dev\n"
    f"globex,Globex,,{RAW_KEYS[2]},\n"
    "initech,Initech,,,\n"
)
PAYMENTS_CSV = (
    "id,org,at,card_country,billing_country,method,currency,amount\n"
    "pay-1,acme,2024-08-01T10:00:00Z,RU,RU,card,usd,20\n"
    "pay-2,globex,1722506400,US,UA-43,card,USD,20.5\n"
    "pay-3,initech,2024-08-01,us,US,card,USD,100\n"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("REGIONGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USER", "tester")
    return tmp_path


@pytest.fixture
def db(home: Path) -> Path:
    return home / "db" / "accounts.db"


def run(db: Path, *args: object, input: str | None = None) -> Result:
    return runner.invoke(app, [*map(str, args), "--store", f"sqlite:///{db}"], input=input)


def run_json(db: Path, *args: object) -> Any:
    result = run(db, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def key_id(raw: str) -> str:
    from regiongate.accounts.service import key_hasher
    from regiongate.config import load_settings

    return key_hasher(load_settings().accounts).key_id(raw)


def orgs(db: Path) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in run_json(db, "accounts", "list")}


# --- accounts import -----------------------------------------------------------------------------


def test_import_keys_csv_hashes_and_never_keeps_the_raw_key(home: Path, db: Path) -> None:
    keys = write(home / "keys.csv", KEYS_CSV)
    result = run(db, "accounts", "import", keys)
    assert result.exit_code == 0, result.output
    assert "orgs created" in result.stdout and "keys added" in result.stdout
    for raw in RAW_KEYS:
        assert raw not in result.output

    assert (home / "home" / "key-secret").is_file()  # created under REGIONGATE_HOME
    listed = orgs(db)
    assert {o: (v["name"], v["state"], v["keys"]) for o, v in listed.items()} == {
        "acme": ("Acme Corp", "active", 2),
        "globex": ("Globex", "active", 1),
        "initech": ("Initech", "active", 0),
    }
    shown = run_json(db, "accounts", "show", "acme")
    assert shown["org"]["email"] == "ops@acme.test"
    assert {k["key_id"]: k["label"] for k in shown["keys"]} == {
        key_id(RAW_KEYS[0]): "prod",
        key_id(RAW_KEYS[1]): "dev",
    }
    assert all(e["actor"] == "cli:tester" for e in shown["audit"])

    again = run_json(db, "accounts", "import", keys)
    assert again == {
        "file": str(keys),
        "dry_run": False,
        "rows": 4,
        "orgs_created": 0,
        "orgs_updated": 0,
        "orgs_unchanged": 3,
        "keys_added": 0,
        "keys_updated": 0,
        "keys_unchanged": 3,
        "keys_revoked": 0,
    }

    run(db, "accounts", "list")  # every command closes the store: files are final
    stored = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())
    assert b"kid_" in stored
    for raw in RAW_KEYS:
        assert raw.encode() not in stored


def test_import_keys_json_jsonl_and_dry_run(home: Path, db: Path) -> None:
    kid = "kid_" + "ab" * 16
    doc = [
        {
            "org": "acme",
            "name": "Acme",
            "key_id": kid.upper().replace("KID_", "kid_"),
            "label": "ci",
        },
        {"org": "hooli", "email": "it@hooli.test", "key": None},
    ]
    data = write(home / "keys.json", json.dumps(doc, indent=2))
    dry = run_json(db, "accounts", "import", data, "--dry-run")
    assert (dry["dry_run"], dry["orgs_created"], dry["keys_added"]) == (True, 2, 1)
    assert orgs(db) == {}

    done = run_json(db, "accounts", "import", data)
    assert (done["orgs_created"], done["keys_added"]) == (2, 1)
    assert [k["key_id"] for k in run_json(db, "accounts", "show", "acme")["keys"]] == [kid]

    lines = "\n".join(
        json.dumps(r)
        for r in (
            {"org": "acme", "key": RAW_KEYS[0], "label": "prod"},
            {"org": "acme", "key_id": kid, "label": "ci-renamed"},
            {"org": "hooli", "name": "Hooli"},
        )
    )
    result = run(db, "accounts", "import", "-", "--format", "jsonl", "--json", input=lines)
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert (counts["keys_added"], counts["keys_updated"], counts["orgs_updated"]) == (1, 1, 1)
    assert RAW_KEYS[0] not in result.output
    shown = run_json(db, "accounts", "show", "acme")
    assert {k["key_id"]: k["label"] for k in shown["keys"]} == {
        kid: "ci-renamed",
        key_id(RAW_KEYS[0]): "prod",
    }
    assert orgs(db)["hooli"]["name"] == "Hooli"

    # The same key for another organisation: refused, naming the owner, nothing written.
    clash = write(home / "clash.csv", f"org,key\nglobex,{RAW_KEYS[0]}\n")
    result = run(db, "accounts", "import", clash)
    assert result.exit_code == 2
    assert "clash.csv:2: row 1: key: already registered to organisation 'acme'" in result.stderr
    assert RAW_KEYS[0] not in result.output
    assert "globex" not in orgs(db)


def test_import_keys_bad_rows_nothing_applied(home: Path, db: Path) -> None:
    bad = write(
        home / "bad.csv",
        "org,name,email,key,key_id,label\n"
        "acme,Acme,,sk-good-0001,,\n"
        ",Nobody,,,,\n"
        "beta,,not-an-email,,,\n"
        "gamma,,,,sk-LEAKED-in-key-id-0002,\n"
        "delta,,,sk-delta-0003,kid_" + "0" * 32 + ",\n"
        "acme,Acme Inc,,,,\n",
    )
    result = run(db, "accounts", "import", bad)
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert "bad.csv:3: row 2: org: is required" in err
    assert "bad.csv:4: row 3: email: 'not-an-email' is not an email address" in err
    assert "bad.csv:5: row 4: key_id: not a key id" in err
    assert "bad.csv:6: row 5: key: give key or key_id, not both" in err
    assert "bad.csv:7: row 6: name: 'Acme Inc' differs from 'Acme' on row 1" in err
    assert "5 bad rows; nothing was imported" in err
    assert "sk-LEAKED" not in result.output and "sk-good" not in result.output
    assert "Traceback" not in result.output
    assert orgs(db) == {}

    header = write(home / "header.csv", "org,api_key\nacme,sk-x\n")
    result = run(db, "accounts", "import", header)
    assert result.exit_code == 2
    assert "header.csv:1: header: unknown field 'api_key'" in result.stderr

    broken = write(home / "broken.json", '[\n  {"org": "acme"},\n  {"org": }\n]\n')
    result = run(db, "accounts", "import", broken)
    assert result.exit_code == 2
    assert "broken.json:3: not valid JSON" in result.stderr

    typed = write(home / "typed.jsonl", '{"org": "acme"}\n[1, 2]\n{"org": 7, "nick": "x"}\n')
    result = run(db, "accounts", "import", typed)
    assert result.exit_code == 2
    assert "typed.jsonl:2: row 2: expected an object, not list" in result.stderr
    assert "typed.jsonl:3: row 3: org: must be a string, not int" in result.stderr
    assert "typed.jsonl:3: row 3: unknown field 'nick'" in result.stderr

    result = run(db, "accounts", "import", home / "missing.csv")
    assert result.exit_code == 2 and "missing.csv: no such file" in result.stderr
    assert orgs(db) == {}


# --- payments import -----------------------------------------------------------------------------


def test_payments_import_suspends_and_is_idempotent(home: Path, db: Path) -> None:
    assert run(db, "accounts", "import", write(home / "keys.csv", KEYS_CSV)).exit_code == 0
    payments = write(home / "payments.csv", PAYMENTS_CSV)

    dry = run_json(db, "payments", "import", payments, "--dry-run")
    assert (dry["new"], dry["suspended"], dry["warned"]) == (3, ["acme", "globex"], [])
    assert {o["state"] for o in orgs(db).values()} == {"active"}

    first = run_json(db, "payments", "import", payments)
    assert first == {
        "file": str(payments),
        "dry_run": False,
        "policy": "api-2024@2024-07-09",
        "rows": 3,
        "new": 3,
        "duplicates": 0,
        "suspended": ["acme", "globex"],
        "warned": [],
    }
    states = {o: v["state"] for o, v in orgs(db).items()}
    assert states == {"acme": "suspended", "globex": "suspended", "initech": "active"}
    shown = run_json(db, "accounts", "show", "acme")
    assert [p["id"] for p in shown["payments"]] == ["pay-1"]
    assert shown["payments"][0]["currency"] == "USD"
    rule = [e for e in shown["audit"] if e["action"] == "state"]
    assert rule[-1]["actor"] == "rule:payments" and rule[-1]["evidence"] == ["pay-1"]
    assert "card RU" in rule[-1]["reason"]
    globex = run_json(db, "accounts", "show", "globex")["audit"][-1]
    assert "billing UA-43" in globex["reason"]

    again = run_json(db, "payments", "import", payments, "--policy", "api-2024")
    assert (again["new"], again["duplicates"], again["suspended"]) == (0, 3, [])

    # Reinstated after review: the same file again does not suspend it a second time.
    assert run(db, "accounts", "reinstate", "acme", "--reason", "card was a test").exit_code == 0
    again = run_json(db, "payments", "import", payments)
    assert (again["new"], again["suspended"]) == (0, [])
    assert orgs(db)["acme"]["state"] == "reinstated"

    text = run(db, "payments", "import", payments)
    assert text.exit_code == 0 and "duplicates" in text.stdout and "api-2024" in text.stdout


def test_payments_policy_option_and_json_lines(home: Path, db: Path) -> None:
    policy = write(
        home / "warn.toml",
        'name = "warn-only"\nversion = "1"\nsupported = ["US"]\n\n[accounts]\npayments = "warn"\n',
    )
    lines = write(
        home / "p.jsonl",
        "\n".join(
            json.dumps(p)
            for p in (
                {"id": "p1", "org": "umbrella", "at": 1722506400, "card_country": "CN",
                 "amount": 5},
                {"id": "p2", "org": "umbrella", "at": "2024-08-02T00:00:00+02:00",
                 "card_country": "US", "amount": "7.50"},
                {"id": "p1", "org": "umbrella", "at": 1722506400, "card_country": "CN",
                 "amount": 5},
            )
        ),
    )  # fmt: skip
    done = run_json(db, "payments", "import", lines, "--policy", policy)
    assert done["policy"] == "warn-only@1"
    assert (done["rows"], done["new"], done["duplicates"]) == (3, 2, 1)
    assert (done["suspended"], done["warned"]) == ([], ["umbrella"])
    paid = run_json(db, "accounts", "show", "umbrella")["payments"]
    assert [(p["id"], p["amount"]) for p in paid] == [("p1", 5.0), ("p2", 7.5)]
    assert paid[1]["at"] == 1722549600.0

    result = run(db, "payments", "import", lines, "--policy", "no-such-policy")
    assert result.exit_code == 2 and "no-such-policy" in result.stderr


def test_payments_bad_rows_nothing_applied(home: Path, db: Path) -> None:
    bad = write(
        home / "bad.csv",
        "id,org,at,card_country,billing_country,method,currency,amount\n"
        "ok-1,acme,2024-08-01,RU,,card,USD,1\n"
        "ok-2,acme,yesterday,US,,card,USD,1\n"
        "ok-3,acme,2024-08-01,Russia,XX,card,USD,1\n"
        "ok-4,acme,2024-08-01,US,UA-99,card,dollars,ten\n"
        ",acme,1722506400000,US,,card,USD,1\n"
        "ok-1,acme,2024-08-01,RU,,card,USD,2\n",
    )
    result = run(db, "payments", "import", bad)
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert "bad.csv:3: row 2: at: 'yesterday' is not ISO 8601" in err
    assert "bad.csv:4: row 3: card_country: 'Russia' is not a country code" in err
    assert "bad.csv:4: row 3: billing_country: 'XX' is not an ISO 3166" in err
    assert "bad.csv:5: row 4: billing_country: 'UA-99'" in err
    assert "bad.csv:5: row 4: amount: 'ten' is not a number" in err
    assert "bad.csv:5: row 4: currency: 'dollars'" in err
    assert "bad.csv:6: row 5: id: is required" in err
    assert "bad.csv:6: row 5: at: " in err and "milliseconds" in err
    assert "bad.csv:7: row 6: id: payment 'ok-1' is also on row 1" in err
    assert "nothing was imported" in err and "Traceback" not in result.output
    assert orgs(db) == {}
    assert run(db, "audit", "export").stdout == ""

    missing = write(home / "cols.csv", "id,org,card_country\np,acme,US\n")
    result = run(db, "payments", "import", missing)
    assert result.exit_code == 2 and "cols.csv:1: header: no 'at' column" in result.stderr


# --- state changes -------------------------------------------------------------------------------


def test_suspend_reinstate_appeal_warn_list_show(home: Path, db: Path) -> None:
    assert run(db, "accounts", "import", write(home / "keys.csv", KEYS_CSV)).exit_code == 0

    result = run(db, "accounts", "warn", "acme", "--reason", "traffic from CN")
    assert result.exit_code == 0, result.output
    assert "acme: active → warned by cli:tester: traffic from CN" in result.stdout
    result = run(db, "accounts", "warn", "acme", "--reason", "again")
    assert result.exit_code == 1 and "acme is already warned: nothing to do" in result.stderr
    result = run(db, "accounts", "reinstate", "acme", "--reason", "too early")
    assert result.exit_code == 1
    assert "warned → reinstated is not allowed" in result.stderr and "--force" in result.stderr

    moved = run_json(
        db, "accounts", "suspend", "acme", "--reason", "payments from RU",
        "--evidence", "pay-9", "--evidence", "ev-1",
    )  # fmt: skip
    assert moved == {
        "org": "acme",
        "changed": True,
        "from": "warned",
        "to": "suspended",
        "actor": "cli:tester",
        "reason": "payments from RU",
        "evidence": ["pay-9", "ev-1"],
        "forced": False,
    }
    assert run(db, "accounts", "appeal", "acme", "--reason", "moved to DE").exit_code == 0
    assert orgs(db)["acme"]["state"] == "appeal_pending"
    assert run(db, "accounts", "reinstate", "acme", "--reason", "appeal upheld").exit_code == 0

    result = run(db, "accounts", "appeal", "globex", "--reason", "nothing to appeal")
    assert result.exit_code == 1 and "active → appeal_pending is not allowed" in result.stderr
    result = run(db, "accounts", "reinstate", "globex", "--reason", "manual", "--force")
    assert result.exit_code == 0 and "(forced)" in result.stdout
    result = run(db, "accounts", "suspend", "nobody", "--reason", "x")
    assert result.exit_code == 1 and "no organisation 'nobody'" in result.stderr
    result = run(db, "accounts", "suspend", "acme", "--reason", "  ")
    assert result.exit_code == 2 and "--reason" in result.output

    listed = run_json(db, "accounts", "list", "--state", "reinstated")
    assert [o["id"] for o in listed] == ["acme", "globex"]
    assert run_json(db, "accounts", "list", "--state", "suspended") == []
    table = run(db, "accounts", "list")
    assert table.exit_code == 0
    assert "reinstated" in table.stdout and "Initech" in table.stdout
    assert "3 organisations" in table.stdout

    shown = run_json(db, "accounts", "show", "acme", "--last", "4")
    assert shown["org"]["state"] == "reinstated"
    changes = [(e["from_state"], e["to_state"]) for e in shown["audit"]]
    assert changes == [
        ("active", "warned"),
        ("warned", "suspended"),
        ("suspended", "appeal_pending"),
        ("appeal_pending", "reinstated"),
    ]
    assert shown["audit"][1]["evidence"] == ["pay-9", "ev-1"]
    assert {e["actor"] for e in shown["audit"]} == {"cli:tester"}
    text = run(db, "accounts", "show", "acme")
    assert text.exit_code == 0 and "appeal upheld" in text.stdout and "prod" in text.stdout
    result = run(db, "accounts", "show", "nobody")
    assert result.exit_code == 1 and "no organisation 'nobody'" in result.stderr


# --- audit export --------------------------------------------------------------------------------


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "at": float(row["at"]),
        "org": row["org"] or None,
        "actor": row["actor"],
        "action": row["action"],
        "reason": row["reason"],
        "from_state": row["from_state"] or None,
        "to_state": row["to_state"] or None,
        "evidence": json.loads(row["evidence"]),
        "detail": json.loads(row["detail"]),
    }


def test_audit_export_jsonl_csv_round_trip(home: Path, db: Path) -> None:
    assert run(db, "accounts", "import", write(home / "keys.csv", KEYS_CSV)).exit_code == 0
    assert run(db, "payments", "import", write(home / "p.csv", PAYMENTS_CSV)).exit_code == 0
    bulk = "id,org,at,card_country\n" + "".join(
        f"b-{i},bulk,{1722506400 + i},US\n" for i in range(1100)
    )
    assert run(db, "payments", "import", write(home / "bulk.csv", bulk)).exit_code == 0
    assert run(db, "accounts", "suspend", "initech", "--reason", 'quote " and, comma\nnewline')

    out = home / "out"
    out.mkdir()
    result = run(db, "audit", "export", "-o", out / "audit.jsonl")
    assert result.exit_code == 0, result.output
    assert (out / "audit.jsonl").stat().st_mode & 0o777 == 0o600  # names people: private
    entries = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert len(entries) > 1100  # more than one page
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert f"{len(entries):,} audit entries" in result.stderr

    result = run(db, "audit", "export", "-o", out / "audit.csv")  # csv from the suffix
    assert result.exit_code == 0, result.output
    with (out / "audit.csv").open(newline="", encoding="utf-8") as fh:
        rows = [_from_csv(r) for r in csv.DictReader(fh)]
    assert rows == entries
    assert sorted(p.name for p in out.iterdir()) == ["audit.csv", "audit.jsonl"]  # no temp files

    stdout = run(db, "audit", "export", "--org", "acme", "--format", "csv")
    assert stdout.exit_code == 0
    acme = [_from_csv(r) for r in csv.DictReader(stdout.stdout.splitlines())]
    assert acme == [e for e in entries if e["org"] == "acme"]
    assert any(e["action"] == "state" and e["actor"] == "rule:payments" for e in acme)

    since = entries[1099]["seq"]
    tail = run(db, "audit", "export", "--since", since)
    assert [json.loads(x) for x in tail.stdout.splitlines()] == entries[1100:]
    assert "initech" in tail.stdout and "rule:payments" not in tail.stdout


# --- a store that does not answer ----------------------------------------------------------------

DOWN = "postgresql://postgres:hunter2@127.0.0.1:1/test"


@pytest.mark.parametrize(
    "args",
    [
        ("accounts", "list"),
        ("accounts", "show", "acme"),
        ("accounts", "suspend", "acme", "--reason", "x"),
        ("accounts", "import", "KEYS"),
        ("accounts", "reviews"),
        ("accounts", "review", "rv_x", "--decision", "dismissed"),
        ("payments", "import", "PAYMENTS"),
        ("audit", "export"),
    ],
)
def test_unreachable_store_exits_2(home: Path, args: tuple[str, ...]) -> None:
    files = {
        "KEYS": str(write(home / "keys.csv", KEYS_CSV)),
        "PAYMENTS": str(write(home / "p.csv", PAYMENTS_CSV)),
    }
    argv = [files.get(a, a) for a in args]
    result = runner.invoke(app, [*argv, "--store", DOWN])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: account store postgresql://postgres:***@127.0.0.1:1/test")
    assert "unavailable" in lines[0]
    assert "hunter2" not in result.output and "Traceback" not in result.output
    assert result.stdout == ""


def test_config_file_store_and_revoked_keys_stay_revoked(home: Path) -> None:
    from regiongate.accounts.store import store_from_url

    url = f"sqlite:///{home / 'cfg' / 'accounts.db'}"
    config = write(home / "regiongate.toml", f'[store]\nurl = "{url}"\n')
    keys = write(home / "keys.csv", KEYS_CSV)
    result = runner.invoke(app, ["accounts", "import", str(keys), "--config", str(config)])
    assert result.exit_code == 0, result.output

    store = store_from_url(url)
    try:
        assert store.revoke_key(key_id(RAW_KEYS[1]), actor="test") is True
    finally:
        store.close()
    result = runner.invoke(
        app, ["accounts", "import", str(keys), "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["keys_revoked"] == 1
    assert f"{key_id(RAW_KEYS[1])} is revoked; left revoked" in result.stderr
    listed = runner.invoke(app, ["accounts", "list", "--config", str(config), "--json"])
    assert {o["id"]: o["keys"] for o in json.loads(listed.stdout)}["acme"] == 1

    result = runner.invoke(app, ["accounts", "list", "--config", str(home / "nope.toml")])
    assert result.exit_code == 2 and "no such configuration file" in result.stderr


# --- the review queue ----------------------------------------------------------------------------


def _open_reviews(db: Path) -> dict[str, str]:
    from regiongate.accounts.store import store_from_url

    store = store_from_url(f"sqlite:///{db}")
    try:
        ids = {}
        for org, score in (("acme", 82.5), ("globex", 45.0)):
            explanation = {
                "score": score,
                "signals": [
                    {"signal": "vpn", "value": 0.9, "weight": 35, "points": 31.5,
                     "detail": "90 of 100 requests (90%) from VPN or proxy ranges"},
                    {"signal": "language", "value": 0.5, "weight": 30, "points": 15.0,
                     "detail": "50 of 100 requests with Accept-Language point to CN"},
                ],
            }  # fmt: skip
            review, opened = store.open_review(
                org, score, explanation, actor="rule:circumvention", at=1000.0
            )
            assert opened
            ids[org] = review.id
        return ids
    finally:
        store.close()


def test_reviews_list_show_and_decide(home: Path, db: Path) -> None:
    ids = _open_reviews(db)
    shown_org = run_json(db, "accounts", "show", "acme")
    assert [r["id"] for r in shown_org["reviews"]] == [ids["acme"]]
    text = run(db, "accounts", "show", "acme")
    assert "circumvention score 82.5" in text.stdout and ids["acme"] in text.stdout
    listed = run_json(db, "accounts", "reviews")
    assert {r["org"] for r in listed} == {"acme", "globex"}
    table = run(db, "accounts", "reviews")
    assert table.exit_code == 0 and "82.5" in table.stdout and "2 reviews" in table.stdout
    shown = run(db, "accounts", "review", ids["acme"])
    assert shown.exit_code == 0, shown.output
    assert "82.5" in shown.stdout and "31.5" in shown.stdout and "VPN" in shown.stdout
    decided = run_json(
        db, "accounts", "review", ids["acme"], "--decision", "suspended", "--note", "reseller"
    )
    assert decided["review"]["status"] == "suspended"
    assert decided["review"]["closed_by"] == "cli:tester"
    assert decided["state_changed"]["state"] == "suspended"
    assert orgs(db)["acme"]["state"] == "suspended"
    dismissed = run_json(db, "accounts", "review", ids["globex"], "--decision", "dismissed")
    assert dismissed["state_changed"] is None and orgs(db)["globex"]["state"] == "active"
    assert run_json(db, "accounts", "reviews") == []
    assert len(run_json(db, "accounts", "reviews", "--status", "all")) == 2
    assert [r["org"] for r in run_json(db, "accounts", "reviews", "--status", "suspended")] == [
        "acme"
    ]
    audit = [json.loads(line) for line in run(db, "audit", "export").stdout.splitlines()]
    assert [e["action"] for e in audit].count("review.close") == 2


def test_review_bad_cases(home: Path, db: Path) -> None:
    ids = _open_reviews(db)
    again = run(db, "accounts", "review", ids["acme"], "--decision", "dismissed")
    assert again.exit_code == 0
    closed = run(db, "accounts", "review", ids["acme"], "--decision", "suspended")
    assert closed.exit_code == 1 and "already closed" in closed.stderr
    missing = run(db, "accounts", "review", "rv_nope")
    assert missing.exit_code == 1 and "no review" in missing.stderr
    bad = run(db, "accounts", "review", ids["globex"], "--decision", "banished")
    assert bad.exit_code == 2
    assert run(db, "accounts", "reviews", "--status", "nope").exit_code == 2
    assert run(db, "accounts", "review", "rv\x01").exit_code in (1, 2)
