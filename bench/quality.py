"""Benchmark: decision quality of the site-loop policies on the synthetic bank.

    .venv/bin/python bench/quality.py --seed 1 --customers 10000 --days 30
    .venv/bin/python bench/quality.py --seed 1 --customers 500 --days 10 --out /tmp/q  # smoke

Each policy (``random``, ``static``, ``nextbest``, ``oracle`` by default) runs the site loop
(``nextbest.sim.loop.SiteLoop``) on the same seeded population: a fresh engine, the same
customers with the same hidden lives, the same response model. After every simulated day the
loop's per-offer impression and click counters are read, so the daily series below cover
service and commercial offers apart (``Metrics`` keeps only the all-offer totals per day).

Writes, in ``--out`` (``bench/results`` by default):

- ``quality-seed{S}.json``: every policy's ``Metrics``, the daily series, the 90 %-of-oracle
  figures, the command line, the date (UTC), the machine and the wall time;
- ``quality-seed{S}.png``: cumulative clicks and cumulative conversions (organic plus after
  a click) per day and policy.

With ``--world NAME`` the run happens in that world of the zoo (``nextbest.sim.worlds``,
docs/worlds.md; the files get ``-NAME`` in their names). With ``--worlds a,b,c`` (or
``all``) it runs the zoo instead: every world x every seed of ``--seeds`` (1,2,3 by default)
x every policy (all seven by default), and writes per world ``zoo-{world}.json`` (every
run's metrics and the summary), ``zoo-{world}.md`` (per policy: clicks / oracle clicks and
true incremental conversions, the mean over seeds with the min-max spread, and the oracle's
margin over random and static) and ``zoo-{world}.png`` (the same as bars), each written as
soon as the world is done, plus ``zoo.md`` (every finished world's table).

    .venv/bin/python bench/quality.py --worlds all --seeds 1,2,3 --customers 2000 --days 30

With ``--advisors`` topic pages also carry the catalog's advisor card, customers ask for
calls and the catalog's advisors take them (``nextbest.sim.callbacks``; docs/worlds.md,
"Advisors in the simulator"): every policy shows the engine's card there (``none``
nothing), ``nextbest`` runs a second time without the card (``nextbest_no_card``), and a
second table gives per policy the cards shown, the calls asked for, completed and their
conversions beside the clicks' (the files get ``-advisors`` in their names).

    .venv/bin/python bench/quality.py --world shelf --advisors --seed 1 --customers 2000 \
        --policies none,random,static,greedy_recent,nextbest

Prints a Markdown table (one row per policy, ready for BENCHMARKS.md) and the figure "how
many impressions per offer nextbest needs to reach 90 % of the oracle's CTR": the first day
from which nextbest's CTR over a trailing window (``--window`` days) stays at or above
``--target`` times the oracle's CTR over the same days, and nextbest's cumulative
impressions per distinct offer it has shown by then; once over all offers, once over
commercial offers alone (service messages are shown first by every policy and dominate the
clicks). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from _common import ROOT, command_line, load_average, machine_info, now_iso
from nextbest.catalog.compiled import Catalog
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import ALL_POLICIES, DEFAULT_POLICIES, Metrics, SiteLoop
from nextbest.sim.policies import make_policy
from nextbest.sim.response import ResponseModel
from nextbest.sim.worlds import (
    DEFAULT_WORLD,
    WORLDS,
    World,
    world_catalog,
    world_named,
    world_response,
)
from zoo import run_zoo

__all__ = [
    "Daily",
    "Reach",
    "advisor_table",
    "daily_series",
    "describe",
    "main",
    "markdown_table",
    "reach_oracle",
]

#: the name of nextbest's run without the advisor card (``--advisors``)
NO_CARD = "nextbest_no_card"


class Daily(msgspec.Struct, kw_only=True):
    """One policy's cumulative totals at the end of each day (index 0 = day 1)."""

    impressions: list[int] = []
    clicks: list[int] = []
    conversions: list[int] = []
    #: distinct offers shown so far
    offers: list[int] = []
    commercial_impressions: list[int] = []
    commercial_clicks: list[int] = []
    commercial_offers: list[int] = []


class Reach(msgspec.Struct, kw_only=True):
    """When a policy's trailing-window CTR reaches ``target`` x the reference's, for good.

    ``day`` (1-based) is the first day from which the ratio stays at or above ``target`` on
    every later day; ``first_day`` the first day it was at or above at all. ``ratios`` holds
    each day's trailing ratio (None where the reference had fewer than ``min_clicks`` clicks
    in the window: too few to compare with).
    """

    target: float
    window: int
    min_clicks: int
    days: int
    reached: bool = False
    day: int | None = None
    first_day: int | None = None
    impressions: int | None = None
    offers: int | None = None
    impressions_per_offer: float | None = None
    ratios: list[float | None] = []


