"""The engine's learning state on its own: ``Learner`` with the example catalog, hand-made
decisions and feedback events. Time is when the server received each event (``received_at``);
the state is deterministic bytes."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.catalog.model import PlacementKind
from nextbest.decide.model import Candidate, ChoiceContext, Decision, DecisionItem
from nextbest.events.model import Event, EventType
from nextbest.experiments.assignment import Arm
from nextbest.learn.conversion import (
    ANY_TOPIC,
    INTENT_STRENGTH,
    ConversionModel,
    intent_level,
    kpi_topic,
)
from nextbest.learn.learner import PRIOR, Learner, customer_part
from nextbest.learn.logs import join_rewards
from nextbest.profile.model import Profile
from nextbest.store.catalog_files import load_catalog
from tests.support import T0, edited_catalog

WINDOW = 30 * 60.0
_ids = itertools.count(1)


def decision(
    catalog: Catalog,
    decision_id: str = "d1",
    placement: str = "home_feed",
    offers: tuple[str, ...] = ("mortgage_rates", "savings_offer", "overdraft_warning"),
    *,
    at: float = T0,
    explored: tuple[str, ...] = (),
    model_version: str | None = None,
) -> Decision:
    """A logged decision showing ``offers`` in order, with features as a decision logs them,
    made by the placement's own model (``<kind>-0``) unless ``model_version`` says otherwise."""
    items = []
    for position, offer_id in enumerate(offers, 1):
        offer = catalog.offers[offer_id]
        items.append(
            DecisionItem(
                position=position,
                offer_id=offer_id,
                kind=offer.kind.value,
                campaign_id=offer.campaign.id if offer.campaign else None,
                arm=Arm.TREATMENT,
                score=1.0,
                p_click=0.02,
                propensity=1.0,
                content={},
                reasons=[],
                explored=offer_id in explored,
            )
        )
    features = {"bias": 1.0, "interest:mortgage": 1.1, "segment:adult": 1.0, "how:wd1": 1.0}
    features.update({PRIOR + o: 0.03 for o in offers})
    return Decision(
        decision_id=decision_id,
        customer_id="u1",
        placement=placement,
        timestamp=at,
        catalog_version=catalog.version,
        items=items,
        excluded=[],
        control=[],
        segments=["adult"],
        candidates=list(offers),
        features=features,
        model_version=model_version or _made_by(catalog, placement),
    )


def _made_by(catalog: Catalog, placement: str) -> str:
    learning = catalog.placements[placement].learning
    return "prior" if learning is None else f"{learning.model.value}-0"


def event(
    name: str,
    d: Decision | None = None,
    offer_id: str | None = None,
    *,
    at: float,
    sent_at: float | None = None,
) -> Event:
    """``name`` (a Promotion event answering ``d``, or any other track event) received at
    ``at``; its client ``timestamp`` is ``sent_at`` (default: ``at``)."""
    props = {}
    if d is not None:
        props = {"promotion_id": offer_id or d.items[0].offer_id, "decision_id": d.decision_id}
    return Event(
        message_id=f"m{next(_ids)}",
        type=EventType.TRACK,
        timestamp=at if sent_at is None else sent_at,
        received_at=at,
        user_id="u1",
        name=name,
        properties=props,
    )


def viewed(
    learner: Learner,
    d: Decision,
    offer_id: str | None = None,
    *,
    at: float,
    sent_at: float | None = None,
) -> None:
    learner.observe(event("Promotion Viewed", d, offer_id, at=at, sent_at=sent_at), d)


def clicked(
    learner: Learner,
    d: Decision,
    offer_id: str | None = None,
    *,
    at: float,
    sent_at: float | None = None,
) -> None:
    learner.observe(event("Promotion Clicked", d, offer_id, at=at, sent_at=sent_at), d)


def n_learned(learner: Learner) -> dict[str, int]:
    return {m.placement: m.info.n_learned for m in learner.describe()}


def busy(catalog: Catalog) -> Learner:
    """A learner with something in every part of its state: both kinds of model trained,
    views waiting, answered items remembered, campaign budgets counted."""
    learner = Learner(catalog)
    feed = decision(catalog, "d1", explored=("savings_offer",))
    app = decision(catalog, "d2", "app_home", ("mortgage_rates", "car_loan_rates"))
    for d in (feed, app):
        learner.record_decision(d)
    viewed(learner, feed, at=T0 + 1)
    clicked(learner, feed, at=T0 + 2)  # learned at once
    viewed(learner, feed, "savings_offer", at=T0 + 3)  # never answered: a miss, later
    viewed(learner, app, "car_loan_rates", at=T0 + 4)
    learner.observe(event("Promotion Dismissed", app, "car_loan_rates", at=T0 + 5), app)
    viewed(learner, app, at=T0 + 100)  # its window runs to T0 + 100 + WINDOW
    viewed(learner, app, at=T0 + 110)  # the same item again: still one view
    learner.advance(T0 + 3 + WINDOW + 1)  # savings_offer's window closed
    late = decision(catalog, "d3", at=T0 + WINDOW)
    viewed(learner, late, at=T0 + WINDOW + 10)
    return learner


# ---------------------------------------------------------------------- describe


