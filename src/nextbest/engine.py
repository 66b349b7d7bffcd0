"""The engine: a small facade over the core's components, built by ``bootstrap``.

    accept(...)     -> a request's events appended durably and folded, the messages that
                       break the vocabulary quarantined (``accept_many``: many requests in
                       one durable commit, as ``group_commit`` hands them over)
    ingest(events)  -> the same, all or nothing (programmatic callers)
    decide(...)     -> one profile read, the pure pipeline, the decision journaled
    profile(id)     -> the live profile
    replay()        -> every profile rebuilt from the log alone
    reload(catalog) -> a new catalog swapped in atomically, learned state kept
    close()         -> flush decisions, write a snapshot
    erase_customer(id), export_customer(id)
                    -> a customer's rights to their data (``nextbest.erasure``; the live
                       state's part: ``forget``, in ``exclusive(saving=True)``)
    callbacks       -> expert call-backs (``callbacks.CallbackDesk``): requests, routing,
                       advisors, timers; its board is what advisor placements decide on
    audit           -> the audit log (``store.port.AuditLog``): a consent changed by a live
                       event is recorded as it is folded (``AuditAction.CONSENT_CHANGED``:
                       before, after, the message), appended after the fold; an append that
                       fails is kept and retried (every ``flush``, which raises it, so the
                       server's readiness says so)

Live profiles and identities are a ``ProfileBook`` (pure), learned models a ``Learner``
(pure), buffered and recent decisions a ``DecisionJournal``, the snapshot format is
``store.snapshot``. The engine holds the locks: ingest appends under the write lock and folds
under the state lock, so the log order is the fold order and a new event is visible to the
very next decision.

**Time.** ``now`` is the clock's: the wall clock (``SystemClock``), or on event time
(``EventClock``, ``--clock event``) the watermark, the latest accepted event timestamp, moved
under the state lock as events are folded (a decision sees the time of what it sees). On event
time each event is received at its own time (the learner's click windows follow the events),
and a caller with a server key may say when a decision is taken (``decide(now=...)``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import msgspec

from nextbest.audit.model import Actor, AuditAction, AuditRecord, actor_of, consent_change
from nextbest.callbacks import CallbackDesk
from nextbest.catalog.compiled import Catalog
from nextbest.clock import Clock, ClockKind, EventClock, SystemClock
from nextbest.decide.feedback import FEEDBACK_EVENTS
from nextbest.decide.model import Chooser, Decision, DecisionRequest
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decision_journal import DecisionJournal
from nextbest.erasure import CustomerExport, ErasureReport, erase_customer, export_customer
from nextbest.errors import NextbestError, StateLost, ValidationError, VocabularyError
from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.events.parse import (
    DEFAULT_LIMITS,
    Limits,
    Parsed,
    check_vocabulary,
    parse_batch,
    parse_message,
    read_batch,
    read_message,
)
from nextbest.experiments.counters import CampaignCounters, ExperimentCounters, Exposure
from nextbest.group_commit import GroupCommit
from nextbest.grouped_audit import GroupedAuditLog
from nextbest.guard.alert import FRAUD_CHANNEL, Alerted, DueAlert, alert_key, due_alert
from nextbest.guard.devices import check_devices, needs_devices
from nextbest.guard.senders import (
    Sender,
    check_decider,
    check_decision_time,
    check_senders,
)
from nextbest.heap import settle_for_serving
from nextbest.ingestion import (
    IngestRequest,
    IngestResult,
    Plan,
    Rejected,
    check_rights,
    held_messages,
    join_feedback,
    needs_identity,
    new_plan,
    result_of,
)
from nextbest.learn.learner import Learner, PlacementModel
from nextbest.learn.trust import trusted_feedback
from nextbest.profile.book import PROFILE_ROW, ProfileBook
from nextbest.profile.consent import consent_state
from nextbest.profile.identity import ANON_PREFIX, LinkKind
from nextbest.profile.model import Profile
from nextbest.rules.context import rule_variables
from nextbest.scaled_erasure import ErasureOutcome, outcome_of
from nextbest.store.port import EventLog, HeldMessage, StateRow, Stores
from nextbest.store.snapshot import (
    experiment_rows,
    learner_rows,
    link_row,
    profile_row,
    read_snapshot,
)

__all__ = [
    "IN_PROCESS",
    "Engine",
    "Forgotten",
    "IngestRequest",
    "IngestResult",
    "QuarantineReport",
    "Rejected",
    "ReloadReport",
    "ReplayReport",
    "folds_alike",
]


T = TypeVar("T")

log = logging.getLogger("nextbest.engine")

#: who acted when a program drives the engine in process (no key)
IN_PROCESS = Actor(kind="engine")


#: looked up once (each ``EventType.X`` read is a metaclass hook call in Python 3.11)
_IDENTIFY, _ALIAS, _TRACK = EventType.IDENTIFY, EventType.ALIAS, EventType.TRACK
_CONSENT_UPDATED = str(EventName.CONSENT_UPDATED)


def _may_change_consent(event: Event) -> bool:
    """``event`` may change a profile's consent when folded: an identify (its traits, or the
    device it links), an alias (profiles merged), a ``Consent Updated``."""
    kind = event.type
    return (
        kind is _IDENTIFY or kind is _ALIAS or (kind is _TRACK and event.name == _CONSENT_UPDATED)
    )


#: erasure outcomes kept for ``erasure_status`` (a few hundred bytes each)
_ERASURES_KEPT = 1_000


class QuarantineReport(msgspec.Struct, frozen=True):
    """What a quarantine replay let in, and what it still holds (and why)."""

    replayed: int
    duplicates: int
    still_held: list[HeldMessage]


class ReplayReport(msgspec.Struct, frozen=True):
    events: int
    profiles: int
    identical: bool
    differing: list[str]
    #: the learned models (and waiting views, budgets) rebuilt from the logs are identical
    models_identical: bool = True
    #: the experiment counters rebuilt from the logs are identical
    experiments_identical: bool = True


class Forgotten(msgspec.Struct, frozen=True, kw_only=True):
    """What ``Engine.forget`` dropped from the live state."""

    #: the profile keys held (the customer's, and a device's not yet folded into it)
    profiles: list[str]
    exposures: int
    recent_decisions: int
    #: views and clicks the learner waited on
    waiting: int


class ReloadReport(msgspec.Struct, frozen=True):
    """What ``Engine.reload`` did."""

    #: the catalog version served before, and now
    previous: str
    version: str
    #: the catalog differs from the one served (same digest: nothing was swapped)
    changed: bool
    #: profiles were refolded from the event log (topics, profile settings or offers changed)
    refolded: bool = False
    #: events refolded
    events: int = 0


def folds_alike(old: Catalog, new: Catalog) -> bool:
    """Events fold into the same profiles under both catalogs: same topics (patterns,
    categories, events, products, half-lives) and the same fold settings (weights, session
    timeout, the offers whose feedback is kept)."""
    return old.spec.topics == new.spec.topics and old.fold_config == new.fold_config


def _record_control(counters: ExperimentCounters, decision: Decision) -> None:
    """The control exposures of a decision, counted for the customer's experiment id."""
    if decision.control:
        counters.record_decision(decision, decision.experiment_key or decision.customer_id)


