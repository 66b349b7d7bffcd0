"""The fold worker (``nextbest serve --role fold``): it owns the bus's partitions (all of them:
one fold worker per deployment in this version), folds every accepted event into the live
profiles in Redis, writes the event log to PostgreSQL in batches and is the one writer of
every placement's learned model.

One step (``step``), repeated:

1. fetch up to ``batch`` deliveries from the durable consumer (waiting at most ``wait`` s);
2. keep those after the folded position, in stream order (a gap waits for its redelivery; one
   at or before the position was folded already: acknowledged, never folded twice);
3. append them to the event log and fold them (``Engine.fold_accepted``: a messageId logged
   already is skipped: a redelivery, or a client's retry after the bus's duplicate window);
4. save the changed profiles and identity links with the new position in one write (the
   models too, once ``model_every`` seconds passed and they changed, with a new published
   version); a save that finds the saved state gone (Redis flushed: ``StateLost``) saves the
   whole live state instead, as the check every ``check_every`` seconds does when idle;
5. acknowledge the deliveries.

A failure anywhere (PostgreSQL restarting, Redis away) acknowledges nothing: the step is tried
again, with a growing pause, until it passes; the bus keeps every later event meanwhile. A crash
anywhere loses nothing either: the restarted worker restores the saved state, folds the event
log's tail after it, and its consumer starts again after the saved position (deliveries the
event log already holds are skipped by messageId).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from nextbest.bus.port import Delivery, EventBus
from nextbest.engine import Engine
from nextbest.errors import NextbestError, StateLost
from nextbest.events.model import Event
from nextbest.store.port import StateReads
from nextbest.store.snapshot import FOLD_ROW, POSITION, ModelVersion, position_row, published_row

__all__ = ["CONSUMER", "FoldStats", "FoldWorker"]

log = logging.getLogger("nextbest.fold")

#: the durable consumer's name
CONSUMER = "fold"

_decode = msgspec.msgpack.Decoder(Event).decode


@dataclass
class FoldStats:
    """What the worker did, for ``/metrics``: totals, and the last step's timings."""

    events: int = 0
    duplicates: int = 0
    redelivered: int = 0
    batches: int = 0
    failures: int = 0
    models_published: int = 0
    #: seconds the last event log append and fold took (PostgreSQL batch, then the fold)
    append_seconds: float = 0.0
    #: seconds the last state save took (Redis)
    save_seconds: float = 0.0
    #: per event of the last step: seconds from its acceptance by an API worker (its
    #: ``received_at``) to the save that made it visible to every API worker
    visible_after: tuple[float, ...] = ()
    last_error: str | None = None


