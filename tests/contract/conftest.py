"""Every store backend, for the port contract suites: each suite runs unchanged over all of
them (the scale-out backends join ``BACKENDS``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from nextbest.bootstrap import MEMORY, open_stores
from nextbest.errors import StoreUnavailable
from nextbest.store import Stores, with_state
from nextbest.store.redis import RedisState
from tests.postgres import scratch_schema

BACKENDS = ["memory", "sqlite", "postgresql"]


@contextmanager
def open_backend(backend: str, tmp_path: Path) -> Iterator[Stores]:
    """One backend's stores, closed after; ``postgresql`` on a fresh schema of its own (a
    skip when no server answers)."""
    if backend == "postgresql":
        with scratch_schema() as url:
            made = open_stores(url)
            try:
                yield made
            finally:
                made.close()
        return
    made = open_stores(MEMORY if backend == "memory" else str(tmp_path / "s.sqlite"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    with open_backend(request.param, tmp_path) as made:
        yield made


# ---------------------------------------------------------------- the state port alone
#: Redis serves the state port alone: only the state suite runs over it (``state_stores``),
#: the other ports' suites would test the in-memory twins twice
STATE_BACKENDS = [*BACKENDS, "redis"]
#: the Redis database tests use; each test its own namespace, deleted after it
REDIS_URL = os.environ.get("NEXTBEST_TEST_REDIS", "redis://127.0.0.1:6379/15")


def redis_namespace(request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own: its id hashed (the same every run), and the process
    (concurrent runs on one Redis stay apart)."""
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return f"nextbest-test-{os.getpid()}-{digest}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``REDIS_URL``, once Redis answered there; every test on it skipped otherwise."""
    try:
        RedisState(REDIS_URL, "nextbest-test-ping", timeout=2.0).close()
    except StoreUnavailable as exc:
        url = urlsplit(REDIS_URL)
        pytest.skip(f"Redis not reachable at {url.hostname}:{url.port or 6379}: {exc}")
    return REDIS_URL


@pytest.fixture
def redis_state(request: pytest.FixtureRequest, redis_url: str) -> Iterator[RedisState]:
    """A RedisState on a namespace of this test's own, emptied before and deleted after."""
    state = RedisState(redis_url, redis_namespace(request), timeout=2.0)
    state.drop()  # what an interrupted run left
    yield state
    cleaner = RedisState(redis_url, state.namespace, timeout=2.0)  # the test may close its own
    cleaner.drop()
    cleaner.close()


@pytest.fixture(params=STATE_BACKENDS)
def state_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """Each backend's stores; for ``redis``, in-memory stores whose state port is Redis."""
    if request.param == "redis":
        state: RedisState = request.getfixturevalue("redis_state")
        made = with_state(open_stores(MEMORY), state, state.close)
        yield made
        made.close()
        return
    with open_backend(request.param, tmp_path) as made:
        yield made
