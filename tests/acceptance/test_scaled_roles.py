"""The two scaled roles in one process: a stateless ApiWorker and a FoldWorker over the
in-memory bus and logs, the live profiles on a real Redis (skipped with the reason when
absent). Read-your-writes, the idempotent fold, a fold restart from the saved position,
feedback learned by the one model writer and its copy reloaded by the API worker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from urllib.parse import urlsplit

import pytest

from nextbest.api_worker import ApiWorker
from nextbest.bus import MemoryBus
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.engine import Engine, IngestRequest
from nextbest.errors import Forbidden, StoreUnavailable
from nextbest.events.model import Event
from nextbest.events.parse import Parsed
from nextbest.fold_worker import FoldWorker
from nextbest.guard.senders import KeyKind, Sender
from nextbest.scaled_erasure import Tombstones, tombstone_key
from nextbest.store import Stores, memory_stores, with_state
from nextbest.store.port import SequencedLog, StoredEvent
from nextbest.store.redis import RedisState
from tests.support import T0, batch, counter_ids, identify, page, track

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_ROLES", "redis://127.0.0.1:6379/13")
MORTGAGE = "https://bank.example/mortgages/rates"
SERVER = Sender(KeyKind.SERVER)
KEY = tombstone_key("roles-test-secret")


class Deployment:
    """One fold worker (its loop in a thread) and one API worker on shared logs."""

    def __init__(self, catalog: Catalog, clock: FixedClock, bus: MemoryBus, logs: Stores) -> None:
        self.catalog, self.clock, self.bus, self.logs = catalog, clock, bus, logs
        self.state = RedisState(REDIS, "nextbest-roles", timeout=2.0)
        self.reads = RedisState(REDIS, "nextbest-roles", timeout=2.0)
        self.engine = Engine(catalog, with_state(logs, self.state, lambda: None), clock)
        self.fold = FoldWorker(
            self.engine,
            bus,
            wait=0.01,
            model_every=0.0,
            wall=clock.now,
            erasures=self.state,
            tombstones=Tombstones(KEY, self.state.tombstones()),
        )
        self.api = ApiWorker(  # decision ids seeded: the exploration draw follows them
            catalog,
            logs,
            self.reads,
            self.reads,
            bus,
            clock,
            read_wait=2.0,
            tombstone_key=KEY,
            new_id=counter_ids("api"),
        )
        self._thread: threading.Thread | None = None

    def restarted_engine(self) -> Engine:
        """The fold worker's engine after a restart: restored from Redis and the event log."""
        return Engine(self.catalog, with_state(self.logs, self.state, lambda: None), self.clock)

    def start_folding(self) -> None:
        self._thread = threading.Thread(target=self.fold.run, daemon=True)
        self._thread.start()

    def stop_folding(self) -> None:
        self.fold.stop()
        if self._thread is not None:
            self._thread.join()

    def send(self, *messages: dict[str, object]) -> object:
        parsed: Parsed = self.api.read_batch(batch(*messages))
        return self.api.accept(IngestRequest(SERVER, parsed, "$.batch"))


class ErasingBus(MemoryBus):
    """The in-memory bus with JetStream's message delete (``ErasableStream``): the stream
    sequences deleted are recorded (the messages stay readable, for the test to look at)."""

    def __init__(self, partitions: int, *, ack_wait: float) -> None:
        super().__init__(partitions, ack_wait=ack_wait)
        self.erased: set[int] = set()

    def message_ids(self, seqs: Collection[int]) -> dict[int, str]:
        held = self.published()
        return {s: held[s - 1].message_id for s in seqs if s not in self.erased}

    def erase_messages(self, seqs: Collection[int]) -> int:
        fresh = set(seqs) - self.erased
        self.erased |= fresh
        return len(fresh)

    def purge_learning(self, upto: int) -> None:
        pass


