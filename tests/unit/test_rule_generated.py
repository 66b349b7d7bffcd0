"""Rules as generated Python functions (``rules.generated``) decide exactly as CEL, and as the
closures they stand in for; no constant can break out of its literal; a rule or a term the
generator does not cover keeps its closures.

Differential, on seeded random rules (chains of the kinds the generator writes inline and of
kinds it leaves to the closures, over slots holding odd values, missing keys and hidden
reads) and seeded random profiles: the generated deciders (``RuleReads.of(rules)``), the
closures alone (``RuleReads.of(rules, generate_code=False)``) and CEL over the full
variables give the same outcome for every rule; on a consent view's masked plan, the
generated deciders give CEL's outcome on that same view.
"""

from __future__ import annotations

import ast
import random
import re
from typing import Any

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.errors import RuleError
from nextbest.profile.model import Profile
from nextbest.rules import RULE_ROOTS, Rule, RuleOutcome, RuleReads, compile_rule, rule_variables
from nextbest.rules.compiled import MISSING, UNSET, Frame, compile_decider
from nextbest.rules.generated import constant, generate
from nextbest.rules.parse import Binary, Ident, Literal, Select, parse
from tests.support import T0
from tests.unit.test_rule_closures import TRICKY, cel_outcomes, random_context, random_profile

NUMBER_SLOTS = [
    "profile.age",
    "profile.balance",
    "profile.sessions",
    "profile.events",
    "traits.level",
    "traits.big",
    "traits.age",
    "traits.nothing",
    "interest.mortgage.count_7d",
    "interest.mortgage.score",
    "interest.crypto.count_30d",
    "offers.card.clicks_30d",
    "offers.gone.impressions_7d",
]
STRING_SLOTS = [
    "profile.lifecycle",
    "profile.engagement",
    "context.channel",
    "context.page",
    "traits.name",
    "traits.flag",
    "interest.mortgage.trend",
    "profile.funnel.mortgage",
    "traits.nothing",
]
BOOL_SLOTS = [
    "profile.known",
    "profile.overdrawn",
    "profile.consent.marketing",
    "traits.flag",
    "traits.none",
    "traits.nothing",
    "segments.adult",
    "segments.nothing",
]
COLLECTIONS = ["products", "profile.consent", "profile.funnel", "traits.tags", "traits.address"]
HAS = [
    "profile.funnel.mortgage",
    "profile.consent.marketing",
    "context.channel",
    "traits.age",
    "interest.mortgage",
]
NUMBERS = ["0", "1", "2", "-3", "2.5", "30", "5000.0", "-0.5", "9007199254740993", "1e300"]
STRINGS = ['"app"', '"family"', '"rising"', '"x"', '"é"', '""', "'Ingrid'", '"a\\"b"']
ORDERS = ["<", "<=", ">", ">="]


def random_term(rng: random.Random, depth: int = 0) -> str:
    """One term: mostly the kinds written inline, some left to the closures."""
    kind = rng.randrange(13)
    if kind == 0:
        return (
            f"{rng.choice(NUMBER_SLOTS)} {rng.choice([*ORDERS, '==', '!='])} {rng.choice(NUMBERS)}"
        )
    if kind == 1:
        s = rng.choice(NUMBER_SLOTS)
        return f"{s} {rng.choice(ORDERS)} {rng.choice(NUMBERS)} && {s} {rng.choice(ORDERS)} 40"
    if kind == 2:
        return f"{rng.choice(STRING_SLOTS)} {rng.choice(['==', '!='])} {rng.choice(STRINGS)}"
    if kind == 3:
        return (
            f"{rng.choice(BOOL_SLOTS)} {rng.choice(['==', '!='])} {rng.choice(['true', 'false'])}"
        )
    if kind == 4:
        key = rng.choice(['"mortgage"', '"savings"', '"marketing"', '"city"'])
        test = f"{key} in {rng.choice(COLLECTIONS)}"
        return f"!({test})" if rng.random() < 0.5 else test
    if kind == 5:
        op = rng.choice([*ORDERS, "=="])
        return f"size({rng.choice(COLLECTIONS)}) {op} {rng.choice(NUMBERS[:4])}"
    if kind == 6:
        return f"has({rng.choice(HAS)})"
    if kind == 7:
        return rng.choice(BOOL_SLOTS)
    if kind == 8:
        return f"!{rng.choice(BOOL_SLOTS)}"
    if kind == 9 and depth < 2:  # a nested chain, nested again at times
        op = rng.choice(["&&", "||"])
        terms = [random_term(rng, depth + 1) for _ in range(rng.choice((2, 2, 3)))]
        return "(" + f" {op} ".join(terms) + ")"
    if kind == 10:  # outside the inline kinds: the closures (or CEL)
        return rng.choice(
            [
                "products.exists(p, p == 'savings')",
                "profile.sessions + 1 > 3",
                "profile.age > 30 ? profile.known : false",
                "traits.name < 'm'",
                "profile.lifecycle in ['family', 'starter']",
                "-profile.balance < 0.0",
            ]
        )
    if kind == 11:
        strings = ", ".join(rng.sample(STRINGS, rng.randrange(1, 4)))
        return f"{rng.choice(STRING_SLOTS)} in [{strings}]"
    return f"{rng.choice(NUMBER_SLOTS)} {rng.choice(ORDERS)} {rng.choice(NUMBER_SLOTS)}"


