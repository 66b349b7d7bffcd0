"""The decision log joined to rewards, and offline evaluation of a candidate catalog."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from nextbest.catalog.compiled import Catalog
from nextbest.cli import app
from nextbest.clock import FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.engine import Engine
from nextbest.errors import ValidationError
from nextbest.learn import ope
from nextbest.learn.logs import LoggedItem, join_rewards
from nextbest.learn.offline import (
    NONE,
    candidate_marginals,
    evaluate_candidate,
    fit_reward_model,
)
from nextbest.store import memory_stores
from nextbest.store.catalog_files import load_catalog
from nextbest.store.export import read_logged_items, rewards_of, write_decisions
from tests.support import (
    APP_HOME_CONTEXTUAL,
    DAY,
    EXAMPLE_CATALOG,
    EXPLORE_BANK,
    T0,
    batch,
    counter_ids,
    edited_catalog,
    feedback,
    identify,
    track,
)


def without_learning(folder: Path, *more: tuple[str, str]) -> Catalog:
    """The example bank with learning off everywhere: deterministic decisions."""
    text = (EXAMPLE_CATALOG / "placements.yaml").read_text()
    edits = [(ln, "") for ln in sorted({ln for ln in text.splitlines() if "learning:" in ln})]
    folder.mkdir(exist_ok=True)
    return load_catalog(edited_catalog(folder, {"placements.yaml": [*edits, *more]}))


@pytest.fixture
def greedy_catalog(tmp_path: Path) -> Catalog:
    return without_learning(tmp_path / "greedy")


EPSILON = "explore: {type: epsilon_greedy, epsilon: 0.05}"


def exploring(folder: Path, *edits: tuple[str, str]) -> Catalog:
    """The example bank (learning everywhere, by Thompson sampling) with ``edits`` to its
    placements."""
    folder.mkdir(exist_ok=True)
    return load_catalog(edited_catalog(folder, {"placements.yaml": list(edits)}))


def logged_engine(catalog: Catalog, clicks_every: int = 3, placement: str = "home_feed") -> Engine:
    engine = Engine(catalog, memory_stores(), FixedClock(T0), new_id=counter_ids())
    for i in range(30):
        user = f"c{i}"
        engine.ingest_batch(batch(identify({"age": 25 + i}, user=user, at=T0 - DAY)))
        d = engine.decide(DecisionRequest(placement=placement), user_id=user)
        views = [feedback(d, offer_id=item.offer_id, at=T0 + 1) for item in d.items]
        clicks = [feedback(d, "Promotion Clicked", at=T0 + 5)] if i % clicks_every == 0 else []
        engine.ingest_batch(batch(*views, *clicks))
    return engine


def items_of(engine: Engine, catalog: Catalog):
    decisions, events = engine.decision_log.decisions(), engine.event_log.scan(0)
    return join_rewards(list(decisions), (s.event for s in events), catalog)


def written(engine: Engine, catalog: Catalog, path: Path) -> list[LoggedItem]:
    """The engine's decision log written to ``path`` with its rewards, as ``nextbest export
    decisions`` writes it; the logged rows."""
    items = items_of(engine, catalog)
    write_decisions(list(engine.decision_log.decisions()), path, rewards_of(items))
    return items


def test_rewards_join_clicks_and_conversions_within_the_attribution_window(
    greedy_catalog: Catalog,
) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    first = engine.decision("d000001")
    assert first is not None
    offer = greedy_catalog.offers[first.items[0].offer_id]
    assert offer.topic is not None
    kpi = offer.spec.kpi_event
    assert kpi is not None
    product = greedy_catalog.topics[offer.topic].products[0]
    props = {"product": product}
    assert isinstance(engine.clock, FixedClock)
    # c0 clicked its first item: a KPI for that product 2 days later converts it
    engine.clock.set(T0 + 2 * DAY)
    engine.ingest_batch(batch(track(kpi, props, user="c0", at=T0 + 2 * DAY)))
    # c3 clicked too, but converts only after the 7-day window
    engine.clock.set(T0 + 9 * DAY)
    engine.ingest_batch(batch(track(kpi, props, user="c3", at=T0 + 9 * DAY)))
    engine.flush()
    items = items_of(engine, greedy_catalog)
    by = {(i.customer_id, i.position): i for i in items}
    assert by[("c0", 1)].clicked
    assert by[("c0", 1)].converted
    assert by[("c3", 1)].clicked
    assert not by[("c3", 1)].converted
    assert not by[("c1", 1)].clicked
    assert sum(i.clicked for i in items) == 10
    assert all(i.propensity == 1.0 for i in items)


def test_the_logging_policy_evaluated_on_its_own_greedy_logs_is_the_logged_rate(
    greedy_catalog: Catalog,
) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    items = items_of(engine, greedy_catalog)
    report = evaluate_candidate(items, greedy_catalog, n_bootstrap=50)
    clicks = report.rewards[0]
    assert clicks.reward == "click"
    assert clicks.logged == pytest.approx(10 / len(items))
    for e in clicks.estimates:
        assert e.value == pytest.approx(clicks.logged)
        assert e.unsupported_mass == 0.0
    assert report.decisions == 30
    assert report.rounds == len(items)
    assert report.warnings == []  # greedy logs: every propensity exact


def test_marginals_follow_the_candidate_exploration(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    engine = logged_engine(greedy_catalog)
    d = engine.decision("d000001")
    assert d is not None
    greedy = candidate_marginals(greedy_catalog, "home_feed", d.candidates, d.features)
    assert [max(m, key=lambda k: m[k]) for m in greedy] == [i.offer_id for i in d.items]
    assert all(list(m.values()) == [1.0] for m in greedy)
    # Thompson sampling (the example bank's) has no closed form: the greedy order
    thompson = load_catalog(EXAMPLE_CATALOG)
    assert candidate_marginals(thompson, "home_feed", d.candidates, d.features) == greedy
    explorer = exploring(tmp_path / "epsilon", (EXPLORE_BANK, EPSILON))  # epsilon-greedy 0.05
    marg = candidate_marginals(explorer, "home_feed", d.candidates, d.features)
    for slot in marg:
        assert sum(slot.values()) == pytest.approx(1.0)
        assert max(slot.values()) == pytest.approx(0.95 + 0.05 / len(slot))
    assert candidate_marginals(explorer, "nowhere", d.candidates, d.features) == []


def test_a_slot_the_candidate_leaves_empty_is_worth_nothing(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    engine = logged_engine(greedy_catalog, clicks_every=1)
    engine.flush()
    items = items_of(engine, greedy_catalog)
    # a candidate with one slot in home_feed: slots 2 and 3 go to "(none)"
    narrow = without_learning(tmp_path / "narrow", ("    slots: 3\n", "    slots: 1\n"))
    report = evaluate_candidate(items, narrow, n_bootstrap=20)
    ips = report.rewards[0].estimates[0]
    firsts = [i for i in items if i.position == 1]
    assert ips.value == pytest.approx(sum(i.clicked for i in firsts) / len(items))
    assert ips.unsupported_mass > 0  # "(none)" was never logged: said, not hidden
    assert NONE == "(none)"


def test_parquet_round_trip_gives_the_same_rounds(greedy_catalog: Catalog, tmp_path: Path) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    path = tmp_path / "d.parquet"
    items = written(engine, greedy_catalog, path)
    again = read_logged_items(path)
    assert [
        (i.decision_id, i.offer_id, i.position, i.clicked, i.propensity, i.propensity_kind)
        for i in again
    ] == [
        (i.decision_id, i.offer_id, i.position, i.clicked, i.propensity, i.propensity_kind)
        for i in items
    ]
    assert again[0].features == items[0].features
    assert again[0].candidates == items[0].candidates


def test_estimated_propensities_are_kept_and_warned_about(tmp_path: Path) -> None:
    """app_home explores by softmax with no budget for exact marginals: its second slot
    logs sequential propensities. They survive the Parquet round trip, and the offline
    report says its estimators rest on them."""
    softmax = APP_HOME_CONTEXTUAL.replace(EXPLORE_BANK, "explore: {type: softmax, exact_budget: 0}")
    folder = edited_catalog(tmp_path, {"placements.yaml": [(APP_HOME_CONTEXTUAL, softmax)]})
    catalog = load_catalog(folder)
    engine = logged_engine(catalog, placement="app_home")
    engine.flush()
    path = tmp_path / "app.parquet"
    items = written(engine, catalog, path)
    kinds = {i.propensity_kind for i in items}
    assert kinds == {"exact", "sequential"}
    estimated = sum(i.propensity_kind != "exact" for i in items)
    again = read_logged_items(path)
    assert [i.propensity_kind for i in again] == [i.propensity_kind for i in items]
    report = evaluate_candidate(items, catalog, n_bootstrap=20)

    def about_estimates(warnings: list[str]) -> list[str]:  # the campaigns' budgets bind too
        return [w for w in warnings if "logged propensities are estimates" in w]

    (warning,) = about_estimates(report.warnings)
    assert warning.startswith(f"{estimated} of {report.rounds} logged propensities are estimates")
    exact = [msgspec.structs.replace(i, propensity_kind="exact") for i in items]
    assert about_estimates(evaluate_candidate(exact, catalog, n_bootstrap=20).warnings) == []
    # Thompson sampling's Monte Carlo estimates, in logs written before they became exact
    legacy = [msgspec.structs.replace(i, propensity_kind="monte_carlo") for i in items]
    (older,) = about_estimates(evaluate_candidate(legacy, catalog, n_bootstrap=20).warnings)
    assert older.startswith(f"{len(items)} of {len(items)} logged propensities are estimates")


def greedy_logs(catalog: Catalog) -> list[LoggedItem]:
    """30 greedy decisions on home_feed and 30 on app_home (decision ids kept apart)."""
    feed, apps = logged_engine(catalog), logged_engine(catalog, placement="app_home")
    feed.flush()
    apps.flush()
    app_items = [
        msgspec.structs.replace(i, decision_id=f"app-{i.decision_id}")
        for i in items_of(apps, catalog)
    ]
    return items_of(feed, catalog) + app_items


def replayed_as_greedy(placement: str) -> str:
    return (
        f"the candidate explores placement {placement} by Thompson sampling, which has no "
        "closed form to replay: its sampling is replayed as its greedy order, so the "
        f"estimates for {placement} are those of the candidate's ranking shown greedily, not "
        "of Thompson sampling's randomised choice"
    )


def test_a_thompson_candidate_placement_is_warned_to_be_replayed_as_greedy(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    """Issue #14: the report names each logged placement where the candidate explores by
    Thompson sampling (replayed as its greedy order), once, however many decisions it has;
    not a placement it explores otherwise (app_home), nor one the logs do not hold
    (home_hero)."""
    items = greedy_logs(greedy_catalog)
    app_epsilon = APP_HOME_CONTEXTUAL.replace(EXPLORE_BANK, EPSILON)
    mixed = exploring(tmp_path / "mixed", (APP_HOME_CONTEXTUAL, app_epsilon))
    report = evaluate_candidate(items, mixed, n_bootstrap=20, random_state=3)
    assert report.decisions == 60
    assert report.warnings == [replayed_as_greedy("home_feed")]
    everywhere = evaluate_candidate(items, load_catalog(EXAMPLE_CATALOG), n_bootstrap=20)
    assert everywhere.warnings == [replayed_as_greedy("app_home"), replayed_as_greedy("home_feed")]


@pytest.mark.parametrize("explore", [EPSILON, "explore: {type: greedy}"])
def test_an_epsilon_greedy_or_greedy_candidate_is_not_warned_about_thompson(
    greedy_catalog: Catalog, tmp_path: Path, explore: str
) -> None:
    candidate = exploring(tmp_path / "candidate", (EXPLORE_BANK, explore))
    report = evaluate_candidate(greedy_logs(greedy_catalog), candidate, n_bootstrap=20)
    assert report.warnings == []


def test_a_thompson_candidates_uniform_share_is_named_or_needs_no_warning(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    """A uniform share is replayed exactly: the warning says so; all of it (1) is every
    decision at random, replayed exactly, and needs no warning."""
    items = greedy_logs(greedy_catalog)
    mixed = "explore: {type: thompson, n_sim: 200, uniform: 0.05}"
    candidate = exploring(tmp_path / "mixed", (EXPLORE_BANK, mixed))
    warnings = evaluate_candidate(items, candidate, n_bootstrap=20).warnings
    assert [
        w.replace(" (its uniform share of 0.05 is replayed exactly)", "") for w in warnings
    ] == [
        replayed_as_greedy("app_home"),
        replayed_as_greedy("home_feed"),
    ]
    assert all("(its uniform share of 0.05 is replayed exactly)" in w for w in warnings)
    at_random = "explore: {type: thompson, n_sim: 200, uniform: 1.0}"
    random_candidate = exploring(tmp_path / "random", (EXPLORE_BANK, at_random))
    assert evaluate_candidate(items, random_candidate, n_bootstrap=20).warnings == []


def test_the_cli_prints_the_thompson_warning(greedy_catalog: Catalog, tmp_path: Path) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    path = tmp_path / "feed.parquet"
    written(engine, greedy_catalog, path)
    args = ["evaluate", "--policy", str(EXAMPLE_CATALOG), "--logs", str(path), "--bootstrap", "20"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert f"warning: {replayed_as_greedy('home_feed')}\n" in result.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = msgspec.json.decode(as_json.output)
    assert report["warnings"] == [replayed_as_greedy("home_feed")]


def test_nothing_to_evaluate_and_unreadable_files_are_clear_errors(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="no logged items"):
        evaluate_candidate([], greedy_catalog)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(ValidationError, match="cannot read"):
        read_logged_items(bad)


def test_an_unknown_propensity_kind_in_a_file_names_its_row(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    path = tmp_path / "odd.parquet"
    written(engine, greedy_catalog, path)
    table = pq.read_table(path)
    kinds = table.column("propensity_kind").to_pylist()
    row = next(i for i, k in enumerate(kinds) if k is not None)
    kinds[row] = "guessed"
    index = table.column_names.index("propensity_kind")
    pq.write_table(table.set_column(index, "propensity_kind", [kinds]), path)
    with pytest.raises(ValidationError, match="guessed") as exc:
        read_logged_items(path)
    assert exc.value.path == f"$.logs[{row}].propensity_kind"


@pytest.mark.parametrize("candidate", ["explorer", "narrow"])
def test_sparse_rows_equal_the_dense_obp_arrays(
    greedy_catalog: Catalog, tmp_path: Path, candidate: str
) -> None:
    """evaluate_candidate never builds rows x offers x slots; its figures are ope.estimate's
    on exactly those dense arrays."""
    engine = logged_engine(greedy_catalog, clicks_every=2)
    engine.flush()
    items = items_of(engine, greedy_catalog)
    if candidate == "explorer":  # epsilon-greedy: mass on every candidate
        cat = exploring(tmp_path / "epsilon", (EXPLORE_BANK, EPSILON))
    else:
        cat = without_learning(tmp_path / "narrow", ("    slots: 3\n", "    slots: 1\n"))
    report = evaluate_candidate(items, cat, n_bootstrap=30, random_state=7, fatigue=False)
    # one decision per customer: no earlier impressions, so the wear-out model is the same
    # (its fades stay at 1, reported for the kinds the logs show)
    worn = evaluate_candidate(items, cat, n_bootstrap=30, random_state=7).rewards
    assert [msgspec.structs.replace(r, fade={}) for r in worn] == report.rewards
    assert all(r.fade and set(r.fade.values()) == {1.0} for r in worn)

    rows = sorted(items, key=lambda i: (i.timestamp, i.decision_id, i.position))
    offers = sorted({i.offer_id for i in rows} | set(cat.offers) | {NONE})
    index = {oid: k for k, oid in enumerate(offers)}
    slots = max(max(i.position for i in rows), *(p.slots for p in cat.placements.values()))
    dist = np.zeros((len(rows), len(offers), slots))
    for k, item in enumerate(rows):
        marg = candidate_marginals(
            cat, item.placement, item.candidates, item.features, item.urgent, item.fallback
        )
        for r in range(slots):
            for oid, p in (marg[r] if r < len(marg) else {NONE: 1.0}).items():
                dist[k, index[oid], r] = p
    action = np.array([index[i.offer_id] for i in rows])
    position = np.array([i.position - 1 for i in rows])
    for got in report.rewards:
        reward = np.array(
            [float(i.clicked if got.reward == "click" else i.converted) for i in rows]
        )
        sums = np.zeros((len(offers), slots))
        counts = np.zeros((len(offers), slots))
        np.add.at(sums, (action, position), reward)
        np.add.at(counts, (action, position), 1.0)
        q = (sums + 20.0 * reward.mean()) / (counts + 20.0)
        q[index[NONE], :] = 0.0
        for e in got.estimates:
            want = ope.estimate(
                e.estimator,
                reward=reward,
                action=action,
                pscore=np.array([i.propensity for i in rows]),
                action_dist=dist,
                position=position,
                estimated_rewards_by_reg_model=np.broadcast_to(q, dist.shape),
                random_state=7,
                n_bootstrap=30,
            )
            assert e.value == pytest.approx(want.value, rel=1e-12, abs=1e-15)
            assert (e.ci_lower, e.ci_upper) == pytest.approx(
                (want.ci_lower, want.ci_upper), rel=1e-12, abs=1e-15
            )
            assert e.effective_sample_size == pytest.approx(want.effective_sample_size, rel=1e-12)
            assert e.unsupported_mass == pytest.approx(want.unsupported_mass, rel=1e-12)
            assert e.warnings == want.warnings


def test_a_conversion_after_login_credits_the_anonymous_click(greedy_catalog: Catalog) -> None:
    engine = Engine(greedy_catalog, memory_stores(), FixedClock(T0), new_id=counter_ids())
    engine.ingest_batch(batch(identify({"age": 35}, anon="dev1", at=T0 - DAY)))
    d = engine.decide(DecisionRequest(placement="home_feed"), anonymous_id="dev1")
    assert d.customer_id == "anon:dev1"
    commercial = next(i for i in d.items if i.kind == "commercial")
    offer = greedy_catalog.offers[commercial.offer_id]
    assert offer.topic is not None
    assert offer.spec.kpi_event is not None
    engine.ingest_batch(batch(feedback(d, "Promotion Clicked", commercial.offer_id, at=T0 + 5)))
    # logs in on that device, then core banking reports the product opened: userId only
    engine.ingest_batch(batch(identify({}, user="u42", anon="dev1", at=T0 + 60)))
    product = greedy_catalog.topics[offer.topic].products[0]
    kpi = track(offer.spec.kpi_event, {"product": product}, user="u42", at=T0 + DAY)
    engine.clock.set(T0 + DAY)  # type: ignore[attr-defined]
    engine.ingest_batch(batch(kpi))
    engine.flush()
    (row,) = [i for i in items_of(engine, greedy_catalog) if i.offer_id == commercial.offer_id]
    assert row.clicked
    assert row.converted


POOL = ["mortgage_rates", "car_loan_rates", "investing_start", "savings_offer"]


def slot_one(decision: str, at: float, customer: str, offer: str, clicked: bool) -> LoggedItem:
    """A logged home_feed decision that showed ``offer`` at the top, uniformly at random
    among the four offers of ``POOL`` (propensity 1/4), with no features."""
    return LoggedItem(
        decision_id=decision,
        timestamp=at,
        customer_id=customer,
        placement="home_feed",
        position=1,
        offer_id=offer,
        propensity=0.25,
        clicked=clicked,
        converted=False,
        candidates=POOL,
        features={},
    )


def test_the_candidate_contact_caps_are_replayed_on_its_own_impressions(
    greedy_catalog: Catalog,
) -> None:
    """Random logs show a customer's favourite rarely; a greedy candidate would show it at
    every visit, so online its per-offer cap (3 a week) takes it away from the 4th visit on.
    The replay does the same: later clicks on it are not the candidate's."""
    marg = candidate_marginals(greedy_catalog, "home_feed", POOL, {})
    favourite = next(iter(marg[0]))
    other = next(oid for oid in POOL if oid not in {next(iter(m)) for m in marg})

    def visit(day: int, offer: str) -> LoggedItem:  # two visits a day, 6 in three days
        return slot_one(f"d{day}", T0 + day * DAY / 2, "c1", offer, clicked=True)

    # visits 1, 2, 5, 6 logged the favourite at the top (and were clicked)
    items = [visit(d, favourite if d in (0, 1, 4, 5) else other) for d in range(6)]
    capped = evaluate_candidate(items, greedy_catalog, n_bootstrap=10)
    plain = evaluate_candidate(items, greedy_catalog, n_bootstrap=10, replay_caps=False)
    assert capped.capped_decisions == 3  # visits 4, 5, 6: three impressions in the week
    assert plain.capped_decisions == 0
    ips, plain_ips = capped.rewards[0].estimates[0], plain.rewards[0].estimates[0]
    assert plain_ips.value == pytest.approx(4 * 4 / 6)  # every favourite click, weight 4
    # from visit 4 the candidate's three favourites are all capped (it showed them at every
    # visit): the fourth offer leads, so visit 4's logged click counts, visits 5 and 6 not
    assert ips.value == pytest.approx(3 * 4 / 6)


