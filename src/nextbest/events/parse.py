"""Decode and validate Segment-spec messages into normalized events. Pure: time is passed in.

A batch is accepted whole or rejected whole: the first problem raises ValidationError with
the JSONPath of the field (``$.batch[3].properties.amount``) and nothing is stored.

``event_time``: for a server on event time (``--clock event``), where the events' own times
are the clock, every message must say when it happened (``timestamp``, or
``originalTimestamp`` taken as is: there is no receipt time to correct a device's skew
against) and is received at that time (``Event.received_at``, which the learner's click
windows follow); the future bound still counts from ``received_at``, the wall clock.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import msgspec

from nextbest.errors import ValidationError
from nextbest.events.model import Event, EventType
from nextbest.events.names import KNOWN_EVENTS, OPTIONAL_PROPERTIES
from nextbest.events.wire import (
    WireAlias,
    WireBatch,
    WireGroup,
    WireIdentify,
    WireMessage,
    WirePage,
    WireScreen,
    WireTrack,
)

__all__ = [
    "DEFAULT_LIMITS",
    "SINGLE_MESSAGE",
    "Limits",
    "check_time",
    "decode_json",
    "parse_batch",
    "parse_instant",
    "parse_message",
]

_EARLIEST = 946_684_800.0  # 2000-01-01T00:00:00Z

#: the body type of each single-message route (``type`` optional there)
SINGLE_MESSAGE: dict[EventType, type[WireMessage]] = {
    EventType.TRACK: WireTrack,
    EventType.PAGE: WirePage,
    EventType.SCREEN: WireScreen,
    EventType.IDENTIFY: WireIdentify,
    EventType.ALIAS: WireAlias,
    EventType.GROUP: WireGroup,
}


class Limits(msgspec.Struct, frozen=True):
    """Bounds on what one message may carry."""

    max_id_length: int = 256
    max_depth: int = 12
    max_future_skew: float = 86_400.0
    max_batch: int = 2_000


DEFAULT_LIMITS = Limits()

_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def _decoder(kind: type[Any]) -> msgspec.json.Decoder[Any]:
    dec = _DECODERS.get(kind)
    if dec is None:
        dec = _DECODERS[kind] = msgspec.json.Decoder(kind)
    return dec


def decode_json(body: bytes, kind: type[Any], prefix: str = "") -> Any:
    """Decode ``body`` as ``kind``; any failure is a ValidationError with the field path."""
    try:
        return _decoder(kind).decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationError.from_msgspec(exc, prefix or "$") from exc
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}", prefix or "$") from exc
    except RecursionError as exc:  # msgspec's own guard against absurd nesting
        raise ValidationError("JSON nested too deeply", prefix or "$") from exc


def parse_batch(
    body: bytes,
    received_at: float,
    limits: Limits = DEFAULT_LIMITS,
    *,
    event_time: bool = False,
) -> list[Event]:
    """Parse a ``/v1/batch`` body (``{"batch": [...], "sentAt": ...}``)."""
    wire: WireBatch = decode_json(body, WireBatch, "")
    if len(wire.batch) > limits.max_batch:
        raise ValidationError(f"a batch holds at most {limits.max_batch} messages", "$.batch")
    shared = _object(wire.context, "$.context", limits)
    return [
        _normalize(msg, f"$.batch[{i}]", received_at, wire.sentAt, shared, limits, event_time)
        for i, msg in enumerate(wire.batch)
    ]


def parse_message(
    kind: EventType,
    body: bytes,
    received_at: float,
    limits: Limits = DEFAULT_LIMITS,
    *,
    event_time: bool = False,
) -> Event:
    """Parse a single-message body for ``/v1/track`` and its siblings (``type`` optional)."""
    wire = decode_json(body, SINGLE_MESSAGE[kind], "")
    return _normalize(wire, "$", received_at, None, {}, limits, event_time)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: str | int | None, path: str, limits: Limits) -> str | None:
    if value is None:
        return None
    text = str(value)
    if not text:
        return None
    if len(text) > limits.max_id_length:
        raise ValidationError(f"longer than {limits.max_id_length} characters", path)
    return text


def _depth_ok(value: Any, limit: int) -> bool:
    """No value nested more than ``limit`` levels below ``value``; walks containers only,
    without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if children and depth >= limit:
            return False
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return True


def _object(value: dict[str, Any] | None, path: str, limits: Limits) -> dict[str, Any]:
    if not value:
        return {}
    if not _depth_ok(value, limits.max_depth):
        raise ValidationError(f"nested deeper than {limits.max_depth} levels", path)
    return value


def _event_time(
    msg: WireMessage,
    path: str,
    received_at: float,
    batch_sent_at: Any,
    limits: Limits,
    event_time: bool = False,
) -> float:
    sent_at = msg.sentAt or batch_sent_at
    if msg.timestamp is not None:
        when, field = msg.timestamp.timestamp(), "timestamp"
    elif msg.originalTimestamp is not None:
        when, field = msg.originalTimestamp.timestamp(), "originalTimestamp"
        if sent_at is not None and not event_time:  # Segment's clock-skew correction
            when = received_at - (sent_at.timestamp() - when)
    elif event_time:
        raise ValidationError(
            "a message needs a timestamp: this server runs on event time (--clock event)",
            f"{path}.timestamp",
        )
    else:
        return received_at
    return check_time(when, f"{path}.{field}", received_at, limits)


