"""Ingestion over HTTP (``bench/ingest.py``'s last phase): a real uvicorn server
(``create_app`` + ``build_engine`` on a temp SQLite file, synchronous=FULL by default) runs
as a child process on a free loopback port, restarting on a decision log that holds the
stream's decisions; client threads (httpx, keep-alive) post the stream's batches for a
bounded time and count, then the same clients, and a raw-socket keep-alive client, hit
``GET /healthz`` (the cheapest route of the same stack) as the baseline. Server and client CPU
time are read from /proc so the bottleneck is visible. The server's clock is fixed: it sees
every batch as received now, so feedback is validated, joined and stored, but its click
windows are long closed.

Run alone (``ingest_http.py PORT DATA SYNCHRONOUS``), this file is the server child.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from _common import (
    EXAMPLE_CATALOG,
    free_port,
    latency_summary,
    log,
    proc_cpu_seconds,
    serve,
    table,
)
from ingest_stream import NOW, WRITE_KEY
from nextbest.bootstrap import open_stores
from nextbest.decide.model import Decision

__all__ = ["add_args", "report", "run_http"]


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--http-clients", type=int, default=4, help="concurrent client threads")
    ap.add_argument("--http-seconds", type=float, default=30.0, help="time bound, batch phase")
    ap.add_argument("--http-max-batches", type=int, default=5_000, help="count bound, batch phase")
    ap.add_argument("--health-seconds", type=float, default=10.0, help="time bound, /healthz")
    ap.add_argument("--health-max", type=int, default=100_000, help="count bound, /healthz")
    ap.add_argument("--http-sync", default="FULL", help="server SQLite synchronous setting")


def drive(
    worker: Callable[[], None],
    clients: int,
    server_pid: int,
    lat: list[int],
    statuses: dict[int, int],
) -> dict[str, Any]:
    """Run ``clients`` threads of ``worker`` (which fill ``lat`` and ``statuses``) and report
    rate, latency, and the server's and this process's CPU over the same wall time."""
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    cpu_server0 = proc_cpu_seconds(server_pid)
    cpu_client0 = time.process_time()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu_server = proc_cpu_seconds(server_pid) - cpu_server0
    cpu_client = time.process_time() - cpu_client0
    n = len(lat)
    return {
        "requests": n,
        "seconds": round(wall, 3),
        "requests_per_s": round(n / wall, 1),
        "latency": latency_summary(lat),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_cpu_seconds": round(cpu_server, 2),
        "server_cpu_utilisation": round(cpu_server / wall, 2),
        "server_cpu_us_per_request": round(cpu_server / max(1, n) * 1e6, 1),
        "client_cpu_seconds": round(cpu_client, 2),
        "client_cpu_utilisation": round(cpu_client / wall, 2),
    }


def http_phase(
    url: str,
    clients: int,
    seconds: float,
    max_requests: int,
    request: Callable[[Any, int], int],
    server_pid: int,
) -> dict[str, Any]:
    """``clients`` threads call ``request(client, i)`` until time or count runs out."""
    import httpx

    lock = threading.Lock()
    counter = iter(range(max_requests))
    lat: list[int] = []
    statuses: dict[int, int] = {}
    pc = time.perf_counter_ns
    deadline = time.monotonic() + seconds
    errors: list[str] = []

    def worker() -> None:
        local_lat: list[int] = []
        local_status: dict[int, int] = {}
        with httpx.Client(base_url=url, auth=(WRITE_KEY, ""), timeout=30.0) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                t = pc()
                try:
                    status = request(client, i)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    status = -1
                local_lat.append(pc() - t)
                local_status[status] = local_status.get(status, 0) + 1
        with lock:
            lat.extend(local_lat)
            for k, v in local_status.items():
                statuses[k] = statuses.get(k, 0) + v

    return {**drive(worker, clients, server_pid, lat, statuses), "errors": errors[:5]}


class RawHealthClient:
    """A minimal keep-alive HTTP/1.1 client for ``GET /healthz``: a few microseconds of client
    CPU per request, so the baseline measures the server rather than httpx."""

    REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self) -> int:
        self.sock.sendall(self.REQUEST)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self.buf = rest[length:]
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


def raw_health_phase(
    url: str, clients: int, seconds: float, max_requests: int, server_pid: int
) -> dict[str, Any]:
    lock = threading.Lock()
    counter = iter(range(max_requests))
    lat: list[int] = []
    statuses: dict[int, int] = {}
    pc = time.perf_counter_ns
    deadline = time.monotonic() + seconds

    def worker() -> None:
        c = RawHealthClient(url)
        local: list[int] = []
        codes: dict[int, int] = {}
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                t = pc()
                code = c.get()
                local.append(pc() - t)
                codes[code] = codes.get(code, 0) + 1
        finally:
            c.close()
        with lock:
            lat.extend(local)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    return drive(worker, clients, server_pid, lat, statuses)


def run_http(
    bodies: list[bytes], decisions: list[Decision], folder: Path, args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    port = free_port()
    data = folder / "http-server.sqlite"
    stores = open_stores(str(data))  # the decision log the server restarts with
    stores.decisions.append_decisions(decisions)
    stores.close()
    cmd = [sys.executable, str(Path(__file__).resolve()), str(port), str(data), args.http_sync]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        headers = {"content-type": "application/json"}
        n_batches = min(len(bodies), args.http_max_batches)
        events_in = [len(orjson.loads(b)["batch"]) for b in bodies[:n_batches]]

        def post_batch(client: Any, i: int) -> int:
            return int(client.post("/v1/batch", content=bodies[i], headers=headers).status_code)

        def get_health(client: Any, i: int) -> int:
            return int(client.get("/healthz").status_code)

        # a short warm-up of both routes (not timed)
        http_phase(url, args.http_clients, 5.0, 200, get_health, proc.pid)
        log(f"HTTP: posting up to {n_batches:,} batches for up to {args.http_seconds:.0f} s")
        batch = http_phase(
            url, args.http_clients, args.http_seconds, n_batches, post_batch, proc.pid
        )
        sent_events = sum(events_in[: batch["requests"]])
        ok = batch["statuses"].get("200", 0)
        batch["events"] = sent_events
        batch["events_per_s"] = round(sent_events / batch["seconds"])
        batch["server_cpu_us_per_event"] = round(
            batch["server_cpu_seconds"] / max(1, sent_events) * 1e6, 2
        )
        batch["ok_requests"] = ok
        log(f"HTTP: GET /healthz for up to {args.health_seconds:.0f} s")
        health = http_phase(
            url, args.http_clients, args.health_seconds, args.health_max, get_health, proc.pid
        )
        log(f"HTTP: GET /healthz, raw-socket client, for up to {args.health_seconds:.0f} s")
        raw_health = raw_health_phase(
            url, args.http_clients, args.health_seconds, args.health_max, proc.pid
        )
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: the engine flushes and snapshots
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stores = open_stores(str(data))
    stored = stores.events.count()
    stores.close()
    return {
        "server": "uvicorn (asyncio loop, h11) + starlette, child process",
        "clients": args.http_clients,
        "client": "httpx.Client per thread, keep-alive, HTTP/1.1",
        "sqlite_synchronous": args.http_sync,
        "batch": batch,
        "healthz": health,
        "healthz_raw_client": raw_health,
        "events_in_log_after_shutdown": stored,
        "ratio_healthz_rps_to_batch_rps": round(
            health["requests_per_s"] / max(1e-9, batch["requests_per_s"]), 2
        ),
        "ratio_batch_rps_to_raw_healthz_rps": round(
            batch["requests_per_s"] / max(1e-9, raw_health["requests_per_s"]), 4
        ),
        "ratio_server_cpu_batch_to_healthz": round(
            batch["server_cpu_us_per_request"] / max(1e-9, health["server_cpu_us_per_request"]), 1
        ),
    }


HEADERS = ["route", "requests", "req/s", "events/s", "p50 ms", "p99 ms", "server CPU"]
HEADERS += ["server CPU us/req", "client CPU"]


def report(h: dict[str, Any]) -> None:
    b, hz, rz = h["batch"], h["healthz"], h["healthz_raw_client"]
    rows = []
    for label, r, events in (
        ("POST /v1/batch (100 events)", b, b["events_per_s"]),
        ("GET /healthz (baseline, httpx)", hz, None),
        ("GET /healthz (baseline, raw socket)", rz, None),
    ):
        lat = r["latency"]
        rows.append(
            [
                label,
                r["requests"],
                r["requests_per_s"],
                events,
                lat["p50_us"] / 1e3,
                lat["p99_us"] / 1e3,
                r["server_cpu_utilisation"],
                r["server_cpu_us_per_request"],
                r["client_cpu_utilisation"],
            ]
        )
    print()
    print(
        table(
            f"HTTP ({h['clients']} client threads, uvicorn child process, SQLite "
            f"synchronous={h['sqlite_synchronous']})",
            HEADERS,
            rows,
        )
    )
    print(
        f"statuses: batch {b['statuses']}, healthz {hz['statuses']}; events in the log after "
        f"shutdown: {h['events_in_log_after_shutdown']:,} (posted {b['events']:,}); a batch "
        f"costs the server {h['ratio_server_cpu_batch_to_healthz']}x the CPU of /healthz"
    )


if __name__ == "__main__":  # the server child: port, data, synchronous
    port, data, sync = sys.argv[1:4]
    sys.exit(serve(EXAMPLE_CATALOG, data, int(port), sync, WRITE_KEY, NOW))
