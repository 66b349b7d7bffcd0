"""Compile a catalog: the raw mapping, as parsed from its YAML, to a checked ``Catalog``.

Pure: the adapter (``nextbest.store.catalog_files``) reads the files, records where every value
stands in a ``SourceMap`` and computes the digest. Every problem is reported with its file, line,
field path and a reason, all of them at once. Rules are compiled once here, and type checked
against the variables they can see (``rules.typecheck``).

Errors refuse the catalog; warnings (``catalog.lint``: URL patterns that match nothing, event
names nobody sends, schedules that ended or whose end is ambiguous) are kept on the compiled
``Catalog.warnings``. Schedules are judged against ``now`` when the caller passes it (the core
reads no clock).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, TypeVar

import msgspec

from nextbest.catalog.advisors import (
    advisor_placement_problems,
    advisor_warnings,
    callback_kpi_warnings,
    compile_advisors,
)
from nextbest.catalog.compiled import Catalog, CompiledKpi, CompiledOffer
from nextbest.catalog.lint import (
    campaign_warnings,
    cel_rule_warnings,
    event_vocabulary,
    kpi_warning,
    schedule_warnings,
    security_warnings,
    topic_warnings,
)
from nextbest.catalog.model import (
    AdvisorSpec,
    CallbackPolicy,
    CampaignSpec,
    CatalogSpec,
    Category,
    ContactPolicy,
    GuardrailSpec,
    KpiSpec,
    Objective,
    OfferKind,
    OfferSpec,
    PlacementKind,
    PlacementSpec,
    ProfileSettings,
    ScoringSpec,
    SecuritySpec,
    SegmentSpec,
)
from nextbest.catalog.source_map import SourceMap
from nextbest.catalog.when import parse_when
from nextbest.errors import CatalogError, CatalogProblem, RuleError, split_msgspec_message
from nextbest.profile.consent import ConsentSpec, DataSource
from nextbest.profile.sources import FeatureSources
from nextbest.profile.topics import TopicSpec
from nextbest.rules.context import RULE_ROOTS
from nextbest.rules.expression import Rule, compile_rule
from nextbest.rules.reads import REASON_FIELDS, needs_of
from nextbest.rules.schema import DYN, RuleType, map_of, rule_schema
from nextbest.rules.typecheck import check_rule, did_you_mean

__all__ = [
    "KPI_ROOTS",
    "SECTIONS_LIST",
    "SECTIONS_SINGLE",
    "compile_catalog",
    "parse_when",
    "section_problem",
]

#: what a KPI's ``where`` condition reads: the KPI event's properties and context
KPI_ROOTS = frozenset({"properties", "context"})
_KPI_SCHEMA: dict[str, RuleType] = {root: map_of(DYN) for root in sorted(KPI_ROOTS)}

#: sections whose items concatenate across files, and sections defined once
SECTIONS_LIST = ("topics", "segments", "offers", "campaigns", "placements", "advisors")
SECTIONS_SINGLE = (
    "version",
    "contact_policy",
    "scoring",
    "profile",
    "holdout_share",
    "callbacks",
    "security",
    "consent",
)

_SINGLE_TYPES: dict[str, type[Any]] = {
    "callbacks": CallbackPolicy,
    "contact_policy": ContactPolicy,
    "scoring": ScoringSpec,
    "profile": ProfileSettings,
    "security": SecuritySpec,
    "consent": ConsentSpec,
}
#: the root only service messages may read (what the identity-theft guard found)
_SECURITY = "security"


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T")
S = TypeVar("S", bound=_Identified)
#: how a name is quoted in a message: as ``repr`` quotes it
_Q = "'"
#: a validity window in epoch seconds; None is open-ended
_Bounds = tuple[float | None, float | None]


def compile_catalog(
    raw: Mapping[str, Any],
    source_map: SourceMap,
    *,
    digest: str,
    source: str,
    now: float | None = None,
) -> Catalog:
    """Check and compile ``raw``; raise CatalogError listing every problem found (its
    errors, then the warnings found alongside).

    ``raw`` is the whole catalog (the sections in ``SECTIONS_LIST`` and ``SECTIONS_SINGLE``),
    ``source_map`` says where each of its values stands, ``digest`` is a hash of the catalog's
    bytes (it ends ``Catalog.version``) and ``source`` names where the catalog was read from.
    ``now``: when the catalog is checked; schedules that ended by then are warnings.
    """
    problems = [
        source_map.problem(f"$.{key}", reason)
        for key, value in raw.items()
        if (reason := section_problem(key, value)) is not None
    ]
    if problems:
        raise CatalogError(problems)
    sections = _convert_sections(_plain(dict(raw)), source_map, problems)
    schema = sections.schema()
    segments = _compile_segments(sections, schema, source_map, problems)
    owner, windows = _assign_campaigns(sections, source_map, problems)
    offers = _compile_offers(sections, owner, windows, schema, source_map, problems)
    _check_placements(sections.placements, offers, sections.broken, source_map, problems)
    _check_offer_placements(sections, source_map, problems)
    kpis = _compile_campaigns(sections, source_map, problems)
    _check_security(sections, source_map, problems)
    topic_ids = {t.id for t in sections.topics} | sections.broken
    policy = sections.singles.get("callbacks", CallbackPolicy())
    advisors = compile_advisors(sections.advisors, topic_ids, policy, source_map, problems)
    errors = [p for p in problems if p.is_error]
    wrong = {p.path for p in errors}  # a field with an error is not warned about too
    warnings = [
        w for w in _warnings(sections, offers, windows, source_map, now) if w.path not in wrong
    ]
    if errors:
        raise CatalogError(errors + warnings)
    return Catalog(sections.spec(), segments, offers, digest, source, warnings, kpis, advisors)


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
    advisors: list[tuple[str, AdvisorSpec]]
    holdout: float
    singles: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: ids of items that did not convert: already reported, so not reported again as unknown
    broken: set[str] = dataclasses.field(default_factory=set)
    #: single sections given that did not convert (already reported)
    failed: set[str] = dataclasses.field(default_factory=set)

    def schema(self) -> dict[str, RuleType]:
        """The type of every variable rules see, with this catalog's names (and the ids of
        items that did not convert: already reported, so not reported again as unknown)."""
        return rule_schema(
            sorted({t.id for t in self.topics} | self.broken),
            sorted({s.id for _, s in self.segments} | self.broken),
            sorted({o.id for _, o in self.offers} | self.broken),
        )

    def spec(self) -> CatalogSpec:
        return CatalogSpec(
            version=self.version,
            topics=self.topics,
            segments=[s for _, s in self.segments],
            offers=[o for _, o in self.offers],
            campaigns=[c for _, c in self.campaigns],
            placements=[p for _, p in self.placements],
            advisors=[a for _, a in self.advisors],
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
    advisors = _items(raw, "advisors", AdvisorSpec, smap, problems, broken)
    singles: dict[str, Any] = {}
    failed: set[str] = set()
    for key, kind in _SINGLE_TYPES.items():
        if key in raw:
            value = _convert(raw[key], kind, f"$.{key}", smap, problems)
            if value is not None:
                singles[key] = value
            else:
                failed.add(key)
    holdout = raw.get("holdout_share", 0.0)
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout <= 0.5:
        reason = _as_percentage(holdout, 0.5) or "must be a number from 0 to 0.5"
        problems.append(smap.problem("$.holdout_share", reason))
        holdout = 0.0
    return _Sections(
        version=str(raw.get("version", "1")),
        topics=topics,
        segments=segments,
        offers=offers,
        campaigns=campaigns,
        placements=placements,
        advisors=advisors,
        holdout=float(holdout or 0.0),
        singles=singles,
        broken=broken,
        failed=failed,
    )


def _compile_segments(
    sections: _Sections,
    schema: Mapping[str, RuleType],
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> list[tuple[SegmentSpec, Rule]]:
    segments: list[tuple[SegmentSpec, Rule]] = []
    for path, seg in sections.segments:
        if "segments." in seg.rule:
            problems.append(smap.problem(f"{path}.rule", "a segment rule may not use segments"))
            continue
        if _reads_security(seg.rule):
            problems.append(smap.problem(f"{path}.rule", _NO_SALES_USE.format(what="a segment")))
            continue
        rule = _rule(seg.rule, f"{path}.rule", smap, problems, schema)
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
                problems.append(
                    smap.problem(
                        f"{path}.offers[{j}]",
                        f"unknown offer {oid!r}{did_you_mean(oid, offer_ids, quote=_Q)}",
                    )
                )
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
    windows: dict[str, _Bounds],
    schema: Mapping[str, RuleType],
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> dict[str, CompiledOffer]:
    """Offers with their rule compiled and their window narrowed to their campaign's (each
    offer's window goes into ``windows`` under its id)."""
    topic_ids = {t.id for t in sections.topics}
    broken = sections.broken
    scoring = sections.singles.get("scoring", ScoringSpec())
    offers: dict[str, CompiledOffer] = {}
    for path, offer in sections.offers:
        if offer.topic is not None and offer.topic not in topic_ids | broken:
            hint = did_you_mean(offer.topic, topic_ids, quote=_Q)
            problems.append(smap.problem(f"{path}.topic", f"unknown topic {offer.topic!r}{hint}"))
            continue
        if not offer.content:
            problems.append(smap.problem(f"{path}.content", "needs content for a channel"))
            continue
        if offer.kind is not OfferKind.SERVICE and _reads_security(offer.eligibility):
            what = "a commercial offer's eligibility"
            problems.append(smap.problem(f"{path}.eligibility", _NO_SALES_USE.format(what=what)))
            continue
        guard_off = _SECURITY not in sections.singles and _SECURITY not in sections.failed
        rules = {"eligibility": offer.eligibility, "urgent": offer.urgent, "insight": offer.insight}
        reading = [f for f, r in rules.items() if r is not None and _reads_security(r)]
        if guard_off and reading:
            problems.append(smap.problem(f"{path}.{reading[0]}", _GUARD_OFF))
            continue
        rule = _rule(offer.eligibility, f"{path}.eligibility", smap, problems, schema)
        ok, urgent = _trigger(offer, path, smap, problems, schema)
        fields = _reason_fields(offer, path, smap, problems)
        if not ok or fields is None:
            continue
        lo, hi = _window(
            offer.valid_from, offer.valid_until, path, ("valid_from", "valid_until"), smap, problems
        )
        well_formed = _open(lo, hi)  # an empty window is reported where it is written
        camp = owner.get(offer.id)
        if camp is not None:
            c_lo, c_hi = windows[camp.id]
            well_formed = well_formed and _open(c_lo, c_hi)
            lo, hi = _tighter(lo, c_lo, max), _tighter(hi, c_hi, min)
        if well_formed:
            windows[offer.id] = (lo, hi)
        if rule is not None:
            offers[offer.id] = CompiledOffer(offer, rule, camp, scoring, lo, hi, urgent, fields)
    return offers


