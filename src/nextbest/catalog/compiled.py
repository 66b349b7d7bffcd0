"""The compiled catalog: what decide, learn and fold read. Built by ``compile_catalog``.

Offers are indexed by placement so a decision only looks at candidates that can appear in the
placement it is asked about; advisors by topic (``Catalog.experts``), so the routing only
looks at the experts of the topic it routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, tzinfo

import cel

from nextbest.catalog.hours import Span, day_spans
from nextbest.catalog.model import (
    AdvisorSpec,
    CampaignSpec,
    CatalogSpec,
    Channel,
    Content,
    GuardrailSpec,
    KpiSpec,
    OfferKind,
    OfferSpec,
    PlacementKind,
    PlacementSpec,
    ScoringSpec,
    SegmentSpec,
)
from nextbest.errors import CatalogProblem
from nextbest.events.model import Event
from nextbest.guard.watch import Guard, SensitiveKind
from nextbest.profile.consent import ConsentRules
from nextbest.profile.fold import FoldConfig, activity_keys
from nextbest.profile.kpis import KpiWatch, kpi_key
from nextbest.profile.sources import FeatureSources
from nextbest.profile.topics import TopicMatcher
from nextbest.rules.expression import Rule, RuleOutcome
from nextbest.rules.reads import RuleReads, paths_read

__all__ = [
    "ADVISOR_CARD",
    "Catalog",
    "CompiledAdvisor",
    "CompiledKpi",
    "CompiledOffer",
    "CompiledVariants",
    "advisor_card_id",
]

#: the prefix of an advisor card's id (``advisor:mortgage``): what the card's decision item
#: names as its ``offer_id``, and feedback as its ``promotion_id``; no catalog id has a colon
ADVISOR_CARD = "advisor:"


def advisor_card_id(topic: str) -> str:
    """The id of the advisor card for ``topic``: its impressions, clicks and dismissals are
    kept in the profile's offer history under it, so the contact policy caps it."""
    return ADVISOR_CARD + topic


class CompiledKpi:
    """A campaign's KPI (or guardrail) with its ``where`` condition compiled: what the
    experiment counters match KPI events with. ``key`` names its window in the profile
    (``profile.kpis``), where its pre-exposure covariate is read from."""

    __slots__ = ("guardrail", "key", "spec", "where")

    def __init__(self, spec: KpiSpec | GuardrailSpec, where: Rule, *, guardrail: bool) -> None:
        self.spec = spec
        self.where = where
        self.guardrail = guardrail
        self.key = kpi_key(spec.event, spec.where, spec.value)

    @property
    def conversion(self) -> bool:
        """Converted or not (no ``value`` summed)."""
        return self.spec.value is None

    def holds(self, event: Event) -> bool:
        """``where`` holds for ``event`` (false on an error)."""
        if self.where.source == "true":
            return True
        context = cel.Context(variables={"properties": event.properties, "context": event.context})
        return self.where.check(context) is RuleOutcome.TRUE

    def watch(self) -> KpiWatch:
        """What the fold keeps this KPI's window with."""
        return KpiWatch(self.spec.event, self.spec.where, self.spec.value, self.holds)


class CompiledVariants:
    """A campaign's variants as assignment reads them: each variant's upper bound on the
    treated customers' bucket (cumulative weights, the last 1.0) and its content."""

    __slots__ = ("bounds", "content", "ids")

    def __init__(self, campaign: CampaignSpec) -> None:
        total = sum(v.weight for v in campaign.variants)
        acc = 0.0
        bounds: list[float] = []
        for v in campaign.variants:
            acc += v.weight
            bounds.append(acc / total)
        if bounds:
            bounds[-1] = 1.0
        self.bounds = tuple(bounds)
        self.ids = tuple(v.id for v in campaign.variants)
        #: variant id -> offer id -> channel -> content
        self.content: dict[str, dict[str, dict[Channel, Content]]] = {
            v.id: v.content for v in campaign.variants
        }


