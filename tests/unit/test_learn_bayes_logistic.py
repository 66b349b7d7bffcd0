"""The Bayesian logistic click model: the catalog's prior with no data, evidence moves it as
far as it is strong, a posterior that narrows, Thompson sampling over it, exact replays."""

from __future__ import annotations

import math
import random

import pytest

from nextbest.catalog.model import ModelKind, Thompson
from nextbest.decide.model import PropensityKind
from nextbest.errors import ValidationError
from nextbest.learn.bayes_logistic import BayesLogistic, BayesLogisticConfig
from nextbest.learn.explore import GaussianScores, RankEntry, rank
from nextbest.learn.model import OfferRef, describe, load_model, new_model

MORTGAGE = OfferRef(offer_id="mortgage_advice", placement="home_feed", topic="mortgage")
CARD = OfferRef(offer_id="credit_card_offer", placement="home_feed", topic="cards")
FAN = {"bias": 1.0, "interest:mortgage": 1.5, "count7:mortgage": 1.1, "lifecycle:family": 1.0}
OTHER = {"bias": 1.0, "lifecycle:starter": 1.0}


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def test_with_no_data_it_predicts_the_catalog_prior_given_as_offset() -> None:
    model = BayesLogistic()
    base = model.config.prior_mean
    assert model.predict_one(FAN, MORTGAGE) == pytest.approx(base)
    offset = logit(0.08) - logit(base)
    assert model.predict_one(FAN, MORTGAGE, offset=offset) == pytest.approx(0.08)
    assert model.version == "bayes_logistic-0"


def test_clicks_raise_and_misses_lower_the_estimate_for_that_context() -> None:
    model = BayesLogistic()
    before = model.predict_one(FAN, MORTGAGE)
    for _ in range(20):
        model.learn_one(FAN, MORTGAGE, 1, 1.0)
    clicked = model.predict_one(FAN, MORTGAGE)
    assert clicked > 4 * before
    # the card offer, to a customer with no interest in cards, shares only the base rate
    assert model.predict_one(OTHER, CARD) < 3 * before < clicked / 5
    # interest in an offer's own topic predicts its clicks: shared by every offer at once
    assert model.predict_one({**OTHER, "interest:cards": 1.5}, CARD) > 3 * before
    for _ in range(400):
        model.learn_one(FAN, MORTGAGE, 1, 0.0)
    assert model.predict_one(FAN, MORTGAGE) < clicked
    assert model.n_learned == 420


def test_the_posterior_narrows_with_evidence() -> None:
    model = BayesLogistic()
    _, (cold,) = model.score_posterior(FAN, [MORTGAGE])
    assert 0.5 < cold < 2.0  # about a logit around the prior, not a coin toss
    rng = random.Random(7)
    for _ in range(1000):
        model.learn_one(FAN, MORTGAGE, 1, float(rng.random() < 0.1))
    _, (warm,) = model.score_posterior(FAN, [MORTGAGE])
    assert warm < cold / 2
    # ~10 % observed clicks: the estimate found the rate
    assert model.predict_one(FAN, MORTGAGE) == pytest.approx(0.1, abs=0.04)


def test_state_round_trip_and_replay_are_exact() -> None:
    rng = random.Random(3)
    events = [
        (rng.choice([FAN, OTHER]), rng.choice([MORTGAGE, CARD]), rng.randint(1, 3), rng.random())
        for _ in range(200)
    ]
    a, b = BayesLogistic(), BayesLogistic()
    for x, offer, position, u in events[:120]:
        a.learn_one(x, offer, position, float(u < 0.2))
        b.learn_one(x, offer, position, float(u < 0.2))
    restored = BayesLogistic.from_state(a.to_state())
    assert restored.to_state() == a.to_state()
    for x, offer, position, u in events[120:]:
        restored.learn_one(x, offer, position, float(u < 0.2))
        b.learn_one(x, offer, position, float(u < 0.2))
    assert restored.to_state() == b.to_state()
    loaded = load_model(b.to_state())
    assert isinstance(loaded, BayesLogistic)
    assert loaded.kind is ModelKind.BAYES_LOGISTIC
    assert describe(loaded).n_learned == 200
    assert isinstance(new_model(ModelKind.BAYES_LOGISTIC), BayesLogistic)


def test_bad_feedback_is_rejected_and_nothing_learned() -> None:
    model = BayesLogistic(BayesLogisticConfig(prior_precision=10.0))
    before = model.to_state()
    with pytest.raises(ValidationError):
        model.learn_one(FAN, MORTGAGE, 0, 1.0)
    with pytest.raises(ValidationError):
        model.learn_one(FAN, MORTGAGE, 1, 1.5)
    assert model.to_state() == before


def test_thompson_over_the_score_posterior_logs_exact_propensities() -> None:
    scores = GaussianScores(mean=[-2.0, -2.2, -4.0], sd=[1.0, 1.0, 0.1], scale=[1.0, 1.0, 1.0])
    cands = [RankEntry()] * 3

    def run(seed: int) -> list[tuple[int, float]]:
        placed = rank(
            cands,
            [0.12, 0.10, 0.02],
            2,
            Thompson(n_sim=400),
            random.Random(seed),
            thompson=scores,
            seed=seed,
        )
        assert all(p.propensity_kind is PropensityKind.EXACT for p in placed)
        assert all(1 / 400 <= p.propensity <= 1.0 for p in placed)
        return [(p.index, p.propensity) for p in placed]

    assert run(11) == run(11)  # reproducible from the seed
    firsts = {run(seed)[0][0] for seed in range(40)}
    assert firsts == {0, 1}  # the two uncertain offers trade places; the certain loser never leads
    one = rank(
        [RankEntry()],
        [0.1],
        1,
        Thompson(n_sim=50),
        random.Random(1),
        thompson=GaussianScores([0.0], [1.0], [1.0]),
    )
    assert [(p.propensity, p.propensity_kind) for p in one] == [(1.0, PropensityKind.EXACT)]
