"""Map pages and events to topics by URL patterns, page categories and event names.

A URL pattern is a glob (``*`` any text, ``?`` one character, ``[abc]`` one of those) over
the page URL's path, lower-cased, from its leading ``/`` to its end: ``/mortgages*`` matches
``https://bank.example/mortgages/rates?x=1``. The host, the query (after ``?``) and the
fragment (after ``#``) are not part of what it matches; ``pattern_problem`` says why a
pattern can match no path.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from nextbest.events.model import Event, EventType
from nextbest.events.names import NOT_INTEREST

__all__ = ["TopicMatcher", "TopicSpec", "pattern_problem"]


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


def _unclosed_bracket(pattern: str) -> bool:
    """A ``[`` with no ``]`` after it: fnmatch then reads it as a literal ``[``."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return True
            i = close + 1
        else:
            i += 1
    return False


def pattern_problem(pattern: str) -> str | None:
    """Why URL ``pattern`` can match no page path (or every page), or None if it may match
    some: a full URL, no leading ``/``, an unclosed ``[``, a query or fragment part."""
    if "://" in pattern or pattern.lower().startswith("www."):
        path = urlsplit(pattern if "://" in pattern else "//" + pattern).path or "/"
        return (
            f"{pattern!r} is a full URL, and patterns match the URL's path only: it never "
            f"matches; write {path.rstrip('/') + '*'!r}"
        )
    if not pattern.startswith(("/", "*", "?", "[")):
        return (
            f"{pattern!r} does not start with / and a path always does: it never matches; "
            f"write {'/' + pattern + ('' if pattern.endswith('*') else '*')!r}"
        )
    if _unclosed_bracket(pattern):
        return (
            f"{pattern!r} opens a [ it never closes, so the [ is read as a literal character "
            "no path has: it never matches; close it ([abc] is one of a, b, c) or drop it"
        )
    if "#" in pattern:
        return f"{pattern!r} has a #, and the fragment is not part of the path: it never matches"
    if re.search(r"\?[^*?\[\]/]*=", pattern):
        return (
            f"{pattern!r} looks like it has a query string (after ?), which is not part of "
            "the path the pattern matches; match the path alone"
        )
    if pattern.strip("*") in ("", "/"):
        return f"{pattern!r} matches every page: every page view counts as interest in the topic"
    return None


#: looked up once (each ``EventType.X`` read is a metaclass hook call in Python 3.11)
_PAGES = (EventType.PAGE, EventType.SCREEN)
_TRACK = EventType.TRACK


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
        kind = event.type
        if kind in _PAGES:
            if event.category:
                found.extend(self._category.get(event.category.lower(), ()))
            url = event.url
            if url:
                found.extend(self.topics_of_url(url))
        elif kind is _TRACK and event.name and event.name not in NOT_INTEREST:
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
