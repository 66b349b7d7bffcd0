"""What the PostgreSQL store adds to the port contracts (which it passes with every other
backend, ``conftest.BACKENDS``): month partitions made on demand, uniqueness across them,
all-or-nothing appends, order under concurrent writers, its schema, and its errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgspec
import psycopg
import pytest

from nextbest.bootstrap import open_stores
from nextbest.errors import ConfigError, StoreError, StoreUnavailable
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.store import StoredEvent, Stores
from nextbest.store.postgres import SCHEMA_VERSION, PostgresEventLog, month_of
from tests.contract.test_decision_log import logged
from tests.postgres import scratch_schema
from tests.support import DAY, T0, batch, page

#: 2026-10-05: T0 (2026-09-23) and this fall in two months
NEXT_MONTH = T0 + 12 * DAY


@pytest.fixture
def url() -> Iterator[str]:
    with scratch_schema() as made:
        yield made


@pytest.fixture
def stores(url: str) -> Iterator[Stores]:
    made = open_stores(url)
    yield made
    made.close()


def events(n: int, at: float = T0, user: str = "u1") -> list[Event]:
    return parse_batch(
        batch(*[page(f"https://b.example/{i}", at=at + i, user=user) for i in range(n)]), at + 1e3
    )


def partitions(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY 1",
            (table,),
        ).fetchall()
    return [r[0] for r in rows]


def test_months_are_partitions_made_on_demand(url: str, stores: Stores):
    assert partitions(url, "events") == []
    stores.events.append(events(2) + events(1, at=NEXT_MONTH))
    assert partitions(url, "events") == ["events_2026_09", "events_2026_10"]
    stores.decisions.append_decisions([logged("d1", T0), logged("d2", NEXT_MONTH)])
    assert partitions(url, "decisions") == ["decisions_2026_09", "decisions_2026_10"]
    assert [s.seq for s in stores.events.scan()] == [1, 2, 3]
    assert [d.decision_id for d in stores.decisions.decisions()] == ["d1", "d2"]


def test_month_bounds():
    assert month_of(T0) == (2026, 9, 1_788_220_800.0, 1_790_812_800.0)
    assert month_of(1_790_812_800.0)[:2] == (2026, 10)  # the bound opens the next month
    assert month_of(1_798_761_600.0 - 1)[:2] == (2026, 12)
    assert month_of(1_798_761_600.0)[:3] == (2027, 1, 1_798_761_600.0)


def test_a_message_id_is_unique_across_partitions(stores: Stores):
    first = events(1)[0]
    assert stores.events.append([first]) == [1]
    retry = msgspec.structs.replace(first, timestamp=NEXT_MONTH)
    assert stores.events.append([retry, *events(1, at=NEXT_MONTH, user="u2")]) == [None, 2]
    assert stores.events.count() == 2
    stores.decisions.append_decisions([logged("d1", T0)])
    position = stores.decisions.decision_log_position()
    stores.decisions.append_decisions([logged("d1", NEXT_MONTH)])
    assert stores.decisions.decision_log_position() == position
    assert stores.decisions.decision("d1") == logged("d1", T0)


def test_a_failed_append_leaves_nothing_not_even_its_partition(url: str, stores: Stores):
    with psycopg.connect(url, autocommit=True) as db:  # the events insert, the last step, fails
        db.execute("ALTER TABLE events ADD CONSTRAINT poison CHECK (user_id <> 'poison')")
    good = events(2, at=NEXT_MONTH)
    bad = msgspec.structs.replace(good[0], message_id="bad", user_id="poison")
    with pytest.raises(StoreError) as exc:
        stores.events.append([*good, bad])
    assert isinstance(exc.value.__cause__, psycopg.errors.CheckViolation)
    assert stores.events.count() == 0
    assert partitions(url, "events") == []
    seqs = stores.events.append(good)  # not duplicates: their ids rolled back too
    assert None not in seqs
    assert seqs == sorted(seqs)  # after the rolled-back ones: a seq is never handed out twice
    assert partitions(url, "events") == ["events_2026_10"]


def test_a_store_reopens_with_its_rows_and_partitions(url: str):
    first = open_stores(url)
    first.events.append(events(3))
    first.quarantine.hold([])
    first.close()
    again = open_stores(url)  # the schema exists: created if not exists, nothing lost
    try:
        assert again.events.append(events(1, at=T0 + 10, user="u2")) == [4]
        assert [s.seq for s in again.events.scan()] == [1, 2, 3, 4]
    finally:
        again.close()
    with psycopg.connect(url) as db:
        assert db.execute("SELECT version FROM nextbest_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_an_event_log_made_before_stream_sequences_gets_the_column(url: str):
    """``events.stream_seq`` came later: a store whose table lacks it (made by an earlier
    nextbest, its rows and a month partition in it) gets it at the next start, NULL in the
    rows it held; a fold worker then logs stream sequences with its events."""
    first = open_stores(url)
    held = events(2)
    first.events.append(held)
    first.close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("ALTER TABLE events DROP COLUMN stream_seq")
    again = open_stores(url)
    try:
        log = again.events
        assert isinstance(log, PostgresEventLog)
        later = events(1, at=NEXT_MONTH, user="u2")
        log.append_at([StoredEvent(5, later[0], 41)], position=41)
        assert [(s.seq, s.stream_seq) for s in log.scan()] == [(1, None), (2, None), (5, 41)]
        assert [s.event for s in log.scan()] == [*held, *later]
    finally:
        again.close()
    open_stores(url).close()  # the column there: nothing altered again
    with psycopg.connect(url) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'events_2026_09'::regclass "
            "AND attname = 'stream_seq' AND NOT attisdropped"
        ).fetchone() or (0,)
    assert count == 1


def test_a_store_from_a_later_version_is_refused(url: str):
    open_stores(url).close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE nextbest_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        open_stores(url)


def test_concurrent_writers_get_distinct_seqs_in_commit_order(url: str):
    """Two stores (two connections, as two processes) append at once: every seq once, and
    the log reads back in seq order with nothing missing."""
    writers = [open_stores(url), open_stores(url)]
    got: list[list[int | None]] = [[], []]

    def write(k: int) -> None:
        for b in range(20):
            got[k].extend(writers[k].events.append(events(5, at=T0 + b * 10, user=f"w{k}")))

    threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = sorted(s for part in got for s in part if s is not None)
    assert seqs == list(range(1, 201))
    assert [s.seq for s in writers[0].events.scan()] == seqs
    for w in writers:
        w.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_an_unreachable_server_is_named_without_its_password(scheme: str):
    with pytest.raises(StoreUnavailable) as exc:
        open_stores(f"{scheme}://nextbest:hunter2@127.0.0.1:1/bank")
    message = str(exc.value)
    assert "PostgreSQL not reachable at 127.0.0.1:1/bank as nextbest" in message
    assert "hunter2" not in message
    assert isinstance(exc.value.__cause__, psycopg.OperationalError)


def test_a_malformed_url_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as exc:
        open_stores("postgresql://nextbest:hunter2@[::1/bank")
    assert "hunter2" not in str(exc.value)


def test_driver_errors_are_translated(url: str, stores: Stores):
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE quarantine")
    with pytest.raises(StoreError) as exc:
        stores.quarantine.held_count()
    assert isinstance(exc.value.__cause__, psycopg.Error)
    assert "quarantine" in str(exc.value)


def test_a_lost_connection_is_unavailable_then_reopened(url: str, stores: Stores):
    stores.events.append(events(1))
    assert isinstance(stores.events, PostgresEventLog)
    pid = stores.events.db.connection.info.backend_pid
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnavailable):
        stores.events.count()
    assert stores.events.count() == 1  # the next call connects again


def test_bodies_are_compressed_with_lz4_where_the_server_can(url: str, stores: Stores):
    stores.events.append(events(1))  # a partition: it inherits the parent's setting
    with psycopg.connect(url) as db:
        if db.info.server_version < 140000:
            pytest.skip("lz4 compression needs PostgreSQL 14")
        found = db.execute(
            "SELECT attrelid::regclass::text, attcompression FROM pg_attribute "
            "WHERE attname = 'body' AND attrelid = ANY(%s::regclass[]) ORDER BY 1",
            (["events", "events_2026_09", "decisions", "state", "quarantine"],),
        ).fetchall()
    assert found == [
        ("decisions", "l"),
        ("events", "l"),
        ("events_2026_09", "l"),
        ("quarantine", "l"),
        ("state", "l"),
    ]
