"""The decision log joined to what customers did: one row per shown item with its rewards.

``clicked``: a ``Promotion Clicked`` answered this item (feedback was checked against the
decision when it arrived). ``converted``: after that click, the same customer sent the
offer's KPI event (``kpi_event`` in the catalog; when the event names a ``product``, it must
be a product of the offer's topic, and a ``topic`` the offer's: ``conversion.kpi_topic``)
within the campaign's ``attribution_days`` (7 days for an offer without a campaign). One KPI
event converts one click: the latest before it.

Identities are stitched as the engine stitches them (``identify`` links an anonymousId to a
userId, ``alias`` a previous id), from the same events: a customer decided for and clicking
anonymously who converts after logging in (a server-side KPI event with the userId alone)
is matched. Pure: decisions and events in, rows out.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable

import msgspec

from nextbest.catalog.compiled import Catalog
from nextbest.decide.model import Decision, PropensityKind
from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.learn.conversion import ANY_TOPIC, kpi_topic
from nextbest.profile.identity import IdentityMap

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
    propensity_kind: PropensityKind = PropensityKind.EXACT
    clicked: bool
    converted: bool
    #: what the choice was made among, and the features it was scored from
    candidates: list[str] = []
    features: dict[str, float] = {}
    model_version: str = "prior"
    #: the candidates that were urgent (``Decision.urgent``)
    urgent: list[str] = []
    #: the fallback content that could fill empty slots (``Decision.fallback``)
    fallback: list[str] = []
    #: the candidates the exploration budget kept from exploring: pinned to their greedy
    #: slot, or not placed (``Decision.unexplorable``)
    unexplorable: list[str] = []
    #: what the decision estimated: P(click) and P(conversion | click) (None: not logged)
    p_click: float | None = None
    p_convert: float | None = None


def join_rewards(
    decisions: Iterable[Decision], events: Iterable[Event], catalog: Catalog
) -> list[LoggedItem]:
    """Every shown item of ``decisions`` with its click and conversion (see the module)."""
    clicks: dict[tuple[str, str], float] = {}
    kpi_events: list[Event] = []
    kpi_names = {o.spec.kpi_event for o in catalog.offers.values() if o.spec.kpi_event}
    identity = IdentityMap()
    for event in events:
        identity.link(event)
        if event.type is not EventType.TRACK or event.name is None:
            continue
        if event.name == EventName.PROMOTION_CLICKED:
            key = (
                str(event.properties.get("decision_id")),
                str(event.properties.get("promotion_id")),
            )
            clicks.setdefault(key, event.timestamp)
        elif event.name in kpi_names and (event.user_id or event.anonymous_id):
            kpi_events.append(event)
    kpis: dict[tuple[str, str], list[tuple[float, str | None]]] = defaultdict(list)
    for event in kpi_events:  # by the stitched customer, once every link is known
        assert event.name is not None
        who = identity.resolve(event.user_id, event.anonymous_id)
        about = kpi_topic(event.properties, catalog.matcher.topic_of_product)
        kpis[(who, event.name)].append((event.timestamp, about))
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
                who = identity.resolve_key(d.customer_id)
                found = kpis.get((who, offer.spec.kpi_event), [])
                k = bisect.bisect_left(found, clicked_at, key=lambda kp: kp[0])
                for j in range(k, len(found)):
                    at, about = found[j]
                    if at > clicked_at + window:
                        break
                    if about in (ANY_TOPIC, offer.topic):
                        kpi = (who, offer.spec.kpi_event, j)
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
                    urgent=d.urgent,
                    fallback=d.fallback,
                    unexplorable=d.unexplorable,
                    p_click=item.p_click,
                    p_convert=item.p_convert,
                )
            )
    for _, row in credited.values():
        rows[row] = msgspec.structs.replace(rows[row], converted=True)
    return rows
