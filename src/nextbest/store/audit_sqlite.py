"""The audit log on the embedded SQLite store: tables ``audit`` and ``audit_head`` in the
store's file, on its connection (``SQLiteDatabase``), created when the store opens.

An append is one ``BEGIN IMMEDIATE`` transaction: it reads the head, inserts the entries
chained after it and records the new head. SQLite runs one writer at a time (across
connections and processes too: the file lock), so two appends never chain from the same
head; ``seq`` is the primary key besides.
"""

from __future__ import annotations

from collections.abc import Sequence

from nextbest.audit.chain import chain
from nextbest.audit.model import AuditEntry, AuditHead, AuditRecord
from nextbest.store.audit_codec import COLUMNS, entry_of, head_of, row_of
from nextbest.store.sqlite import SQLiteDatabase

__all__ = ["SQLiteAuditLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit(subject, seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"""


class SQLiteAuditLog:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        db.create_tables("create audit log", _SCHEMA)

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if not records:
            return []
        with self.db.writing("audit append") as db:
            row = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            made = chain(records, head_of(row))
            db.executemany(
                f"INSERT INTO audit({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [row_of(e) for e in made],
            )
            db.execute(
                "INSERT INTO audit_head(id, seq, hash) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                (made[-1].seq, made[-1].hash),
            )
        return made

    def entries(
        self, after: int = 0, limit: int | None = None, subject: str | None = None
    ) -> list[AuditEntry]:
        where = "seq > ?" if subject is None else "seq > ? AND subject = ?"
        params: tuple[object, ...] = (after,) if subject is None else (after, subject)
        rows = self.db.fetch(
            "read audit log",
            f"SELECT {COLUMNS} FROM audit WHERE {where} ORDER BY seq LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [entry_of(r) for r in rows]

    def head(self) -> AuditHead | None:
        rows = self.db.fetch("read audit head", "SELECT seq, hash FROM audit_head WHERE id = 1")
        return head_of(rows[0] if rows else None)
