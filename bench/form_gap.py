"""Is nextbest's gap to the observable ceiling its model's FORM or its DATA? (issue #14)

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/form_gap.py \\
        --worlds generic_service,hidden_needs --seed 1 --log-customers 4000 --online
    .venv/bin/python bench/form_gap.py --worlds shelf --log-customers 200 --customers 50 \\
        --days 3 --iterations 10 --sets base,all --run-sets base  # smoke

Per world, on ``bench/ceiling.py``'s machinery (the same random logging policy, population
seed ``--log-seed``, true P(click at position 1) and P(convert | click) of every candidate):

1. **Logged beside the ceiling's features**: each candidate's input to nextbest's click
   model, exactly as the engine builds it (``customer_features`` as ``Learner._score`` calls
   it, the candidate's ``offer_history``, ``contextual.crossed`` at position 1, and the
   catalog prior's log-odds ``offset``), plus candidate crosses the engine does not have
   (``GROUPS``, each name prefixed ``<group>|``: own-topic bins, impressions as a category,
   impressions x own-topic activity, an own-topic activity gate, own-topic pairs, a finer
   age band crossed with the offer).
2. **Fitted offline with ample data**: a logistic regression of nextbest's form (one weight
   per crossed name plus an intercept, the same names the online model learns) on soft
   labels, the true P(click): log loss summed over the training customers' rows, L2
   ``--l2`` per row, full batch by L-BFGS (``scipy.optimize``) to convergence; a *set* of
   crosses (``--sets``: ``base`` is nextbest's form, ``all`` every group, ``+g`` one group
   added, ``-g`` all but one) is fitted on the same rows. Beside it, the ceiling's trees
   (``HistGradientBoostingRegressor`` on the ceiling's features, offer categorical): on
   P(click) x P(convert | click) (the ceiling), on P(click) and on P(convert | click).
   Held-out (every fifth customer): R² of P(click) and of its logit, and the share of the
   true objective the fitted order's first offer gets (``top1``), per model.
3. **Judged** as the ceiling is (``run_policy``, ``--customers`` x ``--days``, seed
   ``--seed``, cold start): ``ceiling`` (the product tree), ``trees`` (click tree x
   conversion tree: the ceiling factored as the engine factors its objective), and
   ``form:<set>`` for each of ``--run-sets`` (the logistic's P(click) x the conversion
   TREE's P(convert | click) x value x weight: only the click model's form differs from
   ``trees``), greedy, next to ``oracle`` (and ``nextbest`` itself with ``--online``; or
   ``bench/variants.py --variant shared`` on the same code). Expected clicks and expected
   value / the oracle's.

Writes ``form-<world>.json`` per world in ``--out`` (``bench/results/form_gap``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy import optimize, sparse

from _common import ROOT, command_line, load_average, machine_info, now_iso
from ceiling import (
    _BIN_EDGES,
    CeilingModel,
    LoggingPolicy,
    Sparse,
    _bin,
    _booster,
    _logit,
    _r2,
    decision_features,
    design_matrix,
    observable,
    page_topics,
)
from nextbest.catalog.compiled import Catalog, CompiledOffer
from nextbest.decide import ranking
from nextbest.decide.model import ChoiceContext
from nextbest.learn.contextual import crossed
from nextbest.learn.features import TOPIC_FEATURES, Features, customer_features, offer_history
from nextbest.learn.model import DEFAULT_PRIOR_MEAN, OfferRef
from nextbest.rules.context import age_of
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import run_policy
from nextbest.sim.world import CustomerSim
from nextbest.sim.worlds import WORLDS, world_catalog, world_named, world_response
from refit import penalised_log_loss

GROUPS = ("bins", "seenbin", "needfat", "active", "pairs", "age5")
_BASE = math.log(DEFAULT_PRIOR_MEAN / (1.0 - DEFAULT_PRIOR_MEAN))
_PAIRS = ("interest", "count7", "count30", "recency", "funnel", "page")
_NEED = ("count7", "count30", "recency", "funnel", "interest")
_EDGES = _BIN_EDGES  # the ceiling's bins


def engine_features(catalog: Catalog, ctx: ChoiceContext) -> Features:
    """The customer features the engine's learner computes for this decision."""
    return customer_features(
        ctx.profile,
        catalog.topics,
        ctx.now,
        ctx.context,
        ctx.segments,
        page_topics=page_topics(catalog, ctx.context),
    )


