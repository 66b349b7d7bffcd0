"""Ingestion never drops good data: a message that breaks the vocabulary is quarantined alone,
replayed once the vocabulary accepts it; concurrent requests share one durable commit."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

import pytest

from nextbest.engine import Engine, IngestRequest, IngestResult
from nextbest.errors import Forbidden, NextbestError, StoreError
from nextbest.events import names
from nextbest.events.model import Event
from nextbest.group_commit import GroupCommit
from nextbest.guard import KeyKind, Sender
from tests.support import T0, batch, page, track

WRITE = Sender(KeyKind.WRITE)
BROWSER = Sender(KeyKind.BROWSER)


def request(engine: Engine, *messages: dict[str, object], sender: Sender = WRITE) -> IngestRequest:
    return IngestRequest(sender, engine.read_batch(batch(*messages)), "$.batch")


def mixed() -> list[dict[str, object]]:
    return [
        page("https://bank.example/mortgages/rates", user="u1", at=T0 - 60),
        track("Application Started", {"step": 1}, user="u1", at=T0 - 50),
        track("Calculator Used", {"topic": "mortgage"}, user="u1", at=T0 - 40),
    ]


def test_the_good_messages_of_a_batch_are_kept_and_the_bad_one_held(engine: Engine):
    result = engine.accept(request(engine, *mixed()))
    assert (result.accepted, result.duplicates) == (2, 0)
    (rejected,) = result.rejected
    assert (rejected.index, rejected.code, rejected.path) == (
        1,
        "missing_property",
        "$.batch[1].properties.product",
    )
    assert engine.event_log.count() == 2
    profile = engine.profile("u1")
    assert profile is not None
    assert profile.interests["mortgage"].total == 2
    (held,) = engine.quarantined()
    assert (held.code, held.sender, held.event.name) == (
        "missing_property",
        "write",
        "Application Started",
    )


def test_replay_lets_in_what_a_fixed_vocabulary_accepts(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    engine.accept(request(engine, *mixed()))
    still = engine.replay_quarantine()
    assert (still.replayed, len(still.still_held)) == (0, 1)
    assert still.still_held[0].reason == "'Application Started' needs property 'product'"

    monkeypatch.setitem(names.KNOWN_EVENTS, "Application Started", {})  # the vocabulary fix
    report = engine.replay_quarantine()
    assert (report.replayed, report.duplicates, report.still_held) == (1, 0, [])
    assert engine.quarantined() == []
    assert engine.event_log.count() == 3
    assert [s.event.name for s in engine.event_log.scan()][-1] == "Application Started"
    profile = engine.profile("u1")
    assert profile is not None
    assert profile.interests["mortgage"].total == 2
    assert engine.replay().identical  # the replayed event folds like any other


def test_a_browser_key_sending_a_server_fact_is_refused_whole_not_quarantined(engine: Engine):
    sent = request(
        engine,
        page("https://bank.example/", anon="a1"),
        track("Balance Updated", {"balance": "high"}, anon="a1"),
        sender=BROWSER,
    )
    with pytest.raises(Forbidden, match=r"\$\.batch\[1\]\.event"):
        engine.accept(sent)
    assert engine.event_log.count() == 0
    assert engine.quarantined() == []


def test_concurrent_requests_share_durable_commits(engine: Engine):
    """Many requests at once: fewer appends than requests, and each request gets its own
    answer (a refused one does not spoil the others)."""
    appends: list[int] = []
    append = engine.event_log.append
    gate = threading.Event()

    def slow_append(events: Sequence[Event]) -> list[int | None]:
        gate.wait(5)  # the first commit waits until every request is queued
        appends.append(len(events))
        return append(events)

    engine.event_log.append = slow_append  # type: ignore[method-assign]
    requests = [request(engine, page(f"https://bank.example/{i}", user=f"c{i}")) for i in range(40)]
    requests[7] = request(engine, page("https://bank.example/", user="c7"), sender=BROWSER)
    futures = [engine.submit(r) for r in requests]
    gate.set()
    results: list[IngestResult | BaseException] = []
    for f in futures:
        try:
            results.append(f.result(10))
        except NextbestError as exc:
            results.append(exc)
    assert isinstance(results[7], Forbidden)
    assert all(
        isinstance(r, IngestResult) and r.accepted == 1 for i, r in enumerate(results) if i != 7
    )
    assert sum(appends) == 39
    assert len(appends) < 40 / 2  # shared: at most a couple of commits
    assert engine.event_log.count() == 39


def test_a_store_failure_refuses_every_request_of_its_group(engine: Engine):
    def broken(events: Sequence[Event]) -> list[int | None]:
        raise StoreError("disk full")

    engine.event_log.append = broken  # type: ignore[method-assign]
    future = engine.submit(request(engine, page("https://bank.example/", user="u")))
    with pytest.raises(StoreError, match="disk full"):
        future.result(5)
    assert engine.profile("u") is None


def test_group_commit_groups_what_is_queued_and_stops_after_draining():
    groups: list[list[int]] = []
    release = threading.Event()

    def accept_many(requests: Sequence[int]) -> list[int | NextbestError]:
        release.wait(5)
        groups.append(list(requests))
        return [NextbestError("odd") if r % 2 else r * 10 for r in requests]

    commit: GroupCommit[int, int] = GroupCommit(accept_many, size=lambda r: 1, max_events=4)
    futures: list[Future[int]] = [commit.submit(i) for i in range(10)]
    release.set()
    commit.close()
    assert [len(g) for g in groups]
    assert all(len(g) <= 4 for g in groups)
    assert sorted(r for g in groups for r in g) == list(range(10))
    for i, f in enumerate(futures):
        if i % 2:
            with pytest.raises(NextbestError, match="odd"):
                f.result(0)
        else:
            assert f.result(0) == i * 10
    late = commit.submit(99)
    with pytest.raises(NextbestError, match="closed"):
        late.result(0)


def test_a_bug_in_a_group_reaches_every_caller_and_the_thread_goes_on():
    calls: list[int] = []

    def accept_many(requests: Sequence[int]) -> list[int | NextbestError]:
        calls.append(len(requests))
        if requests[0] == 0:
            raise RuntimeError("bug")
        return list(requests)

    commit: GroupCommit[int, int] = GroupCommit(accept_many, size=lambda r: 1)
    with pytest.raises(RuntimeError, match="bug"):
        commit.submit(0).result(5)
    assert commit.submit(1).result(5) == 1
    commit.close()


def test_waiting_views_are_capped(monkeypatch: pytest.MonkeyPatch):
    """No client can grow the learner's waiting views without bound: past the cap a view is
    not registered (not learned), the ones waiting stay."""
    from nextbest.decide.model import DecisionRequest
    from nextbest.learn import learner as learner_module
    from nextbest.learn.learner import Learner
    from tests.support import feedback

    monkeypatch.setattr(learner_module, "MAX_WAITING_VIEWS", 3)
    from nextbest.bootstrap import build_engine
    from nextbest.settings import Settings

    engine = build_engine(Settings(catalog="examples/bank", data=":memory:"), freeze_gc=False)
    try:
        user = "u-cap"
        engine.ingest_batch(batch(page("https://bank.example/mortgages", user=user)))
        for _ in range(6):
            d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
            engine.ingest_batch(batch(feedback(d, "Promotion Viewed", at=d.timestamp)))
        assert isinstance(engine.learner, Learner)
        assert engine.learner.pending_views == 3
    finally:
        engine.close()