def test_the_reward_model_recovers_a_known_wear_out() -> None:
    """Rows drawn with rate[cell] * fade[kind] ** earlier: the fit finds the fades (and a
    fade of 1 where nothing wears out) and the rates."""
    rng = np.random.default_rng(3)
    n = 200_000
    cell = rng.integers(0, 4, n)
    group = (cell >= 2).astype(np.int64)  # cells 0, 1 one kind; 2, 3 the other
    earlier = rng.integers(0, 5, n).astype(np.float64)
    rate = np.array([0.08, 0.04, 0.02, 0.01])
    fade = np.array([1.0, 0.6])
    reward = (rng.random(n) < rate[cell] * fade[group] ** earlier).astype(np.float64)
    rates, log_fade = fit_reward_model(reward, cell, 4, earlier, group, 2)
    assert np.exp(log_fade) == pytest.approx(fade, abs=0.05)  # sd 0.02 over seeds
    assert rates == pytest.approx(rate, rel=0.1)
    plain, none = fit_reward_model(reward, cell, 4)
    assert none.size == 0
    assert plain[3] < rate[3]  # history-free: the faded rows' mean, below the fresh rate


def test_the_reward_model_keeps_a_fade_the_logs_do_not_show_near_one() -> None:
    """No repeats at all: the prior holds the fade at exactly 1; few repeats, near 1."""
    reward = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    cell = np.zeros(5, dtype=np.int64)
    _, log_fade = fit_reward_model(reward, cell, 1, np.zeros(5), np.zeros(5, dtype=np.int64), 1)
    assert log_fade.tolist() == [0.0]
    _, log_fade = fit_reward_model(
        reward, cell, 1, np.array([0.0, 0, 0, 0, 1]), np.zeros(5, dtype=np.int64), 1
    )
    assert -1.0 < log_fade[0] < 0.0


