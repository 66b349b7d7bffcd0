"""Who is calling: the key in the Authorization header (or a body ``writeKey``) and a
customer token, resolved to a ``guard.Sender``. An advisor's key is a signed advisor token
(``api.advisor_token``) as the Bearer key: it binds the sender to that advisor. What each
kind of key may do (its scopes, what it may send and ask for) is the core's rule, in
``nextbest.guard.senders``.

Credentials are checked before anything else is read: a key in the Authorization header (and
an ``X-Customer-Token``) before the body is read at all; a key in the body (analytics.js
sends ``writeKey`` in a ``text/plain`` body, and a page may add ``customerToken``) from a body
read within the small browser limit, of which only those two fields are decoded
(``authenticate_body``) before it is inflated further or parsed.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import time
from collections.abc import MutableMapping
from typing import Any, NamedTuple

import msgspec

from nextbest.api.advisor_token import is_advisor_token, verify_advisor_token
from nextbest.api.customer_token import token_keys, verify_customer_token
from nextbest.api.observe import KEY_KIND
from nextbest.api.rate_limit import RateLimits
from nextbest.errors import AuthError
from nextbest.guard.origin import key_id
from nextbest.guard.senders import KeyKind, Scope, Sender
from nextbest.settings import Settings

__all__ = [
    "BodyCredentials",
    "Caller",
    "HeaderKeys",
    "admit",
    "authenticate",
    "authenticate_body",
    "token_from_header",
]


class Caller(NamedTuple):
    """An authenticated caller: the key it holds (its rate-limit bucket) and what it may do."""

    key: str
    sender: Sender


class BodyCredentials(msgspec.Struct):
    """What a browser body may carry besides its messages: analytics.js's ``writeKey`` and
    the customer token a page adds for a logged-in customer. Nothing else is decoded."""

    writeKey: Any = None
    customerToken: Any = None


_BODY_CREDENTIALS = msgspec.json.Decoder(BodyCredentials)
#: looked up once: in Python 3.11 each ``KeyKind.X`` read calls the enum metaclass's hook
_BROWSER = KeyKind.BROWSER


def _key_from_header(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuthError("malformed Basic credentials") from exc
        return decoded.partition(":")[0]
    if scheme == "bearer":
        return value.strip()
    raise AuthError("use HTTP Basic (write key as user name) or a Bearer key")


def _kind_of(key: str, settings: Settings) -> KeyKind | None:
    found = None
    given = key.encode()
    for kind, keys in (
        (KeyKind.ADMIN, settings.admin_keys),
        (KeyKind.SERVER, settings.server_keys),
        (KeyKind.WRITE, settings.write_keys),
        (KeyKind.BROWSER, settings.browser_keys),
        (KeyKind.METRICS, settings.metrics_keys),
    ):
        for candidate in keys:
            if hmac.compare_digest(candidate.encode(), given) and found is None:
                found = kind
    return found


def token_from_header(value: str | None) -> str | None:
    """``X-Customer-Token`` as the client wrote it. Header bytes reach the app as Latin-1; a
    userId in UTF-8 is recovered, bytes that are not UTF-8 are a malformed token (401)."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError as exc:
        raise AuthError("malformed customer token: its bytes are not UTF-8 text") from exc


def _caller(key: str | None, customer_token: str | None, settings: Settings, now: float) -> Caller:
    if not key:
        raise AuthError(
            "missing credentials: send the key as the Basic user name "
            "(or a browser key as writeKey in a JSON body)"
        )
    kind = _kind_of(key, settings)
    if kind is None and is_advisor_token(key):
        if customer_token:
            raise AuthError("an advisor key takes no customer token")
        advisor = verify_advisor_token(key, settings.advisor_token_secret, now)
        # one rate-limit bucket and one fingerprint per advisor, whichever token they hold
        who = f"advisor:{advisor}"
        return Caller(
            who, Sender(KeyKind.ADVISOR, key_id=key_id("advisor", who), bound_advisor=advisor)
        )
    if kind is None:
        raise AuthError("unknown key")
    bound = None
    if customer_token:  # an empty header or field: no token
        keys = token_keys(settings.token_secret, settings.token_secrets_old)
        bound = verify_customer_token(customer_token, keys, now)
    return Caller(key, Sender(kind, bound, key_id(kind.value, key)))


