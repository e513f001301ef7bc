"""Circumvention signals: how much an organisation's traffic looks like someone getting around
the territory rule (VPNs, Tor, relays, or a proxy in a supported country reselling access to
people in unsupported ones), as an explainable score.

Per organisation, over a sliding window (``[accounts.circumvention] window``, in 24 slices),
updated incrementally from the decision events the gateway writes:

=============  ==========================================================================
signal         value in [0, 1]
=============  ==========================================================================
``tor``        share of requests from Tor exits
``vpn``        share from VPN or open-proxy ranges
``relay``      share from privacy relays (iCloud Private Relay and the like)
``hosting``    share from hosting and cloud ranges (servers, not people)
``unsupported`` share from unsupported territories (what leaks past a VPN)
``end_users``  distinct end users (request ``user`` field or a header): log10(n) / 3
``countries``  country diversity: (effective number of countries - 1) / 4, where the
               effective number is exp(Shannon entropy) of the request shares
``language``   share of requests whose ``Accept-Language`` points to an unsupported
               territory other than the address's country (of those that carry one)
``timezone``   the same for a time-zone header (IANA zone → country)
``payment``    1 if a payment's card or billing country differs from the country most of the
               traffic comes from (the payments rule handles unsupported ones outright)
``cloud``      share of requests from the busiest single cloud region
=============  ==========================================================================

The score is ``sum(weight × value)``, capped at 100; each signal's ``points`` are its part of
it, with a sentence of the counts behind it, so a score explains itself. Which signals count
and how much is policy (``weights``); so are the thresholds that open a review or suspend.

Request hints (end user, language, time zone, cloud region) travel in ``Event.detail`` as
``key=value`` pairs (:func:`hint_detail`); the tracker reads them back.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from regiongate.accounts.model import Event
from regiongate.policy.document import DEFAULT_WEIGHTS, SIGNALS

if TYPE_CHECKING:
    from regiongate.intel.model import Origin

__all__ = [
    "ANONYMIZED",
    "DEFAULT_WEIGHTS",
    "DIRECT",
    "FAN_OUT",
    "SIGNALS",
    "Contribution",
    "HintReader",
    "Score",
    "SignalTracker",
    "Signals",
    "hint_detail",
    "language_country",
    "pattern_of",
    "score",
    "timezone_country",
]

SLICES: Final = 24  # a window is kept as this many time slices
_MAX_USERS: Final = 4096  # distinct end users kept per slice (beyond: "at least")
_MAX_ORGS: Final = 200_000  # organisations tracked at once (least recently seen go first)

# --- request hints -------------------------------------------------------------------------------

# A language without a region, for the few whose speakers are mostly in one territory the
# hint can say something about. Everything else without a region says nothing.
_LANGUAGE_HOME: Final[Mapping[str, str]] = {
    "zh": "CN",
    "ru": "RU",
    "fa": "IR",
    "be": "BY",
    "ja": "JP",
    "ko": "KR",
    "uk": "UA",
    "de": "DE",
    "fr": "FR",
    "it": "IT",
    "pl": "PL",
    "tr": "TR",
    "vi": "VN",
    "th": "TH",
    "id": "ID",
}
# Script subtags that name where a Chinese variant is written.
_SCRIPT_HOME: Final[Mapping[str, str]] = {"hans": "CN", "hant": "TW"}
_TAG = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$")


@lru_cache(maxsize=4096)
def language_country(accept_language: str) -> str | None:
    """The territory an ``Accept-Language`` value hints at, or ``None``.

    The first (most preferred) tag counts: its region subtag if it has one (``zh-CN`` → CN,
    ``en-US`` → US, ``es-419`` → none), else its script (``zh-Hans`` → CN), else the language's
    main territory for the few languages that have one (``fa`` → IR, ``ru`` → RU).
    """
    first = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    if not first or first == "*" or not _TAG.match(first):
        return None
    parts = first.split("-")
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            return part.upper()
    for part in parts[1:]:
        home = _SCRIPT_HOME.get(part.lower())
        if home:
            return home
    return _LANGUAGE_HOME.get(parts[0].lower())


# IANA zones of the places a hint matters most for, used when the system has no zone.tab.
_ZONES_BUILTIN: Final[Mapping[str, str]] = {
    "Asia/Shanghai": "CN",
    "Asia/Urumqi": "CN",
    "Asia/Chongqing": "CN",
    "Asia/Harbin": "CN",
    "Asia/Hong_Kong": "HK",
    "Asia/Macau": "MO",
    "Asia/Taipei": "TW",
    "Europe/Moscow": "RU",
    "Europe/Samara": "RU",
    "Europe/Volgograd": "RU",
    "Asia/Yekaterinburg": "RU",
    "Asia/Novosibirsk": "RU",
    "Asia/Vladivostok": "RU",
    "Europe/Kaliningrad": "RU",
    "Europe/Simferopol": "UA",
    "Europe/Kyiv": "UA",
    "Europe/Kiev": "UA",
    "Europe/Minsk": "BY",
    "Asia/Tehran": "IR",
    "Asia/Pyongyang": "KP",
    "America/Havana": "CU",
    "Asia/Damascus": "SY",
    "America/Caracas": "VE",
    "Asia/Tokyo": "JP",
    "Asia/Seoul": "KR",
    "Asia/Singapore": "SG",
    "Asia/Kolkata": "IN",
    "Europe/London": "GB",
    "Europe/Berlin": "DE",
    "Europe/Paris": "FR",
    "America/New_York": "US",
    "America/Chicago": "US",
    "America/Denver": "US",
    "America/Los_Angeles": "US",
}


@lru_cache(maxsize=1)
def _zones() -> Mapping[str, str]:
    """IANA zone → ISO 3166-1 country, from the system's ``zone.tab`` (tzdata)."""
    zones = dict(_ZONES_BUILTIN)
    path = Path("/usr/share/zoneinfo/zone.tab")
    if path.is_file():
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.startswith("#"):
                    continue
                parts = line.split("\t")
                if len(parts) >= 3 and len(parts[0]) == 2:
                    zones[parts[2].strip()] = parts[0].upper()
        except (OSError, UnicodeDecodeError):
            pass
    # Crimea's zone: zone.tab files disagree (RU or UA); the territory is UA-43 either way,
    # and the policy supports or not by country too, so name the ISO country.
    zones["Europe/Simferopol"] = "UA"
    return zones


