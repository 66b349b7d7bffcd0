"""The callback desk through the engine: expertise match, busy fallback, decline and timeout
re-routing, the SLA conversion, slots that come, the click-to-call in the outbox, every step
in the customer's event log (a completed callback a campaign KPI), the board kept equal to
one rebuilt from the store, fairness over 1,000 requests, restarts with callbacks in flight,
and two desks on one store booking no slot twice.

Time is a FixedClock the tests move: the sweeper's timers fire on it, no sleeps."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from nextbest.advisors.board import board_of
from nextbest.advisors.model import CallbackMode, CallbackState, Presence
from nextbest.bootstrap import open_stores
from nextbest.callbacks import CallbackDesk, event_ids
from nextbest.catalog.compiled import Catalog
from nextbest.clock import ClockKind, EventClock, FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.engine import Engine
from nextbest.errors import Conflict, LimitExceeded, NotFound, SlotTaken, ValidationError
from nextbest.ingestion import IngestRequest, IngestResult
from nextbest.profile.model import Profile
from nextbest.store import Stores, memory_stores, sqlite_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.store.port import OutboxState
from tests.contract.conftest import open_backend
from tests.postgres import scratch_schema
from tests.support import T0, batch, counter_ids, edited_catalog, feedback, identify, page
from tests.unit.advisor_bank import advisor, bank

T = TypeVar("T")
NOW = CallbackMode.NOW
LATER = CallbackMode.LATER
AT = CallbackMode.AT
PHONE = "+4512345678"
#: Thu 24 Sep 2026 09:00 UTC: 11:00 in Copenhagen, 10:00 in London: a slot of all three
#: mortgage experts (Anna 2 places, Mikkel 1, James 1)
THU_0900 = T0 + 23 * 3_600


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def engines(catalog: Catalog, clock: FixedClock, tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(kind: str = "memory", cat: Catalog | None = None, path: Path | None = None) -> Engine:
        stores = (
            memory_stores() if kind == "memory" else sqlite_stores(path or tmp_path / "cb.sqlite")
        )
        engine = Engine(cat or catalog, stores, clock, new_id=counter_ids())
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def names(engine: Engine, customer: str) -> list[str]:
    return [
        s.event.name or ""
        for s in engine.event_log.scan(0)
        if (s.event.user_id or "anon:" + (s.event.anonymous_id or "")) == customer
    ]


def available(desk: CallbackDesk, *advisors: str) -> None:
    for a in advisors:
        desk.set_presence(a, Presence.AVAILABLE)


def assert_board_is_the_stores(desk: CallbackDesk) -> None:
    """The board kept current by the desk's writes equals one rebuilt from the store."""
    kept = desk.board()
    rebuilt = desk.refresh_board()
    assert {a: s for a, s in kept.advisors.items() if s != s.__class__()} == {
        a: s for a, s in rebuilt.advisors.items() if s != s.__class__()
    }
    assert {a: b for a, b in kept.booked.items() if b} == {
        a: b for a, b in rebuilt.booked.items() if b
    }


# ------------------------------------------------------------------------------ routing
def test_now_goes_to_the_best_expert_then_a_colleague_when_busy(engines: Callable[..., Engine]):
    engine = engines()
    desk = engine.callbacks
    available(desk, "anna_holm", "mikkel_berg", "james_carter")
    first = desk.request_callback("u1", "mortgage", NOW, PHONE)
    assert (first.state, first.advisor_id) == (CallbackState.OFFERED, "anna_holm")  # level 5
    desk.set_presence("anna_holm", Presence.BUSY)
    second = desk.request_callback("u2", "mortgage", NOW, PHONE)
    assert second.advisor_id == "mikkel_berg"  # level 4, the next with the same expertise
    # Danish first: James (level 3, English only) only for an English speaker past Mikkel
    third = desk.request_callback("u3", "mortgage", NOW, PHONE, language="en-GB")
    assert (third.advisor_id, third.language) == ("james_carter", "en")  # Mikkel is full
    assert_board_is_the_stores(desk)


