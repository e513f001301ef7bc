"""The policy document: loading, validation and the ``Policy`` value.

A policy is a TOML file (or a preset shipped in the package) with a name and a version. Every
mistake is reported with the file, the key and the value, and a suggestion when there is a
close match ("UA-34? did you mean UA-43"), before anything is applied.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pycountry

from regiongate.errors import PolicyError
from regiongate.intel.model import Consensus
from regiongate.intel.regions import is_valid_subdivision, subdivision_country
from regiongate.policy.groups import BUILTIN_GROUPS
from regiongate.policy.model import Action, Context, Decision, Mode, Phase

if TYPE_CHECKING:
    from regiongate.intel.model import Origin
    from regiongate.policy.engine import Engine

__all__ = [
    "ACTION_KEYS",
    "DEFAULT_WEIGHTS",
    "SIGNALS",
    "AccountRules",
    "CircumventionRules",
    "Policy",
    "Response",
    "Rule",
    "load_policy",
    "parse_policy",
    "preset_names",
]

# Flags a policy sets an action for. The territory rules decide everything else.
ACTION_KEYS: Final = (
    "tor", "vpn", "hosting", "proxy", "relay", "unknown", "private", "invalid", "disputed",
)  # fmt: skip
DEFAULT_ACTIONS: Final[dict[str, Action]] = {
    "tor": Action.ALLOW,
    "vpn": Action.ALLOW,
    "hosting": Action.ALLOW,
    "proxy": Action.ALLOW,
    "relay": Action.ALLOW,
    "unknown": Action.ALLOW,
    "private": Action.ALLOW,
    # An address that cannot be read cannot be located: refuse it unless told otherwise.
    "invalid": Action.BLOCK,
    "disputed": Action.ALLOW,
}
_TOP_KEYS: Final = (
    "name", "version", "description", "source", "default", "supported", "unsupported",
    "groups", "notice_from", "enforce_from", "mode", "consensus", "actions", "exemptions",
    "response", "accounts",
)  # fmt: skip
_RESPONSE_KEYS: Final = ("status", "type", "code", "message")
_ACCOUNT_KEYS: Final = ("strikes", "window", "count", "payments", "message", "circumvention")
_CIRCUMVENTION_KEYS: Final = ("review", "suspend", "window", "min_requests", "weights")
# Decision rules a strike can be counted for: the territory rule and the anonymizer flags.
STRIKE_RULES: Final = ("unsupported-territory", "tor", "vpn", "hosting", "proxy", "relay",
                       "unknown", "invalid", "disputed")  # fmt: skip
_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EXEMPTION_KEYS: Final = ("accounts", "networks")
_MAX_LIST: Final = 10_000


class Support(StrEnum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """What a blocked client receives (compatible with what API clients already handle)."""

    status: int = 403
    type: str = "request_forbidden"
    code: str = "unsupported_country_region_territory"
    message: str = "Country, region, or territory not supported"

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": None, "code": self.code}
        }


# The circumvention signals (see regiongate.accounts.signals for what each measures).
SIGNALS: Final = (
    "tor",
    "vpn",
    "relay",
    "hosting",
    "unsupported",
    "end_users",
    "countries",
    "language",
    "timezone",
    "payment",
    "cloud",
)

# Points each signal adds at full strength. Tuned on `regiongate logs synth` populations
# (docs/detection.md): anonymizers and language and time-zone hints weigh most; hosting, end
# users, payment country and cloud region are what an honest SaaS backend shows too, and
# together stay under the review threshold (10 + 10 + 12 + 5 < 40).
DEFAULT_WEIGHTS: Final[Mapping[str, float]] = {
    "tor": 40.0,
    "vpn": 35.0,
    "relay": 10.0,
    "hosting": 10.0,
    "unsupported": 25.0,
    "end_users": 10.0,
    "countries": 15.0,
    "language": 40.0,
    "timezone": 30.0,
    "payment": 12.0,
    "cloud": 5.0,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CircumventionRules:
    """When an organisation's circumvention score acts (``[accounts.circumvention]``).

    Over ``window`` seconds, once an organisation has made ``min_requests`` requests, a score
    of at least ``review`` opens a review for a person to decide, and at least ``suspend``
    suspends it once enforcement has begun (before: a review). 0 turns either off.
    ``weights``: points per signal at full strength (see ``regiongate.accounts.signals``).
    """

    review: float = 0.0
    suspend: float = 0.0
    window: float = 86400.0
    min_requests: int = 50
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @property
    def enabled(self) -> bool:
        return self.review > 0 or self.suspend > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "review": self.review,
            "suspend": self.suspend,
            "window": self.window,
            "min_requests": self.min_requests,
            "weights": dict(self.weights),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRules:
    """What makes an organisation's state change by itself (the ``[accounts]`` table).

    ``strikes`` flagged or blocked requests whose decision rule is in ``count``, within
    ``window`` seconds, make an organisation ``warned`` before ``enforce_from`` and
    ``suspended`` from it on (0 turns the rule off). A payment whose card or billing country
    is unsupported does what ``payments`` says, whatever the traffic looks like. A refused
    organisation gets 403 ``account_deactivated`` with ``message``.
    """

    strikes: int = 20
    window: float = 86400.0
    count: frozenset[str] = frozenset({"unsupported-territory"})
    payments: str = "suspend"  # suspend | warn | ignore
    message: str = (
        "Your organization has been deactivated for using the API from an unsupported "
        "country, region, or territory. Contact support to appeal."
    )
    circumvention: CircumventionRules = field(default_factory=CircumventionRules)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": "request_forbidden",
                "param": None,
                "code": "account_deactivated",
            }
        }


def parse_duration(text: object) -> float:
    """``"24h"``, ``"30m"``, ``"7d"``, ``"90s"``, ``"2w"`` (or a number of seconds)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str) and len(text) >= 2 and text[-1] in _DURATION_UNITS:
        try:
            seconds = float(text[:-1]) * _DURATION_UNITS[text[-1]]
        except ValueError:
            raise ValueError(f"{text!r} is not a duration (24h, 30m, 7d)") from None
    else:
        raise ValueError(f"{text!r} is not a duration (24h, 30m, 7d)")
    if not 0 < seconds <= 366 * 86400:
        raise ValueError(f"{text!r} must be more than 0 and at most a year")
    return seconds


