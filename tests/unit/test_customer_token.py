"""Customer tokens (api.customer_token): every malformed token is an AuthError that says what
is wrong, never another exception."""

from __future__ import annotations

import pytest

from nextbest.api.customer_token import mint_customer_token, verify_customer_token
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
        ("garbage", "expected <userId>.<expires>.<signature>"),
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
