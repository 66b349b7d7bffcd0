"""The ranking policy, in one place: how nextbest scores and orders eligible offers, and when
its contact policy holds an offer back. The pipeline (``decide.pipeline``), offline evaluation
(``learn.offline``, which replays it on the decision log), the learner (``learn.learner``,
whose exploration ranks with ``learn.explore.rank``) and the simulator's policies
(``sim.policies``) all call these functions; a change to how nextbest ranks is made here.
The pipeline's candidate filters (``decide.pipeline._filter_candidates``, run for every offer
of a placement at every decision) write ``marketing``, ``contact_capped`` and ``faded`` out
inline: a change to one of them is made there too, and ``tests/unit/test_candidate_filters.py``
fails until it is.

**Score.** The expected value of showing an offer, ``score = P(click) x P(conversion |
click) x value x weight`` (``score``): the offer's value (what a conversion is worth), its
campaign's business weight, the click probability, which is the catalog's interest prior
(``prior_p_click``) until a placement's learned model replaces it, and the conversion
probability after a click, the catalog's prior (``base_conversion``) until the learner's
conversion model, fed by the offer's KPI event after clicks, replaces it.

**Order** (``rank_key``, ``in_rank_order``): urgent service messages first (a service
message whose trigger, ``urgent`` in the catalog, holds: an overdraft warning while
overdrawn; never explored), then everything else by score (highest first), then catalog
priority (highest first), then offer id. A service message that is not urgent competes on
its score like any other content: generic service content (a budget coach, a tax reminder)
must earn its slot by relevance, not take every slot by kind. A service **insight**
(``insight`` in the catalog: overdraft fees a buffer would have avoided, idle cash, a
subscription's price rise) is urgent while its trigger holds, so it outranks every commercial
offer of the placement; unlike an urgent message it stays under the contact policy.

**Contact policy**: a per-offer cap (``capped``) and a rest after a click or a dismissal
(``contact_block``) for everything but urgent messages, insights included
(``contact_capped``); for marketing
(commercial offers, ``marketing``) also consent, the holdout, owned products, a daily cap on
commercial impressions (``fatigued``) and faded interest (``faded``). ``slack``: how close
an expected (fractional) count may come to a cap and count as reaching it (offline replay).

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
    "capped",
    "commercial_shown_today",
    "contact_block",
    "contact_capped",
    "faded",
    "fatigued",
    "in_rank_order",
    "interest_key",
    "interest_score",
    "interest_value",
    "logged_interest",
    "marketing",
    "prior_p_click",
    "rank_key",
    "score",
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


def score(offer: CompiledOffer, p_click: float, p_convert: float | None = None) -> float:
    """What ranks an offer: ``p_click x p_convert x value x weight`` (``p_convert``: the
    catalog's prior when not given)."""
    return p_click * worth(offer, p_convert)


def worth(offer: CompiledOffer, p_convert: float | None = None) -> float:
    """What a click on ``offer`` is worth to the ranking, ``p_convert x value x weight``: a
    learned model's click probabilities times this are the scores its exploration ranks by
    (``score``'s product taken in the other order)."""
    p = offer.base_conversion if p_convert is None else p_convert
    return p * offer.spec.value * offer.weight


# ------------------------------------------------------------------------------ order
def rank_key(
    offer: CompiledOffer, score: float, urgent: bool = False
) -> tuple[int, float, int, str]:
    """The engine's order: urgent first, then score, then catalog priority (both highest
    first), then offer id."""
    return (0 if urgent else 1, -score, -offer.spec.priority, offer.id)


def in_rank_order(candidates: Iterable[Candidate]) -> list[Candidate]:
    """``candidates`` sorted by ``rank_key``."""
    return sorted(candidates, key=lambda c: rank_key(c.offer, c.score, c.urgent))


# ------------------------------------------------------------------------------ contact policy
def marketing(offer: CompiledOffer) -> bool:
    """A commercial offer: marketing consent, the holdout, owned products, daily fatigue
    and faded interest apply to it (not to service messages). (Written out inline in
    ``decide.pipeline._filter_candidates`` too.)"""
    return offer.kind is OfferKind.COMMERCIAL


def contact_capped(urgent: bool, insight: bool = False) -> bool:
    """The per-offer cap and the rests apply to everything shown but an urgent message; an
    insight (``OfferSpec.insight``) is first while its trigger holds, yet capped and rested.
    (Written out inline in ``decide.pipeline._filter_candidates`` too.)"""
    return not urgent or insight


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
    """Interest the customer once had (``total`` hits) has decayed below ``fade_below``.
    (Written out inline in ``decide.pipeline._filter_candidates`` too.)"""
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
