"""Free slots: working hours minus bookings, per advisor and across experts, in each
advisor's own time zone, through changes to and from summer time in both of the bank's zones;
the lead time and the horizon; and a property test against a minute-by-minute scan."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.advisors.board import AdvisorBoard
from nextbest.advisors.slots import (
    advisor_slots,
    day_slots,
    earliest_slot,
    free_slots,
    local_label,
    slot_at,
)
from nextbest.catalog.compiled import Catalog
from nextbest.catalog.hours import span_text
from nextbest.errors import SlotTaken, ValidationError
from tests.unit.advisor_bank import CPH, LDN, advisor, at, bank

EMPTY = AdvisorBoard()
NIGHTS = {d: ["00:00-06:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def walls(zone: str, day: date, spans: tuple[tuple[int, int], ...] = ((0, 360),)) -> list[str]:
    """The local start times of a day's 30-minute slots, with their UTC offsets."""
    tz = ZoneInfo(zone)
    return [
        datetime.fromtimestamp(s, tz).strftime("%H:%M%z") for s, _ in day_slots(tz, day, spans, 30)
    ]


# ------------------------------------------------------------------ summer time


def test_copenhagen_spring_forward_has_no_slot_the_clock_skips() -> None:
    starts = walls(CPH, date(2026, 3, 29))  # 02:00 CET -> 03:00 CEST
    assert starts == [
        "00:00+0100",
        "00:30+0100",
        "01:00+0100",
        "01:30+0100",
        "03:00+0200",
        "03:30+0200",
        "04:00+0200",
        "04:30+0200",
        "05:00+0200",
        "05:30+0200",
    ]
    assert not any(s.startswith("02:30") for s in starts)


def test_copenhagen_fall_back_does_not_double_a_slot() -> None:
    starts = walls(CPH, date(2026, 10, 25))  # 03:00 CEST -> 02:00 CET: 02:xx happens twice
    assert len(starts) == 12
    assert len({s[:5] for s in starts}) == 12  # each wall time once
    assert "02:30+0200" in starts  # at its first occurrence
    assert "02:30+0100" not in starts


def test_london_spring_forward_and_fall_back() -> None:
    spring = walls(LDN, date(2026, 3, 29))  # 01:00 GMT -> 02:00 BST
    assert [s[:5] for s in spring] == [
        "00:00",
        "00:30",
        "02:00",
        "02:30",
        "03:00",
        "03:30",
        "04:00",
        "04:30",
        "05:00",
        "05:30",
    ]
    autumn = walls(LDN, date(2026, 10, 25))  # 02:00 BST -> 01:00 GMT: 01:xx happens twice
    assert len(autumn) == 12
    assert [s for s in autumn if s.startswith("01:")] == ["01:00+0100", "01:30+0100"]


def test_every_slot_lasts_its_length_in_real_time_across_the_change() -> None:
    tz = ZoneInfo(CPH)
    for day in (date(2026, 3, 29), date(2026, 10, 25)):
        slots = day_slots(tz, day, ((0, 360),), 30)
        assert all(e - s == 1800.0 for s, e in slots)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(slots))


def test_office_hours_stay_nine_to_five_on_the_wall_clock_across_the_change() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5})], callbacks={"lead_minutes": 0})
    friday = free_slots(catalog, "mortgage", EMPTY, at("2026-03-27T08:00:00+01:00"), limit=1)
    monday = free_slots(catalog, "mortgage", EMPTY, at("2026-03-30T08:00:00+02:00"), limit=1)
    assert friday[0].start == at("2026-03-27T08:00:00Z")  # 09:00 CET
    assert monday[0].start == at("2026-03-30T07:00:00Z")  # 09:00 CEST
    assert local_label(monday[0].start, ZoneInfo(CPH)) == "Mon 30 Mar 09:00 CEST"


