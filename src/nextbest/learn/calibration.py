"""Calibration: do the logged probabilities match what customers did?

For each placement, the shown items' estimated P(click) against their clicks, and the
clicked items' estimated P(conversion | click) against their conversions (``learn.logs``
joins both through ``decision_id``). Items are sorted by their estimate and cut into up to
ten bins of equal size (deciles); each bin gives its mean estimate, its observed rate and
its size. The expected calibration error is ``sum_b (n_b / N) |estimate_b - observed_b|``
(Naeini, Cooper & Hauskrecht, AAAI 2015). Pure: logged items in, figures out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import msgspec

from nextbest.learn.logs import LoggedItem

__all__ = ["Calibration", "CalibrationBin", "calibration"]

_BINS = 10


class CalibrationBin(msgspec.Struct, frozen=True, kw_only=True):
    predicted: float
    observed: float
    n: int


class Calibration(msgspec.Struct, frozen=True, kw_only=True):
    """One placement's estimates of one outcome (``click`` or ``conversion``)."""

    placement: str
    outcome: str
    n: int
    predicted: float
    observed: float
    #: expected calibration error over ``bins``
    ece: float
    bins: list[CalibrationBin]


def _binned(placement: str, outcome: str, pairs: list[tuple[float, bool]]) -> Calibration:
    pairs.sort(key=lambda pair: pair[0])
    n = len(pairs)
    k = min(_BINS, n)
    bins: list[CalibrationBin] = []
    ece = 0.0
    for b in range(k):
        part = pairs[b * n // k : (b + 1) * n // k]
        predicted = sum(p for p, _ in part) / len(part)
        observed = sum(1 for _, y in part if y) / len(part)
        ece += len(part) / n * abs(predicted - observed)
        bins.append(
            CalibrationBin(predicted=round(predicted, 6), observed=round(observed, 6), n=len(part))
        )
    return Calibration(
        placement=placement,
        outcome=outcome,
        n=n,
        predicted=round(sum(p for p, _ in pairs) / n, 6),
        observed=round(sum(1 for _, y in pairs if y) / n, 6),
        ece=round(ece, 6),
        bins=bins,
    )


def calibration(items: Iterable[LoggedItem]) -> list[Calibration]:
    """Per placement (sorted), clicks then conversions; outcomes without any logged
    estimate are left out."""
    clicks: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    conversions: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for item in items:
        if item.p_click is not None:
            clicks[item.placement].append((item.p_click, item.clicked))
        if item.clicked and item.p_convert is not None:
            conversions[item.placement].append((item.p_convert, item.converted))
    out: list[Calibration] = []
    for placement in sorted(set(clicks) | set(conversions)):
        if clicks.get(placement):
            out.append(_binned(placement, "click", clicks[placement]))
        if conversions.get(placement):
            out.append(_binned(placement, "conversion", conversions[placement]))
    return out
