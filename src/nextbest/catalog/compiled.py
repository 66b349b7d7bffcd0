"""The compiled catalog: what decide, learn and fold read. Built by ``compile_catalog``.

Offers are indexed by placement so a decision only looks at candidates that can appear in the
placement it is asked about.
"""

from __future__ import annotations

from collections.abc import Sequence

import cel

from nextbest.catalog.model import (
    CampaignSpec,
    CatalogSpec,
    Channel,
    Content,
    GuardrailSpec,
    KpiSpec,
    OfferKind,
    OfferSpec,
    PlacementSpec,
    ScoringSpec,
    SegmentSpec,
)
from nextbest.errors import CatalogProblem
from nextbest.events.model import Event
from nextbest.profile.fold import FoldConfig
from nextbest.profile.kpis import KpiWatch, kpi_key
from nextbest.profile.topics import TopicMatcher
from nextbest.rules.expression import Rule, RuleOutcome
from nextbest.rules.reads import RuleReads

__all__ = ["Catalog", "CompiledKpi", "CompiledOffer", "CompiledVariants"]


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
        "kind",
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
    ) -> None:
        self.spec = spec
        self.id = spec.id
        self.kind = spec.kind
        self.topic = spec.topic
        self.rule = rule
        #: the service message's trigger (``OfferSpec.urgent``), None without one
        self.urgent_rule = urgent_rule
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
            placement.channel in spec.content
            and self.kind in placement.kinds
            and (not spec.placements or placement.id in spec.placements)
        )

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
        warnings: Sequence[CatalogProblem] = (),
        kpis: dict[str, list[CompiledKpi]] | None = None,
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
        p = spec.profile
        self.fold_config = FoldConfig(
            page_weight=p.page_weight,
            track_weight=p.track_weight,
            event_weights=dict(p.event_weights),
            session_timeout=p.session_timeout_minutes * 60.0,
            offer_ids=frozenset(offers),
            kpi_events=_kpi_events(self.kpis),
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
    def version(self) -> str:
        return f"{self.spec.version}+{self.digest[:12]}"


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
