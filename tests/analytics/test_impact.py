"""`regiongate impact`: every log format, compressed or not, with malformed lines mixed in; the
vectorised replay equals the per-line reference; comparisons, exemptions, reports."""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from regiongate.analytics.impact import FieldMap, LineFilter, replay, replay_reference
from regiongate.clientip import ClientIPConfig
from regiongate.errors import RegiongateError
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import load_policy, parse_policy

PROXY = "10.0.0.1"
CONFIG = ClientIPConfig(trusted_proxies=(f"{PROXY}/32",))
# (time, peer, xff, org): the tiny data has 3.0.0.0/25 US, 4.0.0.0/24 CN, 2.0.0.0/16 Crimea,
# 5.0.0.0/8 DE.
LINES: list[tuple[str, str, str | None, str | None]] = [
    ("2024-06-01T10:00:00Z", "3.0.0.1", None, "org-us"),
    ("2024-06-01T10:00:01Z", "3.0.0.2", None, "org-us"),
    ("2024-06-26T10:00:00Z", "4.0.0.1", None, "org-cn"),  # notice phase: flagged
    ("2024-07-10T10:00:00Z", "4.0.0.9", None, "org-cn"),  # enforcement: blocked
    ("2024-07-10T11:00:00Z", PROXY, "4.0.0.7", "org-cn"),  # via the trusted proxy
    ("2024-07-10T11:00:01Z", PROXY, "3.0.0.1, 4.0.0.8", "org-cn"),  # forged left entry
    ("2024-07-10T11:00:02Z", "4.0.0.2", "3.0.0.1", "org-cn"),  # untrusted peer: XFF ignored
    ("2024-07-11T09:00:00Z", PROXY, f"2.0.1.1, {PROXY}", "org-crimea"),  # two hops
    ("2024-07-11T09:00:01Z", "5.0.0.1", None, "org-de"),
    ("2024-07-11T09:00:02Z", PROXY, "[2001:db8::1]:443", "org-de"),  # bracketed v6 + port
    ("2024-07-11T09:00:03Z", PROXY, "not-an-ip", "org-bad"),  # invalid client: blocked
    ("2024-07-11T09:00:04Z", "3.0.0.3", None, None),  # no organisation
    ("1718000000", "3.0.0.4", None, "org-us"),  # epoch seconds
]


def write_jsonl(path: Path, lines: list[Any], malformed: int = 2) -> None:
    with _open(path) as fh:
        for t, peer, xff, org in lines:
            rec = {"time": t, "remote_addr": peer, "x_forwarded_for": xff or "", "org": org,
                   "key_id": "kid_0", "path": "/v1/chat/completions", "status": 200}  # fmt: skip
            if org is None:
                del rec["org"]
            fh.write(json.dumps(rec) + "\n")
        for i in range(malformed):
            fh.write(['{"time": "2024-07-01T00:00:00Z", "remote_', "garbage"][i % 2] + "\n")


def write_csv(path: Path, lines: list[Any]) -> None:
    with _open(path) as fh:
        w = csv.writer(fh)
        w.writerow(["time", "remote_addr", "x_forwarded_for", "org", "key_id"])
        for t, peer, xff, org in lines:
            w.writerow([t, peer, xff or "", org or "", "kid_0"])
        fh.write("not,a,valid,row,with,too,many,columns\n")
        w.writerow(["yesterday", "3.0.0.1", "", "org-us", "kid_0"])  # unreadable time


def write_nginx(path: Path, lines: list[Any]) -> None:
    import datetime as dt

    with _open(path) as fh:
        for t, peer, xff, org in lines:
            when = (
                dt.datetime.fromtimestamp(float(t), dt.UTC)
                if t.isdigit()
                else dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
            )
            local = when.strftime("%d/%b/%Y:%H:%M:%S +0000")
            fh.write(f'{peer} - - [{local}] "POST /v1/chat/completions HTTP/1.1" 200 512 "-" '
                     f'"OpenAI/Python 1.0" "{xff or "-"}" {org or "-"} kid_0\n')  # fmt: skip
        fh.write("this is not a log line\n")


