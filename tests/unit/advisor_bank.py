"""A small bank of advisors for the advisors tests: topics, an advisor placement, advisors
built from a few arguments, boards and callbacks, and moments in local time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nextbest.advisors.board import AdvisorBoard, AdvisorState
from nextbest.advisors.model import Callback, CallbackMode, Presence
from nextbest.catalog.compile import compile_catalog
from nextbest.catalog.compiled import Catalog
from nextbest.catalog.source_map import SourceMap

CPH = "Europe/Copenhagen"
LDN = "Europe/London"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
NINE_TO_FIVE = {d: ["09:00-17:00"] for d in WEEKDAYS}

TOPICS = [
    {"id": "mortgage", "name": "Mortgage", "url_patterns": ["/mortgages*"]},
    {"id": "pension", "name": "Pension", "url_patterns": ["/pension*"], "half_life_days": 30},
    {"id": "cards", "name": "Credit card", "url_patterns": ["/cards*"], "products": ["card"]},
]
PLACEMENTS = [
    {"id": "card", "channel": "web", "kind": "advisor"},
    {"id": "feed", "channel": "web", "slots": 2},
]


def advisor(
    ident: str,
    expertise: Mapping[str, int],
    *,
    languages: tuple[str, ...] = ("da",),
    zone: str = CPH,
    weekly: Mapping[str, list[str]] | None = None,
    exceptions: Mapping[str, list[str]] | None = None,
    max_concurrent: int = 1,
) -> dict[str, Any]:
    return {
        "id": ident,
        "name": ident.replace("_", " ").title(),
        "photo_url": f"/img/{ident}.jpg",
        "expertise": [{"topic": t, "level": level} for t, level in expertise.items()],
        "languages": list(languages),
        "working_hours": {
            "timezone": zone,
            "weekly": dict(NINE_TO_FIVE if weekly is None else weekly),
            "exceptions": dict(exceptions or {}),
        },
        "max_concurrent": max_concurrent,
    }


def bank(
    advisors: list[dict[str, Any]], callbacks: Mapping[str, Any] | None = None, **extra: Any
) -> Catalog:
    raw: dict[str, Any] = {"topics": TOPICS, "placements": PLACEMENTS, "advisors": advisors}
    if callbacks is not None:
        raw["callbacks"] = dict(callbacks)
    raw.update(extra)
    return compile_catalog(raw, SourceMap(), digest="0" * 64, source="advisor_bank")


def at(text: str) -> float:
    """An ISO date-time with its offset, as epoch seconds."""
    return datetime.fromisoformat(text).timestamp()


def board(**presence: str) -> AdvisorBoard:
    """A board with these advisors' presence (nothing held, never assigned)."""
    return AdvisorBoard({a: AdvisorState(presence=Presence(p)) for a, p in presence.items()})


def available(*advisors: str) -> AdvisorBoard:
    return board(**dict.fromkeys(advisors, "available"))


def callback(
    ident: str = "cb1",
    *,
    topic: str = "mortgage",
    mode: CallbackMode = CallbackMode.NOW,
    requested_at: float,
    **fields: Any,
) -> Callback:
    return Callback(
        id=ident,
        customer="c1",
        topic=topic,
        mode=mode,
        phone="+4512345678",
        requested_at=requested_at,
        **fields,
    )
