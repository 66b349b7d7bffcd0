"""Load, validate and compile a catalog. Every problem is reported with file, line and reason.

Rules are compiled once here; offers are indexed by placement so a decision only looks at
candidates that can appear in the placement it is asked about.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from nextbest.catalog.model import (
    CampaignSpec,
    CatalogSpec,
    ContactPolicy,
    ModelChoice,
    OfferKind,
    OfferSpec,
    PlacementSpec,
    ProfileSettings,
    ScoringSpec,
    SegmentSpec,
    Thompson,
)
from nextbest.catalog.source import SourceMap, catalog_files, read_sources
from nextbest.errors import CatalogError, CatalogProblem, split_msgspec_message
from nextbest.profile.fold import FoldConfig
from nextbest.profile.topics import TopicMatcher, TopicSpec
from nextbest.rules.context import RULE_ROOTS
from nextbest.rules.expression import Rule, RuleCompileError, compile_rule
from nextbest.rules.reads import RuleReads

__all__ = ["Catalog", "CompiledOffer", "check_catalog", "load_catalog", "parse_when"]

T = TypeVar("T")

_SECTION_TYPES: dict[str, type[Any]] = {
    "topics": TopicSpec,
    "segments": SegmentSpec,
    "offers": OfferSpec,
    "campaigns": CampaignSpec,
    "placements": PlacementSpec,
    "contact_policy": ContactPolicy,
    "scoring": ScoringSpec,
    "profile": ProfileSettings,
}


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


class CompiledOffer:
    """An offer ready for decisions: its rule compiled, its campaign and window resolved."""

    __slots__ = (
        "base_ctr",
        "campaign",
        "id",
        "kind",
        "rule",
        "segment_names",
        "spec",
        "topic",
        "valid_from",
        "valid_until",
        "weight",
    )

    def __init__(
        self,
        spec: OfferSpec,
        rule: Rule,
        campaign: CampaignSpec | None,
        scoring: ScoringSpec,
        valid_from: float | None,
        valid_until: float | None,
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self.kind = spec.kind
        self.topic = spec.topic
        self.rule = rule
        self.campaign = campaign
        self.weight = campaign.weight if campaign is not None else 1.0
        default = scoring.service_ctr if spec.kind is OfferKind.SERVICE else scoring.commercial_ctr
        self.base_ctr = spec.prior_ctr if spec.prior_ctr is not None else default
        self.valid_from = valid_from
        self.valid_until = valid_until
        #: segments the eligibility rule names, in order: the reasons cite those that hold
        self.segment_names = tuple(sorted(f for root, f in rule.fields if root == "segments"))

    def live_at(self, now: float) -> bool:
        return (self.valid_from is None or now >= self.valid_from) and (
            self.valid_until is None or now < self.valid_until
        )


class Catalog:
    """The compiled catalog: what decide and fold read. Immutable once built."""

    def __init__(
        self,
        spec: CatalogSpec,
        segments: list[tuple[SegmentSpec, Rule]],
        offers: dict[str, CompiledOffer],
        digest: str,
        source: str,
    ) -> None:
        self.spec = spec
        self.digest = digest
        self.source = source
        self.topics = {t.id: t for t in spec.topics}
        self.matcher = TopicMatcher(tuple(spec.topics))
        p = spec.profile
        self.fold_config = FoldConfig(
            page_weight=p.page_weight,
            track_weight=p.track_weight,
            event_weights=dict(p.event_weights),
            session_timeout=p.session_timeout_minutes * 60.0,
            offer_ids=frozenset(offers),
        )
        self.segments = segments
        self.offers = offers
        self.campaigns = {c.id: c for c in spec.campaigns}
        self.placements = {p.id: p for p in spec.placements}
        self.policy = spec.contact_policy
        self.scoring = spec.scoring
        self.segment_names = {s.id: s.name or s.id for s, _ in segments}
        self.commercial_offers = frozenset(
            o.id for o in offers.values() if o.kind is OfferKind.COMMERCIAL
        )
        rules = [r for _, r in segments] + [o.rule for o in offers.values()]
        #: what the rules read, down to the field: all a decision builds and converts to CEL
        self.rule_reads = RuleReads.of(rules)
        self.rule_roots = self.rule_reads.roots
        self.rule_topics = {t: self.topics[t] for t in self.rule_reads.topics_in(self.topics)}
        #: offers the rules name (``offers.x``): rules always see them, zeros if unseen
        self.named_offers = self.rule_reads.named_offers
        self.by_placement: dict[str, tuple[CompiledOffer, ...]] = {
            pl.id: tuple(
                o for o in offers.values() if pl.channel in o.spec.content and o.kind in pl.kinds
            )
            for pl in spec.placements
        }

    @property
    def version(self) -> str:
        return f"{self.spec.version}+{self.digest[:12]}"


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
    smap: SourceMap,
    problems: list[CatalogProblem],
    broken: set[str],
) -> list[tuple[str, Any]]:
    """Convert a section's items; ids of items that fail go to ``broken`` (no cascades)."""
    out: list[tuple[str, Any]] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(raw.get(section, [])):
        path = f"$.{section}[{i}]"
        spec = _convert(item, _SECTION_TYPES[section], path, smap, problems)
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
    except RuleCompileError as exc:
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


