"""Prometheus metrics, collected at scrape time from the gate's plain counters.

The hot path only increments Python ints in a dict (no locks, no label lookups); this
collector turns them into metric families when Prometheus asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from regiongate.enforce.gate import LATENCY_BUCKETS

if TYPE_CHECKING:
    from regiongate.accounts.service import Accounts
    from regiongate.enforce.gate import Gate

__all__ = ["GateCollector", "render"]


class GateCollector(Collector):
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        stats = self.gate.stats
        decisions = CounterMetricFamily(
            "regiongate_decisions",
            "Decisions by action, territory and the rule that decided",
            labels=["action", "territory", "reason"],
        )
        for (action, territory, reason), n in stats.decisions().items():
            decisions.add_metric([action, territory, reason], n)
        yield decisions
        buckets = []
        cumulative = 0
        latency = stats.latency()
        for bound, n in zip(LATENCY_BUCKETS, latency, strict=False):
            cumulative += n
            buckets.append((repr(bound), cumulative))
        cumulative += latency[-1]
        buckets.append(("+Inf", cumulative))
        yield HistogramMetricFamily(
            "regiongate_decision_seconds",
            "Time to resolve the client, look it up and decide",
            buckets=buckets,
            sum_value=stats.latency_sum,
        )
        errors = CounterMetricFamily(
            "regiongate_upstream_errors", "Upstream failures by kind", labels=["kind"]
        )
        for kind, n in list(stats.upstream_errors.items()):
            errors.add_metric([kind], n)
        yield errors
        failures = CounterMetricFamily(
            "regiongate_reload_failures",
            "Refused reloads (the old state kept serving)",
            labels=["what"],
        )
        for what, n in list(stats.reload_failures.items()):
            failures.add_metric([what], n)
        yield failures
        state = self.gate.state
        age = self.gate.data_age()
        if age is not None:
            yield GaugeMetricFamily(
                "regiongate_data_age_seconds", "Age of the oldest IP data source", value=age
            )
        yield GaugeMetricFamily(
            "regiongate_state_age_seconds",
            "Seconds since the policy and snapshot in use were loaded",
            value=self.gate.clock() - state.loaded_at,
        )
        info = GaugeMetricFamily(
            "regiongate_policy_info", "The policy in force", labels=["policy", "mode", "phase"]
        )
        policy = state.policy
        info.add_metric([policy.ref, str(policy.mode), policy.phase_at(self.gate.clock()).label], 1)
        yield info


class AccountsCollector(Collector):
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    def collect(self) -> Iterator[Metric]:
        a = self.accounts
        sink = a.sink
        for name, help_text, value in (
            ("events_accepted", "Events put on the queue", sink.accepted),
            ("events_acknowledged", "Events committed to the store or fsynced to the spool",
             sink.acknowledged),
            ("events_written", "New events written to the store", sink.written),
            ("events_spooled", "Events written to the local spool (store down or queue full)",
             sink.spooled),
            ("events_replayed", "Spooled events replayed into the store", sink.replayed),
            ("account_refused_requests", "Requests refused because the organisation is "
             "suspended or its appeal is pending", a.refused_requests),
            ("account_unknown_key_requests", "Requests with a key no organisation has",
             a.unknown_key_requests),
            ("account_transitions", "State changes made by the account rules",
             a.rules.transitions),
            ("circumvention_reviews_opened", "Reviews opened by the circumvention score",
             a.rules.circumvention.reviews_opened),
            ("circumvention_suspensions", "Organisations suspended by the circumvention score",
             a.rules.circumvention.suspended),
        ):  # fmt: skip
            yield CounterMetricFamily(f"regiongate_{name}", help_text, value=value)
        yield GaugeMetricFamily(
            "regiongate_events_pending", "Events waiting for the writer", value=sink.pending
        )
        yield GaugeMetricFamily(
            "regiongate_events_spool_bytes", "Size of the event spool", value=sink.spool_size()
        )
        yield GaugeMetricFamily(
            "regiongate_account_store_up", "1 if the last store write succeeded",
            value=1 if sink.store_up else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "regiongate_account_refused_orgs", "Organisations refused now",
            value=len(a.cache.refused),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "regiongate_circumvention_tracked_orgs",
            "Organisations with traffic in this gateway's circumvention window",
            value=len(a.rules.circumvention.tracker),
        )


def registry_for(gate: Gate, accounts: Accounts | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GateCollector(gate))
    if accounts is not None:
        registry.register(AccountsCollector(accounts))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
