"""Policies the site loop compares: who picks what the customer sees in a placement.

Every policy chooses among the *same* eligible set, the one nextbest's own pipeline computes
(consent, eligibility rules, caps, fatigue, faded interest, owned products): the engine's
items plus the candidates it ranked out (``Suppression.OUTRANKED``). Offers whose campaign
puts the customer in its control arm stay out for every policy, so a control group means
the same thing whichever policy runs.

- ``nextbest``: the engine's own items, in its order.
- ``random``: a uniform random order of the eligible set (seeded).
- ``static``: service first, then catalog priority, then campaign weight x value: how banks
  ordered banners before behavioral targeting; no interest, no learning.
- ``oracle``: knows the hidden needs and the response model; orders by
  P(click at position 1) x P(convert | click) x value for the customer's true state.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Protocol

from nextbest.catalog.load import Catalog, CompiledOffer
from nextbest.catalog.model import OfferKind
from nextbest.decide.model import Decision
from nextbest.decide.reasons import Suppression
from nextbest.experiments.assignment import Arm, assign
from nextbest.sim.world import CustomerSim

__all__ = [
    "POLICIES",
    "NextbestPolicy",
    "OraclePolicy",
    "Policy",
    "RandomPolicy",
    "StaticPolicy",
    "eligible_offers",
    "make_policy",
    "static_key",
]


def eligible_offers(decision: Decision, catalog: Catalog) -> list[CompiledOffer]:
    """The engine's items, then what it ranked out, minus offers in the customer's control arm.

    The pipeline assigns arms only while slots remain, so an outranked offer's arm is
    assigned here, with the same hash and salt the pipeline uses.
    """
    out = [catalog.offers[item.offer_id] for item in decision.items]
    for ex in decision.excluded:
        if ex.why is not Suppression.OUTRANKED:
            continue
        offer = catalog.offers[ex.offer_id]
        camp = offer.campaign
        if camp is not None and camp.control_share > 0:
            arm = assign(decision.customer_id, camp.salt or camp.id, camp.control_share)
            if arm is Arm.CONTROL:
                continue
        out.append(offer)
    return out


class Policy(Protocol):
    name: str

    def choose(
        self,
        decision: Decision,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
    ) -> list[str]:
        """Offer ids to show, best first, at most ``slots``, all from ``candidates``.

        ``impressions``: offer id -> times this customer has been shown it so far.
        """
        ...


class NextbestPolicy:
    name = "nextbest"

    def choose(
        self,
        decision: Decision,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
    ) -> list[str]:
        return [item.offer_id for item in decision.items][:slots]


class RandomPolicy:
    name = "random"

    def choose(
        self,
        decision: Decision,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
    ) -> list[str]:
        ids = sorted(o.id for o in candidates)  # independent of the engine's order
        rng.shuffle(ids)
        return ids[:slots]


def static_key(offer: CompiledOffer) -> tuple[int, int, float, str]:
    """Service first, then catalog priority, then campaign weight x value; id breaks ties."""
    service_first = 0 if offer.kind is OfferKind.SERVICE else 1
    return (service_first, -offer.spec.priority, -offer.weight * offer.spec.value, offer.id)


class StaticPolicy:
    name = "static"

    def choose(
        self,
        decision: Decision,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
    ) -> list[str]:
        return [o.id for o in sorted(candidates, key=static_key)][:slots]


class OraclePolicy:
    name = "oracle"

    def choose(
        self,
        decision: Decision,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
    ) -> list[str]:
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
            )
            p_conv = model.p_convert_after_click(offer_topic=offer.topic, needs=needs)
            scored.append((-(p_click * p_conv * offer.spec.value), offer.id))
        scored.sort()
        return [oid for _, oid in scored[:slots]]


POLICIES: dict[str, type[NextbestPolicy | RandomPolicy | StaticPolicy | OraclePolicy]] = {
    "random": RandomPolicy,
    "static": StaticPolicy,
    "nextbest": NextbestPolicy,
    "oracle": OraclePolicy,
}


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        known = ", ".join(POLICIES)
        raise ValueError(f"unknown policy {name!r}; use one of {known}") from None
