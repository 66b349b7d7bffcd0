"""Benchmark: how long a restart takes as the decision log grows (SQLite, the example bank).

    .venv/bin/python bench/restart.py                      # 200,000 logged decisions (~3 min)
    .venv/bin/python bench/restart.py --decisions 20000    # smaller

A learning engine counts each campaign's exploration budget over every decision it logged.
The snapshot saves those counts with the decision log's position at that moment, so a restart
reads only the decisions logged after it; a snapshot without the position (saved by an older
version) makes the restart count the whole log. This measures both on the same file:

1. an engine on a SQLite file with the example bank folds ``--customers`` customers' identify
   and page events and makes ``--real`` decisions through ``engine.decide`` (all placements);
2. the log is grown to ``--decisions`` by appending copies of those decisions under new ids
   (``engine.decision_log``); the engine is released unsaved and a new one restarts on the
   file, counting the whole log (so its learner counts the copies as if it had made them),
   then it saves a snapshot;
3. ``--tail`` more real decisions are made and flushed after the snapshot (a restart finds a
   log tail, as after a crash);
4. ``Engine(catalog, open_stores(file))`` is timed ``--repeat`` times with the snapshot as
   saved, then with the position row deleted through the state port (the whole log
   counted), and the restored learners are compared with the live one byte for byte.

Results: ``bench/results/restart.json``.
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    RESULTS,
    code_measured,
    command_line,
    load_average,
    log,
    machine_info,
    now_iso,
    table,
    write_results,
)
from nextbest.bootstrap import open_stores
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.engine import Engine
from nextbest.store.catalog_files import load_catalog
from nextbest.store.port import StateRow
from nextbest.store.snapshot import LEARNER_ROW

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000.0
PAGES = ["mortgages", "loans/car", "pension", "savings/children", "cards", "investing"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decisions", type=int, default=200_000, help="decisions in the log")
    ap.add_argument("--real", type=int, default=2_000, help="decisions made by engine.decide")
    ap.add_argument("--tail", type=int, default=500, help="decisions logged after the snapshot")
    ap.add_argument("--customers", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=3, help="restarts timed per variant")
    ap.add_argument("--seed", type=int, default=20261202)
    ap.add_argument("--tmpdir", default=None, help="where the SQLite file goes")
    ap.add_argument("--name", default="restart", help="results name")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return ap.parse_args(argv)


def iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat()


def ingest(engine: Engine, messages: list[dict[str, Any]]) -> None:
    result = engine.ingest_batch(msgspec.json.encode({"batch": messages}))
    assert result.accepted == len(messages), result


def populate(engine: Engine, clock: FixedClock, args: argparse.Namespace) -> list[str]:
    rng = random.Random(args.seed)
    users = [f"u{k:06d}" for k in range(args.customers)]
    at = T0
    messages: list[dict[str, Any]] = []
    for n, user in enumerate(users):
        at += 0.5
        messages.append(
            {
                "type": "identify",
                "userId": user,
                "messageId": f"id-{n}",
                "timestamp": iso(at),
                "traits": {"age": rng.randint(18, 80), "marketing_consent": True},
            }
        )
        for k in range(rng.randint(1, 6)):
            messages.append(
                {
                    "type": "page",
                    "userId": user,
                    "messageId": f"pg-{n}-{k}",
                    "timestamp": iso(at),
                    "properties": {"url": f"https://bank.example/{rng.choice(PAGES)}/x"},
                }
            )
        if len(messages) >= 500:
            ingest(engine, messages)
            messages = []
    if messages:
        ingest(engine, messages)
    clock.set(at + 60)
    return users


def decide(
    engine: Engine, clock: FixedClock, users: list[str], n: int, rng: random.Random
) -> list[Any]:
    placements = [p.id for p in engine.catalog.spec.placements]
    out = []
    for _ in range(n):
        clock.set(clock.now() + 0.05)
        request = DecisionRequest(placement=rng.choice(placements))
        out.append(engine.decide(request, user_id=rng.choice(users)))
    engine.flush()
    return out


def restart_seconds(catalog: Any, path: Path, clock: FixedClock) -> tuple[float, bytes]:
    t = time.perf_counter()
    engine = Engine(catalog, open_stores(str(path)), clock)
    seconds = time.perf_counter() - t
    state = engine.model_state()
    engine.release()  # not engine.close(): that would save a new snapshot
    return seconds, state


def forget_position(path: Path) -> None:
    """The snapshot as an older version saved it: without the decision log's position."""
    stores = open_stores(str(path))
    saved = stores.state.load_state()
    assert saved is not None
    row = StateRow(LEARNER_ROW, "decision_log_position", None)  # a None body deletes
    stores.state.save_state(saved.seq, saved.version, [row])
    stores.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    log(f"restart benchmark: {command_line()}")
    catalog = load_catalog(ROOT / "examples" / "bank")
    clock = FixedClock(T0)
    rng = random.Random(args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="nextbest-restart-", dir=args.tmpdir) as tmp:
        path = Path(tmp) / "restart.sqlite"
        engine = Engine(catalog, open_stores(str(path)), clock)
        users = populate(engine, clock, args)
        real = decide(engine, clock, users, args.real, rng)
        copies = args.decisions - args.real
        log(f"{args.real:,} real decisions; appending {copies:,} copies")
        for start in range(0, copies, 5_000):
            engine.decision_log.append_decisions(
                [
                    msgspec.structs.replace(real[n % len(real)], decision_id=f"copy-{n:08d}")
                    for n in range(start, min(copies, start + 5_000))
                ]
            )
        engine.release()  # no snapshot yet: the next engine counts the whole log
        engine = Engine(catalog, open_stores(str(path)), clock)
        engine.snapshot()
        decide(engine, clock, users, args.tail, rng)
        live = engine.model_state()
        logged = engine.decision_log.decision_log_position()
        engine.release()
        size_mb = path.stat().st_size / 2**20
        log(f"log: {logged:,} decisions, file {size_mb:,.0f} MB; timing restarts")

        with_position, without = [], []
        for _ in range(args.repeat):
            seconds, state = restart_seconds(catalog, path, clock)
            assert state == live, "restart from the position differs from the live learner"
            with_position.append(seconds)
        forget_position(path)
        for _ in range(args.repeat):
            seconds, state = restart_seconds(catalog, path, clock)
            assert state == live, "whole-log restart differs from the live learner"
            without.append(seconds)

    rows = [
        ["snapshot with the log position (reads the tail)", statistics.median(with_position)],
        ["snapshot without it (counts the whole log)", statistics.median(without)],
    ]
    print(table("restart, seconds (median)", ["variant", "seconds"], rows))
    per = (statistics.median(without) - statistics.median(with_position)) / logged
    print(f"whole-log counting: {per * 1e6:.1f} us per logged decision")
    payload = {
        "benchmark": "restart",
        "date": now_iso(),
        "command": command_line(),
        "machine": {**info, "load_average_end": load_average()},
        "code_measured": code_measured(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "decisions_logged": logged,
        "tail_after_snapshot": args.tail,
        "file_mb": round(size_mb, 1),
        "restart_seconds_with_position": [round(s, 3) for s in with_position],
        "restart_seconds_whole_log": [round(s, 3) for s in without],
        "whole_log_us_per_decision": round(per * 1e6, 2),
        "restored_learner_identical": True,
    }
    log(f"results: {write_results(args.name, payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