def test_an_advisor_on_nights_across_the_switch() -> None:
    catalog = bank(
        [advisor("nina", {"mortgage": 3}, weekly=NIGHTS)],
        callbacks={"lead_minutes": 0, "horizon_days": 1},
    )
    found = free_slots(catalog, "mortgage", EMPTY, at("2026-03-29T00:00:00+01:00"))
    # the short night's 10, then Monday's first two (a day from 00:00 CET ends 01:00 CEST)
    assert len(found) == 10 + 2
    labels = [local_label(s.start, ZoneInfo(CPH)) for s in found]
    assert "Sun 29 Mar 02:30 CET" not in labels
    assert "Sun 29 Mar 02:30 CEST" not in labels


# ------------------------------------------------------------------ bookings, lead, horizon


TUESDAY_0805 = at("2026-03-24T08:05:00+01:00")


def test_a_booked_slot_is_free_until_capacity_is_reached() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5}, max_concurrent=2)])
    ten = at("2026-03-24T10:00:00+01:00")
    once = AdvisorBoard(booked={"anna": (ten,)})
    twice = AdvisorBoard(booked={"anna": (ten, ten)})
    assert ten in [s.start for s in free_slots(catalog, "mortgage", once, TUESDAY_0805)]
    starts = [s.start for s in free_slots(catalog, "mortgage", twice, TUESDAY_0805, limit=4)]
    assert ten not in starts
    assert starts[:3] == [ten - 3600, ten - 1800, ten + 1800]


def test_a_booking_off_the_grid_takes_both_slots_it_overlaps() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5})])
    board = AdvisorBoard(booked={"anna": (at("2026-03-24T10:15:00+01:00"),)})
    starts = {s.start for s in free_slots(catalog, "mortgage", board, TUESDAY_0805, limit=6)}
    assert at("2026-03-24T10:00:00+01:00") not in starts
    assert at("2026-03-24T10:30:00+01:00") not in starts
    assert at("2026-03-24T11:00:00+01:00") in starts


@pytest.mark.parametrize(
    ("lead", "first"),
    [(0, "2026-03-24T10:30:00+01:00"), (15, "2026-03-24T10:30:00+01:00"), (30, "11:00")],
)
def test_slots_start_after_the_lead_time(lead: int, first: str) -> None:
    catalog = bank([advisor("anna", {"mortgage": 5})], callbacks={"lead_minutes": lead})
    now = at("2026-03-24T10:05:00+01:00")
    found = earliest_slot(catalog, "mortgage", EMPTY, now)
    expected = at(first) if "T" in first else at(f"2026-03-24T{first}:00+01:00")
    assert found is not None
    assert found.start == expected


def test_no_slot_beyond_the_horizon() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5})], callbacks={"horizon_days": 2})
    found = free_slots(catalog, "mortgage", EMPTY, TUESDAY_0805)
    assert found
    assert max(s.start for s in found) < TUESDAY_0805 + 2 * 86_400
    assert len(found) == 16 + 16  # Tuesday from 09:00 and Wednesday; not Thursday 08:05


def test_holidays_and_exceptions_have_no_slots() -> None:
    catalog = bank(
        [advisor("anna", {"mortgage": 5}, exceptions={"2026-03-25": []})],
        callbacks={"holidays": ["2026-03-26"]},
    )
    days = {
        datetime.fromtimestamp(s.start, ZoneInfo(CPH)).date()
        for s in free_slots(catalog, "mortgage", EMPTY, TUESDAY_0805)
    }
    assert date(2026, 3, 24) in days
    assert date(2026, 3, 25) not in days
    assert date(2026, 3, 26) not in days
    assert date(2026, 3, 27) in days


def test_the_earliest_slot_for_a_topic_across_experts_and_time_zones() -> None:
    catalog = bank(
        [advisor("anna", {"mortgage": 5}), advisor("james", {"mortgage": 3}, zone=LDN)],
        callbacks={"lead_minutes": 15},
    )
    # 17:10 in Copenhagen, 16:10 in London: only James has time today
    found = earliest_slot(catalog, "mortgage", EMPTY, at("2026-03-24T17:10:00+01:00"))
    assert found is not None
    assert (found.advisor_id, found.start) == ("james", at("2026-03-24T16:30:00+00:00"))
    # in the morning both have 10:00 their time, but Copenhagen's comes an hour earlier
    found = earliest_slot(catalog, "mortgage", EMPTY, at("2026-03-24T09:50:00+01:00"))
    assert found is not None
    assert found.advisor_id == "anna"


