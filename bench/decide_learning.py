"""``bench/decide.py --learning contextual|bayes``: the learning phases.

* Training, before anything is counted or timed: ``--train-decisions`` decisions over
  ``--train-minutes`` of engine time answered through ``engine.ingest`` with a
  ``Promotion Viewed`` for every item and a ``Promotion Clicked`` for about ``--click-rate``
  of them (a hidden rate per offer x position x interest in the offer's topic), then the
  clock past the 30-minute click window and one more event, so the waiting views are learned
  as misses.
* After the timed loops (``after_timing``): the learned chooser's pieces (customer
  features, ``predict_many``, the whole ``Learner.choose``); the learner's state (bytes,
  ``to_state`` / ``from_state`` time, memory); and one feedback event's learning cost:
  ``Learner.observe`` of a click and of a view, a view expiring in ``Learner.advance``,
  ``learn_one`` alone (on a copy of the engine's learner, ``Learner.from_state``: a pure
  object), and a whole ``engine.ingest`` of one event on the in-memory stores and on SQLite
  synchronous=FULL, next to a non-feedback event.
* The honest control exposure (issue #18, item 3; ``control_counterfactual``): in this
  process, on the same customers, ``engine.decide`` as it is (a control customer's withheld
  offers judged by a counterfactual choice of the learned policy, its scores kept for the
  real choice) against ``engine.decide`` with them judged by the prior's order (the code
  before: a chooser answering counterfactual calls greedily), one call of each per customer,
  the order alternating; and, on one learner state with the same decision ids, how often
  the two rules log a different control exposure.

Also used by ``learn_ab.py`` (``feedback_event``, ``fresh_decisions``, ``train``).
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

from _common import (
    engine_with_rows,
    fs_type,
    kv_table,
    latency_summary,
    log,
    parts_summary,
    rss_bytes,
    table,
)
from catalog_gen import BENCH_PLACEMENT
from decide_setup import Built, bench_catalog, build_engine_with_profiles
from nextbest.bootstrap import open_stores
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide.model import ChoiceContext, Decision, DecisionRequest
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decide.pipeline import greedy
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.learn.contextual import ContextualLogistic
from nextbest.learn.features import customer_features
from nextbest.learn.learner import PRIOR, Learner, customer_part
from nextbest.learn.model import DEFAULT_PRIOR_MEAN, OfferRef, load_model
from nextbest.store.snapshot import profile_row

__all__ = [
    "add_args",
    "after_timing",
    "feedback_event",
    "fresh_decisions",
    "offer_ref",
    "prior_offset",
    "report",
    "train",
]

REQUEST = DecisionRequest(placement=BENCH_PLACEMENT)
#: examination by position of the hidden click model used for training (position-based)
THETA = (1.0, 0.6, 0.4)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--train-decisions", type=int, default=20_000, help="decisions fed back")
    ap.add_argument("--train-minutes", type=float, default=120.0, help="engine time spanned")
    ap.add_argument("--click-rate", type=float, default=0.02, help="target click share of views")
    ap.add_argument("--learn-cost-events", type=int, default=2_000, help="timed events per cost")
    ap.add_argument(
        "--learn-cost-sqlite-events", type=int, default=500, help="timed events on SQLite"
    )


# ------------------------------------------------------------------ events and decisions
#: the engine writes who sent feedback on it (issue 16: ``Event.key_id``, ``Event.origin``)
STAMPED = "origin" in Event.__struct_fields__
#: network origins feedback is drawn from: twice the trust counters' default cap, so the
#: timed counting finds its table full and forgets one origin per new one
ORIGINS = 100_000


def _sender(decision_id: str) -> dict[str, str]:
    """Who sent feedback answering ``decision_id``, as the HTTP face would write it: one
    browser key, one of ``ORIGINS`` networks; nothing on a checkout without the fields."""
    if not STAMPED:
        return {}
    h = zlib.crc32(decision_id.encode()) % ORIGINS
    return {"key_id": "browser:00000000bench", "origin": f"45.{h // 256}.{h % 256}.0/24"}


def feedback_event(name: str, user_id: str, d: Decision, offer_id: str, at: float) -> Event:
    """One ``Promotion Viewed / Clicked`` as parse would produce it, answering ``d``, with
    its key and network origin where the engine reads them."""
    position = next(i.position for i in d.items if i.offer_id == offer_id)
    return Event(
        message_id=f"{name.split()[-1].lower()}-{d.decision_id}-{offer_id}",
        type=EventType.TRACK,
        name=name,
        timestamp=at,
        received_at=at,
        user_id=user_id,
        properties={"promotion_id": offer_id, "decision_id": d.decision_id, "position": position},
        context={"channel": "web"},
        **_sender(d.decision_id),  # type: ignore[arg-type]
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


def fresh_decisions(
    engine: Engine, ids: list[str], rng: random.Random, n: int
) -> list[tuple[str, Decision]]:
    """``n`` decisions with items for random customers, flushed to the decision log."""
    out: list[tuple[str, Decision]] = []
    while len(out) < n:
        uid = ids[rng.randrange(len(ids))]
        d = engine.decide(REQUEST, user_id=uid)
        if d.items:
            out.append((uid, d))
    engine.flush()
    return out


def offer_ref(catalog: Catalog, offer_id: str, placement: str) -> OfferRef:
    """What a model knows of an offer (as ``Learner`` builds it)."""
    o = catalog.offers[offer_id]
    campaign = o.campaign.id if o.campaign else None
    return OfferRef(
        offer_id=o.id, placement=placement, topic=o.topic, kind=o.kind, campaign_id=campaign
    )


def prior_offset(prior: float | None) -> float:
    """The logged prior's log-odds over a fresh model's base rate, as ``Learner`` computes it
    (a copy: the learner keeps it private)."""
    if prior is None:
        return 0.0
    p = min(max(prior, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p)) - math.log(DEFAULT_PRIOR_MEAN / (1.0 - DEFAULT_PRIOR_MEAN))


# ------------------------------------------------------------------ training
def trained_engine(args: argparse.Namespace) -> Built:
    """The engine ``decide.py`` builds (its generated catalog, ``args.profiles`` profiles),
    trained through ``engine.ingest`` with ``--learning``: what the A/B and tail benches
    time."""
    catalog, _ = bench_catalog(args)
    built = build_engine_with_profiles(catalog, args)
    if args.learning != "none":
        train(built.engine, built.clock, built.ids, args)
    return built


class ClickWorld:
    """The hidden click probability of a shown item: a per-offer rate (log-normal around
    ``rate``) x the examination of its position x 2 with interest in the offer's topic."""

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


