"""A campaign's results and verdict from its counters (issue #18, item 7): the figures are
``statistics.analyze``'s on the same counts, and the verdict is a plain sentence tied to the
hypothesis."""

from __future__ import annotations

import time

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.experiments.counters import CONTROL, DAY, TREATMENT, CampaignCounters, Sums
from nextbest.experiments.report import MIN_EXPOSED, Verdict, campaign_result
from nextbest.experiments.statistics import Analysis, ArmCounts, analyze
from tests.support import T0

CAMPAIGN = "mortgage_q4"
DAY0 = int(T0 // DAY)


def rate(n: int, converted: int) -> Sums:
    return Sums(n=n, sum=float(converted), sum_squares=float(converted))


def counters(control: tuple[int, int], treatment: tuple[int, int]) -> CampaignCounters:
    """Exposed and converted per arm, split over two days (half each); nobody dismissed."""
    days: dict[str, list[dict[int, Sums]]] = {}
    for arm, (n, k) in ((CONTROL, control), (TREATMENT, treatment)):
        first = rate(n // 2, k // 2)
        second = rate(n - n // 2, k - k // 2)
        days[arm] = [
            {DAY0: first, DAY0 + 1: second},
            {DAY0: Sums(n=n // 2), DAY0 + 1: Sums(n=n - n // 2)},
        ]
    return CampaignCounters(customers={}, days=days)


def result_of(catalog: Catalog, state: CampaignCounters | None):
    return campaign_result(catalog.campaigns[CAMPAIGN], catalog.kpis[CAMPAIGN], state)


@pytest.mark.parametrize(
    ("treatment", "verdict", "opening"),
    [
        ((9_000, 1_350), Verdict.WIN, "Significant win: treatment moved Application Submitted"),
        ((9_000, 450), Verdict.LOSS, "Significant loss: treatment moved Application Submitted"),
        ((9_000, 900), Verdict.INCONCLUSIVE, "Inconclusive so far"),
    ],
)
def test_the_verdict_says_what_the_primary_kpi_shows(
    catalog: Catalog, treatment: tuple[int, int], verdict: Verdict, opening: str
) -> None:
    result = result_of(catalog, counters((1_000, 100), treatment))
    assert result.verdict is verdict
    assert result.summary.startswith(opening)
    assert "mortgage applications within 14 days" in result.summary  # the hypothesis
    assert not result.srm_flagged


def test_the_figures_are_the_sequential_test_s_on_the_same_counts(catalog: Catalog) -> None:
    result = result_of(catalog, counters((1_000, 100), (9_000, 1_350)))
    expected = analyze(
        [
            ArmCounts(n=1_000, sum=100, sum_squares=100),
            ArmCounts(n=9_000, sum=1_350, sum_squares=1_350),
        ],
        [0.1, 0.9],
        Analysis(sequential=True),
    )
    (comparison,) = expected.comparisons
    control, treated = result.kpis[0].arms
    assert (control.arm, control.exposed, control.conversions, control.rate) == (
        CONTROL,
        1_000,
        100.0,
        0.1,
    )
    assert control.lift is None
    assert treated.lift == pytest.approx(comparison.frequentist.estimate, abs=1e-12)
    assert treated.ci_lower == pytest.approx(comparison.frequentist.ci_lower, abs=1e-12)
    assert treated.p_value == pytest.approx(comparison.frequentist.p_value, abs=1e-12)
    assert treated.chance_to_win == pytest.approx(comparison.bayesian.chance_to_win, abs=1e-12)
    assert result.srm_p_value == pytest.approx(expected.srm.p_value, abs=1e-12)
    # day by day: the state at the end of each day
    day = time.strftime("%Y-%m-%d", time.gmtime(DAY0 * DAY))
    assert [(p.arm, p.exposed) for p in result.daily] == [(TREATMENT, 4_500), (TREATMENT, 9_000)]
    assert result.daily[0].day == day < result.daily[1].day
    assert result.daily[-1].lift == pytest.approx(treated.lift or 0.0, abs=1e-12)


def test_a_guardrail_that_should_fall_reads_a_rise_as_a_loss(catalog: Catalog) -> None:
    state = counters((1_000, 100), (9_000, 900))
    state.days[CONTROL][1] = {DAY0: rate(1_000, 10)}
    state.days[TREATMENT][1] = {DAY0: rate(9_000, 400)}  # far more dismissals
    guardrail = result_of(catalog, state).kpis[1]
    assert (guardrail.event, guardrail.guardrail, guardrail.direction.value) == (
        "Promotion Dismissed",
        True,
        "decrease",
    )
    treated = guardrail.arms[1]
    assert (treated.lift or 0.0) > 0
    assert (treated.chance_to_win or 1.0) < 0.01


def test_too_few_customers_is_still_collecting_data(catalog: Catalog) -> None:
    result = result_of(catalog, counters((MIN_EXPOSED // 2, 5), (9 * MIN_EXPOSED // 2, 90)))
    assert result.verdict is Verdict.COLLECTING
    assert result.summary.startswith(f"Collecting data: {5 * MIN_EXPOSED} customers exposed")
    empty = result_of(catalog, None)
    assert empty.verdict is Verdict.COLLECTING
    assert [a.exposed for a in empty.kpis[0].arms] == [0, 0]
    assert empty.daily == []


def test_a_broken_split_is_flagged_and_trumps_the_verdict(catalog: Catalog) -> None:
    result = result_of(catalog, counters((5_000, 500), (5_000, 900)))
    assert result.srm_flagged
    assert result.verdict is Verdict.SAMPLE_RATIO_MISMATCH
    assert "cannot be trusted" in result.summary
