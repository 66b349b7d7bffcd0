"""Audited use cases and the engine's consent records, without a face: nothing is read or
changed unaudited (a record that cannot be written refuses the read or the change), a
consent change whose record could not be written is kept and written later, in order, and
``nextbest audit verify`` catches an edited row, a deleted row and a tail cut off."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from nextbest.audit import Actor, AuditAction, AuditEntry, AuditHead, AuditRecord, verify
from nextbest.auditing import read_profile, verify_audit
from nextbest.catalog.compiled import Catalog
from nextbest.cli import app
from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.errors import StoreUnavailable
from nextbest.grouped_audit import GroupedAuditLog
from nextbest.store import memory_stores, sqlite_stores
from nextbest.store.audit_memory import MemoryAuditLog
from nextbest.store.catalog_files import load_catalog
from nextbest.usecases import reload_catalog
from tests.http.test_catalog_reload import CARD_RULE, NO_CARDS
from tests.support import T0, batch, counter_ids, edited_catalog, identify, track

ADMIN = Actor(kind="admin", key_id="admin:0123456789ab")


class FlakyAuditLog(MemoryAuditLog):
    """An audit log that is down while ``down`` is set."""

    down = False

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if self.down:
            raise StoreUnavailable("audit store down")
        return super().append(records)


def _engine(catalog: Catalog, audit: MemoryAuditLog) -> Engine:
    stores = memory_stores()._replace(audit=audit)
    return Engine(catalog, stores, FixedClock(T0), new_id=counter_ids())


def consent(user: str, marketing: bool) -> dict[str, object]:
    return track("Consent Updated", {"purposes": {"marketing": marketing}}, user=user)


def test_a_read_that_cannot_be_recorded_is_refused(catalog: Catalog):
    audit = FlakyAuditLog()
    engine = _engine(catalog, audit)
    engine.ingest_batch(batch(identify({"age": 30}, user="u1")))
    assert read_profile(engine, ADMIN, "u1") is not None
    audit.down = True
    with pytest.raises(StoreUnavailable):
        read_profile(engine, ADMIN, "u1")
    audit.down = False
    assert [e.action for e in audit.entries()] == ["profile.read"]


def test_consent_records_wait_for_the_audit_log_and_keep_their_order(catalog: Catalog):
    audit = FlakyAuditLog()
    engine = _engine(catalog, audit)
    audit.down = True
    engine.ingest_batch(batch(consent("u1", True), consent("u1", False)))  # accepted all the same
    assert engine.audit_pending == 2
    assert ("audit_log", None) in engine.probe()  # the store answers reads
    with pytest.raises(StoreUnavailable):
        engine.flush()  # the server's tick: readiness says so
    engine.ingest_batch(batch(consent("u2", False)))
    assert engine.audit_pending == 3
    audit.down = False
    engine.ingest_batch(batch(consent("u3", True)))  # the next fold writes every record kept
    assert engine.audit_pending == 0
    entries = audit.entries()
    assert [(e.subject, e.details["after"]) for e in entries] == [
        ("u1", {"marketing": True}),
        ("u1", {"marketing": False}),
        ("u2", {"marketing": False}),
        ("u3", {"marketing": True}),
    ]
    assert {e.actor.kind for e in entries} == {"engine"}
    assert verify(entries, audit.head()).ok


def test_an_audit_flush_never_waits_for_the_state_lock(catalog: Catalog):
    """A replay flushes under the state lock while the server's tick flushes on another
    thread: the tick's audit append must not wait for the state lock, or the two deadlock
    (each holding the lock the other waits for)."""
    audit = FlakyAuditLog()
    engine = _engine(catalog, audit)
    audit.down = True
    engine.ingest_batch(batch(consent("u1", True)))
    audit.down = False
    assert engine.audit_pending == 1
    with engine.exclusive():  # as replay() holds it
        tick = threading.Thread(target=engine._flush_audit, daemon=True)
        tick.start()
        tick.join(timeout=10)
        finished = not tick.is_alive()
        if finished:
            engine.flush()  # the replay's own flush, still under the lock
    tick.join()
    assert finished, "the audit flush waited for the state lock"
    assert engine.audit_pending == 0
    assert [e.subject for e in audit.entries()] == ["u1"]


def test_a_stitch_that_brings_a_devices_consent_is_a_consent_change(catalog: Catalog):
    audit = MemoryAuditLog()
    engine = _engine(catalog, audit)
    device = track("Consent Updated", {"purposes": {"analytics": False}}, anon="dev-1")
    engine.ingest_batch(batch(device, identify({"age": 30}, user="u1", anon="dev-1", at=T0 + 1)))
    subjects = [(e.subject, e.details["before"], e.details["after"]) for e in audit.entries()]
    assert subjects == [
        ("anon:dev-1", {}, {"analytics": False}),
        ("u1", {}, {"analytics": False}),
    ]


def _catalog(tmp_path: Path) -> Path:
    folder = tmp_path / "cat"
    folder.mkdir()
    return edited_catalog(folder, {})


def _edit(folder: Path) -> None:
    offers = folder / "offers.yaml"
    offers.write_text(offers.read_text().replace(CARD_RULE, NO_CARDS, 1))


def test_a_catalog_change_that_fails_is_recorded_as_failed(tmp_path: Path, catalog: Catalog):
    folder = _catalog(tmp_path)
    audit = MemoryAuditLog()
    engine = _engine(load_catalog(folder), audit)
    _edit(folder)

    def broken(new: Catalog) -> object:
        raise StoreUnavailable("state store down")

    engine.reload = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(StoreUnavailable):
        reload_catalog(engine, folder, ADMIN)
    actions = [(e.action, e.actor) for e in audit.entries()]
    assert actions == [
        (AuditAction.CATALOG_RELOADED.value, ADMIN),
        (AuditAction.CATALOG_RELOAD_FAILED.value, ADMIN),
    ]
    assert audit.entries()[1].details["error"] == "state store down"


def test_a_catalog_change_that_cannot_be_recorded_is_not_made(tmp_path: Path):
    folder = _catalog(tmp_path)
    audit = FlakyAuditLog()
    engine = _engine(load_catalog(folder), audit)
    served = engine.catalog.version
    _edit(folder)
    audit.down = True
    with pytest.raises(StoreUnavailable):
        reload_catalog(engine, folder, ADMIN)
    assert engine.catalog.version == served


# ---------------------------------------------------------------- nextbest audit verify
@pytest.fixture
def store(tmp_path: Path, catalog: Catalog) -> Path:
    """A SQLite store whose audit log holds 8 entries."""
    path = tmp_path / "audit.sqlite"
    engine = Engine(catalog, sqlite_stores(path), FixedClock(T0), new_id=counter_ids())
    for n in range(4):
        engine.ingest_batch(batch(consent(f"u{n}", n % 2 == 0)))
        read_profile(engine, ADMIN, f"u{n}")
    engine.close()
    return path


def _sql(path: Path, statement: str, *params: object) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(statement, params)
    db.close()


def _verify(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "verify", "--data", str(path), *args])
    return result.exit_code, result.output


def test_verify_passes_an_intact_log_and_prints_its_head(store: Path):
    code, out = _verify(store)
    assert code == 0, out
    assert "audit log ok: 8 entries" in out
    head = verify_audit(str(store)).head
    assert head is not None
    assert f"head 8:{head.hash}" in out
    assert _verify(store, "--anchor", str(head))[0] == 0
    code, out = _verify(store, "--json")
    assert orjson.loads(out)["ok"] is True


def test_verify_names_an_edited_row(store: Path):
    _sql(store, "UPDATE audit SET subject = 'someone-else' WHERE seq = 3")
    code, out = _verify(store)
    assert code == 1
    assert "broken at entry 3" in out
    assert "changed" in out


def test_verify_names_an_edited_row_whose_details_were_rewritten(store: Path):
    _sql(store, "UPDATE audit SET details = '{\"found\":false}' WHERE seq = 2")
    assert "broken at entry 2" in _verify(store)[1]


def test_verify_names_a_deleted_row(store: Path):
    _sql(store, "DELETE FROM audit WHERE seq = 5")
    code, out = _verify(store)
    assert code == 1
    assert "broken at entry 5: entry 5 is missing" in out


def test_verify_catches_a_tail_cut_off(store: Path):
    head = verify_audit(str(store)).head
    assert head is not None
    _sql(store, "DELETE FROM audit WHERE seq > 6")
    code, out = _verify(store)
    assert code == 1
    assert "broken at entry 7" in out
    assert "cut off" in out
    # rewriting the recorded head too hides the cut from the store alone ...
    row = sqlite3.connect(store).execute("SELECT hash FROM audit WHERE seq = 6").fetchone()
    _sql(store, "UPDATE audit_head SET seq = 6, hash = ? WHERE id = 1", row[0])
    assert _verify(store)[0] == 0
    # ... not from an anchor kept elsewhere
    code, out = _verify(store, "--anchor", str(head))
    assert code == 1
    assert "broken at entry 7" in out


def test_verify_catches_a_row_added_behind_the_heads_back(store: Path):
    _sql(
        store,
        "INSERT INTO audit SELECT seq + 1, time, actor, action, subject, details, prev_hash, "
        "hash FROM audit WHERE seq = 8",
    )
    code, out = _verify(store)
    assert code == 1
    assert "broken at entry 9" in out


def test_a_bad_anchor_or_no_store_is_said_plainly(store: Path, tmp_path: Path):
    code, out = _verify(store, "--anchor", "8:nothex")
    assert code == 2
    assert "SEQ:HASH" in out
    code, out = _verify(tmp_path / "none.sqlite")
    assert code == 1
    assert "no store at" in out


def test_audit_list_shows_a_subjects_entries(store: Path):
    result = CliRunner().invoke(
        app, ["audit", "list", "--data", str(store), "--subject", "u1", "--json"]
    )
    assert result.exit_code == 0, result.output
    listed = orjson.loads(result.output)
    assert [e["action"] for e in listed["entries"]] == ["consent.changed", "profile.read"]
    assert listed["head"]["seq"] == 8
    lines = CliRunner().invoke(app, ["audit", "list", "--data", str(store), "--subject", "u1"])
    assert lines.exit_code == 0
    assert "consent.changed u1 by engine" in lines.output
    assert "profile.read u1 by admin key=admin:0123456789ab" in lines.output


def test_anchors_are_checked_against_the_chain():
    audit = MemoryAuditLog()
    made = audit.append(
        [
            AuditRecord(time=T0, actor=ADMIN, action=AuditAction.PROFILE_READ, subject="u")
            for _ in range(3)
        ]
    )
    assert verify(audit.entries(), audit.head(), [AuditHead(2, made[1].hash)]).ok


# ---------------------------------------------------------------- group commit
def test_concurrent_appends_share_commits_and_each_gets_its_own_entries(tmp_path: Path):
    stores = sqlite_stores(tmp_path / "grouped.sqlite")
    commits: list[int] = []

    class Counting:
        def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
            commits.append(len(records))
            return stores.audit.append(records)

        def entries(self, after: int = 0, limit: int | None = None, subject: str | None = None):
            return stores.audit.entries(after, limit, subject)

        def head(self) -> AuditHead | None:
            return stores.audit.head()

    grouped = GroupedAuditLog(Counting())
    got: list[list[list[AuditEntry]]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def run(k: int) -> None:
        start.wait()
        for n in range(40):
            record = AuditRecord(
                time=T0 + n, actor=ADMIN, action=AuditAction.PROFILE_READ, subject=f"c{k}"
            )
            got[k].append(grouped.append([record] * (1 + n % 3)))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    grouped.close()
    total = sum(1 + n % 3 for n in range(40)) * 8
    assert sum(commits) == total
    assert len(commits) <= 8 * 40  # some appends shared a commit (usually most)
    for k, calls in enumerate(got):
        for entries in calls:
            assert {e.subject for e in entries} == {f"c{k}"}
            assert [e.seq for e in entries] == list(range(entries[0].seq, entries[-1].seq + 1))
    assert verify(stores.audit.entries(), stores.audit.head()).ok
    assert stores.audit.head() == AuditHead(total, stores.audit.entries()[-1].hash)
    stores.close()


class BrokenOnce(MemoryAuditLog):
    """A store whose connection broke while idle: the first call fails, then it reconnects."""

    broken = True

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if self.broken:
            self.broken = False
            raise StoreUnavailable("connection closed")
        return super().append(records)


def test_a_connection_that_broke_while_idle_refuses_no_read(catalog: Catalog):
    audit = BrokenOnce()
    engine = _engine(catalog, audit)
    engine.ingest_batch(batch(identify({"age": 30}, user="u1")))
    assert read_profile(engine, ADMIN, "u1") is not None
    assert [e.subject for e in audit.entries()] == ["u1"]


def test_a_failed_group_commit_fails_each_of_its_appends():
    audit = FlakyAuditLog()
    grouped = GroupedAuditLog(audit)
    record = AuditRecord(time=T0, actor=ADMIN, action=AuditAction.PROFILE_READ, subject="u")
    audit.down = True
    with pytest.raises(StoreUnavailable):
        grouped.append([record])
    audit.down = False
    assert [e.seq for e in grouped.append([record, record])] == [1, 2]
    assert grouped.append([]) == []
    grouped.close()