def test_describe_lists_each_learning_placement(bayes_app: Catalog):
    catalog = bayes_app  # app_home on bayes + Thompson
    learner = Learner(catalog)
    listed = learner.describe()
    assert [(m.placement, m.explore, m.info.kind.value, m.info.version) for m in listed] == [
        ("home_hero", "Thompson", "contextual", "contextual-0"),
        ("home_feed", "Thompson", "contextual", "contextual-0"),
        ("product_sidebar", "Thompson", "contextual", "contextual-0"),
        ("app_home", "Thompson", "bayes", "bayes-0"),
    ]
    assert all(m.info.n_learned == 0 and m.info.state_bytes > 0 for m in listed)
    assert len(learner.describe(k=1)[0].info.top_features) == 1


def test_describe_counts_what_each_model_learned(bayes_app: Catalog):
    catalog = bayes_app  # app_home on bayes + Thompson
    learner = busy(catalog)
    assert n_learned(learner) == {
        # the contextual placements learn one model: home_feed's mortgage_rates clicked,
        # savings_offer missed
        "home_hero": 2,
        "home_feed": 2,
        "product_sidebar": 2,
        "app_home": 1,  # car_loan_rates dismissed; mortgage_rates still within its window
    }
    assert [m.shared for m in learner.describe()] == [True, True, True, False]
    assert learner.learned == 3
    info = {m.placement: m.info for m in learner.describe()}
    assert info["home_feed"].version == "contextual-2"
    assert info["app_home"].top_features[0][0].endswith("@app_home")


def test_a_catalog_without_learning_has_no_models_and_chooses_greedily(tmp_path: Path):
    no_learning = [
        ("    learning: {model: contextual, explore: {type: thompson, n_sim: 200}}\n", ""),
    ]
    cat = load_catalog(edited_catalog(tmp_path, {"placements.yaml": no_learning}))
    learner = Learner(cat)
    assert learner.describe() == []
    pool = [Candidate(o, 0.02, 1.0) for o in cat.by_placement["home_feed"]][:5]
    ctx = ChoiceContext("d1", "home_feed", T0, Profile(customer_id="u1"), {}, [])
    choice = learner.choose(ctx, pool, 3)
    assert choice.picks == [(0, 1.0), (1, 1.0), (2, 1.0)]
    assert choice.model_version is None
    assert choice.features is None
    d = decision(cat)
    clicked(learner, d, at=T0 + 1)
    assert learner.learned == 0
    assert learner.now == T0 + 1  # time still moves


# ---------------------------------------------------------------------- choose


def test_choose_scores_with_the_model_and_logs_features(catalog: Catalog):
    learner = Learner(catalog)
    offers = catalog.by_placement["home_feed"]
    pool = [Candidate(o, 0.01 + 0.001 * k, 1.0) for k, o in enumerate(offers)]
    profile = Profile(customer_id="u1", user_id="u1", traits={"age": 40})
    ctx = ChoiceContext("d-choose", "home_feed", T0, profile, {"device": "mobile"}, ["adult"])
    choice = learner.choose(ctx, pool, 3)
    assert choice.model_version == "contextual-0"
    assert choice.p_click is not None
    assert len(choice.p_click) == len(pool)
    assert all(0.0 < p < 1.0 for p in choice.p_click)
    assert choice.features is not None
    assert {"bias", "segment:adult", "device:mobile"} <= set(choice.features)
    assert {k for k in choice.features if k.startswith(PRIOR)} == {PRIOR + c.offer.id for c in pool}
    assert len(choice.picks) == len(choice.explored) == 3
    assert all(0.0 < p <= 1.0 for _, p in choice.picks)
    # a fresh contextual model predicts the catalog prior it is given
    assert choice.p_click == pytest.approx([c.p_click for c in pool], rel=1e-6)


def test_choose_is_a_function_of_the_state_and_the_decision_id(catalog: Catalog):
    state = busy(catalog).to_state()
    profile = Profile(customer_id="u1", user_id="u1", traits={"age": 40})
    for placement in ("home_hero", "home_feed", "product_sidebar", "app_home"):
        pool = [Candidate(o, 0.02, 1.0) for o in catalog.by_placement[placement]]
        slots = catalog.placements[placement].slots
        ctx = ChoiceContext(f"d-{placement}", placement, T0 + 60, profile, {}, ["adult"])
        one = Learner.from_state(catalog, state).choose(ctx, pool, slots)
        two = Learner.from_state(catalog, state).choose(ctx, pool, slots)
        assert one == two


# ---------------------------------------------------------------------- state


def test_a_fresh_state_round_trips_byte_identical(catalog: Catalog):
    data = Learner(catalog).to_state()
    assert Learner.from_state(catalog, data).to_state() == data


def test_a_busy_state_round_trips_byte_identical(catalog: Catalog):
    learner = busy(catalog)
    data = learner.to_state()
    restored = Learner.from_state(catalog, data)
    assert restored.to_state() == data
    assert restored.pending_views == learner.pending_views == 2
    assert restored.learned == learner.learned
    assert restored.now == learner.now
    decoded = msgspec.msgpack.decode(data)
    assert decoded["budgets"]["always_on_products"] == [4, 1]
    assert decoded["answered"]
    assert decoded["views"]


def test_a_snapshot_whose_views_hold_the_whole_logged_features_is_not_read(catalog: Catalog):
    """Views used to keep the decision's whole features (priors included); such a state must
    fail to decode (the engine then replays the log) rather than be read as customer features."""
    decoded = msgspec.msgpack.decode(busy(catalog).to_state())
    old = [[*v[:6], {**v[7], PRIOR + v[3]: 0.03}] for v in decoded["views"]]
    with pytest.raises(msgspec.DecodeError):
        Learner.from_state(catalog, msgspec.msgpack.encode({**decoded, "views": old}))


