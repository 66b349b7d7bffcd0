"""``api.fast_lane``: the lean ingestion routes served by the HTTP protocol itself answer
exactly as the ASGI path does. The same matrix of raw requests goes to two real uvicorn
servers on loopback, one on ``serving_protocol`` (the lane) and one on the plain
``CoalescingProtocol`` (every request the ASGI way); statuses, bodies, headers (the date
and generated request ids apart), access lines, metrics and stored events must match."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nextbest.api.app import create_app
from nextbest.api.http_protocol import (
    LANE_UVICORN,
    UVICORN_HTTP,
    CoalescingProtocol,
    LaneProtocol,
    lane_fits,
    serving_protocol,
)
from nextbest.api.logs import ACCESS, JsonFormatter, LineWriter
from nextbest.bootstrap import build_engine
from nextbest.clock import FixedClock
from tests.conftest import LiveServer, make_settings, serving, uvicorn_thread
from tests.support import ADMIN_KEY, BROWSER_KEY, T0, WRITE_KEY

OTHER_WRITE = "test-other-write-key"
METRICS_KEY = "test-metrics-key"
ORIGIN = "https://bank.example"
BURST = 30  # requests a key may make at once (and hardly any more: the rate is tiny)


def _auth(key: str) -> bytes:
    return b"Basic " + base64.b64encode(key.encode() + b":")


def _event(
    n: int, *, event: str = "Page Viewed", kind: str = "track", **more: Any
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": kind,
        "userId": f"user-{n % 3}",
        "messageId": f"msg-{n}",
        "timestamp": "2026-01-05T10:00:00Z",
        **more,
    }
    if kind == "track":
        message["event"] = event
    return message


def _post(
    path: str,
    body: bytes | dict[str, Any],
    *,
    key: str | None = WRITE_KEY,
    content_type: str | None = "application/json",
    extra: bytes = b"",
    version: bytes = b"HTTP/1.1",
    length: int | None = None,
) -> bytes:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    head = b"POST " + path.encode() + b" " + version + b"\r\nHost: x\r\n"
    if key is not None:
        head += b"Authorization: " + _auth(key) + b"\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type.encode() + b"\r\n"
    head += b"Content-Length: %d\r\n" % (len(data) if length is None else length)
    return head + extra + b"\r\n" + data


def _chunked(path: str, body: bytes) -> bytes:
    head = (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + _auth(WRITE_KEY)
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    half = len(body) // 2
    pieces = [body[:half], body[half:]]
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


_PROBE = b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _scenarios() -> list[tuple[str, list[bytes], bool]]:
    """(name, what is sent (each piece after the answers to the one before it), whether a
    probe follows on the same connection: False where the connection closes)."""
    good = _event(1)
    browser = {**_event(40), "anonymousId": "anon-1", "writeKey": BROWSER_KEY}
    del browser["userId"]
    return [
        ("single", [_post("/v1/track", good)], True),
        ("duplicate", [_post("/v1/track", good)], True),
        ("batch", [_post("/v1/batch", {"batch": [_event(n) for n in range(2, 5)]})], True),
        ("page", [_post("/v1/page", _event(5, kind="page", name="Home"))], True),
        ("identify", [_post("/v1/identify", _event(6, kind="identify", traits={"a": 1}))], True),
        ("bad json", [_post("/v1/track", b'{"userId": ')], True),
        ("xml", [_post("/v1/track", b"<x/>", content_type="application/xml")], True),
        ("too large", [_post("/v1/track", b"{" + b" " * 5000 + b"}")], True),
        ("over the lane", [_post("/v1/track", b"{" + b" " * 20_000 + b"}")], True),
        ("no key", [_post("/v1/track", good, key=None)], True),
        ("wrong key", [_post("/v1/track", good, key="nope")], True),
        ("no scope", [_post("/v1/track", _event(7), key=METRICS_KEY)], True),
        ("nul", [_post("/v1/track", _event(8, event="a\u0000b"))], True),
        ("named event", [_post("/v1/track", _event(9, event="Overdraft Started"))], True),
        ("text plain", [_post("/v1/track", _event(10), content_type="text/plain")], True),
        ("no type", [_post("/v1/track", _event(11), content_type=None)], True),
        ("analytics.js", [_post("/v1/t", browser, key=None, content_type="text/plain")], True),
        (
            "origin",
            [
                _post(
                    "/v1/t",
                    {**browser, "messageId": "msg-41"},
                    key=None,
                    content_type="text/plain",
                    extra=b"Origin: " + ORIGIN.encode() + b"\r\n",
                )
            ],
            True,
        ),
        (
            "forwarded",
            [
                _post(
                    "/v1/t",
                    {**browser, "messageId": "msg-42"},
                    key=None,
                    content_type="text/plain",
                    extra=b"X-Forwarded-For: 203.0.113.9\r\n",
                )
            ],
            True,
        ),
        ("chunked", [_chunked("/v1/track", orjson.dumps(_event(12)))], True),
        (
            "gzip",
            [
                _post(
                    "/v1/track",
                    gzip.compress(orjson.dumps(_event(13)), mtime=0),
                    extra=b"Content-Encoding: gzip\r\n",
                )
            ],
            True,
        ),
        ("query", [_post("/v1/track?x=1", _event(14))], True),
        ("request id", [_post("/v1/track", _event(15), extra=b"X-Request-Id: abc-123\r\n")], True),
        ("insane id", [_post("/v1/track", _event(16), extra=b"X-Request-Id: a b\r\n")], True),
        (
            "pipelined",
            [
                b"".join(
                    [
                        _post("/v1/track", _event(17)),
                        _post("/v1/track", b"{"),
                        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                        _post("/v1/track", _event(18)),
                        _post("/v1/track", _event(17)),
                        _post("/v1/track", _event(19), extra=b"Expect: 100-continue\r\n"),
                        _post("/v1/track", _event(20)),
                    ]
                )
            ],
            True,
        ),
        ("keep-alive", [_post("/v1/track", _event(n)) for n in range(21, 25)], True),
        ("close", [_post("/v1/track", _event(25), extra=b"Connection: close\r\n")], False),
        ("http/1.0", [_post("/v1/track", _event(26), version=b"HTTP/1.0")], False),
        (
            "rate limited",
            [
                b"".join(
                    _post("/v1/track", _event(100 + n), key=OTHER_WRITE) for n in range(BURST + 3)
                )
            ],
            True,
        ),
    ]


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while more := sock.recv(65536):
            data += more
    return data


def _parse(data: bytes) -> tuple[list[tuple[bytes, list[tuple[bytes, bytes]], bytes]], bytes]:
    """The whole answers at the start of ``data`` (status line, headers, body each; bodies
    by their Content-Length), and what follows them."""
    out = []
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return out, data
        status, *lines = head.split(b"\r\n")
        headers = [(n.strip().lower(), v.strip()) for n, _, v in (x.partition(b":") for x in lines)]
        length = int(dict(headers).get(b"content-length", b"0"))
        if len(rest) < length:
            return out, data
        out.append((status, headers, rest[:length]))
        data = rest[length:]


def _answers(data: bytes) -> list[tuple[bytes, list[tuple[bytes, bytes]], bytes]]:
    out, left = _parse(data)
    assert left == b"", left
    return out


_GENERATED = re.compile(rb"[0-9a-f]{32}")


def _comparable(answer: tuple[bytes, list[tuple[bytes, bytes]], bytes]) -> Any:
    """An answer without what differs between two servers by design: the date, a request id
    the server drew, the seconds to wait of a 429 (from the monotonic clock)."""
    status, headers, body = answer
    kept = []
    for name, value in headers:
        if name == b"date" or (name == b"x-request-id" and _GENERATED.fullmatch(value)):
            value = b"-"
        if name in (b"retry-after", b"x-ratelimit-reset"):
            assert int(value) >= 1
            value = b"-"
        kept.append((name, value))
    return status, kept, body


def _exchange(port: int, pieces: list[bytes], probe: bool) -> list[Any]:
    """Send each piece once the answers to the one before it are in; then the probe (if
    ``probe``); read to the end of the connection; the answers, comparable."""
    return [_comparable(a) for a in _exchanged(port, pieces, probe)]


def _exchanged(
    port: int, pieces: list[bytes], probe: bool
) -> list[tuple[bytes, list[tuple[bytes, bytes]], bytes]]:
    """``_exchange``'s answers as they came."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        data = b""
        wanted = 0
        for piece in pieces:
            sock.sendall(piece)
            wanted += piece.count(b" HTTP/1.") + piece.count(b"Expect: 100-continue")
            while len(_parse(data)[0]) < wanted:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        if probe:
            sock.sendall(_PROBE)
        data += _read_all(sock)
    return _answers(data)


