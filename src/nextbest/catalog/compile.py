"""Compile a catalog: the raw mapping, as parsed from its YAML, to a checked ``Catalog``.

Pure: the adapter (``nextbest.store.catalog_files``) reads the files, records where every value
stands in a ``SourceMap`` and computes the digest. Every problem is reported with its file, line,
field path and a reason, all of them at once. Rules are compiled once here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeVar

import msgspec

from nextbest.catalog.compiled import Catalog, CompiledOffer
from nextbest.catalog.model import (
    CampaignSpec,
    CatalogSpec,
    ContactPolicy,
    ModelKind,
    OfferKind,
    OfferSpec,
    PlacementSpec,
    ProfileSettings,
    ScoringSpec,
    SegmentSpec,
    Thompson,
)
from nextbest.catalog.source_map import SourceMap
from nextbest.errors import CatalogError, CatalogProblem, RuleError, split_msgspec_message
from nextbest.profile.topics import TopicSpec
from nextbest.rules.context import RULE_ROOTS
from nextbest.rules.expression import Rule, compile_rule

__all__ = [
    "SECTIONS_LIST",
    "SECTIONS_SINGLE",
    "compile_catalog",
    "parse_when",
    "section_problem",
]

#: sections whose items concatenate across files, and sections defined once
SECTIONS_LIST = ("topics", "segments", "offers", "campaigns", "placements")
SECTIONS_SINGLE = ("version", "contact_policy", "scoring", "profile", "holdout_share")

_SINGLE_TYPES: dict[str, type[Any]] = {
    "contact_policy": ContactPolicy,
    "scoring": ScoringSpec,
    "profile": ProfileSettings,
}


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T")
S = TypeVar("S", bound=_Identified)
#: a validity window in epoch seconds; None is open-ended
_Bounds = tuple[float | None, float | None]


def compile_catalog(
    raw: Mapping[str, Any], source_map: SourceMap, *, digest: str, source: str
) -> Catalog:
    """Check and compile ``raw``; raise CatalogError listing every problem found.

    ``raw`` is the whole catalog (the sections in ``SECTIONS_LIST`` and ``SECTIONS_SINGLE``),
    ``source_map`` says where each of its values stands, ``digest`` is a hash of the catalog's
    bytes (it ends ``Catalog.version``) and ``source`` names where the catalog was read from.
    """
    problems = [
        source_map.problem(f"$.{key}", reason)
        for key, value in raw.items()
        if (reason := section_problem(key, value)) is not None
    ]
    if problems:
        raise CatalogError(problems)
    sections = _convert_sections(_plain(dict(raw)), source_map, problems)
    known = sections.known()
    segments = _compile_segments(sections, known, source_map, problems)
    owner, windows = _assign_campaigns(sections, source_map, problems)
    offers = _compile_offers(sections, owner, windows, known, source_map, problems)
    _check_placements(sections.placements, offers, sections.broken, source_map, problems)
    if problems:
        raise CatalogError(problems)
    return Catalog(sections.spec(), segments, offers, digest, source)


def section_problem(key: str, value: Any) -> str | None:
    """Why ``key: value`` cannot be a top-level catalog section, or None if it can."""
    if key in SECTIONS_LIST:
        return None if isinstance(value, list) else "must be a list"
    if key in SECTIONS_SINGLE:
        return None
    return f"unknown section; use {', '.join(SECTIONS_LIST + SECTIONS_SINGLE)}"


@dataclass
class _Sections:
    """The catalog's sections converted to specs; list items keep their field path."""

    version: str
    topics: list[TopicSpec]
    segments: list[tuple[str, SegmentSpec]]
    offers: list[tuple[str, OfferSpec]]
    campaigns: list[tuple[str, CampaignSpec]]
    placements: list[tuple[str, PlacementSpec]]
    holdout: float
    singles: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: ids of items that did not convert: already reported, so not reported again as unknown
    broken: set[str] = dataclasses.field(default_factory=set)

    def known(self) -> dict[str, set[str]]:
        """The names rules may use, by root."""
        return {
            "interest": {t.id for t in self.topics},
            "segments": {s.id for _, s in self.segments},
            "offers": {o.id for _, o in self.offers},
        }

    def spec(self) -> CatalogSpec:
        return CatalogSpec(
            version=self.version,
            topics=self.topics,
            segments=[s for _, s in self.segments],
            offers=[o for _, o in self.offers],
            campaigns=[c for _, c in self.campaigns],
            placements=[p for _, p in self.placements],
            holdout_share=self.holdout,
            **self.singles,
        )


