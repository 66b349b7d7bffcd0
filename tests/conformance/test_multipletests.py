"""nextbest's adjusted p-values equal statsmodels' ``multipletests`` (``holm``, ``fdr_bh``).

The cases were made by ``bench/conformance/multipletests_cases.py`` with statsmodels itself;
this test does not need statsmodels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nextbest.experiments import statistics as st

DATA = Path(__file__).parent / "data" / "multipletests" / "cases.json"
SPEC_VERSION = 1
TOLERANCE = 1e-12


def _data() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DATA.read_text())
    return loaded


def test_the_spec_version_and_methods() -> None:
    data = _data()
    assert data["spec_version"] == SPEC_VERSION
    assert data["reference"].startswith("statsmodels ")
    assert set(data["methods"].values()) == {m.value for m in st.Adjustment}


CASES = _data()["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("method", list(st.Adjustment), ids=lambda m: m.value)
def test_adjusted_p_values_equal_statsmodels(case: dict[str, Any], method: st.Adjustment) -> None:
    expected = case[method.value]
    ours = st.adjusted_p_values(case["p_values"], method)
    assert ours == pytest.approx(expected["adjusted"], rel=0, abs=TOLERANCE)
    alpha = _data()["alpha"]
    for p, reject in zip(ours, expected["reject"], strict=True):
        if abs(p - alpha) > TOLERANCE:  # at the threshold itself rounding decides
            assert (p <= alpha) is reject
