"""The decision pipeline. Pure: profile, catalog and ``now`` in, a Decision out.

A placement of kind ``advisor`` shows one advisor card instead of offers (``_advisor_decision``
below; the card itself is ``advisors.card``'s): none in a session the identity-theft guard
flagged, consent (``advisors.card.may_contact``), then
the contact policy on each live topic's card (``advisor:<topic>``): on the page already ->
universal holdout -> product already owned -> the per-card cap and rests (as for an offer).
Which advisors are free is the ``board`` passed in (none: nobody can call now, so the card
offers "call me later" and "pick a time" with the next free slots).

For offers, ``decide`` is a list of named steps, in this order:

1. placement and limit: the placement exists and the limit fits its slots;
2. consent, holdout and the guard: personalization and marketing consent, the universal
   holdout, whether the identity-theft guard flagged the live session (``guard/``);
3. rule environment: the rule variables the catalog's rules read, the segments;
4. candidate filtering, each offer of the placement in turn (``Catalog.by_placement``: the
   offers with content for its channel, of a kind it allows, and, for an offer limited to
   some placements by its ``placements``, this one among them; no other offer is looked at),
   the first filter that holds excludes it: on the page already -> out of schedule ->
   (commercial offers) the session flagged by the guard -> no marketing consent -> universal
   holdout -> product already owned ->
   (all but urgent service messages) contact caps and rests -> (commercial offers) daily
   fatigue -> faded interest -> eligibility rule (false, or an error); a service message is
   urgent while its trigger (``urgent`` in the catalog) holds, and so is a service insight
   while its own (``insight``), which the caps and rests still hold back;
5. scoring: ``p_click x value x weight`` with the catalog's interest prior;
6. ranking: the engine's order (``decide.ranking``: urgent first, then score, priority, id);
7. control group: offers whose campaign puts the customer in its control arm leave the pool,
   logged as exposures where the policy in use would have shown them: the chooser of step 8
   is asked first, as a counterfactual, with them left in (a learning placement's learned
   order and its exploration draw, seeded by the decision id; else the engine's order);
8. choose: the chooser picks up to ``limit`` items from the pool (default: the top ones);
9. items and reasons; slots left empty take the placement's fallback content (not on the
   page already, live, commercial only with marketing consent, outside the holdout and
   not in a flagged session);
10. the decision, with the features its scores were computed from.

Scores, order and the contact policy are ``decide.ranking``'s, shared with offline evaluation
and the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from nextbest.advisors.board import EMPTY_BOARD, AdvisorBoard
from nextbest.advisors.card import AdvisorCard, advisor_card, live_topics, may_contact
from nextbest.advisors.selection import customer_language
from nextbest.catalog.compiled import Catalog, CompiledOffer, advisor_card_id
from nextbest.catalog.model import OfferKind, PlacementKind, PlacementSpec
from nextbest.decide import ranking
from nextbest.decide.model import (
    Candidate,
    Choice,
    ChoiceContext,
    Chooser,
    Decision,
    DecisionItem,
    DecisionRequest,
    Excluded,
    ItemKind,
    PropensityKind,
)
from nextbest.decide.reasons import Reason, ReasonCode, Suppression
from nextbest.errors import UnknownPlacement, ValidationError
from nextbest.experiments.assignment import HOLDOUT_SALT, Arm, assign, bucket, variant_index
from nextbest.experiments.exposure import analytics_view, covariates, macro_audiences
from nextbest.profile.consent import SECURITY_DATA, DataSource, View
from nextbest.profile.interest import REASON_DAYS, viewed, viewed_text
from nextbest.profile.model import FunnelStage, Profile, TopicInterest
from nextbest.profile.sources import SUMMED
from nextbest.rules.context import interest_view
from nextbest.rules.evaluation import LazyEvaluation
from nextbest.rules.expression import RuleOutcome
from nextbest.rules.reads import PROFILE_FIELDS

__all__ = ["decide", "greedy", "without_behaviour"]

_NO_INTEREST = TopicInterest()
_COMMERCIAL = OfferKind.COMMERCIAL


def _owned_topics(profile: Profile, catalog: Catalog) -> set[str]:
    owned = {t for t, s in profile.funnel.items() if s is FunnelStage.CUSTOMER}
    for product in profile.products:
        topic = catalog.matcher.topic_of_product(product)
        if topic:
            owned.add(topic)
    return owned


def without_behaviour(profile: Profile) -> Profile:
    """A profile without browsing behaviour (kept for callers outside decisions; a decision
    masks per view and data source: ``_views``)."""
    return Profile(
        customer_id=profile.customer_id,
        user_id=profile.user_id,
        traits=profile.traits,
        products=profile.products,
        offers=profile.offers,
        consent=profile.consent,
        grants=profile.grants,
        balance=profile.balance,
        overdrawn=profile.overdrawn,
        funnel=profile.funnel,
        # the security purpose needs no consent (legitimate interest): the guard's findings
        # reach service messages (``security``) whatever personalization says
        guard=profile.guard,
        # core banking's own facts (the transactional source), not browsing behaviour
        banking=profile.banking,
    )


def _shown(value: Any) -> str:
    """A rule field's value as a reason shows it: whole numbers without decimals, others
    with two."""
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.2f}"
    return str(value)


def _reason_text(text: str, fields: tuple[str, ...], seen: Profile, now: float) -> str:
    """``text`` with each ``{profile.<field>}`` replaced by the field's value at ``now``."""
    for name in fields:
        value = PROFILE_FIELDS[name](seen, now)
        text = text.replace("{profile." + name + "}", _shown(value))
    return text


