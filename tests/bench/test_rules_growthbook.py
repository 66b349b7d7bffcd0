"""``bench/rules_growthbook.py``: nextbest's 20 rules and GrowthBook's conditions agree on a
few seeded profiles (the script checks 10,000 before it times them)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.support import ROOT

pytest.importorskip("growthbook", reason="growthbook (the dev extra) is the reference here")


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """``bench/rules_growthbook.py`` imported as a script would see it (``bench/`` on the path)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        yield importlib.import_module("rules_growthbook")


def test_twenty_rules_agree_with_growthbook(bench: ModuleType) -> None:
    b = bench.Bench()
    assert len(b.rules) == 20
    held = bench.check_equal(b, bench.sample(300, seed=11))
    # every rule holds for some profiles and not for others: the check is not vacuous
    assert all(0 < n < 300 for n in held.values()), held


def test_the_timing_loop_runs(bench: ModuleType) -> None:
    b = bench.Bench()
    ns = bench.time_all(b, bench.sample(8, seed=3), rounds=1)
    assert {k: len(v) for k, v in ns.items()} == dict.fromkeys(ns, 8)
    assert {"nextbest", "nextbest_before", "growthbook", "baseline"} <= set(ns)
