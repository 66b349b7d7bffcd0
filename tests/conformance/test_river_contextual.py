"""The contextual model is River's ``LogisticRegression`` with SGD, step for step.

``ContextualLogistic`` keeps its weights in per-topic and per-offer views for speed; River
learns on the flat ``crossed`` names. Fed the same stream (clicks, misses, fractional
rewards, offsets, positions, features absent from a topic's view, candidates' own
histories), both must hold the same weights and intercept and predict the same
probabilities, to the last bits a different summation order can change. The offers' levels
learn by SGD here (``level_precision`` 0): their Newton step is the model's own, tested in
``tests/unit/test_contextual.py``.
"""

from __future__ import annotations

import math
import random

import pytest

from nextbest.learn.contextual import OFFSET, ContextualConfig, ContextualLogistic, crossed
from nextbest.learn.features import Features
from nextbest.learn.model import OfferRef

river = pytest.importorskip("river", reason="river is the reference; install the dev extra")
from river import linear_model, optim  # noqa: E402
from river.utils import VectorDict  # noqa: E402

TOPICS = ("mortgage", "pension", "cards", "savings")
OFFERS = [
    *(OfferRef(offer_id=f"o{j}", placement="feed", topic=TOPICS[j % 4]) for j in range(8)),
    OfferRef(offer_id="notice", placement="feed"),
    OfferRef(offer_id="o1", placement="hero", topic="pension"),
]


def customer(rng: random.Random) -> Features:
    x: Features = {"bias": 1.0}
    for t in rng.sample(TOPICS, rng.randint(0, 3)):
        x["interest:" + t] = math.log1p(rng.expovariate(0.3))
        x["count7:" + t] = math.log1p(rng.randint(0, 5))
        x["trend:" + t] = rng.choice((0.0, -0.7, 1.1))  # a zero value is a touched weight
        if rng.random() < 0.3:
            x["funnel:" + t] = rng.randint(1, 5) / 5.0
    for s in rng.sample(("young", "affluent", "student"), rng.randint(0, 2)):
        x["segment:" + s] = 1.0
    if rng.random() < 0.4:
        x["product:current_account"] = 1.0
    x["device:" + rng.choice(("mobile", "desktop"))] = 1.0
    x["how:wd" + str(rng.randint(0, 3))] = 1.0
    return x


def history(rng: random.Random) -> Features | None:
    """A candidate's own history (``learn.features.offer_history``), or none."""
    if rng.random() < 0.5:
        return None
    seen = math.log1p(rng.randint(1, 6))
    out: Features = {"seen": seen, "since": 1.0 / (1.0 + rng.uniform(0.0, 9.0))}
    if rng.random() < 0.3:
        out["clicked"] = 1.0
    if rng.random() < 0.5:
        out["seen_interest"] = seen * rng.uniform(0.1, 2.0)
    return out


def reference(config: ContextualConfig) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression(
        optimizer=optim.SGD(config.lr),
        l2=config.l2,
        intercept_init=math.log(config.prior_mean / (1.0 - config.prior_mean)),
        intercept_lr=config.intercept_lr,
    )
    model._weights = VectorDict({OFFSET: 1.0})
    return model


@pytest.mark.parametrize("seed", [1, 2])
def test_same_weights_and_predictions_as_river(seed: int):
    # large steps: big weights; the offers' levels by SGD as well
    config = ContextualConfig(lr=0.05, l2=1e-3, max_position=4, level_precision=0.0)
    ours = ContextualLogistic(config)
    theirs = reference(config)
    rng = random.Random(seed)
    for i in range(3_000):
        x = customer(rng)
        offer = rng.choice(OFFERS)
        position = rng.randint(1, 6)
        offset = rng.choice((0.0, 0.0, rng.uniform(-2.0, 3.0)))
        reward = rng.choice((0.0, 0.0, 0.0, 1.0, 0.25))
        extra = history(rng)
        z = crossed(x, offer, position, config.max_position, extra)
        if offset:
            z[OFFSET] = offset
        if i % 50 == 0:  # before learning: the same prediction
            ours_p = ours.predict_one(x, offer, position, offset, extra)
            assert ours_p == pytest.approx(theirs.predict_proba_one(z)[True], rel=1e-12)
        ours.learn_one(x, offer, position, reward, offset, extra)
        if reward in (0.0, 1.0):
            theirs.learn_one(z, reward == 1.0)
        else:
            theirs.learn_one(z, True, w=reward)
            theirs.learn_one(z, False, w=1.0 - reward)
    expected = {str(k): float(v) for k, v in theirs.weights.items()}
    got = ours.weights()
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
    assert ours.intercept == pytest.approx(float(theirs.intercept), rel=1e-12)
    assert max(abs(v) for v in got.values()) > 0.5  # the stream moved the weights a lot
    # state names every weight as River does, and reads back into the same model
    again = ContextualLogistic.from_state(ours.to_state())
    assert again.weights() == got
    x = customer(rng)
    assert again.predict_many(x, OFFERS, 2) == ours.predict_many(x, OFFERS, 2)
    extras = [history(rng) or {} for _ in OFFERS]
    assert ours.predict_many(x, OFFERS, 2, extras=extras) == [
        ours.predict_one(x, o, 2, extra=e) for o, e in zip(OFFERS, extras, strict=True)
    ]
