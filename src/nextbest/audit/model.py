"""What the audit log holds: who (``Actor``) did what (``AuditAction``) to whom or what
(``subject``), when, with the details that say how (a catalog's diff, a consent before and
after), as ``AuditRecord`` to append and ``AuditEntry`` once chained.

**Actor.** ``kind``: the kind of key (``guard.senders.KeyKind``: ``server``, ``admin``,
``advisor`` ...), or who acted without one: ``cli`` (a command on the store), ``signal`` (a
server told to reload by SIGHUP), ``engine`` (a program driving the engine in process),
``fold`` (a fold worker applying what an API worker accepted). ``key_id``: the key's
fingerprint (``guard.origin.key_id``), never the key; ``advisor``: the advisor an advisor
token binds; ``user``: the customer a customer token binds; ``operator``: the operating
system account that ran a command. Never a secret.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from nextbest.guard.senders import Sender

__all__ = [
    "Actor",
    "AuditAction",
    "AuditEntry",
    "AuditHead",
    "AuditRecord",
    "AuditVerdict",
    "actor_of",
    "consent_change",
]


class AuditAction(enum.StrEnum):
    """What an entry records."""

    #: a customer's profile was read (``GET /v1/profiles/{id}``)
    PROFILE_READ = "profile.read"
    #: a logged decision, with the features it read, was read (``GET /v1/decisions/{id}``)
    DECISION_READ = "decision.read"
    #: the advisor's view of a customer was read (``GET /v1/advisor/customers/{id}``)
    CUSTOMER_VIEW_READ = "customer_view.read"
    #: quarantined messages (customers' events) were listed
    QUARANTINE_READ = "quarantine.read"
    #: the decision log was exported (``nextbest export decisions``)
    DECISIONS_EXPORTED = "decisions.exported"
    #: a customer's consent changed as an event was folded: before and after
    CONSENT_CHANGED = "consent.changed"
    #: another catalog is about to be served: the previous and new versions and the diff
    CATALOG_RELOADED = "catalog.reloaded"
    #: the catalog change recorded just before did not happen: why
    CATALOG_RELOAD_FAILED = "catalog.reload_failed"
    #: everything held about a customer was exported (``POST /v1/customers/{id}/export``)
    CUSTOMER_EXPORTED = "customer.exported"
    #: a customer was erased; the subject is a pseudonym (``nextbest.erasure``)
    CUSTOMER_ERASED = "customer.erased"


class Actor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who acted (module docstring). Encoded without the fields that are None, so a field
    added later leaves the hashes of older entries as they were."""

    kind: str
    key_id: str | None = None
    advisor: str | None = None
    user: str | None = None
    operator: str | None = None


def actor_of(sender: Sender) -> Actor:
    """The actor of a request, by the sender its credentials made."""
    return Actor(
        kind=sender.kind.value,
        key_id=sender.key_id,
        advisor=sender.bound_advisor,
        user=sender.bound_user,
    )


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An entry to append: the log gives it its place (``seq``) and hashes."""

    time: float
    actor: Actor
    action: AuditAction
    subject: str
    details: dict[str, Any] = {}


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the chain: ``hash`` is SHA-256 over the canonical encoding of every
    other field (``audit.chain.canonical``), ``prev_hash`` the hash of entry ``seq - 1``
    (``audit.chain.GENESIS`` for the first). ``action`` is kept as text: a log written by a
    newer version still verifies."""

    seq: int
    time: float
    actor: Actor
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditHead(msgspec.Struct, frozen=True):
    """The last entry's place and hash: what to anchor outside the store."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


class AuditVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """What ``audit.chain.verify`` found: ``ok``, how many entries it read and the head it
    ended on; else the first broken ``seq`` and why."""

    ok: bool
    entries: int
    head: AuditHead | None
    broken_seq: int | None = None
    reason: str | None = None


def consent_change(
    before: dict[str, bool], after: dict[str, bool]
) -> dict[str, dict[str, bool]] | None:
    """The details of a consent change (the purposes as set before and after), or None
    when nothing changed."""
    if before == after:
        return None
    return {"before": dict(sorted(before.items())), "after": dict(sorted(after.items()))}
