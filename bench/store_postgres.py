"""Benchmark: the PostgreSQL store against embedded SQLite, appends/s (issue #17).

    .venv/bin/python bench/store_postgres.py            # ~1 min on 2 cores
    .venv/bin/python bench/store_postgres.py --quick    # smoke run (seconds)

In one run, on fresh storage each (a new SQLite file, synchronous FULL, the default; a new
schema on the PostgreSQL server ``--url``, dropped afterwards; synchronous_commit as the
server has it):

* the event log's ``append`` in batches of 1, 10, 100 and 500 seeded page/track/identify
  events (``--events`` events per batch size, fewer for batches of 1), on SQLite, on
  PostgreSQL as shipped (the rows sent by binary ``COPY``) and on PostgreSQL with the rows
  sent as column arrays in one ``INSERT ... SELECT unnest`` instead (``InsertEventLog``
  below): the measurement that chose the first;
* the decision log's ``append_decisions`` in batches of 1, 100 and 1,000 (decisions made by
  an engine on the example bank, copied under new ids, ~2.3 KB each), the same three ways
  and a fourth: PostgreSQL as shipped but with the bodies compressed by pglz, the server's
  default, rather than lz4 (the store sets lz4 where the server has it).

Whole appends are mostly the commit (a WAL flush) on a loaded machine, so the two PostgreSQL
ways are also compared on the rows' write alone (``write_rows``, inside the transaction):
its median per call.

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
BACKENDS = ["sqlite", "postgresql", "postgresql_insert"]
#: decisions are measured with pglz compression too (their bodies are over TOAST's 2 KB)
DECISION_BACKENDS = [*BACKENDS, "postgresql_pglz"]
PAGES = ["mortgages", "loans/car", "pension", "savings/children", "cards", "investing"]


class InsertEventLog(PostgresEventLog):
    """The shipped event log with its rows sent as column arrays in one ``INSERT ... SELECT
    unnest`` instead of binary COPY (the alternative measured)."""

    def write_rows(self, db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        db.execute(
            "INSERT INTO events (seq, message_id, user_id, anonymous_id, timestamp, body, "
            "stream_seq) SELECT * FROM unnest(%b::int8[], %b::text[], %b::text[], %b::text[], "
            "%b::float8[], %b::bytea[], %b::int8[])",
            [list(column) for column in zip(*rows, strict=True)],
        )


class InsertDecisionLog(PostgresDecisionLog):
    def write_rows(self, db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        db.execute(
            "INSERT INTO decisions (position, decision_id, customer_id, placement, "
            "timestamp, body) SELECT * FROM unnest(%b::int8[], %b::text[], %b::text[], "
            "%b::text[], %b::float8[], %b::bytea[])",
            [list(column) for column in zip(*rows, strict=True)],
        )


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
            assert isinstance(stores.events, PostgresEventLog)
            assert isinstance(stores.decisions, PostgresDecisionLog)
            if backend == "postgresql_insert":
                stores = stores._replace(
                    events=InsertEventLog(stores.events.db),
                    decisions=InsertDecisionLog(stores.decisions.db),
                )
            if backend == "postgresql_pglz":
                for table in ("events", "decisions"):
                    stores.events.db.connection.execute(
                        f"ALTER TABLE {table} ALTER COLUMN body SET COMPRESSION pglz"
                    )
            try:
                yield stores
            finally:
                stores.close()
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def timing_writes(log: PostgresEventLog | PostgresDecisionLog, sink: list[float]) -> None:
    """Time each of ``log``'s ``write_rows`` calls into ``sink`` (seconds)."""
    inner = log.write_rows

    def write_rows(db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        t = time.perf_counter()
        inner(db, rows)
        sink.append(time.perf_counter() - t)

    log.write_rows = write_rows  # type: ignore[method-assign]


def time_appends(
    append: Callable[[Sequence[Any]], object], items: list[Any], size: int, writes: list[float]
) -> dict[str, Any]:
    """Append ``items`` in batches of ``size``: rows/s, each call's latency, and the median
    of the row writes ``writes`` collected (PostgreSQL)."""
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    calls: list[float] = []
    start = time.perf_counter()
    for b in batches:
        t = time.perf_counter()
        append(b)
        calls.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start
    calls.sort()
    writes.sort()
    return {
        "write_p50_ms": round(writes[len(writes) // 2] * 1e3, 4) if writes else None,
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
        backends = BACKENDS if kind == "events" else DECISION_BACKENDS
        rounds: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for _ in range(args.rounds):
            for backend in backends:
                with fresh_stores(backend, args.url, tmp) as stores:
                    writes: list[float] = []
                    log_: Any = stores.events if kind == "events" else stores.decisions
                    if backend != "sqlite":
                        timing_writes(log_, writes)
                    if kind == "events":
                        append: Callable[[Sequence[Any]], object] = stores.events.append
                    else:
                        append = stores.decisions.append_decisions
                    rounds[backend].append(time_appends(append, rows, size, writes))
        for backend, runs in rounds.items():
            best = max(runs, key=lambda r: r["rows_per_s"])
            out[f"{backend}/{size}"] = {
                **best,
                "rounds_rows_per_s": [r["rows_per_s"] for r in runs],
                "rounds_write_p50_ms": [r["write_p50_ms"] for r in runs],
            }
        log(f"{kind} in batches of {size}: done, load average {load_average()}")
    return out


def report(title: str, sizes: list[int], found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = []
    ratios: dict[str, Any] = {}
    for size in sizes:
        lite = found[f"sqlite/{size}"]["rows_per_s"]
        pg = found[f"postgresql/{size}"]["rows_per_s"]
        insert = found[f"postgresql_insert/{size}"]["rows_per_s"]
        # the best round's write median of each: the cost of the rows' write alone
        copy_ms = min(found[f"postgresql/{size}"]["rounds_write_p50_ms"])
        insert_ms = min(found[f"postgresql_insert/{size}"]["rounds_write_p50_ms"])
        ratios[str(size)] = {
            "postgresql_to_sqlite": round(pg / lite, 2),
            "copy_to_insert_rows_per_s": round(pg / insert, 2),
            "copy_write_ms": copy_ms,
            "insert_write_ms": insert_ms,
        }
        rows.append(
            [
                size,
                lite,
                pg,
                round(pg / lite, 2),
                found[f"sqlite/{size}"]["p50_ms"],
                found[f"postgresql/{size}"]["p50_ms"],
                insert,
                copy_ms,
                insert_ms,
            ]
        )
    headers = ["batch", "SQLite rows/s", "PG rows/s", "PG/SQLite", "SQLite p50 ms", "PG p50 ms"]
    headers += ["PG INSERT rows/s", "COPY write ms", "INSERT write ms"]
    if f"postgresql_pglz/{sizes[0]}" in found:
        headers.append("PG pglz rows/s")
        for row, size in zip(rows, sizes, strict=True):
            pglz = found[f"postgresql_pglz/{size}"]["rows_per_s"]
            row.append(pglz)
            ratios[str(size)]["lz4_to_pglz_rows_per_s"] = round(row[2] / pglz, 2)
    print("\n" + table(title, headers, rows))
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