def _new_id() -> str:
    return uuid.uuid4().hex


def _limits(base: Limits, catalog: Catalog) -> Limits:
    """``base`` with the catalog's bounds on what one message may set (traits)."""
    p = catalog.spec.profile
    return msgspec.structs.replace(
        base,
        max_traits=p.max_traits_per_message,
        max_trait_key_length=p.max_trait_key_length,
        max_trait_value_bytes=p.max_trait_value_bytes,
    )


def probe_each(checks: Sequence[tuple[str, Callable[[], object]]]) -> list[tuple[str, str | None]]:
    """Ask each backend its cheap question: (name, None) where it answered, (name, why) where
    it raised a NextbestError (readiness probes of every role)."""
    out: list[tuple[str, str | None]] = []
    for name, ask in checks:
        try:
            ask()
        except NextbestError as exc:
            out.append((name, exc.message))
        else:
            out.append((name, None))
    return out


class Engine:
    def __init__(
        self,
        catalog: Catalog,
        stores: Stores,
        clock: Clock | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        new_id: Callable[[], str] = _new_id,
        decision_flush_every: int = 10_000,
        snapshot_every: int = 50_000,
        freeze_gc: bool = False,
    ) -> None:
        """Built by ``nextbest.bootstrap.build_engine``, which chooses the stores.

        ``freeze_gc``: after restoring, move everything loaded out of the cyclic
        collector's reach (``gc.freeze``) and collect young objects less often
        (``heap.settle_for_serving``), as a long-running server wants; process-wide."""
        self.catalog = catalog
        self.event_log = stores.events
        self.decision_log = stores.decisions
        self.state_store = stores.state
        self.quarantine = stores.quarantine
        self.outbox = stores.outbox
        #: appends of concurrent callers (audited reads) share one commit
        self.audit = GroupedAuditLog(stores.audit)
        #: consent changes folded, still to append to the audit log (``_flush_audit``)
        self._audit_pending: list[AuditRecord] = []
        #: one audit append at a time, in fold order. Lock order: ``_lock`` (a replay
        #: flushes under it), then ``_audit_lock``, then ``_audit_pending_lock``; none is
        #: ever taken while a later one is held (a flush never waits for ``_lock``)
        self._audit_lock = threading.Lock()
        #: guards ``_audit_pending`` alone, held for a list operation and nothing else
        self._audit_pending_lock = threading.Lock()
        self._close_stores = stores.close
        self.clock: Clock = clock or SystemClock()
        #: the watermark, when the engine runs on event time
        self._event_clock = self.clock if isinstance(self.clock, EventClock) else None
        self._base_limits = limits
        self.limits = _limits(limits, catalog)
        self._new_id = new_id
        self._lock = threading.RLock()  # live state: fold and decide
        self._write_lock = threading.Lock()  # ingest: log order == fold order
        self._save_lock = threading.Lock()  # one state save at a time, cut and write in order
        self._reload_lock = threading.Lock()  # one catalog reload at a time
        self._journal = DecisionJournal(stores.decisions)
        self._book, self._learner = self._fresh()
        self._counters = ExperimentCounters(catalog)
        #: the decision log position up to which control exposures were counted
        self._control_seen = 0
        self._flush_every = decision_flush_every
        self._snapshot_every = snapshot_every
        self._since_snapshot = 0
        self._closed = False
        self._freeze_gc = freeze_gc
        self._fold_position = 0
        #: ``fold_accepted`` appended events it did not finish folding
        self._unfolded = False
        #: told of every feedback event joined to its decision as it is accepted (not on
        #: restores or replays): True if it was given to the learner, False if the trust
        #: rules (``learn.trust``) kept it from the shared model. A face's counter (metrics)
        self.on_feedback: Callable[[bool], None] | None = None
        #: fraud alerts of sessions the guard flagged while folding, to enqueue in the outbox
        #: once the state lock is released (a fold worker's: after its save, ``send_alerts``)
        self._alerts_due: list[DueAlert] = []
        #: the outcomes of the latest erasures, by receipt (``erasure_status``)
        self._erasures: OrderedDict[str, ErasureOutcome] = OrderedDict()
        #: the keys of the alerts made since the start (``_alert_if_flagged``)
        self._alerted = Alerted()
        self._group_commit: GroupCommit[IngestRequest, IngestResult] = GroupCommit(
            self.accept_many, lambda r: len(r.parsed.events) + len(r.parsed.rejected)
        )
        self._restore()
        #: expert call-backs over the callback queue, the event log and the outbox
        self.callbacks = CallbackDesk(self, stores.callbacks, stores.outbox)

    def _fresh(self) -> tuple[ProfileBook, Learner]:
        return ProfileBook(self.catalog.matcher, self.catalog.fold_config), Learner(self.catalog)

    # ---------------------------------------------------------------- time
    @property
    def clock_kind(self) -> ClockKind:
        """What ``now`` is: the wall clock, or the events' time (a watermark)."""
        return ClockKind.EVENT if self._event_clock is not None else ClockKind.WALL

    def wall_now(self) -> float:
        """Real time, on either clock: for what must follow it whatever the events say
        (how far in the future a timestamp may be, when a customer token expires)."""
        events = self._event_clock
        return events.wall.now() if events is not None else self.clock.now()

    def require_event_time(self, path: str = "$.context.now") -> None:
        """A ValidationError at ``path`` unless the engine runs on event time: only there may
        a caller say when a decision is taken."""
        if self._event_clock is None:
            raise ValidationError(
                "this server decides on its wall clock: a decision time is taken only by a "
                "server on event time (nextbest serve --clock event)",
                path,
            )

    # ---------------------------------------------------------------- ingest
    def read_batch(self, body: bytes) -> Parsed:
        """Read a ``/v1/batch`` body: ValidationError (field path) for a body refused whole,
        otherwise its events and the messages that break the vocabulary."""
        event_time = self._event_clock is not None
        return read_batch(body, self.wall_now(), self.limits, event_time=event_time)

    def read_message(self, kind: EventType, body: bytes) -> Parsed:
        event_time = self._event_clock is not None
        return read_message(kind, body, self.wall_now(), self.limits, event_time=event_time)

    def parse_batch(self, body: bytes) -> list[Event]:
        """``read_batch``, all or nothing (a message that breaks the vocabulary raises)."""
        event_time = self._event_clock is not None
        return parse_batch(body, self.wall_now(), self.limits, event_time=event_time)

    def parse_message(self, kind: EventType, body: bytes) -> Event:
        event_time = self._event_clock is not None
        return parse_message(kind, body, self.wall_now(), self.limits, event_time=event_time)

    def ingest_batch(self, body: bytes) -> IngestResult:
        """Parse and ingest a ``/v1/batch`` body; all messages are stored or none."""
        return self.ingest(self.parse_batch(body))

    def ingest(self, events: Sequence[Event], prefix: str = "$.batch") -> IngestResult:
        """Check, append durably, then fold, all or nothing: feedback that answers no
        decision of its customer raises (VocabularyError) and nothing is stored. Duplicate
        messageIds are acknowledged and skipped. ``prefix`` names where the events sit in
        the request body for error paths (``""``: a single message)."""
        parsed = Parsed(list(events), list(range(len(events))), [])
        with self._write_lock:
            kept, joined = self._join_feedback(parsed, prefix)
            if kept.rejected:
                raise kept.rejected[0].error
            return self._commit([Plan(kept, joined, "")])[0]

    def ingest_as(
        self, sender: Sender, events: Sequence[Event], prefix: str = "$.batch"
    ) -> IngestResult:
        """``ingest`` on behalf of a caller: Forbidden, and nothing stored, unless the
        sender's key may send every one of the events (``guard.senders``)."""
        check_senders(sender, events, prefix)
        if needs_devices(sender, events):
            with self._lock:
                check_devices(sender, events, range(len(events)), prefix, self._book.identity)
        return self.ingest(events, prefix)

    def submit(self, request: IngestRequest) -> Future[IngestResult]:
        """``accept`` in the next group commit: concurrent callers (the HTTP face's
        requests) share one durable transaction. The future holds the result or the error."""
        return self._group_commit.submit(request)

    def submit_with(
        self, request: IngestRequest, answer: Callable[[IngestResult | BaseException], None]
    ) -> None:
        """``submit``, answered by calling ``answer`` (from the committing thread) with the
        result or the error: for an event loop that hands answers back in batches."""
        self._group_commit.submit_with(request, answer)

    def accept(self, request: IngestRequest) -> IngestResult:
        """One request as ``accept_many`` takes it; its error raised."""
        (result,) = self.accept_many([request])
        if isinstance(result, NextbestError):
            raise result
        return result

    def accept_many(self, requests: Sequence[IngestRequest]) -> list[IngestResult | NextbestError]:
        """Many requests in one durable commit (group commit): each request's sender is
        checked (Forbidden for the whole request, nothing of it stored), feedback that
        answers no decision of its customer is set apart with the messages that break the
        vocabulary; then the quarantined messages and every request's events are written
        (one transaction each), and folded in request order. A request's result, or the
        error that refused it; a store failure refuses every request of the group.

        Quarantined first: a crash between the two writes leaves the events unwritten and
        unacknowledged (the client retries; the quarantine dedupes by messageId)."""
        out: list[IngestResult | NextbestError | None] = [None] * len(requests)
        plans: list[Plan] = []
        senders: list[Sender] = []
        where: list[int] = []
        with self._write_lock:
            for i, (sender, parsed, prefix) in enumerate(requests):
                try:
                    self._check_rights(sender, parsed, prefix)
                    kept, joined = self._join_feedback(parsed, prefix)
                except NextbestError as exc:
                    out[i] = exc
                    continue
                where.append(i)
                plans.append(new_plan(kept, joined, str(sender.kind)))  # the StrEnum's text
                senders.append(sender)
            try:
                results: list[IngestResult | NextbestError] = list(self._commit(plans, senders))
            except NextbestError as exc:
                results = [exc] * len(plans)
            for i, result in zip(where, results, strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    def fold_accepted(
        self, events: Sequence[Event], *, send_alerts: bool = True
    ) -> list[int | None]:
        """Append and fold events another process checked and acknowledged (a fold worker's
        bus deliveries, ``fold_worker``): nothing refuses them here. Each event's log seq, None
        for a messageId logged already (a redelivery, a retry after the duplicate window):
        such an event is never folded twice. On a fold worker the event log is a
        ``WriteBehindLog``: the append hands out seqs, the worker logs them after its save.
        Feedback joins its decision from the decision log (the API worker that made it
        flushed it before publishing the feedback). ``send_alerts=False``: the guard's alerts
        stay due (``alerts_due``) for the caller to save with the state, then send
        (``send_alerts``): a fold worker enqueues them only once its save passed."""
        if not events:
            return []
        with self._write_lock:
            self._fold_uncertain_tail()
            self._unfolded = True
            seqs = self.event_log.append(events)
            with self._lock:
                self._count_logged_control()
                for event, seq in zip(events, seqs, strict=True):
                    if seq is not None:
                        book, learner, counters = self._book, self._learner, self._counters
                        actor = Actor(kind="fold", key_id=event.key_id)
                        self._apply(
                            book, learner, seq, event, live=True, counters=counters, actor=actor
                        )
                        self._since_snapshot += 1
            self._unfolded = False
            if send_alerts:
                self.send_alerts()
        self._flush_audit()
        return seqs

    def _count_logged_control(self) -> None:
        """Under the state lock: the control exposures of the decisions other processes (API
        workers) logged since the last look, counted before the events folded next."""
        position = self.decision_log.decision_log_position()
        if position != self._control_seen:
            for decision in self.decision_log.decisions_after(self._control_seen):
                _record_control(self._counters, decision)
            self._control_seen = position

    def _fold_uncertain_tail(self) -> None:
        """Under the write lock. The last append or fold failed: in its fold (a stitch's
        read), or in its append, which may have committed all the same (the answer lost
        with the connection). What the log holds past the book is folded now; a retry of
        those events then finds them logged (a duplicate), never folded twice."""
        if self._unfolded:
            with self._lock:
                self._since_snapshot += self._fold_log(
                    self._book, self._learner, self._book.seq, self._counters
                )
            self._unfolded = False

    def state_lost(self) -> None:
        """The saved state vanished (Redis flushed or replaced): the next ``snapshot``
        rewrites every row from the live state, models included."""
        with self._lock:
            self._book.replace = True
            self._learner.dirty = True
            self._counters.replace = True

    def use_event_log(self, log: EventLog) -> None:
        """From now on ``log`` is the event log (a fold worker's ``WriteBehindLog`` over the
        one it was restored from)."""
        with self._write_lock, self._lock:
            self.event_log = log

    @property
    def folded_seq(self) -> int:
        """The event log seq the live profiles are folded up to."""
        return self._book.seq

    @property
    def models_changed(self) -> bool:
        """The learned models changed since they were last saved."""
        return self._learner.dirty

    @property
    def fold_position(self) -> int:
        """The bus stream sequence the restored state was folded up to (``fold/position``
        of a fold worker's saved state; 0 when none)."""
        return self._fold_position

    def _check_rights(self, sender: Sender, parsed: Parsed, prefix: str) -> None:
        """Forbidden or LimitExceeded for the whole request (``ingestion.check_rights``,
        against the live identity map and profiles). Under the write lock: nothing folds
        meanwhile, so the device links read without the state lock stay as read."""
        if not needs_identity(parsed):
            check_rights(
                sender, parsed, prefix, self._book, self.catalog.spec.profile, identity=False
            )
            return
        with self._lock:
            check_rights(
                sender, parsed, prefix, self._book, self.catalog.spec.profile, identity=True
            )

    def _commit(self, plans: Sequence[Plan], senders: Sequence[Sender] = ()) -> list[IngestResult]:
        """Write (quarantine, then events) and fold: called under the write lock. ``senders``:
        who sent each plan (the audit log's actor of a consent change, made for such an
        event only; default ``IN_PROCESS``)."""
        held = held_messages(plans)
        if held:
            self.quarantine.hold(held)
        events = [e for parsed, _, _ in plans for e in parsed.events]
        if not events:
            seqs: list[int | None] = []
        else:
            self._fold_uncertain_tail()
            self._unfolded = True  # until folded: an append may commit and still raise
            seqs = self.event_log.append(events)
        results: list[IngestResult] = []
        latest = -math.inf
        at = 0
        with self._lock:
            for k, (parsed, joined, _) in enumerate(plans):
                accepted = 0
                for n, event in enumerate(parsed.events):
                    seq = seqs[at + n]
                    if seq is not None:
                        actor = None  # who changed the consent, if the event may
                        if _may_change_consent(event):
                            actor = actor_of(senders[k]) if k < len(senders) else IN_PROCESS
                        self._apply(
                            self._book,
                            self._learner,
                            seq,
                            event,
                            joined.get(n),
                            live=True,
                            counters=self._counters,
                            actor=actor,
                        )
                        accepted += 1
                        if event.timestamp > latest:  # max() costs more, every event
                            latest = event.timestamp
                at += len(parsed.events)
                self._since_snapshot += accepted
                results.append(result_of(parsed, accepted))
            self._unfolded = False
            if self._event_clock is not None and latest > -math.inf:
                # the latest accepted timestamp; an older one never moves it back
                self._event_clock.observe(latest)
        self.send_alerts()
        self._flush_audit()
        return results

    def _join_feedback(self, parsed: Parsed, prefix: str) -> tuple[Parsed, dict[int, Decision]]:
        """``ingestion.join_feedback`` against this engine's decisions and identity map."""
        return join_feedback(parsed, prefix, self.decision, self._same_customer)

    def _same_customer(self, customer: str, event: Event) -> bool:
        """``event`` comes from ``customer`` (by the live identity map)."""
        with self._lock:
            return self._book.same_customer(customer, event)

    # ---------------------------------------------------------------- quarantine
    def quarantined(self, after: int = 0, limit: int | None = None) -> list[HeldMessage]:
        """Messages held in quarantine, oldest first."""
        return self.quarantine.held(after, limit)

    def replay_quarantine(self, batch: int = 1_000) -> QuarantineReport:
        """Let in every held message that the vocabulary and the decision log now accept
        (after a fix), in the order received; the others stay held, with today's reason."""
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
                problem = self._vocabulary_problem(m)
                if problem is None:
                    ready.append(m)
                else:
                    still.append(m._replace(code=problem.code, reason=problem.message))
            if ready:
                parsed = Parsed([m.event for m in ready], list(range(len(ready))), [])
                with self._write_lock:
                    kept, joined = self._join_feedback(parsed, "")
                    (result,) = self._commit(
                        [Plan(Parsed(kept.events, kept.indexes, []), joined, "")]
                    )
                    self.quarantine.release([ready[i].id for i in kept.indexes])
                replayed += result.accepted
                duplicates += result.duplicates
                still.extend(
                    ready[r.index]._replace(code=r.error.code, reason=r.error.message)
                    for r in kept.rejected
                )
        return QuarantineReport(replayed, duplicates, still)

    @staticmethod
    def _vocabulary_problem(message: HeldMessage) -> VocabularyError | None:
        event = message.event
        if event.type is not EventType.TRACK or not event.name:
            return None
        try:
            check_vocabulary(event.name, event.properties, "$")
        except VocabularyError as error:
            return error
        return None

    def probe(self) -> list[tuple[str, str | None]]:
        """Ask each store port one cheap question (the event log's and the decision log's
        positions, the oldest quarantined message): each port's name and None, or why it
        did not answer. The state port has no cheap question: a failed save says it (the
        server's background saves)."""
        checks: list[tuple[str, Callable[[], object]]] = [
            ("event_log", self.event_log.last_seq),
            ("decision_log", self.decision_log.decision_log_position),
            ("quarantine", lambda: self.quarantine.held(0, 1)),
            ("audit_log", self.audit.head),
        ]
        return probe_each(checks)

    @property
    def closed(self) -> bool:
        """``close`` or ``release`` was called: the stores are closed."""
        return self._closed

    @property
    def snapshot_due(self) -> bool:
        """``snapshot_every`` events folded since the last save: time to save (the server's
        background task asks, so no ingest request waits for a save)."""
        return self._since_snapshot >= self._snapshot_every

    def _events_of(self, users: Iterable[str], anons: Iterable[str], upto: int) -> Iterable[Event]:
        return (s.event for s in self.event_log.events_of(list(users), list(anons), upto))

    def _apply(
        self,
        book: ProfileBook,
        learner: Learner,
        seq: int,
        event: Event,
        decision: Decision | None = None,
        *,
        live: bool = False,
        counters: ExperimentCounters | None = None,
        actor: Actor | None = None,
    ) -> None:
        """Fold ``event`` (at ``seq``) into ``book`` and ``learner``; ``live``: accepted now
        (``on_feedback`` is told how its feedback was judged), not restored or replayed;
        then a consent it changed is recorded for the audit log, as done by ``actor``."""
        if event.name in FEEDBACK_EVENTS:  # ``is_feedback``, inline: asked of every event
            if decision is None:
                decision = self.decision(str(event.properties.get("decision_id")))
            # every feedback event counts for its key and origin, learned or not
            volume = learner.volume.count(event)
            if event.key_id is not None or event.origin is not None:
                learner.dirty = True
            if decision is not None:
                sender = book.profiles.get(book.resolve(event.user_id, event.anonymous_id))
                trusted = trusted_feedback(sender, event, decision, volume)
                if not trusted:
                    decision = None  # stored and folded, not learned (``learn.trust``)
                if live and self.on_feedback is not None:
                    self.on_feedback(trusted)
        learner.observe(event, decision)
        consent: dict[str, bool] | None = None
        if live and actor is not None and _may_change_consent(event):
            held = book.profiles.get(book.resolve(event.user_id, event.anonymous_id))
            consent = consent_state(held.consent, held.grants) if held is not None else {}
        book.apply(seq, event, self._events_of)
        if consent is not None and actor is not None:
            self._note_consent(book, event, consent, actor)
        guard = self.catalog.guard
        if live and guard is not None and guard.alerts and event.anonymous_id:
            self._alert_if_flagged(book, event)
        if counters is not None and counters.wants(event):
            profile = book.profiles.get(book.resolve(event.user_id, event.anonymous_id))
            if profile is not None:
                counters.observe(event, profile.experiment_key, decision, profile)
        if learner.awaits(event) and (event.user_id or event.anonymous_id):
            customer = book.resolve(event.user_id, event.anonymous_id)
            learner.observe_outcome(event, customer, book.same_customer)

    def _note_consent(
        self, book: ProfileBook, event: Event, before: dict[str, bool], actor: Actor
    ) -> None:
        """Under the state lock: the consent change ``event`` made, if any, kept for the
        audit log."""
        customer = book.resolve(event.user_id, event.anonymous_id)
        profile = book.profiles.get(customer)
        after = consent_state(profile.consent, profile.grants) if profile is not None else {}
        change = consent_change(before, after)
        if change is None:
            return
        grants = profile.grants if profile is not None else {}
        # each choice changed, with its legal basis, time and origin
        changed = {
            key: msgspec.to_builtins(grants[key])
            for key in sorted(after)
            if key in grants and before.get(key) != after[key]
        }
        record = AuditRecord(
            time=self.wall_now(),
            actor=actor,
            action=AuditAction.CONSENT_CHANGED,
            subject=customer,
            details={
                **change,
                "grants": changed,
                "message_id": event.message_id,
                "event": event.name or event.type.value,
                "event_time": event.timestamp,
            },
        )
        with self._audit_pending_lock:
            self._audit_pending.append(record)

    def _flush_audit(self, *, raise_errors: bool = False) -> None:
        """Append the audit records kept, in the order they were made. A failure keeps them
        (retried next time) and is logged; raised with ``raise_errors``."""
        with self._audit_lock:
            with self._audit_pending_lock:
                records, self._audit_pending = self._audit_pending, []
            if not records:
                return
            try:
                self.audit.append(records)
            except NextbestError as exc:
                with self._audit_pending_lock:
                    self._audit_pending[:0] = records
                log.error("audit records not written (kept, retried): %s", exc.message)
                if raise_errors:
                    raise

    @property
    def audit_pending(self) -> int:
        """Audit records made but not yet written to the audit log."""
        with self._audit_pending_lock:
            return len(self._audit_pending)

    # ---------------------------------------------------------------- the guard's alerts
    def _alert_if_flagged(self, book: ProfileBook, event: Event) -> None:
        """Under the state lock, after a live fold: if the event's customer's watched session
        is flagged and was not alerted yet, its alert is due. At most one per session: the
        sessions alerted are remembered here (bounded), and after a restart the outbox keeps
        a session's second enqueue from being a second message (``guard.alert``)."""
        guard = self.catalog.guard
        if guard is None:
            return
        profile = book.profiles.get(book.resolve(event.user_id, event.anonymous_id))
        due = due_alert(profile, guard, self.catalog.version, self._alerted)
        if due is not None:
            self._alerts_due.append(due)

    @property
    def alerts_due(self) -> list[DueAlert]:
        """The fraud alerts made and not enqueued yet, oldest first (restored with the
        state a fold worker saved them in)."""
        with self._lock:
            return list(self._alerts_due)

    def send_alerts(self, most: int | None = None) -> int:
        """Enqueue the due fraud alerts (the ``most`` oldest, if given) in the outbox (to the
        catalog's ``security.alert_destination``); one the outbox refuses stays due for the
        next call, and its error is raised (the events are stored: a client's retry finds
        them logged and the alert goes then). How many were enqueued."""
        guard = self.catalog.guard
        sent = 0
        while self._alerts_due and (most is None or sent < most):
            key, body, customer = self._alerts_due[0]
            if guard is not None:
                destination = guard.alert_destination
                now = self.wall_now()
                self.outbox.enqueue(FRAUD_CHANNEL, destination, key, body, now, customer or None)
            self._alerts_due.pop(0)
            sent += 1
        return sent

    # ---------------------------------------------------------------- decide
    def decide(
        self,
        request: DecisionRequest,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        anonymous_only: bool = False,
        choose: Chooser | None = None,
        now: float | None = None,
    ) -> Decision:
        """Decide for a userId, or an anonymousId (resolved to its user once stitched, unless
        ``anonymous_only``: then only what that device did anonymously counts). ``choose``
        picks the items among the ranked eligible offers (default: the placement's learned model
        and exploration policy, or the catalog's order; a simulator's policy, say).

        ``now``: when the decision is taken, on event time only (a replay or a simulation
        decides at the moment its page was viewed; it does not move the watermark, which only
        events do); default the clock's now. On the wall clock a ``now`` is a ValidationError
        at ``$.context.now``, the field the HTTP face takes it from."""
        if not user_id and not anonymous_id:
            raise ValidationError("userId or anonymousId is required", "$.userId")
        if now is not None:
            self.require_event_time()
        with self._lock:
            profile = self._book.for_decision(user_id, anonymous_id, anonymous_only)
            decision = run_pipeline(
                self.catalog,
                profile,
                request,
                self.clock.now() if now is None else now,
                self._new_id(),
                choose or self._learner.choose,
                board=self.callbacks.board(),
            )
            if decision.control:
                _record_control(self._counters, decision)
            if self._journal.add(decision) >= self._flush_every:
                self.flush()  # backpressure; normally a timer flushes
            return decision

    def decide_as(
        self,
        sender: Sender,
        request: DecisionRequest,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        now: float | None = None,
    ) -> Decision:
        """``decide`` on behalf of a caller: Forbidden unless its key may decide for
        ``user_id``; a public key holding only an anonymousId sees that device's anonymous
        profile, never the customer it was stitched to (``guard.senders.check_decider``);
        only server and admin keys may say when (``now``; ``check_decision_time``)."""
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
        """A decision by id: buffered, recent, or from the decision log."""
        return self._journal.get(decision_id)

    def flush(self) -> None:
        """Write buffered decisions to the decision log and kept audit records to the audit
        log (the server calls this every second)."""
        self._journal.flush()
        self._flush_audit(raise_errors=True)

    # ---------------------------------------------------------------- read
    def profile(self, customer_id: str) -> Profile | None:
        with self._lock:
            return self._book.get(customer_id)

    def read_profile(self, customer_id: str, read: Callable[[Profile, float], T]) -> T | None:
        """``read(profile, now)`` under the state lock (a consistent view: nothing folds
        meanwhile), or None when there is no such profile."""
        with self._lock:
            profile = self._book.get(customer_id)
            return None if profile is None else read(profile, self.clock.now())

    def profile_view(self, customer_id: str) -> dict[str, Any] | None:
        """The stored profile and what rules see of it now (interest, lifecycle, ...)."""
        with self._lock:
            profile = self.profile(customer_id)
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

    def models(self, top: int = 10) -> list[PlacementModel]:
        """Each learning placement's model: kind, version, training count, top features."""
        with self._lock:
            return self._learner.describe(top)

    @property
    def learner(self) -> Learner:
        """The live learner, for inspection (tests, tools): read it, never change it."""
        return self._learner

    def experiment_counters(self, customers: bool = False) -> dict[str, CampaignCounters]:
        """Every campaign's experiment counters now (a copy: read it freely): the daily
        counts, and each exposed customer's arm, first exposure and values if ``customers``."""
        with self._lock:
            return self._counters.copy(customers)

    def experiment_state(self) -> bytes:
        """The experiment counters, in one canonical encoding (for comparisons)."""
        with self._lock:
            return self._counters.state()

    def exposures_of(self, keys: Collection[str]) -> dict[str, dict[str, Exposure]]:
        """Campaign -> experiment key -> exposure, for these keys (an export)."""
        with self._lock:
            return self._counters.exposures_of(keys)

    def erase_customer(self, customer_id: str, actor: Actor) -> ErasureReport:
        """``erasure.erase_customer``: every trace of the customer deleted (its outcome kept
        for ``erasure_status`` while the process runs)."""
        report = erase_customer(self, customer_id, actor)
        with self._lock:
            self._erasures[report.receipt] = outcome_of(report, self.wall_now())
            while len(self._erasures) > _ERASURES_KEPT:
                self._erasures.popitem(last=False)
        return report

    def export_customer(self, customer_id: str, actor: Actor) -> CustomerExport:
        """``erasure.export_customer``: everything held about the customer."""
        return export_customer(self, customer_id, actor)

    def erasure_status(self, receipt: str) -> ErasureOutcome | None:
        """The outcome of one of the latest erasures this process made (its answer holds it
        already: a scaled API worker answers 202 when the fold takes long, and reads the
        outcome from Redis)."""
        with self._lock:
            return self._erasures.get(receipt)

    def pending_decisions(self) -> list[Decision]:
        """Decisions taken but not yet written to the decision log."""
        return self._journal.pending()

    @property
    def pending_views(self) -> int:
        """Views the learner waits on (a click may still come) across learning placements."""
        with self._lock:
            return self._learner.pending_views

    @property
    def pending_conversions(self) -> int:
        """Clicks the learner waits on for their offer's KPI event."""
        with self._lock:
            return self._learner.pending_conversions

    def model_state(self) -> bytes:
        """The learner's whole state, serialised as a snapshot saves it (for comparisons)."""
        with self._lock:
            return self._learner.to_state()

    def resolve(self, user_id: str | None, anonymous_id: str | None) -> str:
        with self._lock:
            return self._book.resolve(user_id, anonymous_id)

    def links(self) -> list[tuple[str, str, str]]:
        """Every identity link (kind, id, the userId it points at), for inspection and for
        writing the state elsewhere (``partitioned_rebuild``)."""
        with self._lock:
            identity = self._book.identity
            out = [(LinkKind.ANON.value, a, u) for a, u in identity.anon_to_user.items()]
            out += [(LinkKind.ALIAS.value, a, u) for a, u in identity.alias_to_user.items()]
            return sorted(out)

    @property
    def profile_count(self) -> int:
        return len(self._book.profiles)

    def profiles(self) -> Iterable[Profile]:
        with self._lock:
            return list(self._book.profiles.values())

    # ---------------------------------------------------------------- replay, snapshots
    def _fold_log(
        self,
        book: ProfileBook,
        learner: Learner,
        after: int = 0,
        counters: ExperimentCounters | None = None,
    ) -> int:
        n = 0
        for stored in self.event_log.scan(after):
            self._apply(book, learner, stored.seq, stored.event, counters=counters)
            n += 1
        return n

    def _replayed(self) -> tuple[ProfileBook, Learner, ExperimentCounters, ReplayReport]:
        self.flush()  # the decision log must hold every decision feedback may join
        book, learner = self._fresh()
        counters = ExperimentCounters(self.catalog)
        for decision in self.decision_log.decisions():
            learner.record_decision(decision)
            _record_control(counters, decision)
        n = self._fold_log(book, learner, 0, counters)
        live, fresh = self._book.profiles, book.profiles
        enc = msgspec.msgpack.encode
        differing = sorted(
            k
            for k in set(live) | set(fresh)
            if k not in live or k not in fresh or enc(live[k]) != enc(fresh[k])
        )
        models_identical = learner.to_state() == self._learner.to_state()
        experiments_identical = counters.state() == self._counters.state()
        report = ReplayReport(
            n, len(fresh), not differing, differing[:20], models_identical, experiments_identical
        )
        return book, learner, counters, report

    @contextlib.contextmanager
    def exclusive(self, *, saving: bool = False) -> Iterator[None]:
        """No event appended nor folded meanwhile, the live state held still: what a replay
        or a rebuild runs in (the write lock, then the state lock). ``saving``: no state
        save runs meanwhile either (the save lock between the two), and the section may
        save itself (``snapshot(held=True)``): what an erasure runs in."""
        with self._write_lock, self._save_lock if saving else contextlib.nullcontext(), self._lock:
            yield

    def stitched_ids(self, customer_id: str) -> tuple[set[str], set[str]]:
        """The userIds and anonymousIds that resolve to ``customer_id``'s customer."""
        with self._lock:
            return self._book.identity.ids_of(self._book.resolve(customer_id, None))

    def forget(self, users: Collection[str], anons: Collection[str]) -> Forgotten:
        """Erase a customer from the live state, inside ``exclusive(saving=True)`` after
        their decisions were flushed (``nextbest.erasure``): profiles, identity links (the
        devices bound to them), experiment exposures, the learner's views and clicks waiting
        on them, recent decisions and due fraud alerts. The next save deletes their rows."""
        keys = [*users, *(ANON_PREFIX + a for a in anons)]
        book = self._book
        for key in keys:  # the alert remembered for their watched session
            held = book.profiles.get(key)
            session = held.guard.session if held is not None and held.guard else None
            if session is not None:
                self._alerted.discard(alert_key(key, session))
        self._alerts_due = [a for a in self._alerts_due if a.customer not in keys]
        profiles = book.forget(users, anons)
        decisions = self._journal.forget(keys)
        return Forgotten(
            profiles=profiles,
            exposures=self._counters.forget(keys),
            recent_decisions=len(decisions),
            waiting=self._learner.forget(decisions, keys),
        )

    def replay(self) -> ReplayReport:
        """Rebuild every profile from the log alone and compare with the live ones."""
        with self.exclusive():  # no event appended but not yet folded
            return self._replayed()[3]

    def rebuild(self) -> ReplayReport:
        """Replace live state by a replay of the log, then save it whole."""
        with self.exclusive():
            # a fresh book has replace=True: every row is rewritten
            self._book, self._learner, self._counters, report = self._replayed()
            self._counters.replace = True
        self.snapshot()
        return report

    # ---------------------------------------------------------------- reload
    def reload(self, catalog: Catalog) -> ReloadReport:
        """Serve ``catalog`` (already compiled and checked) from now on, swapped atomically:
        a decision runs wholly on the old catalog or wholly on the new one (both hold the
        state lock).

        The learned state is carried over (``Learner.from_state`` under the new catalog):
        each placement that still learns with the same kind of model keeps its model, so the
        offers that still exist keep what was learned about them; waiting views, pending
        conversions and exploration budgets of campaigns that still exist go on.

        Profiles are folded events, so they stay when events fold alike under both catalogs
        (``folds_alike``). Otherwise (topics, profile settings or the set of offers
        changed) every profile is refolded from the event log under the new catalog, as a
        restart would: first while events are still accepted, then the events appended
        meanwhile, while ingestion waits. The new state is saved at once, so a restart
        resumes from it."""
        with self._reload_lock:
            old = self.catalog
            if catalog.digest == old.digest and catalog.spec == old.spec:
                return ReloadReport(old.version, catalog.version, changed=False)
            book: ProfileBook | None = None
            events = 0
            refold = not folds_alike(old, catalog)
            if refold:
                book = ProfileBook(catalog.matcher, catalog.fold_config)
                events = self._fold_book(book)  # ingestion goes on meanwhile
            with self._write_lock:
                if book is not None:
                    events += self._fold_book(book)  # what was appended meanwhile
                with self._lock:
                    learner = Learner.from_state(catalog, self._learner.to_state())
                    learner.dirty = True
                    if book is None:  # the same profiles: the same knobs, now the new ones
                        book = self._book
                        book.matcher, book.fold_config = catalog.matcher, catalog.fold_config
                    self.catalog, self._book, self._learner = catalog, book, learner
                    self._counters.use(catalog)
                    self.limits = _limits(self._base_limits, catalog)
        self.snapshot()
        return ReloadReport(old.version, catalog.version, True, refold, events)

    def _fold_book(self, book: ProfileBook) -> int:
        """Fold the log's events after ``book.seq`` into ``book`` (profiles only); how many."""
        n = 0
        for stored in self.event_log.scan(book.seq):
            book.apply(stored.seq, stored.event, self._events_of)
            n += 1
        return n

    def snapshot(
        self, *, models: bool = True, extra: Sequence[StateRow] = (), held: bool = False
    ) -> None:
        """Save what changed since the last save, so a restart folds only the log's tail.

        ``models=False`` leaves the learned models for a later save (a fold worker saves
        profiles after every batch, its models once a second) unless every row is rewritten;
        ``extra`` rows are written in the same save (a fold worker's stream position);
        ``held``: the caller holds ``exclusive(saving=True)``.

        Rows are encoded under the state lock (a consistent cut) and written outside it; the
        save lock keeps an older cut from being written after a newer one. Decisions are
        flushed first: saved models never learned from a decision the log lacks. The learner
        is saved with the decision log's position at the cut, its exploration budgets without
        the decisions still pending then, so that a restart counts exactly the decisions
        logged after that position (``store.snapshot``).
        """
        self.flush()
        with contextlib.nullcontext() if held else self._save_lock:
            with self._lock:
                book, learner = self._book, self._learner
                keys, replace = book.take_changes()
                rows = [self._row(book, kind, key) for kind, key in keys]
                counters = self._counters
                experiments = counters.take_changes(every=replace)
                saves_learner = (learner.dirty and models) or replace
                if saves_learner:
                    # budgets as of the log's end now; a restart counts decisions after it
                    pending, position = self._journal.cut()
                    rows.extend(learner_rows(learner.to_state(unlogged=pending), position))
                    learner.dirty = False
                if experiments.campaigns or experiments.exposures or saves_learner:
                    # with the learner's position (when saved): a restart reads the decision
                    # log once for both
                    if not saves_learner:
                        position = self._journal.cut()[1]
                    rows.extend(experiment_rows(experiments, position))
                rows.extend(extra)
                seq = book.seq
                self._since_snapshot = 0
            try:
                self.state_store.save_state(seq, self.catalog.digest, rows, replace=replace)
            except BaseException as exc:
                with self._lock:  # not saved: save these rows next time
                    book.keep_changes(keys, replace)
                    counters.keep_changes(experiments)
                    learner.dirty = learner.dirty or saves_learner
                    if isinstance(exc, StateLost):  # the next save writes every row
                        book.replace = learner.dirty = counters.replace = True
                raise

    @staticmethod
    def _row(book: ProfileBook, kind: str, key: str) -> StateRow:
        if kind == PROFILE_ROW:
            return profile_row(key, book.profiles.get(key))
        return link_row(kind, key, book.link_target(kind, key))

    def _restore(self) -> None:
        book, learner = self._fresh()
        counters = ExperimentCounters(self.catalog)
        snap = read_snapshot(self.state_store.load_state(), self.catalog.digest)
        position: int | None = None  # the log position the saved budgets count up to
        if snap is not None and snap.seq > 0 and snap.experiments_position is None:
            # saved before experiment counters were (every save of this version that
            # rewrites its rows writes their position): the counters need the whole log
            snap = None
        if snap is not None and snap.learner is not None:
            try:
                learner = Learner.from_state(self.catalog, snap.learner)
            except (msgspec.DecodeError, ValidationError):
                snap = None  # a snapshot is a cache: one this version cannot read is replayed
        if snap is not None:
            book.restore(snap.seq, snap.profiles, snap.links)
            self._fold_position = snap.fold_position
            self._alerts_due = list(snap.alerts)  # saved by a fold worker, maybe not sent
            # the budgets saved with the learner count the log up to this position
            position = snap.decision_log_position if snap.learner is not None else None
        # the control exposures: the saved counters and the decisions logged after their
        # position (recording an exposure twice changes nothing), or the whole log
        # where the decision log ends now: every decision logged so far is read below
        self._control_seen = self.decision_log.decision_log_position()
        counted = snap is not None and snap.experiments_position is not None
        if snap is not None and counted:
            counters.restore(snap.experiments, snap.exposures)
        if learner.models:
            # budgets count logged decisions: the saved ones up to ``position`` (saved with
            # them), the log's after it; without both, the whole log is counted
            if position is None:
                learner.reset_budgets()
                decisions = self.decision_log.decisions()
            else:
                decisions = self.decision_log.decisions_after(position)
            for decision in decisions:
                learner.record_decision(decision)
                # the counters' position is saved with the learner's, or later
                _record_control(counters, decision)
            if position is not None and not counted:
                for decision in self.decision_log.decisions():
                    _record_control(counters, decision)
        else:
            logged = (
                self.decision_log.decisions_after(snap.experiments_position)
                if snap is not None and snap.experiments_position is not None
                else self.decision_log.decisions()
            )
            for decision in logged:
                _record_control(counters, decision)
        self._fold_log(book, learner, book.seq, counters)
        self._book, self._learner, self._counters = book, learner, counters
        if self._event_clock is not None and learner.now != -math.inf:
            # on event time every event is received at its own time: the learner's time,
            # the latest of them, is where the watermark was
            self._event_clock.observe(learner.now)
        if self._freeze_gc:  # what was just loaded lives as long as the process
            settle_for_serving()

    def close(self) -> None:
        """Commit queued requests, flush decisions, write a snapshot and close the stores; a
        second call does nothing."""
        self.callbacks.close()  # its writes queue their events in the group commit
        self._group_commit.close()
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self.flush()
            self.snapshot()
            self.audit.close()
            self._close_stores()

    def release(self) -> None:
        """Close the stores without saving (a read-only look: replay, models); a later
        ``close`` does nothing."""
        self.callbacks.close()
        self._group_commit.close()
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self.audit.close()
            self._close_stores()
