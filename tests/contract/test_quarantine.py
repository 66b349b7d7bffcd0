"""The quarantine port's contract, over every backend: hold durably, dedupe a retry, read
oldest first, release."""

from __future__ import annotations

from pathlib import Path

from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.store import HeldMessage, Quarantine, Stores, sqlite_stores
from tests.support import T0, batch, track


def held(n: int, start: int = 0) -> list[HeldMessage]:
    """``n`` held messages; the same ``i`` is the same message (messageId ``q-<i>``)."""
    messages = [
        {**track("Clicked", {"i": i}, user=f"u{i}", at=T0 + i), "messageId": f"q-{i}"}
        for i in range(start, n)
    ]
    events: list[Event] = parse_batch(batch(*messages), T0 + 1000)
    return [
        HeldMessage(
            0, T0 + 1000, "missing_property", "needs x", f"$.batch[{i}].properties.x", "write", e
        )
        for i, e in enumerate(events)
    ]


def test_hold_numbers_in_order_and_reads_oldest_first(stores: Stores):
    q: Quarantine = stores.quarantine
    q.hold(held(3))
    found = q.held()
    assert [m.id for m in found] == sorted(m.id for m in found)
    assert len({m.id for m in found}) == 3
    assert [m.event.properties["i"] for m in found] == [0, 1, 2]
    assert found[1]._replace(id=0) == held(3)[1]  # every field reads back
    assert q.held_count() == 3
    assert [m.id for m in q.held(after=found[0].id)] == [m.id for m in found[1:]]
    assert len(q.held(limit=2)) == 2


def test_a_retry_is_held_once(stores: Stores):
    q = stores.quarantine
    q.hold(held(2))
    q.hold(held(3))
    assert q.held_count() == 3


def test_release_drops_and_lets_the_same_message_be_held_again(stores: Stores):
    q = stores.quarantine
    q.hold(held(2))
    first, second = q.held()
    q.release([first.id])
    assert [m.id for m in q.held()] == [second.id]
    q.hold(held(1))
    assert q.held_count() == 2
    assert q.held()[-1].id > second.id


def test_held_messages_survive_a_reopen(tmp_path: Path):
    stores = sqlite_stores(tmp_path / "q.sqlite")
    stores.quarantine.hold(held(2))
    stores.close()
    again = sqlite_stores(tmp_path / "q.sqlite")
    try:
        assert [m.event.properties["i"] for m in again.quarantine.held()] == [0, 1]
    finally:
        again.close()
