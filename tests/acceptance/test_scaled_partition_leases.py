"""Partition leases (issue #17, "fold workers own partitions"): a partitioned fold worker
folds a partition only while it holds its lease in Redis. Workers configured with
overlapping partitions never both fold one; a worker that dies (kill -9: its leases are
not given back) has its partitions taken over by a standby once the leases expire, with no
event lost and none folded or logged twice; a worker that stalled past its lease and wakes
up finds every save refused (LeaseLost: nothing written) and stops folding. In one process
over the in-memory bus and logs, the leases and live state on a real Redis (its own
database and namespace; skipped with the reason when absent)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nextbest.api_worker import ApiWorker
from nextbest.bus import MemoryBus
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.errors import LeaseLost, StoreUnavailable
from nextbest.partitioned_fold import PartitionedFold, consumer_name
from nextbest.store import memory_stores
from nextbest.store.memory import MemoryEventLog
from nextbest.store.redis import RedisState
from tests.acceptance.test_scaled_partitions import (
    PARTITIONS,
    Cluster,
    Crash,
    Process,
    crash_at,
    random_traffic,
)
from tests.support import T0

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_LEASES", "redis://127.0.0.1:6379/9")
NAMESPACE = "nextbest-leases"
#: seconds a lease lasts here (real time: Redis expires it)
LEASE = 0.4


class Stalled:
    """A worker's handle on Redis that, once ``frozen``, answers its lease renewals "held"
    without asking (a worker that renewed, then stalled past its lease: a long pause)."""

    def __init__(self, state: RedisState) -> None:
        self._state = state
        self.frozen = False
        #: called once before the next save (the pause, during which another takes over)
        self.before_save: Callable[[], None] | None = None

    def save_rows(self, *args: Any, **kwargs: Any) -> None:
        pause, self.before_save = self.before_save, None
        if pause is not None:
            pause()
        self._state.save_rows(*args, **kwargs)

    def take_leases(self, names: list[str], owner: str, ttl: float) -> list[bool]:
        if self.frozen:
            return [True] * len(names)
        return self._state.take_leases(names, owner, ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


class OwnBus(Process):
    """A worker's handle on the shared bus, as a NATS connection of its own: closing it
    closes the worker's only, and a consumer another worker started again (``consume``
    deletes and makes the durable consumer anew) delivers nothing more to this one, nor
    takes its acknowledgements."""

    def __init__(self, shared: MemoryBus, subscribed: dict[str, OwnBus]) -> None:
        super().__init__(shared)
        self.subscribed = subscribed
        self.shared = shared

    def consume(self, consumer: str, after: int, partition: int | None = None) -> None:
        self.subscribed[consumer] = self
        self.shared.consume(consumer, after, partition)

    def fetch_any(self, consumers: list[str], max_messages: int, wait: float) -> Any:
        mine = [c for c in consumers if self.subscribed.get(c) is self]
        return self.shared.fetch_any(mine, max_messages, wait) if mine else []

    def ack(self, consumer: str, deliveries: Any) -> None:
        if self.subscribed.get(consumer) is self:
            self.shared.ack(consumer, deliveries)

    def close(self) -> None:
        pass


class Leased(Cluster):
    """Fold workers by name, each configured with its partitions; an API worker."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.cache_size = 100_000
        self.now = T0
        self.clock = FixedClock(T0)
        # real seconds: a delivery a worker took and never acknowledged goes again soon
        self.bus = MemoryBus(PARTITIONS, ack_wait=0.3)
        self.logs = memory_stores()
        self.reads = RedisState(REDIS, NAMESPACE, timeout=2.0)
        self.states: list[RedisState] = []
        self.folds: list[PartitionedFold] = []
        self.workers: dict[str, PartitionedFold] = {}
        self.subscribed: dict[str, OwnBus] = {}
        self.api = ApiWorker(catalog, self.logs, self.reads, self.reads, self.bus, self.clock)

    def begin(
        self, name: str, partitions: list[int], wrap: Callable[[RedisState], Any] = lambda s: s
    ) -> PartitionedFold:
        state = RedisState(REDIS, NAMESPACE, timeout=2.0)
        self.states.append(state)
        log = self.logs.events
        assert isinstance(log, MemoryEventLog)
        fold = PartitionedFold(
            self.catalog,
            OwnBus(self.bus, self.subscribed),  # type: ignore[arg-type]
            wrap(state),
            log,
            Process(log),  # type: ignore[arg-type]
            partitions,
            wait=0.0,
            wall=lambda: self.now,
            owner=name,
            lease_seconds=LEASE,
        )
        self.workers[name] = fold
        self.folds = list(self.workers.values())
        return fold

    def run(self, *names: str, rounds: int = 400) -> None:
        """Step these workers until every partition is folded, logged and acknowledged
        (real time passes: leases renew, unacknowledged deliveries come again)."""
        for _ in range(rounds):
            self.tick()
            for name in names:
                self.workers[name].step()
            idle = all(self.bus.pending(consumer_name(p)) == 0 for p in range(PARTITIONS))
            folds = [self.workers[n] for n in names]
            if idle and not any(f.lags()[2] or any(f.parked.values()) for f in folds):
                held = sorted(p for f in folds for p in f.partitions)
                if held == list(range(PARTITIONS)):
                    return
            time.sleep(0.02)
        raise AssertionError("the fold workers did not settle")

    def folded_by(self) -> dict[str, list[int]]:
        return {name: list(f.partitions) for name, f in self.workers.items()}


