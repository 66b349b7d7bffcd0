"""Experiment statistics on counts: counters equal recomputation on every prefix, every count a
campaign can reach gives finite figures or a stated "not enough data" (never an exception or
a NaN), and bad counts are refused with their field's path. Equality with gbstats is
``tests/conformance/test_gbstats.py``."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from nextbest.errors import ValidationError
from nextbest.experiments import statistics as st

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

# ------------------------------------------------------------------ strategies
#: customer counts: the corners (none, one, two), small, and up to a national bank's base
SIZES = hs.one_of(
    hs.sampled_from([0, 1, 2, 3, 5, 10]),
    hs.integers(0, 1_000),
    hs.integers(0, 100_000_000),
)


@hs.composite
def proportion_arm(draw: Any) -> st.ArmCounts:
    """An arm of a proportion KPI, with a covariate that converted before exposure."""
    n = draw(SIZES)

    def some(most: int) -> int:
        return int(draw(hs.one_of(hs.sampled_from([0, 1, most - 1, most]), hs.integers(0, most))))

    conv = max(0, min(n, some(n)))
    pre = max(0, min(n, some(n)))
    low, high = max(0, conv + pre - n), min(conv, pre)
    both = draw(hs.integers(low, high))
    return st.ArmCounts(
        n=n,
        sum=float(conv),
        sum_squares=float(conv),
        pre_sum=float(pre),
        pre_sum_squares=float(pre),
        cross_sum=float(both),
    )


VALUES = hs.one_of(
    hs.sampled_from([0.0, 1.0, -1.0, 0.01, 250.0]),
    hs.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@hs.composite
def mean_arm(draw: Any) -> st.ArmCounts:
    """An arm of a mean KPI: per-customer values (equal ones, negatives, a single customer)
    or raw sums of any consistency."""
    if draw(hs.booleans()):
        values = draw(hs.lists(VALUES, max_size=30))
        pre = draw(hs.lists(VALUES, min_size=len(values), max_size=len(values)))
        if values and draw(hs.booleans()):
            values = [values[0]] * len(values)
        return st.ArmCounts.from_values(np.array(values, dtype=np.float64), np.array(pre))
    n = draw(SIZES)
    big = hs.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)
    return st.ArmCounts(
        n=n,
        sum=draw(big),
        sum_squares=abs(draw(big)),
        pre_sum=draw(big),
        pre_sum_squares=abs(draw(big)),
        cross_sum=draw(big),
    )


ANALYSES = hs.builds(
    st.Analysis,
    difference=hs.sampled_from(list(st.Difference)),
    alpha=hs.sampled_from([0.05, 0.1, 0.01, 0.2]),
    cuped=hs.booleans(),
    sequential=hs.booleans(),
    sequential_tuning=hs.sampled_from([5000.0, 100.0, 1e6]),
    prior=hs.builds(
        st.Prior,
        mean=hs.sampled_from([0.0, 0.05, -0.2]),
        stddev=hs.sampled_from([0.1, 0.01, 1.0]),
        proper=hs.booleans(),
    ),
    inverse=hs.booleans(),
)


def _finite(result: msgspec.Struct) -> None:
    for name in result.__struct_fields__:
        value = getattr(result, name)
        if isinstance(value, float):
            assert math.isfinite(value), (name, result)


def _sound(f: st.FrequentistResult, b: st.BayesianResult) -> None:
    """Finite figures; when computed, in their ranges; when not, gbstats' defaults."""
    _finite(f)
    _finite(b)
    if f.status is st.Status.OK:
        assert 0.0 <= f.p_value <= 1.0
        assert f.ci_lower <= f.estimate <= f.ci_upper
        assert f.stddev > 0
    else:
        assert (f.estimate, f.ci_lower, f.ci_upper, f.p_value, f.stddev) == (0, 0, 0, 1, 0)
    if b.status is st.Status.OK:
        assert 0.0 <= b.chance_to_win <= 1.0
        assert b.ci_lower <= b.estimate <= b.ci_upper
        assert b.stddev > 0
        scale = abs(b.estimate) + b.stddev
        assert b.risk_control >= -1e-9 * scale
        assert b.risk_treatment >= -1e-9 * scale
    else:
        assert (b.estimate, b.ci_lower, b.ci_upper, b.chance_to_win) == (0, 0, 0, 0.5)
        assert (b.risk_control, b.risk_treatment) == (0, 0)


