"""The rule type checker: every variable a rule sees has a type, and a rule that names a field
that does not exist, compares values of different types or gives no condition is reported
before it runs (where CEL would fail, or be always false, at run time)."""

from __future__ import annotations

from datetime import date
from typing import Any

import cel
import pytest

from nextbest.profile.model import FunnelStage, OfferHistory, Profile, TopicInterest
from nextbest.profile.topics import TopicSpec
from nextbest.rules.context import RULE_ROOTS, rule_variables
from nextbest.rules.reads import INTEREST_FIELDS, OFFER_FIELDS, PROFILE_FIELDS
from nextbest.rules.schema import Kind, RuleType, rule_schema
from nextbest.rules.typecheck import FUNCTIONS, METHODS, check_rule
from nextbest.sim.worlds import WORLDS, world_catalog
from nextbest.store.catalog_files import load_catalog
from tests.support import DAY, EXAMPLE_CATALOG, T0

TOPICS = ["mortgage", "car_loan", "pension"]
SCHEMA = rule_schema(TOPICS, ["adult", "mortgage_intent"], ["card", "mortgage_rates"])


def problems(source: str) -> list[str]:
    return check_rule(source, SCHEMA)


# ------------------------------------------------------------------ the issue's cases


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "interest.mortgage.count_30days >= 5",
            "unknown field interest.mortgage.count_30days "
            "(did you mean interest.mortgage.count_30d?)",
        ),
        (
            "interest.car_loan.cnt_30d >= 2",
            "unknown field interest.car_loan.cnt_30d (did you mean interest.car_loan.count_30d?)",
        ),
        ("profile.agee >= 18", "unknown field profile.agee (did you mean profile.age?)"),
        (
            "5",
            "the rule is 5, a number, not a condition: a rule must be true or false, such as "
            "profile.age >= 18",
        ),
        (
            'profile.age >= "18"',
            'profile.age >= "18" compares an int with a string: CEL never converts between '
            "them, so the rule fails when it runs (write 18 without quotes)",
        ),
    ],
)
def test_the_issue_s_rules_are_errors(rule: str, message: str) -> None:
    assert problems(rule) == [message]


# ------------------------------------------------------------------ names and fields


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "interest.mortage.count_14d > 1",
            "interest.mortage is not defined in the catalog (did you mean interest.mortgage?)",
        ),
        (
            "segments.adlt",
            "segments.adlt is not defined in the catalog (did you mean segments.adult?)",
        ),
        (
            "offers.crad.impressions_7d < 2",
            "offers.crad is not defined in the catalog (did you mean offers.card?)",
        ),
        (
            "has(profile.consent.marketng)",
            "unknown field profile.consent.marketng (did you mean profile.consent.marketing?)",
        ),
        (
            'profile.funnel.mortgag == "applying"',
            "profile.funnel.mortgag is not defined in the catalog "
            "(did you mean profile.funnel.mortgage?)",
        ),
        ("now.hours > 9", "unknown field now.hours (did you mean now.hour?)"),
        (
            "profile.age.years > 1",
            "profile.age is an int: it has no field years (profile.age.years)",
        ),
        (
            "interest.mortgage.xyz > 1",
            "unknown field interest.mortgage.xyz; interest.mortgage has "
            + ", ".join(INTEREST_FIELDS),
        ),
    ],
)
def test_unknown_names_and_fields(rule: str, message: str) -> None:
    assert problems(rule) == [message]


def test_open_maps_take_any_key() -> None:
    """``traits`` and ``context`` hold what the bank sends: any field, any type."""
    assert problems("has(traits.children) && traits.children > 0") == []
    assert problems('context.device == "mobile" && traits.vip') == []


def test_a_rule_outside_the_parser_s_subset_is_checked_by_its_paths() -> None:
    """A map literal is outside ``rules.parse``: the rule's plain field paths still are
    checked."""
    assert problems('{"a": 1}.a == 1 && profile.agee > 1') == [
        "unknown field profile.agee (did you mean profile.age?)"
    ]
    assert problems('{"a": 1}.a == 1 && profile.age > 1') == []


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('interest["mortgage"].count_14d > 1', None),
        ("interest[profile.lifecycle].count_7d > 0", None),
        ('profile.funnel.exists(t, profile.funnel[t] == "applying")', None),
        ('products[0] == "mortgage"', None),
        (
            'interest["mortgag"].count_14d > 1',
            'interest["mortgag"] is not defined in the catalog (did you mean "mortgage"?)',
        ),
        (
            'interest["mortgage"].count_30days > 1',
            'unknown field interest["mortgage"].count_30days '
            '(did you mean interest["mortgage"].count_30d?)',
        ),
        (
            'profile.funnel.exists(t, profile.funnel[t] == "aplying")',
            'profile.funnel[t] is never "aplying" (did you mean "applying"?): it is one of '
            "none, researching, considering, applying, submitted, customer",
        ),
        ('products["a"] == "x"', 'products["a"]: a list\'s position is an int, not a string'),
        ("profile.age[1] > 0", "profile.age is an int: it cannot be indexed (profile.age[1])"),
        (
            'profile.funnel[1] == "x"',
            "profile.funnel[1]: the keys of profile.funnel are strings, not an int",
        ),
    ],
)
def test_an_index_is_typed(rule: str, message: str | None) -> None:
    """``map[key]`` and ``list[position]``: the value's type, a key the catalog does not
    define, a key or position of the wrong type, a value that cannot be indexed."""
    assert problems(rule) == ([] if message is None else [message])


