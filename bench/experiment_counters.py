"""Benchmark: the experiment counters' cost per event at ingest, and a campaign's results.

    .venv/bin/python bench/experiment_counters.py [--events 20000] [--quick]

Times, one call at a time next to a trivial call measured in the same run (``ratios``), what
``Engine._apply`` adds per event for the experiment counters (``experiments.counters``) on the
example bank's catalog:

- ``other_event``: an event no counter wants (``wants`` is False: a page view), the common case;
- ``kpi_first``: a KPI event (``Application Submitted``, product mortgage) of an exposed
  customer: index look-up, window check, the ``where`` condition in CEL, the revalue;
- ``kpi_repeat``: the same customer again (already converted: the condition runs, nothing
  changes);
- ``kpi_not_exposed``: a KPI event of a customer no campaign exposed;
- ``view_exposure``: a ``Promotion Viewed`` joined to its decision, exposing a new customer;
- ``control_decision``: a decision's control exposure (``record_decision``).

Exposures carry what a first exposure freezes where the code has it (issue #18 items 4 and
6: two covariates and six audiences per customer; a treated customer's read from a profile
with a KPI window), so the audience counts are updated too. The same file runs on code
without them (the branch before), which then exposes without.

Then the cost of saving (``--save-customers`` exposed customers, default 1,000,000): after
each batch of ``--save-batch`` KPI events (50: a fold worker's batch) the rows a save writes
are taken and encoded (``take_changes``), ``--saves`` times; reported per save and per event
of the batch, with the bytes written. Before the rows were split, a save rewrote the
campaign's one row with every exposed customer in it.

Then a campaign's results (``experiments.report.campaign_result``: both KPIs, both arms, the
daily series) for 1,000,000 exposed customers over ``--days`` days: counts are sums, so the
time depends on days and arms, not on customers.

Results: ``bench/results/experiment_counters.json``.
"""

from __future__ import annotations

import argparse
import inspect
import statistics as stats
import time
from collections.abc import Sequence
from typing import Any

from _common import EXAMPLE_CATALOG, T0, Run, add_run_args, ratios, table, time_calls
from nextbest.catalog.model import OfferKind
from nextbest.decide.model import Decision, DecisionItem
from nextbest.events.model import Event, EventType
from nextbest.experiments.assignment import Arm
from nextbest.experiments.counters import CONTROL, DAY, TREATMENT, ExperimentCounters, Sums
from nextbest.experiments.report import campaign_result
from nextbest.profile.model import Profile
from nextbest.store.catalog_files import load_catalog

CAMPAIGN = "mortgage_q4"
#: what a first exposure freezes, where the code has it: covariates and audiences
PRE = [1.0, 0.0]
AUDIENCES = [
    "mortgage_intent",
    "adult",
    "lifecycle:family",
    "engagement:medium",
    "holding:none",
    "intent:mortgage",
]
FREEZES = "covariates" in Decision.__struct_fields__


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000, help="timed calls per kind")
    ap.add_argument("--days", type=int, default=30, help="days of counts for the results")
    ap.add_argument("--result-runs", type=int, default=20)
    ap.add_argument("--save-customers", type=int, default=1_000_000)
    ap.add_argument("--save-batch", type=int, default=50)
    ap.add_argument("--saves", type=int, default=20)
    add_run_args(ap, "experiment_counters")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.result_runs = 2_000, 5
        args.save_customers, args.saves = 50_000, 5
    args.name = args.name or ("experiment_counters_quick" if args.quick else "experiment_counters")
    return args


def event(i: int, name: str, props: dict[str, object], user: str) -> Event:
    return Event(
        message_id=f"m{name[:3]}{i}",
        type=EventType.TRACK,
        timestamp=T0 + 60,
        received_at=T0 + 60,
        user_id=user,
        name=name,
        properties=props,
    )


