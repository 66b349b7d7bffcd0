"""What rules read (``needs_of``, ``RuleReads``) and the narrow variables built from it: for
seeded random profiles every rule has the same outcome on them as on the full
``rule_variables``, ``has()``, ``in``, macros and missing keys included."""

from __future__ import annotations

import random
from typing import Any

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.profile.model import FunnelStage, OfferHistory, Profile, TopicInterest
from nextbest.rules import (
    RULE_ROOTS,
    Evaluation,
    Rule,
    RuleOutcome,
    RuleReads,
    compile_rule,
    rule_variables,
)
from nextbest.rules.context import interest_view, offer_view
from nextbest.rules.reads import INTEREST_FIELDS, OFFER_FIELDS, PROFILE_FIELDS, Need, needs_of
from tests.support import T0

DAY = 86_400.0


# ------------------------------------------------------------------ needs_of


@pytest.mark.parametrize(
    ("source", "needs"),
    [
        ("profile.age >= 18", {"profile": {"age": None}}),
        (
            "interest.mortgage.count_14d >= 5 && interest.mortgage.score > 1.0",
            {"interest": {"mortgage": {"count_14d": None, "score": None}}},
        ),
        ('"mortgage" in products', {"products": None}),
        ("size(interest) > 2", {"interest": None}),
        ('interest["mortgage"].count_7d > 0', {"interest": None}),
        ("interest.exists(t, interest[t].total > 0)", {"interest": None}),
        (
            'interest.mortgage.count_7d > 0 && "x" in interest.cards',
            {"interest": {"mortgage": {"count_7d": None}, "cards": None}},
        ),
        ("has(offers.card.impressions_7d)", {"offers": {"card": {"impressions_7d": None}}}),
        ("has(offers.card) && offers.card.clicks_30d > 0", {"offers": {"card": None}}),
        (
            'profile.life_events.exists(e, e.type == "moved_house")',
            {"profile": {"life_events": None}},
        ),
        ("profile.funnel.mortgage.size() > 0", {"profile": {"funnel": {"mortgage": None}}}),
        ("interest . cards . total > 0", {"interest": {"cards": {"total": None}}}),
        (
            '"interest.mortgage.count_7d" == context.page // interest.pension\n && now.hour < 9',
            {"context": {"page": None}, "now": {"hour": None}},
        ),
        ("'''profile.age''' == r'interest' && segments.adult", {"segments": {"adult": None}}),
        (
            "traits.children > 0 && traits.address.city == 'x'",
            {"traits": {"children": None, "address": {"city": None}}},
        ),
        ("products.exists(p, p == 'x')", {"products": None}),
        (r'r"\" == "x" || traits.x == r"interest.y"', {"traits": {"x": None}}),
        ('"""a "profile.age" b""" == context.c', {"context": {"c": None}}),
        ("[profile][0].age > 1", {"profile": None}),
        ("true", {}),
    ],
)
def test_needs_of(source: str, needs: dict[str, Need]) -> None:
    compile_rule(source, RULE_ROOTS)  # every case is a rule the catalog would accept
    assert needs_of(source) == needs


def test_an_unterminated_string_reads_everything() -> None:
    assert needs_of('profile.age > 1 && "x') == dict.fromkeys(sorted(RULE_ROOTS))


def test_reads_merge_and_a_whole_value_absorbs_its_fields() -> None:
    rules = [
        compile_rule(s, RULE_ROOTS)
        for s in (
            "interest.mortgage.count_7d > 0",
            "interest.mortgage.score > 1.0 && interest.cards.total > 0",
            "size(interest.cards) > 0",
            "offers.card.impressions_7d < 3",
            "size(offers) > 0",
        )
    ]
    reads = RuleReads.of(rules)
    assert reads.needs == {
        "interest": {"mortgage": {"count_7d": None, "score": None}, "cards": None},
        "offers": None,
    }
    # offers read whole still see zeros for the offers a rule names
    assert reads.named_offers == {"card"}
    assert reads.roots == {"interest", "offers"}


def test_the_catalog_keeps_what_its_rules_read(catalog: Catalog) -> None:
    reads = catalog.rule_reads
    assert catalog.rule_roots == reads.roots
    assert set(catalog.rule_topics) == set(reads.topics_in(catalog.topics))
    assert catalog.named_offers == reads.named_offers
    interest = reads.needs["interest"]
    assert interest is not None
    assert interest["mortgage"] == {"count_14d": None} or interest["mortgage"] is None


# ------------------------------------------------------------------ the field tables


