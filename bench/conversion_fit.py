"""What the conversion model's joint fit costs a decision (issue #14).

``ConversionModel`` fits the offers' base rates and the intent factors together
(``JOINT_ROUNDS`` rounds) the first time a prediction needs them after an outcome was learned
(a click converted, or its window closed without a conversion): the first decision after each
outcome pays for the fit, every other one reads the cached fit. Here the example bank's
offers get ``--outcomes`` seeded outcomes spread over the intent levels, then ``--samples``
times one more outcome and one prediction (the fit and the prediction), and as many
predictions alone (cached). The baseline in the same run: ``rate``, the per-offer posterior
mean that needs no fit.

    PYTHONPATH=$PWD/src .venv/bin/python bench/conversion_fit.py
"""

from __future__ import annotations

import argparse
import random
import time

from _common import EXAMPLE_CATALOG, percentile
from nextbest.catalog.model import OfferKind
from nextbest.learn.conversion import ConversionModel
from nextbest.store.catalog_files import load_catalog


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outcomes", type=int, default=5_000, help="outcomes learned first")
    ap.add_argument("--samples", type=int, default=2_000, help="timed calls of each kind")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    catalog = load_catalog(EXAMPLE_CATALOG)
    offers = dict(catalog.offers)
    ids = sorted(offers)
    rng = random.Random(args.seed)
    model = ConversionModel(catalog.spec.scoring.conversion_strength)
    for _ in range(args.outcomes):
        model.learn(rng.choice(ids), rng.random() < 0.2, rng.randrange(3))
    commercial = [o for o in offers.values() if o.kind is OfferKind.COMMERCIAL]
    fit, cached, rate = [], [], []
    for i in range(args.samples):
        offer = commercial[i % len(commercial)]
        model.learn(rng.choice(ids), rng.random() < 0.2, rng.randrange(3))
        t0 = time.perf_counter_ns()
        model.predict(offer, 1, offers)
        t1 = time.perf_counter_ns()
        model.predict(offer, 1, offers)
        t2 = time.perf_counter_ns()
        model.rate(offer)
        t3 = time.perf_counter_ns()
        fit.append(t1 - t0)
        cached.append(t2 - t1)
        rate.append(t3 - t2)
    print(f"{len(offers)} offers, {args.outcomes} outcomes first, {args.samples} samples (µs)")
    for name, ns in (("fit + predict", fit), ("predict, fit cached", cached), ("rate", rate)):
        ns.sort()
        p50, p99 = percentile(ns, 50) / 1e3, percentile(ns, 99) / 1e3
        print(f"  {name:<20} p50 {p50:8.2f}  p99 {p99:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
