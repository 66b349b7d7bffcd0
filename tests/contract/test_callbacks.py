"""The callback queue's contract (``store.port.Callbacks``), over every backend: callbacks
stored and compared-and-set by version, each customer's apart from every other's, queues per
advisor, what a timer must act on, presence and the rotation fact, no double booking under
concurrent requests (threads on one store; on SQLite and PostgreSQL also several connections),
and callbacks in flight surviving a restart."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest

from nextbest.advisors.board import Hold, board_of
from nextbest.advisors.model import (
    Callback,
    CallbackMode,
    CallbackState,
    Presence,
    Transition,
)
from nextbest.api.errors import status_of
from nextbest.bootstrap import open_stores
from nextbest.errors import Conflict, InFlight, NotFound, SlotTaken, StoreError
from nextbest.store import Callbacks, CallbackWrite, Capacity, Stores
from tests.postgres import scratch_schema
from tests.support import DAY, T0

HOUR = 3_600.0
SLOT = 1_800.0  #: half an hour a booked call
REQUESTED, OFFERED, ACCEPTED, CONNECTED = (
    CallbackState.REQUESTED,
    CallbackState.OFFERED,
    CallbackState.ACCEPTED,
    CallbackState.CONNECTED,
)


def callback(
    id: str,
    customer: str = "u1",
    *,
    at: float = T0,
    state: CallbackState = REQUESTED,
    advisor: str | None = None,
    scheduled_for: float | None = None,
    offer_expires_at: float | None = None,
    mode: CallbackMode | None = None,
    topic: str | None = None,
) -> Callback:
    """A callback about a topic of its own (``topic-<id>``) unless ``topic`` says: a
    customer has one in flight per topic."""
    if mode is None:
        mode = CallbackMode.NOW if scheduled_for is None else CallbackMode.AT
    history = [Transition(state=REQUESTED, at=at, reason="asked on the mortgage page")]
    if state is not REQUESTED:
        history.append(Transition(state=state, at=at + 1, advisor_id=advisor))
    return Callback(
        id=id,
        customer=customer,
        topic=topic or f"topic-{id}",
        mode=mode,
        phone="+4512345678",
        requested_at=at,
        state=state,
        scheduled_for=scheduled_for,
        advisor_id=advisor,
        offer_expires_at=offer_expires_at,
        language="da",
        decision_id=f"d-{id}",
        history=tuple(history),
    )


def moved(
    c: Callback, state: CallbackState, at: float, advisor: str | None = None, **changes: object
) -> Callback:
    """``c`` after one transition (as the routing core would write it)."""
    advisor = advisor if advisor is not None else c.advisor_id
    step = Transition(state=state, at=at, advisor_id=advisor)
    return msgspec.structs.replace(
        c, state=state, advisor_id=advisor, history=(*c.history, step), **changes
    )


@pytest.fixture
def cbs(stores: Stores) -> Callbacks:
    return stores.callbacks


def ids(found: list[Callback]) -> list[str]:
    return [c.id for c in found]


# ------------------------------------------------------------------ records and versions
def test_a_callback_reads_back_as_it_was_created_at_version_one(cbs: Callbacks):
    made = callback("cb-1", advisor="anna", state=OFFERED, offer_expires_at=T0 + 31)
    made = msgspec.structs.replace(made, declined_by=("bo", "carl"), version=7)
    stored = cbs.create(made)
    assert stored == msgspec.structs.replace(made, version=1)
    assert cbs.get("cb-1") == stored
    assert cbs.get("cb-2") is None
    assert cbs.count() == 1


def test_an_id_is_created_once(cbs: Callbacks):
    first = cbs.create(callback("cb-1"))
    with pytest.raises(Conflict, match="cb-1 exists already"):
        cbs.create(callback("cb-1", "u2"))
    assert cbs.get("cb-1") == first
    assert cbs.of_customer("u2") == []


def test_save_is_a_compare_and_set_on_the_version(cbs: Callbacks):
    stored = cbs.create(callback("cb-1"))
    offered = moved(stored, OFFERED, T0 + 5, "anna", offer_expires_at=T0 + 35)
    second = cbs.save(offered, expected_version=1)
    assert second == msgspec.structs.replace(offered, version=2)
    assert cbs.get("cb-1") == second
    # a writer that read version 1 lost the race: refused, nothing written
    with pytest.raises(Conflict, match="version 2, not 1"):
        cbs.save(moved(stored, CallbackState.CANCELLED, T0 + 6), expected_version=1)
    assert cbs.get("cb-1") == second
    third = cbs.save(moved(second, ACCEPTED, T0 + 9), expected_version=2)
    assert (third.version, third.state, len(third.history)) == (3, ACCEPTED, 3)


def test_save_refuses_an_unknown_callback_another_customer_an_illegal_move_a_lost_step(
    cbs: Callbacks,
):
    stored = cbs.create(callback("cb-1"))
    with pytest.raises(NotFound, match="no callback cb-9"):
        cbs.save(callback("cb-9"), expected_version=1)
    with pytest.raises(Conflict, match="another customer"):
        cbs.save(msgspec.structs.replace(stored, customer="u2"), expected_version=1)
    with pytest.raises(Conflict, match="is requested: it cannot become completed"):
        cbs.save(moved(stored, CallbackState.COMPLETED, T0 + 1), expected_version=1)
    with pytest.raises(Conflict, match="keeps every transition"):
        cbs.save(msgspec.structs.replace(stored, history=()), expected_version=1)
    assert cbs.get("cb-1") == stored
    assert cbs.get("cb-9") is None
    # the same state is no move: a requested callback rescheduled stays requested
    later = msgspec.structs.replace(stored, scheduled_for=T0 + HOUR, mode=CallbackMode.LATER)
    assert cbs.save(later, expected_version=1).version == 2


def test_of_two_advisors_accepting_at_once_exactly_one_wins(cbs: Callbacks):
    stored = cbs.create(callback("cb-1", state=OFFERED, advisor="anna", offer_expires_at=T0 + 30))
    outcomes = race(
        24, lambda i: cbs.save(moved(stored, ACCEPTED, T0 + 2, f"advisor-{i}"), expected_version=1)
    )
    winners = [o for o in outcomes if isinstance(o, Callback)]
    assert len(winners) == 1
    lost = [o for o in outcomes if not isinstance(o, Callback)]
    assert all(isinstance(o, Conflict) and not isinstance(o, SlotTaken) for o in lost), lost
    assert cbs.get("cb-1") == winners[0]
    assert winners[0].version == 2


# ------------------------------------------------------------------ customers and queues
def test_a_customer_sees_their_own_callbacks_and_no_one_elses(cbs: Callbacks):
    cbs.create(callback("cb-3", "u1", at=T0 + 2))
    cbs.create(callback("cb-1", "u10", at=T0))
    cbs.create(callback("cb-2", "u1", at=T0))
    cbs.create(callback("cb-0", "u1", at=T0 + 2))
    cbs.create(callback("cb-4", "anon:u1", at=T0 + 1))
    assert ids(cbs.of_customer("u1")) == ["cb-2", "cb-0", "cb-3"]  # oldest, then id
    assert ids(cbs.of_customer("u10")) == ["cb-1"]
    assert ids(cbs.of_customer("anon:u1")) == ["cb-4"]
    assert cbs.of_customer("u") == []
    assert cbs.of_customer("%") == []  # no pattern matching anywhere
    assert all(c.customer == "u1" for c in cbs.of_customer("u1"))


def test_an_advisors_queue_in_order_and_by_state(cbs: Callbacks):
    cbs.create(callback("now", at=T0 + 50, state=OFFERED, advisor="anna", offer_expires_at=T0 + 80))
    cbs.create(callback("at-9", at=T0, advisor="anna", scheduled_for=T0 + 9 * HOUR))
    cbs.create(callback("at-2", at=T0 + 60, advisor="anna", scheduled_for=T0 + 2 * HOUR))
    done = cbs.create(callback("done", at=T0 + 1, state=CONNECTED, advisor="anna"))
    cbs.save(moved(done, CallbackState.COMPLETED, T0 + 600), expected_version=1)
    cbs.create(callback("bo", advisor="bo", state=ACCEPTED))
    cbs.create(callback("nobody"))
    assert ids(cbs.of_advisor("anna")) == ["done", "now", "at-2", "at-9"]
    assert ids(cbs.of_advisor("anna", [REQUESTED, OFFERED, ACCEPTED, CONNECTED])) == [
        "now",
        "at-2",
        "at-9",
    ]
    assert ids(cbs.of_advisor("anna", {OFFERED})) == ["now"]
    assert ids(cbs.of_advisor("anna", [])) == []
    assert ids(cbs.of_advisor("bo")) == ["bo"]
    assert cbs.of_advisor("carl") == []


def test_open_load_counts_live_and_booked_callbacks_per_advisor(cbs: Callbacks):
    cbs.create(callback("o", state=OFFERED, advisor="anna", offer_expires_at=T0 + 30))
    cbs.create(callback("a", state=ACCEPTED, advisor="anna"))
    cbs.create(callback("c", state=CONNECTED, advisor="bo"))
    cbs.create(callback("booked", advisor="bo", scheduled_for=T0 + DAY))
    cbs.create(callback("waiting", advisor="carl"))  # requested now, not booked: not held
    cbs.create(callback("unassigned", scheduled_for=T0 + HOUR))
    cancelled = cbs.create(callback("x", advisor="dora", scheduled_for=T0 + HOUR))
    cbs.save(moved(cancelled, CallbackState.CANCELLED, T0 + 5), expected_version=1)
    assert cbs.open_load() == {"anna": 2, "bo": 2}


def test_holds_are_the_boards_facts_of_the_callbacks_holding_an_advisor(cbs: Callbacks):
    cbs.create(callback("o", state=OFFERED, advisor="anna", offer_expires_at=T0 + 30))
    cbs.create(callback("booked", advisor="bo", scheduled_for=T0 + DAY))
    cbs.create(callback("waiting", advisor="carl"))  # requested now, not booked: not held
    cbs.create(callback("unassigned", scheduled_for=T0 + HOUR))
    cancelled = cbs.create(callback("x", advisor="dora", scheduled_for=T0 + HOUR))
    cbs.save(moved(cancelled, CallbackState.CANCELLED, T0 + 5), expected_version=1)
    assert cbs.holds() == [
        Hold("booked", "bo", REQUESTED, T0 + DAY),
        Hold("o", "anna", OFFERED, None),
    ]
    assert cbs.holds("anna") == [Hold("o", "anna", OFFERED, None)]
    assert cbs.holds("carl") == []
    held = [c for c in cbs.scan() if c.id in {"o", "booked"}]
    presence = {"anna": Presence.AVAILABLE}
    assert board_of(cbs.holds(), presence, cbs.rotation()) == board_of(
        held, presence, cbs.rotation()
    )


def test_a_customer_has_one_callback_in_flight_per_topic(cbs: Callbacks):
    first = cbs.create(callback("cb-1", topic="mortgage"))
    with pytest.raises(InFlight, match="cb-1 about mortgage in flight") as refused:
        cbs.create(callback("cb-2", topic="mortgage", advisor="anna", scheduled_for=T0 + DAY))
    assert refused.value.callback_id == "cb-1"
    assert status_of(refused.value) == 409
    cbs.create(callback("cb-3", "u2", topic="mortgage"))  # another customer
    cbs.create(callback("cb-4", topic="pension"))  # another topic
    # in one commit: the second of two about one topic refused, the rest written
    done = cbs.write_many(
        [
            CallbackWrite(callback("cb-5", "u3", topic="car_loan")),
            CallbackWrite(callback("cb-6", "u3", topic="car_loan")),
            CallbackWrite(callback("cb-1", "u4", topic="car_loan")),  # an id taken
            CallbackWrite(callback("cb-7", topic="mortgage")),
            CallbackWrite(callback("cb-8", "u4", topic="car_loan")),
        ]
    )
    assert [type(d).__name__ for d in done] == [
        "Callback",
        "InFlight",
        "Conflict",
        "InFlight",
        "Callback",
    ]
    assert [getattr(d, "callback_id", None) for d in done[1:4]] == ["cb-5", None, "cb-1"]
    assert ids(cbs.of_customer("u3")) == ["cb-5"]
    # once it is final, the customer may ask again
    cbs.save(moved(first, CallbackState.CANCELLED, T0 + 5), expected_version=1)
    assert cbs.create(callback("cb-9", topic="mortgage")).version == 1


def test_booked_lists_scheduled_callbacks_in_a_window(cbs: Callbacks):
    cbs.create(callback("a1", advisor="anna", scheduled_for=T0 + HOUR))
    cbs.create(callback("a2", advisor="anna", scheduled_for=T0 + 3 * HOUR))  # the end: out
    cbs.create(callback("b1", advisor="bo", scheduled_for=T0 + 2 * HOUR))
    cbs.create(callback("u1", scheduled_for=T0 + 2 * HOUR))
    cbs.create(callback("a0", advisor="anna", scheduled_for=T0))  # the start: in
    gone = cbs.create(callback("a3", advisor="anna", scheduled_for=T0 + 2 * HOUR))
    cbs.save(moved(gone, CallbackState.CANCELLED, T0 + 1), expected_version=1)
    cbs.create(callback("now", advisor="anna", state=OFFERED, offer_expires_at=T0 + 30))
    assert ids(cbs.booked("anna", T0, T0 + 3 * HOUR)) == ["a0", "a1"]
    assert ids(cbs.booked(None, T0, T0 + 3 * HOUR)) == ["a0", "a1", "b1", "u1"]
    assert cbs.booked("anna", T0 + 4 * HOUR, T0 + 5 * HOUR) == []


def test_due_lists_what_a_timer_must_act_on(cbs: Callbacks):
    now = T0 + HOUR
    cbs.create(callback("lapsed", at=T0, state=OFFERED, advisor="anna", offer_expires_at=now - 5))
    cbs.create(callback("lapses-now", at=T0, state=OFFERED, advisor="bo", offer_expires_at=now))
    cbs.create(callback("open-offer", state=OFFERED, advisor="carl", offer_expires_at=now + 5))
    cbs.create(callback("slot-came", at=T0 - DAY, advisor="anna", scheduled_for=now - 60))
    cbs.create(callback("slot-ahead", advisor="anna", scheduled_for=now + 60))
    cbs.create(callback("asked-now", at=now - 30))
    cbs.create(callback("accepted", state=ACCEPTED, advisor="dora", scheduled_for=now - HOUR))
    done = cbs.create(callback("cancelled", at=now - 10))
    cbs.save(moved(done, CallbackState.CANCELLED, now - 9), expected_version=1)
    # the timers by when each fell due (the slot, the lapses), then the waiting request
    assert ids(cbs.due(now)) == ["slot-came", "lapsed", "lapses-now", "asked-now"]
    assert ids(cbs.due(now, limit=2)) == ["slot-came", "lapsed"]
    assert ids(cbs.due(T0 - DAY)) == ["asked-now"]  # a request for now is due at once
    assert "open-offer" in ids(cbs.due(now + 5))
    # many waiting for someone never crowd a lapsed offer out of the limit
    for k in range(5):
        cbs.create(callback(f"waiting-{k}", at=T0 - DAY - k))
    assert ids(cbs.due(now, limit=3)) == ["slot-came", "lapsed", "lapses-now"]


def test_due_lists_an_accepted_call_not_started_by_its_connect_by(cbs: Callbacks):
    now = T0 + HOUR
    late = cbs.create(callback("late", at=T0, state=ACCEPTED, advisor="anna"))
    late = cbs.save(msgspec.structs.replace(late, connect_by=now - 1), expected_version=1)
    cbs.create(callback("in-time", at=T0, state=ACCEPTED, advisor="bo"))
    in_time = cbs.get("in-time")
    assert in_time is not None
    cbs.save(msgspec.structs.replace(in_time, connect_by=now + 60), expected_version=1)
    assert ids(cbs.due(now)) == ["late"]
    assert cbs.due(now)[0].connect_by == now - 1
    assert ids(cbs.due(now + 60)) == ["late", "in-time"]  # by their deadlines
    # the call started: no timer any more
    started = moved(late, CONNECTED, now, connect_by=None)
    cbs.save(started, expected_version=2)
    assert ids(cbs.due(now + 60)) == ["in-time"]


# ------------------------------------------------------------------ presence and rotation
def test_presence_is_the_latest_report(cbs: Callbacks):
    assert cbs.presences() == {}
    assert cbs.set_presence("anna", Presence.AVAILABLE, T0) == (Presence.AVAILABLE, T0)
    assert cbs.set_presence("anna", Presence.BUSY, T0 + 10) == (Presence.BUSY, T0 + 10)
    # the call-start webhook arriving after the call-end one: ignored
    assert cbs.set_presence("anna", Presence.AVAILABLE, T0 + 5) == (Presence.BUSY, T0 + 10)
    cbs.set_presence("bo", Presence.OFFLINE, T0)
    assert cbs.presences() == {"anna": (Presence.BUSY, T0 + 10), "bo": (Presence.OFFLINE, T0)}
    assert cbs.rotation() == {}  # presence is no assignment


def test_rotation_remembers_each_advisors_last_assignment(cbs: Callbacks):
    first = cbs.create(callback("cb-1", at=T0))
    assert cbs.rotation() == {}
    offered = cbs.save(moved(first, OFFERED, T0 + 10, "anna"), expected_version=1)
    assert cbs.rotation() == {"anna": T0 + 10}
    accepted = cbs.save(moved(offered, ACCEPTED, T0 + 20), expected_version=2)  # no assignment
    assert cbs.rotation() == {"anna": T0 + 10}
    cbs.create(callback("cb-2", at=T0 + 30, advisor="bo", scheduled_for=T0 + HOUR))
    assert cbs.rotation() == {"anna": T0 + 10, "bo": T0 + 30}
    # declined back to requested, then offered to anna again: a new assignment
    second = cbs.create(callback("cb-3", at=T0 + 40, state=OFFERED, advisor="anna"))
    back = cbs.save(moved(second, REQUESTED, T0 + 50), expected_version=1)
    cbs.save(moved(back, OFFERED, T0 + 60), expected_version=2)
    assert cbs.rotation()["anna"] == T0 + 60
    # an assignment stamped earlier than the one held never lowers it
    cbs.create(callback("cb-4", at=T0, state=OFFERED, advisor="anna"))
    assert cbs.rotation()["anna"] == T0 + 60
    assert accepted.state is ACCEPTED


# ------------------------------------------------------------------ capacity
def test_a_slot_is_booked_up_to_the_advisors_capacity(cbs: Callbacks):
    one, two = Capacity(1, SLOT), Capacity(2, SLOT)
    at = T0 + 5 * HOUR
    cbs.create(callback("a1", advisor="anna", scheduled_for=at), one)
    with pytest.raises(SlotTaken, match="advisor anna is booked 1 time"):
        cbs.create(callback("a2", advisor="anna", scheduled_for=at), one)
    with pytest.raises(SlotTaken):  # overlapping: starts inside the first one's half hour
        cbs.create(callback("a3", advisor="anna", scheduled_for=at + SLOT - 1), one)
    with pytest.raises(SlotTaken):
        cbs.create(callback("a4", advisor="anna", scheduled_for=at - SLOT + 1), one)
    assert cbs.get("a2") is None
    cbs.create(callback("a5", advisor="anna", scheduled_for=at + SLOT), one)  # the next slot
    cbs.create(callback("b1", advisor="bo", scheduled_for=at), one)  # another advisor
    cbs.create(callback("a6", advisor="anna", scheduled_for=at), two)  # a larger capacity
    cbs.create(callback("a7", advisor="anna", scheduled_for=at))  # no capacity: no check
    assert ids(cbs.booked("anna", at, at + 1)) == ["a1", "a6", "a7"]


def test_a_cancelled_booking_frees_its_slot_and_a_reschedule_is_checked(cbs: Callbacks):
    one = Capacity(1, SLOT)
    at = T0 + 5 * HOUR
    first = cbs.create(callback("a1", advisor="anna", scheduled_for=at), one)
    other = cbs.create(callback("a2", advisor="anna", scheduled_for=at + HOUR), one)
    moved_in = msgspec.structs.replace(other, scheduled_for=at)
    with pytest.raises(SlotTaken):
        cbs.save(moved_in, expected_version=1, capacity=one)
    to_bo = msgspec.structs.replace(other, advisor_id="bo", scheduled_for=at)
    assert cbs.save(to_bo, expected_version=1, capacity=one).advisor_id == "bo"
    cbs.save(moved(first, CallbackState.CANCELLED, T0 + 1), expected_version=1)
    cbs.create(callback("a3", advisor="anna", scheduled_for=at), one)
    # a save that keeps its advisor and slot books nothing anew: never refused for them
    kept = cbs.get("a3")
    assert kept is not None
    note = msgspec.structs.replace(kept, language="en")
    assert cbs.save(note, expected_version=1, capacity=Capacity(0, SLOT)).language == "en"


def test_an_advisor_at_capacity_is_offered_nothing_more_now(cbs: Callbacks):
    two = Capacity(2, SLOT)
    cbs.create(callback("c1", state=CONNECTED, advisor="anna"), two)
    waiting = cbs.create(callback("w"))
    second = cbs.save(moved(waiting, OFFERED, T0 + 1, "anna"), expected_version=1, capacity=two)
    third = cbs.create(callback("w3"))
    with pytest.raises(SlotTaken, match="anna holds 2 live callback"):
        cbs.save(moved(third, OFFERED, T0 + 2, "anna"), expected_version=1, capacity=two)
    assert cbs.get("w3") == third
    # accepted and connected: the same hold, not counted again
    accepted = cbs.save(moved(second, ACCEPTED, T0 + 3), expected_version=2, capacity=two)
    cbs.save(moved(accepted, CONNECTED, T0 + 4), expected_version=3, capacity=two)
    assert cbs.open_load() == {"anna": 2}


def test_many_writes_in_one_commit_each_as_alone(cbs: Callbacks):
    """``write_many``: every write as ``create`` or ``save`` would do it, in order, each
    seeing the ones before; a refused one changes nothing, the others are kept."""
    one = Capacity(1, SLOT)
    kept = cbs.create(callback("cb-0"))
    results = cbs.write_many(
        [
            CallbackWrite(callback("cb-1", advisor="anna", scheduled_for=T0 + HOUR), None, one),
            # the same slot of Anna: taken by the write before, in this very commit
            CallbackWrite(callback("cb-2", advisor="anna", scheduled_for=T0 + HOUR), None, one),
            CallbackWrite(moved(kept, OFFERED, T0 + 1, "anna"), 1, one),
            CallbackWrite(moved(kept, CallbackState.CANCELLED, T0 + 2), 1),  # stale version
            CallbackWrite(callback("cb-0"), None),  # the id is taken
            CallbackWrite(callback("cb-9"), 4),  # no such callback
            CallbackWrite(callback("cb-3", advisor="mikkel", scheduled_for=T0 + HOUR), None, one),
        ]
    )
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "Callback",
        "SlotTaken",
        "Callback",
        "Conflict",
        "Conflict",
        "NotFound",
        "Callback",
    ]
    assert [r.version for r in results if isinstance(r, Callback)] == [1, 2, 1]
    assert cbs.get("cb-2") is None
    assert cbs.get("cb-9") is None
    got = cbs.get("cb-0")
    assert got is not None
    assert (got.state, got.version) == (OFFERED, 2)
    assert cbs.rotation() == {"anna": T0 + 1, "mikkel": T0}
    assert cbs.count() == 3
    assert cbs.write_many([]) == []


def race(n: int, attempt: Callable[[int], Callback]) -> list[Callback | Exception | None]:
    """``attempt(i)`` for i < n on n threads released together: each one's outcome."""
    outcomes: list[Callback | Exception | None] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            outcomes[i] = attempt(i)
        except Exception as exc:  # every outcome is asserted on
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def assert_booked_exactly(
    outcomes: list[Callback | Exception | None], capacity: int, cbs: Callbacks, at: float
) -> None:
    won = [o for o in outcomes if isinstance(o, Callback)]
    lost = [o for o in outcomes if not isinstance(o, Callback)]
    assert len(won) == capacity, lost
    assert all(isinstance(o, SlotTaken) for o in lost), lost
    assert sorted(ids(cbs.booked("anna", at - SLOT, at + SLOT))) == sorted(ids(won))


