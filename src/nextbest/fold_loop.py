"""What every kind of fold worker runs the same way (``fold_worker.FoldWorker``, one worker
owning every partition; ``partitioned_fold.PartitionedFold``, one of several): the step loop
that retries a failed step with a growing pause, and the event log writer behind the saved
state (a thread of its own) with its backpressure.

A worker's step folds and saves, then *seals* a segment (its events for the log and the bus
deliveries to acknowledge once they are logged). The writer logs every sealed segment waiting
in one commit (``_write_group``, the worker's own: how its log is written and how a commit
whose answer was lost is recognised), then dequeues and acknowledges them (``_acknowledge``).
While ``max_unlogged`` deliveries wait for the log, the fold waits too. Without the writer
thread (``run`` not running: a test stepping by hand), a step logs what is sealed itself.

``log_every``: the writer commits at most that often (seconds between the starts of two
commits), so a worker whose steps are small (one of several fold workers at a low rate)
writes many steps in one commit instead of a commit each: the log is behind the saved state,
off the path that makes events visible, and a commit's fixed cost (PostgreSQL's transaction
and WAL flush) is paid less often. It commits at once when something waits for the log (a
stitch, a partition to take over: ``_hurry``), when half of ``max_unlogged`` waits, and when
stopping.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from nextbest.bus.port import Delivery
from nextbest.errors import NextbestError, StoreError

__all__ = ["FoldLoop", "LoopStats", "Sealed"]

log = logging.getLogger("nextbest.fold")


class Sealed(Protocol):
    """A sealed segment: its events for the log and the deliveries it acknowledges."""

    @property
    def events(self) -> Sequence[object]: ...

    @property
    def deliveries(self) -> Sequence[Delivery]: ...


S = TypeVar("S", bound=Sealed)


@dataclass
class LoopStats:
    """What any fold worker did, for ``/metrics``: totals, and the last step's timings."""

    events: int = 0
    duplicates: int = 0
    redelivered: int = 0
    batches: int = 0
    failures: int = 0
    #: seconds the last fold took, and the last state save (Redis)
    fold_seconds: float = 0.0
    save_seconds: float = 0.0
    #: per event of the last step: seconds from its acceptance by an API worker (its
    #: ``received_at``) to the save that made it visible to every API worker
    visible_after: tuple[float, ...] = ()
    last_error: str | None = None
    #: segments logged, their events, and the seconds the last one's commit took (PostgreSQL)
    segments_logged: int = 0
    events_logged: int = 0
    log_seconds: float = 0.0
    log_failures: int = 0
    log_error: str | None = None
    #: the guard's fraud alerts enqueued in the outbox (after the save that made them), and
    #: the enqueues that failed (tried again next step; saved meanwhile)
    alerts_sent: int = 0
    alert_failures: int = 0


T = TypeVar("T", bound=LoopStats)


