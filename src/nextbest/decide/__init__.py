"""Decide: eligible offers for one customer in one placement, ranked, each with reasons."""

from nextbest.decide.model import Decision, DecisionItem, DecisionRequest, Excluded
from nextbest.decide.pipeline import decide
from nextbest.decide.reasons import Reason, ReasonCode, Suppression
from nextbest.decide.score import click_prior

__all__ = [
    "Decision",
    "DecisionItem",
    "DecisionRequest",
    "Excluded",
    "Reason",
    "ReasonCode",
    "Suppression",
    "click_prior",
    "decide",
]
