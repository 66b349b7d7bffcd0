"""Callback requests through two scaled API workers (``serve --role api`` x2 and ``serve
--role fold`` on the local PostgreSQL, Redis and NATS JetStream), none lost, against the same
run's baselines; and what the advisor placement costs a decision on a scaled worker (its
board read from the shared store).

    PYTHONPATH=src nice -n 19 .venv/bin/python bench/callbacks_scaled.py [--requests 4000]
        [--connections 16] [--out bench/results/callbacks_scaled.json]

**HTTP.** The same lean client (``http.client`` keep-alive connections from ``--connections``
threads, every answer counted; even threads to worker 1, odd ones to worker 2), phase by
phase: ``hello``, a bare Starlette app on the same uvicorn (one process,
``bench/callbacks_http.py --child-hello``); ``healthz``, nextbest's ``GET /healthz`` through
both workers; ``callbacks``, ``POST /v1/callbacks`` through both workers (each a new customer,
one of three topics, "call me now", one in ten "call me later"; a server key). Per request a
worker reads the customer's callbacks from PostgreSQL (one in flight per topic), routes on its
board, writes the callback (a compare-and-set commit with the advisor's capacity checked
under the advisor's lock) and publishes its steps to JetStream (acknowledged before the
answer). Then, once the fold worker caught up: callbacks stored against the 200s answered,
and every step of every callback in the event log once.

**Decide.** In this process, an API worker built as ``serve --role api`` builds it
(``bootstrap.build_api_worker``) on the same deployment, after the load (its callbacks in the
store): ``decide`` on an offer placement (``home_hero``) and on the advisor placement
(``topic_advisor``) for customers with a live interest, timed one by one; ``board()`` (what
each decision reads: the board kept by the desk) and ``refresh_board()`` (the read from
PostgreSQL the flush tick does every 0.5 s).

Needs the local PostgreSQL (database test), Redis and NATS JetStream: a schema, a Redis
database (7) and a stream of its own, removed afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.acceptance.test_scaled_callbacks import ADVISORS  # noqa: E402
from tests.acceptance.test_scaled_processes import Worker, wait_folded  # noqa: E402
from tests.nats import delete_stream  # noqa: E402
from tests.postgres import with_search_path  # noqa: E402

from _common import (  # noqa: E402
    free_port,
    load_average,
    log,
    machine_info,
    now_iso,
    proc_cpu_seconds,
    time_calls,
    write_results,
)
from nextbest.store.redis import RedisState  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = os.environ.get("NEXTBEST_BENCH_REDIS", "redis://127.0.0.1:6379/7")
NATS = "nats://127.0.0.1:4222"
AUTH = "Basic ZGV2LXNlcnZlci1rZXk6"  # dev-server-key:
TOPICS = ("mortgage", "pension", "car_loan")
PHONE = "+4512345678"
MORTGAGE = "https://bank.example/mortgages/rates"


def run_clients(ports: list[int], n: int, connections: int, request: Any) -> dict[str, Any]:
    """``n`` requests from ``connections`` threads (thread i to ``ports[i % len]``);
    ``request(i) -> (method, path, body)``; every status counted."""
    statuses: dict[int, int] = {}
    took: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", ports[k % len(ports)], timeout=60)
        mine: list[tuple[int, float]] = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            method, path, body = request(i)
            started = time.perf_counter()
            conn.request(method, path, body, headers)
            answer = conn.getresponse()
            text = answer.read()
            mine.append((answer.status, time.perf_counter() - started))
            if answer.status >= 500 and len(failures) < 5:
                failures.append(text.decode(errors="replace")[:300])
        conn.close()
        with lock:
            for status, seconds in mine:
                statuses[status] = statuses.get(status, 0) + 1
                took.append(seconds)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    took.sort()
    return {
        "requests": n,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "requests_per_second": round(n / wall),
        "failures": failures,
        "latency_ms": {
            "p50": round(took[len(took) // 2] * 1000, 2),
            "p99": round(took[min(len(took) - 1, len(took) * 99 // 100)] * 1000, 2),
        },
    }


def callback_request(run: str) -> Any:
    def make(i: int) -> tuple[str, str, bytes]:
        body = {
            "userId": f"{run}-{i}",
            "topic": TOPICS[i % len(TOPICS)],
            "mode": "later" if i % 10 == 0 else "now",
            "phone": PHONE,
        }
        return "POST", "/v1/callbacks", orjson.dumps(body)

    return make


def stored(data: str) -> dict[str, int]:
    with psycopg.connect(data, autocommit=True) as db:
        rows = db.execute("SELECT id, body FROM callbacks").fetchall()
        logged = {
            str(m): int(n)
            for m, n in db.execute(
                "SELECT message_id, count(*) FROM events WHERE message_id LIKE 'callback-%%' "
                "GROUP BY message_id"
            ).fetchall()
        }
    steps = 0
    missing = 0
    for cid, body in rows:
        n = len(orjson.loads(body)["history"])
        steps += n
        missing += sum(logged.get(f"callback-{cid}-{k}") != 1 for k in range(1, n + 1))
    return {"callbacks": len(rows), "steps": steps, "steps_not_logged_once": missing}


def decide_part(env: dict[str, str], calls: int) -> dict[str, Any]:
    from nextbest.bootstrap import build_api_worker
    from nextbest.decide.model import DecisionRequest
    from nextbest.settings import Settings

    settings = Settings.from_env(env)
    worker = build_api_worker(settings)
    try:
        users = [f"reader-{i}" for i in range(50)]
        hero = DecisionRequest(placement="home_hero")
        card = DecisionRequest(placement="topic_advisor")
        inputs = [users[i % len(users)] for i in range(calls)]
        out = {
            "decide_home_hero": time_calls(
                lambda u: worker.decide(hero, user_id=u), inputs, inputs[:500]
            ),
            "decide_topic_advisor": time_calls(
                lambda u: worker.decide(card, user_id=u), inputs, inputs[:500]
            ),
            "board_kept": time_calls(lambda _: worker.callbacks.board(), inputs, inputs[:100]),
            "board_read_from_postgresql": time_calls(
                lambda _: worker.callbacks.refresh_board(), inputs[:200], inputs[:20]
            ),
        }
        card_seen = worker.decide(card, user_id=users[0])
        out["topic_advisor_items"] = len(card_seen.items)
        return out
    finally:
        worker.close()


def start_spies(
    apis: list[Worker], out: Path | None, gil: bool = False
) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` on each API worker (collapsed stacks in ``out``), until stopped;
    ``gil``: only the thread holding the GIL (where the Python CPU goes)."""
    if out is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(a.proc.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                *(["--gil"] if gil else ["--nonblocking"]),
                "-o",
                str(out / f"api{k}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k, a in enumerate(apis, 1)
        if a.proc is not None
    ]
    time.sleep(1.0)  # attached
    return spies


def stop_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    for s in spies:
        s.send_signal(signal.SIGINT)
    for s in spies:
        s.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4_000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--calls", type=int, default=5_000, help="timed decisions per kind")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the API workers through the callback phase: collapsed stacks there",
    )
    ap.add_argument("--profile-gil", action="store_true", help="py-spy --gil (CPU, not waits)")
    ap.add_argument("--no-decide", action="store_true", help="skip the in-process decisions")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nb-cbscaled-"))
    catalog = tmp / "catalog"
    shutil.copytree(ROOT / "examples" / "bank", catalog)
    (catalog / "advisors.yaml").write_text(
        ADVISORS.replace("max_concurrent: 1", "max_concurrent: 4")
    )
    schema = f"bench_cb_{uuid.uuid4().hex[:12]}"
    stream = f"NBBENCH-CB-{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    data = with_search_path(PG, schema)
    redis = RedisState(REDIS, timeout=2.0)
    redis.client.flushdb()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NEXTBEST_CATALOG": str(catalog),
        "NEXTBEST_DATA": data,
        "NEXTBEST_PROFILES": REDIS,
        "NEXTBEST_BUS": f"{NATS}/{stream}",
        "NEXTBEST_BUS_PARTITIONS": "4",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    workers: list[Worker] = []
    hello: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {
        "date": now_iso(),
        "machine": machine_info(),
        "args": dict(vars(args)),
    }
    result["args"]["out"] = str(args.out)
    result["args"]["profile"] = str(args.profile)
    result["load_average_before"] = load_average()
    try:
        fold = Worker("fold", env, tmp / "fold.log").start()
        apis = [Worker("api", env, tmp / f"api{i}.log").start() for i in (1, 2)]
        workers = [fold, *apis]
        for a in ("anna_holm", "sofie_lund", "mikkel_berg", "lars_nielsen"):
            httpx.put(
                f"{apis[0].url}/v1/advisors/{a}/presence",
                json={"presence": "available"},
                auth=("dev-server-key", ""),
            ).raise_for_status()
        hello_port = free_port()
        hello = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "callbacks_http.py"),
                "--child-hello",
                str(hello_port),
            ],
            env=env,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{hello_port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "hello server not up"
                time.sleep(0.1)
        ports = [a.port for a in apis]
        n, c = args.requests, args.connections
        phases: dict[str, Any] = {}
        phases["hello"] = run_clients([hello_port], n, c, lambda i: ("GET", "/", None))
        phases["healthz"] = run_clients(ports, n, c, lambda i: ("GET", "/healthz", None))
        cpu0 = [proc_cpu_seconds(a.proc.pid) for a in apis if a.proc]
        fold_cpu0 = proc_cpu_seconds(fold.proc.pid) if fold.proc else 0.0
        spies = start_spies(apis, args.profile, args.profile_gil)
        phases["callbacks"] = run_clients(ports, n, c, callback_request("cb"))
        stop_spies(spies)
        phases["callbacks"]["api_cpu_seconds"] = [
            round(proc_cpu_seconds(a.proc.pid) - c0, 2)
            for a, c0 in zip(apis, cpu0, strict=True)
            if a.proc
        ]
        for k, v in phases.items():
            rate, codes = v["requests_per_second"], v["statuses"]
            log(f"{k}: {rate:,} req/s, statuses {codes}, {v['latency_ms']}")
        wait_folded(fold, data, 120)
        if fold.proc:
            phases["callbacks"]["fold_cpu_seconds"] = round(
                proc_cpu_seconds(fold.proc.pid) - fold_cpu0, 2
            )
        result["phases"] = phases
        base = phases["healthz"]["requests_per_second"]
        result["ratio_callbacks_to_healthz"] = round(
            phases["callbacks"]["requests_per_second"] / base, 3
        )
        result["ratio_callbacks_to_hello"] = round(
            phases["callbacks"]["requests_per_second"] / phases["hello"]["requests_per_second"], 3
        )
        result["stored"] = {
            **stored(data),
            "answered_200": phases["callbacks"]["statuses"].get("200", 0),
        }
        log(f"stored: {result['stored']}")
        # customers with a live interest for the decisions
        batch = [
            {
                "type": "page",
                "userId": f"reader-{i}",
                "properties": {"url": MORTGAGE},
                "timestamp": now_iso(),
                "messageId": f"reader-{i}-{k}",
            }
            for i in range(50)
            for k in range(5)
        ]
        httpx.post(
            f"{apis[0].url}/v1/batch",
            json={"batch": batch},
            auth=("dev-server-key", ""),
            timeout=30,
        ).raise_for_status()
        wait_folded(fold, data, 60)
        result["decide"] = {} if args.no_decide else decide_part(env, args.calls)
        for k, v in result["decide"].items():
            if isinstance(v, dict):
                log(f"{k}: p50 {v['p50_us']} us, p99 {v['p99_us']} us, mean {v['mean_us']} us")
        result["load_average_after"] = load_average()
    finally:
        if hello is not None:
            hello.terminate()
            hello.wait(10)
        for w in reversed(workers):
            w.stop()
        result["worker_warnings"] = {
            w.log.name: [
                line[:300]
                for line in w.log.read_text(errors="replace").splitlines()
                if any(m in line for m in ('"level":"warn', '"level":"error', '"status":5'))
            ][-20:]
            for w in workers
            if w.log.exists()
        }
        delete_stream(env["NEXTBEST_BUS"], 4)
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()
        redis.client.flushdb()
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)
    path = write_results("callbacks_scaled", result) if args.out is None else args.out
    if args.out is not None:
        args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
