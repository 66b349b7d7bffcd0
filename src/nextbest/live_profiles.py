"""Live profiles as a stateless worker reads them: point reads of the state a fold worker saves
(Redis), one customer at a time, never the whole book.

    read(user, device, anonymous_only) -> the profile a decision reads, the bus position
                                          the state was folded up to and the ids' write
                                          marks (one MGET; a second only when the id is
                                          linked to another customer)
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

from nextbest.catalog.compiled import Catalog
from nextbest.profile.book import PROFILE_ROW, ProfileBook, new_profile
from nextbest.profile.identity import ANON_PREFIX, LinkKind
from nextbest.profile.model import Profile
from nextbest.store.port import StateReads
from nextbest.store.snapshot import (
    FOLD_ROW,
    LEARNER_ROW,
    POSITION,
    PUBLISHED,
    ModelVersion,
)

__all__ = ["LiveProfiles", "written_keys"]

_decode_profile = msgspec.msgpack.Decoder(Profile).decode
_decode_version = msgspec.json.Decoder(ModelVersion).decode
_POSITION = (FOLD_ROW, POSITION)
#: alias chains are short; a cycle cannot hang a read
_MAX_ALIASES = 32


def _text(body: bytes | None) -> str | None:
    return None if body is None else body.decode()


def _position(body: bytes | None) -> int:
    return int(body) if body is not None else 0


def _highest(seqs: list[bytes | None]) -> int:
    return max((int(s) for s in seqs if s is not None), default=0)


def written_keys(user_id: str | None, anonymous_id: str | None) -> list[str]:
    """The write marks of a request's ids (``WriteMarks``): ``u:<userId>``, ``a:<anonymousId>``."""
    out = []
    if user_id:
        out.append("u:" + user_id)
    if anonymous_id:
        out.append("a:" + anonymous_id)
    return out


class LiveProfiles:
    def __init__(self, reads: StateReads, catalog: Catalog) -> None:
        self.reads = reads
        self.catalog = catalog

    def position(self) -> int:
        """The bus stream sequence the saved state is folded up to."""
        return _position(self.reads.read_rows([_POSITION])[0])

    def read(
        self, user_id: str | None, anonymous_id: str | None, anonymous_only: bool
    ) -> tuple[Profile, int, int]:
        """The profile a decision reads (as ``ProfileBook.for_decision``: the customer's, or
        only the device's anonymous one; an empty one for a stranger), the position, and
        the highest write mark of the two ids (the bus sequence of the last event published
        for either: 0 when none is marked), read in the same round trip."""
        marks = written_keys(user_id, anonymous_id)
        n = len(marks)
        if anonymous_only and anonymous_id:
            key = ANON_PREFIX + anonymous_id
            position, body, *seqs = self.reads.read_rows([_POSITION, (PROFILE_ROW, key)], marks)
            return self._profile(key, body), _position(position), _highest(seqs)
        if user_id:
            position, alias, body, *seqs = self.reads.read_rows(
                [_POSITION, (LinkKind.ALIAS.value, user_id), (PROFILE_ROW, user_id)], marks
            )
            if alias is None:
                return self._profile(user_id, body), _position(position), _highest(seqs)
            key = self._canonical(alias.decode())
        else:
            assert anonymous_id is not None
            key = ANON_PREFIX + anonymous_id
            position, link, body, *seqs = self.reads.read_rows(
                [_POSITION, (LinkKind.ANON.value, anonymous_id), (PROFILE_ROW, key)], marks
            )
            if link is None:
                return self._profile(key, body), _position(position), _highest(seqs)
            key = self._canonical(link.decode())
        position, body, *seqs = self.reads.read_rows([_POSITION, (PROFILE_ROW, key)], marks)
        assert len(seqs) == n
        return self._profile(key, body), _position(position), _highest(seqs)

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
