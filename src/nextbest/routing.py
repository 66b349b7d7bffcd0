"""Where an event is folded when several fold workers share the bus (docs/scale-out.md,
"Several fold workers").

Every customer has a *home*: the bus partition of its key (a userId: ``u:<userId>``; an
anonymous device: ``a:<anonymousId>``, ``partition_of``). Its profile is folded there and
nowhere else, by the one fold worker owning that partition, in that partition's stream order.
An event belongs to the customer its ids resolve to (``IdentityMap.resolve``): an API worker
publishes it to that customer's home, reading the identity links from Redis; a fold worker
that receives an event belonging elsewhere (the link appeared after it was published) sends
it on (``FORWARD``).

A *stitch* (an ``identify`` linking a device, an ``alias`` linking an id, to a customer) moves
ids from the customers they resolve to now (``dissolved``) to the one they join (``joined``).
It visits the home of each customer it dissolves first (those homed elsewhere than the joined
customer, in sorted order): there it is a ``FREEZE`` (the ids are linked to the joined
customer from then on, events of theirs that still arrive are forwarded, the dissolved
profile is dropped), then the joined customer's home folds it as the embedded engine would
(the device's events, read from the event log, merged into the profile; a dissolved customer
homed there too dissolved by that fold). ``destination`` is the pure rule both kinds of
worker apply.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import NamedTuple

from nextbest.bus.port import partition_of
from nextbest.events.model import Event, EventType
from nextbest.profile.identity import ANON_PREFIX, IdentityMap, LinkKind

__all__ = [
    "Destination",
    "destination",
    "dissolved",
    "home",
    "joined",
    "moved_links",
    "remote",
    "stitch_ids",
]


@functools.lru_cache(maxsize=65_536)
def home(customer: str, partitions: int) -> int:
    """The partition of a customer key (a userId, or ``anon:<anonymousId>``): where its
    events go when nothing is stitched (``bus_key``'s partition). Remembered for the most
    recent customers (a hash per call otherwise)."""
    if customer.startswith(ANON_PREFIX):
        return partition_of("a:" + customer[len(ANON_PREFIX) :], partitions)
    return partition_of("u:" + customer, partitions)


def joined(identity: IdentityMap, event: Event) -> str:
    """The customer ``event`` belongs to (for a stitch: the one its ids join)."""
    if not event.user_id and not event.anonymous_id:
        return ANON_PREFIX  # no id at all: nobody's (parsing refuses such events)
    return identity.resolve(event.user_id, event.anonymous_id)


def dissolved(identity: IdentityMap, event: Event) -> list[str]:
    """The customers a stitch takes ids from (sorted; none when the ids resolve to the
    joined customer already, or the event is no stitch): for ``identify``, the one its
    device belongs to now; for ``alias``, those its previous id belongs to as a user and as
    a device."""
    user = event.user_id
    if event.type is EventType.IDENTIFY and user and event.anonymous_id:
        target = identity.canonical_user(user)
        if identity.anon_to_user.get(event.anonymous_id) == target:
            return []
        now = identity.resolve(None, event.anonymous_id)
        return [now] if now != target else []
    if event.type is EventType.ALIAS and event.previous_id and user:
        target = identity.canonical_user(user)
        previous = event.previous_id
        if previous == target or identity.alias_to_user.get(previous) == target:
            return []
        found = {identity.resolve(previous, None), identity.resolve(None, previous)}
        found.discard(target)
        return sorted(found)
    return []


def moved_links(identity: IdentityMap, event: Event) -> list[tuple[str, str]]:
    """The (kind, id) links a stitch changes (``IdentityMap.link`` would), given
    ``identity``: its device's for ``identify``, its previous id's (as a user and as a
    device) for ``alias``; none when they point at the joined customer already."""
    user = event.user_id
    if event.type is EventType.IDENTIFY and user and event.anonymous_id:
        target = identity.canonical_user(user)
        if identity.anon_to_user.get(event.anonymous_id) == target:
            return []
        return [(LinkKind.ANON.value, event.anonymous_id)]
    if event.type is EventType.ALIAS and event.previous_id and user:
        target = identity.canonical_user(user)
        previous = event.previous_id
        if previous == target or identity.alias_to_user.get(previous) == target:
            return []
        return [(LinkKind.ALIAS.value, previous), (LinkKind.ANON.value, previous)]
    return []


def stitch_ids(event: Event) -> tuple[list[str], list[str]]:
    """The (userIds, anonymousIds) whose links decide where ``event`` goes."""
    users = [u for u in (event.user_id, event.previous_id) if u]
    anons = [a for a in (event.anonymous_id, event.previous_id) if a]
    return users, anons


class Destination(NamedTuple):
    """Where an event goes next: the partition, and the customer it dissolves there (a
    stitch's ``FREEZE``; None: folded there)."""

    partition: int
    freeze: str | None


def remote(
    identity: IdentityMap, event: Event, partitions: int, frozen: Collection[str] = ()
) -> list[str]:
    """The customers ``event`` dissolves that are homed elsewhere than the one it joins and
    not frozen yet on its way (``frozen``), sorted."""
    there = home(joined(identity, event), partitions)
    return [
        c for c in dissolved(identity, event) if c not in frozen and home(c, partitions) != there
    ]


def destination(
    identity: IdentityMap, event: Event, partitions: int, frozen: Collection[str] = ()
) -> Destination:
    """Where ``event`` goes next, given the links in ``identity`` and the customers a stitch
    has dissolved already on its way (``frozen``)."""
    if event.type is not EventType.IDENTIFY and event.type is not EventType.ALIAS:
        return Destination(home(joined(identity, event), partitions), None)
    for customer in remote(identity, event, partitions, frozen):
        return Destination(home(customer, partitions), customer)
    return Destination(home(joined(identity, event), partitions), None)
