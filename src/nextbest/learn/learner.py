"""The engine's learning state: one propensity model per learning placement, the views still
waiting for a click, and each campaign's exploration budget. Pure: event times drive it.

**Choosing.** For a placement with ``learning`` in the catalog, ``choose`` scores every
eligible candidate with the placement's model (``p_click`` at position 1, times value and
campaign weight), then ranks with the placement's exploration policy (``learn.explore``), so
each item carries the exact probability it was placed there (for Thompson sampling, the
share of the decision's seeded posterior samples that place it so). The customer features
used are logged with the decision, so feedback learns from exactly what the decision saw,
and analysts can re-score offline.

**Learning.** Feedback joins its decision (``decide.feedback`` checked it before it was
stored). A click is learned at once as a 1 (the very next decision reflects it); a dismissal
at once as a 0; a view waits ``click_window_minutes`` for its click and is then learned as a
0. Time is when the server received each event (``received_at``, kept in the log), never the
wall clock and never a client's own clock (one skewed device could otherwise close every
window), so a replay of the same log gives byte-identical models (``to_state``). On a
server on event time (``--clock event``: replays, backfills, simulations) each event is
received at its own timestamp, so a view's miss is learned once event time passes its
window, however fast the events arrive. Only
decisions this learner made teach its model (another chooser's decision, a simulator's
policy say, logs other features). A click counts while its view waits, or within
two click windows of the decision (a click that overtook its view); later clicks are
ignored: the view was already learned as a miss.

**One model for the shared placements.** The ``contextual`` placements whose ``learning``
says ``shared`` (the default) learn one model together: the placement is a feature of it
(``placement:<p>``, its base rate; ``pos:<p>:<k>``, its position discounts), and every other
weight (an offer's level, a customer's interest crossed with a topic, an offer's own crosses,
fatigue) learns from every placement's feedback, not a quarter of it each. Exploration, the
click window and the budgets stay the placement's. A snapshot keeps that model once
(``SHARED``).

**Exploration budget.** Each campaign's explored share of impressions stays at or under its
``max_exploration``; a campaign over it is shown only where the greedy order puts it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import islice
from typing import Any, NamedTuple, TypeVar

import msgspec

from nextbest.catalog.compiled import Catalog, CompiledOffer
from nextbest.catalog.model import LearningSpec, ModelKind
from nextbest.decide import ranking
from nextbest.decide.model import Candidate, Choice, ChoiceContext, Decision
from nextbest.decide.pipeline import greedy
from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.learn.bayes import BetaBernoulli
from nextbest.learn.bayes_logistic import BayesLogistic, sigmoid
from nextbest.learn.calibration import Calibration
from nextbest.learn.contextual import ContextualLogistic
from nextbest.learn.conversion import (
    ANY_TOPIC,
    NO_INTENT,
    ConversionFit,
    ConversionModel,
    PendingConversion,
    intent_level,
    kpi_topic,
)
from nextbest.learn.explore import (
    BetaScores,
    ExplorationBudget,
    GaussianScores,
    Greedy,
    Policy,
    RankEntry,
    Thompson,
    rank,
    seed_of,
)
from nextbest.learn.features import HISTORY_FEATURES, Features, customer_features, offer_history
from nextbest.learn.logs import DEFAULT_ATTRIBUTION_DAYS
from nextbest.learn.model import (
    DEFAULT_PRIOR_MEAN,
    ModelInfo,
    OfferRef,
    PropensityModel,
    describe,
    load_model,
    new_model,
)
from nextbest.learn.volume import FeedbackVolume
from nextbest.profile.identity import ANON_PREFIX

__all__ = [
    "HISTORY",
    "MAX_WAITING_VIEWS",
    "PRIOR",
    "SHARED",
    "Learner",
    "PlacementModel",
    "customer_part",
    "history_part",
]

#: logged feature ``prior:<offer>``: the catalog's interest prior of that candidate
PRIOR = "prior:"
#: logged features ``hist.<f>:<offer>``: that candidate's own history with the customer
#: (``learn.features.offer_history``), for the candidates that have one
HISTORY = "hist."
#: the key of the shared placements' one model in a snapshot (no placement id has brackets)
SHARED = "(shared)"
#: views waiting for a click at once (about 1.8 KB each, all in every learner snapshot); a
#: view past it is not learned, so no client can grow the server's memory without bound
MAX_WAITING_VIEWS = 100_000
_BASE = math.log(DEFAULT_PRIOR_MEAN / (1.0 - DEFAULT_PRIOR_MEAN))
_T = TypeVar("_T")


def _offset(prior: float | None) -> float:
    """The prior's log-odds over a fresh model's base rate (0 when unknown)."""
    if prior is None:
        return 0.0
    p = min(max(prior, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p)) - _BASE


def _decided_by(model: PropensityModel, decision: Decision) -> bool:
    """The decision was made by a model of this kind (its version names the kind)."""
    return decision.model_version.startswith(model.kind.value)


def customer_part(features: Features, candidates: Sequence[str] = ()) -> Features:
    """A logged decision's customer features: its ``features`` without the priors.

    ``choose`` logs the customer's features first, then one ``prior:<offer>`` per candidate in
    the candidates' order, so with the decision's ``candidates`` this is a prefix, copied
    without looking at every name; features in any other order are filtered name by name."""
    n = len(features) - len(candidates)
    if candidates and n >= 0:
        first = next(islice(features, n, None), None)
        if first == PRIOR + candidates[0] and next(reversed(features)) == PRIOR + candidates[-1]:
            items = list(islice(features.items(), n))
            while items and items[-1][0].startswith(HISTORY):  # the candidates' histories
                items.pop()
            return dict(items)
    return {
        k: v for k, v in features.items() if not k.startswith(PRIOR) and not k.startswith(HISTORY)
    }


def history_part(features: Mapping[str, float], offer_id: str) -> Features:
    """A logged decision's history features of candidate ``offer_id`` (``HISTORY``)."""
    out: Features = {}
    for f in HISTORY_FEATURES:
        v = features.get(HISTORY + f + ":" + offer_id)
        if v is not None:
            out[f] = v
    return out


