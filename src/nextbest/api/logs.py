"""Structured logs: one JSON object a line, with the request id of the request being served.

``JsonFormatter`` turns a ``logging.LogRecord`` into ``{"time", "level", "logger", "message",
"request_id", ...}`` (orjson; the standard logging module, no other dependency). An access
line (``api.observe``) adds its fields under ``extra={"access": {...}}``: method, route
template, status, duration_ms, key kind. What a line never holds: a key, a customer token, a
body, a raw path (it could carry a customer id) or a data URL's password; the access fields
are built from values the server chose, never copied from headers or bodies.

``configure(stream)`` routes nextbest's loggers and uvicorn's (its access log off: nextbest
writes its own) through one handler with this formatter: ``nextbest serve`` calls it. An access
line costs about 7 µs of CPU (``BENCHMARKS.md``, "Metrics (issue #17)").
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any, TextIO

import orjson

__all__ = ["ACCESS", "JsonFormatter", "configure", "request_id"]

#: the request being served, for every line logged while serving it (threadpool calls copy
#: the context, so lines logged from there carry it too)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nextbest_request_id", default=None
)

#: the access log: one line a request
ACCESS = logging.getLogger("nextbest.access")


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _time(created: float) -> str:
    """``created`` as ISO 8601 UTC with milliseconds; the second's text is formatted once."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    cached = _second
    if cached[0] != seconds:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        cached[0] = seconds
    return f"{cached[1]}.{millis:03d}Z"


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


def configure(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send nextbest's and uvicorn's logs to ``stream`` (default stderr) as JSON lines;
    uvicorn's own access log is silenced (``nextbest.access`` replaces it). The handler."""
    # the JSON lines name no thread or process: records need not look them up (a third of
    # an access line's cost)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
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
