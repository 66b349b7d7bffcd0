"""The README's examples really run: its curl blocks against a real server, its Python
snippet with the real Segment client, and its catalog check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nextbest.clock import ClockKind
from tests.conftest import make_settings, serving
from tests.support import (
    ROOT,
    counter_ids,
)

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(sh|python)\n(.*?)```", README, re.S)


def _dev_keys(server_keys: dict[str, str], text: str) -> str:
    for dev, real in server_keys.items():
        text = text.replace(dev, real)
    return text


@pytest.fixture
def seeded_server(tmp_path):
    """The example bank served with counted decision ids: each decision's exploration is
    seeded by its id, so the README's answers are the same at every run."""
    with serving(make_settings(tmp_path), new_id=counter_ids()) as server:
        yield server


@pytest.fixture
def keyed(seeded_server):
    live_server = seeded_server
    s = live_server.settings
    keys = {
        "dev-write-key": next(iter(s.write_keys)),
        "dev-browser-key": next(iter(s.browser_keys)),
        "dev-server-key": next(iter(s.server_keys)),
        "dev-admin-key": next(iter(s.admin_keys)),
        "http://127.0.0.1:8000": live_server.url,
    }
    return live_server, keys


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_run(keyed):
    server, keys = keyed
    curl_blocks = [b for kind, b in BLOCKS if kind == "sh" and "curl" in b]
    assert len(curl_blocks) >= 4
    outputs = []
    for block in curl_blocks:
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", _dev_keys(keys, block)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert '"message"' not in run.stdout, (block, run.stdout)  # no error body
        outputs.append(run.stdout)
    assert outputs[0].strip() == '{"success":true,"accepted":6,"duplicates":0,"rejected":[]}'
    assert outputs[1].index('"offer_id":"mortgage_advice"') < outputs[1].index('"position":2')
    assert "viewed mortgage pages 5 times in 14 days" in outputs[1]
    profile = server.engine.profile("u-1001")
    assert profile is not None
    assert profile.interests["mortgage"].total == 6  # five page views, the callback asked for
    assert profile.anonymous_ids == ["dev-7"]
    seen = profile.offers["mortgage_advice"]
    assert seen.total_impressions == 1
    assert server.engine.decision(seen.last_decision_id or "") is not None
    (reload,) = [o for b, o in zip(curl_blocks, outputs, strict=True) if "catalog/reload" in b]
    assert '"changed":false' in reload
    (audited,) = [o for b, o in zip(curl_blocks, outputs, strict=True) if "/v1/audit" in b]
    entries = json.loads(audited)["entries"]
    assert [(e["action"], e["subject"], e["actor"]["kind"]) for e in entries] == [
        ("profile.read", "u-1001", "server")
    ]
    (page,) = [o for b, o in zip(curl_blocks, outputs, strict=True) if "dev-browser-key" in b]
    assert set(json.loads(page)) == {"decision_id", "placement", "items"}  # what a page renders
    (called,) = [o for b, o in zip(curl_blocks, outputs, strict=True) if "/v1/callbacks" in b]
    decoder = json.JSONDecoder()  # two answers, one after the other (curl adds no newline)
    presence, end = decoder.raw_decode(called)
    callback = decoder.raw_decode(called[end:].lstrip())[0]
    assert (presence["advisor_id"], presence["presence"]) == ("anna_holm", "available")
    assert (callback["customer"], callback["topic"], callback["state"]) == (
        "u-1001",
        "mortgage",
        "requested",
    )
    assert callback["scheduled_for"] is not None
    assert " will call you " in callback["notice"]
    steps = [s.event.name for s in server.engine.event_log.scan(0)]
    assert steps[-1] == "Callback Requested"


def test_readme_python_example_runs(keyed):
    server, keys = keyed
    (snippet,) = [b for kind, b in BLOCKS if kind == "python"]
    before = server.engine.event_log.count()
    subprocess.run([sys.executable, "-c", _dev_keys(keys, snippet)], check=True, timeout=60)
    assert server.engine.event_log.count() == before + 1


