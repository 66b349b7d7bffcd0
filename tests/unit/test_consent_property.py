"""The promise of consent per data source, as a property: for a customer who withdrew a
source, no decision changes when that source's events change; the activity counters a view
reads hold the other sources' events and none of the withdrawn one's; and nothing experiment
measurement freezes (covariates, audiences) changes with a source withdrawn for analytics.

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
from nextbest.experiments.exposure import (
    analytics_view,
    covariates,
    macro_audiences,
    measured_segments,
)
from nextbest.profile import Profile, fold
from nextbest.profile.windows import count_in_days
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


def _tracked(name: str, key: str, values: Any) -> st.SearchStrategy[dict[str, Any]]:
    """``name`` tracked for ``USER`` with ``{key: one of values}``, at a drawn time."""
    return st.builds(
        lambda v, t: track(name, {key: v}, user=USER, at=t), st.sampled_from(values), when
    )


def _behavioral() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda u, t: page(u, user=USER, at=t), st.sampled_from(URLS), when),
        _tracked("Calculator Used", "topic", TOPICS),
        _tracked("Application Started", "product", PRODUCTS),
        _tracked("Video Watched", "topic", TOPICS),
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
        _tracked("Product Opened", "product", PRODUCTS),
        _tracked("Product Closed", "product", PRODUCTS),
        _tracked("Life Event", "type", ["turning_18", "moved_home", "new_child", "retired"]),
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


# ------------------------------------------------------------------ activity counters
@pytest.mark.filterwarnings("ignore")
@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_case())
def test_a_withdrawn_source_takes_only_its_own_events_out_of_the_counters(
    catalog: Catalog, case
) -> None:
    """The activity counters a view reads (events, sessions, engagement's 30-day events) are
    those of the other sources' events, as if the withdrawn source's had never come: hiding
    core banking does not hide behaviour, nor the other way round."""
    source, withdrawal, shared, first, _ = case
    choice = identify({"consent": withdrawal}, user=USER, at=T0 - 90 * DAY)
    full = _profile(catalog, [choice, *shared, *first])
    without = _profile(catalog, [choice, *shared])
    hidden = frozenset({source})
    a = catalog.sources.masked(full, hidden)
    b = catalog.sources.masked(without, hidden)
    assert (a.event_count, a.sessions) == (b.event_count, b.sessions)
    for days in (1, 7, 14, 30):
        assert count_in_days(a.activity, days, T0) == count_in_days(b.activity, days, T0)
    # the choice itself (an identify without data traits) counts as behaviour
    assert a.event_count == len(shared) + (source != "behavioral")
    assert full.event_count == 1 + len(shared) + len(first)  # the whole profile's, unchanged


# ------------------------------------------------------------------ experiment measurement
def _measurement(catalog: Catalog, profile: Profile) -> list[Any]:
    """Everything a first exposure at T0 would freeze: each campaign's covariates, the macro
    audiences, and the decisions' segments analytics may place the customer in."""
    view = analytics_view(profile, catalog)
    out: list[Any] = [macro_audiences(view, catalog, T0)]
    out += [covariates(view, kpis, T0, catalog) for _, kpis in sorted(catalog.kpis.items())]
    for placement in sorted(catalog.placements):
        d = decide(catalog, profile, DecisionRequest(placement=placement), T0, "d-1")
        out.append(measured_segments(d.segments, view.hidden, catalog))
    return out


@pytest.mark.filterwarnings("ignore")
@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=_case(), everywhere=st.booleans())
def test_no_measurement_depends_on_a_source_withdrawn_for_analytics(
    catalog: Catalog, case, everywhere: bool
) -> None:
    source, _, shared, first, second = case
    withdrawal = (
        {"sources": {source: False}}
        if everywhere
        else {"analytics": {"granted": True, "sources": {source: False}}}
    )
    choice = identify({"consent": withdrawal}, user=USER, at=T0 - 90 * DAY)
    one = _profile(catalog, [choice, *shared, *first])
    two = _profile(catalog, [choice, *shared, *second])
    assert _measurement(catalog, one) == _measurement(catalog, two), source


def test_the_measurement_property_has_teeth(catalog: Catalog) -> None:
    """Allowed, behaviour changes the measurement (an intent audience, a covariate)."""
    started = [
        track("Application Started", {"product": "car_loan"}, user=USER, at=T0 - k * DAY)
        for k in range(1, 4)
    ]
    pages = [page(URLS[0], user=USER, at=T0 - i * 3_600) for i in range(6)]
    allowed = identify({"consent": {"analytics": True}}, user=USER, at=T0 - 90 * DAY)
    assert _measurement(catalog, _profile(catalog, [allowed, *started, *pages])) != _measurement(
        catalog, _profile(catalog, [allowed])
    )
    withdrawn = identify(
        {"consent": {"analytics": {"granted": True, "sources": {"behavioral": False}}}},
        user=USER,
        at=T0 - 90 * DAY,
    )
    assert _measurement(catalog, _profile(catalog, [withdrawn, *started, *pages])) == _measurement(
        catalog, _profile(catalog, [withdrawn])
    )
