"""The in-memory twins of the store ports: same contracts, no I/O (tests, simulations)."""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence

from nextbest.decide.model import Decision
from nextbest.errors import StoreError
from nextbest.events.model import Event
from nextbest.store.audit_memory import MemoryAuditLog
from nextbest.store.callbacks_memory import MemoryCallbacks
from nextbest.store.outbox_memory import MemoryOutbox
from nextbest.store.port import (
    HeldMessage,
    SavedState,
    StateRow,
    StoredEvent,
    Stores,
    of_erased,
)

__all__ = [
    "MemoryDecisionLog",
    "MemoryEventLog",
    "MemoryQuarantine",
    "MemoryStateStore",
    "memory_stores",
]


def memory_stores() -> Stores:
    """A fresh twin of each port."""
    return Stores(
        MemoryEventLog(),
        MemoryDecisionLog(),
        MemoryStateStore(),
        MemoryQuarantine(),
        callbacks=MemoryCallbacks(),
        outbox=MemoryOutbox(),
        audit=MemoryAuditLog(),
        close=lambda: None,
    )


class MemoryEventLog:
    def __init__(self) -> None:
        self._events: list[StoredEvent] = []  # by seq (gaps allowed: ``append_at``)
        self._ids: set[str] = set()
        self._by_user: dict[str, list[StoredEvent]] = {}
        self._by_anon: dict[str, list[StoredEvent]] = {}
        self._position = 0
        self._base: int | None = None
        self._partitions: dict[int, int] = {}
        #: the highest seq handed out before an erasure (never handed out again)
        self._high = 0
        #: several fold workers append out of seq order (``append_partitioned``)
        self._lock = threading.Lock()

    def append(self, events: Sequence[Event]) -> list[int | None]:
        out: list[int | None] = []
        for event in events:
            if event.message_id in self._ids:
                out.append(None)
                continue
            stored = StoredEvent(self.last_seq() + 1, event)
            self._add(stored)
            out.append(stored.seq)
        return out

    def _add(self, stored: StoredEvent) -> None:
        event = stored.event
        self._ids.add(event.message_id)
        if self._events and self._events[-1].seq > stored.seq:  # another partition's ahead
            bisect.insort(self._events, stored, key=lambda s: s.seq)
        else:
            self._events.append(stored)
        if event.user_id is not None:
            self._by_user.setdefault(event.user_id, []).append(stored)
        if event.anonymous_id is not None:
            self._by_anon.setdefault(event.anonymous_id, []).append(stored)

    def seq_base(self) -> int:
        with self._lock:
            if self._base is None:
                self._base = self.last_seq() - self._position
            return self._base

    def partition_positions(self) -> dict[int, int]:
        with self._lock:
            return dict(self._partitions)

    def append_partitioned(
        self, events: Sequence[StoredEvent], positions: Mapping[int, int]
    ) -> None:
        with self._lock:
            for a, b in itertools.pairwise(events):
                if a.seq >= b.seq:
                    raise StoreError("event log: seqs of one append must increase")
            for s in events:
                at = bisect.bisect_left(self._events, s.seq, key=lambda e: e.seq)
                taken = at < len(self._events) and self._events[at].seq == s.seq
                if taken or s.event.message_id in self._ids:
                    raise StoreError(
                        f"event log: seq {s.seq} ({s.event.message_id!r}) is logged already, "
                        "or its messageId is: another writer?"
                    )
            for s in events:
                self._add(s)
            for partition, position in positions.items():
                self._partitions[partition] = max(self._partitions.get(partition, 0), position)

    def logged(self, message_ids: Collection[str]) -> set[str]:
        return {m for m in message_ids if m in self._ids}

    def append_at(self, events: Sequence[StoredEvent], position: int) -> None:
        last = self.last_seq()
        for s in events:
            if s.seq <= last or s.event.message_id in self._ids:
                raise StoreError(
                    f"event log: seq {s.seq} ({s.event.message_id!r}) is not past the log's "
                    f"end ({last}) or its messageId is logged: another writer?"
                )
            last = s.seq
        for s in events:
            self._add(s)
        self._position = max(self._position, position)

    def source_position(self) -> int:
        return self._position

    def scan(self, after: int = 0) -> Iterator[StoredEvent]:
        start = bisect.bisect_right(self._events, after, key=lambda s: s.seq)
        yield from self._events[start:]

    def events_of(
        self, user_ids: Collection[str], anonymous_ids: Collection[str], upto: int
    ) -> list[StoredEvent]:
        found = {s.seq: s for u in user_ids for s in list(self._by_user.get(u, ()))}
        found.update((s.seq, s) for a in anonymous_ids for s in self._by_anon.get(a, ()))
        return [found[seq] for seq in sorted(found) if seq <= upto]

    def last_seq(self) -> int:
        return max(self._events[-1].seq if self._events else 0, self._high)

    def count(self) -> int:
        return len(self._events)

    def erase(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        users, anons = set(user_ids), set(anonymous_ids)
        with self._lock:
            gone = {s.seq for u in users for s in self._by_user.get(u, ())}
            gone.update(
                s.seq
                for a in anons
                for s in self._by_anon.get(a, ())
                if s.event.user_id is None or s.event.user_id in users
            )
            if not gone:
                return 0
            # the highest seq stays handed out: ``last_seq`` reads the list
            self._high = max(self._high, self.last_seq())
            # their messageIds stay in ``_ids``: a retry or a redelivery of an erased
            # message stays a duplicate (as PostgreSQL's ``message_ids`` and SQLite's
            # ``erased_messages`` keep them)
            self._events = [s for s in self._events if s.seq not in gone]
            for index in (self._by_user, self._by_anon):
                for key in list(index):
                    rows = [s for s in index[key] if s.seq not in gone]
                    if rows:
                        index[key] = rows
                    else:
                        del index[key]
            return len(gone)


class MemoryDecisionLog:
    def __init__(self) -> None:
        self._decisions: dict[str, Decision] = {}
        #: decision id -> its place in the log (the count of appends when it was added)
        self._positions: dict[str, int] = {}
        self._appended = 0

    def append_decisions(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            if d.decision_id in self._decisions:  # logged already: a decision never changes
                continue
            self._decisions[d.decision_id] = d
            self._appended += 1
            self._positions[d.decision_id] = self._appended

    def decision_log_position(self) -> int:
        return self._appended

    def decisions_after(self, position: int) -> Iterator[Decision]:
        positions = self._positions
        return iter([d for d in self._decisions.values() if positions[d.decision_id] > position])

    def decision(self, decision_id: str) -> Decision | None:
        return self._decisions.get(decision_id)

    def decisions(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[Decision]:
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        found = [d for d in self._decisions.values() if lo <= d.timestamp < hi]
        found.sort(key=lambda d: (d.timestamp, d.decision_id))
        return iter(found)

    def decisions_of(self, customers: Collection[str]) -> list[Decision]:
        found = [d for d in self._decisions.values() if d.customer_id in customers]
        return sorted(found, key=lambda d: (d.timestamp, d.decision_id))

    def erase_decisions(self, customers: Collection[str]) -> list[str]:
        keys = set(customers)
        gone = [i for i, d in self._decisions.items() if d.customer_id in keys]
        for decision_id in gone:  # ``_appended`` stays: positions are never handed out again
            del self._decisions[decision_id]
            del self._positions[decision_id]
        return gone


class MemoryStateStore:
    def __init__(self) -> None:
        self._state: dict[tuple[str, str], bytes] = {}
        self._watermark: tuple[int, str] | None = None

    def save_state(
        self, seq: int, version: str, rows: Sequence[StateRow], replace: bool = False
    ) -> None:
        if replace:
            self._state.clear()
        for row in rows:
            if row.body is None:
                self._state.pop((row.kind, row.key), None)
            else:
                self._state[row.kind, row.key] = row.body
        self._watermark = (seq, version)

    def load_state(self) -> SavedState | None:
        if self._watermark is None:
            return None
        rows = [StateRow(k, key, body) for (k, key), body in self._state.items()]
        return SavedState(*self._watermark, iter(rows))


class MemoryQuarantine:
    def __init__(self) -> None:
        self._held: dict[int, HeldMessage] = {}
        self._ids: dict[str, int] = {}
        self._last = 0

    def hold(self, messages: Sequence[HeldMessage]) -> None:
        for m in messages:
            if m.event.message_id in self._ids:
                continue
            self._last += 1
            self._held[self._last] = m._replace(id=self._last)
            self._ids[m.event.message_id] = self._last

    def held(self, after: int = 0, limit: int | None = None) -> list[HeldMessage]:
        found = [m for i, m in sorted(self._held.items()) if i > after]
        return found if limit is None else found[:limit]

    def release(self, ids: Collection[int]) -> None:
        for i in ids:
            m = self._held.pop(i, None)
            if m is not None:
                del self._ids[m.event.message_id]

    def held_count(self) -> int:
        return len(self._held)

    def erase_held(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        users, anons = set(user_ids), set(anonymous_ids)
        gone = [i for i, m in self._held.items() if of_erased(m.event, users, anons)]
        self.release(gone)
        return len(gone)
