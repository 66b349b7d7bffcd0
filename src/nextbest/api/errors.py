"""The one table from the error tree to HTTP status codes. Error bodies are JSON with string
``code`` and ``message`` (RudderStack's client reads both) and the field ``path``."""

from __future__ import annotations

import math

import orjson
from starlette.responses import Response

from nextbest.errors import (
    AuthError,
    CatalogError,
    Conflict,
    Forbidden,
    InputError,
    LimitExceeded,
    NextbestError,
    NotFound,
    NotServed,
    PayloadTooLarge,
    RateLimited,
    StoreError,
    StoreUnavailable,
    UnsupportedMediaType,
    ValidationError,
)

__all__ = ["STATUS", "error_parts", "error_response", "status_of"]

#: most specific first
STATUS: tuple[tuple[type[NextbestError], int], ...] = (
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (LimitExceeded, 409),
    (Conflict, 409),
    (NotFound, 404),
    (ValidationError, 400),
    (InputError, 400),
    (Forbidden, 403),
    (AuthError, 401),
    (RateLimited, 429),
    (StoreUnavailable, 503),
    (StoreError, 503),
    (CatalogError, 422),
    (NotServed, 501),
    (NextbestError, 500),
)


def status_of(exc: NextbestError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_parts(exc: NextbestError) -> tuple[int, bytes, dict[str, str] | None]:
    """The status, JSON body and extra headers of the answer to ``exc``."""
    status = status_of(exc)
    body: dict[str, object] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, ValidationError | LimitExceeded):
        body["path"] = exc.path
    if isinstance(exc, CatalogError):  # every problem, as ``nextbest check`` prints it
        body["problems"] = [str(p) for p in exc.problems]
    headers = {"WWW-Authenticate": 'Basic realm="nextbest"'} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": "1"}
    if isinstance(exc, RateLimited):  # whole seconds, at least 1 (RFC 9110)
        wait = str(max(1, math.ceil(exc.retry_after)))
        # analytics.js's batching delivery reads X-RateLimit-Reset (seconds) on a 429
        headers = {"Retry-After": wait, "X-RateLimit-Reset": wait}
    return status, orjson.dumps(body), headers


def error_response(exc: NextbestError) -> Response:
    status, body, headers = error_parts(exc)
    return Response(body, status, headers=headers, media_type="application/json")
