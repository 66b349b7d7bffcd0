"""The engine learns from feedback: decisions in a learning placement log what they saw and
with which probability each item was placed; clicks, dismissals and unanswered views reach
the placement's model in server time (when each event was received); replays and restarts
rebuild byte-identical models."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from typer.testing import CliRunner

from nextbest.catalog.compiled import Catalog
from nextbest.cli import app
from nextbest.clock import FixedClock
from nextbest.decide import Decision, DecisionRequest
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.decide.pipeline import greedy
from nextbest.decide.reasons import Suppression
from nextbest.engine import Engine
from nextbest.experiments import Arm, assign
from nextbest.learn.conversion import REFIT_DIVISOR
from nextbest.learn.features import customer_features
from nextbest.learn.learner import PRIOR, Learner
from nextbest.learn.model import DEFAULT_PRIOR_MEAN, OfferRef
from nextbest.store import Stores, sqlite_stores
from nextbest.store.audit_sqlite import SQLiteAuditLog
from nextbest.store.callbacks_sqlite import SQLiteCallbacks
from nextbest.store.catalog_files import load_catalog
from nextbest.store.outbox_sqlite import SQLiteOutbox
from nextbest.store.sqlite import (
    SQLiteDatabase,
    SQLiteDecisionLog,
    SQLiteEventLog,
    SQLiteQuarantine,
    SQLiteStateStore,
)
from tests.support import (
    EXPLORE_BANK,
    T0,
    batch,
    bayes_catalog,
    counter_ids,
    edited_catalog,
    feedback,
    identify,
    page,
    track,
)

HERO = DecisionRequest(placement="home_hero")
FEED = DecisionRequest(placement="home_feed")
SIDEBAR = DecisionRequest(placement="product_sidebar")
APP = DecisionRequest(placement="app_home")
#: the example bank's click window (placements.yaml: the default 30 minutes)
WINDOW = 30 * 60.0
EXPLORE_1 = "explore: {type: epsilon_greedy, epsilon: 1.0}"
EXPLORE_005 = "explore: {type: epsilon_greedy, epsilon: 0.05}"


# ---------------------------------------------------------------------- helpers


def treated(catalog: Catalog, prefix: str) -> str:
    """The first ``prefix-N`` in the treatment arm of every campaign of ``catalog``."""
    n = 0
    while True:
        uid = f"{prefix}-{n}"
        if all(
            assign(uid, c.salt or c.id, c.control_share) is Arm.TREATMENT
            for c in catalog.spec.campaigns
        ):
            return uid
        n += 1


def researcher(engine: Engine, user: str, *, at: float = T0 - 3_600.0, pages: int = 5) -> None:
    """An adult who read ``pages`` mortgage pages (5: in the mortgage_intent segment); two
    customers made with the same ``at`` have the same features."""
    msgs = [identify({"age": 35}, user=user, at=at)]
    msgs += [
        page(f"https://bank.example/mortgages/page-{i}", user=user, at=at + 60.0 * (i + 1))
        for i in range(pages)
    ]
    engine.ingest_batch(batch(*msgs))


def send(engine: Engine, *messages: dict[str, Any]) -> None:
    result = engine.ingest_batch(batch(*messages))
    assert result.accepted == len(messages)


def server_time(engine: Engine, at: float) -> None:
    """Sets the engine's clock to ``at``: the learner's time is when events are received
    (``received_at``, from this clock), not the events' own timestamps."""
    clock = engine.clock
    assert isinstance(clock, FixedClock)
    clock.set(at)


def tick(engine: Engine, at: float) -> None:
    """Another customer's page view received at ``at``: only moves the learner's time."""
    server_time(engine, at)
    send(engine, page("https://bank.example/", user="passer-by", at=at))


def n_learned(engine: Engine, placement: str) -> int:
    return {m.placement: m.info.n_learned for m in engine.models()}[placement]


def learner_of(engine: Engine) -> Learner:
    return engine.learner


def model_bytes(engine: Engine, placement: str) -> bytes:
    return learner_of(engine).models[placement].to_state()


def rescored(engine: Engine, placement: str, features: dict[str, float], offer_id: str) -> float:
    """The placement's model's click probability (position 1) for ``offer_id`` from a
    decision's logged features: the customer features and the offer's catalog prior, which
    enters as the offset ``logit(prior) - logit(DEFAULT_PRIOR_MEAN)``."""
    offer = engine.catalog.offers[offer_id]
    x = {k: v for k, v in features.items() if not k.startswith(PRIOR)}
    prior = features[PRIOR + offer_id]
    offset = math.log(prior / (1 - prior)) - math.log(DEFAULT_PRIOR_MEAN / (1 - DEFAULT_PRIOR_MEAN))
    ref = OfferRef(
        offer_id=offer_id,
        placement=placement,
        topic=offer.topic,
        kind=offer.kind,
        campaign_id=offer.campaign.id if offer.campaign else None,
    )
    return learner_of(engine).models[placement].predict_one(x, ref, offset=offset)


