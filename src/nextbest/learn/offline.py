"""Offline evaluation of a candidate catalog on the decision log (IPS, SNIPS, DR via ``ope``).

Each shown item of the log is one round: the offer shown (the action), its slot, its reward
(clicked, or converted) and the probability the logging policy put it there (its logged
propensity). For every logged decision the candidate catalog's policy is replayed on what was
logged: the same eligible candidates (eligibility is *not* re-evaluated: the profile at that
moment is not in the log), scored with the candidate's interest prior (its ``scoring``,
offer values, campaign weights and priorities) from the logged interest features, ordered
service first, with the candidate placement's exploration (epsilon-greedy: exact marginals;
softmax: exact Plackett-Luce marginals; Thompson sampling and greedy: the greedy order).
A learned model of the candidate is not retrained offline: what is evaluated is the
candidate's ranking rule.

The candidate's contact policy is replayed too, on the candidate's *own* impressions: the
logs show what the logging policy showed, but a candidate that keeps showing its favourites
meets its per-offer cap (3 a week in the example bank) and its daily commercial cap online,
and then shows its next choices. So each customer's decisions are replayed in time order,
the candidate's marginals counted as its impressions, and an offer it has shown ``count``
times (in expectation, for an exploring candidate) within ``days`` is taken out of its
candidates, as the engine would. Rests after a click or a dismissal are not replayed (the
candidate's clicks are not in the logs).

A slot the candidate leaves empty (fewer candidates than slots) is the action ``(none)``,
worth 0. The reward model of DR is the logs' own smoothed rate per (offer, slot). Memory is
linear in the rows (the candidate's distribution is kept per row as the offers it can put
in that row's slot), so a week of a bank's logs fits; the estimates are ``ope.estimate``'s
on the dense arrays (``tests/unit/test_offline.py`` checks this).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import groupby

import msgspec
import numpy as np

from nextbest.catalog.load import Catalog, CompiledOffer
from nextbest.catalog.model import OfferKind
from nextbest.decide.score import click_prior
from nextbest.errors import ValidationError
from nextbest.learn.explore import EpsilonGreedy, Softmax, plackett_luce_marginals
from nextbest.learn.logs import LoggedItem
from nextbest.learn.ope import Estimate, Estimator, estimate_rows

__all__ = ["NONE", "OfflineReport", "Reward", "evaluate_candidate"]

#: the action of a slot the candidate leaves empty
NONE = "(none)"
#: prior strength (pseudo-rounds) of the DR reward model's per (offer, slot) rates
_SMOOTHING = 20.0
_DAY = 86_400.0
#: an expected impression count within this of a cap reaches it
_EPS = 1e-9


class Reward(msgspec.Struct, frozen=True, kw_only=True):
    """The estimates for one reward (clicks or conversions) per shown slot."""

    reward: str
    logged: float
    estimates: list[Estimate]


class OfflineReport(msgspec.Struct, frozen=True, kw_only=True):
    candidate: str
    decisions: int
    rounds: int
    actions: int
    slots: int
    rewards: list[Reward]
    #: decisions where the candidate's contact caps, replayed on its own impressions, held
    #: back offers that were logged as candidates
    capped_decisions: int = 0
    #: what the figures cannot vouch for (estimated propensities in the logs, ...)
    warnings: list[str] = []


def _marginals(
    catalog: Catalog, placement: str, candidates: Sequence[str], features: dict[str, float]
) -> list[dict[str, float]]:
    """P(offer in slot r) for r = 0 .. slots-1 under the candidate catalog's policy."""
    spec = catalog.placements.get(placement)
    if spec is None:
        return []
    allowed = {o.id for o in catalog.by_placement[placement]}
    scoring = catalog.scoring
    ranked: list[tuple[int, float, int, str, CompiledOffer]] = []
    for oid in candidates:
        offer = catalog.offers.get(oid)
        if offer is None or oid not in allowed:
            continue
        s = 0.0
        if offer.topic is not None:
            s = math.expm1(features.get(f"interest:{offer.topic}", 0.0))
        p = click_prior(offer.base_ctr, s, scoring.interest_lift, scoring.half_saturation)
        score = p * offer.spec.value * offer.weight
        first = 0 if offer.kind is OfferKind.SERVICE else 1
        ranked.append((first, -score, -offer.spec.priority, oid, offer))
    ranked.sort(key=lambda r: r[:4])
    service = [r[3] for r in ranked if r[0] == 0][: spec.slots]
    commercial = [r for r in ranked if r[0] == 1]
    out: list[dict[str, float]] = [{oid: 1.0} for oid in service]
    free = min(spec.slots - len(service), len(commercial))
    policy = spec.learning.explore if spec.learning is not None else None
    ids = [r[3] for r in commercial]
    if free > 0 and isinstance(policy, EpsilonGreedy):
        eps, n = policy.epsilon, len(ids)
        for r in range(free):
            out.append({oid: eps / n + (1.0 - eps if k == r else 0.0) for k, oid in enumerate(ids)})
    elif free > 0 and isinstance(policy, Softmax):
        best = -commercial[0][1]
        # floored as the live policy floors them: no weight underflows to 0
        weights = [math.exp(max((-c[1] - best) / policy.temperature, -700.0)) for c in commercial]
        marg = plackett_luce_marginals(weights, free)
        for r in range(free):
            out.append({oid: marg[r][k] for k, oid in enumerate(ids)})
    else:
        out.extend({oid: 1.0} for oid in ids[:free])
    return out