def _trigger(
    offer: OfferSpec,
    path: str,
    smap: SourceMap,
    problems: list[CatalogProblem],
    schema: Mapping[str, RuleType],
) -> tuple[bool, Rule | None]:
    """The offer's ``urgent`` or ``insight`` trigger compiled (None without one), and whether
    it is well formed: a service message's, one of the two at most."""
    if offer.urgent is not None and offer.insight is not None:
        problems.append(
            smap.problem(f"{path}.insight", "an offer is urgent or an insight, not both")
        )
        return False, None
    field, source = (
        ("urgent", offer.urgent) if offer.urgent is not None else ("insight", offer.insight)
    )
    if source is None:
        return True, None
    if offer.kind is not OfferKind.SERVICE:
        what = "urgent" if field == "urgent" else "an insight"
        problems.append(smap.problem(f"{path}.{field}", f"only a service message can be {what}"))
        return False, None
    rule = _rule(source, f"{path}.{field}", smap, problems, schema)
    return rule is not None, rule


#: ``{profile.<field>}`` in an offer's reason
_PLACEHOLDER = re.compile(r"\{profile\.([A-Za-z_][A-Za-z0-9_]*)\}")


def _reason_fields(
    offer: OfferSpec, path: str, smap: SourceMap, problems: list[CatalogProblem]
) -> tuple[str, ...] | None:
    """The profile fields the offer's reason names (``{profile.<field>}``), each a scalar
    rule field; None (with a problem) when one is not."""
    names = tuple(dict.fromkeys(_PLACEHOLDER.findall(offer.reason or "")))
    wrong = [n for n in names if n not in REASON_FIELDS]
    if wrong:
        hint = did_you_mean(wrong[0], REASON_FIELDS, quote=_Q)
        problems.append(
            smap.problem(
                f"{path}.reason",
                f"{{profile.{wrong[0]}}} is no field a reason can show{hint}",
            )
        )
        return None
    return names


