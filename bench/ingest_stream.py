"""The ingestion benchmarks' stream: Segment-spec ``/v1/batch`` bodies with real feedback.

A seeded stream of 100-message batches (page views whose URLs match topics, anonymous
visitors' page views, bank track events, server-side identify trait updates; each message
with a realistic analytics.js-like ``context``), in global time order.

Feedback (``Promotion Viewed / Clicked``, ~5 % of the stream) must answer a logged decision
of the same customer, so building the stream makes those decisions: a planning engine
ingests the stream batch by batch and, for each feedback message, decides for its customer
a few seconds before the batch is sent (in one of the catalog's learning placements, the
profile as folded so far) and points the message at one of the decision's items (decision
id, offer id, position; the message is re-timed just after the decision). A customer with
nothing eligible yet could not have seen a banner: that message becomes a ``Newsletter
Opened``. Used by ``ingest.py``, ``ingest_http.py`` and ``send.py``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from _common import T0
from catalog_gen import TOPIC_PAGES, Customer, customer_messages, make_customer
from nextbest.bootstrap import MEMORY, open_stores
from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide.feedback import FEEDBACK_EVENTS
from nextbest.decide.model import Decision, DecisionRequest
from nextbest.engine import Engine

__all__ = [
    "BATCH_SIZE",
    "NOW",
    "WRITE_KEY",
    "anonymous_visit",
    "batches",
    "build_stream",
    "iso",
    "wire_message",
]

WRITE_KEY = "bench-write-key"
#: the engine's clock: one minute after the newest generated event
NOW = T0 + 60.0
BATCH_SIZE = 100


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)


def _browser_context(rng: random.Random, path: str | None, channel: str) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "userAgent": _UA,
        "locale": "nl-NL",
        "ip": f"203.0.113.{rng.randint(1, 254)}",
        "channel": channel,
    }
    if path is not None:
        ctx["page"] = {
            "path": path,
            "url": f"https://www.bank.example{path}",
            "title": path.strip("/").replace("/", " - ").title() or "Home",
            "referrer": "",
        }
    return ctx


def wire_message(rng: random.Random, c: Customer, m: dict[str, Any], mid: str) -> dict[str, Any]:
    """One generated message in the exact shape a Segment SDK sends."""
    kind = m["type"]
    msg: dict[str, Any] = {"type": kind, "messageId": mid, "timestamp": iso(m["at"])}
    if kind == "identify":
        # trait updates come from the bank's backend (analytics-python), userId only
        msg["userId"] = c.user_id
        msg["traits"] = m["traits"]
        msg["context"] = {"library": {"name": "analytics-python", "version": "2.3.2"}}
        return msg
    msg["userId"] = c.user_id
    msg["anonymousId"] = c.anonymous_id
    if kind == "page":
        path = m["url"]
        msg["name"] = None
        msg["properties"] = {
            "url": f"https://www.bank.example{path}",
            "path": path,
            "title": path.strip("/").replace("/", " - ").title() or "Home",
            "referrer": "",
            "search": "",
        }
        msg["context"] = _browser_context(rng, path, m["channel"])
    else:
        msg["event"] = m["event"]
        msg["properties"] = m["properties"]
        msg["context"] = _browser_context(rng, None, "web")
    return msg


def anonymous_visit(rng: random.Random, index: int) -> list[tuple[float, dict[str, Any]]]:
    anon = f"v{index:07d}"
    topic = rng.choice(tuple(TOPIC_PAGES))
    start = T0 - rng.random() * 30 * 86_400.0
    out = []
    for j in range(rng.randint(2, 6)):
        path = rng.choice(TOPIC_PAGES[topic][0]) if rng.random() < 0.7 else "/"
        when = start + j * rng.uniform(5, 120)
        msg = {
            "type": "page",
            "messageId": f"{anon}-{j}",
            "timestamp": iso(when),
            "anonymousId": anon,
            "name": None,
            "properties": {"url": f"https://www.bank.example{path}", "path": path},
            "context": _browser_context(rng, path, "web"),
        }
        out.append((when, msg))
    return out


def plan_feedback(
    catalog: Catalog, timeline: list[tuple[float, dict[str, Any]]], args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[Decision], list[float], dict[str, Any]]:
    """Real decisions for the stream's feedback messages (see the module docstring).

    A planning engine ingests the stream batch by batch, each when it is sent (its newest
    message + 1 s); before each batch, every feedback message in it gets a decision made for
    its customer 5-15 s before the batch is sent (in a learning placement drawn by weight,
    else any placement with items), names one of its items and is re-timed 1-4 s after the
    decision. (The generated stream is sparse, ~100 messages per 10-60 minutes: feedback
    timed back at its generated moment would reach the server long after its decision, and
    a learner that keeps server time would rightly ignore it as stale.) A customer with
    nothing eligible yet (a new profile) could not have been shown a banner: that message
    becomes a ``Newsletter Opened``, so the stream keeps its size.
    Returns the messages, the decisions, each batch's send time (its newest message + 1 s)
    and counts. Decision ids come from a seeded generator, so the stream is the same every
    run.
    """
    rng = random.Random(args.seed + 101)
    ids = random.Random(args.seed + 102)
    clock = FixedClock(NOW)
    engine = Engine(
        catalog,
        open_stores(MEMORY),
        clock,
        new_id=lambda: f"{ids.getrandbits(128):032x}",
        decision_flush_every=1_000_000,
    )
    learning = [p.id for p in catalog.spec.placements if p.learning is not None]
    weights = [3.0 if p == "home_feed" else 1.0 for p in learning]
    fallback = [p.id for p in catalog.spec.placements]
    out: list[dict[str, Any]] = []
    decisions: list[Decision] = []
    placements: dict[str, int] = {}
    dropped = 0
    times: list[float] = []
    for start in range(0, len(timeline), args.batch):
        chunk: list[dict[str, Any]] = []
        sent = timeline[min(start + args.batch, len(timeline)) - 1][0] + 1.0
        times.append(sent)
        for _at, msg in timeline[start : start + args.batch]:
            if msg["type"] == "track" and msg["event"] in FEEDBACK_EVENTS:
                decided = sent - rng.uniform(5.0, 15.0)
                clock.set(decided)
                chosen = rng.choices(learning, weights)[0] if learning else fallback[0]
                d = None
                for placement in [chosen, *fallback]:
                    d = engine.decide(DecisionRequest(placement=placement), user_id=msg["userId"])
                    if d.items:
                        break
                if d is None or not d.items:  # nothing eligible yet: no banner was shown
                    msg["event"] = "Newsletter Opened"
                    msg["properties"] = {"issue": rng.randint(1, 50)}
                    dropped += 1
                    chunk.append(msg)
                    continue
                item = rng.choice(d.items)
                msg["timestamp"] = iso(decided + rng.uniform(1.0, 4.0))
                msg["properties"] = {
                    "promotion_id": item.offer_id,
                    "decision_id": d.decision_id,
                    "position": item.position,
                }
                decisions.append(d)
                placements[d.placement] = placements.get(d.placement, 0) + 1
            chunk.append(msg)
        clock.set(sent)
        engine.ingest_batch(orjson.dumps({"batch": chunk, "sentAt": iso(sent)}))  # checks them
        out.extend(chunk)
    info = {
        "feedback_decisions": len(decisions),
        "feedback_replaced_nothing_eligible": dropped,
        "feedback_placements": dict(sorted(placements.items())),
        "planning_model_versions": {m.placement: m.info.version for m in engine.models()},
    }
    return out, decisions, times, info


def batches(bodies: list[bytes], times: list[float], clock: FixedClock) -> Iterator[bytes]:
    """The bodies in order, the engine's clock set to each one's send time first: the stream
    arrives as it happened (received when sent), so the learner's click windows close as
    they would live."""
    for body, sent in zip(bodies, times, strict=True):
        clock.set(sent)
        yield body


def build_stream(
    catalog: Catalog, args: argparse.Namespace
) -> tuple[list[bytes], list[float], list[Decision], dict[str, Any]]:
    """The whole stream in time order, cut into /v1/batch bodies (``sentAt`` each batch's
    send time), the send times, and the decisions its feedback answers."""
    rng = random.Random(args.seed)
    timeline: list[tuple[float, dict[str, Any]]] = []
    offer_ids: dict[str, list[str]] = {}  # Promotion Viewed/Clicked name real offers
    for o in catalog.offers.values():
        if o.topic:
            offer_ids.setdefault(o.topic, []).append(o.id)
    for i in range(args.customers):
        c = make_customer(rng, i)
        n = rng.randint(args.events_min, args.events_max)
        for j, m in enumerate(customer_messages(rng, c, n, offer_ids)):
            timeline.append((m["at"], wire_message(rng, c, m, f"{c.user_id}-{j}")))
    for i in range(args.anon_visitors):
        timeline.extend(anonymous_visit(rng, i))
    timeline.sort(key=lambda tm: tm[0])
    t = time.perf_counter()
    msgs, decisions, times, planned = plan_feedback(catalog, timeline, args)
    planned["planning_seconds"] = round(time.perf_counter() - t, 1)
    kinds: dict[str, int] = {}  # as sent: feedback with nothing eligible became Newsletter Opened
    for msg in msgs:
        if msg["type"] == "track":
            key = f"track:{msg['event']}"
        elif msg["type"] == "page" and "userId" not in msg:
            key = "page (anonymous visitor)"
        else:
            key = msg["type"]
        kinds[key] = kinds.get(key, 0) + 1
    bodies = [
        orjson.dumps({"batch": msgs[i : i + args.batch], "sentAt": iso(times[i // args.batch])})
        for i in range(0, len(msgs), args.batch)
    ]
    sizes = [len(b) for b in bodies]
    info = {
        "messages": len(msgs),
        "batches": len(bodies),
        "batch_size": args.batch,
        "customers": args.customers,
        "anonymous_visitors": args.anon_visitors,
        "mean_body_bytes": round(sum(sizes) / len(sizes)),
        "mean_message_bytes": round(sum(sizes) / len(msgs)),
        "mix": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        **planned,
    }
    return bodies, times, decisions, info
