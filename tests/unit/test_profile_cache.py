"""A fold worker's bounded cache of profiles and links (``profile_cache``), over saved rows
held in a dict: what it loads for a batch, and what it forgets."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from nextbest.catalog.compiled import Catalog
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.profile.book import ProfileBook
from nextbest.profile_cache import ProfileCache
from tests.support import T0, batch, message

PARTITIONS = 4


class Rows:
    """Saved rows by (kind, key), counting the reads."""

    def __init__(self, rows: dict[tuple[str, str], bytes]) -> None:
        self.rows = rows
        self.reads = 0

    def read_rows(
        self, rows: Sequence[tuple[str, str]], marks: Sequence[str] = ()
    ) -> list[bytes | None]:
        self.reads += 1
        return [self.rows.get(r) for r in rows] + [None for _ in marks]

    def ping(self) -> None:
        return None


def tracked(user: str) -> Event:
    m = message("track", event="x", user=user, at=T0)
    return parse_batch(batch(m), T0 + 60)[0]


def cache_over(catalog: Catalog, rows: Rows, capacity: int) -> ProfileCache:
    book = ProfileBook(catalog.matcher, catalog.fold_config)
    return ProfileCache(rows, book, PARTITIONS, range(PARTITIONS), capacity=capacity)


def test_an_alias_chain_is_followed_to_its_end_through_links_held_already(catalog: Catalog):
    # u1 -> u6 -> u7 -> u3; the cache forgot u1's and u7's links but still held u6's: the
    # next batch reads both again and the chain ends at u3, not at u7
    rows = Rows({("alias", "u1"): b"u6", ("alias", "u6"): b"u7", ("alias", "u7"): b"u3"})
    cache = cache_over(catalog, rows, capacity=100)
    cache.prepare([tracked("u1")], lambda _p: 0)
    identity = cache.book.identity
    assert identity.canonical_user("u1") == "u3"
    for k in (("alias", "u1"), ("alias", "u7")):
        del cache._lru[k]
        identity.put_back(k[0], k[1], None)
    assert identity.canonical_user("u1") == "u1"
    cache.prepare([tracked("u1")], lambda _p: 0)
    assert identity.canonical_user("u1") == "u3"


def test_members_are_read_once_per_batch_and_again_in_the_next(catalog: Catalog):
    encode = msgspec.msgpack.encode
    rows = Rows({("members", "u3"): encode([("alias", "u7")])})
    cache = cache_over(catalog, rows, capacity=100)
    cache.begin_step()
    assert cache.members("u3") == {("alias", "u7")}
    rows.rows[("members", "u3")] = encode([])  # another worker's save: no members now
    assert cache.members("u3") == {("alias", "u7")}  # the batch reads it once
    cache.begin_step()
    assert cache.members("u3") == set()


def test_an_erased_customer_leaves_the_view_and_every_row_of_theirs_is_deleted(catalog: Catalog):
    encode = msgspec.msgpack.encode
    rows = Rows(
        {
            ("alias", "old"): b"u1",
            ("anon", "dev"): b"u1",
            ("members", "u1"): encode([("alias", "old"), ("anon", "dev")]),
        }
    )
    cache = cache_over(catalog, rows, capacity=100)
    cache.prepare([tracked("old")], lambda _p: 0)
    cache.load_members("u1")
    identity = cache.book.identity
    assert identity.ids_of("u1") == ({"u1", "old"}, {"dev"})
    cache.book.dirty.add(("anon", "dev"))  # folded here, not saved: never saved now
    held, deleted = cache.erase(["u1", "old"], ["dev", "old"])
    assert held == 0
    assert identity.ids_of("u1") == ({"u1"}, set())
    assert not cache.book.dirty
    assert {(r.kind, r.key) for r in deleted if r.body is None} >= {
        ("profile", "u1"),
        ("profile", "anon:dev"),
        ("alias", "old"),
        ("anon", "dev"),
        ("members", "u1"),
        ("linked", "anon:dev"),
    }
    assert all(r.body is None for r in deleted)
