"""The zoo run of ``bench/quality.py``: every world x seed x policy, summarised per world.

Per world and policy, over the seeds: clicks / oracle clicks (all offers, and commercial
offers alone) and true incremental conversions (conversions minus ``none``'s on the same
seed), each as the mean with the min-max spread; and the oracle's margin (its clicks over
random's and static's). Each world's files are written as soon as it is done, so a run cut
short keeps what it finished.
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

from _common import command_line, load_average, machine_info, now_iso
from nextbest.sim.baselines import (
    clicks_vs_oracle,
    commercial_vs_oracle,
    expected_clicks_vs_oracle,
    gap_closed,
    oracle_margin,
    true_incremental,
)
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import Metrics, run_policy
from nextbest.sim.worlds import world_catalog, world_named, world_response

__all__ = ["Spread", "WorldSummary", "run_zoo", "spread", "summarise", "world_markdown"]


class Spread(msgspec.Struct, frozen=True, kw_only=True):
    """A figure over seeds: its mean, lowest and highest (None: no seed had it)."""

    mean: float | None
    low: float | None
    high: float | None


def spread(values: Sequence[float | None]) -> Spread:
    known = [v for v in values if v is not None]
    if not known:
        return Spread(mean=None, low=None, high=None)
    return Spread(mean=sum(known) / len(known), low=min(known), high=max(known))


class WorldSummary(msgspec.Struct, kw_only=True):
    world: str
    summary: str
    seeds: list[int]
    clicks_vs_oracle: dict[str, Spread]
    true_incremental: dict[str, Spread]
    oracle_over_random: Spread
    oracle_over_static: Spread
    #: commercial clicks / the oracle's commercial clicks
    commercial_vs_oracle: dict[str, Spread] = {}
    #: expected clicks (true click probabilities summed) / the oracle's
    expected_vs_oracle: dict[str, Spread] = {}
    #: expected conversions after a click (true P(click) x P(conversion | click) summed)
    expected_conversions: dict[str, Spread] = {}


def summarise(world: str, runs: dict[int, dict[str, Metrics]]) -> WorldSummary:
    """The per-policy figures of one world over its seeds' runs."""
    policies = list(next(iter(runs.values())))
    per_seed_clicks = [clicks_vs_oracle(r) for r in runs.values()]
    per_seed_commercial = [commercial_vs_oracle(r) for r in runs.values()]
    per_seed_expected = [expected_clicks_vs_oracle(r) for r in runs.values()]
    per_seed_incremental = [true_incremental(r) for r in runs.values()]
    margins = [oracle_margin(r) for r in runs.values()]
    return WorldSummary(
        world=world,
        summary=world_named(world).summary,
        seeds=sorted(runs),
        clicks_vs_oracle={p: spread([c.get(p) for c in per_seed_clicks]) for p in policies},
        commercial_vs_oracle={p: spread([c.get(p) for c in per_seed_commercial]) for p in policies},
        expected_vs_oracle={p: spread([c.get(p) for c in per_seed_expected]) for p in policies},
        true_incremental={
            p: spread([float(i[p]) if p in i else None for i in per_seed_incremental])
            for p in policies
        },
        oracle_over_random=spread([m.over_random if m else None for m in margins]),
        oracle_over_static=spread([m.over_static if m else None for m in margins]),
        expected_conversions={
            p: spread([r[p].expected_conversions for r in runs.values()]) for p in policies
        },
    )


def conversion_gaps(w: WorldSummary, policy: str = "nextbest") -> tuple[float | None, ...]:
    """The share of greedy_recent's gap to the oracle ``policy`` closes on the means over
    the seeds: in true incremental conversions, then in expected conversions after a click."""

    def closed(figures: dict[str, Spread]) -> float | None:
        def mean(p: str) -> float | None:
            return figures[p].mean if p in figures else None

        return gap_closed(mean(policy), mean("greedy_recent"), mean("oracle"))

    return closed(w.true_incremental), closed(w.expected_conversions)


def _cell(s: Spread, digits: int) -> str:
    if s.mean is None or s.low is None or s.high is None:
        return "-"
    return f"{s.mean:.{digits}f} ({s.low:.{digits}f} to {s.high:.{digits}f})"


