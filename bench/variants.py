"""Screen a change to nextbest's learning on the zoo: rerun the ``nextbest`` policy alone and
read it against the other policies' stored runs (issue #14's "take the gap apart").

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/variants.py --variant base \\
        --worlds shelf,wrong_priors,hidden_needs,age_appeal --seeds 1
    .venv/bin/python bench/variants.py --table      # every variant run so far
    .venv/bin/python bench/variants.py --diff --base shared --seeds 1,2,3 --worlds ... \\
        --out bench/results/variants/runs_diag.jsonl   # per seed, against shared

The baselines (``none``, ``greedy_recent``, ``prior``, ``oracle``) do not depend on the
engine's learning, so their figures per world and seed are read from a stored zoo run
(``--reference``: folders of ``zoo-<world>.json`` written by ``bench/quality.py --worlds``
at the same size); only ``nextbest`` runs, with the variant applied in memory. Each run is
appended to ``--out`` (JSON lines: variant, world, seed, the run's ``Metrics``) as soon as it
is done; ``--table`` prints per variant and world the mean over the seeds run of the main
yardstick, expected clicks / the oracle's (true click probabilities summed: no draw noise),
then counted clicks / oracle's, expected value / oracle's and true incremental conversions.

A variant is a named patch (``VARIANTS``): a catalog override (learning settings of the
example bank's placements), a model setting, or a feature left out. ``base`` is the engine
before issue #14's "own gap" work (read from the stored zoo runs), ``final`` the engine after
it; the rest rebuild the steps between (BENCHMARKS.md, "Closing nextbest's own gap").
``head`` and ``shared`` (the engine as committed: the contextual placements learn one model)
are "One model for every placement"; ``--summary shared --base head`` prints its table.
``shared_thompson`` and the ``curse_*`` variants are "The winner's curse on valuable offers"
(the latter run only with ``bench/results/variants/winners_curse.patch`` applied).
The ``diag_*`` variants are "Per-coordinate steps" (run only with
``bench/results/variants/per_coordinate.patch`` applied; results in ``runs_diag.jsonl``).
Results: ``bench/results/variants/runs.jsonl``. "Exploration on today's engine" reran
``conv_cell_kpi``, ``greedy`` and ``shared_thompson`` (``--reference
bench/results/zoo_1207_ec``, ``--out bench/results/variants/runs_explore.jsonl``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec

from _common import ROOT, machine_info, now_iso
from nextbest.catalog.compiled import Catalog
from nextbest.sim.generate import DEFAULT_START
from nextbest.sim.loop import run_policy
from nextbest.sim.worlds import world_catalog, world_named, world_response

REFERENCE = [ROOT / "bench/results/zoo_intent", ROOT / "bench/results/zoo_intent_b"]
OUT = ROOT / "bench/results/variants/runs.jsonl"
#: the folders ``_reference`` reads (``--reference`` replaces them)
REFERENCE_IN_USE = list(REFERENCE)

Patch = Callable[[Catalog], contextlib.AbstractContextManager[Catalog]]


@contextlib.contextmanager
def _same(catalog: Catalog) -> Iterator[Catalog]:
    yield catalog


def _with_learning(catalog: Catalog, change: Callable[[Any], Any]) -> Catalog:
    """A copy of ``catalog`` whose learning placements' ``LearningSpec`` is ``change``d."""
    import copy

    spec = catalog.spec
    placements = tuple(
        p if p.learning is None else msgspec.structs.replace(p, learning=change(p.learning))
        for p in spec.placements
    )
    out = copy.copy(catalog)
    out.spec = msgspec.structs.replace(spec, placements=placements)
    out.placements = {p.id: p for p in placements}
    return out


@contextlib.contextmanager
def _explore(catalog: Catalog, policy: Any) -> Iterator[Catalog]:
    """Every learning placement explores with ``policy``."""
    yield _with_learning(catalog, lambda lr: msgspec.structs.replace(lr, explore=policy))


def _model(kind: str) -> Patch:
    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        from nextbest.catalog.model import ModelKind

        yield _with_learning(catalog, lambda lr: msgspec.structs.replace(lr, model=ModelKind(kind)))

    return patch


