"""Every store backend, for the port contract suites: each suite runs unchanged over all of
them (the scale-out backends join ``BACKENDS``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nextbest.bootstrap import MEMORY, open_stores
from nextbest.store import Stores
from tests.postgres import scratch_schema

BACKENDS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "postgresql":  # a fresh schema per test; a skip if no server answers
        with scratch_schema() as url:
            made = open_stores(url)
            yield made
            made.close()
        return
    made = open_stores(MEMORY if request.param == "memory" else str(tmp_path / "s.sqlite"))
    yield made
    made.close()
