"""Benchmark: the service insights' campaigns on the synthetic bank, measured like any campaign.

    nice -n 19 .venv/bin/python bench/insights.py --seeds 1,2,3 --customers 3000 --days 45
    .venv/bin/python bench/insights.py --seeds 1 --customers 300 --days 10  # smoke

The synthetic bank's customers live the hidden money life behind the insights
(``nextbest.sim.money``: overdraft fees, subscriptions whose price rises, idle cash); the
``nextbest`` policy decides every page on the example bank's catalog, whose three insights
(``overdraft_fee_insight``, ``idle_cash_insight``, ``price_rise_insight``) each sit in a
campaign with a 20 % control group. Customers act on a true insight by themselves now and
then, and more often after clicking it. After the run each campaign's result is read from
the engine's own experiment counters (``usecases.experiment_result``, what ``GET
/v1/experiments/{id}`` returns): exposed customers and KPI rate per arm, the relative lift
with its interval, the p-value (sequential, as the API reports them, and the same counters
read with a fixed-horizon test: one look at the end of the run). Nothing here reads the
hidden money life into the engine.

Prints a Markdown table (one row per seed and campaign) and writes
``insights-seeds{S}.json`` in ``--out`` (``bench/results`` by default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from _common import ROOT, command_line, load_average, machine_info, now_iso
from nextbest.experiments.report import campaign_result
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import SiteLoop
from nextbest.sim.money import INSIGHT_KPIS, MoneyParams
from nextbest.sim.policies import make_policy
from nextbest.sim.worlds import DEFAULT_WORLD, world_catalog, world_named
from nextbest.usecases import experiment_result

CAMPAIGNS = {
    "overdraft_fee_help": "overdraft_fee_insight",
    "idle_cash_savings": "idle_cash_insight",
    "subscription_price_rises": "price_rise_insight",
}


def run_seed(seed: int, customers: int, days: int) -> dict[str, Any]:
    world = world_named(DEFAULT_WORLD)
    catalog = world_catalog(world, ROOT / "examples" / "bank", DEFAULT_START)
    began = time.perf_counter()
    loop = SiteLoop(
        make_policy("nextbest"), catalog, seed, customers, world=world, money=MoneyParams()
    )
    for d in range(days):
        loop.run_day(d)
        print(f"seed {seed}: day {d + 1}/{days}", file=sys.stderr, flush=True)
    counters = loop.engine.experiment_counters()
    out: dict[str, Any] = {"seed": seed, "campaigns": {}}
    for camp, offer in CAMPAIGNS.items():
        result = experiment_result(loop.engine.catalog, counters, camp)
        arms = {a.arm: a for a in result.kpis[0].arms} if result.kpis else {}
        control, treated = arms.get("control"), arms.get("treatment")
        # the same counters read with a fixed-horizon test (one look, at the end of the run)
        spec = loop.engine.catalog.campaigns[camp]
        fixed = campaign_result(
            spec, loop.engine.catalog.kpis.get(camp, []), counters.get(camp), sequential=False
        )
        fixed_arm = next((a for a in fixed.kpis[0].arms if a.arm == "treatment"), None)
        out["campaigns"][camp] = {
            "offer": offer,
            "kpi": INSIGHT_KPIS[offer],
            "impressions": loop.impressions.get(offer, 0),
            "clicks": loop.clicks.get(offer, 0),
            "acted_after_click": loop.insight_actions.get(offer, 0),
            "control_exposed": control.exposed if control else 0,
            "control_rate": control.rate if control else None,
            "treatment_exposed": treated.exposed if treated else 0,
            "treatment_rate": treated.rate if treated else None,
            "lift": treated.lift if treated else None,
            "ci_lower": treated.ci_lower if treated else None,
            "ci_upper": treated.ci_upper if treated else None,
            "p_value": treated.p_value if treated else None,
            "fixed_ci_lower": fixed_arm.ci_lower if fixed_arm else None,
            "fixed_ci_upper": fixed_arm.ci_upper if fixed_arm else None,
            "fixed_p_value": fixed_arm.p_value if fixed_arm else None,
            "verdict": str(result.verdict),
        }
    metrics = loop.finish(time.perf_counter() - began)
    out["wall_seconds"] = metrics.wall_seconds
    out["impressions"] = metrics.impressions
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.0f} %"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| seed | campaign | shown | clicks | acted | control n, rate | treated n, rate "
        "| lift [sequential 95 %] | p | [fixed-horizon 95 %] | p |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | --- | ---: | --- | ---: |",
    ]
    for run in runs:
        for camp, r in run["campaigns"].items():
            p = "-" if r["p_value"] is None else f"{r['p_value']:.3f}"
            fp = "-" if r["fixed_p_value"] is None else f"{r['fixed_p_value']:.3f}"
            rows.append(
                f"| {run['seed']} | {camp} | {r['impressions']} | {r['clicks']} | "
                f"{r['acted_after_click']} | {r['control_exposed']}, {_rate(r['control_rate'])} | "
                f"{r['treatment_exposed']}, {_rate(r['treatment_rate'])} | {_pct(r['lift'])} "
                f"[{_pct(r['ci_lower'])}, {_pct(r['ci_upper'])}] | {p} | "
                f"[{_pct(r['fixed_ci_lower'])}, {_pct(r['fixed_ci_upper'])}] | {fp} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    load = load_average()
    runs = [run_seed(s, args.customers, args.days) for s in seeds]
    report = {
        "command": command_line(),
        "date": now_iso(),
        "machine": machine_info(),
        "load_average": load,
        "customers": args.customers,
        "days": args.days,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.out / f"insights-seeds{'-'.join(map(str, seeds))}.json"
    name.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(table(runs))
    print(f"\nwritten: {name}; load average at start {load}", file=sys.stderr)


if __name__ == "__main__":
    main()
