"""Several fold workers in one process (issue #17, "fold workers own partitions"): two
``PartitionedFold`` workers each owning half of the bus's partitions and an API worker, over
the in-memory bus and logs, the live state on a real Redis (skipped with the reason when
absent). A customer browsing anonymously on one worker's partition and logging in on the
other's ends with one profile; events racing the stitch are forwarded; a worker "killed"
anywhere in its step (its object dropped, a new one started on its partitions) loses and
doubles nothing; the profiles and links in Redis always equal what the embedded engine
folds from the same event log."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest

from nextbest.api_worker import ApiWorker
from nextbest.bus import MemoryBus
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.engine import Engine, IngestRequest
from nextbest.errors import StateLost, StoreError, StoreUnavailable
from nextbest.guard.senders import KeyKind, Sender
from nextbest.model_writer import ModelWriter
from nextbest.partitioned_fold import PartitionedFold, consumer_name
from nextbest.partitioned_rebuild import rebuild_partitioned_state
from nextbest.profile.book import PROFILE_ROW
from nextbest.profile.identity import ANON_PREFIX, LinkKind
from nextbest.routing import home
from nextbest.store import memory_stores
from nextbest.store.memory import MemoryEventLog, MemoryStateStore
from nextbest.store.redis import RedisState
from tests.support import T0, batch, identify, page, track

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_PARTITIONS", "redis://127.0.0.1:6379/12")
NAMESPACE = "nextbest-parts"
MORTGAGE = "https://bank.example/mortgages/rates"
SAVINGS = "https://bank.example/savings"
SERVER = Sender(KeyKind.SERVER)
PARTITIONS = 4
HALVES = ([0, 1], [2, 3])


def homed(prefix: str, half: int, anonymous: bool = False) -> str:
    """The first id ``prefix<N>`` whose customer is homed on ``HALVES[half]``."""
    for n in itertools.count():
        key = f"{prefix}{n}"
        if home(ANON_PREFIX + key if anonymous else key, PARTITIONS) in HALVES[half]:
            return key
    raise AssertionError


class Process:
    """One process's own handle on a shared object (its methods can fail on their own)."""

    def __init__(self, shared: object) -> None:
        self._shared = shared

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shared, name)


class Cluster:
    """Two fold workers (each a half of the partitions) and an API worker."""

    def __init__(self, catalog: Catalog, cache_size: int = 100_000) -> None:
        self.catalog = catalog
        self.cache_size = cache_size
        #: the fold workers' wall clock (a parked stitch's pause): moved by ``tick``
        self.now = T0
        self.clock = FixedClock(T0)
        self.bus = MemoryBus(PARTITIONS, ack_wait=60.0)
        self.logs = memory_stores()
        self.reads = RedisState(REDIS, NAMESPACE, timeout=2.0)
        self.states: list[RedisState] = []
        self.folds = [self.start(0), self.start(1)]
        self.api = ApiWorker(catalog, self.logs, self.reads, self.reads, self.bus, self.clock)

    def start(self, half: int) -> PartitionedFold:
        """A fold worker of ``HALVES[half]``: a restart after a kill -9 when one ran."""
        state = RedisState(REDIS, NAMESPACE, timeout=2.0)
        self.states.append(state)
        log = self.logs.events
        assert isinstance(log, MemoryEventLog)
        bus, writer = Process(self.bus), Process(log)
        return PartitionedFold(
            self.catalog,
            bus,  # type: ignore[arg-type]
            state,
            log,
            writer,  # type: ignore[arg-type]
            HALVES[half],
            wait=0.0,
            cache_size=self.cache_size,
            wall=lambda: self.now,
            # a restart here stands for one after a kill -9 whose leases expired: the same
            # owner takes them back at once
            owner=f"half{half}",
        )

    def tick(self, seconds: float = 0.01) -> None:
        self.now += seconds

    def send(self, *messages: dict[str, Any]) -> None:
        parsed = self.api.read_batch(batch(*messages))
        self.api.accept(IngestRequest(SERVER, parsed, "$.batch"))

    def settle(self, rounds: int = 50) -> None:
        """Step both workers until every partition is folded, logged and acknowledged."""
        for _ in range(rounds):
            self.tick()
            for fold in self.folds:
                fold.step()
            if all(
                self.bus.pending(consumer_name(p)) == 0 for half in HALVES for p in half
            ) and all(f.settled for f in self.folds):
                return
            if any(any(f.parked.values()) for f in self.folds):
                self.tick(0.1)  # a stitch put aside goes back after a pause
        raise AssertionError("the fold workers did not settle")

    def saved(self) -> tuple[dict[str, bytes], dict[tuple[str, str], str]]:
        """Every profile (msgpack) and identity link saved in Redis."""
        loaded = self.reads.load_state()
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

    def replayed(self) -> tuple[dict[str, bytes], dict[tuple[str, str], str]]:
        """What the embedded engine folds from the same event log, in seq order."""
        stores = self.logs._replace(state=MemoryStateStore(), close=lambda: None)
        engine = Engine(self.catalog, stores, FixedClock(T0))
        enc = msgspec.msgpack.encode
        profiles = {p.customer_id: enc(p) for p in engine.profiles()}
        links = {(kind, a): u for kind, a, u in engine.links()}
        return profiles, links

    def assert_as_replayed(self) -> None:
        saved, replayed = self.saved(), self.replayed()
        assert sorted(saved[0]) == sorted(replayed[0])
        differing = [k for k in saved[0] if saved[0][k] != replayed[0][k]]
        assert not differing, differing
        assert saved[1] == replayed[1]

    def logged_ids(self) -> list[str]:
        return [s.event.message_id for s in self.logs.events.scan()]

    def close(self) -> None:
        self.api.close()
        for state in self.states:
            state.close()


