"""Beta-Bernoulli propensities: posteriors, empirical-Bayes priors, PBM, Thompson, state."""

from __future__ import annotations

import random

import pytest

from nextbest.catalog.model import ModelKind, OfferKind
from nextbest.errors import ValidationError
from nextbest.learn.bayes import BayesConfig, BetaBernoulli
from nextbest.learn.model import OfferRef, describe, load_model, new_model

X: dict[str, float] = {"bias": 1.0}


def offer(oid: str, topic: str | None = "mortgage", placement: str = "home") -> OfferRef:
    return OfferRef(offer_id=oid, placement=placement, topic=topic)


def feed(model: BetaBernoulli, o: OfferRef, views: int, clicks: int, position: int = 1) -> None:
    for i in range(views):
        model.learn_one(X, o, position, 1.0 if i < clicks else 0.0)


def mean(ab: tuple[float, float]) -> float:
    return ab[0] / (ab[0] + ab[1])


def test_fresh_model_predicts_the_global_prior():
    m = BetaBernoulli()
    assert m.predict_one(X, offer("m1")) == pytest.approx(0.02)
    assert m.posterior(offer("m1")) == pytest.approx((1.0, 49.0))
    assert m.n_learned == 0
    assert m.version == "bayes-0"


def test_posterior_moves_up_after_clicks_and_down_after_misses():
    m = BetaBernoulli()
    o = offer("m1")
    p0 = m.predict_one(X, o)
    m.learn_one(X, o, 1, 1.0)
    p1 = m.predict_one(X, o)
    assert p1 > p0
    feed(m, o, 20, 0)
    assert m.predict_one(X, o) < p1
    assert m.n_learned == 21
    assert m.version == "bayes-21"


def test_new_offer_inherits_its_siblings_prior():
    m = BetaBernoulli()
    rng = random.Random(3)
    for oid, rate in (("m1", 0.08), ("m2", 0.12), ("m3", 0.10), ("m4", 0.09)):
        o = offer(oid)
        for _ in range(2_000):
            m.learn_one(X, o, 1, 1.0 if rng.random() < rate else 0.0)
    sibling = m.predict_one(X, offer("m_new"))
    assert 0.08 < sibling < 0.12
    # another topic, another placement or kind: a pool of its own, the global prior
    assert m.predict_one(X, offer("p1", topic="pension")) == pytest.approx(0.02)
    assert m.predict_one(X, offer("m5", placement="app")) == pytest.approx(0.02)
    service = OfferRef(offer_id="s1", placement="home", topic="mortgage", kind=OfferKind.SERVICE)
    assert m.predict_one(X, service) == pytest.approx(0.02)


def test_prior_strength_follows_sibling_spread():
    cfg = BayesConfig()

    def strength(rates: list[float]) -> float:
        m = BetaBernoulli(cfg)
        for j, rate in enumerate(rates):
            feed(m, offer(f"m{j}"), 5_000, round(rate * 5_000))
        a, b = m.prior(offer("new"))
        return a + b

    alike = strength([0.05, 0.05, 0.05, 0.05])
    spread = strength([0.01, 0.05, 0.10, 0.20])
    assert alike == pytest.approx(cfg.max_strength)
    assert cfg.min_strength <= spread < 50


def test_one_sibling_shrinks_towards_the_global_prior():
    m = BetaBernoulli()
    feed(m, offer("m1"), 50, 5)  # 10% over 50 views, prior 2% with strength 50
    a, b = m.prior(offer("m2"))
    assert a + b == pytest.approx(50.0)
    assert mean((a, b)) == pytest.approx((1.0 + 5) / (50 + 50))