def _config(**fields: Any) -> Patch:
    """The contextual model's defaults changed (``ContextualConfig``)."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        from nextbest.learn import contextual

        old = contextual.ContextualLogistic.__init__

        def init(self: Any, config: Any = None) -> None:
            old(self, config if config is not None else contextual.ContextualConfig(**fields))

        with mock.patch.object(contextual.ContextualLogistic, "__init__", init):
            yield catalog

    return patch


def _thompson(**fields: Any) -> Patch:
    """Every learning placement explores by Thompson sampling, the contextual model with
    ``fields`` (its level's precision)."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        from nextbest.catalog.model import Thompson

        with _config(**fields)(catalog), _explore(catalog, Thompson()) as patched:
            yield patched

    return patch


def _thompson_policy(**fields: Any) -> Any:
    from nextbest.catalog.model import Thompson

    return Thompson(**fields)


@contextlib.contextmanager
def _unbudgeted(catalog: Catalog) -> Iterator[Catalog]:
    """Every campaign may be explored without limit (``max_exploration`` 1)."""
    import copy

    campaigns = tuple(
        msgspec.structs.replace(c, max_exploration=1.0) for c in catalog.spec.campaigns
    )
    out = copy.copy(catalog)
    out.spec = msgspec.structs.replace(catalog.spec, campaigns=campaigns)
    yield out


def _without_age(inner: Patch) -> Patch:
    """``inner`` with the customers' age band (``age:<decade>``) left out of the features:
    the engine before the band was added."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        from nextbest.learn import learner

        old = learner.customer_features

        def without(*a: Any, **kw: Any) -> Any:
            return {k: v for k, v in old(*a, **kw).items() if not k.startswith("age:")}

        with mock.patch.object(learner, "customer_features", without), inner(catalog) as patched:
            yield patched

    return patch


def _unshared(inner: Patch = _same) -> Patch:
    """``inner`` with every placement learning a model of its own (``learning.shared``
    false): the engine before the contextual placements shared one model."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        with inner(
            _with_learning(catalog, lambda lr: msgspec.structs.replace(lr, shared=False))
        ) as p:
            yield p

    return patch


def _scoring(**fields: Any) -> Patch:
    """The catalog's ``scoring`` settings changed (``ScoringSpec``): what the learner reads
    of them (``conversion_strength``), not the compiled offers' priors."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        import copy

        out = copy.copy(catalog)
        out.scoring = msgspec.structs.replace(catalog.scoring, **fields)
        yield out

    return patch


def _factors(fixed: tuple[float, ...]) -> Patch:
    """The conversion model's intent factors fixed at ``fixed`` (a diagnosis)."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        from nextbest.learn import conversion

        def factors(self: Any) -> list[float]:
            return list(fixed)

        with mock.patch.object(conversion.ConversionModel, "factors", factors):
            yield catalog

    return patch


def _intent_strength(a: float) -> Patch:
    """The conversion model's intent factors with a prior worth ``a`` expected conversions."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        from nextbest.learn import conversion

        with mock.patch.object(conversion, "INTENT_STRENGTH", a):
            yield catalog

    return patch


def _both(first: Patch, second: Patch) -> Patch:
    """``first`` then ``second``, both applied."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        with first(catalog) as one, second(one) as two:
            yield two

    return patch


def _evidence(floor: float) -> Patch:
    """Epsilon-greedy 0.05 that decays with the candidates' evidence (``by_evidence``)."""

    def patch(catalog: Catalog) -> contextlib.AbstractContextManager[Catalog]:
        from nextbest.catalog.model import EpsilonGreedy

        return _explore(catalog, EpsilonGreedy(epsilon=0.05, by_evidence=True, floor=floor))

    return patch


#: each refit of the run in progress (``_refit``), written with its row (``run``)
REFIT_STATS: list[Any] = []
#: the run in progress' progressive validation of its contextual models (``_refit``)
PROGRESSIVE: dict[int, Any] = {}


def _refit(lam: float, every: int = 5_000, refits: bool = True, intercept: bool = True) -> Patch:
    """Every ``every`` learned events, the contextual click model refitted to convergence on
    every event it has learned so far, L2 ``lam`` towards its prior (``bench/refit.py``);
    online learning continues from the refitted weights in between. Each event's log loss
    under the model just before it learns it is recorded (progressive validation, blocks of
    ``every``); ``refits`` False: only that (the engine's own learning, observed);
    ``intercept`` False: the refit keeps the online intercept."""

    @contextlib.contextmanager
    def patch(catalog: Catalog) -> Iterator[Catalog]:
        from nextbest.learn import contextual
        from refit import Examples, Progressive, refit

        old = contextual.ContextualLogistic.learn_one
        seen: dict[int, Examples] = {}

        def learn_one(
            self: Any,
            x: Any,
            offer: Any,
            position: int,
            reward: float,
            offset: float = 0.0,
            extra: Any = None,
        ) -> None:
            scored = PROGRESSIVE.setdefault(id(self), Progressive(every))
            scored.add(self.predict_one(x, offer, position, offset, extra), reward)
            old(self, x, offer, position, reward, offset=offset, extra=extra)
            if not refits:
                return
            examples = seen.setdefault(id(self), Examples())
            examples.add(self, x, offer, position, reward, offset, extra)
            if self.n_learned % every == 0:
                _refit_now(self, examples, lam, lambda m, e, k: refit(m, e, k, intercept=intercept))

        REFIT_STATS.clear()
        PROGRESSIVE.clear()
        with mock.patch.object(contextual.ContextualLogistic, "learn_one", learn_one):
            yield catalog

    return patch


