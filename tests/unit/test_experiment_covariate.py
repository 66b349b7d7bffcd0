"""The pre-exposure covariate (issue #18, item 4, CUPED): each campaign KPI's window folded
into the profile, read at the first exposure (a control customer's logged with the decision,
a treated customer's read as their view is folded), summed into the counters so that CUPED
runs on real data, rebuilt identically by a replay and a restart, and shown in the results
beside the unadjusted lift."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import Decision, DecisionRequest
from nextbest.engine import Engine
from nextbest.events import parse_batch
from nextbest.experiments.counters import CONTROL, DAY, TREATMENT, CampaignCounters, Sums
from nextbest.experiments.report import campaign_result
from nextbest.experiments.statistics import Analysis, ArmCounts, frequentist
from nextbest.profile import Profile, fold
from nextbest.profile.kpis import KEEP_DAYS, MAX_HITS, kpi_key, pre_exposure
from nextbest.store import memory_stores, sqlite_stores
from nextbest.store.catalog_files import load_catalog
from tests.support import (
    EXAMPLE_CATALOG,
    T0,
    batch,
    counter_ids,
    edited_catalog,
    feedback,
    identify,
    page,
    track,
    user_in,
)
from tests.unit.experiment_bank import CAMPAIGN, CLOCK, MORTGAGE, applied, sqlite_engine

SUBMITTED = kpi_key("Application Submitted", 'properties.product == "mortgage"', None)


def folded(catalog: Catalog, messages: list[dict[str, object]]) -> Profile:
    profile = Profile(customer_id="u1", user_id="u1")
    for event in parse_batch(batch(*messages), T0 + 365 * DAY):
        fold(profile, event, catalog.matcher, catalog.fold_config)
    return profile


# ---------------------------------------------------------------------- the profile's windows
def test_the_fold_keeps_each_kpi_s_events_that_meet_its_condition(catalog: Catalog) -> None:
    p = folded(
        catalog,
        [
            applied("u1", T0 - 3 * DAY),
            applied("u1", T0 - 2 * DAY, product="car_loan"),  # where does not hold
            applied("u1", T0 - 1 * DAY),
            page(MORTGAGE, user="u1", at=T0),
        ],
    )
    assert p.kpis[SUBMITTED] == [(T0 - 3 * DAY, 1.0), (T0 - DAY, 1.0)]
    # Application Started (always_on_products' KPI, where true) saw nothing
    assert set(p.kpis) == {SUBMITTED}


def test_a_window_is_bounded_and_the_same_whatever_order_events_fold_in(catalog: Catalog) -> None:
    rng = random.Random(7)
    times = [round(T0 - rng.uniform(0, 60) * DAY, 3) for _ in range(MAX_HITS + 80)]
    msgs = [applied("u1", t) for t in times]
    p = folded(catalog, msgs)
    hits = p.kpis[SUBMITTED]
    newest = max(times)
    kept = sorted(t for t in times if t >= newest - KEEP_DAYS * DAY)[-MAX_HITS:]
    assert [t for t, _ in hits] == kept
    assert len(hits) <= MAX_HITS
    rng.shuffle(msgs)
    assert folded(catalog, msgs).kpis == p.kpis


def test_pre_exposure_reads_the_30_days_before_the_first_exposure() -> None:
    hits = [(T0 - 31 * DAY, 5.0), (T0 - 30 * DAY, 2.0), (T0 - DAY, 3.0), (T0, 7.0)]
    assert pre_exposure(hits, T0, conversion=False) == 5.0  # 2 + 3: not 31 days back, not T0
    assert pre_exposure(hits, T0, conversion=True) == 1.0
    assert pre_exposure(hits, T0 - 40 * DAY, conversion=True) == 0.0
    assert pre_exposure(None, T0, conversion=False) == 0.0


# ---------------------------------------------------------------------- counted at exposure
@pytest.fixture
def engine_at(tmp_path: Path) -> tuple[Engine, Path]:
    return sqlite_engine(tmp_path)


def researcher(engine: Engine, user: str, at: float, *, before: int = 0) -> Decision:
    """Reads mortgage pages; applied ``before`` times in the month before ``at``."""
    msgs = [identify({"age": 40}, user=user, at=at - 20 * DAY)]
    msgs += [applied(user, at - (5 + k) * DAY) for k in range(before)]
    msgs += [page(MORTGAGE, user=user, at=at - 60 * k) for k in range(6)]
    engine.ingest_batch(batch(*msgs))
    return engine.decide(DecisionRequest(placement="home_feed"), user_id=user)


def test_a_control_decision_logs_the_covariate_and_a_view_reads_the_profile(
    engine_at: tuple[Engine, Path],
) -> None:
    engine, data = engine_at
    held = user_in("control", CAMPAIGN, 0.1, prefix="held")
    shown = user_in("treatment", CAMPAIGN, 0.1, prefix="shown")
    fresh = user_in("treatment", CAMPAIGN, 0.1, prefix="fresh")
    d_held = researcher(engine, held, T0, before=2)
    assert d_held.control == ["mortgage_advice"]
    # the primary KPI (converted in the 30 days before: 1) and the guardrail (no dismissal)
    assert d_held.covariates == {CAMPAIGN: [1.0, 0.0]}
    assert d_held.audiences[:2] == ["lifecycle:family", "engagement:medium"]
    d_shown = researcher(engine, shown, T0, before=1)
    assert d_shown.covariates == {}  # nobody held back
    d_fresh = researcher(engine, fresh, T0)
    CLOCK.set(T0 + 2 * DAY)
    engine.ingest_batch(
        batch(
            feedback(d_shown, "Promotion Viewed", "mortgage_advice", at=T0 + 10),
            feedback(d_fresh, "Promotion Viewed", "mortgage_advice", at=T0 + 10),
            applied(shown, T0 + DAY),
            applied(held, T0 + DAY),
        )
    )
    counters = engine.experiment_counters(customers=True)[CAMPAIGN]
    assert counters.customers[held].pre == (1.0, 0.0)
    assert counters.customers[shown].pre == (1.0, 0.0)
    assert counters.customers[fresh].pre == ()  # all 0: nothing kept
    control, treatment = counters.totals(CONTROL, 0), counters.totals(TREATMENT, 0)
    assert (control.n, control.pre_sum, control.pre_sum_squares, control.cross_sum) == (1, 1, 1, 1)
    assert (treatment.n, treatment.sum, treatment.pre_sum, treatment.cross_sum) == (2, 1, 1, 1)

    assert engine.replay().experiments_identical
    state = engine.experiment_state()
    engine.close()
    restarted = Engine(load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), FixedClock(T0))
    assert restarted.experiment_state() == state
    restarted.release()


@pytest.fixture
def valued(tmp_path: Path) -> Catalog:
    """The example bank whose mortgage campaign sums the amount applied for."""
    kpi = '      where: properties.product == "mortgage"\n      within_days: 14'
    return load_catalog(
        edited_catalog(tmp_path, {"campaigns.yaml": [(kpi, kpi + "\n      value: amount")]})
    )


def test_the_counters_equal_a_recount_from_every_customer_s_values_and_covariates(
    valued: Catalog,
) -> None:
    """Incremental == recomputation: the arms' sums are ``ArmCounts.from_values`` of the
    exposed customers' final values and frozen covariates, for a value KPI."""
    clock = FixedClock(T0)
    engine = Engine(valued, memory_stores(), clock, new_id=counter_ids())
    rng = random.Random(3)

    def application(user: str, at: float) -> dict[str, object]:
        amount = round(rng.uniform(50_000, 500_000), 2)
        return track(
            "Application Submitted", {"product": "mortgage", "amount": amount}, user=user, at=at
        )

    for n in range(150):
        user = f"p{n}"
        msgs = [identify({"age": 35}, user=user, at=T0 - 40 * DAY)]
        msgs += [application(user, T0 - rng.uniform(1, 45) * DAY) for _ in range(rng.randrange(3))]
        msgs += [page(MORTGAGE, user=user, at=T0 - 60 * k) for k in range(6)]
        engine.ingest_batch(batch(*msgs))
        d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
        later = []
        if "mortgage_advice" in [i.offer_id for i in d.items]:
            later.append(feedback(d, "Promotion Viewed", "mortgage_advice", at=T0 + 5))
        later += [
            application(user, T0 + rng.uniform(0.1, 20) * DAY) for _ in range(rng.randrange(3))
        ]
        clock.set(T0 + 21 * DAY)
        engine.ingest_batch(batch(*later))
        clock.set(T0)
    counters = engine.experiment_counters(customers=True)[CAMPAIGN]
    assert {e.arm for e in counters.customers.values()} == {CONTROL, TREATMENT}
    assert sum(1 for e in counters.customers.values() if e.pre) > 20
    assert sum(1 for e in counters.customers.values() if e.values[0]) > 20
    for arm in (CONTROL, TREATMENT):
        exposed = [e for e in counters.customers.values() if e.arm == arm]
        pre = [e.pre[0] if e.pre else 0.0 for e in exposed]
        want = ArmCounts.from_values([e.values[0] for e in exposed], pre)
        got = counters.totals(arm, 0)
        assert got.n == want.n
        for field in ("sum", "sum_squares", "pre_sum", "pre_sum_squares", "cross_sum"):
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-12), field
    assert engine.replay().experiments_identical
    engine.release()


