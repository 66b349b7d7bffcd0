"""P(conversion | click) per offer and per intent, learned from the offer's KPI event after
its clicks.

A click on an offer with a ``kpi_event`` waits (``PendingConversion``) for that event from
the same customer (across stitched identities) within the campaign's ``attribution_days``
(7 without a campaign); when the KPI event names a ``product``, it must be one of the
offer's topic, and when it names a ``topic`` (the callback desk's events), the offer's
(``kpi_topic``). One KPI event converts one click: the latest before it, as the offline join
(``learn.logs``) credits it. The window passing without one is a click that did not convert.

**Per offer**: a Beta posterior whose prior is the catalog's
(``CompiledOffer.base_conversion``) worth ``scoring.conversion_strength`` clicks:
``rate(o) = (prior x strength + conversions) / (strength + clicks with an outcome)``. Thin
data stay near the catalog's figure; a few hundred clicks speak for themselves.

**Per intent**: a click from a customer who has been researching the offer's topic is not
the same as a curious click on a banner about something they never looked at, and a bank
cannot afford to rank a mortgage banner by the conversion rate of its researched clicks when
it shows it to everyone. Each click is filed under the customer's intent when it was shown
(``intent_level``: the decayed interest in the offer's topic, none, some, or at least the
catalog's ``half_saturation``), and one factor per level, pooled over every commercial
offer, says how much more or less that level converts. The factors and each offer's
**base** rate (its rate with its clicks' intent mix taken out) are fitted together, a few
rounds of::

    base(o)       = (prior x strength + conversions(o))
                    / (strength + sum over its clicks of factor(level of the click))
    factor(level) = (conversions at level + a) / (sum of base(o) over its clicks + a)

with ``a = INTENT_STRENGTH`` expected conversions of prior weight: 1 (no difference) until
conversions show one. The pooled prediction ``base(offer) x factor(level)`` is then the
prior, worth ``strength`` clicks like the catalog's, of each offer's own rate at that level:
``predict(offer, level) = (conversions(o, level) + strength x base(o) x factor(level)) /
(clicks(o, level) + strength)`` (partial pooling: an offer with hundreds of clicks at a
level speaks for itself there, a thin one borrows the other offers' difference). Fitted
together, a factor reads the difference between levels *within* offers: a mortgage banner
whose researched clicks convert and curious ones do not gets a low prediction for a
customer who never looked at mortgages, while an offer clicked only without research (a
need the site has no pages for) keeps its own rate for such clicks, instead of both getting
the marginal rate times one pooled factor (issue #14, "conversions per click": the marginal
rate of a valuable offer is its researched clicks' rate, which made its curious clicks look
as good). Service messages stay out of the factors and are predicted by their own rate: their
KPI follows the customer's state (an overdraft ends), not research. The factors are pooled
because conversions are rare (tens a month on a placement). Pure and deterministic: the same
events in the same order give the same counts and the same fit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from nextbest.catalog.compiled import CompiledOffer
from nextbest.catalog.model import OfferKind

__all__ = [
    "ANY_TOPIC",
    "INTENT_LEVELS",
    "INTENT_STRENGTH",
    "JOINT_ROUNDS",
    "NO_INTENT",
    "ConversionModel",
    "PendingConversion",
    "intent_level",
    "kpi_topic",
    "shrunk",
]

#: levels of intent: no interest in the offer's topic, some, at least half the saturation
INTENT_LEVELS = 3
#: a click whose intent is unknown (waiting since before intents were kept)
NO_INTENT = -1
#: the prior weight of each intent factor, in expected conversions (2: a month of a
#: placement's clicks, tens of conversions, moves them; BENCHMARKS.md, "Conversions per click")
INTENT_STRENGTH = 2.0
#: rounds of the joint fit of the offers' base rates and the intent factors
JOINT_ROUNDS = 8
#: what ``kpi_topic`` gives for a KPI event that names neither a product nor a topic: it
#: converts a click on an offer of any topic
ANY_TOPIC = "*"


def kpi_topic(
    properties: Mapping[str, Any], topic_of_product: Callable[[str], str | None]
) -> str | None:
    """The topic a KPI event is about, which an offer's topic must equal for the event to
    convert a click on it: its ``product``'s (None for a product of no topic), else its
    ``topic`` (the callback desk's events carry the callback's topic, not a product), else
    ``ANY_TOPIC``."""
    product = properties.get("product")
    if isinstance(product, str):
        return topic_of_product(product)
    topic = properties.get("topic")
    if isinstance(topic, str):
        return topic
    return ANY_TOPIC


def intent_level(interest: float, half_saturation: float) -> int:
    """The intent level of a decayed topic ``interest`` score (0, 1 or 2)."""
    if interest <= 0.0:
        return 0
    return 1 if interest < half_saturation else 2


def shrunk(conversions: float, clicks: float, prior: float, strength: float) -> float:
    """The posterior mean of a conversion rate: ``conversions`` in ``clicks`` with ``prior``
    worth ``strength`` clicks."""
    return (prior * strength + conversions) / (strength + clicks)


class PendingConversion(msgspec.Struct, array_like=True, frozen=True, order=True, gc=False):
    """A click waiting for its offer's KPI event until ``deadline``; ``intent``: the
    customer's intent level when the offer was shown (``NO_INTENT`` if unknown)."""

    deadline: float
    clicked_at: float
    customer: str
    offer_id: str
    kpi_event: str
    intent: int = NO_INTENT


