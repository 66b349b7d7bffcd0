"""Conformance data for ``nextbest.experiments.statistics`` from gbstats 0.8.0, GrowthBook's
stats engine.

Builds per-arm counts (seeded), runs gbstats' own test classes on them and writes the inputs
and gbstats' outputs to ``tests/conformance/data/gbstats/cases.json``, so the test suite
checks nextbest against gbstats without installing it. gbstats is a reference only, never a
dependency of nextbest; it installs without its dependencies beside the project's numpy,
scipy and pydantic, e.g. into a folder of its own (the shared venv stays untouched):

    .venv/bin/pip install --no-deps --target /tmp/gbstats_pkg gbstats==0.8.0
    PYTHONPATH=/tmp/gbstats_pkg .venv/bin/python bench/conformance/gbstats_cases.py

(gbstats' ``gbstats.py`` runner needs pandas; the classes used here do not.)

What gbstats is asked, per case (a control and a treatment, ``arm counts`` below):

- statistics: ``ProportionStatistic(n, sum)`` for a proportion KPI, ``SampleMeanStatistic(n,
  sum, sum_squares)`` for a mean KPI; with CUPED, ``RegressionAdjustedStatistic`` over those
  (post: the KPI, pre: the covariate, ``post_pre_sum_of_products`` the cross sum, ``theta=0``
  as gbstats' runner passes it: the test computes theta), built fresh for every test because
  gbstats' tests set theta on the objects they are given;
- tests: ``TwoSidedTTest(FrequentistConfig(alpha, difference_type))``,
  ``SequentialTwoSidedTTest(SequentialConfig(alpha, difference_type,
  sequential_tuning_parameter))`` and ``EffectBayesianABTest(EffectBayesianConfig(alpha,
  difference_type, inverse, prior_effect=GaussianPrior(mean, variance=stddev**2, proper),
  prior_type="relative"))``, each's ``compute_result()``;
- ``check_srm(users, weights)`` on 2-5 arms.

Defaults mirrored (and written into the file, ``defaults``): GrowthBook's
``AnalysisSettingsForStatsEngine`` (alpha 0.05, sequential tuning 5000, relative difference)
and ``MetricSettingsForStatsEngine`` (prior mean 0, prior stddev 0.1, improper; gbstats'
runner squares the stddev into the prior variance and always puts the prior on the relative
effect); an SRM is flagged below p = 0.001 (GrowthBook's default ``srmThreshold``).

Cases: hand-picked edges (empty arms, one customer, no conversions, everyone converting,
equal values, a negative control mean, rare events, 10 million customers, unequal splits) and
seeded random counts, both from per-customer draws (a KPI correlated with its pre-exposure
covariate, so CUPED has something to remove) and drawn directly. Where gbstats raises
(``ZeroDivisionError``: a Bayesian test on the absolute difference whose control has an
unadjusted mean of 0 but a positive variance, possible with CUPED or a mean KPI), the case
records the exception; nextbest's documented answer is checked instead.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from gbstats.utils import check_srm

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "conformance" / "data" / "gbstats" / "cases.json"
#: bump when the layout of cases.json changes; the test asserts it
SPEC_VERSION = 1
GBSTATS_VERSION = "0.8.0"
SEED = 20261206

DEFAULTS: dict[str, Any] = {
    "alpha": 0.05,
    "difference": "relative",
    "sequential_tuning": 5000.0,
    "prior": {"mean": 0.0, "stddev": 0.1, "proper": False},
    "prior_type": "relative",
    "inverse": False,
    "srm_threshold": 0.001,
    "source": (
        "gbstats 0.8.0 models/settings.py: AnalysisSettingsForStatsEngine (alpha, "
        "sequential_tuning_parameter, difference_type), MetricSettingsForStatsEngine "
        "(prior_mean, prior_stddev, prior_proper, inverse); gbstats.py get_configured_test "
        "(prior variance = prior_stddev ** 2, prior_type='relative'); GrowthBook's "
        "srmThreshold 0.001"
    ),
}

FIELDS = ("n", "sum", "sum_squares", "pre_sum", "pre_sum_squares", "cross_sum")


def counts(values: np.ndarray, pre: np.ndarray) -> dict[str, Any]:
    v = values.astype(np.float64)
    p = pre.astype(np.float64)
    return {
        "n": int(v.shape[0]),
        "sum": float(v.sum()),
        "sum_squares": float(v @ v),
        "pre_sum": float(p.sum()),
        "pre_sum_squares": float(p @ p),
        "cross_sum": float(v @ p),
    }


def proportion_counts(n: int, conv: int, pre: int = 0, both: int = 0) -> dict[str, Any]:
    return {
        "n": n,
        "sum": float(conv),
        "sum_squares": float(conv),
        "pre_sum": float(pre),
        "pre_sum_squares": float(pre),
        "cross_sum": float(both),
    }


def mean_counts(n: int, s: float, ss: float, ps: float = 0, pss: float = 0, x: float = 0) -> dict:
    return {
        "n": n,
        "sum": float(s),
        "sum_squares": float(ss),
        "pre_sum": float(ps),
        "pre_sum_squares": float(pss),
        "cross_sum": float(x),
    }


# ------------------------------------------------------------------ the arms
def drawn_pair(rng: np.random.Generator, kind: str, n_a: int, n_b: int, lift: float) -> tuple:
    """Per-customer draws: a covariate, and a KPI that depends on it (and on the arm)."""
    out = []
    for n, arm_lift in ((n_a, 0.0), (n_b, lift)):
        if kind == "proportion":
            base = rng.uniform(0.005, 0.3)
            pre = (rng.random(n) < base).astype(np.float64)
            rate = np.clip(base * (1 + arm_lift) * (0.6 + 1.5 * pre), 0, 1)
            values = (rng.random(n) < rate).astype(np.float64)
        else:
            scale = float(rng.choice([1.0, 40.0, 2500.0]))
            pre = rng.gamma(2.0, scale, n)
            noise = rng.normal(0, scale * rng.uniform(0.3, 3.0), n)
            values = np.maximum(0.0, (0.7 * pre + noise) * (1 + arm_lift))
            values = np.round(values, 2)
            pre = np.round(pre, 2)
        out.append(counts(values, pre))
    return out[0], out[1]


def raw_proportion_pair(rng: np.random.Generator) -> tuple:
    arms = []
    for _ in range(2):
        n = int(rng.choice([2, 3, 7, 30, 500, 12_000, 2_000_000]))
        rate = float(rng.choice([0.0005, 0.01, 0.05, 0.2, 0.5, 0.9]))
        conv = int(rng.binomial(n, rate))
        pre = int(rng.binomial(n, min(1.0, rate * 2)))
        low, high = max(0, conv + pre - n), min(conv, pre)
        both = int(rng.integers(low, high + 1))
        arms.append(proportion_counts(n, conv, pre, both))
    return arms[0], arms[1]


def edge_pairs() -> list[tuple[str, str, dict, dict]]:
    """(tag, kind, control, treatment): the corners a live campaign goes through."""
    p = proportion_counts
    m = mean_counts
    return [
        ("empty-both", "proportion", p(0, 0), p(0, 0)),
        ("empty-control", "proportion", p(0, 0), p(100, 5, 10, 2)),
        ("empty-treatment", "proportion", p(100, 5, 10, 2), p(0, 0)),
        ("one-each", "proportion", p(1, 1, 1, 1), p(1, 0, 1, 0)),
        ("one-vs-many", "proportion", p(1, 1, 0, 0), p(500, 30, 60, 9)),
        ("two-each", "proportion", p(2, 1, 1, 1), p(2, 1, 0, 0)),
        ("no-conversions-control", "proportion", p(1000, 0, 40, 0), p(1000, 12, 35, 3)),
        ("no-conversions-treatment", "proportion", p(1000, 12, 40, 3), p(1000, 0, 35, 0)),
        ("no-conversions-both", "proportion", p(1000, 0, 40, 0), p(1000, 0, 35, 0)),
        ("all-converting-control", "proportion", p(300, 300, 120, 120), p(300, 280, 110, 100)),
        ("all-converting-treatment", "proportion", p(300, 280, 110, 100), p(300, 300, 120, 120)),
        ("all-converting-both", "proportion", p(300, 300, 120, 120), p(300, 300, 100, 100)),
        ("one-conversion-each", "proportion", p(5000, 1, 50, 0), p(5000, 1, 45, 1)),
        ("rare", "proportion", p(2_000_000, 37, 900, 2), p(2_000_000, 55, 950, 4)),
        (
            "large",
            "proportion",
            p(10_000_000, 512_345, 1_500_000, 120_000),
            p(10_000_000, 514_001, 1_499_000, 121_500),
        ),
        ("unequal-split", "proportion", p(90_000, 4_500, 9_000, 900), p(10_000, 560, 1_000, 110)),
        (
            "unequal-split-reverse",
            "proportion",
            p(10_000, 500, 900, 60),
            p(90_000, 4_400, 9_100, 610),
        ),
        (
            "huge-effect",
            "proportion",
            p(100_000, 1_000, 10_000, 100),
            p(100_000, 9_000, 10_000, 900),
        ),
        ("no-covariate-variance", "proportion", p(1000, 50, 0, 0), p(1000, 70, 0, 0)),
        ("covariate-everyone", "proportion", p(1000, 50, 1000, 50), p(1000, 70, 1000, 70)),
        ("mean-empty-control", "mean", m(0, 0, 0), m(50, 500, 6000, 400, 4000, 4500)),
        ("mean-one-each", "mean", m(1, 10, 100, 5, 25, 50), m(1, 12, 144, 6, 36, 72)),
        (
            "mean-constant-values",
            "mean",
            m(100, 500, 2500, 300, 1000, 1500),
            m(100, 500, 2500, 310, 1050, 1550),
        ),
        ("mean-zero-control", "mean", m(100, 0, 0, 50, 80, 0), m(100, 30, 90, 40, 60, 12)),
        (
            "mean-zero-control-signed",
            "mean",
            m(100, 0.0, 400.0, 10, 30, 25),
            m(100, 50, 600, 12, 28, 40),
        ),
        (
            "mean-negative-control",
            "mean",
            m(200, -400, 5000, -300, 2500, 3100),
            m(200, -300, 4800, -310, 2600, 3000),
        ),
        ("mean-small", "mean", m(3, 1.5, 1.25, 2, 2, 1.5), m(4, 3, 3.5, 2, 1.5, 2)),
        (
            "mean-spend-large",
            "mean",
            m(1_000_000, 51_234_567.5, 9.2e9, 48e6, 8.1e9, 8.3e9),
            m(1_000_000, 51_900_001.25, 9.35e9, 48.1e6, 8.12e9, 8.4e9),
        ),
    ]


# ------------------------------------------------------------------ gbstats
def statistic(kind: str, c: dict[str, Any], cuped: bool) -> Any:
    def base(total: float, squares: float) -> Any:
        if kind == "proportion":
            return ProportionStatistic(n=c["n"], sum=total)
        return SampleMeanStatistic(n=c["n"], sum=total, sum_squares=squares)

    post = base(c["sum"], c["sum_squares"])
    if not cuped:
        return post
    return RegressionAdjustedStatistic(
        n=c["n"],
        post_statistic=post,
        pre_statistic=base(c["pre_sum"], c["pre_sum_squares"]),
        post_pre_sum_of_products=c["cross_sum"],
        theta=0,
    )


def run_gbstats(
    kind: str, control: dict[str, Any], treatment: dict[str, Any], a: dict[str, Any]
) -> dict[str, Any]:
    stat_a = statistic(kind, control, a["cuped"])
    stat_b = statistic(kind, treatment, a["cuped"])
    try:
        if a["test"] == "fixed":
            test: Any = TwoSidedTTest(
                stat_a,
                stat_b,
                FrequentistConfig(alpha=a["alpha"], difference_type=a["difference"]),
            )
        elif a["test"] == "sequential":
            test = SequentialTwoSidedTTest(
                stat_a,
                stat_b,
                SequentialConfig(
                    alpha=a["alpha"],
                    difference_type=a["difference"],
                    sequential_tuning_parameter=a["sequential_tuning"],
                ),
            )
        else:
            prior = a["prior"]
            test = EffectBayesianABTest(
                stat_a,
                stat_b,
                EffectBayesianConfig(
                    alpha=a["alpha"],
                    difference_type=a["difference"],
                    inverse=a["inverse"],
                    prior_effect=GaussianPrior(
                        mean=prior["mean"], variance=pow(prior["stddev"], 2), proper=prior["proper"]
                    ),
                    prior_type="relative",
                ),
            )
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = test.compute_result()
    except ZeroDivisionError as exc:
        return {"raises": type(exc).__name__}
    out: dict[str, Any] = {
        "expected": float(r.expected),
        "ci": [float(x) for x in r.ci],
        "uplift_mean": float(r.uplift.mean),
        "uplift_stddev": float(r.uplift.stddev),
        "error_message": r.error_message,
    }
    if a["test"] == "bayesian":
        out["chance_to_win"] = float(r.chance_to_win)
        out["risk"] = [float(x) for x in r.risk]
        out["risk_type"] = r.risk_type
    else:
        out["p_value"] = float(r.p_value)
    for key, value in out.items():
        numbers = value if isinstance(value, list) else [value]
        for x in numbers:
            if isinstance(x, float) and not np.isfinite(x):
                raise SystemExit(f"gbstats gave a non-finite {key} on {control} {treatment} {a}")
    return out


# ------------------------------------------------------------------ the grid
def analyses(rng: np.random.Generator, has_covariate: bool) -> list[dict[str, Any]]:
    """Every test on both differences (and with and without CUPED); alpha, tuning, prior and
    inverse drawn so that each appears across the cases."""
    out = []
    cuped_options = (False, True) if has_covariate else (False,)
    for test, difference, cuped in itertools.product(
        ("fixed", "sequential", "bayesian"), ("relative", "absolute"), cuped_options
    ):
        alpha = float(rng.choice([0.05, 0.05, 0.1, 0.01]))
        a: dict[str, Any] = {
            "test": test,
            "difference": difference,
            "cuped": cuped,
            "alpha": alpha,
        }
        if test == "sequential":
            a["sequential_tuning"] = float(rng.choice([5000.0, 5000.0, 1000.0, 50_000.0]))
        if test == "bayesian":
            a["inverse"] = bool(rng.random() < 0.25)
            a["prior"] = dict(DEFAULTS["prior"])
            if rng.random() < 0.5:
                a["prior"] = {
                    "mean": float(rng.choice([0.0, 0.02, -0.05])),
                    "stddev": float(rng.choice([0.05, 0.1, 0.3])),
                    "proper": True,
                }
        out.append(a)
    return out


def srm_cases(rng: np.random.Generator) -> list[dict[str, Any]]:
    fixed = [
        ([0, 0], [0.5, 0.5]),
        ([1, 0], [0.5, 0.5]),
        ([5000, 5000], [0.5, 0.5]),
        ([5100, 4900], [0.5, 0.5]),
        ([50_600, 49_400], [0.5, 0.5]),
        ([10_000, 90_000], [0.1, 0.9]),
        ([10_500, 89_500], [0.1, 0.9]),
        ([3_000, 3_100, 2_950], [1, 1, 1]),
        ([1_000, 1_000, 0], [0.5, 0.5, 0.0]),
        ([1_000, 980, 20], [0.5, 0.5, 0.0]),
        ([200_000, 400_000, 400_000, 2_000], [0.2, 0.4, 0.4, 0.0]),
        ([17, 3], [0.5, 0.5]),
    ]
    out = [{"users": u, "weights": w} for u, w in fixed]
    for _ in range(40):
        k = int(rng.integers(2, 6))
        weights = [float(x) for x in np.round(rng.dirichlet(np.ones(k)), 4)]
        total = int(rng.choice([20, 1_000, 50_000, 2_000_000]))
        skew = rng.normal(0, float(rng.choice([0.0, 0.005, 0.03])), k)
        p = np.clip(np.array(weights) * (1 + skew), 1e-9, None)
        users = [int(x) for x in rng.multinomial(total, p / p.sum())]
        out.append({"users": users, "weights": weights})
    for case in out:
        case["p_value"] = float(check_srm(case["users"], case["weights"]))
    return out


def dump(data: dict[str, Any]) -> str:
    """JSON with one case's counts per line and one test per line: reviewable diffs."""

    def compact(x: Any) -> str:
        return json.dumps(x, separators=(", ", ": "))

    head = {k: v for k, v in data.items() if k not in ("cases", "srm")}
    lines = [json.dumps(head, indent=1)[:-2] + ","]
    lines.append(' "cases": [')
    for i, case in enumerate(data["cases"]):
        fields = {k: v for k, v in case.items() if k != "tests"}
        lines.append("  " + compact(fields)[:-1] + ', "tests": [')
        tests = case["tests"]
        for j, t in enumerate(tests):
            lines.append("   " + compact(t) + ("," if j < len(tests) - 1 else ""))
        lines.append("  ]}" + ("," if i < len(data["cases"]) - 1 else ""))
    lines.append(" ],")
    lines.append(' "srm": [')
    srm = data["srm"]
    for i, case in enumerate(srm):
        lines.append("  " + compact(case) + ("," if i < len(srm) - 1 else ""))
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if json.loads(text) != data:
        raise SystemExit("dump does not round-trip")
    return text


