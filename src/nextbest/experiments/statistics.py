"""Experiment statistics: pure functions of per-arm counts, equal to GrowthBook's gbstats 0.8.0.

A campaign's result never needs the raw events: for each arm and KPI a handful of sums is
enough (the counts), and every figure a marketer reads is computed from them here. The
numbers equal those of GrowthBook's stats engine, gbstats 0.8.0, on the same inputs (to 1e-6;
``tests/conformance/test_gbstats.py`` checks it on cases that ``bench/conformance/
gbstats_cases.py`` made with gbstats itself). Pure Python floats with ``scipy.special`` for
the distribution functions; no I/O, no clock.

Counts
    ``ArmCounts`` holds one arm's sums for one KPI: ``n`` exposed customers, the ``sum`` and
    ``sum_squares`` of their KPI values, and for CUPED the same of a pre-exposure covariate
    (``pre_sum``, ``pre_sum_squares``) and the cross sum ``Σ value × pre``. A
    ``MetricKind.PROPORTION`` KPI has a 0/1 value per customer (converted or not: ``sum`` is
    the number of converters); a ``MetricKind.MEAN`` KPI any number (an amount, a count).
    ``expose`` adds a customer, ``revalue`` changes one customer's value (a second
    conversion adds to an amount, never to a proportion), ``+`` merges shards or days, and
    ``ArmCounts.from_values`` recomputes from per-customer arrays. Counts are immutable. A
    KPI read both as a conversion rate and as an amount keeps two ``ArmCounts`` (one of 0/1
    values, one of amounts), since the covariate's cross sum differs. A campaign keeps one
    per arm and KPI (and per day for sequential analysis, per audience for breakdowns);
    shards and days merge with ``+``.

Tests (``control`` against one ``treatment``, settings in ``Analysis``)
    - ``frequentist``: gbstats' ``TwoSidedTTest`` (Welch t-test, relative lift by the delta
      method): estimate, confidence interval, p-value; with ``Analysis.sequential``, gbstats'
      ``SequentialTwoSidedTTest`` instead: an always-valid interval and p-value (Waudby-Smith
      et al. 2023, eq. 9 and 155; tuning ``sequential_tuning`` = 5000) that may be read every
      day without inflating false positives.
    - ``bayesian``: gbstats' ``EffectBayesianABTest``: a normal posterior of the lift under a
      Gaussian prior on the relative effect (improper by default, as in GrowthBook): chance to
      beat control, credible interval, and the expected loss (risk) of shipping the control
      and of shipping the treatment.
    - ``Analysis.cuped``: gbstats' ``RegressionAdjustedStatistic`` (CUPED): each arm's mean
      is adjusted by ``theta × pre mean``, theta pooled over both arms; when either pooled
      variance is zero, theta is 0 and the plain test runs, as in gbstats.
    - ``srm``: gbstats' ``check_srm``: a chi-squared test of the exposed counts against the
      configured weights, flagged when p < 0.001 (``SRM_THRESHOLD``).
    - ``analyze``: all of the above for a campaign: arm 0 is the control, every other arm is
      compared with it.

When the data cannot support a test, the result says why in ``status`` (a ``Status``) and
carries gbstats' uninformative default (estimate 0, interval [0, 0], p-value 1, chance to
win 0.5, risk 0): no exposed customer in an arm (Bayesian), a control mean of zero (no
relative lift), zero variance (no conversions, everyone converting, fewer than two
customers), or numbers beyond floating-point range. A result is never NaN and never raises
for valid counts; invalid counts (negative, non-finite, more converters than customers) are
a ``ValidationError`` with the field's path.

Where this differs from gbstats on purpose:
    - a Bayesian test on ``Difference.ABSOLUTE`` whose control has an unadjusted mean of 0
      but a positive variance (a mean KPI, or a proportion under CUPED) makes gbstats divide
      by the rescaled prior's zero variance (``ZeroDivisionError``); here an improper prior
      gives the data's posterior and a proper one the ``ZERO_BASELINE`` status;
    - a weight too small for floats in the SRM check (an expected count of 0) makes gbstats
      divide by zero; here a customer in that arm is a mismatch (p = 0);
    - gbstats' sequential p-value overflows ``exp`` (to 0 with a warning) for large effects;
      here it is computed as ``sqrt(B) × exp(-A)``, the same number without the overflow;
    - gbstats' ``scaled`` difference type, its one-sided tests and ratio and quantile metrics
      are not offered; the Bayesian prior is always on the relative effect (gbstats' engine
      does the same).

Audience breakdowns
    A campaign's result broken down by audience (the catalog's segments: intent, lifecycle,
    product holding, engagement) is confirmatory only for the audiences the campaign
    registered before it started (``CampaignSpec.audiences``). Every other breakdown is
    exploratory: looking at twenty audiences finds one "significant" at p < 0.05 by chance
    alone, so ``audience_p_values`` adjusts their p-values for how many were looked at
    (``adjusted_p_values``, equal to statsmodels' ``multipletests``; ``tests/conformance/
    test_multipletests.py``). The default is Benjamini-Hochberg (``fdr_bh``), which bounds
    the expected share of false leads among the audiences flagged (the false discovery
    rate): an exploratory breakdown is a lead for the next, pre-registered campaign, and a
    lead that is sometimes wrong is cheap while one never found is not. Holm (``holm``)
    bounds the chance of *any* false claim (the family-wise error rate): use it when a
    breakdown will be acted on as it stands; with 10-20 audiences it keeps little power.

Defaults mirror GrowthBook's: alpha 0.05, two-sided, relative lift, sequential tuning 5000,
prior mean 0 and standard deviation 0.1 on the relative lift, improper.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import special

from nextbest.errors import ValidationError

__all__ = [
    "EXPLORATORY_ADJUSTMENT",
    "SRM_THRESHOLD",
    "Adjustment",
    "Analysis",
    "ArmCounts",
    "ArmSummary",
    "AudienceP",
    "BayesianResult",
    "CampaignResult",
    "Comparison",
    "Difference",
    "FrequentistResult",
    "MetricKind",
    "Prior",
    "Srm",
    "Status",
    "adjusted_p_values",
    "analyze",
    "audience_p_values",
    "bayesian",
    "cuped_theta",
    "frequentist",
    "srm",
    "srm_p_value",
    "summary",
]

#: a sample-ratio mismatch is flagged below this p-value (GrowthBook's default)
SRM_THRESHOLD = 0.001

_NORM_PDF_LOG_C = math.log(math.sqrt(2 * math.pi))


class MetricKind(enum.StrEnum):
    """What one customer's KPI value is."""

    #: converted or not (0/1); gbstats' ``ProportionStatistic``
    PROPORTION = "proportion"
    #: any number (an amount, a count); gbstats' ``SampleMeanStatistic``
    MEAN = "mean"


