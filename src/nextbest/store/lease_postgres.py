"""A lease on PostgreSQL: one holder at a time of a named duty among the processes sharing
the database (``Lease``: the callback sweeper of the scaled API workers).

A row per name in ``leases`` (holder, until). ``hold()`` takes the lease when it is free or
ran out, or renews it when this holder has it, in one statement: an upsert whose update
applies only then, so of two holders asking at once exactly one gets it. The time is the
database's own (``clock_timestamp()``), so the hosts' clocks may disagree. A holder that dies
leaves the lease to the next one asking after ``seconds``; ``release()`` hands it back at
once (a worker stopping)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # postgres.py opens this module's users: no import at run time
    from nextbest.store.postgres import PostgresDatabase

__all__ = ["PostgresLease"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    until double precision NOT NULL
);
"""

_NOW = "extract(epoch FROM clock_timestamp())"


class PostgresLease:
    """The lease ``name`` for ``holder`` (unique per process), ``seconds`` long."""

    def __init__(self, db: PostgresDatabase, name: str, holder: str, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("a lease lasts more than 0 seconds")
        self.db, self.name, self.holder, self.seconds = db, name, holder, seconds
        db.create_tables("create the leases table", _SCHEMA)

    def hold(self) -> bool:
        """Take the lease if it is free (or ran out), renew it if held by this holder: True
        if this holder has it for the next ``seconds``."""
        with self.db.writing("hold lease") as db:
            got = db.execute(
                f"INSERT INTO leases (name, holder, until) VALUES (%s, %s, {_NOW} + %s) "
                "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, "
                "until = EXCLUDED.until "
                f"WHERE leases.holder = EXCLUDED.holder OR leases.until <= {_NOW} "
                "RETURNING holder",
                (self.name, self.holder, self.seconds),
            ).fetchone()
        return got is not None

    def release(self) -> None:
        """Hand the lease back if this holder has it (the next asking takes it at once)."""
        with self.db.writing("release lease") as db:
            db.execute(
                "DELETE FROM leases WHERE name = %s AND holder = %s", (self.name, self.holder)
            )

    def holder_now(self) -> str | None:
        """Who holds the lease now (None: nobody, or it ran out)."""
        rows = self.db.fetch(
            "read lease",
            f"SELECT holder FROM leases WHERE name = %s AND until > {_NOW}",
            (self.name,),
        )
        return str(rows[0][0]) if rows else None
