"""How well the circumvention score finds resellers and VPN users: replay a ``logs synth``
log whose truth is known and compare.

:func:`evaluate` reads the log one line at a time (bounded memory: only the per-organisation
windows are kept) and does what the gateway would have done with each request:

1. the client address, from the peer and ``X-Forwarded-For`` with the truth's trusted proxies
   (:class:`regiongate.clientip.ClientResolver`, as ``regiongate impact`` does);
2. its ``Origin`` in the snapshot and the policy's decision at the line's time;
3. the :class:`~regiongate.accounts.model.Event` the gateway records: flags, territory,
   action, rule, strike, and the request hints in ``detail`` (end user as a keyed hash,
   ``Accept-Language`` and time zone as countries, the cloud region of the address), fed to a
   :class:`~regiongate.accounts.signals.SignalTracker` with the policy's window;
4. the truth's payment country of each organisation, as the payment records would give it.

At the log's end every organisation is scored as the gateway's ``CircumventionRule`` scores
it: one with ``min_requests`` in the window and a score of at least ``review`` is *flagged*,
one at ``suspend`` or more *would be suspended*. Against the truth's kinds:

- **reseller detection**: positives are ``reseller`` organisations, predictions the flagged
  ones whose traffic pattern is ``fan-out`` (from hosting ranges for many end users, not
  through anonymizers: :func:`~regiongate.accounts.signals.pattern_of`); precision and recall;
- **circumvention detection**: positives are ``reseller`` and ``vpn``;
- **false-positive rate** on the honest kinds that look most like them: ``ordinary``,
  ``saas`` and ``traveller`` (flagged / organisations of the kind);
- a **threshold sweep**: the same at review thresholds 20, 30, ..., 90.

``unsupported`` organisations (at home in an unsupported territory) are neither: the
territory rule blocks them without any score. They count as negatives in the precisions.

:class:`LogReplay` yields the events alone; :meth:`DetectionReport.rescored` scores the same
traffic with other weights or thresholds without a second replay. docs/detection.md has the
method and the measured figures.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from regiongate.accounts.model import Event
from regiongate.accounts.signals import (
    DIRECT,
    FAN_OUT,
    HintReader,
    Score,
    Signals,
    SignalTracker,
    cloud_region,
    hint_detail,
    language_country,
    score,
    timezone_country,
)
from regiongate.analytics.impact import FieldMap, _parse_time, _reference_lines, detect_format
from regiongate.analytics.synth import KINDS, Truth, iter_lines
from regiongate.clientip import ClientIPConfig, ClientResolver
from regiongate.errors import RegiongateError
from regiongate.intel.model import Flag, Origin
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import Action, Context, Policy

__all__ = [
    "NEGATIVE_KINDS",
    "SWEEP",
    "DetectionReport",
    "LogReplay",
    "OrgResult",
    "Rates",
    "evaluate",
]

SWEEP: Final = (20, 30, 40, 50, 60, 70, 80, 90)
NEGATIVE_KINDS: Final = ("ordinary", "saas", "traveller")  # honest, and scored
RESELLER: Final = frozenset({"reseller"})
CIRCUMVENTION: Final = frozenset({"reseller", "vpn"})
UNKNOWN_KIND: Final = "unknown"  # an organisation the truth does not list
_BATCH: Final = 4096
_INVALID: Final = Origin(flags=frozenset({Flag.INVALID}), note="unreadable client address")
_HINT_SECRET: Final = b"regiongate logs evaluate"


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged, truncated or unreadable log file raises."""
    errors: list[type[BaseException]] = [OSError, EOFError, ValueError, csv.Error, zlib.error]
    with contextlib.suppress(ImportError, AttributeError):
        errors.append(importlib.import_module("zstandard").ZstdError)
    return tuple(errors)


