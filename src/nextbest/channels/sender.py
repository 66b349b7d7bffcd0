"""The outbox sender: claims due messages, delivers each through its destination's
transport, and records the outcome: delivered, pending again (a retry, when ``RetryPolicy``
says), or dead.

At-least-once: a message is marked delivered only after its receiver answered 2xx, so a
sender that dies between the answer and the mark leaves the message delivering; once its
lease ends another sender (or the same one restarted) claims it and sends it again, with the
same ``Idempotency-Key``. A receiver that honors the key acts once; it may see a message
twice at most once per lease that ended under a sender that died.

``start()`` runs the loop in a thread of its own (``nextbest-outbox``); ``stop()`` ends it:
the attempt under way finishes (at most the webhook's timeout), the messages claimed but not
attempted are handed back (``Outbox.release``: due now, their attempt not counted), the
transports are closed. ``send_due()`` is one round of the loop, for a caller that drives it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from typing import NamedTuple

from nextbest.channels.port import Delivery, Gate, Transport, Ungated, Verdict
from nextbest.channels.retry import RetryPolicy
from nextbest.clock import Clock
from nextbest.errors import ConfigError, NextbestError, StoreError
from nextbest.store.port import Outbox, OutboxMessage

__all__ = ["OutboxSender", "SendReport"]

log = logging.getLogger("nextbest.outbox")


class SendReport(NamedTuple):
    """One round: messages claimed, delivered, to be retried, dead, handed back."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0


