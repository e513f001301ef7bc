"""Accounts in the request path: identify the caller, refuse suspended organisations, record
every decision as an event, and apply the policy's account rules to what was recorded.

- :class:`AccountCache` keeps key id → organisation and the set of refused organisations in
  memory, fresh from the store's change feed (every ``refresh_interval``, or at once on a
  Redis notification). Lookups in the request path are two dict reads.
- :class:`RulesEngine` runs after each written batch of events (strikes, and the
  circumvention score of :class:`CircumventionRule`) and on each payment.
- :class:`Accounts` ties them to an :class:`EventSink` and is what the gateway holds.

When the store is down, the cache keeps the last state it knew (suspensions stay enforced),
events spool to disk, and the rules run on the spooled events when they are replayed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from regiongate.accounts.events import EventSink, event_id_factory
from regiongate.accounts.identity import KeyHasher, KeyReader, load_secret
from regiongate.accounts.model import Event, Org, Payment, Review, State
from regiongate.accounts.signals import HintReader, Score, SignalTracker, score
from regiongate.accounts.store.base import Store, StoreUnavailable
from regiongate.config import AccountsSettings
from regiongate.paths import data_home
from regiongate.policy import Action, Phase, Policy

if TYPE_CHECKING:
    from regiongate.enforce.gate import Verdict
    from regiongate.intel.model import Origin

__all__ = [
    "AccountCache",
    "Accounts",
    "CircumventionRule",
    "Identity",
    "ReviewClosed",
    "RulesEngine",
    "decide_review",
    "key_hasher",
]

log = logging.getLogger("regiongate.accounts")

_RESYNC_EVERY: Final = 60.0  # a full reload, in case a change slipped past the feed
_GAP_PATIENCE: Final = 5.0  # seconds to wait for a sequence gap (an open transaction) to fill
_REVIEW_REFRESH: Final = 60.0  # an open review's score is refreshed at most this often
_PAYMENTS_REMEMBERED: Final = 3  # the latest payments the payment signal looks at


class AccountCache:
    """What the gateway needs to know about accounts, in memory."""

    def __init__(self, store: Store, *, interval: float = 0.25) -> None:
        self.store = store
        self.interval = interval
        self.keys: dict[str, str] = {}
        self.refused: dict[str, State] = {}
        self.loaded_at = 0.0  # monotonic time of the last successful refresh
        self.ok = False
        self._seq = 0  # every change up to here has been applied
        self._seen: set[int] = set()  # applied changes above _seq
        self._gaps: dict[int, float] = {}  # missing seq → when first noticed
        self._last_full = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Full load (raises ``StoreUnavailable``)."""
        with self._lock:
            seq = self.store.last_seq()
            keys = self.store.key_orgs()
            refused = self.store.refused_orgs()
            self.keys, self.refused = keys, refused
            self._seq, self._seen, self._gaps = seq, set(), {}
            self._last_full = self.loaded_at = time.monotonic()
            self.ok = True

    def refresh(self) -> int:
        """Apply the changes since the last refresh; how many. Raises ``StoreUnavailable``."""
        if time.monotonic() - self._last_full > _RESYNC_EVERY:
            self.load()
            return 0
        with self._lock:
            changes = self.store.changes_since(self._seq)
            applied = 0
            now = time.monotonic()
            for change in changes:
                if change.seq in self._seen:
                    continue
                self._apply(change.action, change.org, change.detail)
                self._seen.add(change.seq)
                applied += 1
            # Advance over what is contiguous; a gap is an insert not yet committed (or one
            # rolled back): wait for it a little, then move on.
            top = max(self._seen, default=self._seq)
            for missing in range(self._seq + 1, top):
                if missing not in self._seen:
                    self._gaps.setdefault(missing, now)
            while True:
                nxt = self._seq + 1
                if nxt in self._seen:
                    self._seen.discard(nxt)
                    self._seq = nxt
                    self._gaps.pop(nxt, None)
                elif nxt in self._gaps and now - self._gaps[nxt] > _GAP_PATIENCE:
                    del self._gaps[nxt]
                    self._seq = nxt
                else:
                    break
            self.loaded_at = now
            self.ok = True
            return applied

    def _apply(self, action: str, org: str | None, detail: dict[str, Any]) -> None:
        if action == "state" and org is not None:
            current = self.store.get_org(org)  # the store is the authority, not the entry
            if current is not None and current.state.refused:
                self.refused = {**self.refused, org: current.state}
            elif org in self.refused:
                self.refused = {k: v for k, v in self.refused.items() if k != org}
        elif action in ("key.add", "key.revoke"):
            key_id = str(detail.get("key_id", ""))
            key = self.store.get_key(key_id)
            if key is not None and not key.revoked:
                self.keys[key_id] = key.org
            else:
                self.keys.pop(key_id, None)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="regiongate-accounts", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        wait: Callable[[float], bool] | None = getattr(self.store, "wait_for_change", None)
        down = False
        while not self._stop.is_set():
            try:
                if wait is not None and not down:
                    wait(self.interval)
                else:
                    self._stop.wait(self.interval)
                if not self.ok:
                    self.load()
                else:
                    self.refresh()
                if down:
                    log.warning("account store is back; cache refreshed")
                down = False
            except StoreUnavailable as exc:
                if not down:
                    log.error("account store unavailable, enforcing the last known state: %s", exc)
                down = True
            except Exception:
                log.exception("account cache refresh failed")
                down = True