def test_decline_and_timeout_go_on_to_the_next_colleague(
    engines: Callable[..., Engine], clock: FixedClock
):
    engine = engines()
    desk = engine.callbacks
    available(desk, "anna_holm", "mikkel_berg", "james_carter")
    c = desk.request_callback("u1", "mortgage", NOW, PHONE)
    c = desk.decline(c.id, "anna_holm")
    assert (c.state, c.advisor_id, c.declined_by) == (
        CallbackState.OFFERED,
        "mikkel_berg",
        ("anna_holm",),
    )
    clock.advance(29)
    assert desk.sweep().moved == 0  # Mikkel still has a second
    clock.advance(1)
    report = desk.sweep()
    assert (report.moved, report.timers) == (1, {"offer_lapsed": 1})
    c = desk.callback(c.id)
    assert (c.advisor_id, c.declined_by) == ("james_carter", ("anna_holm", "mikkel_berg"))
    assert names(engine, "u1") == [
        "Callback Requested",
        "Callback Assigned",
        "Callback Declined",
        "Callback Assigned",
        "Callback Declined",
        "Callback Assigned",
    ]
    reasons = [s.event.properties["reason"] for s in engine.event_log.scan(0)][-2:]
    assert reasons[0] == "Mikkel Berg did not accept within 30 s"
    with pytest.raises(Conflict, match="offered to another advisor"):
        desk.accept(c.id, "anna_holm")
    assert_board_is_the_stores(desk)


def test_nobody_within_the_sla_moves_it_to_the_earliest_slot_and_the_customer_is_told(
    engines: Callable[..., Engine], clock: FixedClock
):
    engine = engines()
    desk = engine.callbacks
    c = desk.request_callback("u1", "mortgage", NOW, PHONE)
    assert (c.state, c.advisor_id) == (CallbackState.REQUESTED, None)  # everyone offline
    clock.advance(60)
    assert desk.sweep().moved == 0  # waiting within the SLA
    clock.advance(60)
    report = desk.sweep()
    assert report.timers == {"sla_passed": 1}
    c = desk.callback(c.id)
    assert c.state is CallbackState.REQUESTED
    assert c.scheduled_for is not None
    assert c.notice.startswith("Nobody was free within 2 minutes: Anna Holm will call you")
    assert names(engine, "u1")[-1] == "Callback Scheduled"
    # the slot comes: offered to Anna once she is available, else to a colleague free then
    clock.set(c.scheduled_for)
    available(desk, "mikkel_berg")  # routes it at once: Anna is offline
    c = desk.callback(c.id)
    assert (c.state, c.advisor_id) == (CallbackState.OFFERED, "mikkel_berg")
    assert_board_is_the_stores(desk)


def test_a_presence_change_routes_the_waiting_call_at_once(engines: Callable[..., Engine]):
    desk = engines().callbacks
    c = desk.request_callback("u1", "investing", NOW, PHONE)  # Sofie is at lunch
    assert desk.callback(c.id).state is CallbackState.REQUESTED
    report = desk.set_presence("james_carter", Presence.AVAILABLE)
    assert report.routed == 1
    assert desk.callback(c.id).advisor_id == "james_carter"


