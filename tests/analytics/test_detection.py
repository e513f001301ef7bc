"""``regiongate logs evaluate``: the circumvention score measured on synthetic populations."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from regiongate.accounts.signals import HintReader, Score, cloud_region
from regiongate.analytics.detection import (
    CIRCUMVENTION,
    NEGATIVE_KINDS,
    RESELLER,
    SWEEP,
    DetectionReport,
    LogReplay,
    OrgResult,
    Rates,
    evaluate,
)
from regiongate.analytics.synth import Truth, iter_lines, synthesize
from regiongate.cli.logs import logs_app
from regiongate.clientip import ClientIPConfig, ClientResolver
from regiongate.errors import RegiongateError
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import Context, Policy, load_policy
from tests.conftest import realdata_snapshot

START = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
PROXIES = ("10.0.0.1", "10.0.0.2")
MIX = {"ordinary": 0.4, "unsupported": 0.1, "vpn": 0.1, "reseller": 0.1, "traveller": 0.1,
       "saas": 0.2}  # fmt: skip
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tiny_snapshot_path: Path) -> Iterator[Snapshot]:
    snap = Snapshot(tiny_snapshot_path)
    yield snap
    snap.close()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy("api-2024")


@pytest.fixture(scope="module")
def population(tiny: Snapshot, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    out = tmp_path_factory.mktemp("detection") / "hinted.jsonl"
    truth = synthesize(out, snapshot=tiny, lines=30_000, orgs=40, seed=5, start=START, days=1.0,
                       proxies=list(PROXIES), malformed_share=0.004, mix=MIX,
                       hints=True)  # fmt: skip
    return out, truth


def test_events_are_the_gateways(
    population: tuple[Path, Truth], tiny: Snapshot, policy: Policy
) -> None:
    """Each event is what Accounts.record would write for the line's request."""
    log, truth = population
    replay = LogReplay(log, truth, tiny, policy, secret=b"s")
    events = iter(replay)
    gateway = HintReader(b"s", timezone_header="x-timezone")
    resolver = ClientResolver(ClientIPConfig(trusted_proxies=PROXIES))
    checked = Counter[str]()
    for number, line in enumerate(iter_lines(log), 1):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        event = next(events)
        assert event.id == f"{log.name}:{number}"
        assert (event.org, event.key_id) == (rec["org"], rec["key_id"])
        xff = rec["x_forwarded_for"]
        client = resolver.resolve_text(rec["remote_addr"], {"x-forwarded-for": xff} if xff else {})
        origin = tiny.lookup(client.ip) if client.ip else None
        if origin is None:
            assert event.flags == "invalid" and event.action == "block"
            checked["invalid"] += 1
            continue
        at = dt.datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()
        address = (client.version or 4, client.value) if client.value is not None else None
        decision = policy.decide(origin, Context(at, rec["org"], address))
        assert event.at == at
        assert event.flags == ",".join(sorted(f.value for f in origin.flags))
        assert (event.territory, event.action, event.rule) == (
            decision.territory,
            decision.action.value,
            decision.rule,
        )
        headers = []
        if rec.get("accept_language"):
            headers.append((b"accept-language", rec["accept_language"].encode()))
        if rec.get("timezone"):
            headers.append((b"x-timezone", rec["timezone"].encode()))
        assert event.detail == gateway.read(headers, origin, rec.get("user")), rec
        assert cloud_region(origin) is None or "cloud=" in event.detail
        checked["hints" if event.detail else "plain"] += 1
    assert next(events, None) is None
    assert checked["hints"] > 1000 and checked["plain"] > 100 and checked["invalid"] > 10
    assert replay.malformed == truth.malformed["truncated"] + truth.malformed["garbage"]


def test_evaluate_counts_every_request_and_reports(
    population: tuple[Path, Truth], tiny: Snapshot, policy: Policy
) -> None:
    log, truth = population
    seen = []
    report = evaluate(log, truth, tiny, policy, window=3 * 86400.0, progress=seen.append)
    assert sum(seen) == report.lines == truth.lines
    assert report.malformed == truth.malformed["truncated"] + truth.malformed["garbage"]
    assert report.window == 3 * 86400.0 and report.review == 40 and report.suspend == 75
    by_org = {o.org: o for o in report.orgs}
    assert set(by_org) == {o.org for o in truth.orgs}
    for o in truth.orgs:
        r = by_org[o.org]
        assert r.kind == o.kind
        # A bad address is still a request (from an invalid client): the gateway records it.
        assert r.requests == o.lines + o.bad_address
        assert r.scored == (r.requests >= 50)
        assert r.flagged == (r.scored and r.points >= 40)
        if r.score is not None:
            assert r.score.explain().startswith("circumvention score")
    data = json.loads(json.dumps(report.to_dict()))
    assert [row["threshold"] for row in data["sweep"]] == list(SWEEP)
    assert sum(row["orgs"] for row in data["kinds"]) == len(truth.orgs)
    assert set(data["false_positive_rate"]) == set(NEGATIVE_KINDS)
    resellers = sum(1 for o in truth.orgs if o.kind == "reseller")
    rates = report.rates(RESELLER)
    assert rates.tp + rates.fn == resellers
    assert rates.tp + rates.fp + rates.fn + rates.tn == len(truth.orgs)
    assert data["detection"]["reseller"]["tp"] == rates.tp
    # Scoring again with the same weights changes nothing; with other weights, the scores.
    assert report.rescored(policy).to_dict()["orgs"] == data["orgs"]
    quiet = report.rescored(policy, {**policy.accounts.circumvention.weights, "language": 0})
    assert sum(o.points for o in quiet.orgs) < sum(o.points for o in report.orgs)
    assert quiet.weights["language"] == 0 and quiet.review == report.review


