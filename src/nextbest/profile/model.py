"""The profile: traits, interests, funnel, offer history, consent, session, recent events.

Everything here is folded from events (see ``fold.py``); a profile can always be rebuilt by
replaying the event log. Structs are msgspec so snapshots encode fast and compactly, and
``gc=False``: profiles hold no reference cycles, so the cyclic collector need not walk a
million of them (its pauses were the decision latency tail).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from nextbest.profile.banking import Banking
from nextbest.profile.baseline import GuardState
from nextbest.profile.consent import ConsentGrant

__all__ = [
    "FunnelStage",
    "OfferHistory",
    "Profile",
    "RecentEvent",
    "Session",
    "SourceActivity",
    "TopicInterest",
]


class FunnelStage(enum.IntEnum):
    """How far a customer has come towards a product; only moves forward (until closed)."""

    NONE = 0
    RESEARCHING = 1
    CONSIDERING = 2
    APPLYING = 3
    SUBMITTED = 4
    CUSTOMER = 5

    @property
    def label(self) -> str:
        return self.name.lower()


class TopicInterest(msgspec.Struct, kw_only=True, gc=False):
    """Interest in one topic: decayed score as of ``score_at``, exact window hits."""

    score: float = 0.0
    score_at: float = 0.0
    hits: list[float] = []
    total: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0


class OfferHistory(msgspec.Struct, kw_only=True, gc=False):
    """What this customer saw and did with one offer (times within the 90-day horizon)."""

    impressions: list[float] = []
    clicks: list[float] = []
    dismissals: list[float] = []
    total_impressions: int = 0
    total_clicks: int = 0
    total_dismissals: int = 0
    last_decision_id: str | None = None


class Session(msgspec.Struct, kw_only=True, gc=False):
    started: float
    last_seen: float
    events: int = 0
    channel: str | None = None


class SourceActivity(msgspec.Struct, array_like=True, gc=False):
    """The activity counters of one data source's events (``Profile.by_source``): events,
    sessions (this source's events alone, cut by the same inactivity timeout), the last
    event's time, and the 30-day event times (kept for every source but behavioral, whose
    times are the profile's ``activity`` less the others': ``profile.sources``)."""

    events: int = 0
    sessions: int = 0
    last: float = 0.0
    activity: list[float] = []


class RecentEvent(msgspec.Struct, array_like=True, gc=False):
    timestamp: float
    type: str
    name: str | None
    topics: list[str]


class Profile(msgspec.Struct, kw_only=True, gc=False):
    """One customer. ``customer_id`` is the userId, or ``anon:<anonymousId>`` before login."""

    customer_id: str
    user_id: str | None = None
    anonymous_ids: list[str] = []
    traits: dict[str, Any] = {}
    products: list[str] = []
    interests: dict[str, TopicInterest] = {}
    funnel: dict[str, FunnelStage] = {}
    offers: dict[str, OfferHistory] = {}
    #: purpose -> on or off, as the customer set it (what ``profile.consent.<purpose>``
    #: reads); every choice with its legal basis, time and origin is in ``grants``
    consent: dict[str, bool] = {}
    balance: float | None = None
    overdrawn: bool = False
    life_events: list[tuple[float, str]] = []
    activity: list[float] = []
    session: Session | None = None
    sessions: int = 0
    recent: list[RecentEvent] = []
    first_seen: float = 0.0
    last_seen: float = 0.0
    event_count: int = 0
    #: the stable experiment id: the key the customer was first seen with (that of the
    #: earliest event folded: ``anon:<anonymousId>`` without a userId, else the userId; the
    #: smaller key on a tie), kept through identify and alias; "" before any event
    #: (``experiment_key``)
    experiment_id: str = ""
    #: the timestamp of the event that set ``experiment_id``
    experiment_at: float = 0.0
    #: each campaign KPI's recent events, (time, value), by KPI (``profile.kpis``): what an
    #: experiment's pre-exposure covariate reads; None until the first (most profiles never
    #: send one: no dict to hold in memory for them)
    kpis: dict[str, list[tuple[float, float]]] | None = None
    #: the identity-theft guard's baseline and watched session (``profile.baseline``,
    #: ``guard.watch``); None for anonymous visitors and when the catalog has no
    #: ``security`` section. Read for security alone: never by a model or a sales rule
    guard: GuardState | None = None
    #: every consent choice (``profile.consent``): ``marketing``, ``marketing/transactional``
    #: (a source under a purpose), ``*/transactional`` (a source under every purpose), with
    #: its legal basis, event time and origin. Profiles encoded before it decode with none
    grants: dict[str, ConsentGrant] = {}
    #: what core banking (the transactional source) says of the customer's money: overdraft
    #: fees and spells, daily balances, monthly payments (``profile.banking``); None until
    #: the first balance, fee, payment or overdraft event
    banking: Banking | None = None
    #: ``event_count``, ``sessions`` and ``activity`` split by the data source of the events
    #: (``profile.fold``: ``behavioral``, ``transactional``, ...; an event of several sources,
    #: an identify with core-banking and CRM traits, under ``crm+transactional``; ``*``: the
    #: counts of a profile folded before the split, of unknown sources), so a view hiding a
    #: source still reads the others' (``FeatureSources.masked``). None until the first
    #: event folded (and in profiles encoded before it existed)
    by_source: dict[str, SourceActivity] | None = None

    @property
    def experiment_key(self) -> str:
        """What experiment arms are hashed on: ``experiment_id``, or the customer key of a
        profile no event was folded into yet."""
        return self.experiment_id or self.customer_id
