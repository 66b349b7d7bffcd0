"""Where nextbest's cold start loses clicks (issue #14): per day, expected clicks (true
P(click) summed, no draw noise) of ``oracle``, ``prior`` and ``nextbest`` on one world and
seed, nextbest's split into explored and greedy impressions, and the model's predicted
P(click) of what it showed against the truth; then the same run with

- ``greedy``: epsilon 0 (what exploration costs, and what it buys later);
- ``warm_all``: the shared model a month of nextbest learned on another population
  (``--warm-seed``) loaded at the start (what the cold start costs in all);
- ``warm_levels``: only its per-offer weights (each offer's level ``offer:<o>`` and its
  precision, the ``<f>&offer:<o>`` crosses): the catalog prior's error per offer;
- ``warm_shared``: only the rest (topic crosses, ``own.<f>``, ``hist.<f>``, ``offset``,
  ``topic:``, ``placement:``, ``pos:``, the intercept): the shared interest weights;
- ``warm_conv``: ``warm_all`` and the conversion model's counts (per offer and per offer
  and intent level, ``ConversionModel.counts`` / ``intent_counts``) of the same month.

Diagnosis only: the bench reads the hidden response model and the engine's learner state
(``Engine._learner``), which the engine itself never does. Only ``warm_conv`` warms the
conversion model. Each run reports its expected clicks and expected conversions. Writes
``bench/results/cold_start/<world>-s<seed>.json``.

    OMP_NUM_THREADS=1 PYTHONPATH=src:bench nice -n 19 .venv/bin/python bench/cold_start.py \\
        --worlds hidden_needs,generic_service --seed 1 --warm-seed 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec

from _common import ROOT, machine_info, now_iso
from nextbest.learn.contextual import ContextualLogistic, ContextualState, split_crossed
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import SiteLoop
from nextbest.sim.policies import make_policy
from nextbest.sim.worlds import world_catalog, world_named, world_response
from variants import _greedy

OUT = ROOT / "bench/results/cold_start"


class _Probe:
    """The world's response model, noting every impression's true P(click) as ``_respond``
    asks it, with the decision item it is for."""

    def __init__(self, model: Any, log: dict[str, Any]) -> None:
        self._model = model
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def p_click(self, **kw: Any) -> float:
        p = float(self._model.p_click(**kw))
        items = self._log.get("items")
        if items is not None:
            item = items[kw["position"] - 1]
            day = self._log["day"]
            key = "explored" if item.explored else "greedy"
            row = self._log["days"][day]
            row[key + "_n"] += 1
            row[key + "_p"] += p
            row[key + "_pred"] += item.p_click if item.p_click is not None else 0.0
        return p


def _instrument(loop: SiteLoop, log: dict[str, Any]) -> None:
    respond = loop._respond

    def wrapped(i: int, d: int, ts: float, page: dict[str, Any], decision: Any) -> None:
        log["items"], log["day"] = list(decision.items), d
        before = loop.metrics.expected_clicks
        try:
            respond(i, d, ts, page, decision)
        finally:
            log["items"] = None
        log["days"][d]["expected"] += loop.metrics.expected_clicks - before

    loop._respond = wrapped  # type: ignore[method-assign]


#: what a run learned: the shared model's state and the conversion model's counts (per
#: offer, per offer and intent level)
Learned = tuple[bytes, dict[str, tuple[float, float]], list[tuple[str, int, float, float]]]


def _part(state: bytes, keep: str) -> ContextualLogistic:
    """The shared model ``state`` with only the ``keep`` part (levels, shared, all; conv is
    all)."""
    s = msgspec.msgpack.decode(state, type=ContextualState)

    def per_offer(name: str) -> bool:
        cross = split_crossed(name)
        return name.startswith("offer:") or (cross is not None and cross[0] == "offer")

    fresh = ContextualLogistic(s.config)
    if keep == "levels":
        weights = [(n, v) for n, v in s.weights if per_offer(n)]
        s = msgspec.structs.replace(s, weights=weights, intercept=fresh.intercept)
        s = msgspec.structs.replace(s, weights=[*s.weights, ("offset", 1.0)])
    elif keep == "shared":
        weights = [(n, v) for n, v in s.weights if not per_offer(n)]
        s = msgspec.structs.replace(s, weights=weights, precisions=[])
    return ContextualLogistic.from_state(msgspec.msgpack.encode(s))


def _run(
    name: str,
    world: str,
    seed: int,
    args: argparse.Namespace,
    warm: ContextualLogistic | None,
    conv: Learned | None = None,
) -> tuple[dict[str, Any], Learned | None]:
    lives = world_named(world)
    catalog = world_catalog(lives, str(ROOT / "examples" / "bank"), DEFAULT_START)
    log: dict[str, Any] = {"days": defaultdict(lambda: defaultdict(float)), "items": None}
    model = _Probe(world_response(lives), log)
    policy = "nextbest" if name not in ("oracle", "prior") else name
    began = time.perf_counter()

    def go(cat: Any) -> tuple[Any, Learned | None]:
        loop = SiteLoop(
            make_policy(policy), cat, seed, args.customers, DEFAULT_START, model, 1.0, lives
        )
        _instrument(loop, log)
        learner = loop.engine._learner if policy == "nextbest" else None
        if warm is not None and learner is not None:
            for p in learner.shared:
                learner.models[p] = warm
        if conv is not None and learner is not None:
            learner.conversions.load(conv[1], conv[2])
        for d in range(args.days):
            loop.run_day(d)
        state = None
        if learner is not None:
            state = (
                learner.models[learner.shared[0]].to_state(),
                learner.conversions.counts(),
                learner.conversions.intent_counts(),
            )
        return loop.finish(time.perf_counter() - began), state

    if name == "greedy":
        with _greedy(catalog) as patched:
            m, state = go(patched)
    else:
        m, state = go(catalog)
    days = [dict(log["days"][d]) for d in range(args.days)]
    print(
        f"[{time.strftime('%H:%M:%S')}] {world} s{seed} {name}: expected "
        f"{m.expected_clicks:.1f} clicks, {m.expected_conversions:.2f} conversions, "
        f"{m.wall_seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    out = {
        "expected_clicks": m.expected_clicks,
        "expected_conversions": m.expected_conversions,
        "clicks": m.clicks,
        "days": days,
    }
    return out, state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--worlds", default="hidden_needs,generic_service")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warm-seed", type=int, default=2)
    ap.add_argument(
        "--runs", default="oracle,prior,nextbest,greedy,warm_all,warm_levels,warm_shared"
    )
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--out", default=str(OUT), help="the folder the results go to")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = args.runs.split(",")
    for world in args.worlds.split(","):
        out: dict[str, Any] = {
            "world": world,
            "seed": args.seed,
            "warm_seed": args.warm_seed,
            "date": now_iso(),
            "git": machine_info().get("git_revision"),
            "runs": {},
        }
        source: Learned | None = None
        for name in runs:
            warm, conv = None, None
            if name.startswith("warm_"):
                if source is None:
                    _, source = _run("source", world, args.warm_seed, args, None)
                assert source is not None
                warm = _part(source[0], name.removeprefix("warm_"))
                conv = source if name == "warm_conv" else None
            out["runs"][name], _ = _run(name, world, args.seed, args, warm, conv)
            path = out_dir / f"{world}-s{args.seed}.json"
            path.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
