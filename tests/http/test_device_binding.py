"""Devices bound to their customer at login, on a real server: once a device's anonymousId
is stitched to a customer, a browser key that knows it (a stolen cookie value) can neither
add events to the customer's profile nor get decisions made from it; the customer, with
their token, still can; the bank's server key may still send for any device. And customer
tokens survive a rotation of the token secret while the old secret is listed, and no longer
once it is removed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

import httpx
import msgspec
import orjson

from nextbest.api.customer_token import mint_customer_token, token_key_id
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, ok, send
from tests.support import BROWSER_KEY, SERVER_KEY, TOKEN_SECRET, WRITE_KEY

MORTGAGE = "https://b.example/mortgages/a"


def token(user: str, secret: str = TOKEN_SECRET) -> str:
    return mint_customer_token(secret, user, time.time() + 600)


def as_browser(
    http: httpx.Client, *messages: dict[str, object], token: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Customer-Token"] = token
    return http.post(
        "/v1/batch", content=body_of(*messages), auth=(BROWSER_KEY, ""), headers=headers
    )


def logged_in_victim(http: httpx.Client) -> tuple[str, str]:
    """A customer who logged in on their device through the browser key and their token,
    then browsed mortgages on it: their userId and the device's anonymousId."""
    victim, cookie = fresh_user("victim"), f"cookie-{fresh_user('dev')}"
    login = msg("identify", user=victim, anon=cookie, traits={"age": 40})
    assert as_browser(http, login, token=token(victim)).json() == ok(1)
    pages = [msg("page", anon=cookie, properties={"url": MORTGAGE}) for _ in range(6)]
    assert as_browser(http, *pages, token=token(victim)).json() == ok(6)  # their own device
    return victim, cookie


def snapshot(server: LiveServer, user: str) -> bytes:
    profile = server.engine.profile(user)
    assert profile is not None
    return msgspec.msgpack.encode(profile)


def test_a_stolen_anonymous_id_adds_nothing_to_the_customers_profile(
    live_server: LiveServer, http: httpx.Client
):
    victim, cookie = logged_in_victim(http)
    before, logged = snapshot(live_server, victim), live_server.engine.event_log.count()
    page = msg("page", anon=cookie, properties={"url": "https://b.example/loans/car"})
    withdraw = msg(
        "track", anon=cookie, event="Consent Updated", properties={"purposes": {"marketing": False}}
    )
    err = assert_error(as_browser(http, page), 403, "forbidden")
    assert "$.batch[0].anonymousId" in err["message"]
    assert "token" in err["message"]
    assert_error(as_browser(http, withdraw), 403, "forbidden")
    # a batch that also holds the attacker's own device is refused whole
    own = msg("page", anon="attackers-own-device", properties={"url": MORTGAGE})
    err = assert_error(as_browser(http, own, page), 403, "forbidden")
    assert "$.batch[1].anonymousId" in err["message"]
    # a single message, analytics.js's short path with the key in the body, an attacker
    # with a token of their own: all refused
    single = http.post("/v1/track", json={**withdraw}, auth=(BROWSER_KEY, ""))
    assert "$.anonymousId" in assert_error(single, 403, "forbidden")["message"]
    in_body = http.post(
        "/v1/p",
        content=orjson.dumps({**page, "writeKey": BROWSER_KEY}),
        headers={"Content-Type": "text/plain"},
    )
    assert_error(in_body, 403, "forbidden")
    attacker = fresh_user("attacker")
    assert_error(as_browser(http, page, token=token(attacker)), 403, "forbidden")
    # an event for the victim's userId needs their token, as before
    assert_error(as_browser(http, msg("page", user=victim, properties={})), 403, "forbidden")

    assert live_server.engine.event_log.count() == logged  # nothing stored
    assert snapshot(live_server, victim) == before
    # the attacker's own, unlinked device sends freely on its own
    assert as_browser(http, own).json() == ok(1)
    # the victim with their token, and the bank's server key, still send for the device
    assert as_browser(http, page, token=token(victim)).json() == ok(1)
    relayed = msg("page", anon=cookie, properties={"url": "https://b.example/cards"})
    assert send(http, body_of(relayed), key=SERVER_KEY).json() == ok(1)
    profile = live_server.engine.profile(victim)
    assert profile is not None
    assert profile.interests["mortgage"].total == 6
    assert {"car_loan", "cards"} <= set(profile.interests)


