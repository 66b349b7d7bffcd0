"""Benchmark: the callback queue's store (``store.port.Callbacks``, issue #19) on each backend,
beside the event log append every callback request also pays (the same-run baseline).

    .venv/bin/python bench/callbacks_store.py            # 2,000 callbacks per backend
    .venv/bin/python bench/callbacks_store.py --quick    # a smoke run (seconds)

Per backend (the in-memory twin, an SQLite file at ``synchronous=FULL``, the embedded default,
and PostgreSQL on a scratch schema; skipped with the reason when no server answers):

1. ``create`` with the advisor's ``Capacity`` checked (each callback booked on a free half
   hour of one of ``--advisors`` advisors), one thread, timed call by call; beside it
   ``events.append`` of one track event (the ``Callback Requested`` the engine logs).
2. ``save``: each callback offered to its advisor (a compare-and-set, the advisor's live
   callbacks counted against a capacity large enough never to refuse).
3. Many writers: ``--threads`` threads, each on a store of its own (a connection, as an API
   worker holds; the in-memory twin: one shared), create ``--creates`` more callbacks all
   booked on ``--advisors`` advisors' slots: callbacks/s over the wall time.
4. Reads with the store full: ``due`` (what the timer reads), a customer's callbacks, the
   open load, a day's bookings.

Results: ``bench/results/callbacks_store.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
import orjson

from _common import (
    DAY,
    T0,
    Run,
    add_run_args,
    each_backend,
    in_threads,
    table,
    time_calls,
)
from nextbest.advisors.model import Callback, CallbackMode, CallbackState, Transition
from nextbest.bootstrap import MEMORY, open_stores
from nextbest.events import parse_batch
from nextbest.store import Capacity, Stores

__all__ = ["main"]

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SLOT = 1_800.0
BACKENDS = ("memory", "sqlite", "postgresql")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "callbacks_store")
    ap.add_argument("--url", default=DEFAULT_URL, help="the PostgreSQL server (a scratch schema)")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    ap.add_argument("--creates", type=int, default=2_000, help="callbacks per phase")
    ap.add_argument("--advisors", type=int, default=50)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--reads", type=int, default=300, help="calls per read timed")
    args = ap.parse_args(argv)
    if args.quick:
        args.creates, args.reads = 200, 50
    args.name = args.name or ("callbacks_store_quick" if args.quick else "callbacks_store")
    return args


def request(i: int, advisors: int, prefix: str = "cb", days: int = 1) -> Callback:
    """Callback ``i``: booked on its own half hour of advisor ``i % advisors``, from ``days``
    after T0."""
    at = T0 + i
    return Callback(
        id=f"{prefix}-{i:07d}",
        customer=f"cust-{i % 5_000:05d}",
        topic=f"{prefix}-{i // 5_000}",  # one in flight per customer and topic
        mode=CallbackMode.AT,
        phone="+4512345678",
        requested_at=at,
        scheduled_for=T0 + days * DAY + (i // advisors) * SLOT,
        advisor_id=f"advisor-{i % advisors:03d}",
        language="da",
        decision_id=f"d-{i}",
        history=(Transition(state=CallbackState.REQUESTED, at=at),),
    )


def offered(c: Callback) -> Callback:
    step = Transition(state=CallbackState.OFFERED, at=c.requested_at + 1, advisor_id=c.advisor_id)
    return msgspec.structs.replace(
        c,
        state=CallbackState.OFFERED,
        offer_expires_at=c.requested_at + 31,
        history=(*c.history, step),
    )


def many_writers(
    opener: Callable[[], Stores], shared: bool, threads: int, creates: int, advisors: int
) -> dict[str, Any]:
    stores = [opener()] if shared else [opener() for _ in range(threads)]
    errors: list[str] = []

    def run(t: int) -> None:
        cbs = stores[0 if shared else t].callbacks
        capacity = Capacity(1, SLOT)
        for i in range(t, creates, threads):
            try:
                cbs.create(request(i, advisors, "many", days=400), capacity)
            except Exception as exc:  # counted: the results say how many failed
                errors.append(type(exc).__name__)

    wall = in_threads(threads, run)
    for s in stores:
        s.close()
    return {
        "threads": threads,
        "stores": len(stores),
        "created": creates - len(errors),
        "errors": sorted(set(errors)),
        "seconds": round(wall, 3),
        "callbacks_per_s": round((creates - len(errors)) / wall) if wall else None,
    }


def measure(data: str, args: argparse.Namespace) -> dict[str, Any]:
    n, advisors = args.creates, args.advisors
    stores = open_stores(data)
    try:
        cbs = stores.callbacks
        capacity = Capacity(1, SLOT)
        # offers counted against the advisor's live callbacks, never refused: all of an
        # advisor's callbacks are offered at once here
        roomy = Capacity(n, SLOT)
        made = [request(i, advisors) for i in range(n)]
        bodies = [
            orjson.dumps({"batch": [{
                "type": "track", "event": "Callback Requested", "userId": c.customer,
                "messageId": f"m-{c.id}",
                "timestamp": datetime.fromtimestamp(c.requested_at, UTC).isoformat(),
                "properties": {"callback_id": c.id, "topic": c.topic},
            }]})
            for c in made
        ]  # fmt: skip
        events = [parse_batch(b, T0 + DAY)[0] for b in bodies]
        result: dict[str, Any] = {
            "append_one_event": time_calls(lambda e: stores.events.append([e]), events),
            "create": time_calls(lambda c: cbs.create(c, capacity), made),
            "save_offer": time_calls(
                lambda c: cbs.save(offered(c), expected_version=1, capacity=roomy), made
            ),
        }
        customers = [f"cust-{i % 5_000:05d}" for i in range(args.reads)]
        now = T0 + 40
        result["due"] = time_calls(lambda _: cbs.due(now, 100), range(args.reads))
        result["due_rows"] = len(cbs.due(now, 100))
        result["of_customer"] = time_calls(cbs.of_customer, customers)
        result["open_load"] = time_calls(lambda _: cbs.open_load(), range(args.reads))
        window = (T0 + DAY, T0 + 2 * DAY)
        result["booked_day"] = time_calls(lambda _: cbs.booked(None, *window), range(args.reads))
        result["booked_day_rows"] = len(cbs.booked(None, *window))
    finally:
        stores.close()
    result["many_writers"] = many_writers(
        lambda: open_stores(data), data == MEMORY, args.threads, n, advisors
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("callbacks_store", args, "psycopg")
    found = each_backend(
        args, "callbacks", f"{args.creates:,} callbacks", lambda data: measure(data, args)
    )
    rows = []
    for backend, r in found.items():
        if "skipped" in r:
            continue
        base = r["append_one_event"]["mean_us"]
        for phase in ("append_one_event", "create", "save_offer", "due", "of_customer",
                      "open_load", "booked_day"):  # fmt: skip
            t = r[phase]
            rows.append([backend, phase, t["p50_us"], t["p99_us"], t["calls_per_s"],
                         round(t["mean_us"] / base, 2) if base else float("nan")])  # fmt: skip
        w = r["many_writers"]
        rows.append([backend, f"create x{w['threads']} threads", float("nan"), float("nan"),
                     w["callbacks_per_s"], float("nan")])  # fmt: skip
    print()
    print(table("callback store", ["backend", "phase", "p50 us", "p99 us", "calls/s",
                                   "x append"], rows))  # fmt: skip
    run.write({"backends": found})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
