"""The advisor card: the hottest live topic with an expert, its reason, the advisor and the
actions; consent; and the card in decisions (kind ``advisor``), under the contact policy,
through the engine with the example bank."""

from __future__ import annotations

import msgspec
import pytest

from nextbest.advisors.board import EMPTY_BOARD
from nextbest.advisors.card import CardAction, advisor_card, live_topics, may_contact
from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, Suppression, decide
from nextbest.decide.model import Decision, ItemKind
from nextbest.decide.reasons import ReasonCode
from nextbest.engine import Engine
from nextbest.experiments.assignment import HOLDOUT_SALT, bucket
from nextbest.profile.model import OfferHistory, Profile, TopicInterest
from nextbest.profile.windows import DAY
from tests.support import T0, batch, feedback, identify, page
from tests.unit.advisor_bank import advisor, at, available, bank, board

#: a Tuesday, 10:00 in Copenhagen
T = at("2026-03-24T10:00:00+01:00")
CATALOG = bank(
    [
        advisor("anna", {"mortgage": 5, "cards": 3}, languages=("da", "en")),
        advisor("bo", {"pension": 5}),
        advisor("carl", {"pension": 4}, languages=("en",)),
    ]
)
EVERYONE = available("anna", "bo", "carl")


def interest(score: float, hits: int, now: float = T, days_apart: float = 1.0) -> TopicInterest:
    times = [now - days_apart * DAY * i for i in range(hits)][::-1]
    return TopicInterest(
        score=score,
        score_at=now,
        hits=times,
        total=hits,
        first_seen=times[0] if times else 0.0,
        last_seen=times[-1] if times else 0.0,
    )


def customer(key: str = "c1", **fields: object) -> Profile:
    """Interested in pension most, then mortgage and cards."""
    interests = {
        "pension": interest(6.0, 5),
        "mortgage": interest(3.0, 3, days_apart=8),
        "cards": interest(9.0, 9),  # hottest of all, but the test bank's topic order decides
    }
    values: dict[str, object] = {"customer_id": key, "interests": interests}
    values.update(fields)
    return Profile(**values)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the card


def test_the_card_shows_the_hottest_live_topic_with_its_reason_and_an_expert_free_now() -> None:
    card = advisor_card(CATALOG, customer(), EVERYONE, T)
    assert card is not None
    assert (card.topic, card.topic_name) == ("cards", "Credit card")
    assert card.reason == "viewed credit card pages 9 times in 14 days"
    assert card.advisor.id == "anna"
    assert card.advisor.level == 3
    assert card.actions == [CardAction.NOW, CardAction.LATER, CardAction.AT]
    assert (card.available, card.slots) == (True, [])


def test_the_hottest_topic_is_by_decayed_interest_and_must_have_an_expert() -> None:
    catalog = bank([advisor("bo", {"pension": 5}), advisor("anna", {"mortgage": 5})])
    found = live_topics(catalog, customer(), T)
    assert [t.topic for t in found] == ["pension", "mortgage"]  # cards has no expert here
    assert found[1].reason == "viewed mortgage pages 2 times in 14 days"  # 0 and 8 days ago


def test_faded_or_no_interest_shows_no_card() -> None:
    faded = customer(interests={"pension": interest(0.2, 1)})
    assert live_topics(CATALOG, faded, T) == []
    assert advisor_card(CATALOG, faded, EVERYONE, T) is None
    assert advisor_card(CATALOG, Profile(customer_id="c2"), EVERYONE, T) is None
    # interest decays with the topic's half-life: pension's 30 days, cards' default 14
    later = T + 120 * DAY
    assert [t.topic for t in live_topics(CATALOG, customer(), later)] == ["pension"]


def test_busy_experts_give_way_to_a_colleague_with_the_same_expertise() -> None:
    profile = customer(interests={"pension": interest(6.0, 5)})
    card = advisor_card(CATALOG, profile, board(bo="busy", carl="available"), T)
    assert card is not None
    assert (card.advisor.id, card.available) == ("carl", True)


def test_nobody_free_offers_later_and_pick_a_time_with_the_next_free_slots() -> None:
    profile = customer(interests={"pension": interest(6.0, 5)})
    card = advisor_card(CATALOG, profile, board(bo="busy", carl="away"), T)
    assert card is not None
    assert card.actions == [CardAction.LATER, CardAction.AT]
    assert card.available is False
    assert [s.start for s in card.slots] == [
        at("2026-03-24T10:30:00+01:00"),
        at("2026-03-24T11:00:00+01:00"),
        at("2026-03-24T11:30:00+01:00"),
    ]
    assert {s.advisor_id for s in card.slots} == {"bo"}  # the higher level at each start
    assert card.advisor.id == "bo"


