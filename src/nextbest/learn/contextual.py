"""An online logistic click model over customer features crossed with the offer.

``P(click) = sigmoid(w . crossed(x, offer, position) + intercept)``, learned one feedback
event at a time by plain SGD at a small fixed rate with L2 on the weights an event touches
(the intercept starts at the logit of ``prior_mean``), each offer's level by a Newton step
(below); otherwise exactly River's
``linear_model.LogisticRegression(optimizer=optim.SGD(lr), l2=l2, intercept_lr=...)``, which
``tests/conformance/test_river_contextual.py`` holds this model to (same weights to 1e-12 on
a stream of crossed features). River was measured against Vowpal Wabbit in
``bench/learn.py`` (``bench/results/learn.json``): the same quality on a synthetic stream
with a known truth, half the cost of scoring 20 candidates, named weights
(``top_features``) and a small, deterministic state. SGD at 0.01 was the best of a small
grid (SGD 0.005-0.02, AdaGrad 0.02-0.2, Adam); FTRL-Proximal was a little better still (log
loss -1.5%) but cost 44 us per ``learn_one``, too close to the 50 us budget.

Why not call River itself on the hot path: River takes a flat ``{name: value}`` dict, so
every candidate meant building ~50 crossed names and a dict for each (River's own scoring
was 12.6 us per candidate, ``learn_one`` 26 us + 8 us of crossing). This class keeps the
same weight vector in per-topic and per-offer views (``<f>&topic:<T>`` as
``by_topic[T][f]``, ``<f>&offer:<o>`` as ``by_offer[o][f]``) and reads the customer's
features directly: half the cost of scoring, a third of learning (BENCHMARKS.md). The state
still names every weight as ``crossed`` does, so it reads the same either way.

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
- ``pos:<p>:<k>`` for positions ``k >= 2`` (capped at ``max_position``);
- ``hist.<f>`` and ``hist.<f>&offer:<o>`` for the candidate's own history with this
  customer (``extra``: ``learn.features.offer_history``: impressions so far and this week,
  days since the last, a click, impressions x own-topic interest): fatigue, shared by every
  offer and the offer's own on top. The customer features are the same for every
  candidate; these are not, so they come apart (``extras`` in ``predict_many``).

**Each offer's level learns from its own evidence.** SGD at 0.01 moves ``offer:<o>`` by
``0.01 x p`` per miss: at a click rate of 1 %, a catalog prior wrong by 5x needs months of
misses to correct. With ``level_precision`` > 0 (the default, 10) the level takes a Newton
step instead, as a Bayesian logistic model's weight does (Chapelle & Li 2011, the online
Laplace approximation): its precision starts at ``level_precision`` and grows by ``p (1 -
p)`` per event, and the level moves by ``-gradient / precision``. Early misses then move it
about ten times as far as SGD, and less as evidence accumulates; a click on a fresh level
moves it by 0.1 (SGD: 0.01). Why 10 and not less (BENCHMARKS.md, "Closing nextbest's own
gap"): 5 learned a little faster in the zoo, but then nine forged clicks an hour from one
network (the trust bound, ``learn.volume``) lift a fresh offer's click estimate tenfold and
reorder other customers' offers. Every other weight keeps River's SGD step (the conformance
test holds it with ``level_precision`` 0). The level's precision gives the model a
posterior, ``N(level, 1 / precision)``, for Thompson sampling (``posterior_many``).

**Prior as offset**: ``offset`` (``logit(prior) - logit(prior_mean)``, the catalog's
interest prior for this customer and offer) enters as the feature ``offset`` whose weight
starts at 1, so a cold model predicts the catalog's prior and learning corrects it, rather
than starting flat.

**Position bias**: position is a feature; ``predict_one(x, offer)`` (position 1) leaves it out,
so it is the click probability at the top slot, the number to rank by. A position's weight
is its log-odds discount, learned with the rest.

``sample_one`` is ``predict_one``; Thompson sampling draws from ``posterior_many``
(``learn.learner``); epsilon-greedy or softmax explore from the scores (``learn.explore``).
Learning is deterministic: the same events in the same order give the same weights;
``to_state`` writes them sorted by name.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Self

import msgspec

from nextbest.catalog.model import ModelKind
from nextbest.learn.features import CATEGORICAL_PREFIXES, TOPIC_FEATURES, Features
from nextbest.learn.model import (
    DEFAULT_PRIOR_MEAN,
    OfferRef,
    check_feedback,
    decode_state,
)

__all__ = [
    "HISTORY",
    "OFFER_CROSS",
    "OFFSET",
    "OWN",
    "TOPIC_CROSS",
    "ContextualConfig",
    "ContextualLogistic",
    "ContextualState",
    "crossed",
    "split_crossed",
]

_Positive = Annotated[float, msgspec.Meta(gt=0.0)]
#: the feature carrying the catalog prior's log-odds (weight 1 at the start)
OFFSET = "offset"
OWN = tuple((family + ":", "own." + family) for family in TOPIC_FEATURES)
#: the prefix of the candidate's own history weights, ``hist.<f>`` and ``hist.<f>&offer:<o>``
HISTORY = "hist."
TOPIC_CROSS = "&topic:"
OFFER_CROSS = "&offer:"
#: River's default ``clip_gradient``
_CLIP = 1e12
#: feature names whose kind is remembered (past it they are classified each time)
_MAX_KNOWN_NAMES = 65_536


class ContextualConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Learning rates and regularization of ``ContextualLogistic``."""

    lr: _Positive = 0.01
    l2: Annotated[float, msgspec.Meta(ge=0.0)] = 1e-4
    intercept_lr: Annotated[float, msgspec.Meta(ge=0.0)] = 0.01
    prior_mean: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = DEFAULT_PRIOR_MEAN
    max_position: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    #: the prior precision of each offer's level ``offer:<o>``, learned by a Newton step on
    #: its own evidence (0: by SGD like every other weight; see the module docstring)
    level_precision: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0


