"""Ranking with exploration, and the probability with which each item was placed.

``rank`` fills ``k`` slots from scored candidates and returns, for every item placed, the
probability that the policy would have put that item in that position (its propensity), so
off-policy evaluation can reweight the logs. Randomness comes from the ``random.Random``
passed in (and, for Thompson sampling's samples, from a seed); nothing else.

**Urgent messages** (``RankEntry.urgent``: a service message whose trigger holds,
``decide.ranking.rank_key``) come first, by score, with propensity 1: they are never
explored away.

**The other slots.** The greedy ranking ``G`` is the top other candidates by score
(ties by index). A candidate marked ``explorable=False`` (its campaign is over its
exploration share, see ``ExplorationBudget``) is *pinned*: it is placed exactly where ``G``
places it, with propensity 1, and never anywhere else. The other slots of ``G`` (the *free*
slots, ``f`` of them) are filled by the policy from the *pool*: every explorable commercial
candidate (``n`` of them). The pool's greedy order for the free slots is ``G`` without the
pinned items, since those are the pool's top ``f``. Propensities are then those of an
ordered choice of ``f`` items out of ``n``; rank ``r`` below means the ``r``-th free slot.

- ``Greedy``: ``G``; propensity 1 (exact).
- ``EpsilonGreedy(epsilon)``: with probability ``1 - epsilon`` the greedy order, else a
  uniformly random ordering of the pool. ``P(i at rank r) = (1 - epsilon) [G_r = i] +
  epsilon / n``, exact.
- ``Softmax(temperature)``: Plackett-Luce, i.e. draw without replacement with probability
  proportional to ``exp(score / temperature)``. The marginal ``P(i at rank r)`` is exact,
  summed over every ordered prefix, while that costs at most ``exact_budget`` steps
  (``n * sum_{d<f} n!/(n-d)!``: n <= 8 with f <= 3 is 520; n = 20 with f = 2 is 420).
  Past the budget, rank 1 stays exact and lower ranks log the *sequential* conditional
  ``P(i at rank r | the items above it)``, with ``propensity_kind = "sequential"``: not a
  marginal, so slot-level IPS must not use it as one.
- ``Thompson(n_sim)``: each pool item's score is ``scale_i * Beta(a_i, b_i)`` (the Bayes
  model's posterior times value and weight, ``BetaScores``) or ``scale_i * sigmoid(N(m_i,
  s_i^2))`` (a logistic model's score posterior, ``GaussianScores``). A decision draws
  ``n_sim`` joint samples of the pool's scores from ``numpy.random.default_rng(seed)``
  (pass ``seed_of(decision_id)``) and ranks the pool by one of them, chosen uniformly with
  ``rng``: every sample is a draw from the posterior, so the choice is Thompson sampling's.
  The propensity is then **exact** for the policy that ran: the share of the ``n_sim``
  samples that put the item at that rank (at least ``1 / n_sim``, since the sample used is
  one of them), reproducible from the decision id (the sample ranked by is picked by
  ``rng``, a stream of its own). It is conditional on the decision's samples, as a
  bootstrap's is on its bags: a ranking that none of the samples makes had probability 0
  in that decision, so IPS gives a candidate's choice there weight 0 and is biased low by
  the candidate's share of such choices (a choice of marginal probability ``p`` is missing
  from a decision's samples with probability ``(1 - p)^n_sim``: 0.13 for ``p`` 0.01 at
  200); DR's reward model fills those in. No closed form gives the marginal over the
  posterior itself (a multivariate orthant probability), and quadrature is neither cheap
  nor exact where a confident offer's score is a near-step; this policy's propensities need
  neither. Items that could reach a free slot only by a draw ``CONTENTION_SIGMAS`` (6)
  standard deviations out are not drawn (``_contenders``). Logs written before this carry
  ``propensity_kind = "monte_carlo"`` (an estimate of the marginal). With ``uniform`` above
  0, that share of decisions orders the pool uniformly at random instead (``rng``), and
  every item's propensity is ``uniform / n + (1 - uniform) x`` its share of the samples,
  still exact: at least ``uniform / n``, so every ordering of the explorable pool has
  support (choices the policy could never make, such as moving a pinned item, still have
  none).

Every ``Placed`` says whether the item is where greedy would have put it (``explored``
false), which is what ``ExplorationBudget`` counts.

``marginals`` gives, for a pool in greedy order, every item's probability at every free
rank under a policy: the same probabilities ``rank`` logs (exact for greedy, epsilon-greedy
and softmax; Thompson sampling, with no closed form, as greedy). Offline evaluation replays
a candidate's exploration with it, and its report warns where that replays Thompson sampling
as greedy.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence, Set

import msgspec
import numpy as np
import numpy.typing as npt

from nextbest.catalog.model import EpsilonGreedy, Greedy, Policy, Softmax, Thompson
from nextbest.decide.model import PropensityKind
from nextbest.errors import ValidationError

__all__ = [
    "CONTENTION_SIGMAS",
    "BetaScores",
    "EpsilonGreedy",
    "ExplorationBudget",
    "GaussianScores",
    "Greedy",
    "Placed",
    "Policy",
    "RankEntry",
    "Softmax",
    "Thompson",
    "marginals",
    "plackett_luce_marginals",
    "rank",
    "seed_of",
]


class RankEntry(msgspec.Struct, frozen=True, gc=False):
    """What ``rank`` needs to know of a candidate besides its score. ``urgent``: ranked
    first, never explored (``decide.ranking.rank_key``); ``explorable``: its campaign may
    still be explored (``ExplorationBudget.explorable``)."""

    urgent: bool = False
    explorable: bool = True


class BetaScores(msgspec.Struct, frozen=True, gc=False):
    """Thompson sampling's score of candidate ``i``: ``scale[i] * Beta(alpha[i], beta[i])``."""

    alpha: Sequence[float]
    beta: Sequence[float]
    scale: Sequence[float]


