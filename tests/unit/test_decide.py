"""The decision pipeline: eligibility, suppression, scoring, ordering, experiments, reasons."""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, Suppression, click_prior, decide
from nextbest.decide.reasons import ReasonCode
from nextbest.engine import Engine
from nextbest.errors import UnknownPlacement, ValidationError
from nextbest.events.model import EventType
from nextbest.events.parse import parse_message
from nextbest.experiments import Arm, assign
from nextbest.experiments.assignment import HOLDOUT_SALT, bucket
from nextbest.profile import Profile
from nextbest.profile.fold import fold
from nextbest.store.catalog_files import load_catalog
from tests.support import (
    DAY,
    T0,
    batch,
    edited_catalog,
    feedback,
    identify,
    page,
    targeted_catalog,
    track,
    treated_everywhere,
    user_in,
)

MORTGAGE = "https://bank.example/mortgages/rates"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The targeted offers only: these tests name exactly what a customer sees."""
    return load_catalog(targeted_catalog(tmp_path_factory.mktemp("targeted")))


def mortgage_fan(engine: Engine, user: str, age: int = 35, views: int = 5) -> None:
    engine.ingest_batch(
        batch(
            identify({"age": age}, user=user, at=T0 - 10 * DAY),
            *[page(MORTGAGE, user=user, at=T0 - i * 3600) for i in range(views)],
        )
    )


def why(decision, offer: str) -> Suppression | None:
    return next((e.why for e in decision.excluded if e.offer_id == offer), None)


def home(engine: Engine, user: str, **kw):
    return engine.decide(DecisionRequest(placement="home_feed", **kw), user_id=user)


def test_unknown_placement_and_bad_limit(make_engine):
    engine = make_engine("memory")
    with pytest.raises(UnknownPlacement):
        engine.decide(DecisionRequest(placement="nope"), user_id="u")
    with pytest.raises(ValidationError) as exc:
        engine.decide(DecisionRequest(placement="home_hero", limit=2), user_id="u")
    assert exc.value.path == "$.limit"
    with pytest.raises(ValidationError):
        engine.decide(DecisionRequest(placement="home_hero"))


def test_unknown_customer_gets_non_personal_offers(make_engine):
    engine = make_engine("memory")
    d = engine.decide(DecisionRequest(placement="home_feed"), anonymous_id="stranger")
    assert d.customer_id == "anon:stranger"
    # every example offer needs some knowledge of the customer: the house content fills in
    assert [i.offer_id for i in d.items] == ["security_tips"]
    assert {e.why for e in d.excluded} == {Suppression.INELIGIBLE}


def test_score_is_the_expected_value_of_the_priors(make_engine, catalog: Catalog):
    """score = P(click) x P(conversion | click) x value x weight, all from the catalog."""
    engine = make_engine("memory")
    user = treated_everywhere()
    mortgage_fan(engine, user)
    item = home(engine, user).items[0]
    offer = catalog.offers["mortgage_advice"]
    view = engine.profile_view(user)["view"]["interest"]["mortgage"]
    p = click_prior(
        offer.base_ctr,
        view["score"],
        catalog.scoring.interest_lift,
        catalog.scoring.half_saturation,
    )
    assert item.p_click == pytest.approx(p)
    assert item.p_convert == offer.base_conversion == catalog.scoring.conversion_rate == 0.1
    assert item.score == pytest.approx(p * 0.1 * 400 * 1.2)
    assert item.propensity == 1.0
    assert click_prior(0.01, 0.0, 4.0, 3.0) == 0.01
    assert click_prior(0.01, 3.0, 4.0, 3.0) == pytest.approx(0.03)
    assert click_prior(0.5, 1e9, 4.0, 3.0) == 0.99


def test_already_owned_products_are_suppressed(make_engine):
    engine = make_engine("memory")
    user = treated_everywhere()
    mortgage_fan(engine, user)
    engine.ingest_batch(batch(track("Product Opened", {"product": "credit_card"}, user=user)))
    d = home(engine, user)
    assert why(d, "credit_card_offer") is Suppression.OWNED
    assert [i.offer_id for i in d.items] == ["mortgage_advice", "security_tips"]


def test_impression_cap_click_and_dismiss_rest(make_engine, clock):
    engine = make_engine("memory")
    user = treated_everywhere()
    mortgage_fan(engine, user)
    for days_ago in (2, 1, 0):  # one impression a day, each answering that day's decision
        clock.set(T0 - days_ago * DAY)
        d = home(engine, user)
        assert why(d, "credit_card_offer") is None
        engine.ingest_batch(
            batch(feedback(d, "Promotion Viewed", "credit_card_offer", at=clock.now()))
        )
    assert why(home(engine, user), "credit_card_offer") is Suppression.CAPPED
    clock.set(T0 + 6 * DAY)  # the oldest of three impressions leaves the 7-day window
    d = home(engine, user)
    assert why(d, "credit_card_offer") is None
    engine.ingest_batch(
        batch(feedback(d, "Promotion Clicked", "credit_card_offer", at=clock.now()))
    )
    assert why(home(engine, user), "credit_card_offer") is Suppression.RECENTLY_CLICKED
    engine.ingest_batch(
        batch(feedback(d, "Promotion Dismissed", "mortgage_advice", at=clock.now()))
    )
    assert why(home(engine, user), "mortgage_advice") is Suppression.DISMISSED


def test_control_group_is_stable_and_logs_the_exposure(make_engine):
    engine = make_engine("memory")
    control = user_in("control", "mortgage_q4", 0.1)
    mortgage_fan(engine, control)
    d = home(engine, control)
    assert "mortgage_advice" not in [i.offer_id for i in d.items]
    assert d.control == ["mortgage_advice"]
    assert why(d, "mortgage_advice") is Suppression.CONTROL
    assert home(engine, control).control == ["mortgage_advice"]  # same arm every time
    shares = [assign(f"c{i}", "mortgage_q4", 0.1) is Arm.CONTROL for i in range(20_000)]
    assert 0.09 < sum(shares) / len(shares) < 0.11


def test_universal_holdout_sees_service_messages_only(tmp_path: Path, make_engine):
    edited_catalog(
        tmp_path, {"policy.yaml": [("holdout_share: 0.0", "holdout_share: 0.5")]}, targeted=True
    )
    held = next(f"h{i}" for i in range(1000) if bucket(f"h{i}", HOLDOUT_SALT) < 0.5)
    engine = make_engine("memory", cat=load_catalog(tmp_path))
    mortgage_fan(engine, held)
    engine.ingest_batch(batch(track("Overdraft Started", {"balance": -5.0}, user=held)))
    d = home(engine, held)
    assert [i.offer_id for i in d.items] == ["overdraft_warning", "security_tips"]
    assert why(d, "mortgage_advice") is Suppression.HOLDOUT


def test_consent(make_engine):
    engine = make_engine("memory")
    user = treated_everywhere()
    mortgage_fan(engine, user)
    engine.ingest_batch(batch(track("Overdraft Started", {"balance": -5.0}, user=user)))
    engine.ingest_batch(
        batch(track("Consent Updated", {"purposes": {"marketing": False}}, user=user))
    )
    d = home(engine, user)
    # service messages still shown
    assert [i.offer_id for i in d.items] == ["overdraft_warning", "security_tips"]
    assert why(d, "mortgage_advice") is Suppression.NO_CONSENT
    engine.ingest_batch(
        batch(
            track(
                "Consent Updated",
                {"purposes": {"marketing": True, "personalization": False}},
                user=user,
            )
        )
    )
    d = home(engine, user)
    # without personalization, browsing behaviour is not used: no mortgage intent
    assert why(d, "mortgage_advice") is Suppression.INELIGIBLE
    assert all("viewed" not in r.text for i in d.items for r in i.reasons)


def test_schedule_limits_offers(tmp_path: Path, make_engine, clock):
    schedule = "    control_share: 0.05\n    start: 2026-10-01\n    end: 2026-10-31"
    edited_catalog(
        tmp_path, {"campaigns.yaml": [("    control_share: 0.05", schedule)]}, targeted=True
    )
    engine = make_engine("memory", cat=load_catalog(tmp_path))
    user = treated_everywhere()
    mortgage_fan(engine, user)
    assert why(home(engine, user), "credit_card_offer") is Suppression.OUT_OF_SCHEDULE
    clock.set(T0 + 15 * DAY)
    assert why(home(engine, user), "credit_card_offer") is None


def test_rule_errors_exclude_the_offer_and_say_so(tmp_path: Path, make_engine):
    card_rule = "eligibility: segments.adult && !profile.overdrawn"
    edited_catalog(
        tmp_path, {"offers.yaml": [(card_rule, "eligibility: traits.income > 1000")]}, targeted=True
    )
    engine = make_engine("memory", cat=load_catalog(tmp_path))
    user = treated_everywhere()
    mortgage_fan(engine, user)
    assert why(home(engine, user), "credit_card_offer") is Suppression.RULE_ERROR


def test_an_offer_limited_to_placements_is_decided_there_only(tmp_path: Path, make_engine):
    """``placements: [home_hero]`` on the mortgage advice: the hero shows it, the feed and
    the app never consider it (it is no candidate there, not even an excluded one)."""
    advice = (
        '    kpi_event: Application Started\n    content:\n      web: {title: "Talk to a mortgage'
    )
    limited = tmp_path / "limited"
    limited.mkdir()
    edited_catalog(
        limited,
        {
            "offers.yaml": [
                (
                    advice,
                    advice.replace("    content:", "    placements: [home_hero]\n    content:"),
                )
            ]
        },
        targeted=True,
    )
    engine = make_engine("memory", cat=load_catalog(limited))
    assert engine.catalog.offers["mortgage_advice"].spec.placements == ["home_hero"]
    user = treated_everywhere()
    mortgage_fan(engine, user)
    hero = engine.decide(DecisionRequest(placement="home_hero"), user_id=user)
    assert [i.offer_id for i in hero.items] == ["mortgage_advice"]
    for elsewhere in ("home_feed", "app_home"):
        d = engine.decide(DecisionRequest(placement=elsewhere), user_id=user)
        assert "mortgage_advice" not in [i.offer_id for i in d.items]
        assert "mortgage_advice" not in [e.offer_id for e in d.excluded]
        assert "mortgage_advice" not in d.candidates
    # without the limit the feed shows it first
    (tmp_path / "plain").mkdir()
    plain = make_engine("memory", cat=load_catalog(targeted_catalog(tmp_path / "plain")))
    mortgage_fan(plain, user)
    assert home(plain, user).items[0].offer_id == "mortgage_advice"


def test_limit_outranked_and_deterministic_order(make_engine, catalog: Catalog):
    engine = make_engine("memory")
    user = treated_everywhere()
    mortgage_fan(engine, user, age=55)
    d = home(engine, user, limit=1)
    assert len(d.items) == 1
    assert why(d, "credit_card_offer") is Suppression.OUTRANKED
    profile = engine.profile(user)
    assert profile is not None
    a = decide(catalog, profile, DecisionRequest(placement="home_feed"), T0, "x")
    b = decide(catalog, profile, DecisionRequest(placement="home_feed"), T0, "x")
    assert a == b
    assert [i.position for i in a.items] == list(range(1, len(a.items) + 1))
    assert [i.offer_id for i in a.items] == [
        "mortgage_advice",
        "pension_check",
        "credit_card_offer",
    ]
    scores = [i.score for i in a.items]
    assert scores == sorted(scores, reverse=True)


def test_reasons_name_segments_and_campaign_priority(make_engine):
    engine = make_engine("memory")
    user = treated_everywhere()
    mortgage_fan(engine, user, age=55)
    d = home(engine, user)
    by_offer = {i.offer_id: [r.text for r in i.reasons] for i in d.items}
    assert "in segment 'Nearing retirement'" in by_offer["pension_check"]
    assert "campaign 'Mortgage advice Q4' has priority" in by_offer["mortgage_advice"]
    assert by_offer["credit_card_offer"] == ["in segment 'Adult'"]
    assert d.segments == ["adult", "mortgage_intent", "nearing_retirement"]


def test_turning_18_life_event(make_engine):
    engine = make_engine("memory")
    user = treated_everywhere()
    engine.ingest_batch(
        batch(
            identify({"birthday": "2008-09-01"}, user=user, at=T0 - DAY),
            track("Life Event", {"type": "turning_18"}, user=user, at=T0 - 20 * DAY),
        )
    )
    d = engine.decide(DecisionRequest(placement="app_home"), user_id=user)
    assert d.items[0].offer_id == "turning_18_package"
    assert d.items[0].content["title"] == "You're 18!"


def test_new_event_is_visible_to_the_very_next_decision(engine: Engine):
    user = treated_everywhere()
    mortgage_fan(engine, user)
    assert home(engine, user).items[0].offer_id == "mortgage_advice"
    engine.ingest_batch(batch(track("Overdraft Started", {"balance": -1.0}, user=user)))
    assert home(engine, user).items[0].offer_id == "overdraft_warning"


def test_empty_profile_has_a_stable_id():
    p = Profile(customer_id="anon:x")
    assert p.user_id is None


def test_rules_naming_an_unseen_offer_see_zeros(tmp_path: Path, make_engine):
    card_rule = "eligibility: segments.adult && !profile.overdrawn"
    capped = "eligibility: segments.adult && offers.mortgage_advice.impressions_7d < 2"
    edited_catalog(tmp_path, {"offers.yaml": [(card_rule, capped)]}, targeted=True)
    cat = load_catalog(tmp_path)
    assert cat.named_offers == {"mortgage_advice"}
    engine = make_engine("memory", cat=cat)
    user = treated_everywhere()
    mortgage_fan(engine, user)
    for _ in range(2):
        d = home(engine, user)
        assert why(d, "credit_card_offer") is None
        engine.ingest_batch(batch(feedback(d, "Promotion Viewed", "mortgage_advice")))
    assert why(home(engine, user), "credit_card_offer") is Suppression.INELIGIBLE


def test_feedback_for_unshown_offers_is_rejected_and_service_views_do_not_fatigue(
    make_engine, catalog: Catalog
):
    engine = make_engine("memory")
    user = treated_everywhere()
    mortgage_fan(engine, user)
    engine.ingest_batch(batch(track("Overdraft Started", {"balance": -5.0}, user=user)))
    d = home(engine, user)
    assert d.items[0].offer_id == "overdraft_warning"
    stored, before = engine.event_log.count(), msgspec.msgpack.encode(engine.profile(user))
    junk = [feedback(d, "Promotion Viewed", f"made-up-{i}") for i in range(20)]
    with pytest.raises(ValidationError) as exc:
        engine.ingest_batch(batch(*junk))
    assert exc.value.path == "$.batch[0].properties.promotion_id"
    assert engine.event_log.count() == stored
    assert msgspec.msgpack.encode(engine.profile(user)) == before
    # a log from before the check: the fold still keeps no history for unknown offers
    profile = Profile(customer_id=user, user_id=user)
    for msg in junk:
        fold(
            profile,
            parse_message(EventType.TRACK, orjson.dumps(msg), T0),
            catalog.matcher,
            catalog.fold_config,
        )
    assert profile.offers == {}
    service = [feedback(d, "Promotion Viewed", "overdraft_warning", at=T0 - i) for i in range(15)]
    engine.ingest_batch(batch(*service))
    assert set(engine.profile(user).offers) == {"overdraft_warning"}
    assert why(home(engine, user), "mortgage_advice") is None  # 15 service views: no fatigue


def test_a_service_message_without_its_trigger_competes_and_is_capped(
    tmp_path: Path, make_engine, clock
):
    """Without ``urgent`` the overdraft warning is content like any other: ranked by its
    score among the commercial offers, held back by the per-offer cap; with its trigger
    holding it goes first and is never capped."""
    edited_catalog(
        tmp_path, {"offers.yaml": [("    urgent: profile.overdrawn\n", "")]}, targeted=True
    )
    engine = make_engine("memory", cat=load_catalog(tmp_path))
    user = treated_everywhere()
    mortgage_fan(engine, user, views=8)
    engine.ingest_batch(batch(track("Overdraft Started", {}, user=user)))
    d = home(engine, user)
    assert d.urgent == []
    scores = {i.offer_id: i.score for i in d.items}
    assert list(scores.values()) == sorted(scores.values(), reverse=True)  # by score only
    assert "overdraft_warning" in scores
    for days_ago in (3, 2, 1):
        clock.set(T0 - days_ago * 3_600.0)
        shown = home(engine, user)
        engine.ingest_batch(
            batch(feedback(shown, "Promotion Viewed", "overdraft_warning", at=clock.now()))
        )
    clock.set(T0)
    assert why(home(engine, user), "overdraft_warning") is Suppression.CAPPED

    urgent = make_engine("memory")
    mortgage_fan(urgent, user, views=8)
    urgent.ingest_batch(batch(track("Overdraft Started", {}, user=user)))
    for days_ago in (3, 2, 1):
        clock.set(T0 - days_ago * 3_600.0)
        shown = home(urgent, user)
        assert shown.urgent == ["overdraft_warning"] == [shown.items[0].offer_id]
        urgent.ingest_batch(
            batch(feedback(shown, "Promotion Viewed", "overdraft_warning", at=clock.now()))
        )
    clock.set(T0)
    assert home(urgent, user).items[0].offer_id == "overdraft_warning"  # never capped


def test_empty_slots_take_the_placement_s_fallback_content(make_engine):
    """A customer nothing is eligible for still sees the house content, once per page."""
    engine = make_engine("memory")
    d = home(engine, "nobody-yet")
    assert [i.offer_id for i in d.items] == ["security_tips"]
    item = d.items[0]
    assert (item.position, item.propensity, item.explored) == (1, 1.0, False)
    assert [r.code for r in item.reasons] == [ReasonCode.FALLBACK]
    assert why(d, "security_tips") is Suppression.INELIGIBLE  # never ranked on its own
    assert home(engine, "nobody-yet", exclude=frozenset({"security_tips"})).items == []
