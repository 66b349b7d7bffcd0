"""Rules: CEL compiled once over a fixed set of roots, evaluated to TRUE / FALSE / ERROR, never
executing anything; and the variables a rule sees."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.errors import NextbestError, RuleError
from nextbest.profile.banking import BANKING_DEFAULTS
from nextbest.profile.interest import decayed
from nextbest.profile.model import FunnelStage, OfferHistory, Profile, TopicInterest
from nextbest.rules import (
    RULE_ROOTS,
    Evaluation,
    Rule,
    RuleOutcome,
    compile_rule,
    rule_variables,
)
from nextbest.rules.context import age_of, engagement_of, lifecycle_of
from tests.support import T0

DAY = 86_400.0
WINDOW_KEYS = {"count_1d", "count_7d", "count_14d", "count_30d", "count_90d"}
INTEREST_KEYS = WINDOW_KEYS | {"score", "total", "first_seen_days", "last_seen_days", "trend"}


def when(text: str) -> float:
    """An ISO date-time in UTC to epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def rule(source: str) -> Rule:
    return compile_rule(source, RULE_ROOTS)


def outcome(source: str, variables: dict[str, Any]) -> RuleOutcome:
    return Evaluation(variables).check(rule(source))


VARS: dict[str, Any] = {
    "profile": {
        "age": 18,
        "overdrawn": False,
        "life_events": [
            {"type": "moved_house", "days_ago": 200.0},
            {"type": "turning_18", "days_ago": 3.5},
        ],
    },
    "interest": {"mortgage": {"count_14d": 6, "score": 2.5}},
    "products": ["current_account", "savings"],
    "traits": {"children": 2, "city": "Utrecht"},
    "offers": {"card": {"impressions_7d": 1}},
    "segments": {"adult": True, "parent": False},
    "context": {"channel": "web", "page": {"path": "/mortgages"}},
    "now": {"hour": 10, "weekday": 3},
}


# ------------------------------------------------------------------ compile


@pytest.mark.parametrize(
    ("root", "source"),
    [
        ("profile", "profile.age >= 18"),
        ("interest", "interest.mortgage.count_14d >= 5"),
        ("products", '"savings" in products'),
        ("traits", "has(traits.children) && traits.children > 0"),
        ("offers", "offers.card.impressions_7d < 3"),
        ("segments", "segments.adult"),
        ("context", 'context.channel == "web"'),
        ("now", "now.hour < 12"),
    ],
)
def test_every_root_compiles(root: str, source: str) -> None:
    compiled = rule(source)
    assert compiled.roots == frozenset({root})
    assert compiled.source == source
    assert Evaluation(dict(VARS)).check(compiled) is RuleOutcome.TRUE


def test_roots_are_the_documented_names() -> None:
    assert (
        frozenset(
            {
                "profile",
                "interest",
                "products",
                "traits",
                "offers",
                "segments",
                "context",
                "now",
                "security",
            }
        )
        == RULE_ROOTS
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('profile.life_events.exists(e, e.type == "turning_18")', RuleOutcome.TRUE),
        ('profile.life_events.exists(e, e.type == "turning_18" && e.days_ago <= 2.0)', "false"),
        ("profile.life_events.all(ev, ev.days_ago > 1.0)", RuleOutcome.TRUE),
        ('profile.life_events.exists_one(x, x.type == "moved_house")', RuleOutcome.TRUE),
        ("profile.life_events.filter(e, e.days_ago < 10.0).size() == 1", RuleOutcome.TRUE),
        ('profile.life_events.map(e, e.type)[1] == "turning_18"', RuleOutcome.TRUE),
        ('products.exists(p, p == "mortgage")', RuleOutcome.FALSE),
        ("size(products) == 2", RuleOutcome.TRUE),
    ],
)
def test_macros_compile_and_bind_their_variable(source: str, expected: str) -> None:
    compiled = rule(source)
    assert compiled.roots <= RULE_ROOTS
    assert not compiled.roots & {"e", "ev", "x", "p"}
    assert Evaluation(dict(VARS)).check(compiled) == expected