class FoldLoop(ABC, Generic[S, T]):
    """The loop and the log writer; a subclass provides ``step``, ``_write_group`` and
    ``_acknowledge`` (and may ``_while_waiting``)."""

    def __init__(self, stats: T, max_unlogged: int, log_every: float = 0.0) -> None:
        self.stats = stats
        #: a step's observer (the metrics): its fold and save seconds
        self.on_step: Callable[[T], None] | None = None
        #: a commit's observer (the metrics): its seconds
        self.on_logged: Callable[[T], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: segments sealed, not logged yet, oldest first (folding waits while
        #: ``max_unlogged`` of their deliveries wait)
        self._unlogged: deque[S] = deque()
        self._waiting = 0
        self._max_unlogged = max_unlogged
        self._log_every = log_every
        #: when the writer's last commit started (``time.monotonic``), and how many wait for
        #: the log meanwhile (the next commit is not put off then)
        self._last_commit = -float("inf")
        self._hurried = 0
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._writer_stop = threading.Event()
        #: the writer was still in a commit when the loop ended (PostgreSQL stuck): its
        #: connection is left to the exit
        self._writer_stuck = False

    # ------------------------------------------------------------------ to provide
    @abstractmethod
    def step(self) -> int:
        """Fold what the bus delivered, save, seal a segment; the events folded."""

    @abstractmethod
    def _write_group(self, group: list[S], *, retry: bool) -> list[S]:
        """Log ``group`` (the sealed segments, oldest first) in one commit; ``retry``: the
        last try failed and may have committed all the same: the segments the log holds
        already are ``_logged`` first, not written again. What it wrote."""

    @abstractmethod
    def _acknowledge(self, group: list[S]) -> None:
        """These logged segments' deliveries acknowledged on the bus."""

    def _while_waiting(self) -> None:
        """Called every 0.1 s while the fold waits for the log (leases to renew)."""

    @contextlib.contextmanager
    def _hurry(self) -> Iterator[None]:
        """While the block runs, the writer commits what is sealed without waiting for
        ``log_every`` (something waits for the log); to be entered holding ``_changed``."""
        self._hurried += 1
        self._changed.notify_all()
        try:
            yield
        finally:
            self._hurried -= 1

    # ------------------------------------------------------------------ the loop
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="nextbest-fold", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Step until stopped; a failed step is tried again after a pause doubling from
        0.05 s to 2 s. The log writer runs beside it, and logs what is sealed at the end."""
        self._writer_stop.clear()
        self._writer = threading.Thread(target=self._write_loop, name="nextbest-log", daemon=True)
        self._writer.start()
        pause = 0.05
        try:
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
        finally:
            self._writer_stop.set()  # it logs what is sealed (trying a while), then ends
            with self._changed:
                self._changed.notify_all()
            self._writer.join(timeout=30)
            self._writer_stuck = self._writer.is_alive()
            self._writer = None

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _log_here(self) -> None:
        """Without the writer thread, at the end of a step: log what is sealed (a failure
        keeps it for the next step)."""
        if self._writer is None:
            with contextlib.suppress(NextbestError):
                self._write_unlogged(retry=self.stats.log_error is not None)

    # ------------------------------------------------------------------ the log writer
    def _seal(self, segment: S) -> None:
        """Queue a segment for the writer."""
        with self._changed:
            self._unlogged.append(segment)
            self._waiting += len(segment.deliveries)
            self._changed.notify_all()

    def _wait_for_room(self) -> None:
        """Backpressure: while ``max_unlogged`` deliveries wait for the log, fold no more
        (the writer thread makes room; without it, the log is written here, raising its
        error if it fails)."""
        if self._writer is None:
            if self._waiting >= self._max_unlogged:
                self._write_unlogged(retry=self.stats.log_error is not None)
            return
        with self._changed:  # (the writer puts off no commit while half of it waits)
            while self._waiting >= self._max_unlogged and not self._stop.is_set():
                self._changed.wait(0.1)
                self._while_waiting()

    def _drain_log(self) -> None:
        """Until the event log holds every event folded (an erasure deletes them there):
        the writer thread's commits, hurried; without it, written here."""
        if self._writer is None:
            self._write_unlogged(retry=self.stats.log_error is not None)
            return
        with self._changed, self._hurry():
            while self._unlogged:
                if self._stop.is_set():
                    raise StoreError("stopping: an erasure waits for the event log")
                self._changed.wait(0.1)
                self._while_waiting()

    def _write_unlogged(self, *, retry: bool) -> None:
        """Log every sealed segment in one commit, then acknowledge their deliveries; an
        error raises, the segments stay sealed."""
        with self._changed:
            group = list(self._unlogged)
        if not group:
            return
        started = time.perf_counter()
        try:
            group = self._write_group(group, retry=retry)
        except NextbestError as exc:
            self.stats.log_failures += 1
            self.stats.log_error = exc.message
            raise
        self.stats.log_seconds = time.perf_counter() - started
        self.stats.log_error = None
        self._logged(group)
        if group and self.on_logged is not None:
            self.on_logged(self.stats)

    def _logged(self, group: list[S]) -> None:
        """These sealed segments (the oldest) are in the log: dequeued, acknowledged."""
        if not group:
            return
        with self._changed:
            for _ in group:
                self._waiting -= len(self._unlogged.popleft().deliveries)
            self._changed.notify_all()
        self.stats.segments_logged += len(group)
        self.stats.events_logged += sum(len(g.events) for g in group)
        self._acknowledge(group)

    def _put_off(self) -> None:
        """Holding ``_changed``: wait until ``log_every`` has passed since the last commit
        started, unless something waits for the log, half of ``max_unlogged`` waits or the
        writer stops."""
        while not self._writer_stop.is_set() and not self._hurried:
            left = self._last_commit + self._log_every - time.monotonic()
            if left <= 0 or self._waiting * 2 >= self._max_unlogged:
                return
            self._changed.wait(left)

    def _write_loop(self) -> None:
        pause = 0.05
        retry = False
        while True:
            with self._changed:
                while not self._unlogged and not self._writer_stop.is_set():
                    self._changed.wait(0.5)
                if not self._unlogged:
                    return
                self._put_off()
            self._last_commit = time.monotonic()
            try:
                self._write_unlogged(retry=retry)
            except NextbestError as exc:
                retry = True
                if self._writer_stop.is_set() and pause >= 1.0:
                    return  # stopping, and the log is away: the restart logs them
                log.error("event log write failed, retrying in %.2f s: %s", pause, exc.message)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
            else:
                retry = False
                pause = 0.05
