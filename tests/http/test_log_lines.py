"""``nextbest serve`` writes its JSON lines from a background thread (``api.logs.LineWriter``):
stopped by SIGTERM or SIGINT, as a process manager stops it, it has written a line for every
request it answered and uvicorn's last line, and exits as signalled."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import EXAMPLE_CATALOG, T0, iso

WRITE = ("dev-write-key", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(data: Path, port: int, stderr: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    with stderr.open("wb") as err:
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
            stderr=err,
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_server_has_written_a_line_for_every_answered_request(
    tmp_path: Path, signum: int
):
    stderr = tmp_path / "stderr"
    port = _free_port()
    server = _serve(tmp_path / "s.sqlite", port, stderr)
    ids: list[str] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=WRITE, timeout=10) as http:
            for n in range(200):
                body = {
                    "userId": "u",
                    "event": "Clicked",
                    "messageId": f"m{n}",
                    "timestamp": iso(T0),
                }
                resp = http.post(
                    "/v1/track",
                    content=orjson.dumps(body),
                    headers={"Content-Type": "application/json", "X-Request-Id": f"r{n}"},
                )
                assert resp.status_code == 200, resp.text
                ids.append(f"r{n}")
        server.send_signal(signum)
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
    if signum == signal.SIGTERM:
        assert server.returncode == -signal.SIGTERM  # exits as signalled, as uvicorn does
    found = [
        orjson.loads(line)
        for line in stderr.read_text().splitlines()
        if line.startswith("{")  # the JSON lines (not the start-up banner)
    ]
    access = [line["request_id"] for line in found if line["logger"] == "nextbest.access"]
    assert [rid for rid in access if rid in ids] == ids
    assert found[-1]["message"].startswith("Finished server process"), found[-3:]
