"""What every ingesting process checks before it acknowledges a request, whoever then folds it:
the embedded engine (which appends and folds in the same call) and a stateless API worker
(which publishes to the bus for a fold worker) run exactly these steps.

    check_rights(...)   -> Forbidden or LimitExceeded for the whole request: what its key may
                           send (``guard.senders``), for which devices (``guard.devices``) and
                           what it may change in the identity map and profiles
                           (``guard.identity``), read from a ``ProfileBook``
    join_feedback(...)  -> feedback that answers no decision of its customer set apart (to be
                           quarantined with the messages that break the vocabulary), and the
                           decision each kept feedback event answers
    held_messages(...)  -> what is quarantined, as the quarantine port keeps it
    result_of(...)      -> a request's answer
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec

from nextbest.catalog.model import ProfileSettings
from nextbest.decide.feedback import any_feedback, check_feedback, is_feedback
from nextbest.decide.model import Decision
from nextbest.errors import VocabularyError
from nextbest.events.model import Event, EventType
from nextbest.events.parse import Parsed, Rejection
from nextbest.guard.devices import check_devices, needs_devices
from nextbest.guard.identity import check_identity
from nextbest.guard.senders import Sender, check_senders
from nextbest.profile.book import ProfileBook
from nextbest.store.port import HeldMessage

__all__ = [
    "IngestRequest",
    "IngestResult",
    "Plan",
    "Rejected",
    "check_rights",
    "held_messages",
    "join_feedback",
    "needs_devices",
    "needs_identity",
    "new_plan",
    "result_of",
]


class Rejected(msgspec.Struct, frozen=True):
    """A message of a request set apart (quarantined): where it sat and why."""

    index: int
    code: str
    message: str
    path: str


class IngestResult(msgspec.Struct, frozen=True):
    accepted: int
    duplicates: int
    #: messages that broke the vocabulary, quarantined; the others were kept
    rejected: list[Rejected] = []


class IngestRequest(NamedTuple):
    """One request's messages, who sent them, and where its messages sit in its body
    (``$.batch``; ``""`` for a single message)."""

    sender: Sender
    parsed: Parsed
    prefix: str


class Plan(NamedTuple):
    """A request checked: the events to keep (and the messages set apart), the decision each
    kept feedback event answers (by its place among the kept events), the sender's kind."""

    kept: Parsed
    joined: dict[int, Decision]
    sender: str


#: looked up once (each ``EventType.X`` read is a metaclass hook call in Python 3.11)
_IDENTIFY = EventType.IDENTIFY


def new_plan(kept: Parsed, joined: dict[int, Decision], sender: str) -> Plan:
    """``Plan(kept, joined, sender)``, made by ``tuple.__new__``: a NamedTuple's own
    ``__new__`` is a Python function, some 2,000 instructions a request."""
    return tuple.__new__(Plan, (kept, joined, sender))


def needs_identity(parsed: Parsed) -> bool:
    """The request links devices or sets traits: ``check_rights`` reads the identity map."""
    for e in parsed.events:  # noqa: SIM110 (``any`` over a generator costs more a request)
        if e.type is _IDENTIFY:
            return True
    return False


def check_rights(
    sender: Sender,
    parsed: Parsed,
    prefix: str,
    book: ProfileBook,
    profile: ProfileSettings,
    identity: bool | None = None,
) -> None:
    """Forbidden or LimitExceeded for the whole request: what its key may send, and what it
    may change in the identity map and profiles (``book``: the live one, or the part of it a
    stateless worker read for this request's customers). ``identity``:
    ``needs_identity(parsed)``, when the caller has asked it already."""
    rejected = parsed.rejected
    if rejected:
        events = [*parsed.events, *(r.event for r in rejected)]
        indexes = [*parsed.indexes, *(r.index for r in rejected)]
    else:
        events, indexes = parsed.events, parsed.indexes
    check_senders(sender, events, prefix, indexes)
    if needs_devices(sender, events):
        check_devices(sender, events, indexes, prefix, book.identity)
    if needs_identity(parsed) if identity is None else identity:
        check_identity(
            sender,
            parsed.events,
            parsed.indexes,
            prefix,
            book,
            profile.max_devices,
            profile.max_traits,
        )


def join_feedback(
    parsed: Parsed,
    prefix: str,
    decision_of: Callable[[str], Decision | None],
    same_customer: Callable[[str, Event], bool],
) -> tuple[Parsed, dict[int, Decision]]:
    """``parsed`` with feedback that answers no decision of its customer set apart, and the
    decision each kept feedback event answers, by its place among the kept events.
    ``same_customer(decision's customer, event)``: the event comes from that customer."""
    if not any_feedback(parsed.events):
        return parsed, {}
    kept = Parsed([], [], list(parsed.rejected))
    joined: dict[int, Decision] = {}
    for event, index in zip(parsed.events, parsed.indexes, strict=True):
        if is_feedback(event):
            decision = decision_of(str(event.properties["decision_id"]))
            same = decision is not None and same_customer(decision.customer_id, event)
            where = f"{prefix}[{index}]" if prefix else "$"
            try:
                check_feedback(event, decision, same, where)
            except VocabularyError as error:
                kept.rejected.append(Rejection(index, error, event))
                continue
            assert decision is not None  # checked
            joined[len(kept.events)] = decision
        kept.events.append(event)
        kept.indexes.append(index)
    return kept, joined


def held_messages(plans: Sequence[Plan]) -> list[HeldMessage]:
    """The messages the plans set apart, as the quarantine keeps them."""
    return [
        HeldMessage(
            0, r.event.received_at, r.error.code, r.error.message, r.error.path, sender, r.event
        )
        for parsed, _, sender in plans
        for r in parsed.rejected
    ]


def result_of(parsed: Parsed, accepted: int) -> IngestResult:
    """A request's answer: ``accepted`` of its kept events were new, the rest duplicates."""
    if not parsed.rejected:
        return IngestResult(accepted, len(parsed.events) - accepted, [])
    rejected = [
        Rejected(r.index, r.error.code, r.error.message, r.error.path)
        for r in sorted(parsed.rejected, key=lambda r: r.index)
    ]
    return IngestResult(accepted, len(parsed.events) - accepted, rejected)
