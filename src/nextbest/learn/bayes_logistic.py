"""A Bayesian logistic click model with a posterior, for Thompson sampling over features.

``P(click) = sigmoid(offset + w . crossed(x, offer, position))`` with an independent Gaussian
posterior on every weight (mean ``m_i``, precision ``q_i``), learned one feedback event at
a time by the online Laplace approximation of Chapelle & Li, "An Empirical Evaluation of
Thompson Sampling" (NIPS 2011, algorithm 3, one event per batch): with ``p`` the predicted
click probability at the posterior mean and ``y`` the outcome, every weight the event
touches gets ``q_i += p (1 - p) x_i^2`` and then ``m_i -= (p - y) x_i / q_i``. Weights start
at mean 0 and precision ``prior_precision``; the intercept starts at the logit of
``prior_mean``, with the same precision. A customer has some 10-80 crossed features at
once, so a weight's prior precision of ``prior_precision`` = 20 puts the prior standard
deviation of a score between about 0.7 and 2 logits around the catalog's prior: wide enough
to learn within days, narrow enough that an unseen combination of features is not a coin
toss.

**The catalog's prior is the offset**, fixed: ``offset = logit(prior) - logit(prior_mean)``
(the catalog's interest prior for this customer and offer), so a model with no data
predicts the catalog's prior exactly and data move it away only as far as they are
many: the posterior shrinks towards the prior while data are thin.

**Features**: the contextual model's ``crossed`` (offer, topic, placement and position
indicators, the offer's own-topic families, every customer feature crossed with the offer's
topic, the indicators crossed with the offer): the same names, so ``nextbest models`` reads
them alike.

**Predictions**: ``predict_one`` is the click probability at the posterior mean,
``sigmoid(mu)``: exactly the catalog's prior before any data. ``score_posterior`` gives the
score's mean ``mu`` and standard deviation ``s`` per offer for Thompson sampling
(``learn.explore``: a draw ``sigmoid(N(mu, s^2))`` per candidate, scaled by what a click is
worth), whose propensities are estimated by seeded Monte Carlo like the Beta model's.

Deterministic: the same events in the same order give the same state; ``to_state`` writes
the weights sorted by name.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Self

import msgspec

from nextbest.catalog.model import ModelKind
from nextbest.learn.contextual import crossed
from nextbest.learn.features import Features
from nextbest.learn.model import DEFAULT_PRIOR_MEAN, OfferRef, check_feedback, decode_state

__all__ = ["BayesLogistic", "BayesLogisticConfig", "BayesLogisticState"]

_INTERCEPT = "(intercept)"
#: scores beyond this are certain for a float
_Z_CLIP = 30.0


class BayesLogisticConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The prior: each weight ~ N(0, 1 / ``prior_precision``); the base rate ``prior_mean``."""

    prior_precision: Annotated[float, msgspec.Meta(gt=0.0)] = 20.0
    prior_mean: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = DEFAULT_PRIOR_MEAN
    max_position: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class BayesLogisticState(msgspec.Struct, frozen=True, kw_only=True):
    kind: ModelKind
    config: BayesLogisticConfig
    n_learned: int
    #: (name, mean, precision), sorted by name; the intercept is ``(intercept)``
    weights: list[tuple[str, float, float]]


def _sigmoid(z: float) -> float:
    if z < -_Z_CLIP:
        z = -_Z_CLIP
    elif z > _Z_CLIP:
        z = _Z_CLIP
    return 1.0 / (1.0 + math.exp(-z))


