"""The callback sweeper under a lease (the scaled API workers share one on PostgreSQL: its
contract is in tests/acceptance/test_scaled_callbacks.py): a round sweeps only while the
lease is held; a sweeper stopping hands the lease back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from nextbest.callback_sweeper import CallbackSweeper
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.store import memory_stores
from tests.support import T0


@pytest.fixture
def engines(catalog: Catalog) -> Iterator[Callable[[], Engine]]:
    made: list[Engine] = []

    def make() -> Engine:
        made.append(Engine(catalog, memory_stores(), FixedClock(T0)))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


class Switch:
    """A lease that another process holds while ``held`` is False."""

    def __init__(self) -> None:
        self.held = False
        self.asked = 0
        self.released = 0

    def hold(self) -> bool:
        self.asked += 1
        return self.held

    def release(self) -> None:
        self.released += 1


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"waited for {what}"
        time.sleep(0.005)


def test_a_sweeper_sweeps_only_while_it_holds_the_lease(engines: Callable[[], Engine]):
    engine = engines()
    lease = Switch()
    sweeper = CallbackSweeper(engine.callbacks, 0.01, lease=lease)
    sweeper.start()
    try:
        until(lambda: sweeper.stood_by >= 3, "rounds standing by")
        assert sweeper.sweeps == 0  # another worker holds it
        lease.held = True
        until(lambda: sweeper.sweeps >= 3, "sweeps once held")
        lease.held = False
        stood = sweeper.stood_by
        until(lambda: sweeper.stood_by > stood, "standing by again")
    finally:
        sweeper.stop(5)
    assert lease.released == 1


def test_without_a_lease_every_round_sweeps(engines: Callable[[], Engine]):
    sweeper = CallbackSweeper(engines().callbacks, 0.01)
    sweeper.start()
    try:
        until(lambda: sweeper.sweeps >= 3, "sweeps")
    finally:
        sweeper.stop(5)
    assert sweeper.stood_by == 0
