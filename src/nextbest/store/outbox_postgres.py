"""The outbox on PostgreSQL (psycopg 3): a table ``outbox`` beside the logs, on the store's
connection (``PostgresDatabase``), created when the store opens if it is missing (in the
first schema of the ``search_path``, like every other table of the store).

A claim takes the due rows ``FOR UPDATE SKIP LOCKED``: many senders, in many processes,
claim disjoint messages without waiting on each other, and a row a sender holds is reclaimed
only once its lease has ended (``next_attempt_at``).
"""

from __future__ import annotations

from collections.abc import Collection

from nextbest.store.outbox_codec import COLUMNS, counts_of, mention, message_of
from nextbest.store.port import OutboxMessage, OutboxState
from nextbest.store.postgres import PostgresDatabase

__all__ = ["PostgresOutbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel text NOT NULL,
    destination text NOT NULL,
    key text COLLATE "C" NOT NULL UNIQUE,
    payload bytea NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'delivering', 'delivered', 'dead')),
    attempts integer NOT NULL,
    next_attempt_at double precision NOT NULL,
    last_error text NOT NULL,
    created_at double precision NOT NULL,
    delivered_at double precision
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at, id)
    WHERE state IN ('pending', 'delivering');
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, id);
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS customer text;
CREATE INDEX IF NOT EXISTS outbox_customer ON outbox (customer) WHERE customer IS NOT NULL;
CREATE INDEX IF NOT EXISTS outbox_untagged ON outbox (id) WHERE customer IS NULL;
"""


class PostgresOutbox:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        db.create_tables("create outbox", _SCHEMA)

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
            row = db.execute(
                "INSERT INTO outbox (channel, destination, key, payload, state, attempts, "
                "next_attempt_at, last_error, created_at, customer) VALUES (%s, %s, %s, %s, "
                f"'pending', 0, %s, '', %s, %s) ON CONFLICT (key) DO NOTHING RETURNING {COLUMNS}",
                (channel, destination, key, bytes(payload), now, now, customer),
            ).fetchone()
            if row is None:  # enqueued before (a committed row: the unique index waited)
                row = db.execute(f"SELECT {COLUMNS} FROM outbox WHERE key = %s", (key,)).fetchone()
        return message_of(row)

    def claim_due(self, now: float, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        with self.db.writing("claim") as db:
            rows = db.execute(
                "UPDATE outbox SET state = 'delivering', attempts = outbox.attempts + 1, "
                "next_attempt_at = %s FROM (SELECT id FROM outbox "
                "WHERE state IN ('pending', 'delivering') AND next_attempt_at <= %s "
                "ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) AS due "
                f"WHERE outbox.id = due.id RETURNING {_qualified('outbox')}",
                (now + lease_seconds, now, limit),
            ).fetchall()
        return sorted((message_of(r) for r in rows), key=lambda m: m.id)

    def mark_delivered(self, message_id: int, now: float) -> bool:
        with self.db.writing("mark delivered") as db:
            cur = db.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = %s "
                "WHERE id = %s AND state <> 'delivered'",
                (now, message_id),
            )
            return cur.rowcount > 0

    def mark_failed(
        self, message_id: int, attempt: int, error: str, retry_at: float | None
    ) -> bool:
        with self.db.writing("mark failed") as db:
            if retry_at is None:
                cur = db.execute(
                    "UPDATE outbox SET state = 'dead', last_error = %s "
                    "WHERE id = %s AND state = 'delivering' AND attempts = %s",
                    (error, message_id, attempt),
                )
            else:
                cur = db.execute(
                    "UPDATE outbox SET state = 'pending', last_error = %s, next_attempt_at = %s "
                    "WHERE id = %s AND state = 'delivering' AND attempts = %s",
                    (error, retry_at, message_id, attempt),
                )
            return cur.rowcount > 0

    def release(self, message_id: int, attempt: int, retry_at: float) -> bool:
        with self.db.writing("release") as db:
            cur = db.execute(
                "UPDATE outbox SET state = 'pending', attempts = attempts - 1, "
                "next_attempt_at = %s WHERE id = %s AND state = 'delivering' AND attempts = %s",
                (retry_at, message_id, attempt),
            )
            return cur.rowcount > 0

    def messages(
        self, state: OutboxState | None = None, after: int = 0, limit: int | None = None
    ) -> list[OutboxMessage]:
        rows = self.db.fetch(
            "read outbox",
            f"SELECT {COLUMNS} FROM outbox WHERE id > %s "
            "AND (%s::text IS NULL OR state = %s::text) ORDER BY id LIMIT %s",
            (after, None if state is None else state.value, None if state is None else state.value,
             limit),
        )  # fmt: skip
        return [message_of(r) for r in rows]

    def counts(self) -> dict[OutboxState, int]:
        return counts_of(
            self.db.fetch("count outbox", "SELECT state, COUNT(*) FROM outbox GROUP BY state")
        )

    def replay(self, message_ids: Collection[int], now: float) -> list[int]:
        ids = sorted(set(message_ids))
        if not ids:
            return []
        with self.db.writing("replay outbox") as db:
            rows = db.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = %s "
                "WHERE state = 'dead' AND id = ANY(%s::int8[]) RETURNING id",
                (now, ids),
            ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def erase_mentions(self, ids: Collection[str]) -> int:
        about = list(ids)
        needles = [mention(i) for i in about]
        with self.db.writing("erase outbox") as db:
            n = db.execute("DELETE FROM outbox WHERE customer = ANY(%s)", (about,)).rowcount
            n += db.execute(
                "DELETE FROM outbox o WHERE customer IS NULL AND EXISTS (SELECT 1 FROM "
                "unnest(%s::bytea[]) AS n(needle) WHERE position(n.needle in o.payload) > 0 "
                "OR position(n.needle in convert_to(o.key, 'UTF8')) > 0)",
                (needles,),
            ).rowcount
        return n


def _qualified(table: str) -> str:
    """``COLUMNS`` each named with ``table`` (RETURNING after an UPDATE ... FROM)."""
    return ", ".join(f"{table}.{c.strip()}" for c in COLUMNS.split(","))