def test_accept_enqueues_a_click_to_call_and_wakes_the_sender(engines: Callable[..., Engine]):
    engine = engines()
    desk = engine.callbacks
    woken: list[bool] = []
    desk.on_outbox = lambda: woken.append(True)
    available(desk, "anna_holm")
    c = desk.request_callback("u1", "mortgage", NOW, PHONE, decision_id="d-7")
    c = desk.accept(c.id, "anna_holm")
    assert c.state is CallbackState.ACCEPTED
    assert woken == [True]
    (message,) = engine.outbox.messages()
    assert (message.channel, message.destination, message.state) == (
        "telephony",
        "telephony",
        OutboxState.PENDING,
    )
    assert message.key == f"callback-{c.id}-accepted-3"
    body = msgspec.json.decode(message.payload)
    assert body["phone"] == PHONE
    assert body["extension"] == "2101"
    assert (body["callback_id"], body["advisor_id"], body["topic"]) == (
        c.id,
        "anna_holm",
        "mortgage",
    )
    # accepting again is no move; the relog enqueues nothing new (the same key)
    with pytest.raises(Conflict):
        desk.accept(c.id, "anna_holm")
    desk.relog()
    assert len(engine.outbox.messages()) == 1
    done = desk.complete(c.id, "anna_holm")
    assert [t.state.value for t in done.history[-3:]] == ["accepted", "connected", "completed"]
    assert names(engine, "u1")[-2:] == ["Callback Connected", "Callback Completed"]
    events = [s.event for s in engine.event_log.scan(0)]
    assert [e.message_id for e in events] == event_ids(done)
    assert events[0].properties["decision_id"] == "d-7"
    assert_board_is_the_stores(desk)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_an_accepted_call_that_never_connects_goes_to_a_colleague_then_to_a_slot(
    engines: Callable[..., Engine], clock: FixedClock, catalog: Catalog, kind: str
):
    engine = engines(kind)
    desk = engine.callbacks
    within = catalog.callbacks.connect_within_seconds
    available(desk, "anna_holm", "mikkel_berg")
    c = desk.request_callback("u1", "mortgage", NOW, PHONE)
    c = desk.accept(c.id, "anna_holm")
    assert c.connect_by == clock.now() + within
    clock.advance(within - 1)
    assert desk.sweep().moved == 0  # still time for the call to start
    clock.advance(1)
    report = desk.sweep()
    assert (report.moved, report.timers) == (1, {"not_connected": 1})
    c = desk.callback(c.id)
    assert (c.state, c.advisor_id, c.declined_by) == (
        CallbackState.OFFERED,
        "mikkel_berg",
        ("anna_holm",),
    )
    assert_board_is_the_stores(desk)
    # Mikkel accepts, the call never starts either, and nobody else is free: a slot, told
    c = desk.accept(c.id, "mikkel_berg")
    clock.advance(within)
    assert desk.sweep().timers == {"not_connected": 1}
    c = desk.callback(c.id)
    assert c.state is CallbackState.REQUESTED
    assert c.scheduled_for is not None
    assert c.notice.startswith("Our call to you did not go through: ")
    assert names(engine, "u1") == [
        "Callback Requested",
        "Callback Assigned",
        "Callback Accepted",
        "Callback Not Connected",
        "Callback Assigned",
        "Callback Accepted",
        "Callback Not Connected",
        "Callback Scheduled",
    ]
    reasons = [s.event.properties.get("reason") for s in engine.event_log.scan(0)]
    assert reasons[3] == "accepted by Anna Holm, but the call did not start within 10 minutes"
    # two click-to-calls went out, one per acceptance; none for the slot yet
    assert len(engine.outbox.messages()) == 2
    assert_board_is_the_stores(desk)
    # a call that starts in time has no such timer
    d = desk.request_callback("u2", "mortgage", NOW, PHONE)
    d = desk.accept(d.id, d.advisor_id)
    d = desk.connect(d.id)
    clock.advance(10 * within)
    desk.sweep()
    assert desk.callback(d.id).state is CallbackState.CONNECTED


def test_later_and_at_book_slots_and_at_refuses_a_full_one(engines: Callable[..., Engine]):
    desk = engines().callbacks
    later = desk.request_callback("u1", "mortgage", LATER, PHONE)
    assert later.scheduled_for == T0 + 30 * 60  # the first slot after 15 minutes' lead
    assert later.advisor_id == "anna_holm"
    # the Thursday 11:00 slot: Anna (2 places), then Mikkel, then James
    booked = [
        desk.request_callback(f"c{i}", "mortgage", AT, PHONE, at=THU_0900).advisor_id
        for i in range(4)
    ]
    assert booked == ["anna_holm", "anna_holm", "mikkel_berg", "james_carter"]
    with pytest.raises(SlotTaken, match="every expert in mortgage is booked"):
        desk.request_callback("c9", "mortgage", AT, PHONE, at=THU_0900)
    with pytest.raises(ValidationError) as bad:
        desk.request_callback("c9", "mortgage", AT, PHONE, at=THU_0900 + 60)
    assert bad.value.path == "$.time"
    assert_board_is_the_stores(desk)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"phone": "12345678"}, "$.phone"),
        ({"phone": "+45 1234 5678"}, "$.phone"),
        ({"phone": "+0451234567"}, "$.phone"),
        ({"phone": "+1234567"}, "$.phone"),
        ({"phone": "+1234567890123456"}, "$.phone"),
        ({"topic": "astrology"}, "$.topic"),
        ({"language": "klingon"}, "$.language"),
        ({"mode": LATER, "at": THU_0900}, "$.time"),
        ({"mode": NOW, "at": THU_0900}, "$.time"),
        ({"mode": AT}, "$.time"),
    ],
)
def test_bad_requests_name_their_field_and_store_nothing(
    engines: Callable[..., Engine], kwargs: dict[str, Any], path: str
):
    engine = engines()
    asked: dict[str, Any] = {"topic": "mortgage", "mode": NOW, "phone": PHONE, **kwargs}
    with pytest.raises(ValidationError) as bad:
        engine.callbacks.request_callback(
            "u1",
            asked.pop("topic"),
            asked.pop("mode"),
            asked.pop("phone"),
            **asked,
        )
    assert bad.value.path == path
    assert engine.callbacks.of_customer("u1") == []
    assert engine.event_log.last_seq() == 0


