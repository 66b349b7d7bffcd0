"""``GET /v1/experiments`` and ``/v1/experiments/{campaign}`` on a real server (issue #18,
item 7): admin scope, JSON as declared, a control exposure and a conversion counted; the
CUPED lift and the per-audience breakdown (items 4 and 6), and what a control decision
freezes (item 3)."""

from __future__ import annotations

import random

import httpx
import msgspec

from nextbest.experiments import Arm
from nextbest.usecases import served_experiment
from tests.conftest import ADMIN_KEY, SERVER_KEY, LiveServer
from tests.http.helpers import msg, now, user_in_arm
from tests.support import DAY, feedback

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


def test_results_show_cuped_and_audiences_and_control_decisions_log_what_they_freeze(
    live_server: LiveServer, http: httpx.Client
) -> None:
    """Items 3, 4 and 6 over HTTP: a control decision names its exposure with the covariates
    and audiences it froze; a campaign's results carry the CUPED lift and the primary KPI
    per audience (the registered one confirmatory), as the OpenAPI document declares."""
    rng = random.Random(4)
    t = now()
    users = [f"cuped-{n}" for n in range(240)]
    prior = {u: rng.random() < 0.35 for u in users}
    for chunk in range(0, len(users), 40):
        msgs: list[dict[str, object]] = []
        for u in users[chunk : chunk + 40]:
            msgs.append(msg("identify", userId=u, traits={"age": 40}, at=t - 20 * DAY))
            if prior[u]:  # applied in the month before: the covariate
                msgs.append(
                    msg(
                        "track",
                        userId=u,
                        event="Application Submitted",
                        properties={"product": "mortgage"},
                        at=t - 6 * DAY,
                    )
                )
            msgs += [
                msg("page", userId=u, properties={"url": MORTGAGE}, at=t - 600 - 60 * k)
                for k in range(6)
            ]
        sent = http.post("/v1/batch", json={"batch": msgs}, auth=(SERVER_KEY, ""))
        assert sent.status_code == 200, sent.text
    later: list[dict[str, object]] = []
    held: dict[str, object] | None = None
    for u in users:
        answer = http.post(
            "/v1/decide", json={"placement": "home_feed", "userId": u}, auth=(SERVER_KEY, "")
        )
        assert answer.status_code == 200, answer.text
        d = answer.json()
        if "mortgage_advice" in d["control"]:
            held = held if held is not None and prior[str(held["customer_id"])] else d
        decision = live_server.engine.decision(d["decision_id"])
        assert decision is not None
        if "mortgage_advice" in [i["offer_id"] for i in d["items"]]:
            later.append(feedback(decision, "Promotion Viewed", "mortgage_advice", at=now()))
        if rng.random() < (0.6 if prior[u] else 0.15):
            later.append(
                msg(
                    "track",
                    userId=u,
                    event="Application Submitted",
                    properties={"product": "mortgage"},
                )
            )
    assert held is not None
    assert held["covariates"] == {
        "mortgage_q4": [1.0 if prior[str(held["customer_id"])] else 0.0, 0.0]
    }
    assert held["audiences"][:2] == ["lifecycle:family", "engagement:medium"]  # type: ignore[index]
    for chunk in range(0, len(later), 100):
        sent = http.post(
            "/v1/batch", json={"batch": later[chunk : chunk + 100]}, auth=(SERVER_KEY, "")
        )
        assert sent.status_code == 200, sent.text

    result = http.get("/v1/experiments/mortgage_q4", auth=(ADMIN_KEY, "")).json()
    arms = {a["arm"]: a for a in result["kpis"][0]["arms"]}
    assert arms["control"]["cuped"] is None
    cuped = arms["treatment"]["cuped"]
    # the figures the engine's own counters give, served as JSON
    want = served_experiment(live_server.engine, "mortgage_q4").kpis[0].arms[1].cuped
    assert want is not None
    assert cuped == msgspec.to_builtins(want)
    assert cuped["theta"] > 0
    assert 0 < cuped["interval_ratio"] < 1
    by_audience = {a["audience"]: a for a in result["audiences"]}
    registered = by_audience["mortgage_intent"]
    assert (registered["registered"], registered["exploratory"]) == (True, False)
    assert registered["exposed"] == sum(a["exposed"] for a in result["kpis"][0]["arms"])
    assert result["audiences"][0]["audience"] == "mortgage_intent"
    family = by_audience["lifecycle:family"]
    assert family["exploratory"] is True
    assert family["name"] == "Lifecycle: family"
    assert result["audience_adjustment"] == "benjamini_hochberg"

    document = httpx.get(f"{live_server.url}/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "cuped" in schemas["ArmResult"]["properties"]
    assert "audiences" in schemas["ExperimentResult"]["properties"]
    assert {"adjusted_p_value", "significant"} <= set(schemas["AudienceArm"]["properties"])
    assert {"covariates", "audiences"} <= set(schemas["Decision"]["properties"])
