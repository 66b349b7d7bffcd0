"""Benchmark: in-process decision latency with 150 rules per decision and 1,000,000 profiles.

    .venv/bin/python bench/decide.py            # full run (~3-5 min on 2 cores)
    .venv/bin/python bench/decide.py --quick    # smoke run (~20 s)

What it does, in order:

1. writes a generated catalog (example bank topics + policy, 50 segments, ~124 web offers of
   both kinds, 30 app/email/advisor-only offers, campaigns with control groups) into a temp
   folder and loads it with ``nextbest.catalog.load_catalog``;
2. builds the profiles by folding generated events with the real ``nextbest.profile.fold``.
   It first folds a pool (20,000 customers), measures the rate and extrapolates: if folding
   every profile would take longer than ``--fold-limit`` seconds it clones the pool instead
   (a msgpack round trip per profile with a new customer id, so the engine still holds
   N distinct, deep Profile objects);
3. counts, on a sample, how many CEL rules a decision evaluates and how many candidates it
   scores (proxies around the compiled programs and ``click_prior``; not guessed);
4. times ``engine.decide`` per call (perf_counter_ns) after a warm-up, next to a trivial call
   of the same shape (lock + identity resolve + dict lookup) as a baseline;
5. splits the cost: ``rule_variables`` vs ``cel.Context`` build vs rule evaluation vs the rest
   of the pipeline vs the engine wrapper, by calling those pieces directly on the same profiles;
6. runs cProfile over ``--profile-decisions`` decisions; top functions go to
   ``bench/results/decide_profile.txt``.

Results: ``bench/results/decide.json`` (``decide_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import random
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

import nextbest.decide.pipeline as pipeline_mod
from _common import (
    RESULTS,
    T0,
    GcWatch,
    command_line,
    latency_summary,
    load_average,
    log,
    machine_info,
    now_iso,
    peak_rss_bytes,
    rss_bytes,
    table,
    versions,
    write_results,
)
from catalog_gen import (
    BENCH_PLACEMENT,
    customer_messages,
    make_customer,
    offer_ids_by_topic,
    to_event,
    write_catalog,
)
from nextbest.catalog.load import Catalog, load_catalog
from nextbest.clock import FixedClock
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.decide.pipeline import _consented, without_behaviour
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decide.reasons import Suppression
from nextbest.engine import Engine
from nextbest.profile.fold import fold
from nextbest.profile.model import Profile
from nextbest.rules.context import _EMPTY, interest_view, rule_variables
from nextbest.rules.evaluation import Evaluation
from nextbest.rules.expression import RuleOutcome
from nextbest.store.memory import MemoryStore

RULE_EVALUATED = (
    Suppression.INELIGIBLE,
    Suppression.RULE_ERROR,
    Suppression.OUTRANKED,
    Suppression.CONTROL,
)
SCORED = (Suppression.OUTRANKED, Suppression.CONTROL)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", type=int, default=1_000_000, help="profiles in the engine")
    ap.add_argument("--pool", type=int, default=20_000, help="distinct folded profiles first")
    ap.add_argument("--decisions", type=int, default=20_000, help="timed decisions")
    ap.add_argument("--warmup", type=int, default=2_000, help="untimed decisions first")
    ap.add_argument("--count-sample", type=int, default=5_000, help="decisions for the counts")
    ap.add_argument("--split-sample", type=int, default=5_000, help="profiles for the cost split")
    ap.add_argument("--profile-decisions", type=int, default=5_000, help="decisions under cProfile")
    ap.add_argument("--placement-offers", type=int, default=124, help="web offers (in placement)")
    ap.add_argument("--other-offers", type=int, default=30, help="app/email/advisor-only offers")
    ap.add_argument("--events-min", type=int, default=3, help="generated events per customer, min")
    ap.add_argument("--events-max", type=int, default=16, help="generated events per customer, max")
    ap.add_argument(
        "--fold-limit",
        type=float,
        default=600.0,
        help="fold every profile if the extrapolated time is under this (s), else clone the pool",
    )
    ap.add_argument(
        "--build", choices=("auto", "fold", "clone"), default="auto", help="force fold or clone"
    )
    ap.add_argument(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gc.freeze() after loading profiles, as Engine.from_settings does after a restore",
    )
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--name", default=None, help="results name (default decide / decide_quick)")
    args = ap.parse_args()
    if args.quick:
        args.profiles = min(args.profiles, 20_000)
        args.pool = min(args.pool, 2_000)
        args.decisions = min(args.decisions, 2_000)
        args.warmup = min(args.warmup, 200)
        args.count_sample = min(args.count_sample, 500)
        args.split_sample = min(args.split_sample, 500)
        args.profile_decisions = min(args.profile_decisions, 500)
    args.name = args.name or ("decide_quick" if args.quick else "decide")
    return args


# ------------------------------------------------------------------ profiles
class Builder:
    """Generates customers' events and folds them, timing generation and fold separately."""

    def __init__(self, catalog: Catalog, args: argparse.Namespace) -> None:
        self.catalog = catalog
        self.args = args
        self.offers_by_topic = offer_ids_by_topic(list(catalog.offers))
        self.gen_s = 0.0
        self.fold_s = 0.0
        self.events = 0
        self.customers = 0

    def build(self, index: int) -> Profile:
        rng = random.Random(self.args.seed * 1_000_003 + index)
        t0 = time.perf_counter()
        c = make_customer(rng, index)
        n = rng.randint(self.args.events_min, self.args.events_max)
        msgs = customer_messages(rng, c, n, self.offers_by_topic)
        events = [to_event(c, m, f"{c.user_id}-{j}") for j, m in enumerate(msgs)]
        t1 = time.perf_counter()
        profile = Profile(customer_id=c.user_id, user_id=c.user_id)
        matcher, cfg = self.catalog.matcher, self.catalog.fold_config
        for e in events:
            fold(profile, e, matcher, cfg)
        t2 = time.perf_counter()
        self.gen_s += t1 - t0
        self.fold_s += t2 - t1
        self.events += len(events)
        self.customers += 1
        return profile


