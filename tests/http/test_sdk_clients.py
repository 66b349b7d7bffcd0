"""Real Segment-compatible SDKs, unchanged, pointed at a real uvicorn server.

``segment-analytics-python`` (``segment.analytics``) and ``rudder-sdk-python``
(``rudderstack.analytics``) send exactly what they send to their own clouds; nextbest must
store every message, fold it into the profile and answer in the shape each client reads.
The only thing patched is an observing wrapper around each consumer's ``post`` function, to
count attempts and prove there were no retries; the request itself is the SDK's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rudderstack.analytics as rudder_analytics
import rudderstack.analytics.consumer as rudder_consumer
import segment.analytics as segment_analytics
import segment.analytics.consumer as segment_consumer
from rudderstack.analytics import Client as RudderClient
from rudderstack.analytics.request import APIError as RudderAPIError
from segment.analytics import Client as SegmentClient
from segment.analytics.request import APIError as SegmentAPIError

from nextbest.events.model import EventType
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, now
from tests.support import WRITE_KEY

MORTGAGE_URL = "https://bank.example/mortgages/rates"
ALL_KINDS = Counter(
    {
        EventType.IDENTIFY: 1,
        EventType.TRACK: 2,
        EventType.PAGE: 1,
        EventType.SCREEN: 1,
        EventType.GROUP: 1,
        EventType.ALIAS: 1,
    }
)


class Errors(list[tuple[Exception, Any]]):
    """An ``on_error`` callback that keeps what the client reports."""

    def __call__(self, error: Exception, batch: Any) -> None:
        self.append((error, batch))

    def __bool__(self) -> bool:  # the SDKs test ``if self.on_error:``; an empty list is falsy
        return True


class Attempts(list[dict[str, Any]]):
    """Every POST a consumer thread makes: its messages, retry count, options and status."""


@pytest.fixture
def segment_attempts(monkeypatch: pytest.MonkeyPatch) -> Attempts:
    attempts = Attempts()
    real = segment_consumer.post

    def observed(*args: Any, **kwargs: Any) -> Any:
        entry = {
            "messages": list(kwargs["batch"]),
            "retry_count": kwargs.get("retry_count", 0),
            "gzip": kwargs.get("gzip"),
        }
        attempts.append(entry)
        response = real(*args, **kwargs)
        entry["status"] = response.status_code
        entry["body"] = response.json()
        return response

    monkeypatch.setattr(segment_consumer, "post", observed)
    return attempts


@pytest.fixture
def rudder_attempts(monkeypatch: pytest.MonkeyPatch) -> Attempts:
    attempts = Attempts()
    real = rudder_consumer.post

    def observed(*args: Any, **kwargs: Any) -> Any:
        entry = {"messages": list(kwargs["batch"]), "gzip": kwargs.get("gzip")}
        attempts.append(entry)
        response = real(*args, **kwargs)
        entry["status"] = response.status_code
        entry["body"] = response.json()
        return response

    monkeypatch.setattr(rudder_consumer, "post", observed)
    return attempts


Sdk = SegmentClient | RudderClient


@pytest.fixture
def shutdown() -> Iterator[Callable[[Sdk], Sdk]]:
    """Stop every asynchronous client's consumer thread after the test."""
    clients: list[Sdk] = []

    def track(client: Sdk) -> Sdk:
        clients.append(client)
        return client

    yield track
    for client in clients:
        client.shutdown()


def send_everything(client: Sdk, user: str, old_id: str) -> list[Any]:
    """identify, track, page, screen, group and alias through the SDK's public API."""
    return [
        client.identify(
            user_id=user, anonymous_id="device-7", traits={"age": 35, "email": "x@bank.example"}
        ),
        client.track(
            user_id=user,
            event="Transaction Posted",
            properties={"amount": 42.5, "currency": "EUR", "balance": 1200},
        ),
        client.page(
            user_id=user, name="Mortgage rates", properties={"url": MORTGAGE_URL, "title": "Rates"}
        ),
        client.screen(user_id=user, name="Home", properties={"tab": "overview"}),
        client.group(user_id=user, group_id="household-1", traits={"members": 3}),
        client.track(user_id=old_id, event="Products Searched", properties={"query": "mortgage"}),
        client.alias(previous_id=old_id, user_id=user),
    ]


def assert_everything_stored(server: LiveServer, user: str, old_id: str) -> None:
    engine = server.engine
    assert engine.event_log.count() == 7
    stored = [s.event for s in engine.event_log.scan()]
    assert Counter(e.type for e in stored) == ALL_KINDS
    for event in stored:
        assert len(event.message_id) == 36  # the SDK's uuid4
        assert abs(event.timestamp - now()) < 60

    profile = engine.profile(user)
    assert profile is not None
    assert engine.profile(old_id) is profile  # alias stitched the old id in
    assert profile.event_count == 7
    assert profile.traits == {"age": 35, "email": "x@bank.example"}
    assert profile.anonymous_ids == ["device-7"]
    assert profile.balance == 1200.0
    assert profile.interests["mortgage"].total == 1
    names = [(r.type, r.name) for r in profile.recent]
    assert ("page", "Mortgage rates") in names
    assert ("screen", "Home") in names
    assert ("track", "Transaction Posted") in names
    assert ("track", "Products Searched") in names
    assert ("group", None) in names
    assert ("alias", None) in names
    group = next(e for e in stored if e.type is EventType.GROUP)
    assert group.group_id == "household-1"
    assert group.traits == {"members": 3}


