"""profile = fold(events): apply one event to a profile. Pure code, no I/O, no clock.

The same events in the same order always give the same profile; the event log is the truth
and ``nextbest replay`` rebuilds every profile from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.profile.banking import (
    FEE_CATEGORY,
    Banking,
    note_balance,
    note_fee,
    note_overdrawn,
    note_payment,
    note_review,
)
from nextbest.profile.consent import (
    ALL_PURPOSES,
    EVENT_SOURCES,
    TRAIT_SOURCES,
    DataSource,
    apply_consent,
)
from nextbest.profile.interest import add_to_score
from nextbest.profile.kpis import KpiWatch, record_kpi
from nextbest.profile.model import (
    FunnelStage,
    OfferHistory,
    Profile,
    RecentEvent,
    Session,
    SourceActivity,
    TopicInterest,
)
from nextbest.profile.topics import TopicMatcher
from nextbest.profile.windows import DAY, add_hit

__all__ = [
    "CONSENT_PURPOSES",
    "LEGACY_ACTIVITY",
    "FoldConfig",
    "Watcher",
    "activity_key",
    "activity_keys",
    "fold",
]

#: the purposes a customer may consent to; ``advisor_contact``: being invited to a call with
#: an advisor (the advisor card; unset, it follows ``marketing``: ``advisors.card``)
CONSENT_PURPOSES = ALL_PURPOSES

_FUNNEL_BY_EVENT: dict[str, FunnelStage] = {
    EventName.CALCULATOR_USED: FunnelStage.CONSIDERING,
    EventName.CALLBACK_REQUESTED: FunnelStage.CONSIDERING,
    EventName.APPLICATION_STARTED: FunnelStage.APPLYING,
    EventName.APPLICATION_SUBMITTED: FunnelStage.SUBMITTED,
    EventName.APPLICATION_COMPLETED: FunnelStage.CUSTOMER,
    EventName.PRODUCT_OPENED: FunnelStage.CUSTOMER,
}
#: ``Profile.by_source``'s key of the counts a profile held before they were split by source
LEGACY_ACTIVITY = "*"
_BEHAVIORAL = DataSource.BEHAVIORAL.value
_TRACK, _PAGE = EventType.TRACK, EventType.PAGE
#: the enum members and names the fold tells apart per event, looked up once: in Python
#: 3.11 each ``EventType.X`` read goes through the enum metaclass's ``__getattr__`` hook
_IDENTIFY, _SCREEN = EventType.IDENTIFY, EventType.SCREEN
_VIEWS = (_PAGE, _SCREEN, _TRACK)
_OPENED = str(EventName.PRODUCT_OPENED)
_CLOSED = str(EventName.PRODUCT_CLOSED)
_CONSENT = str(EventName.CONSENT_UPDATED)
_LIFE = str(EventName.LIFE_EVENT)
_REVIEWED = str(EventName.SUBSCRIPTION_REVIEWED)
_SALARY = str(EventName.SALARY_RECEIVED)
_PROMOTION: dict[str, str] = {
    EventName.PROMOTION_VIEWED: "impressions",
    EventName.PROMOTION_CLICKED: "clicks",
    EventName.PROMOTION_DISMISSED: "dismissals",
}


class Watcher(Protocol):
    """What else folds each event into a profile, after the profile's own fold: the
    identity-theft guard (``guard.watch.Guard``). Equal watchers fold alike (``folds_alike``
    compares fold settings across catalog reloads)."""

    def observe(self, profile: Profile, event: Event) -> None: ...


class FoldConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Knobs of the fold; they come from the catalog's ``profile`` section."""

    page_weight: float = 1.0
    track_weight: float = 2.0
    event_weights: dict[str, float] = {}
    session_timeout: float = 30 * 60.0
    recent_size: int = 20
    life_event_size: int = 20
    #: the catalog's offers: feedback naming any other promotion is not kept (no unbounded
    #: history from made-up ids); empty means keep all
    offer_ids: frozenset[str] = frozenset()
    #: event name -> the campaign KPIs of that event whose windows are kept (``kpis``)
    kpi_events: dict[str, tuple[KpiWatch, ...]] = {}
    #: the identity-theft guard (the catalog's ``security`` section), if any
    watch: Watcher | None = None
    #: each track event's data source (``profile.consent``; an event named nowhere is
    #: behavioral): only behavioral events count as interest; others touching a topic only
    #: move its funnel, and only those with a stage of their own (``Product Opened``)
    event_sources: dict[str, DataSource | None] = msgspec.field(
        default_factory=lambda: dict(EVENT_SOURCES)
    )
    #: each trait's data source (``profile.consent``; a trait named nowhere is crm): what an
    #: identify's activity counts under
    trait_sources: dict[str, str] = msgspec.field(
        default_factory=lambda: {k: v.value for k, v in TRAIT_SOURCES.items()}
    )
    #: ``event_sources`` as the ``Profile.by_source`` keys a track event counts under
    #: (``activity_keys``: plain strings, no enum hashed per event)
    event_keys: dict[str, str] = msgspec.field(default_factory=lambda: activity_keys(EVENT_SOURCES))