_READ_ERRORS: Final = _read_errors()


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OrgResult:
    """One organisation's score at the log's end, beside its true kind."""

    org: str
    kind: str
    requests: int  # in the window
    score: Score | None  # None: no request in the window
    signals: Signals | None
    scored: bool  # min_requests reached: the gateway would act on the score
    flagged: bool  # scored and at least the review threshold
    would_suspend: bool  # scored and at least the suspend threshold

    @property
    def points(self) -> float:
        return self.score.score if self.score is not None else 0.0

    @property
    def pattern(self) -> str:
        return self.score.pattern if self.score is not None else DIRECT

    def at(self, threshold: float) -> bool:
        """Flagged at ``threshold`` instead of the policy's review threshold."""
        return self.scored and self.points >= threshold

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The signals that gave most points: (signal, points)."""
        if self.score is None:
            return []
        return [(c.signal, c.points) for c in self.score.contributions[:k] if c.points > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "kind": self.kind,
            "requests": self.requests,
            "score": round(self.points, 2),
            "scored": self.scored,
            "flagged": self.flagged,
            "would_suspend": self.would_suspend,
            "pattern": self.pattern,
            "top_signals": [{"signal": s, "points": round(p, 2)} for s, p in self.top()],
            "explanation": self.score.explain() if self.score is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Rates:
    """Detection of ``positives`` at one threshold."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        """Of the flagged, the share that are positives (``None``: none flagged)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        """Of the positives, the share flagged (``None``: no positives)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": _round(self.precision),
            "recall": _round(self.recall),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionReport:
    """What :func:`evaluate` measured; ``to_dict`` is the JSON ``logs evaluate`` prints."""

    log: str
    policy: str
    review: float
    suspend: float
    min_requests: int
    window: float
    weights: Mapping[str, float]
    lines: int
    malformed: int
    unidentified: int  # lines without an organisation: the gateway records no event
    first: float | None
    last: float | None
    orgs: tuple[OrgResult, ...]
    notes: tuple[str, ...] = field(default=())

    def known(self) -> list[OrgResult]:
        return [o for o in self.orgs if o.kind != UNKNOWN_KIND]

    def rates(self, positives: frozenset[str], threshold: float | None = None) -> Rates:
        """Detection of ``positives`` (kinds) at ``threshold`` (default: review). Resellers are
        predicted by the score and the ``fan-out`` pattern together."""
        t = self.review if threshold is None else threshold
        want = FAN_OUT if positives == RESELLER else None
        tp = fp = fn = tn = 0
        for o in self.known():
            hit = o.at(t) and (want is None or o.pattern == want)
            if o.kind in positives:
                tp += hit
                fn += not hit
            else:
                fp += hit
                tn += not hit
        return Rates(tp, fp, fn, tn)

    def flagged_share(self, kind: str, threshold: float | None = None) -> float | None:
        """The share of ``kind``'s organisations flagged at ``threshold`` (default: review)."""
        t = self.review if threshold is None else threshold
        of = [o for o in self.orgs if o.kind == kind]
        return sum(o.at(t) for o in of) / len(of) if of else None

    def false_positive_rates(self, threshold: float | None = None) -> dict[str, float | None]:
        """Per honest kind (:data:`NEGATIVE_KINDS`), the share flagged."""
        return {k: self.flagged_share(k, threshold) for k in NEGATIVE_KINDS}

    def kinds(self) -> list[dict[str, Any]]:
        rows = []
        for kind in (*KINDS, UNKNOWN_KIND):
            of = [o for o in self.orgs if o.kind == kind]
            if not of:
                continue
            scores = sorted(o.points for o in of if o.scored)
            rows.append(
                {
                    "kind": kind,
                    "orgs": len(of),
                    "scored": len(scores),
                    "review": sum(o.flagged for o in of),
                    "review_share": _round(sum(o.flagged for o in of) / len(of)),
                    "suspend": sum(o.would_suspend for o in of),
                    "suspend_share": _round(sum(o.would_suspend for o in of) / len(of)),
                    "median_score": _round(_median(scores), 2),
                    "max_score": _round(scores[-1], 2) if scores else None,
                }
            )
        return rows

    def sweep(self) -> list[dict[str, Any]]:
        return [
            {
                "threshold": t,
                "reseller": self.rates(RESELLER, t).to_dict(),
                "circumvention": self.rates(CIRCUMVENTION, t).to_dict(),
                "false_positive_rate": {
                    k: _round(v) for k, v in self.false_positive_rates(t).items()
                },
            }
            for t in SWEEP
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": self.log,
            "policy": self.policy,
            "thresholds": {"review": self.review, "suspend": self.suspend},
            "min_requests": self.min_requests,
            "window": self.window,
            "weights": dict(self.weights),
            "lines": {
                "total": self.lines,
                "malformed": self.malformed,
                "unidentified": self.unidentified,
            },
            "first": self.first,
            "last": self.last,
            "kinds": self.kinds(),
            "detection": {
                "reseller": self.rates(RESELLER).to_dict(),
                "circumvention": self.rates(CIRCUMVENTION).to_dict(),
                "reseller_at_suspend": self.rates(RESELLER, self.suspend or None).to_dict(),
                "circumvention_at_suspend": self.rates(
                    CIRCUMVENTION, self.suspend or None
                ).to_dict(),
            },
            "false_positive_rate": {k: _round(v) for k, v in self.false_positive_rates().items()},
            "false_positive_rate_at_suspend": {
                k: _round(v) for k, v in self.false_positive_rates(self.suspend or None).items()
            },
            "sweep": self.sweep(),
            "orgs": [o.to_dict() for o in sorted(self.orgs, key=lambda o: (-o.points, o.org))],
            "notes": list(self.notes),
        }

    def rescored(
        self,
        policy: Policy,
        weights: Mapping[str, float] | None = None,
        *,
        review: float | None = None,
        suspend: float | None = None,
    ) -> DetectionReport:
        """The same traffic scored with other weights or thresholds (no second replay)."""
        rules = policy.accounts.circumvention
        w = dict(rules.weights if weights is None else weights)
        rv = rules.review if review is None else review
        sp = rules.suspend if suspend is None else suspend
        orgs = tuple(
            _result(o.org, o.kind, o.signals, w, policy, rv, sp, self.min_requests, self.window)
            for o in self.orgs
        )
        return DetectionReport(
            log=self.log,
            policy=self.policy,
            review=rv,
            suspend=sp,
            min_requests=self.min_requests,
            window=self.window,
            weights=w,
            lines=self.lines,
            malformed=self.malformed,
            unidentified=self.unidentified,
            first=self.first,
            last=self.last,
            orgs=orgs,
            notes=self.notes,
        )


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _result(
    org: str,
    kind: str,
    signals: Signals | None,
    weights: Mapping[str, float],
    policy: Policy,
    review: float,
    suspend: float,
    min_requests: int,
    window: float,
) -> OrgResult:
    result = (
        score(signals, weights, policy.is_supported, window=window) if signals is not None else None
    )
    requests = signals.requests if signals is not None else 0
    scored = result is not None and requests >= min_requests
    points = result.score if result is not None else 0.0
    return OrgResult(
        org=org,
        kind=kind,
        requests=requests,
        score=result,
        signals=signals,
        scored=scored,
        flagged=bool(scored and review and points >= review),
        would_suspend=bool(scored and suspend and points >= suspend),
    )


