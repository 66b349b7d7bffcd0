"""Issue #18's experiment counters on the scaled paths (issue #17): the same seeded traffic
(identify with an age, pages, anonymous browsing then a login, KPI events before and after the
exposure, decisions with control exposures, ``Promotion Viewed`` of the campaign's offer) fed
through the embedded engine, through one fold worker and through two partitioned fold workers
with the model writer gives the same counters (arms, days, first-exposure covariates and
audiences, per customer, read through each customer's analytics view: some withdrew the
KPI's source or analytics itself) and the same campaign results served by an API worker. Real Redis
(db 7, a namespace per path), skipped with the reason when it is not reachable; the bus and
the logs in memory."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any, Protocol

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import Decision, DecisionRequest
from nextbest.engine import Engine
from nextbest.experiments.counters import CONTROL, ExperimentCounters
from nextbest.guard.senders import KeyKind, Sender
from nextbest.model_writer import ModelWriter
from nextbest.service import Service
from nextbest.store import memory_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.usecases import served_experiment
from tests.acceptance.scaled_side import ScaledSide, redis_or_skip
from tests.support import DAY, T0, batch, counter_ids, edited_catalog, feedback, identify, page
from tests.unit.experiment_bank import CAMPAIGN, MORTGAGE, applied

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_COUNTERS", "redis://127.0.0.1:6379/7")
NAMESPACES = ("nextbest-counters-one", "nextbest-counters-parts")
SERVER = Sender(KeyKind.SERVER)
HALVES = ([0, 1], [2, 3])
OFFER = "mortgage_advice"
SAVINGS = "https://bank.example/savings"
#: analytics choices: none, the KPI's source (behavioral) withdrawn, analytics withdrawn
ANALYTICS: list[dict[str, Any]] = [
    {},
    {},
    {"analytics": {"granted": True, "sources": {"behavioral": False}}},
    {"analytics": False},
]


class Route(Protocol):
    """One way events reach the counters: send, decide, settle, read."""

    clock: FixedClock

    def send(self, messages: list[dict[str, Any]]) -> None: ...
    def decide(self, user: str) -> Decision: ...
    def settle(self) -> None: ...
    def counters(self) -> bytes: ...
    def service(self) -> Service: ...


class Embedded:
    def __init__(self, catalog: Catalog) -> None:
        self.clock = FixedClock(T0)
        self.engine = Engine(catalog, memory_stores(), self.clock, new_id=counter_ids("e"))

    def send(self, messages: list[dict[str, Any]]) -> None:
        self.engine.ingest_batch(batch(*messages))

    def decide(self, user: str) -> Decision:
        return self.engine.decide(DecisionRequest(placement="home_feed"), user_id=user)

    def settle(self) -> None:
        pass

    def counters(self) -> bytes:
        return self.engine.experiment_state()

    def service(self) -> Service:
        return self.engine

    def close(self) -> None:
        self.engine.close()


class Scaled(ScaledSide):
    """The scaled deployment deciding for the scenario and reading its counters."""

    def __init__(self, catalog: Catalog, partitioned: bool) -> None:
        namespace = NAMESPACES[partitioned]
        super().__init__(catalog, REDIS, namespace, partitioned=partitioned, at=T0, models=True)

    def decide(self, user: str) -> Decision:
        decision = self.api.decide(DecisionRequest(placement="home_feed"), user_id=user)
        self.api.flush()  # in the decision log before anything that follows it is folded
        return decision

    def counters(self) -> bytes:
        if self.single is not None:
            return self.single.engine.experiment_state()
        assert self.writer is not None
        return self.writer.counters.state()

    def service(self) -> Service:
        return self.api


@pytest.fixture(scope="module")
def greedy_bank(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The example bank, its placements greedy (no exploration: the paths decide alike)."""
    folder = tmp_path_factory.mktemp("greedy_bank")
    return load_catalog(edited_catalog(folder, {}, targeted=True))


@pytest.fixture
def redis() -> Iterator[None]:
    redis_or_skip(REDIS, *NAMESPACES)
    yield
    redis_or_skip(REDIS, *NAMESPACES)


def customers(rng: random.Random) -> list[tuple[str, str | None]]:
    """(userId, the device they browsed on first or None), a mix of both arms."""
    from nextbest.experiments import assign

    out: list[tuple[str, str | None]] = []
    n = 0
    while len(out) < 24:
        uid = f"cust-{n}"
        n += 1
        control = assign(uid, CAMPAIGN, 0.1).value == CONTROL
        if control or len([1 for u, _ in out if assign(u, CAMPAIGN, 0.1).value != CONTROL]) < 16:
            out.append((uid, f"dev-{n}" if rng.random() < 0.4 else None))
    return out


