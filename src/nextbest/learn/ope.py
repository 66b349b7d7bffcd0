"""Off-policy evaluation: what a candidate policy would have earned on the logged decisions.

The estimators are those of the Open Bandit Pipeline (obp 0.4.1, Saito et al. 2021), computed
the same way, so the numbers agree with obp's to rounding (the conformance suite checks this
on the Open Bandit Dataset). Inputs have obp's shapes; ``n`` logged rows, ``n_actions``
offers, ``len_list`` positions:

- ``reward`` (n,): the logged outcome (click, conversion, value);
- ``action`` (n,): the offer shown, an integer in ``[0, n_actions)``;
- ``position`` (n,): the slot it was shown in, in ``[0, len_list)``; may be None when
  ``len_list`` is 1;
- ``pscore`` (n,): the probability with which the logging policy showed it there;
- ``action_dist`` (n, n_actions, len_list): the candidate's probability of each offer in
  each position of each row; every (row, position) sums to 1;
- ``estimated_rewards_by_reg_model`` (n, n_actions, len_list): a reward model's prediction
  for every offer and position of every row (DR only).

With importance weights ``w_i = action_dist[i, action_i, position_i] / pscore_i``:

- IPS: ``mean(w * reward)``;
- SNIPS: ``mean(w * reward / mean(w))``;
- DR: ``mean(sum_a action_dist[i, a, p_i] * q[i, a, p_i] + w_i * (reward_i - q[i, a_i, p_i]))``.

``estimate`` adds obp's bootstrap interval (``estimate_confidence_interval_by_bootstrap``:
rows resampled with replacement by a seeded ``numpy.random.RandomState``, the mean of the
per-row round rewards taken each time, percentiles of those means; for SNIPS the round
rewards are self-normalized once, on the whole sample, before resampling, as obp does), the
effective sample size of the weights, and how much of the candidate's mass falls where the
logs have no evidence. Pure numpy, no I/O; every bad input is a ``ValidationError`` with the
path of the offending field. ``estimate_rows`` takes the same per-row quantities without the
dense ``action_dist``, for logs of millions of rows.
"""

from __future__ import annotations

import enum
import math
from typing import Any, NamedTuple, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt

from nextbest.errors import ValidationError

__all__ = [
    "ESS_WARNING_SHARE",
    "Estimate",
    "Estimator",
    "bootstrap_interval",
    "dr",
    "effective_sample_size",
    "estimate",
    "estimate_rows",
    "importance_weights",
    "ips",
    "round_rewards",
    "snips",
    "unsupported_mass",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]

#: ``estimate`` warns when the effective sample size is under this share of the rows.
ESS_WARNING_SHARE = 0.01
#: ... and when the importance weights fall short of their expectation (1, less the
#: unsupported mass) by more than this share, and by more than 3 standard errors: the
#: candidate put that share where the logging policy, in that round, could not act
SHORTFALL_WARNING_SHARE = 0.05


class Estimator(enum.StrEnum):
    IPS = "ips"
    SNIPS = "snips"
    DR = "dr"


class Estimate(msgspec.Struct, frozen=True, kw_only=True):
    """One estimator's verdict on a candidate policy.

    ``value`` is the point estimate (obp's ``estimate_policy_value``); ``ci_lower`` and
    ``ci_upper`` the bootstrap interval at level ``1 - alpha`` and ``bootstrap_mean`` the mean
    of the bootstrap means (obp's ``estimate_interval``). ``effective_sample_size`` is
    ``(Σw)² / Σw²`` of the importance weights; ``unsupported_mass`` the average, over rows,
    of the candidate's probability at the row's position on offers that the logs never
    showed in that position. ``warnings`` says in words what to distrust: unsupported mass,
    a small effective sample size, and weights that average well under ``1 -
    unsupported_mass`` (the candidate's choices that the logging policy could not make in
    their round, though the logs show them elsewhere: an item a campaign's exploration
    budget pinned to its greedy slot, or, in Thompson sampling's logs, whose propensities
    are exact given each decision's posterior samples, a choice none of them made).
    """

    estimator: Estimator
    value: float
    ci_lower: float
    ci_upper: float
    bootstrap_mean: float
    alpha: float
    n_bootstrap: int
    random_state: int
    n_rounds: int
    effective_sample_size: float
    unsupported_mass: float
    warnings: tuple[str, ...]