_NO_SALES_USE = (
    "{what} may not read security.*: what the identity-theft guard finds serves the "
    "customer's security alone and is never used to sell (docs/guard.md); a service "
    "message may read it"
)
_GUARD_OFF = (
    "security.* reads the identity-theft guard, which is off: add a security section "
    "(docs/catalog.md)"
)


def _reads_security(source: str) -> bool:
    """``source`` reads the ``security`` root (a rule that does not parse: no; its parse
    error is reported where it is compiled)."""
    return _SECURITY in needs_of(source, RULE_ROOTS)


def _check_security(sections: _Sections, smap: SourceMap, problems: list[CatalogProblem]) -> None:
    """The security section's sensitive kinds: unique, each matching something."""
    security = sections.singles.get("security")
    if security is None:
        return
    seen: dict[str, int] = {}
    for i, kind in enumerate(security.sensitive):
        path = f"$.security.sensitive[{i}]"
        if kind.kind in seen:
            first = seen[kind.kind]
            problems.append(
                smap.problem(
                    f"{path}.kind",
                    f"duplicate kind {kind.kind!r} (first at $.security.sensitive[{first}])",
                )
            )
            continue
        seen[kind.kind] = i
        if not kind.url_patterns and not kind.events:
            problems.append(
                smap.problem(path, "names no url_patterns and no events: it matches nothing")
            )


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
        for where, reason in advisor_placement_problems(path, pl):
            problems.append(smap.problem(where, reason))
        if pl.kind is PlacementKind.ADVISOR:
            continue  # its fallback is reported above
        for j, oid in enumerate(pl.fallback):
            offer = offers.get(oid)
            if offer is None and oid in broken:
                continue  # already reported where the offer is defined
            if offer is None:
                problems.append(
                    smap.problem(
                        f"{path}.fallback[{j}]",
                        f"unknown offer {oid!r}{did_you_mean(oid, offers, quote=_Q)}",
                    )
                )
            elif offer.spec.placements and pl.id not in offer.spec.placements:
                problems.append(
                    smap.problem(
                        f"{path}.fallback[{j}]",
                        f"offer {oid!r} is limited to placements "
                        f"{', '.join(offer.spec.placements)}: it cannot appear in this one",
                    )
                )
            elif pl.channel not in offer.spec.content or offer.kind not in pl.kinds:
                problems.append(
                    smap.problem(
                        f"{path}.fallback[{j}]",
                        f"offer {oid!r} cannot appear in this placement "
                        f"(no {pl.channel.value} content, or kind {offer.kind.value} not allowed)",
                    )
                )


