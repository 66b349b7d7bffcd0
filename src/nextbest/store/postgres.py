"""PostgreSQL (psycopg 3): the event log, the decision log, saved state and the quarantine on
one server, for installations past one machine (DESIGN.md, "Storage and scale").

``postgres_stores(url)`` opens one connection per ``Stores`` (guarded by a lock, like the
embedded SQLite store: one durable commit at a time) and creates the schema if it is missing,
in the first schema of the connection's ``search_path`` (``?options=-csearch_path%3Dnextbest``
in the URL picks another). psycopg errors never leave this module: ``_translated`` maps them to
StoreError classes; a server that cannot be reached is a StoreUnavailable naming host, port,
database and user, never the password.

Tables (schema version ``SCHEMA_VERSION``, kept in ``nextbest_schema``):

- ``events`` and ``decisions`` are range-partitioned by their timestamp (epoch seconds,
  ``double precision``): one partition a UTC calendar month (``events_2026_09``,
  ``decisions_2026_09``, bounds the month's first second), created on demand by the append
  that first needs it. Bodies are the msgspec JSON bytes the SQLite store writes, so both
  backends read back identical objects (compressed with lz4 where the server has it); an
  append sends its rows by binary COPY (faster than a multi-row INSERT from 100 rows, as
  fast below: bench/store_postgres.py).
- ``message_ids`` and ``decision_ids`` are plain tables, one row per logged event / decision:
  a partitioned table's unique index must include the partition key, so it cannot say "this
  messageId is new" across months (a retry may carry another timestamp). These small tables
  (id, seq or position, timestamp) hold that uniqueness for every partition, and hand out the
  event seq and the decision position (identity columns).
- ``state``, ``state_watermark`` and ``quarantine`` are plain tables; ``event_log_source``
  one row: the bus stream sequence a fold worker logged every event up to (``append_at``,
  written behind its live state: ``nextbest.write_behind``); with several fold workers
  (``append_partitioned``, ``nextbest.partitioned_fold``) ``event_log_partitions`` has that
  position per bus partition and ``event_log_base`` the offset of their seqs (seq = base +
  stream sequence). ``events.stream_seq`` is the stream sequence a fold worker folded the
  event from (NULL for an event the log numbered itself, or logged before the column was
  added: ``_add_stream_seq``); an erasure deletes those messages from the stream.

Order: appends of events (and of decisions) take a transaction-level advisory lock, so seqs
are committed in the order they are handed out: a reader that has seen seq n never later
finds a smaller one appear (``scan(after)`` tails the log safely from many processes). A
rolled-back append leaves a gap; a seq or position is never handed out twice. Several fold
workers (``append_partitioned``) do not take the lock (each commits its own partitions'
events, their seqs fixed by the bus): there a smaller seq may appear after a larger one,
and the log is read whole (a replay) or by customer up to a seq every writer has logged
(a stitch: ``nextbest.partitioned_fold``), never tailed.

Retention: an old month leaves with ``ALTER TABLE events DETACH PARTITION events_2024_01
CONCURRENTLY``, then ``DROP TABLE events_2024_01`` (or, to keep it, archive it and move it
out of the way: ``ALTER TABLE ... SET SCHEMA archive``; a detached table left under its name
would stop a late event for that month from recreating the partition), the same for
``decisions``; then ``DELETE FROM message_ids WHERE timestamp < <the month's end>``
(likewise ``decision_ids``) once a client retry of those messages can no longer arrive.
Events of dropped months can no longer be replayed; a restart starts from the saved state
(``state``) and folds only the log after it. docs/storage.md has the commands.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, LiteralString

import msgspec
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from nextbest.decide.model import Decision
from nextbest.errors import ConfigError, StoreError, StoreUnavailable
from nextbest.events.model import Event
from nextbest.store.callbacks_postgres import PostgresCallbacks
from nextbest.store.port import (
    HeldMessage,
    SavedState,
    StateRow,
    StoredEvent,
    Stores,
    of_erased,
)

__all__ = [
    "SCHEMA_VERSION",
    "PostgresDatabase",
    "PostgresDecisionLog",
    "PostgresEventLog",
    "PostgresQuarantine",
    "PostgresStateStore",
    "month_of",
    "postgres_stores",
]

#: the layout this module reads and writes; a store with a later one is refused
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nextbest_schema (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS message_ids (
    message_id text COLLATE "C" PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    timestamp double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq bigint NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    user_id text,
    anonymous_id text,
    timestamp double precision NOT NULL,
    body bytea NOT NULL,
    stream_seq bigint,
    PRIMARY KEY (seq, timestamp)
) PARTITION BY RANGE (timestamp);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_anon ON events (anonymous_id) WHERE anonymous_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS decision_ids (
    decision_id text COLLATE "C" PRIMARY KEY,
    position bigint GENERATED ALWAYS AS IDENTITY,
    timestamp double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    position bigint NOT NULL,
    decision_id text COLLATE "C" NOT NULL,
    customer_id text NOT NULL,
    placement text NOT NULL,
    timestamp double precision NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (position, timestamp)
) PARTITION BY RANGE (timestamp);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (timestamp, decision_id);
CREATE INDEX IF NOT EXISTS decisions_customer ON decisions (customer_id, timestamp);
CREATE TABLE IF NOT EXISTS state (
    kind text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS state_watermark (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    version text NOT NULL
);
CREATE TABLE IF NOT EXISTS event_log_source (
    id integer PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS event_log_partitions (
    partition integer PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS event_log_base (
    id integer PRIMARY KEY CHECK (id = 1),
    base bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS erased_high (
    log text PRIMARY KEY,
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id text COLLATE "C" NOT NULL UNIQUE,
    received_at double precision NOT NULL,
    code text NOT NULL,
    reason text NOT NULL,
    path text NOT NULL,
    sender text NOT NULL,
    body bytea NOT NULL
);
"""

