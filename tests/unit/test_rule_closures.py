"""Rules compiled to closures (``rules.parse``, ``rules.compiled``) decide exactly as CEL.

Differential: on seeded random profiles, every rule's outcome through ``RuleReads.evaluation``
(closures, CEL where they cannot decide) equals its outcome in CEL over the full
``rule_variables``; and each closure run alone, where it decides, gives that same outcome.
Over the tricky rules of ``test_rule_reads`` and more (mixed types, missing keys, ``has()``,
``in``, macros, ternaries, string functions, negative numbers, division, nulls, segments),
the example bank's rules and the generated 150-rule benchmark catalog.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.profile.model import FunnelStage, Profile
from nextbest.rules import (
    RULE_ROOTS,
    Evaluation,
    Rule,
    RuleOutcome,
    RuleReads,
    compile_rule,
    rule_variables,
)
from nextbest.rules.compiled import Undecided
from nextbest.rules.parse import Binary, Call, Ident, Index, Literal, Select, Unary, parse
from nextbest.store.catalog_files import load_catalog
from tests.support import T0
from tests.unit.test_rule_reads import RULES as READS_RULES
from tests.unit.test_rule_reads import random_history, random_interest

DAY = 86_400.0

TRICKY = [
    *READS_RULES,
    # mixed types: int against double, bool against int, strings against numbers
    "profile.age == 30.0 || profile.balance > 100",
    "profile.age < profile.balance && profile.sessions >= 2.5",
    'traits.age == "30" || profile.known == 1 || profile.known != 0',
    "interest.mortgage.score > interest.mortgage.count_7d",
    "profile.balance >= profile.sessions",
    "traits.level > 1 && traits.level < 3",
    "traits.level == traits.flag || traits.flag == true",
    # missing keys, on either side of && and ||
    "traits.nothing > 1 || profile.age > 10",
    "traits.nothing > 1 && profile.age > 10",
    "profile.age > 10 && traits.nothing > 1",
    "!(traits.x == 1) || true",
    "traits.big > 1 || profile.known",
    "traits.big == traits.big",
    # has()
    "has(traits.age)",
    "has(profile.consent.marketing) && profile.consent.marketing",
    "!has(profile.funnel.pension) || profile.funnel.pension == 'customer'",
    "has(profile.funnel.mortgage.stage)",
    'has(context.channel) && context.channel == "app"',
    "has(traits.address) && has(traits.address.city)",
    "has(now.hour) && !has(now.minute)",
    "has(profile.age.x)",
    "has(segments.adult) && !has(segments.nothing)",
    # in
    '"mortgage" in products',
    "1 in products",
    'profile.lifecycle in ["family", "starter"]',
    'profile.age in ["family", 30]',
    '"marketing" in profile.consent',
    "profile.age in [30, 40.0, 50]",
    "null in products || traits.flag in [true]",
    '"x" in traits.address',
    "traits.level in traits.address",
    "traits.tags.exists(t, t in products)",
    # macros
    'products.exists(p, p.startsWith("cur"))',
    "products.all(p, size(p) > 5)",
    "profile.life_events.all(e, e.days_ago > 10.0)",
    'profile.consent.exists(k, k == "marketing")',
    "[1, 2, 3].exists(x, x > profile.sessions)",
    "[1, 2, 3].all(x, x < profile.sessions)",
    "traits.tags.all(t, t > 0)",
    "traits.tags.exists(t, t.x > 0)",
    "products.exists(products, products == 'savings') && size(products) > 0",
    "products.exists(p, products.exists(q, q != p))",
    "profile.life_events.exists(e, e.type == 'moved_house' && e.missing)",
    # ternaries, non-bool results
    'profile.age > 30 ? profile.balance > 10.0 : "x"',
    "traits.children > 0 ? true : false",
    "profile.known ? 1 : 2",
    "traits.level ? true : false",
    "profile.age",
    # strings
    'profile.customer_id.startsWith("u-")',
    "profile.customer_id.endsWith(1)",
    'context.channel.contains("p")',
    "size(profile.customer_id) > 3",
    'profile.lifecycle + "x" == "familyx"',
    'size(traits.name) == 6 || traits.name < "m"',
    'traits.name.endsWith("é")',
    # negative numbers, arithmetic, division, overflow
    "profile.balance > -100.0",
    "-profile.age < -20",
    "-profile.balance < 0.0",
    "profile.sessions - 10 < -5",
    "profile.events / profile.sessions > 5",
    "profile.events % 7 == 3",
    "profile.balance / 100.0 > 2.0",
    "profile.balance / 0.0 > 1.0",
    "(0 - profile.events) / 7 == -3",
    "(0 - profile.events) % 7 == -3",
    "profile.events % (0 - 7) == 3",
    "profile.events * 9223372036854775807 > 0",
    "profile.sessions * 1.5 > 3.0",
    "profile.balance + profile.sessions > 10.0",
    "-traits.big < 0",
    "profile.balance % 2.0 == 0.0",
    "(profile.balance - profile.balance) / (profile.balance - profile.balance) == 1.0",
    # nulls
    "traits.x == null",
    "profile.age == null",
    "context.page != null",
    "traits.none == null && traits.none != 1",
    "traits.none < 1",
    # && and || with errors and non-bools on either side
    "true && profile.sessions",
    "profile.sessions && false",
    "profile.sessions || profile.known",
    "profile.known || traits.nothing",
    "traits.nothing || traits.flag || profile.overdrawn",
    "traits.nothing && traits.flag && profile.overdrawn",
    "!profile.sessions",
    # a chain's first term tested inline (a slot against a number or a string): odd, missing
    # and deciding values at each position, alone and before one or more terms
    "traits.level >= 2",
    'traits.name == "anna"',
    "traits.nothing != 1",
    'traits.level == "x"',
    "traits.big < 10 && profile.known",
    "traits.level >= 2 && traits.nothing > 1 && profile.known",
    "traits.level >= 2 || traits.nothing > 1 || profile.known",
    'traits.nothing == "x" && profile.age > 10',
    'traits.nothing == "x" || profile.age > 10',
    'profile.age > 10 && traits.nothing == "x"',
    'traits.flag == "yes" || traits.level != 2.5',
    "traits.none >= 0 && traits.flag",
    'context.channel == "app" && traits.nothing',
    'context.channel != "app" || traits.nothing',
    'profile.lifecycle != "family" || traits.nothing == 1 || traits.level == 1',
    "profile.age >= 18 && profile.age < 60 && traits.nothing",
    "profile.balance < 0.0 || profile.sessions",
    # segments (bound after the segment rules)
    "segments.adult && profile.age > 20",
    "!segments.adult || segments.nothing",
    "segments.adult == profile.known",
    # a missing key is CEL's error: absorbed by && and || where another term decides
    "traits.nothing > 1 && traits.x == 2 && profile.known",
    "traits.nothing == 'a' || traits.nothing2 == 'b' || profile.known",
    "(traits.nothing > 1 || profile.known) && !(traits.other == 2)",
    "profile.known && (traits.nothing < 3 || traits.level > 1) && profile.sessions > 0",
    "profile.consent.marketing && profile.known && profile.sessions > 0 && profile.age > 1",
    "!('x' in traits.nothing) || profile.known",
    "traits.nothing.exists(t, t > 1) || profile.sessions == 3",
    "[traits.nothing, 1].exists(t, t == 1)",
    "profile.known ? traits.nothing : false",
    "has(traits.nothing.city) || profile.known",
    "interest.crypto.count_7d >= 1 || offers.gone.clicks_30d > 0 || profile.known",
    "context.page == '/' && context.channel == 'web'",
    # a slot's bands, its numbers, its size
    "profile.age >= 18 && profile.age < 26 && profile.known",
    "profile.age < 18 || profile.age >= 67",
    "traits.level >= 1 && traits.level <= 2.0",
    "traits.level > -1.5 || traits.level < 0",
    "traits.big >= 0 && traits.big < 3 || profile.known",
    "traits.age > 20 && traits.age <= 40",
    "profile.sessions == 3 || profile.events != 7",
    "traits.level == 2 && traits.level != 2.5",
    "traits.big == 0 || traits.none != 1",
    "profile.balance == 0 || profile.balance == 250.0",
    "size(products) >= 2 && size(profile.funnel) == 0",
    "products.size() < 3 || size(traits.tags) != 2",
    "size(traits.name) > 4 && size(traits.nothing) > 0",
    "size(traits.address) == 1.0 || size(traits.level) == 1",
    # indexing: a key or position there, missing, of another type; a map's keys in a macro
    'profile.funnel.exists(t, profile.funnel[t] == "applying")',
    'profile.funnel.all(t, profile.funnel[t] != "customer")',
    "profile.funnel.exists(t, profile.funnel.exists(u, u != t))",
    "profile.consent.exists(k, profile.consent[k])",
    "profile.consent.all(k, k == 'marketing' && profile.consent[k])",
    "traits.address.exists(k, traits.address[k] == 3)",
    # an error on one key, true on another: all() errs in any key order (exists() would
    # not: CEL's own answer then follows its map's order, which differs between its maps)
    "traits.tags.all(k, traits.tags[k] > 0)",
    "traits.tags.all(t, t != 'x')",
    "traits.address.exists(k, traits.nothing > 1) || profile.known",
    "traits.address.exists(k, traits.address[k] == 3 || traits.nothing > 1)",
    "traits.address.all(k, k == 'city' && traits.nothing > 1) || profile.known",
    'interest["mortgage"].count_14d > 1',
    "interest[profile.lifecycle].count_7d >= 0",
    'profile.funnel["mortgage"] == "applying" || profile.known',
    'products[0] == "savings"',
    "products[1] == traits.name",
    "traits.tags[0] == 1",
    "traits.tags[5] == 1 || profile.known",
    "traits.tags[-1] == 1",
    'traits.tags["a"] == 1',
    "traits.address[traits.name] == 1",
    'traits.address["city"] == 3 && profile.known',
    "[1, 2, 3][traits.level] == 3",
    "[1, 2, 3][1.0] == 2",
    "has(traits.address['city'].x) || profile.known",
    "has(interest['mortgage'].count_7d) && interest['mortgage'].count_7d >= 0",
    # outside the subset: CEL as written
    "traits.address['city'] == 'Utrecht'",
    "{'a': 1}.a == 1",
    "profile.age == 1u",
    "int(profile.balance) > 10",
    'r"x" == context.channel',
    "profile.sessions > 0x10",
    # in CEL, reading the segments bound after the segment rules, or not
    "int(profile.balance) > 10 && segments.adult",
    "segments.adult || {'a': 1}.a == 2",
    "{'a': segments.adult}.a == true",
]

#: odd trait values: every kind CEL converts, and some it treats apart
ODD = [None, True, False, 0, 1, 2, -3, 1.5, 2.0, float("nan"), "30", "é", 2**63, 2**64, [1, 2]]


def random_profile(rng: random.Random, topics: list[str], offers: list[str]) -> Profile:
    traits: dict[str, Any] = {}
    for key in ("age", "level", "flag", "big", "none", "x", "children", "name"):
        if rng.random() < 0.6:
            traits[key] = rng.choice(ODD)
    if isinstance(traits.get("age"), float):
        traits["age"] = 2.5  # age_of takes int(age): NaN has none (outside this test)
    if rng.random() < 0.4:
        traits["age"] = rng.randrange(10, 90)
    if rng.random() < 0.3:
        traits["birthday"] = (
            f"{rng.randrange(1940, 2015)}-0{rng.randrange(1, 10)}-1{rng.randrange(9)}"
        )
    if rng.random() < 0.4:
        traits["address"] = rng.choice(
            ({"city": "Utrecht"}, {"city": 3}, {}, [1], "x", {"a": 1, "b": "x", "c": None})
        )
    if rng.random() < 0.4:
        traits["tags"] = rng.choice(
            ([1, 2], ["savings", "x"], [], [{"x": 1}], [1, "a"], {"a": 1}, {"a": True, "b": 1})
        )
    if rng.random() < 0.3:
        traits["name"] = rng.choice(("Ingrid", "José", "anna", "Zoë"))
    products = ["current_account", "savings", "mortgage", "credit_card", "pension_plan"]
    events = rng.choice((0, 1, 7, 24, 100, -5)) if rng.random() < 0.2 else rng.randrange(100)
    return Profile(
        customer_id=rng.choice(("u-1", "x", "u-éé", f"u-{rng.randrange(99)}")),
        user_id="u" if rng.random() < 0.6 else None,
        traits=traits,
        products=rng.sample(products, rng.randrange(0, 4)),
        interests={t: random_interest(rng) for t in [*topics, "crypto"] if rng.random() < 0.5},
        funnel={t: rng.choice(list(FunnelStage)) for t in topics if rng.random() < 0.2},
        offers={o: random_history(rng) for o in [*offers, "gone"] if rng.random() < 0.4},
        consent={"marketing": rng.random() < 0.5} if rng.random() < 0.6 else {},
        balance=rng.choice((None, 0.0, -50.0, 250.0, rng.uniform(-100, 9000))),
        overdrawn=rng.random() < 0.2,
        life_events=[(T0 - rng.uniform(0, 99) * DAY, rng.choice(("moved_house", "x")))]
        if rng.random() < 0.4
        else [],
        activity=sorted(T0 - rng.uniform(0, 40) * DAY for _ in range(rng.randrange(0, 25))),
        sessions=rng.choice((0, 1, 3, 10)),
        event_count=events,
    )


def random_context(rng: random.Random) -> dict[str, Any]:
    return rng.choice(({}, {"channel": "app"}, {"channel": "web", "page": "/"}, {"page": None}))


def cel_outcomes(
    rules: list[Rule], variables: dict[str, Any], segments: dict[str, Any] | None
) -> list[RuleOutcome]:
    env = Evaluation(dict(variables))
    if segments is not None:
        env.bind("segments", segments)
    return [env.check(r) for r in rules]


def assert_same_as_cel(
    segment_rules: list[tuple[str, Rule]],
    rules: list[Rule],
    topics: Any,
    named: list[str],
    profiles: int,
    seed: int,
) -> dict[str, int]:
    """The catalog-wide evaluation and each closure alone agree with CEL on the full
    variables; returns how often the closures decided, fell back, and each outcome."""
    reads = RuleReads.of([r for _, r in segment_rules] + rules)
    rng = random.Random(seed)
    tally = {"decided": 0, "undecided": 0, **dict.fromkeys(RuleOutcome, 0)}
    for _ in range(profiles):
        p = random_profile(rng, list(topics), named)
        ctx = random_context(rng)
        full = rule_variables(p, topics, T0, ctx, reads.named_offers)
        seg_rules = [r for _, r in segment_rules]
        seg_want = cel_outcomes(seg_rules, full, None)
        segments = {
            name: o is RuleOutcome.TRUE
            for (name, _), o in zip(segment_rules, seg_want, strict=True)
        }
        if not segment_rules:
            segments = {"adult": rng.random() < 0.5}
        want = cel_outcomes(rules, full, segments)
        env = reads.evaluation(p, topics, T0, ctx)
        assert [env.check(r) for r in seg_rules] == seg_want
        env.bind("segments", segments)
        got = [env.check(r) for r in rules]
        for rule, g, w in zip(rules, got, want, strict=True):
            assert g is w, (rule.source, p, ctx, g, w)
            tally[w] += 1
        # each closure alone, on a fresh evaluation: where it decides, it decides as CEL
        alone = reads.evaluation(p, topics, T0, ctx)
        alone.bind("segments", segments)
        for rule, w in zip(rules, want, strict=True):
            closure = reads.compiled.get(rule)
            if closure is None:
                continue
            try:
                value = closure(alone)
            except Undecided:
                tally["undecided"] += 1
                continue
            tally["decided"] += 1
            outcome = {True: RuleOutcome.TRUE, False: RuleOutcome.FALSE}.get(
                value if type(value) is bool else None, RuleOutcome.ERROR
            )
            assert outcome is w, (rule.source, p, ctx, value, w)
    return tally


def test_tricky_rules_decide_as_cel(catalog: Catalog) -> None:
    rules = [compile_rule(s, RULE_ROOTS) for s in TRICKY]
    tally = assert_same_as_cel([], rules, catalog.topics, ["card"], 400, 20260921)
    assert all(tally[o] for o in RuleOutcome), tally
    assert tally["decided"] > tally["undecided"] > 0, tally  # both paths are exercised


def test_the_example_banks_rules_decide_as_cel(catalog: Catalog) -> None:
    offers = list(catalog.offers.values())
    segment_rules = [(s.id, r) for s, r in catalog.segments]
    tally = assert_same_as_cel(
        segment_rules, [o.rule for o in offers], catalog.topics, list(catalog.offers), 300, 5
    )
    assert tally["decided"], tally
    assert tally[RuleOutcome.TRUE], tally


def test_the_generated_catalogs_rules_decide_as_cel(
    catalog_gen: ModuleType, tmp_path: Path
) -> None:
    catalog_gen.write_catalog(tmp_path, seed=7, placement_offers=60, other_offers=40, broaden=0.3)
    generated = load_catalog(tmp_path)
    segment_rules = [(s.id, r) for s, r in generated.segments]
    rules = [o.rule for o in generated.offers.values()]
    assert len(segment_rules) + len(rules) >= 150
    tally = assert_same_as_cel(
        segment_rules, rules, generated.topics, list(generated.offers), 150, 11
    )
    assert tally["decided"], tally
    assert tally[RuleOutcome.TRUE], tally


@pytest.mark.parametrize(
    ("source", "funnel", "want"),
    [
        ('profile.funnel.exists(t, profile.funnel[t] == "applying")', {}, RuleOutcome.FALSE),
        (
            'profile.funnel.exists(t, profile.funnel[t] == "applying")',
            {"mortgage": FunnelStage.CUSTOMER, "pension": FunnelStage.APPLYING},
            RuleOutcome.TRUE,
        ),
        (
            'profile.funnel.all(t, profile.funnel[t] != "customer")',
            {"mortgage": FunnelStage.CUSTOMER, "pension": FunnelStage.APPLYING},
            RuleOutcome.FALSE,
        ),
        (
            'profile.funnel["pension"] == "applying"',
            {"pension": FunnelStage.APPLYING},
            RuleOutcome.TRUE,
        ),
        ('products[0] == "savings"', {}, RuleOutcome.TRUE),
        (  # every key errs, none decides: CEL's error in any order, which || absorbs
            'profile.funnel.exists(t, traits.nothing > 1) || "savings" in products',
            {"mortgage": FunnelStage.CUSTOMER, "pension": FunnelStage.APPLYING},
            RuleOutcome.TRUE,
        ),
        ('interest["mortgage"].count_14d >= 0', {}, RuleOutcome.TRUE),
    ],
)
def test_an_index_and_a_macro_over_a_map_run_without_cel(
    catalog: Catalog, source: str, funnel: dict[str, FunnelStage], want: RuleOutcome
) -> None:
    """A map's keys in ``exists``/``all`` and ``m[key]``/``l[i]`` are decided by the closures
    when every key gives a bool and the key or position is there: no CEL context built (the
    bench catalog's ``applying_any`` segment cost a decision ~110 µs in CEL)."""
    rule = compile_rule(source, RULE_ROOTS)
    reads = RuleReads.of([rule])
    profile = Profile(customer_id="u-1", funnel=funnel, products=["savings", "mortgage"])
    env = reads.evaluation(profile, catalog.topics, T0, {})
    assert env.check(rule) is want
    assert env.cel_checks == 0
    full = rule_variables(profile, catalog.topics, T0, {}, reads.named_offers)
    assert cel_outcomes([rule], full, None) == [want]


def test_segments_reach_cel_when_a_rule_run_there_reads_them(catalog: Catalog) -> None:
    """The decision's CEL context is built by the first rule that needs CEL, often before the
    segments are bound; they are converted for CEL only when a rule run there reads them,
    and a later binding replaces them. (A value CEL cannot convert shows a conversion: it
    raises.)"""
    plain = compile_rule("int(profile.balance) > 10", RULE_ROOTS)
    reading = compile_rule("int(profile.balance) > 10 && segments.adult", RULE_ROOTS)
    reads = RuleReads.of([plain, reading])
    profile = Profile(customer_id="u-1", balance=250.0)
    unconvertible = {"adult": True, "odd": object()}

    env = reads.evaluation(profile, catalog.topics, T0, {})
    assert env.check(plain) is RuleOutcome.TRUE  # the CEL context is built here
    env.bind("segments", unconvertible)  # not converted: nothing run in CEL read it yet
    assert env.check(plain) is RuleOutcome.TRUE
    with pytest.raises(ValueError, match="convert"):
        env.check(reading)  # the first CEL rule that reads the segments converts them

    env = reads.evaluation(profile, catalog.topics, T0, {})
    assert env.check(reading) is RuleOutcome.ERROR  # segments not bound yet: unbound in CEL
    env.bind("segments", {"adult": True})
    assert env.check(reading) is RuleOutcome.TRUE
    env.bind("segments", {"adult": False})  # converted before: replaced
    assert env.check(reading) is RuleOutcome.FALSE
    assert env.cel_checks == 3


# ------------------------------------------------------------------ the parser


@pytest.mark.parametrize(
    ("source", "tree"),
    [
        ("-5", Literal(-5)),
        (
            "!a.b || c && d",
            Binary("||", Unary("!", Select(Ident("a"), "b")), Binary("&&", Ident("c"), Ident("d"))),
        ),
        (
            "1 + 2 * 3 < 7",
            Binary("<", Binary("+", Literal(1), Binary("*", Literal(2), Literal(3))), Literal(7)),
        ),
        ("has(a.b)", Call("has", None, (Select(Ident("a"), "b"),))),
        ("a[0]", Index(Ident("a"), Literal(0))),
        ('a.b["c"].d', Select(Index(Select(Ident("a"), "b"), Literal("c")), "d")),
        ("a[b[1] + 1]", Index(Ident("a"), Binary("+", Index(Ident("b"), Literal(1)), Literal(1)))),
        ("'it\\'s' == \"x\"", Binary("==", Literal("it's"), Literal("x"))),
    ],
)
def test_the_parser_reads_the_subset(source: str, tree: Any) -> None:
    assert parse(source) == tree


@pytest.mark.parametrize(
    "source",
    [
        "{'a': 1}",
        "a[0",
        "a[]",
        "1u",
        "0x1f",
        'r"x"',
        "'''x'''",
        "'\\x41'",
        ".a",
        "a.",
        "9223372036854775808",
        "1 +",
    ],
)
def test_the_parser_leaves_the_rest_to_cel(source: str) -> None:
    assert parse(source) is None