def _reasons(
    offer: CompiledOffer,
    catalog: Catalog,
    views: dict[str, dict[str, Any]],
    variables: dict[str, Any],
    personalized: bool,
    segments: dict[str, bool],
    seen: Profile,
    now: float,
) -> list[Reason]:
    reasons: list[Reason] = []
    spec = offer.spec
    about = {"offer": offer.id}
    if spec.reason:
        text = _reason_text(spec.reason, offer.reason_fields, seen, now)
        reasons.append(Reason(ReasonCode.OFFER_REASON, text, about))
    elif offer.kind is OfferKind.SERVICE:
        reasons.append(Reason(ReasonCode.SERVICE_MESSAGE, f"service message: {spec.name}", about))
    topic = offer.topic
    if personalized and topic is not None:
        view = views[topic]
        name = catalog.topics[topic].name.lower()
        hits = viewed({d: view[f"count_{d}d"] for d in REASON_DAYS})
        if hits is not None:
            days, n = hits
            text = viewed_text(name, {days: n}) or ""
            facts = {"topic": topic, "count": n, "days": days}
            reasons.append(Reason(ReasonCode.TOPIC_INTEREST, text, facts))
        stage = variables["profile"]["funnel"].get(topic)
        if stage in ("considering", "applying", "submitted"):
            facts = {"topic": topic, "stage": stage}
            reasons.append(Reason(ReasonCode.FUNNEL_STAGE, f"{stage} a {name} product", facts))
    for field in offer.segment_names:
        if segments.get(field):
            name = catalog.segment_names[field]
            reasons.append(Reason(ReasonCode.SEGMENT, f"in segment '{name}'", {"segment": field}))
    campaign = offer.campaign
    if campaign is not None and offer.weight > 1.0:
        text = f"campaign '{campaign.name}' has priority"
        reasons.append(Reason(ReasonCode.CAMPAIGN_PRIORITY, text, {"campaign": campaign.id}))
    if not reasons:
        reasons.append(Reason(ReasonCode.ELIGIBLE, f"eligible for {spec.name}", about))
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
    *,
    board: AdvisorBoard = EMPTY_BOARD,
) -> Decision:
    """Rank what to show ``profile`` in ``request.placement`` at ``now``; ``choose`` picks
    the items from the ranked eligible candidates (default: the top ``limit``). The steps
    are the module docstring's, in its order. An advisor placement shows an advisor card
    instead, from ``board`` (who can call now, what is booked)."""
    placement, limit = _placement_and_limit(catalog, request)
    audience = _audience(catalog, profile, now)
    if placement.kind is PlacementKind.ADVISOR:
        return _advisor_decision(
            catalog, profile, request, now, decision_id, placement, audience, board
        )
    views = _views(catalog, profile, request, now, audience)
    eligible, excluded = _filter_candidates(catalog, profile, request, now, audience, views)
    scored = _score(eligible, catalog)
    ranked = ranking.in_rank_order(scored)
    rules = views.chooser(ranked)
    in_segments = sorted(k for k, v in rules.segments.items() if v)
    ctx = ChoiceContext(decision_id, placement.id, now, rules.seen, rules.context, in_segments)
    pool, control, in_control = _control_group(ranked, profile.experiment_key, ctx, choose, limit)
    choice = choose(ctx, pool, limit)
    if choice.p_click is not None:  # a learned model's click and conversion probabilities
        pool = _rescore(pool, choice.p_click, choice.p_convert)
    items = _items(catalog, placement, pool, choice, limit, views, profile.experiment_key)
    available = (
        _fallback_available(catalog, views.commercial.seen, placement, request, now, audience)
        if placement.fallback
        else []
    )
    items += _fallback_items(catalog, placement, available, items, limit, profile.experiment_key)
    return Decision(
        decision_id=decision_id,
        customer_id=profile.customer_id,
        placement=placement.id,
        timestamp=now,
        catalog_version=catalog.version,
        items=items,
        excluded=[*excluded, *in_control, *_outranked(pool, choice, limit)],
        control=control,
        segments=in_segments,
        candidates=[c.offer.id for c in pool],
        urgent=[c.offer.id for c in pool if c.urgent],
        fallback=available,
        unexplorable=[pool[i].offer.id for i in choice.unexplorable],
        features=choice.features if choice.features is not None else _features(pool, views),
        model_version=choice.model_version or "prior",
        experiment_key=key if (key := profile.experiment_key) != profile.customer_id else "",
        **_measured(catalog, profile, control, now),
    )