# ------------------------------------------------------------------ types


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            '"5"',
            'the rule is "5", a string, not a condition: a rule must be true or false, such as '
            "profile.age >= 18",
        ),
        (
            "profile.age",
            "the rule gives an int (profile.age), not a condition: a rule must be true or "
            "false; compare it, such as profile.age > 0",
        ),
        (
            "profile.age && segments.adult",
            "profile.age is an int, not a condition: both sides of && must be true or false",
        ),
        ("!profile.age", "profile.age is an int, not a condition: ! needs true or false"),
        (
            'profile.age == "18"',
            'profile.age == "18" compares an int with a string: they are never equal '
            "(write 18 without quotes)",
        ),
        (
            "profile.age == null",
            "profile.age == null compares an int with null: they are never equal",
        ),
        (
            "profile.balance + 1 > 0.0",
            "profile.balance + 1 mixes an int and a double: CEL does not convert between them, "
            "so the rule fails when it runs; write the int as a double (2.0) or convert it with "
            "double(...)",
        ),
        (
            "1 in products",
            "1 in products: 1 is an int and products holds strings: it is never in it",
        ),
        (
            'profile.lifecycle == "retiree"',
            'profile.lifecycle is never "retiree" (did you mean "retired"?): it is one of minor, '
            "young_adult, starter, family, established, pre_retirement, retired, unknown",
        ),
        (
            'interest.mortgage.trend in ["rising", "rissing"]',
            'interest.mortgage.trend is never "rissing" (did you mean "rising"?): it is one of '
            "new, rising, steady, falling, none",
        ),
        (
            '"mortage" in interest',
            '"mortage" in interest is never true: interest has no key "mortage" '
            "(did you mean mortgage?)",
        ),
        (
            "profile.life_events.exists(e, e.days_ago)",
            "e.days_ago is a double, not a condition: .exists() needs true or false for each item",
        ),
        (
            'profile.life_events.exists(e, e.kind == "birth")',
            "unknown field e.kind; e has type, days_ago",
        ),
        (
            'profile.lifecycle.lowerAscii() == "x"',
            "unknown function .lowerAscii() in profile.lifecycle.lowerAscii(): the rules engine "
            "does not have it, so the rule fails when it runs",
        ),
        (
            "max(profile.age, 3) > 1",
            "unknown function max() in max(profile.age, 3): the rules engine does not have it, "
            "so the rule fails when it runs",
        ),
        (
            'profile.age.startsWith("1")',
            "profile.age is an int: .startsWith() works on strings",
        ),
    ],
)
def test_type_errors(rule: str, message: str) -> None:
    assert problems(rule) == [message]


@pytest.mark.parametrize(
    "rule",
    [
        'interest.mortgage.count_14d >= 5 && !("mortgage" in products)',
        "profile.balance < 0.0 || profile.overdrawn",
        "interest.mortgage.score >= 1",  # int against double compares the values
        "profile.age >= 50 && profile.age < 67",
        'profile.life_events.exists(e, e.type == "turning_18" && e.days_ago <= 60.0)',
        'has(profile.funnel.mortgage) && profile.funnel.mortgage == "applying"',
        'profile.lifecycle in ["retired", "pre_retirement"]',
        "size(products) > 0 && products.size() < 10",
        "now.weekday <= 5 && now.hour >= 9",
        "offers.card.impressions_7d == 0 && segments.adult",
        "profile.age > 18 ? segments.adult : false",
        'timestamp("2026-01-01T00:00:00Z").getFullYear() == now.year',
        'products.exists(p, p.startsWith("mortgage"))',
        "int(profile.balance) > 100",
        "true",
        "traits.vip",
    ],
)
def test_good_rules_pass(rule: str) -> None:
    assert problems(rule) == []


