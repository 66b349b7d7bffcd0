"""Beta-Bernoulli click models per (offer, placement), with empirical-Bayes priors and a
position-based click model; Thompson sampling draws from the posteriors.

**Relevance.** Each arm, an (offer, placement), has a click probability ``r`` when it is
examined, with posterior ``Beta(a, b)``::

    a = mu * s + C          b = max((1 - mu) * s + N - C, 0.001)

``C`` is the sum of the arm's rewards, ``N`` the sum of ``theta_k`` over its impressions
(``k`` the position of each): the effective number of examinations of the position-based
model, the statistic of PBM-UCB (Lagree, Vernade and Cappe, "Multiple-play bandits in the
position-based model", NeurIPS 2016), ``C / N`` being a consistent estimate of ``r``. At
position 1 ``theta_1 = 1`` and this is the exact Beta-Bernoulli update. Lower down it is an
approximation of the exact posterior (a Beta times ``(1 - theta_k r)`` factors): a miss at
position 3 weighs ``theta_3`` of a miss at position 1, and a click there, where fewer
customers look, moves the mean further up than a click at position 1.

**Prior (empirical Bayes).** Arms are pooled by (placement, topic, kind). A pool's prior
``Beta(mu * s, (1 - mu) * s)`` comes from its members by the method of moments: over the
members with at least ``min_exams`` examinations (rates ``p_j = C_j / N_j``), ``mu`` is the
mean of ``p_j`` and the between-offer variance is their sample variance less the binomial
noise ``mu (1 - mu) mean(1 / N_j)``; then ``s = mu (1 - mu) / variance - 1``, clamped to
``[min_strength, max_strength]`` (``max_strength`` when the variance is all noise). With
fewer than two such members ``mu`` is the pool's clicks over examinations shrunk towards
the global prior (``prior_mean``, ``prior_strength``) and ``s = prior_strength``. So a new
offer starts from its siblings; an offer in an empty pool from the global prior. Each arm's
own counts are in its pool's moments too (the usual empirical-Bayes shortcut). Pools are
recomputed lazily, in a fixed order (arms sorted by key), after their members learn.

**Examination (position bias).** ``P(click | shown at k) = theta_k * r`` with
``theta_1 = 1``. Arms keep their rewards and impressions per position, so ``N`` is always
computed with the placement's current ``theta``. ``theta`` is refitted by EM over every
arm of the placement after its 100th, 200th, 400th ... event, then every 1,000th
(``first_refresh``, doubling up to ``refresh_every``), ``em_iterations`` steps from the
current curve. One step::

    r_a     = the posterior mean of arm a under theta
    theta_k = (theta0_k * E + clicks_k) / (E + sum_a r_a * views_a,k),  within [min_examination, 1]

``clicks_k / sum_a r_a views_a,k`` is the share of the clicks expected from examined
impressions at ``k`` that happened; with ``theta_1`` fixed at 1 the pair (``theta``, ``r``)
is identified, and the lower relevance of what ranks lower is not taken for position bias,
as a plain ratio of click-through rates by position would. The prior ``theta0_k = 1 /
log2(k + 1)`` (the DCG discount) weighs as ``E = exam_prior_strength`` expected clicks.
Positions past ``max_position`` count as ``max_position``. Between refits ``theta`` is
fixed, so a learn costs O(positions) and a refit O(arms x positions), every 1,000 events.

``predict_one(x, offer, k) = theta_k * a / (a + b)``; ``sample_one`` draws ``r`` from
``Beta(a, b)`` with the ``random.Random`` passed in. Features are not used.
"""

from __future__ import annotations

import bisect
import math
import random
from typing import Annotated, Self

import msgspec

from nextbest.catalog.model import ModelKind, OfferKind
from nextbest.errors import ValidationError
from nextbest.learn.features import Features
from nextbest.learn.model import OfferRef, check_feedback, decode_state

__all__ = ["BayesConfig", "BayesState", "BetaBernoulli"]

_B_FLOOR = 1e-3
_MU_MIN = 1e-4
_MU_MAX = 1.0 - 1e-4
_STALE = -1