# ---------------------------------------------------------------------- Segment


def test_segment_sync_client_sends_every_kind(live_server: LiveServer):
    errors = Errors()
    client = SegmentClient(
        write_key=WRITE_KEY, host=live_server.url, sync_mode=True, on_error=errors
    )
    user, old_id = fresh_user("segment"), fresh_user("segment-old")
    results = send_everything(client, user, old_id)
    assert [ok for ok, _ in results] == [True] * 7
    assert list(errors) == []
    assert_everything_stored(live_server, user, old_id)
    sent_ids = {m["messageId"] for _, m in results}
    assert sent_ids == {s.event.message_id for s in live_server.engine.event_log.scan()}


def test_segment_async_gzip_client_succeeds_without_retries(
    live_server: LiveServer, segment_attempts: Attempts, shutdown: Callable[[Sdk], Sdk]
):
    errors = Errors()
    client = shutdown(
        SegmentClient(
            write_key=WRITE_KEY,
            host=live_server.url,
            gzip=True,
            on_error=errors,
            upload_interval=0.05,
        )
    )
    user, old_id = fresh_user("segment"), fresh_user("segment-old")
    results = send_everything(client, user, old_id)
    assert [ok for ok, _ in results] == [True] * 7
    client.flush()

    assert list(errors) == []
    assert segment_attempts, "the consumer never posted"
    for attempt in segment_attempts:
        assert attempt["retry_count"] == 0
        assert attempt["gzip"] is True
        assert attempt["status"] == 200
        assert attempt["body"] == {
            "success": True,
            "accepted": len(attempt["messages"]),
            "duplicates": 0,
            "rejected": [],
        }
    # each message went out exactly once: no retry, nothing dropped
    posted = [m["messageId"] for a in segment_attempts for m in a["messages"]]
    assert sorted(posted) == sorted(m["messageId"] for _, m in results)
    assert_everything_stored(live_server, user, old_id)


def test_segment_module_api(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch):
    errors = Errors()
    monkeypatch.setattr(segment_analytics, "write_key", WRITE_KEY)
    monkeypatch.setattr(segment_analytics, "host", live_server.url)
    monkeypatch.setattr(segment_analytics, "sync_mode", True)
    monkeypatch.setattr(segment_analytics, "on_error", errors)
    monkeypatch.setattr(segment_analytics, "default_client", None)
    user = fresh_user("segment-module")
    segment_analytics.identify(user, {"age": 52})
    segment_analytics.page(user, properties={"url": "https://bank.example/pension/check"})
    assert list(errors) == []
    assert live_server.engine.event_log.count() == 2
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.traits == {"age": 52}
    assert profile.interests["pension"].total == 1


def test_segment_client_reads_a_precise_400_and_stores_nothing(live_server: LiveServer):
    client = SegmentClient(write_key=WRITE_KEY, host=live_server.url, sync_mode=True)
    with pytest.raises(SegmentAPIError) as caught:
        client.track(user_id="u", event="Clicked\u0000", properties={"currency": "EUR"})
    assert caught.value.status == 400
    assert caught.value.code == "validation_error"
    assert caught.value.message == "control character U+0000 at offset 7"
    assert caught.value.response.json()["path"] == "$.batch[0].event"
    assert live_server.engine.event_log.count() == 0


def test_segment_client_keeps_the_good_events_of_a_batch_with_a_bad_one(
    live_server: LiveServer, segment_attempts: Attempts, shutdown: Callable[[Sdk], Sdk]
):
    """A message that breaks the bank's vocabulary is quarantined alone: the SDK sees a 200
    and drops nothing else."""
    errors = Errors()
    client = shutdown(
        SegmentClient(
            write_key=WRITE_KEY, host=live_server.url, on_error=errors, upload_interval=0.05
        )
    )
    client.track(user_id="u", event="Clicked")
    client.track(user_id="u", event="Application Started", properties={"step": 1})
    client.page(user_id="u", properties={"url": MORTGAGE_URL})
    client.flush()
    assert list(errors) == []
    (attempt,) = segment_attempts
    assert attempt["status"] == 200
    assert attempt["body"]["accepted"] == 2
    (rejected,) = attempt["body"]["rejected"]
    assert rejected == {
        "index": 1,
        "code": "missing_property",
        "message": "'Application Started' needs property 'product'",
        "path": "$.batch[1].properties.product",
    }
    assert live_server.engine.event_log.count() == 2
    (held,) = live_server.engine.quarantined()
    assert held.event.name == "Application Started"