# ---------------------------------------------------------------------- 1. placement and limit
def _placement_and_limit(catalog: Catalog, request: DecisionRequest) -> tuple[PlacementSpec, int]:
    placement = catalog.placements.get(request.placement)
    if placement is None:
        raise UnknownPlacement(f"unknown placement {request.placement!r}")
    limit = placement.slots if request.limit is None else request.limit
    if not 1 <= limit <= placement.slots:
        raise ValidationError(f"limit must be between 1 and {placement.slots}", "$.limit")
    return placement, limit


# ---------------------------------------------------------------------- 2. consent and holdout
class _Audience(msgspec.Struct, frozen=True, gc=False):
    personalized: bool
    marketing: bool
    in_holdout: bool
    #: the identity-theft guard flagged the customer's live session: nothing is sold to it
    flagged: bool = False
    #: the data sources service messages may not read (``ConsentRules.hidden``)
    service_hidden: frozenset[str] = frozenset()
    #: the data sources commercial offers, ranking and learning may not read (and the
    #: guard's findings: ``SECURITY_DATA``)
    commercial_hidden: frozenset[str] = frozenset({SECURITY_DATA})


def _audience(catalog: Catalog, profile: Profile, now: float) -> _Audience:
    holdout = catalog.spec.holdout_share
    guard = profile.guard
    session = guard.live_session(now) if guard is not None else None
    consent, grants = profile.consent, profile.grants
    rules = catalog.consent
    return _Audience(
        personalized=rules.purpose_on(consent, "personalization"),
        marketing=rules.purpose_on(consent, "marketing"),
        in_holdout=holdout > 0 and bucket(profile.experiment_key, HOLDOUT_SALT) < holdout,
        flagged=session is not None and session.flagged,
        service_hidden=rules.hidden(consent, grants, View.SERVICE),
        commercial_hidden=rules.hidden(consent, grants, View.COMMERCIAL),
    )


# ---------------------------------------------------------------------- 3. rule environment
class _RuleEnvironment(msgspec.Struct, frozen=True, gc=False):
    """What one view sees (``seen``: the profile with the features of the sources it may
    not read emptied; ``context``: the request's, unless contextual data is hidden), the
    rule variables, the bound evaluation (the paths of hidden sources absent), the
    segments, and each topic's interest view (``topic_view`` builds one the rules did not
    name, on first use); ``personalized``: it reads behaviour."""

    seen: Profile
    context: dict[str, Any]
    variables: dict[str, Any]
    env: LazyEvaluation
    segments: dict[str, bool]
    views: dict[str, dict[str, Any]]
    topic_view: Callable[[str], dict[str, Any]]
    personalized: bool
    #: the decision's time (reasons show rule fields as of it)
    now: float
    #: the data sources this view may not read
    hidden: frozenset[str] = frozenset()