def _check_offer_placements(
    sections: _Sections, smap: SourceMap, problems: list[CatalogProblem]
) -> None:
    """An offer's ``placements`` name placements where it can appear."""
    placements = {pl.id: pl for _, pl in sections.placements}
    for path, offer in sections.offers:
        for j, pid in enumerate(offer.placements):
            pl = placements.get(pid)
            where = f"{path}.placements[{j}]"
            if pl is None:
                if pid not in sections.broken:
                    problems.append(
                        smap.problem(
                            where,
                            f"unknown placement {pid!r}{did_you_mean(pid, placements, quote=_Q)}",
                        )
                    )
            elif pl.kind is PlacementKind.ADVISOR:
                problems.append(
                    smap.problem(where, f"placement {pid!r} shows an advisor card, never an offer")
                )
            elif pl.channel not in offer.content:
                problems.append(
                    smap.problem(
                        where,
                        f"placement {pid!r} shows {pl.channel.value} content, and the offer "
                        f"has none (it has {', '.join(c.value for c in offer.content)})",
                    )
                )
            elif offer.kind not in pl.kinds:
                problems.append(
                    smap.problem(
                        where,
                        f"placement {pid!r} shows only "
                        f"{', '.join(k.value for k in pl.kinds)} content, and the offer is "
                        f"{offer.kind.value}",
                    )
                )


