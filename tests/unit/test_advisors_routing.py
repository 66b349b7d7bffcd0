"""The callback's state machine, driven: "call me now" offered to the best expert, declined
or timed out on to a colleague, moved to the earliest slot past the SLA (the customer told),
"later" and "at" booked and offered when due, the advisor's and the telephony's moves, the
timers a sweeper acts on, and every illegal move refused with a Conflict."""

from __future__ import annotations

import random

import msgspec
import pytest

from nextbest.advisors.board import AdvisorBoard, AdvisorState, board_of
from nextbest.advisors.model import (
    TRANSITIONS,
    Callback,
    CallbackMode,
    CallbackState,
    Presence,
)
from nextbest.advisors.routing import (
    Routed,
    Timer,
    accept,
    cancel,
    complete,
    connect,
    decline,
    due,
    due_at,
    expire,
    not_connected,
    offer,
    request,
    route,
    tick,
    time_out,
)
from nextbest.errors import Conflict, SlotTaken, ValidationError
from tests.unit.advisor_bank import LDN, advisor, at, available, bank, board, callback

CATALOG = bank(
    [
        advisor("anna", {"mortgage": 5}),
        advisor("james", {"mortgage": 4}, languages=("en",), zone=LDN),
        advisor("carl", {"mortgage": 3}),
        advisor("bo", {"pension": 5}),
    ]
)
POLICY = CATALOG.callbacks
#: a Tuesday, 10:00 in Copenhagen, 09:00 in London
T = at("2026-03-24T10:00:00+01:00")
EVERYONE = available("anna", "james", "carl", "bo")


def now_request(at_: float = T, **fields: object) -> Callback:
    return callback(requested_at=at_, **fields)  # type: ignore[arg-type]


def steps(routed: Routed) -> list[tuple[str, str | None]]:
    return [(t.state.value, t.advisor_id) for t in routed.transitions]


# ------------------------------------------------------------------ call me now


def test_now_is_offered_to_the_best_expert_with_an_acceptance_timeout() -> None:
    routed = request(now_request(), EVERYONE, CATALOG, T)
    cb = routed.callback
    assert steps(routed) == [("requested", None), ("offered", "anna")]
    assert [t.event for t in routed.transitions] == ["Callback Requested", "Callback Assigned"]
    assert (cb.state, cb.advisor_id, cb.offer_expires_at) == (CallbackState.OFFERED, "anna", T + 30)
    assert cb.history == routed.transitions
    assert routed.transitions[1].reason == "offered to Anna (mortgage, level 5): 30 s to accept"


def test_declined_goes_to_the_next_colleague_with_the_same_expertise() -> None:
    offered = request(now_request(), EVERYONE, CATALOG, T).callback
    routed = decline(offered, "anna", EVERYONE, CATALOG, T + 5)
    assert steps(routed) == [("requested", "anna"), ("offered", "james")]
    assert routed.transitions[0].reason == "declined by Anna"
    # passed on, not asked again: the customer asked once
    assert [t.event for t in routed.transitions] == ["Callback Declined", "Callback Assigned"]
    assert routed.callback.history[-2].passed_on
    cb = routed.callback
    assert (cb.declined_by, cb.advisor_id, cb.offer_expires_at) == (("anna",), "james", T + 35)
    again = decline(cb, "james", EVERYONE, CATALOG, T + 10)
    assert again.callback.advisor_id == "carl"
    assert again.callback.declined_by == ("anna", "james")


def test_a_lapsed_offer_is_re_routed_by_the_timer() -> None:
    offered = request(now_request(), EVERYONE, CATALOG, T).callback
    assert due([offered], POLICY, T + 29) == []
    (found,) = due([offered], POLICY, T + 30)
    assert (found.timer, found.since) == (Timer.OFFER_LAPSED, T + 30)
    routed = tick(offered, EVERYONE, CATALOG, T + 31)
    assert steps(routed) == [("requested", "anna"), ("offered", "james")]
    assert routed.transitions[0].reason == "Anna did not accept within 30 s"
    with pytest.raises(Conflict, match="no offer that lapsed"):
        time_out(offered, EVERYONE, CATALOG, T + 10)


