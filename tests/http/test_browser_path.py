"""The browser path against a real server: a bank's page on its own origin calls nextbest as
analytics.js does (short paths, ``text/plain`` bodies carrying ``writeKey``), asks for
decisions with its key and customer token in the body, gets only what it renders, and CORS
lets exactly the bank's origins in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from nextbest.decide.reasons import CUSTOMER_FACING
from nextbest.experiments import Arm
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, user_in_arm
from tests.http.test_api import _mortgage_researcher, assert_error, decide, ok, token
from tests.support import ADMIN_KEY, BROWSER_KEY, SERVER_KEY, WRITE_KEY

BANK = "https://www.bank.example"
PAGE_URL = f"{BANK}/mortgages/rates"
TEXT = {"Content-Type": "text/plain"}


def ajs(kind: str, anon: str, user: str | None = None, **fields: Any) -> dict[str, Any]:
    """A message as analytics.js (analytics-next's Segment.io plugin) posts it: the event's
    JSON after ``normalize``: ``writeKey``, ``sentAt`` and ``_metadata`` added, a
    ``ajs-next-`` messageId, times in UTC with ``Z``, the page and library in ``context``."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    page = {
        "path": "/mortgages/rates",
        "referrer": "",
        "search": "",
        "title": "Mortgage rates",
        "url": PAGE_URL,
    }
    return {
        "timestamp": stamp,
        "integrations": {},
        "type": kind,
        "userId": user,
        "anonymousId": anon,
        "context": {
            "page": page,
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "locale": "en-GB",
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
        },
        "messageId": f"ajs-next-{uuid.uuid4().hex}",
        "writeKey": BROWSER_KEY,
        "sentAt": stamp,
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
        **fields,
    }


def post_text(
    server: LiveServer, path: str, body: dict[str, Any], **headers: str
) -> httpx.Response:
    """As a page's ``fetch`` posts it: text/plain (no preflight), no Authorization."""
    return httpx.post(
        f"{server.url}{path}", content=orjson.dumps(body), headers={**TEXT, **headers}
    )


# ---------------------------------------------------------------------- analytics.js


def test_analytics_js_short_paths_take_what_the_library_sends(live_server: LiveServer):
    anon = str(uuid.uuid4())
    sent = {
        "/v1/p": ajs("page", anon, properties={"url": PAGE_URL, "path": "/mortgages/rates"}),
        "/v1/t": ajs("track", anon, event="Calculator Used", properties={"topic": "mortgage"}),
        "/v1/i": ajs("identify", anon, traits={"preferred_language": "en"}),
        "/v1/g": ajs("group", anon, groupId="household-7", traits={}),
        "/v1/s": ajs("screen", anon, name="Rates", properties={}),
    }
    for path, body in sent.items():
        resp = post_text(live_server, path, body)
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json() == ok(1)
    # the batching delivery strategy: {writeKey, batch, sentAt} to <apiHost>/b
    views = [ajs("page", anon, properties={"url": PAGE_URL}) for _ in range(2)]
    for view in views:
        del view["sentAt"]
    resp = post_text(
        live_server,
        "/v1/b",
        {"writeKey": BROWSER_KEY, "batch": views, "sentAt": sent["/v1/p"]["sentAt"]},
    )
    assert resp.json() == ok(2)
    assert live_server.engine.event_log.count() == 7
    profile = live_server.engine.profile(f"anon:{anon}")
    assert profile is not None
    assert profile.interests["mortgage"].total >= 3
    # alias merges customers: a browser key may not, on the short path as on the long one
    alias = ajs("alias", anon, user="u-someone", previousId=anon)
    assert_error(post_text(live_server, "/v1/a", alias), 403, "forbidden")


def test_short_paths_are_the_long_routes_for_every_key(live_server: LiveServer):
    user = fresh_user("short")
    alias = {"userId": user, "previousId": "old-device", "messageId": "alias-1"}
    resp = httpx.post(f"{live_server.url}/v1/a", json=alias, auth=(WRITE_KEY, ""))
    assert resp.json() == ok(1)
    again = httpx.post(f"{live_server.url}/v1/alias", json=alias, auth=(WRITE_KEY, ""))
    assert again.json() == ok(0, duplicates=1)  # the same message, whichever path
    no_key = httpx.post(f"{live_server.url}/v1/t", json={"userId": user, "event": "Clicked"})
    assert_error(no_key, 401, "unauthorized")


# ---------------------------------------------------------------------- decide from a page


