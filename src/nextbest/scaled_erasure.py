"""Erasure on the scaled roles (``serve --role api`` and ``--role fold``, docs/trust.md,
"Export and erasure: scaled roles").

    request  (API worker)  -> an ``ErasureCommand`` published on the bus (kind ``erase``) to
                              the customer's home partition: the bus orders it after every
                              event of the customer acknowledged before it
    apply    (fold worker) -> when its fold reaches the command: every event before it logged,
                              then tombstones recorded, the stream messages the customer's
                              logged events came by deleted (each event is logged with its
                              stream sequence), ``erasure.erase_customer`` on its
                              engine (the event log, decision log, quarantine, callbacks,
                              outbox in PostgreSQL; profiles, links, exposures, the learner's
                              views in its memory and Redis), the ids' write marks deleted
                              and the outcome recorded under the receipt
    outcome  (API worker)  -> polled from Redis; the request is answered once it is there

**Tombstones.** An erased id is remembered as ``HMAC-SHA256(key, "u:<userId>" or
"a:<anonymousId>")`` with the erasure's wall time, never as the id, for ``TOMBSTONE_SECONDS``
(7 days): a fold worker drops any event carrying a tombstoned id that an API worker accepted
(``received_at``) at or before the erasure. So an event of the customer still in flight
when the erasure ran (published concurrently with the command) is not folded back; a new
event sent after the erasure is new data and folded. A redelivery or a client's retry of an
erased message is a duplicate anyway: PostgreSQL keeps erased messageIds. The key is derived
from the deployment's customer token secret (``tombstone_key``): whoever holds Redis alone
cannot test a guessed id against the tombstones.

**Several fold workers** (``partitioned_fold``): the home partition's worker (the lead)
finds every id, records the tombstones and sends an ``ErasurePart`` (kind ``erase-part``) to
every other partition; each part erases what its partition holds and records itself
(``ErasureLedger.record_part``); the last one erases the shared stores, writes the audit
entry and hands the outcome to the model writer on the learning feed (``complete_erasure``),
which forgets the customer and records it. The customer's messages are deleted from the
stream (``stream_copies``: a logged event's, and the messages it came by).

**API workers' decisions.** The tombstones also go to a feed (``ErasureLedger.erased_since``)
every API worker reads on its flush tick (0.1 s): it drops its pending and recent decisions
for the erased customer keys before writing the pending ones, so a decision taken just
before the erasure is not written back after it (``DecisionJournal.forget_where``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import msgspec

from nextbest.audit.model import Actor, AuditAction, AuditRecord
from nextbest.bus.port import LEARNING, BusMessage, ErasableStream, EventBus
from nextbest.erasure import ErasureReport, erase_customer, erasure_subject
from nextbest.errors import ErasurePending, NotFound, NotServed
from nextbest.events.model import Event
from nextbest.profile.identity import ANON_PREFIX

if TYPE_CHECKING:
    from nextbest.engine import Engine
    from nextbest.store.port import ErasureLedger, Stores

__all__ = [
    "ERASE",
    "ERASE_PART",
    "OUTCOME_SECONDS",
    "TOMBSTONE_SECONDS",
    "ErasureCommand",
    "ErasureOutcome",
    "ErasurePart",
    "ErasurePending",
    "PartDone",
    "Tombstones",
    "complete_erasure",
    "customer_key_marks",
    "decode_command",
    "decode_done",
    "decode_outcome",
    "decode_part",
    "encode",
    "erase_on_engine",
    "outcome_of",
    "report_of",
    "stream_copies",
    "tombstone_key",
]

#: the bus message kind of an erasure command (an API worker's, to the customer's home
#: partition; on the learning feed, the last part, to the model writer)
ERASE = "erase"
#: the kind of an erasure's part: the home partition's fold worker sends one to every other
#: partition (several fold workers, ``partitioned_fold``)
ERASE_PART = "erase-part"
#: how long a tombstone is kept: longer than any event accepted before an erasure can still
#: be on its way to a fold (a fold worker down for days leaves its events in JetStream, but
#: the command waits behind them on the same stream)
TOMBSTONE_SECONDS = 7 * 86_400.0
#: how long an erasure's outcome is kept for its receipt's status reads
OUTCOME_SECONDS = 86_400.0

encode = msgspec.msgpack.Encoder().encode


class ErasureCommand(msgspec.Struct, frozen=True, kw_only=True):
    """What an API worker asks the fold to erase: the customer, the ids it found stitched to
    them in Redis (the fold adds those it knows), the receipt it answers with."""

    receipt: str
    customer_id: str
    user_ids: list[str]
    anonymous_ids: list[str]
    requested_at: float
    actor: Actor


class ErasureOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the fold recorded for a receipt (no id: counts and the audit entry only).
    ``status``: ``erased``, ``not_found`` (nothing held any of the ids) or ``not_served``
    (a fold worker started without what an erasure needs)."""

    status: str
    erased_at: float
    ids: int = 0
    events: int = 0
    decisions: int = 0
    quarantined: int = 0
    callbacks: int = 0
    outbox: int = 0
    profiles: int = 0
    exposures: int = 0
    waiting: int = 0
    audit_seq: int = 0
    audit_subject: str = ""
    message: str = ""


