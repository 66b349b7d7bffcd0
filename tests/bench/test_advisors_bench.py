"""``bench/advisors.py`` at a tiny size: it runs on the public API, every case is timed, and
cards are shown on every board it builds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def test_advisors_bench(bench: Callable[[str], ModuleType], tmp_path: Path) -> None:
    args = ["--profiles", "40", "--calls", "60", "--advisors", "12", "--out", str(tmp_path)]
    assert bench("advisors").main([*args, "--tmpdir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "advisors.json").read_text())
    assert set(data["timed"]) == {
        "trivial",
        "card_someone_free",
        "card_nobody_free",
        "card_nobody_free_cold",
        "card_booked",
        "decide_offers",
        "decide_advisor",
    }
    assert data["advisors"] == 12
    assert data["cards_shown"]["none"] < 40
