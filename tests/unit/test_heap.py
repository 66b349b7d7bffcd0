"""``heap.settle_for_serving``: a long-running server's collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from nextbest.bootstrap import build_engine
from nextbest.heap import YOUNG, settle_for_serving
from nextbest.settings import Settings
from tests.conftest import EXAMPLE_CATALOG


@pytest.fixture
def collector() -> Iterator[None]:
    """The process's collector settings put back after the test (a frozen heap stays
    frozen: moving it back costs a full collection's walk, and nothing depends on it)."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_settling_freezes_the_heap_and_collects_young_objects_less_often(collector):
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    settle_for_serving()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG, 10, 10)  # the older generations at CPython's ratios
    assert YOUNG > 700


def test_a_server_engine_settles_the_heap_and_a_short_command_leaves_it(collector, tmp_path):
    settings = Settings(catalog=str(EXAMPLE_CATALOG), data=str(tmp_path / "store.sqlite"))
    gc.set_threshold(700, 10, 10)
    build_engine(settings, freeze_gc=False).close()
    assert gc.get_threshold() == (700, 10, 10)
    build_engine(settings).close()  # freeze_gc=True: a long-running server
    assert gc.get_threshold() == (YOUNG, 10, 10)
