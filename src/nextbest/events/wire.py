"""The wire format: Segment-spec messages exactly as SDKs send them (explicit nulls, extras).

Unknown fields (``channel``, ``integrations``, ``writeKey``, ...) are accepted and ignored.
Timestamps must carry a UTC offset; ``userId``/``anonymousId`` may be strings or numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

__all__ = [
    "WireAlias",
    "WireBatch",
    "WireGroup",
    "WireIdentify",
    "WireMessage",
    "WirePage",
    "WireScreen",
    "WireTrack",
]

TzDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Id = str | int


class _WireBase(msgspec.Struct, tag_field="type", kw_only=True):
    messageId: str | None = None
    timestamp: TzDatetime | None = None
    originalTimestamp: TzDatetime | None = None
    sentAt: TzDatetime | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    context: dict[str, Any] | None = None


class WireTrack(_WireBase, tag="track"):
    event: str
    properties: dict[str, Any] | None = None


class WirePage(_WireBase, tag="page"):
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class WireScreen(_WireBase, tag="screen"):
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class WireIdentify(_WireBase, tag="identify"):
    traits: dict[str, Any] | None = None


class WireAlias(_WireBase, tag="alias"):
    previousId: Id


class WireGroup(_WireBase, tag="group"):
    groupId: Id
    traits: dict[str, Any] | None = None


WireMessage = WireTrack | WirePage | WireScreen | WireIdentify | WireAlias | WireGroup


class WireBatch(msgspec.Struct, kw_only=True):
    batch: list[WireMessage]
    sentAt: TzDatetime | None = None
    context: dict[str, Any] | None = None
