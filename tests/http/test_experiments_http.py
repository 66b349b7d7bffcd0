"""``GET /v1/experiments`` and ``/v1/experiments/{campaign}`` on a real server (issue #18,
item 7): admin scope, JSON as declared, a control exposure and a conversion counted."""

from __future__ import annotations

import httpx

from nextbest.experiments import Arm
from tests.conftest import ADMIN_KEY, SERVER_KEY, LiveServer
from tests.http.helpers import msg, now, user_in_arm
from tests.support import feedback

MORTGAGE = "https://bank.example/mortgages/rates"


def _researcher(http: httpx.Client, user: str) -> dict[str, object]:
    t = now()
    pages = [
        msg("page", userId=user, properties={"url": MORTGAGE}, at=t - 60 * k) for k in range(6)
    ]
    sent = http.post(
        "/v1/batch",
        json={"batch": [msg("identify", userId=user, traits={"age": 40}, at=t - 600), *pages]},
        auth=(SERVER_KEY, ""),
    )
    assert sent.status_code == 200, sent.text
    decided = http.post(
        "/v1/decide", json={"placement": "home_feed", "userId": user}, auth=(SERVER_KEY, "")
    )
    assert decided.status_code == 200, decided.text
    body: dict[str, object] = decided.json()
    return body


def test_experiment_results_count_exposures_and_conversions(
    live_server: LiveServer, http: httpx.Client
) -> None:
    held = user_in_arm(Arm.CONTROL)
    shown = user_in_arm(Arm.TREATMENT)
    control_decision = _researcher(http, held)
    assert "mortgage_advice" in control_decision["control"]  # type: ignore[operator]
    decision = live_server.engine.decision(str(_researcher(http, shown)["decision_id"]))
    assert decision is not None
    view = feedback(decision, "Promotion Viewed", "mortgage_advice", at=now())
    applied = msg(
        "track", userId=shown, event="Application Submitted", properties={"product": "mortgage"}
    )
    sent = http.post("/v1/batch", json={"batch": [view, applied]}, auth=(SERVER_KEY, ""))
    assert sent.status_code == 200, sent.text

    assert http.get("/v1/experiments", auth=(SERVER_KEY, "")).status_code == 403
    listed = http.get("/v1/experiments", auth=(ADMIN_KEY, ""))
    assert listed.status_code == 200
    by_id = {e["campaign"]: e for e in listed.json()["experiments"]}
    assert by_id["mortgage_q4"]["exposed"] == 2
    assert by_id["mortgage_q4"]["verdict"] == "collecting_data"

    result = http.get("/v1/experiments/mortgage_q4", auth=(ADMIN_KEY, "")).json()
    assert result["hypothesis"]["expected"].startswith("More submitted mortgage applications")
    primary = result["kpis"][0]
    assert (primary["event"], primary["guardrail"], primary["kind"]) == (
        "Application Submitted",
        False,
        "proportion",
    )
    arms = {a["arm"]: a for a in primary["arms"]}
    assert (arms["control"]["exposed"], arms["control"]["conversions"]) == (1, 0.0)
    assert (arms["treatment"]["exposed"], arms["treatment"]["conversions"]) == (1, 1.0)
    assert result["verdict"] == "collecting_data"
    assert result["summary"].startswith("Collecting data: 2 customers exposed")
    assert result["weights"] == {"control": 0.1, "treatment": 0.9}

    missing = http.get("/v1/experiments/no_such_campaign", auth=(ADMIN_KEY, ""))
    assert missing.status_code == 404
    assert "no_such_campaign" in missing.text
