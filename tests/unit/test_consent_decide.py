"""Consent enforced where features are read: a decision's views see only the data sources
the customer allows for their purpose; a rule reading a hidden feature sees it absent, and
a commercial offer whose rule needs it is not eligible."""

from __future__ import annotations

from typing import Any

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, Suppression
from nextbest.decide.model import ItemKind
from nextbest.engine import Engine
from nextbest.profile.consent import SECURITY_DATA
from nextbest.profile.model import Profile
from nextbest.rules.expression import RuleOutcome
from nextbest.store.catalog_files import load_catalog
from tests.support import (
    DAY,
    T0,
    batch,
    edited_catalog,
    identify,
    page,
    targeted_catalog,
    track,
    treated_everywhere,
)

MORTGAGE = "https://bank.example/mortgages/rates"
NOT_ELIGIBLE = (Suppression.INELIGIBLE, Suppression.RULE_ERROR)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return load_catalog(targeted_catalog(tmp_path_factory.mktemp("targeted")))


def customer(engine: Engine, *, overdrawn: bool = False) -> str:
    user = treated_everywhere()
    balance = -5.0 if overdrawn else 2_000.0
    kind = "Overdraft Started" if overdrawn else "Balance Updated"
    engine.ingest_batch(
        batch(
            identify({"age": 35}, user=user, at=T0 - 10 * DAY),
            *[page(MORTGAGE, user=user, at=T0 - i * 3600) for i in range(5)],
            track(kind, {"balance": balance}, user=user, at=T0 - 60),
        )
    )
    return user


def consent(engine: Engine, user: str, purposes: dict[str, Any]) -> None:
    engine.ingest_batch(batch(track("Consent Updated", {"purposes": purposes}, user=user)))


def home(engine: Engine, user: str):
    return engine.decide(DecisionRequest(placement="home_feed"), user_id=user)


def why(decision, offer: str) -> Suppression | None:
    return next((e.why for e in decision.excluded if e.offer_id == offer), None)


def shown(decision) -> list[str]:
    return [i.offer_id for i in decision.items]


def test_marketing_off_leaves_service_messages_only(make_engine):
    engine = make_engine("memory")
    user = customer(engine, overdrawn=True)
    assert "mortgage_advice" in shown(home(engine, user))
    consent(engine, user, {"marketing": False})
    d = home(engine, user)
    assert {i.kind for i in d.items} == {ItemKind.SERVICE}
    assert shown(d)[0] == "overdraft_warning"
    assert why(d, "mortgage_advice") is Suppression.NO_CONSENT


def test_transactional_withdrawn_a_rule_reading_the_balance_is_not_eligible(make_engine):
    engine = make_engine("memory")
    user = customer(engine)
    # credit_card_offer: segments.adult && !profile.overdrawn
    assert why(home(engine, user), "credit_card_offer") is None
    consent(engine, user, {"sources": {"transactional": False}})
    d = home(engine, user)
    assert why(d, "credit_card_offer") is Suppression.RULE_ERROR
    # what reads no transactional data is untouched
    assert "mortgage_advice" in shown(d)


def test_a_source_withdrawn_everywhere_is_hidden_from_service_messages_too(make_engine):
    engine = make_engine("memory")
    user = customer(engine, overdrawn=True)
    assert shown(home(engine, user))[0] == "overdraft_warning"
    consent(engine, user, {"sources": {"transactional": False}})
    d = home(engine, user)
    assert "overdraft_warning" not in shown(d)
    assert why(d, "overdraft_warning") in NOT_ELIGIBLE


def test_transactional_withdrawn_for_marketing_only_keeps_the_service_message(make_engine):
    engine = make_engine("memory")
    user = customer(engine, overdrawn=True)
    consent(engine, user, {"marketing": {"sources": {"transactional": False}}})
    d = home(engine, user)
    assert shown(d)[0] == "overdraft_warning"
    assert why(d, "credit_card_offer") is Suppression.RULE_ERROR


def test_without_personalization_service_messages_read_the_contract_sources(make_engine):
    engine = make_engine("memory")
    user = customer(engine, overdrawn=True)
    consent(engine, user, {"personalization": False})
    d = home(engine, user)
    assert shown(d)[0] == "overdraft_warning"
    # commercial offers read nothing of the customer: those that need something are out
    for offer in ("mortgage_advice", "credit_card_offer"):
        assert why(d, offer) in NOT_ELIGIBLE
    assert all("viewed" not in r.text for i in d.items for r in i.reasons)


def test_third_party_traits_are_read_only_with_a_grant(tmp_path, make_engine):
    rule = "eligibility: segments.adult && !profile.overdrawn"
    edited = edited_catalog(
        tmp_path,
        {"offers.yaml": [(rule, "eligibility: segments.adult && traits.credit_score > 600")]},
        targeted=True,
    )
    engine = make_engine("memory", cat=load_catalog(edited))
    user = customer(engine)
    engine.ingest_batch(batch(identify({"credit_score": 700}, user=user)))
    # third-party data is off by default (the catalog's consent.sources)
    assert why(home(engine, user), "credit_card_offer") is Suppression.RULE_ERROR
    consent(engine, user, {"sources": {"third_party": True}})
    assert why(home(engine, user), "credit_card_offer") is None
    consent(engine, user, {"marketing": {"sources": {"third_party": False}}})
    assert why(home(engine, user), "credit_card_offer") is Suppression.RULE_ERROR


