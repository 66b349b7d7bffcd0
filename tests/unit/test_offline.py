"""The decision log joined to rewards, and offline evaluation of a candidate catalog."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from nextbest.catalog.load import Catalog, load_catalog
from nextbest.clock import FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.engine import Engine
from nextbest.errors import ValidationError
from nextbest.learn.logs import join_rewards
from nextbest.learn.offline import NONE, _marginals, evaluate_candidate
from nextbest.store import MemoryStore
from nextbest.store.export import read_logged_items, write_decisions
from tests.support import (
    DAY,
    EXAMPLE_CATALOG,
    T0,
    batch,
    counter_ids,
    edited_catalog,
    feedback,
    identify,
    track,
)


def without_learning(folder: Path, *more: tuple[str, str]) -> Catalog:
    """The example bank with learning off everywhere: deterministic decisions."""
    text = (EXAMPLE_CATALOG / "placements.yaml").read_text()
    edits = [(ln, "") for ln in sorted({ln for ln in text.splitlines() if "learning:" in ln})]
    folder.mkdir(exist_ok=True)
    return load_catalog(edited_catalog(folder, {"placements.yaml": [*edits, *more]}))


@pytest.fixture
def greedy_catalog(tmp_path: Path) -> Catalog:
    return without_learning(tmp_path / "greedy")


def logged_engine(catalog: Catalog, clicks_every: int = 3, placement: str = "home_feed") -> Engine:
    engine = Engine(catalog, MemoryStore(), FixedClock(T0), new_id=counter_ids())
    for i in range(30):
        user = f"c{i}"
        engine.ingest_batch(batch(identify({"age": 25 + i}, user=user, at=T0 - DAY)))
        d = engine.decide(DecisionRequest(placement=placement), user_id=user)
        views = [feedback(d, offer_id=item.offer_id, at=T0 + 1) for item in d.items]
        clicks = [feedback(d, "Promotion Clicked", at=T0 + 5)] if i % clicks_every == 0 else []
        engine.ingest_batch(batch(*views, *clicks))
    return engine


def items_of(engine: Engine, catalog: Catalog):
    store = engine.store
    return join_rewards(list(store.decisions()), (s.event for s in store.scan(0)), catalog)


def test_rewards_join_clicks_and_conversions_within_the_attribution_window(
    greedy_catalog: Catalog,
) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    first = engine.decision("d000001")
    assert first is not None
    offer = greedy_catalog.offers[first.items[0].offer_id]
    assert offer.topic is not None
    kpi = offer.spec.kpi_event
    assert kpi is not None
    product = greedy_catalog.topics[offer.topic].products[0]
    props = {"product": product}
    assert isinstance(engine.clock, FixedClock)
    # c0 clicked its first item: a KPI for that product 2 days later converts it
    engine.clock.set(T0 + 2 * DAY)
    engine.ingest_batch(batch(track(kpi, props, user="c0", at=T0 + 2 * DAY)))
    # c3 clicked too, but converts only after the 7-day window
    engine.clock.set(T0 + 9 * DAY)
    engine.ingest_batch(batch(track(kpi, props, user="c3", at=T0 + 9 * DAY)))
    engine.flush()
    items = items_of(engine, greedy_catalog)
    by = {(i.customer_id, i.position): i for i in items}
    assert by[("c0", 1)].clicked
    assert by[("c0", 1)].converted
    assert by[("c3", 1)].clicked
    assert not by[("c3", 1)].converted
    assert not by[("c1", 1)].clicked
    assert sum(i.clicked for i in items) == 10
    assert all(i.propensity == 1.0 for i in items)


def test_the_logging_policy_evaluated_on_its_own_greedy_logs_is_the_logged_rate(
    greedy_catalog: Catalog,
) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    items = items_of(engine, greedy_catalog)
    report = evaluate_candidate(items, greedy_catalog, n_bootstrap=50)
    clicks = report.rewards[0]
    assert clicks.reward == "click"
    assert clicks.logged == pytest.approx(10 / len(items))
    for e in clicks.estimates:
        assert e.value == pytest.approx(clicks.logged)
        assert e.unsupported_mass == 0.0
    assert report.decisions == 30
    assert report.rounds == len(items)
    assert report.warnings == []  # greedy logs: every propensity exact


def test_marginals_follow_the_candidate_exploration(greedy_catalog: Catalog) -> None:
    engine = logged_engine(greedy_catalog)
    d = engine.decision("d000001")
    assert d is not None
    greedy = _marginals(greedy_catalog, "home_feed", d.candidates, d.features)
    assert [max(m, key=lambda k: m[k]) for m in greedy] == [i.offer_id for i in d.items]
    assert all(list(m.values()) == [1.0] for m in greedy)
    explorer = load_catalog(EXAMPLE_CATALOG)  # home_feed: epsilon-greedy 0.05
    marg = _marginals(explorer, "home_feed", d.candidates, d.features)
    for slot in marg:
        assert sum(slot.values()) == pytest.approx(1.0)
        assert max(slot.values()) == pytest.approx(0.95 + 0.05 / len(slot))
    assert _marginals(explorer, "nowhere", d.candidates, d.features) == []


def test_a_slot_the_candidate_leaves_empty_is_worth_nothing(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    engine = logged_engine(greedy_catalog, clicks_every=1)
    engine.flush()
    items = items_of(engine, greedy_catalog)
    # a candidate with one slot in home_feed: slots 2 and 3 go to "(none)"
    narrow = without_learning(tmp_path / "narrow", ("    slots: 3\n", "    slots: 1\n"))
    report = evaluate_candidate(items, narrow, n_bootstrap=20)
    ips = report.rewards[0].estimates[0]
    firsts = [i for i in items if i.position == 1]
    assert ips.value == pytest.approx(sum(i.clicked for i in firsts) / len(items))
    assert ips.unsupported_mass > 0  # "(none)" was never logged: said, not hidden
    assert NONE == "(none)"


def test_parquet_round_trip_gives_the_same_rounds(greedy_catalog: Catalog, tmp_path: Path) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    decisions = list(engine.store.decisions())
    items = items_of(engine, greedy_catalog)
    rewards = {(i.decision_id, i.offer_id): (i.clicked, i.converted) for i in items}
    path = tmp_path / "d.parquet"
    write_decisions(decisions, path, rewards)
    again = read_logged_items(path)
    assert [
        (i.decision_id, i.offer_id, i.position, i.clicked, i.propensity, i.propensity_kind)
        for i in again
    ] == [
        (i.decision_id, i.offer_id, i.position, i.clicked, i.propensity, i.propensity_kind)
        for i in items
    ]
    assert again[0].features == items[0].features
    assert again[0].candidates == items[0].candidates


def test_estimated_propensities_are_kept_and_warned_about(tmp_path: Path) -> None:
    """app_home explores by Thompson sampling: its logged propensities are Monte Carlo
    estimates. They survive the Parquet round trip, and the offline report says its
    estimators rest on them."""
    catalog = load_catalog(EXAMPLE_CATALOG)
    engine = logged_engine(catalog, placement="app_home")
    engine.flush()
    items = items_of(engine, catalog)
    kinds = {i.propensity_kind for i in items}
    assert "monte_carlo" in kinds
    assert kinds <= {"exact", "monte_carlo"}
    estimated = sum(i.propensity_kind != "exact" for i in items)
    path = tmp_path / "app.parquet"
    rewards = {(i.decision_id, i.offer_id): (i.clicked, i.converted) for i in items}
    write_decisions(list(engine.store.decisions()), path, rewards)
    again = read_logged_items(path)
    assert [i.propensity_kind for i in again] == [i.propensity_kind for i in items]
    report = evaluate_candidate(items, catalog, n_bootstrap=20)
    (warning,) = report.warnings
    assert warning.startswith(f"{estimated} of {report.rounds} logged propensities are estimates")
    exact = [msgspec.structs.replace(i, propensity_kind="exact") for i in items]
    assert evaluate_candidate(exact, catalog, n_bootstrap=20).warnings == []


def test_nothing_to_evaluate_and_unreadable_files_are_clear_errors(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="no logged items"):
        evaluate_candidate([], greedy_catalog)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(ValidationError, match="cannot read"):
        read_logged_items(bad)
