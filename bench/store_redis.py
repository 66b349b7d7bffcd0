"""Benchmark: the state port on Redis (issue #17) against SQLite's, with real profile bodies.

    .venv/bin/python bench/store_redis.py                 # 100,000 profile rows (~2 min)
    .venv/bin/python bench/store_redis.py --quick         # a smoke run (seconds)

1. Real bodies: the example bank's simulator (``nextbest.sim.generate``) sends ``--customers``
   customers' ``--days`` days of events through an engine; each profile's snapshot row
   (``store.snapshot.profile_row``: the msgpack body the engine saves) is kept. ``--rows``
   rows are made by giving those bodies new customer keys (``cust-00000042``), in turn.
2. ``save_state`` rows/s in batches of 1, 100 and 1,000 rows (incremental saves, each with its
   watermark move), on Redis and on a SQLite file (``synchronous`` FULL, the embedded
   default, and NORMAL) in the same run; then one ``replace=True`` save of every row (Redis:
   a new generation written in pages, flipped, the old one swept).
3. ``load_state`` rows/s: every row streamed back (Redis: SCAN + MGET pages).
4. Point reads: ``RedisState.get_rows`` of one random customer, timed call by call.
5. Memory: ``MEMORY USAGE`` of ``--sample`` profile keys against their bodies' lengths, the
   server's ``used_memory`` growth per row over the whole save, and what an index set per
   kind would have cost per row (the alternative to SCAN, not used).

Redis runs on the same cores: its own CPU seconds (``/proc/<pid>``, when it is a local
process this user can read) are reported per phase beside this process's. Results:
``bench/results/store_redis.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    EXAMPLE_CATALOG,
    Run,
    add_run_args,
    kv_table,
    log,
    percentile,
    proc_cpu_seconds,
    table,
    time_calls,
)
from nextbest.clock import EventClock
from nextbest.engine import Engine
from nextbest.sim.generate import generate_lines
from nextbest.store import StateRow, StateStore, memory_stores, sqlite_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.store.redis import RedisState
from nextbest.store.snapshot import profile_row

BATCHES = (1, 100, 1_000)
#: customers a bank plans for (issue #17)
BANK_CUSTOMERS = 20_000_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="redis://127.0.0.1:6379/15", help="Redis database")
    ap.add_argument("--rows", type=int, default=100_000, help="profile rows saved and loaded")
    ap.add_argument("--customers", type=int, default=2_000, help="simulated customers")
    ap.add_argument("--days", type=int, default=30, help="simulated days")
    ap.add_argument("--single-saves", type=int, default=3_000, help="saves of one row timed")
    ap.add_argument("--reads", type=int, default=20_000, help="point reads timed")
    ap.add_argument("--sample", type=int, default=2_000, help="keys MEMORY USAGE is read for")
    add_run_args(ap, "store_redis")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.customers, args.days = 3_000, 100, 10
        args.single_saves, args.reads, args.sample = 200, 500, 200
    args.name = args.name or ("store_redis_quick" if args.quick else "store_redis")
    return args


def real_bodies(customers: int, days: int, seed: int) -> list[bytes]:
    """The snapshot body of every profile the simulated bank's events build."""
    engine = Engine(load_catalog(EXAMPLE_CATALOG), memory_stores(), EventClock())
    lines = [line.rstrip(b"\n") for line in generate_lines(seed, customers, days)]
    for start in range(0, len(lines), 500):
        engine.ingest_batch(b'{"batch":[' + b",".join(lines[start : start + 500]) + b"]}")
    bodies = [profile_row(p.customer_id, p).body for p in engine.profiles()]
    engine.release()
    return [b for b in bodies if b is not None]


def rows_of(bodies: list[bytes], n: int) -> list[StateRow]:
    return [StateRow("profile", f"cust-{i:08d}", bodies[i % len(bodies)]) for i in range(n)]