def main() -> int:
    installed = importlib.metadata.version("gbstats")
    if installed != GBSTATS_VERSION:
        raise SystemExit(f"gbstats {GBSTATS_VERSION} is the reference; found {installed}")
    rng = np.random.default_rng(SEED)
    pairs: list[tuple[str, str, dict, dict]] = list(edge_pairs())
    for i in range(45):
        kind = "proportion" if i % 2 == 0 else "mean"
        n_a = int(rng.choice([4, 25, 300, 5_000, 40_000]))
        n_b = n_a if rng.random() < 0.5 else int(rng.choice([4, 25, 300, 5_000, 40_000]))
        lift = float(rng.choice([0.0, 0.0, 0.03, 0.1, -0.08, 0.5]))
        control, treatment = drawn_pair(rng, kind, n_a, n_b, lift)
        pairs.append((f"drawn-{i}", kind, control, treatment))
    for i in range(25):
        control, treatment = raw_proportion_pair(rng)
        pairs.append((f"raw-{i}", "proportion", control, treatment))

    cases = []
    for tag, kind, control, treatment in pairs:
        has_covariate = any(c[f] for c in (control, treatment) for f in FIELDS[3:])
        case: dict[str, Any] = {
            "id": f"{len(cases):03d}-{tag}",
            "kind": kind,
            "control": control,
            "treatment": treatment,
            "tests": [],
        }
        for a in analyses(rng, has_covariate):
            case["tests"].append(
                {"analysis": a, "gbstats": run_gbstats(kind, control, treatment, a)}
            )
        cases.append(case)
    tests = [t for c in cases for t in c["tests"]]

    data = {
        "spec_version": SPEC_VERSION,
        "generator": "bench/conformance/gbstats_cases.py",
        "reference": {"package": "gbstats", "version": installed},
        "versions": {
            name: importlib.metadata.version(name) for name in ("numpy", "scipy", "pydantic")
        },
        "seed": SEED,
        "defaults": DEFAULTS,
        "cases": cases,
        "srm": srm_cases(rng),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dump(data))
    raised = sum("raises" in t["gbstats"] for t in tests)
    errors: dict[str, int] = {}
    for t in tests:
        msg = str(t["gbstats"].get("error_message", t["gbstats"].get("raises")))
        errors[msg] = errors.get(msg, 0) + 1
    print(f"{len(tests)} tests ({raised} raise in gbstats), {len(data['srm'])} SRM cases -> {OUT}")
    print(json.dumps(errors, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
