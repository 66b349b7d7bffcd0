"""No client can stall or flood the others, against a real server: a key or a browser session
over its rate gets 429 with Retry-After while everyone else is served, and a decision never
runs on the event loop."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson

from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, decide, ok, send, token
from tests.support import BROWSER_KEY, SERVER_KEY, WRITE_KEY


def assert_rate_limited(resp: httpx.Response, longest: int) -> str:
    err = assert_error(resp, 429, "rate_limited")
    wait = resp.headers["retry-after"]
    assert wait.isdigit(), wait  # whole seconds, as HTTP says
    assert 1 <= int(wait) <= longest
    assert resp.headers["x-ratelimit-reset"] == wait  # what analytics.js's batching reads
    assert f"retry in {wait} s" in err["message"]
    return str(err["message"])


def test_a_key_over_its_rate_gets_429_while_other_keys_are_served(start_server):
    server = start_server(key_rate=0.1, key_burst=3)  # 3 at once, then one per 10 s
    with httpx.Client(base_url=server.url, timeout=10) as http:
        user = fresh_user("flood")
        for _ in range(3):
            resp = send(http, body_of(msg("track", user=user, event="Clicked")))
            assert resp.json() == ok(1)
        over = send(http, body_of(msg("track", user=user, event="Clicked")))
        message = assert_rate_limited(over, 10)
        assert "this key is over its rate of 0.1 requests a second" in message
        assert server.engine.event_log.count() == 3  # the refused batch was not read
        # every other key has its own bucket
        served = decide(http, key=SERVER_KEY, placement="home_feed", userId=user)
        assert served.status_code == 200, served.text
        page = send(http, body_of(msg("page", anon="d-1")), key=BROWSER_KEY)
        assert page.json() == ok(1)
        # and a decision counts against its key like an event
        assert_rate_limited(decide(http, key=WRITE_KEY, placement="home_feed", anonymousId="x"), 10)


def test_a_browser_session_over_its_rate_is_limited_alone(start_server):
    """A browser key serves the whole site, so each session (an anonymousId, or the user of
    a customer token) has its own, smaller rate."""
    server = start_server(session_rate=0.1, session_burst=2)
    with httpx.Client(base_url=server.url, timeout=10) as http:

        def ask(**body: Any) -> httpx.Response:
            return decide(http, key=BROWSER_KEY, placement="home_feed", **body)

        assert send(http, body_of(msg("page", anon="dev-a")), key=BROWSER_KEY).json() == ok(1)
        assert ask(anonymousId="dev-a").status_code == 200
        message = assert_rate_limited(ask(anonymousId="dev-a"), 10)
        assert "this anonymousId is over the browser session rate of 0.1" in message
        assert ask(anonymousId="dev-b").status_code == 200
        # a batch naming a limited device is refused whole, nothing stored
        both = body_of(msg("page", anon="dev-c"), msg("page", anon="dev-a"))
        assert_rate_limited(send(http, both, key=BROWSER_KEY), 10)
        assert server.engine.event_log.count() == 1
        # a logged-in customer is one session, whatever the device
        user, other = fresh_user("busy"), fresh_user("calm")
        for anon in ("phone", "laptop"):
            assert ask(userId=user, anonymousId=anon, headers=token(user)).status_code == 200
        limited = ask(userId=user, anonymousId="tablet", headers=token(user))
        assert "this customer is over" in assert_rate_limited(limited, 10)
        assert ask(userId=other, headers=token(other)).status_code == 200
        # the bank's own servers are not browser sessions
        for _ in range(3):
            resp = decide(http, key=SERVER_KEY, placement="home_feed", anonymousId="dev-a")
            assert resp.status_code == 200, resp.text


def test_a_page_posting_as_analytics_js_is_limited_by_its_body_key(start_server):
    server = start_server(key_rate=0.1, key_burst=1)
    body = orjson.dumps({"writeKey": BROWSER_KEY, "batch": [msg("page", anon="d-9")]})
    post = {"content": body, "headers": {"Content-Type": "text/plain"}}
    assert httpx.post(f"{server.url}/v1/batch", **post).json() == ok(1)
    assert_rate_limited(httpx.post(f"{server.url}/v1/batch", **post), 10)


def test_a_slow_decision_does_not_hold_the_event_loop(live_server: LiveServer, monkeypatch):
    """The review: a decide waiting for the engine's lock froze the process (``/healthz``
    blocked 7.5 s). A decision that cannot finish until ``/healthz`` and an event have been
    served shows that it waits in the threadpool, not on the loop."""
    entered, release = threading.Event(), threading.Event()
    decide_as = live_server.engine.decide_as

    def slow_decide_as(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30), "never released"
        return decide_as(*args, **kwargs)

    monkeypatch.setattr(live_server.engine, "decide_as", slow_decide_as)
    url = live_server.url
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.post,
            f"{url}/v1/decide",
            json={"userId": "u-slow", "placement": "home_feed"},
            auth=(SERVER_KEY, ""),
            timeout=60,
        )
        assert entered.wait(10)
        try:
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            sent = httpx.post(
                f"{url}/v1/track",
                json={"userId": "u-other", "event": "Clicked"},
                auth=(WRITE_KEY, ""),
                timeout=10,
            )
            assert sent.json() == ok(1)
        finally:
            release.set()
        assert pending.result().status_code == 200
