"""The ingestion routes (``POST /v1/track|page|screen|identify|alias|group|batch`` and
analytics.js's short paths) served straight on ASGI.

Single events arrive by the thousand a second, and a request's own work (read, check, hand
to the group commit) is smaller than what a general web stack spends around it: Starlette's
request and response objects, its router (a regular expression per route), its exception
middleware, a send wrapper per middleware. So ``api.observe.Observed`` hands a ``POST`` to
one of these paths to its ``IngestRoute`` at once, and the route reads the ASGI scope and
channel itself. It keeps every check of the general path, in the same order: CORS for a
browser's page, credentials (a key in the Authorization header before the body is read, or
a browser key inside a body read within the small browser limit), the route's scope, the
key's and the session's rate limits, the media type (415), the body's size (413) and
encoding, then the body itself (400 naming the field); every refusal is the error tree's
JSON answer (``api.errors``). Each route is also registered with Starlette (its ASGI app),
so the route table, the OpenAPI document and ``405`` for another method are as for any
route.

An accepted request waits for the group commit that writes its events (``group_commit``):
the committing thread posts each request's result to its event loop, which is woken once
for all the results of a commit (``_Answers``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from nextbest.api.auth import HeaderKeys, admit, authenticate_body, token_from_header
from nextbest.api.body import ClientGone, check_media_type, read_body
from nextbest.api.cors import CorsPolicy
from nextbest.api.errors import error_parts
from nextbest.api.metrics import Metrics
from nextbest.api.rate_limit import RateLimits
from nextbest.api.schemas import IngestResponse, RejectedMessage
from nextbest.engine import IngestRequest, IngestResult
from nextbest.errors import NextbestError
from nextbest.events.model import Event
from nextbest.events.parse import Parsed
from nextbest.guard.origin import network_origin, stamp
from nextbest.guard.senders import KeyKind, Sender
from nextbest.guard.senders import Scope as Needs
from nextbest.settings import Settings

__all__ = ["CLIENT_GONE", "READ_ON_LOOP", "IngestRoute", "answers_for", "network"]

#: bodies up to this size are read on the event loop (tens of microseconds); larger ones in
#: the threadpool, so a 2,000-message batch never holds the loop
READ_ON_LOOP = 16_384

#: the status an access line and the metrics give a request whose client left before it
#: sent its whole body (nginx's "client closed request"); nothing is answered
CLIENT_GONE = 499

_JSON = (b"content-type", b"application/json")
_REQUEST_ID = b"x-request-id"
_ENCODER = msgspec.json.Encoder()

#: enum members the per-request path compares, looked up once (in Python 3.11 each
#: ``KeyKind.X`` read is a call of the enum metaclass's attribute hook, ~0.2 us)
_BROWSER = KeyKind.BROWSER
_EVENTS_WRITE = Needs.EVENTS_WRITE


def network(settings: Settings, reported: str | None, client: tuple[str, int] | None) -> str | None:
    """The network origin of a request's client: of the address the bank's edge reported
    in ``NEXTBEST_ORIGIN_HEADER`` (``reported``: its last value), else of the socket's
    peer."""
    address = None
    if settings.origin_header and reported:
        address = reported.rpartition(",")[2]
    if address is None:
        address = client[0] if client is not None else None
    if not address:
        return None
    return network_origin(address, settings.origin_prefix_v4, settings.origin_prefix_v6)


class Accepting(Protocol):
    """What an ingestion route needs of the engine (or of any service that ingests)."""

    def wall_now(self) -> float: ...

    def submit_with(
        self, request: IngestRequest, answer: Callable[[IngestResult | BaseException], None]
    ) -> None: ...


class _Answers:
    """Group-commit answers handed back to one event loop: the committing thread posts each
    request's result, and the loop is woken once for all that arrived meanwhile (a wake-up
    per request would cost more than the request's own work).

    No lock: ``deque.append`` and ``popleft`` are atomic, and a post that finds a delivery
    already scheduled was queued before that delivery empties the queue (the delivery
    clears the flag first), so no answer waits for a wake-up that never comes; a second
    committing thread may schedule a delivery that finds nothing, which is harmless."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._posted: collections.deque[tuple[asyncio.Future[Any], Any]] = collections.deque()
        self._scheduled = False

    def post(self, future: asyncio.Future[Any], result: Any) -> None:
        self._posted.append((future, result))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        posted = self._posted
        while posted:
            future, result = posted.popleft()
            if future.cancelled():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