@dataclass(frozen=True, slots=True)
class Rule:
    """Why a territory has the status it has: ``supported`` and the entry that said so."""

    supported: bool
    because: str


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A validated policy. ``decide(origin, context)`` applies it (see :mod:`.engine`)."""

    name: str
    version: str
    description: str = ""
    source: str = ""
    default: Support = Support.UNSUPPORTED
    # Explicit rules: territory code → (supported?, the list entry it came from).
    rules: Mapping[str, Rule] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    notice_from: dt.datetime | None = None
    enforce_from: dt.datetime | None = None
    mode: Mode = Mode.ENFORCE
    consensus: Consensus = Consensus.ANY
    actions: Mapping[str, Action] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    exempt_accounts: frozenset[str] = frozenset()
    exempt_networks: tuple[str, ...] = ()
    response: Response = field(default_factory=Response)
    accounts: AccountRules = field(default_factory=AccountRules)
    origin: str = ""
    decide: Callable[[Origin, Context], Decision] = field(init=False, repr=False, compare=False)
    engine: Engine = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from regiongate.policy.engine import Engine

        # The engine precomputes everything; ``decide`` is its bound method, so a call costs
        # one attribute lookup, not a delegation.
        engine = Engine(self)
        object.__setattr__(self, "engine", engine)
        object.__setattr__(self, "decide", engine.decide)

    @property
    def ref(self) -> str:
        """``name@version``, as decisions and audit records cite it."""
        return f"{self.name}@{self.version}"

    def phase_at(self, at: float) -> Phase:
        """The phase at POSIX time ``at``. A policy without dates is always enforcing; one
        with only ``notice_from`` only ever flags."""
        if self.enforce_from is not None and at >= self.enforce_from.timestamp():
            return Phase.ENFORCE
        if self.notice_from is not None and at >= self.notice_from.timestamp():
            return Phase.NOTICE
        if self.enforce_from is None and self.notice_from is None:
            return Phase.ENFORCE
        return Phase.BEFORE_NOTICE

    def rule_for(self, territory: str) -> Rule:
        """The rule that decides ``territory``: its own, else its country's, else the default."""
        rule = self.rules.get(territory)
        if rule is not None:
            return rule
        if "-" in territory:
            parent = self.rules.get(subdivision_country(territory))
            if parent is not None:
                return Rule(parent.supported, f"{parent.because} (country of {territory})")
        supported = self.default is Support.SUPPORTED
        listed = "unsupported" if supported else "supported"
        return Rule(supported, f"not listed in {listed}: default {self.default}")

    def is_supported(self, territory: str) -> bool:
        return self.rule_for(territory).supported

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (what ``policy show --json`` prints)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "source": self.source,
            "origin": self.origin,
            "default": str(self.default),
            "supported": sorted(c for c, r in self.rules.items() if r.supported),
            "unsupported": sorted(c for c, r in self.rules.items() if not r.supported),
            "groups": {k: list(v) for k, v in self.groups.items()},
            "notice_from": self.notice_from.isoformat() if self.notice_from else None,
            "enforce_from": self.enforce_from.isoformat() if self.enforce_from else None,
            "mode": str(self.mode),
            "consensus": str(self.consensus),
            "actions": {k: str(v) for k, v in self.actions.items()},
            "exemptions": {
                "accounts": sorted(self.exempt_accounts),
                "networks": list(self.exempt_networks),
            },
            "response": {
                "status": self.response.status,
                "type": self.response.type,
                "code": self.response.code,
                "message": self.response.message,
            },
            "accounts": {
                "strikes": self.accounts.strikes,
                "window": self.accounts.window,
                "count": sorted(self.accounts.count),
                "payments": self.accounts.payments,
                "message": self.accounts.message,
                "circumvention": self.accounts.circumvention.to_dict(),
            },
        }