def test_dr_counts_the_wear_out_of_a_candidate_that_repeats_its_favourite(
    greedy_catalog: Catalog,
) -> None:
    """Random logs show each customer one of four offers per visit; a click's chance halves
    with every earlier impression of that offer. A greedy candidate shows its favourite at
    all three visits of the week, so it meets the favourite at 0, 1 and 2 earlier
    impressions: the history-free reward model (and IPS) credit it with the fresher logged
    customers' clicks; the wear-out model finds the fade and DR lands on the truth."""
    assert all(greedy_catalog.offers[o].kind.value == "commercial" for o in POOL)
    rng = np.random.default_rng(11)
    base, fade = 0.3, 0.5
    items = []
    for c in range(3000):
        seen: dict[str, int] = {}
        for visit in range(3):
            offer = POOL[int(rng.integers(0, 4))]
            clicked = bool(rng.random() < base * fade ** seen.get(offer, 0))
            seen[offer] = seen.get(offer, 0) + 1
            items.append(slot_one(f"d{c}-{visit}", T0 + visit * DAY + c, f"c{c}", offer, clicked))
    truth = base * (1 + fade + fade**2) / 3
    worn = evaluate_candidate(items, greedy_catalog, n_bootstrap=20)
    free = evaluate_candidate(items, greedy_catalog, n_bootstrap=20, fatigue=False)
    assert worn.capped_decisions == 0  # three a week: the cap does not bite
    assert worn.rewards[0].fade["commercial"] == pytest.approx(fade, abs=0.08)
    assert set(worn.rewards[0].fade) == {"commercial"}  # no service rows: no service fade
    assert free.rewards[0].fade == {}
    dr, free_dr = worn.rewards[0].estimates[2], free.rewards[0].estimates[2]
    assert dr.estimator is ope.Estimator.DR
    assert free_dr.value > truth * 1.2  # the fresher logged clicks
    assert dr.value == pytest.approx(truth, rel=0.1)
    assert abs(dr.value - truth) < abs(free_dr.value - truth) / 3
    # a window shorter than the visits' spacing sees no repeats: the history-free figures
    short = evaluate_candidate(items, greedy_catalog, n_bootstrap=20, fatigue_days=0.5)
    assert short.rewards[0].estimates[2].value == pytest.approx(free_dr.value)
    with pytest.raises(ValidationError, match="fatigue_days must be > 0"):
        evaluate_candidate(items, greedy_catalog, fatigue_days=0)


