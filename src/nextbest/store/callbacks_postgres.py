"""The callback queue and advisors' presence (``port.Callbacks``) on PostgreSQL, beside the
logs (``postgres.PostgresDatabase``: its connection, its lock, its translated errors).

A write is one transaction. A compare-and-set reads the stored row ``FOR UPDATE``: of two
advisors accepting one callback at once, the second waits, then finds the version moved.
A write that books an advisor (a ``Capacity`` given) first takes a transaction-level
advisory lock keyed on the advisor (and the schema): every booking of that advisor, from
any connection of any process, counts their other callbacks and writes its own one at a
time, so exactly ``limit`` of many racing requests win a slot. In READ COMMITTED each
statement sees what was committed before it began, so the count after the lock sees every
earlier booking.

One in flight per customer and topic: a unique index on (customer, topic) of the callbacks
not final. A create never reads first: ``INSERT ... ON CONFLICT DO NOTHING``, and a row not
inserted is told apart (its id taken: ``Conflict``; another in flight: ``InFlight``). Of two
workers creating at once the second waits for the first's commit, then is refused.

``write_many`` first takes every lock its writes may need in one order (advisors, then rows,
by id: two workers' groups do not deadlock on them), then inserts the creates that hold no
advisor (a "now" waiting for someone, the most common write) in one statement for each run
of them; the others each under a savepoint, in order.

Tables (created with the rest, ``CREATE ... IF NOT EXISTS``): ``callbacks`` (the record as
msgspec JSON in ``body``, with the columns the queries filter on) and ``advisor_state``
(presence and the rotation fact, one row per advisor).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from nextbest.advisors.board import Hold
from nextbest.advisors.model import Callback, CallbackState, Presence
from nextbest.errors import Conflict, InputError, NotFound
from nextbest.store import callbacks as rules
from nextbest.store.port import CallbackWrite, Capacity

if TYPE_CHECKING:  # postgres.py opens this module: no import at run time
    from nextbest.store.postgres import PostgresDatabase

__all__ = ["PostgresCallbacks"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callbacks (
    id text COLLATE "C" PRIMARY KEY,
    customer text COLLATE "C" NOT NULL,
    advisor_id text COLLATE "C",
    state text NOT NULL,
    requested_at double precision NOT NULL,
    scheduled_for double precision,
    offer_expires_at double precision,
    version bigint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS callbacks_customer ON callbacks (customer, requested_at);
CREATE INDEX IF NOT EXISTS callbacks_advisor ON callbacks (advisor_id, state)
    WHERE advisor_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS callbacks_slot ON callbacks (advisor_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS callbacks_scheduled ON callbacks (scheduled_for)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS callbacks_offers ON callbacks (offer_expires_at)
    WHERE state = 'offered';
CREATE INDEX IF NOT EXISTS callbacks_requested ON callbacks (scheduled_for)
    WHERE state = 'requested';
ALTER TABLE callbacks ADD COLUMN IF NOT EXISTS topic text COLLATE "C";
UPDATE callbacks SET topic = convert_from(body, 'UTF8')::jsonb->>'topic' WHERE topic IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS callbacks_in_flight ON callbacks (customer, topic)
    WHERE state NOT IN ('cancelled', 'completed', 'expired');
CREATE INDEX IF NOT EXISTS callbacks_holds ON callbacks (advisor_id)
    WHERE advisor_id IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'expired');
CREATE INDEX IF NOT EXISTS callbacks_connect ON callbacks (offer_expires_at)
    WHERE state = 'accepted';
CREATE TABLE IF NOT EXISTS advisor_state (
    advisor_id text COLLATE "C" PRIMARY KEY,
    presence text,
    presence_at double precision,
    last_assigned_at double precision
);
"""

_FINAL = list(rules.FINAL)
_LIVE = list(rules.LIVE)
_COLUMNS = f"{rules.COLUMNS}, topic"
_VALUES = "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
#: the creates of a run, one array per column (``_COLUMNS``)
_UNNEST = (
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], "
    "%s::float8[], %s::float8[], %s::int8[], %s::bytea[], %s::text[])"
)


def _row(c: Callback) -> tuple[Any, ...]:
    return (*rules.row_of(c), c.topic)


def _plain(write: CallbackWrite) -> bool:
    """A create that holds no advisor: no capacity to count, no rotation to move."""
    return write.expected_version is None and write.callback.advisor_id is None


def _lock_advisor(db: psycopg.Connection[Any], advisor_id: str) -> None:
    """Hold, until the transaction ends, the lock every booking of this advisor takes."""
    db.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended("
        "'nextbest advisor ' || current_schema() || ' ' || %s, 0))",
        (advisor_id,),
    )


