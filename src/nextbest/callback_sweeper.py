"""The callback sweeper: the loop that acts on callback timers (an offer that lapsed goes on
to a colleague, a booked slot that came is offered, a "call me now" past its SLA moves to a
slot) every ``interval`` seconds, beside the server's requests (``api.app.create_app
(background=...)``, as ``nextbest serve`` runs it).

As it starts it appends again the steps of the callbacks in flight (``CallbackDesk.relog``:
what a crash between a write and its append left out), then sweeps at the engine's clock:
the wall clock, or on event time the watermark, so that a timer fires once the events' time
passed it. ``stop()`` ends the loop after the sweep under way.

A sweep that fails (the store away, a callback refused) is logged and tried again at the
next round; an error that is not nextbest's (a bug) ends the loop and ``stop()`` raises it.

**Several workers, one sweeper.** Given a ``lease`` (``store.port.Lease``: the scaled API
workers share one on PostgreSQL), a round sweeps only while this sweeper holds it (taken or
renewed at each round): one worker acts on the timers, the others stand by and one takes
over within the lease's length when the holder dies. The relog runs when the lease is first
held. Without a lease (the embedded server) every round sweeps.
"""

from __future__ import annotations

import logging
import threading

from nextbest.callbacks import CallbackDesk
from nextbest.errors import ConfigError, NextbestError, StoreError
from nextbest.store.port import Lease

__all__ = ["CallbackSweeper"]

log = logging.getLogger("nextbest.callbacks")


class CallbackSweeper:
    """Sweeps ``desk`` every ``interval`` seconds in a thread of its own."""

    def __init__(
        self, desk: CallbackDesk, interval: float = 1.0, *, lease: Lease | None = None
    ) -> None:
        if interval <= 0:
            raise ConfigError("the callback sweeper needs an interval above 0 seconds")
        self.desk = desk
        self.interval = interval
        self.lease = lease
        #: rounds this sweeper did not sweep: another holds the lease
        self.stood_by = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: what ended the loop, if not ``stop()``
        self.failure: BaseException | None = None
        #: the last store failure's message (None: the last sweep worked)
        self.store_error: str | None = None
        self.sweeps = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the callback sweeper was started already")
        self._thread = threading.Thread(target=self._run, name="nextbest-callbacks", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            relogged = False
            while not self._stopping.is_set():
                try:
                    if not self._held():
                        self.stood_by += 1
                        relogged = False  # held again later: relog then
                        self._stopping.wait(self.interval)
                        continue
                    if not relogged:
                        self.desk.relog()
                        relogged = True
                    report = self.desk.sweep()
                    self.sweeps += 1
                    self.store_error = None
                    if report.moved:
                        log.info(
                            "callbacks: %d moved by their timers %s", report.moved, report.timers
                        )
                except StoreError as exc:
                    if self.store_error != exc.message:
                        log.error("callbacks: the store failed, retrying: %s", exc.message)
                    self.store_error = exc.message
                except NextbestError as exc:  # one callback's trouble: the rest go on
                    log.error("callbacks: a sweep failed, retrying: %s", exc.message)
                self._stopping.wait(self.interval)
        except BaseException as exc:  # a bug: ``stop()`` raises it
            self.failure = exc
            log.exception("callback sweeper stopped by an error")

    def _held(self) -> bool:
        """This sweeper may sweep this round (no lease, or it holds it)."""
        return self.lease is None or self.lease.hold()

    def stop(self, timeout: float | None = None) -> None:
        """End the loop (after the sweep under way), hand the lease back; raises what ended
        it if not this."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"the callback sweeper did not stop within {timeout} s")
        if self.lease is not None:
            try:
                self.lease.release()
            except StoreError as exc:  # it runs out by itself
                log.warning("callbacks: the sweeper's lease not handed back: %s", exc.message)
        if self.failure is not None:
            failure, self.failure = self.failure, None
            if isinstance(failure, NextbestError):
                raise failure
            raise RuntimeError("the callback sweeper failed") from failure
