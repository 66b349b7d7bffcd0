"""Why an item was shown (ReasonCode) and why a candidate was not (Suppression): enums, never
free strings; the human text is rendered from the code and its facts."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = ["CUSTOMER_FACING", "Reason", "ReasonCode", "Suppression"]


class ReasonCode(enum.StrEnum):
    OFFER_REASON = "offer_reason"
    TOPIC_INTEREST = "topic_interest"
    FUNNEL_STAGE = "funnel_stage"
    SEGMENT = "segment"
    CAMPAIGN_PRIORITY = "campaign_priority"
    SERVICE_MESSAGE = "service_message"
    ELIGIBLE = "eligible"
    FALLBACK = "fallback"


class Suppression(enum.StrEnum):
    OUT_OF_SCHEDULE = "out_of_schedule"
    INELIGIBLE = "ineligible"
    RULE_ERROR = "rule_error"
    OWNED = "already_owned"
    CAPPED = "impression_cap"
    FATIGUE = "daily_fatigue"
    RECENTLY_CLICKED = "recently_clicked"
    DISMISSED = "recently_dismissed"
    FADED = "faded_interest"
    NO_CONSENT = "no_marketing_consent"
    HOLDOUT = "universal_holdout"
    CONTROL = "control_group"
    OUTRANKED = "outranked"
    ON_PAGE = "already_on_page"
    #: an advisor card's topic: no expert can call now, and none has a free slot
    NO_ADVISOR = "no_advisor"
    #: a commercial offer, while the identity-theft guard has flagged the session (it may
    #: not be the customer: nothing is sold to it)
    SECURITY = "security_flagged"


class Reason(msgspec.Struct, frozen=True, gc=False):
    """Why an item was shown: its code, the text in the bank's catalog language, and the
    facts the text was made from (``topic``, ``count``, ``days``, ``stage``, ``offer``,
    ``segment``, ``campaign``: ids, so ``transparency`` can say it again in the customer's
    language)."""

    code: ReasonCode
    text: str
    facts: dict[str, Any] = {}


#: the reasons a customer may read on the bank's page (what a browser key's decision
#: carries); the others speak of the bank's own targeting (segments, campaign weights) or
#: of the engine (eligible, fallback)
CUSTOMER_FACING: frozenset[ReasonCode] = frozenset(
    {
        ReasonCode.OFFER_REASON,
        ReasonCode.SERVICE_MESSAGE,
        ReasonCode.TOPIC_INTEREST,
        ReasonCode.FUNNEL_STAGE,
    }
)