def test_the_customer_s_language_picks_among_equals_and_slots() -> None:
    catalog = bank(
        [advisor("bo", {"pension": 4}), advisor("carl", {"pension": 4}, languages=("en",))]
    )
    profile = customer(interests={"pension": interest(6.0, 5)})
    card = advisor_card(catalog, profile, available("bo", "carl"), T, language="en")
    assert card is not None
    assert card.advisor.id == "carl"
    card = advisor_card(catalog, profile, EMPTY_BOARD, T, language="en")
    assert card is not None
    assert card.slots[0].advisor_id == "carl"


def test_a_topic_nobody_can_serve_gives_way_to_the_next() -> None:
    catalog = bank([advisor("anna", {"cards": 3}, weekly={}), advisor("bo", {"pension": 5})])
    card = advisor_card(catalog, customer(), EMPTY_BOARD, T)
    assert card is not None
    assert card.topic == "pension"  # nobody ever takes cards calls: no slot, no card for it
    assert advisor_card(catalog, customer(), EMPTY_BOARD, T, skip={"pension"}) is None


@pytest.mark.parametrize(
    ("consent", "defaults", "shown"),
    [
        ({}, {}, True),  # the example defaults: personalization and marketing
        ({"personalization": False}, {}, False),
        ({"marketing": False}, {}, False),
        ({"marketing": False, "advisor_contact": True}, {}, True),
        ({"advisor_contact": False}, {}, False),
        ({}, {"advisor_contact": False}, False),
        ({"advisor_contact": True}, {"advisor_contact": False}, True),
        ({}, {"marketing": False}, False),
    ],
)
def test_consent_to_be_contacted(
    consent: dict[str, bool], defaults: dict[str, bool], shown: bool
) -> None:
    policy = {"consent_defaults": {"personalization": True, "marketing": True, **defaults}}
    catalog = bank([advisor("bo", {"pension": 5})], contact_policy=policy)
    profile = customer(consent=consent)
    assert may_contact(catalog, profile) is shown
    assert (advisor_card(catalog, profile, EVERYONE, T) is not None) is shown


# ------------------------------------------------------------------ in decisions


def card_decision(profile: Profile, catalog: Catalog = CATALOG, **request: object) -> Decision:
    return decide(
        catalog,
        profile,
        DecisionRequest(placement="card", **request),  # type: ignore[arg-type]
        T,
        "d1",
        board=EVERYONE,
    )


def test_an_advisor_placement_decides_one_card_item() -> None:
    d = card_decision(customer())
    (item,) = d.items
    assert (item.offer_id, item.kind, item.position) == ("advisor:cards", ItemKind.ADVISOR, 1)
    assert item.advisor is not None
    assert item.advisor.advisor.id == "anna"
    assert item.reasons[0].code is ReasonCode.TOPIC_INTEREST
    assert item.content["title"] == "Questions about credit card? Talk to Anna"
    assert item.content["cta"] == "Call me now"
    assert d.candidates == ["advisor:cards", "advisor:pension", "advisor:mortgage"]
    assert [(e.offer_id, e.why) for e in d.excluded] == [
        ("advisor:pension", Suppression.OUTRANKED),
        ("advisor:mortgage", Suppression.OUTRANKED),
    ]
    assert d.features == {"interest:cards": pytest.approx(2.302585, abs=1e-6)}
    # the card and the decision survive the decision log's encoding
    again = msgspec.json.decode(msgspec.json.encode(d), type=Decision)
    assert again == d


def test_without_a_board_nobody_is_free_and_the_card_offers_a_later_time() -> None:
    d = decide(CATALOG, customer(), DecisionRequest(placement="card"), T, "d1")
    (item,) = d.items
    assert item.advisor is not None
    assert item.advisor.actions == [CardAction.LATER, CardAction.AT]
    assert len(item.advisor.slots) == 3
    assert item.content["cta"] == "Call me later"


