"""Experiment counters kept at ingest (issue #18, item 4): exposures from views and control
decisions, KPI conversions within the attribution window, daily deltas, and live == replay
== restart."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from nextbest.clock import FixedClock
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.experiments import assign
from nextbest.experiments.counters import (
    CONTROL,
    DAY,
    EXPERIMENT_ROW,
    EXPOSURE_ROW,
    TREATMENT,
    ExperimentCounters,
    decode_counters,
    exposure_key,
)
from nextbest.store import memory_stores, sqlite_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.store.memory import MemoryStateStore
from nextbest.store.port import StateRow
from tests.support import (
    EXAMPLE_CATALOG,
    T0,
    batch,
    counter_ids,
    feedback,
    identify,
    page,
    user_in,
)
from tests.unit.experiment_bank import CAMPAIGN, CLOCK, MORTGAGE, applied, sqlite_engine


def researcher(engine: Engine, user: str, at: float) -> Decision:
    engine.ingest_batch(
        batch(
            identify({"age": 40}, user=user, at=at - 3600),
            *[page(MORTGAGE, user=user, at=at - 60 * k) for k in range(6)],
        )
    )
    return engine.decide(DecisionRequest(placement="home_feed"), user_id=user, now=None)


@pytest.fixture
def engine_at(tmp_path: Path) -> tuple[Engine, Path]:
    return sqlite_engine(tmp_path)


def test_views_and_control_decisions_expose_and_kpi_events_convert(
    engine_at: tuple[Engine, Path],
) -> None:
    engine, data = engine_at
    held = user_in("control", CAMPAIGN, 0.1, prefix="held")
    shown = user_in("treatment", CAMPAIGN, 0.1, prefix="shown")
    late = user_in("treatment", CAMPAIGN, 0.1, prefix="late")
    researcher(engine, held, T0)
    d = researcher(engine, shown, T0)
    assert "mortgage_advice" in [i.offer_id for i in d.items]
    d_late = researcher(engine, late, T0)
    CLOCK.set(T0 + 16 * DAY)
    engine.ingest_batch(
        batch(
            feedback(d, "Promotion Viewed", "mortgage_advice", at=T0 + 10),
            feedback(d_late, "Promotion Viewed", "mortgage_advice", at=T0 + 10),
            applied(shown, T0 + DAY),  # converts, day 1
            applied(shown, T0 + 2 * DAY),  # a second conversion counts once
            applied(held, T0 + 3 * DAY),  # a control customer converts too, day 3
            applied(late, T0 + 15 * DAY),  # after the 14-day window: not a conversion
            applied(late, T0 + DAY, product="car_loan"),  # where does not hold
        )
    )
    counters = engine.experiment_counters(customers=True)[CAMPAIGN]
    assert set(counters.customers) == {held, shown, late}
    assert counters.customers[held].arm == CONTROL
    assert counters.customers[shown].arm == TREATMENT
    control = counters.totals(CONTROL, 0)
    treatment = counters.totals(TREATMENT, 0)
    assert (control.n, control.sum) == (1, 1.0)
    assert (treatment.n, treatment.sum, treatment.sum_squares) == (2, 1.0, 1.0)
    # daily deltas: at the end of the exposure day nobody has converted yet
    day0 = int(T0 // DAY)
    assert counters.totals(TREATMENT, 0, day0).sum == 0.0
    assert counters.totals(TREATMENT, 0, day0 + 1).sum == 1.0
    assert counters.totals(CONTROL, 0, day0 + 2).sum == 0.0
    # a guardrail (Promotion Dismissed) is KPI 1, counted apart
    assert counters.totals(TREATMENT, 1).n == 2
    assert counters.totals(TREATMENT, 1).sum == 0.0

    # what results read: the daily counts, without the customers
    (light,) = (c for k, c in engine.experiment_counters().items() if k == CAMPAIGN)
    assert light.customers == {}
    assert light.days == counters.days

    report = engine.replay()
    assert report.experiments_identical
    state = engine.experiment_state()
    engine.close()
    restarted = Engine(load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), FixedClock(T0))
    assert restarted.experiment_state() == state
    restarted.release()


def test_a_restart_from_the_log_alone_recounts_the_same(engine_at: tuple[Engine, Path]) -> None:
    engine, data = engine_at
    held = user_in("control", CAMPAIGN, 0.1, prefix="held")
    researcher(engine, held, T0)
    CLOCK.set(T0 + DAY)
    engine.ingest_batch(batch(applied(held, T0 + DAY)))
    engine.flush()
    state = engine.experiment_state()
    engine.release()  # nothing saved: the restart folds the logs
    restarted = Engine(load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), FixedClock(T0))
    assert restarted.experiment_state() == state
    assert restarted.experiment_counters()[CAMPAIGN].totals(CONTROL, 0).sum == 1.0
    restarted.release()


def anonymous_in(arm: str) -> str:
    """A device whose anonymous experiment id (``anon:<device>``) is in ``arm``."""
    return next(
        f"dev-{n}"
        for n in itertools.count()
        if assign(f"anon:dev-{n}", CAMPAIGN, 0.1).value == arm
        and assign(f"u-{n}", CAMPAIGN, 0.1).value != arm
    )


@pytest.mark.parametrize("arm", [CONTROL, TREATMENT])
def test_a_visitor_first_seen_anonymous_keeps_the_arm_and_exposure_after_login(
    engine_at: tuple[Engine, Path], arm: str
) -> None:
    engine, _ = engine_at
    device = anonymous_in(arm)
    user = "u-" + device.removeprefix("dev-")  # hashed alone, in the other arm
    engine.ingest_batch(
        batch(
            *[page(MORTGAGE, anon=device, at=T0 - 600 - 60 * k) for k in range(6)],
            identify({"age": 40}, user=user, anon=device, at=T0 - 60),
        )
    )
    d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
    assert d.experiment_key == f"anon:{device}"
    msgs = [applied(user, T0 + DAY)]
    if arm == TREATMENT:
        assert "mortgage_advice" in [i.offer_id for i in d.items]
        msgs.insert(0, feedback(d, "Promotion Viewed", "mortgage_advice", at=T0 + 10))
    else:
        assert "mortgage_advice" in d.control
    CLOCK.set(T0 + DAY)
    engine.ingest_batch(batch(*msgs))
    counters = engine.experiment_counters(customers=True)[CAMPAIGN]
    assert list(counters.customers) == [f"anon:{device}"]
    assert counters.customers[f"anon:{device}"].arm == arm
    assert counters.totals(arm, 0).sum == 1.0
    assert engine.replay().experiments_identical
    engine.release()


def test_a_fold_worker_counts_the_control_exposures_other_processes_logged(
    engine_at: tuple[Engine, Path],
) -> None:
    """Scale-out: an API worker decides and logs the decision; the fold worker folds the
    events (``fold_accepted``) and counts the logged control exposure before them."""
    api, _ = engine_at
    held = user_in("control", CAMPAIGN, 0.1, prefix="held")
    d = researcher(api, held, T0)
    assert "mortgage_advice" in d.control
    api.flush()
    stores = memory_stores()._replace(decisions=api.decision_log)
    fold = Engine(load_catalog(EXAMPLE_CATALOG), stores, CLOCK, new_id=counter_ids())
    CLOCK.set(T0 + DAY)
    body = batch(
        identify({"age": 40}, user=held, at=T0 - 3600),
        *[page(MORTGAGE, user=held, at=T0 - 60 * k) for k in range(6)],
        applied(held, T0 + DAY),
    )
    fold.fold_accepted(fold.parse_batch(body))
    counters = fold.experiment_counters(customers=True)[CAMPAIGN]
    assert counters.customers[held].arm == CONTROL
    assert counters.totals(CONTROL, 0).sum == 1.0
    assert fold.replay().experiments_identical
    fold.release()
    api.release()


class RecordingState(MemoryStateStore):
    """The memory state store, remembering each save's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[list[StateRow]] = []

    def save_state(
        self, seq: int, version: str, rows: Sequence[StateRow], replace: bool = False
    ) -> None:
        self.saves.append(list(rows))
        super().save_state(seq, version, rows, replace)


