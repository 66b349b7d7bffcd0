"""A JetStream stream of a test's own, or a skip with the reason when no NATS server answers.

The server is ``NEXTBEST_TEST_NATS`` or ``nats://127.0.0.1:4222`` (JetStream on, as on the
project's machines and CI). Each test names its own stream (its node id hashed, and the
process: concurrent runs stay apart), deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from nextbest.bus.nats import NatsBus
from nextbest.errors import StoreUnavailable

DEFAULT_URL = "nats://127.0.0.1:4222"

_unreachable: list[str] = []


def server_url() -> str:
    return os.environ.get("NEXTBEST_TEST_NATS", DEFAULT_URL)


def stream_name(node_id: str) -> str:
    digest = hashlib.sha256(node_id.encode()).hexdigest()[:12]
    return f"NBTEST-{os.getpid()}-{digest}"


def stream_url(node_id: str) -> str:
    """The test server's URL naming a stream of this test's own (emptied first), or a skip."""
    url = f"{server_url()}/{stream_name(node_id)}"
    if _unreachable:
        pytest.skip(_unreachable[0])
    try:
        bus = NatsBus(url, partitions=1, timeout=2.0)
    except StoreUnavailable as exc:
        _unreachable.append(f"NATS JetStream not reachable at {server_url()}: {exc}")
        pytest.skip(_unreachable[0])
    bus.delete_stream()
    bus.close()
    return url


def delete_stream(url: str, partitions: int) -> None:
    bus = NatsBus(url, partitions=partitions, timeout=2.0)
    bus.delete_stream()
    bus.close()
