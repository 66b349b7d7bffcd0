"""Benchmark: the propensity models of ``nextbest.learn``, River against Vowpal Wabbit.

    .venv/bin/python bench/learn.py            # full run (~1-2 min)
    .venv/bin/python bench/learn.py --quick    # smoke run (~15 s)

What it does, in order:

1. **Quality.** A seeded synthetic stream with a known ground truth: customers' features in
   ``learn.features``' format (interests, counts, trend and funnel in 0-4 of 8 topics,
   products, segments, lifecycle, device, channel, hour of week); 40 offers over the 8 topics
   in a 3-slot placement. A click happens with probability ``theta_k * sigmoid(logit)``, a
   position-based model (``theta = 1, .6, .4``), where the logit sums an offer base rate, the
   customer's interest and funnel stage in the offer's topic, interest in one related topic,
   segment x offer effects, an owned product of the topic (negative) and device x topic
   effects. Offers and positions are logged uniformly at random, as a fully exploring
   policy would. Each model learns the first ``--train`` events one at a time, then
   predicts the ``--test`` events after them: log loss and AUC at the logged position, next
   to the log loss of the true probabilities (the floor) and of the training click rate;
   and, ranking 20 random candidates at position 1 for held-out customers, the share of the
   oracle's true click probability that the model's top pick gets (``top1_share``).
2. **Cost.** Scoring 20 candidates for one customer (features given) and ``learn_one``,
   p50/p99 over timed loops after a warm-up; then the learning part of a decision: features
   from a real ``Profile`` (8 topics) + scoring 20 candidates + ``explore.rank`` into 3
   slots, per model and exploration policy.
3. **State.** ``to_state`` bytes and the in-memory size (tracemalloc, after
   ``from_state``) for 50 offers x 4 placements after 100k events (20k with ``--quick``).

``river-sgd`` is the engine's ``ContextualLogistic`` (River's SGD step on per-topic and
per-offer weight views); ``river-lib`` is River's own ``LogisticRegression`` on the same
crossed names (the same weights, to the last bits), to show what the views save.

Vowpal Wabbit is measured when ``vowpalwabbit`` imports (``pip install vowpalwabbit``), in
two forms: ``vw-same``, the very features River gets (``contextual.crossed``) as text;
and ``vw-q``, VW's own namespaces (customer ``c``, own-topic ``w``, offer ``o``, position
``p``) crossed natively (``-q co -q wo``), its best case for speed.

Results: ``bench/results/learn.json`` (``learn_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from _common import (
    T0,
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
from nextbest.learn import explore
from nextbest.learn.bayes import BetaBernoulli
from nextbest.learn.contextual import OFFSET, ContextualConfig, ContextualLogistic, crossed
from nextbest.learn.features import Features, customer_features
from nextbest.learn.model import OfferRef
from nextbest.profile.model import FunnelStage, Profile, Session, TopicInterest
from nextbest.profile.topics import TopicSpec

DAY = 86_400.0
THETA = (1.0, 0.6, 0.4)
SLOTS = len(THETA)
PLACEMENT = "home"
LIFECYCLES = ("young_adult", "starter", "family", "established", "pre_retirement", "retired")
DEVICES = ("mobile", "desktop", "tablet")
#: -l 0.25: the best of 0.1, 0.25, 0.5 (VW's default), 1 and 2 on this stream
VW_ARGS = "--loss_function logistic --link logistic -b 22 -l 0.25 --quiet"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=100_000, help="events learned")
    ap.add_argument("--test", type=int, default=20_000, help="held-out events")
    ap.add_argument("--timed", type=int, default=5_000, help="timed calls per cost figure")
    ap.add_argument("--warmup", type=int, default=500, help="untimed calls first")
    ap.add_argument("--state-events", type=int, default=100_000, help="events for the state")
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--no-vw", action="store_true", help="skip Vowpal Wabbit")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.timed, args.warmup = 20_000, 5_000, 1_000, 200
        args.state_events = 20_000
    return args


# ------------------------------------------------------------------ the synthetic world
def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


class World:
    """Offers, a hidden click model and a customer generator, all from one seed."""

    def __init__(self, seed: int, n_topics: int = 8, n_offers: int = 40, n_segments: int = 12):
        rng = random.Random(seed)
        self.topics = [f"t{i}" for i in range(n_topics)]
        self.segments = [f"s{i}" for i in range(n_segments)]
        self.products = [f"p{i}" for i in range(6)]  # p_i is a product of topic t_i
        self.offers = [
            OfferRef(offer_id=f"o{j:02d}", placement=PLACEMENT, topic=self.topics[j % n_topics])
            for j in range(n_offers)
        ]
        self.base = [rng.gauss(-3.0, 0.6) for _ in self.offers]
        self.segment_effect = {
            (s, j): rng.gauss(0.0, 0.9)
            for s in self.segments
            for j in range(n_offers)
            if rng.random() < 0.3
        }
        self.device_effect = {(d, t): rng.gauss(0.0, 0.4) for d in DEVICES for t in self.topics}
        self.related = {t: self.topics[(i + 1) % n_topics] for i, t in enumerate(self.topics)}

    def customer(self, rng: random.Random) -> Features:
        x: Features = {"bias": 1.0}
        for t in rng.sample(self.topics, rng.randint(0, 4)):
            x["interest:" + t] = math.log1p(rng.expovariate(0.6))
            c30 = rng.randint(1, 12)
            c7 = rng.randint(0, c30)
            before = rng.randint(0, c30 - c7)
            if c7:
                x["count7:" + t] = math.log1p(c7)
            x["count30:" + t] = math.log1p(c30)
            x["trend:" + t] = math.log((c7 + 1.0) / (before + 1.0))
            if rng.random() < 0.3:
                x["funnel:" + t] = rng.randint(1, 4) / 5.0
        for p in self.products:
            if rng.random() < 0.2:
                x["product:" + p] = 1.0
        for s in self.segments:
            if rng.random() < 0.2:
                x["segment:" + s] = 1.0
        x["lifecycle:" + rng.choice(LIFECYCLES)] = 1.0
        x["device:" + rng.choice(DEVICES)] = 1.0
        x["channel:" + rng.choice(("web", "app"))] = 1.0
        x["how:" + rng.choice(("wd", "we")) + str(rng.randrange(4))] = 1.0
        return x

    def relevance(self, x: Features, j: int) -> float:
        """P(click | examined): the hidden truth."""
        t = self.offers[j].topic
        assert t is not None
        z = self.base[j]
        z += 1.2 * x.get("interest:" + t, 0.0) + 1.5 * x.get("funnel:" + t, 0.0)
        z += 0.6 * x.get("interest:" + self.related[t], 0.0)
        for key in x:
            if key.startswith("segment:"):
                z += self.segment_effect.get((key[8:], j), 0.0)
            elif key.startswith("device:"):
                z += self.device_effect[(key[7:], t)]
        i = self.topics.index(t)
        if i < len(self.products) and "product:" + self.products[i] in x:
            z -= 1.5
        return sigmoid(z)

    def stream(self, seed: int, n: int) -> list[tuple[Features, int, int, float, float]]:
        """(features, offer index, position, reward, true P(click)), uniformly logged."""
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            x = self.customer(rng)
            j = rng.randrange(len(self.offers))
            k = rng.randint(1, SLOTS)
            p = THETA[k - 1] * self.relevance(x, j)
            out.append((x, j, k, 1.0 if rng.random() < p else 0.0, p))
        return out


# ------------------------------------------------------------------ the learners
class Learner(Protocol):
    def predict_one(self, x: Features, offer: OfferRef, position: int = 1) -> float: ...
    def predict_many(
        self, x: Features, offers: list[OfferRef], position: int = 1
    ) -> list[float]: ...
    def learn_one(self, x: Features, offer: OfferRef, position: int, reward: float) -> None: ...


_VW_NAMES: dict[str, str] = {}


def vw_name(name: str) -> str:
    out = _VW_NAMES.get(name)
    if out is None:
        out = _VW_NAMES[name] = name.replace(":", "=").replace("|", "!").replace(" ", "_")
    return out


def vw_features(z: Features) -> str:
    return " ".join(f"{vw_name(k)}:{v:.6g}" for k, v in z.items())


class RiverLib:
    """River's own ``LogisticRegression`` on ``crossed`` names: what ``ContextualLogistic``
    computes step for step (``tests/conformance/test_river_contextual.py``), called the
    library's way, to measure what the weight views save."""

    def __init__(self) -> None:
        from river import linear_model, optim
        from river.utils import VectorDict

        c = ContextualConfig()
        self.model: Any = linear_model.LogisticRegression(
            optimizer=optim.SGD(c.lr),
            l2=c.l2,
            intercept_init=math.log(c.prior_mean / (1.0 - c.prior_mean)),
            intercept_lr=c.intercept_lr,
        )
        self.model._weights = VectorDict({OFFSET: 1.0})

    def predict_one(self, x: Features, offer: OfferRef, position: int = 1) -> float:
        return float(self.model.predict_proba_one(crossed(x, offer, position))[True])

    def predict_many(self, x: Features, offers: list[OfferRef], position: int = 1) -> list[float]:
        return [self.predict_one(x, o, position) for o in offers]

    def learn_one(self, x: Features, offer: OfferRef, position: int, reward: float) -> None:
        self.model.learn_one(crossed(x, offer, position), reward == 1.0)