def test_a_save_writes_the_exposures_that_changed_not_every_customer() -> None:
    """Item 4's row per campaign, rewritten whole on every save, is split: a campaign's
    counts row and one row per exposed customer, written when that customer changed."""
    state = RecordingState()
    stores = memory_stores()._replace(state=state)
    clock = FixedClock(T0)
    engine = Engine(load_catalog(EXAMPLE_CATALOG), stores, clock, new_id=counter_ids())
    held = [user_in("control", CAMPAIGN, 0.1, prefix=f"held{k}") for k in range(3)]
    shown = [user_in("treatment", CAMPAIGN, 0.1, prefix=f"shown{k}") for k in range(5)]
    views = []
    for user in held + shown:
        d = researcher(engine, user, T0)
        if user in shown:
            views.append(feedback(d, "Promotion Viewed", "mortgage_advice", at=T0 + 10))
    clock.set(T0 + DAY)
    engine.ingest_batch(batch(*views))
    engine.snapshot()
    first = [r for r in state.saves[-1] if r.kind in (EXPERIMENT_ROW, EXPOSURE_ROW)]
    assert sorted(r.key for r in first if r.kind == EXPOSURE_ROW) == sorted(
        exposure_key(CAMPAIGN, u) for u in held + shown
    )
    # one conversion: that customer's row and the campaign's counts, nothing else
    engine.ingest_batch(batch(applied(shown[0], T0 + DAY)))
    engine.snapshot()
    rows = [r for r in state.saves[-1] if r.kind in (EXPERIMENT_ROW, EXPOSURE_ROW)]
    assert sorted((r.kind, r.key) for r in rows) == [
        (EXPERIMENT_ROW, CAMPAIGN),
        (EXPOSURE_ROW, exposure_key(CAMPAIGN, shown[0])),
    ]
    counts = next(r.body for r in rows if r.kind == EXPERIMENT_ROW)
    assert counts is not None
    assert decode_counters(counts).customers == {}  # the counts row holds no customer
    saved = engine.experiment_state()
    engine.close()
    restarted = Engine(load_catalog(EXAMPLE_CATALOG), stores, FixedClock(T0 + DAY))
    assert restarted.experiment_state() == saved
    restarted.release()