def deployed(catalog: Catalog, bus: MemoryBus) -> Iterator[Deployment]:
    try:
        RedisState(REDIS, "nextbest-roles", timeout=2.0).drop()
    except StoreUnavailable as exc:
        url = urlsplit(REDIS)
        pytest.skip(f"Redis not reachable at {url.hostname}:{url.port or 6379}: {exc}")
    clock = FixedClock(T0)
    made = Deployment(catalog, clock, bus, memory_stores())
    yield made
    made.stop_folding()
    made.reads.close()
    made.state.drop()
    made.state.close()


@pytest.fixture
def deploy(catalog: Catalog) -> Iterator[Deployment]:
    yield from deployed(catalog, MemoryBus(4, ack_wait=0.5))


@pytest.fixture
def erasing(catalog: Catalog) -> Iterator[Deployment]:
    yield from deployed(catalog, ErasingBus(4, ack_wait=0.5))


def test_the_session_that_sent_an_event_decides_on_it(deploy: Deployment):
    deploy.start_folding()
    for n in range(3):
        deploy.send(page(MORTGAGE, user="u1", at=T0 - 10 + n))
        deploy.api.decide(DecisionRequest(placement="home_feed"), user_id="u1")
        profile, position, _ = deploy.api.live.read("u1", None, False)
        assert profile.event_count == n + 1  # read what was written, before deciding
        assert position == n + 1
    assert deploy.api.read_timeouts == 0


def test_a_session_reads_its_own_write_on_another_api_worker(deploy: Deployment):
    other = ApiWorker(
        deploy.catalog, deploy.logs, deploy.reads, deploy.reads, deploy.bus, deploy.clock
    )
    waits: list[bool] = []
    other.on_read_wait = lambda seconds, timed_out: waits.append(timed_out)
    other.read_wait = 0.05
    deploy.send(page(MORTGAGE, user="u1", anon="d1", at=T0 - 10))  # through the first worker
    other.decide(DecisionRequest(placement="home_feed"), anonymous_id="d1")  # fold down
    assert waits == [True]  # the other worker knew of the write: it waited (bounded)
    deploy.start_folding()
    other.read_wait = 2.0
    for n in range(3):
        deploy.send(page(MORTGAGE, user="u1", anon="d1", at=T0 - 9 + n))
        other.decide(DecisionRequest(placement="home_feed"), user_id="u1")
        assert True not in waits[1:]  # waited until folded (or the fold was quicker)
        profile, position, mark = other.live.read("u1", "d1", False)
        assert mark == deploy.bus.last_seq() <= position
        assert profile.event_count == n + 2


def test_a_decision_waits_bounded_when_the_fold_is_down(deploy: Deployment):
    deploy.api.read_wait = 0.05
    deploy.send(page(MORTGAGE, user="u1", at=T0 - 10))
    decision = deploy.api.decide(DecisionRequest(placement="home_feed"), user_id="u1")
    assert decision.items  # decided on what was folded (nothing yet): not refused
    assert deploy.api.read_timeouts == 1


def test_a_redelivered_or_retried_event_is_folded_once(deploy: Deployment):
    first = page(MORTGAGE, user="u1", at=T0 - 10)
    deploy.send(first, page(MORTGAGE, user="u1", at=T0 - 9))
    deploy.fold.step()
    assert deploy.fold.position == 2
    deploy.bus.publish([deploy.bus.published()[0]._replace(message_id="other id")])  # same event
    deploy.send(first)  # a retry within the duplicate window: not published again
    assert deploy.bus.last_seq() == 3
    deploy.fold.step()
    profile, _, _ = deploy.api.live.read("u1", None, False)
    assert profile.event_count == 2  # the copy under another bus id: skipped by messageId
    assert deploy.logs.events.count() == 2


def engine_losing_one_answer(catalog: Catalog) -> Engine:
    """An engine whose next event log append commits, then raises as if PostgreSQL went
    away before answering."""
    logs = memory_stores()
    real_append = logs.events.append
    lose = [True]

    def append_then_lose_the_answer(events: Sequence[Event]) -> list[int | None]:
        seqs = real_append(events)
        if lose and lose.pop():
            raise StoreUnavailable("PostgreSQL: server closed the connection unexpectedly")
        return seqs

    logs.events.append = append_then_lose_the_answer  # type: ignore[method-assign]
    return Engine(catalog, logs, FixedClock(T0))


