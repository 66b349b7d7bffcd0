"""Signed customer tokens: bind a browser session to one userId.

``<userId>.<expires>.<signature>`` where the signature is HMAC-SHA256 over
``userId.expires`` with the bank's token secret, base64url without padding. The bank's login
backend mints them (``nextbest token USER_ID``); the browser sends ``X-Customer-Token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from nextbest.errors import AuthError

__all__ = ["mint_customer_token", "verify_customer_token"]


def _sign(secret: str, payload: str) -> str:
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def mint_customer_token(secret: str, user_id: str, expires_at: float) -> str:
    if not secret:
        raise AuthError("no token secret configured")
    payload = f"{user_id}.{int(expires_at)}"
    return f"{payload}.{_sign(secret, payload)}"


def verify_customer_token(token: str, secret: str, now: float) -> str:
    """The userId the token binds; AuthError when forged, malformed or expired."""
    payload, _, signature = token.rpartition(".")
    user_id, _, expires = payload.rpartition(".")
    if not secret or not user_id or not expires.isdigit():
        raise AuthError("malformed customer token")
    if not hmac.compare_digest(_sign(secret, payload), signature):
        raise AuthError("customer token signature does not match")
    if int(expires) < now:
        raise AuthError("customer token expired")
    return user_id
