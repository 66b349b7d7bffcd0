"""Offline evaluation of a candidate catalog on the decision log (IPS, SNIPS, DR via ``ope``).

Each shown item of the log is one round: the offer shown (the action), its slot, its reward
(clicked, or converted) and the probability the logging policy put it there (its logged
propensity). For every logged decision the candidate catalog's policy is replayed on what was
logged: the same eligible candidates (eligibility is *not* re-evaluated: the profile at that
moment is not in the log), scored with the candidate's interest prior (its ``scoring``,
offer values, campaign weights and priorities) from the logged interest features, in the
engine's order (``decide.ranking``: service first), with the candidate placement's
exploration (``explore.marginals``; epsilon-greedy: exact marginals; softmax: exact
Plackett-Luce marginals; Thompson sampling and greedy: the greedy order, with Thompson
sampling's ``uniform`` share mixed in exactly). Thompson sampling has no closed form, so the
report warns, naming each such placement once, that its figures there are the greedy
policy's, not Thompson sampling's randomised choice.
A learned model of the candidate is not retrained offline: what is evaluated is the
candidate's ranking rule.

The candidate's contact policy is replayed too, on the candidate's *own* impressions: the
logs show what the logging policy showed, but a candidate that keeps showing its favourites
meets its per-offer cap (3 a week in the example bank) and its daily commercial cap online,
and then shows its next choices. So each customer's decisions are replayed in time order,
the candidate's marginals counted as its impressions, and an offer it has shown ``count``
times (in expectation, for an exploring candidate) within ``days`` is taken out of its
candidates, as the engine would (the thresholds are ``decide.ranking``'s). Rests after a
click or a dismissal are not replayed (the candidate's clicks are not in the logs).

A slot the candidate leaves empty (fewer candidates than slots) is the action ``(none)``,
worth 0. Memory is linear in the rows (the candidate's distribution is kept per row as the
offers it can put in that row's slot), so a week of a bank's logs fits.

**DR's reward model and wear-out.** Customers answer an offer less the more often they have
seen it (wear-out, or fatigue), so a candidate that repeats its favourites meets more
repeated impressions than the logs hold for the same offers: slot-level IPS credits it with
the fresher logged customers' clicks. DR's reward model therefore takes the number of
earlier impressions ``n`` of that offer to that customer within ``fatigue_days`` (the
contact policy's per-offer window by default): ``q(offer, slot, n) = rate(offer, slot) *
fade[kind] ** n``, with one fade per offer kind (service, commercial) fitted with the rates
on the logs (Poisson likelihood, alternating with the smoothed rates; a weak normal prior on
``log fade`` keeps a fade that the logs barely show near 1). The correction term reads
``q`` at the *logged* count, the direct term at the count of the candidate's *own* replayed
impressions, so DR moves by what wear-out takes from the candidate's repeats, and stays
unbiased wherever the model is right. The fitted fades are in the report (``fade``).
``fatigue=False`` fits the rates alone, the history-free model: then the estimates are
``ope.estimate``'s on the dense arrays (``tests/unit/test_offline.py`` checks this).

**Value, per offer, and the verdict.** Besides clicks and conversions, the report estimates
*value*: a conversion weighted by what it is worth (``OfferSpec.value`` in the candidate
catalog), the bank's money per shown slot. DR's value estimate is split by offer
(``OfferEstimate``: each offer's direct term where the candidate would show it, plus the
correction on the rows where the logs showed it; the parts sum to the estimate), next to the
offer's share of the logged and of the candidate's slots. The ``Verdict`` compares the
candidate with the logging policy on the same rows: the mean of DR's per-row value minus the
logged value, with a bootstrap interval (the same seed), read as better, worse or no clear
difference; when the logs hold no conversion it judges clicks and says so. It says *too
little overlap* instead when the importance weights' effective sample size is under
``ESS_MIN_SHARE`` of the rows or under ``ESS_MIN_ROWS``: then a few heavily weighted rows
decide the estimate and its bootstrap interval is too narrow to trust.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Sequence
from itertools import groupby

import msgspec
import numpy as np
import numpy.typing as npt

from nextbest.catalog.compiled import Catalog
from nextbest.catalog.model import OfferKind, Thompson
from nextbest.decide import ranking
from nextbest.decide.model import Candidate, PropensityKind
from nextbest.errors import ValidationError
from nextbest.learn import explore
from nextbest.learn.logs import LoggedItem
from nextbest.learn.ope import (
    Estimate,
    Estimator,
    bootstrap_interval,
    effective_sample_size,
    estimate_rows,
)

__all__ = [
    "ESS_MIN_ROWS",
    "ESS_MIN_SHARE",
    "NONE",
    "OfferEstimate",
    "OfflineReport",
    "Reward",
    "Verdict",
    "VerdictKind",
    "candidate_marginals",
    "evaluate_candidate",
    "fit_reward_model",
]

#: the action of a slot the candidate leaves empty
NONE = "(none)"
#: prior strength (pseudo-rounds) of the DR reward model's per (offer, slot) rates
_SMOOTHING = 20.0
_DAY = 86_400.0
#: an expected impression count within this of a cap reaches it
_EPS = 1e-9
#: prior standard deviation of ``log fade`` (per earlier impression): weak, a fade of 0.37 or
#: 2.7 is one deviation away; it only keeps a fade the logs barely show near 1
_FADE_PRIOR_SD = 1.0
#: alternations of the rates and the fades (each fade takes one Newton step per alternation)
_FIT_ROUNDS = 25
_KINDS = (OfferKind.SERVICE.value, OfferKind.COMMERCIAL.value)
#: the verdict is "too little overlap" under this share of the rows as effective sample size
#: (Kish's): importance sampling diagnostics start to distrust weights there
ESS_MIN_SHARE = 0.1
#: ... or under this many effective rows: at 500, a 1 % click rate rests on about 5 clicks
ESS_MIN_ROWS = 500.0


class VerdictKind(enum.StrEnum):
    BETTER = "better"
    WORSE = "worse"
    NO_CLEAR_DIFFERENCE = "no_clear_difference"
    TOO_LITTLE_OVERLAP = "too_little_overlap"


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The candidate against the logging policy, per shown slot, on ``reward``."""

    kind: VerdictKind
    reward: str
    logged: float
    candidate: float
    #: candidate minus logged (DR), with its bootstrap interval
    difference: float
    ci_lower: float
    ci_upper: float
    effective_sample_size: float
    rows: int
    #: the sentence a marketer reads
    text: str


class OfferEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """One offer's part of the candidate's value (DR), and its share of the slots."""

    offer_id: str
    #: share of the logged slots that showed it
    logged_share: float
    #: expected share of the slots the candidate would show it in
    candidate_share: float
    #: its logged value per slot (summed over offers: the logged value)
    logged_value: float
    #: its part of DR's value estimate per slot (summed over offers: the estimate)
    estimated_value: float


class Reward(msgspec.Struct, frozen=True, kw_only=True):
    """The estimates for one reward (clicks or conversions) per shown slot."""

    reward: str
    logged: float
    estimates: list[Estimate]
    #: DR's reward model: the share of an offer's rate kept per earlier impression of it to the
    #: same customer, by offer kind, fitted on the logs (empty with ``fatigue=False``)
    fade: dict[str, float] = {}


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
    #: the candidate's probability, averaged over the rounds, on choices the campaigns'
    #: exploration budget ruled out when the logs were written (``Decision.unexplorable``:
    #: an item pinned to its greedy slot, or kept out of the slots greedy gave to others):
    #: the logging policy could not make them, so IPS cannot weigh them
    unexplorable_mass: float = 0.0
    #: decisions that logged a campaign over its exploration share (``Decision.unexplorable``
    #: not empty, whether or not its offers were among the ones shown)
    decisions_over_exploration_share: int = 0
    #: what the figures cannot vouch for: estimated propensities in the logs, each
    #: candidate placement whose Thompson sampling is replayed as its greedy order, and the
    #: probability the exploration budget ruled out (``unexplorable_mass``)
    warnings: list[str] = []
    #: the candidate against the logging policy (None: not computed)
    verdict: Verdict | None = None
    #: DR's value estimate by offer, largest first
    offers: list[OfferEstimate] = []