class _Access(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[Any, ...]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "access", None)
        if fields is not None:
            self.lines.append(
                (fields["method"], fields["route"], fields["status"], fields["key_kind"])
            )


@pytest.fixture
def access() -> Iterator[_Access]:
    handler = _Access()
    level = ACCESS.level
    ACCESS.addHandler(handler)
    ACCESS.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        ACCESS.removeHandler(handler)
        ACCESS.setLevel(level)


def _counting(app: Any) -> Any:
    """``serving_protocol(app)``, counting the requests it served through its lane."""
    base = serving_protocol(app)
    assert issubclass(base, LaneProtocol)

    class Counting(base):  # type: ignore[misc, valid-type]
        served: ClassVar[list[bytes]] = []

        def fast_request(self, route: Any) -> Any:
            request = super().fast_request(route)
            if request is not None:
                Counting.served.append(self.url)
            return request

    Counting.served = []
    _counting.last = Counting  # type: ignore[attr-defined]
    return Counting


@contextlib.contextmanager
def _server(tmp: Path, http: Callable[[Any], Any]) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp,
        write_keys=frozenset({WRITE_KEY, OTHER_WRITE}),
        metrics_keys=frozenset({METRICS_KEY}),
        cors_origins=frozenset({ORIGIN}),
        key_burst=BURST,
        key_rate=1e-6,
        max_body_bytes=4_000,
        browser_body_bytes=2_000,
    )
    with serving(settings, clock=FixedClock(T0), http=http) as server:
        yield server