def _refit_now(model: Any, examples: Any, lam: float, refit: Callable[..., Any]) -> None:
    stats = refit(model, examples, lam)
    REFIT_STATS.append(stats)
    print(
        f"  refit at {stats.events}: {stats.rows} rows x {stats.columns} columns, "
        f"{stats.iterations} iterations, {stats.seconds:.2f} s, loss "
        f"{stats.loss_before:.1f} -> {stats.loss_after:.1f}, offset weight "
        f"{stats.offset[0]:.3f} -> {stats.offset[1]:.3f}, intercept "
        f"{stats.intercept[0]:.3f} -> {stats.intercept[1]:.3f}",
        file=sys.stderr,
        flush=True,
    )


def _greedy(catalog: Catalog) -> contextlib.AbstractContextManager[Catalog]:
    from nextbest.catalog.model import Greedy

    return _explore(catalog, Greedy())


#: Every variant screened, named as in BENCHMARKS.md ("Closing nextbest's own gap"). ``base``
#: is the engine before that work (its runs are the stored zoo's ``nextbest``: it cannot be
#: rebuilt from this code); ``final`` the engine as committed after it: each candidate's
#: history, each offer's level by a Newton step (precision 10), the age band, epsilon-greedy.
VARIANTS: dict[str, Patch] = {
    "base": _same,  # not runnable here: read from REFERENCE
    "hist": _without_age(_config(level_precision=0.0)),
    "hist_level1": _without_age(_config(level_precision=1.0)),
    "hist_level5": _without_age(_config(level_precision=5.0)),
    "hist_level10": _without_age(_config(level_precision=10.0)),
    "hist_level20": _without_age(_config(level_precision=20.0)),
    "hist_level10_thompson": _without_age(_thompson(level_precision=10.0)),
    "hist_level10_age10": _same,
    # ``final*``: each placement learning alone, as then (``learning.shared`` came after)
    "final": _unshared(),
    "final_greedy": _unshared(_greedy),
    "final_thompson": _unshared(_thompson(level_precision=10.0)),
    "final_bayes_logistic": _unshared(_model("bayes_logistic")),
    # BENCHMARKS.md, "One model for every placement": ``head`` is ``final`` on the code of
    # that session's start (rev e5b2bac: after the merges it no longer reproduces
    # ``final``'s runs bit for bit), each placement learning alone; ``pooled`` (each offer's
    # level pooled over the placements, the rest apart) and ``one_model`` (the first form of
    # ``shared``) were measured with the code of
    # ``bench/results/variants/pooled_levels_and_one_model.patch`` and are not rebuilt here;
    # ``shared`` is the engine as committed: the contextual placements learn one model.
    "head": _unshared(),
    "pooled": _same,  # not runnable here: the patch above
    "one_model": _same,  # not runnable here: the patch above; ``shared`` is the same model
    "shared": _same,
    # the conversion model's prior worth 5 clicks instead of the catalog's 20 (not kept)
    "shared_conv5": _scoring(conversion_strength=5.0),
    # own-topic interest bins (edges 0.3, 0.7, 1.2, 2.0 on ``interest:<T>``) with the shared
    # model: measured with ``bench/results/variants/own_interest_bins.patch``, not kept
    "shared_ibins": _same,  # not runnable here
    # the shared model's SGD step halved, 0.005: it sees four times the feedback (not kept)
    "shared_lr005": _config(lr=0.005),
    # BENCHMARKS.md, "The winner's curse on valuable offers" (none kept; the ``curse_*``
    # variants need ``bench/results/variants/winners_curse.patch`` applied, ``WITH_PATCH``):
    # the shared model with Thompson sampling on the offers' levels instead of
    # epsilon-greedy 0.05 ...
    "shared_thompson": _thompson(level_precision=10.0),
    # ... a calibration ratio per offer (observed clicks over the model's own predictions,
    # a prior worth ``calibration_strength`` expected clicks; ``calibration_memory``: the
    # events after which old ones weigh 1/e) ...
    "curse_calib5": _config(calibration_strength=5.0),
    "curse_calib5_m2000": _config(calibration_strength=5.0, calibration_memory=2000.0),
    "curse_calib20": _config(calibration_strength=20.0),
    "curse_calib5_down": _config(
        calibration_strength=5.0, calibration_memory=2000.0, calibration_raises=False
    ),
    # ... the one-sided ratio only for the candidates worth more than their median ...
    "curse_calib5_down_above": _config(
        calibration_strength=5.0,
        calibration_memory=2000.0,
        calibration_raises=False,
        calibration_above_median=True,
    ),
    # ... and each candidate's log-odds lowered by ``caution`` x its level's standard
    # deviation x log(1 + worth / the candidates' median worth)
    "curse_caution1": _config(caution=1.0),
    "curse_caution2": _config(caution=2.0),
    # ... only above the candidates' median worth: x max(0, log(worth / median))
    "curse_caution2_above": _config(caution=2.0, caution_above_median=True),
    # BENCHMARKS.md, "Form or data": an own-topic activity gate (``own.active``, shared and
    # per offer) in the contextual model, run with ``bench/results/variants/own_active.patch``
    # applied (not kept: ``_same`` on this code); ``shared`` reran from a snapshot of the
    # committed code (the stored runs no longer reproduce, that section) ...
    "shared_active": _same,
    # ... the shared model's SGD step doubled, 0.02: is the gap learning speed? ...
    "shared_lr02": _config(lr=0.02),
    # ... and both (with the patch applied)
    "shared_active_lr02": _config(lr=0.02),
    # BENCHMARKS.md, "Per-coordinate steps" (none kept; the ``diag_*`` variants need
    # ``bench/results/variants/per_coordinate.patch`` applied, ``WITH_PATCH``): every weight
    # but the levels by a diagonal Newton step on its own evidence (precision from a prior,
    # growing by ``p (1 - p) x^2`` per event), prior ``weight_precision`` for the shared
    # weights (``topic:``, ``placement:``, ``pos:``, ``own.<f>``, ``hist.<f>``, ``offset``)
    # and ``cross_precision`` for the crosses (100: SGD 0.01's first step; 0: SGD)
    "diag_w20": _config(weight_precision=20.0),
    "diag_w30": _config(weight_precision=30.0),
    "diag_w50": _config(weight_precision=50.0),
    "diag_w100_c100": _config(weight_precision=100.0, cross_precision=100.0),
    "diag_w30_c100": _config(weight_precision=30.0, cross_precision=100.0),
    # BENCHMARKS.md, "Conversions per click" (issue #14), read against
    # ``bench/results/zoo_1207_ec`` (``--reference``) in expected conversions: ``conv_base``
    # is the engine as committed (it reproduces the stored nextbest) ...
    "conv_base": _same,
    # ... without exploration (what epsilon-greedy 0.05 costs) ...
    "conv_greedy": _greedy,
    # ... the intent factors fixed at 0.2 / 1 / 1.2 (a diagnosis, not a model: what the
    # conversion model's intent lever could give if it knew how little a click without
    # research converts) ...
    "conv_fixed_factors": _factors((0.2, 1.0, 1.2)),
    # ... the offers' base rates and the intent factors fitted together, service messages
    # out of the factors, the factors' prior worth 2 expected conversions (not kept: run only
    # with ``bench/results/variants/conversion_joint.patch`` applied, ``WITH_PATCH``; the
    # runs came from a snapshot of that code with the prior at 5, hence this setting) ...
    "conv_joint_a2": _intent_strength(2.0),
    # ... and that without exploration
    "conv_joint_a2_greedy": _both(_intent_strength(2.0), _greedy),
    # BENCHMARKS.md, "Conversions after the pension KPI fix" (issue #14; ``--reference
    # bench/results/zoo_1207_ec``, ``--out bench/results/variants/runs_kpi.jsonl``): the
    # engine with the example bank's pension offers measuring ``Application Started`` ...
    "kpi_fix": _same,
    # ... and ``conv_joint_a2`` on top of it (``conversion_joint.patch`` applied) ...
    "conv_joint_kpi": _intent_strength(2.0),
    # ... and that with each offer's own rate per intent level, the joint fit's prediction
    # its prior worth ``conversion_strength`` clicks (``conversion_cell.patch``, which holds
    # the joint fit too: kept, so it is the engine as committed since and ``conv_joint_kpi``
    # no longer rebuilds from this code)
    "conv_cell_kpi": _same,
    # BENCHMARKS.md, "The cold start" (issue #14): with ``--reference
    # bench/results/zoo_1207_seeds123`` and ``--out bench/results/variants/runs_cold.jsonl``
    # (``shared`` there: the stored zoo's nextbest runs, the engine as committed):
    # ``greedy`` explores nothing (the most cutting exploration can buy) ...
    "greedy": _greedy,
    # ... ``evidence_eps``: epsilon 0.05 scaled by the candidates' levels' variance share
    # (``EpsilonGreedy.by_evidence``, floor 0.2; needs ``bench/results/variants/
    # evidence_eps.patch`` applied, ``WITH_PATCH``; not kept)
    "evidence_eps": _evidence(0.2),
    # BENCHMARKS.md, "A periodic batch refit of the click model" (issue #14; ``--reference
    # bench/results/zoo_1207_ec``, ``--out bench/results/variants/runs_refit.jsonl``, against
    # ``conv_cell_kpi``): every 5,000 learned events the contextual click model refitted to
    # convergence on every event learned so far (L-BFGS, L2 ``lam`` towards 0, ``offset``
    # towards 1; ``bench/refit.py``), online SGD in between
    "refit_l1": _refit(1.0),
    "refit_l10": _refit(10.0),
    # ... both lost expected clicks where l10 lost less: is it overfitting? A stronger pull
    "refit_l100": _refit(100.0),
    # ``conv_cell_kpi`` observed: its progressive log loss, no refit (it reproduces its runs)
    "refit_none": _refit(0.0, refits=False),
    # ... and ``refit_l100`` keeping the online intercept (the weight a refit moves most)
    "refit_l100_b0": _refit(100.0, intercept=False),
    # BENCHMARKS.md, "Thompson sampling with a uniform share" (issue #14; ``--reference
    # bench/results/zoo_1207_ec``, ``--out bench/results/variants/runs_uniform.jsonl``, against
    # ``conv_cell_kpi``: the engine as committed, Thompson sampling without it): 5 % of
    # decisions order the pool uniformly at random, for full support offline
    "thompson_uniform5": lambda catalog: _explore(catalog, _thompson_policy(uniform=0.05)),
    # ... and with no campaign's exploration capped (``max_exploration`` 1 instead of 0.2):
    # does the budget, made for epsilon's 5 %, bind under Thompson sampling's 17-21 %?
    "thompson_unbudgeted": _unbudgeted,
}