def _daily(cumulative: Sequence[int]) -> list[int]:
    return [b - a for a, b in zip([0, *cumulative[:-1]], cumulative, strict=True)]


def reach_oracle(
    impressions: Sequence[int],
    clicks: Sequence[int],
    offers: Sequence[int],
    ref_impressions: Sequence[int],
    ref_clicks: Sequence[int],
    *,
    window: int = 3,
    target: float = 0.9,
    min_clicks: int = 1,
) -> Reach:
    """When a policy's CTR reaches ``target`` x a reference policy's (the oracle's).

    All inputs are cumulative totals at the end of each day, index 0 = day 1. Each day's CTR
    is taken over the trailing ``window`` days (fewer at the start: day 1 uses day 1 alone),
    from the differences of the cumulative series, for both policies over the same days. The
    figure reported is the policy's cumulative impressions divided by the distinct offers it
    had shown (``offers``) at the first day from which the ratio never falls under
    ``target`` again. A day counts only if the reference had at least ``min_clicks`` clicks
    in its window. Not reached: ``reached`` False, the figures None.
    """
    days = len(impressions)
    if not days == len(clicks) == len(offers) == len(ref_impressions) == len(ref_clicks):
        raise ValueError("every series needs one value per day")
    if window < 1:
        raise ValueError("window must be at least 1 day")
    if min_clicks < 1:
        raise ValueError("min_clicks must be at least 1")
    imp, clk = _daily(impressions), _daily(clicks)
    ref_imp, ref_clk = _daily(ref_impressions), _daily(ref_clicks)
    ratios: list[float | None] = []
    for d in range(days):
        lo = max(0, d - window + 1)
        n, c = sum(imp[lo : d + 1]), sum(clk[lo : d + 1])
        rn, rc = sum(ref_imp[lo : d + 1]), sum(ref_clk[lo : d + 1])
        if rc < min_clicks or n == 0:
            ratios.append(None)
        else:
            ratios.append((c * rn) / (n * rc))  # (c / n) / (rc / rn), one rounding
    ok = [r is not None and r >= target for r in ratios]
    out = Reach(target=target, window=window, min_clicks=min_clicks, days=days, ratios=ratios)
    out.first_day = next((d + 1 for d in range(days) if ok[d]), None)
    stays = None
    for d in range(days - 1, -1, -1):
        if not ok[d]:
            break
        stays = d
    if stays is not None:
        out.reached = True
        out.day = stays + 1
        out.impressions = impressions[stays]
        out.offers = offers[stays]
        out.impressions_per_offer = impressions[stays] / offers[stays] if offers[stays] else None
    return out


def describe(reach: Reach, what: str) -> str:
    """One honest sentence about a Reach."""
    share = f"{reach.target:.0%}".replace("%", " %")
    goal = (
        f"{share} of the oracle's {what} CTR ({reach.window}-day trailing window, "
        f"at least {reach.min_clicks} oracle clicks in it)"
    )
    if not reach.reached or reach.impressions is None or reach.offers is None:
        seen = f"; crossed it on day {reach.first_day} only" if reach.first_day else ""
        return f"nextbest: {goal} not reached in {reach.days} days{seen}"
    per = reach.impressions_per_offer
    per_text = f"{per:,.0f}" if per is not None else "-"
    first = "" if reach.first_day == reach.day else f" (first crossed on day {reach.first_day})"
    if reach.day == reach.days:
        first += " (the last day only: too early to call)"
    return (
        f"nextbest: {goal} from day {reach.day} on{first}: {reach.impressions:,} impressions "
        f"over {reach.offers} offers = {per_text} impressions per offer"
    )


# ------------------------------------------------------------------ running
def daily_series(loop: SiteLoop, daily: Daily, catalog: Catalog) -> None:
    """Append the loop's totals at the end of a day (call after ``run_day``)."""
    commercial = catalog.commercial_offers
    shown = {o for o, n in loop.impressions.items() if n}
    daily.impressions.append(sum(loop.impressions.values()))
    daily.clicks.append(sum(loop.clicks.values()))
    m = loop.metrics
    daily.conversions.append(
        m.organic_conversions + m.conversions_after_click + m.conversions_after_call
    )
    daily.offers.append(len(shown))
    daily.commercial_impressions.append(
        sum(n for o, n in loop.impressions.items() if o in commercial)
    )
    daily.commercial_clicks.append(sum(n for o, n in loop.clicks.items() if o in commercial))
    daily.commercial_offers.append(len(shown & commercial))


