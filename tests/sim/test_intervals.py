"""The bootstrap over customers behind ``sim evaluate``'s incremental intervals."""

from __future__ import annotations

import random

import pytest

from nextbest.sim.intervals import incremental_intervals


def _campaign(n: int, treated_rate: float, control_rate: float, seed: int):
    rng = random.Random(seed)
    arms = [rng.random() >= 0.2 for _ in range(n)]
    conv = [int(rng.random() < (treated_rate if t else control_rate)) for t in arms]
    return arms, conv


def _point(arms: list[bool], conv: list[int]) -> float:
    t = sum(arms)
    c = len(arms) - t
    ct = sum(x for a, x in zip(arms, conv, strict=True) if a)
    cc = sum(x for a, x in zip(arms, conv, strict=True) if not a)
    return (ct / t - cc / c) * t


def test_a_real_lift_is_bracketed_and_no_lift_straddles_zero() -> None:
    lift = _campaign(2000, 0.30, 0.10, 1)
    none = _campaign(2000, 0.10, 0.10, 2)
    per, total = incremental_intervals({"lift": lift, "none": none}, resamples=500, seed=3)
    low, high = per["lift"]
    assert 0 < low < _point(*lift) < high
    low, high = per["none"]
    assert low < 0 < high
    assert total[0] < _point(*lift) + _point(*none) < total[1]
    # seeded: the same run, the same interval
    assert incremental_intervals({"lift": lift, "none": none}, resamples=500, seed=3) == (
        per,
        total,
    )


def test_a_campaign_with_an_empty_arm_counts_zero() -> None:
    per, total = incremental_intervals({"all": ([True] * 50, [1] * 50)}, resamples=50)
    assert per == {"all": (0.0, 0.0)}
    assert total == (0.0, 0.0)
    assert incremental_intervals({}) == ({}, (0.0, 0.0))


@pytest.mark.parametrize("n", [1, 7])
def test_tiny_populations_do_not_fail(n: int) -> None:
    arms, conv = _campaign(n, 0.5, 0.5, n)
    _, (low, high) = incremental_intervals({"c": (arms, conv)}, resamples=20)
    assert low <= high