class _Exposures:
    """The candidate's own impressions of each offer to each customer, as the replay goes:
    its contact policy (per-offer cap, daily commercial cap) blocks what it would have
    blocked online. A stochastic candidate's impressions are its marginal probabilities
    (expected counts), so an offer is blocked once its expected count reaches the cap."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.shown: dict[str, dict[str, list[tuple[float, float]]]] = {}

    def blocked(self, customer: str, now: float) -> set[str]:
        """Commercial offers the candidate's contact policy holds back at ``now`` (impressions
        strictly before ``now``: a page's own decisions do not cap each other)."""
        history = self.shown.get(customer)
        if not history:
            return set()
        policy = self.catalog.policy
        cap = policy.per_offer
        since = now - cap.days * _DAY
        today = now - _DAY
        horizon = min(since, today)
        out: set[str] = set()
        day_total = 0.0
        for oid, hits in history.items():
            if hits and hits[0][0] < horizon:  # in time order: forget what no cap looks at
                hits[:] = [(t, w) for t, w in hits if t >= horizon]
            week = sum(w for t, w in hits if since <= t < now)
            if week >= cap.count - _EPS:
                out.add(oid)
            day_total += sum(w for t, w in hits if today <= t < now)
        if day_total >= policy.per_day_commercial - _EPS:
            out.update(self.catalog.commercial_offers)
        return out

    def record(self, customer: str, now: float, marginals: list[dict[str, float]]) -> None:
        commercial = self.catalog.commercial_offers
        history = self.shown.setdefault(customer, {})
        for slot in marginals:
            for oid, p in slot.items():
                if oid in commercial and p > 0.0:
                    history.setdefault(oid, []).append((now, p))


