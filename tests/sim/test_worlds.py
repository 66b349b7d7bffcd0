"""The zoo of worlds: each builds and runs, ``default`` is today's world byte for byte,
worlds change only the customers and the catalog they name, and the baseline policies
(``none``, ``greedy_recent``) and the oracle-margin report do what they say."""

from __future__ import annotations

import hashlib
import math
import random
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from nextbest.catalog.compiled import Catalog
from nextbest.cli import app
from nextbest.decide.model import ChoiceContext
from nextbest.profile.model import Profile, TopicInterest
from nextbest.sim.baselines import (
    clicks_vs_oracle,
    commercial_vs_oracle,
    describe_margin,
    gap_closed,
    oracle_margin,
    true_incremental,
)
from nextbest.sim.generate import DEFAULT_START, generate_lines
from nextbest.sim.loop import ALL_POLICIES, Metrics, evaluate
from nextbest.sim.needs import LIFE_EVENTS, EndReason, LifeEventKind, NeedSpec, start_need
from nextbest.sim.policies import GreedyRecentPolicy, NoOfferPolicy, make_policy
from nextbest.sim.population import make_population
from nextbest.sim.response import ResponseModel, load_params
from nextbest.sim.world import CustomerSim
from nextbest.sim.worlds import (
    COMPETITOR,
    WORLDS,
    ZOO_APPEAL,
    ZOO_COMMERCIAL,
    ZOO_CONVERT,
    ZOO_HAZARD,
    ZOO_LIFE_EVENTS,
    ZOO_SERVICE,
    world_catalog,
    world_named,
    world_response,
)
from tests.support import EXAMPLE_CATALOG, T0

DAY = 86_400.0
#: sha256 of ``generate_lines(5, 80, 20)`` before worlds existed: the default world's bytes
DEFAULT_STREAM = "5045509fff9d3e360728692e69a242ab14a895bd2214eb0f6ff4043909365cf5"


# ------------------------------------------------------------------ every world
@pytest.mark.parametrize("name", list(WORLDS))
def test_each_world_builds_and_runs_a_tiny_evaluation(name: str) -> None:
    results = evaluate(4, 30, 3, ("none", "random", "oracle"), EXAMPLE_CATALOG, world=name)
    assert set(results) == {"none", "random", "oracle"}
    assert results["none"].impressions == 0
    assert all(m.days == 3 and m.customers == 30 for m in results.values())
    assert results["random"].decisions > 0


@pytest.mark.parametrize("name", list(WORLDS))
def test_each_world_streams_the_same_bytes_for_the_same_seed(name: str) -> None:
    a = b"".join(generate_lines(2, 25, 4, world=name))
    assert a == b"".join(generate_lines(2, 25, 4, world=name))
    assert a


def test_every_world_is_documented() -> None:
    from tests.support import ROOT

    doc = (ROOT / "docs" / "worlds.md").read_text(encoding="utf-8")
    for name, world in WORLDS.items():
        assert f"`{name}`" in doc, name
        assert world.summary


# ------------------------------------------------------------------ default is today's world
def test_default_world_streams_todays_bytes() -> None:
    stream = b"".join(generate_lines(5, 80, 20, world="default"))
    assert hashlib.sha256(stream).hexdigest() == DEFAULT_STREAM
    assert b"".join(generate_lines(5, 80, 20)) == stream


def test_default_world_uses_the_bank_catalog_and_packaged_response(catalog: Catalog) -> None:
    world = world_named("default")
    assert world_catalog(world, EXAMPLE_CATALOG, DEFAULT_START).version == catalog.version
    assert world_response(world).params == load_params()
    assert world.life_events is None
    assert world.population is None


def test_zoo_worlds_add_the_shelf_and_their_response(catalog: Catalog) -> None:
    shelf = world_catalog(world_named("shelf"), EXAMPLE_CATALOG, DEFAULT_START)
    assert set(catalog.offers) < set(shelf.offers)
    assert len(shelf.commercial_offers) == len(catalog.commercial_offers) + 18 == 31
    for name, world in WORLDS.items():
        if name == "default":
            continue
        params = world_response(world).params
        assert params.click.commercial == ZOO_COMMERCIAL, name
        assert params.click.service == ZOO_SERVICE, name
        assert params.convert == ZOO_CONVERT, name
        assert params.click.offers[: len(ZOO_APPEAL)] == ZOO_APPEAL, name
        assert world.life_events is not None, name


