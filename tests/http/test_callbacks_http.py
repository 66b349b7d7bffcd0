"""Expert call-backs over HTTP, on real uvicorn servers with real SQLite files: the whole life
(an advisor card, "call me now", a decline, a colleague's accept, a signed click-to-call to a
local telephony receiver, the call connected and completed, the KPI counted), the timers on
an injected clock driven by the server's own sweeper, "pick a time" raced by parallel
clients, a restart with callbacks in flight, and who may see and do what.

The engines run on a FixedClock at T0 (Wednesday 12:00 in Copenhagen: the advisors are on
shift); a test moves it. Waiting for the sweeper or the sender is polling with a deadline,
never a timing assertion."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from nextbest.api.advisor_token import mint_advisor_token
from nextbest.api.customer_token import mint_customer_token
from nextbest.bootstrap import build_background
from nextbest.channels import verify
from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.settings import Webhook
from nextbest.store import OutboxState
from tests.conftest import LiveServer, make_settings, serving
from tests.support import (
    ADMIN_KEY,
    BROWSER_KEY,
    SERVER_KEY,
    T0,
    TOKEN_SECRET,
    WRITE_KEY,
    batch,
    edited_catalog,
    feedback,
    identify,
    page,
)
from tests.unit.test_callback_desk import KPI_EDIT, THU_0900
from tests.webhook_receiver import SECRET, receiving

ADVISOR_SECRET = "test-advisor-token-secret"
PHONE = "+4512345678"
JSON = {"Content-Type": "application/json"}


def adv(advisor: str, expires: float = T0 + 3_600, secret: str = ADVISOR_SECRET) -> tuple[str, str]:
    """An advisor's credentials (their token as the key)."""
    return mint_advisor_token(secret, advisor, expires), ""


def cust(user: str) -> dict[str, str]:
    return {"X-Customer-Token": mint_customer_token(TOKEN_SECRET, user, T0 + 3_600)}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def settings_for(tmp_path: Path, data: Path | None = None, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "advisor_token_secret": ADVISOR_SECRET,
        "callback_sweep_seconds": 0.02,
    }
    if data is not None:
        values["data"] = str(data)
    return make_settings(tmp_path, **values, **overrides)


def loops(settings: Any) -> Callable[[Engine], Any]:
    """What ``nextbest serve`` runs beside the server: the sweeper (every 20 ms here) and the
    outbox sender when a webhook is configured."""
    return lambda engine: build_background(settings, engine)


@pytest.fixture
def start(tmp_path: Path, clock: FixedClock) -> Iterator[Callable[..., LiveServer]]:
    """Start a server on ``clock`` with the advisor token secret; ``sweeping``: with the
    loops ``serve`` runs."""
    with contextlib.ExitStack() as stack:

        def run(*, sweeping: bool = False, **overrides: Any) -> LiveServer:
            settings = settings_for(tmp_path, **overrides)
            background = loops(settings) if sweeping else None
            return stack.enter_context(serving(settings, clock=clock, background=background))

        yield run


