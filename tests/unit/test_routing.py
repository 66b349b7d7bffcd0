"""Where an event is folded with several fold workers (``routing``): pure rules over an
identity map, the same for API workers and fold workers."""

from __future__ import annotations

import pytest

from nextbest.bus.port import partition_of
from nextbest.errors import ConfigError
from nextbest.events.model import Event, EventType
from nextbest.partitioned_fold import parse_partitions
from nextbest.profile.identity import IdentityMap
from nextbest.routing import destination, dissolved, home, joined, moved_links

PARTS = 16


def event(kind: EventType, user: str | None = None, anon: str | None = None, **kw: str) -> Event:
    return Event(
        message_id="m", type=kind, timestamp=0.0, received_at=0.0,
        user_id=user, anonymous_id=anon, **kw,
    )  # fmt: skip


def test_a_customer_is_homed_where_one_fold_worker_put_its_events():
    assert home("u1", PARTS) == partition_of("u:u1", PARTS)
    assert home("anon:d1", PARTS) == partition_of("a:d1", PARTS)


def test_events_go_to_the_customer_their_ids_resolve_to():
    ids = IdentityMap()
    page = event(EventType.PAGE, anon="d1")
    assert destination(ids, page, PARTS) == (home("anon:d1", PARTS), None)
    ids.link_anonymous("d1", "u1")
    assert destination(ids, page, PARTS) == (home("u1", PARTS), None)
    ids.link_alias("u1", "u2")
    assert joined(ids, page) == "u2"
    assert destination(ids, event(EventType.TRACK, user="u1"), PARTS).partition == home("u2", PARTS)


def test_a_login_goes_first_to_the_customer_it_dissolves():
    ids = IdentityMap()
    login = event(EventType.IDENTIFY, user="u1", anon="d1")
    assert dissolved(ids, login) == ["anon:d1"]
    assert moved_links(ids, login) == [("anon", "d1")]
    there = destination(ids, login, PARTS)
    if home("anon:d1", PARTS) != home("u1", PARTS):
        assert there == (home("anon:d1", PARTS), "anon:d1")
    assert destination(ids, login, PARTS, frozen=["anon:d1"]) == (home("u1", PARTS), None)
    ids.link_anonymous("d1", "u1")  # logging in again: nothing to dissolve
    assert dissolved(ids, login) == [] == moved_links(ids, login)
    assert destination(ids, login, PARTS) == (home("u1", PARTS), None)
    shared = event(EventType.IDENTIFY, user="u2", anon="d1")  # the device changes hands
    assert dissolved(ids, shared) == ["u1"]


def test_an_alias_dissolves_the_previous_id_as_a_user_and_as_a_device():
    ids = IdentityMap()
    merge = event(EventType.ALIAS, user="u2", previous_id="u1")
    assert dissolved(ids, merge) == ["anon:u1", "u1"]
    assert moved_links(ids, merge) == [("alias", "u1"), ("anon", "u1")]
    ids.link_alias("u1", "u2")
    assert dissolved(ids, merge) == [] == moved_links(ids, merge)


def test_partitions_are_named_as_ranges_and_lists():
    assert parse_partitions("0-3", 16) == [0, 1, 2, 3]
    assert parse_partitions("0,2,5-6", 16) == [0, 2, 5, 6]
    for bad in ("", "x", "3-1", "0-16"):
        with pytest.raises(ConfigError):
            parse_partitions(bad, 16)
