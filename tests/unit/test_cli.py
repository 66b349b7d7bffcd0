"""The command line, in process: check, token, replay."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest.api.customer_token import token_key_id, verify_customer_token
from nextbest.catalog.compiled import Catalog
from nextbest.cli import app
from nextbest.clock import FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.engine import Engine
from nextbest.errors import AuthError
from nextbest.store import sqlite_stores
from nextbest.store.catalog_files import check_catalog, load_catalog
from tests.support import (
    DAY,
    EXAMPLE_CATALOG,
    ROOT,
    T0,
    batch,
    counter_ids,
    identify,
    message,
    page,
    track,
)

#: a narrow, non-terminal console, as in CI or a pipe: output must still be one line per item
ENV = {"COLUMNS": "80", "NO_COLOR": "1"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------ check


def test_check_example_bank(runner: CliRunner) -> None:
    result = runner.invoke(app, ["check", str(EXAMPLE_CATALOG)], env=ENV)
    assert result.exit_code == 0, result.output
    version = load_catalog(EXAMPLE_CATALOG).version
    assert lines(result.stdout) == [
        f"ok: catalog {version}: 12 topics, 6 segments, 20 offers, 9 campaigns, 5 placements, "
        "6 advisors"
    ]


def test_check_defaults_to_the_example_bank(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["check"], env=ENV)
    assert result.exit_code == 0, result.output
    assert (
        "12 topics, 6 segments, 20 offers, 9 campaigns, 5 placements, 6 advisors" in result.stdout
    )


def test_check_single_file_catalog(runner: CliRunner, tmp_path: Path) -> None:
    single = tmp_path / "bank.yaml"
    single.write_text(
        "\n".join(p.read_text() for p in sorted(EXAMPLE_CATALOG.glob("*.yaml"))),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["check", str(single)], env=ENV)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: catalog 1+")


def _broken_catalog(folder: Path) -> Path:
    folder.mkdir()
    (folder / "topics.yaml").write_text("topics:\n  - id: mortgage\n    name: Mortgage\n")
    (folder / "offers.yaml").write_text(
        "offers:\n"
        "  - id: advice\n"
        "    name: Advice\n"
        "    kind: commercial\n"
        "    topic: mortgage\n"
        "    eligibility: segments.nope\n"
        "    content: {web: {title: Talk}}\n"
        "  - id: card\n"
        "    name: Card\n"
        "    kind: commercial\n"
        '    value: "abc"\n'
        "    content: {web: {title: Card}}\n"
    )
    return folder


def test_check_broken_catalog(runner: CliRunner, tmp_path: Path) -> None:
    folder = _broken_catalog(tmp_path / "a-rather-long-folder-name-for-a-catalog")
    offers = folder / "offers.yaml"
    result = runner.invoke(app, ["check", str(folder)], env=ENV)
    assert result.exit_code == 1
    assert lines(result.stdout) == [
        f"{offers}:11: $.offers[1].value: Expected `float`, got `str`",
        f"{offers}:6: $.offers[0].eligibility: segments.nope is not defined in the catalog",
        "2 errors, 0 warnings",
    ]
    assert lines(result.stdout)[:-1] == [str(p) for p in check_catalog(folder)]


def test_check_problem_lines_have_file_line_path_reason(runner: CliRunner, tmp_path: Path) -> None:
    folder = _broken_catalog(tmp_path / "cat")
    result = runner.invoke(app, ["check", str(folder)], env=ENV)
    shape = re.compile(r"^(?P<file>/\S+\.yaml):(?P<line>\d+): (?P<path>\$\S*): (?P<reason>.+)$")
    problems = lines(result.stdout)[:-1]
    assert len(problems) == 2
    for text in problems:
        match = shape.match(text)
        assert match, text
        assert Path(match["file"]).is_file()
        assert int(match["line"]) >= 1


def test_check_missing_catalog(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["check", str(missing)], env=ENV)
    assert result.exit_code == 1
    assert lines(result.stdout) == [f"{missing}: $: no catalog YAML found", "1 error, 0 warnings"]


def test_check_yaml_syntax_error(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("topics:\n  - id: mortgage\n    name: Mortgage: loans\n")
    result = runner.invoke(app, ["check", str(bad)], env=ENV)
    assert result.exit_code == 1
    assert lines(result.stdout) == [
        f"{bad}:3:19: $: YAML: mapping values are not allowed here: a value holding ': ' must "
        "be quoted, or the line is indented wrongly",
        "1 error, 0 warnings",
    ]


# ------------------------------------------------------------------ token


def test_token_is_accepted_with_the_env_secret(runner: CliRunner) -> None:
    before = time.time()
    result = runner.invoke(
        app, ["token", "cust-42", "--ttl", "60"], env={**ENV, "NEXTBEST_TOKEN_SECRET": "s3cret"}
    )
    after = time.time()
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "\n" not in token
    assert verify_customer_token(token, "s3cret", time.time()) == "cust-42"
    user, expires, kid, signature = token.rsplit(".", 3)
    assert user == "cust-42"
    assert int(before) + 60 <= int(expires) <= after + 60
    assert kid == token_key_id("s3cret")
    assert signature
    with pytest.raises(AuthError):
        verify_customer_token(token, "another-secret", time.time())
    with pytest.raises(AuthError):
        verify_customer_token(token, "s3cret", after + 61)


def test_advisor_token_is_accepted_with_the_env_secret(runner: CliRunner) -> None:
    from nextbest.api.advisor_token import verify_advisor_token

    env = {**ENV, "NEXTBEST_ADVISOR_TOKEN_SECRET": "contact-centre"}
    result = runner.invoke(app, ["advisor-token", "anna_holm", "--ttl", "60"], env=env)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert verify_advisor_token(token, "contact-centre", time.time()) == "anna_holm"
    with pytest.raises(AuthError, match="expired"):
        verify_advisor_token(token, "contact-centre", time.time() + 61)
    bad = runner.invoke(app, ["advisor-token", "anna holm"], env=env)
    assert bad.exit_code == 2
    assert "not an advisor id" in bad.stderr


def test_token_for_a_user_id_with_dots(runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["token", "first.last@bank.example", "--ttl", "600"],
        env={**ENV, "NEXTBEST_TOKEN_SECRET": "s3cret"},
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert verify_customer_token(token, "s3cret", time.time()) == "first.last@bank.example"


def test_token_default_ttl_is_an_hour(runner: CliRunner) -> None:
    before = time.time()
    result = runner.invoke(app, ["token", "u-1"], env={**ENV, "NEXTBEST_TOKEN_SECRET": "k"})
    assert result.exit_code == 0, result.output
    expires = int(result.stdout.strip().rsplit(".", 3)[1])
    assert int(before) + 3600 <= expires <= time.time() + 3600


# ------------------------------------------------------------------ replay


def test_replay_without_a_store(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "none.sqlite"
    result = runner.invoke(
        app, ["replay", "--catalog", str(EXAMPLE_CATALOG), "--data", str(missing)], env=ENV
    )
    assert result.exit_code == 1
    assert lines(result.stderr) == [f"no store at {missing}"]
    assert not missing.exists()


def _write_store(path: Path, catalog: Catalog) -> tuple[int, int]:
    """An event log and snapshot written by a real engine; (events, profiles)."""
    engine = Engine(catalog, sqlite_stores(path), FixedClock(T0 + DAY), new_id=counter_ids())
    try:
        result = engine.ingest_batch(
            batch(
                page("https://bank.example/mortgages/rates", anon="a-1", at=T0),
                page("https://bank.example/mortgages/advice", anon="a-1", at=T0 + 60),
                identify({"age": 34, "children": 1}, user="u-1", anon="a-1", at=T0 + 120),
                track("Salary Received", {"amount": 3100.0}, user="u-1", at=T0 + 180),
                message("alias", user="u-1", previousId="a-1", at=T0 + 200),
                page("https://bank.example/cards", anon="a-2", at=T0 + 300),
                track("Calculator Used", {"topic": "pension"}, anon="a-2", at=T0 + 360),
            )
        )
        engine.decide(DecisionRequest(placement="home_feed"), user_id="u-1")
        profiles = engine.profile_count
    finally:
        engine.close()
    return result.accepted, profiles


def test_replay_of_an_engine_store_is_identical(
    runner: CliRunner, tmp_path: Path, catalog: Catalog
) -> None:
    data = tmp_path / "engine.sqlite"
    events, profiles = _write_store(data, catalog)
    assert events == 7
    assert profiles >= 2
    result = runner.invoke(
        app, ["replay", "--catalog", str(EXAMPLE_CATALOG), "--data", str(data)], env=ENV
    )
    assert result.exit_code == 0, result.output
    assert lines(result.stdout) == [
        f"replayed {events} events into {profiles} profiles: identical; models: identical; "
        "experiment counters: identical"
    ]


def test_replay_reads_catalog_and_data_from_env(
    runner: CliRunner, tmp_path: Path, catalog: Catalog
) -> None:
    data = tmp_path / "engine.sqlite"
    _write_store(data, catalog)
    result = runner.invoke(
        app,
        ["replay"],
        env={**ENV, "NEXTBEST_CATALOG": str(EXAMPLE_CATALOG), "NEXTBEST_DATA": str(data)},
    )
    assert result.exit_code == 0, result.output
    assert "identical" in result.stdout


def test_replay_write_rebuilds_and_stays_identical(
    runner: CliRunner, tmp_path: Path, catalog: Catalog
) -> None:
    data = tmp_path / "engine.sqlite"
    events, profiles = _write_store(data, catalog)
    args = ["replay", "--catalog", str(EXAMPLE_CATALOG), "--data", str(data)]
    first = runner.invoke(app, [*args, "--write"], env=ENV)
    assert first.exit_code == 0, first.output
    assert lines(first.stdout) == [
        f"replayed {events} events into {profiles} profiles: identical; models: identical; "
        "experiment counters: identical"
    ]
    again = runner.invoke(app, args, env=ENV)
    assert again.exit_code == 0, again.output
    assert lines(again.stdout) == [
        f"replayed {events} events into {profiles} profiles: identical; models: identical; "
        "experiment counters: identical"
    ]


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [], env=ENV)
    for command in ("serve", "check", "replay", "token"):
        assert command in result.output


def test_serve_refuses_dev_keys_off_loopback(tmp_path):
    from typer.testing import CliRunner

    from nextbest.cli import app as cli_app

    env = {
        k: ""
        for k in (
            "NEXTBEST_WRITE_KEYS",
            "NEXTBEST_BROWSER_KEYS",
            "NEXTBEST_SERVER_KEYS",
            "NEXTBEST_ADMIN_KEYS",
        )
    }
    result = CliRunner().invoke(
        cli_app, ["serve", "--host", "0.0.0.0", "--data", str(tmp_path / "x.sqlite")], env=env
    )
    assert result.exit_code == 2
    assert "refusing" in result.output


def test_serve_runs_uvicorn_on_the_coalescing_protocol(tmp_path, monkeypatch):
    """``nextbest serve`` hands uvicorn ``api.http_protocol``'s protocol (each response in
    one write), bound to the served app's lean routes (``LaneProtocol``); uvicorn itself is
    not started here."""
    import logging

    import uvicorn

    from nextbest.api import logs
    from nextbest.api.http_protocol import LaneProtocol
    from nextbest.cli import app as cli_app

    ran: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append({"app": app, **options}))
    monkeypatch.setattr(logs, "configure", lambda: logging.NullHandler())
    result = CliRunner().invoke(
        cli_app, ["serve", "--data", str(tmp_path / "x.sqlite")], env=ENV, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    ((options),) = ran
    protocol = options["http"]
    assert isinstance(protocol, type)
    assert issubclass(protocol, LaneProtocol)
    assert protocol.lane is options["app"].fast_lane  # type: ignore[attr-defined]


# ------------------------------------------------------------------ quarantine


def _store_with_a_held_message(data: Path, catalog: Catalog) -> None:
    from nextbest.engine import IngestRequest
    from nextbest.guard import KeyKind, Sender

    engine = Engine(catalog, sqlite_stores(data), FixedClock(T0), new_id=counter_ids())
    try:
        body = batch(
            page("https://bank.example/mortgages", user="u1", at=T0 - 60),
            {**track("Product Opened", {"product": 42}, user="u1", at=T0 - 30), "messageId": "m-7"},
        )
        engine.accept(IngestRequest(Sender(KeyKind.SERVER), engine.read_batch(body), "$.batch"))
    finally:
        engine.close()


def test_quarantine_list_and_replay(
    runner: CliRunner, tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "q.sqlite"
    _store_with_a_held_message(data, catalog)
    where = ["--catalog", str(EXAMPLE_CATALOG), "--data", str(data)]
    listed = runner.invoke(app, ["quarantine", "list", *where], env=ENV)
    assert listed.exit_code == 0, listed.output
    assert lines(listed.stdout) == [
        "1 message(s) held in quarantine",
        "#1 2026-09-23T10:00:00+00:00 'Product Opened' for u1 from a server key: wrong_type "
        "at $.batch[1].properties.product: 'Product Opened' property 'product' must be str",
    ]
    still = runner.invoke(app, ["quarantine", "replay", *where], env=ENV)
    assert still.exit_code == 0, still.output
    assert lines(still.stdout)[0] == "replayed 0 message(s) (0 already in the log); 1 still held"

    from nextbest.events import names

    monkeypatch.setitem(names.KNOWN_EVENTS, "Product Opened", {})
    fixed = runner.invoke(app, ["quarantine", "replay", *where], env=ENV)
    assert fixed.exit_code == 0, fixed.output
    assert lines(fixed.stdout) == ["replayed 1 message(s) (0 already in the log); 0 still held"]
    again = runner.invoke(app, ["quarantine", "list", *where], env=ENV)
    assert lines(again.stdout) == ["0 message(s) held in quarantine"]
    stores = sqlite_stores(data)
    try:
        assert [s.event.message_id for s in stores.events.scan()][-1] == "m-7"
    finally:
        stores.close()


def test_quarantine_without_a_store(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["quarantine", "list", "--data", str(tmp_path / "none.sqlite")], env=ENV
    )
    assert result.exit_code == 1
    assert "no store at" in result.output


@pytest.fixture(scope="module")
def experiment_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store where one mortgage researcher in mortgage_q4's control group and one in its
    treatment were decided for; the treated one viewed the offer and applied."""
    from tests.support import feedback, user_in

    data = tmp_path_factory.mktemp("results") / "log.sqlite"
    clock = FixedClock(T0)
    engine = Engine(load_catalog(EXAMPLE_CATALOG), sqlite_stores(data), clock, new_id=counter_ids())
    for user in (user_in("control", "mortgage_q4", 0.1), user_in("treatment", "mortgage_q4", 0.1)):
        engine.ingest_batch(
            batch(
                identify({"age": 40}, user=user, at=T0 - 3600),
                *[page(MORTGAGE_URL, user=user, at=T0 - 60 * k) for k in range(6)],
            )
        )
        d = engine.decide(DecisionRequest(placement="home_feed"), user_id=user)
        if d.items and "mortgage_advice" in [i.offer_id for i in d.items]:
            engine.ingest_batch(
                batch(
                    feedback(d, "Promotion Viewed", "mortgage_advice", at=T0 + 1),
                    track("Application Submitted", {"product": "mortgage"}, user=user, at=T0 + 2),
                )
            )
    engine.close()
    return data


