"""A catalog reloaded without a restart: swapped atomically, only if it checks, with the
learned state of the offers that still exist kept, and profiles equal to what the new
catalog folds."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, Suppression
from nextbest.decide.model import Candidate, Choice, ChoiceContext
from nextbest.decide.pipeline import greedy
from nextbest.engine import Engine
from nextbest.errors import CatalogError
from nextbest.learn.model import describe
from nextbest.store import sqlite_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.usecases import reload_catalog
from tests.support import (
    APP_HOME_BAYES,
    APP_HOME_CONTEXTUAL,
    EXAMPLE_CATALOG,
    batch,
    counter_ids,
    edited_catalog,
    page,
)
from tests.unit.test_engine import play, random_traffic

#: an eligibility rule change: folds alike, so profiles stay as they are
NO_CARDS = [
    (
        "eligibility: segments.adult && !profile.overdrawn\n    kpi_event: Product Opened",
        'eligibility: "false"\n    kpi_event: Product Opened',
    )
]
#: a topic change: profiles are refolded
OTHER_IS_INVESTING = [('url_patterns: ["/investing*"]', 'url_patterns: ["/investing*", "/other*"]')]


def edited(tmp_path: Path, name: str, edits: dict[str, list[tuple[str, str]]]) -> Catalog:
    folder = tmp_path / name
    folder.mkdir()
    return load_catalog(edited_catalog(folder, edits))


def profiles(engine: Engine) -> dict[str, bytes]:
    return {p.customer_id: msgspec.msgpack.encode(p) for p in engine.profiles()}


def test_a_reload_swaps_the_catalog_for_the_next_decision(make_engine, tmp_path: Path) -> None:
    engine = make_engine("memory")
    play(engine, random_traffic(seed=3)[:4])
    before = engine.decide(DecisionRequest(placement="home_feed"), user_id="u1")
    new = edited(tmp_path, "no_cards", {"offers.yaml": NO_CARDS})
    report = engine.reload(new)
    assert (report.previous, report.version) == (before.catalog_version, new.version)
    assert report.changed
    assert not report.refolded
    after = engine.decide(DecisionRequest(placement="home_feed"), user_id="u1")
    assert after.catalog_version == new.version
    assert engine.catalog is new
    assert ("credit_card_offer", Suppression.INELIGIBLE) in [
        (e.offer_id, e.why) for e in after.excluded
    ]


def test_reloading_the_same_catalog_changes_nothing(make_engine, catalog: Catalog) -> None:
    engine = make_engine("memory")
    same = load_catalog(EXAMPLE_CATALOG)
    report = engine.reload(same)
    assert not report.changed
    assert engine.catalog is catalog


def test_the_learned_state_of_offers_that_still_exist_is_kept(make_engine, tmp_path: Path) -> None:
    """A rule change keeps every model, waiting view, budget and conversion count byte for
    byte; a placement whose model kind changes starts afresh."""
    engine = make_engine("memory")
    play(engine, random_traffic(seed=5))
    learned = engine.learner
    assert learned.learned > 0
    before = engine.model_state()
    engine.reload(edited(tmp_path, "no_cards", {"offers.yaml": NO_CARDS}))
    assert engine.learner is not learned
    assert engine.model_state() == before
    # app_home learns contextually; switching it to bayes starts that placement afresh
    switch = {"placements.yaml": [(APP_HOME_CONTEXTUAL, APP_HOME_BAYES)]}
    kept = engine.learner.models["home_feed"].to_state()
    engine.reload(edited(tmp_path, "switch", switch))
    models = engine.learner.models
    assert models["home_feed"].to_state() == kept
    assert models["app_home"].kind.value == "bayes"
    assert describe(models["app_home"]).n_learned == 0


def test_profiles_stay_when_events_fold_alike(make_engine, tmp_path: Path) -> None:
    engine = make_engine("memory")
    play(engine, random_traffic(seed=7)[:6])
    book = {p.customer_id: p for p in engine.profiles()}
    engine.reload(edited(tmp_path, "no_cards", {"offers.yaml": NO_CARDS}))
    assert all(book[p.customer_id] is p for p in engine.profiles())  # the same objects
    assert engine.replay().identical


def test_a_topic_change_refolds_every_profile_as_the_new_catalog_would(
    make_engine, tmp_path: Path
) -> None:
    engine = make_engine("memory")
    engine.ingest_batch(batch(page("https://bank.example/other/thing", user="reader")))
    play(engine, random_traffic(seed=9)[:6])
    assert "investing" not in engine.profile("reader").interests
    report = engine.reload(edited(tmp_path, "other", {"topics.yaml": OTHER_IS_INVESTING}))
    assert report.refolded
    assert report.events == engine.event_log.count()
    assert engine.profile("reader").interests["investing"].total == 1
    assert engine.replay().identical  # live == a replay under the new catalog


def test_a_restart_after_a_reload_resumes_what_it_saved(tmp_path: Path, make_engine, clock) -> None:
    """The reload saves at once: a restart on the new catalog reads that state, not a
    replay of the logs under it (which would forget what the old catalog's offers taught)."""
    path = tmp_path / "reload.sqlite"
    new = edited(tmp_path, "other", {"topics.yaml": OTHER_IS_INVESTING})
    first = Engine(load_catalog(EXAMPLE_CATALOG), sqlite_stores(path), clock, new_id=counter_ids())
    play(first, random_traffic(seed=11)[:8])
    first.reload(new)
    play(first, random_traffic(seed=12)[:3])
    first.flush()  # decisions logged (feedback on an unlogged one is not learned again)
    live, models = profiles(first), first.model_state()
    first.release()  # a crash after the reload: no snapshot since
    second = make_engine("sqlite", path=path, cat=new)
    assert profiles(second) == live
    assert second.model_state() == models


def test_a_decision_in_flight_uses_one_catalog(make_engine, tmp_path: Path) -> None:
    """A reload that starts while a decision runs waits for it: the decision is taken wholly
    under the catalog it started with."""
    engine = make_engine("memory")
    play(engine, random_traffic(seed=3)[:4])
    old = engine.catalog
    new = edited(tmp_path, "no_cards", {"offers.yaml": NO_CARDS})
    seen: list[tuple[bool, Catalog]] = []
    reloading = threading.Thread(target=engine.reload, args=(new,))

    def choose(ctx: ChoiceContext, pool: list[Candidate], limit: int) -> Choice:
        reloading.start()
        reloading.join(timeout=0.3)
        seen.append((reloading.is_alive(), engine.catalog))
        return greedy(ctx, pool, limit)

    decision = engine.decide(DecisionRequest(placement="home_feed"), user_id="u1", choose=choose)
    reloading.join(timeout=10)
    assert seen == [(True, old)]  # the reload waited for the decision
    assert decision.catalog_version == old.version
    assert "credit_card_offer" in decision.candidates + [e.offer_id for e in decision.excluded]
    assert engine.catalog is new


def test_the_use_case_swaps_only_a_catalog_that_checks(make_engine, tmp_path: Path) -> None:
    engine = make_engine("memory")
    folder = tmp_path / "served"
    folder.mkdir()
    edited_catalog(folder, {})
    served = engine.catalog.version
    (folder / "segments.yaml").write_text(
        (folder / "segments.yaml").read_text().replace("profile.age >= 18", "profile.agee >= 18")
    )
    with pytest.raises(CatalogError) as refused:
        reload_catalog(engine, folder)
    assert refused.value.message.startswith(
        f"catalog {folder} not reloaded, still serving {served}: {folder / 'segments.yaml'}:"
    )
    assert "did you mean profile.age?" in refused.value.message
    assert engine.catalog.version == served
    (folder / "topics.yaml").write_text(
        (folder / "topics.yaml").read_text().replace('"/investing*"', '"investing"')
    )
    (folder / "segments.yaml").write_text(
        (folder / "segments.yaml").read_text().replace("profile.agee", "profile.age")
    )
    done = reload_catalog(engine, folder)
    assert done.changed
    assert done.refolded
    assert engine.catalog.version == done.version != served
    (warning,) = done.warnings
    assert "warning: $.topics[4].url_patterns[0]: 'investing' does not start with /" in warning
