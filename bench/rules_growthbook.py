"""Benchmark: 20 bank targeting rules with their context, nextbest (CEL) beside GrowthBook's
``evalCondition``, in one process and interleaved profile by profile.

    .venv/bin/python bench/rules_growthbook.py            # 10,000 profiles
    .venv/bin/python bench/rules_growthbook.py --profiles 200 --no-write   # a quick check

The same 20 rules (age bands, interest counts in 7/14/30/90-day windows, trend, products
owned, offer impressions and clicks, lifecycle, engagement, overdraft, funnel stage, life
events, consent, balance, request context) are written twice: as CEL for nextbest and as
GrowthBook conditions (MongoDB-style JSON). On ``--profiles`` seeded random profiles it first
asserts that both give the same answer for every rule (nextbest TRUE == GrowthBook True; a
nextbest FALSE or ERROR == False), then times one decision's worth of work, all 20 rules
with their context, five ways:

- ``nextbest``: ``RuleReads.evaluation`` + 20 ``check``: each rule as compiled Python closures
  (the CEL subset of ``rules.parse``), reading each value on first need through the field
  tables (``&&``/``||`` stop at the deciding side, so most values are never computed), CEL
  for what a closure cannot decide exactly: what ``decide`` does now;
- ``nextbest_phase1``: ``RuleReads.cel_evaluation`` + 20 checks: every value the rules name
  (chains such as ``interest.mortgage.count_14d`` as one flat CEL variable each) built and
  converted to CEL up front, every rule in CEL (phase one of "rules cost what they read");
- ``nextbest_before``: ``rule_variables`` over the roots and topics the rules name +
  ``Evaluation`` + 20 checks: what ``decide`` did before ``RuleReads``;
- ``growthbook``: the attributes dict the conditions need (the same flat values, built from
  the profile by the same field functions) + 20 ``evalCondition``;
- ``baseline``: a trivial Python call, for the timer's own floor;

and the parts: ``phase1.variables`` (every value the rules name, in Python),
``phase1.variables+context`` (and their conversion to CEL), ``growthbook.attributes`` (the
attributes dict alone). GrowthBook's attributes are built eagerly (all the conditions name,
as an app would pass them) by the same field functions nextbest's closures read lazily, so
the gap is laziness, short-circuits and evaluation, not cheaper fields on one side.

Results: ``bench/results/rules_growthbook.json`` (p50/p99/mean us per decision and the
ratios). Figures on a shared machine are indicative; the ways run interleaved, so a slow
second slows all of them.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    DAY,
    T0,
    code_measured,
    command_line,
    latency_summary,
    load_average,
    log,
    machine_info,
    now_iso,
    table,
    versions,
    write_results,
)
from nextbest.profile.model import FunnelStage, OfferHistory, Profile, TopicInterest
from nextbest.profile.topics import TopicSpec
from nextbest.rules import RULE_ROOTS, Evaluation, RuleOutcome, RuleReads, compile_rule
from nextbest.rules import rule_variables as full_variables
from nextbest.rules.reads import INTEREST_FIELDS, OFFER_FIELDS, PROFILE_FIELDS

#: nine topics, as a bank's catalog might have them; the rules read eight
TOPICS: dict[str, TopicSpec] = {
    t: TopicSpec(id=t, name=t.replace("_", " "), half_life_days=hl)
    for t, hl in (
        ("mortgage", 21.0),
        ("car_loan", 14.0),
        ("pension", 30.0),
        ("savings", 14.0),
        ("child_savings", 21.0),
        ("investing", 14.0),
        ("cards", 7.0),
        ("insurance", 14.0),
        ("personal_loan", 14.0),
    )
}
PRODUCTS = (
    "current_account",
    "savings",
    "mortgage",
    "credit_card",
    "student_account",
    "child_savings",
    "overdraft_protection",
    "car_loan",
)
OFFERS = ("credit_card_offer", "mortgage_advice", "pension_check")
LIFE_EVENTS = ("moved_house", "new_child", "married", "new_job")
STAGES = tuple(FunnelStage)

#: (name, CEL for nextbest, GrowthBook condition)
RULES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "young_saver",
        "profile.age >= 18 && profile.age < 26 && interest.savings.count_30d >= 2",
        {"age": {"$gte": 18, "$lt": 26}, "interest_savings_count_30d": {"$gte": 2}},
    ),
    (
        "mortgage_hot",
        'interest.mortgage.count_14d >= 5 && !("mortgage" in products)',
        {"interest_mortgage_count_14d": {"$gte": 5}, "products": {"$nin": ["mortgage"]}},
    ),
    (
        "car_loan_rising",
        'interest.car_loan.count_7d >= 2 && interest.car_loan.trend == "rising"',
        {"interest_car_loan_count_7d": {"$gte": 2}, "interest_car_loan_trend": "rising"},
    ),
    (
        "pension_pre_retirement",
        "profile.age >= 50 && profile.age < 67 && interest.pension.count_30d >= 1",
        {"age": {"$gte": 50, "$lt": 67}, "interest_pension_count_30d": {"$gte": 1}},
    ),
    (
        "family_child_savings",
        'profile.lifecycle == "family" && interest.child_savings.count_30d >= 1'
        ' && !("child_savings" in products)',
        {
            "lifecycle": "family",
            "interest_child_savings_count_30d": {"$gte": 1},
            "products": {"$nin": ["child_savings"]},
        },
    ),
    (
        "investor_with_means",
        "interest.investing.score >= 2.0 && profile.balance >= 5000.0",
        {"interest_investing_score": {"$gte": 2.0}, "balance": {"$gte": 5000.0}},
    ),
    (
        "card_not_overexposed",
        "offers.credit_card_offer.impressions_7d < 3 && interest.cards.count_14d >= 1",
        {
            "offer_credit_card_offer_impressions_7d": {"$lt": 3},
            "interest_cards_count_14d": {"$gte": 1},
        },
    ),
    (
        "overdraft_help",
        'profile.overdrawn && !("overdraft_protection" in products)',
        {"overdrawn": True, "products": {"$nin": ["overdraft_protection"]}},
    ),
    (
        "moved_house_insurance",
        'profile.life_events.exists(e, e.type == "moved_house" && e.days_ago < 60.0)',
        {"life_events": {"$elemMatch": {"type": "moved_house", "days_ago": {"$lt": 60.0}}}},
    ),
    (
        "mortgage_applying",
        'has(profile.funnel.mortgage) && profile.funnel.mortgage == "applying"',
        {"funnel.mortgage": "applying"},
    ),
    (
        "engaged_known",
        'profile.engagement == "high" && profile.known',
        {"engagement": "high", "known": True},
    ),
    (
        "dormant_reactivation",
        'profile.engagement == "dormant" && profile.known && "current_account" in products',
        {"engagement": "dormant", "known": True, "products": {"$in": ["current_account"]}},
    ),
    (
        "premium",
        "profile.balance >= 25000.0 && profile.age >= 30 && interest.investing.count_90d >= 1",
        {
            "balance": {"$gte": 25000.0},
            "age": {"$gte": 30},
            "interest_investing_count_90d": {"$gte": 1},
        },
    ),
    (
        "student",
        'profile.age >= 17 && profile.age < 25 && !("student_account" in products)'
        " && interest.savings.count_7d >= 1",
        {
            "age": {"$gte": 17, "$lt": 25},
            "products": {"$nin": ["student_account"]},
            "interest_savings_count_7d": {"$gte": 1},
        },
    ),
    (
        "insurance_interest",
        "interest.insurance.count_30d >= 3 || interest.insurance.score >= 3.0",
        {
            "$or": [
                {"interest_insurance_count_30d": {"$gte": 3}},
                {"interest_insurance_score": {"$gte": 3.0}},
            ]
        },
    ),
    (
        "mortgage_retarget",
        "offers.mortgage_advice.impressions_30d >= 2 && offers.mortgage_advice.clicks_30d == 0"
        " && interest.mortgage.count_30d >= 1",
        {
            "offer_mortgage_advice_impressions_30d": {"$gte": 2},
            "offer_mortgage_advice_clicks_30d": 0,
            "interest_mortgage_count_30d": {"$gte": 1},
        },
    ),
    (
        "cards_new",
        'interest.cards.trend == "new"',
        {"interest_cards_trend": "new"},
    ),
    (
        "pension_fading",
        'interest.pension.trend == "falling" && profile.age >= 45',
        {"interest_pension_trend": "falling", "age": {"$gte": 45}},
    ),
    (
        "loyal",
        "size(products) >= 3 && profile.sessions >= 10",
        {"products": {"$size": {"$gte": 3}}, "sessions": {"$gte": 10}},
    ),
    (
        "app_car_loan_marketing",
        'context.channel == "app" && interest.car_loan.count_30d >= 3'
        " && has(profile.consent.marketing) && profile.consent.marketing",
        {
            "channel": "app",
            "interest_car_loan_count_30d": {"$gte": 3},
            "consent.marketing": True,
        },
    ),
]


# ------------------------------------------------------------------ GrowthBook's attributes

#: GrowthBook attribute -> how to compute it from (profile, now, context): the values the
#: conditions name, flat, from the same field functions nextbest's rules read
_Attr = Callable[[Profile, float, dict[str, Any]], Any]


def _interest_attr(topic: str, field: str) -> _Attr:
    fn, spec = INTEREST_FIELDS[field], TOPICS[topic]
    empty = TopicInterest()
    return lambda p, now, ctx: fn(p.interests.get(topic, empty), spec, now)


def _offer_attr(offer: str, field: str) -> _Attr:
    fn, empty = OFFER_FIELDS[field], OfferHistory()
    return lambda p, now, ctx: fn(p.offers.get(offer, empty), now)


def _profile_attr(field: str) -> _Attr:
    fn = PROFILE_FIELDS[field]
    return lambda p, now, ctx: fn(p, now)


def gb_attribute_plan() -> list[tuple[str, _Attr]]:
    """The attributes the conditions name, each with its computation."""
    names: set[str] = set()

    def walk(cond: Any) -> None:
        if isinstance(cond, dict):
            for k, v in cond.items():
                if k in ("$or", "$and", "$nor"):
                    for c in v:
                        walk(c)
                elif not k.startswith("$"):
                    names.add(k.split(".")[0])
        elif isinstance(cond, list):
            for c in cond:
                walk(c)

    for _, _, cond in RULES:
        walk(cond)
    plan: list[tuple[str, _Attr]] = []
    for name in sorted(names):
        if name.startswith("interest_"):
            rest = name[len("interest_") :]
            topic = next(t for t in TOPICS if rest.startswith(t + "_"))
            plan.append((name, _interest_attr(topic, rest[len(topic) + 1 :])))
        elif name.startswith("offer_"):
            rest = name[len("offer_") :]
            offer = next(o for o in OFFERS if rest.startswith(o + "_"))
            plan.append((name, _offer_attr(offer, rest[len(offer) + 1 :])))
        elif name == "products":
            plan.append((name, lambda p, now, ctx: list(p.products)))
        elif name == "channel":
            plan.append((name, lambda p, now, ctx: ctx.get("channel")))
        else:
            plan.append((name, _profile_attr(name)))
    return plan


# ------------------------------------------------------------------ profiles


def random_profile(rng: random.Random, i: int, now: float) -> Profile:
    """One seeded customer: ages, balances, interests, offers, funnel, life events, consent."""
    interests: dict[str, TopicInterest] = {}
    for t in TOPICS:
        if rng.random() < 0.45:
            n = rng.choice((1, 1, 2, 3, 5, 8, 12))
            recent = rng.uniform(3, 40)  # days: some customers are in the market right now
            hits = sorted(now - min(89.0, rng.expovariate(1 / recent)) * DAY for _ in range(n))
            interests[t] = TopicInterest(
                score=rng.uniform(0.2, 6.0),
                score_at=hits[-1],
                hits=hits,
                total=n + rng.randrange(5),
                first_seen=hits[0] - rng.uniform(0, 200) * DAY,
                last_seen=hits[-1],
            )
    offers: dict[str, OfferHistory] = {}
    for o in OFFERS:
        if rng.random() < 0.4:
            imp = sorted(now - rng.uniform(0, 60) * DAY for _ in range(rng.randrange(1, 6)))
            clicks = [t for t in imp if rng.random() < 0.15]
            offers[o] = OfferHistory(
                impressions=imp,
                clicks=clicks,
                total_impressions=len(imp),
                total_clicks=len(clicks),
            )
    traits: dict[str, Any] = {}
    if rng.random() < 0.85:
        age = rng.randrange(14, 85)
        if rng.random() < 0.5:
            traits["age"] = age
        else:
            traits["birthday"] = (
                f"{2026 - age}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
            )
    funnel = {t: rng.choice(STAGES) for t in TOPICS if rng.random() < 0.15}
    return Profile(
        customer_id=f"u-{i}",
        user_id=f"u-{i}" if rng.random() < 0.7 else None,
        traits=traits,
        products=rng.sample(PRODUCTS, rng.randrange(0, 5)),
        interests=interests,
        funnel=funnel,
        offers=offers,
        consent={"marketing": rng.random() < 0.6} if rng.random() < 0.7 else {},
        balance=round(rng.uniform(-500, 60_000), 2) if rng.random() < 0.8 else None,
        overdrawn=rng.random() < 0.1,
        life_events=[
            (now - rng.uniform(0, 120) * DAY, rng.choice(LIFE_EVENTS))
            for _ in range(rng.choice((0, 0, 0, 1, 2)))
        ],
        activity=sorted(now - rng.uniform(0, 40) * DAY for _ in range(rng.choice((0, 2, 8, 30)))),
        sessions=rng.randrange(0, 30),
        event_count=rng.randrange(0, 300),
    )


def random_context(rng: random.Random) -> dict[str, Any]:
    return {"channel": rng.choice(("web", "app", "app", "email"))}


# ------------------------------------------------------------------ the ways


class Bench:
    """The compiled rules, both ways, and one decision's work for each way."""

    def __init__(self) -> None:
        from growthbook.core import evalCondition  # the reference, a dev dependency

        self.eval_condition = evalCondition
        self.names = [name for name, _, _ in RULES]
        self.rules = [compile_rule(src, RULE_ROOTS) for _, src, _ in RULES]
        self.conditions = [cond for _, _, cond in RULES]
        self.reads = RuleReads.of(self.rules)
        self.roots = self.reads.roots
        self.rule_topics = {t: TOPICS[t] for t in self.reads.topics_in(TOPICS)}
        self.attributes = gb_attribute_plan()

    def nextbest(self, p: Profile, now: float, ctx: dict[str, Any]) -> list[RuleOutcome]:
        env = self.reads.evaluation(p, TOPICS, now, ctx)
        return [env.check(r) for r in self.rules]

    def nextbest_phase1(self, p: Profile, now: float, ctx: dict[str, Any]) -> list[RuleOutcome]:
        env = self.reads.cel_evaluation(p, TOPICS, now, ctx)
        return [env.check(r) for r in self.rules]

    def nextbest_before(self, p: Profile, now: float, ctx: dict[str, Any]) -> list[RuleOutcome]:
        variables = full_variables(p, self.rule_topics, now, ctx, self.reads.named_offers)
        env = Evaluation({root: variables[root] for root in self.roots if root in variables})
        return [env.check(r) for r in self.rules]

    def nextbest_full(self, p: Profile, now: float, ctx: dict[str, Any]) -> list[RuleOutcome]:
        """Every root, every topic: the reference the narrow context must agree with."""
        env = Evaluation(full_variables(p, TOPICS, now, ctx, self.reads.named_offers))
        return [env.check(r) for r in self.rules]

    def growthbook(self, p: Profile, now: float, ctx: dict[str, Any]) -> list[bool]:
        attrs = {name: fn(p, now, ctx) for name, fn in self.attributes}
        ev = self.eval_condition
        return [ev(attrs, cond) for cond in self.conditions]

    # the parts, to split the cost
    def nextbest_variables(self, p: Profile, now: float, ctx: dict[str, Any]) -> Any:
        return self.reads.variables(p, TOPICS, now, ctx)

    def nextbest_context(self, p: Profile, now: float, ctx: dict[str, Any]) -> Any:
        return self.reads.cel_evaluation(p, TOPICS, now, ctx)

    def decided_by_closures(self, p: Profile, now: float, ctx: dict[str, Any]) -> int:
        """How many of the 20 rules the closures decide (the rest run in CEL)."""
        env = self.reads.evaluation(p, TOPICS, now, ctx)
        return sum(env.by_closures(rule) is not None for rule in self.rules)

    def growthbook_attributes(self, p: Profile, now: float, ctx: dict[str, Any]) -> Any:
        return {name: fn(p, now, ctx) for name, fn in self.attributes}


