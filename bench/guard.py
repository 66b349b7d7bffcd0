"""The identity-theft guard on the synthetic bank with injected account takeovers, and what it
adds to a decision.

    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/guard.py          # ~10 min, 2 cores
    nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python bench/guard.py --quick  # smoke run

**Detection.** For each seed: ``--customers`` customers of the default world over
``--days`` days with ``sim.takeover`` on (devices, habits, trips, errands on sensitive
pages, a new device now and then; ``--share`` of them fall victim to one takeover after
``--warmup`` days), ingested in time order by an in-process engine on event time with the
example bank (its ``security`` section). The catalog's guard is wrapped by a recorder that
reads each watched session after every event it folds:

- ``robust``: the guard's own risk (``guard.score.assess``: per-customer likelihood ratios);
- ``river_hst``: river's Half-Space Trees (``anomaly.HalfSpaceTrees``, 25 trees of height 8,
  window 250), scoring then learning each step's ``guard.score.novelty`` (the same findings
  as numbers in [0, 1], learned across customers), on the same steps the guard judges (a
  customer with ``min_sessions`` learned sessions).

A session is a takeover when it used the fraudster's device. For each detector and
threshold: takeovers flagged (recall; of all injected, and of those whose victim had a
baseline), normal sessions flagged (false alarms per 10,000 normal sessions of known
customers), precision at the simulated prevalence and at 1 takeover in 10,000 sessions, and
the time to detect (watched events into the session, seconds from the fraudster's first
event). River's thresholds are fixed ones plus, per robust threshold, the one with the same
false alarms on that seed (recall at an equal false-alarm budget). The engine's outbox must
hold exactly one alert per flagged session (checked).

**Cost.** The same stream ingested by two engines, one with the example bank and one without
its ``security`` section (and without ``was_this_you``, which reads it), batch by batch in
turn (the order alternating, so both see the same machine): CPU µs per event; and the msgpack
bytes of a known customer's profile with the guard's state and without, and how many of the
guard state's objects the cyclic collector still tracks after a collection. Then decisions on
``home_feed`` (``decide.decide``, the pure pipeline, the learned placement's prior order) for
customers in a live session, at the time of their last event, each customer decided with
both catalogs one after the other (order alternating): p50 / p99 with the guard and without,
same run; and the same customers with their live session marked flagged (the "Was this
you?" path: commercial offers suppressed) against the catalog without the guard.
``--cost-only`` skips the detectors.

Results: ``bench/results/guard.json`` (``guard_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import orjson
import yaml

from _common import EXAMPLE_CATALOG, Run, add_run_args, latency_summary, log, table
from nextbest.bootstrap import MEMORY, build_engine
from nextbest.catalog.compiled import Catalog
from nextbest.clock import ClockKind
from nextbest.decide import DecisionRequest, decide
from nextbest.engine import Engine
from nextbest.events.model import Event
from nextbest.guard.score import NOVELTY_FEATURES, novelty
from nextbest.guard.watch import Guard, watches
from nextbest.profile.model import Profile
from nextbest.settings import Settings
from nextbest.sim.population import make_population
from nextbest.sim.takeover import Takeover, TakeoverLife, TakeoverParams
from nextbest.sim.world import CustomerSim, messages_of
from nextbest.sim.worlds import DEFAULT_WORLD, world_named, world_response
from nextbest.store.catalog_files import load_catalog

START = date(2026, 6, 1)
ROBUST_THRESHOLDS = (0.5, 0.7, 0.9, 0.99)
RIVER_THRESHOLDS = (0.6, 0.75, 0.9)


@dataclass
class Track:
    """One watched session, step by step: (step, time, robust risk so far, river score)."""

    customer: str
    started: float
    devices: set[str] = field(default_factory=set)
    judged: bool = False
    steps: list[tuple[int, float, float, float]] = field(default_factory=list)

    def first(self, detector: int, threshold: float) -> tuple[int, float] | None:
        """(step, time) the detector's score first reached ``threshold`` (2: robust, 3:
        river), or None."""
        for row in self.steps:
            if row[detector] >= threshold:
                return row[0], row[1]
        return None

    def peak(self, detector: int) -> float:
        return max((row[detector] for row in self.steps), default=0.0)


class Recorder:
    """The catalog's guard, watched (a ``profile.fold.Watcher``): folds as the guard does,
    then reads the session; scores river's detector on the same steps."""

    def __init__(self, guard: Guard, seed: int) -> None:
        from river import anomaly

        self.guard = guard
        self.tracks: dict[tuple[str, float], Track] = {}
        self.hst = anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=seed)
        self.river_ns = 0
        self.river_steps = 0

    def observe(self, profile: Profile, event: Event) -> None:
        self.guard.observe(profile, event)
        if not watches(profile, event) or profile.guard is None:
            return
        state = profile.guard
        s = state.session
        if s is None:
            return
        key = (profile.customer_id, s.started)
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = Track(profile.customer_id, s.started)
        track.devices.update(s.devices)
        river = 0.0
        if state.baseline.sessions >= self.guard.min_sessions:
            track.judged = True
            x = novelty(state.baseline, s)
            t = time.perf_counter_ns()
            river = self.hst.score_one(x)
            self.hst.learn_one(x)
            self.river_ns += time.perf_counter_ns() - t
            self.river_steps += 1
        track.steps.append((s.steps, event.timestamp, s.risk, river))


