"""How every SQL backend of the outbox (``port.Outbox``) reads a message back: its columns,
in the order ``message_of`` takes them, and the count of messages by state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from nextbest.store.port import OutboxMessage, OutboxState

__all__ = ["COLUMNS", "counts_of", "mention", "message_of"]

COLUMNS = (
    "id, channel, destination, key, payload, state, attempts, next_attempt_at, last_error, "
    "created_at, delivered_at"
)


def message_of(row: Any) -> OutboxMessage:
    """A row of ``COLUMNS`` as the message it holds."""
    i, channel, destination, key, payload, state, attempts, due, error, created, delivered = row
    return OutboxMessage(
        int(i), channel, destination, key, bytes(payload), OutboxState(state), int(attempts),
        float(due), error, float(created), None if delivered is None else float(delivered),
    )  # fmt: skip


def counts_of(rows: Iterable[Any]) -> dict[OutboxState, int]:
    """Rows (state, count) as ``Outbox.counts`` answers them: every state, 0 where absent."""
    out = dict.fromkeys(OutboxState, 0)
    for state, n in rows:
        out[OutboxState(state)] = int(n)
    return out


def mention(customer_id: str) -> bytes:
    """How a message's key or JSON payload names ``customer_id``: as a JSON string
    (``Outbox.erase_mentions``)."""
    return msgspec.json.encode(customer_id)
