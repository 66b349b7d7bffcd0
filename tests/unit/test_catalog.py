"""The catalog: the example bank loads, placements index offers, and every problem is reported
with its file, its line and a reason."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nextbest.catalog import Catalog, Channel, OfferKind
from nextbest.errors import CatalogError, CatalogProblem, NextbestError
from nextbest.rules import Rule
from nextbest.store.catalog_files import check_catalog, load_catalog
from tests.support import EXAMPLE_CATALOG

COMMERCIAL = {
    "mortgage_advice",
    "car_loan_offer",
    "pension_check",
    "child_savings_account",
    "credit_card_offer",
    "mortgage_rates",
    "car_loan_rates",
    "investing_start",
    "pension_calculator",
    "personal_loan_offer",
    "travel_insurance_offer",
    "home_insurance_offer",
    "savings_offer",
}
SERVICE = {
    "overdraft_warning",
    "turning_18_package",
    "security_tips",
    "was_this_you",
    "overdraft_fee_insight",
    "idle_cash_insight",
    "price_rise_insight",
}


def at(text: str) -> float:
    """An ISO date or date-time (UTC when naive) to epoch seconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line in ``path`` that contains ``needle``."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), start=1) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in {path}"
    return hits[nth - 1]


def only(location: Path) -> CatalogProblem:
    problems = check_catalog(location)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def assert_problem(
    problem: CatalogProblem, file: Path, line: int, path: str, reason: str | re.Pattern[str]
) -> None:
    assert problem.file == str(file)
    assert problem.line == line
    assert problem.path == path
    if isinstance(reason, re.Pattern):
        assert reason.search(problem.reason), problem.reason
    else:
        assert problem.reason == reason
    column = "" if problem.column is None else f":{problem.column}"
    assert str(problem) == f"{file}:{line}{column}: {path}: {problem.reason}"


#: a small valid catalog; tests append to or edit copies of it
TOPICS = """
topics:
  - id: mortgage
    name: Mortgage
  - id: cards
    name: Cards
"""
SEGMENTS = """
segments:
  - id: adult
    rule: profile.age >= 18
"""
OFFERS = """
offers:
  - id: advice
    name: Mortgage advice
    kind: commercial
    topic: mortgage
    eligibility: segments.adult && interest.mortgage.count_14d >= 2
    content:
      web: {title: Talk to us}
      app: {title: Talk}
  - id: warning
    name: Overdraft warning
    kind: service
    eligibility: profile.overdrawn
    content:
      web: {title: You are overdrawn}
      app: {title: Overdrawn}
  - id: card_app
    name: Card in the app
    kind: commercial
    topic: cards
    content:
      app: {title: A card}
"""
#: what every campaign must say (its hypothesis, objective, category and primary KPI)
WHY = (
    "    hypothesis: {observation: Few book advice, change: Invite them, expected: More calls}\n"
    "    objective: acquisition\n"
    "    category: offer\n"
    "    kpi: Callback Requested\n"
)
CAMPAIGNS = (
    """
campaigns:
  - id: autumn
    name: Autumn
    owner: me@bank.example
    offers: [advice]
"""
    + WHY
    + """    weight: 1.5
    control_share: 0.1
"""
)
PLACEMENTS = """
placements:
  - id: hero
    channel: web
  - id: sidebar
    channel: web
    kinds: [commercial]
  - id: app_home
    channel: app
  - id: app_service
    channel: app
    kinds: [service]
  - id: mail
    channel: email
"""


def small(folder: Path, **override: str) -> Path:
    """The small catalog as one file per section; ``override`` replaces a section's text."""
    sections = {
        "topics": TOPICS,
        "segments": SEGMENTS,
        "offers": OFFERS,
        "campaigns": CAMPAIGNS,
        "placements": PLACEMENTS,
    }
    sections.update(override)
    return write(folder, {f"{name}.yaml": text for name, text in sections.items()})


# ------------------------------------------------------------------ the example bank


def test_example_bank_loads() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    spec = catalog.spec
    assert isinstance(catalog, Catalog)
    assert [t.id for t in spec.topics] == [
        "mortgage",
        "car_loan",
        "pension",
        "child_savings",
        "investing",
        "cards",
        "overdraft",
        "payments",
        "personal_loan",
        "travel_insurance",
        "home_insurance",
        "savings",
    ]
    assert [s.id for s in spec.segments] == [
        "mortgage_intent",
        "car_intent",
        "adult",
        "nearing_retirement",
        "parent",
        "turning_18",
    ]
    assert set(catalog.offers) == COMMERCIAL | SERVICE
    assert len(spec.offers) == 20
    assert set(catalog.campaigns) == {
        "mortgage_q4",
        "car_loan_autumn",
        "pension_awareness",
        "family_savings",
        "cards_always_on",
        "always_on_products",
        "overdraft_fee_help",
        "idle_cash_savings",
        "subscription_price_rises",
    }
    assert list(catalog.placements) == [
        "home_hero",
        "home_feed",
        "product_sidebar",
        "app_home",
        "topic_advisor",
    ]
    assert re.fullmatch(r"1\+[0-9a-f]{12}", catalog.version)
    assert catalog.source == str(EXAMPLE_CATALOG)
    assert spec.holdout_share == 0.0
    assert spec.contact_policy.per_offer.count == 3
    assert catalog.fold_config.session_timeout == 30 * 60.0
    assert catalog.fold_config.event_weights == {
        "Calculator Used": 3.0,
        "Application Started": 5.0,
    }


