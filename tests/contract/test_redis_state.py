"""Redis behind the state port, beyond the contract suite: generations (a replace is
all-or-nothing for readers), point reads, errors translated without secrets, and an engine
whose state lives in Redis restarting from it, or from the log once Redis lost it."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.exceptions

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.errors import ConfigError, StateLost, StoreError, StoreUnavailable
from nextbest.store import StateRow, memory_stores, sqlite_stores, with_state
from nextbest.store.redis import RedisState
from tests.contract.conftest import REDIS_URL
from tests.support import batch, counter_ids, identify, page
from tests.unit.test_engine import play, random_traffic


def rows_of(state: RedisState) -> tuple[int, str, dict[tuple[str, str], bytes | None]]:
    got = state.load_state()
    assert got is not None
    return got.seq, got.version, {(r.kind, r.key): r.body for r in got.rows}


def keys_of(state: RedisState) -> list[bytes]:
    """The namespace's keys, each once: SCAN may return a key twice (while Redis rehashes
    its table, as other writers' keys come and go), so its answer is a set."""
    return sorted(set(state.client.scan_iter(match=f"{state.namespace}:*")))


# ---------------------------------------------------------------- keys and generations
def test_one_key_per_row_under_the_current_generation(redis_state: RedisState):
    ns = redis_state.namespace
    redis_state.save_state(
        3, "v", [StateRow("profile", "u1", b"body"), StateRow("anon", "d", b"u1")]
    )
    assert keys_of(redis_state) == [
        f"{ns}:1:anon:d".encode(),
        f"{ns}:1:profile:u1".encode(),
        f"{ns}:generation".encode(),
        f"{ns}:state".encode(),
    ]
    assert redis_state.client.get(f"{ns}:1:profile:u1") == b"body"  # the body as written
    redis_state.save_state(4, "v", [StateRow("profile", "u2", b"x")], replace=True)
    # the replaced generation is gone, not merely hidden
    assert keys_of(redis_state) == [
        f"{ns}:2:profile:u2".encode(),
        f"{ns}:generation".encode(),
        f"{ns}:state".encode(),
    ]


def test_keys_and_kinds_with_separators_read_back(redis_state: RedisState):
    rows = [
        StateRow("profile", "crm:42:x", b"a"),
        StateRow("a:kind%3A", "k", b"b"),
        StateRow("alias", "", b"c"),
        StateRow("profile", "ünï*?[x]", b"d"),
    ]
    redis_state.save_state(1, "v", rows)
    assert rows_of(redis_state)[2] == {(r.kind, r.key): r.body for r in rows}
    assert redis_state.get_rows("a:kind%3A", ["k"]) == [b"b"]


def test_a_namespace_never_reaches_into_another(redis_state: RedisState):
    odd = RedisState(REDIS_URL, redis_state.namespace + "[1]")  # a glob pattern, escaped
    plain = RedisState(REDIS_URL, redis_state.namespace + "1")
    try:
        plain.save_state(1, "v", [StateRow("profile", "u", b"kept")])
        odd.save_state(2, "v", [StateRow("profile", "u", b"other")], replace=True)
        odd.save_state(3, "v", [], replace=True)
        assert odd.drop() == 2  # its watermark and counter
        assert rows_of(plain) == (1, "v", {("profile", "u"): b"kept"})
    finally:
        odd.drop()
        plain.drop()
        odd.close()
        plain.close()
    with pytest.raises(ConfigError, match="namespace"):
        RedisState(REDIS_URL, "a:b")
    with pytest.raises(ConfigError, match="namespace"):
        RedisState(REDIS_URL, "")


def test_a_replace_failing_half_way_leaves_the_saved_state_whole(redis_state: RedisState):
    old = [StateRow("profile", f"u{i}", b"old") for i in range(10)]
    redis_state.save_state(5, "v1", old)
    new = [StateRow("profile", f"n{i}", b"new") for i in range(2_500)]
    new[2_200] = StateRow("profile", "bad", object())
    with pytest.raises(StoreError) as exc:  # after two pages of the new generation
        redis_state.save_state(9, "v2", new, replace=True)
    assert isinstance(exc.value.__cause__, redis.exceptions.DataError)
    assert rows_of(redis_state) == (5, "v1", {(r.kind, r.key): r.body for r in old})
    assert redis_state.get_rows("profile", ["u3", "n3"]) == [b"old", None]
    # the next replace sweeps what the failed one left
    redis_state.save_state(10, "v2", [StateRow("profile", "z", b"z")], replace=True)
    assert rows_of(redis_state) == (10, "v2", {("profile", "z"): b"z"})
    assert len(keys_of(redis_state)) == 3