@lru_cache(maxsize=1024)
def timezone_country(zone: str) -> str | None:
    """The country of an IANA time-zone name (``Asia/Shanghai`` → CN), or ``None``."""
    return _zones().get(zone.strip())


_CLEAN = re.compile(r"[^A-Za-z0-9_./:+-]")


def _clean(value: str, limit: int = 64) -> str:
    return _CLEAN.sub("", value)[:limit]


class HintReader:
    """Reads a request's hints from its headers (and the body's ``user`` field, given)."""

    def __init__(
        self,
        secret: bytes,
        *,
        end_user_header: str | None = None,
        timezone_header: str | None = None,
    ) -> None:
        self._secret = secret
        self.end_user_header = end_user_header.lower().encode() if end_user_header else None
        self.timezone_header = timezone_header.lower().encode() if timezone_header else None
        self._users: dict[str, str] = {}
        self._clouds: dict[Origin, str | None] = {}  # Origins are interned per snapshot row

    def user_id(self, user: str) -> str:
        """A keyed hash of an end-user identifier (16 hex digits): never the identifier."""
        known = self._users.get(user)
        if known is None:
            if len(self._users) >= 65536:
                self._users.clear()
            digest = hmac.new(self._secret, b"end-user\0" + user.encode(), hashlib.sha256)
            known = self._users[user] = digest.hexdigest()[:16]
        return known

    def read(
        self, headers: Iterable[tuple[bytes, bytes]], origin: Origin | None, user: str | None = None
    ) -> str:
        """The ``Event.detail`` of a request: its hints as ``key=value;...`` ("" for none)."""
        lang = tz = cloud = None
        end_user = user
        user_header, tz_header = self.end_user_header, self.timezone_header
        if origin is not None and origin.sources:
            clouds = self._clouds
            if origin in clouds:
                cloud = clouds[origin]
            else:
                if len(clouds) >= 65536:
                    clouds.clear()
                cloud = clouds[origin] = cloud_region(origin)
        for name, value in headers:
            if name == b"accept-language":
                lang = language_country(value.decode("latin-1"))
            elif name == tz_header:
                tz = timezone_country(value.decode("latin-1"))
            elif name == user_header and end_user is None:
                end_user = value.decode("latin-1").strip() or None
        if end_user is None and lang is None and tz is None and cloud is None:
            return ""
        return hint_detail(
            user=self.user_id(end_user) if end_user else None, lang=lang, tz=tz, cloud=cloud
        )


