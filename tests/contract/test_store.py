"""One contract for every store backend: the in-memory twin and embedded SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nextbest.decide.model import Decision
from nextbest.errors import StoreError
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.store import EventStore, MemoryStore, SQLiteStore, StateRow
from tests.support import T0, batch, page


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    s: EventStore = (
        MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.sqlite")
    )
    yield s
    s.close()


def events(n: int, **who: str) -> list[Event]:
    return parse_batch(
        batch(*[page(f"https://b.example/{i}", at=T0 + i, **who) for i in range(n)]), T0 + 1000
    )


def test_append_assigns_increasing_seqs_and_dedupes(store: EventStore):
    first = events(3, user="u1")
    seqs = store.append(first)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    assert None not in seqs
    again = store.append([first[1], *events(1, user="u2")])
    assert again[0] is None
    assert again[1] is not None
    assert again[1] > seqs[-1]
    assert store.last_seq() == again[1]
    assert store.count() == 4


def test_duplicates_within_one_append(store: EventStore):
    e = events(1, user="u1")[0]
    assert store.append([e, e]) == [1, None]


def test_scan_in_order_and_after(store: EventStore):
    store.append(events(5, user="u1"))
    assert [s.seq for s in store.scan()] == [1, 2, 3, 4, 5]
    assert [s.seq for s in store.scan(after=3)] == [4, 5]
    assert next(iter(store.scan())).event.user_id == "u1"


def test_round_trip_keeps_every_field(store: EventStore):
    original = parse_batch(
        batch(
            {
                **page("https://b.example/x", user="u", anon="a"),
                "properties": {"url": "https://b.example/x", "n": [1, {"k": None}]},
            }
        ),
        T0,
    )[0]
    store.append([original])
    assert next(iter(store.scan())).event == original


def test_events_of_ids_up_to_a_seq(store: EventStore):
    store.append(events(2, user="u1") + events(2, anon="a1") + events(2, user="u2"))
    got = store.events_of({"u1"}, {"a1"}, upto=3)
    assert [s.seq for s in got] == [1, 2, 3]
    assert store.events_of(set(), set(), upto=99) == []


def logged(decision_id: str = "d1", at: float = T0, **fields: Any) -> Decision:
    """A decision with no items, as the log holds it."""
    return Decision(
        decision_id=decision_id,
        customer_id="u1",
        placement="home",
        timestamp=at,
        catalog_version="1",
        items=[],
        excluded=[],
        control=[],
        segments=[],
        **fields,
    )


def test_decisions(store: EventStore):
    d = logged()
    store.append_decisions([d])
    assert store.decision("d1") == d
    assert store.decision("nope") is None


def test_decisions_stream_by_time_within_bounds(store: EventStore):
    made = [
        Decision(
            decision_id=f"d{i:04d}",
            customer_id=f"u{i % 7}",
            placement="home",
            timestamp=T0 + (i // 3),  # three decisions share each second
            catalog_version="1",
            items=[],
            excluded=[],
            control=[],
            segments=[],
            candidates=["a", "b"],
            features={"interest:mortgage": 1.5},
        )
        for i in range(4_500)  # more than one page of the SQLite reader
    ]
    store.append_decisions(list(reversed(made)))
    assert list(store.decisions()) == made
    assert list(store.decisions(since=T0 + 10, until=T0 + 12)) == made[30:36]
    assert list(store.decisions(since=T0 + 5_000)) == []


def test_decisions_after_a_position_come_in_the_order_they_were_appended(store: EventStore):
    def made(i: int) -> Decision:
        return logged(f"d{i:04d}", at=T0 - i)  # not in time order

    assert store.decision_log_position() == 0
    assert list(store.decisions_after(0)) == []
    first = [made(i) for i in range(4_500)]  # more than one page of the SQLite reader
    store.append_decisions(first)
    position = store.decision_log_position()
    assert list(store.decisions_after(0)) == first
    assert list(store.decisions_after(position)) == []
    later = [made(i) for i in range(4_500, 4_510)]
    store.append_decisions(later[:5])
    store.append_decisions(later[5:])
    assert list(store.decisions_after(position)) == later
    end = store.decision_log_position()
    assert end > position
    changed = msgspec.structs.replace(later[-1], customer_id="u2")
    store.append_decisions([first[0], changed])  # logged already: a decision never changes
    assert store.decision_log_position() == end
    assert list(store.decisions_after(position)) == later
    assert store.decision(later[-1].decision_id) == later[-1]


def test_decision_features_read_back_in_the_order_they_were_logged(store: EventStore):
    features = {"bias": 1.0, "segment:z": 1.0, "interest:a": 0.5, "prior:o2": 0.1, "prior:o1": 0.2}
    store.append_decisions([logged(candidates=["o2", "o1"], features=features)])
    for read in (store.decision("d1"), *store.decisions(), *store.decisions_after(0)):
        assert read is not None
        assert list(read.features.items()) == list(features.items())


def saved(store: EventStore) -> tuple[int, str, dict[tuple[str, str], bytes]]:
    state = store.load_state()
    assert state is not None
    return state.seq, state.version, {(r.kind, r.key): r.body for r in state.rows}


def test_state_saves_only_changed_rows(store: EventStore):
    assert store.load_state() is None
    store.save_state(7, "v1", [StateRow("profile", "u1", b"a"), StateRow("anon", "x", b"u1")])
    store.save_state(9, "v1", [StateRow("profile", "u2", b"b"), StateRow("anon", "x", None)])
    assert saved(store) == (9, "v1", {("profile", "u1"): b"a", ("profile", "u2"): b"b"})
    store.save_state(10, "v2", [StateRow("profile", "u3", b"c")], replace=True)
    assert saved(store) == (10, "v2", {("profile", "u3"): b"c"})


def test_state_streams_many_rows(store: EventStore):
    rows = [StateRow("profile", f"u{i:06d}", b"x" * 10) for i in range(25_000)]
    store.save_state(1, "v", rows)
    assert len(saved(store)[2]) == 25_000


def test_sqlite_errors_are_translated(tmp_path: Path):
    path = tmp_path / "not-a-db.sqlite"
    path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(StoreError) as exc:
        SQLiteStore(path)
    assert isinstance(exc.value.__cause__, sqlite3.Error)
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "x.sqlite", synchronous="SOMETIMES")


def test_sqlite_append_is_atomic(tmp_path: Path):
    store = SQLiteStore(tmp_path / "a.sqlite")
    good = events(2, user="u1")
    bad = msgspec.structs.replace(good[0], message_id="bad", properties={"x": object()})
    with pytest.raises(TypeError):  # fails half-way: the first two rows must roll back
        store.append([*good, bad])
    assert store.count() == 0
    store.close()