def world_markdown(w: WorldSummary) -> str:
    """The world's table: per policy, clicks / oracle clicks (all offers, commercial alone)
    and true incremental conversions."""
    seeds = ", ".join(str(s) for s in w.seeds)
    lines = [
        f"### {w.world}: {w.summary}",
        "",
        f"Mean over seeds {seeds} (lowest to highest in brackets).",
        "",
        "| policy | clicks / oracle clicks | expected clicks / oracle's "
        "| commercial clicks / oracle's | true incremental conversions (vs none) "
        "| expected conversions after a click |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p, c in w.clicks_vs_oracle.items():
        expected = _cell(w.expected_vs_oracle.get(p, spread([])), 2)
        commercial = _cell(w.commercial_vs_oracle.get(p, spread([])), 2)
        incremental = _cell(w.true_incremental[p], 1)
        converted = _cell(w.expected_conversions.get(p, spread([])), 1)
        lines.append(
            f"| {p} | {_cell(c, 2)} | {expected} | {commercial} | {incremental} | {converted} |"
        )
    lines += [
        "",
        f"Oracle's margin (clicks): {_cell(w.oracle_over_random, 2)} x random, "
        f"{_cell(w.oracle_over_static, 2)} x static.",
    ]
    counted, expected_gap = conversion_gaps(w)
    if counted is not None or expected_gap is not None:

        def share(g: float | None) -> str:
            return f"{g:+.0%}" if g is not None else "-"

        lines.append(
            f"nextbest closes {share(counted)} of greedy_recent's gap to the oracle in true "
            f"incremental conversions, {share(expected_gap)} in expected conversions after "
            "a click (means over the seeds)."
        )
    return "\n".join(lines)


def plot_world(w: WorldSummary, customers: int, days: int, path: Path) -> None:
    """Two bar panels with min-max whiskers: clicks / oracle clicks and true incremental."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, figures, title in (
        (left, w.clicks_vs_oracle, "clicks / oracle clicks"),
        (right, w.true_incremental, "true incremental conversions (vs none)"),
    ):
        names = list(figures)
        means = [figures[n].mean or 0.0 for n in names]
        lows = [m - (figures[n].low or 0.0) for n, m in zip(names, means, strict=True)]
        highs = [(figures[n].high or 0.0) - m for n, m in zip(names, means, strict=True)]
        ax.bar(names, means, yerr=[lows, highs], capsize=4, color="#4c72b0")
        ax.set_title(title)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", alpha=0.3)
    seeds = ",".join(str(s) for s in w.seeds)
    fig.suptitle(f"World {w.world}: seeds {seeds}, {customers:,} customers, {days} days")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _run_world(world: str, args: argparse.Namespace) -> tuple[dict[int, dict[str, Metrics]], float]:
    lives = world_named(world)
    catalog = world_catalog(lives, args.catalog, DEFAULT_START)
    model = world_response(lives)
    runs: dict[int, dict[str, Metrics]] = {}
    began = time.perf_counter()
    for seed in args.seeds:
        runs[seed] = {}
        for name in args.policies:
            m = run_policy(
                name,
                seed,
                args.customers,
                args.days,
                catalog=catalog,
                model=model,
                need_rate=args.need_rate,
                world=lives,
            )
            runs[seed][name] = m
            print(
                f"[{time.strftime('%H:%M:%S')}] {world} seed {seed} {name}: {m.clicks:,} "
                f"clicks, {m.conversions_total:,} conversions, {m.wall_seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    return runs, time.perf_counter() - began


def run_zoo(args: argparse.Namespace) -> int:
    """Run every world of ``args.worlds``; write each world's files when it is done."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables: list[str] = []
    for world in args.worlds:
        runs, wall = _run_world(world, args)
        summary = summarise(world, runs)
        table = world_markdown(summary)
        machine = machine_info()
        machine["load_average_end"] = load_average()
        payload: dict[str, Any] = {
            "benchmark": "quality-zoo",
            "date": now_iso(),
            "command": command_line(),
            "machine": machine,
            "wall_seconds": round(wall, 2),
            "world": world,
            "seeds": args.seeds,
            "customers": args.customers,
            "days": args.days,
            "policies": args.policies,
            "catalog": args.catalog,
            "summary": msgspec.to_builtins(summary),
            "metrics": {
                str(seed): {p: msgspec.to_builtins(m) for p, m in r.items()}
                for seed, r in runs.items()
            },
            "table_markdown": table,
        }
        (out / f"zoo-{world}.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        (out / f"zoo-{world}.md").write_text(table + "\n", encoding="utf-8")
        plot_world(summary, args.customers, args.days, out / f"zoo-{world}.png")
        tables.append(table + f"\n\nMachine time: {wall:.0f} s.")
        (out / "zoo.md").write_text("\n\n".join(tables) + "\n", encoding="utf-8")
        print(table + "\n", flush=True)
    return 0
