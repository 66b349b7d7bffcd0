"""The store ports: the event log, the decision log, saved state and the quarantine.

Four Protocols, each with its own contract suite run over every backend (tests/contract), so
each can live on its own kind of server (the event log on a stream, decisions in SQL, live
state in a key-value store). ``Stores`` bundles one of each for the composition root.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from nextbest.decide.model import Decision
from nextbest.events.model import Event

__all__ = [
    "DecisionLog",
    "EventLog",
    "HeldMessage",
    "PartitionedLog",
    "Quarantine",
    "SavedState",
    "SequencedLog",
    "SharedState",
    "StateReads",
    "StateRow",
    "StateStore",
    "StoredEvent",
    "Stores",
    "WriteMarks",
    "with_state",
]


class StoredEvent(NamedTuple):
    seq: int
    event: Event


class StateRow(NamedTuple):
    """One piece of derived state (a profile, an identity link); ``body`` None deletes it."""

    kind: str
    key: str
    body: bytes | None


class SavedState(NamedTuple):
    """Derived state as of log position ``seq``, folded under catalog ``version``."""

    seq: int
    version: str
    rows: Iterator[StateRow]


class EventLog(Protocol):
    """The truth: every accepted event, in order, deduplicated by messageId."""

    def append(self, events: Sequence[Event]) -> list[int | None]:
        """Durably append, all or nothing; a seq per event, None for a duplicate messageId."""
        ...

    def scan(self, after: int = 0) -> Iterator[StoredEvent]:
        """Every event with seq > ``after``, in seq order."""
        ...

    def events_of(
        self, user_ids: Collection[str], anonymous_ids: Collection[str], upto: int
    ) -> list[StoredEvent]:
        """Events carrying any of these ids with seq <= ``upto``, in seq order."""
        ...

    def last_seq(self) -> int: ...

    def count(self) -> int: ...


@runtime_checkable
class SequencedLog(Protocol):
    """An event log a fold worker writes behind its live state (``write_behind``): it hands
    out the seqs itself, folds, saves the profiles, then logs. The PostgreSQL and in-memory
    event logs have it."""

    def logged(self, message_ids: Collection[str]) -> set[str]:
        """Which of these messageIds the log holds (committed)."""
        ...

    def append_at(self, events: Sequence[StoredEvent], position: int) -> None:
        """Durably append ``events`` at the seqs they carry (increasing, each above the log's
        last seq, messageIds not logged: StoreError otherwise, nothing written), all or
        nothing, and record in the same commit ``position``: the bus stream sequence the log
        now holds every event up to (``events`` may be empty: the position alone moves)."""
        ...

    def source_position(self) -> int:
        """The last ``position`` recorded by ``append_at`` (0: never)."""
        ...

    def last_seq(self) -> int: ...


@runtime_checkable
class PartitionedLog(Protocol):
    """An event log several fold workers write behind their live state, each for the bus
    partitions it owns (``partitioned_fold``): an event folded at bus stream sequence ``s``
    is logged at seq ``seq_base() + s`` (stream order is the log's order; a seq is never
    handed out twice; events not folded where they were first published leave gaps). Each
    partition records the stream sequence the log holds all its events up to. The
    PostgreSQL and in-memory event logs have it."""

    def logged(self, message_ids: Collection[str]) -> set[str]:
        """Which of these messageIds the log holds (committed)."""
        ...

    def seq_base(self) -> int:
        """The offset of the fold workers' seqs, fixed by the first call (later calls read
        it): the log's last seq minus the position a single fold worker logged up to
        (``source_position``), so that seqs go on past whatever the log holds."""
        ...

    def partition_positions(self) -> dict[int, int]:
        """Per partition, the stream sequence the log holds every event of up to (a
        partition without a row: ``source_position``, what one fold worker logged)."""
        ...

    def append_partitioned(
        self, events: Sequence[StoredEvent], positions: Mapping[int, int]
    ) -> None:
        """Durably append ``events`` at the seqs they carry (increasing; messageIds not
        logged: StoreError otherwise, nothing written) and raise each partition's position
        to ``positions[p]``, all in one commit (``events`` may be empty)."""
        ...

    def source_position(self) -> int:
        """The position one fold worker (``SequencedLog.append_at``) recorded last."""
        ...


class DecisionLog(Protocol):
    """Every decision as it was taken: for feedback joins, learning, evaluation and audit."""

    def append_decisions(self, decisions: Sequence[Decision]) -> None:
        """Log decisions, all or none. A decision id logged already is left as it was (a
        decision never changes). Each decision reads back as it was logged, its ``features``
        in their order (the learner relies on it: ``learn.learner.customer_part``)."""
        ...

    def decision(self, decision_id: str) -> Decision | None: ...

    def decisions(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[Decision]:
        """Logged decisions with ``since <= timestamp < until``, by time then id."""
        ...

    def decision_log_position(self) -> int:
        """Where the decision log ends now (0 when empty): ``decisions_after`` it yields only
        decisions appended later. A position is never handed out twice."""
        ...

    def decisions_after(self, position: int) -> Iterator[Decision]:
        """Decisions appended after ``position`` (from ``decision_log_position``), in the
        order they were appended."""
        ...


class StateStore(Protocol):
    """Derived state saved as rows (profiles, identity links, models) with the event log
    position it was folded up to: a cache a restart starts from, never the truth."""

    def save_state(
        self, seq: int, version: str, rows: Sequence[StateRow], replace: bool = False
    ) -> None:
        """Atomically upsert (or delete) ``rows`` and move the watermark to ``seq``;
        ``replace`` first drops every saved row. Only changed rows are written."""
        ...

    def load_state(self) -> SavedState | None:
        """The saved state, or None when nothing was ever saved."""
        ...


@runtime_checkable
class StateReads(Protocol):
    """Point reads of saved state, for a worker that holds none of it (a stateless API
    worker reading one customer's profile per decision): the Redis state store has them."""

    def read_rows(
        self, rows: Sequence[tuple[str, str]], marks: Sequence[str] = ()
    ) -> list[bytes | None]:
        """The bodies of these (kind, key) rows as last saved, in order (None: no such row),
        as one consistent cut; then the value of each of ``marks`` (``WriteMarks``), read in
        the same round trip."""
        ...

    def ping(self) -> None:
        """StoreUnavailable unless the store answers now."""
        ...


@runtime_checkable
class SharedState(StateReads, Protocol):
    """Saved state several fold workers write side by side, each its own rows (the
    customers of its partitions): the Redis state store has it."""

    def save_rows(
        self,
        version: str,
        rows: Sequence[StateRow],
        marks: Mapping[str, int] | None = None,
        release: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Write ``rows``, raise the write ``marks`` and end the ``release`` claims (owner
        -> customers) in one atomic write, without moving any watermark; the first save
        records ``version`` (the catalog folded under). StateLost when the saved state
        vanished since this store last saw it."""
        ...

    def claim(self, customers: Sequence[str], owner: str) -> bool:
        """Claim all of ``customers`` for ``owner`` or none (False: another owner holds
        one); until a ``save_rows`` releases them."""
        ...

    def saved_version(self) -> str | None:
        """The catalog version the saved state was folded under (None: nothing saved)."""
        ...


@runtime_checkable
class WriteMarks(Protocol):
    """Read-your-writes across stateless workers: the worker that published an event marks
    each of its ids with the event's bus sequence; a decision on any worker reads the mark
    with the profile (``StateReads.read_rows``) and waits until the fold got that far."""

    def mark_written(self, marks: Mapping[str, int]) -> None:
        """Raise each mark to its sequence (never lower it); marks expire after a while
        (a fold that far behind is waited for by nobody)."""
        ...


class HeldMessage(NamedTuple):
    """A message set apart because it breaks the bank's vocabulary, as it was received.

    ``id`` is its place in the quarantine (0 before it is held); ``code``, ``reason`` and
    ``path`` say why (``missing_property``, "'Overdraft Started' needs property 'balance'",
    ``$.batch[3].properties.balance``); ``sender`` the kind of key that sent it."""

    id: int
    received_at: float
    code: str
    reason: str
    path: str
    sender: str
    event: Event


class Quarantine(Protocol):
    """Acknowledged messages nextbest could not act on, kept until a fixed vocabulary or
    catalog lets them in (``nextbest quarantine replay``): never lost, never folded."""

    def hold(self, messages: Sequence[HeldMessage]) -> None:
        """Durably keep ``messages``, all or none; one whose messageId is held already is
        left as it was (a client's retry)."""
        ...

    def held(self, after: int = 0, limit: int | None = None) -> list[HeldMessage]:
        """Held messages with id > ``after``, oldest first, at most ``limit``."""
        ...

    def release(self, ids: Collection[int]) -> None:
        """Drop these held messages (replayed into the event log)."""
        ...

    def held_count(self) -> int: ...


class Stores(NamedTuple):
    """One backend per port, and how to release them all (``close``, once)."""

    events: EventLog
    decisions: DecisionLog
    state: StateStore
    quarantine: Quarantine
    close: Callable[[], None]


def with_state(stores: Stores, state: StateStore, close_state: Callable[[], None]) -> Stores:
    """``stores`` with its state port served by ``state`` (Redis, say: the logs stay where
    they were); ``close`` closes ``stores`` then ``state`` (``close_state``), the second
    even when the first fails."""

    def close() -> None:
        try:
            stores.close()
        finally:
            close_state()

    return stores._replace(state=state, close=close)
