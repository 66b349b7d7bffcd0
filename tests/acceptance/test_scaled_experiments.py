"""Experiment counters in scale-out (issue #18, item 4): an API worker decides and logs a
control customer's decision, the fold worker counts that exposure before the customer's KPI
event and saves the counters with the profiles, and any API worker serves the results from
the saved rows (real Redis; skipped with the reason when it is not reachable)."""

from __future__ import annotations

from nextbest.decide import DecisionRequest
from nextbest.experiments.counters import CONTROL
from nextbest.usecases import list_experiments, served_experiment
from tests.acceptance.test_scaled_roles import MORTGAGE, Deployment, deploy  # noqa: F401
from tests.support import DAY, T0, identify, page, track, user_in


def test_the_fold_worker_counts_logged_control_exposures_and_api_workers_serve_them(
    deploy: Deployment,  # noqa: F811
) -> None:
    held = user_in("control", "mortgage_q4", 0.1, prefix="held")
    deploy.send(
        identify({"age": 40}, user=held, at=T0 - 3600),
        *[page(MORTGAGE, user=held, at=T0 - 60 * k) for k in range(6)],
    )
    deploy.fold.step()
    decision = deploy.api.decide(DecisionRequest(placement="home_feed"), user_id=held)
    assert "mortgage_advice" in decision.control
    deploy.api.flush()  # the decision log holds it
    deploy.clock.set(T0 + DAY)
    deploy.send(track("Application Submitted", {"product": "mortgage"}, user=held, at=T0 + DAY))
    deploy.fold.step()

    exposed = deploy.engine.experiment_counters(customers=True)["mortgage_q4"].customers
    assert exposed[held].arm == CONTROL
    # the API workers read the counts rows: no exposed customer in them
    counters = deploy.api.experiment_counters()["mortgage_q4"]
    assert counters.customers == {}
    totals = counters.totals(CONTROL, 0)
    assert (totals.n, totals.sum) == (1, 1.0)
    listed = {e.campaign: e for e in list_experiments(deploy.api).experiments}
    assert listed["mortgage_q4"].exposed == 1
    result = served_experiment(deploy.api, "mortgage_q4")
    assert result.kpis[0].arms[0].conversions == 1.0
    assert deploy.restarted_engine().experiment_state() == deploy.engine.experiment_state()
