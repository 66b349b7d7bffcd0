"""Benchmark: decide latency A/B in one process, the engine as it is against variants.

    .venv/bin/python bench/decide_ab.py --learning contextual_thompson --variants gc_freeze
    .venv/bin/python bench/decide_ab.py --learning contextual_thompson \
        --explore-from /path/to/other/src/nextbest/learn/explore.py

The VM's speed drifts by up to 2x between runs minutes apart, so two runs of
``bench/decide.py`` cannot tell a 5 % change. Here one engine is built as ``decide.py``
builds it (the same catalog, profiles and training: ``--profiles``, ``--learning``), then
blocks of ``--block`` decisions alternate between the engine as it is (``as_is``) and each
variant, in an order reversed every other round, for ``--rounds`` rounds: every variant sees
the same drift. Each decision is timed alone (``engine.decide``, as ``decide.py`` times it).

Variants:
- ``gc_freeze``: ``gc.freeze()`` before the block (what the server does after a restore,
  here after the training too: the learned state out of the collector's reach), undone after;
- ``gc_settle``: ``heap.settle_for_serving()`` (the server's: the freeze and the young
  generation collected every ``heap.YOUNG`` allocations), undone after;
- ``gc_young``: only the server's young-generation threshold;
- ``cf_full_draws``: a control customer's counterfactual choice draws every Thompson
  sample and counts the shares, as before ``rank``'s ``counterfactual`` (it draws only up
  to the sample it ranks by);
- ``cf_unwatched``: the counterfactual draws its sample even when no sample could place a
  withheld offer (before ``rank``'s ``watch``);
- ``index_in_cel``: every rule with an index (``m[k]``, ``l[i]``) runs in CEL, as before
  the closures covered indexing (the generated catalog's ``applying_any`` segment,
  ``profile.funnel.exists(t, profile.funnel[t] == "applying")``);
- ``filters_from`` (with ``--filters-from FILE``): the pipeline filters the candidates with
  that file's ``_filter_candidates`` (another tree's ``decide/pipeline.py``);
- ``explore_from`` (with ``--explore-from FILE``): the learner ranks with that file's
  ``rank`` (another tree's ``learn/explore.py``, loaded as its own module).

Results: ``bench/results/decide_ab.json`` (per variant: latency summary, ratio to ``as_is``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import decide_learning
from _common import Run, latency_summary, load_module, log, ratios, table
from decide import REQUEST
from decide import parse_args as decide_args
from nextbest.decide import pipeline
from nextbest.heap import YOUNG, settle_for_serving
from nextbest.learn import learner
from nextbest.rules import Rule, RuleOutcome
from nextbest.rules.evaluation import LazyEvaluation
from nextbest.rules.parse import Index, Node, parse

Variant = Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _gc_freeze() -> Iterator[None]:
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _gc_settle() -> Iterator[None]:
    threshold = gc.get_threshold()
    settle_for_serving()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@contextlib.contextmanager
def _gc_young() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.set_threshold(YOUNG, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _explore_from(path: Path, calls: list[int]) -> Variant:
    """The learner ranking with ``path``'s ``rank`` (its posterior classes too: they are
    ``isinstance``-checked there); ``calls`` counts the calls it takes, so a patch that
    does not reach the learner shows."""
    module = load_module("explore_variant", path)
    takes = set(inspect.signature(module.rank).parameters)

    def counted(*args: Any, **kwargs: Any) -> Any:
        """``rank`` as that tree defines it: keywords it does not take (an older tree's,
        such as ``watch``) are left out."""
        calls[0] += 1
        return module.rank(*args, **{k: v for k, v in kwargs.items() if k in takes})

    @contextlib.contextmanager
    def variant() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(learner, "rank", counted))
            for name in ("BetaScores", "GaussianScores"):
                stack.enter_context(mock.patch.object(learner, name, getattr(module, name)))
            yield

    return variant


def _filters_from(path: Path, calls: list[int]) -> Variant:
    """The pipeline filtering candidates with ``path``'s ``_filter_candidates`` (another
    tree's ``decide/pipeline.py``, loaded as its own module); ``calls`` counts its calls,
    so a patch that does not reach the pipeline shows."""
    module = load_module("pipeline_variant", path)

    def counted(*args: Any) -> Any:
        calls[1] += 1
        return module._filter_candidates(*args)

    @contextlib.contextmanager
    def variant() -> Iterator[None]:
        with mock.patch.object(pipeline, "_filter_candidates", counted):
            yield

    return variant


def _rank_without(keyword: str) -> Variant:
    """The learner ranking as if ``rank`` had no ``keyword`` (its default taken): the
    engine as it was before that keyword."""

    @contextlib.contextmanager
    def variant() -> Iterator[None]:
        rank = learner.rank

        def without(*args: Any, **kwargs: Any) -> Any:
            kwargs.pop(keyword, None)
            return rank(*args, **kwargs)

        with mock.patch.object(learner, "rank", without):
            yield

    return variant


def _indexes(node: object) -> bool:
    """``node`` (a parsed rule) holds an index somewhere."""
    if isinstance(node, Index):
        return True
    if isinstance(node, tuple):
        return any(_indexes(n) for n in node)
    return any(_indexes(getattr(node, f)) for f in getattr(node, "__slots__", ()))


@contextlib.contextmanager
def _index_in_cel() -> Iterator[None]:
    """Rules with an index run in CEL, as ``rules.parse`` left them before it read
    ``a[i]`` (the closures never saw them). A macro over a map without an index, which
    ran in CEL before too, stays in the closures."""
    check = LazyEvaluation.check
    indexed: dict[Rule, bool] = {}

    def in_cel(self: LazyEvaluation, rule: Rule) -> RuleOutcome:
        found = indexed.get(rule)
        if found is None:
            tree: Node | None = parse(rule.source)
            found = indexed[rule] = tree is not None and _indexes(tree)
        return self.check_cel(rule) if found else check(self, rule)

    with mock.patch.object(LazyEvaluation, "check", in_cel):
        yield


VARIANTS: dict[str, Variant] = {
    "gc_freeze": _gc_freeze,
    "gc_settle": _gc_settle,
    "gc_young": _gc_young,
    # the counterfactual's full draws and counted shares, as before rank's counterfactual
    "cf_full_draws": _rank_without("counterfactual"),
    # the counterfactual's draw whatever it watches, as before rank's watch
    "cf_unwatched": _rank_without("watch"),
    "index_in_cel": _index_in_cel,
}


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="", help=f"comma-separated: {', '.join(VARIANTS)}")
    ap.add_argument("--explore-from", type=Path, default=None, help="another learn/explore.py")
    ap.add_argument(
        "--filters-from", type=Path, default=None, help="another decide/pipeline.py's filters"
    )
    ap.add_argument("--rounds", type=int, default=12, help="rounds of one block per variant")
    ap.add_argument("--block", type=int, default=2_000, help="decisions per block")
    ap.add_argument("--name", default="decide_ab")
    args, rest = ap.parse_known_args(argv)
    engine_args = decide_args(["--name", args.name, *rest])
    return args, engine_args


def _variants(args: argparse.Namespace, calls: list[int]) -> dict[str, Variant]:
    out: dict[str, Variant] = {"as_is": contextlib.nullcontext}
    for name in filter(None, args.variants.split(",")):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}")
        out[name] = VARIANTS[name]
    if args.explore_from is not None:
        out["explore_from"] = _explore_from(args.explore_from, calls)
    if args.filters_from is not None:
        out["filters_from"] = _filters_from(args.filters_from, calls)
    if len(out) < 2:
        raise SystemExit("name a variant (--variants, --explore-from or --filters-from)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args, engine_args = parse_args(argv)
    calls = [0, 0]  # the other rank's calls, the other filters' calls
    variants = _variants(args, calls)
    run = Run("decide_ab", engine_args, "common-expression-language")
    built = decide_learning.trained_engine(engine_args)
    engine, ids = built.engine, built.ids
    rng = random.Random(engine_args.seed)

    def users() -> list[str]:
        return [ids[rng.randrange(len(ids))] for _ in range(args.block)]

    for uid in users():  # warm-up
        engine.decide(REQUEST, user_id=uid)
    names = list(variants)
    times: dict[str, list[int]] = {n: [] for n in names}
    pc = time.perf_counter_ns
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out = times[name]
            with variants[name]():
                for uid in users():
                    t = pc()
                    engine.decide(REQUEST, user_id=uid)
                    out.append(pc() - t)
        log(f"round {r + 1} of {args.rounds}")
    if args.explore_from is not None and calls[0] == 0:
        raise SystemExit(f"{args.explore_from}'s rank was never called: the patch missed")
    if args.filters_from is not None and calls[1] == 0:
        raise SystemExit(f"{args.filters_from}'s filters were never called: the patch missed")
    summary = {n: latency_summary(t) for n, t in times.items()}
    vs = {n: ratios(s, summary["as_is"]) for n, s in summary.items()}
    keys = ("n", "mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us")
    rows = [
        [n, *(s[k] for k in keys), vs[n]["mean_us"], vs[n]["p99_us"]] for n, s in summary.items()
    ]
    headers = ["variant", *keys, "mean / as_is", "p99 / as_is"]
    print(table("engine.decide by variant, us (alternating blocks)", headers, rows))
    run.write(
        {
            "variants": summary,
            "ratios_to_as_is": vs,
            "explore_from": str(args.explore_from) if args.explore_from else None,
            "rounds": args.rounds,
            "block": args.block,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
