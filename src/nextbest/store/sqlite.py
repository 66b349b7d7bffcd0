"""Embedded SQLite (WAL): the event log, the decision log and saved state in one file.

One ``SQLiteDatabase`` (a connection guarded by a lock) serves the three ports, each its own
class. sqlite3 errors never leave this module: ``_translated`` maps them to StoreError classes.
"""

from __future__ import annotations

import functools
import math
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import msgspec

from nextbest.decide.model import Decision
from nextbest.errors import StoreError, StoreUnavailable
from nextbest.events.model import Event
from nextbest.store.callbacks_sqlite import SQLiteCallbacks
from nextbest.store.port import (
    HeldMessage,
    SavedState,
    StateRow,
    StoredEvent,
    Stores,
    of_erased,
)

__all__ = [
    "SQLiteDatabase",
    "SQLiteDecisionLog",
    "SQLiteEventLog",
    "SQLiteQuarantine",
    "SQLiteStateStore",
    "sqlite_stores",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    user_id TEXT,
    anonymous_id TEXT,
    timestamp REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_anon ON events(anonymous_id) WHERE anonymous_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    placement TEXT NOT NULL,
    timestamp REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_customer ON decisions(customer_id, timestamp);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(timestamp, decision_id);
CREATE TABLE IF NOT EXISTS state (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);  -- a rowid table: ~1 KB rows write 3x faster than WITHOUT ROWID
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    received_at REAL NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    path TEXT NOT NULL,
    sender TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS event_positions (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    high INTEGER NOT NULL
);  -- the highest event seq before an erasure deleted rows (seqs are AUTOINCREMENT)
CREATE TABLE IF NOT EXISTS decision_positions (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    high INTEGER NOT NULL
);  -- the highest decision rowid handed out before an erasure deleted it
CREATE TABLE IF NOT EXISTS erased_messages (
    message_id TEXT PRIMARY KEY
) WITHOUT ROWID;  -- the messageIds of erased events: a retry of one stays a duplicate
CREATE TRIGGER IF NOT EXISTS events_erased_stay_out BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM erased_messages WHERE message_id = NEW.message_id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TABLE IF NOT EXISTS state_watermark (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    version TEXT NOT NULL
);
"""

#: rows read per query when streaming the decision log
_PAGE = 2_000
_SYNC = {"OFF", "NORMAL", "FULL", "EXTRA"}


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "unable to open" in text or "disk I/O" in text:
            raise StoreUnavailable(f"SQLite {action}: {text}") from exc
        raise StoreError(f"SQLite {action}: {text}") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite {action}: {exc}") from exc


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; on any error, the COMMIT's own included, ROLLBACK without
    hiding the first error (the connection is never left inside a transaction)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def sqlite_stores(path: str | Path, synchronous: str = "FULL") -> Stores:
    """The ports on one SQLite file (one connection: one durable commit each)."""
    from nextbest.store.audit_sqlite import SQLiteAuditLog  # these build on this module
    from nextbest.store.outbox_sqlite import SQLiteOutbox

    db = SQLiteDatabase(path, synchronous)
    try:
        callbacks = SQLiteCallbacks(db)
        outbox = SQLiteOutbox(db)
        audit = SQLiteAuditLog(db)
    except BaseException:
        db.close()
        raise
    return Stores(
        SQLiteEventLog(db),
        SQLiteDecisionLog(db),
        SQLiteStateStore(db),
        SQLiteQuarantine(db),
        callbacks=callbacks,
        outbox=outbox,
        audit=audit,
        close=db.close,
    )


class SQLiteDatabase:
    """One connection guarded by a lock; ``synchronous=FULL`` by default (durable commits)."""

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in _SYNC:
            raise StoreError(f"synchronous must be one of {sorted(_SYNC)}")
        self.path = str(path)
        self.lock = threading.Lock()
        with _translated("open"):
            if self.path != ":memory:":
                try:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreUnavailable(
                        f"cannot create {Path(self.path).parent}: {exc}"
                    ) from exc
            self.connection = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None
            )
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self.connection.execute("PRAGMA busy_timeout=5000")
            # a deleted or replaced row's bytes are overwritten with zeros (an erased
            # customer's events, an older copy of their profile): not left in free pages
            self.connection.execute("PRAGMA secure_delete=ON")
            # checkpoint the WAL every ~40 MB rather than every 4 MB: fewer, larger copies
            self.connection.execute("PRAGMA wal_autocheckpoint=10000")
            self.connection.executescript(_SCHEMA)

    def create_tables(self, action: str, schema: str) -> None:
        """Run ``schema`` (``CREATE ... IF NOT EXISTS`` statements split at ``;``) in one
        transaction."""
        with self.writing(action) as db:
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)

    @contextmanager
    def writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One locked transaction; sqlite3 errors translated."""
        with self.lock, _translated(action), _transaction(self.connection) as db:
            yield db

    @contextmanager
    def statement(self, action: str) -> Iterator[sqlite3.Connection]:
        """The locked connection for a write that is one statement, its own transaction:
        atomic, and on disk when it returns (``synchronous=FULL``); errors translated."""
        with self.lock, _translated(action):
            yield self.connection

    def fetch(self, action: str, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self.lock, _translated(action):
            return self.connection.execute(sql, params).fetchall()

    def scalar(self, sql: str) -> int:
        rows = self.fetch("read", sql)
        return int(rows[0][0] or 0) if rows else 0

    def close(self) -> None:
        with self.lock, _translated("close"):
            self.connection.close()

    def scrub(self) -> None:
        """Copy the WAL into the file and empty it (``wal_checkpoint(TRUNCATE)``): the page
        images it held (with rows deleted since) are gone from disk too."""
        with self.lock, _translated("checkpoint"):
            self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


#: rows of one multi-row INSERT into events (5 parameters each, far below SQLite's limit of
#: 32,766); a group commit of 2,000 single events is one statement
_ROWS_PER_INSERT = 2_000


@functools.lru_cache(maxsize=64)  # a 2,000-row statement is 80 kB of SQL
def _insert_events(rows: int) -> str:
    """The INSERT of ``rows`` events. Python's sqlite3 binds a str, an int, a float and a
    bytearray as they are, but looks every other value (None, bytes) up in its adapter
    registry first, failing two attribute lookups (some 3,300 instructions a value, more
    than the rest of a row's binding): so a missing id is bound as ``""`` (``NULLIF``
    stores it as NULL; a read never makes an empty id: ``events.parse``) and the body as a
    bytearray."""
    return (
        "INSERT INTO events(message_id, user_id, anonymous_id, timestamp, body) VALUES "
        + ", ".join(["(?, NULLIF(?, ''), NULLIF(?, ''), ?, ?)"] * rows)
        + " ON CONFLICT(message_id) DO NOTHING"
    )


@functools.lru_cache(maxsize=64)
def _select_seqs(count: int) -> str:
    return f"SELECT seq, message_id FROM events WHERE message_id IN ({', '.join(['?'] * count)})"


#: an erasure keeps the erased events' messageIds (random ids a client made, nothing of the
#: customer's) so that a retry of one is a duplicate (the trigger on ``events`` skips it)
_KEEP_ERASED = (
    "INSERT OR IGNORE INTO erased_messages(message_id) SELECT message_id FROM events WHERE "
)


class SQLiteEventLog:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        self._event_enc = msgspec.json.Encoder()
        self._event_dec = msgspec.json.Decoder(Event)

    def append(self, events: Sequence[Event]) -> list[int | None]:
        """Every event whose messageId is new, in order, durably: its seq, or None for a
        duplicate (stored before, or earlier in ``events``).

        One statement for a group of up to ``_ROWS_PER_INSERT`` new messageIds: a multi-row
        INSERT that is its own transaction (SQLite commits it, with its fsync, before it
        returns), not a BEGIN, an INSERT per event and a COMMIT. Each statement lets go of
        the GIL while SQLite runs it, and a thread that lets go may wait up to a switch
        interval (5 ms) to get it back while the event loop's thread serves requests: a
        group commit of 30 events paid that some 32 times, now once. Larger groups take one
        transaction of several such INSERTs. Rows inserted by one write get consecutive
        seqs (AUTOINCREMENT, one writer at a time), the last one ``lastrowid``; when some
        were stored before (a retry), the new rows are the ones with the largest seqs."""
        out: list[int | None] = [None] * len(events)
        firsts: list[int] = []  # the first event of each messageId, in order
        seen: set[str] = set()
        for i, e in enumerate(events):
            if e.message_id not in seen:
                seen.add(e.message_id)
                firsts.append(i)
        if not firsts:
            return out
        enc = self._event_enc.encode
        chunks = [
            firsts[start : start + _ROWS_PER_INSERT]
            for start in range(0, len(firsts), _ROWS_PER_INSERT)
        ]
        rows: list[list[Any]] = []
        for chunk in chunks:
            values: list[Any] = []
            for i in chunk:
                e = events[i]
                body = bytearray(enc(e))  # bound as it is (``_insert_events``)
                values += (e.message_id, e.user_id or "", e.anonymous_id or "", e.timestamp, body)
            rows.append(values)
        write = self.db.statement if len(chunks) == 1 else self.db.writing
        with write("append") as db:
            for chunk, values in zip(chunks, rows, strict=True):
                cur = db.execute(_insert_events(len(chunk)), values)
                inserted, last = cur.rowcount, cur.lastrowid
                if inserted == len(chunk) and last is not None:
                    for n, i in enumerate(chunk, last - inserted + 1):
                        out[i] = n
                elif inserted > 0:  # a retry: some messageIds were stored before
                    ids = [events[i].message_id for i in chunk]
                    found = db.execute(_select_seqs(len(ids)), ids).fetchall()
                    new = dict(sorted(found)[-inserted:])  # seq -> messageId
                    seq_of = {message_id: seq for seq, message_id in new.items()}
                    for i in chunk:
                        out[i] = seq_of.get(events[i].message_id)
        return out

    def _rows(self, sql: str, params: Sequence[object]) -> list[StoredEvent]:
        dec = self._event_dec.decode
        rows = self.db.fetch("read", sql, params)
        return [StoredEvent(seq, dec(body)) for seq, body in rows]

    def scan(self, after: int = 0) -> Iterator[StoredEvent]:
        page = 5_000
        while True:
            rows = self._rows(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, page)
            )
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].seq

    def events_of(
        self, user_ids: Collection[str], anonymous_ids: Collection[str], upto: int
    ) -> list[StoredEvent]:
        users, anons = list(user_ids), list(anonymous_ids)
        clauses = []
        if users:
            clauses.append(f"user_id IN ({','.join('?' * len(users))})")
        if anons:
            clauses.append(f"anonymous_id IN ({','.join('?' * len(anons))})")
        if not clauses:
            return []
        sql = (
            f"SELECT seq, body FROM events WHERE ({' OR '.join(clauses)}) AND seq <= ? ORDER BY seq"
        )
        return self._rows(sql, [*users, *anons, upto])

    def last_seq(self) -> int:
        # the last rows may have been erased: the highest seq an erasure saw stays the end
        return self.db.scalar(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM events), 0), "
            "COALESCE((SELECT high FROM event_positions), 0))"
        )

    def count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM events")

    def erase(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """One statement per id, each on its index; seqs are AUTOINCREMENT (never reused);
        the erased messageIds kept in ``erased_messages``."""
        n = 0
        with self.db.writing("erase events") as db:
            db.execute(
                "INSERT INTO event_positions(id, high) "
                "SELECT 1, COALESCE(MAX(seq), 0) FROM events WHERE true "
                "ON CONFLICT(id) DO UPDATE SET high = MAX(high, excluded.high)"
            )
            for user in user_ids:
                db.execute(_KEEP_ERASED + "user_id = ?", (user,))
                n += db.execute("DELETE FROM events WHERE user_id = ?", (user,)).rowcount
            for anon in anonymous_ids:
                db.execute(_KEEP_ERASED + "anonymous_id = ? AND user_id IS NULL", (anon,))
                n += db.execute(
                    "DELETE FROM events WHERE anonymous_id = ? AND user_id IS NULL", (anon,)
                ).rowcount
        return n

    def scrub(self) -> None:
        """``SQLiteDatabase.scrub`` (``port.Scrubbing``)."""
        self.db.scrub()


class SQLiteDecisionLog:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        self._decision_dec = msgspec.json.Decoder(Decision)

    def append_decisions(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        enc = msgspec.json.encode
        rows = [(d.decision_id, d.customer_id, d.placement, d.timestamp, enc(d)) for d in decisions]
        with self.db.writing("append decisions") as db:
            high, last = db.execute(
                "SELECT (SELECT high FROM decision_positions), (SELECT MAX(rowid) FROM decisions)"
            ).fetchone()
            if high is not None and (last or 0) < high:
                # the last rows were erased: go on above every rowid ever handed out
                db.executemany(
                    "INSERT OR IGNORE INTO decisions(rowid, decision_id, customer_id, "
                    "placement, timestamp, body) VALUES (?, ?, ?, ?, ?, ?)",
                    [(high + 1 + i, *row) for i, row in enumerate(rows)],
                )
                return
            db.executemany(
                "INSERT OR IGNORE INTO decisions(decision_id, customer_id, placement, "
                "timestamp, body) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def decision(self, decision_id: str) -> Decision | None:
        rows = self.db.fetch(
            "read decision", "SELECT body FROM decisions WHERE decision_id = ?", (decision_id,)
        )
        return self._decision_dec.decode(rows[0][0]) if rows else None

    def decisions(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[Decision]:
        lo = -math.inf if since is None else since
        hi = math.inf if until is None else until
        last: tuple[float, str] = (lo, "")
        while True:  # in pages, so the lock is never held for the whole log
            rows = self.db.fetch(
                "read decisions",
                "SELECT timestamp, decision_id, body FROM decisions "
                "WHERE (timestamp, decision_id) > (?, ?) AND timestamp < ? "
                "ORDER BY timestamp, decision_id LIMIT ?",
                (last[0], last[1], hi, _PAGE),
            )
            for ts, decision_id, body in rows:
                yield self._decision_dec.decode(body)
                last = (ts, decision_id)
            if len(rows) < _PAGE:
                return

    def decision_log_position(self) -> int:
        # the rowid: an append takes one above every row's (rows are never replaced), and
        # above ``decision_positions.high`` once an erasure deleted the last rows
        return self.db.scalar(
            "SELECT MAX(COALESCE((SELECT MAX(rowid) FROM decisions), 0), "
            "COALESCE((SELECT high FROM decision_positions), 0))"
        )

    def decisions_of(self, customers: Collection[str]) -> list[Decision]:
        keys = list(customers)
        rows = self.db.fetch(
            "read decisions",
            f"SELECT body FROM decisions WHERE customer_id IN ({','.join('?' * len(keys))}) "
            "ORDER BY timestamp, decision_id",
            keys,
        )
        return [self._decision_dec.decode(body) for (body,) in rows]

    def erase_decisions(self, customers: Collection[str]) -> list[str]:
        keys = list(customers)
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        with self.db.writing("erase decisions") as db:
            gone = [
                str(i)
                for (i,) in db.execute(
                    f"SELECT decision_id FROM decisions WHERE customer_id IN ({marks})", keys
                )
            ]
            if gone:
                db.execute(
                    "INSERT INTO decision_positions(id, high) "
                    "SELECT 1, COALESCE(MAX(rowid), 0) FROM decisions WHERE true "
                    "ON CONFLICT(id) DO UPDATE SET high = MAX(high, excluded.high)"
                )
                db.execute(f"DELETE FROM decisions WHERE customer_id IN ({marks})", keys)
        return gone

    def decisions_after(self, position: int) -> Iterator[Decision]:
        last = position
        while True:  # in pages, so the lock is never held for the whole log
            rows = self.db.fetch(
                "read decisions",
                "SELECT rowid, body FROM decisions WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (last, _PAGE),
            )
            for rowid, body in rows:
                yield self._decision_dec.decode(body)
                last = rowid
            if len(rows) < _PAGE:
                return


class SQLiteStateStore:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def save_state(
        self, seq: int, version: str, rows: Sequence[StateRow], replace: bool = False
    ) -> None:
        upserts = [(r.kind, r.key, r.body) for r in rows if r.body is not None]
        deletes = [(r.kind, r.key) for r in rows if r.body is None]
        with self.db.writing("save state") as db:
            if replace:
                db.execute("DELETE FROM state")
            db.executemany("DELETE FROM state WHERE kind = ? AND key = ?", deletes)
            db.executemany(
                "INSERT OR REPLACE INTO state(kind, key, body) VALUES (?, ?, ?)", upserts
            )
            db.execute(
                "INSERT OR REPLACE INTO state_watermark(id, seq, version) VALUES (1, ?, ?)",
                (seq, version),
            )

    def load_state(self) -> SavedState | None:
        marks = self.db.fetch("load state", "SELECT seq, version FROM state_watermark")
        if not marks:
            return None
        return SavedState(int(marks[0][0]), str(marks[0][1]), self._state_rows())

    def _state_rows(self) -> Iterator[StateRow]:
        after: tuple[str, str] = ("", "")
        while True:
            rows = self.db.fetch(
                "load state",
                "SELECT kind, key, body FROM state WHERE (kind, key) > (?, ?) "
                "ORDER BY kind, key LIMIT 10000",
                after,
            )
            for kind, key, body in rows:
                yield StateRow(kind, key, bytes(body))
            if len(rows) < 10_000:
                return
            after = (rows[-1][0], rows[-1][1])


class SQLiteQuarantine:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(Event)

    def hold(self, messages: Sequence[HeldMessage]) -> None:
        if not messages:
            return
        enc = self._enc.encode
        rows = [
            (m.event.message_id, m.received_at, m.code, m.reason, m.path, m.sender, enc(m.event))
            for m in messages
        ]
        with self.db.writing("quarantine") as db:
            db.executemany(
                "INSERT INTO quarantine(message_id, received_at, code, reason, path, sender, "
                "body) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(message_id) DO NOTHING",
                rows,
            )

    def held(self, after: int = 0, limit: int | None = None) -> list[HeldMessage]:
        rows = self.db.fetch(
            "read quarantine",
            "SELECT id, received_at, code, reason, path, sender, body FROM quarantine "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, -1 if limit is None else limit),
        )
        dec = self._dec.decode
        return [HeldMessage(i, at, c, r, p, s, dec(b)) for i, at, c, r, p, s, b in rows]

    def release(self, ids: Collection[int]) -> None:
        with self.db.writing("release quarantine") as db:
            db.executemany("DELETE FROM quarantine WHERE id = ?", [(i,) for i in ids])

    def held_count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM quarantine")

    def erase_held(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """Held messages are JSON: the ones naming an id are found by ``instr`` (one pass),
        then read."""
        users, anons = set(user_ids), set(anonymous_ids)
        dec = self._dec.decode
        needles = [msgspec.json.encode(i) for i in sorted(users | anons)]
        if not needles:
            return 0
        test = " OR ".join(["instr(body, ?) > 0"] * len(needles))
        with self.db.writing("erase quarantine") as db:  # one pass over the quarantine
            rows = db.execute(f"SELECT id, body FROM quarantine WHERE {test}", needles)
            gone = [i for i, body in rows.fetchall() if of_erased(dec(body), users, anons)]
            db.executemany("DELETE FROM quarantine WHERE id = ?", [(i,) for i in gone])
        return len(gone)
