"""A periodic batch refit of the contextual click model, bench-side (issue #14, BENCHMARKS.md
"A periodic batch refit of the click model").

``ContextualLogistic`` learns online: one SGD step per feedback event (each offer's level by a
Newton step). "Form or data" found that the same form fitted offline to convergence on ample
data is level with the observable ceiling, while the online model gets 0.875-0.897 of it. This
module asks whether fitting the form to convergence on **the examples the learner has seen so
far** (its own policy's hard clicks and misses) closes that gap.

``Examples`` records each learned event as a sparse row: ``contextual.crossed`` (exactly the
model's input) plus the ``offset`` feature, in ``array`` buffers with a growing name -> column
index (no dict per example kept). ``refit`` minimises

    sum_i weight_i * logloss(y_i, intercept + X_i . w) + lam / 2 * sum_j (w_j - w0_j) ** 2

by L-BFGS-B on a CSR matrix, warm-started from the model's weights, ``w0`` 0 for every weight
but ``offset`` (1, the catalog prior's log-odds taken at face value); the intercept is not
penalised. The fitted weights go back into the model through ``to_state`` / ``from_state``
(each level's precision, the counters and the settings kept); online learning continues from
there. A fractional reward is a click of weight ``reward`` and a miss of weight ``1 - reward``.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.special

from ceiling import Sparse
from nextbest.learn.contextual import (
    OFFSET,
    ContextualLogistic,
    ContextualState,
    crossed,
)
from nextbest.learn.model import OfferRef

__all__ = ["Examples", "Progressive", "RefitStats", "refit", "stats_row"]


class RefitStats(msgspec.Struct, frozen=True):
    """One refit: when (events learned), its size, its cost and how far it moved the model."""

    events: int
    rows: int
    columns: int
    nonzeros: int
    iterations: int
    seconds: float
    loss_before: float
    loss_after: float
    converged: bool
    #: the ``offset`` weight (the catalog prior's log-odds' multiplier) and the intercept,
    #: before and after
    offset: tuple[float, float] = (1.0, 1.0)
    intercept: tuple[float, float] = (0.0, 0.0)


class Examples:
    """Every learned event as a sparse row (``ceiling.Sparse``: the CSR buffers and the name ->
    column index), its label and its weight."""

    def __init__(self) -> None:
        self.columns: dict[str, int] = {}
        self.rows = Sparse(self.columns)
        self.labels = array("d")
        self.weights = array("d")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        """The column names, in column order."""
        return list(self.columns)

    def _row(self, features: Mapping[str, float], label: float, weight: float) -> None:
        self.rows.append({name: value for name, value in features.items() if value})
        self.labels.append(label)
        self.weights.append(weight)

    def add(
        self,
        model: ContextualLogistic,
        x: Mapping[str, float],
        offer: OfferRef,
        position: int,
        reward: float,
        offset: float = 0.0,
        extra: Mapping[str, float] | None = None,
    ) -> None:
        """The event ``model.learn_one`` was given, as the model's own input."""
        features = crossed(dict(x), offer, position, model.config.max_position, extra)
        if offset:
            features[OFFSET] = offset
        if reward in (0.0, 1.0):
            self._row(features, reward, 1.0)
        else:
            self._row(features, 1.0, reward)
            self._row(features, 0.0, 1.0 - reward)

    def matrix(self) -> scipy.sparse.csr_matrix:
        return self.rows.matrix()


