"""Several fold workers as real processes (issue #17): ``serve --role fold --partitions``
twice (each half of the bus's partitions) and two API workers on the local PostgreSQL, Redis
and NATS JetStream (each skipped with the reason when absent). A customer who browses
anonymously on one worker's partition and logs in on the other's ends with one profile; one
fold worker killed (-9) under load, logins among the events, loses no acknowledged event,
folds none twice and resumes its partitions when restarted; the profiles and links in Redis
then equal what the embedded engine folds from the PostgreSQL event log."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import pytest

from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.profile.book import PROFILE_ROW
from nextbest.profile.identity import ANON_PREFIX, LinkKind
from nextbest.routing import home
from nextbest.store.catalog_files import load_catalog
from nextbest.store.memory import MemoryStateStore
from nextbest.store.postgres import postgres_stores
from nextbest.store.redis import RedisState
from tests.acceptance.test_scaled_processes import (
    MORTGAGE,
    PARTITIONS,
    SERVER,
    Worker,
    deployment,
    logged,
    redis_url,  # noqa: F401
    send,
)
from tests.nats import delete_stream, stream_url
from tests.support import ROOT, T0, identify, page

HALVES = ("0-1", "2-3")
SAVINGS = "https://bank.example/savings"


def homed(prefix: str, half: int, anonymous: bool = False) -> str:
    for n in itertools.count():
        key = f"{prefix}{n}"
        if home(ANON_PREFIX + key if anonymous else key, PARTITIONS) in (
            (0, 1) if half == 0 else (2, 3)
        ):
            return key
    raise AssertionError


def fold_worker(env: dict[str, str], half: int, tmp_path: Path) -> Worker:
    return Worker(
        "fold", {**env, "NEXTBEST_FOLD_PARTITIONS": HALVES[half]}, tmp_path / f"fold{half}.log"
    )


def lags(worker: Worker) -> list[float]:
    text = httpx.get(f"{worker.url}/metrics", auth=("dev-admin-key", ""), timeout=5).text
    names = ("nextbest_fold_lag_events ", "nextbest_event_log_lag_events ")
    return [float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(names)]


def wait_all_folded(folds: list[Worker], wait: float = 60.0) -> None:
    """Until every fold worker is ready and has nothing left to fold or log, twice in a row
    (a stitch or a forward one sends the other shows in the other's lag)."""
    deadline = time.monotonic() + wait
    quiet = 0
    while time.monotonic() < deadline:
        ready = all(httpx.get(f"{f.url}/readyz", timeout=5).status_code == 200 for f in folds)
        if ready and all(lags(f) == [0.0, 0.0] for f in folds):
            quiet += 1
            if quiet >= 3:
                return
        else:
            quiet = 0
        time.sleep(0.3)
    raise AssertionError(f"the fold workers did not catch up: {[lags(f) for f in folds]}")


def saved(url: str) -> tuple[dict[str, bytes], dict[tuple[str, str], str]]:
    state = RedisState(url)
    try:
        loaded = state.load_state()
        assert loaded is not None
        profiles: dict[str, bytes] = {}
        links: dict[tuple[str, str], str] = {}
        for row in loaded.rows:
            if row.body is None:
                continue
            if row.kind == PROFILE_ROW:
                profiles[row.key] = row.body
            elif row.kind in (LinkKind.ANON.value, LinkKind.ALIAS.value):
                links[row.kind, row.key] = row.body.decode()
        return profiles, links
    finally:
        state.close()


def replayed(data: str) -> tuple[dict[str, bytes], dict[tuple[str, str], str]]:
    """The embedded engine's fold of the PostgreSQL event log, in seq order."""
    stores = postgres_stores(data)
    stores = stores._replace(state=MemoryStateStore())
    engine = Engine(load_catalog(ROOT / "examples" / "bank"), stores, FixedClock(T0))
    try:
        enc = msgspec.msgpack.encode
        profiles = {p.customer_id: enc(p) for p in engine.profiles()}
        identity = engine._book.identity
        links = {(LinkKind.ANON.value, a): u for a, u in identity.anon_to_user.items()}
        links.update({(LinkKind.ALIAS.value, a): u for a, u in identity.alias_to_user.items()})
        return profiles, links
    finally:
        engine.release()


def before_count(state: tuple[dict[str, bytes], object], user: str) -> int:
    from nextbest.profile.model import Profile

    return msgspec.msgpack.decode(state[0][user], type=Profile).event_count


def assert_as_replayed(redis: str, data: str) -> None:
    live, again = saved(redis), replayed(data)
    assert sorted(live[0]) == sorted(again[0])
    assert [k for k in live[0] if live[0][k] != again[0][k]] == []
    assert live[1] == again[1]


def test_two_fold_workers_an_anonymous_visit_then_a_login_across_them_and_a_kill_9(
    redis_url: str,  # noqa: F811
    tmp_path: Path,
    request: pytest.FixtureRequest,
):
    bus = stream_url(request.node.nodeid)
    with deployment(bus, redis_url, tmp_path) as env:
        data = env["NEXTBEST_DATA"]
        folds = [fold_worker(env, h, tmp_path).start() for h in (0, 1)]
        apis = [Worker("api", env, tmp_path / f"api{i}.log").start() for i in (1, 2)]
        acked: list[str] = []
        try:
            # one customer: a device homed on the first worker, the user on the second
            device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
            pages = [{**page(MORTGAGE, anon=device, at=T0 - 900 + n)} for n in range(4)]
            assert send(apis[0].url, pages) == 200
            login = identify({"tier": "gold"}, user=user, anon=device, at=T0 - 800)
            assert send(apis[1].url, [login]) == 200
            after = [page(SAVINGS, anon=device, at=T0 - 790), page(SAVINGS, user=user, at=T0 - 789)]
            assert send(apis[0].url, after) == 200
            acked += [str(m["messageId"]) for m in [*pages, login, *after]]
            wait_all_folded(folds)
            r = httpx.get(f"{apis[1].url}/v1/profiles/{user}", auth=SERVER, timeout=5)
            assert r.json()["profile"]["event_count"] == 7  # one profile: all seven
            ask = {"anonymousId": device, "placement": "home_feed"}
            r = httpx.post(f"{apis[0].url}/v1/decide", json=ask, auth=SERVER, timeout=10)
            assert r.status_code == 200
            assert_as_replayed(redis_url, data)

            # many customers, logins among them; the first fold worker dies mid-stream
            devices = [f"d{n}" for n in range(30)]
            users = [f"u{n}" for n in range(20)]

            def one(n: int) -> None:
                msgs: list[dict[str, object]] = []
                for i in range(4):
                    k = n * 4 + i
                    if k % 9 == 0:
                        msg = identify({"n": k}, user=users[k % 20], anon=devices[k % 30])
                    elif k % 2:
                        msg = page(MORTGAGE, anon=devices[k % 30], at=T0 - 700 + n)
                    else:
                        msg = page(SAVINGS, user=users[k % 20], at=T0 - 700 + n)
                    msgs.append({**msg, "messageId": f"k{n}-{i}"})
                if send(apis[n % 2].url, msgs) == 200:
                    acked.extend(str(m["messageId"]) for m in msgs)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(one, range(0, 80)))
                folds[0].kill()  # kill -9: the other worker goes on with its partitions
                list(pool.map(one, range(80, 160)))
                folds[0].start()  # resumes its partitions from what it saved and logged
                list(pool.map(one, range(160, 240)))
            wait_all_folded(folds)
            counts = logged(data)
            assert len(acked) > 800
            assert all(counts.get(m) == 1 for m in acked)  # none lost, none twice
            assert_as_replayed(redis_url, data)

            # Redis loses everything while the fold workers are stopped: rebuilt from the log
            before = saved(redis_url)
            for f in folds:
                f.stop()
            RedisState(redis_url).client.flushdb()
            rebuilt = subprocess.run(
                [sys.executable, "-m", "nextbest.cli", "rebuild-partitioned"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert rebuilt.returncode == 0, rebuilt.stderr
            assert saved(redis_url) == before
            for f in folds:
                f.start()
            more = [page(MORTGAGE, anon=device, at=T0 - 10), page(SAVINGS, user=user, at=T0 - 9)]
            assert send(apis[1].url, more) == 200
            wait_all_folded(folds)
            r = httpx.get(f"{apis[0].url}/v1/profiles/{user}", auth=SERVER, timeout=5)
            assert r.json()["profile"]["event_count"] == before_count(before, user) + 2
            assert_as_replayed(redis_url, data)
        finally:
            for w in [*apis, *folds]:
                w.stop()
            delete_stream(bus, PARTITIONS)
