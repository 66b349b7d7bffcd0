"""uvicorn's httptools HTTP/1.1 protocol, each response written to the socket in one piece.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body with ``http.response.body``: two ``write`` calls,
two TCP segments and two trips through the loopback or network stack for what is mostly a
small JSON answer. ``CoalescingProtocol`` gives uvicorn's protocol a transport that keeps
what is written during one pass of the event loop and hands it to the socket in one
``write`` at the end of that pass (``loop.call_soon``): head and body go out together, and
so do pipelined answers on one connection. Nothing else changes: the bytes and their order
are uvicorn's; a write is at most one loop pass late; a ``close`` or ``write_eof`` first
writes what is kept; and more than ``FLUSH_AT`` bytes kept are written at once, so a large
or streamed body still meets the socket's flow control (``pause_writing``) as before.

``LaneProtocol`` (a ``CoalescingProtocol``) serves the lean ingestion routes of one app
itself, without an ASGI cycle (``api.fast_lane``); ``serving_protocol(app)`` is the one to
run an app on: ``LaneProtocol`` bound to the app's lane when it has one, else
``CoalescingProtocol``. ``nextbest serve`` runs uvicorn with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from nextbest.api.fast_lane import FastLane, FastRequest
from nextbest.api.ingest import READ_ON_LOOP, answers_for

__all__ = [
    "FLUSH_AT",
    "LANE_NEEDS",
    "LANE_UVICORN",
    "UVICORN_HTTP",
    "CoalescingProtocol",
    "CoalescingTransport",
    "LaneProtocol",
    "lane_fits",
    "serving_protocol",
]

#: bytes kept past which a write goes to the socket at once
FLUSH_AT = 65_536


class CoalescingTransport(asyncio.Transport):
    """A transport that writes what it is given during one event-loop pass in one write to
    the transport it wraps; everything else is that transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.wrapped = transport
        self.loop = loop
        self._kept: list[bytes] = []
        self._size = 0

    # ------------------------------------------------------------ writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._kept:
            self.loop.call_soon(self.flush)
        self._kept.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is kept now (a closed connection drops it, as its transport would)."""
        kept = self._kept
        if not kept:
            return
        self._kept, self._size = [], 0
        if self.wrapped.is_closing():
            return
        self.wrapped.write(kept[0] if len(kept) == 1 else b"".join(kept))

    def write_eof(self) -> None:
        self.flush()
        self.wrapped.write_eof()

    def can_write_eof(self) -> bool:
        return self.wrapped.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._size + self.wrapped.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.wrapped.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.wrapped.set_write_buffer_limits(high, low)

    # ------------------------------------------------------------ the rest: as wrapped
    def close(self) -> None:
        self.flush()
        self.wrapped.close()

    def abort(self) -> None:
        self._kept, self._size = [], 0
        self.wrapped.abort()

    def is_closing(self) -> bool:
        return self.wrapped.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.wrapped.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.wrapped.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.wrapped.get_protocol()

    def is_reading(self) -> bool:
        return self.wrapped.is_reading()

    def pause_reading(self) -> None:
        self.wrapped.pause_reading()

    def resume_reading(self) -> None:
        self.wrapped.resume_reading()


class CoalescingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))


#: the protocol of an app without a lane (``serving_protocol`` is the one to use)
UVICORN_HTTP = CoalescingProtocol

#: request headers that send a lean route's request the ASGI way: a body in chunks or
#: encoded, an interim answer asked, a protocol switch, a browser's CORS, proxy headers
#: (uvicorn's middleware rewrites the client from them)
_UNUSUAL = frozenset(
    {
        b"transfer-encoding",
        b"content-encoding",
        b"expect",
        b"upgrade",
        b"origin",
        b"x-forwarded-for",
        b"x-forwarded-proto",
    }
)


async def _queued_fast(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    """Marks a ``FastRequest`` in uvicorn's pipeline (never called as an app)."""
    raise RuntimeError("a fast request is started by the protocol, not as an ASGI app")