def test_segment_async_client_does_not_retry_a_wrong_key(
    live_server: LiveServer, segment_attempts: Attempts, shutdown: Callable[[Sdk], Sdk]
):
    errors = Errors()
    client = shutdown(
        SegmentClient(
            write_key="not-a-key", host=live_server.url, on_error=errors, upload_interval=0.05
        )
    )
    client.track(user_id="u", event="Clicked")
    client.flush()
    assert len(segment_attempts) == 1
    assert segment_attempts[0].get("status") is None  # post raised
    assert len(errors) == 1
    error, batch = errors[0]
    assert isinstance(error, SegmentAPIError)
    assert (error.status, error.code) == (401, "unauthorized")
    assert [m["event"] for m in batch] == ["Clicked"]
    assert live_server.engine.event_log.count() == 0


# ---------------------------------------------------------------------- RudderStack


def test_rudder_client_gzips_and_stores_every_kind(
    live_server: LiveServer, rudder_attempts: Attempts, shutdown: Callable[[Sdk], Sdk]
):
    errors = Errors()
    client = shutdown(
        RudderClient(WRITE_KEY, host=live_server.url, on_error=errors, upload_interval=0.05)
    )
    user, old_id = fresh_user("rudder"), fresh_user("rudder-old")
    results = send_everything(client, user, old_id)
    assert [ok for ok, _ in results] == [True] * 7
    client.flush()

    assert list(errors) == []
    assert rudder_attempts, "the consumer never posted"
    for attempt in rudder_attempts:
        assert attempt["gzip"] is True  # Rudder's default
        assert attempt["status"] == 200  # Rudder counts anything else as a failure
        assert attempt["body"]["success"] is True
    posted = [m["messageId"] for a in rudder_attempts for m in a["messages"]]
    assert sorted(posted) == sorted(m["messageId"] for _, m in results)

    identify = next(m for _, m in results if m["type"] == "identify")
    assert "traits" not in identify  # Rudder sends traits only in context.traits
    assert identify["context"]["traits"] == {"age": 35, "email": "x@bank.example"}
    assert identify["channel"] == "server"
    assert identify["integrations"] == {"All": True}
    assert_everything_stored(live_server, user, old_id)


def test_rudder_module_api_with_data_plane_url(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
):
    errors = Errors()
    monkeypatch.setattr(rudder_analytics, "write_key", WRITE_KEY)
    monkeypatch.setattr(rudder_analytics, "dataPlaneUrl", live_server.url)
    monkeypatch.setattr(rudder_analytics, "sync_mode", True)
    monkeypatch.setattr(rudder_analytics, "on_error", errors)
    monkeypatch.setattr(rudder_analytics, "default_client", None)
    user = fresh_user("rudder-module")
    rudder_analytics.identify(user, {"age": 35, "children": 2})
    rudder_analytics.track(user, "Calculator Used", {"topic": "mortgage"})
    rudder_analytics.page(user, properties={"url": MORTGAGE_URL})
    assert rudder_analytics.default_client is not None
    assert rudder_analytics.default_client.host == live_server.url
    assert list(errors) == []
    assert live_server.engine.event_log.count() == 3
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert profile.traits == {"age": 35, "children": 2}
    assert profile.funnel["mortgage"].label == "considering"
    assert profile.interests["mortgage"].total == 2


def test_rudder_client_keeps_the_good_events_of_a_batch_with_a_bad_one(
    live_server: LiveServer, rudder_attempts: Attempts, shutdown: Callable[[Sdk], Sdk]
):
    errors = Errors()
    client = shutdown(
        RudderClient(WRITE_KEY, host=live_server.url, on_error=errors, upload_interval=0.05)
    )
    client.track(user_id="u", event="Clicked")
    client.track(user_id="u", event="Salary Received", properties={"amount": "lots"})
    client.flush()

    assert len(rudder_attempts) == 1
    assert list(errors) == []
    body = rudder_attempts[0]["body"]
    assert (body["accepted"], [r["path"] for r in body["rejected"]]) == (
        1,
        ["$.batch[1].properties.amount"],
    )
    assert live_server.engine.event_log.count() == 1
    assert [h.reason for h in live_server.engine.quarantined()] == [
        "'Salary Received' property 'amount' must be float or int"
    ]


def test_rudder_client_reads_the_error_body_and_does_not_retry_a_400(
    live_server: LiveServer, rudder_attempts: Attempts, shutdown: Callable[[Sdk], Sdk]
):
    errors = Errors()
    client = shutdown(
        RudderClient(WRITE_KEY, host=live_server.url, on_error=errors, upload_interval=0.05)
    )
    client.track(user_id="u", event="Clicked")
    client.track(user_id="u", event="Salary\u0007Received", properties={"amount": 1})
    client.flush()

    assert len(rudder_attempts) == 1
    assert len(errors) == 1
    error, batch = errors[0]
    assert isinstance(error, RudderAPIError)
    assert error.status == 400
    assert error.code == "validation_error"
    assert error.message == "control character U+0007 at offset 6"
    assert [m["event"] for m in batch] == ["Clicked", "Salary\u0007Received"]
    assert live_server.engine.event_log.count() == 0  # the whole batch was refused
