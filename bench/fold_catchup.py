"""The fold side at saturation (issue #17, several fold workers): events published to
JetStream first (nothing folding), then the fold workers started; how long until they have
folded and logged everything, and the CPU every process spent per event meanwhile (the fold
workers, redis-server, nats-server, postgres). With one fold worker (``--folds 0``: ``serve
--role fold``, every profile in memory; ``--folds 1``: one partitioned worker owning all the
partitions) and several (``--folds 2``: each owning half, profiles read from Redis on
demand): full batches, so what scales is the fold, not the load generator.

    PYTHONPATH=src .venv/bin/python bench/fold_catchup.py --folds 2 [--events 60000]
        [--events 120000] [--customers 5000] [--cache 100000]
        [--out bench/results/fold_catchup.json]

Needs the local PostgreSQL (database test), Redis (db 10) and NATS; a schema, a stream and
the Redis database of its own, emptied afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scaled import cpu_seconds, metrics, pids_named  # noqa: E402
from tests.acceptance.test_scaled_processes import Worker  # noqa: E402
from tests.nats import delete_stream  # noqa: E402

from nextbest.bus.nats import NatsBus  # noqa: E402
from nextbest.bus.port import BusMessage  # noqa: E402
from nextbest.events.parse import parse_batch  # noqa: E402
from nextbest.profile.identity import IdentityMap  # noqa: E402
from nextbest.routing import destination  # noqa: E402
from nextbest.store.redis import RedisState  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/10"
MORTGAGE = "https://bank.example/mortgages/rates"


def publish(bus: NatsBus, events: int, customers: int) -> None:
    """``events`` page views of ``customers`` customers, routed as an API worker would."""
    identity = IdentityMap()
    enc = msgspec.msgpack.Encoder().encode
    now = time.time()
    for start in range(0, events, 1000):
        batch = [
            {
                "type": "page",
                "messageId": f"c-{uuid.uuid4().hex}",
                "userId": f"u{n % customers}",
                "properties": {"url": MORTGAGE},
            }
            for n in range(start, min(events, start + 1000))
        ]
        parsed = parse_batch(json.dumps({"batch": batch}).encode(), now)
        bus.publish(
            [
                BusMessage(destination(identity, e, bus.partitions).partition, e.message_id, enc(e))
                for e in parsed
            ]
        )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def launch(folds: list[Worker]) -> None:
    """Start the fold workers' processes together, then wait until each is ready."""
    for f in folds:
        with f.log.open("ab") as out:
            f.proc = subprocess.Popen(
                [sys.executable, "-m", "nextbest.cli", "serve", "--role", "fold"],
                env={**f.env, "NEXTBEST_PORT": str(f.port)},
                stdout=out,
                stderr=out,
                cwd=ROOT,
            )
    deadline = time.monotonic() + 60
    for f in folds:
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{f.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError(f"fold worker not ready: {f.log.read_text()[-2000:]}")


def caught_up(folds: list[Worker]) -> bool:
    names = ("nextbest_fold_lag_events", "nextbest_event_log_lag_events")
    for f in folds:
        m = metrics(f.url)
        if any(m.get(n, 1.0) != 0.0 for n in names):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=0)
    parser.add_argument("--events", type=int, default=120_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--cache", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--out", default="bench/results/fold_catchup.json")
    args = parser.parse_args()
    schema = f"bench_catchup_{uuid.uuid4().hex[:8]}"
    stream = f"NBCATCHUP-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    RedisState(REDIS).client.flushdb()
    bus_url = f"nats://127.0.0.1:4222/{stream}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NEXTBEST_CATALOG": str(ROOT / "examples" / "bank"),
        "NEXTBEST_DATA": f"{PG}?options=-csearch_path%3D{schema}",
        "NEXTBEST_PROFILES": REDIS,
        "NEXTBEST_BUS": bus_url,
        "NEXTBEST_BUS_PARTITIONS": str(args.partitions),
    }
    if args.cache:
        env["NEXTBEST_FOLD_CACHE"] = str(args.cache)
    logs = Path("/tmp") / schema
    logs.mkdir()
    results: dict[str, object] = {"load": os.getloadavg(), "args": vars(args)}
    folds: list[Worker] = []
    try:
        bus = NatsBus(bus_url, partitions=args.partitions)
        started = time.perf_counter()
        publish(bus, args.events, args.customers)
        results["publish_seconds"] = time.perf_counter() - started
        bus.close()
        if args.folds:
            share = args.partitions // args.folds
            spans = [
                f"{i * share}-{args.partitions - 1 if i == args.folds - 1 else (i + 1) * share - 1}"
                for i in range(args.folds)
            ]
            folds = [
                Worker("fold", {**env, "NEXTBEST_FOLD_PARTITIONS": s}, logs / f"fold{i}.log")
                for i, s in enumerate(spans)
            ]
        else:
            folds = [Worker("fold", env, logs / "fold.log")]
        named = {n: pids_named(n) for n in ("redis-server", "nats-server", "postgres")}
        services = [pid for pids in named.values() for pid in pids]
        launch(folds)  # all at once: none folds its share alone while another starts
        # measured from when all are ready (a worker's start-up, imports and restore, is not
        # the fold's cost), over the events folded since
        folded = 'nextbest_fold_events_total{outcome="folded"}'
        done0 = sum(metrics(f.url).get(folded, 0.0) for f in folds)
        pids = [f.proc.pid for f in folds if f.proc]
        ours0, theirs0 = cpu_seconds(pids), cpu_seconds(services)
        each0 = {n: cpu_seconds(p) for n, p in named.items()}
        started = time.perf_counter()
        while not caught_up(folds):
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        ours, theirs = cpu_seconds(pids) - ours0, cpu_seconds(services) - theirs0
        n = max(1.0, args.events - done0)
        results["fold_worker_rss_mb"] = [rss_mb(pid) for pid in pids]
        results["cpu_ms_per_event_each_service"] = {
            name: 1000 * (cpu_seconds(p) - each0[name]) / n for name, p in named.items()
        }
        fm = [metrics(f.url) for f in folds]
        results["fold_batches"] = sum(m.get("nextbest_fold_batch_seconds_count", 0) for m in fm)
        results["log_commits"] = sum(m.get("nextbest_postgres_batch_seconds_count", 0) for m in fm)
        results["redelivered"] = sum(m.get("nextbest_fold_redelivered_total", 0) for m in fm)
        results.update(
            {
                "fold_workers": args.folds or "one (serve --role fold)",
                "events_measured": n,
                "seconds": elapsed,
                "events_per_second": n / elapsed,
                "cpu_ms_per_event_fold_workers": 1000 * ours / n,
                "cpu_ms_per_event_services": 1000 * theirs / n,
                "cpu_ms_per_event_total": 1000 * (ours + theirs) / n,
            }
        )
    finally:
        for f in folds:
            f.stop()
        delete_stream(bus_url, args.partitions)
        with psycopg.connect(PG, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")
        RedisState(REDIS).client.flushdb()
    results["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
