"""The decision pipeline. Pure: profile, catalog and ``now`` in, a Decision out.

eligibility -> already owned -> contact caps and fatigue -> faded interest -> consent and
holdout -> control group -> score (p_click x value x weight) -> service before commercial ->
top k, each item with reasons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nextbest.catalog.load import Catalog, CompiledOffer
from nextbest.catalog.model import OfferKind
from nextbest.decide.model import (
    Candidate,
    Choice,
    ChoiceContext,
    Chooser,
    Decision,
    DecisionItem,
    DecisionRequest,
    Excluded,
)
from nextbest.decide.reasons import Reason, ReasonCode, Suppression
from nextbest.decide.score import click_prior
from nextbest.errors import UnknownPlacement, ValidationError
from nextbest.experiments.assignment import HOLDOUT_SALT, Arm, assign, bucket
from nextbest.profile.model import FunnelStage, OfferHistory, Profile, TopicInterest
from nextbest.profile.windows import count_in_days
from nextbest.rules.context import interest_view
from nextbest.rules.expression import RuleOutcome

__all__ = ["decide", "greedy", "without_behaviour"]

_NO_INTEREST = TopicInterest()


def _owned_topics(profile: Profile, catalog: Catalog) -> set[str]:
    owned = {t for t, s in profile.funnel.items() if s is FunnelStage.CUSTOMER}
    for product in profile.products:
        topic = catalog.matcher.topic_of_product(product)
        if topic:
            owned.add(topic)
    return owned


def _consented(profile: Profile, catalog: Catalog, purpose: str) -> bool:
    granted = profile.consent.get(purpose)
    if granted is None:
        return catalog.policy.consent_defaults.get(purpose, False)
    return granted


def _contact_block(hist: OfferHistory, catalog: Catalog, now: float) -> Suppression | None:
    """Caps and rests from this offer's own history (daily fatigue is checked apart)."""
    policy = catalog.policy
    cap = policy.per_offer
    if count_in_days(hist.impressions, cap.days, now) >= cap.count:
        return Suppression.CAPPED
    if hist.clicks and count_in_days(hist.clicks, policy.after_click_days, now):
        return Suppression.RECENTLY_CLICKED
    if hist.dismissals and count_in_days(hist.dismissals, policy.after_dismiss_days, now):
        return Suppression.DISMISSED
    return None


def without_behaviour(profile: Profile) -> Profile:
    """What rules may see without personalization consent: no browsing behaviour."""
    return Profile(
        customer_id=profile.customer_id,
        user_id=profile.user_id,
        traits=profile.traits,
        products=profile.products,
        offers=profile.offers,
        consent=profile.consent,
        balance=profile.balance,
        overdrawn=profile.overdrawn,
        funnel=profile.funnel,
    )


def _reasons(
    offer: CompiledOffer,
    catalog: Catalog,
    views: dict[str, dict[str, Any]],
    variables: dict[str, Any],
    personalized: bool,
    segments: dict[str, bool],
) -> list[Reason]:
    reasons: list[Reason] = []
    spec = offer.spec
    if spec.reason:
        reasons.append(Reason(ReasonCode.OFFER_REASON, spec.reason))
    elif offer.kind is OfferKind.SERVICE:
        reasons.append(Reason(ReasonCode.SERVICE_MESSAGE, f"service message: {spec.name}"))
    if personalized and offer.topic is not None:
        view = views[offer.topic]
        name = catalog.topics[offer.topic].name.lower()
        for days in (14, 30, 90):
            n = view[f"count_{days}d"]
            if n:
                times = "once" if n == 1 else f"{n} times"
                reasons.append(
                    Reason(ReasonCode.TOPIC_INTEREST, f"viewed {name} pages {times} in {days} days")
                )
                break
        stage = variables["profile"]["funnel"].get(offer.topic)
        if stage in ("considering", "applying", "submitted"):
            reasons.append(Reason(ReasonCode.FUNNEL_STAGE, f"{stage} a {name} product"))
    for field in offer.segment_names:
        if segments.get(field):
            name = catalog.segment_names[field]
            reasons.append(Reason(ReasonCode.SEGMENT, f"in segment '{name}'"))
    if offer.campaign is not None and offer.weight > 1.0:
        reasons.append(
            Reason(ReasonCode.CAMPAIGN_PRIORITY, f"campaign '{offer.campaign.name}' has priority")
        )
    if not reasons:
        reasons.append(Reason(ReasonCode.ELIGIBLE, f"eligible for {spec.name}"))
    return reasons


