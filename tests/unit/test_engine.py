"""The engine: stitching, replay == live, restart from snapshot, decision log."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.engine import Engine
from nextbest.store import StateRow, memory_stores, sqlite_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.store.memory import MemoryStateStore
from tests.support import (
    DAY,
    EXAMPLE_CATALOG,
    T0,
    batch,
    counter_ids,
    feedback,
    identify,
    message,
    page,
    track,
    treated_everywhere,
)

URLS = ["/mortgages/a", "/loans/car/b", "/pension", "/cards", "/savings/children", "/other"]
FEEDBACK = ["Promotion Viewed", "Promotion Viewed", "Promotion Clicked", "Promotion Dismissed"]


@dataclass(frozen=True)
class Answer:
    """Feedback to come: decide for ``user`` when its batch is sent, then answer the
    ``pick``-th item shown (nothing, if nothing was)."""

    user: str
    event: str
    pick: int
    at: float

    def messages(self, engine: Engine) -> list[dict[str, Any]]:
        """The feedback, after the view it answers (a click counts only after a view)."""
        d = engine.decide(DecisionRequest(placement="home_feed"), user_id=self.user)
        if not d.items:
            return []
        offer = d.items[self.pick % len(d.items)].offer_id
        answer = feedback(d, self.event, offer, at=self.at)
        if self.event == "Promotion Viewed":
            return [answer]
        return [feedback(d, "Promotion Viewed", offer, at=self.at), answer]


Traffic = list[list[dict[str, Any] | Answer]]


def random_traffic(seed: int, customers: int = 40, n: int = 600) -> Traffic:
    """Anonymous browsing, logins that stitch, aliases, feedback, out-of-order times."""
    rng = random.Random(seed)
    msgs: list[dict[str, Any] | Answer] = []
    for _ in range(n):
        c = rng.randrange(customers)
        at = T0 - rng.uniform(0, 60) * DAY
        r = rng.random()
        if r < 0.6:
            who = {"anon": f"a{c}"} if rng.random() < 0.5 else {"user": f"u{c}"}
            msgs.append(page("https://bank.example" + rng.choice(URLS), at=at, **who))
        elif r < 0.7:
            msgs.append(identify({"age": 18 + c}, user=f"u{c}", anon=f"a{c}", at=at))
        elif r < 0.75:
            msgs.append(message("alias", previousId=f"crm{c}", user=f"u{c}", at=at))
        elif r < 0.9:
            msgs.append(Answer(f"u{c}", rng.choice(FEEDBACK), rng.randrange(4), at))
        else:
            msgs.append(track("Calculator Used", {"topic": "mortgage"}, user=f"crm{c}", at=at))
    return [msgs[i : i + 50] for i in range(0, len(msgs), 50)]


def play(engine: Engine, traffic: Traffic) -> None:
    """Send each batch, feedback answering decisions made for real just before."""
    for planned in traffic:
        sent = [x for m in planned for x in (m.messages(engine) if isinstance(m, Answer) else [m])]
        engine.ingest_batch(batch(*sent))


def test_identify_stitches_anonymous_history_into_the_user(engine: Engine):
    engine.ingest_batch(
        batch(
            *[
                page("https://bank.example/mortgages/x", anon="dev1", at=T0 - i * 60)
                for i in range(5)
            ]
        )
    )
    assert engine.profile("anon:dev1") is not None
    engine.ingest_batch(batch(identify({"age": 30}, user="u1", anon="dev1")))
    profile = engine.profile("u1")
    assert profile is not None
    assert profile.interests["mortgage"].total == 5
    assert profile.anonymous_ids == ["dev1"]
    assert engine.profile("anon:dev1") is None  # one profile per customer
    # later anonymous-only events of that device land on the user
    engine.ingest_batch(batch(page("https://bank.example/mortgages/y", anon="dev1")))
    assert engine.profile("u1").interests["mortgage"].total == 6
    d = engine.decide(DecisionRequest(placement="home_feed"), anonymous_id="dev1")
    assert d.customer_id == "u1"


def test_alias_merges_an_old_user_id(engine: Engine):
    engine.ingest_batch(batch(page("https://bank.example/cards", user="crm-9")))
    engine.ingest_batch(batch(message("alias", previousId="crm-9", user="u9")))
    assert engine.profile("u9").interests["cards"].total == 1
    assert engine.profile("crm-9").customer_id == "u9"


def test_replay_rebuilds_identical_profiles(make_engine, store_kind: str):
    engine = make_engine(store_kind)
    play(engine, random_traffic(seed=7))
    assert sum(len(p.offers) for p in engine.profiles()) > 10  # feedback was kept
    report = engine.replay()
    assert report.identical, report.differing
    assert report.events == engine.event_log.count()
    assert report.profiles == engine.profile_count > 10


def test_restart_from_snapshot_plus_tail_equals_live(make_engine, tmp_path: Path, catalog, clock):
    path = tmp_path / "restart.sqlite"
    first = Engine(catalog, sqlite_stores(path), clock, new_id=counter_ids())
    traffic = random_traffic(seed=11)
    play(first, traffic[:6])
    first.snapshot()
    play(first, traffic[6:])
    live = {p.customer_id: msgspec.msgpack.encode(p) for p in first.profiles()}
    # a crash: no close(), so the snapshot lags the log; acknowledged events must survive
    first.release()
    second = make_engine("sqlite", path=path)
    restored = {p.customer_id: msgspec.msgpack.encode(p) for p in second.profiles()}
    assert restored == live
    assert second.replay().identical


def test_changed_catalog_ignores_the_snapshot(make_engine, tmp_path: Path):
    path = tmp_path / "c.sqlite"
    first = make_engine("sqlite", path=path)
    first.ingest_batch(batch(page("https://bank.example/other/thing", user="u1")))
    first.close()
    cat_dir = tmp_path / "cat"
    cat_dir.mkdir()
    for f in EXAMPLE_CATALOG.glob("*.yaml"):
        text = f.read_text().replace(
            'url_patterns: ["/investing*"]', 'url_patterns: ["/investing*", "/other*"]'
        )
        (cat_dir / f.name).write_text(text)
    second = make_engine("sqlite", path=path, cat=load_catalog(cat_dir))
    assert "investing" in second.profile("u1").interests  # refolded with the new topics


def test_decisions_are_logged_and_flushed(make_engine, tmp_path: Path):
    path = tmp_path / "d.sqlite"
    engine = make_engine("sqlite", path=path)
    user = treated_everywhere()
    engine.ingest_batch(batch(identify({"age": 40}, user=user)))
    d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
    assert engine.decision(d.decision_id) == d  # readable while buffered
    engine.flush()
    assert engine.decision_log.decision(d.decision_id) == d
    engine.close()
    assert sqlite_stores(path).decisions.decision(d.decision_id) == d


def test_duplicates_are_acknowledged_not_refolded(engine: Engine):
    body = batch(
        page("https://bank.example/cards", user="u1"), page("https://bank.example/cards", user="u1")
    )
    assert engine.ingest_batch(body).accepted == 2
    result = engine.ingest_batch(body)
    assert (result.accepted, result.duplicates) == (0, 2)
    assert engine.profile("u1").interests["cards"].total == 2


def test_profile_view_shows_what_rules_see(engine: Engine, clock):
    engine.ingest_batch(
        batch(
            identify({"age": 66}, user="u1", at=T0 - DAY),
            page("https://bank.example/pension", user="u1", at=T0 - DAY),
        )
    )
    view = engine.profile_view("u1")
    assert view is not None
    assert view["view"]["profile"]["lifecycle"] == "pre_retirement"
    assert view["view"]["interest"]["pension"]["count_7d"] == 1
    assert set(view["view"]["interest"]) == set(engine.catalog.topics)
    assert engine.profile_view("nobody") is None


class CountingStore(MemoryStateStore):
    """The in-memory twin of the state port, recording how many rows each save writes."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[tuple[int, bool]] = []

    def save_state(self, seq, version, rows, replace=False):
        self.saves.append((len(rows), replace))
        super().save_state(seq, version, rows, replace)