def test_example_turning_18_rule() -> None:
    source = (
        'profile.age == 18 ||\nprofile.life_events.exists(e, e.type == "turning_18" '
        "&& e.days_ago <= 60.0)"
    )
    compiled = rule(source)
    assert compiled.roots == frozenset({"profile"})
    assert outcome(source, VARS) is RuleOutcome.TRUE
    older = {"profile": {"age": 19, "life_events": [{"type": "turning_18", "days_ago": 61.0}]}}
    assert outcome(source, older) is RuleOutcome.FALSE


@pytest.mark.parametrize(
    ("source", "unknown"),
    [
        ("foo.bar", "foo"),
        ("profile.age > 1 && user.age > 1", "user"),
        ("os == 1", "os"),
        ("zeta.a || alpha.b", "alpha, zeta"),
        ("profiles.age > 1", "profiles (did you mean profile?)"),
        (
            "interests.mortgage.score > 1 || nw.hour > 1",
            "interests (did you mean interest?), nw (did you mean now?)",
        ),
    ],
)
def test_unknown_roots_do_not_compile(source: str, unknown: str) -> None:
    with pytest.raises(RuleError) as info:
        rule(source)
    assert info.value.message == (
        f"unknown name(s) {unknown}; rules may use "
        "context, interest, now, offers, products, profile, security, segments, traits"
    )
    assert isinstance(info.value, NextbestError)
    assert info.value.code == "rule_error"


def test_allowed_roots_are_an_argument() -> None:
    assert compile_rule("profile.age > 1", frozenset({"profile"})).roots == {"profile"}
    with pytest.raises(RuleError):
        compile_rule("traits.age > 1", frozenset({"profile"}))


@pytest.mark.parametrize(
    "source",
    ["profile.age >=", "(profile.age > 1", "profile.age > 1 &&& true", "", "a b c", "'unclosed"],
)
def test_syntax_errors_do_not_compile(source: str) -> None:
    with pytest.raises(RuleError) as info:
        rule(source)
    assert info.value.message.startswith("CEL: ")
    assert "\n" not in info.value.message


def test_fields_name_the_catalog_references() -> None:
    compiled = rule(
        "segments.adult && interest.mortgage.count_7d > 1 && offers.card.total_clicks == 0"
        " && profile.age > 1 && traits.x == 1"
    )
    assert compiled.fields == frozenset(
        {("segments", "adult"), ("interest", "mortgage"), ("offers", "card")}
    )
    assert repr(compiled).startswith("Rule('segments.adult")


# ------------------------------------------------------------------ evaluate


def test_true_and_false() -> None:
    assert outcome("profile.age >= 18", VARS) is RuleOutcome.TRUE
    assert outcome("profile.age > 18", VARS) is RuleOutcome.FALSE
    assert outcome("true", {}) is RuleOutcome.TRUE
    assert outcome("false", {}) is RuleOutcome.FALSE


@pytest.mark.parametrize(
    "source",
    [
        "1 + 1",  # not a bool
        "profile.age",  # not a bool
        '"yes"',  # not a bool
        "null",  # not a bool
        "profile.missing",  # missing key
        "profile.missing == 1",  # missing key
        "interest.pension.count_7d > 1",  # missing key
        'profile["nope"] == 1',  # missing key
        "segments.adult",  # root not bound
        '"a" + 1 == 1',  # no such overload
        'int("abc") == 1',  # bad conversion
        "size(1) == 1",  # wrong argument type
        'traits.city.matches("(")',  # bad regex
    ],
)
def test_errors_and_non_bool_results_are_error(source: str) -> None:
    variables = {k: v for k, v in VARS.items() if k != "segments"}
    assert outcome(source, variables) is RuleOutcome.ERROR


@pytest.mark.parametrize(
    "source",
    [
        "profile.age / 0 == 1",  # division by zero
        "profile.age % 0 == 1",  # modulo by zero
        "9223372036854775807 + profile.age > 0",  # integer overflow
        "uint(-1) > 0u",  # unsigned overflow
        "profile.life_events[5].type == 'x'",  # index out of range
        "products[2] == 'x'",  # index out of range
    ],
)
def test_arithmetic_and_index_errors_are_error(source: str) -> None:
    """Every runtime error is ERROR, not an exception out of Rule.check (decide would 500)."""
    assert outcome(source, VARS) is RuleOutcome.ERROR


