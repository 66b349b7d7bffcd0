"""The HTTP face: Segment-spec ingestion, decide, profiles. It only talks to the engine.

Every route is declared once in ROUTES with its scope; ``create_app`` builds Starlette routes
and the OpenAPI document from that table. The ingestion routes are served on a lean path of
their own (``api.ingest``), the others by Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from nextbest.advisors.model import Callback
from nextbest.api import callback_routes as cb
from nextbest.api.auth import HeaderKeys, admit, authenticate_body, token_from_header
from nextbest.api.body import ClientGone, check_media_type, read_body
from nextbest.api.consent_routes import put_consent
from nextbest.api.cors import CORS, CorsPolicy
from nextbest.api.errors import error_response
from nextbest.api.fast_lane import FastLane
from nextbest.api.ingest import CLIENT_GONE, READ_ON_LOOP, IngestRoute
from nextbest.api.me_routes import ME_LANGUAGE_QUERY, me_data, me_why
from nextbest.api.metrics import CONTENT_TYPE, Metrics
from nextbest.api.observe import Observed
from nextbest.api.rate_limit import RateLimits
from nextbest.api.schemas import (
    AdvisorActionBody,
    AdvisorList,
    AuditList,
    CallbackBody,
    CatalogResponse,
    ConsentAnswer,
    ConsentBody,
    CustomerCallback,
    DecideBody,
    ErrorBody,
    HealthResponse,
    HeldMessageBody,
    IngestResponse,
    OpenAPIDocument,
    PageDecision,
    PageItem,
    PresenceBody,
    ProfileResponse,
    QuarantineList,
    QuarantineReplayed,
    ReadyResponse,
    SnapshotResponse,
    SweepBody,
)
from nextbest.audit.model import actor_of
from nextbest.auditing import read_decision, read_profile, read_quarantine
from nextbest.callbacks import AdvisorQueue, CustomerView, PresenceReport, SweepReport
from nextbest.catalog.compiled import Catalog
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.decide.reasons import CUSTOMER_FACING
from nextbest.erasure import CustomerExport, ErasureReport
from nextbest.errors import (
    ErasurePending,
    Forbidden,
    NextbestError,
    NotFound,
    ValidationError,
)
from nextbest.events.model import EventType
from nextbest.events.parse import SINGLE_MESSAGE, Parsed, decode_json, parse_instant
from nextbest.events.wire import WireBatch
from nextbest.experiments.report import ExperimentList, ExperimentResult
from nextbest.guard.senders import KeyKind, Scope, Sender, check_decision_time
from nextbest.scaled_erasure import ErasureOutcome
from nextbest.service import Service
from nextbest.settings import Settings
from nextbest.store.port import HeldMessage
from nextbest.transparency.data import MyData
from nextbest.transparency.why import WhyPage
from nextbest.usecases import CatalogReload, list_experiments, reload_catalog, served_experiment

__all__ = ["ROUTES", "Background", "RouteSpec", "create_app"]


class Background(Protocol):
    """A loop the app runs beside its requests (``create_app(background=...)``)."""

    def start(self) -> None: ...

    def stop(self, timeout: float | None = None) -> None: ...


log = logging.getLogger("nextbest.api")

Handler = Callable[["Ctx"], Awaitable[Response]]

#: how long ``/readyz`` waits for the stores to answer
READY_TIMEOUT = 2.0


@dataclass
class Ops:
    """What the server knows of itself: its metrics and whether it is ready to serve."""

    metrics: Metrics
    #: the lifespan started (the background flusher runs) and has not begun shutting down
    serving: bool = False
    #: why the last background flush or state save failed (None: the last one worked)
    save_error: str | None = None

    def save(self, engine: Service) -> None:
        """A state save (snapshot), timed; a failure counted and re-raised."""
        started = time.perf_counter()
        try:
            engine.snapshot()
        except NextbestError:
            self.metrics.snapshot_failures.inc()
            raise
        self.metrics.snapshot_seconds.observe(time.perf_counter() - started)


@dataclass(frozen=True)
class Ctx:
    request: Request
    sender: Sender
    engine: Service
    settings: Settings
    body: bytes
    limits: RateLimits
    ops: Ops
    #: the key (and any customer token) came in the body, not in headers
    credentials_in_body: bool = False

    def charge_devices(self, anonymous_ids: Iterable[str | None]) -> None:
        """``RateLimits.charge_devices`` for this request's sender."""
        self.limits.charge_devices(self.sender, anonymous_ids)


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    scope: Scope
    summary: str
    #: None for an ingestion route (``ingests``)
    handler: Handler | None
    request: Any = None
    response: Any = None
    reads_body: bool = False
    #: query parameters (all whole numbers): name -> description
    query: tuple[tuple[str, str], ...] = ()
    #: query parameters that are text: name -> description
    text_query: tuple[tuple[str, str], ...] = ()
    #: the request body may be left out (every field has a default)
    optional_body: bool = False
    #: response fields absent from some answers (the OpenAPI schema does not require them)
    sometimes: tuple[str, ...] = ()
    #: the answer a browser key gets instead of ``response`` (the OpenAPI schema: one of both)
    browser_response: Any = None
    #: the 200 body's media type (its OpenAPI content type)
    media_type: str = "application/json"
    #: an ingestion route (``api.ingest``): how it reads a body, with the engine's rules
    ingests: Callable[[Service], Callable[[bytes], Parsed]] | None = None
    #: where an ingestion route's messages sit in its body, for error paths
    prefix: str = ""


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _answer(body: msgspec.Struct) -> Response:
    """A 200 whose body is exactly the route's declared response schema."""
    return Response(_ENCODER.encode(body), media_type="application/json")


