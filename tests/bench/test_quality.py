"""``bench/quality.py``: the 90 %-of-oracle figure, the Markdown table, and a tiny run."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from nextbest.sim.loop import Metrics
from tests.support import ROOT


@pytest.fixture(scope="module")
def quality() -> Iterator[ModuleType]:
    """``bench/quality.py`` imported as a script would see it (``bench/`` on the path)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        yield importlib.import_module("quality")


def cumulative(daily: list[int]) -> list[int]:
    out, total = [], 0
    for x in daily:
        total += x
        out.append(total)
    return out


def test_reached_from_the_day_the_ratio_stays_above_target(quality: ModuleType) -> None:
    imp = cumulative([100, 100, 100, 100, 100])
    ref_clicks = cumulative([10, 10, 10, 10, 10])
    clicks = cumulative([2, 5, 9, 10, 9])
    offers = [3, 4, 5, 5, 6]
    r = quality.reach_oracle(imp, clicks, offers, imp, ref_clicks, window=1, target=0.9)
    assert r.ratios == pytest.approx([0.2, 0.5, 0.9, 1.0, 0.9])
    assert (r.reached, r.day, r.first_day) == (True, 3, 3)
    assert (r.impressions, r.offers) == (300, 5)
    assert r.impressions_per_offer == pytest.approx(60.0)
    assert "from day 3 on" in quality.describe(r, "all-offer")


def test_a_crossing_that_does_not_last_is_not_reached(quality: ModuleType) -> None:
    imp = cumulative([100] * 4)
    ref = cumulative([10] * 4)
    clicks = cumulative([10, 5, 5, 5])
    r = quality.reach_oracle(imp, clicks, [2] * 4, imp, ref, window=1)
    assert r.first_day == 1
    assert not r.reached
    assert r.day is None
    assert r.impressions_per_offer is None
    text = quality.describe(r, "commercial")
    assert "not reached in 4 days" in text
    assert "day 1 only" in text


def test_the_trailing_window_pools_days(quality: ModuleType) -> None:
    """Daily CTR ratios 0.5, 0.5, 1, 1 reach 90 % on day 3 day by day, but not over 3 days."""
    imp = cumulative([100] * 4)
    ref = cumulative([2] * 4)
    clicks = cumulative([1, 1, 2, 2])
    day_by_day = quality.reach_oracle(imp, clicks, [1] * 4, imp, ref, window=1)
    assert day_by_day.day == 3
    pooled = quality.reach_oracle(imp, clicks, [1] * 4, imp, ref, window=3)
    assert pooled.ratios == pytest.approx([0.5, 0.5, 4 / 6, 5 / 6])
    assert not pooled.reached
    # fewer days at the start: day 2's window is days 1-2
    assert pooled.ratios[1] == pytest.approx((2 / 200) / (4 / 200))


def test_no_reference_click_means_no_ratio(quality: ModuleType) -> None:
    imp = cumulative([50, 50, 50])
    r = quality.reach_oracle(imp, cumulative([1, 1, 1]), [1] * 3, imp, [0, 0, 1], window=1)
    assert r.ratios[:2] == [None, None]
    assert (r.reached, r.day) == (True, 3)


def test_too_few_reference_clicks_do_not_count(quality: ModuleType) -> None:
    imp = cumulative([100] * 3)
    ref = cumulative([5, 5, 40])
    r = quality.reach_oracle(imp, ref, [1] * 3, imp, ref, window=1, min_clicks=30)
    assert r.ratios == [None, None, 1.0]
    assert r.day == 3


def test_series_must_cover_the_same_days(quality: ModuleType) -> None:
    with pytest.raises(ValueError, match="one value per day"):
        quality.reach_oracle([1, 2], [0, 1], [1], [1, 2], [0, 1])
    with pytest.raises(ValueError, match="window"):
        quality.reach_oracle([1], [0], [1], [1], [0], window=0)
    with pytest.raises(ValueError, match="min_clicks"):
        quality.reach_oracle([1], [0], [1], [1], [0], min_clicks=0)