# ------------------------------------------------------------------ every count is answered
@PROPERTY
@given(proportion_arm(), proportion_arm(), ANALYSES)
def test_proportion_counts_give_finite_figures_or_a_reason(
    control: st.ArmCounts, treatment: st.ArmCounts, analysis: st.Analysis
) -> None:
    analysis = msgspec.structs.replace(analysis, kind=st.MetricKind.PROPORTION)
    f = st.frequentist(control, treatment, analysis)
    b = st.bayesian(control, treatment, analysis)
    _sound(f, b)
    if not analysis.cuped:
        # without CUPED the reasons are the plain ones
        if control.sum == 0:
            assert f.status is st.Status.ZERO_BASELINE
        elif control.n in (0, 1) or control.sum == control.n:
            assert f.status is st.Status.ZERO_VARIANCE
        if treatment.n == 0 and control.sum > 0:
            assert b.status is st.Status.NO_UNITS


@PROPERTY
@given(mean_arm(), mean_arm(), ANALYSES)
def test_mean_counts_give_finite_figures_or_a_reason(
    control: st.ArmCounts, treatment: st.ArmCounts, analysis: st.Analysis
) -> None:
    analysis = msgspec.structs.replace(analysis, kind=st.MetricKind.MEAN)
    _sound(st.frequentist(control, treatment, analysis), st.bayesian(control, treatment, analysis))


@PROPERTY
@given(hs.lists(proportion_arm(), min_size=2, max_size=5), ANALYSES, hs.data())
def test_a_campaign_of_several_arms_is_answered(
    arms: list[st.ArmCounts], analysis: st.Analysis, data: hs.DataObject
) -> None:
    weights = data.draw(
        hs.lists(hs.floats(0.0, 10.0), min_size=len(arms), max_size=len(arms)).filter(
            lambda w: sum(w) > 0
        )
    )
    result = st.analyze(arms, weights, analysis)
    assert [c.arm for c in result.comparisons] == list(range(1, len(arms)))
    for c in result.comparisons:
        _sound(c.frequentist, c.bayesian)
    for arm, counts in zip(result.arms, arms, strict=True):
        _finite(arm)
        assert arm.n == counts.n
        assert 0.0 <= arm.mean <= 1.0
    assert 0.0 <= result.srm.p_value <= 1.0
    assert result.srm.flagged == (result.srm.p_value < analysis.srm_threshold)


@PROPERTY
@given(
    hs.lists(hs.integers(0, 10_000_000), min_size=2, max_size=6),
    hs.data(),
)
def test_srm_is_a_probability(users: list[int], data: hs.DataObject) -> None:
    weights = data.draw(
        hs.lists(
            hs.one_of(hs.just(0.0), hs.floats(1e-6, 1.0)), min_size=len(users), max_size=len(users)
        ).filter(lambda w: sum(w) > 0)
    )
    p = st.srm_p_value(users, weights)
    assert 0.0 <= p <= 1.0
    if sum(users) == 0:
        assert p == 1.0