def test_accept_only_by_the_advisor_offered_to_and_before_the_offer_lapses() -> None:
    offered = request(now_request(), EVERYONE, CATALOG, T).callback
    with pytest.raises(Conflict, match="offered to another advisor, not carl"):
        accept(offered, "carl", CATALOG, T + 5)
    with pytest.raises(Conflict, match="lapsed"):
        accept(offered, "anna", CATALOG, T + 30)
    routed = accept(offered, "anna", CATALOG, T + 5)
    assert steps(routed) == [("accepted", "anna")]
    assert routed.callback.offer_expires_at is None
    with pytest.raises(Conflict, match="is accepted, not offered"):
        decline(routed.callback, "anna", EVERYONE, CATALOG, T + 6)


def test_an_accepted_call_that_never_starts_goes_to_a_colleague() -> None:
    offered = request(now_request(), EVERYONE, CATALOG, T).callback
    accepted = accept(offered, "anna", CATALOG, T + 5).callback
    assert accepted.connect_by == T + 5 + POLICY.connect_within_seconds == T + 605
    assert due([accepted], POLICY, T + 604) == []
    (found,) = due([accepted], POLICY, T + 605)
    assert (found.timer, found.since) == (Timer.NOT_CONNECTED, T + 605)
    with pytest.raises(Conflict, match="no accepted call overdue"):
        not_connected(accepted, EVERYONE, CATALOG, T + 604)
    routed = tick(accepted, EVERYONE, CATALOG, T + 606)
    assert steps(routed) == [("requested", "anna"), ("offered", "james")]
    back = routed.transitions[0]
    assert back.event == "Callback Not Connected"
    assert (back.not_connected, back.passed_on) == (True, False)
    assert back.reason == "accepted by Anna, but the call did not start within 10 minutes"
    cb = routed.callback
    assert (cb.declined_by, cb.connect_by, cb.offer_expires_at) == (("anna",), None, T + 636)
    # a call that started has no such timer; nor has one that ended
    started = connect(accepted, T + 60).callback
    assert started.connect_by is None
    assert due([started], POLICY, T + 10_000) == []
    assert tick(started, EVERYONE, CATALOG, T + 10_000).transitions == ()
    assert cancel(accepted, T + 7).callback.connect_by is None


def test_an_accepted_call_that_never_starts_with_nobody_else_free_moves_to_a_slot() -> None:
    offered = request(now_request(), EVERYONE, CATALOG, T).callback
    accepted = accept(offered, "anna", CATALOG, T + 5).callback
    nobody = board(anna="available", james="busy", carl="away")
    routed = tick(accepted, nobody, CATALOG, T + 700)
    assert [t.event for t in routed.transitions] == [
        "Callback Not Connected",
        "Callback Scheduled",
    ]
    cb = routed.callback
    assert cb.state is CallbackState.REQUESTED
    assert cb.scheduled_for is not None
    assert cb.advisor_id is not None
    assert cb.notice.startswith("Our call to you did not go through: ")
    assert "will call you" in cb.notice


def test_a_booked_call_never_started_waits_for_a_colleague_then_expires_with_a_notice() -> None:
    booked = request(now_request(mode=CallbackMode.LATER), EVERYONE, CATALOG, T).callback
    slot = booked.scheduled_for
    assert slot is not None
    offered = tick(booked, EVERYONE, CATALOG, slot).callback
    accepted = accept(offered, "anna", CATALOG, slot + 10).callback
    overdue = slot + 10 + POLICY.connect_within_seconds
    alone = board(anna="available")
    back = tick(accepted, alone, CATALOG, overdue)
    assert steps(back) == [("requested", "anna")]  # nobody else: it waits in its slot
    assert back.callback.scheduled_for == slot
    assert back.callback.notice == booked.notice  # still the slot the customer was told
    colleague = tick(back.callback, board(james="available"), CATALOG, overdue + 30)
    assert steps(colleague) == [("offered", "james")]
    gone = tick(back.callback, alone, CATALOG, slot + 1_800)
    assert steps(gone) == [("expired", None)]
    assert gone.callback.notice.startswith("We could not call you")


