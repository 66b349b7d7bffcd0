"""Signed advisor tokens: an advisor key, bound to one advisor id.

A bank does not hand out one static key per advisor (hundreds of them, rotated by hand):
its contact-centre desktop signs advisors in through the bank's single sign-on, and the
desktop's backend mints each advisor a short-lived token with a secret it shares with
nextbest (``NEXTBEST_ADVISOR_TOKEN_SECRET``; ``nextbest advisor-token ADVISOR_ID`` mints one
by hand). The desktop sends it as the key: ``Authorization: Bearer <token>``.

``adv.<advisorId>.<expires>.<signature>``: the signature is HMAC-SHA256 over
``nextbest-advisor.<advisorId>.<expires>`` (UTF-8) with the advisor token secret, base64url
without padding (43 characters). The signed text is marked as an advisor's, so a customer
token could not pass for an advisor token even under one secret; keep the two secrets apart
all the same (the web login and the contact centre are different systems).

Anything else is refused with an AuthError that says what is wrong, before any signature is
computed: a token longer than ``MAX_TOKEN_LENGTH``, a wrong shape, an expiry that is not
whole seconds, a signature that is not 43 base64url characters, an advisor id that is not a
catalog id (letters, digits, ``_`` and ``-``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from nextbest.errors import AuthError

__all__ = [
    "ADVISOR_TOKEN_PREFIX",
    "MAX_TOKEN_LENGTH",
    "is_advisor_token",
    "mint_advisor_token",
    "verify_advisor_token",
]

#: how every advisor token begins (and no configured key should)
ADVISOR_TOKEN_PREFIX = "adv."
MAX_TOKEN_LENGTH = 300

_SIGNED_AS = "nextbest-advisor"
_ADVISOR_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")
_EXPIRY = re.compile(r"[0-9]{1,12}")
_FORMAT = "expected adv.<advisorId>.<expires>.<signature>, as `nextbest advisor-token` mints it"


def _sign(secret: str, advisor_id: str, expires: str) -> bytes:
    payload = f"{_SIGNED_AS}.{advisor_id}.{expires}".encode()
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=")


def is_advisor_token(key: str) -> bool:
    """``key`` has the shape of an advisor token (it may still be forged or expired)."""
    return key.startswith(ADVISOR_TOKEN_PREFIX)


def mint_advisor_token(secret: str, advisor_id: str, expires_at: float) -> str:
    if not secret:
        raise AuthError("no advisor token secret configured (NEXTBEST_ADVISOR_TOKEN_SECRET)")
    if not _ADVISOR_ID.fullmatch(advisor_id):
        raise AuthError(f"{advisor_id!r} is not an advisor id (letters, digits, _ and -)")
    expires = str(int(expires_at))
    signature = _sign(secret, advisor_id, expires).decode()
    return f"{ADVISOR_TOKEN_PREFIX}{advisor_id}.{expires}.{signature}"


def _malformed(why: str) -> AuthError:
    return AuthError(f"malformed advisor token: {why}")


def verify_advisor_token(token: str, secret: str, now: float) -> str:
    """The advisor id the token binds; AuthError when malformed, forged or expired."""
    if not secret:
        raise AuthError("advisor tokens are not accepted: no advisor token secret configured")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    if not token.startswith(ADVISOR_TOKEN_PREFIX):
        raise _malformed(_FORMAT)
    parts = token[len(ADVISOR_TOKEN_PREFIX) :].split(".")
    if len(parts) != 3:
        raise _malformed(_FORMAT)
    advisor_id, expires, signature = parts
    if not _ADVISOR_ID.fullmatch(advisor_id):
        raise _malformed("the advisor id is letters, digits, _ and - (1 to 128)")
    if not _EXPIRY.fullmatch(expires):
        raise _malformed("the expiry must be whole seconds since 1970 (digits 0-9)")
    if not _SIGNATURE.fullmatch(signature):
        raise _malformed("the signature must be 43 base64url characters (A-Z a-z 0-9 - _)")
    if not hmac.compare_digest(_sign(secret, advisor_id, expires), signature.encode()):
        raise AuthError("advisor token signature does not match")
    if int(expires) < now:
        raise AuthError("advisor token expired")
    return advisor_id
