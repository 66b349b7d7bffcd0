"""The site loop: the synthetic bank drives a real in-process Engine like its web site and app
would, and the policies it compares are measured on identical populations.

For each policy: a fresh engine on event time (``sim.engines``: in process, in memory or on
a SQLite store; or a running server over HTTP), the same customers with the same hidden
lives (CustomerSim objects rebuilt from the seed). Day by day, customer by customer, the
day's messages are ingested in time order; at a decision point (a web page view of ``/`` or
``/accounts`` -> ``home_hero`` then ``home_feed``, of a product page -> ``product_sidebar``;
the first screen of an app session -> ``app_home``; at most ``MAX_DECISIONS_PER_SESSION``
pages per session) the engine decides, the policy picks among the eligible set (an offer
already on the page is not shown twice: the engine is told with
``DecisionRequest.exclude``), and the hidden response model turns what is shown into
``Promotion Viewed`` / ``Promotion Clicked`` events and, after a converting click, the
customer's application (``Application Started`` ...), all sent back through ``ingest_batch``
exactly as a site would. The loop talks to its engine through ``sim.engines.SiteEngine``
only: a batch is sent, a page's placements are decided at the page's own time.

Response draws use their own generator per (seed, customer), so the world's own draws are
not shifted by what a policy shows (they still diverge once a conversion ends a need).
Organic conversions are the ``Application Started`` events the world emits by itself.

With ``advisors`` (``sim.callbacks``), topic pages also carry the catalog's advisor
placement (a placement of kind ``advisor``): the card the engine decides is shown like an
offer, a customer with a live need may ask for a call, the catalog's advisors take the calls
through the engine's callback desk on the simulated clock (played once every customer has
lived the day), and a call that reached the customer may convert their need: counted as
``conversions_after_call``, in ``conversions_total``, like a click's. Every policy shows the
engine's card there (a policy's chooser picks offers; an advisor placement has none to pick);
``none`` shows nothing. Without ``advisors`` nothing of this runs and the figures are as
before.

A run happens in one world of the zoo (``worlds.py``; ``default`` unless told): the world
supplies the catalog the bank runs, the response model, the population's habits and the
life events. A policy's true incremental conversions are its conversions minus those of
``none`` (nobody sees anything) on the same world and seed (``baselines.py``).
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from nextbest.callbacks import customer_key
from nextbest.catalog.compiled import Catalog
from nextbest.catalog.model import PlacementKind
from nextbest.decide.model import Candidate, Choice, ChoiceContext, Decision, DecisionRequest
from nextbest.engine import Engine
from nextbest.experiments.assignment import Arm, assign
from nextbest.sim.callbacks import (
    DEFAULT_CALLS,
    AdvisorFloor,
    CallParams,
    CallRequest,
    CompletedCall,
    p_ask,
    p_call_converts,
)
from nextbest.sim.engines import LocalEngine, SiteEngine
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.intervals import incremental_intervals
from nextbest.sim.money import INSIGHT_KPIS, MoneyParams
from nextbest.sim.needs import EndReason, Need
from nextbest.sim.policies import NextbestPolicy, NoOfferPolicy, SitePolicy, make_policy
from nextbest.sim.population import make_population
from nextbest.sim.response import ResponseModel
from nextbest.sim.site import PRODUCT_OF, TOPIC_PAGES
from nextbest.sim.world import DAY, CustomerSim, Message, iso
from nextbest.sim.worlds import DEFAULT_WORLD, World, world_catalog, world_named, world_response

__all__ = [
    "ALL_POLICIES",
    "DEFAULT_POLICIES",
    "MAX_DECISIONS_PER_SESSION",
    "CampaignResult",
    "Metrics",
    "SiteLoop",
    "evaluate",
    "format_table",
    "run_policy",
]

DEFAULT_POLICIES = ("random", "static", "prior", "nextbest", "oracle")
#: every policy, baselines first: what the zoo's benchmark runs
ALL_POLICIES = ("none", "random", "static", "greedy_recent", "prior", "nextbest", "oracle")
MAX_DECISIONS_PER_SESSION = 2
#: a gap between two page views / screens longer than this starts a new session
SESSION_GAP = 30 * 60.0
HOME_PATHS = frozenset({"/", "/accounts"})
#: the home page's placements, decided in this order (the hero banner first)
HOME_PLACEMENTS = ("home_hero", "home_feed")
TOPIC_PATHS = frozenset(path for pages in TOPIC_PAGES.values() for path, _ in pages)
_TOPIC_OF_PRODUCT = {product: topic for topic, product in PRODUCT_OF.items()}
_CONVERSION = "Application Started"


class CampaignResult(msgspec.Struct, kw_only=True):
    """Conversions of the campaign's product by arm (assigned on the stable userId)."""

    campaign: str
    topic: str | None
    control_customers: int = 0
    treatment_customers: int = 0
    control_conversions: int = 0
    treatment_conversions: int = 0
    control_rate: float = 0.0
    treatment_rate: float = 0.0
    #: (treatment rate - control rate) x treatment customers
    incremental: float = 0.0
    #: its 95 % interval, a bootstrap over customers (``sim.intervals``)
    incremental_low: float = 0.0
    incremental_high: float = 0.0


