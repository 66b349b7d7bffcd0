"""The in-memory twin of the store port: same contract, no I/O (tests, simulations)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

from nextbest.decide.model import Decision
from nextbest.events.model import Event
from nextbest.store.port import StoredEvent

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self._events: list[StoredEvent] = []
        self._ids: set[str] = set()
        self._decisions: dict[str, Decision] = {}
        self._snapshot: tuple[int, bytes] | None = None

    def append(self, events: Sequence[Event]) -> list[int | None]:
        out: list[int | None] = []
        for event in events:
            if event.message_id in self._ids:
                out.append(None)
                continue
            self._ids.add(event.message_id)
            seq = len(self._events) + 1
            self._events.append(StoredEvent(seq, event))
            out.append(seq)
        return out

    def scan(self, after: int = 0) -> Iterator[StoredEvent]:
        yield from self._events[after:]

    def events_of(
        self, user_ids: Collection[str], anonymous_ids: Collection[str], upto: int
    ) -> list[StoredEvent]:
        return [
            s
            for s in self._events[:upto]
            if s.event.user_id in user_ids or s.event.anonymous_id in anonymous_ids
        ]

    def last_seq(self) -> int:
        return len(self._events)

    def count(self) -> int:
        return len(self._events)

    def append_decisions(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            self._decisions[d.decision_id] = d

    def decision(self, decision_id: str) -> Decision | None:
        return self._decisions.get(decision_id)

    def put_snapshot(self, seq: int, blob: bytes) -> None:
        self._snapshot = (seq, blob)

    def snapshot(self) -> tuple[int, bytes] | None:
        return self._snapshot

    def close(self) -> None:
        return None