#: one per running event loop (a loop that ends takes its own with it)
_ANSWERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Answers] = (
    weakref.WeakKeyDictionary()
)


def answers_for(loop: asyncio.AbstractEventLoop) -> _Answers:
    answers = _ANSWERS.get(loop)
    if answers is None:
        answers = _ANSWERS[loop] = _Answers(loop)
    return answers


#: the answer's JSON of a request without quarantined messages, by (accepted, duplicates):
#: a single event's answers are a handful, encoded once each
_PLAIN_ANSWERS: dict[tuple[int, int], bytes] = {}


def _answer(result: IngestResult) -> bytes:
    """The JSON answer (``IngestResponse``) to an ingested request."""
    if not result.rejected and result.accepted + result.duplicates <= 1:
        key = (result.accepted, result.duplicates)
        body = _PLAIN_ANSWERS.get(key)
        if body is None:
            body = _PLAIN_ANSWERS[key] = _ENCODER.encode(IngestResponse(True, *key, []))
        return body
    rejected = [RejectedMessage(r.index, r.code, r.message, r.path) for r in result.rejected]
    return _ENCODER.encode(IngestResponse(True, result.accepted, result.duplicates, rejected))


class _Headers:
    """The request headers an ingestion route reads (the first of each name, as
    Starlette's ``Headers.get``), as text."""

    __slots__ = (
        "authorization",
        "content_encoding",
        "content_length",
        "content_type",
        "customer_token",
        "has_authorization",
        "origin",
        "reported",
    )

    def __init__(self, raw: Iterable[tuple[bytes, bytes]], reported_name: bytes) -> None:
        # a name sent twice: its first value is the one kept
        found = dict(reversed(raw if isinstance(raw, list) else list(raw)))
        # written out rather than a helper per header: a call each is a tenth of the cost
        get = found.get
        value = get(b"authorization")
        self.has_authorization = value is not None
        self.authorization = None if value is None else value.decode("latin-1")
        value = get(b"x-customer-token")
        self.customer_token = None if value is None else value.decode("latin-1")
        value = get(b"content-type")
        self.content_type = None if value is None else value.decode("latin-1")
        value = get(b"content-length")
        self.content_length = None if value is None else value.decode("latin-1")
        value = get(b"content-encoding")
        self.content_encoding = None if value is None else value.decode("latin-1")
        value = get(b"origin")
        self.origin = None if value is None else value.decode("latin-1")
        value = get(reported_name) if reported_name else None
        self.reported = None if value is None else value.decode("latin-1")


