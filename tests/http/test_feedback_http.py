"""Feedback over HTTP against a real uvicorn server: ``Promotion Viewed / Clicked`` must join a
logged decision of the same customer, or the request is a 400 naming the field and nothing
is stored; a decide, view, click round trip reaches the placement's model."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import orjson

from nextbest.experiments import Arm, assign
from tests.conftest import LiveServer
from tests.http.helpers import msg
from tests.support import SERVER_KEY, WRITE_KEY

JSON = {"Content-Type": "application/json"}


def post(http: httpx.Client, path: str, body: Any, key: str = WRITE_KEY) -> httpx.Response:
    return http.post(path, content=orjson.dumps(body), auth=(key, ""), headers=JSON)


def batch_of(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"batch": list(messages)}


def assert_unmatched(resp: httpx.Response, accepted: int, rejected: list[tuple[int, str]]) -> None:
    """200: ``accepted`` kept, and these (index, path) quarantined as unmatched feedback."""
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == accepted, body
    assert [(r["index"], r["path"]) for r in body["rejected"]] == rejected, body
    assert {r["code"] for r in body["rejected"]} == {"unmatched_feedback"}


def assert_validation_error(resp: httpx.Response, path: str) -> None:
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()
    assert (err["code"], err["path"]) == ("validation_error", path), err
    assert err["message"]


def customer(server: LiveServer, http: httpx.Client, prefix: str) -> str:
    """An adult in the treatment arm of every campaign, identified to the server."""
    campaigns = server.engine.catalog.spec.campaigns
    for n in itertools.count():
        user = f"{prefix}-{n}"
        if all(assign(user, c.salt or c.id, c.control_share) is Arm.TREATMENT for c in campaigns):
            break
    resp = post(http, "/v1/identify", msg("identify", user=user, traits={"age": 35}))
    assert resp.status_code == 200, resp.text
    return user


def decided(http: httpx.Client, user: str, placement: str = "home_feed") -> dict[str, Any]:
    resp = post(http, "/v1/decide", {"placement": placement, "userId": user}, key=SERVER_KEY)
    assert resp.status_code == 200, resp.text
    d: dict[str, Any] = resp.json()
    assert d["items"], d
    return d


def promotion(event: str, d: dict[str, Any], user: str, item: int = 0) -> dict[str, Any]:
    shown = d["items"][item]
    props = {
        "promotion_id": shown["offer_id"],
        "decision_id": d["decision_id"],
        "position": shown["position"],
    }
    return msg("track", user=user, event=event, properties=props)


def n_learned(server: LiveServer, placement: str) -> int:
    return {m.placement: m.info.n_learned for m in server.engine.models()}[placement]


def test_a_view_of_an_unknown_decision_is_quarantined_on_track(
    live_server: LiveServer, http: httpx.Client
):
    user = customer(live_server, http, "unknown")
    stored = live_server.engine.event_log.count()
    body = msg(
        "track",
        user=user,
        event="Promotion Viewed",
        properties={"promotion_id": "mortgage_rates", "decision_id": "no-such-decision"},
    )
    assert_unmatched(post(http, "/v1/track", body), 0, [(0, "$.properties.decision_id")])
    assert live_server.engine.event_log.count() == stored
    (held,) = live_server.engine.quarantined()
    assert "unknown decision_id 'no-such-decision'" in held.reason


def test_a_bad_second_message_is_quarantined_and_the_first_kept(
    live_server: LiveServer, http: httpx.Client
):
    user = customer(live_server, http, "batch")
    d = decided(http, user)
    stored = live_server.engine.event_log.count()
    profile = orjson.dumps(live_server.engine.profile_view(user)["profile"])  # type: ignore[index]
    bad = promotion("Promotion Clicked", d, user)
    bad["properties"]["decision_id"] = "d-unknown"
    body = batch_of(promotion("Promotion Viewed", d, user), bad)
    resp = post(http, "/v1/batch", body)
    assert_unmatched(resp, 1, [(1, "$.batch[1].properties.decision_id")])
    assert live_server.engine.event_log.count() == stored + 1
    assert orjson.dumps(live_server.engine.profile_view(user)["profile"]) != profile  # type: ignore[index]
    assert live_server.engine.models()
    assert n_learned(live_server, "home_feed") == 0  # the view waits; the click was not learned
    assert live_server.engine.pending_views == 1


def test_decide_view_click_round_trip_is_learned(live_server: LiveServer, http: httpx.Client):
    user = customer(live_server, http, "roundtrip")
    d = decided(http, user)
    assert d["model_version"] == "contextual-0"
    assert set(d["candidates"]) >= {i["offer_id"] for i in d["items"]}
    assert all(0.0 < i["propensity"] <= 1.0 for i in d["items"])
    assert {i["propensity_kind"] for i in d["items"]} == {"exact"}  # epsilon-greedy: exact

    view = post(http, "/v1/track", promotion("Promotion Viewed", d, user))
    assert view.status_code == 200, view.text
    assert view.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    assert n_learned(live_server, "home_feed") == 0  # a view waits for its click window
    click = post(http, "/v1/batch", batch_of(promotion("Promotion Clicked", d, user)))
    assert click.status_code == 200, click.text
    assert click.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    assert n_learned(live_server, "home_feed") == 1

    offer = d["items"][0]["offer_id"]
    history = live_server.engine.profile(user).offers[offer]  # type: ignore[union-attr]
    assert len(history.impressions) == 1
    assert len(history.clicks) == 1
    logged = http.get(f"/v1/decisions/{d['decision_id']}", auth=(SERVER_KEY, ""))
    assert logged.status_code == 200, logged.text
    assert logged.json()["features"] == d["features"]
    assert "prior:" + offer in d["features"]
    again = decided(http, user)
    assert again["model_version"] == "contextual-1"
    assert offer not in [i["offer_id"] for i in again["items"]]  # clicked: rested a week


def test_feedback_from_another_user_is_quarantined_never_learned(
    live_server: LiveServer, http: httpx.Client
):
    owner, other = customer(live_server, http, "owner"), customer(live_server, http, "other")
    d = decided(http, owner)
    stored = live_server.engine.event_log.count()
    for path, body, where in [
        ("/v1/track", promotion("Promotion Clicked", d, other), "$.properties.decision_id"),
        (
            "/v1/batch",
            batch_of(promotion("Promotion Viewed", d, other)),
            "$.batch[0].properties.decision_id",
        ),
    ]:
        assert_unmatched(post(http, path, body), 0, [(0, where)])
    assert live_server.engine.event_log.count() == stored
    assert all("another customer" in h.reason for h in live_server.engine.quarantined())
    assert live_server.engine.profile(other).offers == {}  # type: ignore[union-attr]
    assert n_learned(live_server, "home_feed") == 0