class _Logged(NamedTuple):
    """Validated inputs, as float64 / int64 arrays."""

    reward: FloatArray
    action: IntArray
    position: IntArray
    pscore: FloatArray
    action_dist: FloatArray


def ips(
    *,
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
) -> float:
    """Inverse probability weighting: ``mean(w * reward)``."""
    logged = _validate(reward, action, pscore, action_dist, position)
    return float(_ips_rounds(logged).mean())


def snips(
    *,
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
) -> float:
    """Self-normalized IPS: ``mean(w * reward / mean(w))``."""
    logged = _validate(reward, action, pscore, action_dist, position)
    return float(_snips_rounds(logged).mean())


def dr(
    *,
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    estimated_rewards_by_reg_model: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
) -> float:
    """Doubly robust: the reward model's value of the candidate plus IPS on its residuals."""
    logged = _validate(reward, action, pscore, action_dist, position)
    q_hat = _validate_reward_model(estimated_rewards_by_reg_model, logged.action_dist)
    return float(_dr_rounds(logged, q_hat).mean())


def round_rewards(
    estimator: Estimator,
    *,
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
    estimated_rewards_by_reg_model: npt.ArrayLike | None = None,
) -> FloatArray:
    """The per-row terms whose mean is the estimate (obp's ``_estimate_round_rewards``)."""
    logged = _validate(reward, action, pscore, action_dist, position)
    return _rounds(estimator, logged, estimated_rewards_by_reg_model)


def importance_weights(
    *,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
) -> FloatArray:
    """``action_dist[i, action_i, position_i] / pscore_i`` for every row."""
    dist = _validate_action_dist(action_dist)
    no_reward = np.zeros(dist.shape[0], dtype=np.float64)
    return _weights(_validate_rows(dist, no_reward, action, pscore, position))


def effective_sample_size(weights: npt.ArrayLike) -> float:
    """Kish's ``(Σw)² / Σw²``: n for equal weights, near 1 when one row carries the rest;
    0.0 when every weight is 0."""
    w = np.asarray(weights, dtype=np.float64)
    squares = float(np.square(w).sum())
    return float(w.sum()) ** 2 / squares if squares > 0.0 else 0.0


def unsupported_mass(
    *,
    action: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None = None,
) -> float:
    """The average, over rows, of the candidate's probability at the row's logged position on
    offers that no row of the logs showed in that position. IPS and SNIPS cannot see the
    reward of those offers; DR sees only its reward model's guess."""
    dist = _validate_action_dist(action_dist)
    no_reward = np.zeros(dist.shape[0], dtype=np.float64)
    any_pscore = np.ones(dist.shape[0], dtype=np.float64)
    return _unsupported_mass(_validate_rows(dist, no_reward, action, any_pscore, position))


