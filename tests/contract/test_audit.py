"""The audit log port's contract, over every backend: entries chained after the recorded
head, read back exactly as appended (the same bytes hashed on every backend), paged and
filtered by subject; on a file or a server, appends from several connections at once never
fork the chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextbest.audit import (
    GENESIS,
    Actor,
    AuditAction,
    AuditHead,
    AuditRecord,
    chain,
    entry_hash,
    verify,
)
from nextbest.bootstrap import open_stores
from nextbest.store import Stores, sqlite_stores
from tests.postgres import scratch_schema
from tests.support import T0

ADMIN = Actor(kind="admin", key_id="admin:0123456789ab")


def record(n: int, subject: str = "cust-1", **details: object) -> AuditRecord:
    return AuditRecord(
        time=T0 + n + 0.123456,
        actor=ADMIN,
        action=AuditAction.PROFILE_READ,
        subject=subject,
        details={"n": n, **details},
    )


def test_an_empty_log_has_no_head_and_no_entries(stores: Stores):
    assert stores.audit.head() is None
    assert stores.audit.entries() == []
    assert stores.audit.append([]) == []
    assert stores.audit.head() is None


def test_appends_chain_after_the_head_and_read_back_as_appended(stores: Stores):
    audit = stores.audit
    odd = {
        "text": "Søren \x00 ✓",
        "pair": (1, 2),  # kept as a list: what JSON gives back
        "float": 0.1,
        "whole": 2.0,
        "big": 2**53 + 1,
        "nested": {"b": [True, None], "a": -1e-300},
    }
    records = [
        AuditRecord(
            time=T0 + 0.000001,
            actor=Actor(kind="server", key_id="server:aaaaaaaaaaaa", user="u-1", advisor="a-9"),
            action=AuditAction.CONSENT_CHANGED,
            subject="cust-1",
            details=odd,
        ),
        record(2),
    ]
    first = audit.append(records)
    assert first == chain(records, None)  # the same bytes hashed on every backend
    assert [e.seq for e in first] == [1, 2]
    assert first[0].prev_hash == GENESIS
    assert first[1].prev_hash == first[0].hash
    assert first[0].details["pair"] == [1, 2]
    assert all(entry_hash(e) == e.hash for e in first)
    second = audit.append([record(3, subject="cust-2")])
    assert second[0].seq == 3
    assert second[0].prev_hash == first[1].hash
    assert audit.head() == AuditHead(3, second[0].hash)
    assert audit.entries() == [*first, *second]
    assert verify(audit.entries(), audit.head()).ok


def test_entries_page_by_seq_and_filter_by_subject(stores: Stores):
    audit = stores.audit
    made = audit.append([record(n, subject=f"cust-{n % 3}") for n in range(1, 11)])
    assert audit.entries(after=4, limit=3) == made[4:7]
    assert audit.entries(after=10) == []
    assert [e.seq for e in audit.entries(subject="cust-1")] == [1, 4, 7, 10]
    assert [e.seq for e in audit.entries(after=4, limit=2, subject="cust-1")] == [7, 10]
    assert audit.entries(subject="nobody") == []


def test_the_chain_survives_a_reopen(tmp_path: Path):
    path = tmp_path / "a.sqlite"
    stores = sqlite_stores(path)
    made = stores.audit.append([record(1), record(2)])
    stores.close()
    again = sqlite_stores(path)
    try:
        assert again.audit.head() == AuditHead(2, made[-1].hash)
        more = again.audit.append([record(3)])
        assert more[0].prev_hash == made[-1].hash
        assert verify(again.audit.entries(), again.audit.head()).ok
    finally:
        again.close()


# ---------------------------------------------------------------- several connections
@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Stores]]:
    """Four openers of one store (four processes would have as many connections); for
    ``memory``, one store shared by four threads."""
    if request.param == "memory":
        one = open_stores(":memory:")
        yield [one] * 4
        return
    if request.param == "sqlite":
        openers = [open_stores(str(tmp_path / "shared.sqlite")) for _ in range(4)]
        try:
            yield openers
        finally:
            for s in openers:
                s.close()
        return
    with scratch_schema() as url:
        openers = [open_stores(url) for _ in range(4)]
        try:
            yield openers
        finally:
            for s in openers:
                s.close()


def test_appends_from_many_connections_at_once_never_fork_the_chain(shared: list[Stores]):
    """Four connections append 50 times each (one or two entries), all at once: 150 entries,
    seq 1 to 150, one chain that verifies, every append's entries consecutive."""
    start = threading.Barrier(len(shared))
    errors: list[BaseException] = []
    appended: list[list[list[int]]] = [[] for _ in shared]

    def append(k: int) -> None:
        try:
            start.wait()
            for n in range(50):
                batch = [record(n, subject=f"c{k}")] * (1 + n % 2)
                appended[k].append([e.seq for e in shared[k].audit.append(batch)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(k,)) for k in range(len(shared))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    entries = shared[0].audit.entries()
    assert [e.seq for e in entries] == list(range(1, 4 * 75 + 1))
    verdict = verify(entries, shared[0].audit.head())
    assert verdict.ok, verdict
    seqs = sorted(s for k in appended for batch in k for s in batch)
    assert seqs == list(range(1, 4 * 75 + 1))
    for k in appended:
        for batch in k:
            assert batch == list(range(batch[0], batch[0] + len(batch)))
