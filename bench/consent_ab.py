"""Benchmark: consent filtering on and off in one process, on the same profiles.

    nice -n 19 .venv/bin/python bench/consent_ab.py

Folds ``bench/consent.py``'s customers once per consent choice (as the catalog's defaults,
marketing off, personalization off, transactional withdrawn everywhere, transactional
withdrawn for marketing), then times ``decide.decide`` (home_feed and app_home, the thread's
CPU clock, the cyclic GC paused) with consent filtering as built, and with it switched off
(``ConsentRules.hidden`` answering "nothing hidden" but the guard's findings for the
commercial view: what a decision read before consent per source), alternating rounds.
The decisions differ where the filtering hides something: this is the cost of the
filtering and of what the views make the rules do (a hidden feature sends its rule to
CEL), not of the same work. Results: ``bench/results/consent_ab.json``.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

import consent as setup
from nextbest.decide import DecisionRequest, decide
from nextbest.events import parse_batch
from nextbest.profile import Profile, fold
from nextbest.profile.consent import SECURITY_DATA, ConsentRules, View
from nextbest.store.catalog_files import load_catalog

HERE = Path(__file__).resolve().parent
CHOICES: dict[str, dict[str, Any] | None] = {
    "defaults": None,
    "marketing_off": {"marketing": False},
    "personalization_off": {"personalization": False},
    "transactional_withdrawn": {"sources": {"transactional": False}},
    "transactional_not_for_marketing": {
        "marketing": {"granted": True, "sources": {"transactional": False}}
    },
}
_HIDDEN = ConsentRules.hidden


def _off(self: ConsentRules, consent: Any, grants: Any, view: View) -> frozenset[str]:
    return frozenset({SECURITY_DATA}) if view is View.COMMERCIAL else frozenset()


def _quantiles(times: list[int]) -> dict[str, float]:
    s = sorted(times)
    return {
        "n": len(s),
        "p50_us": s[len(s) // 2] / 1_000,
        "p99_us": s[int(0.99 * len(s))] / 1_000,
        "mean_us": round(sum(s) / len(s) / 1_000, 2),
    }


def main() -> None:
    customers, rounds = int(os.environ.get("CUSTOMERS", "1000")), 4
    catalog = load_catalog(HERE.parent / "examples" / "bank")
    requests = [DecisionRequest(placement=p) for p in ("home_feed", "app_home")]
    started, load = time.time(), os.getloadavg()
    out: dict[str, Any] = {}
    for name, choice in CHOICES.items():
        setup.CONSENTS[:] = [(1.0, choice)]
        rng = random.Random(11)
        profiles = []
        for i in range(customers):
            body = msgspec.json.encode({"batch": setup._messages(rng, f"c{i}")})
            p = Profile(customer_id=f"c{i}", user_id=f"c{i}")
            for e in sorted(parse_batch(body, setup.T0 + setup.DAY), key=lambda e: e.timestamp):
                fold(p, e, catalog.matcher, catalog.fold_config)
            profiles.append(p)
        times: dict[str, list[int]] = {"on": [], "off": []}
        for r in range(rounds):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                ConsentRules.hidden = _HIDDEN if mode == "on" else _off  # type: ignore[method-assign]
                for p in profiles[:100]:
                    for q in requests:
                        decide(catalog, p, q, setup.T0, "w")
                clock = time.thread_time_ns
                gc.disable()
                for p in profiles:
                    for q in requests:
                        t = clock()
                        decide(catalog, p, q, setup.T0, "d")
                        times[mode].append(clock() - t)
                gc.enable()
        ConsentRules.hidden = _HIDDEN  # type: ignore[method-assign]
        on, off = _quantiles(times["on"]), _quantiles(times["off"])
        added = {k: round(on[k] - off[k], 2) for k in ("p50_us", "p99_us", "mean_us")}
        out[name] = {"on": on, "off": off, "added_us": added}
        print(name, json.dumps(out[name]), file=sys.stderr)
    record = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "load_average": [round(x, 2) for x in load],
        "customers": customers,
        "results": out,
    }
    (HERE / "results" / "consent_ab.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
