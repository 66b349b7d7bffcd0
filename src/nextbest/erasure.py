"""A customer's rights to their data (GDPR art. 15, 17, 20): export and erasure.

    export_customer(engine, id, actor) -> everything nextbest holds about the customer and
                                          every id stitched to them, as one JSON document
                                          (``CustomerExport``); the read is audited
    erase_customer(engine, id, actor)  -> every trace of them deleted (``ErasureReport``)

**What an erasure deletes**, for the customer's userIds (aliases followed) and anonymousIds
(their devices): their events from the event log (``EventLog.erase``: events carrying one of
their userIds, or one of their anonymousIds without a userId), their decisions from the
decision log, their quarantined messages, their callbacks, the outbox messages that name
them (callback requests, fraud alerts), and from the live state (``Engine.forget``) their
profiles (guard baseline included), identity links (the devices bound to them), experiment
exposures, the learner's views and clicks waiting on their decisions, the recent-decision
cache and fraud alerts still due. Then the state is saved (their rows deleted) and the store
scrubbed (SQLite: the WAL emptied; every delete overwrites with zeros, ``secure_delete``).
All of it runs in ``Engine.exclusive(saving=True)``: nothing folds, appends or saves
meanwhile, so no fold or snapshot writes a row back.

**What stays, and why** (art. 17(3)): aggregates that name nobody (the models' weights, the
campaigns' experiment counts, exploration budgets, feedback volume per key); the audit log's
entries (art. 17(3)(b) and (e): the bank's accountability, art. 5(2), and proof of consent,
art. 7(1), are legal obligations; the chain must stay verifiable): entries written before
the erasure still name the customer (reads of their profile, consent changes, quarantine
listings). The erasure's own entry names them only by a pseudonym,
``erased:<sha256(receipt, id)>``, with a random ``receipt`` handed to the caller alone:
whoever keeps the receipt and the id can show the erasure happened; nobody can read the id
back from the log.

A crash or a store failure part way leaves some stores erased, some not: the caller retries
(it is idempotent). The stores are erased first and the live state last, so a retry still
finds every id in the identity map; a failed save after it leaves the rows marked for the
next save, and a crash before it restores the links from the last snapshot.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from nextbest.audit.model import Actor, AuditAction, AuditEntry, AuditRecord
from nextbest.errors import NotFound, ValidationError
from nextbest.events.model import Event, EventType
from nextbest.profile.identity import ANON_PREFIX
from nextbest.store.outbox_codec import mention
from nextbest.store.port import HeldMessage, OutboxMessage, Scrubbing, of_erased

if TYPE_CHECKING:
    from nextbest.callbacks import CallbackDesk
    from nextbest.engine import Engine
    from nextbest.experiments.counters import Exposure
    from nextbest.grouped_audit import GroupedAuditLog
    from nextbest.store.port import DecisionLog, EventLog, Outbox, Quarantine


class CustomerData(Protocol):
    """What an export reads (the embedded ``Engine``; a scaled ``ApiWorker``, from PostgreSQL
    and Redis)."""

    event_log: EventLog
    decision_log: DecisionLog
    quarantine: Quarantine
    outbox: Outbox
    audit: GroupedAuditLog
    callbacks: CallbackDesk

    def flush(self) -> None: ...

    def wall_now(self) -> float: ...

    def stitched_ids(self, customer_id: str) -> tuple[set[str], set[str]]: ...

    def profile_view(self, customer_id: str) -> dict[str, Any] | None: ...

    def exposures_of(self, keys: Collection[str]) -> dict[str, dict[str, Exposure]]: ...


__all__ = [
    "EXPORT_FORMAT",
    "CustomerData",
    "CustomerExport",
    "ErasureReport",
    "StitchedIds",
    "customer_ids",
    "erase_customer",
    "erasure_subject",
    "export_customer",
]

#: the version of ``CustomerExport``'s layout
EXPORT_FORMAT = 1
#: audit entries and outbox messages read per page
_PAGE = 1_000


class ErasureReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``erase_customer`` deleted."""

    customer_id: str
    user_ids: list[str]
    anonymous_ids: list[str]
    events: int
    decisions: int
    quarantined: int
    callbacks: int
    outbox: int
    profiles: int
    exposures: int
    #: views and clicks the learner waited on
    waiting: int
    #: the audit entry recording the erasure, and its subject (a pseudonym)
    audit_seq: int
    audit_subject: str
    #: with the customer id, recomputes ``audit_subject`` (module docstring): keep it with
    #: the request; nextbest keeps no copy
    receipt: str


