"""What a public key may not do: steer a logged-in customer, assert bank facts, or see a
stitched customer's profile through an anonymousId."""

from __future__ import annotations

import pytest

from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, ok, send
from tests.support import BROWSER_KEY, SERVER_KEY


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (
            lambda: msg(
                "track", anon="d1", event="Product Opened", properties={"product": "credit_card"}
            ),
            "$.batch[0].event",
        ),
        (
            lambda: msg("track", anon="d1", event="Balance Updated", properties={"balance": 1e6}),
            "$.batch[0].event",
        ),
        (
            lambda: msg("identify", anon="d1", traits={"products": ["mortgage"]}),
            "$.batch[0].traits",
        ),
    ],
)
def test_browser_key_may_not_assert_bank_facts(live_server, http, message, path):
    resp = send(http, body_of(message()), key=BROWSER_KEY)
    assert_error(resp, 403, "forbidden")
    assert path in resp.json()["message"]
    assert live_server.engine.event_log.count() == 0


def test_browser_key_may_set_consent(live_server, http):
    consent = msg(
        "track", anon="d1", event="Consent Updated", properties={"purposes": {"marketing": False}}
    )
    assert send(http, body_of(consent), key=BROWSER_KEY).json() == ok(1)


def test_anonymous_id_of_a_stitched_customer_reveals_nothing_to_a_public_key(live_server, http):
    user = fresh_user("private")
    history = [msg("identify", user=user, anon="dev-x", traits={"age": 40})]
    history += [
        msg("page", user=user, properties={"url": "https://b.example/mortgages/a"})
        for _ in range(6)
    ]
    assert send(http, body_of(*history), key=SERVER_KEY).status_code == 200
    decide = {"anonymousId": "dev-x", "placement": "home_feed", "explain": True}
    public = http.post("/v1/decide", json=decide, auth=(BROWSER_KEY, "")).json()
    assert public["customer_id"] == "anon:dev-x"
    # nothing personal: only the house content that fills an empty placement
    assert [i["offer_id"] for i in public["items"]] == ["security_tips"]
    assert public["segments"] == []
    server = http.post("/v1/decide", json=decide, auth=(SERVER_KEY, "")).json()
    assert server["customer_id"] == user
    assert "mortgage_intent" in server["segments"]


def test_a_shared_device_does_not_merge_two_customers(live_server, http):
    first, second = fresh_user("first"), fresh_user("second")
    batch1 = [msg("identify", user=first, anon="family-pc", traits={"age": 50, "name": "A"})]
    batch1 += [
        msg(
            "track",
            user=first,
            anon="family-pc",
            event="Overdraft Started",
            properties={"balance": -10.0},
        )
    ]
    batch1 += [msg("page", anon="family-pc", properties={"url": "https://b.example/cards"})]
    assert send(http, body_of(*batch1), key=SERVER_KEY).status_code == 200
    login = msg("identify", user=second, anon="family-pc", traits={"age": 30})
    assert send(http, body_of(login), key=SERVER_KEY).status_code == 200
    profile = live_server.engine.profile(second)
    assert profile is not None
    assert profile.traits == {"age": 30}  # not the first customer's name
    assert not profile.overdrawn  # nor the first customer's account
    assert live_server.engine.profile(first).overdrawn
