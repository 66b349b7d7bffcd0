"""Identity: stitch anonymousIds (and aliased userIds) to one customer.

A customer key is the userId once known, else ``anon:<anonymousId>``. ``identify`` and
``alias`` link ids; a later anonymous-only event of a linked device resolves to the user.
Reverse indexes make a stitch cost what the customer's own ids cost, not the whole map.
"""

from __future__ import annotations

import enum
from collections.abc import Collection

from nextbest.events.model import Event, EventType

__all__ = ["ANON_PREFIX", "IdentityMap", "LinkKind"]

ANON_PREFIX = "anon:"


class LinkKind(enum.StrEnum):
    """The two kinds of identity link, as saved in state rows."""

    ANON = "anon"
    ALIAS = "alias"


class IdentityMap:
    """anonymousId -> userId and previous userId -> userId, with reverse indexes."""

    def __init__(self) -> None:
        self.anon_to_user: dict[str, str] = {}
        self.alias_to_user: dict[str, str] = {}
        self._anons_of: dict[str, set[str]] = {}
        self._aliases_of: dict[str, set[str]] = {}

    def canonical_user(self, user_id: str) -> str:
        if user_id not in self.alias_to_user:
            return user_id  # the usual case: no alias, no loop
        for _ in range(32):  # alias chains are short; a cycle cannot hang us
            nxt = self.alias_to_user.get(user_id)
            if nxt is None:
                break
            user_id = nxt
        return user_id

    def resolve(self, user_id: str | None, anonymous_id: str | None) -> str:
        if user_id:
            return self.canonical_user(user_id)
        assert anonymous_id is not None
        linked = self.anon_to_user.get(anonymous_id)
        return self.canonical_user(linked) if linked else ANON_PREFIX + anonymous_id

    def resolve_key(self, key: str) -> str:
        """The customer a customer key (a userId, or ``anon:<anonymousId>``) is now."""
        if key.startswith(ANON_PREFIX):
            return self.resolve(None, key[len(ANON_PREFIX) :])
        return self.resolve(key, None)

    def link(self, event: Event) -> list[tuple[str, str]]:
        """The links an event makes (``identify`` with both ids, ``alias``); what changed."""
        if event.type is EventType.IDENTIFY and event.user_id and event.anonymous_id:
            return self.link_anonymous(event.anonymous_id, event.user_id)
        if event.type is EventType.ALIAS and event.previous_id and event.user_id:
            return self.link_alias(event.previous_id, event.user_id)
        return []

    def _set(self, kind: str, key: str, user: str) -> None:
        forward, reverse = (
            (self.anon_to_user, self._anons_of)
            if kind == LinkKind.ANON
            else (self.alias_to_user, self._aliases_of)
        )
        old = forward.get(key)
        if old is not None:
            reverse[old].discard(key)
        forward[key] = user
        reverse.setdefault(user, set()).add(key)

    def load(self, kind: str, key: str, user: str) -> None:
        """Restore one saved link."""
        self._set(kind, key, user)

    def put_back(self, kind: str, key: str, user: str | None) -> None:
        """Set one link to what it was before (None: there was none): undoes a ``link``."""
        if user is not None:
            self._set(kind, key, user)
            return
        forward, reverse = (
            (self.anon_to_user, self._anons_of)
            if kind == LinkKind.ANON
            else (self.alias_to_user, self._aliases_of)
        )
        old = forward.pop(key, None)
        if old is not None:
            reverse[old].discard(key)

    def link_anonymous(self, anonymous_id: str, user_id: str) -> list[tuple[str, str]]:
        """Link a device to a user; returns the (kind, key) links that changed."""
        user = self.canonical_user(user_id)
        if self.anon_to_user.get(anonymous_id) == user:
            return []
        self._set(LinkKind.ANON, anonymous_id, user)
        return [(LinkKind.ANON, anonymous_id)]

    def link_alias(self, previous_id: str, user_id: str) -> list[tuple[str, str]]:
        """``alias``: ``previous_id`` (an old userId or an anonymousId) is ``user_id``."""
        user = self.canonical_user(user_id)
        if previous_id == user or self.alias_to_user.get(previous_id) == user:
            return []
        self._set(LinkKind.ALIAS, previous_id, user)
        self._set(LinkKind.ANON, previous_id, user)
        return [(LinkKind.ALIAS, previous_id), (LinkKind.ANON, previous_id)]

    def target(self, kind: str, key: str) -> str | None:
        table = self.anon_to_user if kind == LinkKind.ANON else self.alias_to_user
        return table.get(key)

    def linked_to(self, user_id: str) -> set[tuple[str, str]]:
        """The (kind, id) links pointing at ``user_id`` directly."""
        anons = {(LinkKind.ANON.value, a) for a in self._anons_of.get(user_id, ())}
        return anons | {(LinkKind.ALIAS.value, a) for a in self._aliases_of.get(user_id, ())}

    def ids_of(self, user_id: str) -> tuple[set[str], set[str]]:
        """All userIds and anonymousIds that resolve to ``user_id``."""
        users = {user_id}
        todo = [user_id]
        while todo:
            for previous in self._aliases_of.get(todo.pop(), ()):
                if previous not in users:
                    users.add(previous)
                    todo.append(previous)
        anons = {a for u in users for a in self._anons_of.get(u, ())}
        return users, anons

    def forget(self, users: Collection[str], anons: Collection[str]) -> list[tuple[str, str]]:
        """Drop every link from or to these ids (an erasure): the (kind, key) links gone."""
        gone: list[tuple[str, str]] = []
        for kind, forward, reverse in (
            (LinkKind.ANON.value, self.anon_to_user, self._anons_of),
            (LinkKind.ALIAS.value, self.alias_to_user, self._aliases_of),
        ):
            keys = {k for u in users for k in reverse.get(u, ())}
            keys |= {k for k in (*users, *anons) if k in forward}
            for key in sorted(keys):
                old = forward.pop(key)
                reverse.get(old, set()).discard(key)
                gone.append((kind, key))
            for u in users:
                reverse.pop(u, None)
        return gone