class CustomerExport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything nextbest holds about one customer (GDPR art. 15 and 20), machine-readable."""

    format: int
    customer_id: str
    exported_at: float
    user_ids: list[str]
    anonymous_ids: list[str]
    #: the live profile (traits, consent, interests, offers seen, guard baseline ...) and
    #: what rules see of it now; None when none is held
    profile: dict[str, Any] | None
    events: list[Event]
    decisions: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]
    #: experiment exposures: campaign -> the customer's arm, first exposure, values
    exposures: dict[str, Any]
    quarantined: list[dict[str, Any]]
    outbox: list[dict[str, Any]]
    audit: list[AuditEntry]


class StitchedIds(Protocol):
    """Where ``customer_ids`` looks: the links a store or view holds, and the event log."""

    @property
    def event_log(self) -> EventLog: ...

    def stitched_ids(self, customer_id: str) -> tuple[set[str], set[str]]: ...


def customer_ids(
    engine: StitchedIds, customer_id: str, also: tuple[Collection[str], Collection[str]] = ((), ())
) -> tuple[list[str], list[str]]:
    """The customer's userIds and anonymousIds: what the identity map links to them, and what
    their own events say (their devices' identifies, their aliases: a store restored from an
    older snapshot, say); ``also``: more userIds and anonymousIds known to be theirs (what a
    scaled API worker found in Redis)."""
    if not customer_id:
        raise ValidationError("a customer id is required", "$.path.user_id")
    if customer_id.startswith(ANON_PREFIX):
        return sorted(also[0]), sorted({customer_id[len(ANON_PREFIX) :], *also[1]})
    users, anons = engine.stitched_ids(customer_id)
    users.add(customer_id)
    users.update(also[0])
    anons.update(also[1])
    seen: set[str] = set()
    while users - seen:  # aliases lead to more userIds
        todo = users - seen
        seen |= todo
        for stored in engine.event_log.events_of(sorted(todo), (), engine.event_log.last_seq()):
            event = stored.event
            if event.user_id not in users:
                continue
            if event.anonymous_id:
                anons.add(event.anonymous_id)
            if event.type is EventType.ALIAS and event.previous_id:
                users.add(event.previous_id)
                anons.add(event.previous_id)
    return sorted(users), sorted(anons)


def _keys(users: list[str], anons: list[str]) -> list[str]:
    """Every customer key the ids may have been decided or counted under."""
    return [*users, *(ANON_PREFIX + a for a in anons)]


def erase_customer(
    engine: Engine,
    customer_id: str,
    actor: Actor,
    *,
    receipt: str | None = None,
    also: tuple[Collection[str], Collection[str]] = ((), ()),
) -> ErasureReport:
    """Erase the customer ``customer_id`` (a userId; ``anon:<anonymousId>`` for a visitor who
    never logged in) and every id stitched to them (module docstring), with ``also``'s ids.
    NotFound when nothing anywhere holds any of their ids (and nothing is recorded).
    ``receipt``: the one the pseudonym is made with (a new random one by default; a scaled
    API worker makes it and hands it on)."""
    with engine.exclusive(saving=True):
        engine.flush()  # pending decisions into the log, where they are erased
        users, anons = customer_ids(engine, customer_id, also)
        keys = _keys(users, anons)
        events = engine.event_log.erase(users, anons)
        decisions = engine.decision_log.erase_decisions(keys)
        quarantined = engine.quarantine.erase_held(users, anons)
        callbacks = engine.callbacks.erase_customers(keys)
        outbox = engine.outbox.erase_mentions([*users, *anons, *keys])
        forgotten = engine.forget(users, anons)
        engine.snapshot(held=True)  # their rows deleted, the learner saved without them
        if isinstance(engine.event_log, Scrubbing):
            engine.event_log.scrub()
    counts = {
        "events": events,
        "decisions": len(decisions),
        "quarantined": quarantined,
        "callbacks": callbacks,
        "outbox": outbox,
        "profiles": len(forgotten.profiles),
        "exposures": forgotten.exposures,
        "waiting": forgotten.waiting,
    }
    if not any(counts.values()):
        raise NotFound(f"no customer {customer_id!r}: nothing holds any of their ids")
    receipt = receipt or secrets.token_hex(16)
    subject = erasure_subject(receipt, customer_id)
    (entry,) = engine.audit.append(
        [
            AuditRecord(
                time=engine.wall_now(),
                actor=actor,
                action=AuditAction.CUSTOMER_ERASED,
                subject=subject,
                details={**counts, "ids": len(users) + len(anons)},
            )
        ]
    )
    return ErasureReport(
        customer_id=customer_id,
        user_ids=users,
        anonymous_ids=anons,
        **counts,
        audit_seq=entry.seq,
        audit_subject=subject,
        receipt=receipt,
    )


def erasure_subject(receipt: str, customer_id: str) -> str:
    """The pseudonym an erasure's audit entry names the customer by (module docstring)."""
    return "erased:" + hashlib.sha256(f"{receipt}\x00{customer_id}".encode()).hexdigest()


