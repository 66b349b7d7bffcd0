"""The decision log joined to what customers did: one row per shown item with its rewards.

``clicked``: a ``Promotion Clicked`` answered this item (feedback was checked against the
decision when it arrived). ``converted``: after that click, the same customer sent the
offer's KPI event (``kpi_event`` in the catalog; when the event names a ``product``, it must
be a product of the offer's topic) within the campaign's ``attribution_days`` (7 days for an
offer without a campaign). One KPI event converts one click: the latest before it.

A customer who clicked anonymously and converted after logging in is matched when the
conversion still carries the device's anonymousId. Pure: decisions and events in, rows out.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable

import msgspec

from nextbest.catalog.load import Catalog
from nextbest.decide.model import Decision
from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.profile.identity import ANON_PREFIX

__all__ = ["DEFAULT_ATTRIBUTION_DAYS", "LoggedItem", "join_rewards"]

DEFAULT_ATTRIBUTION_DAYS = 7.0
_DAY = 86_400.0


class LoggedItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    decision_id: str
    timestamp: float
    customer_id: str
    placement: str
    position: int
    offer_id: str
    propensity: float
    #: "exact", or an estimate (see ``DecisionItem.propensity_kind``)
    propensity_kind: str = "exact"
    clicked: bool
    converted: bool
    #: what the choice was made among, and the features it was scored from
    candidates: list[str] = []
    features: dict[str, float] = {}
    model_version: str = "prior"


def _who(event: Event) -> list[str]:
    keys = []
    if event.user_id:
        keys.append(event.user_id)
    if event.anonymous_id:
        keys.append(ANON_PREFIX + event.anonymous_id)
    return keys


def join_rewards(
    decisions: Iterable[Decision], events: Iterable[Event], catalog: Catalog
) -> list[LoggedItem]:
    """Every shown item of ``decisions`` with its click and conversion (see the module)."""
    clicks: dict[tuple[str, str], float] = {}
    kpis: dict[tuple[str, str], list[tuple[float, str | None]]] = defaultdict(list)
    kpi_names = {o.spec.kpi_event for o in catalog.offers.values() if o.spec.kpi_event}
    for event in events:
        if event.type is not EventType.TRACK or event.name is None:
            continue
        if event.name == EventName.PROMOTION_CLICKED:
            key = (
                str(event.properties.get("decision_id")),
                str(event.properties.get("promotion_id")),
            )
            clicks.setdefault(key, event.timestamp)
        elif event.name in kpi_names:
            product = event.properties.get("product")
            for who in _who(event):
                kpis[(who, event.name)].append(
                    (event.timestamp, product if isinstance(product, str) else None)
                )
    for found in kpis.values():
        found.sort(key=lambda kp: kp[0])

    rows: list[LoggedItem] = []
    #: (customer, KPI name, KPI index) -> (click time, row): a KPI converts one click only,
    #: the latest before it
    credited: dict[tuple[str, str, int], tuple[float, int]] = {}
    for d in decisions:
        for item in d.items:
            clicked_at = clicks.get((d.decision_id, item.offer_id))
            offer = catalog.offers.get(item.offer_id)
            if clicked_at is not None and offer is not None and offer.spec.kpi_event:
                camp = offer.campaign
                window = (camp.attribution_days if camp else DEFAULT_ATTRIBUTION_DAYS) * _DAY
                found = kpis.get((d.customer_id, offer.spec.kpi_event), [])
                k = bisect.bisect_left(found, clicked_at, key=lambda kp: kp[0])
                for j in range(k, len(found)):
                    at, product = found[j]
                    if at > clicked_at + window:
                        break
                    topic = catalog.matcher.topic_of_product(product) if product else None
                    if product is None or topic == offer.topic:
                        kpi = (d.customer_id, offer.spec.kpi_event, j)
                        if kpi not in credited or credited[kpi][0] < clicked_at:
                            credited[kpi] = (clicked_at, len(rows))
                        break
            rows.append(
                LoggedItem(
                    decision_id=d.decision_id,
                    timestamp=d.timestamp,
                    customer_id=d.customer_id,
                    placement=d.placement,
                    position=item.position,
                    offer_id=item.offer_id,
                    propensity=item.propensity,
                    propensity_kind=item.propensity_kind,
                    clicked=clicked_at is not None,
                    converted=False,
                    candidates=d.candidates,
                    features=d.features,
                    model_version=d.model_version,
                )
            )
    for _, row in credited.values():
        rows[row] = msgspec.structs.replace(rows[row], converted=True)
    return rows
