"""``bench/callbacks_store.py`` at a tiny size: every phase runs and every write lands (the
PostgreSQL backend is recorded as skipped when no server answers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def test_callbacks_store_bench(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--creates", "60", "--advisors", "5", "--threads", "3", "--reads", "5"]
    args += ["--out", str(tmp_path), "--name", "c", "--tmpdir", str(tmp_path)]
    assert bench("callbacks_store").main(args) == 0
    data = json.loads((tmp_path / "c.json").read_text())
    assert set(data["backends"]) == {"memory", "sqlite", "postgresql"}
    for backend, found in data["backends"].items():
        if "skipped" in found:
            assert backend == "postgresql"
            continue
        assert found["create"]["n"] == found["save_offer"]["n"] == 60
        assert found["many_writers"]["created"] == 60, found["many_writers"]
        assert found["due_rows"] == 10  # the offers lapsed 40 s after T0
        assert found["booked_day_rows"] == 60
