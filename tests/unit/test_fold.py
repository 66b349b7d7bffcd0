"""profile = fold(events): interests, funnel, products, consent, offers, sessions, identity."""

from __future__ import annotations

from nextbest.catalog.compiled import Catalog
from nextbest.events import parse_batch
from nextbest.profile import FunnelStage, Profile, fold
from nextbest.profile.identity import IdentityMap
from nextbest.rules.context import interest_view
from tests.support import DAY, T0, batch, identify, page, track


def folded(catalog: Catalog, *messages: dict) -> Profile:
    profile = Profile(customer_id="u1", user_id="u1")
    for event in parse_batch(batch(*messages), T0 + 365 * DAY):
        fold(profile, event, catalog.matcher, catalog.fold_config)
    return profile


def test_page_views_build_decayed_interest_and_windows(catalog: Catalog):
    msgs = [
        page("https://bank.example/mortgages/rates", user="u1", at=T0 - d * DAY)
        for d in (0, 1, 2, 10, 20, 40)
    ]
    p = folded(catalog, *msgs)
    view = interest_view(p.interests["mortgage"], catalog.topics["mortgage"], T0)
    assert (view["count_1d"], view["count_7d"], view["count_14d"]) == (1, 3, 4)
    assert (view["count_30d"], view["count_90d"], view["total"]) == (5, 6, 6)
    assert view["first_seen_days"] == 40.0
    assert view["last_seen_days"] == 0.0
    half = catalog.topics["mortgage"].half_life
    expected = sum(2 ** (-(d * DAY) / half) for d in (0, 1, 2, 10, 20, 40))
    assert abs(view["score"] - expected) < 1e-6
    assert p.funnel["mortgage"] is FunnelStage.RESEARCHING


def test_page_category_and_event_names_map_to_topics(catalog: Catalog):
    p = folded(
        catalog,
        {**page("https://bank.example/x", user="u1"), "category": "pension"},
        track("Calculator Used", {"topic": "car_loan"}, user="u1"),
        track("Overdraft Started", {"balance": -20.0}, user="u1"),
    )
    # an overdraft is core-banking data, not browsing: it is no interest in the topic
    assert set(p.interests) == {"pension", "car_loan"}
    assert "overdraft" not in p.funnel
    assert p.funnel["car_loan"] is FunnelStage.CONSIDERING
    # Calculator Used weighs 3 in the example catalog
    assert p.interests["car_loan"].score == 3.0
    assert p.overdrawn
    assert p.balance == -20.0


def test_overdraft_without_a_balance_sets_overdrawn_and_keeps_the_balance(catalog: Catalog):
    p = folded(
        catalog,
        track("Balance Updated", {"balance": 120.0}, user="u1", at=T0),
        track("Overdraft Started", {}, user="u1", at=T0 + 10),
    )
    assert p.overdrawn
    assert p.balance == 120.0


def test_funnel_moves_forward_only_and_products_follow_events(catalog: Catalog):
    p = folded(
        catalog,
        track("Application Started", {"product": "car_loan"}, user="u1", at=T0),
        page("https://bank.example/loans/car", user="u1", at=T0 + 10),
        track("Product Opened", {"product": "car_loan"}, user="u1", at=T0 + 20),
    )
    assert p.funnel["car_loan"] is FunnelStage.CUSTOMER
    assert p.products == ["car_loan"]
    p2 = folded(
        catalog,
        track("Product Opened", {"product": "car_loan"}, user="u1"),
        track("Product Closed", {"product": "car_loan"}, user="u1", at=T0 + 1),
    )
    assert p2.products == []
    assert p2.funnel["car_loan"] is FunnelStage.NONE


def test_identify_sets_traits_products_consent(catalog: Catalog):
    p = folded(
        catalog,
        identify(
            {
                "age": 40,
                "products": ["credit_card", "mortgage"],
                "consent": {"marketing": False, "bogus": True},
            },
            user="u1",
        ),
    )
    assert p.traits == {"age": 40}
    assert p.products == ["credit_card", "mortgage"]
    assert p.consent == {"marketing": False}
    assert p.funnel["mortgage"] is FunnelStage.CUSTOMER
    p2 = folded(
        catalog,
        identify({"age": 40}, user="u1"),
        track("Consent Updated", {"purposes": {"personalization": False}}, user="u1"),
    )
    assert p2.consent == {"personalization": False}


def test_promotion_feedback_builds_offer_history(catalog: Catalog):
    props = {"promotion_id": "mortgage_advice", "decision_id": "d1"}
    p = folded(
        catalog,
        track("Promotion Viewed", props, user="u1"),
        track("Promotion Viewed", props, user="u1", at=T0 + 5),
        track("Promotion Clicked", props, user="u1", at=T0 + 9),
    )
    h = p.offers["mortgage_advice"]
    assert (h.total_impressions, h.total_clicks, h.total_dismissals) == (2, 1, 0)
    assert h.impressions == [T0, T0 + 5]
    assert h.last_decision_id == "d1"


def test_sessions_recent_ring_life_events_balance(catalog: Catalog):
    msgs = [page("https://bank.example/cards", user="u1", at=T0 + i * 60) for i in range(25)]
    msgs.append(page("https://bank.example/cards", user="u1", at=T0 + 3 * 3600))
    msgs.append(track("Life Event", {"type": "moving"}, user="u1", at=T0 + 4 * 3600))
    msgs.append(track("Balance Updated", {"balance": 1200.5}, user="u1", at=T0 + 5 * 3600))
    msgs.append(track("Salary Received", {"amount": 3100}, user="u1", at=T0 + 6 * 3600))
    p = folded(catalog, *msgs)
    assert p.sessions == 5  # 25 pages a minute apart, then four events hours apart
    assert len(p.recent) == 20
    assert p.recent[-1].name == "Salary Received"
    assert p.life_events == [(T0 + 4 * 3600, "moving")]
    assert p.balance == 1200.5
    assert not p.overdrawn
    assert p.traits["last_salary"] == 3100
    assert p.event_count == 29


def test_fold_is_deterministic(catalog: Catalog):
    msgs = [
        page(f"https://bank.example/{p}", user="u1", at=T0 + i * 999)
        for i, p in enumerate(["mortgages/a", "cards", "pension", "loans/car", "x"] * 5)
    ]
    import msgspec

    a, b = folded(catalog, *msgs), folded(catalog, *msgs)
    assert msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b)


def test_identity_map_resolution_and_aliases():
    ids = IdentityMap()
    assert ids.resolve(None, "a1") == "anon:a1"
    assert ids.link_anonymous("a1", "u1")
    assert not ids.link_anonymous("a1", "u1")
    assert ids.resolve(None, "a1") == "u1"
    assert ids.link_alias("old-crm-id", "u1")
    assert ids.resolve("old-crm-id", None) == "u1"
    assert ids.ids_of("u1") == ({"u1", "old-crm-id"}, {"a1", "old-crm-id"})
