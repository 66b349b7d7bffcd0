"""Audited use cases: each read of a customer's data by a key that may read anyone's, and
each change of the catalog served, is recorded in the audit log (``nextbest.audit``) with
who did it, before it is answered or done. A record that cannot be written refuses the
read or the change (StoreError, 503): nothing is read or changed unaudited. Consent changes
are recorded by the engine as events fold (``Engine``).

    read_profile(...)   -> a profile view (``GET /v1/profiles/{id}``), recorded
    read_decision(...)  -> a logged decision, with the features it read, recorded
    read_quarantine(...)-> quarantined messages (customers' events), recorded
    record_export(...)  -> an export of the decision log, recorded before it is written
    catalog_change(...) -> the record of a catalog about to be served, with the diff
    verify_audit(...)   -> the whole chain checked against the recorded head and anchors
    list_audit(...)     -> entries, by subject if asked, and the head
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from nextbest.audit.chain import verify
from nextbest.audit.model import (
    Actor,
    AuditAction,
    AuditEntry,
    AuditHead,
    AuditRecord,
    AuditVerdict,
)
from nextbest.bootstrap import MEMORY, POSTGRES_SCHEMES, open_stores
from nextbest.catalog.compiled import Catalog
from nextbest.decide.model import Decision
from nextbest.errors import NotFound, ValidationError
from nextbest.profile.identity import ANON_PREFIX
from nextbest.service import Service
from nextbest.store.port import AuditLog, HeldMessage

__all__ = [
    "QUARANTINE_SUBJECT",
    "catalog_change",
    "catalog_diff",
    "list_audit",
    "parse_anchor",
    "read_decision",
    "read_profile",
    "read_quarantine",
    "record",
    "record_export",
    "verify_audit",
]

#: the subject of a quarantine listing (its customers are named in the details)
QUARANTINE_SUBJECT = "quarantine"
#: the subject of a decision log export
DECISION_LOG_SUBJECT = "decision_log"
#: the subject of a catalog change
CATALOG_SUBJECT = "catalog"
#: entries read per page when a whole log is checked
_PAGE = 10_000


def record(
    service: Service,
    actor: Actor,
    action: AuditAction,
    subject: str,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one record now (the wall clock: when it happened, whatever the engine's
    clock); its entry as stored."""
    (entry,) = service.audit.append(
        [
            AuditRecord(
                time=service.wall_now(),
                actor=actor,
                action=action,
                subject=subject,
                details=details or {},
            )
        ]
    )
    return entry


def read_profile(service: Service, actor: Actor, customer_id: str) -> dict[str, Any] | None:
    """``Service.profile_view``, recorded (``found``: whether there was one; ``asked``: the
    userId asked for, when it leads to another customer through an alias)."""
    view = service.profile_view(customer_id)
    subject = str(view["customer_id"]) if view is not None else customer_id
    details: dict[str, Any] = {"found": view is not None}
    if subject != customer_id:
        details["asked"] = customer_id
    record(service, actor, AuditAction.PROFILE_READ, subject, details)
    return view


def read_decision(service: Service, actor: Actor, decision_id: str) -> Decision | None:
    """A logged decision (``Service.decision``), recorded under its customer (a decision
    holds the features it read of them)."""
    decision = service.decision(decision_id)
    subject = decision.customer_id if decision is not None else f"decision:{decision_id}"
    details = {"decision_id": decision_id, "found": decision is not None}
    record(service, actor, AuditAction.DECISION_READ, subject, details)
    return decision


def _customer(message: HeldMessage) -> str:
    event = message.event
    return event.user_id or f"{ANON_PREFIX}{event.anonymous_id}"


def read_quarantine(
    service: Service, actor: Actor, after: int, limit: int | None
) -> list[HeldMessage]:
    """``Service.quarantined``, recorded with the customers whose events were shown."""
    held = service.quarantined(after, limit)
    details = {
        "after": after,
        "limit": limit,
        "messages": len(held),
        "customers": sorted({_customer(m) for m in held}),
    }
    record(service, actor, AuditAction.QUARANTINE_READ, QUARANTINE_SUBJECT, details)
    return held