_ENCODER = msgspec.json.Encoder()


def _read_batch(engine: Service) -> Callable[[bytes], Parsed]:
    return engine.read_batch


def _read_single(kind: EventType) -> Callable[[Service], Callable[[bytes], Parsed]]:
    def reader(engine: Service) -> Callable[[bytes], Parsed]:
        return functools.partial(engine.read_message, kind)

    return reader


def _decision_time(ctx: Ctx, context: dict[str, Any]) -> tuple[float | None, dict[str, Any]]:
    """``context.now`` (a replay's or simulation's decision time) and the context without
    it: Forbidden unless a server or admin key sent it, a ValidationError unless it is an ISO
    8601 date-time with an offset (the engine refuses it on the wall clock)."""
    if "now" not in context:
        return None, context
    check_decision_time(ctx.sender, "$.context.now")
    ctx.engine.require_event_time("$.context.now")
    now = parse_instant(context["now"], "$.context.now", ctx.engine.wall_now(), ctx.engine.limits)
    return now, {k: v for k, v in context.items() if k != "now"}


def _page_decision(decision: Decision, catalog: Catalog) -> PageDecision:
    """What a browser key sees of ``decision``: what its page renders (an advisor card with
    its actions and slots)."""
    return PageDecision(
        decision.decision_id,
        decision.placement,
        [
            PageItem(
                item.position,
                item.offer_id,
                item.content,
                [r for r in item.reasons if r.code in CUSTOMER_FACING],
                cb.page_card(catalog, item.advisor) if item.advisor is not None else None,
            )
            for item in decision.items
        ],
    )


def _decision_answer(
    ctx: Ctx, body: DecideBody, now: float | None, context: dict[str, Any]
) -> bytes:
    """Decide and encode the answer (in the threadpool: the decision may wait for the engine's
    lock, and it is CPU work)."""
    started = time.perf_counter()
    decision = ctx.engine.decide_as(
        ctx.sender,
        DecisionRequest(
            placement=body.placement,
            limit=body.limit,
            context=context,
            exclude=frozenset(body.exclude),
        ),
        user_id=body.userId,
        anonymous_id=body.anonymousId,
        now=now,
    )
    ctx.ops.metrics.decided(decision.placement, time.perf_counter() - started)
    if ctx.sender.kind is KeyKind.BROWSER:
        return _ENCODER.encode(_page_decision(decision, ctx.engine.catalog))
    out = msgspec.to_builtins(decision)
    if not body.explain:
        del out["excluded"]
    return orjson.dumps(out)


async def _decide(ctx: Ctx) -> Response:
    if len(ctx.body) <= READ_ON_LOOP:
        body: DecideBody = decode_json(ctx.body, DecideBody)
    else:
        body = await run_in_threadpool(decode_json, ctx.body, DecideBody)
    if body.customerToken and not ctx.credentials_in_body:
        raise ValidationError(
            "customerToken in the body goes with writeKey in the body; with an "
            "Authorization header send the token as X-Customer-Token",
            "$.customerToken",
        )
    now, context = _decision_time(ctx, body.context)
    if body.explain and ctx.sender.kind is KeyKind.BROWSER:
        raise Forbidden(
            "a browser key may not ask why offers were left out (at $.explain): that "
            "tells a public page about the customer; use a server key"
        )
    ctx.charge_devices([body.anonymousId])
    answer = await run_in_threadpool(_decision_answer, ctx, body, now, context)
    return Response(answer, media_type="application/json")


async def _profile(ctx: Ctx) -> Response:
    user_id = ctx.request.path_params["user_id"]
    view = await run_in_threadpool(read_profile, ctx.engine, actor_of(ctx.sender), user_id)
    if view is None:
        raise NotFound(f"no profile for userId {user_id!r}")
    return _answer(ProfileResponse(**view))


