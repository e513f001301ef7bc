"""Applying a policy: ``decide(origin, context) -> Decision``.

Pure and deterministic: the answer depends only on the policy, the ``Origin``, and the
context (time, account, client address). Everything costly happens once: decisions are
memoised per (phase, Origin) — snapshot ``Origin`` objects are interned per row, so the memo
is keyed by identity — and the per-request work is a phase comparison, two exemption checks
and one dict lookup.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from regiongate.intel.model import Flag, Origin
from regiongate.intel.regions import subdivision_country
from regiongate.policy.model import Action, Context, Decision, Mode, Phase

if TYPE_CHECKING:
    from regiongate.policy.document import Policy

__all__ = ["Engine"]

_MEMO_LIMIT: Final = 1 << 18
_NEG_INF: Final = float("-inf")
_POS_INF: Final = float("inf")
_FLAG_ACTIONS: Final = (
    (Flag.TOR, "tor"),
    (Flag.VPN, "vpn"),
    (Flag.HOSTING, "hosting"),
    (Flag.PROXY, "proxy"),
    (Flag.RELAY, "relay"),
    (Flag.DISPUTED, "disputed"),
)


def _sources_said(origin: Origin) -> str:
    parts = []
    for a in origin.sources:
        where = "/".join(x for x in (a.country, a.subdivision) if x)
        if a.region and a.subdivision:
            where += f" ({a.region})"
        what = ", ".join(x for x in (where, a.kind, a.provider) if x)
        if what:
            parts.append(f"{a.source}: {what}")
    return "sources: " + ("; ".join(parts) if parts else "none")


class Engine:
    """A policy compiled for fast decisions. Thread-safe (dict operations are atomic)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._ref = policy.ref
        self._notice = policy.notice_from.timestamp() if policy.notice_from else None
        self._enforce = policy.enforce_from.timestamp() if policy.enforce_from else None
        # Phase thresholds as plain floats: phase = ENFORCE if at >= t2, NOTICE if at >= t1.
        if self._enforce is None and self._notice is None:
            self._t1 = self._t2 = _NEG_INF
        else:
            self._t2 = self._enforce if self._enforce is not None else _POS_INF
            self._t1 = self._notice if self._notice is not None else self._t2
        self._memos: tuple[dict[Origin, Decision], ...] = ({}, {}, {})
        self._cores: dict[
            tuple[tuple[str, ...], frozenset[Flag], str | None],
            tuple[Action, str | None, str, tuple[str, ...]],
        ] = {}
        self._exempt_accounts = policy.exempt_accounts
        nets = [ipaddress.ip_network(n) for n in policy.exempt_networks]
        self._exempt_nets: tuple[tuple[int, int, int], ...] = tuple(
            (n.version, int(n.network_address), int(n.broadcast_address)) for n in nets
        )
        self._exempt_decisions = tuple(self._exempt(Phase(p)) for p in range(3))
        self._exempt_memos: tuple[dict[Origin, Decision], ...] = ({}, {}, {})

    def valid_until(self, at: float) -> float:
        """When the phase in force at ``at`` ends (``inf`` if never): a decision memoised at
        ``at`` stays exact until then."""
        if at < self._t1:
            return self._t1
        if at < self._t2:
            return self._t2
        return _POS_INF

    # --- the hot path ---------------------------------------------------------------------------

    def decide(self, origin: Origin, ctx: Context) -> Decision:
        """The decision for a request from ``origin`` in context ``ctx``."""
        at = ctx.at
        phase = 2 if at >= self._t2 else (1 if at >= self._t1 else 0)
        if self._exempt_accounts and ctx.account in self._exempt_accounts:
            return self._exempt_for(origin, phase)
        if self._exempt_nets and ctx.client is not None:
            version, value = ctx.client
            for v, first, last in self._exempt_nets:
                if v == version and first <= value <= last:
                    return self._exempt_for(origin, phase)
        memo = self._memos[phase]
        decision = memo.get(origin)
        if decision is None:
            decision = self.explain(origin, Phase(phase))
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[origin] = decision
        return decision

    # --- the rules ------------------------------------------------------------------------------

    def _exempt_for(self, origin: Origin, phase: int) -> Decision:
        """The exempt decision for a request from ``origin``: allowed, and still saying the
        territory it came from (the ``X-Regiongate-Territory`` header, reports). Memoised per
        (phase, Origin) like the others."""
        memo = self._exempt_memos[phase]
        decision = memo.get(origin)
        if decision is None:
            base = self._exempt_decisions[phase]
            territory = self.explain(origin, Phase(phase)).territory
            decision = base if territory is None else replace(base, territory=territory)
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[origin] = decision
        return decision

    def _exempt(self, phase: Phase) -> Decision:
        return Decision(
            action=Action.ALLOW,
            intended=Action.ALLOW,
            code=None,
            territory=None,
            reasons=("exempt: account or network listed in exemptions",),
            policy=self._ref,
            phase=phase,
            mode=self.policy.mode,
            exempt=True,
            rule="exempt",
        )

    def _territories(self, origin: Origin) -> tuple[Action, str | None, list[str]]:
        """The territory verdict: block if any counted territory is unsupported."""
        p = self.policy
        territories = origin.territories
        if not territories:
            action = p.actions["unknown"]
            return action, None, [f"no source locates the address: actions.unknown = {action}"]
        # A subdivision rule wins over its country's: a subdivision without a rule of its own
        # is judged as its country; a country is judged on its own only when no subdivision of
        # it with a rule of its own is among the territories. Subdivisions are listed first,
        # so that the decision rests on the most specific territory.
        rules = p.rules
        ruled_parents = {subdivision_country(t) for t in territories if "-" in t and t in rules}
        deciding: list[str] = []
        for t in sorted(territories, key=lambda t: "-" not in t):
            if "-" in t:
                key = t if t in rules else subdivision_country(t)
            elif t in ruled_parents:
                continue
            else:
                key = t
            if key not in deciding:
                deciding.append(key)
        unsupported: list[tuple[str, str]] = []
        supported: list[tuple[str, str]] = []
        for t in deciding:
            rule = p.rule_for(t)
            (supported if rule.supported else unsupported).append((t, rule.because))
        if unsupported:
            reasons = [f"{t} is not supported ({because})" for t, because in unsupported]
            return Action.BLOCK, unsupported[0][0], reasons
        return Action.ALLOW, supported[0][0], [f"{t} is supported ({b})" for t, b in supported]

    def outcome(self, origin: Origin) -> tuple[Action, str | None, str]:
        """(intended action, territory, rule) for ``origin`` before the phase and the mode
        apply: :meth:`explain` without the reasons, for bulk replays (one call per snapshot
        row; :meth:`phase_action` then gives the action in each phase)."""
        intended, territory, rule, _ = self._core(origin, explain=False)
        return intended, territory, rule

    def phase_action(self, intended: Action, phase: Phase) -> Action:
        """The action taken for ``intended`` in ``phase`` under this policy's mode."""
        if phase is Phase.BEFORE_NOTICE:
            return Action.ALLOW
        if phase is Phase.NOTICE and intended is Action.BLOCK:
            intended = Action.FLAG
        if self.policy.mode is Mode.DRY_RUN and intended is Action.BLOCK:
            return Action.FLAG
        return intended

    def _core(self, origin: Origin, *, explain: bool) -> tuple[Action, str | None, str, list[str]]:
        # What the rules say depends on the territories, flags and note alone, which far
        # fewer combinations share than there are snapshot rows (~300k): worked out once per
        # combination, a first decision for a row costs the sources sentence and the object.
        key = (origin.territories, origin.flags, origin.note)
        known = self._cores.get(key)
        if known is None:
            known = self._rules_core(origin)
            if len(self._cores) >= _MEMO_LIMIT:
                self._cores.clear()
            self._cores[key] = known
        intended, territory, rule, why = known
        reasons = list(why)
        if explain and Flag.INVALID not in origin.flags and Flag.PRIVATE not in origin.flags:
            reasons.append(_sources_said(origin))
        return intended, territory, rule, reasons

    def _rules_core(self, origin: Origin) -> tuple[Action, str | None, str, tuple[str, ...]]:
        p = self.policy
        flags = origin.flags
        reasons: list[str] = []
        territory: str | None = None
        if Flag.INVALID in flags:
            rule = "invalid"
            intended = p.actions["invalid"]
            reasons.append(
                f"client address is invalid ({origin.note or 'not an IP address'}): "
                f"actions.invalid = {intended}"
            )
        elif Flag.PRIVATE in flags:
            rule = "private"
            intended = p.actions["private"]
            reasons.append(
                f"private or reserved address ({origin.note or 'special-purpose'}): "
                f"actions.private = {intended}"
            )
        else:
            intended, territory, why = self._territories(origin)
            reasons += why
            if not origin.territories:
                rule = "unknown"
            elif intended is Action.BLOCK:
                rule = "unsupported-territory"
            else:
                rule = "supported-territory"
            for flag, key in _FLAG_ACTIONS:
                if flag in flags:
                    action = p.actions[key]
                    if action is not Action.ALLOW:
                        reasons.append(f"address is {flag}: actions.{key} = {action}")
                    if action.severity > intended.severity:
                        intended = action
                        rule = key
        return intended, territory, rule, tuple(reasons)

    def explain(self, origin: Origin, phase: Phase) -> Decision:
        """Decide from scratch, collecting every reason (the memoised path returns these)."""
        p = self.policy
        intended, territory, rule, reasons = self._core(origin, explain=True)
        if phase is Phase.BEFORE_NOTICE:
            if intended is not Action.ALLOW:
                start = p.notice_from or p.enforce_from
                when = start.date().isoformat() if start else "?"
                reasons.append(f"before the policy takes effect on {when}: would {intended}")
            intended = Action.ALLOW
        elif phase is Phase.NOTICE and intended is Action.BLOCK:
            when = p.enforce_from.date().isoformat() if p.enforce_from else "(no date set)"
            reasons.append(f"notice period: flagged now, blocked from {when}")
            intended = Action.FLAG
        action = intended
        if p.mode is Mode.DRY_RUN and intended is Action.BLOCK:
            action = Action.FLAG
            reasons.append("dry-run: would block, recorded only")
        return Decision(
            action=action,
            intended=intended,
            code=None if intended is Action.ALLOW else p.response.code,
            territory=territory,
            reasons=tuple(reasons),
            policy=self._ref,
            phase=phase,
            mode=p.mode,
            rule=rule,
        )

    def clear(self) -> None:
        """Forget memoised decisions (after a snapshot reload, the old Origins go)."""
        for memo in (*self._memos, *self._exempt_memos):
            memo.clear()
