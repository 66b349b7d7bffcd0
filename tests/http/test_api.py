"""The HTTP face against a real uvicorn server on loopback, with httpx as the client.

Every request goes over a socket; assertions read both the response and the engine behind the
server (``live_server.engine``): what was stored, what the profile holds.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from starlette.routing import Route

from nextbest.api.app import ROUTES, create_app
from nextbest.api.customer_token import mint_customer_token
from nextbest.events.model import EventType
from nextbest.experiments import Arm
from nextbest.guard import KeyKind, Scope, Sender
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg, now, user_in_arm
from tests.support import (
    ADMIN_KEY,
    BROWSER_KEY,
    DAY,
    SERVER_KEY,
    TOKEN_SECRET,
    WRITE_KEY,
)

JSON = {"Content-Type": "application/json"}
KEYS = {
    KeyKind.WRITE: WRITE_KEY,
    KeyKind.BROWSER: BROWSER_KEY,
    KeyKind.SERVER: SERVER_KEY,
    KeyKind.ADMIN: ADMIN_KEY,
}


def body_of(*messages: dict[str, Any]) -> bytes:
    return orjson.dumps({"batch": list(messages), "sentAt": msg("track", event="x")["timestamp"]})


def send(
    http: httpx.Client,
    content: bytes,
    *,
    key: str | None = WRITE_KEY,
    path: str = "/v1/batch",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return http.post(
        path,
        content=content,
        auth=(key, "") if key is not None else None,
        headers={**JSON, **(headers or {})},
    )


def decide(
    http: httpx.Client, *, key: str = SERVER_KEY, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    return http.post(
        "/v1/decide",
        content=orjson.dumps(body),
        auth=(key, ""),
        headers={**JSON, **(headers or {})},
    )


def ok(accepted: int, duplicates: int = 0) -> dict[str, Any]:
    return {"success": True, "accepted": accepted, "duplicates": duplicates, "rejected": []}


def _settle_after_server_error(resp: httpx.Response) -> None:
    """After a 5xx, let uvicorn finish logging the traceback before this test fails.

    The server logs an unhandled exception in its own thread right after sending the 500.
    CPython 3.11's traceback formatting parses source with ``ast`` (caret anchors), and so
    does pytest when it renders this test's failure; run concurrently, 3.11.7 sometimes
    raises ``SystemError: AST constructor recursion depth mismatch`` inside pytest and
    aborts the whole session (INTERNALERROR). One more request on the same server is
    served only after that logging step, so the failure is then reported normally.
    """
    if resp.status_code >= 500:
        httpx.get(str(resp.request.url.copy_with(path="/healthz", query=None)), timeout=10)


def assert_error(resp: httpx.Response, status: int, code: str, path: str | None = None) -> dict:
    _settle_after_server_error(resp)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()
    assert err["code"] == code
    assert isinstance(err["message"], str)
    assert err["message"]
    if path is not None:
        assert err["path"] == path, err
    return err


def assert_quarantined(
    resp: httpx.Response, accepted: int, rejected: list[tuple[int, str, str]]
) -> list[dict[str, Any]]:
    """A 200 that kept ``accepted`` events and set apart exactly ``rejected``: (index,
    code, path) each, every one with a message."""
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    assert body["accepted"] == accepted, body
    assert [(r["index"], r["code"], r["path"]) for r in body["rejected"]] == rejected, body
    assert all(r["message"] for r in body["rejected"])
    return list(body["rejected"])


def profile_json(http: httpx.Client, user: str) -> dict[str, Any]:
    resp = http.get(f"/v1/profiles/{user}", auth=(SERVER_KEY, ""))
    assert resp.status_code == 200, resp.text
    return resp.json()


def token(user: str, ttl: float = 3600.0, secret: str = TOKEN_SECRET) -> dict[str, str]:
    return {"X-Customer-Token": mint_customer_token(secret, user, now() + ttl)}


# ---------------------------------------------------------------------- /v1/batch accepted


def test_batch_with_basic_auth_is_stored_and_folded(live_server: LiveServer, http: httpx.Client):
    user = fresh_user()
    resp = send(
        http,
        body_of(
            msg("identify", user=user, anon="device-1", traits={"age": 35, "email": "a@b.example"}),
            msg("page", user=user, properties={"url": "https://bank.example/mortgages/rates"}),
            msg(
                "track",
                user=user,
                event="Transaction Posted",
                properties={"amount": 12.5, "currency": "EUR", "balance": -3.0},
            ),
        ),
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == ok(3)
    assert live_server.engine.event_log.count() == 3

    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.traits == {"age": 35, "email": "a@b.example"}
    assert profile.anonymous_ids == ["device-1"]
    assert profile.event_count == 3
    assert profile.interests["mortgage"].total == 1
    assert profile.balance == -3.0
    assert profile.overdrawn is True
    assert [r.type for r in profile.recent] == ["identify", "page", "track"]


def test_batch_gzip_body_is_accepted(live_server: LiveServer, http: httpx.Client):
    user = fresh_user()
    messages = [msg("track", user=user, event=f"Clicked {i}") for i in range(5)]
    resp = send(http, gzip.compress(body_of(*messages)), headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(5)
    assert live_server.engine.event_log.count() == 5
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.event_count == 5


def test_text_plain_with_browser_key_in_body_is_accepted(live_server: LiveServer):
    """analytics.js: ``Content-Type: text/plain``, ``writeKey`` in the body, no Authorization.
    The key in a public page is a browser key: it speaks for the anonymous session only."""
    body = orjson.dumps({"batch": [msg("page", anon="browser-1")], "writeKey": BROWSER_KEY})
    resp = httpx.post(
        f"{live_server.url}/v1/batch",
        content=body,
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert "authorization" not in resp.request.headers
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(1)
    assert live_server.engine.event_log.count() == 1
    assert live_server.engine.profile("anon:browser-1") is not None


def test_text_plain_with_a_non_browser_key_in_body_is_401(live_server: LiveServer):
    """A server-side write key must not work from a public page: keys in bodies are seen."""
    user = fresh_user()
    body = orjson.dumps({"batch": [msg("page", anon="b-2", user=user)], "writeKey": WRITE_KEY})
    resp = httpx.post(
        f"{live_server.url}/v1/batch", content=body, headers={"Content-Type": "text/plain"}
    )
    assert_error(resp, 401, "unauthorized")
    assert live_server.engine.event_log.count() == 0


def test_unknown_route_and_method_are_json(live_server: LiveServer, http: httpx.Client):
    resp = http.get("/v1/nope")
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"
    resp = http.get("/v1/batch")
    assert resp.status_code == 405
    assert resp.json()["code"] == "method_not_allowed"


def test_a_path_without_parameters_finds_the_route_a_full_scan_would(http: httpx.Client):
    """A path without parameters is tried only on the routes whose pattern matches it: its
    own method's answer, 405 for another method, the trailing-slash redirect, 404."""
    assert http.get("/healthz").status_code == 200
    assert_error(http.post("/healthz"), 405, "method_not_allowed")
    assert_error(http.get("/v1/decide"), 405, "method_not_allowed")
    slash = http.get("/healthz/", follow_redirects=False)
    assert slash.status_code == 307
    assert slash.headers["location"].endswith("/healthz")
    assert http.get("/openapi.json").json()["paths"]["/healthz"]
    assert_error(http.get("/v1/admin/catalog"), 401, "unauthorized")  # its route, no key
    assert_error(http.get("/v1/experiments/x/y"), 404, "not_found")