def test_one_callback_per_topic_in_flight_and_cancel(engines: Callable[..., Engine]):
    engine = engines()
    desk = engine.callbacks
    c = desk.request_callback("u1", "mortgage", LATER, PHONE)
    with pytest.raises(LimitExceeded) as twice:
        desk.request_callback("u1", "mortgage", NOW, PHONE)
    assert twice.value.path == "$.topic"
    assert c.id in twice.value.message
    desk.request_callback("u1", "pension", LATER, PHONE)  # another topic is another call
    gone = desk.cancel(c.id)
    assert gone.state is CallbackState.CANCELLED
    assert names(engine, "u1") == [
        "Callback Requested",
        "Callback Requested",
        "Callback Cancelled",
    ]
    with pytest.raises(Conflict):
        desk.cancel(c.id)
    again = desk.request_callback("u1", "mortgage", LATER, PHONE)
    assert again.id != c.id
    with pytest.raises(NotFound):
        desk.cancel("no-such-callback")
    assert_board_is_the_stores(desk)


# ------------------------------------------------------------------------------ the log
KPI_EDIT = {
    "campaigns.yaml": [
        (
            '      event: Application Submitted\n      where: properties.product == "mortgage"',
            '      event: Callback Completed\n      where: properties.topic == "mortgage"',
        )
    ]
}


def test_the_steps_fold_into_the_profile_and_a_completed_call_is_a_campaign_kpi(
    tmp_path: Path, clock: FixedClock
):
    """mortgage_q4 counts ``Callback Completed`` about mortgage within 14 days as its KPI."""
    (tmp_path / "catalog").mkdir()
    cat = load_catalog(edited_catalog(tmp_path / "catalog", KPI_EDIT))
    engine = Engine(cat, sqlite_stores(tmp_path / "kpi.sqlite"), clock, new_id=counter_ids())
    try:
        views = [
            page("https://bank.example/mortgages/rates", user="u-kpi", at=T0 - 60 * i)
            for i in range(5)
        ]
        adult = identify({"birthday": "1985-04-02"}, user="u-kpi", at=T0 - 600)
        engine.ingest_batch(batch(adult, *views))
        decision = engine.decide(DecisionRequest(placement="home_feed"), user_id="u-kpi")
        assert "mortgage_advice" in [i.offer_id for i in decision.items] or decision.control
        if "mortgage_advice" in [i.offer_id for i in decision.items]:  # treatment: when seen
            engine.ingest_batch(batch(feedback(decision, offer_id="mortgage_advice", user="u-kpi")))
        exposure = engine.experiment_counters(customers=True)["mortgage_q4"].customers["u-kpi"]
        assert exposure.values[0] == 0.0  # the primary KPI (then the guardrail)
        desk = engine.callbacks
        available(desk, "anna_holm")
        c = desk.request_callback("u-kpi", "mortgage", NOW, PHONE, decision_id=decision.decision_id)
        desk.accept(c.id, "anna_holm")
        desk.complete(c.id, "anna_holm")
        exposure = engine.experiment_counters(customers=True)["mortgage_q4"].customers["u-kpi"]
        assert exposure.values[0] == 1.0
        # the request is a sign of interest in mortgage; the other steps are not
        profile = engine.profile("u-kpi")
        assert profile is not None
        assert profile.interests["mortgage"].total == 6
        report = engine.replay()
        assert report.identical
        assert report.experiments_identical
    finally:
        engine.close()


