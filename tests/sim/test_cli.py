"""``nextbest sim generate`` and ``nextbest sim send`` as a user runs them."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from nextbest.cli import app
from tests.conftest import LiveServer


def test_sim_generate_writes_the_same_bytes_for_the_same_arguments(tmp_path):
    runner = CliRunner()
    args = ["sim", "generate", "--seed", "4", "--customers", "40", "--days", "7"]
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
