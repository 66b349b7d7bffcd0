"""The engine on PostgreSQL (``NEXTBEST_DATA=postgresql://...``), end to end: ingest, decide,
feedback, restart from the snapshot and from the log alone. Skipped with the reason when no
PostgreSQL server answers (``tests/postgres.py``)."""

from __future__ import annotations

from pathlib import Path

from nextbest.bootstrap import build_engine
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.settings import Settings
from nextbest.store.postgres import PostgresDecisionLog, PostgresEventLog
from nextbest.usecases import export_decisions, read_logged, replay_store
from tests.postgres import scratch_schema
from tests.support import DAY, EXAMPLE_CATALOG, T0, batch, counter_ids, feedback, identify, page

MORTGAGE = "https://bank.example/mortgages/rates"


def test_an_engine_on_postgresql_restarts_with_the_same_profiles(tmp_path: Path):
    with scratch_schema() as url:
        settings = Settings(catalog=str(EXAMPLE_CATALOG), data=url)
        clock = FixedClock(T0)
        engine = build_engine(settings, clock, new_id=counter_ids(), freeze_gc=False)
        assert isinstance(engine.event_log, PostgresEventLog)
        assert isinstance(engine.decision_log, PostgresDecisionLog)
        engine.ingest_batch(
            batch(
                identify({"age": 34, "marketing_consent": True}, user="u1", at=T0 - 20 * DAY),
                *[page(MORTGAGE, user="u1", at=T0 - d * DAY) for d in (13, 9, 6, 2, 1)],
                page("https://bank.example/cards", anon="dev-1", at=T0 - 60),
            )
        )
        decision = engine.decide(DecisionRequest(placement="home_feed"), user_id="u1")
        assert decision.items
        engine.flush()
        viewed = engine.ingest_batch(batch(feedback(decision, at=T0 - 1)))
        assert viewed.accepted == 1  # the feedback found its decision in the log
        profiles = {c: engine.profile(c) for c in ("u1", "anon:dev-1")}
        assert all(p is not None for p in profiles.values())
        engine.close()  # a snapshot in the state tables

        again = build_engine(settings, clock, new_id=counter_ids("e"), freeze_gc=False)
        assert {c: again.profile(c) for c in profiles} == profiles
        assert again.decision_log.decision(decision.decision_id) == decision
        assert again.replay().identical
        again.ingest_batch(batch(page(MORTGAGE, user="u1", at=T0)))
        after = again.profile("u1")
        again.release()  # no snapshot: the next start folds the log's tail

        third = build_engine(settings, clock, new_id=counter_ids("f"), freeze_gc=False)
        assert third.profile("u1") == after
        assert third.event_log.count() == 9
        third.close()

        # the commands that read a store at rest (nextbest replay, export) take the URL too
        assert replay_store(settings).identical
        logged = read_logged(settings.catalog, url)
        assert [d.decision_id for d in logged.decisions] == [decision.decision_id]
        assert export_decisions(settings.catalog, url, tmp_path / "d.parquet", None, None) > 0