def test_on_event_time_a_step_is_received_when_it_happened(catalog: Catalog):
    """An engine on event time receives every event at its own time (the learner's click
    windows follow ``received_at``): the desk's steps too, not at the wall clock, which
    would move the learner's time to today and expire every waiting click at once."""
    wall = FixedClock(T0 + 200 * 86_400)  # the real date, far after the simulated month
    engine = Engine(catalog, memory_stores(), EventClock(wall), new_id=counter_ids())
    try:
        views = [
            page("https://bank.example/mortgages/rates", user="u-ev", at=T0 - 60 * i)
            for i in range(5)
        ]
        engine.ingest_batch(batch(identify({"age": 40}, user="u-ev", at=T0 - 600), *views))
        desk = engine.callbacks
        available(desk, "anna_holm")
        c = desk.request_callback("u-ev", "mortgage", NOW, PHONE)
        desk.accept(c.id, "anna_holm")
        steps = [
            s.event
            for s in engine.event_log.scan(0)
            if (s.event.name or "").startswith("Callback ")
        ]
        assert [e.name for e in steps][:2] == ["Callback Requested", "Callback Assigned"]
        for e in steps:
            assert e.received_at == e.timestamp
            assert e.received_at < wall.now() - 100 * 86_400
    finally:
        engine.close()


def test_relog_appends_what_a_crash_left_out_and_nothing_twice(
    engines: Callable[..., Engine],
):
    engine = engines()
    desk = engine.callbacks
    available(desk, "anna_holm")
    c = desk.request_callback("u1", "mortgage", NOW, PHONE)
    logged = engine.event_log.last_seq()
    assert desk.relog() == 1
    assert engine.event_log.last_seq() == logged  # duplicates: nothing new
    # a write whose append was lost (a crash between the two): the relog brings it back
    moved = msgspec.structs.replace(c, state=CallbackState.ACCEPTED, offer_expires_at=None)
    step = msgspec.structs.replace(c.history[-1], state=CallbackState.ACCEPTED, reason="x")
    engine.callbacks.store.save(
        msgspec.structs.replace(moved, history=(*c.history, step)), c.version
    )
    desk.relog()
    assert names(engine, "u1") == ["Callback Requested", "Callback Assigned", "Callback Accepted"]
    assert len(engine.outbox.messages()) == 1  # and its click-to-call


def test_relog_brings_back_the_last_steps_of_a_callback_that_ended_in_the_crash(
    engines: Callable[..., Engine],
):
    """A callback completed (or cancelled) just before a crash is final: it is in no queue,
    yet its last steps may be unlogged. The relog finds it by its last step's time."""
    engine = engines()
    desk = engine.callbacks
    available(desk, "anna_holm")
    c = desk.request_callback("u1", "mortgage", NOW, PHONE)
    ended = msgspec.structs.replace(
        c,
        state=CallbackState.CANCELLED,
        offer_expires_at=None,
        history=(
            *c.history,
            msgspec.structs.replace(c.history[-1], state=CallbackState.CANCELLED, reason="x"),
        ),
    )
    engine.callbacks.store.save(ended, c.version)  # written; its append lost in the crash
    assert names(engine, "u1") == ["Callback Requested", "Callback Assigned"]
    desk.relog()
    assert names(engine, "u1") == [
        "Callback Requested",
        "Callback Assigned",
        "Callback Cancelled",
    ]
    assert engine.outbox.messages() == []  # an ended call is never dialled


# ------------------------------------------------------------------------------ fairness
def test_fairness_over_a_thousand_requests_between_equal_experts(clock: FixedClock):
    """Four equal experts, each call taken and ended before the next comes: the rotation
    spreads 1,000 requests 250 each, within one of each other all along."""
    cat = bank([advisor(f"a{i}", {"mortgage": 4}, max_concurrent=2) for i in range(4)])
    engine = Engine(cat, memory_stores(), clock, new_id=counter_ids())
    try:
        desk = engine.callbacks
        available(desk, "a0", "a1", "a2", "a3")
        taken: Counter[str] = Counter()
        for n in range(1_000):
            clock.advance(7)
            c = desk.request_callback(f"c{n}", "mortgage", NOW, PHONE)
            assert c.advisor_id is not None
            taken[c.advisor_id] += 1
            counts = [taken[f"a{i}"] for i in range(4)]
            assert max(counts) - min(counts) <= 1, (n, counts)
            desk.complete(desk.accept(c.id).id)
        assert sorted(taken.values()) == [250, 250, 250, 250]
        assert engine.event_log.last_seq() == 1_000 * 5
        assert_board_is_the_stores(desk)
    finally:
        engine.close()


