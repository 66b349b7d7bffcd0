"""Time as an argument: a Clock protocol, the system clock, a settable test clock and the
event-time clock (a watermark) a server runs on for replays, backfills and simulations.

    wall    ``SystemClock``: the server's own time (production)
    event   ``EventClock``: the latest accepted event timestamp, never moving backwards

Which one a server runs on is the composition root's choice (``bootstrap.make_clock``, from
``Settings.clock``); the core only ever sees the ``now`` it is given.
"""

from __future__ import annotations

import enum
import time
from typing import Protocol

from nextbest.types import Timestamp

__all__ = ["Clock", "ClockKind", "EventClock", "FixedClock", "SystemClock"]


class ClockKind(enum.StrEnum):
    """What a server's ``now`` is: its wall clock, or the time of the events it accepted."""

    WALL = "wall"
    EVENT = "event"


class Clock(Protocol):
    def now(self) -> Timestamp: ...


class SystemClock:
    """Wall-clock time, UTC epoch seconds."""

    def now(self) -> Timestamp:
        return time.time()


class FixedClock:
    """A clock that only moves when told to: for tests and replays."""

    def __init__(self, start: Timestamp) -> None:
        self._now = start

    def now(self) -> Timestamp:
        return self._now

    def set(self, when: Timestamp) -> None:
        self._now = when

    def advance(self, seconds: float) -> None:
        self._now += seconds


class EventClock:
    """Event time: ``now`` is the watermark, the latest timestamp ``observe`` was given; an
    older time never moves it back. Until the first event, ``now`` reads ``wall``.

    ``wall`` stays the clock for what must follow real time whatever the events say: which
    timestamps are too far in the future to accept, and when a customer token expires.
    ``observe`` is called by the engine under its write lock; ``now`` is a plain read.
    """

    def __init__(self, wall: Clock | None = None) -> None:
        self.wall: Clock = wall or SystemClock()
        self._mark: Timestamp | None = None

    @property
    def watermark(self) -> Timestamp | None:
        """The latest accepted event time (None before the first event)."""
        return self._mark

    def now(self) -> Timestamp:
        mark = self._mark
        return self.wall.now() if mark is None else mark

    def observe(self, when: Timestamp) -> None:
        """Move the watermark to ``when`` if that is later."""
        if self._mark is None or when > self._mark:
            self._mark = when
