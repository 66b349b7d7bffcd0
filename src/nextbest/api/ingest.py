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

``nextbest serve``'s HTTP protocol serves most of these requests itself, without an ASGI
cycle (``api.fast_lane``): it runs the same steps (``begin``, ``take``, ``accepted``), so
both paths share one implementation of every check.

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
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Protocol

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from nextbest.api.auth import HeaderKeys, admit, authenticate_body, token_from_header
from nextbest.api.body import ClientGone, check_length, check_media_type, finish_body, read_body
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

__all__ = [
    "CLIENT_GONE",
    "READ_ON_LOOP",
    "IngestRoute",
    "answer_headers",
    "answers_for",
    "network",
    "refusal",
]

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
        self._posted: collections.deque[
            tuple[asyncio.Future[Any] | None, Callable[[Any], None] | None, Any]
        ] = collections.deque()
        self._scheduled = False

    def post(self, future: asyncio.Future[Any], result: Any) -> None:
        """Resolve ``future`` with ``result`` (an exception: raised) on the loop."""
        self._queue(future, None, result)

    def post_call(self, call: Callable[[Any], None], result: Any) -> None:
        """Call ``call(result)`` on the loop (it must not raise)."""
        self._queue(None, call, result)

    def _queue(
        self, future: asyncio.Future[Any] | None, call: Callable[[Any], None] | None, result: Any
    ) -> None:
        self._posted.append((future, call, result))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        posted = self._posted
        while posted:
            future, call, result = posted.popleft()
            if future is None:
                if call is not None:
                    call(result)
                continue
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


def refusal(
    exc: NextbestError, extra: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The status, JSON body and headers (``extra``, then the error's own) of the answer
    refusing a request."""
    status, body, more = error_parts(exc)
    if more:
        extra = [*extra, *((k.lower().encode(), v.encode()) for k, v in more.items())]
    return status, body, extra


def answer_headers(
    body: bytes, request_id: bytes | None, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """An ingestion answer's headers: JSON, its length, the request id, then ``extra``."""
    answer = [_JSON, (b"content-length", b"%d" % len(body))]
    if request_id is not None:
        answer.append((_REQUEST_ID, request_id))
    if extra:
        answer.extend(extra)
    return answer


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
            status, body, extra = refusal(exc, extra)
        answer = answer_headers(body, request_id, extra)
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": body})
        return status

    async def _accept(self, scope: Scope, receive: Receive, headers: _Headers) -> tuple[int, bytes]:
        """Credentials, scope and rate limits, the body, then the group commit: 200 and the
        answer's JSON once the events are on disk."""
        sender, limit, what = self.before_body(scope, headers)
        body = await read_body(
            receive, limit, what, length=headers.content_length, encoding=headers.content_encoding
        )
        sender, seen = self.after_body(scope, headers, sender, body)
        if len(body) <= READ_ON_LOOP:
            parsed = self._read_stamped(body, sender, seen)
        else:
            parsed = await run_in_threadpool(self._read_stamped, body, sender, seen)
        request = self.request_for(sender, parsed)
        loop = asyncio.get_running_loop()
        answers = self._answers
        if answers is None or answers.loop is not loop:
            answers = self._answers = answers_for(loop)
        future: asyncio.Future[IngestResult] = loop.create_future()
        self.engine.submit_with(request, functools.partial(answers.post, future))
        return 200, self.accepted(await future)

    # ------------------------------------------------------------ the steps, without ASGI
    # ``_accept`` runs them around its reads and waits; an HTTP protocol that collected a
    # small body itself runs them through ``take`` (``api.fast_lane``): one implementation.

    def headers(self, raw: Iterable[tuple[bytes, bytes]]) -> _Headers:
        """The request headers this route reads, of the raw (lower-case) header list."""
        return _Headers(raw, self._reported)

    def before_body(
        self, scope: MutableMapping[str, Any], headers: _Headers
    ) -> tuple[Sender | None, int, str]:
        """What is checked before the body is read: the credentials, the route's scope and
        the rate limits of a key in the Authorization header, then the media type. The
        sender (None: the key rides in the body), the body's byte limit and its name for
        messages. ``scope``: the request's ASGI scope (or a dict with its ``client``); the
        key's kind is noted in it."""
        if headers.has_authorization:  # before reading any body
            token = token_from_header(headers.customer_token)
            caller = self.keys.caller(headers.authorization, token, self.engine.wall_now())
            sender = admit(scope, caller, _EVENTS_WRITE, self.limits)
            check_media_type(headers.content_type)
            return sender, self.settings.max_body_bytes, "body"
        # analytics.js: the browser key rides in a text/plain body
        check_media_type(headers.content_type)
        return None, self._browser_body, "a body that carries its key"

    def after_body(
        self,
        scope: MutableMapping[str, Any],
        headers: _Headers,
        sender: Sender | None,
        body: bytes,
    ) -> tuple[Sender, str | None]:
        """The sender once the body is read (a key inside it checked as ``before_body``
        checks one in the header), and the network a browser's request came from."""
        if sender is None:
            token = token_from_header(headers.customer_token)
            caller = authenticate_body(body, token, self.settings, self.engine.wall_now())
            sender = admit(scope, caller, _EVENTS_WRITE, self.limits)
        if sender.kind is not _BROWSER:
            return sender, None
        return sender, network(self.settings, headers.reported, scope.get("client"))

    def request_for(self, sender: Sender, parsed: Parsed) -> IngestRequest:
        """What goes to the group commit, once a browser session's rate is charged."""
        if sender.kind is _BROWSER:  # a browser session's rate, by the anonymousIds it names
            anonymous = itertools.chain(
                (e.anonymous_id for e in parsed.events),
                (r.event.anonymous_id for r in parsed.rejected),
            )
            self.limits.charge_devices(sender, anonymous)
        return IngestRequest(sender, parsed, self.prefix)

    def begin(
        self, scope: MutableMapping[str, Any], headers: _Headers
    ) -> tuple[Sender | None, int, str]:
        """``before_body``, then the declared Content-Length against the limit (the
        checks ``_accept`` makes before it reads a byte of the body): for an HTTP protocol
        that collects the body itself (``api.fast_lane``) and hands it to ``take``."""
        sender, limit, what = self.before_body(scope, headers)
        check_length(limit, what, headers.content_length)
        return sender, limit, what

    def take(
        self,
        scope: MutableMapping[str, Any],
        headers: _Headers,
        begun: tuple[Sender | None, int, str],
        body: bytes,
    ) -> IngestRequest:
        """The checks ``_accept`` makes once it has read the body (``begun``: what
        ``begin`` gave), in the same order, the body read on the calling thread: what goes
        to the group commit (``submit_with``). NextbestError for a refusal (``refusal``)."""
        sender, limit, what = begun
        body = finish_body(body, limit, what, headers.content_encoding)
        known, seen = self.after_body(scope, headers, sender, body)
        return self.request_for(known, self._read_stamped(body, known, seen))

    def accepted(self, result: IngestResult) -> bytes:
        """The answer's JSON to a committed request, counted."""
        self.metrics.ingested(result)
        return _answer(result)

    def _read_stamped(self, body: bytes, sender: Sender, seen: str | None) -> Parsed:
        """The body's messages, with who sent them written on them (``guard.origin.stamp``)."""
        parsed = self.read(body)
        s = self.settings
        events: Iterable[Event] = parsed.events
        if parsed.rejected:
            events = itertools.chain(events, (r.event for r in parsed.rejected))
        stamp(events, sender, seen, s.origin_prefix_v4, s.origin_prefix_v6)
        return parsed
