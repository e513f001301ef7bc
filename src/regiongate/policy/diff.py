"""Which territories change action between two policies, or one policy at two times."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pycountry

from regiongate.intel.model import Origin
from regiongate.intel.regions import subdivision_country
from regiongate.policy.document import Policy
from regiongate.policy.engine import Engine
from regiongate.policy.model import Action

__all__ = ["TerritoryChange", "diff_policies", "territory_name"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TerritoryChange:
    territory: str
    name: str
    before: Action
    after: Action
    because_before: str
    because_after: str


@lru_cache(maxsize=4096)
def territory_name(code: str) -> str:
    """A human name for a country or subdivision code."""
    if "-" in code:
        sub = pycountry.subdivisions.get(code=code)  # type: ignore[no-untyped-call]
        return str(sub.name) if sub is not None else code
    country = pycountry.countries.get(alpha_2=code)
    return str(getattr(country, "name", code)) if country is not None else code


def _origin(code: str) -> Origin:
    if "-" in code:
        parent = subdivision_country(code)
        return Origin(country=parent, subdivision=code, territories=(parent, code))
    return Origin(country=code, territories=(code,))


def diff_policies(a: Policy, b: Policy, at_a: float, at_b: float) -> list[TerritoryChange]:
    """Territories whose action differs between ``a`` at ``at_a`` and ``b`` at ``at_b``.

    Every country is compared, and every subdivision either policy has a rule for.
    """
    codes = {c.alpha_2 for c in pycountry.countries} | {"XK"}
    codes |= set(a.rules) | set(b.rules)
    engine_a, engine_b = Engine(a), Engine(b)
    phase_a, phase_b = a.phase_at(at_a), b.phase_at(at_b)
    changes = []
    for code in sorted(codes):
        origin = _origin(code)
        da = engine_a.explain(origin, phase_a)
        db = engine_b.explain(origin, phase_b)
        if da.action is not db.action:
            changes.append(
                TerritoryChange(
                    territory=code,
                    name=territory_name(code),
                    before=da.action,
                    after=db.action,
                    because_before=da.reasons[0] if da.reasons else "",
                    because_after=db.reasons[0] if db.reasons else "",
                )
            )
    return changes
