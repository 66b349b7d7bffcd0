"""``api.http_protocol``: uvicorn's httptools protocol writing a response in one piece, on a
real uvicorn server on loopback (keep-alive, pipelining, HEAD, chunked and large streamed
bodies, errors), and its transport's writes counted on a recording transport."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from nextbest.api.http_protocol import (
    FLUSH_AT,
    CoalescingTransport,
)
from tests.conftest import uvicorn_thread

BIG = 5 * 1024 * 1024


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def _echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def _chunks(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for n in range(5):
            await asyncio.sleep(0)
            yield b"part %d;" % n

    return StreamingResponse(parts(), media_type="text/plain")


async def _big(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        piece = bytes(range(256)) * 256  # 64 kB
        for _ in range(BIG // len(piece)):
            yield piece  # no await between pieces: only the socket's flow control paces it

    return StreamingResponse(parts(), media_type="application/octet-stream")


async def _fails(request: Request) -> Response:
    raise RuntimeError("a bug")


class _FailsAfterStart:
    """An ASGI app that sends a head promising 10 bytes, then fails."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
        )
        raise RuntimeError("a bug after the head")


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", _hello, methods=["GET", "HEAD"]),
            Route("/echo", _echo, methods=["POST"]),
            Route("/chunks", _chunks),
            Route("/big", _big),
            Route("/fails", _fails),
            Route("/fails-after-start", _FailsAfterStart()),
        ]
    )


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with uvicorn_thread(_app(), log_level="critical") as p:
        yield p


def _read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` responses with a Content-Length read off ``sock``: (head, body) each."""
    data = b""
    out = []
    while len(out) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) >= length:
                out.append((head, rest[:length]))
                data = rest[length:]
                continue
        more = sock.recv(65536)
        if not more:
            raise AssertionError(f"connection closed after {len(out)} responses")
        data += more
    return out


def test_keep_alive_answers_every_request_on_one_connection(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for n in range(20):
            body = b"message %d" % n
            head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            sock.sendall(head + body)
            ((answered, answer),) = _read_responses(sock, 1)
            assert answered.startswith(b"HTTP/1.1 200 OK")
            assert answer == body


def test_pipelined_requests_are_answered_in_order(port):
    requests = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % n for n in range(5)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(requests + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = _read_responses(sock, 6)
    assert [body for _, body in answers] == [b"0", b"1", b"2", b"3", b"4", b"hello"]


def test_head_has_the_headers_and_no_body_and_the_connection_goes_on(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"hello"):
            more = sock.recv(65536)
            assert more, "connection closed"
            data += more
    first, _, second = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert b"content-length: 5" in first
    assert second.startswith(b"HTTP/1.1 200 OK")  # no body bytes between the two heads
    assert second.endswith(b"\r\n\r\nhello")


def test_expect_100_continue_is_answered_before_the_body_is_sent(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            more = sock.recv(1)
            assert more, "connection closed"
            interim += more
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        ((head, body),) = _read_responses(sock, 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b"body"


def test_connection_close_is_honoured(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while more := sock.recv(65536):
            data += more
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert data.endswith(b"\r\n\r\nhello")


def test_a_chunked_streamed_body_arrives_whole(port):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        answer = client.get("/chunks")
        assert answer.headers["transfer-encoding"] == "chunked"
        assert answer.content == b"part 0;part 1;part 2;part 3;part 4;"
        assert client.get("/").text == "hello"  # same connection, still in step


def test_a_large_streamed_body_arrives_whole(port):
    piece = bytes(range(256)) * 256
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        received = bytearray()
        with client.stream("GET", "/big") as answer:
            for chunk in answer.iter_bytes():
                received += chunk
        assert len(received) == BIG
        assert bytes(received) == piece * (BIG // len(piece))
        big = b"x" * (3 * FLUSH_AT + 7)
        assert client.post("/echo", content=big).content == big


def test_errors_are_answered_or_close_the_connection_as_uvicorn_does(port):
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        answer = client.get("/fails")
        assert answer.status_code == 500
        assert answer.text == "Internal Server Error"
        # the head promised 10 bytes: the socket closes (httpx sees the end of the stream, or
        # a reset when the close overtakes its read, on uvicorn's own protocol alike)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get("/fails-after-start")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert client.get("/").text == "hello"


class _Recording(asyncio.Transport):
    """A transport that records its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


def test_what_one_loop_pass_writes_goes_out_in_one_write():
    async def run() -> tuple[list[bytes], list[bytes], int]:
        wrapped = _Recording()
        transport = CoalescingTransport(wrapped, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
        transport.write(b"hello")
        kept = transport.get_write_buffer_size()
        before = list(wrapped.writes)
        await asyncio.sleep(0)
        return before, wrapped.writes, kept

    before, after, kept = asyncio.run(run())
    assert before == []
    assert after == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    assert kept == len(after[0])


def test_close_writes_what_is_kept_first_and_a_large_write_goes_at_once():
    async def run() -> tuple[list[bytes], bool, list[bytes]]:
        loop = asyncio.get_running_loop()
        wrapped = _Recording()
        transport = CoalescingTransport(wrapped, loop)
        transport.write(b"last words")
        transport.close()
        closed = list(wrapped.writes), wrapped.closed
        big = _Recording()
        CoalescingTransport(big, loop).write(b"y" * FLUSH_AT)
        return closed[0], closed[1], big.writes

    written, closed, big = asyncio.run(run())
    assert written == [b"last words"]
    assert closed
    assert big == [b"y" * FLUSH_AT]
