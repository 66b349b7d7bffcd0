"""What a key may send and ask for (guard.senders), apart from HTTP."""

from __future__ import annotations

import pytest

from nextbest.errors import Forbidden
from nextbest.events import parse_batch
from nextbest.guard import KeyKind, Scope, Sender, check_decider, check_senders
from tests.support import T0, batch, identify, message, page, track

BROWSER = Sender(KeyKind.BROWSER)
BOUND = Sender(KeyKind.BROWSER, bound_user="u1")
POSTED = {"amount": 5, "currency": "EUR"}


def events(*messages: dict[str, object]):
    return parse_batch(batch(*messages), T0)


@pytest.mark.parametrize(
    ("sent", "where"),
    [
        (message("alias", user="u1", previousId="old"), "$.batch[0].type"),
        (
            track("Transaction Posted", {"amount": 5, "currency": "EUR"}, user="u1"),
            "$.batch[0].event",
        ),
        (identify({"balance": 10}, anon="dev-1"), "$.batch[0].traits"),
        (page("https://x.example/", user="u2"), "$.batch[0].userId"),
    ],
)
def test_a_browser_key_speaks_only_for_its_own_session(sent, where):
    with pytest.raises(Forbidden, match=where.replace("$", r"\$").replace("[", r"\[")):
        check_senders(BOUND, events(sent), "$.batch")


def test_write_and_server_keys_send_for_anyone():
    sent = events(message("alias", user="u1", previousId="old"), page("https://x/", user="u2"))
    for kind in (KeyKind.WRITE, KeyKind.SERVER, KeyKind.ADMIN):
        check_senders(Sender(kind), sent, "$.batch")
    check_senders(BOUND, events(page("https://x.example/", user="u1")), "$.batch")


def test_who_may_decide_for_whom():
    assert check_decider(BROWSER, None) is True  # the device's anonymous profile only
    assert check_decider(Sender(KeyKind.SERVER), None) is False
    assert check_decider(Sender(KeyKind.SERVER), "u9") is False
    assert check_decider(BOUND, "u1") is False
    with pytest.raises(Forbidden):
        check_decider(BOUND, "u2")
    with pytest.raises(Forbidden):
        check_decider(Sender(KeyKind.WRITE), "u1")


def test_scopes_by_key_kind():
    assert Sender(KeyKind.NONE).scopes == {Scope.PUBLIC}
    assert Scope.PROFILES_READ in Sender(KeyKind.SERVER).scopes
    assert Scope.PROFILES_READ not in BOUND.scopes
    assert Sender(KeyKind.ADMIN).scopes == set(Scope)
    with pytest.raises(Forbidden, match="browser key may not use a route that needs admin"):
        BOUND.require(Scope.ADMIN)


def test_the_engine_checks_the_sender_before_storing_or_deciding(engine):
    from nextbest.decide import DecisionRequest

    before = engine.event_log.count()
    with pytest.raises(Forbidden):
        engine.ingest_as(BOUND, events(page("https://x.example/", user="u2")), "$.batch")
    assert engine.event_log.count() == before
    engine.ingest_as(BOUND, events(page("https://x.example/", user="u1")), "$.batch")
    assert engine.event_log.count() == before + 1
    with pytest.raises(Forbidden):
        engine.decide_as(BOUND, DecisionRequest(placement="home_feed"), user_id="u2")
    engine.ingest_batch(batch(identify({}, user="u1", anon="dev-1")))
    seen = engine.decide_as(BROWSER, DecisionRequest(placement="home_feed"), anonymous_id="dev-1")
    assert seen.customer_id == "anon:dev-1"  # the device alone, not the customer behind it
    server = Sender(KeyKind.SERVER)
    full = engine.decide_as(server, DecisionRequest(placement="home_feed"), anonymous_id="dev-1")
    assert full.customer_id == "u1"