# ------------------------------------------------------------------ the counters
@PROPERTY
@given(
    hs.lists(
        hs.tuples(
            hs.integers(0, 3),  # a customer of the arm (0-3)
            hs.sampled_from(["expose", "revalue"]),
            hs.integers(-5, 50),  # a KPI value in whole units (exact in floats)
        ),
        max_size=40,
    )
)
def test_counters_equal_recomputation_on_every_prefix(
    steps: list[tuple[int, str, int]],
) -> None:
    """Exposing customers and changing their values one event at a time gives the same
    counts as recomputing them from the customers' current values, after every event."""
    pre_of = {0: 3.0, 1: 0.0, 2: 12.5, 3: -1.0}
    value: dict[int, float] = {}
    counts = st.ArmCounts()
    for who, what, amount in steps:
        if what == "expose":
            if who in value:
                continue
            value[who] = 0.0
            counts = counts.expose(pre_of[who])
        elif who in value:
            counts = counts.revalue(value[who], float(amount), pre_of[who])
            value[who] = float(amount)
        ids = sorted(value)
        again = st.ArmCounts.from_values(
            np.array([value[i] for i in ids]), np.array([pre_of[i] for i in ids])
        )
        assert counts == again


def test_counts_merge_like_concatenation() -> None:
    rng = np.random.default_rng(7)
    a_values, b_values = rng.integers(0, 9, 40).astype(float), rng.integers(0, 9, 25).astype(float)
    a_pre, b_pre = rng.integers(0, 4, 40).astype(float), rng.integers(0, 4, 25).astype(float)
    merged = st.ArmCounts.from_values(a_values, a_pre) + st.ArmCounts.from_values(b_values, b_pre)
    assert merged == st.ArmCounts.from_values(
        np.concatenate([a_values, b_values]), np.concatenate([a_pre, b_pre])
    )
    assert st.ArmCounts() + merged == merged


def test_a_proportion_counter_counts_converters_once() -> None:
    counts = st.ArmCounts().expose(pre=1.0).expose().expose(pre=1.0)
    counts = counts.revalue(0.0, 1.0, pre=1.0)  # the first customer converts
    assert counts == st.ArmCounts(
        n=3, sum=1.0, sum_squares=1.0, pre_sum=2.0, pre_sum_squares=2.0, cross_sum=1.0
    )


# ------------------------------------------------------------------ what a marketer reads
def test_a_clear_win_is_significant_everywhere() -> None:
    control = st.ArmCounts(n=20_000, sum=1_000.0, sum_squares=1_000.0)
    treatment = st.ArmCounts(n=20_000, sum=1_200.0, sum_squares=1_200.0)
    fixed = st.frequentist(control, treatment)
    assert fixed.significant
    assert fixed.estimate == pytest.approx(0.2)
    assert fixed.ci_lower > 0
    sequential = st.frequentist(control, treatment, st.Analysis(sequential=True))
    assert sequential.significant
    # the always-valid interval is the price of peeking: wider than the fixed one
    assert sequential.ci_upper - sequential.ci_lower > fixed.ci_upper - fixed.ci_lower
    bayes = st.bayesian(control, treatment)
    assert bayes.chance_to_win > 0.99
    assert bayes.risk_treatment < bayes.risk_control
    # an inverse KPI (complaints): the same numbers are a loss
    worse = st.bayesian(control, treatment, st.Analysis(inverse=True))
    assert worse.chance_to_win < 0.01
    assert worse.risk_control < worse.risk_treatment


def test_swapping_arms_flips_the_absolute_difference() -> None:
    a = st.ArmCounts(n=5_000, sum=260.0, sum_squares=260.0)
    b = st.ArmCounts(n=4_000, sum=240.0, sum_squares=240.0)
    absolute = st.Analysis(difference=st.Difference.ABSOLUTE)
    ab, ba = st.frequentist(a, b, absolute), st.frequentist(b, a, absolute)
    assert ab.estimate == -ba.estimate
    assert ab.p_value == pytest.approx(ba.p_value, abs=1e-12)