def evaluate_candidate(
    items: Sequence[LoggedItem],
    catalog: Catalog,
    *,
    random_state: int = 12345,
    n_bootstrap: int = 1000,
    replay_caps: bool = True,
) -> OfflineReport:
    """IPS, SNIPS and DR estimates of the candidate's click and conversion rate per slot.
    ``replay_caps=False`` leaves the candidate's contact caps out of the replay."""
    rows = sorted(items, key=lambda i: (i.timestamp, i.decision_id, i.position))
    if not rows:
        raise ValidationError("no logged items to evaluate (is the period empty?)", "$.logs")
    offers = sorted({i.offer_id for i in rows} | set(catalog.offers) | {NONE})
    index = {oid: k for k, oid in enumerate(offers)}
    slots = max(max(i.position for i in rows), *(p.slots for p in catalog.placements.values()))
    n = len(rows)
    action = np.fromiter((index[i.offer_id] for i in rows), dtype=np.int64, count=n)
    position = np.fromiter((i.position - 1 for i in rows), dtype=np.int64, count=n)
    pscore = np.fromiter((i.propensity for i in rows), dtype=np.float64, count=n)
    bad = np.flatnonzero(~((pscore > 0.0) & (pscore <= 1.0)))
    if bad.size:
        row = rows[int(bad[0])]
        raise ValidationError(
            f"logged propensity must be in (0, 1], got {row.propensity} "
            f"(decision {row.decision_id}, offer {row.offer_id})",
            "$.logs.propensity",
        )
    # the candidate's distribution at each row's position, sparse: (row, action, probability)
    # entries, never a dense rows x offers x slots array (a week of a bank's logs is millions
    # of rows); its contact caps applied to its own replayed impressions
    entry_row: list[int] = []
    entry_action: list[int] = []
    entry_prob: list[float] = []
    exposures = _Exposures(catalog)
    capped = 0
    decisions = 0
    start = 0
    for _, group in groupby(rows, key=lambda i: i.decision_id):
        members = list(group)
        first = members[0]
        blocked = exposures.blocked(first.customer_id, first.timestamp) if replay_caps else ()
        candidates = first.candidates
        if blocked:
            candidates = [c for c in candidates if c not in blocked]
            capped += len(candidates) < len(first.candidates)
        marg = _marginals(catalog, first.placement, candidates, first.features)
        exposures.record(first.customer_id, first.timestamp, marg)
        for k, item in enumerate(members, start):
            r = item.position - 1
            for oid, p in (marg[r] if r < len(marg) else {NONE: 1.0}).items():
                entry_row.append(k)
                entry_action.append(index[oid])
                entry_prob.append(p)
        start += len(members)
        decisions += 1
    e_row = np.asarray(entry_row, dtype=np.int64)
    e_action = np.asarray(entry_action, dtype=np.int64)
    e_prob = np.asarray(entry_prob, dtype=np.float64)
    e_position = position[e_row]
    chosen = e_action == action[e_row]
    weight = np.bincount(e_row[chosen], weights=e_prob[chosen], minlength=n) / pscore
    seen = np.zeros((len(offers), slots), dtype=bool)
    seen[action, position] = True
    unsupported = np.bincount(e_row, weights=e_prob * ~seen[e_action, e_position], minlength=n)

    rewards: list[Reward] = []
    for name, values in (
        ("click", [float(i.clicked) for i in rows]),
        ("conversion", [float(i.converted) for i in rows]),
    ):
        reward = np.asarray(values)
        base = float(reward.mean())
        sums = np.zeros((len(offers), slots))
        counts = np.zeros((len(offers), slots))
        np.add.at(sums, (action, position), reward)
        np.add.at(counts, (action, position), 1.0)
        model = (sums + _SMOOTHING * base) / (counts + _SMOOTHING)
        model[index[NONE], :] = 0.0
        direct = np.bincount(e_row, weights=e_prob * model[e_action, e_position], minlength=n)
        estimates = [
            estimate_rows(
                estimator,
                reward=reward,
                weight=weight,
                unsupported=unsupported,
                direct=direct,
                factual=model[action, position],
                random_state=random_state,
                n_bootstrap=n_bootstrap,
            )
            for estimator in (Estimator.IPS, Estimator.SNIPS, Estimator.DR)
        ]
        rewards.append(Reward(reward=name, logged=base, estimates=estimates))
    not_exact = sum(1 for i in rows if i.propensity_kind != "exact")
    warnings: list[str] = []
    if not_exact:
        warnings.append(
            f"{not_exact} of {n} logged propensities are estimates (Thompson sampling's Monte "
            "Carlo or sequential softmax), not exact marginals: IPS/SNIPS/DR may be biased"
        )
    return OfflineReport(
        warnings=warnings,
        candidate=catalog.source,
        decisions=decisions,
        capped_decisions=capped,
        rounds=n,
        actions=len(offers),
        slots=slots,
        rewards=rewards,
    )
