"""The bus port's in-memory twin: one process, nothing durable, the same contract as JetStream
(tests/contract/test_bus.py runs over both)."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence

from nextbest.bus.port import LEARNING, BusMessage, Delivery, Published
from nextbest.errors import StoreError

__all__ = ["MemoryBus"]


class _Consumer:
    def __init__(self, after: int, partition: int | None) -> None:
        #: the next stream sequence never delivered yet
        self.next = after + 1
        #: delivered, not acknowledged: seq -> (redeliver at, times delivered)
        self.unacked: dict[int, tuple[float, int]] = {}
        #: the one partition it delivers (or ``LEARNING``); None: every partition
        self.partition = partition
        #: no unacknowledged delivery is due again before this (a lower bound)
        self.earliest = float("inf")

    def wants(self, m: BusMessage) -> bool:
        if self.partition is None:
            return m.partition != LEARNING
        return m.partition == self.partition


class MemoryBus:
    """``MemoryBus(partitions=4)``. ``ack_wait``: seconds before an unacknowledged delivery is
    delivered again; ``duplicate_window``: seconds a messageId is remembered; ``clock``: the
    time those are measured on (monotonic seconds)."""

    def __init__(
        self,
        partitions: int = 4,
        *,
        ack_wait: float = 30.0,
        duplicate_window: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if partitions < 1:
            raise StoreError("a bus has at least one partition")
        self.partitions = partitions
        self.ack_wait = ack_wait
        self.duplicate_window = duplicate_window
        self._clock = clock
        self._messages: list[BusMessage] = []  # seq n at index n - 1
        self._seqs_of: dict[int, list[int]] = {}  # partition -> its stream sequences
        self._seen: dict[str, tuple[int, float]] = {}  # messageId -> (seq, stored at)
        self._consumers: dict[str, _Consumer] = {}
        self._changed = threading.Condition()
        self._closed = False

    def publish(self, messages: Sequence[BusMessage]) -> list[Published]:
        out: list[Published] = []
        with self._changed:
            self._check_open()
            now = self._clock()
            for m in messages:
                if not 0 <= m.partition < self.partitions and m.partition != LEARNING:
                    raise StoreError(f"no partition {m.partition} (the bus has {self.partitions})")
                seen = self._seen.get(m.message_id)
                if seen is not None and now - seen[1] < self.duplicate_window:
                    out.append(Published(seen[0], True))
                    continue
                self._messages.append(m)
                seq = len(self._messages)
                self._seqs_of.setdefault(m.partition, []).append(seq)
                self._seen[m.message_id] = (seq, now)
                out.append(Published(seq, False))
            self._changed.notify_all()
        return out

    def consume(self, consumer: str, after: int, partition: int | None = None) -> None:
        with self._changed:
            self._check_open()
            self._consumers[consumer] = _Consumer(after, partition)

    def published(self) -> list[BusMessage]:
        """Every message published so far, in order (for inspection)."""
        with self._changed:
            return list(self._messages)

    def fetch(self, consumer: str, max_messages: int, wait: float) -> list[Delivery]:
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                self._check_open()
                got = self._take(self._consumer(consumer), max_messages)
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                self._changed.wait(min(left, 0.01))

    def fetch_any(self, consumers: Sequence[str], max_messages: int, wait: float) -> list[Delivery]:
        deadline = time.monotonic() + wait
        with self._changed:
            while True:
                self._check_open()
                got: list[Delivery] = []
                for name in consumers:
                    got += self._take(self._consumer(name), max_messages - len(got))
                    if len(got) >= max_messages:
                        break
                left = deadline - time.monotonic()
                if got or left <= 0:
                    return got
                self._changed.wait(min(left, 0.01))

    def _take(self, c: _Consumer, max_messages: int) -> list[Delivery]:
        now = self._clock()
        out: list[Delivery] = []
        if c.unacked and now >= c.earliest:
            due_now = sorted(s for s, (due, _) in c.unacked.items() if due <= now)
            c.earliest = min((due for due, _ in c.unacked.values()), default=float("inf"))
            for seq in due_now:
                if len(out) >= max_messages:
                    return out
                out.append(self._deliver(c, seq, now))
        if c.partition is not None:  # one partition's: straight to its messages
            seqs = self._seqs_of.get(c.partition, [])
            at = bisect.bisect_left(seqs, c.next)
            while len(out) < max_messages and at < len(seqs):
                out.append(self._deliver(c, seqs[at], now))
                c.next = seqs[at] + 1
                at += 1
            return out
        while len(out) < max_messages and c.next <= len(self._messages):
            if c.wants(self._messages[c.next - 1]):
                out.append(self._deliver(c, c.next, now))
            c.next += 1
        return out

    def _deliver(self, c: _Consumer, seq: int, now: float) -> Delivery:
        times = c.unacked.get(seq, (0.0, 0))[1] + 1
        c.unacked[seq] = (now + self.ack_wait, times)
        c.earliest = min(c.earliest, now + self.ack_wait)
        m = self._messages[seq - 1]
        return Delivery(seq, m.partition, m.message_id, m.body, times, m.kind)

    def ack(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        with self._changed:
            self._check_open()
            c = self._consumer(consumer)
            for d in deliveries:
                c.unacked.pop(d.seq, None)

    def pending(self, consumer: str) -> int:
        with self._changed:
            c = self._consumer(consumer)
            ahead = sum(c.wants(m) for m in self._messages[c.next - 1 :])
            return ahead + len(c.unacked)

    def last_seq(self) -> int:
        with self._changed:
            self._check_open()
            return len(self._messages)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _consumer(self, name: str) -> _Consumer:
        c = self._consumers.get(name)
        if c is None:
            raise StoreError(f"no consumer {name!r}: call consume first")
        return c

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the bus is closed")
