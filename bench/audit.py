"""Benchmark: what recording a read in the audit log (``nextbest.audit``, issue 20) adds to
a profile read, per backend, with the store's own commit as the same-run baseline.

    .venv/bin/python bench/audit.py            # 2,000 reads per phase and backend
    .venv/bin/python bench/audit.py --quick    # a smoke run (seconds)

Per backend (the in-memory twin, an SQLite file at ``synchronous=FULL``, the embedded default,
and PostgreSQL on a scratch schema; skipped with the reason when no server answers), an
engine holding ``--customers`` profiles (an identify and five page views each):

1. ``engine.profile_view`` alone: the read ``GET /v1/profiles/{id}`` did before (baseline);
2. ``auditing.read_profile``: the same read recorded first (what the route does now);
3. ``audit.append`` of one record alone, and ``events.append`` of one event (the store's
   commit, for the ratio);
4. ``--threads`` threads reading audited profiles from one engine at once (as the server's
   threadpool does): reads/s, against the same threads reading unaudited;
5. ``verify`` of the whole log afterwards: entries/s.

Results: ``bench/results/audit.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson

from _common import (
    EXAMPLE_CATALOG,
    T0,
    Run,
    add_run_args,
    each_backend,
    in_threads,
    ratios,
    table,
    time_calls,
)
from nextbest.audit import Actor, AuditAction, AuditRecord, verify
from nextbest.auditing import read_profile, verify_audit
from nextbest.bootstrap import MEMORY, open_stores
from nextbest.clock import SystemClock
from nextbest.engine import Engine
from nextbest.events import parse_batch
from nextbest.store.catalog_files import load_catalog

__all__ = ["main"]

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("memory", "sqlite", "postgresql")
ACTOR = Actor(kind="server", key_id="server:0123456789ab")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "audit")
    ap.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server (a scratch schema)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    ap.add_argument("--customers", type=int, default=2_000)
    ap.add_argument("--reads", type=int, default=2_000, help="calls per phase")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args(argv)
    if args.quick:
        args.customers, args.reads, args.threads = 200, 200, 4
    args.name = args.name or ("audit_quick" if args.quick else "audit")
    return args


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def customer_events(i: int) -> bytes:
    user = f"cust-{i:06d}"
    messages: list[dict[str, Any]] = [
        {"type": "identify", "userId": user, "messageId": f"id-{i}", "timestamp": _iso(T0 + i),
         "traits": {"age": 20 + i % 50, "consent": {"marketing": i % 3 != 0}}},
    ]  # fmt: skip
    messages += [
        {"type": "page", "userId": user, "messageId": f"p-{i}-{k}",
         "timestamp": _iso(T0 + i + k), "properties": {"url": "https://b.example/mortgages/a"}}
        for k in range(1, 6)
    ]  # fmt: skip
    return orjson.dumps({"batch": messages})


def threaded(call: Callable[[str], object], users: Sequence[str], threads: int) -> dict[str, Any]:
    def run(t: int) -> None:
        for user in users[t::threads]:
            call(user)

    wall = in_threads(threads, run)
    return {"threads": threads, "reads": len(users), "seconds": round(wall, 3),
            "reads_per_s": round(len(users) / wall) if wall else None}  # fmt: skip


def measure(data: str, args: argparse.Namespace) -> dict[str, Any]:
    catalog = load_catalog(EXAMPLE_CATALOG)
    stores = open_stores(data)
    counter = iter(range(10**9))
    engine = Engine(catalog, stores, SystemClock(), new_id=lambda: f"d{next(counter)}")
    try:
        for i in range(args.customers):
            engine.ingest_batch(customer_events(i))
        consent_entries = len(stores.audit.entries())
        users = [f"cust-{i % args.customers:06d}" for i in range(args.reads)]
        events = [
            parse_batch(orjson.dumps({"batch": [
                {"type": "track", "event": "Calculator Used", "userId": u,
                 "messageId": f"t-{n}", "timestamp": _iso(T0 + 10**6 + n),
                 "properties": {"topic": "mortgage"}}]}), T0 + 2 * 10**6)[0]
            for n, u in enumerate(users)
        ]  # fmt: skip
        records = [
            AuditRecord(time=T0 + n, actor=ACTOR, action=AuditAction.PROFILE_READ, subject=u,
                        details={"found": True})
            for n, u in enumerate(users)
        ]  # fmt: skip
        warm = users[:50]
        result: dict[str, Any] = {
            "consent_entries_from_ingest": consent_entries,
            "profile_view": time_calls(engine.profile_view, users, warm),
            "read_profile_audited": time_calls(
                lambda u: read_profile(engine, ACTOR, u), users, warm
            ),
            "audit_append_one": time_calls(lambda r: stores.audit.append([r]), records),
            "event_append_one": time_calls(lambda e: stores.events.append([e]), events),
        }
        result["audited_over_unaudited"] = ratios(
            result["read_profile_audited"], result["profile_view"]
        )
        result["threads_unaudited"] = threaded(engine.profile_view, users, args.threads)
        result["threads_audited"] = threaded(
            lambda u: read_profile(engine, ACTOR, u), users, args.threads
        )
        entries = len(stores.audit.entries())
        began = time.perf_counter()
        if data == MEMORY:
            verdict = verify(stores.audit.entries(), stores.audit.head())
        else:
            verdict = verify_audit(data)
        took = time.perf_counter() - began
        result["verify"] = {"entries": entries, "ok": verdict.ok, "seconds": round(took, 3),
                            "entries_per_s": round(entries / took) if took else None}  # fmt: skip
    finally:
        engine.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("audit", args, "psycopg")
    found = each_backend(
        args,
        "audit",
        f"{args.customers:,} customers, {args.reads:,} reads",
        lambda data: measure(data, args),
    )
    rows = []
    for backend, r in found.items():
        if "skipped" in r:
            continue
        base = r["event_append_one"]["mean_us"]
        for phase in ("profile_view", "read_profile_audited", "audit_append_one",
                      "event_append_one"):  # fmt: skip
            t = r[phase]
            rows.append([backend, phase, t["p50_us"], t["p99_us"], t["calls_per_s"],
                         round(t["mean_us"] / base, 2) if base else float("nan")])  # fmt: skip
        for phase in ("threads_unaudited", "threads_audited"):
            w = r[phase]
            rows.append([backend, f"{phase} x{w['threads']}", float("nan"), float("nan"),
                         w["reads_per_s"], float("nan")])  # fmt: skip
        v = r["verify"]
        rows.append([backend, f"verify {v['entries']:,} entries", float("nan"), float("nan"),
                     v["entries_per_s"], float("nan")])  # fmt: skip
    print()
    print(table("audited profile reads", ["backend", "phase", "p50 us", "p99 us", "calls/s",
                                          "x event append"], rows))  # fmt: skip
    run.write({"backends": found})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
