"""``bench/store_redis.py`` at a tiny size: Redis against SQLite on real profile bodies
(skipped without Redis; no timing is asserted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from nextbest.errors import StoreUnavailable
from nextbest.store.redis import RedisState
from tests.contract.conftest import REDIS_URL


def test_store_redis(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    try:
        RedisState(REDIS_URL, "nextbest-test-ping", timeout=2.0).close()
    except StoreUnavailable as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    args = ["--url", REDIS_URL, "--rows", "1200", "--customers", "40", "--days", "5"]
    args += ["--single-saves", "20", "--reads", "50", "--sample", "30", "--seed", "7"]
    assert (
        bench("store_redis").main([*args, "--out", str(tmp_path), "--tmpdir", str(tmp_path)]) == 0
    )
    data = json.loads((tmp_path / "store_redis.json").read_text())
    assert [s["batch"] for s in data["saves"]["redis"]] == [1, 100, 1_000]
    assert data["point_reads"]["n"] == 50
    assert data["memory"]["memory_usage_mean_bytes"] >= data["memory"]["body_mean_bytes"]
