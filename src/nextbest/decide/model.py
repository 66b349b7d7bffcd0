"""Decision request and result shapes."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from nextbest.advisors.card import AdvisorCard
from nextbest.catalog.compiled import CompiledOffer
from nextbest.catalog.model import OfferKind
from nextbest.decide.reasons import Reason, Suppression
from nextbest.experiments.assignment import Arm
from nextbest.profile.model import Profile

__all__ = [
    "Candidate",
    "Choice",
    "ChoiceContext",
    "Chooser",
    "Decision",
    "DecisionItem",
    "DecisionRequest",
    "Excluded",
    "ItemKind",
    "PropensityKind",
]


class PropensityKind(enum.StrEnum):
    """How a logged propensity was obtained: ``exact``; ``monte_carlo`` (Thompson sampling's
    seeded estimate of its marginal, in logs written before its propensities became exact,
    ``learn.explore``) or ``sequential`` (a softmax slot logged as P(item | the items above
    it)): not exact marginals, so slot-level off-policy estimates may be biased."""

    EXACT = "exact"
    SEQUENTIAL = "sequential"
    MONTE_CARLO = "monte_carlo"


class ItemKind(enum.StrEnum):
    """What a decision item is: an offer of either kind (``OfferKind``: a service message,
    a commercial offer), or an advisor card (a placement of kind ``advisor``)."""

    SERVICE = "service"
    COMMERCIAL = "commercial"
    ADVISOR = "advisor"

    @classmethod
    def of(cls, kind: OfferKind) -> ItemKind:
        """The item kind of an offer of ``kind``."""
        return _OFFER_ITEM_KINDS[kind]


_OFFER_ITEM_KINDS = {OfferKind.SERVICE: ItemKind.SERVICE, OfferKind.COMMERCIAL: ItemKind.COMMERCIAL}


class DecisionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``exclude``: offers the page already shows (in another placement), not shown twice."""

    placement: str
    limit: int | None = None
    context: dict[str, Any] = {}
    exclude: frozenset[str] = frozenset()


class DecisionItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One item to render. ``p_click`` is the estimated click probability; ``propensity`` the
    probability that the policy put this offer in this position (1.0: deterministic).

    An advisor card (``kind`` ``advisor``) names its card (``advisor:<topic>``) as its
    ``offer_id`` (feedback names it as its ``promotion_id``) and carries the card in
    ``advisor``."""

    position: int
    offer_id: str
    kind: ItemKind
    campaign_id: str | None
    arm: Arm
    score: float
    p_click: float
    propensity: float
    content: dict[str, Any]
    reasons: list[Reason]
    #: placed by exploration, not where the greedy order would have put it
    explored: bool = False
    propensity_kind: PropensityKind = PropensityKind.EXACT
    #: the estimated P(conversion | click) the score used (learned, or the catalog's prior)
    p_convert: float | None = None
    #: the campaign's variant whose content is shown (None: the campaign has no variants)
    variant: str | None = None
    #: the advisor card (kind ``advisor`` only): the expert, the reason, the actions, slots
    advisor: AdvisorCard | None = None
    #: the data sources (``profile.consent.DataSource``) this item was chosen from: those of
    #: ``features`` (empty: nothing about the customer, e.g. fallback content)
    sources: list[str] = []
    #: the features deciding on it read (``interest.mortgage``, ``profile.age``,
    #: ``offers.<id>.clicks_7d``) that the customer's consent let it read; a learned score's
    #: inputs are the decision's ``features``
    features: list[str] = []


class Candidate(msgspec.Struct, frozen=True, gc=False):
    """An eligible offer, in the engine's order, offered to a ``Chooser``."""

    offer: CompiledOffer
    p_click: float
    score: float
    #: a service message whose trigger holds (``OfferSpec.urgent``): first, never explored
    urgent: bool = False
    #: a learned P(conversion | click) (None: the catalog's prior, ``base_conversion``)
    p_convert: float | None = None


