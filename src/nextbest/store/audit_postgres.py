"""The audit log on PostgreSQL (psycopg 3): tables ``audit`` and ``audit_head`` beside the
logs, on the store's connection (``PostgresDatabase``), created when the store opens if they
are missing.

An append holds the advisory lock of the ``audit`` table for its transaction: appends from
every connection and process (API workers, the fold worker, a command) queue there, each
reading the head, inserting the entries chained after it and recording the new head; the
primary key on ``seq`` stands behind it.
"""

from __future__ import annotations

from collections.abc import Sequence

from nextbest.audit.chain import chain
from nextbest.audit.model import AuditEntry, AuditHead, AuditRecord
from nextbest.store.audit_codec import COLUMNS, entry_of, head_of, row_of
from nextbest.store.postgres import PostgresDatabase

__all__ = ["PostgresAuditLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq bigint PRIMARY KEY,
    time double precision NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    subject text COLLATE "C" NOT NULL,
    details text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit (subject, seq);
CREATE TABLE IF NOT EXISTS audit_head (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    hash text NOT NULL
);
"""


class PostgresAuditLog:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        db.create_tables("create audit log", _SCHEMA)

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if not records:
            return []
        with self.db.writing("audit append", lock="audit") as db:
            row = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            made = chain(records, head_of(row))
            with db.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO audit ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [row_of(e) for e in made],
                )
            db.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                (made[-1].seq, made[-1].hash),
            )
        return made

    def entries(
        self, after: int = 0, limit: int | None = None, subject: str | None = None
    ) -> list[AuditEntry]:
        rows = self.db.fetch(
            "read audit log",
            f"SELECT {COLUMNS} FROM audit WHERE seq > %s "
            "AND (%s::text IS NULL OR subject = %s::text) ORDER BY seq LIMIT %s",
            (after, subject, subject, limit),
        )
        return [entry_of(r) for r in rows]

    def head(self) -> AuditHead | None:
        rows = self.db.fetch("read audit head", "SELECT seq, hash FROM audit_head WHERE id = 1")
        return head_of(rows[0] if rows else None)