def _engine(catalog: Catalog) -> Engine:
    return build_engine(
        Settings(data=MEMORY, clock=ClockKind.EVENT), catalog=catalog, freeze_gc=False
    )


def _plain_catalog(folder: Path) -> Catalog:
    """The example bank without its ``security`` section and the offer that reads it."""
    shutil.copytree(EXAMPLE_CATALOG, folder)
    (folder / "security.yaml").unlink()
    offers = yaml.safe_load((folder / "offers.yaml").read_text())
    offers["offers"] = [o for o in offers["offers"] if o["id"] != "was_this_you"]
    (folder / "offers.yaml").write_text(yaml.safe_dump(offers, sort_keys=False))
    return load_catalog(folder)


def simulate(
    seed: int, customers: int, days: int, params: TakeoverParams
) -> tuple[list[list[dict[str, Any]]], list[Takeover], dict[str, int]]:
    """The days' messages (in time order) and the takeovers injected."""
    world = world_named(DEFAULT_WORLD)
    model = world_response(world)
    people = make_population(seed, customers, START, world.population)
    lives = [TakeoverLife(c, seed, days, params) for c in people]
    sims = [
        CustomerSim(c, seed, START, model, world.need_rate, world.life_events, life)
        for c, life in zip(people, lives, strict=True)
    ]
    out = [[m for _, m in day] for day in messages_of(sims, days)]
    takeovers = [t for life in lives for t in life.takeovers]
    surprises = {
        "new_devices": sum(life.new_devices for life in lives),
        "errands": sum(life.errands for life in lives),
        "trips": sum(len(life.trips) for life in lives),
        "victims_drawn": sum(life.takeover_day >= 0 for life in lives),
    }
    return out, takeovers, surprises


def ingest(engine: Engine, days: list[list[dict[str, Any]]], batch: int = 500) -> None:
    """Every message in order, in batches."""
    for day in days:
        for i in range(0, len(day), batch):
            engine.ingest_batch(orjson.dumps({"batch": day[i : i + batch]}))


def ingest_both(
    catalog: Catalog, plain: Catalog, days: list[list[dict[str, Any]]], batch: int = 500
) -> tuple[Engine, Engine, dict[str, float]]:
    """The stream into an engine with the guard and one without, batch by batch in turn
    (the order alternating), so both see the same machine: CPU µs per event each (this
    process's CPU time, which a busy machine's other processes do not add to), with the
    cyclic collector off (one engine's allocations would start collections that walk the
    other's heap too; what the guard leaves for the collector is counted in ``_sizes``)."""
    guarded, without = _engine(catalog), _engine(plain)
    spent = {"with_guard": 0.0, "without_guard": 0.0}
    n = 0
    gc.collect()
    gc.disable()  # a collection started by one engine's allocations walks both engines' heaps
    try:
        for day in days:
            for i in range(0, len(day), batch):
                body = orjson.dumps({"batch": day[i : i + batch]})
                pair = [("with_guard", guarded), ("without_guard", without)]
                for name, engine in pair if n % 2 else pair[::-1]:
                    t = time.process_time()
                    engine.ingest_batch(body)
                    spent[name] += time.process_time() - t
                n += 1
    finally:
        gc.enable()
        gc.collect()
    messages = sum(len(d) for d in days)
    per_event = {k: round(v / messages * 1e6, 2) for k, v in spent.items()}
    per_event["added"] = round(per_event["with_guard"] - per_event["without_guard"], 2)
    return guarded, without, per_event


