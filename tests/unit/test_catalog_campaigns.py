"""Campaign fields (issue #18, item 1): a hypothesis in three parts, objective, category, a
primary KPI (event, CEL condition, window), guardrails, status, variants, audiences; checked
by ``nextbest check`` with file:line, field path and the closest name."""

from __future__ import annotations

from pathlib import Path

import cel
import pytest

from nextbest.catalog.model import CampaignStatus, Category, Direction, Objective
from nextbest.errors import CatalogError
from nextbest.events.model import EventType
from nextbest.events.parse import parse_message
from nextbest.rules.expression import RuleOutcome
from nextbest.store.catalog_files import load_catalog
from tests.support import EXAMPLE_CATALOG, T0, edited_bank
from tests.unit.test_catalog import line_of
from tests.unit.test_catalog_check import run_check

MORTGAGE_WHY = """    hypothesis:
      observation: >-
        Customers who read mortgage pages five times in two weeks rarely book advice on
        their own; those who talk to an advisor apply twice as often.
      change: Invite them to a free first advice call on the home page and in the app.
      expected: More submitted mortgage applications within 14 days of first seeing it.
"""


def error_lines(folder: Path, file: str = "campaigns.yaml") -> list[str]:
    code, out = run_check(folder)
    assert code == 1, out
    return [line for line in out if line.startswith(str(folder / file))]


def test_the_example_bank_says_why_each_campaign_exists() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    for camp in catalog.campaigns.values():
        assert camp.hypothesis.observation
        assert camp.hypothesis.change
        assert camp.hypothesis.expected
        assert isinstance(camp.objective, Objective)
        assert isinstance(camp.category, Category)
        assert camp.status is CampaignStatus.RUNNING
        assert camp.control_share > 0
        assert catalog.kpis[camp.id][0].spec == camp.primary_kpi
    mortgage = catalog.campaigns["mortgage_q4"]
    kpi = mortgage.primary_kpi
    assert (kpi.event, kpi.where, kpi.within_days) == (
        "Application Submitted",
        'properties.product == "mortgage"',
        14.0,
    )
    assert kpi.direction is Direction.INCREASE
    (guard,) = mortgage.guardrail_kpis
    assert (guard.event, guard.direction) == ("Promotion Dismissed", Direction.DECREASE)
    assert mortgage.audiences == ["mortgage_intent"]
    # a KPI given as an event name alone: no condition, 14 days
    assert catalog.campaigns["always_on_products"].primary_kpi.where == "true"


def test_a_kpi_condition_is_compiled_against_the_event() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    (kpi, _guard) = catalog.kpis["mortgage_q4"]
    for product, outcome in (("mortgage", RuleOutcome.TRUE), ("car_loan", RuleOutcome.FALSE)):
        event = parse_message(
            EventType.TRACK,
            b'{"type":"track","event":"Application Submitted","userId":"u","messageId":"m",'
            b'"timestamp":"2026-09-23T10:00:00Z","properties":{"product":"%s"}}' % product.encode(),
            T0,
        )
        context = cel.Context(variables={"properties": event.properties, "context": {}})
        assert kpi.where.check(context) is outcome


def test_a_campaign_without_a_hypothesis_is_refused_with_what_to_write(tmp_path: Path) -> None:
    folder = edited_bank(tmp_path, "campaigns.yaml", MORTGAGE_WHY, "")
    (line,) = error_lines(folder)
    assert line.startswith(
        f"{folder / 'campaigns.yaml'}:{line_of(folder / 'campaigns.yaml', 'id: mortgage_q4')}: "
    )
    assert "$.campaigns[0].hypothesis: Object missing required field `hypothesis`: " in line
    assert "observation (what was seen), change (what the campaign does)" in line


def test_a_one_sentence_hypothesis_is_explained(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path, "campaigns.yaml", MORTGAGE_WHY, "    hypothesis: Researchers book more calls.\n"
    )
    (line,) = error_lines(folder)
    file = folder / "campaigns.yaml"
    assert line.startswith(f"{file}:{line_of(file, 'hypothesis: Researchers')}: ")
    assert "$.campaigns[0].hypothesis: a hypothesis has three parts" in line
    assert "(not one sentence: 'Researchers book more calls.')" in line


def test_an_empty_part_of_the_hypothesis_is_an_error(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path,
        "campaigns.yaml",
        "      change: Invite them to a free first advice call on the home page and in the app.",
        '      change: ""',
    )
    (line,) = error_lines(folder)
    assert "$.campaigns[0].hypothesis.change: Expected `str` of length >= 1" in line


