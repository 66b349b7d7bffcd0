"""Incremental state equals recomputation from scratch on every prefix (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.profile.interest import Trend, add_to_score, decayed, trend_of
from nextbest.profile.windows import DAY, HORIZON, WINDOW_DAYS, add_hit, count_in_days

T0 = 1_790_157_600.0
offsets = st.lists(st.floats(min_value=0, max_value=200 * DAY, allow_nan=False), max_size=60)


def recomputed_hits(times: list[float]) -> list[float]:
    newest = max(times)
    return sorted(t for t in times if t >= newest - HORIZON)


@settings(max_examples=200, deadline=None)
@given(offsets, st.floats(min_value=0, max_value=30 * DAY))
def test_window_counts_equal_recomputation_on_every_prefix(offs: list[float], after: float):
    hits: list[float] = []
    seen: list[float] = []
    for off in offs:
        t = T0 + off
        add_hit(hits, t)
        seen.append(t)
        assert hits == recomputed_hits(seen)
        now = max(seen) + after
        for days in WINDOW_DAYS:
            exact = sum(1 for x in seen if now - days * DAY < x <= now)
            assert count_in_days(hits, days, now) == exact


def test_window_excludes_hits_after_now():
    hits: list[float] = []
    for t in (T0, T0 + 10, T0 + 20):
        add_hit(hits, t)
    assert count_in_days(hits, 1, T0 + 10) == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=60 * DAY), st.floats(0.1, 5.0)), max_size=40
    ),
    st.floats(min_value=0.5, max_value=60.0),
)
def test_decayed_score_equals_recomputation(events: list[tuple[float, float]], half_days: float):
    half = half_days * DAY
    score, at = 0.0, 0.0
    seen: list[tuple[float, float]] = []
    for off, w in events:
        score, at = add_to_score(score, at, T0 + off, w, half)
        seen.append((T0 + off, w))
        now = max(t for t, _ in seen) + DAY
        exact = sum(w * 2 ** (-(now - t) / half) for t, w in seen)
        assert math.isclose(decayed(score, at, now, half), exact, rel_tol=1e-9, abs_tol=1e-12)


def test_score_halves_every_half_life():
    score, at = add_to_score(0.0, 0.0, T0, 4.0, 7 * DAY)
    assert decayed(score, at, T0 + 7 * DAY, 7 * DAY) == 2.0
    assert decayed(score, at, T0 + 14 * DAY, 7 * DAY) == 1.0
    assert decayed(score, at, T0 - DAY, 7 * DAY) == 4.0  # never grows backwards


def test_trend():
    assert trend_of(0, 0) is Trend.NONE
    assert trend_of(3, 0) is Trend.NEW
    assert trend_of(6, 3) is Trend.RISING
    assert trend_of(3, 3) is Trend.STEADY
    assert trend_of(1, 4) is Trend.FALLING
