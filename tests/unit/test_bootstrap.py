"""The composition root chooses the stores the settings name and wires the engine."""

from __future__ import annotations

from pathlib import Path

from nextbest.bootstrap import MEMORY, build_engine
from nextbest.clock import FixedClock
from nextbest.settings import Settings
from nextbest.store.memory import MemoryEventLog
from nextbest.store.sqlite import SQLiteEventLog
from tests.support import EXAMPLE_CATALOG, T0, batch, counter_ids, page


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