def edited(tmp_path: Path, name: str, edits: dict[str, list[tuple[str, str]]]) -> Catalog:
    folder = tmp_path / name
    folder.mkdir()
    return load_catalog(edited_catalog(folder, edits))


def explore_soon() -> list[tuple[str, str]]:
    """campaigns.yaml edits: every campaign at exploration share 0.5, so after its first
    explored impression one greedy impression earns the next an explored one."""
    return exploration_caps(0.5, 0.5)


def exploration_caps(share: float, always_on: float) -> list[tuple[str, str]]:
    """campaigns.yaml edits: ``max_exploration`` of every campaign at ``share``, but of
    always_on_products at ``always_on`` (0: never explored, its items always pinned)."""
    on = "    max_exploration: {}\n"
    return [
        ("    control_share: 0.1\n", "    control_share: 0.1\n" + on.format(share)),
        (
            "    weight: 0.8\n    control_share: 0.05\n",
            "    weight: 0.8\n    control_share: 0.05\n" + on.format(share),
        ),
        (
            "    weight: 0.5\n    control_share: 0.05\n",
            "    weight: 0.5\n    control_share: 0.05\n" + on.format(always_on),
        ),
    ]


def explorable(engine: Engine) -> dict[str, bool]:
    """Which campaigns the next decision may explore (``ExplorationBudget``)."""
    return {c: b.explorable(c) for c, b in learner_of(engine).budgets.items()}


def check_epsilon_greedy(
    d: Decision, catalog: Catalog, open_: dict[str, bool], epsilon: float
) -> tuple[int, int]:
    """Every commercial item's propensity is the exact epsilon-greedy one: 1 where its
    campaign was over budget (pinned), else ``(1 - epsilon) [greedy] + epsilon / n`` over the
    ``n`` explorable commercial candidates. Returns (pinned, free) item counts."""

    def free(offer_id: str) -> bool:
        camp = catalog.offers[offer_id].campaign
        return camp is None or open_[camp.id]

    n = sum(catalog.offers[c].kind.value == "commercial" and free(c) for c in d.candidates)
    pinned = free_items = 0
    for item in commercial(d):
        if not free(item.offer_id):
            assert (item.propensity, item.explored) == (1.0, False), item
            pinned += 1
            continue
        expected = epsilon / n if item.explored else (1 - epsilon) + epsilon / n
        assert item.propensity == pytest.approx(expected, rel=1e-12), item
        free_items += 1
    return pinned, free_items


def commercial(d: Decision) -> list[Any]:
    return [i for i in d.items if i.kind == "commercial"]


# ---------------------------------------------------------------------- what a decision logs


def test_a_learning_decision_logs_model_features_candidates_and_propensities(
    make_engine: Callable[..., Engine], store_kind: str, tmp_path: Path
):
    # always_on_products is never explored (its items pinned, propensity 1); every other
    # campaign always may be (free: the epsilon-greedy propensity, the bank on epsilon 0.05)
    cat = edited(
        tmp_path,
        "explorable",
        {
            "campaigns.yaml": exploration_caps(1.0, 0.0),
            "placements.yaml": [(EXPLORE_BANK, EXPLORE_005)],
        },
    )
    assert cat.campaigns["mortgage_q4"].max_exploration == 1.0
    engine = make_engine(store_kind, cat=cat)
    user = treated(cat, "learn")
    researcher(engine, user)
    profile = engine.profile(user)
    assert profile is not None

    pinned = free = 0
    for request in [HERO, FEED, SIDEBAR] * 3:
        open_ = explorable(engine)
        d = engine.decide(request, user_id=user)
        assert d.model_version == "contextual-0"
        assert d.candidates
        assert {i.offer_id for i in d.items} <= set(d.candidates)
        assert len(d.items) == cat.placements[request.placement].slots
        # the customer features, exactly what learn.features computes for what the decision saw
        x = {k: v for k, v in d.features.items() if not k.startswith(PRIOR)}
        assert x == customer_features(profile, cat.topics, T0, {}, d.segments)
        assert x["interest:mortgage"] > 0.0
        assert {"bias", "segment:adult", "segment:mortgage_intent"} <= set(x)
        # the catalog prior of every candidate, and nothing else
        priors = {k[len(PRIOR) :] for k in d.features if k.startswith(PRIOR)}
        assert priors == set(d.candidates)
        assert all(0.0 < d.features[PRIOR + c] < 1.0 for c in d.candidates)
        # logged features are enough to re-score each item offline
        for item in d.items:
            assert 0.0 < item.propensity <= 1.0
            assert item.propensity_kind == "exact"
            assert rescored(engine, d.placement, d.features, item.offer_id) == pytest.approx(
                item.p_click, abs=1e-9
            )
        p, f = check_epsilon_greedy(d, cat, open_, 0.05)
        pinned, free = pinned + p, free + f
    assert pinned
    assert free

    d = engine.decide(APP, user_id=user)  # the app's home learns like the web's
    assert d.model_version == "contextual-0"
    assert {k[len(PRIOR) :] for k in d.features if k.startswith(PRIOR)} == set(d.candidates)
    assert all(0.0 < i.propensity <= 1.0 for i in d.items)


