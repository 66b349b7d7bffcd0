"""Time-decayed interest: a score that halves every ``half_life`` seconds.

score(t) = sum_i w_i * 2 ** (-(t - t_i) / half_life). It is kept as (score, score_at) and
updated incrementally; events that arrive out of order are decayed to ``score_at`` first.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "REASON_DAYS",
    "Trend",
    "add_to_score",
    "decayed",
    "trend_of",
    "viewed",
    "viewed_text",
]

#: the windows (days) a reason cites: the shortest with hits
REASON_DAYS: tuple[int, ...] = (14, 30, 90)


class Trend(enum.StrEnum):
    NEW = "new"
    RISING = "rising"
    STEADY = "steady"
    FALLING = "falling"
    NONE = "none"


def decayed(score: float, score_at: float, now: float, half_life: float) -> float:
    """The score as of ``now`` (no growth backwards: ``now`` before ``score_at`` keeps it)."""
    if now <= score_at or score == 0.0:
        return score
    return score * 2.0 ** (-(now - score_at) / half_life)  # type: ignore[no-any-return]


def add_to_score(
    score: float, score_at: float, when: float, weight: float, half_life: float
) -> tuple[float, float]:
    """Add a hit of ``weight`` at ``when``; returns the new (score, score_at)."""
    if when >= score_at:
        return decayed(score, score_at, when, half_life) + weight, when
    return score + weight * 2.0 ** (-(score_at - when) / half_life), score_at


def trend_of(last_7d: int, previous_7d: int) -> Trend:
    """Compare the last 7 days with the 7 days before them."""
    if last_7d == 0 and previous_7d == 0:
        return Trend.NONE
    if previous_7d == 0:
        return Trend.NEW
    ratio = last_7d / previous_7d
    if ratio >= 1.5:
        return Trend.RISING
    if ratio <= 0.5:
        return Trend.FALLING
    return Trend.STEADY


def viewed(counts: Mapping[int, int]) -> tuple[int, int] | None:
    """What a reason says of the hits: (days, hits) of the shortest of ``REASON_DAYS`` with a
    hit (``counts``, by days); None without a hit in any."""
    for days in REASON_DAYS:
        n = counts.get(days, 0)
        if n:
            return days, n
    return None


def viewed_text(name: str, counts: Mapping[int, int]) -> str | None:
    """The reason a customer reads, "viewed mortgage pages 5 times in 14 days", from the hits
    in each of ``REASON_DAYS`` (``counts``, by days); None without a hit in any."""
    seen = viewed(counts)
    if seen is None:
        return None
    days, n = seen
    times = "once" if n == 1 else f"{n} times"
    return f"viewed {name} pages {times} in {days} days"