def build_profiles(
    engine: Engine, catalog: Catalog, args: argparse.Namespace
) -> tuple[dict[str, Any], list[bytes]]:
    builder = Builder(catalog, args)
    profiles = engine._state.profiles
    pool_n = min(args.pool, args.profiles)
    # The benchmark puts profiles straight into the engine's live state (Engine._state), as a
    # snapshot restore would: building 1 M profiles through ingest() would measure ingestion.
    pool_blobs: list[bytes] = []
    enc = msgspec.msgpack.encode
    t_pool = time.perf_counter()
    for i in range(pool_n):
        p = builder.build(i)
        profiles[p.customer_id] = p
        pool_blobs.append(enc(p))
    t_pool = time.perf_counter() - t_pool
    per_customer = t_pool / pool_n
    estimate_all = per_customer * args.profiles
    mode = args.build
    if mode == "auto":
        mode = "fold" if estimate_all <= args.fold_limit else "clone"
    log(
        f"pool: {pool_n:,} customers, {builder.events:,} events, "
        f"{builder.events / builder.fold_s:,.0f} events/s folded "
        f"({per_customer * 1e6:.0f} us/customer incl. generation) -> "
        f"folding {args.profiles:,} would take ~{estimate_all:.0f} s: {mode}"
    )
    t_rest = time.perf_counter()
    if mode == "fold":
        for i in range(pool_n, args.profiles):
            p = builder.build(i)
            profiles[p.customer_id] = p
            if i % 200_000 == 0:
                log(f"  folded {i:,} profiles")
    else:
        dec = msgspec.msgpack.Decoder(Profile)
        for i in range(pool_n, args.profiles):
            p = dec.decode(pool_blobs[i % pool_n])
            cid = f"c{i:07d}"
            p.customer_id = cid
            p.user_id = cid
            p.anonymous_ids = [f"a{i:07d}"]
            profiles[cid] = p
    t_rest = time.perf_counter() - t_rest
    info = {
        "mode": mode,
        "pool_customers": pool_n,
        "pool_seconds": round(t_pool, 2),
        "events_per_customer": round(builder.events / builder.customers, 2),
        "fold_events_per_s": round(builder.events / builder.fold_s),
        "generation_us_per_customer": round(builder.gen_s / builder.customers * 1e6, 1),
        "fold_us_per_customer": round(builder.fold_s / builder.customers * 1e6, 1),
        "estimated_seconds_to_fold_all": round(estimate_all, 1),
        "fold_limit_seconds": args.fold_limit,
        "rest_seconds": round(t_rest, 2),
        "customers_folded": builder.customers,
        "events_folded": builder.events,
    }
    return info, pool_blobs


