"""``bench/audit.py`` at a tiny size: every phase runs on every backend, the log it leaves
verifies (the PostgreSQL backend is recorded as skipped when no server answers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def test_audit_bench(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--customers", "30", "--reads", "40", "--threads", "3"]
    args += ["--out", str(tmp_path), "--name", "a", "--tmpdir", str(tmp_path)]
    assert bench("audit").main(args) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert set(data["backends"]) == {"memory", "sqlite", "postgresql"}
    for backend, found in data["backends"].items():
        if "skipped" in found:
            assert backend == "postgresql"
            continue
        assert found["read_profile_audited"]["n"] == 40
        assert found["threads_audited"]["reads"] == 40
        # every customer's consent set once; audited reads warmed up, timed and threaded;
        # bare appends
        assert found["consent_entries_from_ingest"] == 30
        assert found["verify"] == {**found["verify"], "entries": 30 + 4 * 40, "ok": True}