def test_readme_catalog_check_runs():
    nextbest = Path(sys.executable).parent / "nextbest"
    run = subprocess.run(
        [str(nextbest), "check", "examples/bank"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.startswith("ok: catalog 1+")
    assert "12 topics, 6 segments, 20 offers, 9 campaigns, 5 placements, 6 advisors" in run.stdout


#: how the README's example problems are made: field path -> (file, text, broken text)
_BREAKS = {
    "$.offers[2].eligibility": (
        "offers.yaml",
        "eligibility: segments.mortgage_intent && segments.adult",
        "eligibility: segments.mortgage_intnt && segments.adult",
    ),
    "$.segments[2].rule": ("segments.yaml", "rule: profile.age >= 18", 'rule: profile.age >= "18"'),
}


def test_readme_catalog_problems_are_what_check_prints(tmp_path):
    """Each problem the README quotes is printed, word for word, for the example bank with
    that mistake made."""
    quoted = re.findall(r"`(examples/bank/[\w.]+:\d+: \$\S+: [^`]+)`", README)
    assert len(quoted) == len(_BREAKS)
    nextbest = Path(sys.executable).parent / "nextbest"
    for i, line in enumerate(quoted):
        file, old, new = _BREAKS[line.split(": ")[1]]
        bank = tmp_path / str(i) / "examples" / "bank"
        shutil.copytree(ROOT / "examples" / "bank", bank)
        text = (bank / file).read_text()
        assert old in text
        (bank / file).write_text(text.replace(old, new, 1))
        run = subprocess.run(
            [str(nextbest), "check", "examples/bank"],
            cwd=tmp_path / str(i),
            capture_output=True,
            text=True,
        )
        assert run.returncode == 1
        assert line in run.stdout.splitlines()


def test_readme_demo_fill_runs(keyed, tmp_path):
    server, keys = keyed
    (block,) = [b for kind, b in BLOCKS if kind == "sh" and "sim generate" in b]
    script = _dev_keys(keys, block)
    script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    script = script.replace("--customers 1000", "--customers 40").replace(
        "--duration 60", "--duration 8"
    )
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        check=True,
        timeout=60,
        capture_output=True,
    )
    sent = len((tmp_path / "events.ndjson").read_bytes().splitlines())
    assert server.engine.event_log.count() == sent > 0


def test_readme_analyst_commands_run(tmp_path):
    """sim evaluate --data, then models, export decisions and evaluate on its store: the
    simulated run's decisions and feedback are there (at a small size)."""
    (block,) = [b for kind, b in BLOCKS if kind == "sh" and "nextbest evaluate" in b]
    nextbest_bin = Path(sys.executable).parent
    script = (
        block.replace(".venv/bin/", f"{nextbest_bin}/")
        .replace("--customers 500 --days 30", "--customers 60 --days 10")
        .replace("sim.sqlite", str(tmp_path / "sim.sqlite"))
        .replace("decisions.parquet", str(tmp_path / "decisions.parquet"))
    )
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = int(run.stdout.split("wrote ")[1].split(" rows")[0])
    assert rows > 0
    assert "home_feed: contextual" in run.stdout
    assert "wrote " in run.stdout
    assert "click rate per slot" in run.stdout
    assert "share kept per earlier impression: " in run.stdout
    assert "ips" in run.stdout


def test_readme_event_time_run_runs(tmp_path):
    """The README's ``serve --clock event`` + ``sim evaluate --target`` block, against a real
    server on event time (the block's serve line is this fixture)."""
    (block,) = [b for kind, b in BLOCKS if kind == "sh" and "--clock event" in b]
    serve, rest = block.split("\n", 1)
    assert "serve --clock event" in serve
    settings = make_settings(tmp_path, clock=ClockKind.EVENT)
    with serving(settings, counted_ids=False) as server:
        keys = f"--write-key {next(iter(settings.write_keys))} "
        keys += f"--server-key {next(iter(settings.server_keys))} --quiet "
        script = (
            rest.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
            .replace("--customers 200 --days 14", "--customers 20 --days 4")
            .replace("--target http://127.0.0.1:8000", keys + "--target " + server.url)
        )
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert any(line.startswith("nextbest ") for line in run.stdout.splitlines())
        server.engine.flush()
        assert next(iter(server.engine.decision_log.decisions()), None) is not None
