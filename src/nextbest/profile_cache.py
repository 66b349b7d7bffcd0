"""A fold worker's profiles and identity links, read from Redis on demand: a bounded cache
in front of the state the fold workers save (``partitioned_fold``), never the whole book.

    prepare(events, done)  -> the identity links the events' ids follow and the profiles of
                              the customers they resolve to (those homed on this worker's
                              partitions), loaded into ``book`` in a few MGETs
    members(customer)      -> the ids linked to a customer (its ``members/<key>`` row): what
                              an alias's rebuild and the learner's "same customer" read
    rows(changes)          -> the changed rows to save (profiles, links, link positions,
                              members)
    trim()                 -> forget the least recently used clean entries past ``capacity``

``book`` is a plain ``ProfileBook`` (the pure fold): the cache only decides what is in it.
An entry changed since it was saved is never forgotten, nor one held back for a later save
(``hold``). Links a worker reads from Redis carry where they were made (``linked/<kind>:<id>``:
the partition and stream sequence of the fold that made them, and the partition they came
from): a link made by a fold on one of this worker's partitions *after* the position it is
folding is not loaded (it does not exist yet at that point of the stream: the event that
makes it is still ahead); events of its ids are sent to where the link came from, which
sends them back once it holds (``future``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec

from nextbest.events.model import Event, EventType
from nextbest.profile.book import PROFILE_ROW, ProfileBook
from nextbest.profile.identity import IdentityMap, LinkKind
from nextbest.profile.model import Profile
from nextbest.routing import home
from nextbest.store.port import StateReads, StateRow
from nextbest.store.snapshot import link_row, profile_row

__all__ = ["LINKED_ROW", "MEMBERS_ROW", "Linked", "ProfileCache"]

#: ``linked/<kind>:<id>``: where a link was made (``Linked``, msgpack)
LINKED_ROW = "linked"
#: ``members/<customer>``: the (kind, id) links that point at the customer (msgpack)
MEMBERS_ROW = "members"
_ALIAS = LinkKind.ALIAS.value
_ANON = LinkKind.ANON.value
#: alias chains are short; a cycle cannot hang a load
_MAX_ALIASES = 32

_decode_profile = msgspec.msgpack.Decoder(Profile).decode
_encode = msgspec.msgpack.Encoder().encode


class Linked(msgspec.Struct, array_like=True, frozen=True):
    """Where a link was made: the partition whose fold made it, at which stream sequence
    (0: not yet known, the stitch still on its way), and the partition it came from (the
    customer it left was homed there)."""

    partition: int
    seq: int
    came_from: int


_decode_linked = msgspec.msgpack.Decoder(Linked).decode
_decode_members = msgspec.msgpack.Decoder(list[tuple[str, str]]).decode


class Future(NamedTuple):
    """A link not made yet at this worker's position: forward its ids' events there."""

    came_from: int


def _linked_key(kind: str, key: str) -> str:
    return f"{kind}:{key}"


class ProfileCache:
    def __init__(
        self,
        reads: StateReads,
        book: ProfileBook,
        partitions: int,
        mine: Iterable[int],
        *,
        capacity: int = 100_000,
    ) -> None:
        self.reads = reads
        self.book = book
        self.partitions = partitions
        self.mine = frozenset(mine)
        self.capacity = capacity
        #: entries loaded (profiles, links, members), least recently used first; the value
        #: says whether the row existed
        self._lru: OrderedDict[tuple[str, str], bool] = OrderedDict()
        #: links not made yet at the position being folded (``Future``), by (kind, id)
        self.future: dict[tuple[str, str], Future] = {}
        #: members rows loaded or changed: customer -> its (kind, id) links
        self._members: dict[str, set[tuple[str, str]]] = {}
        #: rows changed and not saved yet beyond the book's own (members, link positions)
        self._members_dirty: set[str] = set()
        self.linked: dict[tuple[str, str], Linked] = {}
        self._linked_dirty: set[tuple[str, str]] = set()
        #: (kind, key) rows held back from saves until ``release`` (a stitch's freeze,
        #: shown once it is on its way)
        self.held: set[tuple[str, str]] = set()
        self.loads = 0  # round trips to Redis (metrics, tests)

    # ------------------------------------------------------------------ loading
    def prepare(self, events: Sequence[Event], done: Callable[[int], int]) -> None:
        """Load what folding or routing ``events`` reads: their ids' links (and alias
        chains), then the profiles of the customers they resolve to or join that are homed
        on this worker's partitions. ``done(p)``: the stream sequence partition ``p`` is
        folded up to (a link made past it is ``future``)."""
        users: set[str] = set()
        anons: set[str] = set()
        for e in events:
            if e.user_id:
                users.add(e.user_id)
            if e.anonymous_id:
                anons.add(e.anonymous_id)
            if e.previous_id:
                users.add(e.previous_id)
                anons.add(e.previous_id)
        self._load_links([(_ANON, a) for a in anons] + [(_ALIAS, u) for u in users], done)
        identity = self.book.identity
        targets = {identity.anon_to_user[a] for a in anons if a in identity.anon_to_user}
        self._load_aliases(users | targets, done)
        customers: set[str] = set()
        for e in events:
            if not e.user_id and not e.anonymous_id:
                continue
            customers.add(identity.resolve(e.user_id, e.anonymous_id))
            if e.type is EventType.IDENTIFY and e.anonymous_id:  # a local stitch drops it
                customers.add(identity.resolve(None, e.anonymous_id))
            if e.type is EventType.ALIAS and e.previous_id:
                customers.add(identity.resolve(e.previous_id, None))
                customers.add(identity.resolve(None, e.previous_id))
        self._load_profiles(c for c in customers if home(c, self.partitions) in self.mine)

    def load_profile(self, customer: str) -> None:
        """Make sure ``customer``'s saved profile (if any) is in the book."""
        self._load_profiles([customer])

    def _load_links(self, keys: list[tuple[str, str]], done: Callable[[int], int]) -> None:
        todo = sorted({k for k in keys if k not in self._lru and k not in self.held})
        for k in keys:
            if k in self._lru:
                self._lru.move_to_end(k)
        if not todo:
            return
        rows = [*todo, *((LINKED_ROW, _linked_key(kind, key)) for kind, key in todo)]
        bodies = self.reads.read_rows(rows)
        self.loads += 1
        identity = self.book.identity
        n = len(todo)
        for (kind, key), body, where in zip(todo, bodies[:n], bodies[n:], strict=True):
            linked = _decode_linked(where) if where is not None else None
            if (
                body is not None
                and linked is not None
                and linked.partition in self.mine
                and (linked.seq == 0 or linked.seq > done(linked.partition))
            ):
                # made by a fold of this worker's still ahead: not yet a link here
                self.future[kind, key] = Future(linked.came_from)
                continue
            self.future.pop((kind, key), None)
            self._lru[kind, key] = body is not None
            if body is not None:
                identity.load(kind, key, body.decode())
                if linked is not None:
                    self.linked[kind, key] = linked

    def _load_aliases(self, users: set[str], done: Callable[[int], int]) -> None:
        identity = self.book.identity
        todo = users
        for _ in range(_MAX_ALIASES):
            self._load_links([(_ALIAS, u) for u in todo], done)
            nxt = {identity.alias_to_user[u] for u in todo if u in identity.alias_to_user}
            todo = {u for u in nxt if (_ALIAS, u) not in self._lru}
            if not todo:
                return

    def _load_profiles(self, customers: Iterable[str]) -> None:
        book = self.book
        wanted = set(customers)
        lru = self._lru
        todo = sorted(c for c in wanted if (PROFILE_ROW, c) not in lru and c not in book.profiles)
        for c in wanted:
            if (PROFILE_ROW, c) in self._lru:
                self._lru.move_to_end((PROFILE_ROW, c))
        if not todo:
            return
        bodies = self.reads.read_rows([(PROFILE_ROW, c) for c in todo])
        self.loads += 1
        for customer, body in zip(todo, bodies, strict=True):
            self._lru[PROFILE_ROW, customer] = body is not None
            if body is not None:
                book.profiles[customer] = _decode_profile(body)

    # ------------------------------------------------------------------ members
    def members(self, customer: str) -> set[tuple[str, str]]:
        """The (kind, id) links pointing at ``customer`` (loaded with those links, so that
        ``identity.ids_of`` sees them), read once."""
        found = self._members.get(customer)
        if found is None:
            (body,) = self.reads.read_rows([(MEMBERS_ROW, customer)])
            self.loads += 1
            found = set(_decode_members(body)) if body is not None else set()
            self._members[customer] = found
            identity = self.book.identity
            for kind, key in found:
                if identity.target(kind, key) is None:
                    identity.load(kind, key, customer)
                    self._lru[kind, key] = True
        return found

    def load_members(self, customer: str) -> None:
        """``members`` of ``customer`` and, through its aliases, of every user it absorbed:
        what ``identity.ids_of(customer)`` needs."""
        seen: set[str] = set()
        todo = [customer]
        while todo:
            user = todo.pop()
            if user in seen:
                continue
            seen.add(user)
            todo.extend(k for kind, k in self.members(user) if kind == _ALIAS)

    def linked_to(self, kind: str, key: str, target: str | None, before: str | None) -> None:
        """A link changed (``before`` -> ``target``): the members rows of both customers
        follow (only the home of each writes its own)."""
        if before is not None and before != target and home(before, self.partitions) in self.mine:
            self.members(before).discard((kind, key))
            self._members_dirty.add(before)
        if target is not None and home(target, self.partitions) in self.mine:
            self.members(target).add((kind, key))
            self._members_dirty.add(target)

    def mark_linked(self, kind: str, key: str, linked: Linked) -> None:
        """Record where a link was made (saved with it)."""
        self.linked[kind, key] = linked
        self._linked_dirty.add((kind, key))
        self.future.pop((kind, key), None)

    # ------------------------------------------------------------------ saving
    def take_rows(
        self,
    ) -> tuple[list[StateRow], set[tuple[str, str]], set[str], set[tuple[str, str]]]:
        """The rows changed since the last save, but those held back; and what was taken
        (for ``keep`` when the save fails)."""
        book = self.book
        keys = {k for k in book.dirty if k not in self.held}
        book.dirty -= keys
        members = set(self._members_dirty)
        self._members_dirty.clear()
        linked = {k for k in self._linked_dirty if k not in self.held}
        self._linked_dirty -= linked
        rows = [self.row(kind, key) for kind, key in sorted(keys)]
        for row in rows:
            self._lru[row.kind, row.key] = row.body is not None
            self._lru.move_to_end((row.kind, row.key))
        rows.extend(self._members_row(c) for c in sorted(members))
        rows.extend(self._linked_row(kind, key) for kind, key in sorted(linked))
        return rows, keys, members, linked

    def keep(
        self, keys: set[tuple[str, str]], members: set[str], linked: set[tuple[str, str]]
    ) -> None:
        """A save of ``take_rows``'s rows failed: they are to be saved next time."""
        self.book.dirty |= keys
        self._members_dirty |= members
        self._linked_dirty |= linked

    def held_rows(self) -> list[StateRow]:
        """The rows held back (``hold``), as they are now."""
        out = []
        for kind, key in sorted(self.held):
            if kind == LINKED_ROW:
                link_kind, _, link_key = key.partition(":")
                out.append(self._linked_row(link_kind, link_key))
            else:
                out.append(self.row(kind, key))
        return out

    def hold(self, keys: Iterable[tuple[str, str]]) -> None:
        """Keep these rows out of saves until ``release`` (and never forget them)."""
        for kind, key in keys:
            self.held.add((kind, key))
            if kind in (_ANON, _ALIAS):
                self.held.add((LINKED_ROW, _linked_key(kind, key)))

    def release(self) -> None:
        """The held rows were saved."""
        for kind, key in self.held:
            if kind == LINKED_ROW:
                link_kind, _, link_key = key.partition(":")
                self._linked_dirty.discard((link_kind, link_key))
            else:
                self.book.dirty.discard((kind, key))
                self._lru[kind, key] = True
        self.held.clear()

    def row(self, kind: str, key: str) -> StateRow:
        book = self.book
        if kind == PROFILE_ROW:
            return profile_row(key, book.profiles.get(key))
        return link_row(kind, key, book.link_target(kind, key))

    def _members_row(self, customer: str) -> StateRow:
        found = self._members.get(customer) or set()
        body = _encode(sorted(found)) if found else None
        return StateRow(MEMBERS_ROW, customer, body)

    def _linked_row(self, kind: str, key: str) -> StateRow:
        linked = self.linked.get((kind, key))
        body = _encode(linked) if linked is not None else None
        return StateRow(LINKED_ROW, _linked_key(kind, key), body)

    # ------------------------------------------------------------------ bounds
    def trim(self) -> int:
        """Forget the least recently used entries past ``capacity`` that hold nothing
        unsaved; how many went."""
        gone = 0
        book = self.book
        identity = book.identity
        dirty = book.dirty
        over = len(self._lru) - self.capacity
        if over <= 0:
            return 0
        for k in list(self._lru):
            if gone >= over:
                break
            if k in dirty or k in self.held:
                continue
            kind, key = k
            del self._lru[k]
            if kind == PROFILE_ROW:
                book.profiles.pop(key, None)
            else:
                identity.put_back(kind, key, None)
                self.linked.pop(k, None)
            gone += 1
        # members rows are rebuilt from Redis when next asked (never dirty here)
        for customer in [c for c in self._members if c not in self._members_dirty]:
            if (PROFILE_ROW, customer) not in self._lru:
                del self._members[customer]
        return gone

    def __len__(self) -> int:
        return len(self._lru)

    def forget(self) -> None:
        """Drop everything (after a failure left the book unsure): reloaded on demand."""
        self.book.profiles.clear()
        self.book.identity = IdentityMap()
        self.book.dirty.clear()
        self._lru.clear()
        self.future.clear()
        self._members.clear()
        self._members_dirty.clear()
        self.linked.clear()
        self._linked_dirty.clear()
        self.held.clear()

    def known(self) -> Mapping[tuple[str, str], bool]:
        """The entries loaded (or saved): (kind, key) -> the row exists."""
        return self._lru
