"""Hidden needs: life events start needs that rise, last a while and end.

A need has a topic (the site's product areas), a peak strength in (0, 1], a rise time and a
duration; it ends because the customer converted, bought elsewhere, or lost interest.
Strength on a day: peak * min(1, age_of_need / rise) while it lasts, then 0.
The engine never sees any of this: it sees only the page views and events needs cause.

Two strengths per need: ``strength`` (the true need: what clicks and converts) and
``browsing`` (how strongly it shows in the customer's page views). In the default world they
are equal. A world may part them (``worlds.py``): a need ``real`` False is research without
intent (a friend's mortgage: browsing, no need); ``lead`` days of research before the need
is ripe (browsing at once, a true need only from ``start + lead``); ``visibility`` scales how
much of a ripe need shows in browsing (0: a need that never shows); ``competitor`` is a daily
hazard, from the day the need is ripe, that the customer meets it at another provider (a
broker, the car dealer's finance, a comparison site): the need then ends at once, unmet by
the bank, so an offer shown after that day is worth nothing.
"""

from __future__ import annotations

import enum
import random

import msgspec

__all__ = [
    "LIFE_EVENTS",
    "EndReason",
    "LifeEventKind",
    "LifeEvents",
    "Need",
    "NeedSpec",
    "start_need",
]


class LifeEventKind(enum.StrEnum):
    MOVING = "moving"
    BIRTH = "birth"
    NEW_JOB = "new_job"
    CAR_TROUBLE = "car_trouble"
    RETIREMENT_APPROACHING = "retirement_approaching"
    TURNING_18 = "turning_18"
    CHILD_TURNING_18 = "child_turning_18"
    OVERDRAWN = "overdrawn"
    RENOVATION = "renovation"
    TRAVEL_PLANNING = "travel_planning"
    WINDFALL = "windfall"
    BACKGROUND = "background"
    # world-only events (``worlds.py``): never in the default table, never told to the bank
    CURIOSITY = "curiosity"
    BUDGET_SQUEEZE = "budget_squeeze"
    TAX_DEADLINE = "tax_deadline"
    INSURANCE_RENEWAL = "insurance_renewal"


class EndReason(enum.StrEnum):
    ACTIVE = "active"
    CONVERTED = "converted"
    ELSEWHERE = "bought_elsewhere"
    FADED = "faded"


class NeedSpec(msgspec.Struct, frozen=True):
    topic: str
    probability: float  # that the life event starts this need
    peak: tuple[float, float]  # uniform range of the peak strength
    rise_days: tuple[float, float]
    duration_days: tuple[float, float]
    elsewhere: float  # chance the need ends by buying elsewhere rather than fading
    real: bool = True  # False: browsing without any intent to buy
    visibility: tuple[float, float] = (1.0, 1.0)  # uniform range, share shown in browsing
    lead_days: tuple[float, float] = (0.0, 0.0)  # uniform range, research before it is ripe
    competitor: float = 0.0  # daily hazard, once ripe, that it is met elsewhere (ends at once)