class Difference(enum.StrEnum):
    #: (treatment - control) / control: the lift a marketer reads
    RELATIVE = "relative"
    #: treatment - control, in the KPI's unit
    ABSOLUTE = "absolute"


class Status(enum.StrEnum):
    """Whether a test could be computed, and if not, why (gbstats' ``error_message``)."""

    OK = "ok"
    #: an arm has no exposed customer yet (gbstats: NO_UNITS_IN_VARIATION)
    NO_UNITS = "no_units"
    #: the control's mean is zero, so there is no relative lift
    #: (gbstats: ZERO_NEGATIVE_BASELINE_VARIATION)
    ZERO_BASELINE = "zero_baseline"
    #: an arm's variance is zero: no conversions, everyone converting, or fewer than two
    #: customers (gbstats: ZERO_NEGATIVE_VARIANCE)
    ZERO_VARIANCE = "zero_variance"
    #: the counts are so large or so small that a figure leaves floating-point range
    OUT_OF_RANGE = "out_of_range"

    @property
    def text(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    Status.OK: "computed",
    Status.NO_UNITS: "not enough data: an arm has no exposed customer yet",
    Status.ZERO_BASELINE: "not enough data: the control's mean is zero, so no lift can be computed",
    Status.ZERO_VARIANCE: (
        "not enough data: an arm has no variation yet (no conversions, all converting, or "
        "fewer than two customers)"
    ),
    Status.OUT_OF_RANGE: "the counts are beyond floating-point range",
}


