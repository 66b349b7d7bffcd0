"""Request and response bodies of the HTTP face that are not core models."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from nextbest.audit.model import AuditEntry, AuditHead
from nextbest.decide.reasons import Reason

__all__ = [
    "AuditList",
    "CatalogResponse",
    "DecideBody",
    "ErrorBody",
    "HealthResponse",
    "HeldMessageBody",
    "IngestResponse",
    "OpenAPIDocument",
    "PageDecision",
    "PageItem",
    "ProfileResponse",
    "QuarantineList",
    "QuarantineReplayed",
    "ReadyResponse",
    "RejectedMessage",
    "SnapshotResponse",
]


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
    #: every candidate left out and why (not for browser keys)
    explain: bool = False
    #: a browser call without an Authorization header (a text/plain body, no preflight):
    #: the browser key, as analytics.js sends it
    writeKey: str | None = None
    #: ... and the customer token that binds ``userId`` (with ``writeKey`` only; with an
    #: Authorization header send X-Customer-Token)
    customerToken: str | None = None


class PageItem(msgspec.Struct):
    """One item as a page renders it."""

    position: int
    offer_id: str
    #: the offer's content for the placement's channel
    content: dict[str, Any]
    #: why, in words the customer may read
    reasons: list[Reason]


class PageDecision(msgspec.Struct):
    """A decision as a browser key sees it: what the page renders and the ``decision_id``
    its ``Promotion Viewed`` / ``Clicked`` refer to; nothing of the customer's segments,
    the candidates, features, scores or control groups."""

    decision_id: str
    placement: str
    items: list[PageItem]


class RejectedMessage(msgspec.Struct):
    """A message set apart (quarantined) because it breaks the bank's vocabulary."""

    #: its place in the request's ``batch`` (0 for a single message)
    index: int
    #: ``missing_property``, ``wrong_type`` or ``unmatched_feedback``
    code: str
    message: str
    #: the field, as a JSONPath into the request body
    path: str


class IngestResponse(msgspec.Struct):
    success: bool
    #: events stored (new messageIds)
    accepted: int
    #: messageIds seen before: acknowledged, not stored again
    duplicates: int
    #: messages quarantined, each with why; the rest of the request was kept
    rejected: list[RejectedMessage] = []


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    path: str | None = None
    #: a catalog that does not check (``catalog_error``, 422): every problem, as
    #: ``nextbest check`` prints it
    problems: list[str] | None = None


class HealthResponse(msgspec.Struct):
    status: str
    #: the loaded catalog's version (a content hash)
    catalog: str
    #: ``wall`` or ``event``
    clock: str


class ReadyResponse(msgspec.Struct):
    """``/readyz`` when ready (otherwise a 503 with ``code`` ``not_ready`` and the reason)."""

    status: str
    #: the loaded catalog's version (a content hash)
    catalog: str


class CatalogResponse(msgspec.Struct):
    version: str
    #: the catalog as loaded, section by section
    catalog: dict[str, Any]


class SnapshotResponse(msgspec.Struct):
    success: bool
    profiles: int


class ProfileResponse(msgspec.Struct):
    customer_id: str
    #: the time the view was computed at (epoch seconds)
    as_of: float
    #: the stored profile: interests, windows, funnel, products, offers, consent, ...
    profile: dict[str, Any]
    #: what rules see of it now (``interest``, ``profile``, ``segments``, ``lifecycle``, ...)
    view: dict[str, Any]


class HeldMessageBody(msgspec.Struct):
    """A quarantined message: why it was set apart, and the message as normalized."""

    id: int
    received_at: float
    code: str
    message: str
    path: str
    #: the kind of key that sent it
    sender: str
    event: dict[str, Any]


class QuarantineList(msgspec.Struct):
    #: how many messages are held in all
    held: int
    #: the page asked for, oldest first
    messages: list[HeldMessageBody]


class AuditList(msgspec.Struct):
    """A page of the audit log (``nextbest.audit``; docs/trust.md)."""

    #: the last entry appended (None: none yet): anchor it outside nextbest to catch a tail
    #: cut off later (``nextbest audit verify --anchor SEQ:HASH``)
    head: AuditHead | None
    #: the page asked for, oldest first
    entries: list[AuditEntry]


class QuarantineReplayed(msgspec.Struct):
    replayed: int
    duplicates: int
    still_held: list[HeldMessageBody]


class OpenAPIDocument(msgspec.Struct):
    """This API's OpenAPI 3.1 document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
