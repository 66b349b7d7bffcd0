"""The HTTP face's own CPU per request, in process: the ASGI app called directly (no sockets,
no uvicorn), next to the same stack's hello-world in the same run.

``bench/track_http.py`` measures req/s with wrk, which on a shared 2-core VM moves with the
neighbours' load and with the disk's flush time from one minute to the next. This measures
what a request costs the server's CPU (process CPU time over the run: the event loop's
thread and the group-commit thread, the commit's kernel time included), which moves far
less. Phases, each ``--requests`` requests from ``--concurrency`` tasks on one uvloop event
loop, best of ``--repeat``:

* ``hello-world``: a bare Starlette app answering ``GET /`` with ``hello``;
* ``healthz``: nextbest's ``GET /healthz`` (``create_app`` on ``build_engine``);
* ``track``: single-event ``POST /v1/track``, a fresh messageId each (every event stored,
  on a temp SQLite file at ``--sync``: FULL by default, every answer after its commit);
* ``track+log``: the same with the JSON access lines written to a file as ``nextbest serve``
  writes them (``api.logs.configure``), when ``--access-log`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import EXAMPLE_CATALOG, Run, add_run_args, log, table

WRITE_KEY = "bench-write-key"
_AUTH = b"Basic YmVuY2gtd3JpdGUta2V5Og=="  # bench-write-key:


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Exchange:
    """One request's ASGI channel: its body, then what the app answered."""

    def __init__(self, body: bytes) -> None:
        self.messages = [{"type": "http.request", "body": body, "more_body": False}]
        self.statuses: list[int] = []

    async def receive(self) -> dict[str, Any]:
        return self.messages.pop() if self.messages else {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.statuses.append(message["status"])


async def _drive(
    app: Any, method: str, path: str, body_of: Callable[[int], bytes], ids: Any, concurrency: int
) -> None:
    async def worker() -> None:
        for n in ids:
            body = body_of(n)
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1",
                "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 50000),
                "scheme": "http",
                "method": method,
                "root_path": "",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "headers": [
                    (b"host", b"127.0.0.1:8000"),
                    (b"authorization", _AUTH),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
            exchange = _Exchange(body)
            await app(scope, exchange.receive, exchange.send)
            if exchange.statuses != [200]:
                raise SystemExit(f"{method} {path} answered {exchange.statuses}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _track_body(phase: str) -> Callable[[int], bytes]:
    def body(n: int) -> bytes:
        return (
            b'{"type":"track","userId":"u%d","event":"Clicked","messageId":"a-%s-%d",'
            b'"properties":{"position":1}}' % (n % 5000, phase.encode(), n)
        )

    return body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "track_asgi")
    ap.add_argument("--requests", type=int, default=20_000, help="per phase and repeat")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sync", default="FULL", help="SQLite synchronous setting")
    ap.add_argument("--access-log", default=None, help="also run track+log, lines to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.repeat = 2_000, 1
    args.name = args.name or ("track_asgi_quick" if args.quick else "track_asgi")
    import uvloop

    run = Run("track_asgi", args, "starlette", "uvloop")
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        result = uvloop.run(_measure(args, Path(tmp)))
    base = result["hello-world"]["cpu_us_per_request"]
    rows = [
        [
            name,
            f"{p['cpu_us_per_request']:.1f}",
            f"{p['cpu_us_per_request'] / base:.1f}x",
            " ".join(f"{x:.1f}" for x in p["each"]),
        ]
        for name, p in result.items()
    ]
    print(
        table(
            f"{args.requests:,} requests x {args.repeat}, {args.concurrency} tasks, "
            f"SQLite synchronous={args.sync}",
            ["phase", "CPU µs/request (best)", "vs hello-world", "each repeat"],
            rows,
        )
    )
    run.write({"phases": result})
    return 0


async def _measure(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from nextbest.api.app import create_app
    from nextbest.api.metrics import Metrics
    from nextbest.bootstrap import build_engine
    from nextbest.clock import FixedClock
    from nextbest.settings import Settings

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    settings = Settings(
        catalog=str(EXAMPLE_CATALOG),
        data=str(tmp / "track.sqlite"),
        write_keys=frozenset({WRITE_KEY}),
        admin_keys=frozenset({"bench-admin-key"}),
        token_secret="bench-token-secret",
        sqlite_synchronous=args.sync,
    )
    engine = build_engine(settings, FixedClock(time.time()))
    app = create_app(engine, settings, metrics=Metrics(from_env=False))
    phases: list[tuple[str, Any, str, str, Callable[[int], bytes]]] = [
        ("hello-world", Starlette(routes=[Route("/", hello)]), "GET", "/", lambda n: b""),
        ("healthz", app, "GET", "/healthz", lambda n: b""),
        ("track", app, "POST", "/v1/track", _track_body("track")),
    ]
    if args.access_log:
        phases.append(("track+log", app, "POST", "/v1/track", _track_body("log")))
    ids = itertools.count()
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, target, method, path, body in phases:
            writer = None
            if name == "track+log":
                from nextbest.api.logs import configure

                saved = _logging_state()
                stream = open(args.access_log, "a", buffering=1)  # noqa: SIM115
                writer = configure(stream)
            each = []
            counter = itertools.islice(ids, min(2_000, args.requests))
            await _drive(target, method, path, body, counter, args.concurrency)  # warm-up
            for _ in range(args.repeat):
                counter = itertools.islice(ids, args.requests)
                started = _cpu()
                await _drive(target, method, path, body, counter, args.concurrency)
                each.append((_cpu() - started) * 1e6 / args.requests)
            if writer is not None:
                writer.close()
                stream.close()
                _restore_logging(saved)
            out[name] = {"cpu_us_per_request": min(each), "each": each}
            log(f"{name}: {min(each):.1f} µs CPU a request (best of {args.repeat})")
    finally:
        engine.close()
    return out


_LOGGERS = ("nextbest", "uvicorn", "uvicorn.error", "uvicorn.access")
_FLAGS = ("logThreads", "logProcesses", "logMultiprocessing")


def _logging_state() -> dict[str, Any]:
    """What ``api.logs.configure`` changes, to put back (a test imports this script)."""
    loggers = {}
    for name in _LOGGERS:
        lg = logging.getLogger(name)
        loggers[name] = (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
    return {"loggers": loggers, "flags": {f: getattr(logging, f) for f in _FLAGS}}


def _restore_logging(saved: dict[str, Any]) -> None:
    for name, (handlers, level, propagate, disabled) in saved["loggers"].items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
    for flag, value in saved["flags"].items():
        setattr(logging, flag, value)


if __name__ == "__main__":
    sys.exit(main())
