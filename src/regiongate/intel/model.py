"""The values intel hands to the rest of regiongate: ``Origin`` and its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["FLAG_BITS", "Consensus", "Flag", "Origin", "SourceAnswer"]


class Flag(StrEnum):
    """What kind of address this is, beyond where it is."""

    TOR = "tor"
    VPN = "vpn"
    HOSTING = "hosting"
    PROXY = "proxy"
    RELAY = "relay"
    PRIVATE = "private"
    UNKNOWN = "unknown"
    INVALID = "invalid"
    DISPUTED = "disputed"


# Bit per flag, for the columnar results of ``lookup_many``. Part of the snapshot format.
FLAG_BITS: dict[Flag, int] = {flag: 1 << i for i, flag in enumerate(Flag)}


class Consensus(StrEnum):
    """How the answers of several sources become one.

    ``any``: every territory any source names counts (what compliance wants: an address that
    one trusted source places in an unsupported territory is treated as being there).
    ``majority``: the answer most sources give, ties broken by source priority.
    ``primary``: the answer of the highest-priority source that has one.
    """

    ANY = "any"
    MAJORITY = "majority"
    PRIMARY = "primary"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceAnswer:
    """What one source says about an address range."""

    source: str
    country: str | None = None
    subdivision: str | None = None
    region: str | None = None
    asn: int | None = None
    org: str | None = None
    kind: str | None = None
    provider: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The non-empty fields, for JSON output."""
        return {
            name: value for name in self.__slots__ if (value := getattr(self, name)) is not None
        }


# eq=False: Origins are interned per snapshot row, so identity is equality, and hashing by
# identity keeps the policy engine's per-Origin memo at one pointer hash per request.
@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Origin:
    """Where an address is and what kind of network it belongs to.

    ``country`` and ``subdivision`` are the consensus answer; ``territories`` is every
    territory the consensus strategy counts (with ``any``: every one any source names), as ISO
    3166-1 alpha-2 and ISO 3166-2 codes; ``sources`` keeps each source's own answer.
    """

    country: str | None = None
    subdivision: str | None = None
    territories: tuple[str, ...] = ()
    asn: int | None = None
    org: str | None = None
    flags: frozenset[Flag] = field(default_factory=frozenset)
    sources: tuple[SourceAnswer, ...] = ()
    consensus: Consensus = Consensus.ANY
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (flags sorted, sources as dicts)."""
        return {
            "country": self.country,
            "subdivision": self.subdivision,
            "territories": list(self.territories),
            "asn": self.asn,
            "org": self.org,
            "flags": sorted(str(f) for f in self.flags),
            "sources": [s.to_dict() for s in self.sources],
            "consensus": str(self.consensus),
        }