def _open(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8")
    if path.suffix == ".zst":
        import zstandard

        raw = path.open("wb")
        return io.TextIOWrapper(zstandard.ZstdCompressor().stream_writer(raw), encoding="utf-8")
    return path.open("w", encoding="utf-8", newline="")


@pytest.fixture
def snap(tiny_snapshot_path: Path) -> Any:
    s = Snapshot(tiny_snapshot_path)
    yield s
    s.close()


def run(files: list[Path], snap: Snapshot, **kw: Any) -> dict[str, Any]:
    report = replay([str(f) for f in files], policy=load_policy("api-2024"), snapshot=snap,
                    client_ip=CONFIG, batch_size=4, **kw)  # fmt: skip
    return report.to_dict()


def reference(files: list[Path], snap: Snapshot, **kw: Any) -> dict[str, Any]:
    report = replay_reference([str(f) for f in files], policy=load_policy("api-2024"),
                              snapshot=snap, client_ip=CONFIG, **kw)  # fmt: skip
    return report.to_dict()


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The same report, down to the order of every mapping in it (ties by name): the bytes
    written do not depend on batch sizes or on which replay counted."""
    for key in ("lines", "totals", "days", "orgs"):
        assert a[key] == b[key], key
        assert json.dumps(a[key]) == json.dumps(b[key]), key


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
@pytest.mark.parametrize(
    ("fmt", "writer"), [("jsonl", write_jsonl), ("csv", write_csv), ("nginx", write_nginx)]
)
def test_each_format_equals_the_reference(
    tmp_path: Path, snap: Snapshot, fmt: str, writer: Any, suffix: str
) -> None:
    name = {"jsonl": "access.jsonl", "csv": "access.csv", "nginx": "access.log"}[fmt]
    path = tmp_path / (name + suffix)
    writer(path, LINES)
    got = run([path], snap)
    same(got, reference([path], snap))
    assert got["lines"]["total"] == len(LINES) + 2 - (fmt == "nginx")
    assert got["lines"]["malformed"] == 2 - (fmt == "nginx")
    orgs = {o["org"]: o for o in got["orgs"]}
    assert orgs["org-cn"]["requests"] == 5 and orgs["org-cn"]["affected_requests"] == 5
    assert orgs["org-cn"]["actions"] == {"allow": 0, "flag": 1, "block": 4}
    assert orgs["org-cn"]["unsupported_territories"] == {"CN": 5}
    assert orgs["org-us"]["affected_requests"] == 0 and orgs["org-us"]["requests"] == 3
    assert orgs["org-crimea"]["unsupported_territories"] == {"UA-43": 1}
    assert orgs["org-bad"]["affected_requests"] == 1  # invalid client: api-2024 blocks
    assert orgs["key:kid_0"]["requests"] == 1  # no organisation: its key id stands for one
    assert orgs["org-cn"]["first_seen"] == "2024-06-26T10:00:00+00:00"


def test_parquet_equals_jsonl(tmp_path: Path, snap: Snapshot) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "time": [t for t, *_ in LINES], "remote_addr": [p for _, p, _, _ in LINES],
        "x_forwarded_for": [x for *_, x, _ in LINES], "org": [o for *_, o in LINES],
        "key_id": ["kid_0"] * len(LINES),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "access.parquet")
    write_jsonl(tmp_path / "access.jsonl", LINES, malformed=0)
    a = run([tmp_path / "access.parquet"], snap)
    b = run([tmp_path / "access.jsonl"], snap)
    same(a, b)


def test_several_files_and_batches(tmp_path: Path, snap: Snapshot) -> None:
    write_jsonl(tmp_path / "a.jsonl", LINES[:6])
    write_jsonl(tmp_path / "b.jsonl", LINES[6:])
    write_jsonl(tmp_path / "all.jsonl", LINES, malformed=4)
    same(
        run([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], snap), run([tmp_path / "all.jsonl"], snap)
    )


def test_counts_merged_along_the_way_equal_the_reference(
    tmp_path: Path, snap: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-organisation counts kept over many batches are merged as they grow (memory stays
    bounded by the distinct pairs): merged after every batch, the report is the same."""
    import regiongate.analytics.impact as impact

    write_jsonl(tmp_path / "all.jsonl", LINES, malformed=4)
    merges: list[int] = []
    merged = impact._merged

    def counting(parts: Any) -> Any:
        merges.append(len(parts))
        return merged(parts)

    against = {"against": load_policy("sanctions-comprehensive")}
    unmerged = run([tmp_path / "all.jsonl"], snap, **against)
    monkeypatch.setattr(impact, "_MERGE_KEYS", 1)
    monkeypatch.setattr(impact, "_merged", counting)
    same(run([tmp_path / "all.jsonl"], snap), reference([tmp_path / "all.jsonl"], snap))
    assert max(merges) == 2  # never more than the merged part and the new batch's
    fast = run([tmp_path / "all.jsonl"], snap, **against)  # the changes too
    same(fast, unmerged)
    assert fast["totals"]["changed"] == unmerged["totals"]["changed"] != {}


def test_changes_are_counted_over_the_lines_kept(tmp_path: Path, snap: Snapshot) -> None:
    """With a filter, what changes from the other policy is what changes on the lines the
    filter keeps: the same as in a log of those lines alone."""
    against = load_policy("sanctions-comprehensive")
    write_routed(tmp_path / "all.jsonl", "jsonl")
    write_routed(tmp_path / "kept.jsonl", "jsonl", only=KEEP)
    got = run([tmp_path / "all.jsonl"], snap, keep=KEEP, key_orgs=KEY_ORGS, against=against)
    alone = run([tmp_path / "kept.jsonl"], snap, key_orgs=KEY_ORGS, against=against)
    everything = run([tmp_path / "all.jsonl"], snap, key_orgs=KEY_ORGS, against=against)
    assert got["totals"]["changed"] == alone["totals"]["changed"] != {}
    assert got["totals"]["changed"] != everything["totals"]["changed"]  # the filter matters
    assert {o["org"]: o["changed"] for o in got["orgs"]} == {
        o["org"]: o["changed"] for o in alone["orgs"]
    }


def test_at_decides_every_line_at_one_time(tmp_path: Path, snap: Snapshot) -> None:
    write_jsonl(tmp_path / "a.jsonl", LINES)
    before = run([tmp_path / "a.jsonl"], snap, at=1717200000.0)  # 2024-06-01: before notice
    assert before["totals"]["by_action"] == {"allow": 13, "flag": 0, "block": 0}
    orgs = {o["org"]: o for o in before["orgs"]}
    # Affected means blocked once enforcement is on, whatever --at says about now.
    assert orgs["org-cn"]["affected_requests"] == 5
    same(before, reference([tmp_path / "a.jsonl"], snap, at=1717200000.0))


def test_against_reports_what_changes(tmp_path: Path, snap: Snapshot) -> None:
    write_jsonl(tmp_path / "a.jsonl", LINES)
    report = replay([str(tmp_path / "a.jsonl")], policy=load_policy("api-2024"), snapshot=snap,
                    against=load_policy("sanctions-comprehensive"), client_ip=CONFIG)  # fmt: skip
    data = report.to_dict()
    assert data["against"].startswith("sanctions-comprehensive@")
    orgs = {o["org"]: o for o in data["orgs"]}
    # CN is fine under the sanctions list, unsupported under api-2024.
    assert orgs["org-cn"]["changed"] == {"allow->block": 4, "allow->flag": 1}
    assert orgs["org-us"]["changed"] == {}
    assert data["totals"]["changed"]["allow->block"] >= 4


def test_exempt_org_and_network(tmp_path: Path, snap: Snapshot) -> None:
    write_jsonl(tmp_path / "a.jsonl", LINES)
    base = load_policy("api-2024").to_dict()
    doc = {
        "name": "exempting", "version": "1", "supported": base["supported"],
        "notice_from": "2024-06-25", "enforce_from": "2024-07-09",
        "exemptions": {"accounts": ["org-cn"], "networks": ["2.0.1.0/24"]},
    }  # fmt: skip
    policy = parse_policy(doc)
    got = replay([str(tmp_path / "a.jsonl")], policy=policy, snapshot=snap, client_ip=CONFIG)
    ref = replay_reference([str(tmp_path / "a.jsonl")], policy=policy, snapshot=snap,
                           client_ip=CONFIG)  # fmt: skip
    same(got.to_dict(), ref.to_dict())
    orgs = {o["org"]: o for o in got.to_dict()["orgs"]}
    assert orgs["org-cn"]["affected_requests"] == 0
    assert orgs["org-crimea"]["affected_requests"] == 0


def test_field_mapping(tmp_path: Path, snap: Snapshot) -> None:
    path = tmp_path / "custom.jsonl"
    with path.open("w") as fh:
        for t, peer, xff, org in LINES:
            rec = {"@timestamp": t, "client": peer, "fwd": xff, "tenant": org, "api_key": "kid_0"}
            fh.write(json.dumps(rec) + "\n")
    fields = FieldMap.parse(["time=@timestamp", "peer=client", "xff=fwd", "org=tenant",
                             "key=api_key"])  # fmt: skip
    write_jsonl(tmp_path / "std.jsonl", LINES, malformed=0)
    same(run([path], snap, fields=fields), run([tmp_path / "std.jsonl"], snap))
    # without a key field a line without an organisation is no one's
    orgs = run([path], snap, fields=FieldMap.parse(["key="], fields))["orgs"]
    assert "(none)" in {o["org"] for o in orgs} and "key:kid_0" not in {o["org"] for o in orgs}
    with pytest.raises(RegiongateError, match="NAME=COLUMN"):
        FieldMap.parse(["where=x"])
    with pytest.raises(RegiongateError, match="needs a column"):
        FieldMap.parse(["time="])


# (path, status, org, key) per line, over LINES' times and addresses: what the filter keeps,
# whose the line is when it names no organisation.
ROUTED: list[tuple[str | None, Any, str | None, str | None]] = [
    ("/v1/chat/completions", 200, "org-us", "kid_us"),
    ("/healthz", 200, "org-us", "kid_us"),  # not the API: filtered
    ("/v1/embeddings", 429, None, "kid_cn"),  # the key's organisation (the store's)
    ("/v1/chat/completions", 401, None, "kid_cn"),  # 4xx other than 429: filtered
    ("/v1/models", "200", None, "kid_unknown"),  # a key no one owns: its own line in the report
    ("/v1/chat/completions", 500, "org-cn", "kid_cn"),  # filtered
    ("/v1/responses?stream=true", 204, None, None),  # no org, no key: (none)
    ("/v2/x", 200, "org-crimea", None),  # filtered
    (None, 200, "org-de", "kid_de"),  # no path: filtered
    ("/v1/chat/completions", 2000, "org-de", None),  # not a status: filtered
    ("/v1/chat/completions", None, "org-bad", None),  # no status: filtered
    ("/v1/chat/completions", 201, None, None),
    ("/v1/chat/completions", 299, "org-us", "kid_us"),
]
KEEP = LineFilter.parse(["/v1/"], ["2xx", "429"])
KEY_ORGS = {"kid_cn": "org-cn", "kid_us": "org-us"}


def write_routed(path: Path, fmt: str, only: LineFilter | None = None) -> None:
    """LINES with ROUTED's path, status, org and key, in ``fmt``; ``only``: just the lines
    it keeps."""
    import datetime as dt

    rows = [(t, peer, xff, *r) for (t, peer, xff, _), r in zip(LINES, ROUTED, strict=True)]
    if only is not None:
        rows = [row for row in rows if only.keeps(row[3], row[4])]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = ["time", "remote_addr", "x_forwarded_for", "path", "status", "org", "key_id"]
        cols = list(zip(*rows, strict=True))
        cols[4] = tuple(None if s is None else str(s) for s in cols[4])
        pq.write_table(pa.table(dict(zip(names, cols, strict=True))), path)
        return
    with _open(path) as fh:
        if fmt == "csv":
            w = csv.writer(fh)
            w.writerow(["time", "remote_addr", "x_forwarded_for", "path", "status", "org",
                        "key_id"])  # fmt: skip
            for t, peer, xff, route, status, org, key in rows:
                w.writerow([t, peer, xff or "", route or "", "" if status is None else status,
                            org or "", key or ""])  # fmt: skip
            return
        for t, peer, xff, route, status, org, key in rows:
            if fmt == "jsonl":
                rec = {"time": t, "remote_addr": peer, "x_forwarded_for": xff, "path": route,
                       "status": status, "org": org, "key_id": key}  # fmt: skip
                fh.write(json.dumps({k: v for k, v in rec.items() if v is not None}) + "\n")
                continue
            when = (dt.datetime.fromtimestamp(float(t), dt.UTC) if t.isdigit()
                    else dt.datetime.fromisoformat(t.replace("Z", "+00:00")))  # fmt: skip
            request = f"POST {route} HTTP/1.1" if route else "-"
            code = int(status) if str(status).isdigit() and 100 <= int(status) <= 999 else 0
            if code == 0:  # nginx always logs three digits: an odd status becomes a bad one
                code, request = 200, "BREW"
            fh.write(f'{peer} - - [{when.strftime("%d/%b/%Y:%H:%M:%S +0000")}] "{request}" '
                     f'{code} 1 "-" "ua" "{xff or "-"}" {org or "-"} {key or "-"}\n')  # fmt: skip


@pytest.mark.parametrize(("fmt", "name"), [("jsonl", "r.jsonl"), ("csv", "r.csv.gz"),
                                           ("nginx", "r.log.zst"), ("parquet", "r.parquet")])  # fmt: skip
def test_path_status_filter_and_key_owners(
    tmp_path: Path, snap: Snapshot, fmt: str, name: str
) -> None:
    path = tmp_path / name
    write_routed(path, fmt)
    got = run([path], snap, keep=KEEP, key_orgs=KEY_ORGS)
    if fmt != "parquet":  # the reference reads text logs; parquet is checked against jsonl
        same(got, reference([path], snap, keep=KEEP, key_orgs=KEY_ORGS))
    else:
        write_routed(tmp_path / "r.jsonl", "jsonl")
        same(got, run([tmp_path / "r.jsonl"], snap, keep=KEEP, key_orgs=KEY_ORGS))
    assert got["lines"] == {"total": 13, "parsed": 13, "malformed": 0, "filtered": 7}
    assert got["filter"] == {"paths": ["/v1/"], "statuses": ["200-299", "429"]}
    orgs = {o["org"]: o["requests"] for o in got["orgs"]}
    assert orgs == {"org-us": 2, "org-cn": 1, "key:kid_unknown": 1, "(none)": 2}
    # without the store's keys a key stands for itself; without a filter every line counts
    plain = run([path], snap, key_orgs=None)
    assert plain["lines"]["filtered"] == 0
    assert {o["org"]: o["requests"] for o in plain["orgs"]}["key:kid_cn"] == 2


def test_line_filter_rules_and_bad_specs() -> None:
    keep = LineFilter.parse(["/v1/", "/v1/"], ["200", "4xx,500-503"])
    assert keep.paths == ("/v1/",) and keep.statuses == ((200, 200), (400, 499), (500, 503))
    assert keep.keeps("/v1/x", 404) and keep.keeps("/v1/x", "503")
    assert not keep.keeps("/v1/x", 504) and not keep.keeps("/v2", 200)
    assert not keep.keeps("/v1/x", " 200") and not keep.keeps("/v1/x", True)
    assert not keep.keeps(None, 200) and not keep.keeps("/v1/x", None)
    assert not LineFilter() and LineFilter().keeps(None, None)
    for bad in ("2x", "600", "299-200", "20", "abc", ""):
        with pytest.raises(RegiongateError, match="--status"):
            LineFilter.parse(statuses=[bad])
    for bad in ("v1", "/v1 /x", ""):
        with pytest.raises(RegiongateError, match="--path"):
            LineFilter.parse(paths=[bad])


def test_csv_without_optional_columns_and_without_required_ones(
    tmp_path: Path, snap: Snapshot
) -> None:
    path = tmp_path / "lean.csv"
    path.write_text("time,remote_addr\n2024-07-10T10:00:00Z,4.0.0.1\n")
    got = run([path], snap)  # no xff, org, key columns: they read as empty
    assert got["orgs"][0]["org"] == "(none)" and got["orgs"][0]["affected_requests"] == 1
    with pytest.raises(RegiongateError, match="no column 'path'"):
        run([path], snap, keep=LineFilter.parse(["/v1/"]))  # the filter needs its column
    with pytest.raises(RegiongateError, match="no column 'client'"):
        run([path], snap, fields=FieldMap.parse(["peer=client"]))
    for option, fields in (("--path", ["path="]), ("--status", ["status="])):
        keep = LineFilter.parse(["/v1/"] if option == "--path" else [], ["2xx"])
        for replayer in (run, reference):  # a filter on a field mapped to nothing
            with pytest.raises(RegiongateError, match=f"{option} needs the"):
                replayer([path], snap, keep=keep, fields=FieldMap.parse(fields))


def test_csv_columns_match_ignoring_case_and_differ_between_files(
    tmp_path: Path, snap: Snapshot
) -> None:
    """DuckDB matches CSV column names ignoring case, the reference too; files with different
    columns are read by name."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("Time,Remote_Addr,ORG\n2024-07-10T10:00:00Z,4.0.0.1,org-cn\n")
    b.write_text(
        "time,remote_addr,key_id,Status,path\n2024-07-10T10:00:01Z,3.0.0.1,kid_us,200,/v1/x\n"
    )
    keep = LineFilter.parse([], ["2xx"])
    got = run([a, b], snap, key_orgs=KEY_ORGS)
    same(got, reference([a, b], snap, key_orgs=KEY_ORGS))
    assert {o["org"]: o["requests"] for o in got["orgs"]} == {"org-cn": 1, "org-us": 1}
    filtered = run([b], snap, keep=keep)  # "Status" is the status column
    same(filtered, reference([b], snap, keep=keep))
    assert filtered["lines"] == {"total": 1, "parsed": 1, "malformed": 0, "filtered": 0}
    with pytest.raises(RegiongateError, match=r"a\.csv: no column 'status'"):
        run([a, b], snap, keep=keep)  # a file without the column a filter needs


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "nginx"])
def test_lines_that_are_not_utf8_are_counted_as_malformed(
    tmp_path: Path, snap: Snapshot, fmt: str
) -> None:
    path = tmp_path / {"jsonl": "u.jsonl", "csv": "u.csv", "nginx": "u.log"}[fmt]
    {"jsonl": write_jsonl, "csv": write_csv, "nginx": write_nginx}[fmt](path, LINES[:2])
    text = path.read_bytes().splitlines(keepends=True)
    bad = text[0 if fmt == "nginx" else 1].replace(b"org-us", b"org-\xff\xfe")
    assert bad != text[0 if fmt == "nginx" else 1]
    path.write_bytes(b"".join([*text, bad]))
    got = run([path], snap)
    same(got, reference([path], snap))
    assert got["lines"]["malformed"] == reference([path], snap)["lines"]["malformed"]
    assert got["lines"]["total"] == len(text) - (fmt == "csv") + 1  # the header is no line
    assert "org-\ufffd\ufffd" not in {o["org"] for o in got["orgs"]}


NGINX_OK = (
    '3.0.0.1 - - [10/Jul/2024:10:00:00 +0000] "GET /v1/models HTTP/1.1" 200 12 "-" '
    '"ua" "-" org-us kid_0'
)


def test_odd_nginx_lines_read_alike(tmp_path: Path, snap: Snapshot) -> None:
    """Blank lines are no lines; a raw 0x01 byte ends what is read of a line; fields are
    read by the same character classes in RE2 and Python (a status in Arabic-Indic digits is
    malformed; a no-break space or a vertical tab is part of a field, not a separator); the
    time must be nginx's own layout; a 3 MB line is read, one over the 16 MiB limit is
    malformed."""
    path = tmp_path / "odd.log"
    lines = [
        NGINX_OK,
        "",
        "   \t",
        NGINX_OK,
        NGINX_OK.replace('"ua"', '"u\x01a"'),  # cut inside the user agent: malformed
        NGINX_OK.replace("kid_0", "kid_0\x01tail"),  # cut after the key: the key is kid_0
        NGINX_OK.replace(" 200 ", " \u0662\u0660\u0660 "),  # not ASCII digits: malformed
        NGINX_OK.replace("org-us", "org-\u00a0us"),  # a no-break space is part of the org
        NGINX_OK.replace("org-us", "org-us\vx"),  # so is a vertical tab (RE2's \\s lacks it)
        NGINX_OK.replace("10/Jul/2024:10:00:00 +0000", " 10/Jul/2024:10:00:00 +0000"),
        NGINX_OK.replace("+0000", "+2400"),  # an offset of a day or more: malformed
        NGINX_OK.replace('"ua"', '"' + "u" * (3 << 20) + '"'),
        NGINX_OK.replace('"ua"', '"' + "u" * (17 << 20) + '"'),  # over the limit: malformed
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = run([path], snap)
    same(got, reference([path], snap))
    assert got["lines"] == {"total": 11, "parsed": 6, "malformed": 5, "filtered": 0}
    orgs = {o["org"]: o["requests"] for o in got["orgs"]}
    assert orgs == {"org-us": 4, "org-\u00a0us": 1, "org-us\vx": 1}


def test_odd_json_values_read_alike(tmp_path: Path, snap: Snapshot) -> None:
    """A repeated key keeps its first value (DuckDB's reading; nested objects keep theirs);
    numbers, constants, booleans, objects and arrays as organisation or key are their JSON
    text (out-of-range numbers and NaN as written); a trailing comma is allowed; a lone
    surrogate escape makes the line malformed; a carriage return inside a line does not end
    it; lines of ASCII blanks are no lines, a line of no-break spaces is malformed; times are
    what DuckDB's timestamp cast reads."""
    path = tmp_path / "odd.jsonl"
    t = '"time": "2024-07-10T10:00:00Z"'
    rows = [
        f'{{{t}, "remote_addr": "4.0.0.1", "remote_addr": "3.0.0.1", "org": "a", "org": "b"}}',
        *(f'{{{t}, "remote_addr": "3.0.0.1", "org": {v}}}'
          for v in ("123", "1.5", "1E3", "true", '{"x": [1, "\u00e9"]}', "[1, 2]", '""')),
        *(f'{{{t}, "remote_addr": "3.0.0.1", "org": {v}}}'
          for v in ("1e400", "NaN", "-Infinity", '{"a": 1, "a": 2}', '[1, 2, ]')),
        f'{{{t}, "remote_addr": "3.0.0.1", "key_id": 7}}',
        f'{{{t}, "remote_addr": "3.0.0.1", "key_id": false}}',
        f'{{{t}, "remote_addr": "3.0.0.1", "org": "comma",}}',
        f'{{{t}, "remote_addr": "3.0.0.1", "org": "a\\ud800b"}}',  # malformed
        f'{{{t},\r "remote_addr": "3.0.0.1", "org": "cr"}}',
        '{"time": "2024-07-10 10:00:00 UTC", "remote_addr": "3.0.0.1", "org": "utc"}',
        '{"time": "20240710T100000Z", "remote_addr": "3.0.0.1", "org": "basic"}',  # malformed
        "   ", "\t\f\v", "\u00a0",
    ]  # fmt: skip
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    got = run([path], snap)
    same(got, reference([path], snap))
    assert got["lines"] == {"total": 21, "parsed": 18, "malformed": 3, "filtered": 0}
    orgs = {o["org"]: o["requests"] for o in got["orgs"]}
    assert orgs == {"a": 1, "123": 1, "1.5": 1, "1000.0": 1, "true": 1,
                    '{"x":[1,"\u00e9"]}': 1, "[1,2]": 2, "(none)": 1, "key:7": 1,
                    "key:false": 1, "1e400": 1, "NaN": 1, "-Infinity": 1,
                    '{"a":1,"a":2}': 1, "comma": 1, "cr": 1, "utc": 1}  # fmt: skip
    cn = {o["org"]: o for o in got["orgs"]}["a"]
    assert cn["affected_requests"] == 1  # the first remote_addr, 4.0.0.1, is the client


def test_odd_csv_rows_read_alike(tmp_path: Path, snap: Snapshot) -> None:
    """The header is read by name, blanks trimmed; of columns whose names differ only in
    case the first counts; blank lines are no rows; "" inside quotes is a quote; quoted line
    ends and line ends that change within the file are read; a row with fewer fields than
    the header is malformed, extra fields are dropped; a 3 MB field is read, a 17 MiB one is
    malformed (first row included: no sniffing stops the read)."""
    path = tmp_path / "odd.csv"
    t = "2024-07-10T10:00:00Z,3.0.0.1"
    path.write_text(
        f' time , remote_addr,Org,ORG\n{t},"o' + "o" * (17 << 20) + '",x\n'
        f"{t},first,second\n\n{t},first,second\r\n"
        f'{t},"say ""hi""",x\n{t},"two\nlines",x\n{t},short\n{t}\n{t},extra,x,y\n'
        f'{t},"o' + "o" * (3 << 20) + '",x\n',
        encoding="utf-8",
        newline="",
    )
    got = run([path], snap)
    same(got, reference([path], snap))
    # a row two fields short is one malformed line (DuckDB notes an error per missing field)
    assert got["lines"] == {"total": 9, "parsed": 6, "malformed": 3, "filtered": 0}
    orgs = {o["org"]: o["requests"] for o in got["orgs"]}
    assert orgs["first"] == 2 and orgs['say "hi"'] == 1 and orgs["two\nlines"] == 1
    assert orgs["extra"] == 1


def test_times_out_of_range_are_malformed_and_naive_ones_utc(
    tmp_path: Path, snap: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time a report cannot show (epoch milliseconds, year 0, past 9999) is a malformed
    line, never a crash; hour 24 is midnight of the next day, as DuckDB reads it; a time
    without an offset is UTC whatever the host's time zone. (Days two centuries apart, with
    malformed lines among them: the days are counted by sorting, without the malformed.)"""
    import time as time_module

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time_module.tzset()
    try:
        times: list[object] = [1720605600000, "0000-01-01T00:00:00Z", "9999-12-31T23:00:00-01:00",
                               "0001-01-01T00:30:00+01:00", 1e16, "2024-07-10T24:00:00Z",
                               "2024-07-10 10:00:00", "1900-03-01T12:00:00Z",
                               "2100-03-01T12:00:00Z"]  # fmt: skip
        path = tmp_path / "t.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for i, when in enumerate(times):
                fh.write(json.dumps({"time": when, "remote_addr": "4.0.0.1", "org": f"o{i}"}))
                fh.write("\n")
        got = run([path], snap)
        same(got, reference([path], snap))
        assert got["lines"] == {"total": 9, "parsed": 4, "malformed": 5, "filtered": 0}
        assert sum(d["requests"] for d in got["days"]) == 4
        orgs = {o["org"]: o for o in got["orgs"]}
        assert orgs["o5"]["first_seen"] == "2024-07-11T00:00:00+00:00"
        assert orgs["o6"]["first_seen"] == "2024-07-10T10:00:00+00:00"
    finally:
        monkeypatch.undo()
        time_module.tzset()


def test_days_of_times_next_to_midnight_read_alike(tmp_path: Path, snap: Snapshot) -> None:
    """Times around the epoch's midnight, subnormal ones included, fall on the same day in
    both replays."""
    times = ["-1e-320", "-5e-324", "-0.5", "0", "86399.999999", "86400", "-86400.000001"]
    path = tmp_path / "t.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i, when in enumerate(times):
            fh.write(json.dumps({"time": when, "remote_addr": "4.0.0.1", "org": f"o{i}"}) + "\n")
    got = run([path], snap)
    same(got, reference([path], snap))
    assert got["lines"]["parsed"] == len(times)


def test_padded_forwarding_entries_read_alike(tmp_path: Path, snap: Snapshot) -> None:
    """Blanks around an X-Forwarded-For entry, however many, are not part of it: the numpy
    walk and the resolver (its walk and its memo of proven chains) read it alike."""
    lines = []
    for i, pad in enumerate([0, 1, 111, 112, 130, 150, 400]):
        blank = " " * pad
        for xff in (
            f"3.0.0.1,{blank}4.0.0.7",
            f"3.0.0.1,{blank}2001:4000::1",
            f"{blank}4.0.0.8{blank}, {PROXY}",
            f"3.0.0.1,\t{blank}2001:4001::9\t",
            f"4.0.0.9,{blank}{PROXY}",
            f"{blank}4.0.0.9{blank},{blank}{PROXY}{blank}",
        ):
            lines.append((f"2024-07-10T10:{i:02d}:00Z", PROXY, xff, f"org-{i}"))
    path = tmp_path / "padded.jsonl"
    write_jsonl(path, lines, malformed=0)
    for batch in (1, 5, 1000):
        got = replay([str(path)], policy=load_policy("api-2024"), snapshot=snap,
                     client_ip=CONFIG, batch_size=batch)  # fmt: skip
        same(got.to_dict(), reference([path], snap))
    assert got.malformed == 0
    assert sum(o.requests for o in got.orgs.values()) == len(lines)


def test_csv_files_named_anyhow_and_headers_spanning_lines(tmp_path: Path, snap: Snapshot) -> None:
    """Compression is told by a file's bytes (upper-case or `.zstd` names read alike); a
    header with a quoted line end, or after a line of blanks, reads every row after it; a
    broken compressed header is a clear error."""
    import zstandard

    rows = "2024-07-10T10:00:00Z,4.0.0.1,a,1\n2024-07-10T10:00:01Z,3.0.0.1,b,2\n"
    header = "time,remote_addr,org,n\n"
    files = {
        "UP.CSV.GZ": gzip.compress((header + rows).encode()),
        "z.csv.zstd": zstandard.ZstdCompressor().compress((header + rows).encode()),
        "nl.csv": ('time,remote_addr,org,"n\nmore"\n' + rows).encode(),
        "blank.csv": (" \t\n\n" + header + rows).encode(),
    }
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        got = run([path], snap, fmt="csv")
        same(got, reference([path], snap, fmt="csv"))
        assert got["lines"] == {"total": 2, "parsed": 2, "malformed": 0, "filtered": 0}, name
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(files["UP.CSV.GZ"][:12])
    with pytest.raises(RegiongateError, match=r"broken\.csv\.gz: the header cannot be read"):
        run([broken], snap)


def test_tab_separated_and_byte_order_marked_logs(tmp_path: Path, snap: Snapshot) -> None:
    tsv, marked = tmp_path / "a.tsv", tmp_path / "b.jsonl"
    write_csv(tmp_path / "a.csv", LINES)
    tsv.write_text((tmp_path / "a.csv").read_text().replace(",", "\t"))
    write_jsonl(marked, LINES)
    marked.write_bytes(b"\xef\xbb\xbf" + marked.read_bytes())
    for path in (tsv, marked):
        got = run([path], snap)
        same(got, reference([path], snap))
        assert got["lines"]["parsed"] == len(LINES), path.name


def test_a_damaged_compressed_file_is_a_clear_error(tmp_path: Path, snap: Snapshot) -> None:
    whole, cut = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_jsonl(whole, LINES * 20_000, malformed=0)  # big enough to break mid-stream
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # broken mid-stream, the error comes through the Arrow reader (an OSError), not DuckDB
    with pytest.raises(RegiongateError, match=r"GZIP stream: .*b\.jsonl\.gz$"):
        replay([str(whole), str(cut)], policy=load_policy("api-2024"), snapshot=snap)
    # the reading threads and the chains' helper are gone with the error
    assert [t.name for t in threading.enumerate() if t.name.startswith("regiongate-")] == []


def test_bad_inputs_are_clear(tmp_path: Path, snap: Snapshot) -> None:
    with pytest.raises(RegiongateError, match="no such file"):
        run([tmp_path / "missing.jsonl"], snap)
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(RegiongateError, match="cannot tell the log format"):
        run([tmp_path / "x.bin"], snap)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert run([empty], snap)["lines"] == {"total": 0, "parsed": 0, "malformed": 0, "filtered": 0}
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b'\xff\xfe garbage\n[1,2,3]\n"text"\n')
    got = run([garbage], snap)
    assert got["lines"]["malformed"] == got["lines"]["total"] == 3


def test_cli_writes_every_report(
    tmp_path: Path, tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regiongate.cli.app import app

    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path))
    lines = [*LINES, ("2024-07-12T00:00:00Z", "4.0.0.3", None, "<b>org-html</b>")]
    write_jsonl(tmp_path / "access.jsonl", lines)
    result = CliRunner().invoke(app, [
        "impact", str(tmp_path / "access.jsonl"), "--snapshot", str(tiny_snapshot_path),
        "--trusted-proxy", f"{PROXY}/32", "--against", "sanctions-comprehensive",
        "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"),
        "-o", str(tmp_path / "r.html"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["totals"]["affected_organisations"] == 4
    with (tmp_path / "r.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["org"] for r in rows} >= {"org-cn", "org-us", "<b>org-html</b>"}
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "&lt;b&gt;org-html&lt;/b&gt;" in page and "<b>org-html" not in page
    bad = CliRunner().invoke(app, ["impact", str(tmp_path / "nope.jsonl"), "--snapshot",
                                   str(tiny_snapshot_path)])  # fmt: skip
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_cli_refuses_a_corrupt_snapshot_checked_while_it_replays(
    tmp_path: Path, tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot's body is checked in a thread beside the replay: a corrupt one is an
    error naming it and nothing is written, also when what the corruption caused fails
    first (the replay raising here stands in for that)."""
    import regiongate.analytics.impact as impact
    from regiongate.cli.app import app

    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path))
    write_jsonl(tmp_path / "access.jsonl", LINES)
    data = bytearray(tiny_snapshot_path.read_bytes())
    data[len(data) - 5] ^= 0x40
    bad = tmp_path / "bad.rgsnap"
    bad.write_bytes(bytes(data))
    args = ["impact", str(tmp_path / "access.jsonl"), "--snapshot", str(bad), "--json",
            str(tmp_path / "r.json"), "--against", "sanctions-comprehensive"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "body checksum mismatch" in result.output, result.output
    assert not (tmp_path / "r.json").exists()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise IndexError("row 4294967295 out of range")

    monkeypatch.setattr(impact, "replay", broken)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "body checksum mismatch" in result.output, result.output
    assert not (tmp_path / "r.json").exists()
    # a sound snapshot: the replay's own failure is the one shown
    result = CliRunner().invoke(app, [*args[:2], "--snapshot", str(tiny_snapshot_path)])
    assert isinstance(result.exception, IndexError)


def test_cli_keeps_freed_memory_where_the_c_library_can(monkeypatch: pytest.MonkeyPatch) -> None:
    """glibc (this machine's) takes both settings, and Arrow then allocates through it; a C
    library without ``mallopt`` (musl, macOS), or none to load, leaves the allocators as they
    are and the replay runs the same."""
    import ctypes

    import pyarrow as pa

    from regiongate.cli.impact import _keep_freed_memory

    chosen: list[Any] = []  # the pools Arrow is given (recorded, not set: this process's)
    monkeypatch.setattr(pa, "set_memory_pool", chosen.append)
    assert _keep_freed_memory() is True
    assert [p.backend_name for p in chosen] == ["system"]

    class NoMallopt:
        def __init__(self, name: object) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert _keep_freed_memory() is False

    def unloadable(name: object) -> None:
        raise OSError("no C library")

    monkeypatch.setattr(ctypes, "CDLL", unloadable)
    assert _keep_freed_memory() is False
    assert len(chosen) == 1  # Arrow's allocator left as it was


def test_cli_filters_and_attributes_keys_from_the_store(
    tmp_path: Path, tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regiongate.accounts.model import Key
    from regiongate.accounts.store import store_from_url
    from regiongate.cli.app import app

    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'accounts.db'}"
    store = store_from_url(url)
    try:
        store.migrate()
        store.upsert_org("org-cn", actor="test")
        store.add_key(Key("kid_cn", "org-cn"), actor="test")
        store.revoke_key("kid_cn", actor="test")  # revoked since: its old lines are still its
    finally:
        store.close()
    write_routed(tmp_path / "r.jsonl", "jsonl")
    args = ["impact", str(tmp_path / "r.jsonl"), "--snapshot", str(tiny_snapshot_path),
            "--trusted-proxy", f"{PROXY}/32", "--json", str(tmp_path / "r.json"),
            "-o", str(tmp_path / "r.html")]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--path", "/v1/", "--status", "2xx,429",
                                      "--store", url])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "7 filtered out" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["lines"]["filtered"] == 7
    assert {o["org"]: o["requests"] for o in data["orgs"]}["org-cn"] == 1
    assert "filtered out (kept: /v1/; 200-299, 429)" in (tmp_path / "r.html").read_text()
    result = CliRunner().invoke(app, [*args, "--path", "/v9/"])
    assert result.exit_code == 0 and "left out every readable line" in result.output
    for bad, message in ((["--status", "2x"], "--status '2x'"), (["--path", "v1"], "--path 'v1'"),
                         (["--store", "postgresql://127.0.0.1:1/none"], "unavailable")):  # fmt: skip
        result = CliRunner().invoke(app, [*args, *bad])
        assert result.exit_code == 2 and message in result.output, result.output


