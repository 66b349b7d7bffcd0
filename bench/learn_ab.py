"""Benchmark: the learning cost of one feedback event, this code against another checkout's,
in one process and interleaved event by event.

    git worktree add /tmp/nb_before <rev>
    .venv/bin/python bench/learn_ab.py --before /tmp/nb_before/src

Why in one process: on a shared 2-core VM the speed of Python code drifts by up to 2x between
seconds, so two benchmark processes run minutes apart compare the machine, not the code. Here
both learners see the same decisions and events, alternating which goes first, so a slow
second slows both.

What it does: builds the ``bench/decide.py`` catalog (``--learning contextual --broaden
0.4``) and ``--profiles`` profiles, trains the engine's model as that benchmark does, then
starts two learners from the trained model's state: this checkout's ``Learner`` and
``ContextualLogistic``, and the ``--before`` checkout's (its ``learn/learner.py`` and
``learn/contextual.py`` loaded under other module names; everything they import is this
checkout's). For ``--events`` fresh decisions each, it times ``Learner.observe`` of a click,
of a view (registered to wait for its click), ``Learner.advance`` closing one view as a
miss, and of a click on a view that waits for it; checks that both learners end with the
same weights, bit for bit; then times both models' ``predict_many`` over each click
decision's candidates (the model's part of ``engine.decide``). ``--rounds`` rounds, each with
fresh learners.

Results: ``bench/results/learn_ab.json``.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import decide as bench_decide
import decide_learning
import decide_setup
from _common import (
    RESULTS,
    code_measured,
    command_line,
    latency_summary,
    load_average,
    load_module,
    log,
    machine_info,
    now_iso,
    table,
    write_results,
)
from catalog_gen import BENCH_PLACEMENT
from nextbest.events.names import EventName
from nextbest.learn.contextual import ContextualLogistic
from nextbest.learn.learner import PRIOR, Learner, customer_part

__all__ = ["main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the other checkout's src folder")
    ap.add_argument("--profiles", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=2_000, help="timed events per kind and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-decisions", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--name", default="learn_ab", help="results name")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    log(f"learning A/B: {command_line()}")
    before = Path(args.before) / "nextbest" / "learn"
    old_contextual = load_module("before_contextual", before / "contextual.py")
    old_learner = load_module("before_learner", before / "learner.py")
    dargs = bench_decide.parse_args(
        [
            "--learning",
            "contextual",
            "--broaden",
            "0.4",
            "--profiles",
            str(args.profiles),
            "--pool",
            str(min(args.profiles, 2_000)),
            "--train-decisions",
            str(args.train_decisions),
            "--seed",
            str(args.seed),
        ]
    )
    catalog, _ = decide_setup.bench_catalog(dargs)
    built = decide_setup.build_engine_with_profiles(catalog, dargs)
    engine, clock, ids = built.engine, built.clock, built.ids
    log(f"training on {args.train_decisions:,} decisions")
    decide_learning.train(engine, clock, ids, dargs)
    placement = BENCH_PLACEMENT
    spec = catalog.placements[placement].learning
    assert spec is not None
    window = spec.click_window_minutes * 60.0
    state = Learner.from_state(catalog, engine.model_state()).models[placement].to_state()
    now = clock.now() + 2 * window + 60.0
    clock.set(now)
    rng = random.Random(args.seed + 5)
    pc = time.perf_counter_ns

    def pair() -> tuple[Any, Learner]:
        """Both learners from the trained model, at the round's time."""
        old = old_learner.Learner(catalog)
        old.models[placement] = old_contextual.ContextualLogistic.from_state(state)
        new = Learner(catalog)
        new.models[placement] = ContextualLogistic.from_state(state)
        old.now = new.now = now
        return old, new

    times: dict[str, dict[str, list[int]]] = {
        k: {"before": [], "after": []} for k in ("click", "view", "miss", "viewed", "score")
    }

    def interleaved(
        kind: str, i: int, sides: tuple[tuple[Any, str], ...], method: str, *args: Any, **kw: Any
    ) -> None:
        """Time ``method(*args, **kw)`` of the before and the after side, the first to go
        alternating with ``i``."""
        for target, side in sides if i % 2 else sides[::-1]:
            call = getattr(target, method)
            t = pc()
            call(*args, **kw)
            times[kind][side].append(pc() - t)

    max_diff = 0.0
    for r in range(args.rounds):
        old, new = pair()
        learners = ((old, "before"), (new, "after"))
        clock.set(now)  # decisions at the round's time: their feedback is not stale
        clicks = decide_learning.fresh_decisions(engine, ids, rng, args.events)
        views = decide_learning.fresh_decisions(engine, ids, rng, args.events)
        seen = decide_learning.fresh_decisions(engine, ids, rng, args.events)
        gc.collect()
        gc.disable()
        try:
            for uid, d in clicks:  # a click counts only after its view: views untimed
                e = decide_learning.feedback_event(
                    EventName.PROMOTION_VIEWED, uid, d, d.items[0].offer_id, now
                )
                old.observe(e, d)
                new.observe(e, d)
            for i, (uid, d) in enumerate(clicks):
                e = decide_learning.feedback_event(
                    EventName.PROMOTION_CLICKED, uid, d, d.items[0].offer_id, now
                )
                interleaved("click", i, learners, "observe", e, d)
            for i, (uid, d) in enumerate(views):
                e = decide_learning.feedback_event(
                    EventName.PROMOTION_VIEWED, uid, d, d.items[0].offer_id, now + i * 1e-3
                )
                interleaved("view", i, learners, "observe", e, d)
            for i in range(len(views)):
                at = now + i * 1e-3 + window + 5e-4  # exactly one view's window closes
                interleaved("miss", i, learners, "advance", at)
            # a click on a view that waits for it (the usual order on a site): views
            # registered untimed, after the misses above, then each clicked within its window
            at = now + window + 10.0
            for uid, d in seen:
                e = decide_learning.feedback_event(
                    EventName.PROMOTION_VIEWED, uid, d, d.items[0].offer_id, at
                )
                old.observe(e, d)
                new.observe(e, d)
            for i, (uid, d) in enumerate(seen):
                e = decide_learning.feedback_event(
                    EventName.PROMOTION_CLICKED, uid, d, d.items[0].offer_id, at + 1.0
                )
                interleaved("viewed", i, learners, "observe", e, d)
            # scoring a decision's candidates (the decide path's part of the model)
            models = ((old.models[placement], "before"), (new.models[placement], "after"))
            for i, (_uid, d) in enumerate(clicks):
                x = customer_part(d.features, d.candidates)
                refs = [decide_learning.offer_ref(catalog, o, placement) for o in d.candidates]
                offsets = [
                    decide_learning.prior_offset(d.features[PRIOR + o]) for o in d.candidates
                ]
                interleaved("score", i, models, "predict_many", x, refs, offsets=offsets)
        finally:
            gc.enable()
        w_old = old.models[placement].weights()
        w_new = new.models[placement].weights()
        assert w_old.keys() == w_new.keys()
        diff = max(abs(w_old[k] - w_new[k]) for k in w_old)
        max_diff = max(max_diff, diff)
        learned = (old.learned, new.learned)
        assert learned[0] == learned[1] == 3 * args.events, learned  # every event learned
        log(f"round {r + 1}: largest weight difference {diff:.1e}")
        now += 3 * window
    assert max_diff == 0.0, max_diff  # the same arithmetic in the same order

    labels = {
        "click": "observe: a click on a view just registered, learned at once",
        "view": "observe: a view, registered",
        "miss": "advance: a view closes as a miss",
        "viewed": "observe: a click on a waiting view",
        "score": "predict_many: a decision's candidates",
    }
    results: dict[str, Any] = {}
    rows = []
    for kind, sides in times.items():
        results[kind] = {side: latency_summary(ns) for side, ns in sides.items()}
        for side in ("before", "after"):
            s = results[kind][side]
            rows.append([labels[kind], side, s["p50_us"], s["p90_us"], s["p99_us"], s["mean_us"]])
    for kind in ("click", "miss", "viewed", "score"):
        b, a = results[kind]["before"], results[kind]["after"]
        results[kind]["ratio_after_to_before"] = {
            q: round(a[q] / b[q], 3) for q in ("p50_us", "p90_us", "p99_us", "mean_us")
        }
    view_and_miss = {
        side: [v + m for v, m in zip(times["view"][side], times["miss"][side], strict=True)]
        for side in ("before", "after")
    }
    results["view_then_miss"] = {s: latency_summary(ns) for s, ns in view_and_miss.items()}
    print(
        table(
            "learning one feedback event, us (same process, interleaved)",
            ["event", "code", "p50", "p90", "p99", "mean"],
            rows,
        )
    )
    payload = {
        "benchmark": "learn_ab",
        "date": now_iso(),
        "command": command_line(),
        "machine": {**info, "load_average_end": load_average()},
        "code_measured": code_measured(),
        "before_src": str(Path(args.before).resolve()),
        "args": {k: str(v) for k, v in vars(args).items()},
        "max_weight_difference": max_diff,
        "results": results,
    }
    log(f"results: {write_results(args.name, payload, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
