"""The callback queue and advisors' presence (``port.Callbacks``) on the embedded SQLite
file, beside the logs (``sqlite.SQLiteDatabase``: its lock, its translated errors).

A write is one ``BEGIN IMMEDIATE`` transaction: it takes SQLite's write lock before it
reads, so a booking counts the advisor's other callbacks and inserts its own with no other
writer in between, whether the racers are threads on one connection or other processes on
the same file (the file's lock serializes them; ``busy_timeout`` makes them wait).

Tables: ``callbacks`` (the record as msgspec JSON in ``body``, with the columns the queries
filter on) and ``advisor_state`` (presence and the rotation fact, one row per advisor).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from nextbest.advisors.board import Hold
from nextbest.advisors.model import Callback, CallbackState, Presence
from nextbest.errors import Conflict, InputError, NotFound
from nextbest.store import callbacks as rules
from nextbest.store.port import CallbackWrite, Capacity

if TYPE_CHECKING:  # sqlite.py opens this module: no import at run time
    from nextbest.store.sqlite import SQLiteDatabase

__all__ = ["SQLiteCallbacks"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callbacks (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    advisor_id TEXT,
    state TEXT NOT NULL,
    requested_at REAL NOT NULL,
    scheduled_for REAL,
    offer_expires_at REAL,
    version INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS callbacks_customer ON callbacks(customer, requested_at);
CREATE INDEX IF NOT EXISTS callbacks_advisor ON callbacks(advisor_id, state)
    WHERE advisor_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS callbacks_slot ON callbacks(advisor_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS callbacks_scheduled ON callbacks(scheduled_for)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS callbacks_offers ON callbacks(offer_expires_at)
    WHERE state = 'offered';
CREATE INDEX IF NOT EXISTS callbacks_requested ON callbacks(scheduled_for)
    WHERE state = 'requested';
CREATE INDEX IF NOT EXISTS callbacks_connect ON callbacks(offer_expires_at)
    WHERE state = 'accepted';
CREATE TABLE IF NOT EXISTS advisor_state (
    advisor_id TEXT PRIMARY KEY,
    presence TEXT,
    presence_at REAL,
    last_assigned_at REAL
);
"""

_FINAL = ", ".join(f"'{s}'" for s in rules.FINAL)
_LIVE = ", ".join(f"'{s}'" for s in rules.LIVE)


