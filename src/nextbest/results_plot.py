"""``nextbest results CAMPAIGN --plot FILE.png``: the primary KPI's lift and its always-valid
interval day by day, one line and band per variant, because a trend is read faster from a
picture than from a table. matplotlib is imported only here, only when a plot is asked for."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from nextbest.experiments.report import ExperimentResult

__all__ = ["plot_daily_lift"]

_EPOCH = date(1970, 1, 1).toordinal()


def plot_daily_lift(result: ExperimentResult, path: Path) -> None:
    """Draw ``result.daily`` into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        arms = list(dict.fromkeys(p.arm for p in result.daily))
        for arm in arms:
            points = [p for p in result.daily if p.arm == arm]
            # days since the epoch: matplotlib's date numbers
            days = [float(date.fromisoformat(p.day).toordinal() - _EPOCH) for p in points]
            ax.plot(days, [100 * p.lift for p in points], marker="o", label=f"{arm} lift")
            ax.fill_between(
                days,
                [100 * p.ci_lower for p in points],
                [100 * p.ci_upper for p in points],
                alpha=0.2,
                label=f"{arm} {1 - result.alpha:.0%} always-valid interval",
            )
        ax.xaxis_date()
        ax.axhline(0.0, color="grey", linewidth=1)
        primary = result.kpis[0].event if result.kpis else "primary KPI"
        ax.set_title(f"{result.name}: lift in {primary} over control, by day")
        ax.set_ylabel("relative lift (%)")
        ax.set_xlabel("day (UTC)")
        if not arms:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(loc="best")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