def _metrics(
    tracks: list[Track],
    takeovers: list[Takeover],
    detector: int,
    threshold: float,
) -> dict[str, Any]:
    fraud_devices = {t.device: t for t in takeovers}
    found: dict[str, Track] = {}  # takeover device -> its session
    normal = flagged_normal = 0
    for track in tracks:
        hit = track.devices & fraud_devices.keys()
        if hit:
            found[next(iter(hit))] = track
            continue
        normal += 1
        if track.first(detector, threshold) is not None:
            flagged_normal += 1
    caught = judged = 0
    steps: list[int] = []
    seconds: list[float] = []
    for device, takeover in fraud_devices.items():
        track = found.get(device)
        if track is None:
            continue
        judged += track.judged
        first = track.first(detector, threshold)
        if first is not None:
            caught += 1
            steps.append(first[0])
            seconds.append(max(0.0, first[1] - takeover.started))
    n = len(takeovers)
    recall = caught / n if n else 0.0
    fa_rate = flagged_normal / normal if normal else 0.0
    rare = 1e-4  # precision at 1 takeover in 10,000 sessions
    return {
        "threshold": threshold,
        "takeovers": n,
        "judged": judged,
        "caught": caught,
        "recall": round(recall, 3),
        "recall_judged": round(caught / judged, 3) if judged else None,
        "normal_sessions": normal,
        "false_alarms": flagged_normal,
        "false_alarms_per_10k": round(fa_rate * 1e4, 2),
        "precision": round(caught / (caught + flagged_normal), 3) if caught else 0.0,
        "precision_at_1_in_10k": round(recall * rare / (recall * rare + fa_rate * (1 - rare)), 3)
        if recall
        else 0.0,
        "steps_to_detect_p50": _q(steps, 50),
        "steps_to_detect_p90": _q(steps, 90),
        "seconds_to_detect_p50": _q(seconds, 50),
        "seconds_to_detect_p90": _q(seconds, 90),
    }


def _q(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1)], 1)


def _river_at_budget(tracks: list[Track], takeovers: list[Takeover], false_alarms: int) -> float:
    """The river threshold with at most ``false_alarms`` normal sessions flagged."""
    devices = {t.device for t in takeovers}
    peaks = sorted((t.peak(3) for t in tracks if not (t.devices & devices)), reverse=True)
    if false_alarms >= len(peaks):
        return 0.0
    return math.nextafter(peaks[false_alarms], math.inf)


def _by_trait(tracks: list[Track], takeovers: list[Takeover], threshold: float) -> dict[str, Any]:
    """Robust recall by what the fraudster did (same place, browse first ...)."""
    sessions = {d: t for t in tracks for d in t.devices}
    out: dict[str, list[int]] = {}
    for ato in takeovers:
        track = sessions.get(ato.device)
        hit = track is not None and track.first(2, threshold) is not None
        for trait in ato.traits or ["plain"]:
            row = out.setdefault(trait, [0, 0])
            row[0] += hit
            row[1] += 1
    return {k: {"caught": v[0], "of": v[1]} for k, v in sorted(out.items())}


def run_seed(
    seed: int, args: argparse.Namespace, catalog: Catalog, plain: Catalog
) -> dict[str, Any]:
    params = TakeoverParams(share=args.share, warmup_days=args.warmup)
    t = time.perf_counter()
    days, takeovers, surprises = simulate(seed, args.customers, args.days, params)
    messages = sum(len(d) for d in days)
    took = time.perf_counter() - t
    log(f"seed {seed}: {messages:,} messages, {len(takeovers)} takeovers ({took:.0f} s)")
    guarded, without, per_event = ingest_both(catalog, plain, days)
    log(f"seed {seed}: ingest µs per event {per_event}")
    out: dict[str, Any] = {
        "seed": seed,
        "messages": messages,
        "surprises": surprises,
        "takeovers": len(takeovers),
        "alerts_in_outbox": len(guarded.outbox.messages()),
        "ingest_us_per_event": per_event,
        "profile_bytes": _sizes(guarded, without),
        "decide": decision_cost(seed, args, catalog, plain, guarded, without),
    }
    guarded.release()
    without.release()
    gc.collect()
    if not args.cost_only:
        out.update(detection(seed, catalog, days, takeovers))
        assert out["alerts_in_outbox"] == out["sessions_flagged_at_catalog_threshold"]
    return out


