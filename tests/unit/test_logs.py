"""The JSON log lines as ``nextbest serve`` writes them (``api.logs``): a background writer
that loses no line, and access lines written without a LogRecord that are the same lines."""

from __future__ import annotations

import io
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

from nextbest.api.logs import (
    ACCESS,
    JsonFormatter,
    LineWriter,
    configure,
    request_id,
    request_line,
)

FIELDS = {"method": "POST", "route": "/v1/track", "status": 200, "duration_ms": 0.5}


def wait_for(done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll until ``done`` (a generous bound: the writer is a thread)."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.005)


@pytest.fixture
def logged() -> Iterator[tuple[io.StringIO, LineWriter]]:
    """nextbest's loggers through a ``LineWriter`` to a string, as ``configure`` sets them
    (restored after)."""
    names = ("nextbest", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        n: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for n in names
        for lg in [logging.getLogger(n)]
    }
    stream = io.StringIO()
    writer = configure(stream)
    try:
        yield stream, writer
    finally:
        writer.close()
        for n, (handlers, level, propagate, disabled) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers[:], lg.level, lg.propagate, lg.disabled = (
                handlers,
                level,
                propagate,
                disabled,
            )


def only(writer: LineWriter) -> None:
    """``writer`` alone on nextbest's logger: pytest adds its capturing handlers to loggers
    that do not propagate, and with them an access line rightly goes through logging."""
    logging.getLogger("nextbest").handlers[:] = [writer]


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_are_written_in_order_within_the_interval(logged: tuple[io.StringIO, LineWriter]):
    stream, _ = logged
    log = logging.getLogger("nextbest.test")
    for i in range(300):
        log.info("line %d", i)
    wait_for(lambda: stream.getvalue().count("\n") == 300)
    assert [line["message"] for line in lines(stream)] == [f"line {i}" for i in range(300)]


def test_a_warning_wakes_the_writer_and_follows_the_lines_before_it():
    stream = io.StringIO()
    writer = LineWriter(stream, interval=3600.0)  # only a warning or close writes here
    writer.setFormatter(JsonFormatter())
    log = logging.getLogger("nextbest.test.warning")
    log.addHandler(writer)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("before")
        log.warning("the warning")
        wait_for(lambda: "the warning" in stream.getvalue())
        assert [line["message"] for line in lines(stream)] == ["before", "the warning"]
    finally:
        log.removeHandler(writer)
        writer.close()


def test_close_writes_every_queued_line_and_later_lines_at_once():
    stream = io.StringIO()
    writer = LineWriter(stream, interval=3600.0)
    writer.setFormatter(JsonFormatter())
    for i in range(50):
        writer.put(f'{{"n": {i}}}')
    writer.close()
    assert [line["n"] for line in lines(stream)] == list(range(50))
    writer.put('{"n": 50}')  # after close: written by the caller
    assert lines(stream)[-1] == {"n": 50}


def test_lines_from_many_threads_are_all_written_whole():
    stream = io.StringIO()
    writer = LineWriter(stream, interval=0.01, max_queued=64)

    def write(t: int) -> None:
        for i in range(500):
            writer.put(orjson.dumps({"t": t, "i": i}).decode())

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    got = lines(stream)
    assert len(got) == 8 * 500
    for t in range(8):  # each thread's lines in its own order
        assert [line["i"] for line in got if line["t"] == t] == list(range(500))


def by_record(created: float, rid: str | None, fields: dict[str, object]) -> None:
    """An access line as a record of ``nextbest.access`` logged while serving ``rid``."""
    token = request_id.set(rid)
    try:
        record = logging.LogRecord(ACCESS.name, logging.INFO, "", 0, "request", None, None)
        record.created = created
        record.access = fields
        ACCESS.handle(record)
    finally:
        request_id.reset(token)


def test_a_request_line_is_the_line_the_formatter_writes(logged: tuple[io.StringIO, LineWriter]):
    stream, writer = logged
    only(writer)
    when = time.time()
    by_record(when, "req-7", {**FIELDS, "key_kind": "write"})
    assert request_line(when, "req-7", "POST", "/v1/track", 200, 0.0005, "write") is writer
    writer.flush()
    record, direct = lines(stream)
    assert record == direct
    assert direct["request_id"] == "req-7"
    assert direct["logger"] == "nextbest.access"


def test_a_request_line_is_the_record_of_its_fields(logged: tuple[io.StringIO, LineWriter]):
    """The same text, byte for byte: ids to escape or not, any method, durations that
    ``orjson`` writes with an exponent and ones it does not, ties of the rounding."""
    stream, writer = logged
    only(writer)
    cases = [
        ("POST", "/v1/track", 200, 0.001235, "write", "0123456789abcdef0123456789abcdef"),
        ("GET", "unmatched", 404, 0.0, "none", "a-b.c:d_e"),
        ('BR"EW', "/v1/profiles/{user_id}", 599, 12.345678, "admin", "id\u2028x"),
        ("GET", "/healthz", 200, 0.00000001, "none", None),
        ("GET", "/healthz", 200, 0.0000005, "none", "x"),
        ("GET", "/healthz", 200, 0.0000015, "none", "x"),
        ("GET", "/healthz", 200, 5.0, "none", "x"),
        ("PUT", "/healthz", 500, 3e13, "server", "Z9"),
    ]
    rnd = random.Random(7)
    for _ in range(2_000):
        seconds = rnd.choice([rnd.random() * 0.01, rnd.random() * 30, 10 ** rnd.uniform(-8, 4)])
        cases.append(("POST", "/v1/track", 200, seconds, "write", "r"))
    when = time.time()
    for method, route, status, seconds, kind, rid in cases:
        fields = {"method": method, "route": route, "status": status}
        fields |= {"duration_ms": round(seconds * 1000, 3), "key_kind": kind}
        by_record(when, rid, fields)
        assert request_line(when, rid, method, route, status, seconds, kind) is writer
    writer.flush()
    got = stream.getvalue().split("\n")[:-1]  # not ``splitlines``: an id holds U+2028
    assert len(got) == 2 * len(cases)
    assert got[0::2] == got[1::2]
    assert orjson.loads(got[2])["request_id"] == "a-b.c:d_e"


def test_an_access_line_goes_through_logging_when_anything_else_would_see_it(
    logged: tuple[io.StringIO, LineWriter],
):
    """A filter on the access log, or a second handler on the way: no direct line."""
    _, writer = logged
    only(writer)
    assert request_line(time.time(), None, "GET", "/healthz", 200, 0.0005, "none") is writer
    keep_none = logging.Filter("nothing.matches")
    ACCESS.addFilter(keep_none)
    try:
        assert request_line(time.time(), None, "GET", "/healthz", 200, 0.0005, "none") is None
    finally:
        ACCESS.removeFilter(keep_none)
    extra = logging.StreamHandler(io.StringIO())
    ACCESS.addHandler(extra)
    try:
        assert request_line(time.time(), None, "GET", "/healthz", 200, 0.0005, "none") is None
    finally:
        ACCESS.removeHandler(extra)
    ACCESS.setLevel(logging.WARNING)
    try:
        assert request_line(time.time(), None, "GET", "/healthz", 200, 0.0005, "none") is None
    finally:
        ACCESS.setLevel(logging.NOTSET)


_SIGNALLED = """
import logging, os, signal, sys
from nextbest.api.logs import close_on_signals, configure
writer = configure(sys.stdout)
writer.interval = 3600.0  # nothing is written before the signal
log = logging.getLogger("nextbest.test")
with close_on_signals(writer):
    for i in range(1000):
        log.info("line %d", i)
    os.kill(os.getpid(), signal.SIGTERM)
    log.info("never: the signal ended the process")
"""


def test_a_termination_signal_writes_every_queued_line_then_ends_the_process():
    run = subprocess.run(
        [sys.executable, "-c", _SIGNALLED],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert run.returncode == -signal.SIGTERM, run.stderr
    got = [orjson.loads(line)["message"] for line in run.stdout.splitlines()]
    assert got == [f"line {i}" for i in range(1000)]