class CompiledOffer:
    """An offer ready for decisions: its rule compiled, its campaign and window resolved."""

    __slots__ = (
        "base_conversion",
        "base_ctr",
        "campaign",
        "id",
        "insight",
        "kind",
        "reason_fields",
        "rule",
        "segment_names",
        "spec",
        "topic",
        "urgent_rule",
        "valid_from",
        "valid_until",
        "variants",
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
        urgent_rule: Rule | None = None,
        reason_fields: tuple[str, ...] = (),
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self.kind = spec.kind
        self.topic = spec.topic
        self.rule = rule
        #: the service message's trigger (``OfferSpec.urgent``, or ``OfferSpec.insight``),
        #: None without one
        self.urgent_rule = urgent_rule
        #: the trigger is an insight's (``OfferSpec.insight``): first while it holds, yet
        #: capped and rested like any other content
        self.insight = spec.insight is not None and urgent_rule is not None
        #: the profile fields the reason shows (``{profile.<field>}``)
        self.reason_fields = reason_fields
        self.campaign = campaign
        self.weight = campaign.weight if campaign is not None else 1.0
        #: the campaign's variants (None: it has none, every treated customer sees the offer's
        #: own content)
        self.variants = (
            CompiledVariants(campaign) if campaign is not None and campaign.variants else None
        )
        default = scoring.service_ctr if spec.kind is OfferKind.SERVICE else scoring.commercial_ctr
        self.base_ctr = spec.prior_ctr if spec.prior_ctr is not None else default
        #: P(conversion | click) before any is observed
        self.base_conversion = (
            spec.prior_conversion if spec.prior_conversion is not None else scoring.conversion_rate
        )
        if campaign is not None and not campaign.running:
            # a draft, paused or stopped campaign shows nothing: never live
            valid_from, valid_until = 0.0, 0.0
        self.valid_from = valid_from
        self.valid_until = valid_until
        #: segments the eligibility rule names, in order: the reasons cite those that hold
        self.segment_names = tuple(sorted(f for root, f in rule.fields if root == "segments"))

    def fits(self, placement: PlacementSpec) -> bool:
        """The offer may appear in ``placement``: it has content for the placement's channel,
        its kind is allowed there, and its ``placements`` (if any) name it."""
        spec = self.spec
        return (
            placement.kind is PlacementKind.OFFERS
            and placement.channel in spec.content
            and self.kind in placement.kinds
            and (not spec.placements or placement.id in spec.placements)
        )

    def live_at(self, now: float) -> bool:
        return (self.valid_from is None or now >= self.valid_from) and (
            self.valid_until is None or now < self.valid_until
        )


class CompiledAdvisor:
    """An advisor ready for routing: their time zone loaded, their hours as spans per weekday
    (``weekly[0]`` is Monday) and per exceptional date (the bank's holidays included), their
    expertise as topic -> level."""

    __slots__ = (
        "exceptions",
        "holidays",
        "hours_group",
        "hours_key",
        "id",
        "languages",
        "levels",
        "max_concurrent",
        "spec",
        "weekly",
        "zone",
    )

    def __init__(
        self,
        spec: AdvisorSpec,
        zone: tzinfo,
        weekly: tuple[tuple[Span, ...], ...],
        exceptions: dict[date, tuple[Span, ...]],
        holidays: frozenset[date] = frozenset(),
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self.zone = zone
        self.weekly = weekly
        self.exceptions = exceptions
        self.holidays = holidays
        #: equal for advisors whose working hours are the same (zone, week, exceptions,
        #: holidays): their slots start at the same moments
        self.hours_key = (zone, weekly, tuple(sorted(exceptions.items())), holidays)
        #: the same number for the same ``hours_key`` within a catalog (``Catalog`` sets it)
        self.hours_group = 0
        self.levels = {e.topic: e.level for e in spec.expertise}
        self.languages = frozenset(spec.languages)
        self.max_concurrent = spec.max_concurrent

    def spans_on(self, day: date) -> tuple[Span, ...]:
        """Their working spans on local date ``day`` (none on a holiday or a day off)."""
        return day_spans(day, self.weekly, self.exceptions, self.holidays)


class Catalog:
    """The compiled catalog: what decide and fold read. Immutable once built."""

    def __init__(
        self,
        spec: CatalogSpec,
        segments: list[tuple[SegmentSpec, Rule]],
        offers: dict[str, CompiledOffer],
        digest: str,
        source: str,
        warnings: Sequence[CatalogProblem] = (),
        kpis: dict[str, list[CompiledKpi]] | None = None,
        advisors: dict[str, CompiledAdvisor] | None = None,
    ) -> None:
        self.spec = spec
        #: each campaign's KPIs, the primary first, then its guardrails
        self.kpis = kpis or {}
        #: what loads but may show nothing (``catalog.lint``): printed by ``nextbest check``
        self.warnings = list(warnings)
        self.digest = digest
        self.source = source
        self.topics = {t.id: t for t in spec.topics}
        self.matcher = TopicMatcher(tuple(spec.topics))
        #: the advisors, by id, and each topic's experts (by id)
        self.advisors = advisors or {}
        hours: dict[object, int] = {}
        for a in self.advisors.values():
            a.hours_group = hours.setdefault(a.hours_key, len(hours))
        self.experts: dict[str, tuple[CompiledAdvisor, ...]] = {
            t: tuple(a for a in self.advisors.values() if t in a.levels)
            for t in sorted({t for a in self.advisors.values() for t in a.levels})
        }
        self.callbacks = spec.callbacks
        p = spec.profile
        #: the identity-theft guard (the ``security`` section), None without it
        self.guard = _guard(spec)
        #: each customer's permission per purpose and source, and what each view hides
        self.consent = ConsentRules(spec.consent, spec.contact_policy.consent_defaults)
        #: which data source each feature comes from
        self.sources = FeatureSources(spec.consent)
        self.fold_config = FoldConfig(
            page_weight=p.page_weight,
            track_weight=p.track_weight,
            event_weights=dict(p.event_weights),
            session_timeout=p.session_timeout_minutes * 60.0,
            # an advisor card's feedback is kept like an offer's: the contact policy caps it
            offer_ids=frozenset(offers) | self.card_ids,
            kpi_events=_kpi_events(self.kpis),
            watch=self.guard,
            event_sources=self.sources.events,
            trait_sources=self.sources.traits,
            event_keys=activity_keys(self.sources.events),
        )
        self.segments = segments
        self.offers = offers
        #: per offer, the features deciding on it reads and the data sources of each
        #: (``DecisionItem.features`` and ``sources``: what an item says it used)
        self.offer_uses = {
            oid: _offer_uses(offer, segments, self.sources) for oid, offer in offers.items()
        }
        #: per catalog segment, the data sources its rule reads (segments it names: theirs):
        #: what experiment measurement checks against the analytics view
        #: (``experiments.exposure.measured_segments``)
        self.segment_sources = _segment_sources(segments, self.sources)
        self.campaigns = {c.id: c for c in spec.campaigns}
        self.placements = {p.id: p for p in spec.placements}
        self.policy = spec.contact_policy
        self.scoring = spec.scoring
        self.segment_names = {s.id: s.name or s.id for s, _ in segments}
        self.commercial_offers = frozenset(
            o.id for o in offers.values() if o.kind is OfferKind.COMMERCIAL
        )
        rules = [r for _, r in segments] + [o.rule for o in offers.values()]
        rules += [o.urgent_rule for o in offers.values() if o.urgent_rule is not None]
        #: what the rules read, down to the field: all a decision builds and converts to CEL
        self.rule_reads = RuleReads.of(rules)
        self.rule_roots = self.rule_reads.roots
        self.rule_topics = {t: self.topics[t] for t in self.rule_reads.topics_in(self.topics)}
        #: offers the rules name (``offers.x``): rules always see them, zeros if unseen
        self.named_offers = self.rule_reads.named_offers
        #: the candidates of each placement (``CompiledOffer.fits``): a decision looks at no
        #: other offer
        self.by_placement: dict[str, tuple[CompiledOffer, ...]] = {
            pl.id: tuple(o for o in offers.values() if o.fits(pl)) for pl in spec.placements
        }

    @property
    def card_ids(self) -> frozenset[str]:
        """The ids of the advisor cards an advisor placement may show (one per topic with an
        expert; none without an advisor placement)."""
        if not any(p.kind is PlacementKind.ADVISOR for p in self.spec.placements):
            return frozenset()
        return frozenset(advisor_card_id(t) for t in self.experts)

    @property
    def version(self) -> str:
        return f"{self.spec.version}+{self.digest[:12]}"


def _guard(spec: CatalogSpec) -> Guard | None:
    """The identity-theft guard of the catalog's ``security`` section, if any."""
    security = spec.security
    if security is None:
        return None
    return Guard(
        [SensitiveKind(k.kind, k.url_patterns, k.events) for k in security.sensitive],
        threshold=security.threshold,
        session_timeout=spec.profile.session_timeout_minutes * 60.0,
        min_sessions=security.min_sessions,
        alerts=security.alerts,
        alert_destination=security.alert_destination,
    )


def _kpi_events(kpis: dict[str, list[CompiledKpi]]) -> dict[str, tuple[KpiWatch, ...]]:
    """Every campaign KPI's window, once each, by event name (``FoldConfig.kpi_events``)."""
    watches: dict[str, KpiWatch] = {}
    for campaign in sorted(kpis):
        for kpi in kpis[campaign]:
            if kpi.key not in watches:
                watches[kpi.key] = kpi.watch()
    by_event: dict[str, list[KpiWatch]] = {}
    for watch in watches.values():
        by_event.setdefault(watch.event, []).append(watch)
    return {event: tuple(found) for event, found in sorted(by_event.items())}


def _segment_sources(
    segments: Sequence[tuple[SegmentSpec, Rule]], sources: FeatureSources
) -> dict[str, frozenset[str]]:
    """Each segment's data sources: those of its rule's paths, and of the segments it names
    (followed once each: a cycle adds nothing)."""
    rules = {seg.id: rule for seg, rule in segments}
    out: dict[str, frozenset[str]] = {}
    for seg_id in rules:
        found: set[str] = set()
        todo, seen = [seg_id], {seg_id}
        while todo:
            for path in paths_read(rules[todo.pop()]):
                if path[0] != "segments":
                    found |= sources.of_path(path)
                elif len(path) > 1 and path[1] in rules and path[1] not in seen:
                    seen.add(path[1])
                    todo.append(path[1])
                elif len(path) == 1:  # every segment, read whole
                    for other in rules:
                        if other not in seen:
                            seen.add(other)
                            todo.append(other)
        out[seg_id] = frozenset(found)
    return out


#: a feature an offer's decision reads, and the data sources it comes from
FeatureUse = tuple[str, frozenset[str]]


def _offer_uses(
    offer: CompiledOffer, segments: Sequence[tuple[SegmentSpec, Rule]], sources: FeatureSources
) -> tuple[FeatureUse, ...]:
    """What deciding on ``offer`` reads: its eligibility rule's paths (a segment it names:
    that segment's rule's paths; never the clock), and for an offer about a topic that
    topic's interest and funnel stage (its score's prior and its reasons), each with its
    data sources."""
    rules = {seg.id: rule for seg, rule in segments}
    paths: list[tuple[str, ...]] = []
    for path in paths_read(offer.rule):
        if path[0] == "segments":
            named = rules.get(path[1]) if len(path) > 1 else None
            paths += [p for p in paths_read(named) if p[0] != "segments"] if named else []
        elif path[0] != "now":
            paths.append(path)
    if offer.topic is not None:
        paths += [("interest", offer.topic), ("profile", "funnel", offer.topic)]
    out: dict[str, frozenset[str]] = {}
    for path in paths:
        out.setdefault(".".join(path), sources.of_path(path))
    return tuple(sorted(out.items()))
