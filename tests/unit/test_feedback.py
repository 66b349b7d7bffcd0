"""Feedback joins a logged decision: ``Promotion Viewed / Clicked / Dismissed`` must name a
decision made for the same customer, an offer it showed, at the position it showed it;
otherwise the whole ingest is rejected with the field's path and nothing is stored."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from nextbest.decide import Decision, DecisionRequest
from nextbest.engine import Engine
from nextbest.errors import ValidationError
from nextbest.events.model import EventType
from nextbest.store import sqlite_stores
from tests.support import T0, batch, counter_ids, feedback, identify, page

FEED = DecisionRequest(placement="home_feed")


def adult(engine: Engine, user: str = "u1", **who: Any) -> None:
    """An adult customer: the example bank shows adults its always-on banners."""
    engine.ingest_batch(batch(identify({"age": 30}, user=user, **who)))


def snapshot(engine: Engine, customer: str) -> tuple[int, bytes]:
    """What a rejected ingest must leave alone: the log's length and the profile."""
    return engine.event_log.count(), msgspec.msgpack.encode(engine.profile(customer))


def rejected(engine: Engine, *messages: dict[str, Any]) -> str:
    """The path of the ValidationError the batch raises."""
    with pytest.raises(ValidationError) as exc:
        engine.ingest_batch(batch(*messages))
    return exc.value.path


def decided(engine: Engine, user: str = "u1") -> Decision:
    adult(engine, user)
    d = engine.decide(FEED, user_id=user)
    assert len(d.items) >= 2
    return d


def decided_anonymously(engine: Engine, device: str) -> Decision:
    """A decision for a device nobody has logged in on (an anonymous identify with traits)."""
    engine.ingest_batch(batch(identify({"age": 30}, anon=device)))
    d = engine.decide(FEED, anonymous_id=device)
    assert d.customer_id == f"anon:{device}"
    assert d.items
    return d


def test_unknown_decision_id_is_rejected_and_nothing_stored(engine: Engine):
    d = decided(engine)
    before = snapshot(engine, "u1")
    msg = feedback(d, "Promotion Viewed")
    msg["properties"]["decision_id"] = "no-such-decision"
    assert rejected(engine, msg) == "$.batch[0].properties.decision_id"
    assert snapshot(engine, "u1") == before


def test_feedback_from_another_user_is_rejected(engine: Engine):
    d = decided(engine, "u1")
    adult(engine, "u2")
    before = snapshot(engine, "u2")
    assert rejected(engine, feedback(d, user="u2")) == "$.batch[0].properties.decision_id"
    assert snapshot(engine, "u2") == before
    assert engine.profile("u1").offers == {}


def test_feedback_from_another_device_is_rejected(engine: Engine):
    d = decided_anonymously(engine, "dev1")
    stored = engine.event_log.count()
    assert rejected(engine, feedback(d, anon="dev2")) == "$.batch[0].properties.decision_id"
    assert engine.event_log.count() == stored
    assert engine.profile("anon:dev2") is None


@pytest.mark.parametrize("who", [{"user": "u1", "anon": "dev1"}, {"user": "u1"}])
def test_anonymous_decision_answered_after_login_is_accepted(engine: Engine, who):
    d = decided_anonymously(engine, "dev1")
    engine.ingest_batch(batch(identify({}, user="u1", anon="dev1")))  # login stitches dev1
    assert engine.ingest_batch(batch(feedback(d, "Promotion Clicked", **who))).accepted == 1
    assert engine.profile("u1").offers[d.items[0].offer_id].total_clicks == 1


def test_user_decision_answered_from_a_linked_device_is_accepted(engine: Engine):
    adult(engine, "u1", anon="dev1")
    d = engine.decide(FEED, user_id="u1")
    assert engine.ingest_batch(batch(feedback(d, anon="dev1"))).accepted == 1
    assert engine.profile("u1").offers[d.items[0].offer_id].total_impressions == 1


