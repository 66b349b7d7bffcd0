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
(``hold``) or pinned (``pin``: a stitch's move, known here before the joining fold saves its
link).

What a worker caches of its *own* customers is right by construction: only a customer's home
changes which ids belong to it (it folds the stitches joining it and freezes those leaving
it). What it caches of links to other workers' customers may be stale: ``refresh`` reads
them again before an event is sent elsewhere on their word. Links are written only by the
fold that makes them, with where it was made (``linked/<kind>:<id>``: the partition and
stream sequence of that fold, and where the stitch came from); one made on this worker's
partitions past the position being folded would not be loaded (``future``: a safety net, as
a link is saved only with the position of the fold that made it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec

from nextbest.events.model import Event, EventType
from nextbest.profile.book import PROFILE_ROW, ProfileBook
from nextbest.profile.identity import ANON_PREFIX, IdentityMap, LinkKind
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
    """Where a link was made: the partition whose fold made it, at which stream sequence,
    the partition the stitch came from, and the stitch's messageId (a stitch from another
    partition records it even where its fold changed nothing: the freezing side waits for
    it)."""

    partition: int
    seq: int
    came_from: int
    message_id: str = ""


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
        self._members_read: set[str] = set()
        self.linked: dict[tuple[str, str], Linked] = {}
        self._linked_dirty: set[tuple[str, str]] = set()
        #: (kind, key) rows held back from saves until ``release`` (a stitch's freeze,
        #: shown once it is on its way)
        self.held: set[tuple[str, str]] = set()
        #: links never forgotten nor read again until ``unpin`` (a stitch's move, known
        #: here before the joining fold saves it)
        self.pinned: set[tuple[str, str]] = set()
        #: the value a changed link is saved with, where it is not the view's (a link folded
        #: here, then frozen away before it was saved: saved as folded)
        self.saved_as: dict[tuple[str, str], str | None] = {}

        self.loads = 0  # round trips to Redis (metrics, tests)
        #: the positions the last ``prepare`` was given (what later loads compare with)
        self._done: Callable[[int], int] = lambda _p: 0

    # ------------------------------------------------------------------ loading
    def prepare(self, events: Sequence[Event], done: Callable[[int], int]) -> None:
        """Load what folding or routing ``events`` reads: their ids' links (and alias
        chains), then the profiles of the customers they resolve to or join that are homed
        on this worker's partitions. ``done(p)``: the stream sequence partition ``p`` is
        folded up to (a link made past it is ``future``)."""
        self._done = done
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

    def refresh(self, events: Sequence[Event], done: Callable[[int], int]) -> None:
        """Read again the links of these events' ids (and their alias chains) that hold
        nothing unsaved: before an event is sent elsewhere on their word."""
        identity = self.book.identity
        keep = self.book.dirty | self.held | self.pinned
        keys: set[tuple[str, str]] = set()
        for e in events:
            for u in (e.user_id, e.previous_id):
                if u:
                    keys.add((_ALIAS, u))
                    keys.update(self._chain(u))
            for a in (e.anonymous_id, e.previous_id):
                if a:
                    keys.add((_ANON, a))
                    target = identity.anon_to_user.get(a)
                    if target is not None:
                        keys.add((_ALIAS, target))
                        keys.update(self._chain(target))
        dropped = sorted(k for k in keys - keep if self._lru.pop(k, None) is not None)
        for k in keys - keep:
            self.future.pop(k, None)
        # every link dropped is read again (later events of the step were prepared with
        # it), then what the events' ids lead to now
        self._load_links(dropped, done)
        self.prepare(events, done)

    def _chain(self, user: str) -> list[tuple[str, str]]:
        out = []
        alias = self.book.identity.alias_to_user
        for _ in range(_MAX_ALIASES):
            nxt = alias.get(user)
            if nxt is None:
                break
            out.append((_ALIAS, nxt))
            user = nxt
        return out

    def pin(self, keys: Iterable[tuple[str, str]]) -> None:
        self.pinned.update(keys)

    def unpin(self, keys: Iterable[tuple[str, str]]) -> None:
        self.pinned.difference_update(keys)

    def reread(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget these links as this view has them (a move of its own that the joining
        fold has made, or found to change nothing) and read them from Redis now."""
        identity = self.book.identity
        todo = []
        for k in keys:
            if k in self.book.dirty or k in self.held:
                continue
            self.pinned.discard(k)
            self._lru.pop(k, None)
            identity.put_back(k[0], k[1], None)
            todo.append(k)
        if todo:
            self._load_links(sorted(todo), self._done)

    def load_profile(self, customer: str) -> None:
        """Make sure ``customer``'s saved profile (if any) is in the book."""
        self._load_profiles([customer])

    def _load_links(self, keys: list[tuple[str, str]], done: Callable[[int], int]) -> None:
        mine = self.book.dirty | self.held | self.pinned
        todo = sorted({k for k in keys if k not in self._lru and k not in mine})
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
                and linked.seq > done(linked.partition)
            ):
                # made by a fold of this worker's still ahead: not yet a link here
                self.future[kind, key] = Future(linked.came_from)
                continue
            self.future.pop((kind, key), None)
            self._lru[kind, key] = body is not None
            identity.put_back(kind, key, body.decode() if body is not None else None)
            if body is not None and linked is not None:
                self.linked[kind, key] = linked

    def _load_aliases(self, users: set[str], done: Callable[[int], int]) -> None:
        # the whole chain of each user, through links held already (a link in the middle of
        # a chain may be held while the one after it was forgotten: it is read again)
        identity = self.book.identity
        todo = set(users)
        seen: set[str] = set()
        for _ in range(_MAX_ALIASES):
            self._load_links([(_ALIAS, u) for u in todo], done)
            seen |= todo
            nxt = {identity.alias_to_user[u] for u in todo if u in identity.alias_to_user}
            todo = nxt - seen
            if not todo:
                return

    def _load_profiles(self, customers: Iterable[str]) -> None:
        book = self.book
        wanted = set(customers)
        lru = self._lru
        # what holds unsaved changes here is right as it is (a profile dropped included)
        mine = book.dirty | self.held
        todo = sorted(
            c
            for c in wanted
            if (PROFILE_ROW, c) not in lru
            and c not in book.profiles
            and (PROFILE_ROW, c) not in mine
        )
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
        """The (kind, id) links pointing at ``customer``: as changed here and not saved
        yet, else as saved (read again each time: stitches only ask, and the row's writer
        may have been another worker's since)."""
        if customer in self._members_dirty or customer in self._members_read:
            return self._members[customer]
        (body,) = self.reads.read_rows([(MEMBERS_ROW, customer)])
        self.loads += 1
        found = set(_decode_members(body)) if body is not None else set()
        self._members[customer] = found
        self._members_read.add(customer)
        return found

    def begin_step(self) -> None:
        """A new batch: members rows are read again when next asked (once per batch: a
        fold reads them before it changes anything, so a failed read changes nothing)."""
        self._members_read.clear()

    def load_members(self, customer: str) -> None:
        """Make ``identity.ids_of(customer)`` exact: the members of ``customer`` and,
        through its aliases, of every user it absorbed, and no other link to them (a link
        cached here may have moved on since)."""
        identity = self.book.identity
        keep = self.book.dirty | self.held | self.pinned
        seen: set[str] = set()
        moved: set[tuple[str, str]] = set()
        todo = [customer]
        while todo:
            user = todo.pop()
            if user in seen:
                continue
            seen.add(user)
            found = self.members(user)
            for k in identity.linked_to(user) - found - keep:
                identity.put_back(k[0], k[1], None)  # moved on: read again below
                self._lru.pop(k, None)
                moved.add(k)
            for k in found - keep:
                if identity.target(*k) != user:
                    identity.put_back(k[0], k[1], user)
                self._lru[k] = True
            todo.extend(key for kind, key in found if kind == _ALIAS)
        if moved:
            self._load_links(sorted(moved), self._done)

    def linked_to(
        self, kind: str, key: str, target: str | None, before: str | None, *, leaving: bool
    ) -> None:
        """A link changed (``before`` -> ``target``): the members rows follow. ``target``'s
        by its home (this fold joined it); ``before``'s only when ``leaving`` (the id leaves
        a customer homed here: ``before`` is it, or a user it absorbed, whose row only this
        home writes from then on)."""
        if leaving and before is not None and before != target:
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
        for k in keys:
            self.saved_as.pop(k, None)
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
        return [self.row(kind, key) for kind, key in sorted(self.held)]

    def hold(self, keys: Iterable[tuple[str, str]]) -> None:
        """Keep these rows out of saves until ``release`` (and never forget them)."""
        self.held.update(keys)

    def release(self) -> None:
        """The held rows were saved."""
        for kind, key in self.held:
            self.book.dirty.discard((kind, key))
            self._lru[kind, key] = True
        self.held.clear()

    def row(self, kind: str, key: str) -> StateRow:
        book = self.book
        if kind == PROFILE_ROW:
            return profile_row(key, book.profiles.get(key))
        if (kind, key) in self.saved_as:
            return link_row(kind, key, self.saved_as[kind, key])
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
            if k in dirty or k in self.held or k in self.pinned:
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
                self._members_read.discard(customer)
        return gone

    def __len__(self) -> int:
        return len(self._lru)

    def erase(self, users: Collection[str], anons: Collection[str]) -> tuple[int, list[StateRow]]:
        """Erase a customer from this view (``scaled_erasure``): their profiles, links,
        members rows and link positions leave memory, nothing of them held, pinned or unsaved
        any more; the rows to delete in Redis, every one of theirs, homed here or not; how
        many of their profiles this view held."""
        book = self.book
        keys = [*users, *(ANON_PREFIX + a for a in anons)]
        held = sum(book.profiles.pop(k, None) is not None for k in keys)
        links = {(_ALIAS, u) for u in users} | {(_ANON, a) for a in anons}
        links.update(book.identity.forget(users, anons))
        gone = {*((PROFILE_ROW, k) for k in keys), *links}
        for k in gone:
            book.dirty.discard(k)
            self.held.discard(k)
            self.pinned.discard(k)
            self._lru.pop(k, None)
            self.saved_as.pop(k, None)
        for k in links:
            self.future.pop(k, None)
            self.linked.pop(k, None)
            self._linked_dirty.discard(k)
        for c in keys:
            self._members.pop(c, None)
            self._members_dirty.discard(c)
            self._members_read.discard(c)
        rows = [StateRow(kind, key, None) for kind, key in sorted(gone)]
        rows += [StateRow(MEMBERS_ROW, c, None) for c in keys]
        rows += [StateRow(LINKED_ROW, _linked_key(kind, key), None) for kind, key in sorted(links)]
        return held, rows

    def forget(self) -> None:
        """Drop everything (after a failure left the book unsure): reloaded on demand."""
        self.book.profiles.clear()
        self.book.identity = IdentityMap()
        self.book.dirty.clear()
        self._lru.clear()
        self.future.clear()
        self._members.clear()
        self._members_dirty.clear()
        self._members_read.clear()
        self.linked.clear()
        self._linked_dirty.clear()
        self.held.clear()
        self.pinned.clear()

    def known(self) -> Mapping[tuple[str, str], bool]:
        """The entries loaded (or saved): (kind, key) -> the row exists."""
        return self._lru
