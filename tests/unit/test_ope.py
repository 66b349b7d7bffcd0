"""Off-policy estimators on small cases worked out by hand."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest

from nextbest.errors import ValidationError
from nextbest.learn import ope
from nextbest.learn.ope import Estimator

# 4 rows, 3 actions, 2 positions. The logging policy is uniform in each position.
ACTION = np.array([0, 1, 2, 1])
POSITION = np.array([0, 0, 1, 1])
REWARD = np.array([1.0, 0.0, 1.0, 1.0])
PSCORE = np.full(4, 1 / 3)
UNIFORM = np.full((4, 3, 2), 1 / 3)
# the candidate: action 0 with 1/2, actions 1 and 2 with 1/4, in either position
CANDIDATE = np.tile(np.array([[0.5, 0.5], [0.25, 0.25], [0.25, 0.25]]), (4, 1, 1))


def logged(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "reward": REWARD,
        "action": ACTION,
        "position": POSITION,
        "pscore": PSCORE,
        "action_dist": CANDIDATE,
    }
    base.update(overrides)
    return base


def test_ips_by_hand() -> None:
    # weights 3/2, 3/4, 3/4, 3/4; weighted rewards 3/2, 0, 3/4, 3/4 -> mean 3/4
    assert ope.ips(**logged()) == pytest.approx(0.75)
    w = ope.importance_weights(
        action=ACTION, pscore=PSCORE, action_dist=CANDIDATE, position=POSITION
    )
    np.testing.assert_allclose(w, [1.5, 0.75, 0.75, 0.75])


def test_snips_by_hand() -> None:
    # mean weight 15/16: 3/4 / (15/16) = 4/5
    assert ope.snips(**logged()) == pytest.approx(0.8)


def test_ips_of_the_logging_policy_is_the_mean_reward() -> None:
    assert ope.ips(**logged(action_dist=UNIFORM)) == pytest.approx(REWARD.mean())
    assert ope.snips(**logged(action_dist=UNIFORM)) == pytest.approx(REWARD.mean())


def test_snips_is_invariant_to_scaling_pscore() -> None:
    for scale in (0.5, 0.1, 0.9):
        scaled = ope.snips(**logged(pscore=PSCORE * scale))
        assert scaled == pytest.approx(ope.snips(**logged()), rel=1e-12)
    assert ope.ips(**logged(pscore=PSCORE * 0.5)) == pytest.approx(2 * ope.ips(**logged()))


def test_dr_with_a_perfect_reward_model_is_the_true_value() -> None:
    rng = np.random.default_rng(7)
    truth = rng.uniform(size=(4, 3, 2))  # expected reward of each action in each position
    reward = truth[np.arange(4), ACTION, POSITION]  # noiseless outcomes
    true_value = float(np.mean((CANDIDATE * truth)[np.arange(4), :, POSITION].sum(axis=1)))
    value = ope.dr(**logged(reward=reward), estimated_rewards_by_reg_model=truth)
    assert value == pytest.approx(true_value, abs=1e-15)


def test_dr_with_a_zero_reward_model_is_ips() -> None:
    zero = np.zeros_like(CANDIDATE)
    assert ope.dr(**logged(), estimated_rewards_by_reg_model=zero) == pytest.approx(0.75)


def test_round_rewards_average_to_the_estimate() -> None:
    q = np.full_like(CANDIDATE, 0.5)
    for estimator in Estimator:
        rounds = ope.round_rewards(estimator, **logged(), estimated_rewards_by_reg_model=q)
        assert rounds.shape == (4,)
        result = ope.estimate(
            estimator, **logged(), estimated_rewards_by_reg_model=q, random_state=1
        )
        assert float(rounds.mean()) == result.value


def test_single_position_needs_no_position() -> None:
    dist = CANDIDATE[:, :, :1]
    assert ope.ips(reward=REWARD, action=ACTION, pscore=PSCORE, action_dist=dist) == pytest.approx(
        np.mean(REWARD * dist[np.arange(4), ACTION, 0] / PSCORE)
    )


def test_effective_sample_size() -> None:
    assert ope.effective_sample_size([2.0, 2.0, 2.0]) == pytest.approx(3.0)
    assert ope.effective_sample_size([1.0, 1.0, 2.0]) == pytest.approx(16 / 6)
    assert ope.effective_sample_size([0.0, 5.0, 0.0]) == pytest.approx(1.0)
    assert ope.effective_sample_size([0.0, 0.0]) == 0.0
    result = ope.estimate(Estimator.IPS, **logged(), random_state=0)
    assert result.effective_sample_size == pytest.approx(3.75**2 / (1.5**2 + 3 * 0.75**2))


def test_estimate_is_frozen_and_serializable() -> None:
    result = ope.estimate(Estimator.SNIPS, **logged(), n_bootstrap=50, random_state=3)
    with pytest.raises(AttributeError):
        result.value = 1.0  # type: ignore[misc]
    decoded = msgspec.json.decode(msgspec.json.encode(result), type=ope.Estimate)
    assert decoded == result
    assert (result.n_rounds, result.n_bootstrap, result.alpha) == (4, 50, 0.05)


def test_bootstrap_is_seeded() -> None:
    a = ope.estimate(Estimator.IPS, **logged(), random_state=42)
    b = ope.estimate(Estimator.IPS, **logged(), random_state=42)
    c = ope.estimate(Estimator.IPS, **logged(), random_state=43)
    assert a == b
    assert (a.ci_lower, a.ci_upper, a.bootstrap_mean) != (c.ci_lower, c.ci_upper, c.bootstrap_mean)
    assert a.ci_lower <= a.bootstrap_mean <= a.ci_upper


def test_bootstrap_replays_randomstate_choice() -> None:
    """obp's procedure: RandomState(seed).choice rows with replacement, mean, percentiles."""
    samples = np.array([0.0, 1.0, 3.0, 7.0, 2.0])
    rng = np.random.RandomState(9)
    means = [np.mean(rng.choice(samples, size=5)) for _ in range(20)]
    expected = (np.mean(means), np.percentile(means, 2.5), np.percentile(means, 97.5))
    got = ope.bootstrap_interval(samples, alpha=0.05, n_bootstrap=20, random_state=9)
    assert got == pytest.approx(expected, abs=0)


