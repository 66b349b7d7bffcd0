"""Benchmark: erasing one customer (GDPR art. 17, issue 20) among 1,000,000 in a real SQLite
file, and what ``secure_delete`` (every deleted or replaced row overwritten with zeros, so an
erased customer leaves nothing in free pages) costs at ingest.

    nice -n 19 .venv/bin/python bench/erasure.py            # 1,000,000 customers
    .venv/bin/python bench/erasure.py --quick                # a smoke run (seconds)

1. Fill an SQLite file through the store ports (at ``synchronous=OFF``: setup; everything
   measured runs at ``synchronous=FULL``, the embedded default):
   ``--customers`` customers with an identify (email, phone, one device) and a page view
   each, and one logged decision each.
2. Start an engine on it from a saved state (no refold of the million: what a restart from a
   snapshot does), then send ``--erasures`` of those customers a live session (identify on a
   second device, page views) and a decision each, so they have profiles, links, exposures
   and decisions in every store.
3. Time ``Engine.erase_customer`` for each (event log, decision log, quarantine, callbacks,
   outbox, live state, the state save, the WAL checkpoint): p50 and max; the same run's
   baseline: one profile read (``engine.profile``) and one decision.
4. Ingest cost of ``secure_delete``: ``--ingest-events`` events into a fresh file through the
   engine (snapshots included), with ``secure_delete`` ON (the default now) and OFF, twice
   each, interleaved.

No index is added: erasure uses the existing ``events_user``, ``events_anon`` and
``decisions_customer`` indexes (one lookup per id); the quarantine and the outbox are read
whole (``instr``, one pass each): the file also holds ``--outbox`` outbox messages (delivered
ones are kept: nothing prunes them yet) and ``--quarantined`` held messages.

Results: ``bench/results/erasure.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EXAMPLE_CATALOG, T0, Run, add_run_args, latency_summary, log, table
from nextbest.audit.model import Actor
from nextbest.decide import DecisionRequest
from nextbest.decide.model import Decision
from nextbest.decide.pipeline import greedy
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.learn.learner import Learner
from nextbest.store.catalog_files import load_catalog
from nextbest.store.port import HeldMessage, StateRow, Stores
from nextbest.store.snapshot import EXPERIMENT_LOG, learner_rows
from nextbest.store.sqlite import sqlite_stores

__all__ = ["main"]

ACTOR = Actor(kind="server", key_id="server:bench")
CHUNK = 10_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--erasures", type=int, default=20)
    ap.add_argument("--outbox", type=int, default=100_000, help="outbox messages (kept)")
    ap.add_argument("--quarantined", type=int, default=10_000, help="held messages")
    ap.add_argument("--ingest-events", type=int, default=100_000)
    ap.add_argument("--ingest-rounds", type=int, default=4, help="runs of each, interleaved")
    add_run_args(ap, "erasure")
    args = ap.parse_args(argv)
    if args.quick:
        args.customers, args.erasures, args.ingest_events = 20_000, 5, 10_000
        args.outbox, args.quarantined = 2_000, 200
    args.name = args.name or ("erasure_quick" if args.quick else "erasure")
    return args


def _customer(i: int) -> str:
    return f"cust-{i:07d}"


def _fill(stores: Stores, customers: int) -> dict[str, float]:
    """Two events and one decision per customer, through the ports, in chunks."""
    t = time.perf_counter()
    for start in range(0, customers, CHUNK):
        events: list[Event] = []
        decisions: list[Decision] = []
        for i in range(start, min(start + CHUNK, customers)):
            user, at = _customer(i), T0 - 86_400.0 + i * 0.01
            traits = {"email": f"{user}@example.dk", "phone": f"+45{20000000 + i}"}
            events.append(
                Event(message_id=f"i-{i}", type=EventType.IDENTIFY, timestamp=at,
                      received_at=at, user_id=user, anonymous_id=f"dev-{i}", traits=traits)
            )  # fmt: skip
            events.append(
                Event(message_id=f"p-{i}", type=EventType.PAGE, timestamp=at + 1,
                      received_at=at + 1, user_id=user,
                      properties={"url": "https://bank.example/mortgages/rates"})
            )  # fmt: skip
            decisions.append(
                Decision(decision_id=f"d-{i}", customer_id=user, placement="home_feed",
                         timestamp=at + 2, catalog_version="1", items=[], excluded=[],
                         control=[], segments=[])
            )  # fmt: skip
        stores.events.append(events)
        stores.decisions.append_decisions(decisions)
    return {"fill_seconds": round(time.perf_counter() - t, 1)}


def _fill_kept(stores: Stores, customers: int, outbox: int, quarantined: int) -> None:
    """Outbox messages (fraud-alert-like JSON naming a customer; delivered ones are kept) and
    quarantined messages, of customers spread over the million: what an erasure reads whole."""
    for n in range(outbox):
        user = _customer(n * 7 % customers)
        body = f'{{"kind":"fraud_alert","customer_id":"{user}","risk":0.93,"signals":[]}}'
        stores.outbox.enqueue("fraud", "fraud", f"guard-{n}", body.encode(), T0 + n, user)
    held = [
        HeldMessage(0, T0, "missing_property", "needs product", "$.batch[0]", "write",
                    Event(message_id=f"q-{n}", type=EventType.TRACK, timestamp=T0,
                          received_at=T0, user_id=_customer(n * 13 % customers),
                          name="Application Started", properties={"step": 1}))
        for n in range(quarantined)
    ]  # fmt: skip
    stores.quarantine.hold(held)


def _engine(path: Path, args: argparse.Namespace) -> tuple[Engine, dict[str, Any]]:
    catalog = load_catalog(EXAMPLE_CATALOG)
    fill = sqlite_stores(path, synchronous="OFF")  # setup: no fsync per outbox message
    filled = _fill(fill, args.customers)
    _fill_kept(fill, args.customers, args.outbox, args.quarantined)
    fill.close()
    stores = sqlite_stores(path)  # measured at synchronous=FULL, the embedded default
    position = stores.decisions.decision_log_position()
    rows = [
        *learner_rows(Learner(catalog).to_state(), position),
        StateRow(EXPERIMENT_LOG, "decision_log_position", str(position).encode()),
    ]
    stores.state.save_state(stores.events.last_seq(), catalog.digest, rows, replace=True)
    t = time.perf_counter()
    engine = Engine(catalog, stores)
    filled["restore_seconds"] = round(time.perf_counter() - t, 2)
    filled["events"] = stores.events.count()
    filled["file_mb"] = round(path.stat().st_size / 2**20)
    return engine, filled


def _live(engine: Engine, user: str, i: int) -> None:
    """A live session: a second device logs in, pages, a decision."""
    at = time.time()
    events = [
        Event(message_id=f"live-{i}-{k}", type=EventType.PAGE, timestamp=at + k, received_at=at,
              user_id=user, anonymous_id=f"live-dev-{i}",
              properties={"url": "https://bank.example/loans/car"})
        for k in range(5)
    ]  # fmt: skip
    events.insert(
        0,
        Event(message_id=f"live-{i}-id", type=EventType.IDENTIFY, timestamp=at - 1,
              received_at=at, user_id=user, anonymous_id=f"live-dev-{i}"),
    )  # fmt: skip
    engine.ingest(events)
    engine.decide(DecisionRequest(placement="home_feed"), user_id=user, choose=greedy)


def _erasures(engine: Engine, customers: int, n: int) -> dict[str, Any]:
    step = max(1, customers // n)
    users = [_customer(i * step + step // 2) for i in range(n)]
    for i, user in enumerate(users):
        _live(engine, user, i)
    engine.flush()
    engine.snapshot()
    read_ns, decide_ns = [], []
    for user in users:
        t = time.perf_counter_ns()
        engine.profile(user)
        read_ns.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        engine.decide(DecisionRequest(placement="home_feed"), user_id=user, choose=greedy)
        decide_ns.append(time.perf_counter_ns() - t)
    engine.flush()
    erase_ns: list[int] = []
    reports = []
    for user in users:
        t = time.perf_counter_ns()
        report = engine.erase_customer(user, ACTOR)
        erase_ns.append(time.perf_counter_ns() - t)
        reports.append({"events": report.events, "decisions": report.decisions})
    assert all(engine.profile(u) is None for u in users)
    return {
        "erase": latency_summary(erase_ns),
        "profile_read": latency_summary(read_ns),
        "decide": latency_summary(decide_ns),
        "erased_per_customer": reports[0],
    }


def _ingest(path: Path, events: int, secure: bool) -> float:
    """Seconds to ingest ``events`` (an identify and pages per customer) through the engine
    into a fresh file, with a snapshot every 10,000 events (profiles rewritten: what
    ``secure_delete`` zeroes)."""
    catalog = load_catalog(EXAMPLE_CATALOG)
    stores = sqlite_stores(path)
    if not secure:
        stores.events.db.connection.execute("PRAGMA secure_delete=OFF")  # type: ignore[attr-defined]
    engine = Engine(catalog, stores, snapshot_every=10_000)
    t = time.perf_counter()
    per = 10
    for start in range(0, events, 1_000):
        batch = [
            Event(message_id=f"e-{n}", type=EventType.PAGE, timestamp=T0 + n, received_at=T0 + n,
                  user_id=f"u-{(n // per) % max(1, events // (per * 3))}",
                  properties={"url": "https://bank.example/mortgages/rates"})
            for n in range(start, min(start + 1_000, events))
        ]  # fmt: skip
        engine.ingest(batch)
        if engine.snapshot_due:
            engine.snapshot()
    engine.close()
    return time.perf_counter() - t


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run = Run("erasure", args)
    tmp = Path(args.tmpdir or "/tmp") / f"nextbest-erasure-{time.time_ns()}"
    tmp.mkdir(parents=True)
    log(f"filling {args.customers:,} customers into {tmp / 'million.sqlite'}")
    engine, filled = _engine(tmp / "million.sqlite", args)
    log(f"filled: {filled}")
    measured = _erasures(engine, args.customers, args.erasures)
    engine.close()
    ingest: dict[str, list[float]] = {"secure_delete_on": [], "secure_delete_off": []}
    for round_ in range(args.ingest_rounds):
        for secure in (True, False) if round_ % 2 else (False, True):
            key = "secure_delete_on" if secure else "secure_delete_off"
            seconds = _ingest(tmp / f"ingest-{round_}-{key}.sqlite", args.ingest_events, secure)
            ingest[key].append(round(args.ingest_events / seconds))
            log(f"ingest {key}: {ingest[key][-1]:,} events/s")
    e, r, d = measured["erase"], measured["profile_read"], measured["decide"]
    print(
        table(
            f"erasure of one customer among {args.customers:,} (SQLite, synchronous=FULL)",
            ["what", "n", "p50 ms", "max ms"],
            [
                ["erase_customer", e["n"], e["p50_us"] / 1e3, e["max_us"] / 1e3],
                ["profile read (baseline)", r["n"], r["p50_us"] / 1e3, r["max_us"] / 1e3],
                ["decide (baseline)", d["n"], d["p50_us"] / 1e3, d["max_us"] / 1e3],
            ],
        )
    )
    medians = {k: sorted(v)[len(v) // 2] for k, v in ingest.items()}
    print(
        table(
            "ingest, events/s",
            ["secure_delete", "runs", "median"],
            [[k, v, medians[k]] for k, v in ingest.items()],
        )
    )
    ratio = round(medians["secure_delete_on"] / medians["secure_delete_off"], 3)
    print(f"secure_delete ON / OFF (median events/s): {ratio}")
    run.write(
        {"fill": filled, **measured, "ingest_events_per_s": ingest, "ingest_on_off_ratio": ratio}
    )


if __name__ == "__main__":
    main()
