"""``bench/ingest.py`` (with ``ingest_stream.py`` and ``ingest_http.py``) at a tiny size."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

TINY = [
    "--quick", "--customers", "150", "--anon-visitors", "40", "--stitches", "5",
    "--profile-batches", "5", "--seed", "7",
]  # fmt: skip


def test_in_process(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = [*TINY, "--no-http", "--out", str(tmp_path), "--name", "i"]
    assert bench("ingest").main(args) == 0
    data = json.loads((tmp_path / "i.json").read_text())
    messages = data["stream"]["messages"]
    assert data["parse_only"]["events"] == data["fold_only"]["events"] == messages
    assert set(data["ingest"]) == {"memory", "sqlite-full", "sqlite-normal"}
    for run in data["ingest"].values():
        assert run["events"] == messages
        assert run["duplicates"] == 0
        assert run["feedback_learned"] > 0  # feedback joined its decisions and was learned
        assert run["snapshot"]["profiles"] == run["profiles"]
        assert run["stitch"]["stitch_identify"]["n"] == 5
    assert data["fold_only"]["learned"] > 0
    assert data["cprofile_top25_own_time"]
    assert "http" not in data


def test_over_http(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = [*TINY, "--stores", "memory", "--http-seconds", "1", "--health-seconds", "0.3"]
    args += ["--health-max", "200", "--out", str(tmp_path), "--name", "h"]
    assert bench("ingest").main(args) == 0
    http = json.loads((tmp_path / "h.json").read_text())["http"]
    batch = http["batch"]
    assert batch["statuses"] == {"200": batch["requests"]}
    assert http["events_in_log_after_shutdown"] == batch["events"] > 0
    assert http["healthz_raw_client"]["statuses"] == {"200": http["healthz_raw_client"]["requests"]}
