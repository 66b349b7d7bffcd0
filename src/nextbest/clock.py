"""Time as an argument: a Clock protocol, the system clock and a settable test clock."""

from __future__ import annotations

import time
from typing import Protocol

from nextbest.types import Timestamp

__all__ = ["Clock", "FixedClock", "SystemClock"]


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
