"""The profile book: every live profile and the identity map, folded from the event log.

Pure: events come in with their log position. A stitch reads events through an
``events_of`` callable the caller supplies (the event log's read by customer): an
``identify`` linking a device folds only that device's anonymous events into the
customer's profile (its cost is the device's, however many devices the customer has);
an ``alias`` (a server's statement that two userIds are one customer) rebuilds the
customer's profile from all its ids' events. ``dirty`` names the
(kind, key) rows changed since the last save; ``replace`` says the saved rows are stale as a
whole (a new catalog, a rebuild) and must all be rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

import msgspec

from nextbest.events.model import Event, EventType
from nextbest.profile.fold import FoldConfig, fold
from nextbest.profile.identity import ANON_PREFIX, IdentityMap, LinkKind
from nextbest.profile.model import Profile
from nextbest.profile.topics import TopicMatcher

__all__ = ["PROFILE_ROW", "EventsOf", "ProfileBook", "new_profile", "shared_device_event"]

#: looked up once (each ``EventType.X`` read is a metaclass hook call in Python 3.11)
_IDENTIFY, _ALIAS = EventType.IDENTIFY, EventType.ALIAS

#: the saved-row kind of a profile (identity links are saved under their ``LinkKind``)
PROFILE_ROW = "profile"

#: the events carrying any of these userIds or anonymousIds, with seq <= upto, in seq order
EventsOf = Callable[[Collection[str], Collection[str], int], Iterable[Event]]


def new_profile(key: str) -> Profile:
    """An empty profile for a customer key (a userId, or ``anon:<anonymousId>``)."""
    return Profile(customer_id=key, user_id=None if key.startswith(ANON_PREFIX) else key)


class ProfileBook:
    def __init__(self, matcher: TopicMatcher, fold_config: FoldConfig) -> None:
        self.matcher = matcher
        self.fold_config = fold_config
        self.profiles: dict[str, Profile] = {}
        self.identity = IdentityMap()
        #: the log position folded up to
        self.seq = 0
        self.dirty: set[tuple[str, str]] = set()
        self.replace = True

    # ------------------------------------------------------------------ folding
    def apply(self, seq: int, event: Event, events_of: EventsOf) -> None:
        """Fold one logged event; a stitch rebuilds the user's profile from ``events_of``.

        All or nothing: if ``events_of`` fails, the book is as it was before the event."""
        kind = event.type
        stitches = kind is _IDENTIFY or kind is _ALIAS
        before = self._links_before(event) if stitches else ()
        links = self.identity.link(event) if stitches else ()
        key = self.identity.resolve(event.user_id, event.anonymous_id)
        if links:
            try:
                if kind is _IDENTIFY and event.anonymous_id:
                    self._merge_device(key, event.anonymous_id, seq, events_of)
                    fold(self.profiles[key], event, self.matcher, self.fold_config)
                else:
                    self._rebuild(key, seq, events_of)
            except BaseException:
                for link, link_key, user in before:
                    self.identity.put_back(link, link_key, user)
                raise
            self.dirty.update(links)
        else:
            profile = self.profiles.get(key)
            if profile is None:
                profile = self.profiles[key] = new_profile(key)
            fold(profile, event, self.matcher, self.fold_config)
        self.dirty.add((PROFILE_ROW, key))
        if seq > self.seq:  # max() of two costs more than the comparison
            self.seq = seq

    def _links_before(self, event: Event) -> list[tuple[str, str, str | None]]:
        """The links ``event`` may change, as they are now (to put back on a failure)."""
        keys = [(LinkKind.ANON.value, event.anonymous_id)]
        if event.previous_id:
            keys = [
                (LinkKind.ALIAS.value, event.previous_id),
                (LinkKind.ANON.value, event.previous_id),
            ]
        return [(k, key, self.identity.target(k, key)) for k, key in keys if key]

    def _merge_device(self, user_key: str, device: str, upto: int, events_of: EventsOf) -> None:
        """After ``identify`` linked ``device`` to the user: the device's anonymous events
        (read first: a failed read changes no profile) join the user's profile as late
        events, in log order; the device's own profile goes. Counts, windows, decayed
        interest, funnel stages and first/last seen come out as a refold would give them;
        the device's older traits and consent do not override the customer's newer ones."""
        events = [e for e in events_of((), (device,), upto) if e.user_id is None]
        profile = self.profiles.get(user_key)
        if profile is None:
            profile = self.profiles[user_key] = new_profile(user_key)
        if self.profiles.pop(ANON_PREFIX + device, None) is not None:
            self.dirty.add((PROFILE_ROW, ANON_PREFIX + device))
        newer = profile.last_seen if profile.event_count else None
        for event in events:
            if newer is not None and event.timestamp < newer and event.type is EventType.IDENTIFY:
                event = _without_state(event)
            fold(profile, event, self.matcher, self.fold_config)

    def _rebuild(self, user_key: str, upto: int, events_of: EventsOf) -> None:
        """After a stitch: the user's profile is the fold of every linked id's events (read
        first: a failed read changes no profile)."""
        users, anons = self.identity.ids_of(user_key)
        events = [e for e in events_of(users, anons, upto) if not shared_device_event(e, users)]
        for gone in [ANON_PREFIX + a for a in anons] + [u for u in users if u != user_key]:
            if self.profiles.pop(gone, None) is not None:
                self.dirty.add((PROFILE_ROW, gone))
        profile = self.profiles[user_key] = new_profile(user_key)
        for event in events:
            fold(profile, event, self.matcher, self.fold_config)

    def restore(
        self, seq: int, profiles: Mapping[str, Profile], links: Iterable[tuple[str, str, str]]
    ) -> None:
        """Start from saved state (a snapshot as of log position ``seq``): nothing to save."""
        self.seq, self.replace = seq, False
        self.profiles.update(profiles)
        for kind, key, user in links:
            self.identity.load(kind, key, user)

    def take_changes(self) -> tuple[set[tuple[str, str]], bool]:
        """The (kind, key) rows to save now and whether all saved rows are replaced; from
        here on nothing counts as changed (``keep_changes`` puts them back if the save fails)."""
        keys, replace = self.row_keys(), self.replace
        self.dirty, self.replace = set(), False
        return keys, replace

    def keep_changes(self, keys: Iterable[tuple[str, str]], replace: bool) -> None:
        """A save of ``take_changes``'s rows failed: they are still to be saved."""
        self.dirty.update(keys)
        self.replace = self.replace or replace

    def forget(self, users: Collection[str], anons: Collection[str]) -> list[str]:
        """Erase a customer: the profiles of these ids (``anon:<anonymousId>`` for each
        device) and every identity link from or to them go, their rows marked to be deleted
        at the next save. The profile keys that were held."""
        keys = [*users, *(ANON_PREFIX + a for a in anons)]
        held = [k for k in keys if self.profiles.pop(k, None) is not None]
        self.dirty.update((PROFILE_ROW, k) for k in keys)
        self.dirty.update(self.identity.forget(users, anons))
        return held

    # ------------------------------------------------------------------ reading
    def resolve(self, user_id: str | None, anonymous_id: str | None) -> str:
        return self.identity.resolve(user_id, anonymous_id)

    def get(self, customer_id: str) -> Profile | None:
        """The live profile of a userId (followed through aliases), if any."""
        return self.profiles.get(self.identity.resolve(customer_id, None))

    def for_decision(
        self, user_id: str | None, anonymous_id: str | None, anonymous_only: bool
    ) -> Profile:
        """The profile a decision reads: the customer's, or (``anonymous_only``) only what the
        device did anonymously; an empty one for a stranger."""
        if anonymous_only and anonymous_id:
            key = ANON_PREFIX + anonymous_id
        else:
            key = self.identity.resolve(user_id, anonymous_id)
        return self.profiles.get(key) or new_profile(key)

    def same_customer(self, customer_key: str, event: Event) -> bool:
        """``event`` comes from the customer ``customer_key`` (a decision's customer): the id
        it was made for, or any id that now resolves to the same profile."""
        if customer_key.startswith(ANON_PREFIX):
            if event.anonymous_id == customer_key[len(ANON_PREFIX) :]:
                return True
        elif event.user_id == customer_key:
            return True
        identity = self.identity
        return identity.resolve(event.user_id, event.anonymous_id) == identity.resolve_key(
            customer_key
        )

    # ------------------------------------------------------------------ saving
    def row_keys(self) -> set[tuple[str, str]]:
        """The (kind, key) rows to save: all of them after a replace, else the dirty ones."""
        if not self.replace:
            return set(self.dirty)
        return (
            {(PROFILE_ROW, k) for k in self.profiles}
            | {(LinkKind.ANON.value, a) for a in self.identity.anon_to_user}
            | {(LinkKind.ALIAS.value, a) for a in self.identity.alias_to_user}
        )

    def link_target(self, kind: str, key: str) -> str | None:
        return self.identity.target(kind, key)


def shared_device_event(event: Event, users: Collection[str]) -> bool:
    """An event another user sent from a device this customer also used: a stitch never
    folds another user's events into this profile (a shared family tablet)."""
    return event.user_id is not None and event.user_id not in users


def _without_state(event: Event) -> Event:
    """An older device ``identify`` joining a customer who has newer events: it still counts
    as activity, but its traits (consent, products, balance included) do not override what
    the customer's newer events set."""
    return msgspec.structs.replace(event, traits={})