def test_waiting_views_keep_customer_features_only_for_a_model_that_reads_them(
    bayes_app: Catalog,
):
    catalog = bayes_app  # app_home on bayes + Thompson
    views = {v[2]: v for v in msgspec.msgpack.decode(busy(catalog).to_state())["views"]}
    contextual, bayes = views["d3"], views["d2"]  # home_feed learns contextually, app_home not
    assert contextual[7] == {
        "bias": 1.0,
        "interest:mortgage": 1.1,
        "segment:adult": 1.0,
        "how:wd1": 1.0,
    }
    assert bayes[7] == {}


def test_customer_part_drops_the_priors_in_any_order():
    x = {"bias": 1.0, "interest:mortgage": 1.1, "segment:adult": 1.0}
    logged = {**x, PRIOR + "a": 0.1, PRIOR + "b": 0.2}  # as choose logs them
    assert customer_part(logged, ["a", "b"]) == x
    assert list(customer_part(logged, ["a", "b"])) == list(x)
    shuffled = {PRIOR + "b": 0.2, "bias": 1.0, PRIOR + "a": 0.1, "interest:mortgage": 1.1}
    assert customer_part({**shuffled, "segment:adult": 1.0}, ["a", "b"]) == x
    assert customer_part(logged, ["b", "a"]) == x  # candidates in another order: filtered
    assert customer_part(logged) == x
    assert customer_part(x, []) == x
    assert customer_part({PRIOR + "a": 0.1}, ["a", "b", "c"]) == {}


def test_a_restored_learner_continues_exactly_like_the_original(catalog: Catalog):
    learner = busy(catalog)
    restored = Learner.from_state(catalog, learner.to_state())
    late = decision(catalog, "d3", at=T0 + WINDOW)
    app = decision(catalog, "d2", "app_home", ("mortgage_rates", "car_loan_rates"))
    feed = decision(catalog, "d1", explored=("savings_offer",))
    for lr in (learner, restored):
        clicked(lr, app, at=T0 + WINDOW + 20)  # within its window: a click
        clicked(lr, feed, "savings_offer", at=T0 + WINDOW + 30)  # after its window: ignored
        clicked(lr, late, "savings_offer", at=T0 + WINDOW + 40)  # never viewed: not learned
        lr.advance(T0 + 3 * WINDOW)  # the late view of mortgage_rates: a miss
    assert restored.to_state() == learner.to_state()
    # one model for the four contextual placements: home_feed's 3 and app_home's 2
    learned = {p for p, spec in catalog.placements.items() if spec.kind is PlacementKind.OFFERS}
    assert n_learned(learner) == {p: 5 for p in learned}  # an advisor card learns no model


def test_advance_to_an_earlier_time_changes_nothing(catalog: Catalog):
    learner = busy(catalog)
    now = learner.now
    data = learner.to_state()
    for t in (now, now - 1, T0, 0.0):
        learner.advance(t)
        assert learner.now == now
        assert learner.to_state() == data
    learner.advance(now + 1)
    assert learner.now == now + 1


def test_time_never_runs_backwards_with_out_of_order_events(catalog: Catalog):
    learner = Learner(catalog)
    d = decision(catalog)
    viewed(learner, d, at=T0 + 100)
    learner.observe(event("Some Event", at=T0 + 10), None)  # an older event arrives late
    assert learner.now == T0 + 100
    assert learner.pending_views == 1


# ---------------------------------------------------------------------- pending views


def test_pending_views_wait_for_their_click_window(catalog: Catalog):
    learner = Learner(catalog)
    d = decision(catalog)
    assert learner.pending_views == 0
    viewed(learner, d, "mortgage_rates", at=T0 + 1)
    viewed(learner, d, "savings_offer", at=T0 + 2)
    viewed(learner, d, "savings_offer", at=T0 + 3)  # the same item again
    assert learner.pending_views == 2
    assert learner.learned == 0
    clicked(learner, d, "mortgage_rates", at=T0 + 4)
    assert learner.pending_views == 1
    assert learner.learned == 1
    learner.advance(T0 + 2 + WINDOW)  # the window's last moment
    assert learner.pending_views == 1
    learner.advance(T0 + 2 + WINDOW + 0.001)
    assert learner.pending_views == 0
    assert n_learned(learner)["home_feed"] == 2


