"""What a customer's first exposure to a campaign freezes: their pre-exposure covariates
(CUPED) and the audiences their results are broken down by.

Both are read from the profile at the moment of exposure and never change afterwards: a
control customer's at the decision that would have shown them the campaign (the decision
logs them, so a replay or another process reads the same), a treated customer's when their
``Promotion Viewed`` is folded (the profile then is the same in a replay: events fold in log
order).

Covariates
    Per KPI of the campaign: the same KPI in the ``PRE_EXPOSURE_DAYS`` (30) before the
    exposure, from the profile's KPI windows (``profile.kpis``): for a conversion KPI 1 or 0
    (converted in that window or not), for a value KPI the sum of its values there.

Audiences
    The catalog's segments the decision found the customer in (``Decision.segments``), and
    the macro-segments every bank reads results by, computed here from the profile:

    - ``lifecycle:<phase>``: the life stage by age (``rules.context.lifecycle_of``:
      ``young_adult``, ``family``, ..., ``unknown`` without an age);
    - ``engagement:<level>``: events in the last 30 days (``dormant``, ``low``, ``medium``,
      ``high``: ``rules.context.engagement_of``);
    - ``holding:<topic>``: a product of that topic is held (products and funnel stages of
      customer), or ``holding:none``;
    - ``intent:<topic>``: considering, applying for or having submitted an application for
      a product of that topic, without holding one (the funnel stage).

    A segment's audience is named by the segment's id; the others by ``family:value``.

Consent (the ``analytics`` purpose)
    Both are read through the customer's analytics view (``analytics_view``: the profile
    as ``ConsentRules.hidden(..., View.ANALYTICS)`` leaves it). A KPI whose event comes from
    a source the customer withdrew for analytics has no covariate (0: what gbstats takes for
    a customer without pre-exposure data; CUPED stays unbiased, it only reduces the variance
    less); a family of audiences reading such a source is left out (not ``unknown``), and so
    is a catalog segment reading one (``measured_segments``). A customer who withdrew
    analytics has no covariate and no audience at all. They are still assigned, exposed and
    counted in their arm with their KPI: leaving them out would make the measured population
    depend on a choice the treatment may have prompted, and the lift biased; the campaign's
    own outcome, counted in aggregates that name nobody, is not analytics of their profile.
    ``withheld`` tells the counters whether analytics withheld anything of the exposure
    (``ExperimentResult.analytics_withheld``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

from nextbest.catalog.compiled import Catalog, CompiledKpi
from nextbest.events.model import Event
from nextbest.events.names import EventName
from nextbest.profile.consent import ANALYTICS_OFF, View
from nextbest.profile.kpis import pre_exposure
from nextbest.profile.model import FunnelStage, Profile
from nextbest.profile.windows import count_in_days
from nextbest.rules.context import age_of, engagement_of, lifecycle_of

__all__ = [
    "FAMILIES",
    "SEGMENT",
    "AnalyticsView",
    "FirstExposure",
    "analytics_view",
    "audience_family",
    "covariates",
    "first_exposure",
    "macro_audiences",
    "measured_segments",
    "withheld",
]

#: the family of an audience named by a catalog segment's id
SEGMENT = "segment"
#: every audience family, in the order results list them
FAMILIES = (SEGMENT, "lifecycle", "engagement", "holding", "intent")
_INTENT = (FunnelStage.CONSIDERING, FunnelStage.APPLYING, FunnelStage.SUBMITTED)


class AnalyticsView(NamedTuple):
    """What experiment measurement may read of one customer: the profile masked to the
    sources allowed for analytics (None: no profile, or analytics withdrawn) and the
    sources hidden (``ANALYTICS_OFF`` among them when analytics is withdrawn)."""

    profile: Profile | None
    hidden: frozenset[str] = frozenset()


def analytics_view(profile: Profile | None, catalog: Catalog) -> AnalyticsView:
    """``profile`` as the analytics purpose sees it."""
    if profile is None:
        return AnalyticsView(None)
    hidden = catalog.consent.hidden(profile.consent, profile.grants, View.ANALYTICS)
    if ANALYTICS_OFF in hidden:
        return AnalyticsView(None, hidden)
    return AnalyticsView(catalog.sources.masked(profile, hidden), hidden)


def _kpi_hidden(kpi: CompiledKpi, hidden: frozenset[str], catalog: Catalog) -> bool:
    source = catalog.sources.event(kpi.spec.event)
    return source is not None and source.value in hidden


def covariates(
    view: AnalyticsView, kpis: Sequence[CompiledKpi], at: float, catalog: Catalog
) -> list[float]:
    """Each KPI's pre-exposure covariate of a customer first exposed at ``at`` (0 where
    their analytics view may not read the KPI's event source, or read nothing)."""
    profile, hidden = view
    if profile is None or not profile.kpis:
        return [0.0] * len(kpis)
    windows = profile.kpis
    return [
        0.0
        if _kpi_hidden(k, hidden, catalog)
        else pre_exposure(windows.get(k.key), at, k.conversion)
        for k in kpis
    ]