class FoldWorker:
    def __init__(
        self,
        engine: Engine,
        bus: EventBus,
        *,
        consumer: str = CONSUMER,
        batch: int = 2_000,
        wait: float = 0.2,
        model_every: float = 1.0,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        reads: StateReads | None = None,
        check_every: float = 1.0,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.consumer = consumer
        self.batch = batch
        self.wait = wait
        self.model_every = model_every
        self._wall = wall
        self._monotonic = monotonic
        #: the stream sequence folded and saved up to
        self.position = engine.fold_position
        self._held: dict[int, Delivery] = {}  # after a gap, in stream order once it fills
        self._stale: list[Delivery] = []  # folded already: to acknowledge
        self._models_at = monotonic()
        #: wall time the models first changed since they were last published (None: not)
        self._models_changed_at: float | None = None
        #: where the saved state is read back, to notice that it vanished (Redis flushed)
        self._reads = reads
        self._check_every = check_every
        self._checked_at = monotonic()
        self.stats = FoldStats()
        #: a step's observer (the metrics): its append and save seconds
        self.on_step: Callable[[FoldStats], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bus.consume(consumer, self.position)

    # ------------------------------------------------------------------ the loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="nextbest-fold", daemon=True)
        self._thread.start()

    def run(self) -> None:
        pause = 0.05
        while not self._stop.is_set():
            try:
                self.step()
            except NextbestError as exc:
                self.stats.failures += 1
                self.stats.last_error = exc.message
                log.error("fold step failed, retrying in %.2f s: %s", pause, exc.message)
                self._stop.wait(pause)
                pause = min(pause * 2, 2.0)
            else:
                pause = 0.05
                self.stats.last_error = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def step(self) -> int:
        """One fetch, fold, save and acknowledgement; the events folded."""
        self._check_saved_state()
        if not self._ready():
            for d in self.bus.fetch(self.consumer, self.batch, self.wait):
                self._take(d)
        todo = self._ready()
        models_due = self._monotonic() - self._models_at >= self.model_every
        if not todo:
            if models_due and self.engine.models_changed:
                self._save(self.position, models=True)
            self._ack_stale()
            return 0
        events = [_decode(d.body) for d in todo]
        started = time.perf_counter()
        seqs = self.engine.fold_accepted(events)
        self.stats.append_seconds = time.perf_counter() - started
        if self._models_changed_at is None and self.engine.models_changed:
            self._models_changed_at = self._wall()
        position = todo[-1].seq
        self._save(position, models=models_due and self.engine.models_changed)
        saved = self._wall()
        self.stats.visible_after = tuple(saved - e.received_at for e in events)
        for d in todo:
            del self._held[d.seq]
        self.position = position
        self.bus.ack(self.consumer, todo)
        self._ack_stale()
        folded = sum(s is not None for s in seqs)
        self.stats.events += folded
        self.stats.duplicates += len(seqs) - folded
        self.stats.batches += 1
        if self.on_step is not None:
            self.on_step(self.stats)
        return folded

    def _check_saved_state(self) -> None:
        """Every ``check_every`` seconds: if the saved position vanished (Redis was flushed
        or lost its data), the whole live state is saved again at once (profiles, links,
        models, position): the fold worker's memory is rebuilt from PostgreSQL only when it
        restarts."""
        if self._reads is None or self.position == 0:
            return
        now = self._monotonic()
        if now - self._checked_at < self._check_every:
            return
        self._checked_at = now
        (saved,) = self._reads.read_rows([(FOLD_ROW, POSITION)])
        if saved is None:
            log.warning("the saved state vanished: saving the whole live state again")
            self.engine.state_lost()
            self._save(self.position, models=True)

    def _take(self, d: Delivery) -> None:
        if d.delivered > 1:
            self.stats.redelivered += 1
        if d.seq <= self.position:
            self._stale.append(d)
        else:
            self._held[d.seq] = d

    def _ready(self) -> list[Delivery]:
        """The held deliveries that follow the position without a gap, up to a batch."""
        out: list[Delivery] = []
        nxt = self.position + 1
        while nxt in self._held and len(out) < self.batch:
            out.append(self._held[nxt])
            nxt += 1
        return out

    def _save(self, position: int, *, models: bool) -> None:
        try:
            self._save_rows(position, models=models)
        except StateLost:  # the engine now saves every row; the model copy is republished
            log.warning("the saved state vanished: saving the whole live state again")
            self._save_rows(position, models=True)

    def _save_rows(self, position: int, *, models: bool) -> None:
        extra = [position_row(position)]
        if models:
            version = ModelVersion(position, self._wall(), self._models_changed_at)
            extra.append(published_row(version))
        started = time.perf_counter()
        self.engine.snapshot(models=models, extra=extra)
        self.stats.save_seconds = time.perf_counter() - started
        if models:
            self._models_at = self._monotonic()
            self._models_changed_at = None
            self.stats.models_published += 1

    def _ack_stale(self) -> None:
        if self._stale:
            stale, self._stale = self._stale, []
            self.bus.ack(self.consumer, stale)

    # ------------------------------------------------------------------ lag
    def lag(self) -> tuple[int, int]:
        """(the stream's last sequence minus the folded position, the consumer's pending
        messages): how far the fold is behind the API workers' acknowledged events."""
        return self.bus.last_seq() - self.position, self.bus.pending(self.consumer)

    def probe(self) -> list[tuple[str, str | None]]:
        """The fold's backends: the bus, and the engine's stores (event log, decision log,
        quarantine), and whether the last step failed."""
        out: list[tuple[str, str | None]] = []
        try:
            self.bus.last_seq()
        except NextbestError as exc:
            out.append(("event_bus", exc.message))
        else:
            out.append(("event_bus", None))
        out.extend(self.engine.probe())
        out.append(("fold", self.stats.last_error))
        return out

    def close(self) -> None:
        """Stop the loop, save, close the engine (its stores) and the bus."""
        self.stop()
        try:
            self.engine.close()
        finally:
            self.bus.close()
