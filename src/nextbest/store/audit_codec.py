"""How every SQL backend of the audit log (``port.AuditLog``) keeps an entry: the actor and
the details as canonical JSON text (``audit.chain``), the rest in columns; read back as
stored, for ``audit.chain.verify`` to judge."""

from __future__ import annotations

from typing import Any

import msgspec

from nextbest.audit.model import Actor, AuditEntry, AuditHead

__all__ = ["COLUMNS", "entry_of", "head_of", "row_of"]

COLUMNS = "seq, time, actor, action, subject, details, prev_hash, hash"

_encode = msgspec.json.Encoder(order="sorted").encode
_actor = msgspec.json.Decoder(Actor).decode
_details = msgspec.json.Decoder(dict[str, Any]).decode


def row_of(entry: AuditEntry) -> tuple[object, ...]:
    """An entry as the columns of ``COLUMNS`` hold it."""
    return (
        entry.seq,
        entry.time,
        _encode(entry.actor).decode(),
        entry.action,
        entry.subject,
        _encode(entry.details).decode(),
        entry.prev_hash,
        entry.hash,
    )


def entry_of(row: Any) -> AuditEntry:
    seq, time, actor, action, subject, details, prev_hash, digest = row
    return AuditEntry(
        seq=int(seq),
        time=float(time),
        actor=_actor(actor),
        action=action,
        subject=subject,
        details=_details(details),
        prev_hash=prev_hash,
        hash=digest,
    )


def head_of(row: Any) -> AuditHead | None:
    """The row (seq, hash) of ``audit_head``, or None where there is none yet."""
    return None if row is None else AuditHead(int(row[0]), row[1])
