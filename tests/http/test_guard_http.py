"""The identity-theft guard on a real server (uvicorn on loopback, the example bank, a SQLite
store): a customer's history and then a takeover sent with the write key over ``/v1/batch``;
the next ``/v1/decide`` shows "Was this you?" and no commercial offer (``security_flagged``
with ``explain``), the profile view says the session is flagged, and the store's outbox holds
one alert for the fraud channel."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from nextbest.guard.alert import FRAUD_CHANNEL
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg, now
from tests.support import DAY, SERVER_KEY, WRITE_KEY

JSON = {"Content-Type": "application/json"}
HOME = {
    "library": {"name": "analytics.js", "version": "4.1.0"},
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.5 Safari/605.1.15",
    "locale": "nl-NL",
    "timezone": "Europe/Amsterdam",
}
FRAUD = {
    "library": {"name": "analytics.js", "version": "4.1.0"},
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "locale": "pt-BR",
    "timezone": "America/Sao_Paulo",
}


def page(path: str, context: dict[str, Any], at: float, **who: Any) -> dict[str, Any]:
    m = msg("page", at=at, name=None, category=None, **who)
    m["properties"] = {"url": "https://bank.example" + path}
    m["context"] = context
    return m


def post(http: httpx.Client, messages: list[dict[str, Any]]) -> None:
    resp = http.post(
        "/v1/batch",
        content=orjson.dumps({"batch": messages}),
        auth=(WRITE_KEY, ""),
        headers=JSON,
    )
    assert resp.status_code == 200, resp.text


def decide(http: httpx.Client, user: str) -> dict[str, Any]:
    body = {"userId": user, "placement": "home_feed", "explain": True}
    resp = http.post("/v1/decide", content=orjson.dumps(body), auth=(SERVER_KEY, ""), headers=JSON)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_a_takeover_over_http(http: httpx.Client, live_server: LiveServer) -> None:
    user = fresh_user("victim")
    start = now()
    # ten earlier days at this hour, from the customer's Mac in Amsterdam
    history = []
    for d in range(10, 0, -1):
        at = start - d * DAY
        for i, path in enumerate(["/", "/accounts", "/accounts/statements"]):
            history.append(page(path, HOME, at + i * 40, userId=user, anonymousId="mac"))
    post(http, history)
    before = decide(http, user)
    assert "was_this_you" not in [i["offer_id"] for i in before["items"]]

    at = start - 60
    login = page("/login", FRAUD, at, anonymousId="fraud-laptop")
    ident = msg("identify", at=at + 5, userId=user, anonymousId="fraud-laptop", traits={})
    ident["context"] = FRAUD
    payee = page("/payees/new", FRAUD, at + 12, userId=user, anonymousId="fraud-laptop")
    post(http, [login, ident, payee])

    d = decide(http, user)
    assert d["items"][0]["offer_id"] == "was_this_you"
    catalog = live_server.engine.catalog
    shown = {i["offer_id"] for i in d["items"]}
    assert not shown & catalog.commercial_offers
    held = {e["offer_id"] for e in d["excluded"] if e["why"] == "security_flagged"}
    assert held == set(catalog.commercial_offers)

    view = http.get(f"/v1/profiles/{user}", auth=(SERVER_KEY, "")).json()
    assert view["view"]["security"]["flagged"] is True
    assert "new_device" in view["view"]["security"]["signals"]

    alerts = [m for m in live_server.engine.outbox.messages() if m.channel == FRAUD_CHANNEL]
    assert len(alerts) == 1
    body = orjson.loads(alerts[0].payload)
    assert body["customer_id"] == user
    assert body["devices"] == ["fraud-laptop"]
    assert alerts[0].destination == "fraud"