@pytest.fixture(scope="module")
def unshared(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The example bank with every placement learning a model of its own."""
    apart = [("n_sim: 200}}", "n_sim: 200}, shared: false}")]
    folder = tmp_path_factory.mktemp("unshared")
    return load_catalog(edited_catalog(folder, {"placements.yaml": apart}))


def test_views_of_several_placements_close_in_deadline_order(unshared: Catalog):
    catalog = unshared
    learner = Learner(catalog)
    feed = decision(catalog, "d1")
    app = decision(catalog, "d2", "app_home", ("mortgage_rates", "car_loan_rates"))
    viewed(learner, app, at=T0 + 10)
    viewed(learner, feed, at=T0 + 5)
    learner.advance(T0 + 5 + WINDOW + 1)
    assert learner.pending_views == 1
    assert n_learned(learner)["home_feed"] == 1
    assert n_learned(learner)["app_home"] == 0
    learner.advance(T0 + 10 + WINDOW + 1)
    assert learner.pending_views == 0
    assert n_learned(learner)["app_home"] == 1


def test_a_second_click_long_after_the_first_is_not_learned_twice(catalog: Catalog):
    """One impression, one label: a customer who comes back to the open page an hour later
    and clicks the same item again has not clicked a second impression."""
    learner = Learner(catalog)
    d = decision(catalog)
    viewed(learner, d, at=T0 + 1)
    clicked(learner, d, at=T0 + 2)
    assert learner.learned == 1
    model = learner.models["home_feed"].to_state()
    clicked(learner, d, at=T0 + 2 + 2 * WINDOW + 60)
    assert learner.learned == 1
    assert learner.models["home_feed"].to_state() == model


def test_a_click_is_remembered_for_two_windows_after_its_decision(catalog: Catalog):
    """A click soon after the decision is remembered until ``decision + 2 windows`` (not only
    ``click + window``): a repeat click between the two is still the same impression."""
    learner = Learner(catalog)
    d = decision(catalog)
    viewed(learner, d, at=T0 + 1)
    clicked(learner, d, at=T0 + 1)
    assert learner.learned == 1
    answered = msgspec.msgpack.decode(learner.to_state())["answered"]
    assert answered == [[T0 + 2 * WINDOW, "d1", "mortgage_rates"]]
    model = learner.models["home_feed"].to_state()
    clicked(learner, d, at=T0 + 1 + WINDOW + 60)  # past click + window, within 2 windows
    viewed(learner, d, at=T0 + 1 + WINDOW + 70)  # a late view: nothing to wait for
    assert learner.learned == 1
    assert learner.pending_views == 0
    assert learner.models["home_feed"].to_state() == model
    learner.advance(T0 + 2 * WINDOW + 1)
    assert msgspec.msgpack.decode(learner.to_state())["answered"] == []
    clicked(learner, d, at=T0 + 2 * WINDOW + 2)  # stale: more than two windows on
    assert learner.learned == 1


def test_time_is_when_the_server_received_an_event_not_the_clients_clock(catalog: Catalog):
    learner = Learner(catalog)
    d = decision(catalog)
    viewed(learner, d, at=T0 + 1, sent_at=T0 - 3_600.0)  # a device an hour behind
    # a device hours ahead closes no window: its event was received at T0 + 10
    learner.observe(event("Some Event", at=T0 + 10, sent_at=T0 + 5 * WINDOW), None)
    assert learner.now == T0 + 10
    assert learner.pending_views == 1
    assert learner.learned == 0
    # the click was received within the window: a click, whatever the device's clock says
    clicked(learner, d, at=T0 + 20, sent_at=T0 + 5 * WINDOW)
    assert learner.pending_views == 0
    assert n_learned(learner)["home_feed"] == 1
    # a click stamped within the window but received more than two windows after the
    # decision finds nothing waiting: ignored
    clicked(learner, d, "savings_offer", at=T0 + 2 * WINDOW + 1, sent_at=T0 + 30)
    assert learner.learned == 1


def test_decisions_made_by_another_chooser_teach_nothing_and_count_in_no_budget(
    bayes_app: Catalog,
):
    """Only the learner's own decisions (``model_version`` of the placement's model kind)
    teach its model: an external ``choose=`` logs ``prior`` and other features."""
    catalog = bayes_app  # app_home on bayes + Thompson
    learner = Learner(catalog)
    data = learner.to_state()
    feed = decision(catalog, "d1", model_version="prior", explored=("savings_offer",))
    app = decision(catalog, "d2", "app_home", ("mortgage_rates",), model_version="contextual-0")
    for d in (feed, app):
        learner.record_decision(d)
        viewed(learner, d, at=T0 + 1)
        clicked(learner, d, "savings_offer" if d is feed else None, at=T0 + 2)
    assert all(b.counts() == {} for b in learner.budgets.values())
    assert learner.learned == 0
    assert learner.pending_views == 0
    assert learner.now == T0 + 2  # time still moves
    assert {m.placement: m.info.version for m in learner.describe()}["home_feed"] == "contextual-0"
    restored = msgspec.msgpack.decode(learner.to_state())
    assert restored["models"] == msgspec.msgpack.decode(data)["models"]
    # the placement's own model's decisions do
    own = decision(catalog, "d3", "app_home", ("mortgage_rates",))
    assert own.model_version == "bayes-0"
    learner.record_decision(own)
    viewed(learner, own, at=T0 + 3)
    clicked(learner, own, at=T0 + 3)
    assert n_learned(learner)["app_home"] == 1
    assert learner.budgets["always_on_products"].counts() == {"always_on_products": (1, 0)}


def test_a_click_without_a_view_of_the_same_item_is_not_learned(catalog: Catalog):
    """Forged feedback: a click (or a dismissal) counts only after a view of the same
    decision item."""
    learner = Learner(catalog)
    d = decision(catalog, offers=("mortgage_rates", "savings_offer"))
    learner.record_decision(d)
    viewed(learner, d, "savings_offer", at=T0 + 1)
    clicked(learner, d, "mortgage_rates", at=T0 + 2)  # its view never came
    learner.observe(event("Promotion Dismissed", d, "mortgage_rates", at=T0 + 3), d)
    assert learner.learned == 0
    assert learner.pending_views == 1  # savings_offer still waits


def test_feedback_that_matches_no_item_is_not_learned(catalog: Catalog):
    learner = Learner(catalog)
    d = decision(catalog)
    clicked(learner, d, "car_loan_rates", at=T0 + 1)  # not in the decision
    learner.observe(event("Promotion Clicked", d, at=T0 + 2), None)  # no decision joined
    learner.observe(event("Application Started", d, at=T0 + 3), d)  # not feedback
    assert learner.learned == 0
    assert learner.pending_views == 0
    assert learner.now == T0 + 3


def test_service_messages_are_learned_but_never_counted_against_budgets(catalog: Catalog):
    learner = Learner(catalog)
    d = decision(catalog, offers=("overdraft_warning", "mortgage_rates"))
    learner.record_decision(d)
    counts = {c: b.counts() for c, b in learner.budgets.items()}
    assert counts["always_on_products"] == {"always_on_products": (1, 0)}
    viewed(learner, d, "overdraft_warning", at=T0 + 1)
    clicked(learner, d, "overdraft_warning", at=T0 + 1)
    assert n_learned(learner)["home_feed"] == 1


def test_decisions_of_other_placements_do_not_count_against_budgets(
    catalog: Catalog, tmp_path: Path
):
    no_hero = [
        (
            "    description: The large banner on the logged-in home page.\n"
            "    learning: {model: contextual, explore: {type: thompson, n_sim: 200}}\n",
            "    description: The large banner on the logged-in home page.\n",
        )
    ]
    cat = load_catalog(edited_catalog(tmp_path, {"placements.yaml": no_hero}))
    learner = Learner(cat)
    assert [m.placement for m in learner.describe()] == ["home_feed", "product_sidebar", "app_home"]
    learner.record_decision(decision(cat, placement="home_hero", offers=("mortgage_rates",)))
    assert all(b.counts() == {} for b in learner.budgets.values())
    assert not learner.dirty


def kpi(name: str, product: str | None, *, at: float, user: str | None = "u1", anon=None) -> Event:
    return Event(
        message_id=f"m{next(_ids)}",
        type=EventType.TRACK,
        timestamp=at,
        received_at=at,
        user_id=user,
        anonymous_id=anon,
        name=name,
        properties={"product": product} if product else {},
    )


def same_as_u1(key: str, e: Event) -> bool:
    return key == "u1" and e.user_id == "u1"


def test_a_kpi_event_after_a_click_converts_it_and_the_window_closing_does_not(
    catalog: Catalog,
) -> None:
    """P(conversion | click) per offer: the offer's KPI event from the same customer within
    the attribution window converts the latest click; a window closing is a non-conversion;
    a KPI for another topic's product or from another customer converts nothing."""
    learner = Learner(catalog)
    offer = catalog.offers["mortgage_rates"]
    assert learner.conversions.predict(offer) == pytest.approx(0.1)  # the catalog's prior
    d1 = decision(catalog, "d1", at=T0)
    viewed(learner, d1, at=T0 + 1)
    clicked(learner, d1, at=T0 + 2)
    for wrong in (
        kpi("Application Started", "car_loan", at=T0 + 3600),  # another topic's product
        kpi("Application Started", "mortgage", at=T0 + 3600, user="u2"),  # someone else
        kpi("Product Opened", "mortgage", at=T0 + 3600),  # not this offer's KPI
    ):
        learner.observe_outcome(wrong, wrong.user_id or "", same_as_u1)
    assert learner.conversions.counts() == {}
    good = kpi("Application Started", "mortgage", at=T0 + 2 * 86_400)
    learner.observe_outcome(good, "u1", same_as_u1)
    assert learner.conversions.counts() == {"mortgage_rates": (1.0, 1.0)}
    assert learner.conversions.predict(offer) == pytest.approx((0.1 * 20 + 1) / 21)
    # a second click that never converts: learned as such once its window closes
    d2 = decision(catalog, "d2", at=T0 + 3 * 86_400)
    viewed(learner, d2, at=T0 + 3 * 86_400 + 1)
    clicked(learner, d2, at=T0 + 3 * 86_400 + 2)
    state = learner.to_state()
    resumed = Learner.from_state(catalog, state)
    assert resumed.to_state() == state  # the waiting click survives a restart
    for lrn in (learner, resumed):
        lrn.advance(T0 + 11 * 86_400)
        assert lrn.conversions.counts() == {"mortgage_rates": (1.0, 2.0)}
    assert learner.to_state() == resumed.to_state()


