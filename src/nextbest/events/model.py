"""The normalized event: what the event log stores and profiles fold."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = ["Event", "EventType"]


class EventType(enum.StrEnum):
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    IDENTIFY = "identify"
    ALIAS = "alias"
    GROUP = "group"


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One accepted message. Times are UTC epoch seconds.

    ``name`` is the track event name, or the page/screen name. ``timestamp`` is when it
    happened (Segment's clock-skew correction applied); ``received_at`` when nextbest got it.

    ``key_id`` and ``origin`` are set by the server, never read from a message, on feedback
    that came through the HTTP face: the fingerprint of the key that sent it
    (``guard.origin.key_id``: its kind and a hash, never the key) and the sender's network
    origin (``guard.origin.network_origin``: ``203.0.113.0/24``, ``2001:db8:1::/48``; none
    for an address of the bank's own networks). The trust rules read them from the log, so
    a replay judges each feedback event exactly as it was judged live (``learn.volume``).
    """

    message_id: str
    type: EventType
    timestamp: float
    received_at: float
    user_id: str | None = None
    anonymous_id: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    context: dict[str, Any] = {}
    previous_id: str | None = None
    group_id: str | None = None
    key_id: str | None = None
    origin: str | None = None

    @property
    def url(self) -> str | None:
        """The page URL from ``properties.url`` or ``context.page.url``."""
        url = self.properties.get("url")
        if isinstance(url, str):
            return url
        page = self.context.get("page")
        if isinstance(page, dict):
            url = page.get("url")
            if isinstance(url, str):
                return url
        return None
