"""Do the experiment statistics keep their promises? Calibration on seeded campaigns, and what
the statistics and a counter update cost.

A light generator makes the counters a campaign would have (``ArmCounts`` per arm, day by
day: exposed customers, the KPI's sums, and a pre-exposure covariate for CUPED) from
per-customer draws, then ``nextbest.experiments.statistics`` reads them as a marketer would.
Each customer is exposed on one day, drawn into control with the configured share (or a
broken one), and their KPI outcome is known on that day (the attribution window is not
modelled). Scenarios, ``--campaigns`` each (1,000 by default), 30 days:

- **A/A** (no effect), a 5 % conversion KPI, 500 customers a day (15,000 a campaign), 50/50:
  the fixed-horizon false-positive rate at the end (p < 0.05: must be 5 % +- 1.5 %); with
  daily peeking (significant on any day), fixed-horizon against sequential (the sequential
  test must stay <= 5 %); the Bayesian chance to win above 95 % at the end; SRM false flags.
- **Effect**: +10 % relative on 5 %, 2,000 customers a day (60,000 a campaign; about 80 %
  power for a fixed-horizon test by the normal approximation, printed beside): power of the
  fixed test at the end, of the sequential test peeked daily, of the Bayesian 95 % rule; the
  day the sequential test first detects it; coverage of the true lift by the 95 % intervals.
- **Broken split**: a 50/50 campaign whose treatment loses exposures (49/51, 48/52, and a
  0.5-point skew): how often and how soon the SRM check flags it.
- **CUPED**: a spend KPI (gamma-distributed pre-period spend, post spend correlated with it,
  about 0.7) and the conversion KPI with its binary covariate (converted in the 30 days
  before): the interval width with CUPED over without, on the same counts; A/A false
  positives with CUPED; power at +3 % spend with and without.

On simulated engine data (``--part engine``): the synthetic bank (``nextbest.sim``, world
``default``, ``--sim-customers`` customers over ``--sim-days`` days, the nextbest policy) run
through a real engine on the example catalog with the always-on banners' campaign starting on
day ``--sim-start-day`` (so its customers have a pre-exposure month of events) and two more
guardrail KPIs the simulated customers send often: spend (``Transaction Posted``, its
``amount`` summed: a value KPI) and digital engagement (``Calculator Used``, a conversion).
The counters the engine kept at ingest, covariates frozen at each first exposure, are read
by ``experiments.report``: per KPI, the CUPED interval's width over the plain one's.

Then the timings: ``analyze`` of a campaign with 1,000,000 exposed customers in 4 arms
(control + 3 variants; fixed and Bayesian tests per variant and the SRM check; with CUPED;
sequential) beside recomputing the counts from 1 M per-customer values (``from_values``,
what a system without counters would do) and, when gbstats is importable
(``PYTHONPATH=/tmp/gbstats_pkg``), gbstats' classes on the same counts; and a counter update
per event (``expose``, ``revalue``, ``+``) beside a trivial call of the same arguments.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics as pystats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import special

from _common import EXAMPLE_CATALOG, Run, add_run_args, log, ratios, table, time_calls
from nextbest.experiments import statistics as st

FIELDS = ("n", "sum", "sum_squares", "pre_sum", "pre_sum_squares", "cross_sum")
PROPORTION = st.Analysis()
SEQUENTIAL = st.Analysis(sequential=True)
MEAN = st.Analysis(kind=st.MetricKind.MEAN)


class World(NamedTuple):
    """What the generator draws: the KPI and its covariate."""

    kind: st.MetricKind
    base: float  # the control's conversion rate (proportion) or pre-period mean spend (mean)
    lift: float  # relative effect of the treatment on the KPI


# ------------------------------------------------------------------ the generator
def _draw(rng: np.random.Generator, world: World, treated: np.ndarray) -> tuple:
    """Per-customer (value, pre): a KPI correlated with a pre-exposure covariate."""
    size = treated.shape[0]
    effect = 1.0 + world.lift * treated
    if world.kind is st.MetricKind.PROPORTION:
        # 20 % converted in the 30 days before; they convert 3x as often, the rest half as
        # often: the overall rate stays ``base``
        pre = (rng.random(size) < 0.2).astype(np.float64)
        rate = world.base * np.where(pre > 0, 3.0, 0.5) * effect
        value = (rng.random(size) < rate).astype(np.float64)
    else:
        # spend: pre-period gamma(2, base/2) (mean base, sd 0.71 base); post 0.8 x pre plus
        # noise of the same size: correlation about 0.71
        scale = world.base / 2.0
        pre = rng.gamma(2.0, scale, size)
        value = (0.8 * pre + rng.normal(0.0, 0.8 * scale * math.sqrt(2.0), size)) * effect
    return value, pre


def simulate(
    rng: np.random.Generator,
    world: World,
    *,
    campaigns: int,
    days: int,
    per_day: int,
    control_share: float = 0.5,
    rows: int = 2_000_000,
) -> np.ndarray:
    """Cumulative counts, shape (campaigns, days, 2 arms, 6 fields in ``FIELDS`` order):
    what each campaign's counters would read at the end of each day."""
    out = np.zeros((campaigns, days, 2, len(FIELDS)))
    customers = days * per_day
    day = np.repeat(np.arange(days), per_day)
    chunk = max(1, rows // customers)  # campaigns drawn at once: memory stays bounded
    for start in range(0, campaigns, chunk):
        k = min(chunk, campaigns - start)
        treated = (rng.random((k, customers)) >= control_share).astype(np.int64)
        value, pre = _draw(rng, world, treated.ravel())
        cell = (np.arange(k)[:, None] * days + day[None, :]) * 2 + treated
        cell = cell.ravel()
        size = k * days * 2
        columns = [
            np.bincount(cell, minlength=size),
            np.bincount(cell, value, size),
            np.bincount(cell, value * value, size),
            np.bincount(cell, pre, size),
            np.bincount(cell, pre * pre, size),
            np.bincount(cell, value * pre, size),
        ]
        daily = np.stack(columns, axis=-1).reshape(k, days, 2, len(FIELDS))
        out[start : start + k] = np.cumsum(daily, axis=1)
    return out


def arms(row: np.ndarray) -> tuple[st.ArmCounts, st.ArmCounts]:
    """(control, treatment) counts from one campaign-day of ``simulate``."""
    return _counts(row[0]), _counts(row[1])


def _counts(c: np.ndarray) -> st.ArmCounts:
    return st.ArmCounts(
        n=int(c[0]),
        sum=float(c[1]),
        sum_squares=float(c[2]),
        pre_sum=float(c[3]),
        pre_sum_squares=float(c[4]),
        cross_sum=float(c[5]),
    )


# ------------------------------------------------------------------ reading campaigns
def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def a_a(counts: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """False positives of A/A campaigns: at the end, and with daily peeking."""
    campaigns, days = counts.shape[:2]
    tuned = _tuned(counts)
    fixed_end, fixed_any, seq_end, seq_any, bayes_end, bayes_any = [], [], [], [], [], []
    srm_end, srm_any, covered, tuned_any = [], [], [], []
    for c in range(campaigns):
        f_hits, s_hits, b_hits, r_hits, t_hits = [], [], [], [], []
        for d in range(days):
            control, treatment = arms(counts[c, d])
            f = st.frequentist(control, treatment, PROPORTION)
            s = st.frequentist(control, treatment, SEQUENTIAL)
            t = st.frequentist(control, treatment, tuned)
            b = st.bayesian(control, treatment, PROPORTION)
            f_hits.append(f.status is st.Status.OK and f.p_value < alpha)
            s_hits.append(s.status is st.Status.OK and s.p_value < alpha)
            t_hits.append(t.status is st.Status.OK and t.p_value < alpha)
            b_hits.append(b.status is st.Status.OK and b.chance_to_win > 0.95)
            r_hits.append(st.srm([control.n, treatment.n], [0.5, 0.5]).flagged)
        fixed_end.append(f_hits[-1])
        fixed_any.append(any(f_hits))
        seq_end.append(s_hits[-1])
        seq_any.append(any(s_hits))
        tuned_any.append(any(t_hits))
        bayes_end.append(b_hits[-1])
        bayes_any.append(any(b_hits))
        srm_end.append(r_hits[-1])
        srm_any.append(any(r_hits))
        covered.append(f.ci_lower <= 0.0 <= f.ci_upper)
    return {
        "campaigns": campaigns,
        "days": days,
        "false_positive_fixed_at_end": _share(fixed_end),
        "false_positive_fixed_peeking_daily": _share(fixed_any),
        "false_positive_sequential_at_end": _share(seq_end),
        "false_positive_sequential_peeking_daily": _share(seq_any),
        "sequential_tuning_planned": tuned.sequential_tuning,
        "false_positive_sequential_planned_tuning_peeking_daily": _share(tuned_any),
        "bayes_chance_to_win_over_95_at_end": _share(bayes_end),
        "bayes_chance_to_win_over_95_peeking_daily": _share(bayes_any),
        "srm_flagged_at_end": _share(srm_end),
        "srm_flagged_peeking_daily": _share(srm_any),
        "fixed_ci_covers_zero_at_end": _share(covered),
    }


def effect(counts: np.ndarray, lift: float, alpha: float = 0.05) -> dict[str, Any]:
    """Power and coverage when the treatment really lifts the KPI by ``lift``."""
    campaigns, days = counts.shape[:2]
    tuned = _tuned(counts)
    fixed, seq_any, bayes, covered, estimates, first_day = [], [], [], [], [], []
    tuned_any: list[bool] = []
    tuned_first_day: list[int] = []
    for c in range(campaigns):
        control, treatment = arms(counts[c, -1])
        f = st.frequentist(control, treatment, PROPORTION)
        b = st.bayesian(control, treatment, PROPORTION)
        fixed.append(f.status is st.Status.OK and f.p_value < alpha and f.estimate > 0)
        bayes.append(b.status is st.Status.OK and b.chance_to_win > 0.95)
        covered.append(f.ci_lower <= lift <= f.ci_upper)
        estimates.append(f.estimate)
        detected = _first_detection(counts[c], SEQUENTIAL, alpha)
        seq_any.append(detected is not None)
        if detected is not None:
            first_day.append(detected)
        detected = _first_detection(counts[c], tuned, alpha)
        tuned_any.append(detected is not None)
        if detected is not None:
            tuned_first_day.append(detected)
    n_arm = counts[0, -1, 0, 0]
    return {
        "campaigns": campaigns,
        "days": days,
        "lift": lift,
        "customers_per_campaign": int(counts[0, -1, :, 0].sum()),
        "power_fixed_at_end": _share(fixed),
        "power_normal_approximation": _normal_power(PROPORTION_RATE, lift, int(n_arm), alpha),
        "power_sequential_peeking_daily": _share(seq_any),
        "power_bayes_chance_to_win_over_95_at_end": _share(bayes),
        "sequential_first_detection_day_median": (pystats.median(first_day) if first_day else None),
        "sequential_tuning_planned": tuned.sequential_tuning,
        "power_sequential_planned_tuning_peeking_daily": _share(tuned_any),
        "sequential_planned_tuning_first_detection_day_median": (
            pystats.median(tuned_first_day) if tuned_first_day else None
        ),
        "fixed_ci_covers_true_lift": _share(covered),
        "mean_estimated_lift": float(np.mean(estimates)),
    }


PROPORTION_RATE = 0.05


def _tuned(counts: np.ndarray) -> st.Analysis:
    """The sequential test tuned to the planned sample (GrowthBook's advice: the tuning
    parameter near the number of customers expected), instead of the default 5,000."""
    planned = float(counts[0, -1, :, 0].sum())
    return st.Analysis(sequential=True, sequential_tuning=planned)


def _first_detection(days: np.ndarray, analysis: st.Analysis, alpha: float) -> int | None:
    """The first day (1-based) a campaign's sequential test finds a positive effect."""
    for d in range(days.shape[0]):
        s = st.frequentist(*arms(days[d]), analysis)
        if s.status is st.Status.OK and s.p_value < alpha and s.estimate > 0:
            return d + 1
    return None


def _normal_power(p: float, lift: float, n_arm: int, alpha: float) -> float:
    """Two-sided z-test power for rates p and p(1 + lift) with n_arm customers per arm."""
    q = p * (1 + lift)
    se = math.sqrt(p * (1 - p) / n_arm + q * (1 - q) / n_arm)
    z = (q - p) / se
    crit = 1.959963984540054 if alpha == 0.05 else float(special.ndtri(1 - alpha / 2))
    return float(special.ndtr(z - crit))


def sequential_power(counts: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """How often the sequential test, peeked daily, finds a real effect at this size."""
    tuned = _tuned(counts)
    default_hits, tuned_hits, fixed_hits = [], [], []
    for c in range(counts.shape[0]):
        default_hits.append(_first_detection(counts[c], SEQUENTIAL, alpha) is not None)
        tuned_hits.append(_first_detection(counts[c], tuned, alpha) is not None)
        f = st.frequentist(*arms(counts[c, -1]), PROPORTION)
        fixed_hits.append(f.status is st.Status.OK and f.p_value < alpha and f.estimate > 0)
    return {
        "customers_per_campaign": int(counts[0, -1, :, 0].sum()),
        "power_fixed_at_end": _share(fixed_hits),
        "power_sequential_peeking_daily": _share(default_hits),
        "power_sequential_planned_tuning_peeking_daily": _share(tuned_hits),
    }


def broken_split(counts: np.ndarray) -> dict[str, Any]:
    """How often and how soon SRM flags campaigns whose real split is not the configured."""
    campaigns, days = counts.shape[:2]
    flagged_end, first = [], []
    for c in range(campaigns):
        for d in range(days):
            n = counts[c, d, :, 0]
            if st.srm([int(n[0]), int(n[1])], [0.5, 0.5]).flagged:
                first.append(d + 1)
                break
        flagged_end.append(st.srm([int(x) for x in counts[c, -1, :, 0]], [0.5, 0.5]).flagged)
    return {
        "flagged_at_end": _share(flagged_end),
        "flagged_some_day": len(first) / campaigns,
        "first_flag_day_median": pystats.median(first) if first else None,
    }


def cuped(counts: np.ndarray, analysis: st.Analysis, lift: float = 0.0) -> dict[str, Any]:
    """The interval with CUPED over without, on the same counts, and the significance rates."""
    plain = st.Analysis(kind=analysis.kind)
    adjusted = st.Analysis(kind=analysis.kind, cuped=True)
    ratio, plain_hits, cuped_hits, thetas = [], [], [], []
    for c in range(counts.shape[0]):
        control, treatment = arms(counts[c, -1])
        p = st.frequentist(control, treatment, plain)
        a = st.frequentist(control, treatment, adjusted)
        if p.status is st.Status.OK and a.status is st.Status.OK:
            ratio.append((a.ci_upper - a.ci_lower) / (p.ci_upper - p.ci_lower))
        plain_hits.append(p.status is st.Status.OK and p.p_value < 0.05)
        cuped_hits.append(a.status is st.Status.OK and a.p_value < 0.05)
        thetas.append(a.theta)
    key = "false_positive" if lift == 0 else "power"
    return {
        "lift": lift,
        "ci_width_ratio_median": pystats.median(ratio),
        "ci_width_ratio_p10_p90": [float(np.quantile(ratio, 0.1)), float(np.quantile(ratio, 0.9))],
        "variance_reduction_median": 1 - pystats.median(ratio) ** 2,
        f"{key}_plain": _share(plain_hits),
        f"{key}_cuped": _share(cuped_hits),
        "theta_median": pystats.median(thetas),
    }


# ------------------------------------------------------------------ timings
def _campaign_counts(rng: np.random.Generator, total: int, arms_: int) -> list[st.ArmCounts]:
    """A campaign of ``total`` exposed customers split evenly over ``arms_`` arms (counts
    drawn, as 1 M customers' counters would read)."""
    out = []
    for i in range(arms_):
        n = total // arms_
        conv = int(rng.binomial(n, 0.05 * (1 + 0.02 * i)))
        pre = int(rng.binomial(n, 0.2))
        both = int(rng.binomial(min(conv, pre), 0.5))
        out.append(
            st.ArmCounts(
                n=n,
                sum=float(conv),
                sum_squares=float(conv),
                pre_sum=float(pre),
                pre_sum_squares=float(pre),
                cross_sum=float(both),
            )
        )
    return out


def _gbstats_campaign() -> Callable[[list[st.ArmCounts], bool], object] | None:
    """gbstats' classes on the same counts (the same tests as ``analyze``), when importable."""
    try:
        from gbstats.bayesian.tests import EffectBayesianABTest
        from gbstats.frequentist.tests import TwoSidedTTest
        from gbstats.models.statistics import (
            ProportionStatistic,
            RegressionAdjustedStatistic,
        )
        from gbstats.utils import check_srm
    except ImportError:
        return None

    def stat(c: st.ArmCounts, ra: bool) -> Any:
        post = ProportionStatistic(n=c.n, sum=c.sum)
        if not ra:
            return post
        return RegressionAdjustedStatistic(
            n=c.n,
            post_statistic=post,
            pre_statistic=ProportionStatistic(n=c.n, sum=c.pre_sum),
            post_pre_sum_of_products=c.cross_sum,
            theta=0,
        )

    def run(arms_: list[st.ArmCounts], ra: bool) -> object:
        for t in arms_[1:]:
            TwoSidedTTest(stat(arms_[0], ra), stat(t, ra)).compute_result()
            EffectBayesianABTest(stat(arms_[0], ra), stat(t, ra)).compute_result()
        return check_srm([c.n for c in arms_], [1.0] * len(arms_))

    return run


def _noop(*args: object) -> None:
    return None


def timings(rng: np.random.Generator, calls: int, customers: int) -> dict[str, Any]:
    counts = _campaign_counts(rng, customers, 4)
    weights = [0.25] * 4
    sequential = st.Analysis(sequential=True)
    cuped_ = st.Analysis(cuped=True)
    values = (rng.random(customers) < 0.05).astype(np.float64)
    pre = (rng.random(customers) < 0.2).astype(np.float64)
    inputs = list(range(calls))
    cases: dict[str, Callable[[int], object]] = {
        "trivial": lambda i: _noop(counts, weights),
        "analyze_4_arms": lambda i: st.analyze(counts, weights),
        "analyze_4_arms_cuped": lambda i: st.analyze(counts, weights, cuped_),
        "analyze_4_arms_sequential": lambda i: st.analyze(counts, weights, sequential),
        "frequentist_one_variant": lambda i: st.frequentist(counts[0], counts[1]),
        "bayesian_one_variant": lambda i: st.bayesian(counts[0], counts[1]),
        "srm_4_arms": lambda i: st.srm([c.n for c in counts], weights),
    }
    gb = _gbstats_campaign()
    if gb is not None:
        cases["gbstats_4_arms"] = lambda i: gb(counts, False)
        cases["gbstats_4_arms_cuped"] = lambda i: gb(counts, True)
    out: dict[str, Any] = {}
    for name, call in cases.items():
        # gbstats takes milliseconds a call: a fiftieth of the calls is plenty
        some = inputs[: max(50, calls // 50)] if name.startswith("gbstats") else inputs
        out[name] = time_calls(call, some, warmup=inputs[:20])
        log(f"{name}: p50 {out[name]['p50_us']:.1f} µs")
    # the counts from raw rows: what results would cost without counters
    raw = [0] * 5
    out["from_values_rows"] = time_calls(
        lambda i: st.ArmCounts.from_values(values, pre), raw, warmup=raw[:1]
    )
    log(f"from_values: p50 {out['from_values_rows']['p50_us']:.0f} µs")

    # a counter update per event
    arm = counts[0]
    events = [(float(rng.random() < 0.2), float(rng.random() < 0.05)) for _ in range(calls)]
    updates: dict[str, Callable[[tuple[float, float]], object]] = {
        "update_trivial": lambda e: _noop(arm, e[0], e[1]),
        "expose": lambda e: arm.expose(e[0]),
        "revalue": lambda e: arm.revalue(0.0, e[1], e[0]),
        "merge": lambda e: arm + arm,
    }
    for name, call in updates.items():
        out[name] = time_calls(call, events, warmup=events[:50])
        log(f"{name}: p50 {out[name]['p50_us']:.2f} µs")
    return out


# ------------------------------------------------------------------ main
def calibration(rng: np.random.Generator, args: argparse.Namespace) -> dict[str, Any]:
    """Every calibration scenario of the module docstring."""
    shape = {"campaigns": args.campaigns, "days": args.days}
    conversion = World(st.MetricKind.PROPORTION, PROPORTION_RATE, 0.0)
    spend = World(st.MetricKind.MEAN, 100.0, 0.0)
    results: dict[str, Any] = {}
    t = time.perf_counter()
    aa_counts = simulate(rng, conversion, per_day=args.per_day, **shape)
    results["a_a"] = a_a(aa_counts)
    log(f"A/A: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    lifted = conversion._replace(lift=args.lift)
    results["effect"] = effect(
        simulate(rng, lifted, per_day=args.power_per_day, **shape), args.lift
    )
    results["sequential_power_by_size"] = {}
    for factor in (2, 3):
        bigger = simulate(rng, lifted, per_day=factor * args.power_per_day, **shape)
        results["sequential_power_by_size"][str(factor)] = sequential_power(bigger)
    log(f"effect: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    results["broken_split"] = {}
    for control_share in (0.505, 0.51, 0.52, 0.55):
        broken = simulate(
            rng, conversion, per_day=args.per_day, control_share=control_share, **shape
        )
        results["broken_split"][f"{control_share:.3f}"] = broken_split(broken)
    results["broken_split"]["0.500"] = broken_split(aa_counts)
    log(f"broken split: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    spend_aa = simulate(rng, spend, per_day=args.per_day, **shape)
    spend_lift = simulate(rng, spend._replace(lift=args.spend_lift), per_day=args.per_day, **shape)
    results["cuped"] = {
        "spend_a_a": cuped(spend_aa, MEAN),
        "spend_effect": cuped(spend_lift, MEAN, args.spend_lift),
        "conversion_a_a": cuped(aa_counts, PROPORTION),
    }
    log(f"CUPED: {time.perf_counter() - t:.1f} s")

    return results


ENGINE_CAMPAIGN = "always_on_products"


def engine_cuped(args: argparse.Namespace) -> dict[str, Any]:
    """CUPED on the counters a real engine kept for a simulated bank (module docstring)."""
    from nextbest.sim.engines import LocalEngine
    from nextbest.sim.generate import DEFAULT_START
    from nextbest.sim.loop import evaluate
    from nextbest.usecases import experiment_result

    began = time.perf_counter()
    starts = (DEFAULT_START + timedelta(days=args.sim_start_day)).isoformat()
    kept: dict[str, LocalEngine] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bank"
        shutil.copytree(EXAMPLE_CATALOG, folder)
        campaigns = folder / "campaigns.yaml"
        text = campaigns.read_text()
        anchor = "    kpi: Application Started\n"
        assert text.count(anchor) == 1, "the always-on campaign's KPI line moved"
        extra = (
            anchor
            + f"    start: {starts}\n"
            + "    guardrails:\n"
            + "      - {event: Transaction Posted, value: amount, direction: increase}\n"
            + "      - {event: Calculator Used, direction: increase}\n"
        )
        campaigns.write_text(text.replace(anchor, extra))

        def engine_for(policy: str, catalog: Any) -> LocalEngine:
            kept[policy] = LocalEngine(catalog)
            return kept[policy]

        evaluate(
            args.seed,
            args.sim_customers,
            args.sim_days,
            ["nextbest"],
            folder,
            engine_for=engine_for,
        )
    engine = kept["nextbest"].engine
    result = experiment_result(engine.catalog, engine.experiment_counters(), ENGINE_CAMPAIGN)
    counters = engine.experiment_counters(customers=True)[ENGINE_CAMPAIGN]
    with_pre = [
        sum(1 for e in counters.customers.values() if len(e.pre) > i and e.pre[i])
        for i in range(len(result.kpis))
    ]
    kpis: list[dict[str, Any]] = []
    for i, kpi in enumerate(result.kpis):
        control, treated = kpi.arms[0], kpi.arms[1]
        c = treated.cuped
        kpis.append(
            {
                "event": kpi.event,
                "kind": kpi.kind,
                "exposed": [control.exposed, treated.exposed],
                "conversions": [control.conversions, treated.conversions],
                "customers_with_a_covariate": with_pre[i],
                "status": treated.status,
                "lift": treated.lift,
                "interval": [treated.ci_lower, treated.ci_upper],
                "cuped_lift": None if c is None else c.lift,
                "cuped_interval": None if c is None else [c.ci_lower, c.ci_upper],
                "theta": None if c is None else c.theta,
                "interval_ratio": None if c is None else c.interval_ratio,
            }
        )
    log(f"engine CUPED: {time.perf_counter() - began:.0f} s")
    return {
        "customers": args.sim_customers,
        "days": args.sim_days,
        "campaign": ENGINE_CAMPAIGN,
        "campaign_starts_day": args.sim_start_day,
        "exposed": len(counters.customers),
        "kpis": kpis,
    }


def report_engine(r: dict[str, Any]) -> None:
    print()
    print(
        table(
            f"CUPED on simulated engine data: {r['campaign']}, {r['customers']:,} customers x "
            f"{r['days']} days, campaign from day {r['campaign_starts_day']}, "
            f"{r['exposed']:,} exposed",
            ["KPI", "exposed c/t", "with covariate", "lift, interval", "CUPED", "width ratio"],
            [
                [
                    f"{k['event']} ({k['kind']})",
                    f"{k['exposed'][0]:,} / {k['exposed'][1]:,}",
                    f"{k['customers_with_a_covariate']:,}",
                    "-"
                    if k["status"] != "ok"
                    else f"{k['lift']:+.1%} [{k['interval'][0]:+.1%}, {k['interval'][1]:+.1%}]",
                    "-"
                    if k["cuped_lift"] is None
                    else f"{k['cuped_lift']:+.1%} [{k['cuped_interval'][0]:+.1%}, "
                    f"{k['cuped_interval'][1]:+.1%}] theta {k['theta']:.3g}",
                    "-" if k["interval_ratio"] is None else f"{k['interval_ratio']:.3f}",
                ]
                for k in r["kpis"]
            ],
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "experiments_calibration")
    ap.add_argument("--campaigns", type=int, default=1_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=int, default=500, help="customers a day (A/A, SRM, CUPED)")
    ap.add_argument("--power-per-day", type=int, default=2_000, help="customers a day (effect)")
    ap.add_argument("--lift", type=float, default=0.10, help="relative effect on conversion")
    ap.add_argument("--spend-lift", type=float, default=0.03, help="relative effect on spend")
    ap.add_argument("--calls", type=int, default=20_000, help="timed calls per case")
    ap.add_argument("--customers", type=int, default=1_000_000, help="exposed, timed campaign")
    ap.add_argument(
        "--part",
        choices=["all", "calibration", "timings", "engine"],
        default="all",
        help="calibration is CPU-heavy (run it under nice), timings want a quiet CPU",
    )
    ap.add_argument("--sim-customers", type=int, default=3_000, help="engine part: customers")
    ap.add_argument("--sim-days", type=int, default=60, help="engine part: days simulated")
    ap.add_argument(
        "--sim-start-day", type=int, default=30, help="engine part: the campaign's first day"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.campaigns, args.days, args.per_day, args.power_per_day = 60, 5, 200, 800
        args.calls, args.customers = 300, 20_000
        args.sim_customers, args.sim_days, args.sim_start_day = 300, 20, 10
    suffix = "" if args.part == "all" else f"_{args.part}"
    args.name = args.name or f"experiments{suffix or '_calibration'}" + (
        "_quick" if args.quick else ""
    )
    run = Run("experiments_calibration", args, "numpy", "scipy")
    results: dict[str, Any] = {}
    if args.part in ("all", "calibration"):
        results.update(calibration(np.random.default_rng(args.seed), args))
    if args.part in ("all", "timings"):
        results["timings"] = timings(
            np.random.default_rng(args.seed + 1), args.calls, args.customers
        )
        results["timings_customers"] = args.customers
    if args.part in ("all", "engine"):
        results["engine"] = engine_cuped(args)
    report(results)
    run.write({"results": results})
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def report(r: dict[str, Any]) -> None:
    if "a_a" in r:
        report_calibration(r)
    if "timings" in r:
        report_timings(r["timings"])
    if "engine" in r:
        report_engine(r["engine"])


def report_calibration(r: dict[str, Any]) -> None:
    aa, ef = r["a_a"], r["effect"]
    print()
    print(
        table(
            f"A/A: {aa['campaigns']:,} campaigns x {aa['days']} days, 5 % conversion, 50/50",
            ["what", "rate"],
            [
                ["fixed-horizon p < 0.05, at the end", _pct(aa["false_positive_fixed_at_end"])],
                ["fixed-horizon, peeking daily", _pct(aa["false_positive_fixed_peeking_daily"])],
                ["sequential, at the end", _pct(aa["false_positive_sequential_at_end"])],
                ["sequential, peeking daily", _pct(aa["false_positive_sequential_peeking_daily"])],
                [
                    f"sequential tuned {aa['sequential_tuning_planned']:,.0f}, daily",
                    _pct(aa["false_positive_sequential_planned_tuning_peeking_daily"]),
                ],
                ["Bayes chance to win > 95 %, end", _pct(aa["bayes_chance_to_win_over_95_at_end"])],
                [
                    "Bayes chance to win > 95 %, daily",
                    _pct(aa["bayes_chance_to_win_over_95_peeking_daily"]),
                ],
                ["SRM flagged, at the end", _pct(aa["srm_flagged_at_end"])],
                ["SRM flagged, peeking daily", _pct(aa["srm_flagged_peeking_daily"])],
            ],
        )
    )
    print()
    print(
        table(
            f"Effect: +{100 * ef['lift']:.0f} % on 5 %, {ef['customers_per_campaign']:,} "
            "customers a campaign",
            ["what", "value"],
            [
                ["power, fixed-horizon at the end", _pct(ef["power_fixed_at_end"])],
                ["power, normal approximation", _pct(ef["power_normal_approximation"])],
                ["power, sequential peeking daily", _pct(ef["power_sequential_peeking_daily"])],
                [
                    "power, Bayes > 95 % at the end",
                    _pct(ef["power_bayes_chance_to_win_over_95_at_end"]),
                ],
                [
                    "sequential: median day detected",
                    str(ef["sequential_first_detection_day_median"]),
                ],
                [
                    f"power, sequential tuned {ef['sequential_tuning_planned']:,.0f}, daily",
                    _pct(ef["power_sequential_planned_tuning_peeking_daily"]),
                ],
                [
                    "sequential tuned: median day detected",
                    str(ef["sequential_planned_tuning_first_detection_day_median"]),
                ],
                ["fixed 95 % CI covers the true lift", _pct(ef["fixed_ci_covers_true_lift"])],
                ["mean estimated lift", _pct(ef["mean_estimated_lift"])],
            ],
        )
    )
    print()
    sizes = [("1", ef), *sorted(r["sequential_power_by_size"].items())]
    print(
        table(
            "Power by campaign size (same effect)",
            ["customers", "fixed at end", "sequential daily", "sequential tuned daily"],
            [
                [
                    f"{v['customers_per_campaign']:,}",
                    _pct(v["power_fixed_at_end"]),
                    _pct(v["power_sequential_peeking_daily"]),
                    _pct(v["power_sequential_planned_tuning_peeking_daily"]),
                ]
                for _, v in sizes
            ],
        )
    )
    print()
    rows = []
    for share, b in sorted(r["broken_split"].items()):
        rows.append(
            [
                f"{100 * float(share):.1f} / {100 - 100 * float(share):.1f}",
                _pct(b["flagged_at_end"]),
                _pct(b["flagged_some_day"]),
                str(b["first_flag_day_median"]),
            ]
        )
    print(
        table(
            "SRM on a configured 50/50",
            ["real split", "flagged at end", "some day", "median day"],
            rows,
        )
    )
    print()
    c = r["cuped"]
    print(
        table(
            "CUPED on the same counts (fixed-horizon 95 % interval)",
            ["KPI", "width ratio (median)", "p10-p90", "plain", "CUPED"],
            [
                [
                    name,
                    f"{v['ci_width_ratio_median']:.3f}",
                    "{:.3f}-{:.3f}".format(*v["ci_width_ratio_p10_p90"]),
                    _pct(v.get("false_positive_plain", v.get("power_plain"))),
                    _pct(v.get("false_positive_cuped", v.get("power_cuped"))),
                ]
                for name, v in c.items()
            ],
        )
    )


def report_timings(tm: dict[str, Any]) -> None:
    print()
    base = tm["trivial"]
    rows = [
        [name, tm[name]["p50_us"], tm[name]["p99_us"], ratios(tm[name], base)["p50_us"]]
        for name in tm
        if not name.startswith(("update_", "expose", "revalue", "merge"))
    ]
    print(table("Statistics of a campaign (µs)", ["what", "p50", "p99", "x trivial"], rows))
    base = tm["update_trivial"]
    rows = [
        [name, tm[name]["p50_us"], tm[name]["p99_us"], ratios(tm[name], base)["p50_us"]]
        for name in ("update_trivial", "expose", "revalue", "merge")
    ]
    print(table("A counter update (µs)", ["what", "p50", "p99", "x trivial"], rows))


if __name__ == "__main__":
    sys.exit(main())
