"""``nextbest evaluate`` for the analyst (issue #18, item 8): value-weighted estimates, a
per-offer breakdown that sums to the estimate, a plain verdict against the logging policy,
and a warning when the effective sample size is small (105 of 8,035 rows passed silently)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest.catalog.compiled import Catalog
from nextbest.cli import app
from nextbest.decide.model import Decision, DecisionItem
from nextbest.experiments.assignment import Arm
from nextbest.learn.logs import LoggedItem
from nextbest.learn.offline import (
    ESS_MIN_ROWS,
    ESS_MIN_SHARE,
    VerdictKind,
    evaluate_candidate,
)
from nextbest.store.catalog_files import load_catalog
from nextbest.store.export import rewards_of, write_decisions
from tests.support import T0, edited_catalog
from tests.unit.test_offline import without_learning

#: the candidate (the example bank, greedy) puts mortgage_advice first in home_hero: it
#: outscores car_loan_offer (400 x 0.02 x 1.2 against 150 x 0.01)
BEST, OTHER = "mortgage_advice", "car_loan_offer"


@pytest.fixture(scope="module")
def greedy(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return without_learning(tmp_path_factory.mktemp("greedy"))


def logs(n: int, p_best: float, convert: dict[str, float], seed: int = 7) -> list[LoggedItem]:
    """A one-slot placement whose logging policy showed ``BEST`` with probability
    ``p_best`` and ``OTHER`` otherwise; each converts at its rate in ``convert``."""
    rng = random.Random(seed)
    out: list[LoggedItem] = []
    for i in range(n):
        offer = BEST if rng.random() < p_best else OTHER
        propensity = p_best if offer == BEST else 1.0 - p_best
        converted = rng.random() < convert[offer]
        out.append(
            LoggedItem(
                decision_id=f"d{i:06d}",
                timestamp=T0 + i,
                customer_id=f"c{i}",
                placement="home_hero",
                position=1,
                offer_id=offer,
                propensity=propensity,
                clicked=converted,
                converted=converted,
                candidates=[BEST, OTHER],
            )
        )
    return out


def test_value_is_estimated_and_split_by_offer(greedy: Catalog) -> None:
    rows = logs(4000, 0.5, {BEST: 0.02, OTHER: 0.05})
    report = evaluate_candidate(rows, greedy, n_bootstrap=50, fatigue=False)
    value = next(r for r in report.rewards if r.reward == "value")
    worth = {BEST: 400.0, OTHER: 150.0}
    assert value.logged == pytest.approx(sum(worth[i.offer_id] * i.converted for i in rows) / 4000)
    dr = next(e for e in value.estimates if e.estimator.value == "dr")
    # the parts sum to the estimate; the candidate shows BEST in every slot
    assert sum(o.estimated_value for o in report.offers) == pytest.approx(dr.value)
    by = {o.offer_id: o for o in report.offers}
    assert by[BEST].candidate_share == pytest.approx(1.0)
    assert by[OTHER].candidate_share == 0.0
    assert by[BEST].logged_share + by[OTHER].logged_share == pytest.approx(1.0)
    assert sum(o.logged_value for o in report.offers) == pytest.approx(value.logged)


@pytest.mark.parametrize(
    ("convert", "kind", "start"),
    [
        ({BEST: 0.03, OTHER: 0.02}, VerdictKind.BETTER, "Better than the logging policy: "),
        ({BEST: 0.002, OTHER: 0.05}, VerdictKind.WORSE, "Worse than the logging policy: "),
        (
            {BEST: 0.01, OTHER: 400 / 150 * 0.01},
            VerdictKind.NO_CLEAR_DIFFERENCE,
            "No clear difference from the logging policy: ",
        ),
    ],
)
def test_the_verdict_against_the_logging_policy(
    greedy: Catalog, convert: dict[str, float], kind: VerdictKind, start: str
) -> None:
    report = evaluate_candidate(logs(4000, 0.5, convert), greedy, n_bootstrap=200, fatigue=False)
    verdict = report.verdict
    assert verdict is not None
    assert verdict.reward == "value"
    assert verdict.kind is kind, verdict.text
    assert verdict.text.startswith(start)
    assert verdict.ci_lower <= verdict.difference <= verdict.ci_upper
    assert verdict.effective_sample_size == pytest.approx(2000, rel=0.05)  # half the rows


def test_little_overlap_is_no_verdict_but_a_warning(greedy: Catalog) -> None:
    """The logging policy showed the candidate's choice in about 1.3 % of the rows (105 of
    8,035 in the issue): the estimate rests on those few rows."""
    report = evaluate_candidate(
        logs(8035, 0.013, {BEST: 0.2, OTHER: 0.01}), greedy, n_bootstrap=50, fatigue=False
    )
    verdict = report.verdict
    assert verdict is not None
    assert verdict.kind is VerdictKind.TOO_LITTLE_OVERLAP
    assert verdict.effective_sample_size < ESS_MIN_SHARE * 8035
    assert verdict.text.startswith("Too little overlap to tell: the logs rest on ")
    assert "of 8,035 (" in verdict.text


def test_thresholds() -> None:
    assert ESS_MIN_SHARE == 0.1
    assert ESS_MIN_ROWS == 500


def test_no_conversion_in_the_logs_is_judged_on_clicks(greedy: Catalog) -> None:
    rows = [
        LoggedItem(**{**_fields(i), "converted": False})
        for i in logs(2000, 0.5, {BEST: 0.1, OTHER: 0.05})
    ]
    verdict = evaluate_candidate(rows, greedy, n_bootstrap=50, fatigue=False).verdict
    assert verdict is not None
    assert verdict.reward == "click"
    assert "(no conversion in the logs: judged on clicks)" in verdict.text


def _fields(item: LoggedItem) -> dict[str, object]:
    return {f: getattr(item, f) for f in item.__struct_fields__}


def test_the_cli_prints_value_offers_the_verdict_and_the_warning(
    greedy: Catalog, tmp_path: Path
) -> None:
    rows = logs(3000, 0.013, {BEST: 0.2, OTHER: 0.01})
    decisions = [
        Decision(
            decision_id=i.decision_id,
            customer_id=i.customer_id,
            placement=i.placement,
            timestamp=i.timestamp,
            catalog_version="1",
            items=[
                DecisionItem(
                    position=1,
                    offer_id=i.offer_id,
                    kind=greedy.offers[i.offer_id].kind,
                    campaign_id=None,
                    arm=Arm.TREATMENT,
                    score=0.0,
                    p_click=0.01,
                    propensity=i.propensity,
                    content={},
                    reasons=[],
                )
            ],
            excluded=[],
            control=[],
            segments=[],
            candidates=i.candidates,
        )
        for i in rows
    ]
    out = tmp_path / "logs.parquet"
    write_decisions(decisions, out, rewards_of(rows))
    folder = greedy.source  # the folder the greedy catalog was written to
    result = CliRunner().invoke(
        app,
        ["evaluate", "--policy", str(folder), "--logs", str(out), "--bootstrap", "20"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    text = result.output
    assert "value rate per slot, logged" in text
    assert "value per slot by offer (DR)" in text
    assert f"  {BEST:<24}" in text
    assert "warning: effective sample size " in text
    assert "too small to trust the estimates" in text
    assert "verdict: Too little overlap to tell" in text


def test_a_candidate_whose_campaign_is_paused_does_not_show_its_offers(
    greedy: Catalog, tmp_path: Path
) -> None:
    folder = tmp_path / "paused"
    folder.mkdir()
    pause = (
        "    offers: [mortgage_advice]\n",
        "    offers: [mortgage_advice]\n    status: paused\n",
    )
    edited_catalog(folder, {"campaigns.yaml": [pause]})
    # greedy placements, as the candidate of the other tests
    (folder / "placements.yaml").write_text((Path(greedy.source) / "placements.yaml").read_text())
    paused = load_catalog(folder)
    report = evaluate_candidate(logs(2000, 0.5, {BEST: 0.05, OTHER: 0.02}), paused, n_bootstrap=20)
    by = {o.offer_id: o for o in report.offers}
    assert by[BEST].candidate_share == 0.0
    assert by[OTHER].candidate_share == pytest.approx(1.0)
