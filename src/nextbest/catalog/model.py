"""The catalog as marketers write it: topics, segments, offers, campaigns, placements, policy,
and the expert advisors who take callbacks (``advisors``, ``callbacks``).

These Structs are the validated shape of the YAML; ``load.py`` compiles them into a Catalog.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, TypeAlias

import msgspec

from nextbest.profile.consent import ConsentSpec
from nextbest.profile.topics import TopicSpec

__all__ = [
    "AdvisorSpec",
    "CallbackPolicy",
    "CampaignSpec",
    "CampaignStatus",
    "CatalogSpec",
    "Category",
    "Channel",
    "ContactPolicy",
    "Content",
    "Direction",
    "EpsilonGreedy",
    "Expertise",
    "FeedbackTrust",
    "Greedy",
    "GuardrailSpec",
    "Hypothesis",
    "ImpressionCap",
    "KpiSpec",
    "LearningSpec",
    "ModelKind",
    "Objective",
    "OfferKind",
    "OfferSpec",
    "PlacementKind",
    "PlacementSpec",
    "Policy",
    "ProfileSettings",
    "ScoringSpec",
    "SecuritySpec",
    "SegmentSpec",
    "SensitiveSpec",
    "Softmax",
    "Thompson",
    "TopicSpec",
    "VariantSpec",
    "Weekday",
    "WorkingHours",
]

Id = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Share = Annotated[float, msgspec.Meta(ge=0.0, le=0.5)]
Positive = Annotated[float, msgspec.Meta(gt=0.0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
Probability = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
#: an ISO date or date-time; a date means midnight UTC, a time without offset means UTC; a
#: start is inclusive, an end exclusive (``catalog.when``)
When = str


class OfferKind(enum.StrEnum):
    SERVICE = "service"
    COMMERCIAL = "commercial"


class Channel(enum.StrEnum):
    WEB = "web"
    APP = "app"
    EMAIL = "email"
    ADVISOR = "advisor"


class PlacementKind(enum.StrEnum):
    """What a placement shows: ranked ``offers`` (and service messages), or one ``advisor``
    card (an expert in the customer's hottest live topic, with "call me now / later / pick
    a time")."""

    OFFERS = "offers"
    ADVISOR = "advisor"


class Content(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    title: str
    body: str = ""
    cta: str | None = None
    url: str | None = None
    image: str | None = None


class SegmentSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Id
    rule: str
    name: str = ""
    description: str = ""


class OfferSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Id
    name: str
    kind: OfferKind
    content: dict[Channel, Content]
    topic: Id | None = None
    value: Positive = 1.0
    prior_ctr: Probability | None = None
    #: P(conversion | click) before any is observed (``scoring.conversion_rate`` if unset):
    #: learned from the offer's ``kpi_event`` after clicks, shrunk towards this while thin
    prior_conversion: Probability | None = None
    eligibility: str = "true"
    kpi_event: str | None = None
    priority: int = 0
    valid_from: When | None = None
    valid_until: When | None = None
    #: why the customer sees it, in their words; ``{profile.<field>}`` is replaced by that rule
    #: field's value at the decision ("You paid {profile.overdraft_fees_90d} overdraft fees")
    reason: str | None = None
    #: a service message's trigger (CEL, the same variables as ``eligibility``): while it
    #: holds, the message goes before everything else, uncapped and never explored (an
    #: overdraft warning while overdrawn). A service message without one, or while it does
    #: not hold, is ranked, capped, learned and explored like any other content.
    urgent: str | None = None
    #: a service insight's trigger (CEL, like ``urgent``): while it holds, the insight ranks
    #: with the urgent messages, before every commercial offer, and is never explored; unlike
    #: ``urgent`` the per-offer cap and the rests after a click or a dismissal still apply
    #: (overdraft fees a buffer would have avoided, idle cash, a subscription's price rise).
    #: While it does not hold the insight is ranked like any other content.
    insight: str | None = None
    #: the placements the offer may appear in (empty: every placement whose channel it has
    #: content for and whose kinds allow it)
    placements: list[Id] = []


class Objective(enum.StrEnum):
    """What a campaign is for, in a bank's words (the customer life cycle it moves)."""

    ACQUISITION = "acquisition"
    ACTIVATION = "activation"
    EARLY_MONTH_ON_BOOK = "early_month_on_book"
    CROSS_SELL = "cross_sell"
    SPEND = "spend"
    DIGITAL_ENGAGEMENT = "digital_engagement"
    ATTRITION = "attrition"
    LIFETIME_VALUE = "lifetime_value"


class Category(enum.StrEnum):
    """What a campaign tests."""

    BANNER = "banner"
    CONTENT = "content"
    LAYOUT = "layout"
    OFFER = "offer"
    OVERLAY = "overlay"
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
    MESSAGING = "messaging"
    MERCHANDISING_RULE = "merchandising_rule"
    RECOMMENDATION_STRATEGY = "recommendation_strategy"


class CampaignStatus(enum.StrEnum):
    """Only a ``running`` campaign's offers are shown; the others are kept for the record
    (a ``draft`` not started, a ``paused`` one to resume, a ``stopped`` one ended)."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Direction(enum.StrEnum):
    """Which way of a KPI is good: ``increase`` (applications) or ``decrease`` (closed
    accounts, complaints)."""

    INCREASE = "increase"
    DECREASE = "decrease"


Text = Annotated[str, msgspec.Meta(min_length=1)]


class Hypothesis(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Why a campaign exists, as bank marketers write it: *because we saw* (observation),
    *we will* (change), *and expect* (the primary metric that should move)."""

    observation: Text
    change: Text
    expected: Text


class KpiSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A campaign's primary KPI: an exposed customer converts when they send ``event``
    matching ``where`` within ``within_days`` of their first exposure."""

    event: Text
    #: a CEL condition on the event (``properties``, ``context``)
    where: str = "true"
    within_days: Positive = 14.0
    #: a number property of the event summed per customer (an amount): the KPI is then a
    #: mean per exposed customer rather than a conversion rate
    value: str | None = None
    direction: Direction = Direction.INCREASE


class GuardrailSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A KPI the campaign must not harm (complaints, unsubscribes): like ``KpiSpec``, but a
    rise is bad unless ``direction`` says otherwise."""

    event: Text
    where: str = "true"
    within_days: Positive = 14.0
    value: str | None = None
    direction: Direction = Direction.DECREASE


class VariantSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One treatment arm of a campaign: its share of the treated customers (``weight``,
    relative to the other variants) and the content it shows instead of its offers' own
    (offer id -> channel -> content; an offer or channel not named keeps its content)."""

    id: Id
    weight: Positive = 1.0
    name: str = ""
    content: dict[str, dict[Channel, Content]] = {}


class CampaignSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Id
    name: str
    owner: str
    offers: list[Id]
    hypothesis: Hypothesis
    objective: Objective
    category: Category
    #: the primary KPI: an event name alone (``Application Started``) or a ``KpiSpec``
    kpi: str | KpiSpec
    guardrails: list[str | GuardrailSpec] = []
    status: CampaignStatus = CampaignStatus.RUNNING
    variants: list[VariantSpec] = []
    #: segments whose results are read as confirmatory (the others are exploratory)
    audiences: list[Id] = []
    weight: Positive = 1.0
    control_share: Share = 0.0
    #: the largest share of this campaign's impressions that exploration may choose
    max_exploration: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.2
    #: a KPI event within this many days of a click is a conversion of that decision
    attribution_days: Positive = 7.0
    salt: str | None = None
    start: When | None = None
    end: When | None = None

    @property
    def primary_kpi(self) -> KpiSpec:
        """``kpi`` as a ``KpiSpec`` (an event name alone: no filter, the default window)."""
        return KpiSpec(event=self.kpi) if isinstance(self.kpi, str) else self.kpi

    @property
    def guardrail_kpis(self) -> list[GuardrailSpec]:
        return [GuardrailSpec(event=g) if isinstance(g, str) else g for g in self.guardrails]

    @property
    def running(self) -> bool:
        return self.status is CampaignStatus.RUNNING


# Exploration policies of a learning placement (``learning.explore``); ``learn.explore``
# ranks with them.
class Greedy(msgspec.Struct, frozen=True, tag="greedy"):
    """No exploration."""


class EpsilonGreedy(msgspec.Struct, frozen=True, tag="epsilon_greedy"):
    epsilon: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be within [0, 1], got {self.epsilon}")


class Softmax(msgspec.Struct, frozen=True, tag="softmax"):
    """Plackett-Luce over ``exp(score / temperature)``: in the units of the scores."""

    temperature: Annotated[float, msgspec.Meta(gt=0.0)] = 0.1
    exact_budget: Annotated[int, msgspec.Meta(ge=0)] = 4096

    def __post_init__(self) -> None:
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be above 0, got {self.temperature}")


class Thompson(msgspec.Struct, frozen=True, tag="thompson"):
    """Thompson sampling over ``n_sim`` posterior samples a decision; ``uniform``: the share
    of decisions that order the pool uniformly at random instead, so that every ordering has
    a propensity of at least ``uniform / n`` a slot (full support for off-policy evaluation)."""

    n_sim: Annotated[int, msgspec.Meta(ge=1)] = 200
    uniform: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0

    def __post_init__(self) -> None:
        if self.n_sim < 1:
            raise ValueError(f"n_sim must be at least 1, got {self.n_sim}")
        if not 0.0 <= self.uniform <= 1.0:
            raise ValueError(f"uniform must be within [0, 1], got {self.uniform}")


Policy: TypeAlias = Greedy | EpsilonGreedy | Softmax | Thompson


class ModelKind(enum.StrEnum):
    """A placement's propensity model (``learn.model``)."""

    BAYES = "bayes"
    CONTEXTUAL = "contextual"
    BAYES_LOGISTIC = "bayes_logistic"


class LearningSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a placement learns click propensities from its own feedback.

    ``model``: ``bayes`` (Beta-Bernoulli per offer in this placement, Thompson sampling),
    ``contextual`` (online logistic regression over the customer's features and each
    candidate's own history with the customer; each offer's level has a posterior) or
    ``bayes_logistic`` (Bayesian logistic regression over the customer's features, a
    posterior on every weight).
    ``explore``: ``{type: greedy}``, ``{type: epsilon_greedy, epsilon: 0.05}``,
    ``{type: softmax, temperature: 0.1}`` or ``{type: thompson, n_sim: 200}`` (the default:
    draws from the model's posterior, so it explores where the model is unsure; every model
    has one; measured against epsilon-greedy 0.05 in the zoo, BENCHMARKS.md).
    ``click_window_minutes``: a view with no click within this window counts as a miss.
    ``shared``: the ``contextual`` placements with ``shared`` true learn one model together,
    the placement a feature of it (its own base rate and position discounts), so what a
    customer's feedback anywhere says about an offer is learned once, from every
    placement's feedback (measured: +0.02-0.09 of the oracle's expected clicks in the zoo,
    BENCHMARKS.md); false: a model of the placement's own. Other models are per placement.
    """

    model: ModelKind
    explore: Policy = Thompson()
    click_window_minutes: Positive = 30.0
    shared: bool = True


class PlacementSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: Id
    channel: Channel
    slots: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1
    #: what it shows: offers, or one advisor card (then no offer is a candidate, and it has
    #: neither ``learning`` nor ``fallback``)
    kind: PlacementKind = PlacementKind.OFFERS
    kinds: tuple[OfferKind, ...] = (OfferKind.SERVICE, OfferKind.COMMERCIAL)
    description: str = ""
    #: learned click propensities; without it the catalog's interest prior scores offers
    learning: LearningSpec | None = None
    #: content shown, in this order, in the slots that eligibility and the contact policy
    #: leave empty (a placement is never empty while content exists): offers that can
    #: appear in the placement; not capped, not ruled by eligibility, but never twice on a
    #: page, only while live, and commercial ones only with marketing consent
    fallback: list[Id] = []


class Weekday(enum.StrEnum):
    """A day of the week, as working hours name it (``weekly: {mon: [...]}``)."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


#: a time range of one day in local wall-clock time, ``"09:00-17:00"`` (start inclusive,
#: end exclusive; ``24:00`` ends the day): checked by ``catalog.hours``
Hours = str
#: a date, ``2026-12-24`` (YAML reads it as a date; the catalog as its ISO text)
Day = str


class Expertise(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A topic an advisor is an expert in, and how expert (1: can answer questions, 5: the
    bank's specialist): the routing prefers the higher level."""

    topic: Id
    level: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3


class WorkingHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When an advisor takes calls, in their own time zone's wall-clock time (a day's hours
    stay 09:00-17:00 through a change to or from summer time)."""

    #: an IANA time zone (``Europe/Copenhagen``)
    timezone: str
    #: each day's time ranges; a day not named is a day off
    weekly: dict[Weekday, list[Hours]] = {}
    #: dates whose hours differ from the week's (local dates); ``[]`` closes the day
    exceptions: dict[Day, list[Hours]] = {}


class AdvisorSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An expert advisor who takes callbacks: shown on the advisor card of a customer whose
    hottest live topic is one of their ``expertise``."""

    id: Id
    name: Annotated[str, msgspec.Meta(min_length=1)]
    expertise: list[Expertise]
    #: ISO 639-1 codes (``da``, ``en``), the best first
    languages: list[str]
    working_hours: WorkingHours
    photo_url: str | None = None
    team: str = ""
    branch: str = ""
    #: callbacks they may hold at once: offered, accepted or on the phone, and booked in
    #: one slot
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=50)] = 1
    #: their line in the bank's telephony (an extension or a SIP URI): what a click-to-call
    #: request names
    extension: str | None = None


class CallbackPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How callbacks are routed and booked (``advisors.routing``, ``advisors.slots``)."""

    #: seconds an advisor has to accept an offered callback before it goes to a colleague
    accept_timeout_seconds: Annotated[float, msgspec.Meta(ge=5.0, le=600.0)] = 30.0
    #: seconds within which "call me now" is offered to someone; past it the callback moves
    #: to the earliest free slot and the customer is told
    now_sla_seconds: Annotated[float, msgspec.Meta(ge=10.0, le=3_600.0)] = 120.0
    #: seconds within which an accepted callback's call must start (the telephony system
    #: reports it: ``connect``); past it the callback goes back to the queue: offered to a
    #: colleague, or moved to the earliest slot (a "now"), or left to its slot's end
    connect_within_seconds: Annotated[float, msgspec.Meta(ge=5.0, le=86_400.0)] = 600.0
    #: the length of a bookable slot
    slot_minutes: Annotated[int, msgspec.Meta(ge=5, le=240)] = 30
    #: how far ahead slots may be booked
    horizon_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 14
    #: the earliest a "later" or picked slot may start, from the request
    lead_minutes: Annotated[int, msgspec.Meta(ge=0, le=1_440)] = 15
    #: free slots an advisor card offers when nobody is free now
    card_slots: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    #: bank holidays: no advisor takes calls on these dates (each in their own time zone)
    holidays: list[Day] = []


class ImpressionCap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    count: Annotated[int, msgspec.Meta(ge=1)]
    days: Positive


class ContactPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Caps and fatigue, applied to commercial offers (service messages are never capped)."""

    per_offer: ImpressionCap = ImpressionCap(count=3, days=7)
    per_day_commercial: Annotated[int, msgspec.Meta(ge=1)] = 12
    after_click_days: NonNegative = 7.0
    after_dismiss_days: NonNegative = 14.0
    #: decayed topic score below which interest the customer once had counts as faded
    fade_below: NonNegative = 0.35
    suppress_owned: bool = True
    #: consent assumed for a purpose the customer has not set (personalization, marketing)
    consent_defaults: dict[str, bool] = msgspec.field(
        default_factory=lambda: {"personalization": True, "marketing": True}
    )

    def consented(self, consent: Mapping[str, bool], purpose: str) -> bool | None:
        """The customer's consent to ``purpose``: as they set it in ``consent``, else this
        policy's default, else None (neither says)."""
        granted = consent.get(purpose)
        return self.consent_defaults.get(purpose) if granted is None else granted


class ScoringSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The click-propensity prior: base CTR lifted by decayed topic interest."""

    service_ctr: Probability = 0.08
    commercial_ctr: Probability = 0.01
    #: P(conversion | click) an offer starts from (``prior_conversion`` overrides it)
    conversion_rate: Probability = 0.1
    #: how many clicks the conversion prior weighs: learned rates move away from it as
    #: clicks with known outcomes outnumber this
    conversion_strength: Annotated[float, msgspec.Meta(gt=0.0)] = 20.0
    #: the most interest can multiply the base CTR by (1 + lift): 10, as banners shown to
    #: people who visited the product's pages are clicked about ten times as often as
    #: untargeted display banners (retargeting CTR ~0.7 % against ~0.07 %; see
    #: BENCHMARKS.md, "Decisions against the bank's rule of thumb")
    interest_lift: NonNegative = 10.0
    #: decayed score at which half of the lift is reached
    half_saturation: Positive = 3.0


class FeedbackTrust(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounds on feedback volume past which feedback is stored but not learned: per network
    origin (absolute) and per key (relative to the key's own last day), in units where a
    view or a dismissal weighs 1 and a click ``click_weight``. The defaults and why they are
    what they are: ``learn.volume``."""

    #: feedback units in an hour from one network origin (IPv4 /24, IPv6 /48)
    per_origin_hour: Annotated[int, msgspec.Meta(ge=1)] = 300
    #: what a click weighs against a view or a dismissal
    click_weight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 30
    #: feedback units in an hour under which a key is never over
    per_key_hour: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    #: past ``per_key_hour``, a key is over at this multiple of its mean hourly volume
    key_surge: Annotated[float, msgspec.Meta(ge=1.0, le=1_000.0)] = 4.0
    #: origins and keys tracked at once (the least recently seen forgotten first)
    origins_tracked: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 50_000
    keys_tracked: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1_000


class ProfileSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    page_weight: NonNegative = 1.0
    track_weight: NonNegative = 2.0
    event_weights: dict[str, NonNegative] = {}
    session_timeout_minutes: Positive = 30.0
    #: devices (anonymousIds) one customer may have linked; an identify past it is a 409
    max_devices: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50
    #: trait keys one customer's profile may hold; an identify adding more is a 409
    max_traits: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    #: trait keys one message may set
    max_traits_per_message: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    #: characters in a trait key
    max_trait_key_length: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 64
    #: bytes of one trait value, encoded as JSON
    max_trait_value_bytes: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 2_048
    #: feedback volume per network origin and per key past which feedback is not learned
    feedback: FeedbackTrust = FeedbackTrust()


class SensitiveSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One kind of sensitive page or event the identity-theft guard watches for: where a
    fraudster who took over an account goes (a new payee, higher limits, new contact
    details so the bank's calls reach them)."""

    kind: Id
    #: page paths, as globs (a topic's ``url_patterns``: ``*payee*``)
    url_patterns: list[str] = []
    #: track event names (``Payee Added``)
    events: list[str] = []


def _default_sensitive() -> list[SensitiveSpec]:
    """The example bank's sensitive pages and events; the globs match most banks' paths."""
    return [
        SensitiveSpec(
            kind="payee",
            url_patterns=["*payee*", "*beneficiar*", "*/transfers/new-recipient*"],
            events=["Payee Added", "Beneficiary Added"],
        ),
        SensitiveSpec(
            kind="limit",
            url_patterns=["*/limits*", "*-limit*"],
            events=["Limit Changed"],
        ),
        SensitiveSpec(
            kind="contact",
            url_patterns=["*contact-details*", "*/settings/phone*", "*/settings/email*"],
            events=["Contact Details Changed"],
        ),
    ]


class SecuritySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The identity-theft guard (``guard/``, docs/guard.md): a behavioural baseline per
    customer and a risk per session. A session whose risk reaches ``threshold`` is flagged:
    commercial offers are suppressed for it, service messages may read ``security.*`` (a
    "Was this you?" message), and one alert goes to the bank's fraud channel. The guard is
    on when the catalog has this section."""

    sensitive: list[SensitiveSpec] = msgspec.field(default_factory=_default_sensitive)
    #: the risk (0-1) at which a session is flagged
    threshold: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.9
    #: learned sessions before the guard judges a customer (a new customer's devices are
    #: all new)
    min_sessions: Annotated[int, msgspec.Meta(ge=1, le=1_000)] = 3
    #: send an alert per flagged session to the webhook ``alert_destination``
    alerts: bool = True
    alert_destination: Id = "fraud"


class CatalogSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: str = "1"
    topics: list[TopicSpec] = []
    segments: list[SegmentSpec] = []
    offers: list[OfferSpec] = []
    campaigns: list[CampaignSpec] = []
    placements: list[PlacementSpec] = []
    advisors: list[AdvisorSpec] = []
    callbacks: CallbackPolicy = CallbackPolicy()
    contact_policy: ContactPolicy = ContactPolicy()
    scoring: ScoringSpec = ScoringSpec()
    profile: ProfileSettings = ProfileSettings()
    holdout_share: Share = 0.0
    #: the identity-theft guard; off without the section
    security: SecuritySpec | None = None
    #: consent defaults per data source, the contract sources, traits' and events' sources
    #: (``profile.consent``)
    consent: ConsentSpec = ConsentSpec()
