"""Customer tokens (api.customer_token): every malformed token is an AuthError that says what
is wrong, never another exception; a token names the secret that signed it (``kid``) and
verifies while that secret is accepted, through a rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from nextbest.api.customer_token import (
    TokenKeys,
    mint_customer_token,
    token_key_id,
    verify_customer_token,
)
from nextbest.errors import AuthError

SECRET = "s3cret"
NOW = 1_790_000_000.0
SIG = "A" * 43


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("u-att.1796533617.\u00c3\u00a9", "43 base64url"),  # two non-ASCII characters
        ("u-att.1796533617.\udcff", "43 base64url"),  # a lone surrogate
        (f"u-\u00e9t\udcff.1796533617.{SIG}", "not valid text"),
        ("garbage", "expected <userId>.<expires>.<kid>.<signature>"),
        (f"u.1796533617.k0123abcd.{SIG}=", "43 base64url"),
        (f"k0123abcd.{SIG}", "expected"),
        (f".1796533617.k0123abcd.{SIG}", "expected"),
        (f"u.soon.k0123abcd.{SIG}", "expiry"),
        (f"u.{SIG}", "expected"),
        (f".1796533617.{SIG}", "expected"),
        (f"u.soon.{SIG}", "expiry"),
        (f"u.-5.{SIG}", "expiry"),
        (f"u.\u00b2\u00b3.{SIG}", "expiry"),  # digits to str.isdigit, not to int()
        (f"u.\uff11\uff12.{SIG}", "expiry"),  # fullwidth digits
        (f"u.1796533617179653361.{SIG}", "expiry"),  # past any real date
        ("u.1796533617.!!notbase64", "43 base64url"),
        (f"u.1796533617.{SIG}=", "43 base64url"),
        (f"u\x00.1796533617.{SIG}", "control character"),
        ("u" * 5_000 + f".1796533617.{SIG}", "longer than"),
        ("", "expected"),
    ],
)
def test_malformed_tokens_are_auth_errors_that_say_why(token, why):
    with pytest.raises(AuthError, match="malformed customer token") as exc:
        verify_customer_token(token, SECRET, NOW)
    assert why in exc.value.message
    assert type(exc.value) is AuthError  # 401, not 403


def test_a_well_formed_token_with_a_wrong_signature_is_refused():
    with pytest.raises(AuthError, match="signature does not match"):
        verify_customer_token(f"u.1796533617.{SIG}", SECRET, NOW)


@pytest.mark.parametrize("user", ["u-1", "a.b.c", "first.last@bank.example", "m\u00fcller-\u6771"])
def test_tokens_round_trip_for_any_user_id(user):
    token = mint_customer_token(SECRET, user, NOW + 60)
    assert verify_customer_token(token, SECRET, NOW) == user
    with pytest.raises(AuthError, match="expired"):
        verify_customer_token(token, SECRET, NOW + 61)


def test_no_secret_accepts_no_token():
    token = mint_customer_token(SECRET, "u", NOW + 60)
    with pytest.raises(AuthError, match="no token secret"):
        verify_customer_token(token, "", NOW)


# ---------------------------------------------------------------- rotation
OLD, NEW = "old-secret-0123456789", "new-secret-9876543210"


def test_a_token_names_the_secret_that_signed_it():
    token = mint_customer_token(NEW, "u-1", NOW + 60)
    user, expires, kid, _signature = token.rsplit(".", 3)
    assert (user, expires, kid) == ("u-1", str(int(NOW + 60)), token_key_id(NEW))
    assert kid != token_key_id(OLD)
    assert NEW not in token


def test_a_token_verifies_while_its_secret_is_accepted():
    by_old = mint_customer_token(OLD, "u-1", NOW + 60)
    by_new = mint_customer_token(NEW, "u-1", NOW + 60)
    rotating = TokenKeys(NEW, [OLD])
    assert verify_customer_token(by_old, rotating, NOW) == "u-1"
    assert verify_customer_token(by_new, rotating, NOW) == "u-1"
    rotated = TokenKeys(NEW)
    assert verify_customer_token(by_new, rotated, NOW) == "u-1"
    with pytest.raises(AuthError, match=f"no longer accepted \\(kid {token_key_id(OLD)}\\)"):
        verify_customer_token(by_old, rotated, NOW)


def test_a_token_cannot_claim_another_accepted_secrets_kid():
    by_old = mint_customer_token(OLD, "u-1", NOW + 60)
    forged = by_old.replace(token_key_id(OLD), token_key_id(NEW))
    with pytest.raises(AuthError, match="signature does not match"):
        verify_customer_token(forged, TokenKeys(NEW, [OLD]), NOW)


def _legacy(secret: str, user: str, expires: int) -> str:
    payload = f"{user}.{expires}"
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_a_token_minted_before_kids_verifies_against_any_accepted_secret():
    legacy = _legacy(OLD, "first.last", int(NOW + 60))
    assert verify_customer_token(legacy, TokenKeys(NEW, [OLD]), NOW) == "first.last"
    assert verify_customer_token(legacy, OLD, NOW) == "first.last"
    with pytest.raises(AuthError, match="signature does not match"):
        verify_customer_token(legacy, TokenKeys(NEW), NOW)
    # a kid-less token is never a kid token's payload, nor the reverse
    by_old = mint_customer_token(OLD, "u", NOW + 60)
    user, expires, _kid, signature = by_old.rsplit(".", 3)
    with pytest.raises(AuthError):
        verify_customer_token(f"{user}.{expires}.{signature}", OLD, NOW)


def test_old_secrets_alone_still_verify():
    token = mint_customer_token(OLD, "u", NOW + 60)
    assert verify_customer_token(token, TokenKeys("", [OLD]), NOW) == "u"
    with pytest.raises(AuthError, match="no token secret"):
        verify_customer_token(token, TokenKeys(""), NOW)
