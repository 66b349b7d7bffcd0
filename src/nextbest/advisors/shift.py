"""On shift: whether an advisor's working hours hold at a moment, in their own time zone.

A moment is an epoch ``Timestamp``; an advisor's hours are wall-clock spans of their local
day (``catalog.hours``). ``LocalClock`` turns one moment into each time zone's local date and
minute once (a decision looks at many advisors in a few zones), so asking who is on shift
costs a dictionary read per advisor.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo

from nextbest.catalog.compiled import CompiledAdvisor
from nextbest.types import Timestamp

__all__ = ["LocalClock", "on_shift"]


class LocalClock:
    """One moment, ``now``, as the local (date, minute of the day) of each time zone asked."""

    __slots__ = ("_seen", "now")

    def __init__(self, now: Timestamp) -> None:
        self.now = now
        self._seen: dict[tzinfo, tuple[date, int]] = {}

    def local(self, zone: tzinfo) -> tuple[date, int]:
        """``now``'s local date in ``zone`` and its minute since local midnight."""
        hit = self._seen.get(zone)
        if hit is None:
            moment = datetime.fromtimestamp(self.now, zone)
            hit = self._seen[zone] = (moment.date(), moment.hour * 60 + moment.minute)
        return hit


def on_shift(advisor: CompiledAdvisor, clock: LocalClock) -> bool:
    """The advisor's working hours hold at ``clock.now`` (a holiday or a day off: never)."""
    day, minute = clock.local(advisor.zone)
    return any(start <= minute < end for start, end in advisor.spans_on(day))