def test_one_mistake_is_one_message() -> None:
    assert problems("profile.agee >= 18 && profile.agee < 30") == [
        "unknown field profile.agee (did you mean profile.age?)"
    ]


def test_every_function_the_checker_knows_runs_in_cel() -> None:
    """The checker's lists of functions and methods are functions the rules engine has."""
    calls = {
        "size": "size([1])",
        "has": "has({'a': 1}.a)",
        "int": "int(1.5)",
        "uint": "uint(1)",
        "double": "double(1)",
        "string": "string(1)",
        "bytes": "bytes('a')",
        "dyn": "dyn(1)",
        "timestamp": "timestamp('2026-01-01T00:00:00Z')",
        "duration": "duration('1h')",
        "type": "type(1)",
    }
    assert set(calls) == set(FUNCTIONS)
    for source in calls.values():
        cel.compile(source).execute(cel.Context())
    ts = "timestamp('2026-01-01T00:00:00Z')"
    for method in METHODS:
        if method in ("all", "exists", "exists_one", "map", "filter"):
            source = f"[1, 2].{method}(x, x > 1)"
        elif method == "size":
            source = "'ab'.size()"
        elif method.startswith("get"):
            source = f"{ts}.{method}()"
        else:
            source = f"'abc'.{method}('a')"
        cel.compile(source).execute(cel.Context())


# ------------------------------------------------------------------ one source of truth


def _conforms(value: Any, t: RuleType, path: str) -> None:
    if t.kind is Kind.DYN:
        return
    expected = {
        Kind.BOOL: bool,
        Kind.INT: int,
        Kind.DOUBLE: float,
        Kind.STRING: str,
        Kind.LIST: list,
        Kind.MAP: dict,
    }[t.kind]
    assert type(value) is expected, (path, value, t.kind)
    if t.values is not None:
        assert value in t.values, (path, value)
    if t.kind is Kind.LIST and t.item is not None:
        for i, item in enumerate(value):
            _conforms(item, t.item, f"{path}[{i}]")
    if t.kind is Kind.MAP:
        for key, item in value.items():
            if t.fields is not None:
                assert key in t.fields, (path, key)
                _conforms(item, t.fields[key], f"{path}.{key}")
            elif t.item is not None:
                _conforms(item, t.item, f"{path}.{key}")


def _busy_profile() -> Profile:
    p = Profile(customer_id="u-1", user_id="u-1")
    p.traits = {"birthday": "1970-05-01", "children": 2}
    p.products = ["mortgage", "current_account"]
    p.overdrawn = True
    p.balance = -12.5
    p.sessions = 3
    p.event_count = 40
    p.activity = [T0 - DAY * i for i in range(30, 0, -1)]
    p.funnel = {"mortgage": FunnelStage.APPLYING}
    p.life_events = [(T0 - 5 * DAY, "birth")]
    p.consent = {"marketing": False, "personalization": True}
    hits = [T0 - DAY * 10, T0 - DAY * 2, T0 - 3600]
    p.interests = {
        "mortgage": TopicInterest(
            score=3.0,
            score_at=T0 - 3600,
            hits=hits,
            total=3,
            first_seen=hits[0],
            last_seen=hits[-1],
        )
    }
    p.offers = {
        "card": OfferHistory(
            impressions=[T0 - DAY], clicks=[T0 - DAY], total_impressions=1, total_clicks=1
        )
    }
    return p


@pytest.mark.parametrize("profile", [_busy_profile(), Profile(customer_id="anon:x")])
def test_every_value_rules_see_has_the_declared_type(profile: Profile) -> None:
    topics = {t: TopicSpec(id=t, name=t) for t in TOPICS}
    seen = rule_variables(profile, topics, T0, {"device": "mobile"}, named_offers=["card"])
    seen["segments"] = {"adult": True, "mortgage_intent": False}
    assert set(seen) == set(SCHEMA) == RULE_ROOTS
    for root, value in seen.items():
        _conforms(value, SCHEMA[root], root)
    # every field a table computes is typed, and the view has every typed field
    assert set(seen["profile"]) == set(PROFILE_FIELDS) == set(SCHEMA["profile"].fields or {})
    assert set(seen["interest"]["mortgage"]) == set(INTEREST_FIELDS)
    assert set(seen["offers"]["card"]) == set(OFFER_FIELDS)


# ------------------------------------------------------------------ catalogs that ship


def test_the_example_bank_and_every_world_s_rules_type_check() -> None:
    """No false alarm on the rules that ship: they load (an error would refuse them)."""
    assert load_catalog(EXAMPLE_CATALOG).warnings == []
    for world in WORLDS.values():
        assert world_catalog(world, EXAMPLE_CATALOG, date(2026, 6, 1)).warnings == []