def _metrics(policy: str, clicks: int, conversions: int) -> Metrics:
    return Metrics(
        policy=policy,
        seed=1,
        customers=10,
        days=1,
        impressions=1000,
        clicks=clicks,
        ctr=clicks / 1000,
        commercial_clicks=clicks // 2,
        commercial_ctr=clicks / 2000,
        conversions_total=conversions,
    )


def test_markdown_table_has_ratios_against_static_and_random(quality: ModuleType) -> None:
    table = quality.markdown_table(
        {
            "random": _metrics("random", 20, 0),
            "static": _metrics("static", 25, 4),
            "nextbest": _metrics("nextbest", 50, 6),
        }
    )
    lines = table.splitlines()
    assert len(lines) == 5
    assert len({line.count("|") for line in lines}) == 1
    nextbest = [c.strip() for c in lines[4].strip("|").split("|")]
    assert nextbest[0] == "nextbest"
    assert nextbest[3] == "5.00 %"
    assert nextbest[-4:] == ["2.00×", "2.50×", "1.50×", "-"]  # random had no conversion


def test_a_tiny_run_writes_json_png_and_table(
    quality: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = quality.main(["--seed", "3", "--customers", "25", "--days", "2", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("| policy |")
    assert "oracle's all-offer CTR" in out
    data = json.loads((tmp_path / "quality-seed3.json").read_text())
    assert set(data["metrics"]) == {"random", "static", "prior", "nextbest", "oracle"}
    assert data["metrics"]["nextbest"]["days"] == 2
    assert len(data["daily"]["oracle"]["clicks"]) == 2
    assert data["daily"]["nextbest"]["clicks"] == data["metrics"]["nextbest"]["cumulative_clicks"]
    assert {"date", "command", "machine", "wall_seconds", "reach_oracle"} <= set(data)
    png = (tmp_path / "quality-seed3.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_an_advisors_run_shows_the_card_beside_the_offers(
    quality: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--seed", "3", "--customers", "25", "--days", "2", "--advisors"]
    code = quality.main([*argv, "--policies", "none,nextbest", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| policy | cards shown (now) | calls asked (now) |" in out
    data = json.loads((tmp_path / "quality-seed3-advisors.json").read_text())
    assert set(data["metrics"]) == {"none", "nextbest", "nextbest_no_card"}
    assert data["metrics"]["nextbest_no_card"]["advisor_cards"] == 0
    assert data["advisors"] is True
    assert "nextbest_no_card" in data["advisor_table_markdown"]
    with pytest.raises(SystemExit):
        quality.main(["--worlds", "shelf", "--advisors"])


def test_a_tiny_zoo_run_writes_a_table_json_and_chart_per_world(
    quality: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--worlds", "default,age_appeal", "--seeds", "1,2", "--customers", "20"]
    code = quality.main([*argv, "--days", "2", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "### age_appeal:" in out
    assert "Oracle's margin (clicks):" in out
    for world in ("default", "age_appeal"):
        data = json.loads((tmp_path / f"zoo-{world}.json").read_text())
        assert data["seeds"] == [1, 2]
        assert set(data["metrics"]["2"]) == {
            "none",
            "random",
            "static",
            "greedy_recent",
            "prior",
            "nextbest",
            "oracle",
        }
        assert data["summary"]["true_incremental"]["none"]["mean"] == 0.0
        assert (tmp_path / f"zoo-{world}.png").read_bytes().startswith(b"\x89PNG")
        table = (tmp_path / f"zoo-{world}.md").read_text()
        assert "| greedy_recent |" in table
        assert "commercial clicks / oracle's" in table
        assert set(data["summary"]["commercial_vs_oracle"]) == set(data["metrics"]["2"])
    assert "### default:" in (tmp_path / "zoo.md").read_text()


def test_zoo_spread_is_mean_low_high(quality: ModuleType) -> None:
    import zoo

    s = zoo.spread([0.5, None, 1.0, 0.6])
    assert (s.mean, s.low, s.high) == (pytest.approx(0.7), 0.5, 1.0)
    assert zoo.spread([None]).mean is None


def test_an_unknown_world_is_refused(quality: ModuleType) -> None:
    with pytest.raises(SystemExit):
        quality.parse_args(["--worlds", "mars"])
