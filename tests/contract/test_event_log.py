"""The event log port's contract, over every backend: append, dedupe, read by customer,
positions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from nextbest.errors import StoreError
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.store import EventLog, StoredEvent, Stores, sqlite_stores
from nextbest.store.port import PartitionedLog, SequencedLog
from tests.support import T0, batch, page


@pytest.fixture
def log(stores: Stores) -> EventLog:
    return stores.events


def events(n: int, **who: str) -> list[Event]:
    return parse_batch(
        batch(*[page(f"https://b.example/{i}", at=T0 + i, **who) for i in range(n)]), T0 + 1000
    )


def test_append_assigns_increasing_seqs_and_dedupes(log: EventLog):
    first = events(3, user="u1")
    seqs = log.append(first)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    assert None not in seqs
    again = log.append([first[1], *events(1, user="u2")])
    assert again[0] is None
    assert again[1] is not None
    assert again[1] > seqs[-1]
    assert log.last_seq() == again[1]
    assert log.count() == 4


def test_duplicates_within_one_append(log: EventLog):
    e = events(1, user="u1")[0]
    assert log.append([e, e]) == [1, None]


def test_a_large_append_keeps_order_and_dedupes(log: EventLog):
    """Past a backend's small-batch path (PostgreSQL: 200 events in one statement, more by
    COPY) the seqs follow the batch and repeats take none."""
    first = events(3, user="u1")
    log.append(first)
    big = events(450, user="u2")
    seqs = log.append([*big[:200], first[0], *big[200:], big[5]])
    assert seqs[200] is None
    assert seqs[-1] is None
    fresh = [s for s in seqs if s is not None]
    assert len(fresh) == 450
    assert fresh == sorted(set(fresh))
    assert [s.event.message_id for s in log.scan(after=3)] == [e.message_id for e in big]


def test_a_large_append_with_retried_and_repeated_messages(log: EventLog):
    """A group larger than one SQLite statement takes (several INSERTs in a transaction),
    holding messages stored before and messages repeated within it: each new messageId
    gets a larger seq than the one before it (a backend may skip numbers), every other
    occurrence is a duplicate."""
    before = events(3, user="u0")
    first = log.append(before)
    group = events(1_250, user="u1") + events(1_250, user="u2")
    mixed = [group[0], before[1], *group[1:1_200], group[5], before[0], *group[1_200:]]
    seqs = log.append(mixed)
    new = [s for s in seqs if s is not None]
    assert len(new) == 2_500
    assert all(a < b for a, b in zip([first[-1], *new], new, strict=False))  # type: ignore[operator]
    assert [i for i, s in enumerate(seqs) if s is None] == [1, 1_201, 1_202]
    assert log.count() == 2_503
    assert [s.event.message_id for s in log.scan(after=first[-1])] == [  # type: ignore[arg-type]
        e.message_id for e in group
    ]


def test_scan_in_order_and_after(log: EventLog):
    log.append(events(5, user="u1"))
    assert [s.seq for s in log.scan()] == [1, 2, 3, 4, 5]
    assert [s.seq for s in log.scan(after=3)] == [4, 5]
    assert next(iter(log.scan())).event.user_id == "u1"


def test_round_trip_keeps_every_field(log: EventLog):
    original = parse_batch(
        batch(
            {
                **page("https://b.example/x", user="u", anon="a"),
                "properties": {"url": "https://b.example/x", "n": [1, {"k": None}]},
            }
        ),
        T0,
    )[0]
    log.append([original])
    assert next(iter(log.scan())).event == original


def test_events_of_ids_up_to_a_seq(log: EventLog):
    log.append(events(2, user="u1") + events(2, anon="a1") + events(2, user="u2"))
    got = log.events_of({"u1"}, {"a1"}, upto=3)
    assert [s.seq for s in got] == [1, 2, 3]
    assert log.events_of(set(), set(), upto=99) == []


def test_sqlite_errors_are_translated(tmp_path: Path):
    path = tmp_path / "not-a-db.sqlite"
    path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(StoreError) as exc:
        sqlite_stores(path)
    assert isinstance(exc.value.__cause__, sqlite3.Error)
    with pytest.raises(StoreError):
        sqlite_stores(tmp_path / "x.sqlite", synchronous="SOMETIMES")


def test_sqlite_append_is_atomic(tmp_path: Path):
    stores = sqlite_stores(tmp_path / "a.sqlite")
    good = events(2, user="u1")
    bad = msgspec.structs.replace(good[0], message_id="bad", properties={"x": object()})
    with pytest.raises(TypeError):  # fails half-way: the first two rows must roll back
        stores.events.append([*good, bad])
    assert stores.events.count() == 0
    stores.close()


def test_sqlite_stores_a_missing_id_as_null_and_the_body_as_a_blob(tmp_path: Path):
    path = tmp_path / "ids.sqlite"
    stores = sqlite_stores(path)
    logged = [*events(1, user="u1"), *events(1, anon="a1")]
    stores.events.append(logged)
    stores.close()
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT user_id, anonymous_id, typeof(body), body FROM events ORDER BY seq"
        ).fetchall()
    db.close()
    assert [r[:3] for r in rows] == [("u1", None, "blob"), (None, "a1", "blob")]
    assert [msgspec.json.decode(r[3], type=Event) for r in rows] == logged


# ---------------------------------------------------------------- written behind (fold worker)
def sequenced(log: EventLog) -> SequencedLog:
    if not isinstance(log, SequencedLog):
        pytest.skip(f"{type(log).__name__} hands out its own seqs only (no fold worker on it)")
    return log


def test_append_at_given_seqs_with_the_stream_position(log: EventLog):
    seq_log = sequenced(log)
    assert seq_log.source_position() == 0
    log.append(events(2, user="u1"))
    later = events(3, user="u2")
    at = [StoredEvent(5, later[0]), StoredEvent(6, later[1]), StoredEvent(9, later[2])]
    seq_log.append_at(at, position=40)
    assert seq_log.source_position() == 40
    assert log.last_seq() == 9
    assert [s.seq for s in log.scan()] == [1, 2, 5, 6, 9]  # gaps are fine
    assert [s.seq for s in log.scan(after=5)] == [6, 9]
    assert [s.seq for s in log.events_of({"u2"}, set(), upto=6)] == [5, 6]
    assert seq_log.logged([later[1].message_id, "never"]) == {later[1].message_id}
    seq_log.append_at([], position=41)  # the position alone (a batch of duplicates)
    assert seq_log.source_position() == 41
    assert log.append(events(1, user="u3")) == [10]  # its own seqs go on after


def test_append_at_refuses_what_another_writer_appended(log: EventLog):
    seq_log = sequenced(log)
    first = events(3, user="u1")
    log.append(first[:2])
    with pytest.raises(StoreError):  # not past the log's end
        seq_log.append_at([StoredEvent(2, first[2])], position=1)
    with pytest.raises(StoreError):  # a messageId logged already
        seq_log.append_at([StoredEvent(3, first[0])], position=1)
    assert log.count() == 2
    assert seq_log.source_position() == 0


def test_events_the_log_numbers_itself_have_no_stream_sequence(log: EventLog):
    """``append`` (the embedded engine, a migration) knows no bus: every backend reads its
    events back without a stream sequence."""
    log.append(events(2, user="u1"))
    assert [s.stream_seq for s in log.scan()] == [None, None]
    assert [s.stream_seq for s in log.events_of({"u1"}, set(), upto=2)] == [None, None]


def test_append_at_keeps_each_event_s_stream_sequence(log: EventLog):
    """A fold worker logs each event with the stream sequence it came by (an erasure finds
    the customer's messages there): read back by ``scan`` and ``events_of``, past a gap, an
    event without one and an erasure of another customer."""
    seq_log = sequenced(log)
    first = events(1, user="u0")
    log.append(first)
    a, b = events(2, user="ua"), events(2, user="ub")
    seq_log.append_at(
        [StoredEvent(2, a[0], 7), StoredEvent(3, b[0], 9), StoredEvent(4, a[1])], position=10
    )
    seq_log.append_at([StoredEvent(6, b[1], 13)], position=13)
    assert [(s.seq, s.stream_seq) for s in log.scan()] == [
        (1, None), (2, 7), (3, 9), (4, None), (6, 13)
    ]  # fmt: skip
    assert [(s.seq, s.stream_seq) for s in log.events_of({"ub"}, set(), upto=6)] == [
        (3, 9),
        (6, 13),
    ]
    assert log.erase({"ua"}, set()) == 2
    assert [(s.seq, s.stream_seq) for s in log.scan(after=2)] == [(3, 9), (6, 13)]
    assert [s.event for s in log.scan()] == [*first, b[0], b[1]]


def test_partition_writers_log_each_event_s_stream_sequence(log: EventLog):
    part = partitioned(log)
    a, b = events(2, user="ua"), events(1, user="ub")
    part.append_partitioned([StoredEvent(5, a[0], 5), StoredEvent(9, a[1], 9)], {1: 9})
    part.append_partitioned([StoredEvent(7, b[0], 7)], {2: 7})
    assert [(s.seq, s.stream_seq) for s in log.scan()] == [(5, 5), (7, 7), (9, 9)]
    assert [s.stream_seq for s in log.events_of({"ua"}, set(), upto=9)] == [5, 9]


def partitioned(log: EventLog) -> PartitionedLog:
    if not isinstance(log, PartitionedLog):
        pytest.skip(f"{type(log).__name__} has one writer only (no partitioned fold on it)")
    return log


def test_the_seq_base_follows_what_the_log_holds_and_is_fixed_once(log: EventLog):
    part = partitioned(log)
    log.append(events(3, user="u1"))
    seq_log = sequenced(log)
    seq_log.append_at([StoredEvent(4, events(1, user="u9")[0])], position=10)
    assert part.seq_base() == 4 - 10  # stream sequence 11 is logged at seq 5
    log.append(events(2, user="u2"))
    assert part.seq_base() == -6  # fixed by the first call
    assert part.partition_positions() == {}


def test_partition_writers_append_out_of_seq_order_with_their_positions(log: EventLog):
    part = partitioned(log)
    assert part.seq_base() == 0
    a, b = events(3, user="ua"), events(2, user="ub")
    part.append_partitioned([StoredEvent(5, a[0]), StoredEvent(9, a[1])], {1: 9})
    part.append_partitioned([StoredEvent(2, b[0]), StoredEvent(7, b[1])], {2: 8, 3: 4})
    part.append_partitioned([], {1: 12, 2: 3})  # a position only rises
    assert part.partition_positions() == {1: 12, 2: 8, 3: 4}
    assert [s.seq for s in log.scan()] == [2, 5, 7, 9]
    assert [s.seq for s in log.scan(after=5)] == [7, 9]
    assert [s.seq for s in log.events_of({"ua", "ub"}, set(), upto=7)] == [2, 5, 7]
    assert part.logged([a[1].message_id, a[2].message_id]) == {a[1].message_id}
    with pytest.raises(StoreError):  # a messageId another partition logged
        part.append_partitioned([StoredEvent(11, a[0])], {1: 13})
    with pytest.raises(StoreError):  # a seq taken
        part.append_partitioned([StoredEvent(7, a[2])], {1: 13})
    assert part.partition_positions()[1] == 12
    assert log.count() == 4