class _View(msgspec.Struct, array_like=True, gc=False):
    """A view waiting for its click: what it is learned from if none comes."""

    shown: float
    deadline: float
    decision_id: str
    offer_id: str
    placement: str
    position: int
    #: the prior's log-odds offset for this offer (before ``customer``: a snapshot from a
    #: version that kept the whole logged features here fails to decode and is replayed)
    offset: float
    #: the decision's customer features (``customer_part``)
    customer: Features
    #: the offer's own history when it was shown (``history_part``)
    history: Features = {}


class _State(msgspec.Struct, kw_only=True):
    models: dict[str, bytes]
    views: list[_View]
    answered: list[tuple[float, str, str]]
    budgets: dict[str, tuple[int, int]]
    now: float
    learned: int
    #: clicks waiting for their KPI event, and each offer's conversion counts
    pending: list[PendingConversion] = []
    conversions: dict[str, tuple[float, float]] = {}
    #: (offer id, intent level, conversions, clicks with an outcome)
    conversion_intents: list[tuple[str, int, float, float]] = []
    #: feedback volume per key and network origin (``learn.volume``)
    trust: bytes = b""
    #: the placements whose model is ``models[SHARED]``
    shared: list[str] = []
    #: the conversion model's last fit and the outcomes since (none in a snapshot from
    #: before it was kept: refitted on load)
    conversion_fit: ConversionFit | None = None