def test_bootstrap_of_a_constant_is_the_constant() -> None:
    assert ope.bootstrap_interval(
        [0.25] * 8, alpha=0.1, n_bootstrap=30, random_state=0
    ) == pytest.approx((0.25, 0.25, 0.25))


def test_unsupported_mass_warns() -> None:
    # position 0 logged only actions 0 and 1; position 1 logged 1 and 2.
    # rows 0, 1 (position 0): 1/4 on action 2; rows 2, 3 (position 1): 1/2 on action 0.
    assert ope.unsupported_mass(
        action=ACTION, action_dist=CANDIDATE, position=POSITION
    ) == pytest.approx((0.25 + 0.25 + 0.5 + 0.5) / 4)
    result = ope.estimate(Estimator.IPS, **logged(), random_state=0)
    assert result.unsupported_mass == pytest.approx(0.375)
    assert len(result.warnings) == 1
    assert "37.50%" in result.warnings[0]
    assert "IPS cannot see their rewards" in result.warnings[0]
    q = np.zeros_like(CANDIDATE)
    dr = ope.estimate(Estimator.DR, **logged(), estimated_rewards_by_reg_model=q, random_state=0)
    assert "reward model" in dr.warnings[0]


def test_supported_candidate_has_no_warning() -> None:
    # half and half on what each position logged: 0 and 1 at position 0, 1 and 2 at 1
    dist = np.tile(np.array([[0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]), (4, 1, 1))
    result = ope.estimate(Estimator.IPS, **logged(action_dist=dist), random_state=0)
    assert result.unsupported_mass == 0.0
    assert result.effective_sample_size == pytest.approx(4.0)  # equal weights, 3/2
    assert result.warnings == ()
    uniform = ope.estimate(Estimator.IPS, **logged(action_dist=UNIFORM), random_state=0)
    assert uniform.unsupported_mass == pytest.approx(1 / 3)


def test_small_effective_sample_size_warns() -> None:
    # 200 rows, one position, both actions logged; the candidate agrees with row 0 only
    n = 200
    action = np.zeros(n, dtype=np.int64)
    action[0] = 1
    dist = np.zeros((n, 2, 1))
    dist[0, :, 0] = [0.0, 1.0]
    dist[1:, :, 0] = [1e-6, 1 - 1e-6]
    result = ope.estimate(
        Estimator.IPS,
        reward=np.ones(n),
        action=action,
        pscore=np.full(n, 0.5),
        action_dist=dist,
        random_state=0,
    )
    assert result.unsupported_mass == 0.0
    assert result.effective_sample_size < 0.01 * n
    few, short = result.warnings
    assert "effective sample size" in few
    # and the weights average 0.01: the logs rarely did what the candidate does
    assert short.startswith("the importance weights average 0.010 where the logging")


def test_choices_the_logging_policy_could_not_make_in_their_round_warn() -> None:
    """Thompson sampling's logs: in half the rounds the decision's samples all put action 0
    first (logged with propensity 1), in the other half they split. A candidate that always
    shows action 1 has no unsupported mass (the logs show action 1 there), yet half its
    probability fell where the logging policy could not act: the weights average 0.5."""
    n = 400
    action = np.zeros(n, dtype=np.int64)
    action[200::2] = 1
    pscore = np.where(np.arange(n) < 200, 1.0, 0.5)
    dist = np.zeros((n, 2, 1))
    dist[:, 1, 0] = 1.0
    inputs = {"reward": np.ones(n), "action": action, "pscore": pscore, "action_dist": dist}
    ips = ope.estimate(Estimator.IPS, **inputs, random_state=0)
    assert ips.unsupported_mass == 0.0
    assert ips.value == pytest.approx(0.5)  # the true value is 1: biased low by half
    (warning,) = ips.warnings
    assert warning.startswith("the importance weights average 0.500 where the logging")
    assert "50.0% of the candidate's probability" in warning
    assert warning.endswith("IPS is biased low by about that share")
    q = np.full_like(dist, 1.0)
    dr = ope.estimate(Estimator.DR, **inputs, estimated_rewards_by_reg_model=q, random_state=0)
    assert dr.value == pytest.approx(1.0)
    assert dr.warnings[0].endswith("DR's reward model speaks for them")
    # the logging policy's own choices: weights of 1, nothing to warn about
    own = np.zeros((n, 2, 1))
    own[np.arange(n), action, 0] = 1.0
    fair = ope.estimate(Estimator.IPS, **{**inputs, "action_dist": own}, random_state=0)
    assert "importance weights average" not in " ".join(fair.warnings)


def test_inputs_are_not_mutated() -> None:
    inputs = logged(reward=REWARD.copy(), pscore=PSCORE.copy(), action_dist=CANDIDATE.copy())
    q = np.full_like(CANDIDATE, 0.3)
    before = {k: np.copy(v) for k, v in inputs.items()}
    for estimator in Estimator:
        ope.estimate(estimator, **inputs, estimated_rewards_by_reg_model=q, random_state=0)
    for key, value in before.items():
        np.testing.assert_array_equal(inputs[key], value)
    np.testing.assert_array_equal(q, 0.3)


def test_lists_are_accepted() -> None:
    value = ope.ips(
        reward=REWARD.tolist(),
        action=ACTION.tolist(),
        position=POSITION.tolist(),
        pscore=PSCORE.tolist(),
        action_dist=CANDIDATE.tolist(),
    )
    assert value == pytest.approx(0.75)


def bad_dist() -> np.ndarray:
    dist = CANDIDATE.copy()
    dist[1, 0, 1] = 0.4  # position 1 of row 1 now sums to 0.9
    return dist


def negative_dist() -> np.ndarray:
    dist = CANDIDATE.copy()
    dist[2, 0, 0], dist[2, 1, 0] = -0.25, 1.0
    return dist


@pytest.mark.parametrize(
    ("overrides", "path", "words"),
    [
        ({"reward": REWARD[:3]}, "$.reward", "has 3 rows, action_dist has 4"),
        ({"reward": REWARD.reshape(2, 2)}, "$.reward", "1-dimensional"),
        ({"reward": [1.0, np.nan, 0.0, 0.0]}, "$.reward[1]", "finite"),
        ({"action": ACTION[:2]}, "$.action", "has 2 rows"),
        ({"action": ACTION.astype(float)}, "$.action", "integers"),
        ({"action": [0, 3, 1, 1]}, "$.action[1]", "[0, 3)"),
        ({"action": [0, -1, 1, 1]}, "$.action[1]", "[0, 3)"),
        ({"position": None}, "$.position", "required"),
        ({"position": [0, 0, 2, 1]}, "$.position[2]", "[0, 2)"),
        ({"pscore": [0.5, 0.5, 0.0, 0.5]}, "$.pscore[2]", "(0, 1]"),
        ({"pscore": [0.5, -0.1, 0.5, 0.5]}, "$.pscore[1]", "(0, 1]"),
        ({"pscore": [0.5, 0.5, 0.5, 1.5]}, "$.pscore[3]", "(0, 1]"),
        ({"pscore": PSCORE[:3]}, "$.pscore", "has 3 rows"),
        ({"action_dist": CANDIDATE[0]}, "$.action_dist", "shape"),
        ({"action_dist": np.zeros((0, 3, 2))}, "$.action_dist", "empty"),
        ({"action_dist": bad_dist()}, "$.action_dist[1]", "position 1 sum to"),
        ({"action_dist": negative_dist()}, "$.action_dist[2][0][0]", ">= 0"),
        ({"action_dist": np.full((4, 3, 2), "x")}, "$.action_dist", "numeric"),
    ],
)
def test_bad_input_names_the_field(overrides: dict[str, Any], path: str, words: str) -> None:
    for estimator in (ope.ips, ope.snips):
        with pytest.raises(ValidationError) as caught:
            estimator(**logged(**overrides))
        assert caught.value.path == path
        assert words in caught.value.message


def test_bad_reward_model_names_the_field() -> None:
    field = "$.estimated_rewards_by_reg_model"
    with pytest.raises(ValidationError) as caught:
        ope.dr(**logged(), estimated_rewards_by_reg_model=np.zeros((4, 3, 1)))
    assert caught.value.path == field
    with pytest.raises(ValidationError) as caught:
        ope.estimate(Estimator.DR, **logged(), random_state=0)
    assert caught.value.path == field
    q = np.zeros_like(CANDIDATE)
    q[3, 2, 1] = np.inf
    with pytest.raises(ValidationError) as caught:
        ope.dr(**logged(), estimated_rewards_by_reg_model=q)
    assert caught.value.path == field + "[3][2][1]"


def test_snips_without_any_agreement_is_an_error() -> None:
    dist = np.zeros((4, 3, 2))
    dist[:, 0, :] = 1.0
    dist[0] = [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]  # row 0 logged action 0 at position 0
    assert ope.ips(**logged(action_dist=dist)) == 0.0
    with pytest.raises(ValidationError) as caught:
        ope.snips(**logged(action_dist=dist))
    assert caught.value.path == "$.action_dist"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"alpha": 0.0}, "$.alpha"),
        ({"alpha": 1.0}, "$.alpha"),
        ({"n_bootstrap": 0}, "$.n_bootstrap"),
    ],
)
def test_bad_bootstrap_settings(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ope.estimate(Estimator.IPS, **logged(), random_state=0, **kwargs)
    assert caught.value.path == path