def test_has_on_missing_key_is_false() -> None:
    assert outcome("has(traits.salary)", VARS) is RuleOutcome.FALSE
    assert outcome("has(traits.salary) && traits.salary > 1000", VARS) is RuleOutcome.FALSE


def test_one_evaluation_checks_many_rules() -> None:
    evaluation = Evaluation(dict(VARS))
    rules = [rule("profile.age >= 18"), rule("profile.age > 99"), rule("profile.nope")]
    assert [evaluation.check(r) for r in rules] == ["true", "false", "error"]
    # and again: checking has no side effects
    assert [evaluation.check(r) for r in rules] == ["true", "false", "error"]


def test_evaluation_binds_segments() -> None:
    variables = {k: v for k, v in VARS.items() if k != "segments"}
    evaluation = Evaluation(variables)
    uses_segments = rule("segments.adult && !segments.parent")
    assert evaluation.check(uses_segments) is RuleOutcome.ERROR  # not bound yet
    evaluation.bind("segments", {"adult": True, "parent": False})
    assert evaluation.variables["segments"] == {"adult": True, "parent": False}
    assert evaluation.check(uses_segments) is RuleOutcome.TRUE
    evaluation.bind("segments", {"adult": True, "parent": True})
    assert evaluation.check(uses_segments) is RuleOutcome.FALSE


def test_evaluation_over_rule_variables(catalog: Catalog) -> None:
    profile = Profile(customer_id="u-1", user_id="u-1", traits={"age": 40, "children": 1})
    variables = rule_variables(profile, catalog.topics, T0, {"channel": "web"})
    evaluation = Evaluation(variables)
    evaluation.bind(
        "segments", {s.id: evaluation.check(r) is RuleOutcome.TRUE for s, r in catalog.segments}
    )
    assert evaluation.variables["segments"] == {
        "mortgage_intent": False,
        "car_intent": False,
        "adult": True,
        "nearing_retirement": False,
        "parent": True,
        "turning_18": False,
    }
    assert evaluation.check(catalog.offers["child_savings_account"].rule) is RuleOutcome.TRUE
    assert evaluation.check(catalog.offers["mortgage_advice"].rule) is RuleOutcome.FALSE
    assert evaluation.check(catalog.offers["credit_card_offer"].rule) is RuleOutcome.TRUE
    assert evaluation.check(catalog.offers["overdraft_warning"].rule) is RuleOutcome.FALSE
    assert evaluation.check(rule('context.channel == "web"')) is RuleOutcome.TRUE


# ------------------------------------------------------------------ no code execution


@pytest.mark.parametrize(
    "template",
    [
        '__import__("os").system("touch {canary}")',
        '__import__("os").system("touch {canary}") == 0',
        "eval(\"open('{canary}', 'w')\")",
        "exec(\"open('{canary}', 'w')\") == null",
        'open("{canary}", "w") != null',
        'profile.__class__.__init__.__globals__["os"].system("touch {canary}")',
        '[1].exists(os, true) && os.system("touch {canary}") == 0',
        '"{canary}".__class__ == null',
    ],
)
def test_code_execution_does_not_compile_or_is_error(tmp_path: Path, template: str) -> None:
    canary = tmp_path / "executed"
    source = template.format(canary=canary)
    try:
        compiled = rule(source)
    except RuleError:
        compiled = None
    if compiled is not None:
        assert outcome(source, dict(VARS)) is RuleOutcome.ERROR
    assert not canary.exists()


# ------------------------------------------------------------------ variables


def test_every_catalog_topic_is_under_interest(catalog: Catalog) -> None:
    variables = rule_variables(Profile(customer_id="anon:a-1"), catalog.topics, T0, {})
    assert set(variables["interest"]) == set(catalog.topics)
    for view in variables["interest"].values():
        assert set(view) == INTEREST_KEYS
        assert {k: view[k] for k in WINDOW_KEYS} == dict.fromkeys(WINDOW_KEYS, 0)
        assert view["score"] == 0.0
        assert view["total"] == 0
        assert view["first_seen_days"] == -1.0
        assert view["last_seen_days"] == -1.0
        assert view["trend"] == "none"
    assert set(variables) == RULE_ROOTS - {"segments"}


