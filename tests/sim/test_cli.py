"""``nextbest sim generate``, ``send`` and ``evaluate`` as a user runs them."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

from nextbest import cli
from nextbest.cli import app
from nextbest.clock import ClockKind
from tests.conftest import LiveServer, make_settings, serving
from tests.support import SERVER_KEY, WRITE_KEY


def test_sim_generate_writes_the_same_bytes_for_the_same_arguments(tmp_path):
    runner = CliRunner()
    args = ["sim", "generate", "--seed", "4", "--customers", "40", "--days", "7"]
    args += ["--start", "2026-06-01"]
    a, b = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    assert runner.invoke(app, [*args, "--out", str(a)]).exit_code == 0
    assert runner.invoke(app, [*args, "--out", str(b)]).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    first = orjson.loads(a.read_bytes().splitlines()[0])
    assert first["timestamp"].startswith("2026-06-01")


def test_sim_send_fills_a_running_server_with_every_event(live_server: LiveServer, tmp_path):
    runner = CliRunner()
    events = tmp_path / "events.ndjson"
    gen = [
        "sim",
        "generate",
        "--seed",
        "2",
        "--customers",
        "30",
        "--days",
        "5",
        "--out",
        str(events),
    ]
    assert runner.invoke(app, gen).exit_code == 0
    n = len(events.read_bytes().splitlines())
    report = tmp_path / "report.json"
    write_key = next(iter(live_server.settings.write_keys))
    result = runner.invoke(
        app,
        [
            "sim",
            "send",
            "--target",
            live_server.url,
            "--write-key",
            write_key,
            "--rate",
            "4000",
            "--duration",
            "10",
            "--file",
            str(events),
            "--json",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert live_server.engine.event_log.count() == n
    summary = orjson.loads(report.read_bytes())
    assert summary["messages_ok"] == n
    assert summary["errors_by_status"] == {}


def test_sim_evaluate_prints_a_table_and_writes_json(tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "evaluate",
            "--customers",
            "60",
            "--days",
            "5",
            "--policies",
            "static,nextbest",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "nextbest" in result.output
    metrics = orjson.loads(out.read_bytes())
    assert set(metrics) == {"static", "nextbest"}
    assert metrics["nextbest"]["customers"] == 60
    bad = CliRunner().invoke(app, ["sim", "evaluate", "--policies", "psychic"])
    assert bad.exit_code == 2


def test_sim_generate_ends_its_days_today_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_today", lambda: date(2026, 12, 6))
    out = tmp_path / "now.ndjson"
    args = ["sim", "generate", "--customers", "20", "--days", "7", "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    lines = out.read_bytes().splitlines()
    assert orjson.loads(lines[0])["timestamp"].startswith("2026-11-29")
    assert orjson.loads(lines[-1])["timestamp"] < "2026-12-06"
    bad = CliRunner().invoke(app, [*args, "--start", "June"])
    assert bad.exit_code == 2
    assert "--start: not an ISO date" in bad.output


SMALL = ["--seed", "3", "--customers", "30", "--days", "6", "--quiet"]


def _evaluate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sim", "evaluate", *SMALL, *args])
    return result.exit_code, result.output


def test_sim_evaluate_keeps_the_nextbest_run_for_analysts(tmp_path: Path):
    data = tmp_path / "sim.sqlite"
    code, output = _evaluate("--policies", "static,nextbest", "--data", str(data))
    assert code == 0, output
    assert "[95% CI]" in output
    parquet = tmp_path / "decisions.parquet"
    export = CliRunner().invoke(
        app, ["export", "decisions", "--data", str(data), "--out", str(parquet)]
    )
    assert export.exit_code == 0, export.output
    rows = int(export.output.split("wrote ")[1].split(" rows")[0])
    assert rows > 0
    # a store of a run is never reused: a second run would mix two populations
    code, output = _evaluate("--policies", "nextbest", "--data", str(data))
    assert code == 2
    assert "exists" in output
    code, output = _evaluate("--policies", "static", "--data", str(tmp_path / "x.sqlite"))
    assert code == 2


def test_sim_evaluate_over_http_gives_the_figures_in_process(tmp_path: Path):
    in_process, over_http = tmp_path / "local.json", tmp_path / "http.json"
    code, output = _evaluate("--policies", "nextbest", "--json", str(in_process))
    assert code == 0, output
    settings = make_settings(tmp_path / "server", clock=ClockKind.EVENT)
    with serving(settings, counted_ids=False) as server:
        keys = ["--write-key", WRITE_KEY, "--server-key", SERVER_KEY]
        code, output = _evaluate(
            "--policies", "nextbest", "--target", server.url, *keys, "--json", str(over_http)
        )
        assert code == 0, output
    a, b = orjson.loads(in_process.read_bytes()), orjson.loads(over_http.read_bytes())
    for run in (a, b):
        run["nextbest"]["wall_seconds"] = 0
    assert a == b
    assert a["nextbest"]["decisions"] > 0


def test_sim_evaluate_target_refusals(tmp_path: Path, live_server: LiveServer):
    code, output = _evaluate("--policies", "static,nextbest", "--target", live_server.url)
    assert code == 2
    assert "--policies nextbest" in output
    keys = ["--write-key", WRITE_KEY, "--server-key", SERVER_KEY]
    result = CliRunner().invoke(
        app,
        ["sim", "evaluate", *SMALL, "--policies", "nextbest", "--target", live_server.url, *keys],
    )
    assert result.exit_code == 1
    assert "--clock event" in str(result.exception)
    assert live_server.engine.event_log.count() == 0  # refused before sending anything


@pytest.mark.parametrize("quiet", [False, True])
def test_sim_evaluate_shows_progress_on_a_terminal_unless_quiet(quiet: bool):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with cli._progress(console, quiet, ("static", "nextbest"), 4) as progress:
        if progress is not None:
            progress("nextbest", 4)
    assert ("nextbest" in out.getvalue()) is not quiet
    assert ("4/4" in out.getvalue()) is not quiet
    with cli._progress(Console(file=io.StringIO()), False, ("x",), 1) as progress:
        assert progress is None  # not a terminal