_Positive = Annotated[float, msgspec.Meta(gt=0.0)]
_Share = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
_Count = Annotated[int, msgspec.Meta(ge=1)]


class BayesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Priors and limits of ``BetaBernoulli`` (see the module docstring)."""

    prior_mean: _Share = 0.02
    prior_strength: _Positive = 50.0
    min_strength: _Positive = 5.0
    max_strength: _Positive = 500.0
    min_exams: _Positive = 20.0
    exam_prior_strength: _Positive = 10.0
    min_examination: _Share = 0.05
    max_position: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    first_refresh: _Count = 100
    refresh_every: _Count = 1_000
    em_iterations: _Count = 3


class _ArmState(msgspec.Struct, array_like=True, frozen=True, gc=False):
    offer_id: str
    placement: str
    topic: str | None
    kind: OfferKind
    clicks: list[float]
    views: list[int]


class _PlacementState(msgspec.Struct, array_like=True, frozen=True, gc=False):
    placement: str
    theta: list[float]
    events: int
    next_refresh: int


class BayesState(msgspec.Struct, frozen=True, kw_only=True):
    """The serialized model: per-position counts, and each placement's examination."""

    kind: ModelKind
    config: BayesConfig
    n_learned: int
    arms: list[_ArmState]
    placements: list[_PlacementState]


_PoolKey = tuple[str, str, str]
_ArmKey = tuple[str, str]


class _Placement:
    """A placement's examination curve (``theta[k - 1]``) and the schedule of its refits."""

    __slots__ = ("events", "keys", "next_refresh", "theta", "version")

    def __init__(self, next_refresh: int) -> None:
        self.theta: list[float] = [1.0]
        self.keys: list[_ArmKey] = []  # sorted: sums run in one fixed order
        self.events = 0
        self.next_refresh = next_refresh
        self.version = 0  # bumped when theta changes: cached counts go stale


class _Pool:
    __slots__ = ("dirty", "keys", "place", "prior", "stamp")

    def __init__(self, place: _Placement, prior: tuple[float, float]) -> None:
        self.place = place
        self.keys: list[_ArmKey] = []  # sorted: moments are summed in one fixed order
        self.prior = prior
        self.dirty = False
        self.stamp = place.version


class _Arm:
    __slots__ = ("c", "clicks", "n", "offer", "place", "pool", "stamp", "views")

    def __init__(self, offer: OfferRef, place: _Placement, pool: _Pool) -> None:
        self.offer = offer
        self.place = place
        self.pool = pool
        self.clicks: list[float] = []  # rewards per position
        self.views: list[int] = []  # impressions per position
        self.c = 0.0  # cached: clicks, and examinations under the placement's theta
        self.n = 0.0
        self.stamp = _STALE


def _dcg_discount(position: int) -> float:
    return 1.0 / math.log2(position + 1.0)


