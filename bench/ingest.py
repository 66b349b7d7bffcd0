"""Benchmark: ingestion events/s, in-process and over HTTP.

    .venv/bin/python bench/ingest.py            # full run (~3-4 min on 2 cores)
    .venv/bin/python bench/ingest.py --quick    # smoke run (~30 s)

In-process (one thread), on the example bank catalog, with a seeded stream of Segment-spec
``/v1/batch`` bodies of 100 messages each (page views whose URLs match topics, anonymous
visitors' page views, bank track events, server-side identify trait updates; each message
with a realistic analytics.js-like ``context``), in global time order.

Feedback (``Promotion Viewed / Clicked``, ~5 % of the stream) must answer a logged decision
of the same customer, so building the stream makes those decisions: a planning engine
ingests the stream batch by batch and, for each feedback message, decides for its customer
a few seconds before the batch is sent (in one of the catalog's learning placements, the
profile as folded so far) and points the message at one of the decision's items (decision
id, offer id, position; the message is re-timed just after the decision). A customer with
nothing eligible yet could not have seen a banner: that message becomes a ``Newsletter
Opened``. Every engine measured below starts with those decisions in its decision log
(flushed, so they are in the recent-decision map, as on a running server; the HTTP server is
a restart and finds them in SQLite), and its clock is each batch's send time when the batch
arrives (``sentAt``: received when sent), so feedback is validated, joined and learned from
as in production. Over HTTP the server's clock is fixed: it sees every batch as received
now, so feedback is validated, joined and stored there, but its click windows are long
closed (it is learned only near the end of the stream):

* parse only: ``engine.parse_batch``;
* fold only: ``Engine._apply`` (identity + fold + learning from feedback) on the parsed
  events, no store;
* store append only: ``store.append`` per batch (memory, SQLite FULL, SQLite NORMAL);
* full ``engine.ingest_batch`` per batch on (a) MemoryStore, (b) SQLiteStore
  synchronous=FULL, (c) SQLiteStore synchronous=NORMAL: events/s, per-batch latency
  (plus the engine's state save every 50,000 events, timed apart as the server runs it in the
  background, but counted in the events/s), and afterwards the cost of an
  identity stitch (an ``identify`` that links a new anonymousId: the profile is re-folded from
  the log) and of one snapshot.

Over HTTP: a real uvicorn server (``create_app`` + ``Engine.from_settings`` on a temp SQLite
file, synchronous=FULL by default) is started as a child process on a free loopback port;
client threads (httpx, keep-alive) post the same batches for a bounded time and count, then the
same clients hit ``GET /healthz`` (the cheapest route of the same stack) as the baseline.
Server and client CPU time are read from /proc so the bottleneck is visible.

Results: ``bench/results/ingest.json`` (``ingest_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from _common import (
    EXAMPLE_CATALOG,
    RESULTS,
    T0,
    GcWatch,
    code_measured,
    command_line,
    latency_summary,
    load_average,
    log,
    machine_info,
    now_iso,
    table,
    versions,
    write_results,
)
from catalog_gen import TOPIC_PAGES, Customer, customer_messages, make_customer
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide.feedback import FEEDBACK_EVENTS
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.engine import Engine, _State
from nextbest.events.model import Event
from nextbest.store.catalog_files import load_catalog
from nextbest.store.memory import MemoryStore
from nextbest.store.port import EventStore, StoredEvent
from nextbest.store.sqlite import SQLiteStore

WRITE_KEY = "bench-write-key"
#: the engine's clock: one minute after the newest generated event
NOW = T0 + 60.0
BATCH_SIZE = 100


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=20_000, help="known customers in the stream")
    ap.add_argument(
        "--anon-visitors", type=int, default=6_000, help="anonymous visitors (page views only)"
    )
    ap.add_argument("--batch", type=int, default=BATCH_SIZE, help="messages per /v1/batch body")
    ap.add_argument("--events-min", type=int, default=3)
    ap.add_argument("--events-max", type=int, default=16)
    ap.add_argument(
        "--stores",
        default="memory,sqlite-full,sqlite-normal",
        help="comma list of memory, sqlite-full, sqlite-normal",
    )
    ap.add_argument("--profile-batches", type=int, default=500, help="batches under cProfile")
    ap.add_argument("--stitches", type=int, default=200, help="identity stitches timed per store")
    ap.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--http-clients", type=int, default=4, help="concurrent client threads")
    ap.add_argument(
        "--http-seconds", type=float, default=30.0, help="time bound of the batch phase"
    )
    ap.add_argument("--http-max-batches", type=int, default=5_000, help="count bound, batch phase")
    ap.add_argument("--health-seconds", type=float, default=10.0, help="time bound, /healthz phase")
    ap.add_argument("--health-max", type=int, default=100_000, help="count bound, /healthz phase")
    ap.add_argument("--http-sync", default="FULL", help="server SQLite synchronous setting")
    ap.add_argument("--tmpdir", default=None, help="where temp SQLite files go (default: $TMPDIR)")
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--name", default=None, help="results name (default ingest / ingest_quick)")
    # internal: run the HTTP server (child process)
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.customers = min(args.customers, 1_000)
        args.anon_visitors = min(args.anon_visitors, 300)
        args.stitches = min(args.stitches, 20)
        args.profile_batches = min(args.profile_batches, 50)
        args.http_seconds = min(args.http_seconds, 3.0)
        args.health_seconds = min(args.health_seconds, 2.0)
        args.http_max_batches = min(args.http_max_batches, 200)
    args.name = args.name or ("ingest_quick" if args.quick else "ingest")
    return args


# ------------------------------------------------------------------ the stream
def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)


def _browser_context(rng: random.Random, path: str | None, channel: str) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "userAgent": _UA,
        "locale": "nl-NL",
        "ip": f"203.0.113.{rng.randint(1, 254)}",
        "channel": channel,
    }
    if path is not None:
        ctx["page"] = {
            "path": path,
            "url": f"https://www.bank.example{path}",
            "title": path.strip("/").replace("/", " - ").title() or "Home",
            "referrer": "",
        }
    return ctx


def wire_message(rng: random.Random, c: Customer, m: dict[str, Any], mid: str) -> dict[str, Any]:
    """One generated message in the exact shape a Segment SDK sends."""
    kind = m["type"]
    msg: dict[str, Any] = {"type": kind, "messageId": mid, "timestamp": iso(m["at"])}
    if kind == "identify":
        # trait updates come from the bank's backend (analytics-python), userId only
        msg["userId"] = c.user_id
        msg["traits"] = m["traits"]
        msg["context"] = {"library": {"name": "analytics-python", "version": "2.3.2"}}
        return msg
    msg["userId"] = c.user_id
    msg["anonymousId"] = c.anonymous_id
    if kind == "page":
        path = m["url"]
        msg["name"] = None
        msg["properties"] = {
            "url": f"https://www.bank.example{path}",
            "path": path,
            "title": path.strip("/").replace("/", " - ").title() or "Home",
            "referrer": "",
            "search": "",
        }
        msg["context"] = _browser_context(rng, path, m["channel"])
    else:
        msg["event"] = m["event"]
        msg["properties"] = m["properties"]
        msg["context"] = _browser_context(rng, None, "web")
    return msg


def anonymous_visit(rng: random.Random, index: int) -> list[tuple[float, dict[str, Any]]]:
    anon = f"v{index:07d}"
    topic = rng.choice(tuple(TOPIC_PAGES))
    start = T0 - rng.random() * 30 * 86_400.0
    out = []
    for j in range(rng.randint(2, 6)):
        path = rng.choice(TOPIC_PAGES[topic][0]) if rng.random() < 0.7 else "/"
        when = start + j * rng.uniform(5, 120)
        msg = {
            "type": "page",
            "messageId": f"{anon}-{j}",
            "timestamp": iso(when),
            "anonymousId": anon,
            "name": None,
            "properties": {"url": f"https://www.bank.example{path}", "path": path},
            "context": _browser_context(rng, path, "web"),
        }
        out.append((when, msg))
    return out


def plan_feedback(
    catalog: Catalog, timeline: list[tuple[float, dict[str, Any]]], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[Decision], list[float], dict[str, Any]]:
    """Real decisions for the stream's feedback messages (see the module docstring).

    A planning engine ingests the stream batch by batch, each when it is sent (its newest
    message + 1 s); before each batch, every feedback message in it gets a decision made for
    its customer 5-15 s before the batch is sent (in a learning placement drawn by weight,
    else any placement with items), names one of its items and is re-timed 1-4 s after the
    decision. (The generated stream is sparse, ~100 messages per 10-60 minutes: feedback
    timed back at its generated moment would reach the server long after its decision, and
    a learner that keeps server time would rightly ignore it as stale.) A customer with
    nothing eligible yet (a new profile) could not have been shown a banner: that message
    becomes a ``Newsletter Opened``, so the stream keeps its size.
    Returns the messages, the decisions, each batch's send time (its newest message + 1 s)
    and counts. Decision ids come from a seeded generator, so the stream is the same every
    run.
    """
    rng = random.Random(args.seed + 101)
    ids = random.Random(args.seed + 102)
    clock = FixedClock(NOW)
    engine = Engine(
        catalog,
        MemoryStore(),
        clock,
        new_id=lambda: f"{ids.getrandbits(128):032x}",
        decision_flush_every=1_000_000,
    )
    learning = [p.id for p in catalog.spec.placements if p.learning is not None]
    weights = [3.0 if p == "home_feed" else 1.0 for p in learning]
    fallback = [p.id for p in catalog.spec.placements]
    out: list[dict[str, Any]] = []
    decisions: list[Decision] = []
    placements: dict[str, int] = {}
    dropped = 0
    times: list[float] = []
    for start in range(0, len(timeline), args.batch):
        chunk: list[dict[str, Any]] = []
        sent = timeline[min(start + args.batch, len(timeline)) - 1][0] + 1.0
        times.append(sent)
        for _at, msg in timeline[start : start + args.batch]:
            if msg["type"] == "track" and msg["event"] in FEEDBACK_EVENTS:
                decided = sent - rng.uniform(5.0, 15.0)
                clock.set(decided)
                chosen = rng.choices(learning, weights)[0] if learning else fallback[0]
                d = None
                for placement in [chosen, *fallback]:
                    d = engine.decide(DecisionRequest(placement=placement), user_id=msg["userId"])
                    if d.items:
                        break
                if d is None or not d.items:  # nothing eligible yet: no banner was shown
                    msg["event"] = "Newsletter Opened"
                    msg["properties"] = {"issue": rng.randint(1, 50)}
                    dropped += 1
                    chunk.append(msg)
                    continue
                item = rng.choice(d.items)
                msg["timestamp"] = iso(decided + rng.uniform(1.0, 4.0))
                msg["properties"] = {
                    "promotion_id": item.offer_id,
                    "decision_id": d.decision_id,
                    "position": item.position,
                }
                decisions.append(d)
                placements[d.placement] = placements.get(d.placement, 0) + 1
            chunk.append(msg)
        clock.set(sent)
        engine.ingest_batch(orjson.dumps({"batch": chunk, "sentAt": iso(sent)}))  # checks them
        out.extend(chunk)
    info = {
        "feedback_decisions": len(decisions),
        "feedback_replaced_nothing_eligible": dropped,
        "feedback_placements": dict(sorted(placements.items())),
        "planning_model_versions": {m.placement: m.info.version for m in engine.models()},
    }
    return out, decisions, times, info


def batches(bodies: list[bytes], times: list[float], clock: FixedClock) -> Iterator[bytes]:
    """The bodies in order, the engine's clock set to each one's send time first: the stream
    arrives as it happened (received when sent), so the learner's click windows close as
    they would live."""
    for body, sent in zip(bodies, times, strict=True):
        clock.set(sent)
        yield body


def preload(engine: Engine, decisions: list[Decision]) -> None:
    """Put the stream's decisions in the engine's decision log, as its own flush would."""
    engine._pending.update((d.decision_id, d) for d in decisions)
    engine.flush()


def build_stream(
    catalog: Catalog, args: argparse.Namespace
) -> tuple[list[bytes], list[float], list[Decision], dict[str, Any]]:
    """The whole stream in time order, cut into /v1/batch bodies (``sentAt`` each batch's
    send time), the send times, and the decisions its feedback answers."""
    rng = random.Random(args.seed)
    timeline: list[tuple[float, dict[str, Any]]] = []
    offer_ids: dict[str, list[str]] = {}  # Promotion Viewed/Clicked name real offers
    for o in catalog.offers.values():
        if o.topic:
            offer_ids.setdefault(o.topic, []).append(o.id)
    for i in range(args.customers):
        c = make_customer(rng, i)
        n = rng.randint(args.events_min, args.events_max)
        for j, m in enumerate(customer_messages(rng, c, n, offer_ids)):
            timeline.append((m["at"], wire_message(rng, c, m, f"{c.user_id}-{j}")))
    for i in range(args.anon_visitors):
        timeline.extend(anonymous_visit(rng, i))
    timeline.sort(key=lambda tm: tm[0])
    t = time.perf_counter()
    msgs, decisions, times, planned = plan_feedback(catalog, timeline, args)
    planned["planning_seconds"] = round(time.perf_counter() - t, 1)
    kinds: dict[str, int] = {}  # as sent: feedback with nothing eligible became Newsletter Opened
    for msg in msgs:
        if msg["type"] == "track":
            key = f"track:{msg['event']}"
        elif msg["type"] == "page" and "userId" not in msg:
            key = "page (anonymous visitor)"
        else:
            key = msg["type"]
        kinds[key] = kinds.get(key, 0) + 1
    bodies = [
        orjson.dumps({"batch": msgs[i : i + args.batch], "sentAt": iso(times[i // args.batch])})
        for i in range(0, len(msgs), args.batch)
    ]
    sizes = [len(b) for b in bodies]
    info = {
        "messages": len(msgs),
        "batches": len(bodies),
        "batch_size": args.batch,
        "customers": args.customers,
        "anonymous_visitors": args.anon_visitors,
        "mean_body_bytes": round(sum(sizes) / len(sizes)),
        "mean_message_bytes": round(sum(sizes) / len(msgs)),
        "mix": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        **planned,
    }
    return bodies, times, decisions, info


# ------------------------------------------------------------------ in-process
def make_store(kind: str, folder: Path) -> EventStore:
    if kind == "memory":
        return MemoryStore()
    sync = {"sqlite-full": "FULL", "sqlite-normal": "NORMAL"}[kind]
    return SQLiteStore(folder / f"{kind}.sqlite", synchronous=sync)


def _stage(
    catalog: Catalog,
    bodies: list[bytes],
    times: list[float],
    work: Callable[[list[Event]], None] | None,
) -> dict[str, Any]:
    """Time ``work`` per batch on freshly parsed events (parse itself untimed), or time
    parse_batch when ``work`` is None. Events are dropped after each batch, as the engine does
    with a durable store; GC pauses inside the timed sections are reported."""
    clock = FixedClock(NOW)
    engine = Engine(catalog, MemoryStore(), clock)
    pc = time.perf_counter_ns
    lat: list[int] = []
    gc_in = 0
    n = 0
    with GcWatch() as gw:
        for body in batches(bodies, times, clock):
            if work is None:
                g, t = gw.total_pause_ns, pc()
                events = engine.parse_batch(body)
                lat.append(pc() - t)
            else:
                events = engine.parse_batch(body)
                g, t = gw.total_pause_ns, pc()
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


def run_parse(catalog: Catalog, bodies: list[bytes], times: list[float]) -> dict[str, Any]:
    return _stage(catalog, bodies, times, None)


def run_fold(
    catalog: Catalog, bodies: list[bytes], times: list[float], decisions: list[Decision]
) -> dict[str, Any]:
    """Identity + fold + learning, exactly as Engine.ingest applies events, without any
    store (feedback joins its decision in the engine's recent-decision map)."""
    engine = Engine(catalog, MemoryStore(), FixedClock(NOW))
    preload(engine, decisions)
    state = _State(catalog)
    seq = 0

    def work(events: list[Event]) -> None:
        nonlocal seq
        for e in events:
            seq += 1
            engine._apply(state, StoredEvent(seq, e))

    out = _stage(catalog, bodies, times, work)
    out["profiles"] = len(state.profiles)
    out["learned"] = state.learner.learned
    return out


def run_append(
    kind: str, folder: Path, catalog: Catalog, bodies: list[bytes], times: list[float]
) -> dict[str, Any]:
    store = make_store(kind, folder / "append-only")
    out = _stage(catalog, bodies, times, store.append)
    store.close()
    return out


def run_profile(
    catalog: Catalog,
    folder: Path,
    bodies: list[bytes],
    times: list[float],
    decisions: list[Decision],
    path: Path,
) -> list[Any]:
    """cProfile of engine.ingest_batch on SQLite synchronous=FULL."""
    clock = FixedClock(NOW)
    engine = Engine(catalog, make_store("sqlite-full", folder / "profile"), clock)
    preload(engine, decisions)
    prof = cProfile.Profile()
    prof.enable()
    for body in batches(bodies, times[: len(bodies)], clock):
        engine.ingest_batch(body)
    prof.disable()
    engine.close()
    events = sum(len(orjson.loads(b)["batch"]) for b in bodies)
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    out.write(f"cProfile of engine.ingest_batch, SQLite FULL, {len(bodies):,} batches\n\n")
    out.write("=== top 25 by cumulative time ===\n")
    stats.sort_stats("cumulative").print_stats(25)
    out.write("=== top 25 by own (total) time ===\n")
    stats.sort_stats("tottime").print_stats(25)
    path.write_text(out.getvalue())
    rows = []
    raw = stats.stats  # type: ignore[attr-defined]
    for key, (_cc, nc, tt, ct, _callers) in sorted(raw.items(), key=lambda kv: -kv[1][2])[:25]:
        rows.append(
            {
                "function": _where(key),
                "calls_per_event": round(nc / events, 3),
                "own_us_per_event": round(tt / events * 1e6, 3),
                "cum_us_per_event": round(ct / events * 1e6, 3),
            }
        )
    return rows


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{line}({func})"


def run_ingest(
    kind: str,
    folder: Path,
    catalog: Catalog,
    bodies: list[bytes],
    times: list[float],
    decisions: list[Decision],
    args: argparse.Namespace,
) -> dict[str, Any]:
    store = make_store(kind, folder)
    clock = FixedClock(NOW)
    engine = Engine(catalog, store, clock)
    preload(engine, decisions)
    pc = time.perf_counter_ns
    lat = []
    accepted = duplicates = 0
    snapshot_batches_ms: list[float] = []
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
                snapshot_batches_ms.append(round((pc() - t) / 1e6, 1))
        wall = (pc() - start) / 1e9
    out: dict[str, Any] = {
        "store": kind,
        "events": accepted,
        "duplicates": duplicates,
        "seconds": round(wall, 3),
        "events_per_s": round(accepted / wall),
        "batches_per_s": round(len(bodies) / wall, 1),
        "batch_latency": latency_summary(lat),
        "snapshots_during_run": len(snapshot_batches_ms),
        "snapshot_batch_latency_ms": snapshot_batches_ms,
        "profiles": engine.profile_count,
        "feedback_learned": engine._state.learner.learned,
        "views_waiting_at_end": engine._state.learner.pending_views,
        "gc_pause_seconds_in_stage": round(gw.total_pause_ns / 1e9, 3),
        "gc": gw.summary(),
    }
    out["stitch"] = run_stitches(engine, args)
    engine._state.replace = True  # measure a full save (every profile and link)
    t = time.perf_counter()
    engine.snapshot()
    snap_s = time.perf_counter() - t
    saved = engine.store.load_state()
    out["snapshot"] = {
        "profiles": engine.profile_count,
        "seconds": round(snap_s, 4),
        "us_per_profile": round(snap_s / engine.profile_count * 1e6, 2),
        "bytes": sum(len(r.body or b"") for r in saved.rows) if saved else None,
        "extrapolated_seconds_1m_profiles": round(snap_s / engine.profile_count * 1e6, 1),
    }
    engine.close()
    if kind != "memory":
        size = sum(p.stat().st_size for p in folder.glob(f"{kind}.sqlite*"))
        out["db_bytes_per_event"] = round(size / max(1, accepted))
    return out


def run_stitches(engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    """Cost of an identify that links a new device: the profile is rebuilt from the log.

    Each new anonymousId first sends 3 anonymous page views (untimed); then one identify
    with userId + anonymousId is timed, next to a same-size identify without a new link.
    """
    rng = random.Random(args.seed + 7)
    pc = time.perf_counter_ns
    users = [f"c{rng.randrange(args.customers):07d}" for _ in range(args.stitches)]
    pre = []
    for i in range(args.stitches):
        for j in range(3):
            pre.append(
                {
                    "type": "page",
                    "messageId": f"stitch-pre-{i}-{j}",
                    "timestamp": iso(T0 - 300 + j),
                    "anonymousId": f"s{i:06d}",
                    "properties": {"url": "https://www.bank.example/mortgages/rates"},
                }
            )
    for i in range(0, len(pre), args.batch):
        engine.ingest_batch(orjson.dumps({"batch": pre[i : i + args.batch]}))
    link_lat, plain_lat = [], []
    for i, user in enumerate(users):
        link = {
            "type": "identify",
            "messageId": f"stitch-{i}",
            "timestamp": iso(T0),
            "userId": user,
            "anonymousId": f"s{i:06d}",
            "traits": {"last_login": iso(T0)},
        }
        plain = {**link, "messageId": f"plain-{i}"}
        del plain["anonymousId"]
        body_link = orjson.dumps({"batch": [link]})
        body_plain = orjson.dumps({"batch": [plain]})
        t = pc()
        engine.ingest_batch(body_plain)
        plain_lat.append(pc() - t)
        t = pc()
        engine.ingest_batch(body_link)
        link_lat.append(pc() - t)
    return {
        "log_events": engine.store.count(),
        "stitch_identify": latency_summary(link_lat),
        "plain_identify": latency_summary(plain_lat),
    }


# ------------------------------------------------------------------ HTTP
def serve_child(args: argparse.Namespace) -> int:
    """The server process: uvicorn + create_app + Engine.from_settings on a SQLite file."""
    import uvicorn

    from nextbest.api.app import create_app
    from nextbest.settings import Settings

    settings = Settings(
        catalog=str(EXAMPLE_CATALOG),
        data=args.data,
        port=args.port,
        write_keys=frozenset({WRITE_KEY}),
        admin_keys=frozenset({"bench-admin-key"}),
        token_secret="bench-token-secret",
        sqlite_synchronous=args.http_sync,
    )
    engine = Engine.from_settings(settings, FixedClock(NOW))
    app = create_app(engine, settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on"
    )
    uvicorn.Server(config).run()
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def drive(
    worker: Callable[[], None],
    clients: int,
    server_pid: int,
    lat: list[int],
    statuses: dict[int, int],
) -> dict[str, Any]:
    """Run ``clients`` threads of ``worker`` (which fill ``lat`` and ``statuses``) and report
    rate, latency, and the server's and this process's CPU over the same wall time."""
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    cpu_server0 = proc_cpu_seconds(server_pid)
    cpu_client0 = time.process_time()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu_server = proc_cpu_seconds(server_pid) - cpu_server0
    cpu_client = time.process_time() - cpu_client0
    n = len(lat)
    return {
        "requests": n,
        "seconds": round(wall, 3),
        "requests_per_s": round(n / wall, 1),
        "latency": latency_summary(lat),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_cpu_seconds": round(cpu_server, 2),
        "server_cpu_utilisation": round(cpu_server / wall, 2),
        "server_cpu_us_per_request": round(cpu_server / max(1, n) * 1e6, 1),
        "client_cpu_seconds": round(cpu_client, 2),
        "client_cpu_utilisation": round(cpu_client / wall, 2),
    }


def http_phase(
    url: str,
    clients: int,
    seconds: float,
    max_requests: int,
    request: Callable[[Any, int], int],
    server_pid: int,
) -> dict[str, Any]:
    """``clients`` threads call ``request(client, i)`` until time or count runs out."""
    import httpx

    lock = threading.Lock()
    counter = iter(range(max_requests))
    lat: list[int] = []
    statuses: dict[int, int] = {}
    pc = time.perf_counter_ns
    deadline = time.monotonic() + seconds
    errors: list[str] = []

    def worker() -> None:
        local_lat: list[int] = []
        local_status: dict[int, int] = {}
        with httpx.Client(base_url=url, auth=(WRITE_KEY, ""), timeout=30.0) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                t = pc()
                try:
                    status = request(client, i)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    status = -1
                local_lat.append(pc() - t)
                local_status[status] = local_status.get(status, 0) + 1
        with lock:
            lat.extend(local_lat)
            for k, v in local_status.items():
                statuses[k] = statuses.get(k, 0) + v

    return {**drive(worker, clients, server_pid, lat, statuses), "errors": errors[:5]}


class RawHealthClient:
    """A minimal keep-alive HTTP/1.1 client for ``GET /healthz``: a few microseconds of client
    CPU per request, so the baseline measures the server rather than httpx."""

    REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self) -> int:
        self.sock.sendall(self.REQUEST)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buf = rest[length:]
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


def raw_health_phase(
    url: str, clients: int, seconds: float, max_requests: int, server_pid: int
) -> dict[str, Any]:
    lock = threading.Lock()
    counter = iter(range(max_requests))
    lat: list[int] = []
    statuses: dict[int, int] = {}
    pc = time.perf_counter_ns
    deadline = time.monotonic() + seconds

    def worker() -> None:
        c = RawHealthClient(url)
        local: list[int] = []
        codes: dict[int, int] = {}
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                t = pc()
                code = c.get()
                local.append(pc() - t)
                codes[code] = codes.get(code, 0) + 1
        finally:
            c.close()
        with lock:
            lat.extend(local)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    return drive(worker, clients, server_pid, lat, statuses)


def run_http(
    bodies: list[bytes], decisions: list[Decision], folder: Path, args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    port = free_port()
    data = folder / "http-server.sqlite"
    store = SQLiteStore(data)  # the decision log the server restarts with
    store.append_decisions(decisions)
    store.close()
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-child",
        "--port",
        str(port),
        "--data",
        str(data),
        "--http-sync",
        args.http_sync,
    ]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        headers = {"content-type": "application/json"}
        n_batches = min(len(bodies), args.http_max_batches)
        events_in = [len(orjson.loads(b)["batch"]) for b in bodies[:n_batches]]

        def post_batch(client: Any, i: int) -> int:
            return int(client.post("/v1/batch", content=bodies[i], headers=headers).status_code)

        def get_health(client: Any, i: int) -> int:
            return int(client.get("/healthz").status_code)

        # a short warm-up of both routes (not timed)
        http_phase(url, args.http_clients, 5.0, 200, get_health, proc.pid)
        log(f"HTTP: posting up to {n_batches:,} batches for up to {args.http_seconds:.0f} s")
        batch = http_phase(
            url, args.http_clients, args.http_seconds, n_batches, post_batch, proc.pid
        )
        sent_events = sum(events_in[: batch["requests"]])
        ok = batch["statuses"].get("200", 0)
        batch["events"] = sent_events
        batch["events_per_s"] = round(sent_events / batch["seconds"])
        batch["server_cpu_us_per_event"] = round(
            batch["server_cpu_seconds"] / max(1, sent_events) * 1e6, 2
        )
        batch["ok_requests"] = ok
        log(f"HTTP: GET /healthz for up to {args.health_seconds:.0f} s")
        health = http_phase(
            url, args.http_clients, args.health_seconds, args.health_max, get_health, proc.pid
        )
        log(f"HTTP: GET /healthz, raw-socket client, for up to {args.health_seconds:.0f} s")
        raw_health = raw_health_phase(
            url, args.http_clients, args.health_seconds, args.health_max, proc.pid
        )
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: the engine flushes and snapshots
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stored = SQLiteStore(data).count()
    return {
        "server": "uvicorn (asyncio loop, h11) + starlette, child process",
        "clients": args.http_clients,
        "client": "httpx.Client per thread, keep-alive, HTTP/1.1",
        "sqlite_synchronous": args.http_sync,
        "batch": batch,
        "healthz": health,
        "healthz_raw_client": raw_health,
        "events_in_log_after_shutdown": stored,
        "ratio_healthz_rps_to_batch_rps": round(
            health["requests_per_s"] / max(1e-9, batch["requests_per_s"]), 2
        ),
        "ratio_batch_rps_to_raw_healthz_rps": round(
            batch["requests_per_s"] / max(1e-9, raw_health["requests_per_s"]), 4
        ),
        "ratio_server_cpu_batch_to_healthz": round(
            batch["server_cpu_us_per_request"] / max(1e-9, health["server_cpu_us_per_request"]), 1
        ),
    }


# ------------------------------------------------------------------ main
def fs_type(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        return out.split()[1]
    except (OSError, IndexError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    args = parse_args()
    if args.serve_child:
        return serve_child(args)
    started = time.perf_counter()
    info = machine_info()
    log(f"ingest benchmark: {command_line()}")
    log(
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"load average {info['load_average_start']}"
    )
    catalog = load_catalog(EXAMPLE_CATALOG)
    bodies, times, decisions, stream = build_stream(catalog, args)
    log(
        f"stream: {stream['messages']:,} messages in {stream['batches']:,} batches of "
        f"{args.batch} ({stream['mean_body_bytes']:,} B/body); "
        f"{stream['feedback_decisions']:,} decisions made for its feedback in "
        f"{stream['planning_seconds']} s "
        f"({stream['feedback_replaced_nothing_eligible']:,} replaced: nothing eligible)"
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nextbest-ingest-", dir=args.tmpdir) as tmp:
        folder = Path(tmp)
        info["temp_folder_fs"] = fs_type(folder)
        parse = run_parse(catalog, bodies, times)
        log(f"parse only: {parse['events_per_s']:,} events/s")
        fold = run_fold(catalog, bodies, times, decisions)
        log(f"fold only: {fold['events_per_s']:,} events/s")
        stores = [s.strip() for s in args.stores.split(",") if s.strip()]
        append = {}
        for kind in stores:
            append[kind] = run_append(kind, folder, catalog, bodies, times)
            gc.collect()
            log(f"append only, {kind}: {append[kind]['events_per_s']:,} events/s")
        ingest = {}
        for kind in stores:
            ingest[kind] = run_ingest(kind, folder / kind, catalog, bodies, times, decisions, args)
            gc.collect()
            log(
                f"ingest_batch, {kind}: {ingest[kind]['events_per_s']:,} events/s, "
                f"p99 {ingest[kind]['batch_latency']['p99_us'] / 1e3:.1f} ms/batch"
            )
        RESULTS.mkdir(parents=True, exist_ok=True)
        profile_path = RESULTS / f"{args.name}_profile.txt"
        hot = run_profile(
            catalog, folder, bodies[: args.profile_batches], times, decisions, profile_path
        )
        log(f"cProfile of {min(len(bodies), args.profile_batches):,} batches: {profile_path}")
        results = {
            "parse_only": parse,
            "fold_only": fold,
            "append_only": append,
            "ingest": ingest,
            "cprofile_top25_own_time": hot,
            "cprofile_file": str(profile_path.relative_to(RESULTS.parent.parent)),
        }
        if args.http:
            results["http"] = run_http(bodies, decisions, folder, args)

    # ------------------------------------------------------------ report
    print()
    mix = stream["mix"]
    print(
        table(
            f"Stream: {stream['messages']:,} messages, {stream['batches']:,} batches of "
            f"{args.batch}, {stream['mean_message_bytes']} B/message",
            ["message kind", "count", "share"],
            [[k, v, v / stream["messages"]] for k, v in mix.items()],
        )
    )
    print()
    rows: list[list[Any]] = []
    nan = float("nan")

    def row(label: str, r: dict[str, Any], snaps: Any = nan) -> list[Any]:
        b = r["batch_latency"]
        return [
            label,
            r["events_per_s"],
            b["p50_us"] / 1e3,
            b["p99_us"] / 1e3,
            b["max_us"] / 1e3,
            r["gc_pause_seconds_in_stage"],
            r["seconds"],
            snaps,
        ]

    rows.append(row("parse only (engine.parse_batch)", parse))
    rows.append(row("fold only (identity + fold + learn, no store)", fold))
    for kind, a in append.items():
        rows.append(row(f"store.append only, {kind}", a))
    for kind, r in ingest.items():
        rows.append(row(f"engine.ingest_batch, {kind}", r, r["snapshots_during_run"]))
    print(
        table(
            f"In-process ingestion, one thread, batches of {args.batch} "
            f"(latency per batch; GC = cyclic-GC pauses inside the timed work)",
            ["stage", "events/s", "p50 ms", "p99 ms", "max ms", "GC s", "busy s", "snapshots"],
            rows,
        )
    )
    print(
        f"feedback: {stream['feedback_decisions']:,} decisions preloaded "
        f"({stream['feedback_placements']}); learned from: fold only "
        f"{fold['learned']:,}, "
        + ", ".join(f"{k} {r['feedback_learned']:,}" for k, r in ingest.items())
    )
    print()
    print(
        table(
            f"cProfile of engine.ingest_batch (SQLite FULL, "
            f"{min(len(bodies), args.profile_batches)} batches): top 25 by own time; "
            f"full listing in {results['cprofile_file']}",
            ["function", "calls/event", "own us/event", "cum us/event"],
            [
                [
                    r["function"][-70:],
                    r["calls_per_event"],
                    r["own_us_per_event"],
                    r["cum_us_per_event"],
                ]
                for r in results["cprofile_top25_own_time"]
            ],
        )
    )
    print()
    print(
        table(
            "Identity stitch (identify linking a new anonymousId) vs plain identify, ms",
            [
                "store",
                "log events",
                "stitch p50",
                "stitch p99",
                "plain p50",
                "plain p99",
                "snapshot s",
                "snapshot us/profile",
            ],
            [
                [
                    kind,
                    r["stitch"]["log_events"],
                    r["stitch"]["stitch_identify"]["p50_us"] / 1e3,
                    r["stitch"]["stitch_identify"]["p99_us"] / 1e3,
                    r["stitch"]["plain_identify"]["p50_us"] / 1e3,
                    r["stitch"]["plain_identify"]["p99_us"] / 1e3,
                    r["snapshot"]["seconds"],
                    r["snapshot"]["us_per_profile"],
                ]
                for kind, r in ingest.items()
            ],
        )
    )
    if "http" in results:
        h = results["http"]
        b, hz, rz = h["batch"], h["healthz"], h["healthz_raw_client"]
        print()
        print(
            table(
                f"HTTP ({h['clients']} client threads, uvicorn child process, SQLite "
                f"synchronous={h['sqlite_synchronous']})",
                [
                    "route",
                    "requests",
                    "req/s",
                    "events/s",
                    "p50 ms",
                    "p99 ms",
                    "server CPU",
                    "server CPU us/req",
                    "client CPU",
                ],
                [
                    [
                        "POST /v1/batch (100 events)",
                        b["requests"],
                        b["requests_per_s"],
                        b["events_per_s"],
                        b["latency"]["p50_us"] / 1e3,
                        b["latency"]["p99_us"] / 1e3,
                        b["server_cpu_utilisation"],
                        b["server_cpu_us_per_request"],
                        b["client_cpu_utilisation"],
                    ],
                    [
                        "GET /healthz (baseline, httpx)",
                        hz["requests"],
                        hz["requests_per_s"],
                        float("nan"),
                        hz["latency"]["p50_us"] / 1e3,
                        hz["latency"]["p99_us"] / 1e3,
                        hz["server_cpu_utilisation"],
                        hz["server_cpu_us_per_request"],
                        hz["client_cpu_utilisation"],
                    ],
                    [
                        "GET /healthz (baseline, raw socket)",
                        rz["requests"],
                        rz["requests_per_s"],
                        float("nan"),
                        rz["latency"]["p50_us"] / 1e3,
                        rz["latency"]["p99_us"] / 1e3,
                        rz["server_cpu_utilisation"],
                        rz["server_cpu_us_per_request"],
                        rz["client_cpu_utilisation"],
                    ],
                ],
            )
        )
        print(
            f"statuses: batch {b['statuses']}, healthz {hz['statuses']}; events in the log "
            f"after shutdown: {h['events_in_log_after_shutdown']:,} (posted {b['events']:,}); "
            f"healthz req/s (httpx) is {h['ratio_healthz_rps_to_batch_rps']}x batch req/s; "
            f"batch req/s is {h['ratio_batch_rps_to_raw_healthz_rps']:.1%} of raw-client "
            f"healthz req/s; a batch costs the server "
            f"{h['ratio_server_cpu_batch_to_healthz']}x the CPU of /healthz"
        )
    elapsed = time.perf_counter() - started
    load_end = load_average()
    print(
        f"\nload average at start {info['load_average_start']}, at end {load_end}; "
        f"temp folder on {info['temp_folder_fs']}; total {elapsed:.0f} s"
    )
    info["load_average_end"] = load_end
    payload = {
        "benchmark": "ingest",
        "date": now_iso(),
        "command": command_line(),
        "machine": info,
        "code_measured": code_measured(),
        "versions": versions(
            "msgspec", "orjson", "starlette", "uvicorn", "httpx", "uvloop", "httptools"
        ),
        "args": vars(args),
        "catalog": str(EXAMPLE_CATALOG.relative_to(RESULTS.parent.parent)),
        "stream": stream,
        **results,
        "elapsed_seconds": round(elapsed, 1),
    }
    path = write_results(args.name, payload)
    print(f"results: {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
