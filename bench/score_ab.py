"""Benchmark: the contextual click model's scoring and learning, this tree's against another.

    .venv/bin/python bench/score_ab.py --profiles 5000 --learning contextual_thompson \
        --contextual-from /path/to/other/src/nextbest/learn/contextual.py

One engine is built and trained as ``decide.py`` builds it; ``--captured`` decisions are
then run and the inputs each gave its placement's model recorded (the customer's features,
the candidates, their prior offsets and histories). The trained model's state is loaded
into this tree's ``ContextualLogistic`` and into ``--contextual-from``'s (loaded as a
module of its own), which must agree on every score (the largest difference is reported),
and both are timed on the same inputs in one process, in alternating rounds:

- ``posterior_many`` per decision, overall and by the number of candidates;
- ``learn_one`` per feedback event (the decisions' first candidates, one in ten a click),
  each model from the same state.

Results: ``bench/results/score_ab.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import decide_learning
from _common import Run, load_module, log, table
from decide import REQUEST
from decide import parse_args as decide_args
from nextbest.learn import learner
from nextbest.learn.contextual import ContextualLogistic
from nextbest.learn.features import Features
from nextbest.learn.model import OfferRef

#: one decision's model inputs: features, candidates, offsets, histories
Inputs = tuple[Features, list[OfferRef], list[float], list[Features]]
_BANDS = ((1, 10), (10, 20), (20, 30), (30, 1_000))


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contextual-from", type=Path, required=True, help="another contextual.py")
    ap.add_argument("--captured", type=int, default=1_000, help="decisions whose inputs are kept")
    ap.add_argument("--rounds", type=int, default=10, help="alternating timing rounds")
    ap.add_argument("--name", default="score_ab")
    args, rest = ap.parse_known_args(argv)
    return args, decide_args(["--name", args.name, *rest])


def _capture(
    engine: Any, ids: list[str], n: int, seed: int
) -> tuple[ContextualLogistic, list[Inputs]]:
    """``n`` decisions' model inputs, as ``Learner._score`` builds them, and the model."""
    kept: list[Inputs] = []
    models: list[ContextualLogistic] = []
    score = learner.Learner._score

    def capture(self: learner.Learner, model: Any, explore: Any, ctx: Any, pool: Any) -> Any:
        out = score(self, model, explore, ctx, pool)
        if pool and isinstance(model, ContextualLogistic) and out.extras is not None:
            offsets = [decide_learning.prior_offset(c.p_click) for c in pool]
            kept.append((out.x, out.refs, offsets, out.extras))
            models.append(model)
        return out

    rng = random.Random(seed)
    learner.Learner._score = capture  # type: ignore[method-assign]
    try:
        while len(kept) < n:
            engine.decide(REQUEST, user_id=ids[rng.randrange(len(ids))])
    finally:
        learner.Learner._score = score  # type: ignore[method-assign]
    return models[0], kept[:n]


def _per_call(fn: Callable[[Inputs], object], inputs: list[Inputs]) -> float:
    t = time.perf_counter_ns()
    for one in inputs:
        fn(one)
    return (time.perf_counter_ns() - t) / max(1, len(inputs)) / 1e3


def _learn_cost(cls: Any, state: bytes, events: list[tuple[Any, ...]]) -> float:
    model = cls.from_state(state)
    t = time.perf_counter_ns()
    for x, ref, reward, offset, extra in events:
        model.learn_one(x, ref, 1, reward, offset, extra)
    return (time.perf_counter_ns() - t) / len(events) / 1e3


def main(argv: Sequence[str] | None = None) -> int:
    args, engine_args = parse_args(argv)
    run = Run("score_ab", engine_args, "common-expression-language")
    other = load_module("contextual_other", args.contextual_from)
    built = decide_learning.trained_engine(engine_args)
    model, inputs = _capture(built.engine, built.ids, args.captured, engine_args.seed)
    state = model.to_state()
    models = {"this_tree": ContextualLogistic.from_state(state)}
    models["other"] = other.ContextualLogistic.from_state(state)
    a, b = models["this_tree"], models["other"]
    diff = max(
        abs(u - v)
        for x, refs, offs, ex in inputs
        for u, v in zip(
            a.posterior_many(x, refs, 1, offs, ex)[0],
            b.posterior_many(x, refs, 1, offs, ex)[0],
            strict=True,
        )
    )
    log(f"{len(inputs)} decisions captured; the largest score difference {diff:.3g}")
    bands = {f"{lo}-{hi - 1}" if hi < 1_000 else f"{lo}+": (lo, hi) for lo, hi in _BANDS}
    picked = {k: [i for i in inputs if lo <= len(i[1]) < hi] for k, (lo, hi) in bands.items()}
    times: dict[str, dict[str, list[float]]] = {n: {"all": []} for n in models}
    for n in models:
        times[n].update({k: [] for k in bands})
    rng = random.Random(engine_args.seed)
    events = [
        (x, refs[0], float(rng.random() < 0.1), offs[0], ex[0]) for x, refs, offs, ex in inputs
    ]
    learn: dict[str, list[float]] = {n: [] for n in models}
    for r in range(args.rounds):
        for name in list(models) if r % 2 == 0 else list(models)[::-1]:
            m = models[name]

            def one(i: Inputs, m: Any = m) -> object:
                return m.posterior_many(i[0], i[1], 1, i[2], i[3])

            times[name]["all"].append(_per_call(one, inputs))
            for k, sel in picked.items():
                times[name][k].append(_per_call(one, sel))
            learn[name].append(_learn_cost(type(m), state, events))
    summary = {
        n: {
            "posterior_many_us": {k: round(statistics.median(v), 1) for k, v in t.items()},
            "learn_one_us": round(statistics.median(learn[n]), 1),
        }
        for n, t in times.items()
    }
    sizes = {k: len(v) for k, v in picked.items()}
    rows = [
        [k, sizes.get(k, len(inputs)), *(summary[n]["posterior_many_us"][k] for n in models)]
        for k in ["all", *bands]
    ]
    rows.append(["learn_one", len(events), *(summary[n]["learn_one_us"] for n in models)])
    print(table("median µs per call (alternating rounds)", ["inputs", "n", *models], rows))
    run.write(
        {
            "contextual_from": str(args.contextual_from),
            "max_score_difference": diff,
            "decisions": len(inputs),
            "by_candidates": sizes,
            "models": summary,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
