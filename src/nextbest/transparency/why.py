"""Why a customer saw what a decision showed them, in their language (``GET
/v1/me/why/{decision_id}``). Pure: a logged decision and the catalog in.

Each item says what it was (its title), why (its reasons, said again from their facts:
``transparency.reasons``), and which data it was chosen from: the data sources of the
features deciding on it read (``DecisionItem.sources`` and ``features``: only those the
customer's consent let it read), each source named and explained in plain words. Where a
learned model scored the decision, its inputs are listed once for the whole decision (the
model reads the same customer features for every item). Content chosen from nothing about
the customer (a placement's fallback) says so.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from nextbest.catalog.compiled import Catalog
from nextbest.decide.model import Decision, DecisionItem
from nextbest.profile.consent import SECURITY_DATA, DataSource
from nextbest.transparency.reasons import say_reason
from nextbest.transparency.texts import say

__all__ = ["SourceUse", "WhyItem", "WhyPage", "model_sources", "why"]


class SourceUse(msgspec.Struct, frozen=True, kw_only=True):
    """A data source a decision read, named and explained."""

    source: str
    name: str
    about: str


class WhyItem(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    offer_id: str
    title: str
    reasons: list[str]
    #: the data this item was chosen from (empty: nothing about the customer)
    sources: list[SourceUse]
    features: list[str]
    #: said when ``sources`` is empty
    note: str | None = None


class WhyPage(msgspec.Struct, frozen=True, kw_only=True):
    decision_id: str
    placement: str
    #: when the decision was made (ISO 8601, UTC)
    decided_at: str
    language: str
    title: str
    items: list[WhyItem]
    #: a learned model's inputs, the same for every item (empty: the catalog's prior scored)
    model_features: list[str]
    model_sources: list[SourceUse]


#: a learned model's feature prefix (``learn.features``) -> its data source; ``bias`` and a
#: candidate's own history (the bank's contact history) have none
_MODEL_SOURCES: dict[str, str] = {
    "interest": DataSource.BEHAVIORAL,
    "count1h": DataSource.BEHAVIORAL,
    "count1d": DataSource.BEHAVIORAL,
    "count7": DataSource.BEHAVIORAL,
    "count30": DataSource.BEHAVIORAL,
    "recency": DataSource.BEHAVIORAL,
    "trend": DataSource.BEHAVIORAL,
    "funnel": DataSource.BEHAVIORAL,
    "page": DataSource.CONTEXTUAL,
    "overdrawn": DataSource.TRANSACTIONAL,
    "life": DataSource.CRM,
    "product": DataSource.CRM,
    "segment": DataSource.CRM,
    "lifecycle": DataSource.CRM,
    "age": DataSource.CRM,
    "device": DataSource.CONTEXTUAL,
    "channel": DataSource.CONTEXTUAL,
    "how": DataSource.CONTEXTUAL,
}


def model_sources(features: list[str] | dict[str, float]) -> list[str]:
    """The data sources of a learned model's inputs (``Decision.features``' names)."""
    out = {_MODEL_SOURCES.get(name.partition(":")[0]) for name in features}
    return sorted(str(s) for s in out if s is not None)


def _source(source: str, language: str) -> SourceUse:
    known = source in DataSource.__members__.values() or source == SECURITY_DATA
    key = f"source.{source}" if known else "source.crm"
    return SourceUse(source=source, name=say(key, language), about=say(f"{key}.about", language))


def _title(item: DecisionItem, catalog: Catalog) -> str:
    title = item.content.get("title")
    if isinstance(title, str) and title:
        return title
    offer = catalog.offers.get(item.offer_id)
    return offer.spec.name if offer is not None else item.offer_id


def _item(item: DecisionItem, catalog: Catalog, language: str) -> WhyItem:
    sources = [_source(s, language) for s in item.sources]
    return WhyItem(
        position=item.position,
        offer_id=item.offer_id,
        title=_title(item, catalog),
        reasons=[say_reason(r, catalog, language) for r in item.reasons],
        sources=sources,
        features=list(item.features),
        note=None if sources else say("why.nothing_personal", language),
    )


def why(decision: Decision, catalog: Catalog, language: str) -> WhyPage:
    """The customer's answer to "why did I see this?" for ``decision``, in ``language``."""
    learned = decision.model_version != "prior"
    features = sorted(decision.features) if learned else []
    return WhyPage(
        decision_id=decision.decision_id,
        placement=decision.placement,
        decided_at=dt.datetime.fromtimestamp(decision.timestamp, dt.UTC).isoformat(),
        language=language,
        title=say("why.title", language),
        items=[_item(item, catalog, language) for item in decision.items],
        model_features=features,
        model_sources=[_source(s, language) for s in model_sources(features)],
    )