def test_the_example_banks_pension_offers_convert_on_the_pension_application(
    catalog: Catalog,
) -> None:
    """The pension offers measure what the bank's systems send after a pension sale (an
    application for the pension topic's product), not the callback desk's request, which a
    customer who applies online never makes: their clicks convert as the others' do."""
    assert {catalog.offers[o].spec.kpi_event for o in ("pension_check", "pension_calculator")} == {
        "Application Started"
    }
    assert catalog.matcher.topic_of_product("pension_plan") == "pension"
    learner = Learner(catalog)
    d1 = decision(catalog, "d1", offers=("pension_calculator", "savings_offer"), at=T0)
    viewed(learner, d1, at=T0 + 1)
    clicked(learner, d1, "pension_calculator", at=T0 + 2)
    for wrong in (
        kpi("Callback Requested", None, at=T0 + 600),  # not the offer's KPI
        kpi("Application Started", "mortgage", at=T0 + 900),  # another topic's product
    ):
        learner.observe_outcome(wrong, "u1", same_as_u1)
    assert learner.conversions.counts() == {}
    sale = kpi("Application Started", "pension_plan", at=T0 + 3600)
    learner.observe_outcome(sale, "u1", same_as_u1)
    assert learner.conversions.counts() == {"pension_calculator": (1.0, 1.0)}


