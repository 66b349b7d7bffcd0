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
from typing import Any, NamedTuple

import msgspec

from nextbest.guard.watch import Guard
from nextbest.profile.baseline import SessionWatch
from nextbest.profile.model import Profile

__all__ = [
    "ALERT_TYPE",
    "FRAUD_CHANNEL",
    "Alerted",
    "DueAlert",
    "FraudAlert",
    "alert_key",
    "decode_alerts",
    "due_alert",
    "encode_alerts",
    "fraud_alert",
]

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


class DueAlert(NamedTuple):
    """An alert made, to enqueue in the outbox: its idempotency key, JSON body, and the
    customer it is about (the outbox's ``customer``: what an erasure finds it by)."""

    key: str
    body: bytes
    customer: str = ""


#: alert keys a folder remembers (a session's later events make no second alert)
ALERTED_KEPT = 100_000


class Alerted:
    """The keys of the alerts a folder made since it started (bounded: cleared when full;
    a key made again after that is one more enqueue, which the outbox's key makes a
    no-op)."""

    def __init__(self, kept: int = ALERTED_KEPT) -> None:
        self._keys: set[str] = set()
        self._kept = kept

    def first(self, key: str) -> bool:
        """True the first time ``key`` is seen (remembered from now on)."""
        if key in self._keys:
            return False
        if len(self._keys) >= self._kept:
            self._keys.clear()
        self._keys.add(key)
        return True

    def discard(self, key: str) -> None:
        """Forget ``key`` (its customer was erased)."""
        self._keys.discard(key)


def due_alert(
    profile: Profile | None, guard: Guard, catalog_version: str, alerted: Alerted
) -> DueAlert | None:
    """After a live fold of one of ``profile``'s events: its watched session's alert if the
    session is flagged and ``alerted`` has not seen it yet (the embedded engine and every
    fold worker decide it alike)."""
    state = profile.guard if profile is not None else None
    session = state.session if state is not None else None
    if profile is None or session is None or not session.flagged:
        return None
    key = alert_key(profile.customer_id, session)
    if not alerted.first(key):
        return None
    alert = fraud_alert(profile.customer_id, session, guard.threshold, catalog_version)
    return DueAlert(key, msgspec.json.encode(alert), profile.customer_id)


_encode_due = msgspec.msgpack.Encoder().encode
#: (key, body) as saved before alerts named their customer, or (key, body, customer)
_decode_due = msgspec.msgpack.Decoder(list[list[Any]]).decode


def encode_alerts(alerts: list[DueAlert]) -> bytes:
    """Alerts due, as a fold worker saves them with its state (``fold/alerts``)."""
    return _encode_due([(a.key, a.body, a.customer) for a in alerts])


def decode_alerts(body: bytes) -> list[DueAlert]:
    return [
        DueAlert(str(a[0]), bytes(a[1]), str(a[2]) if len(a) > 2 else "") for a in _decode_due(body)
    ]
