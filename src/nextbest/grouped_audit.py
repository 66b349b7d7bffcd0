"""The audit log with group commit: concurrent appends share one durable transaction.

Every audited read appends one record before it is answered, and a durable commit (an
fsync, a round trip to PostgreSQL) costs far more than the record. As ingestion does
(``group_commit``), the appends that arrive while one is being written wait for the next
one, which writes them all in one ``AuditLog.append``: under light load a group is one
read's record, under heavy load it grows by itself. Each caller gets its own entries back,
in the order it gave them, consecutive in the chain; a failed write fails every append of
its group (nothing of it is stored: the store's append is all or none).
"""

from __future__ import annotations

from collections.abc import Sequence

from nextbest.audit.model import AuditEntry, AuditHead, AuditRecord
from nextbest.errors import NextbestError
from nextbest.group_commit import GroupCommit
from nextbest.store.port import AuditLog

__all__ = ["GroupedAuditLog"]


class GroupedAuditLog:
    """``AuditLog`` over ``store``, appends grouped (module docstring); reads go straight
    to the store. ``close`` writes what is queued and stops the committing thread."""

    def __init__(self, store: AuditLog, max_records: int = 2_000) -> None:
        self.store = store
        self._group: GroupCommit[Sequence[AuditRecord], list[AuditEntry]] = GroupCommit(
            self._append_many, len, max_records
        )

    def _append_many(
        self, requests: Sequence[Sequence[AuditRecord]]
    ) -> list[list[AuditEntry] | NextbestError]:
        try:
            made = self.store.append([r for records in requests for r in records])
        except NextbestError as exc:
            return [exc] * len(requests)
        out: list[list[AuditEntry] | NextbestError] = []
        at = 0
        for records in requests:
            out.append(made[at : at + len(records)])
            at += len(records)
        return out

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if not records:
            return []
        return self._group.submit(list(records)).result()

    def entries(
        self, after: int = 0, limit: int | None = None, subject: str | None = None
    ) -> list[AuditEntry]:
        return self.store.entries(after, limit, subject)

    def head(self) -> AuditHead | None:
        return self.store.head()

    def close(self) -> None:
        self._group.close()