def call(
    http: httpx.Client,
    method: str,
    path: str,
    auth: tuple[str, str] = (SERVER_KEY, ""),
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else None
    return http.request(
        method, path, auth=auth, content=content, headers={**JSON, **(headers or {})}
    )


def ask(
    http: httpx.Client,
    user: str | None = "u1",
    *,
    auth: tuple[str, str] = (SERVER_KEY, ""),
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    body = {"topic": "mortgage", "mode": "now", "phone": PHONE, **fields}
    if user is not None:
        body.setdefault("userId", user)
    return call(http, "POST", "/v1/callbacks", auth, body, headers)


def until(check: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"waited {seconds:g} s for {what}")


def present(http: httpx.Client, *advisors: str, presence: str = "available") -> None:
    for a in advisors:
        r = call(http, "PUT", f"/v1/advisors/{a}/presence", adv(a), {"presence": presence})
        assert r.status_code == 200, r.text
        assert r.json()["presence"] == presence


def logged(engine: Engine, user: str) -> list[str]:
    return [s.event.name or "" for s in engine.event_log.scan(0) if s.event.user_id == user]


# ------------------------------------------------------------------------------ the life
def test_the_whole_life_of_a_call_me_now(start: Callable[..., LiveServer], tmp_path: Path):
    (tmp_path / "catalog").mkdir()
    catalog = edited_catalog(tmp_path / "catalog", KPI_EDIT)
    with receiving(time.time) as telephony:
        hook = Webhook(name="telephony", url=telephony.url, secret=SECRET, timeout=5.0)
        server = start(sweeping=True, catalog=str(catalog), webhooks=(hook,))
        engine = server.engine
        with httpx.Client(base_url=server.url, timeout=10) as http:
            # a customer reads mortgage pages; the advisors come in
            views = [
                page("https://bank.example/mortgages/r", user="u-life", at=T0 - 60 * i)
                for i in range(5)
            ]
            adult = identify({"birthday": "1985-04-02"}, user="u-life", at=T0 - 600)
            r = http.post("/v1/batch", content=batch(adult, *views), auth=(WRITE_KEY, ""))
            assert r.status_code == 200, r.text
            # exposed to mortgage_q4, whose KPI here is a completed mortgage call
            feed = call(
                http, "POST", "/v1/decide", body={"placement": "home_feed", "userId": "u-life"}
            )
            decided = feed.json()
            if "mortgage_advice" in [i["offer_id"] for i in decided["items"]]:
                seen = engine.decision(decided["decision_id"])
                assert seen is not None
                r = http.post(
                    "/v1/batch",
                    content=batch(feedback(seen, offer_id="mortgage_advice", user="u-life")),
                    auth=(WRITE_KEY, ""),
                )
                assert r.status_code == 200, r.text
            present(http, "anna_holm", "mikkel_berg")
            # the page asks what to show in the advisor placement: Anna, "call me now"
            r = call(
                http,
                "POST",
                "/v1/decide",
                (BROWSER_KEY, ""),
                {"placement": "topic_advisor", "userId": "u-life"},
                cust("u-life"),
            )
            assert r.status_code == 200, r.text
            (item,) = r.json()["items"]
            card = item["advisor"]
            assert card["advisor"]["name"] == "Anna Holm"
            assert card["advisor"]["photo_url"] == "/img/advisors/anna_holm.jpg"
            assert (card["actions"], card["available"], card["topic"]) == (
                ["now", "later", "at"],
                True,
                "mortgage",
            )
            assert card["reason"] == "viewed mortgage pages 5 times in 14 days"
            # "call me now", from the page, for its own customer
            r = ask(
                http,
                "u-life",
                auth=(BROWSER_KEY, ""),
                headers=cust("u-life"),
                decision_id=r.json()["decision_id"],
                language="da",
            )
            assert r.status_code == 200, r.text
            mine = r.json()
            assert set(mine) == {
                "id",
                "topic",
                "mode",
                "state",
                "phone",
                "requested_at",
                "scheduled_for",
                "scheduled_label",
                "advisor",
                "notice",
            }
            assert (mine["state"], mine["advisor"]["id"]) == ("offered", "anna_holm")
            cb = mine["id"]
            # Anna sees it in her queue, declines: Mikkel, the next mortgage expert
            queue = call(http, "GET", "/v1/advisors/anna_holm/queue", adv("anna_holm")).json()
            assert [c["id"] for c in queue["callbacks"]] == [cb]
            r = call(http, "POST", f"/v1/callbacks/{cb}/decline", adv("anna_holm"))
            assert (r.status_code, r.json()["advisor_id"]) == (200, "mikkel_berg"), r.text
            assert (
                call(http, "POST", f"/v1/callbacks/{cb}/accept", adv("anna_holm")).status_code
                == 404
            )
            r = call(http, "POST", f"/v1/callbacks/{cb}/accept", adv("mikkel_berg"))
            assert (r.status_code, r.json()["state"]) == (200, "accepted"), r.text
            # the click-to-call reaches the telephony system, signed, once
            until(lambda: telephony.acted, "the click-to-call")
            (arrival,) = telephony.arrivals
            assert arrival.refused is None
            assert verify(SECRET, arrival.signature, arrival.body, time.time()) > 0
            sent = orjson.loads(arrival.body)
            assert (sent["callback_id"], sent["advisor_id"], sent["extension"], sent["phone"]) == (
                cb,
                "mikkel_berg",
                "2102",
                PHONE,
            )
            assert arrival.key == sent["idempotency_key"] == f"callback-{cb}-accepted-5"
            until(
                lambda: [m.state for m in engine.outbox.messages()] == [OutboxState.DELIVERED],
                "the outbox to mark it delivered",
            )
            # the telephony system reports the call; Mikkel ends it
            r = call(http, "POST", f"/v1/callbacks/{cb}/connect", (SERVER_KEY, ""))
            assert r.json()["state"] == "connected"
            r = call(http, "POST", f"/v1/callbacks/{cb}/complete", adv("mikkel_berg"))
            assert r.json()["state"] == "completed"
            # the customer sees it done; their event log holds every step
            r = call(http, "GET", f"/v1/callbacks/{cb}", (BROWSER_KEY, ""), headers=cust("u-life"))
            assert (r.json()["state"], r.json()["advisor"]["name"]) == ("completed", "Mikkel Berg")
            assert logged(engine, "u-life")[-7:] == [
                "Callback Requested",
                "Callback Assigned",
                "Callback Declined",
                "Callback Assigned",
                "Callback Accepted",
                "Callback Connected",
                "Callback Completed",
            ]
            exposure = engine.experiment_counters(customers=True)["mortgage_q4"].customers["u-life"]
            assert exposure.values[0] == 1.0
            # Mikkel may open the customer's view; Sofie (never routed to) may not
            view = call(http, "GET", "/v1/advisor/customers/u-life", adv("mikkel_berg"))
            assert view.status_code == 200, view.text
            body = view.json()
            assert body["interests"][0]["topic"] == "mortgage"
            assert body["interests"][0]["reason"] == "viewed mortgage pages 6 times in 14 days"
            assert [c["id"] for c in body["callbacks"]] == [cb]
            assert body["journey"][0]["name"] == "Callback Completed"
            offers = {o["offer_id"] for o in body["offers"]}
            assert "advisor:mortgage" not in offers  # the page did not report the card seen
            assert (
                call(http, "GET", "/v1/advisor/customers/u-life", adv("sofie_lund")).status_code
                == 404
            )
            board = call(http, "GET", "/v1/advisors", (ADMIN_KEY, "")).json()["advisors"]
            assert {a["id"]: a["load"] for a in board}["mikkel_berg"] == 0
            # the advisor's read is in the audit log, under the advisor; the refused one not
            audit = call(http, "GET", "/v1/audit?subject=u-life", (ADMIN_KEY, "")).json()
            views = [e for e in audit["entries"] if e["action"] == "customer_view.read"]
            assert [e["actor"].get("advisor") for e in views] == ["mikkel_berg"]
    assert telephony.duplicates() == 0


# ------------------------------------------------------------------------------ timers
def test_the_servers_sweeper_passes_a_lapsed_offer_on_and_converts_past_the_sla(
    start: Callable[..., LiveServer], clock: FixedClock
):
    server = start(sweeping=True)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        present(http, "anna_holm", "mikkel_berg")
        offered = ask(http, "u-t1").json()
        assert offered["advisor_id"] == "anna_holm"
        waiting = ask(http, "u-t2", topic="investing").json()  # James offline, Sofie at lunch
        assert (waiting["state"], waiting["advisor_id"]) == ("requested", None)
        clock.advance(30)  # Anna let it lapse: the sweeper offers it to Mikkel

        def moved(cb: str, field: str, value: Any) -> Any:
            got = call(http, "GET", f"/v1/callbacks/{cb}").json()
            return got if got[field] == value else None

        got = until(lambda: moved(offered["id"], "advisor_id", "mikkel_berg"), "the re-route")
        assert got["declined_by"] == ["anna_holm"]
        assert got["history"][-2]["reason"] == "Anna Holm did not accept within 30 s"
        clock.advance(90)  # 120 s since the investing request: moved to the earliest slot

        def converted() -> bool:
            got = call(http, "GET", f"/v1/callbacks/{waiting['id']}").json()
            return got["scheduled_for"] is not None

        until(converted, "the SLA conversion")
        told = call(
            http,
            "GET",
            f"/v1/callbacks/{waiting['id']}",
            (BROWSER_KEY, ""),
            headers=cust("u-t2"),
        ).json()
        assert told["notice"].startswith("Nobody was free within 2 minutes:")
        assert told["scheduled_label"] is not None


def test_a_restart_with_callbacks_in_flight_goes_on(clock: FixedClock, tmp_path: Path):
    data = tmp_path / "restart.sqlite"
    settings = settings_for(tmp_path, data)
    with serving(settings, clock=clock) as first, httpx.Client(base_url=first.url) as http:
        present(http, "anna_holm", "mikkel_berg")
        offered = ask(http, "u-r1").json()
        booked = ask(http, "u-r2", mode="later").json()
        assert (offered["state"], booked["state"]) == ("offered", "requested")
        events = first.engine.event_log.last_seq()
    clock.advance(45)  # the server is down; Anna's offer lapses meanwhile
    with (
        serving(settings, clock=clock, background=loops(settings)) as second,
        httpx.Client(base_url=second.url) as http,
    ):

        def rerouted() -> Any:
            got = call(http, "GET", f"/v1/callbacks/{offered['id']}").json()
            return got if got["advisor_id"] == "mikkel_berg" else None

        got = until(rerouted, "the second server's sweeper to pass the offer on")
        states = [t["state"] for t in got["history"]]
        assert states == ["requested", "offered", "requested", "offered"]
        kept = call(http, "GET", f"/v1/callbacks/{booked['id']}").json()
        assert kept["scheduled_for"] == booked["scheduled_for"]
        assert kept["version"] == booked_version(second, booked["id"])
        # the restart's relog appended nothing twice: the two new steps only
        assert len(list(second.engine.event_log.scan(0))) == events + 2


def booked_version(server: LiveServer, callback_id: str) -> int:
    return server.engine.callbacks.callback(callback_id).version


# ------------------------------------------------------------------------------ pick a time
def test_parallel_clients_racing_for_the_last_places_of_a_slot(start: Callable[..., LiveServer]):
    """24 customers pick Thursday 11:00 at once: Anna has 2 places, Mikkel and James 1."""
    server = start()

    def pick(n: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return ask(http, f"racer-{n}", mode="at", time=iso(THU_0900))

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(pick, range(24)))
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: 4, 409: 20}, [r.text for r in answers if r.status_code not in (200, 409)]
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"slot_taken"}
    won = Counter(r.json()["advisor_id"] for r in answers if r.status_code == 200)
    assert won == {"anna_holm": 2, "mikkel_berg": 1, "james_carter": 1}
    booked = server.engine.callbacks.store.booked(None, 0.0, 1e15)
    assert len(booked) == 4


