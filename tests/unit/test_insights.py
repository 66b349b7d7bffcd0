"""Service insights: the core-banking features the fold keeps (``profile.banking``), the
rule fields over them, and the catalog's ``insight`` trigger (first while it holds, yet
capped and rested; measured through its campaign's control group)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, Suppression, ranking
from nextbest.decide.reasons import ReasonCode
from nextbest.engine import Engine
from nextbest.errors import CatalogError
from nextbest.events import parse_batch
from nextbest.experiments import Arm, assign
from nextbest.profile import Profile
from nextbest.profile.banking import HORIZON_DAYS, MERCHANTS, RISES, banking_view
from nextbest.profile.fold import fold
from nextbest.rules.context import rule_variables
from nextbest.store.catalog_files import load_catalog
from tests.support import DAY, T0, batch, edited_catalog, feedback, identify, page, track

MORTGAGE = "https://bank.example/mortgages/rates"
INSIGHTS = {
    "overdraft_fee_help": 0.2,
    "idle_cash_savings": 0.2,
    "subscription_price_rises": 0.2,
}
COMMERCIAL = {
    "mortgage_q4": 0.1,
    "car_loan_autumn": 0.1,
    "pension_awareness": 0.1,
    "family_savings": 0.1,
    "cards_always_on": 0.05,
    "always_on_products": 0.05,
}


def customer(arm: str) -> str:
    """A user in ``arm`` of every insight campaign, treated by every commercial one."""
    for n in itertools.count():
        uid = f"ins-{n}"
        if all(assign(uid, c, s).value == arm for c, s in INSIGHTS.items()) and all(
            assign(uid, c, s) is Arm.TREATMENT for c, s in COMMERCIAL.items()
        ):
            return uid
    raise AssertionError("unreachable")


def folded(catalog: Catalog, *messages: dict) -> Profile:
    profile = Profile(customer_id="u", user_id="u")
    for event in parse_batch(batch(*messages), T0 + 1_000 * DAY):
        fold(profile, event, catalog.matcher, catalog.fold_config)
    return profile


def view(catalog: Catalog, profile: Profile, now: float) -> dict:
    return rule_variables(profile, catalog.topics, now, {})["profile"]


def fee(at: float, amount: float = -15.0, balance: float = -40.0) -> dict:
    props = {"amount": amount, "category": "overdraft_fee", "balance": balance}
    return track("Transaction Posted", props, user="u", at=at)


def posted(at: float, balance: float, **props) -> dict:
    return track(
        "Transaction Posted", {"amount": -1.0, "balance": balance, **props}, user="u", at=at
    )


# ---------------------------------------------------------------------- the fold
def test_overdraft_fees_and_days_overdrawn_over_90_days(catalog: Catalog):
    p = folded(
        catalog,
        fee(T0 - 100 * DAY),  # outside the 90 days
        posted(T0 - 99 * DAY, 50.0),
        track("Overdraft Started", {"balance": -5.0}, user="u", at=T0 - 20 * DAY),
        fee(T0 - 19 * DAY),
        track("Overdraft Ended", {"balance": 10.0}, user="u", at=T0 - 17 * DAY),
        posted(T0 - 2 * DAY, -30.0),  # a new spell from the balance alone
        fee(T0 - DAY, -12.5, -42.5),
    )
    v = view(catalog, p, T0)
    assert v["overdraft_fees_90d"] == 2
    assert v["overdraft_fees_paid_90d"] == 27.5
    assert v["overdrawn_days_90d"] == 5.0  # 3 days ended, 2 days open
    assert v["overdrawn"] is True
    assert v["balance"] == -42.5
    assert view(catalog, p, T0 + 80 * DAY)["overdraft_fees_90d"] == 1  # the old one left


def test_idle_cash_is_the_least_the_account_held_over_the_window(catalog: Catalog):
    msgs = [posted(T0 - d * DAY, 5_000.0 + 10 * d) for d in range(40, 0, -1)]
    msgs.append(posted(T0 - 10 * DAY + 60.0, 4_200.0))  # a dip, back up the same day
    msgs.append(posted(T0 - 10 * DAY + 120.0, 6_000.0))
    msgs.append(track("Balance Updated", {"balance": 900.0, "account": "savings"}, user="u", at=T0))
    msgs.sort(key=lambda m: m["timestamp"])
    p = folded(catalog, *msgs)
    v = view(catalog, p, T0)
    assert v["idle_cash_30d"] == 4_200.0
    assert v["idle_cash_90d"] == 0.0  # the balance is not known from 90 days back
    assert v["savings_balance"] == 900.0
    assert v["balance"] == 5_010.0  # the savings balance is not the current account's
    # two months on, with no balance since: the last one carries over
    assert view(catalog, p, T0 + 60 * DAY)["idle_cash_30d"] == 5_010.0
    dipped = folded(catalog, *msgs, posted(T0 + 1.0, -20.0))
    assert view(catalog, dipped, T0 + 2.0)["idle_cash_30d"] == 0.0


def test_a_monthly_payment_above_two_equal_ones_is_a_price_rise(catalog: Catalog):
    def paid(month: int, amount: float, merchant: str = "StreamFlix") -> dict:
        props = {"amount": -amount, "merchant": merchant}
        return track("Transaction Posted", props, user="u", at=T0 + month * 30 * DAY)

    p = folded(
        catalog,
        paid(0, 12.99),
        paid(1, 12.99),
        paid(2, 15.99),
        *[paid(m, 20.0 + m, "Grocer") for m in range(3)],  # amounts vary: no subscription
    )
    v = view(catalog, p, T0 + 61 * DAY)
    assert v["price_rises_90d"] == 1
    assert (v["price_rise_merchant"], v["price_rise_before"], v["price_rise_after"]) == (
        "StreamFlix",
        12.99,
        15.99,
    )
    assert v["price_rise_monthly_90d"] == 3.0
    one = folded(catalog, paid(0, 12.99), paid(1, 15.99))  # one payment is no price yet
    assert view(catalog, one, T0 + 31 * DAY)["price_rises_90d"] == 0


def test_banking_state_stays_bounded(catalog: Catalog):
    msgs = []
    for d in range(400):
        at = T0 + d * DAY
        msgs.append(posted(at, 100.0 + d, merchant=f"shop-{d}"))
        msgs.append(fee(at + 1.0))
    for m in range(3 * RISES):  # more rises than are kept, each at a new merchant
        for k, amount in enumerate((5.0, 5.0, 6.0)):
            props = {"amount": -amount, "merchant": f"sub-{m}"}
            at = T0 + 300 * DAY + m * 3600.0 + k * 30 * DAY
            msgs.append(track("Transaction Posted", props, user="u", at=at))
    msgs.sort(key=lambda m: m["timestamp"])
    b = folded(catalog, *msgs).banking
    assert b is not None
    assert len(b.days) <= HORIZON_DAYS + 1
    assert len(b.merchants) <= MERCHANTS
    assert len(b.rises) <= RISES
    assert len(b.fees) <= 91


def test_no_banking_event_reads_the_defaults(catalog: Catalog):
    p = folded(catalog, page(MORTGAGE, user="u"))
    assert p.banking is None
    assert banking_view(None, T0) == {k: view(catalog, p, T0)[k] for k in banking_view(None, T0)}


# ---------------------------------------------------------------------- decisions
def fees_and_mortgage(engine: Engine, user: str) -> None:
    engine.ingest_batch(
        batch(
            identify({"age": 35}, user=user, at=T0 - 40 * DAY),
            track("Overdraft Started", {"balance": -20.0}, user=user, at=T0 - 30 * DAY),
            *[
                track(
                    "Transaction Posted",
                    {"amount": -15.0, "category": "overdraft_fee", "balance": -35.0},
                    user=user,
                    at=T0 - d * DAY,
                )
                for d in (20, 10, 5)
            ],
            track("Overdraft Ended", {"balance": 250.0}, user=user, at=T0 - 2 * DAY),
            *[page(MORTGAGE, user=user, at=T0 - i * 3600) for i in range(8)],
        )
    )


def home(engine: Engine, user: str):
    return engine.decide(DecisionRequest(placement="home_feed"), user_id=user)


def test_a_relevant_insight_outranks_commercial_offers_with_its_numbers(make_engine):
    engine = make_engine("memory")
    user = customer("treatment")
    fees_and_mortgage(engine, user)
    d = home(engine, user)
    items = [i.offer_id for i in d.items]
    assert items[0] == "overdraft_fee_insight"
    assert d.urgent == ["overdraft_fee_insight"]
    assert any(i.kind.value == "commercial" for i in d.items[1:])  # the others still sell
    top = d.items[0]
    assert top.reasons[0].code is ReasonCode.OFFER_REASON
    assert top.reasons[0].text == (
        "You paid 3 overdraft fees (EUR 45) in 90 days: a EUR 500 buffer would have avoided them"
    )
    assert top.score < max(i.score for i in d.items[1:])  # first by its trigger, not score


def test_an_insight_stays_capped_and_rested(make_engine, clock):
    engine = make_engine("memory")
    user = customer("treatment")
    fees_and_mortgage(engine, user)
    for hours_ago in (3, 2, 1):
        clock.set(T0 - hours_ago * 3_600.0)
        shown = home(engine, user)
        assert shown.items[0].offer_id == "overdraft_fee_insight"
        engine.ingest_batch(batch(feedback(shown, "Promotion Viewed", at=clock.now())))
    clock.set(T0)
    d = home(engine, user)
    assert "overdraft_fee_insight" not in [i.offer_id for i in d.items]
    assert any(
        e.offer_id == "overdraft_fee_insight" and e.why is Suppression.CAPPED for e in d.excluded
    )
    clock.set(T0 + 8 * DAY)  # the cap's week is over: first again, until dismissed
    d = home(engine, user)
    assert d.items[0].offer_id == "overdraft_fee_insight"
    engine.ingest_batch(batch(feedback(d, "Promotion Dismissed", at=clock.now())))
    d = home(engine, user)
    assert [e.why for e in d.excluded if e.offer_id == "overdraft_fee_insight"] == [
        Suppression.DISMISSED
    ]


def test_an_insight_s_control_group_does_not_see_it_and_is_counted(make_engine):
    engine = make_engine("memory")
    user = customer("control")
    fees_and_mortgage(engine, user)
    d = home(engine, user)
    assert "overdraft_fee_insight" not in [i.offer_id for i in d.items]
    assert "overdraft_fee_insight" in d.control
    counters = engine.experiment_counters()
    assert "overdraft_fee_help" in counters


def test_without_its_trigger_an_insight_is_not_shown(make_engine):
    engine = make_engine("memory")
    user = customer("treatment")
    engine.ingest_batch(batch(*[page(MORTGAGE, user=user, at=T0 - i * 3600) for i in range(8)]))
    d = home(engine, user)
    assert d.urgent == []
    assert "overdraft_fee_insight" not in [i.offer_id for i in d.items]


def test_contact_capped_spares_urgent_messages_only():
    assert ranking.contact_capped(False)
    assert ranking.contact_capped(False, True)
    assert not ranking.contact_capped(True)
    assert ranking.contact_capped(True, insight=True)


# ---------------------------------------------------------------------- the catalog
@pytest.mark.parametrize(
    ("old", "new", "path", "says"),
    [
        (
            "    insight: profile.overdraft_fees_90d >= 2\n",
            "    insight: profile.overdraft_fees_90d >= 2\n    urgent: profile.overdrawn\n",
            "$.offers[17].insight",
            "urgent or an insight",
        ),
        (
            "fees (EUR {profile.overdraft_fees_paid_90d})",
            "fees (EUR {profile.overdraft_fee_paid})",
            "$.offers[17].reason",
            "overdraft_fees_paid_90d",
        ),
        (
            "    kind: service\n    topic: overdraft\n    value: 30\n",
            "    kind: commercial\n    topic: overdraft\n    value: 30\n",
            "$.offers[17].insight",
            "only a service message",
        ),
    ],
)
def test_insight_catalog_mistakes_are_named(
    tmp_path: Path, old: str, new: str, path: str, says: str
):
    edited_catalog(tmp_path, {"offers.yaml": [(old, new)]})
    with pytest.raises(CatalogError) as exc:
        load_catalog(tmp_path)
    problems = {p.path: p.reason for p in exc.value.problems}
    assert path in problems, problems
    assert says in problems[path]


def test_a_reviewed_subscription_s_rise_is_no_longer_news(catalog: Catalog):
    def paid(month: int, amount: float, merchant: str) -> dict:
        props = {"amount": -amount, "merchant": merchant}
        return track("Transaction Posted", props, user="u", at=T0 + month * 30 * DAY)

    rises = [paid(m, a, shop) for shop in ("A", "B") for m, a in ((0, 5.0), (1, 5.0), (2, 6.0))]
    rises.sort(key=lambda m: m["timestamp"])
    now = T0 + 61 * DAY
    reviewed = track("Subscription Reviewed", {"merchant": "A"}, user="u", at=now)
    p = folded(catalog, *rises, reviewed)
    assert view(catalog, p, now)["price_rises_90d"] == 1
    assert view(catalog, p, now)["price_rise_merchant"] == "B"
    p = folded(catalog, *rises, track("Subscription Reviewed", {}, user="u", at=now))
    assert view(catalog, p, now)["price_rises_90d"] == 0


def test_the_fee_insight_ends_with_the_buffer(make_engine):
    engine = make_engine("memory")
    user = customer("treatment")
    fees_and_mortgage(engine, user)
    assert home(engine, user).items[0].offer_id == "overdraft_fee_insight"
    opened = track("Product Opened", {"product": "overdraft_buffer"}, user=user, at=T0 - 60.0)
    engine.ingest_batch(batch(opened))
    d = home(engine, user)
    assert d.urgent == []
    assert "overdraft_fee_insight" not in [i.offer_id for i in d.items]