def test_the_probability_the_exploration_budget_ruled_out_is_measured_and_warned(
    greedy_catalog: Catalog,
) -> None:
    """A logged decision names the candidates its campaign's exploration budget would not
    let it move (``unexplorable``). Where the logged item was one of them (pinned to its
    greedy slot), the candidate's probability on anything else there was ruled out; where
    it was not, the candidate's probability on a held candidate was."""
    marg = candidate_marginals(greedy_catalog, "home_feed", POOL, {})
    favourite = next(iter(marg[0]))  # the greedy candidate's certain choice at slot 1
    other = next(oid for oid in POOL if oid != favourite)

    def logged(n: int, offer: str, held: list[str]) -> LoggedItem:
        item = slot_one(f"d{n}", T0 + n * DAY, f"c{n}", offer, clicked=n == 0)
        return msgspec.structs.replace(item, unexplorable=held)

    items = [
        logged(0, favourite, [favourite]),  # pinned where the candidate puts it: nothing
        logged(1, other, [other]),  # pinned other: the candidate's favourite there, ruled out
        logged(2, other, [favourite]),  # the favourite held out of slot 1: ruled out
        logged(3, other, []),  # no campaign over its share
    ]
    report = evaluate_candidate(items, greedy_catalog, n_bootstrap=10)
    assert report.unexplorable_mass == pytest.approx(2 / 4)
    assert report.decisions_over_exploration_share == 3
    (warning,) = [w for w in report.warnings if "exploration budget" in w]
    assert warning.startswith("50.00% of the candidate's probability")
    assert "in 3 of 4 decisions" in warning
    free = evaluate_candidate(
        [msgspec.structs.replace(i, unexplorable=[]) for i in items], greedy_catalog
    )
    assert free.unexplorable_mass == 0.0
    assert not [w for w in free.warnings if "exploration budget" in w]