def test_snapshots_write_only_what_changed(catalog, clock):
    store = CountingStore()
    stores = memory_stores()._replace(state=store)
    engine = Engine(catalog, stores, clock)
    engine.ingest_batch(
        batch(*[page("https://bank.example/cards", user=f"u{i}") for i in range(50)])
    )
    engine.snapshot()
    # first save: everything (profiles, the learner and the decision log position it counts
    # to, the same position for the experiment counters)
    assert store.saves[-1] == (53, True)
    engine.ingest_batch(
        batch(
            page("https://bank.example/cards", user="u7"),
            page("https://bank.example/x", anon="dev-1"),
        )
    )
    engine.ingest_batch(batch(identify({}, user="u8", anon="dev-1")))
    engine.snapshot()
    # u7, u8, the anonymous profile merged away (a delete), and the anon link
    assert store.saves[-1] == (4, False)
    engine.snapshot()
    assert store.saves[-1] == (0, False)
    restarted = Engine(catalog, stores, clock)
    assert {p.customer_id for p in restarted.profiles()} == {f"u{i}" for i in range(50)}
    assert restarted.resolve(None, "dev-1") == "u8"
    assert restarted.replay().identical
    engine.close()


def test_state_save_is_due_after_snapshot_every_events(catalog, clock):
    engine = Engine(catalog, memory_stores(), clock, snapshot_every=3)
    engine.ingest_batch(
        batch(*[page("https://bank.example/cards", user=f"u{i}") for i in range(2)])
    )
    assert not engine.snapshot_due
    engine.ingest_batch(batch(page("https://bank.example/cards", user="u9")))
    assert engine.snapshot_due  # the server's background task saves; ingest never waits
    engine.snapshot()
    assert not engine.snapshot_due
    engine.close()


@pytest.mark.parametrize(
    "bad",
    [
        StateRow("profile", "u1", b"\xc1 not msgpack"),
        StateRow("learner", "learner", b"\xc1 not msgpack"),
        StateRow("what a later version saves", "x", b"1"),
    ],
)
def test_a_snapshot_this_version_cannot_read_is_replayed(
    catalog: Catalog, clock: FixedClock, bad: StateRow
):
    stores = memory_stores()
    first = Engine(catalog, stores, clock, new_id=counter_ids())
    play(first, random_traffic(seed=12))
    first.snapshot()
    live = {p.customer_id: msgspec.msgpack.encode(p) for p in first.profiles()}
    saved = stores.state.load_state()
    assert saved is not None
    stores.state.save_state(saved.seq, saved.version, [bad])
    again = Engine(catalog, stores, clock, new_id=counter_ids("b"))
    assert {p.customer_id: msgspec.msgpack.encode(p) for p in again.profiles()} == live
    assert again.replay().identical
    assert again.model_state() == first.model_state()