def test_interest_view_of_a_seen_topic(catalog: Catalog) -> None:
    hits = [T0 - 40 * DAY, T0 - 10 * DAY, T0 - 8 * DAY, T0 - 2 * DAY, T0 - 3600.0]
    interest = TopicInterest(
        score=4.0,
        score_at=T0 - 3600.0,
        hits=hits,
        total=7,
        first_seen=T0 - 100 * DAY,
        last_seen=T0 - 3600.0,
    )
    profile = Profile(customer_id="u-1", interests={"mortgage": interest})
    view = rule_variables(profile, catalog.topics, T0, {})["interest"]["mortgage"]
    half_life = catalog.topics["mortgage"].half_life
    assert view == {
        "score": round(decayed(4.0, T0 - 3600.0, T0, half_life), 6),
        "count_1d": 1,
        "count_7d": 2,
        "count_14d": 4,
        "count_30d": 4,
        "count_90d": 5,
        "total": 7,
        "first_seen_days": 100.0,
        "last_seen_days": round(3600.0 / DAY, 3),
        "trend": "steady",  # 2 in the last 7 days, 2 in the 7 before
    }
    assert view["score"] == pytest.approx(4.0 * 2 ** (-3600.0 / (14 * DAY)), abs=1e-6)


@pytest.mark.parametrize(
    ("hits", "trend"),
    [
        ([T0 - 1 * DAY], "new"),
        ([T0 - 10 * DAY, T0 - 2 * DAY, T0 - 1 * DAY], "rising"),
        ([T0 - 10 * DAY, T0 - 9 * DAY, T0 - 1 * DAY], "falling"),
        ([T0 - 10 * DAY], "falling"),
        ([T0 - 10 * DAY, T0 - 9 * DAY, T0 - 2 * DAY, T0 - 1 * DAY], "steady"),
    ],
)
def test_interest_trend(catalog: Catalog, hits: list[float], trend: str) -> None:
    interest = TopicInterest(
        score=1.0,
        score_at=hits[-1],
        hits=hits,
        total=len(hits),
        first_seen=hits[0],
        last_seen=hits[-1],
    )
    profile = Profile(customer_id="u-1", interests={"cards": interest})
    assert rule_variables(profile, catalog.topics, T0, {})["interest"]["cards"]["trend"] == trend


def test_interest_of_topics_outside_the_catalog_is_not_shown(catalog: Catalog) -> None:
    profile = Profile(customer_id="u-1", interests={"crypto": TopicInterest(total=3)})
    assert "crypto" not in rule_variables(profile, catalog.topics, T0, {})["interest"]


def test_profile_offers_context_and_now(catalog: Catalog) -> None:
    profile = Profile(
        customer_id="u-1",
        user_id="u-1",
        traits={"birthday": "1990-05-17", "age": 12},
        products=["current_account"],
        funnel={"mortgage": FunnelStage.APPLYING},
        offers={
            "card": OfferHistory(
                impressions=[T0 - 40 * DAY, T0 - 10 * DAY, T0 - DAY],
                clicks=[T0 - DAY],
                dismissals=[],
                total_impressions=9,
                total_clicks=1,
            )
        },
        consent={"marketing": False},
        balance=-12.5,
        overdrawn=True,
        life_events=[(T0 - 3 * DAY, "moved_house")],
        activity=[T0 - 40 * DAY] + [T0 - i * 3600.0 for i in range(6)],
        sessions=4,
        event_count=17,
    )
    context = {"channel": "app"}
    v = rule_variables(profile, catalog.topics, T0, context)
    assert v["profile"] == {
        "customer_id": "u-1",
        "known": True,
        "age": 36,  # from the birthday, not the age trait
        "lifecycle": "family",
        "engagement": "medium",  # 6 events in 30 days
        "overdrawn": True,
        "balance": -12.5,
        "sessions": 4,
        "events": 17,
        "funnel": {"mortgage": "applying"},
        "life_events": [{"type": "moved_house", "days_ago": 3.0}],
        "consent": {"marketing": False},
        **BANKING_DEFAULTS,  # no core-banking event folded
    }
    assert v["offers"] == {
        "card": {
            "impressions_7d": 1,
            "impressions_30d": 2,
            "clicks_30d": 1,
            "dismissals_30d": 0,
            "total_impressions": 9,
            "total_clicks": 1,
        }
    }
    assert v["products"] == ["current_account"]
    assert v["traits"] == profile.traits
    assert v["context"] is context
    moment = datetime.fromtimestamp(T0, UTC)
    assert v["now"] == {
        "epoch": T0,
        "hour": moment.hour,
        "weekday": moment.isoweekday(),
        "day": moment.day,
        "month": moment.month,
        "year": moment.year,
    }
    assert v["now"]["hour"] == 10


