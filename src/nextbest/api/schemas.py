"""Request and response bodies of the HTTP face that are not core models."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["BodyKey", "DecideBody", "ErrorBody", "IngestResponse"]


class DecideBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    placement: str
    userId: str | None = None
    anonymousId: str | None = None
    limit: int | None = None
    context: dict[str, Any] = {}
    explain: bool = False


class IngestResponse(msgspec.Struct):
    success: bool
    accepted: int
    duplicates: int


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    path: str | None = None


class BodyKey(msgspec.Struct):
    """analytics.js sends the write key in the body (text/plain, no preflight)."""

    writeKey: str | None = None