def test_example_bank_has_no_problems() -> None:
    assert check_catalog(EXAMPLE_CATALOG) == []
    assert check_catalog(str(EXAMPLE_CATALOG)) == []


def test_example_rules_are_compiled_once() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    assert [s.id for s, _ in catalog.segments] == [s.id for s in catalog.spec.segments]
    assert all(isinstance(rule, Rule) for _, rule in catalog.segments)
    turning_18 = dict((s.id, r) for s, r in catalog.segments)["turning_18"]
    assert turning_18.roots == frozenset({"profile"})
    assert catalog.offers["turning_18_package"].rule.fields == frozenset(
        {("segments", "turning_18")}
    )


def test_example_product_sidebar_has_only_commercial_offers() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    sidebar = catalog.by_placement["product_sidebar"]
    assert {o.id for o in sidebar} == COMMERCIAL
    assert all(o.kind is OfferKind.COMMERCIAL for o in sidebar)


def test_example_home_and_app_placements_hold_every_offer() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    for placement in ("home_hero", "home_feed", "app_home"):
        assert {o.id for o in catalog.by_placement[placement]} == COMMERCIAL | SERVICE
    # the index keeps catalog order
    assert [o.id for o in catalog.by_placement["home_hero"]] == [o.id for o in catalog.spec.offers]


def test_example_offers_know_their_campaign_weight_and_prior() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    advice = catalog.offers["mortgage_advice"]
    assert advice.campaign is not None
    assert advice.campaign.id == "mortgage_q4"
    assert advice.weight == 1.2
    assert advice.base_ctr == 0.02  # its own prior_ctr
    warning = catalog.offers["overdraft_warning"]
    assert warning.campaign is None
    assert warning.weight == 1.0
    assert warning.base_ctr == catalog.scoring.service_ctr == 0.08
    assert catalog.offers["car_loan_offer"].base_ctr == catalog.scoring.commercial_ctr == 0.01
    assert catalog.offers["credit_card_offer"].weight == 0.8
    assert all(o.valid_from is None and o.valid_until is None for o in catalog.offers.values())
    assert all(o.live_at(0.0) for o in catalog.offers.values())


def test_single_file_catalog_loads_like_the_folder(tmp_path: Path) -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(EXAMPLE_CATALOG.glob("*.yaml")))
    single = tmp_path / "bank.yaml"
    single.write_text(text, encoding="utf-8")
    folder = load_catalog(EXAMPLE_CATALOG)
    one = load_catalog(single)
    assert one.source == str(single)
    assert one.spec == folder.spec
    assert list(one.offers) == list(folder.offers)
    assert {k: [o.id for o in v] for k, v in one.by_placement.items()} == {
        k: [o.id for o in v] for k, v in folder.by_placement.items()
    }


def test_yml_files_and_subfolders_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    write(folder, {"topics.yml": TOPICS, "segments.yaml": SEGMENTS})
    write(folder / "marketing", {"offers.yaml": OFFERS, "campaigns.yaml": CAMPAIGNS})
    write(folder / "web", {"placements.yml": PLACEMENTS})
    catalog = load_catalog(folder)
    assert set(catalog.offers) == {"advice", "warning", "card_app"}
    assert set(catalog.placements) == {"hero", "sidebar", "app_home", "app_service", "mail"}


def test_catalog_digest_follows_content(tmp_path: Path) -> None:
    a = load_catalog(small(tmp_path / "a"))
    b = load_catalog(small(tmp_path / "b"))
    assert a.digest == b.digest
    c = load_catalog(small(tmp_path / "c", campaigns=CAMPAIGNS.replace("1.5", "1.6")))
    assert c.digest != a.digest


# ------------------------------------------------------------------ placements and windows


def test_by_placement_respects_channel_and_kinds(tmp_path: Path) -> None:
    catalog = load_catalog(small(tmp_path / "cat"))
    ids = {k: [o.id for o in v] for k, v in catalog.by_placement.items()}
    assert ids == {
        "hero": ["advice", "warning"],  # card_app has no web content
        "sidebar": ["advice"],  # commercial only
        "app_home": ["advice", "warning", "card_app"],
        "app_service": ["warning"],  # service only
        "mail": [],  # no offer has email content
    }
    assert catalog.placements["sidebar"].channel is Channel.WEB
    assert catalog.placements["sidebar"].kinds == (OfferKind.COMMERCIAL,)


