"""Calibration of logged estimates: deciles of equal size, observed rates, and the expected
calibration error."""

from __future__ import annotations

import random

import pytest

from nextbest.learn.calibration import calibration
from nextbest.learn.logs import LoggedItem


def item(k: int, p_click: float, clicked: bool, p_convert: float, converted: bool) -> LoggedItem:
    return LoggedItem(
        decision_id=f"d{k}",
        timestamp=0.0,
        customer_id=f"c{k}",
        placement="home_feed",
        position=1,
        offer_id="o",
        propensity=1.0,
        clicked=clicked,
        converted=converted,
        p_click=p_click,
        p_convert=p_convert,
    )


def test_a_calibrated_estimate_has_a_small_error_and_a_biased_one_does_not() -> None:
    rng = random.Random(5)
    honest, doubled = [], []
    for k in range(20_000):
        p = rng.uniform(0.0, 0.2)
        clicked = rng.random() < p
        converted = clicked and rng.random() < 0.3
        honest.append(item(k, p, clicked, 0.3, converted))
        doubled.append(item(k, min(1.0, 2 * p), clicked, 0.6, converted))
    click, conversion = calibration(honest)
    assert (click.outcome, click.n, len(click.bins)) == ("click", 20_000, 10)
    assert [b.n for b in click.bins] == [2_000] * 10
    assert click.ece < 0.01
    assert click.predicted == pytest.approx(click.observed, abs=0.005)
    assert conversion.outcome == "conversion"
    assert conversion.n == sum(i.clicked for i in honest)
    assert conversion.ece < 0.05
    bad_click, bad_conversion = calibration(doubled)
    assert bad_click.ece == pytest.approx(click.predicted, abs=0.01)  # off by the mean rate
    assert bad_conversion.ece == pytest.approx(0.3, abs=0.05)


def test_items_without_estimates_are_left_out() -> None:
    bare = LoggedItem(
        decision_id="d",
        timestamp=0.0,
        customer_id="c",
        placement="p",
        position=1,
        offer_id="o",
        propensity=1.0,
        clicked=True,
        converted=False,
    )
    assert calibration([bare]) == []
    (one,) = calibration([item(1, 0.5, False, 0.1, False)])
    assert (one.n, one.bins[0].n, one.ece) == (1, 1, 0.5)