def candidate_marginals(
    catalog: Catalog,
    placement: str,
    candidates: Sequence[str],
    features: dict[str, float],
    urgent: Collection[str] = (),
    fallback: Sequence[str] = (),
) -> list[dict[str, float]]:
    """P(offer in slot r) for r = 0 .. slots-1 under the candidate catalog's policy: the
    logged ``candidates`` re-scored from the logged ``features`` and put in the engine's
    order (``decide.ranking``), urgent messages first and certain, the others in the free
    slots with the placement's exploration (``explore.marginals``). ``urgent``: the
    candidates logged as urgent; one stays urgent where the candidate catalog keeps a
    trigger for it (a trigger cannot be re-evaluated without the profile). Slots left empty
    take the candidate placement's fallback content that the log says could be shown
    (``fallback``: consent, the page and the schedule allowed it), as the pipeline does."""
    spec = catalog.placements.get(placement)
    if spec is None:
        return []
    allowed = {o.id for o in catalog.by_placement[placement]}
    scored: list[Candidate] = []
    for oid in candidates:
        offer = catalog.offers.get(oid)
        if offer is None or oid not in allowed:
            continue
        if offer.campaign is not None and not offer.campaign.running:
            continue  # a draft, paused or stopped campaign shows nothing
        s = ranking.interest_score(features, offer.topic) if offer.topic is not None else 0.0
        p = ranking.prior_p_click(offer, s, catalog.scoring)
        first = oid in urgent and offer.urgent_rule is not None
        scored.append(Candidate(offer, p, ranking.score(offer, p), first))
    ranked = ranking.in_rank_order(scored)
    first_ids = [c.offer.id for c in ranked if c.urgent][: spec.slots]
    others = [c for c in ranked if not c.urgent]
    out: list[dict[str, float]] = [{oid: 1.0} for oid in first_ids]
    policy = spec.learning.explore if spec.learning is not None else None
    scores = [c.score for c in others]
    for slot in explore.marginals(policy, scores, spec.slots - len(first_ids)):
        out.append({others[k].offer.id: p for k, p in slot.items()})
    if len(out) < spec.slots and fallback:
        # free slots: every candidate is placed, so the fallback fills with non-candidates
        could = set(fallback) - set(candidates)
        fill = [oid for oid in spec.fallback if oid in could][: spec.slots - len(out)]
        out.extend({oid: 1.0} for oid in fill)
    return out


class _Exposures:
    """Impressions of each offer to each customer, as the replay goes in time order: the
    candidate's own (a stochastic candidate's are its marginal probabilities, expected
    counts), whose contact policy (per-offer cap, daily commercial cap) blocks what it would
    have blocked online; or the logging policy's (weight 1), for the logged wear-out."""

    def __init__(self, catalog: Catalog, memory_days: float) -> None:
        self.catalog = catalog
        policy = catalog.policy
        #: how far back any question looks: the caps' windows and the wear-out window
        self.memory = max(policy.per_offer.days, 1.0, memory_days) * _DAY
        self.shown: dict[str, dict[str, list[tuple[float, float]]]] = {}

    def _recent(self, customer: str, now: float) -> dict[str, list[tuple[float, float]]]:
        history = self.shown.get(customer)
        if not history:
            return {}
        horizon = now - self.memory
        for hits in history.values():
            if hits and hits[0][0] < horizon:  # in time order: forget what nothing looks at
                hits[:] = [(t, w) for t, w in hits if t >= horizon]
        return history

    def blocked(self, customer: str, now: float, urgent: Collection[str] = ()) -> set[str]:
        """Offers the candidate's contact policy holds back at ``now`` (impressions strictly
        before ``now``: a page's own decisions do not cap each other): its per-offer cap on
        all but the ``urgent`` ones, its daily cap on commercial offers."""
        history = self._recent(customer, now)
        if not history:
            return set()
        policy = self.catalog.policy
        commercial = self.catalog.commercial_offers
        since = now - policy.per_offer.days * _DAY
        today = now - _DAY
        out: set[str] = set()
        day_total = 0.0
        for oid, hits in history.items():
            offer = self.catalog.offers.get(oid)
            if not ranking.contact_capped(oid in urgent, offer is not None and offer.insight):
                continue
            if ranking.capped(sum(w for t, w in hits if since <= t < now), policy, _EPS):
                out.add(oid)
            if oid in commercial:
                day_total += sum(w for t, w in hits if today <= t < now)
        if ranking.fatigued(day_total, policy, _EPS):
            out.update(commercial)
        return out

    def counts(self, customer: str, now: float, days: float, offers: set[str]) -> dict[str, float]:
        """Impressions of each of ``offers`` to ``customer`` within ``days`` before ``now``
        (only the offers asked about: a long history is not summed for every offer)."""
        since = now - days * _DAY
        return {
            oid: sum(w for t, w in hits if since <= t < now)
            for oid, hits in self._recent(customer, now).items()
            if oid in offers
        }

    def record(self, customer: str, now: float, marginals: list[dict[str, float]]) -> None:
        history = self.shown.setdefault(customer, {})
        for slot in marginals:
            for oid, p in slot.items():
                if oid != NONE and p > 0.0:
                    history.setdefault(oid, []).append((now, p))


