"""Expert call-backs on scaled API workers (issue #19 on the scaled topology): two API
workers and a fold worker (``nextbest serve --role api|fold``) on the local PostgreSQL, Redis
and NATS JetStream (a schema, a Redis database and streams of this module's own), skipped with
the reason when one is absent.

A callback asked for on one worker is accepted with the advisor's token on the other, and its
steps reach the customer's profile through the bus and the fold worker; customers racing for
one slot through both workers book it once; one customer asking about one topic through both
workers at once gets one callback; a lapsed offer, and an accepted call that never started,
are passed on to a colleague once, by the one sweeper holding the lease; the lease itself
gives one holder at a time.

The advisors work around the clock in UTC here (the workers run on the wall clock)."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from nextbest.api.advisor_token import mint_advisor_token
from nextbest.store.lease_postgres import PostgresLease
from nextbest.store.postgres import PostgresDatabase
from tests.acceptance.test_scaled_processes import Worker, wait_folded
from tests.nats import delete_stream, stream_url
from tests.postgres import scratch_schema
from tests.redis_db import flushed
from tests.support import ROOT, batch, identify, page

REDIS = os.environ.get("NEXTBEST_TEST_REDIS_CALLBACKS", "redis://127.0.0.1:6379/8")
SERVER = ("dev-server-key", "")
ADVISOR_SECRET = "dev-advisor-token-secret"
PHONE = "+4512345678"
PARTITIONS = 2
MORTGAGE = "https://bank.example/mortgages/rates"

ALL_WEEK = "\n".join(
    f'        {d}: ["00:00-24:00"]' for d in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
)


def advisor(who: str, name: str, topic: str, level: int) -> str:
    return f"""  - id: {who}
    name: {name}
    photo_url: /img/advisors/{who}.jpg
    expertise:
      - {{topic: {topic}, level: {level}}}
    languages: [da, en]
    team: Test
    branch: Test
    working_hours:
      timezone: UTC
      weekly:
{ALL_WEEK}
    max_concurrent: 1
    extension: "2{level}00"
"""


ADVISORS = (
    "advisors:\n"
    + advisor("anna_holm", "Anna Holm", "mortgage", 5)
    + advisor("sofie_lund", "Sofie Lund", "pension", 5)
    + advisor("mikkel_berg", "Mikkel Berg", "car_loan", 5)
    + advisor("lars_nielsen", "Lars Nielsen", "car_loan", 4)
    + """
callbacks:
  accept_timeout_seconds: 5
  connect_within_seconds: 8
  now_sla_seconds: 600
  slot_minutes: 30
  horizon_days: 14
  lead_minutes: 15
  card_slots: 3
