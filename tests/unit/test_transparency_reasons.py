"""A decision's reasons said again in the customer's language (issue 20, item 3): each
reason keeps the facts its text was made from, so the same decision reads in Danish, Dutch,
German, English or Spanish."""

from __future__ import annotations

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.decide.reasons import Reason, ReasonCode
from nextbest.engine import Engine
from nextbest.store import memory_stores
from nextbest.transparency.reasons import say_reason
from nextbest.transparency.texts import LANGUAGES
from tests.support import T0, batch, counter_ids, identify, page

MORTGAGE = "https://bank.example/mortgages/rates"


def test_a_topic_interest_reason_reads_in_every_language(catalog: Catalog) -> None:
    engine = Engine(catalog, memory_stores(), FixedClock(T0), new_id=counter_ids())
    pages = [page(MORTGAGE, user="u1", at=T0 - 60 * k) for k in range(5)]
    engine.ingest_batch(batch(identify({"age": 40}, user="u1", at=T0 - 86_400), *pages))
    decision = engine.decide(DecisionRequest(placement="home_feed"), user_id="u1")
    engine.release()
    interest = [r for i in decision.items for r in i.reasons if r.code is ReasonCode.TOPIC_INTEREST]
    assert interest, decision.items
    reason = interest[0]
    assert reason.facts == {"topic": "mortgage", "count": 5, "days": 14}
    said = {language: say_reason(reason, catalog, language) for language in LANGUAGES}
    name = catalog.topics["mortgage"].name.lower()
    assert said["en"] == f"You viewed {name} pages 5 times in the last 14 days"
    assert said["da"] == f"Du har set sider om {name} 5 gange inden for de sidste 14 dage"
    assert said["de"] == f"Sie haben in den letzten 14 Tagen 5-mal Seiten zu {name} angesehen"
    assert len(set(said.values())) == len(LANGUAGES)


def test_every_reason_code_with_facts_is_said_and_without_them_as_written(
    catalog: Catalog,
) -> None:
    offer = next(iter(catalog.offers))
    segment = next(iter(catalog.segment_names))
    campaign = next(iter(catalog.campaigns))
    cases = [
        Reason(
            ReasonCode.FUNNEL_STAGE,
            "applying a mortgage product",
            {"topic": "mortgage", "stage": "applying"},
        ),
        Reason(ReasonCode.ELIGIBLE, "eligible", {"offer": offer}),
        Reason(ReasonCode.SERVICE_MESSAGE, "service message", {"offer": offer}),
        Reason(ReasonCode.SEGMENT, "in segment", {"segment": segment}),
        Reason(ReasonCode.CAMPAIGN_PRIORITY, "priority", {"campaign": campaign}),
        Reason(ReasonCode.FALLBACK, "shown when nothing else fits", {"offer": offer}),
        Reason(ReasonCode.OFFER_REASON, "Rates are low this month", {"offer": offer}),
    ]
    for reason in cases:
        for language in LANGUAGES:
            said = say_reason(reason, catalog, language)
            assert said
            assert said != reason.text, (reason, language)
    assert say_reason(cases[-1], catalog, "nl") == "De reden van de bank: Rates are low this month"
    # logged before reasons kept facts, or naming what the catalog no longer has: as written
    old = Reason(ReasonCode.TOPIC_INTEREST, "viewed mortgage pages 5 times in 14 days")
    assert say_reason(old, catalog, "es") == old.text
    gone = Reason(ReasonCode.ELIGIBLE, "eligible for Gone", {"offer": "no_such_offer"})
    assert say_reason(gone, catalog, "da") == gone.text
