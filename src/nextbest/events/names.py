"""The bank's named track events and the properties each needs.

Bank meaning rides on well-named track events. Each requires only the properties the engine
needs to act on it; a known name with such a property missing or mistyped breaks the
vocabulary and is quarantined with the property's path (the rest of its batch is kept).
Properties the engine does not need are checked for type only when present. Unknown names
are custom events and pass through (they may still map to topics through the catalog).
"""

from __future__ import annotations

import enum

__all__ = [
    "CALLBACK_STEPS",
    "KNOWN_EVENTS",
    "NOT_INTEREST",
    "OPTIONAL_PROPERTIES",
    "SERVER_ONLY_EVENTS",
    "SERVER_ONLY_TRAITS",
    "EventName",
    "PropertySpec",
]

_NUMBER = (int, float)
_TEXT = (str,)
_OBJECT = (dict,)


class EventName(enum.StrEnum):
    APPLICATION_STARTED = "Application Started"
    APPLICATION_SUBMITTED = "Application Submitted"
    APPLICATION_COMPLETED = "Application Completed"
    BALANCE_UPDATED = "Balance Updated"
    CALCULATOR_USED = "Calculator Used"
    CALLBACK_ACCEPTED = "Callback Accepted"
    CALLBACK_ASSIGNED = "Callback Assigned"
    CALLBACK_CANCELLED = "Callback Cancelled"
    CALLBACK_COMPLETED = "Callback Completed"
    CALLBACK_CONNECTED = "Callback Connected"
    CALLBACK_DECLINED = "Callback Declined"
    CALLBACK_EXPIRED = "Callback Expired"
    CALLBACK_NOT_CONNECTED = "Callback Not Connected"
    CALLBACK_REQUESTED = "Callback Requested"
    CALLBACK_SCHEDULED = "Callback Scheduled"
    CONSENT_UPDATED = "Consent Updated"
    LIFE_EVENT = "Life Event"
    OVERDRAFT_ENDED = "Overdraft Ended"
    OVERDRAFT_STARTED = "Overdraft Started"
    OVERDRAFT_PROTECTION_ENABLED = "Overdraft Protection Enabled"
    PRODUCT_CLOSED = "Product Closed"
    PRODUCT_OPENED = "Product Opened"
    PRODUCTS_SEARCHED = "Products Searched"
    PROMOTION_CLICKED = "Promotion Clicked"
    PROMOTION_DISMISSED = "Promotion Dismissed"
    PROMOTION_VIEWED = "Promotion Viewed"
    SALARY_RECEIVED = "Salary Received"
    SAVINGS_TRANSFER = "Savings Transfer"
    SUBSCRIPTION_REVIEWED = "Subscription Reviewed"
    TRANSACTION_POSTED = "Transaction Posted"


#: property name -> accepted Python types (after JSON decoding)
PropertySpec = dict[str, tuple[type, ...]]

#: the steps of a callback's life after its request, each appended to the customer's event
#: log by the engine as it happens (``advisors.model.Transition.event``): facts only the
#: bank's systems assert, and no sign of interest in a topic (the request itself is)
CALLBACK_STEPS: frozenset[str] = frozenset(
    {
        EventName.CALLBACK_ACCEPTED,
        EventName.CALLBACK_ASSIGNED,
        EventName.CALLBACK_CANCELLED,
        EventName.CALLBACK_COMPLETED,
        EventName.CALLBACK_CONNECTED,
        EventName.CALLBACK_DECLINED,
        EventName.CALLBACK_EXPIRED,
        EventName.CALLBACK_NOT_CONNECTED,
        EventName.CALLBACK_SCHEDULED,
    }
)