def test_offer_not_in_the_decision_is_rejected(engine: Engine):
    d = decided(engine)
    shown = {i.offer_id for i in d.items}
    other = next(o for o in engine.catalog.offers if o not in shown)  # real, but not shown
    before = snapshot(engine, "u1")
    path = rejected(engine, feedback(d, "Promotion Clicked", other))
    assert path == "$.batch[0].properties.promotion_id"
    assert snapshot(engine, "u1") == before


def test_wrong_position_is_rejected_and_no_position_is_accepted(engine: Engine):
    d = decided(engine)
    second = d.items[1]
    msg = feedback(d, "Promotion Viewed", second.offer_id)
    assert msg["properties"]["position"] == second.position == 2
    msg["properties"]["position"] = 1
    before = snapshot(engine, "u1")
    assert rejected(engine, msg) == "$.batch[0].properties.position"
    assert snapshot(engine, "u1") == before
    del msg["properties"]["position"]  # position is optional
    assert engine.ingest_batch(batch(msg)).accepted == 1


def test_view_and_click_in_one_batch_update_the_offer_history(engine: Engine):
    d = decided(engine)
    offer = d.items[1].offer_id
    body = batch(
        feedback(d, "Promotion Viewed", offer, at=T0 + 1),
        feedback(d, "Promotion Clicked", offer, at=T0 + 5),
    )
    assert engine.ingest_batch(body).accepted == 2
    h = engine.profile("u1").offers[offer]
    assert (h.total_impressions, h.total_clicks, h.total_dismissals) == (1, 1, 0)
    assert (h.impressions, h.clicks) == ([T0 + 1], [T0 + 5])
    assert h.last_decision_id == d.decision_id
    assert engine.replay().identical


def test_one_bad_feedback_among_good_events_stores_nothing(engine: Engine):
    d = decided(engine)
    before = snapshot(engine, "u1")
    bad = feedback(d, "Promotion Dismissed", d.items[0].offer_id)
    bad["properties"]["decision_id"] = "d999999"
    path = rejected(
        engine,
        page("https://bank.example/cards", user="u1"),
        feedback(d, "Promotion Viewed"),
        bad,
        page("https://bank.example/pension", user="u1"),
    )
    assert path == "$.batch[2].properties.decision_id"
    assert snapshot(engine, "u1") == before


def test_decisions_are_found_in_the_buffer_and_after_flush(engine: Engine):
    d = decided(engine)
    assert engine.decision_log.decision(d.decision_id) is None  # only in the unflushed buffer
    assert engine.ingest_batch(batch(feedback(d, "Promotion Viewed"))).accepted == 1
    engine.flush()
    assert engine.decision_log.decision(d.decision_id) == d
    assert engine.ingest_batch(batch(feedback(d, "Promotion Clicked"))).accepted == 1
    h = engine.profile("u1").offers[d.items[0].offer_id]
    assert (h.total_impressions, h.total_clicks) == (1, 1)


def test_decisions_logged_before_a_restart_are_found(make_engine, tmp_path, catalog, clock):
    path = tmp_path / "restart.sqlite"
    first = Engine(catalog, sqlite_stores(path), clock, new_id=counter_ids("r"))
    d = decided(first)
    first.close()  # flushes the decision log
    second = make_engine("sqlite", path=path)
    assert second.ingest_batch(batch(feedback(d, "Promotion Viewed"))).accepted == 1


def test_a_single_message_reports_paths_from_its_root(engine: Engine):
    d = decided(engine)
    msg = feedback(d, "Promotion Viewed")
    msg["properties"]["decision_id"] = "nope"
    event = engine.parse_message(EventType.TRACK, orjson.dumps(msg))
    stored = engine.event_log.count()
    with pytest.raises(ValidationError) as exc:
        engine.ingest([event], prefix="")
    assert exc.value.path == "$.properties.decision_id"
    assert engine.event_log.count() == stored
