"""Benchmark: erasing one customer on the scaled roles (issue 20, point 4): ``DELETE
/v1/customers/{id}`` on an API worker (``serve --role api``) until the fold worker (``serve
--role fold``) erased them from PostgreSQL and Redis and recorded the outcome, over HTTP on
loopback; the same run's baselines: one profile read (``GET /v1/profiles/{id}``) and one
decision (``POST /v1/decide``) on the same worker, interleaved with the erasures.

    nice -n 19 env PYTHONPATH=src .venv/bin/python bench/erasure_scaled.py \\
        [--customers 2000] [--erasures 20] [--out bench/results/erasure_scaled.json]

1. Two API workers and one fold worker on the local PostgreSQL (database ``test``, a schema
   of its own), Redis (database 3) and NATS JetStream (a stream of its own), removed
   afterwards.
2. ``--customers`` customers, each an identify (email, phone) from a device, a second device
   logging in, three page views, a decision: events through both API workers.
3. For each of ``--erasures`` customers, in turn: a profile read and a decision of another
   customer (the baseline), then the erasure of this one, each timed from the request to
   its answer. The erasure's answer comes once the fold worker applied the command: the
   event log written behind it first, tombstones recorded, PostgreSQL's rows deleted (event
   log, decision log, quarantine, callbacks, outbox), the live state saved, the outcome
   recorded; the API worker polls for it every 20 ms.

Results: ``bench/results/erasure_scaled.json`` (p50, max per kind, the load average before and
after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.acceptance.test_scaled_processes import Worker, wait_folded  # noqa: E402
from tests.nats import delete_stream  # noqa: E402

from nextbest.store.redis import RedisState  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/3"
SERVER = ("dev-server-key", "")
MORTGAGE = "https://bank.example/mortgages/rates"
PARTITIONS = 16
T0 = 1_790_157_600.0


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def life(n: int) -> list[dict[str, object]]:
    user, dev = f"bench-erase-{n}", f"bench-dev-{n}"
    base = {"context": {"library": {"name": "bench", "version": "1"}}}
    at = T0 - 600 + n % 500

    def msg(kind: str, i: int, **fields: object) -> dict[str, object]:
        return {
            **base,
            "type": kind,
            "messageId": f"be-{n}-{i}",
            "timestamp": iso(at + i),
            **fields,
        }

    return [
        msg("identify", 0, userId=user, anonymousId=dev, traits={"email": f"{user}@x.dk"}),
        msg("identify", 1, userId=user, anonymousId=dev + "-b", traits={"phone": f"+45{n:08d}"}),
        *(
            msg("page", 2 + i, userId=user, properties={"url": MORTGAGE}, name=None)
            for i in range(3)
        ),
    ]


def ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "p50_ms": round(statistics.median(xs) * 1000, 2),
        "max_ms": round(xs[-1] * 1000, 2),
        "mean_ms": round(statistics.mean(xs) * 1000, 2),
    }


def each_ms(xs: list[float]) -> list[float]:
    return [round(x * 1000, 1) for x in xs]


def timed(client: httpx.Client, method: str, url: str, **kw: object) -> float:
    started = time.perf_counter()
    r = client.request(method, url, auth=SERVER, timeout=60, **kw)  # type: ignore[arg-type]
    took = time.perf_counter() - started
    assert r.status_code == 200, (url, r.status_code, r.text)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--erasures", type=int, default=20)
    parser.add_argument("--out", default="bench/results/erasure_scaled.json")
    args = parser.parse_args()
    schema = f"bench_erase_{uuid.uuid4().hex[:8]}"
    stream = f"NBBENCH-ERASE-{uuid.uuid4().hex[:8]}"
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
        "NEXTBEST_BUS_PARTITIONS": str(PARTITIONS),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    logs = Path("/tmp") / schema
    logs.mkdir()
    fold = Worker("fold", env, logs / "fold.log").start()
    apis = [Worker("api", env, logs / f"api{i}.log").start() for i in (1, 2)]
    results: dict[str, object] = {"customers": args.customers, "load_before": os.getloadavg()}
    try:
        with httpx.Client() as client:

            def send(n: int) -> None:
                body = {"batch": life(n)}
                r = client.post(f"{apis[n % 2].url}/v1/batch", json=body, auth=SERVER, timeout=60)
                assert r.status_code == 200, r.text

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(send, range(args.customers)))
            wait_folded(fold, env["NEXTBEST_DATA"], wait=600)

            def decide(n: int) -> None:
                ask = {"placement": "home_feed", "userId": f"bench-erase-{n}"}
                r = client.post(f"{apis[n % 2].url}/v1/decide", json=ask, auth=SERVER, timeout=60)
                assert r.status_code == 200, r.text

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(decide, range(args.customers)))
            time.sleep(0.5)  # the decisions written (every 0.1 s)
            reads: list[float] = []
            decisions: list[float] = []
            erasures: list[float] = []
            api = apis[1].url
            step = max(1, args.customers // args.erasures)
            for i in range(args.erasures):
                gone, other = i * step, i * step + 1
                reads.append(timed(client, "GET", f"{api}/v1/profiles/bench-erase-{other}"))
                ask = {"placement": "home_feed", "userId": f"bench-erase-{other}"}
                decisions.append(timed(client, "POST", f"{api}/v1/decide", json=ask))
                erasures.append(timed(client, "DELETE", f"{api}/v1/customers/bench-erase-{gone}"))
            results["profile_read"] = ms(reads)
            results["decision"] = ms(decisions)
            results["erasure"] = ms(erasures)
            results["each_ms"] = {
                "profile_read": each_ms(reads),
                "decision": each_ms(decisions),
                "erasure": each_ms(erasures),
            }
            results["erasure_over_decision_p50"] = round(
                statistics.median(erasures) / statistics.median(decisions), 1
            )
        with psycopg.connect(env["NEXTBEST_DATA"], autocommit=True) as db:
            results["postgres_events"] = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        for w in [*apis, fold]:
            w.stop()
        delete_stream(env["NEXTBEST_BUS"], PARTITIONS)
        with psycopg.connect(PG, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")
        RedisState(REDIS).client.flushdb()
    results["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
