"""The ranking policy, in one place: how nextbest scores and orders eligible offers, and when
its contact policy holds an offer back. The pipeline (``decide.pipeline``), offline evaluation
(``learn.offline``, which replays it on the decision log), the learner (``learn.learner``,
whose exploration ranks with ``learn.explore.rank``) and the simulator's policies
(``sim.policies``) all call these functions; a change to how nextbest ranks is made here.

**Score.** ``score = p_click x value x weight`` (``score``): the offer's value, its campaign's
business weight, and the click probability, which is the catalog's interest prior
(``prior_p_click``) until a placement's learned model replaces it.

**Order** (``rank_key``, ``in_rank_order``): service messages first (``service_first``:
placed before any commercial offer, never explored), then by score (highest first), then
catalog priority (highest first), then offer id.

**Contact policy** (commercial offers only; ``applies_to``): a per-offer cap (``capped``),
a rest after a click or a dismissal (``contact_block``), a daily cap on commercial
impressions (``fatigued``), and faded interest (``faded``). ``slack``: how close an expected
(fractional) count may come to a cap and count as reaching it (offline replay).

**Interest feature.** A decision logs ``interest:<topic>`` (``interest_key``) as
``log1p(decayed score)`` (``interest_value``; six digits in the log, ``logged_interest``),
enough to re-score it offline: ``interest_score`` reads the score back (``expm1``).
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping

from nextbest.catalog.compiled import CompiledOffer
from nextbest.catalog.model import ContactPolicy, OfferKind, ScoringSpec
from nextbest.decide.model import Candidate
from nextbest.decide.reasons import Suppression
from nextbest.decide.score import click_prior
from nextbest.profile.model import OfferHistory
from nextbest.profile.windows import count_in_days

__all__ = [
    "INTEREST",
    "applies_to",
    "capped",
    "commercial_shown_today",
    "contact_block",
    "faded",
    "fatigued",
    "in_rank_order",
    "interest_key",
    "interest_score",
    "interest_value",
    "logged_interest",
    "prior_p_click",
    "rank_key",
    "score",
    "service_first",
    "tier",
    "worth",
]

#: the prefix of the interest features, ``interest:<topic>``
INTEREST = "interest:"
#: digits of the interest features a decision logs
_LOGGED_DIGITS = 6


# ------------------------------------------------------------------------------ score
def prior_p_click(offer: CompiledOffer, interest: float, scoring: ScoringSpec) -> float:
    """The catalog's click prior of ``offer`` for a decayed topic ``interest`` score."""
    return click_prior(offer.base_ctr, interest, scoring.interest_lift, scoring.half_saturation)


def score(offer: CompiledOffer, p_click: float) -> float:
    """What ranks an offer: ``p_click x value x weight``."""
    return p_click * offer.spec.value * offer.weight


def worth(offer: CompiledOffer) -> float:
    """What a click on ``offer`` is worth to the ranking, ``value x weight``: a learned model's
    click probabilities times this are the scores its exploration ranks by (``score``'s
    product taken in the other order)."""
    return offer.spec.value * offer.weight


# ------------------------------------------------------------------------------ order
def service_first(offer: CompiledOffer) -> bool:
    """Whether ``offer`` goes before every commercial offer (and is never explored)."""
    return offer.kind is OfferKind.SERVICE


def tier(offer: CompiledOffer) -> int:
    """0 for an offer ranked first (``service_first``), 1 for the rest."""
    return 0 if service_first(offer) else 1


def rank_key(offer: CompiledOffer, score: float) -> tuple[int, float, int, str]:
    """The engine's order: tier, then score, then catalog priority (both highest first),
    then offer id."""
    return (tier(offer), -score, -offer.spec.priority, offer.id)


def in_rank_order(candidates: Iterable[Candidate]) -> list[Candidate]:
    """``candidates`` sorted by ``rank_key``."""
    return sorted(candidates, key=lambda c: rank_key(c.offer, c.score))


# ------------------------------------------------------------------------------ contact policy
def applies_to(offer: CompiledOffer) -> bool:
    """The contact policy caps commercial offers; service messages are never capped."""
    return offer.kind is OfferKind.COMMERCIAL


def capped(impressions: float, policy: ContactPolicy, slack: float = 0.0) -> bool:
    """An offer shown ``impressions`` times within ``policy.per_offer.days`` reached its cap."""
    return impressions >= policy.per_offer.count - slack


def fatigued(shown_today: float, policy: ContactPolicy, slack: float = 0.0) -> bool:
    """``shown_today`` commercial impressions in the last day reached the daily cap."""
    return shown_today >= policy.per_day_commercial - slack


def contact_block(history: OfferHistory, policy: ContactPolicy, now: float) -> Suppression | None:
    """The cap and the rests from one offer's own history (daily fatigue is apart)."""
    if capped(count_in_days(history.impressions, policy.per_offer.days, now), policy):
        return Suppression.CAPPED
    if history.clicks and count_in_days(history.clicks, policy.after_click_days, now):
        return Suppression.RECENTLY_CLICKED
    if history.dismissals and count_in_days(history.dismissals, policy.after_dismiss_days, now):
        return Suppression.DISMISSED
    return None


def commercial_shown_today(
    offers: Mapping[str, OfferHistory], commercial: Container[str], now: float
) -> int:
    """Impressions of the ``commercial`` offers within the last day."""
    return sum(
        count_in_days(h.impressions, 1, now) for oid, h in offers.items() if oid in commercial
    )


def faded(total: int, interest: float, policy: ContactPolicy) -> bool:
    """Interest the customer once had (``total`` hits) has decayed below ``fade_below``."""
    return total > 0 and interest < policy.fade_below


# ------------------------------------------------------------------------------ interest feature
def interest_key(topic: str) -> str:
    return INTEREST + topic


def interest_value(score: float) -> float:
    """The ``interest:<topic>`` feature of a decayed interest ``score``: ``log1p(score)``."""
    return math.log1p(score)


def logged_interest(score: float) -> float:
    """``interest_value`` as a decision logs it (six digits)."""
    return round(interest_value(score), _LOGGED_DIGITS)


def interest_score(features: Mapping[str, float], topic: str) -> float:
    """The decayed interest score ``features`` hold for ``topic`` (``expm1`` of the feature;
    0 when absent)."""
    return math.expm1(features.get(INTEREST + topic, 0.0))
