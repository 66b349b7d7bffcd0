"""The benchmark scripts imported as they see each other (``bench/`` on the path)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from tests.support import ROOT


@pytest.fixture(scope="session")
def bench() -> Iterator[Callable[[str], ModuleType]]:
    """``bench("decide")``: that script as a module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        yield importlib.import_module