def test_a_save_failing_changes_nothing(redis_state: RedisState):
    redis_state.save_state(5, "v1", [StateRow("profile", "u1", b"a")])
    rows = [StateRow("profile", "u1", None), StateRow("profile", "u2", object())]
    with pytest.raises(StoreError):
        redis_state.save_state(6, "v1", rows)
    assert rows_of(redis_state) == (5, "v1", {("profile", "u1"): b"a"})


def test_a_save_racing_another_writer_fails_whole(
    redis_state: RedisState, monkeypatch: pytest.MonkeyPatch
):
    """A save WATCHes the watermark: one that moved before its EXEC (a replace by another
    writer) fails the save, which then writes nothing (the engine saves its rows next time)."""
    other = RedisState(REDIS_URL, redis_state.namespace)
    redis_state.save_state(1, "v", [StateRow("profile", "u1", b"a")])
    queue = redis_state._queue_rows

    def racing(pipe: Any, generation: int, rows: Sequence[StateRow]) -> None:
        # the other writer replaces the state between this save's WATCH and its EXEC
        other.save_state(2, "v", [StateRow("profile", "o", b"o")], replace=True)
        queue(pipe, generation, rows)

    monkeypatch.setattr(redis_state, "_queue_rows", racing)
    with pytest.raises(StoreError, match="changed meanwhile"):
        redis_state.save_state(3, "v", [StateRow("profile", "u2", b"b")])
    assert rows_of(redis_state) == (2, "v", {("profile", "o"): b"o"})
    other.close()


# ---------------------------------------------------------------- point reads
def test_point_reads_follow_saves_and_replaces(redis_state: RedisState):
    reader = RedisState(REDIS_URL, redis_state.namespace)  # another worker's view
    assert reader.get_rows("profile", ["u1"]) == [None]
    assert reader.get_rows("profile", []) == []
    redis_state.save_state(1, "v", [StateRow("profile", "u1", b"a"), StateRow("anon", "d", b"u1")])
    assert reader.get_rows("profile", ["u1", "u2"]) == [b"a", None]
    assert reader.get_rows("anon", ["d"]) == [b"u1"]
    redis_state.save_state(2, "v", [StateRow("profile", "u2", b"b")], replace=True)
    # the reader still knows generation 1: the same MGET tells it the pointer moved
    assert reader.get_rows("profile", ["u1", "u2"]) == [None, b"b"]
    redis_state.drop()
    assert reader.get_rows("profile", ["u2"]) == [None]
    reader.close()


def test_write_marks_rise_never_fall_expire_and_ride_on_point_reads(redis_state: RedisState):
    other = RedisState(REDIS_URL, redis_state.namespace)  # another API worker
    assert other.read_rows([("profile", "u1")], ["u:u1", "a:d1"]) == [None, None, None]
    redis_state.mark_written({"u:u1": 7, "a:d1": 5})
    other.mark_written({"u:u1": 6, "a:d1": 9})  # a slower worker never lowers a mark
    assert other.read_rows([], ["u:u1", "a:d1"]) == [b"7", b"9"]
    redis_state.save_state(3, "v", [StateRow("profile", "u1", b"a")])
    assert other.read_rows([("profile", "u1")], ["a:d1"]) == [b"a", b"9"]
    redis_state.save_state(4, "v", [StateRow("profile", "u1", b"b")], replace=True)
    assert other.read_rows([("profile", "u1")], ["u:u1"]) == [b"b", b"7"]  # sweep spares them
    ttl = redis_state.client.pttl(f"{redis_state.namespace}:written:u:u1")
    assert 0 < ttl <= 30_000
    redis_state.mark_written({"u:u2": 1}, ttl=0.05)
    deadline = time.monotonic() + 5
    while other.read_rows([], ["u:u2"]) != [None]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    other.close()


