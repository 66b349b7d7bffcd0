"""Reading a schedule bound (``start``, ``end``, ``valid_from``, ``valid_until``).

A date alone is midnight UTC at the start of that day; a date-time without an offset is UTC.
A start is inclusive and an end exclusive: live while ``start <= now < end``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

__all__ = ["parse_when"]


def parse_when(text: str) -> float:
    """ISO date or date-time to epoch seconds; naive times are UTC."""
    try:
        if len(text) <= 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO date or date-time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
