"""The fold worker's event log, written behind its live state (issue #17, freshness).

An event is durable once JetStream acknowledged it to the API worker, so the fold worker need
not wait for PostgreSQL to show it: it hands out the event log seqs itself, folds, saves the
profiles to Redis, and only then writes the log (``append_at``, in stream order, exactly once),
acknowledging the bus after both. ``WriteBehindLog`` is the event log the fold worker's engine
sees meanwhile:

- ``append`` hands out seqs at once (the log's last seq + 1, ...), without writing: a messageId
  is a duplicate when the *tail* (events handed a seq, not yet logged) or the log holds it;
  the tail is looked at first, then the log (an event leaves the tail only once committed, so
  one not in the tail and not yet committed was never appended); each event keeps the bus
  stream sequence it came by (``came_from``, before the append), logged with it: what an
  erasure deletes from the stream (docs/trust.md, "The JetStream stream");
- reads (``events_of`` for a stitch, ``scan``) answer from the log and the tail together, so
  a stitch sees the device's events folded a moment ago and not logged yet;
- ``seal(position)`` closes a *segment*: the tail's events since the last seal, with the bus
  stream sequence they reach; ``write(segment)`` logs it (one commit, the position with it;
  the writer merges the segments waiting into one), then drops it from the tail. Segments
  are written in order, each once: a retry after an error first asks the log which position
  it recorded (``committed``: a commit whose answer was lost).

Two watermarks: the stream position saved with the profiles in Redis (``fold/position``) and
the one recorded with the log (``source_position``). The log's never passes Redis's while the
worker runs; after a crash between the Redis save and the log write, the restarted worker
redelivers from the log's position, logs what is missing (the same seqs: the same events in
the same order meet the same duplicates) and folds only what is past Redis's
(``fold_worker``).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from typing import NamedTuple

from nextbest.errors import StoreError
from nextbest.events.model import Event
from nextbest.store.port import EventLog, SequencedLog, StoredEvent

__all__ = ["Segment", "WriteBehindLog"]


class Segment(NamedTuple):
    """Events handed a seq since the last seal, and the stream sequence they reach."""

    events: tuple[StoredEvent, ...]
    position: int


class WriteBehindLog:
    """``WriteBehindLog(log, writer)``: ``log`` answers reads (and is the fold thread's
    connection), ``writer`` commits segments (a connection of its own, so a commit never holds
    up a read; the same object will do). Both are the same event log."""

    def __init__(self, log: EventLog, writer: SequencedLog | None = None) -> None:
        if not isinstance(log, SequencedLog):
            raise StoreError(
                "a fold worker writes its event log behind the live state: the event log "
                f"must hand out seqs (PostgreSQL or in-memory), not {type(log).__name__}"
            )
        self.log = log
        self._sequenced: SequencedLog = log
        self.writer: SequencedLog = writer if writer is not None else log
        self._lock = threading.Lock()
        self._tail: list[StoredEvent] = []  # handed a seq, not logged, in seq order
        self._tail_ids: set[str] = set()
        self._sealed = 0  # tail[:_sealed] belongs to sealed segments
        #: the stream sequences of the next append's events (``came_from``)
        self._came_from: Sequence[int] | None = None
        #: the last seq and the stream position the log holds (committed)
        self.logged_seq = log.last_seq()
        self.logged_position = self._sequenced.source_position()
        self._next = self.logged_seq + 1

    # ------------------------------------------------------------------ the fold's side
    def came_from(self, stream_seqs: Sequence[int]) -> None:
        """The events of the next ``append`` came by these bus stream sequences, one each in
        order: each is logged with its own (``StoredEvent.stream_seq``). An append without
        logs its events without one."""
        self._came_from = stream_seqs

    def append(self, events: Sequence[Event]) -> list[int | None]:
        """A seq per event, None for a messageId in the tail or the log (or earlier in
        ``events``); nothing written yet. StoreError (nothing handed out) when the log cannot
        be asked, or the stream sequences given (``came_from``) are not one per event."""
        streams, self._came_from = self._came_from, None
        if streams is not None and len(streams) != len(events):
            raise StoreError(
                f"event log: {len(events)} events appended, {len(streams)} stream sequences given"
            )
        if not events:
            return []
        ids = list(dict.fromkeys(e.message_id for e in events))
        with self._lock:
            seen = {m for m in ids if m in self._tail_ids}
        ask = [m for m in ids if m not in seen]
        if ask:
            seen |= self._sequenced.logged(ask)
        out: list[int | None] = []
        fresh: list[StoredEvent] = []
        for i, e in enumerate(events):
            if e.message_id in seen:
                out.append(None)
                continue
            seen.add(e.message_id)
            stored = StoredEvent(self._next + len(fresh), e, streams[i] if streams else None)
            fresh.append(stored)
            out.append(stored.seq)
        with self._lock:
            self._tail.extend(fresh)
            self._tail_ids.update(s.event.message_id for s in fresh)
        self._next += len(fresh)
        return out

    def skip_to(self, seq: int) -> None:
        """The next seq handed out follows ``seq`` (the saved state's: a restart that logged
        what Redis held past the log). StoreError if seqs past it were handed out already:
        the log and the saved state disagree."""
        if self._next - 1 > seq:
            raise StoreError(
                f"event log: seqs up to {self._next - 1} handed out again while the saved "
                f"state ends at {seq}: the log and the saved profiles disagree"
            )
        self._next = seq + 1

    def seal(self, position: int) -> Segment:
        """The tail's events since the last seal, reaching stream sequence ``position``."""
        with self._lock:
            events = tuple(self._tail[self._sealed :])
            self._sealed = len(self._tail)
        return Segment(events, position)

    # ------------------------------------------------------------------ the writer's side
    def write(self, segment: Segment) -> None:
        """Log ``segment`` (the oldest not written: several sealed ones merged will do), then
        drop it from the tail."""
        self.writer.append_at(segment.events, segment.position)
        self.written(segment)

    def committed(self) -> int:
        """The stream position the log recorded last, asked of the writer's connection: after
        a failed write, the segments up to it committed all the same (the answer was lost)."""
        return self.writer.source_position()

    def written(self, segment: Segment) -> None:
        """``segment`` is in the log: drop it from the tail."""
        with self._lock:
            n = len(segment.events)
            if self._tail[:n] != list(segment.events):
                raise StoreError("event log: segments written out of order")
            del self._tail[:n]
            self._sealed -= n
            self._tail_ids.difference_update(s.event.message_id for s in segment.events)
            if segment.events:
                self.logged_seq = segment.events[-1].seq
            self.logged_position = max(self.logged_position, segment.position)

    def probe(self) -> None:
        """Ask the log one cheap question (its recorded position): its error if it cannot
        answer."""
        self._sequenced.source_position()

    @property
    def unlogged(self) -> int:
        """Events handed a seq and not logged yet."""
        with self._lock:
            return len(self._tail)

    # ------------------------------------------------------------------ reads: log + tail
    def _tail_now(self) -> list[StoredEvent]:
        with self._lock:
            return list(self._tail)

    def scan(self, after: int = 0) -> Iterator[StoredEvent]:
        tail = self._tail_now()  # first: an event committed meanwhile is in both, kept once
        last = after
        for stored in self.log.scan(after):
            last = stored.seq
            yield stored
        yield from (s for s in tail if s.seq > last)

    def events_of(
        self, user_ids: Collection[str], anonymous_ids: Collection[str], upto: int
    ) -> list[StoredEvent]:
        tail = self._tail_now()
        found = {s.seq: s for s in self.log.events_of(user_ids, anonymous_ids, upto)}
        users, anons = set(user_ids), set(anonymous_ids)
        for s in tail:
            if s.seq <= upto and (s.event.user_id in users or s.event.anonymous_id in anons):
                found[s.seq] = s
        return [found[seq] for seq in sorted(found)]

    def last_seq(self) -> int:
        return self._next - 1

    def count(self) -> int:
        unlogged = self.unlogged
        return self.log.count() + unlogged

    def erase(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """The log's ``erase``, once every event handed a seq is logged (the fold worker
        waits for its writer before it erases: ``scaled_erasure``); StoreError otherwise."""
        if self.unlogged:
            raise StoreError(
                "event log: an erasure waits until every folded event is logged "
                f"({self.unlogged} are not yet)"
            )
        return self.log.erase(user_ids, anonymous_ids)
