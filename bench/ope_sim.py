"""Benchmark: does off-policy evaluation on one simulated week of logs predict a candidate's
online click rate?

One week of the synthetic bank is logged under the uniformly random policy (every item's
propensity is 1/n, exact) or under nextbest as configured (the example bank's exploration:
Thompson sampling since 2026-12-07, exact propensities; epsilon-greedy on the web placements
and Thompson sampling's Monte Carlo estimates on app_home before). Each candidate catalog is
then (1) estimated offline from those logs with IPS, SNIPS and DR (``nextbest.learn.offline``)
and (2) run online for the same week on the same population; the table compares the
estimate with the online CTR per shown slot, and also without replaying the candidate's
contact caps on its own impressions (``evaluate_candidate(..., replay_caps=False)``) and
with DR's history-free reward model (``fatigue=False``: no wear-out term), for comparison;
the fitted fades (share of the click rate kept per earlier impression, by offer kind) are in
the JSON.

    .venv/bin/python bench/ope_sim.py --seed 1 --customers 30000 --days 7 --logging random \
        --out bench/results/ope_sim_random.json
    .venv/bin/python bench/ope_sim.py --seed 1 --customers 30000 --days 7 --logging nextbest \
        --out bench/results/ope_sim_nextbest.json

``--no-fatigue`` runs the same weeks in a world where an offer's appeal does not fade with
repeated impressions (``fatigue_decay: 1`` for both kinds): slot-level OPE assumes that a
customer's response does not depend on what they were shown before, and fatigue is the
world's main breach of that; the difference between the two runs measures it.
``--response FILE`` uses another response-parameter file (the shape of ``sim/response.yaml``).

Candidates: ``prior`` (the example bank ranked by its interest prior, learning off),
``no_interest`` (the same with ``interest_lift: 0``: value x weight only) and ``eager``
(``interest_lift: 12``, ``half_saturation: 1``: interest counts for much more).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import log, machine_info
from nextbest.catalog.compiled import Catalog
from nextbest.learn.logs import join_rewards
from nextbest.learn.offline import OfflineReport, evaluate_candidate
from nextbest.sim.loop import SiteLoop
from nextbest.sim.policies import NextbestPolicy, make_policy
from nextbest.sim.response import ResponseModel, load_params
from nextbest.store.catalog_files import load_catalog

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "bank"
SCORING = "scoring:\n  service_ctr: 0.08\n  commercial_ctr: 0.01\n  interest_lift: 10.0\n"
SCORING += "  half_saturation: 3.0\n"


def candidate(folder: Path, lift: float, half: float) -> Catalog:
    """The example bank without learning (greedy prior ranking) and with this scoring."""
    for f in EXAMPLE.glob("*.yaml"):
        text = f.read_text()
        if f.name == "placements.yaml":
            text = "\n".join(ln for ln in text.splitlines() if "learning:" not in ln) + "\n"
        if f.name == "policy.yaml":
            assert SCORING in text, "policy.yaml scoring block changed"
            text = text.replace(
                SCORING,
                f"scoring:\n  service_ctr: 0.08\n  commercial_ctr: 0.01\n"
                f"  interest_lift: {lift}\n  half_saturation: {half}\n",
            )
        (folder / f.name).write_text(text)
    return load_catalog(folder)


def run(loop: SiteLoop, days: int) -> SiteLoop:
    for d in range(days):
        loop.run_day(d)
    return loop


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument(
        "--logging",
        choices=("random", "nextbest"),
        default="random",
        help="the logging policy: uniformly random, or nextbest as configured (exploring)",
    )
    ap.add_argument("--response", default=None, help="response-parameter file (default: sim's)")
    ap.add_argument(
        "--no-fatigue", action="store_true", help="appeal does not fade with impressions"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ope_sim.json"))
    args = ap.parse_args(argv)
    began = time.perf_counter()
    params = load_params(args.response)
    if args.no_fatigue:
        click = params.click
        params = msgspec.structs.replace(
            params,
            click=msgspec.structs.replace(
                click,
                commercial=msgspec.structs.replace(click.commercial, fatigue_decay=1.0),
                service=msgspec.structs.replace(click.service, fatigue_decay=1.0),
            ),
        )
    model = ResponseModel(params)
    logging_catalog = load_catalog(EXAMPLE)
    log(f"logging {args.customers} customers x {args.days} days under {args.logging}")
    logged = run(
        SiteLoop(
            make_policy(args.logging), logging_catalog, args.seed, args.customers, model=model
        ),
        args.days,
    )
    logged.engine.flush()  # the decisions still buffered belong in the logs too
    engine = logged.engine
    events = (s.event for s in engine.event_log.scan(0))
    items = join_rewards(list(engine.decision_log.decisions()), events, logging_catalog)
    logged.finish()
    log(f"{len(items)} logged slots")
    tmp = Path(tempfile.mkdtemp(prefix="ope-sim-"))
    rows = []
    try:
        for name, lift, half in (
            ("prior", 10.0, 3.0),
            ("no_interest", 0.0, 3.0),
            ("eager", 12.0, 1.0),
        ):
            folder = tmp / name
            folder.mkdir()
            cat = candidate(folder, lift, half)
            report = evaluate_candidate(items, cat, n_bootstrap=200)
            plain = evaluate_candidate(items, cat, n_bootstrap=200, replay_caps=False)
            history_free = evaluate_candidate(items, cat, n_bootstrap=200, fatigue=False)
            online = run(
                SiteLoop(NextbestPolicy(), cat, args.seed, args.customers, model=model), args.days
            )
            metrics = online.finish()

            def figures(r: OfflineReport, ctr: float = metrics.ctr) -> dict[str, Any]:
                return {
                    e.estimator.value: {
                        "value": e.value,
                        "ci": [e.ci_lower, e.ci_upper],
                        "error": e.value / ctr - 1.0 if ctr else None,
                        "ess": e.effective_sample_size,
                    }
                    for e in r.rewards[0].estimates
                }

            row = {
                "candidate": name,
                "online_ctr": metrics.ctr,
                "online_impressions": metrics.impressions,
                "logged_ctr": report.rewards[0].logged,
                "capped_decisions": report.capped_decisions,
                # the candidate's probability the logging policy's exploration budget ruled
                # out: its part of the mean importance weight's (IPS / SNIPS) shortfall
                "unexplorable_mass": report.unexplorable_mass,
                "decisions_over_exploration_share": report.decisions_over_exploration_share,
                **figures(report),
                "fade": report.rewards[0].fade,
                "without_cap_replay": figures(plain),
                "history_free_dr": figures(history_free)["dr"],
            }
            rows.append(row)
            log(
                f"{name}: online CTR {metrics.ctr:.5f}; IPS {row['ips']['value']:.5f} "
                f"SNIPS {row['snips']['value']:.5f} DR {row['dr']['value']:.5f}; "
                f"{report.capped_decisions} decisions capped; the budget ruled out "
                f"{report.unexplorable_mass:.4f} of its probability; without the cap replay DR "
                f"{row['without_cap_replay']['dr']['value']:.5f}; history-free DR "
                f"{row['history_free_dr']['value']:.5f}; fade {report.rewards[0].fade}"
            )
    finally:
        shutil.rmtree(tmp)
    print(
        "| candidate | online CTR | IPS (error) | SNIPS (error) | DR (error) | ESS "
        "| DR without the cap replay | history-free DR |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [
            f"{r[k]['value'] * 100:.3f} % ({r[k]['error'] * 100:+.1f} %)"
            for k in ("ips", "snips", "dr")
        ]
        plain, free = r["without_cap_replay"]["dr"], r["history_free_dr"]
        print(
            f"| {r['candidate']} | {r['online_ctr'] * 100:.3f} % | {' | '.join(cells)} | "
            f"{r['ips']['ess']:,.0f} | {plain['value'] * 100:.3f} % "
            f"({plain['error'] * 100:+.1f} %) | {free['value'] * 100:.3f} % "
            f"({free['error'] * 100:+.1f} %) |"
        )
    result = {
        "command": " ".join(["bench/ope_sim.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "seed": args.seed,
        "customers": args.customers,
        "days": args.days,
        "logging": args.logging,
        "response": args.response or "sim/response.yaml",
        "fatigue": not args.no_fatigue,
        "logged_slots": len(items),
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - began, 1),
    }
    Path(args.out).write_text(json.dumps(msgspec.to_builtins(result), indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
