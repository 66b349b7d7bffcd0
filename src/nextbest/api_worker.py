"""The stateless API worker (``nextbest serve --role api``): it checks what the embedded engine
checks, publishes what it accepts to the bus, and decides from the live profiles a fold worker
keeps in Redis. It holds no profile: any number of them serve side by side.

    accept_many(requests) -> each request checked as the engine checks it (``ingestion``: the
                             key's rights, whose device, limits, feedback joined to its
                             decision); the messages that break the vocabulary quarantined
                             (PostgreSQL); every kept event published (JetStream, ``Nats-Msg-Id``
                             = messageId) and the request answered once the bus acknowledged it
    decide(...)           -> one point read of the customer's profile (``live_profiles``), the
                             pure pipeline, the decision journaled and written to the decision
                             log in batches (every ``flush`` tick, 0.1 s)
    flush()               -> write buffered decisions; reload the model copy if a newer one was
                             published

**Export and erasure** (``scaled_erasure``, docs/trust.md): an export reads PostgreSQL and
Redis; an erasure publishes a command to the customer's home partition and answers once the
fold worker recorded its outcome in Redis (``ErasurePending``, 202, after ``erase_wait``
seconds). Each flush tick reads the erasures' feed first: decisions for an erased customer
taken before their erasure are dropped, never written after it.

**Expert call-backs** (``callbacks``): a ``CallbackDesk`` of this worker's own on the callback
queue every worker shares (PostgreSQL, ``shared=True``): its board read again from the store on
the flush tick once it is ``board_seconds`` old (decisions read the board the desk keeps), its
steps published to the bus like any event (the fold worker logs and folds them), its timers
swept by the one worker holding the ``sweep_lease`` (``callback_sweeper``).

**Read your writes, on any worker.** Once the bus acknowledged a group's events, the worker
raises the *write mark* of each event's ids (``u:<userId>``, ``a:<anonymousId>``) to the
event's stream sequence in Redis (``WriteMarks``: one round trip per group, a Lua max, kept
30 s), then answers. A decision on any worker reads its ids' marks in the same MGET as the
profile and the folded position; when a mark is ahead of the position it waits (at most
``read_wait`` seconds, polling) until the fold got there, so the session that sent an event
sees it in its next decision wherever that decision is taken. A mark that cannot be written
(Redis away) does not refuse the events (they are stored): that session may then decide once
without them (``mark_failures``).

**Models.** The fold worker is the one writer of every placement's model; it saves a copy with
its state once a second when it changed (``learner/published``: version, save time, and when
the oldest learning in it was folded). This worker reloads it when its version changes (checked
every flush tick) and keeps its own exploration budgets across reloads (each worker keeps its
explored share under each campaign's bound, so their sum does too). A decision's model is at
most ``model_every`` (fold) + one flush tick + the reload old; ``model_age`` says how old the
copy in use is, ``on_model_loaded`` is told each copy's staleness (from the oldest learning in
it being folded to this worker deciding with it).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import msgspec

from nextbest.advisors.board import EMPTY_BOARD, AdvisorBoard
from nextbest.audit.model import Actor
from nextbest.bus.port import BusMessage, EventBus, partition_of
from nextbest.callbacks import CallbackDesk
from nextbest.catalog.compiled import Catalog
from nextbest.clock import Clock, ClockKind, SystemClock
from nextbest.decide.feedback import is_feedback
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decision_journal import DecisionJournal
from nextbest.engine import QuarantineReport, ReloadReport, folds_alike, probe_each
from nextbest.erasure import CustomerExport, ErasureReport, customer_ids, export_customer
from nextbest.errors import (
    InputError,
    NextbestError,
    NotServed,
    StoreError,
    ValidationError,
    VocabularyError,
)
from nextbest.events.model import Event, EventType
from nextbest.events.parse import (
    DEFAULT_LIMITS,
    Limits,
    Parsed,
    check_vocabulary,
    read_batch,
    read_message,
)
from nextbest.experiments.counters import (
    EXPERIMENT_ROW,
    EXPOSURE_ROW,
    CampaignCounters,
    Exposure,
    decode_counters,
    decode_exposure,
    exposure_key,
)
from nextbest.group_commit import GroupCommit
from nextbest.grouped_audit import GroupedAuditLog
from nextbest.guard.devices import needs_devices
from nextbest.guard.senders import Sender, check_decider, check_decision_time
from nextbest.ingestion import (
    IngestRequest,
    IngestResult,
    Plan,
    check_rights,
    held_messages,
    join_feedback,
    needs_identity,
    result_of,
)
from nextbest.learn.learner import Learner
from nextbest.live_profiles import LiveProfiles, mark_value, written_keys
from nextbest.profile.book import ProfileBook
from nextbest.profile.identity import ANON_PREFIX
from nextbest.profile.model import Profile
from nextbest.routing import destination
from nextbest.rules.context import rule_variables
from nextbest.scaled_erasure import (
    ERASE,
    ErasureCommand,
    ErasureOutcome,
    ErasurePending,
    Tombstones,
    decode_outcome,
    encode,
    report_of,
)
from nextbest.store.port import (
    ErasureLedger,
    HeldMessage,
    Lease,
    StateReads,
    Stores,
    WriteMarks,
)
from nextbest.store.snapshot import ModelVersion

__all__ = ["ApiWorker", "ReloadRefused"]

log = logging.getLogger("nextbest.api")

#: how long a feedback event waits for a decision another worker has not written yet
_UNKNOWN_DECISION_WAIT = 0.25

_encode = msgspec.msgpack.Encoder().encode

T = TypeVar("T")


class ReloadRefused(InputError):
    """A catalog that changes how events fold cannot be swapped into one API worker."""

    code = "reload_refused"


def _new_id() -> str:
    return uuid.uuid4().hex


def _limits(base: Limits, catalog: Catalog) -> Limits:
    p = catalog.spec.profile
    return msgspec.structs.replace(
        base,
        max_traits=p.max_traits_per_message,
        max_trait_key_length=p.max_trait_key_length,
        max_trait_value_bytes=p.max_trait_value_bytes,
    )


class ApiWorker:
    """Built by ``bootstrap.build_api_worker``: the logs' stores (PostgreSQL: decisions and
    quarantine), point reads of the live state and the write marks (Redis), the bus
    (JetStream)."""

    def __init__(
        self,
        catalog: Catalog,
        stores: Stores,
        reads: StateReads,
        marks: WriteMarks,
        bus: EventBus,
        clock: Clock | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        new_id: Callable[[], str] = _new_id,
        decision_flush_every: int = 10_000,
        read_wait: float = 0.25,
        close_reads: Callable[[], None] = lambda: None,
        board_seconds: float = 0.5,
        sweep_lease: Lease | None = None,
        tombstone_key: bytes = b"",
        erase_wait: float = 10.0,
    ) -> None:
        """``board_seconds``: how old the advisors' board (presence, load, rotation, the
        slots booked) may grow before the flush tick reads it again from the store the
        workers share (``CallbackDesk(shared=True)``). ``sweep_lease``: the lease the
        workers' callback sweepers share (PostgreSQL: one sweeps at a time).
        ``tombstone_key``: the erasures' HMAC key (``scaled_erasure.tombstone_key``);
        ``erase_wait``: how long an erasure request waits for the fold worker's outcome."""
        self.catalog = catalog
        self.sweep_lease = sweep_lease
        self.clock: Clock = clock or SystemClock()
        self.quarantine = stores.quarantine
        #: the audit log (PostgreSQL): the reads this worker serves are recorded there,
        #: concurrent ones in one commit
        self.audit = GroupedAuditLog(stores.audit)
        self.decision_log = stores.decisions
        #: the event log (PostgreSQL), read by exports and erasures (the ids of a customer)
        self.event_log = stores.events
        #: tombstones, the erasures' feed and their outcomes (Redis), None when the state
        #: store keeps none
        self.erasures: ErasureLedger | None = reads if isinstance(reads, ErasureLedger) else None
        self._tombstones = Tombstones(tombstone_key)
        self._feed_since = (clock or SystemClock()).now() - 60.0
        self.erase_wait = erase_wait
        self.bus = bus
        self.live = LiveProfiles(reads, catalog, bus.partitions)
        self.marks = marks
        self._close_stores = stores.close
        self._close_reads = close_reads
        self._base_limits = limits
        self.limits = _limits(limits, catalog)
        self._new_id = new_id
        self._journal = DecisionJournal(stores.decisions)
        self._flush_every = decision_flush_every
        self.read_wait = read_wait
        self._lock = threading.Lock()  # the model copy: choose, reload
        self._learner = Learner(catalog)
        self._model: ModelVersion | None = None
        self._closed = False
        #: told nothing here: feedback is judged where it is learned (the fold worker)
        self.on_feedback: Callable[[bool], None] | None = None
        #: read-your-writes: decisions that waited, those whose wait ran out, marks unwritten
        self.read_waits = 0
        self.read_timeouts = 0
        self.mark_failures = 0
        #: told of each read-your-writes wait: its seconds, and whether it ran out (metrics)
        self.on_read_wait: Callable[[float, bool], None] | None = None
        #: told of each model copy loaded: seconds from its oldest learning being folded to
        #: this worker deciding with it (None: the copy does not say)
        self.on_model_loaded: Callable[[float | None], None] | None = None
        self._group_commit: GroupCommit[IngestRequest, IngestResult] = GroupCommit(
            self.accept_many, lambda r: len(r.parsed.events) + len(r.parsed.rejected)
        )
        #: the outbox (PostgreSQL): click-to-call requests, sent by the outbox senders
        self.outbox = stores.outbox
        #: expert call-backs on the callback queue every worker shares; their steps are
        #: published to the bus as this worker's events are (the fold worker logs and folds
        #: them), their board read again from the store every ``board_seconds``
        self.callbacks = CallbackDesk(
            self, stores.callbacks, stores.outbox, refresh_seconds=board_seconds, shared=True
        )
        self.reload_model()

    # ---------------------------------------------------------------- time
    @property
    def clock_kind(self) -> ClockKind:
        return ClockKind.WALL

    def wall_now(self) -> float:
        return self.clock.now()

    def submit(self, request: IngestRequest) -> Future[IngestResult]:
        """Queue ``request`` for the next round of the bus (the callback desk's steps)."""
        return self._group_commit.submit(request)

    def read_profile(self, customer_id: str, read: Callable[[Profile, float], T]) -> T | None:
        """``read`` of the customer's live profile (Redis) as of now; None when there is
        none."""
        profile = self.live.get(customer_id)
        return None if profile is None else read(profile, self.clock.now())

    def erase_customer(self, customer_id: str, actor: Actor) -> ErasureReport:
        """``scaled_erasure``: the ids stitched to the customer found (Redis links, the
        PostgreSQL event log), an erasure command published to the customer's home partition
        (after every event of theirs acknowledged before it), answered once the fold worker
        recorded its outcome. ``ErasurePending`` (202, with the receipt) when that takes
        longer than ``erase_wait`` seconds; NotFound when nothing held any of the ids;
        NotServed when the fold workers cannot erase (one started without its tombstone key
        or stores); with several fold workers the home partition's hands the erasure on to
        every other partition (``partitioned_fold``)."""
        ledger = self._ledger()
        users, anons = customer_ids(self, customer_id)
        receipt = secrets.token_hex(16)
        command = ErasureCommand(
            receipt=receipt,
            customer_id=customer_id,
            user_ids=users,
            anonymous_ids=anons,
            requested_at=self.clock.now(),
            actor=actor,
        )
        key = (
            "a:" + customer_id[len(ANON_PREFIX) :]
            if customer_id.startswith(ANON_PREFIX)
            else "u:" + customer_id
        )
        partition = partition_of(key, self.bus.partitions)
        self.bus.publish([BusMessage(partition, "erase-" + receipt, encode(command), ERASE)])
        deadline = time.monotonic() + self.erase_wait
        while (body := ledger.erasure_outcome(receipt)) is None:
            if time.monotonic() >= deadline:
                raise ErasurePending(receipt)
            time.sleep(0.02)
        outcome = decode_outcome(body)
        self.forget_erased()
        return report_of(customer_id, users, anons, receipt, outcome)

    def erasure_status(self, receipt: str) -> ErasureOutcome | None:
        """The outcome the fold worker recorded for ``receipt`` (None: not yet, or too old)."""
        body = self._ledger().erasure_outcome(receipt)
        return None if body is None else decode_outcome(body)

    def _ledger(self) -> ErasureLedger:
        if self.erasures is None:
            raise NotServed("this API worker's state store keeps no erasures (Redis does)")
        return self.erasures

    def forget_erased(self) -> int:
        """Read the erasures' feed: decisions pending or recent for a customer erased since
        the last read are dropped (a pending one is never written). Each flush tick."""
        if self.erasures is None:
            return 0
        fresh = self.erasures.erased_since(self._feed_since)
        if not fresh:
            return 0
        self._feed_since = max(at for _, at in fresh)
        erased = dict(fresh)

        def before_erasure(d: Decision) -> bool:
            at = erased.get(self._tombstones.of_customer_key(d.customer_id))
            return at is not None and d.timestamp <= at

        return self._journal.forget_where(before_erasure)

    def stitched_ids(self, customer_id: str) -> tuple[set[str], set[str]]:
        """The userIds and anonymousIds Redis links to ``customer_id``'s customer (its
        aliases, its devices; the profile's devices too)."""
        book = self.live.book_for([customer_id], [])
        customer = book.identity.resolve(customer_id, None)
        users, anons = book.identity.ids_of(customer)
        held = book.profiles.get(customer)
        if held is not None:
            anons.update(held.anonymous_ids)
        return users, anons

    def exposures_of(self, keys: Collection[str]) -> dict[str, dict[str, Exposure]]:
        """Campaign -> key -> exposure, from the rows the fold worker saved (Redis)."""
        campaigns = sorted(self.catalog.kpis)
        asked = [(c, k) for c in campaigns for k in keys]
        bodies = self.live.reads.read_rows([(EXPOSURE_ROW, exposure_key(c, k)) for c, k in asked])
        out: dict[str, dict[str, Exposure]] = {}
        for (c, k), body in zip(asked, bodies, strict=True):
            if body is not None:
                out.setdefault(c, {})[k] = decode_exposure(body)
        return out

    def export_customer(self, customer_id: str, actor: Actor) -> CustomerExport:
        """``erasure.export_customer`` on PostgreSQL (events, decisions, callbacks,
        quarantine, outbox, audit) and Redis (the profile, its links, the exposures)."""
        return export_customer(self, customer_id, actor)

    def require_event_time(self, path: str = "$.context.now") -> None:
        raise ValidationError(
            "this server decides on its wall clock: a decision time is taken only by a "
            "server on event time (nextbest serve --clock event)",
            path,
        )

    # ---------------------------------------------------------------- ingest
    def read_batch(self, body: bytes) -> Parsed:
        return read_batch(body, self.wall_now(), self.limits, event_time=False)

    def read_message(self, kind: EventType, body: bytes) -> Parsed:
        return read_message(kind, body, self.wall_now(), self.limits, event_time=False)

    def submit_with(
        self, request: IngestRequest, answer: Callable[[IngestResult | BaseException], None]
    ) -> None:
        self._group_commit.submit_with(request, answer)

    def accept(self, request: IngestRequest) -> IngestResult:
        (result,) = self.accept_many([request])
        if isinstance(result, NextbestError):
            raise result
        return result

    def accept_many(self, requests: Sequence[IngestRequest]) -> list[IngestResult | NextbestError]:
        """Check each request (a refused one changes nothing), quarantine what breaks the
        vocabulary, publish the rest in one round of the bus and answer once it acknowledged
        them. A bus or store failure refuses every request of the group (503: retry; a
        retry's events are stored once, by messageId)."""
        out: list[IngestResult | NextbestError | None] = [None] * len(requests)
        plans: list[Plan] = []
        where: list[int] = []
        for i, (sender, parsed, prefix) in enumerate(requests):
            try:
                plans.append(self._plan(sender, parsed, prefix))
            except NextbestError as exc:
                out[i] = exc
                continue
            where.append(i)
        try:
            results: list[IngestResult | NextbestError] = list(self._publish(plans))
        except NextbestError as exc:
            results = [exc] * len(plans)
        for i, result in zip(where, results, strict=True):
            out[i] = result
        return [r for r in out if r is not None]

    def _plan(self, sender: Sender, parsed: Parsed, prefix: str) -> Plan:
        events = parsed.events
        feedback = [e for e in events if is_feedback(e)]
        book: ProfileBook | None = None
        if needs_identity(parsed) or feedback:
            book = self.live.book_for([e.user_id for e in events], [e.anonymous_id for e in events])
        else:
            sent = [*events, *(r.event for r in parsed.rejected)]
            if needs_devices(sender, sent):
                devices = [e.anonymous_id for e in sent if not e.user_id]
                book = self.live.links_for([sender.bound_user], devices)
        check_rights(sender, parsed, prefix, book or self._empty_book(), self.catalog.spec.profile)
        if not feedback:
            return Plan(parsed, {}, sender.kind.value)
        assert book is not None
        kept, joined = join_feedback(
            parsed, prefix, self._decision_for_feedback, self._same_customer(book)
        )
        return Plan(kept, joined, sender.kind.value)

    def _empty_book(self) -> ProfileBook:
        return ProfileBook(self.catalog.matcher, self.catalog.fold_config)

    def _decision_for_feedback(self, decision_id: str) -> Decision | None:
        """The decision, from this worker's journal or the decision log; one that is in
        neither may have been made by another worker that has not written it yet (it writes
        every 0.1 s): looked for once more after a moment."""
        found = self._journal.get(decision_id)
        if found is None:
            time.sleep(_UNKNOWN_DECISION_WAIT)
            found = self._journal.get(decision_id)
        return found

    def _same_customer(self, book: ProfileBook) -> Callable[[str, Event], bool]:
        def same(customer: str, event: Event) -> bool:
            if customer.startswith(ANON_PREFIX):
                if event.anonymous_id == customer[len(ANON_PREFIX) :]:
                    return True
                missing: tuple[list[str], list[str]] = ([], [customer[len(ANON_PREFIX) :]])
            else:
                if event.user_id == customer:
                    return True
                missing = ([customer], [])
            more = self.live.book_for(
                [event.user_id, *missing[0]], [event.anonymous_id, *missing[1]]
            )
            return more.same_customer(customer, event)

        return same

    def _publish(self, plans: Sequence[Plan]) -> list[IngestResult]:
        """Quarantine, make the joined decisions durable, publish, answer."""
        held = held_messages(plans)
        if held:
            self.quarantine.hold(held)
        if any(plan.joined for plan in plans):
            # the fold worker learns from feedback by reading its decision from the log; with
            # the log away the feedback is still accepted (the decision is written later, and
            # a feedback folded before it is kept but not learned)
            with contextlib.suppress(NextbestError):
                self._journal.flush()
        parts = self.bus.partitions
        kept = [e for plan in plans for e in plan.kept.events]
        # each event to the partition of the customer its ids resolve to now (a stitch: to
        # that of the customer it dissolves first), by the links in Redis (``routing``)
        identity = self.live.identity_for(kept) if kept else None
        messages = [
            BusMessage(destination(identity, e, parts).partition, e.message_id, _encode(e))
            for e in kept
            if identity is not None
        ]
        published = self.bus.publish(messages) if messages else []
        results: list[IngestResult] = []
        at = 0
        written: dict[str, int] = {}
        for plan in plans:
            events = plan.kept.events
            mine = published[at : at + len(events)]
            sent = messages[at : at + len(events)]
            at += len(events)
            for event, p, m in zip(events, mine, sent, strict=True):
                mark = mark_value(p.seq, m.partition)
                for key in written_keys(event.user_id, event.anonymous_id):
                    if mark > written.get(key, 0):
                        written[key] = mark
            results.append(result_of(plan.kept, sum(not p.duplicate for p in mine)))
        self._mark(written)
        return results

    def _mark(self, written: dict[str, int]) -> None:
        """Raise the write marks of what was just published (read-your-writes on every
        worker). The events are stored whatever happens here: a failure is logged, counted
        and does not refuse them."""
        if not written:
            return
        try:
            self.marks.mark_written(written)
        except NextbestError as exc:
            self.mark_failures += 1
            log.warning("write marks not saved (read-your-writes may lag): %s", exc.message)

    # ---------------------------------------------------------------- decide
    def decide(
        self,
        request: DecisionRequest,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        anonymous_only: bool = False,
        now: float | None = None,
    ) -> Decision:
        if not user_id and not anonymous_id:
            raise ValidationError("userId or anonymousId is required", "$.userId")
        if now is not None:
            self.require_event_time()
        profile, position, needed = self.live.read(user_id, anonymous_id, anonymous_only)
        if needed > position:
            profile = self._wait_for(needed, user_id, anonymous_id, anonymous_only, profile)
        board = self._board()
        with self._lock:
            decision = run_pipeline(
                self.catalog,
                profile,
                request,
                self.clock.now(),
                self._new_id(),
                self._learner.choose,
                board=board,
            )
        if self._journal.add(decision) >= self._flush_every:
            self._flush_decisions_or_hold()
        return decision

    def _board(self) -> AdvisorBoard:
        """The advisors' board advisor placements decide on (kept by the desk, read again
        on the flush tick); the store away before it was ever read: nobody free."""
        try:
            return self.callbacks.board()
        except StoreError:
            return EMPTY_BOARD

    def _wait_for(
        self,
        needed: int,
        user_id: str | None,
        anonymous_id: str | None,
        anonymous_only: bool,
        profile: Profile,
    ) -> Profile:
        """Read-your-writes: poll until the folded position reaches ``needed`` (bounded)."""
        self.read_waits += 1
        started = time.monotonic()
        deadline = started + self.read_wait
        pause = 0.001
        caught_up = False
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
            profile, position, _ = self.live.read(user_id, anonymous_id, anonymous_only)
            if position >= needed:
                caught_up = True
                break
        if not caught_up:
            self.read_timeouts += 1
        if self.on_read_wait is not None:
            self.on_read_wait(time.monotonic() - started, not caught_up)
        return profile

    def _flush_decisions_or_hold(self) -> None:
        """Backpressure: a full buffer is written now; if the decision log is down, the
        decisions stay buffered (written when it is back) up to ten times the bound."""
        try:
            self._journal.flush()
        except NextbestError:
            if len(self._journal.pending()) >= 10 * self._flush_every:
                raise

    def decide_as(
        self,
        sender: Sender,
        request: DecisionRequest,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        now: float | None = None,
    ) -> Decision:
        anonymous_only = check_decider(sender, user_id)
        if now is not None:
            check_decision_time(sender)
        return self.decide(
            request,
            user_id=user_id,
            anonymous_id=anonymous_id,
            anonymous_only=anonymous_only,
            now=now,
        )

    def decision(self, decision_id: str) -> Decision | None:
        return self._journal.get(decision_id)

    def flush(self) -> None:
        """Write buffered decisions (every tick), reload the model copy if it changed, and
        read the advisors' board again when it is ``board_seconds`` old."""
        self.reload_model()
        try:
            self.forget_erased()
        except StoreError as exc:  # read again next tick; the decisions wait for it
            log.warning("erasures not read: %s", exc.message)
            return
        self._journal.flush()
        try:
            self.callbacks.keep_fresh()
        except StoreError as exc:  # decisions go on with the board as it was
            log.warning("advisors' board not read again: %s", exc.message)

    def snapshot(self) -> None:
        """An API worker saves no state: its decisions are written."""
        self._journal.flush()

    @property
    def snapshot_due(self) -> bool:
        return False

    # ---------------------------------------------------------------- models
    def reload_model(self) -> bool:
        """Load the published model copy if it changed; True if it did."""
        version, body = self.live.model(self._model)
        if body is None or version is None:
            return False
        learner = Learner.from_state(self.catalog, body)
        with self._lock:
            learner.budgets = self._learner.budgets  # this worker's own explored shares
            self._learner, self._model = learner, version
        if self.on_model_loaded is not None:
            since = version.changed_at
            self.on_model_loaded(None if since is None else max(0.0, self.clock.now() - since))
        return True

    def model_age(self) -> float | None:
        """Seconds since the model copy in use was saved by its writer (None: no copy yet)."""
        model = self._model
        return None if model is None else max(0.0, self.clock.now() - model.saved_at)

    @property
    def learner(self) -> Learner:
        return self._learner

    @property
    def pending_views(self) -> int:
        return self._learner.pending_views

    @property
    def pending_conversions(self) -> int:
        return self._learner.pending_conversions

    @property
    def profile_count(self) -> int:
        return 0  # the live profiles are in Redis

    # ---------------------------------------------------------------- read
    def profile_view(self, customer_id: str) -> dict[str, Any] | None:
        profile = self.live.get(customer_id)
        if profile is None:
            return None
        now = self.clock.now()
        view = rule_variables(profile, self.catalog.topics, now, {})
        return {
            "customer_id": profile.customer_id,
            "as_of": now,
            "profile": msgspec.to_builtins(profile),
            "view": {k: v for k, v in view.items() if k not in ("context", "now")},
        }

    def experiment_counters(self, customers: bool = False) -> dict[str, CampaignCounters]:
        """The experiment counters the fold worker saved: each campaign's counts
        (``experiment/<campaign>`` rows), what results read. The exposed customers have rows
        of their own (``exposure/...``), the fold worker's state: never read here, whatever
        ``customers`` says."""
        names = sorted(self.catalog.kpis)
        bodies = self.live.reads.read_rows([(EXPERIMENT_ROW, c) for c in names])
        return {c: decode_counters(b) for c, b in zip(names, bodies, strict=True) if b}

    # ---------------------------------------------------------------- quarantine
    def quarantined(self, after: int = 0, limit: int | None = None) -> list[HeldMessage]:
        return self.quarantine.held(after, limit)

    def replay_quarantine(self, batch: int = 1_000) -> QuarantineReport:
        """As ``Engine.replay_quarantine``: the held messages the vocabulary now accepts are
        published (then released); the others stay held with today's reason."""
        replayed = duplicates = 0
        still: list[HeldMessage] = []
        after = 0
        while True:
            held = self.quarantine.held(after, batch)
            if not held:
                break
            after = held[-1].id
            ready: list[HeldMessage] = []
            for m in held:
                problem = _vocabulary_problem(m)
                if problem is None:
                    ready.append(m)
                else:
                    still.append(m._replace(code=problem.code, reason=problem.message))
            if not ready:
                continue
            parsed = Parsed([m.event for m in ready], list(range(len(ready))), [])
            book = self.live.book_for(
                [m.event.user_id for m in ready], [m.event.anonymous_id for m in ready]
            )
            kept, joined = join_feedback(
                parsed, "", self._decision_for_feedback, self._same_customer(book)
            )
            (result,) = self._publish([Plan(Parsed(kept.events, kept.indexes, []), joined, "")])
            self.quarantine.release([ready[i].id for i in kept.indexes])
            replayed += result.accepted
            duplicates += result.duplicates
            still.extend(
                ready[r.index]._replace(code=r.error.code, reason=r.error.message)
                for r in kept.rejected
            )
        return QuarantineReport(replayed, duplicates, still)

    # ---------------------------------------------------------------- catalog
    def reload(self, catalog: Catalog) -> ReloadReport:
        """Swap in a catalog whose events fold as today's (offers, campaigns, rules, scoring:
        what decisions read); one that changes the fold (topics, profile settings) is rolled
        out by restarting the fold worker, then the API workers, with it."""
        old = self.catalog
        if catalog.digest == old.digest and catalog.spec == old.spec:
            return ReloadReport(old.version, catalog.version, changed=False)
        if not folds_alike(old, catalog):
            raise ReloadRefused(
                "this catalog changes how events fold (topics or profile settings): restart "
                "the fold worker with it, then the API workers"
            )
        with self._lock:
            learner = Learner.from_state(catalog, self._learner.to_state())
            self.catalog, self._learner = catalog, learner
            self.live.catalog = catalog
            self.limits = _limits(self._base_limits, catalog)
        return ReloadReport(old.version, catalog.version, True)

    # ---------------------------------------------------------------- operate
    def probe(self) -> list[tuple[str, str | None]]:
        checks: list[tuple[str, Callable[[], object]]] = [
            ("event_bus", self.bus.last_seq),
            ("profiles", self.live.reads.ping),
            ("decision_log", self.decision_log.decision_log_position),
            ("quarantine", lambda: self.quarantine.held(0, 1)),
            ("audit_log", self.audit.head),
        ]
        return probe_each(checks)

    @property
    def closed(self) -> bool:
        return self._closed

    def pending_decisions(self) -> list[Decision]:
        return self._journal.pending()

    def close(self) -> None:
        """Answer queued requests, write buffered decisions, close the stores and the bus."""
        self.callbacks.close()  # its writes queue their events in the group commit
        self._group_commit.close()
        if self._closed:
            return
        self._closed = True
        try:
            self._journal.flush()
        finally:
            try:
                self.bus.close()
            finally:
                try:
                    self._close_reads()
                finally:
                    self.audit.close()
                    self._close_stores()


def _vocabulary_problem(message: HeldMessage) -> VocabularyError | None:
    event = message.event
    if event.type is not EventType.TRACK or not event.name:
        return None
    try:
        check_vocabulary(event.name, event.properties, "$")
    except VocabularyError as error:
        return error
    return None
