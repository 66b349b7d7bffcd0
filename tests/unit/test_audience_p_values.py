"""Adjusted p-values for exploratory audience breakdowns (issue #18, item 6): properties
that hold for any p-values, and pre-registered audiences read as they are."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st_

from nextbest.errors import ValidationError
from nextbest.experiments import statistics as st

P = st_.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(st_.lists(P, max_size=40), st_.randoms(use_true_random=False))
def test_adjusting_never_lowers_keeps_the_order_and_ignores_the_input_order(
    p: list[float], rng: random.Random
) -> None:
    holm = st.adjusted_p_values(p, st.Adjustment.HOLM)
    bh = st.adjusted_p_values(p, st.Adjustment.BENJAMINI_HOCHBERG)
    for raw, h, b in zip(p, holm, bh, strict=True):
        assert raw <= b <= 1.0
        assert raw <= h <= 1.0
        assert b <= h * (1 + 1e-12)  # BH is never stricter than Holm (up to rounding)
    for i in range(len(p)):
        for j in range(len(p)):
            if p[i] < p[j]:
                assert holm[i] <= holm[j]
                assert bh[i] <= bh[j]
    order = list(range(len(p)))
    rng.shuffle(order)
    shuffled = st.adjusted_p_values([p[i] for i in order], st.Adjustment.HOLM)
    assert shuffled == [holm[i] for i in order]


def test_one_comparison_is_not_adjusted_and_none_is_empty() -> None:
    for method in st.Adjustment:
        assert st.adjusted_p_values([0.03], method) == [0.03]
        assert st.adjusted_p_values([], method) == []


def test_the_default_for_exploratory_breakdowns_is_benjamini_hochberg() -> None:
    assert st.EXPLORATORY_ADJUSTMENT is st.Adjustment.BENJAMINI_HOCHBERG


def test_registered_audiences_are_confirmatory_and_the_others_adjusted_together() -> None:
    p = {"mortgage_intent": 0.02, "adult": 0.01, "parent": 0.04, "young": 0.5}
    out = st.audience_p_values(p, registered={"mortgage_intent"})
    assert out["mortgage_intent"] == st.AudienceP(p_value=0.02, adjusted=0.02, exploratory=False)
    exploring = st.adjusted_p_values([0.01, 0.04, 0.5])
    assert [out[a].adjusted for a in ("adult", "parent", "young")] == exploring
    assert all(out[a].exploratory for a in ("adult", "parent", "young"))
    # the same p-value reads as significant only where the audience was registered
    assert out["parent"].adjusted > 0.05


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True, "0.1"])
def test_a_bad_p_value_is_a_validation_error_with_its_path(bad: object) -> None:
    with pytest.raises(ValidationError) as exc:
        st.adjusted_p_values([0.1, bad])  # type: ignore[list-item]
    assert exc.value.path == "$.p_values[1]"