def activity_keys(sources: Mapping[str, DataSource | None]) -> dict[str, str]:
    """Each named track event's ``Profile.by_source`` key: its source, behavioral for an
    event of no customer data source (``activity_key``)."""
    return {name: _BEHAVIORAL if s is None else s.value for name, s in sources.items()}


def activity_key(event: Event, cfg: FoldConfig) -> str:
    """The ``Profile.by_source`` key ``event``'s activity counts under: a track event's
    source (an event of no customer data source, consent or offer feedback, is something the
    customer did on the site or app: behavioral); an identify's or a group's, its traits'
    sources (several: joined by ``+``, read only where all are allowed; none but consent:
    behavioral); a page, a screen, an alias: behavioral."""
    kind = event.type
    if kind is EventType.TRACK:
        return cfg.event_keys.get(event.name or "", _BEHAVIORAL)
    if kind is EventType.IDENTIFY or kind is EventType.GROUP:
        traits = event.traits
        if not traits:
            return _BEHAVIORAL
        known = cfg.trait_sources
        found = {known.get(k, "crm") for k in traits if k != "consent"}
        if not found:
            return _BEHAVIORAL
        return found.pop() if len(found) == 1 else "+".join(sorted(found))
    return _BEHAVIORAL


def _interest(profile: Profile, topic: str, when: float, weight: float, half_life: float) -> None:
    it = profile.interests.get(topic)
    if it is None:
        it = profile.interests[topic] = TopicInterest(first_seen=when, last_seen=when)
    it.score, it.score_at = add_to_score(it.score, it.score_at, when, weight, half_life)
    add_hit(it.hits, when)
    it.total += 1
    if when < it.first_seen:  # min() and max() of two cost more than their comparison
        it.first_seen = when
    if when > it.last_seen:
        it.last_seen = when


def _advance_funnel(profile: Profile, topic: str, stage: FunnelStage) -> None:
    if stage > profile.funnel.get(topic, FunnelStage.NONE):
        profile.funnel[topic] = stage


def _set_products(profile: Profile, products: Any, matcher: TopicMatcher) -> None:
    if isinstance(products, list):
        profile.products = sorted({str(p) for p in products})
        for p in profile.products:
            topic = matcher.topic_of_product(p)
            if topic:
                _advance_funnel(profile, topic, FunnelStage.CUSTOMER)


def _consent(profile: Profile, payload: Any, event: Event, origin: str, basis: Any = None) -> None:
    """A consent payload (``profile.consent.apply_consent``) set at the event's time; the
    event's own ``origin`` property (the consent route's) overrides ``origin``."""
    if not isinstance(payload, dict):
        return
    said = event.properties.get("origin")
    apply_consent(
        profile.consent,
        profile.grants,
        payload,
        at=event.timestamp,
        origin=said if isinstance(said, str) and said else origin,
        basis=basis,
    )


def _identify(profile: Profile, event: Event, matcher: TopicMatcher) -> None:
    traits = dict(event.traits)
    consent = traits.pop("consent", None)
    products = traits.pop("products", None)
    profile.traits.update(traits)
    _consent(profile, consent, event, "identify")
    _set_products(profile, products, matcher)
    balance = traits.get("balance")
    if isinstance(balance, int | float) and not isinstance(balance, bool):
        profile.balance = float(balance)
        profile.overdrawn = balance < 0