# ------------------------------------------------------------------------------ restarts
def test_a_restart_with_callbacks_in_flight_goes_on(
    catalog: Catalog, clock: FixedClock, tmp_path: Path
):
    path = tmp_path / "restart.sqlite"
    engine = Engine(catalog, sqlite_stores(path), clock, new_id=counter_ids())
    desk = engine.callbacks
    available(desk, "anna_holm", "mikkel_berg")
    offered = desk.request_callback("u1", "mortgage", NOW, PHONE)
    booked = desk.request_callback("u2", "pension", LATER, PHONE)
    waiting = desk.request_callback("u3", "investing", NOW, PHONE)
    logged = engine.event_log.last_seq()
    engine.close()

    clock.advance(31)  # Anna's offer lapsed while the server was down
    again = Engine(catalog, sqlite_stores(path), clock, new_id=counter_ids("r"))
    try:
        desk = again.callbacks
        assert desk.board().state("anna_holm").load == 1  # rebuilt from the store
        assert desk.board().bookings(booked.advisor_id or "") == (booked.scheduled_for,)
        assert desk.relog() == 3
        assert again.event_log.last_seq() == logged
        report = desk.sweep()
        assert report.timers == {"offer_lapsed": 1}
        assert desk.callback(offered.id).advisor_id == "mikkel_berg"
        assert desk.callback(waiting.id).state is CallbackState.REQUESTED
        clock.advance(120)
        desk.sweep()
        assert desk.callback(waiting.id).notice.startswith("Nobody was free within 2 minutes")
        assert_board_is_the_stores(desk)
    finally:
        again.close()


# ------------------------------------------------------------------------------ two desks
class _Host:
    """What a desk needs of an engine, with an event log that only counts."""

    def __init__(self, catalog: Catalog, clock: FixedClock) -> None:
        self.catalog = catalog
        self.clock = clock
        self.appended = 0
        self._lock = threading.Lock()

    clock_kind = ClockKind.WALL

    def wall_now(self) -> float:
        return self.clock.now()

    def submit(self, request: IngestRequest) -> Future[IngestResult]:
        with self._lock:
            self.appended += len(request.parsed.events)
        done: Future[IngestResult] = Future()
        done.set_result(IngestResult(len(request.parsed.events), 0, []))
        return done

    def read_profile(self, customer_id: str, read: Callable[[Profile, float], T]) -> T | None:
        return None


@contextmanager
def _both(where: str) -> Iterator[tuple[Stores, Stores]]:
    one = open_stores(where)
    try:
        two = open_stores(where)
        try:
            yield one, two
        finally:
            two.close()
    finally:
        one.close()


@contextmanager
def two_connections(backend: str, tmp_path: Path) -> Iterator[tuple[Stores, Stores]]:
    """Two connections to one store, as two servers hold."""
    if backend == "sqlite":
        with _both(str(tmp_path / "shared.sqlite")) as pair:
            yield pair
        return
    with scratch_schema() as url, _both(url) as pair:
        yield pair


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_desks_on_one_store_never_book_a_slot_twice(
    backend: str, catalog: Catalog, clock: FixedClock, tmp_path: Path
):
    """Two servers' desks, each with its own board, race for the Thursday 11:00 slot
    (4 places): exactly 4 win; the losers' desks learn it from the store."""
    with two_connections(backend, tmp_path) as (one, two):
        desks = [
            CallbackDesk(_Host(catalog, clock), s.callbacks, s.outbox, new_id=counter_ids(p))
            for s, p in ((one, "a"), (two, "b"))
        ]
        for d in desks:
            d.board()  # both built before anyone books: each goes stale at once
        outcomes: list[str] = []
        lock = threading.Lock()

        def ask(n: int) -> None:
            try:
                got = desks[n % 2].request_callback(f"c{n}", "mortgage", AT, PHONE, at=THU_0900)
                out = got.advisor_id or "?"
            except SlotTaken:
                out = "taken"
            with lock:
                outcomes.append(out)

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert Counter(outcomes) == {
            "taken": 12,
            "anna_holm": 2,
            "mikkel_berg": 1,
            "james_carter": 1,
        }
        booked = one.callbacks.booked(None, 0.0, 1e15)
        assert len(booked) == 4
        assert {c.scheduled_for for c in booked} == {THU_0900}
        for d in desks:
            assert_board_is_the_stores(d)


