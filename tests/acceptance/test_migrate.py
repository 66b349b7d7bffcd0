"""``nextbest migrate``: an embedded installation (a simulated bank's run: events, decisions,
feedback, learned models, a held message, a saved state) copied into another store, verified
by counts, digests and a replay on both sides. SQLite to SQLite always runs; SQLite to
PostgreSQL skips with the reason when no server answers (``tests/postgres.py``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from nextbest.advisors.model import Callback, CallbackMode, CallbackState, Presence, Transition
from nextbest.bootstrap import build_engine, load_catalog, open_stores
from nextbest.catalog.compiled import Catalog
from nextbest.cli import app
from nextbest.clock import FixedClock
from nextbest.engine import IngestRequest
from nextbest.errors import InputError, NotFound, SlotTaken
from nextbest.guard import KeyKind, Sender
from nextbest.migrate import MigrationReport, migrate, store_location
from nextbest.profile.model import Profile
from nextbest.settings import Settings
from nextbest.store.port import Capacity, Stores
from nextbest.store.snapshot import profile_row, read_snapshot
from tests.postgres import scratch_schema
from tests.support import DAY, EXAMPLE_CATALOG, batch, counter_ids, page, track

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
#: the simulated run's last day is before this (sim evaluate's default start, 2026-06-01)
LATER = 1_783_000_000.0


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Path:
    """A stopped installation: a seeded simulated run of the nextbest policy, then one
    message held in quarantine, closed (its state saved under the example bank)."""
    data = tmp_path_factory.mktemp("source") / "embedded.sqlite"
    args = ["sim", "evaluate", "--seed", "3", "--customers", "30", "--days", "6", "--quiet"]
    run = CliRunner().invoke(app, [*args, "--policies", "nextbest", "--data", str(data)])
    assert run.exit_code == 0, run.output
    engine = build_engine(
        Settings(catalog=str(EXAMPLE_CATALOG), data=str(data)),
        FixedClock(LATER),
        catalog=catalog,
        new_id=counter_ids("late-"),
        freeze_gc=False,
    )
    try:
        wrong = track("Product Opened", {"product": 42}, user="u-late", at=LATER)
        body = batch(
            page("https://bank.example/mortgages", user="u-late", at=LATER - DAY),
            {**wrong, "messageId": "m-7"},
        )
        engine.accept(IngestRequest(Sender(KeyKind.SERVER), engine.read_batch(body), "$.batch"))
        assert engine.quarantine.held_count() == 1
    finally:
        engine.close()
    return data


@pytest.fixture
def source(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "source.sqlite"
    shutil.copy(template, copy)
    return copy


@contextmanager
def target_of(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(tmp_path / "target.sqlite")
    else:
        with scratch_schema() as url:
            yield url


@contextmanager
def opened(data: str | Path) -> Iterator[Stores]:
    stores = open_stores(str(data))
    try:
        yield stores
    finally:
        stores.close()


def message_ids(data: str | Path) -> list[str]:
    with opened(data) as stores:
        return [s.event.message_id for s in stores.events.scan(0)]


def assert_verified(report: MigrationReport, source: Path) -> None:
    assert report.ok, report.problems
    with opened(source) as stores:
        events, held = stores.events.count(), stores.quarantine.held_count()
    counts = {p.port: (p.source_rows, p.target_rows) for p in report.ports}
    assert counts["events"] == (events, events)
    assert counts["quarantine"] == (held, held) == (1, 1)
    assert counts["decisions"][0] == counts["decisions"][1] > 10
    assert all(p.source_digest == p.target_digest for p in report.ports)
    assert report.replay.identical
    assert report.replay.models_identical
    assert report.replay.target_replay_identical
    assert report.replay.events == events > 300


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_migration_copies_every_port_in_order_and_replays_identically(
    kind: str, source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    with target_of(kind, tmp_path) as target:
        report = migrate(f"sqlite:{source}", target, catalog, batch=64)
        assert_verified(report, source)
        assert report.state.copied, report.state.note
        assert message_ids(target) == message_ids(source)  # the order, not only the set
        with opened(source) as a, opened(target) as b:
            assert list(a.decisions.decisions_after(0)) == list(b.decisions.decisions_after(0))
            held = b.quarantine.held()
            assert [(m.code, m.path, m.event) for m in held] == [
                (m.code, m.path, m.event) for m in a.quarantine.held()
            ]
            assert held[0].event.message_id == "m-7"
        # nextbest replay on the target: its state (the copied one) is its logs' replay
        replayed = CliRunner().invoke(
            app, ["replay", "--catalog", str(EXAMPLE_CATALOG), "--data", target], env=ENV
        )
        assert replayed.exit_code == 0, replayed.output
        assert "identical; models: identical" in replayed.stdout


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_callbacks_in_flight_and_advisors_presence_move_with_the_logs(
    kind: str, source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    """The callback queue is no fold of the logs: each callback moves as it is (state,
    history, version, booking), and so do presence and the rotation facts."""
    with opened(source) as stores:
        cbs = stores.callbacks
        asked = Callback(
            id="cb-1",
            customer="u-late",
            topic="mortgage",
            mode=CallbackMode.AT,
            phone="+4512345678",
            requested_at=LATER,
            scheduled_for=LATER + DAY,
            advisor_id="anna",
            history=(Transition(state=CallbackState.REQUESTED, at=LATER),),
        )
        cbs.create(asked, Capacity(1, 1800.0))
        offered = msgspec.structs.replace(
            asked,
            id="cb-2",
            topic="pension",  # one in flight per customer and topic
            mode=CallbackMode.NOW,
            scheduled_for=None,
            advisor_id=None,
        )
        first = cbs.create(offered)
        step = Transition(state=CallbackState.OFFERED, at=LATER + 5, advisor_id="bo")
        cbs.save(
            msgspec.structs.replace(
                first,
                state=CallbackState.OFFERED,
                advisor_id="bo",
                offer_expires_at=LATER + 35,
                history=(*first.history, step),
            ),
            expected_version=1,
        )
        cbs.set_presence("bo", Presence.BUSY, LATER + 6)
        want = (cbs.scan(), cbs.presences(), cbs.rotation())
    assert [c.version for c in want[0]] == [1, 2]
    with target_of(kind, tmp_path) as target:
        report = migrate(str(source), target, catalog)
        assert report.ok, report.problems
        ports = {p.port: p for p in report.ports}
        assert (ports["callbacks"].source_rows, ports["callbacks"].copied) == (2, 2)
        assert (ports["advisors"].source_rows, ports["advisors"].copied) == (2, 2)
        with opened(target) as stores:
            cbs = stores.callbacks
            assert (cbs.scan(), cbs.presences(), cbs.rotation()) == want
            assert [c.id for c in cbs.due(LATER + 40)] == ["cb-2"]  # its offer lapsed
            with pytest.raises(SlotTaken):  # the booking moved with it
                cbs.create(
                    msgspec.structs.replace(asked, id="cb-3", customer="u-other"),
                    Capacity(1, 1800.0),
                )
        with pytest.raises(InputError, match=r"it holds .*2 callbacks, advisors' presence"):
            migrate(str(source), target, catalog)
        again = migrate(str(source), target, catalog, resume=True)
        assert again.ok, again.problems
        assert again.rows == 0
        assert {p.port: p.kept for p in again.ports}["callbacks"] == 2


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_without_the_saved_state_the_target_folds_its_logs_to_the_same(
    kind: str, source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    with target_of(kind, tmp_path) as target:
        report = migrate(str(source), target, catalog, state=False)
        assert_verified(report, source)
        assert not report.state.copied
        with opened(target) as stores:
            assert stores.state.load_state() is None


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_an_interrupted_copy_resumes_to_the_same_result(
    kind: str, source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    class Interrupted(Exception):
        pass

    batches: list[str] = []

    def stop_after_three(port: str, done: int, total: int) -> None:
        batches.append(port)
        if len(batches) == 3:
            raise Interrupted

    with target_of(kind, tmp_path) as target:
        with pytest.raises(Interrupted):
            migrate(str(source), target, catalog, batch=50, progress=stop_after_three)
        assert len(message_ids(target)) == 150  # three whole batches, all or nothing each
        with pytest.raises(InputError, match="not empty: it holds 150 events"):
            migrate(str(source), target, catalog, batch=50)
        report = migrate(str(source), target, catalog, batch=50, resume=True)
        assert_verified(report, source)
        events = report.ports[0]
        assert (events.kept, events.copied) == (150, events.source_rows - 150)
        assert report.state.copied
        assert message_ids(target) == message_ids(source)
        # resuming a finished copy writes nothing and verifies again
        again = migrate(str(source), target, catalog, resume=True)
        assert again.ok
        assert again.rows == 0


def test_a_target_that_holds_anything_is_refused_and_left_as_it_was(
    source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    target = tmp_path / "target.sqlite"
    assert migrate(str(source), str(target), catalog).ok
    before = message_ids(target)
    with pytest.raises(InputError) as refused:
        migrate(str(source), str(target), catalog)
    assert str(refused.value).startswith(f"the target {target} is not empty: it holds ")
    assert "--resume" in str(refused.value)
    assert message_ids(target) == before


def test_a_source_with_messages_still_to_send_is_refused(
    source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    """The outbox is not migrated: what it still has to send would be lost."""
    with opened(source) as stores:
        stores.outbox.enqueue("telephony", "telephony", "cb-1", b"{}", 0.0)
        stores.outbox.enqueue("telephony", "telephony", "cb-2", b"{}", 0.0)
        stores.outbox.claim_due(0.0, 1, 60.0)
    target = tmp_path / "target.sqlite"
    with pytest.raises(InputError, match="outbox still holds 1 pending, 1 delivering message"):
        migrate(str(source), str(target), catalog)


def test_resume_refuses_a_target_that_is_not_a_copy_of_the_source(
    source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    other = tmp_path / "other.sqlite"
    with opened(other) as stores:
        with opened(source) as src:
            events = [s.event for s in src.events.scan(0)]
        stores.events.append([events[1], events[0]])  # the first two, swapped
    with pytest.raises(InputError, match="not the first of the source's: row 1 is"):
        migrate(str(source), str(other), catalog, resume=True)


def test_sources_and_targets_are_named_as_documented(tmp_path: Path, catalog: Catalog) -> None:
    assert store_location("sqlite:data/embedded.sqlite") == "data/embedded.sqlite"
    assert store_location("sqlite:///var/lib/nextbest.sqlite") == "/var/lib/nextbest.sqlite"
    assert store_location("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(NotFound, match="no store at"):
        migrate(str(tmp_path / "none.sqlite"), str(tmp_path / "t.sqlite"), catalog)
    same = tmp_path / "same.sqlite"
    open_stores(str(same)).close()
    with pytest.raises(InputError, match="same store"):
        migrate(f"sqlite:{same}", str(same), catalog)


def test_the_command_prints_the_report_and_refuses_a_second_copy(
    source: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.sqlite"
    args = ["migrate", "--from", f"sqlite:{source}", "--to", str(target)]
    args += ["--catalog", str(EXAMPLE_CATALOG), "--batch", "100"]
    done = CliRunner().invoke(app, args, env=ENV)
    assert done.exit_code == 0, done.output
    for words in ("events", "decisions", "quarantine", "equal", "rows/s", "saved state: copied"):
        assert words in done.stdout
    assert "profiles identical; models identical" in done.stdout
    assert done.stdout.splitlines()[-1] == "verified: the target is a copy of the source"
    again = CliRunner().invoke(app, args, env=ENV)
    assert again.exit_code == 2
    assert "is not empty: it holds" in again.output


def test_the_command_says_a_postgresql_server_is_not_reachable_without_its_password(
    source: Path,
) -> None:
    url = "postgresql://nextbest:s3cret-pw@127.0.0.1:1/bank?connect_timeout=2"
    run = CliRunner().invoke(app, ["migrate", "--from", str(source), "--to", url], env=ENV)
    assert run.exit_code == 1
    assert "PostgreSQL not reachable at 127.0.0.1:1/bank" in run.output
    assert "s3cret-pw" not in run.output


def test_a_mismatch_is_named_and_the_command_fails(
    source: Path, tmp_path: Path, catalog: Catalog
) -> None:
    """A source whose saved state is not its logs' fold: the copy is caught."""
    with opened(source) as stores:
        snap = read_snapshot(stores.state.load_state(), catalog.digest)
        assert snap is not None
        key, profile = sorted(snap.profiles.items())[0]
        forged = msgspec.structs.replace(profile, traits={**profile.traits, "age": 999})
        assert isinstance(forged, Profile)
        stores.state.save_state(snap.seq, catalog.digest, [profile_row(key, forged)])
    target = tmp_path / "target.sqlite"
    args = ["migrate", "--from", str(source), "--to", str(target)]
    run = CliRunner().invoke(app, [*args, "--catalog", str(EXAMPLE_CATALOG)], env=ENV)
    assert run.exit_code == 1
    assert f"mismatch: replay: profiles differ between source and target: {key}" in run.output
    assert "the target's state differs from a replay of its logs" in run.output
