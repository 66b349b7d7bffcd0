"""The contextual logistic model, and the checks every PropensityModel passes."""

from __future__ import annotations

import copy
import math
import random

import pytest

from nextbest.catalog.model import ModelKind
from nextbest.learn.bayes import BetaBernoulli
from nextbest.learn.contextual import ContextualLogistic, crossed
from nextbest.learn.features import Features
from nextbest.learn.model import (
    OfferRef,
    PropensityModel,
    describe,
    load_model,
    new_model,
)

TOPICS = ("mortgage", "pension", "cards", "savings", "car")
OFFERS = [OfferRef(offer_id=f"o{j}", placement="home", topic=TOPICS[j % 5]) for j in range(10)]
THETA = (1.0, 0.6, 0.4)


def customer(rng: random.Random) -> Features:
    x: Features = {"bias": 1.0}
    for t in rng.sample(TOPICS, rng.randint(0, 2)):
        x["interest:" + t] = math.log1p(rng.expovariate(0.5))
        x["count30:" + t] = math.log1p(rng.randint(1, 9))
    if rng.random() < 0.3:
        x["segment:young"] = 1.0
    x["device:" + rng.choice(("mobile", "desktop"))] = 1.0
    return x


def relevance(x: Features, o: OfferRef) -> float:
    """The planted truth: own-topic interest, and the young segment loves o3."""
    z = -3.0 + 1.8 * x.get(f"interest:{o.topic}", 0.0)
    if o.offer_id == "o3" and "segment:young" in x:
        z += 2.0
    return 1.0 / (1.0 + math.exp(-z))