# ------------------------------------------------------------------------------ reads
def test_the_advisor_customer_view_and_the_supervisors_board(engines: Callable[..., Engine]):
    engine = engines()
    desk = engine.callbacks
    engine.ingest_batch(
        batch(
            *[
                page("https://bank.example/mortgages/x", user="u1", at=T0 - i * 3_600)
                for i in range(5)
            ]
        )
    )
    available(desk, "anna_holm")
    c = desk.request_callback("u1", "mortgage", NOW, PHONE)
    view = desk.customer_view("u1")
    assert view.known
    assert view.customer_id == "u1"
    (mortgage,) = view.interests
    assert (mortgage.topic, mortgage.live, mortgage.trend) == ("mortgage", True, "new")
    assert mortgage.reason == "viewed mortgage pages 6 times in 14 days"
    assert [j.name for j in view.journey[:2]] == ["Callback Assigned", "Callback Requested"]
    assert [x.id for x in view.callbacks] == [c.id]
    assert view.consent == {"advisor_contact": True, "marketing": True, "personalization": True}
    assert desk.routed_to("u1", "anna_holm")
    assert not desk.routed_to("u1", "mikkel_berg")
    with pytest.raises(NotFound):
        desk.customer_view("nobody")
    board = {a.id: a for a in desk.advisors()}
    assert (board["anna_holm"].presence, board["anna_holm"].load) == (Presence.AVAILABLE, 1)
    assert board["anna_holm"].on_shift
    assert board["mikkel_berg"].presence is Presence.OFFLINE
    queue = desk.advisor_queue("anna_holm")
    assert [x.id for x in queue.callbacks] == [c.id]
    assert queue.load == 1
    with pytest.raises(NotFound):
        desk.advisor_queue("nobody")
    with pytest.raises(NotFound):
        desk.set_presence("nobody", Presence.AVAILABLE)


def test_an_advisor_placement_decides_on_the_live_board(engines: Callable[..., Engine]):
    engine = engines()
    engine.ingest_batch(
        batch(
            *[page("https://bank.example/mortgages/x", user="u1", at=T0 - i * 60) for i in range(5)]
        )
    )
    card = engine.decide(DecisionRequest(placement="topic_advisor"), user_id="u1").items[0].advisor
    assert card is not None
    assert not card.available
    assert card.slots
    engine.callbacks.set_presence("mikkel_berg", Presence.AVAILABLE)
    card = engine.decide(DecisionRequest(placement="topic_advisor"), user_id="u1").items[0].advisor
    assert card is not None
    assert card.available
    assert card.advisor.id == "mikkel_berg"
    engine.callbacks.request_callback("u2", "mortgage", NOW, PHONE)  # Mikkel's one place
    card = engine.decide(DecisionRequest(placement="topic_advisor"), user_id="u1").items[0].advisor
    assert card is not None
    assert not card.available


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgresql"])
def test_the_whole_life_on_every_backend(
    backend: str, catalog: Catalog, clock: FixedClock, tmp_path: Path
):
    with open_backend(backend, tmp_path) as stores:
        engine = Engine(catalog, stores, clock, new_id=counter_ids())
        desk = engine.callbacks
        available(desk, "anna_holm", "mikkel_berg")
        c = desk.request_callback("u1", "mortgage", NOW, PHONE)
        c = desk.decline(c.id, "anna_holm")
        c = desk.accept(c.id, "mikkel_berg")
        c = desk.connect(c.id)
        c = desk.complete(c.id, "mikkel_berg")
        assert c.state is CallbackState.COMPLETED
        assert c.version == 5
        assert names(engine, "u1")[-1] == "Callback Completed"
        assert len(engine.outbox.messages()) == 1
        assert_board_is_the_stores(desk)
        built = board_of(
            [*desk.store.booked(None, 0, 1e15)],
            {a: p for a, (p, _) in desk.store.presences().items()},
            desk.store.rotation(),
        )
        assert built.state("mikkel_berg").last_assigned == T0
        engine.release()
