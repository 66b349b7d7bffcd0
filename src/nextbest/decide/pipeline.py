"""The decision pipeline. Pure: profile, catalog and ``now`` in, a Decision out.

eligibility -> already owned -> contact caps and fatigue -> faded interest -> consent and
holdout -> control group -> score (p_click x value x weight) -> service before commercial ->
top k, each item with reasons.
"""

from __future__ import annotations

from typing import Any

from nextbest.catalog.load import Catalog, CompiledOffer
from nextbest.catalog.model import OfferKind
from nextbest.decide.model import Decision, DecisionItem, DecisionRequest, Excluded
from nextbest.decide.reasons import Reason, ReasonCode, Suppression
from nextbest.decide.score import click_prior
from nextbest.errors import UnknownPlacement, ValidationError
from nextbest.experiments.assignment import HOLDOUT_SALT, Arm, assign, bucket
from nextbest.profile.model import FunnelStage, OfferHistory, Profile
from nextbest.profile.windows import count_in_days
from nextbest.rules.context import rule_variables
from nextbest.rules.evaluation import Evaluation
from nextbest.rules.expression import RuleOutcome

__all__ = ["decide"]

_NO_HISTORY = OfferHistory()


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


def _contact_block(
    hist: OfferHistory, catalog: Catalog, now: float, shown_today: int
) -> Suppression | None:
    policy = catalog.policy
    cap = policy.per_offer
    if count_in_days(hist.impressions, cap.days, now) >= cap.count:
        return Suppression.CAPPED
    if hist.clicks and count_in_days(hist.clicks, policy.after_click_days, now):
        return Suppression.RECENTLY_CLICKED
    if hist.dismissals and count_in_days(hist.dismissals, policy.after_dismiss_days, now):
        return Suppression.DISMISSED
    if shown_today >= policy.per_day_commercial:
        return Suppression.FATIGUE
    return None


def _reasons(
    offer: CompiledOffer,
    catalog: Catalog,
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
        view = variables["interest"][offer.topic]
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
    for root, field in sorted(offer.rule.fields):
        if root == "segments" and segments.get(field):
            seg = next(s for s, _ in catalog.segments if s.id == field)
            reasons.append(Reason(ReasonCode.SEGMENT, f"in segment '{seg.name or seg.id}'"))
    if offer.campaign is not None and offer.weight > 1.0:
        reasons.append(
            Reason(ReasonCode.CAMPAIGN_PRIORITY, f"campaign '{offer.campaign.name}' has priority")
        )
    if not reasons:
        reasons.append(Reason(ReasonCode.ELIGIBLE, f"eligible for {spec.name}"))
    return reasons


def decide(
    catalog: Catalog,
    profile: Profile,
    request: DecisionRequest,
    now: float,
    decision_id: str,
) -> Decision:
    """Rank what to show ``profile`` in ``request.placement`` at ``now``."""
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
    view_profile = (
        profile
        if personalized
        else Profile(
            customer_id=customer,
            user_id=profile.user_id,
            traits=profile.traits,
            products=profile.products,
            offers=profile.offers,
            consent=profile.consent,
            balance=profile.balance,
            overdrawn=profile.overdrawn,
            funnel=profile.funnel,
        )
    )
    variables = rule_variables(
        view_profile, catalog.topics, now, request.context, catalog.named_offers
    )
    env = Evaluation(variables)
    segments = {seg.id: env.check(rule) is RuleOutcome.TRUE for seg, rule in catalog.segments}
    env.bind("segments", segments)

    owned = _owned_topics(profile, catalog) if catalog.policy.suppress_owned else set()
    shown_today = sum(count_in_days(h.impressions, 1, now) for h in profile.offers.values())
    fade_below = catalog.policy.fade_below
    scoring = catalog.scoring

    excluded: list[Excluded] = []
    ranked: list[tuple[int, float, int, str, CompiledOffer, float, float, Arm]] = []
    for offer in catalog.by_placement[placement.id]:
        why: Suppression | None = None
        commercial = offer.kind is OfferKind.COMMERCIAL
        topic_view = variables["interest"][offer.topic] if offer.topic else None
        if not offer.live_at(now):
            why = Suppression.OUT_OF_SCHEDULE
        elif commercial and not marketing:
            why = Suppression.NO_CONSENT
        elif commercial and in_holdout:
            why = Suppression.HOLDOUT
        elif commercial and offer.topic in owned:
            why = Suppression.OWNED
        elif commercial and (
            block := _contact_block(
                profile.offers.get(offer.id, _NO_HISTORY), catalog, now, shown_today
            )
        ):
            why = block
        elif (
            commercial
            and topic_view is not None
            and topic_view["total"] > 0
            and topic_view["score"] < fade_below
        ):
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
        arm = Arm.TREATMENT
        camp = offer.campaign
        if camp is not None and camp.control_share > 0:
            arm = assign(customer, camp.salt or camp.id, camp.control_share)
        interest = topic_view["score"] if (topic_view is not None and personalized) else 0.0
        p_click = click_prior(
            offer.base_ctr, interest, scoring.interest_lift, scoring.half_saturation
        )
        score = p_click * offer.spec.value * offer.weight
        service_first = 0 if offer.kind is OfferKind.SERVICE else 1
        ranked.append(
            (service_first, -score, -offer.spec.priority, offer.id, offer, p_click, score, arm)
        )
    ranked.sort(key=lambda r: r[:4])

    items: list[DecisionItem] = []
    control: list[str] = []
    for entry in ranked:
        offer, p_click, score, arm = entry[4], entry[5], entry[6], entry[7]
        if len(items) >= limit:
            excluded.append(Excluded(offer.id, Suppression.OUTRANKED))
            continue
        if arm is Arm.CONTROL:
            # the moment it would have been shown: a control exposure; the slot goes on
            if len(items) + len(control) < limit:
                control.append(offer.id)
            excluded.append(Excluded(offer.id, Suppression.CONTROL))
            continue
        items.append(
            DecisionItem(
                position=len(items) + 1,
                offer_id=offer.id,
                kind=offer.kind.value,
                campaign_id=offer.campaign.id if offer.campaign else None,
                arm=arm,
                score=round(score, 9),
                p_click=round(p_click, 9),
                propensity=1.0,
                content=_content(offer, placement.channel.value),
                reasons=_reasons(offer, catalog, variables, personalized, segments),
            )
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
        segments=sorted(k for k, v in segments.items() if v),
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
