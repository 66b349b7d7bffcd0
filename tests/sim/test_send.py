"""``sim send`` against real uvicorn servers on loopback: the nextbest app, a deliberately slow
app (to see that lateness counts as latency), and a port nobody listens on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextbest.errors import InputError
from nextbest.sim.send import (
    SendReport,
    StopReason,
    ndjson_lines,
    read_ndjson,
    run_send,
)
from tests.conftest import LiveServer, free_port
from tests.support import WRITE_KEY, page, track

USERS = ("send-u-1", "send-u-2", "send-u-3", "send-anon-4")


def messages(n: int | None) -> Iterator[dict[str, Any]]:
    """Segment-shaped page and track messages for a few users (one anonymous), distinct
    messageIds, timestamps spread over the last minute."""
    now = time.time()
    counter = itertools.count() if n is None else range(n)
    for i in counter:
        who = USERS[i % len(USERS)]
        ids: dict[str, Any] = {"anon": who} if "anon" in who else {"user": who}
        at = now - 60 + (i % 6000) * 0.01
        if i % 3:
            yield page(f"https://bank.example/mortgages/rates?v={i}", at=at, **ids)
        else:
            yield track("Calculator Used", {"topic": "mortgage"}, at=at, **ids)


def ms(value: float | None) -> float:
    assert value is not None
    return value


def assert_sane_latencies(report: SendReport) -> None:
    p50, p90, p99 = ms(report.latency_ms_p50), ms(report.latency_ms_p90), ms(report.latency_ms_p99)
    assert 0 < p50 <= p90 <= p99 <= ms(report.latency_ms_max)


def test_sends_every_message_from_an_ndjson_file_and_each_is_stored(
    live_server: LiveServer, tmp_path: Path
) -> None:
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages(600)))

    report = run_send(
        live_server.url,
        WRITE_KEY,
        rate=600,
        duration=30,
        messages=ndjson_lines(path),
        batch_size=50,
        concurrency=4,
        progress=False,
    )

    assert report.failed_batches == 0
    assert report.errors_by_status == {}
    assert report.errors_by_kind == {}
    assert report.stopped_by is StopReason.END_OF_INPUT
    assert (report.messages_sent, report.messages_ok, report.messages_missed) == (600, 600, 0)
    assert (report.batches_sent, report.batches_ok) == (12, 12)
    assert (report.accepted, report.duplicates) == (600, 0)
    assert live_server.engine.event_log.count() == 600
    assert report.achieved_rate == pytest.approx(600, rel=0.1)
    assert 0.9 <= report.duration_s < 2.0
    assert_sane_latencies(report)
    text = report.render()
    for label in ("offered rate", "achieved rate", "latency p99", "errors", "none"):
        assert label in text


def test_a_wrong_write_key_is_counted_under_401_and_nothing_is_stored(
    live_server: LiveServer,
) -> None:
    report = run_send(
        live_server.url,
        "not-a-key",
        rate=1000,
        duration=10,
        messages=messages(200),
        batch_size=50,
        progress=False,
    )

    assert report.errors_by_status == {401: 4}
    assert report.errors_by_kind == {}
    assert (report.messages_sent, report.messages_ok, report.batches_ok) == (200, 0, 0)
    assert report.achieved_rate == 0
    assert report.accepted is None
    assert live_server.engine.event_log.count() == 0
    assert "HTTP 401" in report.render()


def test_the_duration_bound_stops_an_endless_input(live_server: LiveServer) -> None:
    began = time.monotonic()
    report = run_send(
        f"{live_server.url}/v1/batch",  # the full batch URL works too
        WRITE_KEY,
        rate=400,
        duration=0.5,
        messages=messages(None),
        batch_size=20,
        progress=False,
    )

    assert time.monotonic() - began < 2.0
    assert report.stopped_by is StopReason.DURATION
    assert report.messages_sent == report.messages_ok == 200  # due at 0, 0.05, ... 0.45 s
    assert report.batches_sent == 10
    assert live_server.engine.event_log.count() == 200
    assert report.achieved_rate == pytest.approx(400, rel=0.1)
    assert_sane_latencies(report)


def test_the_max_messages_bound_cuts_the_last_batch(live_server: LiveServer) -> None:
    report = run_send(
        live_server.url,
        WRITE_KEY,
        rate=2000,
        duration=60,
        messages=messages(1000),
        batch_size=50,
        max_messages=130,
        progress=False,
    )

    assert report.stopped_by is StopReason.MAX_MESSAGES
    assert (report.messages_sent, report.batches_sent) == (130, 3)  # 50 + 50 + 30
    assert report.failed_batches == 0
    assert live_server.engine.event_log.count() == 130


def test_read_ndjson_round_trip(tmp_path: Path) -> None:
    sent = list(messages(25))
    path = tmp_path / "events.ndjson"
    lines = [orjson.dumps(m) for m in sent]
    path.write_bytes(b"\n".join(lines[:10]) + b"\n\n  \n" + b"\n".join(lines[10:]) + b"\n")

    assert list(read_ndjson(path)) == sent
    assert list(ndjson_lines(path)) == lines

    path.write_bytes(lines[0] + b"\n[1, 2]\n")
    with pytest.raises(InputError, match=r"events\.ndjson:2: not a JSON object"):
        list(read_ndjson(path))
    path.write_bytes(b"{not json\n")
    with pytest.raises(InputError, match=r"events\.ndjson:1: not valid JSON"):
        list(read_ndjson(path))


def test_an_unreachable_port_reports_connection_errors_by_kind() -> None:
    port = free_port()  # bound and released: nothing listens there
    report = run_send(
        f"http://127.0.0.1:{port}",
        WRITE_KEY,
        rate=400,
        duration=0.25,
        messages=messages(None),
        batch_size=20,
        timeout=2,
        progress=False,
    )

    assert report.errors_by_kind == {"ConnectError": 5}
    assert report.errors_by_status == {}
    assert (report.batches_sent, report.batches_ok, report.messages_ok) == (5, 0, 0)
    assert report.latency_ms_p50 is None
    assert report.achieved_rate == 0
    text = report.render()
    assert "ConnectError" in text
    assert "5 batches" in text


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"rate": 0}, "rate must be a positive"),
        ({"duration": float("inf")}, "duration must be a positive"),
        ({"batch_size": 0}, "batch size"),
        ({"max_messages": -1}, "max messages"),
        ({"target": "ftp://example.org"}, "target must be an http"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs: dict[str, Any], reason: str) -> None:
    args: dict[str, Any] = {"target": "http://127.0.0.1:9", "rate": 10, "duration": 1}
    args.update(kwargs)
    with pytest.raises(InputError, match=reason):
        run_send(write_key=WRITE_KEY, messages=[], progress=False, **args)


# ------------------------------------------------------------------ lateness is latency
SERVICE_S = 0.1


@contextlib.contextmanager
def slow_sink() -> Iterator[str]:
    """A real uvicorn server whose /v1/batch takes SERVICE_S seconds and succeeds."""

    async def batch(request: Request) -> Response:
        await request.body()
        await asyncio.sleep(SERVICE_S)
        return Response(b'{"success":true}', media_type="application/json")

    app = Starlette(routes=[Route("/v1/batch", batch, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    with slow_sink() as url:
        yield url


def test_when_the_sender_falls_behind_the_wait_counts_as_latency(slow_url: str) -> None:
    # one connection, 0.1 s per request, a batch due every 0.05 s: batch k leaves at about
    # 0.1 k s, 0.05 k s late, and its latency is that lateness plus the service time
    report = run_send(
        slow_url,
        WRITE_KEY,
        rate=200,
        duration=0.5,
        messages=messages(None),
        batch_size=10,
        concurrency=1,
        timeout=2,
        progress=False,
    )

    assert report.failed_batches == 0
    assert report.batches_ok == 10
    assert report.accepted is None  # this sink, like Segment, reports only success
    assert_sane_latencies(report)
    assert ms(report.latency_ms_p50) > 2 * SERVICE_S * 1e3
    assert ms(report.latency_ms_max) > 4 * SERVICE_S * 1e3
    assert ms(report.start_lag_ms_max) > 3 * SERVICE_S * 1e3
    assert report.achieved_rate < 0.7 * report.offered_rate


def test_batches_that_cannot_start_in_time_are_missed_not_sent(slow_url: str) -> None:
    began = time.monotonic()
    report = run_send(
        slow_url,
        WRITE_KEY,
        rate=200,
        duration=0.5,
        messages=messages(None),
        batch_size=10,
        concurrency=1,
        timeout=0.2,  # no batch starts after 0.5 + 0.2 s
        progress=False,
    )

    assert time.monotonic() - began < 0.5 + 2 * 0.2 + 0.5
    assert report.messages_missed > 0
    assert report.messages_sent + report.messages_missed == 100
    assert report.messages_ok == report.messages_sent
    assert "missed" in report.render()
