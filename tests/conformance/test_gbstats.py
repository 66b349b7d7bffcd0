"""nextbest's experiment statistics equal gbstats 0.8.0's (GrowthBook's stats engine) to 1e-6.

The cases were made by ``bench/conformance/gbstats_cases.py`` with gbstats itself (see its
docstring for how gbstats was called and which defaults are mirrored); this test does not
need gbstats.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from nextbest.experiments import statistics as st

DATA = Path(__file__).parent / "data" / "gbstats" / "cases.json"
SPEC_VERSION = 1
TOLERANCE = 1e-6
#: gbstats' ``error_message`` for each status
MESSAGES = {
    None: st.Status.OK,
    "NO_UNITS_IN_VARIATION": st.Status.NO_UNITS,
    "ZERO_NEGATIVE_BASELINE_VARIATION": st.Status.ZERO_BASELINE,
    "ZERO_NEGATIVE_VARIANCE": st.Status.ZERO_VARIANCE,
}


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DATA.read_text())
    return loaded


def _counts(c: dict[str, Any]) -> st.ArmCounts:
    return st.ArmCounts(**c)


def _analysis(kind: str, a: dict[str, Any]) -> st.Analysis:
    prior = a.get("prior", {"mean": 0.0, "stddev": 0.1, "proper": False})
    return st.Analysis(
        kind=st.MetricKind(kind),
        difference=st.Difference(a["difference"]),
        alpha=a["alpha"],
        cuped=a["cuped"],
        sequential=a["test"] == "sequential",
        sequential_tuning=a.get("sequential_tuning", 5000.0),
        prior=st.Prior(**prior),
        inverse=a.get("inverse", False),
    )


def _pairs(ours: Any, ref: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(figure, nextbest, gbstats) for every number both report."""
    pairs = [
        ("expected", ours.estimate, ref["expected"]),
        ("uplift.mean", ours.estimate, ref["uplift_mean"]),
        ("uplift.stddev", ours.stddev, ref["uplift_stddev"]),
        ("ci[0]", ours.ci_lower, ref["ci"][0]),
        ("ci[1]", ours.ci_upper, ref["ci"][1]),
    ]
    if "p_value" in ref:
        pairs.append(("p_value", ours.p_value, ref["p_value"]))
    else:
        pairs += [
            ("chance_to_win", ours.chance_to_win, ref["chance_to_win"]),
            ("risk[0]", ours.risk_control, ref["risk"][0]),
            ("risk[1]", ours.risk_treatment, ref["risk"][1]),
        ]
    return pairs


def test_spec_and_defaults(data: dict[str, Any]) -> None:
    assert data["spec_version"] == SPEC_VERSION
    assert data["reference"] == {"package": "gbstats", "version": "0.8.0"}
    defaults = data["defaults"]
    mine = st.Analysis()
    assert mine.alpha == defaults["alpha"]
    assert mine.difference.value == defaults["difference"]
    assert mine.sequential_tuning == defaults["sequential_tuning"]
    assert (mine.prior.mean, mine.prior.stddev, mine.prior.proper) == tuple(
        defaults["prior"][k] for k in ("mean", "stddev", "proper")
    )
    assert mine.inverse == defaults["inverse"]
    assert defaults["srm_threshold"] == st.SRM_THRESHOLD
    tests = [t for case in data["cases"] for t in case["tests"]]
    assert len(tests) > 1000
    seen = {(t["analysis"]["test"], t["gbstats"].get("error_message", "raises")) for t in tests}
    for test in ("fixed", "sequential", "bayesian"):
        for message in (None, "ZERO_NEGATIVE_BASELINE_VARIATION", "ZERO_NEGATIVE_VARIANCE"):
            assert (test, message) in seen
    assert ("bayesian", "NO_UNITS_IN_VARIATION") in seen


@pytest.mark.parametrize("test", ["fixed", "sequential", "bayesian"])
def test_every_figure_equals_gbstats(data: dict[str, Any], test: str) -> None:
    checked = 0
    worst = 0.0
    failures: list[str] = []
    for case in data["cases"]:
        control, treatment = _counts(case["control"]), _counts(case["treatment"])
        for t in case["tests"]:
            a, ref = t["analysis"], t["gbstats"]
            if a["test"] != test or "raises" in ref:
                continue
            analysis = _analysis(case["kind"], a)
            if test == "bayesian":
                ours: Any = st.bayesian(control, treatment, analysis)
            else:
                ours = st.frequentist(control, treatment, analysis)
            label = f"{case['id']} {a}"
            if ours.status is not MESSAGES[ref["error_message"]]:
                failures.append(f"{label}: status {ours.status} vs {ref['error_message']}")
            for name, mine, theirs in _pairs(ours, ref):
                worst = max(worst, abs(mine - theirs))
                if not abs(mine - theirs) <= TOLERANCE:
                    failures.append(f"{label}: {name} {mine!r} vs gbstats {theirs!r}")
            checked += 1
    assert not failures, f"{len(failures)} differences, first: " + "\n".join(failures[:10])
    assert checked > 300
    assert worst <= TOLERANCE


def test_where_gbstats_divides_by_zero(data: dict[str, Any]) -> None:
    """A Bayesian test on the absolute difference whose control has an unadjusted mean of 0
    and a positive variance (CUPED, or a mean KPI) makes gbstats divide by the rescaled
    prior's zero variance: here an improper prior gives the data's posterior and a proper
    one says the baseline is zero."""
    raised = 0
    for case in data["cases"]:
        for t in case["tests"]:
            if "raises" not in t["gbstats"]:
                continue
            raised += 1
            a = t["analysis"]
            assert (a["test"], a["difference"]) == ("bayesian", "absolute")
            ours = st.bayesian(
                _counts(case["control"]), _counts(case["treatment"]), _analysis(case["kind"], a)
            )
            if a["prior"]["proper"]:
                assert ours.status is st.Status.ZERO_BASELINE
            else:
                assert ours.status is st.Status.OK
                assert 0.0 < ours.chance_to_win < 1.0
                assert ours.ci_lower < ours.estimate < ours.ci_upper
    assert raised > 0


def test_srm_equals_check_srm(data: dict[str, Any]) -> None:
    for case in data["srm"]:
        p = st.srm_p_value(case["users"], case["weights"])
        assert p == pytest.approx(case["p_value"], rel=0, abs=TOLERANCE), case
        assert math.isfinite(p)
        assert st.srm(case["users"], case["weights"]).flagged == (
            case["p_value"] < st.SRM_THRESHOLD
        )
    flagged = [c for c in data["srm"] if c["p_value"] < st.SRM_THRESHOLD]
    assert flagged
    assert len(flagged) < len(data["srm"])
