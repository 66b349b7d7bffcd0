"""A server on event time (``--clock event``) over real HTTP: now is the latest accepted event
timestamp, a server key may say when a decision is taken (``context.now``), nobody else may,
and a wall-clock server refuses it; a view's miss is learned when event time passes its click
window, not wall time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from msgspec import convert

from nextbest.clock import ClockKind
from nextbest.decide.model import Decision
from tests.conftest import LiveServer
from tests.support import (
    BROWSER_KEY,
    DAY,
    SERVER_KEY,
    T0,
    WRITE_KEY,
    feedback,
    identify,
    iso,
    page,
    treated_everywhere,
)

#: event time here is a past autumn, whatever the wall clock says
PAST = T0 - 30 * DAY


def _post(server: LiveServer, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    return httpx.post(
        server.url + path,
        content=orjson.dumps(body),
        auth=(key, ""),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def _decide(server: LiveServer, user: str, key: str = SERVER_KEY, **context: Any) -> httpx.Response:
    body = {"placement": "home_feed", "userId": user, "context": context, "explain": True}
    return _post(server, "/v1/decide", body, key)


def _send(server: LiveServer, *messages: dict[str, Any]) -> httpx.Response:
    return _post(server, "/v1/batch", {"batch": list(messages)}, WRITE_KEY)


@pytest.fixture
def event_server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(clock=ClockKind.EVENT)


def test_now_is_the_latest_event_time_and_never_moves_back(event_server: LiveServer) -> None:
    server = event_server
    assert httpx.get(server.url + "/healthz").json()["clock"] == "event"
    user = treated_everywhere("ev")
    sent = _send(
        server,
        identify({"age": 40}, user=user, at=PAST),
        page("https://bank.example/mortgages", user=user, at=PAST + 60),
    )
    assert sent.status_code == 200, sent.text
    decided = _decide(server, user)
    assert decided.status_code == 200, decided.text
    assert decided.json()["timestamp"] == PAST + 60
    # an older event is accepted (folded at its own time) but does not move now back
    assert _send(server, page("https://bank.example/cards", user=user, at=PAST)).status_code == 200
    assert _decide(server, user).json()["timestamp"] == PAST + 60
    assert server.engine.profile(user).interests["cards"].total == 1  # type: ignore[union-attr]
    view = httpx.get(server.url + f"/v1/profiles/{user}", auth=(SERVER_KEY, "")).json()
    assert view["as_of"] == PAST + 60
    # the interest seen from a month later: the 14-day window is empty, not from the wall
    later = _decide(server, user, now=iso(PAST + 60 + 20 * DAY)).json()
    assert later["timestamp"] == PAST + 60 + 20 * DAY
    # a decision's own time does not move the watermark: only events do
    assert _decide(server, user).json()["timestamp"] == PAST + 60


def test_only_server_keys_set_the_time_and_only_on_event_time(
    event_server: LiveServer, live_server: LiveServer
) -> None:
    user = "who-decides-when"
    at = iso(PAST)
    for key in (BROWSER_KEY, WRITE_KEY):
        refused = _decide(event_server, user, key=key, now=at)
        assert refused.status_code == 403, refused.text
        assert "$.context.now" in refused.json()["message"]
    wall = _decide(live_server, user, now=at)
    assert wall.status_code == 400
    assert wall.json()["path"] == "$.context.now"
    assert "wall clock" in wall.json()["message"]
    for bad, reason in (
        ("yesterday", "not an ISO 8601"),
        (12345, "string"),
        ("2026-06-01T10:00:00", "UTC offset"),
        ("1999-12-31T00:00:00Z", "before 2000"),
        ("2999-01-01T00:00:00Z", "future"),
    ):
        resp = _decide(event_server, user, now=bad)
        assert resp.status_code == 400, (bad, resp.text)
        assert resp.json()["path"] == "$.context.now"
        assert reason in resp.json()["message"]
    # nothing was decided by a refused request
    assert event_server.engine.pending_decisions() == []


def test_messages_need_their_time_on_event_time(event_server: LiveServer) -> None:
    message = page("https://bank.example/", user="untimed")
    del message["timestamp"]
    resp = _send(event_server, identify({}, user="untimed", at=PAST), message)
    assert resp.status_code == 400
    assert resp.json()["path"] == "$.batch[1].timestamp"
    assert event_server.engine.event_log.count() == 0


def test_a_view_is_learned_as_a_miss_when_event_time_passes_its_window(
    event_server: LiveServer,
) -> None:
    server = event_server
    user = treated_everywhere("miss")
    assert _send(server, identify({"age": 35}, user=user, at=PAST)).status_code == 200
    decision = _decide(server, user, now=iso(PAST + 1)).json()
    assert decision["items"], decision
    shown = convert(decision, Decision)
    viewed = feedback(shown, at=PAST + 2)
    assert _send(server, viewed).status_code == 200
    learned = server.engine.learner.learned
    assert server.engine.pending_views == 1
    # 29 minutes of event time later the view still waits for its click
    assert _send(server, page("https://bank.example/", user=user, at=PAST + 29 * 60)).is_success
    assert server.engine.pending_views == 1
    # past the 30-minute window (event time, whatever the wall clock did): learned as a miss
    assert _send(server, page("https://bank.example/", user=user, at=PAST + 31 * 60)).is_success
    assert server.engine.pending_views == 0
    assert server.engine.learner.learned == learned + 1