class ErasurePart(msgspec.Struct, frozen=True, kw_only=True):
    """An erasure as the home partition's fold worker hands it on (several fold workers):
    the command with every id it found (``user_ids``, ``anonymous_ids`` complete), the
    erasure's time (the tombstones'), how many parts answer (one per partition; the model
    writer too when ``models``); to the model writer, last, the customers' decision ids and
    the outcome it records."""

    command: ErasureCommand
    erased_at: float
    parts: int
    models: bool = False
    decisions: list[str] = []
    outcome: ErasureOutcome | None = None
    #: the commands' stream sequences (every partition's), deleted once the outcome is in
    commands: list[int] = []


class PartDone(msgspec.Struct, frozen=True, kw_only=True):
    """What one part of an erasure found (several fold workers; ``ErasureLedger.record_part``
    under the partition's number): the command's stream sequence there (deleted from the
    stream once the outcome is recorded), the events the event log lost, the profiles the
    partition's view held, the stream messages deleted."""

    seq: int
    events: int = 0
    profiles: int = 0
    messages: int = 0


decode_command = msgspec.msgpack.Decoder(ErasureCommand).decode
decode_done = msgspec.msgpack.Decoder(PartDone).decode
decode_part = msgspec.msgpack.Decoder(ErasurePart).decode
decode_outcome = msgspec.msgpack.Decoder(ErasureOutcome).decode


def tombstone_key(secret: str) -> bytes:
    """The HMAC key of the tombstones, derived from the deployment's customer token secret
    (every API and fold worker has it)."""
    return hashlib.sha256(b"nextbest erasure tombstones\x00" + secret.encode()).digest()


def customer_key_marks(users: Iterable[str], anons: Iterable[str]) -> list[str]:
    """The ids as write marks and tombstones name them: ``u:<userId>``, ``a:<anonymousId>``."""
    return [*("u:" + u for u in users), *("a:" + a for a in anons)]


class Tombstones:
    """The tombstones a fold worker (or an API worker's journal) knows: hash -> erasure
    time."""

    def __init__(self, key: bytes, held: Mapping[str, float] | None = None) -> None:
        #: the keyed hash, its key's pads computed once (each digest a copy: ~25% cheaper
        #: than a new one, and a fold checks every event while a tombstone is held)
        self._hmac = hmac.new(key, digestmod=hashlib.sha256)
        self.held: dict[str, float] = dict(held or {})

    def digest(self, name: str) -> str:
        """The tombstone of ``u:<userId>`` / ``a:<anonymousId>``."""
        h = self._hmac.copy()
        h.update(name.encode())
        return h.hexdigest()

    def of(self, users: Iterable[str], anons: Iterable[str]) -> list[str]:
        return [self.digest(n) for n in customer_key_marks(users, anons)]

    def of_customer_key(self, key: str) -> str:
        """The tombstone of a decision's customer key (a userId, ``anon:<anonymousId>``)."""
        if key.startswith(ANON_PREFIX):
            return self.digest("a:" + key[len(ANON_PREFIX) :])
        return self.digest("u:" + key)

    def add(self, digests: Mapping[str, float]) -> None:
        for d, at in digests.items():
            self.held[d] = max(at, self.held.get(d, at))

    def drops(self, event: Event) -> bool:
        """``event`` is one an erasure of its ids deletes (``store.port.of_erased``: its
        userId, or its anonymousId when it has none: another user's event from an erased
        device stays theirs) and was accepted at or before that erasure."""
        if not self.held:
            return False
        if event.user_id:
            name = "u:" + event.user_id
        elif event.anonymous_id:
            name = "a:" + event.anonymous_id
        else:
            return False
        at = self.held.get(self.digest(name))
        return at is not None and event.received_at <= at

    def prune(self, now: float, ttl: float = TOMBSTONE_SECONDS) -> None:
        self.held = {d: at for d, at in self.held.items() if at > now - ttl}


#: the messageId of a message a fold worker sent on (``partitioned_fold``: a forward, a
#: stitch on its way, a stitch put back) names the stream sequence it came from
_HOP = re.compile(r"^(?:fwd|stitch|defer):\d+:(\d+)$")


def stream_copies(bus: ErasableStream, seqs: Iterable[int]) -> set[int]:
    """``seqs`` and the stream sequences of the messages they came by, followed back to the
    one an API worker published: a forward's or a stitch's messageId names the sequence it
    was sent on from (one read of the stream per hop)."""
    out: set[int] = set()
    todo = set(seqs)
    while todo:
        out |= todo
        ids = bus.message_ids(todo)
        todo = {int(m.group(1)) for i in ids.values() if (m := _HOP.match(i))} - out
    return out


