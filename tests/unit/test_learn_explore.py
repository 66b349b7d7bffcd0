"""Exploration: who is placed where, and the exact (or estimated) logged propensities."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict
from typing import Any
from unittest.mock import patch

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.decide.model import PropensityKind
from nextbest.errors import ValidationError
from nextbest.learn import explore
from nextbest.learn.explore import (
    BetaScores,
    EpsilonGreedy,
    ExplorationBudget,
    GaussianScores,
    Greedy,
    Placed,
    Policy,
    RankEntry,
    Softmax,
    Thompson,
    marginals,
    plackett_luce_marginals,
    rank,
    seed_of,
)

SERVICE = RankEntry(urgent=True)
COMMERCIAL = RankEntry()
CAPPED = RankEntry(explorable=False)


def tally(
    draws: list[list[Placed]],
) -> tuple[Counter[tuple[int, int]], dict[tuple[int, int], set[float]]]:
    counts: Counter[tuple[int, int]] = Counter()
    logged: dict[tuple[int, int], set[float]] = defaultdict(set)
    for placed in draws:
        for p in placed:
            counts[p.index, p.position] += 1
            logged[p.index, p.position].add(p.propensity)
    return counts, logged


def assert_matches_frequencies(
    counts: Counter[tuple[int, int]], props: dict[tuple[int, int], float], n: int
) -> None:
    for key, p in props.items():
        freq = counts[key] / n
        assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-9, (key, freq, p)


def test_greedy_ranks_service_first_then_by_score():
    cands = [COMMERCIAL, SERVICE, COMMERCIAL, COMMERCIAL, SERVICE]
    scores = [0.3, 0.1, 0.9, 0.3, 0.2]
    placed = rank(cands, scores, 4, Greedy(), random.Random(0))
    assert [(p.index, p.position) for p in placed] == [(4, 1), (1, 2), (2, 3), (0, 4)]
    assert all(p.propensity == 1.0 and not p.explored for p in placed)
    assert all(p.propensity_kind is PropensityKind.EXACT for p in placed)
    assert [p.index for p in rank(cands, scores, 9, Greedy(), random.Random(0))] == [4, 1, 2, 0, 3]
    assert rank(cands, scores, 0, Greedy(), random.Random(0)) == []
    assert [p.index for p in rank(cands, scores, 1, Greedy(), random.Random(0))] == [4]


def test_epsilon_greedy_propensities_are_exact():
    cands = [SERVICE] + [COMMERCIAL] * 6
    scores = [0.0, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    rng = random.Random(1)
    n = 20_000
    draws = [rank(cands, scores, 3, EpsilonGreedy(0.3), rng) for _ in range(n)]
    counts, logged = tally(draws)
    assert all(len(v) == 1 for v in logged.values())  # one propensity per (item, position)
    props = {k: next(iter(v)) for k, v in logged.items()}
    assert props[0, 1] == 1.0
    assert counts[0, 1] == n  # the service message never moves
    for position in (2, 3):
        column = {i: p for (i, pos), p in props.items() if pos == position}
        assert set(column) == {1, 2, 3, 4, 5, 6}
        assert math.fsum(column.values()) == pytest.approx(1.0, abs=1e-12)
    assert props[1, 2] == pytest.approx(0.7 + 0.3 / 6)
    assert props[2, 3] == pytest.approx(0.7 + 0.3 / 6)
    assert props[3, 2] == pytest.approx(0.3 / 6)
    assert_matches_frequencies(counts, props, n)
    explored = [p for placed in draws for p in placed if p.explored]
    assert explored
    assert all(p.position > 1 for p in explored)


def brute_force_pl(weights: list[float], f: int) -> list[list[float]]:
    n = len(weights)
    marg = [[0.0] * n for _ in range(f)]
    for perm in itertools.permutations(range(n), f):
        p, left = 1.0, sum(weights)
        for i in perm:
            p *= weights[i] / left
            left -= weights[i]
        for r, i in enumerate(perm):
            marg[r][i] += p
    return marg


def test_plackett_luce_marginals_by_enumeration():
    weights = [3.0, 1.0, 0.5, 0.25, 2.0]
    for f in (1, 2, 3):
        marg = plackett_luce_marginals(weights, f)
        for row, expected in zip(marg, brute_force_pl(weights, f), strict=True):
            assert row == pytest.approx(expected, abs=1e-12)
        for row in marg:
            assert math.fsum(row) == pytest.approx(1.0, abs=1e-12)
    assert plackett_luce_marginals(weights, 1)[0] == pytest.approx([w / 6.75 for w in weights])


def test_softmax_exact_marginals_match_monte_carlo():
    cands = [COMMERCIAL] * 5
    scores = [0.5, 0.4, 0.3, 0.2, 0.1]
    rng = random.Random(2)
    n = 12_000
    draws = [rank(cands, scores, 3, Softmax(temperature=0.1), rng) for _ in range(n)]
    counts, logged = tally(draws)
    assert all(len(v) == 1 for v in logged.values())
    assert all(p.propensity_kind is PropensityKind.EXACT for d in draws for p in d)
    props = {k: next(iter(v)) for k, v in logged.items()}
    weights = [math.exp((s - 0.5) / 0.1) for s in scores]
    marg = plackett_luce_marginals(weights, 3)
    for (i, pos), p in props.items():
        assert p == pytest.approx(marg[pos - 1][i], rel=1e-12)
    assert_matches_frequencies(counts, props, n)


def test_softmax_past_the_budget_logs_sequential_conditionals():
    cands = [COMMERCIAL] * 20
    scores = [i / 20 for i in range(20)]
    placed = rank(cands, scores, 3, Softmax(temperature=0.2), random.Random(3))
    kinds = [p.propensity_kind for p in placed]
    assert kinds == [PropensityKind.EXACT, PropensityKind.SEQUENTIAL, PropensityKind.SEQUENTIAL]
    weights = [math.exp((s - max(scores)) / 0.2) for s in scores]
    first = placed[0]
    assert first.propensity == pytest.approx(weights[first.index] / math.fsum(weights))
    left = math.fsum(weights) - weights[first.index]
    assert placed[1].propensity == pytest.approx(weights[placed[1].index] / left)
    # within the budget the same call is exact
    exact = rank(cands, scores, 3, Softmax(temperature=0.2, exact_budget=10_000), random.Random(3))
    assert [p.propensity_kind for p in exact] == [PropensityKind.EXACT] * 3


def test_softmax_survives_extreme_scores():
    placed = rank([COMMERCIAL] * 3, [1000.0, 0.0, 0.0], 3, Softmax(0.01), random.Random(4))
    assert placed[0].index == 0
    assert placed[0].propensity == pytest.approx(1.0)
    assert all(p.propensity > 0.0 for p in placed)


def test_service_items_are_never_explored_away():
    cands = [COMMERCIAL, SERVICE, COMMERCIAL, SERVICE, COMMERCIAL]
    scores = [0.9, 0.01, 0.8, 0.02, 0.7]
    post = BetaScores([1.0] * 5, [1.0] * 5, [1.0] * 5)
    for policy in (EpsilonGreedy(1.0), Softmax(10.0), Thompson(50)):
        for seed in range(200):
            placed = rank(cands, scores, 3, policy, random.Random(seed), thompson=post, seed=seed)
            assert [(p.index, p.propensity) for p in placed[:2]] == [(3, 1.0), (1, 1.0)]


def test_capped_campaigns_are_never_placed_by_exploration():
    # index 1 is capped and in greedy's top 3 (position 2); index 4 is capped and is not
    cands = [COMMERCIAL, CAPPED, COMMERCIAL, COMMERCIAL, CAPPED, COMMERCIAL]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    post = BetaScores([2.0] * 6, [5.0] * 6, [1.0] * 6)
    n = 3_000
    for policy in (EpsilonGreedy(1.0), Softmax(0.2), Thompson(100)):
        rng = random.Random(5)
        draws = [rank(cands, scores, 3, policy, rng, thompson=post, seed=s) for s in range(n)]
        counts, logged = tally(draws)
        assert counts[1, 2] == n
        assert logged[1, 2] == {1.0}
        assert not any(i == 4 for i, _ in counts)
        assert not any(i == 1 and pos != 2 for i, pos in counts)
        if isinstance(policy, EpsilonGreedy):
            props = {k: next(iter(v)) for k, v in logged.items()}
            for position in (1, 3):
                column = [p for (i, pos), p in props.items() if pos == position]
                assert math.fsum(column) == pytest.approx(1.0)
                assert len(column) == 4  # the explorable pool: 0, 2, 3, 5
            assert_matches_frequencies(counts, props, n)


THOMPSON_POSTERIORS = [
    BetaScores([3.0, 2.0, 2.0, 1.0], [20.0, 20.0, 15.0, 20.0], [1.0, 1.0, 1.0, 2.0]),
    GaussianScores([-2.0, -2.2, -1.9, -4.0], [0.6, 0.8, 0.3, 0.05], [1.0, 1.0, 0.8, 2.0]),
]


@pytest.mark.parametrize("post", THOMPSON_POSTERIORS, ids=["beta", "gaussian"])
@pytest.mark.parametrize("k", [1, 2])
def test_thompson_propensities_are_exact_for_the_decisions_samples(
    post: BetaScores | GaussianScores, k: int
) -> None:
    """A decision's samples (its seed) fixed, the sample ranked by is the only chance left:
    each (item, rank) always logs the same share of the samples, every share is a multiple
    of 1 / n_sim, the shares at a rank add up to exactly 1 over what can land there, and
    how often each lands there matches its share."""
    cands = [COMMERCIAL] * 4
    scores = [0.1, 0.09, 0.08, 0.01]  # Thompson ranks by draws; greedy order for `explored`
    n_sim, n = 200, 4_000
    for seed in (3, 99):
        one = rank(cands, scores, k, Thompson(n_sim), random.Random(7), thompson=post, seed=seed)
        again = rank(cands, scores, k, Thompson(n_sim), random.Random(7), thompson=post, seed=seed)
        assert one == again  # reproducible from the decision id and the rng
        rng = random.Random(seed)
        draws = [
            rank(cands, scores, k, Thompson(n_sim), rng, thompson=post, seed=seed) for _ in range(n)
        ]
        counts, logged = tally(draws)
        assert all(len(v) == 1 for v in logged.values())  # one exact value per (item, rank)
        props = {key: next(iter(v)) for key, v in logged.items()}
        for p in props.values():
            assert p * n_sim == pytest.approx(round(p * n_sim))
            assert p >= 1 / n_sim
        for position in range(1, k + 1):
            column = [p for (_, pos), p in props.items() if pos == position]
            assert math.fsum(column) == pytest.approx(1.0, abs=1e-12)
        assert all(pl.propensity_kind is PropensityKind.EXACT for placed in draws for pl in placed)
        assert_matches_frequencies(counts, props, n)
        assert len(props) > k  # the posteriors overlap: more than one order is possible


def test_thompson_draws_only_items_in_contention_and_stays_exact() -> None:
    """An item that could reach the slot only by a draw more than 6 standard deviations out
    is not drawn: the decision is the one made without it in the pool (the same samples,
    the same pick, the same propensities), while an item just inside the bar is drawn and
    changes the samples. A lone contender is certain."""
    mean, sd, scale = [-1.0, -1.1, -1.2], [0.3, 0.3, 0.3], [1.0, 1.0, 1.0]
    # the bar: the best score at -6 sd is sigmoid(-2.8); an item at mean -4.5 reaches
    # sigmoid(-3.3) at +6 sd (below: out), at mean -3.0 it reaches sigmoid(-1.8) (in)
    without = GaussianScores(mean, sd, scale)
    out = GaussianScores([*mean, -4.5], [*sd, 0.2], [*scale, 1.0])
    inside = GaussianScores([*mean, -3.0], [*sd, 0.2], [*scale, 1.0])
    cands, scores = [COMMERCIAL] * 4, [0.3, 0.2, 0.1, 0.0]

    def run(post: GaussianScores, n: int, seed: int) -> list[tuple[int, float]]:
        placed = rank(
            cands[:n], scores[:n], 1, Thompson(100), random.Random(seed), thompson=post, seed=seed
        )
        return [(p.index, p.propensity) for p in placed]

    for seed in range(50):
        assert run(out, 4, seed) == run(without, 3, seed)
    assert any(run(inside, 4, seed) != run(without, 3, seed) for seed in range(50))
    lone = GaussianScores([-1.0, -9.0], [0.3, 0.3], [1.0, 1.0])
    (only,) = rank(cands[:2], [0.3, 0.0], 1, Thompson(100), random.Random(1), thompson=lone)
    assert (only.index, only.propensity, only.propensity_kind) == (0, 1.0, PropensityKind.EXACT)


def test_thompson_follows_the_posterior_across_decisions() -> None:
    """Over many decisions (seeds), the item ranked first is the posterior's: the share of
    decisions each item leads is close to its marginal probability of the highest draw."""
    post = THOMPSON_POSTERIORS[1]
    cands = [COMMERCIAL] * 4
    n = 3_000
    rng = random.Random(8)
    firsts = Counter(
        rank(cands, [0.1] * 4, 1, Thompson(50), rng, thompson=post, seed=s)[0].index
        for s in range(n)
    )
    gen = np.random.default_rng(1)
    z = gen.normal(post.mean, post.sd, size=(200_000, 4))
    best = np.argmax(np.asarray(post.scale) / (1.0 + np.exp(-z)), axis=1)
    for i in range(4):
        p = float(np.mean(best == i))
        assert firsts[i] / n == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n) + 1e-3), i


def test_thompson_single_pool_item_is_certain():
    placed = rank(
        [SERVICE, COMMERCIAL],
        [0.5, 0.1],
        2,
        Thompson(),
        random.Random(0),
        thompson=BetaScores([1.0, 1.0], [1.0, 9.0], [1.0, 1.0]),
    )
    assert [(p.index, p.propensity, p.propensity_kind) for p in placed] == [
        (0, 1.0, PropensityKind.EXACT),
        (1, 1.0, PropensityKind.EXACT),
    ]


def test_a_new_campaign_explores_at_once_then_waits_until_its_share_allows_the_next():
    budget = ExplorationBudget(max_share=0.1)
    assert budget.explorable(None)
    assert budget.explorable("c1")  # never explored: may be at once, or it never would be
    budget.record("c1", True)
    assert budget.share("c1") == 1.0
    # the next exploration must keep the share at 0.1: 2 of 20 impressions
    for shown in range(1, 19):
        assert not budget.explorable("c1"), shown
        budget.record("c1", False)
    assert budget.counts() == {"c1": (19, 1)}
    assert budget.explorable("c1")
    budget.record("c1", True)
    assert budget.share("c1") == 0.1
    rng = random.Random(9)
    for _ in range(3_000):
        ok = budget.explorable("c1")
        cands = [RankEntry(explorable=ok)] * 4
        (placed,) = rank(cands, [0.4, 0.3, 0.2, 0.1], 1, EpsilonGreedy(0.5), rng)
        budget.record("c1", placed.explored)
        assert budget.share("c1") <= 0.1
    assert budget.share("c1") > 0.08
    budget.record(None, True)  # uncapped: not counted
    assert budget.share("nobody") == 0.0
    assert "nobody" not in budget.counts()


def test_an_exploration_share_of_0_never_explores_and_of_1_always_may():
    never, always = ExplorationBudget(max_share=0.0), ExplorationBudget(max_share=1.0)
    for explored in (False, True, False):
        assert not never.explorable("c1")
        assert always.explorable("c1")
        never.record("c1", False)
        always.record("c1", explored)
    assert never.counts() == {"c1": (3, 0)}
    assert always.counts() == {"c1": (3, 1)}


def test_bad_calls_are_refused():
    with pytest.raises(ValidationError):
        rank([COMMERCIAL], [0.1, 0.2], 1, Greedy(), random.Random(0))
    with pytest.raises(ValidationError):
        rank([COMMERCIAL] * 2, [0.1, 0.2], 1, Thompson(), random.Random(0))
    with pytest.raises(ValueError, match="epsilon"):
        EpsilonGreedy(1.5)
    with pytest.raises(ValueError, match="temperature"):
        Softmax(0.0)
    with pytest.raises(ValueError, match="n_sim"):
        Thompson(0)
    with pytest.raises(ValidationError):
        ExplorationBudget(2.0)


def test_policies_decode_from_config():
    policy = msgspec.json.decode(b'{"type": "epsilon_greedy", "epsilon": 0.1}', type=Policy)
    assert policy == EpsilonGreedy(0.1)
    assert msgspec.json.decode(b'{"type": "thompson"}', type=Policy) == Thompson(200)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"type": "softmax", "temperature": -1}', type=Policy)


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[RankEntry], list[float], int, Policy, int]:
    n = draw(st.integers(0, 9))
    cands = [
        RankEntry(urgent=draw(st.booleans()), explorable=draw(st.booleans())) for _ in range(n)
    ]
    scores = [draw(st.floats(0.0, 5.0)) for _ in range(n)]
    k = draw(st.integers(0, 6))
    policy = draw(
        st.sampled_from(
            [
                Greedy(),
                EpsilonGreedy(0.0),
                EpsilonGreedy(0.3),
                EpsilonGreedy(1.0),
                Softmax(0.05),
                Softmax(1.0),
                Softmax(1.0, exact_budget=0),
                Thompson(20),
                Thompson(20, uniform=0.3),
                Thompson(20, uniform=1.0),
            ]
        )
    )
    return cands, scores, k, policy, draw(st.integers(0, 2**32))


@settings(max_examples=300, deadline=None)
@given(situations())
def test_every_ranking_is_well_formed(
    situation: tuple[list[RankEntry], list[float], int, Policy, int],
):
    cands, scores, k, policy, seed = situation
    post = BetaScores([1.0 + s for s in scores], [10.0] * len(scores), [1.0] * len(scores))
    placed = rank(cands, scores, k, policy, random.Random(seed), thompson=post, seed=seed)
    assert [p.position for p in placed] == list(range(1, min(k, len(cands)) + 1))
    assert len({p.index for p in placed}) == len(placed)
    services = [p for p in placed if cands[p.index].urgent]
    assert placed[: len(services)] == services  # service messages first
    greedy = rank(cands, scores, k, Greedy(), random.Random(0))
    for p, g in zip(placed, greedy, strict=True):
        assert 0.0 < p.propensity <= 1.0
        if cands[p.index].urgent or not cands[p.index].explorable:
            assert (p.index, p.propensity, p.explored) == (g.index, 1.0, False)
        if not cands[g.index].explorable:  # a capped item keeps its greedy slot
            assert p.index == g.index
        assert p.explored == (p.index != g.index)


def test_seed_of_is_stable():
    assert seed_of("d000001") == seed_of("d000001") == 11188689003864588404
    assert seed_of("d000002") != seed_of("d000001")


@pytest.mark.parametrize("k", [1, 2])
def test_thompson_with_a_uniform_share_gives_every_item_support_and_stays_exact(k: int) -> None:
    """With ``uniform`` 0.1, a decision's samples fixed: an item no sample ranks (the fifth,
    far out of contention) still lands at every rank, with propensity exactly 0.1 / 5; every
    (item, rank) logs one value, ``0.1 / 5 + 0.9 x`` its share of the samples; the values
    at a rank add up to 1 over the whole pool; and they match how often each lands there."""
    post = GaussianScores(
        [-2.0, -2.2, -1.9, -4.0, -30.0], [0.6, 0.8, 0.3, 0.05, 0.01], [1.0, 1.0, 0.8, 2.0, 1.0]
    )
    cands, scores = [COMMERCIAL] * 5, [0.1, 0.09, 0.08, 0.01, 0.0]
    policy, n_sim, n = Thompson(n_sim=100, uniform=0.1), 100, 6_000
    rng = random.Random(12)
    draws = [rank(cands, scores, k, policy, rng, thompson=post, seed=41) for _ in range(n)]
    counts, logged = tally(draws)
    assert all(len(v) == 1 for v in logged.values())
    props = {key: next(iter(v)) for key, v in logged.items()}
    for p in props.values():
        share = (p - 0.1 / 5) / 0.9
        assert share * n_sim == pytest.approx(round(share * n_sim), abs=1e-9)
    for position in range(1, k + 1):
        column = [p for (_, pos), p in props.items() if pos == position]
        assert len(column) == 5  # every pool item, the one no sample ranks included
        assert math.fsum(column) == pytest.approx(1.0, abs=1e-12)
        assert props[4, position] == pytest.approx(0.1 / 5, abs=1e-15)
    assert_matches_frequencies(counts, props, n)


def test_thompson_uniform_is_checked_and_replayed_exactly_offline() -> None:
    with pytest.raises(ValueError, match="uniform"):
        Thompson(uniform=1.5)
    (first,) = marginals(Thompson(uniform=0.2), [0.3, 0.2, 0.1, 0.0], 1)
    assert first == pytest.approx({0: 0.85, 1: 0.05, 2: 0.05, 3: 0.05})
    assert marginals(Thompson(), [0.3, 0.2], 2) == [{0: 1.0}, {1: 1.0}]


@pytest.mark.parametrize("uniform", [0.0, 0.05, 0.3, 1.0])
def test_thompson_places_a_lone_pool_item_with_certainty(uniform: float) -> None:
    post = GaussianScores([-1.0, -9.0], [0.3, 0.3], [1.0, 1.0])
    for seed in range(20):
        placed = rank(
            [COMMERCIAL, SERVICE],
            [0.3, 0.5],
            2,
            Thompson(100, uniform=uniform),
            random.Random(seed),
            thompson=post,
            seed=seed,
        )
        assert [(p.index, p.propensity) for p in placed] == [(1, 1.0), (0, 1.0)]


def random_pool(
    gen: random.Random, kind: str, most: int
) -> tuple[BetaScores | GaussianScores, list[RankEntry], list[float], int, int]:
    """A random Thompson ranking case: the posteriors (``kind``: beta or gaussian; a
    Gaussian's spreads now and then tight enough to leave far-off items out of contention),
    up to ``most`` candidates (some urgent, some pinned), greedy scores, slots and a seed."""
    n = gen.randint(1, most)
    scale = [gen.uniform(0.5, 2.0) for _ in range(n)]
    post: BetaScores | GaussianScores = (
        BetaScores(
            [gen.uniform(0.5, 5.0) for _ in range(n)],
            [gen.uniform(5.0, 40.0) for _ in range(n)],
            scale,
        )
        if kind == "beta"
        else GaussianScores(
            [gen.uniform(-6.0, -1.0) for _ in range(n)],
            [gen.choice((0.01, 0.05, gen.uniform(0.01, 1.0))) for _ in range(n)],
            scale,
        )
    )
    cands = [RankEntry(urgent=gen.random() < 0.1, explorable=gen.random() < 0.9) for _ in range(n)]
    scores = [gen.random() for _ in range(n)]
    return post, cands, scores, gen.randint(1, 4), gen.getrandbits(64)


@pytest.mark.parametrize("uniform", [0.0, 0.3])
@pytest.mark.parametrize("kind", ["beta", "gaussian"])
def test_a_counterfactual_thompson_choice_is_the_real_one_without_its_propensities(
    uniform: float, kind: str
) -> None:
    """A control customer's counterfactual draws only up to the sample it ranks by: the same
    items in the same slots as the choice a treated customer gets from the same decision
    id (the draws fill the samples in order), its propensities not computed (NaN)."""
    gen = random.Random(5)
    not_computed = 0
    for trial in range(300):
        post, cands, scores, k, seed = random_pool(gen, kind, 12)
        policy = Thompson(n_sim=gen.choice([1, 20, 200]), uniform=uniform)
        real_rng, would_rng = random.Random(seed), random.Random(seed)
        real = rank(cands, scores, k, policy, real_rng, thompson=post, seed=seed)
        would = rank(
            cands, scores, k, policy, would_rng, thompson=post, seed=seed, counterfactual=True
        )
        assert would_rng.getstate() == real_rng.getstate()  # the same draws taken
        assert [(p.index, p.position) for p in would] == [(p.index, p.position) for p in real], (
            trial
        )
        for p, q in zip(would, real, strict=True):
            assert p.explored == q.explored
            assert p.propensity == q.propensity or math.isnan(p.propensity)
            not_computed += math.isnan(p.propensity)
    assert not_computed > 100  # most counterfactuals drew (a lone item or a pinned one need not)


@pytest.mark.parametrize("uniform", [0.0, 0.3])
@pytest.mark.parametrize("kind", ["beta", "gaussian"])
def test_a_counterfactual_watching_withheld_items_places_them_as_the_real_choice(
    uniform: float, kind: str
) -> None:
    """With ``watch`` (a control customer's withheld offers), the counterfactual puts each
    watched item where the real choice of the same decision id does (a slot, or none),
    drawing nothing when no sample could place one (none among the contenders): the other
    slots may then hold stand-ins."""
    gen = random.Random(11)
    skipped = 0
    drawn = [0]
    samples_top = explore._samples_top

    def counted(*args: Any, **kwargs: Any) -> Any:
        drawn[0] += 1
        return samples_top(*args, **kwargs)

    for trial in range(1_200):
        post, cands, scores, k, seed = random_pool(gen, kind, 14)
        n = len(cands)
        watch = {i for i in range(n) if gen.random() < 0.3}
        policy = Thompson(n_sim=gen.choice([1, 20, 200]), uniform=uniform)
        drawn[0] = 0
        with patch.object(explore, "_samples_top", counted):
            real = rank(cands, scores, k, policy, random.Random(seed), thompson=post, seed=seed)
            real_drew, drawn[0] = drawn[0], 0
            would = rank(
                cands,
                scores,
                k,
                policy,
                random.Random(seed),
                thompson=post,
                seed=seed,
                counterfactual=True,
                watch=watch,
            )
        placed = {p.index: p.position for p in would if p.index in watch}
        assert placed == {p.index: p.position for p in real if p.index in watch}, trial
        assert [p.position for p in would] == [p.position for p in real]
        skipped += real_drew and not drawn[0]
    # the shortcut ran where the real choice drew its samples: under a Gaussian posterior
    # often (far-off items are out of contention); under Beta only when every watched item
    # is urgent or pinned (nothing is out of contention)
    assert skipped > (100 if kind == "gaussian" else 10)
