"""Benchmark: what consent per data source costs a decision, same run, against another tree.

    nice -n 19 .venv/bin/python bench/consent.py --base /tmp/nextbest-base
    nice -n 19 .venv/bin/python bench/consent.py --base /tmp/nextbest-base --quick

``--base``: a checkout of the code before (``git archive <commit> | tar -x -C <dir>``). Each
round runs this script's ``--child`` in a fresh process on one tree, then on the other
(alternating, so both share the machine's load), and each child: loads its tree's example
bank catalog, folds the same seeded customers (pages, calculator use, transactions, an
overdraft, products; consent: 55 % as the catalog's defaults, 15 % marketing off, 10 %
personalization off, 10 % transactional withdrawn everywhere, 10 % transactional withdrawn
for marketing only: a tree without sources ignores those), then times the pure
``decide.decide`` on ``home_feed`` and ``app_home`` for every customer, the cyclic GC
paused, by the wall clock and by the thread's CPU clock (``time.thread_time_ns``: what a
loaded machine's preemptions do not inflate). The catalog's guard is on in both trees (the
identity-theft guard's cost is in both).

Results: ``bench/results/consent.json`` (``consent_quick.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
T0 = 1_790_157_600.0
DAY = 86_400.0
URLS = [
    "https://bank.example/mortgages/rates",
    "https://bank.example/loans/car/new",
    "https://bank.example/pension/plan",
    "https://bank.example/savings/children",
    "https://bank.example/investing/start",
    "https://bank.example/cards/gold",
]
CONSENTS: list[tuple[float, dict[str, Any] | None]] = [
    (0.55, None),
    (0.15, {"marketing": False}),
    (0.10, {"personalization": False}),
    (0.10, {"sources": {"transactional": False}}),
    (0.10, {"marketing": {"granted": True, "sources": {"transactional": False}}}),
]


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _messages(rng: random.Random, user: str) -> list[dict[str, Any]]:
    n = 0

    def msg(kind: str, at: float, **fields: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {
            "type": kind,
            "messageId": f"{user}-{n}",
            "timestamp": _iso(at),
            "userId": user,
            **fields,
        }

    pick = rng.random()
    consent = None
    for share, choice in CONSENTS:
        if pick < share:
            consent = choice
            break
        pick -= share
    traits: dict[str, Any] = {"age": rng.randint(18, 80)}
    if consent is not None:
        traits["consent"] = consent
    out = [msg("identify", T0 - 60 * DAY, traits=traits)]
    for _ in range(rng.randint(3, 30)):
        at = T0 - rng.random() * 30 * DAY
        out.append(msg("page", at, properties={"url": rng.choice(URLS)}))
    for _ in range(rng.randint(0, 5)):
        at = T0 - rng.random() * 30 * DAY
        props = {"amount": 10.0, "balance": round(rng.uniform(-500, 20_000), 2)}
        out.append(msg("track", at, event="Transaction Posted", properties=props))
    if rng.random() < 0.1:
        props = {"balance": -100.0}
        out.append(msg("track", T0 - 3_600, event="Overdraft Started", properties=props))
    if rng.random() < 0.3:
        props = {"product": rng.choice(["credit_card", "mortgage", "car_loan"])}
        out.append(msg("track", T0 - 5 * DAY, event="Product Opened", properties=props))
    return out


def _child(customers: int, seed: int, repeat: int) -> dict[str, Any]:
    """Fold and time in this process, on whatever ``nextbest`` is importable."""
    import msgspec

    import nextbest
    from nextbest.decide import DecisionRequest, decide
    from nextbest.events import parse_batch
    from nextbest.profile import Profile, fold
    from nextbest.store.catalog_files import load_catalog

    root = Path(nextbest.__file__).resolve().parents[2]
    catalog = load_catalog(root / "examples" / "bank")
    rng = random.Random(seed)
    profiles = []
    for i in range(customers):
        user = f"c{i}"
        body = msgspec.json.encode({"batch": _messages(rng, user)})
        profile = Profile(customer_id=user, user_id=user)
        for event in sorted(parse_batch(body, T0 + DAY), key=lambda e: e.timestamp):
            fold(profile, event, catalog.matcher, catalog.fold_config)
        profiles.append(profile)
    requests = [DecisionRequest(placement=p) for p in ("home_feed", "app_home")]
    for profile in profiles[:200]:  # warm-up
        for request in requests:
            decide(catalog, profile, request, T0, "w")
    times: list[int] = []
    cpu: list[int] = []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    gc.disable()
    try:
        for _ in range(repeat):
            for profile in profiles:
                for request in requests:
                    start, start_cpu = clock(), cpu_clock()
                    decide(catalog, profile, request, T0, "d")
                    cpu.append(cpu_clock() - start_cpu)
                    times.append(clock() - start)
    finally:
        gc.enable()
    return {"root": str(root), "times_ns": times, "cpu_ns": cpu}


def _quantiles(times: list[int]) -> dict[str, float]:
    s = sorted(times)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))] / 1_000

    return {
        "n": len(s),
        "p50_us": q(0.5),
        "p90_us": q(0.9),
        "p99_us": q(0.99),
        "mean_us": sum(s) / len(s) / 1_000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="the tree to compare with (its src/ is imported)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--customers", type=int, default=3_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        json.dump(_child(args.customers, args.seed, args.repeat), sys.stdout)
        return
    if args.quick:
        args.rounds, args.customers, args.repeat = 2, 500, 1
    trees = {"this": HERE.parent}
    if args.base is not None:
        trees["base"] = args.base.resolve()
    gathered: dict[str, list[int]] = {name: [] for name in trees}
    gathered_cpu: dict[str, list[int]] = {name: [] for name in trees}
    loads = [os.getloadavg()]
    started = time.time()
    for r in range(args.rounds):
        order = list(trees.items()) if r % 2 == 0 else list(reversed(trees.items()))
        for name, tree in order:
            env = {**os.environ, "PYTHONPATH": str(tree / "src")}
            cmd = [sys.executable, __file__, "--child", "--customers", str(args.customers)]
            cmd += ["--seed", str(args.seed), "--repeat", str(args.repeat)]
            out = subprocess.run(cmd, env=env, capture_output=True, check=True, text=True)
            got = json.loads(out.stdout)
            assert Path(got["root"]) == tree, (got["root"], tree)
            gathered[name] += got["times_ns"]
            gathered_cpu[name] += got["cpu_ns"]
            print(f"round {r + 1} {name}: {_quantiles(got['cpu_ns'])} (CPU)", file=sys.stderr)
        loads.append(os.getloadavg())
    summary: dict[str, Any] = {}
    for kind, found in (("wall", gathered), ("cpu", gathered_cpu)):
        part: dict[str, Any] = {name: _quantiles(times) for name, times in found.items()}
        if "base" in part:
            part["ratio"] = {
                k: round(part["this"][k] / part["base"][k], 3)
                for k in ("p50_us", "p90_us", "p99_us", "mean_us")
            }
            part["added_us"] = {
                k: round(part["this"][k] - part["base"][k], 2)
                for k in ("p50_us", "p90_us", "p99_us", "mean_us")
            }
        summary[kind] = part
    record = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "load_average": [round(x, 2) for x in loads[0]] + [round(max(a[0] for a in loads), 2)],
        "args": {k: str(v) for k, v in vars(args).items()},
        "summary": summary,
    }
    name = "consent_quick.json" if args.quick else "consent.json"
    (HERE / "results" / name).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["summary"], indent=2))
    print(
        "load average (1, 5, 15 min at the start; the highest 1-min seen):", record["load_average"]
    )


if __name__ == "__main__":
    main()
