"""An online logistic click model over customer features crossed with the offer (River).

``P(click) = sigmoid(w . crossed(x, offer, position) + intercept)``, learned one feedback
event at a time by River's ``linear_model.LogisticRegression`` (plain SGD at a small fixed
rate, L2 on the weights an event touches; the intercept starts at the logit of
``prior_mean``). River was measured against Vowpal Wabbit in ``bench/learn.py``
(``bench/results/learn.json``): the same quality on a synthetic stream with a known truth,
half the cost of scoring 20 candidates, named weights (``top_features``) and a small,
deterministic state that needs no file. SGD at 0.01 was the best of a small grid (SGD
0.005-0.02, AdaGrad 0.02-0.2, Adam); River's FTRL-Proximal was a little better still
(log loss -1.5%) but cost 44 us per ``learn_one``, too close to the 50 us budget.

**Features** (``crossed``), sparse, by name, for the offer ``o`` with topic ``T``:

- ``offer:<o>``, ``topic:<T>``, ``placement:<p>``: indicators (``topic:-`` without a topic);
- ``own.<family>`` and ``own.<family>&offer:<o>`` for the five per-topic families of
  ``learn.features`` (interest, counts, trend, funnel) *of the offer's own topic*: shared
  weights that a new offer benefits from at once, and the offer's own on top;
- ``<f>&topic:<T>`` for every customer feature ``f`` but ``bias``: interest in one topic
  predicting clicks on another, segments, products, lifecycle, device, channel and hour of
  week per topic;
- ``<f>&offer:<o>`` for the indicator features (products, segments, lifecycle, device,
  channel, hour of week);
- ``pos:<p>:<k>`` for positions ``k >= 2`` (capped at ``max_position``).

**Prior as offset**: ``offset`` (``logit(prior) - logit(prior_mean)``, the catalog's
interest prior for this customer and offer) enters as the feature ``offset`` whose weight
starts at 1, so a cold model predicts the catalog's prior and learning corrects it, rather
than starting flat.

**Position bias**: position is a feature; ``predict_one(x, offer)`` (position 1) leaves it out,
so it is the click probability at the top slot, the number to rank by. A position's weight
is its log-odds discount, learned with the rest.

River has no posterior here, so ``sample_one`` is ``predict_one``; explore with
epsilon-greedy or softmax (``learn.explore``). River is deterministic: the same events in the
same order give the same weights; ``to_state`` writes them sorted by name.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Self

import msgspec
from river import linear_model, optim
from river.utils import VectorDict

from nextbest.learn.features import CATEGORICAL_PREFIXES, TOPIC_FEATURES, Features
from nextbest.learn.model import (
    DEFAULT_PRIOR_MEAN,
    ModelKind,
    OfferRef,
    check_feedback,
    decode_state,
)

__all__ = [
    "OFFSET",
    "ContextualConfig",
    "ContextualLogistic",
    "ContextualState",
    "crossed",
    "crossed_many",
]

_Positive = Annotated[float, msgspec.Meta(gt=0.0)]
#: the feature carrying the catalog prior's log-odds (weight 1 at the start)
OFFSET = "offset"
_OWN = tuple((family + ":", "own." + family) for family in TOPIC_FEATURES)


class ContextualConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Learning rates and regularization of ``ContextualLogistic``."""

    lr: _Positive = 0.01
    l2: Annotated[float, msgspec.Meta(ge=0.0)] = 1e-4
    intercept_lr: Annotated[float, msgspec.Meta(ge=0.0)] = 0.01
    prior_mean: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = DEFAULT_PRIOR_MEAN
    max_position: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class ContextualState(msgspec.Struct, frozen=True, kw_only=True):
    kind: ModelKind
    config: ContextualConfig
    n_learned: int
    intercept: float
    optimizer_steps: int
    weights: list[tuple[str, float]]


def _topic_part(x: Features, topic: str | None) -> Features:
    suffix = "&topic:" + (topic or "-")
    return {f + suffix: v for f, v in x.items() if f != "bias"}


def _indicators(x: Features) -> list[tuple[str, float]]:
    return [(f, v) for f, v in x.items() if f.startswith(CATEGORICAL_PREFIXES)]


def _own(
    x: Features,
    offer: OfferRef,
    position: int,
    max_position: int,
    indicators: list[tuple[str, float]],
) -> Features:
    """The offer's own features: everything ``crossed`` holds but the topic crosses."""
    oid = "offer:" + offer.offer_id
    topic = offer.topic
    out: Features = {
        oid: 1.0,
        "topic:" + (topic or "-"): 1.0,
        "placement:" + offer.placement: 1.0,
    }
    if position > 1:
        out[f"pos:{offer.placement}:{min(position, max_position)}"] = 1.0
    suffix = "&" + oid
    if topic:
        for prefix, own in _OWN:
            v = x.get(prefix + topic)
            if v:
                out[own] = v
                out[own + suffix] = v
    for f, v in indicators:
        out[f + suffix] = v
    return out


