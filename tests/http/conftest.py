"""Fixtures for the HTTP face tests: an httpx client on the live server and a server factory
with custom settings."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, make_settings, serving


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        yield client


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start real uvicorn servers like ``live_server`` does, with settings overrides."""
    started = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(**overrides: object) -> LiveServer:
            settings = make_settings(tmp_path / f"server-{next(started)}", **overrides)
            return stack.enter_context(serving(settings))

        yield start