class _Views(msgspec.Struct, frozen=True, gc=False):
    """The two views of one decision (the same object when they see alike): service
    messages read ``service``; commercial offers, ranking and learning ``commercial``."""

    service: _RuleEnvironment
    commercial: _RuleEnvironment

    def of(self, offer: CompiledOffer) -> _RuleEnvironment:
        return self.commercial if offer.kind is _COMMERCIAL else self.service

    def chooser(self, ranked: Sequence[Candidate]) -> _RuleEnvironment:
        """What the chooser (a learned model) reads: the commercial view when anything
        commercial is ranked, else the service view."""
        if self.commercial is self.service:
            return self.service
        if any(c.offer.kind is OfferKind.COMMERCIAL for c in ranked):
            return self.commercial
        return self.service


def _views(
    catalog: Catalog, profile: Profile, request: DecisionRequest, now: float, audience: _Audience
) -> _Views:
    """The service and commercial views; one environment when they differ only in the
    guard's findings (the catalog refuses a segment or a commercial offer reading them:
    ``catalog.compile``), or when marketing is off (nothing reads the commercial view)."""
    service = _rule_environment(catalog, profile, request, now, audience.service_hidden)
    commercial_hidden = audience.commercial_hidden
    if not audience.marketing or commercial_hidden == audience.service_hidden | {SECURITY_DATA}:
        # without marketing consent no commercial offer reaches a rule (NO_CONSENT first),
        # the chooser ranks service messages only, the fallback shows none commercial
        return _Views(service, service)
    commercial = _rule_environment(catalog, profile, request, now, commercial_hidden)
    return _Views(service, commercial)


def _rule_environment(
    catalog: Catalog, profile: Profile, request: DecisionRequest, now: float, hidden: frozenset[str]
) -> _RuleEnvironment:
    sources = catalog.sources
    seen = sources.masked(profile, hidden)
    context = {} if DataSource.CONTEXTUAL in hidden else request.context
    plan = catalog.rule_reads.masked(hidden, sources.needs) if hidden else None
    # rules see only the values they name, down to the field: converting to CEL is the cost
    env = catalog.rule_reads.evaluation(seen, catalog.topics, now, context, plan)
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

    personalized = DataSource.BEHAVIORAL not in hidden
    return _RuleEnvironment(
        seen, context, variables, env, segments, views, topic_view, personalized, now, hidden
    )


# ---------------------------------------------------------------------- 4. candidate filtering
_TRUE, _FALSE, _ERROR = RuleOutcome.TRUE, RuleOutcome.FALSE, RuleOutcome.ERROR


def _audience_block(audience: _Audience) -> Suppression | None:
    """What holds every commercial offer back for this customer now, first that applies:
    a session the guard flagged, no marketing consent, the universal holdout."""
    if audience.flagged:
        return Suppression.SECURITY
    if not audience.marketing:
        return Suppression.NO_CONSENT
    if audience.in_holdout:
        return Suppression.HOLDOUT
    return None


