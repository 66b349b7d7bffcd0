"""The channel ports: a ``Transport`` delivers one outbox message to its destination and
says how it went (a ``Delivery``); a ``Gate`` may hold a destination back before an attempt.

``Gate`` is where circuit breakers and per-channel rate limits go (DESIGN.md: "outbound
channels ... with rate limits + circuit breakers"). ``Ungated`` is the only gate today: it
has neither, and says so; the sender asks a gate before every attempt and tells it every
outcome, so a gate with breakers and token buckets replaces it without touching the sender.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Protocol

from nextbest.store.port import OutboxMessage

__all__ = ["Delivery", "Gate", "Transport", "Ungated", "Verdict"]


class Verdict(enum.StrEnum):
    """What an attempt's outcome means for its message."""

    DELIVERED = "delivered"
    #: a failure that may pass (5xx, 408, 429, a timeout, no connection): try again later
    RETRY = "retry"
    #: a failure that will not pass by trying again (the receiver refused the request): dead
    DEAD = "dead"


class Delivery(NamedTuple):
    """One attempt's outcome: its verdict; ``detail`` for the operator ("HTTP 503", "timed
    out after 10 s"), never a secret or a URL; ``retry_after``: seconds the receiver asked
    to wait (a 429's or 503's ``Retry-After``), if it did."""

    verdict: Verdict
    detail: str
    retry_after: float | None = None


class Transport(Protocol):
    """Delivers messages to one destination (a configured webhook)."""

    def deliver(self, message: OutboxMessage, now: float) -> Delivery:
        """One attempt to deliver ``message``, signed at ``now``; never raises for what the
        network or the receiver does (that is the Delivery)."""
        ...

    def close(self) -> None: ...


class Gate(Protocol):
    """Asked before each attempt, told each outcome: circuit breakers and rate limits."""

    def admit(self, destination: str, now: float) -> float | None:
        """None: attempt now. A time: hold ``destination``'s message back until then (the
        message is handed back unattempted: ``Outbox.release``)."""
        ...

    def record(self, destination: str, delivery: Delivery, now: float) -> None:
        """An attempt to ``destination`` ended with ``delivery``."""
        ...


class Ungated:
    """No circuit breaker and no rate limit: every attempt is admitted, outcomes are not
    kept. The outbound channels' limits (a later issue) replace this with a real Gate."""

    def admit(self, destination: str, now: float) -> float | None:
        return None

    def record(self, destination: str, delivery: Delivery, now: float) -> None:
        return None