#: life event -> (daily hazard or None for scheduled events, the needs it may start)
LifeEvents = dict[LifeEventKind, tuple[float | None, tuple[NeedSpec, ...]]]
LIFE_EVENTS: LifeEvents = {
    LifeEventKind.MOVING: (
        0.0004,
        (
            NeedSpec("mortgage", 0.65, (0.5, 1.0), (3, 14), (30, 90), 0.35),
            NeedSpec("cards", 0.15, (0.2, 0.5), (1, 5), (10, 30), 0.3),
            NeedSpec("home_insurance", 0.5, (0.3, 0.7), (7, 30), (20, 60), 0.4),
        ),
    ),
    LifeEventKind.BIRTH: (
        0.00025,
        (NeedSpec("child_savings", 0.7, (0.4, 0.9), (7, 30), (30, 120), 0.2),),
    ),
    LifeEventKind.NEW_JOB: (
        0.0005,
        (
            NeedSpec("investing", 0.3, (0.3, 0.7), (5, 20), (20, 60), 0.3),
            NeedSpec("cards", 0.3, (0.3, 0.7), (1, 7), (10, 30), 0.3),
            NeedSpec("car_loan", 0.2, (0.4, 0.8), (3, 10), (14, 45), 0.4),
            NeedSpec("savings", 0.2, (0.2, 0.5), (7, 30), (20, 60), 0.3),
        ),
    ),
    LifeEventKind.CAR_TROUBLE: (
        0.0006,
        (NeedSpec("car_loan", 0.75, (0.5, 1.0), (1, 5), (10, 30), 0.45),),
    ),
    LifeEventKind.RETIREMENT_APPROACHING: (
        0.001,
        (NeedSpec("pension", 0.8, (0.4, 0.9), (10, 30), (60, 180), 0.1),),
    ),
    LifeEventKind.TURNING_18: (
        None,
        (NeedSpec("payments", 1.0, (0.7, 1.0), (1, 3), (20, 60), 0.15),),
    ),
    LifeEventKind.CHILD_TURNING_18: (
        None,
        (NeedSpec("payments", 0.4, (0.2, 0.5), (1, 5), (10, 30), 0.2),),
    ),
    LifeEventKind.OVERDRAWN: (
        None,
        (NeedSpec("overdraft", 1.0, (0.6, 1.0), (0, 1), (3, 20), 0.0),),
    ),
    # about one household in ten renovates or makes a big purchase in a year
    LifeEventKind.RENOVATION: (
        0.0003,
        (NeedSpec("personal_loan", 0.6, (0.4, 0.9), (3, 14), (14, 45), 0.45),),
    ),
    # holidays booked a few weeks ahead; travel cover is often bought with the trip
    LifeEventKind.TRAVEL_PLANNING: (
        0.0012,
        (
            NeedSpec("travel_insurance", 0.5, (0.3, 0.8), (1, 7), (7, 30), 0.5),
            NeedSpec("cards", 0.1, (0.2, 0.5), (1, 7), (7, 21), 0.4),
        ),
    ),
    # a bonus, an inheritance, a paid-off loan: money to put somewhere
    LifeEventKind.WINDFALL: (
        0.0004,
        (
            NeedSpec("savings", 0.6, (0.3, 0.8), (1, 10), (14, 45), 0.3),
            NeedSpec("investing", 0.3, (0.3, 0.7), (5, 20), (20, 60), 0.3),
        ),
    ),
    LifeEventKind.BACKGROUND: (
        0.0008,
        (
            NeedSpec("cards", 0.35, (0.2, 0.6), (1, 7), (7, 30), 0.4),
            NeedSpec("investing", 0.3, (0.2, 0.6), (3, 14), (14, 60), 0.3),
            NeedSpec("mortgage", 0.1, (0.3, 0.7), (7, 21), (30, 90), 0.4),
            NeedSpec("pension", 0.1, (0.2, 0.5), (7, 21), (30, 90), 0.2),
        ),
    ),
}


class Need(msgspec.Struct, kw_only=True):
    topic: str
    start: float  # day index of the simulation
    peak: float
    rise: float
    duration: float
    elsewhere: float
    cause: LifeEventKind
    ended: EndReason = EndReason.ACTIVE
    end_day: float | None = None
    real: bool = True
    visibility: float = 1.0
    lead: float = 0.0
    #: the day another provider meets the need (None: no competitor)
    competitor_day: float | None = None

    @property
    def lasts(self) -> float:
        """Days from the start of research to the end: the lead, then the need itself."""
        return self.lead + self.duration

    def over_by(self, day: float) -> EndReason | None:
        """Why the need, still active, is over by ``day`` (None: it is not): met at another
        provider (``competitor_day``), or its time is up (``lasts``)."""
        if self.competitor_day is not None and day >= self.competitor_day:
            return EndReason.ELSEWHERE
        if day - self.start >= self.lasts:
            return EndReason.FADED
        return None

    def _shape(self, day: float) -> float:
        """The need's curve from its first day of research, real or not."""
        if self.ended is not EndReason.ACTIVE or day < self.start:
            return 0.0
        age = day - self.start
        if age >= self.lasts:
            return 0.0
        return self.peak * (min(1.0, age / self.rise) if self.rise > 0 else 1.0)

    def strength(self, day: float) -> float:
        """The true need on ``day``: what clicks, converts and converts organically."""
        if not self.real or day < self.start + self.lead:
            return 0.0
        return self._shape(day)

    def browsing(self, day: float) -> float:
        """How strongly the need shows in page views on ``day``."""
        s = self._shape(day)
        if s <= 0.0 or day < self.start + self.lead:
            return s
        return s * self.visibility

    def finish(self, day: float, reason: EndReason) -> None:
        self.ended, self.end_day = reason, day


def start_need(rng: random.Random, spec: NeedSpec, day: float, cause: LifeEventKind) -> Need:
    """A need drawn from ``spec``; a spec's default lead, visibility and competitor take no
    draw, so the default world's stream does not depend on them."""
    need = Need(
        topic=spec.topic,
        start=day,
        peak=rng.uniform(*spec.peak),
        rise=rng.uniform(*spec.rise_days),
        duration=rng.uniform(*spec.duration_days),
        elsewhere=spec.elsewhere,
        cause=cause,
        real=spec.real,
    )
    if spec.lead_days != (0.0, 0.0):
        need.lead = rng.uniform(*spec.lead_days)
    if spec.visibility != (1.0, 1.0):
        need.visibility = rng.uniform(*spec.visibility)
    if spec.competitor > 0.0:  # an exponential wait from the day the need is ripe
        need.competitor_day = day + need.lead + rng.expovariate(spec.competitor)
    return need