def train(
    engine: Engine, clock: FixedClock, ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Decisions with realistic feedback through ``engine.ingest``, then every view's click
    window closed, so the model holds what that much traffic teaches it."""
    rng = random.Random(args.seed + 3)
    world = ClickWorld(engine.catalog, args.seed + 5, args.click_rate)
    n, start = args.train_decisions, clock.now()
    step = args.train_minutes * 60.0 / n
    batch: list[Event] = []
    views = clicks = 0
    ingest_ns = 0
    t_start = time.perf_counter()
    for i in range(n):
        clock.set(start + i * step)
        uid = ids[rng.randrange(len(ids))]
        d = engine.decide(REQUEST, user_id=uid)
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
            t = time.perf_counter_ns()
            engine.ingest(batch)
            ingest_ns += time.perf_counter_ns() - t
            batch = []
    train_s = time.perf_counter() - t_start
    waiting = engine.pending_views
    end = clock.now() + 3.0 + 31 * 60.0  # past every click window: one event expires them
    clock.set(end)
    t = time.perf_counter_ns()
    engine.ingest([plain_event(ids[0], end, "train-tick")])
    tick_ns = time.perf_counter_ns() - t
    assert engine.pending_views == 0, engine.pending_views
    engine.flush()
    gc.collect()
    model = next(m.info for m in engine.models() if m.placement == BENCH_PLACEMENT)
    out = {
        "decisions": n,
        "engine_minutes": args.train_minutes,
        "views": views,
        "clicks": clicks,
        "click_share_of_views": round(clicks / max(1, views), 4),
        "seconds": round(train_s, 1),
        "ingest_us_per_feedback_event": round(ingest_ns / 1e3 / max(1, views + clicks), 1),
        "views_waiting_at_end": waiting,
        "tick_ingest_ms": round(tick_ns / 1e6, 2),
        "tick_us_per_expired_view": round(tick_ns / 1e3 / max(1, waiting), 2),
        "learned": engine.learner.learned,
        "model_n_learned": model.n_learned,
        "model_version": model.version,
    }
    log(f"trained in {train_s:.1f} s: {views:,} views, {clicks:,} clicks, {model.version}")
    return out


# ------------------------------------------------------------------ after the timed loops
def chooser_split(engine: Engine, users: list[str]) -> dict[str, Any]:
    """The chooser's pieces, each timed inside a real pipeline run (a learner copy)."""
    catalog = engine.catalog
    learner = Learner.from_state(catalog, engine.model_state())
    model = learner.models[BENCH_PLACEMENT]
    now = engine.clock.now()
    pc = time.perf_counter_ns
    parts: dict[str, list[int]] = {"choose_total": [], "features": [], "predict_many": []}
    candidates: list[int] = []

    def whole(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        t = pc()
        choice = learner.choose(ctx, pool, limit)
        parts["choose_total"].append(pc() - t)
        candidates.append(len(pool))
        return choice

    def pieces(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        t = pc()
        x = customer_features(ctx.profile, catalog.topics, ctx.now, ctx.context, ctx.segments)
        t1 = pc()
        refs = [offer_ref(catalog, c.offer.id, ctx.placement) for c in pool]
        offsets = [prior_offset(c.p_click) for c in pool]
        t2 = pc()
        model.predict_many(x, refs, offsets=offsets)
        parts["features"].append(t1 - t)
        parts["predict_many"].append(pc() - t2)
        return greedy(ctx, pool, limit)

    profiles = [p for p in map(engine.profile, users) if p is not None]
    gc.disable()
    try:
        for chooser in (whole, pieces):
            for n, p in enumerate(profiles):
                run_pipeline(catalog, p, REQUEST, now, f"ls-{n}", chooser)
    finally:
        gc.enable()
    s = parts_summary(parts)
    per = sum(candidates) / len(candidates)
    rest = s["choose_total"]["mean_us"] - s["features"]["mean_us"] - s["predict_many"]["mean_us"]
    return {
        "decisions": len(profiles),
        "candidates_per_decision": round(per, 2),
        "pieces": s,
        "predict_us_per_candidate": round(s["predict_many"]["mean_us"] / per, 2),
        "refs_rank_explore_and_log_us": round(rest, 2),
    }


def model_state(engine: Engine) -> dict[str, Any]:
    """The learner's saved state and what a restored learner holds in memory."""
    catalog = engine.catalog
    to_ms, from_ms = [], []
    for _ in range(5):
        t = time.perf_counter()
        state = engine.model_state()
        to_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        learner = Learner.from_state(catalog, state)
        from_ms.append((time.perf_counter() - t) * 1e3)
    models: dict[str, Any] = {}
    for placement, m in sorted(learner.models.items()):
        body = m.to_state()
        row: dict[str, Any] = {"kind": m.kind.value, "n_learned": m.n_learned}
        row["to_state_bytes"] = len(body)
        if isinstance(m, ContextualLogistic):
            row["weights"] = len(m.weights())
        else:
            row["arms"] = len(m.top_features(1 << 30))
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
    rss0 = rss_bytes()
    copies = [Learner.from_state(catalog, state) for _ in range(5)]
    rss1 = rss_bytes()
    del copies
    return {
        "learner_to_state_bytes": len(state),
        "learner_to_state_ms": round(sorted(to_ms)[2], 2),
        "learner_from_state_ms": round(sorted(from_ms)[2], 2),
        "learner_in_memory_bytes_tracemalloc": traced,
        "learner_rss_delta_bytes_per_copy": round((rss1 - rss0) / 5),
        "pending_views": engine.pending_views,
        "models": models,
    }


def ingest_costs(
    engine: Engine, decided: list[tuple[str, Decision]], at: float, tag: str
) -> dict[str, Any]:
    """Per decision, three ``engine.ingest`` calls of one event each, timed: a non-feedback
    track event (the baseline), the view of the first item, then its click."""
    pc = time.perf_counter_ns
    times: dict[str, list[int]] = {"plain_track_event": [], "promotion_viewed": []}
    times["promotion_clicked"] = []
    gc.disable()
    try:
        for n, (uid, d) in enumerate(decided):
            oid = d.items[0].offer_id
            for kind, e in (
                ("plain_track_event", plain_event(uid, at, f"{tag}-plain-{n}")),
                ("promotion_viewed", feedback_event(EventName.PROMOTION_VIEWED, uid, d, oid, at)),
                ("promotion_clicked", feedback_event(EventName.PROMOTION_CLICKED, uid, d, oid, at)),
            ):
                t = pc()
                engine.ingest([e])
                times[kind].append(pc() - t)
    finally:
        gc.enable()
    return {"events": len(decided), **{k: latency_summary(v) for k, v in times.items()}}


def learning_cost(
    engine: Engine, clock: FixedClock, ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """What one feedback event costs to learn from (module docstring)."""
    catalog = engine.catalog
    learner = Learner.from_state(catalog, engine.model_state())  # a copy: a pure object
    model = learner.models[BENCH_PLACEMENT]
    spec = catalog.placements[BENCH_PLACEMENT].learning
    assert spec is not None
    window = spec.click_window_minutes * 60.0
    rng = random.Random(args.seed + 11)
    k = args.learn_cost_events
    pc = time.perf_counter_ns
    t = clock.now() + 2 * window + 60.0  # the training's bookkeeping left behind
    learner.advance(t)
    clock.set(t)
    parts: dict[str, list[int]] = {
        k: [] for k in ("observe_view_register", "advance_view_expires_as_miss")
    }
    parts["observe_click"], parts["learn_one_click"] = [], []
    views = fresh_decisions(engine, ids, rng, k)
    clicks = fresh_decisions(engine, ids, rng, 2 * k)
    gc.collect()
    gc.disable()  # per-event CPU cost; the GC's share is in the timed decision loop
    try:
        for n, (uid, d) in enumerate(views):
            e = feedback_event(EventName.PROMOTION_VIEWED, uid, d, d.items[0].offer_id, t + n / 1e3)
            s = pc()
            learner.observe(e, d)
            parts["observe_view_register"].append(pc() - s)
        for n in range(k):
            s = pc()
            learner.advance(t + n / 1e3 + window + 5e-4)  # exactly one window closes
            parts["advance_view_expires_as_miss"].append(pc() - s)
        assert learner.pending_views == 0, learner.pending_views
        now = learner.now
        for uid, d in clicks[:k]:  # a click counts only after its view: registered untimed
            oid = d.items[0].offer_id
            learner.observe(feedback_event(EventName.PROMOTION_VIEWED, uid, d, oid, now), d)
        for uid, d in clicks[:k]:
            e = feedback_event(EventName.PROMOTION_CLICKED, uid, d, d.items[0].offer_id, now)
            s = pc()
            learner.observe(e, d)
            parts["observe_click"].append(pc() - s)
        volume = getattr(learner, "volume", None)
        if volume is not None:  # the trust counters, for the same clicks again
            parts["volume_count_click"] = []
            for uid, d in clicks[:k]:
                e = feedback_event(EventName.PROMOTION_CLICKED, uid, d, d.items[0].offer_id, now)
                s = pc()
                volume.count(e)
                parts["volume_count_click"].append(pc() - s)
        for _uid, d in clicks[k:]:
            item = d.items[0]
            x = customer_part(d.features, d.candidates) if model.uses_features else {}
            ref = offer_ref(catalog, item.offer_id, BENCH_PLACEMENT)
            off = prior_offset(d.features.get(PRIOR + item.offer_id))
            s = pc()
            model.learn_one(x, ref, item.position, 1.0, offset=off)
            parts["learn_one_click"].append(pc() - s)
    finally:
        gc.enable()
    out: dict[str, Any] = {"events": k, **{n: latency_summary(v) for n, v in parts.items()}}
    clock.set(now)
    out["engine_ingest_memory"] = ingest_costs(
        engine, fresh_decisions(engine, ids, rng, k), now, "mem"
    )
    # on SQLite synchronous=FULL: the profiles of the customers drawn and the same learner
    with tempfile.TemporaryDirectory(prefix="nextbest-learn-", dir=args.tmpdir) as tmp:
        drawn = [ids[rng.randrange(len(ids))] for _ in range(args.learn_cost_sqlite_events)]
        rows = [profile_row(u, engine.profile(u)) for u in set(drawn)]
        stores = open_stores(str(Path(tmp) / "learn.sqlite"), synchronous="FULL")
        lite, _ = engine_with_rows(catalog, stores, rows, clock, learner=engine.model_state())
        res = ingest_costs(lite, fresh_decisions(lite, drawn, rng, len(drawn)), now, "lite")
        out["engine_ingest_sqlite_full"] = {**res, "fs": fs_type(Path(tmp))}
        lite.release()  # not close(): no snapshot wanted
    return out


def control_counterfactual(engine: Engine, users: list[str]) -> dict[str, Any]:
    """The cost and effect of judging control exposures by the policy in use (docstring)."""
    learner = engine.learner

    def prior_order(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        if ctx.counterfactual:
            return greedy(ctx, pool, limit)  # the code before: the prior's order
        return learner.choose(ctx, pool, limit)

    def honest(u: str) -> Decision:
        return engine.decide(REQUEST, user_id=u)

    def before(u: str) -> Decision:
        return engine.decide(REQUEST, user_id=u, choose=prior_order)

    pc = time.perf_counter_ns
    lat: dict[str, list[int]] = {"honest": [], "prior_order": []}
    held = 0
    for u in users[:200]:  # warm both
        honest(u)
        before(u)
    gc.collect()
    for i, u in enumerate(users):
        pair = (("honest", honest), ("prior_order", before))
        for name, call in pair if i % 2 == 0 else pair[::-1]:
            t = pc()
            d = call(u)
            lat[name].append(pc() - t)
            if name == "honest":
                held += any(e.why.value == "control_group" for e in d.excluded)
    engine.flush()
    # the effect, one learner state, the same decision ids: no budget counted by either
    twin = Learner.from_state(engine.catalog, engine.model_state())
    seen: list[tuple[list[str], list[str]]] = []

    def compare(ctx: ChoiceContext, pool: Any, limit: int) -> Any:
        if ctx.counterfactual:
            ids = [c.offer.id for c in pool]
            by_policy = {ids[i] for i, _ in twin.choose(ctx, pool, limit).picks[:limit]}
            by_prior = set(ids[:limit])
            seen.append((sorted(by_policy), sorted(by_prior)))
        return greedy(ctx, pool, limit)

    now = engine.clock.now()
    n_held = exposed = exposed_prior = differ = 0
    for i, u in enumerate(users):
        profile = engine.profile(u)
        if profile is None:
            continue
        seen.clear()
        d = run_pipeline(engine.catalog, profile, REQUEST, now, f"cf-{i}", compare)
        withheld = {e.offer_id for e in d.excluded if e.why.value == "control_group"}
        if not seen:
            continue
        n_held += 1
        by_policy, by_prior = (set(x) & withheld for x in seen[0])
        exposed += bool(by_policy)
        exposed_prior += bool(by_prior)
        differ += by_policy != by_prior
    out = {
        "decisions": len(users),
        "share_with_a_control_offer": round(held / max(1, len(users)), 4),
        **{k: latency_summary(v) for k, v in lat.items()},
        "effect": {
            "decisions_with_a_control_offer": n_held,
            "exposed_by_the_policy": exposed,
            "exposed_by_the_prior_order": exposed_prior,
            "different_exposure": differ,
        },
    }
    h, p = out["honest"], out["prior_order"]
    log(
        f"control exposure by the policy: decide p50 {h['p50_us']} / p99 {h['p99_us']} us, "
        f"by the prior's order {p['p50_us']} / {p['p99_us']} us (same run, alternating); "
        f"{differ} of {n_held} control decisions log another exposure"
    )
    return out


def after_timing(
    engine: Engine, clock: FixedClock, ids: list[str], users: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The phases after the timed loops (module docstring)."""
    split = chooser_split(engine, users[: args.split_sample])
    state = model_state(engine)
    log(f"learner state {state['learner_to_state_bytes']:,} B; measuring learning costs")
    cost = learning_cost(engine, clock, ids, args)
    engine.flush()
    control = control_counterfactual(engine, users[: args.split_sample])
    return {
        "chooser_split": split,
        "model_state": state,
        "learning_cost_per_event": cost,
        "control_counterfactual": control,
    }


def report(training: dict[str, Any] | None, learned: dict[str, Any]) -> None:
    """Tables for the learning phases."""
    if training is not None:
        print()
        print(kv_table("Training through engine.ingest (before counting and timing)", training))
    split = learned["chooser_split"]
    print()
    print(
        table(
            f"Learned chooser pieces, us per decision ({split['decisions']:,} decisions, "
            f"{split['candidates_per_decision']} candidates each)",
            ["piece", "mean", "p50", "p99"],
            [[k, *v.values()] for k, v in split["pieces"].items()]
            + [
                [
                    "rest: refs, rank, explore, log",
                    split["refs_rank_explore_and_log_us"],
                    None,
                    None,
                ]
            ],
        )
    )
    cost = learned["learning_cost_per_event"]
    keys = ("p50_us", "p90_us", "p99_us", "p99_9_us", "max_us", "mean_us")
    rows = [
        [k, *[v[q] for q in keys]] for k, v in cost.items() if isinstance(v, dict) and keys[0] in v
    ]
    for store in ("engine_ingest_memory", "engine_ingest_sqlite_full"):
        for kind, v in cost[store].items():
            if isinstance(v, dict):
                rows.append([f"{store}: {kind}", *[v[q] for q in keys]])
    print()
    print(
        table(
            f"Learning cost per feedback event, us ({cost['events']:,} events each; SQLite "
            f"{cost['engine_ingest_sqlite_full']['events']:,} on "
            f"{cost['engine_ingest_sqlite_full']['fs']})",
            ["what", "p50", "p90", "p99", "p99.9", "max", "mean"],
            rows,
        )
    )
    control = learned["control_counterfactual"]
    keys = ("p50_us", "p90_us", "p99_us", "p99_9_us", "max_us", "mean_us")
    print()
    print(
        table(
            f"engine.decide, control exposure judged by the policy in use vs the prior's order "
            f"(same run, alternating; {control['share_with_a_control_offer']:.0%} of decisions "
            f"hold a control offer back), us",
            ["rule", "p50", "p90", "p99", "p99.9", "max", "mean"],
            [[k, *[control[k][q] for q in keys]] for k in ("honest", "prior_order")],
        )
    )
    print(kv_table("Control exposures, the two rules on the same decisions", control["effect"]))
    state = learned["model_state"]
    print()
    print(kv_table("Model state", {k: v for k, v in state.items() if k != "models"}))
    for placement, m in state["models"].items():
        print(f"  {placement}: {m}")
