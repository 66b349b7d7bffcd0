"""Faults with real processes (issue #17, point 4): two API workers and a fold worker
(``nextbest serve --role api|fold``) on the local PostgreSQL, Redis and NATS JetStream, each
skipped with the reason when absent. kill -9 under load loses no acknowledged event and folds
none twice; a NATS server that goes away (a private one: the machine's own is never touched)
turns ingestion into 503 with Retry-After, never 500, and loses nothing acknowledged; a
PostgreSQL that crashes and comes back (a private one too) never stops the API accepting, and
the fold catches up, each event logged and folded once."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
import psycopg
import pytest

from nextbest.store.redis import RedisState
from tests.nats import delete_stream, stream_url
from tests.postgres import scratch_schema
from tests.redis_db import flushed
from tests.support import ROOT, T0, identify, page

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_PROCESSES", "redis://127.0.0.1:6379/11")
NATS_SERVER = "/usr/sbin/nats-server"
SERVER = ("dev-server-key", "")
PARTITIONS = 4
MORTGAGE = "https://bank.example/mortgages/rates"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    def __init__(self, role: str, env: dict[str, str], log: Path) -> None:
        self.role, self.env, self.log = role, env, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nextbest.cli", "serve", "--role", self.role],
                env={**self.env, "NEXTBEST_PORT": str(self.port)},
                stdout=out,
                stderr=out,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()  # never left running past a failed test
        raise AssertionError(f"{self.role} not ready: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield from flushed(REDIS)


@contextmanager
def deployment(
    bus: str, redis_url: str, tmp_path: Path, data: str | None = None
) -> Iterator[dict[str, str]]:
    """The roles' environment: a scratch schema on the shared PostgreSQL, or ``data``."""
    with nullcontext(data) if data is not None else scratch_schema() as data:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "NEXTBEST_CATALOG": str(ROOT / "examples" / "bank"),
            "NEXTBEST_DATA": data,
            "NEXTBEST_PROFILES": redis_url,
            "NEXTBEST_BUS": bus,
            "NEXTBEST_BUS_PARTITIONS": str(PARTITIONS),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        yield env


def send(url: str, messages: list[dict[str, object]]) -> int:
    try:
        r = httpx.post(f"{url}/v1/batch", json={"batch": messages}, auth=SERVER, timeout=10)
    except httpx.HTTPError:
        return 0  # no answer: not acknowledged (the client would retry)
    return r.status_code


def wait_folded(fold: Worker, data: str, wait: float = 30.0) -> None:
    """Until the fold worker is ready (a restarted one has loaded or rebuilt its state: its
    lag gauges read 0 before that) and its position and its event log's reach the stream's
    end."""
    deadline = time.monotonic() + wait
    names = ("nextbest_fold_lag_events ", "nextbest_event_log_lag_events ")
    while time.monotonic() < deadline:
        if httpx.get(f"{fold.url}/readyz", timeout=5).status_code != 200:
            time.sleep(0.2)
            continue
        text = httpx.get(f"{fold.url}/metrics", auth=("dev-admin-key", ""), timeout=5).text
        lags = [ln for ln in text.splitlines() if ln.startswith(names)]
        if len(lags) == 2 and all(float(ln.split()[1]) == 0 for ln in lags):
            return
        time.sleep(0.2)
    raise AssertionError("the fold worker did not catch up")


def logged(data: str) -> dict[str, int]:
    """messageId -> how many times it is in the event log."""
    with psycopg.connect(data, autocommit=True) as db:
        rows = db.execute("SELECT message_id, count(*) FROM events GROUP BY message_id").fetchall()
    return {str(m): int(n) for m, n in rows}


def per_user(data: str) -> dict[str, int]:
    with psycopg.connect(data, autocommit=True) as db:
        rows = db.execute("SELECT user_id, count(*) FROM events GROUP BY user_id").fetchall()
    return {str(u): int(n) for u, n in rows}