def run_one(
    name: str,
    catalog: Catalog,
    model: ResponseModel,
    seed: int,
    customers: int,
    days: int,
    need_rate: float = 1.0,
    world: World | None = None,
    advisors: bool = False,
) -> tuple[Metrics, Daily]:
    began = time.perf_counter()
    policy = make_policy(name)
    loop = SiteLoop(
        policy,
        catalog,
        seed,
        customers,
        DEFAULT_START,
        model,
        need_rate,
        world,
        advisors=advisors,
    )
    daily = Daily()
    for d in range(days):
        loop.run_day(d)
        daily_series(loop, daily, catalog)
        elapsed = time.perf_counter() - began
        print(
            f"[{time.strftime('%H:%M:%S')}] {name}: day {d + 1}/{days}, "
            f"{daily.impressions[-1]:,} impressions, {daily.clicks[-1]:,} clicks, {elapsed:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return loop.finish(time.perf_counter() - began), daily


# ------------------------------------------------------------------ output
def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}×" if b else "-"


def markdown_table(results: dict[str, Metrics]) -> str:
    """One row per policy; ratios against ``static`` and ``random`` when they ran."""
    static, rnd = results.get("static"), results.get("random")
    header = (
        "| policy | impressions | clicks | CTR | commercial clicks | commercial CTR "
        "| conversions after click | organic | total conversions | incremental vs control "
        "| clicks vs static | clicks vs random | conversions vs static | conversions vs random |"
    )
    columns = header.count(" | ") + 1
    lines = [header, "|" + " --- |" * columns]
    for name, m in results.items():
        cells = [
            name,
            f"{m.impressions:,}",
            f"{m.clicks:,}",
            f"{m.ctr:.2%}".replace("%", " %"),
            f"{m.commercial_clicks:,}",
            f"{m.commercial_ctr:.2%}".replace("%", " %"),
            f"{m.conversions_after_click:,}",
            f"{m.organic_conversions:,}",
            f"{m.conversions_total:,}",
            f"{m.incremental_conversions:,.1f}",
            _ratio(m.clicks, static.clicks if static else None),
            _ratio(m.clicks, rnd.clicks if rnd else None),
            _ratio(m.conversions_total, static.conversions_total if static else None),
            _ratio(m.conversions_total, rnd.conversions_total if rnd else None),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def advisor_table(results: dict[str, Metrics]) -> str:
    """The advisor card beside the offers, one row per policy (``--advisors``): cards shown
    (of them offering "call me now"), calls asked for ("now"), completed, not answered, moved
    to a slot, conversions after a call and after a click, all conversions, and the true
    incremental ones (minus ``none``'s) when ``none`` ran."""
    none = results.get("none")
    header = (
        "| policy | cards shown (now) | calls asked (now) | completed | not answered "
        "| moved to a slot | median wait | conversions after a call | after a click "
        "| total conversions | true incremental |"
    )
    lines = [header, "|" + " --- |" * (header.count(" | ") + 1)]
    for name, m in results.items():
        wait = m.callback_wait_median_seconds
        cells = [
            name,
            f"{m.advisor_cards:,} ({m.advisor_cards_now:,})",
            f"{m.callbacks_requested:,} ({m.callbacks_requested_now:,})",
            f"{m.callbacks_completed:,}",
            f"{m.callbacks_not_answered:,}",
            f"{m.callbacks_rescheduled:,}",
            f"{wait / 60:.1f} min" if wait is not None else "-",
            f"{m.conversions_after_call:,}",
            f"{m.conversions_after_click:,}",
            f"{m.conversions_total:,}",
            f"{m.conversions_total - none.conversions_total:+,}" if none else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(daily: dict[str, Daily], seed: int, customers: int, days: int, path: Path) -> None:
    """Two panels: cumulative clicks (dashed: commercial offers alone) and conversions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    x = list(range(1, days + 1))
    for name, series in daily.items():
        (line,) = left.plot(x, series.clicks, marker="o", markersize=3, label=name)
        left.plot(x, series.commercial_clicks, linestyle="--", color=line.get_color())
        right.plot(x, series.conversions, marker="o", markersize=3, label=name)
    left.set_title("Cumulative clicks (dashed: commercial offers only)")
    left.set_ylabel("clicks")
    right.set_title("Cumulative conversions (organic + after a click)")
    right.set_ylabel("conversions (Application Started)")
    for ax in (left, right):
        ax.set_xlabel("simulated day")
        ax.grid(True, alpha=0.3)
        ax.legend(title="policy")
        ax.set_xlim(1, max(days, 2))
        ax.set_ylim(0, max(ax.get_ylim()[1], 1.0))  # integer ticks even when all zero
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Synthetic bank: seed {seed}, {customers:,} customers, {days} days")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument(
        "--policies", default=",".join(DEFAULT_POLICIES), help="comma-separated policy names"
    )
    ap.add_argument("--catalog", default=str(ROOT / "examples" / "bank"))
    ap.add_argument("--world", default=DEFAULT_WORLD, help="the world of a single run")
    ap.add_argument("--worlds", default="", help="comma-separated worlds, or all: the zoo run")
    ap.add_argument("--seeds", default="1,2,3", help="the zoo run's seeds, comma-separated")
    ap.add_argument(
        "--need-rate", type=float, default=1.0, help="scales how often life events start needs"
    )
    ap.add_argument(
        "--advisors",
        action="store_true",
        help="the advisor card on topic pages, calls and advisors; nextbest also without it",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="output folder")
    ap.add_argument("--window", type=int, default=3, help="trailing days for the CTR ratio")
    ap.add_argument("--target", type=float, default=0.9, help="share of the oracle's CTR")
    ap.add_argument(
        "--min-clicks",
        type=int,
        default=30,
        help="oracle clicks a trailing window needs before its CTR ratio counts",
    )
    args = ap.parse_args(argv)
    zoo = bool(args.worlds)
    if zoo and args.policies == ",".join(DEFAULT_POLICIES):
        args.policies = ",".join(ALL_POLICIES)
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for name in args.policies:
        make_policy(name)  # unknown names fail before any work
    names = list(WORLDS) if args.worlds == "all" else args.worlds.split(",") if zoo else []
    args.worlds = [w.strip() for w in names if w.strip()]
    try:
        for name in [args.world, *args.worlds]:
            world_named(name)
    except ValueError as exc:
        ap.error(str(exc))
    args.seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if zoo and args.advisors:
        ap.error("--advisors runs one world (--world), not the zoo (--worlds)")
    if args.days < 1 or args.customers < 1:
        ap.error("--days and --customers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worlds:
        return run_zoo(args)
    began = time.perf_counter()
    machine = machine_info()
    world = world_named(args.world)
    catalog = world_catalog(world, args.catalog, DEFAULT_START)
    model = world_response(world)
    results: dict[str, Metrics] = {}
    daily: dict[str, Daily] = {}
    for name in args.policies:
        results[name], daily[name] = run_one(
            name,
            catalog,
            model,
            args.seed,
            args.customers,
            args.days,
            args.need_rate,
            world,
            advisors=args.advisors,
        )
    if args.advisors and "nextbest" in args.policies:  # the card's own effect
        results[NO_CARD], daily[NO_CARD] = run_one(
            "nextbest", catalog, model, args.seed, args.customers, args.days, args.need_rate, world
        )
        results[NO_CARD].policy = NO_CARD
    wall = time.perf_counter() - began

    reach: dict[str, Reach] = {}
    if "nextbest" in daily and "oracle" in daily:
        nb, orc = daily["nextbest"], daily["oracle"]
        kw = {"window": args.window, "target": args.target, "min_clicks": args.min_clicks}
        reach["all_offers"] = reach_oracle(
            nb.impressions, nb.clicks, nb.offers, orc.impressions, orc.clicks, **kw
        )
        reach["commercial"] = reach_oracle(
            nb.commercial_impressions,
            nb.commercial_clicks,
            nb.commercial_offers,
            orc.commercial_impressions,
            orc.commercial_clicks,
            **kw,
        )
    table = markdown_table(results)
    sentences = (
        [describe(reach["all_offers"], "all-offer"), describe(reach["commercial"], "commercial")]
        if reach
        else ["nextbest or oracle not run: no 90 %-of-oracle figure"]
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"quality-seed{args.seed}" + (f"-needs{args.need_rate:g}" if args.need_rate != 1 else "")
    stem += f"-{args.world}" if args.world != DEFAULT_WORLD else ""
    stem += "-advisors" if args.advisors else ""
    cards = advisor_table(results) if args.advisors else None
    machine["load_average_end"] = load_average()
    payload: dict[str, Any] = {
        "benchmark": "quality",
        "date": now_iso(),
        "command": command_line(),
        "machine": machine,
        "wall_seconds": round(wall, 2),
        "seed": args.seed,
        "customers": args.customers,
        "days": args.days,
        "need_rate": args.need_rate,
        "world": args.world,
        "policies": args.policies,
        "catalog": args.catalog,
        "metrics": {name: msgspec.to_builtins(m) for name, m in results.items()},
        "daily": {name: msgspec.to_builtins(d) for name, d in daily.items()},
        "reach_oracle": {k: msgspec.to_builtins(r) for k, r in reach.items()},
        "reach_oracle_text": sentences,
        "table_markdown": table,
    }
    if cards is not None:
        payload["advisors"] = True
        payload["advisor_table_markdown"] = cards
    json_path = out / f"{stem}.json"
    json_path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    png_path = out / f"{stem}.png"
    plot(daily, args.seed, args.customers, args.days, png_path)

    print(table)
    print()
    if cards is not None:
        print(cards)
        print()
    for line in sentences:
        print(f"- {line}")
    print()
    print(f"wall {wall:.1f} s; wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