class GaussianScores(msgspec.Struct, frozen=True, gc=False):
    """Thompson sampling's score of candidate ``i``: ``scale[i] * sigmoid(z)`` with ``z``
    drawn from ``N(mean[i], sd[i]^2)`` (a Bayesian logistic model's score posterior)."""

    mean: Sequence[float]
    sd: Sequence[float]
    scale: Sequence[float]


class Placed(msgspec.Struct, frozen=True, gc=False):
    """Candidate ``index`` is shown at ``position`` (1-based), chosen with ``propensity``."""

    index: int
    position: int
    propensity: float
    propensity_kind: PropensityKind
    explored: bool


def rank(
    candidates: Sequence[RankEntry],
    scores: Sequence[float],
    k: int,
    policy: Policy,
    rng: random.Random,
    *,
    thompson: BetaScores | GaussianScores | None = None,
    seed: int = 0,
    counterfactual: bool = False,
    watch: Set[int] | None = None,
) -> list[Placed]:
    """Up to ``k`` items with their propensities (see the module docstring).

    ``scores`` are the greedy scores (for Thompson sampling, the posterior means times the
    same scale); ``thompson`` is required with ``Thompson``; ``seed`` seeds its samples.
    ``counterfactual``: only the choice is wanted (where a control customer's withheld
    offers would have landed, never logged): the same items as without it, but Thompson
    sampling draws only up to the sample it ranks by and counts no shares, so the
    propensities of the items it places are NaN (not computed; those it knows without the
    samples, a lone contender's, an urgent or a pinned item's, or every decision's at
    ``uniform`` 1, are as without it). ``watch`` (with ``counterfactual``): the candidates
    whose places alone are wanted (the withheld ones). When no sample can place any of them
    (none is among the contenders, ``_contenders``), nothing is drawn: they are placed
    where they would be (nowhere, or their urgent or pinned slot), and the free slots hold
    the contenders in greedy order, which stand in for the sample's items.
    """
    n_all = len(candidates)
    if len(scores) != n_all:
        raise ValidationError(f"{len(scores)} scores for {n_all} candidates", "$.scores")
    if k < 0:
        raise ValidationError(f"k must be at least 0, got {k}", "$.k")

    def by_score(i: int) -> tuple[float, int]:
        return (-scores[i], i)

    urgent = sorted((i for i in range(n_all) if candidates[i].urgent), key=by_score)
    out = [Placed(i, p, 1.0, PropensityKind.EXACT, False) for p, i in enumerate(urgent[:k], 1)]
    slots = k - len(out)
    if slots <= 0:
        return out
    others = sorted((i for i in range(n_all) if not candidates[i].urgent), key=by_score)
    greedy = others[:slots]
    free = [r for r, i in enumerate(greedy) if candidates[i].explorable]
    chosen: list[int] = [greedy[r] for r in free]
    props: list[float] = [1.0] * len(free)
    kinds: list[PropensityKind] = [PropensityKind.EXACT] * len(free)
    if free and not isinstance(policy, Greedy):
        pool = [i for i in others if candidates[i].explorable]
        if isinstance(policy, EpsilonGreedy):
            chosen, props = _epsilon_greedy(pool, len(free), policy.epsilon, rng)
        elif isinstance(policy, Softmax):
            chosen, props, kinds = _softmax(pool, scores, len(free), policy, rng)
        else:
            if thompson is None:
                raise ValidationError("Thompson sampling needs the posteriors", "$.thompson")
            chosen, props, kinds = _thompson(
                pool, len(free), thompson, policy, rng, seed, counterfactual, watch
            )
    first = len(out) + 1
    placed = dict(zip(free, zip(chosen, props, kinds, strict=True), strict=True))
    for r, g in enumerate(greedy):
        if r in placed:
            i, p, kind = placed[r]
            out.append(Placed(i, first + r, p, kind, i != g))
        else:
            out.append(Placed(g, first + r, 1.0, PropensityKind.EXACT, False))
    return out


