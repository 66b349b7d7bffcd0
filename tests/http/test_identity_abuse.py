"""Devices and traits with a customer token for one's own account and a public browser key:
no device takeover, no stall by linking devices, no unbounded traits."""

from __future__ import annotations

import threading
import time

import httpx

from nextbest.api.customer_token import mint_customer_token
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, ok, send
from tests.support import BROWSER_KEY, SERVER_KEY, TOKEN_SECRET


def _token(user: str) -> dict[str, str]:
    return {"X-Customer-Token": mint_customer_token(TOKEN_SECRET, user, time.time() + 600)}


def _as_customer(http: httpx.Client, user: str, *messages: dict[str, object]) -> httpx.Response:
    return http.post(
        "/v1/batch",
        content=body_of(*messages),
        auth=(BROWSER_KEY, ""),
        headers={"Content-Type": "application/json", **_token(user)},
    )


def test_a_browser_key_may_not_take_over_another_customers_device(
    live_server: LiveServer, http: httpx.Client
):
    victim, attacker = fresh_user("victim"), fresh_user("attacker")
    login = msg("identify", user=victim, anon="victim-cookie")
    assert _as_customer(http, victim, login).json() == ok(1)
    browsing = msg(
        "page", anon="victim-cookie", properties={"url": "https://bank.example/mortgages"}
    )
    # the device is bound to the victim now: it sends with their token (test_device_binding)
    assert _as_customer(http, victim, browsing).status_code == 200

    takeover = msg("identify", user=attacker, anon="victim-cookie")
    resp = _as_customer(http, attacker, takeover)
    err = assert_error(resp, 403, "forbidden")
    assert "$.batch[0].anonymousId" in err["message"]
    engine = live_server.engine
    assert engine.resolve(None, "victim-cookie") == victim
    assert engine.profile(attacker) is None
    victim_profile = engine.profile(victim)
    assert victim_profile is not None
    assert victim_profile.interests["mortgage"].total == 1
    # the victim's own login again, and a new device of the attacker's, are fine
    assert (
        _as_customer(http, victim, msg("identify", user=victim, anon="victim-cookie")).status_code
        == 200
    )
    assert _as_customer(
        http, attacker, msg("identify", user=attacker, anon="own-cookie")
    ).json() == ok(1)


def test_the_bank_may_move_a_device_with_a_server_key(live_server: LiveServer, http: httpx.Client):
    a, b = fresh_user("a"), fresh_user("b")
    send(http, body_of(msg("identify", user=a, anon="family-tablet")), key=SERVER_KEY)
    resp = send(http, body_of(msg("identify", user=b, anon="family-tablet")), key=SERVER_KEY)
    assert resp.json() == ok(1)
    assert live_server.engine.resolve(None, "family-tablet") == b


def test_linking_many_devices_is_refused_past_the_cap_and_stalls_no_one(
    live_server: LiveServer, http: httpx.Client
):
    """The stall attack: one batch of 600 identifies linking new devices to one's own
    account. Past ``max_devices`` (50) it is a 409 naming the device, nothing is stored, and
    the work up to the cap folds only each device's own events; meanwhile ``/healthz`` and
    other customers' decisions answer at once."""
    user = fresh_user("stall")
    other = fresh_user("other")
    send(
        http,
        body_of(msg("identify", user=other, traits={"birthday": "1980-01-01"})),
        key=SERVER_KEY,
    )
    links = [msg("identify", user=user, anon=f"dev-{n}") for n in range(600)]
    waits: list[float] = []
    stop = threading.Event()

    def meanwhile() -> None:
        with httpx.Client(base_url=live_server.url, timeout=10) as client:
            while not stop.is_set():
                t = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                decided = client.post(
                    "/v1/decide",
                    json={"userId": other, "placement": "home_feed"},
                    auth=(SERVER_KEY, ""),
                )
                assert decided.status_code == 200
                waits.append(time.perf_counter() - t)

    probe = threading.Thread(target=meanwhile)
    probe.start()
    try:
        t = time.perf_counter()
        resp = _as_customer(http, user, *links)
        took = time.perf_counter() - t
        err = assert_error(resp, 409, "limit_exceeded", "$.batch[50].anonymousId")
        assert "at most 50" in err["message"]
        assert live_server.engine.profile(user) is None  # nothing of the batch was stored
        at_cap = _as_customer(http, user, *links[:50])
        assert at_cap.json() == ok(50)
        time.sleep(0.2)
    finally:
        stop.set()
        probe.join(10)
    assert took < 2.0, took
    assert waits
    assert max(waits) < 0.5, max(waits)
    profile = live_server.engine.profile(user)
    assert profile is not None
    assert len(profile.anonymous_ids) == 50


def test_traits_are_bounded_per_message_and_per_profile(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user("traits")
    many = msg("identify", user=user, traits={f"t{n}": n for n in range(101)})
    assert_error(
        send(http, body_of(many), key=SERVER_KEY), 400, "validation_error", "$.batch[0].traits"
    )
    long_key = msg("identify", user=user, traits={"k" * 65: 1})
    err = assert_error(send(http, body_of(long_key), key=SERVER_KEY), 400, "validation_error")
    assert err["path"].startswith("$.batch[0].traits")
    big = msg("identify", user=user, traits={"note": "x" * 3000})
    assert_error(
        send(http, body_of(big), key=SERVER_KEY), 400, "validation_error", "$.batch[0].traits.note"
    )
    for start in (0, 100):
        part = msg("identify", user=user, traits={f"t{n}": n for n in range(start, start + 100)})
        assert send(http, body_of(part), key=SERVER_KEY).json() == ok(1)
    past = msg("identify", user=user, traits={"one_more": 1})
    assert_error(
        send(http, body_of(past), key=SERVER_KEY), 409, "limit_exceeded", "$.batch[0].traits"
    )
    again = msg("identify", user=user, traits={"t5": "changed"})  # an existing key: fine
    assert send(http, body_of(again), key=SERVER_KEY).json() == ok(1)
    # decide stays cheap for a profile at the cap
    t = time.perf_counter()
    resp = http.post(
        "/v1/decide", json={"userId": user, "placement": "home_feed"}, auth=(SERVER_KEY, "")
    )
    assert resp.status_code == 200
    assert time.perf_counter() - t < 0.5


def test_a_browser_key_may_not_set_a_salary(live_server: LiveServer, http: httpx.Client):
    resp = send(
        http, body_of(msg("identify", anon="d1", traits={"last_salary": 9e9})), key=BROWSER_KEY
    )
    assert_error(resp, 403, "forbidden")
