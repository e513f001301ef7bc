"""Circumvention signals: request hints, the sliding window, explainable scores, and the
policy thresholds that open reviews and suspend organisations."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from regiongate.accounts.model import Event, Key, Payment, State
from regiongate.accounts.service import CircumventionRule, ReviewClosed, decide_review
from regiongate.accounts.signals import (
    HintReader,
    SignalTracker,
    hint_detail,
    language_country,
    score,
    timezone_country,
)
from regiongate.accounts.store import Store
from regiongate.enforce.middleware import body_user
from regiongate.errors import PolicyError
from regiongate.policy import load_policy, parse_policy
from regiongate.policy.document import DEFAULT_WEIGHTS, Policy
from tests.accounts.stores import open_store
from tests.accounts.test_gateway_accounts import ENFORCE, NOTICE, POLICY, World

SUPPORTED = {"US", "CA", "DE", "GB", "JP", "UA"}


def supported(territory: str) -> bool:
    return territory.split("-", 1)[0] in SUPPORTED and territory != "UA-43"


_ids = itertools.count()


def ev(
    org: str = "org-a",
    *,
    at: float = 1000.0,
    territory: str | None = "US",
    flags: str = "",
    action: str = "allow",
    detail: str = "",
) -> Event:
    return Event(
        f"ev{next(_ids)}", org, "kid_x", at, territory, flags, action, "supported", False, detail
    )


# --- hints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "country"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "CN"),
        ("zh-Hans", "CN"),
        ("zh-Hant-TW", "TW"),
        ("fa", "IR"),
        ("ru-RU", "RU"),
        ("en-US,en;q=0.9", "US"),
        ("en", None),
        ("es-419", None),
        ("*", None),
        ("", None),
        ("not a tag!!", None),
        ("x" * 300, None),
    ],
)
def test_language_country(header: str, country: str | None) -> None:
    assert language_country(header) == country


def test_timezone_country() -> None:
    assert timezone_country("Asia/Shanghai") == "CN"
    assert timezone_country("Europe/Moscow") == "RU"
    assert timezone_country("America/New_York") == "US"
    assert timezone_country("Europe/Simferopol") == "UA"
    assert timezone_country("Not/AZone") is None
    assert timezone_country("") is None


def test_hint_reader_hashes_end_users_and_reads_headers() -> None:
    reader = HintReader(b"k" * 32, end_user_header="X-End-User", timezone_header="X-Timezone")
    headers = [
        (b"accept-language", b"ru-RU,ru;q=0.9"),
        (b"x-timezone", b"Europe/Moscow"),
        (b"x-end-user", b"alice@example.com"),
    ]
    detail = reader.read(headers, None)
    parts = dict(p.split("=", 1) for p in detail.split(";"))
    assert parts["lang"] == "RU" and parts["tz"] == "RU"
    assert "alice" not in detail and len(parts["user"]) == 16
    assert reader.read(headers, None) == detail  # same user, same id
    other = HintReader(b"q" * 32, end_user_header="X-End-User").read(headers, None)
    assert dict(p.split("=", 1) for p in other.split(";"))["user"] != parts["user"]
    # the body's user wins over nothing, the header is read when there is no body user
    assert reader.read([], None, user="bob").startswith("user=")
    assert reader.read([], None) == ""
    # garbage headers say nothing, never fail
    assert reader.read([(b"accept-language", b"\xff\xfe;;=="), (b"x-timezone", b"??")], None) == ""


def test_body_user() -> None:
    assert body_user(b'{"model": "gpt", "user": "u-42"}') == "u-42"
    assert body_user(b'  {"user": "u"}') == "u"
    assert body_user(b'{"user": 42}') is None
    assert body_user(b'{"user": ""}') is None
    assert body_user(b'{"user": "' + b"x" * 300 + b'"}') is None
    assert body_user(b"[1, 2]") is None
    assert body_user(b'{"user": "u"') is None  # truncated JSON
    assert body_user(b"\xff\xfe") is None
    assert body_user(b"") is None


# --- the window and the score --------------------------------------------------------------------


def test_window_slides_and_refused_requests_do_not_count() -> None:
    tracker = SignalTracker(window=2400.0)  # 24 slices of 100 s
    tracker.add([ev(at=1000.0, flags="vpn") for _ in range(10)])
    tracker.add([ev(at=3000.0) for _ in range(5)])
    tracker.add([ev(at=3000.0, action="refused") for _ in range(7)])
    s = tracker.signals("org-a", now=3100.0)
    assert s is not None and s.requests == 15 and s.vpn == 10
    s = tracker.signals("org-a", now=3500.0)  # the slice at 1000 has left the window
    assert s is not None and s.requests == 5 and s.vpn == 0
    assert tracker.signals("org-a", now=10_000.0) is None
    assert tracker.signals("nobody", now=3500.0) is None
    with pytest.raises(ValueError, match="window"):
        SignalTracker(window=0)


def test_out_of_order_events_land_in_their_slice() -> None:
    tracker = SignalTracker(window=2400.0)
    tracker.add([ev(at=2000.0)])
    tracker.add([ev(at=1000.0, flags="tor")])  # a spool replay, older
    s = tracker.signals("org-a", now=2050.0)
    assert s is not None and s.requests == 2 and s.tor == 1


def test_score_explains_itself() -> None:
    tracker = SignalTracker()
    events = []
    for i in range(100):
        flags = "vpn" if i < 60 else ("tor" if i < 70 else "")
        territory = "DE" if i < 40 else ("US" if i < 75 else "RU")
        user = f"u{i % 37:02d}"
        lang = "CN" if i % 2 else "US"
        events.append(
            ev(
                at=1000.0 + i,
                territory=territory,
                flags=flags,
                detail=hint_detail(user=user, lang=lang),
            )
        )
    tracker.add(events)
    signals = tracker.signals("org-a", now=2000.0)
    assert signals is not None
    result = score(signals, DEFAULT_WEIGHTS, supported)
    by = {c.signal: c for c in result.contributions}
    assert by["vpn"].value == pytest.approx(0.60) and by["vpn"].points == pytest.approx(21.0)
    assert by["tor"].value == pytest.approx(0.10) and "10 of 100 requests (10%)" in by["tor"].detail
    assert by["unsupported"].value == pytest.approx(0.25)
    assert "RU 25" in by["unsupported"].detail
    assert by["language"].value == pytest.approx(0.5)  # CN hints, nowhere near CN
    assert "CN 50" in by["language"].detail
    assert by["end_users"].detail == "37 distinct end users"
    assert by["payment"].points == 0 and by["payment"].detail == "no payments known"
    # the score is the sum of the parts, and the parts are in order of points
    assert result.score == pytest.approx(sum(c.points for c in result.contributions))
    points = [c.points for c in result.contributions]
    assert points == sorted(points, reverse=True)
    text = result.explain()
    assert text.startswith(
        f"circumvention score {result.score:.1f} over 100 requests (anonymized) = vpn 21.0"
    )
    assert result.pattern == "anonymized" and result.to_dict()["pattern"] == "anonymized"
    assert "relay" not in text  # signals that add nothing are left out of the sentence
    data = result.to_dict()
    assert data["explanation"] == text and len(data["signals"]) == len(DEFAULT_WEIGHTS)


def test_score_is_capped_and_weights_are_policy() -> None:
    tracker = SignalTracker()
    tracker.add([ev(at=1000.0 + i, territory="RU", flags="tor,vpn") for i in range(60)])
    signals = tracker.signals("org-a", now=1100.0)
    assert signals is not None
    assert score(signals, DEFAULT_WEIGHTS, supported).score == 100.0
    only_tor = score(signals, {"tor": 10.0}, supported)
    assert only_tor.score == pytest.approx(10.0)


def test_honest_traffic_scores_nothing() -> None:
    tracker = SignalTracker()
    tracker.add(
        [ev(at=1000.0 + i, territory="US", detail=hint_detail(lang="US")) for i in range(200)]
    )
    tracker.note_payments("org-a", ["US"])
    signals = tracker.signals("org-a", now=1300.0)
    assert signals is not None
    assert score(signals, DEFAULT_WEIGHTS, supported).score == 0.0


def test_payment_country_against_traffic_country() -> None:
    tracker = SignalTracker()
    tracker.add([ev(at=1000.0 + i, territory="DE") for i in range(10)])
    tracker.note_payments("org-a", ["us", "US"])
    signals = tracker.signals("org-a", now=1100.0)
    assert signals is not None and signals.payments == ("US",)
    by = {c.signal: c for c in score(signals, DEFAULT_WEIGHTS, supported).contributions}
    assert by["payment"].value == 1.0
    assert by["payment"].detail == "payments from US while traffic comes mostly from DE"


# --- policy --------------------------------------------------------------------------------------


def _policy(extra: str) -> Policy:
    return parse_policy(
        __import__("tomllib").loads('name = "p"\nversion = "1"\nsupported = ["US"]\n' + extra),
        source="test",
    )


def test_policy_thresholds_parse_and_refuse_nonsense() -> None:
    rules = load_policy("api-2024").accounts.circumvention
    assert rules.review == 40 and rules.suspend == 75 and rules.enabled
    p = _policy("[accounts.circumvention]\nreview = 30\nweights = { tor = 50 }\n")
    assert p.accounts.circumvention.weights["tor"] == 50
    assert p.accounts.circumvention.weights["vpn"] == DEFAULT_WEIGHTS["vpn"]
    assert not _policy("").accounts.circumvention.enabled
    bad = {
        "review = 130": "accounts.circumvention.review",
        "review = 50\nsuspend = 40": "accounts.circumvention.suspend",
        "window = '10s'": "accounts.circumvention.window",
        "min_requests = 0": "accounts.circumvention.min_requests",
        "weights = { vpm = 3 }": "accounts.circumvention.weights.vpm",
        "weights = { tor = -1 }": "accounts.circumvention.weights.tor",
        "review = true": "accounts.circumvention.review",
        "treshold = 3": "accounts.circumvention.treshold",
    }
    for body, key in bad.items():
        with pytest.raises(PolicyError) as info:
            _policy("[accounts.circumvention]\n" + body + "\n")
        assert key in str(info.value), body


# --- thresholds drive account states -------------------------------------------------------------

THRESHOLDS = """
[accounts.circumvention]
review = 30
suspend = 60
window = "1h"
min_requests = 10
"""


@pytest.fixture
def world(tmp_path: Path, tiny_snapshot_path: Path) -> Iterator[World]:
    for store in open_store("sqlite", tmp_path):
        w = World(
            store,
            tiny_snapshot_path,
            tmp_path,
            # AU supported: the tiny snapshot's Tor exits are in AU, and Tor is allowed, so
            # only the score (not strikes) can act on those requests.
            POLICY.replace('"DE"]', '"DE", "AU"]') + THRESHOLDS,
            end_user_body=True,
            timezone_header="x-timezone",
        )
        yield w
        w.accounts.close()


TOR_AU = "1.0.0.200"  # tiny snapshot: AU, a Tor exit
US = "3.0.0.1"


def _post(world: World, key: str, client: str, body: bytes, **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=world.app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            return await c.post(
                "/v1/chat/completions",
                content=body,
                headers={
                    "X-Forwarded-For": client,
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/json",
                    **headers,
                },
            )

    return asyncio.run(go())


def _reviews(store: Store, org: str) -> list[str]:
    return [r.status for r in store.list_reviews(org=org, status=None)]


def test_gateway_records_hints_from_headers_and_body(world: World) -> None:
    r = _post(
        world,
        "sk-a",
        US,
        b'{"model": "m", "user": "end-user-7"}',
        **{"Accept-Language": "fa-IR", "X-Timezone": "Asia/Tehran"},
    )
    assert r.status_code == 200
    world.settle()
    rows = world.store._run(  # type: ignore[attr-defined]
        lambda c: c.exec_driver_sql("SELECT detail FROM rg_events").fetchall()
    )
    assert len(rows) == 1
    parts = dict(p.split("=", 1) for p in rows[0][0].split(";"))
    assert parts["lang"] == "IR" and parts["tz"] == "IR" and len(parts["user"]) == 16
    assert "end-user-7" not in rows[0][0]
    signals = world.accounts.rules.circumvention.tracker.signals("org-a", world.clock.now)
    assert signals is not None and signals.end_users == 1 and signals.lang_away == {"IR": 1}


def test_score_over_review_threshold_opens_one_review_before_enforcement(world: World) -> None:
    for i in range(12):
        body = b'{"user": "u%d"}' % i
        assert _post(world, "sk-a", TOR_AU, body, **{"Accept-Language": "ru-RU"}).status_code == 200
    world.settle()
    assert world.state("org-a") is State.ACTIVE  # notice phase: no suspension by score
    reviews = world.store.list_reviews(org="org-a")
    assert len(reviews) == 1
    review = reviews[0]
    assert review.score >= 60  # over suspend: it would suspend once enforced
    assert review.explanation["would"] == "suspend (once enforced)"
    assert review.explanation["signals"][0]["signal"] == "tor"
    assert review.explanation["explanation"].startswith("circumvention score")
    assert review.explanation["thresholds"] == {"review": 30.0, "suspend": 60.0}
    opened = [e for e in world.store.audit(org="org-a") if e.action == "review.open"]
    assert len(opened) == 1 and opened[0].actor == "rule:circumvention"
    # more of the same refreshes the open review, no second one
    world.clock.now += 120
    for _ in range(3):
        _post(world, "sk-a", TOR_AU, b"{}")
    world.settle()
    assert _reviews(world.store, "org-a") == ["open"]
    # org-b's honest traffic: nothing
    for _ in range(15):
        _post(world, "sk-b", US, b"{}", **{"Accept-Language": "en-US"})
    world.settle()
    assert world.store.list_reviews(org="org-b") == []


def test_score_over_suspend_threshold_suspends_in_enforcement(world: World) -> None:
    world.clock.now = ENFORCE
    for _ in range(12):
        # Tor from a supported territory: allowed, no strike; only the score acts
        _post(world, "sk-a", TOR_AU, b"{}", **{"Accept-Language": "zh-CN"})
    world.settle()
    assert world.state("org-a") is State.SUSPENDED
    from regiongate.enforce.metrics import registry_for, render

    text = render(registry_for(world.gate, world.accounts)).decode()
    assert "regiongate_circumvention_suspensions_total 1.0" in text
    assert "regiongate_circumvention_reviews_opened_total 0.0" in text
    assert "regiongate_circumvention_tracked_orgs 1.0" in text
    entry = [e for e in world.store.audit(org="org-a") if e.action == "state"][-1]
    assert entry.actor == "rule:circumvention"
    assert entry.reason.startswith("circumvention score") and "tor" in entry.reason
    assert "threshold 60" in entry.reason and len(entry.evidence) >= 1
    assert _post(world, "sk-a", US, b"{}").json()["error"]["code"] == "account_deactivated"


def test_below_min_requests_or_exempt_is_not_scored(world: World) -> None:
    world.clock.now = ENFORCE
    for _ in range(9):  # min_requests is 10
        _post(world, "sk-a", TOR_AU, b"{}")
    for _ in range(20):
        _post(world, "sk-vip", TOR_AU, b"{}")
    world.settle()
    assert world.state("org-a") is State.ACTIVE and world.state("org-vip") is State.ACTIVE
    assert world.store.list_reviews(status=None) == []


def test_dismissed_review_is_not_reopened_within_the_window(world: World) -> None:
    for _ in range(12):
        _post(world, "sk-a", TOR_AU, b"{}")
    world.settle()
    (review,) = world.store.list_reviews(org="org-a")
    outcome = decide_review(
        world.store, review.id, "dismissed", actor="cli:ops", note="known VPN user", at=NOTICE
    )
    assert outcome is not None and outcome[1] is None and outcome[0].status == "dismissed"
    with pytest.raises(ReviewClosed):
        decide_review(world.store, review.id, "suspended", actor="cli:ops")
    assert decide_review(world.store, "rv_nope", "dismissed", actor="cli:ops") is None
    world.clock.now += 300
    for _ in range(5):
        _post(world, "sk-a", TOR_AU, b"{}")
    world.settle()
    assert _reviews(world.store, "org-a") == ["dismissed"]
    world.clock.now += 3700  # past the window: a fresh flag is a fresh review
    for _ in range(12):
        _post(world, "sk-a", TOR_AU, b"{}")
    world.settle()
    assert sorted(_reviews(world.store, "org-a")) == ["dismissed", "open"]


def test_review_decisions_change_state(world: World) -> None:
    for key in ("sk-a", "sk-b"):
        for _ in range(12):
            _post(world, key, TOR_AU, b"{}")
    world.settle()
    a = world.store.list_reviews(org="org-a")[0]
    b = world.store.list_reviews(org="org-b")[0]
    outcome = decide_review(world.store, a.id, "suspended", actor="admin:ops", note="reseller")
    assert outcome is not None and outcome[1] is not None
    assert outcome[1].state is State.SUSPENDED
    entry = [e for e in world.store.audit(org="org-a") if e.action == "state"][-1]
    assert entry.evidence == (a.id,) and "reseller" in entry.reason
    outcome = decide_review(world.store, b.id, "warned", actor="admin:ops")
    assert outcome is not None and outcome[1] is not None and outcome[1].state is State.WARNED
    with pytest.raises(ValueError, match="decision"):
        world.store.close_review(b.id, "banished", actor="x", at=NOTICE)


def test_payments_feed_the_payment_signal(world: World) -> None:
    world.accounts.rules.on_payment(
        Payment("pay-1", "org-a", NOTICE, card_country="CA", billing_country="CA"), actor="t"
    )
    for _ in range(12):
        _post(world, "sk-a", US, b"{}")
    world.settle()
    result = world.accounts.rules.circumvention.score("org-a", world.policy, world.clock.now)
    assert result is not None
    by = {c.signal: c for c in result.contributions}
    assert by["payment"].value == 1.0 and "CA" in by["payment"].detail


def test_rule_without_thresholds_only_tracks(tmp_path: Path) -> None:
    for store in open_store("sqlite", tmp_path):
        rule = CircumventionRule(store, clock=lambda: ENFORCE)
        store.upsert_org("org-a", actor="t")
        store.add_key(Key("kid_" + "0" * 32, "org-a"), actor="t")
        policy = _policy("")
        rule.on_batch([ev(at=ENFORCE, flags="tor", territory="RU") for _ in range(100)], policy)
        assert store.list_reviews(status=None) == []
        assert rule.tracker.signals("org-a", ENFORCE) is not None


def test_openai_sdk_user_field_through_the_proxy(tmp_path: Path, tiny_snapshot_path: Path) -> None:
    """The official SDK's ``user`` parameter, through the real gateway and its proxy to a real
    upstream, becomes a hashed end user on the event (the body still reaches the upstream)."""
    import openai

    from regiongate.accounts.service import Accounts
    from regiongate.config import AccountsSettings
    from regiongate.enforce.app import GatewayApp
    from regiongate.enforce.gate import Gate
    from regiongate.enforce.server import uvicorn_config
    from tests.enforce.servers import free_port, gateway_settings, serve_app
    from tests.enforce.upstreams import Control, controlled_upstream

    for store in open_store("sqlite", tmp_path):
        with serve_app(controlled_upstream(Control())) as upstream:
            port = free_port()
            settings = gateway_settings(tiny_snapshot_path, port, f"http://127.0.0.1:{upstream}")
            gate = Gate.from_settings(settings)
            accounts = Accounts(
                store,
                AccountsSettings(spool_dir=str(tmp_path / "spool"), end_user_body=True),
                lambda gate=gate: gate.state.policy,  # type: ignore[misc]
                secret=b"s" * 32,
            )
            store.upsert_org("org-sdk", actor="test")
            store.add_key(Key(accounts.hasher.key_id("sk-sdk"), "org-sdk"), actor="test")
            app = GatewayApp(settings, gate, accounts=accounts)
            config = uvicorn_config(app, settings, log_level="warning")
            with serve_app(app, port, uvicorn_config=config):
                client = openai.OpenAI(
                    base_url=f"http://127.0.0.1:{port}/v1",
                    api_key="sk-sdk",
                    max_retries=0,
                    default_headers={"X-Forwarded-For": US, "Accept-Language": "de-DE"},
                )
                with client:
                    reply = client.chat.completions.create(
                        model="demo-1",
                        messages=[{"role": "user", "content": "hi"}],
                        user="customer-42",
                    )
                assert reply.choices[0].message.content
                assert accounts.sink.flush(20)
            rows = store._run(  # type: ignore[attr-defined]
                lambda c: c.exec_driver_sql("SELECT org, detail FROM rg_events").fetchall()
            )
            assert len(rows) == 1 and rows[0][0] == "org-sdk"
            detail = dict(p.split("=", 1) for p in rows[0][1].split(";"))
            assert detail["user"] == accounts.hints.user_id("customer-42")  # type: ignore[union-attr]
            assert detail["lang"] == "DE" and "customer-42" not in rows[0][1]


def test_windows_stay_bounded_without_scoring() -> None:
    """An organisation that is never scored (thresholds off) keeps only its window's slices;
    events with an impossible time are ignored."""
    tracker = SignalTracker(window=2400.0)  # 24 slices of 100 s
    for t in range(0, 100_000, 50):
        tracker.add([ev(at=float(t))])
    assert len(tracker._orgs["org-a"]) <= 26
    tracker.add([ev(at=float("nan")), ev(at=float("inf"))])
    s = tracker.signals("org-a", now=100_000.0)
    assert s is not None and s.requests <= 50


def test_an_open_review_is_refreshed_at_most_once_a_minute(world: World) -> None:
    for _ in range(12):
        _post(world, "sk-a", TOR_AU, b"{}")
    world.settle()
    (first,) = world.store.list_reviews(org="org-a")
    world.clock.now += 10
    for _ in range(30):  # more of it: a higher score, but within the minute
        _post(world, "sk-a", TOR_AU, b"{}", **{"Accept-Language": "fa-IR"})
    world.settle()
    (same,) = world.store.list_reviews(org="org-a")
    assert same.updated == first.updated and same.score == first.score
    world.clock.now += 60
    _post(world, "sk-a", TOR_AU, b"{}", **{"Accept-Language": "fa-IR"})
    world.settle()
    (later,) = world.store.list_reviews(org="org-a")
    assert later.id == first.id and later.updated > first.updated and later.score > first.score