# ------------------------------------------------------------------------------ who may
def test_a_customer_never_sees_or_cancels_another_customers_callback(
    start: Callable[..., LiveServer],
):
    server = start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        r = ask(http, "u-a", auth=(BROWSER_KEY, ""), headers=cust("u-a"), mode="later")
        assert r.status_code == 200, r.text
        cb = r.json()["id"]
        assert "history" not in r.json()  # nobody who declined, no internal reasons
        for who in ("u-b", "u-a2"):
            r = call(http, "GET", f"/v1/callbacks/{cb}", (BROWSER_KEY, ""), headers=cust(who))
            assert r.status_code == 404
            assert r.json() == {"code": "not_found", "message": f"no callback {cb!r}"}
            r = call(
                http, "POST", f"/v1/callbacks/{cb}/cancel", (BROWSER_KEY, ""), headers=cust(who)
            )
            assert r.status_code == 404
        assert call(http, "GET", f"/v1/callbacks/{cb}", (BROWSER_KEY, "")).status_code == 404
        assert call(http, "GET", f"/v1/callbacks/{cb}", (WRITE_KEY, "")).status_code == 404
        assert (
            call(
                http, "GET", "/v1/callbacks/not-a-callback", (BROWSER_KEY, ""), headers=cust("u-a")
            ).status_code
            == 404
        )
        # for someone else's userId: refused before anything is stored
        r = ask(http, "u-b", auth=(BROWSER_KEY, ""), headers=cust("u-a"), mode="later")
        assert r.status_code == 403
        assert ask(http, "u-b", auth=(WRITE_KEY, ""), mode="later").status_code == 403
        # an anonymous session: its own anonymousId shows it, another's does not
        r = ask(
            http, None, auth=(BROWSER_KEY, ""), anonymousId="dev-1", topic="pension", mode="later"
        )
        assert r.status_code == 200, r.text
        anon_cb = r.json()["id"]
        assert (
            call(
                http, "GET", f"/v1/callbacks/{anon_cb}?anonymousId=dev-1", (BROWSER_KEY, "")
            ).status_code
            == 200
        )
        assert (
            call(
                http, "GET", f"/v1/callbacks/{anon_cb}?anonymousId=dev-2", (BROWSER_KEY, "")
            ).status_code
            == 404
        )
        assert (
            call(
                http, "GET", f"/v1/callbacks/{anon_cb}", (BROWSER_KEY, ""), headers=cust("u-a")
            ).status_code
            == 404
        )
        # the owner sees and cancels; the bank sees everything
        r = call(http, "POST", f"/v1/callbacks/{cb}/cancel", (BROWSER_KEY, ""), headers=cust("u-a"))
        assert r.json()["state"] == "cancelled"
        full = call(http, "GET", f"/v1/callbacks/{cb}", (SERVER_KEY, "")).json()
        assert full["history"][-1]["reason"] == "cancelled by the customer"
        assert server.engine.callbacks.of_customer("u-b") == []