class ChoiceContext(msgspec.Struct, frozen=True, gc=False):
    """What a chooser may know of the decision: ``profile`` is what the decision may see
    (without personalization consent: no behaviour), ``segments`` the ones it is in.

    ``counterfactual``: the choice is asked only to see where a control customer's withheld
    offers would have landed (``decide.pipeline``, step 7): the chooser must answer as it
    would for real (same scores, same exploration draw: it is seeded by ``decision_id``) and
    change nothing (no exploration budget counted, no shared random state advanced). The
    real choice for the same decision follows, among the candidates without those offers.
    ``withheld``: those offers' ids; only their places are wanted, so the other items of a
    counterfactual choice may stand in for the real ones where that spares work
    (``learn.explore.rank``'s ``watch``)."""

    decision_id: str
    placement: str
    now: float
    profile: Profile
    context: dict[str, Any]
    segments: list[str]
    counterfactual: bool = False
    withheld: frozenset[str] = frozenset()


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    """A chooser's answer. ``picks``: (candidate index, propensity) per slot, best first; the
    propensity is the probability that the choosing policy puts that candidate in that slot
    (1.0: deterministic). ``explored`` per pick; ``p_click`` per candidate when a learned
    model replaced the catalog's prior, ``p_convert`` when learned conversion rates replaced
    the catalog's (scores become p_click x p_convert x value x weight); ``features`` and
    ``model_version`` go to the decision log."""

    picks: list[tuple[int, float]]
    explored: list[bool] = []
    #: per pick: how the propensity was obtained (see ``DecisionItem.propensity_kind``)
    kinds: list[PropensityKind] = []
    p_click: list[float] | None = None
    p_convert: list[float] | None = None
    features: dict[str, float] | None = None
    model_version: str | None = None
    #: candidate indices the exploration budget kept from exploring: pinned to their greedy
    #: slot, or not placed (``Decision.unexplorable``)
    unexplorable: list[int] = []


#: picks what to show from the eligible candidates (engine order, service first), at most
#: ``limit`` of them
Chooser = Callable[[ChoiceContext, Sequence[Candidate], int], Choice]


class Excluded(msgspec.Struct, frozen=True, gc=False):
    offer_id: str
    why: Suppression


# Decisions and their items are gc=False: frozen, holding only scalars and containers of
# them (no cycles), and the engine keeps the 100,000 most recent for feedback joins, which
# the cyclic GC then need not walk (as with profiles).
class Decision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    decision_id: str
    customer_id: str
    placement: str
    timestamp: float
    catalog_version: str
    items: list[DecisionItem]
    excluded: list[Excluded]
    #: offers that would have been shown but for the customer's control arm (exposures)
    control: list[str]
    segments: list[str]
    #: every eligible offer the choice was made among, in the engine's order
    candidates: list[str] = []
    #: the candidates whose trigger held (urgent service messages: first, never explored)
    urgent: list[str] = []
    #: the placement's fallback content that could fill empty slots (in its order): shown
    #: in the slots the choice left empty (``PlacementSpec.fallback``)
    fallback: list[str] = []
    #: the candidates an exploring placement's choice could not explore: their campaign was
    #: over its exploration share (``learn.explore.ExplorationBudget``), so each was placed
    #: only where the greedy order put it (pinned), or not at all; offline evaluation says
    #: how much of a candidate policy's probability that rules out
    unexplorable: list[str] = []
    #: what the scores were computed from (enough to re-score offline)
    features: dict[str, float] = {}
    #: the click model that scored this decision ("prior": the catalog's interest prior)
    model_version: str = "prior"
    #: the customer's stable experiment id (``Profile.experiment_key``) when it differs from
    #: ``customer_id`` (a visitor first seen anonymously): whom the control exposures count
    experiment_key: str = ""
    #: what a control exposure freezes (``experiments.exposure``), logged when ``control``
    #: is not empty: per campaign of ``control``, each KPI's pre-exposure covariate
    covariates: dict[str, list[float]] = {}
    #: the customer's macro-segments then (lifecycle, engagement, holding, intent); the
    #: catalog's segments are ``segments``. Both read through the analytics view
    audiences: list[str] = []
    #: what the customer's analytics view hid then (``ConsentRules.hidden``: the sources
    #: withdrawn for analytics, ``analytics`` itself when withdrawn; the guard's findings
    #: left out), logged with ``covariates``: the counters leave the segments reading those
    #: out of the customer's audiences and count the exposure as withheld
    #: (``experiments.exposure``). Empty in decisions logged before it: nothing hidden
    analytics_hidden: list[str] = []