def test_a_page_decides_with_its_key_and_token_in_the_body(live_server: LiveServer):
    user = user_in_arm(Arm.TREATMENT)
    with httpx.Client(base_url=live_server.url) as http:
        _mortgage_researcher(http, user)
    ask = {"writeKey": BROWSER_KEY, "userId": user, "placement": "home_feed"}
    # without the token the page may decide only for its anonymousId
    assert_error(post_text(live_server, "/v1/decide", ask), 403, "forbidden")
    bound = {**ask, "customerToken": token(user)["X-Customer-Token"]}
    resp = post_text(live_server, "/v1/decide", bound)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert "mortgage_advice" in [i["offer_id"] for i in answer["items"]]
    logged = live_server.engine.decision(answer["decision_id"])
    assert logged is not None
    assert logged.customer_id == user
    # the page reports what it showed the same way: key and token in the body
    shown = answer["items"][0]
    view = ajs(
        "track",
        "page-device",
        user=user,
        event="Promotion Viewed",
        properties={
            "promotion_id": shown["offer_id"],
            "decision_id": answer["decision_id"],
            "position": shown["position"],
        },
        customerToken=bound["customerToken"],
    )
    assert post_text(live_server, "/v1/t", view).json() == ok(1)
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.offers[shown["offer_id"]].total_impressions == 1


def test_credentials_in_the_body_follow_the_rules_of_the_headers(live_server: LiveServer):
    user = fresh_user("rules")
    bound = token(user)
    ask = {"userId": user, "placement": "home_feed"}
    # a key a page must not hold is refused even from a body
    for key in (WRITE_KEY, SERVER_KEY, ADMIN_KEY, "nope"):
        resp = post_text(live_server, "/v1/decide", {**ask, "writeKey": key})
        assert_error(resp, 401, "unauthorized")
    # the token once: in the header or in the body
    twice = {**ask, "writeKey": BROWSER_KEY, "customerToken": bound["X-Customer-Token"]}
    err = assert_error(post_text(live_server, "/v1/decide", twice, **bound), 401, "unauthorized")
    assert "two customer tokens" in err["message"]
    # with an Authorization header the token goes in X-Customer-Token
    with httpx.Client(base_url=live_server.url) as http:
        resp = decide(http, key=BROWSER_KEY, customerToken=bound["X-Customer-Token"], **ask)
        assert_error(resp, 400, "validation_error", "$.customerToken")
        # a header key wins over a writeKey in the body (Segment's Python client sends both)
        resp = decide(http, key=SERVER_KEY, writeKey=BROWSER_KEY, **ask)
        assert resp.status_code == 200, resp.text
        assert "segments" in resp.json()


def test_a_browser_key_sees_only_what_the_page_renders(live_server: LiveServer):
    """The review: a public page saw the customer's segments, candidates and features."""
    user = user_in_arm(Arm.TREATMENT)
    with httpx.Client(base_url=live_server.url) as http:
        _mortgage_researcher(http, user)
        full = decide(http, key=SERVER_KEY, placement="home_feed", userId=user).json()
        assert "mortgage_intent" in full["segments"]
        assert any(r["code"] == "segment" for i in full["items"] for r in i["reasons"])
        resp = decide(
            http, key=BROWSER_KEY, headers=token(user), placement="home_feed", userId=user
        )
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert set(page) == {"decision_id", "placement", "items"}
        assert page["placement"] == "home_feed"
        for item in page["items"]:
            assert set(item) == {"position", "offer_id", "content", "reasons"}
            assert {r["code"] for r in item["reasons"]} <= set(CUSTOMER_FACING)
        first = page["items"][0]
        assert first["offer_id"] == "mortgage_advice"
        assert first["content"]["title"] == "Talk to a mortgage advisor"
        texts = [r["text"] for r in first["reasons"]]
        assert "viewed mortgage pages 5 times in 14 days" in texts
        assert not any("segment" in t for t in texts)
        assert "mortgage_intent" not in resp.text
        # nor why the rest was left out
        resp = decide(
            http,
            key=BROWSER_KEY,
            headers=token(user),
            placement="home_feed",
            userId=user,
            explain=True,
        )
        err = assert_error(resp, 403, "forbidden")
        assert "$.explain" in err["message"]
        # the decision log keeps everything, for the bank
        logged = live_server.engine.decision(page["decision_id"])
        assert logged is not None
        assert "mortgage_intent" in logged.segments


# ---------------------------------------------------------------------- CORS


@pytest.fixture
def bank_server(start_server) -> LiveServer:
    return start_server(cors_origins=frozenset({BANK, "http://localhost:3000"}))


def _cors_headers(resp: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.startswith("access-control-")}


def _preflight(server: LiveServer, path: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        f"{server.url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, x-customer-token",
        },
    )