def random_rules(rng: random.Random, n: int) -> list[Rule]:
    rules: list[Rule] = []
    while len(rules) < n:
        terms = [random_term(rng) for _ in range(rng.choice((1, 1, 2, 3, 4, 5)))]
        source = f" {rng.choice(['&&', '||'])} ".join(terms)
        rules.append(compile_rule(source, RULE_ROOTS))
    return rules


def test_random_rules_decide_as_cel_and_as_the_closures(catalog: Catalog) -> None:
    rng = random.Random(20261207)
    rules = random_rules(rng, 300)
    generated = RuleReads.of(rules)
    closures = RuleReads.of(rules, generate_code=False)
    assert not closures.generated
    assert len(generated.generated) > 0.6 * len(rules), len(generated.generated)
    sources = list(generated.generated.values())
    for shape in ("while True", "bad2 = 0", "fr.bound", " in {", "len(v)", "_c"):
        assert any(shape in s for s in sources), shape  # nested chains, segments, lists...
    topics, tally = catalog.topics, dict.fromkeys(RuleOutcome, 0)
    undecided = 0
    for _ in range(120):
        p = random_profile(rng, list(topics), ["card"])
        ctx = random_context(rng)
        segments = rng.choice(({"adult": True}, {"adult": False}, {"adult": 3}, {}))
        full = rule_variables(p, topics, T0, ctx, generated.named_offers)
        want = cel_outcomes(rules, full, segments)
        for reads in (generated, closures):
            env = reads.evaluation(p, topics, T0, ctx)
            env.bind("segments", segments)
            got = [env.check(r) for r in rules]
            for rule, g, w in zip(rules, got, want, strict=True):
                assert g is w, (rule.source, reads is generated, p, ctx, segments, g, w)
        # each generated decider alone: where it decides, it decides as the closures do
        env = generated.evaluation(p, topics, T0, ctx)
        env.bind("segments", segments)
        ref = closures.evaluation(p, topics, T0, ctx)
        ref.bind("segments", segments)
        for rule, w in zip(rules, want, strict=True):
            by_code, by_closures = env.by_closures(rule), ref.by_closures(rule)
            assert by_code is by_closures, (rule.source, p, ctx, by_code, by_closures)
            undecided += by_code is None
            tally[w] += 1
    assert all(tally.values()), tally
    assert 0 < undecided < sum(tally.values()) // 4, undecided  # both paths exercised


def test_the_tricky_rules_are_generated_where_covered_and_decide_as_cel(catalog: Catalog) -> None:
    rules = [compile_rule(s, RULE_ROOTS) for s in TRICKY]
    reads = RuleReads.of(rules)
    assert len(reads.generated) > len(TRICKY) // 3
    rng = random.Random(5)
    for _ in range(200):
        p = random_profile(rng, list(catalog.topics), ["card"])
        ctx = random_context(rng)
        segments = {"adult": rng.random() < 0.5}
        full = rule_variables(p, catalog.topics, T0, ctx, reads.named_offers)
        want = cel_outcomes(rules, full, segments)
        env = reads.evaluation(p, catalog.topics, T0, ctx)
        env.bind("segments", segments)
        for rule, w in zip(rules, want, strict=True):
            assert env.check(rule) is w, (rule.source, p, ctx)


