"""Structured logs: one JSON object a line, with the request id of the request being served.

``JsonFormatter`` turns a ``logging.LogRecord`` into ``{"time", "level", "logger", "message",
"request_id", ...}`` (orjson; the standard logging module, no other dependency). An access
line (``api.observe``) adds its fields under ``extra={"access": {...}}``: method, route
template, status, duration_ms, key kind. What a line never holds: a key, a customer token, a
body, a raw path (it could carry a customer id) or a data URL's password; the access fields
are built from values the server chose, never copied from headers or bodies.

``LineWriter`` is the handler ``nextbest serve`` logs through: a line is formatted on the
thread that logs it (so it carries that request's id) and queued; a background thread
writes what is queued in one write, at the latest ``interval`` seconds (0.1 s) after it was
logged. A write and a flush per line cost a server more than the rest of its access line:
a system call on the event loop's thread, which also hands the GIL to any other thread
waiting for it. A warning or an error wakes the writer at once (it follows every line
queued before it); ``close`` (``logging.shutdown`` at exit, or a termination signal through
``close_on_signals``) writes everything still queued.

``configure(stream)`` routes nextbest's loggers and uvicorn's (its access log off: nextbest
writes its own) through one ``LineWriter`` with this formatter: ``nextbest serve`` calls it.
An access line costs about 4 µs of CPU (``BENCHMARKS.md``, "The ingestion hot path").
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

import orjson

__all__ = [
    "ACCESS",
    "JsonFormatter",
    "LineWriter",
    "close_on_signals",
    "configure",
    "request_id",
    "request_line",
]

#: the request being served, for every line logged while serving it (threadpool calls copy
#: the context, so lines logged from there carry it too)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nextbest_request_id", default=None
)

#: the access log: one line a request
ACCESS = logging.getLogger("nextbest.access")


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text
_MILLIS = [f".{millis:03d}Z" for millis in range(1000)]  # a time's last characters


def _time(created: float) -> str:
    """``created`` as ISO 8601 UTC with milliseconds; the second's text is formatted once."""
    seconds = int(created)
    cached = _second
    if cached[0] != seconds:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        cached[0] = seconds
    return cached[1] + _MILLIS[int((created - seconds) * 1000)]  # type: ignore[no-any-return]


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO 8601), level, logger, message, the request
    id (when serving one), the access fields, and the exception's type and text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            line["request_id"] = rid
        access = getattr(record, "access", None)
        if access is not None:
            line.update(access)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
            line["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class LineWriter(logging.Handler):
    """Formatted lines to ``stream``, written by a background thread (module docstring):
    each line within ``interval`` seconds, all queued lines in one write; a record of
    ``at_once`` level or above wakes the thread at once. ``flush`` writes what is queued
    from the calling thread; ``close`` stops the thread after it wrote everything, and a
    line logged after ``close`` is written by the thread that logs it."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 0.1,
        *,
        at_once: int = logging.WARNING,
        max_queued: int = 2_000,
    ) -> None:
        super().__init__()
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.interval = interval
        self.at_once = at_once
        self.max_queued = max_queued
        #: lines formatted, not yet written (append and popleft are atomic: no lock)
        self._queued: collections.deque[str] = collections.deque()
        self._writing = threading.Lock()  # one write at a time, lines in queue order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._stopped = False

    # ---------------------------------------------------------------- logging.Handler
    def handle(self, record: logging.LogRecord) -> bool:
        """Filter, format and queue ``record``, without the handler lock ``emit`` runs
        under in ``logging.Handler``: queueing a line needs none."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's own contract: a bad record never raises to its caller
            self.handleError(record)
            return
        self.put(line, at_once=record.levelno >= self.at_once)

    def flush(self) -> None:
        """Write every queued line now, from the calling thread."""
        self._drain()

    def close(self) -> None:
        """Stop the writer thread once it has written every queued line (waiting a few
        seconds at most: a stream that takes no more never hangs a shutdown)."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.interval + 5.0)
        self._drain(timeout=5.0)
        super().close()

    # ---------------------------------------------------------------- lines
    def put(self, line: str, *, at_once: bool = False) -> None:
        """Queue ``line`` (one formatted line, without its newline) for the writer thread,
        waking it when ``at_once`` or when the queue is long; after ``close``, write it."""
        self._queued.append(line)
        if self._stopped:
            self._drain(timeout=5.0)
            return
        if self._thread is None:
            self._begin()
        if at_once or len(self._queued) >= self.max_queued:
            self._wake.set()

    def _drain(self, timeout: float = -1) -> None:
        """Write every queued line in one write and flush the stream."""
        if not self._writing.acquire(timeout=timeout):
            return
        try:
            queued = self._queued
            count = len(queued)
            if not count:
                return
            lines = [queued.popleft() for _ in range(count)]
            lines.append("")
            try:
                self.stream.write("\n".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: as StreamHandler
                if logging.raiseExceptions and sys.__stderr__ is not None:
                    with contextlib.suppress(OSError, ValueError):
                        sys.__stderr__.write(f"--- nextbest: {count} log lines lost ---\n")
        finally:
            self._writing.release()

    def _begin(self) -> None:
        with self._start:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name="nextbest-log-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
            if self._stopped:
                self._drain()  # whatever came in meanwhile
                return


#: an access line's pieces around its values, as ``orjson`` writes them
_LINE_START = '{"time":"'
_LINE_ID = f'","level":"info","logger":{orjson.dumps(ACCESS.name).decode()},"message":"request"'
#: ``,"method":...,"route":...,"status":`` and ``,"key_kind":...}`` by (method, route, kind)
_PARTS: dict[tuple[str, str, str], tuple[str, str]] = {}
_CACHED = 256  # entries: routes and kinds are the server's, methods nearly so


def request_line(
    created: float,
    rid: str | None,
    method: str,
    route: str,
    status: int,
    seconds: float,
    key_kind: str,
) -> LineWriter | None:
    """Write an access line straight to the ``LineWriter`` that would write it, without a
    ``LogRecord``: the line ``JsonFormatter`` writes for a record of ``nextbest.access``
    with the request id ``rid`` and the fields ``{"method", "route", "status",
    "duration_ms", "key_kind"}`` (in that order; ``duration_ms``: ``round(seconds * 1000,
    3)``), built from pieces encoded once (its strings by ``orjson``, its numbers as
    ``orjson`` writes them). Returns that writer, or None (nothing written) when the access
    log is not plainly routed to one: then the caller logs a record as any other (a test's
    handler, a filter, a level)."""
    writer = _plain_writer()
    if writer is None:
        return None
    parts = _PARTS.get((method, route, key_kind))
    if parts is None:
        parts = (
            f',"method":{_json(method)},"route":{_json(route)},"status":',
            f',"key_kind":{_json(key_kind)}}}',
        )
        if len(_PARTS) < _CACHED:
            _PARTS[(method, route, key_kind)] = parts
    head, tail = parts
    if rid is None:
        who = ""
    elif rid.isascii() and rid.isalnum():  # nothing to escape
        who = f',"request_id":"{rid}"'
    else:
        who = f',"request_id":{_json(rid)}'
    ms = _millis(seconds)
    writer.put(
        f'{_LINE_START}{_time(created)}{_LINE_ID}{who}{head}{status:d},"duration_ms":{ms}{tail}'
    )
    return writer


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _millis(seconds: float) -> str:
    """``round(seconds * 1000, 3)`` as ``orjson`` writes it. Under 10^12 ms (and not
    negative), that float's shortest text is the correctly rounded ``%.3f`` without its
    trailing zeros (one kept after the point): no ``round`` to a float then ``repr`` of it,
    three times the cost."""
    ms = seconds * 1000
    if 0.0 <= ms < 1e12:
        text = f"{ms:.3f}".rstrip("0")
        return text + "0" if text[-1] == "." else text
    return _json(round(ms, 3))


def _plain_writer() -> LineWriter | None:
    """The one ``LineWriter`` an INFO record of ``nextbest.access`` reaches (as
    ``Logger.callHandlers`` walks the loggers), with a ``JsonFormatter`` and no filter on
    the way; None when there is none, or anything else would see the record too."""
    if ACCESS.disabled or ACCESS.filters or not ACCESS.isEnabledFor(logging.INFO):
        return None
    found: LineWriter | None = None
    logger: logging.Logger | None = ACCESS
    while logger is not None:
        for handler in logger.handlers:
            if handler.level > logging.INFO:
                continue  # it would not see the record either
            if (
                found is not None
                or type(handler) is not LineWriter
                or handler.filters
                or type(handler.formatter) is not JsonFormatter
            ):
                return None
            found = handler
        if not logger.propagate:
            break
        logger = logger.parent
    return found


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> LineWriter:
    """Send nextbest's and uvicorn's logs to ``stream`` (default stderr) as JSON lines
    through one ``LineWriter``; uvicorn's own access log is silenced (``nextbest.access``
    replaces it). The handler."""
    # the JSON lines name no thread or process: records need not look them up (a third of
    # an access line's cost)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = LineWriter(stream)
    handler.setFormatter(JsonFormatter())
    for name in ("nextbest", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    access.disabled = True
    return handler


@contextlib.contextmanager
def close_on_signals(
    handler: logging.Handler, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> Iterator[None]:
    """While inside, a termination signal closes ``handler`` (every queued line written)
    before the signal does what it did before. uvicorn serves with its own handlers, then
    restores these and raises the signal again to exit as signalled: no ``atexit`` runs
    then, so this is where the last lines (its "Finished server process" included) are
    written."""
    previous: dict[int, Any] = {}

    def closing(signum: int, frame: Any) -> None:
        handler.close()
        before = previous.get(signum, signal.SIG_DFL)
        if callable(before):
            before(signum, frame)
            return
        signal.signal(signum, before)
        signal.raise_signal(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    for signum in signals:
        previous[signum] = signal.signal(signum, closing)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
