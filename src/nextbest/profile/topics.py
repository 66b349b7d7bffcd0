"""Map pages and events to topics by URL patterns, page categories and event names."""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from nextbest.events.model import Event, EventType
from nextbest.events.names import NOT_INTEREST

__all__ = ["TopicMatcher", "TopicSpec"]


class TopicSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one topic is recognised and how fast interest in it fades."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    name: str
    half_life_days: Annotated[float, msgspec.Meta(gt=0.0)] = 14.0
    url_patterns: tuple[str, ...] = ()
    page_categories: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    products: tuple[str, ...] = ()

    @property
    def half_life(self) -> float:
        return self.half_life_days * 86_400.0


class TopicMatcher:
    """Compiled once per catalog; ``match(event)`` returns the topics an event is about."""

    def __init__(self, topics: tuple[TopicSpec, ...]) -> None:
        self.topics = {t.id: t for t in topics}
        self._url: list[tuple[re.Pattern[str], str]] = [
            (re.compile(fnmatch.translate(p.lower())), t.id) for t in topics for p in t.url_patterns
        ]
        self._category: dict[str, list[str]] = {}
        self._event: dict[str, list[str]] = {}
        self._product: dict[str, str] = {}
        for t in topics:
            for c in t.page_categories:
                self._category.setdefault(c.lower(), []).append(t.id)
            for e in t.events:
                self._event.setdefault(e, []).append(t.id)
            for p in (t.id, *t.products):
                self._product.setdefault(p.lower(), t.id)

    def topic_of_product(self, product: str) -> str | None:
        return self._product.get(product.lower())

    def topics_of_url(self, url: str) -> list[str]:
        """The topics whose URL patterns match ``url``'s path (or ``url`` as a path)."""
        path = (urlsplit(url).path or "/").lower()
        return [t for rx, t in self._url if rx.match(path)]

    def match(self, event: Event) -> list[str]:
        found: list[str] = []
        if event.type in (EventType.PAGE, EventType.SCREEN):
            if event.category:
                found.extend(self._category.get(event.category.lower(), ()))
            url = event.url
            if url:
                found.extend(self.topics_of_url(url))
        elif event.type is EventType.TRACK and event.name and event.name not in NOT_INTEREST:
            found.extend(self._event.get(event.name, ()))
            props = event.properties
            for key in ("topic", "product"):
                value = props.get(key)
                if isinstance(value, str):
                    topic = self.topic_of_product(value)
                    if topic:
                        found.append(topic)
        if len(found) > 1:
            found = list(dict.fromkeys(found))
        return found