def test_an_advisor_acts_only_as_themselves(start: Callable[..., LiveServer]):
    server = start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        present(http, "anna_holm")
        cb = ask(http, "u-x").json()["id"]
        sofie = adv("sofie_lund")
        r = call(http, "PUT", "/v1/advisors/anna_holm/presence", sofie, {"presence": "offline"})
        assert r.status_code == 403
        assert call(http, "GET", "/v1/advisors/anna_holm/queue", sofie).status_code == 403
        for verb in ("accept", "decline", "connect", "complete"):
            assert call(http, "POST", f"/v1/callbacks/{cb}/{verb}", sofie).status_code == 404, verb
        r = call(http, "POST", f"/v1/callbacks/{cb}/accept", sofie, {"advisor_id": "anna_holm"})
        assert r.status_code == 403
        assert call(http, "GET", "/v1/advisor/customers/u-x", sofie).status_code == 404
        assert (
            call(http, "GET", "/v1/callbacks/" + cb, sofie).status_code == 403
        )  # a customer's route
        assert call(http, "GET", "/v1/advisors", sofie).status_code == 403  # supervisors only
        assert (
            call(
                http, "POST", "/v1/decide", sofie, {"placement": "home_feed", "userId": "u-x"}
            ).status_code
            == 403
        )
        assert ask(http, "u-y", auth=sofie).status_code == 403
        # forged, expired, or signed with another secret: 401
        forged = (adv("anna_holm")[0][:-2] + "AA", "")
        assert call(http, "GET", "/v1/advisors/anna_holm/queue", forged).status_code == 401
        assert (
            call(http, "GET", "/v1/advisors/anna_holm/queue", adv("anna_holm", T0 - 1)).status_code
            == 401
        )
        other = adv("anna_holm", secret="another-secret-entirely")
        assert call(http, "GET", "/v1/advisors/anna_holm/queue", other).status_code == 401
        customer_token = mint_customer_token(TOKEN_SECRET, "anna_holm", T0 + 3_600)
        assert (
            call(
                http, "GET", "/v1/advisors/anna_holm/queue", ("adv." + customer_token, "")
            ).status_code
            == 401
        )
        # Anna herself, and the telephony system (a server key) for anyone
        assert (
            call(http, "GET", "/v1/advisors/anna_holm/queue", adv("anna_holm")).status_code == 200
        )
        r = call(http, "POST", f"/v1/callbacks/{cb}/accept", (SERVER_KEY, ""))
        assert (r.status_code, r.json()["advisor_id"]) == (200, "anna_holm")
        r = call(
            http,
            "PUT",
            "/v1/advisors/anna_holm/presence",
            (SERVER_KEY, ""),
            {"presence": "busy", "at": iso(T0 + 5)},
        )
        assert r.json()["presence"] == "busy"
        late = call(
            http,
            "PUT",
            "/v1/advisors/anna_holm/presence",
            (SERVER_KEY, ""),
            {"presence": "available", "at": iso(T0 + 1)},
        )
        assert late.json()["presence"] == "busy"  # an older report changes nothing
        assert (
            call(
                http, "PUT", "/v1/advisors/nobody/presence", (SERVER_KEY, ""), {"presence": "busy"}
            ).status_code
            == 404
        )


