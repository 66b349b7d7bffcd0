"""Policies the site loop compares: who picks what the customer sees in a placement.

Every policy chooses among the *same* eligible set, the one nextbest's own pipeline computes
(consent, eligibility rules, caps, fatigue, faded interest, owned products, minus offers whose
campaign puts the customer in its control arm, so a control group means the same thing
whichever policy runs): the loop passes the policy to ``Engine.decide`` as its chooser, so
the decision log holds what the policy really showed, with the policy's propensities.

- ``nextbest``: the engine as configured: each placement's learned model and exploration.
- ``prior``: the engine's order with learning off (the catalog's interest prior), which
  ``decide.ranking`` defines for the pipeline, offline evaluation and this loop alike.
- ``random``: a uniform random order of the eligible set (seeded).
- ``static``: service messages first, then catalog priority, then campaign
  weight x value: how banks ordered banners before behavioral targeting; no interest, no
  learning.
- ``greedy_recent``: the bank's rule of thumb: service first (like ``static``), then the
  topics the customer viewed most in the last 14 days, then catalog priority; it reads only
  what the engine sees (the decision's profile: its topic hit counts), never a hidden need.
- ``none``: shows nothing: the baseline of what customers do anyway (a policy's true
  incremental conversions are its conversions minus ``none``'s on the same population).
- ``oracle``: knows the hidden needs and the response model; orders by
  P(click at position 1) x P(convert | click) x value for the customer's true state.

Every ``choose`` also receives ``context``: what the decision may see of the customer (the
engine's ``ChoiceContext``: the profile as the decision sees it, and ``now``), or None when
a caller asks a policy directly.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Protocol

from nextbest.catalog.compiled import CompiledOffer
from nextbest.catalog.model import OfferKind
from nextbest.decide.model import ChoiceContext
from nextbest.profile.windows import count_in_days
from nextbest.sim.world import CustomerSim

__all__ = [
    "POLICIES",
    "RECENT_DAYS",
    "GreedyRecentPolicy",
    "NextbestPolicy",
    "NoOfferPolicy",
    "OraclePolicy",
    "PriorPolicy",
    "RandomPolicy",
    "SitePolicy",
    "StaticPolicy",
    "make_policy",
    "static_key",
]


class SitePolicy(Protocol):
    """A policy the site loop runs (not a placement's exploration policy, which is the
    catalog's ``learning.explore``)."""

    name: str

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        """(offer id, propensity) to show, best first, at most ``slots``, all from
        ``candidates`` (the engine's eligible set in its order). The propensity is the
        probability that this policy puts that offer in that slot.

        ``impressions``: offer id -> times this customer has been shown it so far;
        ``context``: what the decision may see (the engine's profile of the customer, now).
        """
        ...


class PriorPolicy:
    """The engine's ranking before any learning: the catalog's interest prior x value x
    weight, in the engine's order (``decide.ranking.rank_key``; the candidates come in it),
    no exploration (what nextbest does with learning off)."""

    name = "prior"

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        return [(offer.id, 1.0) for offer in candidates][:slots]


class NextbestPolicy(PriorPolicy):
    """The engine as configured. The site loop passes no chooser for it, so the engine's own
    learner and exploration decide; ``choose`` (the engine's order) serves callers that ask
    a policy directly."""

    name = "nextbest"


class RandomPolicy:
    name = "random"

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        ids = sorted(o.id for o in candidates)  # independent of the engine's order
        rng.shuffle(ids)
        # a uniform random order puts each offer in each slot with probability 1 / n
        return [(oid, 1.0 / len(ids)) for oid in ids[:slots]]


def service_tier(offer: CompiledOffer) -> int:
    """0 for a service message, 1 for an offer: the banks' rules put service first."""
    return 0 if offer.kind is OfferKind.SERVICE else 1


def static_key(offer: CompiledOffer) -> tuple[int, int, float, str]:
    """Service first, then catalog priority, then campaign weight x value; id breaks ties."""
    return (service_tier(offer), -offer.spec.priority, -offer.weight * offer.spec.value, offer.id)


class StaticPolicy:
    name = "static"

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        return [(o.id, 1.0) for o in sorted(candidates, key=static_key)][:slots]


#: the window of the bank's rule of thumb (``greedy_recent``), in days
RECENT_DAYS = 14


def recent_views(context: ChoiceContext | None, topic: str | None) -> int:
    """Hits on ``topic`` within ``RECENT_DAYS`` as the decision's profile holds them (page
    views and the topic's track events); 0 without a topic, a profile or such hits."""
    if context is None or topic is None:
        return 0
    interest = context.profile.interests.get(topic)
    return count_in_days(interest.hits, RECENT_DAYS, context.now) if interest else 0


class GreedyRecentPolicy:
    """The bank's rule of thumb: what the customer browsed most lately, most first."""

    name = "greedy_recent"

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        def key(o: CompiledOffer) -> tuple[int, int, int, str]:
            return (service_tier(o), -recent_views(context, o.topic), -o.spec.priority, o.id)

        return [(o.id, 1.0) for o in sorted(candidates, key=key)][:slots]


class NoOfferPolicy:
    """Nobody sees anything: what customers do on their own."""

    name = "none"

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        return []


class OraclePolicy:
    name = "oracle"

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        model = sim.response
        needs = sim.strengths(day)
        age = sim.c.age_on(sim.start + timedelta(days=day))
        scored: list[tuple[float, str]] = []
        for offer in candidates:
            p_click = model.p_click(
                offer_topic=offer.topic,
                offer_kind=offer.kind.value,
                position=1,
                needs=needs,
                impressions_before=impressions.get(offer.id, 0),
                overdrawn=sim.overdrawn,
                age=age,
                offer=offer.id,
            )
            p_conv = model.p_convert_after_click(offer_topic=offer.topic, needs=needs)
            scored.append((-(p_click * p_conv * offer.spec.value), offer.id))
        scored.sort()
        return [(oid, 1.0) for _, oid in scored[:slots]]


POLICIES: dict[
    str,
    type[
        NextbestPolicy
        | PriorPolicy
        | RandomPolicy
        | StaticPolicy
        | GreedyRecentPolicy
        | NoOfferPolicy
        | OraclePolicy
    ],
] = {
    "none": NoOfferPolicy,
    "random": RandomPolicy,
    "static": StaticPolicy,
    "greedy_recent": GreedyRecentPolicy,
    "prior": PriorPolicy,
    "nextbest": NextbestPolicy,
    "oracle": OraclePolicy,
}


def make_policy(name: str) -> SitePolicy:
    try:
        return POLICIES[name]()
    except KeyError:
        known = ", ".join(POLICIES)
        raise ValueError(f"unknown policy {name!r}; use one of {known}") from None