def test_a_preflight_from_the_banks_origin_is_answered(bank_server: LiveServer):
    """The review: ``OPTIONS /v1/decide`` from the bank's page answered 405."""
    for path in ("/v1/decide", "/v1/batch", "/v1/t", "/v1/track"):
        resp = _preflight(bank_server, path, BANK)
        assert resp.status_code == 204, (path, resp.text)
        assert resp.headers["access-control-allow-origin"] == BANK
        assert resp.headers["access-control-allow-methods"] == "POST"
        allowed = {
            h.strip().lower() for h in resp.headers["access-control-allow-headers"].split(",")
        }
        assert {"authorization", "content-type", "x-customer-token", "content-encoding"} == allowed
        assert resp.headers["access-control-max-age"] == "600"
        assert "Origin" in resp.headers["vary"]
        assert "access-control-allow-credentials" not in resp.headers
    health = _preflight(bank_server, "/healthz", "http://localhost:3000", "GET")
    assert health.headers["access-control-allow-methods"] == "GET"

    # a customer's callback routes, with their path parameter; never an advisor's
    for path, method in (
        ("/v1/callbacks", "POST"),
        ("/v1/callbacks/7f3a", "GET"),
        ("/v1/callbacks/7f3a/cancel", "POST"),
    ):
        resp = _preflight(bank_server, path, BANK, method)
        assert resp.status_code == 204, (path, resp.text)
        assert resp.headers["access-control-allow-methods"] == method
    for path in ("/v1/callbacks/7f3a/accept", "/v1/advisors/anna_holm/queue", "/v1/callbacks/a/b"):
        resp = _preflight(bank_server, path, BANK)
        assert resp.status_code in (404, 405), path  # no route, or none a browser may use
        assert _cors_headers(resp) == {}


def test_another_origin_gets_no_cors_headers_and_is_refused(bank_server: LiveServer):
    for origin in ("https://evil.example", "https://www.bank.example.evil.example", "null"):
        resp = _preflight(bank_server, "/v1/decide", origin)
        assert_error(resp, 403, "forbidden")
        assert _cors_headers(resp) == {}
        # a simple request (no preflight) is refused before its body is read
        sent = post_text(bank_server, "/v1/t", ajs("track", "d-1", event="Clicked"), Origin=origin)
        assert_error(sent, 403, "forbidden")
        assert _cors_headers(sent) == {}
    assert bank_server.engine.event_log.count() == 0


def test_requests_from_the_banks_origin_carry_cors_headers(bank_server: LiveServer):
    resp = post_text(bank_server, "/v1/t", ajs("track", "d-2", event="Clicked"), Origin=BANK)
    assert resp.json() == ok(1)
    assert resp.headers["access-control-allow-origin"] == BANK
    assert resp.headers["access-control-expose-headers"] == "Retry-After, X-RateLimit-Reset"
    assert "Origin" in resp.headers["vary"]
    # errors too, so the page can read them
    bad = post_text(bank_server, "/v1/decide", {"writeKey": BROWSER_KEY}, Origin=BANK)
    assert_error(bad, 400, "validation_error")
    assert bad.headers["access-control-allow-origin"] == BANK
    # the ingestion routes' own path (``api.ingest``) alike
    refused = post_text(bank_server, "/v1/t", {"writeKey": BROWSER_KEY}, Origin=BANK)
    assert_error(refused, 400, "validation_error")
    assert _cors_headers(refused) == _cors_headers(bad)


def test_servers_and_private_routes_see_no_cors(bank_server: LiveServer):
    url = bank_server.url
    # no Origin: a server, an SDK, curl
    resp = httpx.post(
        f"{url}/v1/decide", json={"userId": "u", "placement": "home_feed"}, auth=(SERVER_KEY, "")
    )
    assert resp.status_code == 200
    assert _cors_headers(resp) == {}
    # routes no browser key may use are never opened to pages
    for path, method in (("/v1/profiles/u", "GET"), ("/v1/admin/catalog", "GET")):
        resp = _preflight(bank_server, path, BANK, method)
        assert resp.status_code == 405
        assert _cors_headers(resp) == {}
        resp = httpx.get(f"{url}{path}", auth=(ADMIN_KEY, ""), headers={"Origin": BANK})
        assert _cors_headers(resp) == {}


def test_without_configured_origins_nothing_changes(live_server: LiveServer):
    resp = _preflight(live_server, "/v1/decide", BANK)
    assert_error(resp, 405, "method_not_allowed")
    assert _cors_headers(resp) == {}
    sent = post_text(live_server, "/v1/t", ajs("track", "d-3", event="Clicked"), Origin=BANK)
    assert sent.json() == ok(1)
    assert _cors_headers(sent) == {}


def test_any_origin_without_credentials_and_named_origins_with_them(start_server):
    anyone = start_server(cors_origins=frozenset({"*"}))
    resp = _preflight(anyone, "/v1/decide", "https://elsewhere.example")
    assert resp.status_code == 204
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in resp.headers
    named = start_server(cors_origins=frozenset({BANK}), cors_credentials=True)
    resp = _preflight(named, "/v1/decide", BANK)
    assert resp.headers["access-control-allow-origin"] == BANK
    assert resp.headers["access-control-allow-credentials"] == "true"
