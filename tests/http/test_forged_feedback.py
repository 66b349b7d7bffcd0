"""Forged feedback does not steer anyone else: the attack of the abuse review, replayed with
a public browser key against a real server (made-up devices, decisions forced by
``exclude``, clicks without views), leaves a real customer's ranking and ``p_click`` as
they were; and the same devices, once they have history and see what they click, do teach."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import body_of, send
from tests.support import BROWSER_KEY, SERVER_KEY

TARGET = "travel_insurance_offer"


def _feed(http: httpx.Client, user: str) -> dict[str, Any]:
    resp = http.post(
        "/v1/decide",
        json={"userId": user, "placement": "home_feed", "explain": True},
        auth=(SERVER_KEY, ""),
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _others(live_server: LiveServer) -> list[str]:
    return [o.id for o in live_server.engine.catalog.by_placement["home_feed"] if o.id != TARGET][
        :50
    ]


def _customer(http: httpx.Client) -> str:
    user = fresh_user("victim")
    history = [msg("identify", user=user, traits={"birthday": "1980-02-02"})]
    history += [
        msg("page", user=user, properties={"url": "https://bank.example/mortgages/rates"})
        for _ in range(4)
    ]
    assert send(http, body_of(*history), key=SERVER_KEY).status_code == 200
    return user


def _attack(http: httpx.Client, live_server: LiveServer, devices: int, *, views: bool) -> int:
    """Made-up devices, each given a birthday, each deciding with every other offer
    excluded, then clicking the target (with or without a view first); clicks accepted."""
    exclude = _others(live_server)
    clicks: list[dict[str, Any]] = []
    for n in range(devices):
        anon = f"bot-{views}-{n}"
        ident = msg("identify", anon=anon, traits={"birthday": "1990-01-01"})
        assert send(http, body_of(ident), key=BROWSER_KEY).status_code == 200
        resp = http.post(
            "/v1/decide",
            json={"anonymousId": anon, "placement": "home_feed", "exclude": exclude},
            auth=(BROWSER_KEY, ""),
        )
        assert resp.status_code == 200, resp.text
        shown = [i["offer_id"] for i in resp.json()["items"]]
        if TARGET not in shown:
            continue
        props = {"promotion_id": TARGET, "decision_id": resp.json()["decision_id"]}
        if views:
            clicks.append(msg("track", anon=anon, event="Promotion Viewed", properties=props))
        clicks.append(msg("track", anon=anon, event="Promotion Clicked", properties=props))
    resp = send(http, body_of(*clicks), key=BROWSER_KEY)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rejected"] == []  # stored and folded: the devices' own history
    return sum(1 for c in clicks if c["event"] == "Promotion Clicked")


def _p_click(decision: dict[str, Any], offer: str) -> float | None:
    return next((i["p_click"] for i in decision["items"] if i["offer_id"] == offer), None)


def test_forged_clicks_leave_other_customers_decisions_as_they_were(
    live_server: LiveServer, http: httpx.Client
):
    user = _customer(http)
    before = _feed(http, user)
    learned = live_server.engine.learner.learned
    assert _attack(http, live_server, 120, views=False) > 0
    assert _attack(http, live_server, 120, views=True) > 0  # forced: still nothing learned
    assert live_server.engine.learner.learned == learned
    after = _feed(http, user)
    assert [i["offer_id"] for i in after["items"]] == [i["offer_id"] for i in before["items"]]
    # the same estimates (up to the interest decayed in the seconds between the two)
    assert [i["p_click"] for i in after["items"]] == pytest.approx(
        [i["p_click"] for i in before["items"]], rel=1e-4
    )
    assert after["candidates"] == before["candidates"]


def test_new_devices_teach_nothing_until_they_have_history(
    live_server: LiveServer, http: httpx.Client
):
    """Without ``exclude`` the decisions are the model's own, but devices born a second ago
    (one identify) teach nothing; the same feedback from a known customer does."""
    learned = live_server.engine.learner.learned
    for n in range(30):
        anon = f"newborn-{n}"
        send(
            http,
            body_of(msg("identify", anon=anon, traits={"birthday": "1990-01-01"})),
            key=BROWSER_KEY,
        )
        d = http.post(
            "/v1/decide",
            json={"anonymousId": anon, "placement": "home_feed"},
            auth=(BROWSER_KEY, ""),
        ).json()
        for item in d["items"]:
            props = {"promotion_id": item["offer_id"], "decision_id": d["decision_id"]}
            send(
                http,
                body_of(
                    msg("track", anon=anon, event="Promotion Viewed", properties=props),
                    msg("track", anon=anon, event="Promotion Clicked", properties=props),
                ),
                key=BROWSER_KEY,
            )
    assert live_server.engine.learner.learned == learned
    user = _customer(http)
    d = _feed(http, user)
    item = d["items"][0]
    props = {"promotion_id": item["offer_id"], "decision_id": d["decision_id"]}
    send(
        http,
        body_of(
            msg("track", user=user, event="Promotion Viewed", properties=props),
            msg("track", user=user, event="Promotion Clicked", properties=props),
        ),
        key=SERVER_KEY,
    )
    assert live_server.engine.learner.learned == learned + 1