def _audit_of(engine: CustomerData, keys: list[str]) -> list[AuditEntry]:
    out: list[AuditEntry] = []
    for key in keys:
        after = 0
        while page := engine.audit.entries(after, _PAGE, key):
            out.extend(page)
            after = page[-1].seq
    return sorted(out, key=lambda e: e.seq)


def _outbox_of(engine: CustomerData, ids: list[str]) -> Iterator[OutboxMessage]:
    needles = [mention(i) for i in ids]
    after = 0
    while page := engine.outbox.messages(None, after, _PAGE):
        after = page[-1].id
        for m in page:
            if any(n in m.payload or n in m.key.encode() for n in needles):
                yield m


def _quarantined_of(engine: CustomerData, users: list[str], anons: list[str]) -> list[HeldMessage]:
    out: list[HeldMessage] = []
    after = 0
    while page := engine.quarantine.held(after, _PAGE):
        after = page[-1].id
        out.extend(m for m in page if of_erased(m.event, users, anons))
    return out


def export_customer(engine: CustomerData, customer_id: str, actor: Actor) -> CustomerExport:
    """Everything held about ``customer_id`` and the ids stitched to them (as
    ``erase_customer`` finds them), recorded in the audit log first (a read of a customer's
    data: ``CUSTOMER_EXPORTED``). NotFound when nothing holds any of their ids."""
    engine.flush()
    users, anons = customer_ids(engine, customer_id)
    keys = _keys(users, anons)
    log = engine.event_log
    stored = log.events_of(users, anons, log.last_seq())
    events = [s.event for s in stored if of_erased(s.event, users, anons)]
    profile = engine.profile_view(customer_id) if users else None
    decisions = engine.decision_log.decisions_of(keys)
    callbacks = [c for k in keys for c in engine.callbacks.of_customer(k)]
    if profile is None and not events and not decisions and not callbacks:
        raise NotFound(f"no customer {customer_id!r}: nothing holds any of their ids")
    entry_time = engine.wall_now()
    engine.audit.append(
        [
            AuditRecord(
                time=entry_time,
                actor=actor,
                action=AuditAction.CUSTOMER_EXPORTED,
                subject=customer_id,
                details={"ids": len(users) + len(anons)},
            )
        ]
    )
    outbox = [
        {**m._asdict(), "payload": m.payload.decode("utf-8", "replace")}
        for m in _outbox_of(engine, [*users, *anons, *keys])
    ]
    return CustomerExport(
        format=EXPORT_FORMAT,
        customer_id=customer_id,
        exported_at=entry_time,
        user_ids=users,
        anonymous_ids=anons,
        profile=profile,
        events=events,
        decisions=[msgspec.to_builtins(d) for d in decisions],
        callbacks=[msgspec.to_builtins(c) for c in callbacks],
        exposures=msgspec.to_builtins(engine.exposures_of(keys)),
        quarantined=[m._asdict() for m in _quarantined_of(engine, users, anons)],
        outbox=outbox,
        audit=_audit_of(engine, keys),
    )
