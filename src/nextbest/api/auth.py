"""Who is calling and what they may do. Every route declares one Scope.

Key kinds and their scopes:

    none     no key: public routes only (health, OpenAPI)
    write    a source write key (server-side SDKs): send events for any id; decide for an
             anonymousId, or a userId with a customer token
    browser  a public browser key: events and decisions only for the session it holds (an
             anonymousId, or the userId its customer token binds)
    server   the bank's backends: events, decisions for anyone, profiles and decisions read
    admin    everything, including admin routes
"""

from __future__ import annotations

import base64
import enum
import hmac

import msgspec

from nextbest.api.customer_token import verify_customer_token
from nextbest.errors import AuthError, Forbidden
from nextbest.guard.senders import KeyKind, Sender
from nextbest.settings import Settings

__all__ = ["KeyKind", "Principal", "Scope", "authenticate"]


class Scope(enum.StrEnum):
    PUBLIC = "public"
    EVENTS_WRITE = "events:write"
    DECIDE = "decide"
    PROFILES_READ = "profiles:read"
    ADMIN = "admin"


_SCOPES: dict[KeyKind, frozenset[Scope]] = {
    KeyKind.NONE: frozenset({Scope.PUBLIC}),
    KeyKind.WRITE: frozenset({Scope.PUBLIC, Scope.EVENTS_WRITE, Scope.DECIDE}),
    KeyKind.BROWSER: frozenset({Scope.PUBLIC, Scope.EVENTS_WRITE, Scope.DECIDE}),
    KeyKind.SERVER: frozenset(
        {Scope.PUBLIC, Scope.EVENTS_WRITE, Scope.DECIDE, Scope.PROFILES_READ}
    ),
    KeyKind.ADMIN: frozenset(Scope),
}


class Principal(msgspec.Struct, frozen=True):
    """An authenticated caller: the routes its key reaches; what it may send and ask for is
    the core's rule (``guard.senders``) over ``sender``."""

    kind: KeyKind
    #: the userId a valid customer token binds this session to, if any
    bound_user: str | None = None

    @property
    def scopes(self) -> frozenset[Scope]:
        return _SCOPES[self.kind]

    @property
    def sender(self) -> Sender:
        return Sender(self.kind, self.bound_user)

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"a {self.kind.value} key may not use a route that needs {scope}")


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
    for kind, keys in (
        (KeyKind.ADMIN, settings.admin_keys),
        (KeyKind.SERVER, settings.server_keys),
        (KeyKind.WRITE, settings.write_keys),
        (KeyKind.BROWSER, settings.browser_keys),
    ):
        for candidate in keys:
            if hmac.compare_digest(candidate.encode(), key.encode()) and found is None:
                found = kind
    return found


def authenticate(
    authorization: str | None,
    body_key: str | None,
    customer_token: str | None,
    settings: Settings,
    now: float,
) -> Principal:
    """Resolve the caller from the Authorization header (or a body ``writeKey``)."""
    key = _key_from_header(authorization) or body_key
    if not key:
        raise AuthError("missing credentials: send the key as the Basic user name")
    kind = _kind_of(key, settings)
    if kind is None:
        raise AuthError("unknown key")
    bound = None
    if customer_token:
        bound = verify_customer_token(customer_token, settings.token_secret, now)
    return Principal(kind, bound)
