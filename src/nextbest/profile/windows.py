"""Exact sliding time windows over event times.

A window keeps the sorted times of hits no older than the horizon (90 days) measured from
the newest hit, so a count over the last N days at any ``now`` at or after the newest hit is
exact, not an approximation from buckets. Counting excludes hits after ``now``.
"""

from __future__ import annotations

import bisect

__all__ = ["DAY", "HORIZON", "WINDOW_DAYS", "add_hit", "count_between", "count_in_days"]

DAY = 86_400.0
WINDOW_DAYS: tuple[int, ...] = (1, 7, 14, 30, 90)
HORIZON = max(WINDOW_DAYS) * DAY


def add_hit(hits: list[float], when: float, horizon: float = HORIZON) -> None:
    """Insert ``when`` in order and drop hits older than ``horizon`` before the newest."""
    if hits and when < hits[-1] - horizon:
        return  # already outside every window, now and later
    bisect.insort(hits, when)
    cutoff = hits[-1] - horizon
    if hits[0] < cutoff:
        del hits[: bisect.bisect_left(hits, cutoff)]


def count_between(hits: list[float], start: float, end: float) -> int:
    """Hits with ``start < t <= end``."""
    return bisect.bisect_right(hits, end) - bisect.bisect_right(hits, start)


def count_in_days(hits: list[float], days: float, now: float) -> int:
    """Hits in the last ``days`` days up to ``now`` (inclusive)."""
    return count_between(hits, now - days * DAY, now)
