"""Decode and validate Segment-spec messages into normalized events. Pure: time is passed in.

A body that is not JSON, not a Segment envelope, or carries a value nextbest refuses
everywhere (a number JSON clients cannot round-trip, a control character in a name, an id
or a key, nesting past the limit) is refused whole: ValidationError with the JSONPath of the
field (``$.batch[3].properties.amount``), and nothing is stored. A well-formed message that
only breaks the bank's vocabulary (a named event without a property the engine needs, or one
of the wrong type) is set apart instead (``read_batch``: a ``Rejection`` with its
VocabularyError), so the rest of its batch is kept; ``parse_batch`` is the strict form that
raises on it.

``event_time``: for a server on event time (``--clock event``), where the events' own times
are the clock, every message must say when it happened (``timestamp``, or
``originalTimestamp`` taken as is: there is no receipt time to correct a device's skew
against) and is received at that time (``Event.received_at``, which the learner's click
windows follow); the future bound still counts from ``received_at``, the wall clock.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from nextbest.errors import ValidationError, VocabularyError
from nextbest.events.locate import MAX_SAFE_INTEGER, is_safe_number, locate, member_path
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
    "Parsed",
    "Rejection",
    "check_time",
    "check_vocabulary",
    "decode_json",
    "parse_batch",
    "parse_instant",
    "parse_message",
    "read_batch",
    "read_message",
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
    #: trait keys one message may set, characters in a key, JSON bytes of one value
    max_traits: int = 100
    max_trait_key_length: int = 64
    max_trait_value_bytes: int = 2_048


DEFAULT_LIMITS = Limits()

_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


#: looked up once: in Python 3.11 each ``EventType.X`` read calls the enum metaclass's hook
_TRACK = EventType.TRACK


def _decoder(kind: type[Any]) -> msgspec.json.Decoder[Any]:
    dec = _DECODERS.get(kind)
    if dec is None:
        dec = _DECODERS[kind] = msgspec.json.Decoder(kind)
    return dec


@dataclass(frozen=True, slots=True)
class Rejection:
    """A well-formed message set apart because it breaks the bank's vocabulary: where it
    sat in its request (``index``), why (``error``, with the field path), and the message
    as normalized, so it can be quarantined and replayed once the vocabulary is fixed."""

    index: int
    error: VocabularyError
    event: Event


class Parsed(NamedTuple):
    """A request's messages: the accepted events with their index in the request, and the
    ones set apart."""

    events: list[Event]
    indexes: list[int]
    rejected: list[Rejection]


def decode_json(
    body: bytes,
    kind: type[Any],
    prefix: str = "",
    max_depth: int | None = None,
    offset: int = 0,
) -> Any:
    """Decode ``body`` as ``kind``; any failure is a ValidationError with the field path
    (``locate`` finds it where msgspec names none: nesting, lone surrogates, syntax)."""
    try:
        return _decoder(kind).decode(body)
    except msgspec.ValidationError as exc:
        error = ValidationError.from_msgspec(exc, prefix or "$")
        if "[...]" in error.path:  # inside an untyped object: msgspec cannot say where
            error = _located(body, error, max_depth, offset)
        raise error from exc
    except msgspec.DecodeError as exc:
        error = ValidationError(f"body is not valid JSON: {exc}", prefix or "$")
        raise _located(body, error, max_depth, offset) from exc
    except RecursionError as exc:  # msgspec's own guard against absurd nesting
        error = ValidationError("JSON nested too deeply", prefix or "$")
        raise _located(body, error, max_depth, offset) from exc


def _located(
    body: bytes, error: ValidationError, max_depth: int | None, offset: int
) -> ValidationError:
    """``error`` with the reason and path ``locate`` finds in ``body``, when it finds one."""
    found = locate(body, max_depth, offset)
    if found is None:
        return error
    reason = found.reason
    if error.message.startswith("body is not valid JSON"):
        reason = f"body is not valid JSON: {reason}"
    return ValidationError(reason, found.path)


def read_batch(
    body: bytes,
    received_at: float,
    limits: Limits = DEFAULT_LIMITS,
    *,
    event_time: bool = False,
) -> Parsed:
    """Read a ``/v1/batch`` body (``{"batch": [...], "sentAt": ...}``): ValidationError for
    a body refused whole, otherwise its events and the messages set apart."""
    wire: WireBatch = decode_json(body, WireBatch, "", limits.max_depth, 3)
    if len(wire.batch) > limits.max_batch:
        raise ValidationError(f"a batch holds at most {limits.max_batch} messages", "$.batch")
    shared = _object(wire.context, "$.context", limits)
    parsed = Parsed([], [], [])
    for i, msg in enumerate(wire.batch):
        event = _normalize(
            msg, f"$.batch[{i}]", received_at, wire.sentAt, shared, limits, event_time
        )
        _sort(parsed, i, event, f"$.batch[{i}]")
    return parsed


def read_message(
    kind: EventType,
    body: bytes,
    received_at: float,
    limits: Limits = DEFAULT_LIMITS,
    *,
    event_time: bool = False,
) -> Parsed:
    """Read a single-message body for ``/v1/track`` and its siblings (``type`` optional)."""
    wire = decode_json(body, SINGLE_MESSAGE[kind], "", limits.max_depth, 1)
    parsed = Parsed([], [], [])
    _sort(parsed, 0, _normalize(wire, "$", received_at, None, {}, limits, event_time), "$")
    return parsed


def _sort(parsed: Parsed, index: int, event: Event, path: str) -> None:
    """Put ``event`` with the accepted events, or set it apart if it breaks the vocabulary."""
    if event.type is _TRACK and event.name and event.name in _CHECKED:
        try:
            check_vocabulary(event.name, event.properties, path)
        except VocabularyError as error:
            parsed.rejected.append(Rejection(index, error, event))
            return
    parsed.events.append(event)
    parsed.indexes.append(index)


def _strict(parsed: Parsed) -> list[Event]:
    if parsed.rejected:
        raise parsed.rejected[0].error
    return parsed.events


def parse_batch(
    body: bytes,
    received_at: float,
    limits: Limits = DEFAULT_LIMITS,
    *,
    event_time: bool = False,
) -> list[Event]:
    """``read_batch``, all or nothing: a message that breaks the vocabulary is a
    VocabularyError too (for callers with no quarantine: tests, tools)."""
    return _strict(read_batch(body, received_at, limits, event_time=event_time))


def parse_message(
    kind: EventType,
    body: bytes,
    received_at: float,
    limits: Limits = DEFAULT_LIMITS,
    *,
    event_time: bool = False,
) -> Event:
    """``read_message``, strict like ``parse_batch``."""
    return _strict(read_message(kind, body, received_at, limits, event_time=event_time))[0]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


#: C0 control characters and DEL: never part of a name, an id or a key
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _plain(text: str, path: str) -> str:
    """``text`` if it holds no control character; ValidationError at ``path`` otherwise."""
    if text.isprintable():  # no control character (they are not printable): no search
        return text
    found = _CONTROL.search(text)
    if found is not None:
        raise ValidationError(
            f"control character U+{ord(found.group()):04X} at offset {found.start()}", path
        )
    return text


def _id_at(value: str | int | None, path: str, field: str, limits: Limits) -> str | None:
    """``_id`` of the member ``field`` of ``path``, whose path is written out only for an
    error: most ids are plain strings, checked here at once."""
    if type(value) is str and 0 < len(value) <= limits.max_id_length and value.isprintable():
        return value
    return _id(value, path + field, limits)


def _id(value: str | int | None, path: str, limits: Limits) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not is_safe_number(value):
        raise ValidationError("a numeric id must be within 2**53; send it as a string", path)
    text = str(value)
    if not text:
        return None
    if len(text) > limits.max_id_length:
        raise ValidationError(f"longer than {limits.max_id_length} characters", path)
    return _plain(text, path)


def _problem(value: Any, limits: Limits) -> tuple[str, str] | None:
    """The first value below ``value`` nextbest refuses, as (reason, relative path): nesting
    past ``limits.max_depth``, a number JSON clients cannot round-trip (beyond 2**53, not
    finite), a NUL in a string, a control character in a key. Iterative: no recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    limit, big = limits.max_depth, MAX_SAFE_INTEGER
    while stack:
        node, depth, path = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            kind = type(child)
            if kind is str:
                if "\x00" in child:
                    where = member_path(path, key) if isinstance(key, str) else f"{path}[{key}]"
                    return "a NUL character is not text", where
            elif kind is int:
                if not -big <= child <= big:
                    where = member_path(path, key) if isinstance(key, str) else f"{path}[{key}]"
                    return (
                        "an integer beyond 2**53, which JSON clients cannot read back exactly",
                        where,
                    )
            elif kind is float:
                if child != child or child in (float("inf"), float("-inf")):
                    where = member_path(path, key) if isinstance(key, str) else f"{path}[{key}]"
                    return "a number must be finite", where
            elif kind is dict or kind is list:
                where = member_path(path, key) if isinstance(key, str) else f"{path}[{key}]"
                if child and depth + 1 >= limit:
                    return f"nested deeper than {limit} levels", where
                stack.append((child, depth + 1, where))
            if isinstance(key, str) and not key.isprintable() and _CONTROL.search(key):
                return "a key holds a control character", member_path(path, key)
    return None


