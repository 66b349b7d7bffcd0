"""The variables a rule sees: ``profile``, ``interest``, ``products``, ``traits``, ``offers``,
``segments``, ``context``, ``now`` and ``security``, computed from a profile as of ``now``.

``security`` is what the identity-theft guard found in the customer's live session
(``security_view``); the catalog lets only service messages read it (``catalog.compile``).

Every catalog topic is present under ``interest`` (zeros when never seen), so rules such as
``interest.mortgage.count_14d >= 5`` never fail on a missing key.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_right
from collections.abc import Collection
from datetime import UTC, date, datetime
from typing import Any

from nextbest.profile.banking import banking_view
from nextbest.profile.interest import decayed, trend_of
from nextbest.profile.model import OfferHistory, Profile, TopicInterest
from nextbest.profile.topics import TopicSpec
from nextbest.profile.windows import DAY, WINDOW_DAYS, count_between, count_in_days

__all__ = [
    "ENGAGEMENTS",
    "LIFECYCLES",
    "RULE_ROOTS",
    "age_of",
    "engagement_of",
    "interest_view",
    "lifecycle_of",
    "offer_view",
    "rule_variables",
    "security_view",
]

RULE_ROOTS = frozenset(
    {
        "profile",
        "interest",
        "products",
        "traits",
        "offers",
        "segments",
        "context",
        "now",
        "security",
    }
)
_EMPTY = TopicInterest()
_NO_HISTORY = OfferHistory()


@functools.lru_cache(maxsize=16)
def _today(now: float) -> date:
    """The UTC date at ``now`` (a decision asks for it once per rule that reads an age)."""
    return datetime.fromtimestamp(now, UTC).date()


@functools.lru_cache(maxsize=4096)
def _born(text: str) -> date | None:
    """An ISO date, or None (birthdays repeat across customers: parsed once each)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _age_on(birthday: str, now: float) -> int | None:
    born = _born(birthday[:10])
    if born is None:
        return None
    today = _today(now)
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


#: (birthday, UTC day number) -> the age that day, or None for a birthday that is no date:
#: a decision reads an age for several rules and features, and customers share birthdays
_AGES: dict[tuple[str, int], int | None] = {}
_AGES_MAX = 1 << 16
_UNKNOWN: Any = object()