"""
)


def adv(who: str) -> tuple[str, str]:
    return mint_advisor_token(ADVISOR_SECRET, who, time.time() + 3_600), ""


class Deployment:
    def __init__(self, fold: Worker, apis: list[Worker], data: str) -> None:
        self.fold, self.apis, self.data = fold, apis, data

    def call(
        self, n: int, method: str, path: str, body: Any = None, auth: tuple[str, str] = SERVER
    ) -> httpx.Response:
        return httpx.request(method, f"{self.apis[n].url}{path}", json=body, auth=auth, timeout=30)

    def ask(self, n: int, user: str, topic: str, **fields: Any) -> httpx.Response:
        body = {"userId": user, "topic": topic, "mode": "now", "phone": PHONE, **fields}
        return self.call(n, "POST", "/v1/callbacks", body)

    def present(self, n: int, *advisors: str) -> None:
        for a in advisors:
            r = self.call(n, "PUT", f"/v1/advisors/{a}/presence", {"presence": "available"}, adv(a))
            assert r.status_code == 200, r.text

    def get(self, n: int, callback_id: str) -> dict[str, Any]:
        r = self.call(n, "GET", f"/v1/callbacks/{callback_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def until(check: Callable[[], Any], what: str, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"waited {seconds:g} s for {what}")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    yield from flushed(REDIS)


@pytest.fixture(scope="module")
def deploy(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("scaled-callbacks")
    catalog = tmp / "catalog"
    shutil.copytree(ROOT / "examples" / "bank", catalog)
    (catalog / "advisors.yaml").write_text(ADVISORS)
    bus = stream_url(f"{__name__}::scaled-callbacks")
    with scratch_schema() as data:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "NEXTBEST_CATALOG": str(catalog),
            "NEXTBEST_DATA": data,
            "NEXTBEST_PROFILES": redis_url,
            "NEXTBEST_BUS": bus,
            "NEXTBEST_BUS_PARTITIONS": str(PARTITIONS),
            "NEXTBEST_CALLBACK_SWEEP_SECONDS": "0.2",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        fold = Worker("fold", env, tmp / "fold.log").start()
        apis: list[Worker] = []
        try:
            apis.extend(Worker("api", env, tmp / f"api{i}.log").start() for i in (1, 2))
            yield Deployment(fold, apis, data)
        finally:
            for w in [*apis, fold]:
                w.stop()
            delete_stream(bus, PARTITIONS)


def logged(data: str, prefix: str) -> dict[str, int]:
    """messageId -> how many times it is in the event log, for ids starting with ``prefix``."""
    with psycopg.connect(data, autocommit=True) as db:
        rows = db.execute(
            "SELECT message_id, count(*) FROM events WHERE message_id LIKE %s GROUP BY message_id",
            (prefix + "%",),
        ).fetchall()
    return {str(m): int(n) for m, n in rows}


def test_asked_on_one_worker_accepted_on_the_other_folded_into_the_profile(
    deploy: Deployment,
):
    deploy.present(1, "anna_holm")  # worker 2 records it; worker 1 reads it from the store
    asked = deploy.ask(0, "cb-u1", "mortgage")
    assert asked.status_code == 200, asked.text
    cid = asked.json()["id"]
    # offered at once (worker 1's board already had Anna) or by the sweeper soon after
    offered = until(
        lambda: (c := deploy.get(1, cid))["state"] == "offered" and c, "the offer to Anna"
    )
    assert offered["advisor_id"] == "anna_holm"
    queue = deploy.call(1, "GET", "/v1/advisors/anna_holm/queue", auth=adv("anna_holm"))
    assert [c["id"] for c in queue.json()["callbacks"]] == [cid]
    r = deploy.call(1, "POST", f"/v1/callbacks/{cid}/accept", {}, adv("anna_holm"))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "accepted"
    r = deploy.call(0, "POST", f"/v1/callbacks/{cid}/complete", {}, adv("anna_holm"))
    assert r.json()["state"] == "completed", r.text
    done = deploy.get(0, cid)
    steps = len(done["history"])
    wait_folded(deploy.fold, deploy.data)
    # every step in the event log once, through the bus and the fold worker
    ids = logged(deploy.data, f"callback-{cid}-")
    assert ids == {f"callback-{cid}-{n}": 1 for n in range(1, steps + 1)}
    profile = deploy.call(1, "GET", "/v1/profiles/cb-u1").json()["profile"]
    names = [e[2] for e in profile["recent"]]  # (timestamp, type, name, topics)
    for name in ("Callback Requested", "Callback Assigned", "Callback Accepted"):
        assert name in names
    assert names[-1] == "Callback Completed"
    # the click-to-call request waits in the shared outbox (no telephony webhook here)
    with psycopg.connect(deploy.data, autocommit=True) as db:
        keys = [k for (k,) in db.execute("SELECT key FROM outbox").fetchall()]
    assert [k for k in keys if k.startswith(f"callback-{cid}-accepted-")] != []
    # the advisor's view of the customer, served by either worker
    view = deploy.call(0, "GET", "/v1/advisor/customers/cb-u1", auth=adv("anna_holm"))
    assert view.status_code == 200, view.text
    assert [c["id"] for c in view.json()["callbacks"]] == [cid]


def test_customers_racing_for_one_slot_through_both_workers_book_it_once(deploy: Deployment):
    """Sofie, the one pension expert, holds one place a slot: of 16 customers picking the same
    slot through both workers at once, one books it; the others get 409 slot_taken."""
    tomorrow = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    slot = (tomorrow + timedelta(days=1)).isoformat()

    def pick(n: int) -> httpx.Response:
        return deploy.ask(n % 2, f"racer-{n}", "pension", mode="at", time=slot)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(pick, range(16)))
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: 1, 409: 15}, [r.text for r in answers if r.status_code != 409]
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"slot_taken"}, [
        r.text for r in answers
    ]
    (won,) = [r.json() for r in answers if r.status_code == 200]
    assert won["advisor_id"] == "sofie_lund"
    with psycopg.connect(deploy.data, autocommit=True) as db:
        (booked,) = db.execute(
            "SELECT count(*) FROM callbacks WHERE advisor_id = 'sofie_lund' "
            "AND scheduled_for IS NOT NULL"
        ).fetchone() or (0,)
    assert booked == 1


def test_the_sweeper_passes_a_lapsed_offer_on_once(deploy: Deployment):
    """Mikkel (level 5) lets the offer lapse (5 s): the one sweeper holding the lease passes
    it to Lars once; the step is in the event log once."""
    deploy.present(0, "mikkel_berg", "lars_nielsen")
    time.sleep(0.7)  # both workers read the board again (every 0.5 s)
    asked = deploy.ask(1, "cb-u3", "car_loan")
    assert asked.status_code == 200, asked.text
    cid = asked.json()["id"]
    assert asked.json()["advisor_id"] == "mikkel_berg"
    moved = until(
        lambda: (c := deploy.get(0, cid))["advisor_id"] == "lars_nielsen" and c,
        "the offer passed on to Lars",
    )
    states = [(t["state"], t.get("advisor_id")) for t in moved["history"]]
    assert states == [
        ("requested", None),
        ("offered", "mikkel_berg"),
        ("requested", "mikkel_berg"),
        ("offered", "lars_nielsen"),
    ], states
    assert moved["history"][2]["reason"] == "Mikkel Berg did not accept within 5 s"
    r = deploy.call(0, "POST", f"/v1/callbacks/{cid}/cancel", {})
    assert r.json()["state"] == "cancelled", r.text
    wait_folded(deploy.fold, deploy.data)
    ids = logged(deploy.data, f"callback-{cid}-")
    assert ids == {f"callback-{cid}-{n}": 1 for n in range(1, 6)}
    with psycopg.connect(deploy.data, autocommit=True) as db:
        holders = db.execute("SELECT holder FROM leases WHERE name = 'callback-sweeper'")
        assert len(holders.fetchall()) == 1  # one sweeper holds it


def test_one_customer_asking_through_both_workers_at_once_gets_one_callback(
    deploy: Deployment,
):
    """16 requests of one customer about one topic, half on each worker, at once: the store's
    one-in-flight rule (a unique index) takes one; the others are 409 limit_exceeded naming
    it."""
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: deploy.ask(n % 2, "cb-twice", "pension"), range(16)))
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: 1, 409: 15}, [r.text for r in answers]
    (made,) = [r.json()["id"] for r in answers if r.status_code == 200]
    refused = [r.json() for r in answers if r.status_code == 409]
    assert {r["code"] for r in refused} == {"limit_exceeded"}
    assert all(made in r["message"] for r in refused), refused
    with psycopg.connect(deploy.data, autocommit=True) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM callbacks WHERE customer = 'cb-twice'"
        ).fetchone() or (0,)
    assert count == 1
    r = deploy.call(1, "POST", f"/v1/callbacks/{made}/cancel", {})
    assert r.json()["state"] == "cancelled", r.text
    again = deploy.ask(0, "cb-twice", "pension")  # once it is final, the customer may ask again
    assert again.status_code == 200, again.text
    deploy.call(0, "POST", f"/v1/callbacks/{again.json()['id']}/cancel", {})


def test_an_accepted_call_that_never_starts_goes_to_a_colleague_once(deploy: Deployment):
    """Mikkel accepts, the telephony never reports the call started (8 s): the one sweeper
    takes it back from him (Callback Not Connected) and offers it to Lars, once."""
    deploy.present(0, "mikkel_berg", "lars_nielsen")
    time.sleep(0.7)  # both workers read the board again (every 0.5 s)
    asked = deploy.ask(0, "cb-u4", "car_loan")
    assert asked.status_code == 200, asked.text
    cid = asked.json()["id"]
    assert asked.json()["advisor_id"] == "mikkel_berg"
    r = deploy.call(1, "POST", f"/v1/callbacks/{cid}/accept", {}, adv("mikkel_berg"))
    assert r.json()["state"] == "accepted", r.text
    moved = until(
        lambda: (c := deploy.get(1, cid))["advisor_id"] == "lars_nielsen" and c,
        "the call passed on to Lars",
        30.0,
    )
    states = [(t["state"], t.get("advisor_id")) for t in moved["history"]]
    assert states == [
        ("requested", None),
        ("offered", "mikkel_berg"),
        ("accepted", "mikkel_berg"),
        ("requested", "mikkel_berg"),
        ("offered", "lars_nielsen"),
    ], states
    assert moved["history"][3]["not_connected"] is True
    r = deploy.call(0, "POST", f"/v1/callbacks/{cid}/cancel", {})
    assert r.json()["state"] == "cancelled", r.text
    wait_folded(deploy.fold, deploy.data)
    ids = logged(deploy.data, f"callback-{cid}-")
    assert ids == {f"callback-{cid}-{n}": 1 for n in range(1, 7)}


def test_the_lease_has_one_holder_at_a_time():
    with scratch_schema() as data:
        dbs = [PostgresDatabase(data) for _ in range(2)]
        try:
            a, b = (
                PostgresLease(db, "sweeper", who, 0.5) for db, who in zip(dbs, "ab", strict=True)
            )
            assert a.hold()
            assert not b.hold()
            assert a.hold()  # renewed
            assert a.holder_now() == b.holder_now() == "a"
            a.release()
            assert b.hold()
            assert not a.hold()
            # b dies without handing it back: a takes it once it ran out
            until(a.hold, "the lease to run out", 5.0)
            assert not b.hold()
            with ThreadPoolExecutor(2) as pool:
                a.release()
                got = list(pool.map(lambda lease: lease.hold(), [a, b]))
            assert sorted(got) == [False, True]
        finally:
            for db in dbs:
                db.close()


def test_the_advisor_placement_on_a_worker_decides_on_the_shared_board(deploy: Deployment):
    """A customer reading mortgage pages is shown Anna with "call me now" by the worker that
    did not hear her presence report (its board read from the store)."""
    now = time.time()
    adult = identify({"birthday": "1985-04-02"}, user="cb-card", at=now - 600)
    views = [page(MORTGAGE, user="cb-card", at=now - 60 * i) for i in range(5)]
    r = httpx.post(
        f"{deploy.apis[0].url}/v1/batch", content=batch(adult, *views), auth=SERVER, timeout=10
    )
    assert r.status_code == 200, r.text
    deploy.present(1, "anna_holm")
    time.sleep(0.7)  # worker 1 reads the board again (every 0.5 s)
    r = deploy.call(0, "POST", "/v1/decide", {"placement": "topic_advisor", "userId": "cb-card"})
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    card = item["advisor"]
    assert card["advisor"]["id"] == "anna_holm"
    assert (card["actions"], card["available"], card["topic"]) == (
        ["now", "later", "at"],
        True,
        "mortgage",
    )