class BetaBernoulli:
    """Beta posteriors per (offer, placement); see the module docstring for the model."""

    kind = ModelKind.BAYES
    #: learns per (offer, placement) alone: the learner passes no customer features
    uses_features = False

    def __init__(self, config: BayesConfig | None = None) -> None:
        self.config = config if config is not None else BayesConfig()
        c = self.config
        self._global = (c.prior_mean * c.prior_strength, (1.0 - c.prior_mean) * c.prior_strength)
        self._theta0 = [1.0] + [
            max(c.min_examination, _dcg_discount(k)) for k in range(2, c.max_position + 1)
        ]
        self._arms: dict[_ArmKey, _Arm] = {}
        self._pools: dict[_PoolKey, _Pool] = {}
        self._places: dict[str, _Placement] = {}
        self._n = 0

    # ------------------------------------------------------------------ reading
    @property
    def n_learned(self) -> int:
        return self._n

    @property
    def version(self) -> str:
        return f"{self.kind.value}-{self._n}"

    def theta(self, placement: str, position: int) -> float:
        """The examination probability of ``position`` in ``placement`` (1 at the top)."""
        return self._theta(self._places.get(placement), position)

    def examination(self, placement: str, positions: int) -> list[float]:
        """``theta_1 .. theta_positions`` of ``placement``."""
        place = self._places.get(placement)
        return [self._theta(place, k) for k in range(1, positions + 1)]

    def prior(self, offer: OfferRef) -> tuple[float, float]:
        """The (a, b) a new offer like ``offer`` would start from: its pool's prior."""
        pool = self._pools.get(_pool_key(offer))
        return self._global if pool is None else self._pool_prior(pool)

    def posterior(self, offer: OfferRef) -> tuple[float, float]:
        """(a, b) of the Beta posterior of ``offer``'s relevance in its placement."""
        arm = self._arms.get((offer.offer_id, offer.placement))
        if arm is None:
            return self.prior(offer)
        return self._posterior(arm)

    def predict_one(
        self,
        x: Features,
        offer: OfferRef,
        position: int = 1,
        offset: float = 0.0,
        extra: Features | None = None,
    ) -> float:
        a, b = self.posterior(offer)
        theta = 1.0 if position <= 1 else self.theta(offer.placement, position)
        return theta * a / (a + b)

    def predict_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
        extras: list[Features] | None = None,
    ) -> list[float]:
        return [self.predict_one(x, offer, position) for offer in offers]

    def sample_one(self, x: Features, offer: OfferRef, rng: random.Random) -> float:
        a, b = self.posterior(offer)
        return rng.betavariate(a, b)

    def top_features(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` arms with the highest posterior mean, as ``offer@placement``."""
        means = []
        for (offer_id, placement), arm in self._arms.items():
            a, b = self._posterior(arm)
            means.append((f"{offer_id}@{placement}", a / (a + b)))
        means.sort(key=lambda m: (-m[1], m[0]))
        return means[:k]

    # ------------------------------------------------------------------ learning
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
        arm = self._arms.get((offer.offer_id, offer.placement))
        if arm is None:
            arm = self._add_arm(offer)
        k = min(position, self.config.max_position)
        views, clicks = arm.views, arm.clicks
        while len(views) < k:
            views.append(0)
            clicks.append(0.0)
        views[k - 1] += 1
        clicks[k - 1] += reward
        arm.stamp = _STALE
        arm.pool.dirty = True
        place = arm.place
        place.events += 1
        if place.events >= place.next_refresh:
            self._refit_examination(place)
            place.next_refresh = place.events + min(place.events, self.config.refresh_every)
        self._n += 1

    def _add_arm(self, offer: OfferRef) -> _Arm:
        place = self._places.get(offer.placement)
        if place is None:
            place = self._places[offer.placement] = _Placement(self.config.first_refresh)
        pkey = _pool_key(offer)
        pool = self._pools.get(pkey)
        if pool is None:
            pool = self._pools[pkey] = _Pool(place, self._global)
        key = (offer.offer_id, offer.placement)
        arm = self._arms[key] = _Arm(offer, place, pool)
        bisect.insort(pool.keys, key)
        bisect.insort(place.keys, key)
        return arm

    def _theta(self, place: _Placement | None, position: int) -> float:
        if position <= 1:
            return 1.0
        k = min(position, self.config.max_position)
        if place is not None and k <= len(place.theta):
            return place.theta[k - 1]
        return self._theta0[k - 1]

    def _counts(self, arm: _Arm) -> tuple[float, float]:
        """(rewards, examinations) of ``arm`` under its placement's current theta."""
        place = arm.place
        if arm.stamp != place.version:
            c = n = 0.0
            for k, (ck, vk) in enumerate(zip(arm.clicks, arm.views, strict=True), 1):
                c += ck
                if vk:
                    n += vk * self._theta(place, k)
            arm.c, arm.n, arm.stamp = c, n, place.version
        return arm.c, arm.n

    def _posterior(self, arm: _Arm) -> tuple[float, float]:
        a0, b0 = self._pool_prior(arm.pool)
        c, n = self._counts(arm)
        return a0 + c, max(b0 + n - c, _B_FLOOR)

    def _pool_prior(self, pool: _Pool) -> tuple[float, float]:
        if not pool.dirty and pool.stamp == pool.place.version:
            return pool.prior
        cfg = self.config
        arms = self._arms
        clicks = exams = sum_p = sum_p2 = sum_inv = 0.0
        n = 0
        for key in pool.keys:
            c, e = self._counts(arms[key])
            clicks += c
            exams += e
            if e >= cfg.min_exams:
                p = min(c / e, 1.0)
                n += 1
                sum_p += p
                sum_p2 += p * p
                sum_inv += 1.0 / e
        if n >= 2:
            mu = min(_MU_MAX, max(_MU_MIN, sum_p / n))
            variance = (sum_p2 - sum_p * sum_p / n) / (n - 1)
            between = variance - mu * (1.0 - mu) * sum_inv / n
            s = mu * (1.0 - mu) / between - 1.0 if between > 0.0 else cfg.max_strength
            s = min(cfg.max_strength, max(cfg.min_strength, s))
        else:
            mu = (cfg.prior_mean * cfg.prior_strength + clicks) / (cfg.prior_strength + exams)
            mu = min(_MU_MAX, max(_MU_MIN, mu))
            s = cfg.prior_strength
        pool.prior = (mu * s, (1.0 - mu) * s)
        pool.dirty = False
        pool.stamp = pool.place.version
        return pool.prior

    def _refit_examination(self, place: _Placement) -> None:
        """A few EM steps for theta over every arm of the placement (module docstring)."""
        cfg = self.config
        arms = [self._arms[key] for key in place.keys]
        positions = max(len(arm.views) for arm in arms)
        if positions < 2:
            return
        clicks = [0.0] * positions
        for arm in arms:
            for k, ck in enumerate(arm.clicks):
                clicks[k] += ck
        priors = [self._pool_prior(arm.pool) for arm in arms]
        theta = [self._theta(place, k) for k in range(1, positions + 1)]
        strength, floor = cfg.exam_prior_strength, cfg.min_examination
        for _ in range(cfg.em_iterations):
            expected = [0.0] * positions
            for arm, (a0, b0) in zip(arms, priors, strict=True):
                c = n = 0.0
                for k, (ck, vk) in enumerate(zip(arm.clicks, arm.views, strict=True)):
                    c += ck
                    n += vk * theta[k]
                relevance = (a0 + c) / (a0 + c + max(b0 + n - c, _B_FLOOR))
                for k in range(1, len(arm.views)):
                    expected[k] += relevance * arm.views[k]
            theta = [1.0] + [
                max(floor, min(1.0, (self._theta0[k] * strength + clicks[k]) / (strength + e)))
                for k, e in enumerate(expected[1:], 1)
            ]
        place.theta = theta
        place.version += 1

    # ------------------------------------------------------------------ state
    def to_state(self) -> bytes:
        arms = [
            _ArmState(
                offer_id=arm.offer.offer_id,
                placement=arm.offer.placement,
                topic=arm.offer.topic,
                kind=arm.offer.kind,
                clicks=arm.clicks,
                views=arm.views,
            )
            for _, arm in sorted(self._arms.items())
        ]
        places = [
            _PlacementState(
                p, self._places[p].theta, self._places[p].events, self._places[p].next_refresh
            )
            for p in sorted(self._places)
        ]
        state = BayesState(
            kind=self.kind, config=self.config, n_learned=self._n, arms=arms, placements=places
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, data: bytes) -> Self:
        state = decode_state(data, BayesState, ModelKind.BAYES)
        model = cls(state.config)
        for p in state.placements:
            place = model._places[p.placement] = _Placement(p.next_refresh)
            place.theta = list(p.theta)
            place.events = p.events
        for s in state.arms:
            if len(s.clicks) != len(s.views):
                raise ValidationError("clicks and views differ in length", "$.state.arms")
            offer = OfferRef(offer_id=s.offer_id, placement=s.placement, topic=s.topic, kind=s.kind)
            arm = model._add_arm(offer)
            arm.clicks, arm.views = list(s.clicks), list(s.views)
            arm.pool.dirty = True
        model._n = state.n_learned
        return model


def _pool_key(offer: OfferRef) -> _PoolKey:
    return (offer.placement, offer.topic or "", offer.kind.value)
