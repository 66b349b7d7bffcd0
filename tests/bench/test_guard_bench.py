"""``bench/guard.py`` at a tiny size: both detectors scored on injected takeovers, one alert
per flagged session in the engine's outbox, the cost cases timed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def test_guard_bench(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--customers", "80", "--days", "30", "--warmup", "10", "--share", "0.3"]
    args += ["--calls", "60", "--decisions", "20", "--seeds", "3", "--out", str(tmp_path)]
    assert bench("guard").main([*args, "--tmpdir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "guard.json").read_text())
    (seed,) = data["seeds"]
    assert seed["takeovers"] > 0
    assert seed["alerts_in_outbox"] == seed["sessions_flagged_at_catalog_threshold"]
    for key in ("robust", "river_hst", "river_hst_at_robust_false_alarms"):
        assert len(seed[key]) >= 3
        for row in seed[key]:
            assert 0.0 <= row["recall"] <= 1.0
            assert row["caught"] <= row["takeovers"]
    assert seed["decide"]["flagged_items"][0] == "was_this_you"
    assert set(seed["ingest_us_per_event"]) == {"with_guard", "without_guard", "added"}
    assert seed["profile_bytes"]["guard_state_mean"] > 0
