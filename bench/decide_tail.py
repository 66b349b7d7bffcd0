"""Benchmark: which decisions are the slow ones, and where their time goes.

    .venv/bin/python bench/decide_tail.py --profiles 20000 --learning contextual_thompson

One engine is built and trained as ``decide.py`` builds it (``--profiles``, ``--learning``),
then ``--decisions`` decisions (random customers, after ``--warmup``) are timed one by one
(``engine.decide``), each with what it did: the candidates offered to the learned chooser,
whether a control customer's counterfactual choice was asked first, the chooser's time
(``Learner.choose``, every call), its scoring (``Learner._score``) and ranking
(``learn.explore.rank``), and whether the cyclic garbage collector ran. Wrapping those
three adds a few microseconds a decision; the shares are what to read.

Two tables: by latency band (the middle half, p90-p99, the slowest 1 %), and by the
candidates offered (decisions during which the collector ran left out), each band's mean
and p99. Results: ``bench/results/decide_tail.json``.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from unittest import mock

import decide_learning
from _common import Run, log, table
from decide import REQUEST
from decide import parse_args as decide_args
from nextbest.learn import learner

_KEYS = ("total", "choose", "score", "rank", "pool", "counterfactual", "gc")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="decide_tail")
    args, rest = ap.parse_known_args(argv)
    engine_args = decide_args(["--name", args.name, *rest])
    return engine_args


@contextmanager
def _instrumented(now: dict[str, float]) -> Iterator[None]:
    """``Learner.choose``, ``Learner._score`` and ``rank`` add their time (µs) to ``now``;
    ``choose`` notes the candidates and a counterfactual call."""
    pc = time.perf_counter_ns
    choose, score, rank = learner.Learner.choose, learner.Learner._score, learner.rank

    def timed_choose(self: learner.Learner, ctx: Any, pool: Any, limit: int) -> Any:
        t = pc()
        out = choose(self, ctx, pool, limit)
        now["choose"] += (pc() - t) / 1e3
        now["pool"] = max(now["pool"], len(pool))
        now["counterfactual"] += ctx.counterfactual
        return out

    def timed_score(self: learner.Learner, *args: Any) -> Any:
        t = pc()
        out = score(self, *args)
        now["score"] += (pc() - t) / 1e3
        return out

    def timed_rank(*args: Any, **kwargs: Any) -> Any:
        t = pc()
        out = rank(*args, **kwargs)
        now["rank"] += (pc() - t) / 1e3
        return out

    with (
        mock.patch.object(learner.Learner, "choose", timed_choose),
        mock.patch.object(learner.Learner, "_score", timed_score),
        mock.patch.object(learner, "rank", timed_rank),
    ):
        yield


def _band(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {k: round(statistics.fmean(r[k] for r in rows), 2) for k in _KEYS}
    totals = sorted(r["total"] for r in rows)
    out["p99_total"] = round(totals[min(len(totals) - 1, int(0.99 * len(totals)))], 1)
    out["n"] = len(rows)
    return out


def _bands(rows: list[dict[str, float]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """By latency band, and (without the decisions the collector ran in) by candidates."""
    ordered = sorted(rows, key=lambda r: r["total"])
    n = len(ordered)
    by_latency = {
        "all": _band(ordered),
        "middle half": _band(ordered[n // 4 : 3 * n // 4]),
        "p90-p99": _band(ordered[int(0.9 * n) : int(0.99 * n)] or ordered[-1:]),
        "slowest 1 %": _band(ordered[int(0.99 * n) :] or ordered[-1:]),
    }
    quiet = [r for r in rows if not r["gc"]]
    by_pool: dict[str, Any] = {}
    for lo, hi in ((0, 10), (10, 20), (20, 30), (30, 40), (40, 1_000)):
        band = [r for r in quiet if lo <= r["pool"] < hi]
        if band:
            by_pool[f"{lo}-{hi - 1}" if hi < 1_000 else f"{lo}+"] = _band(band)
    return by_latency, by_pool


def _print(title: str, bands: dict[str, Any]) -> None:
    keys = ("n", "total", "p99_total", "choose", "score", "rank", "pool", "counterfactual", "gc")
    headers = ["band", "n", "mean µs", "p99 µs", "choose", "score", "rank", "candidates"]
    headers += ["counterfactual", "gc"]
    rows = [[name, *(b[k] for k in keys)] for name, b in bands.items()]
    print(table(title, headers, rows))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run("decide_tail", args, "common-expression-language")
    built = decide_learning.trained_engine(args)
    engine, ids = built.engine, built.ids
    rng = random.Random(args.seed)
    users = [ids[rng.randrange(len(ids))] for _ in range(args.warmup + args.decisions)]
    now = dict.fromkeys(_KEYS, 0.0)
    collections = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        collections[0] += phase == "start"

    rows: list[dict[str, float]] = []
    pc = time.perf_counter_ns
    gc.callbacks.append(count)
    try:
        with _instrumented(now):
            for n, uid in enumerate(users):
                now.update(dict.fromkeys(_KEYS, 0.0))
                before = collections[0]
                t = pc()
                engine.decide(REQUEST, user_id=uid)
                now["total"] = (pc() - t) / 1e3
                now["gc"] = float(collections[0] > before)
                if n >= args.warmup:
                    rows.append(dict(now))
    finally:
        gc.callbacks.remove(count)
    log(f"timed {len(rows):,} decisions")
    by_latency, by_pool = _bands(rows)
    _print("engine.decide by latency band (means, µs)", by_latency)
    _print("by candidates offered to the chooser, no collection during (means, µs)", by_pool)
    run.write({"by_latency": by_latency, "by_candidates": by_pool, "decisions": len(rows)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