def _offset(prior: float) -> float:
    p = min(max(prior, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p)) - _BASE


def form_features(
    catalog: Catalog, x: Features, offer: CompiledOffer, ctx: ChoiceContext
) -> Features:
    """nextbest's crossed input for this candidate (position 1, with its history and the
    prior's offset), and the candidate crosses of ``GROUPS`` (prefixed ``<group>|``)."""
    topic = offer.topic
    interest = x.get(ranking.INTEREST + topic, 0.0) if topic else 0.0
    extra = offer_history(ctx.profile.offers.get(offer.id), ctx.now, interest)
    ref = OfferRef(offer_id=offer.id, placement=ctx.placement, topic=topic, kind=offer.kind)
    out = crossed(x, ref, 1, extra=extra)
    prior = ranking.prior_p_click(
        offer, ranking.interest_score(x, topic) if topic else 0.0, catalog.scoring
    )
    off = _offset(prior)
    if off:
        out["offset"] = off
    mine = "&offer:" + offer.id
    aug: Features = {}
    history = ctx.profile.offers.get(offer.id)
    seen = history.total_impressions if history is not None else 0
    aug["seenbin|" + str(min(seen, 6))] = 1.0
    aug["seenbin|" + str(min(seen, 6)) + mine] = 1.0
    seen_log = extra.get("seen", 0.0)
    own = {f: x.get(f + ":" + topic, 0.0) for f in TOPIC_FEATURES} if topic else {}
    active = 1.0 if any(own.values()) else 0.0
    if topic:
        for f in ("interest", "count7", "count30", "recency", "count1d"):
            k = _bin(own[f])
            aug[f"bins|{f}:{k}"] = 1.0
            aug[f"bins|{f}:{k}{mine}"] = 1.0
        for i, a in enumerate(_PAIRS):
            for b in _PAIRS[i + 1 :]:
                v = own[a] * own[b]
                if v:
                    aug[f"pairs|{a}*{b}"] = v
                    aug[f"pairs|{a}*{b}{mine}"] = v
        if seen_log:
            for f in _NEED:
                v = own[f] * seen_log
                if v:
                    aug[f"needfat|{f}*seen"] = v
                    aug[f"needfat|{f}*seen{mine}"] = v
    if active:
        aug["active|on"] = 1.0
        aug["active|on" + mine] = 1.0
        if seen_log:
            aug["needfat|active*seen"] = seen_log
            aug["needfat|active*seen" + mine] = seen_log
    elif seen_log:
        aug["needfat|idle*seen"] = seen_log
        aug["needfat|idle*seen" + mine] = seen_log
    age = age_of(ctx.profile.traits, ctx.now)
    band = "-" if age is None else str(min(max(age, 0), 90) // 5 * 5)
    aug["age5|" + band + mine] = 1.0
    out.update(aug)
    return out


def _group(name: str) -> str:
    bar = name.find("|")
    return name[:bar] if bar > 0 else "base"


def parse_set(spec: str) -> frozenset[str]:
    """``base``, ``all``, ``+g`` (base and group g), ``-g`` (all but g), ``+g+h``."""
    if spec == "base":
        return frozenset({"base"})
    if spec == "all":
        return frozenset({"base", *GROUPS})
    if spec.startswith("-"):
        return frozenset({"base", *GROUPS}) - set(spec[1:].split("-"))
    return frozenset({"base", *(g for g in spec.split("+") if g)})


class FormLog(LoggingPolicy):
    """The ceiling's logging policy, also recording each candidate's ``form_features``."""

    def __init__(self, catalog: Catalog, model: Any, share: float, seed: int) -> None:
        super().__init__(catalog, model, share, seed)
        self.form = Sparse({})

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: Any,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        before = len(self.log.customer)
        picks = super().choose(candidates, sim, day, slots, rng, impressions, context)
        if context is not None and len(self.log.customer) > before:
            x = engine_features(self.catalog, context)
            for offer in candidates:
                self.form.append(form_features(self.catalog, x, offer, context))
        return picks


class Logistic:
    """A fitted logistic of nextbest's form: weights by crossed name, and an intercept."""

    def __init__(self, weights: dict[str, float], intercept: float, groups: frozenset[str]):
        self.weights, self.intercept, self.groups = weights, intercept, groups

    def p_click(self, f: Features) -> float:
        get = self.weights.get
        z = self.intercept + sum(v * get(k, 0.0) for k, v in f.items())
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def fit_logistic(
    X: sparse.csr_matrix, p: np.ndarray, l2: float, max_iter: int
) -> tuple[np.ndarray, float, int]:
    """Soft-label logistic regression: mean log loss + l2 / 2 |w|², by L-BFGS
    (``refit.penalised_log_loss`` with every row weighing 1 / n and a prior of 0)."""
    n, d = X.shape
    start = np.zeros(d + 1)
    start[d] = float(_logit(np.array([max(p.mean(), 1e-4)]))[0])
    res = optimize.minimize(
        penalised_log_loss,
        start,
        args=(X, p, np.full(n, 1.0 / n), np.zeros(d), l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": 1e-9},
    )
    return res.x[:d], float(res.x[d]), int(res.nit)


def _top1(score: np.ndarray, truth: np.ndarray, decisions: np.ndarray) -> float:
    order = np.argsort(decisions, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(decisions[order])) + 1)
    got = top = 0.0
    for g in groups:
        got += float(truth[g[np.argmax(score[g])]])
        top += float(truth[g].max())
    return got / top if top > 0 else float("nan")


class Trees:
    """The three boosted fits on the ceiling's features (product, click, conversion)."""

    def __init__(self, product: CeilingModel, click: CeilingModel, convert: CeilingModel):
        self.product, self.click, self.convert = product, click, convert


def fit_all(
    logger: FormLog, catalog: Catalog, args: argparse.Namespace
) -> tuple[Trees, dict[str, Logistic], dict[str, Any]]:
    log = logger.log
    customer = np.frombuffer(log.customer, dtype=np.int32)
    row_decision = np.frombuffer(log.row_decision, dtype=np.int32)
    row_offer = np.frombuffer(log.row_offer, dtype=np.int32)
    p_click = np.frombuffer(log.p_click, dtype=np.float64)
    p_convert = np.frombuffer(log.p_convert, dtype=np.float64)
    test = customer[row_decision] % 5 == 0
    train = np.flatnonzero(~test)
    offer_names = sorted(log.offers, key=log.offers.__getitem__)
    worth = np.array([catalog.offers[o].spec.value * catalog.offers[o].weight for o in offer_names])
    w = worth[row_offer]
    truth = (p_click * p_convert * w)[test]
    dec_test = row_decision[test]
    stats: dict[str, Any] = {"rows_train": len(train), "rows_test": int(test.sum())}
    # -- the trees, on the ceiling's features
    began = time.perf_counter()
    X, columns, categorical = design_matrix(log, row_decision, row_offer, test, 20)
    fitted = {}
    for name, target in (
        ("product", p_click * p_convert),
        ("click", p_click),
        ("convert", p_convert),
    ):
        b = _booster(args.iterations, categorical, 0).fit(X[train], target[train])
        fitted[name] = CeilingModel(columns, dict(log.offers), b)
    trees = Trees(fitted["product"], fitted["click"], fitted["convert"])
    Xt = X[test]
    q_prod = trees.product.predict(Xt)
    q_click = np.clip(trees.click.predict(Xt), 1e-6, 1.0)
    q_conv = trees.convert.predict(Xt)
    yc = p_click[test]
    stats["trees"] = {
        "r2_p_click": _r2(yc, q_click),
        "r2_logit_p_click": _r2(_logit(yc), _logit(q_click)),
        "top1_product": _top1(q_prod * w[test], truth, dec_test),
        "top1_click_x_convert": _top1(q_click * q_conv * w[test], truth, dec_test),
        "seconds": round(time.perf_counter() - began, 1),
    }
    _say(f"trees: {stats['trees']}")
    del X
    # -- the logistic of nextbest's form, per set of crosses
    F = logger.form.matrix().tocsr()
    fnames = sorted(logger.form.vocab, key=logger.form.vocab.__getitem__)
    fsupport = np.asarray((F[train] != 0).sum(axis=0)).ravel()
    fgroups = np.array([_group(n) for n in fnames])
    models: dict[str, Logistic] = {}
    stats["logistic"] = {}
    for spec in args.sets:
        groups = parse_set(spec)
        began = time.perf_counter()
        cols = np.flatnonzero((fsupport >= 20) & np.isin(fgroups, sorted(groups)))
        Fs = F[:, cols]
        wv, b, nit = fit_logistic(Fs[train], p_click[train], args.l2, args.max_iter)
        q = 1.0 / (1.0 + np.exp(-(Fs[test] @ wv + b)))
        q = np.clip(q, 1e-6, 1.0)
        models[spec] = Logistic(
            {fnames[k]: float(v) for k, v in zip(cols, wv, strict=True)}, b, groups
        )
        stats["logistic"][spec] = {
            "features": len(cols),
            "iterations": nit,
            "r2_p_click": _r2(yc, q),
            "r2_logit_p_click": _r2(_logit(yc), _logit(q)),
            "top1_click_x_tree_convert": _top1(q * q_conv * w[test], truth, dec_test),
            "seconds": round(time.perf_counter() - began, 1),
        }
        _say(f"logistic {spec}: {stats['logistic'][spec]}")
    return trees, models, stats


class _Greedy:
    """Greedy on a fitted objective x value x weight; the ceiling's policy shape."""

    name = "greedy"

    def __init__(self, catalog: Catalog, trees: Trees, mode: str, logistic: Logistic | None):
        self.catalog, self.trees, self.mode, self.logistic = catalog, trees, mode, logistic

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: Any,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        if context is None or not candidates:
            return [(o.id, 1.0) for o in candidates][:slots]
        x = decision_features(self.catalog, context)
        own = [observable(x, offer, context) for offer in candidates]
        ids = [o.id for o in candidates]
        if self.mode == "ceiling":
            q = self.trees.product.predict(self.trees.product.rows(x, ids, own))
        else:
            rows = self.trees.convert.rows(x, ids, own)
            conv = self.trees.convert.predict(rows)
            if self.logistic is None:
                click = np.clip(self.trees.click.predict(rows), 0.0, 1.0)
            else:
                ex = engine_features(self.catalog, context)
                click = np.array(
                    [
                        self.logistic.p_click(form_features(self.catalog, ex, o, context))
                        for o in candidates
                    ]
                )
            q = click * conv
        scored = sorted(
            (-(float(p) * o.spec.value * o.weight), o.id)
            for p, o in zip(q, candidates, strict=True)
        )
        return [(oid, 1.0) for _, oid in scored[:slots]]


def run_world(world: str, args: argparse.Namespace) -> dict[str, Any]:
    lives = world_named(world)
    catalog = world_catalog(lives, args.catalog, DEFAULT_START)
    response = world_response(lives)
    began = time.perf_counter()
    logger = FormLog(catalog, response, args.record_share, args.log_seed)
    run_policy(
        logger, args.log_seed, args.log_customers, args.days,
        catalog=catalog, model=response, world=lives,
    )  # fmt: skip
    _say(f"{world}: logged {len(logger.log):,} candidates in {time.perf_counter() - began:.0f} s")
    trees, models, stats = fit_all(logger, catalog, args)
    del logger
    policies: list[tuple[str, Any]] = [
        ("oracle", "oracle"),
        ("ceiling", _Greedy(catalog, trees, "ceiling", None)),
        ("trees", _Greedy(catalog, trees, "trees", None)),
    ]
    for spec in args.run_sets:
        policies.append(("form:" + spec, _Greedy(catalog, trees, "form", models[spec])))
    if args.online:
        policies.append(("nextbest", "nextbest"))
    metrics: dict[str, dict[str, float]] = {}
    for name, policy in policies:
        m = run_policy(
            policy, args.seed, args.customers, args.days,
            catalog=catalog, model=response, world=lives,
        )  # fmt: skip
        metrics[name] = {
            "expected_clicks": m.expected_clicks,
            "clicks": m.clicks,
            "expected_value": m.expected_value,
            "wall_seconds": m.wall_seconds,
        }
        _say(
            f"{world} {name}: expected clicks {m.expected_clicks:.1f}, expected value "
            f"{m.expected_value:.1f}, {m.wall_seconds:.0f} s"
        )
    oracle = metrics["oracle"]
    return {
        "world": world,
        "seed": args.seed,
        "log": {"customers": args.log_customers, "seed": args.log_seed, "share": args.record_share},
        "fit": stats,
        "metrics": metrics,
        "vs_oracle": {
            name: {
                "expected_clicks": m["expected_clicks"] / oracle["expected_clicks"],
                "expected_value": m["expected_value"] / oracle["expected_value"],
            }
            for name, m in metrics.items()
        },
        "wall_seconds": round(time.perf_counter() - began, 1),
    }


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="generic_service,hidden_needs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--customers", type=int, default=2_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--log-seed", type=int, default=101)
    ap.add_argument("--log-customers", type=int, default=4_000)
    ap.add_argument("--record-share", type=float, default=0.3)
    ap.add_argument("--iterations", type=int, default=150, help="boosting iterations")
    ap.add_argument("--l2", type=float, default=1e-6, help="the logistic's L2 per row")
    ap.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations")
    ap.add_argument("--sets", default="base,all,+bins,+seenbin,+needfat,+active,+pairs,+age5")
    ap.add_argument("--run-sets", default="base,all")
    ap.add_argument(
        "--online", action="store_true", help="also run nextbest itself (the same code and seed)"
    )
    ap.add_argument("--catalog", default=str(ROOT / "examples" / "bank"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "form_gap"))
    args = ap.parse_args(argv)
    args.worlds = [w for w in args.worlds.split(",") if w]
    for w in args.worlds:
        if w not in WORLDS:
            ap.error(f"unknown world {w!r}")
    args.sets = [s for s in args.sets.split(",") if s]
    args.run_sets = [s for s in args.run_sets.split(",") if s]
    for s in args.run_sets:
        if s not in args.sets:
            args.sets.append(s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for world in args.worlds:
        result = run_world(world, args)
        machine = machine_info()
        machine["load_average_end"] = load_average()
        payload = {"benchmark": "form_gap", "date": now_iso(), "command": command_line(),
                   "machine": machine, **result}  # fmt: skip
        (out / f"form-{world}.json").write_bytes(
            orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
        rows = [
            f"| {name} | {r['expected_clicks']:.3f} | {r['expected_value']:.3f} |"
            for name, r in result["vs_oracle"].items()
        ]
        print(f"\n{world} seed {args.seed}: / oracle\n" + "\n".join(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
