"""Working hours as the catalog writes them (``"09:00-17:00"``) and as the core reads them:
spans of minutes since local midnight, ``(540, 1020)``.

A span's start is inclusive and its end exclusive; ``24:00`` ends the day. A day's spans are
sorted and may not overlap (``09:00-12:00`` and ``11:00-13:00`` is a mistake, not a longer
day). Pure: the checks return reasons, ``catalog.compile`` places them in the files.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import date

__all__ = ["DAY_MINUTES", "Span", "day_spans", "parse_day", "parse_span", "span_text"]

#: (start, end) in minutes since local midnight: start inclusive, end exclusive
Span = tuple[int, int]
DAY_MINUTES = 24 * 60

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_EXAMPLE = 'write hours as "09:00-17:00" (start-end, 24-hour clock)'


def parse_span(text: object) -> Span:
    """``"09:00-17:00"`` to ``(540, 1020)``; ValueError with the reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is no time range: {_EXAMPLE}")
    match = _SPAN.match(text)
    if match is None:
        raise ValueError(f"{text!r} is no time range: {_EXAMPLE}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r} names a time that does not exist (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start >= end:
        raise ValueError(
            f"{text!r} ends before it starts: a range is within one day (split a night "
            'shift in two: "22:00-24:00" and the next day\'s "00:00-06:00")'
        )
    return start, end


def parse_day(texts: Sequence[object]) -> tuple[tuple[Span, ...], list[tuple[int, str]]]:
    """One day's ranges as sorted spans, and (index, reason) for each range that is wrong
    or overlaps an earlier one."""
    spans: list[tuple[Span, int]] = []
    problems: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        try:
            spans.append((parse_span(text), i))
        except ValueError as exc:
            problems.append((i, str(exc)))
    spans.sort()
    for (a, _), (b, j) in itertools.pairwise(spans):
        if b[0] < a[1]:
            problems.append((j, f"{texts[j]!r} overlaps {span_text(a)} on the same day"))
    return tuple(s for s, _ in spans), problems


def day_spans(
    day: date,
    weekly: Sequence[tuple[Span, ...]],
    exceptions: dict[date, tuple[Span, ...]],
    holidays: frozenset[date],
) -> tuple[Span, ...]:
    """The spans of a local ``day``: none on a holiday, its exception if it has one, else its
    weekday's (``weekly[0]`` is Monday)."""
    if day in holidays:
        return ()
    found = exceptions.get(day)
    return found if found is not None else weekly[day.weekday()]


def span_text(span: Span) -> str:
    """``(540, 1020)`` as ``"09:00-17:00"``."""
    (h1, m1), (h2, m2) = divmod(span[0], 60), divmod(span[1], 60)
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"
