"""Storage adapters: the event log (the truth), the decision log, saved derived state, the
quarantine of messages that broke the vocabulary, the outbox of messages to send out, the
callback queue with advisors' presence, and the audit log.

Which backend serves each port is chosen in one place only: ``nextbest.bootstrap``.
"""

from nextbest.store.memory import memory_stores
from nextbest.store.port import (
    AuditLog,
    Callbacks,
    CallbackWrite,
    Capacity,
    DecisionLog,
    EventLog,
    HeldMessage,
    Outbox,
    OutboxMessage,
    OutboxState,
    Quarantine,
    SavedState,
    StateRow,
    StateStore,
    StoredEvent,
    Stores,
    with_state,
)
from nextbest.store.sqlite import sqlite_stores

__all__ = [
    "AuditLog",
    "CallbackWrite",
    "Callbacks",
    "Capacity",
    "DecisionLog",
    "EventLog",
    "HeldMessage",
    "Outbox",
    "OutboxMessage",
    "OutboxState",
    "Quarantine",
    "SavedState",
    "StateRow",
    "StateStore",
    "StoredEvent",
    "Stores",
    "memory_stores",
    "sqlite_stores",
    "with_state",
]