def test_campaign_schedule_narrows_the_offer_window(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    topic: mortgage\n",
        "    topic: mortgage\n    valid_from: 2026-09-01\n    valid_until: '2026-12-31'\n",
    )
    campaigns = CAMPAIGNS + "    start: 2026-10-01T08:00:00Z\n    end: '2027-01-31'\n"
    catalog = load_catalog(small(tmp_path / "cat", offers=offers, campaigns=campaigns))
    advice = catalog.offers["advice"]
    assert advice.valid_from == at("2026-10-01T08:00:00+00:00")  # the campaign's start
    assert advice.valid_until == at("2026-12-31")  # the offer's own end
    assert not advice.live_at(at("2026-09-15"))
    assert not advice.live_at(at("2026-10-01T07:59:59"))
    assert advice.live_at(at("2026-10-01T08:00:00"))
    assert advice.live_at(at("2026-12-30T23:59:59"))
    assert not advice.live_at(at("2026-12-31"))  # the end is exclusive
    assert not advice.live_at(at("2027-01-15"))
    # an offer outside the campaign keeps an open window
    assert catalog.offers["warning"].valid_from is None
    assert catalog.offers["warning"].live_at(at("2000-01-01"))


def test_campaign_schedule_alone_bounds_its_offers(tmp_path: Path) -> None:
    campaigns = CAMPAIGNS + "    start: '2026-10-01'\n    end: 2026-11-01T00:00:00+01:00\n"
    catalog = load_catalog(small(tmp_path / "cat", campaigns=campaigns))
    advice = catalog.offers["advice"]
    assert advice.valid_from == at("2026-10-01")
    assert advice.valid_until == at("2026-10-31T23:00:00")
    assert advice.live_at(at("2026-10-31T22:59:59"))
    assert not advice.live_at(at("2026-10-31T23:00:00"))


def test_offer_window_without_campaign(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    kind: service\n",
        "    kind: service\n    valid_from: '2026-09-01T12:00:00'\n",
    )
    catalog = load_catalog(small(tmp_path / "cat", offers=offers))
    warning = catalog.offers["warning"]
    assert warning.valid_from == at("2026-09-01T12:00:00")  # naive means UTC
    assert warning.valid_until is None
    assert warning.live_at(at("2030-01-01"))
    assert not warning.live_at(at("2026-09-01T11:59:59"))


# ------------------------------------------------------------------ problems: file, line, reason


def test_missing_catalog(tmp_path: Path) -> None:
    problem = only(tmp_path / "nowhere")
    assert problem.file == str(tmp_path / "nowhere")
    assert problem.line is None
    assert problem.reason == "no catalog YAML found"
    assert str(problem) == f"{tmp_path / 'nowhere'}: $: no catalog YAML found"


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert only(tmp_path / "empty").reason == "no catalog YAML found"


