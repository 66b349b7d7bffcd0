"""The bus port's contract, run unchanged over the in-memory twin and a real NATS JetStream
(skipped with the reason when no server answers)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from nextbest.bus import BusMessage, Delivery, EventBus, MemoryBus, bus_key, partition_of
from nextbest.bus.nats import NatsBus
from nextbest.bus.port import LEARNING
from nextbest.errors import ConfigError, StoreError, StoreUnavailable
from nextbest.events.model import Event, EventType
from tests.nats import delete_stream, stream_url

BUSES = ["memory", "nats"]
PARTITIONS = 4
ACK_WAIT = 1.0

MakeBus = Callable[..., EventBus]


@pytest.fixture(params=BUSES)
def make_bus(request: pytest.FixtureRequest) -> Iterator[MakeBus]:
    """Opens buses on one stream (a second open is another process on the same stream)."""
    made: list[EventBus] = []
    url = stream_url(request.node.nodeid) if request.param == "nats" else ""
    shared = MemoryBus(PARTITIONS, ack_wait=ACK_WAIT)

    def make(partitions: int = PARTITIONS) -> EventBus:
        if request.param == "memory":
            return shared
        bus = NatsBus(url, partitions=partitions, ack_wait=ACK_WAIT, timeout=2.0)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()
    if url:
        delete_stream(url, PARTITIONS)


@pytest.fixture
def bus(make_bus: MakeBus) -> EventBus:
    return make_bus()


def messages(n: int, start: int = 0) -> list[BusMessage]:
    return [BusMessage(i % PARTITIONS, f"m{i}", f"body {i}".encode()) for i in range(start, n)]


def drain(bus: EventBus, consumer: str, n: int, wait: float = 3.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + wait
    while len(got) < n and time.monotonic() < deadline:
        got += bus.fetch(consumer, n - len(got), 0.2)
    return got


def test_publish_hands_out_stream_sequences_in_order(bus: EventBus):
    published = bus.publish(messages(10))
    assert [p.seq for p in published] == list(range(1, 11))
    assert not any(p.duplicate for p in published)
    assert bus.last_seq() == 10
    assert bus.publish([]) == []


def test_a_retry_within_the_duplicate_window_is_stored_once(bus: EventBus):
    bus.publish(messages(3))
    again = bus.publish([BusMessage(1, "m1", b"a retry"), BusMessage(3, "m3", b"new")])
    assert again[0].seq == 2
    assert again[0].duplicate
    assert again[1] == (4, False)
    assert bus.last_seq() == 4
    bus.consume("fold", 0)
    got = drain(bus, "fold", 4)
    assert [d.body for d in got][1] == b"body 1"  # the first copy


def test_a_consumer_gets_every_message_in_stream_order(bus: EventBus):
    bus.publish(messages(50))
    bus.consume("fold", 0)
    got = drain(bus, "fold", 50)
    assert [d.seq for d in got] == list(range(1, 51))
    expected = [(m.partition, m.message_id, m.body, "") for m in messages(50)]
    assert [(d.partition, d.message_id, d.body, d.kind) for d in got] == expected
    assert all(d.delivered == 1 for d in got)
    more = bus.publish(messages(52, 50))
    assert [d.seq for d in drain(bus, "fold", 2)] == [p.seq for p in more]


def test_fetch_returns_at_most_what_is_asked_and_waits_for_none(bus: EventBus):
    bus.consume("fold", 0)
    started = time.monotonic()
    assert bus.fetch("fold", 10, 0.2) == []
    assert time.monotonic() - started < 2.0
    bus.publish(messages(5))
    first = drain(bus, "fold", 2)
    assert len(first) == 2
    assert [d.seq for d in drain(bus, "fold", 3)] == [3, 4, 5]


def test_an_acknowledged_message_is_never_delivered_again(bus: EventBus):
    bus.publish(messages(6))
    bus.consume("fold", 0)
    got = drain(bus, "fold", 6)
    bus.ack("fold", got[:4])
    time.sleep(ACK_WAIT * 1.5)
    again = drain(bus, "fold", 2, wait=ACK_WAIT * 3)
    assert sorted(d.seq for d in again) == [5, 6]
    assert all(d.delivered == 2 for d in again)
    bus.ack("fold", again)
    time.sleep(ACK_WAIT * 1.5)
    assert bus.fetch("fold", 10, 0.3) == []


def test_pending_counts_what_the_consumer_has_not_acknowledged(bus: EventBus):
    bus.publish(messages(8))
    bus.consume("fold", 0)
    assert _eventually(lambda: bus.pending("fold") == 8)
    got = drain(bus, "fold", 8)
    bus.ack("fold", got[:5])
    assert _eventually(lambda: bus.pending("fold") == 3)


def test_consume_starts_over_after_a_saved_position(make_bus: MakeBus):
    first = make_bus()
    first.publish(messages(10))
    first.consume("fold", 0)
    drain(first, "fold", 10)  # delivered, never acknowledged: the worker died
    second = make_bus()  # its successor, from the position it saved with its state
    second.consume("fold", 6)
    assert [d.seq for d in drain(second, "fold", 4)] == [7, 8, 9, 10]
    second.publish(messages(11, 10))
    assert [d.seq for d in drain(second, "fold", 1)] == [11]


def test_two_consumers_each_get_every_message(bus: EventBus):
    bus.publish(messages(4))
    bus.consume("fold", 0)
    bus.consume("audit", 0)
    assert [d.seq for d in drain(bus, "fold", 4)] == [1, 2, 3, 4]
    assert [d.seq for d in drain(bus, "audit", 4)] == [1, 2, 3, 4]


def test_a_partition_consumer_gets_that_partition_only_in_stream_order(bus: EventBus):
    bus.publish(messages(12))
    bus.consume("fold-1", 0, partition=1)
    bus.consume("fold-2", 4, partition=2)
    one = drain(bus, "fold-1", 3)
    assert [(d.seq, d.partition) for d in one] == [(2, 1), (6, 1), (10, 1)]
    two = drain(bus, "fold-2", 2)
    assert [d.seq for d in two] == [7, 11]
    bus.ack("fold-2", two)
    assert bus.fetch("fold-1", 10, 0.2) == []
    bus.publish(messages(15, 12))  # seqs 13, 14, 15 on partitions 0, 1, 2
    assert [d.seq for d in drain(bus, "fold-2", 1)] == [15]
    assert _eventually(lambda: bus.pending("fold-1") == 4)  # 3 unacknowledged, 14 to come


def test_kinds_travel_and_the_learning_feed_is_apart(bus: EventBus):
    bus.publish(
        [
            BusMessage(1, "e", b"event"),
            BusMessage(2, "fwd:e", b"event", "forward"),
            BusMessage(LEARNING, "learn:e", b"record", "learning"),
        ]
    )
    bus.consume("fold", 0)
    bus.consume("learner", 0, partition=LEARNING)
    got = drain(bus, "fold", 2)
    assert [(d.partition, d.kind) for d in got] == [(1, ""), (2, "forward")]
    assert bus.fetch("fold", 10, 0.2) == []  # the learning feed is not an event partition
    (record,) = drain(bus, "learner", 1)
    assert (record.seq, record.partition, record.kind, record.body) == (
        3,
        LEARNING,
        "learning",
        b"record",
    )


def test_an_unknown_partition_or_consumer_is_refused(bus: EventBus):
    with pytest.raises(StoreError, match="partition"):
        bus.publish([BusMessage(PARTITIONS, "m", b"")])
    with pytest.raises(StoreError, match="consume"):
        bus.fetch("nobody", 1, 0)


def test_partitions_are_stable_and_spread():
    keys = [f"u:{i}" for i in range(4_000)]
    parts = [partition_of(k, 16) for k in keys]
    assert parts == [partition_of(k, 16) for k in keys]
    assert min(parts) == 0
    assert max(parts) == 15
    counts = [parts.count(p) for p in range(16)]
    assert min(counts) > 150  # ~250 each
    assert partition_of("u:alice", 16) == partition_of("u:alice", 16)


def test_the_bus_key_is_the_user_else_the_device():
    def event(user: str | None, anon: str | None) -> Event:
        return Event(
            message_id="m", type=EventType.TRACK, timestamp=0.0, received_at=0.0,
            user_id=user, anonymous_id=anon,
        )  # fmt: skip

    assert bus_key(event("u1", "d1")) == "u:u1"
    assert bus_key(event(None, "d1")) == "a:d1"
    assert bus_key(event("d1", None)) != bus_key(event(None, "d1"))


# ---------------------------------------------------------------- NATS only
def test_a_stream_made_with_other_partitions_is_refused(request: pytest.FixtureRequest):
    url = stream_url(request.node.nodeid)
    NatsBus(url, partitions=4).close()
    try:
        with pytest.raises(ConfigError, match="4 partitions, not 8"):
            NatsBus(url, partitions=8)
    finally:
        delete_stream(url, 4)


def test_an_unreachable_nats_is_unavailable_without_its_password():
    with pytest.raises(StoreUnavailable) as caught:
        NatsBus("nats://nextbest:s3cret@127.0.0.1:9/S", timeout=0.5)
    assert "127.0.0.1:9" in caught.value.message
    assert "s3cret" not in caught.value.message


def test_a_bus_url_is_checked():
    with pytest.raises(ConfigError, match="NATS URL"):
        NatsBus("redis://127.0.0.1:6379")
    with pytest.raises(ConfigError, match="stream name"):
        NatsBus("nats://127.0.0.1:4222/no.dots")


def _eventually(check: Callable[[], bool], wait: float = 3.0) -> bool:
    deadline = time.monotonic() + wait
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
