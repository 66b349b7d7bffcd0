"""The seed scenarios emerge from the simulated population, not from hand-made profiles.

One seeded site loop with the ``nextbest`` policy is played once for the module. Its
population is enriched: of ``POPULATION`` generated customers, the loop plays the first
``SAMPLE`` (an unselected sample) plus every customer whose hidden life has a mortgage or a
car-loan need under way on day 0 (known to the world, never to the engine). Customers are
independent in the loop (one engine profile, one response generator each), so playing a
subset gives those customers exactly the days they would have in a run of everyone; it only
saves the time of the customers no scenario is about.

Everything asserted is observed: the engine's decision requests and decisions (a spy on
``Engine.decide``) and the events the site sent, ``Promotion Viewed`` included (the
engine's own event log). Every scenario first checks it saw enough cases.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.catalog.model import OfferKind
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.decide.reasons import Suppression
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.profile.windows import DAY
from nextbest.sim.loop import HOME_PATHS, HOME_PLACEMENTS, SiteLoop
from nextbest.sim.needs import EndReason
from nextbest.sim.policies import make_policy
from nextbest.sim.site import TOPIC_PAGES

SEED, POPULATION, SAMPLE, DAYS = 5, 8000, 300, 45
#: "at least 5 mortgage page views in 14 days" (examples/bank/segments.yaml, mortgage_intent)
INTENT_VIEWS, INTENT_DAYS = 5, 14
#: enough cases for a scenario to mean something
MIN_CUSTOMERS = 5
MORTGAGE_PATHS = frozenset(path for path, _ in TOPIC_PAGES["mortgage"])
CAR_PATHS = frozenset(path for path, _ in TOPIC_PAGES["car_loan"])


@dataclass(frozen=True)
class Call:
    """One ``Engine.decide`` call of the loop, with what was true at that moment."""

    request: DecisionRequest
    decision: Decision
    who: int  # the simulated customer's index
    #: the page view's time, up to which the engine had ingested the customer's events. The
    #: decision's own ``timestamp`` can be later: the loop decides ``home_feed`` after sending
    #: the hero's feedback, with its clock still at that feedback's time (a minute or more on)
    page_time: float
    sim_overdrawn: bool  # the world's truth
    profile_overdrawn: bool  # what the engine's profile knew


@dataclass
class Run:
    loop: SiteLoop
    catalog: Catalog
    played: list[int]
    calls: list[Call] = field(default_factory=list)
    #: decision id -> the offers shown, by position (the site's ``Promotion Viewed`` events)
    chosen: dict[str, list[str]] = field(default_factory=dict)
    #: each played customer's events from the engine's log, in time order
    events: dict[int, list[Event]] = field(default_factory=dict)

    def shown(self, call: Call) -> list[str]:
        return self.chosen.get(call.decision.decision_id, [])

    def kind(self, offer_id: str) -> OfferKind:
        return self.catalog.offers[offer_id].kind


def _spy_on_decide(
    engine: Engine, loop: SiteLoop, who_of: dict[str, int], calls: list[Call]
) -> Callable[..., Decision]:
    """``engine.decide``, recording each call with what was true at that moment."""
    real = engine.decide

    def decide(request: DecisionRequest, **kwargs: Any) -> Decision:
        decision = real(request, **kwargs)
        who = who_of[kwargs.get("user_id") or kwargs.get("anonymous_id") or ""]
        profile = engine.profile(decision.customer_id)
        page_time = decision.timestamp
        if request.placement == HOME_PLACEMENTS[1] and calls:  # the hero's page
            page_time = calls[-1].page_time
        calls.append(
            Call(
                request=request,
                decision=decision,
                who=who,
                page_time=page_time,
                sim_overdrawn=loop.sims[who].overdrawn,
                profile_overdrawn=profile is not None and profile.overdrawn,
            )
        )
        return decision

    return decide


@pytest.fixture(scope="module")
def run(catalog: Catalog) -> Iterator[Run]:
    loop = SiteLoop(make_policy("nextbest"), catalog, SEED, POPULATION)
    played = [
        i
        for i, sim in enumerate(loop.sims)
        if i < SAMPLE or any(n.topic in ("mortgage", "car_loan") for n in sim.needs)
    ]
    who_of: dict[str, int] = {}
    for i in played:
        who_of[loop.sims[i].c.user_id] = i
        who_of[loop.sims[i].c.anonymous_id] = i
    calls: list[Call] = []
    loop.engine.decide = _spy_on_decide(loop.engine, loop, who_of, calls)  # type: ignore[method-assign]
    for d in range(DAYS):
        for i in played:
            loop.day(i, d)
    events: dict[int, list[Event]] = defaultdict(list)
    viewed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for stored in loop.engine.event_log.scan(0):
        e = stored.event
        who = who_of.get(e.user_id or "") if e.user_id else who_of.get(e.anonymous_id or "")
        if who is not None:
            events[who].append(e)
        if e.name == "Promotion Viewed":
            props = e.properties
            viewed[str(props["decision_id"])].append(
                (int(props["position"]), str(props["promotion_id"]))
            )
    for evs in events.values():
        evs.sort(key=lambda e: e.timestamp)
    chosen = {d: [offer for _, offer in sorted(shown)] for d, shown in viewed.items()}
    yield Run(loop, catalog, played, calls, chosen, dict(events))
    loop.finish()


def _path(e: Event) -> str:
    return str(e.properties.get("path", ""))


def _views(run: Run, who: int, paths: frozenset[str]) -> list[float]:
    """When the customer viewed one of ``paths`` (web pages and app screens), sorted."""
    return [
        e.timestamp
        for e in run.events.get(who, [])
        if e.type in (EventType.PAGE, EventType.SCREEN) and _path(e) in paths
    ]


# ---------------------------------------------------------------------- mortgage
#: what keeps an eligible offer off the page whatever its rank: the contact policy, the
#: customer's consent, products and campaign arm, and the page itself
HELD_BACK = frozenset(
    {
        Suppression.CAPPED,
        Suppression.FATIGUE,
        Suppression.RECENTLY_CLICKED,
        Suppression.DISMISSED,
        Suppression.OWNED,
        Suppression.NO_CONSENT,
        Suppression.HOLDOUT,
        Suppression.CONTROL,
        Suppression.ON_PAGE,
    }
)


def test_mortgage_intent_gets_the_mortgage_offer_first(run: Run) -> None:
    """Customers who viewed mortgage pages at least 5 times in 14 days get the mortgage offer
    (``mortgage_advice``, the targeted one, not the always-on ``mortgage_rates``) as the first
    commercial item far more often than others.

    Groups come from the pages the site served (the world's own map of mortgage pages, web
    and app) up to the page view being decided, not from the engine's segment. Counted: the
    decisions that put a commercial offer on the page, for customers who allow
    personalization (without it the engine may not use their browsing at all). Two rates:
    over all those decisions, and over those where nothing but rank could keep
    ``mortgage_advice`` off the page (not capped, not owned, not the control arm, ...). The
    engine's own ``mortgage_intent`` segment must have matched the intent group's decisions.
    """
    views = {who: _views(run, who, MORTGAGE_PATHS) for who in run.played}
    # [decisions, mortgage_advice first] overall, then where only rank could keep it off
    tally: dict[bool, list[int]] = {True: [0, 0, 0, 0], False: [0, 0, 0, 0]}
    customers: dict[bool, set[int]] = {True: set(), False: set()}
    in_segment = 0
    for call in run.calls:
        if not run.loop.sims[call.who].c.consent_personalization:
            continue
        commercial = [o for o in run.shown(call) if run.kind(o) is OfferKind.COMMERCIAL]
        if not commercial:
            continue
        hits = views[call.who]
        since = call.decision.timestamp - INTENT_DAYS * DAY
        recent = bisect.bisect_right(hits, call.page_time) - bisect.bisect_right(hits, since)
        intent = recent >= INTENT_VIEWS
        in_segment += intent and "mortgage_intent" in call.decision.segments
        first = commercial[0] == "mortgage_advice"
        held = {e.why for e in call.decision.excluded if e.offer_id == "mortgage_advice"}
        counts = tally[intent]
        counts[0] += 1
        counts[1] += first
        if not held & HELD_BACK:
            counts[2] += 1
            counts[3] += first
        customers[intent].add(call.who)
    summary = {
        group: f"{len(customers[intent])} customers, first {c[1]}/{c[0]}, "
        f"first when only rank decides {c[3]}/{c[2]}"
        for group, intent, c in (("intent", True, tally[True]), ("others", False, tally[False]))
    }
    assert len(customers[True]) >= MIN_CUSTOMERS, summary
    assert len(customers[False]) >= MIN_CUSTOMERS, summary
    (n_in, first_in, open_in, open_first_in) = tally[True]
    (n_out, first_out, open_out, open_first_out) = tally[False]
    assert in_segment == n_in, (summary, in_segment)
    assert first_in / n_in >= 10 * first_out / n_out, summary
    assert open_in >= 2 * MIN_CUSTOMERS, summary
    assert open_first_in / open_in >= 0.8, summary
    assert open_first_out / open_out <= 0.05, summary


# ---------------------------------------------------------------------- car loan
def _stop(hits: list[tuple[float, float]], half_life: float, fade_below: float) -> float:
    """When ``car_loan_offer`` must stop for good after the last of these (time, weight) car
    hits: the decayed score falls under ``fade_below``, or ``count_30d >= 2`` lapses 30
    days after the last hit but one, whichever comes first."""
    if len(hits) < 2:
        return -math.inf  # never in car_intent: any impression is too late
    last = hits[-1][0]
    score = sum(w * 2.0 ** (-(last - t) / half_life) for t, w in hits)
    faded = last + half_life * math.log2(score / fade_below) if score > fade_below else last
    lapsed = hits[-2][0] + 30 * DAY
    return min(faded, lapsed)


def test_car_loan_offer_stops_within_the_fade_after_the_need_ends(run: Run) -> None:
    """After a simulated car need ends, the targeted ``car_loan_offer`` stops being shown to
    that customer within the configured fade.

    The world: once a car need has ended, the customer views no more car pages (from the
    day after; the end day's pages were drawn before a converting click could end it). The
    catalog: ``car_loan_offer`` needs ``segments.car_intent`` (``interest.car_loan.count_30d
    >= 2``), and ``contact_policy.fade_below`` drops a commercial offer once its topic's
    score, halving every ``half_life_days`` with each hit weighted as the ``profile`` section
    says, has decayed under it. From the customer's own car hits (pages, calculators, the
    application and product events a conversion brings) and those numbers alone, the moment
    the offer must stop for good is recomputed here; no impression may come later. Counted:
    customers shown the offer while their need lasted (there was something to stop); at
    least ``MIN_CUSTOMERS`` of them must reach that moment within the run (the stop is seen,
    not only promised).
    """
    catalog = run.catalog
    half_life = catalog.topics["car_loan"].half_life
    fade_below = catalog.policy.fade_below
    cfg = catalog.fold_config
    lags: list[float] = []  # days from the need's end to the stop, per customer
    seen_stop = 0
    late: list[str] = []
    for who in run.played:
        sim = run.loop.sims[who]
        car = [n for n in sim.needs if n.topic == "car_loan"]
        if not car or any(n.ended is EndReason.ACTIVE for n in car):
            continue
        end_day = max(n.end_day for n in car if n.end_day is not None)
        end = sim.t0 + (math.floor(end_day) + 1) * DAY
        assert not [t for t in _views(run, who, CAR_PATHS) if t >= end], who
        events = run.events.get(who, [])
        hits = [
            (
                e.timestamp,
                cfg.event_weights.get(e.name or "", cfg.track_weight)
                if e.type is EventType.TRACK
                else cfg.page_weight,
            )
            for e in events
            if "car_loan" in catalog.matcher.match(e)
        ]
        shown = [
            e.timestamp
            for e in events
            if e.name == "Promotion Viewed" and e.properties["promotion_id"] == "car_loan_offer"
        ]
        if not any(t < end for t in shown):
            continue
        stop = _stop(hits, half_life, fade_below)
        lags.append(round((stop - end) / DAY, 1))
        seen_stop += stop < sim.t0 + DAYS * DAY
        late.extend(
            f"customer {who}: {(t - stop) / DAY:.2f} days after the stop" for t in shown if t > stop
        )
    summary = f"{len(lags)} customers, {seen_stop} stops seen, days after the need: {sorted(lags)}"
    assert seen_stop >= MIN_CUSTOMERS, summary
    assert not late, (summary, late)


# ---------------------------------------------------------------------- overdraft
def test_overdrawn_customers_see_the_warning_before_commercial_offers(run: Run) -> None:
    """While a customer is overdrawn (in the world, and as far as the engine knows), every
    placement that can hold the overdraft warning shows it, with no commercial offer before
    it; unless the page already shows it in another placement (the hero above the feed).
    ``product_sidebar`` holds commercial offers only, so it is not one of them."""
    can_warn = {
        pid
        for pid, offers in run.catalog.by_placement.items()
        if "overdraft_warning" in {o.id for o in offers}
    }
    assert "product_sidebar" not in can_warn
    cases, on_page, customers = 0, 0, set()
    wrong: list[tuple[str, list[str]]] = []
    for call in run.calls:
        if call.request.placement not in can_warn:
            continue
        if not (call.sim_overdrawn and call.profile_overdrawn):
            continue
        if "overdraft_warning" in call.request.exclude:
            on_page += 1
            continue
        cases += 1
        customers.add(call.who)
        shown = run.shown(call)
        if "overdraft_warning" not in shown:
            wrong.append((call.request.placement, shown))
            continue
        before = shown[: shown.index("overdraft_warning")]
        if any(run.kind(o) is OfferKind.COMMERCIAL for o in before):
            wrong.append((call.request.placement, shown))
    summary = f"{cases} decisions ({on_page} more already on the page), {len(customers)} customers"
    assert len(customers) >= MIN_CUSTOMERS, summary
    assert not wrong, (summary, wrong[:5])


# ---------------------------------------------------------------------- the home page
def test_home_page_decides_hero_then_feed_without_repeats(run: Run) -> None:
    """A home page view decides ``home_hero`` then ``home_feed``; the feed's request excludes
    what the hero shows, so the same offer never appears twice on one page."""
    home_views: dict[int, list[float]] = {
        who: [
            e.timestamp
            for e in run.events.get(who, [])
            if e.type is EventType.PAGE and _path(e) in HOME_PATHS
        ]
        for who in run.played
    }
    pages = kept_off = 0
    calls = run.calls
    for k, call in enumerate(calls):
        placement = call.request.placement
        if placement == HOME_PLACEMENTS[1]:
            assert k > 0
            assert calls[k - 1].request.placement == HOME_PLACEMENTS[0]
        if placement != HOME_PLACEMENTS[0]:
            continue
        hero = call
        assert k + 1 < len(calls)
        feed = calls[k + 1]
        assert feed.request.placement == HOME_PLACEMENTS[1]
        assert feed.who == hero.who
        assert feed.decision.timestamp >= hero.decision.timestamp
        # decided on a home page view of this customer (the log keeps milliseconds)
        views = home_views[hero.who]
        j = bisect.bisect_right(views, hero.decision.timestamp + 0.001)
        assert j > 0
        assert hero.decision.timestamp - views[j - 1] < 0.002
        pages += 1
        hero_shown = set(run.shown(hero))
        assert hero.request.exclude == frozenset()
        assert feed.request.exclude == frozenset(hero_shown)
        assert not hero_shown & set(run.shown(feed))
        on_page = {e.offer_id for e in feed.decision.excluded if e.why is Suppression.ON_PAGE}
        assert on_page <= hero_shown
        kept_off += bool(on_page)
    assert pages >= 100, pages
    # the exclusion mattered: the hero's offer was a feed candidate on many pages
    assert kept_off >= 50, (pages, kept_off)