class Cpu:
    """This process's CPU seconds and the Redis server's (when readable) over a phase."""

    def __init__(self, redis_pid: int | None) -> None:
        self.pid = redis_pid

    def server(self) -> float | None:
        if self.pid is None:
            return None
        try:
            return proc_cpu_seconds(self.pid)
        except OSError:
            return None

    def measure(self, work: Callable[[], object]) -> dict[str, float | None]:
        s0, c0, t0 = self.server(), time.process_time(), time.perf_counter()
        work()
        t1, c1, s1 = time.perf_counter(), time.process_time(), self.server()
        server = None if s0 is None or s1 is None else round(s1 - s0, 3)
        return {"seconds": t1 - t0, "client_cpu_s": round(c1 - c0, 3), "server_cpu_s": server}


def saves(
    store: StateStore, rows: list[StateRow], batch: int, count: int, cpu: Cpu
) -> dict[str, Any]:
    """``count`` rows saved ``batch`` at a time (incremental saves), rows/s and saves/s."""
    chunks = [rows[i : i + batch] for i in range(0, min(count, len(rows)), batch)]

    def work() -> None:
        for seq, chunk in enumerate(chunks, start=1):
            store.save_state(seq, "bench", chunk)

    got = cpu.measure(work)
    n = sum(len(c) for c in chunks)
    return {
        "batch": batch,
        "rows": n,
        "saves": len(chunks),
        "rows_per_s": round(n / got["seconds"]),
        "saves_per_s": round(len(chunks) / got["seconds"], 1),
        **got,
    }


def replace_and_load(store: StateStore, rows: list[StateRow], cpu: Cpu) -> dict[str, Any]:
    replace = cpu.measure(lambda: store.save_state(1, "bench", rows, replace=True))
    loaded: list[int] = []

    def load() -> None:
        saved = store.load_state()
        assert saved is not None
        loaded.append(sum(1 for _ in saved.rows))

    load_got = cpu.measure(load)
    assert loaded == [len(rows)], (loaded, len(rows))
    return {
        "replace_rows_per_s": round(len(rows) / replace["seconds"]),
        "replace": replace,
        "load_rows_per_s": round(len(rows) / load_got["seconds"]),
        "load": load_got,
    }