def test_load_catalog_raises_catalog_error_with_every_problem(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", campaigns=CAMPAIGNS.replace("[advice]", "[advice, nope]"))
    with pytest.raises(CatalogError) as info:
        load_catalog(folder)
    err = info.value
    assert isinstance(err, NextbestError)
    assert err.code == "catalog_error"
    assert [str(p) for p in err.problems] == [str(p) for p in check_catalog(folder)]
    assert err.message == "; ".join(str(p) for p in err.problems)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    offers = OFFERS.replace("    name: Mortgage advice\n", "    name: Mortgage: advice\n")
    folder = small(tmp_path / "cat", offers=offers)
    problem = only(folder)
    file = folder / "offers.yaml"
    assert_problem(
        problem,
        file,
        line_of(file, "Mortgage: advice"),
        "$",
        "YAML: mapping values are not allowed here: a value holding ': ' must be quoted, or "
        "the line is indented wrongly",
    )
    assert problem.column == len("    name: Mortgage:")  # at the second colon


def test_yaml_syntax_error_in_one_file_is_reported_with_the_others(tmp_path: Path) -> None:
    folder = small(
        tmp_path / "cat",
        topics=TOPICS + "  - id: [broken\n",
        placements=PLACEMENTS + "  - id: x\n   channel: web\n",
    )
    problems = check_catalog(folder)
    assert [(p.file, p.path) for p in problems] == [
        (str(folder / "placements.yaml"), "$"),
        (str(folder / "topics.yaml"), "$"),
    ]
    assert all(p.reason.startswith("YAML: ") for p in problems)
    assert all(p.line is not None for p in problems)


def test_unknown_section(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", segments=SEGMENTS + "\nsegmnets: []\n")
    file = folder / "segments.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "segmnets"),
        "$.segmnets",
        re.compile(r"^unknown section; use topics, segments, offers, campaigns, placements"),
    )


def test_list_section_must_be_a_list(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", segments="segments:\n  adult: profile.age >= 18\n")
    file = folder / "segments.yaml"
    problem = only(folder)
    assert problem.line in (1, 2)  # the section's key or its value
    assert_problem(problem, file, problem.line, "$.segments", "must be a list")


def test_file_must_be_a_mapping(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", segments="- id: adult\n")
    file = folder / "segments.yaml"
    assert_problem(only(folder), file, 1, "$", "a catalog file must be a mapping")


def test_single_section_defined_twice(tmp_path: Path) -> None:
    folder = small(
        tmp_path / "cat",
        topics=TOPICS + "scoring: {service_ctr: 0.1}\n",
        segments=SEGMENTS + "scoring: {service_ctr: 0.2}\n",
    )
    file = folder / "topics.yaml"  # read after segments.yaml
    assert_problem(only(folder), file, line_of(file, "scoring"), "$.scoring", "defined twice")


def test_unknown_field_in_an_offer(tmp_path: Path) -> None:
    offers = OFFERS.replace("    kind: service\n", "    kind: service\n    colour: red\n")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    problem = only(folder)
    assert problem.file == str(file)
    # the offer's line or the field's line
    assert problem.line in (line_of(file, "id: warning"), line_of(file, "colour: red"))
    assert problem.path in ("$.offers[1]", "$.offers[1].colour")
    assert problem.reason.startswith("unknown field 'colour'; the fields here are id, name, kind")


def test_wrong_type(tmp_path: Path) -> None:
    offers = OFFERS.replace("    kind: service\n", '    kind: service\n    value: "abc"\n')
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, 'value: "abc"'),
        "$.offers[1].value",
        "Expected `float`, got `str`",
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("kind", "promo", "'promo' is not one of service, commercial"),
        ("value", "0", "Expected `float` > 0.0"),
        (
            "prior_ctr",
            "1.5",
            "1.5 looks like a percentage, and this is a fraction from 0 to 1: "
            "1.5 % is written 0.015",
        ),
        ("prior_ctr", "1.0", "Expected `float` < 1.0"),
        ("priority", "1.5", "Expected `int`, got `float`"),
    ],
)
def test_constrained_offer_fields(tmp_path: Path, field: str, value: str, reason: str) -> None:
    offers = OFFERS.replace(
        "    name: Overdraft warning\n    kind: service\n",
        f"    name: Overdraft warning\n    kind: service\n    {field}: {value}\n",
    ).replace("    kind: service\n    kind: promo\n", "    kind: promo\n")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder), file, line_of(file, f"{field}: {value}"), f"$.offers[1].{field}", reason
    )


def test_unknown_channel_in_content(tmp_path: Path) -> None:
    offers = OFFERS.replace("      app: {title: Talk}\n", "      fax: {title: Talk}\n")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    problem = only(folder)
    assert problem.file == str(file)
    # the content key, its first channel or the unknown channel itself
    assert problem.line in (
        line_of(file, "content:"),
        line_of(file, "web: {title: Talk to us}"),
        line_of(file, "fax:"),
    )
    assert problem.path in ("$.offers[0].content", "$.offers[0].content.fax")
    assert problem.reason == "'fax' is not one of web, app, email, advisor"


def test_offer_needs_content(tmp_path: Path) -> None:
    offers = OFFERS.replace("    content:\n      app: {title: A card}\n", "    content: {}\n")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "content: {}"),
        "$.offers[2].content",
        "needs content for a channel",
    )


def test_missing_required_field(tmp_path: Path) -> None:
    offers = OFFERS.replace("    name: Card in the app\n", "")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    problem = only(folder)
    assert problem.file == str(file)
    assert problem.line == line_of(file, "id: card_app")
    assert problem.path in ("$.offers[2]", "$.offers[2].name")
    assert problem.reason == "Object missing required field `name`"


_ID_CASES = {
    "offers": (OFFERS, "  - id: warning", "  - id: Warning-1"),
    "segments": (SEGMENTS, "  - id: adult", "  - id: 9adult"),
    "campaigns": (CAMPAIGNS, "  - id: autumn", "  - id: Autumn"),
    "placements": (PLACEMENTS, "  - id: mail", "  - id: mail box"),
    "topics": (TOPICS, "  - id: cards", "  - id: Credit-Cards"),
}


