"""Where requests meet decisions: the ASGI middleware, the reverse proxy, the decision
endpoint for nginx ``auth_request`` / Envoy ext_authz, and exports to nginx and nftables."""

from __future__ import annotations

from regiongate.enforce.gate import Gate, GateState, Verdict
from regiongate.enforce.middleware import RegionGate

__all__ = ["Gate", "GateState", "RegionGate", "Verdict"]