def event_count(engine: Engine, user: str) -> int:
    view = engine.profile_view(user)
    assert view is not None
    return int(view["profile"]["event_count"])


def test_an_append_committed_but_answered_with_an_error_is_folded_once(catalog: Catalog):
    """The fold worker's batch is logged, the answer lost: it tries the batch again, the log
    says 'already there', and the events are folded from the log, once."""
    engine = engine_losing_one_answer(catalog)
    parsed = engine.read_batch(batch(*[page(MORTGAGE, user="u1", at=T0 - 9 + n) for n in (0, 1)]))
    with pytest.raises(StoreUnavailable):
        engine.fold_accepted(parsed.events)
    assert engine.fold_accepted(parsed.events) == [None, None]  # logged already
    assert event_count(engine, "u1") == 2
    assert engine.fold_accepted(parsed.events) == [None, None]  # a true duplicate
    assert event_count(engine, "u1") == 2


def test_a_client_retry_after_a_lost_answer_is_folded_once_by_the_embedded_engine(
    catalog: Catalog,
):
    engine = engine_losing_one_answer(catalog)
    parsed = engine.read_batch(batch(page(MORTGAGE, user="u1", at=T0 - 9)))
    with pytest.raises(StoreUnavailable):  # the client sees a 503 and retries
        engine.accept(IngestRequest(SERVER, parsed, "$.batch"))
    again = engine.accept(IngestRequest(SERVER, parsed, "$.batch"))
    assert (again.accepted, again.duplicates) == (0, 1)  # stored by the first try
    assert event_count(engine, "u1") == 1


def test_a_retry_after_the_duplicate_window_is_stored_and_folded_once(deploy: Deployment):
    """The bus forgets a messageId after its duplicate window (JetStream: 2 minutes): a retry
    later than that is published again and answered as accepted (the API worker does not ask
    PostgreSQL, which it must run without); the fold skips it by messageId, so it is logged
    and folded once, and counted as a duplicate there (docs/scale-out.md)."""
    message = page(MORTGAGE, user="u1", at=T0 - 10)
    first = deploy.send(message)
    deploy.fold.step()
    deploy.bus.duplicate_window = 0.0  # the window has passed
    late = deploy.send(message)
    assert (first.accepted, late.accepted, late.duplicates) == (1, 1, 0)  # type: ignore[attr-defined]
    assert deploy.bus.last_seq() == 2
    deploy.fold.step()
    assert deploy.fold.stats.duplicates == 1
    assert deploy.logs.events.count() == 1
    profile, _, _ = deploy.api.live.read("u1", None, False)
    assert profile.event_count == 1


def test_a_restarted_fold_worker_resumes_after_its_saved_position(deploy: Deployment):
    deploy.send(*[page(MORTGAGE, user=f"u{n}", at=T0 - 10) for n in range(5)])
    deploy.fold.step()
    deploy.send(*[page(MORTGAGE, user=f"u{n}", at=T0 - 5) for n in range(5)])
    # the worker dies here: the second batch delivered, never acknowledged nor saved
    assert deploy.bus.fetch("fold", 100, 0.0)
    again = Engine(
        deploy.catalog, with_state(deploy.logs, deploy.state, lambda: None), deploy.clock
    )
    assert again.fold_position == 5
    fold = FoldWorker(again, deploy.bus, wait=0.01)
    assert fold.step() == 5
    assert fold.position == 10
    for n in range(5):
        profile, _, _ = deploy.api.live.read(f"u{n}", None, False)
        assert profile.event_count == 2
    assert deploy.logs.events.count() == 10


