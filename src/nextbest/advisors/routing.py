"""Routing: the callback's state machine, driven. Pure: a callback, the board, the catalog and
``now`` in; the callback as it is next and the steps it took (``Routed``) out. The caller
persists the callback (its ``history`` holds every step) and appends each step's event.

**Request** (``request``): a new callback's first step, ``requested``; then, by its mode:

- ``now``: offered to the best expert who can take it now (``advisors.selection``), who has
  ``accept_timeout_seconds`` to accept. When nobody can, it waits (the sweeper routes it
  again, and so may a presence change) until ``now_sla_seconds`` after the request, then
  moves to the earliest free slot and the customer is told why (``Callback.notice``); it
  moves at once when no expert is on shift now nor when the SLA ends (nobody can come free).
- ``later``: booked at the earliest free slot of any expert (``advisors.slots``).
- ``at``: booked at the slot that starts at ``scheduled_for`` (the time the customer
  picked): a ValidationError when no slot starts then, SlotTaken when all are booked.

**Declined or lapsed** (``decline``, ``time_out``): back to ``requested`` with the advisor in
``declined_by``, and routed again: on to the next colleague with the same expertise.

**Slot due** (``route`` once ``scheduled_for`` has come): offered to the slot's advisor when
available, else to the best colleague who can take it now; nobody before the slot ends:
``expired``, and the customer is told.

**Advisor and telephony**: ``accept`` (by the advisor it is offered to, before the offer
lapses; the call must then start within ``connect_within_seconds``), ``connect`` (the call
started), ``complete`` (the call ended), ``cancel``,
``expire``. A move the state machine does not allow (``advisors.model.TRANSITIONS``) raises
``errors.Conflict`` and changes nothing.

**Accepted, never connected** (``not_connected``): an accepted callback whose call did not
start by its ``connect_by`` goes back to ``requested`` with its advisor in ``declined_by``
(the step ``Callback Not Connected``) and is routed again: offered to a colleague; a "now"
nobody can take moves to the earliest slot (or expires), the customer told; a booked one
waits for a colleague until its slot ends, then expires, the customer told.

**Timers** (``due``, ``tick``, ``due_at``): which callbacks a sweeper must act on at ``now``,
why, and what acting does.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC
from typing import NamedTuple

import msgspec

from nextbest.advisors.board import AdvisorBoard
from nextbest.advisors.model import (
    Callback,
    CallbackMode,
    CallbackState,
    Presence,
    Transition,
    can_move,
)
from nextbest.advisors.selection import best_expert
from nextbest.advisors.shift import LocalClock, on_shift
from nextbest.advisors.slots import Slot, earliest_slot, local_label, slot_at
from nextbest.catalog.compiled import Catalog, CompiledAdvisor
from nextbest.catalog.model import CallbackPolicy
from nextbest.errors import Conflict, SlotTaken, ValidationError
from nextbest.types import Timestamp

__all__ = [
    "Due",
    "Routed",
    "Timer",
    "accept",
    "cancel",
    "complete",
    "connect",
    "decline",
    "due",
    "due_at",
    "expire",
    "not_connected",
    "offer",
    "request",
    "route",
    "tick",
    "time_out",
]

_REQUESTED = CallbackState.REQUESTED
_OFFERED = CallbackState.OFFERED


class Routed(NamedTuple):
    """A callback as it is after routing, and the steps it took (each also the last of its
    ``history``; none: nothing changed)."""

    callback: Callback
    transitions: tuple[Transition, ...] = ()

    def then(self, after: Routed) -> Routed:
        """This routing followed by ``after`` (routed from this one's callback)."""
        return Routed(after.callback, self.transitions + after.transitions)


class Timer(enum.StrEnum):
    """Why a sweeper must act on a callback."""

    #: an offer nobody accepted in time: on to a colleague
    OFFER_LAPSED = "offer_lapsed"
    #: a booked slot's time came: offer it
    SLOT_CAME = "slot_came"
    #: a "now" nobody took within the SLA: move it to a slot
    SLA_PASSED = "sla_passed"
    #: a "now" waiting for someone to come free (within the SLA): try again
    WAITING = "waiting"
    #: an accepted call that never started within ``connect_within_seconds``: on to a
    #: colleague, or to a slot
    NOT_CONNECTED = "not_connected"


class Due(NamedTuple):
    callback: Callback
    timer: Timer
    #: when it fell due
    since: Timestamp


# ------------------------------------------------------------------------------ the request
def request(callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp) -> Routed:
    """A new callback's first step (``requested``) and its routing by mode (the module
    docstring). ValidationError: no expert in the topic, a time with ``now``, or (``at``) no
    slot starts at ``scheduled_for``; SlotTaken: (``later``, ``at``) no free slot; Conflict:
    not new."""
    if callback.history or callback.state is not _REQUESTED:
        raise Conflict(f"callback {callback.id} was requested already")
    if not catalog.experts.get(callback.topic):
        raise ValidationError(f"no advisor is an expert in {callback.topic!r}", "$.topic")
    if callback.mode is CallbackMode.NOW:
        if callback.scheduled_for is not None:
            raise ValidationError("a call now takes no time: ask for one at a time", "$.time")
        first = Transition(state=_REQUESTED, at=now, reason="call me now")
        asked = Routed(_with_step(callback, first), (first,))
        return asked.then(route(asked.callback, board, catalog, now))
    if callback.mode is CallbackMode.LATER:
        slot = earliest_slot(catalog, callback.topic, board, now, language=callback.language)
        if slot is None:
            raise SlotTaken(
                f"no expert in {callback.topic} has a free slot in the next "
                f"{catalog.callbacks.horizon_days} days"
            )
    else:
        if callback.scheduled_for is None:
            raise ValidationError("a callback at a time needs the time", "$.time")
        slot = slot_at(
            catalog, callback.topic, board, callback.scheduled_for, now, language=callback.language
        )
    return _booked(callback, slot, catalog, now)


def _booked(callback: Callback, slot: Slot, catalog: Catalog, now: Timestamp) -> Routed:
    name, label = _name(catalog, slot.advisor_id), _label(catalog, slot)
    first = Transition(
        state=_REQUESTED,
        at=now,
        advisor_id=slot.advisor_id,
        reason=f"call me {callback.mode.value}: booked {label} with {name}",
        scheduled_for=slot.start,
    )
    booked = _with_step(
        callback,
        first,
        scheduled_for=slot.start,
        advisor_id=slot.advisor_id,
        notice=f"{name} will call you {label}.",
    )
    return Routed(booked, (first,))


# ------------------------------------------------------------------------------ routing
def route(callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp) -> Routed:
    """Route a ``requested`` callback at ``now``: offer it, wait, move it to a slot, or (a
    slot that passed) expire it. Any other state: nothing changes."""
    if callback.state is not _REQUESTED:
        return Routed(callback)
    if callback.scheduled_for is None:
        return _route_now(callback, board, catalog, now)
    return _route_slot(callback, board, catalog, now)


def _route_now(callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp) -> Routed:
    expert = best_expert(
        catalog,
        callback.topic,
        board,
        now,
        language=callback.language,
        declined_by=callback.declined_by,
    )
    if expert is not None:
        return offer(callback, expert, catalog, now)
    deadline = callback.requested_at + catalog.callbacks.now_sla_seconds
    if now < deadline and _may_come_free(catalog, callback, now, deadline):
        return Routed(callback)
    return _to_earliest_slot(callback, board, catalog, now)


def _may_come_free(catalog: Catalog, callback: Callback, now: Timestamp, deadline: float) -> bool:
    """Some expert who has not declined is on shift now or when the SLA ends."""
    clocks = (LocalClock(now), LocalClock(deadline))
    return any(
        a.id not in callback.declined_by and any(on_shift(a, c) for c in clocks)
        for a in catalog.experts.get(callback.topic, ())
    )


def _to_earliest_slot(
    callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp
) -> Routed:
    """A "now" nobody took within the SLA, moved to the earliest free slot (expired when
    there is none), the customer told."""
    policy = catalog.callbacks
    sla = policy.now_sla_seconds
    slot = earliest_slot(catalog, callback.topic, board, now, language=callback.language)
    if slot is None:
        return expire(
            callback,
            now,
            f"nobody free within {sla:g} s, and no free slot in {policy.horizon_days} days",
            notice=f"No advisor is free in the next {policy.horizon_days} days. We are sorry: "
            "please call us, or ask again later.",
        )
    name, label = _name(catalog, slot.advisor_id), _label(catalog, slot)
    step = Transition(
        state=_REQUESTED,
        at=now,
        advisor_id=slot.advisor_id,
        reason=f"nobody free within {sla:g} s: moved to the earliest slot, {label}, with {name}",
        scheduled_for=slot.start,
        rescheduled=True,
    )
    moved = _with_step(
        callback,
        step,
        scheduled_for=slot.start,
        advisor_id=slot.advisor_id,
        offer_expires_at=None,
        declined_by=(),
        notice=f"Nobody was free within {_duration(sla)}: {name} will call you {label}.",
    )
    return Routed(moved, (step,))


def _route_slot(
    callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp
) -> Routed:
    when = callback.scheduled_for
    assert when is not None
    if now < when:
        return Routed(callback)
    if now >= when + catalog.callbacks.slot_minutes * 60.0:
        label = _label(catalog, Slot(when, when, callback.advisor_id or ""), callback.topic)
        return expire(
            callback,
            now,
            f"the slot {label} passed unanswered",
            notice=f"We could not call you {label} as agreed. We are sorry: please pick a "
            "new time.",
        )
    own = catalog.advisors.get(callback.advisor_id) if callback.advisor_id else None
    if (
        own is not None
        and own.id not in callback.declined_by
        and board.state(own.id).presence is Presence.AVAILABLE
    ):
        return offer(callback, own, catalog, now)  # their booking: their capacity holds it
    passed = callback.declined_by + ((own.id,) if own is not None else ())
    colleague = best_expert(
        catalog, callback.topic, board, now, language=callback.language, declined_by=passed
    )
    if colleague is not None:
        return offer(callback, colleague, catalog, now)
    return Routed(callback)  # the sweeper tries again until the slot ends


def offer(callback: Callback, advisor: CompiledAdvisor, catalog: Catalog, now: Timestamp) -> Routed:
    """Offer ``callback`` to ``advisor``, who has ``accept_timeout_seconds`` to accept."""
    timeout = catalog.callbacks.accept_timeout_seconds
    level = advisor.levels.get(callback.topic)
    return _move(
        callback,
        _OFFERED,
        now,
        advisor.id,
        f"offered to {advisor.spec.name} ({callback.topic}, level {level}): {timeout:g} s to "
        "accept",
        advisor_id=advisor.id,
        offer_expires_at=now + timeout,
    )


# ------------------------------------------------------------------------- the advisor's answer
def accept(callback: Callback, advisor_id: str, catalog: Catalog, now: Timestamp) -> Routed:
    """The advisor it is offered to accepts, before the offer lapses."""
    _offered_to(callback, advisor_id)
    lapses = callback.offer_expires_at
    if lapses is not None and now >= lapses:
        raise Conflict(
            f"the offer of callback {callback.id} to {advisor_id} lapsed: it goes to a colleague"
        )
    return _move(
        callback,
        CallbackState.ACCEPTED,
        now,
        advisor_id,
        f"accepted by {_name(catalog, advisor_id)}",
        offer_expires_at=None,
        connect_by=now + catalog.callbacks.connect_within_seconds,
    )


def decline(
    callback: Callback, advisor_id: str, board: AdvisorBoard, catalog: Catalog, now: Timestamp
) -> Routed:
    """The advisor it is offered to declines: on to the next colleague."""
    _offered_to(callback, advisor_id)
    back = _passed_on(callback, advisor_id, f"declined by {_name(catalog, advisor_id)}", now)
    return back.then(route(back.callback, board, catalog, now))


def time_out(callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp) -> Routed:
    """The offer lapsed unanswered: on to the next colleague."""
    lapses = callback.offer_expires_at
    if callback.state is not _OFFERED or lapses is None or now < lapses:
        raise Conflict(f"callback {callback.id} has no offer that lapsed by then")
    advisor_id = callback.advisor_id or ""
    timeout = catalog.callbacks.accept_timeout_seconds
    reason = f"{_name(catalog, advisor_id)} did not accept within {timeout:g} s"
    back = _passed_on(callback, advisor_id, reason, now)
    return back.then(route(back.callback, board, catalog, now))


def not_connected(
    callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp
) -> Routed:
    """An accepted callback whose call did not start by its ``connect_by``: back to the
    queue (the step ``Callback Not Connected``) and routed again without its advisor (the
    module docstring); the customer told when it moves to a slot or expires."""
    deadline = callback.connect_by
    if callback.state is not CallbackState.ACCEPTED or deadline is None or now < deadline:
        raise Conflict(f"callback {callback.id} has no accepted call overdue by then")
    advisor_id = callback.advisor_id or ""
    within = _duration(catalog.callbacks.connect_within_seconds)
    reason = f"accepted by {_name(catalog, advisor_id)}, but the call did not start within {within}"
    back = _passed_on(callback, advisor_id, reason, now, not_connected=True)
    routed = back.then(route(back.callback, board, catalog, now))
    after = routed.callback
    if after.state is _REQUESTED and after.scheduled_for is not None and after.advisor_id:
        slot = Slot(after.scheduled_for, after.scheduled_for, after.advisor_id)
        name, label = _name(catalog, after.advisor_id), _label(catalog, slot)
        if after.scheduled_for != callback.scheduled_for:  # moved to a new slot: say so
            told = f"Our call to you did not go through: {name} will call you {label}."
            routed = Routed(msgspec.structs.replace(after, notice=told), routed.transitions)
    return routed


def _passed_on(
    callback: Callback,
    advisor_id: str,
    reason: str,
    now: Timestamp,
    *,
    not_connected: bool = False,
) -> Routed:
    """Back to ``requested``, ``advisor_id`` remembered in ``declined_by`` (a step passed
    on: its event is ``Callback Declined``, or ``Callback Not Connected``)."""
    moved = _move(
        callback,
        _REQUESTED,
        now,
        advisor_id,
        reason,
        advisor_id=None,
        offer_expires_at=None,
        connect_by=None,
        declined_by=(*callback.declined_by, advisor_id),
    )
    step = msgspec.structs.replace(
        moved.transitions[0], passed_on=not not_connected, not_connected=not_connected
    )
    passed = msgspec.structs.replace(moved.callback, history=(*callback.history, step))
    return Routed(passed, (step,))


def _offered_to(callback: Callback, advisor_id: str) -> None:
    """Conflict unless ``callback`` is offered to ``advisor_id``."""
    if callback.state is not _OFFERED:
        raise Conflict(f"callback {callback.id} is {callback.state.value}, not offered")
    if callback.advisor_id != advisor_id:
        raise Conflict(f"callback {callback.id} is offered to another advisor, not {advisor_id}")


# ------------------------------------------------------------------------------ telephony and ends
def connect(callback: Callback, now: Timestamp) -> Routed:
    """The telephony system reports the call started."""
    return _move(
        callback,
        CallbackState.CONNECTED,
        now,
        callback.advisor_id,
        "the call started",
        connect_by=None,
    )


def complete(callback: Callback, now: Timestamp, *, advisor_id: str | None = None) -> Routed:
    """The call ended. From ``accepted`` (no report of its start) it is ``connected`` first:
    an advisor who completes a call had it. Conflict when ``advisor_id`` is not its
    advisor's."""
    if advisor_id is not None and callback.advisor_id != advisor_id:
        raise Conflict(f"callback {callback.id} is not with advisor {advisor_id}")
    started = Routed(callback)
    if callback.state is CallbackState.ACCEPTED:
        started = _move(
            callback,
            CallbackState.CONNECTED,
            now,
            callback.advisor_id,
            "the call was had",
            connect_by=None,
        )
    done = _move(
        started.callback, CallbackState.COMPLETED, now, callback.advisor_id, "the call ended"
    )
    return started.then(done)


def cancel(callback: Callback, now: Timestamp, reason: str = "cancelled by the customer") -> Routed:
    """Withdrawn by the customer (or the bank): any state but a final one."""
    return _move(
        callback,
        CallbackState.CANCELLED,
        now,
        None,
        reason,
        offer_expires_at=None,
        connect_by=None,
        notice="",
    )


def expire(callback: Callback, now: Timestamp, reason: str, *, notice: str = "") -> Routed:
    """Nobody took it in time; ``notice``: what the customer is told."""
    return _move(
        callback,
        CallbackState.EXPIRED,
        now,
        None,
        reason,
        offer_expires_at=None,
        connect_by=None,
        notice=notice,
    )


# ------------------------------------------------------------------------------ timers
def due_at(callback: Callback, policy: CallbackPolicy) -> tuple[Timer, Timestamp] | None:
    """The timer a sweeper must act on for ``callback``, and from when (None: none, until
    someone acts): an offer lapses, a slot comes, a "now" waits until its SLA passes."""
    if callback.state is _OFFERED and callback.offer_expires_at is not None:
        return Timer.OFFER_LAPSED, callback.offer_expires_at
    if callback.state is CallbackState.ACCEPTED and callback.connect_by is not None:
        return Timer.NOT_CONNECTED, callback.connect_by
    if callback.state is not _REQUESTED:
        return None
    if callback.scheduled_for is not None:
        return Timer.SLOT_CAME, callback.scheduled_for
    return Timer.WAITING, callback.requested_at


def due(callbacks: Iterable[Callback], policy: CallbackPolicy, now: Timestamp) -> list[Due]:
    """The callbacks a sweeper must act on at ``now`` (``tick`` each), by when they fell due,
    then id: lapsed offers, slots that came, and "now" callbacks still to be offered (past
    their SLA: to be moved to a slot)."""
    found: list[Due] = []
    for c in callbacks:
        timer = due_at(c, policy)
        if timer is None or timer[1] > now:
            continue
        kind, since = timer
        if kind is Timer.WAITING and now >= c.requested_at + policy.now_sla_seconds:
            kind, since = Timer.SLA_PASSED, c.requested_at + policy.now_sla_seconds
        found.append(Due(c, kind, since))
    found.sort(key=lambda d: (d.since, d.callback.id))
    return found


def tick(callback: Callback, board: AdvisorBoard, catalog: Catalog, now: Timestamp) -> Routed:
    """What a timer does at ``now``: a lapsed offer goes on to a colleague, as does an
    accepted call that never started; a requested callback is routed (offered, moved to a
    slot, expired, or left waiting); anything else is left as it is."""
    lapses = callback.offer_expires_at
    if callback.state is _OFFERED and lapses is not None and now >= lapses:
        return time_out(callback, board, catalog, now)
    overdue = callback.connect_by
    if callback.state is CallbackState.ACCEPTED and overdue is not None and now >= overdue:
        return not_connected(callback, board, catalog, now)
    return route(callback, board, catalog, now)


# ------------------------------------------------------------------------------ steps
def _with_step(callback: Callback, step: Transition, **changes: object) -> Callback:
    return msgspec.structs.replace(callback, history=(*callback.history, step), **changes)


def _move(
    callback: Callback,
    target: CallbackState,
    now: Timestamp,
    who: str | None,
    reason: str,
    **changes: object,
) -> Routed:
    """``callback`` moved to ``target`` (``who``: the advisor the step concerns), or
    Conflict when the state machine does not allow it."""
    if not can_move(callback.state, target):
        raise Conflict(
            f"callback {callback.id} is {callback.state.value}: it cannot become {target.value}"
        )
    step = Transition(state=target, at=now, advisor_id=who, reason=reason)
    return Routed(_with_step(callback, step, state=target, **changes), (step,))


def _name(catalog: Catalog, advisor_id: str) -> str:
    advisor = catalog.advisors.get(advisor_id)
    return advisor.spec.name if advisor is not None else advisor_id


def _label(catalog: Catalog, slot: Slot, topic: str = "") -> str:
    """The slot's start as its advisor's clock shows it (no advisor: as the topic's first
    expert's does, else in UTC)."""
    advisor = catalog.advisors.get(slot.advisor_id)
    if advisor is None:
        experts = catalog.experts.get(topic, ())
        return local_label(slot.start, experts[0].zone if experts else UTC)
    return local_label(slot.start, advisor.zone)


def _duration(seconds: float) -> str:
    if seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "a minute" if minutes == 1 else f"{minutes} minutes"
    return f"{seconds:g} seconds"
