"""Request and response bodies of the HTTP face that are not core models."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["BodyKey", "DecideBody", "ErrorBody", "IngestResponse"]


OfferId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class DecideBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    placement: str
    userId: str | None = None
    anonymousId: str | None = None
    limit: int | None = None
    #: what the page knows (device, channel, ...); ``now`` (ISO 8601 with an offset): when
    #: the decision is taken, on a server on event time, with a server or admin key only
    context: dict[str, Any] = {}
    #: offers the page already shows in another placement (at most 50)
    exclude: Annotated[list[OfferId], msgspec.Meta(max_length=50)] = []
    explain: bool = False


class IngestResponse(msgspec.Struct):
    success: bool
    accepted: int
    duplicates: int


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    path: str | None = None
    #: a catalog that does not check (``catalog_error``, 422): every problem, as
    #: ``nextbest check`` prints it
    problems: list[str] | None = None


class BodyKey(msgspec.Struct):
    """analytics.js sends the write key in the body (text/plain, no preflight)."""

    writeKey: str | None = None