def decision(i: int, user: str, *, control: bool) -> Decision:
    item = DecisionItem(
        position=0,
        offer_id="mortgage_advice",
        kind=OfferKind.COMMERCIAL,
        campaign_id=CAMPAIGN,
        arm=Arm.TREATMENT,
        score=1.0,
        p_click=0.1,
        propensity=1.0,
        content={},
        reasons=[],
    )
    extra: dict[str, Any] = {}
    if FREEZES and control:
        extra = {"covariates": {CAMPAIGN: PRE}, "audiences": AUDIENCES[2:]}
    return Decision(
        decision_id=f"d{i}",
        customer_id=user,
        placement="home_feed",
        timestamp=T0,
        catalog_version="v",
        items=[] if control else [item],
        excluded=[],
        control=["mortgage_advice"] if control else [],
        segments=AUDIENCES[:2],
        **extra,
    )


def a_profile(catalog: Any) -> Profile:
    """A mortgage researcher aged 40 who applied 10 days before: a KPI window, a funnel."""
    profile = Profile(customer_id="p", user_id="p", traits={"age": 40})
    profile.activity = [T0 - 3600.0 * k for k in range(8)]
    kpis = catalog.kpis[CAMPAIGN]
    if hasattr(profile, "kpis"):
        profile.kpis = {kpis[0].key: [(T0 - 10 * DAY, 1.0)]}
    return profile


def expose(counters: ExperimentCounters, arm: str, key: str) -> None:
    if FREEZES:
        counters.expose(CAMPAIGN, arm, key, T0, PRE, AUDIENCES)
    else:
        counters.expose(CAMPAIGN, arm, key, T0)


