"""The profile book alone: pure folding and stitching, the log supplied as a callable."""

from __future__ import annotations

from collections.abc import Collection

import msgspec
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.profile.book import PROFILE_ROW, ProfileBook
from tests.support import T0, batch, identify, message, page


def logged(*messages: dict[str, object]) -> list[Event]:
    return parse_batch(batch(*messages), T0 + 60)


class Log:
    """The event log as the book sees it: events by position, read by customer ids."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.reads = 0

    def events_of(self, users: Collection[str], anons: Collection[str], upto: int) -> list[Event]:
        self.reads += 1
        return [
            e
            for e in self.events[:upto]
            if e.user_id in users or (e.anonymous_id is not None and e.anonymous_id in anons)
        ]


def play(book: ProfileBook, log: Log, events: list[Event]) -> None:
    for event in events:
        log.events.append(event)
        book.apply(len(log.events), event, log.events_of)


def test_a_stitch_rebuilds_the_user_from_the_logged_events_of_every_linked_id(catalog: Catalog):
    book, log = ProfileBook(catalog.matcher, catalog.fold_config), Log()
    play(
        book,
        log,
        logged(
            page("https://bank.example/mortgages/rates", anon="dev-1", at=T0),
            page("https://bank.example/mortgages/calculator", anon="dev-1", at=T0 + 1),
            page("https://bank.example/cards", user="u1", at=T0 + 2),
        ),
    )
    assert set(book.profiles) == {"anon:dev-1", "u1"}
    assert log.reads == 0  # plain folds never read the log
    play(book, log, logged(identify({}, user="u1", anon="dev-1", at=T0 + 3)))
    assert log.reads == 1
    assert set(book.profiles) == {"u1"}
    merged = book.profiles["u1"]
    assert merged.interests["mortgage"].total == 2
    assert book.resolve(None, "dev-1") == "u1"
    assert (PROFILE_ROW, "anon:dev-1") in book.dirty  # the merged-away profile is deleted
    assert book.seq == 4


def test_a_shared_device_never_folds_another_users_events(catalog: Catalog):
    book, log = ProfileBook(catalog.matcher, catalog.fold_config), Log()
    play(
        book,
        log,
        logged(
            page("https://bank.example/mortgages/rates", user="parent", anon="tablet", at=T0),
            page("https://bank.example/cards", user="teen", anon="tablet", at=T0 + 1),
            identify({}, user="teen", anon="tablet", at=T0 + 2),
        ),
    )
    teen = book.profiles["teen"]
    assert "mortgage" not in teen.interests
    assert teen.interests["cards"].total == 1


def test_the_same_customer_rule_follows_links(catalog: Catalog):
    book, log = ProfileBook(catalog.matcher, catalog.fold_config), Log()
    play(book, log, logged(identify({}, user="u1", anon="dev-1")))
    from_device = logged(message("track", anon="dev-1", event="X"))[0]
    stranger = logged(message("track", anon="dev-9", event="X"))[0]
    assert book.same_customer("u1", from_device)
    assert book.same_customer("anon:dev-1", from_device)
    assert not book.same_customer("u1", stranger)


def test_a_decision_reads_the_anonymous_profile_only_when_asked(catalog: Catalog):
    book, log = ProfileBook(catalog.matcher, catalog.fold_config), Log()
    play(
        book,
        log,
        logged(
            page("https://bank.example/cards", user="u1", at=T0),
            identify({}, user="u1", anon="dev-1", at=T0 + 1),
            page("https://bank.example/mortgages/rates", anon="dev-1", at=T0 + 2),
        ),
    )
    assert book.for_decision(None, "dev-1", anonymous_only=False).customer_id == "u1"
    device = book.for_decision(None, "dev-1", anonymous_only=True)
    assert device.customer_id == "anon:dev-1"
    assert device.interests == {}  # what the device did anonymously: nothing yet
    assert book.for_decision("nobody", None, anonymous_only=False).event_count == 0


def test_rows_to_save_are_all_after_a_replace_then_only_the_dirty_ones(catalog: Catalog):
    book, log = ProfileBook(catalog.matcher, catalog.fold_config), Log()
    play(
        book,
        log,
        logged(identify({}, user="u1", anon="dev-1"), page("https://x.example/", user="u2")),
    )
    assert book.row_keys() == {(PROFILE_ROW, "u1"), (PROFILE_ROW, "u2"), ("anon", "dev-1")}
    book.dirty, book.replace = set(), False
    play(book, log, logged(page("https://x/", user="u2")))
    assert book.row_keys() == {(PROFILE_ROW, "u2")}
    assert book.link_target("anon", "dev-1") == "u1"
    assert msgspec.msgpack.encode(book.get("u2")) == msgspec.msgpack.encode(book.profiles["u2"])


def test_a_stitch_whose_read_fails_leaves_the_book_as_it_was(catalog: Catalog):
    book, log = ProfileBook(catalog.matcher, catalog.fold_config), Log()
    play(
        book,
        log,
        logged(
            page("https://bank.example/mortgages/rates", anon="dev-1", at=T0),
            page("https://bank.example/cards", user="u1", at=T0 + 1),
        ),
    )
    before = {k: msgspec.msgpack.encode(p) for k, p in book.profiles.items()}
    seq, dirty = book.seq, set(book.dirty)

    def unreachable(users: Collection[str], anons: Collection[str], upto: int) -> list[Event]:
        raise ConnectionError("the event log is unreachable")

    stitch = logged(identify({}, user="u1", anon="dev-1", at=T0 + 2))[0]
    with pytest.raises(ConnectionError):
        book.apply(3, stitch, unreachable)
    assert {k: msgspec.msgpack.encode(p) for k, p in book.profiles.items()} == before
    assert (book.seq, book.dirty) == (seq, dirty)
    assert book.resolve(None, "dev-1") == "anon:dev-1"
    log.events.append(stitch)
    book.apply(3, stitch, log.events_of)  # the same event, once the log answers
    assert set(book.profiles) == {"u1"}


def test_linking_a_device_reads_only_that_devices_events(catalog: Catalog):
    """A customer with many devices: each new link reads the new device's events, not the
    customer's whole history (no full refold per link), and the profile comes out with
    every device's browsing counted once."""
    book = ProfileBook(catalog.matcher, catalog.fold_config)
    log = Log()
    reads: list[tuple[frozenset[str], frozenset[str]]] = []
    plain = log.events_of

    def spying(users: Collection[str], anons: Collection[str], upto: int) -> list[Event]:
        reads.append((frozenset(users), frozenset(anons)))
        return plain(users, anons, upto)

    log.events_of = spying  # type: ignore[method-assign]
    for n in range(5):
        play(book, log, logged(page("https://b.example/mortgages/x", anon=f"d{n}", at=T0 + n)))
        play(book, log, logged(identify({}, user="u1", anon=f"d{n}", at=T0 + n + 0.5)))
    assert reads == [(frozenset(), frozenset({f"d{n}"})) for n in range(5)]
    profile = book.get("u1")
    assert profile is not None
    assert profile.interests["mortgage"].total == 5
    assert sorted(profile.anonymous_ids) == [f"d{n}" for n in range(5)]
    assert all(book.profiles.get(f"anon:d{n}") is None for n in range(5))


def test_an_older_device_identify_does_not_override_the_customers_newer_traits(
    catalog: Catalog,
):
    book = ProfileBook(catalog.matcher, catalog.fold_config)
    log = Log()
    play(book, log, logged(identify({"city": "Old"}, anon="d1", at=T0)))
    play(book, log, logged(identify({"city": "New"}, user="u1", at=T0 + 100)))
    play(book, log, logged(identify({}, user="u1", anon="d1", at=T0 + 200)))
    profile = book.get("u1")
    assert profile is not None
    assert profile.traits["city"] == "New"
