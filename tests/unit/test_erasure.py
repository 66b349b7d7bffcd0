"""Erasure (GDPR art. 17) and export (art. 15, 20) on the embedded engine with the example
bank, on a real SQLite file: after ``erase_customer`` no table of the database and no file in
the data folder holds any of the customer's ids or traits (email, phone), nor after a replay,
a rebuild, or a restart; another customer is untouched; the audit chain still verifies and its
erasure entry names the customer only by a pseudonym the receipt opens."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nextbest.advisors.model import CallbackMode
from nextbest.audit.chain import verify
from nextbest.audit.model import Actor, AuditAction
from nextbest.decide import DecisionRequest
from nextbest.decide.pipeline import greedy
from nextbest.engine import Engine
from nextbest.errors import NotFound
from nextbest.guard import KeyKind, Sender
from nextbest.ingestion import IngestRequest
from tests.support import DAY, T0, batch, feedback, identify, message, page, track
from tests.unit.test_guard_engine import fraud_alerts, history, takeover

USER = "erase-me-7731"
OLD_ID = "old-erase-id-55"
DEVICES = ("dev-erase-a1", "dev-erase-b2", "dev-erase-c3")
EMAIL = "erase.me@example.dk"
PHONE = "+4529871234"
OTHER = "keep-me-4410"
OTHER_EMAIL = "keep.me@example.dk"
#: what must be nowhere after the erasure
SECRETS = (USER, OLD_ID, *DEVICES, EMAIL, PHONE)
ADMIN = Actor(kind="admin", key_id="k1")


def _mine(m: dict[str, Any]) -> dict[str, Any]:
    """A guard test message, sent by this test's customer and devices."""
    ids = {"victim-1": USER, "home": DEVICES[0], "fraud-dev": DEVICES[1]}
    return {
        **m,
        "userId": ids.get(m.get("userId") or "", m.get("userId")),
        "anonymousId": ids.get(m.get("anonymousId") or "", m.get("anonymousId")),
    }


def _send(engine: Engine, messages: Iterable[dict[str, Any]]) -> None:
    engine.ingest_batch(batch(*messages))


def _a_full_life(engine: Engine) -> None:
    """Everything nextbest keeps about a customer: events on three devices and an old id,
    traits, a guard baseline and a fraud alert, decisions with feedback the learner waits
    on, a quarantined message, a callback; and a second customer beside them."""
    _send(engine, [identify({"email": OTHER_EMAIL}, at=T0 - 40 * DAY, user=OTHER, anon="keep-d")])
    _send(engine, [page("https://bank.example/mortgages", at=T0 - 39 * DAY, user=OTHER)])
    _send(engine, [_mine(m) for m in history()])
    _send(engine, [_mine(m) for m in takeover(T0 - 2 * DAY)])
    _send(
        engine,
        [
            page("https://bank.example/loans", at=T0 - DAY, anon=DEVICES[2]),
            identify({"email": EMAIL, "phone": PHONE}, at=T0 - DAY + 5, user=OLD_ID),
            identify({}, at=T0 - DAY + 9, user=OLD_ID, anon=DEVICES[2]),
            message("alias", at=T0 - DAY + 20, user=USER, previousId=OLD_ID),
            page("https://bank.example/mortgages/rates", at=T0 - 60, user=USER),
        ],
    )
    decision = engine.decide(DecisionRequest(placement="home_feed"), user_id=USER, choose=greedy)
    engine.decide(DecisionRequest(placement="home_feed"), user_id=OTHER, choose=greedy)
    if decision.items:
        _send(engine, [feedback(decision, at=T0 - 30)])
    bad = track("Application Started", {"step": 1}, at=T0 - 20, user=USER)  # quarantined
    engine.accept(IngestRequest(Sender(KeyKind.WRITE), engine.read_batch(batch(bad)), "$.batch"))
    with contextlib.suppress(NotFound):
        engine.callbacks.request_callback(USER, "mortgage", CallbackMode.NOW, PHONE)
    engine.flush()
    engine.snapshot()


def _everything(folder: Path) -> bytes:
    """Every table of every SQLite file in ``folder`` dumped, and every file's raw bytes."""
    out = bytearray()
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        out += path.read_bytes()
        if path.suffix == ".sqlite":
            db = sqlite3.connect(path)
            try:
                tables = [
                    r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                ]
                for table in tables:
                    for row in db.execute(f'SELECT * FROM "{table}"'):
                        for value in row:
                            out += value if isinstance(value, bytes) else str(value).encode()
                            out += b"\n"
            finally:
                db.close()
    return bytes(out)


def _left(folder: Path) -> list[str]:
    dump = _everything(folder)
    return [s for s in SECRETS if s.encode() in dump]