#: rows read per query when streaming a log or the saved state
_PAGE = 5_000
#: rows written per statement when saving state (bounds one statement's parameters)
_STATE_CHUNK = 10_000
_PartitionedTable = Literal["events", "decisions"]
#: the tables whose ``body`` column is compressed with lz4 where the server can
_BODY_TABLES = ("events", "decisions", "state", "quarantine")


def month_of(timestamp: float) -> tuple[int, int, float, float]:
    """The UTC calendar month holding ``timestamp``: year, month, and its bounds (epoch
    seconds, the upper one excluded)."""
    day = datetime.fromtimestamp(timestamp, UTC)
    start = datetime(day.year, day.month, 1, tzinfo=UTC)
    end = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
    return day.year, day.month, start.timestamp(), end.timestamp()


class _Where(msgspec.Struct, frozen=True):
    """Where a URL points, for messages: never its password."""

    host: str
    port: str
    dbname: str
    user: str
    password: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname} as {self.user}"

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text


def _where(url: str) -> _Where:
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        # psycopg's message quotes the URL, password and all: say what is expected instead
        raise ConfigError(
            "the data setting is not a valid PostgreSQL URL: write "
            "postgresql://user[:password]@host[:port]/dbname[?options=...]"
        ) from None
    return _Where(
        host=str(info.get("host") or "localhost"),
        port=str(info.get("port") or "5432"),
        dbname=str(info.get("dbname") or info.get("user") or "(default)"),
        user=str(info.get("user") or "(default)"),
        password=str(info.get("password") or ""),
    )


@contextmanager
def _translated(action: str, where: _Where) -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"PostgreSQL {where} {action}: {where.scrub(str(exc))}") from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL {where} {action}: {where.scrub(str(exc))}") from exc


#: the column types of a COPY into ``decisions`` (id, 3 texts, time, body)
_LOG_ROW_TYPES = ["int8", "text", "text", "text", "float8", "bytea"]
#: into ``events``: the same, then the stream sequence (NULL: none)
_EVENT_ROW_TYPES = [*_LOG_ROW_TYPES, "int8"]


def _copy(
    db: psycopg.Connection[Any],
    copy: LiteralString,
    rows: list[tuple[Any, ...]],
    types: list[str] = _LOG_ROW_TYPES,
) -> None:
    """``rows`` into a log table by ``COPY ... FROM STDIN (FORMAT BINARY)``."""
    with db.cursor() as cur, cur.copy(copy + " FROM STDIN (FORMAT BINARY)") as sink:
        sink.set_types(types)
        for row in rows:
            sink.write_row(row)


