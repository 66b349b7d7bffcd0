"""`nextbest export decisions`: the decision log as Parquet, one row per shown item."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.clock import FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.engine import Engine
from nextbest.store import sqlite_stores
from nextbest.store.catalog_files import load_catalog
from tests.support import (
    EXAMPLE_CATALOG,
    T0,
    batch,
    counter_ids,
    identify,
    page,
    treated_everywhere,
)


def test_export_writes_one_row_per_item_with_propensities_and_features(tmp_path: Path) -> None:
    data = tmp_path / "log.sqlite"
    engine = Engine(
        load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), FixedClock(T0), new_id=counter_ids()
    )
    user = treated_everywhere("exporter")
    engine.ingest_batch(
        batch(
            identify({"age": 40}, user=user, at=T0 - 3600),
            *[
                page("https://bank.example/mortgages/rates", user=user, at=T0 - 60 * k)
                for k in range(6)
            ],
        )
    )
    feed = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
    nobody = engine.decide(DecisionRequest(placement="home_hero"), anonymous_id="fresh-device")
    engine.close()
    out = tmp_path / "decisions.parquet"

    result = CliRunner().invoke(
        app, ["export", "decisions", "--data", str(data), "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(feed.items) + max(1, len(nobody.items))
    first = rows[0]
    assert first["decision_id"] == feed.decision_id
    assert first["position"] == 1
    assert first["offer_id"] == feed.items[0].offer_id
    # home_feed explores (Thompson sampling, 200 samples) from the first decision: the
    # propensity is the share of the decision's samples that put the item first
    assert first["propensity"] == feed.items[0].propensity
    assert first["propensity"] * 200 == pytest.approx(round(first["propensity"] * 200))
    assert 1 / 200 <= first["propensity"] <= 1.0
    assert first["propensity_kind"] == "exact"
    assert first["candidates"] == feed.candidates
    assert dict(first["features"])["interest:mortgage"] > 0
    assert first["model_version"] == "contextual-0"


def test_export_bounds_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "log.sqlite"
    engine = Engine(load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), FixedClock(T0))
    engine.decide(DecisionRequest(placement="home_hero"), anonymous_id="a")
    engine.close()
    out = tmp_path / "d.parquet"
    runner = CliRunner()
    later = runner.invoke(
        app,
        ["export", "decisions", "--data", str(data), "--out", str(out), "--since", "2100-01-01"],
    )
    assert later.exit_code == 0, later.output
    assert pq.read_table(out).num_rows == 0
    bad = runner.invoke(
        app, ["export", "decisions", "--data", str(data), "--out", str(out), "--until", "soon"]
    )
    assert bad.exit_code == 2
    assert "--until" in bad.output
    missing = runner.invoke(
        app, ["export", "decisions", "--data", str(tmp_path / "none"), "--out", str(out)]
    )
    assert missing.exit_code == 1