def test_world_catalogs_change_offers_and_date_launches() -> None:
    priors = world_catalog(world_named("wrong_priors"), EXAMPLE_CATALOG, DEFAULT_START)
    assert priors.offers["mortgage_rates"].spec.priority == 10
    launch = world_catalog(world_named("new_offer"), EXAMPLE_CATALOG, DEFAULT_START)
    live = launch.offers["fixed_deposit_launch"]
    day_16 = (DEFAULT_START + timedelta(days=15)).isoformat()
    assert live.spec.valid_from == day_16
    service = world_catalog(world_named("generic_service"), EXAMPLE_CATALOG, DEFAULT_START)
    assert {"budget_coach", "tax_reminder", "pension_checkup"} <= set(service.offers)


def test_age_appeal_changes_one_offers_clicks_by_age() -> None:
    model = world_response(world_named("age_appeal"))

    def p(offer: str, age: int) -> float:
        return model.p_click(
            offer_topic="investing",
            offer_kind="commercial",
            position=1,
            needs={},
            impressions_before=0,
            overdrawn=False,
            age=age,
            offer=offer,
        )

    assert p("investing_start", 25) == pytest.approx(4 * p("ethical_fund_offer", 25))
    assert p("investing_start", 70) == pytest.approx(0.25 * p("ethical_fund_offer", 70))
    assert p("investing_start", 45) == pytest.approx(p("ethical_fund_offer", 45))


# ------------------------------------------------------------------ needs as worlds shape them
def _need(**spec_fields: object) -> NeedSpec:
    return NeedSpec("mortgage", 1.0, (0.8, 0.8), (1, 1), (30, 30), 0.0, **spec_fields)  # type: ignore[arg-type]


def test_research_without_need_browses_but_never_clicks_or_converts() -> None:
    need = start_need(random.Random(1), _need(real=False), 0.0, LifeEventKind.CURIOSITY)
    assert need.browsing(5.0) == pytest.approx(0.8)
    assert need.strength(5.0) == 0.0


def test_early_research_is_ripe_only_after_its_lead() -> None:
    spec = _need(lead_days=(20.0, 20.0), visibility=(0.25, 0.25))
    need = start_need(random.Random(1), spec, 0.0, LifeEventKind.MOVING)
    assert (need.strength(10.0), need.browsing(10.0)) == (0.0, pytest.approx(0.8))
    assert need.strength(25.0) == pytest.approx(0.8)
    assert need.browsing(25.0) == pytest.approx(0.2)
    assert need.strength(49.0) > 0.0
    assert need.strength(51.0) == 0.0


def test_default_specs_take_no_extra_draws() -> None:
    a, b = random.Random(3), random.Random(3)
    start_need(a, _need(), 0.0, LifeEventKind.MOVING)
    for _ in range(3):
        b.random()
    assert a.random() == b.random()


def test_hidden_needs_world_shows_needs_less_in_browsing() -> None:
    people = make_population(6, 400, DEFAULT_START)
    world = world_named("hidden_needs")
    model = world_response(world)
    sims = [CustomerSim(c, 6, DEFAULT_START, model, 1.0, world.life_events) for c in people]
    true = sum(sum(s.strengths(0).values()) for s in sims)
    shown = sum(sum(s.browsing(0).values()) for s in sims)
    assert true > 0
    assert shown < 0.35 * true


# ------------------------------------------------------------------ the zoo's base
def test_a_competitor_meets_a_ripe_need_after_an_exponential_wait() -> None:
    spec = _need(competitor=0.1, lead_days=(5.0, 5.0))
    rng = random.Random(7)
    needs = [start_need(rng, spec, 2.0, LifeEventKind.MOVING) for _ in range(4000)]
    waits = [n.competitor_day - 7.0 for n in needs if n.competitor_day is not None]
    assert len(waits) == len(needs)
    assert min(waits) >= 0.0  # never before the need is ripe (start 2 + lead 5)
    assert sum(waits) / len(waits) == pytest.approx(10.0, rel=0.05)  # mean 1 / hazard
    need = needs[0]
    assert need.competitor_day is not None
    assert need.over_by(need.competitor_day - 0.01) is None
    assert need.over_by(need.competitor_day) is EndReason.ELSEWHERE
    assert start_need(random.Random(1), _need(), 0.0, LifeEventKind.MOVING).competitor_day is None


def test_the_world_ends_needs_a_competitor_met_before_their_time() -> None:
    world = world_named("shelf")
    model = world_response(world)
    people = make_population(3, 300, DEFAULT_START, world.population)
    sims = [CustomerSim(c, 3, DEFAULT_START, model, 1.0, world.life_events) for c in people]
    for d in range(20):
        for sim in sims:
            sim.day(d)
    needs = [n for sim in sims for n in sim.needs if n.topic != "overdraft"]
    early = [
        n
        for n in needs
        if n.ended is EndReason.ELSEWHERE
        and n.end_day is not None
        and n.end_day - n.start < n.lasts
    ]
    assert len(early) > 0.2 * len(needs)
    for n in early:
        assert n.competitor_day is not None
        assert n.end_day == math.ceil(n.competitor_day)  # the day after the competitor's
        assert n.strength(n.end_day) == 0.0


def test_zoo_life_events_are_the_defaults_twice_as_often_with_competitors() -> None:
    for kind, (hazard, specs) in LIFE_EVENTS.items():
        zoo_hazard, zoo_specs = ZOO_LIFE_EVENTS[kind]
        assert zoo_hazard == (hazard * ZOO_HAZARD if hazard is not None else None)
        assert [s.topic for s in zoo_specs[: len(specs)]] == [s.topic for s in specs]
    for _, zoo_specs in ZOO_LIFE_EVENTS.values():
        for spec in zoo_specs:
            assert spec.competitor == COMPETITOR.get(spec.topic, 0.0)
    assert ZOO_LIFE_EVENTS[LifeEventKind.OVERDRAWN][1][0].competitor == 0.0
    assert LifeEventKind.INSURANCE_RENEWAL in ZOO_LIFE_EVENTS
    assert LifeEventKind.INSURANCE_RENEWAL not in LIFE_EVENTS


def test_the_shelfs_needs_never_show_in_browsing() -> None:
    world = world_named("shelf")
    model = world_response(world)
    people = make_population(4, 400, DEFAULT_START, world.population)
    sims = [CustomerSim(c, 4, DEFAULT_START, model, 1.0, world.life_events) for c in people]
    shelf_topics = {"life_insurance", "car_insurance", "travel_money", "premium_account"}
    seen: set[str] = set()
    for d in range(10):
        for sim in sims:
            sim.day(d)
            seen |= set(sim.strengths(d)) & shelf_topics
            assert not set(sim.browsing(d)) & shelf_topics
    assert {"car_insurance", "life_insurance"} <= seen


def test_the_renewal_is_never_told_to_the_bank() -> None:
    stream = b"".join(generate_lines(1, 200, 20, world="shelf"))
    assert b"Life Event" in stream
    assert b"insurance_renewal" not in stream


def _p(model: ResponseModel, *, kind: str, topic: str, n: int, **kw: object) -> float:
    return model.p_click(
        offer_topic=topic,
        offer_kind=kind,
        position=1,
        impressions_before=n,
        age=40,
        **kw,  # type: ignore[arg-type]
    )