def _filter_candidates(
    catalog: Catalog,
    profile: Profile,
    request: DecisionRequest,
    now: float,
    audience: _Audience,
    views: _Views,
) -> tuple[list[tuple[CompiledOffer, dict[str, Any] | None, bool]], list[Excluded]]:
    """The placement's offers that pass every filter (with their topic's interest view, in
    the offer's view), and the others, each with the first filter that excluded it; each
    eligible offer with whether it is urgent. Owned products are those the commercial view
    sees: products from a source the customer withdrew are not read, even to hold back.

    The filters are the module docstring's, in its order, written out in one loop: every
    offer of the placement passes through it (124 on the 150-rule bench), and a call per
    filter cost 8 % of a decision. The contact policy's tests are ``decide.ranking``'s
    (``marketing``: a commercial offer; ``contact_capped``: all but an urgent message, an
    insight included; ``faded``), read inline here; ``tests/unit/test_candidate_filters.py``
    holds this loop to them."""
    policy = catalog.policy
    owned = _owned_topics(views.commercial.seen, catalog) if policy.suppress_owned else set()
    shown_today = ranking.commercial_shown_today(profile.offers, catalog.commercial_offers, now)
    fatigued = ranking.fatigued(shown_today, policy)
    blocked = _audience_block(audience)
    fade_below, contact_block = policy.fade_below, ranking.contact_block
    exclude, histories = request.exclude, profile.offers
    commercial, service = views.commercial, views.service
    eligible: list[tuple[CompiledOffer, dict[str, Any] | None, bool]] = []
    excluded: list[Excluded] = []
    for offer in catalog.by_placement[request.placement]:
        selling = offer.kind is _COMMERCIAL  # ranking.marketing
        rules = commercial if selling else service
        env, topic = rules.env, offer.topic
        view = rules.topic_view(topic) if topic else None
        trigger = offer.urgent_rule  # a service message whose trigger holds now: urgent
        urgent = trigger is not None and env.check(trigger) is _TRUE
        why: Suppression | None = None
        if offer.id in exclude:
            why = Suppression.ON_PAGE
        elif not offer.live_at(now):
            why = Suppression.OUT_OF_SCHEDULE
        elif selling and (blocked is not None or topic in owned):
            why = blocked or Suppression.OWNED
        else:
            if not urgent or offer.insight:  # ranking.contact_capped
                history = histories.get(offer.id)
                if history is not None:
                    why = contact_block(history, policy, now)
            if why is None and selling:
                if fatigued:
                    why = Suppression.FATIGUE
                elif view is not None and view["total"] > 0 and view["score"] < fade_below:
                    why = Suppression.FADED  # ranking.faded
            if why is None:
                outcome = env.check(offer.rule)
                if outcome is _FALSE:
                    why = Suppression.INELIGIBLE
                elif outcome is _ERROR:
                    why = Suppression.RULE_ERROR
        if why is None:
            eligible.append((offer, view, urgent))
        else:
            excluded.append(Excluded(offer.id, why))
    return eligible, excluded


# ---------------------------------------------------------------------- 5. scoring
def _score(
    eligible: list[tuple[CompiledOffer, dict[str, Any] | None, bool]], catalog: Catalog
) -> list[Candidate]:
    """Each eligible offer scored with the catalog's interest prior."""
    scoring = catalog.scoring
    out: list[Candidate] = []
    for offer, view, urgent in eligible:
        interest = view["score"] if view is not None else 0.0
        p_click = ranking.prior_p_click(offer, interest, scoring)
        out.append(Candidate(offer, p_click, ranking.score(offer, p_click), urgent))
    return out


# ---------------------------------------------------------------------- 7. control group
def _in_control(offer: CompiledOffer, customer: str) -> bool:
    """``offer``'s campaign puts ``customer`` in its control arm."""
    camp = offer.campaign
    return (
        camp is not None
        and camp.control_share > 0
        and assign(customer, camp.salt or camp.id, camp.control_share) is Arm.CONTROL
    )


def _control_group(
    ranked: list[Candidate], customer: str, ctx: ChoiceContext, choose: Chooser, limit: int
) -> tuple[list[Candidate], list[str], list[Excluded]]:
    """The pool (``ranked`` without the offers whose campaign puts the customer in its
    control arm), the control exposures and the control offers, excluded.

    A control offer is an exposure when the policy actually in use would have shown it in a
    visible slot: ``choose`` itself (a learning placement's model and exploration, or the
    engine's order) is asked, as a counterfactual, to choose among every candidate with the
    control offers left in; the same decision id seeds the same exploration draw. The real
    choice is then made among the others, so the slot is filled as for any other customer."""
    held = [c for c in ranked if _in_control(c.offer, customer)]
    if not held:
        return ranked, [], []
    withheld = frozenset(c.offer.id for c in held)
    pool = [c for c in ranked if c.offer.id not in withheld]
    asked = msgspec.structs.replace(ctx, counterfactual=True, withheld=withheld)
    would = choose(asked, ranked, limit)
    shown = (ranked[i].offer.id for i, _ in would.picks[:limit])
    control = [offer for offer in shown if offer in withheld]
    return pool, control, [Excluded(c.offer.id, Suppression.CONTROL) for c in held]