def test_connect_and_complete() -> None:
    offered = request(now_request(), EVERYONE, CATALOG, T).callback
    accepted = accept(offered, "anna", CATALOG, T + 5).callback
    connected = connect(accepted, T + 20)
    done = complete(connected.callback, T + 400, advisor_id="anna")
    assert steps(done) == [("completed", "anna")]
    assert done.transitions[0].event == "Callback Completed"
    assert done.callback.final
    # an advisor who completes a call nobody reported started had it: connected, completed
    direct = complete(accepted, T + 400)
    assert steps(direct) == [("connected", "anna"), ("completed", "anna")]
    with pytest.raises(Conflict, match="not with advisor carl"):
        complete(connected.callback, T + 400, advisor_id="carl")


def test_a_busy_expert_s_callback_waits_then_moves_to_the_earliest_slot_past_the_sla() -> None:
    busy = board(anna="busy", james="away", carl="busy")
    asked = request(now_request(), busy, CATALOG, T)
    assert steps(asked) == [("requested", None)]  # waits: someone may come free
    assert due([asked.callback], POLICY, T + 60)[0].timer is Timer.WAITING
    assert tick(asked.callback, busy, CATALOG, T + 60).transitions == ()
    # carl comes free within the SLA: offered to him
    freed = tick(asked.callback, board(anna="busy", carl="available"), CATALOG, T + 90)
    assert steps(freed) == [("offered", "carl")]
    # nobody within the SLA: the earliest slot, the customer told
    (late,) = due([asked.callback], POLICY, T + 120)
    assert (late.timer, late.since) == (Timer.SLA_PASSED, T + 120)
    moved = tick(asked.callback, busy, CATALOG, T + 120)
    (step,) = moved.transitions
    cb = moved.callback
    assert (step.state, step.rescheduled, step.event) == (
        CallbackState.REQUESTED,
        True,
        "Callback Scheduled",
    )
    slot = at("2026-03-24T10:30:00+01:00")  # 10:02 + 15 minutes' lead: the 10:30 slot
    assert (cb.state, cb.scheduled_for, cb.advisor_id) == (CallbackState.REQUESTED, slot, "anna")
    assert step.scheduled_for == slot
    assert step.reason == (
        "nobody free within 120 s: moved to the earliest slot, Tue 24 Mar 10:30 CET, with Anna"
    )
    assert cb.notice == "Nobody was free within 2 minutes: Anna will call you Tue 24 Mar 10:30 CET."


def test_now_with_nobody_on_shift_moves_at_once_to_the_next_morning() -> None:
    evening = at("2026-03-24T19:00:00+01:00")  # 18:00 in London: everyone has gone home
    routed = request(now_request(evening), EVERYONE, CATALOG, evening)
    assert [t.event for t in routed.transitions] == ["Callback Requested", "Callback Scheduled"]
    assert routed.callback.scheduled_for == at("2026-03-25T09:00:00+01:00")
    assert routed.callback.advisor_id == "anna"


def test_now_when_every_expert_declined_moves_to_a_slot_at_once() -> None:
    offered = request(now_request(), available("anna"), CATALOG, T).callback
    routed = decline(offered, "anna", available("anna"), CATALOG, T + 5)
    # James and Carl are on shift but not available; only Anna could, and she declined
    assert steps(routed)[0] == ("requested", "anna")
    waiting = routed.callback
    assert waiting.scheduled_for is None  # james and carl may come free within the SLA
    all_declined = msgspec.structs.replace(waiting, declined_by=("anna", "james", "carl"))
    moved = route(all_declined, EVERYONE, CATALOG, T + 6)
    assert moved.transitions[0].rescheduled
    assert moved.callback.declined_by == ()  # a new time, a new chance for everyone