def _traits(traits: dict[str, Any], path: str, limits: Limits) -> dict[str, Any]:
    """``traits`` within the limits on what one message may set: how many keys, how long a
    key, how large a value (as JSON); ValidationError naming the trait otherwise."""
    if len(traits) > limits.max_traits:
        raise ValidationError(
            f"{len(traits)} traits in one message; at most {limits.max_traits}", path
        )
    for key, value in traits.items():
        if len(key) > limits.max_trait_key_length:
            raise ValidationError(
                f"a trait key is at most {limits.max_trait_key_length} characters",
                member_path(path, key[:40]),
            )
        if isinstance(value, str):
            size = len(value)  # a lower bound of its JSON bytes, computed for free
            if size * 4 <= limits.max_trait_value_bytes:
                continue
        elif not isinstance(value, dict | list):
            continue  # a number, a bool or null is small
        size = len(msgspec.json.encode(value))
        if size > limits.max_trait_value_bytes:
            raise ValidationError(
                f"a trait value is at most {limits.max_trait_value_bytes} bytes as JSON "
                f"(this one is {size})",
                member_path(path, key),
            )
    return traits


def _object(
    value: dict[str, Any] | None, path: str, limits: Limits, field: str = ""
) -> dict[str, Any]:
    """``value`` (``{}`` for none) unless ``_problem`` finds something in it: a
    ValidationError at ``path + field`` and where below."""
    if not value:
        return {}
    problem = _problem(value, limits)
    if problem is not None:
        raise ValidationError(problem[0], path + field + problem[1])
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