def test_changes_saved_onto_a_vanished_state_are_refused_whole(redis_state: RedisState):
    redis_state.save_state(
        1, "v", [StateRow("profile", "u1", b"a"), StateRow("profile", "u2", b"b")]
    )
    RedisState(REDIS_URL, redis_state.namespace).drop()  # lost under its writer
    with pytest.raises(StateLost):
        redis_state.save_state(2, "v", [StateRow("profile", "u1", b"c")])
    assert keys_of(redis_state) == []  # not a state of one profile out of two
    redis_state.save_state(
        2, "v", [StateRow("profile", "u1", b"c"), StateRow("profile", "u2", b"b")], replace=True
    )
    assert rows_of(redis_state)[2] == {("profile", "u1"): b"c", ("profile", "u2"): b"b"}


def test_memory_usage_of_a_row(redis_state: RedisState):
    body = b"p" * 1_000
    redis_state.save_state(1, "v", [StateRow("profile", "u1", body)])
    used = redis_state.memory_usage("profile", "u1")
    assert used is not None
    assert used >= len(body)
    assert redis_state.memory_usage("profile", "nobody") is None


# ---------------------------------------------------------------- errors
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_unavailable_and_keeps_the_password():
    port = free_port()  # nothing listens there now
    with pytest.raises(StoreUnavailable) as exc:
        RedisState(f"redis://nextbest:hunter2@127.0.0.1:{port}/0", "ns")
    assert f"127.0.0.1:{port}" in str(exc.value)
    assert "hunter2" not in str(exc.value)
    assert isinstance(exc.value.__cause__, redis.exceptions.ConnectionError)


def test_a_server_that_never_answers_times_out_as_unavailable():
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with pytest.raises(StoreUnavailable) as exc:
            RedisState(f"redis://:hunter2@127.0.0.1:{port}/0", "ns", timeout=0.2)
    assert f"127.0.0.1:{port}" in str(exc.value)
    assert "hunter2" not in str(exc.value)
    assert isinstance(exc.value.__cause__, redis.exceptions.TimeoutError)


def test_a_bad_url_is_a_config_error_without_its_password():
    with pytest.raises(ConfigError) as exc:
        RedisState("http://user:hunter2@127.0.0.1:6379/0", "ns")
    assert "hunter2" not in str(exc.value)
    assert "***" in str(exc.value)


def test_a_foreign_watermark_is_a_store_error(redis_state: RedisState):
    redis_state.client.set(f"{redis_state.namespace}:state", b"not ours")
    with pytest.raises(StoreError, match="watermark"):
        redis_state.load_state()


# ---------------------------------------------------------------- an engine on Redis
def profiles_of(engine: Engine) -> dict[str, bytes]:
    return {p.customer_id: msgspec.msgpack.encode(p) for p in engine.profiles()}


def test_an_engine_restarts_from_redis_and_rebuilds_when_redis_lost_it(
    redis_state: RedisState, catalog: Catalog, clock: FixedClock, tmp_path: Path
):
    path, ns = tmp_path / "log.sqlite", redis_state.namespace

    def engine_on_redis(prefix: str) -> Engine:
        state = RedisState(REDIS_URL, ns)
        stores = with_state(sqlite_stores(path), state, state.close)
        return Engine(catalog, stores, clock, new_id=counter_ids(prefix))

    first = engine_on_redis("a")
    play(first, random_traffic(seed=17))
    first.snapshot()
    first.ingest_batch(batch(page("https://bank.example/cards", user="u1")))  # a log tail
    live = profiles_of(first)
    first.close()  # saves the tail's changes into the same generation
    saved = redis_state.load_state()
    assert saved is not None
    log = sqlite_stores(path)
    assert saved.seq == log.events.last_seq()
    log.close()
    body = redis_state.get_rows("profile", ["u1"])[0]
    assert body == live["u1"]  # the engine's own msgpack, one key per customer

    # the profiles come from Redis alone: an engine with an empty log restores them all
    state = RedisState(REDIS_URL, ns)
    alone = Engine(catalog, with_state(memory_stores(), state, state.close), clock)
    assert profiles_of(alone) == live
    alone.release()

    second = engine_on_redis("b")
    assert profiles_of(second) == live
    assert second.replay().identical
    second.release()

    # Redis lost everything (flushed): a state store is a cache, the log is the truth
    assert redis_state.drop() > 0
    assert redis_state.load_state() is None
    third = engine_on_redis("c")
    assert profiles_of(third) == live
    third.ingest_batch(batch(identify({"age": 41}, user="u1")))
    live = profiles_of(third)
    third.close()  # saved whole again, into a fresh generation
    assert redis_state.get_rows("profile", ["u1"]) == [live["u1"]]
    fourth = engine_on_redis("d")
    assert profiles_of(fourth) == live
    fourth.release()
