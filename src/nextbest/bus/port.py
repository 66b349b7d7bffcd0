"""The bus port: accepted events on a durable stream, between stateless API workers and the
workers that fold them (issue #17's scale-out).

    publish(messages)          -> each message stored once (its messageId deduplicated within
                                  the bus's duplicate window) with its stream sequence
    consume(consumer, after,   -> a durable consumer delivering, in stream order, every
            partition)            message after stream sequence ``after`` (of one partition,
                                  or of the learning feed, when ``partition`` says so)
    fetch(consumer, n, wait)   -> up to ``n`` deliveries (waiting at most ``wait`` seconds for
                                  the first one); ``fetch_any`` over several consumers
    ack(consumer, deliveries)  -> done with them: never delivered again; an unacknowledged
                                  delivery comes again after the ack wait

A message goes to the *partition* of its customer (``partition_of``): one customer's events
keep their order on one partition, and each partition has one owner that folds it. A message
has a *kind*: ``""`` an accepted event, ``forward`` an event its partition's owner sent on to
the partition of the customer it belongs to, ``stitch`` an identify or alias on its way from
the partition of the customer it dissolves to the one it joins, ``learning`` what a fold
worker tells the model writer (on the learning feed, ``LEARNING``) (``partitioned_fold``).

The port is synchronous like the store ports: an adapter on an asynchronous client runs its
own event loop. Failures are the error tree's: StoreUnavailable when the bus cannot be
reached or does not answer in time, StoreError otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from nextbest.events.model import Event

__all__ = [
    "LEARNING",
    "BusMessage",
    "Delivery",
    "ErasableStream",
    "EventBus",
    "Published",
    "bus_key",
    "partition_of",
]


#: the "partition" of the learning feed: a subject of its own, never folded as events
LEARNING = -1


class BusMessage(NamedTuple):
    """One message to publish: its partition (or ``LEARNING``), its messageId (the bus's
    dedupe key), body and kind."""

    partition: int
    message_id: str
    body: bytes
    kind: str = ""


class Published(NamedTuple):
    """Where a published message sits on the stream; ``duplicate``: its messageId was stored
    already within the duplicate window (``seq`` is then the first copy's)."""

    seq: int
    duplicate: bool


class Delivery(NamedTuple):
    """One message as a consumer receives it: its stream sequence, partition, messageId and
    body, and how many times it was delivered (1 the first time)."""

    seq: int
    partition: int
    message_id: str
    body: bytes
    delivered: int
    kind: str = ""


class EventBus(Protocol):
    """A durable, partitioned stream of accepted events."""

    #: how many partitions the stream has (fixed when it is made)
    partitions: int

    def publish(self, messages: Sequence[BusMessage]) -> list[Published]:
        """Store every message durably before returning, in order; a Published per message.
        StoreUnavailable (nothing acknowledged: the caller retries with the same ids)."""
        ...

    def consume(self, consumer: str, after: int, partition: int | None = None) -> None:
        """Deliver to the durable ``consumer``, from stream sequence ``after + 1`` on (an
        existing consumer of that name is started over from there): every partition's
        messages (``partition`` None), one partition's, or the learning feed's
        (``LEARNING``)."""
        ...

    def fetch(self, consumer: str, max_messages: int, wait: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, waiting at most ``wait`` seconds for the first
        (an empty list when none came). A consumer of one partition (or of the learning
        feed) gets them in stream order: if the bus finds one was lost on the way (a
        reconnection), it raises StoreUnavailable and the consumer must be started over
        (``consume``) from the last one its owner processed."""
        ...

    def fetch_any(self, consumers: Sequence[str], max_messages: int, wait: float) -> list[Delivery]:
        """``fetch`` over several consumers at once (each of one partition: a delivery's
        ``partition`` says whose it is), each one's in its order, waiting at most ``wait``
        seconds for the first."""
        ...

    def ack(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge ``deliveries``: they are never delivered again."""
        ...

    def pending(self, consumer: str) -> int:
        """Messages the consumer has not acknowledged yet (its lag)."""
        ...

    def last_seq(self) -> int:
        """The stream's last sequence (0 when empty)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ErasableStream(Protocol):
    """A bus that can delete messages (an erasure's, docs/trust.md): JetStream keeps every
    message until its limits drop it. The in-memory bus keeps nothing durable and has none."""

    def message_ids(self, seqs: Collection[int]) -> dict[int, str]:
        """The messageIds of the messages still held at ``seqs`` (others left out)."""
        ...

    def erase_messages(self, seqs: Collection[int]) -> int:
        """Delete the messages at ``seqs`` (their bytes overwritten); those gone already
        are passed over. How many were deleted."""
        ...

    def purge_learning(self, upto: int) -> None:
        """Remove the learning feed's messages up to stream sequence ``upto``."""
        ...


def bus_key(event: Event) -> str:
    """Whose event this is, by its ids alone: its userId, else its anonymousId (``u:`` and
    ``a:`` kept apart): the partition of a customer nothing is stitched to. API workers
    publish to the partition of the customer the ids resolve to (``nextbest.routing``,
    whose ``home`` is this key's partition)."""
    if event.user_id:
        return "u:" + event.user_id
    return "a:" + (event.anonymous_id or "")


def partition_of(key: str, partitions: int) -> int:
    """The partition of a customer key: a stable hash (BLAKE2b, the same in every process and
    release), never Python's salted ``hash``."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions
