"""What a public key may not do: steer a logged-in customer, assert bank facts, or see a
stitched customer's profile through an anonymousId; malformed tokens are 401s, and
credentials are checked before a body is inflated or parsed."""

from __future__ import annotations

import gzip

import httpx
import orjson
import pytest

from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, ok, send
from tests.support import BROWSER_KEY, SERVER_KEY, WRITE_KEY


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
    decide = {"anonymousId": "dev-x", "placement": "home_feed"}
    public = http.post("/v1/decide", json=decide, auth=(BROWSER_KEY, "")).json()
    # nothing personal: only the house content that fills an empty placement
    assert [i["offer_id"] for i in public["items"]] == ["security_tips"]
    logged = live_server.engine.decision(public["decision_id"])
    assert logged is not None
    assert (logged.customer_id, logged.segments) == ("anon:dev-x", [])
    server = http.post("/v1/decide", json={**decide, "explain": True}, auth=(SERVER_KEY, ""))
    server = server.json()
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


# ---------------------------------------------------------------------- malformed tokens

_SIG = b"A" * 43


@pytest.mark.parametrize(
    "raw",
    [
        b"u-att.1796533617.\xc3\xa9",  # the review's: two non-ASCII bytes (UTF-8)
        b"u-att.1796533617.\xff\xfe",  # bytes that are not UTF-8 at all
        b"u-att.\xc2\xb2\xc2\xb3." + _SIG,  # superscript digits: isdigit() but not int()
        b"u-att",  # one part
        b"u-att." + _SIG,  # two parts
        b"u-att.tomorrow." + _SIG,  # an expiry that is no number
        b"u-att.1796533617.not*base64",  # a signature that is not base64url
        b"u-att.1796533617." + _SIG + b"==",  # padded
        b"x" * 8_000 + b".1796533617." + _SIG,  # long
    ],
    ids=[
        "non-ascii signature",
        "not utf-8",
        "unicode digits",
        "one part",
        "two parts",
        "word expiry",
        "bad base64",
        "padded signature",
        "too long",
    ],
)
def test_a_malformed_customer_token_is_a_401_that_says_so(live_server, http, raw):
    user = fresh_user()
    body = body_of(msg("track", user=user, event="Clicked"))
    for resp in (
        send(http, body, key=BROWSER_KEY, headers={"X-Customer-Token": raw}),
        http.post(
            "/v1/decide",
            json={"userId": user, "placement": "home_feed"},
            auth=(BROWSER_KEY, ""),
            headers={"X-Customer-Token": raw},
        ),
    ):
        err = assert_error(resp, 401, "unauthorized")
        assert err["message"].startswith("malformed customer token: "), err
        assert "Traceback" not in resp.text
    assert live_server.engine.event_log.count() == 0


def test_a_malformed_customer_token_in_a_browser_body_is_a_401(live_server):
    """analytics.js's way: ``writeKey`` and ``customerToken`` in a text/plain body."""
    for token in ("u-att.1796533617.\u00e9\u00e9", "u-att\x00.1796533617." + "A" * 43, 42):
        body = {"writeKey": BROWSER_KEY, "customerToken": token}
        for path, extra in (
            ("/v1/t", {"userId": "u-att", "event": "Clicked"}),
            ("/v1/decide", {"userId": "u-att", "placement": "home_feed"}),
        ):
            resp = httpx.post(
                f"{live_server.url}{path}",
                content=orjson.dumps({**body, **extra}),
                headers={"Content-Type": "text/plain"},
            )
            err = assert_error(resp, 401, "unauthorized")
            assert err["message"].startswith("malformed customer token: "), err
    assert live_server.engine.event_log.count() == 0


# ---------------------------------------------------------------------- credentials first


def test_a_header_key_is_checked_before_a_gzip_body_is_inflated(start_server):
    server = start_server(max_body_bytes=10_000)
    bomb = gzip.compress(b" " * 5_000_000)  # ~5 kB that inflate to 5 MB
    resp = httpx.post(
        f"{server.url}/v1/batch",
        content=bomb,
        headers={"Authorization": "Basic bm9wZTo=", "Content-Encoding": "gzip"},  # "nope:"
    )
    assert_error(resp, 401, "unauthorized")
    resp = httpx.post(
        f"{server.url}/v1/batch",
        content=bomb,
        auth=(BROWSER_KEY, ""),
        headers={"Content-Encoding": "gzip", "X-Customer-Token": "u.1.x"},
    )
    assert_error(resp, 401, "unauthorized")  # the token too, before the body


def test_a_body_that_carries_its_key_is_inflated_only_within_the_browser_limit(live_server):
    """No Authorization header: the key is in the body, so the body must be read, but only
    up to the browser limit (512 kB), compressed or inflated: a 4 kB gzip that inflates to
    4.5 MB is refused at 512 kB, before any JSON is decoded."""
    inner = b'{"writeKey":"nope","batch":[' + b'{"type":"page"},' * 280_000 + b'{"type":"page"}]}'
    assert len(inner) > 4_400_000
    resp = httpx.post(
        f"{live_server.url}/v1/batch",
        content=gzip.compress(inner),
        headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"},
    )
    err = assert_error(resp, 413, "payload_too_large")
    assert "a body that carries its key" in err["message"]
    assert "512000-byte limit" in err["message"]


def test_a_body_key_is_checked_before_the_messages_are_parsed(live_server):
    """Only ``writeKey`` and ``customerToken`` are decoded before the key is known: an unknown
    key with messages that would not parse is a 401, not a 400; with the browser key, a 400."""
    bad = [{"type": "nonsense", "timestamp": "yesterday"}]
    for key, status in (("nope", 401), (WRITE_KEY, 401), (BROWSER_KEY, 400)):
        resp = httpx.post(
            f"{live_server.url}/v1/batch",
            content=gzip.compress(orjson.dumps({"writeKey": key, "batch": bad})),
            headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"},
        )
        assert resp.status_code == status, resp.text
    assert live_server.engine.event_log.count() == 0