def test_learned_conversion_rates_change_the_expected_value_ranked_by(catalog: Catalog) -> None:
    learner = Learner(catalog)
    rates, savings = catalog.offers["mortgage_rates"], catalog.offers["savings_offer"]
    learner.conversions.load({"mortgage_rates": (0.0, 200.0), "savings_offer": (60.0, 200.0)})
    assert learner.conversions.predict(rates) == pytest.approx(2 / 220)
    assert learner.conversions.predict(savings) == pytest.approx(62 / 220)
    pool = [Candidate(rates, 0.02, 0.0), Candidate(savings, 0.02, 0.0)]
    ctx = ChoiceContext("dx", "home_feed", T0, Profile(customer_id="u1"), {}, [])
    choice = learner.choose(ctx, pool, 2)
    assert choice.p_convert == [pytest.approx(2 / 220), pytest.approx(62 / 220)]


def test_a_click_converts_under_the_customers_intent_and_the_factors_follow_it(
    catalog: Catalog,
) -> None:
    """A click is filed under the customer's intent when the offer was shown (their logged
    interest in its topic); conversions at a level move that level's factor, pooled over
    offers, and every offer's P(conversion | click) for customers at that level with it.
    The counts survive a restart."""
    learner = Learner(catalog)
    rates, savings = catalog.offers["mortgage_rates"], catalog.offers["savings_offer"]
    half = catalog.scoring.half_saturation
    d1 = decision(catalog, "d1", at=T0)  # interest:mortgage 1.1 (log1p): expm1 = 2.0
    level = intent_level(math.expm1(1.1), half)
    viewed(learner, d1, at=T0 + 1)
    clicked(learner, d1, at=T0 + 2)
    assert [p[5] for p in msgspec.msgpack.decode(learner.to_state())["pending"]] == [level]
    good = kpi("Application Started", "mortgage", at=T0 + 3600)
    learner.observe_outcome(good, "u1", same_as_u1)
    assert learner.conversions.intent_counts() == [("mortgage_rates", level, 1.0, 1.0)]
    rate = learner.conversions.rate(rates)
    factors = learner.conversions.factors()
    factor = factors[level]
    assert factor > 1.0  # the level converted more than the offer's base rate predicts
    assert learner.conversions.predict(rates, level) > rate
    # the factor is pooled: savings clicks at that level convert more too, others do not
    savings_rate = learner.conversions.rate(savings)
    assert learner.conversions.predict(savings, level) == pytest.approx(savings_rate * factor)
    other = 0 if level else 1
    assert factors[other] == 1.0
    assert learner.conversions.predict(savings, other) == pytest.approx(savings_rate)
    assert learner.conversions.predict(savings) == pytest.approx(savings_rate)  # unknown
    resumed = Learner.from_state(catalog, learner.to_state())
    assert resumed.conversions.intent_counts() == learner.conversions.intent_counts()
    assert resumed.to_state() == learner.to_state()


def test_intent_levels_and_factors_from_counts(catalog: Catalog) -> None:
    assert [intent_level(s, 2.0) for s in (0.0, 0.5, 1.99, 2.0, 40.0)] == [0, 1, 1, 2, 2]
    model = ConversionModel(20.0, catalog.offers)
    assert model.factors() == [1.0, 1.0, 1.0]  # no data: no difference
    rates = catalog.offers["mortgage_rates"]
    # 400 clicks without interest, 4 conversions; 100 researched clicks, 20 conversions
    for k in range(400):
        model.learn("mortgage_rates", k < 4, 0)
    for k in range(100):
        model.learn("mortgage_rates", k < 20, 2)
    model.fit()  # from every outcome (a fit is otherwise due every fiftieth of them)
    rate = model.rate(rates)
    assert rate == pytest.approx((0.1 * 20 + 24) / 520)
    f = model.factors()
    assert f[1] == 1.0
    assert f[0] < 1.0 < f[2]
    # one base rate for the offer, each level's factor near its fixed point
    base = model.pooled(rates, 0) / f[0]
    assert model.pooled(rates, 2) == pytest.approx(base * f[2])
    a = INTENT_STRENGTH
    assert f[0] == pytest.approx((4 + a) / (400 * base + a), rel=0.05)
    assert f[2] == pytest.approx((20 + a) / (100 * base + a), rel=0.05)
    # the predictions follow each level's own rate (0.01 and 0.2), not the marginal one:
    # the offer's own clicks at a level, with the pooled figure worth 20 clicks as the prior
    for level, conversions, clicks in ((0, 4, 400), (2, 20, 100)):
        pooled = model.pooled(rates, level)
        assert model.predict(rates, level) == pytest.approx(
            (conversions + 20 * pooled) / (clicks + 20)
        )
    assert model.predict(rates, 0) < 0.02
    assert model.predict(rates, 2) > 0.15
    # a level the offer has no click at: the pooled figure alone
    assert model.predict(rates, 1) == model.pooled(rates, 1)
    # an offer gone from the catalog counts in no factor
    model.learn("retired_offer", True, 2)
    model.fit()
    assert model.factors() == f


