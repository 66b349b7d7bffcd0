"""What every backend of the callback queue (``port.Callbacks``) decides alike: which
writes are refused, which book an advisor, which assign one, and how a callback is encoded.

The backends only count and write; the rules are here once, so the in-memory twin, SQLite
and PostgreSQL refuse and book exactly the same writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from nextbest.advisors.model import FINAL_STATES, Callback, CallbackState, Presence, can_move
from nextbest.errors import Conflict, InFlight, NotFound, SlotTaken
from nextbest.store.port import Capacity

__all__ = [
    "COLUMNS",
    "FINAL",
    "LIVE",
    "LIVE_STATES",
    "QUEUE_ORDER",
    "Checks",
    "assignment",
    "booked",
    "check_capacity",
    "checks",
    "decode",
    "encode",
    "in_flight",
    "in_flight_refusal",
    "in_slot",
    "live",
    "presences_of",
    "refused",
    "rotation_of",
    "row_of",
    "slot_taken",
    "stored_as",
    "timer_of",
]

#: the states in which a callback occupies its advisor right now
LIVE_STATES: frozenset[CallbackState] = frozenset(
    {CallbackState.OFFERED, CallbackState.ACCEPTED, CallbackState.CONNECTED}
)
#: the same as the texts the SQL backends store, sorted (stable statements)
LIVE: tuple[str, ...] = tuple(sorted(s.value for s in LIVE_STATES))
FINAL: tuple[str, ...] = tuple(sorted(s.value for s in FINAL_STATES))

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Callback).decode

#: the columns of the SQL backends' ``callbacks`` table, in the order ``row_of`` gives them
COLUMNS = (
    "id, customer, advisor_id, state, requested_at, scheduled_for, offer_expires_at, version, body"
)
#: the order of an advisor's queue in SQL (``scheduled_for``, else ``requested_at``; then id)
QUEUE_ORDER = "ORDER BY COALESCE(scheduled_for, requested_at), id"


def timer_of(c: Callback) -> float | None:
    """When the callback's timer runs out: an offer's lapse (``offered``), an accepted
    call's ``connect_by`` (``accepted``); None otherwise. The SQL backends keep it in the
    column ``offer_expires_at`` (named for its first use)."""
    if c.state is CallbackState.OFFERED:
        return c.offer_expires_at
    if c.state is CallbackState.ACCEPTED:
        return c.connect_by
    return None


def row_of(c: Callback) -> tuple[Any, ...]:
    """A callback as the SQL backends' ``COLUMNS`` hold it (the record itself in ``body``;
    ``offer_expires_at`` holds its timer, ``timer_of``)."""
    return (
        c.id,
        c.customer,
        c.advisor_id,
        c.state.value,
        c.requested_at,
        c.scheduled_for,
        timer_of(c),
        c.version,
        encode(c),
    )


def presences_of(rows: Iterable[Any]) -> dict[str, tuple[Presence, float]]:
    """Rows (advisor, presence, at) as ``Callbacks.presences`` answers them."""
    return {str(a): (Presence(p), float(at)) for a, p, at in rows}


def rotation_of(rows: Iterable[Any]) -> dict[str, float]:
    """Rows (advisor, last assigned at) as ``Callbacks.rotation`` answers them."""
    return {str(a): float(at) for a, at in rows}


def live(c: Callback) -> bool:
    """``c`` occupies its advisor now (offered to, accepted by, or on the phone with)."""
    return c.advisor_id is not None and c.state in LIVE_STATES


def booked(c: Callback) -> bool:
    """``c`` holds a slot of its advisor (scheduled, not final)."""
    return c.advisor_id is not None and c.scheduled_for is not None and not c.final


def in_slot(other: float, scheduled_for: float, slot: float) -> bool:
    """A booking at ``other`` overlaps one at ``scheduled_for``, both ``slot`` seconds long
    (the same instant always does)."""
    return other == scheduled_for or scheduled_for - slot < other < scheduled_for + slot


class Checks(NamedTuple):
    """What a write given a ``Capacity`` must count before it may happen."""

    live: bool  #: the callback becomes live with its advisor
    slot: bool  #: the callback books a slot of its advisor

    def __bool__(self) -> bool:
        return self.live or self.slot


def checks(before: Callback | None, after: Callback) -> Checks:
    """Which holds ``after`` takes anew over ``before`` (None: a create)."""
    same_advisor = before is not None and before.advisor_id == after.advisor_id
    new_live = live(after) and not (same_advisor and before is not None and live(before))
    new_slot = booked(after) and not (
        same_advisor
        and before is not None
        and booked(before)
        and before.scheduled_for == after.scheduled_for
    )
    return Checks(new_live, new_slot)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def slot_taken(
    callback: Callback, capacity: Capacity, live_others: int, slot_others: int, needed: Checks
) -> SlotTaken | None:
    """The refusal of a write past ``capacity`` given the advisor's other callbacks counted
    (live ones, booked ones in the slot), or None when it fits."""
    advisor = callback.advisor_id
    if needed.live and live_others >= capacity.limit:
        return SlotTaken(
            f"advisor {advisor} holds {live_others} live callback(s), their capacity "
            f"({capacity.limit}): callback {callback.id} cannot be theirs now"
        )
    if needed.slot and slot_others >= capacity.limit and callback.scheduled_for is not None:
        return SlotTaken(
            f"advisor {advisor} is booked {slot_others} time(s) within {capacity.slot:g} s of "
            f"{_when(callback.scheduled_for)}, their capacity ({capacity.limit}): the slot is "
            "taken"
        )
    return None


def check_capacity(
    before: Callback | None,
    after: Callback,
    capacity: Capacity | None,
    count_live: Callable[[str], int],
    count_slot: Callable[[str, float, float], int],
) -> None:
    """Raise ``SlotTaken`` if writing ``after`` over ``before`` (None: a create) takes its
    advisor past ``capacity``. The backend counts the advisor's other callbacks:
    ``count_live(advisor)`` the live ones, ``count_slot(advisor, at, slot)`` the ones booked
    within ``slot`` seconds of ``at`` (``in_slot``); each is asked only when the write needs
    it."""
    needed = checks(before, after)
    advisor = after.advisor_id
    if capacity is None or not needed or advisor is None:
        return
    live_others = count_live(advisor) if needed.live else 0
    slot_others = 0
    if needed.slot and after.scheduled_for is not None:
        slot_others = count_slot(advisor, after.scheduled_for, capacity.slot)
    refusal = slot_taken(after, capacity, live_others, slot_others, needed)
    if refusal is not None:
        raise refusal


def in_flight(callback: Callback, others: Iterable[Callback]) -> InFlight | None:
    """The refusal of creating ``callback`` when another callback of its customer
    (``others``: theirs) about its topic is not final: one in flight per topic."""
    for c in others:
        if c.id != callback.id and c.topic == callback.topic and not c.final:
            return in_flight_refusal(callback, c.id)
    return None


def in_flight_refusal(callback: Callback, held: str | None) -> InFlight:
    return InFlight(
        f"customer {callback.customer} has callback {held or '(another)'} about "
        f"{callback.topic} in flight: callback {callback.id} is not created",
        held,
    )


def refused(
    stored: Callback | None, callback: Callback, expected_version: int
) -> NotFound | Conflict | None:
    """Why a compare-and-set of ``callback`` over ``stored`` is refused, or None."""
    if stored is None:
        return NotFound(f"no callback {callback.id}")
    if stored.customer != callback.customer:
        return Conflict(f"callback {callback.id} belongs to another customer")
    if stored.version != expected_version:
        return Conflict(
            f"callback {callback.id} changed meanwhile: it is at version {stored.version}, "
            f"not {expected_version}; read it again"
        )
    if callback.history[: len(stored.history)] != stored.history:
        return Conflict(
            f"callback {callback.id}: a save keeps every transition persisted before and adds "
            f"after them ({len(stored.history)} held, the save's history differs)"
        )
    # the states the save passes through: each step it adds (one save may hold several: a
    # decline and the offer to a colleague, a call had and ended), or its own state
    added = callback.history[len(stored.history) :]
    path = [t.state for t in added] if added else [callback.state]
    state = stored.state
    for target in path:
        if target != state and not can_move(state, target):
            return Conflict(f"callback {callback.id} is {state}: it cannot become {target}")
        state = target
    if state != callback.state:
        return Conflict(
            f"callback {callback.id}: its last transition is {state}, its state {callback.state}"
        )
    return None


def stored_as(callback: Callback, version: int) -> Callback:
    return msgspec.structs.replace(callback, version=version)


def assignment(before: Callback | None, after: Callback) -> tuple[str, float] | None:
    """(advisor, when) if writing ``after`` over ``before`` assigns the callback: gives it an
    advisor it did not have, or moves it into ``offered``. When: its last transition's time
    (its ``requested_at`` without history)."""
    advisor = after.advisor_id
    if advisor is None:
        return None
    gained = before is None or before.advisor_id != advisor
    offered = after.state is CallbackState.OFFERED and (
        before is None or before.state is not CallbackState.OFFERED
    )
    if not (gained or offered):
        return None
    return advisor, after.history[-1].at if after.history else after.requested_at
