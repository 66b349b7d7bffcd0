"""A campaign's experiment results as a marketer reads them: per KPI and arm the exposed
customers, conversions, rate, lift with its interval, p-value and chance to win, and the lift
adjusted by the pre-exposure covariate (CUPED) with how much narrower its interval is; the
sample ratio check; the lift day by day; the primary KPI per audience; and a verdict in one
plain sentence tied to the hypothesis.

Pure: counts in (``experiments.counters``), figures out (``experiments.statistics``). The
intervals and p-values are the sequential test's (always valid: a marketer looks every day,
and a fixed-horizon test read daily finds "significant" results that are not); the chance to
win is the Bayesian test's. The verdict reads the unadjusted test (what the campaign was
planned on); the CUPED figures stand beside it, from the same counts.

Per audience (the catalog's segments and the macro-segments of ``experiments.exposure``,
each customer's frozen at their first exposure) the primary KPI is tested the same way. An
audience the campaign registered before it started (``CampaignSpec.audiences``) is read as
it is (confirmatory); every other one is exploratory: its p-values are adjusted for how many
exploratory comparisons were looked at (Benjamini-Hochberg, ``statistics.adjusted_p_values``)
and only the adjusted p-value makes it significant. ``statistics`` (scipy) is imported when
results are computed, not when this module loads, so the HTTP face's schemas do not load
scipy.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import msgspec

from nextbest.catalog.compiled import CompiledKpi
from nextbest.catalog.model import CampaignSpec, Direction
from nextbest.experiments.counters import CONTROL, DAY, TREATMENT, CampaignCounters, Sums
from nextbest.experiments.exposure import FAMILIES, SEGMENT, audience_family

if TYPE_CHECKING:
    from nextbest.experiments.statistics import (
        Analysis,
        ArmCounts,
        CampaignResult,
        FrequentistResult,
    )

__all__ = [
    "MIN_EXPOSED",
    "ArmResult",
    "AudienceArm",
    "AudienceResult",
    "CupedLift",
    "DailyLift",
    "ExperimentList",
    "ExperimentResult",
    "ExperimentSummary",
    "KpiResult",
    "Verdict",
    "arm_names",
    "arm_weights",
    "campaign_result",
    "summarize",
]

#: fewer exposed customers than this in an arm: still collecting data, whatever the test says
MIN_EXPOSED = 100


class Verdict(enum.StrEnum):
    """What the primary KPI says so far."""

    #: too few exposed customers, or no variation yet
    COLLECTING = "collecting_data"
    #: a variant moved the primary KPI the way the hypothesis expected, significantly
    WIN = "significant_win"
    #: a variant moved it the other way, significantly
    LOSS = "significant_loss"
    #: enough data, no significant difference
    INCONCLUSIVE = "inconclusive"
    #: the arms' sizes do not match the configured split: the figures cannot be trusted
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"
    #: the campaign keeps no control group: its effect cannot be measured
    NO_CONTROL = "no_control_group"


class CupedLift(msgspec.Struct, frozen=True, kw_only=True):
    """An arm's lift over the control adjusted by the customers' pre-exposure covariate
    (CUPED: the same KPI in the 30 days before their first exposure), same test."""

    lift: float
    ci_lower: float
    ci_upper: float
    p_value: float
    significant: bool
    #: CUPED's coefficient (pooled over both arms)
    theta: float
    #: the adjusted interval's width over the unadjusted one's (0.8: 20 % narrower)
    interval_ratio: float


class _ArmFigures(msgspec.Struct, frozen=True, kw_only=True):
    """What every arm's row shows first: who was exposed, what they did, and the lift over
    the control (an arm's result, an arm within an audience)."""

    arm: str
    exposed: int
    #: converters (a conversion KPI) or the KPI's total (a value KPI)
    conversions: float
    #: conversions per exposed customer
    rate: float
    #: relative lift over the control and its interval (None for the control itself)
    lift: float | None = None
    ci_lower: float | None = None
    ci_upper: float | None = None
    p_value: float | None = None


class ArmResult(_ArmFigures, frozen=True, kw_only=True):
    #: Bayesian chance that this arm beats the control (the KPI's direction considered)
    chance_to_win: float | None = None
    significant: bool = False
    #: why the test could not be computed, when it could not (``statistics.Status``)
    status: str = "ok"
    #: the lift adjusted by the pre-exposure covariate; None for the control, or where no
    #: covariate varies yet (the unadjusted figures stand)
    cuped: CupedLift | None = None


class AudienceArm(_ArmFigures, frozen=True, kw_only=True):
    """One arm of one audience, on the primary KPI."""

    #: the p-value as read: adjusted for the exploratory comparisons (Benjamini-Hochberg),
    #: or as it is for an audience the campaign registered
    adjusted_p_value: float | None = None
    #: the adjusted p-value is under alpha, with at least ``MIN_EXPOSED`` in each arm
    significant: bool = False
    status: str = "ok"


class AudienceResult(msgspec.Struct, frozen=True, kw_only=True):
    """The primary KPI among the customers who were in ``audience`` at first exposure."""

    audience: str
    #: ``segment`` (a catalog segment), ``lifecycle``, ``engagement``, ``holding``, ``intent``
    family: str
    name: str
    #: registered on the campaign before it started (``audiences``): confirmatory
    registered: bool
    #: not registered: a lead for the next campaign, its p-values adjusted
    exploratory: bool
    exposed: int
    arms: list[AudienceArm]


class KpiResult(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    where: str
    within_days: float
    #: ``increase``: a rise is good (the primary KPI as a rule); ``decrease``: a fall is
    direction: Direction
    guardrail: bool
    #: ``proportion`` (converted or not) or ``mean`` (a summed value per customer)
    kind: str
    arms: list[ArmResult]


class DailyLift(msgspec.Struct, frozen=True, kw_only=True):
    """The primary KPI's lift of one arm as it stood at the end of a UTC day."""

    day: str
    arm: str
    exposed: int
    lift: float
    ci_lower: float
    ci_upper: float
    significant: bool


class Hypothesis(msgspec.Struct, frozen=True, kw_only=True):
    observation: str
    change: str
    expected: str


class ExperimentResult(msgspec.Struct, frozen=True, kw_only=True):
    campaign: str
    name: str
    owner: str
    status: str
    objective: str
    category: str
    hypothesis: Hypothesis
    control_share: float
    #: the configured share of each arm, in the order of ``kpis[*].arms``
    weights: dict[str, float]
    srm_p_value: float
    srm_flagged: bool
    verdict: Verdict
    #: the verdict as one plain sentence
    summary: str
    #: the primary KPI first, then the guardrails
    kpis: list[KpiResult]
    daily: list[DailyLift]
    sequential: bool = True
    alpha: float = 0.05
    #: the primary KPI per audience, registered ones first
    audiences: list[AudienceResult] = []
    #: how exploratory audiences' p-values are adjusted (``statistics.Adjustment``)
    audience_adjustment: str = "benjamini_hochberg"
    #: per arm, the exposed customers analytics withheld something of (consent: withdrawn
    #: analytics, no covariate and no audience; or a KPI's source, no covariate for it):
    #: counted in the arm and its KPIs all the same (``experiments.exposure``)
    analytics_withheld: dict[str, int] = {}


class ExperimentSummary(msgspec.Struct, frozen=True, kw_only=True):
    campaign: str
    name: str
    status: str
    exposed: int
    verdict: Verdict
    summary: str
    #: the exposed customers analytics withheld something of (``ExperimentResult``)
    analytics_withheld: int = 0


class ExperimentList(msgspec.Struct, frozen=True, kw_only=True):
    experiments: list[ExperimentSummary]


def arm_names(campaign: CampaignSpec) -> list[str]:
    """The campaign's arms, the control first (if it keeps one)."""
    treated = [v.id for v in campaign.variants] or [TREATMENT]
    return ([CONTROL] if campaign.control_share > 0 else []) + treated


def arm_weights(campaign: CampaignSpec) -> dict[str, float]:
    """Each arm's configured share of the campaign's customers."""
    share = campaign.control_share
    out = {CONTROL: share} if share > 0 else {}
    if campaign.variants:
        total = sum(v.weight for v in campaign.variants)
        out.update({v.id: (1 - share) * v.weight / total for v in campaign.variants})
    else:
        out[TREATMENT] = 1 - share
    return out


def _counts(s: Sums, kpi: CompiledKpi) -> ArmCounts:
    """``s`` as the statistics read it; a conversion KPI's sums are whole numbers (0/1
    values), whatever order the daily deltas were added in."""
    from nextbest.experiments.statistics import ArmCounts

    whole = kpi.spec.value is None
    return ArmCounts(
        n=s.n,
        sum=float(round(s.sum)) if whole else s.sum,
        sum_squares=float(round(s.sum_squares)) if whole else s.sum_squares,
        pre_sum=s.pre_sum,
        pre_sum_squares=s.pre_sum_squares,
        cross_sum=s.cross_sum,
    )


def _analysis(kpi: CompiledKpi, alpha: float, sequential: bool, cuped: bool = False) -> Analysis:
    from nextbest.experiments.statistics import Analysis, MetricKind

    kind = MetricKind.PROPORTION if kpi.spec.value is None else MetricKind.MEAN
    inverse = kpi.spec.direction is Direction.DECREASE
    return Analysis(kind=kind, alpha=alpha, sequential=sequential, inverse=inverse, cuped=cuped)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _kpi_result(
    kpi: CompiledKpi,
    arms: Sequence[str],
    weights: Sequence[float],
    state: CampaignCounters,
    i: int,
    alpha: float,
    sequential: bool,
) -> tuple[KpiResult, float]:
    """One KPI's table, and the SRM p-value of its arms' sizes."""
    from nextbest.experiments.statistics import analyze

    analysis = _analysis(kpi, alpha, sequential)
    counts = [_counts(state.totals(a, i), kpi) for a in arms]
    out: list[ArmResult] = []
    srm_p = 1.0
    if len(arms) >= 2:
        result = analyze(counts, weights, analysis)
        adjusted = analyze(counts, weights, _analysis(kpi, alpha, sequential, cuped=True))
        srm_p = result.srm.p_value
        out.append(_untested(ArmResult, arms[0], counts[0]))
        for comparison, cuped in zip(result.comparisons, adjusted.comparisons, strict=True):
            f, b = comparison.frequentist, comparison.bayesian
            c = counts[comparison.arm]
            out.append(
                ArmResult(
                    arm=arms[comparison.arm],
                    exposed=c.n,
                    conversions=c.sum,
                    rate=c.sum / c.n if c.n else 0.0,
                    lift=_finite(f.estimate),
                    ci_lower=_finite(f.ci_lower),
                    ci_upper=_finite(f.ci_upper),
                    p_value=f.p_value,
                    chance_to_win=b.chance_to_win,
                    significant=f.significant,
                    status=f.status.value,
                    cuped=_cuped(f, cuped.frequentist),
                )
            )
    else:
        out = [_untested(ArmResult, a, c) for a, c in zip(arms, counts, strict=True)]
    spec = kpi.spec
    result_kpi = KpiResult(
        event=spec.event,
        where=spec.where,
        within_days=spec.within_days,
        direction=spec.direction,
        guardrail=kpi.guardrail,
        kind=analysis.kind.value,
        arms=out,
    )
    return result_kpi, srm_p


def _cuped(plain: FrequentistResult, adjusted: FrequentistResult) -> CupedLift | None:
    """The CUPED figures beside the plain ones: None unless both tests ran and the
    covariate moved the estimate (theta 0: the same test)."""
    from nextbest.experiments.statistics import Status

    if plain.status is not Status.OK or adjusted.status is not Status.OK or not adjusted.theta:
        return None
    width = plain.ci_upper - plain.ci_lower
    return CupedLift(
        lift=adjusted.estimate,
        ci_lower=adjusted.ci_lower,
        ci_upper=adjusted.ci_upper,
        p_value=adjusted.p_value,
        significant=adjusted.significant,
        theta=adjusted.theta,
        interval_ratio=(adjusted.ci_upper - adjusted.ci_lower) / width if width > 0 else 1.0,
    )


_Arm = TypeVar("_Arm", bound=_ArmFigures)


def _untested(kind: type[_Arm], name: str, c: ArmCounts) -> _Arm:
    """An arm's row with no comparison: the control's, or any arm's before there are two."""
    return kind(arm=name, exposed=c.n, conversions=c.sum, rate=c.sum / c.n if c.n else 0.0)


def _daily(
    kpi: CompiledKpi,
    arms: Sequence[str],
    weights: Sequence[float],
    state: CampaignCounters,
    alpha: float,
) -> list[DailyLift]:
    """The primary KPI's lift of each variant as it stood at the end of each day (the
    sequential test: its interval may be read every day)."""
    from nextbest.experiments.statistics import analyze

    if len(arms) < 2:
        return []
    analysis = _analysis(kpi, alpha, True)
    out: list[DailyLift] = []
    for day in state.day_numbers():
        counts = [_counts(state.totals(a, 0, day), kpi) for a in arms]
        result = analyze(counts, weights, analysis)
        label = time.strftime("%Y-%m-%d", time.gmtime(day * DAY))
        for comparison in result.comparisons:
            f = comparison.frequentist
            out.append(
                DailyLift(
                    day=label,
                    arm=arms[comparison.arm],
                    exposed=counts[comparison.arm].n,
                    lift=_finite(f.estimate),
                    ci_lower=_finite(f.ci_lower),
                    ci_upper=_finite(f.ci_upper),
                    significant=f.significant,
                )
            )
    return out


def _audiences(
    campaign: CampaignSpec,
    kpi: CompiledKpi,
    arms: Sequence[str],
    weights: Sequence[float],
    state: CampaignCounters,
    alpha: float,
    sequential: bool,
    segment_names: Mapping[str, str],
) -> list[AudienceResult]:
    """The primary KPI per audience: each variant against the control among the customers
    in it, exploratory p-values adjusted together (Benjamini-Hochberg)."""
    from nextbest.experiments.statistics import (
        EXPLORATORY_ADJUSTMENT,
        adjusted_p_values,
        analyze,
    )

    registered = set(campaign.audiences)
    analysis = _analysis(kpi, alpha, sequential)
    tested: list[tuple[str, list[ArmCounts], CampaignResult | None]] = []
    # a registered audience is listed even while nobody in it was exposed: the marketer
    # pre-registered it and reads "no exposures yet", not its absence
    unseen = [a for a in campaign.audiences if a not in state.by_audience]
    for audience in [*state.by_audience, *unseen]:
        counts = [_counts(state.audience_totals(audience, a, 0), kpi) for a in arms]
        if not any(c.n for c in counts):
            if audience in registered:
                tested.append((audience, counts, None))
            continue
        result = analyze(counts, weights, analysis) if len(arms) >= 2 else None
        tested.append((audience, counts, result))
    # the exploratory family: every variant x audience comparison that could be tested
    family = [
        (audience, c.arm, c.frequentist.p_value)
        for audience, _, result in tested
        if audience not in registered and result is not None
        for c in result.comparisons
        if c.frequentist.status.value == "ok"
    ]
    adjusted = dict(
        zip(
            [(a, i) for a, i, _ in family],
            adjusted_p_values([p for _, _, p in family], EXPLORATORY_ADJUSTMENT),
            strict=True,
        )
    )
    out: list[AudienceResult] = []
    for audience, counts, result in tested:
        enough = min(c.n for c in counts) >= MIN_EXPOSED
        rows = [_untested(AudienceArm, arms[0], counts[0])]
        if not any(c.n for c in counts):  # registered, nobody exposed yet
            rows += [
                AudienceArm(arm=a, exposed=0, conversions=0.0, rate=0.0, status="no_units")
                for a in arms[1:]
            ]
        for comparison in result.comparisons if result is not None else ():
            f = comparison.frequentist
            c = counts[comparison.arm]
            ok = f.status.value == "ok"
            p = f.p_value if audience in registered else adjusted.get((audience, comparison.arm))
            rows.append(
                AudienceArm(
                    arm=arms[comparison.arm],
                    exposed=c.n,
                    conversions=c.sum,
                    rate=c.sum / c.n if c.n else 0.0,
                    lift=_finite(f.estimate) if ok else None,
                    ci_lower=_finite(f.ci_lower) if ok else None,
                    ci_upper=_finite(f.ci_upper) if ok else None,
                    p_value=f.p_value if ok else None,
                    adjusted_p_value=p if ok else None,
                    significant=ok and enough and p is not None and p < alpha,
                    status=f.status.value,
                )
            )
        family_name = audience_family(audience)
        out.append(
            AudienceResult(
                audience=audience,
                family=family_name,
                name=_audience_name(audience, family_name, segment_names),
                registered=audience in registered,
                exploratory=audience not in registered,
                exposed=sum(c.n for c in counts),
                arms=rows,
            )
        )
    order = {f: i for i, f in enumerate(FAMILIES)}
    out.sort(key=lambda r: (not r.registered, order.get(r.family, len(order)), r.audience))
    return out


def _audience_name(audience: str, family: str, segment_names: Mapping[str, str]) -> str:
    if family == SEGMENT:
        return segment_names.get(audience, audience)
    value = audience.partition(":")[2].replace("_", " ")
    return f"{family.capitalize()}: {value}"


def _verdict(
    campaign: CampaignSpec, primary: KpiResult, srm_p: float, srm_flagged: bool
) -> tuple[Verdict, str]:
    expected = campaign.hypothesis.expected.rstrip(". ")
    kpi = primary.event
    if campaign.control_share <= 0:
        return Verdict.NO_CONTROL, (
            f"{campaign.name} keeps no control group, so whether it caused anything cannot "
            "be measured: give it a control_share."
        )
    if srm_flagged:
        return Verdict.SAMPLE_RATIO_MISMATCH, (
            f"The arms' sizes do not match the configured split (sample ratio mismatch, "
            f"p = {srm_p:.2g}): assignment or exposure logging is broken, so these figures "
            "cannot be trusted until it is fixed."
        )
    variants = primary.arms[1:]
    exposed = min((a.exposed for a in primary.arms), default=0)
    if exposed < MIN_EXPOSED or any(a.status != "ok" for a in variants):
        total = sum(a.exposed for a in primary.arms)
        return Verdict.COLLECTING, (
            f"Collecting data: {total:,} customers exposed so far (at least {MIN_EXPOSED} "
            f"per arm, with conversions in each, are needed) before anything can be said "
            f"about the hypothesis that {_lower(expected)}."
        )
    good = primary.direction is Direction.INCREASE
    wins = [a for a in variants if a.significant and ((a.lift or 0.0) > 0) == good]
    losses = [a for a in variants if a.significant and ((a.lift or 0.0) > 0) != good]
    if wins:
        best = max(wins, key=lambda a: abs(a.lift or 0.0))
        return Verdict.WIN, (
            f"Significant win: {best.arm} moved {kpi} by {_pct(best.lift)} "
            f"({_interval(best)}, p = {best.p_value:.2g}), as the hypothesis expected: "
            f"{_lower(expected)}."
        )
    if losses:
        worst = max(losses, key=lambda a: abs(a.lift or 0.0))
        return Verdict.LOSS, (
            f"Significant loss: {worst.arm} moved {kpi} by {_pct(worst.lift)} "
            f"({_interval(worst)}, p = {worst.p_value:.2g}), against the hypothesis that "
            f"{_lower(expected)}."
        )
    return Verdict.INCONCLUSIVE, (
        f"Inconclusive so far: no arm moved {kpi} significantly "
        f"({', '.join(f'{a.arm} {_pct(a.lift)}, {_interval(a)}' for a in variants)}); "
        f"the hypothesis that {_lower(expected)} is neither supported nor refuted yet."
    )


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _pct(x: float | None) -> str:
    return f"{(x or 0.0):+.1%}"


def _interval(a: ArmResult) -> str:
    return f"interval {_pct(a.ci_lower)} to {_pct(a.ci_upper)}"


def campaign_result(
    campaign: CampaignSpec,
    kpis: Sequence[CompiledKpi],
    state: CampaignCounters | None,
    *,
    alpha: float = 0.05,
    sequential: bool = True,
    segment_names: Mapping[str, str] | None = None,
) -> ExperimentResult:
    """The campaign's results from its counters (None: nobody exposed yet);
    ``segment_names`` names the catalog's segments in the audience breakdown."""
    state = state if state is not None else CampaignCounters()
    arms = arm_names(campaign)
    weights = arm_weights(campaign)
    split = [weights[a] for a in arms]
    tables: list[KpiResult] = []
    srm_p = 1.0
    for i, kpi in enumerate(kpis):
        table, p = _kpi_result(kpi, arms, split, state, i, alpha, sequential)
        tables.append(table)
        if i == 0:
            srm_p = p
    from nextbest.experiments.statistics import SRM_THRESHOLD

    flagged = srm_p < SRM_THRESHOLD
    verdict, sentence = _verdict(campaign, tables[0], srm_p, flagged)
    h = campaign.hypothesis
    return ExperimentResult(
        campaign=campaign.id,
        name=campaign.name,
        owner=campaign.owner,
        status=campaign.status.value,
        objective=campaign.objective.value,
        category=campaign.category.value,
        hypothesis=Hypothesis(observation=h.observation, change=h.change, expected=h.expected),
        control_share=campaign.control_share,
        weights=weights,
        srm_p_value=srm_p,
        srm_flagged=flagged,
        verdict=verdict,
        summary=sentence,
        kpis=tables,
        daily=_daily(kpis[0], arms, split, state, alpha) if kpis else [],
        sequential=sequential,
        alpha=alpha,
        audiences=_audiences(
            campaign, kpis[0], arms, split, state, alpha, sequential, segment_names or {}
        )
        if kpis
        else [],
        analytics_withheld={a: state.withheld[a] for a in arms if state.withheld.get(a)},
    )


def summarize(result: ExperimentResult) -> ExperimentSummary:
    exposed = sum(a.exposed for a in result.kpis[0].arms) if result.kpis else 0
    return ExperimentSummary(
        campaign=result.campaign,
        name=result.name,
        status=result.status,
        exposed=exposed,
        verdict=result.verdict,
        summary=result.summary,
        analytics_withheld=sum(result.analytics_withheld.values()),
    )