def random_interest(rng: random.Random) -> TopicInterest:
    n = rng.choice((0, 1, 2, 3, 5, 9))
    hits = sorted(T0 - rng.uniform(0, 95) * DAY for _ in range(n))
    return TopicInterest(
        score=rng.uniform(0, 6),
        score_at=hits[-1] if hits else 0.0,
        hits=hits,
        total=n + rng.randrange(3) if n else 0,
        first_seen=hits[0] - DAY if hits else 0.0,
        last_seen=hits[-1] if hits else 0.0,
    )


def random_history(rng: random.Random) -> OfferHistory:
    imp = sorted(T0 - rng.uniform(0, 60) * DAY for _ in range(rng.randrange(0, 6)))
    clicks = [t for t in imp if rng.random() < 0.3]
    return OfferHistory(
        impressions=imp,
        clicks=clicks,
        dismissals=[t for t in imp if rng.random() < 0.2],
        total_impressions=len(imp) + rng.randrange(3),
        total_clicks=len(clicks),
    )


def random_profile(rng: random.Random, topics: list[str], offers: list[str]) -> Profile:
    traits: dict[str, Any] = {}
    if rng.random() < 0.5:
        traits["age"] = rng.randrange(10, 90)
    if rng.random() < 0.3:
        traits["birthday"] = (
            f"{rng.randrange(1940, 2015)}-0{rng.randrange(1, 10)}-1{rng.randrange(9)}"
        )
    if rng.random() < 0.5:
        traits["children"] = rng.randrange(0, 4)
    if rng.random() < 0.3:
        traits["address"] = {"city": rng.choice(("Utrecht", "Gouda"))}
    return Profile(
        customer_id=f"u-{rng.randrange(10**6)}",
        user_id="u" if rng.random() < 0.6 else None,
        traits=traits,
        products=rng.sample(["current_account", "savings", "mortgage", "credit_card"], 2),
        interests={t: random_interest(rng) for t in [*topics, "crypto"] if rng.random() < 0.5},
        funnel={t: rng.choice(list(FunnelStage)) for t in topics if rng.random() < 0.2},
        offers={o: random_history(rng) for o in [*offers, "gone"] if rng.random() < 0.4},
        consent={"marketing": rng.random() < 0.5} if rng.random() < 0.6 else {},
        balance=rng.uniform(-100, 9000) if rng.random() < 0.7 else None,
        overdrawn=rng.random() < 0.2,
        life_events=[(T0 - rng.uniform(0, 99) * DAY, "moved_house")] if rng.random() < 0.3 else [],
        activity=sorted(T0 - rng.uniform(0, 40) * DAY for _ in range(rng.randrange(0, 25))),
        sessions=rng.randrange(10),
        event_count=rng.randrange(100),
    )


def test_the_field_tables_equal_the_full_views(catalog: Catalog) -> None:
    rng = random.Random(7)
    topics = list(catalog.topics)
    for _ in range(200):
        p = random_profile(rng, topics, ["card"])
        full = rule_variables(p, catalog.topics, T0, {})
        assert {f: fn(p, T0) for f, fn in PROFILE_FIELDS.items()} == full["profile"]
        for tid, spec in catalog.topics.items():
            it = p.interests.get(tid, TopicInterest())
            view = {f: fn(it, spec, T0) for f, fn in INTEREST_FIELDS.items()}
            assert view == interest_view(it, spec, T0) == full["interest"][tid]
        for h in p.offers.values():
            assert {f: fn(h, T0) for f, fn in OFFER_FIELDS.items()} == offer_view(h, T0)


# ------------------------------------------------------------------ same outcomes