def _track(profile: Profile, event: Event, matcher: TopicMatcher, cfg: FoldConfig) -> None:
    name, props, when = event.name or "", event.properties, event.timestamp
    if name in _PROMOTION:
        offer = str(props["promotion_id"])
        if cfg.offer_ids and offer not in cfg.offer_ids:
            return
        hist = profile.offers.get(offer)
        if hist is None:
            hist = profile.offers[offer] = OfferHistory()
        field = _PROMOTION[name]
        add_hit(getattr(hist, field), when)
        setattr(hist, f"total_{field}", getattr(hist, f"total_{field}") + 1)
        hist.last_decision_id = str(props.get("decision_id") or hist.last_decision_id or "")
        return
    product = props.get("product")
    if name == _OPENED and isinstance(product, str):
        profile.products = sorted({*profile.products, product})
    elif name == _CLOSED and isinstance(product, str):
        profile.products = [p for p in profile.products if p != product]
        topic = matcher.topic_of_product(product)
        if topic and profile.funnel.get(topic) is FunnelStage.CUSTOMER:
            profile.funnel[topic] = FunnelStage.NONE
    elif name == _CONSENT:
        _consent(profile, props.get("purposes"), event, "event", props.get("basis"))
    elif name == _LIFE:
        profile.life_events.append((when, str(props["type"])))
        profile.life_events.sort()
        del profile.life_events[: -cfg.life_event_size]
    elif name in _MONEY:
        _money(profile, name, props, when)
    elif name == _REVIEWED and profile.banking is not None:
        note_review(profile.banking, props.get("merchant"))
    elif name == _SALARY:
        profile.traits["last_salary"] = props["amount"]


def _topics(
    profile: Profile, event: Event, topics: list[str], matcher: TopicMatcher, cfg: FoldConfig
) -> None:
    """Interest and funnel in the topics ``event`` is about. Interest is behaviour: only
    pages, screens and behavioral track events count; a core-banking or CRM event moves a
    funnel only where it has a stage of its own (``Product Opened``: customer)."""
    name = event.name or ""
    if event.type is _TRACK:
        if cfg.event_sources.get(name, DataSource.BEHAVIORAL) is not DataSource.BEHAVIORAL:
            stage = _FUNNEL_BY_EVENT.get(name)
            if stage is not None:
                for topic in topics:
                    _advance_funnel(profile, topic, stage)
            return
        weight = cfg.event_weights.get(name, cfg.track_weight)
    else:
        weight = cfg.page_weight
    stage = _FUNNEL_BY_EVENT.get(name, FunnelStage.RESEARCHING)
    for topic in topics:
        spec = matcher.topics[topic]
        _interest(profile, topic, when=event.timestamp, weight=weight, half_life=spec.half_life)
        _advance_funnel(profile, topic, stage)


_MONEY = frozenset(
    {
        EventName.OVERDRAFT_STARTED,
        EventName.OVERDRAFT_ENDED,
        EventName.BALANCE_UPDATED,
        EventName.TRANSACTION_POSTED,
    }
)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


#: the event names ``_money`` tells apart, as plain strings (no enum lookup per event)
_POSTED = str(EventName.TRANSACTION_POSTED)
_STARTED = str(EventName.OVERDRAFT_STARTED)
_ENDED = str(EventName.OVERDRAFT_ENDED)


def _money(profile: Profile, name: str, props: dict[str, Any], when: float) -> None:
    """A core-banking event (the transactional source): the balance and overdraft flag, and
    ``profile.banking``'s fees, spells, daily balances and monthly payments."""
    b = profile.banking
    if b is None:
        b = profile.banking = Banking()
    balance = _number(props.get("balance"))
    if name == _POSTED:
        amount = _number(props.get("amount"))
        if amount is not None:
            if props.get("category") == FEE_CATEGORY:
                note_fee(b, when, amount)
            merchant = props.get("merchant")
            if merchant.__class__ is str and merchant:
                note_payment(b, when, merchant, amount)
    if balance is not None:
        account = props.get("account")
        note_balance(b, when, balance, account)
        if account == "savings":
            return  # the savings account: not the balance an overdraft is about
        profile.balance = balance
    if name == _STARTED:
        profile.overdrawn = True
    elif name == _ENDED:
        profile.overdrawn = False
    elif balance is not None:
        profile.overdrawn = balance < 0
    if (b.overdrawn_since is not None) is not profile.overdrawn:
        note_overdrawn(b, when, profile.overdrawn)