@pytest.mark.parametrize(
    "hidden",
    [{"transactional"}, {"behavioral"}, {"crm"}, {"transactional", "crm"}, {"contextual"}],
)
def test_a_hidden_read_decides_as_cel_on_the_same_view(catalog: Catalog, hidden: set[str]) -> None:
    """A consent view's masked plan: the generated deciders give the closures' outcome, and
    CEL's on that same view."""
    sources, view = catalog.sources, frozenset(hidden)
    rng = random.Random(sum(map(len, hidden)))
    rules = random_rules(rng, 150) + [o.rule for o in catalog.offers.values()]
    reads, closures = RuleReads.of(rules), RuleReads.of(rules, generate_code=False)
    plans = (reads.masked(view, sources.of_path), closures.masked(view, sources.of_path))
    assert plans[0] is not reads.plan
    erred = 0
    for _ in range(60):
        p = sources.masked(random_profile(rng, list(catalog.topics), ["card"]), view)
        ctx = random_context(rng)
        env = reads.evaluation(p, catalog.topics, T0, ctx, plans[0])
        ref = closures.evaluation(p, catalog.topics, T0, ctx, plans[1])
        cel = reads.evaluation(p, catalog.topics, T0, ctx, plans[0])
        for e in (env, ref, cel):
            e.bind("segments", {"adult": True})
        for rule in rules:
            outcome = env.check(rule)
            assert outcome is ref.check(rule), (hidden, rule.source, p, ctx)
            assert outcome is cel.check_cel(rule), (hidden, rule.source, p, ctx)
            erred += outcome is RuleOutcome.ERROR
    assert erred


@pytest.mark.parametrize(
    ("source", "hidden", "want"),
    [
        ("!has(profile.funnel.mortgage)", "behavioral", RuleOutcome.ERROR),  # the map is gone
        ("has(profile.funnel.mortgage)", "crm", RuleOutcome.ERROR),
        ("!has(interest.mortgage)", "behavioral", RuleOutcome.ERROR),  # the root is unbound
        ("!has(context.channel)", "contextual", RuleOutcome.ERROR),
        ("has(profile.funnel.mortgage) || true", "behavioral", RuleOutcome.TRUE),  # absorbed
        ("[1].exists(q, !has(profile.funnel.mortgage))", "behavioral", RuleOutcome.ERROR),
        ("!has(profile.funnel)", "behavioral", RuleOutcome.TRUE),  # a key profile lacks
        ("!has(profile.consent.marketing)", "behavioral", RuleOutcome.TRUE),  # never hidden
        ("!has(profile.funnel.mortgage)", "transactional", RuleOutcome.TRUE),
    ],
)
def test_has_under_a_hidden_map_errs_as_cel(
    catalog: Catalog, source: str, hidden: str, want: RuleOutcome
) -> None:
    """``has(a.b.c)`` when a view hides the map ``a.b`` whole (``has(interest.x)`` when it
    hides the root) is CEL's error on the view, by the generated code and the closures;
    ``has(a.b)`` of a hidden key of a map the view keeps is false; the plain plan is
    untouched."""
    rule = compile_rule(source, RULE_ROOTS)
    view = frozenset({hidden})
    for reads in (RuleReads.of([rule]), RuleReads.of([rule], generate_code=False)):
        plan = reads.masked(view, catalog.sources.of_path)
        p = catalog.sources.masked(Profile(customer_id="u1"), view)
        env = reads.evaluation(p, catalog.topics, T0, {}, plan)
        cel = reads.evaluation(p, catalog.topics, T0, {}, plan)
        assert env.by_closures(rule) is want, (source, hidden, bool(reads.generated))
        assert cel.check_cel(rule) is want
        full = reads.evaluation(Profile(customer_id="u1"), catalog.topics, T0, {})
        assert full.check(rule) is full.check_cel(rule)


# ------------------------------------------------------------------ constants and safety