@pytest.mark.parametrize("section", list(_ID_CASES))
def test_bad_id_pattern(tmp_path: Path, section: str) -> None:
    text, old, new = _ID_CASES[section]
    override = {section: text.replace(old, new)}
    if section == "topics":  # nothing may refer to the renamed topic
        override["offers"] = OFFERS.replace("    topic: cards\n", "")
    folder = small(tmp_path / "cat", **override)
    file = folder / f"{section}.yaml"
    problems = check_catalog(folder)
    assert problems, f"{new.strip()} was accepted"
    problem = problems[0]
    index = [ln for ln in text.splitlines() if ln.startswith("  - id:")].index(old)
    assert problem.file == str(file)
    assert problem.line == line_of(file, new)
    assert problem.path == f"$.{section}[{index}].id"
    assert problem.reason == "Expected `str` matching regex '^[a-z][a-z0-9_]{0,63}$'"


def test_duplicate_offer_id_reports_the_first_location(tmp_path: Path) -> None:
    offers = OFFERS + "  - id: warning\n    name: Again\n    kind: service\n"
    offers += "    content: {web: {title: again}}\n"
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    first = line_of(file, "id: warning")
    assert_problem(
        only(folder),
        file,
        line_of(file, "id: warning", nth=2),
        "$.offers[3].id",
        f"duplicate id 'warning' (first at {file}:{first})",
    )


def test_duplicate_offer_id_across_files(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat")
    more = folder / "zz_more_offers.yaml"
    more.write_text(
        "offers:\n"
        "  - id: extra\n    name: Extra\n    kind: service\n    content: {web: {title: x}}\n"
        "  - id: advice\n    name: Again\n    kind: service\n    content: {web: {title: x}}\n"
    )
    first = folder / "offers.yaml"
    assert_problem(
        only(folder),
        more,
        line_of(more, "id: advice"),
        "$.offers[4].id",
        f"duplicate id 'advice' (first at {first}:{line_of(first, 'id: advice')})",
    )


def test_duplicate_segment_and_topic_ids(tmp_path: Path) -> None:
    folder = small(
        tmp_path / "cat",
        topics=TOPICS + "  - id: cards\n    name: Cards again\n",
        segments=SEGMENTS + "  - id: adult\n    rule: 'true'\n",
    )
    problems = check_catalog(folder)
    assert [(p.path, p.line) for p in problems] == [
        ("$.topics[2].id", line_of(folder / "topics.yaml", "id: cards", nth=2)),
        ("$.segments[1].id", line_of(folder / "segments.yaml", "id: adult", nth=2)),
    ]
    assert all(p.reason.startswith("duplicate id ") for p in problems)


def test_unknown_topic_in_an_offer(tmp_path: Path) -> None:
    offers = OFFERS.replace("    topic: cards\n", "    topic: credit_cards\n")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "topic: credit_cards"),
        "$.offers[2].topic",
        "unknown topic 'credit_cards'",
    )


def test_campaign_naming_an_unknown_offer(tmp_path: Path) -> None:
    campaigns = CAMPAIGNS.replace(
        "    offers: [advice]\n", "    offers:\n      - advice\n      - nope\n"
    )
    folder = small(tmp_path / "cat", campaigns=campaigns)
    file = folder / "campaigns.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "- nope"),
        "$.campaigns[0].offers[1]",
        "unknown offer 'nope'",
    )


def test_offer_in_two_campaigns(tmp_path: Path) -> None:
    campaigns = CAMPAIGNS + (
        "  - id: winter\n    name: Winter\n    owner: me@bank.example\n"
        "    offers: [warning, advice]\n" + WHY + "    control_share: 0.1\n"
    )
    folder = small(tmp_path / "cat", campaigns=campaigns)
    file = folder / "campaigns.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "offers: [warning, advice]"),
        "$.campaigns[1].offers[1]",
        "offer 'advice' is already in campaign 'autumn'",
    )


def _with_eligibility(rule: str) -> str:
    return OFFERS.replace("    eligibility: profile.overdrawn\n", f"    eligibility: {rule}\n")


def test_cel_syntax_error_in_eligibility(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", offers=_with_eligibility("'profile.age >= && true'"))
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "profile.age >= &&"),
        "$.offers[1].eligibility",
        re.compile(r"^CEL: .*[Ss]yntax error"),
    )


def test_rule_naming_an_undefined_segment(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", offers=_with_eligibility("segments.nope && true"))
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "segments.nope"),
        "$.offers[1].eligibility",
        "segments.nope is not defined in the catalog",
    )


def test_rule_naming_an_undefined_topic(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", offers=_with_eligibility("interest.nope.count_7d > 1"))
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "interest.nope"),
        "$.offers[1].eligibility",
        "interest.nope is not defined in the catalog",
    )


def test_rule_naming_an_undefined_offer(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", offers=_with_eligibility("offers.nope.total_clicks == 0"))
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "offers.nope"),
        "$.offers[1].eligibility",
        "offers.nope is not defined in the catalog",
    )