def test_no_free_slot_in_the_horizon_expires_with_a_notice() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5}, weekly={})])  # never works
    routed = request(now_request(), EVERYONE, catalog, T)
    cb = routed.callback
    assert cb.state is CallbackState.EXPIRED
    assert cb.notice.startswith("No advisor is free in the next 14 days")


# ------------------------------------------------------------------ later and at


def test_later_books_the_earliest_free_slot() -> None:
    routed = request(now_request(mode=CallbackMode.LATER), EVERYONE, CATALOG, T)
    cb = routed.callback
    (step,) = routed.transitions
    slot = at("2026-03-24T10:30:00+01:00")
    assert (cb.state, cb.scheduled_for, cb.advisor_id) == (CallbackState.REQUESTED, slot, "anna")
    assert (step.event, step.scheduled_for, step.rescheduled) == ("Callback Requested", slot, False)
    assert cb.notice == "Anna will call you Tue 24 Mar 10:30 CET."


def test_at_books_the_picked_time_or_says_why_not() -> None:
    eleven = at("2026-03-24T11:00:00+01:00")
    picked = now_request(mode=CallbackMode.AT, scheduled_for=eleven)
    routed = request(picked, EVERYONE, CATALOG, T)
    assert (routed.callback.scheduled_for, routed.callback.advisor_id) == (eleven, "anna")
    # anna booked at eleven: James (level 4; 10:00 in London), then Carl (level 3)
    taken = AdvisorBoard(booked={"anna": (eleven,)})
    assert request(picked, taken, CATALOG, T).callback.advisor_id == "james"
    taken = AdvisorBoard(booked={"anna": (eleven,), "james": (eleven,)})
    assert request(picked, taken, CATALOG, T).callback.advisor_id == "carl"
    full = AdvisorBoard(booked={"anna": (eleven,), "james": (eleven,), "carl": (eleven,)})
    with pytest.raises(SlotTaken):
        request(picked, full, CATALOG, T)
    with pytest.raises(ValidationError, match="slot starting then"):
        request(msgspec.structs.replace(picked, scheduled_for=eleven + 60), EVERYONE, CATALOG, T)
    with pytest.raises(ValidationError, match="needs the time"):
        request(now_request(mode=CallbackMode.AT), EVERYONE, CATALOG, T)
    with pytest.raises(ValidationError, match="a call now takes no time"):
        request(now_request(scheduled_for=eleven), EVERYONE, CATALOG, T)


def test_a_topic_without_experts_is_refused() -> None:
    with pytest.raises(ValidationError, match="no advisor is an expert in 'cards'") as raised:
        request(now_request(topic="cards"), EVERYONE, CATALOG, T)
    assert raised.value.path == "$.topic"
    with pytest.raises(Conflict, match="requested already"):
        request(request(now_request(), EVERYONE, CATALOG, T).callback, EVERYONE, CATALOG, T)


def test_a_booked_slot_is_offered_to_its_advisor_when_due() -> None:
    booked = request(now_request(mode=CallbackMode.LATER), EVERYONE, CATALOG, T).callback
    slot = booked.scheduled_for
    assert slot is not None
    assert due([booked], POLICY, slot - 1) == []
    assert route(booked, EVERYONE, CATALOG, slot - 1).transitions == ()
    (found,) = due([booked], POLICY, slot)
    assert found.timer is Timer.SLOT_CAME
    # her own booking counts in her load: she is offered it all the same
    loaded = AdvisorBoard({"anna": AdvisorState(Presence.AVAILABLE, load=1)})
    routed = tick(booked, loaded, CATALOG, slot)
    assert steps(routed) == [("offered", "anna")]


