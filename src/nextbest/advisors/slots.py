"""Slots: when a callback can be booked ("call me later", "pick a time").

A slot is ``slot_minutes`` of an advisor's working hours: each span of their day is cut into
slots from its start (09:00, 09:30, ... a slot that would run past the span's end is none),
in the advisor's own wall-clock time. Across a change of summer time the wall clock rules: a
start the clock skips (02:30 the night clocks go forward) is no slot, and a start the clock
shows twice (the night they go back) is one slot, at its first occurrence.

A slot is free while fewer than ``max_concurrent`` callbacks are booked with the advisor less
than a slot's length from its start (the store's rule when it books: no double booking). A
slot may be booked from ``lead_minutes`` after the request until ``horizon_days`` after it.
Slots of several experts come merged by start; at one start, the experts in the order the
booking would pick them (``expert_order``): expertise level, then language, then id.
"""

from __future__ import annotations

import bisect
import functools
import heapq
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta, tzinfo

import msgspec

from nextbest.advisors.board import AdvisorBoard
from nextbest.advisors.selection import speaks
from nextbest.catalog.compiled import Catalog, CompiledAdvisor
from nextbest.catalog.hours import Span
from nextbest.catalog.model import CallbackPolicy
from nextbest.errors import SlotTaken, ValidationError
from nextbest.types import Seconds, Timestamp

__all__ = [
    "DAY",
    "Slot",
    "advisor_slots",
    "bookable",
    "day_slots",
    "earliest_slot",
    "expert_order",
    "free_slots",
    "is_free",
    "local_label",
    "slot_at",
]

DAY: Seconds = 86_400.0
_EPOCH = datetime(1970, 1, 1)
_ONE_DAY = timedelta(days=1)


class Slot(msgspec.Struct, frozen=True, gc=False):
    """A free slot of one advisor: ``start`` (inclusive) to ``end`` (exclusive), epoch
    seconds."""

    start: Timestamp
    end: Timestamp
    advisor_id: str


@functools.lru_cache(maxsize=8192)
def day_slots(
    zone: tzinfo, day: date, spans: tuple[Span, ...], minutes: int
) -> tuple[tuple[Timestamp, Timestamp], ...]:
    """The slots of the local ``day`` in ``zone`` for working ``spans``, as (start, end) epoch
    seconds in order: a start the clock skips is left out, one it shows twice comes once."""
    length = minutes * 60.0
    midnight = datetime.combine(day, time())
    offset = zone.utcoffset(midnight)
    if offset is not None and offset == zone.utcoffset(midnight + _ONE_DAY):
        # the same offset at this midnight and the next: the clock does not change this day,
        # every wall time of it is there once, at one offset
        base = (midnight - _EPOCH).total_seconds() - offset.total_seconds()
        return tuple(
            (base + m * 60.0, base + m * 60.0 + length)
            for first, last in spans
            for m in range(first, last - minutes + 1, minutes)
        )
    out: list[tuple[Timestamp, Timestamp]] = []
    for first, last in spans:
        for minute in range(first, last - minutes + 1, minutes):
            wall = midnight + timedelta(minutes=minute)
            start = wall.replace(tzinfo=zone).timestamp()  # fold 0: the first occurrence
            if datetime.fromtimestamp(start, zone).replace(tzinfo=None) != wall:
                continue  # the clock skips this time (the change to summer time)
            out.append((start, start + length))
    return tuple(out)


def is_free(bookings: Sequence[Timestamp], start: Timestamp, length: Seconds, limit: int) -> bool:
    """Fewer than ``limit`` of the sorted ``bookings`` start less than ``length`` from
    ``start``."""
    low = bisect.bisect_right(bookings, start - length)
    high = bisect.bisect_left(bookings, start + length)
    return high - low < limit


def bookable(policy: CallbackPolicy, now: Timestamp) -> tuple[Timestamp, Timestamp]:
    """The window a slot may start in, for a request at ``now``: [lead, horizon)."""
    return now + policy.lead_minutes * 60.0, now + policy.horizon_days * DAY


def advisor_slots(
    advisor: CompiledAdvisor,
    bookings: Sequence[Timestamp],
    minutes: int,
    start: Timestamp,
    end: Timestamp,
) -> Iterator[Slot]:
    """The advisor's free slots starting in [``start``, ``end``), in order, lazily
    (``bookings``: the sorted starts of the slots booked with them)."""
    length = minutes * 60.0
    for s, e in _grid(advisor, minutes, start, end):
        if is_free(bookings, s, length, advisor.max_concurrent):
            yield Slot(s, e, advisor.id)


def _grid(
    advisor: CompiledAdvisor, minutes: int, start: Timestamp, end: Timestamp
) -> Iterator[tuple[Timestamp, Timestamp]]:
    """The advisor's slots, free or not, starting in [``start``, ``end``), in order."""
    day = datetime.fromtimestamp(start, advisor.zone).date()
    last = datetime.fromtimestamp(end, advisor.zone).date()
    while day <= last:
        slots = day_slots(advisor.zone, day, advisor.spans_on(day), minutes)
        for s, e in slots[bisect.bisect_left(slots, (start,)) :]:
            if s >= end:
                return
            yield s, e
        day += timedelta(days=1)


def expert_order(
    catalog: Catalog, topic: str, language: str | None = None
) -> list[CompiledAdvisor]:
    """The experts in ``topic`` in the order a booking picks among those free at one start:
    expertise level (highest first), language, id."""
    return sorted(
        catalog.experts.get(topic, ()),
        key=lambda a: (-a.levels[topic], 0 if speaks(a, language) else 1, a.id),
    )