def traffic(path: Route, seed: int) -> None:
    """The seeded scenario, through ``path``: history, decisions, views, KPI events."""
    rng = random.Random(seed)
    people = customers(rng)
    first: list[dict[str, Any]] = []
    for uid, device in people:
        age = rng.randint(22, 75)
        choice = rng.choice(ANALYTICS)  # measured through each one's analytics view
        first.append(
            identify({"age": age, "consent": choice}, user=uid, at=T0 - 40 * DAY + rng.random())
        )
        if rng.random() < 0.35:  # applied before: a covariate of 1
            first.append(applied(uid, T0 - rng.uniform(2, 25) * DAY))
        if rng.random() < 0.3:
            first.append(page(SAVINGS, user=uid, at=T0 - 5 * DAY + rng.random()))
        if device is not None:  # browsing anonymously, then a login stitching the device
            first += [page(MORTGAGE, anon=device, at=T0 - 7200 + k) for k in range(3)]
            first.append(identify({}, user=uid, anon=device, at=T0 - 7000))
        first += [page(MORTGAGE, user=uid, at=T0 - 3600 + 60 * k) for k in range(6)]
    rng.shuffle(first)  # customers interleaved; each one's events keep their order below
    first.sort(key=lambda m: (m["userId"] or "", m["timestamp"]))
    path.send(first)
    path.settle()
    views: list[dict[str, Any]] = []
    for uid, _ in people:
        decision = path.decide(uid)
        if OFFER in {i.offer_id for i in decision.items} and rng.random() < 0.8:
            views.append(feedback(decision, offer_id=OFFER, at=T0 + rng.uniform(1, 600)))
    path.clock.set(T0 + 30 * DAY)
    path.send(views)  # the KPI events follow before any fold (the decisions are logged)
    later = [
        applied(uid, T0 + rng.uniform(0.1, 20) * DAY)
        for uid, _ in people
        for _ in range(rng.choice([0, 0, 1, 2]))
    ]
    later.sort(key=lambda m: m["timestamp"])
    path.send(later)
    path.settle()


@pytest.mark.parametrize("seed", [3, 11])
def test_the_scaled_paths_count_experiments_as_the_embedded_engine(
    greedy_bank: Catalog, redis: None, seed: int
) -> None:
    embedded = Embedded(greedy_bank)
    traffic(embedded, seed)
    expected = embedded.counters()
    result = served_experiment(embedded.service(), CAMPAIGN)
    state = msgspec.msgpack.decode(expected)
    ((_, (exposed, _, audiences, withheld)),) = [c for c in state if c[0] == CAMPAIGN]
    arms = {e[1][0] for e in exposed}
    assert arms == {CONTROL, "treatment"}  # both arms met, with covariates and audiences
    assert any(e[1][3] for e in exposed)  # covariates
    assert any(e[1][4] for e in exposed)  # audiences
    assert any(not e[1][4] for e in exposed)  # analytics withdrawn: none
    assert audiences
    assert {arm for arm, _ in withheld} == {CONTROL, "treatment"}  # consent withheld some
    for partitioned in (False, True):
        scaled = Scaled(greedy_bank, partitioned)
        try:
            traffic(scaled, seed)
            assert scaled.counters() == expected, "partitioned" if partitioned else "one"
            served = served_experiment(scaled.service(), CAMPAIGN)
            assert msgspec.json.encode(served) == msgspec.json.encode(result)
        finally:
            scaled.close()
    embedded.close()


def test_counters_restored_from_the_writers_rows_equal_the_live_ones(
    greedy_bank: Catalog, redis: None
) -> None:
    scaled = Scaled(greedy_bank, partitioned=True)
    try:
        traffic(scaled, 5)
        assert scaled.writer is not None
        restored = ModelWriter(
            greedy_bank, scaled.bus, scaled.redis(), scaled.logs.decisions, wait=0.0
        )
        live = scaled.writer.counters
        assert isinstance(live, ExperimentCounters)
        # the counts rows (the customers have rows of their own, not read back here)
        assert {c: s.days for c, s in restored.counters.copy().items()} == {
            c: s.days for c, s in live.copy().items()
        }
    finally:
        scaled.close()
