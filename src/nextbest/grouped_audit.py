"""The audit log with group commit: concurrent appends share one durable transaction.

Every audited read appends one record before it is answered, and a durable commit (an
fsync, a round trip to PostgreSQL) costs far more than the record. As ingestion does
(``group_commit``), the appends that arrive while one is being written wait for the next
one, which writes them all in one ``AuditLog.append``: under light load a group is one
read's record, under heavy load it grows by itself. Each caller gets its own entries back,
in the order it gave them, consecutive in the chain; a failed write fails every append of
its group (nothing of it is stored: the store's append is all or none).

A write the store could not reach (``StoreUnavailable``) is tried once more at once: a
connection that broke since its last use (a PostgreSQL restart) is opened again by the next
call, and a read should not be refused for a server that is back. If the first attempt did
commit and only its answer was lost, the group's records are in the log twice: an audit log
may say too much, never too little.
"""

from __future__ import annotations

from collections.abc import Sequence

from nextbest.audit.model import AuditEntry, AuditHead, AuditRecord
from nextbest.errors import NextbestError, StoreUnavailable
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
        flat = [r for records in requests for r in records]
        try:
            try:
                made = self.store.append(flat)
            except StoreUnavailable:
                made = self.store.append(flat)  # once more: a broken connection reopens
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