# --- reading -------------------------------------------------------------------------------------


class _Line(msgspec.Struct):
    """The fields of a log line the replay needs (the rest are skipped unread)."""

    time: str | float | None = None
    remote_addr: str | None = None
    x_forwarded_for: str | None = None
    org: str | None = None
    key_id: str | None = None
    user: str | None = None
    accept_language: str | None = None
    timezone: str | None = None


_Record = tuple[
    float | None, str | None, str | None, str | None, str | None, str | None, str | None,
    str | None,
]  # fmt: skip
_NONE: Final[_Record] = (None, None, None, None, None, None, None, None)
_COLUMNS: Final = ("time", "remote_addr", "x_forwarded_for", "org", "key_id", "user",
                   "accept_language", "timezone")  # fmt: skip


def _records(path: Path, fmt: str) -> Iterator[_Record]:
    """(time, peer, xff, org, key, user, language, zone) per line; ``_NONE`` when unreadable."""
    if fmt == "jsonl":
        decode = msgspec.json.Decoder(_Line).decode
        for text in iter_lines(path):
            if not text.strip():
                continue
            try:
                r = decode(text)
            except msgspec.MsgspecError:
                yield _NONE
                continue
            yield (_parse_time(r.time), r.remote_addr, r.x_forwarded_for, r.org, r.key_id,
                   r.user, r.accept_language, r.timezone)  # fmt: skip
    elif fmt == "csv":
        rows = csv.reader(iter_lines(path))
        header = next(rows, None)
        if header is None:
            return
        where = {name.strip(): i for i, name in enumerate(header)}
        if "time" not in where or "remote_addr" not in where:
            raise RegiongateError(
                f"{path}: the CSV header has no time and remote_addr columns ({','.join(header)})"
            )
        index = [where.get(c, -1) for c in _COLUMNS]
        for row in rows:
            if not row:
                continue
            values = [row[i] or None if 0 <= i < len(row) else None for i in index]
            yield (_parse_time(values[0]), *values[1:])  # type: ignore[misc]
    elif fmt == "nginx":
        for rec in _reference_lines(str(path), "nginx", FieldMap()):
            if rec is None:
                yield _NONE
                continue
            yield (_parse_time(rec.get("time")), rec.get("remote_addr"),
                   rec.get("x_forwarded_for"), rec.get("org"), rec.get("key_id"), None, None,
                   None)  # fmt: skip
    else:
        raise RegiongateError(f"{path}: logs evaluate reads jsonl, csv or nginx logs, not {fmt}")