@pytest.mark.parametrize(
    ("fields", "status", "code", "path"),
    [
        ({"phone": "12345678"}, 400, "validation_error", "$.phone"),
        ({"phone": "+45 12 34 56 78"}, 400, "validation_error", "$.phone"),
        ({"mode": "sometime"}, 400, "validation_error", "$.mode"),
        ({"mode": "at", "time": "tomorrow"}, 400, "validation_error", "$.time"),
        ({"mode": "at", "time": "2026-09-24T09:00:00"}, 400, "validation_error", "$.time"),
        ({"mode": "at"}, 400, "validation_error", "$.time"),
        ({"mode": "at", "time": "2026-09-24T09:10:00Z"}, 400, "validation_error", "$.time"),
        ({"mode": "now", "time": "2026-09-24T09:00:00Z"}, 400, "validation_error", "$.time"),
        ({"topic": "astrology"}, 400, "validation_error", "$.topic"),
        ({"language": "xx"}, 400, "validation_error", "$.language"),
        ({"colour": "blue"}, 400, "validation_error", "$"),  # msgspec: "unknown field"
        ({"userId": None}, 400, "validation_error", "$.userId"),
    ],
)
def test_a_bad_request_is_a_400_at_its_field_and_stores_nothing(
    start: Callable[..., LiveServer], fields: dict[str, Any], status: int, code: str, path: str
):
    server = start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        body = {"topic": "mortgage", "mode": "now", "phone": PHONE, "userId": "u-bad", **fields}
        body = {k: v for k, v in body.items() if v is not None}
        r = call(http, "POST", "/v1/callbacks", body=body)
        assert r.status_code == status, r.text
        assert (r.json()["code"], r.json()["path"]) == (code, path)
    assert server.engine.callbacks.store.count() == 0
    assert server.engine.event_log.last_seq() == 0
