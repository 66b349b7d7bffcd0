"""A decision's reasons said again in the customer's language, from the facts each reason
keeps (``decide.reasons.Reason.facts``). Pure.

A reason logged before reasons kept their facts (or one whose facts name a topic, offer or
campaign the catalog no longer has) is shown as it was written.
"""

from __future__ import annotations

from nextbest.catalog.compiled import Catalog
from nextbest.decide.reasons import Reason, ReasonCode
from nextbest.transparency.texts import say

__all__ = ["say_reason"]

_STAGES = frozenset({"considering", "applying", "submitted"})


def _topic(catalog: Catalog, facts: dict[str, object]) -> str | None:
    spec = catalog.topics.get(str(facts.get("topic")))
    return None if spec is None else spec.name.lower()


def _offer(catalog: Catalog, facts: dict[str, object]) -> str | None:
    offer = catalog.offers.get(str(facts.get("offer")))
    return None if offer is None else offer.spec.name


def say_reason(reason: Reason, catalog: Catalog, language: str) -> str:
    """``reason`` in ``language``."""
    facts = reason.facts
    code = reason.code
    said: str | None = None
    if code is ReasonCode.TOPIC_INTEREST:
        topic, count, days = _topic(catalog, facts), facts.get("count"), facts.get("days")
        if topic is not None and isinstance(count, int) and isinstance(days, int) and count:
            key = "reason.topic_interest.once" if count == 1 else "reason.topic_interest"
            said = say(key, language, topic=topic, count=count, days=days)
    elif code is ReasonCode.FUNNEL_STAGE:
        topic, stage = _topic(catalog, facts), facts.get("stage")
        if topic is not None and stage in _STAGES:
            said = say(f"reason.funnel_stage.{stage}", language, topic=topic)
    elif code is ReasonCode.OFFER_REASON:
        # the marketer's own words, in the catalog's language: said as written, and named
        said = say("reason.offer_reason", language, text=reason.text)
    elif code in (ReasonCode.SERVICE_MESSAGE, ReasonCode.ELIGIBLE):
        name = _offer(catalog, facts)
        if name is not None:
            key = (
                "reason.service_message"
                if code is ReasonCode.SERVICE_MESSAGE
                else "reason.eligible"
            )
            said = say(key, language, name=name)
    elif code is ReasonCode.SEGMENT:
        segment = catalog.segment_names.get(str(facts.get("segment")))
        if segment is not None:
            said = say("reason.segment", language, segment=segment)
    elif code is ReasonCode.CAMPAIGN_PRIORITY:
        campaign = catalog.campaigns.get(str(facts.get("campaign")))
        if campaign is not None:
            said = say("reason.campaign_priority", language, campaign=campaign.name)
    elif code is ReasonCode.FALLBACK:
        said = say("reason.fallback", language)
    return reason.text if said is None else said