def _metrics(server: LiveServer) -> list[str]:
    port = int(server.url.rsplit(":", 1)[1])
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request % _auth(ADMIN_KEY))
        ((_, _, body),) = _answers(_read_all(sock))
    wanted = ("nextbest_http_requests_total", "nextbest_events_total", "nextbest_ingest_refused")
    return sorted(
        line
        for line in body.decode().splitlines()
        if line.startswith(wanted) and "_created" not in line
    )


def _run(tmp: Path, http: Callable[[Any], Any], access: _Access) -> dict[str, Any]:
    access.lines.clear()
    with _server(tmp, http) as server:
        port = int(server.url.rsplit(":", 1)[1])
        answers = {name: _exchange(port, pieces, probe) for name, pieces, probe in _scenarios()}
        metrics = _metrics(server)
        events = [stored.event for stored in server.engine.event_log.scan()]
    return {"answers": answers, "metrics": metrics, "events": events, "access": list(access.lines)}


def test_the_lane_answers_and_stores_as_the_asgi_path(tmp_path: Path, access: _Access):
    fast = _run(tmp_path / "fast", _counting, access)
    plain = _run(tmp_path / "plain", lambda app: UVICORN_HTTP, access)
    served = _counting.last.served  # type: ignore[attr-defined]
    assert served.count(b"/v1/track") > 30
    assert b"/v1/batch" in served
    assert b"/v1/t" in served
    for name, answers in fast["answers"].items():
        assert answers == plain["answers"][name], name
    assert fast["access"] == plain["access"]
    assert fast["metrics"] == plain["metrics"]
    assert fast["events"] == plain["events"]
    # the matrix did what it says
    statuses = {
        name: [a[0].split(b" ")[1] for a in answers] for name, answers in fast["answers"].items()
    }
    assert statuses["single"] == [b"200", b"404"]
    assert statuses["too large"][0] == b"413"
    assert statuses["xml"][0] == b"415"
    assert statuses["no key"][0] == statuses["wrong key"][0] == b"401"
    assert statuses["no scope"][0] == b"403"
    assert statuses["nul"][0] == b"400"
    assert statuses["rate limited"][-3:] == [b"429", b"429", b"404"]
    assert statuses["pipelined"] == [
        b"200",
        b"400",
        b"200",
        b"200",
        b"200",
        b"100",
        b"200",
        b"200",
        b"404",
    ]
    assert statuses["close"] == [b"200"]
    assert statuses["http/1.0"] == [b"200"]
    assert b'"duplicates":1' in fast["answers"]["duplicate"][0][2]


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _stored(server: LiveServer, message_id: str) -> bool:
    """Whether the event is in the SQLite file (a connection of its own)."""
    with contextlib.closing(sqlite3.connect(server.settings.data)) as db:
        row = db.execute("SELECT 1 FROM events WHERE message_id = ?", (message_id,)).fetchone()
    return row is not None