def parse_instant(value: Any, path: str, wall: float, limits: Limits = DEFAULT_LIMITS) -> float:
    """An ISO 8601 date-time with a UTC offset (``2026-06-01T09:30:00.000+00:00``, ``...Z``)
    as epoch seconds, bounded like event timestamps (``check_time``); ValidationError at
    ``path`` otherwise."""
    if not isinstance(value, str):
        raise ValidationError("must be an ISO 8601 date-time string", path)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"not an ISO 8601 date-time: {value[:40]!r}", path) from None
    if moment.tzinfo is None:
        raise ValidationError("needs a UTC offset (Z or +00:00)", path)
    return check_time(moment.timestamp(), path, wall, limits)


def check_time(when: float, path: str, wall: float, limits: Limits = DEFAULT_LIMITS) -> float:
    """``when`` if it is a time nextbest accepts: not before 2000, at most
    ``limits.max_future_skew`` after ``wall``; a ValidationError at ``path`` otherwise."""
    if when < _EARLIEST:
        raise ValidationError("timestamp before 2000-01-01", path)
    if when > wall + limits.max_future_skew:
        raise ValidationError("timestamp more than a day in the future", path)
    return when


def _check_known(name: str, properties: dict[str, Any], path: str) -> None:
    """A known event's required properties (``KNOWN_EVENTS``) and the optional ones that
    are present (``OPTIONAL_PROPERTIES``), each of its type."""
    for spec, required in ((KNOWN_EVENTS.get(name), True), (OPTIONAL_PROPERTIES.get(name), False)):
        for prop, types in (spec or {}).items():
            value = properties.get(prop)
            where = f"{path}.properties.{prop}"
            if value is None:
                if required:
                    raise ValidationError(f"'{name}' needs property '{prop}'", where)
                continue
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                wanted = " or ".join(sorted({t.__name__ for t in types}))
                raise ValidationError(f"'{name}' property '{prop}' must be {wanted}", where)


def _auto_message_id(msg: WireMessage, received_at: float) -> str:
    """A message without ``messageId`` gets one from its content, so a retry of the same
    message dedupes; without any timestamp two identical messages are two events, so the
    receive time joins the hash."""
    digest = hashlib.sha256(msgspec.json.encode(msg))
    if msg.timestamp is None and msg.originalTimestamp is None:
        digest.update(repr(received_at).encode())
    return f"auto-{digest.hexdigest()[:32]}"


def _normalize(
    msg: WireMessage,
    path: str,
    received_at: float,
    batch_sent_at: Any,
    shared_context: dict[str, Any],
    limits: Limits,
    event_time: bool = False,
) -> Event:
    user_id = _id(msg.userId, f"{path}.userId", limits)
    anonymous_id = _id(msg.anonymousId, f"{path}.anonymousId", limits)
    if user_id is None and anonymous_id is None:
        raise ValidationError("userId or anonymousId is required", f"{path}.userId")
    message_id = _id(msg.messageId, f"{path}.messageId", limits) or _auto_message_id(
        msg, received_at
    )
    context = _object(msg.context, f"{path}.context", limits)
    if shared_context:
        context = {**shared_context, **context}
    timestamp = _event_time(msg, path, received_at, batch_sent_at, limits, event_time)
    common: dict[str, Any] = {
        "message_id": message_id,
        "timestamp": timestamp,
        # on event time the events' own times are the clock: each is received at its time
        "received_at": timestamp if event_time else received_at,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "context": context,
    }
    if isinstance(msg, WireTrack):
        if not msg.event:
            raise ValidationError("event name must not be empty", f"{path}.event")
        props = _object(msg.properties, f"{path}.properties", limits)
        _check_known(msg.event, props, path)
        return Event(type=EventType.TRACK, name=msg.event, properties=props, **common)
    if isinstance(msg, WirePage | WireScreen):
        kind = EventType.PAGE if isinstance(msg, WirePage) else EventType.SCREEN
        props = _object(msg.properties, f"{path}.properties", limits)
        return Event(
            type=kind,
            name=msg.name,
            category=msg.category or _text(props.get("category")),
            properties=props,
            **common,
        )
    if isinstance(msg, WireIdentify):
        # Segment puts traits at the root, RudderStack in context.traits: read both.
        nested = context.get("traits")
        traits = {**(nested if isinstance(nested, dict) else {}), **(msg.traits or {})}
        traits = _object(traits, f"{path}.traits", limits)
        return Event(type=EventType.IDENTIFY, traits=traits, **common)
    if isinstance(msg, WireAlias):
        previous = _id(msg.previousId, f"{path}.previousId", limits)
        if previous is None or user_id is None:
            raise ValidationError("alias needs previousId and userId", f"{path}.previousId")
        return Event(type=EventType.ALIAS, previous_id=previous, **common)
    group_id = _id(msg.groupId, f"{path}.groupId", limits)
    traits = _object(msg.traits, f"{path}.traits", limits)
    return Event(type=EventType.GROUP, group_id=group_id, traits=traits, **common)