def test_each_candidates_own_history_is_logged_and_learned_with_its_view(catalog: Catalog):
    """A candidate shown to this customer before carries its history (``hist.<f>:<offer>``
    in the decision's features, apart from the customer's); its view is learned with it."""
    from nextbest.learn.learner import HISTORY, history_part
    from nextbest.profile.model import OfferHistory

    learner = Learner(catalog)
    offers = catalog.by_placement["home_feed"]
    pool = [Candidate(o, 0.02, 1.0) for o in offers]
    shown = offers[1].id
    profile = Profile(
        customer_id="u1",
        user_id="u1",
        traits={"age": 40},
        offers={shown: OfferHistory(impressions=[T0 - 86_400.0], total_impressions=2)},
    )
    ctx = ChoiceContext("d-hist", "home_feed", T0, profile, {}, ["adult"])
    choice = learner.choose(ctx, pool, len(pool))
    assert choice.features is not None
    logged = {k: v for k, v in choice.features.items() if k.startswith(HISTORY)}
    assert logged == {
        HISTORY + "seen:" + shown: pytest.approx(math.log1p(2)),
        HISTORY + "seen7:" + shown: pytest.approx(math.log1p(1)),
        HISTORY + "since:" + shown: 0.5,
    }
    ids = [c.offer.id for c in pool]
    assert not any(k.startswith(HISTORY) for k in customer_part(choice.features, ids))
    assert history_part(choice.features, shown) == {
        f: logged[HISTORY + f + ":" + shown] for f in ("seen", "seen7", "since")
    }
    assert history_part(choice.features, offers[0].id) == {}
    # a fresh model's history weights are 0: the catalog's prior, history or not
    assert choice.p_click == pytest.approx([c.p_click for c in pool], rel=1e-6)
    d = msgspec.structs.replace(
        decision(catalog, "d-hist", offers=(shown,)), features=choice.features, candidates=ids
    )
    viewed(learner, d, shown, at=T0 + 1)
    learner.advance(T0 + 2 + WINDOW)  # learned as a miss, with its history
    weights = learner.models["home_feed"].weights()  # type: ignore[attr-defined]
    assert weights["hist.seen"] < 0.0
    assert weights["hist.since&offer:" + shown] < 0.0


# ---------------------------------------------------------------------- one shared model


def _click_on(learner: Learner, catalog: Catalog, placement: str, n: int, at: float) -> None:
    """``n`` decisions on ``placement`` showing mortgage_rates first, each viewed and clicked."""
    for k in range(n):
        d = decision(catalog, f"{placement}-{k}", placement, ("mortgage_rates",), at=at + k)
        viewed(learner, d, at=at + k + 1)
        clicked(learner, d, at=at + k + 2)


def _p_click(learner: Learner, catalog: Catalog, placement: str) -> float:
    offer = catalog.offers["mortgage_rates"]
    profile = Profile(customer_id="u9", user_id="u9", traits={"age": 40})
    ctx = ChoiceContext(f"q-{placement}", placement, T0 + 900, profile, {}, ["adult"])
    choice = learner.choose(ctx, [Candidate(offer, 0.02, 1.0)], 1)
    assert choice.p_click is not None
    return choice.p_click[0]


def test_the_shared_placements_learn_one_model_and_each_keeps_its_own_base_rate(
    catalog: Catalog, unshared: Catalog
):
    """Clicks on home_feed raise mortgage_rates' estimate on app_home too when the contextual
    placements share their model (the default), not when each learns its own; a shared
    model still learns each placement's base rate apart (``placement:<p>``)."""
    shared, apart = Learner(catalog), Learner(unshared)
    assert shared.shared == ["app_home", "home_feed", "home_hero", "product_sidebar"]
    assert apart.shared == []
    assert len({id(m) for m in shared.models.values()}) == 1
    before = _p_click(shared, catalog, "app_home")
    assert before == pytest.approx(_p_click(apart, unshared, "app_home"), rel=1e-12)
    for learner, cat in ((shared, catalog), (apart, unshared)):
        _click_on(learner, cat, "home_feed", 5, T0)
    assert _p_click(shared, catalog, "app_home") > before * 1.2
    assert _p_click(apart, unshared, "app_home") == pytest.approx(before, rel=1e-12)
    weights = shared.models["home_feed"].weights()  # type: ignore[attr-defined]
    assert weights["placement:home_feed"] > 0.0
    assert "placement:app_home" not in weights


def test_a_snapshot_keeps_the_shared_model_once_and_reloads_move_between_forms(
    catalog: Catalog, unshared: Catalog
):
    """The shared model is saved once and restored shared; a catalog that stops sharing gives
    each placement a copy of what the shared model learned; one that starts sharing starts
    the shared model from the first placement's (in id order) own model."""
    learner = busy(catalog)
    decoded = msgspec.msgpack.decode(learner.to_state())
    assert sorted(decoded["models"]) == ["(shared)"]
    assert decoded["shared"] == ["app_home", "home_feed", "home_hero", "product_sidebar"]
    restored = Learner.from_state(catalog, learner.to_state())
    assert len({id(m) for m in restored.models.values()}) == 1
    assert restored.to_state() == learner.to_state()
    # stop sharing: every placement goes on from the shared model
    apart = Learner.from_state(unshared, learner.to_state())
    assert len({id(m) for m in apart.models.values()}) == 4
    body = learner.models["home_feed"].to_state()
    assert all(m.to_state() == body for m in apart.models.values())
    # start sharing: from app_home's own model (the first in id order)
    own = busy(unshared)
    again = Learner.from_state(catalog, own.to_state())
    assert again.models["home_feed"].to_state() == own.models["app_home"].to_state()
    assert len({id(m) for m in again.models.values()}) == 1


