"""A Redis database of a test module's own, emptied before and after, or a skip with the
reason when no Redis answers at the URL (each module names its own database number, so
modules that run at the same time stay apart)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from nextbest.errors import StoreUnavailable
from nextbest.store.redis import RedisState


def flushed(url: str) -> Iterator[str]:
    """``url`` (its database emptied), for a fixture to ``yield from``; emptied again after."""
    try:
        state = RedisState(url, timeout=2.0)
    except StoreUnavailable as exc:
        where = urlsplit(url)
        pytest.skip(f"Redis not reachable at {where.hostname}:{where.port or 6379}: {exc}")
    state.client.flushdb()
    try:
        yield url
    finally:
        state.client.flushdb()
        state.close()
