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
because conversions are rare (tens a month on a placement).

**When it is fitted**: not after every outcome (a fit walks every offer's cells
``JOINT_ROUNDS`` times: with 150 offers, more than a decision's budget), but when the outcomes
learned since the last fit reach ``1 / REFIT_DIVISOR`` of all outcomes learned (every outcome
while there are fewer than ``REFIT_DIVISOR``). The fit is done as that outcome is learned, so
its cost falls on the ingestion of one outcome in N, never on a decision, and it is a function
of the outcomes alone: the same outcomes in the same order give the same fits and the same
predictions, however many decisions came between them. Between fits, the fitted factors and
base rates (the pooled prior) stay as they were while each offer's own counts (``rate`` and its
cell at a level) are read live: an outcome still moves its offer's prediction at once, only
the pooled figure waits (for at most a fiftieth more evidence). The fit and the throttle's
counter are a snapshot's (``fitted``, ``load``). Pure and deterministic: no clock, no I/O.
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
    "REFIT_DIVISOR",
    "ConversionFit",
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
#: the fit is redone when the outcomes since the last one reach this fraction of all outcomes
#: (1/50: a fit per outcome up to 50 outcomes, then one per 2 % more evidence: 257 fits in
#: all for 5,000 outcomes, 292 for 10,000, 405 for 100,000; BENCHMARKS.md, "throttled refit")
REFIT_DIVISOR = 50
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


class ConversionFit(msgspec.Struct, frozen=True, kw_only=True):
    """What a snapshot keeps of a ``ConversionModel``'s last fit: the intent factors, each
    offer's base rate (by offer id, sorted), and the outcomes learned since (the throttle's
    counter)."""

    factors: list[float]
    bases: dict[str, float]
    since: int = 0


class ConversionModel:
    """Per offer: clicks with a known outcome and the conversions among them; per (offer,
    intent level) the same, for the intent factors, fitted over ``offers`` (the catalog's)
    when enough outcomes came since the last fit (module docstring)."""

    __slots__ = (
        "_bases",
        "_by_intent",
        "_counts",
        "_factors",
        "_outcomes",
        "_since",
        "fits",
        "offers",
        "strength",
    )

    def __init__(self, strength: float, offers: Mapping[str, CompiledOffer]) -> None:
        self.strength = strength
        self.offers = offers
        #: offer id -> [conversions, clicks with an outcome]
        self._counts: dict[str, list[float]] = {}
        #: (offer id, intent level) -> [conversions, clicks with an outcome]
        self._by_intent: dict[tuple[str, int], list[float]] = {}
        #: the intent factors of the last fit (no data: no difference)
        self._factors: list[float] = [1.0] * INTENT_LEVELS
        #: each offer's rate with its clicks' intents taken out, fitted with the factors
        self._bases: dict[str, float] = {}
        #: outcomes learned in all, and since the last fit (the throttle)
        self._outcomes = 0
        self._since = 0
        #: fits this object has done (a count for tests and benchmarks, not a snapshot's)
        self.fits = 0

    def rate(self, offer: CompiledOffer) -> float:
        """The posterior mean of ``offer``'s P(conversion | click), all intents together."""
        conversions, clicks = self._counts.get(offer.id, (0.0, 0.0))
        return shrunk(conversions, clicks, offer.base_conversion, self.strength)

    def predict(self, offer: CompiledOffer, intent: int = NO_INTENT) -> float:
        """``offer``'s P(conversion | click) for a customer at ``intent``: its own rate at
        that level with ``pooled`` as the prior (``rate`` when the intent is unknown or
        ``offer`` is a service message)."""
        if intent == NO_INTENT or offer.kind is OfferKind.SERVICE:
            return self.rate(offer)
        pooled = self.pooled(offer, intent)
        cell = self._by_intent.get((offer.id, intent))
        if cell is None:
            return pooled
        return min(shrunk(cell[0], cell[1], pooled, self.strength), 1.0)

    def pooled(self, offer: CompiledOffer, intent: int) -> float:
        """``offer``'s base rate times the factor of ``intent`` (a level), as last fitted:
        what the other offers' differences between levels say of it."""
        factor = self.factors()[intent]
        base = self._bases.get(offer.id)
        if base is None:  # no click of it filed under an intent at the last fit: its own rate
            base = self.rate(offer)
        return min(base * factor, 1.0)

    def factors(self) -> list[float]:
        """One factor per intent level, as last fitted with the offers' base rates (module
        docstring); the model's own list, not to be changed."""
        return self._factors

    def fit(self) -> None:
        """The factors and each offer's base rate fitted together now, from every outcome
        learned (module docstring); ``learn`` calls it when one is due."""
        offers = self.offers
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
        self._since = 0
        self.fits += 1

    def learn(self, offer_id: str, converted: bool, intent: int = NO_INTENT) -> None:
        """One click's outcome; then a fit if the outcomes since the last one reach
        ``1 / REFIT_DIVISOR`` of all outcomes."""
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
        self._outcomes += 1
        self._since += 1
        if self._since * REFIT_DIVISOR >= self._outcomes:
            self.fit()

    def counts(self) -> dict[str, tuple[float, float]]:
        """(conversions, clicks with an outcome) per offer, sorted: what a snapshot keeps."""
        return {oid: (c[0], c[1]) for oid, c in sorted(self._counts.items())}

    def intent_counts(self) -> list[tuple[str, int, float, float]]:
        """(offer id, intent level, conversions, clicks with an outcome), sorted."""
        return [(oid, lv, c[0], c[1]) for (oid, lv), c in sorted(self._by_intent.items())]

    def fitted(self) -> ConversionFit:
        """The last fit and the outcomes since: what a snapshot keeps of it."""
        return ConversionFit(
            factors=list(self._factors), bases=dict(sorted(self._bases.items())), since=self._since
        )

    def load(
        self,
        counts: Mapping[str, tuple[float, float]],
        intents: list[tuple[str, int, float, float]] | None = None,
        fitted: ConversionFit | None = None,
    ) -> None:
        """The counts (and intent counts) a snapshot kept, with its fit (``fitted``); a
        snapshot from before fits were kept is fitted now (as its model was after its last
        outcome)."""
        self._counts = {oid: [conv, clicks] for oid, (conv, clicks) in counts.items()}
        self._by_intent = {
            (oid, lv): [conv, clicks]
            for oid, lv, conv, clicks in intents or []
            if 0 <= lv < INTENT_LEVELS
        }
        self._outcomes = round(sum(clicks for _, clicks in counts.values()))
        if fitted is None or len(fitted.factors) != INTENT_LEVELS:
            self.fit()
            return
        self._factors = list(fitted.factors)
        self._bases = dict(fitted.bases)
        self._since = fitted.since


def _bases_at(
    strength: float,
    numerators: list[float],
    unknown: list[float],
    levels: list[list[tuple[int, float]]],
    factors: list[float],
) -> list[float]:
    """Each offer's base rate given the factors (``ConversionModel.fit``): its conversions
    over its clicks, each click weighted by its level's factor (1 for a click of unknown
    intent), with the catalog's prior worth ``strength`` clicks."""
    bases: list[float] = []
    for numerator, rest, rows in zip(numerators, unknown, levels, strict=True):
        weighted = 0.0
        for level, n in rows:
            weighted += n * factors[level]
        bases.append(numerator / (strength + weighted + rest))
    return bases
