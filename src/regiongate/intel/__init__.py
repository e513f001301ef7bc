"""IP intelligence: where an address is and what kind of network it belongs to.

``open_snapshot()`` loads the compiled snapshot installed by ``regiongate data install``;
``Snapshot.lookup(ip) -> Origin`` answers one address in about a microsecond and never raises;
``Snapshot.lookup_many(ips) -> LookupColumns`` answers arrays of addresses with numpy.
"""

from __future__ import annotations

from regiongate.intel.model import FLAG_BITS, Consensus, Flag, Origin, SourceAnswer
from regiongate.intel.snapshot import INVALID, LookupColumns, Snapshot, open_snapshot

__all__ = [
    "FLAG_BITS",
    "INVALID",
    "Consensus",
    "Flag",
    "LookupColumns",
    "Origin",
    "Snapshot",
    "SourceAnswer",
    "open_snapshot",
]