# --- the replay ----------------------------------------------------------------------------------


class LogReplay:
    """The events the gateway would have recorded for a log's lines, in order.

    Iterate once; then ``lines``, ``malformed`` (no readable time or peer) and
    ``unidentified`` (no organisation: the gateway records nothing) say what was read, and
    ``first`` and ``last`` the times of the first and last event. Raises
    :class:`RegiongateError` when the file cannot be read.
    """

    def __init__(
        self,
        path: Path,
        truth: Truth,
        snapshot: Snapshot,
        policy: Policy,
        *,
        fmt: str | None = None,
        client_ip: ClientIPConfig | None = None,
        secret: bytes = _HINT_SECRET,
    ) -> None:
        self.path = path
        self.fmt = fmt or str(truth.params.get("format") or "") or detect_format(str(path))
        self.config = client_ip or ClientIPConfig(
            trusted_proxies=tuple(str(p) for p in truth.params.get("proxies") or ())
        )
        self.snapshot = snapshot
        self.policy = policy
        self.hints = HintReader(secret)
        self.lines = self.malformed = self.unidentified = 0
        self.first: float | None = None
        self.last: float | None = None

    def __iter__(self) -> Iterator[Event]:
        resolver = ClientResolver(self.config)
        header = self.config.header
        decide = self.policy.decide
        lookup = self.snapshot.lookup
        count = self.policy.accounts.count
        user_id = self.hints.user_id
        flags_of: dict[Origin, tuple[str, str | None]] = {}  # origin → (flags, cloud region)
        name = self.path.name
        offset = 1 if self.fmt == "csv" else 0  # the header line
        try:
            for rec in _records(self.path, self.fmt):
                self.lines += 1
                ts, peer, xff, org, key, user, lang, zone = rec
                if ts is None or not peer or not math.isfinite(ts):
                    self.malformed += 1
                    continue
                if not org:
                    self.unidentified += 1
                    continue
                client = resolver.resolve_text(peer, [(header, xff)] if xff else ())
                origin = lookup(client.ip) if client.ip is not None else _INVALID
                address = (client.version or 4, client.value) if client.value is not None else None
                d = decide(origin, Context(ts, org, address))
                known = flags_of.get(origin)
                if known is None:
                    if len(flags_of) > 65536:
                        flags_of.clear()
                    # As Accounts.record and HintReader.read have them.
                    known = flags_of[origin] = (
                        ",".join(sorted(f.value for f in origin.flags)),
                        cloud_region(origin),
                    )
                if self.first is None:
                    self.first = ts
                self.last = ts if self.last is None else max(self.last, ts)
                yield Event(
                    f"{name}:{self.lines + offset}",  # evidence: the log line
                    org,
                    key or "",
                    ts,
                    d.territory,
                    known[0],
                    d.action.value,
                    d.rule,
                    d.action is not Action.ALLOW and d.rule in count,
                    hint_detail(
                        user=user_id(user) if user else None,
                        lang=language_country(lang) if lang else None,
                        tz=timezone_country(zone) if zone else None,
                        cloud=known[1],
                    ),
                )
        except _READ_ERRORS as exc:
            raise RegiongateError(f"{self.path}: cannot read the log ({exc})") from None