MORTGAGE_URL = "https://bank.example/mortgages/rates"


def test_results_prints_the_table_and_the_verdict(runner: CliRunner, experiment_store: Path):
    args = ["results", "mortgage_q4", "-c", str(EXAMPLE_CATALOG), "-d", str(experiment_store)]
    out = runner.invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert out.exit_code == 0, out.output
    text = out.output
    assert "Mortgage advice Q4 (mortgage_q4, running" in text
    assert "and expect: More submitted mortgage applications" in text
    for column in ("arm", "exposed", "conversions", "rate", "lift", "p-value", "chance to win"):
        assert column in text
    assert "SRM" in text
    assert 'primary KPI: Application Submitted where properties.product == "mortgage"' in text
    assert "guardrail: Promotion Dismissed" in text
    assert "verdict: Collecting data: 2 customers exposed" in text
    # the primary KPI per audience: the registered one first, the others exploratory
    assert "primary KPI by audience at first exposure (exploratory: p-values adjusted" in text
    audiences = text[text.index("primary KPI by audience") :]
    assert audiences.index("Mortgage intent") < audiences.index("Lifecycle: family")
    assert "registered" in audiences
    assert "exploratory" in audiences

    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0
    body = json.loads(as_json.output)
    arms = {a["arm"]: a for a in body["kpis"][0]["arms"]}
    assert (arms["control"]["exposed"], arms["treatment"]["conversions"]) == (1, 1.0)
    assert arms["treatment"]["cuped"] is None  # no covariate varies among two customers
    assert body["verdict"] == "collecting_data"
    by_audience = {a["audience"]: a for a in body["audiences"]}
    assert by_audience["mortgage_intent"]["registered"] is True
    assert by_audience["lifecycle:family"]["exploratory"] is True
    assert by_audience["lifecycle:family"]["exposed"] == 2


