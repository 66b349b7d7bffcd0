"""Selection: which expert takes a callback now.

Only advisors who can take it now are considered: an expert in the topic (a level in it),
within their working hours (``advisors.shift``), ``available``, holding fewer callbacks than
their ``max_concurrent``, and not one who declined or let this callback lapse
(``declined_by``). They are ranked, best first, by

1. expertise level in the topic (highest first);
2. language: one who speaks the customer's language first (no language: no preference);
3. load: the smallest share of their capacity in use first (least loaded);
4. rotation: the one assigned a callback longest ago first (never assigned: first of all),
   so equal experts take turns and callbacks spread evenly;
5. id, so the order is total and the same on every worker.

Pure: the board (``advisors.board``) says who is available, loaded and when last assigned.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from nextbest.advisors.board import AdvisorBoard, AdvisorState
from nextbest.advisors.model import Presence
from nextbest.advisors.shift import LocalClock, on_shift
from nextbest.catalog.compiled import Catalog, CompiledAdvisor
from nextbest.catalog.languages import LANGUAGES
from nextbest.types import Timestamp

__all__ = [
    "best_expert",
    "can_take_now",
    "customer_language",
    "rank_experts",
    "rank_key",
    "speaks",
]


def customer_language(*hints: object) -> str | None:
    """The ISO 639-1 code of the first hint that names a language (``da``, ``da-DK``,
    ``da_DK``, ``DA``), or None."""
    for hint in hints:
        if isinstance(hint, str) and len(hint) >= 2 and (len(hint) == 2 or hint[2] in "-_"):
            code = hint[:2].lower()
            if code in LANGUAGES:
                return code
    return None


def speaks(advisor: CompiledAdvisor, language: str | None) -> bool:
    """The advisor speaks ``language`` (None: any advisor does)."""
    return language is None or language in advisor.languages


def rank_key(
    advisor: CompiledAdvisor, topic: str, language: str | None, state: AdvisorState
) -> tuple[int, int, float, Timestamp, str]:
    """The ranking's key (the module docstring's order): smaller is better."""
    return (
        -advisor.levels[topic],
        0 if speaks(advisor, language) else 1,
        state.load / advisor.max_concurrent,
        state.last_assigned,
        advisor.id,
    )


def can_take_now(advisor: CompiledAdvisor, state: AdvisorState, clock: LocalClock) -> bool:
    """``available``, below capacity and on shift at ``clock.now``."""
    return (
        state.presence is Presence.AVAILABLE
        and state.load < advisor.max_concurrent
        and on_shift(advisor, clock)
    )


def _ready(
    catalog: Catalog,
    topic: str,
    board: AdvisorBoard,
    declined_by: Collection[str],
    clock: LocalClock,
) -> Iterator[tuple[CompiledAdvisor, AdvisorState]]:
    """The experts in ``topic`` who did not decline and can take a callback now, each with
    their state on the board, in the catalog's order."""
    for a in catalog.experts.get(topic, ()):
        if a.id in declined_by:
            continue
        state = board.state(a.id)
        if can_take_now(a, state, clock):
            yield a, state


def rank_experts(
    catalog: Catalog,
    topic: str,
    board: AdvisorBoard,
    now: Timestamp,
    *,
    language: str | None = None,
    declined_by: Collection[str] = (),
    clock: LocalClock | None = None,
) -> list[CompiledAdvisor]:
    """The experts in ``topic`` who can take a callback at ``now``, best first."""
    ready = _ready(catalog, topic, board, declined_by, clock or LocalClock(now))
    return [a for a, _ in sorted(ready, key=lambda r: rank_key(r[0], topic, language, r[1]))]


def best_expert(
    catalog: Catalog,
    topic: str,
    board: AdvisorBoard,
    now: Timestamp,
    *,
    language: str | None = None,
    declined_by: Collection[str] = (),
    clock: LocalClock | None = None,
) -> CompiledAdvisor | None:
    """The best expert in ``topic`` who can take a callback at ``now``, or None: the first
    of ``rank_experts``, found without sorting them all."""
    ready = _ready(catalog, topic, board, declined_by, clock or LocalClock(now))
    best = min(ready, key=lambda r: rank_key(r[0], topic, language, r[1]), default=None)
    return None if best is None else best[0]