def _epsilon_greedy(
    pool: list[int], f: int, epsilon: float, rng: random.Random
) -> tuple[list[int], list[float]]:
    greedy = pool[:f]
    n = len(pool)
    chosen = rng.sample(pool, f) if rng.random() < epsilon else greedy
    props = [_epsilon_propensity(epsilon, n, i == g) for i, g in zip(chosen, greedy, strict=True)]
    return chosen, props


def _epsilon_propensity(epsilon: float, n: int, greedy: bool) -> float:
    """Epsilon-greedy's probability of one of ``n`` pool items at a rank: ``epsilon / n``,
    plus ``1 - epsilon`` where greedy puts it."""
    return epsilon / n + (1.0 - epsilon if greedy else 0.0)


def _softmax_weights(scores: Sequence[float], temperature: float) -> list[float]:
    """``exp((score - best) / temperature)``, the exponents floored so that no weight is 0
    (exp(-700) is about 1e-304)."""
    top = max(scores)
    return [math.exp(max((s - top) / temperature, -700.0)) for s in scores]


def marginals(policy: Policy | None, scores: Sequence[float], f: int) -> list[dict[int, float]]:
    """``m[r][k]``: the probability that ``policy`` puts item ``k`` of a pool at free rank
    ``r`` (0-based, ``r < min(f, len(scores))``), the pool in greedy order (best first) with
    greedy ``scores``; items with no chance at a rank are left out. ``None`` (no learning)
    and Thompson sampling (no closed form) are the greedy order (Thompson sampling's
    ``uniform`` share mixed in, exactly, as epsilon-greedy's): the offline report
    (``learn.offline``) warns, naming the placement, where it replays Thompson sampling so."""
    n = len(scores)
    f = min(f, n)
    if f <= 0:
        return []
    if isinstance(policy, EpsilonGreedy | Thompson):
        eps = policy.epsilon if isinstance(policy, EpsilonGreedy) else policy.uniform
        if eps > 0.0:
            return [{k: _epsilon_propensity(eps, n, k == r) for k in range(n)} for r in range(f)]
    if isinstance(policy, Softmax):
        marg = plackett_luce_marginals(_softmax_weights(scores, policy.temperature), f)
        return [dict(enumerate(marg[r])) for r in range(f)]
    return [{r: 1.0} for r in range(f)]


def _softmax(
    pool: list[int], scores: Sequence[float], f: int, policy: Softmax, rng: random.Random
) -> tuple[list[int], list[float], list[PropensityKind]]:
    n = len(pool)
    weights = _softmax_weights([scores[i] for i in pool], policy.temperature)
    # sequential draw without replacement, remembering each conditional probability
    left = list(range(n))
    remaining = math.fsum(weights)
    picks: list[int] = []
    conditional: list[float] = []
    for _ in range(f):
        u = rng.random() * remaining
        j = left[-1]
        for cand in left:
            u -= weights[cand]
            if u < 0.0:
                j = cand
                break
        conditional.append(weights[j] / remaining)
        picks.append(j)
        left.remove(j)
        remaining = math.fsum(weights[c] for c in left)
    chosen = [pool[j] for j in picks]
    if _prefix_steps(n, f) <= policy.exact_budget:
        marginals = plackett_luce_marginals(weights, f)
        props = [min(1.0, marginals[r][j]) for r, j in enumerate(picks)]
        return chosen, props, [PropensityKind.EXACT] * f
    kinds = [PropensityKind.EXACT] + [PropensityKind.SEQUENTIAL] * (f - 1)
    return chosen, conditional, kinds