@pytest.fixture
def cluster(catalog: Catalog) -> Iterator[Cluster]:
    try:
        RedisState(REDIS, NAMESPACE, timeout=2.0).drop()
    except StoreUnavailable as exc:
        url = urlsplit(REDIS)
        pytest.skip(f"Redis not reachable at {url.hostname}:{url.port or 6379}: {exc}")
    made = Cluster(catalog)
    yield made
    made.close()
    made.reads.drop()


def count(cluster: Cluster, user: str | None = None, anon: str | None = None) -> int:
    profile, _, _ = cluster.api.live.read(user, anon, False)
    return profile.event_count


def test_the_halves_split_the_partitions_and_customers_stay_home(cluster: Cluster):
    a, b = homed("left", 0), homed("right", 1)
    cluster.send(*[page(MORTGAGE, user=u, at=T0 - 50 + n) for n in range(3) for u in (a, b)])
    cluster.settle()
    assert count(cluster, a) == count(cluster, b) == 3
    assert cluster.folds[0].stats.events == cluster.folds[1].stats.events == 3
    assert cluster.folds[0].stats.forwarded == cluster.folds[1].stats.forwarded == 0
    seqs = [s.seq for s in cluster.logs.events.scan()]
    assert seqs == list(range(1, 7))  # seq = the bus's stream sequence (base 0)
    cluster.assert_as_replayed()


def test_browsing_anonymously_on_one_half_then_logging_in_on_the_other(cluster: Cluster):
    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 100 + n) for n in range(4)])
    cluster.send(page(SAVINGS, user=user, at=T0 - 90))
    cluster.settle()
    assert count(cluster, anon=device) == 4
    cluster.send(identify({"tier": "gold"}, user=user, anon=device, at=T0 - 80))
    cluster.settle()
    assert cluster.folds[0].stats.stitches == 1  # frozen where the device was homed
    assert count(cluster, user) == 6  # its own page, the device's four, the login
    assert count(cluster, anon=device) == 6  # the device now resolves to the customer
    profile, _, _ = cluster.api.live.read(None, device, True)  # its anonymous part: gone
    assert profile.event_count == 0
    cluster.send(page(MORTGAGE, anon=device, at=T0 - 70), page(SAVINGS, user=user, at=T0 - 60))
    cluster.settle()
    assert count(cluster, user) == 8
    assert cluster.folds[0].stats.forwarded == 0  # routed to the customer by the API
    cluster.assert_as_replayed()
    assert sorted(cluster.logged_ids()) == sorted(set(cluster.logged_ids()))


def test_events_racing_the_login_are_forwarded_behind_it(cluster: Cluster):
    """The device's events published after the login but before its link was visible land
    on the device's partition: its worker forwards them behind the stitch."""
    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 100 + n) for n in range(3)])
    cluster.send(identify({}, user=user, anon=device, at=T0 - 90))
    cluster.send(*[page(SAVINGS, anon=device, at=T0 - 80 + n) for n in range(2)])  # racing
    cluster.settle()
    assert cluster.folds[0].stats.forwarded == 2
    assert count(cluster, user) == 6
    cluster.assert_as_replayed()


