"""The partitioned fold worker's log writer commits at most every ``log_every`` seconds
(``fold_loop``): the steps folded meanwhile are visible at once and logged together later; a
stitch, which travels on only once the log holds what was folded before it, makes the writer
commit at once instead of waiting out the pace; stopping logs everything. Two
``PartitionedFold`` workers with their loops and writers running (threads), over the
in-memory bus and logs, the live state on a real Redis (skipped with the reason when absent;
a database of its own)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from nextbest.api_worker import ApiWorker
from nextbest.bus import MemoryBus
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.engine import IngestRequest
from nextbest.errors import StoreUnavailable
from nextbest.guard.senders import KeyKind, Sender
from nextbest.partitioned_fold import PartitionedFold
from nextbest.store import memory_stores
from nextbest.store.memory import MemoryEventLog
from nextbest.store.redis import RedisState
from tests.acceptance.test_scaled_partitions import HALVES, MORTGAGE, PARTITIONS, homed
from tests.support import T0, batch, identify, page

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_LOG_PACE", "redis://127.0.0.1:6379/5")
NAMESPACE = "nextbest-log-pace"
SERVER = Sender(KeyKind.SERVER)
#: a pace no test outlives: a commit it puts off is never made by waiting
HOUR = 3600.0


def until(what: Callable[[], bool], why: str) -> None:
    """Wait (at most 30 s) for ``what``: the loops run in threads of their own."""
    deadline = time.monotonic() + 30.0
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached: {why}")
        time.sleep(0.01)


@pytest.fixture
def redis_url() -> Iterator[str]:
    try:
        RedisState(REDIS, NAMESPACE, timeout=2.0).drop()
    except StoreUnavailable as exc:
        url = urlsplit(REDIS)
        pytest.skip(f"Redis not reachable at {url.hostname}:{url.port or 6379}: {exc}")
    yield REDIS
    RedisState(REDIS, NAMESPACE, timeout=2.0).drop()


def test_steps_wait_for_the_paced_commit_a_stitch_does_not_and_a_stop_logs_all(
    catalog: Catalog, redis_url: str
):
    bus = MemoryBus(PARTITIONS, ack_wait=60.0)
    logs = memory_stores()
    log = logs.events
    assert isinstance(log, MemoryEventLog)
    reads = RedisState(redis_url, NAMESPACE, timeout=2.0)
    states = [RedisState(redis_url, NAMESPACE, timeout=2.0) for _ in HALVES]
    folds = [
        PartitionedFold(
            catalog, bus, state, log, log, half, wait=0.01, log_every=HOUR, owner=f"half{i}"
        )
        for i, (state, half) in enumerate(zip(states, HALVES, strict=True))
    ]
    api = ApiWorker(catalog, logs, reads, reads, bus, FixedClock(T0))

    def send(*messages: dict[str, object]) -> None:
        api.accept(IngestRequest(SERVER, api.read_batch(batch(*messages)), "$.batch"))

    def count(user: str | None = None, anon: str | None = None) -> int:
        return api.live.read(user, anon, False)[0].event_count

    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    for fold in folds:
        fold.start()
    try:
        send(page(MORTGAGE, anon=device, at=T0 - 100))
        until(lambda: folds[0].stats.events_logged == 1, "the first commit (nothing before)")
        send(*[page(MORTGAGE, anon=device, at=T0 - 99 + n) for n in range(3)])
        until(lambda: count(anon=device) == 4, "the next steps visible")
        assert folds[0].stats.events == 4
        assert folds[0].stats.events_logged == 1  # their commit is put off (an hour)
        # the login joins the device (homed on the first half) to the customer (the
        # second's): frozen on the first half, it travels on once the log holds the device's
        # events, which the writer commits at once for it
        send(identify({"tier": "gold"}, user=user, anon=device, at=T0 - 90))
        until(lambda: count(user) == 5, "the stitch folded where it joins")
        assert folds[0].stats.stitches == 1
        assert folds[0].stats.events_logged == 4
    finally:
        for fold in folds:
            fold.stop()
    assert sorted(s.event.message_id for s in log.scan()) == sorted(
        {s.event.message_id for s in log.scan()}
    )
    assert len(list(log.scan())) == 5  # and the login, where it was folded
    api.close()
    for state in [reads, *states]:
        state.close()
