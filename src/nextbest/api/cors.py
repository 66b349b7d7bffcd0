"""Calls from the bank's own pages in a browser (CORS), on the routes a browser key may use.

With ``NEXTBEST_CORS_ORIGINS`` unset nothing changes: no CORS headers, and a preflight
(``OPTIONS``) is a 405. With a list of origins, on the browser routes:

- a preflight from a listed origin is answered 204 with the route's methods, the headers a
  page may send (Authorization, Content-Type, Content-Encoding, X-Customer-Token) and how
  long the browser may cache the answer;
- a request from a listed origin is served with ``Access-Control-Allow-Origin`` (that origin,
  or ``*`` when any origin is allowed and no credentials are), ``Vary: Origin`` and
  ``Retry-After`` / ``X-RateLimit-Reset`` exposed to the page;
- a request or preflight from any other origin is refused (403, no CORS headers) before its
  body is read: a page elsewhere cannot use its visitors' browsers to send events or ask for
  decisions with the bank's public key.

Requests without ``Origin`` (servers, SDKs, curl) and routes no browser key may use (profiles,
admin) pass untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextbest.api.errors import error_response
from nextbest.errors import Forbidden
from nextbest.settings import Settings

__all__ = ["ALLOWED_HEADERS", "CORS", "CorsPolicy"]

#: the request headers a page may send
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Customer-Token"
#: the response headers a page may read besides the simple ones: how long to wait on a 429
_EXPOSED = b"Retry-After, X-RateLimit-Reset"


def _pattern(path: str) -> re.Pattern[str]:
    """A route path with parameters as a pattern: each ``{name}`` one path segment."""
    return re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)) + "$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class CorsPolicy:
    """What ``settings`` allows for ``routes`` (path -> its methods): the CORS middleware
    asks it, and so do the ingestion routes, which are served before the middleware."""

    def __init__(self, settings: Settings, routes: Mapping[str, tuple[str, ...]]) -> None:
        self.origins = settings.cors_origins
        self.any_origin = settings.cors_any_origin
        self.credentials = settings.cors_credentials
        self.max_age = str(settings.cors_max_age).encode()
        self.routes = {
            path: ", ".join(methods).encode() for path, methods in routes.items() if "{" not in path
        }
        #: routes with path parameters (``/v1/callbacks/{callback_id}``), as patterns
        self.templates = [
            (_pattern(path), ", ".join(methods).encode())
            for path, methods in routes.items()
            if "{" in path
        ]

    def allow(self, origin: str) -> list[tuple[bytes, bytes]]:
        """The headers that let a page of ``origin`` (an allowed one) read an answer."""
        if self.any_origin and not self.credentials:
            return [(b"access-control-allow-origin", b"*")]
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    def check(self, path: str, origin: str | None) -> bytes | None:
        """The methods of ``path`` when CORS applies to a request from ``origin`` on it (a
        browser route, an Origin header, origins configured); None when it does not.
        Forbidden when the origin is not one whose pages may call the server."""
        if not self.origins or origin is None:
            return None
        methods = self.routes.get(path)
        if methods is None:
            methods = next((m for rx, m in self.templates if rx.match(path)), None)
        if methods is None:
            return None
        if not self.any_origin and origin.lower() not in self.origins:
            raise Forbidden(
                f"origin {origin!r} may not call this server: NEXTBEST_CORS_ORIGINS lists "
                "the origins whose pages may"
            )
        return methods

    def answer_headers(self, path: str, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers of an answer (not a preflight's) to a request from ``origin``
        on ``path``: none when CORS does not apply; Forbidden as ``check``."""
        if self.check(path, origin) is None or origin is None:
            return []
        return [*self.allow(origin), (b"access-control-expose-headers", _EXPOSED)]


class CORS:
    """ASGI middleware: CORS as ``policy`` says (preflights answered here)."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.policy
        if scope["type"] != "http" or not policy.origins:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        try:
            methods = policy.check(scope["path"], origin)
        except Forbidden as refused:
            await error_response(refused)(scope, receive, send)
            return
        if methods is None or origin is None:
            await self.app(scope, receive, send)
            return
        allow = policy.allow(origin)
        preflight = scope["method"] == "OPTIONS"
        if preflight and _header(scope, b"access-control-request-method") is not None:
            answer = Response(status_code=204)
            answer.raw_headers.extend(
                [
                    *allow,
                    (b"access-control-allow-methods", methods),
                    (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
                    (b"access-control-max-age", policy.max_age),
                ]
            )
            await answer(scope, receive, send)
            return
        extra = [*allow, (b"access-control-expose-headers", _EXPOSED)]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)
