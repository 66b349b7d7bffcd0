"""Checking and compiling the ``advisors`` section and the ``callbacks`` policy.

Every problem is placed at its field (``$.advisors[2].working_hours.timezone``): an expertise
topic the catalog does not define, a language that is no ISO 639-1 code, a time zone the IANA
database does not know, hours that are no time range or overlap, an exceptional date that is
no date, and an advisor placement that cannot show a card. Pure, as the rest of the compiler:
the time zones come from the standard library's ``zoneinfo``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from nextbest.advisors.model import (
    NOT_CONNECTED_EVENT,
    PASSED_ON_EVENT,
    SCHEDULED_EVENT,
    TRANSITION_EVENTS,
)
from nextbest.catalog.compiled import CompiledAdvisor
from nextbest.catalog.hours import Span, parse_day
from nextbest.catalog.languages import language_problem
from nextbest.catalog.model import (
    AdvisorSpec,
    CallbackPolicy,
    OfferSpec,
    PlacementKind,
    PlacementSpec,
)
from nextbest.catalog.source_map import SourceMap
from nextbest.errors import CatalogProblem
from nextbest.rules.typecheck import did_you_mean

__all__ = [
    "DESK_EVENTS",
    "advisor_placement_problems",
    "advisor_warnings",
    "callback_kpi_warnings",
    "compile_advisors",
    "parse_zone",
]

_Q = "'"
_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; ValueError naming the closest known one otherwise."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        hint = did_you_mean(name, available_timezones(), quote=_Q)
        raise ValueError(
            f"unknown time zone {name!r}{hint}: write an IANA name such as Europe/Copenhagen"
        ) from exc


def compile_advisors(
    advisors: Sequence[tuple[str, AdvisorSpec]],
    topic_ids: Collection[str],
    policy: CallbackPolicy,
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> dict[str, CompiledAdvisor]:
    """The advisors that check, by id; a problem for everything wrong with the others (and
    with the policy's ``holidays``)."""
    holidays = frozenset(_dates(policy.holidays, "$.callbacks.holidays", smap, problems))
    out: dict[str, CompiledAdvisor] = {}
    for path, spec in advisors:
        found: list[tuple[str, str]] = []
        found += _expertise_problems(path, spec, topic_ids)
        found += _language_problems(path, spec)
        hours = spec.working_hours
        zone: tzinfo | None = None
        try:
            zone = parse_zone(hours.timezone)
        except ValueError as exc:
            found.append((f"{path}.working_hours.timezone", str(exc)))
        weekly: list[tuple[Span, ...]] = [()] * 7
        for day, texts in hours.weekly.items():
            spans, wrong = parse_day(texts)
            weekly[_WEEK.index(day.value)] = spans
            found += [(f"{path}.working_hours.weekly.{day.value}[{i}]", r) for i, r in wrong]
        exceptions = _exceptions(path, hours.exceptions, found)
        problems += [smap.problem(where, reason) for where, reason in found]
        if not found and zone is not None:
            out[spec.id] = CompiledAdvisor(spec, zone, tuple(weekly), exceptions, holidays)
    return out


def _expertise_problems(
    path: str, spec: AdvisorSpec, topic_ids: Collection[str]
) -> list[tuple[str, str]]:
    if not spec.expertise:
        return [(f"{path}.expertise", "an advisor needs at least one topic of expertise")]
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for j, e in enumerate(spec.expertise):
        where = f"{path}.expertise[{j}].topic"
        if e.topic not in topic_ids:
            hint = did_you_mean(e.topic, topic_ids, quote=_Q)
            found.append((where, f"unknown topic {e.topic!r}{hint}"))
        elif e.topic in seen:
            found.append((where, f"topic {e.topic!r} is listed twice"))
        seen.add(e.topic)
    return found


def _language_problems(path: str, spec: AdvisorSpec) -> list[tuple[str, str]]:
    if not spec.languages:
        return [(f"{path}.languages", "an advisor speaks at least one language (such as [da])")]
    return [
        (f"{path}.languages[{j}]", reason)
        for j, code in enumerate(spec.languages)
        if (reason := language_problem(code)) is not None
    ]


def _exceptions(
    path: str, exceptions: Mapping[str, list[str]], found: list[tuple[str, str]]
) -> dict[date, tuple[Span, ...]]:
    out: dict[date, tuple[Span, ...]] = {}
    for key, texts in exceptions.items():
        where = f"{path}.working_hours.exceptions.{key}"
        try:
            day = date.fromisoformat(key)
        except ValueError:
            found.append((where, f"{key!r} is no date: write it as 2026-12-24"))
            continue
        spans, wrong = parse_day(texts)
        found += [(f"{where}[{i}]", reason) for i, reason in wrong]
        out[day] = spans
    return out


def _dates(
    texts: Sequence[str], path: str, smap: SourceMap, problems: list[CatalogProblem]
) -> list[date]:
    out: list[date] = []
    for i, text in enumerate(texts):
        try:
            out.append(date.fromisoformat(text))
        except ValueError:
            problems.append(smap.problem(f"{path}[{i}]", f"{text!r} is no date: write 2026-12-25"))
    return out


def advisor_placement_problems(path: str, placement: PlacementSpec) -> list[tuple[str, str]]:
    """What an advisor placement may not have: more than one slot, learning, fallback."""
    if placement.kind is not PlacementKind.ADVISOR:
        return []
    found: list[tuple[str, str]] = []
    if placement.slots != 1:
        found.append((f"{path}.slots", "an advisor placement shows one card: slots must be 1"))
    if placement.learning is not None:
        found.append(
            (f"{path}.learning", "an advisor placement shows a card, not offers: it learns nothing")
        )
    if placement.fallback:
        found.append(
            (f"{path}.fallback", "an advisor placement shows a card, not offers: no fallback")
        )
    return found


def advisor_warnings(
    placements: Sequence[tuple[str, PlacementSpec]],
    advisors: Sequence[tuple[str, AdvisorSpec]],
) -> list[tuple[str, str]]:
    """What loads but shows no card: an advisor placement without advisors, an advisor
    who never works."""
    found: list[tuple[str, str]] = []
    if not advisors:
        found += [
            (f"{path}.kind", "no advisor is defined (the advisors section): it shows nothing")
            for path, pl in placements
            if pl.kind is PlacementKind.ADVISOR
        ]
    for path, spec in advisors:
        hours = spec.working_hours
        if not any(hours.weekly.values()) and not any(hours.exceptions.values()):
            found.append(
                (
                    f"{path}.working_hours",
                    "no working hours: the advisor is never offered a callback and has no "
                    "slots (write weekly: {mon: [09:00-17:00], ...})",
                )
            )
    return found


#: the events only the callback desk sends (a callback's steps)
DESK_EVENTS = frozenset(
    {*TRANSITION_EVENTS.values(), SCHEDULED_EVENT, PASSED_ON_EVENT, NOT_CONNECTED_EVENT}
)


def callback_kpi_warnings(
    offers: Sequence[tuple[str, OfferSpec]],
    advisors: Sequence[tuple[str, AdvisorSpec]],
) -> list[tuple[str, str]]:
    """An offer whose ``kpi_event`` only the callback desk sends, about a topic no advisor
    takes callbacks on: the desk refuses such a callback, so none of its clicks can ever
    convert (the conversion model learns that the offer never does)."""
    experts = {e.topic for _, a in advisors for e in a.expertise}
    found: list[tuple[str, str]] = []
    for path, offer in offers:
        kpi = offer.kpi_event
        if kpi not in DESK_EVENTS or (offer.topic is None and experts):
            continue
        if offer.topic is not None and offer.topic in experts:
            continue
        about = f"on {offer.topic!r}" if offer.topic is not None else "at all"
        found.append(
            (
                f"{path}.kpi_event",
                f"{kpi!r} is sent only by the callback desk, and no advisor takes callbacks "
                f"{about} (the advisors section): no click on it will ever count as "
                "converted; measure what the bank's systems send after it (an application, "
                "a product opened)",
            )
        )
    return found
