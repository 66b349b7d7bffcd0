"""Request and response bodies of the HTTP face that are not core models."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from nextbest.advisors.card import CardAction, CardAdvisor
from nextbest.advisors.model import CallbackMode, CallbackState, Presence
from nextbest.audit.model import AuditEntry, AuditHead
from nextbest.callbacks import AdvisorStatus
from nextbest.decide.reasons import Reason

__all__ = [
    "AdvisorActionBody",
    "AdvisorList",
    "AuditList",
    "CallbackAdvisor",
    "CallbackBody",
    "CatalogResponse",
    "ConsentAnswer",
    "ConsentBody",
    "CustomerCallback",
    "DecideBody",
    "ErrorBody",
    "HealthResponse",
    "HeldMessageBody",
    "IngestResponse",
    "OpenAPIDocument",
    "PageAdvisorCard",
    "PageDecision",
    "PageItem",
    "PageSlot",
    "PresenceBody",
    "ProfileResponse",
    "QuarantineList",
    "QuarantineReplayed",
    "ReadyResponse",
    "RejectedMessage",
    "SnapshotResponse",
    "SweepBody",
]


OfferId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ConsentBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/customers/{customer_id}/consent``: the customer's choices. ``purposes``:
    ``{purpose: true|false|{"granted": bool, "basis": str, "sources": {source: bool}}}``
    (purposes: personalization, marketing, analytics, advisor_contact; ``security`` is
    always on); ``sources``: a source under every purpose (behavioral, transactional, crm,
    contextual, third_party)."""

    purposes: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    #: the legal basis of these choices (consent unless said)
    basis: Annotated[str, msgspec.Meta(max_length=40)] = "consent"
    #: where the choice was made (``app-settings``, ``branch``); ``api`` unless said
    origin: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "api"
    #: the idempotency key of the ``Consent Updated`` event it becomes (made up if absent)
    messageId: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class ConsentAnswer(msgspec.Struct, kw_only=True):
    """The choices taken, as the ``Consent Updated`` event they became."""

    ok: bool
    customer_id: str
    message_id: str
    #: the event's time (epoch seconds): the choices' ``at``
    at: float
    #: the choices by key (``marketing``, ``marketing/transactional``,
    #: ``*/third_party``): granted, basis, at, origin
    grants: dict[str, Any]
    #: false: the message id was taken already (nothing changed)
    accepted: bool = True


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


class PageSlot(msgspec.Struct):
    """A free slot the customer may pick ("pick a time"): send ``start`` as the callback's
    ``time``."""

    #: ISO 8601, UTC
    start: str
    end: str
    #: the start as the advisor's clock reads it: ``Wed 23 Sep 14:30 CEST``
    label: str


class PageAdvisorCard(msgspec.Struct):
    """An advisor card as a page renders it: the expert, why, and what the customer may ask
    for (``now``, ``later``, ``at``: ``POST /v1/callbacks`` with that mode and this topic)."""

    topic: str
    topic_name: str
    #: why the card is shown, in the customer's words
    reason: str
    advisor: CardAdvisor
    actions: list[CardAction]
    #: someone can call now
    available: bool
    #: the next free slots when nobody can call now
    slots: list[PageSlot]


class PageItem(msgspec.Struct, omit_defaults=True):
    """One item as a page renders it."""

    position: int
    offer_id: str
    #: the offer's content for the placement's channel
    content: dict[str, Any]
    #: why, in words the customer may read
    reasons: list[Reason]
    #: an advisor card (a placement of kind ``advisor`` only)
    advisor: PageAdvisorCard | None = None


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


# ------------------------------------------------------------------------------ callbacks
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class CallbackBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A customer asks to be called: ``now``, ``later`` (the earliest free slot) or ``at``
    a time they picked (one of an advisor card's slots)."""

    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    mode: CallbackMode
    #: E.164: + and the country code, then the number, 8 to 15 digits in all (+4512345678)
    phone: Annotated[str, msgspec.Meta(max_length=32)]
    #: the customer: their userId (a browser or write key: the one its customer token
    #: binds), or the anonymousId of the session
    userId: UserId | None = None
    anonymousId: UserId | None = None
    #: mode ``at``: the slot's start, ISO 8601 with an offset (``2026-09-24T12:30:00Z``)
    time: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    #: the language the customer prefers (ISO 639-1, ``da``; ``da-DK`` is read as ``da``)
    language: Annotated[str, msgspec.Meta(max_length=35)] | None = None
    #: the decision whose advisor card the customer answered
    decision_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    #: a browser call without an Authorization header: the browser key ...
    writeKey: str | None = None
    #: ... and the customer token that binds ``userId`` (with ``writeKey`` only)
    customerToken: str | None = None


class CallbackAdvisor(msgspec.Struct):
    """The advisor who will call."""

    id: str
    name: str
    photo_url: str | None


class CustomerCallback(msgspec.Struct):
    """A callback as the customer who asked sees it (what a write or browser key gets):
    where it is, who will call and when, and what they are told."""

    id: str
    topic: str
    mode: CallbackMode
    state: CallbackState
    phone: str
    requested_at: float
    #: the booked slot's start (epoch seconds), and as the advisor's clock reads it
    scheduled_for: float | None
    scheduled_label: str | None
    advisor: CallbackAdvisor | None
    #: what the customer is told ("Nobody was free within 2 minutes: Anna Holm will call you
    #: Thu 24 Sep 10:30 CEST."); empty when there is nothing to tell
    notice: str


class PresenceBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    presence: Presence
    #: when the telephony system saw it (ISO 8601 with an offset; default: now): a report
    #: older than the one recorded is ignored
    at: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class AdvisorActionBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Who acts (optional): an advisor key acts as its own advisor; a server key (the
    telephony system) may name the advisor, else the one the callback is with."""

    advisor_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class SweepBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: sweep as of this time (ISO 8601 with an offset): on event time only
    now: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class AdvisorList(msgspec.Struct):
    advisors: list[AdvisorStatus]
