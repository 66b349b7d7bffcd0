"""Devices bound to their customer (guard.devices), apart from HTTP: whose device an
anonymousId is decides whether a browser key may send for it alone; the stateless API worker
reads the same links from the saved state (``LiveProfiles.links_for``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.errors import Forbidden
from nextbest.events import parse_batch
from nextbest.guard import KeyKind, Sender
from nextbest.guard.devices import check_devices, needs_devices
from nextbest.live_profiles import LiveProfiles
from nextbest.profile.identity import IdentityMap, LinkKind
from tests.support import T0, batch, identify, message, page, track


def events(*messages: dict[str, object]):
    return parse_batch(batch(*messages), T0)


def identity() -> IdentityMap:
    """``dev-v`` is victim's device; ``dev-old`` belongs to ``old-id``, aliased to victim."""
    found = IdentityMap()
    found.link_anonymous("dev-v", "victim")
    found.link_alias("old-id", "victim")
    found.link_anonymous("dev-old", "old-id")
    return found


def check(sender: Sender, *messages: dict[str, object], links: IdentityMap | None = None):
    sent = events(*messages)
    check_devices(sender, sent, range(len(sent)), "$.batch", links or identity())


def test_a_browser_key_without_the_customers_token_may_not_send_for_their_device():
    for sender in (
        Sender(KeyKind.BROWSER),
        Sender(KeyKind.BROWSER, bound_user="attacker"),
    ):
        for device in ("dev-v", "dev-old"):
            with pytest.raises(Forbidden, match=r"\$\.batch\[1\]\.anonymousId"):
                check(sender, page("https://x/", anon="dev-new"), page("https://x/", anon=device))


def test_the_customers_token_and_the_banks_keys_may():
    for sender in (
        Sender(KeyKind.BROWSER, bound_user="victim"),
        Sender(KeyKind.BROWSER, bound_user="old-id"),  # an alias of the same customer
        Sender(KeyKind.WRITE),
        Sender(KeyKind.SERVER),
        Sender(KeyKind.ADMIN),
    ):
        check(sender, page("https://x/", anon="dev-v"), page("https://x/", anon="dev-old"))


def test_an_unlinked_device_and_events_naming_a_user_are_not_this_rules_business():
    check(Sender(KeyKind.BROWSER), page("https://x/", anon="dev-new"))
    # an event with the token's userId goes to that user's profile, whatever device
    check(Sender(KeyKind.BROWSER, bound_user="me"), page("https://x/", user="me", anon="dev-v"))


def test_a_login_earlier_in_the_request_binds_the_device_for_what_follows():
    login = identify({}, user="me", anon="dev-fresh")
    after = track("Calculator Used", {"topic": "mortgage"}, anon="dev-fresh")
    check(Sender(KeyKind.BROWSER, bound_user="me"), login, after)
    with pytest.raises(Forbidden):  # linked now: another token may not send for it
        check(Sender(KeyKind.BROWSER, bound_user="other"), login, after)
    # before the login in the same request, the device was nobody's yet
    check(Sender(KeyKind.BROWSER, bound_user="me"), after, login)


def test_only_browser_keys_with_anonymous_events_need_the_links():
    anonymous = events(page("https://x/", anon="d"))
    named = events(
        page("https://x/", user="u", anon="d"), message("alias", user="u", previousId="p")
    )
    assert needs_devices(Sender(KeyKind.BROWSER), anonymous)
    assert not needs_devices(Sender(KeyKind.BROWSER), named)
    assert not needs_devices(Sender(KeyKind.SERVER), anonymous)


class Rows:
    """Saved state rows, as ``StateReads`` reads them (Redis in production)."""

    def __init__(self, rows: dict[tuple[str, str], bytes]) -> None:
        self.rows = rows
        self.reads = 0

    def read_rows(
        self, rows: Sequence[tuple[str, str]], marks: Sequence[str] = ()
    ) -> list[bytes | None]:
        self.reads += 1
        return [self.rows.get(r) for r in rows] + [None] * len(marks)

    def ping(self) -> None:
        return None


def test_the_api_worker_reads_the_same_links_from_the_saved_state(catalog: Catalog):
    saved = Rows(
        {
            (LinkKind.ANON.value, "dev-v"): b"victim",
            (LinkKind.ANON.value, "dev-old"): b"old-id",
            (LinkKind.ALIAS.value, "old-id"): b"victim",
        }
    )
    live = LiveProfiles(saved, catalog)
    book = live.links_for(["old-id"], ["dev-v", "dev-old", "dev-new", None])
    assert book.profiles == {}  # links only: no profile read
    sent = events(page("https://x/", anon="dev-v"), page("https://x/", anon="dev-old"))
    check_devices(Sender(KeyKind.BROWSER, bound_user="old-id"), sent, [0, 1], "", book.identity)
    with pytest.raises(Forbidden, match=r"at \$\.anonymousId"):
        check_devices(Sender(KeyKind.BROWSER), sent, [0, 1], "", book.identity)
