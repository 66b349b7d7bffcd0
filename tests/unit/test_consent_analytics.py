"""The analytics purpose applied to experiment measurement (issue #20, items 1-2): the
covariates (CUPED) and audiences frozen at a customer's first exposure are read through
their analytics view. A source withdrawn for analytics gives no covariate and no audience
that reads it; a customer who withdrew analytics keeps their arm and counts in it with
their KPI, without a covariate or an audience; results say how many exposures analytics
withheld something of. Analytics is on unless the customer (or the catalog) says no."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.engine import Engine
from nextbest.experiments.counters import CONTROL, TREATMENT, CampaignCounters, ExperimentCounters
from nextbest.experiments.exposure import (
    AnalyticsView,
    covariates,
    macro_audiences,
    measured_segments,
)
from nextbest.experiments.report import campaign_result, summarize
from nextbest.profile.consent import ANALYTICS_OFF, SECURITY_DATA, ConsentGrant, View
from nextbest.store import sqlite_stores
from nextbest.store.catalog_files import load_catalog
from tests.support import (
    DAY,
    T0,
    batch,
    counter_ids,
    edited_catalog,
    feedback,
    identify,
    page,
    track,
    user_in,
)
from tests.unit.experiment_bank import CAMPAIGN, MORTGAGE, applied

#: a customer's analytics choices: none, core banking withdrawn, analytics withdrawn
CHOICES = {
    "plain": {},
    "notx": {"analytics": {"granted": True, "sources": {"transactional": False}}},
    "off": {"analytics": False},
}


@pytest.fixture
def guarded(tmp_path: Path) -> Path:
    """The example bank whose mortgage campaign also watches savings transfers (a
    transactional KPI: its covariate reads core banking)."""
    old = "      - event: Promotion Dismissed\n    audiences: [mortgage_intent]"
    new = (
        "      - event: Promotion Dismissed\n      - event: Savings Transfer\n"
        "    audiences: [mortgage_intent]"
    )
    folder = tmp_path / "catalog"
    folder.mkdir()
    return edited_catalog(folder, {"campaigns.yaml": [(old, new)]})


def history(user: str, choice: dict[str, object]) -> list[dict[str, object]]:
    """A mortgage researcher of 40 who applied twice and moved savings once in the month
    before T0, with their analytics choice."""
    msgs = [identify({"age": 40, "consent": choice}, user=user, at=T0 - 20 * DAY)]
    msgs += [applied(user, T0 - (5 + k) * DAY) for k in range(2)]
    msgs.append(track("Savings Transfer", {"amount": 100.0}, user=user, at=T0 - 3 * DAY))
    msgs += [page(MORTGAGE, user=user, at=T0 - 60 * k) for k in range(6)]
    return msgs


def test_analytics_is_opt_out_and_its_view_hides_what_was_withdrawn(catalog: Catalog) -> None:
    rules = catalog.consent
    assert rules.purpose_on({}, "analytics")  # legitimate interest: on until refused
    assert rules.hidden({}, {}, View.ANALYTICS) == {SECURITY_DATA, "third_party"}
    assert ANALYTICS_OFF in rules.hidden({"analytics": False}, {}, View.ANALYTICS)
    grants = {"analytics/crm": ConsentGrant(granted=False)}
    assert "crm" in rules.hidden({}, grants, View.ANALYTICS)
    assert "crm" not in rules.hidden({}, grants, View.COMMERCIAL)  # analytics' own choice


def test_a_withdrawn_source_gives_no_covariate_and_no_audience_reading_it(
    guarded: Path, tmp_path: Path
) -> None:
    catalog = load_catalog(guarded)
    clock = FixedClock(T0)
    data = tmp_path / "log.sqlite"
    engine = Engine(catalog, sqlite_stores(data), clock, new_id=counter_ids())
    held = {k: user_in(CONTROL, CAMPAIGN, 0.1, prefix=f"held-{k}") for k in CHOICES}
    shown = {k: user_in(TREATMENT, CAMPAIGN, 0.1, prefix=f"shown-{k}") for k in CHOICES}
    for k, choice in CHOICES.items():
        engine.ingest_batch(batch(*history(held[k], choice), *history(shown[k], choice)))
    home = DecisionRequest(placement="home_feed")
    control = {k: engine.decide(home, user_id=u) for k, u in held.items()}
    treated = {k: engine.decide(home, user_id=u) for k, u in shown.items()}
    # KPIs: applied (behavioral), dismissed (the bank's own contact history), savings moved
    assert control["plain"].covariates == {CAMPAIGN: [1.0, 0.0, 1.0]}
    assert control["notx"].covariates == {CAMPAIGN: [1.0, 0.0, 0.0]}
    assert control["off"].covariates == {CAMPAIGN: [0.0, 0.0, 0.0]}
    assert control["plain"].audiences == control["notx"].audiences != []
    assert control["off"].audiences == []
    assert control["notx"].analytics_hidden == ["third_party", "transactional"]
    assert ANALYTICS_OFF in control["off"].analytics_hidden
    # the arm is the hash's whatever the choice: randomisation is not touched
    assert all(d.control == ["mortgage_advice"] for d in control.values())
    assert all("mortgage_intent" in d.segments for d in control.values())
    clock.set(T0 + 2 * DAY)
    engine.ingest_batch(
        batch(
            *(
                feedback(d, "Promotion Viewed", "mortgage_advice", at=T0 + 10)
                for d in treated.values()
            ),
            *(applied(u, T0 + DAY) for u in [*held.values(), *shown.values()]),
        )
    )
    counters = engine.experiment_counters(customers=True)[CAMPAIGN]
    names = counters.audience_names
    for arm_users in (held, shown):
        got = {k: counters.customers[u] for k, u in arm_users.items()}
        assert got["plain"].pre == (1.0, 0.0, 1.0)
        assert got["notx"].pre == (1.0, 0.0, 0.0)
        assert got["off"].pre == ()
        assert got["off"].audiences == b""
        assert "mortgage_intent" in {names[i] for i in got["notx"].audiences}
        assert all(e.values[0] == 1.0 for e in got.values())  # every KPI still counted
    assert counters.withheld == {CONTROL: 2, TREATMENT: 2}
    for arm in (CONTROL, TREATMENT):
        assert counters.totals(arm, 0).n == 3
        assert counters.audience_totals("mortgage_intent", arm, 0).n == 2
    result = campaign_result(catalog.campaigns[CAMPAIGN], catalog.kpis[CAMPAIGN], counters)
    assert result.analytics_withheld == {CONTROL: 2, TREATMENT: 2}
    assert summarize(result).analytics_withheld == 4

    assert engine.replay().experiments_identical
    state = engine.experiment_state()
    engine.close()
    restarted = Engine(load_catalog(guarded), sqlite_stores(data), FixedClock(T0 + 2 * DAY))
    assert restarted.experiment_state() == state
    restarted.release()


def test_a_segment_reading_a_withdrawn_source_is_no_audience(catalog: Catalog) -> None:
    reads = catalog.segment_sources
    assert reads["mortgage_intent"] == {"behavioral"}
    segments = sorted(reads)
    assert measured_segments(segments, frozenset(), catalog) == segments
    kept = measured_segments(segments, frozenset({"behavioral"}), catalog)
    assert "mortgage_intent" not in kept
    assert kept == [s for s in segments if "behavioral" not in reads[s]]
    assert measured_segments(segments, frozenset({ANALYTICS_OFF}), catalog) == []


def test_a_view_without_analytics_reads_nothing(catalog: Catalog) -> None:
    kpis = catalog.kpis[CAMPAIGN]
    off = AnalyticsView(None, frozenset({ANALYTICS_OFF}))
    assert covariates(off, kpis, T0, catalog) == [0.0] * len(kpis)
    assert macro_audiences(off, catalog, T0) == []


def test_old_counts_rows_and_decisions_read_as_nothing_withheld(catalog: Catalog) -> None:
    """A counts row saved before ``withheld`` decodes with none; a decision logged before
    ``analytics_hidden`` keeps every segment as an audience."""
    old = msgspec.msgpack.encode({"days": {}, "audience_names": ["a"], "by_audience": {}})
    counters = ExperimentCounters(catalog)
    counters.restore([(CAMPAIGN, old)])
    state = counters.get(CAMPAIGN)
    assert isinstance(state, CampaignCounters)
    assert state.withheld == {}
    assert measured_segments(["mortgage_intent"], frozenset(), catalog) == ["mortgage_intent"]