def test_feedback_teaches_the_one_model_writer_and_the_copy_reaches_the_api(
    deploy: Deployment,
):
    deploy.start_folding()
    deploy.send(page(MORTGAGE, user="u1", at=T0 - 10))
    decision = deploy.api.decide(DecisionRequest(placement="app_home"), user_id="u1")
    assert decision.items
    item = decision.items[0]
    props = {"decision_id": decision.decision_id, "promotion_id": item.offer_id}
    deploy.send(
        track("Promotion Viewed", {**props, "position": item.position}, user="u1", at=T0 - 1),
        track("Promotion Clicked", {**props, "position": item.position}, user="u1", at=T0),
    )
    deploy.api.decide(DecisionRequest(placement="app_home"), user_id="u1")  # waits for the fold
    assert deploy.engine.learner.learned >= 1
    deploy.fold.stop()  # the loop publishes models with every step (model_every=0)
    deploy.api.flush()  # the tick that reloads the copy
    assert deploy.api.learner.learned == deploy.engine.learner.learned
    assert deploy.api.model_age() is not None


def test_a_flushed_redis_is_saved_again_whole(deploy: Deployment):
    fold = FoldWorker(deploy.engine, deploy.bus, wait=0.01, reads=deploy.reads, check_every=0.0)
    deploy.send(*[page(MORTGAGE, user=f"u{n}", at=T0 - 10) for n in range(5)])
    fold.step()
    deploy.state.client.flushdb()  # Redis lost everything
    fold.step()  # noticed: everything saved again
    for n in range(5):
        profile, position, _ = deploy.api.live.read(f"u{n}", None, False)
        assert profile.event_count == 1
        assert position == 5
    assert deploy.api.live.model(None)[0] is not None


def test_a_restart_on_an_empty_redis_rebuilds_from_the_event_log(deploy: Deployment):
    deploy.send(*[page(MORTGAGE, user=f"u{n}", at=T0 - 10) for n in range(3)])
    deploy.fold.step()
    deploy.state.drop()
    again = Engine(
        deploy.catalog, with_state(deploy.logs, deploy.state, lambda: None), deploy.clock
    )
    fold = FoldWorker(again, deploy.bus, wait=0.01)  # from stream position 0: all skipped
    deploy.send(page(MORTGAGE, user="u0", at=T0 - 5))
    while fold.step():
        pass
    fold.step()
    profile, position, _ = deploy.api.live.read("u0", None, False)
    assert profile.event_count == 2
    assert position == 4
    assert deploy.logs.events.count() == 4


# ---------------------------------------------------------------- the log written behind
class HeldLog:
    """The event log as the fold worker's writer sees it, failing while ``away`` (PostgreSQL
    down, or a commit held up); ``lose_answer``: the next write commits, then fails as if the
    answer was lost with the connection."""

    def __init__(self, log: SequencedLog) -> None:
        self.log = log
        self.away = True
        self.lose_answer = False
        self.writes = 0

    def append_at(self, events: Sequence[StoredEvent], position: int) -> None:
        if self.away:
            raise StoreUnavailable("PostgreSQL: connection refused")
        self.log.append_at(events, position)
        self.writes += 1
        if self.lose_answer:
            self.lose_answer = False
            raise StoreUnavailable("PostgreSQL: server closed the connection unexpectedly")

    def logged(self, message_ids: Collection[str]) -> set[str]:
        return self.log.logged(message_ids)

    def source_position(self) -> int:
        return self.log.source_position()

    def last_seq(self) -> int:
        return self.log.last_seq()


def stitched_traffic(deploy: Deployment) -> None:
    """A device browses anonymously, then logs in (identify): the stitch reads the device's
    events, which the fold has folded a moment ago and the log may not hold yet."""
    deploy.send(*[page(MORTGAGE, anon="d1", at=T0 - 20 + n) for n in range(3)])
    deploy.send(page(MORTGAGE, user="u2", at=T0 - 18))
    deploy.send(identify({"segment": "gold"}, user="u1", anon="d1", at=T0 - 15))
    deploy.send(page(MORTGAGE, user="u1", anon="d1", at=T0 - 14))


def count_of(deploy: Deployment, user: str) -> int:
    profile, _, _ = deploy.api.live.read(user, None, False)
    return profile.event_count