class IngestRoute:
    """One ingestion route: ``read`` turns a body into its messages (``Engine.read_batch``,
    or ``read_message`` of one type), ``prefix`` names where they sit for error paths."""

    def __init__(
        self,
        path: str,
        read: Callable[[bytes], Parsed],
        prefix: str,
        *,
        engine: Accepting,
        settings: Settings,
        limits: RateLimits,
        metrics: Metrics,
        cors: CorsPolicy,
        keys: HeaderKeys,
    ) -> None:
        self.path = path
        self.read = read
        self.prefix = prefix
        self.engine = engine
        self.settings = settings
        self.limits = limits
        self.metrics = metrics
        self.cors = cors
        self.keys = keys
        self._browser_body = min(settings.browser_body_bytes, settings.max_body_bytes)
        self._reported = settings.origin_header.lower().encode("latin-1")
        #: the group-commit answers of the loop that served the latest request
        self._answers: _Answers | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The route as Starlette's router calls it, inside its middleware (which has
        answered CORS and adds the request id): ``Observed`` serves a POST before that."""
        await self.serve(scope, receive, send, None, cors=False)

    async def serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: bytes | None,
        *,
        cors: bool = True,
    ) -> int:
        """Answer one request (its ``X-Request-Id`` echoed when given); the status sent."""
        headers = _Headers(scope["headers"], self._reported)
        extra: list[tuple[bytes, bytes]] = []
        try:
            if cors and self.cors.origins:
                extra = self.cors.answer_headers(self.path, headers.origin)
            try:
                status, body = await self._accept(scope, receive, headers)
            except NextbestError as exc:
                self.metrics.refused.labels(exc.code).inc()
                raise
        except ClientGone:
            return CLIENT_GONE
        except NextbestError as exc:
            status, body, more = error_parts(exc)
            if more:
                extra = [*extra, *((k.lower().encode(), v.encode()) for k, v in more.items())]
        answer = [_JSON, (b"content-length", b"%d" % len(body))]
        if request_id is not None:
            answer.append((_REQUEST_ID, request_id))
        if extra:
            answer.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": body})
        return status

    async def _accept(self, scope: Scope, receive: Receive, headers: _Headers) -> tuple[int, bytes]:
        """Credentials, scope and rate limits, the body, then the group commit: 200 and the
        answer's JSON once the events are on disk."""
        engine, settings = self.engine, self.settings
        if headers.has_authorization:  # before reading any body
            token = token_from_header(headers.customer_token)
            caller = self.keys.caller(headers.authorization, token, engine.wall_now())
            sender = admit(scope, caller, _EVENTS_WRITE, self.limits)
            check_media_type(headers.content_type)
            body = await read_body(
                receive,
                settings.max_body_bytes,
                length=headers.content_length,
                encoding=headers.content_encoding,
            )
        else:  # analytics.js: the browser key rides in a text/plain body
            check_media_type(headers.content_type)
            body = await read_body(
                receive,
                self._browser_body,
                "a body that carries its key",
                length=headers.content_length,
                encoding=headers.content_encoding,
            )
            token = token_from_header(headers.customer_token)
            caller = authenticate_body(body, token, settings, engine.wall_now())
            sender = admit(scope, caller, _EVENTS_WRITE, self.limits)
        browser = sender.kind is _BROWSER
        seen = network(settings, headers.reported, scope.get("client")) if browser else None
        if len(body) <= READ_ON_LOOP:
            parsed = self._read_stamped(body, sender, seen)
        else:
            parsed = await run_in_threadpool(self._read_stamped, body, sender, seen)
        if browser:  # a browser session's rate, by the anonymousIds it names
            anonymous = itertools.chain(
                (e.anonymous_id for e in parsed.events),
                (r.event.anonymous_id for r in parsed.rejected),
            )
            self.limits.charge_devices(sender, anonymous)
        loop = asyncio.get_running_loop()
        answers = self._answers
        if answers is None or answers.loop is not loop:
            answers = self._answers = answers_for(loop)
        future: asyncio.Future[IngestResult] = loop.create_future()
        engine.submit_with(
            IngestRequest(sender, parsed, self.prefix), functools.partial(answers.post, future)
        )
        result = await future
        self.metrics.ingested(result)
        return 200, _answer(result)

    def _read_stamped(self, body: bytes, sender: Sender, seen: str | None) -> Parsed:
        """The body's messages, with who sent them written on them (``guard.origin.stamp``)."""
        parsed = self.read(body)
        s = self.settings
        events: Iterable[Event] = parsed.events
        if parsed.rejected:
            events = itertools.chain(events, (r.event for r in parsed.rejected))
        stamp(events, sender, seen, s.origin_prefix_v4, s.origin_prefix_v6)
        return parsed
