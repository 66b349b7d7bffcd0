"""Results per audience (issue #18, item 6): each exposed customer's audiences (the catalog's
segments and the macro-segments: lifecycle, engagement, product holding, intent) frozen at
their first exposure, counted per campaign x arm x audience at ingest, and read as
confirmatory for the audiences the campaign registered, exploratory (p-values adjusted,
Benjamini-Hochberg) for the others."""

from __future__ import annotations

import random

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.engine import Engine
from nextbest.events import parse_batch
from nextbest.experiments.counters import CONTROL, DAY, TREATMENT, CampaignCounters, Sums
from nextbest.experiments.exposure import analytics_view, audience_family, macro_audiences
from nextbest.experiments.report import MIN_EXPOSED, campaign_result
from nextbest.experiments.statistics import (
    Adjustment,
    Analysis,
    ArmCounts,
    adjusted_p_values,
    frequentist,
)
from nextbest.profile import Profile, fold
from nextbest.store import memory_stores
from tests.support import T0, batch, counter_ids, feedback, identify, page, track

CAMPAIGN = "mortgage_q4"
MORTGAGE = "https://bank.example/mortgages/rates"


def folded(catalog: Catalog, *messages: dict[str, object]) -> Profile:
    profile = Profile(customer_id="u1", user_id="u1")
    for event in parse_batch(batch(*messages), T0 + 365 * 86_400):
        fold(profile, event, catalog.matcher, catalog.fold_config)
    return profile


def test_macro_audiences_read_life_stage_engagement_holdings_and_intent(catalog: Catalog) -> None:
    p = folded(
        catalog,
        identify({"age": 30, "products": ["current_account"]}, user="u1", at=T0 - 5 * DAY),
        track("Calculator Used", {"topic": "mortgage"}, user="u1", at=T0 - 2 * DAY),
        track("Application Started", {"product": "car_loan"}, user="u1", at=T0 - DAY),
        *[page(MORTGAGE, user="u1", at=T0 - 60 * k) for k in range(6)],
    )
    got = macro_audiences(analytics_view(p, catalog), catalog, T0)
    assert got[:2] == ["lifecycle:starter", "engagement:medium"]
    holdings = [a for a in got if a.startswith("holding:")]
    intents = [a for a in got if a.startswith("intent:")]
    assert intents == ["intent:car_loan", "intent:mortgage"]
    assert holdings == (
        ["holding:none"]
        if catalog.matcher.topic_of_product("current_account") is None
        else [f"holding:{catalog.matcher.topic_of_product('current_account')}"]
    )
    assert {audience_family(a) for a in got} <= {"lifecycle", "engagement", "holding", "intent"}
    assert audience_family("mortgage_intent") == "segment"
    # a customer who holds the product is not "intending" to get it
    owner = folded(
        catalog,
        identify({"age": 70}, user="u1", at=T0 - 5 * DAY),
        track("Application Started", {"product": "mortgage"}, user="u1", at=T0 - 3 * DAY),
        track("Product Opened", {"product": "mortgage"}, user="u1", at=T0 - DAY),
    )
    got = macro_audiences(analytics_view(owner, catalog), catalog, T0)
    assert got[0] == "lifecycle:retired"
    assert "holding:mortgage" in got
    assert "intent:mortgage" not in got


def test_audience_counts_equal_a_recount_from_the_frozen_audiences(catalog: Catalog) -> None:
    """Per audience and arm the counters equal the customers in it (their audiences as frozen
    at first exposure), and an audience's membership never moves afterwards."""
    clock = FixedClock(T0)
    engine = Engine(catalog, memory_stores(), clock, new_id=counter_ids())
    rng = random.Random(5)
    for n in range(200):
        user = f"a{n}"
        msgs = [identify({"age": rng.choice([22, 30, 40, 55, 70])}, user=user, at=T0 - 9 * DAY)]
        msgs += [page(MORTGAGE, user=user, at=T0 - 60 * k) for k in range(rng.choice([5, 6, 9]))]
        engine.ingest_batch(batch(*msgs))
        d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
        later = []
        if "mortgage_advice" in [i.offer_id for i in d.items]:
            later.append(feedback(d, "Promotion Viewed", "mortgage_advice", at=T0 + 5))
        if rng.random() < 0.3:
            later.append(
                track("Application Submitted", {"product": "mortgage"}, user=user, at=T0 + DAY)
            )
        later.append(identify({"age": 80}, user=user, at=T0 + 2 * DAY))  # later: changes nothing
        clock.set(T0 + 3 * DAY)
        engine.ingest_batch(batch(*later))
        clock.set(T0)
    state = engine.experiment_counters(customers=True)[CAMPAIGN]
    names = state.audience_names
    assert "mortgage_intent" in names
    assert "lifecycle:retired" in names
    assert "lifecycle:pre_retirement" not in names  # nobody exposed at that age
    for audience in names:
        for arm in (CONTROL, TREATMENT):
            members = [
                e
                for e in state.customers.values()
                if e.arm == arm and audience in [names[i] for i in e.audiences]
            ]
            got = state.audience_totals(audience, arm, 0)
            assert got.n == len(members), (audience, arm)
            assert got.sum == sum(e.values[0] for e in members), (audience, arm)
    assert engine.replay().experiments_identical
    engine.release()