async def _export_customer(ctx: Ctx) -> Response:
    """GDPR art. 15 and 20: everything held about the customer (``nextbest.erasure``)."""
    user_id = ctx.request.path_params["user_id"]
    found = await run_in_threadpool(ctx.engine.export_customer, user_id, actor_of(ctx.sender))
    return _answer(found)


async def _erase_customer(ctx: Ctx) -> Response:
    """GDPR art. 17: the customer and every id stitched to them deleted; 202 with the
    receipt when a scaled deployment's fold worker has not finished it in time."""
    user_id = ctx.request.path_params["user_id"]
    try:
        report = await run_in_threadpool(ctx.engine.erase_customer, user_id, actor_of(ctx.sender))
    except ErasurePending as pending:
        status = f"/v1/erasures/{pending.receipt}"
        return _json({"status": "pending", "receipt": pending.receipt, "status_url": status}, 202)
    return _answer(report)


async def _erasure_status(ctx: Ctx) -> Response:
    """A scaled erasure's outcome, by its receipt."""
    receipt = ctx.request.path_params["receipt"]
    outcome = await run_in_threadpool(ctx.engine.erasure_status, receipt)
    if outcome is None:
        raise NotFound(f"no erasure recorded under receipt {receipt!r} (yet)")
    return _answer(outcome)


async def _experiments(ctx: Ctx) -> Response:
    listed = await run_in_threadpool(list_experiments, ctx.engine)
    return _answer(listed)


async def _experiment(ctx: Ctx) -> Response:
    campaign = ctx.request.path_params["campaign"]
    result = await run_in_threadpool(served_experiment, ctx.engine, campaign)
    return _answer(result)


async def _decision(ctx: Ctx) -> Response:
    decision_id = ctx.request.path_params["decision_id"]
    decision = await run_in_threadpool(read_decision, ctx.engine, actor_of(ctx.sender), decision_id)
    if decision is None:
        raise NotFound(f"no decision {decision_id!r}")
    return _json(msgspec.to_builtins(decision))


async def _health(ctx: Ctx) -> Response:
    engine = ctx.engine
    return _answer(HealthResponse("ok", engine.catalog.version, engine.clock_kind.value))


async def _ready(ctx: Ctx) -> Response:
    """200 once the engine has restored its state, the server is not shutting down, the
    last background save worked and every store port answers a cheap question; 503 with a
    JSON reason otherwise."""
    ops = ctx.ops
    reason = None
    if not ops.serving or ctx.engine.closed:
        reason = "not serving: starting or shutting down"
    elif ops.save_error is not None:
        reason = f"the last background flush or state save failed: {ops.save_error}"
    else:
        try:
            checks = await asyncio.wait_for(
                run_in_threadpool(ctx.engine.probe), timeout=READY_TIMEOUT
            )
        except TimeoutError:
            reason = f"the stores did not answer within {READY_TIMEOUT:g} s"
        else:
            failed = [f"{name}: {why}" for name, why in checks if why is not None]
            reason = "; ".join(failed) or None
    if reason is not None:
        body = orjson.dumps({"code": "not_ready", "message": reason})
        return Response(body, 503, headers={"Retry-After": "1"}, media_type="application/json")
    return _answer(ReadyResponse("ready", ctx.engine.catalog.version))


async def _metrics(ctx: Ctx) -> Response:
    text = await run_in_threadpool(ctx.ops.metrics.exposition, ctx.engine)
    return Response(text, media_type=CONTENT_TYPE)


async def _openapi(ctx: Ctx) -> Response:
    return _json(openapi_document())


async def _catalog(ctx: Ctx) -> Response:
    catalog = ctx.engine.catalog
    spec = await run_in_threadpool(msgspec.to_builtins, catalog.spec)
    return _answer(CatalogResponse(catalog.version, spec))


def _held(m: HeldMessage) -> HeldMessageBody:
    event = msgspec.to_builtins(m.event)
    return HeldMessageBody(m.id, m.received_at, m.code, m.reason, m.path, m.sender, event)


async def _quarantine(ctx: Ctx) -> Response:
    after = _query_int(ctx.request, "after", 0)
    limit = _query_int(ctx.request, "limit", 100, upper=1_000)
    held = await run_in_threadpool(read_quarantine, ctx.engine, actor_of(ctx.sender), after, limit)
    total = await run_in_threadpool(ctx.engine.quarantine.held_count)
    return _answer(QuarantineList(total, [_held(m) for m in held]))


async def _quarantine_replay(ctx: Ctx) -> Response:
    report = await run_in_threadpool(ctx.engine.replay_quarantine)
    still = [_held(m) for m in report.still_held]
    return _answer(QuarantineReplayed(report.replayed, report.duplicates, still))