def save_costs(args: argparse.Namespace, catalog: Any) -> dict[str, Any]:
    """Encode the rows a save writes after each batch of KPI events (see the docstring)."""
    counters = ExperimentCounters(catalog)
    keys = [f"c{i:08d}" for i in range(args.save_customers)]
    for i, key in enumerate(keys):
        expose(counters, CONTROL if i % 10 == 0 else TREATMENT, key)
    counters.take_changes(every=True)  # the first save writes everything
    mortgage = {"product": "mortgage"}
    took: list[float] = []
    written: list[int] = []
    for s in range(args.saves):
        for j in range(args.save_batch):
            key = keys[(s * args.save_batch + j) * 7919 % len(keys)]
            counters.observe(event(j, "Application Submitted", mortgage, key), key, None)
        t = time.perf_counter()
        changes: Any = counters.take_changes()
        took.append(time.perf_counter() - t)
        if len(changes) == 2:  # before: (rows, replace), a row per campaign
            written.append(sum(len(b) for _, b in changes[0] if b))
        else:
            written.append(
                sum(len(b) for _, b in changes.campaigns if b)
                + sum(len(b) for _, b in changes.exposures)
            )
    ms = stats.median(took) * 1e3
    return {
        "exposed": args.save_customers,
        "batch": args.save_batch,
        "saves": args.saves,
        "save_ms_median": round(ms, 3),
        "save_ms_max": round(max(took) * 1e3, 3),
        "per_event_us": round(ms * 1e3 / args.save_batch, 2),
        "bytes_per_save_median": int(stats.median(written)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    run = Run("experiment_counters", args)
    catalog = load_catalog(EXAMPLE_CATALOG)
    n = args.events
    counters = ExperimentCounters(catalog)
    exposed = [f"exp-{i}" for i in range(2 * n)]
    for i, key in enumerate(exposed):
        expose(counters, CONTROL if i % 10 == 0 else TREATMENT, key)
    profile = a_profile(catalog)
    with_profile = "profile" in inspect.signature(counters.observe).parameters

    def engine_part(x: tuple[Event, str, Decision | None]) -> None:
        e, key, d = x  # as Engine._apply does it
        if counters.wants(e):
            if with_profile:
                counters.observe(e, key, d, profile)
            else:
                counters.observe(e, key, d)

    mortgage = {"product": "mortgage"}
    inputs = {
        "other_event": [
            (event(i, "Page Viewed", {"url": "/x"}, exposed[i]), exposed[i], None) for i in range(n)
        ],
        "kpi_first": [
            (event(i, "Application Submitted", mortgage, exposed[i]), exposed[i], None)
            for i in range(n)
        ],
        "kpi_repeat": [
            (event(i, "Application Submitted", mortgage, exposed[i]), exposed[i], None)
            for i in range(n)
        ],
        "kpi_not_exposed": [
            (event(i, "Application Submitted", mortgage, f"new-{i}"), f"new-{i}", None)
            for i in range(n)
        ],
        "view_exposure": [
            (
                event(
                    i,
                    "Promotion Viewed",
                    {"promotion_id": "mortgage_advice", "decision_id": f"d{i}"},
                    f"view-{i}",
                ),
                f"view-{i}",
                decision(i, f"view-{i}", control=False),
            )
            for i in range(n)
        ],
    }
    warm = [(event(0, "Application Submitted", mortgage, "w"), "w", None)] * 200
    measured: dict[str, dict[str, object]] = {}
    baseline = time_calls(lambda x: None, inputs["other_event"], warm)
    for kind, xs in inputs.items():
        measured[kind] = time_calls(engine_part, xs, warm)
    control_decisions = [decision(i, f"ctl-{i}", control=True) for i in range(n)]
    measured["control_decision"] = time_calls(
        lambda d: counters.record_decision(d, d.customer_id), control_decisions
    )

    saving = save_costs(args, catalog)

    # results for 1M exposed customers over --days days
    state = counters.get(CAMPAIGN)
    assert state is not None
    per_day = 1_000_000 // args.days
    days: dict[str, list[dict[int, Sums]]] = {}
    day0 = int(T0 // DAY)
    for arm, share, rate in ((CONTROL, 0.1, 0.05), (TREATMENT, 0.9, 0.055)):
        m = round(per_day * share)
        k = float(round(m * rate))
        days[arm] = [
            {day0 + d: Sums(n=m, sum=k, sum_squares=k) for d in range(args.days)},
            {day0 + d: Sums(n=m, sum=k // 5, sum_squares=k // 5) for d in range(args.days)},
        ]
    state.days = days
    spec, kpis = catalog.campaigns[CAMPAIGN], catalog.kpis[CAMPAIGN]
    campaign_result(spec, kpis, state)  # warm: scipy loaded
    took: list[float] = []
    for _ in range(args.result_runs):
        t = time.perf_counter()
        result = campaign_result(spec, kpis, state)
        took.append((time.perf_counter() - t) * 1e3)
    exposed_total = sum(a.exposed for a in result.kpis[0].arms)

    rows = [["trivial call (baseline)", baseline["p50_us"], baseline["p99_us"], "1.0"]]
    out_ratios = {}
    for kind, m_ in measured.items():
        r = ratios(m_, baseline)
        out_ratios[kind] = r
        rows.append([kind, m_["p50_us"], m_["p99_us"], r["p50_us"]])
    print(
        table("experiment counters per event (us)", ["kind", "p50", "p99", "p50 / baseline"], rows)
    )
    print(
        f"\nresults of {exposed_total:,} exposed customers over {args.days} days: "
        f"median {stats.median(took):.1f} ms, max {max(took):.1f} ms ({args.result_runs} runs)"
    )
    print(
        f"\na save after each {saving['batch']} KPI events, {saving['exposed']:,} customers "
        f"exposed: median {saving['save_ms_median']:.2f} ms ({saving['per_event_us']:.1f} us "
        f"per event), max {saving['save_ms_max']:.2f} ms, "
        f"{saving['bytes_per_save_median']:,} bytes written"
    )
    run.write(
        {
            "saving": saving,
            "freezes_covariates_and_audiences": FREEZES,
            "baseline": baseline,
            "measured": measured,
            "ratios_to_baseline": out_ratios,
            "results": {
                "exposed": exposed_total,
                "days": args.days,
                "ms": [round(x, 2) for x in took],
                "median_ms": round(stats.median(took), 2),
                "max_ms": round(max(took), 2),
            },
        }
    )


if __name__ == "__main__":
    main()
