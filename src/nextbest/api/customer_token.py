"""Signed customer tokens: bind a browser session to one userId.

``<userId>.<expires>.<kid>.<signature>`` where ``kid`` names the secret that signed it
(``k`` and 8 hex digits of SHA-256 over a label and the secret: it names the key without
revealing it) and the signature is HMAC-SHA256 over ``userId.expires.kid`` (UTF-8) with that
secret, base64url without padding (43 characters). The bank's login backend mints them
(``nextbest token USER_ID``); the browser sends ``X-Customer-Token`` (or ``customerToken``
in a body that carries its ``writeKey``).

**Rotation.** One secret signs (``NEXTBEST_TOKEN_SECRET``), others are still accepted
(``NEXTBEST_TOKEN_SECRETS_OLD``, comma-separated): a token verifies while the secret its
``kid`` names is listed, and is refused (401, naming the ``kid``) once it is removed
(docs/trust.md, "Rotating the token secret"). A token minted before kids existed
(``<userId>.<expires>.<signature>``) verifies against any listed secret.

Anything else is refused with an AuthError that says what is wrong, before any signature is
computed: a token of more than ``MAX_TOKEN_LENGTH`` characters, fewer than three parts, an
expiry that is not whole seconds in ASCII digits, a signature that is not 43 base64url
characters, a userId with control characters or one that is not text.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Sequence

from nextbest.errors import AuthError

__all__ = [
    "MAX_TOKEN_LENGTH",
    "TokenKeys",
    "mint_customer_token",
    "token_key_id",
    "token_keys",
    "verify_customer_token",
]

#: a userId is at most 256 characters (``events.parse.Limits.max_id_length``), UTF-8 at
#: most 4 bytes each; the rest is 1 + 12 + 1 + 9 + 1 + 43
MAX_TOKEN_LENGTH = 1_200

_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")
_EXPIRY = re.compile(r"[0-9]{1,12}")
#: never all digits: a kid is never taken for an expiry
_KID = re.compile(r"k[0-9a-f]{8}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FORMAT = "expected <userId>.<expires>.<kid>.<signature>, as `nextbest token` mints it"


@functools.lru_cache(maxsize=64)
def token_key_id(secret: str) -> str:
    """The ``kid`` of a token secret (module docstring)."""
    return "k" + hashlib.sha256(b"nextbest token key\x00" + secret.encode()).hexdigest()[:8]


class TokenKeys:
    """The secret that signs and every secret accepted, by ``kid``."""

    __slots__ = ("accepted", "signing")

    def __init__(self, signing: str, old: Sequence[str] = ()) -> None:
        self.signing = signing
        secrets = [s for s in (signing, *old) if s]
        self.accepted: dict[str, str] = {token_key_id(s): s for s in secrets}


@functools.lru_cache(maxsize=16)
def token_keys(signing: str, old: tuple[str, ...] = ()) -> TokenKeys:
    """``TokenKeys`` for these settings, built once."""
    return TokenKeys(signing, old)


def _sign(secret: str, payload: bytes) -> bytes:
    mac = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=")


def mint_customer_token(secret: str, user_id: str, expires_at: float) -> str:
    """A token for ``user_id`` until ``expires_at``, signed with ``secret`` (the signing
    one: ``NEXTBEST_TOKEN_SECRET``)."""
    if not secret:
        raise AuthError("no token secret configured")
    payload = f"{user_id}.{int(expires_at)}.{token_key_id(secret)}"
    return f"{payload}.{_sign(secret, payload.encode()).decode()}"


def _malformed(why: str) -> AuthError:
    return AuthError(f"malformed customer token: {why}")


def verify_customer_token(token: str, keys: TokenKeys | str, now: float) -> str:
    """The userId the token binds; AuthError when malformed, forged, signed by a secret no
    longer accepted, or expired. ``keys``: the accepted secrets (a bare secret: that one)."""
    if isinstance(keys, str):
        keys = token_keys(keys)
    if not keys.accepted:
        raise AuthError("customer tokens are not accepted: no token secret configured")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    payload, dot, signature = token.rpartition(".")
    head, dot2, last = payload.rpartition(".")
    kid: str | None = None
    if _KID.fullmatch(last):
        kid = last
        user_id, dot2, expires = head.rpartition(".")
    else:  # minted before kids: <userId>.<expires>.<signature>
        user_id, expires = head, last
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
    given = signature.encode()
    if kid is not None:
        secret = keys.accepted.get(kid)
        if secret is None:
            raise AuthError(
                f"customer token signed by a key that is no longer accepted (kid {kid}): "
                "log in again for a new token"
            )
        valid = hmac.compare_digest(_sign(secret, signed), given)
    else:
        valid = False
        for secret in keys.accepted.values():  # every one: no early exit to time
            valid = hmac.compare_digest(_sign(secret, signed), given) or valid
    if not valid:
        raise AuthError("customer token signature does not match")
    if int(expires) < now:
        raise AuthError("customer token expired")
    return user_id
