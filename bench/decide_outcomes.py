"""``bench/decide.py --learning ... --outcomes``: decisions timed in a stream that carries
conversion outcomes (issue #14: what the conversion model's fit costs a decision).

The decide figures of ``bench/decide.py`` come from decisions with no feedback between them,
so the conversion model never learns an outcome while they are timed, and never refits
(``learn.conversion``). This phase runs after every other one, on the same engine:

* the clock starts one attribution window (7 days) after the training began and moves as
  the training did (``--train-minutes`` over ``--train-decisions`` decisions), so the
  training's clicks on commercial offers, which got no KPI event, close their attribution
  windows as misses at the rate they were made;
* every timed decision gets the training's feedback (a ``Promotion Viewed`` per item, a
  ``Promotion Clicked`` for about ``--click-rate`` of them; a click on a service message is
  its own KPI event, so it converts at once), and a commercial click converts with
  probability ``--conversion-rate``: its ``Product Opened`` (the product of the offer's
  topic) comes 1-30 minutes later;
* each event is ingested (``engine.ingest``, untimed apart) when the clock reaches it,
  before the next decision: outcomes arrive at about the rate of clicks, interleaved with
  decisions as on a live site.

Reported: ``engine.decide`` over the phase (after ``--warmup`` untimed ones, capped at a tenth),
apart for the decisions right after an outcome was learned and the others; the outcomes and,
where the model counts them (``ConversionModel.fits``), the fits; the ingest calls (apart
for those that learned an outcome); and ``engine.profile`` on the same customers right after
(the same-run baseline ``bench/decide.py`` prints).
"""

from __future__ import annotations

import argparse
import heapq
import random
import time
from typing import Any

from _common import QUANTILES, latency_summary, log, ratios, table, time_calls
from catalog_gen import BENCH_PLACEMENT, TOPIC_PAGES
from decide_learning import ClickWorld, feedback_event
from nextbest.clock import FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName

__all__ = ["add_args", "report", "run"]

REQUEST = DecisionRequest(placement=BENCH_PLACEMENT)
DAY = 86_400.0
#: the attribution window of the bench catalog's offers (campaigns set none: the default)
ATTRIBUTION_DAYS = 7.0


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--outcomes",
        action="store_true",
        help="also time decisions in a stream with conversion outcomes (needs --learning)",
    )
    ap.add_argument(
        "--conversion-rate", type=float, default=0.1, help="share of commercial clicks converted"
    )


def _kpi(user_id: str, topic: str | None, at: float, n: int) -> Event:
    """The ``Product Opened`` that converts a click on an offer of ``topic``."""
    product = TOPIC_PAGES[topic][1] if topic in TOPIC_PAGES else None
    props: dict[str, Any] = {}
    if product is not None:
        props["product"] = product
    elif topic is not None:
        props["topic"] = topic
    return Event(
        message_id=f"kpi-{n}",
        type=EventType.TRACK,
        name="Product Opened",
        timestamp=at,
        received_at=at,
        user_id=user_id,
        properties=props,
        context={"channel": "web"},
    )


def _outcomes(engine: Engine) -> float:
    """Outcomes the conversion model has learned (clicks with an outcome, all offers)."""
    return sum(clicks for _, clicks in engine.learner.conversions.counts().values())


def _fits(engine: Engine) -> int | None:
    """Fits done, where the model counts them (None on a tree without the counter)."""
    fits = getattr(engine.learner.conversions, "fits", None)
    return fits if isinstance(fits, int) else None


