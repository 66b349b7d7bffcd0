"""Honest control exposure (issue #18, item 3): on a learning placement a control customer is
exposed exactly when the policy in use, its learned order and its exploration draw included,
would have shown the campaign's offer in a visible slot; the slot is then filled as for any
other customer, and the exposure is what the counters count."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import Decision, DecisionRequest
from nextbest.decide.model import ChoiceContext
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decide.pipeline import greedy
from nextbest.decide.reasons import Suppression
from nextbest.engine import Engine
from nextbest.experiments import Arm, assign
from nextbest.experiments.counters import CONTROL, ExperimentCounters
from nextbest.learn.explore import seed_of
from nextbest.learn.features import customer_features
from nextbest.learn.learner import Learner
from nextbest.learn.model import OfferRef
from nextbest.profile.model import Profile
from nextbest.store import memory_stores
from nextbest.store.catalog_files import load_catalog
from tests.support import (
    EXAMPLE_CATALOG,
    EXPLORE_BANK,
    T0,
    batch,
    counter_ids,
    edited_catalog,
    identify,
    page,
)

HERO = DecisionRequest(placement="home_hero")
#: the customer is in these campaigns' control arms, in every other campaign's treatment
HELD = {"mortgage_q4", "car_loan_autumn"}
HELD_OFFERS = {"mortgage_advice", "car_loan_offer"}


def customer_in(catalog: Catalog, control: set[str], prefix: str) -> str:
    for n in itertools.count():
        uid = f"{prefix}-{n}"
        arms = {c.id: assign(uid, c.salt or c.id, c.control_share) for c in catalog.spec.campaigns}
        if all((arm is Arm.CONTROL) == (c in control) for c, arm in arms.items()):
            return uid
    raise AssertionError("unreachable")


def researcher(catalog: Catalog) -> tuple[Profile, str]:
    """A customer reading mortgage and car-loan pages, in the control arm of the mortgage
    and car-loan campaigns; and the id of a twin in every campaign's treatment arm."""
    user = customer_in(catalog, HELD, "held")
    twin = customer_in(catalog, set(), "twin")
    engine = Engine(catalog, memory_stores(), FixedClock(T0), new_id=counter_ids())
    msgs = [identify({"age": 40}, user=user, at=T0 - 3600)]
    msgs += [
        page("https://bank.example/mortgages/rates", user=user, at=T0 - 60 * k) for k in range(6)
    ]
    msgs += [
        page("https://bank.example/loans/car", user=user, at=T0 - 30 - 60 * k) for k in range(3)
    ]
    engine.ingest_batch(batch(*msgs))
    profile = engine.profile(user)
    assert profile is not None
    engine.release()
    return profile, twin


def teach(learner: Learner, catalog: Catalog, profile: Profile, segments: list[str]) -> None:
    """The learned order turns the prior's round: nobody clicks the mortgage advice, everyone
    the car loan."""
    model = learner.models["home_hero"]
    x = customer_features(profile, catalog.topics, T0, {}, segments)
    for offer, reward in (("mortgage_advice", 0.0), ("car_loan_offer", 1.0)):
        o = catalog.offers[offer]
        assert o.campaign is not None
        ref = OfferRef(
            offer_id=offer,
            placement="home_hero",
            topic=o.topic,
            kind=o.kind,
            campaign_id=o.campaign.id,
        )
        for _ in range(200):
            model.learn_one(x, ref, 1, reward)


def copy(learner: Learner, catalog: Catalog) -> Learner:
    return Learner.from_state(catalog, learner.to_state())


def shown(d: Decision) -> list[str]:
    return [i.offer_id for i in d.items]


def test_a_learned_order_decides_the_control_exposure_not_the_prior() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    profile, twin_id = researcher(catalog)
    twin = msgspec.structs.replace(profile, experiment_id=twin_id)
    # the prior's order would show the mortgage advice in the one slot
    prior = run_pipeline(catalog, profile, HERO, T0, "d-prior", greedy)
    assert prior.control == ["mortgage_advice"]
    learner = Learner(catalog)
    teach(learner, catalog, profile, prior.segments)
    for n in range(40):
        decision_id = f"d-{n}"
        held = copy(learner, catalog)
        d = run_pipeline(catalog, profile, HERO, T0, decision_id, held.choose)
        # a treated twin, same learned model, same decision id: what the policy shows
        t = run_pipeline(catalog, twin, HERO, T0, decision_id, copy(learner, catalog).choose)
        assert set(d.control) == set(shown(t)) & HELD_OFFERS, decision_id
        assert not set(shown(d)) & HELD_OFFERS
        assert {e.offer_id for e in d.excluded if e.why is Suppression.CONTROL} == HELD_OFFERS
    # the learned order puts the car loan first: the control customer is exposed to it,
    # not to the mortgage advice the prior would have shown
    d = run_pipeline(catalog, profile, HERO, T0, greedy_id(), copy(learner, catalog).choose)
    assert d.control == ["car_loan_offer"]
    counters = ExperimentCounters(catalog)
    counters.record_decision(d, profile.experiment_key)
    assert {c for c in counters if counters.get(c) is not None} == {"car_loan_autumn"}
    assert counters.campaigns["car_loan_autumn"].totals(CONTROL, 0).n == 1