def authenticate(
    authorization: str | None,
    customer_token: str | None,
    settings: Settings,
    now: float,
) -> Caller:
    """The caller of a request by its Authorization header and customer token (from
    ``token_from_header``): AuthError when either is missing, unknown or malformed."""
    return _caller(_key_from_header(authorization), customer_token, settings, now)


def authenticate_body(
    body: bytes, header_token: str | None, settings: Settings, now: float
) -> Caller:
    """The caller of a request without an Authorization header, by the ``writeKey`` and
    ``customerToken`` of its (already size-bounded) body: only those two fields are decoded.
    The key must be a browser key: a body is readable by whoever sees the page."""
    credentials = BodyCredentials()
    with contextlib.suppress(msgspec.DecodeError, RecursionError):
        credentials = _BODY_CREDENTIALS.decode(body)
    key, token = credentials.writeKey, credentials.customerToken
    if key is not None and not isinstance(key, str):
        raise AuthError("writeKey must be a string: the browser key")
    if token is not None and not isinstance(token, str):
        raise AuthError("malformed customer token: customerToken must be a string")
    if token and header_token:
        raise AuthError(
            "two customer tokens: send it once, in X-Customer-Token or as customerToken"
        )
    caller = _caller(key, header_token or token, settings, now)
    if caller.sender.kind is not KeyKind.BROWSER:
        raise AuthError(
            "a key in the body must be a browser key; send other keys in the Authorization header"
        )
    return caller


class HeaderKeys:
    """``authenticate`` for one server, remembering the caller of each Authorization header
    that named a configured key, without a customer token: the next request with that
    header skips the base64 decoding and the scan of every configured key (a few µs). An
    advisor token is checked every time (it expires).

    Only headers of configured keys are kept (an unknown key is scanned every time, in
    constant time as before), at most ``cap`` of them, all forgotten at once when full; keys
    are settings, fixed for the server's life. Looking a header up in a dict reveals nothing
    of a key: the time depends on the header's length and on a hash seeded per process."""

    __slots__ = ("_known", "cap", "settings")

    def __init__(self, settings: Settings, cap: int = 1_024) -> None:
        self.settings = settings
        self.cap = cap
        self._known: dict[str, Caller] = {}

    def caller(self, authorization: str | None, customer_token: str | None, now: float) -> Caller:
        """As ``authenticate``."""
        if customer_token or authorization is None:
            return authenticate(authorization, customer_token, self.settings, now)
        known = self._known.get(authorization)
        if known is None:
            known = authenticate(authorization, None, self.settings, now)
            if known.sender.kind is KeyKind.ADVISOR:
                return known
            if len(self._known) >= self.cap:
                self._known.clear()
            self._known[authorization] = known
        return known


def admit(
    asgi_scope: MutableMapping[str, Any], caller: Caller, needs: Scope, limits: RateLimits
) -> Sender:
    """The sender of an authenticated request, once its key reaches the route's scope
    ``needs`` (Forbidden) and neither the key nor a customer token's user is over its rate
    (RateLimited). The key's kind is noted in the ASGI scope for the access line."""
    sender = caller.sender
    asgi_scope[KEY_KIND] = str(sender.kind)  # a StrEnum's text: ``.value`` is a slow property
    sender.require(needs)
    now = time.monotonic()
    limits.check_key(caller.key, now)
    bound = sender.bound_user
    if bound is not None and sender.kind is _BROWSER:
        limits.check_user(bound, now)
    return sender