def _cross(
    x: Features,
    offer: OfferRef,
    position: int,
    max_position: int,
    topic_part: Features,
    indicators: list[tuple[str, float]],
) -> Features:
    out = _own(x, offer, position, max_position, indicators)
    out.update(topic_part)  # disjoint keys: "<f>&topic:<T>"
    return out


def crossed(x: Features, offer: OfferRef, position: int = 1, max_position: int = 20) -> Features:
    """The model's input for customer ``x`` and ``offer`` at ``position`` (see the module)."""
    return _cross(x, offer, position, max_position, _topic_part(x, offer.topic), _indicators(x))


def crossed_many(
    x: Features, offers: list[OfferRef], position: int = 1, max_position: int = 20
) -> list[Features]:
    """``crossed`` for each offer, building each topic's crosses once."""
    indicators = _indicators(x)
    parts: dict[str | None, Features] = {}
    out: list[Features] = []
    for offer in offers:
        part = parts.get(offer.topic)
        if part is None:
            part = parts[offer.topic] = _topic_part(x, offer.topic)
        out.append(_cross(x, offer, position, max_position, part, indicators))
    return out


def _sigmoid(z: float) -> float:
    """River's logistic link, clamped the same way."""
    if z < -30:
        return 0.0
    if z > 30:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class ContextualLogistic:
    """A River logistic regression on ``crossed`` features, behind ``PropensityModel``."""

    kind = ModelKind.CONTEXTUAL

    def __init__(self, config: ContextualConfig | None = None) -> None:
        self.config = config if config is not None else ContextualConfig()
        c = self.config
        self._model: Any = linear_model.LogisticRegression(
            optimizer=optim.SGD(c.lr),
            l2=c.l2,
            intercept_init=_logit(c.prior_mean),
            intercept_lr=c.intercept_lr,
        )
        self._model._weights = VectorDict({OFFSET: 1.0})
        self._n = 0

    @property
    def n_learned(self) -> int:
        return self._n

    @property
    def version(self) -> str:
        return f"{self.kind.value}-{self._n}"

    def _p(self, z: Features) -> float:
        return float(self._model.predict_proba_one(z)[True])

    def predict_one(
        self, x: Features, offer: OfferRef, position: int = 1, offset: float = 0.0
    ) -> float:
        z = crossed(x, offer, position, self.config.max_position)
        if offset:
            z[OFFSET] = offset
        return self._p(z)

    def predict_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
    ) -> list[float]:
        """Scores every offer. The topic crosses (most of the features) are the same for every
        offer of a topic, so their part of the dot product is computed once per topic and
        each offer adds only its own features: the same sum, far fewer lookups."""
        weights = self._model._weights
        base = float(self._model.intercept)
        max_position = self.config.max_position
        indicators = _indicators(x)
        parts: dict[str | None, float] = {}
        out: list[float] = []
        for k, offer in enumerate(offers):
            part = parts.get(offer.topic)
            if part is None:
                part = parts[offer.topic] = float(weights.dot(_topic_part(x, offer.topic)))
            own = _own(x, offer, position, max_position, indicators)
            if offsets is not None and offsets[k]:
                own[OFFSET] = offsets[k]
            z = base + part + float(weights.dot(own))
            out.append(_sigmoid(z))
        return out

    def sample_one(self, x: Features, offer: OfferRef, rng: random.Random) -> float:
        return self.predict_one(x, offer)

    def learn_one(
        self, x: Features, offer: OfferRef, position: int, reward: float, offset: float = 0.0
    ) -> None:
        check_feedback(position, reward)
        z = crossed(x, offer, position, self.config.max_position)
        if offset:
            z[OFFSET] = offset
        if reward in (0.0, 1.0):
            self._model.learn_one(z, reward == 1.0)
        else:  # a fractional reward: a weighted click and a weighted miss
            self._model.learn_one(z, True, w=reward)
            self._model.learn_one(z, False, w=1.0 - reward)
        self._n += 1

    def weights(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self._model.weights.items()}

    @property
    def intercept(self) -> float:
        return float(self._model.intercept)

    def top_features(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` weights largest in magnitude (the intercept is ``(intercept)``)."""
        items = [("(intercept)", self.intercept), *self.weights().items()]
        items.sort(key=lambda kv: (-abs(kv[1]), kv[0]))
        return items[:k]

    def to_state(self) -> bytes:
        state = ContextualState(
            kind=self.kind,
            config=self.config,
            n_learned=self._n,
            intercept=self.intercept,
            optimizer_steps=int(self._model.optimizer.n_iterations),
            weights=sorted(self.weights().items()),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, data: bytes) -> Self:
        state = decode_state(data, ContextualState, ModelKind.CONTEXTUAL)
        model = cls(state.config)
        river = model._model
        river._weights = VectorDict(dict(state.weights))
        river.intercept = state.intercept
        river.optimizer.n_iterations = state.optimizer_steps
        model._n = state.n_learned
        return model
