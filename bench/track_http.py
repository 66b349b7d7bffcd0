"""Ingestion over HTTP with wrk: single-event ``POST /v1/track`` with fresh messageIds, and
``/v1/batch`` of N messages, against the same stack's hello-world in the same run.

The server (uvicorn + ``create_app`` + ``build_engine`` on a temp SQLite file, synchronous=FULL:
every acknowledged event is on disk) runs as a child process on a free loopback port; wrk
(Debian's package: one client thread, ``--connections`` keep-alive connections) loads it for
``--seconds`` per phase, on the other core. Every request of a phase carries a new messageId
(a Lua counter), so every event is really stored: nothing is a duplicate. Baselines, same
run, same wrk settings: a bare Starlette app answering ``GET /`` with ``hello`` on the same
uvicorn (the stack's hello-world), and nextbest's own ``GET /healthz``.

``--access-log FILE``: the server writes its JSON access lines (``api.logs``) to FILE, as
``nextbest serve`` writes them to stderr (without it, no log handler is configured).

Run alone with ``--child-serve PORT DATA SYNC [LOG]`` or ``--child-hello PORT``, this file is
the server child.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    EXAMPLE_CATALOG,
    Run,
    add_run_args,
    free_port,
    log,
    proc_cpu_seconds,
    serve,
    table,
)

WRITE_KEY = "bench-write-key"
#: the basic-auth header wrk sends: ``bench-write-key:`` in base64
_AUTH = "Basic YmVuY2gtd3JpdGUta2V5Og=="

_LUA = """
local counter = 0
local size = %(size)d
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "%(auth)s"
local function message(n)
  return '{"type":"track","userId":"u' .. (n %% 5000) .. '","event":"Clicked",' ..
    '"messageId":"w-%(phase)s-' .. n .. '","properties":{"position":1}}'
end
request = function()
  if size == 0 then
    counter = counter + 1
    return wrk.format(nil, "/v1/track", nil, message(counter))
  end
  local parts = {}
  for i = 1, size do
    counter = counter + 1
    parts[i] = message(counter)
  end
  return wrk.format(nil, "/v1/batch", nil, '{"batch":[' .. table.concat(parts, ",") .. ']}')
end
"""


def _hello(port: int) -> int:
    """The stack's hello-world: Starlette on the same uvicorn settings as nextbest."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    ).run()
    return 0


def _child(args: list[str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, __file__, *args])
    port = int(args[1])
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("server child did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def _wrk(url: str, seconds: float, connections: int, script: Path | None) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def ms(label: str) -> float | None:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            return None
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return round(float(m.group(1)) * scale, 3)

    return {
        "requests_per_second": rate,
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
        "latency_ms": {"p50": ms("50"), "p90": ms("90"), "p99": ms("99")},
    }


def _phase(
    name: str, url: str, args: argparse.Namespace, pid: int, script: Path | None
) -> dict[str, Any]:
    cpu0 = proc_cpu_seconds(pid)
    result = _wrk(url, args.seconds, args.connections, script)
    result["server_cpu_seconds"] = round(proc_cpu_seconds(pid) - cpu0, 2)
    log(f"{name}: {result['requests_per_second']:,.0f} req/s, p99 {result['latency_ms']['p99']} ms")
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-serve":
        port, data, sync = int(sys.argv[2]), sys.argv[3], sys.argv[4]
        if len(sys.argv) > 5:
            from nextbest.api.logs import close_on_signals, configure

            with (
                open(sys.argv[5], "a", buffering=1) as stream,
                close_on_signals(configure(stream)),  # as ``nextbest serve``
            ):
                return serve(EXAMPLE_CATALOG, data, port, sync, WRITE_KEY, time.time())
        return serve(EXAMPLE_CATALOG, data, port, sync, WRITE_KEY, time.time())
    if len(sys.argv) > 1 and sys.argv[1] == "--child-hello":
        return _hello(int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "track_http")
    ap.add_argument("--seconds", type=float, default=10.0, help="per phase")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--batches", default="10,100", help="batch sizes to measure")
    ap.add_argument("--sync", default="FULL", help="server SQLite synchronous setting")
    ap.add_argument("--access-log", default=None, help="the server's JSON access lines go here")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 2.0
    args.name = args.name or ("track_http_quick" if args.quick else "track_http")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    run = Run("track_http", args, "starlette", "uvicorn")
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        port = free_port()
        hello = _child(["--child-hello", str(port)])
        try:
            phases["hello-world"] = _phase(
                "hello-world", f"http://127.0.0.1:{port}/", args, hello.pid, None
            )
        finally:
            _stop(hello)
        port = free_port()
        log_to = [args.access_log] if args.access_log else []
        server = _child(
            ["--child-serve", str(port), str(Path(tmp) / "track.sqlite"), args.sync, *log_to]
        )
        try:
            base = f"http://127.0.0.1:{port}"
            phases["healthz"] = _phase("GET /healthz", f"{base}/healthz", args, server.pid, None)
            for size in [0, *(int(s) for s in args.batches.split(","))]:
                name = "track" if size == 0 else f"batch{size}"
                script = Path(tmp) / f"{name}.lua"
                script.write_text(_LUA % {"size": size, "auth": _AUTH, "phase": name})
                phases[name] = _phase(name, base, args, server.pid, script)
                phases[name]["events_per_second"] = round(
                    phases[name]["requests_per_second"] * max(size, 1)
                )
        finally:
            _stop(server)
    hello_rate = phases["hello-world"]["requests_per_second"]
    rows = [
        [
            name,
            f"{p['requests_per_second']:,.0f}",
            f"{p.get('events_per_second', 0):,}" if "events_per_second" in p else "",
            f"{p['requests_per_second'] / hello_rate:.2f}x",
            p["latency_ms"]["p50"],
            p["latency_ms"]["p99"],
            p["non_2xx"],
            p["server_cpu_seconds"],
        ]
        for name, p in phases.items()
    ]
    print(
        table(
            f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, SQLite synchronous={args.sync}",
            [
                "phase",
                "req/s",
                "events/s",
                "vs hello-world",
                "p50 ms",
                "p99 ms",
                "non-2xx",
                "server CPU s",
            ],
            rows,
        )
    )
    run.write(
        {
            "phases": phases,
            "ratio_track_to_hello": phases["track"]["requests_per_second"] / hello_rate,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