#: variants whose settings exist only with a patch applied: by prefix, the patch and a
#: ``ContextualConfig`` field it adds
WITH_PATCH = {
    "curse_": ("bench/results/variants/winners_curse.patch", "calibration_strength"),
    "diag_": ("bench/results/variants/per_coordinate.patch", "weight_precision"),
    "evidence_": ("bench/results/variants/evidence_eps.patch", "by_evidence"),
}
#: variants that need the conversion model of a patch: by prefix, the patch and a name it
#: adds to ``nextbest.learn.conversion``
WITH_CONVERSION_PATCH = {
    "conv_joint": ("bench/results/variants/conversion_joint.patch", "JOINT_ROUNDS"),
    "conv_cell": ("bench/results/variants/conversion_cell.patch", "shrunk"),
}


def _needs(variant: str) -> str | None:
    """The patch ``variant`` needs and this code lacks (``WITH_PATCH``), or None."""
    from nextbest.catalog.model import EpsilonGreedy
    from nextbest.learn import conversion
    from nextbest.learn.contextual import ContextualConfig

    for prefix, (patch, field) in WITH_PATCH.items():
        owner = EpsilonGreedy if field == "by_evidence" else ContextualConfig
        if variant.startswith(prefix) and field not in owner.__struct_fields__:
            return patch
    for prefix, (patch, name) in WITH_CONVERSION_PATCH.items():
        if variant.startswith(prefix) and not hasattr(conversion, name):
            return patch
    return None


