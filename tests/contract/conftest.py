"""Every store backend, for the port contract suites: each suite runs unchanged over all of
them (the scale-out backends join ``BACKENDS``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nextbest.bootstrap import MEMORY, open_stores
from nextbest.store import Stores

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    made = open_stores(MEMORY if request.param == "memory" else str(tmp_path / "s.sqlite"))
    yield made
    made.close()
