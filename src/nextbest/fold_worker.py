"""The fold worker (``serve --role fold``): it owns the bus's partitions (all of them:
one fold worker per deployment in this version), folds every accepted event into the live
profiles in Redis, writes the event log to PostgreSQL behind them and is the one writer of
every placement's learned model.

One step (``step``), repeated:

1. fetch up to ``batch`` deliveries from the durable consumer (waiting at most ``wait`` s);
2. keep those after the processed position, in stream order (a gap waits for its
   redelivery; one the log holds already is acknowledged, never folded twice);
3. fold them (``Engine.fold_accepted`` over a ``WriteBehindLog``: seqs handed out at once, a
   messageId in the log or in its unwritten tail skipped: a redelivery, or a client's retry
   after the bus's duplicate window, deleted from the stream once the batch is logged); each
   event is logged with the stream sequence it came by (``StoredEvent.stream_seq``);
4. save the changed profiles and identity links with the new stream position to Redis in one
   write (the models too, once ``model_every`` seconds passed and they changed, with a new
   published version): the events are now visible to every API worker; a save that finds
   the saved state gone (Redis flushed: ``StateLost``) saves the whole live state instead, as
   the check every ``check_every`` seconds does when idle; the guard's fraud alerts the fold
   made are saved with it (``fold/alerts``) and enqueued in the outbox right after (a
   restart finds those not enqueued yet there);
5. hand the batch (a ``Segment``) to the log writer: the PostgreSQL commit is off the
   visibility path. The writer (a thread of its own while ``run`` runs, else at the end of
   the step) logs segments in order, then acknowledges their deliveries: the bus forgets an
   event only once it is both in Redis and in the log (``fold_loop``, shared with the
   partitioned fold workers). The writer logs every segment waiting
   in one commit (many folds, one commit under load). While ``max_unlogged`` deliveries wait
   for it, the fold waits too (backpressure; below the bus's ``max_ack_pending``).

An erasure command (kind ``erase``, ``scaled_erasure``) is handled alone in its step, when
the fold reaches it: the log written up to it, tombstones recorded, the customer erased from
the engine (PostgreSQL's rows, the live state, Redis), the outcome recorded, the position
saved past it. The messages its logged events came by are deleted from the stream first
(their stream sequences are in the log). Events carrying a tombstoned id accepted before
the erasure are dropped (and deleted from the stream once logged and acknowledged).

A failure anywhere (PostgreSQL restarting, Redis away) acknowledges nothing: the step (or the
segment's write) is tried again, with a growing pause, until it passes; the bus keeps every
later event meanwhile. A crash anywhere loses nothing either: the restarted worker restores the
saved state and folds the event log's tail past it (Redis flushed: the whole log), then its
consumer restarts after the *lower* of the two watermarks, the stream position saved with the
profiles and the one logged with the events: deliveries between them are logged with the seqs
they were folded with (the same events in the same order meet the same duplicates) and not
folded again; folding resumes past the saved position.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from nextbest.bus.port import Delivery, ErasableStream, EventBus
from nextbest.catalog.compiled import Catalog
from nextbest.engine import Engine
from nextbest.erasure import customer_ids
from nextbest.errors import InputError, NextbestError, StateLost, StoreError
from nextbest.events.model import Event
from nextbest.fold_loop import FoldLoop, LoopStats
from nextbest.profile.identity import ANON_PREFIX
from nextbest.scaled_erasure import (
    ERASE,
    OUTCOME_SECONDS,
    TOMBSTONE_SECONDS,
    ErasureOutcome,
    Tombstones,
    customer_key_marks,
    decode_command,
    encode,
    erase_on_engine,
    stream_copies,
)
from nextbest.store.port import ErasureLedger, SequencedLog, StateReads
from nextbest.store.snapshot import (
    FOLD_ROW,
    POSITION,
    ModelVersion,
    alerts_row,
    position_row,
    published_row,
)
from nextbest.write_behind import Segment, WriteBehindLog

__all__ = ["CONSUMER", "FoldStats", "FoldWorker"]

log = logging.getLogger("nextbest.fold")

#: the durable consumer's name
CONSUMER = "fold"
#: seconds after an erasure its customers' decisions are erased from the log once more
ERASE_AGAIN_AFTER = 1.0

_decode = msgspec.msgpack.Decoder(Event).decode


@dataclass
class FoldStats(LoopStats):
    """What the worker did, for ``/metrics`` (``fold_loop.LoopStats``, and the model copies
    published)."""

    models_published: int = 0
    #: erasure commands applied, and events dropped by a tombstone (an erased customer's,
    #: accepted before their erasure)
    erasures: int = 0
    erased_dropped: int = 0


class _Pending(NamedTuple):
    segment: Segment
    deliveries: list[Delivery]
    #: stream messages to delete once logged and acknowledged (a restart never reads them
    #: again: the fold needs the stream's sequences without a gap up to its position): an
    #: erasure's command, an erased customer's events dropped by a tombstone, duplicates of
    #: logged events (an erasure finds a customer's messages by the logged copies)
    deleted: tuple[int, ...] = ()

    @property
    def events(self) -> tuple[object, ...]:
        return self.segment.events


class FoldWorker(FoldLoop[_Pending, FoldStats]):
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
        writer: SequencedLog | None = None,
        close_writer: Callable[[], None] | None = None,
        max_unlogged: int = 10_000,
        erasures: ErasureLedger | None = None,
        tombstones: Tombstones | None = None,
    ) -> None:
        """``erasures``: where erasure commands' tombstones and outcomes are recorded
        (Redis), ``tombstones`` those recorded before (``scaled_erasure``): without them an
        erasure command is acknowledged and does nothing (logged)."""
        super().__init__(FoldStats(), max_unlogged)
        self.engine = engine
        self._erasures = erasures
        self._tombstones = tombstones
        #: an erasure applied whose outcome is not recorded yet (its delivery's seq, the
        #: outcome, the ids): a retry records it rather than erasing again
        self._erasing: tuple[int, ErasureOutcome, list[str], list[str]] | None = None
        #: (when, customer keys): the decision log erased once more, a moment after an
        #: erasure (a decision an API worker was writing as the feed told it)
        self._again: list[tuple[float, list[str]]] = []
        self.bus = bus
        self.consumer = consumer
        self.batch = batch
        self.wait = wait
        self.model_every = model_every
        self._wall = wall
        self._monotonic = monotonic
        #: the event log, written behind the saved state (``writer``: its own connection)
        current = engine.event_log
        before = current if isinstance(current, WriteBehindLog) else None
        if before is not None:  # a worker on this engine before this one
            if before.unlogged:
                raise StoreError("the engine's event log has events not logged yet")
            current = before.log
            writer = writer if writer is not None else before.writer
        self.log = WriteBehindLog(current, writer)
        engine.use_event_log(self.log)
        saved = engine.fold_position
        if engine.folded_seq > self.log.logged_seq:
            # Redis holds events the log lacks (a crash between the save and the log write):
            # (logged position, saved position] are logged again, not folded
            self.position = saved
            self._done = self.log.logged_position
        else:  # the log holds all Redis does, maybe more (folded at restore): fold past both
            self.position = self._done = max(saved, self.log.logged_position)
        #: the state restored holds more than Redis (folded from the log at restore, Redis
        #: flushed or behind): saved whole by the first step
        self._save_due = self.position != saved
        #: the saved state's seq: where the log's seqs go on once it logged up to ``position``
        self._resume_seq = engine.folded_seq
        self._held: dict[int, Delivery] = {}  # after a gap, in stream order once it fills
        self._stale: list[Delivery] = []  # logged already: to acknowledge
        self._models_at = monotonic()
        #: wall time the models first changed since they were last published (None: not)
        self._models_changed_at: float | None = None
        #: where the saved state is read back, to notice that it vanished (Redis flushed)
        self._reads = reads
        self._check_every = check_every
        self._checked_at = monotonic()
        self._close_writer = close_writer
        #: the alerts due saved in Redis (``fold/alerts``), the oldest of the engine's: those
        #: a restart found there, or the last save wrote; sent after it, the row then deleted
        self._alerts_saved = len(engine.alerts_due)
        #: ``fold/alerts`` holds alerts (sent or not): the next save deletes what was sent
        self._alerts_row = self._alerts_saved > 0
        self.bus.consume(consumer, self._done)

    @property
    def logged_position(self) -> int:
        """The stream sequence the event log holds every event up to."""
        return self.log.logged_position

    # ------------------------------------------------------------------ the loop
    def step(self) -> int:
        """One fetch, fold, save; the batch sealed for the log; the events folded. Without
        the writer thread (``run`` not running), the step logs and acknowledges the sealed
        segments itself, at its end: a failure keeps them for the next step, which refuses
        to fold more (raising the log's error) while ``max_unlogged`` deliveries wait."""
        self._wait_for_room()
        self._send_alerts()  # saved, not sent yet (a failed enqueue, or found at a restart)
        if self._save_due:
            self.engine.state_lost()
            self._save(self.position, models=True)
            self._save_due = False
        self._check_saved_state()
        if not self._ready():
            for d in self.bus.fetch(self.consumer, self.batch, self.wait):
                self._take(d)
        todo = self._ready()
        self._erase_decisions_again()
        cut = next((i for i, d in enumerate(todo) if d.kind == ERASE), None)
        if cut == 0:
            return self._erase(todo[0])
        if cut is not None:  # the events before it first, then the erasure alone
            todo = todo[:cut]
        models_due = self._monotonic() - self._models_at >= self.model_every
        if not todo:
            if models_due and self.engine.models_changed:
                self._save(self.position, models=True)
            self._ack_stale()
            self._log_here()
            return 0
        again = [d for d in todo if d.seq <= self.position]  # logged again after a restart
        fresh = todo[len(again) :]
        dropped: list[int] = []
        if again:
            dropped += self._log_again(again)
            if again[-1].seq == self.position:
                self.log.skip_to(self._resume_seq)
        came, events, erased = self._kept(fresh)
        dropped += erased
        self.stats.erased_dropped += len(erased)
        seqs: list[int | None] = []
        if fresh:
            started = time.perf_counter()
            self.log.came_from(came)
            seqs = self.engine.fold_accepted(events, send_alerts=False)
            # a duplicate of a logged event (a client's retry past the bus's window): an
            # erasure finds the customer's messages by the logged copy, so it goes now
            dropped += [at for at, seq in zip(came, seqs, strict=True) if seq is None]
            self.stats.fold_seconds = time.perf_counter() - started
            if self._models_changed_at is None and self.engine.models_changed:
                self._models_changed_at = self._wall()
            self._save(fresh[-1].seq, models=models_due and self.engine.models_changed)
            saved = self._wall()
            self._send_alerts()
            self.stats.visible_after = tuple(saved - e.received_at for e in events)
            self.position = fresh[-1].seq

        for d in todo:
            del self._held[d.seq]
        self._done = todo[-1].seq
        self._seal(_Pending(self.log.seal(self._done), todo, tuple(dropped)))
        self._ack_stale()
        folded = sum(s is not None for s in seqs)
        self.stats.events += folded
        self.stats.duplicates += len(seqs) - folded
        self.stats.batches += 1
        if self.on_step is not None and fresh:
            self.on_step(self.stats)
        self._log_here()
        return folded

    def _kept(self, fresh: list[Delivery]) -> tuple[list[int], list[Event], list[int]]:
        """``fresh``'s events to fold, with the stream sequences they came by, and the
        sequences of those a tombstone drops (an erased customer's, accepted before the
        erasure: deleted from the stream once logged and acknowledged)."""
        came = [d.seq for d in fresh]
        events = [_decode(d.body) for d in fresh]
        stones = self._tombstones
        if stones is None or not stones.held:
            return came, events, []
        drops = [stones.drops(e) for e in events]
        if not any(drops):
            return came, events, []
        kept = [(at, e) for at, e, drop in zip(came, events, drops, strict=True) if not drop]
        erased = [at for at, drop in zip(came, drops, strict=True) if drop]
        return [at for at, _ in kept], [e for _, e in kept], erased

    def _log_again(self, again: list[Delivery]) -> list[int]:
        """Deliveries folded before a restart and not logged: logged with the seqs they were
        folded with (the same events, the same tombstones and duplicates, in the same
        order); the stream sequences of those dropped or refused, to delete."""
        came, events, erased = self._kept(again)
        self.log.came_from(came)
        seqs = self.log.append(events)
        return [*erased, *(at for at, seq in zip(came, seqs, strict=True) if seq is None)]

    # ------------------------------------------------------------------ erasure
    def _erase(self, d: Delivery) -> int:
        """An erasure command (``scaled_erasure``), alone in its step: every event folded
        before it logged first, then the tombstones recorded, the customer erased from the
        engine (its stores and live state), the outcome recorded, the position saved past
        it. A failure raises (the step is tried again; an erasure is idempotent). A command
        at or below the saved position was applied before a restart: passed over."""
        if d.seq > self.position:
            if self._erasures is None or self._tombstones is None:
                log.error("an erasure command, and no Redis to record it in: passed over")
            else:
                self._apply_erasure(d, self._erasures, self._tombstones)
            self._save(d.seq, models=True)
            self.position = d.seq
        elif d.seq == self.position:
            self.log.skip_to(self._resume_seq)
        del self._held[d.seq]
        self._done = d.seq
        self._seal(_Pending(self.log.seal(d.seq), [d], (d.seq,)))  # the command names the ids
        self._ack_stale()
        if self._writer is None:
            with contextlib.suppress(NextbestError):
                self._write_unlogged(retry=self.stats.log_error is not None)
        return 0

    def _apply_erasure(self, d: Delivery, ledger: ErasureLedger, stones: Tombstones) -> None:
        command = decode_command(d.body)
        if self._erasing is None or self._erasing[0] != d.seq:
            self._drain_log()
            now = self._wall()
            try:
                users, anons = customer_ids(
                    self.engine, command.customer_id, (command.user_ids, command.anonymous_ids)
                )
            except InputError:  # never sent by an API worker: recorded, passed over
                outcome = ErasureOutcome(status="not_found", erased_at=now)
                self._erasing = (d.seq, outcome, [], [])
            else:
                fresh = {t: now for t in stones.of(users, anons)}
                ledger.record_tombstones(fresh, TOMBSTONE_SECONDS)
                stones.add(fresh)
                self._erase_messages(users, anons)
                outcome = erase_on_engine(self.engine, command, (users, anons), now)
                self._erasing = (d.seq, outcome, users, anons)
                keys = [*users, *(ANON_PREFIX + a for a in anons)]
                self._again.append((self._monotonic() + ERASE_AGAIN_AFTER, keys))
        _, outcome, users, anons = self._erasing
        ledger.finish_erasure(
            command.receipt, encode(outcome), OUTCOME_SECONDS, customer_key_marks(users, anons)
        )
        self._erasing = None
        self.stats.erasures += 1
        stones.prune(self._wall())

    def _erase_messages(self, users: list[str], anons: list[str]) -> None:
        """Delete from the stream (JetStream) the messages the ids' logged events came by,
        and the messages those came by (``stream_copies``: a forward's, a stitch's, when
        several fold workers logged them before): the log holds every event folded (its
        position past them: a restart never reads them again). An event logged without its
        stream sequence (before the log kept them) is not found. A failure raises: the
        erasure is tried again."""
        if not isinstance(self.bus, ErasableStream):
            return
        logged = self.log.events_of(users, anons, self.log.last_seq())
        came = [s.stream_seq for s in logged if s.stream_seq is not None]
        if came:
            self.bus.erase_messages(stream_copies(self.bus, came))

    def _erase_decisions_again(self) -> None:
        """The decision log erased once more for the customers erased a moment ago."""
        now = self._monotonic()
        while self._again and self._again[0][0] <= now:
            _, keys = self._again[0]
            self.engine.decision_log.erase_decisions(keys)
            self._again.pop(0)

    # ------------------------------------------------------------------ the log writer
    def _write_group(self, group: list[_Pending], *, retry: bool) -> list[_Pending]:
        if retry:  # the segments the log's recorded position covers are done
            logged = self.log.committed()
            done = [p for p in group if p.segment.position <= logged]
            for p in done:
                self.log.written(p.segment)
            self._logged(done)
            group = group[len(done) :]
        if group:
            events = tuple(e for p in group for e in p.segment.events)
            self.log.write(Segment(events, group[-1].segment.position))
        return group

    def _acknowledge(self, group: list[_Pending]) -> None:
        self.bus.ack(self.consumer, [d for p in group for d in p.deliveries])
        deleted = [seq for p in group for seq in p.deleted]
        if deleted and isinstance(self.bus, ErasableStream):
            try:
                self.bus.erase_messages(deleted)
            except NextbestError as exc:  # logged and acknowledged all the same
                log.error("erased messages not deleted from the stream: %s", exc.message)

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
        if d.seq <= self.log.logged_position:
            self._stale.append(d)  # logged (and folded): done with
        elif d.seq > self._done:
            self._held[d.seq] = d
        # else: sealed, its segment not logged yet: the writer acknowledges it once it is

    def _ready(self) -> list[Delivery]:
        """The held deliveries that follow the processed position without a gap, up to a
        batch."""
        out: list[Delivery] = []
        nxt = self._done + 1
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
        due = self.engine.alerts_due
        if due or self._alerts_row:  # saved with the fold that made them (or deleted)
            extra.append(alerts_row(due))
        started = time.perf_counter()
        self.engine.snapshot(models=models, extra=extra)
        self.stats.save_seconds = time.perf_counter() - started
        self._alerts_saved = len(due)
        self._alerts_row = bool(due)
        if models:
            self._models_at = self._monotonic()
            self._models_changed_at = None
            self.stats.models_published += 1

    def _send_alerts(self) -> None:
        """Enqueue the saved alerts in the outbox (PostgreSQL): only once saved, so a crash
        before the save makes them again when the events are folded again, and one after
        it finds them in ``fold/alerts`` at the restart; the outbox's key makes a second
        enqueue of one a no-op. A failure is counted and tried again at the next step."""
        if not self._alerts_saved:
            return
        before = len(self.engine.alerts_due)
        try:
            self.engine.send_alerts(self._alerts_saved)
        except NextbestError as exc:
            self.stats.alert_failures += 1
            log.error("fraud alerts not enqueued (kept, retried): %s", exc.message)
        sent = before - len(self.engine.alerts_due)
        self._alerts_saved -= sent
        self.stats.alerts_sent += sent

    def _ack_stale(self) -> None:
        if self._stale:
            stale, self._stale = self._stale, []
            self.bus.ack(self.consumer, stale)

    # ------------------------------------------------------------------ lag
    def lag(self) -> tuple[int, int]:
        """(the stream's last sequence minus the folded position, the consumer's pending
        messages): how far the fold is behind the API workers' acknowledged events."""
        return self.bus.last_seq() - self.position, self.bus.pending(self.consumer)

    def lags(self) -> tuple[int, int, int]:
        """(events not folded yet, the consumer's unacknowledged messages, events folded
        and not logged yet): what ``/metrics`` shows of any kind of fold worker."""
        lag, pending = self.lag()
        return lag, pending, lag + self.position - self.log.logged_position

    @property
    def catalog(self) -> Catalog:
        return self.engine.catalog

    def log_lag(self) -> int:
        """The stream's last sequence minus the position the event log holds every event
        up to (the log's lag behind the bus; the fold's own is ``lag``)."""
        return self.bus.last_seq() - self.log.logged_position

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
        try:
            self.log.probe()
        except NextbestError as exc:
            out.append(("event_log_writer", exc.message))
        else:
            out.append(("event_log_writer", self.stats.log_error))
        return out

    def close(self) -> None:
        """Stop the loop (the writer logs what is sealed), save, close the engine (its
        stores), the log writer's connection and the bus."""
        self.stop()
        try:
            self.engine.close()
        finally:
            try:
                if self._close_writer is not None and not self._writer_stuck:
                    self._close_writer()
            finally:
                self.bus.close()
