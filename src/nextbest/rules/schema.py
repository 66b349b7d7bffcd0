"""The type of every variable a rule can see: what the rule type checker
(``rules.typecheck``) checks rules against.

The field names come from the tables that compute them (``rules.reads``: ``PROFILE_FIELDS``,
``INTEREST_FIELDS``, ``OFFER_FIELDS``; ``rules.context``: the roots, lifecycles and
engagement levels); this module gives each its type. A field added to a table without a
type here fails the first catalog compile (a KeyError naming it), and a test holds every
value ``rule_variables`` computes to the type declared here.

The catalog's names (topics, segments, offers) are keys of ``interest``, ``segments`` and
``offers``: ``rule_schema`` is called with them.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from nextbest.profile.baseline import Signal
from nextbest.profile.fold import CONSENT_PURPOSES
from nextbest.profile.interest import Trend
from nextbest.profile.model import FunnelStage
from nextbest.rules.context import ENGAGEMENTS, LIFECYCLES, RULE_ROOTS
from nextbest.rules.reads import INTEREST_FIELDS, OFFER_FIELDS, PROFILE_FIELDS, SECURITY_FIELDS

__all__ = [
    "BOOL",
    "BYTES",
    "DOUBLE",
    "DURATION",
    "DYN",
    "INT",
    "NOW_FIELDS",
    "NULL",
    "SECURITY_TYPES",
    "STRING",
    "TIMESTAMP",
    "Kind",
    "RuleType",
    "list_of",
    "map_of",
    "record",
    "rule_schema",
]


class Kind(enum.StrEnum):
    BOOL = "bool"
    INT = "int"
    DOUBLE = "double"
    STRING = "string"
    NULL = "null"
    BYTES = "bytes"
    TIMESTAMP = "timestamp"
    DURATION = "duration"
    LIST = "list"
    MAP = "map"
    #: not known before the rule runs (``traits``, ``context``): anything goes
    DYN = "dyn"


_ARTICLE = {Kind.INT: "an int", Kind.NULL: "null", Kind.DYN: "a value of any type"}


@dataclass(frozen=True, eq=False, slots=True)
class RuleType:
    """A rule value's type. A map with ``fields`` is a record: only those keys exist
    (``catalog``: they are names the catalog defines, such as topics); ``item`` is a list's
    element or an open map's value; ``values`` the only strings a string field takes."""

    kind: Kind
    item: RuleType | None = None
    fields: Mapping[str, RuleType] | None = None
    catalog: bool = False
    values: tuple[str, ...] | None = None

    @property
    def numeric(self) -> bool:
        return self.kind is Kind.INT or self.kind is Kind.DOUBLE

    @property
    def described(self) -> str:
        """``an int``, ``a string``, ``a list`` ... for messages."""
        return _ARTICLE.get(self.kind, f"a {self.kind.value}")


BOOL = RuleType(Kind.BOOL)
INT = RuleType(Kind.INT)
DOUBLE = RuleType(Kind.DOUBLE)
STRING = RuleType(Kind.STRING)
NULL = RuleType(Kind.NULL)
BYTES = RuleType(Kind.BYTES)
TIMESTAMP = RuleType(Kind.TIMESTAMP)
DURATION = RuleType(Kind.DURATION)
DYN = RuleType(Kind.DYN)


def list_of(item: RuleType) -> RuleType:
    return RuleType(Kind.LIST, item=item)


def map_of(item: RuleType) -> RuleType:
    """A map with string keys not known in advance."""
    return RuleType(Kind.MAP, item=item)


def record(fields: Mapping[str, RuleType], *, catalog: bool = False) -> RuleType:
    """A map whose only keys are ``fields``."""
    return RuleType(Kind.MAP, fields=dict(fields), catalog=catalog)


def _one_of(values: Collection[str]) -> RuleType:
    return RuleType(Kind.STRING, values=tuple(values))


_FUNNEL = _one_of([stage.label for stage in FunnelStage])

#: the type of each ``PROFILE_FIELDS`` field but ``funnel`` (keyed by the catalog's topics)
_PROFILE_TYPES: dict[str, RuleType] = {
    "customer_id": STRING,
    "known": BOOL,
    "age": INT,
    "lifecycle": _one_of(LIFECYCLES),
    "engagement": _one_of(ENGAGEMENTS),
    "overdrawn": BOOL,
    "balance": DOUBLE,
    "sessions": INT,
    "events": INT,
    "life_events": list_of(record({"type": STRING, "days_ago": DOUBLE})),
    # a purpose the customer never set is absent: has(profile.consent.marketing)
    "consent": record(dict.fromkeys(CONSENT_PURPOSES, BOOL)),
    # core banking (the transactional source): ``profile.banking``
    "overdraft_fees_90d": INT,
    "overdraft_fees_paid_90d": DOUBLE,
    "overdrawn_days_90d": DOUBLE,
    "idle_cash_30d": DOUBLE,
    "idle_cash_90d": DOUBLE,
    "savings_balance": DOUBLE,
    "price_rises_90d": INT,
    "price_rise_monthly_90d": DOUBLE,
    "price_rise_merchant": STRING,
    "price_rise_before": DOUBLE,
    "price_rise_after": DOUBLE,
}

#: the type of each ``INTEREST_FIELDS`` field (one topic's interest)
_INTEREST_TYPES: dict[str, RuleType] = {
    "score": DOUBLE,
    "total": INT,
    "first_seen_days": DOUBLE,
    "last_seen_days": DOUBLE,
    "trend": _one_of([t.value for t in Trend]),
}

#: the type of each ``OFFER_FIELDS`` field (one offer's history): all counts
_OFFER_TYPES: dict[str, RuleType] = dict.fromkeys(OFFER_FIELDS, INT)

#: ``now``: the decision's time, UTC
NOW_FIELDS: dict[str, RuleType] = {
    "epoch": DOUBLE,
    "hour": INT,
    "weekday": INT,
    "day": INT,
    "month": INT,
    "year": INT,
}


#: ``security``: what the identity-theft guard found in the live session (service messages
#: only: ``catalog.compile``)
SECURITY_TYPES: dict[str, RuleType] = {
    "risk": DOUBLE,
    "flagged": BOOL,
    "signals": list_of(_one_of([s.value for s in Signal])),
}
assert set(SECURITY_TYPES) == set(SECURITY_FIELDS), "every security field has a type"


def _interest_type(field: str) -> RuleType:
    return INT if field.startswith("count_") else _INTEREST_TYPES[field]


def rule_schema(
    topics: Collection[str], segments: Collection[str], offers: Collection[str]
) -> dict[str, RuleType]:
    """Each root a rule may read, typed, for a catalog with these topics, segments and
    offers."""
    topic = record({f: _interest_type(f) for f in INTEREST_FIELDS})
    history = record({f: _OFFER_TYPES[f] for f in OFFER_FIELDS})
    funnel = RuleType(Kind.MAP, fields=dict.fromkeys(topics, _FUNNEL), catalog=True)
    profile = record({f: funnel if f == "funnel" else _PROFILE_TYPES[f] for f in PROFILE_FIELDS})
    schema = {
        "profile": profile,
        "interest": record(dict.fromkeys(topics, topic), catalog=True),
        "products": list_of(STRING),
        "traits": map_of(DYN),
        "offers": record(dict.fromkeys(offers, history), catalog=True),
        "segments": record(dict.fromkeys(segments, BOOL), catalog=True),
        "context": map_of(DYN),
        "now": record(NOW_FIELDS),
        "security": record(SECURITY_TYPES),
    }
    assert set(schema) == RULE_ROOTS, "every root rules may use has a type"
    return schema
