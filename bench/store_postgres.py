"""Benchmark: the PostgreSQL store against embedded SQLite, appends/s (issue #17).

    .venv/bin/python bench/store_postgres.py            # ~1 min on 2 cores
    .venv/bin/python bench/store_postgres.py --quick    # smoke run (seconds)

In one run, on fresh storage each (a new SQLite file, synchronous FULL, the default; a new
schema on the PostgreSQL server ``--url``, dropped afterwards; synchronous_commit as the
server has it):

* the event log's ``append`` in batches of 1, 10, 100 and 500 seeded page/track/identify
  events (``--events`` events per batch size, fewer for batches of 1), on SQLite, on
  PostgreSQL as shipped (the rows as column arrays in one ``INSERT ... SELECT unnest``) and on
  PostgreSQL with the rows sent by binary ``COPY`` instead (``CopyEventLog`` below): the
  measurement that chose the first;
* the decision log's ``append_decisions`` in batches of 1, 100 and 1,000 (decisions made by
  an engine on the example bank, copied under new ids), the same three ways.

Each (backend, batch size) is timed ``--rounds`` times, the backends interleaved round by
round (a noisy neighbour hits all alike); the best round is reported, with every round in the
JSON. Results: ``bench/results/store_postgres.json`` (``store_postgres_quick.json``).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EXAMPLE_CATALOG, T0, Run, add_run_args, load_average, log, table
from nextbest.bootstrap import MEMORY, build_engine, open_stores
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.decide.model import Decision
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.settings import Settings
from nextbest.store.port import Stores
from nextbest.store.postgres import PostgresDecisionLog, PostgresEventLog

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
EVENT_BATCHES = [1, 10, 100, 500]
DECISION_BATCHES = [1, 100, 1_000]
BACKENDS = ["sqlite", "postgresql", "postgresql_copy"]
PAGES = ["mortgages", "loans/car", "pension", "savings/children", "cards", "investing"]


class CopyEventLog(PostgresEventLog):
    """The shipped event log with its rows sent by binary COPY (the alternative measured)."""

    def write_rows(self, db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        columns = "seq, message_id, user_id, anonymous_id, timestamp, body"
        with (
            db.cursor() as cur,
            cur.copy(f"COPY events ({columns}) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.set_types(["int8", "text", "text", "text", "float8", "bytea"])
            for row in rows:
                cp.write_row(row)


class CopyDecisionLog(PostgresDecisionLog):
    def write_rows(self, db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        columns = "position, decision_id, customer_id, placement, timestamp, body"
        with (
            db.cursor() as cur,
            cur.copy(f"COPY decisions ({columns}) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.set_types(["int8", "text", "text", "text", "float8", "bytea"])
            for row in rows:
                cp.write_row(row)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "store_postgres")
    ap.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server (a scratch schema)")
    ap.add_argument("--events", type=int, default=10_000, help="events per batch size")
    ap.add_argument("--single", type=int, default=400, help="appends of one event")
    ap.add_argument("--decisions", type=int, default=5_000, help="decisions per batch size")
    ap.add_argument("--single-decisions", type=int, default=300, help="appends of one decision")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.single, args.decisions, args.single_decisions = 1_000, 50, 500, 30
        args.rounds = 1
    if args.name is None:
        args.name = "store_postgres_quick" if args.quick else "store_postgres"
    return args


def make_events(n: int, rng: random.Random) -> list[Event]:
    """``n`` events as the engine stores them: pages, tracks and identifies of 2,000 users."""
    messages: list[dict[str, Any]] = []
    for i in range(n):
        user = f"u{rng.randrange(2_000):05d}"
        base = {"messageId": f"m-{i}", "userId": user, "timestamp": _iso(T0 + i * 0.01)}
        kind = rng.random()
        if kind < 0.7:
            url = f"https://bank.example/{rng.choice(PAGES)}/{rng.randrange(50)}"
            messages.append({**base, "type": "page", "properties": {"url": url}})
        elif kind < 0.95:
            props = {"topic": rng.choice(PAGES), "amount": rng.randrange(100, 50_000)}
            messages.append(
                {**base, "type": "track", "event": "Calculator Used", "properties": props}
            )
        else:
            traits = {"age": rng.randint(18, 80), "marketing_consent": True}
            messages.append({**base, "type": "identify", "traits": traits})
    out: list[Event] = []
    for start in range(0, n, 1_000):  # a batch holds at most 2,000 messages
        body = msgspec.json.encode({"batch": messages[start : start + 1_000]})
        out.extend(parse_batch(body, T0 + n))
    return out


def _iso(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds")


def make_decisions(n: int, rng: random.Random) -> list[Decision]:
    """``n`` decisions: 200 made by an in-memory engine on the example bank, copied under new
    ids and times until there are ``n``."""
    clock = FixedClock(T0)
    engine = build_engine(
        Settings(catalog=str(EXAMPLE_CATALOG), data=MEMORY), clock, freeze_gc=False
    )
    users = [f"u{k:04d}" for k in range(100)]
    messages = [
        {
            "type": "page",
            "userId": u,
            "messageId": f"p-{u}-{k}",
            "timestamp": _iso(T0 - 60 + k),
            "properties": {"url": f"https://bank.example/{rng.choice(PAGES)}/x"},
        }
        for u in users
        for k in range(3)
    ]
    engine.ingest_batch(msgspec.json.encode({"batch": messages}))
    placements = [p.id for p in engine.catalog.spec.placements]
    for _ in range(200):
        engine.decide(DecisionRequest(placement=rng.choice(placements)), user_id=rng.choice(users))
    engine.flush()
    made = list(engine.decision_log.decisions())
    engine.close()
    return [
        msgspec.structs.replace(made[i % len(made)], decision_id=f"d-{i:07d}", timestamp=T0 + i)
        for i in range(n)
    ]


@contextmanager
def fresh_stores(backend: str, url: str, tmp: Path) -> Iterator[Stores]:
    """New, empty storage of ``backend``, removed afterwards."""
    if backend == "sqlite":
        path = tmp / f"{uuid.uuid4().hex}.sqlite"
        stores = open_stores(str(path))
        try:
            yield stores
        finally:
            stores.close()
            for leftover in tmp.glob(f"{path.name}*"):
                leftover.unlink()
        return
    schema = f"bench_{uuid.uuid4().hex}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            joiner = "&" if "?" in url else "?"
            stores = open_stores(f"{url}{joiner}options={quote(f'-csearch_path={schema}')}")
            if backend == "postgresql_copy":
                assert isinstance(stores.events, PostgresEventLog)
                assert isinstance(stores.decisions, PostgresDecisionLog)
                stores = stores._replace(
                    events=CopyEventLog(stores.events.db),
                    decisions=CopyDecisionLog(stores.decisions.db),
                )
            try:
                yield stores
            finally:
                stores.close()
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def time_appends(
    append: Callable[[Sequence[Any]], object], items: list[Any], size: int
) -> dict[str, Any]:
    """Append ``items`` in batches of ``size``: rows/s, and each call's latency."""
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    calls: list[float] = []
    start = time.perf_counter()
    for b in batches:
        t = time.perf_counter()
        append(b)
        calls.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start
    calls.sort()
    return {
        "rows": len(items),
        "appends": len(batches),
        "seconds": round(seconds, 4),
        "rows_per_s": round(len(items) / seconds, 1),
        "appends_per_s": round(len(batches) / seconds, 1),
        "p50_ms": round(calls[len(calls) // 2] * 1e3, 3),
        "p99_ms": round(calls[min(len(calls) - 1, int(len(calls) * 0.99))] * 1e3, 3),
    }


def measure(
    kind: str,
    sizes: list[int],
    items: list[Any],
    single: int,
    args: argparse.Namespace,
    tmp: Path,
) -> dict[str, dict[str, Any]]:
    """Every backend at every batch size, ``args.rounds`` times interleaved; best kept."""
    out: dict[str, dict[str, Any]] = {}
    for size in sizes:
        rows = items[:single] if size == 1 else items
        rounds: dict[str, list[dict[str, Any]]] = {b: [] for b in BACKENDS}
        for _ in range(args.rounds):
            for backend in BACKENDS:
                with fresh_stores(backend, args.url, tmp) as stores:
                    if kind == "events":
                        append: Callable[[Sequence[Any]], object] = stores.events.append
                    else:
                        append = stores.decisions.append_decisions
                    rounds[backend].append(time_appends(append, rows, size))
        for backend, runs in rounds.items():
            best = max(runs, key=lambda r: r["rows_per_s"])
            out[f"{backend}/{size}"] = {
                **best,
                "rounds_rows_per_s": [r["rows_per_s"] for r in runs],
            }
        log(f"{kind} in batches of {size}: done, load average {load_average()}")
    return out


def report(title: str, sizes: list[int], found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = []
    ratios: dict[str, Any] = {}
    for size in sizes:
        lite = found[f"sqlite/{size}"]["rows_per_s"]
        pg = found[f"postgresql/{size}"]["rows_per_s"]
        copy = found[f"postgresql_copy/{size}"]["rows_per_s"]
        ratios[str(size)] = {
            "postgresql_to_sqlite": round(pg / lite, 2),
            "copy_to_insert": round(copy / pg, 2),
        }
        rows.append(
            [
                size,
                lite,
                pg,
                copy,
                round(pg / lite, 2),
                round(copy / pg, 2),
                found[f"sqlite/{size}"]["p50_ms"],
                found[f"postgresql/{size}"]["p50_ms"],
            ]
        )
    headers = ["batch", "SQLite rows/s", "PG rows/s", "PG COPY rows/s", "PG/SQLite", "COPY/INSERT"]
    print("\n" + table(title, [*headers, "SQLite p50 ms", "PG p50 ms"], rows))
    return ratios


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with psycopg.connect(args.url, connect_timeout=3) as probe:
            server = probe.execute("SHOW server_version").fetchone()
            sync = probe.execute("SHOW synchronous_commit").fetchone()
    except psycopg.OperationalError as exc:
        log(f"PostgreSQL not reachable at {args.url}: {exc}")
        return 2
    run = Run("store_postgres", args, "psycopg")
    rng = random.Random(args.seed)
    events = make_events(max(args.events, args.single), rng)
    decisions = make_decisions(max(args.decisions, args.single_decisions), rng)
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        found_events = measure("events", EVENT_BATCHES, events, args.single, args, Path(tmp))
        found_decisions = measure(
            "decisions", DECISION_BATCHES, decisions, args.single_decisions, args, Path(tmp)
        )
    event_ratios = report("event log append", EVENT_BATCHES, found_events)
    decision_ratios = report("decision log append", DECISION_BATCHES, found_decisions)
    run.write(
        {
            "postgres": {
                "server_version": server[0] if server else None,
                "synchronous_commit": sync[0] if sync else None,
            },
            "events": found_events,
            "event_ratios": event_ratios,
            "decisions": found_decisions,
            "decision_ratios": decision_ratios,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