# --- validation helpers ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _country_codes() -> frozenset[str]:
    codes = {c.alpha_2 for c in pycountry.countries}
    codes.add("XK")  # Kosovo: user-assigned, but what every IP database uses
    return frozenset(codes)


@lru_cache(maxsize=1)
def _all_codes() -> tuple[str, ...]:
    subs = {s.code for s in pycountry.subdivisions}
    return tuple(sorted(_country_codes() | subs))


def _suggest(value: str, candidates: Iterable[str]) -> str:
    """`` (did you mean X?)`` for a close match, else ``""``."""
    pool = list(candidates)
    # A transposition ("UA-34" for "UA-43") is the commonest slip; prefer it.
    for i in range(len(value) - 1):
        swapped = value[:i] + value[i + 1] + value[i] + value[i + 2 :]
        if swapped != value and swapped in pool:
            return f"; did you mean {swapped}?"
    close = difflib.get_close_matches(value, pool, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _territory_hint(value: str) -> str:
    if len(value) > 3 and "-" not in value:  # a name, not a code: "Russia", "Türkiye"
        try:
            country = pycountry.countries.search_fuzzy(value)[0]
        except LookupError:
            pass
        else:
            return f"; did you mean {country.alpha_2} ({country.name})?"
    if "-" in value:
        prefix = value.split("-", 1)[0]
        same = [c for c in _all_codes() if c.startswith(prefix + "-")]
        return _suggest(value, same) if same else _suggest(value, _all_codes())
    return _suggest(value, _country_codes())


class _Reader:
    """Reads a document, naming the source and the key in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> PolicyError:
        return PolicyError(message, source=self.source, key=key)

    def check_keys(self, table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
        allowed = tuple(allowed)
        for key in table:
            if key not in allowed:
                path = f"{where}.{key}" if where else key
                raise self.fail(path, f"unknown key{_suggest(key, allowed)}")

    def string(self, doc: Mapping[str, Any], key: str, *, required: bool = False,
               default: str = "", where: str = "") -> str:  # fmt: skip
        path = f"{where}.{key}" if where else key
        value = doc.get(key)
        if value is None:
            if required:
                raise self.fail(path, "is required")
            return default
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, not {value!r}")
        if required and not value.strip():
            raise self.fail(path, "must not be empty")
        if len(value) > 4096:
            raise self.fail(path, "is longer than 4096 characters")
        return value

    def string_list(self, doc: Mapping[str, Any], key: str, where: str = "") -> list[str]:
        path = f"{where}.{key}" if where else key
        return self.strings_at(doc.get(key), path)

    def strings_at(self, value: Any, path: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list of strings, not {value!r}")
        if len(value) > _MAX_LIST:
            raise self.fail(path, f"has more than {_MAX_LIST} entries")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{path}[{i}]", f"must be a string, not {item!r}")
        return list(value)

    def table(self, doc: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, not {value!r}")
        return value

    def when(self, doc: Mapping[str, Any], key: str) -> dt.datetime | None:
        value = doc.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise self.fail(key, f"{value!r} is not an ISO 8601 date or datetime") from None
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        raise self.fail(key, f"must be a date (2024-07-09) or datetime, not {value!r}")

    def choice(self, doc: Mapping[str, Any], key: str, options: Iterable[str], default: str,
               where: str = "") -> str:  # fmt: skip
        path = f"{where}.{key}" if where else key
        options = tuple(options)
        value = doc.get(key, default)
        if not isinstance(value, str) or value not in options:
            hint = _suggest(value, options) if isinstance(value, str) else ""
            raise self.fail(path, f"{value!r} is not one of {', '.join(options)}{hint}")
        return value


def _expand(
    reader: _Reader,
    key: str,
    entries: list[str],
    groups: Mapping[str, tuple[str, ...]],
) -> dict[str, str]:
    """Territory codes of a list, groups expanded; code → the entry that named it."""
    out: dict[str, str] = {}
    for i, raw in enumerate(entries):
        entry = raw.strip()
        if entry.startswith("@"):
            name = entry[1:]
            if name not in groups:
                raise reader.fail(f"{key}[{i}]", f"unknown group {entry!r}{_suggest(name, groups)}")
            for code in groups[name]:
                out.setdefault(code, entry)
            continue
        code = entry.upper()
        _check_code(reader, f"{key}[{i}]", code, raw)
        out.setdefault(code, code)
    return out


def _check_code(reader: _Reader, path: str, code: str, raw: str) -> None:
    if "-" in code:
        if not is_valid_subdivision(code):
            raise reader.fail(
                path, f"{raw!r} is not an ISO 3166-2 subdivision code{_territory_hint(code)}"
            )
    elif code not in _country_codes():
        raise reader.fail(
            path, f"{raw!r} is not an ISO 3166-1 alpha-2 country code{_territory_hint(raw)}"
        )


def parse_policy(doc: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
    """Validate a parsed TOML document and build the ``Policy``. Raises ``PolicyError``."""
    r = _Reader(source)
    if not isinstance(doc, Mapping):
        raise r.fail("", "a policy must be a TOML table")
    r.check_keys(doc, _TOP_KEYS, "")
    name = r.string(doc, "name", required=True)
    version = r.string(doc, "version", required=True)
    groups: dict[str, tuple[str, ...]] = dict(BUILTIN_GROUPS)
    for gname, members in r.table(doc, "groups").items():
        if not gname or not all(c.isalnum() or c in "-_" for c in gname):
            raise r.fail(f"groups.{gname}", "group names may hold letters, digits, - and _")
        entries = r.strings_at(members, f"groups.{gname}")
        codes = []
        for i, raw in enumerate(entries):
            code = raw.strip().upper()
            if code.startswith("@"):
                raise r.fail(f"groups.{gname}[{i}]", "groups cannot contain groups")
            _check_code(r, f"groups.{gname}[{i}]", code, raw)
            codes.append(code)
        groups[gname] = tuple(codes)
    supported_entries = r.string_list(doc, "supported")
    unsupported_entries = r.string_list(doc, "unsupported")
    if "supported" not in doc and "unsupported" not in doc:
        raise r.fail(
            "supported",
            "give `supported` (an allowlist: everything else is unsupported) or `unsupported` "
            "(a denylist)",
        )
    inferred = "unsupported" if "supported" in doc else "supported"
    default = Support(r.choice(doc, "default", [s.value for s in Support], inferred))
    supported = _expand(r, "supported", supported_entries, groups)
    unsupported = _expand(r, "unsupported", unsupported_entries, groups)
    rules: dict[str, Rule] = {}
    for code, entry in supported.items():
        rules[code] = Rule(True, f"supported: {entry}")
    for code, entry in unsupported.items():
        if code in rules:
            raise r.fail(
                "unsupported",
                f"{code} is both supported (via {supported[code]}) and unsupported (via {entry})",
            )
        rules[code] = Rule(False, f"unsupported: {entry}")
    notice_from = r.when(doc, "notice_from")
    enforce_from = r.when(doc, "enforce_from")
    if notice_from and enforce_from and notice_from > enforce_from:
        raise r.fail(
            "notice_from",
            f"{notice_from.date()} is after enforce_from {enforce_from.date()}; notice comes first",
        )
    mode = Mode(r.choice(doc, "mode", [m.value for m in Mode], "enforce"))
    consensus = Consensus(r.choice(doc, "consensus", [c.value for c in Consensus], "any"))
    actions = dict(DEFAULT_ACTIONS)
    raw_actions = r.table(doc, "actions")
    r.check_keys(raw_actions, ACTION_KEYS, "actions")
    for key in raw_actions:
        actions[key] = Action(
            r.choice(raw_actions, key, [a.value for a in Action], "allow", "actions")
        )
    exemptions = r.table(doc, "exemptions")
    r.check_keys(exemptions, _EXEMPTION_KEYS, "exemptions")
    accounts = r.string_list(exemptions, "accounts", "exemptions")
    networks = []
    for i, raw in enumerate(r.string_list(exemptions, "networks", "exemptions")):
        try:
            networks.append(str(ipaddress.ip_network(raw.strip(), strict=False)))
        except ValueError:
            raise r.fail(f"exemptions.networks[{i}]", f"{raw!r} is not a network (CIDR)") from None
    raw_response = r.table(doc, "response")
    r.check_keys(raw_response, _RESPONSE_KEYS, "response")
    status = raw_response.get("status", 403)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise r.fail("response.status", f"{status!r} must be an HTTP error status (400-599)")
    defaults = Response()
    response = Response(
        status=status,
        type=r.string(raw_response, "type", default=defaults.type, where="response"),
        code=r.string(raw_response, "code", default=defaults.code, where="response"),
        message=r.string(raw_response, "message", default=defaults.message, where="response"),
    )
    accounts_rules = _account_rules(r, r.table(doc, "accounts"))
    return Policy(
        name=name,
        version=version,
        description=r.string(doc, "description"),
        source=r.string(doc, "source"),
        default=default,
        rules=rules,
        groups={k: v for k, v in groups.items() if k in r.table(doc, "groups")},
        notice_from=notice_from,
        enforce_from=enforce_from,
        mode=mode,
        consensus=consensus,
        actions=actions,
        exempt_accounts=frozenset(a.strip() for a in accounts),
        exempt_networks=tuple(networks),
        response=response,
        accounts=accounts_rules,
        origin=source,
    )


def _account_rules(r: _Reader, table: Mapping[str, Any]) -> AccountRules:
    r.check_keys(table, _ACCOUNT_KEYS, "accounts")
    defaults = AccountRules()
    strikes = table.get("strikes", defaults.strikes)
    if isinstance(strikes, bool) or not isinstance(strikes, int) or not 0 <= strikes <= 10**9:
        raise r.fail("accounts.strikes", f"{strikes!r} must be a whole number >= 0 (0: off)")
    try:
        window = parse_duration(table.get("window", "24h"))
    except ValueError as exc:
        raise r.fail("accounts.window", str(exc)) from None
    count = defaults.count
    if "count" in table:
        entries = r.strings_at(table["count"], "accounts.count")
        for i, entry in enumerate(entries):
            if entry not in STRIKE_RULES:
                raise r.fail(
                    f"accounts.count[{i}]",
                    f"{entry!r} is not one of {', '.join(STRIKE_RULES)}"
                    + _suggest(entry, STRIKE_RULES),
                )
        count = frozenset(entries)
    return AccountRules(
        strikes=strikes,
        window=window,
        count=count,
        payments=r.choice(table, "payments", ("suspend", "warn", "ignore"), "suspend", "accounts"),
        message=r.string(table, "message", default=defaults.message, where="accounts"),
        circumvention=_circumvention_rules(r, table.get("circumvention")),
    )


def _circumvention_rules(r: _Reader, table: object) -> CircumventionRules:
    where = "accounts.circumvention"
    if table is None:
        return CircumventionRules(weights=dict(DEFAULT_WEIGHTS))
    if not isinstance(table, dict):
        raise r.fail(where, f"must be a table, not {table!r}")
    r.check_keys(table, _CIRCUMVENTION_KEYS, where)

    def points(value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise r.fail(key, f"{value!r} must be a number from 0 to 100")
        if not 0 <= value <= 100:
            raise r.fail(key, f"{value!r} must be from 0 to 100")
        return float(value)

    review = points(table.get("review", 0), f"{where}.review")
    suspend = points(table.get("suspend", 0), f"{where}.suspend")
    if review and suspend and suspend < review:
        raise r.fail(f"{where}.suspend", f"{suspend:g} is below review ({review:g})")
    try:
        window = parse_duration(table.get("window", "24h"))
    except ValueError as exc:
        raise r.fail(f"{where}.window", str(exc)) from None
    if window < 60:
        raise r.fail(f"{where}.window", "must be at least 60 seconds")
    min_requests = table.get("min_requests", 50)
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 1:
        raise r.fail(f"{where}.min_requests", f"{min_requests!r} must be a whole number >= 1")
    weights = dict(DEFAULT_WEIGHTS)
    given = table.get("weights", {})
    if not isinstance(given, dict):
        raise r.fail(f"{where}.weights", f"must be a table, not {given!r}")
    r.check_keys(given, SIGNALS, f"{where}.weights")
    for name, value in given.items():
        weights[name] = points(value, f"{where}.weights.{name}")
    return CircumventionRules(
        review=review, suspend=suspend, window=window, min_requests=min_requests, weights=weights
    )


def preset_names() -> list[str]:
    """The presets shipped in the package."""
    folder = resources.files("regiongate.policy") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_policy(ref: str | Path) -> Policy:
    """Load a policy from a TOML file or a preset name (``api-2024``). Raises ``PolicyError``."""
    text: str
    path = Path(ref)
    if path.suffix == ".toml" or path.exists():
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PolicyError("no such file", source=source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read ({exc})", source=source) from None
    else:
        name = str(ref)
        if name not in preset_names():
            raise PolicyError(
                f"no policy file or preset named {name!r}; presets: {', '.join(preset_names())}"
                + _suggest(name, preset_names())
            )
        source = f"preset:{name}"
        text = (resources.files("regiongate.policy") / "presets" / f"{name}.toml").read_text(
            encoding="utf-8"
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not valid TOML ({exc})", source=source) from None
    return parse_policy(doc, source=source)
