"""The composition root chooses the stores the settings name and wires the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextbest.bootstrap import MEMORY, build_engine
from nextbest.clock import ClockKind, EventClock, FixedClock, SystemClock
from nextbest.decide.model import DecisionRequest
from nextbest.errors import ConfigError
from nextbest.settings import Settings
from nextbest.store.memory import MemoryEventLog
from nextbest.store.sqlite import SQLiteEventLog
from tests.support import DAY, EXAMPLE_CATALOG, T0, batch, counter_ids, page


def test_memory_and_sqlite_are_chosen_by_the_data_setting(tmp_path: Path):
    in_memory = build_engine(
        Settings(catalog=str(EXAMPLE_CATALOG), data=MEMORY), FixedClock(T0), freeze_gc=False
    )
    assert isinstance(in_memory.event_log, MemoryEventLog)
    in_memory.close()
    path = tmp_path / "x.sqlite"
    settings = Settings(catalog=str(EXAMPLE_CATALOG), data=str(path))
    on_disk = build_engine(settings, FixedClock(T0), new_id=counter_ids(), freeze_gc=False)
    assert isinstance(on_disk.event_log, SQLiteEventLog)
    on_disk.ingest_batch(batch(page("https://bank.example/cards", user="u1")))
    on_disk.close()
    again = build_engine(settings, FixedClock(T0), freeze_gc=False)
    assert again.profile("u1") is not None
    assert again.replay().identical
    again.close()


def test_the_clock_setting_chooses_wall_or_event_time(tmp_path: Path):
    wall = build_engine(Settings(catalog=str(EXAMPLE_CATALOG), data=MEMORY), freeze_gc=False)
    assert isinstance(wall.clock, SystemClock)
    assert wall.clock_kind is ClockKind.WALL
    wall.close()
    settings = Settings(
        catalog=str(EXAMPLE_CATALOG), data=str(tmp_path / "e.sqlite"), clock=ClockKind.EVENT
    )
    events = build_engine(settings, freeze_gc=False)
    assert isinstance(events.clock, EventClock)
    assert events.clock_kind is ClockKind.EVENT
    events.ingest_batch(batch(page("https://bank.example/cards", user="u1", at=T0 - DAY)))
    events.ingest_batch(batch(page("https://bank.example/cards", user="u1", at=T0 - 2 * DAY)))
    assert events.clock.now() == T0 - DAY  # the latest, never back
    first = events.decide(DecisionRequest(placement="home_feed"), user_id="u1")
    assert first.decision_id == "nextbest-00000001"  # counted: a replay explores alike
    events.close()
    # a restart resumes the watermark and counts ids after the logged ones
    again = build_engine(settings, freeze_gc=False)
    assert again.clock.now() == T0 - DAY
    assert again.decide(DecisionRequest(placement="home_feed"), user_id="u1").decision_id == (
        "nextbest-00000002"
    )
    again.close()


def test_event_clock_reads_the_wall_until_the_first_event():
    clock = EventClock(FixedClock(T0))
    assert clock.now() == T0
    assert clock.watermark is None
    clock.observe(T0 - DAY)
    clock.observe(T0 - 2 * DAY)
    assert clock.now() == T0 - DAY == clock.watermark
    assert clock.wall.now() == T0


def test_nextbest_clock_is_read_from_the_environment():
    assert Settings.from_env({"NEXTBEST_CLOCK": "event"}).clock is ClockKind.EVENT
    assert Settings.from_env({}).clock is ClockKind.WALL
    with pytest.raises(ConfigError, match="NEXTBEST_CLOCK must be wall or event"):
        Settings.from_env({"NEXTBEST_CLOCK": "sundial"})
