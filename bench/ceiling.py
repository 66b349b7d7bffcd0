"""The observable ceiling of issue #14: what a policy that sees only what nextbest sees could
get, estimated per world of the zoo.

    .venv/bin/python bench/ceiling.py --worlds hidden_needs,generic_service --seeds 1,2,3
    .venv/bin/python bench/ceiling.py --worlds shelf --log-customers 300 --customers 50 \\
        --days 3 --seeds 1 --iterations 20 --out /tmp/c  # smoke

Per world:

1. **Data.** The site loop runs a logging policy (``random``: a uniform order of the eligible
   set) on a large population of a seed outside the judged ones (``--log-seed`` 101,
   ``--log-customers`` x ``--days``). At every decision (a ``--record-share`` of them) every
   candidate is recorded with what the engine can see (``observable``: the engine's own
   ``customer_features`` of the decision's profile, the page's topics, plus the customer's
   age and this offer's history in the profile: impressions, days since the last one, a
   click) and, as regression targets, the world's TRUE P(click at position 1) and
   P(convert | click): the calls ``OraclePolicy`` makes. True probabilities instead of drawn
   clicks: ample data without click noise.
2. **Fit.** One gradient-boosted regression (scikit-learn's ``HistGradientBoostingRegressor``,
   a dev extra: bench only) over the observable features with the offer as a categorical
   feature (so every feature is crossed with the offer where the trees find it pays),
   squared error against the true P(click) x P(convert | click): its optimum is
   E[P(click) x P(convert | click) | observables], the best any policy seeing those
   features can know of the engine's objective (value and weight are known). A second one
   fits P(click) alone, for its R². Quality on held-out customers (a fifth of the logging
   population): R², and how often the fitted objective puts the true best offer first.
   Tried first and dropped (shelf, 2,000 logged customers): a per-offer logistic regression
   with soft labels on the same features, held-out R² of P(click) 0.08, and a per-offer
   ridge regression, 0.10, against 0.63 for the boosted trees: the truth is a product of
   need, fatigue and appeal that a linear logit does not hold.
3. **Ceiling policy** (``CeilingPolicy``): ranks the eligible set by the fitted
   P(click) x P(convert | click) x value x campaign weight (the engine's objective), greedy,
   using only observable features.
4. **Judged** on ``--seeds`` (1,2,3), ``--customers`` x ``--days``, cold start, with the
   zoo's harness (``run_policy``), next to ``oracle`` and ``nextbest`` in the same run:
   clicks / the oracle's and expected clicks (summed true click probabilities) / the
   oracle's, mean and spread over seeds; ceiling / oracle and nextbest / ceiling.

Writes ``ceiling-<world>.json`` per world in ``--out`` (``bench/results``), as soon as the
world is done, and prints a Markdown table. What it assumes: the ceiling is an *estimate*,
not a bound. It is the best of one model family (boosted trees on these features) fitted on
the states a random logging policy visits; a richer model, other features the engine could
compute, or data from the states a good policy visits could do better; and the greedy order
ignores what a show now does to later visits (fatigue, caps), as the oracle's does.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from array import array
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson
from scipy import sparse

from _common import ROOT, command_line, load_average, machine_info, now_iso
from nextbest.catalog.compiled import Catalog, CompiledOffer
from nextbest.decide.model import ChoiceContext
from nextbest.learn.features import customer_features
from nextbest.profile.windows import DAY
from nextbest.rules.context import age_of
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import run_policy
from nextbest.sim.money import INSIGHT_KPIS
from nextbest.sim.needs import EndReason
from nextbest.sim.policies import RandomPolicy
from nextbest.sim.response import ResponseModel
from nextbest.sim.site import PRODUCT_OF
from nextbest.sim.world import CustomerSim
from nextbest.sim.worlds import WORLDS, world_catalog, world_named, world_response
from zoo import Spread, spread

__all__ = [
    "CeilingModel",
    "CeilingPolicy",
    "Fit",
    "Log",
    "LoggingPolicy",
    "fit_ceiling",
    "main",
    "observable",
    "true_probabilities",
]

#: the engine's per-topic families whose own-topic value is also binned (non-linear shape)
_BINNED = ("interest", "count7", "count30", "recency", "count1d")
_BIN_EDGES = (0.0, 0.35, 0.7, 1.1, 1.6, 2.2, 3.0)


def _bin(v: float) -> int:
    k = 0
    for edge in _BIN_EDGES:
        if v > edge:
            k += 1
    return k


def page_topics(catalog: Catalog, context: Mapping[str, Any]) -> list[str]:
    """The topics of the decision's page, as ``Learner._page_topics`` finds them."""
    page = context.get("page")
    if not isinstance(page, Mapping):
        return []
    url = page.get("url") or page.get("path")
    return catalog.matcher.topics_of_url(url) if isinstance(url, str) else []


