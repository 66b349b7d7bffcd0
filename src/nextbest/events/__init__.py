"""Events: the Segment-spec messages nextbest accepts, and the bank's named track events."""

from nextbest.events.model import Event, EventType
from nextbest.events.names import KNOWN_EVENTS, EventName
from nextbest.events.parse import Limits, parse_batch, parse_message

__all__ = [
    "KNOWN_EVENTS",
    "Event",
    "EventName",
    "EventType",
    "Limits",
    "parse_batch",
    "parse_message",
]
