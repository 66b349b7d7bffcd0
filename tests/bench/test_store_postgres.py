"""``bench/store_postgres.py`` at a tiny size: every backend and batch size measured and
written (skipped with the reason when no PostgreSQL server answers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from tests.postgres import reachable_url


def test_store_postgres(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--url", reachable_url(), "--rounds", "1", "--events", "100", "--single", "5"]
    args += ["--decisions", "50", "--single-decisions", "5", "--out", str(tmp_path)]
    assert bench("store_postgres").main([*args, "--name", "s", "--tmpdir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "s.json").read_text())
    assert set(data["events"]) == {
        f"{b}/{n}" for b in ("sqlite", "postgresql", "postgresql_insert") for n in (1, 10, 100, 500)
    }
    assert data["events"]["postgresql/10"]["rows"] == 100
    assert data["decisions"]["postgresql/1"]["rows"] == 5
    assert set(data["decision_ratios"]) == {"1", "100", "1000"}
    assert "postgresql_pglz/100" in data["decisions"]
    assert data["events"]["postgresql/10"]["write_p50_ms"] > 0