def run(
    engine: Engine,
    clock: FixedClock,
    ids: list[str],
    train_start: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The phase (module docstring)."""
    rng = random.Random(args.seed + 17)
    world = ClickWorld(engine.catalog, args.seed + 5, args.click_rate)
    users = [ids[rng.randrange(len(ids))] for _ in range(args.decisions)]
    step = args.train_minutes * 60.0 / args.train_decisions
    start = train_start + ATTRIBUTION_DAYS * DAY
    skip = min(args.warmup, len(users) // 10)
    due: list[tuple[float, int, Event]] = []
    pc = time.perf_counter_ns
    lat: list[int] = []
    after: list[bool] = []
    ingest_ns: list[int] = []
    ingest_learned: list[bool] = []
    n = clicks = kpis = 0
    outcomes0, fits0 = _outcomes(engine), _fits(engine)
    learned_before = outcomes0
    for i, uid in enumerate(users):
        now = start + i * step
        clock.set(now)
        batch: list[Event] = []
        while due and due[0][0] <= now:
            batch.append(heapq.heappop(due)[2])
        if batch:
            t = pc()
            engine.ingest(batch)
            ingest_ns.append(pc() - t)
        learned = _outcomes(engine)
        if batch:
            ingest_learned.append(learned > learned_before)
        t = pc()
        d = engine.decide(REQUEST, user_id=uid)
        elapsed = pc() - t
        if i >= skip:
            lat.append(elapsed)
            after.append(learned > learned_before)
        learned_before = learned
        for item in d.items:
            seen = d.timestamp + rng.uniform(0.5, 3.0)
            view = feedback_event(EventName.PROMOTION_VIEWED, uid, d, item.offer_id, seen)
            heapq.heappush(due, (seen, n := n + 1, view))
            if rng.random() < world.p_click(d, item.offer_id, item.position):
                at = seen + rng.uniform(2.0, 120.0)
                click = feedback_event(EventName.PROMOTION_CLICKED, uid, d, item.offer_id, at)
                heapq.heappush(due, (at, n := n + 1, click))
                clicks += 1
                offer = engine.catalog.offers[item.offer_id]
                if item.kind == "commercial" and rng.random() < args.conversion_rate:
                    when = at + rng.uniform(60.0, 1800.0)
                    heapq.heappush(due, (when, n := n + 1, _kpi(uid, offer.topic, when, n)))
                    kpis += 1
    engine.flush()
    baseline = time_calls(engine.profile, users[skip:])
    decide = latency_summary(lat)
    fits1 = _fits(engine)
    out = {
        "decisions_timed": len(lat),
        "engine_minutes": round(len(users) * step / 60.0, 1),
        "clicks": clicks,
        "kpi_events_sent": kpis,
        "outcomes_learned": round(_outcomes(engine) - outcomes0),
        "decisions_after_an_outcome": sum(after),
        "fits": None if fits0 is None or fits1 is None else fits1 - fits0,
        "decide": decide,
        "decide_after_an_outcome": latency_summary(
            [x for x, a in zip(lat, after, strict=True) if a]
        ),
        "decide_otherwise": latency_summary([x for x, a in zip(lat, after, strict=True) if not a]),
        "baseline_trivial_call": baseline,
        "ratio_to_baseline": ratios(decide, baseline),
        "ingest": latency_summary(ingest_ns),
        "ingest_learning_an_outcome": latency_summary(
            [x for x, a in zip(ingest_ns, ingest_learned, strict=True) if a]
        ),
    }
    log(
        f"with outcomes: {out['outcomes_learned']:,} outcomes over {len(lat):,} decisions "
        f"(fits {out['fits']}): decide p50 {decide['p50_us']} us, p99 {decide['p99_us']} us"
    )
    return out


def report(res: dict[str, Any]) -> None:
    """The phase's table."""
    rows = [
        ["engine.decide, outcomes in the stream", res["decide"]],
        ["  right after an outcome was learned", res["decide_after_an_outcome"]],
        ["  the others", res["decide_otherwise"]],
        ["baseline: engine.profile, same customers", res["baseline_trivial_call"]],
        ["engine.ingest of the events due (untimed above)", res["ingest"]],
        ["  the calls that learned an outcome", res["ingest_learning_an_outcome"]],
    ]
    print()
    print(
        table(
            f"Decisions with outcomes in the stream, us ({res['decisions_timed']:,} timed, "
            f"{res['outcomes_learned']:,} outcomes, {res['decisions_after_an_outcome']:,} "
            f"decisions right after one, fits {res['fits']})",
            ["call", "n", *QUANTILES],
            [[label, r["n"], *[r[k] for k in QUANTILES]] for label, r in rows]
            + [["ratio decide / baseline", None, *res["ratio_to_baseline"].values()]],
        )
    )