def decision_features(catalog: Catalog, ctx: ChoiceContext) -> dict[str, float]:
    """What the engine's learner sees of a decision (``customer_features``, as
    ``Learner.choose`` builds them), plus the placement and the customer's age band."""
    x = customer_features(
        ctx.profile,
        catalog.topics,
        ctx.now,
        ctx.context,
        ctx.segments,
        page_topics=page_topics(catalog, ctx.context),
    )
    x["placement:" + ctx.placement] = 1.0
    age = age_of(ctx.profile.traits, ctx.now)
    x["age:" + ("-" if age is None else str(min(age, 90) // 5 * 5))] = 1.0
    return x


def observable(
    x: Mapping[str, float], offer: CompiledOffer, ctx: ChoiceContext
) -> dict[str, float]:
    """One candidate's own observable features, beside the decision's ``x``: this offer's
    history in the profile (impressions in all and in the last 7 days, days since the last, a
    click), the offer's own-topic features binned, and the history crossed with own-topic
    interest. Disjoint from ``x``'s names."""
    out: dict[str, float] = {}
    history = ctx.profile.offers.get(offer.id)
    seen = history.total_impressions if history is not None else 0
    band = str(min(seen, 6))
    out["seen:" + band] = 1.0
    if history is not None and history.impressions:
        last = history.impressions[-1]
        out["since_seen"] = 1.0 / (1.0 + max(0.0, ctx.now - last) / DAY)
        week = sum(1 for t in history.impressions if ctx.now - t <= 7 * DAY)
        out["seen7:" + str(min(week, 4))] = 1.0
    if history is not None and history.total_clicks:
        out["clicked"] = 1.0
    topic = offer.topic
    if topic:
        for family in _BINNED:
            out[f"bin:{family}:{_bin(x.get(family + ':' + topic, 0.0))}"] = 1.0
        lvl = _bin(x.get("count30:" + topic, 0.0))
        out[f"seen:{band}&own30:{lvl}"] = 1.0
        out[f"own30:{lvl}&{'page' if x.get('page:' + topic) else 'nopage'}"] = 1.0
    return out


def true_probabilities(
    model: ResponseModel,
    offer: CompiledOffer,
    sim: CustomerSim,
    needs: Mapping[str, float],
    age: int,
    seen: int,
) -> tuple[float, float]:
    """The world's true P(click at position 1) and P(convert | click): the oracle's calls
    (``needs``: ``sim.strengths(day)``; ``age``: the customer's that day)."""
    p_click = model.p_click(
        offer_topic=offer.topic,
        offer_kind=offer.kind.value,
        position=1,
        needs=needs,
        impressions_before=seen,
        overdrawn=sim.overdrawn,
        age=age,
        offer=offer.id,
    )
    return p_click, model.p_convert_after_click(offer_topic=offer.topic, needs=needs)


def convertible(offer: CompiledOffer, sim: CustomerSim) -> bool:
    """Whether a click on ``offer`` can convert: not a service insight, and an open need for
    the offer's product (what the site loop's ``expected_conversions`` counts)."""
    if sim.money is not None and offer.id in INSIGHT_KPIS:
        return False
    topic = offer.topic
    return topic in PRODUCT_OF and any(
        n.topic == topic and n.ended is EndReason.ACTIVE for n in sim.needs
    )


class Sparse:
    """Rows of named features appended as compact arrays (a CSR matrix in the making)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self.indptr = array("q", [0])
        self.indices = array("i")
        self.data = array("d")

    def append(self, x: Mapping[str, float]) -> None:
        vocab = self.vocab
        for f, v in x.items():
            k = vocab.get(f)
            if k is None:
                k = vocab[f] = len(vocab)
            self.indices.append(k)
            self.data.append(v)
        self.indptr.append(len(self.indices))

    def matrix(self) -> sparse.csr_matrix:
        return sparse.csr_matrix(
            (
                np.frombuffer(self.data, dtype=np.float64),
                np.frombuffer(self.indices, dtype=np.int32),
                np.frombuffer(self.indptr, dtype=np.int64),
            ),
            shape=(len(self.indptr) - 1, len(self.vocab)),
        )


class Log:
    """What the logging policy recorded: each decision's features once (and its customer),
    and per candidate its decision, offer, own features and true probabilities."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.decisions = Sparse(self.vocab)
        self.customer = array("i")
        self.row_decision = array("i")
        self.row_offer = array("i")
        self.offers: dict[str, int] = {}
        self.own = Sparse(self.vocab)
        self.p_click = array("d")
        self.p_convert = array("d")
        #: 1 where a click can convert (``convertible``), else 0
        self.convertible = array("b")

    def __len__(self) -> int:
        return len(self.row_decision)


class LoggingPolicy:
    """``random``'s choices; records every candidate of a ``share`` of the decisions."""

    name = "ceiling-log"

    def __init__(self, catalog: Catalog, model: ResponseModel, share: float, seed: int) -> None:
        self.catalog, self.model, self.share = catalog, model, share
        self.log = Log()
        self._random = RandomPolicy()
        self._sample = random.Random(f"ceiling-sample:{seed}")
        self._customer: dict[int, int] = {}

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        picks = self._random.choose(candidates, sim, day, slots, rng, impressions, context)
        if context is None or not candidates or self._sample.random() >= self.share:
            return picks
        log = self.log
        decision = len(log.customer)
        log.customer.append(self._customer.setdefault(id(sim), len(self._customer)))
        x = decision_features(self.catalog, context)
        log.decisions.append(x)
        needs = sim.strengths(day)
        age = sim.c.age_on(sim.start + timedelta(days=day))
        for offer in candidates:
            pc, pv = true_probabilities(
                self.model, offer, sim, needs, age, impressions.get(offer.id, 0)
            )
            log.row_decision.append(decision)
            log.row_offer.append(log.offers.setdefault(offer.id, len(log.offers)))
            log.own.append(observable(x, offer, context))
            log.p_click.append(pc)
            log.p_convert.append(pv)
            log.convertible.append(int(convertible(offer, sim)))
        return picks


# ------------------------------------------------------------------------------- the fit
class Fit(msgspec.Struct, kw_only=True):
    """The fit's quality on held-out customers (every offer pooled)."""

    rows_train: int
    rows_test: int
    decisions: int
    features: int
    iterations: int
    #: R² of the fitted P(click) x P(convert | click) (the ranking's target)
    r2_p_click_x_convert: float
    #: R² of a fit of P(click) alone (on at most ``--click-rows`` training rows), and of its
    #: logit against the true logit
    r2_p_click: float
    r2_logit_p_click: float
    #: held-out decisions where the fitted and the true objective (x value x weight) put the
    #: same offer first
    top1_agreement: float
    #: the true objective of the fitted order's first offer / the true order's first, summed
    #: over the held-out decisions
    top1_value_share: float
    seconds: float
    #: R² of the fitted P(click) x P(convert | click) x (a click can convert), the
    #: conversions objective's target (None: not fitted)
    r2_conversions: float | None = None


class CeilingModel:
    """A gradient-boosted regression of a target over the observable features (columns:
    the named features with enough support, then the offer as a categorical column)."""

    def __init__(
        self,
        columns: dict[str, int],
        offers: dict[str, int],
        booster: Any,
        conversions: Any | None = None,
    ) -> None:
        self.columns, self.offers, self.booster = columns, offers, booster
        #: the regression of P(click) x P(convert | click) x (a click can convert), if fitted
        self.conversions = conversions
        self.width = len(columns) + 1

    def rows(
        self, x: Mapping[str, float], offers: Sequence[str], own: Sequence[Mapping[str, float]]
    ) -> np.ndarray:
        """The design matrix of one decision's candidates (``x``: the decision's features,
        ``own``: each candidate's)."""
        out = np.zeros((len(offers), self.width), dtype=np.float32)
        columns = self.columns
        shared = [(columns[f], v) for f, v in x.items() if f in columns]
        for i, (offer, mine) in enumerate(zip(offers, own, strict=True)):
            row = out[i]
            for k, v in shared:
                row[k] = v
            for f, v in mine.items():
                k = columns.get(f)
                if k is not None:
                    row[k] = v
            row[-1] = self.offers.get(offer, -1)  # an unknown offer: a category never seen
        return out

    def predict(self, X: np.ndarray, objective: str = "value") -> np.ndarray:
        """The fitted P(click) x P(convert | click) (``objective`` "value"), or the same
        counted only where a click can convert ("conversions")."""
        booster = self.booster if objective == "value" else self.conversions
        if booster is None:
            raise ValueError(f"no regression fitted for the {objective!r} objective")
        return np.clip(booster.predict(X), 0.0, 1.0)


def _r2(y: np.ndarray, q: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - q) ** 2).sum()) / ss if ss > 0 else float("nan")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _booster(iterations: int, categorical: np.ndarray, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor  # dev extra: bench only

    return HistGradientBoostingRegressor(
        loss="squared_error",  # its optimum: E[target | features]
        learning_rate=0.1,
        max_iter=iterations,
        max_leaf_nodes=31,
        min_samples_leaf=40,
        l2_regularization=1.0,
        max_bins=255,
        categorical_features=categorical,
        early_stopping=False,
        random_state=seed,
    )


def design_matrix(
    log: Log, row_decision: Any, row_offer: Any, test: Any, min_support: int
) -> tuple[Any, dict[str, int], Any]:
    """The trees' input: every logged candidate's decision and own features (those seen on
    at least ``min_support`` training rows), then its offer as a categorical last column;
    the columns by feature name, and which columns are categorical."""
    X_all = (log.decisions.matrix()[row_decision] + log.own.matrix()).tocsr()
    support = np.asarray((X_all[~test] != 0).sum(axis=0)).ravel()
    keep = np.flatnonzero(support >= min_support)
    names = sorted(log.vocab, key=log.vocab.__getitem__)
    columns = {names[k]: i for i, k in enumerate(keep)}
    X = np.empty((len(log), len(keep) + 1), dtype=np.float32)
    X[:, :-1] = X_all[:, keep].toarray()
    X[:, -1] = row_offer
    del X_all
    categorical = np.zeros(X.shape[1], dtype=bool)
    categorical[-1] = True
    return X, columns, categorical


def fit_ceiling(
    log: Log,
    catalog: Catalog,
    *,
    iterations: int = 200,
    click_rows: int = 300_000,
    min_support: int = 20,
    test_share: float = 0.2,
    seed: int = 0,
    conversions: bool = False,
) -> tuple[CeilingModel, Fit]:
    """Fit E[P(click) x P(convert | click) | observables] on the training customers (all
    but every ``1 / test_share``-th), and E[P(click) | observables] for its R²; R² and
    top-1 agreement on the held-out customers. With ``conversions``, also
    E[P(click) x P(convert | click) x (a click can convert) | observables], the target of
    the conversions objective."""
    began = time.perf_counter()
    cut = round(1 / test_share) if test_share > 0 else 0
    customer = np.frombuffer(log.customer, dtype=np.int32)
    row_decision = np.frombuffer(log.row_decision, dtype=np.int32)
    row_offer = np.frombuffer(log.row_offer, dtype=np.int32)
    p_click = np.frombuffer(log.p_click, dtype=np.float64)
    p_convert = np.frombuffer(log.p_convert, dtype=np.float64)
    test = (customer[row_decision] % cut == 0) if cut else np.zeros(len(log), dtype=bool)
    X, columns, categorical = design_matrix(log, row_decision, row_offer, test, min_support)
    target = p_click * p_convert
    train = np.flatnonzero(~test)
    booster = _booster(iterations, categorical, seed).fit(X[train], target[train])
    converts = target * np.frombuffer(log.convertible, dtype=np.int8)
    by_conversions = (
        _booster(iterations, categorical, seed).fit(X[train], converts[train])
        if conversions
        else None
    )
    model = CeilingModel(columns, dict(log.offers), booster, by_conversions)
    rng = np.random.default_rng(seed)
    sub = rng.choice(train, size=min(click_rows, len(train)), replace=False)
    clicks = _booster(iterations, categorical, seed).fit(X[sub], p_click[sub])
    Xt = X[test]
    q = model.predict(Xt)
    qc = np.clip(clicks.predict(Xt), 1e-6, 1.0)
    y, yc = target[test], p_click[test]
    # the first offer by the fitted and by the true objective (x value x weight), per decision
    offer_names = sorted(log.offers, key=log.offers.__getitem__)
    worth = np.array([catalog.offers[o].spec.value * catalog.offers[o].weight for o in offer_names])
    w = worth[row_offer[test]]
    fitted_score, true_score = q * w, y * w
    decisions = row_decision[test]
    order = np.argsort(decisions, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(decisions[order])) + 1) if len(order) else []
    agree = 0
    got = top = 0.0
    for g in groups:
        f, t = g[np.argmax(fitted_score[g])], g[np.argmax(true_score[g])]
        agree += int(f == t)
        got += float(true_score[f])
        top += float(true_score[t])
    fit = Fit(
        rows_train=len(train),
        rows_test=int(test.sum()),
        decisions=len(log.customer),
        features=len(columns),
        iterations=iterations,
        r2_p_click_x_convert=_r2(y, q) if len(y) else float("nan"),
        r2_p_click=_r2(yc, qc) if len(y) else float("nan"),
        r2_logit_p_click=_r2(_logit(yc), _logit(qc)) if len(y) else float("nan"),
        top1_agreement=agree / len(groups) if groups else float("nan"),
        top1_value_share=got / top if top > 0 else float("nan"),
        seconds=round(time.perf_counter() - began, 2),
        r2_conversions=(
            _r2(converts[test], model.predict(Xt, "conversions"))
            if conversions and len(y)
            else None
        ),
    )
    return model, fit


class CeilingPolicy:
    """Greedy on the fitted E[P(click) x P(convert | click) | observables] x value x campaign
    weight (the engine's objective; ``ceiling``), or, with ``objective="conversions"``
    (``ceiling_conv``), on the fitted E[P(click) x P(convert | click) x (a click can
    convert) | observables] x campaign weight, without value (what issue #14's conversion
    target counts); from observable features only: the world's hidden state is never read."""

    def __init__(self, catalog: Catalog, model: CeilingModel, objective: str = "value") -> None:
        if objective not in ("value", "conversions"):
            raise ValueError(f"unknown objective {objective!r}")
        self.catalog, self.model, self.objective = catalog, model, objective
        self.name = "ceiling" if objective == "value" else "ceiling_conv"

    def choose(
        self,
        candidates: Sequence[CompiledOffer],
        sim: CustomerSim,
        day: int,
        slots: int,
        rng: random.Random,
        impressions: Mapping[str, int],
        context: ChoiceContext | None = None,
    ) -> list[tuple[str, float]]:
        if context is None or not candidates:
            return [(o.id, 1.0) for o in candidates][:slots]
        x = decision_features(self.catalog, context)
        own = [observable(x, offer, context) for offer in candidates]
        q = self.model.predict(self.model.rows(x, [o.id for o in candidates], own), self.objective)
        by_value = self.objective == "value"
        scored = sorted(
            (-(float(p) * (o.spec.value if by_value else 1.0) * o.weight), o.id)
            for p, o in zip(q, candidates, strict=True)
        )
        return [(oid, 1.0) for _, oid in scored[:slots]]


# ------------------------------------------------------------------------------- the run
def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _cell(s: Spread) -> str:
    if s.mean is None or s.low is None or s.high is None:
        return "-"
    return f"{s.mean:.2f} ({s.low:.2f}-{s.high:.2f})"


#: the per-run figures kept (``Metrics`` fields)
KEPT = (
    "clicks",
    "expected_clicks",
    "expected_value",
    "expected_conversions",
    "impressions",
    "conversions_total",
    "conversions_after_click",
    "wall_seconds",
)


def stored_runs(world: str, args: argparse.Namespace) -> tuple[dict[int, dict[str, Any]], dict]:
    """The runs of ``args.stored`` (greedy_recent, oracle: ``zoo-<world>.json`` of
    ``bench/quality.py``) and ``args.stored_nextbest`` (``FILE:VARIANT`` of
    ``bench/variants.py``'s runs, as ``nextbest``) for ``args.seeds``, at the same size;
    and where they came from. Exits if a seed or the size is missing."""
    runs: dict[int, dict[str, Any]] = {s: {} for s in args.seeds}
    source: dict[str, Any] = {}
    if args.stored:
        path = Path(args.stored) / f"zoo-{world}.json"
        data = orjson.loads(path.read_bytes())
        if (data["customers"], data["days"]) != (args.customers, args.days):
            raise SystemExit(f"{path}: {data['customers']} x {data['days']}, not the run's size")
        for seed in args.seeds:
            found = data["metrics"].get(str(seed))
            if found is None:
                raise SystemExit(f"{path}: no seed {seed}")
            for name in ("greedy_recent", "oracle"):
                runs[seed][name] = {k: found[name][k] for k in KEPT}
        source["greedy_recent,oracle"] = {
            "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "date": data["date"],
            "git_revision": data["machine"].get("git_revision"),
        }
    if args.stored_nextbest:
        file, _, variant = args.stored_nextbest.rpartition(":")
        rows = [orjson.loads(line) for line in Path(file).read_bytes().splitlines() if line]
        by = {
            r["seed"]: r
            for r in rows
            if r["variant"] == variant
            and r["world"] == world
            and (r["customers"], r["days"]) == (args.customers, args.days)
        }
        for seed in args.seeds:
            if seed not in by:
                raise SystemExit(f"{file}: no {variant} run of {world} seed {seed}")
            runs[seed]["nextbest"] = {k: by[seed]["metrics"][k] for k in KEPT}
        source["nextbest"] = {
            "file": file,
            "variant": variant,
            "dates": sorted(r["date"] for r in by.values()),
        }
    return runs, source


def conversions_summary(metrics: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict:
    """Expected conversions per policy (mean of the seeds), the share of greedy_recent's gap
    to the oracle each closes (means first, as ``bench/variants.py --conversions``), and
    nextbest / the better ceiling's: issue #14's rule (reachable where a ceiling closes
    >= 40 %; otherwise nextbest is held to >= 0.95 of the ceiling)."""
    policies = list(next(iter(metrics.values())))
    mean = {
        p: sum(r[p]["expected_conversions"] for r in metrics.values()) / len(metrics)
        for p in policies
    }
    out: dict[str, Any] = {"expected_conversions": mean}
    if "greedy_recent" not in mean:
        return out
    g, o = mean["greedy_recent"], mean["oracle"]
    out["gap_closed"] = {p: (v - g) / (o - g) if o > g else None for p, v in mean.items()}
    ceilings = [p for p in ("ceiling", "ceiling_conv") if p in mean]
    if ceilings:
        best = max(ceilings, key=mean.__getitem__)
        closed = out["gap_closed"][best]
        out["best_ceiling"] = best
        out["reachable_40"] = closed is not None and closed >= 0.40
        if "nextbest" in mean:
            out["nextbest_vs_best_ceiling"] = _ratio(mean["nextbest"], mean[best])
    return out


def _policy(name: str, catalog: Catalog, model: CeilingModel) -> Any:
    if name == "ceiling":
        return CeilingPolicy(catalog, model)
    if name == "ceiling_conv":
        return CeilingPolicy(catalog, model, "conversions")
    return name


def run_world(world: str, args: argparse.Namespace) -> dict[str, Any]:
    lives = world_named(world)
    catalog = world_catalog(lives, args.catalog, DEFAULT_START)
    response = world_response(lives)
    began = time.perf_counter()
    metrics, source = stored_runs(world, args)
    logger = LoggingPolicy(catalog, response, args.record_share, args.log_seed)
    run_policy(
        logger,
        args.log_seed,
        args.log_customers,
        args.days,
        catalog=catalog,
        model=response,
        world=lives,
    )
    log_seconds = time.perf_counter() - began
    _say(
        f"{world}: logged {len(logger.log):,} candidates of {len(logger.log.customer):,} "
        f"decisions in {log_seconds:.0f} s"
    )
    model, fit = fit_ceiling(
        logger.log,
        catalog,
        iterations=args.iterations,
        click_rows=args.click_rows,
        conversions="ceiling_conv" in args.policies,
    )
    _say(
        f"{world}: fit in {fit.seconds:.0f} s, held-out R² product "
        f"{fit.r2_p_click_x_convert:.3f}, p_click {fit.r2_p_click:.3f} (logit "
        f"{fit.r2_logit_p_click:.3f}), conversions {fit.r2_conversions}, top-1 "
        f"{fit.top1_agreement:.2f}, value share {fit.top1_value_share:.2f}"
    )
    del logger
    for seed in args.seeds:
        for name in args.policies:
            m = run_policy(
                _policy(name, catalog, model),
                seed,
                args.customers,
                args.days,
                catalog=catalog,
                model=response,
                world=lives,
            )
            metrics[seed][name] = {k: getattr(m, k) for k in KEPT}
            _say(
                f"{world} seed {seed} {name}: {m.clicks:,} clicks, expected conversions "
                f"{m.expected_conversions:.2f}, {m.wall_seconds:.0f} s"
            )
    names = list(metrics[args.seeds[0]])
    runs = list(metrics.values())

    def vs(key: str, to: str = "oracle") -> dict[str, Spread]:
        return {p: spread([_ratio(r[p][key], r[to][key]) for r in runs]) for p in names}

    vs_ceiling: dict[str, Spread] = {}
    if "nextbest" in names and "ceiling" in names:
        vs_ceiling = {
            k: spread([_ratio(r["nextbest"][k], r["ceiling"][k]) for r in runs])
            for k in ("clicks", "expected_clicks")
        }
    return {
        "world": world,
        "summary": lives.summary,
        "log": {
            "policy": "random",
            "seed": args.log_seed,
            "customers": args.log_customers,
            "days": args.days,
            "record_share": args.record_share,
            "seconds": round(log_seconds, 1),
        },
        "fit": msgspec.to_builtins(fit),
        "model": {
            "kind": "sklearn HistGradientBoostingRegressor, squared error, offer categorical",
            "iterations": args.iterations,
            "click_rows": args.click_rows,
        },
        "seeds": args.seeds,
        "customers": args.customers,
        "days": args.days,
        "run": args.policies,
        "stored": source,
        "clicks_vs_oracle": msgspec.to_builtins(vs("clicks")),
        "expected_clicks_vs_oracle": msgspec.to_builtins(vs("expected_clicks")),
        "expected_value_vs_oracle": msgspec.to_builtins(vs("expected_value")),
        "nextbest_vs_ceiling": msgspec.to_builtins(vs_ceiling),
        "conversions": conversions_summary(metrics),
        "metrics": {str(seed): r for seed, r in metrics.items()},
        "wall_seconds": round(time.perf_counter() - began, 1),
    }


def markdown_row(result: dict[str, Any]) -> str:
    def s(d: dict[str, Any], key: str) -> str:
        v = d.get(key)
        return _cell(Spread(**v)) if v else "-"

    c, e, f = result["clicks_vs_oracle"], result["expected_clicks_vs_oracle"], result["fit"]
    v, vs = result.get("expected_value_vs_oracle"), result["nextbest_vs_ceiling"]
    if v is None:  # written before the figure was kept: from the runs' metrics
        runs = list(result["metrics"].values())
        v = {}
        for p in c:
            ratios = [_ratio(r[p]["expected_value"], r["oracle"]["expected_value"]) for r in runs]
            v[p] = msgspec.to_builtins(spread(ratios))
    return (
        f"| `{result['world']}` | {f['r2_p_click']:.2f} / {f['r2_p_click_x_convert']:.2f} "
        f"| {s(c, 'ceiling')} / {s(e, 'ceiling')} / {s(v, 'ceiling')} "
        f"| {s(c, 'nextbest')} / {s(e, 'nextbest')} / {s(v, 'nextbest')} "
        f"| {s(vs, 'clicks')} / {s(vs, 'expected_clicks')} |"
    )


def conversions_row(result: dict[str, Any]) -> str:
    """Expected conversions (mean of the seeds) and the gap to the oracle closed, per
    policy; nextbest / the better ceiling; whether issue #14's 40 % is reachable."""
    c = result.get("conversions") or {}
    mean, closed = c.get("expected_conversions", {}), c.get("gap_closed", {})

    def cell(p: str) -> str:
        if p not in mean:
            return "-"
        gap = closed.get(p)
        return f"{mean[p]:.1f}" + (f" ({gap:+.0%})" if gap is not None else "")

    ratio = c.get("nextbest_vs_best_ceiling")
    reach = c.get("reachable_40")
    verdict = "-" if reach is None else ("yes" if reach else "**no**")
    e = result["expected_clicks_vs_oracle"]
    clicks = " / ".join(
        _cell(Spread(**e[p])) if p in e else "-" for p in ("ceiling", "ceiling_conv")
    )
    return (
        f"| `{result['world']}` | "
        + " | ".join(cell(p) for p in CONVERSION_POLICIES)
        + f" | {'-' if ratio is None else f'{ratio:.2f}'} | {verdict} | {clicks} |"
    )


CONVERSION_POLICIES = ("greedy_recent", "nextbest", "ceiling", "ceiling_conv", "oracle")
CONVERSION_HEADER = (
    "| world | expected conversions (gap closed): "
    + " | ".join(CONVERSION_POLICIES)
    + " | nextbest / better ceiling | 40 % reachable "
    + "| expected clicks / oracle's: ceiling / ceiling_conv |\n|"
    + " --- |" * (len(CONVERSION_POLICIES) + 4)
)

HEADER = (
    "| world | held-out R²: P(click) / P(click) x P(conv) "
    "| ceiling / oracle: clicks / expected clicks / expected value "
    "| nextbest / oracle: clicks / expected clicks / expected value "
    "| nextbest / ceiling: clicks / expected clicks |\n| --- | --- | --- | --- | --- |"
)


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="hidden_needs", help="comma-separated zoo worlds")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--customers", type=int, default=2_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--log-seed", type=int, default=101)
    ap.add_argument("--log-customers", type=int, default=10_000)
    ap.add_argument("--record-share", type=float, default=1.0, help="decisions recorded")
    ap.add_argument("--iterations", type=int, default=200, help="boosting iterations")
    ap.add_argument("--click-rows", type=int, default=300_000, help="rows of the P(click) fit")
    ap.add_argument(
        "--policies",
        default="ceiling,nextbest,oracle",
        help="the policies run (ceiling, ceiling_conv or any zoo policy)",
    )
    ap.add_argument(
        "--stored",
        default="",
        help="a folder of bench/quality.py's zoo-<world>.json: greedy_recent and oracle "
        "taken from it instead of run",
    )
    ap.add_argument(
        "--stored-nextbest",
        default="",
        help="FILE:VARIANT of bench/variants.py's runs: nextbest taken from it",
    )
    ap.add_argument("--catalog", default=str(ROOT / "examples" / "bank"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument(
        "--table", action="store_true", help="only print the table of the worlds' files in --out"
    )
    args = ap.parse_args(argv)
    args.worlds = [w for w in args.worlds.split(",") if w]
    for w in args.worlds:
        if w not in WORLDS:
            ap.error(f"unknown world {w!r}; use one of {', '.join(WORLDS)}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.policies = [p for p in args.policies.split(",") if p]
    if "oracle" not in args.policies and not args.stored:
        ap.error("--policies must include oracle (every figure is a share of its)")
    if args.stored and {"greedy_recent", "oracle"} & set(args.policies):
        ap.error("--stored gives greedy_recent and oracle: do not run them too")
    if args.stored_nextbest and "nextbest" in args.policies:
        ap.error("--stored-nextbest gives nextbest: do not run it too")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.table:
        for world in args.worlds:
            rows.append(orjson.loads((out / f"ceiling-{world}.json").read_bytes()))
        print_tables(rows)
        return 0
    for world in args.worlds:
        result = run_world(world, args)
        machine = machine_info()
        machine["load_average_end"] = load_average()
        payload = {
            "benchmark": "ceiling",
            "date": now_iso(),
            "command": command_line(),
            "machine": machine,
            **result,
        }
        (out / f"ceiling-{world}.json").write_bytes(
            orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
        rows.append(result)
    print_tables(rows)
    return 0


def print_tables(results: Sequence[dict[str, Any]]) -> None:
    print(HEADER + "\n" + "\n".join(markdown_row(r) for r in results), flush=True)
    if any("conversions" in r for r in results):
        print(flush=True)
        print(CONVERSION_HEADER, flush=True)
        print("\n".join(conversions_row(r) for r in results), flush=True)


if __name__ == "__main__":
    sys.exit(main())