def test_rule_naming_a_defined_offer_and_topic(tmp_path: Path) -> None:
    rule = "offers.advice.total_clicks == 0 && interest.cards.score < 1.0"
    catalog = load_catalog(small(tmp_path / "cat", offers=_with_eligibility(rule)))
    assert catalog.offers["warning"].rule.source == rule


def test_rule_using_an_unknown_root(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", offers=_with_eligibility("foo.bar == 1"))
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "foo.bar"),
        "$.offers[1].eligibility",
        "unknown name(s) foo; rules may use "
        "context, interest, now, offers, products, profile, security, segments, traits",
    )


def test_segment_rule_using_segments(tmp_path: Path) -> None:
    segments = SEGMENTS + "  - id: adult_plus\n    rule: segments.adult && profile.age > 30\n"
    folder = small(tmp_path / "cat", segments=segments)
    file = folder / "segments.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "segments.adult &&"),
        "$.segments[1].rule",
        "a segment rule may not use segments",
    )


def test_segment_rule_with_an_undefined_topic(tmp_path: Path) -> None:
    segments = SEGMENTS + "  - id: keen\n    rule: >-\n      interest.pension.count_7d > 3\n"
    folder = small(tmp_path / "cat", segments=segments)
    file = folder / "segments.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "rule: >-"),
        "$.segments[1].rule",
        "interest.pension is not defined in the catalog",
    )


@pytest.mark.parametrize("text", ["'2026-13-01'", "'next tuesday'", "'2026-02-30T10:00:00'"])
def test_bad_date_in_valid_from(tmp_path: Path, text: str) -> None:
    offers = OFFERS.replace("    kind: service\n", f"    kind: service\n    valid_from: {text}\n")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "valid_from"),
        "$.offers[1].valid_from",
        f"not an ISO date or date-time: {text.strip(chr(39))!r}",
    )


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30"])
def test_bad_unquoted_date_in_valid_from(tmp_path: Path, text: str) -> None:
    """YAML reads an unquoted date itself; an impossible one is a catalog problem too,
    not a ValueError escaping check_catalog."""
    offers = OFFERS.replace("    kind: service\n", f"    kind: service\n    valid_from: {text}\n")
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    problem = only(folder)
    assert problem.file == str(file)
    assert problem.line == line_of(file, "valid_from")
    assert problem.reason


def test_bad_unquoted_date_in_campaign_start(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", campaigns=CAMPAIGNS + "    start: 2026-02-30\n")
    file = folder / "campaigns.yaml"
    problem = only(folder)
    assert problem.file == str(file)
    assert problem.line == line_of(file, "start:")


@pytest.mark.parametrize("until", ["'2026-09-01'", "'2026-10-01'"])
def test_valid_from_not_before_valid_until(tmp_path: Path, until: str) -> None:
    offers = OFFERS.replace(
        "    kind: service\n",
        f"    kind: service\n    valid_from: 2026-10-01\n    valid_until: {until}\n",
    )
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "valid_until"),
        "$.offers[1].valid_until",
        f"must be after valid_from ({until.strip(chr(39))} is not after 2026-10-01; valid_until is "
        "exclusive)",
    )


def test_campaign_end_before_start(tmp_path: Path) -> None:
    folder = small(
        tmp_path / "cat", campaigns=CAMPAIGNS + "    start: 2026-10-01\n    end: 2026-09-01\n"
    )
    file = folder / "campaigns.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "end:"),
        "$.campaigns[0].end",
        "must be after start (2026-09-01 is not after 2026-10-01; end is exclusive)",
    )


@pytest.mark.parametrize(
    ("share", "reason"),
    [("0.51", "Expected `float` <= 0.5"), ("-0.1", "Expected `float` >= 0.0")],
)
def test_control_share_out_of_range(tmp_path: Path, share: str, reason: str) -> None:
    campaigns = CAMPAIGNS.replace("control_share: 0.1", f"control_share: {share}")
    folder = small(tmp_path / "cat", campaigns=campaigns)
    file = folder / "campaigns.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "control_share"),
        "$.campaigns[0].control_share",
        reason,
    )


def test_control_share_of_one_half_is_allowed(tmp_path: Path) -> None:
    campaigns = CAMPAIGNS.replace("control_share: 0.1", "control_share: 0.5")
    catalog = load_catalog(small(tmp_path / "cat", campaigns=campaigns))
    assert catalog.campaigns["autumn"].control_share == 0.5


@pytest.mark.parametrize("value", ["0.51", "-0.1", "abc", "true", "[0.1]"])
def test_holdout_share_out_of_range(tmp_path: Path, value: str) -> None:
    folder = small(tmp_path / "cat", placements=PLACEMENTS + f"\nholdout_share: {value}\n")
    file = folder / "placements.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "holdout_share"),
        "$.holdout_share",
        "must be a number from 0 to 0.5",
    )