KNOWN_EVENTS: dict[str, PropertySpec] = {
    EventName.APPLICATION_STARTED: {"product": _TEXT},
    EventName.APPLICATION_SUBMITTED: {"product": _TEXT},
    EventName.APPLICATION_COMPLETED: {"product": _TEXT},
    EventName.BALANCE_UPDATED: {"balance": _NUMBER},
    EventName.CALCULATOR_USED: {"topic": _TEXT},
    EventName.CALLBACK_REQUESTED: {"topic": _TEXT},
    **{name: {"topic": _TEXT, "callback_id": _TEXT} for name in CALLBACK_STEPS},
    EventName.CONSENT_UPDATED: {"purposes": _OBJECT},
    EventName.LIFE_EVENT: {"type": _TEXT},
    EventName.OVERDRAFT_ENDED: {},
    EventName.OVERDRAFT_STARTED: {},
    EventName.OVERDRAFT_PROTECTION_ENABLED: {},
    EventName.PRODUCT_CLOSED: {"product": _TEXT},
    EventName.PRODUCT_OPENED: {"product": _TEXT},
    EventName.PRODUCTS_SEARCHED: {},
    EventName.PROMOTION_CLICKED: {"promotion_id": _TEXT, "decision_id": _TEXT},
    EventName.PROMOTION_DISMISSED: {"promotion_id": _TEXT, "decision_id": _TEXT},
    EventName.PROMOTION_VIEWED: {"promotion_id": _TEXT, "decision_id": _TEXT},
    EventName.SALARY_RECEIVED: {"amount": _NUMBER},
    EventName.SAVINGS_TRANSFER: {},
    EventName.SUBSCRIPTION_REVIEWED: {},
    EventName.TRANSACTION_POSTED: {},
}

#: properties a known event may carry, of these types when present: the core system that
#: reports an overdraft does not always know the balance, and the overdraft itself is what
#: a warning needs; a transaction acts on the profile only through its balance
OPTIONAL_PROPERTIES: dict[str, PropertySpec] = {
    EventName.OVERDRAFT_STARTED: {"balance": _NUMBER},
    EventName.OVERDRAFT_ENDED: {"balance": _NUMBER},
    EventName.PRODUCTS_SEARCHED: {"query": _TEXT},
    EventName.CALLBACK_REQUESTED: {"callback_id": _TEXT},
    # ``account``: ``current`` (the default) or ``savings``; ``category``: ``overdraft_fee``
    # for a fee; ``merchant``: who was paid (monthly payments to one merchant at one amount
    # are a subscription: ``profile.banking``)
    EventName.TRANSACTION_POSTED: {
        "amount": _NUMBER,
        "currency": _TEXT,
        "balance": _NUMBER,
        "account": _TEXT,
        "category": _TEXT,
        "merchant": _TEXT,
    },
    EventName.BALANCE_UPDATED: {"account": _TEXT, "currency": _TEXT},
    EventName.OVERDRAFT_PROTECTION_ENABLED: {"limit": _NUMBER, "currency": _TEXT},
    EventName.SAVINGS_TRANSFER: {"amount": _NUMBER, "currency": _TEXT},
    EventName.SUBSCRIPTION_REVIEWED: {"merchant": _TEXT},
}

#: events that say nothing about interest in a topic, whatever properties they carry
NOT_INTEREST: frozenset[str] = frozenset(
    {
        EventName.PRODUCT_CLOSED,
        EventName.PROMOTION_VIEWED,
        EventName.PROMOTION_CLICKED,
        EventName.PROMOTION_DISMISSED,
        EventName.CONSENT_UPDATED,
        *CALLBACK_STEPS,
    }
)

#: facts only the bank's systems may assert: a browser key may not send them
SERVER_ONLY_EVENTS: frozenset[str] = frozenset(
    {
        EventName.APPLICATION_COMPLETED,
        EventName.BALANCE_UPDATED,
        *CALLBACK_STEPS,
        EventName.OVERDRAFT_ENDED,
        EventName.OVERDRAFT_STARTED,
        EventName.OVERDRAFT_PROTECTION_ENABLED,
        EventName.PRODUCT_CLOSED,
        EventName.PRODUCT_OPENED,
        EventName.SALARY_RECEIVED,
        EventName.SAVINGS_TRANSFER,
        EventName.TRANSACTION_POSTED,
    }
)
#: traits only the bank's systems may set: what it knows of a customer's accounts, money,
#: standing and checks (a browser key setting one is a 403)
SERVER_ONLY_TRAITS: frozenset[str] = frozenset(
    {
        "products",
        "balance",
        "overdrawn",
        "last_salary",
        "salary",
        "income",
        "credit_score",
        "credit_limit",
        "risk_class",
        "kyc_status",
        "pep",
        "customer_since",
    }
)