def cloud_region(origin: Origin) -> str | None:
    """``provider/region`` when a cloud provider's range list names the address's region."""
    for answer in origin.sources:
        if answer.provider and answer.region:
            return f"{_clean(answer.provider, 24)}/{_clean(answer.region, 40)}"
    return None


def hint_detail(
    *,
    user: str | None = None,
    lang: str | None = None,
    tz: str | None = None,
    cloud: str | None = None,
) -> str:
    """``Event.detail`` from hints (values must not hold ``;`` or ``=``)."""
    parts = []
    if user:
        parts.append(f"user={user}")
    if lang:
        parts.append(f"lang={lang}")
    if tz:
        parts.append(f"tz={tz}")
    if cloud:
        parts.append(f"cloud={cloud}")
    return ";".join(parts)


@lru_cache(maxsize=65536)
def _parse_detail(detail: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in detail.split(";"):
        key, sep, value = part.partition("=")
        if sep and value:
            out.append((key, value))
    return tuple(out)


# --- the window ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Slice:
    """One organisation's requests in one time slice."""

    start: float
    requests: int = 0
    tor: int = 0
    vpn: int = 0
    relay: int = 0
    hosting: int = 0
    territories: Counter[str] = field(default_factory=Counter)
    users: set[str] = field(default_factory=set)
    users_capped: bool = False
    lang_seen: int = 0
    lang_away: Counter[str] = field(default_factory=Counter)  # hint territory ≠ address country
    tz_seen: int = 0
    tz_away: Counter[str] = field(default_factory=Counter)
    clouds: Counter[str] = field(default_factory=Counter)
    evidence: list[str] = field(default_factory=list)  # a few event ids, newest last


@dataclass(frozen=True, slots=True)
class Signals:
    """An organisation's traffic over the window, summed."""

    org: str
    since: float
    until: float
    requests: int
    tor: int
    vpn: int
    relay: int
    hosting: int
    territories: Mapping[str, int]
    end_users: int
    end_users_capped: bool
    lang_seen: int
    lang_away: Mapping[str, int]
    tz_seen: int
    tz_away: Mapping[str, int]
    clouds: Mapping[str, int]
    payments: tuple[str, ...] = ()  # card and billing territories of recent payments
    evidence: tuple[str, ...] = ()

    def country(self) -> str | None:
        """The country most requests come from."""
        countries: Counter[str] = Counter()
        for territory, n in self.territories.items():
            countries[territory.split("-", 1)[0]] += n
        best = countries.most_common(1)
        return best[0][0] if best else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "since": self.since,
            "until": self.until,
            "requests": self.requests,
            "tor": self.tor,
            "vpn": self.vpn,
            "relay": self.relay,
            "hosting": self.hosting,
            "territories": dict(self.territories),
            "end_users": self.end_users,
            "end_users_capped": self.end_users_capped,
            "lang_seen": self.lang_seen,
            "lang_away": dict(self.lang_away),
            "tz_seen": self.tz_seen,
            "tz_away": dict(self.tz_away),
            "clouds": dict(self.clouds),
            "payments": list(self.payments),
        }


