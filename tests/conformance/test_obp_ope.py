"""nextbest's IPS, SNIPS and DR equal obp 0.4.1's on the Open Bandit Dataset sample.

The data was made by ``bench/conformance/obp_ope.py`` with obp itself (see its docstring and
``data/obp_ope/CREDITS.md``); this test does not need obp.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nextbest.learn import ope
from nextbest.learn.ope import Estimator

DATA = Path(__file__).parent / "data" / "obp_ope"
SPEC_VERSION = 1
TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def logged() -> dict[str, np.ndarray]:
    """The inputs as obp saw them: the stored BernoulliTS row tiled over the rounds, and the
    reward model's per-context table indexed by each row's context."""
    with np.load(DATA / "inputs.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    n = arrays["action"].shape[0]
    return {
        "reward": arrays["reward"],
        "action": arrays["action"],
        "position": arrays["position"],
        "pscore": arrays["pscore"],
        "action_dist": np.tile(arrays["action_dist_row"], (n, 1, 1)),
        "estimated_rewards_by_reg_model": arrays["reward_model_table"][arrays["context_index"]],
    }


def test_spec_and_shapes(expected: dict[str, Any], logged: dict[str, np.ndarray]) -> None:
    assert expected["spec_version"] == SPEC_VERSION
    assert expected["reference"] == {"package": "obp", "version": "0.4.1"}
    dataset = expected["dataset"]
    shape = (dataset["n_rounds"], dataset["n_actions"], dataset["len_list"])
    assert shape == (10_000, 80, 3)
    assert logged["action_dist"].shape == shape
    assert logged["estimated_rewards_by_reg_model"].shape == shape
    for name in ("reward", "action", "position", "pscore"):
        assert logged[name].shape == (shape[0],), name


def _point(estimator: Estimator, logged: dict[str, np.ndarray]) -> float:
    base = {k: v for k, v in logged.items() if k != "estimated_rewards_by_reg_model"}
    if estimator is Estimator.IPS:
        return ope.ips(**base)
    if estimator is Estimator.SNIPS:
        return ope.snips(**base)
    return ope.dr(**logged)


@pytest.mark.parametrize("estimator", list(Estimator))
def test_point_estimate_equals_obp(
    estimator: Estimator, expected: dict[str, Any], logged: dict[str, np.ndarray]
) -> None:
    obp = expected["estimators"][estimator.value]["estimate_policy_value"]
    assert _point(estimator, logged) == pytest.approx(obp, rel=0, abs=TOLERANCE)
    rounds = ope.round_rewards(estimator, **logged)
    assert float(rounds.mean()) == pytest.approx(obp, rel=0, abs=TOLERANCE)


@pytest.mark.parametrize("estimator", list(Estimator))
def test_bootstrap_interval_equals_obp(
    estimator: Estimator, expected: dict[str, Any], logged: dict[str, np.ndarray]
) -> None:
    boot = expected["bootstrap"]
    obp = expected["estimators"][estimator.value]
    result = ope.estimate(
        estimator,
        **logged,
        alpha=boot["alpha"],
        n_bootstrap=boot["n_bootstrap_samples"],
        random_state=boot["random_state"],
    )
    interval = obp["estimate_interval"]
    assert result.value == pytest.approx(obp["estimate_policy_value"], rel=0, abs=TOLERANCE)
    assert result.bootstrap_mean == pytest.approx(interval["mean"], rel=0, abs=TOLERANCE)
    assert result.ci_lower == pytest.approx(interval["lower"], rel=0, abs=TOLERANCE)
    assert result.ci_upper == pytest.approx(interval["upper"], rel=0, abs=TOLERANCE)


def test_random_logs_support_every_action(logged: dict[str, np.ndarray]) -> None:
    """The random logging policy showed all 80 items in all 3 positions: nothing unsupported,
    and BernoulliTS's weights leave a healthy effective sample size."""
    result = ope.estimate(Estimator.IPS, **logged, n_bootstrap=10, random_state=0)
    assert result.unsupported_mass == 0.0
    n = logged["reward"].shape[0]
    assert ope.ESS_WARNING_SHARE * n < result.effective_sample_size <= n
    assert result.warnings == ()
