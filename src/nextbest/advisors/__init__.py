"""Expert advisors and callbacks: who may take a hot lead, when, and the callback's life.

Pure core (no I/O; the clock is passed in as a ``Timestamp``):

    model       the vocabulary shared by the core, the stores and the faces: presence, the
                callback's modes and states, the legal transitions, a callback record
    board       what the routing knows of each advisor at a moment (presence, load, rotation,
                bookings), built from the store
    shift       whether an advisor's working hours hold at a moment, in their time zone
    selection   which expert takes a callback now (level, language, load, fair rotation)
    slots       free slots from working hours minus bookings, across time zones and DST
    routing     the state machine driver: request, offer, accept, decline, time out, move to
                a slot, complete, cancel, expire; which callbacks a timer must act on
    card        the advisor card of a decision: the hottest live topic's expert, the reason,
                and what the customer may ask for (now, later, at)
"""

__all__ = ["board", "card", "model", "routing", "selection", "shift", "slots"]
