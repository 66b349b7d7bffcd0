"""Live profiles as a stateless worker reads them: point reads of the state a fold worker saves
(Redis), one customer at a time, never the whole book.

    read(user, device, anonymous_only) -> the profile a decision reads, the bus position
                                          the state was folded up to and the ids' write
                                          marks (one MGET; a second only when the id is
                                          linked to another customer, or its mark names
                                          another partition than the customer's home)
    book_for(users, devices)           -> a ``ProfileBook`` holding only these ids' identity
                                          links and customers' profiles: what the shared
                                          ingestion checks (``ingestion``) read
    links_for(users, devices)          -> a ``ProfileBook`` holding only these ids' identity
                                          links: whose device each is (``guard.devices``)
    model()                            -> the published model copy's version, and its bytes
                                          when it changed
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from nextbest.bus.port import partition_of
from nextbest.catalog.compiled import Catalog
from nextbest.events.model import Event
from nextbest.profile.book import PROFILE_ROW, ProfileBook, new_profile
from nextbest.profile.identity import ANON_PREFIX, IdentityMap, LinkKind
from nextbest.profile.model import Profile
from nextbest.store.port import StateReads
from nextbest.store.snapshot import (
    FOLD_ROW,
    LEARNER_ROW,
    POSITION,
    PUBLISHED,
    ModelVersion,
)

__all__ = ["MARK_PARTITIONS", "LiveProfiles", "mark_of", "mark_value", "written_keys"]

_decode_profile = msgspec.msgpack.Decoder(Profile).decode
_decode_version = msgspec.json.Decoder(ModelVersion).decode
_POSITION = (FOLD_ROW, POSITION)
#: a write mark is ``seq * MARK_PARTITIONS + partition``: the stream sequence of the last
#: event published for the id and the partition it went to (a Lua max keeps the latest)
MARK_PARTITIONS = 4_096
#: alias chains are short; a cycle cannot hang a read
_MAX_ALIASES = 32


def _text(body: bytes | None) -> str | None:
    return None if body is None else body.decode()


def _position(body: bytes | None) -> int:
    return int(body) if body is not None else 0


def mark_value(seq: int, partition: int) -> int:
    """The write mark of an event published at stream sequence ``seq`` on ``partition``."""
    return seq * MARK_PARTITIONS + partition


def mark_of(value: int) -> tuple[int, int]:
    """(stream sequence, partition) of a write mark."""
    return divmod(value, MARK_PARTITIONS)


def _highest(seqs: list[bytes | None]) -> tuple[int, int] | None:
    """The latest of the marks read: (stream sequence, partition); None when none."""
    found = max((int(s) for s in seqs if s is not None), default=0)
    return mark_of(found) if found else None


def visible_row(partition: int) -> tuple[str, str]:
    """``fold/visible-<p>``: what several fold workers save per partition (the stream
    sequence every event of it is visible up to)."""
    return (FOLD_ROW, f"visible-{partition}")


def written_keys(user_id: str | None, anonymous_id: str | None) -> list[str]:
    """The write marks of a request's ids (``WriteMarks``): ``u:<userId>``, ``a:<anonymousId>``."""
    out = []
    if user_id:
        out.append("u:" + user_id)
    if anonymous_id:
        out.append("a:" + anonymous_id)
    return out