class BayesLogistic:
    """Online Bayesian logistic regression (diagonal Laplace) on ``crossed`` features."""

    kind = ModelKind.BAYES_LOGISTIC
    uses_features = True

    def __init__(self, config: BayesLogisticConfig | None = None) -> None:
        self.config = config if config is not None else BayesLogisticConfig()
        c = self.config
        p0 = c.prior_mean
        #: name -> [mean, precision]
        self._w: dict[str, list[float]] = {
            _INTERCEPT: [math.log(p0 / (1.0 - p0)), c.prior_precision]
        }
        self._n = 0

    @property
    def n_learned(self) -> int:
        return self._n

    @property
    def version(self) -> str:
        return f"{self.kind.value}-{self._n}"

    def _inputs(self, x: Features, offer: OfferRef, position: int) -> Features:
        return crossed(x, offer, position, self.config.max_position)

    def _mean(self, inputs: Features, offset: float) -> float:
        """The score at the posterior mean."""
        w = self._w
        mu = w[_INTERCEPT][0] + offset
        for name, v in inputs.items():
            mq = w.get(name)
            if mq is not None:
                mu += mq[0] * v
        return mu

    def _moments(self, inputs: Features, offset: float) -> tuple[float, float]:
        """The score's posterior mean and variance."""
        w = self._w
        q0 = self.config.prior_precision
        mean, precision = w[_INTERCEPT]
        mu = mean + offset
        var = 1.0 / precision
        for name, v in inputs.items():
            mq = w.get(name)
            if mq is None:
                var += v * v / q0
            else:
                mu += mq[0] * v
                var += v * v / mq[1]
        return mu, var

    def score_posterior(
        self, x: Features, offers: list[OfferRef], offsets: list[float] | None = None
    ) -> tuple[list[float], list[float]]:
        """Each offer's position-1 score: posterior means and standard deviations."""
        means: list[float] = []
        sds: list[float] = []
        for k, offer in enumerate(offers):
            mu, var = self._moments(self._inputs(x, offer, 1), offsets[k] if offsets else 0.0)
            means.append(mu)
            sds.append(math.sqrt(var))
        return means, sds

    def predict_one(
        self, x: Features, offer: OfferRef, position: int = 1, offset: float = 0.0
    ) -> float:
        return _sigmoid(self._mean(self._inputs(x, offer, position), offset))

    def predict_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
    ) -> list[float]:
        return [
            self.predict_one(x, offer, position, offsets[k] if offsets else 0.0)
            for k, offer in enumerate(offers)
        ]

    def sample_one(self, x: Features, offer: OfferRef, rng: random.Random) -> float:
        mu, var = self._moments(self._inputs(x, offer, 1), 0.0)
        return _sigmoid(rng.gauss(mu, math.sqrt(var)))

    def learn_one(
        self, x: Features, offer: OfferRef, position: int, reward: float, offset: float = 0.0
    ) -> None:
        check_feedback(position, reward)
        inputs = self._inputs(x, offer, position)
        w = self._w
        q0 = self.config.prior_precision
        p = _sigmoid(self._mean(inputs, offset))
        g = p - reward  # a fractional reward is its expected gradient
        h = max(p * (1.0 - p), 1e-12)
        inputs[_INTERCEPT] = 1.0
        for name, v in inputs.items():
            mq = w.get(name)
            if mq is None:
                mq = w[name] = [0.0, q0]
            mq[1] += h * v * v
            mq[0] -= g * v / mq[1]
        self._n += 1

    def weights(self) -> dict[str, tuple[float, float]]:
        """Every weight by its ``crossed`` name: (posterior mean, precision)."""
        return {name: (mq[0], mq[1]) for name, mq in self._w.items()}

    def top_features(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` posterior means largest in magnitude."""
        items = [(name, mq[0]) for name, mq in self._w.items()]
        items.sort(key=lambda kv: (-abs(kv[1]), kv[0]))
        return items[:k]

    def to_state(self) -> bytes:
        state = BayesLogisticState(
            kind=self.kind,
            config=self.config,
            n_learned=self._n,
            weights=sorted((name, mq[0], mq[1]) for name, mq in self._w.items()),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, data: bytes) -> Self:
        state = decode_state(data, BayesLogisticState, ModelKind.BAYES_LOGISTIC)
        model = cls(state.config)
        model._w = {name: [m, q] for name, m, q in state.weights}
        model._w.setdefault(_INTERCEPT, [0.0, state.config.prior_precision])
        model._n = state.n_learned
        return model
