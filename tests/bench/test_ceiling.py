"""``bench/ceiling.py`` (issue #14's observable ceiling) at a tiny size: it logs, fits, runs
the ceiling policy next to nextbest and the oracle, and the policy sees no hidden state."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

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