def test_results_without_a_campaign_lists_every_verdict(runner: CliRunner, experiment_store: Path):
    args = ["results", "-c", str(EXAMPLE_CATALOG), "-d", str(experiment_store)]
    out = runner.invoke(app, args, env=ENV)
    assert out.exit_code == 0, out.output
    assert "mortgage_q4 (running, 2 exposed): Collecting data" in out.output
    assert "car_loan_autumn (running, 0 exposed)" in out.output


def test_results_draws_the_lift_by_day(runner: CliRunner, experiment_store: Path, tmp_path: Path):
    png = tmp_path / "lift.png"
    args = ["results", "mortgage_q4", "-c", str(EXAMPLE_CATALOG), "-d", str(experiment_store)]
    out = runner.invoke(app, [*args, "--plot", str(png)], env=ENV)
    assert out.exit_code == 0, out.output
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_results_for_an_unknown_campaign_says_so(runner: CliRunner, experiment_store: Path):
    args = ["results", "nope", "-c", str(EXAMPLE_CATALOG), "-d", str(experiment_store)]
    out = runner.invoke(app, args, env=ENV)
    assert out.exit_code == 1
    assert "no campaign 'nope'" in out.output


# ------------------------------------------------------------------ customer export / erase


def test_customer_export_then_erase_on_a_stopped_server_s_store(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "store.sqlite"
    catalog = load_catalog(EXAMPLE_CATALOG)
    engine = Engine(catalog, sqlite_stores(path), FixedClock(T0), new_id=counter_ids())
    engine.ingest_batch(
        batch(
            identify({"email": "cli-gone@example.dk"}, user="cli-gone", anon="cli-dev", at=T0),
            page("https://bank.example/mortgages", user="cli-gone", at=T0 + 1),
            page("https://bank.example/loans", user="cli-kept", at=T0 + 2),
        )
    )
    engine.close()
    where = ["--catalog", str(EXAMPLE_CATALOG), "--data", str(path)]
    out = tmp_path / "export.json"
    exported = runner.invoke(app, ["customer", "export", "cli-gone", "--out", str(out), *where])
    assert exported.exit_code == 0, exported.output
    body = json.loads(out.read_text())
    assert body["anonymous_ids"] == ["cli-dev"]
    assert len(body["events"]) == 2
    erased = runner.invoke(app, ["customer", "erase", "cli-gone", *where], env=ENV)
    assert erased.exit_code == 0, erased.output
    assert json.loads(erased.output)["events"] == 2
    again = runner.invoke(app, ["customer", "erase", "cli-gone", *where], env=ENV)
    assert again.exit_code == 1
    assert "no customer 'cli-gone'" in again.output
    assert b"cli-gone@example.dk" not in path.read_bytes()
