"""A webhook receiver on loopback for the outbox tests: a real HTTP server (http.server in a
thread) that verifies every signature as docs/outbox.md tells receivers to, answers as a test
scripts it, and acts on each Idempotency-Key once, as a receiver that honors the key does."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from nextbest.channels.signature import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify
from nextbest.errors import AuthError

#: a secret long enough for the settings, and easy to look for in logs and output
SECRET = "whsec-test-0123456789abcdef-SECRET"


@dataclass(frozen=True)
class Arrival:
    """One request as received."""

    key: str
    attempt: int
    signature: str
    body: bytes
    #: None: the signature verified; else why not
    refused: str | None


#: (arrival, how many times its key arrived before) -> (status, body, headers)
Script = Callable[[Arrival, int], tuple[int, bytes, dict[str, str]]]


def accept(arrival: Arrival, before: int) -> tuple[int, bytes, dict[str, str]]:
    return 200, b"ok", {}


def fail_first(n: int, status: int = 500) -> Script:
    """Answer ``status`` to each key's first ``n`` arrivals, then accept."""

    def script(arrival: Arrival, before: int) -> tuple[int, bytes, dict[str, str]]:
        return (status, b"try later", {}) if before < n else (200, b"ok", {})

    return script


@dataclass
class Receiver:
    url: str
    secret: str
    now: Callable[[], float]
    script: Script = accept
    #: called with each arrival before it is answered (a test may block or kill here)
    on_arrival: Callable[[Arrival], None] | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    #: each key acted on, once: the body it was acted on with
    acted: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def keys_seen(self) -> list[str]:
        with self.lock:
            return [a.key for a in self.arrivals]

    def duplicates(self) -> int:
        """Arrivals of a key acted on before (what honoring the key absorbed)."""
        with self.lock:
            return len(self.arrivals) - len({a.key for a in self.arrivals})

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        signature = headers.get(SIGNATURE_HEADER.lower(), "")
        try:
            verify(self.secret, signature, body, self.now())
            refused = None
        except AuthError as exc:
            refused = exc.message
        arrival = Arrival(
            headers.get(IDEMPOTENCY_HEADER.lower(), ""),
            int(headers.get("nextbest-attempt", "0")),
            signature,
            body,
            refused,
        )
        with self.lock:
            before = sum(1 for a in self.arrivals if a.key == arrival.key)
            self.arrivals.append(arrival)
        if self.on_arrival is not None:
            self.on_arrival(arrival)
        if refused is not None:
            return 401, refused.encode(), {}
        with self.lock:
            if arrival.key in self.acted:  # honored: acted on once, answered as before
                return 200, b"already done", {}
        status, text, extra = self.script(arrival, before)
        if 200 <= status < 300:
            with self.lock:
                self.acted[arrival.key] = body
        return status, text, extra


@contextmanager
def receiving(
    now: Callable[[], float], script: Script = accept, secret: str = SECRET
) -> Iterator[Receiver]:
    """A receiver listening on a free loopback port until the block ends."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, text, extra = holder[0].answer(headers, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    receiver = Receiver(f"http://{host!s}:{port}/hooks/telephony", secret, now, script)
    holder.append(receiver)
    thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