def _compile_campaigns(
    sections: _Sections, smap: SourceMap, problems: list[CatalogProblem]
) -> dict[str, list[CompiledKpi]]:
    """Each campaign's KPIs (the primary first, then the guardrails) with their ``where``
    compiled and type checked; its variants' content and its audiences checked."""
    offers = {o.id: o for _, o in sections.offers}
    segment_ids = {s.id for _, s in sections.segments} | sections.broken
    out: dict[str, list[CompiledKpi]] = {}
    for path, camp in sections.campaigns:
        kpis: list[CompiledKpi] = []
        wheres: list[tuple[KpiSpec | GuardrailSpec, str]] = [(camp.primary_kpi, f"{path}.kpi")]
        wheres += [(g, f"{path}.guardrails[{j}]") for j, g in enumerate(camp.guardrail_kpis)]
        for spec, where in wheres:
            if spec.value is not None and not _PROPERTY.match(spec.value):
                problems.append(
                    smap.problem(
                        f"{where}.value",
                        f"{spec.value!r} is no property name: write the name of a number "
                        "property of the event, such as amount",
                    )
                )
            rule = _rule(spec.where, f"{where}.where", smap, problems, _KPI_SCHEMA, KPI_ROOTS)
            if rule is not None:
                kpis.append(CompiledKpi(spec, rule, guardrail=where != f"{path}.kpi"))
        out[camp.id] = kpis
        _check_variants(path, camp, offers, sections.broken, smap, problems)
        for j, seg in enumerate(camp.audiences):
            if seg not in segment_ids:
                hint = did_you_mean(seg, segment_ids, quote=_Q)
                problems.append(
                    smap.problem(f"{path}.audiences[{j}]", f"unknown segment {seg!r}{hint}")
                )
    return out


_PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _check_variants(
    path: str,
    camp: CampaignSpec,
    offers: Mapping[str, OfferSpec],
    broken: Collection[str],
    smap: SourceMap,
    problems: list[CatalogProblem],
) -> None:
    """Variant ids are unique; a variant's content replaces content its campaign's offers
    have (an offer of the campaign, a channel the offer shows)."""
    seen: set[str] = set()
    for j, variant in enumerate(camp.variants):
        at = f"{path}.variants[{j}]"
        if variant.id in seen:
            problems.append(smap.problem(f"{at}.id", f"duplicate variant {variant.id!r}"))
        seen.add(variant.id)
        for oid, channels in variant.content.items():
            if oid in broken:
                continue
            if oid not in camp.offers:
                hint = did_you_mean(oid, camp.offers, quote=_Q)
                problems.append(
                    smap.problem(
                        f"{at}.content.{oid}",
                        f"offer {oid!r} is not in this campaign{hint}: a variant changes the "
                        f"content of the campaign's offers ({', '.join(camp.offers)})",
                    )
                )
                continue
            offer = offers.get(oid)
            if offer is None:
                continue  # reported where the campaign names it
            for channel in channels:
                if channel not in offer.content:
                    problems.append(
                        smap.problem(
                            f"{at}.content.{oid}.{channel.value}",
                            f"offer {oid!r} has no {channel.value} content to replace (it has "
                            f"{', '.join(c.value for c in offer.content)})",
                        )
                    )


