"""The outermost middleware: a request id for every request, its metrics and its access line.

The id is the client's ``X-Request-Id`` when it is a sane token (1-64 characters of letters,
digits and ``-._:``), else a new one (32 hex digits: a random prefix drawn once per process,
then a counter; unique, not secret, and far cheaper than a uuid4 a request). It is echoed in
the answer's ``X-Request-Id`` and carried by every log line written while the request is
served (``api.logs.request_id``). The route is the matched route's template
(``/v1/profiles/{user_id}``, never the raw path, which may carry a customer id), or
``unmatched``; the key kind is what the endpoint authenticated (``nextbest.key_kind`` in the
ASGI scope), never the key.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextbest.api.logs import ACCESS, request_id
from nextbest.api.metrics import Metrics

__all__ = ["KEY_KIND", "Observed", "sane_request_id"]

#: where an endpoint writes the kind of key it authenticated, in the ASGI scope
KEY_KIND = "nextbest.key_kind"
_SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
_HEADER = b"x-request-id"


class _Ids:
    """New request ids: a random prefix (drawn on first use, not at import) and a counter."""

    prefix = ""
    count = itertools.count(1)

    @classmethod
    def new(cls) -> str:
        if not cls.prefix:
            cls.prefix = secrets.token_hex(8)
        return f"{cls.prefix}{next(cls.count):016x}"


def sane_request_id(value: bytes | None) -> str:
    """``value`` when it is a sane token, else a new id."""
    if value is not None and _SANE.fullmatch(value):
        return value.decode("ascii")
    return _Ids.new()


class Observed:
    """Times, counts and logs every HTTP request of ``app``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                incoming = value
                break
        rid = sane_request_id(incoming)
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
            seconds = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.request(template, method, status, seconds)
            if ACCESS.isEnabledFor(logging.INFO):
                # the record made directly: ``info`` would also look up its caller's frame,
                # which an access line does not need (it would double the line's cost)
                record = logging.LogRecord(ACCESS.name, logging.INFO, "", 0, "request", None, None)
                record.access = {
                    "method": method if len(method) <= 16 else method[:16],
                    "route": template,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "key_kind": scope.get(KEY_KIND, "none"),
                }
                ACCESS.handle(record)
            request_id.reset(token)