def test_a_masked_profile_keeps_consent_contact_history_and_identity(catalog: Catalog):
    p = Profile(
        customer_id="u1",
        user_id="u1",
        traits={"age": 40, "income": 5, "credit_score": 1},
        products=["mortgage"],
        balance=10.0,
        consent={"marketing": True},
    )
    sources = catalog.sources
    assert sources.masked(p, frozenset()) is p
    assert sources.masked(p, frozenset({SECURITY_DATA})) is p
    masked = sources.masked(p, frozenset({"transactional", "third_party"}))
    assert masked.traits == {"age": 40}
    assert masked.balance is None
    assert masked.products == ["mortgage"]
    assert masked.consent == {"marketing": True}
    assert p.balance == 10.0  # the profile itself is untouched
    no_crm = sources.masked(p, frozenset({"crm"}))
    assert no_crm.products == []
    assert no_crm.traits == {"income": 5, "credit_score": 1}


def test_a_rule_reading_a_hidden_feature_sees_it_absent(catalog: Catalog):
    p = Profile(customer_id="u1", user_id="u1", traits={"age": 40}, balance=-1.0, overdrawn=True)
    reads, sources = catalog.rule_reads, catalog.sources
    warning = catalog.offers["overdraft_warning"].rule  # profile.overdrawn
    card = catalog.offers["credit_card_offer"].rule  # segments.adult && !profile.overdrawn
    hidden = frozenset({"transactional"})
    plan = reads.masked(hidden, sources.of_path)
    assert reads.masked(hidden, sources.of_path) is plan  # kept
    assert reads.masked(frozenset({"third_party"}), sources.of_path) is reads.plan
    full = reads.evaluation(p, catalog.topics, T0, {})
    masked = reads.evaluation(p, catalog.topics, T0, {}, plan)
    for env in (full, masked):
        env.bind("segments", {"adult": True})
    assert full.check(warning) is RuleOutcome.TRUE
    assert masked.check(warning) is RuleOutcome.ERROR
    assert full.check(card) is RuleOutcome.FALSE
    assert masked.check(card) is RuleOutcome.ERROR
    # CEL alone (no closures) says the same
    assert masked.check_cel(warning) is RuleOutcome.ERROR
    assert reads.sources_read(card, sources.of_path) == {"transactional"}


def test_a_hidden_read_is_decided_by_the_closures_as_cel_decides_it(catalog: Catalog):
    """A rule reading a hidden feature runs in its compiled closures, not in CEL: a hidden
    read is CEL's error (absorbed by ``&&`` and ``||`` where another term decides), and
    the closures give the outcome CEL gives on the same masked view."""
    reads, sources = catalog.rule_reads, catalog.sources
    rules = [r for _, r in catalog.segments] + [o.rule for o in catalog.offers.values()]
    outcomes: set[RuleOutcome] = set()
    for hidden in ({"transactional"}, {"behavioral"}, {"crm"}, {"transactional", "crm"}):
        plan = reads.masked(frozenset(hidden), sources.of_path)
        reading = [r for r in rules if reads.sources_read(r, sources.of_path) & hidden]
        assert reading, hidden
        for age, balance, overdrawn, products in (
            (40, -1.0, True, []),
            (25, 900.0, False, ["mortgage"]),
            (70, None, False, ["credit_card", "savings"]),
        ):
            p = Profile(
                customer_id="u1",
                user_id="u1",
                traits={"age": age, "income": 4_000},
                balance=balance,
                overdrawn=overdrawn,
                products=products,
                consent={"marketing": True},
            )
            seen = sources.masked(p, frozenset(hidden))
            env = reads.evaluation(seen, catalog.topics, T0, {"channel": "web"}, plan)
            cel = reads.evaluation(seen, catalog.topics, T0, {"channel": "web"}, plan)
            segments = {s.id: env.check(r) is RuleOutcome.TRUE for s, r in catalog.segments}
            env.bind("segments", segments)
            cel.bind("segments", segments)
            for rule in reading:
                outcome = env.by_closures(rule)
                assert outcome is not None, (hidden, rule.source)
                assert outcome is cel.check_cel(rule), (hidden, rule.source)
                assert env.check(rule) is outcome
                outcomes.add(outcome)
            assert env.cel_checks == 0, hidden  # not one rule fell back to CEL
            assert cel.cel_checks == len(reading)
    assert RuleOutcome.ERROR in outcomes, outcomes
    assert RuleOutcome.FALSE in outcomes, outcomes


def test_a_learned_chooser_reads_the_commercial_view(make_engine, tmp_path):
    """The example bank's app_home learns (a contextual model): the features it is given
    (logged with the decision) hold no behaviour once behavioral data is withdrawn."""
    from tests.support import EXAMPLE_CATALOG

    engine = make_engine("memory", cat=load_catalog(EXAMPLE_CATALOG))
    user = customer(engine)
    request = DecisionRequest(placement="app_home")
    before = engine.decide(request, user_id=user).features
    assert any(k.startswith("interest:") for k in before)
    consent(engine, user, {"sources": {"behavioral": False}})
    after = engine.decide(request, user_id=user).features
    assert after
    assert not any(k.split(":")[0] in ("interest", "count7", "count30", "funnel") for k in after)