def _warnings(
    sections: _Sections,
    offers: Mapping[str, CompiledOffer],
    windows: Mapping[str, _Bounds],
    smap: SourceMap,
    now: float | None,
) -> list[CatalogProblem]:
    """What loads but may show nothing (``catalog.lint``), placed in the files."""
    found: list[tuple[str, str]] = []
    sources = FeatureSources(sections.singles.get("consent", ConsentSpec()))
    for i, topic in enumerate(sections.topics):
        found += topic_warnings(f"$.topics[{i}]", topic)
        for j, name in enumerate(topic.events):
            source = sources.event(name)
            if source is not DataSource.BEHAVIORAL:
                kind = source.value if source is not None else "no customer data"
                found.append(
                    (
                        f"$.topics[{i}].events[{j}]",
                        f"{name!r} is {kind}, not behaviour: it never counts as interest "
                        "in the topic (only its funnel stage, if it has one, moves)",
                    )
                )
    security = sections.singles.get("security")
    if security is not None:
        found += security_warnings("$.security", security)
    profile = sections.singles.get("profile", ProfileSettings())
    vocabulary = event_vocabulary(sections.topics, profile.event_weights)
    for path, offer in sections.offers:
        if offer.kpi_event is not None:
            reason = kpi_warning(
                offer.kpi_event, vocabulary, "no event will ever count as a conversion of it"
            )
            if reason is not None:
                found.append((f"{path}.kpi_event", reason))
    for path, camp in sections.campaigns:
        found += campaign_warnings(path, camp, vocabulary)
    live = [(p, o) for p, o in sections.offers if o.id in offers]
    found += schedule_warnings(sections.campaigns, live, windows, now)
    found += cel_rule_warnings(
        [(f"{path}.rule", seg.rule) for path, seg in sections.segments]
        + [
            (f"{path}.{field}", source)
            for path, offer in sections.offers
            for field, source in (
                ("eligibility", offer.eligibility),
                ("urgent", offer.urgent),
                ("insight", offer.insight),
            )
        ]
    )
    found += advisor_warnings(sections.placements, sections.advisors)
    found += callback_kpi_warnings(sections.offers, sections.advisors)
    return [smap.warning(path, reason) for path, reason in found]


