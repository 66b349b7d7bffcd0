"""Benchmark: in-process decision latency with 150 rules per decision and 1,000,000 profiles.

    .venv/bin/python bench/decide.py            # full run (~3-5 min on 2 cores)
    .venv/bin/python bench/decide.py --quick    # smoke run (~20 s)
    .venv/bin/python bench/decide.py --learning contextual --broaden 0.4   # learning on (~6 min)

What it does, in order:

1. writes a generated catalog (``catalog_gen``: example bank topics + policy, 50 segments,
   ~124 web offers of both kinds, 30 app/email/advisor-only offers, campaigns with control
   groups) into a temp folder and loads it;
2. builds the profiles by folding generated events with the real ``nextbest.profile.fold``
   (``decide_setup.py``: a folded pool, the rest folded or cloned, see ``--fold-limit``),
   saves them as a snapshot and restores an engine from it, as a restart does (the save and
   the restore are timed apart: the full state save's cost);
3. counts, on a sample, the CEL rules a decision evaluates and the candidates it scores,
   from the decisions themselves (every segment rule, plus the offers that reached the rule
   step: the items and those excluded as ineligible, by a rule error, outranked or control);
4. times ``engine.decide`` per call after a warm-up, next to ``engine.profile`` (lock +
   identity resolve + dict lookup: a trivial call of the same shape) in the same run;
5. splits the cost: the rules' environment (``RuleReads.evaluation``), the segment rules and
   the offer rules (each computing the values it reads, once per decision), the rest
   of the pipeline, the learned chooser and the engine wrapper, by calling the public pieces
   directly on the same profiles (the cyclic GC paused);
6. runs cProfile over ``--profile-decisions`` decisions (``<name>_profile.txt``);
7. a state save after 10,000 profiles changed (each touched by one ingested event).

``--learning contextual|bayes|bayes_logistic`` gives the placement a learned model and adds
the phases of ``decide_learning.py`` (training through ``engine.ingest``, the greedy chooser
in the same run, the chooser's pieces, one feedback event's learning cost, the learner's state).
``--outcomes`` (with ``--learning``) adds, last, decisions timed in a stream that carries
conversion outcomes (``decide_outcomes.py``: the conversion model learning and refitting
between decisions, as on a live site).
``--broaden`` ORs an age band into that share of the commercial offer rules (~20 candidates).

Results: ``bench/results/decide.json`` (``decide_quick.json`` with ``--quick``;
``decide_<learning>.json`` with ``--learning``).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

import decide_learning
import decide_outcomes
from _common import (
    QUANTILES,
    Run,
    add_run_args,
    cprofile_top,
    kv_table,
    log,
    parts_summary,
    ratios,
    table,
    time_calls,
)
from catalog_gen import BENCH_PLACEMENT, LEARNING
from decide_setup import bench_catalog, build_engine_with_profiles
from nextbest.catalog.compiled import Catalog
from nextbest.decide.model import Chooser, DecisionRequest
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decide.pipeline import greedy
from nextbest.decide.reasons import Suppression
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.learn.learner import Learner
from nextbest.rules.expression import RuleOutcome

__all__ = ["main", "parse_args"]

RULE_EVALUATED = (
    Suppression.INELIGIBLE,
    Suppression.RULE_ERROR,
    Suppression.OUTRANKED,
    Suppression.CONTROL,
)
SCORED = (Suppression.OUTRANKED, Suppression.CONTROL)
REQUEST = DecisionRequest(placement=BENCH_PLACEMENT)
QUICK = {
    "profiles": 20_000,
    "pool": 2_000,
    "decisions": 2_000,
    "warmup": 200,
    "count_sample": 500,
    "split_sample": 500,
    "profile_decisions": 500,
    "train_decisions": 2_000,
    "learn_cost_events": 300,
    "learn_cost_sqlite_events": 50,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
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
    ap.add_argument("--build", choices=("auto", "fold", "clone"), default="auto")
    ap.add_argument(
        "--gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gc.freeze() after the restore, as the server does (build_engine freeze_gc; "
        "the server also collects young objects less often, heap.settle_for_serving, which "
        "bench/decide_ab.py's gc_settle measures)",
    )
    ap.add_argument("--learning", choices=("none", *LEARNING), default="none")
    ap.add_argument(
        "--broaden",
        type=float,
        default=0.0,
        help="share of commercial offer rules ORed with an age",
    )
    decide_learning.add_args(ap)
    decide_outcomes.add_args(ap)
    add_run_args(ap, "decide[_<learning>]")
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, min(getattr(args, k), v))
    if args.outcomes and args.learning == "none":
        ap.error("--outcomes needs a learned placement (--learning)")
    if args.name is None:
        args.name = "decide" + ("" if args.learning == "none" else f"_{args.learning}")
        args.name += "_outcomes" if args.outcomes else ""
        args.name += "_quick" if args.quick else ""
    return args


# ------------------------------------------------------------------ counting and splitting
def count_work(engine: Engine, catalog: Catalog, users: list[str]) -> dict[str, Any]:
    """What a decision does, read from the decisions themselves."""
    c: Counter[str] = Counter()
    why: Counter[str] = Counter()
    sizes = 0
    for uid in users:
        d = engine.decide(REQUEST, user_id=uid)
        items = len(d.items)
        commercial = sum(1 for i in d.items if i.kind == "commercial")
        c.update(
            items=items,
            offer_rules=items + sum(1 for e in d.excluded if e.why in RULE_EVALUATED),
            scored=items + sum(1 for e in d.excluded if e.why in SCORED),
            rule_errors=sum(1 for e in d.excluded if e.why is Suppression.RULE_ERROR),
            pool=len(d.candidates),
            explored=sum(1 for i in d.items if i.explored),
            commercial=commercial,
            with_commercial=commercial > 0,
            policy_pick=any(i.propensity < 1.0 for i in d.items),
            features=len(d.features),
            segments_true=len(d.segments),
        )
        c["propensity_x1000"] += round(1000 * sum(i.propensity for i in d.items))
        why.update(e.why.value for e in d.excluded)
        sizes += len(msgspec.msgpack.encode(d))
    n, segs = len(users), len(catalog.segments)
    in_placement = len(catalog.by_placement[BENCH_PLACEMENT])
    return {
        "decisions": n,
        "catalog_segments": segs,
        "catalog_offers": len(catalog.offers),
        "offers_in_placement": in_placement,
        "offers_filtered_by_channel_or_kind": len(catalog.offers) - in_placement,
        "segment_rules_per_decision": segs,
        "offer_rules_per_decision": round(c["offer_rules"] / n, 2),
        "rules_per_decision": round(segs + c["offer_rules"] / n, 2),
        "rule_errors_per_decision": round(c["rule_errors"] / n, 3),
        "candidates_scored_per_decision": round(c["scored"] / n, 2),
        "candidates_to_chooser_per_decision": round(c["pool"] / n, 2),
        "items_per_decision": round(c["items"] / n, 2),
        "explored_share_of_items": round(c["explored"] / max(1, c["items"]), 4),
        "commercial_items_per_decision": round(c["commercial"] / n, 3),
        "decisions_with_a_commercial_item": round(c["with_commercial"] / n, 4),
        "decisions_with_a_policy_pick": round(c["policy_pick"] / n, 4),
        "mean_item_propensity": round(c["propensity_x1000"] / 1000 / max(1, c["items"]), 4),
        "logged_features_per_decision": round(c["features"] / n, 1),
        "segments_true_per_decision": round(c["segments_true"] / n, 2),
        "decision_msgpack_bytes_mean": round(sizes / n),
        "suppressed_per_decision": {k: round(v / n, 3) for k, v in sorted(why.items())},
    }


def cost_split(engine: Engine, catalog: Catalog, users: list[str]) -> dict[str, Any]:
    """The pieces of a decision timed apart on the same profiles: the rule steps as the
    pipeline runs them (its consent view aside), ``pipeline.decide`` with the greedy and
    with the placement's chooser (a copy of the engine's learner), ``engine.decide``."""
    pc = time.perf_counter_ns
    now = engine.clock.now()
    profiles = [p for p in map(engine.profile, users) if p is not None]
    learner = Learner.from_state(catalog, engine.model_state())
    chooser: Chooser = learner.choose if learner.models else greedy
    offer_rules = []
    for p in profiles:
        d = run_pipeline(catalog, p, REQUEST, now, "split")
        ids = [i.offer_id for i in d.items]
        ids += [e.offer_id for e in d.excluded if e.why in RULE_EVALUATED]
        offer_rules.append([catalog.offers[i].rule for i in ids])
    reads = catalog.rule_reads
    names = ["rules_environment", "segment_rules", "bind_segments"]
    names += ["offer_rules", "pipeline_greedy", "pipeline_total", "engine_decide_total"]
    parts: dict[str, list[int]] = {k: [] for k in names}
    gc.disable()  # a collection would land in one piece at random
    try:
        for n, (p, rules) in enumerate(zip(profiles, offer_rules, strict=True)):
            t = [pc()]
            env = reads.evaluation(p, catalog.topics, now, {})  # values come as rules read them
            t.append(pc())
            segments = {s.id: env.check(r) is RuleOutcome.TRUE for s, r in catalog.segments}
            t.append(pc())
            env.bind("segments", segments)
            t.append(pc())
            for rule in rules:
                env.check(rule)
            t.append(pc())
            run_pipeline(catalog, p, REQUEST, now, f"split-greedy-{n}")
            t.append(pc())
            run_pipeline(catalog, p, REQUEST, now, f"split-{n}", chooser)
            t.append(pc())
            engine.decide(REQUEST, user_id=p.customer_id)
            t.append(pc())
            for k, a, b in zip(names, t, t[1:], strict=False):
                parts[k].append(b - a)
    finally:
        gc.enable()
    s = parts_summary(parts)
    m = {k: v["mean_us"] for k, v in s.items()}
    rules_us = m["segment_rules"] + m["offer_rules"]
    derived = {
        "rule_evaluation": rules_us,
        "rest_of_pipeline": m["pipeline_greedy"]
        - rules_us
        - m["rules_environment"]
        - m["bind_segments"],
        "learned_chooser": m["pipeline_total"] - m["pipeline_greedy"],
        "engine_wrapper": m["engine_decide_total"] - m["pipeline_total"],
    }
    n_rules = len(catalog.segments) + sum(map(len, offer_rules)) / len(profiles)
    total = m["engine_decide_total"]
    return {
        "profiles": len(profiles),
        "pieces": s,
        "derived_mean_us": {k: round(v, 2) for k, v in derived.items()},
        "rules_per_decision": round(n_rules, 2),
        "ns_per_rule": round(rules_us * 1e3 / n_rules, 1),
        "share_of_engine_decide": {
            k: round(v / total, 3)
            for k, v in {**m, **derived}.items()
            if k in ("rules_environment", "bind_segments", *derived)
        },
    }


def incremental_save(engine: Engine, ids: list[str], n: int) -> dict[str, Any]:
    """``engine.snapshot()`` after ``n`` profiles changed, each by one ingested event."""
    at = engine.clock.now()
    touched = ids[:n]
    for k in range(0, len(touched), 1_000):
        engine.ingest(
            [
                Event(
                    message_id=f"touch-{u}",
                    type=EventType.PAGE,
                    timestamp=at,
                    received_at=at,
                    user_id=u,
                    properties={"url": "/"},
                    context={"channel": "web"},
                )
                for u in touched[k : k + 1_000]
            ]
        )
    t = time.perf_counter()
    engine.snapshot()
    return {"profiles_changed": len(touched), "seconds": round(time.perf_counter() - t, 3)}


# ------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("decide", args, "common-expression-language", "starlette", "uvicorn")
    catalog, shape = bench_catalog(args)
    log(
        f"catalog: {len(catalog.segments)} segments, {len(catalog.offers)} offers "
        f"({len(catalog.by_placement[BENCH_PLACEMENT])} in {BENCH_PLACEMENT}, "
        f"{shape['offers_broadened']} broadened), {len(catalog.campaigns)} campaigns; "
        f"learning: {args.learning}"
    )
    built = build_engine_with_profiles(catalog, args)
    engine, ids = built.engine, built.ids
    rng = random.Random(args.seed)

    def draw(k: int) -> list[str]:
        return [ids[rng.randrange(len(ids))] for _ in range(k)]

    learning = args.learning != "none"
    train_start = built.clock.now()
    training = decide_learning.train(engine, built.clock, ids, args) if learning else None
    counts = count_work(engine, catalog, draw(args.count_sample))
    log(
        f"per decision: {counts['rules_per_decision']} rules, "
        f"{counts['candidates_scored_per_decision']} candidates scored, "
        f"{counts['candidates_to_chooser_per_decision']} offered to the chooser"
    )
    users = draw(args.decisions)
    decide = time_calls(lambda u: engine.decide(REQUEST, user_id=u), users, draw(args.warmup))
    baseline = time_calls(engine.profile, users)
    greedy_run = None
    if learning:
        greedy_run = time_calls(lambda u: engine.decide(REQUEST, user_id=u, choose=greedy), users)
    log(f"timed {len(users):,} decisions: p50 {decide['p50_us']} us, p99 {decide['p99_us']} us")
    split = cost_split(engine, catalog, users[: args.split_sample])
    profiled = draw(args.profile_decisions)
    hot = cprofile_top(
        lambda: [engine.decide(REQUEST, user_id=u) for u in profiled],
        len(profiled),
        "decision",
        args.out / f"{args.name}_profile.txt",
    )
    engine.flush()
    learned = (
        decide_learning.after_timing(engine, built.clock, ids, users, args) if learning else {}
    )
    built.memory["incremental_save_10k"] = incremental_save(engine, ids, min(10_000, len(ids)))
    outcomes = (
        decide_outcomes.run(engine, built.clock, ids, train_start, args) if args.outcomes else None
    )

    print()
    print(kv_table(f"Work per decision ({BENCH_PLACEMENT}, counted from decisions)", counts))
    print()
    print(kv_table(f"Profiles ({len(ids):,}, built by {built.build['mode']})", built.memory))
    rows: list[tuple[str, dict[str, Any]]] = [("engine.decide", decide)]
    rows.append(("baseline: engine.profile (lock+resolve+get)", baseline))
    if greedy_run is not None:
        rows.append(("engine.decide, choose=greedy (learner bypassed), same run", greedy_run))
    print()
    print(
        table(
            f"Latency per call, microseconds ({len(users):,} calls, single thread)",
            ["call", "mean", "p50", "p90", "p99", "p99.9", "max", "calls/s"],
            [[label, *[r[k] for k in QUANTILES], r["calls_per_s"]] for label, r in rows]
            + [["ratio decide / baseline", *ratios(decide, baseline).values(), None]],
        )
    )
    print(f"GC during timed decisions: {decide['gc']}")
    print()
    print(
        table(
            f"Cost split, us per decision ({split['profiles']:,} profiles, "
            f"{split['rules_per_decision']} rules, {split['ns_per_rule']} ns/rule)",
            ["piece", "mean", "p50", "p99"],
            [[k, v["mean_us"], v["p50_us"], v["p99_us"]] for k, v in split["pieces"].items()]
            + [
                [f"{k} (by difference)", v, None, None] for k, v in split["derived_mean_us"].items()
            ],
        )
    )
    print()
    print(
        table(
            "cProfile: top 25 by cumulative time (us per decision)",
            ["function", "calls", "own", "cum"],
            [[r["function"][-70:], *list(r.values())[1:]] for r in hot],
        )
    )
    if learning:
        decide_learning.report(training, learned)
    if outcomes is not None:
        decide_outcomes.report(outcomes)
    run.write(
        {
            "learning": args.learning,
            "catalog": {**shape, "placement": BENCH_PLACEMENT},
            "work_per_decision": counts,
            "profiles": {**built.build, **built.memory},
            "latency": {
                "decide": decide,
                "baseline_trivial_call": baseline,
                "baseline_call": "engine.profile(user_id): lock + identity resolve + dict get",
                "ratio_to_baseline": ratios(decide, baseline),
            },
            "cost_split": split,
            "training": training,
            "decide_choose_greedy_same_run": greedy_run,
            "ratio_learned_to_greedy": None if greedy_run is None else ratios(decide, greedy_run),
            **learned,
            "with_outcomes": outcomes,
            "cprofile_top25_cumulative": hot,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