def test_cuped_uses_the_covariate_and_narrows_the_interval() -> None:
    rng = np.random.default_rng(11)
    arms = []
    for _ in range(2):
        pre = rng.gamma(2.0, 50.0, 4_000)
        arms.append(st.ArmCounts.from_values(0.8 * pre + rng.normal(0, 20, 4_000), pre))
    plain = st.frequentist(*arms, st.Analysis(kind=st.MetricKind.MEAN))
    cuped = st.frequentist(*arms, st.Analysis(kind=st.MetricKind.MEAN, cuped=True))
    assert plain.theta == 0.0
    assert cuped.theta == pytest.approx(0.8, abs=0.05)
    assert cuped.ci_upper - cuped.ci_lower < 0.5 * (plain.ci_upper - plain.ci_lower)
    assert st.cuped_theta(*arms, st.MetricKind.MEAN) == cuped.theta


def test_every_status_has_words() -> None:
    for status in st.Status:
        assert status.text
    assert st.Status.ZERO_VARIANCE.text.startswith("not enough data")


def test_results_serialize_for_the_faces() -> None:
    arms = [st.ArmCounts(n=1_000, sum=50.0, sum_squares=50.0)] * 3
    result = st.analyze(arms, [1, 1, 1])
    again = msgspec.json.decode(msgspec.json.encode(result), type=st.CampaignResult)
    assert again == result
    assert result.srm.p_value == 1.0


# ------------------------------------------------------------------ bad counts
@pytest.mark.parametrize(
    ("control", "analysis", "path"),
    [
        (st.ArmCounts(n=-1), st.Analysis(), "$.control.n"),
        (st.ArmCounts(n=10, sum=11.0), st.Analysis(), "$.control.sum"),
        (st.ArmCounts(n=10, sum=2.5), st.Analysis(), "$.control.sum"),
        (st.ArmCounts(n=10, sum=float("nan")), st.Analysis(), "$.control.sum"),
        (
            st.ArmCounts(n=10, sum=1.0, sum_squares=-1.0),
            st.Analysis(kind=st.MetricKind.MEAN),
            "$.control.sum_squares",
        ),
        (
            st.ArmCounts(n=10, sum=2.0, pre_sum=3.0, cross_sum=3.0),
            st.Analysis(cuped=True),
            "$.control.cross_sum",
        ),
        (
            st.ArmCounts(n=10, pre_sum=float("inf")),
            st.Analysis(kind=st.MetricKind.MEAN, cuped=True),
            "$.control.pre_sum",
        ),
        (st.ArmCounts(n=10), st.Analysis(alpha=1.0), "$.alpha"),
        (st.ArmCounts(n=10), st.Analysis(sequential_tuning=0.0), "$.sequential_tuning"),
        (st.ArmCounts(n=10), st.Analysis(prior=st.Prior(stddev=0.0)), "$.prior.stddev"),
    ],
)
def test_bad_counts_are_refused_with_their_path(
    control: st.ArmCounts, analysis: st.Analysis, path: str
) -> None:
    treatment = st.ArmCounts(n=10, sum=1.0, sum_squares=1.0)
    for test in (st.frequentist, st.bayesian):
        with pytest.raises(ValidationError) as caught:
            test(control, treatment, analysis)
        assert caught.value.path == path


@pytest.mark.parametrize(
    ("users", "weights", "path"),
    [
        ([10], [1.0], "$.users"),
        ([10, 10], [1.0], "$.weights"),
        ([10, -1], [1.0, 1.0], "$.users[1]"),
        ([10, 10], [1.0, -1.0], "$.weights[1]"),
        ([10, 10], [0.0, 0.0], "$.weights"),
        ([10, 10], [1.0, float("nan")], "$.weights[1]"),
    ],
)
def test_bad_splits_are_refused(users: list[int], weights: list[float], path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        st.srm_p_value(users, weights)
    assert caught.value.path == path


def test_a_campaign_needs_two_arms() -> None:
    with pytest.raises(ValidationError) as caught:
        st.analyze([st.ArmCounts(n=3)], [1.0])
    assert caught.value.path == "$.arms"
    with pytest.raises(ValidationError) as caught:
        st.analyze([st.ArmCounts(n=3), st.ArmCounts(n=-3)], [1.0, 1.0])
    assert caught.value.path == "$.arms[1].n"