def test_a_counts_row_saved_with_its_customers_is_read_and_split() -> None:
    """A row saved before exposures had rows of their own (customers and days in one) is read
    as it was, and the next save writes each of its customers a row."""
    catalog = load_catalog(EXAMPLE_CATALOG)
    old = {
        "customers": {"u1": ["control", T0, [1.0, 0.0]], "u2": ["treatment", T0, [0.0, 0.0]]},
        "days": {
            "control": [{int(T0 // DAY): [1, 1.0, 1.0, 0.0, 0.0, 0.0]}],
            "treatment": [{int(T0 // DAY): [1, 0.0, 0.0, 0.0, 0.0, 0.0]}],
        },
    }
    counters = ExperimentCounters(catalog)
    counters.restore([(CAMPAIGN, msgspec.msgpack.encode(old))])
    state = counters.campaigns[CAMPAIGN]
    assert state.customers["u1"].values == [1.0, 0.0]
    assert state.customers["u1"].pre == ()
    assert state.totals(CONTROL, 0).sum == 1.0
    changes = counters.take_changes()
    assert [c for c, _ in changes.campaigns] == [CAMPAIGN]
    assert sorted(k for k, _ in changes.exposures) == [
        exposure_key(CAMPAIGN, "u1"),
        exposure_key(CAMPAIGN, "u2"),
    ]
    # a later KPI event of an old exposure (no covariate saved): counted, covariate 0
    counters.observe(
        Event(
            message_id="m1",
            type=EventType.TRACK,
            timestamp=T0 + 60,
            received_at=T0 + 60,
            user_id="u2",
            name="Application Submitted",
            properties={"product": "mortgage"},
        ),
        "u2",
        None,
    )
    assert state.totals(TREATMENT, 0).sum == 1.0
    assert state.totals(TREATMENT, 0).cross_sum == 0.0