def test_the_policy_window_scores_the_last_day(
    population: tuple[Path, Truth], tiny: Snapshot, policy: Policy
) -> None:
    log, truth = population
    whole = evaluate(log, truth, tiny, policy, window=3 * 86400.0)
    hour = evaluate(log, truth, tiny, policy, window=3600.0)
    assert sum(o.requests for o in hour.orgs) < 0.2 * sum(o.requests for o in whole.orgs)
    with pytest.raises(RegiongateError, match="window"):
        evaluate(log, truth, tiny, policy, window=0.0)


def test_csv_scores_as_jsonl(tiny: Snapshot, policy: Policy, tmp_path: Path) -> None:
    reports = []
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"log.{fmt}"
        truth = synthesize(out, snapshot=tiny, lines=8000, orgs=20, seed=9, start=START,
                           fmt=fmt, mix=MIX, hints=True)  # fmt: skip
        reports.append(evaluate(out, truth, tiny, policy))
    a, b = ({o.org: (o.requests, round(o.points, 6)) for o in r.orgs} for r in reports)
    assert a == b


def _org(
    name: str, kind: str, points: float, scored: bool = True, pattern: str = "fan-out"
) -> OrgResult:
    score = Score(name, points, 100, 86400.0, (), pattern=pattern)
    return OrgResult(org=name, kind=kind, requests=100 if scored else 10, score=score,
                     signals=None, scored=scored, flagged=scored and points >= 40,
                     would_suspend=scored and points >= 75)  # fmt: skip


def test_rates_and_sweep_arithmetic() -> None:
    orgs = (
        _org("r1", "reseller", 80),
        _org("r2", "reseller", 45),
        _org("r3", "reseller", 30),
        _org("v1", "vpn", 90, pattern="anonymized"),  # flagged, but not as a reseller
        _org("s1", "saas", 42),
        _org("s2", "saas", 10),
        _org("o1", "ordinary", 95, scored=False),  # too few requests: never flagged
        _org("x", "unknown", 99),  # not in the truth: not counted
    )
    report = DetectionReport(log="l", policy="p@1", review=40, suspend=75, min_requests=50,
                             window=86400.0, weights={}, lines=0, malformed=0, unidentified=0,
                             first=None, last=None, orgs=orgs)  # fmt: skip
    # a reseller is predicted by the score and the fan-out pattern: v1 is not one
    assert report.rates(RESELLER) == Rates(tp=2, fp=1, fn=1, tn=3)
    assert report.rates(RESELLER).precision == pytest.approx(2 / 3)
    assert report.rates(RESELLER).recall == pytest.approx(2 / 3)
    assert report.rates(CIRCUMVENTION) == Rates(tp=3, fp=1, fn=1, tn=2)
    assert report.rates(RESELLER, 75) == Rates(tp=1, fp=0, fn=2, tn=4)
    assert report.false_positive_rates() == {"ordinary": 0.0, "saas": 0.5, "traveller": None}
    assert Rates(0, 0, 3, 5).precision is None and Rates(0, 2, 0, 5).recall is None
    sweep = {row["threshold"]: row for row in report.sweep()}
    assert sweep[90]["circumvention"]["recall"] == 0.25
    assert sweep[20]["false_positive_rate"]["saas"] == 0.5


def test_bad_inputs_are_clear_errors(
    population: tuple[Path, Truth], tiny: Snapshot, policy: Policy, tmp_path: Path
) -> None:
    log, truth = population
    with pytest.raises(RegiongateError, match="no such log file"):
        evaluate(tmp_path / "nope.jsonl", truth, tiny, policy)
    other = tmp_path / "other.jsonl"
    other.write_text("not a log\n{}\n[1, 2]\n")
    report = evaluate(other, truth, tiny, policy)
    assert report.lines == report.malformed == 3
    assert any("no line could be read" in n for n in report.notes)
    with pytest.raises(RegiongateError, match="logs evaluate reads"):
        evaluate(log, truth, tiny, policy, fmt="parquet")
    broken = tmp_path / "broken.csv"
    broken.write_text("when,who\n1,2\n")
    with pytest.raises(RegiongateError, match="time and remote_addr"):
        evaluate(broken, truth, tiny, policy, fmt="csv")
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    with pytest.raises(RegiongateError, match="cannot read the log"):
        evaluate(gz, truth, tiny, policy)


