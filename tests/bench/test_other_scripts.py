"""The smaller benchmark scripts at a tiny size: each runs on the public API and writes its
results (``learn_ab.py``, ``decide_ab.py``, ``restart.py``, ``send.py``, ``ope_sim.py``,
``experiment_counters.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from tests.support import ROOT


def test_learn_ab_same_code_both_sides(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--before", str(ROOT / "src"), "--profiles", "500", "--events", "40"]
    args += ["--rounds", "1", "--train-decisions", "150", "--out", str(tmp_path)]
    assert bench("learn_ab").main(args) == 0
    data = json.loads((tmp_path / "learn_ab.json").read_text())
    assert data["max_weight_difference"] == 0.0
    assert data["results"]["click"]["after"]["n"] == 40


def test_decide_ab_alternates_the_engine_and_its_variants(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    """The engine as it is against the garbage collector frozen, the counterfactual's full
    draws, the unwatched counterfactual, indexed rules run in CEL, and this tree's own
    ``learn/explore.py`` (its ``rank`` must be the one called) and candidate filters loaded
    apart."""
    explore = ROOT / "src" / "nextbest" / "learn" / "explore.py"
    args = ["--quick", "--learning", "contextual_thompson", "--rounds", "2", "--block", "20"]
    args += ["--variants", "gc_freeze,cf_full_draws,cf_unwatched,index_in_cel"]
    args += ["--explore-from", str(explore)]
    args += ["--filters-from", str(ROOT / "src" / "nextbest" / "decide" / "pipeline.py")]
    args += ["--out", str(tmp_path)]
    assert bench("decide_ab").main(args) == 0
    data = json.loads((tmp_path / "decide_ab.json").read_text())
    assert {n: v["n"] for n, v in data["variants"].items()} == {
        "as_is": 40,
        "gc_freeze": 40,
        "cf_full_draws": 40,
        "cf_unwatched": 40,
        "index_in_cel": 40,
        "explore_from": 40,
        "filters_from": 40,
    }
    assert data["ratios_to_as_is"]["as_is"]["mean_us"] == 1.0


def test_restart_with_and_without_the_position(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    args = ["--decisions", "600", "--real", "100", "--tail", "20", "--customers", "50"]
    args += ["--repeat", "1", "--out", str(tmp_path)]
    assert bench("restart").main(args) == 0
    data = json.loads((tmp_path / "restart.json").read_text())
    assert data["decisions_logged"] == 620
    assert data["restored_learner_identical"] is True


def test_send_to_a_sink_and_the_server(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--rates", "1000", "--modes", "lines", "--seconds", "0.5", "--server-rate", "500"]
    args += ["--server-seconds", "0.5", "--customers", "150", "--out", str(tmp_path)]
    assert bench("send").main([*args, "--name", "s", "--tmpdir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    server = data["server"]["run"]
    assert server["report"]["errors_by_status"] == {}
    assert server["events_in_log_after_shutdown"] > 0


def test_ope_sim(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    out = tmp_path / "ope.json"
    bench("ope_sim").main(["--customers", "100", "--days", "1", "--out", str(out)])
    assert json.loads(out.read_text())


def test_rate_limit(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--calls", "2000", "--sample", "500", "--sessions", "300", "--cap", "100"]
    assert bench("rate_limit").main([*args, "--repeat", "1", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "rate_limit.json").read_text())
    assert set(data["loop_mean_us"]) == {
        "trivial",
        "key",
        "browser_token",
        "browser_device",
        "refused",
    }
    assert data["timed"]["browser_device"]["n"] == 500
    assert data["session_table"]["entries"] == 100
    assert data["evicted_during_run"] > 0


def test_track_asgi(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--requests", "300", "--repeat", "1", "--access-log", str(tmp_path / "access.log")]
    assert bench("track_asgi").main([*args, "--out", str(tmp_path), "--tmpdir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "track_asgi.json").read_text())
    assert set(data["phases"]) == {"hello-world", "healthz", "track", "track+log"}
    assert len((tmp_path / "access.log").read_text().splitlines()) >= 300


def test_commit_cost(bench: Callable[[str], ModuleType], capsys) -> None:
    args = ["--events", "64", "--warmup", "32", "--customers", "48", "--pages", "3"]
    assert bench("commit_cost").main(args) == 0
    assert "64 events in groups of 16" in capsys.readouterr().out


def test_conversion_fit_times_the_fit_and_the_cached_prediction(
    bench: Callable[[str], ModuleType], capsys
) -> None:
    assert bench("conversion_fit").main(["--outcomes", "200", "--samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "200 outcomes first, 20 samples" in out
    assert "predict, fit cached" in out
    assert (
        bench("conversion_fit").main(["--catalog", "bench", "--outcomes", "100", "--samples", "20"])
        == 0
    )
    assert "154 offers" in capsys.readouterr().out


def test_track_instructions_drives_the_app(bench: Callable[[str], ModuleType], capsys) -> None:
    assert bench("track_instructions").main(["--requests", "40", "--warmup", "20"]) == 0
    assert "40 track requests after 20" in capsys.readouterr().out


def test_experiment_counters_save_writes_what_changed(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    args = ["--events", "200", "--save-customers", "2000", "--saves", "2", "--result-runs", "2"]
    assert bench("experiment_counters").main([*args, "--out", str(tmp_path), "--name", "e"]) is None
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["freezes_covariates_and_audiences"] is True
    saving = data["saving"]
    assert (saving["exposed"], saving["batch"], saving["saves"]) == (2000, 50, 2)
    # 50 exposures and the counts, not 2,000 customers: well under 100 bytes a customer
    assert saving["bytes_per_save_median"] < 2000 * 20
    assert data["measured"]["view_exposure"]["n"] == 200


def test_insights_reads_each_insight_campaign_s_result(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    bench("insights").main(
        ["--seeds", "1", "--customers", "40", "--days", "3", "--out", str(tmp_path)]
    )
    data = json.loads((tmp_path / "insights-seeds1.json").read_text())
    camps = data["runs"][0]["campaigns"]
    assert set(camps) == {"overdraft_fee_help", "idle_cash_savings", "subscription_price_rises"}
    assert all(c["kpi"] for c in camps.values())


def test_fold_banking_compares_with_a_baseline(bench: Callable[[str], ModuleType], capsys) -> None:
    bench("fold_banking").main(["--events", "300", "--rounds", "1"])
    table = capsys.readouterr().out
    assert "| balance |" in table
    assert "| fee |" in table


def test_conv_diag_files_impressions_by_what_the_engine_sees(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    out = tmp_path / "diag.json"
    args = ["--world", "shelf", "--customers", "40", "--days", "2"]
    bench("conv_diag").main([*args, "--policies", "greedy_recent,nextbest", "--out", str(out)])
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"greedy_recent", "nextbest"}
    assert data["policies"]["nextbest"]["expected_clicks"] > 0


def test_cold_start_logs_each_run_by_day(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    args = ["--worlds", "hidden_needs", "--customers", "40", "--days", "2"]
    args += ["--runs", "prior,nextbest,warm_levels,warm_conv", "--out", str(tmp_path)]
    assert bench("cold_start").main(args) == 0
    data = json.loads((tmp_path / "hidden_needs-s1.json").read_text())
    assert set(data["runs"]) == {"prior", "nextbest", "warm_levels", "warm_conv"}
    assert all(r["expected_conversions"] >= 0 for r in data["runs"].values())


def test_decide_tail_splits_the_slow_decisions(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    args = ["--quick", "--learning", "contextual_thompson", "--decisions", "80", "--warmup", "10"]
    assert bench("decide_tail").main([*args, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "decide_tail.json").read_text())
    bands = data["by_latency"]
    assert bands["all"]["n"] == data["decisions"] == 80
    assert bands["slowest 1 %"]["total"] >= bands["middle half"]["total"]
    assert all(0 < b["choose"] <= b["total"] for b in bands.values())
    assert data["by_candidates"]


def test_score_ab_times_two_contextual_models_on_the_same_inputs(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    own = ROOT / "src" / "nextbest" / "learn" / "contextual.py"
    args = ["--quick", "--learning", "contextual_thompson", "--captured", "30", "--rounds", "2"]
    args += ["--contextual-from", str(own), "--out", str(tmp_path)]
    assert bench("score_ab").main(args) == 0
    data = json.loads((tmp_path / "score_ab.json").read_text())
    assert data["max_score_difference"] == 0.0  # the same code
    assert data["decisions"] == 30
    assert set(data["models"]) == {"this_tree", "other"}
    assert data["models"]["other"]["learn_one_us"] > 0
