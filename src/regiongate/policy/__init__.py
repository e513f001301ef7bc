"""The policy: which territories are supported, from when, and what happens otherwise.

``load_policy("api-2024")`` or ``load_policy("my-policy.toml")`` returns a validated
:class:`Policy`; ``policy.decide(origin, Context(at=...))`` returns an explained
:class:`Decision`. Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

from regiongate.errors import PolicyError
from regiongate.policy.document import Policy, Response, load_policy, parse_policy, preset_names
from regiongate.policy.model import Action, Context, Decision, Mode, Phase

__all__ = [
    "Action",
    "Context",
    "Decision",
    "Mode",
    "Phase",
    "Policy",
    "PolicyError",
    "Response",
    "load_policy",
    "parse_policy",
    "preset_names",
]
