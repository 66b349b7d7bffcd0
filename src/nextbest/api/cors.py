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

from collections.abc import Mapping

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nextbest.api.errors import error_response
from nextbest.errors import Forbidden
from nextbest.settings import Settings

__all__ = ["ALLOWED_HEADERS", "CORS"]

#: the request headers a page may send
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Customer-Token"
#: the response headers a page may read besides the simple ones: how long to wait on a 429
_EXPOSED = b"Retry-After, X-RateLimit-Reset"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class CORS:
    """ASGI middleware: CORS for ``routes`` (path -> its methods) as ``settings`` says."""

    def __init__(
        self, app: ASGIApp, settings: Settings, routes: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.app = app
        self.origins = settings.cors_origins
        self.any_origin = settings.cors_any_origin
        self.credentials = settings.cors_credentials
        self.max_age = str(settings.cors_max_age).encode()
        self.routes = {path: ", ".join(methods).encode() for path, methods in routes.items()}

    def _allow(self, origin: str) -> list[tuple[bytes, bytes]]:
        if self.any_origin and not self.credentials:
            return [(b"access-control-allow-origin", b"*")]
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if self.credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.origins:
            await self.app(scope, receive, send)
            return
        methods = self.routes.get(scope["path"])
        origin = _header(scope, b"origin")
        if methods is None or origin is None:
            await self.app(scope, receive, send)
            return
        if not self.any_origin and origin.lower() not in self.origins:
            refused = Forbidden(
                f"origin {origin!r} may not call this server: NEXTBEST_CORS_ORIGINS lists "
                "the origins whose pages may"
            )
            await error_response(refused)(scope, receive, send)
            return
        allow = self._allow(origin)
        preflight = scope["method"] == "OPTIONS"
        if preflight and _header(scope, b"access-control-request-method") is not None:
            answer = Response(status_code=204)
            answer.raw_headers.extend(
                [
                    *allow,
                    (b"access-control-allow-methods", methods),
                    (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
                    (b"access-control-max-age", self.max_age),
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