def _reference(world: str, seed: int, customers: int, days: int) -> dict[str, Any]:
    for folder in REFERENCE_IN_USE:
        path = folder / f"zoo-{world}.json"
        if path.exists():
            data = json.loads(path.read_bytes())
            if data["customers"] != customers or data["days"] != days:
                continue
            runs = data["metrics"].get(str(seed))
            if runs is not None:
                return dict(runs)
    raise SystemExit(f"no stored reference run for {world} seed {seed} at {customers} x {days}")


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.variant in ("base", "pooled", "one_model", "shared_ibins"):
        raise SystemExit(f"{args.variant} is not this code: its runs are stored")
    patch_file = _needs(args.variant)
    if patch_file is not None:
        raise SystemExit(f"{args.variant} needs {patch_file} applied (git apply)")
    patch = VARIANTS[args.variant]
    for world in args.worlds:
        lives = world_named(world)
        catalog = world_catalog(lives, str(ROOT / "examples" / "bank"), DEFAULT_START)
        model = world_response(lives)
        for seed in args.seeds:
            ref = _reference(world, seed, args.customers, args.days)
            with patch(catalog) as patched:
                m = run_policy(
                    "nextbest",
                    seed,
                    args.customers,
                    args.days,
                    catalog=patched,
                    model=model,
                    world=lives,
                )
            row = {
                "variant": args.variant,
                "world": world,
                "seed": seed,
                "customers": args.customers,
                "days": args.days,
                "date": now_iso(),
                "git": machine_info().get("git_revision"),
                "metrics": msgspec.to_builtins(m),
            }
            if REFIT_STATS:
                from refit import stats_row

                row["refit"] = stats_row(REFIT_STATS)
            if PROGRESSIVE:
                row["progressive"] = [p.row() for p in PROGRESSIVE.values()]
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            orc = ref["oracle"]
            print(
                f"[{time.strftime('%H:%M:%S')}] {args.variant} {world} s{seed}: "
                f"expected {m.expected_clicks / orc['expected_clicks']:.3f} "
                f"(greedy_recent "
                f"{ref['greedy_recent']['expected_clicks'] / orc['expected_clicks']:.3f}), "
                f"clicks {m.clicks / orc['clicks']:.3f}, "
                f"expected conversions {m.expected_conversions:.2f} (greedy_recent "
                f"{ref['greedy_recent']['expected_conversions']:.2f}, oracle "
                f"{orc['expected_conversions']:.2f}), {m.wall_seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )


def _rows(out: str) -> list[dict[str, Any]]:
    """The runs stored in ``out``: one file or several, comma-separated (read in order, so a
    later file's run of the same variant, world and seed wins)."""
    return [
        json.loads(line)
        for path in out.split(",")
        if path
        for line in Path(path).read_text().splitlines()
        if line
    ]


def table(args: argparse.Namespace) -> None:
    rows = _rows(args.out)
    by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["variant"], r["world"]), {})[r["seed"]] = r  # the latest run wins
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    worlds = list(dict.fromkeys(r["world"] for r in rows))
    print(
        "| variant | world | seeds | expected clicks / oracle | clicks / oracle "
        "| expected value / oracle | true incremental conversions (nextbest / greedy / oracle) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for v in variants:
        for w in worlds:
            seeds = by.get((v, w))
            if not seeds:
                continue
            e, c, val, inc, g_inc, o_inc = [], [], [], [], [], []
            for s, r in sorted(seeds.items()):
                ref = _reference(w, s, r["customers"], r["days"])
                m, o = r["metrics"], ref["oracle"]
                none = ref["none"]["conversions_total"]
                e.append(m["expected_clicks"] / o["expected_clicks"])
                c.append(m["clicks"] / o["clicks"])
                val.append(m["expected_value"] / o["expected_value"])
                inc.append(m["conversions_total"] - none)
                g_inc.append(ref["greedy_recent"]["conversions_total"] - none)
                o_inc.append(o["conversions_total"] - none)

            def mean(xs: list[float]) -> float:
                return sum(xs) / len(xs)

            print(
                f"| {v} | {w} | {','.join(str(s) for s in sorted(seeds))} "
                f"| {mean(e):.3f} | {mean(c):.3f} | {mean(val):.3f} "
                f"| {mean(inc):.1f} / {mean(g_inc):.1f} / {mean(o_inc):.1f} |"
            )


def _ceiling(world: str) -> dict[str, Any] | None:
    path = ROOT / "bench" / "results" / f"ceiling-{world}.json"
    return dict(json.loads(path.read_bytes())["metrics"]) if path.exists() else None


def _cell(xs: list[float], digits: int = 2, spread: bool = True) -> str:
    m = sum(xs) / len(xs)
    if not spread:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def _row(
    world: str,
    new: str,
    seeds: list[int],
    by: dict[tuple[str, str, int], dict[str, Any]],
    refs: dict[int, dict[str, Any]],
    base: str = "base",
) -> str:
    def ratio(variant: str, key: str, to: str = "oracle") -> list[float]:
        return [by[(variant, world, s)][key] / refs[s][to][key] for s in seeds]

    def inc(m: dict[str, Any], s: int) -> float:
        return float(m["conversions_total"] - refs[s]["none"]["conversions_total"])

    g = [inc(refs[s]["greedy_recent"], s) for s in seeds]
    b = [inc(by[(base, world, s)], s) for s in seeds]
    n = [inc(by[(new, world, s)], s) for s in seeds]
    o = [inc(refs[s]["oracle"], s) for s in seeds]
    gap = (sum(o) - sum(g)) / len(seeds)
    closed = f"{(sum(n) - sum(g)) / len(seeds) / gap:+.0%}" if gap > 0 else "- (undefined)"
    ceiling = _ceiling(world)
    vs_ceiling = "-"
    if ceiling is not None and all(str(s) in ceiling for s in seeds):
        top = {s: ceiling[str(s)]["ceiling"] for s in seeds}
        c = [by[(new, world, s)]["clicks"] / top[s]["clicks"] for s in seeds]
        e = [by[(new, world, s)]["expected_clicks"] / top[s]["expected_clicks"] for s in seeds]
        vs_ceiling = f"{_cell(c)}, **{_cell(e)}**"
    return (
        f"| `{world}` "
        f"| {_cell(ratio(base, 'expected_clicks'), 3, False)} -> "
        f"**{_cell(ratio(new, 'expected_clicks'), 3)}** "
        f"| {_cell(ratio(base, 'clicks'), 2, False)} -> **{_cell(ratio(new, 'clicks'))}** "
        f"| {_cell(ratio(new, 'clicks', 'prior'))}, "
        f"{_cell(ratio(new, 'expected_clicks', 'prior'))} "
        f"| {_cell(ratio(base, 'expected_value'), 3, False)} -> "
        f"{_cell(ratio(new, 'expected_value'), 3, False)} "
        f"| {_cell(g, 1, False)} / {_cell(b, 1, False)} / **{_cell(n, 1, False)}** / "
        f"{_cell(o, 1, False)} | {closed} | {vs_ceiling} |"
    )


def summary(args: argparse.Namespace) -> None:
    """Per world, mean of the seeds (lowest-highest): ``base`` against ``args.summary``, each
    against the oracle, ``prior``, ``greedy_recent`` and the observable ceiling where
    ``bench/ceiling.py`` measured it (BENCHMARKS.md's table)."""
    rows = _rows(args.out)
    by = {(r["variant"], r["world"], r["seed"]): r["metrics"] for r in rows}
    new, base = args.summary, args.base
    print(
        f"| world | expected clicks / oracle: {base} -> **new** "
        f"| clicks / oracle: {base} -> **new** "
        f"| new / prior: clicks, expected | expected value / oracle: {base} -> new "
        f"| true incremental conversions: greedy_recent / {base} / new / oracle | gap closed "
        "| new / ceiling: clicks, expected |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for world in args.worlds:
        seeds = [s for s in args.seeds if (new, world, s) in by and (base, world, s) in by]
        if seeds:
            refs = {s: _reference(world, s, args.customers, args.days) for s in seeds}
            print(_row(world, new, seeds, by, refs, base))


def conversions(args: argparse.Namespace) -> None:
    """Per variant in ``--out`` and world (mean of the seeds run): expected conversions after
    a click of the variant, greedy_recent and the oracle (``--reference``'s), the share of
    greedy_recent's gap to the oracle it closes, and expected clicks / the oracle's."""
    rows = _rows(args.out)
    by = {(r["variant"], r["world"], r["seed"]): r["metrics"] for r in rows}
    variants = [v for v in dict.fromkeys(r["variant"] for r in rows) if v in args.variants]
    print(
        "| variant | world | seeds | expected conversions: greedy_recent / stored nextbest / "
        "**variant** / oracle | gap closed: stored nextbest -> **variant** "
        "| expected clicks / oracle's: stored nextbest -> variant |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for v in variants:
        closed_all = []
        for w in args.worlds:
            seeds = [s for s in args.seeds if (v, w, s) in by]
            if not seeds:
                continue
            refs = {s: _reference(w, s, args.customers, args.days) for s in seeds}
            g = sum(refs[s]["greedy_recent"]["expected_conversions"] for s in seeds) / len(seeds)
            o = sum(refs[s]["oracle"]["expected_conversions"] for s in seeds) / len(seeds)
            n = sum(by[(v, w, s)]["expected_conversions"] for s in seeds) / len(seeds)
            b = sum(refs[s]["nextbest"]["expected_conversions"] for s in seeds) / len(seeds)
            runs = {
                "variant": [by[(v, w, s)] for s in seeds],
                "stored": [refs[s]["nextbest"] for s in seeds],
            }
            oracles = [refs[s]["oracle"]["expected_clicks"] for s in seeds]
            clicks = {
                k: sum(m["expected_clicks"] / oc for m, oc in zip(ms, oracles, strict=True))
                / len(seeds)
                for k, ms in runs.items()
            }

            closed = (n - g) / (o - g) if o > g else float("nan")
            was = (b - g) / (o - g) if o > g else float("nan")
            closed_all.append(closed)
            print(
                f"| `{v}` | `{w}` | {','.join(map(str, seeds))} | {g:.2f} / {b:.2f} / "
                f"**{n:.2f}** / {o:.2f} | {was:+.0%} -> **{closed:+.0%}** "
                f"| {clicks['stored']:.3f} -> {clicks['variant']:.3f} |"
            )
        if closed_all:
            print(f"| `{v}` | mean | | | {sum(closed_all) / len(closed_all):+.0%} | |")


def diff(args: argparse.Namespace) -> None:
    """Per variant in ``--out`` and world: ``args.base``'s expected clicks (then expected
    conversions, then expected value) / the stored oracle's for each seed, every other
    variant's difference from it on the same world and seed; the mean difference and the
    world-seeds it is better in."""
    rows = _rows(args.out)
    by = {(r["variant"], r["world"], r["seed"]): r["metrics"] for r in rows}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    refs = {
        (w, s): _reference(w, s, args.customers, args.days)
        for w in args.worlds
        for s in args.seeds
        if (args.base, w, s) in by
    }
    for key in ("expected_clicks", "expected_conversions", "expected_value"):
        print(f"\n{key} / the stored oracle's, seeds {' / '.join(map(str, args.seeds))}\n")
        print(
            "| variant | "
            + " | ".join(f"`{w}`" for w in args.worlds)
            + " | mean difference | world-seeds better |"
        )
        print("| --- |" + " --- |" * (len(args.worlds) + 2))
        for v in variants:
            cells, diffs = [], []
            for w in args.worlds:
                parts = []
                for s in args.seeds:
                    if (v, w, s) not in by or (w, s) not in refs:
                        parts.append("-")
                        continue
                    o = refs[(w, s)]["oracle"][key]
                    r, b = by[(v, w, s)][key] / o, by[(args.base, w, s)][key] / o
                    parts.append(f"{r:.3f}" if v == args.base else f"{r - b:+.3f}")
                    diffs.append(r - b)
                cells.append(" / ".join(parts))
            tail = "- | -"
            if v != args.base and diffs:
                better = sum(d > 0 for d in diffs)
                tail = f"{sum(diffs) / len(diffs):+.4f} | {better}/{len(diffs)}"
            print(f"| `{v}` | " + " | ".join(cells) + f" | {tail} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--variant", default="base", choices=sorted(VARIANTS))
    ap.add_argument("--worlds", default="shelf,wrong_priors,hidden_needs,age_appeal")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument(
        "--out", default=str(OUT), help="where runs go; to read, files may be comma-separated"
    )
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--summary", default="", help="a variant to set against --base per world")
    ap.add_argument("--base", default="base", help="the variant --summary is set against")
    ap.add_argument(
        "--diff", action="store_true", help="each variant's difference from --base per seed"
    )
    ap.add_argument(
        "--reference",
        default="",
        help="comma-separated folders of stored zoo runs (default: "
        + ", ".join(str(p.relative_to(ROOT)) for p in REFERENCE)
        + ")",
    )
    ap.add_argument(
        "--conversions",
        default="",
        help="comma-separated variants: expected conversions and the gap closed per world",
    )
    args = ap.parse_args()
    if args.reference:
        REFERENCE_IN_USE[:] = [ROOT / f for f in args.reference.split(",") if f]
    args.worlds = [w for w in args.worlds.split(",") if w]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.conversions:
        args.variants = [v for v in args.conversions.split(",") if v]
        conversions(args)
    elif args.diff:
        diff(args)
    elif args.summary:
        summary(args)
    elif args.table:
        table(args)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