def test_read_your_writes_across_the_stitch(cluster: Cluster):
    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 100 + n) for n in range(3)])
    cluster.settle()
    cluster.send(identify({}, user=user, anon=device, at=T0 - 90))
    _, position, needed = cluster.api.live.read(user, None, False)
    assert needed > position  # the login is not folded yet: a decision would wait
    cluster.folds[0].step()  # frozen and sent on: the customer's worker has not folded it
    _, position, needed = cluster.api.live.read(user, None, False)
    assert needed > position  # still waiting: the mark now names the customer's partition
    cluster.settle()
    profile, position, needed = cluster.api.live.read(user, None, False)
    assert needed <= position
    assert profile.event_count == 4
    decision = cluster.api.decide(DecisionRequest(placement="home_feed"), user_id=user)
    assert decision.items


def test_a_device_moved_to_another_customer_and_an_alias(cluster: Cluster):
    device = homed("dev", 0, anonymous=True)
    first, second = homed("cust", 1), homed("other", 0)
    old, new = homed("old", 0), homed("new", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 200 + n) for n in range(2)])
    cluster.send(identify({}, user=first, anon=device, at=T0 - 190))
    cluster.send(page(SAVINGS, anon=device, at=T0 - 180))
    cluster.settle()
    cluster.send(identify({}, user=second, anon=device, at=T0 - 170))  # a shared tablet
    cluster.send(page(MORTGAGE, anon=device, at=T0 - 160))
    cluster.send(*[page(SAVINGS, user=old, at=T0 - 150 + n) for n in range(3)])
    cluster.send(page(MORTGAGE, user=new, at=T0 - 140))
    cluster.settle()
    cluster.send(track("Account Merged", {}, user=new, previous_id=old, at=T0 - 130))
    cluster.send(message_alias(old, new, T0 - 120))
    cluster.send(page(MORTGAGE, user=old, at=T0 - 110))
    cluster.settle()
    cluster.assert_as_replayed()
    assert count(cluster, new) == count(cluster, old)


def message_alias(previous: str, user: str, at: float) -> dict[str, Any]:
    from tests.support import message

    return message("alias", previousId=previous, user=user, at=at)


# ---------------------------------------------------------------- kill -9 anywhere
class Crash(Exception):
    """The process dies here."""


def crash_at(target: object, name: str, when: Callable[[int], bool]) -> None:
    """Make ``target.name`` raise ``Crash`` on the calls ``when`` picks (1 = the first)."""
    real = getattr(target, name)
    calls = itertools.count(1)

    def dying(*args: Any, **kwargs: Any) -> Any:
        if when(next(calls)):
            raise Crash(name)
        return real(*args, **kwargs)

    setattr(target, name, dying)


CRASH_POINTS = [
    (0, "state", "save_rows", 1),  # the device's worker: folded, nothing saved
    (0, "state", "save_rows", 2),  # the first save done, the stitch's second not
    (0, "bus", "publish", 1),  # logged, the stitch not published
    (0, "log", "append_partitioned", 1),  # saved, nothing logged, the stitch held
    (1, "state", "save_rows", 1),  # the customer's worker: merged, nothing saved
    (1, "log", "append_partitioned", 1),  # merged and saved, not logged
]


def steps(cluster: Cluster, n: int) -> None:
    for _ in range(n):
        cluster.tick()
        for fold in cluster.folds:
            fold.step()


@pytest.mark.parametrize(("half", "where", "name", "call"), CRASH_POINTS)
def test_a_worker_killed_anywhere_in_a_stitch_loses_and_doubles_nothing(
    cluster: Cluster, half: int, where: str, name: str, call: int
):
    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 100 + n) for n in range(3)])
    cluster.send(page(MORTGAGE, user=user, at=T0 - 95))
    cluster.settle()
    dying = cluster.folds[half]
    target = {"state": dying.state, "bus": dying.bus, "log": dying.writer}[where]
    crash_at(target, name, lambda n: n == call)
    cluster.send(identify({"tier": "gold"}, user=user, anon=device, at=T0 - 90))
    cluster.send(page(SAVINGS, anon=device, at=T0 - 85))
    with pytest.raises(Crash):
        steps(cluster, 5)
    cluster.folds[half] = cluster.start(half)  # restarted on the same partitions
    cluster.send(page(MORTGAGE, anon=device, at=T0 - 80))
    cluster.settle()
    assert count(cluster, user) == 7
    ids = cluster.logged_ids()
    assert len(ids) == len(set(ids)) == 7
    cluster.assert_as_replayed()