def _query_int(request: Request, name: str, default: int, upper: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or (upper is not None and int(text) > upper):
        bound = f" up to {upper}" if upper is not None else ""
        raise ValidationError(f"must be a whole number{bound}", f"$.query.{name}")
    return int(text)


async def _reload_catalog(ctx: Ctx) -> Response:
    """Re-read the catalog the server was started with; swap it in only if it checks."""
    report = await run_in_threadpool(
        reload_catalog, ctx.engine, ctx.settings.catalog, actor_of(ctx.sender)
    )
    return _answer(report)


async def _audit(ctx: Ctx) -> Response:
    """The audit log's entries, oldest first, and its head."""
    after = _query_int(ctx.request, "after", 0)
    limit = _query_int(ctx.request, "limit", 100, upper=1_000)
    subject = ctx.request.query_params.get("subject")
    audit = ctx.engine.audit

    def read() -> AuditList:
        head = audit.head()
        return AuditList(head, audit.entries(after, limit, subject or None))

    return _answer(await run_in_threadpool(read))


async def _snapshot(ctx: Ctx) -> Response:
    await run_in_threadpool(ctx.engine.flush)
    await run_in_threadpool(ctx.ops.save, ctx.engine)
    return _answer(SnapshotResponse(True, ctx.engine.profile_count))


#: the query a write or browser key names its session by (a callback asked for by it)
_SESSION_QUERY = (("anonymousId", "the session's anonymousId (a callback asked for by it)"),)

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST",
        "/v1/batch",
        Scope.EVENTS_WRITE,
        "Send up to 2,000 Segment-spec messages",
        None,
        WireBatch,
        IngestResponse,
        reads_body=True,
        ingests=_read_batch,
        prefix="$.batch",
    ),
    *(
        RouteSpec(
            "POST",
            f"/v1/{k.value}",
            Scope.EVENTS_WRITE,
            f"Send one {k.value} message",
            None,
            SINGLE_MESSAGE[k],
            IngestResponse,
            reads_body=True,
            ingests=_read_single(k),
        )
        for k in EventType
    ),
    # analytics.js posts each message to <apiHost>/<the first letter of its type> and, with
    # its batching delivery strategy, batches to <apiHost>/b (apiHost: "<server>/v1")
    *(
        RouteSpec(
            "POST",
            f"/v1/{k.value[0]}",
            Scope.EVENTS_WRITE,
            f"Send one {k.value} message (analytics.js's short path for /v1/{k.value})",
            None,
            SINGLE_MESSAGE[k],
            IngestResponse,
            reads_body=True,
            ingests=_read_single(k),
        )
        for k in EventType
    ),
    RouteSpec(
        "POST",
        "/v1/b",
        Scope.EVENTS_WRITE,
        "Send a batch (analytics.js's short path for /v1/batch)",
        None,
        WireBatch,
        IngestResponse,
        reads_body=True,
        ingests=_read_batch,
        prefix="$.batch",
    ),
    RouteSpec(
        "POST",
        "/v1/decide",
        Scope.DECIDE,
        "What to show one customer in one placement (a browser key gets only what a page "
        "renders: PageDecision)",
        _decide,
        DecideBody,
        Decision,
        reads_body=True,
        sometimes=("excluded",),  # only with "explain": true
        browser_response=PageDecision,
    ),
    RouteSpec(
        "GET",
        "/v1/profiles/{user_id}",
        Scope.PROFILES_READ,
        "A customer's live profile and what rules see",
        _profile,
        response=ProfileResponse,
    ),
    RouteSpec(
        "POST",
        "/v1/customers/{user_id}/export",
        Scope.CUSTOMER_RIGHTS,
        "Everything held about a customer and every id stitched to them, as one JSON "
        "document (GDPR art. 15 and 20): profile, events, decisions, callbacks, experiment "
        "exposures, quarantined messages, outbox messages, audit entries (docs/trust.md)",
        _export_customer,
        response=CustomerExport,
    ),
    RouteSpec(
        "DELETE",
        "/v1/customers/{user_id}",
        Scope.CUSTOMER_RIGHTS,
        "Erase a customer and every id stitched to them (GDPR art. 17): the event log, "
        "decision log, quarantine, callbacks, outbox, profile, identity links, experiment "
        "exposures, waiting views; recorded in the audit log under a pseudonym whose "
        "receipt only the caller gets (docs/trust.md)",
        _erase_customer,
        response=ErasureReport,
    ),
    RouteSpec(
        "PUT",
        "/v1/customers/{customer_id}/consent",
        Scope.CONSENT,
        "Set a customer's consent per purpose and data source (a write or browser key: with "
        "the customer token of that userId; a server key: anyone's); it becomes a "
        "'Consent Updated' event, audited and replayed like any other",
        put_consent,
        ConsentBody,
        ConsentAnswer,
        reads_body=True,
    ),
    RouteSpec(
        "GET",
        "/v1/me/data",
        Scope.ME,
        "What nextbest knows about the customer a customer token binds, where it came from "
        "and what it is used for, in the customer's language (da, nl, de, en, es)",
        me_data,
        response=MyData,
        text_query=ME_LANGUAGE_QUERY,
    ),
    RouteSpec(
        "GET",
        "/v1/me/why/{decision_id}",
        Scope.ME,
        "Why one of the customer's decisions showed what it showed: each item's reasons and "
        "the data sources and features it was chosen from, in the customer's language",
        me_why,
        response=WhyPage,
        text_query=ME_LANGUAGE_QUERY,
    ),
    RouteSpec(
        "GET",
        "/v1/erasures/{receipt}",
        Scope.CUSTOMER_RIGHTS,
        "The outcome of an erasure a scaled deployment answered 202 for, by its receipt "
        "(status erased, with the counts; 404 while it is under way) (docs/trust.md)",
        _erasure_status,
        response=ErasureOutcome,
    ),
    RouteSpec(
        "GET",
        "/v1/decisions/{decision_id}",
        Scope.PROFILES_READ,
        "One logged decision",
        _decision,
        response=Decision,
    ),
    RouteSpec(
        "GET",
        "/v1/experiments",
        Scope.ADMIN,
        "Every campaign's experiment: exposed customers and the verdict so far",
        _experiments,
        response=ExperimentList,
    ),
    RouteSpec(
        "GET",
        "/v1/experiments/{campaign}",
        Scope.ADMIN,
        "One campaign's experiment results: per KPI and arm the exposed customers, "
        "conversions, rate, lift with its always-valid interval, p-value, chance to win, "
        "and the CUPED-adjusted lift; the sample ratio check, the lift day by day, the "
        "primary KPI per audience (exploratory ones with adjusted p-values), and the verdict",
        _experiment,
        response=ExperimentResult,
    ),
    RouteSpec(
        "GET",
        "/v1/admin/catalog",
        Scope.ADMIN,
        "The loaded catalog",
        _catalog,
        response=CatalogResponse,
    ),
    RouteSpec(
        "GET",
        "/v1/admin/quarantine",
        Scope.ADMIN,
        "Messages quarantined because they broke the event vocabulary, oldest first",
        _quarantine,
        response=QuarantineList,
        query=(
            ("after", "only messages with a larger id (the last id of the previous page)"),
            ("limit", "at most this many (default 100, at most 1,000)"),
        ),
    ),
    RouteSpec(
        "POST",
        "/v1/admin/quarantine/replay",
        Scope.ADMIN,
        "Let in the quarantined messages the vocabulary now accepts",
        _quarantine_replay,
        response=QuarantineReplayed,
    ),
    RouteSpec(
        "POST",
        "/v1/admin/catalog/reload",
        Scope.ADMIN,
        "Re-read and check the catalog; swap it in atomically only if it checks",
        _reload_catalog,
        response=CatalogReload,
    ),
    RouteSpec(
        "GET",
        "/v1/audit",
        Scope.ADMIN,
        "The audit log, oldest first: who read which customer's profile or decisions, each "
        "consent change, each catalog change (with its diff); every entry hash-chained to "
        "the one before, and the head to anchor elsewhere (docs/trust.md)",
        _audit,
        response=AuditList,
        query=(
            ("after", "only entries with a larger seq (the last seq of the previous page)"),
            ("limit", "at most this many (default 100, at most 1,000)"),
        ),
        text_query=(("subject", "only entries about this subject (a customer id, catalog)"),),
    ),
    RouteSpec(
        "POST",
        "/v1/admin/snapshot",
        Scope.ADMIN,
        "Flush decisions and snapshot profiles",
        _snapshot,
        response=SnapshotResponse,
    ),
    RouteSpec(
        "POST",
        "/v1/callbacks",
        Scope.CALLBACKS,
        "A customer asks to be called about a topic: now, later (the earliest free slot) or "
        "at a time (one of an advisor card's slots); a write or browser key only for its own "
        "session (a write or browser key gets CustomerCallback)",
        cb.request_callback,
        CallbackBody,
        Callback,
        reads_body=True,
        browser_response=CustomerCallback,
    ),
    RouteSpec(
        "GET",
        "/v1/callbacks/{callback_id}",
        Scope.CALLBACKS,
        "One callback: where it is, who calls and when, what the customer is told (a write "
        "or browser key: only its own session's, as CustomerCallback; else 404)",
        cb.callback,
        response=Callback,
        browser_response=CustomerCallback,
        text_query=_SESSION_QUERY,
    ),
    RouteSpec(
        "POST",
        "/v1/callbacks/{callback_id}/cancel",
        Scope.CALLBACKS,
        "Withdraw a callback not ended yet (a write or browser key: only its own session's)",
        cb.cancel,
        response=Callback,
        browser_response=CustomerCallback,
        text_query=_SESSION_QUERY,
    ),
    *(
        RouteSpec(
            "POST",
            f"/v1/callbacks/{{callback_id}}/{verb}",
            Scope.ADVISORS_ACT,
            summary,
            handler,
            AdvisorActionBody,
            Callback,
            reads_body=True,
            optional_body=True,
        )
        for verb, summary, handler in (
            (
                "accept",
                "The advisor it is offered to accepts it: a click-to-call request goes to "
                "the telephony webhook (an advisor key: its own callbacks only)",
                cb.accept,
            ),
            (
                "decline",
                "The advisor it is offered to declines it: on to the next colleague",
                cb.decline,
            ),
            (
                "connect",
                "The telephony system reports the call started",
                cb.connect,
            ),
            (
                "complete",
                "The call ended (Callback Completed in the customer's event log)",
                cb.complete,
            ),
        )
    ),
    RouteSpec(
        "PUT",
        "/v1/advisors/{advisor_id}/presence",
        Scope.ADVISORS_ACT,
        "An advisor's presence (available, busy, away, offline), as the advisor's desktop or "
        "the telephony system reports it (an advisor key: its own only)",
        cb.presence,
        PresenceBody,
        PresenceReport,
        reads_body=True,
    ),
    RouteSpec(
        "GET",
        "/v1/advisors/{advisor_id}/queue",
        Scope.ADVISORS_ACT,
        "The callbacks an advisor holds, in queue order (an advisor key: its own only)",
        cb.advisor_queue,
        response=AdvisorQueue,
    ),
    RouteSpec(
        "GET",
        "/v1/advisors",
        Scope.ADVISORS_READ,
        "Every advisor with presence, load, bookings and whether on shift",
        cb.advisors,
        response=AdvisorList,
    ),
    RouteSpec(
        "GET",
        "/v1/advisor/customers/{customer_id}",
        Scope.ADVISORS_READ_CUSTOMER,
        "What an advisor sees of a customer: live interests with reasons and trend, the "
        "recent journey, offers shown and clicked, products, consent, callbacks (an advisor "
        "key: only customers routed to it)",
        cb.advisor_customer,
        response=CustomerView,
    ),
    RouteSpec(
        "POST",
        "/v1/admin/callbacks/sweep",
        Scope.ADMIN,
        "Act on the callback timers due now (the server does so every "
        "NEXTBEST_CALLBACK_SWEEP_SECONDS); on event time, as of a given time",
        cb.sweep,
        SweepBody,
        SweepReport,
        reads_body=True,
        optional_body=True,
    ),
    RouteSpec(
        "GET",
        "/healthz",
        Scope.PUBLIC,
        "Liveness and catalog version",
        _health,
        response=HealthResponse,
    ),
    RouteSpec(
        "GET",
        "/readyz",
        Scope.PUBLIC,
        "Readiness: 200 once state is restored and the stores answer, 503 with the reason",
        _ready,
        response=ReadyResponse,
    ),
    RouteSpec(
        "GET",
        "/metrics",
        Scope.METRICS,
        "Prometheus metrics (text format): requests, decisions, events, feedback, saves",
        _metrics,
        response=str,
        media_type="text/plain",
    ),
    RouteSpec(
        "GET",
        "/openapi.json",
        Scope.PUBLIC,
        "This API's OpenAPI 3.1 document",
        _openapi,
        response=OpenAPIDocument,
    ),
)

