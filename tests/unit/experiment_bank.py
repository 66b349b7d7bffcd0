"""What the experiment tests share on the example bank: its mortgage campaign, the page
that makes a mortgage researcher, the KPI event, and an engine on a SQLite file whose fixed
clock the tests move forward (so that later events are not in the future)."""

from __future__ import annotations

from pathlib import Path

from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.store import sqlite_stores
from nextbest.store.catalog_files import load_catalog
from tests.support import EXAMPLE_CATALOG, T0, counter_ids, track

__all__ = ["CAMPAIGN", "CLOCK", "MORTGAGE", "applied", "sqlite_engine"]

CAMPAIGN = "mortgage_q4"
MORTGAGE = "https://bank.example/mortgages/rates"
#: the engines' clock: ``sqlite_engine`` sets it to T0, the tests move it forward
CLOCK = FixedClock(T0)


def applied(user: str, at: float, product: str = "mortgage") -> dict[str, object]:
    """The campaign's KPI event (for ``product`` mortgage)."""
    return track("Application Submitted", {"product": product}, user=user, at=at)


def sqlite_engine(tmp_path: Path) -> tuple[Engine, Path]:
    """An engine on the example bank over a new SQLite file (and the file), at T0."""
    data = tmp_path / "log.sqlite"
    engine = Engine(load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), CLOCK, new_id=counter_ids())
    CLOCK.set(T0)
    return engine, data