@pytest.mark.parametrize("limit", [1, 3])
def test_threads_racing_for_one_slot_book_exactly_its_capacity(cbs: Callbacks, limit: int):
    at = T0 + 5 * HOUR
    outcomes = race(
        24,
        lambda i: cbs.create(
            callback(f"cb-{i:02d}", f"u{i}", advisor="anna", scheduled_for=at + i),
            Capacity(limit, SLOT),
        ),
    )
    assert_booked_exactly(outcomes, limit, cbs, at)


# ------------------------------------------------------------------ one store, many openers
@contextmanager
def shared_store(backend: str, tmp_path: Path) -> Iterator[str]:
    """Where a store lives that several ``open_stores`` may open at once."""
    if backend == "postgresql":
        with scratch_schema() as url:
            yield url
    else:
        yield str(tmp_path / "shared.sqlite")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_connections_racing_for_one_slot_book_exactly_its_capacity(
    backend: str, tmp_path: Path
) -> None:
    """Six connections (as six API workers would hold), four threads on each: the capacity is
    held across connections, not by one connection's lock."""
    at = T0 + 5 * HOUR
    with shared_store(backend, tmp_path) as where:
        opened = [open_stores(where) for _ in range(6)]
        try:
            for limit, advisor_at in ((1, at), (2, at + DAY)):
                outcomes = race(
                    24,
                    lambda i, limit=limit, t=advisor_at: opened[i % 6].callbacks.create(
                        callback(f"cb-{t}-{i:02d}", f"u{i}", advisor="anna", scheduled_for=t),
                        Capacity(limit, SLOT),
                    ),
                )
                assert_booked_exactly(outcomes, limit, opened[0].callbacks, advisor_at)
            stored = opened[0].callbacks.create(callback("offer", state=OFFERED, advisor="bo"))
            outcomes = race(
                12,
                lambda i: opened[i % 6].callbacks.save(
                    moved(stored, ACCEPTED, T0 + 2, f"advisor-{i}"), expected_version=1
                ),
            )
            assert sum(isinstance(o, Callback) for o in outcomes) == 1
            # one customer asking about one topic through every connection at once: one
            # callback in flight, the others refused naming it
            outcomes = race(
                12,
                lambda i: opened[i % 6].callbacks.write_many(
                    [CallbackWrite(callback(f"same-{i:02d}", "u-race", topic="mortgage"))]
                )[0],
            )
            made = [o for o in outcomes if isinstance(o, Callback)]
            assert len(made) == 1
            assert all(
                isinstance(o, InFlight) and o.callback_id == made[0].id
                for o in outcomes
                if o is not made[0]
            ), outcomes
        finally:
            for stores in opened:
                stores.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_groups_booking_advisors_in_opposite_orders_do_not_deadlock(
    backend: str, tmp_path: Path
) -> None:
    """Two connections (two API workers' group commits), each writing groups that book
    three advisors, one in the order a, b, c, the other c, b, a, and saving two callbacks in
    opposite orders: every write is answered (written or refused), no group fails whole."""
    at = T0 + 5 * HOUR
    advisors = ["a", "b", "c"]
    with shared_store(backend, tmp_path) as where:
        opened = [open_stores(where) for _ in range(2)]
        try:
            base = [opened[0].callbacks.create(callback(f"s{k}")) for k in range(2)]
            for rounds in range(6):

                def group(i: int, rounds: int = rounds) -> Callback:
                    order = advisors if i % 2 == 0 else advisors[::-1]
                    writes = [
                        CallbackWrite(
                            callback(f"g{rounds}-{i}-{a}", f"u{rounds}-{i}-{a}", advisor=a,
                                     scheduled_for=at + rounds * DAY + i),
                            capacity=Capacity(100, SLOT),
                        )
                        for a in order
                    ]  # fmt: skip
                    done = opened[i % 2].callbacks.write_many(writes)
                    assert all(isinstance(d, Callback) for d in done), done
                    return done[0]  # type: ignore[return-value]

                outcomes = race(8, group)
                assert all(isinstance(o, Callback) for o in outcomes), outcomes
            # saves of the same two callbacks in opposite orders: one of each wins
            outcomes = race(
                8,
                lambda i: opened[i % 2].callbacks.write_many(
                    [
                        CallbackWrite(moved(base[k], CallbackState.CANCELLED, T0 + 9), 1)
                        for k in ((0, 1) if i % 2 == 0 else (1, 0))
                    ]
                )[0],  # type: ignore[return-value]
            )
            assert not any(isinstance(o, StoreError) for o in outcomes), outcomes
            assert all(c.final for c in opened[0].callbacks.scan() if c.id in ("s0", "s1"))
        finally:
            for stores in opened:
                stores.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_callbacks_in_flight_survive_a_restart(backend: str, tmp_path: Path) -> None:
    one = Capacity(1, SLOT)
    with shared_store(backend, tmp_path) as where:
        stores = open_stores(where)
        cbs = stores.callbacks
        offered = cbs.create(
            callback("offered", state=OFFERED, advisor="anna", offer_expires_at=T0 + 30)
        )
        waiting = cbs.create(callback("booked", "u2", advisor="bo", scheduled_for=T0 + HOUR), one)
        accepted = cbs.save(moved(offered, ACCEPTED, T0 + 10), expected_version=1)
        cbs.set_presence("anna", Presence.BUSY, T0 + 10)
        before = (cbs.scan(), cbs.presences(), cbs.rotation(), cbs.open_load())
        stores.close()

        again = open_stores(where)
        try:
            cbs = again.callbacks
            assert (cbs.scan(), cbs.presences(), cbs.rotation(), cbs.open_load()) == before
            assert cbs.get("offered") == accepted
            assert ids(cbs.due(T0 + HOUR)) == ["booked"]
            with pytest.raises(Conflict):  # the version went on
                cbs.save(moved(waiting, OFFERED, T0 + HOUR), expected_version=2)
            with pytest.raises(SlotTaken):  # and so do the bookings
                cbs.create(callback("again", advisor="bo", scheduled_for=T0 + HOUR), one)
            connected = cbs.save(moved(accepted, CONNECTED, T0 + 40), expected_version=2)
            assert connected.version == 3
        finally:
            again.close()


