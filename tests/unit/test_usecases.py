"""The use cases the faces call, on a real SQLite store, without any face."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextbest.bootstrap import build_engine
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.errors import NotFound, ValidationError
from nextbest.settings import Settings
from nextbest.usecases import (
    check_catalog,
    evaluate_policy,
    export_decisions,
    list_models,
    read_logged,
    replay_store,
)
from tests.support import DAY, EXAMPLE_CATALOG, T0, batch, counter_ids, feedback, identify

CATALOG = str(EXAMPLE_CATALOG)


@pytest.fixture
def store(tmp_path: Path) -> Settings:
    """A store with 20 customers' decisions on home_feed, every one viewed, a third clicked."""
    settings = Settings(catalog=CATALOG, data=str(tmp_path / "logs.sqlite"))
    engine = build_engine(settings, FixedClock(T0), new_id=counter_ids(), freeze_gc=False)
    for i in range(20):
        user = f"c{i}"
        engine.ingest_batch(batch(identify({"age": 25 + i}, user=user, at=T0 - DAY)))
        d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
        views = [feedback(d, offer_id=item.offer_id, at=T0 + 1) for item in d.items]
        clicks = [feedback(d, "Promotion Clicked", at=T0 + 5)] if i % 3 == 0 else []
        engine.ingest_batch(batch(*views, *clicks))
    engine.close()
    return settings


def test_replay_of_a_store_is_identical_and_models_are_listed(store: Settings):
    report = replay_store(store)
    assert (report.identical, report.models_identical, report.profiles) == (True, True, 20)
    assert replay_store(store, write=True).identical
    models = list_models(store, top=3)
    assert "home_feed" in {m.placement for m in models}
    assert any(m.info.n_learned > 0 for m in models)


def test_logs_export_and_offline_evaluation(store: Settings, tmp_path: Path):
    logged = read_logged(CATALOG, store.data)
    assert len(logged.decisions) == 20
    assert sum(i.clicked for i in logged.items) == 7
    assert read_logged(CATALOG, store.data, since=T0 + 1).decisions == []
    out = tmp_path / "decisions.parquet"
    rows = export_decisions(CATALOG, store.data, out, None, None)
    # a row per shown item and one per control exposure (none of these decisions is empty)
    control = sum(len(d.control) for d in logged.decisions)
    assert control > 0
    assert rows == len(logged.items) + control
    from_store = evaluate_policy(CATALOG, store.data, CATALOG, n_bootstrap=20)
    from_file = evaluate_policy(CATALOG, str(out), CATALOG, n_bootstrap=20)
    assert from_store.rewards == from_file.rewards
    with pytest.raises(ValidationError, match="apply to a store"):
        evaluate_policy(CATALOG, str(out), CATALOG, since=T0)


def test_a_store_that_is_not_there_is_not_found(tmp_path: Path):
    missing = Settings(catalog=CATALOG, data=str(tmp_path / "nothing.sqlite"))
    for call in (lambda: replay_store(missing), lambda: list_models(missing)):
        with pytest.raises(NotFound, match="no store at"):
            call()
    assert not Path(missing.data).exists()  # looking did not create it


def test_check_catalog_gives_problems_or_the_catalog(tmp_path: Path):
    good = check_catalog(CATALOG)
    assert good.problems == []
    assert good.catalog is not None
    assert good.catalog.placements
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\noffers: 3\n")
    bad = check_catalog(broken)
    assert bad.catalog is None
    assert bad.problems
