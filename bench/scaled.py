"""The scaled deployment's figures (issue #17, point 6): events/s and decisions/s with 1 and 2
API workers, CPU per event and per decision summed over every process (API workers, fold
worker, redis-server, nats-server, postgres; /proc/<pid>/stat before and after), freshness
(an event acknowledged by one API worker, then visible in a profile read on another), bytes
per profile in Redis.

    PYTHONPATH=src .venv/bin/python bench/scaled.py [--seconds 5] [--out bench/results/scaled.json]

Needs the local PostgreSQL (database test), Redis and NATS JetStream; uses a schema, a Redis
database (10) and a stream of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.acceptance.test_scaled_processes import Worker  # noqa: E402
from tests.nats import delete_stream  # noqa: E402

from nextbest.store.redis import RedisState  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/10"
SERVER = ("dev-server-key", "")
MORTGAGE = "https://bank.example/mortgages/rates"
TICK = os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def event(n: int, user: str) -> dict[str, object]:
    return {
        "type": "page",
        "messageId": f"e-{uuid.uuid4().hex}",
        "userId": user,
        "properties": {"url": MORTGAGE},
        "context": {"n": n},
    }


def load(urls: list[str], seconds: float, clients: int, kind: str) -> int:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(c: int) -> None:
        with httpx.Client(auth=SERVER, timeout=10) as http:
            n = 0
            while time.monotonic() < stop:
                url = urls[(c + n) % len(urls)]
                user = f"u{(c * 997 + n) % 5000}"
                if kind == "events":
                    body = {"batch": [event(n, user) for _ in range(20)]}
                    r = http.post(f"{url}/v1/batch", json=body)
                    done[c] += 20 if r.status_code == 200 else 0
                else:
                    ask = {"userId": user, "placement": "home_feed"}
                    r = http.post(f"{url}/v1/decide", json=ask)
                    done[c] += 1 if r.status_code == 200 else 0
                n += 1

    threads = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def freshness(writer: str, reader: str, probes: int) -> list[float]:
    """Seconds from an event's 200 on ``writer`` until ``reader`` shows it in the profile."""
    out = []
    with httpx.Client(auth=SERVER, timeout=10) as http:
        for n in range(probes):
            user = f"probe-{uuid.uuid4().hex[:8]}"
            r = http.post(f"{writer}/v1/batch", json={"batch": [event(n, user)]})
            assert r.status_code == 200, r.text
            acked = time.perf_counter()
            while True:
                got = http.get(f"{reader}/v1/profiles/{user}")
                if got.status_code == 200:
                    out.append(time.perf_counter() - acked)
                    break
                if time.perf_counter() - acked > 5:
                    out.append(5.0)
                    break
            time.sleep(0.02)
    return out


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def phase(workers: list[Worker], fold: Worker, seconds: float, kind: str, clients: int) -> dict:
    pids = [w.proc.pid for w in [*workers, fold] if w.proc]
    services = pids_named("redis-server") + pids_named("nats-server") + pids_named("postgres")
    before = (cpu_seconds(pids), cpu_seconds(services))
    started = time.perf_counter()
    n = load([w.url for w in workers], seconds, clients, kind)
    elapsed = time.perf_counter() - started
    after = (cpu_seconds(pids), cpu_seconds(services))
    ours, theirs = after[0] - before[0], after[1] - before[1]
    return {
        "ops": n,
        "per_second": n / elapsed,
        "cpu_ms_per_op_nextbest": 1000 * ours / max(n, 1),
        "cpu_ms_per_op_services": 1000 * theirs / max(n, 1),
        "cpu_ms_per_op_total": 1000 * (ours + theirs) / max(n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", default="bench/results/scaled.json")
    args = parser.parse_args()
    schema = f"bench_scaled_{uuid.uuid4().hex[:8]}"
    stream = f"NBBENCH-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    RedisState(REDIS).client.flushdb()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NEXTBEST_CATALOG": str(ROOT / "examples" / "bank"),
        "NEXTBEST_DATA": f"{PG}?options=-csearch_path%3D{schema}",
        "NEXTBEST_PROFILES": REDIS,
        "NEXTBEST_BUS": f"nats://127.0.0.1:4222/{stream}",
    }
    logs = Path("/tmp") / schema
    logs.mkdir()
    fold = Worker("fold", env, logs / "fold.log").start()
    apis = [Worker("api", env, logs / f"api{i}.log").start() for i in (1, 2)]
    results: dict[str, object] = {"load": os.getloadavg()}
    try:
        load([apis[0].url], 2.0, args.clients, "events")  # warm up
        for n in (1, 2):
            used = apis[:n]
            for kind in ("events", "decisions"):
                results[f"{kind}_{n}_api"] = phase(used, fold, args.seconds, kind, args.clients)
        # freshness under load: events keep coming through worker 1 while probing 1 -> 2
        stop = threading.Thread(target=load, args=([apis[0].url], args.seconds, 2, "events"))
        stop.start()
        fresh = freshness(apis[0].url, apis[1].url, 100)
        stop.join()
        results["freshness_ms"] = {
            "p50": 1000 * statistics.median(fresh),
            "p99": 1000 * quantile(fresh, 0.99),
            "max": 1000 * max(fresh),
            "probes": len(fresh),
        }
        state = RedisState(REDIS)
        sizes = [state.memory_usage("profile", f"u{n}") for n in range(0, 5000, 50)]
        results["redis_bytes_per_profile"] = statistics.mean(s for s in sizes if s)
        with psycopg.connect(env["NEXTBEST_DATA"], autocommit=True) as db:
            results["postgres_events"] = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        for w in [*apis, fold]:
            w.stop()
        delete_stream(env["NEXTBEST_BUS"], 16)
        with psycopg.connect(PG, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")
        RedisState(REDIS).client.flushdb()
    results["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
