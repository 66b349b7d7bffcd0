"""The ingestion routes' lean path (``api.ingest``), driven in process on the ASGI app: the
same answers as the route through Starlette's stack, a client that leaves mid-body, and the
key cache of Authorization headers (``api.auth.HeaderKeys``)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from nextbest.api.app import create_app
from nextbest.api.auth import HeaderKeys, authenticate
from nextbest.api.ingest import CLIENT_GONE, IngestRoute
from nextbest.api.metrics import Metrics
from nextbest.engine import Engine
from nextbest.errors import AuthError
from tests.conftest import make_settings
from tests.http.helpers import msg
from tests.support import SERVER_KEY, T0, WRITE_KEY


def basic(key: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{key}:".encode())


Sent = list[dict[str, Any]]


def call(
    app: Callable[..., Any],
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    chunks: list[bytes] | None = None,
    disconnect: bool = False,
) -> Sent:
    """One request through the ASGI ``app``; the messages it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    parts = chunks if chunks is not None else [body]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})
    sent: Sent = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def status_headers_body(sent: Sent) -> tuple[int, dict[bytes, bytes], Any]:
    start, body = sent
    return start["status"], dict(start["headers"]), orjson.loads(body["body"])


@pytest.fixture
def served(make_engine: Callable[..., Engine], tmp_path: Path) -> tuple[Any, Engine]:
    engine = make_engine("sqlite")
    return create_app(engine, make_settings(tmp_path), metrics=Metrics(from_env=False)), engine


def test_the_lean_path_and_starlettes_route_answer_alike(served: tuple[Any, Engine]):
    """Each kind of answer, through ``Observed`` (the lean path) and through the Starlette
    route the same object serves: status, body, headers (the request id apart)."""
    app, engine = served
    route = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/v1/track")
    assert isinstance(route, IngestRoute)
    key = (b"authorization", basic(WRITE_KEY))
    json = (b"content-type", b"application/json")
    good = [orjson.dumps(msg("track", user="u1", event="Clicked", at=T0)) for _ in range(2)]
    cases: list[tuple[bytes, bytes, list[tuple[bytes, bytes]]]] = [
        (good[0], good[1], [key, json]),  # accepted
        (b"{", b"{", [key, json]),  # 400 naming no field
        (b"{}", b"{}", [(b"authorization", basic("nope")), json]),  # 401
        (b"{}", b"{}", [json]),  # no key in the body: 401
        (b"<x/>", b"<x/>", [key, (b"content-type", b"application/xml")]),  # 415
        (b"{}", b"{}", [key, (b"content-length", b"9999999")]),  # 413
        (b"{}", b"{}", [key, (b"content-encoding", b"br")]),  # 400
    ]
    for lean_body, plain_body, headers in cases:
        status, lean_headers, answer = status_headers_body(
            call(app, "/v1/track", lean_body, headers)
        )
        assert lean_headers.pop(b"x-request-id")
        plain = status_headers_body(call(route, "/v1/track", plain_body, headers))
        assert plain == (status, lean_headers, answer), (lean_body, answer)
    assert engine.event_log.count() == 2


def test_a_client_that_leaves_mid_body_gets_no_answer(served: tuple[Any, Engine]):
    app, engine = served
    body = orjson.dumps(msg("track", user="u1", event="Clicked", at=T0))
    headers = [(b"authorization", basic(WRITE_KEY)), (b"content-type", b"application/json")]
    sent = call(app, "/v1/track", body, headers, chunks=[body[:10]], disconnect=True)
    assert sent == []
    assert CLIENT_GONE == 499
    assert engine.event_log.count() == 0
    # a body sent in several chunks is read whole
    sent = call(app, "/v1/track", body, headers, chunks=[body[:10], body[10:20], body[20:]])
    assert status_headers_body(sent)[0] == 200
    assert engine.event_log.count() == 1


def test_known_authorization_headers_are_remembered_and_only_those(tmp_path: Path):
    settings = make_settings(tmp_path)
    keys = HeaderKeys(settings, cap=4)
    header = basic(WRITE_KEY).decode()
    first = keys.caller(header, None, 0.0)
    assert first == authenticate(header, None, settings, 0.0)
    assert keys.caller(header, None, 0.0) is first  # remembered
    for n in range(10):
        with pytest.raises(AuthError):
            keys.caller(basic(f"unknown-{n}").decode(), None, 0.0)
    assert len(keys._known) == 1  # unknown keys are never kept
    for n in range(6):  # variants of a known key: at most ``cap``, then forgotten at once
        keys.caller(f"Basic {base64.b64encode(f'{SERVER_KEY}:{n}'.encode()).decode()}", None, 0.0)
        assert len(keys._known) <= 4
    assert keys.caller(header, None, 0.0) == first