def test_cli_resolve_keys_needs_a_store_with_keys(
    tmp_path: Path, tiny_snapshot_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regiongate.accounts.store import store_from_url
    from regiongate.cli.app import app

    monkeypatch.setenv("REGIONGATE_HOME", str(tmp_path))
    write_routed(tmp_path / "r.jsonl", "jsonl")
    args = ["impact", str(tmp_path / "r.jsonl"), "--snapshot", str(tiny_snapshot_path)]
    result = CliRunner().invoke(app, [*args, "--resolve-keys"])  # no store anywhere: refused
    assert result.exit_code == 2 and "--resolve-keys: no account store at" in result.output
    assert not list(tmp_path.glob("*.db")), "an empty store was created"
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    store_from_url(url).close()  # a store without keys: a warning, and the key ids stay
    result = CliRunner().invoke(app, [*args, "--store", url, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0 and "the account store has no keys" in result.output
    orgs = {o["org"] for o in json.loads((tmp_path / "r.json").read_text())["orgs"]}
    assert "key:kid_cn" in orgs


def test_an_empty_csv_file_has_no_lines(tmp_path: Path, snap: Snapshot) -> None:
    write_csv(tmp_path / "a.csv", LINES)
    (tmp_path / "empty.csv").write_text("")
    got = run([tmp_path / "empty.csv", tmp_path / "a.csv"], snap)
    same(got, run([tmp_path / "a.csv"], snap))


@pytest.mark.parametrize(("fmt", "name"), [("jsonl", "s.jsonl.gz"), ("csv", "s.csv"),
                                           ("nginx", "s.log.zst")])  # fmt: skip
def test_synthetic_log_vectorised_equals_reference(
    tmp_path: Path, snap: Snapshot, fmt: str, name: str
) -> None:
    """The issue's check: the vectorised replay equals the per-line one on a synthetic log
    with proxies, forged entries, IPv6, anonymizers and malformed lines; and it finds every
    line the generator says came from an unsupported territory."""
    import datetime as dt

    from regiongate.analytics.synth import synthesize

    compress = {"gz": "gzip", "zst": "zstd"}.get(name.rsplit(".", 1)[-1])
    truth = synthesize(tmp_path / name, snapshot=snap, lines=30_000, orgs=60, seed=11, fmt=fmt,
                       compress=compress, days=40,
                       start=dt.datetime(2024, 6, 1, tzinfo=dt.UTC))  # fmt: skip
    config = ClientIPConfig(trusted_proxies=("10.0.0.1/32", "10.0.0.2/32"))
    policy = load_policy("api-2024")
    fast = replay([str(tmp_path / name)], policy=policy, snapshot=snap, client_ip=config,
                  batch_size=7_000)  # fmt: skip
    slow = replay_reference([str(tmp_path / name)], policy=policy, snapshot=snap,
                            client_ip=config)  # fmt: skip
    same(fast.to_dict(), slow.to_dict())
    assert fast.malformed > 0
    # Against the generator's ground truth: an organisation's affected requests are its lines
    # whose client locates in a territory the policy does not support, plus its lines with an
    # unreadable address (api-2024 blocks invalid clients).
    data = json.loads((tmp_path / f"{name}.truth.json").read_text())
    assert truth is not None and data["orgs"]
    orgs = {o["org"]: o for o in fast.to_dict()["orgs"]}
    for org in data["orgs"]:
        expected = sum(n for t, n in org["territories"].items()
                       if t != "unknown" and not policy.is_supported(t))  # fmt: skip
        expected += org["bad_address"]
        assert orgs[org["org"]]["affected_requests"] == expected, org["org"]


@pytest.mark.parametrize("hop_limit", [1, 2, 16])
def test_forwarding_chains_walked_in_numpy_equal_the_resolver(
    tmp_path: Path, snap: Snapshot, hop_limit: int
) -> None:
    """Chains of one to four entries, trusted and untrusted, IPv4, IPv6 and junk, joined with
    and without blanks, blank and comma-only headers, peers with blanks, under tight and loose
    hop limits: the vectorised walk answers exactly what the resolver does."""
    import random

    rng = random.Random(hop_limit)
    trusted = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    clients = ["3.0.0.1", "4.0.0.1", "2.0.1.1", "5.0.0.9", "3.0.0.130", "[2001:db8::1]:443",
               "2001:4000::1", "junk", "", "1.2.3.", "01.2.3.4", " 4.0.0.3 "]  # fmt: skip
    joins = [",", ", ", " , ", ",\t", ",   ", "\t,\t"]
    peers = [*trusted, "3.0.0.7", " 10.0.0.1", "10.0.0.2 ", "   "]
    lines = []
    for i in range(900):
        chain = [rng.choice(clients + trusted) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.5:
            chain[-1] = rng.choice(trusted)  # through a trusted hop, the common case
        header = rng.choice(joins).join(chain)
        if rng.random() < 0.05:
            header = rng.choice(["  ", "\t", ",", " , ", "10.0.0.9,", ",3.0.0.1"])
        lines.append((f"2024-07-1{i % 3}T10:00:{i % 60:02d}Z", rng.choice(peers), header,
                      f"org-{i % 7}"))  # fmt: skip
    path = tmp_path / "chains.jsonl"
    write_jsonl(path, lines, malformed=0)
    config = ClientIPConfig(trusted_proxies=("10.0.0.0/29",), hop_limit=hop_limit)
    policy = load_policy("api-2024")
    fast = replay([str(path)], policy=policy, snapshot=snap, client_ip=config, batch_size=64)
    slow = replay_reference([str(path)], policy=policy, snapshot=snap, client_ip=config)
    same(fast.to_dict(), slow.to_dict())


def test_forwarded_header_chains_are_the_resolvers(tmp_path: Path, snap: Snapshot) -> None:
    """With ``Forwarded`` as the forwarding header, nothing is walked in numpy: every line
    from a trusted proxy is read by the resolver, and the replay equals the reference."""
    values = ["for=4.0.0.1", "for=3.0.0.1, for=10.0.0.2", 'for="[2001:4000::1]:443"',
              "for=10.0.0.1;proto=https", "by=10.0.0.9", "for=junk", "4.0.0.1"]  # fmt: skip
    lines = [(f"2024-07-10T10:00:{i:02d}Z", peer, value, f"org-{i % 3}")
             for i, (peer, value) in enumerate((p, v) for p in ("10.0.0.1", "3.0.0.7")
                                               for v in values)]  # fmt: skip
    path = tmp_path / "fwd.jsonl"
    write_jsonl(path, lines)
    config = ClientIPConfig(trusted_proxies=("10.0.0.0/29",), header="Forwarded")
    policy = load_policy("api-2024")
    fast = replay([str(path)], policy=policy, snapshot=snap, client_ip=config)
    slow = replay_reference([str(path)], policy=policy, snapshot=snap, client_ip=config)
    same(fast.to_dict(), slow.to_dict())
    orgs = {o["org"]: o for o in fast.to_dict()["orgs"]}
    assert sum(o["affected_requests"] for o in orgs.values()) >= 2  # CN through the proxy


@pytest.mark.parametrize(
    "proxies",
    [
        ("10.0.0.0/29",),
        ("10.0.0.0/29", "2001:4000:aa::/48", "2001:4001::5/128"),  # IPv6 proxies too
        ("::ffff:10.0.0.0/125",),  # an IPv4-mapped network trusts IPv4 peers
        ("2001:4000::/64", "::/0"),  # every IPv6 peer trusted
    ],
)
def test_ipv6_peers_looked_up_in_numpy_equal_the_resolver(
    tmp_path: Path, snap: Snapshot, proxies: tuple[str, ...]
) -> None:
    """IPv6 peers in every spelling (upper case, leading zeros, IPv4-mapped and -compatible,
    zone ids, brackets, ports, blanks, junk), trusted or not, some forwarding, some in an
    exempt network: the replay that looks plain ones up in numpy answers what the resolver
    does."""
    import random

    rng = random.Random(len(proxies))
    peers = ["2001:4000::1", "2001:4000::1", "2001:4000:0:0:1::2", "2001:4001::7", "2001:4001::5",
             "2001:4000:aa::9", "2001:4000:AA:0000::10", "2001:0db8::1", "::ffff:4.0.0.1",
             "::ffff:10.0.0.1", "::4.0.0.1", "::", "::1", "fe80::1%eth0", "[2001:4000::3]",
             "[2001:4000::3]:443", " 2001:4000::4", "2001:4000::5 ", "1:2:3:4:5:6:7:8:9",
             "2001:4000::1::2", "gggg::1", ":", "3.0.0.1", "10.0.0.1", "10.0.0.2"]  # fmt: skip
    clients = ["3.0.0.1", "4.0.0.2", "2001:4001::1", "2001:4000::8", "junk", "", "::",
               "[2001:4000::3]:443", "2001:4000::1%eth0", "::ffff:4.0.0.1", " 2001:4001::2\t",
               "2001:4000:aa::1", "2001:4000:AA::2", "2001:4001::5"]  # fmt: skip
    lines = []
    for i in range(600):
        peer = rng.choice(peers)
        xff = ", ".join(rng.choice(clients) for _ in range(rng.randint(0, 3))) or None
        lines.append((f"2024-07-1{i % 3}T10:00:{i % 60:02d}Z", peer, xff, f"org-{i % 5}"))
    path = tmp_path / "v6.jsonl"
    write_jsonl(path, lines, malformed=0)
    config = ClientIPConfig(trusted_proxies=proxies)
    base = load_policy("api-2024").to_dict()
    exempting = parse_policy({
        "name": "exempting", "version": "1", "supported": base["supported"],
        "notice_from": "2024-06-25", "enforce_from": "2024-07-09",
        "exemptions": {"networks": ["2001:4000::/96"]},
    })  # fmt: skip
    for policy in (load_policy("api-2024"), exempting):
        fast = replay([str(path)], policy=policy, snapshot=snap, client_ip=config, batch_size=97)
        slow = replay_reference([str(path)], policy=policy, snapshot=snap, client_ip=config)
        same(fast.to_dict(), slow.to_dict())


def test_reference_reads_times_to_the_bit_as_the_sql_does() -> None:
    """Fractions of one to six digits, offsets, years far from now: the per-line reference's
    seconds are the very double the replay's SQL makes (DuckDB's epoch() was an ulp off)."""
    import random

    import duckdb

    from regiongate.analytics.impact import _TIME_SQL, _parse_time

    rng = random.Random(4)
    times = ["2024-08-22T14:58:26.4853Z", "2000-05-18T14:18:40.129726Z", "1900-04-29T16:03:02.1Z",
             "0001-01-01T00:00:00.000001Z", "9999-12-31T23:59:59.999999Z",
             "2024-06-10T00:00:00.136+05:30", "2024-06-10 00:00:00.5", "1717977600.25"]  # fmt: skip
    for _ in range(300):
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6)))
        times.append(f"{rng.randint(1, 9999):04d}-{rng.randint(1, 12):02d}-"
                     f"{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                     f"{rng.randint(0, 59):02d}.{frac}{rng.choice(['Z', '-03:00', '+14:00'])}")  # fmt: skip
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sql = "SELECT " + _TIME_SQL.format(t="CAST($1 AS VARCHAR)")
    for text in times:
        want = con.execute(sql, [text]).fetchone()
        assert want is not None
        assert _parse_time(text) == want[0], text


def test_parse_v4_is_canonical_and_exact() -> None:
    import ipaddress

    import numpy as np
    import pyarrow as pa

    from regiongate.analytics.impact import parse_v4

    good = ["0.0.0.0", "1.2.3.4", "255.255.255.255", "10.0.0.1", "100.20.3.40"]
    bad = ["1.2.3.", ".1.2.3", "1..2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "256.1.1.1",
           "1.2.3.4 ", " 1.2.3.4", "1.2.3", "a.b.c.d", "1.2.3.-4", "+1.2.3.4", "",
           "1234.1.1.1", "1.2.3.4\n", "999.999.999.999"]  # fmt: skip
    values = good + bad + [None]
    # Long enough to be parsed in slices, with the cases at the edges of slices.
    many = (values * 9000)[: 1 << 18]
    for arr in (pa.array(values), pa.array(many), pa.array(many).slice(7, 150_001)):
        got, ok = parse_v4(arr)
        for i, text in enumerate(arr.to_pylist()):
            if i % 997 and len(arr) > 100:
                continue  # a sample of the long ones
            canonical = text in good
            assert bool(ok[i]) == canonical, text
            if canonical:
                assert int(got[i]) == int(ipaddress.IPv4Address(text))
        assert np.asarray(ok).dtype == np.bool_


def test_parse_v4_agrees_with_ipaddress_on_random_text() -> None:
    """Strings of digits, dots and a few other bytes, 0-17 long, and near-addresses (octets
    too large, leading zeros, three or five of them): valid exactly where ``ipaddress``
    reads an IPv4 address (it refuses leading zeros and anything but ASCII digits), with its
    value."""
    import ipaddress
    import random

    import pyarrow as pa

    from regiongate.analytics.impact import parse_v4

    rng = random.Random(11)
    alphabet = "0123456789.....0 \t:+-a/"
    texts = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 17))) for _ in range(40_000)
    ]
    for _ in range(40_000):
        octets = [rng.choices([str(rng.randint(0, 255)), str(rng.randint(0, 999)),
                               f"0{rng.randint(0, 99)}"], weights=[8, 1, 1])[0]
                  for _ in range(rng.choice([3, 4, 4, 4, 5]))]  # fmt: skip
        texts.append(".".join(octets))
    got, ok = parse_v4(pa.array(texts))
    wrong = []
    for i, text in enumerate(texts):
        try:
            want: int | None = int(ipaddress.IPv4Address(text))
        except ValueError:
            want = None
        if bool(ok[i]) != (want is not None) or (want is not None and int(got[i]) != want):
            wrong.append(text)
    assert not wrong, wrong[:10]
    assert 5_000 < int(ok.sum()) < 60_000  # both kinds are well represented