def _prefix_steps(n: int, f: int) -> int:
    """``n * sum_{d<f} n!/(n-d)!``: the work of ``plackett_luce_marginals``."""
    total, prefixes = 0, 1
    for d in range(f):
        total += prefixes * n
        prefixes *= n - d
    return total


def plackett_luce_marginals(weights: Sequence[float], f: int) -> list[list[float]]:
    """``m[r][i]``: the probability that Plackett-Luce sampling with ``weights`` puts item
    ``i`` at rank ``r`` (0-based, ``r < f``), summed over every ordered prefix."""
    n = len(weights)
    total = math.fsum(weights)
    marg = [[0.0] * n for _ in range(f)]
    used = [False] * n

    def visit(depth: int, prob: float, remaining: float) -> None:
        row = marg[depth]
        for i in range(n):
            if used[i]:
                continue
            p = prob * weights[i] / remaining
            row[i] += p
            if depth + 1 < f:
                used[i] = True
                rest = remaining - weights[i]
                if rest < remaining * 1e-4:  # cancellation would cost digits: sum exactly
                    rest = math.fsum(w for j, w in enumerate(weights) if not used[j])
                visit(depth + 1, p, rest)
                used[i] = False

    if f > 0 and n > 0:
        visit(0, 1.0, total)
    return marg


def _thompson(
    pool: list[int],
    f: int,
    post: BetaScores | GaussianScores,
    policy: Thompson,
    rng: random.Random,
    seed: int,
    counterfactual: bool = False,
    watch: Set[int] | None = None,
) -> tuple[list[int], list[float], list[PropensityKind]]:
    everyone, uniform, n_sim = pool, policy.uniform, policy.n_sim
    if isinstance(post, GaussianScores):
        pool = _contenders(pool, f, post)
    at_random = uniform > 0.0 and rng.random() < uniform
    if len(pool) == 1 and uniform == 0.0:  # one item (in contention), one free slot: certain
        return list(pool), [1.0], [PropensityKind.EXACT]
    if uniform == 1.0:  # every decision at random: the samples weigh nothing
        return rng.sample(everyone, f), [1.0 / len(everyone)] * f, [PropensityKind.EXACT] * f
    if counterfactual:  # the same choice, the propensities not computed
        if at_random:
            chosen = rng.sample(everyone, f)
        elif watch is not None and watch.isdisjoint(pool):
            rng.randrange(n_sim)  # the sample it would rank by: the same rng calls
            chosen = pool[:f]  # no sample places a watched item: no draw tells more
        else:
            top = _samples_top(pool, f, post, n_sim, seed, only=rng.randrange(n_sim))
            chosen = [pool[j] for j in top[0].tolist()]
        return chosen, [math.nan] * f, [PropensityKind.EXACT] * f
    tops = _samples_top(pool, f, post, n_sim, seed)
    if at_random:  # the chosen items' columns; -1 (no sample's) for an item not drawn
        chosen = rng.sample(everyone, f)
        column = {item: j for j, item in enumerate(pool)}
        picks = np.array([column.get(item, -1) for item in chosen])
    else:
        picks = tops[rng.randrange(n_sim)]
        chosen = [pool[j] for j in picks.tolist()]
    shares = np.count_nonzero(tops == picks, axis=0) / n_sim
    floor = uniform / len(everyone)  # with uniform 0: exactly the shares
    props = [floor + (1.0 - uniform) * s for s in shares.tolist()]
    return chosen, props, [PropensityKind.EXACT] * f


def _samples_top(
    pool: list[int],
    f: int,
    post: BetaScores | GaussianScores,
    n_sim: int,
    seed: int,
    only: int | None = None,
) -> npt.NDArray[np.intp]:
    """The top ``f`` (columns: positions in ``pool``) of each of ``n_sim`` joint posterior
    samples of the pool's scores, drawn from ``numpy.random.default_rng(seed)``; ties by
    pool order (the greedy order). The draws fill the samples in order from one stream, so
    sample ``j`` is the same whatever ``n_sim`` above ``j``: with ``only``, the top of that
    sample alone (one row), drawn up to it (a counterfactual choice's)."""
    n = len(pool)
    start = 0 if only is None else only  # the first sample returned
    if n == 1:
        return np.zeros((n_sim if only is None else 1, 1), dtype=np.intp)
    rows = n_sim if only is None else only + 1
    gen = np.random.default_rng(seed)
    scale = np.array([post.scale[i] for i in pool])
    if isinstance(post, BetaScores):
        alpha = np.array([post.alpha[i] for i in pool])
        beta = np.array([post.beta[i] for i in pool])
        draws = gen.beta(alpha, beta, size=(rows, n))[start:]
        draws *= scale
    else:
        z = gen.standard_normal((rows, n))[start:]
        z *= np.array([post.sd[i] for i in pool])
        z -= np.array([post.mean[i] for i in pool])  # -z: sigmoid(z) = 1 / (1 + exp(-z))
        np.minimum(z, 700.0, out=z)  # exp(700) is finite: no two low scores tie at a cap
        np.exp(z, out=z)
        z += 1.0
        draws = np.divide(scale, z, out=z)
    if f == 1:
        best: npt.NDArray[np.intp] = np.argmax(draws, axis=1)
        return best[:, None]
    return np.argsort(-draws, axis=1, kind="stable")[:, :f]