# ------------------------------------------------------------------ counting
class CountingProgram:
    """Stands in for a compiled CEL program and counts executions (and raised errors)."""

    __slots__ = ("counter", "errors", "program")

    def __init__(self, program: Any) -> None:
        self.program = program
        self.counter = 0
        self.errors = 0

    def execute(self, context: Any) -> Any:
        self.counter += 1
        try:
            return self.program.execute(context)
        except Exception:
            self.errors += 1
            raise


def count_work(engine: Engine, catalog: Catalog, users: list[str]) -> dict[str, Any]:
    seg_rules = [rule for _, rule in catalog.segments]
    offer_rules = list({id(o.rule): o.rule for o in catalog.offers.values()}.values())
    originals = {id(r): r._program for r in seg_rules + offer_rules}
    seg_proxies = [CountingProgram(r._program) for r in seg_rules]
    offer_proxies = [CountingProgram(r._program) for r in offer_rules]
    for r, p in zip(seg_rules, seg_proxies, strict=True):
        r._program = p
    for r, p in zip(offer_rules, offer_proxies, strict=True):
        r._program = p
    scored = 0
    real_prior = pipeline_mod.click_prior

    def counting_prior(*a: Any) -> float:
        nonlocal scored
        scored += 1
        return real_prior(*a)

    pipeline_mod.click_prior = counting_prior  # type: ignore[assignment]
    why: Counter[str] = Counter()
    items = control = derived_rules = derived_scored = 0
    segments_true = 0
    try:
        for uid in users:
            d = engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
            items += len(d.items)
            control += len(d.control)
            segments_true += len(d.segments)
            for e in d.excluded:
                why[e.why.value] += 1
            derived_scored += len(d.items) + sum(1 for e in d.excluded if e.why in SCORED)
            derived_rules += len(d.items) + sum(1 for e in d.excluded if e.why in RULE_EVALUATED)
    finally:
        pipeline_mod.click_prior = real_prior
        for r in seg_rules + offer_rules:
            r._program = originals[id(r)]
    n = len(users)
    seg_evals = sum(p.counter for p in seg_proxies)
    offer_evals = sum(p.counter for p in offer_proxies)
    errors = sum(p.errors for p in seg_proxies + offer_proxies)
    in_placement = catalog.by_placement[BENCH_PLACEMENT]
    return {
        "decisions": n,
        "catalog_segments": len(catalog.segments),
        "catalog_offers": len(catalog.offers),
        "offers_in_placement": len(in_placement),
        "offers_filtered_by_channel_or_kind": len(catalog.offers) - len(in_placement),
        "segment_rules_per_decision": round(seg_evals / n, 2),
        "offer_rules_per_decision": round(offer_evals / n, 2),
        "rules_per_decision": round((seg_evals + offer_evals) / n, 2),
        "rule_errors_per_decision": round(errors / n, 3),
        "candidates_scored_per_decision": round(scored / n, 2),
        "items_per_decision": round(items / n, 2),
        "control_exposures_per_decision": round(control / n, 3),
        "segments_true_per_decision": round(segments_true / n, 2),
        "suppressed_per_decision": {k: round(v / n, 3) for k, v in sorted(why.items())},
        "cross_check_offer_rules_from_decisions": round(derived_rules / n, 2),
        "cross_check_scored_from_decisions": round(derived_scored / n, 2),
    }


# ------------------------------------------------------------------ timing
def time_decisions(
    engine: Engine, users: list[str]
) -> tuple[list[int], float, GcWatch, dict[str, Any]]:
    """Per-call latency; also which calls had a GC collection inside them, and the
    context switches and page faults of the whole loop (to read the tail)."""
    pc = time.perf_counter_ns
    decide = engine.decide
    lat = [0] * len(users)
    with_gc = [False] * len(users)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    with GcWatch() as gw:
        start = pc()
        for i, uid in enumerate(users):
            before = gw.collections
            t = pc()
            decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
            lat[i] = pc() - t
            with_gc[i] = gw.collections != before
        wall = (pc() - start) / 1e9
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    no_gc = [x for x, g in zip(lat, with_gc, strict=True) if not g]
    yes_gc = [x for x, g in zip(lat, with_gc, strict=True) if g]
    tail = {
        "calls_with_gc_collection": len(yes_gc),
        "latency_calls_without_gc": latency_summary(no_gc),
        "latency_calls_with_gc": latency_summary(yes_gc) if yes_gc else None,
        "involuntary_context_switches": ru1.ru_nivcsw - ru0.ru_nivcsw,
        "voluntary_context_switches": ru1.ru_nvcsw - ru0.ru_nvcsw,
        "minor_page_faults": ru1.ru_minflt - ru0.ru_minflt,
        "major_page_faults": ru1.ru_majflt - ru0.ru_majflt,
    }
    return lat, wall, gw, tail


