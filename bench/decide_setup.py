"""``bench/decide.py``'s setup: the generated catalog and the engine holding the profiles.

The profiles are folded from generated events with the real ``nextbest.profile.fold``: a pool
first (``--pool``), then the rest folded too, or, when folding every profile would take longer
than ``--fold-limit`` seconds, cloned from the pool under new customer ids (a msgpack round
trip, so every profile is a distinct deep object). They are saved as a snapshot
(``store.snapshot.profile_row``) and the engine restores them, as a restart does: building a
million profiles through ``ingest`` would measure ingestion. The save and the restore are
timed apart (the save is the cost of a full state save).
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from _common import T0, engine_with_rows, log, rss_bytes
from catalog_gen import (
    customer_messages,
    make_customer,
    offer_ids_by_topic,
    to_event,
    write_catalog,
)
from nextbest.bootstrap import MEMORY, open_stores
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.profile.fold import fold
from nextbest.profile.model import Profile
from nextbest.store.catalog_files import load_catalog
from nextbest.store.port import StateRow
from nextbest.store.snapshot import profile_row

__all__ = ["Built", "bench_catalog", "build_engine_with_profiles", "profile_rows"]


def bench_catalog(args: argparse.Namespace) -> tuple[Catalog, dict[str, Any]]:
    """The generated catalog of ``args`` (see the module docstring), loaded; and its shape."""
    with tempfile.TemporaryDirectory(prefix="nextbest-bench-") as tmp:
        folder = Path(tmp) / "catalog"
        shape = write_catalog(
            folder,
            args.seed,
            args.placement_offers,
            args.other_offers,
            learning=args.learning,
            broaden=args.broaden,
        )
        return load_catalog(folder), shape


def profile_rows(
    catalog: Catalog, args: argparse.Namespace
) -> tuple[list[StateRow], dict[str, Any]]:
    """Every profile as a saved row: a folded pool, then folded or cloned (module doc)."""
    offers_by_topic = offer_ids_by_topic(list(catalog.offers))
    gen_ns = fold_ns = events = 0
    pc = time.perf_counter_ns

    def folded(index: int) -> Profile:
        nonlocal gen_ns, fold_ns, events
        rng = random.Random(args.seed * 1_000_003 + index)
        t0 = pc()
        c = make_customer(rng, index)
        n = rng.randint(args.events_min, args.events_max)
        msgs = customer_messages(rng, c, n, offers_by_topic)
        evs = [to_event(c, m, f"{c.user_id}-{j}") for j, m in enumerate(msgs)]
        t1 = pc()
        profile = Profile(customer_id=c.user_id, user_id=c.user_id)
        for e in evs:
            fold(profile, e, catalog.matcher, catalog.fold_config)
        fold_ns += pc() - t1
        gen_ns += t1 - t0
        events += len(evs)
        return profile

    pool_n = min(args.pool, args.profiles)
    t = time.perf_counter()
    rows = [profile_row(p.customer_id, p) for p in map(folded, range(pool_n))]
    pool_s = time.perf_counter() - t
    estimate = pool_s / pool_n * args.profiles
    mode = args.build
    if mode == "auto":
        mode = "fold" if estimate <= args.fold_limit else "clone"
    log(
        f"pool: {pool_n:,} customers, {events:,} events, {events / fold_ns * 1e9:,.0f} events/s "
        f"folded -> folding {args.profiles:,} would take ~{estimate:.0f} s: {mode}"
    )
    decode = msgspec.msgpack.Decoder(Profile).decode
    for i in range(pool_n, args.profiles):
        if mode == "fold":
            p = folded(i)
        else:
            p = decode(rows[i % pool_n].body or b"")
            p.customer_id = p.user_id = f"c{i:07d}"
            p.anonymous_ids = [f"a{i:07d}"]
        rows.append(profile_row(p.customer_id, p))
    customers = pool_n if mode == "clone" else args.profiles
    return rows, {
        "mode": mode,
        "pool_customers": pool_n,
        "pool_seconds": round(pool_s, 2),
        "events_per_customer": round(events / customers, 2),
        "fold_events_per_s": round(events / fold_ns * 1e9),
        "generation_us_per_customer": round(gen_ns / customers / 1e3, 1),
        "fold_us_per_customer": round(fold_ns / customers / 1e3, 1),
        "estimated_seconds_to_fold_all": round(estimate, 1),
        "fold_limit_seconds": args.fold_limit,
        "customers_folded": customers,
        "events_folded": events,
    }


@dataclass
class Built:
    engine: Engine
    clock: FixedClock
    ids: list[str]
    build: dict[str, Any]
    memory: dict[str, Any]


def build_engine_with_profiles(catalog: Catalog, args: argparse.Namespace) -> Built:
    """An in-memory engine restored from ``args.profiles`` saved profiles; build and memory
    figures (RSS across the restore: the live profiles)."""
    rows, build = profile_rows(catalog, args)
    row_bytes = sum(len(r.body or b"") for r in rows)
    ids = [r.key for r in rows]
    clock = FixedClock(T0)
    stores = open_stores(MEMORY)
    gc.collect()
    rss_before = rss_bytes()
    engine, setup = engine_with_rows(catalog, stores, rows, clock)
    del rows
    t = time.perf_counter()
    gc.collect()
    full_gc_s = time.perf_counter() - t
    rss_after = rss_bytes()
    if args.gc_freeze:
        gc.freeze()  # what build_engine(freeze_gc=True) does after the restore
    # a full state save of the live profiles: every one encoded and written (replace)
    t = time.perf_counter()
    rows = [profile_row(p.customer_id, p) for p in engine.profiles()]
    stores.state.save_state(0, catalog.digest, rows, replace=True)
    save_all_s = time.perf_counter() - t
    del rows
    stores.state.save_state(0, catalog.digest, [], replace=True)  # drop the saved copies
    n = engine.profile_count
    assert n == args.profiles, n
    sample = [engine.profile(i) for i in random.Random(args.seed).sample(ids, min(n, 1_000))]
    memory = {
        "profiles": n,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "rss_bytes_per_profile": round((rss_after - rss_before) / n),
        "msgpack_bytes_per_profile_mean": round(row_bytes / n),
        "json_bytes_per_profile_mean": round(
            sum(len(msgspec.json.encode(p)) for p in sample) / len(sample)
        ),
        "gc_tracked_objects_per_profile": round(
            sum(tracked_objects(p) for p in sample) / len(sample), 1
        ),
        "gc_tracked_objects_total": len(gc.get_objects()),
        "gc_frozen": args.gc_freeze,
        "full_gc_collect_seconds": round(full_gc_s, 3),
        "state_save_all_seconds": round(save_all_s, 3),
        "restore_all_seconds": setup["restore_seconds"],
        "state_save_all_mb": round(row_bytes / 2**20, 1),
    }
    log(
        f"profiles: {n:,} ({build['mode']}), restored in {setup['restore_seconds']} s, a full "
        f"save {save_all_s:.2f} s; {memory['rss_bytes_per_profile']:,} B/profile live"
    )
    return Built(engine, clock, ids, build, memory)


def tracked_objects(obj: Any) -> int:
    """GC-tracked objects reachable from one profile (what a full collection walks)."""
    seen: set[int] = set()
    stack, n = [obj], 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        n += gc.is_tracked(o)
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list | tuple):
            stack.extend(o)
        elif isinstance(o, msgspec.Struct):
            stack.extend(getattr(o, f) for f in o.__struct_fields__)
    return n