_PATH_PARAMETER = re.compile(r"{([a-z_]+)}")


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, built from ``ROUTES``: every route with its scope, path and
    query parameters, request body, and a schema for every 200 body and every error."""
    models = list(
        dict.fromkeys(
            [r.request for r in ROUTES if r.request]
            + [r.response for r in ROUTES if r.response and r.response is not str]
            + [r.browser_response for r in ROUTES if r.browser_response]
            + [ErrorBody]
        )
    )
    schemas, components = msgspec.json.schema_components(
        models, ref_template="#/components/schemas/{name}"
    )
    by_model = dict(zip(models, schemas, strict=True))
    paths: dict[str, Any] = {}
    error = {"content": {"application/json": {"schema": by_model[ErrorBody]}}}
    for r in ROUTES:
        op: dict[str, Any] = {
            "operationId": _operation_id(r),
            "summary": r.summary,
            "x-scope": r.scope.value,
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": "Bad input, credentials or scope", **error},
                "5XX": {"description": "The store is unavailable: retry", **error},
            },
        }
        if r.scope is not Scope.PUBLIC:
            op["security"] = [{"basic": []}, {"bearer": []}]
        parameters = (
            [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PATH_PARAMETER.findall(r.path)
            ]
            + [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": text,
                    "schema": {"type": "integer", "minimum": 0},
                }
                for name, text in r.query
            ]
            + [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": text,
                    "schema": {"type": "string"},
                }
                for name, text in r.text_query
            ]
        )
        if parameters:
            op["parameters"] = parameters
        if r.request is not None:
            op["requestBody"] = {
                "required": not r.optional_body,
                "content": {"application/json": {"schema": by_model[r.request]}},
            }
        if r.response is str:
            op["responses"]["200"]["content"] = {r.media_type: {"schema": {"type": "string"}}}
            paths.setdefault(r.path, {})[r.method.lower()] = op
            continue
        schema = by_model[r.response]
        if r.sometimes:
            schema = _with_optional(components, r.response.__name__, r.sometimes, _operation_id(r))
        if r.browser_response is not None:
            schema = {"oneOf": [schema, by_model[r.browser_response]]}
        op["responses"]["200"]["content"] = {"application/json": {"schema": schema}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nextbest",
            "version": "0.1.0",
            "description": "Real-time next-best-action engine for banks",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "the key as the user name, empty password",
                },
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _operation_id(r: RouteSpec) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", r.path.lower().replace("/v1/", "/")).strip("_")
    return f"{r.method.lower()}_{words}"


def _with_optional(
    components: dict[str, Any], name: str, optional: tuple[str, ...], operation: str
) -> dict[str, str]:
    """A copy of component ``name`` where ``optional`` are not required, as a new component
    (``<operation>_response``), and a reference to it."""
    copy = dict(components[name])
    copy["required"] = [f for f in copy.get("required", []) if f not in optional]
    new = "".join(w.title() for w in operation.split("_")) + "Response"
    copy["title"] = new
    components[new] = copy
    return {"$ref": f"#/components/schemas/{new}"}


def _endpoint(
    spec: RouteSpec,
    engine: Service,
    settings: Settings,
    limits: RateLimits,
    ops: Ops,
    keys: HeaderKeys,
) -> Callable[..., Any]:
    """The route's endpoint: credentials first (a key in the header before the body is read;
    a key in the body from a body read within the browser limit, decoding only the key and
    token), then the scope and the rate limits, then the body, then the handler."""
    browser_body = min(settings.browser_body_bytes, settings.max_body_bytes)
    public = spec.scope is Scope.PUBLIC
    handler = spec.handler
    assert handler is not None, spec.path

    async def endpoint(request: Request) -> Response:
        try:
            headers = request.headers
            sender = Sender(KeyKind.NONE)
            in_body = not public and spec.reads_body and "authorization" not in headers
            if not public and not in_body:  # before reading any body
                token = token_from_header(headers.get("x-customer-token"))
                caller = keys.caller(headers.get("authorization"), token, engine.wall_now())
                sender = admit(request.scope, caller, spec.scope, limits)
            body = b""
            if spec.reads_body:
                check_media_type(headers.get("content-type"))
                length, encoding = headers.get("content-length"), headers.get("content-encoding")
            if in_body:  # analytics.js: the browser key rides in a text/plain body
                body = await read_body(
                    request.receive,
                    browser_body,
                    "a body that carries its key",
                    length=length,
                    encoding=encoding,
                )
                token = token_from_header(headers.get("x-customer-token"))
                caller = authenticate_body(body, token, settings, engine.wall_now())
                sender = admit(request.scope, caller, spec.scope, limits)
            elif spec.reads_body:
                body = await read_body(
                    request.receive, settings.max_body_bytes, length=length, encoding=encoding
                )
            ctx = Ctx(request, sender, engine, settings, body, limits, ops, in_body)
            return await handler(ctx)
        except NextbestError as exc:
            return error_response(exc)
        except ClientGone:  # nobody to answer
            return Response(status_code=CLIENT_GONE)

    return endpoint


def _cors_policy(settings: Settings) -> CorsPolicy:
    """Which routes a browser may call cross-origin (those in a browser key's scopes)."""
    browser = Sender(KeyKind.BROWSER).scopes
    browser_routes: dict[str, tuple[str, ...]] = {}
    for r in ROUTES:
        if r.scope in browser:
            browser_routes[r.path] = (*browser_routes.get(r.path, ()), r.method)
    return CorsPolicy(settings, browser_routes)


def _routes(
    engine: Service,
    settings: Settings,
    limits: RateLimits,
    ops: Ops,
    keys: HeaderKeys,
    cors: CorsPolicy,
) -> tuple[list[Route], dict[str, IngestRoute]]:
    """Every route of ``ROUTES``, and the lean ingestion routes among them by path."""
    routes: list[Route] = []
    lean: dict[str, IngestRoute] = {}
    for r in ROUTES:
        if r.ingests is not None:
            lean[r.path] = IngestRoute(
                r.path,
                r.ingests(engine),
                r.prefix,
                engine=engine,
                settings=settings,
                limits=limits,
                metrics=ops.metrics,
                cors=cors,
                keys=keys,
            )
            routes.append(Route(r.path, lean[r.path], methods=[r.method]))
        else:
            endpoint = _endpoint(r, engine, settings, limits, ops, keys)
            routes.append(Route(r.path, endpoint, methods=[r.method]))
    return routes, lean


def create_app(
    engine: Service,
    settings: Settings,
    flush_interval: float = 1.0,
    *,
    metrics: Metrics | None = None,
    background: Sequence[Background] = (),
) -> Starlette:
    """The ASGI app. The engine is closed (decisions flushed, snapshot written) on shutdown.

    ``background``: loops started once the app serves and stopped before the engine closes
    (the outbox sender: ``bootstrap.build_outbox_sender``).

    ``metrics``: what ``/metrics`` shows (default: a registry of the app's own, or the
    multi-process one with ``PROMETHEUS_MULTIPROC_DIR``: ``api.metrics``); the engine's
    feedback verdicts are counted in it."""
    ops = Ops(metrics if metrics is not None else Metrics())
    engine.on_feedback = ops.metrics.feedback_judged

    def tick() -> None:
        """Flush decisions, save state when due, read the gauges (in the threadpool)."""
        engine.flush()
        if engine.snapshot_due:
            ops.save(engine)
        ops.save_error = None
        ops.metrics.sample(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def flusher() -> None:
            while True:
                await asyncio.sleep(flush_interval)
                try:
                    await run_in_threadpool(tick)
                except NextbestError as exc:  # kept for the next tick, which retries
                    ops.save_error = exc.message
                    log.error("background flush or state save failed: %s", exc)

        task = asyncio.create_task(flusher())
        for loop in background:
            loop.start()
        ops.serving = True
        try:
            yield
        finally:
            ops.serving = False
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            try:
                for loop in reversed(background):
                    await run_in_threadpool(loop.stop)
            finally:
                await run_in_threadpool(engine.close)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own 404/405 as JSON with code and message, like every other error."""
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return Response(
            orjson.dumps({"code": code, "message": str(exc.detail)}),
            exc.status_code,
            headers=exc.headers,
            media_type="application/json",
        )

    limits = RateLimits(settings)
    keys = HeaderKeys(settings)
    cors = _cors_policy(settings)
    routes, lean = _routes(engine, settings, limits, ops, keys, cors)
    app = _ObservedApp(
        functools.partial(Observed, metrics=ops.metrics, lean=lean),
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(CORS, policy=cors)],
    )
    # the lean routes an HTTP protocol may serve itself (``http_protocol.serving_protocol``)
    app.fast_lane = FastLane(app, lean, ops.metrics)
    return app


class _ObservedApp(Starlette):
    """Starlette with ``Observed`` outermost, around Starlette's own error middleware: a
    500 that middleware answers carries its request id and is counted and logged as such,
    and the lean ingestion routes' requests (``api.ingest``) are served straight from the
    top of the stack, without a layer (and a send wrapper) that would only pass them on (an
    error a lean route does not answer reaches the server, which answers 500).
    ``fast_lane``: those routes for an HTTP protocol that serves them itself
    (``api.fast_lane``)."""

    fast_lane: FastLane | None = None

    def __init__(
        self, observed: Callable[[Any], Observed], *, routes: list[Route], **kwargs: Any
    ) -> None:
        super().__init__(routes=routes, **kwargs)
        self.router = _Router(routes, lifespan=kwargs.get("lifespan"))
        self._observed = observed

    def build_middleware_stack(self) -> Any:
        return self._observed(super().build_middleware_stack())


class _Router(Router):
    """Starlette's router, trying a request to a path without parameters (``/healthz``,
    ``/v1/decide``) only on the routes whose pattern matches that path, in their order,
    rather than on every route's pattern: the route it finds is the one the full scan
    would (the first full match), and anything else (405, a redirect, 404) is the full
    scan's to answer. The routes are the ones given, fixed for the app's life."""

    def __init__(self, routes: list[Route], **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._by_path: dict[str, list[BaseRoute]] = {}
        for route in routes:
            path = route.path
            if "{" not in path and path not in self._by_path:
                self._by_path[path] = [
                    r for r in routes if not isinstance(r, Route) or r.path_regex.match(path)
                ]

    async def app(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            for route in self._by_path.get(scope["path"], ()):
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)
