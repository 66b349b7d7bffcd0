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
worth), whose propensities are exact shares of seeded posterior samples like the Beta model's.

Deterministic: the same events in the same order give the same state; ``to_state`` writes
the weights sorted by name.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Self

import msgspec

from nextbest.catalog.model import ModelKind
from nextbest.learn.contextual import OFFER_CROSS, OWN, TOPIC_CROSS, split_crossed
from nextbest.learn.features import CATEGORICAL_PREFIXES, Features
from nextbest.learn.model import DEFAULT_PRIOR_MEAN, OfferRef, check_feedback, decode_state

__all__ = ["BayesLogistic", "BayesLogisticConfig", "BayesLogisticState", "sigmoid"]

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


def sigmoid(z: float) -> float:
    """The logistic function, its argument clipped to +-30."""
    if z < -_Z_CLIP:
        z = -_Z_CLIP
    elif z > _Z_CLIP:
        z = _Z_CLIP
    return 1.0 / (1.0 + math.exp(-z))


class BayesLogistic:
    """Online Bayesian logistic regression (diagonal Laplace) on ``crossed`` features.

    The weights are kept as the contextual model keeps them, in three views of one vector:
    ``<f>&topic:<T>`` as ``by_topic[T][f]``, ``<f>&offer:<o>`` as ``by_offer[o][f]``, the
    rest flat; each weight is ``[mean, precision]``. Scoring reads the customer's features
    directly, and the part every offer of a topic shares is summed once per topic.
    """

    kind = ModelKind.BAYES_LOGISTIC
    uses_features = True

    def __init__(self, config: BayesLogisticConfig | None = None) -> None:
        self.config = config if config is not None else BayesLogisticConfig()
        c = self.config
        p0 = c.prior_mean
        #: name -> [mean, precision]; the intercept is ``(intercept)``
        self._flat: dict[str, list[float]] = {
            _INTERCEPT: [math.log(p0 / (1.0 - p0)), c.prior_precision]
        }
        self._by_topic: dict[str, dict[str, list[float]]] = {}
        self._by_offer: dict[str, dict[str, list[float]]] = {}
        self._n = 0

    @property
    def n_learned(self) -> int:
        return self._n

    @property
    def version(self) -> str:
        return f"{self.kind.value}-{self._n}"

    # ---------------------------------------------------------------- the inputs
    def _ones(self, offer: OfferRef, position: int) -> list[str]:
        """The offer's own indicators: id, topic, placement, position below the first."""
        out = [
            "offer:" + offer.offer_id,
            "topic:" + (offer.topic or "-"),
            "placement:" + offer.placement,
        ]
        if position > 1:
            out.append(f"pos:{offer.placement}:{min(position, self.config.max_position)}")
        return out

    @staticmethod
    def _own(x: Features, topic: str | None) -> list[tuple[str, float]]:
        """``own.<family>`` values: the customer's features of the offer's own topic."""
        if not topic:
            return []
        out: list[tuple[str, float]] = []
        for prefix, name in OWN:
            value = x.get(prefix + topic)
            if value:
                out.append((name, value))
        return out

    @staticmethod
    def _indicators(x: Features) -> list[tuple[str, float]]:
        return [(f, v) for f, v in x.items() if f.startswith(CATEGORICAL_PREFIXES)]

    # ---------------------------------------------------------------- scoring
    def _topic_moments(self, x: Features, topic: str | None) -> tuple[float, float]:
        """Mean and variance of the topic crosses' part of the score."""
        weights = self._by_topic.get(topic or "-")
        prior_var = 1.0 / self.config.prior_precision
        mu = var = 0.0
        get = weights.get if weights else None
        for f, v in x.items():
            if f == "bias":
                continue
            mq = get(f) if get is not None else None
            if mq is None:
                var += v * v * prior_var
            else:
                mu += mq[0] * v
                var += v * v / mq[1]
        return mu, var

    def _offer_moments(
        self,
        offer: OfferRef,
        position: int,
        own: list[tuple[str, float]],
        indicators: list[tuple[str, float]],
    ) -> tuple[float, float]:
        """Mean and variance of the rest: intercept, the offer's indicators and crosses."""
        prior_var = 1.0 / self.config.prior_precision
        flat = self._flat.get
        mine = self._by_offer.get(offer.offer_id)
        mine_get = mine.get if mine else None
        b = flat(_INTERCEPT)
        assert b is not None
        mu, var = b[0], 1.0 / b[1]
        terms: list[tuple[list[float] | None, float]] = [
            (flat(name), 1.0) for name in self._ones(offer, position)
        ]
        for name, v in own:
            terms.append((flat(name), v))
            terms.append((mine_get(name) if mine_get else None, v))
        for f, v in indicators:
            terms.append((mine_get(f) if mine_get else None, v))
        for mq, v in terms:
            if mq is None:
                var += v * v * prior_var
            else:
                mu += mq[0] * v
                var += v * v / mq[1]
        return mu, var

    def posterior_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
    ) -> tuple[list[float], list[float]]:
        """Each offer's score at ``position``: posterior means and standard deviations."""
        indicators = self._indicators(x)
        topics: dict[str | None, tuple[float, float, list[tuple[str, float]]]] = {}
        means: list[float] = []
        sds: list[float] = []
        for k, offer in enumerate(offers):
            shared = topics.get(offer.topic)
            if shared is None:
                shared = topics[offer.topic] = (
                    *self._topic_moments(x, offer.topic),
                    self._own(x, offer.topic),
                )
            mu, var = self._offer_moments(offer, position, shared[2], indicators)
            means.append(mu + shared[0] + (offsets[k] if offsets else 0.0))
            sds.append(math.sqrt(var + shared[1]))
        return means, sds

    def score_posterior(
        self, x: Features, offers: list[OfferRef], offsets: list[float] | None = None
    ) -> tuple[list[float], list[float]]:
        """Each offer's position-1 score: posterior means and standard deviations."""
        return self.posterior_many(x, offers, 1, offsets)

    def predict_one(
        self,
        x: Features,
        offer: OfferRef,
        position: int = 1,
        offset: float = 0.0,
        extra: Features | None = None,
    ) -> float:
        return self.predict_many(x, [offer], position, [offset])[0]

    def predict_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
        extras: list[Features] | None = None,
    ) -> list[float]:
        means, _ = self.posterior_many(x, offers, position, offsets)
        return [sigmoid(mu) for mu in means]

    def sample_one(self, x: Features, offer: OfferRef, rng: random.Random) -> float:
        (mu,), (sd,) = self.posterior_many(x, [offer])
        return sigmoid(rng.gauss(mu, sd))

    # ---------------------------------------------------------------- learning
    def learn_one(
        self,
        x: Features,
        offer: OfferRef,
        position: int,
        reward: float,
        offset: float = 0.0,
        extra: Features | None = None,
    ) -> None:
        check_feedback(position, reward)
        (mu,), _ = self.posterior_many(x, [offer], position, [offset])
        p = sigmoid(mu)
        g = p - reward  # a fractional reward is its expected gradient
        h = max(p * (1.0 - p), 1e-12)
        q0 = self.config.prior_precision

        def step(weights: dict[str, list[float]], name: str, v: float) -> None:
            mq = weights.get(name)
            if mq is None:
                mq = weights[name] = [0.0, q0]
            mq[1] += h * v * v
            mq[0] -= g * v / mq[1]

        flat = self._flat
        step(flat, _INTERCEPT, 1.0)
        for name in self._ones(offer, position):
            step(flat, name, 1.0)
        mine = self._by_offer.setdefault(offer.offer_id, {})
        for name, v in self._own(x, offer.topic):
            step(flat, name, v)
            step(mine, name, v)
        for f, v in self._indicators(x):
            step(mine, f, v)
        crosses = self._by_topic.setdefault(offer.topic or "-", {})
        for f, v in x.items():
            if f != "bias":
                step(crosses, f, v)
        self._n += 1

    # ---------------------------------------------------------------- reading, state
    def weights(self) -> dict[str, tuple[float, float]]:
        """Every weight by its ``crossed`` name: (posterior mean, precision)."""
        out = {name: (mq[0], mq[1]) for name, mq in self._flat.items()}
        for topic, weights in self._by_topic.items():
            suffix = TOPIC_CROSS + topic
            out.update((f + suffix, (mq[0], mq[1])) for f, mq in weights.items())
        for oid, weights in self._by_offer.items():
            suffix = OFFER_CROSS + oid
            out.update((f + suffix, (mq[0], mq[1])) for f, mq in weights.items())
        return out

    def top_features(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` posterior means largest in magnitude."""
        items = [(name, mq[0]) for name, mq in self.weights().items()]
        items.sort(key=lambda kv: (-abs(kv[1]), kv[0]))
        return items[:k]

    def to_state(self) -> bytes:
        state = BayesLogisticState(
            kind=self.kind,
            config=self.config,
            n_learned=self._n,
            weights=sorted((name, m, q) for name, (m, q) in self.weights().items()),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, data: bytes) -> Self:
        state = decode_state(data, BayesLogisticState, ModelKind.BAYES_LOGISTIC)
        model = cls(state.config)
        for name, m, q in state.weights:
            cross = split_crossed(name)
            if cross is None:
                model._flat[name] = [m, q]
            elif cross[0] == "topic":
                model._by_topic.setdefault(cross[1], {})[cross[2]] = [m, q]
            else:
                model._by_offer.setdefault(cross[1], {})[cross[2]] = [m, q]
        model._n = state.n_learned
        return model
