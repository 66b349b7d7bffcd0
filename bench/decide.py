"""Benchmark: in-process decision latency with 150 rules per decision and 1,000,000 profiles.

    .venv/bin/python bench/decide.py            # full run (~3-5 min on 2 cores)
    .venv/bin/python bench/decide.py --quick    # smoke run (~20 s)
    .venv/bin/python bench/decide.py --learning contextual --broaden 0.4   # learning on (~6 min)

What it does, in order:

1. writes a generated catalog (example bank topics + policy, 50 segments, ~124 web offers of
   both kinds, 30 app/email/advisor-only offers, campaigns with control groups) into a temp
   folder and loads it with ``nextbest.store.catalog_files.load_catalog``;
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

With ``--learning contextual|bayes`` the benchmark placement learns (``catalog_gen.LEARNING``:
contextual + epsilon-greedy 0.05, or bayes + Thompson sampling with 200 simulations), and:

* before anything is counted or timed, the model is trained through ``engine.ingest`` with
  feedback on ``--train-decisions`` decisions spread over ``--train-minutes`` of engine time:
  ``Promotion Viewed`` for every item, ``Promotion Clicked`` for about ``--click-rate`` of
  them (a hidden rate per offer x position x interest in the offer's topic; the realized
  share is reported), each with its decision id, offer id, position and customer id; then
  the clock moves past the 30-minute click window and one more event lets the waiting views
  be learned as misses;
* the timed loop runs twice: with the placement's model (``engine.decide``), and on the same
  engine, profiles and customers with the learner bypassed (``choose=greedy``), the in-run
  learning-off reference; the cost split adds the chooser's pieces (customer features,
  ``predict_many``, the whole ``Learner.choose``);
* learning costs per feedback event (``Learner.observe`` of a click, of a view, a view
  expiring in ``Learner.advance``, ``learn_one`` alone, and a whole ``engine.ingest`` of one
  event on the in-memory store and on SQLite synchronous=FULL next to a non-feedback event);
* the learner's state: ``to_state`` bytes per model and in all, weights or arms, the time
  of ``to_state`` / ``from_state`` and the memory of a restored learner (tracemalloc, RSS).

``--broaden`` ORs an age-band segment into that share of the placement's commercial offer
rules (``catalog_gen``), to score ~20 candidates per decision with ~150 rules; 0 (the
default) leaves the catalog exactly as before.

Results: ``bench/results/decide.json`` (``decide_quick.json`` with ``--quick``;
``decide_<learning>.json`` with ``--learning``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

import nextbest.decide.ranking as ranking_mod
from _common import (
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
    peak_rss_bytes,
    rss_bytes,
    table,
    versions,
    write_results,
)
from catalog_gen import (
    BENCH_PLACEMENT,
    LEARNING,
    customer_messages,
    make_customer,
    offer_ids_by_topic,
    to_event,
    write_catalog,
)
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide.model import ChoiceContext, Chooser, Decision, DecisionRequest
from nextbest.decide.pipeline import _consented, greedy, without_behaviour
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decide.reasons import Suppression
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.learn.bayes import BetaBernoulli
from nextbest.learn.contextual import ContextualLogistic
from nextbest.learn.explore import BetaScores, Thompson, rank, seed_of
from nextbest.learn.explore import RankEntry as Slot
from nextbest.learn.features import customer_features
from nextbest.learn.learner import PRIOR, Learner, _offset, customer_part
from nextbest.learn.model import load_model
from nextbest.profile.fold import fold
from nextbest.profile.model import Profile
from nextbest.rules.context import _EMPTY, interest_view, rule_variables
from nextbest.rules.evaluation import Evaluation
from nextbest.rules.expression import RuleOutcome
from nextbest.store.catalog_files import load_catalog
from nextbest.store.memory import MemoryStore
from nextbest.store.sqlite import SQLiteStore

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
    ap.add_argument(
        "--learning",
        choices=("none", *LEARNING),
        default="none",
        help="the benchmark placement's learning model (none: the catalog's prior)",
    )
    ap.add_argument(
        "--broaden",
        type=float,
        default=0.0,
        help="share of the placement's commercial offer rules ORed with an age band",
    )
    ap.add_argument(
        "--train-decisions", type=int, default=20_000, help="decisions fed back before timing"
    )
    ap.add_argument(
        "--train-minutes", type=float, default=120.0, help="engine time the training spans"
    )
    ap.add_argument("--click-rate", type=float, default=0.02, help="target click share of views")
    ap.add_argument(
        "--learn-cost-events", type=int, default=2_000, help="timed events per learning cost"
    )
    ap.add_argument(
        "--learn-cost-sqlite-events",
        type=int,
        default=500,
        help="timed events per cost on SQLite (each an fsync)",
    )
    ap.add_argument("--tmpdir", default=None, help="where the SQLite file goes (default $TMPDIR)")
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument(
        "--name",
        default=None,
        help="results name (default decide[_<learning>], with _quick for --quick)",
    )
    args = ap.parse_args()
    if args.quick:
        args.profiles = min(args.profiles, 20_000)
        args.pool = min(args.pool, 2_000)
        args.decisions = min(args.decisions, 2_000)
        args.warmup = min(args.warmup, 200)
        args.count_sample = min(args.count_sample, 500)
        args.split_sample = min(args.split_sample, 500)
        args.profile_decisions = min(args.profile_decisions, 500)
        args.train_decisions = min(args.train_decisions, 2_000)
        args.learn_cost_events = min(args.learn_cost_events, 300)
        args.learn_cost_sqlite_events = min(args.learn_cost_sqlite_events, 50)
    if args.name is None:
        args.name = "decide" + ("" if args.learning == "none" else f"_{args.learning}")
        args.name += "_quick" if args.quick else ""
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
    real_prior = ranking_mod.click_prior

    def counting_prior(*a: Any) -> float:
        nonlocal scored
        scored += 1
        return real_prior(*a)

    ranking_mod.click_prior = counting_prior  # type: ignore[assignment]
    why: Counter[str] = Counter()
    items = control = derived_rules = derived_scored = 0
    segments_true = pool = explored = features = commercial = with_commercial = policy = 0
    propensity = 0.0
    sizes: list[int] = []
    models: Counter[str] = Counter()
    try:
        for uid in users:
            d = engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
            items += len(d.items)
            control += len(d.control)
            segments_true += len(d.segments)
            pool += len(d.candidates)
            explored += sum(1 for i in d.items if i.explored)
            n_commercial = sum(1 for i in d.items if i.kind == "commercial")
            commercial += n_commercial
            with_commercial += n_commercial > 0
            policy += any(i.propensity < 1.0 for i in d.items)
            propensity += sum(i.propensity for i in d.items)
            features += len(d.features)
            models[d.model_version.split("-")[0]] += 1
            sizes.append(len(msgspec.msgpack.encode(d)))
            for e in d.excluded:
                why[e.why.value] += 1
            derived_scored += len(d.items) + sum(1 for e in d.excluded if e.why in SCORED)
            derived_rules += len(d.items) + sum(1 for e in d.excluded if e.why in RULE_EVALUATED)
    finally:
        ranking_mod.click_prior = real_prior
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
        "candidates_to_chooser_per_decision": round(pool / n, 2),
        "items_per_decision": round(items / n, 2),
        "explored_share_of_items": round(explored / max(1, items), 4),
        "commercial_items_per_decision": round(commercial / n, 3),
        "decisions_with_a_commercial_item": round(with_commercial / n, 4),
        "decisions_with_a_policy_pick": round(policy / n, 4),
        "mean_item_propensity": round(propensity / max(1, items), 4),
        "logged_features_per_decision": round(features / n, 1),
        "decision_msgpack_bytes_mean": round(sum(sizes) / n),
        "scored_by": dict(models),
        "control_exposures_per_decision": round(control / n, 3),
        "segments_true_per_decision": round(segments_true / n, 2),
        "suppressed_per_decision": {k: round(v / n, 3) for k, v in sorted(why.items())},
        "cross_check_offer_rules_from_decisions": round(derived_rules / n, 2),
        "cross_check_scored_from_decisions": round(derived_scored / n, 2),
    }


# ------------------------------------------------------------------ timing
def time_decisions(
    engine: Engine, users: list[str], choose: Chooser | None = None
) -> tuple[list[int], float, GcWatch, dict[str, Any]]:
    """Per-call latency; also which calls had a GC collection inside them, and the
    context switches and page faults of the whole loop (to read the tail). ``choose``:
    passed to ``engine.decide`` when given (``greedy``: the learner bypassed)."""
    pc = time.perf_counter_ns
    decide = (
        engine.decide
        if choose is None
        else lambda r, user_id: engine.decide(r, user_id=user_id, choose=choose)
    )
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
    """Time the pieces of a decision separately on the same profiles.

    With a learning placement, ``pipeline.decide total`` runs the placement's chooser
    (``Learner.choose``) and ``pipeline.decide, greedy chooser`` the catalog's order."""
    pc = time.perf_counter_ns
    now = engine.clock.now()
    topics = catalog.rule_topics  # what the pipeline converts: the topics rules name
    request = DecisionRequest(placement=BENCH_PLACEMENT)
    profiles = [engine._state.profiles[u] for u in users]
    learning = catalog.placements[BENCH_PLACEMENT].learning is not None
    chooser: Chooser = engine._state.learner.choose if learning else greedy
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
            "pipeline_greedy",
            "engine_decide_total",
        )
    }
    rules_total = 0
    # CPU cost attribution: the cyclic GC is paused here so a collection does not land in one
    # piece at random (its pauses are reported separately for the timed run).
    gc.disable()
    for n, (p, offer_rules) in enumerate(zip(profiles, evaluated, strict=True)):
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
        run_pipeline(catalog, p, request, now, f"split-{n}", chooser)
        t7 = pc()
        engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=p.customer_id)
        t8 = pc()
        if learning:
            run_pipeline(catalog, p, request, now, f"split-greedy-{n}")
        t9 = pc()
        parts["rule_variables"].append(t1 - t0)
        parts["cel_context_build"].append(t2 - t1)
        parts["segment_rules"].append(t3 - t2)
        parts["bind_segments"].append(t4 - t3)
        parts["offer_rules"].append(t5 - t4)
        parts["rule_variables.interest_views"].append(t6 - t5)
        parts["pipeline_total"].append(t7 - t6)
        parts["engine_decide_total"].append(t8 - t7)
        parts["pipeline_greedy"].append(t9 - t8 if learning else t7 - t6)
        rules_total += len(seg_rules) + len(offer_rules)
    gc.enable()
    means = {k: sum(v) / len(v) / 1e3 for k, v in parts.items()}
    p50 = {k: sorted(v)[len(v) // 2] / 1e3 for k, v in parts.items()}
    rules_us = means["segment_rules"] + means["offer_rules"]
    pieces = (
        means["rule_variables"] + means["cel_context_build"] + rules_us + means["bind_segments"]
    )
    rest = means["pipeline_greedy"] - pieces
    chooser_us = means["pipeline_total"] - means["pipeline_greedy"]
    wrapper = means["engine_decide_total"] - means["pipeline_total"]
    total = means["engine_decide_total"]
    return {
        "profiles": len(users),
        "mean_us": {k: round(v, 2) for k, v in means.items()},
        "p50_us": {k: round(v, 2) for k, v in p50.items()},
        "rules_per_decision": round(rules_total / len(users), 2),
        "interest_views": len(topics),
        "ns_per_rule": round(rules_us * 1e3 / (rules_total / len(users)), 1),
        "rest_of_pipeline_us": round(rest, 2),
        "learned_chooser_us": round(chooser_us, 2),
        "engine_wrapper_us": round(wrapper, 2),
        "share_of_engine_decide": {
            "rule_variables": round(means["rule_variables"] / total, 3),
            "cel_context_build": round(means["cel_context_build"] / total, 3),
            "rule_evaluation": round(rules_us / total, 3),
            "bind_segments": round(means["bind_segments"] / total, 3),
            "rest_of_pipeline": round(rest / total, 3),
            "learned_chooser": round(chooser_us / total, 3),
            "engine_wrapper": round(wrapper / total, 3),
        },
    }


# ------------------------------------------------------------------ learning
#: examination by position of the hidden click model used for training (position-based)
THETA = (1.0, 0.6, 0.4)


def feedback_event(name: str, user_id: str, d: Decision, offer_id: str, at: float) -> Event:
    """One ``Promotion Viewed / Clicked`` as parse would produce it, answering ``d``."""
    position = next(i.position for i in d.items if i.offer_id == offer_id)
    return Event(
        message_id=f"{name.split()[-1].lower()}-{d.decision_id}-{offer_id}",
        type=EventType.TRACK,
        name=name,
        timestamp=at,
        received_at=at,  # the learner's clock is one or the other, depending on the version
        user_id=user_id,
        properties={"promotion_id": offer_id, "decision_id": d.decision_id, "position": position},
        context={"channel": "web"},
    )


def plain_event(user_id: str, at: float, mid: str) -> Event:
    """A non-feedback track event of about the same size (the ingest baseline)."""
    return Event(
        message_id=mid,
        type=EventType.TRACK,
        name="Calculator Used",
        timestamp=at,
        received_at=at,
        user_id=user_id,
        properties={"topic": "mortgage", "amount": 250_000, "term_years": 30},
        context={"channel": "web"},
    )


class ClickWorld:
    """The hidden click probability of a shown item during training: a per-offer rate
    (log-normal around ``rate``) x the examination of its position (over its mean) x 2 when
    the customer has interest in the offer's topic (0.8 otherwise)."""

    def __init__(self, catalog: Catalog, seed: int, rate: float) -> None:
        rng = random.Random(seed)
        ids = sorted(catalog.offers)
        raw = {o: rng.lognormvariate(0.0, 0.7) for o in ids}
        mean = sum(raw.values()) / len(raw)
        self.base = {o: rate * v / mean for o, v in raw.items()}
        self.topic = {o: catalog.offers[o].topic for o in ids}

    def p_click(self, d: Decision, offer_id: str, position: int) -> float:
        topic = self.topic[offer_id]
        lift = 2.0 if topic and f"interest:{topic}" in d.features else 0.8
        examined = THETA[min(position, 3) - 1] * len(THETA) / sum(THETA)
        return min(1.0, self.base[offer_id] * examined * lift)


def train(engine: Engine, clock: FixedClock, ids: list[str], args: argparse.Namespace) -> Any:
    """Decisions with realistic feedback through ``engine.ingest``, then every view's click
    window closed, so the model holds what that much traffic teaches it."""
    rng = random.Random(args.seed + 3)
    world = ClickWorld(engine.catalog, args.seed + 5, args.click_rate)
    learner = engine._state.learner
    n = args.train_decisions
    start = clock.now()
    step = args.train_minutes * 60.0 / n
    batch: list[Event] = []
    views = clicks = calls = 0
    ingest_ns = 0
    pc = time.perf_counter_ns
    t_start = time.perf_counter()
    for i in range(n):
        clock.set(start + i * step)
        uid = ids[rng.randrange(len(ids))]
        d = engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
        for item in d.items:
            seen = d.timestamp + rng.uniform(0.5, 3.0)
            batch.append(feedback_event(EventName.PROMOTION_VIEWED, uid, d, item.offer_id, seen))
            views += 1
            if rng.random() < world.p_click(d, item.offer_id, item.position):
                at = seen + rng.uniform(2.0, 120.0)
                batch.append(feedback_event(EventName.PROMOTION_CLICKED, uid, d, item.offer_id, at))
                clicks += 1
        if len(batch) >= 100 or i == n - 1:
            batch.sort(key=lambda e: e.timestamp)
            t = pc()
            engine.ingest(batch)
            ingest_ns += pc() - t
            calls += 1
            batch = []
    train_s = time.perf_counter() - t_start
    waiting = learner.pending_views
    learned_before = learner.learned
    # past every view's click window: one more event lets the learner learn them as misses
    end = clock.now() + 3.0 + 31 * 60.0
    clock.set(end)
    tick = Event(
        message_id="train-tick",
        type=EventType.PAGE,
        timestamp=end,
        received_at=end,
        user_id=ids[0],
        properties={"url": "/"},
        context={"channel": "web"},
    )
    t = pc()
    engine.ingest([tick])
    tick_ns = pc() - t
    expired = waiting - learner.pending_views
    assert learner.pending_views == 0, learner.pending_views
    engine.flush()
    gc.collect()
    model = learner.models[BENCH_PLACEMENT]
    return {
        "decisions": n,
        "engine_minutes": args.train_minutes,
        "views": views,
        "clicks": clicks,
        "click_share_of_views": round(clicks / max(1, views), 4),
        "feedback_events": views + clicks,
        "ingest_calls": calls,
        "seconds": round(train_s, 1),
        "ingest_us_per_feedback_event": round(ingest_ns / 1e3 / max(1, views + clicks), 1),
        "views_waiting_at_end": waiting,
        "learned_before_tick": learned_before,
        "tick_ingest_ms": round(tick_ns / 1e6, 2),
        "tick_views_expired": expired,
        "tick_us_per_expired_view": round(tick_ns / 1e3 / max(1, expired), 2),
        "learned": learner.learned,
        "model_n_learned": model.n_learned,
        "model_version": model.version,
        "clock_after": end,
    }


def learning_split(engine: Engine, catalog: Catalog, users: list[str]) -> dict[str, Any]:
    """The chooser's pieces, each timed inside a real pipeline run (so caches are as cold as
    in a decision): the whole ``Learner.choose``; customer features; the offer refs and
    prior offsets; the model's ``predict_many`` over the candidates; and the exploration
    policy's ``rank`` as if every slot were a free commercial one (the worst case: in this
    placement service messages come first and often fill the slots). One pass over the
    profiles per piece; the passes other than the first return the greedy choice."""
    learner = engine._state.learner
    model = learner.models[BENCH_PLACEMENT]
    spec = catalog.placements[BENCH_PLACEMENT].learning
    assert spec is not None
    policy = spec.explore
    now = engine.clock.now()
    request = DecisionRequest(placement=BENCH_PLACEMENT)
    profiles = [engine._state.profiles[u] for u in users]
    pc = time.perf_counter_ns
    parts: dict[str, list[int]] = {
        k: [] for k in ("choose_total", "features", "refs_offsets", "predict_many", "rank_free")
    }
    candidates: list[int] = []

    def whole(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        t = pc()
        choice = learner.choose(ctx, pool, limit)
        parts["choose_total"].append(pc() - t)
        candidates.append(len(pool))
        return choice

    def features(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        t = pc()
        customer_features(ctx.profile, catalog.topics, ctx.now, ctx.context, ctx.segments)
        parts["features"].append(pc() - t)
        return greedy(ctx, pool, limit)

    def predict(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        x = customer_features(ctx.profile, catalog.topics, ctx.now, ctx.context, ctx.segments)
        t = pc()
        refs = [learner._ref(c.offer, ctx.placement) for c in pool]
        offsets = [_offset(c.p_click) for c in pool]
        t1 = pc()
        model.predict_many(x, refs, offsets=offsets)
        parts["refs_offsets"].append(t1 - t)
        parts["predict_many"].append(pc() - t1)
        return greedy(ctx, pool, limit)

    def rank_free(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        x = customer_features(ctx.profile, catalog.topics, ctx.now, ctx.context, ctx.segments)
        refs = [learner._ref(c.offer, ctx.placement) for c in pool]
        p_click = model.predict_many(x, refs, offsets=[_offset(c.p_click) for c in pool])
        slots = [Slot(service=False, explorable=True) for _ in pool]
        scale = [c.offer.spec.value * c.offer.weight for c in pool]
        scores = [q * w for q, w in zip(p_click, scale, strict=True)]
        thompson = None
        if isinstance(policy, Thompson) and isinstance(model, BetaBernoulli):
            post = [model.posterior(r) for r in refs]
            thompson = BetaScores([a for a, _ in post], [b for _, b in post], scale)
        seed = seed_of(ctx.decision_id)
        t = pc()
        rank(slots, scores, limit, policy, random.Random(seed), thompson=thompson, seed=seed)
        parts["rank_free"].append(pc() - t)
        return greedy(ctx, pool, limit)

    gc.disable()
    try:
        for chooser in (whole, features, predict, rank_free):
            for n, p in enumerate(profiles):
                run_pipeline(catalog, p, request, now, f"ls-{n}", chooser)
    finally:
        gc.enable()
    means = {k: sum(v) / len(v) / 1e3 for k, v in parts.items()}
    rest = means["choose_total"] - means["features"] - means["refs_offsets"]
    rest -= means["predict_many"]
    per = sum(candidates) / len(candidates)
    return {
        "decisions": len(profiles),
        "candidates_per_decision": round(per, 2),
        "mean_us": {k: round(v, 2) for k, v in means.items()},
        "p50_us": {k: round(sorted(v)[len(v) // 2] / 1e3, 2) for k, v in parts.items()},
        "p99_us": {k: round(sorted(v)[int(len(v) * 0.99)] / 1e3, 2) for k, v in parts.items()},
        "predict_us_per_candidate": round(means["predict_many"] / per, 2),
        "rank_explore_and_log_us": round(rest, 2),
    }


def _fresh(
    engine: Engine, ids: list[str], rng: random.Random, n: int
) -> list[tuple[str, Decision]]:
    """``n`` decisions with items for random customers, flushed to the decision log (as the
    server's one-second timer does, so feedback joins them from the recent-decision map)."""
    out: list[tuple[str, Decision]] = []
    while len(out) < n:
        uid = ids[rng.randrange(len(ids))]
        d = engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
        if d.items:
            out.append((uid, d))
    engine.flush()
    return out


def _ingest_costs(
    engine: Engine, decided: list[tuple[str, Decision]], at: float, tag: str
) -> dict[str, Any]:
    """Per decision, three timed ``engine.ingest`` calls of one event each: a non-feedback
    track event (the baseline), the view of the first item, then its click."""
    pc = time.perf_counter_ns
    plain, view, click = [], [], []
    for n, (uid, d) in enumerate(decided):
        oid = d.items[0].offer_id
        e0 = plain_event(uid, at, f"{tag}-plain-{n}")
        e1 = feedback_event(EventName.PROMOTION_VIEWED, uid, d, oid, at)
        e2 = feedback_event(EventName.PROMOTION_CLICKED, uid, d, oid, at)
        t = pc()
        engine.ingest([e0])
        t1 = pc()
        engine.ingest([e1])
        t2 = pc()
        engine.ingest([e2])
        t3 = pc()
        plain.append(t1 - t)
        view.append(t2 - t1)
        click.append(t3 - t2)
    return {
        "plain_track_event": latency_summary(plain),
        "promotion_viewed": latency_summary(view),
        "promotion_clicked": latency_summary(click),
    }


def learning_cost(
    engine: Engine, clock: FixedClock, ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """What one feedback event costs to learn from (see the module docstring)."""
    catalog = engine.catalog
    learner = engine._state.learner
    model = learner.models[BENCH_PLACEMENT]
    spec = catalog.placements[BENCH_PLACEMENT].learning
    assert spec is not None
    window = spec.click_window_minutes * 60.0
    rng = random.Random(args.seed + 11)
    k = args.learn_cost_events
    pc = time.perf_counter_ns
    # leave the training's bookkeeping behind: every answered key forgotten
    t = clock.now() + 2 * window + 60.0
    learner.advance(t)
    clock.set(t)
    out: dict[str, Any] = {"events": k}
    gc.collect()
    gc.disable()  # per-event CPU cost; the GC's share is in the timed decision loop
    try:
        # (c) a view: registered by observe, then learned as a miss when its window closes
        decided = _fresh(engine, ids, rng, k)
        reg, exp = [], []
        for n, (uid, d) in enumerate(decided):
            e = feedback_event(
                EventName.PROMOTION_VIEWED, uid, d, d.items[0].offer_id, t + n * 1e-3
            )
            s = pc()
            learner.observe(e, d)
            reg.append(pc() - s)
        assert learner.pending_views == k, learner.pending_views
        for n in range(k):
            s = pc()
            learner.advance(t + n * 1e-3 + window + 5e-4)  # exactly one window closes
            exp.append(pc() - s)
        assert learner.pending_views == 0, learner.pending_views
        out["observe_view_register"] = latency_summary(reg)
        out["advance_view_expires_as_miss"] = latency_summary(exp)
        # (a) a click, straight to learn_one; and learn_one alone
        decided = _fresh(engine, ids, rng, 2 * k)
        now = learner.now
        obs, one = [], []
        for uid, d in decided[:k]:
            e = feedback_event(EventName.PROMOTION_CLICKED, uid, d, d.items[0].offer_id, now)
            s = pc()
            learner.observe(e, d)
            obs.append(pc() - s)
        for _uid, d in decided[k:]:
            item = d.items[0]
            x = customer_part(d.features, d.candidates)
            ref = learner._ref(catalog.offers[item.offer_id], BENCH_PLACEMENT)
            off = _offset(d.features.get(PRIOR + item.offer_id))
            s = pc()
            model.learn_one(x, ref, item.position, 1.0, offset=off)
            one.append(pc() - s)
        out["observe_click"] = latency_summary(obs)
        out["learn_one_click"] = latency_summary(one)
        # (b) the whole engine.ingest of one event, in memory
        clock.set(now)
        decided = _fresh(engine, ids, rng, k)
        out["engine_ingest_memory"] = _ingest_costs(engine, decided, now, "mem")
        out["engine_ingest_memory"]["events"] = k
    finally:
        gc.enable()
    # ... and on SQLite synchronous=FULL: the same learner and profiles, another store
    with tempfile.TemporaryDirectory(prefix="nextbest-learn-", dir=args.tmpdir) as tmp:
        store = SQLiteStore(Path(tmp) / "learn.sqlite", synchronous="FULL")
        lite = Engine(catalog, store, clock)
        lite._state.profiles = engine._state.profiles
        lite._state.learner = Learner.from_state(catalog, learner.to_state())
        decided = _fresh(lite, ids, rng, args.learn_cost_sqlite_events)
        gc.disable()
        try:
            res = _ingest_costs(lite, decided, now, "lite")
        finally:
            gc.enable()
        res["events"] = len(decided)
        res["fs"] = _fs_type(Path(tmp))
        out["engine_ingest_sqlite_full"] = res
        store.close()  # not lite.close(): that would save 1 M profiles
    return out


def _fs_type(path: Path) -> str:
    try:
        line = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        return line.split()[1]
    except (OSError, IndexError, subprocess.CalledProcessError):
        return "unknown"


def model_state(engine: Engine) -> dict[str, Any]:
    """The learner's saved state and what a restored learner holds in memory."""
    catalog = engine.catalog
    learner = engine._state.learner
    pc = time.perf_counter_ns
    gc.collect()
    to_ms, from_ms = [], []
    for _ in range(5):  # the state save runs to_state under the engine's lock
        t = pc()
        state = learner.to_state()
        to_ms.append((pc() - t) / 1e6)
        t = pc()
        Learner.from_state(catalog, state)
        from_ms.append((pc() - t) / 1e6)
    to_state_ms, from_state_ms = sorted(to_ms)[2], sorted(from_ms)[2]
    models: dict[str, Any] = {}
    for placement, m in sorted(learner.models.items()):
        body = m.to_state()
        row: dict[str, Any] = {"kind": m.kind.value, "n_learned": m.n_learned}
        row["to_state_bytes"] = len(body)
        if isinstance(m, ContextualLogistic):
            row["weights"] = len(m.weights())
            row["bytes_per_weight"] = round(len(body) / max(1, row["weights"]), 1)
        elif isinstance(m, BetaBernoulli):
            row["arms"] = len(m._arms)
            row["bytes_per_arm"] = round(len(body) / max(1, row["arms"]), 1)
        gc.collect()
        tracemalloc.start()
        loaded = load_model(body)
        row["in_memory_bytes_tracemalloc"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del loaded
        models[placement] = row
    gc.collect()
    tracemalloc.start()
    restored = Learner.from_state(catalog, state)
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del restored
    gc.collect()
    rss0 = rss_bytes()
    copies = [Learner.from_state(catalog, state) for _ in range(5)]
    rss1 = rss_bytes()
    del copies
    return {
        "learner_to_state_bytes": len(state),
        "learner_to_state_ms": round(to_state_ms, 2),
        "learner_to_state_ms_runs": [round(x, 2) for x in to_ms],
        "learner_from_state_ms": round(from_state_ms, 2),
        "learner_in_memory_bytes_tracemalloc": traced,
        "learner_rss_delta_bytes_per_copy": round((rss1 - rss0) / 5),
        "pending_views": learner.pending_views,
        "answered_keys": len(learner._answered),
        "models": models,
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


def report_learning(training: Any, chooser: Any, cost: Any, state: Any) -> None:
    """Tables for the learning phases (``--learning``)."""
    print()
    print(
        table(
            "Training through engine.ingest (before counting and timing)",
            ["what", "value"],
            [
                ["decisions fed back", training["decisions"]],
                ["engine minutes spanned", training["engine_minutes"]],
                ["Promotion Viewed", training["views"]],
                ["Promotion Clicked", training["clicks"]],
                ["click share of views", training["click_share_of_views"]],
                [
                    "ingest us / feedback event (batches of ~100)",
                    training["ingest_us_per_feedback_event"],
                ],
                ["views waiting at the end", training["views_waiting_at_end"]],
                ["  expired by one ingest after the window, ms", training["tick_ingest_ms"]],
                ["  us / expired view", training["tick_us_per_expired_view"]],
                ["feedback events learned", training["learned"]],
                ["model version", training["model_version"]],
            ],
        )
    )
    print()
    m, p50, p99 = chooser["mean_us"], chooser["p50_us"], chooser["p99_us"]
    print(
        table(
            f"Learned chooser pieces, us per decision ({chooser['decisions']:,} decisions, "
            f"{chooser['candidates_per_decision']} candidates each)",
            ["piece", "mean", "p50", "p99"],
            [
                ["customer_features()", m["features"], p50["features"], p99["features"]],
                [
                    "offer refs + prior offsets",
                    m["refs_offsets"],
                    p50["refs_offsets"],
                    p99["refs_offsets"],
                ],
                [
                    "model.predict_many()",
                    m["predict_many"],
                    p50["predict_many"],
                    p99["predict_many"],
                ],
                [
                    "explore.rank() with every slot a free commercial one (worst case)",
                    m["rank_free"],
                    p50["rank_free"],
                    p99["rank_free"],
                ],
                [
                    "Learner.choose() whole",
                    m["choose_total"],
                    p50["choose_total"],
                    p99["choose_total"],
                ],
                [
                    "  rest (rank/explore, budgets, logged features), by difference",
                    chooser["rank_explore_and_log_us"],
                    float("nan"),
                    float("nan"),
                ],
            ],
        )
    )
    print()
    keys = ["p50_us", "p90_us", "p99_us", "p99_9_us", "max_us", "mean_us"]

    def row(label: str, r: dict[str, Any]) -> list[Any]:
        return [label, *[r[k] for k in keys]]

    mem, lite = cost["engine_ingest_memory"], cost["engine_ingest_sqlite_full"]
    print(
        table(
            f"Learning cost per feedback event, us ({cost['events']:,} events each; "
            f"SQLite: {lite['events']:,}, on {lite['fs']})",
            ["what", "p50", "p90", "p99", "p99.9", "max", "mean"],
            [
                row(
                    "Learner.observe, Promotion Clicked (learn_one at once)", cost["observe_click"]
                ),
                row("  model.learn_one alone (a click)", cost["learn_one_click"]),
                row(
                    "Learner.observe, Promotion Viewed (registered)", cost["observe_view_register"]
                ),
                row(
                    "Learner.advance, one view expires (learned as a miss)",
                    cost["advance_view_expires_as_miss"],
                ),
                row("engine.ingest 1 event, memory: plain track event", mem["plain_track_event"]),
                row("engine.ingest 1 event, memory: Promotion Viewed", mem["promotion_viewed"]),
                row("engine.ingest 1 event, memory: Promotion Clicked", mem["promotion_clicked"]),
                row(
                    "engine.ingest 1 event, SQLite FULL: plain track event",
                    lite["plain_track_event"],
                ),
                row(
                    "engine.ingest 1 event, SQLite FULL: Promotion Viewed", lite["promotion_viewed"]
                ),
                row(
                    "engine.ingest 1 event, SQLite FULL: Promotion Clicked",
                    lite["promotion_clicked"],
                ),
            ],
        )
    )
    print()
    rows: list[list[Any]] = [
        ["learner.to_state() bytes (all models, views, budgets)", state["learner_to_state_bytes"]],
        ["learner.to_state() ms (median of 5)", state["learner_to_state_ms"]],
        ["Learner.from_state() ms (median of 5)", state["learner_from_state_ms"]],
        [
            "restored learner in memory, bytes (tracemalloc)",
            state["learner_in_memory_bytes_tracemalloc"],
        ],
        ["restored learner, RSS delta bytes per copy", state["learner_rss_delta_bytes_per_copy"]],
        ["pending views / answered keys", f"{state['pending_views']} / {state['answered_keys']}"],
    ]
    for placement, r in state["models"].items():
        rows.append([f"{placement} ({r['kind']}): to_state bytes", r["to_state_bytes"]])
        if "weights" in r:
            rows.append(
                ["  weights (bytes per weight)", f"{r['weights']:,} ({r['bytes_per_weight']})"]
            )
        if "arms" in r:
            rows.append(["  arms (bytes per arm)", f"{r['arms']:,} ({r['bytes_per_arm']})"])
        rows.append(
            ["  in memory after load_model, bytes (tracemalloc)", r["in_memory_bytes_tracemalloc"]]
        )
    print(table("Model state", ["what", "value"], rows))


# ------------------------------------------------------------------ main
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


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    info = machine_info()
    log(f"decide benchmark: {command_line()}")
    log(
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"load average {info['load_average_start']}"
    )
    catalog, shape = bench_catalog(args)
    log(
        f"catalog: {len(catalog.segments)} segments, {len(catalog.offers)} offers "
        f"({len(catalog.by_placement[BENCH_PLACEMENT])} in {BENCH_PLACEMENT}, "
        f"{shape['offers_broadened']} broadened), {len(catalog.campaigns)} campaigns; "
        f"learning: {args.learning}"
    )
    clock = FixedClock(T0)
    engine = Engine(catalog, MemoryStore(), clock)
    learning = args.learning != "none"

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
    training: dict[str, Any] | None = None
    if learning:
        log(
            f"training: {args.train_decisions:,} decisions over {args.train_minutes:.0f} min "
            f"of engine time, views + ~{args.click_rate:.0%} clicks through engine.ingest"
        )
        rss_train = rss_bytes()
        training = train(engine, clock, ids, args)
        training["rss_delta_mb_training"] = round((rss_bytes() - rss_train) / 2**20, 1)
        log(
            f"trained in {training['seconds']} s: {training['views']:,} views, "
            f"{training['clicks']:,} clicks ({training['click_share_of_views']:.2%}), "
            f"{training['learned']:,} learned; the last {training['tick_views_expired']:,} "
            f"views expired in one ingest of {training['tick_ingest_ms']} ms; "
            f"model {training['model_version']}"
        )
    counts = count_work(
        engine, catalog, [ids[rng.randrange(n_profiles)] for _ in range(args.count_sample)]
    )
    log(
        f"per decision: {counts['rules_per_decision']} rules evaluated "
        f"({counts['segment_rules_per_decision']} segment + {counts['offer_rules_per_decision']} "
        f"offer), {counts['candidates_scored_per_decision']} candidates scored by the prior, "
        f"{counts['candidates_to_chooser_per_decision']} offered to the chooser"
    )
    for uid in warm:
        engine.decide(DecisionRequest(placement=BENCH_PLACEMENT), user_id=uid)
    lat, wall, gw, tail = time_decisions(engine, timed_users)
    base_lat, base_wall = time_baseline(engine, timed_users)
    decide_stats = latency_summary(lat)
    base_stats = latency_summary(base_lat)
    log(f"timed {len(lat):,} decisions in {wall:.1f} s")
    greedy_run: dict[str, Any] | None = None
    if learning:
        g_lat, g_wall, g_gw, g_tail = time_decisions(engine, timed_users, choose=greedy)
        greedy_run = {
            **latency_summary(g_lat),
            "decisions_per_s_single_thread": round(len(g_lat) / g_wall),
            "gc_during_timed_decisions": g_gw.summary(),
            "tail": g_tail,
        }
        log(f"timed {len(g_lat):,} decisions with choose=greedy in {g_wall:.1f} s")

    split = cost_split(engine, catalog, timed_users[: args.split_sample])
    chooser_split = (
        learning_split(engine, catalog, timed_users[: args.split_sample]) if learning else None
    )
    profile_path = RESULTS / f"{args.name}_profile.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    hot = run_profile(
        engine,
        [ids[rng.randrange(n_profiles)] for _ in range(args.profile_decisions)],
        profile_path,
    )
    engine.flush()
    learn_cost: dict[str, Any] | None = None
    state_info: dict[str, Any] | None = None
    if learning:
        state_info = model_state(engine)
        log(
            f"learner state {state_info['learner_to_state_bytes']:,} B "
            f"(to_state {state_info['learner_to_state_ms']} ms); measuring learning costs"
        )
        learn_cost = learning_cost(engine, clock, ids, args)
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
                [
                    "candidates scored by the prior / decision",
                    counts["candidates_scored_per_decision"],
                ],
                [
                    "candidates offered to the chooser / decision (model-scored)",
                    counts["candidates_to_chooser_per_decision"],
                ],
                ["items returned / decision", counts["items_per_decision"]],
                ["commercial items / decision", counts["commercial_items_per_decision"]],
                [
                    "share of decisions with a commercial item",
                    counts["decisions_with_a_commercial_item"],
                ],
                [
                    "share of decisions with an item placed at propensity < 1",
                    counts["decisions_with_a_policy_pick"],
                ],
                ["explored share of items", counts["explored_share_of_items"]],
                ["mean item propensity", counts["mean_item_propensity"]],
                ["logged features / decision", counts["logged_features_per_decision"]],
                ["decision msgpack bytes (mean)", counts["decision_msgpack_bytes_mean"]],
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
                *(
                    [
                        [
                            "engine.decide, choose=greedy (learner bypassed), same run",
                            *[greedy_run[k] for k in keys],
                            greedy_run["decisions_per_s_single_thread"],
                        ],
                        [
                            "ratio learned / greedy",
                            *[decide_stats[k] / greedy_run[k] for k in keys],
                            float("nan"),
                        ],
                    ]
                    if greedy_run is not None
                    else []
                ),
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
                    f"  of which {split['interest_views']} interest views",
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
                    "pipeline.decide, greedy chooser",
                    m["pipeline_greedy"],
                    split["p50_us"]["pipeline_greedy"],
                    float("nan"),
                ],
                [
                    "learned chooser (Learner.choose), by difference",
                    split["learned_chooser_us"],
                    float("nan"),
                    share["learned_chooser"],
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
    if learning:
        report_learning(training, chooser_split, learn_cost, state_info)
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
        "code_measured": code_measured(),
        "learning": args.learning,
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
        "training": training,
        "decide_choose_greedy_same_run": greedy_run,
        "ratio_learned_to_greedy": (
            None
            if greedy_run is None
            else {
                k: round(decide_stats[f"{k}_us"] / greedy_run[f"{k}_us"], 3)
                for k in ("mean", "p50", "p90", "p99", "p99_9")
            }
        ),
        "chooser_split": chooser_split,
        "learning_cost_per_event": learn_cost,
        "model_state": state_info,
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
