"""The scaled-out storage, wired by the composition root from the settings alone: the logs on
PostgreSQL (``NEXTBEST_DATA=postgresql://...``), the derived state on Redis
(``NEXTBEST_PROFILES=redis://...``). Skipped with the reason when either server is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from nextbest.bootstrap import build_engine, open_stores
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.errors import ConfigError, StoreUnavailable
from nextbest.settings import Settings
from nextbest.store.redis import RedisState
from tests.postgres import scratch_schema
from tests.support import DAY, EXAMPLE_CATALOG, T0, batch, counter_ids, identify, page

#: a database of the test Redis no other test uses: the engine writes the default namespace
REDIS = os.environ.get("NEXTBEST_TEST_REDIS_PROFILES", "redis://127.0.0.1:6379/14")
MORTGAGE = "https://bank.example/mortgages/rates"


@pytest.fixture
def redis_url() -> Iterator[str]:
    try:
        state = RedisState(REDIS, timeout=2.0)
    except StoreUnavailable as exc:
        url = urlsplit(REDIS)
        pytest.skip(f"Redis not reachable at {url.hostname}:{url.port or 6379}: {exc}")
    state.drop()
    yield REDIS
    state.drop()
    state.close()


def test_logs_on_postgresql_and_profiles_on_redis(redis_url: str):
    with scratch_schema() as url:
        settings = Settings(catalog=str(EXAMPLE_CATALOG), data=url, profiles=redis_url)
        clock = FixedClock(T0)
        engine = build_engine(settings, clock, new_id=counter_ids(), freeze_gc=False)
        assert isinstance(engine.state_store, RedisState)
        engine.ingest_batch(
            batch(
                identify({"age": 34}, user="u1", at=T0 - 20 * DAY),
                *[page(MORTGAGE, user="u1", at=T0 - d * DAY) for d in (9, 2, 1)],
            )
        )
        assert engine.decide(DecisionRequest(placement="home_feed"), user_id="u1").items
        profile = engine.profile("u1")
        engine.close()  # the snapshot goes to Redis

        state = RedisState(redis_url)
        saved = state.load_state()
        assert saved is not None
        assert saved.seq == 4
        assert any(row.kind == "profile" for row in saved.rows)
        state.close()

        again = build_engine(settings, clock, new_id=counter_ids("e"), freeze_gc=False)
        assert again.profile("u1") == profile
        again.close()

        RedisState(redis_url).drop()  # Redis lost everything: rebuilt from the log
        third = build_engine(settings, clock, new_id=counter_ids("f"), freeze_gc=False)
        assert third.profile("u1") == profile
        third.close()


def test_profiles_not_on_redis_are_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="NEXTBEST_PROFILES"):
        open_stores(str(tmp_path / "s.sqlite"), profiles="memcached://127.0.0.1:11211")


def test_an_unreachable_redis_is_unavailable_without_its_password(tmp_path: Path):
    with pytest.raises(StoreUnavailable) as caught:
        open_stores(str(tmp_path / "s.sqlite"), profiles="redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