class ConversionModel:
    """Per offer: clicks with a known outcome and the conversions among them; per (offer,
    intent level) the same, for the intent factors."""

    __slots__ = ("_bases", "_by_intent", "_counts", "_factors", "strength")

    def __init__(self, strength: float) -> None:
        self.strength = strength
        #: offer id -> [conversions, clicks with an outcome]
        self._counts: dict[str, list[float]] = {}
        #: (offer id, intent level) -> [conversions, clicks with an outcome]
        self._by_intent: dict[tuple[str, int], list[float]] = {}
        #: the intent factors, computed when first asked after a change
        self._factors: list[float] | None = None
        #: each offer's rate with its clicks' intents taken out, fitted with the factors
        self._bases: dict[str, float] = {}

    def rate(self, offer: CompiledOffer) -> float:
        """The posterior mean of ``offer``'s P(conversion | click), all intents together."""
        conversions, clicks = self._counts.get(offer.id, (0.0, 0.0))
        return shrunk(conversions, clicks, offer.base_conversion, self.strength)

    def predict(
        self,
        offer: CompiledOffer,
        intent: int = NO_INTENT,
        offers: Mapping[str, CompiledOffer] | None = None,
    ) -> float:
        """``offer``'s P(conversion | click) for a customer at ``intent``: its own rate at
        that level with ``pooled`` as the prior (``rate`` when the intent is unknown or
        ``offer`` is a service message); ``offers``: the catalog's, which the factors are
        fitted over."""
        if intent == NO_INTENT or offers is None or offer.kind is OfferKind.SERVICE:
            return self.rate(offer)
        pooled = self.pooled(offer, intent, offers)
        cell = self._by_intent.get((offer.id, intent))
        if cell is None:
            return pooled
        return min(shrunk(cell[0], cell[1], pooled, self.strength), 1.0)

    def pooled(
        self, offer: CompiledOffer, intent: int, offers: Mapping[str, CompiledOffer]
    ) -> float:
        """``offer``'s base rate times the factor of ``intent`` (a level): what the other
        offers' differences between levels say of it."""
        factor = self.factors(offers)[intent]
        base = self._bases.get(offer.id)
        if base is None:  # no click of it filed under an intent: its own rate
            base = self.rate(offer)
        return min(base * factor, 1.0)

    def factors(self, offers: Mapping[str, CompiledOffer]) -> list[float]:
        """One factor per intent level, fitted with the offers' base rates (module
        docstring)."""
        if self._factors is None:
            self._fit(offers)
        assert self._factors is not None
        return self._factors

    def _fit(self, offers: Mapping[str, CompiledOffer]) -> None:
        """The factors and each offer's base rate fitted together (module docstring)."""
        cells: dict[str, list[tuple[int, float, float]]] = {}
        for (offer_id, level), (conv, clicks) in sorted(self._by_intent.items()):
            offer = offers.get(offer_id)
            if offer is None or offer.kind is OfferKind.SERVICE:
                continue
            cells.setdefault(offer_id, []).append((level, conv, clicks))
        # what stays the same from round to round, per offer: the numerator of its base
        # rate, its clicks of unknown intent, its clicks per level; and conversions per level
        s, a = self.strength, INTENT_STRENGTH
        numerators: list[float] = []
        unknown: list[float] = []
        levels: list[list[tuple[int, float]]] = []
        conversions = [0.0] * INTENT_LEVELS
        for offer_id, rows in cells.items():
            converted, clicked = self._counts.get(offer_id, (0.0, 0.0))
            numerators.append(offers[offer_id].base_conversion * s + converted)
            unknown.append(max(clicked - sum(n for _, _, n in rows), 0.0))
            levels.append([(level, n) for level, _, n in rows])
            for level, conv, _ in rows:
                conversions[level] += conv
        factors = [1.0] * INTENT_LEVELS
        bases = _bases_at(s, numerators, unknown, levels, factors)
        for _ in range(JOINT_ROUNDS):
            expected = [0.0] * INTENT_LEVELS
            for base, per_level in zip(bases, levels, strict=True):
                for level, n in per_level:
                    expected[level] += n * base
            factors = [(c + a) / (e + a) for c, e in zip(conversions, expected, strict=True)]
            bases = _bases_at(s, numerators, unknown, levels, factors)
        self._bases = dict(zip(cells, bases, strict=True))
        self._factors = factors

    def learn(self, offer_id: str, converted: bool, intent: int = NO_INTENT) -> None:
        counts = self._counts.get(offer_id)
        if counts is None:
            counts = self._counts[offer_id] = [0.0, 0.0]
        counts[0] += converted
        counts[1] += 1.0
        if intent != NO_INTENT:
            key = (offer_id, intent)
            by = self._by_intent.get(key)
            if by is None:
                by = self._by_intent[key] = [0.0, 0.0]
            by[0] += converted
            by[1] += 1.0
        self._factors = None

    def counts(self) -> dict[str, tuple[float, float]]:
        """(conversions, clicks with an outcome) per offer, sorted: what a snapshot keeps."""
        return {oid: (c[0], c[1]) for oid, c in sorted(self._counts.items())}

    def intent_counts(self) -> list[tuple[str, int, float, float]]:
        """(offer id, intent level, conversions, clicks with an outcome), sorted."""
        return [(oid, lv, c[0], c[1]) for (oid, lv), c in sorted(self._by_intent.items())]

    def load(
        self,
        counts: Mapping[str, tuple[float, float]],
        intents: list[tuple[str, int, float, float]] | None = None,
    ) -> None:
        self._counts = {oid: [conv, clicks] for oid, (conv, clicks) in counts.items()}
        self._by_intent = {
            (oid, lv): [conv, clicks]
            for oid, lv, conv, clicks in intents or []
            if 0 <= lv < INTENT_LEVELS
        }
        self._factors = None


def _bases_at(
    strength: float,
    numerators: list[float],
    unknown: list[float],
    levels: list[list[tuple[int, float]]],
    factors: list[float],
) -> list[float]:
    """Each offer's base rate given the factors (``ConversionModel._fit``): its conversions
    over its clicks, each click weighted by its level's factor (1 for a click of unknown
    intent), with the catalog's prior worth ``strength`` clicks."""
    bases: list[float] = []
    for numerator, rest, rows in zip(numerators, unknown, levels, strict=True):
        weighted = 0.0
        for level, n in rows:
            weighted += n * factors[level]
        bases.append(numerator / (strength + weighted + rest))
    return bases