class SQLiteCallbacks:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        db.create_tables("create the callback tables", _SCHEMA)

    # ------------------------------------------------------------------ writes
    def create(self, callback: Callback, capacity: Capacity | None = None) -> Callback:
        with self.db.writing("create callback") as db:
            return self._create(db, callback, capacity)

    def _create(
        self, db: sqlite3.Connection, callback: Callback, capacity: Capacity | None
    ) -> Callback:
        stored = rules.stored_as(callback, 1)
        if db.execute("SELECT 1 FROM callbacks WHERE id = ?", (callback.id,)).fetchone():
            raise Conflict(f"callback {callback.id} exists already")
        mine = db.execute(
            f"SELECT body FROM callbacks WHERE customer = ? AND state NOT IN ({_FINAL})",
            (callback.customer,),
        ).fetchall()
        refusal = rules.in_flight(callback, (rules.decode(body) for (body,) in mine))
        if refusal is not None:
            raise refusal
        self._check(db, None, stored, capacity)
        db.execute(f"INSERT INTO callbacks ({rules.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   rules.row_of(stored))  # fmt: skip
        self._assigned(db, None, stored)
        return stored

    def save(
        self, callback: Callback, expected_version: int, capacity: Capacity | None = None
    ) -> Callback:
        with self.db.writing("save callback") as db:
            return self._save(db, callback, expected_version, capacity)

    def _save(
        self,
        db: sqlite3.Connection,
        callback: Callback,
        expected_version: int,
        capacity: Capacity | None,
    ) -> Callback:
        stored = rules.stored_as(callback, expected_version + 1)
        found = db.execute("SELECT body FROM callbacks WHERE id = ?", (callback.id,)).fetchone()
        before = rules.decode(found[0]) if found else None
        refusal = rules.refused(before, callback, expected_version)
        if refusal is not None:
            raise refusal
        self._check(db, before, stored, capacity)
        db.execute(
            "UPDATE callbacks SET customer = ?, advisor_id = ?, state = ?, requested_at = ?, "
            "scheduled_for = ?, offer_expires_at = ?, version = ?, body = ? WHERE id = ?",
            (*rules.row_of(stored)[1:], stored.id),
        )
        self._assigned(db, before, stored)
        return stored

    def write_many(self, writes: Sequence[CallbackWrite]) -> list[Callback | InputError]:
        """One ``BEGIN IMMEDIATE`` transaction, a savepoint per write (a refused one is
        rolled back to it), one commit."""
        out: list[Callback | InputError] = []
        if not writes:
            return out
        with self.db.writing("write callbacks") as db:
            for w in writes:
                db.execute("SAVEPOINT callback_write")
                try:
                    if w.expected_version is None:
                        done = self._create(db, w.callback, w.capacity)
                    else:
                        done = self._save(db, w.callback, w.expected_version, w.capacity)
                except (Conflict, NotFound) as refused:
                    db.execute("ROLLBACK TO callback_write")
                    db.execute("RELEASE callback_write")
                    out.append(refused)
                    continue
                db.execute("RELEASE callback_write")
                out.append(done)
        return out

    def _check(
        self,
        db: sqlite3.Connection,
        before: Callback | None,
        after: Callback,
        capacity: Capacity | None,
    ) -> None:
        def count_live(advisor: str) -> int:
            got = db.execute(
                "SELECT COUNT(*) FROM callbacks WHERE advisor_id = ? AND id != ? "
                f"AND state IN ({_LIVE})",
                (advisor, after.id),
            ).fetchone()
            return int(got[0])

        def count_slot(advisor: str, at: float, length: float) -> int:
            got = db.execute(
                "SELECT COUNT(*) FROM callbacks WHERE advisor_id = ? AND id != ? "
                "AND scheduled_for IS NOT NULL "
                "AND (scheduled_for = ? OR (scheduled_for > ? AND scheduled_for < ?)) "
                f"AND state NOT IN ({_FINAL})",
                (advisor, after.id, at, at - length, at + length),
            ).fetchone()
            return int(got[0])

        rules.check_capacity(before, after, capacity, count_live, count_slot)

    def _assigned(self, db: sqlite3.Connection, before: Callback | None, after: Callback) -> None:
        assigned = rules.assignment(before, after)
        if assigned is not None:
            db.execute(
                "INSERT INTO advisor_state (advisor_id, last_assigned_at) VALUES (?, ?) "
                "ON CONFLICT (advisor_id) DO UPDATE SET last_assigned_at = "
                "MAX(COALESCE(last_assigned_at, excluded.last_assigned_at), "
                "excluded.last_assigned_at)",
                assigned,
            )

    def set_presence(
        self, advisor_id: str, presence: Presence, at: float
    ) -> tuple[Presence, float]:
        with self.db.writing("set presence") as db:
            db.execute(
                "INSERT INTO advisor_state (advisor_id, presence, presence_at) VALUES (?, ?, ?) "
                "ON CONFLICT (advisor_id) DO UPDATE SET presence = excluded.presence, "
                "presence_at = excluded.presence_at "
                "WHERE presence_at IS NULL OR presence_at <= excluded.presence_at",
                (advisor_id, presence.value, at),
            )
            got = db.execute(
                "SELECT presence, presence_at FROM advisor_state WHERE advisor_id = ?",
                (advisor_id,),
            ).fetchone()
        return Presence(got[0]), float(got[1])

    def restore(
        self,
        callbacks: Sequence[Callback],
        presences: Mapping[str, tuple[Presence, float]] | None = None,
        rotation: Mapping[str, float] | None = None,
    ) -> None:
        with self.db.writing("restore callbacks") as db:
            db.executemany(
                f"INSERT OR REPLACE INTO callbacks ({rules.COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [rules.row_of(c) for c in callbacks],
            )
            db.executemany(
                "INSERT INTO advisor_state (advisor_id, presence, presence_at) VALUES (?, ?, ?) "
                "ON CONFLICT (advisor_id) DO UPDATE SET presence = excluded.presence, "
                "presence_at = excluded.presence_at",
                [(a, Presence(p).value, at) for a, (p, at) in (presences or {}).items()],
            )
            db.executemany(
                "INSERT INTO advisor_state (advisor_id, last_assigned_at) VALUES (?, ?) "
                "ON CONFLICT (advisor_id) DO UPDATE SET last_assigned_at = "
                "excluded.last_assigned_at",
                list((rotation or {}).items()),
            )

    # ------------------------------------------------------------------- reads
    def _callbacks(self, action: str, where: str, params: Sequence[object]) -> list[Callback]:
        rows = self.db.fetch(action, f"SELECT body FROM callbacks {where}", params)
        return [rules.decode(body) for (body,) in rows]

    def get(self, callback_id: str) -> Callback | None:
        found = self._callbacks("read callback", "WHERE id = ?", (callback_id,))
        return found[0] if found else None

    def of_customer(self, customer: str) -> list[Callback]:
        return self._callbacks(
            "read callbacks", "WHERE customer = ? ORDER BY requested_at, id", (customer,)
        )

    def erase_customers(self, customers: Collection[str]) -> int:
        with self.db.writing("erase callbacks") as db:
            return sum(
                db.execute("DELETE FROM callbacks WHERE customer = ?", (c,)).rowcount
                for c in customers
            )

    def of_advisor(
        self, advisor_id: str, states: Collection[CallbackState] | None = None
    ) -> list[Callback]:
        if states is None:
            return self._callbacks(
                "read callbacks", f"WHERE advisor_id = ? {rules.QUEUE_ORDER}", (advisor_id,)
            )
        wanted = sorted({CallbackState(s).value for s in states})
        if not wanted:
            return []
        marks = ", ".join("?" * len(wanted))
        return self._callbacks(
            "read callbacks",
            f"WHERE advisor_id = ? AND state IN ({marks}) {rules.QUEUE_ORDER}",
            (advisor_id, *wanted),
        )

    def open_load(self) -> dict[str, int]:
        rows = self.db.fetch(
            "read load",
            "SELECT advisor_id, COUNT(*) FROM callbacks WHERE advisor_id IS NOT NULL AND "
            f"(state IN ({_LIVE}) OR (state = 'requested' AND scheduled_for IS NOT NULL)) "
            "GROUP BY advisor_id ORDER BY advisor_id",
        )
        return {str(a): int(n) for a, n in rows}

    def holds(self, advisor_id: str | None = None) -> list[Hold]:
        query = (
            "SELECT id, advisor_id, state, scheduled_for FROM callbacks "
            f"WHERE advisor_id IS NOT NULL AND state NOT IN ({_FINAL}) "
            f"AND (state IN ({_LIVE}) OR scheduled_for IS NOT NULL) {{}}ORDER BY id"
        )
        if advisor_id is None:
            rows = self.db.fetch("read holds", query.format(""), ())
        else:
            rows = self.db.fetch("read holds", query.format("AND advisor_id = ? "), (advisor_id,))
        return [Hold(i, a, CallbackState(s), at) for i, a, s, at in rows]

    def booked(self, advisor_id: str | None, start: float, end: float) -> list[Callback]:
        where = (
            "WHERE scheduled_for >= ? AND scheduled_for < ? "
            f"AND state NOT IN ({_FINAL}) {{}}ORDER BY scheduled_for, id"
        )
        if advisor_id is None:
            return self._callbacks("read bookings", where.format(""), (start, end))
        return self._callbacks(
            "read bookings", where.format("AND advisor_id = ? "), (start, end, advisor_id)
        )

    def due(self, now: float, limit: int | None = None) -> list[Callback]:
        return self._callbacks(
            "read due callbacks",
            "WHERE (state IN ('offered', 'accepted') AND offer_expires_at <= ?) "
            "OR (state = 'requested' AND (scheduled_for IS NULL OR scheduled_for <= ?)) "
            "ORDER BY (state = 'requested' AND scheduled_for IS NULL), "
            "CASE WHEN state IN ('offered', 'accepted') THEN offer_expires_at "
            "ELSE COALESCE(scheduled_for, requested_at) END, id LIMIT ?",
            (now, now, -1 if limit is None else limit),
        )

    def presences(self) -> dict[str, tuple[Presence, float]]:
        rows = self.db.fetch(
            "read presence",
            "SELECT advisor_id, presence, presence_at FROM advisor_state "
            "WHERE presence IS NOT NULL ORDER BY advisor_id",
        )
        return rules.presences_of(rows)

    def rotation(self) -> dict[str, float]:
        rows = self.db.fetch(
            "read rotation",
            "SELECT advisor_id, last_assigned_at FROM advisor_state "
            "WHERE last_assigned_at IS NOT NULL ORDER BY advisor_id",
        )
        return rules.rotation_of(rows)

    def scan(self, after: str = "", limit: int | None = None) -> list[Callback]:
        return self._callbacks(
            "read callbacks",
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, -1 if limit is None else limit),
        )

    def count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM callbacks")
