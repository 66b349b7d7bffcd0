"""Events: Segment-spec messages exactly as the SDKs send them, and every way to get one wrong."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from nextbest.errors import InputError, ValidationError
from nextbest.events import (
    KNOWN_EVENTS,
    Event,
    EventName,
    EventType,
    Limits,
    parse_batch,
    parse_message,
)
from nextbest.events.names import OPTIONAL_PROPERTIES
from tests.support import T0

#: when nextbest got the body: five seconds after T0
RECEIVED = T0 + 5.0
DAY = 86_400.0


def body(value: Any) -> bytes:
    return orjson.dumps(value)


def one(msg: dict[str, Any], **limits: int) -> Event:
    """Parse ``msg`` as the single message of a batch."""
    events = parse_batch(body({"batch": [msg]}), RECEIVED, Limits(**limits))
    assert len(events) == 1
    return events[0]


def rejected(
    raw: bytes, kind: EventType | None = None, limits: Limits | None = None
) -> ValidationError:
    """The ValidationError for ``raw`` as a batch body, or as a single ``kind`` body."""
    bounds = limits or Limits()
    if kind is None:
        with pytest.raises(ValidationError) as info:
            parse_batch(raw, RECEIVED, bounds)
    else:
        with pytest.raises(ValidationError) as info:
            parse_message(kind, raw, RECEIVED, bounds)
    return info.value


def iso(ts: float, spec: str = "milliseconds") -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=spec)


#: T0 as the SDKs write it: segment with milliseconds, rudder with microseconds
_T0_TEXT = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:%M:%S")
TS_MS = f"{_T0_TEXT}.123+00:00"
TS_US = f"{_T0_TEXT}.123456+00:00"


def track(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "track",
        "messageId": "m-1",
        "timestamp": iso(T0),
        "userId": "u-1",
        "anonymousId": None,
        "event": "Page Scrolled",
        "properties": {},
    }
    msg.update(over)
    return msg


def nested(depth: int) -> dict[str, Any]:
    """``depth`` dicts inside each other around a leaf: nested(1) == {"k": 1}."""
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


# ------------------------------------------------------------------ SDK shapes, verbatim

#: segment-analytics-python 2.4: explicit nulls, uuid messageId, +00:00 with milliseconds,
#: identify traits at the root; /v1/batch body with sentAt and writeKey.
SEGMENT_BATCH: dict[str, Any] = {
    "batch": [
        {
            "integrations": {},
            "anonymousId": None,
            "timestamp": TS_MS,
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "type": "identify",
            "userId": "u-1",
            "traits": {"age": 30, "email": "a@b.example"},
            "messageId": "5a2c4701-f6d7-4145-ba11-896ebce3423e",
        },
        {
            "integrations": {},
            "anonymousId": None,
            "properties": {"amount": 2500.5, "currency": "EUR"},
            "timestamp": TS_MS,
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "userId": "u-1",
            "type": "track",
            "event": "Transaction Posted",
            "messageId": "416de8a8-061c-4e3c-9927-eb8cc3ef05dd",
        },
        {
            "integrations": {},
            "anonymousId": "a-1",
            "properties": {"url": "https://bank.example/mortgages/rates"},
            "timestamp": TS_MS,
            "category": None,
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "userId": None,
            "type": "page",
            "name": "Mortgage rates",
            "messageId": "b9c36378-6a95-41aa-831d-b06cf5dc38b0",
        },
        {
            "integrations": {},
            "previousId": "a-1",
            "timestamp": TS_MS,
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "userId": "u-1",
            "type": "alias",
            "messageId": "28847725-f471-4778-abfa-f18df65a91f0",
            "anonymousId": None,
        },
    ],
    "sentAt": f"{_T0_TEXT[:-2]}01.456789+00:00",
    "writeKey": "wk",
}

#: rudder-sdk-python 2.1: microseconds, integrations {"All": true}, a root ``channel``,
#: identify traits inside ``context.traits`` only.
RUDDER_BATCH: dict[str, Any] = {
    "batch": [
        {
            "integrations": {"All": True},
            "anonymousId": None,
            "timestamp": TS_US,
            "context": {
                "traits": {"age": 30, "city": "Utrecht"},
                "library": {"name": "analytics-python", "version": "2.1.9"},
            },
            "type": "identify",
            "userId": "u-1",
            "messageId": "fe7e5038-ec34-4fd9-b11a-13356589258f",
            "channel": "server",
        },
        {
            "integrations": {"All": True},
            "anonymousId": None,
            "properties": {"amount": 10},
            "timestamp": TS_US,
            "context": {"library": {"name": "analytics-python", "version": "2.1.9"}},
            "userId": "12345",
            "type": "track",
            "event": "Salary Received",
            "messageId": "dd2fbd5d-aecc-43f7-9927-36072095c3a0",
            "channel": "server",
        },
        {
            "integrations": {"All": True},
            "anonymousId": "a-1",
            "properties": {"url": "https://bank.example/loans/car"},
            "timestamp": TS_US,
            "category": None,
            "context": {"library": {"name": "analytics-python", "version": "2.1.9"}},
            "userId": None,
            "type": "page",
            "name": "Car loan",
            "messageId": "13df90e8-a167-445c-b639-cf4628922a97",
            "channel": "server",
        },
    ],
    "sentAt": f"{_T0_TEXT[:-2]}01.456789+00:00",
}


def test_segment_batch_verbatim() -> None:
    identify, tx, page, alias = parse_batch(body(SEGMENT_BATCH), RECEIVED)

    assert identify.type is EventType.IDENTIFY
    assert identify.message_id == "5a2c4701-f6d7-4145-ba11-896ebce3423e"
    assert identify.user_id == "u-1"
    assert identify.anonymous_id is None
    assert identify.traits == {"age": 30, "email": "a@b.example"}
    assert identify.timestamp == pytest.approx(T0 + 0.123, abs=1e-6)
    assert identify.received_at == RECEIVED
    assert identify.context == {"library": {"name": "analytics-python", "version": "2.4.0"}}

    assert tx.type is EventType.TRACK
    assert tx.name == "Transaction Posted"
    assert tx.properties == {"amount": 2500.5, "currency": "EUR"}
    assert tx.message_id == "416de8a8-061c-4e3c-9927-eb8cc3ef05dd"

    assert page.type is EventType.PAGE
    assert page.user_id is None
    assert page.anonymous_id == "a-1"
    assert page.name == "Mortgage rates"
    assert page.category is None
    assert page.url == "https://bank.example/mortgages/rates"

    assert alias.type is EventType.ALIAS
    assert alias.previous_id == "a-1"
    assert alias.user_id == "u-1"


def test_rudder_batch_verbatim() -> None:
    identify, salary, page = parse_batch(body(RUDDER_BATCH), RECEIVED)

    assert identify.traits == {"age": 30, "city": "Utrecht"}
    assert identify.timestamp == pytest.approx(T0 + 0.123456, abs=1e-6)
    assert identify.user_id == "u-1"

    assert salary.name == "Salary Received"
    assert salary.user_id == "12345"
    assert salary.properties == {"amount": 10}
    # channel and integrations are accepted and not carried
    assert "channel" not in salary.context
    assert "integrations" not in salary.context

    assert page.anonymous_id == "a-1"
    assert page.url == "https://bank.example/loans/car"
    assert page.timestamp == pytest.approx(T0 + 0.123456, abs=1e-6)


def test_messages_from_the_unchanged_sdks() -> None:
    """The libraries themselves (send=False) produce what nextbest accepts."""
    from rudderstack.analytics.client import Client as RudderClient
    from segment.analytics.client import Client as SegmentClient

    when = datetime.fromtimestamp(T0 + 0.123456, UTC)
    for client in (
        SegmentClient("wk", send=False, sync_mode=True),
        RudderClient("wk", send=False, sync_mode=True),
    ):
        msgs = [
            client.identify("u-1", {"age": 41}, timestamp=when, message_id="i-1")[1],
            client.track(
                user_id=12345,
                event="Salary Received",
                properties={"amount": 3100},
                timestamp=when,
                message_id="t-1",
            )[1],
            client.page(
                anonymous_id="a-1",
                name="Home",
                properties={"url": "https://bank.example/"},
                timestamp=when,
                message_id="p-1",
            )[1],
            client.alias("a-1", "u-1", timestamp=when, message_id="al-1")[1],
        ]
        raw = body({"batch": msgs, "sentAt": iso(T0 + 1, "microseconds")})
        identify, salary, page, alias = parse_batch(raw, RECEIVED)
        assert identify.traits == {"age": 41}
        assert salary.user_id == "12345"
        assert salary.properties == {"amount": 3100}
        assert page.anonymous_id == "a-1"
        assert page.user_id is None
        assert alias.previous_id == "a-1"
        assert [e.message_id for e in (identify, salary, page, alias)] == [
            "i-1",
            "t-1",
            "p-1",
            "al-1",
        ]
        assert identify.timestamp == pytest.approx(T0 + 0.123, abs=0.001)


def test_identify_traits_from_root_and_context_root_wins() -> None:
    msg = {
        "type": "identify",
        "userId": "u-1",
        "timestamp": iso(T0),
        "traits": {"age": 31, "email": "root@b.example"},
        "context": {"traits": {"age": 30, "city": "Utrecht"}},
    }
    event = one(msg)
    assert event.traits == {"age": 31, "email": "root@b.example", "city": "Utrecht"}


def test_identify_context_traits_must_be_an_object_to_count() -> None:
    msg = {
        "type": "identify",
        "userId": "u-1",
        "timestamp": iso(T0),
        "traits": {"age": 31},
        "context": {"traits": "not an object"},
    }
    assert one(msg).traits == {"age": 31}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("userId", 12345, "12345"),
        ("anonymousId", 987, "987"),
        ("userId", "u-1", "u-1"),
    ],
)
def test_numeric_ids_become_text(field: str, value: Any, expected: str) -> None:
    msg = track() | {"userId": None, "anonymousId": None, field: value}
    event = one(msg)
    got = event.user_id if field == "userId" else event.anonymous_id
    assert got == expected
    assert isinstance(got, str)


def test_group_id_numeric_becomes_text() -> None:
    msg = {"type": "group", "userId": "u-1", "groupId": 42, "timestamp": iso(T0)}
    event = one(msg)
    assert event.type is EventType.GROUP
    assert event.group_id == "42"


def test_page_category_from_properties_when_null() -> None:
    msg = {
        "type": "page",
        "anonymousId": "a-1",
        "timestamp": iso(T0),
        "category": None,
        "name": None,
        "properties": {"category": "mortgage"},
    }
    assert one(msg).category == "mortgage"


def test_page_category_is_text_or_none() -> None:
    """Event.category is ``str | None``: a number in properties.category must not leak in
    (the topic matcher calls ``.lower()`` on it and the fold crashes after the append)."""
    msg = {
        "type": "page",
        "anonymousId": "a-1",
        "timestamp": iso(T0),
        "category": None,
        "properties": {"category": 5},
    }
    try:
        category = one(msg).category
        path = None
    except ValidationError as exc:
        category, path = None, exc.path
    assert path in (None, "$.batch[0].properties.category")
    assert category is None or isinstance(category, str)


def test_screen_message() -> None:
    msg = {"type": "screen", "userId": "u-1", "name": "Home", "timestamp": iso(T0)}
    event = one(msg)
    assert event.type is EventType.SCREEN
    assert event.name == "Home"


def test_url_from_context_page() -> None:
    msg = {
        "type": "page",
        "anonymousId": "a-1",
        "timestamp": iso(T0),
        "context": {"page": {"url": "https://bank.example/pension"}},
    }
    assert one(msg).url == "https://bank.example/pension"


def test_batch_context_is_shared_and_message_context_wins() -> None:
    raw = body(
        {
            "batch": [track(context={"ip": "10.0.0.2", "locale": "nl-NL"})],
            "context": {"ip": "10.0.0.1", "library": {"name": "batcher"}},
        }
    )
    (event,) = parse_batch(raw, RECEIVED)
    assert event.context == {"ip": "10.0.0.2", "locale": "nl-NL", "library": {"name": "batcher"}}


def test_unknown_custom_track_events_pass() -> None:
    event = one(track(event="Mortgage Calculator Opened", properties={"anything": [1, "x"]}))
    assert event.name == "Mortgage Calculator Opened"
    assert event.properties == {"anything": [1, "x"]}


# ------------------------------------------------------------------ single-message bodies


def test_single_message_type_is_optional() -> None:
    msg = track()
    del msg["type"]
    event = parse_message(EventType.TRACK, body(msg), RECEIVED)
    assert event.type is EventType.TRACK
    assert event.name == "Page Scrolled"
    assert event.message_id == "m-1"


def test_single_message_with_matching_type() -> None:
    event = parse_message(EventType.TRACK, body(track()), RECEIVED)
    assert event.type is EventType.TRACK


def test_single_message_with_other_type_is_rejected() -> None:
    err = rejected(body(track(type="page")), EventType.TRACK)
    assert err.path == "$.type"


# ------------------------------------------------------------------ time


def test_timestamp_with_milliseconds() -> None:
    event = one(track(timestamp=TS_MS))
    assert event.timestamp == pytest.approx(T0 + 0.123, abs=1e-6)


def test_timestamp_with_microseconds() -> None:
    event = one(track(timestamp=TS_US))
    assert event.timestamp == pytest.approx(T0 + 0.123456, abs=1e-6)


def test_timestamp_with_other_offset_is_converted_to_utc() -> None:
    event = one(track(timestamp=f"{_T0_TEXT[:11]}12:00:00+02:00"))
    assert event.timestamp == T0


def test_missing_timestamp_is_received_at() -> None:
    msg = track()
    del msg["timestamp"]
    assert one(msg).timestamp == RECEIVED


def test_null_timestamp_is_received_at() -> None:
    assert one(track(timestamp=None)).timestamp == RECEIVED


def test_clock_skew_corrected_with_message_sent_at() -> None:
    # the device clock is 90 s behind: it stamped T0-60 and sent at T0-30 (its clock)
    msg = track(timestamp=None, originalTimestamp=iso(T0 - 60), sentAt=iso(T0 - 30))
    event = one(msg)
    assert event.timestamp == pytest.approx(RECEIVED - 30.0, abs=1e-6)


def test_clock_skew_corrected_with_batch_sent_at() -> None:
    msg = track(timestamp=None, originalTimestamp=iso(T0 - 60))
    raw = body({"batch": [msg], "sentAt": iso(T0 - 50)})
    (event,) = parse_batch(raw, RECEIVED)
    assert event.timestamp == pytest.approx(RECEIVED - 10.0, abs=1e-6)


def test_message_sent_at_wins_over_batch_sent_at() -> None:
    msg = track(timestamp=None, originalTimestamp=iso(T0 - 60), sentAt=iso(T0 - 40))
    raw = body({"batch": [msg], "sentAt": iso(T0 - 50)})
    (event,) = parse_batch(raw, RECEIVED)
    assert event.timestamp == pytest.approx(RECEIVED - 20.0, abs=1e-6)


def test_original_timestamp_without_sent_at_is_taken_as_is() -> None:
    msg = track(timestamp=None, originalTimestamp=iso(T0 - 60))
    assert one(msg).timestamp == pytest.approx(T0 - 60, abs=1e-6)


def test_explicit_timestamp_wins_over_original_timestamp() -> None:
    msg = track(timestamp=iso(T0 - 7), originalTimestamp=iso(T0 - 60), sentAt=iso(T0 - 30))
    assert one(msg).timestamp == pytest.approx(T0 - 7, abs=1e-6)


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt"])
def test_naive_times_are_rejected(field: str) -> None:
    msg = track() | {"timestamp": None, field: _T0_TEXT}
    err = rejected(body({"batch": [track(), msg]}))
    assert err.path == f"$.batch[1].{field}"
    assert "timezone" in err.message


def test_naive_timestamp_rejected_in_single_message() -> None:
    err = rejected(body(track(timestamp=f"{_T0_TEXT}.123")), EventType.TRACK)
    assert err.path == "$.timestamp"


def test_timestamp_before_2000_is_rejected() -> None:
    err = rejected(body({"batch": [track(timestamp="1999-12-31T23:59:59+00:00")]}))
    assert err.path == "$.batch[0].timestamp"
    assert err.message == "timestamp before 2000-01-01"


def test_timestamp_on_2000_01_01_is_accepted() -> None:
    assert one(track(timestamp="2000-01-01T00:00:00+00:00")).timestamp == 946_684_800.0


def test_original_timestamp_before_2000_names_its_field() -> None:
    msg = track(timestamp=None, originalTimestamp="1970-01-01T00:00:00+00:00")
    err = rejected(body({"batch": [msg]}))
    assert err.path == "$.batch[0].originalTimestamp"


def test_timestamp_more_than_a_day_ahead_is_rejected() -> None:
    err = rejected(body({"batch": [track(timestamp=iso(RECEIVED + DAY + 1))]}))
    assert err.path == "$.batch[0].timestamp"
    assert err.message == "timestamp more than a day in the future"


def test_timestamp_exactly_a_day_ahead_is_accepted() -> None:
    assert one(track(timestamp=iso(RECEIVED + DAY))).timestamp == RECEIVED + DAY


def test_future_skew_is_a_limit() -> None:
    err = rejected(
        body({"batch": [track(timestamp=iso(RECEIVED + 61))]}), limits=Limits(max_future_skew=60)
    )
    assert err.path == "$.batch[0].timestamp"


# ------------------------------------------------------------------ type and identity


def test_unknown_type_is_rejected() -> None:
    err = rejected(body({"batch": [track(), track(type="purchase")]}))
    assert err.path == "$.batch[1].type"
    assert "purchase" in err.message


def test_missing_type_in_a_batch_is_rejected() -> None:
    msg = track()
    del msg["type"]
    err = rejected(body({"batch": [track(), track(), msg]}))
    assert err.path == "$.batch[2].type"


@pytest.mark.parametrize("blank", [None, ""])
def test_user_id_and_anonymous_id_both_blank(blank: str | None) -> None:
    err = rejected(body({"batch": [track(userId=blank, anonymousId=blank)]}))
    assert err.path == "$.batch[0].userId"
    assert err.message == "userId or anonymousId is required"


def test_user_id_and_anonymous_id_both_missing_single() -> None:
    msg = track()
    del msg["userId"]
    del msg["anonymousId"]
    err = rejected(body(msg), EventType.TRACK)
    assert err.path == "$.userId"


def test_float_user_id_is_rejected() -> None:
    err = rejected(body({"batch": [track(userId=1.5)]}))
    assert err.path == "$.batch[0].userId"


@pytest.mark.parametrize("field", ["userId", "anonymousId", "messageId"])
def test_ids_longer_than_256_chars(field: str) -> None:
    err = rejected(body({"batch": [track(**{field: "x" * 257})]}))
    assert err.path == f"$.batch[0].{field}"
    assert err.message == "longer than 256 characters"


@pytest.mark.parametrize("field", ["userId", "anonymousId", "messageId"])
def test_ids_of_256_chars_pass(field: str) -> None:
    event = one(track(**{field: "x" * 256}))
    got = {"userId": event.user_id, "anonymousId": event.anonymous_id}.get(field, event.message_id)
    assert got == "x" * 256


def test_id_length_is_a_limit() -> None:
    err = rejected(body({"batch": [track(userId="x" * 9)]}), limits=Limits(max_id_length=8))
    assert err.path == "$.batch[0].userId"
    assert err.message == "longer than 8 characters"


def test_previous_id_and_group_id_lengths() -> None:
    alias = {"type": "alias", "userId": "u-1", "previousId": "p" * 257, "timestamp": iso(T0)}
    assert rejected(body({"batch": [alias]})).path == "$.batch[0].previousId"
    group = {"type": "group", "userId": "u-1", "groupId": "g" * 257, "timestamp": iso(T0)}
    assert rejected(body({"batch": [group]})).path == "$.batch[0].groupId"


# ------------------------------------------------------------------ alias


def test_alias_without_previous_id() -> None:
    msg = {"type": "alias", "userId": "u-1", "timestamp": iso(T0)}
    err = rejected(body(msg), EventType.ALIAS)
    assert err.path == "$.previousId"


def test_alias_without_previous_id_in_batch() -> None:
    msg = {"type": "alias", "userId": "u-1", "timestamp": iso(T0)}
    err = rejected(body({"batch": [msg]}))
    assert err.path == "$.batch[0].previousId"


@pytest.mark.parametrize("previous", ["", None])
def test_alias_with_blank_previous_id(previous: str | None) -> None:
    msg = {"type": "alias", "userId": "u-1", "previousId": previous, "timestamp": iso(T0)}
    err = rejected(body({"batch": [msg]}))
    assert err.path == "$.batch[0].previousId"


def test_alias_needs_a_user_id() -> None:
    msg = {"type": "alias", "anonymousId": "a-1", "previousId": "a-0", "timestamp": iso(T0)}
    err = rejected(body({"batch": [msg]}))
    assert err.message == "alias needs previousId and userId"


# ------------------------------------------------------------------ track names


def test_empty_event_name() -> None:
    err = rejected(body({"batch": [track(event="")]}))
    assert err.path == "$.batch[0].event"
    assert err.message == "event name must not be empty"


def test_empty_event_name_single() -> None:
    assert rejected(body(track(event="")), EventType.TRACK).path == "$.event"


def test_missing_event_name() -> None:
    msg = track()
    del msg["event"]
    assert rejected(body({"batch": [msg]})).path == "$.batch[0].event"


_SAMPLES: dict[type, Any] = {str: "mortgage", int: 3, float: 2.5, dict: {"marketing": False}}


def _valid_properties(name: str) -> dict[str, Any]:
    return {prop: _SAMPLES[types[0]] for prop, types in KNOWN_EVENTS[name].items()}


def _wrong_value(types: tuple[type, ...]) -> Any:
    for candidate in ("text", 42, {"a": 1}, [1, 2]):
        if not isinstance(candidate, types):
            return candidate
    raise AssertionError(types)


_REQUIRED = [(name, prop) for name, spec in KNOWN_EVENTS.items() for prop in spec]
_NUMERIC = [(n, p) for n, p in _REQUIRED if int in KNOWN_EVENTS[n][p]]


def test_known_events_cover_every_event_name() -> None:
    assert set(KNOWN_EVENTS) == set(EventName)


@pytest.mark.parametrize("name", list(KNOWN_EVENTS), ids=str)
def test_known_event_with_its_properties_passes(name: str) -> None:
    props = _valid_properties(name)
    event = one(track(event=name, properties=props))
    assert event.name == name
    assert event.properties == props


@pytest.mark.parametrize(("name", "prop"), _REQUIRED, ids=lambda v: str(v))
def test_known_event_missing_property(name: str, prop: str) -> None:
    props = _valid_properties(name)
    del props[prop]
    err = rejected(body({"batch": [track(), track(event=name, properties=props)]}))
    assert err.path == f"$.batch[1].properties.{prop}"
    assert err.message == f"'{name}' needs property '{prop}'"


@pytest.mark.parametrize(("name", "prop"), _REQUIRED, ids=lambda v: str(v))
def test_known_event_null_property(name: str, prop: str) -> None:
    props = _valid_properties(name) | {prop: None}
    err = rejected(body({"batch": [track(event=name, properties=props)]}))
    assert err.path == f"$.batch[0].properties.{prop}"


@pytest.mark.parametrize(("name", "prop"), _REQUIRED, ids=lambda v: str(v))
def test_known_event_wrong_property_type(name: str, prop: str) -> None:
    props = _valid_properties(name) | {prop: _wrong_value(KNOWN_EVENTS[name][prop])}
    err = rejected(body({"batch": [track(event=name, properties=props)]}))
    assert err.path == f"$.batch[0].properties.{prop}"
    assert err.message.startswith(f"'{name}' property '{prop}' must be ")


@pytest.mark.parametrize(("name", "prop"), _REQUIRED, ids=lambda v: str(v))
def test_known_event_wrong_property_type_single(name: str, prop: str) -> None:
    props = _valid_properties(name) | {prop: _wrong_value(KNOWN_EVENTS[name][prop])}
    err = rejected(body(track(event=name, properties=props)), EventType.TRACK)
    assert err.path == f"$.properties.{prop}"


@pytest.mark.parametrize(("name", "prop"), _NUMERIC, ids=lambda v: str(v))
@pytest.mark.parametrize("flag", [True, False])
def test_bool_is_not_a_number(name: str, prop: str, flag: bool) -> None:
    props = _valid_properties(name) | {prop: flag}
    err = rejected(body({"batch": [track(event=name, properties=props)]}))
    assert err.path == f"$.batch[0].properties.{prop}"
    assert err.message == f"'{name}' property '{prop}' must be float or int"


@pytest.mark.parametrize(("name", "prop"), _NUMERIC, ids=lambda v: str(v))
@pytest.mark.parametrize("number", [0, -12, 3.75])
def test_int_and_float_are_numbers(name: str, prop: str, number: float) -> None:
    props = _valid_properties(name) | {prop: number}
    assert one(track(event=name, properties=props)).properties[prop] == number


def test_known_event_without_properties_object() -> None:
    msg = track(event="Salary Received")
    del msg["properties"]
    err = rejected(body({"batch": [msg]}))
    assert err.path == "$.batch[0].properties.amount"


def test_overdraft_ended_needs_nothing() -> None:
    msg = track(event="Overdraft Ended", properties=None)
    assert one(msg).properties == {}


# ------------------------------------------------------------------ depth and size


def test_properties_at_max_depth_pass() -> None:
    event = one(track(properties=nested(12)))
    assert event.properties == nested(12)


def test_properties_deeper_than_max_depth() -> None:
    err = rejected(body({"batch": [track(), track(properties=nested(13))]}))
    # the nearest field path: the object that goes one level too deep
    assert err.path == "$.batch[1].properties" + ".k" * 12
    assert err.message == "nested deeper than 12 levels"


def test_deep_lists_count_too() -> None:
    value: Any = 1
    for _ in range(13):
        value = [value]
    err = rejected(body({"batch": [track(properties={"k": value})]}))
    assert err.path == "$.batch[0].properties.k" + "[0]" * 11


@pytest.mark.parametrize(
    ("msg", "path"),
    [
        (track(context=nested(13)), "$.context"),
        ({"type": "identify", "userId": "u", "traits": nested(13)}, "$.traits"),
        ({"type": "group", "userId": "u", "groupId": "g", "traits": nested(13)}, "$.traits"),
        ({"type": "page", "userId": "u", "properties": nested(13)}, "$.properties"),
        ({"type": "screen", "userId": "u", "properties": nested(13)}, "$.properties"),
    ],
)
def test_depth_checked_everywhere(msg: dict[str, Any], path: str) -> None:
    err = rejected(body(msg), EventType(msg["type"]))
    assert err.path == path + ".k" * 12


def test_depth_is_a_limit() -> None:
    err = rejected(body({"batch": [track(properties=nested(4))]}), limits=Limits(max_depth=3))
    assert err.path == "$.batch[0].properties.k.k.k"
    assert err.message == "nested deeper than 3 levels"
    assert one(track(properties=nested(3)), max_depth=3).properties == nested(3)


def test_batch_context_deeper_than_max_depth() -> None:
    """The batch-level context is merged into every event, so it is bounded too."""
    err = rejected(body({"batch": [track()], "context": nested(13)}))
    assert err.path == "$.context" + ".k" * 12


def test_batch_larger_than_limit() -> None:
    limits = Limits(max_batch=3)
    assert len(parse_batch(body({"batch": [track()] * 3}), RECEIVED, limits)) == 3
    err = rejected(body({"batch": [track()] * 4}), limits=limits)
    assert err.path == "$.batch"
    assert err.message == "a batch holds at most 3 messages"


def test_batch_larger_than_default_limit() -> None:
    err = rejected(body({"batch": [track()] * (Limits().max_batch + 1)}))
    assert err.path == "$.batch"
    assert err.message == "a batch holds at most 2000 messages"


def test_empty_batch_is_empty() -> None:
    assert parse_batch(body({"batch": []}), RECEIVED) == []


# ------------------------------------------------------------------ JSON and shape


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"", "$"),
        (b"{", "$"),
        (b'{"batch": [', "$.batch[0]"),
        (b"not json", "$"),
        (b'{"batch": []}}', "$"),
        (b'{"batch": [{"type": "track", "event": "x" "userId": "u"}]}', "$.batch[0]"),
    ],
)
def test_invalid_json_batch(raw: bytes, path: str) -> None:
    """A syntax error names the nearest field the scanner reached."""
    err = rejected(raw)
    assert err.path == path
    assert err.message.startswith("body is not valid JSON")


@pytest.mark.parametrize("kind", list(EventType))
def test_invalid_json_single(kind: EventType) -> None:
    err = rejected(b'{"userId": ', kind)
    assert err.path == "$.userId"
    assert err.message.startswith("body is not valid JSON")


def test_batch_body_must_be_an_object() -> None:
    assert rejected(b"[]").path == "$"


def test_batch_body_needs_batch() -> None:
    assert rejected(b"{}").path == "$.batch"


def test_properties_must_be_an_object() -> None:
    err = rejected(body({"batch": [track(properties=[1, 2])]}))
    assert err.path == "$.batch[0].properties"


def test_validation_error_is_input_error_with_path_in_text() -> None:
    err = rejected(body({"batch": [track(event="")]}))
    assert isinstance(err, InputError)
    assert err.code == "validation_error"
    assert str(err) == "event name must not be empty (at $.batch[0].event)"


# ------------------------------------------------------------------ automatic messageId


def test_missing_message_id_gets_a_deterministic_auto_id() -> None:
    msg = track()
    del msg["messageId"]
    first = one(msg)
    again = one(copy.deepcopy(msg))
    assert first.message_id.startswith("auto-")
    assert len(first.message_id) == len("auto-") + 32
    assert all(c in "0123456789abcdef" for c in first.message_id[5:])
    assert again.message_id == first.message_id


@pytest.mark.parametrize("blank", [None, ""])
def test_null_or_empty_message_id_gets_an_auto_id(blank: str | None) -> None:
    missing = track()
    del missing["messageId"]
    event = one(track(messageId=blank))
    assert event.message_id.startswith("auto-")
    if blank is None:
        assert event.message_id == one(missing).message_id


def test_auto_id_does_not_depend_on_arrival_time() -> None:
    msg = track(messageId=None)
    raw = body({"batch": [msg]})
    (a,) = parse_batch(raw, RECEIVED)
    (b,) = parse_batch(raw, RECEIVED + 30)
    assert a.message_id == b.message_id


@pytest.mark.parametrize(
    "change",
    [
        {"properties": {"x": 2}},
        {"timestamp": iso(T0 + 1)},
        {"userId": "u-2"},
        {"event": "Other Thing"},
        {"anonymousId": "a-9"},
    ],
)
def test_auto_id_differs_for_different_messages(change: dict[str, Any]) -> None:
    base = track(messageId=None, properties={"x": 1})
    assert one(base).message_id != one(base | change).message_id


def test_auto_ids_in_one_batch_differ() -> None:
    a = track(messageId=None, properties={"n": 1})
    b = track(messageId=None, properties={"n": 2})
    first, second = parse_batch(body({"batch": [a, b]}), RECEIVED)
    assert first.message_id != second.message_id


def test_given_message_id_is_kept() -> None:
    assert one(track(messageId="abc-123")).message_id == "abc-123"


_OPTIONAL = [(name, prop) for name, spec in OPTIONAL_PROPERTIES.items() for prop in spec]


@pytest.mark.parametrize(("name", "prop"), _OPTIONAL, ids=lambda v: str(v))
def test_optional_property_may_be_absent(name: str, prop: str) -> None:
    """An overdraft reported without the balance is still an overdraft (the warning needs
    only that): accepted, its other properties kept."""
    props = {k: v for k, v in _valid_properties(name).items() if k != prop}
    event = one(track(event=name, properties=props))
    assert event.name == name
    assert prop not in event.properties


@pytest.mark.parametrize(("name", "prop"), _OPTIONAL, ids=lambda v: str(v))
def test_optional_property_of_the_wrong_type(name: str, prop: str) -> None:
    props = _valid_properties(name) | {prop: _wrong_value(OPTIONAL_PROPERTIES[name][prop])}
    err = rejected(body({"batch": [track(event=name, properties=props)]}))
    assert err.path == f"$.batch[0].properties.{prop}"
    assert err.message.startswith(f"'{name}' property '{prop}' must be ")
