"""Export and erasure on the scaled roles, with real processes (issue #20, point 4): two API
workers and a fold worker (``nextbest serve --role api|fold``) on the local PostgreSQL (a
scratch schema), Redis (a database of this test's own) and NATS JetStream (a stream of its
own), each skipped with the reason when absent.

A customer with two devices and an old id aliased to them sends events through both API
workers, is decided for, asks for a callback; ``DELETE /v1/customers/{id}`` on the second
worker answers once the fold worker erased them. Then no PostgreSQL table of the schema (the
audit log's entries written before the erasure apart: docs/trust.md), no Redis key or value
and no message of the JetStream stream (read whole: the fold worker logs each event's stream
sequence and deletes those messages) holds any of their ids or traits, nor after a fold
worker restart; another customer is untouched; their events still on their way (a copy
accepted before the erasure under a new messageId, and a redelivery of an erased message)
are not folded back, and deleted from the stream; a new event sent after the erasure is
folded as new data."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest

from nextbest.bus.nats import NatsBus
from nextbest.bus.port import BusMessage, partition_of
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.store.redis import RedisState
from tests.acceptance.test_scaled_processes import (
    PARTITIONS,
    SERVER,
    Worker,
    deployment,
    wait_folded,
)
from tests.nats import delete_stream, stream_url
from tests.redis_db import flushed
from tests.support import T0, batch, identify, message, page

REDIS = "redis://127.0.0.1:6379/4"
USER = "erase-scaled-7731"
OLD_ID = "old-scaled-id-55"
DEVICES = ("dev-scaled-a1", "dev-scaled-b2")
EMAIL = "erase.scaled@example.dk"
PHONE = "+4529871299"
OTHER = "keep-scaled-4410"
OTHER_DEVICE = "keep-scaled-dev"
OTHER_EMAIL = "keep.scaled@example.dk"
SECRETS = (USER, OLD_ID, *DEVICES, EMAIL, PHONE)
MORTGAGE = "https://bank.example/mortgages/rates"


@pytest.fixture
def redis_url() -> Any:
    yield from flushed(REDIS)


def every_pg_row(url: str, skip: tuple[str, ...] = ("audit",)) -> bytes:
    """Every row of every table of the schema (but ``skip``), as text."""
    out = bytearray()
    with psycopg.connect(url, autocommit=True) as db:
        tables = [
            str(r[0])
            for r in db.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
        ]
        assert "events" in tables
        assert "decisions" in tables
        for table in tables:
            if table in skip:
                continue
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    out += (
                        bytes(value)
                        if isinstance(value, bytes | memoryview)
                        else str(value).encode()
                    )
                    out += b"\n"
    return bytes(out)


def every_redis_key_and_value(url: str) -> bytes:
    """Every key of the database and its value, whatever its type."""
    state = RedisState(url)
    client = state.client
    out = bytearray()
    try:
        for key in client.scan_iter(count=1_000):
            out += bytes(key) + b"\n"
            kind = client.type(key).decode()
            if kind == "string":
                out += client.get(key) or b""
            elif kind == "hash":
                for k, v in client.hgetall(key).items():
                    out += k + b"=" + v + b"\n"
            elif kind == "zset":
                out += b"\n".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
            elif kind in ("list",):
                out += b"\n".join(client.lrange(key, 0, -1))
            elif kind == "set":
                out += b"\n".join(client.smembers(key))
            else:
                out += client.dump(key) or b""
            out += b"\n"
    finally:
        state.close()
    return bytes(out)


def left(dump: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in dump]


def the_stream(bus_url: str) -> bytes:
    """Every message the JetStream stream holds (messageIds and bodies), read whole."""
    bus = NatsBus(bus_url, partitions=PARTITIONS)
    try:
        return b"\n".join(m.encode() + b" " + body for _, m, body in bus.messages())
    finally:
        bus.close()


def publish_late(bus_url: str, late: tuple[str, Event], retry: tuple[str, Event]) -> None:
    """Straight onto the bus, each on its key's partition: ``late``, an event accepted
    before the erasure and still in flight, and ``retry``, an erased message sent again
    under a new messageId (``again-``: past the bus's duplicate window)."""
    (late_key, late_event), (retry_key, retry_event) = late, retry
    bus = NatsBus(bus_url, partitions=PARTITIONS)
    try:
        bus.publish(
            [
                BusMessage(
                    partition_of(late_key, PARTITIONS),
                    late_event.message_id,
                    msgspec.msgpack.encode(late_event),
                ),
                BusMessage(
                    partition_of(retry_key, PARTITIONS),
                    "again-" + retry_event.message_id,
                    msgspec.msgpack.encode(retry_event),
                ),
            ]
        )
    finally:
        bus.close()


def call(worker: Worker, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{worker.url}{path}", json=body, auth=SERVER, timeout=30)


def sent(worker: Worker, *messages: dict[str, Any]) -> None:
    r = call(worker, "POST", "/v1/batch", {"batch": list(messages)})
    assert r.status_code == 200, r.text


def until(check: Callable[[], Any], what: str, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.05)
    raise AssertionError(f"waited {seconds:g} s for {what}")


def a_customer_s_life(apis: list[Worker]) -> dict[str, Any]:
    """Two customers; the one to erase with two devices and an old id, through both API
    workers. Their first message."""
    one, two = apis
    sent(one, identify({"email": OTHER_EMAIL}, at=T0 - 50, user=OTHER, anon=OTHER_DEVICE))
    sent(two, page(MORTGAGE, at=T0 - 49, user=OTHER))
    first = page("https://bank.example/loans", at=T0 - 40, anon=DEVICES[0])
    sent(one, first)
    sent(two, identify({"email": EMAIL, "phone": PHONE}, at=T0 - 39, user=OLD_ID))
    sent(one, identify({}, at=T0 - 38, user=OLD_ID, anon=DEVICES[0]))
    sent(two, message("alias", at=T0 - 30, user=USER, previousId=OLD_ID))
    sent(one, page(MORTGAGE, at=T0 - 20, anon=DEVICES[1]))
    sent(two, identify({}, at=T0 - 19, user=USER, anon=DEVICES[1]))
    sent(one, page(MORTGAGE, at=T0 - 10, user=USER))
    return first


def fold_events(fold: Worker, outcome: str) -> float:
    text = httpx.get(f"{fold.url}/metrics", auth=("dev-admin-key", ""), timeout=5).text
    name = f'nextbest_fold_events_total{{outcome="{outcome}"}} '
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name))


