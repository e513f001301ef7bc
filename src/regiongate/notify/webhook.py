"""Webhook signatures: ``X-Regiongate-Signature: t=<unix seconds>,v1=<hex>``.

``v1`` is HMAC-SHA256 under the shared secret of ``<t>.<body>`` (the timestamp, a dot, and the
exact bytes of the request body). A receiver recomputes it, compares in constant time, and
refuses timestamps too far from its clock (replays). Each notice also carries an
``Idempotency-Key`` header that is the same on every attempt: a receiver that has seen the key
already acknowledges the request and drops it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

__all__ = ["SIGNATURE_HEADER", "sign", "signature_header", "verify_signature"]

SIGNATURE_HEADER: Final = "X-Regiongate-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``<timestamp>.<body>`` under ``secret``."""
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, body: bytes, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={sign(secret, t, body)}"


def verify_signature(
    secret: bytes,
    header: str | None,
    body: bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``header`` signs ``body`` under ``secret`` within ``tolerance`` seconds."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
