"""Identity: stitch anonymousIds (and aliased userIds) to one customer.

A customer key is the userId once known, else ``anon:<anonymousId>``. ``identify`` and
``alias`` link ids; a later anonymous-only event of a linked device resolves to the user.
"""

from __future__ import annotations

import msgspec

__all__ = ["ANON_PREFIX", "IdentityMap"]

ANON_PREFIX = "anon:"


class IdentityMap(msgspec.Struct, kw_only=True):
    anon_to_user: dict[str, str] = {}
    alias_to_user: dict[str, str] = {}

    def canonical_user(self, user_id: str) -> str:
        seen = 0
        while user_id in self.alias_to_user and seen < 32:
            user_id = self.alias_to_user[user_id]
            seen += 1
        return user_id

    def resolve(self, user_id: str | None, anonymous_id: str | None) -> str:
        if user_id:
            return self.canonical_user(user_id)
        assert anonymous_id is not None
        linked = self.anon_to_user.get(anonymous_id)
        return self.canonical_user(linked) if linked else ANON_PREFIX + anonymous_id

    def link_anonymous(self, anonymous_id: str, user_id: str) -> bool:
        """Link a device to a user; True when the link is new."""
        user = self.canonical_user(user_id)
        if self.anon_to_user.get(anonymous_id) == user:
            return False
        self.anon_to_user[anonymous_id] = user
        return True

    def link_alias(self, previous_id: str, user_id: str) -> bool:
        """``alias``: ``previous_id`` (an old userId or an anonymousId) is ``user_id``."""
        user = self.canonical_user(user_id)
        if previous_id == user or self.alias_to_user.get(previous_id) == user:
            return False
        self.alias_to_user[previous_id] = user
        self.anon_to_user[previous_id] = user
        return True

    def ids_of(self, user_id: str) -> tuple[set[str], set[str]]:
        """All userIds and anonymousIds that resolve to ``user_id``."""
        users = {u for u in self.alias_to_user if self.canonical_user(u) == user_id}
        users.add(user_id)
        anons = {a for a, u in self.anon_to_user.items() if self.canonical_user(u) == user_id}
        return users, anons
