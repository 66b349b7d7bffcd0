"""The seed scenarios, end to end through ingest and decide, on both stores."""

from __future__ import annotations

from nextbest.decide import DecisionRequest
from nextbest.engine import Engine
from tests.support import DAY, T0, batch, identify, page, track, treated_everywhere

MORTGAGE = "https://bank.example/mortgages/rates"
CAR = "https://bank.example/loans/car/new"


def offers(engine: Engine, user: str, placement: str = "home_feed") -> list[str]:
    d = engine.decide(DecisionRequest(placement=placement), user_id=user)
    return [i.offer_id for i in d.items]


def test_five_mortgage_views_in_14_days_put_the_mortgage_offer_first(engine: Engine, clock):
    user = treated_everywhere()
    engine.ingest_batch(batch(identify({"age": 34}, user=user, at=T0 - 20 * DAY)))
    views = [page(MORTGAGE, user=user, at=T0 - d * DAY) for d in (13, 9, 6, 2)]
    engine.ingest_batch(batch(*views))
    assert "mortgage_advice" not in offers(engine, user)  # four views: not yet
    engine.ingest_batch(batch(page(MORTGAGE, user=user, at=T0 - 60)))
    d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
    assert d.items[0].offer_id == "mortgage_advice"
    texts = [r.text for r in d.items[0].reasons]
    assert "viewed mortgage pages 5 times in 14 days" in texts
    # views spread over more than 14 days do not count
    other = treated_everywhere("late")
    engine.ingest_batch(
        batch(
            identify({"age": 34}, user=other, at=T0 - 40 * DAY),
            *[page(MORTGAGE, user=other, at=T0 - d * DAY) for d in (30, 25, 20, 16, 1)],
        )
    )
    assert "mortgage_advice" not in offers(engine, other)


def test_faded_car_loan_interest_stops_car_loan_offers(engine: Engine, clock):
    user = treated_everywhere()
    engine.ingest_batch(
        batch(
            identify({"age": 29}, user=user, at=T0 - 40 * DAY),
            *[page(CAR, user=user, at=T0 - 30 * DAY + i * 3600) for i in range(4)],
        )
    )
    clock.set(T0 - 29 * DAY)  # a day after the burst: hot interest
    assert offers(engine, user)[0] == "car_loan_offer"
    clock.set(T0)  # four weeks later (half-life 7 days): interest has faded
    d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
    assert "car_loan_offer" not in [i.offer_id for i in d.items]
    assert ("car_loan_offer", "faded_interest") in [(e.offer_id, e.why) for e in d.excluded]


def test_overdraft_warning_outranks_commercial_offers(engine: Engine, clock):
    user = treated_everywhere()
    engine.ingest_batch(
        batch(
            identify({"age": 45}, user=user, at=T0 - 5 * DAY),
            *[page(MORTGAGE, user=user, at=T0 - d * DAY) for d in range(5)],
            track("Overdraft Started", {"balance": -250.0}, user=user, at=T0 - 3600),
        )
    )
    d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
    assert [i.offer_id for i in d.items][:2] == ["overdraft_warning", "mortgage_advice"]
    assert d.items[0].kind == "service"
    assert d.items[0].reasons[0].text == "your account is overdrawn"
    assert d.items[0].score < d.items[1].score  # service first, whatever the score
    hero = engine.decide(DecisionRequest(placement="home_hero"), user_id=user)
    assert [i.offer_id for i in hero.items] == ["overdraft_warning"]
