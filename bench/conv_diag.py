"""Why do nextbest's clicks convert less than greedy_recent's? (issue #14, "conversions per
click"). Instrumented from the bench side: the engine is not touched.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/conv_diag.py --world shelf --seed 1 \\
        --policies greedy_recent,nextbest,oracle --out bench/results/conv_diag/shelf-1.json

Every impression a policy shows is filed with the simulator's true P(click) and
P(conversion | click) (``Metrics.expected_conversions``'s conditions: an open need for the
offer's product) under what the engine could see (the customer's page views of the offer's
topic in the last 14 days, greedy_recent's key; the intent level the conversion model files a
click under; whether the item was explored; the offer's value) and what it could not (an
open need for the offer's topic: a click without one is a curiosity click). For nextbest's
decisions it also scores, on the same decision (same candidates, same state), what
greedy_recent would have shown: expected clicks and conversions of both in the same slots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import ROOT, machine_info, now_iso
from nextbest.decide import ranking
from nextbest.decide.model import Decision
from nextbest.learn.conversion import intent_level
from nextbest.learn.features import customer_features
from nextbest.profile.windows import count_in_days
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import SiteLoop
from nextbest.sim.policies import RECENT_DAYS, make_policy, service_tier
from nextbest.sim.worlds import world_catalog, world_named, world_response


def _rv_bucket(n: int) -> str:
    return "0" if n == 0 else ("1" if n == 1 else ("2-3" if n <= 3 else "4+"))


def _value_bucket(v: float) -> str:
    return "<=60" if v <= 60 else ("61-150" if v <= 150 else ">150")


class Tally:
    """Sums of impressions, expected clicks, expected conversions, expected value per key."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(lambda: [0.0] * 6)
        )

    def add(self, dim: str, key: str, *xs: float) -> None:
        r = self.rows[dim][key]
        r[0] += 1
        for j, x in enumerate(xs, start=1):
            r[j] += x

    def out(self) -> dict[str, dict[str, list[float]]]:
        return {
            d: {k: [round(x, 3) for x in v] for k, v in sorted(r.items())}
            for d, r in self.rows.items()
        }