def record_export(audit: AuditLog, actor: Actor, now: float, details: dict[str, Any]) -> None:
    """An export of the decision log (every customer's decisions), recorded before it is
    written."""
    audit.append(
        [
            AuditRecord(
                time=now,
                actor=actor,
                action=AuditAction.DECISIONS_EXPORTED,
                subject=DECISION_LOG_SUBJECT,
                details=details,
            )
        ]
    )


# ---------------------------------------------------------------- the catalog
def _spec_lines(catalog: Catalog) -> list[str]:
    text = msgspec.yaml.encode(msgspec.to_builtins(catalog.spec)).decode()
    return text.splitlines()


def catalog_diff(old: Catalog, new: Catalog) -> str:
    """A unified diff of the two compiled catalogs, as YAML (every setting as the engine
    reads it, defaults included: what changed in what is served, whichever file it came
    from)."""
    lines = difflib.unified_diff(
        _spec_lines(old),
        _spec_lines(new),
        fromfile=f"catalog {old.version}",
        tofile=f"catalog {new.version}",
        lineterm="",
    )
    return "\n".join(lines)


def catalog_change(service: Service, actor: Actor, new: Catalog) -> bool:
    """Record that ``new`` is about to replace the catalog ``service`` serves (previous and
    new versions, where it was read, the diff); False, and nothing recorded, when it is the
    same catalog (a reload that changes nothing)."""
    old = service.catalog
    if new.digest == old.digest and new.spec == old.spec:
        return False
    details = {
        "previous": old.version,
        "version": new.version,
        "source": new.source,
        "diff": catalog_diff(old, new),
    }
    record(service, actor, AuditAction.CATALOG_RELOADED, CATALOG_SUBJECT, details)
    return True


def catalog_change_failed(service: Service, actor: Actor, new: Catalog, why: str) -> None:
    """Record that the change recorded by ``catalog_change`` did not happen."""
    details = {"version": new.version, "served": service.catalog.version, "error": why}
    record(service, actor, AuditAction.CATALOG_RELOAD_FAILED, CATALOG_SUBJECT, details)


# ---------------------------------------------------------------- reading the log
def _opened_audit(data: str) -> tuple[AuditLog, Any]:
    if data != MEMORY and not data.startswith(POSTGRES_SCHEMES) and not Path(data).exists():
        raise NotFound(f"no store at {data}")
    stores = open_stores(data)
    return stores.audit, stores.close


def parse_anchor(text: str, path: str = "$.anchor") -> AuditHead:
    """``SEQ:HASH`` (as ``nextbest audit verify`` prints the head) as an ``AuditHead``."""
    seq, _, digest = text.strip().partition(":")
    if not seq.isdigit() or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValidationError(
            "an anchor is SEQ:HASH, the entry's number and its 64 hex digit hash, as "
            "`nextbest audit verify` prints the head",
            path,
        )
    return AuditHead(int(seq), digest)


def _pages(audit: AuditLog, upto: int) -> Iterator[AuditEntry]:
    after = 0
    while after < upto:
        page = audit.entries(after, min(_PAGE, upto - after))
        if not page:
            return
        yield from page
        after = page[-1].seq


def verify_audit(data: str, anchors: Sequence[AuditHead] = ()) -> AuditVerdict:
    """Check the audit log of the store ``data`` names, whole, against the head its last
    append recorded and the ``anchors`` kept elsewhere (``audit.chain.verify``). A server
    may append meanwhile: the chain is read up to the head read first, and only what lies
    past the head read last counts as added behind its back."""
    audit, close = _opened_audit(data)
    try:
        first = audit.head()
        end = 0 if first is None else first.seq
        verdict = verify(_pages(audit, max(end, max((a.seq for a in anchors), default=0))),
                         first, anchors)  # fmt: skip
        if not verdict.ok:
            return verdict
        last = audit.head()
        past = audit.entries(0 if last is None else last.seq, 1)
        if past:
            seq = past[0].seq
            return msgspec.structs.replace(
                verdict,
                ok=False,
                broken_seq=seq,
                reason=f"entry {seq} lies past the last one appended: it was added by hand",
            )
        return verdict
    finally:
        close()


def list_audit(
    data: str, subject: str | None = None, after: int = 0, limit: int | None = None
) -> tuple[AuditHead | None, list[AuditEntry]]:
    """The recorded head and the entries (about ``subject`` only, if given), by seq."""
    audit, close = _opened_audit(data)
    try:
        return audit.head(), audit.entries(after, limit, subject)
    finally:
        close()
