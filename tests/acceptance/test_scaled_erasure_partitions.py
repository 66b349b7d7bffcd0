"""Erasure with several fold workers, as real processes (issue #20, point 4): two partitioned
fold workers (``serve --role fold --partitions``, each half of the bus's partitions; the one
owning partition 0 runs the model writer) and two API workers on the local PostgreSQL (a
scratch schema), Redis (a database of this test's own) and NATS JetStream (a stream of its
own), each skipped with the reason when absent.

The customer's ids hash to partitions of both workers: a device and an old userId homed on
the first worker's, the userId on the second's. They browse anonymously, log in, are aliased,
decided for and view an offer (a learning record on the learning feed). ``DELETE
/v1/customers/{id}`` answers once every partition and the model writer erased their part.
Then no PostgreSQL table (the audit log apart), no Redis key or value and no message left in
the JetStream stream (read whole) holds an id or a trait, nor after a fold worker restart; a
copy of their event accepted before the erasure and published to the old id's partition (the
other worker's) is dropped and deleted from the stream; a new event after the erasure is
folded as new data; another customer is untouched."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nextbest.bus.port import partition_of
from nextbest.events import parse_batch
from tests.acceptance.test_scaled_erasure_processes import (
    call,
    every_pg_row,
    every_redis_key_and_value,
    fold_events,
    publish_late,
    sent,
    the_stream,
    until,
)
from tests.acceptance.test_scaled_partitions_processes import (
    fold_worker,
    homed,
    wait_all_folded,
)
from tests.acceptance.test_scaled_processes import PARTITIONS, Worker, deployment
from tests.nats import delete_stream, stream_url
from tests.redis_db import flushed
from tests.support import T0, batch, identify, message, page, track

REDIS = "redis://127.0.0.1:6379/1"
MORTGAGE = "https://bank.example/mortgages/rates"
#: the customer: the userId homed on the second worker's partitions, a device and an old
#: userId on the first's
USER = homed("erase-part-user-", 1)
DEVICE = homed("erase-part-dev-", 0, anonymous=True)
OLD_ID = homed("erase-part-old-", 0)
EMAIL = "erase.partitions@example.dk"
PHONE = "+4529870011"
OTHER = homed("keep-part-user-", 0)
OTHER_EMAIL = "keep.partitions@example.dk"
SECRETS = (USER, DEVICE, OLD_ID, EMAIL, PHONE)


@pytest.fixture
def redis_url() -> Any:
    yield from flushed(REDIS)


def left(dump: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in dump]


def a_customer_s_life(apis: list[Worker]) -> dict[str, Any]:
    """The customer across both workers' partitions, and another one; the message that
    logged them in."""
    one, two = apis
    sent(one, identify({"email": OTHER_EMAIL}, at=T0 - 60, user=OTHER))
    sent(two, page(MORTGAGE, at=T0 - 59, user=OTHER))
    sent(one, page(MORTGAGE, at=T0 - 50, anon=DEVICE), page(MORTGAGE, at=T0 - 49, anon=DEVICE))
    login = identify({"email": EMAIL, "phone": PHONE}, at=T0 - 40, user=USER, anon=DEVICE)
    sent(two, login)
    sent(one, page(MORTGAGE, at=T0 - 35, user=OLD_ID))
    sent(two, message("alias", at=T0 - 30, user=USER, previousId=OLD_ID))
    sent(one, page(MORTGAGE, at=T0 - 20, user=USER), page(MORTGAGE, at=T0 - 19, anon=DEVICE))
    return login


def test_an_erasure_across_two_fold_workers_leaves_no_trace_in_stores_or_stream(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
):
    assert partition_of("u:" + USER, PARTITIONS) in (2, 3)
    assert {partition_of("a:" + DEVICE, PARTITIONS), partition_of("u:" + OLD_ID, PARTITIONS)} <= {
        0,
        1,
    }
    bus_url = stream_url(request.node.nodeid)
    with deployment(bus_url, redis_url, tmp_path) as env:
        data = env["NEXTBEST_DATA"]
        folds = [fold_worker(env, h, tmp_path).start() for h in (0, 1)]
        apis = [Worker("api", env, tmp_path / f"api{i}.log").start() for i in (1, 2)]
        try:
            login = a_customer_s_life(apis)
            wait_all_folded(folds)
            r = call(apis[0], "GET", f"/v1/profiles/{USER}")
            assert r.status_code == 200, r.text
            assert r.json()["profile"]["event_count"] == 7  # one profile: every id's events
            decided = call(
                apis[1], "POST", "/v1/decide", {"placement": "home_feed", "userId": USER}
            )
            assert decided.status_code == 200, decided.text
            item = decided.json()["items"][0]
            props = {
                "decision_id": decided.json()["decision_id"],
                "promotion_id": item["offer_id"],
                "position": item["position"],
            }
            time.sleep(0.3)  # the decision written (the flush tick) before its feedback
            sent(apis[0], track("Promotion Viewed", props, user=USER, at=T0 - 10))
            wait_all_folded(folds)
            until(lambda: all(s.encode() in every_pg_row(data) for s in SECRETS), "logged")
            assert left(every_redis_key_and_value(redis_url)) != []
            assert sorted(left(the_stream(bus_url))) == sorted(SECRETS)
            other_before = call(apis[0], "GET", f"/v1/profiles/{OTHER}").json()["profile"]

            before_erasure = time.time()
            erased = call(apis[1], "DELETE", f"/v1/customers/{USER}")
            assert erased.status_code == 200, erased.text
            report = erased.json()
            assert report["profiles"] >= 1
            assert report["decisions"] == 1
            assert report["events"] == 8
            assert report["audit_subject"].startswith("erased:")
            assert sorted(report["user_ids"]) == sorted([USER, OLD_ID])

            assert left(every_pg_row(data)) == []
            assert left(every_redis_key_and_value(redis_url)) == []
            until(lambda: left(the_stream(bus_url)) == [], "the stream erased")
            assert call(apis[0], "GET", f"/v1/profiles/{USER}").status_code == 404
            assert call(apis[1], "GET", f"/v1/profiles/{OLD_ID}").status_code == 404

            # on its way: a copy accepted before the erasure, on the old id's partition (the
            # first worker's); an erased message sent again after it (a duplicate)
            (late,) = parse_batch(batch(page(MORTGAGE, at=T0 - 5, user=OLD_ID)), T0)
            late = msgspec.structs.replace(late, received_at=before_erasure - 1)
            (retry,) = parse_batch(batch(login), T0)
            retry = msgspec.structs.replace(retry, received_at=time.time())
            duplicates = fold_events(folds[1], "duplicate")
            publish_late(bus_url, ("u:" + OLD_ID, late), ("u:" + USER, retry))
            wait_all_folded(folds)
            until(lambda: fold_events(folds[0], "erased") == 1, "the late copy dropped")
            until(lambda: fold_events(folds[1], "duplicate") == duplicates + 1, "the retry")
            assert left(every_pg_row(data)) == []
            assert left(every_redis_key_and_value(redis_url)) == []
            # both deleted from the stream: the late copy by its tombstone, the retry as a
            # duplicate (the log keeps erased messageIds)
            until(lambda: left(the_stream(bus_url)) == [], "the stream erased again")

            for f in folds:
                f.stop()
                f.start()
            wait_all_folded(folds)
            assert left(every_pg_row(data)) == []
            assert left(every_redis_key_and_value(redis_url)) == []
            other = call(apis[1], "GET", f"/v1/profiles/{OTHER}")
            assert other.status_code == 200
            assert other.json()["profile"] == other_before

            sent(apis[0], page(MORTGAGE, at=T0 + 10, user=USER))  # new data: kept
            wait_all_folded(folds)
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
            for w in [*apis, *folds]:
                w.stop()
            delete_stream(bus_url, PARTITIONS)