def test_chains_cut_in_numpy_match_a_split() -> None:
    """Each header's entry count and right-most three entries, against str.split/strip."""
    import ipaddress

    import numpy as np
    import pyarrow as pa

    from regiongate.analytics.impact import _cut_chains

    headers = ["1.2.3.4", "1.2.3.4, 5.6.7.8", " 9.9.9.9 ,10.0.0.1,\t10.0.0.2", "a, b, c, d, 1.1.1.1",
               "", "   ", ",", "1.2.3.4,", ",1.2.3.4", "2001:db8::1, 1.2.3.4", "1.2.3.4,,5.6.7.8",
               "  1.2.3.4  ", "1.2.3.4   ,  5.6.7.8", None, "300.1.1.1, 01.1.1.1",
               # runs of blanks of any length, at either end of a header and of the buffer
               "\t\t1.2.3.4\t \t", "1.2.3.4" + " " * 50, " " * 40 + ",1.2.3.4", "\t",
               "1.2.3.4 , \t , 5.6.7.8", "5.6.7.8 \t" + "\t " * 30,
               # IPv6 on the right: plain, upper case, mapped, zone id, bracketed, with blanks
               "1.2.3.4, 2001:db8::1", "2001:DB8:0:0::2", "::ffff:1.2.3.4", "fe80::1%eth0",
               "[2001:db8::3]:443", "1.2.3.4,\t 2001:db8::4 \t", "::", "2001:db8::1::2"]  # fmt: skip
    cols = _cut_chains(pa.array([h or "" for h in headers] * 3), 3)
    # asked for the entries left of the right-most for some headers only: those get them,
    # the rest none
    some = _cut_chains(pa.array([h or "" for h in headers] * 3), 3,
                       lambda count, value, valid: np.arange(len(count)) % 3 == 1)  # fmt: skip
    for row in range(len(headers) * 3):
        for c in (0, 1, 2, 7, 8, 9):  # the count and the right-most entry: for every header
            assert some[c][row] == cols[c][row]
        for c in (3, 4, 5, 6):
            assert some[c][row] == (cols[c][row] if row % 3 == 1 else 0)
    count, entries = cols[0], [(cols[1 + 2 * i], cols[2 + 2 * i]) for i in range(3)]
    for row, header in enumerate(headers * 3):
        parts = (header or "").split(",")
        expect_n = 0 if not (header or "").strip() else len(parts)
        assert count[row] == expect_n, header
        for i, (value, ok) in enumerate(entries):
            text = parts[-1 - i].strip(" \t") if i < expect_n else None
            try:
                want = int(ipaddress.IPv4Address(text)) if text is not None else None
            except ValueError:
                want = None
            assert bool(ok[row]) == (want is not None), (header, i)
            if want is not None:
                assert int(value[row]) == want
        # the right-most entry as IPv6: plain text, not IPv4-mapped
        text = parts[-1].strip(" \t") if expect_n else ""
        try:
            want6 = int(ipaddress.IPv6Address(text)) if "%" not in text else None
        except ValueError:
            want6 = None
        if want6 is not None and want6 >> 32 == 0xFFFF:
            want6 = None
        assert bool(cols[7][row]) == (want6 is not None), header
        if want6 is not None:
            assert (int(cols[8][row]) << 64) | int(cols[9][row]) == want6