@pytest.mark.parametrize(
    ("old", "new", "path", "reason"),
    [
        (
            "objective: acquisition",
            "objective: aquisition",
            "$.campaigns[0].objective",
            "'aquisition' is not one of acquisition, activation, early_month_on_book, "
            "cross_sell, spend, digital_engagement, attrition, lifetime_value "
            "(did you mean 'acquisition'?)",
        ),
        (
            "category: banner",
            "category: banners",
            "$.campaigns[4].category",
            "'banners' is not one of banner, content, layout, offer, overlay, email, push, sms, "
            "messaging, merchandising_rule, recommendation_strategy (did you mean 'banner'?)",
        ),
        (
            "      within_days: 14\n    guardrails:",
            "      within_days: 14\n      wher: true\n    guardrails:",
            "$.campaigns[0].kpi.wher",
            "unknown field 'wher' (did you mean 'where'?); the fields here are event, where, "
            "within_days, value, direction",
        ),
        (
            'where: properties.product == "mortgage"',
            'where: profile.age >= 18 && properties.product == "mortgage"',
            "$.campaigns[0].kpi.where",
            "unknown name(s) profile; rules may use context, properties",
        ),
        (
            'where: properties.product == "mortgage"',
            "where: properties.product == 'mortgage' && 5",
            "$.campaigns[0].kpi.where",
            "5 is an int, not a condition: both sides of && must be true or false",
        ),
        (
            "audiences: [mortgage_intent]",
            "audiences: [mortgage_intnt]",
            "$.campaigns[0].audiences[0]",
            "unknown segment 'mortgage_intnt' (did you mean 'mortgage_intent'?)",
        ),
        (
            "      - event: Promotion Dismissed",
            "      - event: Promotion Dismissed\n        value: 'amount!'",
            "$.campaigns[0].guardrails[0].value",
            "'amount!' is no property name: write the name of a number property of the event, "
            "such as amount",
        ),
        (
            "    offers: [car_loan_offer]\n",
            "    offers: [car_loan_offer]\n    status: live\n",
            "$.campaigns[1].status",
            "'live' is not one of draft, running, paused, stopped",
        ),
    ],
)
def test_campaign_field_errors_name_the_line_the_path_and_the_closest_choice(
    tmp_path: Path, old: str, new: str, path: str, reason: str | None
) -> None:
    folder = edited_bank(tmp_path, "campaigns.yaml", old, new)
    (line,) = error_lines(folder)
    file = folder / "campaigns.yaml"
    first_new_line = [ln for ln in new.splitlines() if ln not in old.splitlines()][-1].strip()
    assert line.startswith(f"{file}:{line_of(file, first_new_line)}: {path}: "), line
    if reason is not None:
        assert line == f"{file}:{line_of(file, first_new_line)}: {path}: {reason}"


VARIANT = """    variants:
      - id: rate_first
        weight: 2
        content:
          {offer}:
            {channel}: {{title: "Rates from 3.1 %"}}
      - id: advisor_first
"""


@pytest.mark.parametrize(
    ("offer", "channel", "path", "reason"),
    [
        (
            "mortgage_advise",
            "web",
            "$.campaigns[0].variants[0].content.mortgage_advise",
            "offer 'mortgage_advise' is not in this campaign (did you mean 'mortgage_advice'?): "
            "a variant changes the content of the campaign's offers (mortgage_advice)",
        ),
        (
            "mortgage_advice",
            "email",
            "$.campaigns[0].variants[0].content.mortgage_advice.email",
            "offer 'mortgage_advice' has no email content to replace (it has web, app)",
        ),
    ],
)
def test_a_variant_replaces_only_content_its_campaign_s_offers_have(
    tmp_path: Path, offer: str, channel: str, path: str, reason: str
) -> None:
    variant = VARIANT.format(offer=offer, channel=channel)
    folder = edited_bank(
        tmp_path,
        "campaigns.yaml",
        "    offers: [mortgage_advice]\n",
        "    offers: [mortgage_advice]\n" + variant,
    )
    (line,) = error_lines(folder)
    assert line.endswith(f": {path}: {reason}"), line


def test_variants_load(tmp_path: Path) -> None:
    variant = VARIANT.format(offer="mortgage_advice", channel="web")
    folder = edited_bank(
        tmp_path,
        "campaigns.yaml",
        "    offers: [mortgage_advice]\n",
        "    offers: [mortgage_advice]\n" + variant,
    )
    catalog = load_catalog(folder)
    variants = catalog.offers["mortgage_advice"].variants
    assert variants is not None
    assert variants.ids == ("rate_first", "advisor_first")
    assert variants.bounds == pytest.approx((2 / 3, 1.0))


@pytest.mark.parametrize(
    ("old", "new", "path", "start"),
    [
        (
            "event: Application Submitted",
            "event: Aplication Submitted",
            "$.campaigns[0].kpi.event",
            "'Aplication Submitted' is no event the catalog knows (did you mean 'Application "
            "Submitted'?): the campaign's results would stay at 0",
        ),
        (
            "guardrails: [Product Closed]",
            "guardrails: [Product Closd]",
            "$.campaigns[4].guardrails[0]",
            "'Product Closd' is no event the catalog knows (did you mean 'Product Closed'?): "
            "this guardrail would never move",
        ),
        (
            "    weight: 0.8\n    control_share: 0.05\n",
            "    weight: 0.8\n",
            "$.campaigns[4].control_share",
            "no control group: nothing to compare the campaign's customers with",
        ),
    ],
)
def test_campaign_warnings(tmp_path: Path, old: str, new: str, path: str, start: str) -> None:
    folder = edited_bank(tmp_path, "campaigns.yaml", old, new)
    code, out = run_check(folder)
    assert code == 0, out
    (warning,) = out[:-1]
    assert f"warning: {path}: {start}" in warning, warning
    assert out[-1].endswith("; 1 warning")


def test_a_paused_campaign_without_control_is_no_warning(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path,
        "campaigns.yaml",
        "    weight: 0.8\n    control_share: 0.05\n",
        "    weight: 0.8\n    status: paused\n",
    )
    code, out = run_check(folder)
    assert (code, len(out)) == (0, 1), out


def test_every_problem_of_a_campaign_is_reported_at_once(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path,
        "campaigns.yaml",
        "audiences: [mortgage_intent]",
        "audiences: [nobody]\n    variants: [{id: a, content: {nope: {web: {title: x}}}}]",
    )
    lines = error_lines(folder)
    assert len(lines) == 2
    with pytest.raises(CatalogError) as exc:
        load_catalog(folder)
    assert {p.path for p in exc.value.problems} == {
        "$.campaigns[0].audiences[0]",
        "$.campaigns[0].variants[0].content.nope",
    }
