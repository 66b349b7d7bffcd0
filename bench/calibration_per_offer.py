"""Per offer, what nextbest's click model predicted against the clicks it got, in one zoo
world (BENCHMARKS.md, "The winner's curse on valuable offers").

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/calibration_per_offer.py \\
        --world wrong_priors --seed 1 --variant shared

Runs the ``nextbest`` policy alone (2,000 customers x 30 days, a ``bench/variants.py``
variant applied) and counts per offer: the items shown and the sum of the click
probabilities their decisions logged (at position 1, what the ranking reads) with their
mean position; the feedback events the model learned and the sum of its own predictions of
them, made just before learning each at the position it was shown (prequential: what a
calibration step per offer would compare against); the clicks learned.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Any

from _common import ROOT
from nextbest.learn import contextual, learner
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import run_policy
from nextbest.sim.worlds import world_catalog, world_named, world_response
from variants import VARIANTS


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--world", default="wrong_priors")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variant", default="shared", choices=sorted(VARIANTS))
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()
    shown: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    learned: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    choose = learner.Learner.choose
    learn_one = contextual.ContextualLogistic.learn_one

    def counted_choose(self: Any, ctx: Any, pool: Any, limit: int) -> Any:
        choice = choose(self, ctx, pool, limit)
        if choice.p_click is not None and not ctx.counterfactual:
            for position, (i, _) in enumerate(choice.picks, 1):
                s = shown[pool[i].offer.id]
                s[0] += 1
                s[1] += choice.p_click[i]
                s[2] += position
        return choice

    def counted_learn(
        self: Any, x: Any, offer: Any, position: int, reward: float, **kw: Any
    ) -> Any:
        s = learned[offer.offer_id]
        s[0] += 1
        s[1] += self.predict_one(x, offer, position, kw.get("offset", 0.0), kw.get("extra"))
        s[2] += reward
        return learn_one(self, x, offer, position, reward, **kw)

    learner.Learner.choose = counted_choose  # type: ignore[method-assign]
    contextual.ContextualLogistic.learn_one = counted_learn  # type: ignore[method-assign]
    lives = world_named(args.world)
    catalog = world_catalog(lives, str(ROOT / "examples" / "bank"), DEFAULT_START)
    with VARIANTS[args.variant](catalog) as patched:
        m = run_policy(
            "nextbest",
            args.seed,
            args.customers,
            args.days,
            catalog=patched,
            model=world_response(lives),
            world=lives,
        )
    value = {o.id: o.spec.value for o in catalog.offers.values()}
    print(f"{args.variant} {args.world} seed {args.seed}: expected clicks {m.expected_clicks:.1f}")
    print(
        "| offer | value | shown | logged P(click) summed | mean position "
        "| learned | predicted before learning, summed | clicks |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for o in sorted(shown, key=lambda o: (-value[o], o)):
        s, lr = shown[o], learned[o]
        print(
            f"| {o} | {value[o]:.0f} | {s[0]:.0f} | {s[1]:.1f} | {s[2] / max(s[0], 1):.2f} "
            f"| {lr[0]:.0f} | {lr[1]:.1f} | {lr[2]:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
