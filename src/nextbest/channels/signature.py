"""Webhook signatures, the way Stripe signs its webhooks: HMAC-SHA256 with the webhook's
secret over ``"{timestamp}.{body}"``, sent as

    Nextbest-Signature: t=1790157600,v1=5257a869e7ec...e108d8bd  (64 hex digits)

``t`` is when the attempt was signed (Unix seconds), ``v1`` the hex digest. A receiver
recomputes the digest over the raw body it received and compares in constant time, then
refuses a timestamp further than a tolerance from its own clock: a captured request replayed
later fails (``verify``). Each attempt of a message is signed anew; its ``Idempotency-Key``
header stays the same, so a receiver acts on a key once.
"""

from __future__ import annotations

import hashlib
import hmac
import math

from nextbest.errors import AuthError

__all__ = [
    "DEFAULT_TOLERANCE",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "sign",
    "signature_header",
    "verify",
]

SIGNATURE_HEADER = "Nextbest-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: seconds a signature's timestamp may be from the receiver's clock (Stripe's default)
DEFAULT_TOLERANCE = 300.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"{timestamp}.{body}"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Nextbest-Signature`` value: ``t=<timestamp>,v1=<hex>``."""
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(
    secret: str, header: str | None, body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> int:
    """Check a ``Nextbest-Signature`` header against the raw ``body`` received: its signed
    timestamp, or AuthError saying what is wrong (no header, malformed, no ``v1`` signature
    that matches, a timestamp more than ``tolerance`` seconds from ``now``). Several ``v1``
    entries are accepted (any one may match: a sender rolling its secret). ``body`` must be
    the bytes as received, not re-serialized JSON."""
    if not header:
        raise AuthError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise AuthError(f"malformed {SIGNATURE_HEADER} header: expected t=<time>,v1=<hex>")
        if name == "t":
            if not value.isdigit() or timestamp is not None:
                raise AuthError(f"malformed {SIGNATURE_HEADER} header: bad t")
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise AuthError(f"malformed {SIGNATURE_HEADER} header: expected t=<time>,v1=<hex>")
    expected = sign(secret, timestamp, body)
    if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures):
        raise AuthError(f"{SIGNATURE_HEADER} does not match the body")
    if not (math.isfinite(now) and abs(now - timestamp) <= tolerance):
        raise AuthError(
            f"{SIGNATURE_HEADER} timestamp is more than {tolerance:g} s from now: a replay, "
            "or a clock off"
        )
    return timestamp
