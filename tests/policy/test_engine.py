from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regiongate.intel.model import Flag, Origin, SourceAnswer
from regiongate.intel.snapshot import INVALID
from regiongate.policy import Action, Context, Mode, Phase, load_policy, parse_policy

NOTICE = dt.datetime(2024, 6, 25, tzinfo=dt.UTC)
ENFORCE = dt.datetime(2024, 7, 9, tzinfo=dt.UTC)
BEFORE = Context.at_time(dt.datetime(2024, 6, 1))
DURING = Context.at_time(dt.datetime(2024, 7, 1))
AFTER = Context.at_time(dt.datetime(2024, 8, 1))


def origin(
    *territories: str, flags: tuple[Flag, ...] = (), sources: tuple[SourceAnswer, ...] = ()
) -> Origin:
    countries = [t for t in territories if "-" not in t]
    subs = [t for t in territories if "-" in t]
    return Origin(
        country=countries[0] if countries else (subs[0][:2] if subs else None),
        subdivision=subs[0] if subs else None,
        territories=territories,
        flags=frozenset(flags) | (frozenset() if territories else frozenset({Flag.UNKNOWN})),
        sources=sources,
    )


def policy(**over: Any) -> Any:
    doc: dict[str, Any] = {
        "name": "t",
        "version": "1",
        "supported": ["US", "DE", "UA", "RU-MOW"],
        "unsupported": ["@occupied-ua"],
        "notice_from": NOTICE,
        "enforce_from": ENFORCE,
    }
    doc.update(over)
    return parse_policy({k: v for k, v in doc.items() if v is not None})


P = policy()


@pytest.mark.parametrize(
    ("ctx", "territories", "action", "intended", "phase"),
    [
        (BEFORE, ("CN",), Action.ALLOW, Action.ALLOW, Phase.BEFORE_NOTICE),
        (DURING, ("CN",), Action.FLAG, Action.FLAG, Phase.NOTICE),
        (AFTER, ("CN",), Action.BLOCK, Action.BLOCK, Phase.ENFORCE),
        (BEFORE, ("US",), Action.ALLOW, Action.ALLOW, Phase.BEFORE_NOTICE),
        (DURING, ("US",), Action.ALLOW, Action.ALLOW, Phase.NOTICE),
        (AFTER, ("US",), Action.ALLOW, Action.ALLOW, Phase.ENFORCE),
        (AFTER, ("UA", "UA-30"), Action.ALLOW, Action.ALLOW, Phase.ENFORCE),
        (AFTER, ("UA", "UA-43"), Action.BLOCK, Action.BLOCK, Phase.ENFORCE),
        (DURING, ("UA", "UA-43"), Action.FLAG, Action.FLAG, Phase.NOTICE),
        (AFTER, ("RU", "UA-43"), Action.BLOCK, Action.BLOCK, Phase.ENFORCE),
        (AFTER, ("RU", "RU-MOW"), Action.ALLOW, Action.ALLOW, Phase.ENFORCE),
        (AFTER, ("RU", "RU-SPE"), Action.BLOCK, Action.BLOCK, Phase.ENFORCE),
        # any-consensus: one source says US, another CN: an unsupported territory is named.
        (AFTER, ("US", "CN"), Action.BLOCK, Action.BLOCK, Phase.ENFORCE),
    ],
)
def test_phases_and_territories(
    ctx: Context, territories: tuple[str, ...], action: Action, intended: Action, phase: Phase
) -> None:
    d = P.decide(origin(*territories), ctx)
    assert (d.action, d.intended, d.phase) == (action, intended, phase)
    assert d.policy == "t@1" and d.mode is Mode.ENFORCE
    assert d.code == (None if intended is Action.ALLOW else "unsupported_country_region_territory")


def test_exact_phase_boundaries() -> None:
    o = origin("CN")
    assert P.decide(o, Context(at=NOTICE.timestamp() - 1e-3)).phase is Phase.BEFORE_NOTICE
    assert P.decide(o, Context(at=NOTICE.timestamp())).phase is Phase.NOTICE
    assert P.decide(o, Context(at=ENFORCE.timestamp() - 1e-3)).action is Action.FLAG
    assert P.decide(o, Context(at=ENFORCE.timestamp())).action is Action.BLOCK


