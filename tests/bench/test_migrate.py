"""``bench/migrate.py`` at a tiny size: both targets copied, verified and written (skipped with
the reason when no PostgreSQL server answers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from tests.postgres import reachable_url


def test_migrate_bench(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--url", reachable_url(), "--events", "300", "--decisions", "40"]
    args += ["--batch", "100", "--out", str(tmp_path), "--name", "m", "--tmpdir", str(tmp_path)]
    assert bench("migrate").main(args) == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert set(data["targets"]) == {"postgresql", "sqlite"}
    for found in data["targets"].values():
        assert found["ok"]
        assert found["replay_identical"]
        assert found["ports"]["events"]["rows"] == 300
        assert found["ports"]["decisions"]["rows"] == 40