def test_tally_counts_in_place_and_by_sorting() -> None:
    import numpy as np

    from regiongate.analytics.impact import _tally

    rng = np.random.default_rng(3)
    keys = rng.integers(0, 5000, 20_000)
    want_k, want_c = np.unique(keys, return_counts=True)
    for size in (5000, 10**12):  # dense: bincount; sparse: sort
        got_k, got_c = _tally(keys, size)
        assert (got_k == want_k).all() and (got_c == want_c).all()
    empty_k, empty_c = _tally(np.zeros(0, np.int64), 10)
    assert len(empty_k) == len(empty_c) == 0


def test_batches_are_grouped_up_to_rows_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa

    import regiongate.analytics.impact as impact

    small = [pa.record_batch({"a": pa.array([f"x{i}"] * 100)}) for i in range(25)]
    joined = list(impact._coalesced(iter(small), 1000))
    assert [b.num_rows for b in joined] == [1000, 1000, 500]
    assert [v for b in joined for v in b.column(0).to_pylist()] == [
        v for b in small for v in b.column(0).to_pylist()
    ]
    # DuckDB's batches are grouped, not copied: each stays a chunk of its table
    assert [b.column(0).num_chunks for b in joined] == [10, 10, 5]
    # a group also ends at the byte cap: memory stays bounded however long the lines
    monkeypatch.setattr(impact, "_JOIN_BYTES", small[0].nbytes * 3)
    assert [b.num_rows for b in impact._coalesced(iter(small), 10**9)] == [300] * 8 + [100]


