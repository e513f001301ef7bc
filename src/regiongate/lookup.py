"""The answer ``regiongate lookup`` gives for one address (DESIGN §3)."""

from __future__ import annotations

from typing import Any

from regiongate.intel.model import Flag
from regiongate.intel.snapshot import Snapshot
from regiongate.policy import Context, Policy

__all__ = ["describe"]


def describe(
    snap: Snapshot, ip: str, policy: Policy | None = None, ctx: Context | None = None
) -> dict[str, Any]:
    """Everything known about ``ip``, and the policy's decision, as a JSON-ready dict."""
    origin = snap.lookup(ip)
    invalid = Flag.INVALID in origin.flags
    if policy is None or ctx is None:
        decision: dict[str, Any] = {
            "action": "allow",
            "code": None,
            "territory": origin.subdivision or origin.country,
            "reasons": ["no policy given: every address is allowed"],
            "policy": None,
        }
    else:
        decision = policy.decide(origin, ctx).to_dict()
    return {
        "ip": ip,
        "country": origin.country,
        "subdivision": origin.subdivision,
        "territories": list(origin.territories),
        "asn": origin.asn,
        "org": origin.org,
        "network": None if invalid else snap.network_of(ip),
        "flags": sorted(str(f) for f in origin.flags),
        "sources": [s.to_dict() for s in origin.sources],
        "note": origin.note,
        "decision": decision,
    }