# ------------------------------------------------------------------ copying (migrate)
def test_scan_pages_by_id_and_restore_writes_records_as_they_are(cbs: Callbacks):
    for i in (3, 1, 2, 0):
        cbs.create(callback(f"cb-{i}", f"u{i}"))
    assert ids(cbs.scan()) == ["cb-0", "cb-1", "cb-2", "cb-3"]
    assert ids(cbs.scan(after="cb-1", limit=1)) == ["cb-2"]
    kept = msgspec.structs.replace(callback("cb-1", "u1", state=OFFERED, advisor="anna"), version=9)
    fresh = msgspec.structs.replace(callback("cb-9", "u9", advisor="bo"), version=4)
    cbs.restore(
        [kept, fresh],
        {"anna": (Presence.AWAY, T0 + 5)},
        {"anna": T0 + 1, "bo": T0 + 2},
    )
    assert cbs.get("cb-1") == kept
    assert cbs.get("cb-9") == fresh
    assert ids(cbs.of_customer("u1")) == ["cb-1"]
    assert ids(cbs.of_advisor("anna")) == ["cb-1"]
    assert cbs.presences() == {"anna": (Presence.AWAY, T0 + 5)}
    assert cbs.rotation() == {"anna": T0 + 1, "bo": T0 + 2}
    assert cbs.count() == 5
    cbs.restore([])  # nothing: nothing changes
    assert cbs.count() == 5


def test_the_faces_answer_a_lost_race_with_409():
    assert (status_of(Conflict("stale")), Conflict.code) == (409, "conflict")
    assert (status_of(SlotTaken("taken")), SlotTaken.code) == (409, "slot_taken")
