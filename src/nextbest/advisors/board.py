"""The board: what the routing knows of each advisor at a moment, as the store reports it.

For each advisor: their presence (``available``, ``busy``, ``away``, ``offline``), how many
callbacks they hold now (their load: offered to them, accepted, or on the phone), when they
were last assigned one (the fair rotation), and the slots booked with them (what free slots
are computed around; a booked callback becomes load when its slot comes and it is offered).

The engine builds a board from the store (``board_of``) and keeps it current as it routes
(``AdvisorBoard.moved``): the same rules as the store's, so a board built afresh from the
stored callbacks equals one kept up to date. An advisor the board does not name is offline,
holds nothing and was never assigned: an empty board (``EMPTY_BOARD``) has nobody available,
and every slot of the advisors' working hours free.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import msgspec

from nextbest.advisors.model import FINAL_STATES, Callback, CallbackState, Presence
from nextbest.types import Timestamp

__all__ = ["EMPTY_BOARD", "LIVE_STATES", "AdvisorBoard", "AdvisorState", "Hold", "board_of"]

#: the states in which a callback occupies its advisor now
LIVE_STATES: frozenset[CallbackState] = frozenset(
    {CallbackState.OFFERED, CallbackState.ACCEPTED, CallbackState.CONNECTED}
)


class AdvisorState(msgspec.Struct, frozen=True, gc=False):
    """One advisor on the board."""

    presence: Presence = Presence.OFFLINE
    #: callbacks they hold now: offered to them, accepted, or on the phone
    load: int = 0
    #: when they were last assigned a callback (0: never): the rotation offers the advisor
    #: who has waited longest first
    last_assigned: Timestamp = 0.0


_ABSENT = AdvisorState()


class Hold(NamedTuple):
    """What one callback not final holds of its advisor, and all the board reads of it (the
    store answers these without the callback's record: ``Callbacks.holds``)."""

    id: str
    advisor_id: str | None
    state: CallbackState
    scheduled_for: Timestamp | None


class AdvisorBoard(msgspec.Struct, frozen=True, gc=False):
    """Every advisor's state, and the slots booked with each (sorted starts)."""

    advisors: dict[str, AdvisorState] = {}
    booked: dict[str, tuple[Timestamp, ...]] = {}

    def state(self, advisor_id: str) -> AdvisorState:
        return self.advisors.get(advisor_id, _ABSENT)

    def bookings(self, advisor_id: str) -> tuple[Timestamp, ...]:
        """The starts of the slots booked with the advisor, sorted."""
        return self.booked.get(advisor_id, ())

    def with_presence(self, advisor_id: str, presence: Presence) -> AdvisorBoard:
        """The board once the advisor's presence changed."""
        state = msgspec.structs.replace(self.state(advisor_id), presence=presence)
        return msgspec.structs.replace(self, advisors={**self.advisors, advisor_id: state})

    def moved(self, before: Callback | None, after: Callback) -> AdvisorBoard:
        """The board once ``before`` (None: a new callback) became ``after``: the load and
        the bookings each holds move, and an assignment (the callback gains an advisor, or is
        offered) moves the advisor's rotation to the time of the callback's last step."""
        advisors = dict(self.advisors)
        booked = dict(self.booked)
        if before is not None:
            _count(advisors, booked, before, -1)
        _count(advisors, booked, after, +1)
        assigned = _assignment(before, after)
        if assigned is not None:
            who, at = assigned
            state = advisors.get(who, _ABSENT)
            if at > state.last_assigned:
                advisors[who] = msgspec.structs.replace(state, last_assigned=at)
        return AdvisorBoard(advisors, booked)

    def with_advisor(
        self,
        advisor_id: str,
        holds: Iterable[Hold | Callback],
        presence: Presence,
        last_assigned: Timestamp,
    ) -> AdvisorBoard:
        """The board with ``advisor_id``'s entry read again (their callbacks held, presence
        and rotation, as the store has them now); every other advisor as they were."""
        one = board_of(
            [h for h in holds if h.advisor_id == advisor_id],
            {advisor_id: presence},
            {advisor_id: last_assigned} if last_assigned else {},
        )
        advisors = {**self.advisors, advisor_id: one.state(advisor_id)}
        booked = {**self.booked, advisor_id: one.bookings(advisor_id)}
        return AdvisorBoard(advisors, booked)


#: a board with nobody on it: nobody available, nothing booked
EMPTY_BOARD = AdvisorBoard()


def board_of(
    callbacks: Iterable[Callback | Hold],
    presence: Mapping[str, Presence],
    rotation: Mapping[str, Timestamp],
) -> AdvisorBoard:
    """The board from the callbacks not final (others are ignored; each id once: the live
    ones and the booked ones; records or their ``Hold``), each advisor's presence and when
    each was last assigned (the store's ``presences`` and ``rotation``)."""
    advisors = {
        a: AdvisorState(presence=presence.get(a, Presence.OFFLINE), last_assigned=t)
        for a, t in rotation.items()
    }
    for a, p in presence.items():
        if a not in advisors:
            advisors[a] = AdvisorState(presence=p)
    booked: dict[str, tuple[Timestamp, ...]] = {}
    seen: set[str] = set()
    for c in callbacks:
        if c.id not in seen:
            seen.add(c.id)
            _count(advisors, booked, c, +1)
    return AdvisorBoard(advisors, booked)


def _count(
    advisors: dict[str, AdvisorState],
    booked: dict[str, tuple[Timestamp, ...]],
    c: Callback | Hold,
    sign: int,
) -> None:
    """Add (``sign`` 1) or take away (-1) what ``c`` holds of its advisor."""
    who = c.advisor_id
    if who is None or c.state in FINAL_STATES:
        return
    when = c.scheduled_for
    if c.state in LIVE_STATES:
        state = advisors.get(who, _ABSENT)
        advisors[who] = msgspec.structs.replace(state, load=max(0, state.load + sign))
    if when is not None:
        starts = list(booked.get(who, ()))
        if sign > 0:
            bisect.insort(starts, when)
        elif when in starts:
            starts.remove(when)
        booked[who] = tuple(starts)


def _assignment(before: Callback | None, after: Callback) -> tuple[str, Timestamp] | None:
    """(advisor, when) if ``after`` gives the callback an advisor it did not have, or moves
    it into ``offered``: the store's rule for its rotation (``store.port.Callbacks``)."""
    who = after.advisor_id
    if who is None:
        return None
    gained = before is None or before.advisor_id != who
    offered = after.state is CallbackState.OFFERED and (
        before is None or before.state is not CallbackState.OFFERED
    )
    if not (gained or offered):
        return None
    return who, after.history[-1].at if after.history else after.requested_at
