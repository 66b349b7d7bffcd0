"""Storage adapters: the event log (the truth), decisions and snapshots."""

from nextbest.store.memory import MemoryStore
from nextbest.store.port import EventStore, StoredEvent
from nextbest.store.sqlite import SQLiteStore

__all__ = ["EventStore", "MemoryStore", "SQLiteStore", "StoredEvent", "open_store"]


def open_store(url: str) -> EventStore:
    """``:memory:`` for the in-memory twin, otherwise a SQLite file path."""
    if url == ":memory:":
        return MemoryStore()
    return SQLiteStore(url)
