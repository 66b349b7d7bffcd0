"""A scaled deployment in one process for comparisons with the embedded engine: an API worker
and the fold side, either one ``FoldWorker`` or two ``PartitionedFold`` workers (each half of
four partitions, with the model writer when asked), on the in-memory bus and logs and a real
Redis (``redis_or_skip``)."""

from __future__ import annotations

from collections.abc import Callable
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
from nextbest.guard.senders import KeyKind, Sender
from nextbest.model_writer import LEARNER_CONSUMER, ModelWriter
from nextbest.partitioned_fold import Erasures, PartitionedFold, consumer_name
from nextbest.scaled_erasure import Tombstones, tombstone_key
from nextbest.store import Stores, memory_stores, with_state
from nextbest.store.memory import MemoryEventLog
from nextbest.store.port import Outbox
from nextbest.store.redis import RedisState
from tests.support import batch, counter_ids

SERVER = Sender(KeyKind.SERVER)
HALVES = ([0, 1], [2, 3])
#: the erasures' tombstone key when ``ScaledSide(erasures=True)``
ERASURE_KEY = tombstone_key("scaled-side")


def redis_or_skip(url: str, *namespaces: str) -> None:
    """Each namespace emptied, or the test skipped saying where Redis was looked for."""
    try:
        for namespace in namespaces:
            state = RedisState(url, namespace, timeout=2.0)
            state.drop()
            state.close()
    except StoreUnavailable as exc:
        where = urlsplit(url)
        pytest.skip(f"Redis not reachable at {where.hostname}:{where.port or 6379}: {exc}")


class ScaledSide:
    def __init__(
        self,
        catalog: Catalog,
        redis: str,
        namespace: str,
        *,
        partitioned: bool,
        at: float,
        outbox: Outbox | None = None,
        models: bool = False,
        erasures: bool = False,
    ) -> None:
        """``erasures``: the workers erase customers (the tombstone key ``ERASURE_KEY``, the
        fold workers erasing from the logs)."""
        self.catalog, self.url, self.namespace = catalog, redis, namespace
        self.partitioned, self.models, self.erasures = partitioned, models, erasures
        self.clock = FixedClock(at)
        #: the partitioned workers' wall clock (a parked stitch's pause): moved by ``settle``
        self.now = at
        self.bus = MemoryBus(4, ack_wait=60.0)
        self.logs: Stores = memory_stores()
        if outbox is not None:
            self.logs = self.logs._replace(outbox=outbox)
        self.states: list[RedisState] = []
        reads = self.redis()
        self.api = ApiWorker(
            catalog,
            self.logs,
            reads,
            reads,
            self.bus,
            self.clock,
            new_id=counter_ids("s"),
            tombstone_key=ERASURE_KEY if erasures else b"",
        )
        self.single: FoldWorker | None = None
        self.parts: list[PartitionedFold] = []
        self.writer: ModelWriter | None = None
        self.start()

    def redis(self) -> RedisState:
        state = RedisState(self.url, self.namespace, timeout=2.0)
        self.states.append(state)
        return state

    def start(self, outbox: Outbox | None = None) -> None:
        """(Re)start the fold side, its outbox ``outbox`` (default: the logs'): a restart
        after a kill -9 (the old objects dropped; a partitioned worker comes back under its
        name and takes its leases at once)."""
        outbox = outbox or self.logs.outbox
        if not self.partitioned:
            logs = self.logs._replace(outbox=outbox)
            engine = Engine(self.catalog, with_state(logs, self.redis(), lambda: None), self.clock)
            self.single = FoldWorker(engine, self.bus, wait=0.0, model_every=0.0)
            return
        log = self.logs.events
        assert isinstance(log, MemoryEventLog)
        wall: Callable[[], float] = lambda: self.now  # noqa: E731
        states = [self.redis() for _ in HALVES]
        self.parts = [
            PartitionedFold(
                self.catalog,
                self.bus,
                state,
                log,
                log,
                half,
                wait=0.0,
                wall=wall,
                owner=f"half{n}",
                outbox=outbox,
                erasures=Erasures(
                    Tombstones(ERASURE_KEY, state.tombstones()), self.logs, models=self.models
                )
                if self.erasures
                else None,
            )
            for n, (half, state) in enumerate(zip(HALVES, states, strict=True))
        ]
        if self.models:
            self.writer = ModelWriter(
                self.catalog, self.bus, self.redis(), self.logs.decisions, wait=0.0, save_every=0.0
            )

    def send(self, messages: list[dict[str, Any]]) -> None:
        self.api.accept(IngestRequest(SERVER, self.api.read_batch(batch(*messages)), "$.batch"))

    def settle(self) -> None:
        """Step the fold side until everything sent is folded, logged and acknowledged (and
        learned by the model writer, if any)."""
        for _ in range(100):
            if self.single is not None:
                self.single.step()
                if self.bus.pending("fold") == 0:
                    return
                continue
            self.now += 0.1  # a stitch put aside goes back after a pause
            for fold in self.parts:
                fold.step()
            if self.writer is not None:
                self.writer.step()
            folded = all(self.bus.pending(consumer_name(p)) == 0 for h in HALVES for p in h)
            if (
                folded
                and not any(any(f.parked.values()) or f.lags()[2] for f in self.parts)
                and (self.writer is None or self.bus.pending(LEARNER_CONSUMER) == 0)
            ):
                if self.writer is not None:
                    self.writer.step()  # control exposures logged since its last step
                return
        raise AssertionError("the fold did not settle")

    def close(self) -> None:
        self.api.close()
        for state in self.states:
            state.close()