def age_of(traits: dict[str, Any], now: float) -> int | None:
    """Age in whole years from ``traits.birthday`` (ISO date) or ``traits.age``."""
    birthday = traits.get("birthday")
    if isinstance(birthday, str):
        key = (birthday, int(now // DAY))
        age_then = _AGES.get(key, _UNKNOWN)
        if age_then is _UNKNOWN:
            age_then = _age_on(birthday, now)
            if len(_AGES) >= _AGES_MAX:
                _AGES.clear()
            _AGES[key] = age_then
        if age_then is not None:
            return age_then  # type: ignore[no-any-return]
    age = traits.get("age")
    if isinstance(age, int) and not isinstance(age, bool):
        return age
    if isinstance(age, float) and math.isfinite(age):  # NaN or infinite: no age
        return int(age)
    return None


#: lifecycle phases by age: below 18 "minor", below 26 "young_adult", ..., 67 on "retired"
_PHASE_LIMITS = (18, 26, 35, 50, 60, 67)
_PHASES = ("minor", "young_adult", "starter", "family", "established", "pre_retirement", "retired")
#: every value of ``profile.lifecycle`` (``unknown``: no age known)
LIFECYCLES = (*_PHASES, "unknown")
#: every value of ``profile.engagement``, by events in 30 days: 0, under 5, under 20, more
ENGAGEMENTS = ("dormant", "low", "medium", "high")


def lifecycle_of(age: int | None) -> str:
    if age is None:
        return LIFECYCLES[-1]
    return _PHASES[bisect_right(_PHASE_LIMITS, age)]


def engagement_of(events_30d: int) -> str:
    if events_30d == 0:
        return ENGAGEMENTS[0]
    if events_30d < 5:
        return ENGAGEMENTS[1]
    if events_30d < 20:
        return ENGAGEMENTS[2]
    return ENGAGEMENTS[3]


def _days_ago(when: float, now: float) -> float:
    return round(max(0.0, now - when) / DAY, 3)


def interest_view(it: TopicInterest, spec: TopicSpec, now: float) -> dict[str, Any]:
    """One topic's interest as a rule sees it, as of ``now``."""
    counts = {f"count_{d}d": count_in_days(it.hits, d, now) for d in WINDOW_DAYS}
    previous_7d = count_between(it.hits, now - 14 * DAY, now - 7 * DAY)
    seen = it.total > 0
    return {
        "score": round(decayed(it.score, it.score_at, now, spec.half_life), 6),
        **counts,
        "total": it.total,
        "first_seen_days": _days_ago(it.first_seen, now) if seen else -1.0,
        "last_seen_days": _days_ago(it.last_seen, now) if seen else -1.0,
        "trend": trend_of(counts["count_7d"], previous_7d).value,
    }


def offer_view(h: OfferHistory, now: float) -> dict[str, Any]:
    """One offer's history as a rule sees it, as of ``now``."""
    return {
        "impressions_7d": count_in_days(h.impressions, 7, now),
        "impressions_30d": count_in_days(h.impressions, 30, now),
        "clicks_30d": count_in_days(h.clicks, 30, now),
        "dismissals_30d": count_in_days(h.dismissals, 30, now),
        "total_impressions": h.total_impressions,
        "total_clicks": h.total_clicks,
    }


def security_view(profile: Profile, now: float) -> dict[str, Any]:
    """``security``: the risk (0-1) of the customer's live session, whether the guard
    flagged it, and the signals it found; 0, false and none without a live session."""
    guard = profile.guard
    s = guard.live_session(now) if guard is not None else None
    if s is None:
        return {"risk": 0.0, "flagged": False, "signals": []}
    return {"risk": s.risk, "flagged": s.flagged, "signals": [x.value for x in s.signals]}


def rule_variables(
    profile: Profile,
    topics: dict[str, TopicSpec],
    now: float,
    context: dict[str, Any],
    named_offers: Collection[str] = (),
) -> dict[str, Any]:
    """Everything a rule may read, as plain data. ``segments`` is added by the caller.

    ``offers`` holds the customer's offer history, plus zeros for every offer in
    ``named_offers`` (those the catalog's rules name), so such rules never miss a key.
    """
    interest = {
        tid: interest_view(profile.interests.get(tid, _EMPTY), spec, now)
        for tid, spec in topics.items()
    }
    age = age_of(profile.traits, now)
    offers = {oid: offer_view(h, now) for oid, h in profile.offers.items()}
    for oid in named_offers:
        if oid not in offers:
            offers[oid] = offer_view(_NO_HISTORY, now)
    moment = datetime.fromtimestamp(now, UTC)
    return {
        "profile": {
            "customer_id": profile.customer_id,
            "known": profile.user_id is not None,
            "age": age if age is not None else -1,
            "lifecycle": lifecycle_of(age),
            "engagement": engagement_of(count_in_days(profile.activity, 30, now)),
            "overdrawn": profile.overdrawn,
            "balance": profile.balance if profile.balance is not None else 0.0,
            "sessions": profile.sessions,
            "events": profile.event_count,
            "funnel": {t: s.label for t, s in profile.funnel.items()},
            "life_events": [
                {"type": kind, "days_ago": _days_ago(when, now)}
                for when, kind in profile.life_events
            ],
            "consent": dict(profile.consent),
            **banking_view(profile.banking, now),
        },
        "interest": interest,
        "products": list(profile.products),
        "traits": profile.traits,
        "offers": offers,
        "context": context,
        "now": {
            "epoch": now,
            "hour": moment.hour,
            "weekday": moment.isoweekday(),
            "day": moment.day,
            "month": moment.month,
            "year": moment.year,
        },
        "security": security_view(profile, now),
    }
