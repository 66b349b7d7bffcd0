"""The vocabulary of advisors and callbacks, shared by the core, the stores and the faces.

A callback is a durable state machine::

    requested ──► offered ──► accepted ──► connected ──► completed
        │  ▲         │            │            │
        │  └─────────┘ declined / timed out: offered to the next colleague
        │            │            │            │
        └────────────┴────────────┴────────────┴──► expired | cancelled

``requested``  the customer asked (now, later, or at a time); no advisor holds it yet
``offered``    put to one advisor, who has ``offer_timeout`` to accept; declined or timed
               out, it goes back to ``requested`` and on to the next colleague with the
               same expertise (that advisor is remembered in ``declined_by``)
``accepted``   an advisor took it: the click-to-call request goes out through the outbox
``connected``  the telephony system reports the call started
``completed``  the call ended (a campaign KPI may count it)
``expired``    nobody took it in time, or the slot passed unanswered
``cancelled``  the customer (or the bank) withdrew it

Every transition is persisted and appended to the customer's event log as a track event
(``Transition.event``: ``TRANSITION_EVENTS`` by state), so profiles, learning and experiments
see it. One step keeps the state: a "call me now" nobody took within the SLA is *rescheduled*
to the earliest free slot (``Transition.rescheduled``, the event ``Callback Scheduled``), and
the customer is told (``Callback.notice``). A step back to ``requested`` away from an advisor
who declined or let the offer lapse is *passed on* (``Transition.passed_on``, the event
``Callback Declined``, its reason saying which): the customer asked once. A step back to
``requested`` from ``accepted`` is an accepted call that never started within
``connect_within_seconds`` (``Transition.not_connected``, the event ``Callback Not
Connected``): on to a colleague too.
"""

from __future__ import annotations

import enum

import msgspec

from nextbest.types import CustomerId, Timestamp

__all__ = [
    "FINAL_STATES",
    "NOT_CONNECTED_EVENT",
    "PASSED_ON_EVENT",
    "SCHEDULED_EVENT",
    "TRANSITIONS",
    "TRANSITION_EVENTS",
    "Callback",
    "CallbackMode",
    "CallbackState",
    "Presence",
    "Transition",
    "can_move",
]


class Presence(enum.StrEnum):
    """An advisor's live presence, set by ``PUT /v1/advisors/{id}/presence`` (the call a
    telephony system's webhook makes on call start and end). Only ``available`` advisors
    are offered "call me now"; the others keep their booked slots."""

    AVAILABLE = "available"
    BUSY = "busy"
    AWAY = "away"
    OFFLINE = "offline"


class CallbackMode(enum.StrEnum):
    NOW = "now"  #: as soon as an expert is free (within the SLA)
    LATER = "later"  #: the earliest free slot
    AT = "at"  #: a slot the customer picked


class CallbackState(enum.StrEnum):
    REQUESTED = "requested"
    OFFERED = "offered"
    ACCEPTED = "accepted"
    CONNECTED = "connected"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


FINAL_STATES: frozenset[CallbackState] = frozenset(
    {CallbackState.COMPLETED, CallbackState.EXPIRED, CallbackState.CANCELLED}
)

#: the legal moves; anything else is refused (``errors.Conflict`` at the faces)
TRANSITIONS: dict[CallbackState, frozenset[CallbackState]] = {
    CallbackState.REQUESTED: frozenset(
        {CallbackState.OFFERED, CallbackState.EXPIRED, CallbackState.CANCELLED}
    ),
    CallbackState.OFFERED: frozenset(
        {
            CallbackState.ACCEPTED,
            CallbackState.REQUESTED,  # declined or timed out: on to the next colleague
            CallbackState.EXPIRED,
            CallbackState.CANCELLED,
        }
    ),
    CallbackState.ACCEPTED: frozenset(
        {
            CallbackState.CONNECTED,
            CallbackState.REQUESTED,  # the call never started: back to the queue
            CallbackState.EXPIRED,
            CallbackState.CANCELLED,
        }
    ),
    CallbackState.CONNECTED: frozenset({CallbackState.COMPLETED, CallbackState.CANCELLED}),
    CallbackState.COMPLETED: frozenset(),
    CallbackState.EXPIRED: frozenset(),
    CallbackState.CANCELLED: frozenset(),
}

#: the track event each state appends to the customer's event log
TRANSITION_EVENTS: dict[CallbackState, str] = {
    CallbackState.REQUESTED: "Callback Requested",
    CallbackState.OFFERED: "Callback Assigned",
    CallbackState.ACCEPTED: "Callback Accepted",
    CallbackState.CONNECTED: "Callback Connected",
    CallbackState.COMPLETED: "Callback Completed",
    CallbackState.EXPIRED: "Callback Expired",
    CallbackState.CANCELLED: "Callback Cancelled",
}


#: the track event of a step that moves a callback to a slot without changing its state
SCHEDULED_EVENT = "Callback Scheduled"
#: the track event of a step back to ``requested`` from an advisor who declined the offer or
#: let it lapse (its reason says which): on to a colleague
PASSED_ON_EVENT = "Callback Declined"
#: the track event of a step back to ``requested`` from an accepted call that never started
#: within ``connect_within_seconds``
NOT_CONNECTED_EVENT = "Callback Not Connected"


def can_move(source: CallbackState, target: CallbackState) -> bool:
    return target in TRANSITIONS[source]


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a callback's life, as persisted (and appended to the event log)."""

    state: CallbackState
    at: Timestamp
    advisor_id: str | None = None
    #: why, in words an advisor or the customer can read ("declined by anna",
    #: "nobody free within 120 s: moved to the earliest slot, 14:30 CET")
    reason: str = ""
    #: the slot the step booked (a "later" or "at" request, a move to a slot)
    scheduled_for: Timestamp | None = None
    #: the step moved the callback to a slot and kept its state (``requested``): a "now"
    #: nobody took within the SLA
    rescheduled: bool = False
    #: the step took the callback back from the advisor it was offered to (declined, or the
    #: offer lapsed), on to a colleague
    passed_on: bool = False
    #: the step took an accepted callback back from its advisor: the call never started
    not_connected: bool = False

    @property
    def event(self) -> str:
        """The track event the step appends to the customer's event log."""
        if self.rescheduled:
            return SCHEDULED_EVENT
        if self.not_connected:
            return NOT_CONNECTED_EVENT
        if self.passed_on:
            return PASSED_ON_EVENT
        return TRANSITION_EVENTS[self.state]


class Callback(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's request to be called, as the store keeps it. ``version`` grows by one
    with every persisted transition (optimistic concurrency: a write against a stale
    version is refused, so two advisors cannot both accept)."""

    id: str
    customer: CustomerId
    topic: str
    mode: CallbackMode
    phone: str  #: E.164, validated at the face
    requested_at: Timestamp
    state: CallbackState = CallbackState.REQUESTED
    #: the slot's start for ``later`` and ``at`` (and for ``now`` moved to a slot)
    scheduled_for: Timestamp | None = None
    advisor_id: str | None = None
    #: when the current offer to ``advisor_id`` lapses (state ``offered``)
    offer_expires_at: Timestamp | None = None
    #: by when the call must start (state ``accepted``): past it, back to the queue
    connect_by: Timestamp | None = None
    declined_by: tuple[str, ...] = ()
    language: str | None = None
    decision_id: str | None = None
    history: tuple[Transition, ...] = ()
    version: int = 0
    #: what the customer is told now, in their words ("Nobody was free within 2 minutes:
    #: Anna Holm will call you Tue 31 Mar 14:30 CEST."); empty when there is nothing to tell
    notice: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES
