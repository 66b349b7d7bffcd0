"""The one ranking policy (``decide.ranking``): the pipeline, offline evaluation, the learner's
exploration and the simulator's policies all order by it, and the interest feature is written
and read by one pair of functions."""

from __future__ import annotations

import math
import random
import re

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog, CompiledOffer
from nextbest.catalog.model import OfferKind
from nextbest.decide import ranking
from nextbest.decide.model import Decision, DecisionRequest, ItemKind, PropensityKind
from nextbest.decide.pipeline import decide
from nextbest.learn.explore import EpsilonGreedy, Greedy, RankEntry, Softmax, marginals, rank
from nextbest.learn.offline import candidate_marginals
from nextbest.profile.model import Profile, TopicInterest
from nextbest.sim.policies import StaticPolicy, static_key
from nextbest.store.catalog_files import load_catalog
from tests.support import EXAMPLE_CATALOG, T0

PLACEMENT = "home_feed"


@pytest.fixture(scope="module")
def open_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The example bank with every offer eligible, no control groups, no learning and 20
    slots per placement: the whole placement reaches the ranking, and the items."""
    folder = tmp_path_factory.mktemp("open")
    for f in EXAMPLE_CATALOG.glob("*.yaml"):
        text = f.read_text()
        text = re.sub(r"eligibility: .*", 'eligibility: "true"', text)
        text = re.sub(r"control_share: [0-9.]+", "control_share: 0.0", text)
        text = re.sub(r"slots: [0-9]+", "slots: 20", text)
        text = "\n".join(ln for ln in text.splitlines() if "learning:" not in ln) + "\n"
        (folder / f.name).write_text(text)
    return load_catalog(folder)


def profile(overdrawn: bool = True) -> Profile:
    """Some interest in a few topics, so the prior's scores differ by more than base CTR;
    overdrawn, so the overdraft warning's trigger holds (the only urgent message)."""
    interests = {
        t: TopicInterest(score=s, score_at=T0, hits=[T0 - 3_600.0], total=1, last_seen=T0)
        for t, s in (("mortgage", 4.0), ("pension", 1.5), ("cards", 0.7))
    }
    return Profile(customer_id="c1", interests=interests, overdrawn=overdrawn)


def engine_order(catalog: Catalog, overdrawn: bool = True) -> Decision:
    request = DecisionRequest(placement=PLACEMENT)
    return decide(catalog, profile(overdrawn), request, T0, "d1")


def by_key(catalog: Catalog, decision: Decision) -> list[str]:
    """The decision's candidates re-sorted by ``ranking.rank_key`` with their logged scores."""
    cands = []
    for oid in decision.candidates:
        offer = catalog.offers[oid]
        s = ranking.interest_score(decision.features, offer.topic) if offer.topic else 0.0
        cands.append(
            (offer, ranking.score(offer, ranking.prior_p_click(offer, s, catalog.scoring)))
        )
    urgent = set(decision.urgent)
    return [o.id for o, s in sorted(cands, key=lambda c: ranking.rank_key(*c, c[0].id in urgent))]


def offline_order(catalog: Catalog, decision: Decision) -> list[str]:
    """The greedy replay's order of the decision's candidates, given in a shuffled order."""
    shuffled = list(decision.candidates)
    random.Random(3).shuffle(shuffled)
    marg = candidate_marginals(catalog, PLACEMENT, shuffled, decision.features, decision.urgent)
    assert all(list(m.values()) == [1.0] for m in marg)
    return [next(iter(m)) for m in marg]


def learner_order(catalog: Catalog, decision: Decision) -> list[str]:
    """``explore.rank`` greedy over the candidates, urgent flags from the decision."""
    offers = [catalog.offers[oid] for oid in decision.candidates]
    entries = [RankEntry(urgent=o.id in decision.urgent) for o in offers]
    scores = [len(offers) - k for k in range(len(offers))]  # the engine's order as scores
    placed = rank(entries, scores, len(offers), Greedy(), random.Random(0))
    return [offers[p.index].id for p in placed]


def test_pipeline_offline_learner_and_simulator_share_one_order(open_catalog: Catalog) -> None:
    d = engine_order(open_catalog)
    assert len(d.candidates) >= 8
    kinds = {open_catalog.offers[o].kind for o in d.candidates}
    assert kinds == {OfferKind.SERVICE, OfferKind.COMMERCIAL}
    assert d.urgent == ["overdraft_warning"] == d.candidates[:1]
    # the other service message has no trigger holding: it competes on its score
    assert d.candidates.index("turning_18_package") > 1
    assert d.candidates == by_key(open_catalog, d)
    assert offline_order(open_catalog, d) == d.candidates
    assert learner_order(open_catalog, d) == d.candidates
    static = StaticPolicy().choose(
        [open_catalog.offers[o] for o in d.candidates],
        None,
        0,
        99,
        random.Random(0),
        {},  # type: ignore[arg-type]
    )
    tiers = [static_key(open_catalog.offers[o])[0] for o, _ in static]
    assert tiers == sorted(tiers)  # the static policy puts service messages first