def _lock_in_order(db: psycopg.Connection[Any], writes: Sequence[CallbackWrite]) -> None:
    """Take, before any write of a group, the locks its writes may take, in one order (the
    advisors' by id, then the saved rows' by id): two workers' groups locking the same
    advisors or rows in other orders would deadlock (PostgreSQL breaks it after
    ``deadlock_timeout`` by failing one group whole). A write takes them again (a no-op)."""
    advisors = {w.callback.advisor_id for w in writes if w.capacity is not None}
    for advisor_id in sorted(a for a in advisors if a is not None):
        _lock_advisor(db, advisor_id)
    saved = sorted({w.callback.id for w in writes if w.expected_version is not None})
    if saved:
        db.execute(
            "SELECT id FROM callbacks WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (saved,)
        ).fetchall()


class PostgresCallbacks:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        db.create_tables("create the callback tables", _SCHEMA)

    # ------------------------------------------------------------------ writes
    def create(self, callback: Callback, capacity: Capacity | None = None) -> Callback:
        with self.db.writing("create callback") as db:
            return self._create(db, callback, capacity)

    def _create(
        self, db: psycopg.Connection[Any], callback: Callback, capacity: Capacity | None
    ) -> Callback:
        stored = rules.stored_as(callback, 1)
        if capacity is not None and stored.advisor_id is not None:
            _lock_advisor(db, stored.advisor_id)
        self._check(db, None, stored, capacity)
        inserted = db.execute(
            f"INSERT INTO callbacks ({_COLUMNS}) {_VALUES} ON CONFLICT DO NOTHING RETURNING 1",
            _row(stored),
        ).fetchone()
        if inserted is None:
            raise self._not_created(db, [stored])[0]
        self._assigned(db, None, stored)
        return stored

    def _not_created(
        self, db: psycopg.Connection[Any], callbacks: Sequence[Callback]
    ) -> list[InputError]:
        """Why each of ``callbacks`` was not inserted: its id is taken, or its customer has
        another callback about its topic in flight."""
        ids = [c.id for c in callbacks]
        taken = {
            str(i) for (i,) in db.execute("SELECT id FROM callbacks WHERE id = ANY(%s)", (ids,))
        }
        held = {
            (str(c), str(t)): str(i)
            for i, c, t in db.execute(
                "SELECT id, customer, topic FROM callbacks WHERE customer = ANY(%s) "
                "AND state <> ALL(%s)",
                (sorted({c.customer for c in callbacks}), _FINAL),
            )
        }
        return [
            Conflict(f"callback {c.id} exists already")
            if c.id in taken
            else rules.in_flight_refusal(c, held.get((c.customer, c.topic)))
            for c in callbacks
        ]

    def _create_plain(
        self, db: psycopg.Connection[Any], callbacks: Sequence[Callback]
    ) -> list[Callback | InputError]:
        """Creates that hold no advisor, in one statement; each refused alone."""
        stored = [rules.stored_as(c, 1) for c in callbacks]
        columns = [list(col) for col in zip(*(_row(c) for c in stored), strict=True)]
        inserted = {
            str(i)
            for (i,) in db.execute(
                f"INSERT INTO callbacks ({_COLUMNS}) {_UNNEST} ON CONFLICT DO NOTHING RETURNING id",
                columns,
            )
        }
        # a repeated id in the run: its first is inserted, the others refused
        firsts: set[str] = set()
        refused: list[int] = []
        for i, c in enumerate(stored):
            if c.id in inserted and c.id not in firsts:
                firsts.add(c.id)
            else:
                refused.append(i)
        out: list[Callback | InputError] = list(stored)
        if refused:
            reasons = self._not_created(db, [stored[i] for i in refused])
            for i, reason in zip(refused, reasons, strict=True):
                out[i] = reason
        return out

    def save(
        self, callback: Callback, expected_version: int, capacity: Capacity | None = None
    ) -> Callback:
        with self.db.writing("save callback") as db:
            return self._save(db, callback, expected_version, capacity)

    def _save(
        self,
        db: psycopg.Connection[Any],
        callback: Callback,
        expected_version: int,
        capacity: Capacity | None,
    ) -> Callback:
        stored = rules.stored_as(callback, expected_version + 1)
        found = db.execute(
            "SELECT body FROM callbacks WHERE id = %s FOR UPDATE", (callback.id,)
        ).fetchone()
        before = rules.decode(found[0]) if found else None
        refusal = rules.refused(before, callback, expected_version)
        if refusal is not None:
            raise refusal
        if capacity is not None and stored.advisor_id is not None and rules.checks(before, stored):
            _lock_advisor(db, stored.advisor_id)
        self._check(db, before, stored, capacity)
        db.execute(
            "UPDATE callbacks SET customer = %s, advisor_id = %s, state = %s, "
            "requested_at = %s, scheduled_for = %s, offer_expires_at = %s, version = %s, "
            "body = %s WHERE id = %s",
            (*rules.row_of(stored)[1:], stored.id),
        )
        self._assigned(db, before, stored)
        return stored

    def write_many(self, writes: Sequence[CallbackWrite]) -> list[Callback | InputError]:
        """One transaction, one commit: each run of creates that hold no advisor in one
        statement, every other write under a savepoint (psycopg's nested ``transaction()``:
        a refused one is rolled back to it). The advisors' locks taken are held to
        the commit."""
        out: list[Callback | InputError] = []
        if not writes:
            return out
        with self.db.writing("write callbacks") as db:
            _lock_in_order(db, writes)
            at = 0
            while at < len(writes):
                run = at
                while run < len(writes) and _plain(writes[run]):
                    run += 1
                if run > at:
                    out.extend(self._create_plain(db, [w.callback for w in writes[at:run]]))
                    at = run
                    continue
                w = writes[at]
                at += 1
                try:
                    with db.transaction():
                        if w.expected_version is None:
                            done = self._create(db, w.callback, w.capacity)
                        else:
                            done = self._save(db, w.callback, w.expected_version, w.capacity)
                except (Conflict, NotFound) as refused:
                    out.append(refused)
                    continue
                out.append(done)
        return out

    def _check(
        self,
        db: psycopg.Connection[Any],
        before: Callback | None,
        after: Callback,
        capacity: Capacity | None,
    ) -> None:
        def count_live(advisor: str) -> int:
            got = db.execute(
                "SELECT COUNT(*) FROM callbacks WHERE advisor_id = %s AND id != %s "
                "AND state = ANY(%s)",
                (advisor, after.id, _LIVE),
            ).fetchone()
            return int(got[0]) if got else 0

        def count_slot(advisor: str, at: float, length: float) -> int:
            got = db.execute(
                "SELECT COUNT(*) FROM callbacks WHERE advisor_id = %s AND id != %s "
                "AND scheduled_for IS NOT NULL "
                "AND (scheduled_for = %s OR (scheduled_for > %s AND scheduled_for < %s)) "
                "AND state <> ALL(%s)",
                (advisor, after.id, at, at - length, at + length, _FINAL),
            ).fetchone()
            return int(got[0]) if got else 0

        rules.check_capacity(before, after, capacity, count_live, count_slot)

    def _assigned(
        self, db: psycopg.Connection[Any], before: Callback | None, after: Callback
    ) -> None:
        assigned = rules.assignment(before, after)
        if assigned is not None:
            db.execute(
                "INSERT INTO advisor_state (advisor_id, last_assigned_at) VALUES (%s, %s) "
                "ON CONFLICT (advisor_id) DO UPDATE SET last_assigned_at = "
                "GREATEST(advisor_state.last_assigned_at, EXCLUDED.last_assigned_at)",
                assigned,
            )

    def set_presence(
        self, advisor_id: str, presence: Presence, at: float
    ) -> tuple[Presence, float]:
        with self.db.writing("set presence") as db:
            db.execute(
                "INSERT INTO advisor_state (advisor_id, presence, presence_at) "
                "VALUES (%s, %s, %s) ON CONFLICT (advisor_id) DO UPDATE SET "
                "presence = EXCLUDED.presence, presence_at = EXCLUDED.presence_at "
                "WHERE advisor_state.presence_at IS NULL "
                "OR advisor_state.presence_at <= EXCLUDED.presence_at",
                (advisor_id, presence.value, at),
            )
            got = db.execute(
                "SELECT presence, presence_at FROM advisor_state WHERE advisor_id = %s",
                (advisor_id,),
            ).fetchone()
        assert got is not None  # written above, in this transaction
        return Presence(got[0]), float(got[1])

    def restore(
        self,
        callbacks: Sequence[Callback],
        presences: Mapping[str, tuple[Presence, float]] | None = None,
        rotation: Mapping[str, float] | None = None,
    ) -> None:
        with self.db.writing("restore callbacks") as db, db.cursor() as cur:
            if callbacks:
                cur.executemany(
                    f"INSERT INTO callbacks ({_COLUMNS}) {_VALUES} ON CONFLICT (id) DO UPDATE SET "
                    "customer = EXCLUDED.customer, advisor_id = EXCLUDED.advisor_id, "
                    "state = EXCLUDED.state, requested_at = EXCLUDED.requested_at, "
                    "scheduled_for = EXCLUDED.scheduled_for, "
                    "offer_expires_at = EXCLUDED.offer_expires_at, "
                    "version = EXCLUDED.version, body = EXCLUDED.body, topic = EXCLUDED.topic",
                    [_row(c) for c in callbacks],
                )
            if presences:
                cur.executemany(
                    "INSERT INTO advisor_state (advisor_id, presence, presence_at) "
                    "VALUES (%s, %s, %s) ON CONFLICT (advisor_id) DO UPDATE SET "
                    "presence = EXCLUDED.presence, presence_at = EXCLUDED.presence_at",
                    [(a, Presence(p).value, at) for a, (p, at) in presences.items()],
                )
            if rotation:
                cur.executemany(
                    "INSERT INTO advisor_state (advisor_id, last_assigned_at) VALUES (%s, %s) "
                    "ON CONFLICT (advisor_id) DO UPDATE SET "
                    "last_assigned_at = EXCLUDED.last_assigned_at",
                    list(rotation.items()),
                )

    # ------------------------------------------------------------------- reads
    def _callbacks(self, action: str, where: str, params: Sequence[object]) -> list[Callback]:
        rows = self.db.fetch(action, f"SELECT body FROM callbacks {where}", params)
        return [rules.decode(body) for (body,) in rows]

    def get(self, callback_id: str) -> Callback | None:
        found = self._callbacks("read callback", "WHERE id = %s", (callback_id,))
        return found[0] if found else None

    def of_customer(self, customer: str) -> list[Callback]:
        return self._callbacks(
            "read callbacks", "WHERE customer = %s ORDER BY requested_at, id", (customer,)
        )

    def erase_customers(self, customers: Collection[str]) -> int:
        with self.db.writing("erase callbacks") as db:
            return db.execute(
                "DELETE FROM callbacks WHERE customer = ANY(%s)", (list(customers),)
            ).rowcount

    def of_advisor(
        self, advisor_id: str, states: Collection[CallbackState] | None = None
    ) -> list[Callback]:
        if states is None:
            return self._callbacks(
                "read callbacks", f"WHERE advisor_id = %s {rules.QUEUE_ORDER}", (advisor_id,)
            )
        wanted = sorted({CallbackState(s).value for s in states})
        return self._callbacks(
            "read callbacks",
            f"WHERE advisor_id = %s AND state = ANY(%s) {rules.QUEUE_ORDER}",
            (advisor_id, wanted),
        )

    def open_load(self) -> dict[str, int]:
        rows = self.db.fetch(
            "read load",
            "SELECT advisor_id, COUNT(*) FROM callbacks WHERE advisor_id IS NOT NULL AND "
            "(state = ANY(%s) OR (state = 'requested' AND scheduled_for IS NOT NULL)) "
            "GROUP BY advisor_id ORDER BY advisor_id",
            (_LIVE,),
        )
        return {str(a): int(n) for a, n in rows}

    def holds(self, advisor_id: str | None = None) -> list[Hold]:
        query = (
            "SELECT id, advisor_id, state, scheduled_for FROM callbacks "
            "WHERE advisor_id IS NOT NULL AND state NOT IN ('cancelled', 'completed', 'expired') "
            "AND (state = ANY(%s) OR scheduled_for IS NOT NULL) {}ORDER BY id"
        )
        if advisor_id is None:
            rows = self.db.fetch("read holds", query.format(""), (_LIVE,))
        else:
            rows = self.db.fetch(
                "read holds", query.format("AND advisor_id = %s "), (_LIVE, advisor_id)
            )
        return [Hold(str(i), str(a), CallbackState(s), at) for i, a, s, at in rows]

    def booked(self, advisor_id: str | None, start: float, end: float) -> list[Callback]:
        where = (
            "WHERE scheduled_for >= %s AND scheduled_for < %s AND state <> ALL(%s) "
            "{}ORDER BY scheduled_for, id"
        )
        if advisor_id is None:
            return self._callbacks("read bookings", where.format(""), (start, end, _FINAL))
        return self._callbacks(
            "read bookings",
            where.format("AND advisor_id = %s "),
            (start, end, _FINAL, advisor_id),
        )

    def due(self, now: float, limit: int | None = None) -> list[Callback]:
        return self._callbacks(
            "read due callbacks",
            "WHERE (state IN ('offered', 'accepted') AND offer_expires_at <= %s) "
            "OR (state = 'requested' AND (scheduled_for IS NULL OR scheduled_for <= %s)) "
            "ORDER BY (state = 'requested' AND scheduled_for IS NULL), "
            "CASE WHEN state IN ('offered', 'accepted') THEN offer_expires_at "
            "ELSE COALESCE(scheduled_for, requested_at) END, id LIMIT %s",
            (now, now, limit),
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
            "read callbacks", "WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
        )

    def count(self) -> int:
        return self.db.scalar("SELECT COUNT(*) FROM callbacks")