def evaluate(
    log_path: Path | str,
    truth: Truth,
    snapshot: Snapshot,
    policy: Policy,
    *,
    window: float | None = None,
    fmt: str | None = None,
    client_ip: ClientIPConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> DetectionReport:
    """Replay ``log_path`` as the gateway would and score every organisation at its end.

    ``window``: seconds of traffic scored (default: the policy's circumvention window).
    ``client_ip``: how to find the client (default: the truth's trusted proxies).
    ``progress`` is called now and then with the number of lines read since the last call.
    """
    path = Path(log_path)
    if not path.is_file():
        raise RegiongateError(f"{path}: no such log file")
    rules = policy.accounts.circumvention
    window = rules.window if window is None else window
    if not window > 0 or not math.isfinite(window):
        raise RegiongateError(f"window: {window!r}; give a positive number of seconds")
    tracker = SignalTracker(window)
    kinds = {o.org: o.kind for o in truth.orgs}
    for o in truth.orgs:
        if o.payment_country:  # as the payment records would give it
            tracker.note_payments(o.org, [o.payment_country])

    replay = LogReplay(path, truth, snapshot, policy, fmt=fmt, client_ip=client_ip)
    batch: list[Event] = []
    pruned = -math.inf
    reported = 0
    for event in replay:
        batch.append(event)
        if len(batch) < _BATCH:
            continue
        tracker.add(batch)
        batch = []
        if event.at - pruned >= tracker.slice:
            # Let what left the window go (asking for the signals does): memory stays bounded
            # on a log much longer than the window.
            pruned = event.at
            for seen_org in tracker.orgs():
                tracker.signals(seen_org, event.at)
        if progress is not None and replay.lines - reported >= 100_000:
            progress(replay.lines - reported)
            reported = replay.lines
    tracker.add(batch)
    if progress is not None:
        progress(replay.lines - reported)
    lines, malformed, first, last = replay.lines, replay.malformed, replay.first, replay.last

    end = last if last is not None else 0.0
    seen = set(tracker.orgs())
    names = [o.org for o in truth.orgs] + sorted(seen - set(kinds))
    orgs = tuple(
        _result(
            org,
            kinds.get(org, UNKNOWN_KIND),
            tracker.signals(org, end) if org in seen else None,
            rules.weights,
            policy,
            rules.review,
            rules.suspend,
            rules.min_requests,
            window,
        )
        for org in names
    )
    notes = []
    if not rules.enabled:
        notes.append(f"{policy.ref} has no review or suspend threshold: nothing is flagged")
    if lines and not (lines - malformed):
        notes.append("no line could be read: is it the log the truth describes?")
    wanted = (truth.params.get("snapshot") or {}).get("body_sha256")
    if wanted and wanted != snapshot.header.get("body_sha256"):
        notes.append(
            "the log was synthesized from another snapshot: some addresses may locate elsewhere now"
        )
    if not truth.params.get("hints"):
        notes.append("the log has no request hints (logs synth --hints): language, time "
                     "zone, end-user and payment signals are silent")  # fmt: skip
    return DetectionReport(
        log=str(path),
        policy=policy.ref,
        review=rules.review,
        suspend=rules.suspend,
        min_requests=rules.min_requests,
        window=window,
        weights=dict(rules.weights),
        lines=lines,
        malformed=malformed,
        unidentified=replay.unidentified,
        first=first,
        last=last,
        orgs=orgs,
        notes=tuple(notes),
    )