def _compile(
    raw: dict[str, Any], smap: SourceMap, problems: list[CatalogProblem], digest: str, source: str
) -> Catalog | None:
    raw = _plain(raw)
    broken: set[str] = set()
    topics = [s for _, s in _items(raw, "topics", smap, problems, broken)]
    segments_raw = _items(raw, "segments", smap, problems, broken)
    offers_raw = _items(raw, "offers", smap, problems, broken)
    campaigns_raw = _items(raw, "campaigns", smap, problems, broken)
    placements = [s for _, s in _items(raw, "placements", smap, problems, broken)]
    singles: dict[str, Any] = {}
    for key in ("contact_policy", "scoring", "profile"):
        if key in raw:
            value = _convert(raw[key], _SECTION_TYPES[key], f"$.{key}", smap, problems)
            if value is not None:
                singles[key] = value
    holdout = raw.get("holdout_share", 0.0)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout <= 0.5:
        problems.append(smap.problem("$.holdout_share", "must be a number from 0 to 0.5"))
        holdout = 0.0

    topic_ids = {t.id for t in topics}
    segment_ids = {s.id for _, s in segments_raw}
    offer_ids = {o.id for _, o in offers_raw}
    known = {"interest": topic_ids, "segments": segment_ids, "offers": offer_ids}

    segments: list[tuple[SegmentSpec, Rule]] = []
    for path, seg in segments_raw:
        if "segments." in seg.rule:
            problems.append(smap.problem(f"{path}.rule", "a segment rule may not use segments"))
            continue
        rule = _rule(seg.rule, f"{path}.rule", smap, problems, known, broken)
        if rule is not None:
            segments.append((seg, rule))

    owner: dict[str, CampaignSpec] = {}
    windows: dict[str, tuple[float | None, float | None]] = {}
    for path, camp in campaigns_raw:
        windows[camp.id] = _window(camp.start, camp.end, path, ("start", "end"), smap, problems)
        for j, oid in enumerate(camp.offers):
            if oid in broken:
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

    scoring = singles.get("scoring", ScoringSpec())
    offers: dict[str, CompiledOffer] = {}
    for path, offer in offers_raw:
        if offer.topic is not None and offer.topic not in topic_ids | broken:
            problems.append(smap.problem(f"{path}.topic", f"unknown topic {offer.topic!r}"))
            continue
        if not offer.content:
            problems.append(smap.problem(f"{path}.content", "needs content for a channel"))
            continue
        rule = _rule(offer.eligibility, f"{path}.eligibility", smap, problems, known, broken)
        lo, hi = _window(
            offer.valid_from, offer.valid_until, path, ("valid_from", "valid_until"), smap, problems
        )
        camp = owner.get(offer.id)
        if camp is not None:
            c_lo, c_hi = windows[camp.id]
            lo, hi = _tighter(lo, c_lo, max), _tighter(hi, c_hi, min)
        if rule is not None:
            offers[offer.id] = CompiledOffer(offer, rule, camp, scoring, lo, hi)

    for path_idx, pl in enumerate(placements):
        if not pl.kinds:
            problems.append(smap.problem(f"$.placements[{path_idx}].kinds", "must not be empty"))
        learning = pl.learning
        if (
            learning is not None
            and isinstance(learning.explore, Thompson)
            and learning.model is not ModelChoice.BAYES
        ):
            problems.append(
                smap.problem(
                    f"$.placements[{path_idx}].learning.explore",
                    "thompson sampling needs model: bayes (a posterior to sample)",
                )
            )

    if problems:
        return None
    version = raw.get("version", "1")
    spec = CatalogSpec(
        version=str(version),
        topics=topics,
        segments=[s for _, s in segments_raw],
        offers=[o for _, o in offers_raw],
        campaigns=[c for _, c in campaigns_raw],
        placements=placements,
        holdout_share=float(holdout or 0.0),
        **singles,
    )
    return Catalog(spec, segments, offers, digest, source)


def _digest(location: Path) -> str:
    h = hashlib.sha256()
    for file in catalog_files(location):
        if file.exists():
            h.update(file.name.encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def check_catalog(location: str | Path) -> list[CatalogProblem]:
    """Every problem in the catalog at ``location`` (a file or a folder of YAML files)."""
    try:
        load_catalog(location)
    except CatalogError as exc:
        return exc.problems
    return []


def load_catalog(location: str | Path) -> Catalog:
    """Load and compile; raise CatalogError listing every problem found."""
    path = Path(location)
    raw, smap, problems = read_sources(path)
    catalog = None
    if not problems:
        catalog = _compile(raw, smap, problems, _digest(path), str(path))
    if catalog is None:
        raise CatalogError(problems)
    return catalog