def test_a_campaign_explores_once_then_waits_until_its_share_allows_the_next(
    make_engine: Callable[..., Engine], tmp_path: Path
):
    """ExplorationBudget: a campaign never explored may be at once; after that, only while
    ``explored + 1 <= 0.2 (shown + 1)``: its next exploration waits for 8 greedy
    impressions, during which its items sit where greedy puts them with propensity 1.
    Epsilon 1 here, so every decision that may explore does."""
    cat = edited(tmp_path, "epsilon1", {"placements.yaml": [(EXPLORE_BANK, EXPLORE_1)]})
    engine = make_engine("memory", cat=cat)
    user = treated(cat, "pin")
    researcher(engine, user, pages=1)

    def budget() -> tuple[int, int]:
        return learner_of(engine).budgets["always_on_products"].counts()["always_on_products"]

    assert explorable(engine) == dict.fromkeys(cat.campaigns, True)
    first = engine.decide(HERO, user_id=user)
    (item,) = first.items
    # the first decision explores already: a uniformly random pick among every candidate
    n = sum(cat.offers[c].kind.value == "commercial" for c in first.candidates)
    assert (item.campaign_id, item.explored) == ("always_on_products", True)
    assert item.propensity == pytest.approx(1 / n, rel=1e-12)
    assert budget() == (1, 1)

    for shown in range(1, 9):  # 2 explored of shown + 1 would be over 0.2
        assert not explorable(engine)["always_on_products"]
        d = engine.decide(HERO, user_id=user)
        assert [(i.campaign_id, i.propensity, i.explored) for i in d.items] == [
            ("always_on_products", 1.0, False)
        ]
        assert budget() == (shown + 1, 1)

    open_ = explorable(engine)
    assert open_["always_on_products"]  # 2 of 10 impressions: exactly the cap
    tenth = engine.decide(HERO, user_id=user)
    pinned, free = check_epsilon_greedy(tenth, cat, open_, 1.0)
    assert (pinned, free) == (0, 1)
    assert budget()[0] == 9 + (tenth.items[0].campaign_id == "always_on_products")


# ---------------------------------------------------------------------- learning from feedback


def test_the_very_next_decision_reflects_a_click(
    make_engine: Callable[..., Engine], store_kind: str, clock: FixedClock, catalog: Catalog
):
    engine = make_engine(store_kind)
    clicker, twin = treated(catalog, "clicker"), treated(catalog, "twin")
    researcher(engine, clicker)
    researcher(engine, twin)

    before = engine.decide(FEED, user_id=twin)
    shown = engine.decide(FEED, user_id=clicker)
    offer = shown.items[0].offer_id
    assert before.model_version == shown.model_version == "contextual-0"
    assert offer in [i.offer_id for i in before.items]
    send(
        engine,
        feedback(shown, "Promotion Viewed", at=T0 + 5),
        feedback(shown, "Promotion Clicked", at=T0 + 9),
    )
    assert n_learned(engine, "home_feed") == 1

    clock.advance(30)
    after = engine.decide(FEED, user_id=twin)
    assert after.model_version == "contextual-1"
    p_before = {i.offer_id: i.p_click for i in before.items}[offer]
    p_after = {i.offer_id: i.p_click for i in after.items}[offer]
    assert p_after > p_before * 1.05, (p_before, p_after)
    # the clicker is not shown the offer again for a week (contact policy)
    again = engine.decide(FEED, user_id=clicker)
    assert offer not in [i.offer_id for i in again.items]
    assert (offer, Suppression.RECENTLY_CLICKED) in [(e.offer_id, e.why) for e in again.excluded]


def test_a_view_is_learned_as_a_miss_only_after_the_click_window(
    make_engine: Callable[..., Engine], store_kind: str, catalog: Catalog
):
    engine = make_engine(store_kind)
    user = treated(catalog, "viewer")
    researcher(engine, user)
    d = engine.decide(HERO, user_id=user)
    offer = d.items[0].offer_id
    p0 = rescored(engine, "home_hero", d.features, offer)
    model0 = model_bytes(engine, "home_hero")

    viewed = T0 + 5
    server_time(engine, viewed)
    send(engine, feedback(d, "Promotion Viewed", at=viewed))
    assert n_learned(engine, "home_hero") == 0
    assert learner_of(engine).pending_views == 1
    tick(engine, viewed + WINDOW)  # the window's last moment: a click could still come
    assert n_learned(engine, "home_hero") == 0
    assert model_bytes(engine, "home_hero") == model0

    tick(engine, viewed + WINDOW + 1)
    assert n_learned(engine, "home_hero") == 1
    assert learner_of(engine).pending_views == 0
    assert rescored(engine, "home_hero", d.features, offer) < p0
    assert {m.placement: m.info.version for m in engine.models()}["home_hero"] == "contextual-1"
    assert n_learned(engine, "home_feed") == 1  # the contextual placements learn one model


def test_a_dismissal_is_learned_at_once_as_a_miss(
    make_engine: Callable[..., Engine], store_kind: str, catalog: Catalog
):
    engine = make_engine(store_kind)
    user = treated(catalog, "dismisser")
    researcher(engine, user)
    d = engine.decide(FEED, user_id=user)
    offer = d.items[1].offer_id
    p0 = rescored(engine, "home_feed", d.features, offer)
    server_time(engine, T0 + 6)
    send(
        engine,
        feedback(d, "Promotion Viewed", offer, at=T0 + 5),
        feedback(d, "Promotion Dismissed", offer, at=T0 + 6),
    )
    assert n_learned(engine, "home_feed") == 1
    assert learner_of(engine).pending_views == 0
    assert rescored(engine, "home_feed", d.features, offer) < p0
    # the window closing later learns nothing more
    tick(engine, T0 + 5 + 2 * WINDOW)
    assert n_learned(engine, "home_feed") == 1


def test_a_second_click_on_the_same_item_is_not_learned_twice(
    make_engine: Callable[..., Engine], store_kind: str, catalog: Catalog
):
    engine = make_engine(store_kind)
    user = treated(catalog, "double")
    researcher(engine, user)
    d = engine.decide(FEED, user_id=user)
    send(
        engine,
        feedback(d, "Promotion Viewed", at=T0 + 5),
        feedback(d, "Promotion Clicked", at=T0 + 8),
    )
    assert n_learned(engine, "home_feed") == 1
    learned = model_bytes(engine, "home_feed")
    send(engine, feedback(d, "Promotion Clicked", at=T0 + 12))
    send(engine, feedback(d, "Promotion Viewed", at=T0 + 20))  # a late duplicate view
    assert n_learned(engine, "home_feed") == 1
    assert model_bytes(engine, "home_feed") == learned
    assert learner_of(engine).pending_views == 0
    # another item of the same decision is its own impression
    send(
        engine,
        feedback(d, "Promotion Viewed", d.items[1].offer_id, at=T0 + 29),
        feedback(d, "Promotion Clicked", d.items[1].offer_id, at=T0 + 30),
    )
    assert n_learned(engine, "home_feed") == 2


def test_a_click_after_the_window_is_ignored(
    make_engine: Callable[..., Engine], store_kind: str, catalog: Catalog
):
    engine = make_engine(store_kind)
    user = treated(catalog, "late")
    researcher(engine, user)
    d = engine.decide(HERO, user_id=user)
    viewed = T0 + 5
    server_time(engine, viewed)
    send(engine, feedback(d, "Promotion Viewed", at=viewed))
    tick(engine, viewed + WINDOW + 60)
    assert n_learned(engine, "home_hero") == 1  # learned as a miss
    missed = model_bytes(engine, "home_hero")
    server_time(engine, viewed + WINDOW + 120)
    send(engine, feedback(d, "Promotion Clicked", at=viewed + WINDOW + 120))
    assert n_learned(engine, "home_hero") == 1
    assert model_bytes(engine, "home_hero") == missed


def test_a_click_long_after_the_window_is_still_ignored(
    make_engine: Callable[..., Engine], store_kind: str, catalog: Catalog
):
    """The learner's docstring: "A click that comes after its window is ignored: the view was
    already learned as a miss." Also hours later (a tab left open): one impression, one
    label."""
    engine = make_engine(store_kind)
    user = treated(catalog, "later")
    researcher(engine, user)
    d = engine.decide(HERO, user_id=user)
    viewed = T0 + 5
    server_time(engine, viewed)
    send(engine, feedback(d, "Promotion Viewed", at=viewed))
    tick(engine, viewed + WINDOW + 60)
    assert n_learned(engine, "home_hero") == 1
    missed = model_bytes(engine, "home_hero")
    server_time(engine, viewed + 3 * 3_600.0)
    send(engine, feedback(d, "Promotion Clicked", at=viewed + 3 * 3_600.0))
    assert n_learned(engine, "home_hero") == 1
    assert model_bytes(engine, "home_hero") == missed


def test_a_devices_skewed_clock_closes_no_click_window(
    make_engine: Callable[..., Engine], store_kind: str, catalog: Catalog
):
    """The learner runs on server time (``received_at``): an event stamped hours ahead by
    its device does not close the windows of views received minutes ago."""
    engine = make_engine(store_kind)
    user = treated(catalog, "skewed")
    researcher(engine, user)
    d = engine.decide(HERO, user_id=user)
    server_time(engine, T0 + 5)
    send(engine, feedback(d, "Promotion Viewed", at=T0 + 5))
    server_time(engine, T0 + 10)
    send(engine, page("https://bank.example/", user="passer-by", at=T0 + 3 * WINDOW))
    assert learner_of(engine).now == T0 + 10
    assert learner_of(engine).pending_views == 1
    assert n_learned(engine, "home_hero") == 0
    # received within the window: a click, however late the device stamped it
    server_time(engine, T0 + 20)
    send(engine, feedback(d, "Promotion Clicked", at=T0 + 3 * WINDOW))
    assert learner_of(engine).pending_views == 0
    assert n_learned(engine, "home_hero") == 1
    assert engine.replay().models_identical