def test_intent_factors_come_from_each_offers_own_clicks_not_its_intent_mix(
    catalog: Catalog,
) -> None:
    """The offers' base rates and the factors are fitted together: an offer clicked only
    without research (a need the site has no pages for) that converts keeps its rate for
    such clicks, while an offer whose researched clicks convert and unresearched ones do
    not is predicted low for a customer who has not researched it (issue #14's "conversions
    per click": a rate pooled over researched clicks made curiosity clicks on valuable
    offers look as good as researched ones)."""
    offers = catalog.offers
    model = ConversionModel(20.0, catalog.offers)
    rates, cards = offers["mortgage_rates"], offers["credit_card_offer"]
    for k in range(100):  # researched clicks convert, unresearched ones hardly
        model.learn("mortgage_rates", k < 30, 2)
        model.learn("mortgage_rates", k < 2, 0)
    for k in range(100):  # clicked only without research, and converts
        model.learn("credit_card_offer", k < 25, 0)
    model.fit()
    f = model.factors()
    assert f[0] < 1.0 < f[2]
    low, high = model.predict(rates, 0), model.predict(rates, 2)
    assert low < 0.1  # observed: 0.02 (the catalog's prior holds it in)
    assert high > 0.2  # observed: 0.30
    assert model.predict(rates, 0) < model.rate(rates) * f[0]  # the mix taken out
    # the card offer's unresearched clicks convert at its own observed rate, not its rate
    # lowered by the factor other offers' curiosity clicks earned
    assert model.predict(cards, 0) == pytest.approx((0.1 * 20 + 25) / 120, rel=0.1)
    assert model.predict(cards, 0) > model.rate(cards) * f[0]


def test_service_messages_stay_out_of_the_intent_factors(catalog: Catalog) -> None:
    """A service message's KPI follows the customer's state (the overdraft ends), not their
    research: its clicks move no factor and its prediction is its own rate at every level."""
    offers = catalog.offers
    model = ConversionModel(20.0, catalog.offers)
    warning = offers["overdraft_warning"]
    for k in range(200):
        model.learn("overdraft_warning", k < 150, 0)
    assert model.factors() == [1.0, 1.0, 1.0]
    for level in (0, 1, 2):
        assert model.predict(warning, level) == pytest.approx(model.rate(warning))


def test_an_offer_with_many_clicks_at_a_level_speaks_for_itself_there(catalog: Catalog) -> None:
    """Partial pooling: at a level, an offer's prediction is its own clicks' rate there with
    the pooled figure (its base rate times the level's factor) worth ``strength`` clicks as
    the prior. Hundreds of clicks outweigh the other offers' difference between levels; a
    handful hardly move it."""
    offers = catalog.offers
    model = ConversionModel(20.0, catalog.offers)
    for k in range(200):  # researched mortgage clicks convert, unresearched ones hardly
        model.learn("mortgage_rates", k < 60, 2)
        model.learn("mortgage_rates", k < 4, 0)
    for k in range(200):  # unresearched savings clicks convert well all the same
        model.learn("savings_offer", k < 40, 0)
    for _ in range(5):  # five unresearched investing clicks, none converted
        model.learn("investing_start", False, 0)
    savings, investing = offers["savings_offer"], offers["investing_start"]
    pooled = model.pooled(savings, 0)
    assert model.predict(savings, 0) == pytest.approx((40 + 20 * pooled) / 220)
    assert abs(model.predict(savings, 0) - 0.2) < abs(pooled - 0.2)
    thin = model.pooled(investing, 0)
    assert model.predict(investing, 0) == pytest.approx(20 * thin / 25)


def test_kpi_topic_is_the_products_topic_else_the_events_own_topic_else_any() -> None:
    topics = {"pension_plan": "pension"}.get
    assert kpi_topic({"product": "pension_plan", "topic": "mortgage"}, topics) == "pension"
    assert kpi_topic({"product": "no such product"}, topics) is None
    assert kpi_topic({"topic": "mortgage"}, topics) == "mortgage"
    assert kpi_topic({"product": 7, "topic": None}, topics) == ANY_TOPIC
    assert kpi_topic({}, topics) == ANY_TOPIC


@pytest.fixture
def callback_measured(tmp_path: Path) -> Catalog:
    """The example bank with the pension calculator measured by callback requests (the
    callback desk's event, which carries the callback's topic, not a product)."""
    measured = (
        "eligibility: segments.adult && profile.age >= 30\n    kpi_event: Application Started",
        "eligibility: segments.adult && profile.age >= 30\n    kpi_event: Callback Requested",
    )
    return load_catalog(edited_catalog(tmp_path, {"offers.yaml": [measured]}))


def callback(topic: str, *, at: float) -> Event:
    """The callback desk's request: the callback's topic, no product."""
    props = {"callback_id": f"cb{next(_ids)}", "topic": topic}
    return msgspec.structs.replace(kpi("Callback Requested", None, at=at), properties=props)


def test_a_callback_about_another_topic_converts_no_click(callback_measured: Catalog) -> None:
    """A callback request converts a click on an offer it measures only when the callback is
    about the offer's topic, online (the learner) and offline (the rewards join) alike."""
    cat = callback_measured
    assert cat.offers["pension_calculator"].spec.kpi_event == "Callback Requested"
    learner = Learner(cat)
    d1 = decision(cat, "d1", offers=("pension_calculator", "savings_offer"), at=T0)
    viewed(learner, d1, at=T0 + 1)
    clicked(learner, d1, "pension_calculator", at=T0 + 2)
    other, own = callback("mortgage", at=T0 + 600), callback("pension", at=T0 + 900)
    learner.observe_outcome(other, "u1", same_as_u1)
    assert learner.conversions.counts() == {}
    learner.observe_outcome(own, "u1", same_as_u1)
    assert learner.conversions.counts() == {"pension_calculator": (1.0, 1.0)}

    click = event("Promotion Clicked", d1, "pension_calculator", at=T0 + 2)
    for events, converted in (([click, other], False), ([click, other, own], True)):
        rows = join_rewards([d1], events, cat)
        (row,) = [r for r in rows if r.offer_id == "pension_calculator"]
        assert row.clicked
        assert row.converted is converted