class ArmCounts(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One arm's sums for one KPI (see the module docstring)."""

    #: exposed customers
    n: int = 0
    #: Σ value (converters for a proportion)
    sum: float = 0.0
    #: Σ value² (equals ``sum`` for a proportion)
    sum_squares: float = 0.0
    #: Σ pre-exposure covariate (CUPED)
    pre_sum: float = 0.0
    #: Σ covariate²
    pre_sum_squares: float = 0.0
    #: Σ value × covariate
    cross_sum: float = 0.0

    def expose(self, pre: float = 0.0, value: float = 0.0) -> ArmCounts:
        """These counts with one more exposed customer, whose covariate is ``pre`` and whose
        KPI value so far is ``value`` (usually 0 at the first exposure)."""
        return ArmCounts(
            n=self.n + 1,
            sum=self.sum + value,
            sum_squares=self.sum_squares + value * value,
            pre_sum=self.pre_sum + pre,
            pre_sum_squares=self.pre_sum_squares + pre * pre,
            cross_sum=self.cross_sum + value * pre,
        )

    def revalue(self, old: float, new: float, pre: float = 0.0) -> ArmCounts:
        """These counts after one exposed customer's value went from ``old`` to ``new``
        (their covariate is ``pre``)."""
        return ArmCounts(
            n=self.n,
            sum=self.sum + (new - old),
            sum_squares=self.sum_squares + (new * new - old * old),
            pre_sum=self.pre_sum,
            pre_sum_squares=self.pre_sum_squares,
            cross_sum=self.cross_sum + (new - old) * pre,
        )

    def __add__(self, other: ArmCounts) -> ArmCounts:
        return ArmCounts(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_squares=self.sum_squares + other.sum_squares,
            pre_sum=self.pre_sum + other.pre_sum,
            pre_sum_squares=self.pre_sum_squares + other.pre_sum_squares,
            cross_sum=self.cross_sum + other.cross_sum,
        )

    @classmethod
    def from_values(cls, values: npt.ArrayLike, pre: npt.ArrayLike | None = None) -> ArmCounts:
        """The counts of customers whose KPI values are ``values`` (and covariates ``pre``)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        p = np.zeros_like(v) if pre is None else np.asarray(pre, dtype=np.float64).ravel()
        if p.shape != v.shape:
            raise ValidationError(
                f"pre has {p.shape[0]} values for {v.shape[0]} customers", "$.pre"
            )
        # products summed by numpy (pairwise), not BLAS ``@``: as exact, and a BLAS dot
        # spins threads that cost milliseconds on a busy machine
        return cls(
            n=int(v.shape[0]),
            sum=float(v.sum()),
            sum_squares=float((v * v).sum()),
            pre_sum=float(p.sum()),
            pre_sum_squares=float((p * p).sum()),
            cross_sum=float((v * p).sum()),
        )


class Prior(msgspec.Struct, frozen=True, kw_only=True):
    """A Gaussian prior on the relative lift (GrowthBook's metric prior)."""

    mean: float = 0.0
    stddev: float = 0.1
    #: False: the prior is ignored (the posterior is the data's), as GrowthBook's default
    proper: bool = False


class Analysis(msgspec.Struct, frozen=True, kw_only=True):
    """How to analyse a KPI (defaults are GrowthBook's)."""

    kind: MetricKind = MetricKind.PROPORTION
    difference: Difference = Difference.RELATIVE
    #: 1 - confidence (and credible) level
    alpha: float = 0.05
    #: regression adjustment on the pre-exposure covariate
    cuped: bool = False
    #: always-valid intervals for daily peeking instead of the fixed-horizon t-test
    sequential: bool = False
    sequential_tuning: float = 5000.0
    prior: Prior = msgspec.field(default_factory=Prior)
    #: lower is better (complaints, unsubscribes): chance to win and risk are flipped
    inverse: bool = False
    srm_threshold: float = SRM_THRESHOLD


class FrequentistResult(msgspec.Struct, frozen=True, kw_only=True):
    """A two-sided test of ``treatment`` against ``control`` (gbstats' ``TestResult``)."""

    status: Status
    sequential: bool
    alpha: float
    #: the lift (relative or absolute, per ``Analysis.difference``); gbstats' ``expected``
    estimate: float
    ci_lower: float
    ci_upper: float
    p_value: float
    #: standard error of the estimate (gbstats' ``uplift.stddev``)
    stddev: float
    #: CUPED's coefficient; 0 when not adjusted
    theta: float

    @property
    def significant(self) -> bool:
        return self.status is Status.OK and self.p_value < self.alpha


class BayesianResult(msgspec.Struct, frozen=True, kw_only=True):
    """The posterior of the lift (gbstats' ``BayesianTestResult``)."""

    status: Status
    alpha: float
    #: posterior mean of the lift
    estimate: float
    #: the credible interval at level 1 - alpha
    ci_lower: float
    ci_upper: float
    stddev: float
    #: P(treatment beats control); for an inverse KPI, P(treatment is lower)
    chance_to_win: float
    #: expected loss of shipping the control (what is given up if the treatment is better)
    risk_control: float
    #: expected loss of shipping the treatment
    risk_treatment: float
    theta: float


class Srm(msgspec.Struct, frozen=True, kw_only=True):
    """Sample-ratio mismatch: do the exposed counts fit the configured split?"""

    p_value: float
    threshold: float
    flagged: bool


class ArmSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One arm as the results table shows it: customers, mean (rate), standard deviation."""

    n: int
    mean: float
    stddev: float


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """One variant (``arm``, an index into the campaign's arms) against the control."""

    arm: int
    frequentist: FrequentistResult
    bayesian: BayesianResult


class CampaignResult(msgspec.Struct, frozen=True, kw_only=True):
    arms: tuple[ArmSummary, ...]
    comparisons: tuple[Comparison, ...]
    srm: Srm


# ------------------------------------------------------------------ statistics of one arm
class _Stat(NamedTuple):
    """gbstats' ``Statistic`` reduced to what the tests read."""

    n: int
    mean: float
    unadjusted_mean: float
    variance: float


def _mean(n: int, total: float) -> float:
    return 0.0 if n == 0 else total / n


def _variance(kind: MetricKind, n: int, total: float, squares: float) -> float:
    if kind is MetricKind.PROPORTION:
        m = _mean(n, total)
        return m * (1 - m)
    if n <= 1:
        return 0.0
    return (squares - total * total / n) / (n - 1)


def _plain(kind: MetricKind, c: ArmCounts) -> _Stat:
    m = _mean(c.n, c.sum)
    return _Stat(c.n, m, m, _variance(kind, c.n, c.sum, c.sum_squares))


def _covariance(n: int, cross: float, total: float, pre_total: float) -> float:
    if n <= 1:
        return 0.0
    return (cross - total * pre_total / n) / (n - 1)


def _adjusted(kind: MetricKind, c: ArmCounts, theta: float) -> _Stat:
    """gbstats' ``RegressionAdjustedStatistic`` with this theta."""
    post_mean = _mean(c.n, c.sum)
    pre_mean = _mean(c.n, c.pre_sum)
    if c.n <= 1:
        variance = 0.0
    else:
        variance = (
            _variance(kind, c.n, c.sum, c.sum_squares)
            + theta * theta * _variance(kind, c.n, c.pre_sum, c.pre_sum_squares)
            - 2 * theta * _covariance(c.n, c.cross_sum, c.sum, c.pre_sum)
        )
    return _Stat(c.n, post_mean - theta * pre_mean, post_mean, variance)


def cuped_theta(control: ArmCounts, treatment: ArmCounts, kind: MetricKind) -> float:
    """CUPED's coefficient, pooled over both arms (gbstats' ``compute_theta``): the
    covariance of value and covariate over the covariate's variance; 0 when either pooled
    variance is zero (not finite only for counts beyond floating-point range)."""
    n = control.n + treatment.n
    total = control.sum + treatment.sum
    pre_total = control.pre_sum + treatment.pre_sum
    post_var = _variance(kind, n, total, control.sum_squares + treatment.sum_squares)
    pre_var = _variance(kind, n, pre_total, control.pre_sum_squares + treatment.pre_sum_squares)
    if pre_var == 0 or post_var == 0:
        return 0.0
    cov = _covariance(n, control.cross_sum + treatment.cross_sum, total, pre_total)
    return cov / pre_var


def _stats(
    control: ArmCounts, treatment: ArmCounts, analysis: Analysis
) -> tuple[_Stat, _Stat, float]:
    kind = analysis.kind
    if analysis.cuped:
        theta = cuped_theta(control, treatment, kind)
        if theta != 0:
            return _adjusted(kind, control, theta), _adjusted(kind, treatment, theta), theta
    return _plain(kind, control), _plain(kind, treatment), 0.0


def _diff(a: _Stat, b: _Stat, relative: bool) -> float:
    """gbstats' ``frequentist_diff``."""
    if relative:
        return (b.mean - a.mean) / a.unadjusted_mean
    return b.mean - a.mean


def _diff_variance(a: _Stat, b: _Stat, relative: bool) -> float:
    """gbstats' ``frequentist_variance`` (the delta method for the relative lift)."""
    if relative:
        ma = a.unadjusted_mean
        ma2 = ma * ma
        mb = b.unadjusted_mean
        return b.variance / (ma2 * b.n) + a.variance * (mb * mb) / (ma2 * ma2 * a.n)
    return b.variance / b.n + a.variance / a.n


# ------------------------------------------------------------------ frequentist
def frequentist(
    control: ArmCounts, treatment: ArmCounts, analysis: Analysis | None = None
) -> FrequentistResult:
    """Two-sided test of ``treatment`` against ``control``: fixed-horizon (gbstats'
    ``TwoSidedTTest``) or, with ``analysis.sequential``, always valid
    (``SequentialTwoSidedTTest``)."""
    analysis = _checked_analysis(analysis)
    control = _checked_counts(control, analysis, "$.control")
    treatment = _checked_counts(treatment, analysis, "$.treatment")
    a, b, theta = _stats(control, treatment, analysis)
    if not math.isfinite(theta):
        return _frequentist_default(Status.OUT_OF_RANGE, analysis, 0.0)
    if a.mean == 0 or a.unadjusted_mean == 0:
        return _frequentist_default(Status.ZERO_BASELINE, analysis, theta)
    if a.variance <= 0 or b.variance <= 0:
        return _frequentist_default(Status.ZERO_VARIANCE, analysis, theta)
    relative = analysis.difference is Difference.RELATIVE
    try:
        estimate = _diff(a, b, relative)
        variance = _diff_variance(a, b, relative)
        if analysis.sequential:
            half, p_value = _sequential(a.n + b.n, estimate, variance, analysis)
        else:
            half, p_value = _fixed(a, b, estimate, variance, analysis.alpha)
        stddev = math.sqrt(variance)
    except (ArithmeticError, ValueError):
        return _frequentist_default(Status.OUT_OF_RANGE, analysis, theta)
    figures = (estimate, half, p_value, stddev)
    if not all(math.isfinite(x) for x in figures):
        return _frequentist_default(Status.OUT_OF_RANGE, analysis, theta)
    return FrequentistResult(
        status=Status.OK,
        sequential=analysis.sequential,
        alpha=analysis.alpha,
        estimate=estimate,
        ci_lower=estimate - half,
        ci_upper=estimate + half,
        p_value=p_value,
        stddev=stddev,
        theta=theta,
    )


def _fixed(
    a: _Stat, b: _Stat, estimate: float, variance: float, alpha: float
) -> tuple[float, float]:
    """Half-width and p-value of the Welch t-test (gbstats' ``TwoSidedTTest``)."""
    va = a.variance / a.n
    vb = b.variance / b.n
    dof = (vb + va) ** 2 / (
        b.variance * b.variance / (b.n * b.n * (b.n - 1))
        + a.variance * a.variance / (a.n * a.n * (a.n - 1))
    )
    se = math.sqrt(variance)
    critical = estimate / se
    p_value = 2 * (1 - float(special.stdtr(dof, abs(critical))))
    half = float(special.stdtrit(dof, 1 - alpha / 2)) * se
    return half, p_value


def _sequential(
    n: int, estimate: float, variance: float, analysis: Analysis
) -> tuple[float, float]:
    """Half-width and p-value of the always-valid test (gbstats'
    ``SequentialTwoSidedTTest``: Waudby-Smith et al. 2023, eq. 9, 155 and 161)."""
    alpha = analysis.alpha
    log_alpha = math.log(alpha)
    rho = math.sqrt((-2 * log_alpha + math.log(-2 * log_alpha + 1)) / analysis.sequential_tuning)
    rho2 = rho * rho
    tr2p1 = n * rho2 + 1
    s2 = variance * n
    n_rho = n * rho
    half = math.sqrt(s2) * math.sqrt(
        (2 * tr2p1) * math.log(math.sqrt(tr2p1) / alpha) / (n_rho * n_rho)
    )
    st2 = estimate * estimate * n / variance
    # 1 / e-value = sqrt(tr2p1) / exp(A): gbstats' exp(A) overflows for large effects
    p_value = min(math.sqrt(tr2p1) * math.exp(-(rho2 * st2 / (2 * tr2p1))), 1.0)
    return half, p_value


def _frequentist_default(status: Status, analysis: Analysis, theta: float) -> FrequentistResult:
    return FrequentistResult(
        status=status,
        sequential=analysis.sequential,
        alpha=analysis.alpha,
        estimate=0.0,
        ci_lower=0.0,
        ci_upper=0.0,
        p_value=1.0,
        stddev=0.0,
        theta=theta,
    )


# ------------------------------------------------------------------ Bayesian
def bayesian(
    control: ArmCounts, treatment: ArmCounts, analysis: Analysis | None = None
) -> BayesianResult:
    """The posterior of the lift under ``analysis.prior`` (gbstats' ``EffectBayesianABTest``
    with a relative prior)."""
    analysis = _checked_analysis(analysis)
    control = _checked_counts(control, analysis, "$.control")
    treatment = _checked_counts(treatment, analysis, "$.treatment")
    a, b, theta = _stats(control, treatment, analysis)
    if not math.isfinite(theta):
        return _bayesian_default(Status.OUT_OF_RANGE, analysis, 0.0)
    relative = analysis.difference is Difference.RELATIVE
    if relative and (a.mean == 0 or a.unadjusted_mean == 0):
        return _bayesian_default(Status.ZERO_BASELINE, analysis, theta)
    if a.n == 0 or b.n == 0:
        return _bayesian_default(Status.NO_UNITS, analysis, theta)
    if a.variance <= 0 or b.variance <= 0:
        return _bayesian_default(Status.ZERO_VARIANCE, analysis, theta)
    prior = analysis.prior
    prior_mean = prior.mean
    prior_variance = prior.stddev * prior.stddev
    if not relative:
        # the prior is on the relative lift: in the KPI's unit it scales with the control
        ma = a.unadjusted_mean
        prior_mean = prior_mean * abs(ma)
        prior_variance = prior_variance * (ma * ma)
        if prior.proper and prior_variance == 0:
            return _bayesian_default(Status.ZERO_BASELINE, analysis, theta)
    try:
        data_variance = _diff_variance(a, b, relative)
        data_mean = _diff(a, b, relative)
        if prior.proper:
            precision = 1 / data_variance + 1 / prior_variance
            mean = (data_mean / data_variance + prior_mean / prior_variance) / precision
        else:
            precision = 1 / data_variance
            mean = data_mean
        stddev = math.sqrt(1 / precision)
        z = mean / stddev
        win = float(special.ndtr(z))
        chance = 1 - win if analysis.inverse else win
        lower = float(special.ndtri(analysis.alpha / 2)) * stddev + mean
        upper = float(special.ndtri(1 - analysis.alpha / 2)) * stddev + mean
        risk_control, risk_treatment = _risk(mean, stddev)
    except (ArithmeticError, ValueError):
        return _bayesian_default(Status.OUT_OF_RANGE, analysis, theta)
    if analysis.inverse:
        risk_control, risk_treatment = risk_treatment, risk_control
    figures = (mean, stddev, chance, lower, upper, risk_control, risk_treatment)
    if stddev <= 0 or not all(math.isfinite(x) for x in figures):
        return _bayesian_default(Status.OUT_OF_RANGE, analysis, theta)
    return BayesianResult(
        status=Status.OK,
        alpha=analysis.alpha,
        estimate=mean,
        ci_lower=lower,
        ci_upper=upper,
        stddev=stddev,
        chance_to_win=chance,
        risk_control=risk_control,
        risk_treatment=risk_treatment,
        theta=theta,
    )


def _risk(mu: float, sigma: float) -> tuple[float, float]:
    """Expected loss of choosing control, and of choosing treatment, when the lift is
    N(mu, sigma²): gbstats' ``get_risk``, with scipy's truncated-normal means in closed form
    (``truncnorm._stats``: the densities at the bounds over the log mass in between)."""
    b = (0.0 - mu) / sigma  # the standardized zero
    p_control_better = float(special.ndtr(b))
    # mean of the lift below zero: the truncation [-inf, b]
    if b <= 0:
        log_mass_below = float(special.log_ndtr(b))
    else:
        log_mass_below = math.log1p(-0.0 - float(special.ndtr(-b)))
    mean_below = (0.0 - math.exp(-b * b / 2.0 - _NORM_PDF_LOG_C - log_mass_below)) * sigma + mu
    # mean of the lift above zero: the truncation [b, inf]
    if b > 0:
        log_mass_above = float(special.log_ndtr(-b))
    else:
        log_mass_above = math.log1p(-float(special.ndtr(b)) - 0.0)
    mean_above = (math.exp(-b * b / 2.0 - _NORM_PDF_LOG_C - log_mass_above) - 0.0) * sigma + mu
    risk_control = (1.0 - p_control_better) * mean_above
    risk_treatment = -(p_control_better * mean_below)
    return risk_control, risk_treatment


def _bayesian_default(status: Status, analysis: Analysis, theta: float) -> BayesianResult:
    return BayesianResult(
        status=status,
        alpha=analysis.alpha,
        estimate=0.0,
        ci_lower=0.0,
        ci_upper=0.0,
        stddev=0.0,
        chance_to_win=0.5,
        risk_control=0.0,
        risk_treatment=0.0,
        theta=theta,
    )


# ------------------------------------------------------------------ sample-ratio mismatch
def srm_p_value(users: Sequence[int], weights: Sequence[float]) -> float:
    """gbstats' ``check_srm``: the chi-squared p-value of the exposed counts against the
    expected split (weights need not sum to 1; an arm of weight 0 adds nothing to the
    statistic but counts in the degrees of freedom). 1 when nobody is exposed yet."""
    _check_split(users, weights)
    total = sum(users)
    if not total:
        return 1.0
    total_weight = sum(weights)
    x = 0.0
    for observed, weight in zip(users, weights, strict=True):
        if weight <= 0:
            continue
        expected = weight / total_weight * total
        if expected == 0:  # a weight too small for floats: any customer there is a mismatch
            x = math.inf if observed else x
            continue
        x = x + (observed - expected) ** 2 / expected
    return float(special.chdtrc(len(users) - 1, x))


def srm(users: Sequence[int], weights: Sequence[float], threshold: float = SRM_THRESHOLD) -> Srm:
    """The sample-ratio-mismatch check, flagged below ``threshold``."""
    p = srm_p_value(users, weights)
    return Srm(p_value=p, threshold=threshold, flagged=p < threshold)


def _check_split(users: Sequence[int], weights: Sequence[float]) -> None:
    if len(users) < 2:
        raise ValidationError(f"a split needs at least 2 arms, got {len(users)}", "$.users")
    if len(weights) != len(users):
        raise ValidationError(f"{len(weights)} weights for {len(users)} arms", "$.weights")
    for i, u in enumerate(users):
        if isinstance(u, bool) or not isinstance(u, int) or u < 0:
            raise ValidationError(f"must be a whole number >= 0, got {u!r}", f"$.users[{i}]")
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise ValidationError(f"must be a finite number >= 0, got {w!r}", f"$.weights[{i}]")
    if not sum(weights) > 0:
        raise ValidationError("weights must have a positive sum", "$.weights")


# ------------------------------------------------------------------ many audiences
class Adjustment(enum.StrEnum):
    """How p-values of many comparisons are adjusted (statsmodels' ``multipletests``
    method in brackets)."""

    #: Holm's step-down (``holm``): the family-wise error rate, any false claim
    HOLM = "holm"
    #: Benjamini-Hochberg's step-up (``fdr_bh``): the false discovery rate
    BENJAMINI_HOCHBERG = "benjamini_hochberg"


#: the adjustment of exploratory audience breakdowns (see the module docstring)
EXPLORATORY_ADJUSTMENT = Adjustment.BENJAMINI_HOCHBERG


def adjusted_p_values(
    p_values: Sequence[float], method: Adjustment = EXPLORATORY_ADJUSTMENT
) -> list[float]:
    """Each p-value adjusted for the others, in the order given (statsmodels'
    ``multipletests(p_values, method=...)[1]``). Holm: the i-th smallest of m becomes the
    running maximum of ``(m - j + 1) * p_(j)`` over j <= i; Benjamini-Hochberg: the running
    minimum, from the largest down, of ``m * p_(j) / j`` over j >= i; both capped at 1."""
    m = len(p_values)
    for i, p in enumerate(p_values):
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise ValidationError(f"must be a p-value from 0 to 1, got {p!r}", f"$.p_values[{i}]")
    if m == 0:
        return []
    order = sorted(range(m), key=lambda i: p_values[i])
    ranked = [float(p_values[i]) for i in order]
    out = [0.0] * m
    if method is Adjustment.HOLM:
        running = 0.0
        for j, p in enumerate(ranked):
            running = max(running, min(1.0, (m - j) * p))
            out[order[j]] = running
    else:
        running = 1.0
        for j in range(m - 1, -1, -1):
            running = min(running, ranked[j] / ((j + 1) / m))  # as statsmodels rounds
            out[order[j]] = min(1.0, running)
    return out


class AudienceP(msgspec.Struct, frozen=True, kw_only=True):
    """One audience's p-value: as computed, and as read (``adjusted``: the same for a
    pre-registered audience, adjusted for the exploratory ones otherwise)."""

    p_value: float
    adjusted: float
    exploratory: bool


def audience_p_values(
    p_values: dict[str, float],
    registered: Sequence[str] | frozenset[str] | set[str] = (),
    method: Adjustment = EXPLORATORY_ADJUSTMENT,
) -> dict[str, AudienceP]:
    """The p-value of each audience's breakdown (audience -> p) as a marketer reads it: a
    ``registered`` audience's as it is (confirmatory), the others' adjusted together for how
    many exploratory audiences were looked at, and flagged exploratory."""
    registered = set(registered)
    exploring = [a for a in p_values if a not in registered]
    adjusted = dict(
        zip(exploring, adjusted_p_values([p_values[a] for a in exploring], method), strict=True)
    )
    out: dict[str, AudienceP] = {}
    for audience, p in p_values.items():
        if audience in registered:
            adjusted_p_values([p])  # validated like the others
            out[audience] = AudienceP(p_value=float(p), adjusted=float(p), exploratory=False)
        else:
            out[audience] = AudienceP(
                p_value=float(p), adjusted=adjusted[audience], exploratory=True
            )
    return out


# ------------------------------------------------------------------ a campaign
def summary(counts: ArmCounts, kind: MetricKind) -> ArmSummary:
    """The arm's customers, mean (the conversion rate for a proportion) and standard
    deviation, unadjusted."""
    stat = _plain(kind, counts)
    stddev = math.sqrt(stat.variance) if stat.variance > 0 else 0.0
    if not math.isfinite(stddev):
        stddev = 0.0
    return ArmSummary(n=counts.n, mean=stat.mean, stddev=stddev)


def analyze(
    arms: Sequence[ArmCounts], weights: Sequence[float], analysis: Analysis | None = None
) -> CampaignResult:
    """Every variant against the control (``arms[0]``), frequentist (fixed or sequential,
    per ``analysis.sequential``) and Bayesian, and the SRM check against ``weights`` (the
    configured share of each arm, in the same order)."""
    analysis = _checked_analysis(analysis)
    if len(arms) < 2:
        raise ValidationError(
            f"a campaign needs a control and a variant, got {len(arms)} arms", "$.arms"
        )
    arms = [_checked_counts(c, analysis, f"$.arms[{i}]") for i, c in enumerate(arms)]
    control = arms[0]
    comparisons = tuple(
        Comparison(
            arm=i,
            frequentist=frequentist(control, arms[i], analysis),
            bayesian=bayesian(control, arms[i], analysis),
        )
        for i in range(1, len(arms))
    )
    return CampaignResult(
        arms=tuple(summary(c, analysis.kind) for c in arms),
        comparisons=comparisons,
        srm=srm([c.n for c in arms], weights, analysis.srm_threshold),
    )


# ------------------------------------------------------------------ validation
def _checked_analysis(analysis: Analysis | None) -> Analysis:
    if analysis is None:
        return _DEFAULT
    if not 0.0 < analysis.alpha < 1.0:
        raise ValidationError(f"alpha must be in (0, 1), got {analysis.alpha}", "$.alpha")
    if not (math.isfinite(analysis.sequential_tuning) and analysis.sequential_tuning > 0):
        raise ValidationError(
            f"must be a positive number, got {analysis.sequential_tuning}", "$.sequential_tuning"
        )
    prior = analysis.prior
    if not math.isfinite(prior.mean):
        raise ValidationError(f"must be finite, got {prior.mean}", "$.prior.mean")
    if not (math.isfinite(prior.stddev) and prior.stddev > 0):
        raise ValidationError(f"must be a positive number, got {prior.stddev}", "$.prior.stddev")
    if not 0.0 < analysis.srm_threshold < 1.0:
        raise ValidationError(f"must be in (0, 1), got {analysis.srm_threshold}", "$.srm_threshold")
    return analysis


_DEFAULT = Analysis()


def _checked_counts(c: ArmCounts, analysis: Analysis, path: str) -> ArmCounts:
    """``c`` with a Python int ``n`` and float sums, or a ``ValidationError``."""
    n = c.n
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValidationError(f"must be a whole number >= 0, got {n!r}", f"{path}.n")
    names = ["sum", "sum_squares"]
    if analysis.cuped:
        names += ["pre_sum", "pre_sum_squares", "cross_sum"]
    for name in names:
        value = getattr(c, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float | np.integer | np.floating)
            or not math.isfinite(value)
        ):
            raise ValidationError(f"must be a finite number, got {value!r}", f"{path}.{name}")
    for name in ("sum_squares", "pre_sum_squares") if analysis.cuped else ("sum_squares",):
        if getattr(c, name) < 0:
            raise ValidationError(
                f"a sum of squares is >= 0, got {getattr(c, name)!r}", f"{path}.{name}"
            )
    if analysis.kind is MetricKind.PROPORTION:
        _check_converters(c.sum, n, f"{path}.sum")
        if analysis.cuped:
            _check_converters(c.pre_sum, n, f"{path}.pre_sum")
            _check_converters(c.cross_sum, min(c.sum, c.pre_sum), f"{path}.cross_sum")
    if not analysis.cuped:
        return ArmCounts(n=int(n), sum=float(c.sum), sum_squares=float(c.sum_squares))
    return ArmCounts(
        n=int(n),
        sum=float(c.sum),
        sum_squares=float(c.sum_squares),
        pre_sum=float(c.pre_sum),
        pre_sum_squares=float(c.pre_sum_squares),
        cross_sum=float(c.cross_sum),
    )


def _check_converters(value: float, most: float, path: str) -> None:
    if not (0 <= value <= most and float(value).is_integer()):
        raise ValidationError(
            f"a count of customers must be a whole number in [0, {most:g}], got {value!r}", path
        )