@pytest.mark.parametrize("value", ["0", "0.02", "0.5"])
def test_holdout_share_in_range(tmp_path: Path, value: str) -> None:
    folder = small(tmp_path / "cat", placements=PLACEMENTS + f"\nholdout_share: {value}\n")
    assert load_catalog(folder).spec.holdout_share == float(value)


def test_placement_kinds_must_not_be_empty(tmp_path: Path) -> None:
    placements = PLACEMENTS.replace("kinds: [commercial]", "kinds: []")
    folder = small(tmp_path / "cat", placements=placements)
    file = folder / "placements.yaml"
    assert_problem(
        only(folder), file, line_of(file, "kinds: []"), "$.placements[1].kinds", "must not be empty"
    )


def test_nested_single_section_field(tmp_path: Path) -> None:
    folder = small(
        tmp_path / "cat",
        placements=PLACEMENTS + "contact_policy:\n  per_offer:\n    count: 0\n    days: 7\n",
    )
    file = folder / "placements.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "count: 0"),
        "$.contact_policy.per_offer.count",
        "Expected `int` >= 1",
    )


# ------------------------------------------------------------------ many problems, many files


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    offers = (
        OFFERS.replace("    kind: service\n", '    kind: service\n    value: "abc"\n')
        .replace("    topic: cards\n", "    topic: nope\n")
        .replace(
            "eligibility: segments.adult && interest.mortgage.count_14d >= 2",
            "eligibility: segments.ghost",
        )
    )
    campaigns = CAMPAIGNS.replace("control_share: 0.1", "control_share: 0.9")
    folder = small(
        tmp_path / "cat",
        offers=offers,
        campaigns=campaigns,
        placements=PLACEMENTS + "holdout_share: 2\n",
    )
    offers_file = folder / "offers.yaml"
    problems = check_catalog(folder)
    assert isinstance(problems, list)
    got = {(p.file, p.line, p.path) for p in problems}
    assert got == {
        (str(offers_file), line_of(offers_file, 'value: "abc"'), "$.offers[1].value"),
        (
            str(folder / "campaigns.yaml"),
            line_of(folder / "campaigns.yaml", "control_share"),
            "$.campaigns[0].control_share",
        ),
        (
            str(folder / "placements.yaml"),
            line_of(folder / "placements.yaml", "holdout_share"),
            "$.holdout_share",
        ),
        (str(offers_file), line_of(offers_file, "topic: nope"), "$.offers[2].topic"),
        (
            str(offers_file),
            line_of(offers_file, "segments.ghost"),
            "$.offers[0].eligibility",
        ),
    }
    assert len(problems) == 5
    assert all(p.reason for p in problems)


def test_a_broken_offer_does_not_cascade(tmp_path: Path) -> None:
    """An offer that fails to convert is reported once, not again by the campaign naming it."""
    offers = OFFERS.replace(
        "    name: Mortgage advice\n", "    name: Mortgage advice\n    value: x\n"
    )
    folder = small(tmp_path / "cat", offers=offers)
    assert [p.path for p in check_catalog(folder)] == ["$.offers[0].value"]


def test_line_numbers_in_the_second_file(tmp_path: Path) -> None:
    """Items of the second file are numbered after the first's in the merged catalog, and
    their problems point at the second file's own lines."""
    folder = small(tmp_path / "cat")
    second = folder / "offers_more.yaml"
    second.write_text(
        "# more offers\n"
        "offers:\n"
        "  - id: pension\n"
        "    name: Pension\n"
        "    kind: commercial\n"
        "    content: {web: {title: x}}\n"
        "  - id: savings\n"
        "    name: Savings\n"
        "    kind: commercial\n"
        "    value: lots\n"
        "    content: {web: {title: x}}\n"
        "  - id: insurance\n"
        "    name: Insurance\n"
        "    kind: commercial\n"
        "    topic: insurance\n"
        "    eligibility: segments.adult\n"
        "    content: {web: {title: x}}\n"
        "  - id: loans\n"
        "    name: Loans\n"
        "    kind: commercial\n"
        "    eligibility: interest.loans.count_7d > 0\n"
        "    content: {web: {title: x}}\n"
    )
    problems = check_catalog(folder)
    assert [(p.file, p.line, p.path, p.reason) for p in problems] == [
        (str(second), 10, "$.offers[4].value", "Expected `float`, got `str`"),
        (str(second), 15, "$.offers[5].topic", "unknown topic 'insurance'"),
        (
            str(second),
            21,
            "$.offers[6].eligibility",
            "interest.loans is not defined in the catalog",
        ),
    ]


