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

``nextbest serve`` runs uvicorn with ``http=CoalescingProtocol`` (``UVICORN_HTTP``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["FLUSH_AT", "UVICORN_HTTP", "CoalescingProtocol", "CoalescingTransport"]

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


#: what ``nextbest serve`` passes to uvicorn as ``http``
UVICORN_HTTP = CoalescingProtocol
