"""``bench/refit.py``: the batch refit of the contextual click model reaches the penalised
optimum on the events recorded and writes it back so the model predicts by it."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from types import ModuleType

from nextbest.learn.contextual import ContextualLogistic, crossed
from nextbest.learn.model import OfferRef


def _stream(
    rng: random.Random, n: int
) -> list[tuple[dict[str, float], OfferRef, int, float, float, dict[str, float]]]:
    offers = [
        OfferRef(offer_id="a", placement="home", topic="mortgage"),
        OfferRef(offer_id="b", placement="home", topic="cards"),
    ]
    out = []
    for _ in range(n):
        offer = rng.choice(offers)
        x = {"bias": 1.0, "interest:mortgage": rng.random(), "segment:young": 1.0}
        if rng.random() < 0.5:
            x["interest:cards"] = rng.random()
        p = 0.3 if offer.offer_id == "a" and x["interest:mortgage"] > 0.5 else 0.05
        reward = 1.0 if rng.random() < p else 0.0
        if rng.random() < 0.05:
            reward = 0.4  # a fractional reward: a weighted click and a weighted miss
        out.append((x, offer, rng.choice([1, 2]), reward, rng.uniform(-1, 1), {"seen": 1.0}))
    return out


def test_refit_reaches_the_optimum_and_writes_it_back(
    bench: Callable[[str], ModuleType],
) -> None:
    refit = bench("refit")
    model, examples = ContextualLogistic(), refit.Examples()
    for x, offer, position, reward, offset, extra in _stream(random.Random(7), 600):
        model.learn_one(x, offer, position, reward, offset=offset, extra=extra)
        examples.add(model, x, offer, position, reward, offset, extra)
    assert len(examples) > 600  # the fractional rewards took two rows each
    stats = refit.refit(model, examples, lam=1.0)
    assert stats.converged
    assert stats.loss_after < stats.loss_before
    assert stats.rows == len(examples)
    assert stats.columns == len(examples.names)
    # a second refit from the optimum stays there
    again = refit.refit(model, examples, lam=1.0)
    assert math.isclose(again.loss_before, stats.loss_after, rel_tol=1e-9)
    assert again.loss_after <= again.loss_before
    # the model predicts by the written-back weights: its log-odds = intercept + X . w
    weights = model.weights()
    x, offer, position, _, offset, extra = _stream(random.Random(8), 1)[0]
    z = model.intercept + offset * weights["offset"]
    z += sum(v * weights.get(k, 0.0) for k, v in crossed(x, offer, position, 20, extra).items())
    assert math.isclose(
        model.predict_one(x, offer, position, offset, extra), 1 / (1 + math.exp(-z)), rel_tol=1e-9
    )
    assert model.n_learned == 600


def test_progressive_log_loss_per_block(bench: Callable[[str], ModuleType]) -> None:
    scored = bench("refit").Progressive(2)
    for p, reward in [(0.5, 1.0), (0.5, 0.0), (0.9, 1.0)]:
        scored.add(p, reward)
    row = scored.row()
    assert row["events"] == 3
    assert [b["events"] for b in row["blocks"]] == [2, 1]
    assert math.isclose(row["blocks"][0]["log_loss"], math.log(2.0))
    assert math.isclose(row["log_loss"], (2 * math.log(2.0) - math.log(0.9)) / 3)


def test_refit_can_keep_the_intercept(bench: Callable[[str], ModuleType]) -> None:
    refit = bench("refit")
    model, examples = ContextualLogistic(), refit.Examples()
    for x, offer, position, reward, offset, extra in _stream(random.Random(9), 300):
        model.learn_one(x, offer, position, reward, offset=offset, extra=extra)
        examples.add(model, x, offer, position, reward, offset, extra)
    before = model.intercept
    stats = refit.refit(model, examples, lam=1.0, intercept=False)
    assert stats.converged
    assert model.intercept == before
    assert stats.loss_after < stats.loss_before
