"""The one writer of the learned models and the experiment counters when several fold workers
share the bus (``serve --role fold --partitions ... --models``; docs/scale-out.md).

A fold worker folds a customer's events into the profile it holds; the models and counters
read every customer's feedback, so one process keeps them: the model writer. Each fold worker
tells it what it folded that they read, on the bus's learning feed (``LEARNING``): a
``LearningRecord`` per feedback event, KPI event or event an experiment counts, with what
only the profile's holder knows (who the event resolves to, their experiment id, whether the
sender's history lets its feedback teach the model, the keys that are the same customer).
The model writer folds the records in the feed's order:

- feedback joins its decision from the decision log (the API worker that made it wrote it
  before publishing the feedback), is judged as ``learn.trust`` says (the key's and the
  origin's volume counted here, the sender's history as the record says) and taught;
- a KPI event converts a waiting click of the same customer (``Learner.observe_outcome``);
- views and KPI events move the experiment counters; control exposures are read from the
  decision log, as the single fold worker reads them.

It saves the learner, the counters, the published model copy (``learner/published``) and its
feed position to Redis together once a second when they changed, then acknowledges what it
folded: a restart resumes after the saved position; a record the feed holds twice (a fold
worker republishing after a crash) is skipped by its origin (partition, stream sequence),
saved with the state. The learner's clock moves with the records (feedback and KPI events),
not with every event as in one process: a view's click window is closed by the next record
past its deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import msgspec

from nextbest.bus.port import LEARNING, Delivery, ErasableStream, EventBus
from nextbest.catalog.compiled import Catalog
from nextbest.decide.feedback import is_feedback
from nextbest.errors import LeaseLost, NextbestError
from nextbest.events.model import Event
from nextbest.experiments.counters import (
    EXPERIMENT_ROW,
    EXPOSURE_ROW,
    ExperimentCounters,
    exposure_key,
)
from nextbest.experiments.exposure import FirstExposure
from nextbest.learn.learner import Learner
from nextbest.learn.trust import forced
from nextbest.profile.identity import ANON_PREFIX
from nextbest.scaled_erasure import (
    ERASE,
    OUTCOME_SECONDS,
    ErasureOutcome,
    customer_key_marks,
    decode_part,
    encode,
)
from nextbest.store.port import DecisionLog, ErasureLedger, SharedState, StateRow
from nextbest.store.snapshot import (
    EXPERIMENT_LOG,
    FOLD_ROW,
    LEARNER_ROW,
    ModelVersion,
    experiment_rows,
    learner_rows,
    published_row,
)

__all__ = [
    "LEARNER_CONSUMER",
    "LEARNING_ORIGINS",
    "LEARNING_POSITION",
    "LearningRecord",
    "ModelWriter",
    "learning_names",
]

log = logging.getLogger("nextbest.models")

#: the model writer's durable consumer of the learning feed
LEARNER_CONSUMER = "models"
#: the lease of the deployment's one model writer (``SharedState.take_leases``)
MODEL_LEASE = "model-writer"
#: ``fold/learning-position``, ``fold/learning-origins``: the feed position saved with the
#: models, and per fold partition the last origin sequence folded
LEARNING_POSITION = "learning-position"
LEARNING_ORIGINS = "learning-origins"
_DECISION_LOG = "decision_log_position"


class LearningRecord(msgspec.Struct, array_like=True, frozen=True):
    """What a fold worker tells the model writer of one event it folded."""

    event: Event
    #: where it was folded: the partition and its stream sequence (the record's origin)
    partition: int
    seq: int
    #: the customer it resolves to after its fold, and their experiment id ("" when none)
    customer: str
    experiment_key: str
    #: feedback: the sender's history lets it teach the model (``learn.trust.sender_trusted``,
    #: judged on the profile before the event)
    sender_trusted: bool
    #: the customer keys that are the same customer (its aliases, ``anon:`` its devices)
    same: tuple[str, ...] = ()
    #: a view: what its first exposure would freeze, read from the profile as folded (the
    #: covariates and macro audiences a treated exposure keeps; ``experiments.exposure``)
    seen: FirstExposure | None = None


_decode_record = msgspec.msgpack.Decoder(LearningRecord).decode
_decode_origins = msgspec.msgpack.Decoder(dict[int, int]).decode
_encode = msgspec.msgpack.Encoder().encode


def learning_names(catalog: Catalog) -> frozenset[str]:
    """The event names a fold worker sends a record of beyond feedback: KPI events of offers
    and of campaigns' experiments."""
    names = {o.spec.kpi_event for o in catalog.offers.values() if o.spec.kpi_event}
    names.update(k.spec.event for kpis in catalog.kpis.values() for k in kpis)
    return frozenset(names)