class ContextualState(msgspec.Struct, frozen=True, kw_only=True):
    kind: ModelKind
    config: ContextualConfig
    n_learned: int
    intercept: float
    optimizer_steps: int
    weights: list[tuple[str, float]]
    #: each offer level's precision (``level_precision`` plus its evidence), sorted by name
    precisions: list[tuple[str, float]] = []


def crossed(
    x: Features,
    offer: OfferRef,
    position: int = 1,
    max_position: int = 20,
    extra: Features | None = None,
) -> Features:
    """The model's input for customer ``x`` and ``offer`` at ``position``, by name (see the
    module); ``extra``: the candidate's own history (``learn.features.offer_history``). The
    model never builds it: it reads the same weights through its per-topic and per-offer
    views; this is the feature map the River reference learns on."""
    oid = "offer:" + offer.offer_id
    topic = offer.topic
    out: Features = {
        oid: 1.0,
        "topic:" + (topic or "-"): 1.0,
        "placement:" + offer.placement: 1.0,
    }
    if position > 1:
        out[f"pos:{offer.placement}:{min(position, max_position)}"] = 1.0
    mine = OFFER_CROSS + offer.offer_id
    if topic:
        for prefix, own in OWN:
            v = x.get(prefix + topic)
            if v:
                out[own] = v
                out[own + mine] = v
    for f, v in x.items():
        if f.startswith(CATEGORICAL_PREFIXES):
            out[f + mine] = v
    if extra:
        for f, v in extra.items():
            out[HISTORY + f] = v
            out[HISTORY + f + mine] = v
    crosses = TOPIC_CROSS + (topic or "-")
    out.update((f + crosses, v) for f, v in x.items() if f != "bias")  # disjoint keys
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


def _log_loss_gradient(click: bool, z: float) -> float:
    """River's ``optim.losses.Log().gradient`` for a label in {0, 1} and a raw score ``z``."""
    y = 1 if click else -1
    yz = z * y
    if yz > 18.0:
        return math.exp(-yz) * -y
    if yz < -18.0:
        return float(-y)
    return -y / (math.exp(yz) + 1.0)


