"""The catalog's advisors, callback policy and advisor placements: the example bank checks,
and every mistake a contact-center lead can make is refused at its file and line."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from nextbest.catalog.compiled import advisor_card_id
from nextbest.catalog.hours import parse_day, parse_span
from nextbest.catalog.languages import LANGUAGES, language_problem
from nextbest.catalog.model import PlacementKind
from nextbest.errors import CatalogError, Severity
from nextbest.store.catalog_files import check_catalog, load_catalog
from tests.support import EXAMPLE_CATALOG, edited_bank
from tests.unit.advisor_bank import advisor, bank


def line_of(file: Path, text: str) -> int:
    return next(i for i, line in enumerate(file.read_text().splitlines(), 1) if text in line)


# ------------------------------------------------------------------ the example bank


def test_the_example_bank_has_advisors_in_two_time_zones_covering_every_topic() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    assert check_catalog(EXAMPLE_CATALOG) == []
    assert len(catalog.advisors) == 6
    zones = {a.spec.working_hours.timezone for a in catalog.advisors.values()}
    assert zones == {"Europe/Copenhagen", "Europe/London"}
    # every topic has two experts or more: a busy one has a colleague
    assert set(catalog.experts) == set(catalog.topics)
    assert all(len(experts) >= 2 for experts in catalog.experts.values())
    placement = catalog.placements["topic_advisor"]
    assert placement.kind is PlacementKind.ADVISOR
    assert catalog.by_placement["topic_advisor"] == ()  # no offer is a candidate there
    policy = catalog.callbacks
    assert (policy.accept_timeout_seconds, policy.now_sla_seconds) == (30, 120)
    assert (policy.slot_minutes, policy.horizon_days, policy.lead_minutes) == (30, 14, 15)
    # the cards' feedback is kept in the profile like an offer's (the contact policy caps it)
    assert advisor_card_id("mortgage") in catalog.fold_config.offer_ids


def test_existing_placements_keep_their_kind_and_candidates() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    for pid in ("home_hero", "home_feed", "product_sidebar", "app_home"):
        assert catalog.placements[pid].kind is PlacementKind.OFFERS
        assert catalog.by_placement[pid]


def test_a_catalog_without_an_advisor_placement_keeps_no_card_feedback() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5})], placements=[])
    assert catalog.card_ids == frozenset()
    assert catalog.fold_config.offer_ids == frozenset()


# ------------------------------------------------------------------ errors at file and line


@pytest.mark.parametrize(
    ("old", "new", "path", "reason"),
    [
        (
            "timezone: Europe/London",
            "timezone: Europe/Londn",
            "$.advisors[3].working_hours.timezone",
            "unknown time zone 'Europe/Londn' (did you mean 'Europe/London'?): write an IANA "
            "name such as Europe/Copenhagen",
        ),
        (
            'mon: ["09:00-17:00"]',
            'mon: ["09:00-25:00"]',
            "$.advisors[0].working_hours.weekly.mon[0]",
            "'09:00-25:00' names a time that does not exist (00:00 to 24:00)",
        ),
        (
            'mon: ["09:00-17:00"]',
            'mon: ["17:00-09:00"]',
            "$.advisors[0].working_hours.weekly.mon[0]",
            "'17:00-09:00' ends before it starts: a range is within one day (split a night "
            'shift in two: "22:00-24:00" and the next day\'s "00:00-06:00")',
        ),
        (
            'mon: ["09:00-17:00"]',
            'mon: ["9 to 5"]',
            "$.advisors[0].working_hours.weekly.mon[0]",
            "'9 to 5' is no time range: write hours as \"09:00-17:00\" (start-end, 24-hour clock)",
        ),
        (
            'mon: ["09:00-17:00"]',
            'mon: ["09:00-13:00", "12:00-17:00"]',
            "$.advisors[0].working_hours.weekly.mon[1]",
            "'12:00-17:00' overlaps 09:00-13:00 on the same day",
        ),
        (
            "{topic: car_loan, level: 4}",
            "{topic: car_lone, level: 4}",
            "$.advisors[1].expertise[2].topic",
            "unknown topic 'car_lone' (did you mean 'car_loan'?)",
        ),
        (
            "languages: [da, de]",
            "languages: [dk, de]",
            "$.advisors[1].languages[0]",
            "'dk' is a country code, not a language code: did you mean 'da'?",
        ),
        (
            "languages: [da, de]",
            "languages: [da, xx]",
            "$.advisors[1].languages[1]",
            "'xx' is no ISO 639-1 language code (two letters, such as da or en)",
        ),
        (
            "2026-12-24: []",
            '"2026-12-32": []',
            "$.advisors[2].working_hours.exceptions.2026-12-32",
            "'2026-12-32' is no date: write it as 2026-12-24",
        ),
        (
            'mon: ["09:00-17:00"]',
            'monday: ["09:00-17:00"]',
            "$.advisors[0].working_hours.weekly.monday",
            "'monday' is not one of mon, tue, wed, thu, fri, sat, sun (did you mean 'mon'?)",
        ),
        (
            "{topic: mortgage, level: 5}",
            "{topic: mortgage, level: 6}",
            "$.advisors[0].expertise[0].level",
            "Expected `int` <= 5",
        ),
    ],
)
def test_a_mistake_in_advisors_is_an_error_at_its_line(
    tmp_path: Path, old: str, new: str, path: str, reason: str
) -> None:
    folder = edited_bank(tmp_path, "advisors.yaml", old, new)
    with pytest.raises(CatalogError) as raised:
        load_catalog(folder)
    (problem,) = [p for p in raised.value.problems if p.is_error]
    file = folder / "advisors.yaml"
    assert (problem.file, problem.path, problem.reason) == (str(file), path, reason)
    assert problem.line == line_of(file, new)


def test_every_problem_of_an_advisor_is_reported_at_once(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path, "advisors.yaml", "timezone: Europe/London", "timezone: Mars/Base"
    )
    file = folder / "advisors.yaml"
    text = file.read_text().replace("languages: [en, hi]", "languages: []")
    file.write_text(text.replace('sat: ["10:00-14:00"]', 'sat: ["10-14"]', 1))
    problems = check_catalog(folder)
    assert [p.path for p in problems] == [
        "$.advisors[3].working_hours.timezone",
        "$.advisors[4].languages",
        "$.advisors[4].working_hours.weekly.sat[0]",
    ]
    assert all(p.severity is Severity.ERROR for p in problems)
    assert problems[1].reason == "an advisor speaks at least one language (such as [da])"


def test_a_bad_holiday_is_an_error(tmp_path: Path) -> None:
    folder = edited_bank(tmp_path, "advisors.yaml", "holidays: [2026-12-25,", 'holidays: ["25/12",')
    (problem,) = check_catalog(folder)
    assert problem.path == "$.callbacks.holidays[0]"
    assert problem.reason == "'25/12' is no date: write 2026-12-25"


@pytest.mark.parametrize(
    ("extra", "path", "reason"),
    [
        ("    slots: 2\n", "$.placements[4].slots", "an advisor placement shows one card"),
        (
            "    learning: {model: contextual}\n",
            "$.placements[4].learning",
            "an advisor placement shows a card, not offers: it learns nothing",
        ),
        (
            "    fallback: [security_tips]\n",
            "$.placements[4].fallback",
            "an advisor placement shows a card, not offers: no fallback",
        ),
    ],
)
def test_an_advisor_placement_shows_one_card_and_nothing_else(
    tmp_path: Path, extra: str, path: str, reason: str
) -> None:
    folder = edited_bank(
        tmp_path, "placements.yaml", "    kind: advisor\n", "    kind: advisor\n" + extra
    )
    (problem,) = check_catalog(folder)
    assert problem.path == path
    assert problem.reason.startswith(reason)


def test_an_offer_limited_to_an_advisor_placement_is_an_error(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path,
        "offers.yaml",
        '    kpi_event: Application Started\n    content:\n      web: {title: "Talk to a mortgage',
        "    kpi_event: Application Started\n    placements: [topic_advisor]\n    content:\n"
        '      web: {title: "Talk to a mortgage',
    )
    (problem,) = check_catalog(folder)
    assert problem.path == "$.offers[2].placements[0]"
    assert problem.reason == "placement 'topic_advisor' shows an advisor card, never an offer"


def test_an_advisor_placement_without_advisors_is_a_warning() -> None:
    catalog = bank([])
    (warning,) = catalog.warnings
    assert warning.path == "$.placements[0].kind"
    assert "no advisor is defined" in warning.reason


def test_an_advisor_without_hours_is_a_warning() -> None:
    catalog = bank([advisor("anna", {"mortgage": 5}, weekly={})])
    (warning,) = catalog.warnings
    assert warning.path == "$.advisors[0].working_hours"
    assert "never offered a callback" in warning.reason


def test_a_duplicate_expertise_topic_is_an_error() -> None:
    with pytest.raises(CatalogError) as raised:
        bank([advisor("anna", {"mortgage": 5}) | {"expertise": [{"topic": "mortgage"}] * 2}])
    (problem,) = raised.value.problems
    assert (problem.path, problem.reason) == (
        "$.advisors[0].expertise[1].topic",
        "topic 'mortgage' is listed twice",
    )


def test_compiled_hours_by_weekday_with_exceptions_and_holidays() -> None:
    catalog = bank(
        [
            advisor(
                "anna",
                {"mortgage": 5},
                weekly={"mon": ["13:00-17:00", "08:00-12:00"], "sat": ["10:00-14:00"]},
                exceptions={"2026-03-28": [], "2026-03-30": ["10:00-11:00"]},
            )
        ],
        callbacks={"holidays": ["2026-04-06"]},
    )
    anna = catalog.advisors["anna"]
    assert anna.spans_on(date(2026, 3, 23)) == ((480, 720), (780, 1020))  # a Monday, sorted
    assert anna.spans_on(date(2026, 3, 24)) == ()  # Tuesday: a day off
    assert anna.spans_on(date(2026, 3, 28)) == ()  # a Saturday closed by an exception
    assert anna.spans_on(date(2026, 3, 30)) == ((600, 660),)  # a Monday with other hours
    assert anna.spans_on(date(2026, 4, 6)) == ()  # a Monday, a bank holiday
    assert anna.levels == {"mortgage": 5}


# ------------------------------------------------------------------ the parsers themselves


def test_parse_span_and_day() -> None:
    assert parse_span("09:00-17:00") == (540, 1020)
    assert parse_span(" 0:00 - 24:00 ") == (0, 1440)
    with pytest.raises(ValueError, match="does not exist"):
        parse_span("24:00-24:30")
    with pytest.raises(ValueError, match="no time range"):
        parse_span(540)
    spans, problems = parse_day(["13:00-17:00", "09:00-12:00", "bad"])
    assert spans == ((540, 720), (780, 1020))
    assert problems == [
        (2, "'bad' is no time range: write hours as \"09:00-17:00\" (start-end, 24-hour clock)")
    ]


def test_languages_are_the_iso_639_1_codes() -> None:
    assert len(LANGUAGES) == 184
    assert {"da", "en", "sv", "de", "nb", "fi", "uk"} <= LANGUAGES
    assert language_problem("da") is None
    assert language_problem("DA") == "'DA': write ISO 639-1 codes in lower case (da)"
    assert language_problem("se") is None  # Northern Sami: a language, not Sweden
    assert "did you mean 'sv'" not in (language_problem("se") or "")
    assert language_problem(7) == "7 is no language code: write an ISO 639-1 code such as da or en"


# ------------------------------------------------------------------ KPIs only the desk sends


def pension_offer(kpi_event: str, topic: str | None = "pension") -> dict[str, Any]:
    offer: dict[str, Any] = {
        "id": "pension_check",
        "name": "Pension check-up",
        "kind": "commercial",
        "kpi_event": kpi_event,
        "content": {"web": {"title": "Is your pension on track?"}},
    }
    if topic is not None:
        offer["topic"] = topic
    return offer


@pytest.mark.parametrize(
    ("kpi_event", "topic", "experts", "about"),
    [
        ("Callback Requested", "pension", {"mortgage": 5}, "on 'pension'"),
        ("Callback Completed", "pension", {}, "on 'pension'"),
        ("Callback Requested", None, {}, "at all"),
    ],
)
def test_a_kpi_only_the_callback_desk_sends_without_an_advisor_for_it_is_a_warning(
    kpi_event: str, topic: str | None, experts: dict[str, int], about: str
) -> None:
    """The desk refuses a callback on a topic no advisor is expert in: an offer measured by
    the desk's events there never converts, which the conversion model would learn."""
    advisors = [advisor("anna", experts)] if experts else []
    catalog = bank(advisors, offers=[pension_offer(kpi_event, topic)])
    kpi_warnings = [w for w in catalog.warnings if w.path.endswith(".kpi_event")]
    assert [(w.path, w.severity) for w in kpi_warnings] == [
        ("$.offers[0].kpi_event", Severity.WARNING)
    ]
    assert kpi_warnings[0].reason.startswith(
        f"{kpi_event!r} is sent only by the callback desk, and no advisor takes callbacks {about}"
    )


@pytest.mark.parametrize(
    ("kpi_event", "topic", "experts"),
    [
        ("Callback Requested", "pension", {"pension": 4}),  # the desk takes them
        ("Callback Requested", None, {"mortgage": 5}),  # some topic's callbacks
        ("Application Started", "pension", {}),  # the bank's own systems send it
    ],
)
def test_a_kpi_the_desk_can_send_or_the_bank_sends_is_no_warning(
    kpi_event: str, topic: str | None, experts: dict[str, int]
) -> None:
    advisors = [advisor("anna", experts)] if experts else []
    catalog = bank(advisors, offers=[pension_offer(kpi_event, topic)])
    assert [w for w in catalog.warnings if w.path.endswith(".kpi_event")] == []