def test_erasure_leaves_no_trace_in_any_table_or_file_after_replay_and_restart(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    folder = tmp_path / "data"
    path = folder / "nextbest.sqlite"
    engine = make_engine("sqlite", path)
    _a_full_life(engine)
    assert _left(folder) == list(SECRETS)  # the test would see them
    assert fraud_alerts(engine)
    assert engine.quarantine.held_count() == 1
    position = engine.decision_log.decision_log_position()

    report = engine.erase_customer(OLD_ID, ADMIN)  # an old id names the whole customer

    assert report.user_ids == sorted([USER, OLD_ID])
    assert set(report.anonymous_ids) >= set(DEVICES)
    assert report.events > 20
    assert report.decisions >= 1
    assert report.quarantined == 1
    assert report.outbox >= 1
    assert report.profiles >= 1
    assert engine.profile(USER) is None
    assert engine.profile(OLD_ID) is None
    assert not fraud_alerts(engine)
    assert engine.resolve(None, DEVICES[0]) == "anon:" + DEVICES[0]  # the device unbound
    assert _left(folder) == []
    kept = engine.profile(OTHER)
    assert kept is not None
    assert kept.traits["email"] == OTHER_EMAIL

    # the audit chain verifies; the erasure's entry names a pseudonym the receipt opens
    entries = engine.audit.entries()
    assert verify(entries, engine.audit.head()).ok
    erased = [e for e in entries if e.action == AuditAction.CUSTOMER_ERASED]
    assert len(erased) == 1
    digest = hashlib.sha256(f"{report.receipt}\x00{OLD_ID}".encode()).hexdigest()
    assert erased[0].subject == "erased:" + digest == report.audit_subject
    assert not any(s in msgspec.json.encode(erased[0]).decode() for s in SECRETS)

    # decision positions go on above every one handed out
    later = engine.decide(DecisionRequest(placement="home_feed"), user_id=OTHER, choose=greedy)
    engine.flush()
    assert engine.decision_log.decision_log_position() > position
    assert [d.decision_id for d in engine.decision_log.decisions_after(position)] == [
        later.decision_id
    ]

    report_replay = engine.replay()
    assert report_replay.identical, report_replay.differing
    engine.rebuild()
    assert engine.profile(USER) is None
    engine.close()
    assert _left(folder) == []

    again = make_engine("sqlite", path)  # a restart from the snapshot and the log
    assert again.profile(USER) is None
    assert again.profile(OLD_ID) is None
    assert again.profile(OTHER) is not None
    assert again.replay().identical
    with pytest.raises(NotFound):
        again.erase_customer(USER, ADMIN)  # nothing left to erase
    again.close()
    assert _left(folder) == []


def test_export_holds_everything_about_the_customer_and_is_audited(
    make_engine: Callable[..., Engine], tmp_path: Path
) -> None:
    engine = make_engine("sqlite", tmp_path / "nextbest.sqlite")
    _a_full_life(engine)
    found = engine.export_customer(USER, ADMIN)
    assert found.user_ids == sorted([USER, OLD_ID])
    assert set(found.anonymous_ids) >= set(DEVICES)
    assert found.profile is not None
    assert found.profile["profile"]["traits"]["email"] == EMAIL
    assert len(found.events) > 20
    assert {e.user_id for e in found.events} <= {USER, OLD_ID, None}
    assert found.decisions
    assert len(found.quarantined) == 1
    assert found.outbox
    body = msgspec.json.encode(found)
    assert OTHER.encode() not in body
    assert OTHER_EMAIL.encode() not in body
    assert found.audit[-1].action == AuditAction.CUSTOMER_EXPORTED
    with pytest.raises(NotFound):
        engine.export_customer("nobody-at-all", ADMIN)


def test_erasure_on_the_in_memory_twin_matches(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine("memory")
    _a_full_life(engine)
    report = engine.erase_customer(USER, ADMIN)
    assert report.events > 20
    assert engine.profile(USER) is None
    assert engine.event_log.events_of([USER, OLD_ID], DEVICES, engine.event_log.last_seq()) == []
    assert engine.replay().identical
    assert not any(
        k.endswith("/" + USER) or k.endswith("/" + OLD_ID)
        for c in engine.experiment_counters(customers=True).values()
        for k in c.customers
    )


def _every_pg_table(url: str) -> bytes:
    """Every row of every table of the scratch schema (partitions included), as bytes."""
    import psycopg

    out = bytearray()
    with psycopg.connect(url, autocommit=True) as db:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
        ]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    out += (
                        bytes(value)
                        if isinstance(value, bytes | memoryview)
                        else str(value).encode()
                    )
                    out += b"\n"
    return bytes(out)


def test_erasure_leaves_no_trace_in_any_postgresql_table(
    catalog: Any, clock: Any, tmp_path: Path
) -> None:
    """The same on PostgreSQL (a scratch schema; skipped when no server answers): no table
    holds an erased id or trait after the erasure, a rebuild and a restart (the erased rows'
    messageIds and decisionIds stay in ``message_ids`` / ``decision_ids``: random ids, no
    customer's)."""
    from nextbest.bootstrap import open_stores
    from tests.postgres import scratch_schema
    from tests.support import counter_ids

    with scratch_schema() as url:
        engine = Engine(catalog, open_stores(url), clock, new_id=counter_ids())
        _a_full_life(engine)
        before = _every_pg_table(url)
        assert all(s.encode() in before for s in SECRETS)
        engine.erase_customer(USER, ADMIN)
        assert [s for s in SECRETS if s.encode() in _every_pg_table(url)] == []
        assert engine.replay().identical
        engine.rebuild()
        engine.close()
        again = Engine(catalog, open_stores(url), clock, new_id=counter_ids())
        assert again.profile(USER) is None
        assert again.profile(OTHER) is not None
        again.close()
        assert [s for s in SECRETS if s.encode() in _every_pg_table(url)] == []