def test_a_decision_another_chooser_made_teaches_the_model_nothing(
    make_engine: Callable[..., Engine], store_kind: str, catalog: Catalog
):
    """Only the learner's own decisions teach its model and count in budgets: one made
    through ``choose=`` (a simulator's policy, say) logs ``prior``, not the model's view."""
    engine = make_engine(store_kind)
    user = treated(catalog, "outsider")
    researcher(engine, user)
    budgets = {c: b.counts() for c, b in learner_of(engine).budgets.items()}
    model0 = model_bytes(engine, "home_feed")
    d = engine.decide(FEED, user_id=user, choose=greedy)
    assert d.model_version == "prior"
    assert [(i.propensity, i.propensity_kind, i.explored) for i in d.items] == [
        (1.0, "exact", False)
    ] * len(d.items)
    server_time(engine, T0 + 9)
    send(
        engine,
        feedback(d, "Promotion Viewed", at=T0 + 5),
        feedback(d, "Promotion Clicked", at=T0 + 9),
        feedback(d, "Promotion Viewed", d.items[1].offer_id, at=T0 + 9),
    )
    assert learner_of(engine).pending_views == 0
    tick(engine, T0 + 2 * WINDOW)
    assert n_learned(engine, "home_feed") == 0
    assert model_bytes(engine, "home_feed") == model0
    assert {c: b.counts() for c, b in learner_of(engine).budgets.items()} == budgets
    # the learner's own decision for the same customer does teach it
    own = engine.decide(FEED, user_id=user)
    assert own.model_version == "contextual-0"
    server_time(engine, T0 + 2 * WINDOW + 5)
    send(
        engine,
        feedback(own, "Promotion Viewed", at=T0 + 2 * WINDOW + 5),
        feedback(own, "Promotion Clicked", at=T0 + 2 * WINDOW + 5),
    )
    assert n_learned(engine, "home_feed") == 1
    report = engine.replay()
    assert report.identical, report.differing
    assert report.models_identical


# ---------------------------------------------------------------------- replay and restart


def _history(
    engine: Engine, clock: FixedClock, seed: int, steps: int = 80, start: float = T0 - 7_200.0
) -> int:
    """A seeded mix of pages, decisions and feedback over several customers, in event time
    from ``start``; returns the feedback events sent."""
    rng = random.Random(seed)
    cat = engine.catalog
    users = [treated(cat, f"mix{k}") for k in range(4)]
    topics = ["mortgages", "loans/car", "pension", "savings/children", "cards", "investing"]
    t = start
    for k, user in enumerate(users):
        send(engine, identify({"age": 28 + 9 * k, "children": k % 2}, user=user, at=t))
    sent = 0
    for _ in range(steps):
        t += rng.choice([5.0, 30.0, 120.0, 600.0, WINDOW + 60.0])
        clock.set(t)
        user = rng.choice(users)
        if rng.random() < 0.4:
            send(engine, page(f"https://bank.example/{rng.choice(topics)}/x", user=user, at=t))
            continue
        request = rng.choice([HERO, FEED, SIDEBAR, APP])
        d = engine.decide(request, user_id=user)
        if not d.items or rng.random() < 0.2:
            continue
        item = rng.choice(d.items)
        msgs = [feedback(d, "Promotion Viewed", item.offer_id, at=t + 1)]
        answer = rng.random()
        if answer < 0.3:
            msgs.append(feedback(d, "Promotion Clicked", item.offer_id, at=t + 2))
        elif answer < 0.4:
            msgs.append(feedback(d, "Promotion Dismissed", item.offer_id, at=t + 2))
        t += 2
        send(engine, *msgs)
        sent += len(msgs)
    return sent


def test_replay_rebuilds_identical_models(engine: Engine, clock: FixedClock):
    sent = _history(engine, clock, seed=11)
    assert sent > 20
    learner = learner_of(engine)
    assert learner.learned > 5
    assert {m.placement for m in engine.models() if m.info.n_learned} >= {"home_feed", "app_home"}
    report = engine.replay()
    assert report.identical, report.differing
    assert report.models_identical
    live = learner.to_state()
    engine.rebuild()
    assert learner_of(engine).to_state() == live