def test_an_event_the_lane_accepted_is_in_the_store_when_answered(tmp_path: Path):
    with (
        _server(tmp_path, _counting) as server,
        socket.create_connection(("127.0.0.1", _port(server)), timeout=20) as sock,
    ):
        for n in range(5):
            sock.sendall(_post("/v1/track", _event(n)))
            data = b""
            while not _parse(data)[0]:
                data += sock.recv(65536)
            ((status, _, body),) = _answers(data)
            assert status == b"HTTP/1.1 200 OK"
            assert orjson.loads(body)["accepted"] == 1
            assert _stored(server, f"msg-{n}")  # on disk once answered, read by another
    assert _counting.last.served == [b"/v1/track"] * 5  # type: ignore[attr-defined]


@contextlib.contextmanager
def _logged(kind: str) -> Iterator[io.StringIO]:
    """nextbest's log lines to a string: through a ``LineWriter`` (the access line written
    straight to it, as ``nextbest serve`` runs) or a plain handler (a record formatted)."""
    stream = io.StringIO()
    handler: logging.Handler = (
        LineWriter(stream) if kind == "writer" else logging.StreamHandler(stream)
    )
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("nextbest")
    saved = logger.handlers[:], logger.level, logger.propagate
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        handler.flush()
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)
        handler.close()


@pytest.mark.parametrize("kind", ["writer", "handler"])
def test_the_lane_writes_the_access_line_and_the_metrics(tmp_path: Path, kind: str):
    with _logged(kind) as stream:
        with _server(tmp_path, _counting) as server:
            port = _port(server)
            sent = [
                _post("/v1/track", _event(1), extra=b"X-Request-Id: given-1\r\n"),
                _post("/v1/track", _event(2), key="nope"),
                _post("/v1/track", _event(3), extra=b"Connection: close\r\n"),
            ]
            answers = [_exchanged(port, [request], probe=True) for request in sent[:2]]
            answers += [_exchanged(port, [request], probe=False) for request in sent[2:]]
            metrics = _metrics(server)
        lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert _counting.last.served == [b"/v1/track"] * 3  # type: ignore[attr-defined]
    access = [line for line in lines if line.get("logger") == "nextbest.access"]
    posts = [line for line in access if line.get("route") == "/v1/track"]
    assert [(a["status"], a["key_kind"], a["method"]) for a in posts] == [
        (200, "write", "POST"),
        (401, "none", "POST"),  # an unknown key: no kind
        (200, "write", "POST"),
    ]
    ids = {dict(answer[0][1])[b"x-request-id"].decode() for answer in answers}
    assert ids == {line["request_id"] for line in posts}
    assert "given-1" in ids
    assert all(line["duration_ms"] >= 0 for line in posts)
    assert (
        'nextbest_http_requests_total{method="POST",route="/v1/track",status="2xx"} 2.0' in metrics
    )
    assert (
        'nextbest_http_requests_total{method="POST",route="/v1/track",status="4xx"} 1.0' in metrics
    )
    assert 'nextbest_events_total{outcome="accepted"} 2.0' in metrics
    assert 'nextbest_ingest_refused_total{code="unauthorized"} 1.0' in metrics