# ---------------------------------------------------------------- many customers, at random
def random_traffic(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Pages from devices and customers, logins (first and again, shared devices) and
    aliases, in one stream."""
    devices = [f"d{i}" for i in range(12)]
    users = [f"u{i}" for i in range(8)]
    out: list[dict[str, Any]] = []
    for k in range(n):
        at = T0 - 10_000 + k
        roll = rng.random()
        url = rng.choice([MORTGAGE, SAVINGS])
        if roll < 0.4:
            out.append(page(url, anon=rng.choice(devices), at=at))
        elif roll < 0.7:
            out.append(page(url, user=rng.choice(users), at=at))
        elif roll < 0.8:
            out.append(page(url, user=rng.choice(users), anon=rng.choice(devices), at=at))
        elif roll < 0.95:
            out.append(identify({"n": k}, user=rng.choice(users), anon=rng.choice(devices), at=at))
        else:
            old, new = rng.sample(users, 2)
            out.append(message_alias(old, new, at))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_traffic_with_crashes_and_a_small_cache_folds_as_one_engine(
    catalog: Catalog, seed: int
):
    try:
        RedisState(REDIS, NAMESPACE, timeout=2.0).drop()
    except StoreUnavailable as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    rng = random.Random(seed)
    cluster = Cluster(catalog, cache_size=6)
    try:
        traffic = random_traffic(rng, 160)
        sent: list[str] = []
        while traffic:
            k = rng.randint(1, 6)
            chunk, traffic = traffic[:k], traffic[k:]
            cluster.send(*chunk)
            sent += [str(m["messageId"]) for m in chunk]
            for _ in range(rng.randint(0, 2)):
                rng.choice(cluster.folds).step()
            if rng.random() < 0.15:  # kill -9 a worker somewhere in its next step
                half = rng.randrange(2)
                dying = cluster.folds[half]
                where = rng.choice(["state", "bus", "log"])
                target = {"state": dying.state, "bus": dying.bus, "log": dying.writer}[where]
                name = {"state": "save_rows", "bus": "publish", "log": "append_partitioned"}
                crash_at(target, name[where], lambda n: n == 1)
                with contextlib.suppress(Crash):
                    steps(cluster, 3)
                cluster.folds[half] = cluster.start(half)
        cluster.settle(200)
        ids = cluster.logged_ids()
        assert sorted(ids) == sorted(set(sent))  # each once, none lost
        cluster.assert_as_replayed()
    finally:
        cluster.close()
        cluster.reads.drop()


# ---------------------------------------------------------------- the one model writer
def writer(cluster: Cluster) -> ModelWriter:
    state = RedisState(REDIS, NAMESPACE, timeout=2.0)
    cluster.states.append(state)
    return ModelWriter(
        cluster.catalog, cluster.bus, state, cluster.logs.decisions, wait=0.0, save_every=0.0
    )


def shown(cluster: Cluster, user: str, at: float) -> list[dict[str, Any]]:
    """A decision for ``user`` and its first item viewed and clicked."""
    decision = cluster.api.decide(DecisionRequest(placement="app_home"), user_id=user)
    cluster.api.flush()  # the decision log holds it before its feedback is folded
    item = decision.items[0]
    props = {
        "decision_id": decision.decision_id,
        "promotion_id": item.offer_id,
        "position": item.position,
    }
    return [
        track("Promotion Viewed", props, user=user, at=at),
        track("Promotion Clicked", props, user=user, at=at + 1),
    ]


def test_feedback_from_both_halves_teaches_the_one_model_writer_once(cluster: Cluster):
    users = [homed("left", 0), homed("right", 1)]
    for u in users:  # enough history for their feedback to be trusted
        cluster.send(*[page(MORTGAGE, user=u, at=T0 - 500 + n) for n in range(6)])
    cluster.settle()
    models = writer(cluster)
    for n, u in enumerate(users):
        cluster.send(*shown(cluster, u, T0 - 100 + 10 * n))
    dying = cluster.folds[0]  # killed after publishing its records, before its save
    crash_at(dying.state, "save_rows", lambda n: n == 1)
    with pytest.raises(Crash):
        steps(cluster, 2)
    cluster.bus.duplicate_window = 0.0  # so late that the bus takes them again
    cluster.folds[0] = cluster.start(0)  # republishes them: skipped by their origin
    cluster.settle()
    models.step()
    assert models.records == 4  # two views, two clicks: each once
    assert models.duplicates == 2
    assert models.learner.learned == 2
    restarted = writer(cluster)  # resumes after its saved feed position
    assert restarted.learner.to_state() == models.learner.to_state()
    assert restarted.step() == 0
    assert cluster.api.reload_model()  # the API workers read the published copy
    assert cluster.api.learner.learned == 2


def test_redis_losing_its_data_stops_the_fold_and_a_restart_refuses(cluster: Cluster):
    """Folding on after the saved state vanished would save a part of a state: the workers
    stop (every step fails) and a restart on the empty Redis refuses, naming the rebuild."""
    user = homed("cust", 1)
    cluster.send(page(MORTGAGE, user=user, at=T0 - 10))
    cluster.settle()
    cluster.reads.drop()  # (this test's namespace only)
    cluster.send(page(MORTGAGE, user=user, at=T0 - 9))
    for _ in range(3):
        with pytest.raises(StateLost):
            cluster.folds[1].step()
    assert cluster.reads.load_state() is None  # nothing partial written
    with pytest.raises(StoreError, match="rebuild"):
        cluster.start(1)


def test_the_state_rebuilt_from_the_log_after_redis_lost_it(cluster: Cluster):
    """Redis loses everything while the workers are stopped: ``rebuild-partitioned`` folds
    the event log once and writes what they resume from; they go on as before."""
    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    old, new = homed("old", 0), homed("new", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 100 + n) for n in range(3)])
    cluster.send(identify({}, user=user, anon=device, at=T0 - 90))
    cluster.send(page(SAVINGS, user=old, at=T0 - 80), page(SAVINGS, user=new, at=T0 - 79))
    cluster.send(message_alias(old, new, T0 - 70))
    cluster.settle()
    before = cluster.saved()
    cluster.reads.drop()
    state = RedisState(REDIS, NAMESPACE)
    report = rebuild_partitioned_state(
        cluster.catalog, cluster.logs, state, cluster.bus, MemoryStateStore()
    )
    assert (report.profiles, report.links) == (len(before[0]), len(before[1]))
    assert cluster.saved() == before
    cluster.folds = [cluster.start(0), cluster.start(1)]  # restarted on the rebuilt state
    other = homed("dev2-", 0, anonymous=True)
    cluster.send(page(MORTGAGE, anon=other, at=T0 - 60))
    cluster.send(identify({}, user=user, anon=other, at=T0 - 50))
    cluster.send(page(SAVINGS, anon=device, at=T0 - 40), page(MORTGAGE, user=old, at=T0 - 30))
    cluster.settle()
    cluster.assert_as_replayed()
    assert count(cluster, user) == 7  # 3 + 1 before, the other device (2), a page


def test_a_stitch_waits_aside_while_another_holds_its_customers(cluster: Cluster):
    """A login whose customers another stitch has claimed is put aside (saved, so a restart
    keeps it), goes back into its stream after a pause that grows, and folds once the claim
    ends; the events behind it fold meanwhile."""
    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 100 + n) for n in range(2)])
    cluster.settle()
    assert cluster.reads.claim([user], "another stitch")
    cluster.send(identify({}, user=user, anon=device, at=T0 - 90))
    cluster.send(page(SAVINGS, anon=device, at=T0 - 80))  # behind it: folds as the device's
    steps(cluster, 2)
    assert cluster.folds[0].stats.stitches_deferred >= 1
    assert len(cluster.folds[0].parked[home(ANON_PREFIX + device, PARTITIONS)]) == 1
    assert count(cluster, anon=device) == 3
    cluster.folds[0] = cluster.start(0)  # restarted: what was put aside is still there
    assert sum(len(p) for p in cluster.folds[0].parked.values()) == 1
    cluster.tick(0.05)
    steps(cluster, 3)  # still claimed: aside again, for longer
    assert cluster.folds[0].stats.stitches_deferred >= 1
    cluster.reads.save_rows(cluster.catalog.digest, [], release={"another stitch": [user]})
    cluster.tick(1.1)
    cluster.settle()
    assert count(cluster, user) == 4  # the two pages, the login, the page behind it
    cluster.assert_as_replayed()


def flaky(target: object, name: str, rng: random.Random, share: float) -> None:
    """``target.name`` fails (the backend away for a moment) on a ``share`` of its calls."""
    real = getattr(target, name)

    def sometimes(*args: Any, **kwargs: Any) -> Any:
        if rng.random() < share:
            raise StoreUnavailable(f"{name}: away for a moment")
        return real(*args, **kwargs)

    setattr(target, name, sometimes)


@pytest.mark.parametrize("seed", [4, 5])
def test_backends_failing_now_and_then_mid_batch_change_nothing(catalog: Catalog, seed: int):
    """Redis, the bus and the event log fail on a share of their calls, anywhere in a step
    (a profile's read in the middle of a batch, a stitch's claim, a save, a publish, a log
    read or write): the step stops, what it did before is kept, the rest is tried again;
    in the end every event is logged once and the profiles are the replay's."""
    try:
        RedisState(REDIS, NAMESPACE, timeout=2.0).drop()
    except StoreUnavailable as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    rng = random.Random(seed)
    cluster = Cluster(catalog, cache_size=6)
    chaos = random.Random(seed + 100)
    for fold in cluster.folds:
        for target, name in (
            (fold.state, "read_rows"),
            (fold.state, "claim"),
            (fold.state, "save_rows"),
            (fold.bus, "publish"),
            (fold.writer, "append_partitioned"),
        ):
            flaky(target, name, chaos, 0.05)
    try:
        traffic = random_traffic(rng, 120)
        sent: list[str] = []
        while traffic:
            k = rng.randint(1, 6)
            chunk, traffic = traffic[:k], traffic[k:]
            cluster.send(*chunk)
            sent += [str(m["messageId"]) for m in chunk]
            for _ in range(rng.randint(0, 3)):
                cluster.tick(rng.choice([0.0, 0.004, 0.3]))
                with contextlib.suppress(StoreUnavailable):
                    rng.choice(cluster.folds).step()
        for _ in range(600):  # settle, the errors going on
            cluster.tick(0.05)
            for fold in cluster.folds:
                with contextlib.suppress(StoreUnavailable):
                    fold.step()
            if all(cluster.bus.pending(consumer_name(p)) == 0 for h in HALVES for p in h) and all(
                f.settled for f in cluster.folds
            ):
                break
        ids = cluster.logged_ids()
        assert sorted(ids) == sorted(set(sent))
        cluster.assert_as_replayed()
    finally:
        cluster.close()
        cluster.reads.drop()


class LogAway:
    """The event log's reads failing while ``away`` (PostgreSQL gone for a moment)."""

    def __init__(self, log: object) -> None:
        self.log = log
        self.away = False
        self.failed = 0

    def events_of(self, *args: Any) -> Any:
        if self.away:
            self.failed += 1
            raise StoreUnavailable("the event log: away for a moment")
        return self.log.events_of(*args)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


def test_a_joining_fold_that_fails_part_way_keeps_its_stitch_claimed(cluster: Cluster):
    """The login's joining fold reads the device's events from the log: that read fails.
    Nothing of it is saved, and its customers stay claimed (another stitch over them would
    cross it) until it folds; then the claim ends."""
    device, user = homed("dev", 0, anonymous=True), homed("cust", 1)
    cluster.send(*[page(MORTGAGE, anon=device, at=T0 - 100 + n) for n in range(3)])
    cluster.settle()
    log = LogAway(cluster.folds[1].log)
    cluster.folds[1].log = log  # type: ignore[assignment]
    log.away = True
    cluster.send(identify({}, user=user, anon=device, at=T0 - 90))
    for _ in range(4):
        cluster.tick()
        for fold in cluster.folds:
            with contextlib.suppress(StoreUnavailable):
                fold.step()
    assert log.failed >= 1
    assert count(cluster, user) == 0
    assert not cluster.reads.claim([user], "another stitch")  # still the login's
    log.away = False
    cluster.settle()
    assert count(cluster, user) == 4
    assert cluster.reads.claim([user], "another stitch")  # ended with the fold
    cluster.reads.save_rows(cluster.catalog.digest, [], release={"another stitch": [user]})
    cluster.assert_as_replayed()