def free_slots(
    catalog: Catalog,
    topic: str,
    board: AdvisorBoard,
    now: Timestamp,
    *,
    language: str | None = None,
    limit: int | None = None,
    distinct: bool = False,
) -> list[Slot]:
    """The free slots of the experts in ``topic`` a request at ``now`` may book, by start
    (at one start, in ``expert_order``), at most ``limit``; ``distinct``: one per start (the
    expert a booking would pick), as a customer picks a time."""
    order = expert_order(catalog, topic, language)
    start, end = bookable(catalog.callbacks, now)
    minutes = catalog.callbacks.slot_minutes
    if distinct:
        return _first_free_per_start(order, board, minutes, start, end, limit)
    rank = {a.id: i for i, a in enumerate(order)}
    streams = [advisor_slots(a, board.bookings(a.id), minutes, start, end) for a in order]
    out: list[Slot] = []
    for slot in heapq.merge(*streams, key=lambda s: (s.start, rank[s.advisor_id])):
        out.append(slot)
        if limit is not None and len(out) >= limit:
            break
    return out


def _first_free_per_start(
    order: list[CompiledAdvisor],
    board: AdvisorBoard,
    minutes: int,
    start: Timestamp,
    end: Timestamp,
    limit: int | None,
) -> list[Slot]:
    """At each start, in order, the first expert of ``order`` free then: the experts with
    the same hours (``hours_group``) share one walk of their slots, and each start asks the
    experts in turn only until one is free."""
    walkers: dict[int, CompiledAdvisor] = {}  # one expert per hours
    for a in order:
        walkers.setdefault(a.hours_group, a)
    streams = [_walk(a, minutes, start, end) for a in walkers.values()]
    length = minutes * 60.0
    out: list[Slot] = []
    at: Timestamp | None = None
    here: set[int] = set()
    for s, group in heapq.merge(*streams):
        if s != at:
            if at is not None and (slot := _first_free(order, here, board, at, length)):
                out.append(slot)
                if limit is not None and len(out) >= limit:
                    return out
            at, here = s, set()
        here.add(group)
    if at is not None and (slot := _first_free(order, here, board, at, length)):
        out.append(slot)
    return out


def _walk(
    advisor: CompiledAdvisor, minutes: int, start: Timestamp, end: Timestamp
) -> Iterator[tuple[Timestamp, int]]:
    """The starts of the slots of ``advisor``'s hours, with the hours' group."""
    group = advisor.hours_group
    for s, _ in _grid(advisor, minutes, start, end):
        yield s, group


def _first_free(
    order: list[CompiledAdvisor],
    groups: set[int],
    board: AdvisorBoard,
    at: Timestamp,
    length: float,
) -> Slot | None:
    """The first expert of ``order`` whose hours (``groups``) have a slot at ``at`` and who
    is free then."""
    for a in order:
        if a.hours_group in groups and is_free(board.bookings(a.id), at, length, a.max_concurrent):
            return Slot(at, at + length, a.id)
    return None


def earliest_slot(
    catalog: Catalog,
    topic: str,
    board: AdvisorBoard,
    now: Timestamp,
    *,
    language: str | None = None,
) -> Slot | None:
    """The earliest free slot of any expert in ``topic`` a request at ``now`` may book (at
    that start, the expert ``expert_order`` puts first)."""
    found = free_slots(catalog, topic, board, now, language=language, limit=1, distinct=True)
    return found[0] if found else None


def slot_at(
    catalog: Catalog,
    topic: str,
    board: AdvisorBoard,
    when: Timestamp,
    now: Timestamp,
    *,
    language: str | None = None,
    path: str = "$.time",
) -> Slot:
    """The slot starting at ``when`` a request at ``now`` books: the first expert in
    ``expert_order`` with a free slot starting then. ValidationError (at ``path``) when no
    expert's slot starts then or it is outside the bookable window; SlotTaken when every
    expert's slot then is booked to capacity."""
    policy = catalog.callbacks
    start, end = bookable(policy, now)
    if when < start:
        raise ValidationError(
            f"a callback can be booked from {policy.lead_minutes} minutes ahead: the time is "
            "too soon",
            path,
        )
    if when >= end:
        raise ValidationError(
            f"a callback can be booked at most {policy.horizon_days} days ahead", path
        )
    length = policy.slot_minutes * 60.0
    starting: list[tuple[CompiledAdvisor, Timestamp]] = []
    for a in expert_order(catalog, topic, language):
        day = datetime.fromtimestamp(when, a.zone).date()
        for s, e in day_slots(a.zone, day, a.spans_on(day), policy.slot_minutes):
            if s == when:
                starting.append((a, e))
    if not starting:
        raise ValidationError(
            f"no expert in {topic} has a slot starting then: pick one of the free times", path
        )
    for a, e in starting:
        if is_free(board.bookings(a.id), when, length, a.max_concurrent):
            return Slot(when, e, a.id)
    raise SlotTaken(
        f"every expert in {topic} is booked at {local_label(when, starting[0][0].zone)}: "
        "pick another time"
    )


def local_label(when: Timestamp, zone: tzinfo) -> str:
    """``when`` as a person reads it in ``zone``: ``Tue 31 Mar 14:30 CEST``."""
    return datetime.fromtimestamp(when, zone).strftime("%a %d %b %H:%M %Z")