HOSTILE = [
    'a"b',
    "a'b",
    "\\",
    "\\'",
    "x\ny",
    "\r\t",
    "'''",
    '"""',
    "' + __import__('os').system('echo pwned') + '",
    '" or True or "',
    "é\u2028\u2029\x00\x7f😀",
    "\\n",
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_string_stays_one_constant(text: str) -> None:
    """A string constant with quotes, backslashes, newlines or any unicode is written as one
    literal: the generated code compares with exactly it, and names nothing else."""
    node = Binary("==", Select(Ident("context"), "channel"), Literal(text))
    slot_of = lambda path: (0, lambda p, t, now, ctx: ctx.get(path[1], MISSING))  # noqa: E731
    assert compile_decider(node, RULE_ROOTS, slot_of) is not None
    made = generate(node, RULE_ROOTS, slot_of)
    assert made is not None
    tree = ast.parse(made.source)
    strings = [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is str
    ]
    assert strings == [text]
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    allowed = {"fr", "values", "bad", "v", "t", "tv", "UNSET", "MISSING", "Erred", "Undecided"}
    allowed |= {"_D", "_H", "_E", "type", "int", "float", "str", "_g0"}
    assert {n for n in names - allowed if not re.fullmatch(r"_c\d+", n)} == set(), names
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    for ctx, want in (
        ({"channel": text}, RuleOutcome.TRUE),
        ({"channel": text + "x"}, RuleOutcome.FALSE),
        ({"channel": 1}, RuleOutcome.FALSE),
        ({}, RuleOutcome.ERROR),
    ):
        fr = Frame([slot_of(("context", "channel"))[1]], (None, {}, T0, ctx))
        assert made.decider(fr) is want, (text, ctx)


def test_a_hostile_string_in_a_rule_source_compares_as_cel(catalog: Catalog) -> None:
    """The same through a rule's CEL text, escapes and all, against CEL."""
    source = (
        "context.channel == \"a\\\"b\\\\' \\n\\t''' é \\\" + __import__('os')\" || profile.known"
    )
    rule = compile_rule(source, RULE_ROOTS)
    tree = parse(source)
    assert isinstance(tree, Binary)
    assert isinstance(tree.left, Binary)
    assert isinstance(tree.left.right, Literal)
    text = tree.left.right.value
    assert '"' in text
    assert "\\" in text
    assert "\n" in text
    assert "é" in text
    reads = RuleReads.of([rule])
    assert rule in reads.generated
    p = random_profile(random.Random(1), list(catalog.topics), [])
    for ctx in ({"channel": text}, {"channel": "app"}, {}):
        env = reads.evaluation(p, catalog.topics, T0, ctx)
        assert env.by_closures(rule) is env.check_cel(rule), ctx


class _Sly(str):
    def __repr__(self) -> str:
        return "__import__('os')"


@pytest.mark.parametrize("value", [_Sly("x"), float("nan"), float("inf"), None, [1], b"x", 10**400])
def test_only_validated_constants_are_written(value: Any) -> None:
    with pytest.raises(RuleError, match=r"constant|number|int|read back"):
        constant(value)


def test_a_sly_constant_leaves_the_rule_to_its_closures() -> None:
    node = Binary("==", Select(Ident("context"), "channel"), Literal(_Sly("x")))
    slot_of = lambda path: (0, lambda p, t, now, ctx: ctx.get("channel", MISSING))  # noqa: E731
    assert generate(node, RULE_ROOTS, slot_of) is None


@pytest.mark.parametrize("value", [0, -3, 2.5, -0.0, 1e-300, 9007199254740992, True, "é\n"])
def test_constants_read_back(value: Any) -> None:
    text = constant(value)
    back = ast.literal_eval(text)
    assert type(back) is type(value)
    assert back == value


# ------------------------------------------------------------------ the fallback


def test_a_rule_without_a_covered_term_keeps_its_closures(catalog: Catalog) -> None:
    uncovered = compile_rule("products.exists(p, p == 'savings')", RULE_ROOTS)
    mixed = compile_rule("profile.age > 10 && products.exists(p, p == 'savings')", RULE_ROOTS)
    outside = compile_rule("{'a': 1}.a == traits.x", RULE_ROOTS)  # CEL's
    reads = RuleReads.of([uncovered, mixed, outside])
    assert uncovered not in reads.generated
    assert outside not in reads.generated
    assert uncovered in reads.compiled
    assert outside not in reads.compiled
    assert mixed in reads.generated
    assert "_c" in reads.generated[mixed]  # the macro term: its closure, called
    rng = random.Random(3)
    for _ in range(50):
        p = random_profile(rng, list(catalog.topics), [])
        ctx = random_context(rng)
        env = reads.evaluation(p, catalog.topics, T0, ctx)
        for rule in (uncovered, mixed, outside):
            assert env.check(rule) is env.check_cel(rule), (rule.source, p)


def test_a_frame_slot_is_read_once_and_only_when_reached() -> None:
    calls: list[str] = []

    def getter(name: str, value: Any) -> Any:
        def get(p: Any, t: Any, now: float, ctx: Any) -> Any:
            calls.append(name)
            return value

        return get

    slots = {
        ("profile", "age"): (0, getter("age", 20)),
        ("profile", "sessions"): (1, getter("s", 3)),
    }
    node = parse("profile.age >= 18 && profile.age < 26 && profile.sessions > 5")
    assert node is not None
    made = generate(node, RULE_ROOTS, slots.__getitem__)
    assert made is not None
    fr = Frame([g for _, g in slots.values()], (None, {}, T0, {}))
    assert made.decider(fr) is RuleOutcome.FALSE
    assert calls == ["age", "s"]
    assert fr.values == [20, 3]
    calls.clear()
    fr = Frame([g for _, g in slots.values()], (None, {}, T0, {}))
    fr.values[0] = 12  # a value already read: not read again, and it decides
    assert made.decider(fr) is RuleOutcome.FALSE
    assert calls == []
    assert fr.values[1] is UNSET
