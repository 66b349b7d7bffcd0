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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from nextbest.catalog.compiled import Catalog, CompiledKpi
from nextbest.events.model import Event
from nextbest.events.names import EventName
from nextbest.profile.kpis import pre_exposure
from nextbest.profile.model import FunnelStage, Profile
from nextbest.profile.windows import count_in_days
from nextbest.rules.context import age_of, engagement_of, lifecycle_of

__all__ = [
    "FAMILIES",
    "SEGMENT",
    "FirstExposure",
    "audience_family",
    "covariates",
    "first_exposure",
    "macro_audiences",
]

#: the family of an audience named by a catalog segment's id
SEGMENT = "segment"
#: every audience family, in the order results list them
FAMILIES = (SEGMENT, "lifecycle", "engagement", "holding", "intent")
_INTENT = (FunnelStage.CONSIDERING, FunnelStage.APPLYING, FunnelStage.SUBMITTED)


def covariates(profile: Profile | None, kpis: Sequence[CompiledKpi], at: float) -> list[float]:
    """Each KPI's pre-exposure covariate of a customer first exposed at ``at``."""
    if profile is None or not profile.kpis:
        return [0.0] * len(kpis)
    windows = profile.kpis
    return [pre_exposure(windows.get(k.key), at, k.conversion) for k in kpis]


def macro_audiences(profile: Profile | None, catalog: Catalog, at: float) -> list[str]:
    """The customer's lifecycle, engagement, holding and intent audiences at ``at``."""
    if profile is None:
        return []
    out = [
        "lifecycle:" + lifecycle_of(age_of(profile.traits, at)),
        "engagement:" + engagement_of(count_in_days(profile.activity, 30, at)),
    ]
    held = {t for t, s in profile.funnel.items() if s is FunnelStage.CUSTOMER}
    for product in profile.products:
        topic = catalog.matcher.topic_of_product(product)
        if topic:
            held.add(topic)
    out += [f"holding:{t}" for t in sorted(held)] or ["holding:none"]
    out += sorted(
        f"intent:{t}" for t, s in profile.funnel.items() if s in _INTENT and t not in held
    )
    return out


def audience_family(audience: str) -> str:
    """``lifecycle`` for ``lifecycle:family``; ``segment`` for a catalog segment's id."""
    family, sep, _ = audience.partition(":")
    return family if sep else SEGMENT


class FirstExposure(NamedTuple):
    """What a view would freeze for its offer's campaign, read from the profile by whoever
    holds it (a fold worker) for whoever counts it without the profile (the model writer):
    the campaign, each KPI's covariate, the macro audiences."""

    campaign: str
    pre: tuple[float, ...]
    audiences: tuple[str, ...]


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
    return FirstExposure(
        campaign,
        tuple(covariates(profile, kpis, at)),
        tuple(macro_audiences(profile, catalog, at)),
    )