def test_only_the_budgets_doing_is_counted_against_it(greedy_catalog: Catalog) -> None:
    """Three slots, the candidate's order certain. A held offer outside the logged top
    slots that the candidate puts in slot 2 was ruled out there; an urgent message logged
    in slot 1 and an empty slot 3 (the candidate short of offers) were not the budget's
    doing, nor was the candidate's probability on an empty slot where a held offer was
    pinned."""
    order = [next(iter(m)) for m in candidate_marginals(greedy_catalog, "home_feed", POOL, {})]
    first, second, third = order[:3]

    def row(decision: str, position: int, offer: str, **more: object) -> LoggedItem:
        item = slot_one(decision, T0, "c1", offer, clicked=False)
        return msgspec.structs.replace(item, position=position, propensity=1.0, **more)

    held_second = {"unexplorable": [second]}
    items = [  # the candidate would show first, second, third
        row("a", 1, first, **held_second),  # 0: the candidate's first, logged: nothing
        row("a", 2, third, **held_second),  # 1: the held second not moved up here: all of it
        row("b", 1, first, candidates=[first, second], unexplorable=[second], urgent=[first]),
        row("b", 2, second, candidates=[first, second], unexplorable=[second], urgent=[first]),
    ]
    report = evaluate_candidate(items, greedy_catalog, n_bootstrap=10)
    # decision b: slot 1 urgent (nothing), slot 2 the held second where the candidate puts
    # it (nothing); decision a: slot 2 counts 1
    assert report.unexplorable_mass == pytest.approx(1 / 4)
    short = [
        row("c", 1, first, candidates=[first, third], unexplorable=[third]),
        row("c", 3, third, candidates=[first, third], unexplorable=[third]),
    ]
    # the candidate has two offers for three slots: its slot 3 is empty, not a ruled-out
    # choice of the logging policy's, though the logged offer there was pinned
    assert evaluate_candidate(short, greedy_catalog, n_bootstrap=10).unexplorable_mass == 0.0


