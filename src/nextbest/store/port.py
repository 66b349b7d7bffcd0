"""The store ports: the event log, the decision log, saved state, the quarantine, the
outbox, the callback queue with advisors' presence, and the audit log.

Seven Protocols, each with its own contract suite run over every backend (tests/contract), so
each can live on its own kind of server (the event log on a stream, decisions in SQL, live
state in a key-value store). ``Stores`` bundles one of each for the composition root.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from nextbest.advisors.board import Hold
from nextbest.advisors.model import Callback, CallbackState, Presence
from nextbest.audit.model import AuditEntry, AuditHead, AuditRecord
from nextbest.decide.model import Decision
from nextbest.errors import InputError
from nextbest.events.model import Event

__all__ = [
    "AuditLog",
    "CallbackWrite",
    "Callbacks",
    "Capacity",
    "DecisionLog",
    "ErasureLedger",
    "EventLog",
    "HeldMessage",
    "Lease",
    "Outbox",
    "OutboxMessage",
    "OutboxState",
    "PartitionedLog",
    "Quarantine",
    "SavedState",
    "Scrubbing",
    "SequencedLog",
    "SharedState",
    "StateReads",
    "StateRow",
    "StateStore",
    "StoredEvent",
    "Stores",
    "WriteMarks",
    "of_erased",
    "with_state",
]


class StoredEvent(NamedTuple):
    """An event as the log holds it: its seq and, when a fold worker logged it
    (``SequencedLog.append_at``, ``PartitionedLog.append_partitioned``), the bus stream
    sequence it was folded from (what an erasure deletes from the stream, docs/trust.md);
    None where the log handed out the seq itself (``append``: the embedded engine, a
    migration) or the row was logged before the log kept it."""

    seq: int
    event: Event
    stream_seq: int | None = None


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

    def erase(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """Durably delete, all or nothing, every event of a customer being erased (GDPR art.
        17): those carrying one of ``user_ids``, and those carrying one of ``anonymous_ids``
        without a userId (an event another user sent from a shared device stays theirs).
        How many were deleted. Seqs are never handed out again and ``last_seq`` never goes
        down (it is the highest seq ever handed out), so a restart from a saved position
        never skips an event. The erased events' messageIds stay known: appending one
        again (a client's retry, a bus redelivery) is a duplicate, never stored."""
        ...


@runtime_checkable
class Scrubbing(Protocol):
    """A store that keeps copies of deleted rows on disk for a while (SQLite's WAL holds
    page images until a checkpoint): ``scrub`` makes them go, after an erasure. The SQLite
    event log has it."""

    def scrub(self) -> None: ...


def of_erased(event: Event, user_ids: Collection[str], anonymous_ids: Collection[str]) -> bool:
    """``event`` is one an erasure of these ids deletes (``EventLog.erase``): it carries one
    of ``user_ids``, or one of ``anonymous_ids`` without a userId."""
    if event.user_id is not None:
        return event.user_id in user_ids
    return event.anonymous_id is not None and event.anonymous_id in anonymous_ids


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
        nothing, with the stream sequences they carry (``StoredEvent.stream_seq``, read back
        by ``scan`` and ``events_of``), and record in the same commit ``position``: the bus
        stream sequence the log now holds every event up to (``events`` may be empty: the
        position alone moves)."""
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
        logged: StoreError otherwise, nothing written), with their stream sequences (as
        ``SequencedLog.append_at``), and raise each partition's position to
        ``positions[p]``, all in one commit (``events`` may be empty)."""
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

    def decisions_of(self, customers: Collection[str]) -> list[Decision]:
        """The decisions made for these customer keys, by time then id (an export)."""
        ...

    def erase_decisions(self, customers: Collection[str]) -> list[str]:
        """Durably delete, all or nothing, the decisions made for these customer keys (a
        userId, ``anon:<anonymousId>``): their ids. A position is still never handed out
        twice: ``decision_log_position`` never goes down, and a decision appended later gets
        a position above every one handed out before the erasure."""
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

    def take_leases(self, names: Sequence[str], owner: str, ttl: float) -> list[bool]:
        """Take or renew each lease of ``names`` for ``owner`` for ``ttl`` seconds unless
        another owner holds it: True where ``owner`` holds it now."""
        ...

    def drop_leases(self, names: Sequence[str], owner: str) -> None:
        """End the leases of ``names`` that ``owner`` still holds."""
        ...

    def fence(self, owner: str, names: Sequence[str]) -> None:
        """Every later ``save_rows`` writes only while ``owner`` holds all of ``names``'
        leases, checked atomically with the write (LeaseLost, nothing written, otherwise)."""
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


@runtime_checkable
class ErasureLedger(Protocol):
    """What a scaled deployment shares about erasures (``scaled_erasure``): tombstones (a
    keyed hash of each erased id -> when it was erased, never the id) that keep an erased
    customer's events still in flight from being folded back, the feed of them the API
    workers read to forget their decisions, and each erasure's outcome by its receipt. The
    Redis state store has it."""

    def record_tombstones(self, tombstones: Mapping[str, float], ttl: float) -> None:
        """Keep each tombstone ``ttl`` seconds, and add it to the feed."""
        ...

    def tombstones(self) -> dict[str, float]:
        """Every tombstone kept: hash -> erasure time."""
        ...

    def erased_since(self, since: float) -> list[tuple[str, float]]:
        """The feed's tombstones recorded after time ``since``: (hash, erasure time)."""
        ...

    def finish_erasure(
        self, receipt: str, outcome: bytes, ttl: float, marks: Sequence[str] = ()
    ) -> None:
        """Record an erasure's outcome (kept ``ttl`` seconds; the first one recorded stays)
        and delete the write marks ``marks`` (``WriteMarks``' names) of the erased ids."""
        ...

    def erasure_outcome(self, receipt: str) -> bytes | None:
        """The outcome recorded for ``receipt``; None when none is (yet)."""
        ...

    def record_part(self, receipt: str, part: str, body: bytes, ttl: float) -> dict[str, bytes]:
        """Record that ``part`` of the erasure ``receipt`` is done (several fold workers: a
        partition, or the model writer), with what it found (``body``; a part recorded
        again keeps its first); every part recorded so far (kept ``ttl`` seconds)."""
        ...

    def drop_claims(self, customers: Sequence[str]) -> None:
        """End every stitch's claim on ``customers`` (erased: nothing of them stays)."""
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

    def erase_held(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """Durably drop the held messages carrying one of ``user_ids``, or one of
        ``anonymous_ids`` without a userId (``EventLog.erase``): how many."""
        ...


class Capacity(NamedTuple):
    """An advisor's capacity, checked atomically when a callback is booked with them (no
    double booking under concurrent requests): at most ``limit`` callbacks at once (their
    ``max_concurrent``), a scheduled one holding its advisor ``slot`` seconds from its
    ``scheduled_for``."""

    limit: int
    slot: float


class CallbackWrite(NamedTuple):
    """One write of ``Callbacks.write_many``: a ``create`` (``expected_version`` None) or a
    ``save`` against ``expected_version``, with the advisor's capacity to check."""

    callback: Callback
    expected_version: int | None = None
    capacity: Capacity | None = None


class Callbacks(Protocol):
    """The durable callback queue (``advisors.model.Callback``, every transition in its
    ``history``) and the live facts about advisors the routing reads: presence and when
    each was last assigned (fair rotation). Shared by every worker of an installation.

    A callback *holds* its advisor (``advisor_id``) while it is not final and either
    *live* (``offered``, ``accepted``, ``connected``) or *booked* (``scheduled_for`` set).
    A write given a ``Capacity`` that makes a callback hold an advisor anew (created so, or
    saved with another advisor, another ``scheduled_for``, or moved into a live state) is
    refused with ``errors.SlotTaken`` when, counting the advisor's other callbacks in one
    atomic step with the write:

    - it becomes live and ``limit`` others are live already; or
    - it is booked and ``limit`` others are booked at a ``scheduled_for`` less than
      ``slot`` seconds from its own.

    A customer has at most one callback not final per topic: a create that would make a
    second is refused with ``errors.InFlight`` (the one in flight named), atomically with
    the write (of two racing, from any process, one is created).

    An *assignment* (a write that gives a callback an advisor it did not have, or that
    moves it into ``offered``) raises that advisor's ``rotation`` to the time of the
    callback's last transition (its ``requested_at`` without history), in the same commit.
    """

    def create(self, callback: Callback, capacity: Capacity | None = None) -> Callback:
        """Store a new callback, durably, with ``version`` 1 (returned so). ``Conflict``
        when its id is taken; ``SlotTaken`` past ``capacity`` (above). Nothing written on
        a refusal."""
        ...

    def get(self, callback_id: str) -> Callback | None: ...

    def write_many(self, writes: Sequence[CallbackWrite]) -> list[Callback | InputError]:
        """Many writes in one durable commit (concurrent requests share it): each as
        ``create`` or ``save`` does it, in order, each seeing the ones before it. A write
        refused (``Conflict``, ``SlotTaken``, ``NotFound``) changes nothing and its error is
        its result; the others are kept. A store failure (``StoreError``) raises, and
        nothing is written."""
        ...

    def save(
        self, callback: Callback, expected_version: int, capacity: Capacity | None = None
    ) -> Callback:
        """Compare and set: replace the stored callback of this id by ``callback`` if the
        stored one still has ``expected_version``; the stored one gets ``expected_version``
        + 1 (returned so). ``NotFound``: no such callback. ``Conflict``: the stored version
        is another (someone wrote meanwhile: read again), ``callback`` names another
        customer, the steps its ``history`` adds do not each make a legal move
        (``advisors.model.TRANSITIONS``) from the stored state to its own (one save may add
        several: a decline and the offer to a colleague), or its ``history`` does not begin
        with the stored one's (a transition persisted is never lost). ``SlotTaken`` past
        ``capacity`` (above)."""
        ...

    def of_customer(self, customer: str) -> list[Callback]:
        """This customer's callbacks, and no one else's, oldest request first (then id)."""
        ...

    def of_advisor(
        self, advisor_id: str, states: Collection[CallbackState] | None = None
    ) -> list[Callback]:
        """The callbacks held by this advisor in these states (None: every state), in queue
        order: by ``scheduled_for`` (``requested_at`` when not scheduled), then id."""
        ...

    def open_load(self) -> dict[str, int]:
        """How many callbacks each advisor holds now (live or booked, see above); an advisor
        who holds none is absent."""
        ...

    def holds(self, advisor_id: str | None = None) -> list[Hold]:
        """What the callbacks that hold an advisor (not final; live or booked) hold, of this
        advisor (None: of every advisor), by id: the board's facts, without the records."""
        ...

    def booked(self, advisor_id: str | None, start: float, end: float) -> list[Callback]:
        """The callbacks not final with ``start <= scheduled_for < end``, of this advisor
        (None: of anyone, unassigned ones too), by ``scheduled_for`` then id: what slots
        are computed around."""
        ...

    def due(self, now: float, limit: int | None = None) -> list[Callback]:
        """The callbacks a timer must act on at ``now``: ``offered`` ones whose offer lapsed
        (``offer_expires_at <= now``), ``accepted`` ones whose call did not start in time
        (``connect_by <= now``), ``requested`` ones whose slot came
        (``scheduled_for <= now``) and ``requested`` ones for now (no ``scheduled_for``:
        still to be offered). The timers first, then those waiting to be offered (so that
        many waiting never crowd a lapsed offer out of ``limit``); each by the time they fell
        due (the lapse, the slot, the request), then id; at most ``limit``."""
        ...

    def set_presence(
        self, advisor_id: str, presence: Presence, at: float
    ) -> tuple[Presence, float]:
        """Record an advisor's presence as of ``at``; a report older than the one recorded
        is ignored (telephony webhooks arrive out of order). The presence in force after,
        with its time."""
        ...

    def presences(self) -> dict[str, tuple[Presence, float]]:
        """Every advisor's presence as last reported, with its time (never reported:
        absent)."""
        ...

    def rotation(self) -> dict[str, float]:
        """When each advisor was last assigned a callback (never: absent)."""
        ...

    def scan(self, after: str = "", limit: int | None = None) -> list[Callback]:
        """Every callback with id > ``after``, by id, at most ``limit`` (``nextbest
        migrate``)."""
        ...

    def count(self) -> int: ...

    def erase_customers(self, customers: Collection[str]) -> int:
        """Durably delete every callback of these customers (``Callback.customer``), all or
        none: how many (their advisors' capacity is free again; presence and rotation stay,
        they are the advisors')."""
        ...

    def restore(
        self,
        callbacks: Sequence[Callback],
        presences: Mapping[str, tuple[Presence, float]] | None = None,
        rotation: Mapping[str, float] | None = None,
    ) -> None:
        """Write these as they are (versions kept; a callback, presence or rotation time
        held already is replaced), all or none, with no check: a copy from another store
        (``nextbest migrate``)."""
        ...


class OutboxState(enum.StrEnum):
    """Where an outbound message is: waiting (its first attempt or a retry), claimed by a
    sender (under a lease), delivered, or dead (given up: replayable)."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxMessage(NamedTuple):
    """One outbound message (a click-to-call request, later an email, an SMS, a push).

    ``destination`` names a configured webhook (``NEXTBEST_WEBHOOK_<NAME>_URL``); ``key`` is
    its idempotency key, unique in the outbox and sent with every attempt; ``payload`` the
    JSON body, sent as it is. ``attempts`` counts the attempts started (a claim starts one).
    ``next_attempt_at``: when a pending message is due; for a delivering one, when its
    sender's lease ends (a crashed sender's messages are claimed again from then on)."""

    id: int
    channel: str
    destination: str
    key: str
    payload: bytes
    state: OutboxState
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    delivered_at: float | None


class Outbox(Protocol):
    """Messages to send out, kept until delivered or given up: at-least-once delivery by
    senders that may crash at any point (``nextbest.channels.sender``). Every time is
    passed in (epoch seconds)."""

    def enqueue(
        self,
        channel: str,
        destination: str,
        key: str,
        payload: bytes,
        now: float,
        customer: str | None = None,
    ) -> OutboxMessage:
        """Durably add a pending message due ``now``, about ``customer`` (a customer key,
        if it is about one: what ``erase_mentions`` finds by index); a ``key`` enqueued
        before is left as it was, and that message is returned (a retry of the enqueue is a
        no-op)."""
        ...

    def claim_due(self, now: float, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        """Claim at most ``limit`` due messages, the longest due first: pending ones due by
        ``now``, and delivering ones whose lease ended by ``now``. Each becomes delivering,
        its lease ending at ``now + lease_seconds``, its ``attempts`` one more; returned as
        claimed, in id order. Two claimers never get the same message within its lease."""
        ...

    def mark_delivered(self, message_id: int, now: float) -> bool:
        """Delivered at ``now`` (whoever attempted it, however late: the receiver has it);
        False if it was delivered already (or there is no such message)."""
        ...

    def mark_failed(
        self, message_id: int, attempt: int, error: str, retry_at: float | None
    ) -> bool:
        """Attempt ``attempt`` failed with ``error``: pending again, due at ``retry_at``, or
        dead when ``retry_at`` is None. Only while the message is still delivering under that
        attempt (False otherwise: the lease ended and another sender claimed it, or it was
        delivered)."""
        ...

    def release(self, message_id: int, attempt: int, retry_at: float) -> bool:
        """Hand back a claimed message that was not attempted (a sender stopping, a gate
        holding the destination back): pending again, due at ``retry_at``, the attempt not
        counted. Only under that attempt, as ``mark_failed``."""
        ...

    def messages(
        self, state: OutboxState | None = None, after: int = 0, limit: int | None = None
    ) -> list[OutboxMessage]:
        """Messages with id > ``after`` (in ``state``, if given), oldest first, at most
        ``limit``."""
        ...

    def counts(self) -> dict[OutboxState, int]:
        """How many messages are in each state (every state named, 0 included)."""
        ...

    def replay(self, message_ids: Collection[int], now: float) -> list[int]:
        """Dead messages among ``message_ids`` pending again, due ``now``, their attempts
        back to 0 (the whole retry schedule again; ``last_error`` kept): their ids, in order.
        Messages not dead are left as they are."""
        ...

    def erase_mentions(self, ids: Collection[str]) -> int:
        """Durably delete, all or none, every message (whatever its state) about one of
        ``ids`` (its ``customer``, by index), and every message enqueued without a customer
        whose key or payload holds one of ``ids`` as a JSON string (``"<id>"``,
        JSON-escaped): the outbound messages about a customer being erased (a callback
        request, a fraud alert). How many."""
        ...


class AuditLog(Protocol):
    """The audit log (``nextbest.audit``): append-only, each entry hashed over its content
    and the hash before it. Appends are serialized across every connection and process
    sharing the store (the chain never forks), and each records the new head (last seq and
    hash) in the same commit: a tail cut off later shows against it."""

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        """Durably append ``records`` after the recorded head, in order, all or none
        (``audit.chain.chain``): the entries as stored."""
        ...

    def entries(
        self, after: int = 0, limit: int | None = None, subject: str | None = None
    ) -> list[AuditEntry]:
        """Entries with seq > ``after`` (about ``subject`` only, if given), by seq, at most
        ``limit``; as stored, even where altered (``audit.chain.verify`` judges)."""
        ...

    def head(self) -> AuditHead | None:
        """The head recorded by the last append (None: nothing appended)."""
        ...


class Lease(Protocol):
    """One holder at a time of a named duty among processes (``lease_postgres``): the
    callback sweeper of the scaled API workers. Held for a while once taken; a holder that
    dies leaves it to the next one asking once that while ran out."""

    def hold(self) -> bool:
        """Take the lease if free (or run out), or renew it if held already: True if held."""
        ...

    def release(self) -> None:
        """Hand it back if held (the next asking takes it at once)."""
        ...


class Stores(NamedTuple):
    """One backend per port, and how to release them all (``close``, once)."""

    events: EventLog
    decisions: DecisionLog
    state: StateStore
    quarantine: Quarantine
    callbacks: Callbacks
    outbox: Outbox
    audit: AuditLog
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