class OutboxSender:
    """Delivers ``outbox``'s messages through ``transports`` (destination name -> transport).

    ``clock``: now, for claims, leases, signatures and retries; ``rng``: the jitter (pass a
    seeded ``random.Random`` for a reproducible schedule); ``gate``: circuit breakers and
    rate limits (``Ungated``: none yet). ``batch`` messages are claimed at a time under a
    ``lease_seconds`` lease, which must outlast the batch's attempts (``batch`` times the
    longest timeout): a lease that ends while its sender still works lets another sender send
    the same message. ``poll_seconds``: how long an idle loop waits before it looks again
    (``wake()`` cuts it short)."""

    def __init__(
        self,
        outbox: Outbox,
        transports: Mapping[str, Transport],
        *,
        clock: Clock,
        rng: random.Random,
        policy: RetryPolicy | None = None,
        gate: Gate | None = None,
        batch: int = 16,
        lease_seconds: float = 300.0,
        poll_seconds: float = 1.0,
        timeouts: Mapping[str, float] | None = None,
    ) -> None:
        if batch < 1 or poll_seconds <= 0:
            raise ConfigError("the outbox sender needs batch >= 1 and poll_seconds > 0")
        longest = max((timeouts or {}).values(), default=0.0)
        if lease_seconds <= batch * longest:
            raise ConfigError(
                f"the outbox lease ({lease_seconds:g} s) must outlast a batch of {batch} "
                f"attempts of up to {longest:g} s each"
            )
        self.outbox = outbox
        self.transports = dict(transports)
        self.clock = clock
        self.rng = rng
        self.policy = policy or RetryPolicy()
        self.gate: Gate = gate or Ungated()
        self.batch = batch
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: what ended the loop, if it was not ``stop()``; ``stop()`` raises it
        self.failure: BaseException | None = None
        #: the last store error the loop met (it waits a poll and tries again), or None
        self.store_error: str | None = None

    # ---------------------------------------------------------------- one round
    def send_due(self) -> SendReport:
        """Claim up to ``batch`` due messages and attempt each (until ``stop()``)."""
        claimed = self.outbox.claim_due(self.clock.now(), self.batch, self.lease_seconds)
        delivered = retried = dead = released = 0
        for n, message in enumerate(claimed):
            if self._stopping.is_set():  # hand the rest back: due now, unattempted
                now = self.clock.now()
                released += sum(self.outbox.release(m.id, m.attempts, now) for m in claimed[n:])
                break
            verdict = self._attempt(message)
            if verdict is Verdict.DELIVERED:
                delivered += 1
            elif verdict is Verdict.RETRY:
                retried += 1
            elif verdict is Verdict.DEAD:
                dead += 1
            else:
                released += 1
        return SendReport(len(claimed), delivered, retried, dead, released)

    def _attempt(self, message: OutboxMessage) -> Verdict | None:
        """Attempt ``message`` and record the outcome; None: held back by the gate."""
        outbox, now = self.outbox, self.clock.now()
        transport = self.transports.get(message.destination)
        if transport is None:
            error = f"no webhook named {message.destination!r} is configured"
            outbox.mark_failed(message.id, message.attempts, error, None)
            log.error("outbox #%d (%s) dead: %s", message.id, message.channel, error)
            return Verdict.DEAD
        held_until = self.gate.admit(message.destination, now)
        if held_until is not None:
            outbox.release(message.id, message.attempts, held_until)
            return None
        delivery = transport.deliver(message, now)
        done = self.clock.now()
        self.gate.record(message.destination, delivery, done)
        return self._record(message, delivery, done)

    def _record(self, message: OutboxMessage, delivery: Delivery, now: float) -> Verdict:
        outbox, what = self.outbox, f"outbox #{message.id} ({message.channel})"
        if delivery.verdict is Verdict.DELIVERED:
            outbox.mark_delivered(message.id, now)
            log.info("%s delivered to %s, attempt %d", what, message.destination, message.attempts)
            return Verdict.DELIVERED
        retry_at = None
        if delivery.verdict is Verdict.RETRY:
            retry_at = self.policy.next_attempt_at(
                message.attempts, now, self.rng, delivery.retry_after or 0.0
            )
        if retry_at is None:
            why = delivery.detail
            if delivery.verdict is Verdict.RETRY:
                why += f" (attempt {message.attempts} of {self.policy.max_attempts}: given up)"
            outbox.mark_failed(message.id, message.attempts, why, None)
            log.error("%s to %s dead: %s", what, message.destination, why)
            return Verdict.DEAD
        outbox.mark_failed(message.id, message.attempts, delivery.detail, retry_at)
        log.warning(
            "%s to %s failed, attempt %d: %s; retry in %.1f s",
            what, message.destination, message.attempts, delivery.detail, retry_at - now,
        )  # fmt: skip
        return Verdict.RETRY

    # ---------------------------------------------------------------- the loop
    def start(self) -> None:
        """Run the loop in a thread of its own, until ``stop()``."""
        if self._thread is not None:
            raise RuntimeError("the outbox sender was started already")
        self._thread = threading.Thread(target=self._run, name="nextbest-outbox", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look for due messages now (a message was just enqueued)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """``stop()`` was called: the round under way hands back what it did not attempt."""
        return self._stopping.is_set()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    report = self.send_due()
                    self.store_error = None
                except StoreError as exc:  # the store is away: wait, then try again
                    if self.store_error != exc.message:
                        log.error("outbox: the store failed, retrying: %s", exc.message)
                    self.store_error = exc.message
                    report = SendReport()
                if report.claimed < self.batch or report.released:
                    self._wake.wait(self.poll_seconds)
                    self._wake.clear()
        except BaseException as exc:  # not a store error: a bug; ``stop()`` raises it
            self.failure = exc
            log.exception("outbox sender stopped by an error")

    def stop(self, timeout: float | None = None) -> None:
        """End the loop (waiting up to ``timeout`` for the attempt under way) and close the
        transports; raises what ended the loop if it was not this. A second call does
        nothing more."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"the outbox sender did not stop within {timeout} s")
        transports, self.transports = self.transports, {}
        for transport in transports.values():
            transport.close()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            if isinstance(failure, NextbestError):
                raise failure
            raise RuntimeError("the outbox sender failed") from failure