def test_events_are_visible_before_the_log_holds_them_and_logged_once(deploy: Deployment):
    writer = HeldLog(deploy.logs.events)  # type: ignore[arg-type]
    fold = FoldWorker(deploy.engine, deploy.bus, wait=0.01, writer=writer)
    stitched_traffic(deploy)
    fold.step()  # folded and saved, then the log write fails: kept, nothing acknowledged
    assert count_of(deploy, "u1") == 5  # the device's 3 pages (from the tail), identify, page
    assert count_of(deploy, "u2") == 1
    assert deploy.logs.events.count() == 0
    assert fold.position == deploy.bus.last_seq() == 6
    assert fold.logged_position == 0
    assert fold.stats.log_failures == 1
    writer.away, writer.lose_answer = False, True  # back, and the first answer is lost
    fold.step()
    assert fold.logged_position == 0
    fold.step()  # the retry finds its position logged: not written twice
    assert writer.writes == 1
    assert [s.event.message_id for s in deploy.logs.events.scan()] == [
        m.message_id for m in deploy.bus.published()
    ]
    assert fold.logged_position == 6
    assert deploy.engine.replay().identical  # the log folds into what Redis holds


def test_a_crash_between_the_save_and_the_log_write_logs_the_rest_once(deploy: Deployment):
    """Redis holds events the log lacks when the worker dies: the restarted worker redelivers
    from the log's position, logs them with the seqs they were folded with, folds none again,
    and folds what came after."""
    fold = FoldWorker(deploy.engine, deploy.bus, wait=0.01)
    deploy.send(*[page(MORTGAGE, user=f"u{n}", at=T0 - 30) for n in range(3)])
    fold.step()  # saved and logged
    writer = HeldLog(deploy.logs.events)  # type: ignore[arg-type]
    fold = FoldWorker(deploy.engine, deploy.bus, wait=0.01, writer=writer)
    first = page(MORTGAGE, user="u0", at=T0 - 25)
    stitched_traffic(deploy)
    deploy.send(first)
    fold.step()
    deploy.bus.duplicate_window = 0.0
    deploy.send(first)  # a late retry, in the stretch Redis holds and the log does not
    fold.step()
    assert fold.position == 11
    assert fold.logged_position == 3
    assert fold.stats.duplicates == 1
    # the worker dies here; more events come meanwhile
    deploy.send(page(MORTGAGE, user="u1", at=T0 - 5), identify({}, user="u1", anon="d2"))
    again = deploy.restarted_engine()
    assert again.fold_position == 11
    assert again.folded_seq == 10
    restarted = FoldWorker(again, deploy.bus, wait=0.01, batch=4)
    assert restarted.position == 11
    assert restarted.logged_position == 3
    for _ in range(20):
        if restarted.logged_position == deploy.bus.last_seq():
            break
        restarted.step()
    assert restarted.position == restarted.logged_position == deploy.bus.last_seq() == 13
    assert restarted.stats.events == 2  # only what came after the saved position
    ids = [s.event.message_id for s in deploy.logs.events.scan()]
    assert len(ids) == len(set(ids)) == 12
    assert [s.seq for s in deploy.logs.events.scan()] == list(range(1, 13))
    assert count_of(deploy, "u0") == 2
    assert count_of(deploy, "u1") == 8  # a page in the first batch, then 7 here
    assert again.replay().identical  # the log folds into what Redis holds
    held = deploy.bus.published()
    came = [s.stream_seq for s in deploy.logs.events.scan()]  # logged again ones too
    assert [held[n - 1].message_id for n in came] == ids  # type: ignore[operator]
    assert 11 not in came  # the late retry: a duplicate