def test_a_changed_key_changes_every_user_of_it(
    open_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever spells the order out again instead of calling ``decide.ranking`` fails here."""
    before = engine_order(open_catalog).candidates

    def by_id(
        offer: CompiledOffer, score: float, urgent: bool = False
    ) -> tuple[int, float, int, str]:
        return (0 if urgent else 1, 0.0, 0, offer.id)

    monkeypatch.setattr(ranking, "rank_key", by_id)
    d = engine_order(open_catalog)
    assert d.candidates != before
    assert d.candidates == ["overdraft_warning", *sorted(d.candidates[1:])]
    assert offline_order(open_catalog, d) == d.candidates

    # no trigger holds: every message competes on the key, in the pipeline, the replay and
    # the learner's exploration alike
    flat = engine_order(open_catalog, overdrawn=False)
    assert flat.urgent == []
    assert flat.candidates == sorted(flat.candidates)
    assert offline_order(open_catalog, flat) == flat.candidates
    assert learner_order(open_catalog, flat) == flat.candidates


def test_epsilon_greedy_marginals_are_the_propensities_rank_logs() -> None:
    """One spelling of the exploration marginals: what offline replays is what ``rank``
    logs (every explored item's propensity equals its marginal at that rank)."""
    policy = EpsilonGreedy(epsilon=0.3)
    scores = [0.5, 0.4, 0.3, 0.2, 0.1]
    m = marginals(policy, scores, 3)
    for seed in range(200):
        for p in rank([RankEntry()] * 5, scores, 3, policy, random.Random(seed)):
            assert p.propensity == m[p.position - 1][p.index]
            assert p.propensity_kind is PropensityKind.EXACT
    assert [sum(slot.values()) for slot in m] == pytest.approx([1.0] * 3)


def test_softmax_marginals_are_the_propensities_rank_logs() -> None:
    policy = Softmax(temperature=0.2)
    scores = [0.9, 0.5, 0.45, 0.1]
    m = marginals(policy, scores, 2)
    for seed in range(100):
        for p in rank([RankEntry()] * 4, scores, 2, policy, random.Random(seed)):
            assert p.propensity == min(1.0, m[p.position - 1][p.index])


def test_greedy_marginals_are_the_greedy_order() -> None:
    assert marginals(None, [3.0, 2.0, 1.0], 2) == [{0: 1.0}, {1: 1.0}]
    assert marginals(Greedy(), [3.0], 4) == [{0: 1.0}]
    assert marginals(EpsilonGreedy(), [], 2) == []


@pytest.mark.parametrize("score", [0.0, 1e-9, 0.35, 1.0, 3.0, 17.25, 1e6])
def test_interest_feature_round_trip(score: float) -> None:
    key = ranking.interest_key("mortgage")
    assert key == "interest:mortgage"
    exact = {key: ranking.interest_value(score)}
    assert ranking.interest_score(exact, "mortgage") == pytest.approx(score, rel=1e-12, abs=1e-15)
    logged = ranking.logged_interest(score)
    assert logged == round(logged, 6)
    assert math.log1p(ranking.interest_score({key: logged}, "mortgage")) == pytest.approx(
        math.log1p(score), abs=5e-7
    )
    assert ranking.interest_score({}, "mortgage") == 0.0


def test_the_logged_features_rescore_the_decision(open_catalog: Catalog) -> None:
    """What a decision logs (``interest:<topic>``) is what offline reads back: the logged
    scores and their re-computation from the features agree to the logged precision."""
    d = engine_order(open_catalog)
    assert d.features
    for item in d.items:
        offer = open_catalog.offers[item.offer_id]
        s = ranking.interest_score(d.features, offer.topic) if offer.topic else 0.0
        again = ranking.score(offer, ranking.prior_p_click(offer, s, open_catalog.scoring))
        assert again == pytest.approx(item.score, rel=1e-5)


def test_old_decision_logs_decode_with_enums() -> None:
    """A decision as stored before the kinds were enums (plain strings) reads back, and
    encodes to the same bytes."""
    stored = (
        b'{"decision_id":"d1","customer_id":"c1","placement":"home_feed","timestamp":1.0,'
        b'"catalog_version":"v","items":[{"position":1,"offer_id":"o","kind":"commercial",'
        b'"campaign_id":null,"arm":"treatment","score":0.1,"p_click":0.1,"propensity":0.5,'
        b'"content":{},"reasons":[],"explored":true,"propensity_kind":"monte_carlo"}],'
        b'"excluded":[],"control":[],"segments":[]}'
    )
    d = msgspec.json.decode(stored, type=Decision)
    item = d.items[0]
    assert item.kind is ItemKind.COMMERCIAL
    assert item.propensity_kind is PropensityKind.MONTE_CARLO
    again = msgspec.json.decode(msgspec.json.encode(d), type=Decision)
    assert again == d
    assert b'"kind":"commercial"' in msgspec.json.encode(d)
    # an item logged before ``propensity_kind`` existed is exact
    older = stored.replace(b',"propensity_kind":"monte_carlo"', b"")
    assert msgspec.json.decode(older, type=Decision).items[0].propensity_kind is (
        PropensityKind.EXACT
    )


def test_contact_policy_thresholds(open_catalog: Catalog) -> None:
    policy = open_catalog.policy
    cap = policy.per_offer.count
    assert not ranking.capped(cap - 1, policy)
    assert ranking.capped(cap, policy)
    assert ranking.capped(cap - 1e-12, policy, slack=1e-9)  # an expected count at the cap
    assert ranking.fatigued(policy.per_day_commercial, policy)
    assert not ranking.fatigued(policy.per_day_commercial - 1, policy)
    assert ranking.faded(1, policy.fade_below / 2, policy)
    assert not ranking.faded(0, 0.0, policy)  # no interest ever: nothing faded