def test_a_file_written_before_the_unexplorable_column_reads_as_none_held(
    greedy_catalog: Catalog, tmp_path: Path
) -> None:
    engine = logged_engine(greedy_catalog)
    engine.flush()
    path = tmp_path / "d.parquet"
    written(engine, greedy_catalog, path)
    table = pq.read_table(path)
    older = tmp_path / "older.parquet"
    pq.write_table(table.drop_columns(["unexplorable"]), older)
    assert all(i.unexplorable == [] for i in read_logged_items(older))


def test_an_exploring_placement_logs_the_candidates_its_budget_pinned(tmp_path: Path) -> None:
    """With every campaign's exploration share at 0, the example bank's Thompson sampling
    may move none of their offers: each decision names the campaign offers among its
    candidates, and they survive the export; a greedy placement names none."""
    (tmp_path / "bank").mkdir()
    folder = edited_catalog(
        tmp_path / "bank", {"campaigns.yaml": [("    name:", "    max_exploration: 0\n    name:")]}
    )
    catalog = load_catalog(folder)
    assert all(c.max_exploration == 0 for c in catalog.spec.campaigns)
    engine = logged_engine(catalog)
    engine.flush()
    decisions = list(engine.decision_log.decisions())
    with_campaign = [d for d in decisions if any(catalog.offers[o].campaign for o in d.candidates)]
    assert with_campaign
    for d in decisions:
        expected = [o for o in d.candidates if catalog.offers[o].campaign and o not in d.urgent]
        assert d.unexplorable == expected
    path = tmp_path / "decisions.parquet"
    written(engine, catalog, path)
    assert {tuple(i.unexplorable) for i in read_logged_items(path)} == {
        tuple(d.unexplorable) for d in decisions if d.items
    }
    greedy = logged_engine(without_learning(tmp_path / "greedy"))
    greedy.flush()
    assert all(not d.unexplorable for d in greedy.decision_log.decisions())