def test_the_contact_policy_holds_a_topic_s_card_back() -> None:
    seen = OfferHistory(impressions=[T - 3 * 3600, T - 2 * 3600, T - 3600], total_impressions=3)
    capped = card_decision(customer(offers={"advisor:cards": seen}))
    assert capped.items[0].offer_id == "advisor:pension"
    assert ("advisor:cards", Suppression.CAPPED) in [(e.offer_id, e.why) for e in capped.excluded]
    dismissed = OfferHistory(dismissals=[T - DAY], total_dismissals=1)
    rested = card_decision(customer(offers={"advisor:cards": dismissed}))
    assert rested.items[0].offer_id == "advisor:pension"
    owned = card_decision(customer(products=["card"]))
    assert owned.items[0].offer_id == "advisor:pension"
    on_page = card_decision(customer(), exclude=frozenset({"advisor:cards"}))
    assert on_page.items[0].offer_id == "advisor:pension"
    assert ("advisor:cards", Suppression.ON_PAGE) in [(e.offer_id, e.why) for e in on_page.excluded]


def test_no_consent_no_card_and_the_decision_says_why() -> None:
    d = card_decision(customer(consent={"marketing": False}))
    assert d.items == []
    assert {e.why for e in d.excluded} == {Suppression.NO_CONSENT}
    assert len(d.excluded) == 3


def test_without_personalization_no_behaviour_is_read() -> None:
    d = card_decision(customer(consent={"personalization": False}))
    assert (d.items, d.excluded, d.candidates, d.features) == ([], [], [], {})


def test_a_topic_nobody_can_serve_is_logged_as_such() -> None:
    catalog = bank([advisor("anna", {"cards": 3}, weekly={}), advisor("bo", {"pension": 5})])
    d = card_decision(customer(), catalog)
    assert d.items[0].offer_id == "advisor:pension"
    assert [(e.offer_id, e.why) for e in d.excluded] == [("advisor:cards", Suppression.NO_ADVISOR)]


def test_the_universal_holdout_sees_no_card() -> None:
    catalog = bank([advisor("bo", {"pension": 5})], holdout_share=0.5)
    key = next(f"c{i}" for i in range(100) if bucket(f"c{i}", HOLDOUT_SALT) < 0.5)
    d = card_decision(customer(key), catalog)
    assert d.items == []
    assert [(e.offer_id, e.why) for e in d.excluded] == [("advisor:pension", Suppression.HOLDOUT)]


def test_an_offer_placement_is_decided_as_before_whatever_the_board() -> None:
    profile = customer()
    plain = decide(CATALOG, profile, DecisionRequest(placement="feed"), T, "d1")
    boarded = decide(CATALOG, profile, DecisionRequest(placement="feed"), T, "d1", board=EVERYONE)
    assert plain == boarded


# ------------------------------------------------------------------ through the engine


def test_the_engine_shows_the_card_and_caps_it_from_its_feedback(make_engine, clock) -> None:
    """The example bank: a customer reading mortgage pages gets Anna Holm's card (nobody is
    free on the engine's empty board: later and pick a time); three views of the card in a
    week cap it, like an offer."""
    engine: Engine = make_engine("memory")
    user = "adv-1"
    engine.ingest_batch(
        batch(
            identify({"age": 40}, user=user, at=T0 - 10 * 86_400),
            *[
                page("https://bank.example/mortgages/rates", user=user, at=T0 - i * 3600)
                for i in range(5)
            ],
        )
    )
    d = engine.decide(DecisionRequest(placement="topic_advisor"), user_id=user)
    (item,) = d.items
    assert item.offer_id == "advisor:mortgage"
    assert item.advisor is not None
    assert item.advisor.advisor.id == "anna_holm"
    assert item.advisor.reason == "viewed mortgage pages 5 times in 14 days"
    assert item.advisor.actions == [CardAction.LATER, CardAction.AT]
    assert engine.decision(d.decision_id) == d
    for hours in (1, 2, 3):
        clock.set(T0 + hours * 3600)
        d = engine.decide(DecisionRequest(placement="topic_advisor"), user_id=user)
        assert d.items[0].offer_id == "advisor:mortgage"
        engine.ingest_batch(batch(feedback(d, at=clock.now())))
    profile = engine.profile(user)
    assert profile is not None
    assert profile.offers["advisor:mortgage"].total_impressions == 3
    d = engine.decide(DecisionRequest(placement="topic_advisor"), user_id=user)
    assert d.items == []
    assert [(e.offer_id, e.why) for e in d.excluded] == [("advisor:mortgage", Suppression.CAPPED)]