def test_distinct_starts_take_the_expert_a_booking_would_pick() -> None:
    catalog = bank([advisor("carl", {"mortgage": 3}), advisor("anna", {"mortgage": 5})])
    every = free_slots(catalog, "mortgage", EMPTY, TUESDAY_0805, limit=4)
    assert [s.advisor_id for s in every] == ["anna", "carl", "anna", "carl"]
    one_each = free_slots(catalog, "mortgage", EMPTY, TUESDAY_0805, limit=3, distinct=True)
    assert [s.advisor_id for s in one_each] == ["anna", "anna", "anna"]
    assert len({s.start for s in one_each}) == 3
    booked = AdvisorBoard(booked={"anna": (one_each[0].start,)})
    first = free_slots(catalog, "mortgage", booked, TUESDAY_0805, limit=1, distinct=True)
    assert (first[0].advisor_id, first[0].start) == ("carl", one_each[0].start)


def test_slot_at_books_a_start_or_says_why_not() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5}), advisor("carl", {"mortgage": 3})])
    ten = at("2026-03-24T10:00:00+01:00")
    assert slot_at(catalog, "mortgage", EMPTY, ten, TUESDAY_0805).advisor_id == "anna"
    anna_booked = AdvisorBoard(booked={"anna": (ten,)})
    assert slot_at(catalog, "mortgage", anna_booked, ten, TUESDAY_0805).advisor_id == "carl"
    both = AdvisorBoard(booked={"anna": (ten,), "carl": (ten,)})
    with pytest.raises(SlotTaken, match="every expert in mortgage is booked at Tue 24 Mar 10:00"):
        slot_at(catalog, "mortgage", both, ten, TUESDAY_0805)
    with pytest.raises(ValidationError, match="no expert in mortgage has a slot starting then"):
        slot_at(catalog, "mortgage", EMPTY, ten + 600, TUESDAY_0805)
    with pytest.raises(ValidationError, match="from 15 minutes ahead") as soon:
        slot_at(catalog, "mortgage", EMPTY, ten, ten - 600)
    assert soon.value.path == "$.time"
    with pytest.raises(ValidationError, match="at most 14 days ahead"):
        slot_at(catalog, "mortgage", EMPTY, ten + 15 * 86_400, TUESDAY_0805)


# ------------------------------------------------------------------ the property


#: the bank's two, a change at 02:00 local, the southern hemisphere, a 30-minute change, a
#: half-hour offset, and changes at midnight (Santiago: 00:00 skipped, 24:00 twice)
ZONES = [
    CPH,
    LDN,
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
]
#: days just before a change of summer time somewhere (and one with none)
ANCHORS = [
    at("2026-03-27T12:00:00Z"),
    at("2026-10-23T12:00:00Z"),
    at("2026-03-06T12:00:00Z"),
    at("2026-10-30T12:00:00Z"),
    at("2026-04-03T12:00:00Z"),
    at("2026-10-02T12:00:00Z"),
    at("2026-06-10T12:00:00Z"),
    at("2026-09-04T12:00:00Z"),  # Santiago: clocks forward at midnight, Sunday 6 September
    at("2026-04-02T12:00:00Z"),  # Santiago: clocks back at midnight, Sunday 5 April
]


@st.composite
def day_spans(draw: st.DrawFn) -> list[str]:
    points = sorted(draw(st.lists(st.integers(0, 96), max_size=6, unique=True)))
    pairs = list(zip(points[::2], points[1::2], strict=False))
    return [span_text((a * 15, b * 15)) for a, b in pairs]