#: how far (in standard deviations of its level) a draw may take an item before it counts as
#: out of contention: beyond 6 the chance is below 1e-9 a draw (``_contenders``)
CONTENTION_SIGMAS = 6.0


def _contenders(pool: list[int], f: int, post: GaussianScores) -> list[int]:
    """The pool items that can reach the top ``f`` without a draw past ``CONTENTION_SIGMAS``:
    an item whose score at ``+CONTENTION_SIGMAS`` sd is below the ``f``-th best score at
    ``-CONTENTION_SIGMAS`` sd would need such a draw (its own, or one of those ``f``
    items'), so it is left out of the draws: Thompson sampling's choice changes with
    probability below ``(f + m) * 1e-9`` a decision for ``m`` items left out, and the draws
    cost what the contenders do, not the whole pool. A posterior that is not a number (a
    model's fault) leaves the pool as it is. (Plain floats: a pool is a few dozen items at
    most.)"""
    mean, sd, scale, exp = post.mean, post.sd, post.scale, math.exp
    low: list[float] = []
    high: list[float] = []
    for i in pool:  # scale * sigmoid(mean -/+ spread), the exponent capped against overflow
        m, d, c = mean[i], CONTENTION_SIGMAS * sd[i], scale[i]
        low.append(c / (1.0 + exp(min(d - m, 700.0))))
        high.append(c / (1.0 + exp(min(-m - d, 700.0))))
    bar = sorted(low, reverse=True)[f - 1]
    kept = [i for i, h in zip(pool, high, strict=True) if h >= bar]
    return kept if len(kept) >= f else pool


def seed_of(decision_id: str) -> int:
    """A stable 64-bit seed from a decision id (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(decision_id.encode(), digest_size=8).digest(), "big")


class ExplorationBudget:
    """Caps each campaign's share of explored impressions at ``max_share``.

    ``record`` every commercial item shown (``explored`` from ``Placed``); a campaign is
    ``explorable`` while one more explored impression keeps its share at or under
    ``max_share``. One decision may explore several of a campaign's items, so the share can
    pass the cap by at most the slots of one decision. Items without a campaign are not
    capped. Counts are kept since the budget was built: the engine saves them with its
    snapshot and counts the decisions logged after it at a restart.
    """

    __slots__ = ("_counts", "max_share")

    def __init__(self, max_share: float) -> None:
        if not 0.0 <= max_share <= 1.0:
            raise ValidationError(f"max_share must be within [0, 1], got {max_share}")
        self.max_share = max_share
        self._counts: dict[str, list[int]] = {}

    def explorable(self, campaign_id: str | None) -> bool:
        if campaign_id is None:
            return True
        shown, explored = self._counts.get(campaign_id, (0, 0))
        if self.max_share <= 0.0:
            return False
        # a campaign that was never explored may be, or a new campaign would never be
        return explored == 0 or explored + 1 <= self.max_share * (shown + 1)

    def record(self, campaign_id: str | None, explored: bool) -> None:
        if campaign_id is None:
            return
        counts = self._counts.get(campaign_id)
        if counts is None:
            counts = self._counts[campaign_id] = [0, 0]
        counts[0] += 1
        counts[1] += explored

    def counts(self) -> dict[str, tuple[int, int]]:
        """(shown, explored) per campaign: what a snapshot keeps."""
        return {c: (n[0], n[1]) for c, n in sorted(self._counts.items())}

    def load(self, counts: dict[str, tuple[int, int]]) -> None:
        self._counts = {c: [shown, explored] for c, (shown, explored) in counts.items()}

    def share(self, campaign_id: str) -> float:
        """The explored share of ``campaign_id``'s impressions so far."""
        shown, explored = self._counts.get(campaign_id, (0, 0))
        return explored / shown if shown else 0.0
