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

import pytest
from prometheus_client import generate_latest

from nextbest.api.fold_ops import FoldMetrics
from nextbest.api.metrics import Metrics
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.errors import StoreUnavailable
from nextbest.guard.alert import FRAUD_CHANNEL
from nextbest.guard.senders import KeyKind, Sender
from nextbest.store import memory_stores
from nextbest.store.outbox_postgres import PostgresOutbox
from nextbest.store.port import Outbox, OutboxMessage
from nextbest.store.postgres import PostgresDatabase
from tests.acceptance.scaled_side import ScaledSide, redis_or_skip
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
    redis_or_skip(REDIS, NAMESPACE)
    yield REDIS
    redis_or_skip(REDIS, NAMESPACE)


@pytest.fixture(params=["one fold worker", "partitioned fold workers"])
def scaled(
    request: pytest.FixtureRequest, catalog: Catalog, outbox: Outbox, redis: str
) -> Iterator[ScaledSide]:
    partitioned = request.param != "one fold worker"
    made = ScaledSide(
        catalog, redis, NAMESPACE, partitioned=partitioned, at=AT + 3600, outbox=outbox
    )
    yield made
    made.close()


def test_a_takeover_through_the_fold_makes_the_embedded_engines_one_alert(
    scaled: ScaledSide, catalog: Catalog
) -> None:
    scaled.send(history())
    scaled.settle()
    scaled.send(takeover(AT)[:2])  # logged in: not flagged yet
    scaled.settle()
    assert alert_rows(scaled.logs.outbox) == []
    scaled.send(takeover(AT)[2:3])  # the payee page: flagged
    scaled.settle()
    assert len(alert_rows(scaled.logs.outbox)) == 1
    scaled.send(takeover(AT)[3:])  # more of the same session: no second alert
    scaled.settle()
    assert alert_rows(scaled.logs.outbox) == embedded_alerts(catalog)
    metrics = FoldMetrics(Metrics(from_env=False))
    for worker in [scaled.single] if scaled.single else scaled.parts:
        metrics.sample(worker)
    text = generate_latest(metrics.metrics.registry).decode()
    assert 'nextbest_fraud_alerts_total{outcome="sent"} 1.0' in text
    assert 'nextbest_fraud_alerts_total{outcome="failed"} 0.0' in text


def test_an_alert_saved_and_not_enqueued_is_enqueued_once_after_a_restart(
    scaled: ScaledSide, catalog: Catalog
) -> None:
    scaled.send([*history(), *takeover(AT)[:2]])
    scaled.settle()
    away = Unreachable(scaled.logs.outbox)
    scaled.start(away)  # a fold side whose outbox (PostgreSQL) is away
    scaled.send(takeover(AT)[2:3])
    scaled.settle()  # folded and saved: the alert is due, its enqueue refused
    assert away.refused >= 1
    assert alert_rows(scaled.logs.outbox) == []
    scaled.start()  # killed and restarted: the alert is found saved with the state
    scaled.settle()
    assert len(alert_rows(scaled.logs.outbox)) == 1
    scaled.send(takeover(AT)[3:])
    scaled.settle()
    scaled.start()  # and again: nothing is enqueued twice
    scaled.settle()
    assert alert_rows(scaled.logs.outbox) == embedded_alerts(catalog)
