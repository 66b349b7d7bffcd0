"""The lean ingestion routes served by the HTTP protocol itself, without an ASGI cycle.

A single event's own work (check, read, hand to the group commit) is smaller than what the
ASGI machinery around it costs on the event loop: the protocol's request-response cycle, an
asyncio task, the scope dict, the receive and send messages. ``api.http_protocol``'s
``LaneProtocol`` hands a request that is plainly one of these (a ``POST`` to a lean path,
HTTP/1.1, a small Content-Length, nothing unusual in its headers: ``LaneProtocol``'s
``fast_request``) to a ``FastRequest``, which runs the route's own steps
(``IngestRoute.begin`` when its headers are in, ``take`` once its body is, the group
commit's answer through ``_Answers``) and writes the answer as uvicorn would (status line,
uvicorn's default headers, the route's headers, ``connection: close`` when the connection
ends) with the access line and the metrics of ``api.observe.Observed``. Every other request
takes the ASGI path, where the same steps run (``IngestRoute._accept``).

The lane belongs to one app (``create_app`` puts it on the app as ``fast_lane``), and the
composition root hands it to the protocol (``http_protocol.serving_protocol``); the
protocol serves through it only when uvicorn serves that very app (behind, at most,
uvicorn's proxy-headers middleware, whose headers send a request the ASGI way), at no root
path and without a concurrency limit.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from nextbest.api.ingest import CLIENT_GONE, IngestRoute, answer_headers, refusal
from nextbest.api.logs import request_id
from nextbest.api.metrics import Metrics
from nextbest.api.observe import KEY_KIND, record_request, sane_request_id
from nextbest.errors import NextbestError

if TYPE_CHECKING:
    from uvicorn.config import Config

    from nextbest.api.http_protocol import LaneProtocol

__all__ = ["FastLane", "FastRequest"]

_T = TypeVar("_T")

_SERVER_ERROR = (
    [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"21"),
        (b"connection", b"close"),
    ],
    b"Internal Server Error",
)


class FastLane:
    """The lean routes (path -> ``IngestRoute``) of ``app`` an HTTP protocol may serve
    itself, and the metrics its access lines count in."""

    def __init__(self, app: object, routes: Mapping[str, IngestRoute], metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        #: by the request target's exact bytes (no query, no escapes), with the route's path
        self.routes = {path.encode("ascii"): (route, path) for path, route in routes.items()}
        self._default_for: list[tuple[bytes, bytes]] | None = None
        self._default_head = b""

    def serves(self, config: Config) -> bool:
        """Whether a protocol of ``config`` may serve through this lane: uvicorn runs this
        lane's app (at most behind its proxy-headers middleware), at no root path, without
        a concurrency limit (whose 503 is uvicorn's to answer)."""
        app = config.loaded_app
        if isinstance(app, ProxyHeadersMiddleware):
            app = app.app
        return app is self.app and not config.root_path and config.limit_concurrency is None

    def default_head(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """uvicorn's default headers (``server_state.default_headers``: its date, its
        server) as written in an answer's head; made again when uvicorn renews the list."""
        if headers is not self._default_for:
            self._default_head = b"".join(b"%s: %s\r\n" % (n, v) for n, v in headers)
            self._default_for = headers
        return self._default_head


class _NoEvent:
    """What uvicorn's ``connection_lost`` sets on its current cycle: nothing waits here."""

    def set(self) -> None:
        return None


class FastRequest:
    """One request served by the lane, in the place of uvicorn's ``RequestResponseCycle``
    (the protocol's ``cycle`` and its pipeline read ``response_complete`` and write
    ``keep_alive`` as on a cycle)."""

    message_event = _NoEvent()

    __slots__ = (
        "began",
        "begun",
        "body",
        "complete",
        "disconnected",
        "headers",
        "incoming",
        "keep_alive",
        "lane",
        "path",
        "protocol",
        "raw",
        "response_complete",
        "rid",
        "route",
        "scope",
        "started",
        "submitted",
    )

    def __init__(
        self,
        protocol: LaneProtocol,
        lane: FastLane,
        route: tuple[IngestRoute, str],
        raw: list[tuple[bytes, bytes]],
        incoming: bytes | None,
        keep_alive: bool,
    ) -> None:
        self.protocol = protocol
        self.lane = lane
        self.route, self.path = route
        self.raw = raw
        self.incoming = incoming  # its own X-Request-Id
        self.keep_alive = keep_alive
        self.body = b""
        self.complete = self.started = self.submitted = False
        self.response_complete = self.disconnected = False
        self.began = 0.0
        self.rid = ""
        #: what the route's checks read of an ASGI scope (the client) and write (key kind)
        self.scope: dict[str, Any] = {"client": protocol.client}

    # ------------------------------------------------------------ driven by the protocol
    def start(self) -> None:
        """Its turn on the connection: the checks made before the body (a refusal is
        answered at once, as the ASGI path does), then the rest if the body is in."""
        if self.protocol.transport.is_closing():
            return  # a pipelined request behind a closed connection: never served
        self.started = True
        self.protocol.serving = self
        self.began = time.perf_counter()
        self.rid = sane_request_id(self.incoming)
        begun = self._checked(self._begin)
        if begun is None:
            return
        self.begun = begun
        if self.complete:
            self.run()

    def _begin(self) -> tuple[Any, int, str]:
        self.headers = self.route.headers(self.raw)
        return self.route.begin(self.scope, self.headers)

    def add(self, body: bytes) -> None:
        """A piece of the body (its Content-Length is small: kept whole)."""
        if not self.response_complete and not self.complete:
            self.body = body if not self.body else self.body + body

    def completed(self) -> None:
        """The whole body is in. Once only: uvicorn parses a WebSocket upgrade without
        making it the connection's current request, so the body and end of an upgrade
        pipelined behind this request come here too (ignored, as uvicorn ignores them)."""
        if self.complete:
            return
        self.complete = True
        if self.started and not self.response_complete:
            self.run()

    def lost(self) -> None:
        """The connection closed before the answer: a request still waiting for its body
        is over (499, as the ASGI path's ``ClientGone``); one in the group commit is
        answered to nobody when its commit ends."""
        self.disconnected = True
        if not self.submitted:
            self.protocol.serving = None
            self.response_complete = True
            self.record(CLIENT_GONE)

    # ------------------------------------------------------------ the request's work
    def run(self) -> None:
        """The body's checks and reading, then the group commit."""
        route = self.route
        request = self._checked(route.take, self.scope, self.headers, self.begun, self.body)
        if request is None:
            return
        self.submitted = True
        answers = self.protocol.answers
        try:
            route.engine.submit_with(request, functools.partial(answers.post_call, self.committed))
        except NextbestError as exc:  # not queued: answered now, as the ASGI path would
            self.submitted = False
            self.refused(exc)
        except Exception as exc:
            self.submitted = False
            self.fail(exc)

    def _checked(self, step: Callable[..., _T], *args: Any) -> _T | None:
        """``step(*args)`` under the request's id; None when it refused the request or
        failed (the answer is then written)."""
        token = request_id.set(self.rid)
        try:
            return step(*args)
        except NextbestError as exc:
            self.refused(exc)
        except Exception as exc:
            self.fail(exc)
        finally:
            request_id.reset(token)
        return None

    def committed(self, result: Any) -> None:
        """The group commit's answer, on the event loop."""
        try:
            if isinstance(result, NextbestError):
                self.refused(result)
            elif isinstance(result, BaseException):
                self.fail(result)
            else:
                body = self.route.accepted(result)
                self.answer(200, body, [])
        except Exception as exc:
            self.fail(exc)

    def refused(self, exc: NextbestError) -> None:
        self.route.metrics.refused.labels(exc.code).inc()
        self.answer(*refusal(exc, []))

    def answer(self, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        self.record(status)
        self.respond(status, answer_headers(body, self.rid.encode("ascii"), extra), body)

    def fail(self, exc: BaseException) -> None:
        """A fault of the code (not a refusal): logged and answered 500 with the connection
        closed, as uvicorn answers an ASGI app's exception."""
        self.protocol.logger.error("Exception in ASGI application\n", exc_info=exc)
        self.record(500)
        if self.response_complete:
            self.protocol.transport.close()
            return
        self.keep_alive = False
        headers, body = _SERVER_ERROR
        self.respond(500, headers, body, closing=True)

    def record(self, status: int) -> None:
        """The access line and the metrics, as ``Observed`` writes them."""
        kind = self.scope.get(KEY_KIND, "none")
        record_request(self.lane.metrics, kind, "POST", self.path, status, self.began, self.rid)

    # ------------------------------------------------------------ the answer's bytes
    def respond(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        closing: bool = False,
    ) -> None:
        """Write the answer as uvicorn's cycle would (``closing``: ``headers`` carry
        ``connection: close``); nothing when the client is gone."""
        protocol = self.protocol
        if protocol.serving is self:
            protocol.serving = None
        if self.disconnected or protocol.transport.is_closing():
            self.response_complete = True
            if self.disconnected:  # connection_lost kept it listed until this answer
                protocol.connections.discard(protocol)
            return
        parts = [STATUS_LINE[status], self.lane.default_head(protocol.server_state.default_headers)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not closing:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        data = b"".join(parts)
        if protocol.flow.write_paused:  # as uvicorn's send: wait until the socket drains
            protocol.write_later(self, data)
            return
        self.send(data)

    def send(self, data: bytes) -> None:
        protocol = self.protocol
        self.response_complete = True
        protocol.transport.write(data)
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