def time_baseline(engine: Engine, users: list[str]) -> tuple[list[int], float]:
    """A trivial call of the same shape: lock, identity resolve, profile dict lookup."""
    lock = threading.RLock()
    state = engine._state

    def trivial(
        request: DecisionRequest, *, user_id: str | None = None, anonymous_id: str | None = None
    ) -> Profile | None:
        with lock:
            key = state.identity.resolve(user_id, anonymous_id)
            return state.profiles.get(key)

    pc = time.perf_counter_ns
    lat = [0] * len(users)
    start = pc()
    for i, uid in enumerate(users):
        t = pc()
        trivial(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
        lat[i] = pc() - t
    return lat, (pc() - start) / 1e9


def cost_split(engine: Engine, catalog: Catalog, users: list[str]) -> dict[str, Any]:
    """Time the pieces of a decision separately on the same profiles."""
    pc = time.perf_counter_ns
    now = T0
    topics = catalog.topics
    request = DecisionRequest(placement=BENCH_PLACEMENT)
    profiles = [engine._state.profiles[u] for u in users]
    # which offer rules each decision evaluates (from the decision itself)
    evaluated: list[list[Any]] = []
    for p in profiles:
        d: Decision = run_pipeline(catalog, p, request, now, "split")
        ids = [i.offer_id for i in d.items] + [
            e.offer_id for e in d.excluded if e.why in RULE_EVALUATED
        ]
        evaluated.append([catalog.offers[i].rule for i in ids])
    seg_rules = [rule for _, rule in catalog.segments]
    named = getattr(catalog, "named_offers", ())  # offers the rules name (newer catalogs)

    parts: dict[str, list[int]] = {
        k: []
        for k in (
            "rule_variables",
            "rule_variables.interest_views",
            "cel_context_build",
            "segment_rules",
            "bind_segments",
            "offer_rules",
            "pipeline_total",
            "engine_decide_total",
        )
    }
    rules_total = 0
    # CPU cost attribution: the cyclic GC is paused here so a collection does not land in one
    # piece at random (its pauses are reported separately for the timed run).
    gc.disable()
    for p, offer_rules in zip(profiles, evaluated, strict=True):
        view = p if _consented(p, catalog, "personalization") else without_behaviour(p)
        t0 = pc()
        variables = rule_variables(view, topics, now, {}, named)
        t1 = pc()
        env = Evaluation(variables)
        t2 = pc()
        segments = {
            seg.id: env.check(rule) is RuleOutcome.TRUE
            for (seg, _), rule in zip(catalog.segments, seg_rules, strict=True)
        }
        t3 = pc()
        env.bind("segments", segments)
        t4 = pc()
        for rule in offer_rules:
            env.check(rule)
        t5 = pc()
        {
            tid: interest_view(view.interests.get(tid, _EMPTY), spec, now)
            for tid, spec in topics.items()
        }
        t6 = pc()
        run_pipeline(catalog, p, request, now, "split")
        t7 = pc()
        engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=p.customer_id)
        t8 = pc()
        parts["rule_variables"].append(t1 - t0)
        parts["cel_context_build"].append(t2 - t1)
        parts["segment_rules"].append(t3 - t2)
        parts["bind_segments"].append(t4 - t3)
        parts["offer_rules"].append(t5 - t4)
        parts["rule_variables.interest_views"].append(t6 - t5)
        parts["pipeline_total"].append(t7 - t6)
        parts["engine_decide_total"].append(t8 - t7)
        rules_total += len(seg_rules) + len(offer_rules)
    gc.enable()
    means = {k: sum(v) / len(v) / 1e3 for k, v in parts.items()}
    p50 = {k: sorted(v)[len(v) // 2] / 1e3 for k, v in parts.items()}
    rules_us = means["segment_rules"] + means["offer_rules"]
    pieces = (
        means["rule_variables"] + means["cel_context_build"] + rules_us + means["bind_segments"]
    )
    rest = means["pipeline_total"] - pieces
    wrapper = means["engine_decide_total"] - means["pipeline_total"]
    total = means["engine_decide_total"]
    return {
        "profiles": len(users),
        "mean_us": {k: round(v, 2) for k, v in means.items()},
        "p50_us": {k: round(v, 2) for k, v in p50.items()},
        "rules_per_decision": round(rules_total / len(users), 2),
        "ns_per_rule": round(rules_us * 1e3 / (rules_total / len(users)), 1),
        "rest_of_pipeline_us": round(rest, 2),
        "engine_wrapper_us": round(wrapper, 2),
        "share_of_engine_decide": {
            "rule_variables": round(means["rule_variables"] / total, 3),
            "cel_context_build": round(means["cel_context_build"] / total, 3),
            "rule_evaluation": round(rules_us / total, 3),
            "bind_segments": round(means["bind_segments"] / total, 3),
            "rest_of_pipeline": round(rest / total, 3),
            "engine_wrapper": round(wrapper / total, 3),
        },
    }


# ------------------------------------------------------------------ profile
def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{line}({func})"


def run_profile(engine: Engine, users: list[str], path: Path) -> list[dict[str, Any]]:
    prof = cProfile.Profile()
    decide = engine.decide
    prof.enable()
    for uid in users:
        decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    out.write(f"cProfile of {len(users):,} engine.decide calls ({BENCH_PLACEMENT})\n\n")
    out.write("=== top 25 by cumulative time ===\n")
    stats.sort_stats("cumulative").print_stats(25)
    out.write("=== top 25 by own (total) time ===\n")
    stats.sort_stats("tottime").print_stats(25)
    path.write_text(out.getvalue())
    raw = stats.stats  # type: ignore[attr-defined]
    n = len(users)
    rows = []
    for key, (_cc, nc, tt, ct, _callers) in sorted(raw.items(), key=lambda kv: -kv[1][3])[:25]:
        rows.append(
            {
                "function": _where(key),
                "calls_per_decision": round(nc / n, 2),
                "own_us_per_decision": round(tt / n * 1e6, 2),
                "cum_us_per_decision": round(ct / n * 1e6, 2),
            }
        )
    return rows


def tracked_containers(obj: Any) -> int:
    """GC-tracked objects reachable from one profile (what a full collection walks)."""
    seen: set[int] = set()
    stack = [obj]
    n = 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if gc.is_tracked(o):
            n += 1
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list | tuple):
            stack.extend(o)
        elif isinstance(o, msgspec.Struct):
            stack.extend(getattr(o, f) for f in o.__struct_fields__)
    return n


# ------------------------------------------------------------------ main
def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    info = machine_info()
    log(f"decide benchmark: {command_line()}")
    log(
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"load average {info['load_average_start']}"
    )
    with tempfile.TemporaryDirectory(prefix="nextbest-bench-") as tmp:
        folder = Path(tmp) / "catalog"
        shape = write_catalog(folder, args.seed, args.placement_offers, args.other_offers)
        catalog = load_catalog(folder)
    log(
        f"catalog: {len(catalog.segments)} segments, {len(catalog.offers)} offers "
        f"({len(catalog.by_placement[BENCH_PLACEMENT])} in {BENCH_PLACEMENT}), "
        f"{len(catalog.campaigns)} campaigns"
    )
    engine = Engine(catalog, MemoryStore(), FixedClock(T0))

    gc.collect()
    rss_before = rss_bytes()
    build_info, pool_blobs = build_profiles(engine, catalog, args)
    del pool_blobs
    t_gc = time.perf_counter()
    gc.collect()
    full_gc_s = time.perf_counter() - t_gc
    rss_after = rss_bytes()
    if args.gc_freeze:
        gc.freeze()
    n_profiles = engine.profile_count
    assert n_profiles == args.profiles, n_profiles
    rng = random.Random(args.seed)
    ids = list(engine._state.profiles)
    sample = [engine._state.profiles[ids[rng.randrange(n_profiles)]] for _ in range(10_000)]
    sizes = [len(msgspec.msgpack.encode(p)) for p in sample]
    json_sizes = [len(msgspec.json.encode(p)) for p in sample]
    memory = {
        "profiles": n_profiles,
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "rss_delta_mb": round((rss_after - rss_before) / 2**20, 1),
        "rss_bytes_per_profile": round((rss_after - rss_before) / n_profiles),
        "msgpack_bytes_per_profile_mean": round(sum(sizes) / len(sizes)),
        "json_bytes_per_profile_mean": round(sum(json_sizes) / len(json_sizes)),
        "gc_tracked_objects_per_profile": round(
            sum(tracked_containers(p) for p in sample[:1000]) / 1000, 1
        ),
        "gc_tracked_objects_total": len(gc.get_objects()),
        "gc_frozen": args.gc_freeze,
        "full_gc_collect_seconds": round(full_gc_s, 3),
    }
    log(
        f"profiles: {n_profiles:,} in {build_info['mode']} mode; RSS "
        f"{memory['rss_before_mb']:,} -> {memory['rss_after_mb']:,} MB "
        f"({memory['rss_bytes_per_profile']:,} B/profile, msgpack "
        f"{memory['msgpack_bytes_per_profile_mean']:,} B)"
    )

    users = [ids[rng.randrange(n_profiles)] for _ in range(args.warmup + args.decisions)]
    warm, timed_users = users[: args.warmup], users[args.warmup :]
    counts = count_work(
        engine, catalog, [ids[rng.randrange(n_profiles)] for _ in range(args.count_sample)]
    )
    log(
        f"per decision: {counts['rules_per_decision']} rules evaluated "
        f"({counts['segment_rules_per_decision']} segment + {counts['offer_rules_per_decision']} "
        f"offer), {counts['candidates_scored_per_decision']} candidates scored"
    )
    for uid in warm:
        engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
    lat, wall, gw, tail = time_decisions(engine, timed_users)
    base_lat, base_wall = time_baseline(engine, timed_users)
    decide_stats = latency_summary(lat)
    base_stats = latency_summary(base_lat)
    log(f"timed {len(lat):,} decisions in {wall:.1f} s")

    split = cost_split(engine, catalog, timed_users[: args.split_sample])
    profile_path = RESULTS / f"{args.name}_profile.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    hot = run_profile(
        engine,
        [ids[rng.randrange(n_profiles)] for _ in range(args.profile_decisions)],
        profile_path,
    )
    engine.flush()

    # what keeping profiles as bytes (decode per decision) and a full snapshot would cost
    enc = msgspec.msgpack.encode
    dec = msgspec.msgpack.Decoder(Profile)
    blobs = [enc(p) for p in sample[:5000]]
    t = time.perf_counter()
    for b in blobs:
        dec.decode(b)
    decode_us = (time.perf_counter() - t) / len(blobs) * 1e6
    t = time.perf_counter()
    for p in sample[:5000]:
        enc(p)
    encode_us = (time.perf_counter() - t) / len(blobs) * 1e6
    t = time.perf_counter()
    engine.snapshot()  # the first save writes every profile (the state was never saved)
    snapshot_s = time.perf_counter() - t
    saved = engine.store.load_state()
    snapshot_bytes = sum(len(r.body or b"") for r in saved.rows) if saved else 0
    # afterwards a save writes only what changed: 10,000 profiles touched since the last one
    engine._state.dirty.update(("profile", k) for k in ids[:10_000])
    t = time.perf_counter()
    engine.snapshot()
    incremental_s = time.perf_counter() - t
    engine.store.save_state(0, "", [], replace=True)  # free the rows
    memory["msgpack_decode_us_per_profile"] = round(decode_us, 2)
    memory["msgpack_encode_us_per_profile"] = round(encode_us, 2)
    memory["engine_snapshot_seconds"] = round(snapshot_s, 2)
    memory["engine_snapshot_mb"] = round(snapshot_bytes / 2**20, 1)
    memory["engine_incremental_snapshot_10k_seconds"] = round(incremental_s, 3)
    log(
        f"engine.snapshot() of {n_profiles:,} profiles: {snapshot_s:.1f} s, "
        f"{snapshot_bytes / 2**20:,.0f} MB; after 10,000 changed: {incremental_s:.3f} s"
    )

    # ------------------------------------------------------------ report
    print()
    print(
        table(
            f"Catalog and work per decision (placement {BENCH_PLACEMENT}, "
            f"{counts['decisions']:,} decisions counted)",
            ["what", "value"],
            [
                ["segments (rules)", counts["catalog_segments"]],
                ["offers in catalog", counts["catalog_offers"]],
                ["offers in placement (after channel/kind)", counts["offers_in_placement"]],
                [
                    "offers filtered out by channel/kind",
                    counts["offers_filtered_by_channel_or_kind"],
                ],
                ["campaigns", shape["campaigns"]],
                ["segment rules evaluated / decision", counts["segment_rules_per_decision"]],
                ["offer rules evaluated / decision", counts["offer_rules_per_decision"]],
                ["CEL rules evaluated / decision", counts["rules_per_decision"]],
                ["rule errors / decision", counts["rule_errors_per_decision"]],
                ["candidates scored / decision", counts["candidates_scored_per_decision"]],
                ["items returned / decision", counts["items_per_decision"]],
                [
                    "  cross-check: offer rules (from decisions)",
                    counts["cross_check_offer_rules_from_decisions"],
                ],
                [
                    "  cross-check: scored (from decisions)",
                    counts["cross_check_scored_from_decisions"],
                ],
            ]
            + [[f"  suppressed: {k}", v] for k, v in counts["suppressed_per_decision"].items()],
        )
    )
    print()
    print(
        table(
            f"Profiles ({n_profiles:,}, built by {build_info['mode']})",
            ["what", "value"],
            [
                ["events per customer (mean)", build_info["events_per_customer"]],
                ["fold rate, events/s (real fold)", build_info["fold_events_per_s"]],
                ["fold us / customer", build_info["fold_us_per_customer"]],
                ["event generation us / customer", build_info["generation_us_per_customer"]],
                [
                    "extrapolated s to fold all (gen + fold)",
                    build_info["estimated_seconds_to_fold_all"],
                ],
                ["RSS before, MB", memory["rss_before_mb"]],
                ["RSS after, MB", memory["rss_after_mb"]],
                ["RSS bytes / profile", memory["rss_bytes_per_profile"]],
                ["msgpack bytes / profile (mean)", memory["msgpack_bytes_per_profile_mean"]],
                ["JSON bytes / profile (mean)", memory["json_bytes_per_profile_mean"]],
                ["GC-tracked objects / profile", memory["gc_tracked_objects_per_profile"]],
                ["GC-tracked objects in process", memory["gc_tracked_objects_total"]],
                ["one full gc.collect() pause, s", memory["full_gc_collect_seconds"]],
                ["msgpack decode us / profile", memory["msgpack_decode_us_per_profile"]],
                ["msgpack encode us / profile", memory["msgpack_encode_us_per_profile"]],
                ["engine.snapshot() of all profiles, s", memory["engine_snapshot_seconds"]],
                ["engine.snapshot() size, MB", memory["engine_snapshot_mb"]],
                [
                    "engine.snapshot() after 10,000 changed, s",
                    memory["engine_incremental_snapshot_10k_seconds"],
                ],
            ],
        )
    )
    print()
    keys = ["mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"]
    ratio = [decide_stats[k] / base_stats[k] if base_stats[k] else float("nan") for k in keys]
    print(
        table(
            f"Latency per call, microseconds ({len(lat):,} calls, single thread)",
            ["call", "mean", "p50", "p90", "p99", "p99.9", "max", "calls/s"],
            [
                ["engine.decide", *[decide_stats[k] for k in keys], len(lat) / wall],
                [
                    "baseline (lock+resolve+dict get)",
                    *[base_stats[k] for k in keys],
                    len(lat) / base_wall,
                ],
                ["ratio decide / baseline", *ratio, float("nan")],
                [
                    f"engine.decide, {len(lat) - tail['calls_with_gc_collection']:,} calls "
                    "with no GC inside",
                    *[tail["latency_calls_without_gc"][k] for k in keys],
                    float("nan"),
                ],
                [
                    f"engine.decide, {tail['calls_with_gc_collection']:,} calls with a GC "
                    "collection inside",
                    *[(tail["latency_calls_with_gc"] or {}).get(k, float("nan")) for k in keys],
                    float("nan"),
                ],
            ],
        )
    )
    gcs = gw.summary()
    print(
        "GC during timed decisions: "
        + ", ".join(
            f"gen{g}: {gcs[f'gen{g}']['collections']} ({gcs[f'gen{g}']['total_ms']} ms, "
            f"max {gcs[f'gen{g}']['max_ms']} ms)"
            for g in range(3)
        )
    )
    print(
        f"timed loop: {tail['involuntary_context_switches']:,} involuntary / "
        f"{tail['voluntary_context_switches']:,} voluntary context switches, "
        f"{tail['minor_page_faults']:,} minor / {tail['major_page_faults']:,} major page faults"
    )
    print()
    m = split["mean_us"]
    share = split["share_of_engine_decide"]
    print(
        table(
            f"Cost split, microseconds per decision ({split['profiles']:,} profiles, "
            f"{split['rules_per_decision']} rules each, {split['ns_per_rule']} ns/rule)",
            ["piece", "mean us", "p50 us", "share"],
            [
                [
                    "rule_variables()",
                    m["rule_variables"],
                    split["p50_us"]["rule_variables"],
                    share["rule_variables"],
                ],
                [
                    "  of which 8 interest views",
                    m["rule_variables.interest_views"],
                    split["p50_us"]["rule_variables.interest_views"],
                    float("nan"),
                ],
                [
                    "cel.Context build (Evaluation())",
                    m["cel_context_build"],
                    split["p50_us"]["cel_context_build"],
                    share["cel_context_build"],
                ],
                [
                    "segment rules (50)",
                    m["segment_rules"],
                    split["p50_us"]["segment_rules"],
                    float("nan"),
                ],
                [
                    "bind segments",
                    m["bind_segments"],
                    split["p50_us"]["bind_segments"],
                    share["bind_segments"],
                ],
                ["offer rules", m["offer_rules"], split["p50_us"]["offer_rules"], float("nan")],
                [
                    "rule evaluation (segments + offers)",
                    m["segment_rules"] + m["offer_rules"],
                    float("nan"),
                    share["rule_evaluation"],
                ],
                [
                    "rest of pipeline (filters, score, items, reasons)",
                    split["rest_of_pipeline_us"],
                    float("nan"),
                    share["rest_of_pipeline"],
                ],
                [
                    "pipeline.decide total",
                    m["pipeline_total"],
                    split["p50_us"]["pipeline_total"],
                    float("nan"),
                ],
                [
                    "engine wrapper (lock, uuid, buffer)",
                    split["engine_wrapper_us"],
                    float("nan"),
                    share["engine_wrapper"],
                ],
                [
                    "engine.decide total",
                    m["engine_decide_total"],
                    split["p50_us"]["engine_decide_total"],
                    1.0,
                ],
            ],
        )
    )
    print()
    print(
        table(
            f"cProfile: top 25 by cumulative time ({args.profile_decisions:,} decisions; "
            f"full listing in {profile_path.relative_to(RESULTS.parent.parent)})",
            ["function", "calls/dec", "own us/dec", "cum us/dec"],
            [
                [
                    r["function"][-70:],
                    r["calls_per_decision"],
                    r["own_us_per_decision"],
                    r["cum_us_per_decision"],
                ]
                for r in hot
            ],
        )
    )
    elapsed = time.perf_counter() - started
    load_end = load_average()
    print(
        f"\nload average at start {info['load_average_start']}, at end {load_end}; "
        f"total {elapsed:.0f} s; peak RSS {peak_rss_bytes() / 2**20:,.0f} MB"
    )

    info["load_average_end"] = load_end
    payload = {
        "benchmark": "decide",
        "date": now_iso(),
        "command": command_line(),
        "machine": info,
        "versions": versions("msgspec", "common-expression-language", "starlette", "uvicorn"),
        "args": vars(args),
        "catalog": {**shape, "placement": BENCH_PLACEMENT},
        "work_per_decision": counts,
        "profiles": {**build_info, **memory},
        "latency": {
            "decide": {**decide_stats, "decisions_per_s_single_thread": round(len(lat) / wall)},
            "baseline_trivial_call": {**base_stats, "calls_per_s": round(len(lat) / base_wall)},
            "ratio_mean": round(decide_stats["mean_us"] / base_stats["mean_us"], 1),
            "ratio_p50": round(decide_stats["p50_us"] / base_stats["p50_us"], 1),
            "ratio_p99": round(decide_stats["p99_us"] / base_stats["p99_us"], 1),
            "gc_during_timed_decisions": gcs,
            "tail": tail,
        },
        "cost_split": split,
        "cprofile_top25_cumulative": hot,
        "cprofile_file": str(profile_path.relative_to(RESULTS.parent.parent)),
        "elapsed_seconds": round(elapsed, 1),
        "peak_rss_mb": round(peak_rss_bytes() / 2**20),
    }
    path = write_results(args.name, payload)
    print(f"results: {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
