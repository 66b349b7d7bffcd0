"""Intervals for the site loop's incremental figures: a bootstrap over customers.

A campaign's incremental conversions are (treatment rate - control rate) x treatment
customers, its product's conversions counted per customer and the arm assigned on the stable
userId. Customers are the unit that was randomized, so the interval resamples customers with
replacement (the same draw for every campaign, so the total's interval keeps their
correlation), recomputes every campaign's figure and the total, and reports the 2.5th and
97.5th percentiles (a 95 % percentile interval). Seeded: the same run gives the same
interval. A resample without a customer in one arm counts that campaign as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["ArmsAndConversions", "incremental_intervals"]

#: per campaign: for each customer (in one order for all campaigns), in treatment or not,
#: and that customer's conversions of the campaign's product
ArmsAndConversions = Mapping[str, tuple[Sequence[bool], Sequence[int]]]


def incremental_intervals(
    campaigns: ArmsAndConversions, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """The percentile interval of each campaign's incremental conversions and of their
    total, from ``resamples`` bootstrap resamples of the customers."""
    if not campaigns:
        return {}, (0.0, 0.0)
    names = list(campaigns)
    treat = np.array([campaigns[c][0] for c in names], dtype=np.float64)  # campaigns x n
    conv = np.array([campaigns[c][1] for c in names], dtype=np.float64)
    n = treat.shape[1]
    if n == 0:
        return {c: (0.0, 0.0) for c in names}, (0.0, 0.0)
    rng = np.random.default_rng(seed)
    conv_t, conv_c = (conv * treat).T, (conv * (1.0 - treat)).T
    chunks = []
    for start in range(0, resamples, 100):  # 100 resamples at a time: memory stays small
        # each resample as a count per customer: its sums become dot products
        weights = np.stack(
            [
                np.bincount(rng.integers(0, n, n), minlength=n)
                for _ in range(start, min(resamples, start + 100))
            ]
        ).astype(np.float64)  # resamples x customers
        treated = weights @ treat.T  # resamples x campaigns
        control = weights.sum(axis=1, keepdims=True) - treated
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = (weights @ conv_t) / treated - (weights @ conv_c) / control
        chunks.append(np.where((treated > 0) & (control > 0), lift * treated, 0.0))
    figures = np.concatenate(chunks)
    tails = [(1.0 - level) / 2 * 100, (1.0 + level) / 2 * 100]

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(values, tails)
        return round(float(low), 6), round(float(high), 6)

    per_campaign = {c: interval(figures[:, k]) for k, c in enumerate(names)}
    return per_campaign, interval(figures.sum(axis=1))
