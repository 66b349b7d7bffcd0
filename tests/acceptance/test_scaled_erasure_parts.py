"""An erasure's parts with several fold workers, in one process (``ScaledSide``: an API worker,
two partitioned fold workers each owning half of four partitions and the model writer, on
the in-memory bus and logs and a real Redis namespace of this test's own; skipped when Redis
is absent). Stepped by hand, so the parts can be met again and the workers restarted between
them: an erasure completes once, whatever is delivered twice, and after a restart of both
workers (a kill -9: the objects dropped) part way."""

from __future__ import annotations

import os
from collections.abc import Iterator

import msgspec
import pytest

from nextbest.audit.model import Actor, AuditAction
from nextbest.bus.port import BusMessage, partition_of
from nextbest.catalog.compiled import Catalog
from nextbest.errors import ErasurePending
from nextbest.partitioned_fold import consumer_name
from nextbest.routing import home
from nextbest.scaled_erasure import ERASE_PART
from nextbest.store.redis import RedisState
from tests.acceptance.scaled_side import HALVES, ScaledSide, redis_or_skip
from tests.support import T0, identify, message, page

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_ERASURE_PARTS", "redis://127.0.0.1:6379/5")
NAMESPACE = "nextbest-erasure-parts"
MORTGAGE = "https://bank.example/mortgages/rates"
ADMIN = Actor(kind="admin", key_id="k")


def homed(prefix: str, half: int, anonymous: bool = False) -> str:
    for n in range(10_000):
        key = f"{prefix}{n}"
        if home(("anon:" + key) if anonymous else key, 4) in HALVES[half]:
            return key
    raise AssertionError


USER, DEVICE, OLD_ID = homed("part-u", 1), homed("part-d", 0, True), homed("part-o", 0)
SECRETS = (USER, DEVICE, OLD_ID, "parts@example.dk")


@pytest.fixture
def side(catalog: Catalog) -> Iterator[ScaledSide]:
    redis_or_skip(REDIS, NAMESPACE)
    made = ScaledSide(
        catalog, REDIS, NAMESPACE, partitioned=True, at=T0 + 3600, models=True, erasures=True
    )
    yield made
    made.close()
    redis_or_skip(REDIS, NAMESPACE)


def life(side: ScaledSide) -> None:
    side.send(
        [
            page(MORTGAGE, anon=DEVICE, at=T0 - 50),
            identify({"email": "parts@example.dk"}, user=USER, anon=DEVICE, at=T0 - 40),
            page(MORTGAGE, user=OLD_ID, at=T0 - 35),
            message("alias", user=USER, previousId=OLD_ID, at=T0 - 30),
            page(MORTGAGE, user=USER, at=T0 - 20),
        ]
    )
    side.settle()


def erase(side: ScaledSide, customer: str) -> str:
    """The erasure requested (the API worker does not wait): its receipt."""
    side.api.erase_wait = 0.0
    with pytest.raises(ErasurePending) as pending:
        side.api.erase_customer(customer, ADMIN)
    return pending.value.receipt


def redis_dump() -> bytes:
    state = RedisState(REDIS, NAMESPACE)
    try:
        out = bytearray()
        for key in state.client.scan_iter(match=f"{NAMESPACE}:*", count=1_000):
            out += bytes(key) + b"\n"
            if state.client.type(key) == b"string":
                out += state.client.get(key) or b""
        return bytes(out)
    finally:
        state.close()


def erased_entries(side: ScaledSide) -> int:
    return sum(e.action == AuditAction.CUSTOMER_ERASED for e in side.logs.audit.entries())


def test_an_erasure_across_both_workers_completes_once_when_its_parts_come_twice(
    side: ScaledSide,
):
    life(side)
    assert side.api.live.get(USER) is not None
    receipt = erase(side, USER)
    assert side.api.erasure_status(receipt) is None  # nothing folded yet
    side.settle()
    outcome = side.api.erasure_status(receipt)
    assert outcome is not None
    assert outcome.status == "erased"
    assert outcome.events == 5
    assert outcome.profiles == 1
    assert side.api.live.get(USER) is None
    events = side.logs.events
    assert not events.events_of([USER, OLD_ID], [DEVICE, OLD_ID], events.last_seq())
    assert [s for s in SECRETS if s.encode() in redis_dump()] == []
    assert erased_entries(side) == 1

    # every part met once more (a redelivery after a crash): nothing changes
    parts = [m for m in side.bus.published() if m.kind == ERASE_PART]
    assert sorted(m.partition for m in parts) == [
        p for p in range(4) if p != partition_of("u:" + USER, 4)
    ]
    side.bus.publish(
        [BusMessage(m.partition, "again-" + m.message_id, m.body, m.kind) for m in parts]
    )
    side.settle()
    assert side.api.erasure_status(receipt) == outcome
    assert erased_entries(side) == 1
    assert [s for s in SECRETS if s.encode() in redis_dump()] == []


def test_an_erasure_completes_after_both_workers_restart_part_way(side: ScaledSide):
    life(side)
    receipt = erase(side, USER)
    lead = next(f for f in side.parts if partition_of("u:" + USER, 4) in f.wanted)
    lead.step()  # the lead's part: the other partitions' parts sent, its own done
    assert any(m.kind == ERASE_PART for m in side.bus.published())
    assert side.api.erasure_status(receipt) is None
    side.start()  # a kill -9 of both: what they did not save is met again
    side.settle()
    outcome = side.api.erasure_status(receipt)
    assert outcome is not None
    assert outcome.status == "erased"
    assert erased_entries(side) == 1
    assert [s for s in SECRETS if s.encode() in redis_dump()] == []
    assert all(side.bus.pending(consumer_name(p)) == 0 for h in HALVES for p in h)

    side.clock.set(side.now + 1)  # accepted after the erasure (the workers' time): new data
    side.send([page(MORTGAGE, user=USER, at=T0 + 10)])
    side.settle()
    profile = side.api.live.get(USER)
    assert profile is not None
    assert profile.event_count == 1
    assert msgspec.to_builtins(profile.traits).get("email") is None