def test_replay_rebuilds_identical_conversion_fits(engine: Engine, clock: FixedClock):
    """Clicks that convert (their offer's KPI event) or whose attribution window closes
    refit the conversion model (every outcome at first, then every fiftieth more); a replay
    and a rebuild give the same counts, fit and throttle counter, byte for byte."""
    rng = random.Random(7)
    offers = engine.catalog.offers
    users = [treated(engine.catalog, f"conv{k}") for k in range(12)]
    t = T0 - 7_200.0
    for k, user in enumerate(users):
        send(engine, identify({"age": 25 + 4 * k}, user=user, at=t))
    for _ in range(300):
        t += 300.0
        clock.set(t)
        user = rng.choice(users)
        d = engine.decide(rng.choice([FEED, HERO]), user_id=user)
        measured = [i for i in d.items if offers[i.offer_id].spec.kpi_event]
        if not measured:
            continue
        item = rng.choice(measured)
        msgs = [feedback(d, "Promotion Viewed", item.offer_id, at=t + 1)]
        msgs.append(feedback(d, "Promotion Clicked", item.offer_id, at=t + 2))
        offer = offers[item.offer_id]
        if offer.spec.kpi_event and offer.topic and rng.random() < 0.3:
            props = {"product": offer.topic}  # a topic id names its product too
            msgs.append(track(offer.spec.kpi_event, props, user=user, at=t + 60))
        clock.set(t + 60)
        send(engine, *msgs)
    tick(engine, t + 8 * 86_400.0)  # every attribution window closed
    model = learner_of(engine).conversions
    outcomes = sum(clicks for _, clicks in model.counts().values())
    assert outcomes >= 60
    assert sum(conv for conv, _ in model.counts().values()) >= 5
    assert REFIT_DIVISOR <= model.fits < outcomes  # past the first 50, throttled
    report = engine.replay()
    assert report.identical, report.differing
    assert report.models_identical
    live = learner_of(engine).to_state()
    engine.rebuild()
    assert learner_of(engine).to_state() == live


def test_a_restarted_engine_resumes_byte_identical_models(
    make_engine: Callable[..., Engine], clock: FixedClock, tmp_path: Path
):
    path = tmp_path / "restart.sqlite"
    engine = make_engine("sqlite", path)
    _history(engine, clock, seed=12)
    live = learner_of(engine).to_state()
    assert learner_of(engine).learned > 5
    engine.close()

    reopened = make_engine("sqlite", path)
    assert learner_of(reopened).to_state() == live
    report = reopened.rebuild()
    assert report.models_identical
    assert learner_of(reopened).to_state() == live


def test_after_a_crash_the_snapshot_plus_the_log_tail_give_the_live_models(
    make_engine: Callable[..., Engine], clock: FixedClock, tmp_path: Path
):
    """No close: a snapshot midway, then more decisions (flushed, as the server does every
    second) and feedback; a second engine on the same file restores the snapshot and folds
    the tail."""
    path = tmp_path / "crash.sqlite"
    engine = make_engine("sqlite", path)
    _history(engine, clock, seed=13, steps=40)
    engine.flush()
    engine.snapshot()
    _history(engine, clock, seed=14, steps=40, start=clock.now() + 60)
    engine.flush()
    live = learner_of(engine).to_state()

    survivor = make_engine("sqlite", path)
    restored = learner_of(survivor).to_state()
    assert msgspec.msgpack.decode(restored) == msgspec.msgpack.decode(live)  # a readable diff
    assert restored == live
    assert survivor.replay().models_identical


def test_a_restart_counts_budgets_from_the_snapshot_and_the_decisions_logged_after_it(
    make_engine: Callable[..., Engine], clock: FixedClock, tmp_path: Path
):
    """The snapshot saves the budgets with the decision log's position then; a restart reads
    only the decisions after it. Decisions made after the snapshot's flush but before its cut
    (counted live, not logged yet) are left out of the saved budgets and counted from the log
    once flushed."""
    path = tmp_path / "budgets.sqlite"
    engine = make_engine("sqlite", path)
    _history(engine, clock, seed=15, steps=40)
    engine.snapshot()
    user = treated(engine.catalog, "mix0")
    engine.flush = lambda: None  # type: ignore[method-assign]  # the snapshot's own flush
    for _ in range(3):
        engine.decide(FEED, user_id=user)
    pending = engine.pending_decisions()
    assert learner_of(engine).to_state(unlogged=pending) != learner_of(engine).to_state()
    engine.snapshot()
    del engine.flush  # the class's again
    saved_at = engine.decision_log.decision_log_position()
    _history(engine, clock, seed=16, steps=40, start=clock.now() + 60)
    engine.flush()
    live = learner_of(engine).to_state()
    assert engine.decision_log.decision_log_position() > saved_at

    read: list[int | str] = []

    class Spy(SQLiteDecisionLog):
        def decisions(self, since: float | None = None, until: float | None = None) -> Any:
            read.append("whole log")
            return super().decisions(since, until)

        def decisions_after(self, position: int) -> Any:
            read.append(position)
            return super().decisions_after(position)

    db = SQLiteDatabase(path)
    stores = Stores(
        SQLiteEventLog(db),
        Spy(db),
        SQLiteStateStore(db),
        SQLiteQuarantine(db),
        callbacks=SQLiteCallbacks(db),
        outbox=SQLiteOutbox(db),
        audit=SQLiteAuditLog(db),
        close=db.close,
    )
    survivor = Engine(engine.catalog, stores, clock, new_id=counter_ids())
    try:
        assert read == [saved_at]
        assert learner_of(survivor).to_state() == live
    finally:
        survivor.close()