def test_a_counterfactual_choice_counts_nothing() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    profile, _ = researcher(catalog)
    learner = Learner(catalog)
    asked: list[tuple[ChoiceContext, object]] = []

    def spy(ctx: ChoiceContext, candidates, limit):  # type: ignore[no-untyped-def]
        asked.append((ctx, candidates))
        return learner.choose(ctx, candidates, limit)

    run_pipeline(catalog, profile, HERO, T0, "d-spy", spy)
    (ctx, candidates), (real, pool) = asked
    assert ctx.counterfactual
    assert ctx.withheld == HELD_OFFERS  # only their places are asked
    assert not real.counterfactual
    assert not real.withheld
    assert {c.offer.id for c in candidates} - {c.offer.id for c in pool} == HELD_OFFERS
    fresh = Learner(catalog)
    before = fresh.to_state()
    fresh.choose(ctx, candidates, 1)  # type: ignore[arg-type]
    assert fresh.to_state() == before  # no exploration budget counted
    fresh.choose(real, pool, 1)  # type: ignore[arg-type]
    assert fresh.to_state() != before


def greedy_id(epsilon: float = 0.05) -> str:
    """A decision id whose exploration draw keeps the greedy order (epsilon-greedy)."""
    import random

    return next(
        f"g-{n}" for n in itertools.count() if random.Random(seed_of(f"g-{n}")).random() >= epsilon
    )


@pytest.fixture
def exploring(tmp_path: Path) -> Catalog:
    """The example bank with every placement exploring on every decision (epsilon 1)."""
    folder = edited_catalog(
        tmp_path,
        {
            "placements.yaml": [
                (
                    EXPLORE_BANK,
                    "explore: {type: epsilon_greedy, epsilon: 1.0}",
                )
            ]
        },
    )
    return load_catalog(folder)


def test_an_exploration_draw_decides_the_control_exposure(exploring: Catalog) -> None:
    catalog = exploring
    profile, twin_id = researcher(catalog)
    twin = msgspec.structs.replace(profile, experiment_id=twin_id)
    learner = Learner(catalog)
    exposed = 0
    for n in range(60):
        decision_id = f"x-{n}"
        d = run_pipeline(catalog, profile, HERO, T0, decision_id, copy(learner, catalog).choose)
        t = run_pipeline(catalog, twin, HERO, T0, decision_id, copy(learner, catalog).choose)
        assert t.items[0].explored or t.items[0].propensity < 1.0
        assert set(d.control) == set(shown(t)) & HELD_OFFERS, decision_id
        exposed += bool(d.control)
    # a random draw over ~9 candidates: exposed now and then, not every time (the prior's
    # order, which always shows the mortgage advice first, would count all 60)
    assert 0 < exposed < 30


def test_the_real_choice_after_a_counterfactual_is_the_one_made_without_it() -> None:
    """The scores kept from the counterfactual serve the real choice: the same items,
    propensities, scores and logged features as a choice asked for directly."""
    catalog = load_catalog(EXAMPLE_CATALOG)
    profile, _ = researcher(catalog)
    learner = Learner(catalog)
    teach(learner, catalog, profile, run_pipeline(catalog, profile, HERO, T0, "s", greedy).segments)
    for n in range(10):
        decision_id = f"r-{n}"
        d = run_pipeline(catalog, profile, HERO, T0, decision_id, copy(learner, catalog).choose)
        direct = copy(learner, catalog)
        pool: list[object] = []

        def asked_directly(ctx: ChoiceContext, candidates, limit, direct=direct, pool=pool):  # type: ignore[no-untyped-def]
            if ctx.counterfactual:
                return greedy(ctx, candidates, limit)  # nothing kept for the real call
            pool.append(candidates)
            return direct.choose(ctx, candidates, limit)

        again = run_pipeline(catalog, profile, HERO, T0, decision_id, asked_directly)
        assert msgspec.to_builtins(again.items) == msgspec.to_builtins(d.items)
        assert again.features == d.features
        assert again.candidates == d.candidates
