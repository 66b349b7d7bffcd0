"""What advisor selection adds to a decision: the advisor card with 50 advisors.

    .venv/bin/python bench/advisors.py            # ~1 min on 2 cores
    .venv/bin/python bench/advisors.py --quick    # smoke run (seconds)

The example bank (its topics, offers, placements and contact policy) with its advisors
replaced by ``--advisors`` generated ones (10 teams, two time zones, Copenhagen and London,
two to four topics each at levels 1-5, one to three languages, capacity 1-3, office hours
with a lunch break), and ``--profiles`` customers with a live interest in one to four
topics. A board (``advisors.board``) with a seeded mix of presence (30 % available, 40 %
busy, 20 % away, 10 % offline), loads and rotation times. Timed one call at a time
(``time_calls``), in one process and one run, on a Tuesday at 10:00 in Copenhagen:

- ``trivial``: a function of the card's arguments that does nothing (the floor);
- ``card_someone_free``: ``advisors.card.advisor_card`` on the board: the hottest live
  topic's best expert who can call now (the common case during office hours);
- ``card_nobody_free``: the same on an empty board (nobody available: the next three free
  slots, one per start, across the topic's experts) with the slot cache warm;
- ``card_nobody_free_cold``: the same with the day-slot cache cleared before each call
  (a new day, or a new process);
- ``card_booked``: nobody free, and every expert booked at capacity for their first
  ``--booked-hours`` hours of office time (the slot search walks past them);
- ``decide_offers``: ``decide.decide`` on an offer placement (``home_hero``: the example
  bank's rules, scored with the prior, no learning): what a decision costs without an
  advisor;
- ``decide_advisor``: ``decide.decide`` on the advisor placement with the board: consent,
  the contact policy per card, the card, the decision.

Results: ``bench/results/advisors.json`` (``advisors_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from _common import EXAMPLE_CATALOG, Run, add_run_args, log, ratios, table, time_calls
from nextbest.advisors.board import EMPTY_BOARD, AdvisorBoard, AdvisorState
from nextbest.advisors.card import advisor_card
from nextbest.advisors.model import Presence
from nextbest.advisors.slots import day_slots
from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, decide
from nextbest.profile.model import Profile, TopicInterest
from nextbest.store.catalog_files import load_catalog

#: Tuesday 2026-03-24, 10:00 in Copenhagen (09:00 in London)
NOW = datetime.fromisoformat("2026-03-24T10:00:00+01:00").timestamp()
DAY = 86_400.0
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
LANGUAGES = ("da", "en", "sv", "de", "no")
PRESENCE = [Presence.AVAILABLE] * 3 + [Presence.BUSY] * 4 + [Presence.AWAY] * 2 + [Presence.OFFLINE]


def advisors_yaml(rng: random.Random, topics: Sequence[str], n: int) -> dict[str, Any]:
    """``n`` advisors in two time zones, 2-4 topics each, office hours with lunch."""
    out = []
    for i in range(n):
        zone = "Europe/Copenhagen" if i % 3 else "Europe/London"
        start = rng.choice(["08:00", "08:30", "09:00"])
        hours = [f"{start}-12:00", "12:30-17:00"]
        out.append(
            {
                "id": f"advisor_{i:03d}",
                "name": f"Advisor {i}",
                "photo_url": f"/img/advisors/{i}.jpg",
                "expertise": [
                    {"topic": t, "level": rng.randint(1, 5)}
                    for t in rng.sample(list(topics), rng.randint(2, 4))
                ],
                "languages": rng.sample(LANGUAGES, rng.randint(1, 3)),
                "team": f"team {i % 10}",
                "working_hours": {"timezone": zone, "weekly": dict.fromkeys(WEEKDAYS, hours)},
                "max_concurrent": rng.randint(1, 3),
            }
        )
    return {"advisors": out}


def bank_with_advisors(folder: Path, rng: random.Random, n: int) -> Catalog:
    shutil.copytree(EXAMPLE_CATALOG, folder)
    topics = [t["id"] for t in yaml.safe_load((folder / "topics.yaml").read_text())["topics"]]
    policy = yaml.safe_load((folder / "advisors.yaml").read_text())["callbacks"]
    text = yaml.safe_dump({**advisors_yaml(rng, topics, n), "callbacks": policy})
    (folder / "advisors.yaml").write_text(text)
    return load_catalog(folder)


def profiles(rng: random.Random, catalog: Catalog, n: int) -> list[Profile]:
    """Customers with a live interest in 1-4 topics (scores 0.5-10, hits in 14 days)."""
    topics = list(catalog.topics)
    out = []
    for i in range(n):
        interests = {}
        for t in rng.sample(topics, rng.randint(1, 4)):
            hits = sorted(NOW - rng.uniform(0, 14 * DAY) for _ in range(rng.randint(1, 9)))
            interests[t] = TopicInterest(
                score=rng.uniform(0.5, 10.0),
                score_at=NOW - 60,
                hits=hits,
                total=len(hits),
                first_seen=hits[0],
                last_seen=hits[-1],
            )
        out.append(Profile(customer_id=f"c{i}", interests=interests, traits={"age": 40}))
    return out


def board_of(rng: random.Random, catalog: Catalog) -> AdvisorBoard:
    states = {}
    for a in catalog.advisors.values():
        states[a.id] = AdvisorState(
            presence=rng.choice(PRESENCE),
            load=rng.randint(0, a.max_concurrent - 1),
            last_assigned=NOW - rng.uniform(0, 3_600) if rng.random() < 0.8 else 0.0,
        )
    return AdvisorBoard(states)


def booked_board(catalog: Catalog, hours: int) -> AdvisorBoard:
    """Nobody available; each advisor booked at capacity in their first ``hours`` of slots
    from ``NOW`` on."""
    slot = catalog.callbacks.slot_minutes
    booked = {}
    for a in catalog.advisors.values():
        starts: list[float] = []
        day = datetime.fromtimestamp(NOW, a.zone).date()
        for s, _ in day_slots(a.zone, day, a.spans_on(day), slot):
            if NOW <= s < NOW + hours * 3_600:
                starts += [s] * a.max_concurrent
        booked[a.id] = tuple(sorted(starts))
    return AdvisorBoard(booked=booked)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "advisors")
    ap.add_argument("--advisors", type=int, default=50)
    ap.add_argument("--profiles", type=int, default=2_000)
    ap.add_argument("--calls", type=int, default=50_000, help="calls timed per case")
    ap.add_argument("--booked-hours", type=int, default=4)
    args = ap.parse_args(argv)
    if args.quick:
        args.profiles, args.calls = 200, 2_000
    args.name = args.name or ("advisors_quick" if args.quick else "advisors")
    run = Run("advisors", args)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        catalog = bank_with_advisors(Path(tmp) / "bank", rng, args.advisors)
    people = profiles(rng, catalog, args.profiles)
    board = board_of(rng, catalog)
    booked = booked_board(catalog, args.booked_hours)
    inputs = [people[i % len(people)] for i in range(args.calls)]
    warmup = people[: min(len(people), 1_000)]
    log(f"{len(catalog.advisors)} advisors, {len(catalog.experts)} topics with experts")

    def trivial(p: Profile) -> None:
        _noop(catalog, p, board, NOW)

    def card_someone_free(p: Profile) -> None:
        advisor_card(catalog, p, board, NOW)

    def card_nobody_free(p: Profile) -> None:
        advisor_card(catalog, p, EMPTY_BOARD, NOW)

    def card_nobody_free_cold(p: Profile) -> None:
        day_slots.cache_clear()
        advisor_card(catalog, p, EMPTY_BOARD, NOW)

    def card_booked(p: Profile) -> None:
        advisor_card(catalog, p, booked, NOW)

    offers = DecisionRequest(placement="home_hero")
    card = DecisionRequest(placement="topic_advisor")

    def decide_offers(p: Profile) -> None:
        decide(catalog, p, offers, NOW, "d")

    def decide_advisor(p: Profile) -> None:
        decide(catalog, p, card, NOW, "d", board=board)

    cases: dict[str, Callable[[Profile], None]] = {
        "trivial": trivial,
        "card_someone_free": card_someone_free,
        "card_nobody_free": card_nobody_free,
        "card_nobody_free_cold": card_nobody_free_cold,
        "card_booked": card_booked,
        "decide_offers": decide_offers,
        "decide_advisor": decide_advisor,
    }
    shown = _shown(catalog, people, board, booked)
    timed: dict[str, dict[str, Any]] = {}
    for name, call in cases.items():
        timed[name] = time_calls(call, inputs, warmup=warmup)
        log(f"{name}: p50 {timed[name]['p50_us']} µs, p99 {timed[name]['p99_us']} µs")
    print()
    print(
        table(
            f"advisor card and decisions, {len(catalog.advisors)} advisors, "
            f"{args.calls:,} calls each (µs)",
            ["case", "mean", "p50", "p90", "p99", "p99.9"],
            [
                [
                    n,
                    timed[n]["mean_us"],
                    timed[n]["p50_us"],
                    timed[n]["p90_us"],
                    timed[n]["p99_us"],
                    timed[n]["p99_9_us"],
                ]
                for n in cases
            ],
        )
    )
    added = {
        q: round(timed["decide_advisor"][q] - timed["decide_offers"][q], 2)
        for q in ("mean_us", "p50_us", "p99_us")
    }
    print(f"\ncards shown: {shown}")
    print(f"decide on the advisor placement minus decide on home_hero: {added} µs")
    run.write(
        {
            "advisors": len(catalog.advisors),
            "topics_with_experts": len(catalog.experts),
            "profiles": len(people),
            "cards_shown": shown,
            "timed": timed,
            "ratio_to_trivial": {
                n: ratios(timed[n], timed["trivial"]) for n in cases if n != "trivial"
            },
            "decide_advisor_over_offers": ratios(timed["decide_advisor"], timed["decide_offers"]),
            "decide_advisor_minus_offers_us": added,
        }
    )
    return 0


def _shown(
    catalog: Catalog, people: list[Profile], board: AdvisorBoard, booked: AdvisorBoard
) -> dict[str, int]:
    """How many profiles get a card, and of which kind, on each board."""
    counts = {"free_now": 0, "slots_only": 0, "booked_slots_only": 0, "none": 0}
    for p in people:
        card = advisor_card(catalog, p, board, NOW)
        if card is None:
            counts["none"] += 1
        elif card.available:
            counts["free_now"] += 1
        else:
            counts["slots_only"] += 1
        if (b := advisor_card(catalog, p, booked, NOW)) is not None and not b.available:
            counts["booked_slots_only"] += 1
    return counts


def _noop(catalog: Catalog, profile: Profile, board: AdvisorBoard, now: float) -> None:
    return None


if __name__ == "__main__":
    sys.exit(main())