class LaneProtocol(CoalescingProtocol):
    """``CoalescingProtocol`` serving the requests its ``lane`` takes (``fast_request``)
    through a ``FastRequest``, everything else as uvicorn does. Requests on one connection
    are answered one after the other, in order, whichever path serves them: a request
    parsed while another is unanswered waits in uvicorn's pipeline (reading paused)."""

    lane: ClassVar[FastLane]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        lane = self.lane
        self._routes = lane.routes if lane.serves(config) else {}
        self.answers = answers_for(self.loop)
        #: the fast request started and not yet answered (one at a time a connection)
        self.serving: FastRequest | None = None
        self._later: tuple[FastRequest, bytes] | None = None

    # ------------------------------------------------------------ parsing
    def on_message_begin(self) -> None:
        # uvicorn's, without the ASGI scope: made when a request takes the ASGI path; and
        # no keep-alive timeout while a request is in progress (a refusal answered while
        # parsing arms one, as the connection then looks idle: uvicorn only answers later)
        self._unset_keepalive_if_required()
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]

    def _asgi_scope(self) -> None:
        """The scope uvicorn's ``on_message_begin`` makes."""
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_headers_complete(self) -> None:
        route = self._routes.get(self.url) if self._routes else None
        request = self.fast_request(route) if route is not None else None
        if request is None:
            self._asgi_scope()
            super().on_headers_complete()
            return
        existing = self.cycle
        self.cycle = request  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            request.start()
        else:  # pipelined behind an unanswered request: its turn comes (uvicorn's queue)
            self.flow.pause_reading()
            self.pipeline.appendleft((request, _queued_fast))  # type: ignore[arg-type]

    def fast_request(self, route: tuple[Any, str]) -> FastRequest | None:
        """A ``FastRequest`` for the request whose headers are in, when it is plainly one
        for ``route``: POST, HTTP/1.1, no protocol switch, one Content-Length of at most
        ``READ_ON_LOOP`` bytes, none of the ``_UNUSUAL`` headers. None: the ASGI path."""
        parser = self.parser
        if (
            parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or parser.should_upgrade()
            or self.expect_100_continue
        ):
            return None
        length: bytes | None = None
        incoming: bytes | None = None
        for name, value in self.headers:
            if name in _UNUSUAL:
                return None
            if name == b"content-length":
                if length is not None:
                    return None
                length = value
            elif name == b"x-request-id" and incoming is None:
                incoming = value
        if length is None or not length.isdigit() or int(length) > READ_ON_LOOP:
            return None
        return FastRequest(
            self, self.lane, route, self.headers, incoming, parser.should_keep_alive()
        )

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if app is _queued_fast:  # a fast request's turn, from uvicorn's pipeline
            self.loop.call_soon(cycle.start)  # not nested in the answer before it
            return
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        cycle: Any = self.cycle
        if type(cycle) is FastRequest:
            cycle.add(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: Any = self.cycle
        if type(cycle) is FastRequest:
            cycle.completed()
            return
        super().on_message_complete()

    # ------------------------------------------------------------ the connection
    def write_later(self, request: FastRequest, data: bytes) -> None:
        """Hold ``request``'s answer until the socket drains (``resume_writing``)."""
        self._later = (request, data)

    def resume_writing(self) -> None:
        super().resume_writing()
        later = self._later
        if later is not None and not self.flow.write_paused:
            self._later = None
            later[0].send(later[1])

    def connection_lost(self, exc: Exception | None) -> None:
        serving, later = self.serving, self._later
        super().connection_lost(exc)
        self._later = None
        if later is not None:  # an answer held for the socket: nobody to read it
            later[0].response_complete = True
        if serving is not None and not serving.response_complete:
            serving.lost()
            if serving.submitted:  # in the group commit: the server waits for its answer
                self.connections.add(self)


#: the uvicorn releases the lane was built and tested on: it reaches into uvicorn's
#: protocol (its pipeline, ``_start_asgi_task``, the keep-alive timer), which a release may
#: change without notice, so another release serves every request the ASGI way
LANE_UVICORN = ((0, 55), (0, 55))

#: uvicorn's protocol methods the lane calls or overrides
LANE_NEEDS = (
    "_start_asgi_task",
    "_unset_keepalive_if_required",
    "on_response_complete",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "resume_writing",
    "connection_lost",
)

_log = logging.getLogger(__name__)


def lane_fits(version: str, protocol: type = HttpToolsProtocol) -> bool:
    """Whether the lane may run on uvicorn ``version`` whose httptools protocol is
    ``protocol``: a release in ``LANE_UVICORN`` with every method of ``LANE_NEEDS``."""
    try:
        release = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    low, high = LANE_UVICORN
    return low <= release <= high and all(callable(getattr(protocol, n, None)) for n in LANE_NEEDS)


def serving_protocol(app: object) -> type[CoalescingProtocol]:
    """The HTTP protocol to serve ``app`` on: ``LaneProtocol`` bound to its lane
    (``app.fast_lane``, set by ``api.app.create_app``) on a uvicorn it fits
    (``lane_fits``), else ``CoalescingProtocol``."""
    lane = getattr(app, "fast_lane", None)
    if not isinstance(lane, FastLane):
        return CoalescingProtocol
    if not lane_fits(uvicorn.__version__):
        _log.warning(
            "uvicorn %s is not a release the ingestion lane was tested on (%s): "
            "every request is served the ASGI way",
            uvicorn.__version__,
            " to ".join(f"{r[0]}.{r[1]}" for r in LANE_UVICORN),
        )
        return CoalescingProtocol
    return type("LaneProtocol", (LaneProtocol,), {"lane": lane})