def detection(
    seed: int, catalog: Catalog, days: list[list[dict[str, Any]]], takeovers: list[Takeover]
) -> dict[str, Any]:
    """Both detectors over the stream, through the recorder."""
    guard = catalog.guard
    assert guard is not None
    recorder = Recorder(guard, seed)
    watched = msgspec.structs.replace(catalog.fold_config, watch=recorder)
    catalog.fold_config = watched
    try:
        engine = _engine(catalog)
        ingest(engine, days)
    finally:
        catalog.fold_config = msgspec.structs.replace(watched, watch=guard)
    tracks = list(recorder.tracks.values())
    alerts = engine.outbox.messages()
    flagged = sum(1 for t in tracks if t.first(2, guard.threshold) is not None)
    assert len(alerts) == flagged, (len(alerts), flagged)
    engine.release()
    robust = [_metrics(tracks, takeovers, 2, th) for th in ROBUST_THRESHOLDS]
    river = [_metrics(tracks, takeovers, 3, th) for th in RIVER_THRESHOLDS]
    budget = []
    for row in robust:
        th = _river_at_budget(tracks, takeovers, row["false_alarms"])
        budget.append({"matches_robust": row["threshold"], **_metrics(tracks, takeovers, 3, th)})
    return {
        "sessions_watched": len(tracks),
        "sessions_flagged_at_catalog_threshold": flagged,
        "robust": robust,
        "river_hst": river,
        "river_hst_at_robust_false_alarms": budget,
        "robust_recall_by_trait": _by_trait(tracks, takeovers, guard.threshold),
        "river_us_per_step": round(recorder.river_ns / 1e3 / max(recorder.river_steps, 1), 1),
    }


def _sizes(with_guard: Engine, without: Engine) -> dict[str, Any]:
    """msgpack bytes of the known customers' profiles with the guard and without, and of
    the guard's state alone."""
    enc = msgspec.msgpack.encode
    known = [p for p in with_guard.profiles() if p.user_id is not None]
    states = [len(enc(p.guard)) for p in known if p.guard is not None]
    gc.collect()  # tuples and dicts of plain values are untracked by a collection
    tracked = sum(_tracked(p.guard) for p in known if p.guard is not None)
    plain = [len(enc(p)) for p in without.profiles() if p.user_id is not None]
    return {
        "known_profiles": len(known),
        "mean_with_guard": round(sum(len(enc(p)) for p in known) / max(len(known), 1)),
        "mean_without_guard": round(sum(plain) / max(len(plain), 1)),
        "guard_state_mean": round(sum(states) / max(len(states), 1)),
        "guard_state_max": max(states, default=0),
        "gc_tracked_per_guard_state": round(tracked / max(len(states), 1), 2),
    }


def _tracked(state: Any) -> int:
    """Objects of a guard state the cyclic collector still tracks (its sequences and maps)."""
    n = 0
    for part in (state.baseline, state.session):
        if part is None:
            continue
        for name in part.__struct_fields__:
            value = getattr(part, name)
            if isinstance(value, tuple | list | dict) and gc.is_tracked(value):
                n += 1
    return n


def decision_cost(
    seed: int,
    args: argparse.Namespace,
    catalog: Catalog,
    plain: Catalog,
    with_guard: Engine,
    without: Engine,
) -> dict[str, Any]:
    """``decide`` on home_feed with the guard's catalog and without, same customers, same
    moments, interleaved."""
    rng = random.Random(seed)
    request = DecisionRequest(placement="home_feed")
    live: list[tuple[Profile, Profile, float]] = []
    for profile in with_guard.profiles():
        state = profile.guard
        if state is None or state.session is None:
            continue
        other = without.profile(profile.customer_id)
        if other is not None:
            live.append((profile, other, state.session.last_seen))
    rng.shuffle(live)
    live = live[: args.decisions]
    calls = [live[i % len(live)] for i in range(args.calls)]
    a, b = _interleaved(catalog, plain, request, calls)
    flagged = [(_flagged(p), q, now) for p, q, now in live]
    fa, fb = _interleaved(
        catalog, plain, request, [flagged[i % len(flagged)] for i in range(len(calls))]
    )
    shown = decide(catalog, flagged[0][0], request, flagged[0][2], "d")
    return {
        "customers": len(live),
        "calls": len(calls),
        "with_guard": a,
        "without_guard": b,
        "added_us": {q: round(a[q] - b[q], 2) for q in ("mean_us", "p50_us", "p99_us")},
        "flagged_with_guard": fa,
        "flagged_without_guard": fb,
        "flagged_added_us": {q: round(fa[q] - fb[q], 2) for q in ("mean_us", "p50_us", "p99_us")},
        "flagged_items": [i.offer_id for i in shown.items],
    }


def _flagged(profile: Profile) -> Profile:
    """A copy of ``profile`` whose live session the guard flagged."""
    copy = msgspec.msgpack.decode(msgspec.msgpack.encode(profile), type=Profile)
    assert copy.guard is not None
    assert copy.guard.session is not None
    copy.guard.session.risk = 0.999
    copy.guard.session.flagged_step = max(copy.guard.session.steps, 1)
    return copy