def outcome_of(report: ErasureReport, now: float) -> ErasureOutcome:
    return ErasureOutcome(
        status="erased",
        erased_at=now,
        ids=len(report.user_ids) + len(report.anonymous_ids),
        events=report.events,
        decisions=report.decisions,
        quarantined=report.quarantined,
        callbacks=report.callbacks,
        outbox=report.outbox,
        profiles=report.profiles,
        exposures=report.exposures,
        waiting=report.waiting,
        audit_seq=report.audit_seq,
        audit_subject=report.audit_subject,
    )


def erase_on_engine(
    engine: Engine, command: ErasureCommand, ids: tuple[list[str], list[str]], now: float
) -> ErasureOutcome:
    """``erase_customer`` on a fold worker's engine (its event log fully written) for the
    ids ``customer_ids`` found (``ids``): the outcome to record."""
    try:
        report = erase_customer(
            engine, command.customer_id, command.actor, receipt=command.receipt, also=ids
        )
    except NotFound:  # its message names the customer: not kept in Redis
        return ErasureOutcome(status="not_found", erased_at=now)
    return outcome_of(report, now)


def complete_erasure(
    rights: Stores,
    ledger: ErasureLedger,
    bus: EventBus,
    part: ErasurePart,
    parts: Mapping[str, bytes],
    now: float,
) -> ErasureOutcome:
    """Every partition erased its part (several fold workers): the stores no partition
    holds (decision log, quarantine, callbacks, outbox) erased, the audit entry written (a
    retry finds it among the parts, ``audit``), then the outcome: recorded here, with the
    ids' write marks deleted and the commands deleted from the stream; or, a model writer
    running, handed to it on the learning feed (it forgets the customer, then records it)."""
    command = part.command
    users, anons = command.user_ids, command.anonymous_ids
    keys = [*users, *(ANON_PREFIX + a for a in anons)]
    done = [decode_done(body) for name, body in parts.items() if name.isdigit()]
    decisions = [d.decision_id for d in rights.decisions.decisions_of(keys)]
    counts = {
        "events": sum(d.events for d in done),
        "decisions": len(rights.decisions.erase_decisions(keys)),
        "quarantined": rights.quarantine.erase_held(users, anons),
        "callbacks": rights.callbacks.erase_customers(keys),
        "outbox": rights.outbox.erase_mentions([*users, *anons, *keys]),
        "profiles": sum(d.profiles for d in done),
    }
    receipt = command.receipt
    if "audit" in parts:
        outcome = decode_outcome(parts["audit"])
    elif not any(counts.values()):
        outcome = ErasureOutcome(status="not_found", erased_at=now)
    else:
        subject = erasure_subject(receipt, command.customer_id)
        record = AuditRecord(
            time=now,
            actor=command.actor,
            action=AuditAction.CUSTOMER_ERASED,
            subject=subject,
            details={**counts, "ids": len(users) + len(anons)},
        )
        (entry,) = rights.audit.append([record])
        outcome = ErasureOutcome(
            status="erased",
            erased_at=now,
            ids=len(users) + len(anons),
            events=counts["events"],
            decisions=counts["decisions"],
            quarantined=counts["quarantined"],
            callbacks=counts["callbacks"],
            outbox=counts["outbox"],
            profiles=counts["profiles"],
            audit_seq=entry.seq,
            audit_subject=subject,
        )
        ledger.record_part(receipt, "audit", encode(outcome), OUTCOME_SECONDS)
    commands = sorted(d.seq for d in done)
    if part.models:
        last = msgspec.structs.replace(
            part, decisions=decisions, outcome=outcome, commands=commands
        )
        bus.publish([BusMessage(LEARNING, f"erase-{receipt}-models", encode(last), ERASE)])
    else:
        marks = customer_key_marks(users, anons)
        ledger.finish_erasure(receipt, encode(outcome), OUTCOME_SECONDS, marks)
        if isinstance(bus, ErasableStream):
            bus.erase_messages(commands)
    return outcome


def report_of(
    customer_id: str, users: list[str], anons: list[str], receipt: str, outcome: ErasureOutcome
) -> ErasureReport:
    """What an API worker answers for ``outcome`` (``users`` and ``anons``: the ids it found
    and sent; the fold may have found more, counted in ``ErasureOutcome.ids``)."""
    if outcome.status == "not_found":
        raise NotFound(f"no customer {customer_id!r}: nothing holds any of their ids")
    if outcome.status != "erased":
        raise NotServed(outcome.message or "the fold workers do not erase customers")
    return ErasureReport(
        customer_id=customer_id,
        user_ids=users,
        anonymous_ids=anons,
        events=outcome.events,
        decisions=outcome.decisions,
        quarantined=outcome.quarantined,
        callbacks=outcome.callbacks,
        outbox=outcome.outbox,
        profiles=outcome.profiles,
        exposures=outcome.exposures,
        waiting=outcome.waiting,
        audit_seq=outcome.audit_seq,
        audit_subject=outcome.audit_subject,
        receipt=receipt,
    )