def test_line_numbers_in_the_second_file_of_a_campaign_split(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat")
    second = folder / "campaigns_q4.yaml"
    second.write_text(
        "campaigns:\n"
        "  - id: q4\n"
        "    name: Q4\n"
        "    owner: me\n"
        "    offers: [warning]\n" + WHY + "    control_share: 0.1\n  - id: q4b\n"
        "    name: Q4b\n"
        "    owner: me\n"
        "    offers:\n"
        "      - card_app\n"
        "      - advice\n" + WHY + "    control_share: 0.1\n"
    )
    assert_problem(
        only(folder),
        second,
        16,
        "$.campaigns[2].offers[1]",
        "offer 'advice' is already in campaign 'autumn'",
    )


def test_problems_in_a_single_file_catalog_name_the_file(tmp_path: Path) -> None:
    text = "\n".join(textwrap.dedent(s).strip("\n") for s in (TOPICS, OFFERS, PLACEMENTS))
    text = text.replace("    topic: cards\n", "    topic: nope\n")
    single = tmp_path / "catalog.yaml"
    single.write_text(text + "\n")
    problems = check_catalog(single)
    assert [(p.file, p.line, p.path) for p in problems] == [
        # segments.adult is undefined in this single file
        (str(single), line_of(single, "segments.adult"), "$.offers[0].eligibility"),
        (str(single), line_of(single, "topic: nope"), "$.offers[2].topic"),
    ]


def test_a_service_message_s_trigger_compiles_with_the_catalog_s_rules(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    eligibility: profile.overdrawn\n",
        "    eligibility: profile.overdrawn\n    urgent: profile.balance < -100.0\n",
    )
    catalog = load_catalog(small(tmp_path / "cat", offers=offers))
    trigger = catalog.offers["warning"].urgent_rule
    assert trigger is not None
    assert trigger.source == "profile.balance < -100.0"
    assert catalog.offers["advice"].urgent_rule is None
    assert "balance" in (catalog.rule_reads.needs["profile"] or {})


def test_only_a_service_message_can_be_urgent(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    eligibility: segments.adult && interest.mortgage.count_14d >= 2\n",
        "    eligibility: segments.adult && interest.mortgage.count_14d >= 2\n"
        "    urgent: profile.overdrawn\n",
    )
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "urgent: profile.overdrawn"),
        "$.offers[0].urgent",
        "only a service message can be urgent",
    )


def test_a_trigger_that_does_not_compile_is_a_problem_at_its_field(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    eligibility: profile.overdrawn\n",
        "    eligibility: profile.overdrawn\n    urgent: segments.nope\n",
    )
    folder = small(tmp_path / "cat", offers=offers)
    file = folder / "offers.yaml"
    assert_problem(
        only(folder),
        file,
        line_of(file, "urgent: segments.nope"),
        "$.offers[1].urgent",
        "segments.nope is not defined in the catalog",
    )


def test_a_placement_s_fallback_names_offers_that_can_appear_there(tmp_path: Path) -> None:
    placements = PLACEMENTS.replace(
        "  - id: sidebar\n    channel: web\n    kinds: [commercial]\n",
        "  - id: sidebar\n    channel: web\n    kinds: [commercial]\n"
        "    fallback: [advice, warning, nothing]\n",
    )
    folder = small(tmp_path / "cat", placements=placements)
    file = folder / "placements.yaml"
    problems = check_catalog(folder)
    assert [(p.path, p.reason) for p in problems] == [
        (
            "$.placements[1].fallback[1]",
            "offer 'warning' cannot appear in this placement "
            "(no web content, or kind service not allowed)",
        ),
        ("$.placements[1].fallback[2]", "unknown offer 'nothing'"),
    ]
    assert {p.line for p in problems} == {line_of(file, "fallback:")}


@pytest.mark.parametrize("model", ["bayes_logistic", "bayes", "contextual"])
def test_every_model_has_a_posterior_for_thompson_sampling(tmp_path: Path, model: str) -> None:
    """contextual's is each offer's level (``learn.contextual``)."""
    placements = PLACEMENTS.replace(
        "  - id: hero\n    channel: web\n",
        "  - id: hero\n    channel: web\n"
        f"    learning: {{model: {model}, explore: {{type: thompson, n_sim: 100}}}}\n",
    )
    assert check_catalog(small(tmp_path / "cat", placements=placements)) == []


def test_thompson_takes_a_uniform_share_within_zero_and_one(tmp_path: Path) -> None:
    def placements(explore: str) -> str:
        return PLACEMENTS.replace(
            "  - id: hero\n    channel: web\n",
            "  - id: hero\n    channel: web\n"
            f"    learning: {{model: contextual, explore: {explore}}}\n",
        )

    good = small(tmp_path / "good", placements=placements("{type: thompson, uniform: 0.05}"))
    assert check_catalog(good) == []
    bad = small(tmp_path / "bad", placements=placements("{type: thompson, uniform: 1.5}"))
    (problem,) = check_catalog(bad)
    assert problem.path == "$.placements[0].learning.explore.uniform"
    assert "a fraction from 0 to 1" in problem.reason
