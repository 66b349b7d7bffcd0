"""Advisor tokens bind an advisor's desktop to their id; the guard lets an advisor key act
only as that advisor, and a customer's key only for its own session's callbacks."""

from __future__ import annotations

import pytest

from nextbest.api.advisor_token import (
    ADVISOR_TOKEN_PREFIX,
    is_advisor_token,
    mint_advisor_token,
    verify_advisor_token,
)
from nextbest.api.auth import authenticate
from nextbest.api.customer_token import mint_customer_token
from nextbest.errors import AuthError, Forbidden
from nextbest.guard.senders import KeyKind, Scope, Sender, check_advisor
from nextbest.settings import Settings

SECRET = "contact-centre-secret"
NOW = 1_790_157_600.0


def test_a_token_binds_its_advisor_until_it_expires():
    token = mint_advisor_token(SECRET, "anna_holm", NOW + 60)
    assert is_advisor_token(token)
    assert token.startswith(ADVISOR_TOKEN_PREFIX)
    assert verify_advisor_token(token, SECRET, NOW) == "anna_holm"
    assert verify_advisor_token(token, SECRET, NOW + 60) == "anna_holm"
    with pytest.raises(AuthError, match="expired"):
        verify_advisor_token(token, SECRET, NOW + 61)
    with pytest.raises(AuthError, match="does not match"):
        verify_advisor_token(token, "another-secret", NOW)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("adv." + "x" * 400, "longer than"),
        ("adv.anna_holm.1790157660", "expected adv."),
        ("adv.anna holm.1790157660." + "A" * 43, "letters, digits"),
        ("adv.anna_holm.soon." + "A" * 43, "whole seconds"),
        ("adv.anna_holm.1790157660.short", "43 base64url"),
        ("adv..1790157660." + "A" * 43, "letters, digits"),
        ("nope.anna_holm.1790157660." + "A" * 43, "expected adv."),
    ],
)
def test_a_malformed_token_says_what_is_wrong(token: str, why: str):
    with pytest.raises(AuthError, match=why):
        verify_advisor_token(token, SECRET, NOW)


def test_no_secret_no_advisor_tokens():
    token = mint_advisor_token(SECRET, "anna_holm", NOW + 60)
    with pytest.raises(AuthError, match="no advisor token secret"):
        verify_advisor_token(token, "", NOW)
    with pytest.raises(AuthError, match="no advisor token secret"):
        mint_advisor_token("", "anna_holm", NOW)


def test_a_customer_token_under_the_same_secret_is_no_advisor_token():
    customer = mint_customer_token(SECRET, "anna_holm", NOW + 60)
    with pytest.raises(AuthError):
        verify_advisor_token("adv." + customer, SECRET, NOW)


def test_the_bearer_key_becomes_an_advisor_sender():
    settings = Settings(server_keys=frozenset({"srv"}), advisor_token_secret=SECRET)
    token = mint_advisor_token(SECRET, "anna_holm", NOW + 60)
    caller = authenticate(f"Bearer {token}", None, settings, NOW)
    assert caller.sender.kind is KeyKind.ADVISOR
    assert caller.sender.bound_advisor == "anna_holm"
    assert caller.key == "advisor:anna_holm"  # one rate-limit bucket per advisor
    with pytest.raises(AuthError, match="no customer token"):
        authenticate(f"Bearer {token}", "u1.1.x", settings, NOW)


def test_what_each_key_may_do_with_callbacks_and_advisors():
    anna = Sender(KeyKind.ADVISOR, bound_advisor="anna_holm")
    assert anna.scopes == {Scope.PUBLIC, Scope.ADVISORS_ACT, Scope.ADVISORS_READ_CUSTOMER}
    assert anna.may_act_as("anna_holm")
    assert not anna.may_act_as("mikkel_berg")
    with pytest.raises(Forbidden, match="only as its own advisor"):
        check_advisor(anna, "mikkel_berg")
    assert Sender(KeyKind.SERVER).may_act_as("mikkel_berg")
    assert not Sender(KeyKind.BROWSER).may_act_as("mikkel_berg")
    for kind in (KeyKind.WRITE, KeyKind.BROWSER):
        assert Scope.CALLBACKS in Sender(kind).scopes
        assert Scope.ADVISORS_ACT not in Sender(kind).scopes
    assert Scope.ADVISORS_READ in Sender(KeyKind.SERVER).scopes
    assert Scope.ADVISORS_READ not in anna.scopes
    # a customer's own: the token's userId, or the anonymousId it names
    bound = Sender(KeyKind.BROWSER, bound_user="u1")
    assert bound.owns_customer("u1", None)
    assert not bound.owns_customer("u2", None)
    assert bound.owns_customer("anon:dev-1", "dev-1")
    assert not bound.owns_customer("anon:dev-1", "dev-2")
    assert not Sender(KeyKind.BROWSER).owns_customer("u1", None)
    assert not anna.owns_customer("u1", None)
    assert Sender(KeyKind.ADMIN).owns_customer("u1", None)