class _Scored(NamedTuple):
    """One decision's candidates as a placement's model scored them (what ``choose`` ranks)."""

    decision: str
    x: Features
    offers: list[str]
    refs: list[OfferRef]
    p_click: list[float]
    #: the scores' posterior (log-odds means, spreads), where Thompson sampling reads it
    posterior: tuple[list[float], list[float]] | None
    p_convert: list[float]
    extras: list[Features] | None
    #: value x campaign weight x conversion per candidate (``ranking.worth``)
    scale: list[float]
    #: the candidate's campaign may still be explored (``ExplorationBudget``)
    explorable: list[bool]

    def take(self, pool: Sequence[Candidate]) -> _Scored | None:
        """The same scores for ``pool`` (None unless every candidate of it was scored)."""
        index = {offer: i for i, offer in enumerate(self.offers)}
        at = [index.get(c.offer.id, -1) for c in pool]
        if -1 in at:
            return None

        def of(values: list[_T]) -> list[_T]:
            return [values[i] for i in at]

        posterior = self.posterior
        return _Scored(
            self.decision,
            self.x,
            of(self.offers),
            of(self.refs),
            of(self.p_click),
            None if posterior is None else (of(posterior[0]), of(posterior[1])),
            of(self.p_convert),
            None if self.extras is None else of(self.extras),
            of(self.scale),
            of(self.explorable),
        )