def _arm(n: int, rate: float, rng: random.Random) -> Sums:
    k = sum(rng.random() < rate for _ in range(n))
    return Sums(n=n, sum=float(k), sum_squares=float(k))


def test_registered_audiences_are_confirmatory_the_others_adjusted(catalog: Catalog) -> None:
    rng = random.Random(2)
    day = int(T0 // DAY)
    by_audience = {
        "mortgage_intent": {CONTROL: [_arm(1_000, 0.10, rng)], TREATMENT: [_arm(9_000, 0.13, rng)]},
        "adult": {CONTROL: [_arm(1_000, 0.10, rng)], TREATMENT: [_arm(9_000, 0.125, rng)]},
        "lifecycle:family": {CONTROL: [_arm(500, 0.10, rng)], TREATMENT: [_arm(4_500, 0.10, rng)]},
        "intent:mortgage": {CONTROL: [_arm(300, 0.10, rng)], TREATMENT: [_arm(2_700, 0.16, rng)]},
        "engagement:low": {CONTROL: [_arm(40, 0.10, rng)], TREATMENT: [_arm(360, 0.10, rng)]},
    }
    total = {arm: Sums() for arm in (CONTROL, TREATMENT)}
    for arms in by_audience.values():
        for arm, (sums,) in arms.items():
            total[arm].add(sums)
    state = CampaignCounters(
        days={arm: [{day: s}, {day: Sums(n=s.n)}] for arm, s in total.items()},
        audience_names=list(by_audience),
        by_audience=by_audience,
    )
    spec = catalog.campaigns[CAMPAIGN]
    assert spec.audiences == ["mortgage_intent"]
    result = campaign_result(
        spec, catalog.kpis[CAMPAIGN], state, segment_names=catalog.segment_names
    )
    got = {a.audience: a for a in result.audiences}
    assert result.audiences[0].audience == "mortgage_intent"  # registered first
    assert result.audience_adjustment == Adjustment.BENJAMINI_HOCHBERG.value
    analysis = Analysis(sequential=True)
    raw = {
        a: frequentist(
            ArmCounts(n=c[0].n, sum=c[0].sum, sum_squares=c[0].sum_squares),
            ArmCounts(n=t[0].n, sum=t[0].sum, sum_squares=t[0].sum_squares),
            analysis,
        ).p_value
        for a, arms in by_audience.items()
        for c, t in [(arms[CONTROL], arms[TREATMENT])]
    }
    registered = got["mortgage_intent"]
    assert registered.registered
    assert not registered.exploratory
    assert registered.name == "Mortgage intent"
    assert registered.arms[1].p_value == pytest.approx(raw["mortgage_intent"], abs=1e-12)
    assert registered.arms[1].adjusted_p_value == registered.arms[1].p_value
    exploring = [a for a in by_audience if a != "mortgage_intent"]
    adjusted = dict(zip(exploring, adjusted_p_values([raw[a] for a in exploring]), strict=True))
    for audience in exploring:
        row = got[audience]
        assert row.exploratory
        assert row.arms[1].adjusted_p_value == pytest.approx(adjusted[audience], abs=1e-12)
        enough = min(a.exposed for a in row.arms) >= MIN_EXPOSED
        assert row.arms[1].significant == (enough and adjusted[audience] < 0.05)
    assert got["lifecycle:family"].name == "Lifecycle: family"
    assert got["intent:mortgage"].family == "intent"
    # too few customers in an arm: never significant, whatever the p-value
    assert not got["engagement:low"].arms[1].significant


def test_a_registered_audience_nobody_was_exposed_in_is_listed(catalog: Catalog) -> None:
    """The marketer registered ``mortgage_intent`` before the campaign started: while nobody
    in it was exposed the results list it with no exposures, rather than leaving it out."""
    rng = random.Random(3)
    day = int(T0 // DAY)
    by_audience = {
        "adult": {CONTROL: [_arm(1_000, 0.10, rng)], TREATMENT: [_arm(9_000, 0.12, rng)]},
    }
    total = {arm: s for arm, (s,) in by_audience["adult"].items()}
    state = CampaignCounters(
        days={arm: [{day: s}, {day: Sums(n=s.n)}] for arm, s in total.items()},
        audience_names=list(by_audience),
        by_audience=by_audience,
    )
    spec = catalog.campaigns[CAMPAIGN]
    result = campaign_result(
        spec, catalog.kpis[CAMPAIGN], state, segment_names=catalog.segment_names
    )
    first, *others = result.audiences
    assert first.audience == "mortgage_intent"
    assert first.registered
    assert first.exposed == 0
    assert [(a.arm, a.exposed, a.lift, a.significant) for a in first.arms] == [
        (CONTROL, 0, None, False),
        (TREATMENT, 0, None, False),
    ]
    assert first.arms[1].status == "no_units"
    assert [a.audience for a in others] == ["adult"]
