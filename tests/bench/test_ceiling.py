"""``bench/ceiling.py`` (issue #14's observable ceiling) at a tiny size: it logs, fits, runs
the ceiling policy next to nextbest and the oracle, and the policy sees no hidden state."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from nextbest.catalog.compiled import CompiledOffer
from nextbest.decide.model import ChoiceContext
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import run_policy
from nextbest.sim.worlds import world_catalog, world_named, world_response
from tests.support import ROOT


def test_a_tiny_run_writes_the_fit_and_the_ratios(
    bench: Callable[[str], ModuleType], tmp_path: Path, capsys: Any
) -> None:
    args = ["--worlds", "hidden_needs", "--seeds", "1", "--customers", "30", "--days", "3"]
    args += ["--log-customers", "150", "--iterations", "10", "--out", str(tmp_path)]
    assert bench("ceiling").main(args) == 0
    assert "| `hidden_needs` |" in capsys.readouterr().out
    data = json.loads((tmp_path / "ceiling-hidden_needs.json").read_text())
    assert data["fit"]["rows_train"] > 0
    assert data["fit"]["rows_test"] > 0
    assert set(data["metrics"]["1"]) == {"ceiling", "nextbest", "oracle"}
    assert data["clicks_vs_oracle"]["oracle"]["mean"] in (1.0, None)
    assert {"date", "command", "machine", "log", "model"} <= set(data)


def test_the_ceiling_policy_reads_no_hidden_state(bench: Callable[[str], ModuleType]) -> None:
    """It chooses with ``sim=None``: only the decision's context (the engine's profile)."""
    ceiling = bench("ceiling")
    lives = world_named("shelf")
    catalog = world_catalog(lives, ROOT / "examples" / "bank", DEFAULT_START)
    response = world_response(lives)
    logger = ceiling.LoggingPolicy(catalog, response, 1.0, 7)
    run_policy(logger, 7, 60, 3, catalog=catalog, model=response, world=lives)
    model, fit = ceiling.fit_ceiling(logger.log, catalog, iterations=5, min_support=1)
    assert fit.features > 0

    class Blind(ceiling.CeilingPolicy):
        def choose(
            self,
            candidates: Sequence[CompiledOffer],
            sim: Any,
            day: int,
            slots: int,
            rng: random.Random,
            impressions: Mapping[str, int],
            context: ChoiceContext | None = None,
        ) -> list[tuple[str, float]]:
            return super().choose(candidates, None, day, slots, rng, {}, context)

    m = run_policy(Blind(catalog, model), 1, 20, 2, catalog=catalog, model=response, world=lives)
    assert m.impressions > 0


def test_stored_baselines_and_the_conversions_objective(
    bench: Callable[[str], ModuleType], tmp_path: Path, capsys: Any
) -> None:
    """greedy_recent, oracle and nextbest read from stored runs of the same size, the two
    ceilings run: expected conversions, the gap each closes, and issue #14's verdict."""
    ceiling = bench("ceiling")
    size = ["--seeds", "1", "--customers", "30", "--days", "3"]
    tiny = ["--worlds", "hidden_needs", *size, "--log-customers", "150", "--iterations", "10"]
    first = tmp_path / "first"
    policies = "ceiling,ceiling_conv,greedy_recent,nextbest,oracle"
    assert ceiling.main([*tiny, "--policies", policies, "--out", str(first)]) == 0
    ran = json.loads((first / "ceiling-hidden_needs.json").read_text())
    runs = ran["metrics"]["1"]
    stored = tmp_path / "stored"
    stored.mkdir()
    zoo = {
        "customers": 30,
        "days": 3,
        "date": "2026-12-07T00:00:00+00:00",
        "machine": {"git_revision": "abc1234"},
        "metrics": {"1": {p: runs[p] for p in ("greedy_recent", "oracle")}},
    }
    (stored / "zoo-hidden_needs.json").write_text(json.dumps(zoo))
    row = {"variant": "v", "world": "hidden_needs", "seed": 1, "customers": 30, "days": 3}
    row |= {"date": "2026-12-07T00:00:01+00:00", "metrics": runs["nextbest"]}
    (stored / "runs.jsonl").write_text(json.dumps(row) + "\n")
    again = tmp_path / "again"
    args = [*tiny, "--policies", "ceiling,ceiling_conv", "--out", str(again)]
    args += ["--stored", str(stored), "--stored-nextbest", f"{stored / 'runs.jsonl'}:v"]
    assert ceiling.main(args) == 0
    assert "| `hidden_needs` |" in capsys.readouterr().out
    data = json.loads((again / "ceiling-hidden_needs.json").read_text())

    def timeless(runs: dict[str, Any]) -> dict[str, Any]:
        return {p: {k: v for k, v in m.items() if k != "wall_seconds"} for p, m in runs.items()}

    assert timeless(data["metrics"]["1"]) == timeless(runs)  # same seed, same fit: same runs
    assert data["stored"]["greedy_recent,oracle"]["git_revision"] == "abc1234"
    assert data["stored"]["nextbest"]["variant"] == "v"
    c = data["conversions"]
    mean = c["expected_conversions"]
    assert set(mean) == {"greedy_recent", "oracle", "nextbest", "ceiling", "ceiling_conv"}
    assert mean["ceiling_conv"] == runs["ceiling_conv"]["expected_conversions"]
    if mean["oracle"] > mean["greedy_recent"]:
        assert c["gap_closed"]["oracle"] == 1.0
        assert c["best_ceiling"] in ("ceiling", "ceiling_conv")
        assert isinstance(c["reachable_40"], bool)
    assert "r2_conversions" in data["fit"]  # null (NaN) when the held-out target is constant


def test_a_stored_run_of_another_size_is_refused(
    bench: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    zoo = {"customers": 2000, "days": 30, "date": "x", "machine": {}, "metrics": {}}
    (tmp_path / "zoo-shelf.json").write_text(json.dumps(zoo))
    args = ["--worlds", "shelf", "--seeds", "1", "--customers", "30", "--days", "3"]
    args += ["--policies", "ceiling", "--stored", str(tmp_path), "--out", str(tmp_path)]
    with pytest.raises(SystemExit, match="not the run's size"):
        bench("ceiling").main(args)
