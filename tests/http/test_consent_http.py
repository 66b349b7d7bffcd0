"""``PUT /v1/customers/{id}/consent`` on a real server: the customer with its own token, the
bank with a server key; never a public key for someone else; a wrong body is a 400 at its
field; the change is an audited ``Consent Updated`` event that a replay reproduces."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, ok, send, token
from tests.support import ADMIN_KEY, BROWSER_KEY, SERVER_KEY, WRITE_KEY


def put(
    http: httpx.Client, user: str, body: object, key: str = SERVER_KEY, **headers: str
) -> httpx.Response:
    return http.put(f"/v1/customers/{user}/consent", json=body, auth=(key, ""), headers=headers)


def test_the_customer_sets_its_own_consent_with_its_token(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user("own")
    assert send(http, body_of(msg("identify", user=user, traits={"age": 40}))).json() == ok(1)
    body = {
        "purposes": {"marketing": {"granted": True, "sources": {"transactional": False}}},
        "sources": {"third_party": False},
        "origin": "app-settings",
    }
    answer = put(http, user, body, BROWSER_KEY, **token(user))
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["ok"] is True
    assert got["accepted"] is True
    assert sorted(got["grants"]) == ["*/third_party", "marketing", "marketing/transactional"]
    assert got["grants"]["marketing/transactional"]["granted"] is False
    assert got["grants"]["marketing"]["origin"] == "app-settings"
    assert got["grants"]["marketing"]["basis"] == "consent"
    live_server.engine.flush()
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.consent["marketing"] is True
    assert profile.grants["marketing/transactional"].granted is False
    assert profile.grants["*/third_party"].origin == "app-settings"
    # the same message id again changes nothing
    again = put(
        http, user, {**body, "messageId": got["message_id"]}, BROWSER_KEY, **token(user)
    ).json()
    assert again["accepted"] is False


def test_a_public_key_may_not_change_another_customers_consent(
    live_server: LiveServer, http: httpx.Client
):
    me, other = fresh_user("me"), fresh_user("other")
    body = {"purposes": {"marketing": False}}
    for key in (BROWSER_KEY, WRITE_KEY):
        assert_error(put(http, other, body, key, **token(me)), 403, "forbidden")
        assert_error(put(http, other, body, key), 403, "forbidden")  # no token at all
    assert live_server.engine.profile(other) is None
    assert put(http, other, body, SERVER_KEY).status_code == 200
    assert put(http, other, body, ADMIN_KEY).status_code == 200


def test_a_wrong_body_is_a_400_at_its_field(live_server: LiveServer, http: httpx.Client):
    user = fresh_user("bad")
    cases = [
        ({"purposes": {"marketting": False}}, "$.purposes.marketting"),
        ({"purposes": {"marketing": "yes"}}, "$.purposes.marketing"),
        ({"purposes": {"security": False}}, "$.purposes.security"),
        (
            {"purposes": {"marketing": {"sources": {"web": False}}}},
            "$.purposes.marketing.sources.web",
        ),
        (
            {"purposes": {"marketing": {"granted": True, "basis": "whim"}}},
            "$.purposes.marketing.basis",
        ),
        ({"sources": {"transactional": 1}}, "$.sources.transactional"),
        ({"purposes": {}}, "$"),
        ({"purpose": {"marketing": False}}, "$"),  # msgspec names the field in the message
        ({"purposes": {"marketing": False}, "basis": "whim"}, "$.basis"),
    ]
    for body, path in cases:
        assert_error(put(http, user, body), 400, "validation_error", path)
    assert live_server.engine.profile(user) is None


def test_the_change_is_audited_and_replayed(live_server: LiveServer, http: httpx.Client):
    user = fresh_user("audited")
    assert send(http, body_of(msg("identify", user=user, traits={"age": 40}))).json() == ok(1)
    answer = put(http, user, {"sources": {"transactional": False}, "origin": "branch"})
    assert answer.status_code == 200, answer.text
    live_server.engine.flush()
    entries = http.get("/v1/audit", params={"subject": user}, auth=(ADMIN_KEY, "")).json()
    (change,) = [e for e in entries["entries"] if e["action"] == "consent.changed"]
    assert change["actor"]["kind"] == "server"
    assert change["details"]["after"] == {"*/transactional": False}
    assert change["details"]["grants"]["*/transactional"]["origin"] == "branch"
    assert change["details"]["event"] == "Consent Updated"
    report = live_server.engine.replay()
    assert report.identical, report.differing
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.grants["*/transactional"].granted is False
