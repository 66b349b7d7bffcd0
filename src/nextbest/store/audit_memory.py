"""The in-memory twin of the audit log port: the same contract, no I/O (tests,
simulations). ``tamper`` lets a test change what it holds, as someone with the file could."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from nextbest.audit.chain import chain
from nextbest.audit.model import AuditEntry, AuditHead, AuditRecord

__all__ = ["MemoryAuditLog"]


class MemoryAuditLog:
    def __init__(self) -> None:
        self._entries: list[AuditEntry] = []
        self._head: AuditHead | None = None
        self._lock = threading.Lock()

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if not records:
            return []
        with self._lock:
            made = chain(records, self._head)
            self._entries.extend(made)
            self._head = AuditHead(made[-1].seq, made[-1].hash)
            return made

    def entries(
        self, after: int = 0, limit: int | None = None, subject: str | None = None
    ) -> list[AuditEntry]:
        with self._lock:
            found = [
                e
                for e in self._entries
                if e.seq > after and (subject is None or e.subject == subject)
            ]
        found.sort(key=lambda e: e.seq)
        return found if limit is None else found[:limit]

    def head(self) -> AuditHead | None:
        with self._lock:
            return self._head

    def tamper(self, entries: list[AuditEntry]) -> None:
        """Replace what the log holds (the head stays): for tests of ``verify``."""
        with self._lock:
            self._entries = list(entries)