def withheld(view: AnalyticsView, kpis: Sequence[CompiledKpi], catalog: Catalog) -> bool:
    """Analytics withheld something of this exposure: the customer withdrew analytics, or
    a source one of the KPIs' covariates reads."""
    hidden = view.hidden
    return ANALYTICS_OFF in hidden or any(_kpi_hidden(k, hidden, catalog) for k in kpis)


def measured_segments(
    segments: Sequence[str], hidden: Collection[str], catalog: Catalog
) -> list[str]:
    """The catalog segments among ``segments`` analytics may place a customer in whose
    analytics view hides ``hidden``: none when analytics is withdrawn; else those reading
    no hidden source (``Catalog.segment_sources``)."""
    if not hidden:
        return list(segments)
    if ANALYTICS_OFF in hidden:
        return []
    reads = catalog.segment_sources
    return [s for s in segments if reads.get(s, frozenset()).isdisjoint(hidden)]


def macro_audiences(view: AnalyticsView, catalog: Catalog, at: float) -> list[str]:
    """The customer's lifecycle, engagement, holding and intent audiences at ``at``, those
    of the families their analytics view may read (engagement: over the event sources it
    allows)."""
    profile, hidden = view
    if profile is None:
        return []
    sources = catalog.sources
    out: list[str] = []
    if hidden.isdisjoint(sources.field("lifecycle")):
        out.append("lifecycle:" + lifecycle_of(age_of(profile.traits, at)))
    if not sources.field("activity") <= hidden:
        out.append("engagement:" + engagement_of(count_in_days(profile.activity, 30, at)))
    funnel = profile.funnel
    if hidden.isdisjoint(sources.field("products") | sources.field("funnel")):
        held = {t for t, s in funnel.items() if s is FunnelStage.CUSTOMER}
        for product in profile.products:
            topic = catalog.matcher.topic_of_product(product)
            if topic:
                held.add(topic)
        out += [f"holding:{t}" for t in sorted(held)] or ["holding:none"]
        out += sorted(f"intent:{t}" for t, s in funnel.items() if s in _INTENT and t not in held)
    return out


def audience_family(audience: str) -> str:
    """``lifecycle`` for ``lifecycle:family``; ``segment`` for a catalog segment's id."""
    family, sep, _ = audience.partition(":")
    return family if sep else SEGMENT


class FirstExposure(NamedTuple):
    """What a view would freeze for its offer's campaign, read from the profile by whoever
    holds it (a fold worker) for whoever counts it without the profile (the model writer):
    the campaign, each KPI's covariate, the macro audiences, and what the customer's
    analytics view hides (the counters leave the decision's segments reading it out)."""

    campaign: str
    pre: tuple[float, ...]
    audiences: tuple[str, ...]
    hidden: tuple[str, ...] = ()


def first_exposure(profile: Profile | None, catalog: Catalog, event: Event) -> FirstExposure | None:
    """For a ``Promotion Viewed`` of an offer of a campaign with KPIs: what its first exposure
    would freeze, with the event folded into ``profile`` (None otherwise)."""
    if event.name != EventName.PROMOTION_VIEWED or profile is None:
        return None
    offer = catalog.offers.get(str(event.properties.get("promotion_id")))
    campaign = offer.campaign.id if offer is not None and offer.campaign is not None else None
    kpis = catalog.kpis.get(campaign) if campaign is not None else None
    if campaign is None or not kpis:
        return None
    at = event.timestamp
    view = analytics_view(profile, catalog)
    return FirstExposure(
        campaign,
        tuple(covariates(view, kpis, at, catalog)),
        tuple(macro_audiences(view, catalog, at)),
        tuple(sorted(view.hidden)),
    )