class CircumventionRule:
    """The circumvention score (``[accounts.circumvention]``) after each written batch.

    The batch updates each organisation's sliding window (:class:`SignalTracker`); every
    organisation in it with ``min_requests`` in the window is scored. At ``suspend`` or more,
    once enforcement has begun and not in dry-run, it is suspended with the score's
    explanation as the reason and the window's event ids as evidence; at ``review`` or more
    (or ``suspend`` before enforcement or in dry-run) a review is opened, or the open one gets
    the new score. A review dismissed within the window is not reopened.

    Each gateway process scores the traffic it writes: behind a load balancer that is a
    sample of each organisation's requests, which leaves shares and diversity as they are.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        cache: AccountCache | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache = cache
        self.tracker = SignalTracker()
        self.reviews_opened = 0
        self.suspended = 0
        self._refreshed: dict[str, tuple[float, float]] = {}  # org → (when, score) last looked

    def on_batch(self, batch: Sequence[Event], policy: Policy) -> None:
        rules = policy.accounts.circumvention
        self.tracker.resize(rules.window)
        touched = self.tracker.add(batch)
        if not rules.enabled:
            return
        now = self.clock()
        for org in sorted(touched):
            self.evaluate(org, policy, now)

    def score(self, org: str, policy: Policy, now: float | None = None) -> Score | None:
        """``org``'s score now (``None``: no traffic of it in the window)."""
        now = self.clock() if now is None else now
        if not self.tracker.has_payments(org) and org in self.tracker:
            self.note_payments(org, self.store.list_payments(org))
        signals = self.tracker.signals(org, now)
        if signals is None:
            return None
        rules = policy.accounts.circumvention
        return score(signals, rules.weights, policy.is_supported, window=rules.window)

    def note_payments(self, org: str, payments: Sequence[Payment]) -> None:
        latest = sorted(payments, key=lambda p: p.at)[-_PAYMENTS_REMEMBERED:]
        self.tracker.note_payments(org, [t for p in latest for t in p.territories()])

    def evaluate(self, org: str, policy: Policy, now: float) -> Score | None:
        """Score ``org`` and act on it; the score (``None``: not scored)."""
        rules = policy.accounts.circumvention
        if org in policy.exempt_accounts:
            return None
        if self.cache is not None and org in self.cache.refused:
            return None
        result = self.score(org, policy, now)
        if result is None or result.requests < rules.min_requests:
            return result
        dry = policy.mode.value == "dry-run"
        enforcing = policy.phase_at(now) is Phase.ENFORCE
        if rules.suspend and result.score >= rules.suspend and enforcing and not dry:
            changed = self.store.transition(
                org,
                State.SUSPENDED,
                actor="rule:circumvention",
                reason=f"{result.explain()} (threshold {rules.suspend:g}; {policy.ref})",
                evidence=result.evidence,
                expect={State.ACTIVE, State.WARNED, State.REINSTATED},
                at=now,
            )
            if changed is not None:
                self.suspended += 1
                log.warning("%s suspended: %s", org, result.explain())
            return result
        flag = rules.review and result.score >= rules.review
        would_suspend = bool(rules.suspend and result.score >= rules.suspend)
        if not (flag or would_suspend):
            return result
        last = self._refreshed.get(org)
        if last is not None and now - last[0] < _REVIEW_REFRESH:
            return result  # the open review (or the dismissal) was looked at recently
        latest = self.store.list_reviews(org=org, status=None, limit=1)
        if latest and _recently_dismissed(latest[0], now, rules.window):
            self._refreshed[org] = (now, result.score)
            return result
        explanation = result.to_dict()
        explanation["policy"] = policy.ref
        explanation["thresholds"] = {"review": rules.review, "suspend": rules.suspend}
        if would_suspend:
            explanation["would"] = "suspend" + (" (dry-run)" if dry else " (once enforced)")
        _, opened = self.store.open_review(
            org, round(result.score, 2), explanation, actor="rule:circumvention", at=now
        )
        if len(self._refreshed) > 100_000:
            self._refreshed.clear()
        self._refreshed[org] = (now, result.score)
        if opened:
            self.reviews_opened += 1
            log.warning("%s flagged for review: %s", org, result.explain())
        return result