def test_kill_9_under_load_loses_no_acknowledged_event_and_folds_none_twice(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
):
    bus = stream_url(request.node.nodeid)
    with deployment(bus, redis_url, tmp_path) as env:
        fold = Worker("fold", env, tmp_path / "fold.log").start()
        apis = [Worker("api", env, tmp_path / f"api{i}.log").start() for i in (1, 2)]
        users = [f"u{n}" for n in range(20)]
        acked: list[str] = []
        try:

            def one(n: int) -> None:
                who = [users[(n * 7 + i) % len(users)] for i in range(5)]
                msgs = [
                    {**page(MORTGAGE, user=u, at=T0 - 100 + n), "messageId": f"k{n}-{i}"}
                    for i, u in enumerate(who)
                ]
                target = apis[n % 2]
                if send(target.url, msgs) == 200:
                    acked.extend(str(m["messageId"]) for m in msgs)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, range(0, 150)))
                fold.kill()  # the fold worker dies mid-stream; the API keeps accepting
                list(pool.map(one, range(150, 250)))
                fold.start()
                list(pool.map(one, range(250, 350)))
                apis[1].kill()  # an API worker dies; its clients see no answer
                list(pool.map(one, range(350, 450)))
            wait_folded(fold, env["NEXTBEST_DATA"])
            counts = logged(env["NEXTBEST_DATA"])
            assert len(acked) > 1_500
            assert all(counts.get(m) == 1 for m in acked)  # none lost, none twice
            for user, n in per_user(env["NEXTBEST_DATA"]).items():
                r = httpx.get(f"{apis[0].url}/v1/profiles/{user}", auth=SERVER, timeout=5)
                assert r.status_code == 200, (user, r.text)
                assert r.json()["profile"]["event_count"] == n, user  # folded once each
        finally:
            for w in [*apis, fold]:
                w.stop()
            delete_stream(bus, PARTITIONS)


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip(f"no {NATS_SERVER} to start a private NATS server")
    store = Path(tempfile.mkdtemp(prefix="nats-", dir=tmp_path))
    port = free_port()
    yield f"nats://127.0.0.1:{port}/FAULTS", store, port
    shutil.rmtree(store, ignore_errors=True)