class ModelWriter:
    """``ModelWriter(catalog, bus, state, decisions)``: ``state`` reads and saves rows
    (``RedisState``: ``read_rows``, ``save_rows``)."""

    def __init__(
        self,
        catalog: Catalog,
        bus: EventBus,
        state: SharedState,
        decisions: DecisionLog,
        *,
        consumer: str = LEARNER_CONSUMER,
        batch: int = 2_000,
        wait: float = 0.2,
        save_every: float = 1.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        owner: str | None = None,
        lease_seconds: float = 10.0,
    ) -> None:
        self.catalog = catalog
        #: with an ``owner``, the writer folds only while it holds the ``model-writer``
        #: lease (one per deployment; a worker configured with partition 0 beside another
        #: one waits); without, it is the only one by construction
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._held = owner is None
        self._lease_due = 0.0
        self.bus = bus
        self.state = state
        self.decisions = decisions
        self.consumer = consumer
        self.batch = batch
        self.wait = wait
        self.save_every = save_every
        self._wall = wall
        self._monotonic = monotonic
        self.learner = Learner(catalog)
        self.counters = ExperimentCounters(catalog)
        self.position = 0
        self.origins: dict[int, int] = {}
        self._control_seen = 0
        if owner is None:
            self._restore()
        #: deliveries folded, to acknowledge after the next save
        self._unsaved: list[Delivery] = []
        self._changed = False
        self._changed_at: float | None = None
        self._saved_at = monotonic()
        self.records = 0
        self.duplicates = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if owner is None:
            self.bus.consume(consumer, self.position, LEARNING)
        else:
            self._keep_lease()

    def _keep_lease(self) -> bool:
        """Take or renew the ``model-writer`` lease (every third of its time); on taking
        it, start from what the last holder saved. False: another writer holds it."""
        assert self.owner is not None
        now = self._monotonic()
        if now < self._lease_due:
            return self._held
        (got,) = self.state.take_leases([MODEL_LEASE], self.owner, self.lease_seconds)
        self._lease_due = now + self.lease_seconds / 3
        if got and not self._held:
            self.learner = Learner(self.catalog)
            self.counters = ExperimentCounters(self.catalog)
            self.origins = {}
            self._unsaved = []
            self._changed = False
            self._restore()
            self.bus.consume(self.consumer, self.position, LEARNING)
            self.state.fence(self.owner, [MODEL_LEASE])
            log.info("model writer %s: took the model-writer lease", self.owner)
        elif not got and self._held:
            self._let_go("its lease is held by another writer")
        elif not got:
            log.debug("model writer %s: the model-writer lease is another's", self.owner)
        self._held = bool(got)
        return self._held

    def _let_go(self, why: str) -> None:
        log.error("model writer %s stops: %s", self.owner, why)
        self._held = False
        self._lease_due = 0.0
        self._unsaved = []
        self.state.fence(self.owner or "", [])

    def _restore(self) -> None:
        names = sorted(self.catalog.kpis)
        rows = [
            (LEARNER_ROW, LEARNER_ROW),
            (FOLD_ROW, LEARNING_POSITION),
            (FOLD_ROW, LEARNING_ORIGINS),
            (EXPERIMENT_LOG, _DECISION_LOG),
            *((EXPERIMENT_ROW, c) for c in names),
        ]
        learner, position, origins, seen, *campaigns = self.state.read_rows(rows)
        if learner is not None:
            self.learner = Learner.from_state(self.catalog, learner)
        self.position = int(position) if position is not None else 0
        self.origins = _decode_origins(origins) if origins is not None else {}
        self.counters.restore((c, b) for c, b in zip(names, campaigns, strict=True) if b)
        self._control_seen = (
            int(seen) if seen is not None else self.decisions.decision_log_position()
        )

    # ------------------------------------------------------------------ the loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="nextbest-models", daemon=True)
        self._thread.start()

    def run(self) -> None:
        pause = 0.05
        while not self._stop.is_set():
            try:
                self.step()
            except NextbestError as exc:
                self.failures += 1
                self.last_error = exc.message
                log.error("model writer step failed, retrying in %.2f s: %s", pause, exc.message)
                if self._held:  # (never another writer's consumer)
                    with contextlib.suppress(NextbestError):
                        self.bus.consume(self.consumer, self.position, LEARNING)
                self._unsaved = []
                self._stop.wait(pause)
                pause = min(pause * 2, 2.0)
            else:
                pause = 0.05
                self.last_error = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def step(self) -> int:
        """Fetch records, fold the new ones, save once ``save_every`` passed (then
        acknowledge). A failed save changes nothing saved; the records are fetched again
        from the saved position (the learner is restored first). With an ``owner``, only
        while this writer holds the lease (``_keep_lease``)."""
        if self.owner is not None:
            if not self._keep_lease():
                self._stop.wait(self.wait)
                return 0
            try:
                return self._step()
            except LeaseLost as exc:
                self._let_go(exc.message)
                raise
        return self._step()

    def _step(self) -> int:
        folded = 0
        got = self.bus.fetch(self.consumer, self.batch, self.wait)
        # the control exposures logged by now first, as one process counts them before the
        # events it folds next (a KPI event after its decision finds the exposure)
        self._count_control()
        for d in got:
            self._unsaved.append(d)
            if d.seq <= self.position:
                continue
            if d.kind == ERASE:
                self._erase(d)
                continue
            record = _decode_record(d.body)
            if record.seq <= self.origins.get(record.partition, 0):
                self.duplicates += 1  # republished by a fold worker after a crash
            else:
                self._fold(record)  # a failure before it changes anything: fetched again
                self.origins[record.partition] = record.seq
                folded += 1
            self.position = d.seq
        if self._changed and self._monotonic() - self._saved_at >= self.save_every:
            self.save()
        elif not self._changed and self._unsaved:
            self._ack()
        return folded

    def _fold(self, record: LearningRecord) -> None:
        event = record.event
        learner = self.learner
        decision = None
        if is_feedback(event):
            decision = self.decisions.decision(str(event.properties.get("decision_id")))
            volume = learner.volume.count(event)
            if decision is not None and not (
                volume.trusted and not forced(decision) and record.sender_trusted
            ):
                decision = None  # stored and folded, not learned (``learn.trust``)
        learner.observe(event, decision)
        counters = self.counters
        if counters.wants(event) and record.experiment_key:
            counters.observe(event, record.experiment_key, decision, seen=record.seen)
        if learner.awaits(event) and (event.user_id or event.anonymous_id):
            same = {record.customer, *record.same}

            def same_customer(key: str, e: Event) -> bool:
                if key.startswith(ANON_PREFIX) and e.anonymous_id == key[len(ANON_PREFIX) :]:
                    return True
                return key == e.user_id or key in same

            learner.observe_outcome(event, record.customer, same_customer)
        self.records += 1
        self._mark_changed()

    def _erase(self, d: Delivery) -> None:
        """An erasure's last part (``scaled_erasure.complete_erasure``: every partition
        erased its part): the customer's waiting views, clicks and exposure rows forgotten,
        saved at once with the feed position past it; then the outcome recorded (the API
        worker answers), the ids' write marks and the erasure's commands deleted. A failure
        raises before the position moves (the command comes again; it is idempotent)."""
        part = decode_part(d.body)
        command = part.command
        users, anons = command.user_ids, command.anonymous_ids
        keys = [*users, *(ANON_PREFIX + a for a in anons)]
        waiting = self.learner.forget(part.decisions, keys)
        exposures = self.counters.forget(keys)
        campaigns = sorted(self.catalog.kpis)
        gone = [StateRow(EXPOSURE_ROW, exposure_key(c, k), None) for c in campaigns for k in keys]
        before = self.position
        self.position = d.seq
        try:
            self.save(gone)
        except BaseException:
            self.position = before
            raise
        outcome = part.outcome or ErasureOutcome(status="not_found", erased_at=self._wall())
        if outcome.status == "erased":
            outcome = msgspec.structs.replace(outcome, waiting=waiting, exposures=exposures)
        if isinstance(self.state, ErasureLedger):
            marks = customer_key_marks(users, anons)
            self.state.finish_erasure(command.receipt, encode(outcome), OUTCOME_SECONDS, marks)
        if isinstance(self.bus, ErasableStream):
            self.bus.erase_messages(part.commands)

    def _count_control(self) -> None:
        position = self.decisions.decision_log_position()
        if position == self._control_seen:
            return
        for decision in self.decisions.decisions_after(self._control_seen):
            if decision.control:
                self.counters.record_decision(
                    decision, decision.experiment_key or decision.customer_id
                )
        self._control_seen = position
        self._mark_changed()

    def _mark_changed(self) -> None:
        if not self._changed:
            self._changed = True
            self._changed_at = self._wall()

    def save(self, extra: Sequence[StateRow] = ()) -> None:
        """Save the learner, the counters, the published copy and the feed position in one
        write (with ``extra`` rows), then acknowledge the records folded; the learning feed
        then loses every record up to the saved position (JetStream: a purge), so an erased
        customer's records do not outlive the erasure (docs/trust.md)."""
        learner = self.learner
        rows: list[StateRow] = list(learner_rows(learner.to_state(), self._control_seen))
        rows.extend(extra)
        version = ModelVersion(self.position, self._wall(), self._changed_at)
        rows.append(published_row(version))
        experiments = self.counters.take_changes()
        rows.extend(experiment_rows(experiments, self._control_seen))
        rows.append(StateRow(FOLD_ROW, LEARNING_POSITION, str(self.position).encode()))
        rows.append(StateRow(FOLD_ROW, LEARNING_ORIGINS, _encode(self.origins)))
        try:
            self.state.save_rows(self.catalog.digest, rows)
        except BaseException:
            self.counters.keep_changes(experiments)
            raise
        learner.dirty = False
        self._changed = False
        self._changed_at = None
        self._saved_at = self._monotonic()
        self._ack()
        if isinstance(self.bus, ErasableStream):
            try:
                self.bus.purge_learning(self.position)
            except NextbestError as exc:  # purged with the next save
                log.warning("learning feed not purged: %s", exc.message)

    def _ack(self) -> None:
        unsaved, self._unsaved = self._unsaved, []
        self.bus.ack(self.consumer, unsaved)

    def probe(self) -> tuple[str, str | None]:
        return ("model_writer", self.last_error)

    def close(self) -> None:
        """Stop the loop and save what changed."""
        self.stop()
        if self._changed and self._held:
            with contextlib.suppress(NextbestError):
                self.save()
        if self.owner is not None and self._held:
            with contextlib.suppress(NextbestError):
                self.state.drop_leases([MODEL_LEASE], self.owner)