def test_the_fold_goes_on_while_the_log_is_away_then_it_catches_up(deploy: Deployment):
    writer = HeldLog(deploy.logs.events)  # type: ignore[arg-type]
    fold = FoldWorker(deploy.engine, deploy.bus, wait=0.01, writer=writer, max_unlogged=5)
    thread = threading.Thread(target=fold.run, daemon=True)
    thread.start()
    try:
        deploy.send(*[page(MORTGAGE, anon="d1", at=T0 - 20 + n) for n in range(3)])
        deploy.send(page(MORTGAGE, user="u2", at=T0 - 18))
        deploy.send(identify({"segment": "gold"}, user="u1", anon="d1", at=T0 - 15))
        deploy.api.decide(DecisionRequest(placement="home_feed"), user_id="u1")  # read it
        assert count_of(deploy, "u1") == 4  # the device's pages (from the tail), identify
        assert count_of(deploy, "u2") == 1
        deploy.send(page(MORTGAGE, user="u1", anon="d1", at=T0 - 14))
        time.sleep(0.2)
        assert fold.position == 5  # backpressure: 5 deliveries wait for the log
        assert deploy.logs.events.count() == 0
        writer.away = False
        deadline = time.monotonic() + 10
        while fold.logged_position < deploy.bus.last_seq() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fold.logged_position == fold.position == deploy.bus.last_seq()
        assert count_of(deploy, "u1") == 5
        assert deploy.logs.events.count() == 6
        assert fold.stats.log_failures >= 1
    finally:
        fold.stop()
        thread.join()


def test_an_api_worker_serves_callbacks_and_publishes_their_steps_to_the_bus(
    deploy: Deployment,
):
    """The callback desk of an API worker routes on the store the workers share and sends
    each step to the bus like any event: the fold worker folds them into the profile, and
    the advisor placement decides on the store's board (docs/advisors.md)."""
    from nextbest.advisors.model import CallbackMode, CallbackState, Presence

    deploy.start_folding()
    desk = deploy.api.callbacks
    booked = desk.request_callback("u9", "mortgage", CallbackMode.LATER, "+4512345678")
    assert booked.state is CallbackState.REQUESTED
    assert booked.scheduled_for is not None
    deadline = time.monotonic() + 5
    while True:
        profile = deploy.api.live.get("u9")
        names = [e.name for e in profile.recent] if profile is not None else []
        if len(names) == len(booked.history) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert names == [t.event for t in booked.history] == ["Callback Requested"]
    assert booked.advisor_id is not None
    desk.set_presence(booked.advisor_id, Presence.AVAILABLE, at=T0)
    board = deploy.api.callbacks.board()
    assert board.state(booked.advisor_id).presence is Presence.AVAILABLE
    assert board.bookings(booked.advisor_id) == (booked.scheduled_for,)


def test_an_api_worker_binds_a_stitched_device_to_its_customer(deploy: Deployment):
    """A browser key's event carrying only a device's anonymousId is refused on an API
    worker once the fold worker saved that device's link to a customer, unless the token
    binds that customer (the links read from Redis: ``LiveProfiles.links_for``); a decision
    for the anonymousId alone is a stranger's."""
    deploy.start_folding()
    victim = Sender(KeyKind.BROWSER, bound_user="victim")
    attacker = Sender(KeyKind.BROWSER)

    def send_as(sender: Sender, *messages: dict[str, object]) -> object:
        parsed = deploy.api.read_batch(batch(*messages))
        return deploy.api.accept_many([IngestRequest(sender, parsed, "$.batch")])[0]

    login = identify({"age": 40}, user="victim", anon="dev-v", at=T0 - 10)
    assert send_as(victim, login, page(MORTGAGE, anon="dev-v", at=T0 - 9)).accepted == 2
    deadline = time.monotonic() + 5
    while deploy.api.live.links_for([], ["dev-v"]).identity.anon_to_user.get("dev-v") is None:
        assert time.monotonic() < deadline, "the fold worker never saved the login"
        time.sleep(0.01)
    refused = send_as(attacker, page(MORTGAGE, anon="dev-v", at=T0 - 5))
    assert isinstance(refused, Forbidden)
    assert "$.batch[0].anonymousId" in refused.message
    assert send_as(victim, page(MORTGAGE, anon="dev-v", at=T0 - 4)).accepted == 1
    assert send_as(attacker, page(MORTGAGE, anon="dev-other", at=T0 - 4)).accepted == 1
    decided = deploy.api.decide_as(
        attacker, DecisionRequest(placement="home_feed"), anonymous_id="dev-v"
    )
    assert (decided.customer_id, decided.segments) == ("anon:dev-v", [])