def _session(profile: Profile, event: Event, cfg: FoldConfig, source: SourceActivity) -> None:
    """A new session starts after ``session_timeout`` of inactivity; late events join. The
    same for the event's source alone (``source``: its sessions cut by its own events)."""
    when = event.timestamp
    if not source.sessions or when - source.last > cfg.session_timeout:
        source.sessions += 1
    if when > source.last:
        source.last = when
    s = profile.session
    if s is None or when - s.last_seen > cfg.session_timeout:
        channel = event.context.get("channel") if event.context else None
        s = profile.session = Session(
            started=when,
            last_seen=when,
            channel=channel if isinstance(channel, str) else None,
        )
        profile.sessions += 1
    if when > s.last_seen:
        s.last_seen = when
    s.events += 1


def _split(profile: Profile) -> dict[str, SourceActivity]:
    """``profile.by_source``, made on the first event: empty for a new profile; for a
    profile folded before the split, its counts so far under ``LEGACY_ACTIVITY`` (of
    unknown sources: read only by a view that hides no event source)."""
    split = profile.by_source
    if split is None:
        split = profile.by_source = {}
        if profile.event_count:
            s = profile.session
            split[LEGACY_ACTIVITY] = SourceActivity(
                events=profile.event_count,
                sessions=profile.sessions,
                last=s.last_seen if s is not None else profile.last_seen,
                activity=list(profile.activity),
            )
    return split


def _count_source(profile: Profile, event: Event, cfg: FoldConfig) -> SourceActivity:
    """The event in its source's counters (``activity_key``, inlined for the usual kinds):
    events and, but for behavioral events (the profile's ``activity`` less the others'),
    the 30-day event times; the entry, whose sessions ``_session`` counts."""
    split = profile.by_source
    if split is None:
        split = _split(profile)
    kind = event.type
    if kind is _TRACK:
        key = cfg.event_keys.get(event.name or "", _BEHAVIORAL)
    elif kind is _PAGE:
        key = _BEHAVIORAL
    else:
        key = activity_key(event, cfg)
    entry = split.get(key)
    if entry is None:
        entry = split[key] = SourceActivity()
    entry.events += 1
    if key != _BEHAVIORAL:
        add_hit(entry.activity, event.timestamp, 30 * DAY)
    return entry


def _first_key(profile: Profile, event: Event) -> None:
    """The stable experiment id: the key of the earliest event (the smaller key on a tie),
    a minimum over the events folded, so the same whatever order they are folded in (a live
    stitch, a rebuild, a replay)."""
    at = event.timestamp
    current = profile.experiment_id
    if current and at > profile.experiment_at:
        return  # later than the earliest: whatever its key, not the minimum
    key = event.user_id or "anon:" + (event.anonymous_id or "")
    if not current or (at, key) < (profile.experiment_at, current):
        profile.experiment_id, profile.experiment_at = key, at


def fold(profile: Profile, event: Event, matcher: TopicMatcher, cfg: FoldConfig) -> list[str]:
    """Apply ``event`` to ``profile`` in place; returns the topics the event touched."""
    when = event.timestamp
    if event.user_id and profile.user_id is None and not profile.customer_id.startswith("anon:"):
        profile.user_id = event.user_id
    if event.anonymous_id and event.anonymous_id not in profile.anonymous_ids:
        profile.anonymous_ids.append(event.anonymous_id)
    source = _count_source(profile, event, cfg)
    profile.event_count += 1
    # min() and max() of two cost more than their comparison, on every event
    if profile.event_count == 1 or when < profile.first_seen:
        profile.first_seen = when
    _first_key(profile, event)
    if when > profile.last_seen:
        profile.last_seen = when
    add_hit(profile.activity, when, 30 * DAY)

    topics: list[str] = []
    kind = event.type
    if kind is _IDENTIFY:
        _identify(profile, event, matcher)
    elif kind is _TRACK:
        _track(profile, event, matcher, cfg)
    if kind in _VIEWS:
        _session(profile, event, cfg, source)
        topics = matcher.match(event)
        if topics:
            _topics(profile, event, topics, matcher, cfg)
    if event.name is not None and cfg.kpi_events:
        watches = cfg.kpi_events.get(event.name)
        if watches:
            record_kpi(profile, event, watches)
    profile.recent.append(RecentEvent(when, str(kind), event.name, topics))
    if len(profile.recent) > cfg.recent_size:
        del profile.recent[0]
    if cfg.watch is not None:
        cfg.watch.observe(profile, event)
    return topics