def memory(state: RedisState, rows: list[StateRow], sample: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    picked = rng.sample(rows, min(sample, len(rows)))
    used = [state.memory_usage(r.kind, r.key) or 0 for r in picked]
    body = [len(r.body or b"") for r in picked]
    mean_used, mean_body = sum(used) / len(used), sum(body) / len(body)
    # the alternative to SCAN: an index set per kind, one member per row
    index_key = f"{state.namespace}:index-probe"
    client = state.client
    client.delete(index_key)
    for start in range(0, len(rows), 1_000):
        client.sadd(index_key, *(f"{r.key}" for r in rows[start : start + 1_000]))
    index_bytes = client.memory_usage(index_key, samples=0) or 0
    client.delete(index_key)
    return {
        "keys_sampled": len(picked),
        "memory_usage_mean_bytes": round(mean_used),
        "memory_usage_p50_bytes": percentile(sorted(used), 50),
        "memory_usage_p99_bytes": percentile(sorted(used), 99),
        "body_mean_bytes": round(mean_body),
        "overhead_ratio": round(mean_used / mean_body, 3),
        "index_set_bytes_per_row": round(index_bytes / len(rows), 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("store_redis", args, "redis", "hiredis")
    log(f"simulating {args.customers:,} customers x {args.days} days for real profile bodies")
    bodies = real_bodies(args.customers, args.days, args.seed)
    sizes = sorted(len(b) for b in bodies)
    body_stats = {
        "profiles": len(sizes),
        "mean": round(sum(sizes) / len(sizes)),
        "p50": percentile(sizes, 50),
        "p90": percentile(sizes, 90),
        "p99": percentile(sizes, 99),
        "max": sizes[-1],
    }
    print(kv_table("profile bodies (msgpack, as the engine saves them), bytes", body_stats))
    rows = rows_of(bodies, args.rows)

    state = RedisState(args.url, f"nextbest-bench-{os.getpid()}")
    state.drop()
    info = state.client.info()
    redis_info = {k: info.get(k) for k in ("redis_version", "process_id", "maxmemory_policy")}
    cpu = Cpu(int(info["process_id"]) if "process_id" in info else None)
    counts = {1: args.single_saves, 100: args.rows // 5, 1_000: args.rows}
    results: dict[str, Any] = {"body_bytes": body_stats, "redis": redis_info}
    with tempfile.TemporaryDirectory(prefix="nextbest-redis-bench-", dir=args.tmpdir) as tmp:
        backends: dict[str, tuple[StateStore, Callable[[], None]]] = {}
        for sync in ("FULL", "NORMAL"):
            sqlite = sqlite_stores(Path(tmp) / f"state-{sync}.sqlite", synchronous=sync)
            backends[f"sqlite {sync}"] = (sqlite.state, sqlite.close)
        backends["redis"] = (state, lambda: None)
        save_table, bulk = [], {}
        for name, (store, _close) in backends.items():
            for batch in BATCHES:
                log(f"{name}: saves of {batch} rows")
                got = saves(store, rows, batch, counts[batch], cpu)
                results.setdefault("saves", {}).setdefault(name, []).append(got)
                server = got["server_cpu_s"] if name == "redis" else "-"
                counted = [got["rows"], got["rows_per_s"], got["saves_per_s"], got["client_cpu_s"]]
                save_table.append([name, batch, *counted, server])
            log(f"{name}: replace with {len(rows):,} rows, then load them all")
            bulk[name] = replace_and_load(store, rows, cpu)
        for _store, close in backends.values():
            close()
    results["bulk"] = bulk
    print(
        table(
            "save_state (incremental)",
            ["backend", "batch", "rows", "rows/s", "saves/s", "client cpu s", "redis cpu s"],
            save_table,
        )
    )
    print(
        table(
            f"whole state, {len(rows):,} rows",
            ["backend", "replace rows/s", "load rows/s"],
            [[k, v["replace_rows_per_s"], v["load_rows_per_s"]] for k, v in bulk.items()],
        )
    )

    used_before = int(state.client.info("memory")["used_memory"])
    state.drop()
    used_empty = int(state.client.info("memory")["used_memory"])
    state.save_state(1, "bench", rows, replace=True)
    used_full = int(state.client.info("memory")["used_memory"])
    keys = [r.key for r in rows]
    rng = random.Random(args.seed)
    reads = time_calls(
        lambda key: state.get_rows("profile", [key]),
        [rng.choice(keys) for _ in range(args.reads)],
        warmup=[rng.choice(keys) for _ in range(200)],
    )
    reads.pop("tail", None)
    mem = memory(state, rows, args.sample, args.seed)
    mem["used_memory_growth_per_row"] = round((used_full - used_empty) / len(rows), 1)
    mem["used_memory_before_drop"] = used_before
    per_row = max(mem["used_memory_growth_per_row"], mem["memory_usage_mean_bytes"])
    mem["bank_20m_customers_gb"] = round(per_row * BANK_CUSTOMERS / 1e9, 1)
    state.drop()
    state.close()
    results["point_reads"] = reads
    results["memory"] = mem
    print(
        kv_table(
            "point reads (get_rows, one customer)",
            {k: reads[k] for k in ("calls_per_s", "p50_us", "p99_us", "max_us")},
        )
    )
    print(kv_table("memory per profile row in Redis, bytes", mem))
    redis_r = results["saves"]["redis"]
    sqlite_r = results["saves"]["sqlite FULL"]
    results["redis_over_sqlite_full"] = {
        f"save_batch_{a['batch']}": round(a["rows_per_s"] / b["rows_per_s"], 2)
        for a, b in zip(redis_r, sqlite_r, strict=True)
    } | {
        "replace": round(
            bulk["redis"]["replace_rows_per_s"] / bulk["sqlite FULL"]["replace_rows_per_s"], 2
        ),
        "load": round(bulk["redis"]["load_rows_per_s"] / bulk["sqlite FULL"]["load_rows_per_s"], 2),
    }
    print(kv_table("Redis rows/s over SQLite FULL rows/s", results["redis_over_sqlite_full"]))
    run.write(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
