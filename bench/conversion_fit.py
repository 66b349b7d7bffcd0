"""What the conversion model's joint fit costs per outcome and per prediction (issue #14).

``ConversionModel`` fits the offers' base rates and the intent factors together
(``JOINT_ROUNDS`` rounds). Before the throttle, it refitted the first time a prediction needed
the fit after any outcome was learned (a click converted, or its window closed without a
conversion): the first decision after each outcome paid for a fit. With the throttle
(``REFIT_DIVISOR``), the fit is done as an outcome is learned, once per N outcomes (N a
fiftieth of all outcomes), and predictions read the last fit.

Here a catalog's offers (``--catalog example``: the example bank's 20; ``bench``: the
150-offer catalog of ``bench/decide.py``, ``catalog_gen``) get ``--outcomes`` seeded outcomes
spread over the intent levels, then ``--samples`` times: one more outcome learned and one
prediction, timed together (whichever of the two pays the fit: the mean is the amortised cost
per outcome), one prediction more (the fit cached) and the per-offer ``rate`` (no fit), the
baseline in the same run. Runs on a tree with or without the throttle (the model's
constructor takes the offers, or not; ``fits`` is counted where the model keeps the count).

    PYTHONPATH=$PWD/src .venv/bin/python bench/conversion_fit.py [--catalog bench]
"""

from __future__ import annotations

import argparse
import inspect
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import EXAMPLE_CATALOG, percentile
from catalog_gen import write_catalog
from nextbest.catalog.compiled import Catalog
from nextbest.catalog.model import OfferKind
from nextbest.learn.conversion import ConversionModel
from nextbest.store.catalog_files import load_catalog


def catalog_of(name: str, seed: int) -> Catalog:
    """The example bank, or ``bench/decide.py``'s generated 150-offer catalog."""
    if name == "example":
        return load_catalog(EXAMPLE_CATALOG)
    with tempfile.TemporaryDirectory(prefix="nextbest-convfit-") as tmp:
        folder = Path(tmp) / "catalog"
        write_catalog(folder, seed, 124, 30, learning="contextual")
        return load_catalog(folder)


def new_model(strength: float, offers: dict[str, Any]) -> Any:
    """A model of the tree on the path: with the offers where its constructor takes them."""
    if "offers" in inspect.signature(ConversionModel).parameters:
        return ConversionModel(strength, offers)  # type: ignore[call-arg,unused-ignore]
    return ConversionModel(strength)  # type: ignore[call-arg,unused-ignore]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", choices=("example", "bench"), default="example")
    ap.add_argument("--outcomes", type=int, default=5_000, help="outcomes learned first")
    ap.add_argument("--samples", type=int, default=2_000, help="timed calls of each kind")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    catalog = catalog_of(args.catalog, args.seed)
    offers = dict(catalog.offers)
    ids = sorted(offers)
    rng = random.Random(args.seed)
    model = new_model(catalog.spec.scoring.conversion_strength, offers)
    takes_offers = "offers" in inspect.signature(model.predict).parameters
    extra = (offers,) if takes_offers else ()
    for _ in range(args.outcomes):
        model.learn(rng.choice(ids), rng.random() < 0.2, rng.randrange(3))
    commercial = [o for o in offers.values() if o.kind is OfferKind.COMMERCIAL]
    fits0 = getattr(model, "fits", None)
    fit, cached, rate = [], [], []
    for i in range(args.samples):
        offer = commercial[i % len(commercial)]
        outcome = (rng.choice(ids), rng.random() < 0.2, rng.randrange(3))
        t0 = time.perf_counter_ns()
        model.learn(*outcome)
        model.predict(offer, 1, *extra)
        t1 = time.perf_counter_ns()
        model.predict(offer, 1, *extra)
        t2 = time.perf_counter_ns()
        model.rate(offer)
        t3 = time.perf_counter_ns()
        fit.append(t1 - t0)
        cached.append(t2 - t1)
        rate.append(t3 - t2)
    fits = None if fits0 is None else model.fits - fits0
    print(
        f"{len(offers)} offers ({len(commercial)} commercial), {args.outcomes} outcomes first, "
        f"{args.samples} samples (µs); fits during the samples: {fits}"
    )
    rows = (
        ("outcome + predict", fit),
        ("predict, fit cached", cached),
        ("rate (baseline)", rate),
    )
    for name, ns in rows:
        mean = sum(ns) / len(ns) / 1e3
        ns.sort()
        p50, p99 = percentile(ns, 50) / 1e3, percentile(ns, 99) / 1e3
        print(f"  {name:<20} p50 {p50:8.2f}  p99 {p99:8.2f}  mean {mean:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