class PlacementModel(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``nextbest models``."""

    placement: str
    explore: str
    info: ModelInfo
    #: the placement learns the model the other shared placements learn (``learning.shared``)
    shared: bool = False
    #: the placement's logged estimates against outcomes (``learn.calibration``): filled
    #: where the decision log is read (``usecases.list_models``)
    calibration: list[Calibration] = []


def _shares(learning: LearningSpec) -> bool:
    """A placement that learns with this spec learns the shared model."""
    return learning.shared and learning.model is ModelKind.CONTEXTUAL


class Learner:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        #: the placements that learn one model together (``_shares``), sorted
        self.shared = sorted(
            p.id for p in catalog.spec.placements if p.learning is not None and _shares(p.learning)
        )
        one = new_model(ModelKind.CONTEXTUAL) if self.shared else None
        self.models: dict[str, PropensityModel] = {
            p.id: one if one is not None and p.id in self.shared else new_model(p.learning.model)
            for p in catalog.spec.placements
            if p.learning is not None
        }
        self.budgets = {c.id: ExplorationBudget(c.max_exploration) for c in catalog.spec.campaigns}
        self._refs: dict[tuple[str, str], OfferRef] = {}
        self._views: dict[tuple[str, str], _View] = {}
        self._deadlines: list[tuple[float, str, str]] = []  # heap over _views
        #: (decision, offer) already learned, until the time it may be forgotten
        self._answered: dict[tuple[str, str], float] = {}
        self._forget: list[tuple[float, str, str]] = []  # heap over _answered
        self.now = -math.inf
        #: P(conversion | click) per offer, and the clicks waiting for their KPI event
        self.conversions = ConversionModel(catalog.scoring.conversion_strength, catalog.offers)
        self._kpi_events = frozenset(
            o.spec.kpi_event for o in catalog.offers.values() if o.spec.kpi_event
        )
        self._pending: list[PendingConversion] = []  # a heap by deadline
        #: (KPI event, customer key at the click) -> its waiting clicks, oldest first
        self._awaiting: dict[tuple[str, str], list[PendingConversion]] = {}
        #: feedback events learned from, all placements
        self.learned = 0
        #: feedback volume per key and network origin, for the trust rules (``learn.trust``)
        self.volume = FeedbackVolume(catalog.spec.profile.feedback)
        #: changed since the last ``to_state``
        self.dirty = False
        #: a counterfactual choice's scores, for the real choice of the same decision
        self._memo: _Scored | None = None

    # ---------------------------------------------------------------- choosing
    def _ref(self, offer: CompiledOffer, placement: str) -> OfferRef:
        key = (offer.id, placement)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._refs[key] = OfferRef(
                offer_id=offer.id,
                placement=placement,
                topic=offer.topic,
                kind=offer.kind,
                campaign_id=offer.campaign.id if offer.campaign else None,
            )
        return ref

    def _page_topics(self, context: Mapping[str, Any]) -> list[str]:
        """The topics of the page a decision is for: Segment's ``context.page`` (``url``
        or ``path``), matched by the catalog's URL patterns."""
        page = context.get("page")
        if not isinstance(page, Mapping):
            return []
        url = page.get("url") or page.get("path")
        return self.catalog.matcher.topics_of_url(url) if isinstance(url, str) else []

    def _explorable(self, offer: CompiledOffer) -> bool:
        camp = offer.campaign
        return camp is None or self.budgets[camp.id].explorable(camp.id)

    def choose(self, ctx: ChoiceContext, pool: Sequence[Candidate], limit: int) -> Choice:
        """The placement's model and exploration policy pick; greedy where nothing learns.

        A counterfactual choice (``ChoiceContext.counterfactual``: where a control
        customer's withheld offers would have landed) counts nothing in the exploration
        budgets and needs no propensities (Thompson sampling draws only up to the sample it
        ranks by, and nothing when no sample could place a withheld offer: the same places
        for those, ``explore.rank``'s ``watch``); its scores are kept for the real
        choice of the same decision that follows (among the same candidates but the
        withheld ones), which then scores nothing again."""
        model = self.models.get(ctx.placement)
        learning = self.catalog.placements[ctx.placement].learning
        if model is None or learning is None:
            return greedy(ctx, pool, limit)
        memo, self._memo = self._memo, None
        scored = memo.take(pool) if memo is not None and memo.decision == ctx.decision_id else None
        if scored is None:
            scored = self._score(model, learning.explore, ctx, pool)
        if ctx.counterfactual:
            self._memo = scored
        p_click, p_convert, posterior = scored.p_click, scored.p_convert, scored.posterior
        scale = scored.scale
        scores = [p * s for p, s in zip(p_click, scale, strict=True)]
        slots = [
            RankEntry(urgent=c.urgent, explorable=e)
            for c, e in zip(pool, scored.explorable, strict=True)
        ]
        thompson: BetaScores | GaussianScores | None = None
        if isinstance(learning.explore, Thompson) and isinstance(model, BetaBernoulli):
            posteriors = [model.posterior(r) for r in scored.refs]
            thompson = BetaScores([a for a, _ in posteriors], [b for _, b in posteriors], scale)
        elif isinstance(learning.explore, Thompson) and posterior is not None:
            thompson = GaussianScores(posterior[0], posterior[1], scale)
        seed = seed_of(ctx.decision_id)
        placed = rank(
            slots,
            scores,
            limit,
            learning.explore,
            random.Random(seed),
            thompson=thompson,
            seed=seed,
            counterfactual=ctx.counterfactual,
            watch={i for i, c in enumerate(pool) if c.offer.id in ctx.withheld}
            if ctx.withheld
            else None,
        )
        if ctx.counterfactual:  # where the items would be: nothing counted, nothing logged
            return Choice(picks=[(pl.index, pl.propensity) for pl in placed])
        for pl in placed:
            camp = pool[pl.index].offer.campaign
            if camp is not None and not slots[pl.index].urgent:
                self.budgets[camp.id].record(camp.id, pl.explored)
                self.dirty = True
        x, extras = scored.x, scored.extras
        return Choice(
            picks=[(pl.index, pl.propensity) for pl in placed],
            explored=[pl.explored for pl in placed],
            kinds=[pl.propensity_kind for pl in placed],
            p_click=p_click,
            p_convert=p_convert,
            features={
                **x,
                **self._logged_histories(pool, extras),
                **{PRIOR + c.offer.id: round(c.p_click, 9) for c in pool},
            },
            model_version=model.version,
            unexplorable=[]
            if isinstance(learning.explore, Greedy)
            else [i for i, s in enumerate(slots) if not s.explorable and not s.urgent],
        )

    def _score(
        self, model: PropensityModel, explore: Policy, ctx: ChoiceContext, pool: Sequence[Candidate]
    ) -> _Scored:
        """Every candidate scored by the placement's model: click, conversion and, where
        Thompson sampling reads it, the score's posterior."""
        x = customer_features(
            ctx.profile,
            self.catalog.topics,
            ctx.now,
            ctx.context,
            ctx.segments,
            page_topics=self._page_topics(ctx.context),
        )
        refs = [self._ref(c.offer, ctx.placement) for c in pool]
        offsets = [_offset(c.p_click) for c in pool]
        extras = self._histories(x, ctx, pool) if model.uses_features else None
        posterior: tuple[list[float], list[float]] | None = None
        if isinstance(model, BayesLogistic):  # one pass for the means and the spreads
            posterior = model.posterior_many(x, refs, 1, offsets)
            p_click = [sigmoid(mu) for mu in posterior[0]]
        elif isinstance(model, ContextualLogistic) and isinstance(explore, Thompson):
            posterior = model.posterior_many(x, refs, 1, offsets, extras)
            p_click = [sigmoid(mu) for mu in posterior[0]]
        else:
            p_click = model.predict_many(x, refs, offsets=offsets, extras=extras)
        p_convert = [self.conversions.predict(c.offer, self._intent(x, c.offer)) for c in pool]
        return _Scored(
            ctx.decision_id,
            x,
            [c.offer.id for c in pool],
            refs,
            p_click,
            posterior,
            p_convert,
            extras,
            [ranking.worth(c.offer, q) for c, q in zip(pool, p_convert, strict=True)],
            [self._explorable(c.offer) for c in pool],
        )

    @staticmethod
    def _histories(x: Features, ctx: ChoiceContext, pool: Sequence[Candidate]) -> list[Features]:
        """Each candidate's own history with the customer (``offer_history``)."""
        offers = ctx.profile.offers
        if not offers:
            return [{} for _ in pool]
        return [
            offer_history(
                offers.get(c.offer.id),
                ctx.now,
                x.get(ranking.INTEREST + c.offer.topic, 0.0) if c.offer.topic else 0.0,
            )
            for c in pool
        ]

    @staticmethod
    def _logged_histories(
        pool: Sequence[Candidate], extras: list[Features] | None
    ) -> dict[str, float]:
        if not extras:
            return {}
        return {
            HISTORY + f + ":" + c.offer.id: round(v, 9)
            for c, h in zip(pool, extras, strict=True)
            for f, v in h.items()
        }

    def reset_budgets(self) -> None:
        """Forget every campaign's counts (before recounting them from the decision log)."""
        self.budgets = {
            c.id: ExplorationBudget(c.max_exploration) for c in self.catalog.spec.campaigns
        }
        self.dirty = True

    def record_decision(self, decision: Decision) -> None:
        """Count a logged decision's items against the campaigns' budgets (for a replay)."""
        for campaign_id, explored in self._budgeted(decision):
            self.budgets[campaign_id].record(campaign_id, explored)
            self.dirty = True

    def _budgeted(self, decision: Decision) -> list[tuple[str, bool]]:
        """(campaign, explored) of each item of ``decision`` that counts in a budget."""
        model = self.models.get(decision.placement)
        if model is None or not _decided_by(model, decision):
            return []
        return [
            (item.campaign_id, item.explored)
            for item in decision.items
            if item.campaign_id is not None
            and item.offer_id not in decision.urgent
            and item.campaign_id in self.budgets
        ]

    # ---------------------------------------------------------------- learning
    def observe(self, event: Event, decision: Decision | None) -> None:
        """Move time to the event, then learn from it if it is feedback on a learning
        placement's decision."""
        at = event.received_at  # server time: a client's skewed clock cannot close windows
        self.advance(at)
        if decision is None or event.name is None:
            return
        model = self.models.get(decision.placement)
        placement = self.catalog.placements.get(decision.placement)
        learning = placement.learning if placement is not None else None
        if model is None or learning is None:
            return
        if not _decided_by(model, decision):
            return  # another chooser decided (a simulator's policy): not this model's features
        offer_id = str(event.properties.get("promotion_id"))
        item = next((i for i in decision.items if i.offer_id == offer_id), None)
        offer = self.catalog.offers.get(offer_id)
        if item is None or offer is None:
            return
        key = (decision.decision_id, offer_id)
        window = learning.click_window_minutes * 60.0
        if key in self._answered:
            return  # learned already: a second click, a click after the window, a late view
        if at > decision.timestamp + 2 * window and key not in self._views:
            # nothing waits for it: its view was learned as a miss long ago, or it is stale
            return
        if event.name == EventName.PROMOTION_VIEWED:
            if key not in self._views:
                x, offset = self._inputs(model, decision, offer_id)
                view = _View(
                    at,
                    at + window,
                    decision.decision_id,
                    offer_id,
                    decision.placement,
                    item.position,
                    offset,
                    x,
                    history_part(decision.features, offer_id) if model.uses_features else {},
                )
                if len(self._views) >= MAX_WAITING_VIEWS:
                    return  # full: this view is not learned (memory stays bounded)
                self._views[key] = view
                heapq.heappush(self._deadlines, (view.deadline, key[0], key[1]))
                self.dirty = True
            return
        if event.name == EventName.PROMOTION_CLICKED:
            reward = 1.0
        elif event.name == EventName.PROMOTION_DISMISSED:
            reward = 0.0
        else:
            return
        waiting = self._views.pop(key, None)
        if waiting is None:
            return  # a click or dismissal counts only after a view of the same item
        x, offset = waiting.customer, waiting.offset  # its features, taken at the view
        model.learn_one(
            x,
            self._ref(offer, decision.placement),
            item.position,
            reward,
            offset=offset,
            extra=waiting.history,
        )
        if reward == 1.0 and offer.spec.kpi_event:
            self._await_conversion(decision, offer, at)
        # remembered as long as a late view or click of this item could still be taken
        self._answer(key, max(at + window, decision.timestamp + 2 * window))

    def _await_conversion(self, decision: Decision, offer: CompiledOffer, at: float) -> None:
        """A click on ``offer`` waits for its KPI event within the attribution window."""
        camp = offer.campaign
        days = camp.attribution_days if camp is not None else DEFAULT_ATTRIBUTION_DAYS
        kpi = offer.spec.kpi_event
        assert kpi is not None
        intent = self._intent(decision.features, offer) if decision.features else NO_INTENT
        pending = PendingConversion(
            at + days * 86_400.0, at, decision.customer_id, offer.id, kpi, intent
        )
        self._wait(pending)
        self.dirty = True

    def _intent(self, features: Mapping[str, float], offer: CompiledOffer) -> int:
        """The customer's intent level for ``offer`` (``learn.conversion``) from decision
        features: their interest in its topic (unknown for an offer without one)."""
        if offer.topic is None:
            return NO_INTENT
        interest = ranking.interest_score(features, offer.topic)
        return intent_level(interest, self.catalog.scoring.half_saturation)

    def _wait(self, pending: PendingConversion) -> None:
        heapq.heappush(self._pending, pending)
        self._awaiting.setdefault((pending.kpi_event, pending.customer), []).append(pending)

    def _stop_waiting(self, pending: PendingConversion) -> None:
        key = (pending.kpi_event, pending.customer)
        waiting = self._awaiting.get(key)
        if waiting is not None and pending in waiting:
            waiting.remove(pending)
            if not waiting:
                del self._awaiting[key]

    def awaits(self, event: Event) -> bool:
        """``event`` is a KPI event some click is waiting for (cheap: ingestion asks it of
        every event before resolving who sent it)."""
        return (
            bool(self._awaiting)
            and event.type is EventType.TRACK
            and event.name in self._kpi_events
        )

    def observe_outcome(
        self, event: Event, customer: str, same: Callable[[str, Event], bool]
    ) -> None:
        """A KPI event converts the latest waiting click of the same customer on an offer
        with that KPI (of the offer's topic when it names a product or a topic:
        ``conversion.kpi_topic``). ``customer``: who the
        event resolves to now; ``same(key, event)``: the event comes from the customer a
        click was made under. Clicks are looked up under ``customer``, the event's userId
        and its ``anon:<anonymousId>``: a click made anonymously converts when the KPI event
        carries that anonymousId or the profile has been stitched to it since."""
        name = event.name
        if name is None or not self.awaits(event):
            return
        keys = {customer}
        if event.user_id:
            keys.add(event.user_id)
        if event.anonymous_id:
            keys.add(ANON_PREFIX + event.anonymous_id)
        about = kpi_topic(event.properties, self.catalog.matcher.topic_of_product)
        at = event.received_at
        best: PendingConversion | None = None
        for key in sorted(keys):
            for p in self._awaiting.get((name, key), ()):
                if not p.clicked_at <= at <= p.deadline:
                    continue
                offer = self.catalog.offers.get(p.offer_id)
                if offer is None or about not in (ANY_TOPIC, offer.topic):
                    continue
                if (best is None or p.clicked_at > best.clicked_at) and same(p.customer, event):
                    best = p
        if best is not None:
            self._stop_waiting(best)
            self._pending.remove(best)
            heapq.heapify(self._pending)
            self.conversions.learn(best.offer_id, True, best.intent)
            self.dirty = True

    @staticmethod
    def _inputs(
        model: PropensityModel, decision: Decision, offer_id: str
    ) -> tuple[Features, float]:
        """What ``model`` learns feedback on ``offer_id`` from: the decision's customer
        features (none for a model that does not read them) and the offer's prior offset."""
        x = customer_part(decision.features, decision.candidates) if model.uses_features else {}
        return x, _offset(decision.features.get(PRIOR + offer_id))

    def _answer(self, key: tuple[str, str], until: float) -> None:
        self._answered[key] = until
        heapq.heappush(self._forget, (until, key[0], key[1]))
        self.learned += 1
        self.dirty = True

    def advance(self, now: float) -> None:
        """Views whose click window closed before ``now`` are learned as misses."""
        if now <= self.now:
            return
        self.now = now
        self.dirty = self.dirty or bool(self.models)
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] < now:
            deadline, decision_id, offer_id = heapq.heappop(deadlines)
            view = self._views.pop((decision_id, offer_id), None)
            if view is None:  # clicked or dismissed meanwhile
                continue
            offer = self.catalog.offers.get(offer_id)
            model = self.models.get(view.placement)
            if offer is not None and model is not None:
                ref = self._ref(offer, view.placement)
                model.learn_one(
                    view.customer, ref, view.position, 0.0, offset=view.offset, extra=view.history
                )
            # a click arriving after the window is ignored for one more window
            self._answer((decision_id, offer_id), 2 * deadline - view.shown)
        pending = self._pending
        while pending and pending[0].deadline < now:
            expired = heapq.heappop(pending)
            self._stop_waiting(expired)
            self.conversions.learn(expired.offer_id, False, expired.intent)
        forget = self._forget
        while forget and forget[0][0] < now:
            until, decision_id, offer_id = heapq.heappop(forget)
            if self._answered.get((decision_id, offer_id)) == until:
                del self._answered[(decision_id, offer_id)]

    def forget(self, decision_ids: Collection[str], customers: Collection[str]) -> int:
        """Erase a customer: the views waiting on their decisions (``decision_ids``), what
        was answered of them, and their clicks waiting for a KPI event (``customers``: their
        customer keys) go, unlearned. What the models learned from them before stays (model
        weights aggregate many customers; nothing in them names one). How many went."""
        decisions, keys = set(decision_ids), set(customers)
        views = [k for k in self._views if k[0] in decisions]
        for k in views:
            del self._views[k]
        self._deadlines = [d for d in self._deadlines if d[1] not in decisions]
        heapq.heapify(self._deadlines)
        for k in [k for k in self._answered if k[0] in decisions]:
            del self._answered[k]
        self._forget = [f for f in self._forget if f[1] not in decisions]
        heapq.heapify(self._forget)
        clicks = [p for p in self._pending if p.customer in keys]
        for p in clicks:
            self._stop_waiting(p)
        self._pending = [p for p in self._pending if p.customer not in keys]
        heapq.heapify(self._pending)
        self.dirty = True
        return len(views) + len(clicks)

    # ---------------------------------------------------------------- reading, state
    def describe(self, k: int = 10) -> list[PlacementModel]:
        out = []
        for placement, model in self.models.items():
            learning = self.catalog.placements[placement].learning
            explore = "" if learning is None else type(learning.explore).__name__
            out.append(
                PlacementModel(
                    placement=placement,
                    explore=explore,
                    info=describe(model, k),
                    shared=placement in self.shared,
                )
            )
        return out

    @property
    def pending_views(self) -> int:
        return len(self._views)

    @property
    def pending_conversions(self) -> int:
        """Clicks waiting for their offer's KPI event."""
        return len(self._pending)

    def to_state(self, unlogged: Sequence[Decision] = ()) -> bytes:
        """Everything, deterministic bytes: models, waiting views, budgets, time.

        ``unlogged``: decisions this learner made that the decision log does not hold yet;
        the budgets saved leave them out, so the state counts exactly the logged decisions
        up to a point and a restart counts the rest from the log."""
        budgets = {c: b.counts().get(c, (0, 0)) for c, b in sorted(self.budgets.items())}
        for decision in unlogged:
            for campaign_id, explored in self._budgeted(decision):
                shown, n_explored = budgets[campaign_id]
                budgets[campaign_id] = (shown - 1, n_explored - explored)
        models = {p: m.to_state() for p, m in sorted(self.models.items()) if p not in self.shared}
        if self.shared:
            models[SHARED] = self.models[self.shared[0]].to_state()
        state = _State(
            models=models,
            views=sorted(
                self._views.values(), key=lambda v: (v.deadline, v.decision_id, v.offer_id)
            ),
            answered=sorted((u, d, o) for (d, o), u in self._answered.items()),
            budgets=budgets,
            now=self.now,
            learned=self.learned,
            pending=sorted(self._pending),
            conversions=self.conversions.counts(),
            conversion_intents=self.conversions.intent_counts(),
            trust=self.volume.to_state(),
            shared=self.shared,
            conversion_fit=self.conversions.fitted(),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, catalog: Catalog, data: bytes) -> Learner:
        """A learner for ``catalog`` resumed from ``to_state`` bytes: of the same catalog (a
        restart), or of the one it replaces (a reload). A placement keeps its model while it
        learns with the same kind of model; the budgets of campaigns that still exist go on;
        views and clicks waiting on offers that are gone are dropped as they come due."""
        state = msgspec.msgpack.decode(data, type=_State)
        learner = cls(catalog)
        was_shared = set(state.shared)

        def saved(placement: str) -> bytes | None:
            """What ``placement`` learned with: its own model or the shared one."""
            return state.models.get(SHARED if placement in was_shared else placement)

        for placement, fresh in learner.models.items():
            if placement in learner.shared:
                continue
            body = saved(placement)
            if body is not None:
                model = load_model(body)
                if model.kind is fresh.kind:
                    learner.models[placement] = model
        if learner.shared:
            # the shared model goes on; sharing newly, it starts from what the first shared
            # placement (in id order) that learned the same kind of model had learned
            bodies = [saved(p) for p in learner.shared]
            for body in (state.models.get(SHARED), *bodies):
                if body is not None:
                    model = load_model(body)
                    if model.kind is ModelKind.CONTEXTUAL:
                        for placement in learner.shared:
                            learner.models[placement] = model
                        break
        for view in state.views:
            learner._views[(view.decision_id, view.offer_id)] = view
            learner._deadlines.append((view.deadline, view.decision_id, view.offer_id))
        heapq.heapify(learner._deadlines)
        for until, decision_id, offer_id in state.answered:
            learner._answered[(decision_id, offer_id)] = until
            learner._forget.append((until, decision_id, offer_id))
        heapq.heapify(learner._forget)
        for camp, counts in state.budgets.items():
            budget = learner.budgets.get(camp)
            if budget is not None:
                budget.load({camp: counts})
        learner.now, learner.learned = state.now, state.learned
        for pending in sorted(state.pending):
            learner._wait(pending)
        learner.conversions.load(state.conversions, state.conversion_intents, state.conversion_fit)
        learner.volume = FeedbackVolume.from_state(catalog.spec.profile.feedback, state.trust)
        return learner