class Progressive:
    """Progressive validation: the log loss of each event under the model as it stood just
    before learning it (never trained on), summed per block of ``block`` events."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.losses: list[float] = []
        self.clicks: list[float] = []
        self.events: list[int] = []

    def add(self, p: float, reward: float) -> None:
        p = min(max(p, 1e-12), 1.0 - 1e-12)
        loss = -(reward * math.log(p) + (1.0 - reward) * math.log(1.0 - p))
        if not self.events or self.events[-1] == self.block:
            self.losses.append(0.0)
            self.clicks.append(0.0)
            self.events.append(0)
        self.losses[-1] += loss
        self.clicks[-1] += reward
        self.events[-1] += 1

    def row(self) -> dict[str, Any]:
        """Mean log loss over the run and per block (and each block's events and clicks)."""
        n = sum(self.events)
        return {
            "events": n,
            "log_loss": sum(self.losses) / n if n else None,
            "blocks": [
                {"events": e, "clicks": c, "log_loss": loss / e}
                for e, c, loss in zip(self.events, self.clicks, self.losses, strict=True)
            ],
        }


def penalised_log_loss(
    theta: np.ndarray,
    x: scipy.sparse.csr_matrix,
    y: np.ndarray,
    w: np.ndarray,
    prior: np.ndarray,
    lam: float,
    intercept: bool = True,
) -> tuple[float, np.ndarray]:
    """The penalised weighted log loss and its gradient, ``sum_i w_i logloss(y_i, x_i .
    theta[:-1] + theta[-1]) + lam / 2 |theta[:-1] - prior|^2`` (``y`` may be soft labels);
    ``theta[-1]`` the intercept, not penalised (held where it is with ``intercept`` False:
    its gradient zero). ``form_gap.fit_logistic`` fits with it too."""
    coef, b = theta[:-1], theta[-1]
    z = x @ coef + b
    loss = float(np.dot(w, np.logaddexp(0.0, z) - y * z))
    r = w * (scipy.special.expit(z) - y)
    d = coef - prior
    grad = np.empty_like(theta)
    grad[:-1] = x.T @ r + lam * d
    grad[-1] = r.sum() if intercept else 0.0
    return loss + 0.5 * lam * float(np.dot(d, d)), grad


def refit(
    model: ContextualLogistic,
    examples: Examples,
    lam: float,
    max_iterations: int = 1000,
    intercept: bool = True,
) -> RefitStats:
    """Fit ``model``'s weights to convergence on ``examples`` (the module docstring) and write
    them back into it; ``intercept`` False: the model's intercept kept, the rest fitted."""
    began = time.perf_counter()
    x = examples.matrix()
    y = np.frombuffer(examples.labels, dtype=np.float64)
    w = np.frombuffer(examples.weights, dtype=np.float64)
    names = examples.names
    prior = np.zeros(len(names))
    if OFFSET in examples.columns:
        prior[examples.columns[OFFSET]] = 1.0
    current = model.weights()
    theta0 = np.array([current.get(n, 0.0) for n in names] + [model.intercept])
    before, _ = penalised_log_loss(theta0, x, y, w, prior, lam)
    result = scipy.optimize.minimize(
        penalised_log_loss,
        theta0,
        args=(x, y, w, prior, lam, intercept),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iterations, "gtol": 1e-6, "ftol": 1e-12},
    )
    fitted = dict(current)
    at = examples.columns.get(OFFSET)
    offset_after = float(result.x[at]) if at is not None else current.get(OFFSET, 1.0)
    fitted.update(zip(names, result.x[:-1].tolist(), strict=True))
    _write_back(model, fitted, float(result.x[-1]))
    return RefitStats(
        events=model.n_learned,
        rows=x.shape[0],
        columns=x.shape[1],
        nonzeros=x.nnz,
        iterations=int(result.nit),
        seconds=time.perf_counter() - began,
        loss_before=before,
        loss_after=float(result.fun),
        converged=bool(result.success),
        offset=(current.get(OFFSET, 1.0), offset_after),
        intercept=(float(theta0[-1]), float(result.x[-1])),
    )


def _write_back(model: ContextualLogistic, weights: dict[str, float], intercept: float) -> None:
    """``model`` with ``weights`` and ``intercept``, the rest of its state as it was."""
    state = msgspec.msgpack.decode(model.to_state(), type=ContextualState)
    state = msgspec.structs.replace(state, intercept=intercept, weights=sorted(weights.items()))
    rebuilt = ContextualLogistic.from_state(msgspec.msgpack.encode(state))
    vars(model).update(vars(rebuilt))


def stats_row(stats: list[RefitStats]) -> dict[str, Any]:
    """What a run's refits cost: their number, the last one's size, time per refit."""
    if not stats:
        return {"refits": 0}
    secs = [s.seconds for s in stats]
    last = stats[-1]
    return {
        "refits": len(stats),
        "seconds_mean": sum(secs) / len(secs),
        "seconds_max": max(secs),
        "last_rows": last.rows,
        "last_columns": last.columns,
        "last_nonzeros": last.nonzeros,
        "iterations": [s.iterations for s in stats],
        "converged": all(s.converged for s in stats),
        "each": [msgspec.to_builtins(s) for s in stats],
    }
