"""Benchmark: ingestion events/s, in-process and over HTTP.

    .venv/bin/python bench/ingest.py            # full run (~3-4 min on 2 cores)
    .venv/bin/python bench/ingest.py --quick    # smoke run (~30 s)

On the example bank catalog, with the seeded stream of ``ingest_stream.py`` (100-message
``/v1/batch`` bodies whose feedback answers real decisions). Every engine measured starts
with those decisions in its decision log, and its clock is each batch's send time when the
batch arrives (``sentAt``), so feedback is validated, joined and learned from as in
production. In process, one thread:

* parse only: ``engine.parse_batch``;
* fold only: identity + fold + learning from feedback on the parsed events, no store: the
  pure core a ``Engine.ingest`` runs under its lock (``ProfileBook.apply``,
  ``Learner.observe``; a stitch finds no logged events, as there is no log);
* append only: the event log's ``append`` per batch (memory, SQLite FULL, SQLite NORMAL);
* the whole ``engine.ingest_batch`` per batch on the same three: events/s and latency per
  batch (the state save every 50,000 events runs between batches, as the server's background
  task does, timed apart but counted in the events/s); afterwards the cost of an identity
  stitch (an ``identify`` linking a new anonymousId: the profile is re-folded from the log)
  and of a full state save (every profile encoded and written, ``replace``).

Over HTTP (``ingest_http.py``, ``--no-http`` to skip): a real uvicorn server in a child
process posted to by client threads, ``GET /healthz`` as the baseline.

Results: ``bench/results/ingest.json`` (``ingest_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

import ingest_http
from _common import (
    EXAMPLE_CATALOG,
    T0,
    GcWatch,
    Run,
    add_run_args,
    cprofile_top,
    fs_type,
    latency_summary,
    log,
    table,
)
from ingest_stream import BATCH_SIZE, NOW, batches, build_stream, iso
from nextbest.bootstrap import MEMORY, open_stores
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide.feedback import is_feedback
from nextbest.decide.model import Decision
from nextbest.engine import Engine
from nextbest.events.model import Event
from nextbest.learn.learner import Learner
from nextbest.profile.book import ProfileBook
from nextbest.store.catalog_files import load_catalog
from nextbest.store.port import Stores
from nextbest.store.snapshot import profile_row

__all__ = ["main", "parse_args"]

SYNC = {"sqlite-full": "FULL", "sqlite-normal": "NORMAL"}
QUICK = {
    "customers": 1_000,
    "anon_visitors": 300,
    "stitches": 20,
    "profile_batches": 50,
    "http_seconds": 3.0,
    "health_seconds": 2.0,
    "http_max_batches": 200,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=20_000, help="known customers in the stream")
    ap.add_argument("--anon-visitors", type=int, default=6_000, help="anonymous visitors")
    ap.add_argument("--batch", type=int, default=BATCH_SIZE, help="messages per /v1/batch body")
    ap.add_argument("--events-min", type=int, default=3)
    ap.add_argument("--events-max", type=int, default=16)
    ap.add_argument(
        "--stores", default="memory,sqlite-full,sqlite-normal", help="memory, sqlite-full/normal"
    )
    ap.add_argument("--profile-batches", type=int, default=500, help="batches under cProfile")
    ap.add_argument("--stitches", type=int, default=200, help="identity stitches timed per store")
    ingest_http.add_args(ap)
    add_run_args(ap, "ingest")
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, min(getattr(args, k), v))
    args.name = args.name or ("ingest_quick" if args.quick else "ingest")
    return args


def make_stores(kind: str, folder: Path) -> Stores:
    if kind == "memory":
        return open_stores(MEMORY)
    folder.mkdir(parents=True, exist_ok=True)
    return open_stores(str(folder / f"{kind}.sqlite"), synchronous=SYNC[kind])


def restarted(kind: str, folder: Path, catalog: Catalog, decisions: list[Decision]) -> Engine:
    """An engine whose decision log holds the stream's decisions (feedback joins read them
    from the log: these engines did not make them)."""
    stores = make_stores(kind, folder)
    stores.decisions.append_decisions(decisions)
    return Engine(catalog, stores, FixedClock(NOW))


# ------------------------------------------------------------------ stages
def stage(
    catalog: Catalog,
    bodies: list[bytes],
    times: list[float],
    work: Callable[[list[Event]], object] | None,
) -> dict[str, Any]:
    """Time ``work`` per batch on freshly parsed events (parse untimed), or parse itself when
    ``work`` is None; GC pauses inside the timed sections are reported."""
    clock = FixedClock(NOW)
    parser = Engine(catalog, open_stores(MEMORY), clock)
    pc = time.perf_counter_ns
    lat: list[int] = []
    gc_in = n = 0
    with GcWatch() as gw:
        for body in batches(bodies, times, clock):
            if work is not None:
                events = parser.parse_batch(body)
            g, t = gw.total_pause_ns, pc()
            if work is None:
                events = parser.parse_batch(body)
            else:
                work(events)
            lat.append(pc() - t)
            gc_in += gw.total_pause_ns - g
            n += len(events)
    busy = sum(lat) / 1e9
    return {
        "events": n,
        "seconds": round(busy, 3),
        "events_per_s": round(n / busy),
        "batch_latency": latency_summary(lat),
        "gc_pause_seconds_in_stage": round(gc_in / 1e9, 3),
        "gc": gw.summary(),
    }


def run_fold(
    catalog: Catalog, bodies: list[bytes], times: list[float], decisions: list[Decision]
) -> dict[str, Any]:
    """Identity + fold + learning as ``Engine.ingest`` applies events, no store."""
    book = ProfileBook(catalog.matcher, catalog.fold_config)
    learner = Learner(catalog)
    by_id = {d.decision_id: d for d in decisions}
    seq = 0

    def work(events: list[Event]) -> None:
        nonlocal seq
        for e in events:
            seq += 1
            d = by_id.get(str(e.properties.get("decision_id"))) if is_feedback(e) else None
            learner.observe(e, d)
            book.apply(seq, e, lambda users, anons, upto: ())

    out = stage(catalog, bodies, times, work)
    return {**out, "profiles": len(book.profiles), "learned": learner.learned}


def run_append(
    kind: str, folder: Path, catalog: Catalog, bodies: list[bytes], times: list[float]
) -> dict[str, Any]:
    stores = make_stores(kind, folder / "append-only")
    out = stage(catalog, bodies, times, stores.events.append)
    stores.close()
    return out


def run_ingest(
    kind: str,
    folder: Path,
    catalog: Catalog,
    stream: tuple[list[bytes], list[float], list[Decision]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    bodies, times, decisions = stream
    engine = restarted(kind, folder, catalog, decisions)
    clock = engine.clock
    assert isinstance(clock, FixedClock)
    pc = time.perf_counter_ns
    lat: list[int] = []
    accepted = duplicates = 0
    saves_ms: list[float] = []
    with GcWatch() as gw:
        start = pc()
        for body in batches(bodies, times, clock):
            t = pc()
            r = engine.ingest_batch(body)
            lat.append(pc() - t)
            accepted += r.accepted
            duplicates += r.duplicates
            if engine.snapshot_due:  # as the server's background task does, between batches
                t = pc()
                engine.snapshot()
                saves_ms.append(round((pc() - t) / 1e6, 1))
        wall = (pc() - start) / 1e9
    out: dict[str, Any] = {
        "store": kind,
        "events": accepted,
        "duplicates": duplicates,
        "seconds": round(wall, 3),
        "events_per_s": round(accepted / wall),
        "batches_per_s": round(len(bodies) / wall, 1),
        "batch_latency": latency_summary(lat),
        "snapshots_during_run": len(saves_ms),
        "snapshot_batch_latency_ms": saves_ms,
        "profiles": engine.profile_count,
        "feedback_learned": engine.learner.learned,
        "views_waiting_at_end": engine.pending_views,
        "gc_pause_seconds_in_stage": round(gw.total_pause_ns / 1e9, 3),
        "gc": gw.summary(),
        "stitch": run_stitches(engine, args),
    }
    # a full save: every profile encoded and written at once (identity links aside)
    began = time.perf_counter()
    rows = [profile_row(p.customer_id, p) for p in engine.profiles()]
    engine.state_store.save_state(engine.event_log.last_seq(), catalog.digest, rows, replace=True)
    save_s = time.perf_counter() - began
    out["snapshot"] = {
        "profiles": len(rows),
        "seconds": round(save_s, 4),
        "us_per_profile": round(save_s / len(rows) * 1e6, 2),
        "bytes": sum(len(r.body or b"") for r in rows),
    }
    engine.release()
    if kind != "memory":
        size = sum(p.stat().st_size for p in folder.glob(f"{kind}.sqlite*"))
        out["db_bytes_per_event"] = round(size / max(1, accepted))
    return out


def run_stitches(engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    """An identify that links a new device (3 anonymous page views first, untimed) against a
    same-size identify without a new link."""
    rng = random.Random(args.seed + 7)
    users = [f"c{rng.randrange(args.customers):07d}" for _ in range(args.stitches)]
    pre = [
        {
            "type": "page",
            "messageId": f"stitch-pre-{i}-{j}",
            "timestamp": iso(T0 - 300 + j),
            "anonymousId": f"s{i:06d}",
            "properties": {"url": "https://www.bank.example/mortgages/rates"},
        }
        for i in range(args.stitches)
        for j in range(3)
    ]
    for i in range(0, len(pre), args.batch):
        engine.ingest_batch(orjson.dumps({"batch": pre[i : i + args.batch]}))
    pc = time.perf_counter_ns
    link_lat: list[int] = []
    plain_lat: list[int] = []
    for i, user in enumerate(users):
        plain: dict[str, Any] = {
            "type": "identify",
            "messageId": f"plain-{i}",
            "timestamp": iso(T0),
        }
        plain |= {"userId": user, "traits": {"last_login": iso(T0)}}
        link = {**plain, "messageId": f"stitch-{i}", "anonymousId": f"s{i:06d}"}
        for msg, lat in ((plain, plain_lat), (link, link_lat)):
            body = orjson.dumps({"batch": [msg]})
            t = pc()
            engine.ingest_batch(body)
            lat.append(pc() - t)
    return {
        "log_events": engine.event_log.count(),
        "stitch_identify": latency_summary(link_lat),
        "plain_identify": latency_summary(plain_lat),
    }


def run_profile(
    catalog: Catalog,
    folder: Path,
    stream: tuple[list[bytes], list[float], list[Decision]],
    path: Path,
) -> list[dict[str, Any]]:
    """cProfile of ``engine.ingest_batch`` on SQLite synchronous=FULL."""
    bodies, times, decisions = stream
    engine = restarted("sqlite-full", folder / "profile", catalog, decisions)
    clock = engine.clock
    assert isinstance(clock, FixedClock)
    events = sum(len(orjson.loads(b)["batch"]) for b in bodies)
    hot = cprofile_top(
        lambda: [engine.ingest_batch(b) for b in batches(bodies, times[: len(bodies)], clock)],
        events,
        "event",
        path,
        sort="tottime",
    )
    engine.release()
    return hot


# ------------------------------------------------------------------ main
def report(stream: dict[str, Any], res: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    n = stream["messages"]
    print(
        table(
            f"Stream: {n:,} messages, {stream['batches']:,} batches of {args.batch}, "
            f"{stream['mean_message_bytes']} B/message",
            ["message kind", "count", "share"],
            [[k, v, v / n] for k, v in stream["mix"].items()],
        )
    )

    def row(label: str, r: dict[str, Any], snaps: Any = None) -> list[Any]:
        b = r["batch_latency"]
        ms = [b[k] / 1e3 for k in ("p50_us", "p99_us", "max_us")]
        return [label, r["events_per_s"], *ms, r["gc_pause_seconds_in_stage"], r["seconds"], snaps]

    rows = [row("parse only (engine.parse_batch)", res["parse_only"])]
    rows.append(row("fold only (identity + fold + learn, no store)", res["fold_only"]))
    rows += [row(f"event_log.append only, {k}", a) for k, a in res["append_only"].items()]
    rows += [
        row(f"engine.ingest_batch, {k}", r, r["snapshots_during_run"])
        for k, r in res["ingest"].items()
    ]
    print()
    print(
        table(
            f"In-process ingestion, one thread, batches of {args.batch} (latency per batch; "
            "GC = cyclic-GC pauses inside the timed work)",
            ["stage", "events/s", "p50 ms", "p99 ms", "max ms", "GC s", "busy s", "snapshots"],
            rows,
        )
    )
    print()
    print(
        table(
            "Identity stitch vs plain identify (ms), and a full state save",
            [
                "store",
                "log events",
                "stitch p50",
                "p99",
                "plain p50",
                "p99",
                "save s",
                "us/profile",
            ],
            [
                [
                    kind,
                    r["stitch"]["log_events"],
                    *[
                        r["stitch"][w][q] / 1e3
                        for w in ("stitch_identify", "plain_identify")
                        for q in ("p50_us", "p99_us")
                    ],
                    r["snapshot"]["seconds"],
                    r["snapshot"]["us_per_profile"],
                ]
                for kind, r in res["ingest"].items()
            ],
        )
    )
    print()
    print(
        table(
            "cProfile of engine.ingest_batch (SQLite FULL): top 25 by own time (us per event)",
            ["function", "calls", "own", "cum"],
            [[r["function"][-70:], *list(r.values())[1:]] for r in res["cprofile_top25_own_time"]],
        )
    )
    if "http" in res:
        ingest_http.report(res["http"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("ingest", args, "orjson", "starlette", "uvicorn", "httpx", "uvloop", "httptools")
    catalog = load_catalog(EXAMPLE_CATALOG)
    bodies, times, decisions, stream = build_stream(catalog, args)
    log(
        f"stream: {stream['messages']:,} messages in {stream['batches']:,} batches; "
        f"{stream['feedback_decisions']:,} decisions made for its feedback in "
        f"{stream['planning_seconds']} s"
    )
    data = (bodies, times, decisions)
    with tempfile.TemporaryDirectory(prefix="nextbest-ingest-", dir=args.tmpdir) as tmp:
        folder = Path(tmp)
        run.machine["temp_folder_fs"] = fs_type(folder)
        res: dict[str, Any] = {"parse_only": stage(catalog, bodies, times, None)}
        res["fold_only"] = run_fold(catalog, bodies, times, decisions)
        rates = [res[k]["events_per_s"] for k in ("parse_only", "fold_only")]
        log(f"parse only {rates[0]:,} events/s, fold only {rates[1]:,} events/s")
        kinds = [s.strip() for s in args.stores.split(",") if s.strip()]
        res["append_only"], res["ingest"] = {}, {}
        for kind in kinds:
            res["append_only"][kind] = run_append(kind, folder, catalog, bodies, times)
            gc.collect()
        for kind in kinds:
            res["ingest"][kind] = r = run_ingest(kind, folder / kind, catalog, data, args)
            gc.collect()
            log(f"ingest_batch, {kind}: {r['events_per_s']:,} events/s")
        path = args.out / f"{args.name}_profile.txt"
        n = min(len(bodies), args.profile_batches)
        profiled = (bodies[:n], times, decisions)
        res["cprofile_top25_own_time"] = run_profile(catalog, folder, profiled, path)
        res["cprofile_file"] = str(path)
        if args.http:
            res["http"] = ingest_http.run_http(bodies, decisions, folder, args)
    report(stream, res, args)
    run.write({"catalog": "examples/bank", "stream": stream, **res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