class VWSame:
    """Vowpal Wabbit on exactly River's features (``contextual.crossed``), as text."""

    def __init__(self, extra: str = "") -> None:
        import vowpalwabbit

        self.vw = vowpalwabbit.Workspace(f"{VW_ARGS} {extra}")
        self.n = 0

    def predict_one(self, x: Features, offer: OfferRef, position: int = 1) -> float:
        return self.predict_many(x, [offer], position)[0]

    def predict_many(self, x: Features, offers: list[OfferRef], position: int = 1) -> list[float]:
        return [
            float(self.vw.predict("|f " + vw_features(z)))
            for z in (crossed(x, o, position) for o in offers)
        ]

    def learn_one(self, x: Features, offer: OfferRef, position: int, reward: float) -> None:
        z = crossed(x, offer, position)
        self.vw.learn(("1" if reward else "-1") + " |f " + vw_features(z))
        self.n += 1


class VWQuadratic:
    """Vowpal Wabbit with its own namespaces, crossed natively: ``-q co -q wo``."""

    OWN = ("interest", "count7", "count30", "trend", "funnel")

    def __init__(self, extra: str = "") -> None:
        import vowpalwabbit

        self.vw = vowpalwabbit.Workspace(f"{VW_ARGS} -q co -q wo {extra}")
        self.n = 0

    def _customer(self, x: Features) -> str:
        return "|c " + " ".join(f"{vw_name(k)}:{v:.6g}" for k, v in x.items() if k != "bias")

    def _offer(self, x: Features, offer: OfferRef, position: int) -> str:
        topic = offer.topic or "-"
        own = " ".join(f"{f}:{x[f + ':' + topic]:.6g}" for f in self.OWN if f + ":" + topic in x)
        pos = f" |p pos={offer.placement}={position}" if position > 1 else ""
        return f" |w {own} |o offer={offer.offer_id} topic={topic} placement={offer.placement}{pos}"

    def predict_one(self, x: Features, offer: OfferRef, position: int = 1) -> float:
        return self.predict_many(x, [offer], position)[0]

    def predict_many(self, x: Features, offers: list[OfferRef], position: int = 1) -> list[float]:
        c = self._customer(x)
        return [float(self.vw.predict(c + self._offer(x, o, position))) for o in offers]

    def learn_one(self, x: Features, offer: OfferRef, position: int, reward: float) -> None:
        label = "1 " if reward else "-1 "
        self.vw.learn(label + self._customer(x) + self._offer(x, offer, position))
        self.n += 1


