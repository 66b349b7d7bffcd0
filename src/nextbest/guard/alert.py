"""The alert a flagged session sends to the bank's fraud channel (through the webhook outbox:
``docs/outbox.md``). Pure: the key and the JSON body; the engine enqueues them.

One alert per session at most: its idempotency key is a hash of the customer and the
session's start (``guard-<24 hex>``, no customer id in clear in the outbox's keys), so a
second enqueue of the same session's alert (a retry, another process folding the same
event) leaves the first as it was.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec

from nextbest.profile.baseline import SessionWatch

__all__ = ["ALERT_TYPE", "FRAUD_CHANNEL", "FraudAlert", "alert_key", "fraud_alert"]

#: the outbox channel of guard alerts (the destination is the catalog's ``alert_destination``)
FRAUD_CHANNEL = "fraud"
ALERT_TYPE = "identity_theft_suspected"


class FraudAlert(msgspec.Struct, kw_only=True):
    """What the fraud channel receives (JSON)."""

    type: str
    customer_id: str
    #: the session's first watched event and the moment the risk reached the threshold (UTC)
    session_started: str
    flagged_at: str
    #: watched events into the session, and seconds, when it was flagged
    steps_to_flag: int
    seconds_to_flag: float
    risk: float
    threshold: float
    #: what the guard found (``profile.baseline.Signal``)
    signals: list[str]
    #: what the session used: anonymousIds, agent families, places; sensitive kinds visited
    devices: list[str]
    agents: list[str]
    places: list[str]
    sensitive: list[str]
    catalog_version: str


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def alert_key(customer_id: str, session: SessionWatch) -> str:
    """The idempotency key of a session's alert (module docstring)."""
    text = f"{customer_id}\x00{session.started!r}".encode()
    return "guard-" + hashlib.sha256(text).hexdigest()[:24]


def fraud_alert(
    customer_id: str, session: SessionWatch, threshold: float, catalog_version: str
) -> FraudAlert:
    """The alert of a flagged ``session``."""
    return FraudAlert(
        type=ALERT_TYPE,
        customer_id=customer_id,
        session_started=_iso(session.started),
        flagged_at=_iso(session.flagged_at),
        steps_to_flag=session.flagged_step,
        seconds_to_flag=round(max(0.0, session.flagged_at - session.started), 3),
        risk=round(session.risk, 6),
        threshold=threshold,
        signals=[s.value for s in session.signals],
        devices=list(session.devices),
        agents=list(session.agents),
        places=list(session.places),
        sensitive=list(session.kinds),
        catalog_version=catalog_version,
    )