def test_results_show_the_cuped_lift_and_how_much_its_interval_narrowed(catalog: Catalog) -> None:
    """Counts whose covariate predicts the KPI: the CUPED figures are ``statistics``' own
    with ``cuped=True`` on the same counts, and the interval is narrower."""
    rng = random.Random(11)
    day = int(T0 // DAY)
    days: dict[str, list[dict[int, Sums]]] = {}
    arms: dict[str, ArmCounts] = {}
    for arm, n, lift in ((CONTROL, 3_000, 1.0), (TREATMENT, 27_000, 1.1)):
        pre = [float(rng.random() < 0.3) for _ in range(n)]
        values = [float(rng.random() < (0.4 if p else 0.05) * lift) for p in pre]
        counts = ArmCounts.from_values(values, pre)
        arms[arm] = counts
        sums = Sums(**msgspec.structs.asdict(counts))
        days[arm] = [{day: sums}, {day: Sums(n=n)}]
    state = CampaignCounters(days=days)
    result = campaign_result(catalog.campaigns[CAMPAIGN], catalog.kpis[CAMPAIGN], state)
    arm = result.kpis[0].arms[1]
    assert arm.cuped is not None
    want = frequentist(arms[CONTROL], arms[TREATMENT], Analysis(sequential=True, cuped=True))
    assert arm.cuped.lift == pytest.approx(want.estimate, abs=1e-12)
    assert (arm.cuped.ci_lower, arm.cuped.ci_upper) == pytest.approx(
        (want.ci_lower, want.ci_upper), abs=1e-12
    )
    assert arm.cuped.theta == want.theta
    plain = arm.ci_upper - arm.ci_lower  # type: ignore[operator]
    assert arm.cuped.interval_ratio == pytest.approx((want.ci_upper - want.ci_lower) / plain)
    assert arm.cuped.interval_ratio < 0.9
    # no covariate (pre sums 0): theta 0, nothing to show beside the plain figures
    flat = CampaignCounters(
        days={
            a: [{day: Sums(n=c.n, sum=c.sum, sum_squares=c.sum_squares)}, {day: Sums(n=c.n)}]
            for a, c in arms.items()
        }
    )
    bare = campaign_result(catalog.campaigns[CAMPAIGN], catalog.kpis[CAMPAIGN], flat)
    assert bare.kpis[0].arms[1].cuped is None


def test_a_customer_exposed_twice_keeps_the_first_covariate(engine_at: tuple[Engine, Path]) -> None:
    engine, _ = engine_at
    held = user_in("control", CAMPAIGN, 0.1, prefix="again")
    first = researcher(engine, held, T0, before=0)
    assert first.covariates == {CAMPAIGN: [0.0, 0.0]}
    CLOCK.set(T0 + 3 * DAY)
    engine.ingest_batch(batch(applied(held, T0 + DAY)))
    second = engine.decide(DecisionRequest(placement="home_feed"), user_id=held)
    if second.control:  # the later decision would log a covariate of 1 ...
        assert second.covariates[CAMPAIGN][0] == 1.0
    counters = engine.experiment_counters(customers=True)[CAMPAIGN]
    assert counters.customers[held].pre == ()  # ... the first exposure's (0, 0) stands
    assert counters.totals(CONTROL, 0).pre_sum == 0.0
    engine.release()