def test_a_customer_erased_through_a_scaled_api_worker_leaves_no_trace(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
):
    bus_url = stream_url(request.node.nodeid)
    with deployment(bus_url, redis_url, tmp_path) as env:
        data = env["NEXTBEST_DATA"]
        fold = Worker("fold", env, tmp_path / "fold.log").start()
        apis = [Worker("api", env, tmp_path / f"api{i}.log").start() for i in (1, 2)]
        try:
            first = a_customer_s_life(apis)
            wait_folded(fold, data)
            for n, who in enumerate((USER, OTHER, USER)):  # decisions on both workers
                ask = {"placement": "home_feed", "userId": who}
                r = call(apis[n % 2], "POST", "/v1/decide", ask)
                assert r.status_code == 200, r.text
            r = call(
                apis[0],
                "POST",
                "/v1/callbacks",
                {"userId": USER, "topic": "mortgage", "mode": "now", "phone": PHONE},
            )
            assert r.status_code in (200, 201), r.text
            wait_folded(fold, data)
            until(lambda: all(s.encode() in every_pg_row(data) for s in SECRETS), "logged")
            assert left(every_redis_key_and_value(redis_url)) != []
            assert sorted(left(the_stream(bus_url))) == sorted(SECRETS)
            other_before = call(apis[0], "GET", f"/v1/profiles/{OTHER}").json()["profile"]

            exported = call(apis[1], "POST", f"/v1/customers/{OLD_ID}/export")
            assert exported.status_code == 200, exported.text
            body = exported.json()
            assert body["user_ids"] == sorted([USER, OLD_ID])
            assert body["anonymous_ids"] == sorted([*DEVICES, OLD_ID])  # an alias: both
            assert body["profile"]["profile"]["traits"]["email"] == EMAIL
            assert len(body["decisions"]) == 2
            assert len(body["callbacks"]) == 1
            # the customer's seven, then one event a step of the callback's history: its
            # request, and its first step when one was taken at once (whether an advisor is
            # on shift depends on the hour the test runs; the callback says which it was)
            kinds = [e["type"] for e in body["events"]]
            assert len(kinds) - kinds.count("track") == 7
            steps = [e["properties"]["state"] for e in body["events"] if e["type"] == "track"]
            assert steps == [h["state"] for h in body["callbacks"][0]["history"]]
            assert steps[0] == "requested"
            assert len(steps) in (1, 2)

            before_erasure = time.time()
            erased = call(apis[1], "DELETE", f"/v1/customers/{USER}")
            assert erased.status_code == 200, erased.text
            report = erased.json()
            assert report["profiles"] == 1
            assert report["decisions"] == 2
            assert report["callbacks"] == 1
            assert report["events"] >= 7
            assert report["audit_subject"].startswith("erased:")

            assert left(every_pg_row(data)) == []
            assert left(every_redis_key_and_value(redis_url)) == []
            # the customer's messages were deleted before the answer; the command once logged
            until(lambda: left(the_stream(bus_url)) == [], "the stream erased")
            with psycopg.connect(data, autocommit=True) as db:  # what the audit still names
                named = db.execute(
                    "SELECT action, subject FROM audit a WHERE a::text LIKE ANY(%s) ORDER BY seq",
                    ([f"%{s}%" for s in SECRETS],),
                ).fetchall()
                erasure = db.execute(
                    "SELECT action, subject FROM audit WHERE seq = %s", (report["audit_seq"],)
                ).fetchall()
            assert [tuple(map(str, r)) for r in named] == [("customer.exported", OLD_ID)]
            assert [tuple(map(str, r)) for r in erasure] == [
                ("customer.erased", report["audit_subject"])
            ]
            assert call(apis[0], "GET", f"/v1/profiles/{USER}").status_code == 404
            again = call(apis[0], "DELETE", f"/v1/customers/{USER}")
            assert again.status_code == 404, again.text

            # still on their way: a copy accepted before the erasure under a new messageId;
            # an erased message sent again (a client's retry) after it
            (late,) = parse_batch(batch(page(MORTGAGE, at=T0 - 5, user=USER)), T0)
            late = msgspec.structs.replace(late, received_at=before_erasure - 1)
            (retry,) = parse_batch(batch(first), T0)
            retry = msgspec.structs.replace(retry, received_at=time.time())
            duplicates = fold_events(fold, "duplicate")
            publish_late(bus_url, ("u:" + USER, late), ("a:" + DEVICES[0], retry))
            wait_folded(fold, data)
            until(lambda: fold_events(fold, "erased") == 1, "the late copy dropped")

            def on_stream() -> set[str]:
                bus = NatsBus(bus_url, partitions=PARTITIONS)
                try:
                    return {m for _, m, _ in bus.messages()}
                finally:
                    bus.close()

            # deleted from the stream once logged: the late copy, the retry (a duplicate of
            # an erased message), the erasure's command
            until(
                lambda: not {late.message_id, "again-" + retry.message_id} & on_stream(),
                "the late copy and the retry deleted from the stream",
            )
            assert "erase-" + report["receipt"] not in on_stream()
            assert fold_events(fold, "duplicate") == duplicates + 1
            assert left(the_stream(bus_url)) == []
            assert left(every_pg_row(data)) == []
            assert left(every_redis_key_and_value(redis_url)) == []

            fold.stop()
            fold.start()
            wait_folded(fold, data)
            assert left(every_pg_row(data)) == []
            assert left(every_redis_key_and_value(redis_url)) == []
            assert left(the_stream(bus_url)) == []
            other = call(apis[1], "GET", f"/v1/profiles/{OTHER}")
            assert other.status_code == 200
            assert other.json()["profile"] == other_before

            sent(apis[0], page(MORTGAGE, at=T0 + 10, user=USER))  # new data: kept
            wait_folded(fold, data)
            profile = until(
                lambda: (
                    (r := call(apis[1], "GET", f"/v1/profiles/{USER}")).status_code == 200
                    and r.json()
                ),
                "the new event folded",
            )
            assert profile["profile"]["event_count"] == 1
            assert "email" not in profile["profile"]["traits"]
        finally:
            for w in [*apis, fold]:
                w.stop()
            delete_stream(bus_url, PARTITIONS)