def test_territory_and_reasons_name_the_rule() -> None:
    src = (
        SourceAnswer(source="geo", country="RU"),
        SourceAnswer(source="city", country="RU", subdivision="UA-43", region="Crimea"),
    )
    d = P.decide(origin("RU", "UA-43", sources=src), AFTER)
    assert d.territory == "UA-43"
    assert d.reasons[0] == "UA-43 is not supported (unsupported: @occupied-ua)"
    assert "RU is not supported (not listed in supported: default unsupported)" in d.reasons
    assert d.reasons[-1] == "sources: geo: RU; city: RU/UA-43 (Crimea)"
    d = P.decide(origin("UA", "UA-30"), AFTER)
    assert d.territory == "UA" and d.reasons[0] == "UA is supported (supported: UA)"
    d = P.decide(origin("CN", "CN-SD"), AFTER)
    assert d.territory == "CN"  # no rule of CN-SD's own: decided as its country
    d = P.decide(origin("RU", "RU-MOW"), AFTER)
    assert d.territory == "RU-MOW"
    assert d.to_dict()["phase"] == "enforce"


def test_notice_and_before_reasons() -> None:
    assert (
        "notice period: flagged now, blocked from 2024-07-09"
        in P.decide(origin("CN"), DURING).reasons
    )
    assert (
        "before the policy takes effect on 2024-06-25: would block"
        in P.decide(origin("CN"), BEFORE).reasons
    )


def test_dry_run_never_blocks() -> None:
    p = policy(mode="dry-run")
    d = p.decide(origin("CN"), AFTER)
    assert (d.action, d.intended, d.mode) == (Action.FLAG, Action.BLOCK, Mode.DRY_RUN)
    assert "dry-run: would block, recorded only" in d.reasons
    assert p.decide(origin("US"), AFTER).action is Action.ALLOW
    assert p.decide(INVALID, AFTER).action is Action.FLAG


def test_undated_and_notice_only_policies() -> None:
    always = policy(notice_from=None, enforce_from=None)
    assert always.decide(origin("CN"), BEFORE).action is Action.BLOCK
    warn_only = policy(enforce_from=None)
    assert warn_only.decide(origin("CN"), BEFORE).action is Action.ALLOW
    assert (
        warn_only.decide(origin("CN"), Context.at_time(dt.datetime(2030, 1, 1))).action
        is Action.FLAG
    )
    enforce_only = policy(notice_from=None)
    assert enforce_only.decide(origin("CN"), DURING).action is Action.ALLOW
    assert enforce_only.decide(origin("CN"), AFTER).action is Action.BLOCK


@pytest.mark.parametrize(
    "flag", [Flag.TOR, Flag.VPN, Flag.HOSTING, Flag.PROXY, Flag.RELAY, Flag.DISPUTED]
)
@pytest.mark.parametrize("setting", [Action.ALLOW, Action.FLAG, Action.BLOCK])
def test_each_anonymizer_action(flag: Flag, setting: Action) -> None:
    p = policy(actions={str(flag): str(setting)})
    d = p.decide(origin("US", flags=(flag,)), AFTER)
    assert d.action is setting
    if setting is not Action.ALLOW:
        assert f"address is {flag}: actions.{flag} = {setting}" in d.reasons
    # The strictest wins: an unsupported territory is blocked whatever the flag's action.
    assert p.decide(origin("CN", flags=(flag,)), AFTER).action is Action.BLOCK
    # Before the notice date nothing happens, anonymizer actions included.
    assert p.decide(origin("US", flags=(flag,)), BEFORE).action is Action.ALLOW


@pytest.mark.parametrize(
    ("key", "o"),
    [
        ("unknown", origin()),
        ("private", Origin(flags=frozenset({Flag.PRIVATE}), note="private use (RFC 1918)")),
        ("invalid", INVALID),
    ],
)
@pytest.mark.parametrize("setting", [Action.ALLOW, Action.FLAG, Action.BLOCK])
def test_unknown_private_invalid(key: str, o: Origin, setting: Action) -> None:
    d = policy(actions={key: str(setting)}).decide(o, AFTER)
    assert d.action is setting and d.territory is None
    assert f"actions.{key} = {setting}" in d.reasons[0]


def test_default_actions() -> None:
    assert P.decide(INVALID, AFTER).action is Action.BLOCK
    assert P.decide(origin(), AFTER).action is Action.ALLOW
    assert P.decide(origin("US", flags=(Flag.TOR,)), AFTER).action is Action.ALLOW


def test_exemptions() -> None:
    p = policy(exemptions={"accounts": ["org-1"], "networks": ["203.0.113.0/24", "2001:db8::/32"]})
    cn = origin("CN")
    assert p.decide(cn, Context(at=AFTER.at, account="org-1")).exempt
    assert p.decide(cn, Context(at=AFTER.at, account="org-2")).action is Action.BLOCK
    assert p.decide(cn, Context(at=AFTER.at, client=(4, 0xCB007101))).action is Action.ALLOW
    assert p.decide(cn, Context(at=AFTER.at, client=(4, 0xCB007201))).action is Action.BLOCK
    assert p.decide(cn, Context(at=AFTER.at, client=(6, 0x20010DB8 << 96 | 5))).exempt
    assert p.decide(cn, Context(at=AFTER.at, client=(6, 0xCB007101))).action is Action.BLOCK
    assert p.decide(INVALID, Context(at=AFTER.at, account="org-1")).action is Action.ALLOW


