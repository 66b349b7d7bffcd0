"""The outermost middleware: a request id for every request, its metrics and its access line.

The id is the client's ``X-Request-Id`` when it is a sane token (1-64 characters of letters,
digits and ``-._:``), else a new one (32 hex digits: a random prefix drawn once per process,
then a counter; unique, not secret, and far cheaper than a uuid4 a request). It is echoed in
the answer's ``X-Request-Id`` and carried by every log line written while the request is
served (``api.logs.request_id``). The route is the matched route's template
(``/v1/profiles/{user_id}``, never the raw path, which may carry a customer id), or
``unmatched``; the key kind is what the endpoint authenticated (``nextbest.key_kind`` in the
ASGI scope), never the key.

``lean``: routes served here directly, without the app behind (``api.ingest``): a ``POST``
to one of their paths goes to its route's ``serve``, which adds the request id itself; the
access line and the metrics are the same as for any route. The app (``api.app``) puts this
middleware outside Starlette's own error middleware, so a lean request passes through no
other layer, and a 500 that error middleware answers carries its request id. Requests the
HTTP protocol serves itself (``api.fast_lane``) get the same access line and metrics from
``record_request``.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Mapping
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextbest.api.logs import ACCESS, request_id, request_line
from nextbest.api.metrics import Metrics

__all__ = ["KEY_KIND", "LeanRoute", "Observed", "record_request", "sane_request_id"]

#: where an endpoint writes the kind of key it authenticated, in the ASGI scope
KEY_KIND = "nextbest.key_kind"
_SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
_HEADER = b"x-request-id"


class _Ids:
    """New request ids: a random prefix (drawn on first use, not at import) and a counter,
    written as one 128-bit number (the prefix's 64 bits, then the counter's): the prefix's
    16 hex digits, written once, then the counter's 16."""

    prefix: str | None = None
    count = itertools.count(1)

    @classmethod
    def new(cls) -> str:
        prefix = cls.prefix
        if prefix is None:
            prefix = cls.prefix = f"{secrets.randbits(64):016x}"
        return f"{prefix}{next(cls.count):016x}"  # no 128-bit sum to format a request


def sane_request_id(value: bytes | None) -> str:
    """``value`` when it is a sane token, else a new id."""
    if value is not None and _SANE.fullmatch(value):
        return value.decode("ascii")
    return _Ids.new()


def _incoming_id(scope: Scope) -> bytes | None:
    """The request's own ``X-Request-Id`` (its first), if it sent one."""
    for name, value in scope["headers"]:
        if name == _HEADER:
            return value  # type: ignore[no-any-return]
    return None


class LeanRoute(Protocol):
    """A route ``Observed`` serves itself (``api.ingest.IngestRoute``)."""

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, request_id: bytes | None
    ) -> int:
        """Answer the request, echoing ``request_id`` in ``X-Request-Id``; the status."""
        ...


def _route_path(scope: Scope) -> str:
    """The path a route matches: without the root path the app is mounted at (as
    Starlette's router sees it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path != root and path[len(root)] == "/":
        return path[len(root) :]
    return path


class Observed:
    """Times, counts and logs every HTTP request of ``app``; serves the ``POST`` routes of
    ``lean`` (path -> route) itself."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, lean: Mapping[str, LeanRoute] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.lean = dict(lean or {})

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The ASGI app: the awaitable that serves the request (a coroutine of its own only
        for the requests of the app behind, so a lean request's coroutine is one level
        shallower, a few tenths of a microsecond a request)."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        found = self.lean_route(scope)
        if found is not None:
            return self.serve_lean(scope, receive, send, *found)
        return self._observe(scope, receive, send)

    async def _observe(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request of the app behind, timed, counted and logged."""
        method = scope["method"]
        started = time.perf_counter()
        rid = sane_request_id(_incoming_id(scope))
        token = request_id.set(rid)
        echoed = rid.encode("ascii")
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER]
                headers.append((_HEADER, echoed))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._done(scope, method, template, status, started, rid)
            request_id.reset(token)

    def lean_route(self, scope: Scope) -> tuple[LeanRoute, str] | None:
        """The lean route that serves this HTTP request (a ``POST`` to one of its paths),
        and its path; None for any other request."""
        if scope["method"] != "POST" or not self.lean:
            return None
        path = _route_path(scope)
        lean = self.lean.get(path)
        return None if lean is None else (lean, path)

    async def serve_lean(
        self, scope: Scope, receive: Receive, send: Send, lean: LeanRoute, path: str
    ) -> None:
        """Serve an HTTP request with its lean route (``lean_route``), timed, counted and
        logged as any other."""
        started = time.perf_counter()
        rid = sane_request_id(_incoming_id(scope))
        token = request_id.set(rid)
        status = 500
        try:
            status = await lean.serve(scope, receive, send, rid.encode("ascii"))
        finally:
            self._done(scope, "POST", path, status, started, rid)
            request_id.reset(token)

    def _done(
        self, scope: Scope, method: str, template: str, status: int, started: float, rid: str
    ) -> None:
        """The request's metrics and access line."""
        record_request(
            self.metrics, scope.get(KEY_KIND, "none"), method, template, status, started, rid
        )


def record_request(
    metrics: Metrics, kind: str, method: str, template: str, status: int, started: float, rid: str
) -> None:
    """A served request's metrics and access line (``kind``: the key kind its endpoint
    authenticated); ``started``: its ``time.perf_counter()`` when it began."""
    seconds = time.perf_counter() - started
    metrics.request(template, method, status, seconds)
    if len(method) > 16:
        method = method[:16]
    # first the line straight to the log's writer (None when the access log is not
    # plainly routed to one, or off: ``request_line`` asks the level itself)
    if request_line(time.time(), rid, method, template, status, seconds, kind) is not None:
        return
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    fields = {
        "method": method,
        "route": template,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "key_kind": kind,
    }
    # the record made directly: ``info`` would also look up its caller's frame, which an
    # access line does not need (it would double the line's cost)
    record = logging.LogRecord(ACCESS.name, logging.INFO, "", 0, "request", None, None)
    record.access = fields
    token = request_id.set(rid)  # what a formatter reads (a request served off the ASGI path)
    try:
        ACCESS.handle(record)
    finally:
        request_id.reset(token)