class DiagLoop(SiteLoop):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.tally = Tally()
        self.cf = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0]  # nb clicks, conv, value; greedy's; decisions
        self.cf_split: dict[str, list[float]] = defaultdict(lambda: [0.0] * 7)
        self.learned: list[dict[str, Any]] = []

    def _true(
        self, i: int, d: int, offer_id: str, position: int, before: int
    ) -> tuple[float, float]:
        """True P(click) and expected conversions after a click (``SiteLoop.true_odds``)."""
        sim = self.sims[i]
        age = sim.c.age_on(sim.start + timedelta(days=d))
        p, converted, convertible = self.true_odds(
            sim, d, offer_id, position, before, sim.strengths(d), age
        )
        return p, converted if convertible else 0.0

    def _respond(self, i: int, d: int, ts: float, page: dict[str, Any], decision: Decision) -> None:
        chosen = [item.offer_id for item in decision.items]
        if not chosen or decision.items[0].advisor is not None or self.policy.name == "none":
            super()._respond(i, d, ts, page, decision)
            return
        rows = self._file(i, d, decision)
        clicks0 = {o: self.clicks[o] for o in chosen}
        conv0 = {o: self.offer_conversions[o] for o in chosen}
        super()._respond(i, d, ts, page, decision)
        for oid, keys, p, conv, val in rows:
            c = float(self.clicks[oid] - clicks0[oid])
            v = float(self.offer_conversions[oid] - conv0[oid])
            for dim, key in keys:
                self.tally.add(dim, key, p, conv, val, c, v)

    def _file(self, i: int, d: int, decision: Decision) -> list[Any]:
        engine, sim, shown = self.engine, self.sims[i], self.shown[i]
        now = decision.timestamp
        cat = self.catalog
        half = cat.scoring.half_saturation

        def read(profile: Any, _now: float) -> tuple[dict[str, int], dict[str, float]]:
            rv = {
                t: count_in_days(it.hits, RECENT_DAYS, now) for t, it in profile.interests.items()
            }
            x = customer_features(profile, cat.topics, now, {})
            return rv, x

        got = engine.read_profile(decision.customer_id, read)
        rv, x = got if got is not None else ({}, {})
        needs = sim.strengths(d)
        rows: list[Any] = []
        for item in decision.items:
            offer = cat.offers[item.offer_id]
            p, conv = self._true(i, d, item.offer_id, item.position, shown[item.offer_id])
            val = conv * offer.spec.value
            t = offer.topic
            n = rv.get(t, 0) if t else 0
            lvl = intent_level(ranking.interest_score(x, t), half) if t else -1
            s = needs.get(t, 0.0) if t else 0.0
            need = (
                "service"
                if service_tier(offer) == 0
                else ("open_need" if conv > 0 else ("need_no_product" if s > 0 else "no_need"))
            )
            lvl_dec = (
                intent_level(ranking.interest_score(decision.features, t), half)
                if t and decision.features
                else -1
            )
            keys = (
                ("all", "all"),
                ("intent_dec", str(lvl_dec)),
                ("placement_rv", f"{decision.placement}|{_rv_bucket(n)}"),
                ("recent_views", _rv_bucket(n)),
                ("intent", str(lvl)),
                ("explored", str(item.explored)),
                ("value", _value_bucket(offer.spec.value)),
                ("offer", item.offer_id),
                ("hidden_need", need),
                ("position", str(item.position)),
                ("placement", decision.placement),
                ("rv_x_need", f"{_rv_bucket(n)}|{need}"),
            )
            rows.append((item.offer_id, keys, p, conv, val))
        if self.policy.name == "nextbest":
            self._counterfactual(i, d, decision, rv)
        return rows

    def _counterfactual(self, i: int, d: int, decision: Decision, rv: dict[str, int]) -> None:
        """greedy_recent's picks among the same candidates, same slots, same state."""
        cat, shown = self.catalog, self.shown[i]
        cands = [c for c in decision.candidates if c in cat.offers]
        urgent = set(decision.urgent)
        k = len(decision.items)

        def key(oid: str) -> tuple[int, int, int, int, str]:
            o = cat.offers[oid]
            return (
                0 if oid in urgent else 1,
                service_tier(o),
                -(rv.get(o.topic, 0) if o.topic else 0),
                -o.spec.priority,
                oid,
            )

        greedy = sorted(cands, key=key)[:k]
        nb = [it.offer_id for it in decision.items]
        row = [0.0] * 7
        for pos, oid in enumerate(nb, start=1):
            p, c = self._true(i, d, oid, pos, shown[oid])
            row[0] += p
            row[1] += c
            row[2] += c * cat.offers[oid].spec.value
        for pos, oid in enumerate(greedy, start=1):
            p, c = self._true(i, d, oid, pos, shown[oid])
            row[3] += p
            row[4] += c
            row[5] += c * cat.offers[oid].spec.value
        row[6] = 1
        same = "same" if nb == greedy else ("same_set" if set(nb) == set(greedy) else "differs")
        explored = "explored" if any(it.explored for it in decision.items) else "greedy"
        maxrv = max((rv.get(cat.offers[o].topic or "", 0) for o in cands), default=0)
        for split in ("all", same, explored, f"rv_any:{maxrv > 0}", decision.placement):
            acc = self.cf_split[split]
            for j in range(7):
                acc[j] += row[j]

    def run_day(self, d: int) -> None:
        super().run_day(d)
        if self.policy.name == "nextbest" and (d + 1) % 5 == 0:
            conv = self.engine.learner.conversions
            self.learned.append(
                {
                    "day": d + 1,
                    "factors": [round(f, 3) for f in conv.factors(self.catalog.offers)],
                    "intent_counts": _by_level(conv.intent_counts()),
                    "rates": {
                        o.id: round(conv.rate(o), 4)
                        for o in sorted(self.catalog.offers.values(), key=lambda o: o.id)
                    },
                }
            )


def _by_level(rows: list[tuple[str, int, float, float]]) -> list[list[float]]:
    out = [[0.0, 0.0] for _ in range(3)]
    for _, lv, c, n in rows:
        out[lv][0] += c
        out[lv][1] += n
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", default="shelf")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--policies", default="greedy_recent,nextbest,oracle")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    lives = world_named(a.world)
    catalog = world_catalog(lives, str(ROOT / "examples" / "bank"), DEFAULT_START)
    model = world_response(lives)
    result: dict[str, Any] = {
        "benchmark": "conv_diag",
        "date": now_iso(),
        "machine": machine_info(),
        "world": a.world,
        "seed": a.seed,
        "customers": a.customers,
        "days": a.days,
        "offers": {
            o.id: [o.topic, o.spec.value, o.base_conversion] for o in catalog.offers.values()
        },
        "policies": {},
    }
    for name in a.policies.split(","):
        began = time.perf_counter()
        loop = DiagLoop(make_policy(name), catalog, a.seed, a.customers, model=model, world=lives)
        for d in range(a.days):
            loop.run_day(d)
        m = loop.finish(time.perf_counter() - began)
        result["policies"][name] = {
            "expected_clicks": m.expected_clicks,
            "expected_conversions": m.expected_conversions,
            "expected_value": m.expected_value,
            "tally": loop.tally.out(),
            "counterfactual": {k: [round(x, 3) for x in v] for k, v in loop.cf_split.items()},
            "learned": loop.learned,
        }
        print(
            f"[{time.strftime('%H:%M:%S')}] {name}: ec {m.expected_clicks:.1f} "
            f"econv {m.expected_conversions:.2f} {m.wall_seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