def test_an_exempt_decision_still_names_the_territory() -> None:
    """Exempt requests are allowed, and the X-Regiongate-Territory header and the reports
    still say where they came from (it was "unknown")."""
    p = policy(exemptions={"accounts": ["org-1"], "networks": ["203.0.113.0/24"]})
    by_account = Context(at=AFTER.at, account="org-1")
    by_network = Context(at=AFTER.at, client=(4, 0xCB007101))
    cn = origin("CN")
    for ctx in (by_account, by_network):
        d = p.decide(cn, ctx)
        assert (d.action, d.exempt, d.rule, d.territory) == (Action.ALLOW, True, "exempt", "CN")
        assert p.decide(cn, ctx) is d  # memoised per (phase, origin)
        assert p.decide(origin("US"), ctx).territory == "US"
        assert p.decide(INVALID, ctx).territory is None
        before = p.decide(cn, Context(at=BEFORE.at, account="org-1"))
        assert before.phase is not d.phase and before.territory == "CN"
    p.engine.clear()  # a snapshot reload: the Origins go, and so do their decisions
    assert not any(p.engine._exempt_memos)
    assert p.decide(cn, by_account).territory == "CN"


def test_subdivision_override_in_a_denylist() -> None:
    p = parse_policy(
        {
            "name": "d",
            "version": "1",
            "unsupported": ["RU"],
            "supported": ["RU-MOW"],
            "default": "supported",
        }
    )
    assert p.decide(origin("RU", "RU-MOW"), AFTER).action is Action.ALLOW
    assert p.decide(origin("RU", "RU-SPE"), AFTER).action is Action.BLOCK
    assert p.decide(origin("UA", "UA-43"), AFTER).action is Action.ALLOW


API_BLOCKED = ["CN", "HK", "MO", "RU", "BY", "IR", "KP", "CU", "SY", "VE"]


@pytest.mark.parametrize("code", API_BLOCKED)
def test_api_2024_blocks_unsupported_countries(code: str) -> None:
    d = load_policy("api-2024").decide(origin(code), AFTER)
    assert d.action is Action.BLOCK and d.territory == code and d.policy == "api-2024@2024-07-09"


@pytest.mark.parametrize("region", ["UA-43", "UA-40", "UA-14", "UA-09"])
@pytest.mark.parametrize("filed_under", ["UA", "RU"])
def test_api_2024_blocks_occupied_regions(region: str, filed_under: str) -> None:
    d = load_policy("api-2024").decide(origin(filed_under, region), AFTER)
    assert d.action is Action.BLOCK and d.territory == region


@pytest.mark.parametrize(
    "territories", [("US", "US-CA"), ("DE",), ("JP", "JP-13"), ("UA", "UA-30"), ("UA", "UA-32")]
)
def test_api_2024_allows_supported(territories: tuple[str, ...]) -> None:
    p = load_policy("api-2024")
    assert p.decide(origin(*territories), AFTER).action is Action.ALLOW
    assert p.decide(origin(*territories), DURING).action is Action.ALLOW


def test_sanctions_preset() -> None:
    p = load_policy("sanctions-comprehensive")
    for code in ("CU", "IR", "KP", "SY"):
        assert p.decide(origin(code), BEFORE).action is Action.BLOCK  # undated: always in force
    assert p.decide(origin("RU", "UA-43"), AFTER).action is Action.BLOCK
    assert p.decide(origin("RU"), AFTER).action is Action.ALLOW
    assert p.decide(origin("CN"), AFTER).action is Action.ALLOW


_territory = st.sampled_from(["US", "CN", "UA", "RU", "UA-43", "UA-30", "RU-MOW", "DE", "CN-SD"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_territory, max_size=4, unique=True),
    st.sets(st.sampled_from(list(Flag))),
    st.sampled_from([BEFORE, DURING, AFTER]),
)
def test_memoised_decision_equals_fresh_explanation(
    territories: list[str], flags: set[Flag], ctx: Context
) -> None:
    o = Origin(territories=tuple(territories), flags=frozenset(flags))
    first = P.decide(o, ctx)
    again = P.decide(o, ctx)
    fresh = P.engine.explain(o, P.phase_at(ctx.at))
    assert first is again
    assert first == fresh
