"""Seams of nextbest as type aliases: the shapes that cross module boundaries."""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["CustomerId", "Json", "JsonObject", "Seconds", "Timestamp"]

#: Stable customer key: the bank's userId, or ``anon:<anonymousId>`` before login.
CustomerId: TypeAlias = str
#: Seconds since the Unix epoch, UTC. Every time in the core is one of these.
Timestamp: TypeAlias = float
#: A duration in seconds.
Seconds: TypeAlias = float
Json: TypeAlias = Any
JsonObject: TypeAlias = dict[str, Any]
