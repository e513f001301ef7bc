from __future__ import annotations

import contextlib
import datetime as dt
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regiongate.errors import PolicyError
from regiongate.policy import Mode, load_policy, parse_policy, preset_names
from regiongate.policy.document import Support
from regiongate.policy.schema import policy_schema

MINIMAL: dict[str, Any] = {"name": "p", "version": "1", "supported": ["US"]}


def doc(**over: Any) -> dict[str, Any]:
    d = dict(MINIMAL)
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def test_minimal_allowlist() -> None:
    p = parse_policy(doc())
    assert p.ref == "p@1" and p.default is Support.UNSUPPORTED
    assert p.is_supported("US") and p.is_supported("US-CA")
    assert not p.is_supported("CN") and not p.is_supported("CN-SD")
    assert p.mode is Mode.ENFORCE


def test_denylist_and_subdivision_rules() -> None:
    p = parse_policy(doc(supported=None, unsupported=["RU", "UA-43"]))
    assert p.default is Support.SUPPORTED
    assert not p.is_supported("RU") and not p.is_supported("RU-MOW")
    assert not p.is_supported("UA-43") and p.is_supported("UA") and p.is_supported("UA-32")
    # A subdivision rule wins over its country's, both ways.
    p = parse_policy(doc(supported=["RU-MOW"], unsupported=["RU"], default="supported"))
    assert p.is_supported("RU-MOW") and not p.is_supported("RU-SPE")
    p = parse_policy(doc(supported=["UA"], unsupported=["@occupied-ua"]))
    assert p.is_supported("UA-30") and not p.is_supported("UA-09")


def test_groups_and_builtin_groups() -> None:
    p = parse_policy(doc(supported=["@core"], groups={"core": ["US", "de", "UA-30"]}))
    assert p.is_supported("DE") and p.is_supported("UA-30") and not p.is_supported("UA-32")
    assert p.groups == {"core": ("US", "DE", "UA-30")}
    assert p.rule_for("DE").because == "supported: @core"
    p = parse_policy(doc(supported=None, unsupported=["@comprehensive-sanctions"]))
    assert not p.is_supported("KP") and not p.is_supported("UA-14")


def test_dates() -> None:
    p = parse_policy(
        doc(notice_from=dt.date(2024, 6, 25), enforce_from="2024-07-09T12:00:00+02:00")
    )
    assert p.notice_from == dt.datetime(2024, 6, 25, tzinfo=dt.UTC)
    assert p.enforce_from is not None and p.enforce_from.utcoffset() == dt.timedelta(hours=2)
    naive = parse_policy(doc(enforce_from=dt.datetime(2024, 7, 9, 6, 0)))
    assert naive.enforce_from == dt.datetime(2024, 7, 9, 6, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("over", "key", "message"),
    [
        ({"name": None}, "name", "is required"),
        ({"name": ""}, "name", "must not be empty"),
        ({"version": 3}, "version", "must be a string"),
        ({"supported": None}, "supported", "give `supported`"),
        ({"supported": "US"}, "supported", "must be a list"),
        ({"supported": ["US", 7]}, "supported[1]", "must be a string"),
        ({"supported": ["UA-34"]}, "supported[0]", "did you mean UA-43?"),
        ({"supported": ["USA"]}, "supported[0]", "did you mean US"),
        ({"supported": ["Russia"]}, "supported[0]", "did you mean RU (Russian Federation)?"),
        ({"supported": ["XX"]}, "supported[0]", "not an ISO 3166-1 alpha-2"),
        ({"supported": ["UA-99"]}, "supported[0]", "not an ISO 3166-2 subdivision"),
        ({"supported": ["@ocupied-ua"]}, "supported[0]", "did you mean occupied-ua?"),
        ({"unsupported": ["US"]}, "unsupported", "both supported"),
        ({"enfroce_from": "2024-01-01"}, "enfroce_from", "did you mean enforce_from?"),
        ({"enforce_from": "soon"}, "enforce_from", "not an ISO 8601"),
        ({"enforce_from": 5}, "enforce_from", "must be a date"),
        (
            {"notice_from": "2024-08-01", "enforce_from": "2024-07-01"},
            "notice_from",
            "notice comes first",
        ),
        ({"mode": "dryrun"}, "mode", "did you mean dry-run?"),
        ({"consensus": "all"}, "consensus", "not one of any, majority, primary"),
        ({"default": "maybe"}, "default", "not one of"),
        ({"actions": {"tor": "deny"}}, "actions.tor", "not one of allow, flag, block"),
        ({"actions": {"tors": "block"}}, "actions.tors", "did you mean tor?"),
        ({"actions": "block"}, "actions", "must be a table"),
        ({"exemptions": {"networks": ["10.0.0.0/33"]}}, "exemptions.networks[0]", "not a network"),
        ({"exemptions": {"acounts": []}}, "exemptions.acounts", "did you mean accounts?"),
        ({"response": {"status": 200}}, "response.status", "400-599"),
        ({"response": {"status": True}}, "response.status", "400-599"),
        ({"response": {"code": 5}}, "response.code", "must be a string"),
        ({"groups": {"bad name": ["US"]}}, "groups.bad name", "group names"),
        ({"groups": {"g": ["@eu"]}}, "groups.g[0]", "cannot contain groups"),
        ({"groups": {"g": ["ZZ"]}}, "groups.g[0]", "not an ISO 3166-1"),
        ({"groups": {"g": "US"}}, "groups.g", "must be a list"),
    ],
)
def test_errors_name_key_and_value(over: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)) as info:
        parse_policy(doc(**over), source="mine.toml")
    assert info.value.key == key
    assert str(info.value).startswith(f"mine.toml: {key}: ")


