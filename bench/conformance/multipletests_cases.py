"""Conformance data for ``nextbest.experiments.statistics.adjusted_p_values`` from
statsmodels' ``multipletests`` (the reference for multiple-comparison adjustments).

Runs ``statsmodels.stats.multitest.multipletests(p, method=m)`` with ``m`` in ``holm``
(Holm's step-down, the family-wise error rate) and ``fdr_bh`` (Benjamini-Hochberg, the false
discovery rate) on hand-picked and seeded random p-value vectors, and writes the inputs and
statsmodels' adjusted p-values to ``tests/conformance/data/multipletests/cases.json``, so
the test suite checks nextbest without installing statsmodels. statsmodels is a reference
only, never a dependency of nextbest; it installs without its dependencies into a folder of
its own (with pandas and patsy, which it imports), beside the project's numpy and scipy:

    .venv/bin/pip install --no-deps --target /tmp/smref statsmodels pandas patsy \\
        python-dateutil pytz tzdata
    PYTHONPATH=/tmp/smref .venv/bin/python bench/conformance/multipletests_cases.py

Cases: one p-value, ties, zeros and ones, p-values at and around 0.05, already sorted and
reversed, twenty audiences of which a few are real effects (small p-values mixed into
uniform ones), and seeded uniform vectors of 2 to 200 p-values.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from statsmodels.stats.multitest import multipletests

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "conformance" / "data" / "multipletests" / "cases.json"
#: bump when the layout of cases.json changes; the test asserts it
SPEC_VERSION = 1
#: nextbest's name of each statsmodels method
METHODS = {"holm": "holm", "fdr_bh": "benjamini_hochberg"}


def inputs() -> list[tuple[str, list[float]]]:
    rng = np.random.default_rng(18)
    cases: list[tuple[str, list[float]]] = [
        ("one", [0.03]),
        ("one zero", [0.0]),
        ("one one", [1.0]),
        ("two ties", [0.01, 0.01]),
        ("ties in the middle", [0.2, 0.01, 0.04, 0.04, 0.04, 0.5]),
        ("zeros and ones", [0.0, 1.0, 0.0, 1.0, 0.5]),
        ("around 0.05", [0.049, 0.05, 0.051, 0.0125, 0.025]),
        ("sorted", [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]),
        ("reversed", [0.9, 0.6, 0.3, 0.1, 0.05, 0.01, 0.005]),
        ("all equal", [0.04] * 8),
        ("all tiny", [1e-12, 3e-9, 2e-15, 1e-300]),
    ]
    for k in range(5):
        real = rng.uniform(0.0, 0.005, size=3)
        null = rng.uniform(0.0, 1.0, size=17)
        p = np.concatenate([real, null])
        rng.shuffle(p)
        cases.append((f"twenty audiences, three real ({k})", [float(x) for x in p]))
    for m in (2, 3, 5, 8, 13, 21, 34, 55, 89, 200):
        p = rng.uniform(0.0, 1.0, size=m) ** rng.uniform(0.5, 3.0)
        cases.append((f"uniform, {m}", [float(x) for x in p]))
    return cases


def main() -> int:
    cases: list[dict[str, Any]] = []
    for name, p in inputs():
        out: dict[str, Any] = {"name": name, "p_values": p}
        for method, ours in METHODS.items():
            reject, adjusted, _, _ = multipletests(np.asarray(p), alpha=0.05, method=method)
            out[ours] = {
                "adjusted": [float(x) for x in adjusted],
                "reject": [bool(r) for r in reject],
            }
        cases.append(out)
    data = {
        "spec_version": SPEC_VERSION,
        "reference": f"statsmodels {importlib.metadata.version('statsmodels')}",
        "numpy": np.__version__,
        "alpha": 0.05,
        "methods": METHODS,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    head = json.dumps({k: v for k, v in data.items() if k != "cases"}, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(c) for c in cases)  # one case per line: a readable diff
    text = f'{head},\n "cases": [\n  {rows}\n ]\n}}\n'
    assert json.loads(text) == data
    OUT.write_text(text)
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
