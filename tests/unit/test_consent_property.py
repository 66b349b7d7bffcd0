"""The promise of consent per data source, as a property: for a customer who withdrew a
source, no decision changes when that source's events change.

Two histories share every event of the other sources (and the consent itself) and differ
only in the withdrawn source's events; folded and decided for every placement at the same
time, the decisions are identical: items, order, scores, reasons, what was left out and
why, segments, logged features. The security purpose is exempt by design (the guard reads
every event, legitimate interest); these events carry no anonymousId, so it watches none.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, decide
from nextbest.events import parse_batch
from nextbest.profile import Profile, fold
from tests.support import DAY, T0, batch, identify, page, track

USER = "u-consent"
URLS = [
    "https://bank.example/mortgages/rates",
    "https://bank.example/loans/car/new",
    "https://bank.example/pension/plan",
    "https://bank.example/savings/children",
    "https://bank.example/investing/start",
    "https://bank.example/cards/gold",
    "https://bank.example/help/overdraft",
    "https://bank.example/about",
]
TOPICS = ["mortgage", "car_loan", "pension", "child_savings", "investing", "cards"]
PRODUCTS = ["mortgage", "car_loan", "credit_card", "payment_package", "child_savings"]

when = st.floats(min_value=T0 - 60 * DAY, max_value=T0 - 1.0).map(lambda t: round(t, 3))


def _behavioral() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda u, t: page(u, user=USER, at=t), st.sampled_from(URLS), when),
        st.builds(
            lambda topic, t: track("Calculator Used", {"topic": topic}, user=USER, at=t),
            st.sampled_from(TOPICS),
            when,
        ),
        st.builds(
            lambda p, t: track("Application Started", {"product": p}, user=USER, at=t),
            st.sampled_from(PRODUCTS),
            when,
        ),
        st.builds(
            lambda topic, t: track("Video Watched", {"topic": topic}, user=USER, at=t),
            st.sampled_from(TOPICS),
            when,
        ),
    )


def _transactional() -> st.SearchStrategy[dict[str, Any]]:
    money = st.floats(min_value=-5_000, max_value=50_000).map(lambda x: round(x, 2))
    return st.one_of(
        st.builds(
            lambda b, t: track(
                "Transaction Posted", {"amount": 10.0, "balance": b}, user=USER, at=t
            ),
            money,
            when,
        ),
        st.builds(
            lambda b, t: track("Balance Updated", {"balance": b}, user=USER, at=t), money, when
        ),
        st.builds(
            lambda b, t: track("Overdraft Started", {"balance": -abs(b) - 1}, user=USER, at=t),
            money,
            when,
        ),
        st.builds(lambda t: track("Overdraft Ended", {"balance": 10.0}, user=USER, at=t), when),
        st.builds(
            lambda a, t: track("Salary Received", {"amount": a}, user=USER, at=t),
            money,
            when,
        ),
        st.builds(
            lambda b, i, t: identify({"balance": b, "income": i}, user=USER, at=t),
            money,
            money,
            when,
        ),
    )


def _crm() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(
            lambda a, c, t: identify({"age": a, "children": c}, user=USER, at=t),
            st.integers(min_value=16, max_value=80),
            st.integers(min_value=0, max_value=3),
            when,
        ),
        st.builds(
            lambda p, t: track("Product Opened", {"product": p}, user=USER, at=t),
            st.sampled_from(PRODUCTS),
            when,
        ),
        st.builds(
            lambda p, t: track("Product Closed", {"product": p}, user=USER, at=t),
            st.sampled_from(PRODUCTS),
            when,
        ),
        st.builds(
            lambda k, t: track("Life Event", {"type": k}, user=USER, at=t),
            st.sampled_from(["turning_18", "moved_home", "new_child", "retired"]),
            when,
        ),
    )


SOURCES = {"behavioral": _behavioral, "transactional": _transactional, "crm": _crm}


def _withdrawals(source: str) -> st.SearchStrategy[dict[str, Any]]:
    """The ways a source can be withdrawn from every use, with other choices around it."""
    everywhere = {"sources": {source: False}}
    per_purpose = {
        "personalization": {"granted": True, "sources": {source: False}},
        "marketing": {"granted": True, "sources": {source: False}},
    }
    return st.sampled_from([everywhere, per_purpose]).flatmap(
        lambda base: st.fixed_dictionaries(
            {},
            optional={
                "marketing": st.booleans(),
                "advisor_contact": st.booleans(),
            },
        ).map(lambda extra: {**base, **{k: v for k, v in extra.items() if k not in base}})
    )


def _profile(catalog: Catalog, messages: list[dict[str, Any]]) -> Profile:
    profile = Profile(customer_id=USER, user_id=USER)
    events = sorted(
        parse_batch(batch(*messages), T0 + 365 * DAY), key=lambda e: (e.timestamp, e.message_id)
    )
    for event in events:
        fold(profile, event, catalog.matcher, catalog.fold_config)
    return profile


def _decisions(catalog: Catalog, profile: Profile) -> list[dict[str, Any]]:
    out = []
    for placement in sorted(catalog.placements):
        d = decide(catalog, profile, DecisionRequest(placement=placement), T0, "d-1")
        seen = msgspec.to_builtins(d)
        # measurement of experiments (the analytics purpose) is not a decision's content
        for key in ("covariates", "audiences"):
            seen.pop(key, None)
        out.append(seen)
    return out


@st.composite
def _case(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[Any], list[Any], list[Any]]:
    source = draw(st.sampled_from(sorted(SOURCES)))
    others = [s for s in SOURCES if s != source]
    shared = draw(st.lists(st.one_of(*(SOURCES[s]() for s in others)), max_size=25))
    first = draw(st.lists(SOURCES[source](), max_size=25))
    second = draw(st.lists(SOURCES[source](), max_size=25))
    return source, draw(_withdrawals(source)), shared, first, second


@pytest.mark.filterwarnings("ignore")
@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_case())
def test_no_decision_depends_on_a_withdrawn_source(catalog: Catalog, case) -> None:
    source, withdrawal, shared, first, second = case
    choice = identify({"consent": withdrawal}, user=USER, at=T0 - 90 * DAY)
    one = _profile(catalog, [choice, *shared, *first])
    two = _profile(catalog, [choice, *shared, *second])
    assert _decisions(catalog, one) == _decisions(catalog, two), source


def test_the_property_has_teeth(catalog: Catalog) -> None:
    """Without the withdrawal the same change of events does change decisions: the test
    would see a leak."""
    crm = [identify({"age": 40}, user=USER, at=T0 - 5 * DAY)]
    pages = [page(URLS[0], user=USER, at=T0 - i * 3_600) for i in range(6)]
    allowed = identify({"consent": {"marketing": True}}, user=USER, at=T0 - 90 * DAY)
    assert _decisions(catalog, _profile(catalog, [allowed, *crm, *pages])) != _decisions(
        catalog, _profile(catalog, [allowed, *crm])
    )
    withdrawn = identify(
        {"consent": {"sources": {"behavioral": False}}}, user=USER, at=T0 - 90 * DAY
    )
    assert _decisions(catalog, _profile(catalog, [withdrawn, *crm, *pages])) == _decisions(
        catalog, _profile(catalog, [withdrawn, *crm])
    )
