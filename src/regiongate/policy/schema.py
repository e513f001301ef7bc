"""JSON Schema of the policy document, for editors (``regiongate policy schema``).

TOML editors (Taplo, VS Code "Even Better TOML") validate and complete a file against it with
``#:schema ./policy.schema.json`` on the first line. The loader stays the authority: it also
checks that every code exists, that groups resolve and that dates are in order.
"""

from __future__ import annotations

from typing import Any

from regiongate.policy.document import ACTION_KEYS, SIGNALS, STRIKE_RULES

__all__ = ["policy_schema"]

_TERRITORY = {
    "type": "string",
    "pattern": r"^(@[A-Za-z0-9_-]+|[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?)$",
    "description": "ISO 3166-1 alpha-2 country (US), ISO 3166-2 subdivision (UA-43), or @group",
}
_ACTION = {"enum": ["allow", "flag", "block"]}
_WHEN = {
    "type": "string",
    "description": "TOML date (2024-07-09) or datetime; dates are midnight UTC",
}


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a policy document."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://regiongate.invalid/schema/policy.json",
        "title": "regiongate policy",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "version"],
        "anyOf": [{"required": ["supported"]}, {"required": ["unsupported"]}],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "version": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "source": {"type": "string", "description": "where the rules come from, and when"},
            "default": {
                "enum": ["supported", "unsupported"],
                "description": "status of unlisted territories; inferred: unsupported when "
                "`supported` is given (allowlist), else supported (denylist)",
            },
            "supported": {"type": "array", "items": _TERRITORY},
            "unsupported": {"type": "array", "items": _TERRITORY},
            "groups": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": _TERRITORY},
            },
            "notice_from": _WHEN,
            "enforce_from": _WHEN,
            "mode": {"enum": ["enforce", "dry-run"]},
            "consensus": {"enum": ["any", "majority", "primary"]},
            "actions": {
                "type": "object",
                "additionalProperties": False,
                "properties": {key: _ACTION for key in ACTION_KEYS},
            },
            "exemptions": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "accounts": {"type": "array", "items": {"type": "string"}},
                    "networks": {"type": "array", "items": {"type": "string"}},
                },
            },
            "response": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "type": {"type": "string"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
            "accounts": {
                "type": "object",
                "additionalProperties": False,
                "description": "rules that change an organisation's state by themselves",
                "properties": {
                    "strikes": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "flagged/blocked requests within `window` that make an "
                        "organisation warned (before enforce_from) or suspended; 0: off",
                    },
                    "window": {
                        "type": ["string", "number"],
                        "pattern": r"^[0-9.]+[smhdw]$",
                        "description": "24h, 30m, 7d, or seconds",
                    },
                    "count": {
                        "type": "array",
                        "items": {"enum": list(STRIKE_RULES)},
                        "description": "decision rules that count as strikes",
                    },
                    "payments": {"enum": ["suspend", "warn", "ignore"]},
                    "message": {"type": "string"},
                    "circumvention": {
                        "type": "object",
                        "additionalProperties": False,
                        "description": "the circumvention score: review and suspend thresholds",
                        "properties": {
                            "review": {"type": "number", "minimum": 0, "maximum": 100},
                            "suspend": {"type": "number", "minimum": 0, "maximum": 100},
                            "window": {
                                "type": ["string", "number"],
                                "pattern": r"^[0-9.]+[smhdw]$",
                            },
                            "min_requests": {"type": "integer", "minimum": 1},
                            "weights": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    name: {"type": "number", "minimum": 0, "maximum": 100}
                                    for name in SIGNALS
                                },
                            },
                        },
                    },
                },
            },
        },
    }