def scan(catalog: Catalog, board: AdvisorBoard, now: float) -> list[tuple[float, str]]:
    """The free slot starts found minute by minute in absolute time: a minute whose local wall
    time is on a span's slot grid, at its first occurrence, within capacity."""
    policy = catalog.callbacks
    length = policy.slot_minutes
    found: list[tuple[float, str]] = []
    start = now + policy.lead_minutes * 60
    first = int(-(-start // 60) * 60)
    for a in catalog.advisors.values():
        for t in range(first, int(now + policy.horizon_days * 86_400), 60):
            local = datetime.fromtimestamp(t, a.zone)
            if local.fold:
                continue  # the second time the clock shows this
            minute = local.hour * 60 + local.minute
            spans = a.spans_on(local.date())
            if not any(s <= minute <= e - length and (minute - s) % length == 0 for s, e in spans):
                continue
            taken = sum(1 for b in board.bookings(a.id) if abs(b - t) < length * 60)
            if taken < a.max_concurrent:
                found.append((float(t), a.id))
    return sorted(found)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zone=st.sampled_from(ZONES),
    weekly=st.fixed_dictionaries(
        {d: day_spans() for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    ),
    anchor=st.sampled_from(ANCHORS),
    offset=st.integers(0, 3 * 86_400),
    capacity=st.integers(1, 3),
    minutes=st.sampled_from([15, 30, 45, 60]),
    booked=st.lists(st.integers(0, 3 * 86_400 // 900), max_size=12),
)
def test_slots_are_in_hours_never_over_capacity_and_all_found(
    zone: str,
    weekly: dict[str, list[str]],
    anchor: float,
    offset: int,
    capacity: int,
    minutes: int,
    booked: list[int],
) -> None:
    catalog = bank(
        [advisor("a", {"mortgage": 3}, zone=zone, weekly=weekly, max_concurrent=capacity)],
        callbacks={"slot_minutes": minutes, "horizon_days": 3, "lead_minutes": 15},
    )
    now = anchor + offset
    bookings = tuple(sorted(anchor + 900 * b for b in booked))
    board = AdvisorBoard(booked={"a": bookings})
    found = free_slots(catalog, "mortgage", board, now)
    advisor_ = catalog.advisors["a"]
    tz = advisor_.zone
    for slot in found:
        local = datetime.fromtimestamp(slot.start, tz)
        assert local.fold == 0
        minute = local.hour * 60 + local.minute
        spans = advisor_.spans_on(local.date())
        assert any(s <= minute and minute + minutes <= e for s, e in spans)  # in working hours
        overlapping = sum(1 for b in bookings if abs(b - slot.start) < minutes * 60)
        assert overlapping < capacity  # never past capacity
        assert now + 15 * 60 <= slot.start < now + 3 * 86_400
        assert slot.end - slot.start == minutes * 60
    starts = [s.start for s in found]
    assert starts == sorted(set(starts))
    assert [(s.start, s.advisor_id) for s in found] == scan(catalog, board, now)
    # the same, one slot at a time
    lazy = advisor_slots(advisor_, bookings, minutes, now + 900, now + 3 * 86_400)
    assert list(lazy) == found


def test_a_booking_takes_the_slots_it_overlaps_and_no_other() -> None:
    """The property's own check, written out once for a reader: with 15-minute slots and a
    capacity of 1, a booking at 10:00 Copenhagen (10:00-10:15) takes the 10:00 slot, and
    leaves 09:45 (which ends as it starts) and 10:15 free."""
    catalog = bank(
        [advisor("a", {"mortgage": 3})], callbacks={"slot_minutes": 15, "lead_minutes": 0}
    )
    ten = at("2026-03-24T10:00:00+01:00")
    found = free_slots(catalog, "mortgage", AdvisorBoard(booked={"a": (ten,)}), ten - 3600)
    starts = {datetime.fromtimestamp(s.start, UTC).strftime("%H:%M") for s in found[:8]}
    assert "09:00" not in starts  # 10:00 CET
    assert {"08:00", "08:15", "08:30", "08:45", "09:15", "09:30"} <= starts