def test_a_booked_slot_goes_to_a_colleague_when_its_advisor_is_away() -> None:
    booked = request(now_request(mode=CallbackMode.LATER), EVERYONE, CATALOG, T).callback
    slot = booked.scheduled_for
    assert slot is not None
    routed = tick(booked, board(anna="away", james="available"), CATALOG, slot + 60)
    assert steps(routed) == [("offered", "james")]
    # declined by james, nobody else: it waits for the rest of the slot, then expires
    back = decline(routed.callback, "james", board(anna="away"), CATALOG, slot + 70)
    assert steps(back) == [("requested", "james")]
    assert back.callback.advisor_id is None
    assert tick(back.callback, board(anna="away"), CATALOG, slot + 600).transitions == ()
    gone = tick(back.callback, board(anna="away"), CATALOG, slot + 1800)
    assert steps(gone) == [("expired", None)]
    assert gone.transitions[0].reason == "the slot Tue 24 Mar 10:30 CET passed unanswered"
    assert gone.callback.notice.startswith("We could not call you")


def test_cancel_from_any_state_but_a_final_one() -> None:
    offered = request(now_request(), EVERYONE, CATALOG, T).callback
    cancelled = cancel(offered, T + 1)
    assert steps(cancelled) == [("cancelled", None)]
    assert cancelled.callback.offer_expires_at is None
    with pytest.raises(Conflict, match="is cancelled: it cannot become cancelled"):
        cancel(cancelled.callback, T + 2)
    assert due([cancelled.callback], POLICY, T + 1_000) == []


# ------------------------------------------------------------------ illegal moves


def _in_state(state: CallbackState) -> Callback:
    """A callback in ``state``, with an advisor and a live offer where that makes sense."""
    return now_request(
        state=state,
        advisor_id="anna",
        offer_expires_at=T + 30 if state is CallbackState.OFFERED else None,
        connect_by=T if state is CallbackState.ACCEPTED else None,
    )


_MOVES = {
    CallbackState.OFFERED: lambda c: offer(c, CATALOG.advisors["carl"], CATALOG, T),
    CallbackState.ACCEPTED: lambda c: accept(c, "anna", CATALOG, T),
    CallbackState.REQUESTED: lambda c: (
        not_connected(c, EVERYONE, CATALOG, T)
        if c.state is CallbackState.ACCEPTED
        else decline(c, "anna", EVERYONE, CATALOG, T)
    ),
    CallbackState.CONNECTED: lambda c: connect(c, T),
    CallbackState.COMPLETED: lambda c: complete(c, T),
    CallbackState.CANCELLED: lambda c: cancel(c, T),
    CallbackState.EXPIRED: lambda c: expire(c, T, "test"),
}


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (s, t)
        for s in CallbackState
        for t in CallbackState
        if t not in TRANSITIONS[s]
        # completing an accepted call goes through connected (two legal moves)
        and (s, t) != (CallbackState.ACCEPTED, CallbackState.COMPLETED)
    ],
    ids=str,
)
def test_every_illegal_move_is_a_conflict(source: CallbackState, target: CallbackState) -> None:
    before = _in_state(source)
    with pytest.raises(Conflict):
        _MOVES[target](before)


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s in CallbackState for t in TRANSITIONS[s]],
    ids=str,
)
def test_every_legal_move_is_made(source: CallbackState, target: CallbackState) -> None:
    routed = _MOVES[target](_in_state(source))
    assert routed.transitions[0].state is target


def test_conflict_is_a_409() -> None:
    from nextbest.api.errors import status_of

    assert status_of(Conflict("x")) == 409
    assert status_of(SlotTaken("x")) == 409


# ------------------------------------------------------------------ timers and the board


