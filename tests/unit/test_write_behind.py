"""The fold worker's event log written behind its live state: seqs handed out before the
write, reads over the log and the unwritten tail, each event once."""

from __future__ import annotations

import pytest

from nextbest.errors import StoreError
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.store.memory import MemoryEventLog, MemoryStateStore
from nextbest.write_behind import WriteBehindLog
from tests.support import T0, batch, page


def events(n: int, start: int = 0, **who: str) -> list[Event]:
    return parse_batch(
        batch(*[page(f"https://b.example/{i}", at=T0 + start + i, **who) for i in range(n)]),
        T0 + 1000,
    )


def test_seqs_are_handed_out_before_the_write_and_duplicates_skipped():
    log = MemoryEventLog()
    early = events(2, user="u1")
    log.append(early)
    behind = WriteBehindLog(log)
    fresh = events(3, start=10, user="u2")
    assert behind.append([*fresh, fresh[0]]) == [3, 4, 5, None]
    assert behind.append([fresh[1], early[0]]) == [None, None]  # in the tail, in the log
    assert log.count() == 2  # nothing written yet
    assert behind.last_seq() == 5
    assert behind.count() == 5
    segment = behind.seal(position=7)
    behind.write(segment)
    assert [s.seq for s in log.scan()] == [1, 2, 3, 4, 5]
    assert log.source_position() == behind.logged_position == 7
    assert behind.unlogged == 0


def test_reads_see_the_log_and_the_tail_each_event_once():
    log = MemoryEventLog()
    log.append(events(2, anon="d1"))
    behind = WriteBehindLog(log)
    behind.append(events(2, start=5, anon="d1") + events(1, start=9, user="u1"))
    got = behind.events_of(set(), {"d1"}, upto=3)
    assert [s.seq for s in got] == [1, 2, 3]
    scan = behind.scan(after=1)
    assert next(scan).seq == 2  # the tail is taken as the scan starts
    behind.write(behind.seal(position=5))  # ... and logged while it runs
    assert [s.seq for s in scan] == [3, 4, 5]  # each once
    assert [s.seq for s in behind.events_of({"u1"}, {"d1"}, upto=99)] == [1, 2, 3, 4, 5]


def test_each_event_is_logged_with_the_stream_sequence_it_came_by():
    """``came_from`` before an append: its events keep their stream sequences, the tail's
    reads and the log's alike (a duplicate takes none); the next append without it logs
    none; a count that does not match refuses the append, nothing handed out."""
    log = MemoryEventLog()
    behind = WriteBehindLog(log)
    fresh = events(3, user="u1")
    behind.came_from([11, 12, 14, 15])
    assert behind.append([fresh[0], fresh[1], fresh[0], fresh[2]]) == [1, 2, None, 3]
    assert [s.stream_seq for s in behind.events_of({"u1"}, set(), upto=9)] == [11, 12, 15]
    assert behind.append(events(1, start=5, user="u1")) == [4]
    behind.came_from([16])
    with pytest.raises(StoreError):
        behind.append(events(2, start=7, user="u1"))
    assert behind.last_seq() == 4
    assert behind.append(events(1, start=9, user="u1")) == [5]  # given for one append only
    behind.write(behind.seal(position=17))
    assert [(s.seq, s.stream_seq) for s in log.scan()] == [
        (1, 11), (2, 12), (3, 15), (4, None), (5, None)
    ]  # fmt: skip


def test_skip_to_refuses_seqs_past_the_saved_state():
    behind = WriteBehindLog(MemoryEventLog())
    behind.append(events(3, user="u1"))
    behind.skip_to(5)  # the saved state ends at 5: a gap is fine
    assert behind.append(events(1, start=20, user="u1")) == [6]
    with pytest.raises(StoreError):
        behind.skip_to(4)


def test_a_log_that_hands_out_its_own_seqs_only_is_refused():
    with pytest.raises(StoreError):
        WriteBehindLog(MemoryStateStore())  # type: ignore[arg-type]