# ------------------------------------------------------------------ metrics
def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    sp = p[order]
    i = 0
    while i < len(sp):
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def quality(
    world: World, learners: dict[str, Learner], train: list[Any], test: list[Any], seed: int
) -> dict[str, dict[str, Any]]:
    y = np.array([e[3] for e in test])
    truth = np.array([e[4] for e in test])
    base_rate = sum(e[3] for e in train) / len(train)
    out: dict[str, dict[str, Any]] = {
        "truth": {"log_loss": log_loss(truth, y), "auc": auc(truth, y), "top1_share": 1.0},
        "base-rate": {"log_loss": log_loss(np.full(len(y), base_rate), y), "auc": 0.5},
    }
    rng = random.Random(seed)
    picks = []
    for _ in range(2_000):
        x = world.customer(rng)
        cands = rng.sample(range(len(world.offers)), 20)
        picks.append((x, cands, [world.relevance(x, j) for j in cands]))
    oracle = sum(max(rel) for _, _, rel in picks)
    for name, model in learners.items():
        t = time.perf_counter()
        for x, j, k, r, _ in train:
            model.learn_one(x, world.offers[j], k, r)
        learn_s = time.perf_counter() - t
        p = np.array([model.predict_one(x, world.offers[j], k) for x, j, k, _, _ in test])
        got = 0.0
        for x, cands, rel in picks:
            scores = model.predict_many(x, [world.offers[j] for j in cands])
            got += rel[max(range(len(cands)), key=lambda i: (scores[i], -i))]
        out[name] = {
            "log_loss": log_loss(p, y),
            "auc": auc(p, y),
            "top1_share": got / oracle,
            "learn_s": learn_s,
        }
        log(f"quality {name}: {out[name]}")
    return out