def test_zoo_matched_banners_fade_less_than_unmatched_ones() -> None:
    zoo, default = world_response(world_named("shelf")), world_response(world_named("default"))
    needs = {"car_loan": 0.5}
    for n in (0, 1, 5, 20):
        matched = _p(zoo, kind="commercial", topic="car_loan", n=n, needs=needs, overdrawn=False)
        first = _p(zoo, kind="commercial", topic="car_loan", n=0, needs=needs, overdrawn=False)
        unmatched = _p(zoo, kind="commercial", topic="savings", n=n, needs=needs, overdrawn=False)
        kind = ZOO_COMMERCIAL
        assert matched / first == pytest.approx(0.6 + 0.4 * 0.95**n)
        assert unmatched == pytest.approx(kind.base * (0.15 + 0.85 * 0.75**n))
    # the packaged response has no matched fatigue: one table for both
    d_matched = _p(default, kind="commercial", topic="car_loan", n=3, needs=needs, overdrawn=False)
    d_first = _p(default, kind="commercial", topic="car_loan", n=0, needs=needs, overdrawn=False)
    assert d_matched / d_first == pytest.approx(0.15 + 0.85 * 0.75**3)


def test_zoo_overdraft_warning_is_read_once_and_clicked_less() -> None:
    zoo, default = world_response(world_named("shelf")), world_response(world_named("default"))

    def warning(model: ResponseModel, n: int) -> float:
        return model.p_click(
            offer_topic="overdraft",
            offer_kind="service",
            position=1,
            needs={},
            impressions_before=n,
            overdrawn=True,
            age=40,
            offer="overdraft_warning",
        )

    assert warning(zoo, 0) == pytest.approx(0.25 * warning(default, 0))
    assert warning(zoo, 3) / warning(zoo, 0) == pytest.approx(0.05 + 0.95 * 0.5**3)
    assert warning(default, 3) / warning(default, 0) == pytest.approx(0.3 + 0.7 * 0.85**3)


def test_the_oracle_beats_random_on_a_small_zoo_run() -> None:
    results = evaluate(1, 150, 10, ("none", "random", "oracle"), EXAMPLE_CATALOG, world="shelf")
    assert results["oracle"].commercial_clicks > results["random"].commercial_clicks
    assert results["oracle"].conversions_total >= results["none"].conversions_total


# ------------------------------------------------------------------ the baseline policies
def _context(hits: dict[str, int], now: float = T0) -> ChoiceContext:
    interests = {
        topic: TopicInterest(hits=[now - DAY * (1 + k % 13) for k in range(n)], total=n)
        for topic, n in hits.items()
    }
    old = [now - 20 * DAY] * 9  # outside the 14 days: not counted
    interests.setdefault("savings", TopicInterest(hits=old, total=9))
    profile = Profile(customer_id="c1", interests=interests)
    return ChoiceContext("d1", "home_feed", now, profile, {}, [])


def test_greedy_recent_orders_by_recent_views_then_priority(catalog: Catalog) -> None:
    ids = ("savings_offer", "car_loan_rates", "mortgage_rates", "investing_start")
    offers = [catalog.offers[i] for i in ids]
    policy = GreedyRecentPolicy()
    sim = None  # never read: the rule of thumb sees only what the engine sees
    context = _context({"car_loan": 3, "mortgage": 5})
    picks = policy.choose(offers, sim, 0, 4, random.Random(0), {}, context)  # type: ignore[arg-type]
    assert [oid for oid, _ in picks] == [
        "mortgage_rates",
        "car_loan_rates",
        "investing_start",  # no recent views: id order among equal priority
        "savings_offer",  # nine views, all older than 14 days
    ]
    assert all(p == 1.0 for _, p in picks)


def test_greedy_recent_puts_service_first_and_then_priority(catalog: Catalog) -> None:
    priors = world_catalog(world_named("wrong_priors"), EXAMPLE_CATALOG, DEFAULT_START)
    offers = [priors.offers[i] for i in ("savings_offer", "mortgage_rates", "overdraft_warning")]
    picks = GreedyRecentPolicy().choose(offers, None, 0, 2, random.Random(0), {}, _context({}))  # type: ignore[arg-type]
    assert [oid for oid, _ in picks] == ["overdraft_warning", "mortgage_rates"]  # priority 10