def stream(seed: int, n: int) -> list[tuple[Features, OfferRef, int, float, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = customer(rng)
        o = rng.choice(OFFERS)
        k = rng.randint(1, 3)
        p = THETA[k - 1] * relevance(x, o)
        out.append((x, o, k, 1.0 if rng.random() < p else 0.0, p))
    return out


def auc(scores: list[float], labels: list[float]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = 0.0
    for p in pos:
        for q in neg:
            wins += 1.0 if p > q else 0.5 if p == q else 0.0
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def trained() -> ContextualLogistic:
    m = ContextualLogistic()
    for x, o, k, r, _ in stream(1, 5_000):
        m.learn_one(x, o, k, r)
    return m


def test_learns_a_planted_signal(trained: ContextualLogistic):
    held = stream(2, 1_500)
    scores = [trained.predict_one(x, o, k) for x, o, k, _, _ in held]
    assert auc(scores, [r for *_, r, _ in held]) > 0.7
    # and ranks at position 1 by the planted relevance
    truth = [relevance(x, o) for x, o, _, _, _ in held]
    assert (
        auc(
            [trained.predict_one(x, o) for x, o, _, _, _ in held[:600]],
            [1.0 if t > 0.2 else 0.0 for t in truth[:600]],
        )
        > 0.8
    )


def test_position_is_a_learned_discount(trained: ContextualLogistic):
    weights = trained.weights()
    assert weights["pos:home:3"] < weights.get("pos:home:2", 0.0) < 0.0
    x = {"bias": 1.0, "interest:cards": 1.0}
    assert trained.predict_one(x, OFFERS[2], 3) < trained.predict_one(x, OFFERS[2])


def test_crossed_features():
    x = {
        "bias": 1.0,
        "interest:mortgage": 0.5,
        "interest:cards": 0.25,
        "segment:young": 1.0,
        "how:wd1": 1.0,
    }
    z = crossed(x, OFFERS[0], position=2)
    assert z["offer:o0"] == z["topic:mortgage"] == z["placement:home"] == z["pos:home:2"] == 1.0
    assert z["own.interest"] == z["own.interest&offer:o0"] == 0.5
    assert z["interest:cards&topic:mortgage"] == 0.25
    assert z["segment:young&offer:o0"] == z["segment:young&topic:mortgage"] == 1.0
    assert z["how:wd1&offer:o0"] == 1.0
    assert "interest:cards&offer:o0" not in z  # numeric features cross with the topic only
    assert not any(k.startswith("bias") for k in z)
    assert not any(k.startswith("pos:") for k in crossed(x, OFFERS[0], position=1))
    assert crossed(x, OFFERS[0], position=99)["pos:home:20"] == 1.0
    no_topic = OfferRef(offer_id="s", placement="home")
    assert crossed(x, no_topic)["interest:cards&topic:-"] == 0.25


def test_predict_many_equals_predict_one_and_sample_is_predict(trained: ContextualLogistic):
    x = customer(random.Random(9))
    # the same sum, associated per topic: equal to the last bits of a double
    assert trained.predict_many(x, OFFERS, 2) == pytest.approx(
        [trained.predict_one(x, o, 2) for o in OFFERS], rel=1e-12
    )
    assert trained.sample_one(x, OFFERS[1], random.Random(1)) == trained.predict_one(x, OFFERS[1])


def test_fresh_model_starts_at_the_prior_mean():
    m = ContextualLogistic()
    assert m.predict_one({"bias": 1.0}, OFFERS[0]) == pytest.approx(0.02)


def test_fractional_reward_sits_between_click_and_miss():
    x = {"bias": 1.0, "interest:mortgage": 1.0}
    ms = {r: ContextualLogistic() for r in (0.0, 0.5, 1.0)}
    for r, m in ms.items():
        for _ in range(50):
            m.learn_one(x, OFFERS[0], 1, r)
    p = {r: m.predict_one(x, OFFERS[0]) for r, m in ms.items()}
    assert p[0.0] < p[0.5] < p[1.0]


def test_top_features_by_magnitude(trained: ContextualLogistic):
    top = trained.top_features(5)
    assert len(top) == 5
    assert top[0][0] == "(intercept)"
    mags = [abs(v) for _, v in top]
    assert mags == sorted(mags, reverse=True)
    info = describe(trained, 3)
    assert info.kind is ModelKind.CONTEXTUAL
    assert info.version == "contextual-5000"
    assert info.top_features == top[:3]


def test_replay_and_state_roundtrip_are_identical(trained: ContextualLogistic):
    again = ContextualLogistic()
    for x, o, k, r, _ in stream(1, 5_000):
        again.learn_one(x, o, k, r)
    state = trained.to_state()
    assert again.to_state() == state
    restored = ContextualLogistic.from_state(state)
    assert restored.to_state() == state
    assert isinstance(load_model(state), ContextualLogistic)
    held = stream(3, 200)
    assert [restored.predict_one(x, o, k) for x, o, k, _, _ in held] == [
        trained.predict_one(x, o, k) for x, o, k, _, _ in held
    ]
    for x, o, k, r, _ in held:
        again.learn_one(x, o, k, r)
        restored.learn_one(x, o, k, r)
    assert restored.to_state() == again.to_state()


def test_past_its_bound_the_name_cache_changes_nothing(monkeypatch: pytest.MonkeyPatch):
    """Feature kinds are remembered up to a bound; past it they are classified each time, with
    the same weights."""
    import nextbest.learn.contextual as contextual

    events = stream(4, 1_000)
    unbounded = ContextualLogistic()
    for x, o, k, r, _ in events:
        unbounded.learn_one(x, o, k, r)
    monkeypatch.setattr(contextual, "_MAX_KNOWN_NAMES", 3)
    bounded = ContextualLogistic()
    for x, o, k, r, _ in events:
        bounded.learn_one(x, o, k, r)
    assert bounded.known_feature_names == 3
    assert bounded.to_state() == unbounded.to_state()
    x = events[0][0]
    assert bounded.predict_many(x, OFFERS) == unbounded.predict_many(x, OFFERS)


# ------------------------------------------------------------------ every model's checks
@pytest.fixture(params=[ModelKind.BAYES, ModelKind.CONTEXTUAL])
def model(request: pytest.FixtureRequest) -> PropensityModel:
    m = new_model(request.param)
    assert m.kind is request.param
    assert isinstance(m, BetaBernoulli | ContextualLogistic)
    return m


def test_every_model_leaves_its_inputs_alone(model: PropensityModel):
    events = stream(4, 300)
    frozen = copy.deepcopy(events)
    for x, o, k, r, _ in events:
        model.predict_one(x, o, k)
        model.predict_many(x, OFFERS)
        model.learn_one(x, o, k, r)
    assert events == frozen


def test_every_model_is_seeded_repeatable_and_roundtrips(model: PropensityModel):
    events = stream(5, 400)
    twin = new_model(model.kind)
    for x, o, k, r, _ in events:
        model.learn_one(x, o, k, r)
        twin.learn_one(x, o, k, r)
    assert model.to_state() == twin.to_state()
    assert load_model(model.to_state()).to_state() == model.to_state()
    assert model.n_learned == 400
    assert model.version == f"{model.kind.value}-400"
    for x, o, k, _, _ in events[:5]:
        assert model.sample_one(x, o, random.Random(3)) == twin.sample_one(x, o, random.Random(3))
        assert 0.0 < model.predict_one(x, o, k) < 1.0


def test_state_roundtrips_feature_names_that_hold_a_cross_marker():
    m = ContextualLogistic()
    x = {"bias": 1.0, "product:a&topic:b": 1.0, "product:c&offer:d": 1.0, "interest:cards": 0.5}
    for r in (1.0, 0.0, 1.0):
        m.learn_one(x, OFFERS[2], 1, r)
    again = ContextualLogistic.from_state(m.to_state())
    assert again.weights() == m.weights()
    assert "product:a&topic:b&offer:o2" in m.weights()
    assert again.predict_one(x, OFFERS[2]) == m.predict_one(x, OFFERS[2])


def test_an_offers_level_takes_a_newton_step_on_its_own_evidence():
    """``offer:<o>`` moves by ``-g / precision``, its precision growing by ``p (1 - p)`` per
    event from ``level_precision``; every other weight keeps its SGD step."""
    from nextbest.learn.contextual import ContextualConfig

    c = ContextualConfig(level_precision=10.0)
    m = ContextualLogistic(c)
    x: Features = {"bias": 1.0, "segment:young": 1.0}
    o = OFFERS[0]
    p = m.predict_one(x, o)
    m.learn_one(x, o, 1, 1.0)
    h = 10.0 + p * (1.0 - p)
    assert m.weights()["offer:o0"] == pytest.approx((1.0 - p) / h, rel=1e-12)
    assert m.weights()["segment:young&offer:o0"] == pytest.approx(c.lr * (1.0 - p), rel=1e-12)
    means, sds = m.posterior_many(x, OFFERS[:2])
    assert sds == pytest.approx([h**-0.5, 10.0**-0.5])
    assert [1.0 / (1.0 + math.exp(-z)) for z in means] == m.predict_many(x, OFFERS[:2])
    # misses pull it down, each by less as evidence accumulates
    before = m.weights()["offer:o0"]
    steps = []
    for _ in range(3):
        w = m.weights()["offer:o0"]
        m.learn_one(x, o, 1, 0.0)
        steps.append(w - m.weights()["offer:o0"])
    assert m.weights()["offer:o0"] < before
    assert steps[0] > steps[1] > steps[2] > 0.0
    # the precisions are state
    again = ContextualLogistic.from_state(m.to_state())
    assert again.to_state() == m.to_state()
    assert again.posterior_many(x, OFFERS[:2]) == m.posterior_many(x, OFFERS[:2])
    # SGD for the levels too: no spread to sample
    sgd = ContextualLogistic(ContextualConfig(level_precision=0.0))
    assert sgd.posterior_many(x, OFFERS[:2])[1] == [0.0, 0.0]


def test_a_candidates_history_is_learned_with_shared_and_own_weights():
    """Fatigue planted in the stream: an offer shown before is clicked less, the more so
    for the customers not interested in its topic; the history weights learn it."""
    rng = random.Random(5)
    m = ContextualLogistic()
    for _ in range(20_000):
        x = customer(rng)
        o = rng.choice(OFFERS)
        seen = rng.randint(0, 4)
        extra = {"seen": math.log1p(seen)} if seen else {}
        p = relevance(x, o) * (0.3 if seen else 1.0)
        m.learn_one(x, o, 1, 1.0 if rng.random() < p else 0.0, extra=extra)
    w = m.weights()
    assert w["hist.seen"] < -0.2
    assert any(k.startswith("hist.seen&offer:") for k in w)
    x = {"bias": 1.0, "interest:mortgage": 1.0}
    fresh, tired = (m.predict_one(x, OFFERS[0], extra=e) for e in ({}, {"seen": math.log1p(3)}))
    assert tired < fresh
    assert "hist.seen" in crossed(x, OFFERS[0], extra={"seen": 1.0})