def _plain(value: Any) -> Any:
    """YAML dates and times to ISO strings, so one string type carries them."""
    if isinstance(value, dict):  # keys too: dates name working-hours exceptions
        return {
            (k.isoformat() if isinstance(k, datetime | date) else k): _plain(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


#: the fields that hold a rule (CEL text)
_RULE_FIELDS = frozenset({"rule", "eligibility", "urgent", "insight"})


def _rule_texts(item: Any) -> Any:
    """A rule written as a YAML boolean (``eligibility: false``) as its CEL text."""
    if not isinstance(item, dict) or not any(isinstance(item.get(f), bool) for f in _RULE_FIELDS):
        return item
    return {
        k: ("true" if v else "false") if k in _RULE_FIELDS and isinstance(v, bool) else v
        for k, v in item.items()
    }


def _convert(
    value: Any, kind: type[T], path: str, smap: SourceMap, problems: list[CatalogProblem]
) -> T | None:
    try:
        return msgspec.convert(_rule_texts(value), kind, strict=False)
    except msgspec.ValidationError as exc:
        reason, where = split_msgspec_message(str(exc))
        explained = _explained(reason, where, value, kind)
        unknown = _UNKNOWN_FIELD.match(reason)
        if unknown is not None:  # the misspelt field's own line
            where = f"{where}.{unknown.group(1)}"
        key = _bad_key(reason, where, kind)
        if key is not None:  # the misspelt key's own line
            where = f"{where}.{key}"
        problems.append(smap.problem(path + where[1:], explained))
        return None


_BAD_ENUM = re.compile(r"^Invalid enum value '?([^']*)'?$")


def _bad_key(reason: str, where: str, kind: type[Any]) -> str | None:
    """The key that is no choice of a mapping keyed by an enum (``weekly: {monday: ...}``),
    or None."""
    match = _BAD_ENUM.match(reason)
    leaf = _type_at(kind, where)
    if match is None or not isinstance(leaf, msgspec.inspect.DictType):
        return None
    return match.group(1) if isinstance(leaf.key_type, msgspec.inspect.EnumType) else None


_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _value_at(value: Any, where: str) -> Any:
    """The value at msgspec path ``where`` (``$.learning.explore.epsilon``) under
    ``value``, or None."""
    for name, index in _STEP.findall(where):
        if name and isinstance(value, dict):
            value = value.get(name)
        elif index and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


def _explained(reason: str, where: str, item: Any, kind: type[Any]) -> str:
    """msgspec's reason, explained where a marketer's intent is plain: a share written as a
    percentage (``control_share: 10``), a rule written as a number, a hypothesis written as
    one sentence, a misspelt field or choice (with the closest one), a missing campaign
    field (with an example)."""
    field = where.rsplit(".", 1)[-1]
    value = _value_at(item, where)
    top = _fraction_fields().get(field)
    if top is not None:
        return _as_percentage(value, top) or reason
    if field in _RULE_FIELDS and not isinstance(value, str) and value is not None:
        return (
            f"a rule is a condition written as text, such as profile.age >= 18: {value!r} is "
            f"{'a number' if isinstance(value, int | float) else 'no text'}, not a condition"
        )
    unknown = _UNKNOWN_FIELD.match(reason)
    if unknown is not None:
        fields = _field_names(_type_at(kind, where))
        name = unknown.group(1)
        if fields:
            return (
                f"unknown field {name!r}{did_you_mean(name, fields, quote=_Q)}; the fields "
                f"here are {', '.join(fields)}"
            )
        return reason
    leaf = _type_at(kind, where)
    key = _bad_key(reason, where, kind)
    if key is not None and isinstance(leaf, msgspec.inspect.DictType):
        leaf, value = leaf.key_type, key
    if reason.startswith("Invalid enum value") and isinstance(leaf, msgspec.inspect.EnumType):
        choices = [str(m.value) for m in leaf.cls]
        return (
            f"{value!r} is not one of {', '.join(choices)}"
            f"{did_you_mean(str(value), choices, quote=_Q)}"
        )
    if field == "hypothesis" and isinstance(value, str):
        return f"{_HYPOTHESIS} (not one sentence: {value!r})"
    if _MISSING_FIELD.match(reason) and field in _CAMPAIGN_HELP:
        return f"{reason}: {_CAMPAIGN_HELP[field]}"
    return reason


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]+)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`$")
_HYPOTHESIS = (
    "a hypothesis has three parts: observation (what was seen), change (what the campaign "
    "does) and expected (the primary metric expected to move), such as {observation: "
    "Researchers visit mortgage pages often without booking a call, change: Invite them to "
    "a free advice call on the home page, expected: More mortgage applications within 14 "
    "days}"
)
_CAMPAIGN_HELP = {
    "hypothesis": _HYPOTHESIS,
    "kpi": (
        "the primary KPI, an event name (kpi: Application Started) or {event: Application "
        'Submitted, where: properties.product == "mortgage", within_days: 14}'
    ),
    "objective": "one of " + ", ".join(o.value for o in Objective),
    "category": "what is tested, one of " + ", ".join(c.value for c in Category),
}


def _type_at(kind: type[Any], where: str) -> Any:
    """The msgspec type (``msgspec.inspect``) at msgspec path ``where`` under ``kind``, or
    None; a union is followed through its one member that can hold the step."""
    t: Any = msgspec.inspect.type_info(kind)
    for name, index in _STEP.findall(where):
        t = _unwrapped(t, name)
        if name and isinstance(t, msgspec.inspect.StructType):
            t = next((f.type for f in t.fields if f.name == name), None)
        elif name and isinstance(t, msgspec.inspect.DictType):
            t = t.value_type
        elif index and isinstance(t, msgspec.inspect.ListType):
            t = t.item_type
        else:
            return None
    return _unwrapped(t, "")


def _unwrapped(t: Any, step: str) -> Any:
    """A union's member: the struct with field ``step``, else the one that is not None/str."""
    if not isinstance(t, msgspec.inspect.UnionType):
        return t
    members = [m for m in t.types if not isinstance(m, msgspec.inspect.NoneType)]
    for m in members:
        if isinstance(m, msgspec.inspect.StructType) and (
            not step or any(f.name == step for f in m.fields)
        ):
            return m
    rest = [m for m in members if not isinstance(m, msgspec.inspect.StrType)]
    return rest[0] if len(rest) == 1 else (members[0] if len(members) == 1 else None)


def _field_names(t: Any) -> list[str]:
    return [f.name for f in t.fields] if isinstance(t, msgspec.inspect.StructType) else []


def _as_percentage(value: Any, top: float) -> str | None:
    """``10 looks like a percentage ...`` for a share given in percent (10, "10%"), else
    None."""
    number: float | None = None
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip().rstrip("%").strip())
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool) and 1 < value <= 100:
        number = float(value)
    if number is None:
        return None
    return (
        f"{value!r} looks like a percentage, and this is a fraction from 0 to {top:g}: "
        f"{number:g} % is written {number / 100:g}"
    )


@functools.cache
def _fraction_fields() -> dict[str, float]:
    """Each catalog field that holds a share or a probability (a float at most 1), with its
    upper bound: read from the specs' constraints, so a new one is explained too."""
    found: dict[str, float] = {"holdout_share": 0.5}

    def walk(t: Any, seen: set[type[Any]]) -> None:
        if isinstance(t, msgspec.inspect.StructType):
            if t.cls in seen:
                return
            seen.add(t.cls)
            for f in t.fields:
                for leaf in _leaves(f.type):
                    top = _upper(leaf)
                    if top is not None and top <= 1.0:
                        found[f.name] = top
                    walk(leaf, seen)
        elif isinstance(t, msgspec.inspect.ListType | msgspec.inspect.DictType):
            for leaf in _leaves(t):
                walk(leaf, seen)

    walk(msgspec.inspect.type_info(CatalogSpec), set())
    return found


def _leaves(t: Any) -> list[Any]:
    if isinstance(t, msgspec.inspect.UnionType):
        return list(t.types)
    if isinstance(t, msgspec.inspect.ListType):
        return [t.item_type]
    if isinstance(t, msgspec.inspect.DictType):
        return [t.value_type]
    return [t]


def _upper(t: Any) -> float | None:
    if not isinstance(t, msgspec.inspect.FloatType):
        return None
    bounds = [b for b in (t.le, t.lt) if b is not None]
    return float(min(bounds)) if bounds else None


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
    schema: Mapping[str, RuleType],
    roots: frozenset[str] = RULE_ROOTS,
) -> Rule | None:
    """The rule compiled, or None with every problem found in it reported at ``path``."""
    try:
        rule = compile_rule(source, roots)
    except RuleError as exc:
        problems.append(smap.problem(path, exc.message))
        return None
    found = check_rule(source, schema)
    for reason in found:
        problems.append(smap.problem(path, reason))
    return None if found else rule


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
        problems.append(
            smap.problem(
                f"{path}.{names[1]}",
                f"must be after {names[0]} ({end} is not after {start}; {names[1]} is exclusive)",
            )
        )
    return lo, hi


def _open(lo: float | None, hi: float | None) -> bool:
    return lo is None or hi is None or lo < hi


def _tighter(a: float | None, b: float | None, pick: Any) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(pick(a, b))
