"""A fold worker of some of the bus's partitions (``serve --role fold --partitions 0-7``):
several of them share a deployment, each owning its partitions (docs/scale-out.md, "Several
fold workers").

Each owned partition has a durable consumer of its own; the worker folds each partition's
messages in that partition's stream order into the profiles of the customers homed there
(``routing.home``), which it reads from Redis on demand (``ProfileCache``: a bounded cache,
never the whole book) and saves back; it writes the event log behind (PostgreSQL, a thread
of its own), each event at seq ``base + stream sequence`` (``PartitionedLog``), so the log's
order is the bus's and a replay of the log in seq order folds every profile as the workers
did. Per partition, a message is one of:

- **fold**: the event belongs to a customer homed here (a stitch whose dissolved customers
  are all frozen: merged here, the device's events read from the event log);
- **forward**: it belongs elsewhere (published before its ids' link appeared): published on
  to that partition (kind ``forward``) and not logged here;
- **freeze**: a stitch dissolving a customer homed here, after it claimed the customers it
  touches (Redis; one that cannot is put aside, ``fold/parked-<p>``, and back at the end of
  the stream after a pause): its ids resolve to
  the joined customer in this partition's view from now on and a persisted *relay* forwards
  their events still arriving behind it; its profile goes; the stitch travels on (kind
  ``stitch``) once the event log holds everything this worker folded up to it (the joined
  customer's home reads the device's events from the log). Only the fold that joins the ids
  writes their links (and releases the claim), so the API workers route to the joined
  customer only once it folded the stitch. In log order the freeze takes effect at the
  stitch's sequence there: a rebuild here before it still counts the moved ids.

One step, repeated: fetch what the partitions' consumers delivered; fold (in memory); publish
what goes elsewhere (and the learning records, ``model_writer``); save the changed rows with
each partition's positions to Redis in one MULTI/EXEC (the events are now visible); hand the
batch to the log writer, which logs it (one commit) and then acknowledges its deliveries. A
step that froze a stitch then waits for that commit, publishes the stitches (and the
forwards that followed them), and saves the freeze's rows and the positions it held back.

Per partition, Redis holds ``fold/done-<p>`` (every delivery up to it processed and saved),
``fold/visible-<p>`` (what a decision waits for: a stitch's partition shows it only once it is
on its way), ``fold/skipped-<p>`` (the deliveries past the logged position that are not to be
logged: forwarded, frozen, duplicates, deferred), ``fold/relays-<p>`` and, while a step is
finishing, ``fold/pending-<p>`` (what it still has to publish, and the rows it held back).
Each partition folds on its own view (book and cache); the partitions of one worker share
the unlogged tail (a stitch's read) and the log writer. The event log holds per partition
the position it logged everything up to. A restart consumes each partition from the lower
of the two: deliveries up to ``done`` are logged (unless skipped) and not folded again; a
pending stitch is published again (the bus and the receiver dedupe it) once the log is
complete; folding goes on past ``done``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from nextbest.bus.port import LEARNING, BusMessage, Delivery, ErasableStream, EventBus
from nextbest.catalog.compiled import Catalog
from nextbest.decide.feedback import is_feedback
from nextbest.erasure import customer_ids
from nextbest.errors import ConfigError, InputError, LeaseLost, NextbestError, StoreError
from nextbest.events.model import Event, EventType
from nextbest.experiments.counters import ExperimentCounters
from nextbest.experiments.exposure import first_exposure
from nextbest.fold_loop import FoldLoop, LoopStats
from nextbest.guard.alert import (
    FRAUD_CHANNEL,
    Alerted,
    DueAlert,
    decode_alerts,
    due_alert,
    encode_alerts,
)
from nextbest.learn.trust import sender_trusted
from nextbest.live_profiles import mark_value, written_keys
from nextbest.model_writer import LearningRecord, ModelWriter, learning_names
from nextbest.profile.book import PROFILE_ROW, ProfileBook
from nextbest.profile.identity import ANON_PREFIX, LinkKind
from nextbest.profile.model import Profile
from nextbest.profile_cache import LINKED_ROW, Linked, ProfileCache
from nextbest.routing import destination, dissolved, home, joined, moved_links, remote
from nextbest.scaled_erasure import (
    ERASE,
    ERASE_PART,
    OUTCOME_SECONDS,
    TOMBSTONE_SECONDS,
    ErasureOutcome,
    ErasurePart,
    PartDone,
    Tombstones,
    complete_erasure,
    decode_command,
    decode_part,
    stream_copies,
)
from nextbest.scaled_erasure import encode as encode_outcome
from nextbest.store.port import (
    ErasureLedger,
    EventLog,
    Outbox,
    PartitionedLog,
    SharedState,
    StateRow,
    StoredEvent,
    Stores,
)
from nextbest.store.snapshot import FOLD_ROW, POSITION

__all__ = [
    "FORWARD",
    "STITCH",
    "Erasures",
    "Hop",
    "PartitionStats",
    "PartitionedFold",
    "consumer_name",
    "lease_name",
    "parse_partitions",
]

log = logging.getLogger("nextbest.fold")

FORWARD = "forward"
STITCH = "stitch"
#: the kinds of an erasure's commands (``scaled_erasure``): each alone in its step
_ERASING = (ERASE, ERASE_PART)
_ALIAS = LinkKind.ALIAS.value
_ANON = LinkKind.ANON.value


def consumer_name(partition: int) -> str:
    """The durable consumer of one partition."""
    return f"fold-p{partition}"


def lease_name(partition: int) -> str:
    """The lease a fold worker holds to fold one partition (``SharedState.take_leases``)."""
    return f"fold-p{partition}"


def worker_name() -> str:
    """A fold worker's name as a lease owner: host, process id and a random part (a
    restarted worker is another owner: it waits for its predecessor's leases to expire)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: seconds a partition's lease lasts unless renewed (renewed three times as often)
LEASE_SECONDS = 10.0


def parse_partitions(text: str, partitions: int) -> list[int]:
    """``"0-7"``, ``"0,2,5-6"``: the partitions named (ConfigError for one past the bus's)."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ConfigError(f"partitions are written 0-7 or 0,2,5-6, not {text!r}")
        first, last = int(lo), int(hi) if sep else int(lo)
        if first > last or last >= partitions:
            raise ConfigError(f"partitions {part}: the bus has partitions 0-{partitions - 1}")
        out.update(range(first, last + 1))
    if not out:
        raise ConfigError("no partition named")
    return sorted(out)


class Hop(msgspec.Struct, array_like=True, frozen=True):
    """A stitch on its way (a ``stitch`` message's body): the event, the customers it
    dissolved so far, the partition it comes from, and the customers it claimed (released
    by the fold that joins them)."""

    event: Event
    frozen: list[str]
    came_from: int
    claimed: list[str] = []


class _Out(msgspec.Struct, array_like=True):
    """A message to publish, the write marks to raise to where it lands, and (a stitch)
    the relays its stream sequence is recorded in."""

    partition: int
    message_id: str
    body: bytes
    kind: str
    marks: list[str] = []
    relays: list[tuple[str, str]] = []


class _Relay(msgspec.Struct, array_like=True):
    """A link a stitch frozen here moved: where the stitch went, the freeze's stream
    sequence, its messageId, the link's target before it (what this partition's folds before
    the stitch in log order still see), the stream sequence the stitch was published at (0:
    not yet) and whether the joining fold saved the link (the ids' events then go by it)."""

    to: int
    at: int
    message_id: str
    before: str | None
    hop: int = 0
    joined: bool = False


class _PendingRow(msgspec.Struct, array_like=True):
    """``fold/pending-<p>``: a step's messages still to publish after its log commit, and
    the rows it held back until then."""

    messages: list[_Out]
    held: list[tuple[str, str, bytes | None]]


class _Parked(msgspec.Struct, array_like=True):
    """A stitch put aside (another holds a customer it touches), and when to put it back at
    the end of its partition's stream (``fold/parked-<p>``)."""

    out: _Out
    due: float
    attempts: int


#: a parked stitch goes back after 5 ms, doubling each time it finds its customers claimed
#: again, at most a second (a claim is normally held for one stitch's trip: milliseconds; a
#: worker that is down holds it longer, and nothing spins meanwhile)
_PARK_FIRST = 0.005
_PARK_MOST = 1.0

_decode_event = msgspec.msgpack.Decoder(Event).decode
_decode_hop = msgspec.msgpack.Decoder(Hop).decode
_decode_pending = msgspec.msgpack.Decoder(_PendingRow).decode
_decode_parked = msgspec.msgpack.Decoder(list[_Parked]).decode
_decode_seqs = msgspec.msgpack.Decoder(list[int]).decode
_decode_relays = msgspec.msgpack.Decoder(list[tuple[str, str, str, _Relay]]).decode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode
_encode = msgspec.msgpack.Encoder().encode


def _row(name: str, partition: int) -> tuple[str, str]:
    return (FOLD_ROW, f"{name}-{partition}")


@dataclass
class PartitionStats(LoopStats):
    """What the worker did, for ``/metrics`` (``fold_loop.LoopStats``, and its own)."""

    forwarded: int = 0
    stitches: int = 0
    #: stitches put back in their partition's stream: a customer they touch was claimed
    #: by another stitch on its way
    stitches_deferred: int = 0
    cache_loads: int = 0
    #: times this worker stopped folding its partitions: a lease lost (``_let_go``)
    leases_lost: int = 0
    #: erasure parts applied, and events dropped by a tombstone (an erased customer's,
    #: accepted before their erasure)
    erasures: int = 0
    erased_dropped: int = 0


class Erasures(NamedTuple):
    """What a partitioned fold worker erases customers with (``scaled_erasure``): the
    tombstones recorded before, the stores an erasure deletes from and writes its audit
    entry to, and whether a model writer runs beside the workers (it forgets an erased
    customer last, then records the outcome)."""

    tombstones: Tombstones
    rights: Stores
    models: bool = False


class _Segment(NamedTuple):
    """A step's events for the log (in the order folded), each partition's position they
    reach, and the deliveries to acknowledge once logged."""

    events: tuple[StoredEvent, ...]
    positions: dict[int, int]
    deliveries: tuple[Delivery, ...]


@dataclass
class _Staged:
    """A step folded in memory, publishing and saving (tried again until it passes)."""

    deliveries: list[Delivery] = field(default_factory=list)
    now: list[_Out] = field(default_factory=list)
    late: dict[int, list[_Out]] = field(default_factory=dict)
    held: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)
    visible: dict[int, int] = field(default_factory=dict)
    positions: dict[int, int] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)
    #: the error that stopped the batch part way (the rest went back to the queues)
    error: NextbestError | None = None
    #: claims of stitches joined here, released with the save: owner -> customers
    release: dict[str, list[str]] = field(default_factory=dict)
    received: list[float] = field(default_factory=list)
    #: deliveries the stream need not keep, deleted from it after the save: those dropped
    #: by a tombstone (an erased customer's), and duplicates of a logged event (an erasure
    #: finds the customer's messages by the logged copy)
    deleted: list[int] = field(default_factory=list)
    folded: int = 0
    published: bool = False
    saved: bool = False
    sealed: bool = False