def split_crossed(name: str) -> tuple[str, str, str] | None:
    """``"<f>&topic:<T>"`` -> ``("topic", T, f)``, ``"<f>&offer:<o>"`` -> ``("offer", o, f)``;
    None for a weight of its own. Topic and offer ids never hold ``&`` (catalog ids), so the
    last marker is the cross even if a feature name held one."""
    t = name.rfind(TOPIC_CROSS)
    o = name.rfind(OFFER_CROSS)
    if t < 0 and o < 0:
        return None
    if t > o:
        return "topic", name[t + len(TOPIC_CROSS) :], name[:t]
    return "offer", name[o + len(OFFER_CROSS) :], name[:o]


class ContextualLogistic:
    """Logistic regression by SGD on ``crossed`` features, behind ``PropensityModel``.

    The weights are kept in three views of the one weight vector: ``<f>&topic:<T>`` as
    ``by_topic[T][f]``, ``<f>&offer:<o>`` as ``by_offer[o][f]``, the rest flat, so scoring
    and learning read ``x`` directly instead of building crossed names. The arithmetic is
    River's ``LogisticRegression(optimizer=SGD(lr), l2=l2, intercept_lr=...)`` step for step
    (``tests/conformance/test_river_contextual.py`` holds it to River's weights), but for
    the offers' levels with ``level_precision`` > 0 (a Newton step, the module docstring)."""

    kind = ModelKind.CONTEXTUAL
    uses_features = True

    def __init__(self, config: ContextualConfig | None = None) -> None:
        self.config = config if config is not None else ContextualConfig()
        self._intercept = _logit(self.config.prior_mean)
        self._flat: dict[str, float] = {OFFSET: 1.0}
        self._by_topic: dict[str, dict[str, float]] = {}
        self._by_offer: dict[str, dict[str, float]] = {}
        self._steps = 0
        self._n = 0
        #: ``offer:<o>`` -> the precision of that level (``level_precision`` + evidence)
        self._precision: dict[str, float] = {}
        #: feature name -> is an indicator (``CATEGORICAL_PREFIXES``): a dict lookup instead of
        #: a prefix scan per feature; bounded, the names are a small vocabulary
        self._is_indicator: dict[str, bool] = {}

    @property
    def n_learned(self) -> int:
        return self._n

    @property
    def known_feature_names(self) -> int:
        """Feature names whose kind (indicator or value) is remembered: bounded."""
        return len(self._is_indicator)

    @property
    def version(self) -> str:
        return f"{self.kind.value}-{self._n}"

    def _indicators(self, x: Features) -> list[tuple[str, float]]:
        """The indicator features of ``x`` (products, segments, lifecycle, device, ...)."""
        known = self._is_indicator
        out: list[tuple[str, float]] = []
        for f, v in x.items():
            flag = known.get(f)
            if flag is None:
                flag = self._classify(f)
            if flag:
                out.append((f, v))
        return out

    def _classify(self, f: str) -> bool:
        flag = f.startswith(CATEGORICAL_PREFIXES)
        if len(self._is_indicator) < _MAX_KNOWN_NAMES:
            self._is_indicator[f] = flag
        return flag

    def _topic_terms(self, x: Features, topic: str | None) -> tuple[float, list[tuple[str, float]]]:
        """What every offer of ``topic`` shares: the topic crosses, ``topic:<T>`` and the shared
        ``own.<family>`` weights; and the own-topic values the offer's own weights multiply."""
        flat = self._flat.get
        s = flat("topic:" + (topic or "-"), 0.0)
        weights = self._by_topic.get(topic or "-")
        if weights:
            get = weights.get
            for f, v in x.items():
                if f != "bias":
                    s += v * get(f, 0.0)
        own: list[tuple[str, float]] = []
        if topic:
            for prefix, name in OWN:
                value = x.get(prefix + topic)
                if value:
                    own.append((name, value))
                    s += value * flat(name, 0.0)
        return s, own

    def _offer_terms(
        self,
        offer: OfferRef,
        position: int,
        offset: float,
        own: list[tuple[str, float]],
        indicators: list[tuple[str, float]],
        extra: Features | None = None,
    ) -> float:
        """The offer's own weights: id, placement, position, own-topic and indicator crosses,
        and the candidate's history (shared and the offer's own)."""
        flat = self._flat.get
        per_offer = self._by_offer.get(offer.offer_id)
        s = flat("offer:" + offer.offer_id, 0.0) + flat("placement:" + offer.placement, 0.0)
        if position > 1:
            s += flat(f"pos:{offer.placement}:{min(position, self.config.max_position)}", 0.0)
        if extra:
            for f, v in extra.items():
                s += v * flat(HISTORY + f, 0.0)
        if per_offer is not None:
            mine = per_offer.get
            for f, v in own:
                s += v * mine(f, 0.0)
            for f, v in indicators:
                s += v * mine(f, 0.0)
            if extra:
                for f, v in extra.items():
                    s += v * mine(HISTORY + f, 0.0)
        if offset:
            s += offset * flat(OFFSET, 0.0)
        return s

    def _z(
        self, x: Features, offer: OfferRef, position: int, offset: float, extra: Features | None
    ) -> float:
        shared, own = self._topic_terms(x, offer.topic)
        return (
            self._intercept
            + shared
            + self._offer_terms(offer, position, offset, own, self._indicators(x), extra)
        )

    def predict_one(
        self,
        x: Features,
        offer: OfferRef,
        position: int = 1,
        offset: float = 0.0,
        extra: Features | None = None,
    ) -> float:
        return _sigmoid(self._z(x, offer, position, offset, extra))

    def predict_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
        extras: list[Features] | None = None,
    ) -> list[float]:
        """Scores every offer. Most of the features (the topic crosses, the shared own-topic
        weights) are the same for every offer of a topic, so their part of the dot product is
        computed once per topic and each offer adds only its own weights."""
        return [_sigmoid(z) for z in self._scores(x, offers, position, offsets, extras)]

    def posterior_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
        extras: list[Features] | None = None,
    ) -> tuple[list[float], list[float]]:
        """Each offer's score (log-odds) and its spread for Thompson sampling: the standard
        deviation of the offer's level, ``1 / sqrt(precision)`` (the other weights are point
        estimates); 0 while levels learn by SGD (``level_precision`` 0)."""
        means = self._scores(x, offers, position, offsets, extras)
        h0 = self.config.level_precision
        if not h0:
            return means, [0.0] * len(offers)
        get = self._precision.get
        return means, [get("offer:" + o.offer_id, h0) ** -0.5 for o in offers]

    def _scores(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int,
        offsets: list[float] | None,
        extras: list[Features] | None,
    ) -> list[float]:
        indicators = self._indicators(x)
        topics: dict[str | None, tuple[float, list[tuple[str, float]]]] = {}
        base = self._intercept
        out: list[float] = []
        for k, offer in enumerate(offers):
            terms = topics.get(offer.topic)
            if terms is None:
                terms = topics[offer.topic] = self._topic_terms(x, offer.topic)
            offset = offsets[k] if offsets is not None else 0.0
            extra = extras[k] if extras is not None else None
            z = base + terms[0]
            out.append(z + self._offer_terms(offer, position, offset, terms[1], indicators, extra))
        return out

    def sample_one(self, x: Features, offer: OfferRef, rng: random.Random) -> float:
        return self.predict_one(x, offer)

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
        if reward in (0.0, 1.0):
            self._step(x, offer, position, offset, reward == 1.0, 1.0, extra)
        else:  # a fractional reward: a weighted click and a weighted miss
            self._step(x, offer, position, offset, True, reward, extra)
            self._step(x, offer, position, offset, False, 1.0 - reward, extra)
        self._n += 1

    def _step(
        self,
        x: Features,
        offer: OfferRef,
        position: int,
        offset: float,
        click: bool,
        weight: float,
        extra: Features | None = None,
    ) -> None:
        """One SGD step on the log loss: River's ``LogisticRegression.learn_one``, in two
        passes over ``x`` (the score, classifying the features on the way; the update)."""
        c = self.config
        lr, l2 = c.lr, c.l2
        flat = self._flat
        flat_get = flat.get
        oid = offer.offer_id
        topic = offer.topic
        tkey = topic or "-"
        # the weights of their own, each for a feature of value 1
        ones = ["offer:" + oid, "topic:" + tkey, "placement:" + offer.placement]
        if position > 1:
            ones.append(f"pos:{offer.placement}:{min(position, c.max_position)}")
        own: list[tuple[str, float]] = []
        if topic:
            for prefix, name in OWN:
                value = x.get(prefix + topic)
                if value:
                    own.append((name, value))
        crosses = self._by_topic.get(tkey)
        known = self._is_indicator
        indicators: list[tuple[str, float]] = []
        # the score, as _z sums it, with the indicators noted on the way
        z = flat_get("topic:" + tkey, 0.0)
        cross_get = crosses.get if crosses else None
        for f, v in x.items():
            if f == "bias":
                continue
            if cross_get is not None:
                z += v * cross_get(f, 0.0)
            flag = known.get(f)
            if flag is None:
                flag = self._classify(f)
            if flag:
                indicators.append((f, v))
        for name, v in own:
            z += v * flat_get(name, 0.0)
        z = self._intercept + z + self._offer_terms(offer, position, offset, own, indicators, extra)
        g = _log_loss_gradient(click, z) * weight
        g = max(-_CLIP, min(_CLIP, g))
        self._intercept -= c.intercept_lr * g
        if c.level_precision:
            # the offer's level: a Newton step on its own evidence (precision += p (1 - p))
            level = ones.pop(0)
            p = _sigmoid(z)
            h = self._precision.get(level, c.level_precision) + weight * p * (1.0 - p)
            self._precision[level] = h
            flat[level] = flat_get(level, 0.0) - g / h
        # the update: w -= lr * (x * g + l2 * w) for every weight the event touches
        for name in ones:
            w = flat_get(name, 0.0)
            flat[name] = w - lr * (g + l2 * w)
        mine = self._by_offer.get(oid)
        if mine is None:
            mine = self._by_offer[oid] = {}
        mine_get = mine.get
        for name, v in own:
            w = flat_get(name, 0.0)
            flat[name] = w - lr * (v * g + l2 * w)
            w = mine_get(name, 0.0)
            mine[name] = w - lr * (v * g + l2 * w)
        if offset:
            w = flat_get(OFFSET, 0.0)
            flat[OFFSET] = w - lr * (offset * g + l2 * w)
        if crosses is None:
            crosses = self._by_topic[tkey] = {}
        cross_get = crosses.get
        for f, v in x.items():
            if f != "bias":
                w = cross_get(f, 0.0)
                crosses[f] = w - lr * (v * g + l2 * w)
        for f, v in indicators:
            w = mine_get(f, 0.0)
            mine[f] = w - lr * (v * g + l2 * w)
        if extra:
            for f, v in extra.items():
                name = HISTORY + f
                w = flat_get(name, 0.0)
                flat[name] = w - lr * (v * g + l2 * w)
                w = mine_get(name, 0.0)
                mine[name] = w - lr * (v * g + l2 * w)
        self._steps += 1

    def weights(self) -> dict[str, float]:
        """Every weight by its ``crossed`` name."""
        out = dict(self._flat)
        for topic, weights in self._by_topic.items():
            suffix = TOPIC_CROSS + topic
            out.update((f + suffix, v) for f, v in weights.items())
        for oid, weights in self._by_offer.items():
            suffix = OFFER_CROSS + oid
            out.update((f + suffix, v) for f, v in weights.items())
        return out

    @property
    def intercept(self) -> float:
        return self._intercept

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
            intercept=self._intercept,
            optimizer_steps=self._steps,
            weights=sorted(self.weights().items()),
            precisions=sorted(self._precision.items()),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, data: bytes) -> Self:
        state = decode_state(data, ContextualState, ModelKind.CONTEXTUAL)
        model = cls(state.config)
        model._flat = {}
        for name, v in state.weights:
            cross = split_crossed(name)
            if cross is None:
                model._flat[name] = v
            elif cross[0] == "topic":
                model._by_topic.setdefault(cross[1], {})[cross[2]] = v
            else:
                model._by_offer.setdefault(cross[1], {})[cross[2]] = v
        model._intercept = state.intercept
        model._steps = state.optimizer_steps
        model._n = state.n_learned
        model._precision = dict(state.precisions)
        return model