def _gone(tmp: Path, http: Callable[[Any], Any], access: _Access) -> tuple[list[Any], bool, bool]:
    """A client that sends half its body and leaves; then another request is served."""
    access.lines.clear()
    with _server(tmp, http) as server:
        request = _post("/v1/track", _event(1))
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=20) as sock:
            sock.sendall(request[: len(request) - 10])
        after = _exchange(_port(server), [_post("/v1/track", _event(2))], probe=True)
        deadline = time.monotonic() + 20  # the server sees the close in its own time
        while len(access.lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        lines = sorted(access.lines)
        return lines, _stored(server, "msg-1"), after[0][0] == b"HTTP/1.1 200 OK"


def test_a_client_that_leaves_mid_body_is_logged_499_and_nothing_is_stored(
    tmp_path: Path, access: _Access
):
    fast = _gone(tmp_path / "fast", _counting, access)
    plain = _gone(tmp_path / "plain", lambda app: UVICORN_HTTP, access)
    assert fast == plain
    lines, stored, served_after = fast
    assert ("POST", "/v1/track", 499, "write") in lines
    assert not stored
    assert served_after


def test_shutdown_answers_or_closes_every_request_and_loses_no_acknowledged_event(
    tmp_path: Path,
):
    """Requests in flight on several connections when the server is told to stop: each
    connection gets whole answers and then its end; every event answered 200 is stored."""
    socks = []
    with _server(tmp_path, _counting) as server:
        for c in range(4):
            sock = socket.create_connection(("127.0.0.1", _port(server)), timeout=20)
            sock.sendall(b"".join(_post("/v1/track", _event(10 * c + n)) for n in range(7)))
            socks.append(sock)
        data = server.settings.data
    # the server has stopped: what each connection got is in its socket
    accepted = []
    for c, sock in enumerate(socks):
        with sock:
            answers = _answers(_read_all(sock))
        for n, (status, _, body) in enumerate(answers):
            assert status == b"HTTP/1.1 200 OK"
            assert orjson.loads(body)["accepted"] == 1
            accepted.append(f"msg-{10 * c + n}")
    with contextlib.closing(sqlite3.connect(data)) as db:
        stored = {row[0] for row in db.execute("SELECT message_id FROM events")}
    assert set(accepted) <= stored


@pytest.mark.parametrize("config", [{"root_path": "/api"}, {"limit_concurrency": 100}])
def test_the_lane_stands_aside_where_uvicorn_would_treat_a_request_otherwise(
    tmp_path: Path, config: dict[str, Any]
):
    """A root path or a concurrency limit: every request the ASGI way, answered as ever."""
    settings = make_settings(tmp_path)
    app = create_app(build_engine(settings, FixedClock(T0)), settings, flush_interval=0.05)
    protocol = _counting(app)
    with uvicorn_thread(app, log_level="warning", lifespan="on", http=protocol, **config) as port:
        answers = _exchange(port, [_post("/v1/track", _event(1))], probe=True)
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"]
    assert protocol.served == []


def test_an_app_without_a_lane_is_served_on_the_coalescing_protocol():
    assert serving_protocol(object()) is CoalescingProtocol


def _release(major: int, minor: int, patch: int = 0) -> str:
    return f"{major}.{minor}.{patch}"


def test_the_lane_runs_only_on_the_uvicorn_releases_it_was_tested_on():
    low, high = LANE_UVICORN
    assert lane_fits(_release(*low))
    assert lane_fits(_release(*high, 7))
    assert not lane_fits(_release(high[0], high[1] + 1))
    assert not lane_fits(_release(low[0], low[1] - 1))
    assert not lane_fits("not a version")


def test_the_lane_needs_every_protocol_method_it_reaches_into():
    class Renamed(HttpToolsProtocol):
        _start_asgi_task = None  # as if a release had renamed it

    assert lane_fits(_release(*LANE_UVICORN[0]), HttpToolsProtocol)
    assert not lane_fits(_release(*LANE_UVICORN[0]), Renamed)


class _Held:
    """An engine whose group-commit answers wait until released (everything else is the
    engine's)."""

    def __init__(self, engine: Any) -> None:
        object.__setattr__(self, "engine", engine)
        object.__setattr__(self, "held", [])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.engine, name, value)

    def submit_with(self, request: Any, answer: Callable[[Any], None]) -> None:
        self.engine.submit_with(request, lambda result: self.held.append((answer, result)))


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, "not within 20 s"
        time.sleep(0.005)


def _left_during_commit(tmp: Path, lane: bool, access: _Access) -> tuple[list[Any], bool]:
    """A client that sends a whole request and leaves while its events are committed."""
    access.lines.clear()
    settings = make_settings(tmp)
    engine = _Held(build_engine(settings, FixedClock(T0)))
    app = create_app(engine, settings, flush_interval=0.05)  # type: ignore[arg-type]
    base = serving_protocol(app) if lane else CoalescingProtocol
    lost: list[bool] = []

    class Watching(base):  # type: ignore[misc, valid-type]
        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            lost.append(True)

    with uvicorn_thread(app, log_level="warning", lifespan="on", http=Watching) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(_post("/v1/track", _event(1)))
            _until(lambda: len(engine.held) == 1)
        _until(lambda: bool(lost))
        answer, result = engine.held.pop()
        answer(result)
        _until(lambda: bool(access.lines))
    # the server stopped (its shutdown waited for nothing more)
    with contextlib.closing(sqlite3.connect(settings.data)) as db:
        stored = db.execute("SELECT 1 FROM events WHERE message_id = 'msg-1'").fetchone()
    return list(access.lines), stored is not None


def test_a_client_that_leaves_during_the_commit_is_answered_to_nobody(
    tmp_path: Path, access: _Access
):
    """The events are stored, nothing is written, the access line and metrics say what the
    route answered (200), as on the ASGI path; the server still stops."""
    fast = _left_during_commit(tmp_path / "fast", True, access)
    plain = _left_during_commit(tmp_path / "plain", False, access)
    assert fast == plain == ([("POST", "/v1/track", 200, "write")], True)