class ReviewClosed(ValueError):
    """A decision on a review that is no longer open."""


_DECISION_STATES: Final[dict[str, tuple[State, frozenset[State]]]] = {
    "warned": (State.WARNED, frozenset({State.ACTIVE, State.REINSTATED})),
    "suspended": (State.SUSPENDED, frozenset({State.ACTIVE, State.WARNED, State.REINSTATED})),
}


def decide_review(
    store: Store,
    review_id: str,
    decision: str,
    *,
    actor: str,
    note: str = "",
    at: float | None = None,
) -> tuple[Review, Org | None] | None:
    """A person's decision on an open review: the state change it implies, then the review
    closed. ``(closed review, org if its state changed)``; ``None`` if there is no such review;
    :class:`ReviewClosed` if it is closed already.

    The state change comes first and is conditional (an organisation already suspended stays
    as it is), so a decision cut short by a store outage is completed by running it again.
    """
    when = time.time() if at is None else at
    review = store.get_review(review_id)
    if review is None:
        return None
    if review.status != "open":
        raise ReviewClosed(f"review {review_id} is already closed ({review.status})")
    changed: Org | None = None
    if decision in _DECISION_STATES:
        target, expect = _DECISION_STATES[decision]
        score = review.score
        changed = store.transition(
            review.org,
            target,
            actor=actor,
            reason=(
                f"review {review_id} (circumvention score {score:g}): {decision}"
                + (f" — {note}" if note else "")
            ),
            evidence=[review_id],
            expect=expect,
            at=when,
        )
    elif decision != "dismissed":
        raise ValueError(f"decision must be dismissed, warned or suspended, not {decision!r}")
    closed = store.close_review(review_id, decision, actor=actor, note=note, at=when)
    if closed is None:
        raise ReviewClosed(f"review {review_id} was closed by someone else meanwhile")
    return closed, changed


def _recently_dismissed(review: Review, now: float, window: float) -> bool:
    return (
        review.status == "dismissed"
        and review.closed_at is not None
        and now - review.closed_at < window
    )