def bootstrap_interval(
    samples: npt.ArrayLike, *, alpha: float, n_bootstrap: int, random_state: int
) -> tuple[float, float, float]:
    """(mean, lower, upper) exactly as obp's ``estimate_confidence_interval_by_bootstrap``:
    ``RandomState(random_state).choice`` draws each resample, rows with replacement."""
    values = np.asarray(samples, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValidationError("samples must be a non-empty 1-dimensional array", "$.samples")
    if not 0.0 < alpha < 1.0:
        raise ValidationError(f"alpha must be in (0, 1), got {alpha}", "$.alpha")
    if n_bootstrap < 1:
        raise ValidationError(f"n_bootstrap must be positive, got {n_bootstrap}", "$.n_bootstrap")
    rng = np.random.RandomState(random_state)
    means = np.empty(n_bootstrap, dtype=np.float64)
    for b in range(n_bootstrap):
        means[b] = np.mean(rng.choice(values, size=values.shape[0]))
    lower = np.percentile(means, 100 * (alpha / 2))
    upper = np.percentile(means, 100 * (1.0 - alpha / 2))
    return float(np.mean(means)), float(lower), float(upper)


def estimate(
    estimator: Estimator,
    *,
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    random_state: int,
    position: npt.ArrayLike | None = None,
    estimated_rewards_by_reg_model: npt.ArrayLike | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
) -> Estimate:
    """The point estimate with its bootstrap interval, effective sample size, unsupported
    mass and warnings. ``random_state`` seeds the bootstrap: same seed, same interval."""
    logged = _validate(reward, action, pscore, action_dist, position)
    rounds = _rounds(estimator, logged, estimated_rewards_by_reg_model)
    return _verdict(
        estimator,
        rounds,
        _weights(logged),
        _unsupported_mass(logged),
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        random_state=random_state,
    )


def estimate_rows(
    estimator: Estimator,
    *,
    reward: npt.ArrayLike,
    weight: npt.ArrayLike,
    unsupported: npt.ArrayLike,
    random_state: int,
    direct: npt.ArrayLike | None = None,
    factual: npt.ArrayLike | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
) -> Estimate:
    """``estimate`` from per-row quantities, for logs too large for a dense ``action_dist``
    (rows x offers x slots): ``weight`` is ``action_dist[i, action_i, position_i] /
    pscore_i``; ``unsupported`` the candidate's mass at the row's position on actions the
    logs never showed there; for DR, ``direct`` is ``sum_a action_dist[i, a, p_i] * q[i, a,
    p_i]`` and ``factual`` is ``q[i, action_i, p_i]``. The same rounds, interval, effective
    sample size and warnings as ``estimate`` on the dense arrays."""
    w = _as_float(weight, "weight")
    if w.ndim != 1 or w.shape[0] == 0:
        raise ValidationError("weight must be a non-empty 1-dimensional array", "$.weight")
    n = int(w.shape[0])
    _check_finite(w, "weight")
    negative = np.flatnonzero(w < 0.0)
    if negative.size:
        i = int(negative[0])
        raise ValidationError(f"weights must be >= 0, got {w[i]}", f"$.weight[{i}]")
    r = _floats(reward, "reward", n)
    mass = _floats(unsupported, "unsupported", n)
    if estimator is Estimator.IPS:
        rounds: FloatArray = r * w
    elif estimator is Estimator.SNIPS:
        rounds = _self_normalized(r, w)
    else:
        if direct is None or factual is None:
            raise ValidationError("DR needs direct and factual", "$.direct")
        d = _floats(direct, "direct", n)
        q = _floats(factual, "factual", n)
        rounds = d + w * (r - q)
    return _verdict(
        estimator,
        rounds,
        w,
        float(mass.mean()),
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        random_state=random_state,
    )


def _verdict(
    estimator: Estimator,
    rounds: FloatArray,
    weights: FloatArray,
    mass: float,
    *,
    alpha: float,
    n_bootstrap: int,
    random_state: int,
) -> Estimate:
    mean, lower, upper = bootstrap_interval(
        rounds, alpha=alpha, n_bootstrap=n_bootstrap, random_state=random_state
    )
    ess = effective_sample_size(weights)
    n = int(rounds.shape[0])
    return Estimate(
        estimator=estimator,
        value=float(rounds.mean()),
        ci_lower=lower,
        ci_upper=upper,
        bootstrap_mean=mean,
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        random_state=random_state,
        n_rounds=n,
        effective_sample_size=ess,
        unsupported_mass=mass,
        warnings=_warnings(estimator, n, ess, mass, _shortfall(weights, mass)),
    )


def _shortfall(weights: FloatArray, mass: float) -> float:
    """How far the mean importance weight falls short of ``1 - mass`` (its expectation when
    the logging policy could act wherever the logs show it did), or 0 where that is within
    3 standard errors or ``SHORTFALL_WARNING_SHARE``."""
    n = int(weights.shape[0])
    if n < 2:
        return 0.0
    short = 1.0 - mass - float(weights.mean())
    noise = 3.0 * float(weights.std(ddof=1)) / math.sqrt(n)
    return short if short > max(noise, SHORTFALL_WARNING_SHARE) else 0.0


# estimators: the same array operations as obp, in the same order


def _weights(logged: _Logged) -> FloatArray:
    rows = np.arange(logged.action.shape[0])
    chosen: FloatArray = logged.action_dist[rows, logged.action, logged.position]
    return chosen / logged.pscore


def _ips_rounds(logged: _Logged) -> FloatArray:
    return logged.reward * _weights(logged)


def _snips_rounds(logged: _Logged) -> FloatArray:
    return _self_normalized(logged.reward, _weights(logged))


def _self_normalized(reward: FloatArray, w: FloatArray) -> FloatArray:
    norm = w.mean()
    if not norm > 0.0:
        raise ValidationError(
            "SNIPS is undefined: the candidate gives probability 0 to every logged action",
            "$.action_dist",
        )
    rounds: FloatArray = reward * w / norm
    return rounds


def _dr_rounds(logged: _Logged, q_hat: FloatArray) -> FloatArray:
    rows = np.arange(logged.action.shape[0])
    w = _weights(logged)
    q_at_position = q_hat[rows, :, logged.position]
    q_factual = q_hat[rows, logged.action, logged.position]
    pi_at_position = logged.action_dist[rows, :, logged.position]
    direct: FloatArray = np.average(q_at_position, weights=pi_at_position, axis=1)
    return direct + w * (logged.reward - q_factual)


def _rounds(estimator: Estimator, logged: _Logged, q_hat: npt.ArrayLike | None) -> FloatArray:
    if estimator is Estimator.IPS:
        return _ips_rounds(logged)
    if estimator is Estimator.SNIPS:
        return _snips_rounds(logged)
    if q_hat is None:
        raise ValidationError(
            "DR needs estimated_rewards_by_reg_model", "$.estimated_rewards_by_reg_model"
        )
    return _dr_rounds(logged, _validate_reward_model(q_hat, logged.action_dist))


def _unsupported_mass(logged: _Logged) -> float:
    n_actions, len_list = logged.action_dist.shape[1:]
    seen = np.zeros((n_actions, len_list), dtype=bool)
    seen[logged.action, logged.position] = True
    rows = np.arange(logged.action.shape[0])
    at_position = logged.action_dist[rows, :, logged.position]
    unseen = ~seen[:, logged.position].T
    return float((at_position * unseen).sum(axis=1).mean())


def _warnings(
    estimator: Estimator, n: int, ess: float, mass: float, short: float
) -> tuple[str, ...]:
    found: list[str] = []
    if mass > 0.0:
        blind = (
            "only the reward model speaks for them"
            if estimator is Estimator.DR
            else f"{estimator.name} cannot see their rewards and is biased"
        )
        found.append(
            f"{mass:.2%} of the candidate's probability is on actions the logs never showed "
            f"in that position; {blind}"
        )
    if ess < ESS_WARNING_SHARE * n:
        found.append(
            f"effective sample size {ess:.1f} is under {ESS_WARNING_SHARE:.0%} of the {n} "
            "logged rows; a few heavily weighted rows decide the estimate"
        )
    if short > 0.0:
        effect = {
            Estimator.IPS: "IPS is biased low by about that share",
            Estimator.SNIPS: "SNIPS rescales for it, right only if those choices' rewards "
            "are like the rest",
            Estimator.DR: "DR's reward model speaks for them",
        }[estimator]
        found.append(
            f"the importance weights average {1.0 - mass - short:.3f} where the logging "
            f"policy's support gives {1.0 - mass:.3f}: {short:.1%} of the candidate's "
            "probability is on choices the logging policy could not make in their round "
            "(an item a campaign's exploration budget pinned to its slot, or one outside a "
            f"Thompson sampling decision's samples); {effect}"
        )
    return tuple(found)


# validation: the first offending element, by path


def _validate(
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    action_dist: npt.ArrayLike,
    position: npt.ArrayLike | None,
) -> _Logged:
    return _validate_rows(_validate_action_dist(action_dist), reward, action, pscore, position)


def _validate_rows(
    dist: FloatArray,
    reward: npt.ArrayLike,
    action: npt.ArrayLike,
    pscore: npt.ArrayLike,
    position: npt.ArrayLike | None,
) -> _Logged:
    n, n_actions, len_list = dist.shape
    rewards = _floats(reward, "reward", n)
    actions = _indices(action, "action", n, n_actions)
    if position is None:
        if len_list > 1:
            raise ValidationError(
                f"position is required when action_dist has {len_list} positions", "$.position"
            )
        positions = np.zeros(n, dtype=np.int64)
    else:
        positions = _indices(position, "position", n, len_list)
    scores = _floats(pscore, "pscore", n)
    bad = np.flatnonzero(~((scores > 0.0) & (scores <= 1.0)))
    if bad.size:
        i = int(bad[0])
        raise ValidationError(
            f"pscore must be a probability in (0, 1], got {scores[i]}", f"$.pscore[{i}]"
        )
    return _Logged(rewards, actions, positions, scores, dist)


def _validate_action_dist(action_dist: npt.ArrayLike) -> FloatArray:
    dist = _as_float(action_dist, "action_dist")
    if dist.ndim != 3:
        raise ValidationError(
            f"action_dist must have shape (n_rounds, n_actions, len_list), got {dist.shape}",
            "$.action_dist",
        )
    if 0 in dist.shape:
        raise ValidationError(f"action_dist is empty: shape {dist.shape}", "$.action_dist")
    _check_finite(dist, "action_dist")
    negative = np.argwhere(dist < 0.0)
    if negative.size:
        i, a, k = (int(x) for x in negative[0])
        raise ValidationError(
            f"probabilities must be >= 0, got {dist[i, a, k]}", f"$.action_dist[{i}][{a}][{k}]"
        )
    totals = dist.sum(axis=1)
    off = np.argwhere(~np.isclose(totals, 1.0, rtol=1e-05, atol=1e-08))
    if off.size:
        i, k = (int(x) for x in off[0])
        raise ValidationError(
            f"probabilities at position {k} sum to {totals[i, k]!r}, not 1",
            f"$.action_dist[{i}]",
        )
    return dist


def _validate_reward_model(q_hat: npt.ArrayLike, dist: FloatArray) -> FloatArray:
    path = "estimated_rewards_by_reg_model"
    values = _as_float(q_hat, path)
    if values.shape != dist.shape:
        raise ValidationError(
            f"{path} must have the shape of action_dist {dist.shape}, got {values.shape}",
            f"$.{path}",
        )
    _check_finite(values, path)
    return values


def _as_float(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValidationError(f"{name} must be numeric, got dtype {array.dtype}", f"$.{name}")
    return array.astype(np.float64, copy=False)


def _floats(values: npt.ArrayLike, name: str, n: int) -> FloatArray:
    array = _as_float(values, name)
    _check_rows(array, name, n)
    _check_finite(array, name)
    return array


def _indices(values: npt.ArrayLike, name: str, n: int, bound: int) -> IntArray:
    array: npt.NDArray[Any] = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValidationError(f"{name} must be integers, got dtype {array.dtype}", f"$.{name}")
    _check_rows(array, name, n)
    bad = np.flatnonzero((array < 0) | (array >= bound))
    if bad.size:
        i = int(bad[0])
        raise ValidationError(
            f"{name} must be in [0, {bound}) to index action_dist, got {array[i]}",
            f"$.{name}[{i}]",
        )
    return array.astype(np.int64, copy=False)


def _check_rows(array: npt.NDArray[Any], name: str, n: int) -> None:
    if array.ndim != 1:
        raise ValidationError(f"{name} must be 1-dimensional, got shape {array.shape}", f"$.{name}")
    if array.shape[0] != n:
        raise ValidationError(f"{name} has {array.shape[0]} rows, action_dist has {n}", f"$.{name}")


def _check_finite(array: FloatArray, name: str) -> None:
    bad = np.argwhere(~np.isfinite(array))
    if bad.size:
        index = "".join(f"[{int(x)}]" for x in bad[0])
        raise ValidationError(
            f"{name} must be finite, got {array[tuple(bad[0])]}", f"$.{name}{index}"
        )
