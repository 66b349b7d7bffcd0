"""What a request may change in the live identity map and profiles. Pure: the book is read,
never changed.

- **Whose device a browser key may link** (``identify`` with a userId and an anonymousId):
  one that is linked to nobody yet (the login binds it) or already to the token's user.
  A device linked to another customer is theirs: a browser key claiming it (a stolen
  cookie value) is a 403 naming ``anonymousId``, and nothing of the request is stored.
  Server and write keys (the bank's backends) may move a device.
- **Devices per customer**: an identify linking one more device than ``max_devices`` to a
  customer is a 409 (LimitExceeded) naming ``anonymousId``.
- **Traits per profile**: an identify bringing a profile's trait keys past ``max_traits``
  is a 409 naming ``traits``.

The events of one request are checked in order, each as if the ones before it were applied
(two identifies of a batch may not together pass a limit).
"""

from __future__ import annotations

from collections.abc import Sequence

from nextbest.errors import Forbidden, LimitExceeded
from nextbest.events.model import Event, EventType
from nextbest.guard.senders import KeyKind, Sender
from nextbest.profile.book import ProfileBook

__all__ = ["check_identity"]


def check_identity(
    sender: Sender,
    events: Sequence[Event],
    indexes: Sequence[int],
    prefix: str,
    book: ProfileBook,
    max_devices: int,
    max_traits: int,
) -> None:
    """Forbidden or LimitExceeded (naming the message's field) for the first event that
    breaks a rule above; nothing otherwise."""
    identity = book.identity
    linked: dict[str, str] = {}  # device -> customer, as this request links them
    added: dict[str, int] = {}  # customer -> devices this request links
    traits: dict[str, set[str]] = {}  # customer -> trait keys after this request's events
    for event, index in zip(events, indexes, strict=True):
        where = f"{prefix}[{index}]" if prefix else "$"
        if event.type is not EventType.IDENTIFY:
            continue
        customer = book.resolve(event.user_id, event.anonymous_id)
        device = event.anonymous_id
        if event.user_id and device:
            owner = linked.get(device) or identity.anon_to_user.get(device)
            owner = identity.canonical_user(owner) if owner else None
            if owner != customer:
                if owner is not None and sender.kind is KeyKind.BROWSER:
                    raise Forbidden(
                        f"device {device!r} belongs to another customer (at "
                        f"{where}.anonymousId): a browser key may link only a new device "
                        "or one of the token's customer"
                    )
                count = len(identity.ids_of(customer)[1]) + added.get(customer, 0)
                if count >= max_devices:
                    raise LimitExceeded(
                        f"customer already has {count} devices linked; at most {max_devices}",
                        f"{where}.anonymousId",
                    )
                added[customer] = added.get(customer, 0) + 1
                linked[device] = customer
        if event.traits:
            held = traits.get(customer)
            if held is None:
                profile = book.profiles.get(customer)
                held = traits[customer] = set(profile.traits) if profile is not None else set()
            held.update(k for k in event.traits if k not in ("consent", "products"))
            if len(held) > max_traits:
                raise LimitExceeded(
                    f"the profile would hold {len(held)} traits; at most {max_traits}",
                    f"{where}.traits",
                )