def _interleaved(
    catalog: Catalog,
    plain: Catalog,
    request: DecisionRequest,
    calls: list[tuple[Profile, Profile, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    pc = time.perf_counter_ns
    for p, q, now in calls[:500]:  # warm-up
        decide(catalog, p, request, now, "d")
        decide(plain, q, request, now, "d")
    with_ns: list[int] = []
    without_ns: list[int] = []
    gc.collect()
    for i, (p, q, now) in enumerate(calls):
        if i % 2:
            t = pc()
            decide(catalog, p, request, now, "d")
            with_ns.append(pc() - t)
            t = pc()
            decide(plain, q, request, now, "d")
            without_ns.append(pc() - t)
        else:
            t = pc()
            decide(plain, q, request, now, "d")
            without_ns.append(pc() - t)
            t = pc()
            decide(catalog, p, request, now, "d")
            with_ns.append(pc() - t)
    return latency_summary(with_ns), latency_summary(without_ns)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "guard")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--customers", type=int, default=4_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--share", type=float, default=0.05, help="customers who fall victim")
    ap.add_argument("--warmup", type=int, default=21, help="days before any takeover")
    ap.add_argument("--decisions", type=int, default=2_000, help="customers decided for")
    ap.add_argument("--calls", type=int, default=20_000, help="decisions timed per catalog")
    ap.add_argument(
        "--cost-only", action="store_true", help="only what the guard costs (no detectors)"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.customers, args.days, args.calls, args.seeds = 300, 35, 2_000, [1]
    args.name = args.name or ("guard_quick" if args.quick else "guard")
    run = Run("guard", args, "river")
    catalog = load_catalog(EXAMPLE_CATALOG)
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        plain = _plain_catalog(Path(tmp) / "bank")
    results = [run_seed(seed, args, catalog, plain) for seed in args.seeds]
    _print(results)
    run.write(
        {
            "features": list(NOVELTY_FEATURES),
            "robust_thresholds": list(ROBUST_THRESHOLDS),
            "river_thresholds": list(RIVER_THRESHOLDS),
            "catalog_threshold": catalog.guard.threshold if catalog.guard else None,
            "seeds": results,
        }
    )
    return 0


def _print(results: list[dict[str, Any]]) -> None:
    headers = [
        "seed",
        "detector",
        "threshold",
        "recall",
        "recall (baseline)",
        "FA / 10k",
        "precision",
        "prec @1e-4",
        "steps p50/p90",
        "s p50/p90",
    ]
    rows = []
    for r in results:
        if "robust" not in r:
            continue
        for name, key in (
            ("robust", "robust"),
            ("river HST", "river_hst"),
            ("river HST, robust's FA", "river_hst_at_robust_false_alarms"),
        ):
            for m in r[key]:
                rows.append(
                    [
                        r["seed"],
                        name,
                        f"{m['threshold']:.6g}",
                        m["recall"],
                        m["recall_judged"],
                        m["false_alarms_per_10k"],
                        m["precision"],
                        m["precision_at_1_in_10k"],
                        f"{m['steps_to_detect_p50']}/{m['steps_to_detect_p90']}",
                        f"{m['seconds_to_detect_p50']}/{m['seconds_to_detect_p90']}",
                    ]
                )
    print()
    print(table("takeovers detected", headers, rows))
    for r in results:
        d = r["decide"]
        print(
            f"\nseed {r['seed']}: {r['takeovers']} takeovers, {r['alerts_in_outbox']} alerts; "
            f"ingest µs/event {r['ingest_us_per_event']}"
        )
        print(f"profile bytes: {r['profile_bytes']}")
        if "robust" in r:
            print(f"sessions watched: {r['sessions_watched']:,}")
            print(f"robust recall by trait at the catalog threshold: {r['robust_recall_by_trait']}")
        print(
            f"decide home_feed ({d['calls']:,} calls each): with the guard p50 "
            f"{d['with_guard']['p50_us']} p99 {d['with_guard']['p99_us']} µs, without p50 "
            f"{d['without_guard']['p50_us']} p99 {d['without_guard']['p99_us']} µs; added "
            f"{d['added_us']}; flagged sessions: with p50 {d['flagged_with_guard']['p50_us']} "
            f"p99 {d['flagged_with_guard']['p99_us']} µs, added {d['flagged_added_us']}, "
            f"shown {d['flagged_items']}"
        )


if __name__ == "__main__":
    sys.exit(main())