def _claim(
    db: psycopg.Connection[Any],
    table: Literal["message_ids", "decision_ids"],
    ids: list[str],
    timestamps: list[float],
) -> dict[str, int]:
    """Register ``ids`` (with their timestamps) in an id table, under its append lock:
    the number handed to each id not there yet (a seq, a decision position), in the batch's
    order. Nobody else inserts under the lock, so NOT EXISTS is exact and a duplicate takes
    no number."""
    key, number = _ID_TABLES[table]
    query = sql.SQL(
        "INSERT INTO {table} ({key}, timestamp) "
        "SELECT b.k, b.t FROM unnest(%b::text[], %b::float8[]) WITH ORDINALITY AS b(k, t, i) "
        "WHERE NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{key} = b.k) "
        "ORDER BY b.i ON CONFLICT DO NOTHING RETURNING {key}, {number}"
    ).format(table=sql.Identifier(table), key=sql.Identifier(key), number=sql.Identifier(number))
    return dict(db.execute(query, (ids, timestamps)).fetchall())


#: an id table's id column and the number it hands out
_ID_TABLES: dict[str, tuple[str, str]] = {
    "message_ids": ("message_id", "seq"),
    "decision_ids": ("decision_id", "position"),
}


#: the transaction lock under which tables are created (one per schema of the server)
_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('nextbest ' || current_schema()))"


def postgres_stores(url: str, connect_timeout: int = 10) -> Stores:
    """The ports on the PostgreSQL server ``url`` names (one connection)."""
    from nextbest.store.audit_postgres import PostgresAuditLog  # these build on this module
    from nextbest.store.outbox_postgres import PostgresOutbox

    db = PostgresDatabase(url, connect_timeout)
    try:
        callbacks = PostgresCallbacks(db)
        outbox = PostgresOutbox(db)
        audit = PostgresAuditLog(db)
    except BaseException:
        db.close()
        raise
    return Stores(
        PostgresEventLog(db),
        PostgresDecisionLog(db),
        PostgresStateStore(db),
        PostgresQuarantine(db),
        callbacks=callbacks,
        outbox=outbox,
        audit=audit,
        close=db.close,
    )


