"""The identity-theft guard's fraud alert on the scaled paths (issue #17): an injected takeover
session folded by the fold worker, or by two partitioned fold workers, puts exactly one alert
in the PostgreSQL outbox, the same the embedded engine queues for the same events, after the
Redis save that made it; a worker that saved it and died before enqueueing it (the outbox
away, then a restart) leaves it to its successor, which enqueues it once. Real Redis (db 6)
and PostgreSQL (a scratch schema); each skipped with the reason when it is not reachable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from nextbest.api_worker import ApiWorker
from nextbest.bus import MemoryBus
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.engine import Engine, IngestRequest
from nextbest.errors import StoreUnavailable
from nextbest.fold_worker import FoldWorker
from nextbest.guard.alert import FRAUD_CHANNEL
from nextbest.guard.senders import KeyKind, Sender
from nextbest.partitioned_fold import PartitionedFold, consumer_name
from nextbest.store import Stores, memory_stores, with_state
from nextbest.store.memory import MemoryEventLog
from nextbest.store.outbox_postgres import PostgresOutbox
from nextbest.store.port import Outbox, OutboxMessage
from nextbest.store.postgres import PostgresDatabase
from nextbest.store.redis import RedisState
from tests.postgres import scratch_schema
from tests.support import DAY, batch
from tests.unit.test_guard_engine import EVENING, history, takeover

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_ALERTS", "redis://127.0.0.1:6379/6")
NAMESPACE = "nextbest-alerts"
SERVER = Sender(KeyKind.SERVER)
AT = EVENING - DAY  # the takeover, at the victim's own hour
HALVES = ([0, 1], [2, 3])


class Unreachable:
    """The outbox of a process whose PostgreSQL connection is gone: every enqueue fails."""

    def __init__(self, real: Outbox) -> None:
        self.real = real
        self.refused = 0

    def enqueue(self, *args: Any) -> OutboxMessage:
        self.refused += 1
        raise StoreUnavailable("PostgreSQL: server closed the connection unexpectedly")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def alert_rows(outbox: Outbox) -> list[tuple[str, str, str, bytes]]:
    return [
        (m.channel, m.destination, m.key, m.payload)
        for m in outbox.messages()
        if m.channel == FRAUD_CHANNEL
    ]


def embedded_alerts(catalog: Catalog) -> list[tuple[str, str, str, bytes]]:
    engine = Engine(catalog, memory_stores(), FixedClock(AT + 3600))
    engine.ingest_batch(batch(*history(), *takeover(AT)))
    return alert_rows(engine.outbox)


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    with scratch_schema() as url:
        db = PostgresDatabase(url)
        try:
            yield PostgresOutbox(db)
        finally:
            db.close()


@pytest.fixture
def redis() -> Iterator[str]:
    try:
        RedisState(REDIS, NAMESPACE, timeout=2.0).drop()
    except StoreUnavailable as exc:
        url = urlsplit(REDIS)
        pytest.skip(f"Redis not reachable at {url.hostname}:{url.port or 6379}: {exc}")
    yield REDIS
    state = RedisState(REDIS, NAMESPACE, timeout=2.0)
    state.drop()
    state.close()


class Scaled:
    """An API worker and the fold side (one fold worker, or two partitioned ones) on the
    in-memory bus and logs, Redis and the PostgreSQL outbox."""

    def __init__(self, catalog: Catalog, outbox: Outbox, partitioned: bool) -> None:
        self.catalog, self.outbox, self.partitioned = catalog, outbox, partitioned
        self.clock = FixedClock(AT + 3600)
        #: the partitioned workers' wall clock (a parked stitch's pause): moved by ``settle``
        self.now = AT + 3600
        self.bus = MemoryBus(4, ack_wait=60.0)
        self.logs: Stores = memory_stores()._replace(outbox=outbox)
        self.states: list[RedisState] = []
        self.reads = self.redis()
        self.api = ApiWorker(catalog, self.logs, self.reads, self.reads, self.bus, self.clock)
        self.single: FoldWorker | None = None
        self.parts: list[PartitionedFold] = []
        self.start()

    def redis(self) -> RedisState:
        state = RedisState(REDIS, NAMESPACE, timeout=2.0)
        self.states.append(state)
        return state

    def start(self, outbox: Outbox | None = None) -> None:
        """(Re)start the fold side: a restart after a kill -9 (the old objects dropped)."""
        outbox = outbox or self.outbox
        if not self.partitioned:
            logs = self.logs._replace(outbox=outbox)
            engine = Engine(self.catalog, with_state(logs, self.redis(), lambda: None), self.clock)
            self.single = FoldWorker(engine, self.bus, wait=0.0, model_every=0.0)
            return
        log = self.logs.events
        assert isinstance(log, MemoryEventLog)
        self.parts = [
            PartitionedFold(
                self.catalog,
                self.bus,
                self.redis(),
                log,
                log,
                half,
                wait=0.0,
                wall=lambda: self.now,
                owner=f"half{n}",
                outbox=outbox,
            )
            for n, half in enumerate(HALVES)
        ]

    def send(self, *messages: dict[str, Any]) -> None:
        self.api.accept(IngestRequest(SERVER, self.api.read_batch(batch(*messages)), "$.batch"))

    def settle(self) -> None:
        for _ in range(50):
            if self.single is not None:
                self.single.step()
                if self.bus.pending("fold") == 0:
                    return
                continue
            self.now += 0.1  # a stitch put aside goes back after a pause
            for fold in self.parts:
                fold.step()
            if all(self.bus.pending(consumer_name(p)) == 0 for half in HALVES for p in half) and (
                not any(any(f.parked.values()) or f.lags()[2] for f in self.parts)
            ):
                return
        raise AssertionError("the fold did not settle")

    def close(self) -> None:
        self.api.close()
        for state in self.states:
            state.close()


@pytest.fixture(params=["one fold worker", "partitioned fold workers"])
def scaled(
    request: pytest.FixtureRequest, catalog: Catalog, outbox: Outbox, redis: str
) -> Iterator[Scaled]:
    made = Scaled(catalog, outbox, partitioned=request.param != "one fold worker")
    yield made
    made.close()


def test_a_takeover_through_the_fold_makes_the_embedded_engines_one_alert(
    scaled: Scaled, catalog: Catalog
) -> None:
    scaled.send(*history())
    scaled.settle()
    scaled.send(*takeover(AT)[:2])  # logged in: not flagged yet
    scaled.settle()
    assert alert_rows(scaled.outbox) == []
    scaled.send(*takeover(AT)[2:3])  # the payee page: flagged
    scaled.settle()
    assert len(alert_rows(scaled.outbox)) == 1
    scaled.send(*takeover(AT)[3:])  # more of the same session: no second alert
    scaled.settle()
    assert alert_rows(scaled.outbox) == embedded_alerts(catalog)
    sent = (
        scaled.single.stats.alerts_sent
        if scaled.single
        else sum(f.stats.alerts_sent for f in scaled.parts)
    )
    assert sent == 1


def test_an_alert_saved_and_not_enqueued_is_enqueued_once_after_a_restart(
    scaled: Scaled, catalog: Catalog
) -> None:
    scaled.send(*history(), *takeover(AT)[:2])
    scaled.settle()
    away = Unreachable(scaled.outbox)
    scaled.start(away)  # a fold side whose outbox (PostgreSQL) is away
    scaled.send(*takeover(AT)[2:3])
    scaled.settle()  # folded and saved: the alert is due, its enqueue refused
    assert away.refused >= 1
    assert alert_rows(scaled.outbox) == []
    scaled.start()  # killed and restarted: the alert is found saved with the state
    scaled.settle()
    assert len(alert_rows(scaled.outbox)) == 1
    scaled.send(*takeover(AT)[3:])
    scaled.settle()
    scaled.start()  # and again: nothing is enqueued twice
    scaled.settle()
    assert alert_rows(scaled.outbox) == embedded_alerts(catalog)