def test_snapshots_taken_while_other_threads_decide_and_flush_restart_exactly(
    make_engine: Callable[..., Engine], clock: FixedClock, tmp_path: Path
):
    """Decisions, timer flushes and snapshots from three threads at once, each flush slowed
    inside the store's append so snapshots meet flushes in flight: every snapshot's budgets
    plus the decisions logged after its position are the live budgets."""
    path = tmp_path / "threads.sqlite"
    engine = make_engine("sqlite", path)
    _history(engine, clock, seed=18, steps=20)
    engine.flush()
    store = engine.decision_log
    append = store.append_decisions

    def slow_append(decisions: Any) -> None:
        append(decisions)
        time.sleep(0.002)  # committed, not yet taken out of the pending decisions

    store.append_decisions = slow_append  # type: ignore[method-assign]
    users = [treated(engine.catalog, f"mix{k}") for k in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(step: Callable[[int], object]) -> None:
        try:
            n = 0
            while not stop.is_set():
                step(n)
                n += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(lambda n: engine.decide(FEED, user_id=users[n % 4]),)),
        threading.Thread(target=run, args=(lambda n: engine.flush(),)),
        threading.Thread(target=run, args=(lambda n: engine.snapshot(),)),
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    engine.snapshot()  # the cut may land with decisions pending: they are counted after it
    for _ in range(3):
        engine.decide(FEED, user_id=users[0])
    engine.flush()
    live = learner_of(engine).to_state()
    survivor = Engine(engine.catalog, sqlite_stores(path), clock, new_id=counter_ids())
    try:
        assert learner_of(survivor).to_state() == live
        assert survivor.replay().models_identical
    finally:
        survivor.close()


def test_a_snapshot_without_the_log_position_counts_the_whole_log(
    make_engine: Callable[..., Engine], clock: FixedClock, tmp_path: Path
):
    """A snapshot saved before the position was kept (or a store that lost that row) still
    restarts right: every logged decision is counted."""
    path = tmp_path / "old.sqlite"
    engine = make_engine("sqlite", path)
    _history(engine, clock, seed=17, steps=40)
    engine.close()
    live = learner_of(engine).to_state()
    store = sqlite_stores(path)
    saved = store.state.load_state()
    assert saved is not None
    rows = [r for r in saved.rows if r.key != "decision_log_position"]
    store.state.save_state(saved.seq, saved.version, rows, replace=True)
    store.close()
    reopened = make_engine("sqlite", path)
    assert learner_of(reopened).to_state() == live


# ---------------------------------------------------------------------- exploration


def test_service_messages_are_never_explored(
    make_engine: Callable[..., Engine], store_kind: str, clock: FixedClock, tmp_path: Path
):
    cat = edited(
        tmp_path,
        "epsilon1",
        {
            "placements.yaml": [(EXPLORE_BANK, EXPLORE_1)],
            "campaigns.yaml": explore_soon(),
        },
    )
    engine = make_engine(store_kind, cat=cat)
    user = treated(cat, "overdrawn")
    researcher(engine, user)
    send(
        engine,
        track(
            "Transaction Posted", {"amount": -80.0, "currency": "EUR", "balance": -3.0}, user=user
        ),
    )
    explored = 0
    for k in range(30):
        clock.set(T0 + 60.0 * k)
        for request in (HERO, FEED, APP):
            open_ = explorable(engine)
            d = engine.decide(request, user_id=user)
            first = d.items[0]
            assert (first.offer_id, first.position, first.propensity, first.explored) == (
                "overdraft_warning",
                1,
                1.0,
                False,
            )
            assert all(i.offer_id != "overdraft_warning" for i in d.items[1:])
            explored += sum(i.explored for i in d.items)
            if request is not APP:  # epsilon 1: a uniformly random ordering of the pool
                check_epsilon_greedy(d, cat, open_, 1.0)
    assert explored > 10  # exploration was on, just never for the service message