class PostgresDatabase:
    """One connection guarded by a lock; reconnected on the next call after it broke."""

    def __init__(self, url: str, connect_timeout: int = 10) -> None:
        self.url = url
        self.where = _where(url)
        self.connect_timeout = connect_timeout
        self.lock = threading.Lock()
        #: partitions known to exist, per partitioned table: month start (epoch seconds)
        self.partitions: dict[str, set[float]] = {"events": set(), "decisions": set()}
        self.connection = self._connect()
        try:
            self._create_schema()
        except BaseException:
            self.connection.close()
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name="nextbest",
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"PostgreSQL not reachable at {self.where}: {self.where.scrub(str(exc)).strip()}"
            ) from exc

    def _create_schema(self) -> None:
        with _translated("create schema", self.where), self.connection.transaction():
            db = self.connection
            db.execute(_SCHEMA_LOCK)
            db.execute(_SCHEMA)
            db.execute(
                "INSERT INTO nextbest_schema (id, version) VALUES (1, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (SCHEMA_VERSION,),
            )
            self._compress_with_lz4(db)
            _add_stream_seq(db)
            row = db.execute("SELECT version FROM nextbest_schema").fetchone()
            version = int(row[0]) if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"PostgreSQL {self.where}: the store has schema version {version}, this "
                    f"nextbest reads version {SCHEMA_VERSION}: upgrade nextbest"
                )
        self._load_partitions()

    def _compress_with_lz4(self, db: psycopg.Connection[Any]) -> None:
        """Bodies over ~2 KB (decisions, profiles) are compressed by PostgreSQL: with lz4
        (PostgreSQL 14+, when built with it) rather than pglz, decision log appends run ~1.5x
        faster for about the same size on disk (BENCHMARKS.md). Set once; partitions inherit
        it."""
        if db.info.server_version < 140000:
            return
        for table in _BODY_TABLES:
            row = db.execute(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attname = 'body'",
                (table,),
            ).fetchone()
            if row is None or row[0] == "l":
                continue
            try:
                with db.transaction():  # a savepoint: a server without lz4 keeps pglz
                    db.execute(
                        sql.SQL("ALTER TABLE {} ALTER COLUMN body SET COMPRESSION lz4").format(
                            sql.Identifier(table)
                        )
                    )
            except psycopg.errors.FeatureNotSupported:
                return

    def _load_partitions(self) -> None:
        rows = self.fetch(
            "read partitions",
            "SELECT parent.relname, child.relname FROM pg_inherits "
            "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
            "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
            "WHERE parent.oid IN (to_regclass('events'), to_regclass('decisions'))",
        )
        for table in self.partitions.values():
            table.clear()
        for parent, child in rows:
            match = re.fullmatch(r"[a-z]+_(\d{4})_(\d{2})", child)
            if match is not None:
                start = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC).timestamp()
                self.partitions[parent].add(start)

    def ensure_partitions(
        self, db: psycopg.Connection[Any], table: _PartitionedTable, timestamps: Iterable[float]
    ) -> list[float]:
        """Create the month partitions of ``table`` these timestamps need (inside the caller's
        transaction, under its append lock); the month starts created, for the cache once
        the transaction commits."""
        known = self.partitions[table]
        months: set[tuple[int, int, float, float]] = set()
        lo = hi = 0.0  # the last month seen: most batches fall in one
        for t in timestamps:
            if not lo <= t < hi:
                found = month_of(t)
                months.add(found)
                lo, hi = found[2], found[3]
        made: list[float] = []
        for year, month, start, end in sorted(months):
            if start in known:
                continue
            db.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(f"{table}_{year:04d}_{month:02d}"),
                    sql.Identifier(table),
                    sql.Literal(start),
                    sql.Literal(end),
                )
            )
            made.append(start)
        return made

    def _live(self) -> psycopg.Connection[Any]:
        if self.connection.closed:
            self.connection = self._connect()
        return self.connection

    def create_tables(self, action: str, schema: str) -> None:
        """Run ``schema`` (``CREATE ... IF NOT EXISTS``) in one transaction under the schema
        lock the store creates its own tables under: two stores opening at once do not race."""
        with self.writing(action) as db:
            db.execute(_SCHEMA_LOCK)
            db.execute(schema)

    @contextmanager
    def writing(self, action: str, lock: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        """One locked transaction (holding the advisory lock of table ``lock`` if named);
        psycopg errors translated. After a failure the partitions known are forgotten: the
        next append checks its months again (``CREATE ... IF NOT EXISTS``)."""
        with self.lock:
            try:
                with _translated(action, self.where):
                    db = self._live()
                    with db.transaction():
                        if lock is not None:
                            db.execute(
                                "SELECT pg_advisory_xact_lock(%s::regclass::oid::bigint)", (lock,)
                            )
                        yield db
            except StoreError:
                self._forget_partitions()
                raise

    def _forget_partitions(self) -> None:
        for table in self.partitions.values():
            table.clear()

    def fetch(self, action: str, query: str, params: Sequence[object] = ()) -> list[Any]:
        with self.lock, _translated(action, self.where):
            return self._live().execute(query, params).fetchall()

    def scalar(self, query: str) -> int:
        rows = self.fetch("read", query)
        return int(rows[0][0] or 0) if rows else 0

    def close(self) -> None:
        with self.lock, _translated("close", self.where):
            self.connection.close()


def _add_stream_seq(db: psycopg.Connection[Any]) -> None:
    """``events.stream_seq`` on a table made before it (NULL in its rows): looked up
    first, so a start never takes the table's exclusive lock once the column is there."""
    found = db.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = 'events'::regclass "
        "AND attname = 'stream_seq' AND NOT attisdropped"
    ).fetchone()
    if found is None:
        db.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS stream_seq bigint")