class Metrics(msgspec.Struct, kw_only=True):
    policy: str
    seed: int
    customers: int
    days: int
    decisions: int = 0
    impressions: int = 0
    clicks: int = 0
    #: the sum of the true click probabilities of every impression: the clicks a policy
    #: earns in expectation, free of the click draws' noise (the figure to compare
    #: policies by when clicks are counted in hundreds)
    expected_clicks: float = 0.0
    #: the same for true P(click) x P(conversion | click) x the offer's value
    expected_value: float = 0.0
    #: true P(click) x P(conversion | click) summed over the impressions that can convert
    #: (not a service insight, and an open need for the offer's product, as the draws
    #: below ask): the conversions after a click a policy earns in expectation (counted,
    #: they are tens a run, +-sqrt(n) from the draws alone). ``expected_value`` counts
    #: every impression, those that cannot convert too, as it always has
    expected_conversions: float = 0.0
    ctr: float = 0.0
    conversions_after_click: int = 0
    organic_conversions: int = 0
    conversions_total: int = 0
    incremental_conversions: float = 0.0
    #: its 95 % interval, a bootstrap over customers (``sim.intervals``)
    incremental_low: float = 0.0
    incremental_high: float = 0.0
    impressions_per_offer: dict[str, int] = {}
    clicks_per_offer: dict[str, int] = {}
    conversions_per_offer: dict[str, int] = {}
    campaigns: dict[str, CampaignResult] = {}
    #: cumulative totals at the end of each day (for the chart)
    cumulative_impressions: list[int] = []
    cumulative_clicks: list[int] = []
    cumulative_conversions: list[int] = []
    #: commercial offers alone (service messages are shown first by every policy)
    commercial_impressions: int = 0
    commercial_clicks: int = 0
    commercial_ctr: float = 0.0
    #: expert call-backs (``advisors`` runs only; ``sim.callbacks``): advisor cards shown,
    #: those offering "call me now", calls asked for (of them "now"), refused by the desk
    #: (one in flight, no free slot), completed (the customer answered), not answered, moved
    #: to a slot (nobody free within the SLA), expired; conversions after a completed call
    #: (in ``conversions_total``); the median wait from request to the call's start
    advisor_cards: int = 0
    advisor_cards_now: int = 0
    callbacks_requested: int = 0
    callbacks_requested_now: int = 0
    callbacks_refused: int = 0
    callbacks_completed: int = 0
    callbacks_not_answered: int = 0
    callbacks_rescheduled: int = 0
    callbacks_expired: int = 0
    conversions_after_call: int = 0
    callback_wait_median_seconds: float | None = None
    events_ingested: int = 0
    wall_seconds: float = 0.0