def test_an_erasure_through_an_api_worker_also_drops_another_worker_s_decisions(
    deploy: Deployment,
):
    """The erasure command waits behind the customer's events on the bus; the fold worker
    erases them everywhere; another API worker's decisions for them not written yet are
    dropped at its next flush (the erasures' feed), never written after the erasure."""
    from nextbest.audit.model import Actor

    other = ApiWorker(
        deploy.catalog,
        deploy.logs,
        deploy.reads,
        deploy.reads,
        deploy.bus,
        deploy.clock,
        tombstone_key=KEY,
    )
    other.read_wait = 0.0
    deploy.start_folding()
    deploy.send(identify({"email": "e@x.dk"}, user="gone", anon="gone-dev", at=T0 - 9))
    deploy.send(page(MORTGAGE, user="kept", at=T0 - 8))
    deploy.api.decide(DecisionRequest(placement="home_feed"), user_id="gone")
    deploy.api.flush()
    other.decide(DecisionRequest(placement="home_feed"), user_id="gone")  # pending there
    other.decide(DecisionRequest(placement="home_feed"), user_id="kept")
    report = deploy.api.erase_customer("gone", Actor(kind="admin", key_id="k"))
    assert (report.events, report.decisions, report.profiles) == (1, 1, 1)
    assert report.anonymous_ids == ["gone-dev"]
    other.flush()
    assert [d.customer_id for d in deploy.logs.decisions.decisions()] == ["kept"]
    assert deploy.api.live.get("gone") is None
    assert deploy.api.erasure_status(report.receipt).status == "erased"
    assert deploy.logs.events.events_of(["gone"], ["gone-dev"], 10**9) == []


def test_an_erasure_deletes_the_customer_s_messages_from_the_stream(erasing: Deployment):
    """One fold worker logs each event with the stream sequence it came by: its erasure
    deletes the messages of the customer's logged events (on JetStream: overwritten), the
    command once logged, and every duplicate of a logged event it meets (a client's retry
    past the bus's window: an erasure would find the logged copy only); another customer's
    messages stay."""
    from nextbest.audit.model import Actor

    deploy = erasing
    bus = deploy.bus
    assert isinstance(bus, ErasingBus)
    first = page(MORTGAGE, user="gone", anon="gone-dev", at=T0 - 9)
    deploy.send(page(MORTGAGE, anon="gone-dev", at=T0 - 12))
    deploy.send(identify({"email": "e@x.dk"}, user="gone", anon="gone-dev", at=T0 - 10), first)
    deploy.send(page(MORTGAGE, user="kept", at=T0 - 8))
    bus.duplicate_window = 0.0
    deploy.send(first)  # a late retry: published again, a duplicate at the fold
    bus.duplicate_window = 120.0
    deploy.start_folding()
    deadline = time.monotonic() + 10
    while bus.erased != {5}:  # the duplicate, once logged and acknowledged
        assert time.monotonic() < deadline, bus.erased
        time.sleep(0.02)
    report = deploy.api.erase_customer("gone", Actor(kind="admin", key_id="k"))
    assert report.events == 3
    while bus.erased != {1, 2, 3, 5, 6}:  # the customer's, the command (6) once logged
        assert time.monotonic() < deadline, bus.erased
        time.sleep(0.02)
    assert bus.published()[5].kind == "erase"
    assert [m.message_id for n, m in enumerate(bus.published(), 1) if n not in bus.erased] == [
        bus.published()[3].message_id
    ]
    assert [s.stream_seq for s in deploy.logs.events.scan()] == [4]  # the other customer's


