"""Devices bound to their customer (pure: the identity map is read, never changed).

Once a device's anonymousId is linked to a customer (an ``identify`` at login, an
``alias``), the anonymousId alone no longer speaks for that device: it is a cookie value a
page, a log or a shared computer may give away. A browser key sending an event that carries
only such an anonymousId (no userId) is refused (Forbidden, 403, naming the message's
``anonymousId``) unless its customer token binds the customer the device is linked to;
nothing of the request is stored. A device linked by an identify earlier in the same request
(the token's own login) counts as linked. Write and server keys (the bank's own backends)
may still send for any device; an unlinked device stays anonymous and free to send.

Refused, not kept apart: an event kept in a fresh anonymous profile would still be logged
with the customer's anonymousId, and a replay (or the next stitch) would fold it into the
customer's profile; a refusal changes nothing anywhere. A page whose customer logged out
starts a new anonymousId (analytics.js ``reset()``), as Segment advises anyway.

Decisions need no rule here: a browser or write key that names only an anonymousId is
decided for as that device's anonymous profile (``senders.check_decider``), which a login
folded into the customer's and removed: the device is a stranger again.
"""

from __future__ import annotations

from collections.abc import Sequence

from nextbest.errors import Forbidden
from nextbest.events.model import Event, EventType
from nextbest.guard.senders import KeyKind, Sender
from nextbest.profile.identity import IdentityMap

__all__ = ["check_devices", "needs_devices"]


#: looked up once (each ``KeyKind.X`` read is a metaclass hook call in Python 3.11)
_BROWSER = KeyKind.BROWSER


def needs_devices(sender: Sender, events: Sequence[Event]) -> bool:
    """``check_devices`` has something to check: a browser key sends an event that carries
    an anonymousId without a userId."""
    return sender.kind is _BROWSER and any(e.anonymous_id and not e.user_id for e in events)


def check_devices(
    sender: Sender,
    events: Sequence[Event],
    indexes: Sequence[int],
    prefix: str,
    identity: IdentityMap,
) -> None:
    """Forbidden (naming the message's anonymousId) for the first event a browser key may
    not send for its device (module docstring); nothing otherwise."""
    if sender.kind is not KeyKind.BROWSER:
        return
    bound = identity.canonical_user(sender.bound_user) if sender.bound_user else None
    linked: dict[str, str] = {}  # device -> customer, as this request's identifies link them
    for event, index in zip(events, indexes, strict=True):
        device = event.anonymous_id
        if not device:
            continue
        if event.user_id:
            if event.type is EventType.IDENTIFY:
                linked[device] = identity.canonical_user(event.user_id)
            continue
        owner = linked.get(device) or identity.anon_to_user.get(device)
        if owner is None or identity.canonical_user(owner) == bound:
            continue
        where = f"{prefix}[{index}]" if prefix else "$"
        raise Forbidden(
            f"device {device!r} is linked to a customer (at {where}.anonymousId): a browser "
            "key sends for it only with that customer's token (X-Customer-Token); after a "
            "logout, start a new anonymousId"
        )
