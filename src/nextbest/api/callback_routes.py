"""The HTTP face of expert call-backs: customers ask for a call, advisors (and the bank's
telephony system) answer, supervisors watch. Every handler talks to the engine's callback
desk (``callbacks.CallbackDesk``) and nothing else; the routes, with their scopes, are in
``api.app.ROUTES``.

Who may do what (``guard.senders``):

- a customer (write or browser key): ``POST /v1/callbacks`` for the session it holds (the
  userId its customer token binds, or the anonymousId), ``GET /v1/callbacks/{id}`` and its
  ``cancel`` only for that session's callbacks: anyone else's is a 404, as if it did not
  exist. They see ``CustomerCallback`` (no history, nobody who declined);
- an advisor (a signed advisor token): their own presence and queue, and accept, decline,
  connect and complete the callbacks held by them (another's: 404; another advisor's
  presence or queue: 403), and the customer view of the customers routed to them (others:
  404);
- server and admin keys: all of it, for any customer and any advisor (the telephony system
  reports presence and calls with a server key).
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nextbest import auditing
from nextbest.advisors.card import AdvisorCard
from nextbest.advisors.model import Callback
from nextbest.advisors.slots import local_label
from nextbest.api.ingest import answers_for
from nextbest.api.schemas import (
    AdvisorActionBody,
    AdvisorList,
    CallbackAdvisor,
    CallbackBody,
    CustomerCallback,
    PageAdvisorCard,
    PageSlot,
    PresenceBody,
    SweepBody,
)
from nextbest.audit.model import AuditAction, actor_of
from nextbest.callbacks import CallbackDesk, customer_key
from nextbest.catalog.compiled import Catalog
from nextbest.errors import Forbidden, NotFound, ValidationError
from nextbest.events.parse import decode_json, parse_instant
from nextbest.guard.senders import KeyKind, Sender, check_advisor

if TYPE_CHECKING:
    from nextbest.api.app import Ctx

__all__ = [
    "accept",
    "advisor_customer",
    "advisor_queue",
    "advisors",
    "callback",
    "cancel",
    "complete",
    "connect",
    "customer_callback",
    "decline",
    "page_card",
    "parse_time",
    "presence",
    "request_callback",
    "sweep",
]

_ENCODER = msgspec.json.Encoder()


def _answer(body: Any) -> Response:
    return Response(_ENCODER.encode(body), media_type="application/json")


def _body(ctx: Ctx, kind: type[Any]) -> Any:
    """The body as ``kind``; an empty body is ``kind()`` (every field optional)."""
    if not ctx.body.strip():
        return kind()
    return decode_json(ctx.body, kind)


def parse_time(value: str, path: str) -> float:
    """An ISO 8601 date-time with its UTC offset as epoch seconds; ValidationError at
    ``path`` otherwise."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"not an ISO 8601 date-time: {value[:40]!r}", path) from None
    if moment.tzinfo is None:
        raise ValidationError("needs a UTC offset (Z or +00:00)", path)
    return moment.timestamp()


def _desk(ctx: Ctx) -> CallbackDesk:
    return ctx.engine.callbacks


def _is_customer(sender: Sender) -> bool:
    """A write or browser key: it sees callbacks as the customer does."""
    return sender.kind in (KeyKind.WRITE, KeyKind.BROWSER)


def customer_callback(catalog: Catalog, c: Callback) -> CustomerCallback:
    """``c`` as the customer who asked sees it."""
    advisor = catalog.advisors.get(c.advisor_id) if c.advisor_id else None
    label = None
    if c.scheduled_for is not None and advisor is not None:
        label = local_label(c.scheduled_for, advisor.zone)
    return CustomerCallback(
        id=c.id,
        topic=c.topic,
        mode=c.mode,
        state=c.state,
        phone=c.phone,
        requested_at=c.requested_at,
        scheduled_for=c.scheduled_for,
        scheduled_label=label,
        advisor=(
            CallbackAdvisor(advisor.id, advisor.spec.name, advisor.spec.photo_url)
            if advisor is not None
            else None
        ),
        notice=c.notice,
    )


def _shown(ctx: Ctx, c: Callback) -> Response:
    if _is_customer(ctx.sender):
        return _answer(customer_callback(ctx.engine.catalog, c))
    return _answer(c)


def page_card(catalog: Catalog, card: AdvisorCard) -> PageAdvisorCard:
    """An advisor card as a page renders it: slots as ISO times with the advisor's label."""
    slots = []
    for s in card.slots:
        advisor = catalog.advisors.get(s.advisor_id)
        label = local_label(s.start, advisor.zone) if advisor is not None else ""
        slots.append(PageSlot(_iso(s.start), _iso(s.end), label))
    return PageAdvisorCard(
        card.topic, card.topic_name, card.reason, card.advisor, card.actions, card.available, slots
    )


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()


# ------------------------------------------------------------------------------ customers
async def request_callback(ctx: Ctx) -> Response:
    desk = _desk(ctx)
    body: CallbackBody = decode_json(ctx.body, CallbackBody)
    if body.customerToken and not ctx.credentials_in_body:
        raise ValidationError(
            "customerToken in the body goes with writeKey in the body; with an "
            "Authorization header send the token as X-Customer-Token",
            "$.customerToken",
        )
    sender = ctx.sender
    if body.userId is not None and not sender.may_decide_for(body.userId):
        raise Forbidden(
            "this key may ask for a callback only for its own session (at $.userId): send "
            "the customer token that binds this userId, or the anonymousId"
        )
    customer = customer_key(body.userId, body.anonymousId)
    at = parse_time(body.time, "$.time") if body.time is not None else None
    ctx.charge_devices([body.anonymousId])
    # no thread waits: routed on the loop (pure, under the desk's lock), answered once its
    # write and its steps are committed, woken once per group (as ingestion is)
    answers = answers_for(asyncio.get_running_loop())
    future: asyncio.Future[Callback] = answers.loop.create_future()
    desk.request_callback_with(
        functools.partial(answers.post, future),
        customer,
        body.topic,
        body.mode,
        body.phone,
        at=at,
        language=body.language,
        decision_id=body.decision_id,
    )
    return _shown(ctx, await future)


