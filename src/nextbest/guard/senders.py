"""What a sender may say and ask, by the kind of key it holds. Pure: no keys, no I/O.

    none     no key: public routes only (health, OpenAPI)

write    a source write key (server-side SDKs): events for any id; decisions for an
         anonymousId, or a userId with a customer token
browser  a public browser key: events and decisions only for the session it holds (an
         anonymousId, or the userId its customer token binds); never aliases, nor facts
         only the bank's systems know (balances, products)
server   the bank's backends: events and decisions for anyone; callbacks of anyone, and
         acting for any advisor (the telephony system reports calls and presence so)
advisor  one advisor (a signed advisor token binds it to their id): their own presence and
         queue, accepting, declining and completing the callbacks routed to them, and the
         customer view of the customers those callbacks are for
metrics  a monitoring system (Prometheus): ``/metrics`` only, nothing of any customer
admin    everything

Callbacks: write and browser keys request, read and cancel callbacks only for the session
they hold (the userId a customer token binds, or the anonymousId), as for decisions.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import msgspec

from nextbest.errors import Forbidden
from nextbest.events.model import Event, EventType
from nextbest.events.names import SERVER_ONLY_EVENTS, SERVER_ONLY_TRAITS
from nextbest.profile.identity import ANON_PREFIX

__all__ = [
    "KeyKind",
    "Scope",
    "Sender",
    "check_advisor",
    "check_decider",
    "check_decision_time",
    "check_senders",
]


class KeyKind(enum.StrEnum):
    NONE = "none"
    WRITE = "write"
    BROWSER = "browser"
    SERVER = "server"
    METRICS = "metrics"
    ADMIN = "admin"
    ADVISOR = "advisor"


class Scope(enum.StrEnum):
    """What a route (or any face's verb) needs; every route declares one."""

    PUBLIC = "public"
    EVENTS_WRITE = "events:write"
    DECIDE = "decide"
    PROFILES_READ = "profiles:read"
    #: operational counters and gauges (``/metrics``): no customer's data, but what the bank
    #: runs and how busy it is, so not public
    METRICS = "metrics"
    #: a customer's own callbacks: request, read, cancel (the session's own only)
    CALLBACKS = "callbacks"
    #: a customer's consent: the customer's own (a customer token), or anyone's (server)
    CONSENT = "consent"
    #: a customer's own page of what nextbest knows and why it showed what it showed (a
    #: customer token binds whose: ``/v1/me/...``)
    ME = "me"
    #: what an advisor does: presence, their queue, accept / decline / connect / complete
    #: (an advisor key: their own only)
    ADVISORS_ACT = "advisors:act"
    #: the advisor's view of a customer (an advisor key: the customers routed to them)
    ADVISORS_READ_CUSTOMER = "advisors:read_customer"
    #: every advisor with presence and load (supervisors, the bank's systems)
    ADVISORS_READ = "advisors:read"
    #: a customer's rights to their data: export everything held, erase it (the bank's
    #: own systems acting on a request, and operators)
    CUSTOMER_RIGHTS = "customers:rights"
    ADMIN = "admin"


_CUSTOMER = frozenset(
    {Scope.PUBLIC, Scope.EVENTS_WRITE, Scope.DECIDE, Scope.CALLBACKS, Scope.CONSENT, Scope.ME}
)
#: looked up once (each ``KeyKind.X`` read is a metaclass hook call in Python 3.11)
_BROWSER = KeyKind.BROWSER
_SCOPES: dict[KeyKind, frozenset[Scope]] = {
    KeyKind.NONE: frozenset({Scope.PUBLIC}),
    KeyKind.WRITE: _CUSTOMER,
    KeyKind.BROWSER: _CUSTOMER,
    KeyKind.SERVER: _CUSTOMER
    | {
        Scope.PROFILES_READ,
        Scope.CUSTOMER_RIGHTS,
        Scope.ADVISORS_ACT,
        Scope.ADVISORS_READ_CUSTOMER,
        Scope.ADVISORS_READ,
    },
    KeyKind.ADVISOR: frozenset({Scope.PUBLIC, Scope.ADVISORS_ACT, Scope.ADVISORS_READ_CUSTOMER}),
    KeyKind.METRICS: frozenset({Scope.PUBLIC, Scope.METRICS}),
    KeyKind.ADMIN: frozenset(Scope),
}


class Sender(msgspec.Struct, frozen=True):
    """A caller: the kind of key it holds, the userId a valid customer token binds it to,
    if any, and its key's fingerprint (``guard.origin.key_id``; None in process); an
    advisor key, the advisor its token binds it to."""

    kind: KeyKind
    bound_user: str | None = None
    key_id: str | None = None
    bound_advisor: str | None = None

    @property
    def scopes(self) -> frozenset[Scope]:
        return _SCOPES[self.kind]

    def require(self, scope: Scope) -> None:
        """Forbidden unless this kind of key reaches ``scope``."""
        if scope not in self.scopes:
            raise Forbidden(f"a {self.kind.value} key may not use a route that needs {scope}")

    @property
    def any_customer(self) -> bool:
        """May act on any customer's data (server and admin keys)."""
        return self.kind in (KeyKind.SERVER, KeyKind.ADMIN)

    def may_send_for(self, user_id: str | None) -> bool:
        """Events: browser keys only for their own session; others for any id."""
        if self.kind is not _BROWSER or user_id is None:
            return True
        return self.bound_user == user_id

    def may_decide_for(self, user_id: str | None) -> bool:
        if self.any_customer or user_id is None:
            return True
        return self.bound_user == user_id

    def may_set_consent_for(self, user_id: str) -> bool:
        """Server and admin keys for anyone; a write or browser key only for the userId its
        customer token binds (an anonymousId alone never changes a customer's consent)."""
        return self.any_customer or (
            self.kind in (KeyKind.WRITE, KeyKind.BROWSER) and self.bound_user == user_id
        )

    def may_act_as(self, advisor_id: str) -> bool:
        """Server and admin keys act for any advisor; an advisor key for its own id only."""
        return self.any_customer or (
            self.kind is KeyKind.ADVISOR and self.bound_advisor == advisor_id
        )

    def owns_customer(self, customer: str, anonymous_id: str | None) -> bool:
        """``customer`` (a userId, or ``anon:<anonymousId>``) is this caller's own: the
        userId its customer token binds, or the anonymousId it holds (a write or browser key
        holds the anonymousId it names). Server and admin keys own every customer."""
        if self.any_customer:
            return True
        if self.kind not in (KeyKind.WRITE, KeyKind.BROWSER):
            return False
        if self.bound_user is not None and customer == self.bound_user:
            return True
        return anonymous_id is not None and customer == ANON_PREFIX + anonymous_id


def check_senders(
    sender: Sender,
    events: Sequence[Event],
    prefix: str,
    indexes: Sequence[int] | None = None,
) -> None:
    """Forbidden (naming the message and field) unless ``sender`` may send every event:
    a browser key speaks only for its own session, may not merge identities, and may not
    assert facts only the bank's systems know. ``indexes``: each event's place in its
    request (default: its place in ``events``)."""
    if sender.kind is not _BROWSER:
        return  # every check below is a browser key's (``may_send_for`` too)
    for n, event in enumerate(events):
        i = n if indexes is None else indexes[n]
        where = f"{prefix}[{i}]" if prefix else "$"
        if event.type is EventType.ALIAS:
            raise Forbidden(
                f"a browser key may not send alias (at {where}.type): aliases "
                "merge customers and must come from a server"
            )
        if event.name in SERVER_ONLY_EVENTS:
            raise Forbidden(f"a browser key may not send '{event.name}' (at {where}.event)")
        if found := SERVER_ONLY_TRAITS.intersection(event.traits):
            raise Forbidden(f"a browser key may not set trait {min(found)!r} (at {where}.traits)")
        if not sender.may_send_for(event.user_id):
            raise Forbidden(
                f"this key may not send events for userId {event.user_id!r} "
                f"(at {where}.userId); send a customer token for it"
            )


def check_decider(sender: Sender, user_id: str | None) -> bool:
    """Forbidden unless ``sender`` may decide for ``user_id``; True when the decision must
    see only the device's anonymous profile (a public key holding only an anonymousId never
    sees the logged-in customer it was stitched to: that needs a customer token)."""
    if not sender.may_decide_for(user_id):
        raise Forbidden(
            "this key may decide only for its own session: send the customer "
            "token that binds this userId, or use the anonymousId"
        )
    return user_id is None and not sender.any_customer


def check_advisor(sender: Sender, advisor_id: str, path: str = "$.advisor_id") -> None:
    """Forbidden unless ``sender`` may act as advisor ``advisor_id`` (its presence, its
    queue, its callbacks): an advisor key only as itself, server and admin keys as anyone."""
    if not sender.may_act_as(advisor_id):
        raise Forbidden(
            f"this key may not act for advisor {advisor_id!r} (at {path}): an advisor key "
            "acts only as its own advisor"
        )


def check_decision_time(sender: Sender, path: str = "$.context.now") -> None:
    """Forbidden unless ``sender`` may say when a decision is taken (a decide request's
    ``context.now``): the bank's backends replaying or simulating traffic (server and admin
    keys), never a page (write or browser keys), which could otherwise step round caps and
    schedules."""
    if not sender.any_customer:
        raise Forbidden(
            f"a {sender.kind.value} key may not set the decision time (at {path}): "
            "only server and admin keys may"
        )
