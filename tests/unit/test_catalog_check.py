"""``nextbest check`` as a compiler: errors refuse a catalog, warnings are printed and it
loads. The cases a bank marketer met (issue "Ingestion and catalog you can trust", point 5),
one by one, on a copy of the example bank and on the small catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest.catalog.compile import compile_catalog
from nextbest.catalog.source_map import SourceMap
from nextbest.cli import app
from nextbest.errors import CatalogError, CatalogProblem, Severity
from nextbest.store.catalog_files import check_catalog, load_catalog
from tests.support import EXAMPLE_CATALOG, T0, edited_bank
from tests.unit.test_catalog import CAMPAIGNS, OFFERS, PLACEMENTS, TOPICS, line_of, small

ENV = {"COLUMNS": "80", "NO_COLOR": "1"}


def run_check(folder: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["check", str(folder)], env=ENV)
    return result.exit_code, [line for line in result.stdout.splitlines() if line.strip()]


def warnings(location: Path, now: float | None = None) -> list[CatalogProblem]:
    found = check_catalog(location, now)
    assert all(p.severity is Severity.WARNING for p in found), [str(p) for p in found]
    return found


# ------------------------------------------------------------------ the cases, via the CLI


@pytest.mark.parametrize(
    ("old", "new", "index", "reason"),
    [
        (
            "rule: interest.mortgage.count_14d >= 5",
            "rule: interest.mortgage.count_30days >= 5",
            0,
            "unknown field interest.mortgage.count_30days "
            "(did you mean interest.mortgage.count_30d?)",
        ),
        (
            "rule: interest.car_loan.count_30d >= 2",
            "rule: interest.car_loan.cnt_30d >= 2",
            1,
            "unknown field interest.car_loan.cnt_30d (did you mean interest.car_loan.count_30d?)",
        ),
        (
            "rule: profile.age >= 18",
            "rule: profile.agee >= 18",
            2,
            "unknown field profile.agee (did you mean profile.age?)",
        ),
        (
            "rule: profile.age >= 18",
            'rule: "5"',
            2,
            "the rule is 5, a number, not a condition: a rule must be true or false, such as "
            "profile.age >= 18",
        ),
        (
            "rule: profile.age >= 18",
            "rule: 5",
            2,
            "a rule is a condition written as text, such as profile.age >= 18: 5 is a number, "
            "not a condition",
        ),
        (
            "rule: profile.age >= 18",
            'rule: profile.age >= "18"',
            2,
            'profile.age >= "18" compares an int with a string: CEL never converts between '
            "them, so the rule fails when it runs (write 18 without quotes)",
        ),
    ],
)
def test_a_wrong_rule_is_an_error_at_its_line(
    tmp_path: Path, old: str, new: str, index: int, reason: str
) -> None:
    folder = edited_bank(tmp_path, "segments.yaml", old, new)
    code, out = run_check(folder)
    file = folder / "segments.yaml"
    where = f"{file}:{line_of(file, new)}: $.segments[{index}].rule"
    assert code == 1
    assert out == [f"{where}: {reason}", "1 error, 0 warnings"]


def test_url_patterns_that_can_match_nothing_are_warnings(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path,
        "topics.yaml",
        'url_patterns: ["/investing*"]',
        'url_patterns: ["sustainability", "/green[*", "https://bank.example/green"]',
    )
    code, out = run_check(folder)
    file = folder / "topics.yaml"
    line = line_of(file, "sustainability")
    assert code == 0
    assert out[:3] == [
        f"{file}:{line}: warning: $.topics[4].url_patterns[0]: 'sustainability' does not start "
        "with / and a path always does: it never matches; write '/sustainability*'",
        f"{file}:{line}: warning: $.topics[4].url_patterns[1]: '/green[*' opens a [ it never "
        "closes, so the [ is read as a literal character no path has: it never matches; close "
        "it ([abc] is one of a, b, c) or drop it",
        f"{file}:{line}: warning: $.topics[4].url_patterns[2]: 'https://bank.example/green' is "
        "a full URL, and patterns match the URL's path only: it never matches; write '/green*'",
    ]
    assert out[3].startswith("ok: catalog 1+")
    assert out[3].endswith("; 3 warnings")


@pytest.mark.parametrize(
    ("file", "old", "field"),
    [
        ("campaigns.yaml", "event: Callback Requested", "$.campaigns[2].kpi.event"),
        ("offers.yaml", "kpi_event: Application Started", "$.offers[2].kpi_event"),
    ],
)
def test_a_kpi_naming_no_known_event_is_a_warning(
    tmp_path: Path, file: str, old: str, field: str
) -> None:
    new = old.split(": ")[0] + ": Aplication Started"
    folder = edited_bank(tmp_path, file, old, new)
    code, out = run_check(folder)
    assert code == 0
    (warning,) = out[:-1]
    assert warning.startswith(f"{folder / file}:{line_of(folder / file, new)}: warning: {field}: ")
    assert (
        "'Aplication Started' is no event the catalog knows (did you mean 'Application " in warning
    )
    assert out[-1].endswith("; 1 warning")


@pytest.mark.parametrize(
    ("file", "old", "new", "field", "why"),
    [
        (
            "segments.yaml",
            "rule: profile.age >= 18",
            "rule: int(profile.balance) >= 18",
            "$.segments[2].rule",
            "int()",
        ),
        (
            "offers.yaml",
            "eligibility: segments.car_intent && segments.adult",
            'eligibility: segments.car_intent && context.page.matches("^/car")',
            "$.offers[3].eligibility",
            ".matches()",
        ),
        (
            "offers.yaml",
            "eligibility: segments.car_intent && segments.adult",
            "eligibility: \"segments.car_intent && {'a': true}.a\"",
            "$.offers[3].eligibility",
            "a map literal",
        ),
    ],
)
def test_a_rule_that_runs_in_cel_at_every_decision_is_a_warning(
    tmp_path: Path, file: str, old: str, new: str, field: str, why: str
) -> None:
    """A rule the engine cannot decide itself runs in the CEL engine at every decision that
    reaches it (about 0.1 ms more): the marketer hears which form is the cause. Indexing and
    a macro over a map are decided by the engine: no warning."""
    folder = edited_bank(tmp_path, file, old, new)
    code, out = run_check(folder)
    assert code == 0
    (warning,) = out[:-1]
    assert warning == (
        f"{folder / file}:{line_of(folder / file, new)}: warning: {field}: this rule runs in the "
        "CEL engine at every decision that reaches it, about 0.1 ms more a decision: nextbest "
        f"decides the common forms of rules itself, but not {why}"
    )
    indexed = edited_bank(
        tmp_path / "indexed",
        file,
        old,
        new.split(": ")[0] + ': profile.funnel.exists(t, profile.funnel[t] == "applying")',
    )
    assert warnings(indexed) == []


def test_a_campaign_that_ended_a_year_ago_is_a_warning(tmp_path: Path) -> None:
    folder = edited_bank(
        tmp_path,
        "campaigns.yaml",
        "    weight: 0.8\n",
        "    weight: 0.8\n    start: 2025-09-01\n    end: 2025-09-23\n",
    )
    (problem,) = warnings(folder, now=T0)  # T0 is 2026-09-23
    assert problem.path == "$.campaigns[4].end"
    assert problem.reason == (
        "the campaign ended 2025-09-23T00:00:00Z, 365 days ago (checked at "
        "2026-09-23T10:00:00Z): its offers are never shown; end is exclusive"
    )
    code, out = run_check(folder)  # on the wall clock, later still
    assert code == 0
    assert "warning: $.campaigns[4].end: the campaign ended 2025-09-23T00:00:00Z" in out[0]


# ------------------------------------------------------------------ schedules


def test_a_date_alone_as_an_end_says_that_the_day_is_not_included(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", campaigns=CAMPAIGNS + "    end: 2026-12-31\n")
    (problem,) = warnings(folder, now=T0)
    assert problem.path == "$.campaigns[0].end"
    assert problem.reason == (
        "2026-12-31 is a date: the campaign ends at 2026-12-31T00:00:00Z, as that day begins, "
        "so 2026-12-31 itself is not included (end is exclusive, times are UTC); write "
        "2027-01-01 to include it, or a date-time with an offset"
    )
    # with a time and an offset it is exact: no warning
    exact = small(tmp_path / "exact", campaigns=CAMPAIGNS + "    end: 2027-01-01T00:00:00Z\n")
    assert warnings(exact, now=T0) == []


def test_a_time_without_an_offset_is_read_as_utc_and_says_so(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat", campaigns=CAMPAIGNS + "    start: 2026-10-01 09:00:00\n")
    (problem,) = warnings(folder)
    assert problem.path == "$.campaigns[0].start"
    assert problem.reason.startswith("2026-10-01T09:00:00 has no UTC offset, so it is read as UTC")


def test_an_offer_whose_window_misses_its_campaign_s_is_a_warning(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    topic: mortgage\n",
        "    topic: mortgage\n    valid_from: 2026-01-01T00:00:00Z\n"
        "    valid_until: 2026-02-01T00:00:00Z\n",
        1,
    )
    campaigns = CAMPAIGNS + "    start: 2026-03-01T00:00:00Z\n"
    folder = small(tmp_path / "cat", offers=offers, campaigns=campaigns)
    (problem,) = warnings(folder)
    assert problem.path == "$.offers[0].valid_from"
    assert "do not overlap: it is never shown" in problem.reason


def test_the_example_bank_has_no_warnings_today_and_in_a_year() -> None:
    assert warnings(EXAMPLE_CATALOG, now=T0) == []
    assert warnings(EXAMPLE_CATALOG, now=T0 + 365 * 86_400) == []


# ------------------------------------------------------------------ shares


@pytest.mark.parametrize(
    ("section", "old", "new", "path", "reason"),
    [
        (
            "campaigns",
            "control_share: 0.1",
            "control_share: 10",
            "$.campaigns[0].control_share",
            "10 looks like a percentage, and this is a fraction from 0 to 0.5: 10 % is written 0.1",
        ),
        (
            "campaigns",
            "control_share: 0.1",
            'control_share: "10%"',
            "$.campaigns[0].control_share",
            "'10%' looks like a percentage, and this is a fraction from 0 to 0.5: 10 % is "
            "written 0.1",
        ),
        (
            "campaigns",
            "control_share: 0.1",
            "control_share: 0.1\n    max_exploration: 20",
            "$.campaigns[0].max_exploration",
            "20 looks like a percentage, and this is a fraction from 0 to 1: 20 % is written 0.2",
        ),
        (
            "placements",
            "  - id: hero\n    channel: web\n",
            "  - id: hero\n    channel: web\n    learning: {model: contextual, explore: "
            "{type: epsilon_greedy, epsilon: 5}}\n",
            "$.placements[0].learning.explore.epsilon",
            "5 looks like a percentage, and this is a fraction from 0 to 1: 5 % is written 0.05",
        ),
    ],
)
def test_a_share_written_as_a_percentage_is_explained(
    tmp_path: Path, section: str, old: str, new: str, path: str, reason: str
) -> None:
    texts = {"campaigns": CAMPAIGNS, "placements": PLACEMENTS}
    folder = small(tmp_path / "cat", **{section: texts[section].replace(old, new)})
    (problem,) = check_catalog(folder)
    assert (problem.path, problem.reason, problem.severity) == (path, reason, Severity.ERROR)


def test_a_holdout_share_written_as_a_percentage_is_explained(tmp_path: Path) -> None:
    folder = small(tmp_path / "cat")
    (folder / "policy.yaml").write_text("holdout_share: 5\n")
    (problem,) = check_catalog(folder)
    assert problem.reason == (
        "5 looks like a percentage, and this is a fraction from 0 to 0.5: 5 % is written 0.05"
    )


# ------------------------------------------------------------------ YAML


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        (
            "topics:\n  - id: x\n\tname: X\n",
            3,
            1,
            "YAML: found character '\\t' that cannot start any token (while scanning for the "
            "next token): YAML indents with spaces, never tabs",
        ),
        (
            "topics:\n  - id: x\n    url_patterns: [/x*\n",
            4,
            1,
            "YAML: expected ',' or ']', but got the end of the file (while parsing a flow "
            "sequence at line 3, column 19): a [ list is not closed with ]",
        ),
        (
            "topics:\n  - id: x\n    url_patterns: *green*\n",
            3,
            25,
            "YAML: expected alphabetic or numeric character, but found '*' (while scanning an "
            "alias at line 3, column 19): a value starting with * is read as an alias: quote it "
            '("*green*")',
        ),
        (
            "topics:\n  - id: x\n    name: X\n    name: Y\n",
            4,
            5,
            "YAML: found duplicate key 'name' (first at line 3): YAML would keep only the last "
            "value",
        ),
        (
            "topics:\n  - id: x\n     name: X\n",
            3,
            10,
            "YAML: mapping values are not allowed here: a value holding ': ' must be quoted, or "
            "the line is indented wrongly",
        ),
    ],
)
def test_yaml_errors_say_line_column_and_what_was_expected(
    tmp_path: Path, text: str, line: int, column: int, reason: str
) -> None:
    file = tmp_path / "catalog.yaml"
    file.write_text(text)
    (problem,) = check_catalog(file)
    assert (problem.line, problem.column, problem.reason) == (line, column, reason)
    assert str(problem) == f"{file}:{line}:{column}: $: {reason}"


# ------------------------------------------------------------------ rules as YAML booleans


def test_a_rule_written_as_a_yaml_boolean_is_its_cel_text(tmp_path: Path) -> None:
    offers = OFFERS.replace("    eligibility: profile.overdrawn\n", "    eligibility: false\n")
    catalog = load_catalog(small(tmp_path / "cat", offers=offers))
    assert catalog.offers["warning"].rule.source == "false"


# ------------------------------------------------------------------ offers limited to placements


def test_an_offer_limited_to_placements_is_a_candidate_there_only(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    topic: mortgage\n", "    topic: mortgage\n    placements: [hero]\n"
    )
    catalog = load_catalog(small(tmp_path / "cat", offers=offers))
    assert "advice" in [o.id for o in catalog.by_placement["hero"]]
    assert "advice" not in [o.id for o in catalog.by_placement["sidebar"]]


@pytest.mark.parametrize(
    ("placements", "reason"),
    [
        ("[heroo]", "unknown placement 'heroo' (did you mean 'hero'?)"),
        (
            "[mail]",
            "placement 'mail' shows email content, and the offer has none (it has web, app)",
        ),
        (
            "[app_service]",
            "placement 'app_service' shows only service content, and the offer is commercial",
        ),
    ],
)
def test_an_offer_s_placements_must_be_places_it_can_appear(
    tmp_path: Path, placements: str, reason: str
) -> None:
    offers = OFFERS.replace(
        "    topic: mortgage\n", f"    topic: mortgage\n    placements: {placements}\n"
    )
    (problem,) = check_catalog(small(tmp_path / "cat", offers=offers))
    assert (problem.path, problem.reason) == ("$.offers[0].placements[0]", reason)


def test_a_fallback_an_offer_s_placements_exclude_is_an_error(tmp_path: Path) -> None:
    offers = OFFERS.replace(
        "    eligibility: profile.overdrawn\n",
        "    eligibility: profile.overdrawn\n    placements: [app_service]\n",
    )
    placements = PLACEMENTS.replace(
        "  - id: hero\n    channel: web\n",
        "  - id: hero\n    channel: web\n    fallback: [warning]\n",
    )
    (problem,) = check_catalog(small(tmp_path / "cat", offers=offers, placements=placements))
    assert problem.path == "$.placements[0].fallback[0]"
    assert problem.reason == (
        "offer 'warning' is limited to placements app_service: it cannot appear in this one"
    )


# ------------------------------------------------------------------ errors and warnings together


def test_errors_come_with_the_warnings_found_beside_them(tmp_path: Path) -> None:
    topics = TOPICS + '    url_patterns: ["cards"]\n'
    offers = OFFERS.replace("profile.overdrawn", "profile.overdrwn")
    folder = small(tmp_path / "cat", topics=topics, offers=offers)
    with pytest.raises(CatalogError) as caught:
        load_catalog(folder)
    severities = [p.severity for p in caught.value.problems]
    assert severities == [Severity.ERROR, Severity.WARNING]
    assert "warning" not in caught.value.message  # the message is the errors'
    code, out = run_check(folder)
    assert code == 1
    assert out[-1] == "1 error, 1 warning"


def test_a_compiled_catalog_keeps_its_warnings() -> None:
    raw = {
        "topics": [{"id": "green", "name": "Green", "url_patterns": ["green"]}],
        "placements": [{"id": "hero", "channel": "web"}],
    }
    catalog = compile_catalog(raw, SourceMap(), digest="d" * 64, source="<memory>")
    (problem,) = catalog.warnings
    assert problem.path == "$.topics[0].url_patterns[0]"
    assert str(problem).startswith("<catalog>: warning: $.topics[0].url_patterns[0]: 'green'")