def test_encoding_a_chunked_column_gives_one_dictionary_for_all_lines() -> None:
    import pyarrow as pa

    from regiongate.analytics.impact import _encode

    chunks = [["a", None, "b"], [], ["b", "c", None, "a"], [None]]
    col = pa.chunked_array([pa.array(c, type=pa.string()) for c in chunks])
    for column in (col, col.combine_chunks()):
        values, index = _encode(column)
        names = values.to_pylist()
        assert sorted(names) == ["a", "b", "c"]
        assert [names[i] if i >= 0 else None for i in index.tolist()] == col.to_pylist()
    values, index = _encode(pa.chunked_array([], type=pa.string()))
    assert values.to_pylist() == [] and len(index) == 0


def test_encoding_unifies_chunk_dictionaries_that_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrow 26 encodes every chunk against one dictionary; should a version not, the chunks'
    dictionaries are unified before their indices are put together."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from regiongate.analytics.impact import _encode

    own = pa.chunked_array(
        [
            pa.DictionaryArray.from_arrays(pa.array([0, 1, None]), pa.array(["a", "b"])),
            pa.DictionaryArray.from_arrays(pa.array([0, 1, 1]), pa.array(["c", "a"])),
        ]
    )
    monkeypatch.setattr(pc, "dictionary_encode", lambda col: own)
    values, index = _encode(pa.chunked_array([["a", "b", None], ["c", "a", "a"]]))
    names = values.to_pylist()
    assert [names[i] if i >= 0 else None for i in index.tolist()] == [
        "a", "b", None, "c", "a", "a"
    ]  # fmt: skip