def test_cli_evaluate(
    population: tuple[Path, Truth], tiny_snapshot_path: Path, tmp_path: Path
) -> None:
    log, truth = population
    snap = ["--snapshot", str(tiny_snapshot_path)]
    result = runner.invoke(logs_app, ["evaluate", str(log), *snap])
    assert result.exit_code == 0, result.output
    for text in ("by kind", "detection", "reseller precision", "threshold sweep", "saas"):
        assert text in result.output, text
    result = runner.invoke(logs_app, ["evaluate", str(log), "--json", "--window", "log", *snap])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    span = [dt.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
            for t in (truth.first_time or "", truth.last_time or "")]  # fmt: skip
    assert data["window"] == pytest.approx(span[1] - span[0] + 1)  # --window log: all of it
    assert data["policy"] == "api-2024@2024-07-09"
    assert {"kinds", "detection", "false_positive_rate", "sweep", "orgs"} <= set(data)
    assert len(data["orgs"]) == len(truth.orgs)
    result = runner.invoke(logs_app, ["evaluate", str(log), "--window", "6h", "--json", *snap])
    assert json.loads(result.stdout)["window"] == 6 * 3600

    def fails(args: list[str], text: str) -> None:
        result = runner.invoke(logs_app, ["evaluate", *args, *snap])
        assert result.exit_code == 2, result.output
        assert text in result.output, result.output

    fails([str(tmp_path / "nope.jsonl")], "no such log file")
    lonely = tmp_path / "lonely.jsonl"
    lonely.write_text(log.read_text().split("\n", 1)[0] + "\n")
    fails([str(lonely)], "no truth file")
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "regiongate-synth-truth/1"}')
    fails([str(log), "--truth", str(damaged)], "damaged")
    damaged.write_text("{")
    fails([str(log), "--truth", str(damaged)], "cannot read the truth")
    fails([str(log), "--window", "soon"], "--window")
    fails([str(log), "--policy", "no-such-policy"], "no-such-policy")


# --- the regression test: measured figures on a fixed population --------------------------------

# The population docs/detection.md reports on (its command line reproduces it):
#   regiongate logs synth eval.jsonl --seed 7 --orgs 200 --lines 500000 --hints \
#     --mix ordinary=0.5,unsupported=0.08,vpn=0.12,reseller=0.06,traveller=0.1,saas=0.14
#   regiongate logs evaluate eval.jsonl
REGRESSION_MIX = {"ordinary": 0.5, "unsupported": 0.08, "vpn": 0.12, "reseller": 0.06,
                  "traveller": 0.1, "saas": 0.14}  # fmt: skip
# Measured with api-2024 (review 40, suspend 75) and the default weights: reseller precision
# 0.769 (10 of the 13 flagged with a fan-out pattern; the other 3 are VPN organisations
# whose exits are plain hosting ranges), recall 0.833 (10 of 12);
# circumvention precision 0.895 (34 of 38), recall 0.944 (34 of 36); false positives 0 of
# 100 ordinary, 0 of 28 saas, 0 of 20 travellers; 23 of 24 vpn organisations would be
# suspended. The floors leave a margin of about one organisation each (the real data
# changes with each `regiongate data install`): a change that costs more than that is a
# regression to explain.
FLOORS = {
    "reseller_precision": 0.70,
    "reseller_recall": 0.74,
    "circumvention_precision": 0.85,
    "circumvention_recall": 0.88,
}
CEILINGS = {"ordinary": 0.02, "saas": 0.08, "traveller": 0.05}


@pytest.mark.realdata
@pytest.mark.slow
def test_detection_on_a_fixed_population(tmp_path: Path) -> None:
    path = realdata_snapshot()
    policy = load_policy("api-2024")
    with Snapshot(path) as snap:
        out = tmp_path / "eval.jsonl"
        truth = synthesize(out, snapshot=snap, lines=500_000, orgs=200, seed=7, hints=True,
                           mix=REGRESSION_MIX)  # fmt: skip
        report = evaluate(out, truth, snap, policy)
    measured: dict[str, Any] = {
        "reseller_precision": report.rates(RESELLER).precision,
        "reseller_recall": report.rates(RESELLER).recall,
        "circumvention_precision": report.rates(CIRCUMVENTION).precision,
        "circumvention_recall": report.rates(CIRCUMVENTION).recall,
    }
    for name, floor in FLOORS.items():
        assert measured[name] is not None and measured[name] >= floor, (name, measured)
    for kind, ceiling in CEILINGS.items():
        rate = report.false_positive_rates()[kind]
        assert rate is not None and rate <= ceiling, (kind, rate)
    vpn = [o for o in report.orgs if o.kind == "vpn"]
    assert sum(o.would_suspend for o in vpn) >= 0.85 * len(vpn)
    # Honest organisations stay far from the suspend threshold.
    honest = [o.points for o in report.orgs if o.kind in NEGATIVE_KINDS]
    assert max(honest) < 40
    # The hard negatives are what they should be: honest, behind one hosting range.
    saas = [o for o in truth.orgs if o.kind == "saas"]
    assert all(o.true_unsupported_share == 0 and o.flags.get("hosting") for o in saas)