def _measured(catalog: Catalog, profile: Profile, control: list[str], now: float) -> dict[str, Any]:
    """What the control exposures freeze (logged, so the counters read the same in a
    replay or another process), through the customer's analytics view: each control
    campaign's KPIs' pre-exposure covariates, the macro audiences and what the view hid."""
    if not control:
        return {}
    view = analytics_view(profile, catalog)
    out: dict[str, list[float]] = {}
    for offer in control:
        camp = catalog.offers[offer].campaign
        if camp is not None and camp.id not in out:
            out[camp.id] = covariates(view, catalog.kpis.get(camp.id, []), now, catalog)
    return {
        "covariates": out,
        "audiences": macro_audiences(view, catalog, now),
        "analytics_hidden": sorted(view.hidden - {SECURITY_DATA}),
    }


# ---------------------------------------------------------------------- 8. choose
def _rescore(
    pool: list[Candidate], p_click: list[float], p_convert: list[float] | None
) -> list[Candidate]:
    """The pool scored with a learned model's click (and conversion) probabilities."""
    converts: list[float | None] = list(p_convert) if p_convert else [None] * len(pool)
    return [
        Candidate(c.offer, p, ranking.score(c.offer, p, q), c.urgent, q)
        for c, p, q in zip(pool, p_click, converts, strict=True)
    ]


# ---------------------------------------------------------------------- 9. items and reasons
def _items(
    catalog: Catalog,
    placement: PlacementSpec,
    pool: list[Candidate],
    choice: Choice,
    limit: int,
    views: _Views,
    customer: str,
) -> list[DecisionItem]:
    chosen = choice.picks[:limit]
    explored = choice.explored or [False] * len(chosen)
    kinds = choice.kinds or [PropensityKind.EXACT] * len(chosen)
    items: list[DecisionItem] = []
    for position, (index, propensity) in enumerate(chosen, start=1):
        c = pool[index]
        offer = c.offer
        variant = _variant(offer, customer)
        rules = views.of(offer)
        sources, features = _used(catalog, offer.id, rules.hidden)
        items.append(
            DecisionItem(
                position=position,
                offer_id=offer.id,
                kind=ItemKind.of(offer.kind),
                campaign_id=offer.campaign.id if offer.campaign else None,
                arm=Arm.TREATMENT,
                score=round(c.score, 9),
                p_click=round(c.p_click, 9),
                propensity=propensity,
                content=_content(offer, placement.channel.value, variant),
                reasons=_reasons(
                    offer,
                    catalog,
                    rules.views,
                    rules.variables,
                    rules.personalized,
                    rules.segments,
                    rules.seen,
                    rules.now,
                ),
                variant=variant,
                explored=explored[position - 1],
                propensity_kind=kinds[position - 1],
                p_convert=round(offer.base_conversion if c.p_convert is None else c.p_convert, 9),
                sources=sources,
                features=features,
            )
        )
    return items


#: the activity counters a view reads over the sources it allows (``profile.sources.SUMMED``)
_SUMMED = frozenset(f"profile.{name}" for name in SUMMED)


def _used(catalog: Catalog, offer_id: str, hidden: frozenset[str]) -> tuple[list[str], list[str]]:
    """The data sources and features deciding on the offer read (``Catalog.offer_uses``),
    but those of the sources its view hides: read as absent, they were not used."""
    sources: set[str] = set()
    features: list[str] = []
    for feature, of in catalog.offer_uses.get(offer_id, ()):
        if hidden.isdisjoint(of):
            features.append(feature)
            sources |= of
        elif feature in _SUMMED and not of <= hidden:  # counted over the allowed sources
            features.append(feature)
            sources |= of - hidden
    return sorted(sources), features