def test_key_is_checked_before_the_body_is_read(start_server):
    server = start_server(max_body_bytes=1_000)
    resp = httpx.post(
        f"{server.url}/v1/batch", content=b"x" * 5_000, headers={"Authorization": "Basic bm9wZTo="}
    )  # "nope:"
    assert resp.status_code == 401


def test_text_plain_with_unknown_body_key_is_401(live_server: LiveServer):
    body = orjson.dumps({"batch": [msg("page", anon="browser-1")], "writeKey": "nope"})
    resp = httpx.post(
        f"{live_server.url}/v1/batch", content=body, headers={"Content-Type": "text/plain"}
    )
    assert_error(resp, 401, "unauthorized")
    assert live_server.engine.event_log.count() == 0


# ---------------------------------------------------------------------- idempotency


def test_same_batch_twice_is_acknowledged_and_not_stored_again(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user()
    body = body_of(*(msg("track", user=user, event="Clicked") for _ in range(4)))
    first = send(http, body)
    assert first.status_code == 200, first.text
    assert first.json() == ok(4)
    assert live_server.engine.event_log.count() == 4

    second = send(http, body)
    assert second.status_code == 200, second.text
    assert second.json() == ok(0, 4)
    assert live_server.engine.event_log.count() == 4
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.event_count == 4


def test_repeated_message_id_within_one_batch_is_one_event(
    live_server: LiveServer, http: httpx.Client
):
    m = msg("track", user=fresh_user(), event="Clicked")
    resp = send(http, body_of(m, m, msg("track", user="other", event="Clicked")))
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(2, 1)
    assert live_server.engine.event_log.count() == 2


# ---------------------------------------------------------------------- precise 400s


def _valid() -> dict[str, Any]:
    return msg("track", user="valid-user", event="Clicked")


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


BAD_BATCHES: dict[str, tuple[Callable[[], list[dict[str, Any]]], str, str]] = {
    "unknown type": (
        lambda: [_valid(), {**msg("track", user="u", event="x"), "type": "purchase"}],
        "$.batch[1].type",
        "purchase",
    ),
    "no userId nor anonymousId": (
        lambda: [_valid(), msg("track", event="Clicked")],
        "$.batch[1].userId",
        "userId or anonymousId is required",
    ),
    "naive timestamp": (
        lambda: [_valid(), {**_valid(), "messageId": "naive", "timestamp": "2026-11-25T10:00:00"}],
        "$.batch[1].timestamp",
        "timezone",
    ),
    "timestamp over a day ahead": (
        lambda: [_valid(), msg("track", user="u", event="x", at=now() + 2 * DAY)],
        "$.batch[1].timestamp",
        "more than a day in the future",
    ),
    "nested deeper than 12 levels": (
        lambda: [_valid(), msg("track", user="u", event="x", properties=_nested(13))],
        "$.batch[1].properties" + ".n" * 12,
        "nested deeper than 12 levels",
    ),
    "integer beyond 2**53": (
        lambda: [_valid(), msg("track", user="u", event="x", properties={"amount": 2**60})],
        "$.batch[1].properties.amount",
        "beyond 2**53",
    ),
    "numeric userId beyond 2**53": (
        lambda: [_valid(), {**msg("track", event="x"), "userId": 2**60}],
        "$.batch[1].userId",
        "within 2**53",
    ),
    "NUL in an event name": (
        lambda: [_valid(), msg("track", user="u", event="a\u0000b")],
        "$.batch[1].event",
        "control character U+0000",
    ),
    "control character in a userId": (
        lambda: [_valid(), msg("track", user="u\u0007", event="x")],
        "$.batch[1].userId",
        "control character U+0007",
    ),
    "control character in a trait key": (
        lambda: [_valid(), msg("identify", user="u", traits={"a\nb": 1})],
        '$.batch[1].traits["a\\nb"]',
        "control character",
    ),
    "NUL in a property value": (
        lambda: [_valid(), msg("track", user="u", event="x", properties={"q": "a\u0000"})],
        "$.batch[1].properties.q",
        "NUL",
    ),
    "alias without previousId": (
        lambda: [_valid(), {**msg("alias", user="u"), "previousId": None}],
        "$.batch[1].previousId",
        "got `null`",
    ),
    "empty track event name": (
        lambda: [_valid(), msg("track", user="u", event="")],
        "$.batch[1].event",
        "event name must not be empty",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_a_bad_message_rejects_the_whole_batch_with_its_path(
    live_server: LiveServer, http: httpx.Client, case: str
):
    build, path, reason = BAD_BATCHES[case]
    resp = send(http, body_of(*build()))
    err = assert_error(resp, 400, "validation_error", path)
    assert reason in err["message"]
    assert live_server.engine.event_log.count() == 0
    assert live_server.engine.profile("valid-user") is None


def test_batch_level_context_is_depth_checked_too(live_server: LiveServer, http: httpx.Client):
    body = orjson.dumps({"batch": [_valid()], "context": _nested(13)})
    err = assert_error(send(http, body), 400, "validation_error", "$.context" + ".n" * 12)
    assert "nested deeper than 12 levels" in err["message"]
    assert live_server.engine.event_log.count() == 0


def test_nesting_at_the_limit_is_accepted(live_server: LiveServer, http: httpx.Client):
    resp = send(http, body_of(msg("track", user="u", event="x", properties=_nested(12))))
    assert resp.status_code == 200, resp.text
    assert live_server.engine.event_log.count() == 1


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_pathologically_deep_json_is_a_400_not_a_500(
    live_server: LiveServer, http: httpx.Client, depth: int
):
    """A few kB of ``[[[[...]]]]`` must not crash the decoder into a 500 (which SDKs retry)."""
    deep = b"[" * depth + b"]" * depth
    head = b'{"batch":[{"type":"track","userId":"u","event":"x","properties":{"a":'
    resp = send(http, head + deep + b"}}]}")
    err = assert_error(resp, 400, "validation_error")
    assert err["path"].startswith("$")
    assert live_server.engine.event_log.count() == 0


def test_pathologically_deep_json_in_an_analytics_js_body_is_a_400(live_server: LiveServer):
    """Without Authorization the body is decoded once for ``writeKey``: that must not 500."""
    deep = b"[" * 5_000 + b"]" * 5_000
    body = b'{"writeKey":"' + WRITE_KEY.encode() + b'","batch":' + deep + b"}"
    resp = httpx.post(
        f"{live_server.url}/v1/batch", content=body, headers={"Content-Type": "text/plain"}
    )
    _settle_after_server_error(resp)
    assert 400 <= resp.status_code < 500, resp.text
    assert live_server.engine.event_log.count() == 0


def test_pathologically_deep_decide_context_is_a_400(live_server: LiveServer, http: httpx.Client):
    deep = b"[" * 5_000 + b"]" * 5_000
    body = b'{"placement":"home_feed","anonymousId":"a","context":{"x":' + deep + b"}}"
    resp = http.post("/v1/decide", content=body, auth=(SERVER_KEY, ""), headers=JSON)
    assert_error(resp, 400, "validation_error")


@pytest.mark.parametrize(
    ("content", "headers", "path", "reason"),
    [
        (b'{"batch": [', {}, "$.batch[0]", "not valid JSON"),
        (b"", {}, "$", "not valid JSON"),
        (b"{nope", {}, "$", "not valid JSON"),
        (b'{"batch": {"type": "track"}}', {}, "$.batch", "Expected `array`"),
        (b'{"sentAt": null}', {}, "$.batch", "missing required field `batch`"),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, "$", "not valid gzip"),
        (b"\x1f\x8b garbage", {"Content-Encoding": "gzip"}, "$", "not valid gzip"),
        (b'{"batch": []}', {"Content-Encoding": "br"}, "$", "Content-Encoding"),
    ],
    ids=[
        "truncated json",
        "empty body",
        "invalid json",
        "batch not a list",
        "no batch",
        "invalid gzip",
        "corrupt gzip after magic",
        "unknown encoding",
    ],
)
def test_undecodable_bodies_are_400(
    live_server: LiveServer,
    http: httpx.Client,
    content: bytes,
    headers: dict[str, str],
    path: str,
    reason: str,
):
    resp = send(http, content, headers=headers)
    err = assert_error(resp, 400, "validation_error", path)
    assert reason in err["message"]
    assert live_server.engine.event_log.count() == 0


# ---------------------------------------------------------------------- 413


SMALL_LIMIT = 4_096


def test_declared_content_length_over_the_limit_is_413(start_server: Callable[..., LiveServer]):
    server = start_server(max_body_bytes=SMALL_LIMIT)
    padding = "x" * SMALL_LIMIT
    body = body_of(msg("track", user="u", event="Clicked", properties={"pad": padding}))
    assert len(body) > SMALL_LIMIT
    resp = httpx.post(f"{server.url}/v1/batch", content=body, auth=(WRITE_KEY, ""), headers=JSON)
    assert int(resp.request.headers["content-length"]) == len(body)
    err = assert_error(resp, 413, "payload_too_large")
    assert f"{SMALL_LIMIT}-byte limit" in err["message"]
    assert server.engine.event_log.count() == 0


def test_streamed_body_over_the_limit_is_413(start_server: Callable[..., LiveServer]):
    """No Content-Length (chunked): the limit is enforced while reading."""
    server = start_server(max_body_bytes=SMALL_LIMIT)
    body = body_of(msg("track", user="u", event="Clicked", properties={"pad": "x" * SMALL_LIMIT}))

    def chunks():
        for i in range(0, len(body), 1_000):
            yield body[i : i + 1_000]

    resp = httpx.post(
        f"{server.url}/v1/batch", content=chunks(), auth=(WRITE_KEY, ""), headers=JSON
    )
    assert "content-length" not in resp.request.headers
    assert_error(resp, 413, "payload_too_large")
    assert server.engine.event_log.count() == 0


def test_gzip_bomb_is_413(start_server: Callable[..., LiveServer]):
    server = start_server(max_body_bytes=SMALL_LIMIT)
    inner = body_of(msg("track", user="u", event="Clicked", properties={"pad": " " * 1_000_000}))
    bomb = gzip.compress(inner)
    assert len(bomb) < SMALL_LIMIT < len(inner)
    resp = httpx.post(
        f"{server.url}/v1/batch",
        content=bomb,
        auth=(WRITE_KEY, ""),
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    err = assert_error(resp, 413, "payload_too_large")
    assert "uncompressed" in err["message"]
    assert server.engine.event_log.count() == 0


def test_gzip_body_inflating_to_exactly_the_limit_is_accepted(
    start_server: Callable[..., LiveServer],
):
    server = start_server(max_body_bytes=SMALL_LIMIT)
    m = msg("track", user="u", event="Clicked", properties={"pad": ""})
    m["properties"]["pad"] = " " * (SMALL_LIMIT - len(orjson.dumps({"batch": [m]})))
    inner = orjson.dumps({"batch": [m]})
    assert len(inner) == SMALL_LIMIT
    resp = httpx.post(
        f"{server.url}/v1/batch",
        content=gzip.compress(inner),
        auth=(WRITE_KEY, ""),
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text
    assert server.engine.event_log.count() == 1


def test_default_limit_rejects_a_gzip_bomb_past_4_5_mb(live_server: LiveServer, http: httpx.Client):
    assert live_server.settings.max_body_bytes == 4_500_000
    inner = body_of(msg("track", user="u", event="x", properties={"pad": " " * 5_000_000}))
    resp = send(http, gzip.compress(inner, compresslevel=1), headers={"Content-Encoding": "gzip"})
    assert_error(resp, 413, "payload_too_large")
    assert live_server.engine.event_log.count() == 0


# ---------------------------------------------------------------------- single routes


SINGLE_BODIES: dict[EventType, dict[str, Any]] = {
    EventType.TRACK: {"event": "Clicked", "properties": {"button": "apply"}},
    EventType.PAGE: {"name": "Rates", "properties": {"url": "https://bank.example/mortgages/"}},
    EventType.SCREEN: {"name": "Home", "category": "app", "properties": {}},
    EventType.IDENTIFY: {"traits": {"age": 41}},
    EventType.ALIAS: {"previousId": "old-id"},
    EventType.GROUP: {"groupId": "household-7", "traits": {"size": 3}},
}


@pytest.mark.parametrize("kind", list(EventType))
def test_single_routes_accept_a_message_without_type(
    live_server: LiveServer, http: httpx.Client, kind: EventType
):
    user = fresh_user(kind.value)
    m = msg(kind.value, user=user, **SINGLE_BODIES[kind])
    del m["type"]
    resp = send(http, orjson.dumps(m), path=f"/v1/{kind.value}")
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(1)
    stored = list(live_server.engine.event_log.scan())
    assert len(stored) == 1
    event = stored[0].event
    assert event.type is kind
    assert event.user_id == user
    assert event.message_id == m["messageId"]
    assert live_server.engine.profile(user) is not None
    # the same message again is a duplicate
    again = send(http, orjson.dumps(m), path=f"/v1/{kind.value}")
    assert again.json() == ok(0, 1)


def test_single_identify_route_folds_traits(live_server: LiveServer, http: httpx.Client):
    user = fresh_user()
    m = msg("identify", user=user, traits={"age": 41})
    del m["type"]
    assert send(http, orjson.dumps(m), path="/v1/identify").status_code == 200
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.traits == {"age": 41}


SINGLE_ERRORS: dict[str, tuple[dict[str, Any], str]] = {
    "naive timestamp": (
        {"userId": "u", "event": "x", "timestamp": "2026-11-25T10:00:00"},
        "$.timestamp",
    ),
    "type of another route": ({"type": "page", "userId": "u", "event": "x"}, "$.type"),
    "no ids": ({"event": "x"}, "$.userId"),
    "missing event name": ({"userId": "u"}, "$.event"),
    "NUL in the event name": ({"userId": "u", "event": "a\u0000b"}, "$.event"),
}


@pytest.mark.parametrize("case", list(SINGLE_ERRORS))
def test_single_route_errors_carry_their_path(
    live_server: LiveServer, http: httpx.Client, case: str
):
    body, path = SINGLE_ERRORS[case]
    resp = send(http, orjson.dumps(body), path="/v1/track")
    assert_error(resp, 400, "validation_error", path)
    assert live_server.engine.event_log.count() == 0


def test_a_single_message_that_breaks_the_vocabulary_is_quarantined(
    live_server: LiveServer, http: httpx.Client
):
    body = {"userId": "u", "event": "Salary Received", "properties": {"amount": "lots"}}
    resp = send(http, orjson.dumps(body), path="/v1/track")
    (r,) = assert_quarantined(resp, 0, [(0, "wrong_type", "$.properties.amount")])
    assert "must be float or int" in r["message"]
    assert live_server.engine.event_log.count() == 0
    (held,) = live_server.engine.quarantined()
    assert (held.code, held.path, held.sender) == ("wrong_type", "$.properties.amount", "write")


QUARANTINED: dict[str, tuple[Callable[[], list[dict[str, Any]]], list[tuple[int, str, str]]]] = {
    "known event missing a property": (
        lambda: [
            msg("track", user="u", event="Application Started", properties={}),
            _valid(),
        ],
        [(0, "missing_property", "$.batch[0].properties.product")],
    ),
    "bool where a number is needed": (
        lambda: [
            _valid(),
            msg("track", user="u", event="Balance Updated", properties={"balance": True}),
        ],
        [(1, "wrong_type", "$.batch[1].properties.balance")],
    ),
    "two bad among good": (
        lambda: [
            _valid(),
            msg("track", user="u", event="Life Event", properties={"type": 3}),
            msg("page", user="valid-user", properties={"url": "https://bank.example/loans"}),
            msg("track", user="u", event="Product Opened"),
        ],
        [
            (1, "wrong_type", "$.batch[1].properties.type"),
            (3, "missing_property", "$.batch[3].properties.product"),
        ],
    ),
}


@pytest.mark.parametrize("case", list(QUARANTINED))
def test_a_message_that_breaks_the_vocabulary_is_quarantined_and_the_rest_kept(
    live_server: LiveServer, http: httpx.Client, case: str
):
    """SDKs drop a whole batch on a 400: one bad message must not cost the good ones."""
    build, rejected = QUARANTINED[case]
    messages = build()
    resp = send(http, body_of(*messages))
    kept = len(messages) - len(rejected)
    assert_quarantined(resp, kept, rejected)
    assert live_server.engine.event_log.count() == kept
    assert live_server.engine.profile("valid-user") is not None
    held = live_server.engine.quarantined()
    assert [(h.code, h.path) for h in held] == [(code, path) for _, code, path in rejected]
    assert {h.event.message_id for h in held} == {messages[i]["messageId"] for i, _, _ in rejected}

    again = send(http, body_of(*messages))  # a retry: nothing stored or held twice
    assert_quarantined(again, 0, rejected)
    assert len(live_server.engine.quarantined()) == len(rejected)


def test_overdraft_started_without_balance_marks_the_customer_overdrawn(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user()
    resp = send(http, body_of(msg("track", user=user, event="Overdraft Started")))
    assert resp.json() == ok(1)
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.overdrawn


@pytest.mark.parametrize(
    "content_type",
    ["application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_body_that_is_not_json_is_415(
    live_server: LiveServer, http: httpx.Client, content_type: str
):
    resp = send(http, body_of(_valid()), headers={"Content-Type": content_type})
    err = assert_error(resp, 415, "unsupported_media_type")
    assert content_type.split(";")[0] in err["message"]
    decide_resp = http.post(
        "/v1/decide",
        content=b'{"placement":"home_feed","anonymousId":"a"}',
        auth=(SERVER_KEY, ""),
        headers={"Content-Type": content_type},
    )
    assert_error(decide_resp, 415, "unsupported_media_type")
    assert live_server.engine.event_log.count() == 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "text/plain", None]
)
def test_json_text_plain_or_no_content_type_is_accepted(
    live_server: LiveServer, content_type: str | None
):
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = httpx.post(
        f"{live_server.url}/v1/batch",
        content=body_of(_valid()),
        auth=(WRITE_KEY, ""),
        headers=headers,
    )
    assert resp.json() == ok(1)


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        (
            b'{"batch":[{"type":"track","userId":"u","event":"x","properties":{"q":"\\ud800"}}]}',
            "$.batch[0].properties.q",
            "surrogate",
        ),
        (
            b'{"batch":[{"type":"track","userId":"u","event":"x","properties":{"a":1e400}}]}',
            "$.batch[0].properties.a",
            "outside the double range",
        ),
        (
            b'{"batch":[{"type":"track","userId":"u","event":"x",'
            b'"properties":{"amount":1208925819614629174706176}}]}',
            "$.batch[0].properties.amount",
            "beyond 2**53",
        ),
        (
            b'{"batch":[{"type":"track","userId":"u","event":"x","context":{"page":'
            + b"[" * 3000
            + b"]" * 3000
            + b"}}]}",
            "$.batch[0].context.page" + "[0]" * 11,
            "nested deeper than 12 levels",
        ),
    ],
    ids=["lone surrogate", "non-finite number", "2**80", "nesting past the decoder's guard"],
)
def test_decoder_errors_name_the_nearest_field(
    live_server: LiveServer, http: httpx.Client, raw: bytes, path: str, reason: str
):
    err = assert_error(send(http, raw), 400, "validation_error", path)
    assert reason in err["message"]
    assert live_server.engine.event_log.count() == 0


# ---------------------------------------------------------------------- auth and scopes


def test_no_credentials_is_401_with_www_authenticate(live_server: LiveServer, http: httpx.Client):
    resp = send(http, body_of(msg("page", anon="a")), key=None)
    assert "authorization" not in resp.request.headers
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"] == 'Basic realm="nextbest"'
    assert live_server.engine.event_log.count() == 0


@pytest.mark.parametrize(
    "authorization",
    ["Basic bm9wZTo=", "Bearer nope", "Basic %%%not-base64", "Digest abc"],
    ids=["unknown basic key", "unknown bearer key", "malformed basic", "unknown scheme"],
)
def test_bad_credentials_are_401(live_server: LiveServer, http: httpx.Client, authorization: str):
    resp = http.post(
        "/v1/batch",
        content=body_of(msg("page", anon="a")),
        headers={**JSON, "Authorization": authorization},
    )
    assert_error(resp, 401, "unauthorized")
    assert "www-authenticate" in resp.headers
    assert live_server.engine.event_log.count() == 0


def test_bearer_key_is_accepted(live_server: LiveServer, http: httpx.Client):
    resp = http.post(
        "/v1/batch",
        content=body_of(msg("page", anon="a")),
        headers={**JSON, "Authorization": f"Bearer {SERVER_KEY}"},
    )
    assert resp.status_code == 200, resp.text
    assert live_server.engine.event_log.count() == 1


def _seed_profile(http: httpx.Client, user: str) -> None:
    resp = send(
        http,
        body_of(
            msg("identify", user=user, traits={"age": 35}),
            msg("page", user=user, properties={"url": "https://bank.example/mortgages/a"}),
        ),
    )
    assert resp.status_code == 200, resp.text


def test_profile_read_needs_a_server_key(live_server: LiveServer, http: httpx.Client):
    user = fresh_user()
    _seed_profile(http, user)
    for key in (WRITE_KEY, BROWSER_KEY):
        resp = http.get(f"/v1/profiles/{user}", auth=(key, ""))
        err = assert_error(resp, 403, "forbidden")
        assert "profiles:read" in err["message"]
        assert "www-authenticate" not in resp.headers
    # even with a customer token for that very user, a browser key reads no profile
    resp = http.get(f"/v1/profiles/{user}", auth=(BROWSER_KEY, ""), headers=token(user))
    assert_error(resp, 403, "forbidden")

    body = profile_json(http, user)
    assert body["customer_id"] == user
    assert body["profile"]["traits"] == {"age": 35}
    assert body["profile"]["event_count"] == 2
    view = body["view"]
    assert set(view["interest"]) == set(live_server.engine.catalog.topics)
    assert view["interest"]["mortgage"]["count_14d"] == 1
    assert view["interest"]["mortgage"]["total"] == 1
    assert view["profile"]["age"] == 35
    assert view["profile"]["lifecycle"] == "family"
    assert "context" not in view
    assert "now" not in view

    admin = http.get(f"/v1/profiles/{user}", auth=(ADMIN_KEY, ""))
    assert admin.status_code == 200
    assert_error(http.get("/v1/profiles/nobody", auth=(SERVER_KEY, "")), 404, "not_found")


def test_admin_routes_need_an_admin_key(live_server: LiveServer, http: httpx.Client):
    resp = http.get("/v1/admin/catalog", auth=(ADMIN_KEY, ""))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["version"] == live_server.engine.catalog.version
    assert {p["id"] for p in body["catalog"]["placements"]} >= {"home_feed", "home_hero"}
    for key in (SERVER_KEY, WRITE_KEY, BROWSER_KEY):
        assert_error(http.get("/v1/admin/catalog", auth=(key, "")), 403, "forbidden")
    assert_error(http.get("/v1/admin/catalog"), 401, "unauthorized")

    snap = http.post("/v1/admin/snapshot", auth=(ADMIN_KEY, ""))
    assert snap.status_code == 200, snap.text
    assert snap.json() == {"success": True, "profiles": 0}
    assert_error(http.post("/v1/admin/snapshot", auth=(SERVER_KEY, "")), 403, "forbidden")


def test_public_routes_need_no_key(live_server: LiveServer, http: httpx.Client):
    health = http.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "catalog": live_server.engine.catalog.version,
        "clock": "wall",
    }
    doc = http.get("/openapi.json")
    assert doc.status_code == 200
    assert doc.json()["openapi"] == "3.1.0"
    # a wrong key on a public route does not matter
    assert http.get("/healthz", auth=("nope", "")).status_code == 200


def test_openapi_lists_every_route_with_its_scope(http: httpx.Client):
    doc = http.get("/openapi.json").json()
    listed = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    assert listed == {(r.path, r.method) for r in ROUTES}
    for r in ROUTES:
        op = doc["paths"][r.path][r.method.lower()]
        assert op["x-scope"] == r.scope.value
        assert op["summary"] == r.summary
        if r.scope is Scope.PUBLIC:
            assert "security" not in op
        else:
            assert op["security"] == [{"basic": []}, {"bearer": []}]
        assert op["responses"]["4XX"]["content"]["application/json"]["schema"]
        if r.reads_body:
            assert op["requestBody"]["required"] is not r.optional_body
    assert set(doc["components"]["securitySchemes"]) == {"basic", "bearer"}


def test_route_table_covers_every_route_the_app_serves(live_server: LiveServer):
    app = create_app(live_server.engine, live_server.settings)
    served = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        assert route.methods is not None
        served |= {(route.path, m) for m in route.methods - {"HEAD"}}
    assert served == {(r.path, r.method) for r in ROUTES}
    assert len(ROUTES) == len({(r.path, r.method) for r in ROUTES})
    for r in ROUTES:
        assert isinstance(r.scope, Scope)


def test_every_route_enforces_its_scope_for_every_key_kind(
    live_server: LiveServer, http: httpx.Client
):
    """No key -> 401 on every non-public route; a key without the scope -> 403; with it,
    never 401/403 (an empty body then fails validation instead)."""
    for r in ROUTES:
        path = r.path.replace("{user_id}", "nobody").replace("{decision_id}", "none")
        anonymous = http.request(r.method, path)
        if r.scope is Scope.PUBLIC:
            assert anonymous.status_code == 200, (r.path, anonymous.text)
        else:
            assert_error(anonymous, 401, "unauthorized")
        for kind, key in KEYS.items():
            resp = http.request(r.method, path, auth=(key, ""))
            allowed = r.scope in Sender(kind).scopes
            if allowed:
                assert resp.status_code not in (401, 403), (r.path, kind, resp.text)
            else:
                assert_error(resp, 403, "forbidden")
    assert live_server.engine.event_log.count() == 0


# ---------------------------------------------------------------------- browser key, tokens


def _decided_for(server: LiveServer, answer: httpx.Response) -> str:
    """Whom a decision was made for, from the decision log (a browser key's answer says
    only what the page renders)."""
    logged = server.engine.decision(answer.json()["decision_id"])
    assert logged is not None
    return logged.customer_id


def test_browser_key_sends_and_decides_for_an_anonymous_session(
    live_server: LiveServer, http: httpx.Client
):
    resp = send(http, body_of(msg("page", anon="cookie-1")), key=BROWSER_KEY)
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(1)
    d = decide(http, key=BROWSER_KEY, placement="home_feed", anonymousId="cookie-1")
    assert d.status_code == 200, d.text
    assert _decided_for(live_server, d) == "anon:cookie-1"


def test_browser_key_with_user_id_needs_a_customer_token(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user()
    # one anonymous message and one for a userId: the whole batch is refused
    body = body_of(msg("page", anon="cookie-1"), msg("track", user=user, event="Clicked"))
    err = assert_error(send(http, body, key=BROWSER_KEY), 403, "forbidden")
    assert "$.batch[1].userId" in err["message"]
    single = {"userId": user, "event": "Clicked"}
    assert_error(
        send(http, orjson.dumps(single), key=BROWSER_KEY, path="/v1/track"), 403, "forbidden"
    )
    assert_error(
        decide(http, key=BROWSER_KEY, placement="home_feed", userId=user), 403, "forbidden"
    )
    assert live_server.engine.event_log.count() == 0

    bound = token(user)
    resp = send(http, body, key=BROWSER_KEY, headers=bound)
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(2)
    d = decide(http, key=BROWSER_KEY, headers=bound, placement="home_feed", userId=user)
    assert d.status_code == 200, d.text
    assert _decided_for(live_server, d) == user
    assert live_server.engine.event_log.count() == 2


def test_customer_token_for_another_user_is_403(live_server: LiveServer, http: httpx.Client):
    victim, attacker = fresh_user("victim"), fresh_user("attacker")
    theirs = token(attacker)
    body = body_of(msg("track", user=victim, event="Clicked"))
    assert_error(send(http, body, key=BROWSER_KEY, headers=theirs), 403, "forbidden")
    assert_error(
        decide(http, key=BROWSER_KEY, headers=theirs, placement="home_feed", userId=victim),
        403,
        "forbidden",
    )
    assert_error(
        decide(http, key=WRITE_KEY, headers=theirs, placement="home_feed", userId=victim),
        403,
        "forbidden",
    )
    assert live_server.engine.event_log.count() == 0


@pytest.mark.parametrize(
    "bad_token",
    [
        lambda user: mint_customer_token("not-the-secret", user, now() + 3600),
        lambda user: mint_customer_token(TOKEN_SECRET, user, now() - 60),
        lambda user: mint_customer_token(TOKEN_SECRET, user, now() + 3600)[:-2] + "xx",
        lambda user: "garbage",
    ],
    ids=["forged", "expired", "tampered signature", "malformed"],
)
def test_forged_or_expired_customer_token_is_401(
    live_server: LiveServer, http: httpx.Client, bad_token: Callable[[str], str]
):
    user = fresh_user()
    headers = {"X-Customer-Token": bad_token(user)}
    body = body_of(msg("track", user=user, event="Clicked"))
    assert_error(send(http, body, key=BROWSER_KEY, headers=headers), 401, "unauthorized")
    assert_error(
        decide(http, key=BROWSER_KEY, headers=headers, placement="home_feed", userId=user),
        401,
        "unauthorized",
    )
    assert live_server.engine.event_log.count() == 0


def test_token_for_a_dotted_user_id_binds_exactly_that_id(http: httpx.Client):
    """``user.expires.sig``: a userId containing dots binds exactly that userId."""
    dotted = "a.b"
    headers = token(dotted)
    resp = decide(http, key=BROWSER_KEY, headers=headers, placement="home_feed", userId=dotted)
    assert resp.status_code == 200, resp.text
    assert_error(
        decide(http, key=BROWSER_KEY, headers=headers, placement="home_feed", userId="a"),
        403,
        "forbidden",
    )


def test_write_key_sends_for_anyone_but_decides_only_with_a_token(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user()
    resp = send(http, body_of(msg("track", user=user, event="Clicked")), key=WRITE_KEY)
    assert resp.status_code == 200, resp.text
    assert_error(decide(http, key=WRITE_KEY, placement="home_feed", userId=user), 403, "forbidden")
    d = decide(http, key=WRITE_KEY, headers=token(user), placement="home_feed", userId=user)
    assert d.status_code == 200, d.text
    anon = decide(http, key=WRITE_KEY, placement="home_feed", anonymousId="cookie-9")
    assert anon.status_code == 200, anon.text


def test_server_and_admin_keys_decide_for_anyone(http: httpx.Client):
    for key in (SERVER_KEY, ADMIN_KEY):
        resp = decide(http, key=key, placement="home_feed", userId=fresh_user())
        assert resp.status_code == 200, resp.text


def test_browser_key_cannot_alias_another_customers_user_id_into_its_session(
    live_server: LiveServer, http: httpx.Client
):
    """A browser session bound to the attacker must not pull a victim's history into its own
    profile with ``alias(previousId=victim)``: decide would then reveal the victim's
    interests to the attacker (and the victim's own decisions would resolve to the
    attacker's profile)."""
    victim, attacker = fresh_user("victim"), fresh_user("attacker")
    history = [
        msg("page", user=victim, properties={"url": "https://bank.example/mortgages/x"})
        for _ in range(3)
    ]
    assert send(http, body_of(*history), key=SERVER_KEY).status_code == 200
    before = live_server.engine.event_log.count()

    hijack = body_of(msg("alias", user=attacker, previousId=victim))
    resp = send(http, hijack, key=BROWSER_KEY, headers=token(attacker))
    assert_error(resp, 403, "forbidden")
    assert live_server.engine.event_log.count() == before
    assert live_server.engine.resolve(victim, None) == victim
    attacker_profile = live_server.engine.profile(attacker)
    assert attacker_profile is None or "mortgage" not in attacker_profile.interests


# ---------------------------------------------------------------------- decide


def _mortgage_researcher(http: httpx.Client, user: str) -> None:
    t = now()
    views = [
        msg(
            "page",
            user=user,
            at=t - (i + 1) * 2 * DAY,
            properties={"url": f"https://bank.example/mortgages/page-{i}"},
        )
        for i in range(5)
    ]
    resp = send(http, body_of(msg("identify", user=user, traits={"age": 35}), *views))
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(6)


def _greedy_decision(
    server: LiveServer, http: httpx.Client, **body: Any
) -> tuple[dict[str, Any], dict[str, bool]]:
    """A decision that explored nothing, with which campaigns were explorable when it was
    made. A learning placement may explore from a fresh server's very first decision
    (Thompson sampling, by the random decision id: a mortgage researcher's home_feed places
    every item where the greedy order does in about two decisions of three), so decide again
    until one did."""
    learner = server.engine.learner
    for _ in range(40):
        explorable = {c: b.explorable(c) for c, b in learner.budgets.items()}
        resp = decide(http, **body)
        assert resp.status_code == 200, resp.text
        d: dict[str, Any] = resp.json()
        if not any(i["explored"] for i in d["items"]):
            return d, explorable
    raise AssertionError("forty decisions in a row explored")


def test_decide_ranks_mortgage_advice_first_with_its_reasons(
    live_server: LiveServer, http: httpx.Client
):
    user = user_in_arm(Arm.TREATMENT)
    _mortgage_researcher(http, user)
    d, explorable = _greedy_decision(live_server, http, placement="home_feed", userId=user)
    assert isinstance(d["decision_id"], str)
    assert d["decision_id"]
    assert d["customer_id"] == user
    assert d["placement"] == "home_feed"
    assert d["catalog_version"] == live_server.engine.catalog.version
    assert "excluded" not in d
    assert {"mortgage_intent", "adult"} <= set(d["segments"])
    assert 1 <= len(d["items"]) <= 3
    first = d["items"][0]
    assert first["offer_id"] == "mortgage_advice"
    assert first["position"] == 1
    assert first["campaign_id"] == "mortgage_q4"
    assert first["arm"] == "treatment"
    assert first["kind"] == "commercial"
    # Thompson sampling from the first decision: the propensity is the share of the
    # decision's 200 posterior samples that rank the item first (1 when its campaign is
    # over its exploration share: pinned)
    campaign = live_server.engine.catalog.offers["mortgage_advice"].campaign
    assert campaign is not None
    shares = first["propensity"] * 200
    assert shares == pytest.approx(round(shares))
    assert first["propensity"] == 1.0 or explorable[campaign.id]
    assert 1 / 200 <= first["propensity"] <= 1.0
    assert first["propensity_kind"] == "exact"
    assert first["explored"] is False
    assert first["content"]["title"] == "Talk to a mortgage advisor"
    texts = [r["text"] for r in first["reasons"]]
    assert "viewed mortgage pages 5 times in 14 days" in texts
    assert "in segment 'Mortgage intent'" in texts
    assert [i["position"] for i in d["items"]] == list(range(1, len(d["items"]) + 1))
    scores = [i["score"] for i in d["items"] if i["kind"] == "commercial"]
    assert scores == sorted(scores, reverse=True)


def test_decide_control_arm_withholds_the_campaign_offer(http: httpx.Client):
    user = user_in_arm(Arm.CONTROL)
    _mortgage_researcher(http, user)
    resp = decide(http, placement="home_feed", userId=user, explain=True)
    assert resp.status_code == 200, resp.text
    d = resp.json()
    assert "mortgage_advice" not in [i["offer_id"] for i in d["items"]]
    assert "mortgage_advice" in d["control"]
    assert {"offer_id": "mortgage_advice", "why": "control_group"} in d["excluded"]


def test_decide_explain_adds_excluded(live_server: LiveServer, http: httpx.Client):
    user = user_in_arm(Arm.TREATMENT)
    _mortgage_researcher(http, user)
    d, _ = _greedy_decision(live_server, http, placement="home_feed", userId=user, explain=True)
    excluded = {e["offer_id"]: e["why"] for e in d["excluded"]}
    assert excluded["overdraft_warning"] == "ineligible"
    assert excluded["car_loan_offer"] == "ineligible"
    assert "mortgage_advice" not in excluded


def test_decide_input_errors(http: httpx.Client):
    assert_error(decide(http, placement="front_door", userId="u"), 404, "unknown_placement")
    assert_error(
        decide(http, placement="home_feed", userId="u", limit=4), 400, "validation_error", "$.limit"
    )
    assert_error(
        decide(http, placement="home_hero", userId="u", limit=2), 400, "validation_error", "$.limit"
    )
    assert_error(
        decide(http, placement="home_feed", userId="u", limit=0), 400, "validation_error", "$.limit"
    )
    assert_error(
        decide(http, placement="home_feed", userId="u", limit=True),
        400,
        "validation_error",
        "$.limit",
    )
    err = assert_error(
        decide(http, placement="home_feed", userId="u", colour="red"), 400, "validation_error", "$"
    )
    assert "colour" in err["message"]
    assert_error(decide(http, placement="home_feed"), 400, "validation_error", "$.userId")
    assert_error(decide(http, userId="u"), 400, "validation_error", "$.placement")
    bad_json = http.post("/v1/decide", content=b"{", auth=(SERVER_KEY, ""), headers=JSON)
    assert_error(bad_json, 400, "validation_error", "$")


def test_decide_limit_caps_the_items(live_server: LiveServer, http: httpx.Client):
    user = user_in_arm(Arm.TREATMENT)
    _mortgage_researcher(http, user)
    d, _ = _greedy_decision(
        live_server, http, placement="home_feed", userId=user, limit=1, explain=True
    )
    assert [i["offer_id"] for i in d["items"]] == ["mortgage_advice"]
    assert any(e["why"] == "outranked" for e in d["excluded"])


def test_decision_is_logged_and_readable_with_a_server_key(
    live_server: LiveServer, http: httpx.Client
):
    user = user_in_arm(Arm.TREATMENT)
    _mortgage_researcher(http, user)
    d = decide(http, placement="home_feed", userId=user).json()
    did = d["decision_id"]

    deadline = time.monotonic() + 3
    while live_server.engine.decision_log.decision(did) is None:
        assert time.monotonic() < deadline, "the flusher never wrote the decision"
        time.sleep(0.02)

    resp = http.get(f"/v1/decisions/{did}", auth=(SERVER_KEY, ""))
    assert resp.status_code == 200, resp.text
    logged = resp.json()
    assert logged["decision_id"] == did
    assert logged["customer_id"] == user
    assert logged["items"] == d["items"]
    assert logged["segments"] == d["segments"]
    assert "excluded" in logged  # the log keeps what explain would show
    for key in (WRITE_KEY, BROWSER_KEY):
        assert_error(http.get(f"/v1/decisions/{did}", auth=(key, "")), 403, "forbidden")
    assert_error(http.get("/v1/decisions/unknown", auth=(SERVER_KEY, "")), 404, "not_found")


def test_promotion_viewed_feedback_lands_in_offer_history(
    live_server: LiveServer, http: httpx.Client
):
    user = user_in_arm(Arm.TREATMENT)
    _mortgage_researcher(http, user)
    did = decide(http, placement="home_feed", userId=user).json()["decision_id"]
    viewed = msg(
        "track",
        user=user,
        event="Promotion Viewed",
        properties={"promotion_id": "mortgage_advice", "decision_id": did},
    )
    resp = send(http, body_of(viewed))
    assert resp.status_code == 200, resp.text
    assert resp.json() == ok(1)

    body = profile_json(http, user)
    history = body["profile"]["offers"]["mortgage_advice"]
    assert history["total_impressions"] == 1
    assert len(history["impressions"]) == 1
    assert history["last_decision_id"] == did
    assert history["total_clicks"] == 0
    assert body["view"]["offers"]["mortgage_advice"]["impressions_7d"] == 1
    assert [r[1:3] for r in body["profile"]["recent"]][-1] == ["track", "Promotion Viewed"]

    missing = msg("track", user=user, event="Promotion Clicked", properties={"decision_id": did})
    assert_quarantined(
        send(http, body_of(missing)),
        0,
        [(0, "missing_property", "$.batch[0].properties.promotion_id")],
    )


def test_admin_lists_and_replays_the_quarantine(
    live_server: LiveServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
):
    bad = msg("track", user="q-user", event="Life Event", properties={"type": 3})
    assert_quarantined(
        send(http, body_of(bad)), 0, [(0, "wrong_type", "$.batch[0].properties.type")]
    )
    assert http.get("/v1/admin/quarantine", auth=(WRITE_KEY, "")).status_code == 403
    listed = http.get("/v1/admin/quarantine?limit=10", auth=(ADMIN_KEY, ""))
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["held"] == 1
    (held,) = body["messages"]
    assert (held["code"], held["path"], held["sender"]) == (
        "wrong_type",
        "$.batch[0].properties.type",
        "write",
    )
    assert held["event"]["message_id"] == bad["messageId"]
    assert_error(
        http.get("/v1/admin/quarantine?limit=x", auth=(ADMIN_KEY, "")),
        400,
        "validation_error",
        "$.query.limit",
    )
    from nextbest.events import names

    monkeypatch.setitem(names.KNOWN_EVENTS, "Life Event", {})
    replayed = http.post("/v1/admin/quarantine/replay", auth=(ADMIN_KEY, ""))
    assert replayed.json() == {"replayed": 1, "duplicates": 0, "still_held": []}
    assert live_server.engine.profile("q-user") is not None