def test_load_file_and_presets(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nversion = "2"\nunsupported = ["CU"]\n')
    p = load_policy(path)
    assert p.ref == "p@2" and p.origin == str(path)
    assert set(preset_names()) >= {"api-2024", "sanctions-comprehensive"}
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="did you mean api-2024"):
        load_policy("api-2042")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "p"\nversion = \n')
    with pytest.raises(PolicyError, match=r"bad\.toml: not valid TOML"):
        load_policy(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(binary)


def test_presets_document_their_source_and_match_the_schema() -> None:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    from importlib import resources

    for name in preset_names():
        text = (resources.files("regiongate.policy") / "presets" / f"{name}.toml").read_text()
        raw = tomllib.loads(text)
        for key in ("notice_from", "enforce_from"):
            if key in raw:
                raw[key] = raw[key].isoformat()
        jsonschema.validate(raw, schema)
        p = load_policy(name)
        assert p.source and p.description, name


def test_api_2024_preset_is_the_provider_list_minus_occupied_regions() -> None:
    listed = {
        line.strip()
        for line in (Path(__file__).parent / "openai-api-supported-2024.txt")
        .read_text()
        .splitlines()
        if line.strip() and not line.startswith("#")
    }
    p = load_policy("api-2024")
    assert {c for c, r in p.rules.items() if r.supported} == listed
    assert {c for c, r in p.rules.items() if not r.supported} == {
        "UA-43",
        "UA-40",
        "UA-14",
        "UA-09",
    }
    assert p.notice_from == dt.datetime(2024, 6, 25, tzinfo=dt.UTC)
    assert p.enforce_from == dt.datetime(2024, 7, 9, tzinfo=dt.UTC)
    for code in ("CN", "HK", "MO", "RU", "BY", "IR", "KP", "CU", "SY", "VE"):
        assert not p.is_supported(code), code


def test_schema_rejects_what_the_loader_rejects_structurally() -> None:
    schema = policy_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "p", "version": "1", "supported": ["U$"]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "p", "version": "1", "supported": [], "extra": 1}, schema)


# --- the loader, fuzzed ------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12),
    st.dates(), st.sampled_from(["US", "UA-43", "@eu", "@nope", "allow", "block", "dry-run", "any", "2024-07-09"]),
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["name", "version", "supported", "unsupported", "default", "groups", "notice_from",
     "enforce_from", "mode", "consensus", "actions", "exemptions", "response", "description",
     "bogus"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=8))
def test_fuzzed_documents_raise_only_policy_error(d: dict[str, Any]) -> None:
    try:
        parse_policy(d, source="fuzz.toml")
    except PolicyError as exc:
        assert str(exc).startswith("fuzz.toml")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzzed_files_raise_only_policy_error(
    tmp_path_factory: pytest.TempPathFactory, content: bytes | str
) -> None:
    path = tmp_path_factory.mktemp("fz") / "p.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    with contextlib.suppress(PolicyError):
        load_policy(path)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(["US", "DE", "UA", "RU", "CN", "UA-43", "RU-MOW", "@eu"]),
        max_size=6,
        unique=True,
    ),
    st.lists(st.sampled_from(["CU", "IR", "KP", "UA-09", "UA-14"]), max_size=4, unique=True),
)
def test_roundtrip_through_toml(supported: list[str], unsupported: list[str]) -> None:
    text = tomli_w.dumps(
        {"name": "rt", "version": "1", "supported": supported, "unsupported": unsupported}
    )
    p = parse_policy(tomllib.loads(text))
    for code in supported:
        if not code.startswith("@"):
            assert p.is_supported(code)
    for code in unsupported:
        assert not p.is_supported(code)
