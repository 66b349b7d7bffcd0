"""P(conversion | click) per offer and per intent, learned from the offer's KPI event after
its clicks.

A click on an offer with a ``kpi_event`` waits (``PendingConversion``) for that event from
the same customer (across stitched identities) within the campaign's ``attribution_days``
(7 without a campaign); when the KPI event names a ``product``, it must be one of the
offer's topic. One KPI event converts one click: the latest before it, as the offline join
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
catalog's ``half_saturation``), and one factor per level, pooled over every offer, says how
much more or less that level converts than the offers' own rates predict::

    factor(level) = (conversions at level + a) / (sum of rate(o) over its clicks + a)

with ``a = INTENT_STRENGTH`` expected conversions of prior weight: 1 (no difference) until
conversions show one. ``predict(offer, level) = rate(offer) x factor(level)``. The factors
are pooled because conversions are rare (tens a month on a placement), and the per-offer
rate already carries what is particular to an offer. Pure and deterministic: the same
events in the same order give the same counts.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from nextbest.catalog.compiled import CompiledOffer

__all__ = [
    "INTENT_LEVELS",
    "INTENT_STRENGTH",
    "NO_INTENT",
    "ConversionModel",
    "PendingConversion",
    "intent_level",
]

#: levels of intent: no interest in the offer's topic, some, at least half the saturation
INTENT_LEVELS = 3
#: a click whose intent is unknown (waiting since before intents were kept)
NO_INTENT = -1
#: the prior weight of each intent factor, in expected conversions
INTENT_STRENGTH = 5.0


def intent_level(interest: float, half_saturation: float) -> int:
    """The intent level of a decayed topic ``interest`` score (0, 1 or 2)."""
    if interest <= 0.0:
        return 0
    return 1 if interest < half_saturation else 2


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

    __slots__ = ("_by_intent", "_counts", "_factors", "strength")

    def __init__(self, strength: float) -> None:
        self.strength = strength
        #: offer id -> [conversions, clicks with an outcome]
        self._counts: dict[str, list[float]] = {}
        #: (offer id, intent level) -> [conversions, clicks with an outcome]
        self._by_intent: dict[tuple[str, int], list[float]] = {}
        #: the intent factors, computed when first asked after a change
        self._factors: list[float] | None = None

    def rate(self, offer: CompiledOffer) -> float:
        """The posterior mean of ``offer``'s P(conversion | click), all intents together."""
        conversions, clicks = self._counts.get(offer.id, (0.0, 0.0))
        s = self.strength
        return (offer.base_conversion * s + conversions) / (s + clicks)

    def predict(
        self,
        offer: CompiledOffer,
        intent: int = NO_INTENT,
        offers: Mapping[str, CompiledOffer] | None = None,
    ) -> float:
        """``offer``'s P(conversion | click) for a customer at ``intent`` (``rate`` when
        unknown); ``offers``: the catalog's, which the factors are computed over."""
        p = self.rate(offer)
        if intent == NO_INTENT or offers is None:
            return p
        return min(p * self.factors(offers)[intent], 1.0)

    def factors(self, offers: Mapping[str, CompiledOffer]) -> list[float]:
        """One factor per intent level (module docstring)."""
        if self._factors is not None:
            return self._factors
        conversions = [0.0] * INTENT_LEVELS
        expected = [0.0] * INTENT_LEVELS
        for (offer_id, level), (conv, clicks) in sorted(self._by_intent.items()):
            offer = offers.get(offer_id)
            if offer is None:
                continue
            conversions[level] += conv
            expected[level] += clicks * self.rate(offer)
        a = INTENT_STRENGTH
        self._factors = [(c + a) / (e + a) for c, e in zip(conversions, expected, strict=True)]
        return self._factors

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
