"""Feedback joins a decision: ``Promotion Viewed / Clicked / Dismissed`` name the decision
they answer. Pure checks, so a bad join is set apart (quarantined, never learned) before
anything is stored: a VocabularyError with code ``unmatched_feedback``.

A feedback event is accepted only when its ``decision_id`` is in the decision log (or the
not-yet-flushed buffer), the decision was made for the same customer (the same profile after
stitching, or the very id the decision was made for), the ``promotion_id`` was one of the
decision's items, and a numeric ``position``, when sent, is the one the item was shown at.
"""

from __future__ import annotations

from collections.abc import Iterable

from nextbest.decide.model import Decision, DecisionItem
from nextbest.errors import VocabularyError
from nextbest.events.model import Event
from nextbest.events.names import EventName

__all__ = ["FEEDBACK_EVENTS", "any_feedback", "check_feedback", "is_feedback"]

FEEDBACK_EVENTS: frozenset[str] = frozenset(
    {EventName.PROMOTION_VIEWED, EventName.PROMOTION_CLICKED, EventName.PROMOTION_DISMISSED}
)


def is_feedback(event: Event) -> bool:
    return event.name in FEEDBACK_EVENTS


def any_feedback(events: Iterable[Event]) -> bool:
    """Some of ``events`` is feedback (asked of every request: a loop, not ``any`` over a
    generator, which costs a function and a generator a call)."""
    for event in events:  # noqa: SIM110 (the docstring)
        if event.name in FEEDBACK_EVENTS:
            return True
    return False


def check_feedback(
    event: Event, decision: Decision | None, same_customer: bool, where: str
) -> DecisionItem:
    """The decision item this feedback answers; VocabularyError (field path) otherwise."""
    props = event.properties
    decision_id = str(props["decision_id"])
    if decision is None:
        raise VocabularyError(
            f"unknown decision_id {decision_id!r}",
            f"{where}.properties.decision_id",
            "unmatched_feedback",
        )
    if not same_customer:
        raise VocabularyError(
            f"decision {decision_id!r} was made for another customer",
            f"{where}.properties.decision_id",
            "unmatched_feedback",
        )
    offer = str(props["promotion_id"])
    item = next((i for i in decision.items if i.offer_id == offer), None)
    if item is None:
        raise VocabularyError(
            f"offer {offer!r} was not shown in decision {decision_id!r}",
            f"{where}.properties.promotion_id",
            "unmatched_feedback",
        )
    position = props.get("position")
    # Segment's spec also allows a slot name ("home_banner_top"): only numbers are checked
    if isinstance(position, int) and not isinstance(position, bool) and position != item.position:
        raise VocabularyError(
            f"offer {offer!r} was shown at position {item.position}, not {position!r}",
            f"{where}.properties.position",
            "unmatched_feedback",
        )
    return item
