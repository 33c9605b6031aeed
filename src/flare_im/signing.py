"""How Flare signs what it POSTs to other people's servers (push webhooks, integration webhooks), as Stripe and
Slack sign theirs.

``Flare-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` = HMAC-SHA256(secret, ``"<t>.<body>"``). A receiver
recomputes it over the raw body, compares in constant time and refuses a ``t`` further than a few minutes from its
clock, so a captured request cannot be replayed later (within that window it drops repeats by the request's id).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Flare-Signature"
TOLERANCE_S = 300.0  # what a receiver should accept between t and its own clock


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Flare-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float, tolerance_s: float = TOLERANCE_S) -> bool:
    """What a receiver does: the header's ``v1`` matches ``body`` and its ``t`` is within ``tolerance_s``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return abs(now - timestamp) <= tolerance_s and hmac.compare_digest(expected, parts.get("v1", ""))