def test_answers_wait_for_a_client_that_does_not_read_and_all_arrive_in_order(tmp_path: Path):
    """Flow control: a client that pipelines many requests and reads nothing fills the
    server's write buffer (made small here); the answers wait for it to drain
    (``pause_writing``, ``resume_writing``), then every answer arrives, whole and in order."""
    settings = make_settings(tmp_path)
    app = create_app(build_engine(settings, FixedClock(T0)), settings, flush_interval=0.05)
    paused: list[bool] = []
    held: list[bool] = []

    class Small(serving_protocol(app)):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transport.set_write_buffer_limits(high=2048)
            super().connection_made(transport)

        def pause_writing(self) -> None:
            paused.append(True)
            super().pause_writing()

        def write_later(self, request: Any, data: bytes) -> None:
            held.append(True)
            super().write_later(request, data)

    count = 400
    requests = [
        _post("/v1/track", _event(n), extra=b"X-Request-Id: r-%d\r\n" % n) for n in range(count)
    ]
    with (
        uvicorn_thread(app, log_level="warning", lifespan="on", http=Small) as port,
        socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender = threading.Thread(target=sock.sendall, args=(b"".join(requests) + _PROBE,))
        sender.start()
        _until(lambda: bool(held))  # an answer waits for the socket
        data = _read_all(sock)
        sender.join()
    assert paused
    answers = _answers(data)
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"] * count + [b"HTTP/1.1 404 Not Found"]
    ids = [dict(headers)[b"x-request-id"] for _, headers, _ in answers[:count]]
    assert ids == [b"r-%d" % n for n in range(count)]


def _held_server(tmp: Path, lane: bool, **config: Any) -> tuple[Any, Any, Any]:
    """An app on a ``_Held`` engine, its protocol (the lane's, or the plain one) and the
    engine, for ``uvicorn_thread``."""
    settings = make_settings(tmp)
    engine = _Held(build_engine(settings, FixedClock(T0)))
    app = create_app(engine, settings, flush_interval=0.05)  # type: ignore[arg-type]
    return app, serving_protocol(app) if lane else CoalescingProtocol, engine


@pytest.mark.parametrize("lane", [True, False])
def test_a_request_pipelined_behind_a_refusal_is_not_cut_by_the_keep_alive_timeout(
    tmp_path: Path, lane: bool
):
    """A refusal the lane answers while it parses (401) leaves no keep-alive timeout armed
    for the request read behind it: that one is still in its group commit, and is answered
    once committed (uvicorn arms the timeout only when no request is in progress)."""
    app, http, engine = _held_server(tmp_path, lane)
    pipelined = _post("/v1/track", _event(1), key="nope") + _post("/v1/track", _event(2))
    config = {"log_level": "warning", "lifespan": "on", "timeout_keep_alive": 0}
    with (
        uvicorn_thread(app, http=http, **config) as port,
        socket.create_connection(("127.0.0.1", port), timeout=20) as sock,
    ):
        sock.sendall(pipelined)
        _until(lambda: len(engine.held) == 1)
        # the server's loop has gone round since (a timeout of 0 s would have fired)
        assert _exchange(port, [_PROBE], probe=False)[0][0] == b"HTTP/1.1 404 Not Found"
        answer, result = engine.held.pop()
        answer(result)
        answers = _answers(_read_all(sock))
    assert [a[0] for a in answers] == [b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 200 OK"]


_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize("lane", [True, False])
def test_an_upgrade_pipelined_behind_a_lane_request_does_not_submit_it_again(
    tmp_path: Path, lane: bool
):
    """uvicorn parses a WebSocket upgrade without making it the connection's current
    request: its end of message must not end the lane's request before it a second time
    (its checks, rate limits and group commit run once)."""
    app, http, engine = _held_server(tmp_path, lane)
    with (
        uvicorn_thread(app, log_level="warning", lifespan="on", http=http) as port,
        socket.create_connection(("127.0.0.1", port), timeout=20) as sock,
    ):
        sock.sendall(_post("/v1/track", _event(1)) + _UPGRADE)
        _until(lambda: bool(engine.held))
        data = b""
        while b"HTTP/1.1 403" not in data:  # the app refuses the WebSocket: parsed by now
            more = sock.recv(65536)
            assert more, data
            data += more
        submitted = len(engine.held)
        for answer, result in engine.held:
            answer(result)
    assert submitted == 1