class PostgresEventLog:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self._event_enc = msgspec.json.Encoder()
        self._event_dec = msgspec.json.Decoder(Event)

    def append(self, events: Sequence[Event]) -> list[int | None]:
        if not events:
            return []
        enc = self._event_enc.encode
        fresh: dict[str, Event] = {}
        for e in events:
            fresh.setdefault(e.message_id, e)
        ids = list(fresh)
        bodies = {m: enc(e) for m, e in fresh.items()}  # before the lock: it is held briefly
        with self.db.writing("append", lock="message_ids") as db:
            made = self.db.ensure_partitions(db, "events", (e.timestamp for e in fresh.values()))
            seqs = _claim(db, "message_ids", ids, [fresh[m].timestamp for m in ids])
            if seqs:
                rows = [
                    (seqs[m], m, e.user_id, e.anonymous_id, e.timestamp, bodies[m], None)
                    for m, e in fresh.items()
                    if m in seqs
                ]
                self.write_rows(db, rows)
        self.db.partitions["events"].update(made)
        out: list[int | None] = []
        for e in events:
            out.append(seqs.pop(e.message_id, None))  # a repeat within the batch: None
        return out

    def logged(self, message_ids: Collection[str]) -> set[str]:
        ids = list(message_ids)
        if not ids:
            return set()
        # one index lookup per id, whatever the planner thinks of the array: ``= ANY(%s)``
        # turned into a sequential scan from a few hundred ids (seconds per batch once the
        # table held 70,000 rows and the statement was prepared)
        rows = self.db.fetch(
            "read message ids",
            "SELECT u.id FROM unnest(%s::text[]) AS u(id), LATERAL "
            "(SELECT 1 FROM message_ids m WHERE m.message_id = u.id LIMIT 1) AS found",
            (ids,),
        )
        return {str(r[0]) for r in rows}

    def append_at(self, events: Sequence[StoredEvent], position: int) -> None:
        enc = self._event_enc.encode
        rows = [
            (s.seq, s.event.message_id, s.event.user_id, s.event.anonymous_id,
             s.event.timestamp, enc(s.event), s.stream_seq)
            for s in events
        ]  # fmt: skip
        made: list[float] = []
        with self.db.writing("append", lock="message_ids") as db:
            if rows:
                got = db.execute("SELECT max(seq) FROM events").fetchone()
                last = int(got[0] or 0) if got else 0
                if rows[0][0] <= last or any(a[0] >= b[0] for a, b in itertools.pairwise(rows)):
                    raise StoreError(
                        f"PostgreSQL {self.db.where}: event log append at seq {rows[0][0]}, "
                        f"the log ends at {last}: another writer appended meanwhile"
                    )
                made = self.db.ensure_partitions(db, "events", (r[4] for r in rows))
                db.execute(
                    "INSERT INTO message_ids (message_id, seq, timestamp) OVERRIDING SYSTEM VALUE "
                    "SELECT * FROM unnest(%b::text[], %b::int8[], %b::float8[])",
                    ([r[1] for r in rows], [r[0] for r in rows], [r[4] for r in rows]),
                )
                self.write_rows(db, rows)
                # appends that take their seq from the identity go on after these
                db.execute(
                    "SELECT setval(pg_get_serial_sequence('message_ids', 'seq'), %s)",
                    (rows[-1][0],),
                )
            db.execute(
                "INSERT INTO event_log_source (id, position) VALUES (1, %s) ON CONFLICT (id) "
                "DO UPDATE SET position = GREATEST(event_log_source.position, EXCLUDED.position)",
                (position,),
            )
        self.db.partitions["events"].update(made)

    def source_position(self) -> int:
        return self.db.scalar("SELECT position FROM event_log_source")

    def seq_base(self) -> int:
        with self.db.writing("event log base", lock="message_ids") as db:
            db.execute(
                "INSERT INTO event_log_base (id, base) SELECT 1, "
                "COALESCE((SELECT max(seq) FROM events), 0) - "
                "COALESCE((SELECT position FROM event_log_source), 0) "
                "ON CONFLICT (id) DO NOTHING"
            )
            row = db.execute("SELECT base FROM event_log_base").fetchone()
        return int(row[0]) if row else 0

    def partition_positions(self) -> dict[int, int]:
        rows = self.db.fetch(
            "read partition positions", "SELECT partition, position FROM event_log_partitions"
        )
        return {int(p): int(n) for p, n in rows}

    def append_partitioned(
        self, events: Sequence[StoredEvent], positions: Mapping[int, int]
    ) -> None:
        enc = self._event_enc.encode
        rows = [
            (s.seq, s.event.message_id, s.event.user_id, s.event.anonymous_id,
             s.event.timestamp, enc(s.event), s.stream_seq)
            for s in events
        ]  # fmt: skip
        if any(a[0] >= b[0] for a, b in itertools.pairwise(rows)):
            raise StoreError(f"PostgreSQL {self.db.where}: seqs of one append must increase")
        made: list[float] = []
        known = self.db.partitions["events"]
        with self.db.writing("append") as db:
            if rows:
                if any(month_of(r[4])[2] not in known for r in rows):
                    # a new month: its partition is made under the append lock (two writers
                    # creating it at once would collide)
                    db.execute("SELECT pg_advisory_xact_lock('message_ids'::regclass::oid::bigint)")
                    made = self.db.ensure_partitions(db, "events", (r[4] for r in rows))
                taken = db.execute(
                    "SELECT u.seq FROM unnest(%b::int8[]) AS u(seq), LATERAL "
                    "(SELECT 1 FROM events e WHERE e.seq = u.seq LIMIT 1) AS found LIMIT 1",
                    ([r[0] for r in rows],),
                ).fetchone()
                if taken is not None:
                    raise StoreError(
                        f"PostgreSQL {self.db.where}: event log append at seq {taken[0]}: "
                        "logged already (another writer of these partitions?)"
                    )
                try:
                    db.execute(
                        "INSERT INTO message_ids (message_id, seq, timestamp) "
                        "OVERRIDING SYSTEM VALUE "
                        "SELECT * FROM unnest(%b::text[], %b::int8[], %b::float8[])",
                        ([r[1] for r in rows], [r[0] for r in rows], [r[4] for r in rows]),
                    )
                except psycopg.errors.UniqueViolation as exc:
                    raise StoreError(
                        f"PostgreSQL {self.db.where}: event log append: a messageId of seqs "
                        f"{rows[0][0]}..{rows[-1][0]} is logged already (another writer of "
                        f"these partitions?): {exc.diag.message_detail or exc}"
                    ) from exc
                self.write_rows(db, rows)
            if positions:
                parts = sorted(positions)
                db.execute(
                    "INSERT INTO event_log_partitions (partition, position) "
                    "SELECT * FROM unnest(%b::int4[], %b::int8[]) ON CONFLICT (partition) "
                    "DO UPDATE SET position = "
                    "GREATEST(event_log_partitions.position, EXCLUDED.position)",
                    (parts, [positions[p] for p in parts]),
                )
        self.db.partitions["events"].update(made)

    def write_rows(self, db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        """Send event rows by binary COPY: as fast as one ``INSERT ... SELECT unnest`` of the
        columns as arrays for 1-10 events, 20-30% faster from 100 (bench/store_postgres.py,
        BENCHMARKS.md); for small batches either is small beside the commit."""
        _copy(
            db,
            "COPY events (seq, message_id, user_id, anonymous_id, timestamp, body, stream_seq)",
            rows,
            _EVENT_ROW_TYPES,
        )

    def _rows(self, query: str, params: Sequence[object]) -> list[StoredEvent]:
        dec = self._event_dec.decode
        rows = self.db.fetch("read", query, params)
        return [StoredEvent(seq, dec(body), stream) for seq, body, stream in rows]

    def scan(self, after: int = 0) -> Iterator[StoredEvent]:
        while True:  # in pages, so the lock is never held for the whole log
            rows = self._rows(
                "SELECT seq, body, stream_seq FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
                (after, _PAGE),
            )
            yield from rows
            if len(rows) < _PAGE:
                return
            after = rows[-1].seq

    def events_of(
        self, user_ids: Collection[str], anonymous_ids: Collection[str], upto: int
    ) -> list[StoredEvent]:
        users, anons = list(user_ids), list(anonymous_ids)
        if not users and not anons:
            return []
        return self._rows(
            "SELECT seq, body, stream_seq FROM events "
            "WHERE (user_id = ANY(%s) OR anonymous_id = ANY(%s)) AND seq <= %s ORDER BY seq",
            (users, anons, upto),
        )

    def last_seq(self) -> int:
        return self.db.scalar(
            "SELECT GREATEST((SELECT MAX(seq) FROM events), "
            "(SELECT position FROM erased_high WHERE log = 'events'))"
        )

    def count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM events")

    def erase(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """``message_ids`` keeps the erased messageIds (random ids a client made, nothing
        of the customer's): a retry or a bus redelivery of an erased event stays a
        duplicate, and seqs are never handed out twice (its identity)."""
        users, anons = list(user_ids), list(anonymous_ids)
        with self.db.writing("erase events", lock="message_ids") as db:
            _raise_high(db, "events", "SELECT MAX(seq) FROM events")
            n = db.execute("DELETE FROM events WHERE user_id = ANY(%s)", (users,)).rowcount
            n += db.execute(
                "DELETE FROM events WHERE anonymous_id = ANY(%s) AND user_id IS NULL", (anons,)
            ).rowcount
        return n


class PostgresDecisionLog:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self._decision_dec = msgspec.json.Decoder(Decision)

    def append_decisions(self, decisions: Sequence[Decision]) -> None:
        if not decisions:
            return
        enc = msgspec.json.encode
        fresh: dict[str, Decision] = {}
        for d in decisions:
            fresh.setdefault(d.decision_id, d)
        ids = list(fresh)
        bodies = {i: enc(d) for i, d in fresh.items()}  # before the lock: it is held briefly
        with self.db.writing("append decisions", lock="decision_ids") as db:
            made = self.db.ensure_partitions(db, "decisions", (d.timestamp for d in fresh.values()))
            positions = _claim(db, "decision_ids", ids, [fresh[i].timestamp for i in ids])
            if positions:
                rows = [
                    (positions[i], i, d.customer_id, d.placement, d.timestamp, bodies[i])
                    for i, d in fresh.items()
                    if i in positions
                ]
                self.write_rows(db, rows)
        self.db.partitions["decisions"].update(made)

    def write_rows(self, db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
        """Send decision rows by binary COPY (as ``PostgresEventLog.write_rows``)."""
        _copy(
            db,
            "COPY decisions (position, decision_id, customer_id, placement, timestamp, body)",
            rows,
        )

    def decision(self, decision_id: str) -> Decision | None:
        rows = self.db.fetch(
            "read decision",
            "SELECT d.body FROM decision_ids i JOIN decisions d "
            "ON d.position = i.position AND d.timestamp = i.timestamp WHERE i.decision_id = %s",
            (decision_id,),
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
                "WHERE timestamp >= %s AND (timestamp, decision_id) > (%s, %s) "
                "AND timestamp < %s ORDER BY timestamp, decision_id LIMIT %s",
                (last[0], last[0], last[1], hi, _PAGE),
            )
            for ts, decision_id, body in rows:
                yield self._decision_dec.decode(body)
                last = (ts, decision_id)
            if len(rows) < _PAGE:
                return

    def decision_log_position(self) -> int:
        # the identity of decision_ids: handed out in order under the append lock, never
        # twice; an erasure of the last rows records how far it went (``erased_high``)
        return self.db.scalar(
            "SELECT GREATEST((SELECT MAX(position) FROM decisions), "
            "(SELECT position FROM erased_high WHERE log = 'decisions'))"
        )

    def decisions_of(self, customers: Collection[str]) -> list[Decision]:
        rows = self.db.fetch(
            "read decisions",
            "SELECT body FROM decisions WHERE customer_id = ANY(%s) ORDER BY timestamp, "
            "decision_id",
            (list(customers),),
        )
        return [self._decision_dec.decode(body) for (body,) in rows]

    def erase_decisions(self, customers: Collection[str]) -> list[str]:
        """``decision_ids`` keeps the erased decisions' ids (random, nothing of the
        customer's) and so their positions, which are never handed out again."""
        with self.db.writing("erase decisions", lock="decision_ids") as db:
            _raise_high(db, "decisions", "SELECT MAX(position) FROM decisions")
            rows = db.execute(
                "DELETE FROM decisions WHERE customer_id = ANY(%s) RETURNING decision_id",
                (list(customers),),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def decisions_after(self, position: int) -> Iterator[Decision]:
        last = position
        while True:  # in pages, so the lock is never held for the whole log
            rows = self.db.fetch(
                "read decisions",
                "SELECT position, body FROM decisions WHERE position > %s "
                "ORDER BY position LIMIT %s",
                (last, _PAGE),
            )
            for pos, body in rows:
                yield self._decision_dec.decode(body)
                last = pos
            if len(rows) < _PAGE:
                return


class PostgresStateStore:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def save_state(
        self, seq: int, version: str, rows: Sequence[StateRow], replace: bool = False
    ) -> None:
        # as SQLite does: deletes first, then upserts, the last one of a key winning
        upserts = {(r.kind, r.key): r.body for r in rows if r.body is not None}
        deletes = [(r.kind, r.key) for r in rows if r.body is None]
        with self.db.writing("save state") as db:
            if replace:
                db.execute("TRUNCATE state")
            for start in range(0, len(deletes), _STATE_CHUNK):
                kinds, keys = zip(*deletes[start : start + _STATE_CHUNK], strict=True)
                db.execute(
                    "DELETE FROM state USING unnest(%b::text[], %b::text[]) AS d(kind, key) "
                    "WHERE state.kind = d.kind AND state.key = d.key",
                    (list(kinds), list(keys)),
                )
            items = list(upserts.items())
            for start in range(0, len(items), _STATE_CHUNK):
                chunk = items[start : start + _STATE_CHUNK]
                db.execute(
                    "INSERT INTO state (kind, key, body) "
                    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[]) "
                    "ON CONFLICT (kind, key) DO UPDATE SET body = EXCLUDED.body",
                    ([k for (k, _), _ in chunk], [k for (_, k), _ in chunk], [b for _, b in chunk]),
                )
            db.execute(
                "INSERT INTO state_watermark (id, seq, version) VALUES (1, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, version = EXCLUDED.version",
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
                "SELECT kind, key, body FROM state WHERE (kind, key) > (%s, %s) "
                "ORDER BY kind, key LIMIT %s",
                (*after, _PAGE),
            )
            for kind, key, body in rows:
                yield StateRow(kind, key, bytes(body))
            if len(rows) < _PAGE:
                return
            after = (rows[-1][0], rows[-1][1])


class PostgresQuarantine:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(Event)

    def hold(self, messages: Sequence[HeldMessage]) -> None:
        if not messages:
            return
        enc = self._enc.encode
        columns: list[list[Any]] = [[], [], [], [], [], [], []]
        for m in messages:
            row = (m.event.message_id, m.received_at, m.code, m.reason, m.path, m.sender)
            for column, value in zip(columns, (*row, enc(m.event)), strict=True):
                column.append(value)
        with self.db.writing("quarantine") as db:
            db.execute(
                "INSERT INTO quarantine (message_id, received_at, code, reason, path, sender, "
                "body) SELECT m, a, c, r, p, s, b FROM unnest(%b::text[], %b::float8[], "
                "%b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[]) "
                "WITH ORDINALITY AS q(m, a, c, r, p, s, b, i) ORDER BY i "
                "ON CONFLICT (message_id) DO NOTHING",
                columns,
            )

    def held(self, after: int = 0, limit: int | None = None) -> list[HeldMessage]:
        rows = self.db.fetch(
            "read quarantine",
            "SELECT id, received_at, code, reason, path, sender, body FROM quarantine "
            "WHERE id > %s ORDER BY id LIMIT %s",
            (after, limit),
        )
        dec = self._dec.decode
        return [HeldMessage(i, at, c, r, p, s, dec(b)) for i, at, c, r, p, s, b in rows]

    def release(self, ids: Collection[int]) -> None:
        with self.db.writing("release quarantine") as db:
            db.execute("DELETE FROM quarantine WHERE id = ANY(%b::int8[])", (list(ids),))

    def held_count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM quarantine")

    def erase_held(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """Held messages are JSON: the ones naming an id are found by ``position``, then
        read."""
        users, anons = set(user_ids), set(anonymous_ids)
        needles = [msgspec.json.encode(i) for i in sorted(users | anons)]
        dec = self._dec.decode
        with self.db.writing("erase quarantine") as db:
            rows = db.execute(
                "SELECT id, body FROM quarantine q WHERE EXISTS (SELECT 1 FROM "
                "unnest(%s::bytea[]) AS n(needle) WHERE position(n.needle in q.body) > 0)",
                (needles,),
            ).fetchall()
            gone = [int(i) for i, body in rows if of_erased(dec(body), users, anons)]
            db.execute("DELETE FROM quarantine WHERE id = ANY(%b::int8[])", (gone,))
        return len(gone)


def _raise_high(db: psycopg.Connection[Any], log: str, last: str) -> None:
    """Before an erasure deletes rows of ``log``: record the highest position it holds now
    (``last``), so that a position is never read as the log's end again once it is gone."""
    db.execute(
        f"INSERT INTO erased_high (log, position) SELECT %s, COALESCE(({last}), 0) "
        "ON CONFLICT (log) DO UPDATE SET position = "
        "GREATEST(erased_high.position, EXCLUDED.position)",
        (log,),
    )