class PartitionedFold(FoldLoop[_Segment, PartitionStats]):
    """``PartitionedFold(catalog, bus, state, log, writer, partitions=[0, 1])``: ``state``
    is the Redis state store (``read_rows``, ``save_rows``, ``saved_version``), ``log`` the
    event log the fold reads (a stitch's events, the duplicate check), ``writer`` the same
    log on a connection of its own (commits)."""

    def __init__(
        self,
        catalog: Catalog,
        bus: EventBus,
        state: SharedState,
        log: EventLog,
        writer: PartitionedLog,
        partitions: Sequence[int],
        *,
        batch: int = 2_000,
        wait: float = 0.2,
        cache_size: int = 100_000,
        max_unlogged: int = 10_000,
        log_every: float = 0.05,
        wall: Callable[[], float] = time.time,
        close_writer: Callable[[], None] | None = None,
        close: Callable[[], None] | None = None,
        models: ModelWriter | None = None,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        outbox: Outbox | None = None,
        erasures: Erasures | None = None,
    ) -> None:
        if not isinstance(log, PartitionedLog):
            raise StoreError(
                "several fold workers need an event log they can share (PostgreSQL or "
                f"in-memory), not {type(log).__name__}"
            )
        super().__init__(PartitionStats(), max_unlogged, log_every)
        self.catalog = catalog
        self.bus = bus
        self.state = state
        self.log = log
        self.reads: PartitionedLog = log
        self.writer = writer
        #: the partitions this worker is configured for, and those it folds now (their
        #: leases held and their state restored)
        self.wanted = sorted(set(partitions))
        self.partitions: list[int] = []
        self.owner = owner or worker_name()
        self.lease_seconds = lease_seconds
        self._lease_due = 0.0
        #: configured partitions whose lease another worker holds (logged when it changes)
        self.waiting: list[int] = []
        self.count = bus.partitions
        self.batch = batch
        self.wait = wait
        self._wall = wall
        self._close_writer = close_writer
        self._close = close
        #: the deployment's model writer, when it runs in this worker (``model_writer``)
        self.models = models
        #: the outbox the guard's fraud alerts go to (None: no alerts made)
        self.outbox = outbox
        #: per partition, the alerts made and not enqueued yet, oldest first; how many of
        #: them the last save wrote (``fold/alerts-<p>``); whether that row holds any
        self.alerts: dict[int, list[DueAlert]] = {}
        self._alerts_saved: dict[int, int] = {}
        self._alerts_row: dict[int, bool] = {}
        self._alerted = Alerted()
        #: each partition folds on its own (its book, its cache: a freeze on one partition
        #: must not show in another's view before the joining fold), sharing the bound
        self.books: dict[int, ProfileBook] = {}
        self.caches: dict[int, ProfileCache] = {}
        self._share = max(1, cache_size // len(self.wanted))
        self._learning = learning_names(catalog)
        self._counters = ExperimentCounters(catalog)
        #: per partition: processed (in memory), saved (Redis), logged (the event log)
        self.done: dict[int, int] = {}
        self.saved: dict[int, int] = {}
        self.logged: dict[int, int] = {}
        #: per partition: deliveries up to it were folded before a restart (logged only)
        self.again: dict[int, int] = {}
        #: per partition: stream sequences past the logged position not to log (and as
        #: last saved)
        self.skipped: dict[int, set[int]] = {}
        self._skipped_saved: dict[int, list[int]] = {}
        #: per partition, the links a stitch frozen there moved, until the fold joining
        #: them saved them: (kind, id) -> (the partition the stitch went to, the freeze's
        #: stream sequence, its messageId); the ids' events arriving there follow it
        self.relays: dict[int, dict[tuple[str, str], _Relay]] = {}
        self._relays_dirty: set[int] = set()
        #: per partition, stitches put aside until they may be tried again (``_defer``)
        self.parked: dict[int, list[_Parked]] = {}
        self._parked_dirty: set[int] = set()
        self._attempts: dict[str, int] = {}
        #: per partition, deliveries received and not processed yet
        self._queues: dict[int, deque[Delivery]] = {}
        #: pending stitches found at a restart, per partition
        self._restart_pending: dict[int, _PendingRow] = {}
        self._staged: _Staged | None = None
        #: the unlogged tail (events folded or logged again, in the order handed to the
        #: writer) and their messageIds
        self._tail: list[StoredEvent] = []
        self._tail_ids: set[str] = set()
        self._lock = threading.Lock()
        #: without (or a ``state`` that is no ``ErasureLedger``): answered ``not_served``
        self.erasures = erasures
        self._begin()

    def _begin(self) -> None:
        """Refuse a state folded under another catalog; take the leases it can (restoring
        those partitions)."""
        version = self.state.saved_version()
        if version is not None and version != self.catalog.digest:
            raise ConfigError(
                "the saved live state was folded under another catalog: changing how events "
                "fold with several fold workers needs a rebuild (docs/scale-out.md)"
            )
        self.base = self.reads.seq_base()
        try:
            self._keep_leases(force=True)
        except BaseException:
            with contextlib.suppress(NextbestError):
                self.state.drop_leases([lease_name(p) for p in self.wanted], self.owner)
            raise

    # ------------------------------------------------------------------ leases
    def _keep_leases(self, *, force: bool = False) -> None:
        """Take or renew the leases of the configured partitions (every third of their
        time): fold a partition only while holding its lease. A partition whose lease went
        to another worker (this one stalled past it) ends this worker's folding of every
        partition (``_let_go``); one newly taken is restored from Redis and the log once
        the log holds everything this worker folded."""
        now = time.monotonic()
        if not force and now < self._lease_due:
            return
        names = [lease_name(p) for p in self.wanted]
        got = self.state.take_leases(names, self.owner, self.lease_seconds)
        self._lease_due = now + self.lease_seconds / 3
        held = [p for p, ok in zip(self.wanted, got, strict=True) if ok]
        waiting = [p for p in self.wanted if p not in held]
        if waiting != self.waiting:
            if waiting:
                log.warning(
                    "fold worker %s: partitions %s are leased by another fold worker: not "
                    "folding them (waiting for their leases)",
                    self.owner,
                    waiting,
                )
            self.waiting = waiting
        if any(p not in held for p in self.partitions):
            self._let_go(f"the leases of {[p for p in self.partitions if p not in held]} expired")
        new = [p for p in held if p not in self.partitions]
        if new and self._drained():
            log.info("fold worker %s: took the leases of partitions %s", self.owner, new)
            self._restore(new)
            self.partitions = sorted([*self.partitions, *new])
        self.state.fence(self.owner, [lease_name(p) for p in self.partitions])

    def _drained(self) -> bool:
        """The event log holds everything this worker folded (none of its segments wait):
        with the writer running, its commit waited for (at most a second; not put off,
        ``_hurry``)."""
        if self._unlogged and self._writer is None:
            with contextlib.suppress(NextbestError):
                self._write_unlogged(retry=True)
        if self._unlogged and self._writer is not None:
            with self._changed, self._hurry():
                self._changed.wait_for(lambda: not self._unlogged, timeout=1.0)
        return not self._unlogged

    def _renew(self) -> None:
        """Leases renewed while a step waits (the log behind, a stitch's commit)."""
        with contextlib.suppress(NextbestError):
            if time.monotonic() >= self._lease_due:
                names = [lease_name(p) for p in self.partitions]
                got = self.state.take_leases(names, self.owner, self.lease_seconds)
                if all(got):
                    self._lease_due = time.monotonic() + self.lease_seconds / 3

    def _let_go(self, why: str) -> None:
        """Stop folding every partition (a lease was lost: what is folded and not saved may
        not be saved any more): the step in hand and the in-memory views go; what was
        saved and sealed for the log stays with the writer. The next step takes back the
        leases it can and restores those partitions from Redis and the log."""
        log.error(
            "fold worker %s stops folding partitions %s: %s", self.owner, self.partitions, why
        )
        staged, self._staged = self._staged, None
        if staged is not None and not staged.sealed and staged.events:
            with self._lock:
                del self._tail[-len(staged.events) :]
                self._tail_ids.difference_update(e.event.message_id for e in staged.events)
        for p in self.partitions:
            for table in (
                self.books,
                self.caches,
                self.relays,
                self.parked,
                self._queues,
                self.done,
                self.saved,
                self.again,
                self.skipped,
                self._skipped_saved,
                self._restart_pending,
                self.alerts,
                self._alerts_saved,
                self._alerts_row,
            ):
                table.pop(p, None)
        self._relays_dirty.clear()
        self._parked_dirty.clear()
        self._attempts.clear()
        self.partitions = []
        self._lease_due = 0.0
        self.state.fence(self.owner, [])
        self.stats.leases_lost += 1

    # ------------------------------------------------------------------ restart
    def _open(self, p: int) -> None:
        book = self.books[p] = ProfileBook(self.catalog.matcher, self.catalog.fold_config)
        book.replace = False
        self.caches[p] = ProfileCache(self.state, book, self.count, [p], capacity=self._share)
        self.relays[p] = {}
        self.parked[p] = []
        self._queues[p] = deque()

    def _restore(self, partitions: list[int]) -> None:
        if self.erasures is not None and isinstance(self.state, ErasureLedger):
            self.erasures.tombstones.add(self.state.tombstones())  # others' erasures meanwhile
        version = self.state.saved_version()
        logged = self.reads.partition_positions()
        single = self.reads.source_position()
        for p in partitions:
            self._open(p)
        rows = [
            (FOLD_ROW, POSITION),
            *(_row("done", p) for p in partitions),
            *(_row("skipped", p) for p in partitions),
            *(_row("pending", p) for p in partitions),
            *(_row("relays", p) for p in partitions),
            *(_row("parked", p) for p in partitions),
            *(_row("alerts", p) for p in partitions),
        ]
        got = self.state.read_rows(rows)
        n = len(partitions)
        legacy, done, skipped, pending, relays, parked, alerts = (
            got[0],
            got[1 : 1 + n],
            got[1 + n : 1 + 2 * n],
            got[1 + 2 * n : 1 + 3 * n],
            got[1 + 3 * n : 1 + 4 * n],
            got[1 + 4 * n : 1 + 5 * n],
            got[1 + 5 * n :],
        )
        for i, p in enumerate(partitions):
            saved_alerts = alerts[i]
            self.alerts[p] = decode_alerts(saved_alerts) if saved_alerts else []
            self._alerts_saved[p] = len(self.alerts[p])
            self._alerts_row[p] = bool(self.alerts[p])
            logged_p = logged.get(p, single)
            saved_done, saved_skipped, saved_pending, saved_relays = (
                done[i],
                skipped[i],
                pending[i],
                relays[i],
            )
            saved_parked = parked[i]
            if saved_parked is not None:
                self.parked[p] = _decode_parked(saved_parked)
            if saved_done is not None:
                done_p = int(saved_done)
            elif legacy is not None:
                # the state one fold worker saved: it must have logged all it folded
                done_p = int(legacy)
                if done_p != single:
                    raise StoreError(
                        f"the single fold worker's state is folded up to {done_p} but its "
                        f"event log is written up to {single}: start it once more (serve "
                        "--role fold, no --partitions) to log the rest, then several"
                    )
            else:
                done_p = 0
                if logged_p > 0 or (version is None and self.log.last_seq() > 0):
                    raise StoreError(
                        f"partition {p}: the event log holds events but Redis holds no "
                        "state for them (flushed or never saved): rebuild the live state "
                        "first (docs/scale-out.md, 'Several fold workers')"
                    )
            if logged_p > done_p:
                raise StoreError(
                    f"partition {p}: the event log is written up to {logged_p}, past the "
                    f"state saved in Redis ({done_p}): Redis lost data; rebuild the live state"
                )
            # consumed again from the lower watermark: up to ``again`` logged, not folded
            self.done[p] = min(logged_p, done_p)
            self.saved[p] = self.again[p] = done_p
            self.logged[p] = logged_p
            self.skipped[p] = set(_decode_seqs(saved_skipped)) if saved_skipped else set()
            if saved_pending is not None:
                row = _decode_pending(saved_pending)
                self._restart_pending[p] = row
                self._apply_held(p, row.held)
            if saved_relays is not None:
                for kind, key, target, relay in _decode_relays(saved_relays):
                    self.relays[p][kind, key] = relay
                    self.books[p].identity.load(kind, key, target)
                    self.caches[p].pin([(kind, key)])
        for p in partitions:
            self.bus.consume(consumer_name(p), self.done[p], p)

    def _apply_held(self, p: int, held: Iterable[tuple[str, str, bytes | None]]) -> None:
        """A pending step's held rows, back into the cache as they were (held again)."""
        book = self.books[p]
        keys: list[tuple[str, str]] = []
        for kind, key, body in held:
            if kind == PROFILE_ROW:
                if body is None:
                    book.profiles.pop(key, None)
                else:
                    book.profiles[key] = _decode_profile(body)
                keys.append((kind, key))
            else:
                book.identity.put_back(kind, key, body.decode() if body is not None else None)
                keys.append((kind, key))
        book.dirty.update(keys)
        self.caches[p].hold(keys)

    # ------------------------------------------------------------------ the loop
    def start(self) -> None:
        super().start()
        if self.models is not None:
            self.models.start()

    @property
    def settled(self) -> bool:
        """Nothing held back: no restart row to finish, no step staged, no stitch put aside
        (a test drives the workers until every one is settled and the bus is empty)."""
        return not (self._restart_pending or self._staged or any(self.parked.values()))

    def step(self) -> int:
        """One fetch, fold, publish, save (and a stitch's second half); the batch sealed
        for the log. Without the writer thread (``run`` not running) the step logs what is
        sealed itself, at its end. The partitions' leases are renewed first (every third
        of their time); a save that finds one gone (LeaseLost) ends the folding of them all
        until the leases are taken back (``_let_go``)."""
        try:
            self._keep_leases()
            return self._step()
        except LeaseLost as exc:
            self._let_go(exc.message)
            raise

    def _step(self) -> int:
        self._wait_for_room()
        if self._staged is not None:  # the last step's publish or save failed: again
            self._finish(self._staged)
            self._staged = None
        self._send_alerts()  # saved, not sent yet (a failed enqueue, or found at a restart)
        if self._restart_pending and self._caught_up_again():
            self._complete_restart()
        self._check_relays()
        self._unpark()
        self._receive()
        work = self._ready()
        if not work:
            self._trim()
            self._log_here()
            return 0
        if any(ds[0].kind in _ERASING for ds in work.values()):
            return self._erase_step(work)
        started = time.perf_counter()
        staged = self._stage(work)
        self.stats.fold_seconds = time.perf_counter() - started
        self._staged = staged
        self._finish(staged)
        self._staged = None
        if staged.error is not None:
            raise staged.error
        self.stats.batches += 1
        if self.on_step is not None and staged.folded:
            self.on_step(self.stats)
        self._trim()
        self._log_here()
        return staged.folded

    # ------------------------------------------------------------------ receiving
    def _receive(self) -> None:
        wait = 0.0 if any(self._queues.values()) else self.wait
        names = [consumer_name(p) for p in self.partitions]
        if not names:  # no lease held: nothing to fetch
            self._stop.wait(wait)
            return
        try:
            got = self.bus.fetch_any(names, self.batch, wait)
        except NextbestError:
            self._restart_consumers()  # deliveries went missing (a reconnection)
            raise
        for d in got:
            if d.delivered > 1:
                self.stats.redelivered += 1
            p = d.partition
            queue = self._queues.get(p)
            if queue is None:
                continue
            if d.seq <= self.done[p] or (queue and d.seq <= queue[-1].seq):
                continue  # processed (or queued) already: a redelivery
            queue.append(d)

    def _restart_consumers(self) -> None:
        for p in self.partitions:
            self._queues[p].clear()
            with contextlib.suppress(NextbestError):
                self.bus.consume(consumer_name(p), self.done[p], p)

    def _ready(self) -> dict[int, list[Delivery]]:
        out: dict[int, list[Delivery]] = {}
        share = max(1, self.batch // max(1, len(self.partitions)))
        for p, queue in self._queues.items():
            # a partition with a stitch still to send on from before a restart takes only
            # what it logs again until then (a new stitch's pending row would replace it)
            limit = self.again[p] if p in self._restart_pending else None
            taken: list[Delivery] = []
            while queue and len(taken) < share and (limit is None or queue[0].seq <= limit):
                if queue[0].kind in _ERASING and taken:
                    break  # an erasure command goes alone (``_erase_step``)
                taken.append(queue.popleft())
                if taken[-1].kind in _ERASING:
                    break
            if taken:
                out[p] = taken
        return out

    def _caught_up_again(self) -> bool:
        return all(self.done[p] >= self.again[p] for p in self._restart_pending)

    # ------------------------------------------------------------------ folding
    def _stage(self, work: dict[int, list[Delivery]]) -> _Staged:
        """Fold a batch in memory. Each delivery reads what it needs (Redis, the log) before
        it changes anything: one whose read fails changes nothing, and it and the rest of the
        batch go back to their queues (``error``: raised once the part done is saved)."""
        st = _Staged()
        for cache in self.caches.values():
            cache.begin_step()
        fresh: list[tuple[int, Delivery, Event, Hop | None]] = []
        for p, deliveries in work.items():
            for d in deliveries:
                if d.seq <= self.again[p]:  # folded before the restart: logged only
                    st.deliveries.append(d)
                    if d.seq > self.logged[p] and d.seq not in self.skipped[p]:
                        event, _ = self._decode(d)
                        self._add_tail(st, StoredEvent(self.base + d.seq, event, d.seq))
                    self.done[p] = d.seq
                    st.positions[p] = d.seq
                    continue
                event, hop = self._decode(d)
                fresh.append((p, d, event, hop))
        if fresh:
            # where each partition's saved state is folded up to: a link made past it is not
            # made yet at this point of the stream
            folded = {q: max(self.done[q], self.again[q]) for q in self.partitions}
            by_partition: dict[int, list[Event]] = {}
            for q, _, e, _ in fresh:
                by_partition.setdefault(q, []).append(e)
            try:
                for q, events in by_partition.items():
                    self.caches[q].prepare(events, lambda r: folded.get(r, 0))
                seen = self._logged_already([e.message_id for _, _, e, _ in fresh])
            except NextbestError as exc:  # nothing of the batch folded yet: all of it again
                self._requeue([d for _, d, _, _ in fresh])
                st.error = exc
                return st
            frozen_any = False
            for at, (p, d, event, hop) in enumerate(fresh):
                if event.message_id in seen:
                    self.skipped[p].add(d.seq)
                    st.deleted.append(d.seq)
                    self.stats.duplicates += 1
                    if hop is not None and hop.claimed:  # folded already: its claim ends
                        st.release[event.message_id] = list(hop.claimed)
                elif self.erasures is not None and self.erasures.tombstones.drops(event):
                    self._drop_erased(st, p, d, event, hop)
                else:
                    try:
                        action = self._route(st, p, d, event, hop, frozen_any)
                    except NextbestError as exc:
                        self._requeue([r for _, r, _, _ in fresh[at:]])
                        st.error = exc
                        break
                    if action == STITCH:
                        frozen_any = True
                    elif action == "fold":
                        seen.add(event.message_id)
                st.deliveries.append(d)
                self.done[p] = d.seq
                st.positions[p] = d.seq
                if p not in st.held:
                    st.visible[p] = d.seq
        return st

    def _drop_erased(self, st: _Staged, p: int, d: Delivery, event: Event, hop: Hop | None) -> None:
        """An erased customer's event accepted before their erasure (a tombstone): not
        folded nor logged, deleted from the stream after the save; a stitch's claims end."""
        self.skipped[p].add(d.seq)
        st.deleted.append(d.seq)
        if hop is not None and hop.claimed:
            st.release[event.message_id] = list(hop.claimed)
        self.stats.erased_dropped += 1

    # ------------------------------------------------------------------ erasure
    def _erase_step(self, work: dict[int, list[Delivery]]) -> int:
        """Erasure commands, alone in their step (``scaled_erasure``; each partition's is
        alone in its list): the rest of the batch goes back to its queues; every event this
        worker folded is logged first; then each command's part (``_erase_part``; a command
        at or below the position saved before a restart was applied: passed over), and the
        positions saved past them. A failure puts them back (an erasure is idempotent)."""
        erasing = {p: ds[0] for p, ds in work.items() if ds[0].kind in _ERASING}
        self._requeue([d for p, ds in work.items() if p not in erasing for d in ds])
        try:
            self._drain_log()
            for p, d in erasing.items():
                if d.seq > self.again[p]:
                    self._erase_part(p, d)
        except BaseException:
            self._requeue(list(erasing.values()))
            raise
        st = _Staged()
        for p, d in erasing.items():
            self.skipped[p].add(d.seq)
            st.deliveries.append(d)
            self.done[p] = st.positions[p] = st.visible[p] = d.seq
        self._staged = st
        self._finish(st)
        self._staged = None
        self.stats.batches += 1
        self._log_here()
        return 0

    def _erase_part(self, p: int, d: Delivery) -> None:
        """One partition's part of an erasure: the home partition's (the API worker's
        command, kind ``erase``) first finds every id and sends a part to every other
        partition (``_lead``); each part then erases what it holds (``_erase_here``) and
        records itself; the one that finds every partition's recorded completes it."""
        ledger, erasures = self.state, self.erasures
        if not isinstance(ledger, ErasureLedger) or erasures is None:
            self._refuse_erasure(d)
            return
        stones = erasures.tombstones
        part = self._lead(p, d, ledger, erasures) if d.kind == ERASE else decode_part(d.body)
        command = part.command
        users, anons = command.user_ids, command.anonymous_ids
        stones.add({t: part.erased_at for t in stones.of(users, anons)})
        done = self._erase_here(p, d.seq, users, anons)
        parts = ledger.record_part(command.receipt, str(p), encode_outcome(done), OUTCOME_SECONDS)
        self.stats.erasures += 1
        if all(str(q) in parts for q in range(self.count)):
            complete_erasure(erasures.rights, ledger, self.bus, part, parts, self._wall())
        stones.prune(self._wall())

    def _lead(self, p: int, d: Delivery, ledger: ErasureLedger, erasures: Erasures) -> ErasurePart:
        """The home partition's part begins: every id of the customer (the command's, this
        partition's view of their links, their events' identifies and aliases in the log),
        the tombstones recorded with this time, a part sent to every other partition (behind
        every event acknowledged there before it)."""
        command = decode_command(d.body)
        book, cache = self.books[p], self.caches[p]
        also = (command.user_ids, command.anonymous_ids)
        if command.customer_id and not command.customer_id.startswith(ANON_PREFIX):
            cache.load_members(book.identity.canonical_user(command.customer_id))
        try:
            users, anons = customer_ids(_View(book, self.log), command.customer_id, also)
        except InputError:  # never sent by an API worker: nothing to erase
            users, anons = [], []
        now = self._wall()
        stones = erasures.tombstones.of(users, anons)
        ledger.record_tombstones(dict.fromkeys(stones, now), TOMBSTONE_SECONDS)
        whole = msgspec.structs.replace(command, user_ids=users, anonymous_ids=anons)
        part = ErasurePart(command=whole, erased_at=now, parts=self.count, models=erasures.models)
        body = encode_outcome(part)
        self.bus.publish(
            [
                BusMessage(q, f"erase-{command.receipt}-{q}", body, ERASE_PART)
                for q in range(self.count)
                if q != p
            ]
        )
        return part

    def _erase_here(self, p: int, seq: int, users: list[str], anons: list[str]) -> PartDone:
        """What this partition holds of the ids: the stream's copies of their logged events
        (and the messages those came by), their events in the log, their profiles, links
        and positions in this view and in Redis, relays, parked stitches, alerts, claims."""
        logged = self.log.events_of(users, anons, self.log.last_seq())
        on_stream = [_stream_seq(s, self.base) for s in logged]
        messages = self._erase_messages([s for s in on_stream if s is not None])
        events = self.log.erase(users, anons)
        profiles, rows = self.caches[p].erase(users, anons)
        keys = {*users, *(ANON_PREFIX + a for a in anons)}
        ids = {*users, *anons}
        for k in [k for k in self.relays[p] if k[1] in ids]:
            self._drop_relay(p, k)
        kept = [k for k in self.parked[p] if not _names(k.out, ids)]
        if len(kept) != len(self.parked[p]):
            self.parked[p] = kept
            self._parked_dirty.add(p)
        if any(a.customer in keys for a in self.alerts[p]):
            self.alerts[p] = [a for a in self.alerts[p] if a.customer not in keys]
            self._alerts_saved[p] = min(self._alerts_saved[p], len(self.alerts[p]))
            self._alerts_row[p] = True
            left = self.alerts[p]
            rows.append(StateRow(*_row("alerts", p), encode_alerts(left) if left else None))
        rows += self._relay_rows() + self._parked_rows()
        self.state.save_rows(self.catalog.digest, rows)
        if isinstance(self.state, ErasureLedger):
            self.state.drop_claims(sorted(keys))
        return PartDone(seq=seq, events=events, profiles=profiles, messages=messages)

    def _erase_messages(self, seqs: Sequence[int]) -> int:
        """Delete these stream messages, and those they came by (``stream_copies``), from a
        bus that can (JetStream)."""
        if not seqs or not isinstance(self.bus, ErasableStream):
            return 0
        return self.bus.erase_messages(stream_copies(self.bus, seqs))

    def _refuse_erasure(self, d: Delivery) -> None:
        """A worker without what an erasure needs (``Erasures``, Redis): the
        command's outcome says so (the API worker answers 501)."""
        if not isinstance(self.state, ErasureLedger):
            return
        outcome = ErasureOutcome(
            status="not_served",
            erased_at=self._wall(),
            message="this fold worker was started without what an erasure needs (its "
            "tombstone key, the stores): docs/trust.md",
        )
        try:
            receipt = (
                decode_command(d.body).receipt
                if d.kind == ERASE
                else decode_part(d.body).command.receipt
            )
            self.state.finish_erasure(receipt, encode_outcome(outcome), OUTCOME_SECONDS)
        except (NextbestError, msgspec.DecodeError) as exc:
            log.error("an erasure command not answered: %s", exc)

    def _requeue(self, deliveries: list[Delivery]) -> None:
        """Put deliveries not processed back at the front of their queues, in order."""
        for d in reversed(deliveries):
            self._queues[d.partition].appendleft(d)

    def _decode(self, d: Delivery) -> tuple[Event, Hop | None]:
        if d.kind == STITCH:
            hop = _decode_hop(d.body)
            return hop.event, hop
        return _decode_event(d.body), None

    def _logged_already(self, ids: list[str]) -> set[str]:
        with self._lock:
            seen = {m for m in ids if m in self._tail_ids}
        ask = sorted({m for m in ids if m not in seen})
        if ask:
            seen |= self.reads.logged(ask)
        return seen

    def _route(
        self,
        st: _Staged,
        p: int,
        d: Delivery,
        event: Event,
        hop: Hop | None,
        late: bool,
    ) -> str:
        identity = self.books[p].identity
        relayed = self._relayed(event, p)  # a stitch too: it follows the earlier one
        if relayed is not None:
            self._forward(st, p, d, event, hop, relayed, late)
            return FORWARD
        if not event.user_id and not event.anonymous_id:
            self.skipped[p].add(d.seq)
            return "skip"
        # a stitch coming back to a partition that froze it (the customer it joins moved
        # meanwhile) is routed, and folded, on the links as they were before its freeze
        own = self._unfreeze_own(p, event.message_id) if hop is not None else {}
        try:
            return self._route_by_links(st, p, d, event, hop, late)
        finally:
            for k, (frozen_as, _) in own.items():
                if k in self.relays[p]:  # (a fold here made the link: it stays)
                    identity.put_back(k[0], k[1], frozen_as)

    def _unfreeze_own(
        self, p: int, message_id: str
    ) -> dict[tuple[str, str], tuple[str | None, str | None]]:
        """The links this partition froze for the stitch ``message_id``, back as they were
        before it; (what they are now, what they were)."""
        return self._put_back(p, lambda relay: relay.message_id == message_id)

    def _put_back(
        self, p: int, which: Callable[[_Relay], bool]
    ) -> dict[tuple[str, str], tuple[str | None, str | None]]:
        """The links of the relays ``which`` picks, back as they were before their freeze;
        (what they are now, what they were)."""
        identity = self.books[p].identity
        out = {}
        for k, relay in self.relays[p].items():
            if which(relay):
                out[k] = (identity.target(*k), relay.before)
                identity.put_back(k[0], k[1], relay.before)
        return out

    def _route_by_links(
        self,
        st: _Staged,
        p: int,
        d: Delivery,
        event: Event,
        hop: Hop | None,
        late: bool,
    ) -> str:
        identity = self.books[p].identity
        frozen = hop.frozen if hop is not None else []
        to, freeze = destination(identity, event, self.count, frozen)
        if to != p or freeze is not None:
            # sent elsewhere or dissolving here on the word of links to other workers'
            # customers: read those again (what this worker holds of its own is right)
            self.caches[p].refresh([event], lambda q: max(self.done[q], self.again[q]))
            to, freeze = destination(identity, event, self.count, frozen)
        if to != p:
            self._forward(st, p, d, event, hop, to, late)
            return FORWARD
        claimed = list(hop.claimed) if hop is not None else []
        if moved_links(identity, event):
            # a stitch claims the customers it dissolves and joins first (one folded here
            # alone too): two stitches over the same customers never interleave (crossing
            # ones would each dissolve the other's joined customer); on its way it claims
            # the ones it finds it touches besides (the customer it joins moved meanwhile).
            # One that cannot claim them is put aside (``_defer``)
            needed = {*dissolved(identity, event), joined(identity, event)}
            missing = sorted(needed - set(claimed))
            if missing:
                if not self.state.claim(missing, event.message_id):
                    self._defer(st, p, d, event.message_id)
                    return "deferred"
                self._attempts.pop(event.message_id, None)
                claimed = sorted(needed | set(claimed))
        if freeze is None:
            self._fold(st, p, d, event, hop)
            if claimed:  # joined here: released with its save (not before: a fold that
                # failed part way leaves its stitch claimed, to be folded again)
                st.release[event.message_id] = claimed
            return "fold"
        self._freeze(st, p, d, event, hop, claimed)
        return STITCH

    def _defer(self, st: _Staged, p: int, d: Delivery, message_id: str) -> None:
        """Put a stitch aside: another stitch claimed a customer it touches and is on its
        way. Saved with this step (``fold/parked-<p>``), it goes back at the end of its
        partition's stream after a pause that doubles each time (``_unpark``); the events
        after it go on meanwhile (it takes effect where it is folded, as the log says)."""
        attempts = self._attempts.get(message_id, 0) + 1
        self._attempts[message_id] = attempts
        pause = min(_PARK_MOST, _PARK_FIRST * 2 ** (attempts - 1))
        out = _Out(p, f"defer:{p}:{d.seq}", d.body, d.kind or FORWARD)
        self.parked[p].append(_Parked(out, self._wall() + pause, attempts))
        self._parked_dirty.add(p)
        self.skipped[p].add(d.seq)
        self.stats.stitches_deferred += 1

    def _unpark(self) -> None:
        """The parked stitches whose pause is over go back into their partitions' streams
        (published first, then no longer saved as parked: a crash between publishes them
        twice, and the bus or the receiver dedupes them)."""
        now = self._wall()
        due = {p: [k for k in mine if k.due <= now] for p, mine in self.parked.items()}
        outs = [k.out for mine in due.values() for k in mine]
        if not outs:
            return
        self.bus.publish([BusMessage(o.partition, o.message_id, o.body, o.kind) for o in outs])
        for p, gone in due.items():
            if gone:
                self.parked[p] = [k for k in self.parked[p] if k.due > now]
                self._parked_dirty.add(p)
        self.state.save_rows(self.catalog.digest, self._parked_rows())

    def _parked_rows(self) -> list[StateRow]:
        rows = []
        for p in sorted(self._parked_dirty):
            body = _encode(self.parked[p]) if self.parked[p] else None
            rows.append(StateRow(*_row("parked", p), body))
        self._parked_dirty.clear()
        return rows

    def _relayed(self, event: Event, p: int) -> int | None:
        """Where an event goes that an id of (a link not made here yet, or relayed by a
        stitch still on its way) sends elsewhere; None: routed by the links."""
        future = self.caches[p].future
        relays = self.relays[p]
        if not future and not relays:
            return None
        keys = []
        if event.user_id:
            keys.append((_ALIAS, event.user_id))
        elif event.anonymous_id:
            keys.append((_ANON, event.anonymous_id))
        if event.previous_id:
            keys += [(_ALIAS, event.previous_id), (_ANON, event.previous_id)]
        if event.type is EventType.IDENTIFY and event.anonymous_id and event.user_id:
            keys.append((_ANON, event.anonymous_id))
        for k in keys:
            relay = relays.get(k)
            # (its own stitch comes back here when the customer it joins moved meanwhile:
            # routed by the links)
            if relay is not None and relay.message_id != event.message_id and not relay.joined:
                if not self._joined(k, relay):
                    return relay.to
                self._joined_now(p, k)  # the joining fold saved the link: route by it
                continue
            found = future.get(k)
            if found is not None:
                return found.came_from
        return None

    def _fold(self, st: _Staged, p: int, d: Delivery, event: Event, hop: Hop | None) -> None:
        book = self.books[p]
        identity = book.identity
        cache = self.caches[p]
        customer = joined(identity, event)
        if customer not in book.profiles:
            cache.load_profile(customer)
        learns = event.name is not None and (
            is_feedback(event) or event.name in self._learning or self._counters.wants(event)
        )
        trusted = False
        if learns and is_feedback(event):
            trusted = sender_trusted(book.profiles.get(customer), event)
        keys = _stitch_keys(event)
        before = {k: identity.target(*k) for k in keys}
        # a link leaving a customer homed here (a stitch folded here alone): its members
        # row is this fold's to change (one homed elsewhere: its freeze changed it)
        leaving = {
            k: old is not None and home(identity.canonical_user(old), self.count) == p
            for k, old in before.items()
        }
        if event.type is EventType.ALIAS and event.user_id and event.previous_id:
            cache.load_members(identity.canonical_user(event.user_id))
            cache.load_members(event.previous_id)
        if keys:  # the members rows a changed link updates, read before anything changes
            target = joined(identity, event)
            if home(target, self.count) == p:
                cache.members(target)
            for k, old in before.items():
                if old is not None and leaving[k]:
                    cache.members(old)
        seq = self.base + d.seq
        stored = StoredEvent(seq, event, d.seq)
        self._add_tail(st, stored)  # first, as the log holds it: a rebuild reads it too
        # an alias rebuilds from every id of the customer as of this event in log order: a
        # device frozen away here whose stitch comes later in the log is still the customer's
        undone = self._before_relays(p, d.seq) if event.type is EventType.ALIAS else {}
        try:
            book.apply(seq, event, self._events_of)
        except BaseException:
            st.events.pop()
            with self._lock:
                self._tail.pop()
                self._tail_ids.discard(event.message_id)
            raise
        finally:
            for k, (frozen_as, before_as) in undone.items():
                if identity.target(*k) == before_as:  # (a link this fold made stays)
                    identity.put_back(k[0], k[1], frozen_as)
        if self.outbox is not None:
            self._alert_if_flagged(p, event)
        came_from = hop.came_from if hop is not None else p
        for k, old in before.items():
            new = identity.target(*k)
            if new != old:
                cache.saved_as.pop(k, None)
                self._drop_relay(p, k)  # the id joined a customer of this partition again
            if new != old or hop is not None:
                # (a stitch from another partition, even where it changes nothing here: its
                # freeze took the id out of the members row it had, and waits for this)
                cache.linked_to(k[0], k[1], new, old, leaving=leaving[k])
                cache.mark_linked(k[0], k[1], Linked(p, d.seq, came_from, event.message_id))
        st.folded += 1
        st.received.append(event.received_at)
        self.stats.events += 1
        if learns:
            after = joined(identity, event)
            profile = book.profiles.get(after)
            same: tuple[str, ...] = ()
            if event.name in self._learning:  # as this partition knows them now
                users, anons = identity.ids_of(after)
                same = tuple(sorted({*users, *(ANON_PREFIX + a for a in anons)} - {after}))
            record = LearningRecord(
                event,
                p,
                d.seq,
                after,
                profile.experiment_key if profile is not None else "",
                trusted,
                same,
                first_exposure(profile, self.catalog, event),
            )
            st.now.append(_Out(LEARNING, f"learn:{p}:{d.seq}", _encode(record), "learning"))

    def _before_relays(
        self, p: int, seq: int
    ) -> dict[tuple[str, str], tuple[str | None, str | None]]:
        """Put the links this partition froze away, by stitches published after ``seq``
        (or not yet), back as they were before; (what they are now, what they were)."""
        return self._put_back(p, lambda relay: relay.hop == 0 or relay.hop > seq)

    def _freeze(
        self,
        st: _Staged,
        p: int,
        d: Delivery,
        event: Event,
        hop: Hop | None,
        claimed: list[str],
    ) -> None:
        """Dissolve every customer ``event`` takes ids from that is homed here; the stitch
        goes on once the log holds what was folded here (``_finish``)."""
        book = self.books[p]
        identity = book.identity
        cache = self.caches[p]
        moved = moved_links(identity, event)
        before = {k: identity.target(*k) for k in moved}
        for old in before.values():  # read before anything changes (``_stage``)
            if old is not None:
                cache.members(old)
        frozen = list(hop.frozen) if hop is not None else []
        remaining = remote(identity, event, self.count, frozen)
        here = [c for c in remaining if home(c, self.count) == p]
        later = [c for c in remaining if home(c, self.count) != p]
        # the next stop, decided before the links move here: the next customer to dissolve,
        # else the joined one's home
        nxt = home(later[0] if later else joined(identity, event), self.count)
        held: set[tuple[str, str]] = st.held.setdefault(p, set())
        for customer in here:
            if customer in _stitched_customers(event):  # the id's own customer: it goes
                book.profiles.pop(customer, None)
                book.dirty.add((PROFILE_ROW, customer))
                held.add((PROFILE_ROW, customer))
        frozen += here
        # from now on the ids resolve to the joined customer in this partition's view (its
        # events still arriving are forwarded); the links are not saved from here (only the
        # joining fold writes them: a write from here could land after a later move), this
        # partition relays the ids' events after the stitch until that fold saved them
        identity.link(event)
        for k in moved:
            cache.linked_to(k[0], k[1], None, before[k], leaving=True)
            if k in book.dirty:  # folded here and not saved yet: saved as folded
                cache.saved_as[k] = before[k]
            self.relays[p][k] = _Relay(nxt, d.seq, event.message_id, before[k])
            self._relays_dirty.add(p)
        cache.pin(moved)
        cache.hold(held)
        body = _encode(Hop(event, frozen, p, claimed))
        out = _Out(nxt, f"stitch:{p}:{d.seq}", body, STITCH)
        out.marks = written_keys(event.user_id, event.anonymous_id)
        out.relays = moved
        st.late.setdefault(p, []).insert(self._hops(st, p), out)
        st.visible.setdefault(p, d.seq - 1)
        self.skipped[p].add(d.seq)
        self.stats.stitches += 1

    @staticmethod
    def _hops(st: _Staged, p: int) -> int:
        """Where a stitch goes among a partition's late messages: after the stitches,
        before the forwards (a stitch is published first: the forwards follow it)."""
        return sum(1 for m in st.late.get(p, ()) if m.kind == STITCH)

    def _forward(
        self,
        st: _Staged,
        p: int,
        d: Delivery,
        event: Event,
        hop: Hop | None,
        to: int,
        late: bool,
    ) -> None:
        if hop is not None and hop.frozen:
            out = _Out(to, f"stitch:{p}:{d.seq}", d.body, STITCH)
        else:
            out = _Out(to, f"fwd:{p}:{d.seq}", _encode(event), FORWARD)
        out.marks = written_keys(event.user_id, event.anonymous_id)
        if late:
            st.late.setdefault(p, []).append(out)
        else:
            st.now.append(out)
        self.skipped[p].add(d.seq)
        self.stats.forwarded += 1

    def _events_of(self, users: Iterable[str], anons: Iterable[str], upto: int) -> Iterable[Event]:
        """A stitch's read: the event log (every other partition's part of these ids is in
        it: a stitch travels on only once its log is written) and this worker's unlogged
        tail."""
        users, anons = list(users), list(anons)
        with self._lock:
            tail = list(self._tail)
        found = {s.seq: s for s in self.log.events_of(users, anons, upto)}
        u, a = set(users), set(anons)
        for s in tail:
            if s.seq <= upto and (s.event.user_id in u or s.event.anonymous_id in a):
                found[s.seq] = s
        return [found[seq].event for seq in sorted(found)]

    def _add_tail(self, st: _Staged, stored: StoredEvent) -> None:
        st.events.append(stored)
        with self._lock:
            self._tail.append(stored)
            self._tail_ids.add(stored.event.message_id)

    # ------------------------------------------------------------------ publishing, saving
    def _finish(self, st: _Staged) -> None:
        """Publish what goes elsewhere now, save, seal for the log; then a stitch's second
        half. Each part is done once: a failure raises and the next step goes on from it."""
        if not st.published:
            self._publish(st, st.now)
            st.published = True
        if not st.saved:
            started = time.perf_counter()
            self._save_first(st)
            self.stats.save_seconds = time.perf_counter() - started
            saved_at = self._wall()
            self.stats.visible_after = tuple(saved_at - r for r in st.received)
            st.saved = True
            self._send_alerts()
        if st.deleted:  # after the save: a crash before it meets them again, and skips them
            self._erase_messages(st.deleted)
            st.deleted = []
        if not st.sealed:
            positions = dict(st.positions)
            self._seal(_Segment(tuple(st.events), positions, tuple(st.deliveries)))
            st.sealed = True
        if st.late:
            self._second_half(st, st.late, st.positions)
            st.late = {}

    def _second_half(
        self, st: _Staged, late: Mapping[int, list[_Out]], positions: Mapping[int, int]
    ) -> None:
        """A stitch frozen here travels on: once the event log holds everything folded here
        up to it, publish the stitches (then the forwards that followed them), and save
        what was held back until then."""
        self._wait_logged({p: positions[p] for p in late})
        outs = [m for p in sorted(late) for m in late[p] if m.kind == STITCH]
        outs += [m for p in sorted(late) for m in late[p] if m.kind != STITCH]
        published = self._publish(st, outs)
        for p in late:
            for m in late[p]:
                for k in m.relays:
                    relay = self.relays[p].get(k)
                    if relay is not None and relay.hop == 0:
                        relay.hop = published[m.message_id]
                        self._relays_dirty.add(p)
        rows = [r for c in self.caches.values() for r in c.held_rows()]
        for p in late:
            rows.append(StateRow(*_row("visible", p), str(positions[p]).encode()))
            rows.append(StateRow(*_row("pending", p), None))
        rows += self._relay_rows()
        marks = dict(st.marks)
        self.state.save_rows(self.catalog.digest, rows, marks)
        st.marks.clear()
        for cache in self.caches.values():
            cache.release()

    def _publish(self, st: _Staged, outs: list[_Out]) -> dict[str, int]:
        """Publish; the stream sequence of each (by its bus messageId)."""
        if not outs:
            return {}
        published = self.bus.publish(
            [BusMessage(o.partition, o.message_id, o.body, o.kind) for o in outs]
        )
        for o, put in zip(outs, published, strict=True):
            for m in o.marks:
                value = mark_value(put.seq, o.partition)
                if value > st.marks.get(m, 0):
                    st.marks[m] = value
        return {o.message_id: put.seq for o, put in zip(outs, published, strict=True)}

    def _position_rows(self, st: _Staged) -> list[StateRow]:
        rows: list[StateRow] = []
        for p, done in st.positions.items():
            done = max(done, self.saved[p])  # logging again what was saved never lowers it
            rows.append(StateRow(*_row("done", p), str(done).encode()))
            if p in st.visible:  # (logged again only: as visible as before)
                rows.append(StateRow(*_row("visible", p), str(st.visible[p]).encode()))
            skipped = sorted(s for s in self.skipped[p] if s > self.logged[p])
            self.skipped[p] = set(skipped)
            if skipped != self._skipped_saved.get(p):  # (seqs the log passed may linger)
                rows.append(StateRow(*_row("skipped", p), _encode(skipped) if skipped else None))
                self._skipped_saved[p] = skipped
        return rows

    def _relay_rows(self) -> list[StateRow]:
        rows = []
        for p in sorted(self._relays_dirty):
            target = self.books[p].identity.target
            body = [
                (k, key, target(k, key) or "", relay)
                for (k, key), relay in sorted(self.relays[p].items())
            ]
            rows.append(StateRow(*_row("relays", p), _encode(body) if body else None))
        self._relays_dirty.clear()
        return rows

    def _save_first(self, st: _Staged) -> None:
        taken = {p: c.take_rows() for p, c in self.caches.items()}
        rows = [r for t in taken.values() for r in t[0]]
        rows += self._position_rows(st)
        rows += self._relay_rows()
        rows += self._parked_rows()
        alerts = {p: list(a) for p, a in self.alerts.items() if a or self._alerts_row.get(p)}
        rows += [
            StateRow(*_row("alerts", p), encode_alerts(a) if a else None) for p, a in alerts.items()
        ]
        for p, outs in st.late.items():
            held = [
                (r.kind, r.key, r.body)
                for r in self.caches[p].held_rows()
                if (r.kind, r.key) in st.held.get(p, set())
            ]
            rows.append(StateRow(*_row("pending", p), _encode(_PendingRow(outs, held))))
        marks = dict(st.marks)
        st.marks.clear()
        try:
            self.state.save_rows(self.catalog.digest, rows, marks, st.release)
        except BaseException:
            for p, (_, keys, members, linked) in taken.items():
                self.caches[p].keep(keys, members, linked)
            st.marks.update(marks)
            self._relays_dirty.update(self.partitions)
            self._parked_dirty.update(self.partitions)
            self._skipped_saved.clear()
            raise
        for p, done in st.positions.items():
            self.saved[p] = max(self.saved[p], done)
        for p, a in alerts.items():
            self._alerts_saved[p] = len(a)
            self._alerts_row[p] = bool(a)

    def _alert_if_flagged(self, p: int, event: Event) -> None:
        """After a fold: the alert of the event's customer's flagged session, due once this
        step is saved (the embedded engine's ``_alert_if_flagged``, alike)."""
        guard = self.catalog.guard
        if guard is None or not guard.alerts or not event.anonymous_id:
            return
        book = self.books[p]
        profile = book.profiles.get(book.resolve(event.user_id, event.anonymous_id))
        due = due_alert(profile, guard, self.catalog.version, self._alerted)
        if due is not None:
            self.alerts[p].append(due)

    def _send_alerts(self) -> None:
        """Enqueue the saved alerts in the outbox (PostgreSQL): only once saved under the
        partitions' leases, so a worker that lost them sends nothing it folded since, and a
        crash after the save leaves them in ``fold/alerts-<p>`` for whoever folds ``p``
        next; the outbox's key makes a second enqueue of one a no-op. A failure is counted
        and tried again at the next step."""
        if self.outbox is None:
            return
        guard = self.catalog.guard
        destination = guard.alert_destination if guard is not None else ""
        for p, n in self._alerts_saved.items():
            due = self.alerts[p]
            while n and due:
                try:
                    key, body, customer = due[0]
                    self.outbox.enqueue(
                        FRAUD_CHANNEL, destination, key, body, self._wall(), customer or None
                    )
                except NextbestError as exc:
                    self.stats.alert_failures += 1
                    log.error("fraud alerts not enqueued (kept, retried): %s", exc.message)
                    return
                due.pop(0)
                n -= 1
                self._alerts_saved[p] = n
                self.stats.alerts_sent += 1

    def _complete_restart(self) -> None:
        """Stitches a step froze before a restart: published again (the bus dedupes them by
        id, the receiver by messageId) once the log holds what was folded up to them."""
        pending, self._restart_pending = self._restart_pending, {}
        positions = {p: self.done[p] for p in pending}
        st = _Staged()
        try:
            self._second_half(st, {p: row.messages for p, row in pending.items()}, positions)
        except BaseException:
            self._restart_pending = pending
            raise

    def _check_relays(self) -> None:
        """Relays of stitches that travelled on: once the joined customer's home made the
        links (their position saved with them), the ids' events are routed by the links
        again. Asked each step while there are relays (one MGET; a relay lives for the
        time a stitch travels), and again when one is used."""
        waiting = [
            (p, k) for p, mine in self.relays.items() for k, r in mine.items() if not r.joined
        ]
        if waiting:
            bodies = self.state.read_rows([(LINKED_ROW, f"{k[0]}:{k[1]}") for _, k in waiting])
            for (p, k), body in zip(waiting, bodies, strict=True):
                if _joins(body, self.relays[p][k]):
                    self._joined_now(p, k)
        for p, mine in self.relays.items():
            for k, relay in list(mine.items()):
                # gone once joined and this partition is past the stitch in log order (no
                # fold here can come before it any more)
                if relay.joined and 0 < relay.hop <= self.done[p]:
                    self._drop_relay(p, k)
        if self._relays_dirty:
            self.state.save_rows(self.catalog.digest, self._relay_rows())

    def _joined(self, key: tuple[str, str], relay: _Relay) -> bool:
        (body,) = self.state.read_rows([(LINKED_ROW, f"{key[0]}:{key[1]}")])
        return _joins(body, relay)

    def _joined_now(self, p: int, key: tuple[str, str]) -> None:
        """A stitch frozen here was folded where it joins: its ids' events go by the links
        again, as Redis has them (that fold may have found the link unchanged: the view's
        moved link is read again)."""
        self.relays[p][key].joined = True
        self._relays_dirty.add(p)
        self.caches[p].reread([key])

    def _drop_relay(self, p: int, key: tuple[str, str]) -> None:
        if self.relays[p].pop(key, None) is not None:
            self.caches[p].unpin([key])
            self._relays_dirty.add(p)

    def _trim(self) -> None:
        for cache in self.caches.values():
            if len(cache) > cache.capacity:
                cache.trim()
        self.stats.cache_loads = sum(c.loads for c in self.caches.values())

    # ------------------------------------------------------------------ the log writer
    def _while_waiting(self) -> None:
        self._renew()

    def _wait_logged(self, targets: Mapping[int, int]) -> None:
        """Until the event log holds every partition's events up to ``targets``."""

        def behind() -> bool:
            return any(self.logged[p] < t for p, t in targets.items())

        if self._writer is None:
            if behind():
                self._write_unlogged(retry=self.stats.log_error is not None)
            if behind():
                raise StoreError("the event log is behind what a stitch needs logged")
            return
        with self._changed, self._hurry():
            while behind():
                if self._stop.is_set():
                    raise StoreError("stopping before the event log caught up")
                self._changed.wait(0.1)
                self._renew()

    def _write_group(self, group: list[_Segment], *, retry: bool) -> list[_Segment]:
        """The partitions' recorded positions say what a failed try committed."""
        recorded: dict[int, int] = {}
        if retry:
            recorded = self.writer.partition_positions()
            done = []
            for g in group:
                if all(recorded.get(p, -1) >= n for p, n in g.positions.items()):
                    done.append(g)
                else:
                    break
            self._logged(done)
            group = group[len(done) :]
        if group:
            events = sorted((e for g in group for e in g.events), key=lambda s: s.seq)
            if recorded:
                # a partition's events the log holds already (logged by the worker that
                # took its lease after this one lost it): not written twice
                where = {self.base + d.seq: d.partition for g in group for d in g.deliveries}
                events = [
                    e for e in events if e.seq - self.base > recorded.get(where.get(e.seq, -1), -1)
                ]
            positions: dict[int, int] = {}
            for g in group:
                for p, n in g.positions.items():
                    positions[p] = max(positions.get(p, 0), n)
            self.writer.append_partitioned(events, positions)
        return group

    def _logged(self, group: list[_Segment]) -> None:
        """The tail loses what is logged and each partition's logged position moves (before
        the segments are dequeued: a stitch waiting for them sees them logged)."""
        if not group:
            return
        with self._lock:
            del self._tail[: sum(len(g.events) for g in group)]
            self._tail_ids.difference_update(e.event.message_id for g in group for e in g.events)
        with self._changed:
            for g in group:
                for p, pos in g.positions.items():
                    self.logged[p] = max(self.logged.get(p, 0), pos)
        super()._logged(group)

    def _acknowledge(self, group: list[_Segment]) -> None:
        by_partition: dict[int, list[Delivery]] = {}
        for g in group:
            for d in g.deliveries:
                by_partition.setdefault(d.partition, []).append(d)
        for p, ds in by_partition.items():
            self.bus.ack(consumer_name(p), ds)

    # ------------------------------------------------------------------ operating
    def lags(self) -> tuple[int, int, int]:
        """(messages of the owned partitions not processed yet, the consumers'
        unacknowledged messages, processed and not logged yet, or stitches not sent on)."""
        pending = sum(self.bus.pending(consumer_name(p)) for p in self.partitions)
        unlogged = self._waiting + sum(len(r.messages) for r in self._restart_pending.values())
        return max(0, pending - self._waiting), pending, unlogged

    @property
    def position(self) -> int:
        """The lowest partition position folded up to (for a log line)."""
        return min(self.done.values(), default=0)

    def probe(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        checks: list[tuple[str, Callable[[], object]]] = [
            ("event_bus", self.bus.last_seq),
            ("event_log", self.log.last_seq),
            ("profiles", self.state.ping),
        ]
        for name, ask in checks:
            try:
                ask()
            except NextbestError as exc:
                out.append((name, exc.message))
            else:
                out.append((name, None))
        out.append(("fold", self.stats.last_error))
        out.append(("event_log_writer", self.stats.log_error))
        idle = [p for p in self.wanted if p not in self.partitions]
        out.append(
            (
                "partition_leases",
                f"not folding partitions {idle}: their leases are held by another fold "
                "worker (or taken, the log not caught up yet)"
                if idle
                else None,
            )
        )
        if self.models is not None:
            out.append(self.models.probe())
        return out

    def close(self) -> None:
        """Stop the loop (the writer logs what is sealed), then close the log writer's
        connection, the stores and the bus."""
        self.stop()
        if self.models is not None:
            self.models.close()
        with contextlib.suppress(NextbestError):  # a clean stop: the next owner needs no wait
            self.state.drop_leases([lease_name(p) for p in self.partitions], self.owner)
        try:
            if self._close_writer is not None and not self._writer_stuck:
                self._close_writer()
        finally:
            try:
                if self._close is not None:
                    self._close()
            finally:
                self.bus.close()


class _View:
    """What ``erasure.customer_ids`` reads on a partition: its view of the links, and the
    event log."""

    def __init__(self, book: ProfileBook, log: EventLog) -> None:
        self.book = book
        self.event_log = log

    def stitched_ids(self, customer_id: str) -> tuple[set[str], set[str]]:
        identity = self.book.identity
        return identity.ids_of(identity.canonical_user(customer_id))


def _stream_seq(stored: StoredEvent, base: int) -> int | None:
    """The stream sequence a logged event was folded from: the one logged with it, else
    (logged before the log kept them) its seq less the base when past it; None for an event
    a single fold worker logged before then."""
    if stored.stream_seq is not None:
        return stored.stream_seq
    return stored.seq - base if stored.seq > base else None


def _names(out: _Out, ids: set[str]) -> bool:
    """A parked message's event carries one of ``ids``."""
    event = _decode_hop(out.body).event if out.kind == STITCH else _decode_event(out.body)
    return bool({event.user_id, event.anonymous_id, event.previous_id} & ids)


def _joins(body: bytes | None, relay: _Relay) -> bool:
    """``linked/<kind>:<id>`` as saved says the relayed stitch was folded where it joins:
    by its messageId, or by a change made after it in log order."""
    if body is None:
        return False
    made = msgspec.msgpack.decode(body, type=Linked)
    return made.message_id == relay.message_id or 0 < relay.hop < made.seq


def _stitch_keys(event: Event) -> list[tuple[str, str]]:
    """The identity links ``event`` may change."""
    if event.type is EventType.IDENTIFY and event.user_id and event.anonymous_id:
        return [(_ANON, event.anonymous_id)]
    if event.type is EventType.ALIAS and event.user_id and event.previous_id:
        return [(_ALIAS, event.previous_id), (_ANON, event.previous_id)]
    return []


def _stitched_customers(event: Event) -> set[str]:
    """The customers that are one of the stitched ids themselves (dissolved: their profile
    goes), as opposed to a customer a device is taken from (who keeps theirs)."""
    if event.type is EventType.IDENTIFY and event.anonymous_id:
        return {ANON_PREFIX + event.anonymous_id}
    if event.type is EventType.ALIAS and event.previous_id:
        return {event.previous_id, ANON_PREFIX + event.previous_id}
    return set()