class RulesEngine:
    """The policy's ``[accounts]`` rules: strikes after each written batch, and payments."""

    def __init__(
        self,
        store: Store,
        policy: Callable[[], Policy],
        *,
        clock: Callable[[], float] = time.time,
        cache: AccountCache | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self.cache = cache
        self.transitions = 0
        self.circumvention = CircumventionRule(store, clock=clock, cache=cache)

    def on_batch(self, batch: Sequence[Event]) -> None:
        policy = self.policy()
        self._strikes(batch, policy)
        self.circumvention.on_batch(batch, policy)

    def _strikes(self, batch: Sequence[Event], policy: Policy) -> None:
        rules = policy.accounts
        if rules.strikes <= 0 or policy.mode.value == "dry-run":
            return
        orgs = {e.org for e in batch if e.strike}
        if not orgs:
            return
        now = self.clock()
        enforcing = policy.phase_at(now) is Phase.ENFORCE
        target = State.SUSPENDED if enforcing else State.WARNED
        for org_id in sorted(orgs):
            if org_id in policy.exempt_accounts:
                continue
            if self.cache is not None and org_id in self.cache.refused:
                continue
            org = self.store.get_org(org_id)
            if org is None or org.state is target or org.state.refused:
                continue
            since = now - rules.window
            if org.state is State.REINSTATED:
                since = max(since, org.state_since)  # a fresh start after an appeal
            n, ids = self.store.strike_events(org_id, since, limit=100)
            if n < rules.strikes:
                continue
            expect = (
                {State.ACTIVE, State.WARNED, State.REINSTATED}
                if target is State.SUSPENDED
                else {State.ACTIVE, State.REINSTATED}
            )
            window = _human(rules.window)
            changed = self.store.transition(
                org_id,
                target,
                actor="rule:strikes",
                reason=(
                    f"{n} requests from unsupported territories within {window} "
                    f"(threshold {rules.strikes}; {policy.ref}, phase {policy.phase_at(now).label})"
                ),
                evidence=ids,
                expect=expect,
                at=now,
            )
            if changed is not None:
                self.transitions += 1
                log.warning("%s → %s after %d strikes", org_id, target, n)

    def on_payment(self, payment: Payment, *, actor: str) -> tuple[bool, Org | None]:
        """Record ``payment``; apply the payments rule. (new?, the org if its state changed)."""
        new = self.store.add_payment(payment, actor=actor)
        if self.circumvention.tracker.has_payments(payment.org):
            self.circumvention.note_payments(payment.org, self.store.list_payments(payment.org))
        policy = self.policy()
        rules = policy.accounts
        if rules.payments == "ignore" or payment.org in policy.exempt_accounts:
            return new, None
        bad = [t for t in payment.territories() if not policy.is_supported(t.strip().upper())]
        if not bad:
            return new, None
        target = State.SUSPENDED if rules.payments == "suspend" else State.WARNED
        expect = (
            {State.ACTIVE, State.WARNED, State.REINSTATED}
            if target is State.SUSPENDED
            else {State.ACTIVE, State.REINSTATED}
        )
        where = ", ".join(
            f"{label} {t}"
            for label, t in (("card", payment.card_country), ("billing", payment.billing_country))
            if t and t in bad
        )
        changed = self.store.transition(
            payment.org,
            target,
            actor="rule:payments",
            reason=f"payment {payment.id} from an unsupported territory ({where}; {policy.ref})",
            evidence=[payment.id],
            expect=expect,
            at=self.clock(),
        )
        if changed is not None:
            self.transitions += 1
        return new, changed


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def key_hasher(settings: AccountsSettings) -> KeyHasher:
    """The key hasher every process of a deployment shares (same secret, same key ids)."""
    path = (
        Path(settings.key_secret_file) if settings.key_secret_file else data_home() / "key-secret"
    )
    return KeyHasher(load_secret(path))


class Identity:
    """Who a request is from: the key id, and its organisation if the key is registered."""

    __slots__ = ("key_id", "org")

    def __init__(self, key_id: str, org: str | None) -> None:
        self.key_id = key_id
        self.org = org


class Accounts:
    """Accounts as the gateway uses them."""

    def __init__(
        self,
        store: Store,
        settings: AccountsSettings,
        policy: Callable[[], Policy],
        *,
        clock: Callable[[], float] = time.time,
        secret: bytes | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.policy = policy
        self.clock = clock
        self.hasher = key_hasher(settings) if secret is None else KeyHasher(secret)
        self.reader = KeyReader(settings.key_header, settings.key_scheme)
        self.block_unknown = settings.unknown_keys == "block"
        self.cache = AccountCache(store, interval=settings.refresh_interval)
        self.rules = RulesEngine(store, policy, clock=clock, cache=self.cache)
        spool = Path(settings.spool_dir) if settings.spool_dir else data_home() / "spool"
        self.sink = EventSink(
            store,
            spool,
            batch_size=settings.batch_size,
            queue_size=settings.queue_size,
            flush_interval=settings.flush_interval,
            on_written=self.rules.on_batch,
        )
        self.refused_requests = 0
        self.unknown_key_requests = 0
        self._next_id = event_id_factory()
        self._flags: dict[Origin, str] = {}
        self.hints = (
            HintReader(
                self.hasher.derive(b"end-user"),
                end_user_header=settings.end_user_header,
                timezone_header=settings.timezone_header,
            )
            if settings.hints
            else None
        )
        # Read the "user" field of JSON request bodies (the middleware tees the body).
        self.end_user_body = settings.hints and settings.end_user_body
        # Raw key → key id, keyed by the key's hash() (SipHash with this process's random
        # secret): the HMAC costs ~1.5 µs per request, this lookup ~60 ns. The raw key itself
        # is never kept. Off when hash randomization is (PYTHONHASHSEED=0 makes it guessable).
        self._kid_memo: dict[int, str] | None = {} if sys.flags.hash_randomization else None

    def start(self) -> None:
        """Load the cache (if the store answers) and start the writer and the refresher."""
        try:
            self.cache.load()
        except StoreUnavailable as exc:
            log.error("account store unavailable at start; will keep trying: %s", exc)
        self.cache.start()
        self.sink.start()

    def close(self) -> None:
        self.cache.close()
        self.sink.close()

    def identify(self, headers: Sequence[tuple[bytes, bytes]]) -> Identity | None:
        key = self.reader.read(headers)
        if key is None:
            return None
        memo = self._kid_memo
        if memo is None:
            key_id = self.hasher.key_id(key)
        else:
            h = hash(key)
            known = memo.get(h)
            if known is None:
                if len(memo) >= 65536:
                    memo.clear()
                known = memo[h] = self.hasher.key_id(key)
            key_id = known
        return Identity(key_id, self.cache.keys.get(key_id))

    def is_refused(self, org: str) -> bool:
        return org in self.cache.refused

    def record(
        self,
        identity: Identity,
        verdict: Verdict,
        *,
        refused: bool = False,
        headers: Sequence[tuple[bytes, bytes]] = (),
        user: str | None = None,
    ) -> None:
        """Queue the event for this decision (identified requests only); ``headers`` and the
        body's ``user`` give the circumvention hints."""
        org = identity.org
        if org is None:
            return
        d = verdict.decision
        origin = verdict.origin
        flags = self._flags.get(origin)
        if flags is None:
            if len(self._flags) > 65536:
                self._flags.clear()
            flags = self._flags[origin] = ",".join(sorted(f.value for f in origin.flags))
        if refused:
            action, strike = "refused", False
        else:
            action = d.action.value
            strike = d.action is not Action.ALLOW and d.rule in self.policy().accounts.count
        self.sink.put(
            Event(
                self._next_id(),
                org,
                identity.key_id,
                self.clock(),
                d.territory,
                flags,
                action,
                d.rule,
                strike,
                "" if self.hints is None else self.hints.read(headers, origin, user),
            )
        )