def _fallback_available(
    catalog: Catalog,
    profile: Profile,
    placement: PlacementSpec,
    request: DecisionRequest,
    now: float,
    audience: _Audience,
) -> list[str]:
    """The placement's fallback content that may be shown to ``profile`` (the commercial
    view) now, in its order: not on the page already, live, never to a campaign's control
    arm, and marketing only with consent, outside the holdout, not in a session the guard
    flagged and not for a product the customer owns."""
    out: list[str] = []
    owned: set[str] | None = None
    for oid in placement.fallback:
        offer = catalog.offers[oid]
        if oid in request.exclude or not offer.live_at(now):
            continue
        if ranking.marketing(offer):
            if owned is None:
                owned = _owned_topics(profile, catalog)
            if (
                audience.flagged
                or not audience.marketing
                or audience.in_holdout
                or offer.topic in owned
            ):
                continue
        if not _in_control(offer, profile.experiment_key):
            out.append(oid)
    return out


def _fallback_items(
    catalog: Catalog,
    placement: PlacementSpec,
    available: list[str],
    items: list[DecisionItem],
    limit: int,
    customer: str,
) -> list[DecisionItem]:
    """The ``available`` fallback content, in order, in the slots ``items`` left empty."""
    free = limit - len(items)
    if free <= 0 or not available:
        return []
    shown = {i.offer_id for i in items}
    out: list[DecisionItem] = []
    for oid in (o for o in available if o not in shown):
        offer = catalog.offers[oid]
        p_click = ranking.prior_p_click(offer, 0.0, catalog.scoring)
        variant = _variant(offer, customer)
        out.append(
            DecisionItem(
                position=len(items) + len(out) + 1,
                offer_id=oid,
                kind=ItemKind.of(offer.kind),
                campaign_id=offer.campaign.id if offer.campaign else None,
                arm=Arm.TREATMENT,
                score=round(ranking.score(offer, p_click), 9),
                p_click=round(p_click, 9),
                propensity=1.0,
                content=_content(offer, placement.channel.value, variant),
                reasons=[
                    Reason(
                        ReasonCode.FALLBACK,
                        f"shown when nothing else fits: {offer.spec.name}",
                        {"offer": oid},
                    )
                ],
                variant=variant,
            )
        )
        if len(out) == free:
            break
    return out


def _outranked(pool: list[Candidate], choice: Choice, limit: int) -> list[Excluded]:
    shown = {index for index, _ in choice.picks[:limit]}
    return [
        Excluded(c.offer.id, Suppression.OUTRANKED) for i, c in enumerate(pool) if i not in shown
    ]


# ---------------------------------------------------------------------- 10. the decision
def _features(pool: list[Candidate], views: _Views) -> dict[str, float]:
    """What the prior's scores were computed from: the candidates' topics' interest (in the
    view of the first candidate of each topic)."""
    found: dict[str, float] = {}
    for c in pool:
        topic = c.offer.topic
        if topic is not None and topic not in found:  # each candidate's view was built
            score = views.of(c.offer).views[topic]["score"]
            found[topic] = ranking.logged_interest(score)
    return {ranking.interest_key(t): found[t] for t in sorted(found)}


def _variant(offer: CompiledOffer, customer: str) -> str | None:
    """The variant of ``offer``'s campaign a treated ``customer`` is in (None: no variants)."""
    variants, camp = offer.variants, offer.campaign
    if variants is None or camp is None:
        return None
    position = bucket(customer, camp.salt or camp.id)
    return variants.ids[variant_index(position, camp.control_share, variants.bounds)]


def _content(offer: CompiledOffer, channel: str, variant: str | None = None) -> dict[str, Any]:
    content = offer.spec.content[channel]  # type: ignore[index]
    if variant is not None and offer.variants is not None:
        own = offer.variants.content[variant].get(offer.id, {})
        content = own.get(channel, content)  # type: ignore[call-overload]
    return {
        "title": content.title,
        "body": content.body,
        "cta": content.cta,
        "url": content.url,
        "image": content.image,
    }