# ------------------------------------------------------------------ cost
def time_calls(fn: Callable[[int], object], n: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        fn(i)
    ns = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            t = clock()
            fn(i)
            ns.append(clock() - t)
    finally:
        gc.enable()
    return latency_summary(ns)


def real_profile(rng: random.Random, topics: dict[str, TopicSpec]) -> Profile:
    interests = {}
    for t in topics:
        hits = sorted(T0 - rng.random() * 40 * DAY for _ in range(rng.randint(1, 12)))
        interests[t] = TopicInterest(
            score=rng.random() * 5,
            score_at=hits[-1],
            hits=hits,
            total=len(hits),
            first_seen=hits[0],
            last_seen=hits[-1],
        )
    return Profile(
        customer_id=f"c{rng.randrange(10**9)}",
        interests=interests,
        funnel={"t1": FunnelStage.CONSIDERING},
        products=["p1", "p3"],
        traits={"age": rng.randint(18, 80)},
        session=Session(started=T0, last_seen=T0, channel="web"),
    )


def cost(
    world: World, learners: dict[str, Learner], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    rng = random.Random(args.seed + 7)
    customers = [world.customer(rng) for _ in range(500)]
    cand_sets = [rng.sample(world.offers, 20) for _ in range(500)]
    events = world.stream(args.seed + 8, args.timed + args.warmup)
    out: dict[str, dict[str, Any]] = {}
    for name, model in learners.items():

        def predict(i: int, model: Learner = model) -> object:
            return model.predict_many(customers[i % 500], cand_sets[i % 500])

        def learn(i: int, model: Learner = model) -> None:
            x, j, k, r, _ = events[i]
            model.learn_one(x, world.offers[j], k, r)

        out[name] = {
            "predict_20": time_calls(predict, args.timed, args.warmup),
            "learn_one": time_calls(learn, args.timed, args.warmup),
        }
        log(
            f"cost {name}: predict 20 p50 {out[name]['predict_20']['p50_us']} us, "
            f"learn p50 {out[name]['learn_one']['p50_us']} us"
        )
    return out


def decision_cost(
    world: World, bayes: BetaBernoulli, ctx: ContextualLogistic, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """features from a real Profile + score 20 candidates + rank 3 slots (1 service item)."""
    topics = {t: TopicSpec(id=t, name=t.upper()) for t in world.topics}
    rng = random.Random(args.seed + 9)
    profiles = [real_profile(rng, topics) for _ in range(200)]
    cand_sets = [rng.sample(world.offers, 20) for _ in range(200)]
    candidates = [explore.RankEntry(urgent=i == 0) for i in range(20)]
    value = [1.0] * 20
    context = {"device": {"type": "mobile"}}
    segments = ["s1", "s4"]

    def run(model: Any, policy: explore.Policy) -> Callable[[int], object]:
        def one(i: int) -> object:
            x = customer_features(profiles[i % 200], topics, T0, context, segments)
            offers = cand_sets[i % 200]
            scores = model.predict_many(x, offers)
            post = None
            if isinstance(policy, explore.Thompson):
                ab = [model.posterior(o) for o in offers]
                post = explore.BetaScores([a for a, _ in ab], [b for _, b in ab], value)
            return explore.rank(
                candidates, scores, SLOTS, policy, random.Random(i), thompson=post, seed=i
            )

        return one

    runs = {
        "bayes+thompson": run(bayes, explore.Thompson()),
        "bayes+epsilon": run(bayes, explore.EpsilonGreedy(0.05)),
        "river+epsilon": run(ctx, explore.EpsilonGreedy(0.05)),
        "river+softmax": run(ctx, explore.Softmax(0.02)),
        "river+greedy": run(ctx, explore.Greedy()),
    }
    out = {}
    for name, fn in runs.items():
        out[name] = time_calls(fn, args.timed, args.warmup)
        log(f"decision {name}: p50 {out[name]['p50_us']} us, p99 {out[name]['p99_us']} us")
    x = customer_features(profiles[0], topics, T0, context, segments)
    out["features_only"] = time_calls(
        lambda i: customer_features(profiles[i % 200], topics, T0, context, segments),
        args.timed,
        args.warmup,
    )
    out["features_only"]["keys"] = float(len(x))
    return out


def state_size(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """50 offers x 4 placements, every arm seen."""
    world = World(args.seed + 11, n_offers=50)
    placements = ["home", "product", "app_home", "email"]
    rng = random.Random(args.seed + 12)
    out: dict[str, dict[str, float]] = {}
    models: dict[str, Any] = {"bayes": BetaBernoulli(), "river": ContextualLogistic()}
    stream = world.stream(args.seed + 13, args.state_events)
    for x, j, k, r, _ in stream:
        o = world.offers[j]
        offer = OfferRef(offer_id=o.offer_id, placement=rng.choice(placements), topic=o.topic)
        for m in models.values():
            m.learn_one(x, offer, k, r)
    for name, m in models.items():
        blob = m.to_state()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        restored = type(m).from_state(blob)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert restored.to_state() == blob
        params = len(restored.top_features(10**9)) - (name == "river")  # arms, or weights
        out[name] = {
            "state_bytes": len(blob),
            "memory_bytes": after - before,
            "parameters": params,
            "events": len(stream),
        }
        log(f"state {name}: {out[name]}")
    return out


def vw_available() -> str | None:
    try:
        import vowpalwabbit
    except ImportError:
        return None
    return str(getattr(vowpalwabbit, "__version__", "?"))


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    info = machine_info()
    log(f"learn benchmark: {command_line()}")
    log(f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}")
    vw_version = None if args.no_vw else vw_available()
    log(f"vowpalwabbit: {vw_version or 'not installed: skipped'}")

    world = World(args.seed)
    train = world.stream(args.seed + 1, args.train)
    test = world.stream(args.seed + 2, args.test)

    def learners() -> dict[str, Learner]:
        found: dict[str, Learner] = {
            "bayes": BetaBernoulli(),
            "river-sgd": ContextualLogistic(),
            "river-lib": RiverLib(),
        }
        if vw_version:
            found["vw-same"] = VWSame()
            found["vw-q"] = VWQuadratic()
        return found

    models = learners()
    q = quality(world, models, train, test, args.seed + 3)
    c = cost(world, models, args)
    bayes = models["bayes"]
    ctx = models["river-sgd"]
    assert isinstance(bayes, BetaBernoulli)
    assert isinstance(ctx, ContextualLogistic)
    q["bayes"]["examination"] = bayes.examination(PLACEMENT, SLOTS)
    q["truth"]["examination"] = list(THETA)
    log(f"examination: estimated {q['bayes']['examination']}, true {list(THETA)}")
    d = decision_cost(world, bayes, ctx, args)
    s = state_size(args)
    if vw_version:
        vw = models["vw-q"]
        assert isinstance(vw, VWQuadratic)
        s["vw-q"] = {"state_bytes": float(vw.vw.num_weights() * 4 * vw.vw.get_stride())}

    rows = []
    for name in q:
        cq = c.get(name, {})
        rows.append(
            [
                name,
                f"{q[name]['log_loss']:.4f}",
                f"{q[name]['auc']:.4f}",
                f"{q[name]['top1_share']:.3f}" if "top1_share" in q[name] else "-",
                cq.get("predict_20", {}).get("p50_us", float("nan")),
                cq.get("predict_20", {}).get("p99_us", float("nan")),
                cq.get("learn_one", {}).get("p50_us", float("nan")),
                cq.get("learn_one", {}).get("p99_us", float("nan")),
            ]
        )
    print()
    print(
        table(
            f"quality ({args.train:,} events learned, {args.test:,} held out) and cost (us)",
            [
                "model",
                "log loss",
                "AUC",
                "top-1 share",
                "p50 20",
                "p99 20",
                "p50 learn",
                "p99 learn",
            ],
            rows,
        )
    )
    print()
    print(
        table(
            "learning part of a decision: features + 20 candidates + rank 3 slots (us)",
            ["run", "p50", "p90", "p99", "max"],
            [[k, v["p50_us"], v["p90_us"], v["p99_us"], v["max_us"]] for k, v in d.items()],
        )
    )
    print()
    print(
        table(
            "model state, 50 offers x 4 placements",
            ["model", "state bytes", "in memory", "parameters"],
            [
                [
                    k,
                    v["state_bytes"],
                    v.get("memory_bytes", float("nan")),
                    v.get("parameters", float("nan")),
                ]
                for k, v in s.items()
            ],
        )
    )
    payload = {
        "benchmark": "learn",
        "date": now_iso(),
        "command": command_line(),
        "machine": info,
        "load_average_end": load_average(),
        "versions": {**versions("river", "numpy", "msgspec"), "vowpalwabbit": vw_version},
        "params": vars(args),
        "vw_args": VW_ARGS,
        "quality": q,
        "cost": c,
        "decision": d,
        "state": s,
        "seconds": round(time.perf_counter() - started, 1),
    }
    path = write_results("learn_quick" if args.quick else "learn", payload)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
