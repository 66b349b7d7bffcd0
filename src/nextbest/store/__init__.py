"""Storage adapters: the event log (the truth), decisions and saved derived state."""

from nextbest.store.memory import MemoryStore
from nextbest.store.port import EventStore, SavedState, StateRow, StoredEvent
from nextbest.store.sqlite import SQLiteStore

__all__ = [
    "EventStore",
    "MemoryStore",
    "SQLiteStore",
    "SavedState",
    "StateRow",
    "StoredEvent",
    "open_store",
]


def open_store(url: str) -> EventStore:
    """``:memory:`` for the in-memory twin, otherwise a SQLite file path."""
    if url == ":memory:":
        return MemoryStore()
    return SQLiteStore(url)