@pytest.fixture
def leased(catalog: Catalog) -> Iterator[Leased]:
    try:
        RedisState(REDIS, NAMESPACE, timeout=2.0).drop()
    except StoreUnavailable as exc:
        pytest.skip(f"Redis not reachable at {REDIS}: {exc}")
    made = Leased(catalog)
    yield made
    made.close()
    made.reads.drop()


def send_traffic(cluster: Leased, rng: random.Random, n: int, sent: list[str]) -> None:
    traffic = random_traffic(rng, n)
    for k in range(0, len(traffic), 4):
        chunk = [{**m, "messageId": f"{m['messageId']}-{len(sent)}"} for m in traffic[k : k + 4]]
        cluster.send(*chunk)
        sent += [str(m["messageId"]) for m in chunk]


def assert_each_logged_once(cluster: Leased, sent: list[str]) -> None:
    ids = cluster.logged_ids()
    assert len(ids) == len(set(ids))  # none twice
    assert sorted(ids) == sorted(set(sent))  # none lost


def test_overlapping_configurations_never_fold_one_partition_twice(leased: Leased):
    a = leased.begin("a", [0, 1, 2])
    b = leased.begin("b", [2, 3])  # partition 2 is a's: b waits for its lease
    assert leased.folded_by() == {"a": [0, 1, 2], "b": [3]}
    assert b.waiting == [2]
    assert "[2]" in str(dict(b.probe())["partition_leases"])  # /readyz says so
    assert dict(a.probe())["partition_leases"] is None
    sent: list[str] = []
    send_traffic(leased, random.Random(7), 120, sent)
    leased.run("a", "b")
    assert 2 in a.done
    assert 2 not in b.done
    assert leased.folded_by() == {"a": [0, 1, 2], "b": [3]}
    assert_each_logged_once(leased, sent)
    leased.assert_as_replayed()

    # a stops cleanly (gives its leases back): b takes partition 2 at its next renewal
    a.close()
    del leased.workers["a"]
    send_traffic(leased, random.Random(8), 60, sent)
    deadline = time.monotonic() + 5
    while b.partitions != [2, 3] and time.monotonic() < deadline:
        b.step()
        time.sleep(0.02)
    assert b.partitions == [2, 3]
    assert b.waiting == []
    b2 = leased.begin("a2", [0, 1])  # a replacement for a
    leased.run("b", "a2")
    assert b2.partitions == [0, 1]
    assert_each_logged_once(leased, sent)
    leased.assert_as_replayed()


def test_a_dead_workers_partitions_are_taken_over_once_its_leases_expire(leased: Leased):
    a = leased.begin("a", [0, 1])
    leased.begin("b", [2, 3])
    standby = leased.begin("standby", [0, 1])
    assert standby.partitions == []
    assert standby.waiting == [0, 1]
    sent: list[str] = []
    rng = random.Random(11)
    send_traffic(leased, rng, 80, sent)
    leased.run("a", "b")
    # a dies (kill -9) with events folded and saved but not logged: its leases stay
    crash_at(a.writer, "append_partitioned", lambda n: n == 1)
    send_traffic(leased, rng, 80, sent)

    def until_it_dies() -> None:
        for _ in range(20):
            a.step()
            leased.workers["b"].step()

    with pytest.raises(Crash):
        until_it_dies()
    del leased.workers["a"]
    standby.step()
    assert standby.partitions == []  # a's leases still run
    time.sleep(LEASE + 0.1)
    send_traffic(leased, rng, 40, sent)
    leased.run("standby", "b")
    assert standby.partitions == [0, 1]
    assert_each_logged_once(leased, sent)
    leased.assert_as_replayed()


def test_a_worker_stalled_past_its_lease_saves_nothing_and_stops(leased: Leased):
    stalled: list[Stalled] = []

    def wrap(state: RedisState) -> Stalled:
        stalled.append(Stalled(state))
        return stalled[-1]

    a = leased.begin("a", [0, 1], wrap)
    leased.begin("b", [2, 3])
    sent: list[str] = []
    rng = random.Random(5)
    send_traffic(leased, rng, 80, sent)
    leased.run("a", "b")
    # a stalls in its next step, after renewing and folding, before its save; its leases
    # expire meanwhile and the standby takes them (and the partitions' consumers)
    send_traffic(leased, rng, 80, sent)
    before = leased.saved()
    standby: list[PartitionedFold] = []

    def pause() -> None:
        time.sleep(LEASE + 0.1)
        standby.append(leased.begin("standby", [0, 1]))
        assert standby[0].partitions == [0, 1]

    stalled[0].frozen = True
    stalled[0].before_save = pause

    def steps() -> None:
        for _ in range(5):
            a.step()

    with pytest.raises(LeaseLost):  # refused in the transaction that would have written it
        steps()
    assert standby
    assert a.partitions == []
    assert a.stats.leases_lost == 1
    assert leased.saved() == before  # nothing of a's step written
    stalled[0].frozen = False
    a.step()
    assert a.partitions == []
    assert a.waiting == [0, 1]
    send_traffic(leased, rng, 40, sent)
    leased.run("standby", "b", "a")
    assert a.partitions == []
    assert_each_logged_once(leased, sent)
    leased.assert_as_replayed()