# ---------------------------------------------------------------------- the advisor card
def _advisor_decision(
    catalog: Catalog,
    profile: Profile,
    request: DecisionRequest,
    now: float,
    decision_id: str,
    placement: PlacementSpec,
    audience: _Audience,
    board: AdvisorBoard,
) -> Decision:
    """The decision of an advisor placement: one advisor card, or none (the module
    docstring's order of checks). The card reads what personalization allows (its own
    purpose, ``advisor_contact``, is ``may_contact``'s); without behaviour: no live topic,
    no card."""
    hidden = audience.service_hidden
    profile = catalog.sources.masked(profile, hidden)
    behaviour = audience.personalized and DataSource.BEHAVIORAL not in hidden
    live = live_topics(catalog, profile, now) if behaviour else []
    excluded: list[Excluded] = []
    card: AdvisorCard | None = None
    if live and audience.flagged:  # an invitation to talk about a product is sales
        excluded = [Excluded(advisor_card_id(t.topic), Suppression.SECURITY) for t in live]
    elif live and not may_contact(catalog, profile):
        excluded = [Excluded(advisor_card_id(t.topic), Suppression.NO_CONSENT) for t in live]
    elif live:
        held = _held_cards(catalog, profile, request, now, audience, [t.topic for t in live])
        excluded = [Excluded(advisor_card_id(t), why) for t, why in held.items()]
        card = advisor_card(
            catalog,
            profile,
            board,
            now,
            language=_language(profile, request),
            skip=held,
            live=live,
        )
    held_ids = {e.offer_id for e in excluded}
    candidates = [cid for t in live if (cid := advisor_card_id(t.topic)) not in held_ids]
    shown = advisor_card_id(card.topic) if card is not None else None
    tried = candidates.index(shown) if shown is not None else len(candidates)
    excluded += [Excluded(cid, Suppression.NO_ADVISOR) for cid in candidates[:tried]]
    excluded += [Excluded(cid, Suppression.OUTRANKED) for cid in candidates[tried + 1 :]]
    return Decision(
        decision_id=decision_id,
        customer_id=profile.customer_id,
        placement=placement.id,
        timestamp=now,
        catalog_version=catalog.version,
        items=[_card_item(card)] if card is not None else [],
        excluded=excluded,
        control=[],
        segments=[],
        candidates=candidates,
        features=(
            {ranking.interest_key(card.topic): ranking.logged_interest(card.interest)}
            if card is not None
            else {}
        ),
        experiment_key=key if (key := profile.experiment_key) != profile.customer_id else "",
    )


def _language(profile: Profile, request: DecisionRequest) -> str | None:
    """The customer's language: the request's ``context.language`` or ``context.locale``,
    else the ``language`` or ``locale`` trait."""
    context, traits = request.context, profile.traits
    return customer_language(
        context.get("language"), context.get("locale"), traits.get("language"), traits.get("locale")
    )


def _held_cards(
    catalog: Catalog,
    profile: Profile,
    request: DecisionRequest,
    now: float,
    audience: _Audience,
    topics: list[str],
) -> dict[str, Suppression]:
    """The live topics whose card the contact policy holds back, each with the first check
    that holds it: on the page already, universal holdout, product owned, cap and rests."""
    policy = catalog.policy
    owned = _owned_topics(profile, catalog) if policy.suppress_owned else set()
    held: dict[str, Suppression] = {}
    for topic in topics:
        cid = advisor_card_id(topic)
        history = profile.offers.get(cid)
        if cid in request.exclude:
            held[topic] = Suppression.ON_PAGE
        elif audience.in_holdout:
            held[topic] = Suppression.HOLDOUT
        elif topic in owned:
            held[topic] = Suppression.OWNED
        elif history is not None and (block := ranking.contact_block(history, policy, now)):
            held[topic] = block
    return held


def _card_item(card: AdvisorCard) -> DecisionItem:
    """The decision item of an advisor card: what a page renders, with the card itself."""
    advisor = card.advisor
    topic = card.topic_name.lower()
    return DecisionItem(
        position=1,
        offer_id=advisor_card_id(card.topic),
        kind=ItemKind.ADVISOR,
        campaign_id=None,
        arm=Arm.TREATMENT,
        score=round(card.interest, 9),
        p_click=0.0,
        propensity=1.0,
        content={
            "title": f"Questions about {topic}? Talk to {advisor.name}",
            "body": f"{advisor.name} is one of our {topic} experts.",
            "cta": "Call me now" if card.available else "Call me later",
            "url": None,
            "image": advisor.photo_url,
        },
        reasons=[
            Reason(
                ReasonCode.TOPIC_INTEREST,
                card.reason,
                {"topic": card.topic, "count": card.count, "days": card.days},
            )
        ],
        sources=[str(DataSource.BEHAVIORAL)],
        features=[f"interest.{card.topic}"],
        advisor=card,
    )