class LiveProfiles:
    """``partitions``: the bus's partition count (0: one fold worker's single position is
    all there is to read)."""

    def __init__(self, reads: StateReads, catalog: Catalog, partitions: int = 0) -> None:
        self.reads = reads
        self.catalog = catalog
        self.partitions = partitions

    def position(self) -> int:
        """The bus stream sequence the saved state is folded up to."""
        return _position(self.reads.read_rows([_POSITION])[0])

    def read(
        self, user_id: str | None, anonymous_id: str | None, anonymous_only: bool
    ) -> tuple[Profile, int, int]:
        """The profile a decision reads (as ``ProfileBook.for_decision``: the customer's, or
        only the device's anonymous one; an empty one for a stranger), the position of the
        partition the latest write mark of the two ids names (one fold worker: its single
        position), and that mark's stream sequence (0 when neither id is marked), read in
        the same round trip as the profile."""
        marks = written_keys(user_id, anonymous_id)
        if anonymous_only and anonymous_id:
            key = ANON_PREFIX + anonymous_id
            return self._read_profile(key, [], marks)[:3]
        if user_id:
            link = (LinkKind.ALIAS.value, user_id)
            key = user_id
        else:
            assert anonymous_id is not None
            link = (LinkKind.ANON.value, anonymous_id)
            key = ANON_PREFIX + anonymous_id
        profile, position, needed, target = self._read_profile(key, [link], marks)
        if target is None:
            return profile, position, needed
        key = self._canonical(target)
        return self._read_profile(key, [], marks)[:3]

    def _read_profile(
        self, key: str, links: list[tuple[str, str]], marks: list[str]
    ) -> tuple[Profile, int, int, str | None]:
        """One MGET: the single position, the customer's home partition's, ``links``, the
        profile, the marks; (profile, position, needed, the first link's target)."""
        extra = [visible_row(self._home(key))] if self.partitions else []
        rows = [_POSITION, *extra, *links, (PROFILE_ROW, key)]
        got = self.reads.read_rows(rows, marks)
        single, *rest = got
        own = rest.pop(0) if extra else None
        linked = [rest.pop(0) for _ in links]
        body = rest.pop(0)
        target = _text(linked[0]) if linked else None
        mark = _highest(rest)
        if target is not None:
            return new_profile(key), 0, 0, target
        position = _position(own if own is not None else single)
        if mark is None:
            return self._profile(key, body), position, 0, None
        needed, partition = mark
        if self.partitions and partition != self._home(key):
            position = self._position_of(partition, single)
        elif not self.partitions:
            position = _position(single)
        return self._profile(key, body), position, needed, None

    def _position_of(self, partition: int, single: bytes | None) -> int:
        (body,) = self.reads.read_rows([visible_row(partition)])
        return _position(body if body is not None else single)

    def _home(self, key: str) -> int:
        if key.startswith(ANON_PREFIX):
            return partition_of("a:" + key[len(ANON_PREFIX) :], self.partitions)
        return partition_of("u:" + key, self.partitions)

    def get(self, user_id: str) -> Profile | None:
        """The saved profile of a userId (followed through aliases), if any."""
        key = self._canonical(user_id)
        (body,) = self.reads.read_rows([(PROFILE_ROW, key)])
        return None if body is None else _decode_profile(body)

    def book_for(
        self, user_ids: Iterable[str | None], anonymous_ids: Iterable[str | None]
    ) -> ProfileBook:
        """A book with the identity links of these ids, and of the devices their customers
        have used, and those customers' profiles: enough for ``check_identity`` (whose device,
        how many devices, which traits) and ``same_customer``."""
        catalog = self.catalog
        book = ProfileBook(catalog.matcher, catalog.fold_config)
        identity = book.identity
        users = {u for u in user_ids if u}
        devices = {a for a in anonymous_ids if a}
        self._load_aliases(book, users)
        self._load_devices(book, devices)
        customers = {identity.resolve(u, None) for u in users}
        customers |= {identity.resolve(None, a) for a in devices}
        self._load_aliases(book, {c for c in customers if not c.startswith(ANON_PREFIX)})
        keys = sorted(customers)
        bodies = self.reads.read_rows([(PROFILE_ROW, k) for k in keys])
        more: set[str] = set()
        for key, body in zip(keys, bodies, strict=True):
            if body is not None:
                profile = book.profiles[key] = _decode_profile(body)
                more.update(a for a in profile.anonymous_ids if a not in identity.anon_to_user)
        self._load_devices(book, more)  # the customers' devices: counted by check_identity
        return book

    def links_for(
        self, user_ids: Iterable[str | None], anonymous_ids: Iterable[str | None]
    ) -> ProfileBook:
        """A book with the identity links of these ids alone (no profile): the customer each
        device is linked to, and where each userId leads through aliases. At most a round
        trip per alias hop."""
        book = ProfileBook(self.catalog.matcher, self.catalog.fold_config)
        self._load_aliases(book, {u for u in user_ids if u})
        self._load_devices(book, {a for a in anonymous_ids if a})
        return book

    def identity_for(self, events: Iterable[Event]) -> IdentityMap:
        """The identity links these events' ids follow (their devices' links, their userIds'
        alias chains): what routing them to their customers' partitions reads
        (``routing.destination``). One MGET, more only along alias chains."""
        book = ProfileBook(self.catalog.matcher, self.catalog.fold_config)
        users: set[str] = set()
        devices: set[str] = set()
        for e in events:
            users.update(u for u in (e.user_id, e.previous_id) if u)
            devices.update(a for a in (e.anonymous_id, e.previous_id) if a)
        todo_users = sorted(users)
        todo_devices = sorted(devices)
        rows = [(LinkKind.ALIAS.value, u) for u in todo_users]
        rows += [(LinkKind.ANON.value, a) for a in todo_devices]
        if not rows:
            return book.identity
        bodies = self.reads.read_rows(rows)
        targets: set[str] = set()
        for user, body in zip(todo_users, bodies, strict=False):
            if (text := _text(body)) is not None:
                book.identity.load(LinkKind.ALIAS.value, user, text)
                targets.add(text)
        for device, body in zip(todo_devices, bodies[len(todo_users) :], strict=True):
            if (text := _text(body)) is not None:
                book.identity.load(LinkKind.ANON.value, device, text)
                targets.add(text)
        self._load_aliases(book, targets - users)
        return book.identity

    def model(self, known: ModelVersion | None) -> tuple[ModelVersion | None, bytes | None]:
        """The published model copy's version; its bytes too when it differs from ``known``."""
        (raw,) = self.reads.read_rows([(LEARNER_ROW, PUBLISHED)])
        if raw is None:
            return None, None
        version = _decode_version(raw)
        if version == known:
            return version, None
        published, body = self.reads.read_rows([(LEARNER_ROW, PUBLISHED), (LEARNER_ROW, "learner")])
        if published is None or body is None:
            return None, None
        return _decode_version(published), body

    # ------------------------------------------------------------------ links
    def _canonical(self, user_id: str) -> str:
        for _ in range(_MAX_ALIASES):
            (nxt,) = self.reads.read_rows([(LinkKind.ALIAS.value, user_id)])
            if nxt is None:
                break
            user_id = nxt.decode()
        return user_id

    def _load_aliases(self, book: ProfileBook, users: set[str]) -> None:
        todo = sorted(u for u in users if u not in book.identity.alias_to_user)
        for _ in range(_MAX_ALIASES):
            if not todo:
                return
            bodies = self.reads.read_rows([(LinkKind.ALIAS.value, u) for u in todo])
            found = [(u, t) for u, b in zip(todo, bodies, strict=True) if (t := _text(b))]
            for user, target in found:
                book.identity.load(LinkKind.ALIAS.value, user, target)
            todo = sorted({t for _, t in found} - set(book.identity.alias_to_user))

    def _load_devices(self, book: ProfileBook, devices: set[str]) -> None:
        todo = sorted(devices)
        if not todo:
            return
        bodies = self.reads.read_rows([(LinkKind.ANON.value, a) for a in todo])
        targets = set()
        for device, body in zip(todo, bodies, strict=True):
            user = _text(body)
            if user is not None:
                book.identity.load(LinkKind.ANON.value, device, user)
                targets.add(user)
        self._load_aliases(book, targets)

    @staticmethod
    def _profile(key: str, body: bytes | None) -> Profile:
        return new_profile(key) if body is None else _decode_profile(body)