def test_unknown_customer_defaults() -> None:
    v = rule_variables(Profile(customer_id="anon:a-1"), {}, T0, {})
    assert v["interest"] == {}
    assert v["profile"]["known"] is False
    assert v["profile"]["age"] == -1
    assert v["profile"]["lifecycle"] == "unknown"
    assert v["profile"]["engagement"] == "dormant"
    assert v["profile"]["balance"] == 0.0
    assert v["offers"] == {}


# ------------------------------------------------------------------ age, lifecycle, engagement


NOW = when("2026-09-23T10:00:00")


@pytest.mark.parametrize(
    ("traits", "age"),
    [
        ({"birthday": "2008-09-23"}, 18),  # the 18th birthday itself
        ({"birthday": "2008-09-24"}, 17),  # tomorrow
        ({"birthday": "2008-09-22"}, 18),  # yesterday
        ({"birthday": "2008-10-01"}, 17),
        ({"birthday": "2008-01-01"}, 18),
        ({"birthday": "2008-12-31"}, 17),
        ({"birthday": "2008-09-23T23:59:59+02:00"}, 18),  # only the date counts
        ({"birthday": "2008-09-24", "age": 30}, 17),  # birthday wins over age
        ({"birthday": "1960-02-29"}, 66),
        ({"birthday": "not a date", "age": 30}, 30),  # unreadable birthday: age
        ({"birthday": 20080923, "age": 30}, 30),  # not a string: age
        ({"age": 30}, 30),
        ({"age": 30.9}, 30),
        ({"age": True}, None),
        ({"age": float("nan")}, None),  # no age rather than a failed decision
        ({"age": float("inf")}, None),
        ({"age": "30"}, None),
        ({}, None),
    ],
)
def test_age_of(traits: dict[str, Any], age: int | None) -> None:
    assert age_of(traits, NOW) == age


@pytest.mark.parametrize(
    ("now", "age"),
    [
        ("2026-02-28T23:59:59", 17),
        ("2026-03-01T00:00:00", 18),
        ("2028-02-28T12:00:00", 19),
        ("2028-02-29T00:00:00", 20),
    ],
)
def test_age_of_leap_day_birthday(now: str, age: int) -> None:
    assert age_of({"birthday": "2008-02-29"}, when(now)) == age


def test_age_changes_at_utc_midnight() -> None:
    traits = {"birthday": "2008-09-23"}
    assert age_of(traits, when("2026-09-22T23:59:59")) == 17
    assert age_of(traits, when("2026-09-23T00:00:00")) == 18


@pytest.mark.parametrize(
    ("age", "phase"),
    [
        (None, "unknown"),
        (0, "minor"),
        (17, "minor"),
        (18, "young_adult"),
        (25, "young_adult"),
        (26, "starter"),
        (34, "starter"),
        (35, "family"),
        (49, "family"),
        (50, "established"),
        (59, "established"),
        (60, "pre_retirement"),
        (66, "pre_retirement"),
        (67, "retired"),
        (101, "retired"),
    ],
)
def test_lifecycle_of(age: int | None, phase: str) -> None:
    assert lifecycle_of(age) == phase


@pytest.mark.parametrize(
    ("events", "level"),
    [
        (0, "dormant"),
        (1, "low"),
        (4, "low"),
        (5, "medium"),
        (19, "medium"),
        (20, "high"),
        (500, "high"),
    ],
)
def test_engagement_of(events: int, level: str) -> None:
    assert engagement_of(events) == level


def test_engagement_counts_the_last_30_days_only() -> None:
    profile = Profile(
        customer_id="u-1",
        activity=[T0 - 31 * DAY] * 25 + [T0 - 29 * DAY] * 4 + [T0 + DAY],
    )
    assert rule_variables(profile, {}, T0, {})["profile"]["engagement"] == "low"
