"""The bus port (accepted events on a partitioned, durable stream) and its adapters: the
in-memory twin and NATS JetStream (``bus.nats``, imported only where it is used)."""

from nextbest.bus.memory import MemoryBus
from nextbest.bus.port import BusMessage, Delivery, EventBus, Published, bus_key, partition_of

__all__ = [
    "BusMessage",
    "Delivery",
    "EventBus",
    "MemoryBus",
    "Published",
    "bus_key",
    "partition_of",
]