#: the named events whose properties the vocabulary checks
_CHECKED = frozenset(KNOWN_EVENTS) | frozenset(OPTIONAL_PROPERTIES)


def check_vocabulary(name: str, properties: dict[str, Any], path: str) -> None:
    """A known event's required properties (``KNOWN_EVENTS``) and the optional ones that
    are present (``OPTIONAL_PROPERTIES``), each of its type; VocabularyError otherwise."""
    for spec, required in ((KNOWN_EVENTS.get(name), True), (OPTIONAL_PROPERTIES.get(name), False)):
        for prop, types in (spec or {}).items():
            value = properties.get(prop)
            where = f"{path}.properties.{prop}"
            if value is None:
                if required:
                    raise VocabularyError(
                        f"'{name}' needs property '{prop}'", where, "missing_property"
                    )
                continue
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                wanted = " or ".join(sorted({t.__name__ for t in types}))
                raise VocabularyError(
                    f"'{name}' property '{prop}' must be {wanted}", where, "wrong_type"
                )


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
    user_id = _id_at(msg.userId, path, ".userId", limits)
    anonymous_id = _id_at(msg.anonymousId, path, ".anonymousId", limits)
    if user_id is None and anonymous_id is None:
        raise ValidationError("userId or anonymousId is required", f"{path}.userId")
    message_id = _id_at(msg.messageId, path, ".messageId", limits) or _auto_message_id(
        msg, received_at
    )
    context = _object(msg.context, path, limits, ".context")
    if shared_context:
        context = {**shared_context, **context}
    timestamp = _event_time(msg, path, received_at, batch_sent_at, limits, event_time)
    # on event time the events' own times are the clock: each is received at its time
    received = timestamp if event_time else received_at
    if isinstance(msg, WireTrack):  # the most frequent: its fields named, not unpacked
        if not msg.event:
            raise ValidationError("event name must not be empty", f"{path}.event")
        if not msg.event.isprintable():
            _plain(msg.event, f"{path}.event")
        props = _object(msg.properties, path, limits, ".properties")
        return Event(
            type=_TRACK,
            name=msg.event,
            properties=props,
            message_id=message_id,
            timestamp=timestamp,
            received_at=received,
            user_id=user_id,
            anonymous_id=anonymous_id,
            context=context,
        )
    common: dict[str, Any] = {
        "message_id": message_id,
        "timestamp": timestamp,
        "received_at": received,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "context": context,
    }
    if isinstance(msg, WirePage | WireScreen):
        kind = EventType.PAGE if isinstance(msg, WirePage) else EventType.SCREEN
        props = _object(msg.properties, f"{path}.properties", limits)
        if msg.name:
            _plain(msg.name, f"{path}.name")
        if msg.category:
            _plain(msg.category, f"{path}.category")
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
        traits = _traits(_object(traits, f"{path}.traits", limits), f"{path}.traits", limits)
        return Event(type=EventType.IDENTIFY, traits=traits, **common)
    if isinstance(msg, WireAlias):
        previous = _id(msg.previousId, f"{path}.previousId", limits)
        if previous is None or user_id is None:
            raise ValidationError("alias needs previousId and userId", f"{path}.previousId")
        return Event(type=EventType.ALIAS, previous_id=previous, **common)
    group_id = _id(msg.groupId, f"{path}.groupId", limits)
    traits = _traits(_object(msg.traits, f"{path}.traits", limits), f"{path}.traits", limits)
    return Event(type=EventType.GROUP, group_id=group_id, traits=traits, **common)
