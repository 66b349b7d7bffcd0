"""The advisor card: what a placement of kind ``advisor`` shows a customer.

- **topic**: the customer's hottest live topic that has an expert: the highest decayed
  interest among the topics some advisor is an expert in, whose interest has not faded
  (``contact_policy.fade_below``, as for offers) and that the caller's contact policy does
  not hold back (``skip``); a topic that can offer neither a call now nor a free slot gives
  way to the next;
- **reason**, in the customer's words: "viewed mortgage pages 5 times in 14 days";
- **advisor**: the best expert who can call now (``advisors.selection``); when nobody can,
  the expert of the earliest free slot;
- **actions**: ``now``, ``later`` and ``at`` when someone can call now; only ``later`` and
  ``at``, with the next free slots (``callbacks.card_slots``, one per start), when nobody can.

No card without consent (``may_contact``): the card reads behaviour (``personalization``) and
invites a call (``advisor_contact``, a purpose the customer may set; unset, the contact
policy's default for it, else the customer's ``marketing`` consent).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from typing import NamedTuple

import msgspec

from nextbest.advisors.board import AdvisorBoard
from nextbest.advisors.selection import best_expert
from nextbest.advisors.shift import LocalClock
from nextbest.advisors.slots import Slot, free_slots
from nextbest.catalog.compiled import Catalog, CompiledAdvisor
from nextbest.profile.interest import REASON_DAYS, decayed, viewed, viewed_text
from nextbest.profile.model import Profile
from nextbest.profile.windows import count_in_days
from nextbest.types import Timestamp

__all__ = [
    "ADVISOR_CONTACT",
    "AdvisorCard",
    "CardAction",
    "CardAdvisor",
    "LiveTopic",
    "advisor_card",
    "live_topics",
    "may_contact",
]

#: the consent purpose of being called by an advisor
ADVISOR_CONTACT = "advisor_contact"


class CardAction(enum.StrEnum):
    """What the customer may ask for on the card (``CallbackMode`` of the callback)."""

    NOW = "now"  #: "call me now"
    LATER = "later"  #: "call me later": the earliest free slot
    AT = "at"  #: "pick a time"


class CardAdvisor(msgspec.Struct, frozen=True, gc=False):
    """The advisor the card shows."""

    id: str
    name: str
    photo_url: str | None
    languages: list[str]
    #: their expertise level in the card's topic (1-5)
    level: int
    team: str = ""


class AdvisorCard(msgspec.Struct, frozen=True, gc=False):
    """An advisor card: an expert in the customer's hottest live topic, and what the
    customer may ask for."""

    topic: str
    topic_name: str
    #: why the card is shown, in the customer's words
    reason: str
    advisor: CardAdvisor
    actions: list[CardAction]
    #: someone can call now (then ``now`` is among the actions)
    available: bool
    #: the next free slots, one per start, when nobody can call now ("pick a time")
    slots: list[Slot] = []
    #: the decayed interest in the topic, as of the decision
    interest: float = 0.0
    #: what ``reason`` says: the topic's hits in the last ``days`` days (0, 0: none in any
    #: of ``REASON_DAYS``, only a decayed interest)
    count: int = 0
    days: int = 0


class LiveTopic(NamedTuple):
    """A topic with an expert in which the customer's interest is live."""

    topic: str
    interest: float
    reason: str
    #: (days, hits) the reason speaks of (``profile.interest.viewed``)
    seen: tuple[int, int] | None = None


def may_contact(catalog: Catalog, profile: Profile) -> bool:
    """The customer lets the bank use their behaviour (``personalization``) and invite them
    to a call (``advisor_contact``; unset: its default, else ``marketing``)."""
    policy = catalog.policy
    if policy.consented(profile.consent, "personalization") is not True:
        return False
    contact = policy.consented(profile.consent, ADVISOR_CONTACT)
    if contact is None:
        contact = policy.consented(profile.consent, "marketing")
    return contact is True


def live_topics(catalog: Catalog, profile: Profile, now: Timestamp) -> list[LiveTopic]:
    """The topics with an expert whose interest is live (seen, not faded), hottest first
    (then by id)."""
    fade = catalog.policy.fade_below
    found: list[LiveTopic] = []
    for topic in catalog.experts:
        it = profile.interests.get(topic)
        if it is None or it.total == 0:
            continue
        spec = catalog.topics[topic]
        interest = decayed(it.score, it.score_at, now, spec.half_life)
        if interest < fade:
            continue
        name = spec.name.lower()
        counts = {d: count_in_days(it.hits, d, now) for d in REASON_DAYS}
        reason = viewed_text(name, counts) or f"interested in {name}"
        found.append(LiveTopic(topic, interest, reason, viewed(counts)))
    found.sort(key=lambda t: (-t.interest, t.topic))
    return found


def advisor_card(
    catalog: Catalog,
    profile: Profile,
    board: AdvisorBoard,
    now: Timestamp,
    *,
    language: str | None = None,
    skip: Collection[str] = (),
    live: Sequence[LiveTopic] | None = None,
) -> AdvisorCard | None:
    """The card for ``profile`` at ``now`` (the module docstring), or None: no consent, no
    live topic with an expert outside ``skip``, or none that can offer a call or a slot.
    ``language``: the customer's (ISO 639-1), preferred in the experts' ranking; ``live``:
    ``live_topics`` of the profile at ``now`` when the caller has them already."""
    if not may_contact(catalog, profile):
        return None
    clock = LocalClock(now)
    for topic in live_topics(catalog, profile, now) if live is None else live:
        if topic.topic in skip:
            continue
        card = _card(catalog, board, now, topic, language, clock)
        if card is not None:
            return card
    return None


def _card(
    catalog: Catalog,
    board: AdvisorBoard,
    now: Timestamp,
    live: LiveTopic,
    language: str | None,
    clock: LocalClock,
) -> AdvisorCard | None:
    expert = best_expert(catalog, live.topic, board, now, language=language, clock=clock)
    if expert is not None:
        actions = [CardAction.NOW, CardAction.LATER, CardAction.AT]
        return _made(catalog, live, expert, actions, available=True)
    slots = free_slots(
        catalog,
        live.topic,
        board,
        now,
        language=language,
        limit=catalog.callbacks.card_slots,
        distinct=True,
    )
    if not slots:
        return None
    first = catalog.advisors[slots[0].advisor_id]
    actions = [CardAction.LATER, CardAction.AT]
    return _made(catalog, live, first, actions, available=False, slots=slots)


def _made(
    catalog: Catalog,
    live: LiveTopic,
    advisor: CompiledAdvisor,
    actions: list[CardAction],
    *,
    available: bool,
    slots: list[Slot] | None = None,
) -> AdvisorCard:
    spec = advisor.spec
    return AdvisorCard(
        topic=live.topic,
        topic_name=catalog.topics[live.topic].name,
        reason=live.reason,
        count=live.seen[1] if live.seen else 0,
        days=live.seen[0] if live.seen else 0,
        advisor=CardAdvisor(
            id=spec.id,
            name=spec.name,
            photo_url=spec.photo_url,
            languages=list(spec.languages),
            level=advisor.levels[live.topic],
            team=spec.team,
        ),
        actions=actions,
        available=available,
        slots=slots or [],
        interest=round(live.interest, 6),
    )