def test_due_at_and_due_order() -> None:
    a = request(now_request(ident="a"), EVERYONE, CATALOG, T).callback  # offered, lapses T+30
    b = request(
        callback("b", mode=CallbackMode.LATER, requested_at=T), EVERYONE, CATALOG, T
    ).callback
    c = request(callback("c", requested_at=T), board(anna="busy"), CATALOG, T).callback
    assert due_at(a, POLICY) == (Timer.OFFER_LAPSED, T + 30)
    assert due_at(b, POLICY) == (Timer.SLOT_CAME, b.scheduled_for)
    assert due_at(c, POLICY) == (Timer.WAITING, T)
    accepted = accept(a, "anna", CATALOG, T + 1).callback
    assert due_at(accepted, POLICY) == (Timer.NOT_CONNECTED, T + 1 + 600)
    assert due_at(connect(accepted, T + 9).callback, POLICY) is None
    found = due([b, a, c], POLICY, T + 3_600)
    assert [(d.callback.id, d.timer, d.since - T) for d in found] == [
        ("a", Timer.OFFER_LAPSED, 30),
        ("c", Timer.SLA_PASSED, 120),
        ("b", Timer.SLOT_CAME, 1_800),
    ]


def test_the_board_kept_by_moves_equals_the_board_rebuilt_on_every_prefix() -> None:
    """Incremental state equals recomputation: a seeded walk of requests, offers, answers,
    timers and ends; after each, the board the engine kept (``moved``) equals the one built
    afresh from the callbacks (``board_of``)."""
    rng = random.Random(11)
    presence = {a: Presence.AVAILABLE for a in ("anna", "james", "carl", "bo")}
    kept = board_of([], presence, {})
    live: dict[str, Callback] = {}
    now = T
    for i in range(400):
        now += rng.choice([1.0, 5.0, 20.0, 40.0])
        if not live or rng.random() < 0.35:
            mode = rng.choice(list(CallbackMode))
            when = None
            if mode is CallbackMode.AT:
                when = T + 86_400 + 1800 * rng.randint(0, 8)  # Wednesday 10:00 onwards
            new = callback(f"cb{i}", mode=mode, requested_at=now, scheduled_for=when)
            try:
                routed = request(new, kept, CATALOG, now)
            except (SlotTaken, ValidationError):
                continue
            before = None
        else:
            before = live[rng.choice(sorted(live))]
            routed = _random_move(rng, before, kept, now)
            if routed is None:
                continue
        after = routed.callback
        kept = kept.moved(before, after)
        live[after.id] = after
        if after.final:
            del live[after.id]
        rotation = {a: s.last_assigned for a, s in kept.advisors.items() if s.last_assigned}
        rebuilt = board_of(live.values(), presence, rotation)
        assert _held(kept) == _held(rebuilt)


def _held(board_: AdvisorBoard) -> dict[str, tuple[int, tuple[float, ...]]]:
    """What a board says each advisor holds: load and bookings (nothing: left out)."""
    names = sorted({*board_.advisors, *board_.booked})
    held = {a: (board_.state(a).load, board_.bookings(a)) for a in names}
    return {a: h for a, h in held.items() if h != (0, ())}


def _random_move(rng: random.Random, cb: Callback, kept: AdvisorBoard, now: float) -> Routed | None:
    choices = {
        CallbackState.REQUESTED: ["tick", "cancel"],
        CallbackState.OFFERED: ["accept", "decline", "tick", "cancel"],
        CallbackState.ACCEPTED: ["connect", "complete", "cancel"],
        CallbackState.CONNECTED: ["complete"],
    }[cb.state]
    move = rng.choice(choices)
    try:
        if move == "tick":
            return tick(cb, kept, CATALOG, now)
        if move == "cancel":
            return cancel(cb, now)
        if move == "accept":
            return accept(cb, cb.advisor_id or "", CATALOG, now)
        if move == "decline":
            return decline(cb, cb.advisor_id or "", kept, CATALOG, now)
        if move == "connect":
            return connect(cb, now)
        return complete(cb, now)
    except Conflict:
        return None  # an offer that lapsed meanwhile: nothing changed