def test_thompson_draws_reproducible_with_a_seed():
    m = BetaBernoulli()
    feed(m, offer("m1"), 100, 7)
    draws = [m.sample_one(X, offer("m1"), random.Random(42)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    assert m.sample_one(X, offer("m1"), random.Random(43)) != draws[0]
    rng = random.Random(1)
    many = [m.sample_one(X, offer("m1"), rng) for _ in range(4_000)]
    assert sum(many) / len(many) == pytest.approx(m.predict_one(X, offer("m1")), rel=0.05)


def test_a_click_at_position_3_counts_more_than_at_position_1():
    top, low = BetaBernoulli(), BetaBernoulli()
    top.learn_one(X, offer("m1"), 1, 1.0)
    low.learn_one(X, offer("m1"), 3, 1.0)
    assert low.predict_one(X, offer("m1")) > top.predict_one(X, offer("m1"))
    # and over many impressions: the same clicks from fewer examinations
    top, low = BetaBernoulli(), BetaBernoulli()
    feed(top, offer("m1"), 200, 10, position=1)
    feed(low, offer("m1"), 200, 10, position=3)
    assert low.predict_one(X, offer("m1")) > 1.5 * top.predict_one(X, offer("m1"))


def test_examination_is_estimated_from_randomized_positions():
    theta = (1.0, 0.5, 0.25)
    m = BetaBernoulli()
    rng = random.Random(11)
    rel = {f"o{j}": 0.05 + 0.02 * j for j in range(8)}
    offers = {oid: offer(oid, topic=None) for oid in rel}
    ids = sorted(rel)
    for _ in range(30_000):
        oid = rng.choice(ids)
        k = rng.randint(1, 3)
        m.learn_one(X, offers[oid], k, 1.0 if rng.random() < theta[k - 1] * rel[oid] else 0.0)
    curve = m.examination("home", 3)
    assert curve[0] == 1.0
    assert curve[1] == pytest.approx(0.5, abs=0.08)
    assert curve[2] == pytest.approx(0.25, abs=0.06)
    # relevance is learned free of position bias, and predictions carry it back
    for oid in ("o0", "o7"):
        assert m.predict_one(X, offers[oid]) == pytest.approx(rel[oid], rel=0.25)
        p3 = m.predict_one(X, offers[oid], position=3)
        assert p3 == pytest.approx(m.predict_one(X, offers[oid]) * curve[2])


def test_examination_is_not_fooled_by_better_offers_ranking_higher():
    theta = (1.0, 0.5, 0.25)
    m = BetaBernoulli()
    rng = random.Random(12)
    rel = {f"o{j}": 0.03 + 0.03 * j for j in range(8)}
    offers = {oid: offer(oid, topic=None) for oid in rel}
    ids = sorted(rel)
    clicks, views = [0, 0, 0], [0, 0, 0]
    for _ in range(15_000):  # a near-greedy ranker: the better offer usually ranks higher
        shown = sorted(rng.sample(ids, 3), key=lambda o: -rel[o] + rng.gauss(0.0, 0.05))
        for k, oid in enumerate(shown, 1):
            click = rng.random() < theta[k - 1] * rel[oid]
            clicks[k - 1] += click
            views[k - 1] += 1
            m.learn_one(X, offers[oid], k, 1.0 if click else 0.0)
    naive = [clicks[k] / views[k] / (clicks[0] / views[0]) for k in range(3)]
    assert naive[2] < 0.15  # a ratio of click rates takes relevance for position bias
    curve = m.examination("home", 3)
    assert curve[1] == pytest.approx(0.5, abs=0.06)
    assert curve[2] == pytest.approx(0.25, abs=0.05)
    assert m.predict_one(X, offers["o7"]) == pytest.approx(rel["o7"], rel=0.1)


def test_examination_prior_and_floor():
    m = BetaBernoulli()
    assert m.examination("new", 3) == pytest.approx([1.0, 1 / 1.5849625007211563, 0.5])
    assert m.theta("new", 50) == m.theta("new", 20)
    feed(m, offer("m1"), 400, 0, position=2)
    assert m.theta("home", 2) >= BayesConfig().min_examination


def test_bad_feedback_is_rejected_and_nothing_learned():
    m = BetaBernoulli()
    with pytest.raises(ValidationError) as err:
        m.learn_one(X, offer("m1"), 0, 1.0)
    assert err.value.path == "$.position"
    with pytest.raises(ValidationError):
        m.learn_one(X, offer("m1"), 1, 1.5)
    assert m.n_learned == 0
    assert m.to_state() == BetaBernoulli().to_state()


def events(seed: int, n: int) -> list[tuple[OfferRef, int, float]]:
    rng = random.Random(seed)
    offers = [offer(f"m{j}", topic=("mortgage", "pension", None)[j % 3]) for j in range(9)]
    out = []
    for _ in range(n):
        o = rng.choice(offers)
        k = rng.randint(1, 3)
        out.append((o, k, 1.0 if rng.random() < 0.1 / k else rng.choice((0.0, 0.0, 0.5))))
    return out


def test_replay_and_state_roundtrip_are_identical():
    stream = events(5, 3_000)
    a, b = BetaBernoulli(), BetaBernoulli()
    for o, k, r in stream:
        a.learn_one(X, o, k, r)
        b.learn_one(X, o, k, r)
    state = a.to_state()
    assert b.to_state() == state
    restored = BetaBernoulli.from_state(state)
    assert restored.to_state() == state
    assert restored.version == a.version
    for o, _, _ in stream[:20]:
        assert restored.predict_one(X, o, 2) == a.predict_one(X, o, 2)
    # learning on after a restore is the same as never having stopped
    for o, k, r in events(6, 500):
        a.learn_one(X, o, k, r)
        restored.learn_one(X, o, k, r)
    assert restored.to_state() == a.to_state()


def test_load_model_and_describe():
    m = new_model(ModelKind.BAYES)
    assert isinstance(m, BetaBernoulli)
    feed(m, offer("m1"), 30, 6)
    feed(m, offer("m2"), 30, 1)
    loaded = load_model(m.to_state())
    assert isinstance(loaded, BetaBernoulli)
    info = describe(loaded, k=1)
    assert info.kind is ModelKind.BAYES
    assert info.version == "bayes-60"
    assert info.n_learned == 60
    assert info.state_bytes == len(m.to_state())
    assert [name for name, _ in info.top_features] == ["m1@home"]
    with pytest.raises(ValidationError):
        load_model(b"\x81\xa4kind\xa4nope")
    with pytest.raises(ValidationError):
        BetaBernoulli.from_state(b"not msgpack")