def test_a_restart_logs_again_without_what_a_tombstone_dropped(erasing: Deployment):
    """Past an erasure, a fold drops an erased customer's late event (a tombstone) and
    folds another's, saves, and dies before the log write: the restarted worker logs the
    other's event again with the seq it was folded with and its stream sequence, not the
    dropped one (whose seq it never had), and deletes that one from the stream."""
    import msgspec

    from nextbest.audit.model import Actor
    from nextbest.bus.port import BusMessage

    deploy = erasing
    bus = deploy.bus
    assert isinstance(bus, ErasingBus)
    deploy.send(page(MORTGAGE, user="gone", at=T0 - 9))
    (late,) = deploy.api.read_batch(batch(page(MORTGAGE, user="gone", at=T0 - 8))).events
    deploy.start_folding()
    deploy.api.erase_customer("gone", Actor(kind="admin", key_id="k"))
    deploy.stop_folding()
    writer = HeldLog(deploy.logs.events)  # type: ignore[arg-type]
    stones = Tombstones(KEY, deploy.state.tombstones())
    fold = FoldWorker(deploy.engine, bus, wait=0.01, writer=writer, tombstones=stones)
    bus.publish([BusMessage(0, "late-copy", msgspec.msgpack.encode(late))])  # seq 3
    deploy.send(page(MORTGAGE, user="kept", at=T0 - 7))  # seq 4
    for _ in range(20):
        if fold.position == 4:
            break
        fold.step()
    assert fold.position == 4
    assert fold.stats.erased_dropped == 1
    assert fold.logged_position < 4  # the worker dies here
    again = deploy.restarted_engine()
    stones = Tombstones(KEY, deploy.state.tombstones())
    restarted = FoldWorker(again, bus, wait=0.01, tombstones=stones)
    for _ in range(20):
        if restarted.logged_position == 4 and 3 in bus.erased:
            break
        restarted.step()
    assert restarted.logged_position == 4
    assert [(s.event.user_id, s.stream_seq) for s in deploy.logs.events.scan()] == [("kept", 4)]
    assert bus.erased == {1, 2, 3}  # the customer's event, the command, the late copy
    assert again.replay().identical


def test_an_erasure_the_fold_has_not_reached_is_pending_then_done(deploy: Deployment):
    from nextbest.audit.model import Actor
    from nextbest.errors import ErasurePending

    deploy.send(page(MORTGAGE, user="gone", at=T0 - 9))
    deploy.api.erase_wait = 0.05
    with pytest.raises(ErasurePending) as pending:
        deploy.api.erase_customer("gone", Actor(kind="admin", key_id="k"))
    assert deploy.api.erasure_status(pending.value.receipt) is None
    deploy.start_folding()
    deadline = time.monotonic() + 10
    while deploy.api.erasure_status(pending.value.receipt) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert deploy.api.erasure_status(pending.value.receipt).events == 1
    assert deploy.logs.events.count() == 0


def test_an_erased_customer_s_event_still_in_flight_is_not_folded_back(deploy: Deployment):
    """An event accepted before the erasure that reaches the fold after it (here: published
    late, under another messageId) is dropped by the tombstone; one sent after it is new."""
    import msgspec

    from nextbest.audit.model import Actor
    from nextbest.bus.port import BusMessage

    deploy.start_folding()
    deploy.send(page(MORTGAGE, user="gone", at=T0 - 9))
    in_flight = page(MORTGAGE, user="gone", at=T0 - 8)
    (event,) = deploy.api.read_batch(batch(in_flight)).events
    deploy.api.erase_customer("gone", Actor(kind="admin", key_id="k"))
    body = msgspec.msgpack.encode(event)  # accepted (received_at) before the erasure
    deploy.bus.publish([BusMessage(0, "late-copy", body)])
    deploy.clock.advance(1.0)
    deploy.send(page(MORTGAGE, user="gone", at=T0 - 7))  # after it: new data
    deadline = time.monotonic() + 10
    while deploy.fold.position < deploy.bus.last_seq():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert deploy.fold.stats.erased_dropped == 1
    profile = deploy.api.live.get("gone")
    assert profile is not None
    assert profile.event_count == 1