def start_nats(port: int, store: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("private NATS server did not start")


def test_nats_away_is_503_with_retry_after_and_nothing_acknowledged_is_lost(
    redis_url: str, tmp_path: Path, private_nats: tuple[str, Path, int]
):
    bus, store, port = private_nats
    nats = start_nats(port, store)
    with deployment(bus, redis_url, tmp_path) as env:
        fold = Worker("fold", env, tmp_path / "fold.log").start()
        api = Worker("api", env, tmp_path / "api.log").start()
        acked: list[str] = []
        try:
            for n in range(20):
                msgs = [{**page(MORTGAGE, user="u1", at=T0 - 100 + n), "messageId": f"a{n}"}]
                assert send(api.url, msgs) == 200
                acked.append(f"a{n}")
            nats.send_signal(signal.SIGKILL)
            nats.wait()
            statuses = []
            for n in range(3):
                r = httpx.post(
                    f"{api.url}/v1/batch",
                    json={"batch": [{**page(MORTGAGE, user="u1", at=T0), "messageId": f"b{n}"}]},
                    auth=SERVER,
                    timeout=15,
                )
                statuses.append(r.status_code)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"
            assert httpx.get(f"{api.url}/readyz", timeout=10).status_code == 503
            nats = start_nats(port, store)
            deadline = time.monotonic() + 20
            ok = False
            while time.monotonic() < deadline and not ok:  # the client retries
                msgs = [{**page(MORTGAGE, user="u1", at=T0), "messageId": "b0"}]
                ok = send(api.url, msgs) == 200
                time.sleep(0.2)
            assert ok
            acked.append("b0")
            wait_folded(fold, env["NEXTBEST_DATA"])
            counts = logged(env["NEXTBEST_DATA"])
            assert all(counts.get(m) == 1 for m in acked)
        finally:
            api.stop()
            fold.stop()
            nats.send_signal(signal.SIGKILL)
            nats.wait()


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory, a free port,
    trust auth on loopback), run as the ``postgres`` user when the tests run as root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(root, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            PG_BIN / "initdb",
            ["-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"],
        )

    def _run(self, binary: Path, args: list[str]) -> None:
        subprocess.run(
            [*self._as, str(binary), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
        )
        self._run(
            PG_BIN / "pg_ctl",
            ["-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"],
        )

    def crash(self) -> None:
        """Stop at once, as a crash would (``immediate``: recovery on the next start)."""
        self._run(PG_BIN / "pg_ctl", ["-D", str(self.data), "-m", "immediate", "-w", "stop"])


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not os.access(PG_BIN / b, os.X_OK)]
    if missing:
        pytest.skip(f"no {', '.join(missing)} in {PG_BIN} to run a private PostgreSQL")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    root = Path(tempfile.mkdtemp(prefix="nextbest-pg-"))  # not under pytest's 0700 tmp
    try:
        made = PrivatePostgres(root)
        yield made
        with contextlib.suppress(subprocess.CalledProcessError):
            made.crash()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def metric(url: str, name: str) -> float:
    """A metric's value on a worker's /metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics", auth=("dev-admin-key", ""), timeout=5).text
    lines = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(lines[0].split()[1]) if lines else 0.0


def profiles_match(api: Worker, data: str, wait: float = 0.0) -> bool:
    """Every customer's profile on ``api`` holds as many events as the event log (within
    ``wait`` seconds)."""
    expected = per_user(data)
    deadline = time.monotonic() + wait
    while True:
        seen = {
            user: httpx.get(f"{api.url}/v1/profiles/{user}", auth=SERVER, timeout=5)
            for user in expected
        }
        counts = {
            u: r.json()["profile"]["event_count"] if r.status_code == 200 else None
            for u, r in seen.items()
        }
        if counts == expected:
            return True
        if time.monotonic() >= deadline:
            raise AssertionError(f"profiles {counts} != the log's {expected}")
        time.sleep(0.1)


def test_postgres_crashed_and_back_then_redis_flushed_loses_and_doubles_nothing(
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    private_postgres: PrivatePostgres,
):
    bus = stream_url(request.node.nodeid)
    pg = private_postgres
    pg.start()
    with deployment(bus, redis_url, tmp_path, data=pg.url) as env:
        fold = Worker("fold", env, tmp_path / "fold.log").start()
        apis = [Worker("api", env, tmp_path / f"api{i}.log").start() for i in (1, 2)]
        acked: list[str] = []

        def burst(tag: str, n: int) -> None:
            for i in range(n):
                msgs = [
                    {**page(MORTGAGE, user=f"u{(i + k) % 7}", at=T0 - 100 + i), "messageId": m}
                    for k, m in enumerate([f"{tag}{i}-{k}" for k in range(5)])
                ]
                assert send(apis[i % 2].url, msgs) == 200  # answered after the bus, never PG
                acked.extend(str(m["messageId"]) for m in msgs)

        try:
            burst("before", 10)
            wait_folded(fold, pg.url)
            pg.crash()
            burst("during", 40)
            ask = {"userId": "u1", "placement": "home_feed"}
            r = httpx.post(f"{apis[0].url}/v1/decide", json=ask, auth=SERVER, timeout=10)
            assert r.status_code == 200  # decided on what was folded; the decision buffered
            assert httpx.get(f"{fold.url}/readyz", timeout=10).status_code == 503
            assert metric(fold.url, "nextbest_fold_lag_events") > 0
            pg.start()
            burst("after", 10)
            wait_folded(fold, pg.url)
            counts = logged(pg.url)
            assert len(acked) == 300
            assert all(counts.get(m) == 1 for m in acked)  # none lost, none twice
            assert profiles_match(apis[1], pg.url)  # folded once each
            # the decision taken during the outage waited for its write, bounded, and says so:
            # caught up (the fold reached Redis first, the log behind it) or timed out (the
            # fold held back by the unlogged backlog), as the load makes it
            waited = sum(
                metric(apis[0].url, f'nextbest_read_your_writes_waits_total{{outcome="{o}"}}')
                for o in ("caught_up", "timed_out")
            )
            assert waited >= 1
            assert metric(apis[0].url, "nextbest_model_age_seconds") >= 0
            # Redis loses everything: the running fold worker saves its whole state again
            RedisState(redis_url).client.flushdb()
            assert profiles_match(apis[0], pg.url, wait=10.0)
            # ... and with the fold worker down: rebuilt from the PostgreSQL event log
            fold.kill()
            RedisState(redis_url).client.flushdb()
            fold.start()
            wait_folded(fold, pg.url)
            assert profiles_match(apis[1], pg.url, wait=30.0)
        finally:
            for w in [*apis, fold]:
                w.stop()
            delete_stream(bus, PARTITIONS)


def test_kill_9_between_the_profile_save_and_the_log_write_logs_each_event_once(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
):
    """The fold worker shows events (Redis) before it logs them (PostgreSQL): with its log
    writes held up (the test holds the event log's append lock), events still become visible,
    a stitch among them included; killed then, the restarted worker logs each of them once,
    with the seqs they were folded with, and folds none again."""
    bus = stream_url(request.node.nodeid)
    with deployment(bus, redis_url, tmp_path) as env:
        data = env["NEXTBEST_DATA"]
        fold = Worker("fold", env, tmp_path / "fold.log").start()
        api = Worker("api", env, tmp_path / "api.log").start()
        acked: list[str] = []

        def send_one(message: dict[str, object]) -> None:
            assert send(api.url, [message]) == 200
            acked.append(str(message["messageId"]))

        def count(user: str) -> int:
            r = httpx.get(f"{api.url}/v1/profiles/{user}", auth=SERVER, timeout=5)
            return int(r.json()["profile"]["event_count"]) if r.status_code == 200 else 0

        try:
            for n in range(5):
                send_one({**page(MORTGAGE, user="early", at=T0 - 100 + n), "messageId": f"e{n}"})
            wait_folded(fold, data)
            with psycopg.connect(data) as holder:  # a transaction holding the append lock
                holder.execute("SELECT pg_advisory_xact_lock('message_ids'::regclass::oid::bigint)")
                for n in range(3):
                    send_one({**page(MORTGAGE, anon="dev-h", at=T0 - 50 + n), "messageId": f"d{n}"})
                send_one(
                    {
                        **identify({"tier": "gold"}, user="held", anon="dev-h", at=T0 - 40),
                        "messageId": "login",
                    }
                )
                for n in range(6):
                    send_one({**page(MORTGAGE, user="held", at=T0 - 30 + n), "messageId": f"h{n}"})
                deadline = time.monotonic() + 20
                while count("held") < 10 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert count("held") == 10  # visible: the device's pages, login, 6 pages
                assert not set(logged(data)) & {"login", "h0", "d0"}  # not logged yet
                fold.kill()
            fold.start()
            wait_folded(fold, data)
            counts = logged(data)
            assert sorted(counts) == sorted(acked)
            assert all(counts[m] == 1 for m in acked)  # none lost, none twice
            assert count("held") == 10
            assert count("early") == 5
            with psycopg.connect(data, autocommit=True) as db:
                seqs = [r[0] for r in db.execute("SELECT seq FROM events ORDER BY seq")]
            assert seqs == list(range(1, len(acked) + 1))  # the seqs they were folded with
        finally:
            for w in [api, fold]:
                w.stop()
            delete_stream(bus, PARTITIONS)
