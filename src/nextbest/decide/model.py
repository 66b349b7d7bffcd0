"""Decision request and result shapes."""

from __future__ import annotations

from typing import Any

import msgspec

from nextbest.decide.reasons import Reason, Suppression
from nextbest.experiments.assignment import Arm

__all__ = ["Decision", "DecisionItem", "DecisionRequest", "Excluded"]


class DecisionRequest(msgspec.Struct, frozen=True, kw_only=True):
    placement: str
    limit: int | None = None
    context: dict[str, Any] = {}


class DecisionItem(msgspec.Struct, frozen=True, kw_only=True):
    """One item to render. ``p_click`` is the estimated click probability; ``propensity`` the
    probability that the policy put this offer in this position (1.0: deterministic)."""

    position: int
    offer_id: str
    kind: str
    campaign_id: str | None
    arm: Arm
    score: float
    p_click: float
    propensity: float
    content: dict[str, Any]
    reasons: list[Reason]


class Excluded(msgspec.Struct, frozen=True, gc=False):
    offer_id: str
    why: Suppression


class Decision(msgspec.Struct, frozen=True, kw_only=True):
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
