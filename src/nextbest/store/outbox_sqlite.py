"""The outbox on the embedded SQLite store: a table ``outbox`` in the store's file, on its
connection (``SQLiteDatabase``), created when the store opens.

A claim is one ``UPDATE ... RETURNING`` statement: SQLite runs one writer at a time (across
processes too: the file lock), so two senders never claim the same message within its lease.
"""

from __future__ import annotations

from collections.abc import Collection

from nextbest.store.outbox_codec import COLUMNS, counts_of, mention, message_of
from nextbest.store.port import OutboxMessage, OutboxState
from nextbest.store.sqlite import SQLiteDatabase

__all__ = ["SQLiteOutbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_attempt_at, id)
    WHERE state IN ('pending', 'delivering');
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, id);
"""

#: the customer a message is about (a column added after the table: an ALTER when missing)
_CUSTOMER = """
CREATE INDEX IF NOT EXISTS outbox_customer ON outbox(customer) WHERE customer IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_untagged ON outbox(id) WHERE customer IS NULL;
"""

#: ids named in one statement (far below SQLite's limit of 32,766 parameters)
_IDS_PER_STATEMENT = 10_000


class SQLiteOutbox:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        db.create_tables("create outbox", _SCHEMA)
        columns = {r[1] for r in db.fetch("read outbox", "PRAGMA table_info(outbox)")}
        if "customer" not in columns:
            with db.writing("add outbox customer") as c:
                c.execute("ALTER TABLE outbox ADD COLUMN customer TEXT")
        db.create_tables("create outbox", _CUSTOMER)

    def enqueue(
        self,
        channel: str,
        destination: str,
        key: str,
        payload: bytes,
        now: float,
        customer: str | None = None,
    ) -> OutboxMessage:
        with self.db.writing("enqueue") as db:
            db.execute(
                "INSERT INTO outbox(channel, destination, key, payload, state, attempts, "
                "next_attempt_at, last_error, created_at, customer) VALUES (?, ?, ?, ?, "
                "'pending', 0, ?, '', ?, ?) ON CONFLICT(key) DO NOTHING",
                (channel, destination, key, bytes(payload), now, now, customer),
            )
            row = db.execute(f"SELECT {COLUMNS} FROM outbox WHERE key = ?", (key,)).fetchone()
        return message_of(row)

    def claim_due(self, now: float, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        with self.db.statement("claim") as db:
            rows = db.execute(
                "UPDATE outbox SET state = 'delivering', attempts = attempts + 1, "
                "next_attempt_at = ? WHERE id IN (SELECT id FROM outbox "
                "WHERE state IN ('pending', 'delivering') AND next_attempt_at <= ? "
                f"ORDER BY next_attempt_at, id LIMIT ?) RETURNING {COLUMNS}",
                (now + lease_seconds, now, limit),
            ).fetchall()
        return sorted((message_of(r) for r in rows), key=lambda m: m.id)  # RETURNING: any order

    def mark_delivered(self, message_id: int, now: float) -> bool:
        with self.db.statement("mark delivered") as db:
            cur = db.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = ? "
                "WHERE id = ? AND state != 'delivered'",
                (now, message_id),
            )
            return cur.rowcount > 0

    def mark_failed(
        self, message_id: int, attempt: int, error: str, retry_at: float | None
    ) -> bool:
        with self.db.statement("mark failed") as db:
            if retry_at is None:
                cur = db.execute(
                    "UPDATE outbox SET state = 'dead', last_error = ? "
                    "WHERE id = ? AND state = 'delivering' AND attempts = ?",
                    (error, message_id, attempt),
                )
            else:
                cur = db.execute(
                    "UPDATE outbox SET state = 'pending', last_error = ?, next_attempt_at = ? "
                    "WHERE id = ? AND state = 'delivering' AND attempts = ?",
                    (error, retry_at, message_id, attempt),
                )
            return cur.rowcount > 0

    def release(self, message_id: int, attempt: int, retry_at: float) -> bool:
        with self.db.statement("release") as db:
            cur = db.execute(
                "UPDATE outbox SET state = 'pending', attempts = attempts - 1, "
                "next_attempt_at = ? WHERE id = ? AND state = 'delivering' AND attempts = ?",
                (retry_at, message_id, attempt),
            )
            return cur.rowcount > 0

    def messages(
        self, state: OutboxState | None = None, after: int = 0, limit: int | None = None
    ) -> list[OutboxMessage]:
        where = "id > ?" if state is None else "id > ? AND state = ?"
        params: tuple[object, ...] = (after,) if state is None else (after, state.value)
        rows = self.db.fetch(
            "read outbox",
            f"SELECT {COLUMNS} FROM outbox WHERE {where} ORDER BY id LIMIT ?",
            (*params, -1 if limit is None else limit),
        )
        return [message_of(r) for r in rows]

    def counts(self) -> dict[OutboxState, int]:
        return counts_of(
            self.db.fetch("count outbox", "SELECT state, COUNT(*) FROM outbox GROUP BY state")
        )

    def replay(self, message_ids: Collection[int], now: float) -> list[int]:
        ids = sorted(set(message_ids))
        if not ids:
            return []
        done: list[int] = []
        with self.db.writing("replay outbox") as db:
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                chunk = ids[start : start + _IDS_PER_STATEMENT]
                done += (
                    int(r[0])
                    for r in db.execute(
                        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ? "
                        f"WHERE state = 'dead' AND id IN ({', '.join('?' * len(chunk))}) "
                        "RETURNING id",
                        (now, *chunk),
                    ).fetchall()
                )
        return sorted(done)

    def erase_mentions(self, ids: Collection[str]) -> int:
        """By the customer index, then one pass over the messages enqueued without a
        customer (``outbox_untagged``)."""
        about = list(ids)
        if not about:
            return 0
        needles = [mention(i) for i in about]
        test = "instr(payload, ?) > 0 OR instr(CAST(key AS BLOB), ?) > 0"
        with self.db.writing("erase outbox") as db:
            n = db.execute(
                f"DELETE FROM outbox WHERE customer IN ({','.join('?' * len(about))})", about
            ).rowcount
            named = " OR ".join([test] * len(needles))
            n += db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY "
                f"outbox_untagged WHERE customer IS NULL AND ({named}))",
                [b for needle in needles for b in (needle, needle)],
            ).rowcount
        return n