def _own_callback(ctx: Ctx) -> Callback:
    """The callback of the path, if the caller may see it: a customer only their own (by
    customer token, or ``?anonymousId=``), else 404 as if it did not exist."""
    callback_id = ctx.request.path_params["callback_id"]
    found = _desk(ctx).store.get(callback_id)
    anonymous = ctx.request.query_params.get("anonymousId")
    if found is None or not ctx.sender.owns_customer(found.customer, anonymous):
        raise NotFound(f"no callback {callback_id!r}")
    return found


async def callback(ctx: Ctx) -> Response:
    return _shown(ctx, await run_in_threadpool(_own_callback, ctx))


async def cancel(ctx: Ctx) -> Response:
    found = await run_in_threadpool(_own_callback, ctx)
    reason = "cancelled by the customer" if _is_customer(ctx.sender) else "cancelled by the bank"
    done = await run_in_threadpool(_desk(ctx).cancel, found.id, reason=reason)
    return _shown(ctx, done)


# ------------------------------------------------------------------------------ advisors
def _acting(ctx: Ctx, named: str | None) -> str | None:
    """Which advisor acts: an advisor key its own (naming another: 403), a server key the
    one it names (None: the callback's own)."""
    sender = ctx.sender
    if sender.kind is KeyKind.ADVISOR:
        own = sender.bound_advisor or ""
        if named is not None:
            check_advisor(sender, named)
        return own
    return named


def _held(ctx: Ctx, advisor: str | None) -> Callback:
    """The callback of the path: with an advisor key, only one held by that advisor (else
    404 as if it did not exist)."""
    callback_id = ctx.request.path_params["callback_id"]
    found = _desk(ctx).store.get(callback_id)
    mine = ctx.sender.kind is not KeyKind.ADVISOR or (
        found is not None and found.advisor_id == advisor
    )
    if found is None or not mine:
        raise NotFound(f"no callback {callback_id!r}")
    return found


async def _act(ctx: Ctx, verb: str) -> Response:
    desk = _desk(ctx)
    body: AdvisorActionBody = _body(ctx, AdvisorActionBody)
    advisor = _acting(ctx, body.advisor_id)
    found = await run_in_threadpool(_held, ctx, advisor)
    if verb == "accept":
        done = await run_in_threadpool(desk.accept, found.id, advisor)
    elif verb == "decline":
        done = await run_in_threadpool(desk.decline, found.id, advisor)
    elif verb == "complete":
        done = await run_in_threadpool(desk.complete, found.id, advisor)
    else:
        done = await run_in_threadpool(desk.connect, found.id)
    return _answer(done)


async def accept(ctx: Ctx) -> Response:
    return await _act(ctx, "accept")


async def decline(ctx: Ctx) -> Response:
    return await _act(ctx, "decline")


async def complete(ctx: Ctx) -> Response:
    return await _act(ctx, "complete")


async def connect(ctx: Ctx) -> Response:
    return await _act(ctx, "connect")


async def presence(ctx: Ctx) -> Response:
    desk = _desk(ctx)
    advisor_id = ctx.request.path_params["advisor_id"]
    check_advisor(ctx.sender, advisor_id, "$.path.advisor_id")
    body: PresenceBody = decode_json(ctx.body, PresenceBody)
    at = None
    if body.at is not None:
        at = parse_instant(body.at, "$.at", ctx.engine.wall_now(), ctx.engine.limits)
    report = await run_in_threadpool(desk.set_presence, advisor_id, body.presence, at=at)
    return _answer(report)


async def advisor_queue(ctx: Ctx) -> Response:
    desk = _desk(ctx)
    advisor_id = ctx.request.path_params["advisor_id"]
    check_advisor(ctx.sender, advisor_id, "$.path.advisor_id")
    return _answer(await run_in_threadpool(desk.advisor_queue, advisor_id))


async def advisors(ctx: Ctx) -> Response:
    listed = await run_in_threadpool(_desk(ctx).advisors)
    return _answer(AdvisorList(listed))


def _customer_view(ctx: Ctx) -> Any:
    customer_id = ctx.request.path_params["customer_id"]
    desk, sender = _desk(ctx), ctx.sender
    if sender.kind is KeyKind.ADVISOR and not desk.routed_to(
        customer_id, sender.bound_advisor or ""
    ):
        raise NotFound(f"nothing is known of customer {customer_id!r}")
    view = desk.customer_view(customer_id)
    # recorded before it is answered: an audit log that cannot be written refuses the read
    auditing.record(ctx.engine, actor_of(sender), AuditAction.CUSTOMER_VIEW_READ, customer_id, {})
    return view


async def advisor_customer(ctx: Ctx) -> Response:
    return _answer(await run_in_threadpool(_customer_view, ctx))


async def sweep(ctx: Ctx) -> Response:
    desk = _desk(ctx)
    body: SweepBody = _body(ctx, SweepBody)
    now = None
    if body.now is not None:
        ctx.engine.require_event_time("$.now")
        now = parse_time(body.now, "$.now")
    return _answer(await run_in_threadpool(desk.sweep, now))