def _convert_sections(
    raw: dict[str, Any], smap: SourceMap, problems: list[CatalogProblem]
) -> _Sections:
    broken: set[str] = set()
    topics = [s for _, s in _items(raw, "topics", TopicSpec, smap, problems, broken)]
    segments = _items(raw, "segments", SegmentSpec, smap, problems, broken)
    offers = _items(raw, "offers", OfferSpec, smap, problems, broken)
    campaigns = _items(raw, "campaigns", CampaignSpec, smap, problems, broken)
    placements = _items(raw, "placements", PlacementSpec, smap, problems, broken)
    singles: dict[str, Any] = {}
    for key, kind in _SINGLE_TYPES.items():
        if key in raw:
            value = _convert(raw[key], kind, f"$.{key}", smap, problems)
            if value is not None:
                singles[key] = value
    holdout = raw.get("holdout_share", 0.0)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout <= 0.5:
        problems.append(smap.problem("$.holdout_share", "must be a number from 0 to 0.5"))
        holdout = 0.0
    return _Sections(
        version=str(raw.get("version", "1")),
        topics=topics,
        segments=segments,
        offers=offers,
        campaigns=campaigns,
        placements=placements,
        holdout=float(holdout or 0.0),
        singles=singles,
        broken=broken,
    )


def _compile_segments(
    sections: _Sections,
    known: Mapping[str, Collection[str]],
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> list[tuple[SegmentSpec, Rule]]:
    segments: list[tuple[SegmentSpec, Rule]] = []
    for path, seg in sections.segments:
        if "segments." in seg.rule:
            problems.append(smap.problem(f"{path}.rule", "a segment rule may not use segments"))
            continue
        rule = _rule(seg.rule, f"{path}.rule", smap, problems, known, sections.broken)
        if rule is not None:
            segments.append((seg, rule))
    return segments


def _assign_campaigns(
    sections: _Sections, smap: SourceMap, problems: list[CatalogProblem]
) -> tuple[dict[str, CampaignSpec], dict[str, _Bounds]]:
    """Each offer's campaign (an offer is in one at most) and each campaign's window."""
    offer_ids = {o.id for _, o in sections.offers}
    owner: dict[str, CampaignSpec] = {}
    windows: dict[str, _Bounds] = {}
    for path, camp in sections.campaigns:
        windows[camp.id] = _window(camp.start, camp.end, path, ("start", "end"), smap, problems)
        for j, oid in enumerate(camp.offers):
            if oid in sections.broken:
                continue  # already reported where the offer is defined
            if oid not in offer_ids:
                problems.append(smap.problem(f"{path}.offers[{j}]", f"unknown offer {oid!r}"))
            elif oid in owner:
                problems.append(
                    smap.problem(
                        f"{path}.offers[{j}]",
                        f"offer {oid!r} is already in campaign {owner[oid].id!r}",
                    )
                )
            else:
                owner[oid] = camp
    return owner, windows


def _compile_offers(
    sections: _Sections,
    owner: Mapping[str, CampaignSpec],
    windows: Mapping[str, _Bounds],
    known: Mapping[str, Collection[str]],
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> dict[str, CompiledOffer]:
    """Offers with their rule compiled and their window narrowed to their campaign's."""
    topic_ids = {t.id for t in sections.topics}
    broken = sections.broken
    scoring = sections.singles.get("scoring", ScoringSpec())
    offers: dict[str, CompiledOffer] = {}
    for path, offer in sections.offers:
        if offer.topic is not None and offer.topic not in topic_ids | broken:
            problems.append(smap.problem(f"{path}.topic", f"unknown topic {offer.topic!r}"))
            continue
        if not offer.content:
            problems.append(smap.problem(f"{path}.content", "needs content for a channel"))
            continue
        rule = _rule(offer.eligibility, f"{path}.eligibility", smap, problems, known, broken)
        urgent = None
        if offer.urgent is not None:
            if offer.kind is not OfferKind.SERVICE:
                problems.append(
                    smap.problem(f"{path}.urgent", "only a service message can be urgent")
                )
                continue
            urgent = _rule(offer.urgent, f"{path}.urgent", smap, problems, known, broken)
            if urgent is None:
                continue
        lo, hi = _window(
            offer.valid_from, offer.valid_until, path, ("valid_from", "valid_until"), smap, problems
        )
        camp = owner.get(offer.id)
        if camp is not None:
            c_lo, c_hi = windows[camp.id]
            lo, hi = _tighter(lo, c_lo, max), _tighter(hi, c_hi, min)
        if rule is not None:
            offers[offer.id] = CompiledOffer(offer, rule, camp, scoring, lo, hi, urgent)
    return offers


def _check_placements(
    placements: list[tuple[str, PlacementSpec]],
    offers: Mapping[str, CompiledOffer],
    broken: Collection[str],
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> None:
    for path, pl in placements:
        if not pl.kinds:
            problems.append(smap.problem(f"{path}.kinds", "must not be empty"))
        for j, oid in enumerate(pl.fallback):
            offer = offers.get(oid)
            if offer is None and oid in broken:
                continue  # already reported where the offer is defined
            if offer is None:
                problems.append(smap.problem(f"{path}.fallback[{j}]", f"unknown offer {oid!r}"))
            elif pl.channel not in offer.spec.content or offer.kind not in pl.kinds:
                problems.append(
                    smap.problem(
                        f"{path}.fallback[{j}]",
                        f"offer {oid!r} cannot appear in this placement "
                        f"(no {pl.channel.value} content, or kind {offer.kind.value} not allowed)",
                    )
                )
        learning = pl.learning
        if (
            learning is not None
            and isinstance(learning.explore, Thompson)
            and learning.model not in (ModelKind.BAYES, ModelKind.BAYES_LOGISTIC)
        ):
            problems.append(
                smap.problem(
                    f"{path}.learning.explore",
                    "thompson sampling needs a model with a posterior to sample: "
                    "bayes or bayes_logistic",
                )
            )


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


def _plain(value: Any) -> Any:
    """YAML dates and times to ISO strings, so one string type carries them."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _convert(
    value: Any, kind: type[T], path: str, smap: SourceMap, problems: list[CatalogProblem]
) -> T | None:
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as exc:
        reason, where = split_msgspec_message(str(exc))
        problems.append(smap.problem(path + where[1:], reason))
        return None


def _items(
    raw: dict[str, Any],
    section: str,
    kind: type[S],
    smap: SourceMap,
    problems: list[CatalogProblem],
    broken: set[str],
) -> list[tuple[str, S]]:
    """Convert a section's items; ids of items that fail go to ``broken`` (no cascades)."""
    out: list[tuple[str, S]] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(raw.get(section, [])):
        path = f"$.{section}[{i}]"
        spec = _convert(item, kind, path, smap, problems)
        if spec is None:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                broken.add(item["id"])
            continue
        ident = spec.id
        if ident in seen:
            problems.append(
                smap.problem(f"{path}.id", f"duplicate id {ident!r} (first at {seen[ident]})")
            )
            continue
        file, line = smap.where(f"{path}.id")
        seen[ident] = f"{file}:{line}"
        out.append((path, spec))
    return out


def _rule(
    source: str,
    path: str,
    smap: SourceMap,
    problems: list[CatalogProblem],
    known: Mapping[str, Collection[str]],
    broken: Collection[str] = (),
) -> Rule | None:
    try:
        rule = compile_rule(source, RULE_ROOTS)
    except RuleError as exc:
        problems.append(smap.problem(path, exc.message))
        return None
    for root, field in sorted(rule.fields):
        names = known.get(root)
        if names is not None and field not in names and field not in broken:
            problems.append(smap.problem(path, f"{root}.{field} is not defined in the catalog"))
            return None
    return rule


def _window(
    start: str | None,
    end: str | None,
    path: str,
    names: tuple[str, str],
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> tuple[float | None, float | None]:
    bounds: list[float | None] = []
    for value, name in zip((start, end), names, strict=True):
        try:
            bounds.append(parse_when(value) if value is not None else None)
        except ValueError as exc:
            problems.append(smap.problem(f"{path}.{name}", str(exc)))
            bounds.append(None)
    lo, hi = bounds
    if lo is not None and hi is not None and lo >= hi:
        problems.append(smap.problem(f"{path}.{names[1]}", f"must be after {names[0]}"))
    return lo, hi


def _tighter(a: float | None, b: float | None, pick: Any) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(pick(a, b))
