"""Micro-benchmark: the fold's cost per ``Transaction Posted``, before and after the
core-banking features of the service insights (``profile.banking``), in the same run.

    nice -n 19 .venv/bin/python bench/fold_banking.py --baseline fd9bffa --events 200000

The baseline is the fold module as it was at ``--baseline`` (read with ``git show`` and
loaded beside the current one: same Profile, same catalog, same parsed events); each
variant folds the same stream of one customer's transactions into a fresh profile, rounds
alternate between the two, and the median round per event is reported (CPU time of the
process, so other processes on a busy machine count less). Three streams:
``balance`` (amount and balance: what the simulator and most core systems send), ``merchant``
(the same with a merchant: the subscription detector runs) and ``fee`` (overdraft fees
with a negative balance: fees, spells, daily balances). ``--streams`` adds others: ``page``
(a customer's mortgage page views, four a day: the behavioral events most traffic is) and
``mixed`` (page views and posted transactions alternating: both sources' counters).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import orjson

from _common import ROOT, load_average, machine_info, now_iso
from nextbest.events import parse_batch
from nextbest.profile import Profile
from nextbest.profile.fold import fold as current_fold
from nextbest.store.catalog_files import load_catalog

T0 = 1_767_225_600.0  # 2026-01-01
DAY = 86_400.0


def baseline_fold(ref: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{ref}:src/nextbest/profile/fold.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("nextbest_fold_baseline", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{ref}:fold.py", "exec"), module.__dict__)
    return module


def _page(i: int, at: float) -> dict[str, Any]:
    return {
        "type": "page",
        "userId": "u",
        "messageId": f"m{i}",
        "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
        "properties": {"url": "https://bank.example/mortgages/rates"},
    }


def stream(kind: str, n: int) -> list[Any]:
    messages = []
    for i in range(n):
        at = T0 + i * (DAY / 4)  # four a day
        if kind == "page" or (kind == "mixed" and i % 2 == 0):
            messages.append(_page(i, at))
            continue
        props: dict[str, Any] = {"amount": -12.5, "currency": "EUR", "balance": 1_000.0 - i % 50}
        if kind == "merchant":
            props["merchant"] = f"shop-{i % 40}"
        elif kind == "fee":
            props.update(category="overdraft_fee", balance=-50.0 - i % 7)
        messages.append(
            {
                "type": "track",
                "event": "Transaction Posted",
                "userId": "u",
                "messageId": f"m{i}",
                "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
                "properties": props,
            }
        )
    out = []
    for k in range(0, n, 500):
        out.extend(parse_batch(orjson.dumps({"batch": messages[k : k + 500]}), T0 + n * DAY))
    return out


def per_event(fold: Any, events: list[Any], catalog: Any) -> float:
    profile = Profile(customer_id="u", user_id="u")
    matcher, cfg = catalog.matcher, catalog.fold_config
    began = time.process_time_ns()
    for e in events:
        fold(profile, e, matcher, cfg)
    return (time.process_time_ns() - began) / len(events)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="fd9bffa")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--streams", default="balance,merchant,fee", help="also: page, mixed")
    args = ap.parse_args(argv)
    catalog = load_catalog(ROOT / "examples" / "bank")
    old = baseline_fold(args.baseline).fold
    load = load_average()
    rows = []
    for kind in args.streams.split(","):
        events = stream(kind, args.events)
        before: list[float] = []
        after: list[float] = []
        for _ in range(args.rounds):
            before.append(per_event(old, events, catalog))
            after.append(per_event(current_fold, events, catalog))
        b, a = statistics.median(before), statistics.median(after)
        rows.append((kind, b, a))
        print(f"{kind}: {b:.0f} ns -> {a:.0f} ns", file=sys.stderr, flush=True)
    print(f"{now_iso()}; {machine_info()}; load average at start {load}")
    print("| stream | before (ns/event) | after (ns/event) | after / before |")
    print("| --- | ---: | ---: | ---: |")
    for kind, b, a in rows:
        print(f"| {kind} | {b:.0f} | {a:.0f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
