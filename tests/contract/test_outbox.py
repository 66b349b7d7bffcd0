"""The outbox port's contract, over every backend: enqueue once per idempotency key, claim
due messages under a lease, record outcomes only under the claim that made them, list,
count and replay dead letters; on a file or a server, claims from several connections at
once never overlap."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextbest.bootstrap import open_stores
from nextbest.store import Outbox, OutboxMessage, OutboxState, Stores, sqlite_stores
from tests.postgres import scratch_schema
from tests.support import T0

LEASE = 60.0


def enqueue(outbox: Outbox, n: int, at: float = T0, start: int = 0) -> list[OutboxMessage]:
    return [
        outbox.enqueue("telephony", "telephony", f"call-{i}", b'{"i": %d}' % i, at + i)
        for i in range(start, start + n)
    ]


def test_enqueue_keeps_every_field_and_a_key_once(stores: Stores):
    outbox = stores.outbox
    first = outbox.enqueue("telephony", "pbx", "call-1", b'{"phone": "+4512345678"}', T0)
    assert first == OutboxMessage(
        first.id, "telephony", "pbx", "call-1", b'{"phone": "+4512345678"}',
        OutboxState.PENDING, 0, T0, "", T0, None,
    )  # fmt: skip
    again = outbox.enqueue("sms", "other", "call-1", b"{}", T0 + 5)
    assert again == first  # the same key: nothing changed, the existing message returned
    assert outbox.messages() == [first]
    second = outbox.enqueue("telephony", "pbx", "call-2", b"{}", T0 + 1)
    assert second.id > first.id
    assert outbox.counts() == {
        OutboxState.PENDING: 2, OutboxState.DELIVERING: 0,
        OutboxState.DELIVERED: 0, OutboxState.DEAD: 0,
    }  # fmt: skip


def test_claim_takes_due_messages_longest_due_first_under_a_lease(stores: Stores):
    outbox = stores.outbox
    made = enqueue(outbox, 5)
    assert outbox.claim_due(T0 - 1, 10, LEASE) == []  # nothing due yet
    claimed = outbox.claim_due(T0 + 2, 2, LEASE)
    assert [m.id for m in claimed] == [made[0].id, made[1].id]
    for m in claimed:
        assert m.state is OutboxState.DELIVERING
        assert m.attempts == 1
        assert m.next_attempt_at == T0 + 2 + LEASE
    # under the lease nobody else gets them; the next due one is claimed instead
    assert [m.id for m in outbox.claim_due(T0 + 10, 10, LEASE)] == [m.id for m in made[2:]]
    assert outbox.claim_due(T0 + 20, 10, LEASE) == []
    # the lease ended (the sender died): claimed again, a second attempt
    again = outbox.claim_due(T0 + 2 + LEASE, 10, LEASE)
    assert [(m.id, m.attempts) for m in again] == [(made[0].id, 2), (made[1].id, 2)]
    assert outbox.claim_due(T0 + 1000, 0, LEASE) == []


def test_delivered_is_final_and_said_once(stores: Stores):
    outbox = stores.outbox
    (m,) = enqueue(outbox, 1)
    (claimed,) = outbox.claim_due(T0, 1, LEASE)
    assert outbox.mark_delivered(m.id, T0 + 1)
    assert not outbox.mark_delivered(m.id, T0 + 2)
    assert not outbox.mark_delivered(9_999, T0 + 2)
    (done,) = outbox.messages()
    assert (done.state, done.delivered_at, done.attempts) == (OutboxState.DELIVERED, T0 + 1, 1)
    assert outbox.claim_due(T0 + 10 * LEASE, 10, LEASE) == []
    # a late failure of the same attempt changes nothing
    assert not outbox.mark_failed(m.id, claimed.attempts, "HTTP 500", T0 + 5)
    assert outbox.messages()[0] == done


def test_a_failure_is_retried_when_due(stores: Stores):
    outbox = stores.outbox
    (m,) = enqueue(outbox, 1)
    (claimed,) = outbox.claim_due(T0, 1, LEASE)
    assert outbox.mark_failed(m.id, claimed.attempts, "HTTP 503", T0 + 30)
    (pending,) = outbox.messages(OutboxState.PENDING)
    assert (pending.attempts, pending.next_attempt_at, pending.last_error) == (
        1,
        T0 + 30,
        "HTTP 503",
    )
    assert outbox.claim_due(T0 + 29, 1, LEASE) == []
    (second,) = outbox.claim_due(T0 + 30, 1, LEASE)
    assert second.attempts == 2
    assert second.last_error == "HTTP 503"


def test_an_outcome_counts_only_under_the_claim_that_made_it(stores: Stores):
    """A sender whose lease ended (it hung) and was claimed again must not undo the new
    claim: its late failure is refused."""
    outbox = stores.outbox
    (m,) = enqueue(outbox, 1)
    (stale,) = outbox.claim_due(T0, 1, LEASE)
    (fresh,) = outbox.claim_due(T0 + LEASE, 1, LEASE)
    assert not outbox.mark_failed(m.id, stale.attempts, "timed out", T0 + 1)
    assert not outbox.release(m.id, stale.attempts, T0 + 1)
    assert outbox.messages()[0] == fresh
    assert outbox.mark_failed(m.id, fresh.attempts, "timed out", T0 + LEASE + 5)


def test_dead_letters_are_listed_and_replayed_with_a_fresh_schedule(stores: Stores):
    outbox = stores.outbox
    made = enqueue(outbox, 3)
    for claimed in outbox.claim_due(T0 + 5, 3, LEASE):
        outbox.mark_failed(claimed.id, claimed.attempts, f"HTTP 400: no {claimed.id}", None)
    outbox.mark_delivered(made[2].id, T0 + 6)  # a late success of a dead letter is the truth
    dead = outbox.messages(OutboxState.DEAD)
    assert [m.id for m in dead] == [made[0].id, made[1].id]
    assert dead[0].last_error == f"HTTP 400: no {made[0].id}"
    assert outbox.claim_due(T0 + 10_000, 10, LEASE) == []  # dead is never claimed
    # a delivered and an unknown id are left alone
    assert outbox.replay([made[1].id, made[0].id, made[2].id, 9_999], T0 + 100) == [
        made[0].id,
        made[1].id,
    ]
    replayed = outbox.messages(OutboxState.PENDING)
    assert [(m.attempts, m.next_attempt_at) for m in replayed] == [(0, T0 + 100)] * 2
    assert replayed[0].last_error == f"HTTP 400: no {made[0].id}"  # kept: why it died
    assert outbox.replay([made[0].id], T0 + 200) == []  # pending, not dead
    assert outbox.replay([], T0) == []


def test_release_hands_a_claim_back_unattempted(stores: Stores):
    outbox = stores.outbox
    (m,) = enqueue(outbox, 1)
    (claimed,) = outbox.claim_due(T0, 1, LEASE)
    assert outbox.release(m.id, claimed.attempts, T0 + 7)
    (back,) = outbox.messages()
    assert (back.state, back.attempts, back.next_attempt_at) == (OutboxState.PENDING, 0, T0 + 7)


def test_messages_page_by_id_and_filter_by_state(stores: Stores):
    outbox = stores.outbox
    made = enqueue(outbox, 5)
    (claimed,) = outbox.claim_due(T0, 1, LEASE)
    assert [m.id for m in outbox.messages(after=made[1].id)] == [m.id for m in made[2:]]
    assert [m.id for m in outbox.messages(limit=2)] == [m.id for m in made[:2]]
    assert [m.id for m in outbox.messages(OutboxState.DELIVERING)] == [claimed.id]
    assert len(outbox.messages(OutboxState.PENDING, after=made[0].id, limit=3)) == 3
    assert outbox.counts()[OutboxState.PENDING] == 4


def test_the_outbox_survives_a_reopen(tmp_path: Path):
    stores = sqlite_stores(tmp_path / "o.sqlite")
    enqueue(stores.outbox, 2)
    (claimed,) = stores.outbox.claim_due(T0, 1, LEASE)
    stores.close()
    again = sqlite_stores(tmp_path / "o.sqlite")
    try:
        found = again.outbox.messages()
        assert [(m.key, m.state) for m in found] == [
            ("call-0", OutboxState.DELIVERING),
            ("call-1", OutboxState.PENDING),
        ]
        assert found[0] == claimed
        assert again.outbox.enqueue("telephony", "telephony", "call-0", b"", T0).id == claimed.id
    finally:
        again.close()


# ---------------------------------------------------------------- several connections
@pytest.fixture(params=["sqlite", "postgresql"])
def shared_data(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store several connections open: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.sqlite")
        return
    with scratch_schema() as url:
        yield url


def test_concurrent_claims_from_many_connections_never_overlap(shared_data: str):
    """Four connections (each its own ``Stores``, as four sender processes would have) claim
    200 messages three at a time, all at once: every message is claimed exactly once."""
    openers = [open_stores(shared_data) for _ in range(4)]
    first = openers[0]
    try:
        enqueue(first.outbox, 200)
        got: list[list[int]] = [[] for _ in openers]
        start = threading.Barrier(len(openers))
        errors: list[BaseException] = []

        def claim(k: int) -> None:
            try:
                start.wait()
                while batch := openers[k].outbox.claim_due(T0 + 500, 3, LEASE):
                    got[k] += [m.id for m in batch]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=claim, args=(k,)) for k in range(len(openers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        every = [i for ids in got for i in ids]
        assert len(every) == len(set(every)) == 200
        assert first.outbox.counts()[OutboxState.DELIVERING] == 200
    finally:
        for s in openers:
            s.close()


def test_the_same_key_enqueued_from_many_connections_is_one_message(shared_data: str):
    openers = [open_stores(shared_data) for _ in range(4)]
    try:
        start = threading.Barrier(len(openers))
        ids: list[int] = []

        def put(k: int) -> None:
            start.wait()
            for i in range(20):
                ids.append(openers[k].outbox.enqueue("t", "t", f"k{i}", b"{}", T0).id)

        threads = [threading.Thread(target=put, args=(k,)) for k in range(len(openers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ids) == 80
        assert len(set(ids)) == 20
        assert len(openers[0].outbox.messages()) == 20
    finally:
        for s in openers:
            s.close()