@pytest.mark.parametrize(("fmt", "name"), [("jsonl", "f.jsonl"), ("nginx", "f.log")])
def test_synthetic_log_filtered_equals_reference(
    tmp_path: Path, snap: Snapshot, fmt: str, name: str
) -> None:
    """The filter over a realistic mix of endpoints and statuses, against the reference."""
    import datetime as dt

    from regiongate.analytics.synth import synthesize

    synthesize(tmp_path / name, snapshot=snap, lines=12_000, orgs=30, seed=5, fmt=fmt, days=40,
               start=dt.datetime(2024, 6, 1, tzinfo=dt.UTC))  # fmt: skip
    config = ClientIPConfig(trusted_proxies=("10.0.0.1/32", "10.0.0.2/32"))
    policy = load_policy("api-2024")
    keep = LineFilter.parse(["/v1/chat/", "/v1/embeddings"], ["2xx,429"])
    fast = replay([str(tmp_path / name)], policy=policy, snapshot=snap, client_ip=config,
                  keep=keep, batch_size=5_000)  # fmt: skip
    slow = replay_reference([str(tmp_path / name)], policy=policy, snapshot=snap,
                            client_ip=config, keep=keep)  # fmt: skip
    same(fast.to_dict(), slow.to_dict())
    # about 70% of the calls go to the two endpoints and ~96% of those have a kept status
    share = fast.filtered / fast.parsed
    assert 0.2 < share < 0.45, share
