"""Signed customer tokens: bind a browser session to one userId.

``<userId>.<expires>.<signature>`` where the signature is HMAC-SHA256 over
``userId.expires`` (UTF-8) with the bank's token secret, base64url without padding (43
characters). The bank's login backend mints them (``nextbest token USER_ID``); the browser
sends ``X-Customer-Token`` (or ``customerToken`` in a body that carries its ``writeKey``).

Anything else is refused with an AuthError that says what is wrong, before any signature is
computed: a token of more than ``MAX_TOKEN_LENGTH`` characters, fewer than three parts, an
expiry that is not whole seconds in ASCII digits, a signature that is not 43 base64url
characters, a userId with control characters or one that is not text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from nextbest.errors import AuthError

__all__ = ["MAX_TOKEN_LENGTH", "mint_customer_token", "verify_customer_token"]

#: a userId is at most 256 characters (``events.parse.Limits.max_id_length``), UTF-8 at
#: most 4 bytes each; the rest is 1 + 12 + 1 + 43
MAX_TOKEN_LENGTH = 1_200

_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")
_EXPIRY = re.compile(r"[0-9]{1,12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FORMAT = "expected <userId>.<expires>.<signature>, as `nextbest token` mints it"


def _sign(secret: str, payload: bytes) -> bytes:
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=")


def mint_customer_token(secret: str, user_id: str, expires_at: float) -> str:
    if not secret:
        raise AuthError("no token secret configured")
    payload = f"{user_id}.{int(expires_at)}"
    return f"{payload}.{_sign(secret, payload.encode()).decode()}"


def _malformed(why: str) -> AuthError:
    return AuthError(f"malformed customer token: {why}")


def verify_customer_token(token: str, secret: str, now: float) -> str:
    """The userId the token binds; AuthError when malformed, forged or expired."""
    if not secret:
        raise AuthError("customer tokens are not accepted: no token secret configured")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    payload, dot, signature = token.rpartition(".")
    user_id, dot2, expires = payload.rpartition(".")
    if not dot or not dot2 or not user_id:
        raise _malformed(_FORMAT)
    if not _EXPIRY.fullmatch(expires):
        raise _malformed("the expiry must be whole seconds since 1970 (digits 0-9)")
    if not _SIGNATURE.fullmatch(signature):
        raise _malformed("the signature must be 43 base64url characters (A-Z a-z 0-9 - _)")
    if _CONTROL.search(user_id):
        raise _malformed("the userId holds a control character")
    try:
        signed = payload.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate: not text
        raise _malformed("the userId is not valid text") from exc
    if not hmac.compare_digest(_sign(secret, signed), signature.encode()):
        raise AuthError("customer token signature does not match")
    if int(expires) < now:
        raise AuthError("customer token expired")
    return user_id