def baseline(p: Profile, now: float, ctx: dict[str, Any]) -> None:
    return None


def sample(n: int, seed: int) -> list[tuple[Profile, dict[str, Any]]]:
    rng = random.Random(seed)
    return [(random_profile(rng, i, T0), random_context(rng)) for i in range(n)]


def check_equal(bench: Bench, cases: list[tuple[Profile, dict[str, Any]]]) -> dict[str, int]:
    """Assert nextbest (narrow, before, full) and GrowthBook agree on every rule and profile;
    return how many profiles each rule holds for."""
    held = dict.fromkeys(bench.names, 0)
    for p, ctx in cases:
        new = bench.nextbest(p, T0, ctx)
        full = bench.nextbest_full(p, T0, ctx)
        phase1 = bench.nextbest_phase1(p, T0, ctx)
        before = bench.nextbest_before(p, T0, ctx)
        gb = bench.growthbook(p, T0, ctx)
        assert new == full == phase1 == before, (p.customer_id, new, full, phase1, before)
        for name, o, g in zip(bench.names, new, gb, strict=True):
            assert (o is RuleOutcome.TRUE) == g, (p.customer_id, name, o, g)
            held[name] += o is RuleOutcome.TRUE
    return held


def time_all(
    bench: Bench, cases: list[tuple[Profile, dict[str, Any]]], rounds: int
) -> dict[str, list[int]]:
    ways: dict[str, Callable[[Profile, float, dict[str, Any]], Any]] = {
        "nextbest": bench.nextbest,
        "nextbest_phase1": bench.nextbest_phase1,
        "nextbest_before": bench.nextbest_before,
        "growthbook": bench.growthbook,
        "baseline": baseline,
        "phase1.variables": bench.nextbest_variables,
        "phase1.variables+context": bench.nextbest_context,
        "growthbook.attributes": bench.growthbook_attributes,
    }
    out: dict[str, list[int]] = {k: [] for k in ways}
    order = list(ways.items())
    k = len(order)
    pc = time.perf_counter_ns
    for _ in range(rounds):
        gc.disable()
        for n, (p, ctx) in enumerate(cases):
            for name, fn in order[n % k :] + order[: n % k]:  # each goes first in turn
                t0 = pc()
                fn(p, T0, ctx)
                out[name].append(pc() - t0)
        gc.enable()
        gc.collect()
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3, help="timed passes over the profiles")
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--no-write", action="store_true", help="print only, no results file")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    machine = machine_info()
    bench = Bench()
    cases = sample(args.profiles, args.seed)
    log(f"{len(RULES)} rules, {len(cases):,} profiles: checking equal outcomes")
    held = check_equal(bench, cases)
    decided = sum(bench.decided_by_closures(p, T0, ctx) for p, ctx in cases)
    closures = {
        "rules_compiled": len(bench.reads.compiled),
        "decided_by_closures_share": round(decided / (len(cases) * len(RULES)), 4),
    }
    log(f"equal on every rule and profile; closures: {closures}; timing")
    ns = time_all(bench, cases, args.rounds)
    summary = {k: latency_summary(v) for k, v in ns.items()}
    gb, new, old = summary["growthbook"], summary["nextbest"], summary["nextbest_before"]
    p1 = summary["nextbest_phase1"]
    gb_eval = gb["mean_us"] - summary["growthbook.attributes"]["mean_us"]
    nb_ctx = summary["phase1.variables+context"]["mean_us"]
    split_mean_us = {
        "phase1.variables": summary["phase1.variables"]["mean_us"],
        "phase1.cel_context": round(nb_ctx - summary["phase1.variables"]["mean_us"], 2),
        "phase1.evaluation": round(p1["mean_us"] - nb_ctx, 2),
        "growthbook.attributes": summary["growthbook.attributes"]["mean_us"],
        "growthbook.evalCondition": round(gb_eval, 2),
    }
    ratios = {
        "growthbook_over_nextbest_p50": round(gb["p50_us"] / new["p50_us"], 2),
        "growthbook_over_nextbest_mean": round(gb["mean_us"] / new["mean_us"], 2),
        "before_over_nextbest_mean": round(old["mean_us"] / new["mean_us"], 2),
        "phase1_over_nextbest_mean": round(p1["mean_us"] / new["mean_us"], 2),
        "growthbook_over_phase1_mean": round(gb["mean_us"] / p1["mean_us"], 2),
        "growthbook_over_before_mean": round(gb["mean_us"] / old["mean_us"], 2),
    }
    print(
        table(
            f"20 rules with their context, per decision ({len(cases):,} profiles x "
            f"{args.rounds} rounds)",
            ["way", "p50 us", "p99 us", "mean us"],
            [[k, s["p50_us"], s["p99_us"], s["mean_us"]] for k, s in summary.items()],
        )
    )
    print(split_mean_us)
    print(ratios)
    payload = {
        "benchmark": "rules_growthbook",
        "when": now_iso(),
        "command": command_line(),
        "machine": machine,
        "load_average_end": load_average(),
        "code": code_measured(),
        "versions": versions("growthbook", "common-expression-language"),
        "profiles": len(cases),
        "rounds": args.rounds,
        "seed": args.seed,
        "rules": {name: {"cel": src, "growthbook": cond} for name, src, cond in RULES},
        "rule_reads": repr(bench.reads),
        "profiles_each_rule_holds_for": held,
        "per_decision_us": summary,
        "split_mean_us": split_mean_us,
        "closures": closures,
        "ratios": ratios,
    }
    if not args.no_write:
        log(f"wrote {write_results('rules_growthbook', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