def greedy(ctx: ChoiceContext, candidates: Sequence[Candidate], limit: int) -> Choice:
    """The engine's own order: the first ``limit`` candidates, deterministically."""
    return Choice(picks=[(i, 1.0) for i in range(min(limit, len(candidates)))])


def decide(
    catalog: Catalog,
    profile: Profile,
    request: DecisionRequest,
    now: float,
    decision_id: str,
    choose: Chooser = greedy,
) -> Decision:
    """Rank what to show ``profile`` in ``request.placement`` at ``now``; ``choose`` picks
    the items from the ranked eligible candidates (default: the top ``limit``)."""
    placement = catalog.placements.get(request.placement)
    if placement is None:
        raise UnknownPlacement(f"unknown placement {request.placement!r}")
    limit = placement.slots if request.limit is None else request.limit
    if not 1 <= limit <= placement.slots:
        raise ValidationError(f"limit must be between 1 and {placement.slots}", "$.limit")

    customer = profile.customer_id
    personalized = _consented(profile, catalog, "personalization")
    marketing = _consented(profile, catalog, "marketing")
    in_holdout = catalog.spec.holdout_share > 0 and (
        bucket(customer, HOLDOUT_SALT) < catalog.spec.holdout_share
    )
    seen = profile if personalized else without_behaviour(profile)
    # rules see only the values they name, down to the field: converting to CEL is the cost
    env = catalog.rule_reads.evaluation(seen, catalog.topics, now, request.context)
    variables = {"profile": {"funnel": {t: s.label for t, s in seen.funnel.items()}}}  # reasons
    segments = {seg.id: env.check(rule) is RuleOutcome.TRUE for seg, rule in catalog.segments}
    env.bind("segments", segments)
    views: dict[str, dict[str, Any]] = {}

    def topic_view(topic: str) -> dict[str, Any]:
        view = views.get(topic)
        if view is None:
            it = seen.interests.get(topic, _NO_INTEREST)
            view = views[topic] = interest_view(it, catalog.topics[topic], now)
        return view

    owned = _owned_topics(profile, catalog) if catalog.policy.suppress_owned else set()
    shown_today = sum(
        count_in_days(h.impressions, 1, now)
        for oid, h in profile.offers.items()
        if oid in catalog.commercial_offers
    )
    fatigued = shown_today >= catalog.policy.per_day_commercial
    fade_below = catalog.policy.fade_below
    scoring = catalog.scoring

    excluded: list[Excluded] = []
    ranked: list[tuple[int, float, int, str, CompiledOffer, float, float]] = []
    for offer in catalog.by_placement[placement.id]:
        why: Suppression | None = None
        commercial = offer.kind is OfferKind.COMMERCIAL
        view = topic_view(offer.topic) if offer.topic else None
        history = profile.offers.get(offer.id) if commercial else None
        if offer.id in request.exclude:
            why = Suppression.ON_PAGE
        elif not offer.live_at(now):
            why = Suppression.OUT_OF_SCHEDULE
        elif commercial and not marketing:
            why = Suppression.NO_CONSENT
        elif commercial and in_holdout:
            why = Suppression.HOLDOUT
        elif commercial and offer.topic in owned:
            why = Suppression.OWNED
        elif history is not None and (block := _contact_block(history, catalog, now)):
            why = block
        elif commercial and fatigued:
            why = Suppression.FATIGUE
        elif commercial and view is not None and view["total"] > 0 and view["score"] < fade_below:
            why = Suppression.FADED
        else:
            outcome = env.check(offer.rule)
            if outcome is RuleOutcome.FALSE:
                why = Suppression.INELIGIBLE
            elif outcome is RuleOutcome.ERROR:
                why = Suppression.RULE_ERROR
        if why is not None:
            excluded.append(Excluded(offer.id, why))
            continue
        interest = view["score"] if view is not None else 0.0
        p_click = click_prior(
            offer.base_ctr, interest, scoring.interest_lift, scoring.half_saturation
        )
        score = p_click * offer.spec.value * offer.weight
        service_first = 0 if offer.kind is OfferKind.SERVICE else 1
        ranked.append(
            (service_first, -score, -offer.spec.priority, offer.id, offer, p_click, score)
        )
    ranked.sort(key=lambda r: r[:4])

    control: list[str] = []
    pool: list[Candidate] = []
    for entry in ranked:
        offer, p_click, score = entry[4], entry[5], entry[6]
        camp = offer.campaign
        if (
            camp is not None
            and camp.control_share > 0
            and assign(customer, camp.salt or camp.id, camp.control_share) is Arm.CONTROL
        ):
            # where the engine's order would have shown it: a control exposure
            if len(pool) + len(control) < limit:
                control.append(offer.id)
            excluded.append(Excluded(offer.id, Suppression.CONTROL))
            continue
        pool.append(Candidate(offer, p_click, score))

    in_segments = sorted(k for k, v in segments.items() if v)
    ctx = ChoiceContext(decision_id, placement.id, now, seen, request.context, in_segments)
    choice = choose(ctx, pool, limit)
    if choice.p_click is not None:  # a learned model's click probabilities
        pool = [
            Candidate(c.offer, p, p * c.offer.spec.value * c.offer.weight)
            for c, p in zip(pool, choice.p_click, strict=True)
        ]
    items: list[DecisionItem] = []
    chosen = choice.picks[:limit]
    explored = choice.explored or [False] * len(chosen)
    kinds = choice.kinds or ["exact"] * len(chosen)
    for position, (index, propensity) in enumerate(chosen, start=1):
        c = pool[index]
        offer = c.offer
        items.append(
            DecisionItem(
                position=position,
                offer_id=offer.id,
                kind=offer.kind.value,
                campaign_id=offer.campaign.id if offer.campaign else None,
                arm=Arm.TREATMENT,
                score=round(c.score, 9),
                p_click=round(c.p_click, 9),
                propensity=propensity,
                content=_content(offer, placement.channel.value),
                reasons=_reasons(offer, catalog, views, variables, personalized, segments),
                explored=explored[position - 1],
                propensity_kind=kinds[position - 1],
            )
        )
    shown = {index for index, _ in chosen}
    excluded.extend(
        Excluded(c.offer.id, Suppression.OUTRANKED) for i, c in enumerate(pool) if i not in shown
    )
    return Decision(
        decision_id=decision_id,
        customer_id=customer,
        placement=placement.id,
        timestamp=now,
        catalog_version=catalog.version,
        items=items,
        excluded=excluded,
        control=control,
        segments=in_segments,
        candidates=[c.offer.id for c in pool],
        features=choice.features
        if choice.features is not None
        else {
            f"interest:{t}": round(math.log1p(views[t]["score"]), 6)
            for t in sorted({c.offer.topic for c in pool if c.offer.topic is not None})
        },
        model_version=choice.model_version or "prior",
    )


def _content(offer: CompiledOffer, channel: str) -> dict[str, Any]:
    content = offer.spec.content[channel]  # type: ignore[index]
    return {
        "title": content.title,
        "body": content.body,
        "cta": content.cta,
        "url": content.url,
        "image": content.image,
    }
