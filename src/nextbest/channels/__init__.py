"""Outbound channels: messages nextbest sends out (a click-to-call request to the bank's
telephony; later email, SMS and push), kept in the store's outbox (``store.port.Outbox``)
until delivered, at least once, by a sender (``channels.sender``).

- ``signature``: the HMAC-SHA256 signature every webhook body carries
  (``Nextbest-Signature: t=<unix time>,v1=<hex>``) and ``verify``, for receivers.
- ``retry``: when to try again (exponential backoff with full jitter, capped) and what an
  HTTP answer means (delivered, try again, give up).
- ``port``: a ``Transport`` delivers one message; a ``Gate`` may hold a destination back
  (the seam for circuit breakers and rate limits).
- ``webhook``: the HTTP transport (httpx), signed, with a timeout.
- ``sender``: the loop that claims due messages and delivers them.

docs/outbox.md is the receiver's and the operator's guide.
"""

from nextbest.channels.port import Delivery, Gate, Transport, Ungated, Verdict
from nextbest.channels.retry import RetryPolicy, verdict_of_status
from nextbest.channels.sender import OutboxSender, SendReport
from nextbest.channels.signature import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    sign,
    signature_header,
    verify,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "Delivery",
    "Gate",
    "OutboxSender",
    "RetryPolicy",
    "SendReport",
    "Transport",
    "Ungated",
    "Verdict",
    "sign",
    "signature_header",
    "verdict_of_status",
    "verify",
]
