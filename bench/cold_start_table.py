"""Tables of ``bench/cold_start.py``'s runs: per third of the month, expected clicks / the
oracle's; nextbest's explored impressions (share, mean true P(click) against the greedy
ones', the expected clicks they cost at the greedy impressions' mean) and the model's
predicted P(click) of what it showed over the truth.

    .venv/bin/python bench/cold_start_table.py bench/results/cold_start/hidden_needs-s1.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

THIRDS = ((0, 10), (10, 20), (20, 30))


def _sum(days: list[dict[str, float]], key: str, a: int, b: int) -> float:
    return sum(d.get(key, 0.0) for d in days[a:b])


def show(path: Path) -> None:
    data = json.loads(path.read_text())
    runs: dict[str, Any] = data["runs"]
    oracle = runs["oracle"]["days"]
    print(f"\n{data['world']} seed {data['seed']} (warm from seed {data['warm_seed']})\n")
    print("| run | days 1-10 | 11-20 | 21-30 | month |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        cells = [
            _sum(r["days"], "expected", a, b) / _sum(oracle, "expected", a, b) for a, b in THIRDS
        ]
        month = r["expected_clicks"] / runs["oracle"]["expected_clicks"]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {month:.3f} |")
    print(
        "\n| run | third | explored share | P(click) explored / greedy | cost / oracle's "
        "| predicted / true (greedy) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        if name in ("oracle", "prior"):
            continue
        for k, (a, b) in enumerate(THIRDS):
            d = r["days"]
            ne, ng = _sum(d, "explored_n", a, b), _sum(d, "greedy_n", a, b)
            pe, pg = _sum(d, "explored_p", a, b), _sum(d, "greedy_p", a, b)
            pred = _sum(d, "greedy_pred", a, b)
            cost = ne * (pg / ng) - pe if ne else 0.0
            print(
                f"| {name} | {k + 1} | {ne / (ne + ng):.3f} | "
                f"{(pe / ne if ne else 0) * 1e3:.2f} / {pg / ng * 1e3:.2f} (per 1,000) | "
                f"{cost / _sum(oracle, 'expected', a, b):.3f} | {pred / pg:.2f} |"
            )


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        show(Path(arg))