def _decide(http: httpx.Client, key: str, headers: dict[str, str] | None = None, **body: object):
    answer = http.post(
        "/v1/decide",
        json={"placement": "home_feed", **body},
        auth=(key, ""),
        headers=headers or {},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_stolen_anonymous_id_gets_the_decisions_of_a_stranger(
    live_server: LiveServer, http: httpx.Client
):
    victim, cookie = logged_in_victim(http)
    stranger = _decide(http, BROWSER_KEY, anonymousId=f"never-seen-{cookie}")
    stolen = _decide(http, BROWSER_KEY, anonymousId=cookie)
    assert [i["offer_id"] for i in stolen["items"]] == [i["offer_id"] for i in stranger["items"]]
    logged = live_server.engine.decision(stolen["decision_id"])
    unknown = live_server.engine.decision(stranger["decision_id"])
    assert logged is not None
    assert unknown is not None
    assert (logged.customer_id, logged.segments) == (f"anon:{cookie}", [])

    def profile_features(features: dict[str, float]) -> set[str]:
        return {k for k in features if not k.startswith("how:")}  # the hour of the week

    assert profile_features(logged.features) == profile_features(unknown.features)
    assert _decide(http, WRITE_KEY, anonymousId=cookie)["customer_id"] == f"anon:{cookie}"
    # the victim's own decisions: with their token, from their profile
    mine = _decide(http, BROWSER_KEY, {"X-Customer-Token": token(victim)}, userId=victim)
    made = live_server.engine.decision(mine["decision_id"])
    assert made is not None
    assert made.customer_id == victim
    assert "mortgage_intent" in made.segments
    # and no way for the attacker to name the victim or read that decision
    attempt = http.post(
        "/v1/decide", json={"placement": "home_feed", "userId": victim}, auth=(BROWSER_KEY, "")
    )
    assert_error(attempt, 403, "forbidden")
    live_server.engine.flush()
    read = http.get(f"/v1/decisions/{mine['decision_id']}", auth=(BROWSER_KEY, ""))
    assert_error(read, 403, "forbidden")


# ---------------------------------------------------------------- rotation
OLD, NEW = "old-token-secret-0123", "new-token-secret-4567"


def _legacy(secret: str, user: str) -> str:
    """A token as minted before tokens named their key."""
    payload = f"{user}.{int(time.time() + 600)}"
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_a_token_of_the_old_secret_is_accepted_while_listed_and_refused_after(
    start_server: Callable[..., LiveServer],
):
    user = fresh_user("rotated")
    by_old, by_new, legacy = token(user, OLD), token(user, NEW), _legacy(OLD, user)
    event = msg("page", user=user, properties={"url": MORTGAGE})

    rotating = start_server(token_secret=NEW, token_secrets_old=(OLD,))
    with httpx.Client(base_url=rotating.url, timeout=10) as http:
        for t in (by_old, by_new, legacy):
            assert as_browser(http, {**event, "messageId": t[-12:]}, token=t).json() == ok(1)
            assert _decide(http, BROWSER_KEY, {"X-Customer-Token": t}, userId=user)["items"]

    rotated = start_server(token_secret=NEW)
    with httpx.Client(base_url=rotated.url, timeout=10) as http:
        assert as_browser(http, event, token=by_new).json() == ok(1)
        err = assert_error(as_browser(http, event, token=by_old), 401, "unauthorized")
        assert f"kid {token_key_id(OLD)}" in err["message"]
        assert "no longer accepted" in err["message"]
        assert_error(as_browser(http, event, token=legacy), 401, "unauthorized")
        refused = http.post(
            "/v1/decide",
            json={"placement": "home_feed", "userId": user},
            auth=(BROWSER_KEY, ""),
            headers={"X-Customer-Token": by_old},
        )
        assert_error(refused, 401, "unauthorized")
