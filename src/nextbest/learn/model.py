"""The propensity-model interface, in River's style: ``predict_one`` / ``learn_one``.

A propensity model estimates the probability that a customer clicks an offer shown in a
placement, from the customer's features (``learn.features``) and the offer
(``OfferRef``). Two kinds, chosen per placement in the catalog:

- ``bayes`` (``learn.bayes.BetaBernoulli``): a Beta posterior per (offer, placement) with
  empirical-Bayes priors pooled by (placement, topic, kind); ignores the features;
  Thompson sampling explores;
- ``contextual`` (``learn.contextual.ContextualLogistic``): an online logistic regression
  over the features crossed with the offer; epsilon-greedy or softmax explores;
- ``bayes_logistic`` (``learn.bayes_logistic.BayesLogistic``): a Bayesian logistic
  regression over the same crossed features, with a Gaussian posterior per weight;
  Thompson sampling explores where it is unsure.

Both handle position bias (see each module); ``predict_one(x, offer)`` at position 1 is the
click probability of an examined offer, the number to rank by. Models are deterministic
functions of the feedback sequence: replaying the same ``learn_one`` calls (the decision
log) yields a byte-identical ``to_state()``, and ``from_state(to_state())`` continues
exactly where the model was.

``version`` is ``"<kind>-<n_learned>"``: it names a model's state within one lineage (the
decision log a model was built from), which is what a decision records.
"""

from __future__ import annotations

import random
from typing import Protocol, TypeVar

import msgspec

from nextbest.catalog.model import ModelKind, OfferKind
from nextbest.errors import ValidationError
from nextbest.learn.features import Features

__all__ = [
    "ModelInfo",
    "OfferRef",
    "PropensityModel",
    "check_feedback",
    "decode_state",
    "describe",
    "load_model",
    "new_model",
]


#: a fresh model's click rate where nothing else is known (a banner's typical CTR)
DEFAULT_PRIOR_MEAN = 0.02


class OfferRef(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a model knows of an offer: its id, where it is shown, its topic and kind."""

    offer_id: str
    placement: str
    topic: str | None = None
    kind: OfferKind = OfferKind.COMMERCIAL
    campaign_id: str | None = None


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``nextbest models``."""

    kind: ModelKind
    version: str
    n_learned: int
    state_bytes: int
    top_features: list[tuple[str, float]]


class PropensityModel(Protocol):
    """A click-propensity model. Implementations: ``BetaBernoulli``, ``ContextualLogistic``."""

    @property
    def kind(self) -> ModelKind: ...

    @property
    def uses_features(self) -> bool:
        """Whether ``learn_one`` reads the customer features ``x`` (if not, the learner
        passes an empty dict and keeps none for waiting views)."""
        ...

    @property
    def n_learned(self) -> int:
        """Feedback events learned from."""
        ...

    @property
    def version(self) -> str:
        """``"<kind>-<n_learned>"``."""
        ...

    def predict_one(
        self,
        x: Features,
        offer: OfferRef,
        position: int = 1,
        offset: float = 0.0,
        extra: Features | None = None,
    ) -> float:
        """P(click) if ``offer`` is shown at ``position`` (1-based) to a customer ``x``.
        ``offset``: the catalog prior's log-odds over the model's base rate (a contextual
        model starts from it; the Bayes model, pooled per offer, ignores it); ``extra``:
        the candidate's own history with the customer (``learn.features.offer_history``;
        models that do not read it ignore it)."""
        ...

    def predict_many(
        self,
        x: Features,
        offers: list[OfferRef],
        position: int = 1,
        offsets: list[float] | None = None,
        extras: list[Features] | None = None,
    ) -> list[float]:
        """``predict_one`` for each offer; cheaper than the loop where a model can share work."""
        ...

    def sample_one(self, x: Features, offer: OfferRef, rng: random.Random) -> float:
        """A draw of the position-1 click probability from the model's posterior (Thompson
        sampling); models without a posterior return ``predict_one``."""
        ...

    def learn_one(
        self,
        x: Features,
        offer: OfferRef,
        position: int,
        reward: float,
        offset: float = 0.0,
        extra: Features | None = None,
    ) -> None:
        """Learn from one impression at ``position`` with ``reward`` in [0, 1] (click = 1);
        ``extra`` as for ``predict_one``."""
        ...

    def top_features(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` largest parameters, by magnitude, with their values."""
        ...

    def to_state(self) -> bytes:
        """The whole state, deterministic bytes (msgpack)."""
        ...


def check_feedback(position: int, reward: float) -> None:
    """Reject a position below 1 or a reward outside [0, 1] (nothing is learned)."""
    if position < 1:
        raise ValidationError(f"position must be at least 1, got {position}", "$.position")
    if not 0.0 <= reward <= 1.0:
        raise ValidationError(f"reward must be within [0, 1], got {reward}", "$.reward")


class _Kinded(Protocol):
    @property
    def kind(self) -> ModelKind: ...


_S = TypeVar("_S", bound=_Kinded)


def decode_state(data: bytes, state_type: type[_S], kind: ModelKind) -> _S:
    """A model's saved state of ``state_type``; ValidationError (``$.state``) otherwise."""
    try:
        state = msgspec.msgpack.decode(data, type=state_type)
    except msgspec.ValidationError as exc:
        raise ValidationError.from_msgspec(exc, "$.state") from exc
    except msgspec.DecodeError as exc:
        raise ValidationError(str(exc), "$.state") from exc
    if state.kind is not kind:
        raise ValidationError(f"not a {kind.value} model state: {state.kind}", "$.state.kind")
    return state


class _Header(msgspec.Struct):
    kind: ModelKind


def new_model(kind: ModelKind) -> PropensityModel:
    """A fresh model of ``kind`` with default settings."""
    if kind is ModelKind.BAYES:
        from nextbest.learn.bayes import BetaBernoulli

        return BetaBernoulli()
    if kind is ModelKind.BAYES_LOGISTIC:
        from nextbest.learn.bayes_logistic import BayesLogistic

        return BayesLogistic()
    from nextbest.learn.contextual import ContextualLogistic  # imports this module

    return ContextualLogistic()


def load_model(state: bytes) -> PropensityModel:
    """The model whose ``to_state()`` gave ``state``, of whichever kind."""
    try:
        kind = msgspec.msgpack.decode(state, type=_Header).kind
    except msgspec.DecodeError as exc:
        raise ValidationError.from_msgspec(exc, "$.state") from exc
    if kind is ModelKind.BAYES:
        from nextbest.learn.bayes import BetaBernoulli

        return BetaBernoulli.from_state(state)
    if kind is ModelKind.BAYES_LOGISTIC:
        from nextbest.learn.bayes_logistic import BayesLogistic

        return BayesLogistic.from_state(state)
    from nextbest.learn.contextual import ContextualLogistic

    return ContextualLogistic.from_state(state)


def describe(model: PropensityModel, k: int = 10) -> ModelInfo:
    """Version, training count, state size and top features, for ``nextbest models``."""
    return ModelInfo(
        kind=model.kind,
        version=model.version,
        n_learned=model.n_learned,
        state_bytes=len(model.to_state()),
        top_features=model.top_features(k),
    )
