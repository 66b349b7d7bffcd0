"""Benchmark: the rate ``nextbest sim send`` sustains, open loop, from one core.

    .venv/bin/python bench/send.py            # full run (~2 min)
    .venv/bin/python bench/send.py --quick    # smoke run (~20 s)

The sender (``nextbest.sim.send.run_send``: one asyncio thread on uvloop, an httpx connection
pool) reads a seeded NDJSON file of Segment-spec messages (the same generator as
``bench/ingest.py``: page views, bank track events, identify trait updates, analytics.js-like
``context``) and posts ``/v1/batch`` bodies of ``--batch`` messages on a fixed schedule.

1. Against a cheap sink: a minimal uvicorn + Starlette app in a child process on a free
   loopback port that reads each body and answers 200 ``{"success":true}`` without parsing or
   storing anything, so what is measured is the sender's own cost (the file is read again
   from the top when a run needs more messages than it holds). For each offered rate
   (``--rates``) and each input path (``--modes``: ``lines`` sends NDJSON lines as they are,
   the CLI's path; ``dicts`` parses every line with ``read_ndjson`` and re-encodes it), for
   ``--seconds`` seconds: achieved events/s, the sender's CPU time (``time.process_time``)
   per event and per second of wall time, the sink's CPU, and latency percentiles measured
   from each batch's due time.
2. Against the real server: ``create_app`` + ``build_engine`` on a temporary SQLite
   file (synchronous=FULL) in a child process, at ``--server-rate`` events/s for
   ``--server-seconds`` seconds: errors, latency, and the events in the log afterwards.

Results: ``bench/results/send.json`` (``send_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import orjson

from _common import (
    EXAMPLE_CATALOG,
    RESULTS,
    command_line,
    free_port,
    load_average,
    log,
    machine_info,
    now_iso,
    proc_cpu_seconds,
    serve,
    table,
    versions,
    write_results,
)
from ingest_stream import NOW, WRITE_KEY, build_stream
from nextbest.bootstrap import open_stores
from nextbest.decide.model import Decision
from nextbest.sim.send import Message, SendReport, ndjson_lines, read_ndjson, run_send
from nextbest.store.catalog_files import load_catalog


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="5000,10000,20000,40000,80000", help="offered events/s")
    ap.add_argument("--modes", default="lines,dicts", help="input paths: lines, dicts")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each sink run")
    ap.add_argument("--batch", type=int, default=100, help="messages per /v1/batch body")
    ap.add_argument("--concurrency", type=int, default=8, help="connections in the pool")
    ap.add_argument("--server", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--server-rate", type=float, default=5000.0, help="events/s, real server")
    ap.add_argument("--server-seconds", type=float, default=10.0)
    ap.add_argument("--customers", type=int, default=20_000, help="customers in the stream")
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--tmpdir", default=None, help="where the NDJSON and SQLite files go")
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--name", default=None, help="results name (default send / send_quick)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    # internal: the child processes
    ap.add_argument("--child", choices=("sink", "server"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
        args.server_seconds = min(args.server_seconds, 2.0)
        args.customers = min(args.customers, 8_000)
    args.name = args.name or ("send_quick" if args.quick else "send")
    return args


# ------------------------------------------------------------------ child processes
def sink_child(port: int) -> int:
    """Reads each body and answers like Segment does; parses and stores nothing."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    ok = b'{"success":true}'

    async def batch(request: Request) -> Response:
        await request.body()
        return Response(ok, media_type="application/json")

    app = Starlette(routes=[Route("/v1/batch", batch, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    return 0


def server_child(port: int, data: str) -> int:
    """The real server, as bench/ingest_http.py starts it (``_common.serve``)."""
    return serve(EXAMPLE_CATALOG, data, port, "FULL", WRITE_KEY, NOW)


class Child:
    """This script in a child process (``--child sink|server``) on a free loopback port."""

    def __init__(self, kind: str, data: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind]
        cmd += ["--port", str(self.port), "--data", str(data or "")]
        self.proc = subprocess.Popen(cmd)
        deadline = time.monotonic() + 60
        while True:  # up when a POST gets any answer (the sink has no other route)
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {self.proc.returncode}")
            try:
                httpx.post(f"{self.url}/v1/batch", content=b"{}", timeout=1.0, trust_env=False)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # graceful: the server flushes and snapshots
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------ the stream
def write_stream(path: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[Decision]]:
    """The ingest benchmark's stream (its feedback answers real decisions, returned too: the
    server must find them in its decision log), in time order, one message per line."""
    catalog = load_catalog(EXAMPLE_CATALOG)
    spec = argparse.Namespace(
        seed=args.seed,
        customers=args.customers,
        anon_visitors=args.customers // 4,
        batch=100,
        events_min=3,
        events_max=16,
    )
    bodies, _times, decisions, _info = build_stream(catalog, spec)
    size = n = 0
    with path.open("wb") as f:
        for body in bodies:
            for m in orjson.loads(body)["batch"]:
                line = orjson.dumps(m) + b"\n"
                size += len(line)
                n += 1
                f.write(line)
    info = {
        "messages": n,
        "bytes": size,
        "mean_message_bytes": round(size / n),
        "customers": args.customers,
        "anonymous_visitors": spec.anon_visitors,
        "feedback_decisions": len(decisions),
    }
    return info, decisions


def source(path: Path, mode: str, loop: bool) -> Iterator[Message]:
    """The file's messages; with ``loop``, read again from the top when it ends (the sink
    does not care about repeated messageIds; the real server gets one pass)."""
    if mode not in ("lines", "dicts"):
        raise SystemExit(f"unknown mode {mode!r}: lines or dicts")
    while True:
        yield from ndjson_lines(path) if mode == "lines" else read_ndjson(path)
        if not loop:
            return


# ------------------------------------------------------------------ runs
def one_run(
    kind: str,
    child: Child,
    path: Path,
    mode: str,
    rate: float,
    seconds: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    cpu_sink = child.cpu_seconds()
    cpu = time.process_time()
    wall = time.perf_counter()
    report: SendReport = run_send(
        child.url,
        WRITE_KEY,
        rate,
        seconds,
        source(path, mode, loop=kind == "sink"),
        batch_size=args.batch,
        max_messages=round(rate * seconds),
        concurrency=args.concurrency,
        progress=False,
    )
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    cpu_sink = child.cpu_seconds() - cpu_sink
    sent = max(1, report.messages_sent)
    return {
        "mode": mode,
        "offered_events_per_s": rate,
        "achieved_events_per_s": report.achieved_rate,
        "achieved_share": round(report.achieved_rate / rate, 4),
        "wall_seconds": round(wall, 3),
        "sender_cpu_seconds": round(cpu, 3),
        "sender_cpu_us_per_event": round(cpu / sent * 1e6, 2),
        "sender_cpu_utilisation": round(cpu / wall, 3),
        "sender_ceiling_events_per_s": round(sent / cpu) if cpu > 0 else None,
        "target_cpu_seconds": round(cpu_sink, 3),
        "target_cpu_utilisation": round(cpu_sink / wall, 3),
        "report": msgspec.to_builtins(report),
    }


def row(label: str, r: dict[str, Any]) -> list[Any]:
    rep = r["report"]
    nan = float("nan")
    return [
        label,
        r["mode"],
        float(r["offered_events_per_s"]),
        float(r["achieved_events_per_s"]),
        float(r["sender_cpu_us_per_event"]),
        float(r["sender_cpu_utilisation"]) * 100,
        float(r["target_cpu_utilisation"]) * 100,
        rep["latency_ms_p50"] if rep["latency_ms_p50"] is not None else nan,
        rep["latency_ms_p90"] if rep["latency_ms_p90"] is not None else nan,
        rep["latency_ms_p99"] if rep["latency_ms_p99"] is not None else nan,
        rep["latency_ms_max"] if rep["latency_ms_max"] is not None else nan,
        rep["start_lag_ms_max"] if rep["start_lag_ms_max"] is not None else nan,
        sum(rep["errors_by_status"].values()) + sum(rep["errors_by_kind"].values()),
        rep["messages_missed"],
    ]


HEADERS = [
    "target",
    "input",
    "offered/s",
    "achieved/s",
    "cpu µs/ev",
    "cpu %",
    "target cpu %",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "lag max ms",
    "failed",
    "missed",
]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child == "sink":
        return sink_child(args.port)
    if args.child == "server":
        return server_child(args.port, args.data)
    started = time.perf_counter()
    info = machine_info()
    log(f"send benchmark: {command_line()}")
    log(
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"load average {info['load_average_start']}"
    )
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nextbest-send-", dir=args.tmpdir) as tmp:
        folder = Path(tmp)
        path = folder / "events.ndjson"
        stream, decisions = write_stream(path, args)
        log(
            f"stream: {stream['messages']:,} messages, {stream['mean_message_bytes']} B each, "
            f"in {path}"
        )
        if stream["messages"] < args.server_rate * args.server_seconds:
            log("note: the stream is shorter than the real-server run may take")
        sink = Child("sink")
        runs = []
        try:
            for mode in modes:
                for rate in rates:
                    r = one_run("sink", sink, path, mode, rate, args.seconds, args)
                    runs.append(r)
                    log(
                        f"sink, {mode}, {rate:,.0f}/s offered: {r['achieved_events_per_s']:,.0f}/s"
                        f" achieved, {r['sender_cpu_us_per_event']} µs CPU/event, "
                        f"p99 {r['report']['latency_ms_p99']} ms"
                    )
        finally:
            sink.stop()
        results["sink"] = {
            "target": "uvicorn + starlette, reads the body, answers 200, child process",
            "runs": runs,
        }
        rows = [row("sink", r) for r in runs]
        if args.server:
            data = folder / "server.sqlite"
            stores = open_stores(str(data))  # the decisions the stream's feedback answers
            stores.decisions.append_decisions(decisions)
            stores.close()
            server = Child("server", data)
            try:
                r = one_run(
                    "server", server, path, "lines", args.server_rate, args.server_seconds, args
                )
            finally:
                server.stop()
            stores = open_stores(str(data))
            r["events_in_log_after_shutdown"] = stores.events.count()
            stores.close()
            results["server"] = {
                "target": "nextbest: create_app + build_engine, SQLite FULL, child process",
                "run": r,
            }
            rows.append(row("nextbest", r))
            log(
                f"nextbest server, {args.server_rate:,.0f}/s offered: "
                f"{r['achieved_events_per_s']:,.0f}/s achieved, "
                f"errors {r['report']['errors_by_status']} {r['report']['errors_by_kind']}, "
                f"{r['events_in_log_after_shutdown']:,} events in the log"
            )
    print()
    print(
        table(
            f"sim send, open loop, batches of {args.batch}, {args.concurrency} connections, "
            f"{args.seconds:g} s per sink run (latency from the due time)",
            HEADERS,
            rows,
        )
    )
    elapsed = time.perf_counter() - started
    info["load_average_end"] = load_average()
    payload = {
        "benchmark": "send",
        "date": now_iso(),
        "command": command_line(),
        "machine": info,
        "versions": versions("httpx", "httpcore", "uvloop", "orjson", "uvicorn", "starlette"),
        "args": {k: str(v) for k, v in vars(args).items() if k not in ("child", "port", "data")},
        "stream": stream,
        "pid": os.getpid(),
        **results,
        "elapsed_seconds": round(elapsed, 1),
    }
    out = write_results(args.name, payload, args.out)
    print(f"\nresults: {out}; total {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
