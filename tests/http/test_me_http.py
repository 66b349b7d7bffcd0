"""The customer's own pages on a real server (issue 20, item 3): ``GET /v1/me/why/{id}`` says
why a decision showed each item and the data it was chosen from, ``GET /v1/me/data`` what
nextbest knows, where it came from and what it is used for; both in the customer's language,
both only for the customer a customer token binds."""

from __future__ import annotations

from typing import Any

import httpx

from nextbest.transparency.texts import say
from tests.conftest import LiveServer
from tests.http.helpers import fresh_user, msg
from tests.http.test_api import assert_error, body_of, decide, ok, send, token
from tests.support import BROWSER_KEY, SERVER_KEY

MORTGAGE = "https://bank.example/mortgages/rates"


def _interested(http: httpx.Client, user: str, **traits: Any) -> None:
    pages = [msg("page", user=user, properties={"url": MORTGAGE}) for _ in range(5)]
    identify = msg("identify", user=user, traits={"age": 40, **traits})
    assert send(http, body_of(identify, *pages)).json() == ok(6)


def _decided(http: httpx.Client, user: str) -> dict[str, Any]:
    resp = decide(http, placement="home_feed", userId=user)
    assert resp.status_code == 200, resp.text
    decision: dict[str, Any] = resp.json()
    return decision


def _why(http: httpx.Client, user: str, decision_id: str, **params: str) -> httpx.Response:
    return http.get(
        f"/v1/me/why/{decision_id}", params=params, auth=(BROWSER_KEY, ""), headers=token(user)
    )


def test_why_lists_each_items_reasons_and_data_in_the_customers_language(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user("why")
    _interested(http, user, language="da")
    decision = _decided(http, user)
    shown = {i["offer_id"]: i for i in decision["items"]}
    assert "mortgage_advice" in shown or "mortgage_rates" in shown, shown
    offer = "mortgage_advice" if "mortgage_advice" in shown else "mortgage_rates"
    # the decision itself lists what each item was chosen from
    assert "behavioral" in shown[offer]["sources"]
    assert "interest.mortgage" in shown[offer]["features"]
    live_server.engine.flush()
    page = _why(http, user, decision["decision_id"])
    assert page.status_code == 200, page.text
    got = page.json()
    assert got["language"] == "da"  # the customer's language trait
    assert got["title"] == "Hvorfor du så dette"
    item = next(i for i in got["items"] if i["offer_id"] == offer)
    assert any("gange inden for de sidste" in r for r in item["reasons"]), item["reasons"]
    by_source = {s["source"]: s for s in item["sources"]}
    assert by_source["behavioral"]["name"] == "Dine besøg på vores hjemmeside og i vores app"
    assert "interest.mortgage" in item["features"]
    # ?lang= wins over the trait, Accept-Language over nothing else
    assert _why(http, user, decision["decision_id"], lang="nl").json()["language"] == "nl"
    titles = {
        lang: _why(http, user, decision["decision_id"], lang=lang).json()["title"]
        for lang in ("da", "nl", "de", "en", "es")
    }
    assert len(set(titles.values())) == 5
    other = fresh_user("why-header")
    _interested(http, other)
    mine = _decided(http, other)
    live_server.engine.flush()
    german = http.get(
        f"/v1/me/why/{mine['decision_id']}",
        auth=(BROWSER_KEY, ""),
        headers={**token(other), "Accept-Language": "de-DE,de;q=0.9"},
    )
    assert german.json()["language"] == "de"


def test_a_withdrawn_source_is_neither_used_nor_listed(live_server: LiveServer, http: httpx.Client):
    user = fresh_user("withdrawn")
    _interested(http, user)
    withdraw = {"purposes": {"marketing": {"granted": True, "sources": {"behavioral": False}}}}
    put = http.put(f"/v1/customers/{user}/consent", json=withdraw, auth=(SERVER_KEY, ""))
    assert put.status_code == 200, put.text
    live_server.engine.flush()
    decision = _decided(http, user)
    for item in decision["items"]:
        if item["kind"] == "commercial":
            assert "behavioral" not in item["sources"], item
            assert not any(f.startswith("interest.") for f in item["features"]), item
    data = http.get("/v1/me/data", auth=(BROWSER_KEY, ""), headers=token(user)).json()
    behavioral = next(s for s in data["sources"] if s["source"] == "behavioral")
    assert "Offering you products" in behavioral["not_used_for"]
    assert any(f["feature"] == "interest.mortgage" for f in behavioral["facts"])
    (choice,) = [c for c in data["consent"] if c["key"] == "marketing/behavioral"]
    assert choice["granted"] is False
    assert choice["basis"] == "your consent"


def test_the_data_page_says_what_is_known_where_from_and_for_what(
    live_server: LiveServer, http: httpx.Client
):
    user = fresh_user("data")
    _interested(http, user, language="es", children=2)
    balance = msg("track", user=user, event="Balance Updated", properties={"balance": -120.5})
    assert send(http, body_of(balance), key=SERVER_KEY).json() == ok(1)
    live_server.engine.flush()
    resp = http.get("/v1/me/data", auth=(BROWSER_KEY, ""), headers=token(user))
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["language"] == "es"
    assert data["title"] == "Lo que sabemos de usted"
    sources = {s["source"]: s for s in data["sources"]}
    assert set(sources) == {"behavioral", "transactional", "crm", "contextual", "third_party"}
    facts = {f["feature"]: f["text"] for s in data["sources"] for f in s["facts"]}
    assert facts["interest.mortgage"].startswith("Interés en")
    assert facts["profile.overdrawn"] == "Su cuenta está en descubierto"
    assert "traits.children" in facts
    # third-party data is off by default: used for security alone (always on, never sells)
    assert sources["third_party"]["used_for"] == [say("purpose.security", "es")]
    assert say("purpose.marketing", "es") in sources["third_party"]["not_used_for"]
    assert sources["contextual"]["facts"] == []  # the moment itself is not kept


def test_only_the_customer_a_token_binds_reads_them(live_server: LiveServer, http: httpx.Client):
    me, other = fresh_user("me"), fresh_user("them")
    _interested(http, me)
    _interested(http, other)
    theirs = _decided(http, other)
    live_server.engine.flush()
    # another customer's decision is unknown to me; no token, no "me"
    assert_error(_why(http, me, theirs["decision_id"]), 404, "not_found")
    assert_error(_why(http, me, "no-such-decision"), 404, "not_found")
    bare = http.get(f"/v1/me/why/{theirs['decision_id']}", auth=(BROWSER_KEY, ""))
    assert_error(bare, 400, "validation_error", "$.headers.X-Customer-Token")
    nameless = http.get("/v1/me/data", auth=(BROWSER_KEY, ""))
    assert_error(nameless, 400, "validation_error", "$.headers.X-Customer-Token")
    assert _why(http, other, theirs["decision_id"]).status_code == 200
    nobody = fresh_user("nobody")
    assert_error(
        http.get("/v1/me/data", auth=(BROWSER_KEY, ""), headers=token(nobody)), 404, "not_found"
    )
