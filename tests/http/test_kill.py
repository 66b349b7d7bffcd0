"""An acknowledged event survives kill -9: group commit answers a request only after the
commit that holds its events, on a real server process over a real SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson

from tests.support import EXAMPLE_CATALOG, T0, iso

WRITE = ("dev-write-key", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from nextbest.cli import main; main()",
            "serve",
            "--catalog",
            str(EXAMPLE_CATALOG),
            "--data",
            str(data),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("server did not start within 30 s")


def test_every_acknowledged_event_survives_kill_9(tmp_path: Path):
    data = tmp_path / "kill.sqlite"
    port = _free_port()
    server = _start(data, port)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=WRITE, timeout=5) as http:
            n = 0
            while not stop.is_set():
                n += 1
                message_id = f"kill-{worker}-{n}"
                body = {
                    "userId": f"u{worker}",
                    "event": "Clicked",
                    "messageId": message_id,
                    "timestamp": iso(T0),
                }
                try:
                    resp = http.post(
                        "/v1/track",
                        content=orjson.dumps(body),
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.TransportError:
                    return  # the server is gone
                if resp.status_code == 200:
                    with lock:
                        acknowledged.append(message_id)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(16)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # mid-stream: requests in flight, commits pending
        server.wait(10)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        if server.poll() is None:
            server.kill()
    assert len(acknowledged) >= 300, "too few requests acknowledged before the kill"
    with sqlite3.connect(data) as db:
        stored = {row[0] for row in db.execute("SELECT message_id FROM events")}
    lost = [m for m in acknowledged if m not in stored]
    assert lost == [], f"{len(lost)} acknowledged events lost, e.g. {lost[:5]}"


def test_the_server_restarts_on_the_killed_file_with_the_event_folded(tmp_path: Path):
    """After kill -9 the store opens again (the WAL recovered) and the acknowledged event is
    in the customer's profile (folded again from the log)."""
    data = tmp_path / "again.sqlite"
    port = _start_and_kill(data)
    server = _start(data, port)
    try:
        resp = httpx.get(
            f"http://127.0.0.1:{port}/v1/profiles/u", auth=("dev-server-key", ""), timeout=5
        )
        assert resp.status_code == 200, resp.text
        assert [r[2] for r in resp.json()["profile"]["recent"]] == ["Clicked"]
    finally:
        server.terminate()
        server.wait(10)


def _start_and_kill(data: Path) -> int:
    port = _free_port()
    server = _start(data, port)
    body = {"userId": "u", "event": "Clicked", "messageId": "once", "timestamp": iso(T0)}
    resp = httpx.post(
        f"http://127.0.0.1:{port}/v1/track", content=orjson.dumps(body), auth=WRITE, timeout=5
    )
    assert resp.status_code == 200, resp.text
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    return port
