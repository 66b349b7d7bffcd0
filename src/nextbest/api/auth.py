"""Who is calling: the key in the Authorization header (or a body ``writeKey``) and a
customer token, resolved to a ``guard.Sender``. What each kind of key may do (its scopes,
what it may send and ask for) is the core's rule, in ``nextbest.guard.senders``.
"""

from __future__ import annotations

import base64
import hmac

from nextbest.api.customer_token import verify_customer_token
from nextbest.errors import AuthError
from nextbest.guard.senders import KeyKind, Sender
from nextbest.settings import Settings

__all__ = ["authenticate"]


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
) -> Sender:
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
    return Sender(kind, bound)
