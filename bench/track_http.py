"""Ingestion over HTTP with wrk: single-event ``POST /v1/track`` with fresh messageIds, and
``/v1/batch`` of N messages, against the same stack's hello-world in the same run.

The server (uvicorn + ``create_app`` + ``build_engine`` on a temp SQLite file, synchronous=FULL:
every acknowledged event is on disk) runs as a child process on a free loopback port; wrk
(Debian's package: one client thread, ``--connections`` keep-alive connections) loads it for
``--seconds`` per phase, on the other core. Every request of a phase carries a new messageId
(a Lua counter), so every event is really stored: nothing is a duplicate. Baselines, same
run, same wrk settings: a bare Starlette app answering ``GET /`` with ``hello`` on the same
uvicorn (the stack's hello-world), and nextbest's own ``GET /healthz``.

HTTP protocol: nextbest's server runs uvicorn on ``api.http_protocol`` (a response's head and
body in one write; since issue #15's lane, its ingestion requests served by the protocol
itself: ``api.fast_lane``), as ``nextbest serve`` does (``--http uvicorn``: on uvicorn's own
httptools protocol instead, every request the ASGI way). The hello-world is served twice: on
uvicorn's own protocol (``hello-world``, the floor every earlier figure was read against) and
on nextbest's (``hello-tuned``); every phase's ratio is given against both.

``--access-log FILE``: the server writes its JSON access lines (``api.logs``) to FILE, as
``nextbest serve`` writes them to stderr (without it, no log handler is configured).

The disk: a durable commit waits for the device's flush, and on a shared VM that takes from
0.3 to 4 ms from one minute to the next; single events per request are bound by it (a group
commit of ~16 requests per flush with 32 connections). So each run also times 200 SQLite
commits (one row, ``synchronous=FULL``, WAL, in the same folder) just before and just after
the single-event phase: ``disk_commit_ms``.

Run alone with ``--child-serve PORT DATA SYNC HTTP [LOG]`` or ``--child-hello PORT HTTP``,
this file is the server child.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    EXAMPLE_CATALOG,
    HTTP_PROTOCOLS,
    Run,
    add_run_args,
    free_port,
    hello_server,
    log,
    serve,
    start_child,
    stop_child,
    table,
    wrk_phase,
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


def _disk_commit_ms(folder: Path, commits: int = 200) -> dict[str, float]:
    """What one durable one-row SQLite commit costs here now (the device's flush)."""
    import sqlite3
    import statistics

    path = folder / f"probe-{time.monotonic_ns()}.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (x INTEGER)")
    took = []
    for n in range(commits):
        started = time.perf_counter()
        db.execute("INSERT INTO t VALUES (?)", (n,))
        took.append((time.perf_counter() - started) * 1000)
    db.close()
    took.sort()
    return {
        "mean": round(statistics.fmean(took), 3),
        "p50": round(took[len(took) // 2], 3),
        "p90": round(took[len(took) * 9 // 10], 3),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-serve":
        port, data, sync, http = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        if len(sys.argv) > 6:
            from nextbest.api.logs import close_on_signals, configure

            with (
                open(sys.argv[6], "a", buffering=1) as stream,
                close_on_signals(configure(stream)),  # as ``nextbest serve``
            ):
                return serve(EXAMPLE_CATALOG, data, port, sync, WRITE_KEY, time.time(), http)
        return serve(EXAMPLE_CATALOG, data, port, sync, WRITE_KEY, time.time(), http)
    if len(sys.argv) > 1 and sys.argv[1] == "--child-hello":
        return hello_server(int(sys.argv[2]), sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "track_http")
    ap.add_argument("--seconds", type=float, default=10.0, help="per phase")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--batches", default="10,100", help="batch sizes to measure")
    ap.add_argument("--sync", default="FULL", help="server SQLite synchronous setting")
    ap.add_argument("--access-log", default=None, help="the server's JSON access lines go here")
    ap.add_argument(
        "--http",
        choices=HTTP_PROTOCOLS,
        default="nextbest",
        help="nextbest's server on nextbest's HTTP protocol (as nextbest serve) or uvicorn's own",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every phase this many times, hello-world and nextbest taking turns "
        "(a shared machine's load moves within a minute); the median round is reported",
    )
    args = ap.parse_args()
    if args.quick:
        args.seconds = 2.0
    args.name = args.name or ("track_http_quick" if args.quick else "track_http")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    run = Run("track_http", args, "starlette", "uvicorn")
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp, contextlib.ExitStack() as stack:
        hellos = {}
        for name, http in (("hello-world", "uvicorn"), ("hello-tuned", "nextbest")):
            hello_port = free_port()
            child = start_child(
                __file__,
                ["--child-hello", str(hello_port), http],
                f"http://127.0.0.1:{hello_port}/",
            )
            stack.callback(stop_child, child, 30)
            hellos[name] = (child, hello_port)
        port = free_port()
        log_to = [args.access_log] if args.access_log else []
        data = str(Path(tmp) / "track.sqlite")
        server = start_child(
            __file__,
            ["--child-serve", str(port), data, args.sync, args.http, *log_to],
            f"http://127.0.0.1:{port}/",
        )
        stack.callback(stop_child, server, 30)
        for n in range(args.rounds):
            rounds.append(_round(n, args, Path(tmp), hellos, server, port))
    phases = {name: _median_round(rounds, name) for name in rounds[0]}
    ratios = _ratios(rounds, "track")
    tuned = _ratios(rounds, "track", "hello-tuned")
    rows = []
    for name, p in phases.items():
        by_round = _ratios(rounds, name)
        rows.append(
            [
                name,
                f"{p['requests_per_second']:,.0f}",
                f"{p.get('events_per_second', 0):,}" if "events_per_second" in p else "",
                f"{statistics.median(by_round):.2f}x",
                " ".join(f"{x:.2f}" for x in by_round),
                f"{statistics.median(_ratios(rounds, name, 'hello-tuned')):.2f}x",
                p["latency_ms"]["p50"],
                p["latency_ms"]["p99"],
                p["non_2xx"],
                p["server_cpu_us_per_request"],
            ]
        )
    print(
        table(
            f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, SQLite synchronous={args.sync}, "
            f"nextbest on the {args.http} HTTP protocol, {args.rounds} round(s), median round "
            "shown",
            [
                "phase",
                "req/s",
                "events/s",
                "vs hello-world",
                "each round",
                "vs hello-tuned",
                "p50 ms",
                "p99 ms",
                "non-2xx",
                "server CPU µs/request",
            ],
            rows,
        )
    )
    run.write(
        {
            "phases": phases,
            "rounds": rounds,
            "ratio_track_to_hello": statistics.median(ratios),
            "ratio_track_to_hello_by_round": ratios,
            "ratio_track_to_hello_tuned": statistics.median(tuned),
            "ratio_track_to_hello_tuned_by_round": tuned,
        }
    )
    return 0


def _round(
    n: int,
    args: argparse.Namespace,
    tmp: Path,
    hellos: dict[str, tuple[subprocess.Popen[bytes], int]],
    server: subprocess.Popen[bytes],
    port: int,
) -> dict[str, dict[str, Any]]:
    """One round: the hello-worlds, then nextbest's phases, one after the other."""
    phases = {}
    for name, (hello, hello_port) in hellos.items():
        url = f"http://127.0.0.1:{hello_port}/"
        phases[name] = wrk_phase(name, url, args.seconds, args.connections, hello.pid, None)
    base = f"http://127.0.0.1:{port}"
    phases["healthz"] = wrk_phase(
        "GET /healthz", f"{base}/healthz", args.seconds, args.connections, server.pid, None
    )
    for size in [0, *(int(s) for s in args.batches.split(","))]:
        name = "track" if size == 0 else f"batch{size}"
        script = tmp / f"{name}-{n}.lua"  # fresh messageIds every round
        script.write_text(_LUA % {"size": size, "auth": _AUTH, "phase": f"{name}-{n}"})
        disk = _disk_commit_ms(tmp) if size == 0 else None
        phases[name] = wrk_phase(name, base, args.seconds, args.connections, server.pid, script)
        phases[name]["events_per_second"] = round(
            phases[name]["requests_per_second"] * max(size, 1)
        )
        if disk is not None:
            after = _disk_commit_ms(tmp)
            phases[name]["disk_commit_ms"] = {"before": disk, "after": after}
            log(f"disk: a durable commit {disk['p50']} ms before, {after['p50']} after")
    return phases


def _ratios(
    rounds: list[dict[str, dict[str, Any]]], name: str, base: str = "hello-world"
) -> list[float]:
    """Each round's req/s of ``name`` over its ``base``'s."""
    return [r[name]["requests_per_second"] / r[base]["requests_per_second"] for r in rounds]


def _median_round(rounds: list[dict[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    """The phase ``name`` of the round with its median req/s."""
    ordered = sorted((r[name] for r in rounds), key=lambda p: p["requests_per_second"])
    return ordered[(len(ordered) - 1) // 2]


if __name__ == "__main__":
    raise SystemExit(main())