class SiteLoop:
    """One policy's run: its engine, its copy of the population, its counters.

    ``run_day(d)`` plays day ``d`` for every customer; ``finish()`` closes the engine and
    returns the metrics. ``site_engine``: where decisions are taken (default an in-process
    engine on event time, in memory); ``engine``, the in-process one, stays readable until
    ``finish``.
    """

    def __init__(
        self,
        policy: SitePolicy,
        catalog: Catalog,
        seed: int,
        customers: int,
        start: date = DEFAULT_START,
        model: ResponseModel | None = None,
        need_rate: float = 1.0,
        world: World | None = None,
        site_engine: SiteEngine | None = None,
        *,
        advisors: bool = False,
        calls: CallParams = DEFAULT_CALLS,
        money: MoneyParams | None = None,
    ) -> None:
        """``world``: whose customers live here (default: ``default``); ``model`` (default:
        the world's response model) and ``catalog`` should be the world's too
        (``worlds.world_response``, ``worlds.world_catalog``). ``advisors``: topic pages
        carry the catalog's advisor placement and its advisors take calls (``calls``: how
        customers and advisors behave), in process only. ``money``: customers live the money
        life behind the service insights (``sim.money``) and act on a clicked insight that is
        true for them (``insight_actions`` counts it)."""
        world = world or world_named(DEFAULT_WORLD)
        model = model or world_response(world)
        self.policy = policy
        self.catalog = catalog
        self.seed = seed
        self.site_engine: SiteEngine = site_engine or LocalEngine(
            catalog, id_prefix=f"{policy.name}-"
        )
        self.model = model
        self.world = world
        self.sims = [
            CustomerSim(
                c,
                seed,
                start,
                model,
                need_rate * world.need_rate,
                world.life_events,
                money=money,
            )
            for c in make_population(seed, customers, start, world.population)
        ]
        self.respond_rngs = [random.Random(f"respond:{seed}:{i}") for i in range(customers)]
        self.policy_rng = random.Random(f"policy:{seed}:{policy.name}")
        self.shown: list[Counter[str]] = [Counter() for _ in range(customers)]
        self.converted: list[Counter[str]] = [Counter() for _ in range(customers)]  # by topic
        self.metrics = Metrics(policy=policy.name, seed=seed, customers=customers, days=0)
        self.impressions: Counter[str] = Counter()
        self.clicks: Counter[str] = Counter()
        self.offer_conversions: Counter[str] = Counter()
        #: customers who acted on an insight right after clicking it (``sim.money``)
        self.insight_actions: Counter[str] = Counter()
        self._seq = itertools.count(1)
        #: each customer's stable experiment id as the engine folds it (``Profile.
        #: experiment_id``): the key of the earliest event sent, so the arms counted here are
        #: the arms the engine assigned (an anonymous first visit keeps its arm after login)
        self._first_key: dict[str, tuple[float, str]] = {}
        self._user_of = {sim.c.anonymous_id: sim.c.user_id for sim in self.sims}
        #: the placements of a topic page; with ``advisors``, the advisor card's too
        self.topic_placements: tuple[str, ...] = ("product_sidebar",)
        self.floor: AdvisorFloor | None = None
        if advisors:
            self.topic_placements += (_advisor_placement(catalog),)
            t0 = datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()
            self.floor = AdvisorFloor(self.engine.callbacks, catalog, seed, t0, calls)
            self.calls = calls
            self.call_rngs = [random.Random(f"call:{seed}:{i}") for i in range(customers)]

    @property
    def engine(self) -> Engine:
        """The in-process engine (a RuntimeError when the loop drives a server)."""
        if not isinstance(self.site_engine, LocalEngine):
            raise RuntimeError("this loop drives an engine over HTTP: no in-process engine")
        return self.site_engine.engine

    # ------------------------------------------------------------------ ingestion
    def _ingest(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        self.site_engine.send(messages)
        self.metrics.events_ingested += len(messages)
        first = self._first_key
        for m in messages:
            user, anon = m.get("userId"), m.get("anonymousId")
            key = user or f"anon:{anon}"
            customer = user or self._user_of.get(anon or "")
            if customer is None:
                continue
            seen = (_time_of(m), key)
            if customer not in first or seen < first[customer]:
                first[customer] = seen

    def true_odds(
        self,
        sim: CustomerSim,
        d: int,
        offer_id: str,
        position: int,
        before: int,
        needs: dict[str, float],
        age: int,
    ) -> tuple[float, float, bool]:
        """The world's true odds of showing ``offer_id`` at ``position`` on day ``d`` to a
        customer with these ``needs`` and ``age`` who saw it ``before`` times: P(click),
        P(click) x P(conversion | click), and whether a click can convert (not a service
        insight, and an open need for the offer's product, as the draws ask). What the
        expected figures sum; takes no draw."""
        offer = self.catalog.offers[offer_id]
        insight = sim.money is not None and offer_id in INSIGHT_KPIS
        if sim.money is not None and insight:
            p_click = sim.money.p_click(offer_id, d)
        else:
            p_click = self.model.p_click(
                offer_topic=offer.topic,
                offer_kind=offer.kind.value,
                position=position,
                needs=needs,
                impressions_before=before,
                overdrawn=sim.overdrawn,
                age=age,
                offer=offer_id,
            )
        p_converted = p_click * self.model.p_convert_after_click(
            offer_topic=offer.topic, needs=needs
        )
        convertible = not insight and _open_need(sim, offer.topic) is not None
        return p_click, p_converted, convertible

    def arm_key(self, user_id: str) -> str:
        """What the engine hashes this customer's arms on (see ``_first_key``)."""
        found = self._first_key.get(user_id)
        return found[1] if found is not None else user_id

    # ------------------------------------------------------------------ the day
    def run_day(self, d: int) -> None:
        for i in range(len(self.sims)):
            self.day(i, d)
        if self.floor is not None:  # the day's calls, in time order, then their outcomes
            for call in self.floor.run_until(self.sims[0].t0 + (d + 1) * DAY):
                self._call_ended(call)
        self.metrics.cumulative_impressions.append(sum(self.impressions.values()))
        self.metrics.cumulative_clicks.append(sum(self.clicks.values()))
        self.metrics.cumulative_conversions.append(
            self.metrics.organic_conversions
            + self.metrics.conversions_after_click
            + self.metrics.conversions_after_call
        )
        self.metrics.days = d + 1

    def day(self, i: int, d: int) -> None:
        sim = self.sims[i]
        messages = sim.day(d)
        messages.sort(key=lambda m: m[0])
        batch: list[dict[str, Any]] = []
        last_view = -1e18
        in_session = 0
        for ts, msg in messages:
            batch.append(msg)
            kind = msg["type"]
            if kind == "track":
                if msg.get("event") == _CONVERSION:
                    topic = _TOPIC_OF_PRODUCT.get(msg["properties"].get("product", ""))
                    if topic is not None:
                        self.converted[i][topic] += 1
                    self.metrics.organic_conversions += 1
                continue
            if kind not in ("page", "screen"):
                continue
            new_session = ts - last_view > SESSION_GAP
            last_view = ts
            if new_session:
                in_session = 0
            path = msg["properties"].get("path", "")
            placements: tuple[str, ...] = ()
            if kind == "screen":
                placements = ("app_home",) if new_session else ()
            elif path in HOME_PATHS:
                placements = HOME_PLACEMENTS
            elif path in TOPIC_PATHS:
                placements = self.topic_placements
            if not placements or in_session >= MAX_DECISIONS_PER_SESSION:
                continue
            in_session += 1
            self._ingest(batch)
            batch = []
            # the page asks for all its placements at once, then the customer looks at them
            on_page: set[str] = set()
            decisions = [
                self._decide(i, d, ts, msg, placement, on_page)
                for placement in placements
                if placement in self.catalog.placements
            ]
            for decision in decisions:
                self._respond(i, d, ts, msg, decision)
        self._ingest(batch)

    def _decide(
        self, i: int, d: int, ts: float, page: dict[str, Any], placement: str, on_page: set[str]
    ) -> Decision:
        sim = self.sims[i]
        slots = self.catalog.placements[placement].slots
        user, anon = page.get("userId"), page.get("anonymousId")
        shown = self.shown[i]

        def choose(ctx: ChoiceContext, pool: Sequence[Candidate], limit: int) -> Choice:
            index = {c.offer.id: k for k, c in enumerate(pool)}
            offers = [c.offer for c in pool]
            rng = self.policy_rng
            if ctx.counterfactual:  # a control customer's: the same draws, none used up
                rng = random.Random()
                rng.setstate(self.policy_rng.getstate())
            picks = self.policy.choose(offers, sim, d, limit, rng, shown, ctx)
            return Choice(picks=[(index[oid], p) for oid, p in picks])

        # what a site's call carries: the device, and the page the placement is on
        context: dict[str, Any] = {
            "channel": "app" if page.get("type") == "screen" else "web",
            "page": {"path": page.get("properties", {}).get("path", "/")},
        }
        device = page.get("context", {}).get("device")
        if device is not None:
            context["device"] = device
        request = DecisionRequest(
            placement=placement, limit=slots, exclude=frozenset(on_page), context=context
        )
        decision = self.site_engine.decide(
            request,
            user_id=user,
            anonymous_id=anon,
            at=_time_of(page),  # the page's time as its event says it (whole milliseconds)
            # nextbest decides as configured (learning, exploration); the others choose
            choose=None if isinstance(self.policy, NextbestPolicy) else choose,
        )
        self.metrics.decisions += 1
        on_page.update(item.offer_id for item in decision.items)
        return decision

    def _respond(self, i: int, d: int, ts: float, page: dict[str, Any], decision: Decision) -> None:
        """The hidden response model looks at what was shown: views, clicks, conversions.
        Under the ``none`` policy nothing is shown, not even a placement's fallback content."""
        chosen = [item.offer_id for item in decision.items]
        if not chosen or isinstance(self.policy, NoOfferPolicy):
            return
        if decision.items[0].advisor is not None:
            self._respond_card(i, d, ts, page, decision)
            return
        sim, shown, placement = self.sims[i], self.shown[i], decision.placement
        user, anon = page.get("userId"), page.get("anonymousId")
        rng, model = self.respond_rngs[i], self.model
        needs = sim.strengths(d)
        age = sim.c.age_on(sim.start + timedelta(days=d))
        who = {"userId": user, "anonymousId": anon}
        context = page.get("context") or {}
        feedback: list[dict[str, Any]] = []
        conversions: list[Message] = []
        at = ts + 1.0
        for position, offer_id in enumerate(chosen, start=1):
            offer = self.catalog.offers[offer_id]
            props = {
                "promotion_id": offer_id,
                "decision_id": decision.decision_id,
                "position": position,
                "placement": placement,
            }
            feedback.append(self._track("Promotion Viewed", at, who, context, props))
            self.impressions[offer_id] += 1
            before = shown[offer_id]
            shown[offer_id] += 1
            insight = sim.money is not None and offer_id in INSIGHT_KPIS
            # the expected figures: what the draws below realise, without their noise
            p_click, p_converted, convertible = self.true_odds(
                sim, d, offer_id, position, before, needs, age
            )
            self.metrics.expected_clicks += p_click
            self.metrics.expected_value += p_converted * offer.spec.value
            if convertible:
                self.metrics.expected_conversions += p_converted
            if not rng.random() < p_click:  # the one draw ResponseModel.click makes
                continue
            self.clicks[offer_id] += 1
            feedback.append(self._track("Promotion Clicked", at + 5.0, who, context, props))
            if sim.money is not None and insight:
                if sim.money.respond(offer_id, d, rng):
                    self.insight_actions[offer_id] += 1
                    conversions.extend(sim.act_on_insight(offer_id, d, at + 60.0))
                continue
            if not model.convert(rng, offer_topic=offer.topic, needs=needs):
                continue
            topic = offer.topic
            need = _open_need(sim, topic)
            if need is None or topic is None:
                continue
            world_rng = sim.rng  # the loop's own draws must not shift the world's
            sim.rng = rng
            try:
                sim.convert(need, d, sim.t0 + d * 86_400.0, conversions)
            finally:
                sim.rng = world_rng
            self.converted[i][topic] += 1
            self.offer_conversions[offer_id] += 1
            self.metrics.conversions_after_click += 1
        # the customer applies right after the click: restamp the world's application events
        for k, (_, msg) in enumerate(conversions):
            msg["timestamp"] = iso(at + 60.0 + 600.0 * k)
            feedback.append(msg)
        self._ingest(feedback)

    def _respond_card(
        self, i: int, d: int, ts: float, page: dict[str, Any], decision: Decision
    ) -> None:
        """The customer looks at an advisor card, and may ask for a call (``sim.callbacks``):
        viewed, clicked when they ask, and the request queued for the advisors' floor."""
        item = decision.items[0]
        card = item.advisor
        assert card is not None
        assert self.floor is not None
        sim, user, anon = self.sims[i], page.get("userId"), page.get("anonymousId")
        who = {"userId": user, "anonymousId": anon}
        context = page.get("context") or {}
        props = {
            "promotion_id": item.offer_id,
            "decision_id": decision.decision_id,
            "position": 1,
            "placement": decision.placement,
        }
        at = ts + 1.0
        feedback = [self._track("Promotion Viewed", at, who, context, props)]
        self.shown[i][item.offer_id] += 1  # (cards stay out of the offers' counters)
        self.metrics.advisor_cards += 1
        self.metrics.advisor_cards_now += card.available
        strength = sim.strengths(d).get(card.topic, 0.0)
        if self.call_rngs[i].random() < p_ask(self.calls, strength, card.available):
            feedback.append(self._track("Promotion Clicked", at + 5.0, who, context, props))
            self.floor.ask(
                CallRequest(
                    at=at + self.calls.request_seconds,
                    number=i,
                    customer=customer_key(user, anon),
                    topic=card.topic,
                    card=card,
                    decision_id=decision.decision_id,
                )
            )
        self._ingest(feedback)

    def _call_ended(self, call: CompletedCall) -> None:
        """A call that reached the customer converts their need, or not: the customer
        applies a minute after it ended."""
        i, topic = call.number, call.topic
        sim, rng = self.sims[i], self.call_rngs[i]
        d = int((call.ended_at - sim.t0) // DAY)
        needs = sim.strengths(d)
        p_convert = self.model.p_convert_after_click(offer_topic=topic, needs=needs)
        if not rng.random() < p_call_converts(self.calls, p_convert, call.prompt):
            return
        need = next(
            (n for n in sim.needs if n.topic == topic and n.ended is EndReason.ACTIVE),
            None,
        )
        if need is None or topic not in PRODUCT_OF:
            return
        conversions: list[Message] = []
        world_rng = sim.rng  # the loop's own draws must not shift the world's
        sim.rng = rng
        try:
            sim.convert(need, d, sim.t0 + d * DAY, conversions)
        finally:
            sim.rng = world_rng
        self.converted[i][topic] += 1
        self.metrics.conversions_after_call += 1
        for k, (_, msg) in enumerate(conversions):
            msg["timestamp"] = iso(call.ended_at + 60.0 + 600.0 * k)
        self._ingest([msg for _, msg in conversions])

    def _track(
        self,
        event: str,
        at: float,
        who: dict[str, Any],
        context: dict[str, Any],
        props: dict[str, Any],
    ) -> dict[str, Any]:
        return {
            "type": "track",
            "event": event,
            "messageId": f"loop-{self.policy.name}-{next(self._seq)}",
            "timestamp": iso(at),
            **who,
            "context": context,
            "properties": dict(props),
        }

    # ------------------------------------------------------------------ results
    def finish(self, wall: float = 0.0) -> Metrics:
        m = self.metrics
        m.impressions = sum(self.impressions.values())
        m.clicks = sum(self.clicks.values())
        m.ctr = m.clicks / m.impressions if m.impressions else 0.0
        commercial = self.catalog.commercial_offers
        m.commercial_impressions = sum(n for o, n in self.impressions.items() if o in commercial)
        m.commercial_clicks = sum(n for o, n in self.clicks.items() if o in commercial)
        if m.commercial_impressions:
            m.commercial_ctr = m.commercial_clicks / m.commercial_impressions
        m.conversions_total = (
            m.organic_conversions + m.conversions_after_click + m.conversions_after_call
        )
        if self.floor is not None:
            self._floor_metrics(m)
        m.impressions_per_offer = dict(sorted(self.impressions.items()))
        m.clicks_per_offer = dict(sorted(self.clicks.items()))
        m.conversions_per_offer = dict(sorted(self.offer_conversions.items()))
        m.campaigns = self._campaigns()
        m.incremental_conversions = round(sum(c.incremental for c in m.campaigns.values()), 6)
        m.incremental_low, m.incremental_high = self._intervals(m.campaigns)
        m.wall_seconds = round(wall, 3)
        self.site_engine.close()
        return m

    def _floor_metrics(self, m: Metrics) -> None:
        assert self.floor is not None
        counts = self.floor.counts
        m.callbacks_requested = counts.requested
        m.callbacks_requested_now = counts.requested_now
        m.callbacks_refused = counts.refused
        m.callbacks_completed = counts.completed
        m.callbacks_not_answered = counts.not_answered
        m.callbacks_rescheduled = counts.rescheduled
        m.callbacks_expired = counts.expired
        if counts.waits:
            m.callback_wait_median_seconds = round(statistics.median(counts.waits), 3)

    def _intervals(self, campaigns: dict[str, CampaignResult]) -> tuple[float, float]:
        """Each campaign's and the total's incremental 95 % interval (the total's returned)."""
        data: dict[str, tuple[list[bool], list[int]]] = {}
        for camp in self.catalog.spec.campaigns:
            topic = campaigns[camp.id].topic
            data[camp.id] = (
                [
                    assign(self.arm_key(sim.c.user_id), camp.salt or camp.id, camp.control_share)
                    is not Arm.CONTROL
                    for sim in self.sims
                ],
                [converted[topic] if topic is not None else 0 for converted in self.converted],
            )
        per_campaign, total = incremental_intervals(data, seed=self.seed)
        for camp_id, (low, high) in per_campaign.items():
            campaigns[camp_id].incremental_low = low
            campaigns[camp_id].incremental_high = high
        return total

    def _campaigns(self) -> dict[str, CampaignResult]:
        out: dict[str, CampaignResult] = {}
        for camp in self.catalog.spec.campaigns:
            topics = [self.catalog.offers[o].topic for o in camp.offers if o in self.catalog.offers]
            topic = next((t for t in topics if t is not None), None)
            r = CampaignResult(campaign=camp.id, topic=topic)
            for sim, converted in zip(self.sims, self.converted, strict=True):
                arm = assign(self.arm_key(sim.c.user_id), camp.salt or camp.id, camp.control_share)
                n = converted[topic] if topic is not None else 0
                if arm is Arm.CONTROL:
                    r.control_customers += 1
                    r.control_conversions += n
                else:
                    r.treatment_customers += 1
                    r.treatment_conversions += n
            if r.control_customers:
                r.control_rate = r.control_conversions / r.control_customers
            if r.treatment_customers:
                r.treatment_rate = r.treatment_conversions / r.treatment_customers
            if r.control_customers and r.treatment_customers:
                r.incremental = round(
                    (r.treatment_rate - r.control_rate) * r.treatment_customers, 6
                )
            out[camp.id] = r
        return out


def _open_need(sim: CustomerSim, topic: str | None) -> Need | None:
    """The customer's open need for ``topic``'s product, which a click on the topic's offer
    can convert (None: no product of that topic, or no open need for it)."""
    if topic not in PRODUCT_OF:
        return None
    return next((n for n in sim.needs if n.topic == topic and n.ended is EndReason.ACTIVE), None)


def _advisor_placement(catalog: Catalog) -> str:
    """The catalog's advisor placement on the web (the first by id)."""
    found = sorted(
        p.id
        for p in catalog.placements.values()
        if p.kind is PlacementKind.ADVISOR and p.channel == "web"
    )
    if not found or not catalog.advisors:
        raise ValueError(
            f"{catalog.source}: advisors in the simulator need advisors and a web placement "
            "of kind advisor in the catalog (examples/bank has both)"
        )
    return found[0]


def _time_of(message: dict[str, Any]) -> float:
    """A message's time as its ``timestamp`` says, as the engine parses it."""
    return datetime.fromisoformat(message["timestamp"]).timestamp()


def run_policy(
    policy: str | SitePolicy,
    seed: int,
    customers: int,
    days: int,
    *,
    catalog: Catalog,
    start: date = DEFAULT_START,
    model: ResponseModel | None = None,
    progress: Callable[[str, int], None] | None = None,
    need_rate: float = 1.0,
    world: World | None = None,
    site_engine: SiteEngine | None = None,
    advisors: bool = False,
) -> Metrics:
    """One policy over ``days`` days of the population ``seed``; ``progress(policy, day)``;
    ``site_engine``: where it decides (default a fresh in-process engine, in memory);
    ``advisors``: the advisor card on topic pages, and calls (``SiteLoop``)."""
    chosen = make_policy(policy) if isinstance(policy, str) else policy
    began = time.perf_counter()
    run = SiteLoop(
        chosen,
        catalog,
        seed,
        customers,
        start,
        model,
        need_rate,
        world,
        site_engine,
        advisors=advisors,
    )
    for d in range(days):
        run.run_day(d)
        if progress is not None:
            progress(chosen.name, d + 1)
    return run.finish(time.perf_counter() - began)


def evaluate(
    seed: int,
    customers: int,
    days: int,
    policies: Iterable[str] = DEFAULT_POLICIES,
    catalog_path: str | Path = "examples/bank",
    *,
    start: date = DEFAULT_START,
    progress: Callable[[str, int], None] | None = None,
    need_rate: float = 1.0,
    world: str = DEFAULT_WORLD,
    engine_for: Callable[[str, Catalog], SiteEngine | None] | None = None,
    advisors: bool = False,
) -> dict[str, Metrics]:
    """Run the site loop for each policy on identical populations of ``world``; metrics by
    policy name. ``engine_for(policy, catalog)``: where that policy decides (None: a fresh
    in-process engine in memory), e.g. a server over HTTP, or a SQLite store to keep."""
    names = list(policies)
    for name in names:
        make_policy(name)  # unknown names fail before any work
    lives = world_named(world)
    catalog = world_catalog(lives, catalog_path, start)
    model = world_response(lives)
    return {
        name: run_policy(
            name,
            seed,
            customers,
            days,
            catalog=catalog,
            start=start,
            model=model,
            progress=progress,
            need_rate=need_rate,
            world=lives,
            site_engine=engine_for(name, catalog) if engine_for is not None else None,
            advisors=advisors,
        )
        for name in names
    }


def format_table(results: dict[str, Metrics], columns: Sequence[str] | None = None) -> str:
    """A plain-text table, one row per policy."""
    cols = list(
        columns
        or (
            "impressions",
            "clicks",
            "ctr",
            "commercial_clicks",
            "commercial_ctr",
            "conversions_after_click",
            "organic_conversions",
            "conversions_total",
            "incremental_conversions",
            "decisions",
            "wall_seconds",
        )
    )
    header = ["policy", *(f"{c} [95% CI]" if c == "incremental_conversions" else c for c in cols)]
    rows = [header]
    for name, m in results.items():
        row = [name]
        for c in cols:
            v = getattr(m, c)
            row.append(
                f"{v:.4f}" if c.endswith("ctr") else f"{v:.1f}" if isinstance(v, float) else str(v)
            )
            if c == "incremental_conversions":  # and its 95 % interval
                row[-1] += f" [{m.incremental_low:.1f}, {m.incremental_high:.1f}]"
        rows.append(row)
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if k == 0 else cell.rjust(w)
            for k, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)