def test_none_shows_nothing(catalog: Catalog) -> None:
    offers = list(catalog.offers.values())
    assert NoOfferPolicy().choose(offers, None, 0, 3, random.Random(0), {}) == []  # type: ignore[arg-type]
    m = evaluate(2, 40, 4, ("none",), EXAMPLE_CATALOG)["none"]
    assert (m.impressions, m.clicks, m.conversions_after_click) == (0, 0, 0)
    assert m.decisions > 0


def test_every_policy_is_known() -> None:
    for name in ALL_POLICIES:
        assert make_policy(name).name == name


# ------------------------------------------------------------------ unknown worlds
def test_unknown_world_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown world 'mars'") as err:
        world_named("mars")
    assert all(name in str(err.value) for name in WORLDS)
    with pytest.raises(ValueError, match="unknown world"):
        evaluate(1, 5, 1, ("random",), EXAMPLE_CATALOG, world="mars")


@pytest.mark.parametrize("command", ["evaluate", "generate"])
def test_cli_refuses_an_unknown_world(command: str) -> None:
    result = CliRunner().invoke(app, ["sim", command, "--world", "mars", "--days", "1"])
    assert result.exit_code == 2
    assert "unknown world 'mars'" in result.output
    assert "generic_service" in result.output


def test_cli_evaluate_reports_the_world_and_oracle_margin() -> None:
    args = ["sim", "evaluate", "--world", "age_appeal", "--customers", "30", "--days", "2"]
    result = CliRunner().invoke(app, [*args, "--policies", "none,random,static,oracle"])
    assert result.exit_code == 0, result.output
    assert "world: age_appeal" in result.output
    assert "oracle margin (clicks):" in result.output
    assert "true incremental" in result.output


# ------------------------------------------------------------------ the margin report
def _m(policy: str, clicks: int, conversions: int) -> Metrics:
    return Metrics(
        policy=policy, seed=1, customers=10, days=1, clicks=clicks, conversions_total=conversions
    )


def test_oracle_margin_and_true_incremental() -> None:
    results = {
        "none": _m("none", 0, 7),
        "random": _m("random", 40, 9),
        "static": _m("static", 50, 10),
        "oracle": _m("oracle", 100, 15),
    }
    margin = oracle_margin(results)
    assert margin is not None
    assert (margin.over_random, margin.over_static) == (2.5, 2.0)
    assert describe_margin(margin) == "oracle margin (clicks): 2.50x random, 2.00x static"
    assert true_incremental(results) == {"none": 0, "random": 2, "static": 3, "oracle": 8}
    assert clicks_vs_oracle(results)["static"] == 0.5


def test_margin_without_the_policies_it_needs() -> None:
    assert oracle_margin({"random": _m("random", 4, 0)}) is None
    assert describe_margin(None) == "oracle not run: no margin"
    margin = oracle_margin({"oracle": _m("oracle", 5, 0), "random": _m("random", 0, 0)})
    assert margin is not None
    assert margin.over_random is None
    assert margin.over_static is None
    assert true_incremental({"oracle": _m("oracle", 5, 1)}) == {}
    assert clicks_vs_oracle({"oracle": _m("oracle", 0, 0)}) == {"oracle": None}


def test_commercial_clicks_against_the_oracles() -> None:
    oracle = _m("oracle", 100, 0)
    oracle.commercial_clicks = 80
    rnd = _m("random", 40, 0)
    rnd.commercial_clicks = 20
    assert commercial_vs_oracle({"oracle": oracle, "random": rnd}) == {
        "oracle": 1.0,
        "random": 0.25,
    }
    assert commercial_vs_oracle({"random": rnd}) == {"random": None}


def test_the_gap_a_policy_closes_between_the_rule_of_thumb_and_the_oracle() -> None:
    assert gap_closed(40.0, 30.0, 50.0) == 0.5
    assert gap_closed(20.0, 30.0, 50.0) == -0.5  # below the rule of thumb
    assert gap_closed(40.0, 30.0, 30.0) is None  # no gap to close
    assert gap_closed(40.0, 30.0, 25.0) is None
    assert gap_closed(None, 30.0, 50.0) is None
