"""kill -9 in the middle of a delivery: a real ``nextbest outbox send`` process delivers a
batch of messages from a real SQLite file to a real receiver on loopback, and is killed with
SIGKILL while the receiver holds a request it has acted on (the answer never reaches the
sender), twice; restarted each time. Every message ends delivered, the receiver acted on
each key once, and the duplicates it absorbed are bounded: at most the messages claimed
(``--batch``) by each killed sender, at least the one in flight at each kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nextbest.store import OutboxState, sqlite_stores
from tests.support import EXAMPLE_CATALOG
from tests.webhook_receiver import SECRET, Arrival, receiving

MESSAGES = 24
BATCH = 2
#: the arrivals (counted from 1, over every process) during which the sender is killed
KILL_AT = (5, 14)


def _sender(data: Path, url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env |= {
        "NEXTBEST_WEBHOOK_TELEPHONY_URL": url,
        "NEXTBEST_WEBHOOK_TELEPHONY_SECRET": SECRET,
        "NEXTBEST_WEBHOOK_TELEPHONY_TIMEOUT": "2",
    }
    return subprocess.Popen(
        [
            sys.executable, "-c", "from nextbest.cli import main; main()",
            "outbox", "send", "--catalog", str(EXAMPLE_CATALOG), "--data", str(data),
            "--batch", str(BATCH), "--lease", "5", "--poll", "0.05",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def test_nothing_lost_nothing_acted_twice_across_kill_9(tmp_path: Path):
    data = tmp_path / "outbox.sqlite"
    stores = sqlite_stores(data)
    keys = [f"callback-{i}-accepted" for i in range(MESSAGES)]
    for i, key in enumerate(keys):
        stores.outbox.enqueue("telephony", "telephony", key, b'{"callback": %d}' % i, 0.0)
    arrived = 0
    hit = threading.Event()  # the receiver holds the arrival to kill at
    killed = {n: threading.Event() for n in KILL_AT}  # ... until its sender is dead
    lock = threading.Lock()

    def on_arrival(arrival: Arrival) -> None:
        nonlocal arrived
        with lock:
            arrived += 1
            n = arrived
        if n in killed:
            hit.set()
            assert killed[n].wait(60), "the test did not kill the sender"

    with receiving(time.time) as receiver:
        receiver.on_arrival = on_arrival
        try:
            for n in KILL_AT:
                process = _sender(data, receiver.url)
                try:
                    assert hit.wait(60), "the sender delivered nothing"
                    hit.clear()
                finally:
                    process.send_signal(signal.SIGKILL)
                    assert process.wait(30) == -signal.SIGKILL
                    assert process.stderr is not None
                    process.stderr.close()
                killed[n].set()  # the receiver answers a sender that is gone
            # restarted: it takes up the killed senders' claims once their leases end
            process = _sender(data, receiver.url)
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    if stores.outbox.counts()[OutboxState.DELIVERED] == MESSAGES:
                        break
                    assert process.poll() is None, "the restarted sender exited"
                    time.sleep(0.1)
            finally:
                process.send_signal(signal.SIGTERM)
                code = process.wait(30)
                assert process.stderr is not None
                log = process.stderr.read().decode()
                process.stderr.close()
        finally:
            for event in killed.values():
                event.set()
    assert code == 0, log
    assert SECRET not in log
    done = stores.outbox.messages()
    stores.close()
    assert [m.state for m in done] == [OutboxState.DELIVERED] * MESSAGES
    assert sorted(receiver.acted) == sorted(keys)  # every key acted on, each once
    assert all(a.refused is None for a in receiver.arrivals)
    # the message in flight at each kill came again; at most a batch per kill did
    assert len(KILL_AT) <= receiver.duplicates() <= len(KILL_AT) * BATCH
    assert all(m.attempts >= 1 for m in done)


def test_serve_runs_the_sender_in_process_and_stops_it_cleanly(tmp_path: Path):
    """``nextbest serve`` with a webhook configured delivers what is enqueued in its store
    (here by another connection: later, by the callbacks), and SIGTERM stops it cleanly."""
    import socket

    import httpx

    data = tmp_path / "serve.sqlite"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with receiving(time.time) as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
        env |= {
            "NEXTBEST_WEBHOOK_TELEPHONY_URL": receiver.url,
            "NEXTBEST_WEBHOOK_TELEPHONY_SECRET": SECRET,
        }
        process = subprocess.Popen(
            [
                sys.executable, "-c", "from nextbest.cli import main; main()", "serve",
                "--catalog", str(EXAMPLE_CATALOG), "--data", str(data), "--port", str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not start"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            stores = sqlite_stores(data)
            try:
                stores.outbox.enqueue("telephony", "telephony", "cb-1", b'{"cb": 1}', time.time())
                while stores.outbox.counts()[OutboxState.DELIVERED] < 1:
                    assert time.monotonic() < deadline, "the server's sender delivered nothing"
                    time.sleep(0.05)
            finally:
                stores.close()
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(30)
            assert process.stderr is not None
            log = process.stderr.read().decode()
            process.stderr.close()
    assert code == -signal.SIGTERM, log  # serve exits as signalled, after its shutdown
    assert "Application shutdown complete." in log
    assert "outbox sender for webhooks telephony" in log
    assert SECRET not in log
    assert receiver.acted == {"cb-1": b'{"cb": 1}'}
