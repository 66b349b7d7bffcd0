"""``nextbest migrate`` throughput: rows/s copying an embedded SQLite store into PostgreSQL,
and into another SQLite file (the same-run baseline), with the verification's cost.

The source holds ``--events`` events (pages, tracks and identifies of 2,000 users) and
``--decisions`` decisions made by the example bank (``store_postgres.make_events`` /
``make_decisions``), written with ``synchronous=OFF`` (setting up is not measured). Each
target is new (a scratch schema on the server). ``migrate`` runs through its use case, as the
command does: per port, the copy's rows/s; then the verification (digests of both sides, a
replay on each) timed apart.

    .venv/bin/python bench/migrate.py [--quick] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from _common import EXAMPLE_CATALOG, Run, add_run_args, log, scratch_schema, table
from nextbest.bootstrap import load_catalog, open_stores
from nextbest.migrate import MigrationReport, migrate
from store_postgres import DEFAULT_URL, make_decisions, make_events

__all__ = ["main"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "migrate")
    ap.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server (a scratch schema)")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=5_000, help="rows per append (--batch)")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.decisions = 2_000, 400
    if args.name is None:
        args.name = "migrate_quick" if args.quick else "migrate"
    return args


def figures(report: MigrationReport) -> dict[str, Any]:
    copy = sum(p.seconds for p in report.ports)
    return {
        "ok": report.ok,
        "problems": report.problems,
        "ports": {
            p.port: {
                "rows": p.copied,
                "bytes": p.bytes,
                "seconds": round(p.seconds, 3),
                "rows_per_s": round(p.rows_per_second),
            }
            for p in report.ports
        },
        "copy_seconds": round(copy, 3),
        "copy_rows_per_s": round(report.rows / copy) if copy else None,
        "copy_mb_per_s": round(report.bytes / 1e6 / copy, 2) if copy else None,
        "replay_seconds": round(report.replay.seconds, 3),
        "total_seconds": round(report.seconds, 3),
        "replay_identical": report.replay.identical and report.replay.models_identical,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        psycopg.connect(args.url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        log(f"PostgreSQL not reachable at {args.url}: {exc}")
        return 2
    run = Run("migrate", args, "psycopg")
    rng = random.Random(args.seed)
    catalog = load_catalog(EXAMPLE_CATALOG)
    found: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        source = Path(tmp) / "source.sqlite"
        stores = open_stores(str(source), synchronous="OFF")
        try:
            events = make_events(args.events, rng)
            for start in range(0, len(events), 5_000):
                stores.events.append(events[start : start + 5_000])
            stores.decisions.append_decisions(make_decisions(args.decisions, rng))
        finally:
            stores.close()
        log(f"source: {args.events:,} events, {args.decisions:,} decisions in {source}")
        with scratch_schema(args.url) as url:
            copied = migrate(f"sqlite:{source}", url, catalog, batch=args.batch)
            found["postgresql"] = figures(copied)
        baseline = Path(tmp) / "target.sqlite"
        found["sqlite"] = figures(migrate(str(source), str(baseline), catalog, batch=args.batch))
    rows = [
        [
            target,
            port,
            f["ports"][port]["rows"],
            f["ports"][port]["bytes"] / 1e6,
            f["ports"][port]["seconds"],
            float(f["ports"][port]["rows_per_s"]),
        ]
        for target, f in found.items()
        for port in ("events", "decisions")
    ]
    print(table("migrate from SQLite", ["target", "port", "rows", "MB", "s", "rows/s"], rows))
    print(
        table(
            "whole run",
            ["target", "copy s", "copy rows/s", "copy MB/s", "verify+replay s", "total s", "ok"],
            [
                [
                    t,
                    f["copy_seconds"],
                    float(f["copy_rows_per_s"] or 0),
                    float(f["copy_mb_per_s"] or 0),
                    f["replay_seconds"],
                    f["total_seconds"],
                    str(f["ok"]),
                ]
                for t, f in found.items()
            ],
        )
    )
    run.write({"targets": found})
    return 0 if all(f["ok"] for f in found.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
