"""``bench/decide.py`` (and ``decide_setup.py``, ``decide_learning.py``) at a tiny size: the
script runs end to end on the public API and writes every figure BENCHMARKS.md reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

TINY = [
    "--profiles", "1000", "--pool", "400", "--decisions", "200", "--warmup", "20",
    "--count-sample", "50", "--split-sample", "30", "--profile-decisions", "30",
    "--no-gc-freeze", "--seed", "7",
]  # fmt: skip


def test_decide_learning_off(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    assert bench("decide").main([*TINY, "--out", str(tmp_path), "--name", "d"]) == 0
    data = json.loads((tmp_path / "d.json").read_text())
    assert {"date", "command", "machine", "code_measured", "versions", "args"} <= set(data)
    assert data["machine"]["git_revision"] is not None
    assert data["profiles"]["profiles"] == 1000
    assert data["profiles"]["incremental_save_10k"]["profiles_changed"] == 1000
    work = data["work_per_decision"]
    assert work["segment_rules_per_decision"] == 50
    assert work["rules_per_decision"] > 100  # the offers' rules too
    latency = data["latency"]
    assert latency["decide"]["n"] == latency["baseline_trivial_call"]["n"] == 200
    assert set(latency["ratio_to_baseline"]) >= {"p50_us", "p99_us"}
    assert data["cost_split"]["profiles"] == 30
    assert data["decide_choose_greedy_same_run"] is None
    assert (tmp_path / "d_profile.txt").read_text().startswith("cProfile of 30 decisions")


def test_decide_learning_on(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = [*TINY, "--learning", "bayes", "--broaden", "0.4", "--train-decisions", "150"]
    args += ["--learn-cost-events", "30", "--learn-cost-sqlite-events", "5", "--outcomes"]
    assert bench("decide").main([*args, "--out", str(tmp_path), "--name", "d"]) == 0
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["training"]["learned"] > 0
    assert data["decide_choose_greedy_same_run"]["n"] == 200
    cost = data["learning_cost_per_event"]
    for key in ("observe_click", "learn_one_click", "observe_view_register"):
        assert cost[key]["n"] == 30
    assert cost["advance_view_expires_as_miss"]["n"] == 30
    assert cost["engine_ingest_memory"]["promotion_clicked"]["n"] == 30
    assert cost["engine_ingest_sqlite_full"]["promotion_clicked"]["n"] == 5
    assert data["model_state"]["models"]["bench_feed"]["kind"] == "bayes"
    assert data["chooser_split"]["decisions"] == 30
    control = data["control_counterfactual"]
    assert control["honest"]["n"] == control["prior_order"]["n"] == 30
    assert set(control["effect"]) >= {"decisions_with_a_control_offer", "different_exposure"}
    outcomes = data["with_outcomes"]  # the training's clicks close their windows meanwhile
    assert outcomes["decide"]["n"] == outcomes["baseline_trivial_call"]["n"] == 180
    assert outcomes["outcomes_learned"] > 0
    assert outcomes["fits"] is not None
