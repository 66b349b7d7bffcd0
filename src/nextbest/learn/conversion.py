"""P(conversion | click) per offer, learned from the offer's KPI event after its clicks.

A click on an offer with a ``kpi_event`` waits (``PendingConversion``) for that event from
the same customer (across stitched identities) within the campaign's ``attribution_days``
(7 without a campaign); when the KPI event names a ``product``, it must be one of the
offer's topic. One KPI event converts one click: the latest before it, as the offline join
(``learn.logs``) credits it. The window passing without one is a click that did not convert.

The estimate is a Beta posterior per offer whose prior is the catalog's
(``CompiledOffer.base_conversion``) worth ``scoring.conversion_strength`` clicks:
``(prior x strength + conversions) / (strength + clicks with an outcome)``. Thin data stay
near the catalog's figure; a few hundred clicks speak for themselves. Pure and
deterministic: the same events in the same order give the same counts.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from nextbest.catalog.compiled import CompiledOffer

__all__ = ["ConversionModel", "PendingConversion"]


class PendingConversion(msgspec.Struct, array_like=True, frozen=True, order=True, gc=False):
    """A click waiting for its offer's KPI event until ``deadline``."""

    deadline: float
    clicked_at: float
    customer: str
    offer_id: str
    kpi_event: str


class ConversionModel:
    """Per offer: clicks with a known outcome and the conversions among them."""

    __slots__ = ("_counts", "strength")

    def __init__(self, strength: float) -> None:
        self.strength = strength
        #: offer id -> [conversions, clicks with an outcome]
        self._counts: dict[str, list[float]] = {}

    def predict(self, offer: CompiledOffer) -> float:
        """The posterior mean of ``offer``'s P(conversion | click)."""
        conversions, clicks = self._counts.get(offer.id, (0.0, 0.0))
        s = self.strength
        return (offer.base_conversion * s + conversions) / (s + clicks)

    def learn(self, offer_id: str, converted: bool) -> None:
        counts = self._counts.get(offer_id)
        if counts is None:
            counts = self._counts[offer_id] = [0.0, 0.0]
        counts[0] += converted
        counts[1] += 1.0

    def counts(self) -> dict[str, tuple[float, float]]:
        """(conversions, clicks with an outcome) per offer, sorted: what a snapshot keeps."""
        return {oid: (c[0], c[1]) for oid, c in sorted(self._counts.items())}

    def load(self, counts: Mapping[str, tuple[float, float]]) -> None:
        self._counts = {oid: [conv, clicks] for oid, (conv, clicks) in counts.items()}