def fit_reward_model(
    reward: npt.NDArray[np.float64],
    cell: npt.NDArray[np.int64],
    cells: int,
    earlier: npt.NDArray[np.float64] | None = None,
    group: npt.NDArray[np.int64] | None = None,
    groups: int = 0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """DR's reward model fitted on the logged rows: a smoothed rate per ``cell`` (an (offer,
    slot) pair: ``(sums + s * mean) / (exposure + s)``), and with ``earlier`` (each row's
    earlier impressions of its offer) the log of one fade per ``group`` (offer kind):
    ``E[reward] = rate[cell] * exp(log_fade[group] * earlier)``. Poisson likelihood with a
    normal prior on each log fade, maximised by alternating the closed-form rates with one
    Newton step per fade. Without ``earlier`` the rates alone (every row counts 1)."""
    base = float(reward.mean()) if reward.size else 0.0
    sums = np.bincount(cell, weights=reward, minlength=cells)
    if earlier is None or group is None or groups == 0:
        exposure = np.bincount(cell, weights=np.ones(cell.size), minlength=cells)
        return (sums + _SMOOTHING * base) / (exposure + _SMOOTHING), np.zeros(0)
    log_fade = np.zeros(groups)
    precision = 1.0 / _FADE_PRIOR_SD**2
    members = [np.flatnonzero(group == g) for g in range(groups)]
    rates = np.zeros(cells)
    for _ in range(_FIT_ROUNDS):
        fade = np.exp(log_fade[group] * earlier)
        exposure = np.bincount(cell, weights=fade, minlength=cells)
        rates = (sums + _SMOOTHING * base) / (exposure + _SMOOTHING)
        q = rates[cell] * fade
        for g, rows in enumerate(members):
            if not rows.size:
                continue
            n, qg = earlier[rows], q[rows]
            # d/d(log fade) of sum(r log q - q) - log_fade^2 / 2 sd^2, and its curvature
            slope = float(n @ (reward[rows] - qg)) - precision * log_fade[g]
            curvature = float((n * n) @ qg) + precision
            # damped: a step of at most 1 in log fade, so a wild start cannot overshoot
            log_fade[g] += max(-1.0, min(1.0, slope / curvature))
    return rates, log_fade


def evaluate_candidate(
    items: Sequence[LoggedItem],
    catalog: Catalog,
    *,
    random_state: int = 12345,
    n_bootstrap: int = 1000,
    replay_caps: bool = True,
    fatigue: bool = True,
    fatigue_days: float | None = None,
) -> OfflineReport:
    """IPS, SNIPS and DR estimates of the candidate's click and conversion rate per slot.
    ``replay_caps=False`` leaves the candidate's contact caps out of the replay;
    ``fatigue=False`` leaves wear-out out of DR's reward model; ``fatigue_days`` is how far
    back an earlier impression counts (default: the contact policy's per-offer window)."""
    rows = sorted(items, key=lambda i: (i.timestamp, i.decision_id, i.position))
    if not rows:
        raise ValidationError("no logged items to evaluate (is the period empty?)", "$.logs")
    days = catalog.policy.per_offer.days if fatigue_days is None else fatigue_days
    if not days > 0:
        raise ValidationError(f"fatigue_days must be > 0, got {days}", "$.fatigue_days")
    logged = _Logged.of(rows, catalog)
    replay = _replay(rows, catalog, logged.index, days, replay_caps=replay_caps, fatigue=fatigue)
    rounds = _Rounds.of(logged, replay, fatigue)
    mass = _mean(replay.row_unexplorable)
    worth = {o.id: o.spec.value for o in catalog.offers.values()}
    values = {
        "click": np.asarray([float(i.clicked) for i in rows]),
        "conversion": np.asarray([float(i.converted) for i in rows]),
        "value": np.asarray([worth.get(i.offer_id, 0.0) * i.converted for i in rows]),
    }
    rewards = [
        _reward(name, reward, logged, rounds, random_state, n_bootstrap)
        for name, reward in values.items()
    ]
    judged = "value" if values["value"].any() else "click"
    parts = _dr_parts(values[judged], logged, rounds)
    return OfflineReport(
        verdict=_verdict(judged, values[judged], rounds, parts, random_state, n_bootstrap),
        offers=_by_offer(
            values["value"], logged, rounds, _dr_parts(values["value"], logged, rounds)
        ),
        warnings=_warnings(rows) + _replay_warnings(rows, catalog) + _budget_warnings(mass, replay),
        candidate=catalog.source,
        decisions=replay.decisions,
        capped_decisions=replay.capped,
        unexplorable_mass=mass,
        decisions_over_exploration_share=replay.over_share,
        rounds=len(rows),
        actions=len(logged.offers),
        slots=logged.slots,
        rewards=rewards,
    )


class _Logged(msgspec.Struct, frozen=True, kw_only=True):
    """The logged rounds as arrays: each row's action (index into ``offers``), position
    (0-based) and propensity; each action's kind (index into ``_KINDS``)."""

    offers: list[str]
    index: dict[str, int]
    kind_of: npt.NDArray[np.int64]
    slots: int
    action: npt.NDArray[np.int64]
    position: npt.NDArray[np.int64]
    pscore: npt.NDArray[np.float64]

    @classmethod
    def of(cls, rows: list[LoggedItem], catalog: Catalog) -> _Logged:
        offers = sorted({i.offer_id for i in rows} | set(catalog.offers) | {NONE})
        index = {oid: k for k, oid in enumerate(offers)}
        service = {o.id for o in catalog.offers.values() if o.kind is OfferKind.SERVICE}
        kind_of = np.array([0 if oid in service else 1 for oid in offers], dtype=np.int64)
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
        return cls(
            offers=offers,
            index=index,
            kind_of=kind_of,
            slots=slots,
            action=action,
            position=position,
            pscore=pscore,
        )


class _Replay(msgspec.Struct, kw_only=True):
    """The candidate's distribution at each row's position, sparse: (row, action,
    probability) entries, never a dense rows x offers x slots array (a week of a bank's
    logs is millions of rows); with the earlier impressions of each action, the candidate's
    own (per entry) and the logged ones (per row)."""

    entry_row: list[int] = []
    entry_action: list[int] = []
    entry_prob: list[float] = []
    entry_earlier: list[float] = []
    row_earlier: list[float] = []
    #: per row: the candidate's probability there on choices the exploration budget ruled
    #: out when the row was logged (``_unexplorable_mass``)
    row_unexplorable: list[float] = []
    #: decisions that logged a campaign over its exploration share (whether or not its
    #: offers were among the ones shown)
    over_share: int = 0
    #: decisions where the replayed caps held back a logged candidate
    capped: int = 0
    decisions: int = 0


def _replay(
    rows: list[LoggedItem],
    catalog: Catalog,
    index: dict[str, int],
    days: float,
    *,
    replay_caps: bool,
    fatigue: bool,
) -> _Replay:
    """Each customer's decisions in time order, the candidate's contact caps applied to its
    own replayed impressions (see the module docstring)."""
    out = _Replay()
    exposures = _Exposures(catalog, days)
    logged = _Exposures(catalog, days)
    start = 0
    for _, group in groupby(rows, key=lambda i: i.decision_id):
        members = list(group)
        first = members[0]
        customer, now = first.customer_id, first.timestamp
        blocked = exposures.blocked(customer, now, first.urgent) if replay_caps else ()
        candidates = first.candidates
        if blocked:
            candidates = [c for c in candidates if c not in blocked]
            out.capped += len(candidates) < len(first.candidates)
        marg = candidate_marginals(
            catalog, first.placement, candidates, first.features, first.urgent, first.fallback
        )
        if fatigue:
            mine = exposures.counts(customer, now, days, {o for slot in marg for o in slot})
            theirs = logged.counts(customer, now, days, {item.offer_id for item in members})
            out.row_earlier.extend(theirs.get(item.offer_id, 0.0) for item in members)
            logged.record(customer, now, [{item.offer_id: 1.0} for item in members])
        exposures.record(customer, now, marg)
        held = set(first.unexplorable)
        ranked = set(first.candidates).difference(first.urgent)  # what exploration ranks
        out.over_share += bool(held)
        for k, item in enumerate(members, start):
            r = item.position - 1
            at = marg[r] if r < len(marg) else {NONE: 1.0}
            out.row_unexplorable.append(_unexplorable_mass(at, item.offer_id, held, ranked))
            for oid, p in at.items():
                out.entry_row.append(k)
                out.entry_action.append(index[oid])
                out.entry_prob.append(p)
                if fatigue:
                    out.entry_earlier.append(mine.get(oid, 0.0))
        start += len(members)
        out.decisions += 1
    return out


def _unexplorable_mass(
    at: dict[str, float], logged: str, held: set[str], ranked: set[str]
) -> float:
    """The candidate's probability at a logged slot (``at``) on choices the exploration
    budget ruled out in that decision. ``ranked``: the candidates the logging policy's
    exploration ranked (not urgent), ``held`` those of them it could not explore. With
    ``logged`` held (pinned to its greedy slot), any other of ``ranked`` there; with
    ``logged`` explorable, a held candidate, which the exploration never placed in a slot
    the greedy order gave to another offer. An urgent message, fallback content or an
    empty slot was not the budget's doing: nothing."""
    if not held or logged not in ranked:
        return 0.0
    if logged in held:
        return math.fsum(p for oid, p in at.items() if oid != logged and oid in ranked)
    return math.fsum(p for oid, p in at.items() if oid in held)


class _Rounds(msgspec.Struct, frozen=True, kw_only=True):
    """The replay as arrays: per entry its row, action, probability, (offer, slot) cell and
    earlier impressions; per row its importance weight, the candidate's probability on
    (offer, slot) pairs the logs never show (``unsupported``), its cell and earlier logged
    impressions (``None`` without wear-out); the cells of the empty slot ``NONE``."""

    e_row: npt.NDArray[np.int64]
    e_action: npt.NDArray[np.int64]
    e_prob: npt.NDArray[np.float64]
    e_cell: npt.NDArray[np.int64]
    e_earlier: npt.NDArray[np.float64]
    weight: npt.NDArray[np.float64]
    unsupported: npt.NDArray[np.float64]
    cell: npt.NDArray[np.int64]
    earlier: npt.NDArray[np.float64] | None
    none: npt.NDArray[np.int64]

    @classmethod
    def of(cls, logged: _Logged, replay: _Replay, fatigue: bool) -> _Rounds:
        n, slots = len(logged.action), logged.slots
        action, position = logged.action, logged.position
        e_row = np.asarray(replay.entry_row, dtype=np.int64)
        e_action = np.asarray(replay.entry_action, dtype=np.int64)
        e_prob = np.asarray(replay.entry_prob, dtype=np.float64)
        e_position = position[e_row]
        chosen = e_action == action[e_row]
        weight = np.bincount(e_row[chosen], weights=e_prob[chosen], minlength=n) / logged.pscore
        seen = np.zeros((len(logged.offers), slots), dtype=bool)
        seen[action, position] = True
        unsupported = np.bincount(  # float64 already: astype only tells mypy
            e_row, weights=e_prob * ~seen[e_action, e_position], minlength=n
        ).astype(np.float64, copy=False)
        none = logged.index[NONE]
        return cls(
            e_row=e_row,
            e_action=e_action,
            e_prob=e_prob,
            e_cell=e_action * slots + e_position,
            e_earlier=np.asarray(replay.entry_earlier, dtype=np.float64),
            weight=weight,
            unsupported=unsupported,
            cell=action * slots + position,
            earlier=np.asarray(replay.row_earlier, dtype=np.float64) if fatigue else None,
            none=np.arange(none * slots, (none + 1) * slots),
        )


class _DrParts(msgspec.Struct, frozen=True, kw_only=True):
    """DR's pieces for one reward: the reward model at every entry (``q_direct``) and at
    every row's logged action (``factual``), the per-row direct term, and the fitted fades."""

    q_direct: npt.NDArray[np.float64]
    factual: npt.NDArray[np.float64]
    direct: npt.NDArray[np.float64]
    log_fade: npt.NDArray[np.float64]


def _dr_parts(reward: npt.NDArray[np.float64], logged: _Logged, rounds: _Rounds) -> _DrParts:
    """DR's reward model fitted on the logs (see the module) and what it predicts."""
    action, kind_of, earlier = logged.action, logged.kind_of, rounds.earlier
    n = len(action)
    rates, log_fade = fit_reward_model(
        reward,
        rounds.cell,
        len(logged.offers) * logged.slots,
        earlier,
        kind_of[action],
        len(_KINDS),
    )
    rates[rounds.none] = 0.0
    q_direct = rates[rounds.e_cell]
    factual = rates[rounds.cell]
    if earlier is not None:
        q_direct = q_direct * np.exp(log_fade[kind_of[rounds.e_action]] * rounds.e_earlier)
        factual = factual * np.exp(log_fade[kind_of[action]] * earlier)
    direct = np.bincount(rounds.e_row, weights=rounds.e_prob * q_direct, minlength=n).astype(
        np.float64, copy=False
    )
    return _DrParts(q_direct=q_direct, factual=factual, direct=direct, log_fade=log_fade)


def _reward(
    name: str,
    reward: npt.NDArray[np.float64],
    logged: _Logged,
    rounds: _Rounds,
    random_state: int,
    n_bootstrap: int,
) -> Reward:
    """IPS, SNIPS and DR of one reward, DR's model fitted on the logs (see the module)."""
    parts = _dr_parts(reward, logged, rounds)
    estimates = [
        estimate_rows(
            estimator,
            reward=reward,
            weight=rounds.weight,
            unsupported=rounds.unsupported,
            direct=parts.direct,
            factual=parts.factual,
            random_state=random_state,
            n_bootstrap=n_bootstrap,
        )
        for estimator in (Estimator.IPS, Estimator.SNIPS, Estimator.DR)
    ]
    kind_rows = np.bincount(logged.kind_of[logged.action], minlength=len(_KINDS)).tolist()
    fade = {  # a kind the logs never showed has no fitted fade to report
        k: float(math.exp(v))
        for k, v, rows in zip(_KINDS, parts.log_fade, kind_rows, strict=False)
        if rows
    }
    return Reward(reward=name, logged=float(reward.mean()), estimates=estimates, fade=fade)


def _by_offer(
    reward: npt.NDArray[np.float64], logged: _Logged, rounds: _Rounds, parts: _DrParts
) -> list[OfferEstimate]:
    """DR's estimate split by offer: each offer's direct term (the candidate's probability of
    it times the reward model) plus the correction ``w (r - q)`` on the rows that logged it;
    the parts sum to DR's estimate. Offers neither logged nor chosen are left out."""
    n, k = len(logged.action), len(logged.offers)
    direct = np.bincount(rounds.e_action, weights=rounds.e_prob * parts.q_direct, minlength=k)
    correction = np.bincount(
        logged.action, weights=rounds.weight * (reward - parts.factual), minlength=k
    )
    chosen = np.bincount(rounds.e_action, weights=rounds.e_prob, minlength=k)
    shown = np.bincount(logged.action, minlength=k)
    earned = np.bincount(logged.action, weights=reward, minlength=k)
    out = [
        OfferEstimate(
            offer_id=oid,
            logged_share=float(shown[a] / n),
            candidate_share=float(chosen[a] / n),
            logged_value=float(earned[a] / n),
            estimated_value=float((direct[a] + correction[a]) / n),
        )
        for a, oid in enumerate(logged.offers)
        if shown[a] or chosen[a] > 0.0
    ]
    return sorted(out, key=lambda o: (-o.estimated_value, o.offer_id))


def _verdict(
    name: str,
    reward: npt.NDArray[np.float64],
    rounds: _Rounds,
    parts: _DrParts,
    random_state: int,
    n_bootstrap: int,
) -> Verdict:
    """The candidate against the logging policy on the same rows (see the module)."""
    dr = parts.direct + rounds.weight * (reward - parts.factual)
    delta = dr - reward
    _, lower, upper = bootstrap_interval(
        delta, alpha=0.05, n_bootstrap=n_bootstrap, random_state=random_state
    )
    n = int(reward.shape[0])
    ess = effective_sample_size(rounds.weight)
    logged, candidate = float(reward.mean()), float(dr.mean())
    difference = float(delta.mean())
    if ess < max(ESS_MIN_SHARE * n, ESS_MIN_ROWS):
        kind = VerdictKind.TOO_LITTLE_OVERLAP
    elif lower > 0.0:
        kind = VerdictKind.BETTER
    elif upper < 0.0:
        kind = VerdictKind.WORSE
    else:
        kind = VerdictKind.NO_CLEAR_DIFFERENCE
    return Verdict(
        kind=kind,
        reward=name,
        logged=logged,
        candidate=candidate,
        difference=difference,
        ci_lower=lower,
        ci_upper=upper,
        effective_sample_size=ess,
        rows=n,
        text=_verdict_text(kind, name, logged, candidate, lower, upper, ess, n),
    )


def _verdict_text(
    kind: VerdictKind,
    name: str,
    logged: float,
    candidate: float,
    lower: float,
    upper: float,
    ess: float,
    n: int,
) -> str:
    unit = {"value": "value", "click": "clicks"}.get(name, name)
    relative = f" ({(candidate - logged) / logged:+.1%})" if logged > 0 else ""
    figures = (
        f"{candidate:.4g} {unit} per shown slot against the logging policy's {logged:.4g}"
        f"{relative}; the difference's 95 % interval is [{lower:+.4g}, {upper:+.4g}]"
    )
    basis = "" if name == "value" else " (no conversion in the logs: judged on clicks)"
    if kind is VerdictKind.TOO_LITTLE_OVERLAP:
        return (
            f"Too little overlap to tell{basis}: the logs rest on {ess:,.0f} effective rows of "
            f"{n:,} ({ess / n:.1%}), so a few heavily weighted rows decide the estimate "
            f"({figures}). Log more decisions with exploration, or evaluate a candidate closer "
            "to the logging policy."
        )
    if kind is VerdictKind.BETTER:
        return f"Better than the logging policy{basis}: {figures}."
    if kind is VerdictKind.WORSE:
        return f"Worse than the logging policy{basis}: {figures}."
    return f"No clear difference from the logging policy{basis}: {figures}."


def _warnings(rows: list[LoggedItem]) -> list[str]:
    """What the figures cannot vouch for: estimated logged propensities."""
    not_exact = sum(1 for i in rows if i.propensity_kind != PropensityKind.EXACT)
    if not not_exact:
        return []
    return [
        f"{not_exact} of {len(rows)} logged propensities are estimates (sequential softmax, "
        "or Thompson sampling's Monte Carlo in older logs), not exact marginals: IPS/SNIPS/DR "
        "may be biased"
    ]


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _budget_warnings(mass: float, replay: _Replay) -> list[str]:
    """How much of the candidate's probability (``mass``, the mean of the replay's rows) the
    logging policy's exploration budget ruled out (``_unexplorable_mass``), where any: the
    budget's part of the importance weights' shortfall that each estimator's warning
    reports (``ope``)."""
    if mass <= 0.0:
        return []
    return [
        f"{mass:.2%} of the candidate's probability is on choices the campaigns' exploration "
        f"budget ruled out when the logs were written (in {replay.over_share} of "
        f"{replay.decisions} decisions a campaign was over its exploration share: its offers "
        "were pinned to their greedy slot, or kept out of slots the greedy order gave to "
        "other offers). The logging policy could not make those choices, so no importance "
        "weight reaches them: this is the budget's part of the shortfall the estimators' "
        "warnings report. IPS is biased low by about that share if those choices convert "
        "like the others, SNIPS is right only if their rewards are like the rest's, and DR's "
        "reward model speaks for them; a larger max_exploration on the campaigns logs "
        "choices IPS can weigh"
    ]


def _replay_warnings(rows: list[LoggedItem], catalog: Catalog) -> list[str]:
    """One warning per logged placement where the candidate explores by Thompson sampling:
    ``explore.marginals`` has no closed form for it and replays its greedy order."""
    out: list[str] = []
    for name in sorted({i.placement for i in rows}):
        spec = catalog.placements.get(name)
        explore = spec.learning.explore if spec is not None and spec.learning else None
        if not isinstance(explore, Thompson) or explore.uniform >= 1.0:
            continue  # a uniform share of 1 is every decision at random: replayed exactly
        mixed = (
            f" (its uniform share of {explore.uniform:g} is replayed exactly)"
            if explore.uniform > 0.0
            else ""
        )
        out.append(
            f"the candidate explores placement {name} by Thompson sampling, which has no "
            "closed form to replay: its sampling is replayed as its greedy order"
            f"{mixed}, so the estimates for {name} are those of the candidate's ranking "
            "shown greedily, not of Thompson sampling's randomised choice"
        )
    return out