class SignalTracker:
    """Per-organisation sliding windows, fed event batches (thread-safe)."""

    def __init__(self, window: float = 86400.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, not {window!r}")
        self.window = window
        self.slice = window / SLICES
        self._orgs: dict[str, list[_Slice]] = {}
        self._payments: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._orgs)

    def __contains__(self, org: object) -> bool:
        return org in self._orgs

    def resize(self, window: float) -> None:
        """A new window length (a policy reload): what is kept is re-sliced from now on."""
        if window != self.window and window > 0:
            with self._lock:
                self.window = window
                self.slice = window / SLICES

    def add(self, events: Iterable[Event]) -> set[str]:
        """Count ``events`` (decisions on identified requests); the organisations touched."""
        touched: set[str] = set()
        with self._lock:
            orgs = self._orgs
            size = self.slice
            for e in events:
                if e.action == "refused" or not math.isfinite(e.at):
                    continue  # a suspended organisation's request: not traffic we let through
                slices = orgs.get(e.org)
                if slices is None:
                    if len(orgs) >= _MAX_ORGS:
                        self._evict()
                    slices = orgs[e.org] = []
                start = e.at - e.at % size
                s = slices[-1] if slices else None
                if s is None or s.start != start:
                    s = None
                    for candidate in reversed(slices):  # an out-of-order event (a replay)
                        if candidate.start == start:
                            s = candidate
                            break
                    if s is None:
                        s = _Slice(start)
                        slices.append(s)
                        if len(slices) > 1 and slices[-2].start > start:
                            slices.sort(key=lambda x: x.start)
                        # Forget what has left the window behind the newest slice (scoring
                        # prunes too, but an organisation may never be scored).
                        horizon = slices[-1].start - self.window
                        while len(slices) > 1 and slices[0].start < horizon:
                            del slices[0]
                _count(s, e)
                touched.add(e.org)
        return touched

    def note_payments(self, org: str, territories: Sequence[str]) -> None:
        """Where ``org``'s recent payments came from (card and billing territories)."""
        with self._lock:
            self._payments[org] = tuple(dict.fromkeys(t.upper() for t in territories if t))

    def has_payments(self, org: str) -> bool:
        return org in self._payments

    def _evict(self) -> None:
        """Drop the organisations seen least recently (a tenth of them)."""
        by_last = sorted(self._orgs, key=lambda o: self._orgs[o][-1].start if self._orgs[o] else 0)
        for org in by_last[: max(1, len(by_last) // 10)]:
            del self._orgs[org]
            self._payments.pop(org, None)

    def signals(self, org: str, now: float) -> Signals | None:
        """``org``'s signals over the window ending at ``now`` (``None``: nothing in it)."""
        since = now - self.window
        with self._lock:
            slices = self._orgs.get(org)
            if not slices:
                return None
            # Forget what has left the window (the slice that straddles its start stays).
            keep = [s for s in slices if s.start + self.slice > since]
            if len(keep) != len(slices):
                if keep:
                    self._orgs[org] = keep
                else:
                    del self._orgs[org]
                    return None
            total = _Slice(since)
            users: set[str] = set()
            capped = False
            evidence: list[str] = []
            for s in keep:
                total.requests += s.requests
                total.tor += s.tor
                total.vpn += s.vpn
                total.relay += s.relay
                total.hosting += s.hosting
                total.territories.update(s.territories)
                users |= s.users
                capped |= s.users_capped
                total.lang_seen += s.lang_seen
                total.lang_away.update(s.lang_away)
                total.tz_seen += s.tz_seen
                total.tz_away.update(s.tz_away)
                total.clouds.update(s.clouds)
                evidence.extend(s.evidence)
            payments = self._payments.get(org, ())
        if not total.requests:
            return None
        return Signals(
            org=org,
            since=since,
            until=now,
            requests=total.requests,
            tor=total.tor,
            vpn=total.vpn,
            relay=total.relay,
            hosting=total.hosting,
            territories=dict(total.territories),
            end_users=len(users),
            end_users_capped=capped,
            lang_seen=total.lang_seen,
            lang_away=dict(total.lang_away),
            tz_seen=total.tz_seen,
            tz_away=dict(total.tz_away),
            clouds=dict(total.clouds),
            payments=payments,
            evidence=tuple(evidence[-20:]),
        )

    def orgs(self) -> list[str]:
        with self._lock:
            return list(self._orgs)


def _count(s: _Slice, e: Event) -> None:
    s.requests += 1
    flags = e.flags
    if flags:
        if "tor" in flags:
            s.tor += 1
        if "vpn" in flags or "proxy" in flags:
            s.vpn += 1
        if "relay" in flags:
            s.relay += 1
        if "hosting" in flags:
            s.hosting += 1
    territory = e.territory
    if territory:
        s.territories[territory] += 1
    if e.detail:
        country = territory.split("-", 1)[0] if territory else None
        for key, value in _parse_detail(e.detail):
            if key == "user":
                if len(s.users) < _MAX_USERS:
                    s.users.add(value)
                elif value not in s.users:
                    s.users_capped = True
            elif key == "lang":
                s.lang_seen += 1
                if value != country:
                    s.lang_away[value] += 1
            elif key == "tz":
                s.tz_seen += 1
                if value != country:
                    s.tz_away[value] += 1
            elif key == "cloud":
                s.clouds[value] += 1
    if e.strike or e.action != "allow" or len(s.evidence) < 3:
        s.evidence.append(e.id)
        if len(s.evidence) > 10:
            del s.evidence[0]


# --- the score -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contribution:
    """One signal's part of a score."""

    signal: str
    value: float  # in [0, 1]
    weight: float
    points: float  # value × weight
    detail: str  # the counts behind the value, in a sentence

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "value": round(self.value, 4),
            "weight": self.weight,
            "points": round(self.points, 2),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Score:
    """An organisation's circumvention score and what made it."""

    org: str
    score: float  # 0-100
    requests: int
    window: float
    contributions: tuple[Contribution, ...]  # every signal, most points first
    evidence: tuple[str, ...] = ()
    # What the traffic looks like, whatever the score (see :func:`pattern_of`).
    pattern: str = "direct"

    def explain(self) -> str:
        """One line: the score and the signals that made it, most points first."""
        parts = [
            f"{c.signal} {c.points:.1f} ({c.detail})" for c in self.contributions if c.points > 0
        ]
        body = " + ".join(parts) if parts else "no signal"
        return (
            f"circumvention score {self.score:.1f} over {self.requests} requests "
            f"({self.pattern}) = {body}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "score": round(self.score, 2),
            "pattern": self.pattern,
            "requests": self.requests,
            "window": self.window,
            "signals": [c.to_dict() for c in self.contributions],
            "explanation": self.explain(),
            "evidence": list(self.evidence),
        }


# Patterns: how an organisation's traffic reaches the API.
ANONYMIZED: Final = "anonymized"  # mostly through Tor, VPNs, proxies or relays
FAN_OUT: Final = "fan-out"  # from servers (hosting) relaying for several end users
DIRECT: Final = "direct"  # from where its people are
_FAN_OUT_USERS: Final = 10


def pattern_of(signals: Signals) -> str:
    """How ``signals``' traffic reaches the API, for the review queue and the evaluation.

    ``anonymized`` when at least 30% of it comes through Tor, VPN, proxy or relay ranges;
    ``fan-out`` when most of it comes from hosting ranges on behalf of at least 10 end users
    (or of users not identified: no ``user`` field or header reached the gateway), as a
    reseller's proxy does; ``direct`` otherwise. A pattern is not a verdict: honest
    SaaS backends are ``fan-out`` too, and it is the score that flags.
    """
    n = signals.requests
    if not n:
        return DIRECT
    if (signals.tor + signals.vpn + signals.relay) / n >= 0.3:
        return ANONYMIZED
    if signals.hosting / n >= 0.5 and (
        signals.end_users == 0 or signals.end_users >= _FAN_OUT_USERS
    ):
        return FAN_OUT
    return DIRECT


def _share(n: int, of: int) -> float:
    return n / of if of else 0.0


def _pct(n: int, of: int) -> str:
    return f"{n} of {of} requests ({100 * _share(n, of):.0f}%)"


def score(
    signals: Signals,
    weights: Mapping[str, float],
    is_supported: Callable[[str], bool],
    *,
    window: float = 86400.0,
) -> Score:
    """Score ``signals``; ``is_supported`` says whether a territory code is supported."""
    n = signals.requests
    values: dict[str, tuple[float, str]] = {}
    values["tor"] = (_share(signals.tor, n), f"{_pct(signals.tor, n)} from Tor exits")
    values["vpn"] = (_share(signals.vpn, n), f"{_pct(signals.vpn, n)} from VPN or proxy ranges")
    values["relay"] = (
        _share(signals.relay, n),
        f"{_pct(signals.relay, n)} from privacy relays",
    )
    values["hosting"] = (
        _share(signals.hosting, n),
        f"{_pct(signals.hosting, n)} from hosting or cloud ranges",
    )
    bad = {t: c for t, c in signals.territories.items() if not is_supported(t)}
    bad_n = sum(bad.values())
    values["unsupported"] = (
        _share(bad_n, n),
        f"{_pct(bad_n, n)} from unsupported territories" + _top(bad),
    )
    users = signals.end_users
    values["end_users"] = (
        min(1.0, math.log10(users) / 3) if users > 1 else 0.0,
        f"{'at least ' if signals.end_users_capped else ''}{users} distinct end users",
    )
    countries: Counter[str] = Counter()
    for territory, c in signals.territories.items():
        countries[territory.split("-", 1)[0]] += c
    located = sum(countries.values())
    entropy = -sum((c / located) * math.log(c / located) for c in countries.values() if c)
    effective = math.exp(entropy) if located else 0.0
    values["countries"] = (
        min(1.0, max(0.0, (effective - 1) / 4)),
        f"{len(countries)} countries, {effective:.1f} effective" + _top(dict(countries)),
    )
    values["language"] = _hint_away(
        signals.lang_away, signals.lang_seen, "Accept-Language", is_supported
    )
    values["timezone"] = _hint_away(signals.tz_away, signals.tz_seen, "a time zone", is_supported)
    home = signals.country()
    away = [p for p in signals.payments if home and p.split("-", 1)[0] != home]
    values["payment"] = (
        1.0 if away else 0.0,
        (
            f"payments from {', '.join(away)} while traffic comes mostly from {home}"
            if away
            else (
                f"payments from {', '.join(signals.payments)}"
                if signals.payments
                else "no payments known"
            )
        ),
    )
    if signals.clouds:
        region, in_region = max(signals.clouds.items(), key=lambda kv: (kv[1], kv[0]))
        values["cloud"] = (_share(in_region, n), f"{_pct(in_region, n)} from cloud region {region}")
    else:
        values["cloud"] = (0.0, "no cloud region seen")
    parts = []
    for name in SIGNALS:
        value, detail = values[name]
        weight = float(weights.get(name, 0.0))
        parts.append(Contribution(name, value, weight, value * weight, detail))
    parts.sort(key=lambda c: (-c.points, SIGNALS.index(c.signal)))
    total = min(100.0, sum(c.points for c in parts))
    return Score(signals.org, total, n, window, tuple(parts), signals.evidence, pattern_of(signals))


def _hint_away(
    away: Mapping[str, int], seen: int, what: str, is_supported: Callable[[str], bool]
) -> tuple[float, str]:
    """The share of the ``seen`` requests carrying a hint whose hint points to an unsupported
    territory other than the address's, and the sentence saying so."""
    bad = {t: c for t, c in away.items() if not is_supported(t)}
    n = sum(bad.values())
    return (
        _share(n, seen),
        f"{n} of {seen} requests with {what} point to an unsupported territory elsewhere"
        + _top(bad),
    )


def _top(counts: Mapping[str, int], k: int = 3) -> str:
    if not counts:
        return ""
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return ": " + ", ".join(f"{t} {c}" for t, c in best)