def test_a_campaigns_explored_share_stays_under_its_cap(
    make_engine: Callable[..., Engine], store_kind: str, clock: FixedClock, tmp_path: Path
):
    cap = 0.2
    cat = edited(
        tmp_path,
        "capped",
        {
            "placements.yaml": [(EXPLORE_BANK, EXPLORE_1)],
            "campaigns.yaml": [
                ("    weight: 0.5\n", f"    weight: 0.5\n    max_exploration: {cap}\n"),
            ],
        },
    )
    assert cat.campaigns["always_on_products"].max_exploration == cap
    engine = make_engine(store_kind, cat=cat)
    users = [treated(cat, f"cap{k}") for k in range(3)]
    for user in users:
        researcher(engine, user, pages=2)
    slots = cat.placements["home_feed"].slots
    shown = explored = 0
    for k in range(150):
        clock.set(T0 + 10.0 * k)
        d = engine.decide(FEED, user_id=users[k % len(users)])
        for item in d.items:
            if item.campaign_id == "always_on_products":
                shown += 1
                explored += item.explored
        assert explored <= cap * shown + slots, (k, shown, explored)
    assert shown >= 300
    assert 0 < explored / shown <= cap + slots / shown
    assert explored / shown > cap / 2  # the budget is used, not starved
    budget = learner_of(engine).budgets["always_on_products"]
    assert budget.counts()["always_on_products"] == (shown, explored)


def test_thompson_propensities_are_reproducible_shares_of_the_decisions_samples(
    make_engine: Callable[..., Engine], store_kind: str, clock: FixedClock, bayes_app: Catalog
):
    catalog = bayes_app  # app_home on bayes + Thompson
    n_sim = 200
    engine = make_engine(store_kind, cat=catalog)
    users = [treated(catalog, f"thompson{k}") for k in range(3)]
    for user in users:
        researcher(engine, user, pages=2)
    seen: list[float] = []
    for k in range(24):
        clock.set(T0 + 10.0 * k)
        user = users[k % len(users)]
        before = learner_of(engine).to_state()
        d = engine.decide(APP, user_id=user)
        assert d.model_version.startswith("bayes-")
        for item in d.items:
            assert 1 / n_sim <= item.propensity <= 1.0
            # exact: a share of the decision's n_sim posterior samples, one of them its own
            draws = item.propensity * n_sim
            assert item.propensity_kind == "exact"
            assert draws == pytest.approx(round(draws))
            seen.append(item.propensity)
        # the same decision id, from the same learner state: the same items and propensities
        twin = Learner.from_state(catalog, before)
        profile = engine.profile(user)
        assert profile is not None
        again = run_pipeline(catalog, profile, APP, d.timestamp, d.decision_id, twin.choose)
        assert [(i.offer_id, i.propensity, i.explored) for i in again.items] == [
            (i.offer_id, i.propensity, i.explored) for i in d.items
        ]
        if k % 3 == 0:  # some feedback, so the posteriors move
            send(engine, feedback(d, "Promotion Clicked", at=clock.now() + 1))
    assert any(p < 1.0 for p in seen)
    assert len(set(seen)) > 3


# ---------------------------------------------------------------------- nextbest models


def test_nextbest_models_lists_the_learning_placements(clock: FixedClock, tmp_path: Path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    bayes_catalog(folder)  # app_home on bayes + Thompson
    catalog = load_catalog(folder)
    data = tmp_path / "models.sqlite"
    engine = Engine(catalog, sqlite_stores(data), clock, new_id=counter_ids())
    try:
        user = treated(catalog, "cli")
        researcher(engine, user)
        d = engine.decide(FEED, user_id=user)
        send(
            engine,
            feedback(d, "Promotion Viewed", at=T0 + 1),
            feedback(d, "Promotion Clicked", at=T0 + 2),
            feedback(d, "Promotion Viewed", d.items[1].offer_id, at=T0 + 2),
            feedback(d, "Promotion Dismissed", d.items[1].offer_id, at=T0 + 3),
        )
    finally:
        engine.close()

    runner = CliRunner()
    args = ["models", "--data", str(data), "--catalog", str(folder)]
    env = {"COLUMNS": "80", "NO_COLOR": "1"}
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    heads = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert [h.split(":")[0] for h in heads] == [
        "home_hero",
        "home_feed",
        "product_sidebar",
        "app_home",
    ]
    assert heads[1].startswith(
        "home_feed: contextual, shared (Thompson) version contextual-2, 2 feedback events, state "
    )
    assert heads[3].startswith("app_home: bayes (Thompson) version bayes-0, 0 feedback events")

    as_json = runner.invoke(app, [*args, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    listed = orjson.loads(as_json.stdout)
    assert [(m["placement"], m["explore"], m["info"]["kind"]) for m in listed] == [
        ("home_hero", "Thompson", "contextual"),
        ("home_feed", "Thompson", "contextual"),
        ("product_sidebar", "Thompson", "contextual"),
        ("app_home", "Thompson", "bayes"),
    ]
    calibrated = listed[1]["calibration"]
    assert [(c["outcome"], c["n"], c["observed"]) for c in calibrated] == [
        ("click", len(d.items), round(1 / len(d.items), 6)),
        ("conversion", 1, 0.0),
    ]
    assert "calibration, click:" in result.stdout
    feed = listed[1]["info"]
    assert (feed["version"], feed["n_learned"]) == ("contextual-2", 2)
    assert feed["state_bytes"] > 0
    assert feed["top_features"]
    assert all(len(f) == 2 for f in feed["top_features"])