RULES = [
    "profile.age >= 18 && profile.age < 30",
    'profile.lifecycle == "family" || profile.engagement == "high"',
    "profile.balance > 1000.0 && !profile.overdrawn && profile.known",
    'interest.mortgage.count_14d >= 2 && !("mortgage" in products)',
    'interest.car_loan.trend == "rising" || interest.pension.score > 2.0',
    "interest.cards.count_7d + interest.cards.count_30d > 3",
    "interest.investing.first_seen_days > 10.0 && interest.investing.last_seen_days < 5.0",
    "interest.crypto.count_7d > 0",  # not a catalog topic: an error both ways
    "interest.mortgage.nothing > 0",  # no such field
    "has(interest.crypto)",
    "has(interest.mortgage.count_90d) && has(interest.mortgage.nothing) == false",
    "size(interest) == 9",
    'interest["pension"].total >= 1',
    "interest.exists(t, interest[t].count_1d > 0)",
    'interest.mortgage.size() == 10 && "score" in interest.mortgage',
    "offers.card.impressions_7d < 2",
    "offers.card.clicks_30d > 0 && offers.card.total_impressions > 2",
    "offers.gone.impressions_30d > 0",  # an offer no rule names elsewhere, seen or not
    "has(offers.gone) || has(offers.card.dismissals_30d)",
    "size(offers) >= 1 && offers.exists(o, offers[o].impressions_7d > 0)",
    'profile.funnel.mortgage == "applying"',
    'has(profile.funnel.car_loan) && profile.funnel.car_loan != "none"',
    "profile.consent.marketing",
    'profile.life_events.exists(e, e.type == "moved_house" && e.days_ago < 30.0)',
    "profile.age.nothing > 1",  # selecting on an int
    "has(traits.children) && traits.children > 0",
    'traits.address.city == "Utrecht"',
    "size(traits) > 1",
    'context.channel == "app" && has(context.page)',
    "now.hour < 12 && now.weekday <= 5",
    'size(products) >= 2 && products.all(x, x != "savings")',
    "[profile.age, interest.mortgage.total][1] >= 0",
    "profile.sessions > 3 ? interest.cards.score > 0.5 : interest.cards.total == 0",
    # flattened chains: below a number, under has(), inside macros, as method receivers
    "interest.cards.total.x == 1 || offers.card.clicks_30d.x == 1 || now.hour.x == 1",
    "has(traits.address.city) && has(offers.gone.impressions_7d)",
    'products.exists(x, x == "savings" && interest.cards.total > 0)',
    'profile.lifecycle.startsWith("fam") || traits.address.size() > 0',
    'context.page.path == "/" || context.channel.size() == 3',
    "has(interest.crypto.total) || has(interest.mortgage.trend)",
]


def outcomes(rules: list[Rule], variables: dict[str, Any]) -> list[RuleOutcome]:
    env = Evaluation(variables)
    return [env.check(r) for r in rules]


def test_narrow_variables_give_the_full_outcomes(catalog: Catalog) -> None:
    rules = [compile_rule(s, RULE_ROOTS) for s in RULES]
    together = RuleReads.of(rules)
    alone = [RuleReads.of([r]) for r in rules]
    rng = random.Random(20260921)
    topics = list(catalog.topics)
    seen: dict[RuleOutcome, int] = dict.fromkeys(RuleOutcome, 0)
    for _ in range(300):
        p = random_profile(rng, topics, ["card"])
        ctx: dict[str, Any] = rng.choice(({}, {"channel": "app"}, {"channel": "web", "page": "/"}))
        full = rule_variables(p, catalog.topics, T0, ctx, together.named_offers)
        expected = outcomes(rules, full)
        env = together.evaluation(p, catalog.topics, T0, ctx)
        assert [env.check(r) for r in rules] == expected
        for rule, reads, want in zip(rules, alone, expected, strict=True):
            full_one = rule_variables(p, catalog.topics, T0, ctx, reads.named_offers)
            assert outcomes([rule], full_one) == [want], rule.source
            env = reads.evaluation(p, catalog.topics, T0, ctx)
            assert env.check(rule) is want, rule.source
        for o in expected:
            seen[o] += 1
    assert all(seen.values()), seen  # each outcome happens


def test_narrow_variables_hold_only_what_is_read(catalog: Catalog) -> None:
    rule = compile_rule("interest.mortgage.count_14d >= 2 && size(products) > 0", RULE_ROOTS)
    reads = RuleReads.of([rule])
    p = Profile(customer_id="u-1", interests={"mortgage": TopicInterest(hits=[T0 - DAY])})
    variables = reads.variables(p, catalog.topics, T0, {})
    # one flat value for the chain, the bare root as it is
    assert sorted(variables.values(), key=str) == [1, []]
    assert variables["products"] == []
    assert reads.evaluation(p, catalog.topics, T0, {}).check(rule) is RuleOutcome.FALSE


@pytest.mark.parametrize(
    ("source", "flat"),
    [
        ("interest.mortgage.count_14d >= 2", 1),
        ("has(profile.funnel.mortgage)", 1),  # has(x.mortgage) over the flat funnel
        ("has(profile.age)", 0),  # has() needs the map it tests
        ('"x" in products && segments.adult', 0),  # a bare root; segments are bound apart
        ("products.exists(interest, interest == 'x') && interest.mortgage.total > 0", 0),
        ("profile.life_events.exists(_nb0, _nb0.type == 'x')", 0),  # could clash: as written
    ],
)
def test_which_chains_become_flat_variables(catalog: Catalog, source: str, flat: int) -> None:
    rule = compile_rule(source, RULE_ROOTS)
    p = Profile(customer_id="u-1", funnel={"mortgage": FunnelStage.APPLYING})
    variables = RuleReads.of([rule]).variables(p, catalog.topics, T0, {})
    assert sum(name.startswith("_nb") for name in variables) == flat
