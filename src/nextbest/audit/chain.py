"""Linking and checking the audit chain (pure).

**Canonical encoding.** An entry is hashed as the UTF-8 JSON of an object holding every
field but ``hash`` (``v``: the format, 1; ``seq``, ``time``, ``actor``, ``action``,
``subject``, ``details``, ``prev_hash``), keys sorted at every level, no whitespace, floats
in their shortest round-trip form, strings as UTF-8 with control characters escaped: the
same bytes whichever backend kept the entry. ``hash`` is the hex SHA-256 of
``b"nextbest audit\\x00"`` and those bytes; the first entry's ``prev_hash`` is ``GENESIS``
(64 zeros).

**Checking** (``verify``): the entries must be seq 1, 2, 3 ... with no gap, each
``prev_hash`` the hash before it, each ``hash`` the hash of its content; the last must be
the head the store recorded with its last append (a tail cut off shows), and every anchor
given (a ``seq:hash`` kept outside the store) must be an entry of the chain. The first
entry that fails is named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from nextbest.audit.model import AuditEntry, AuditHead, AuditRecord, AuditVerdict

__all__ = ["FORMAT", "GENESIS", "canonical", "chain", "entry_hash", "normalized", "verify"]

#: the canonical encoding's version, hashed with every entry
FORMAT = 1
#: the ``prev_hash`` of the first entry
GENESIS = "0" * 64
_DOMAIN = b"nextbest audit\x00"
_encode = msgspec.json.Encoder(order="sorted").encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


def normalized(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` as it reads back from its JSON (tuples as lists, and so on): what a
    store returns, so what is hashed."""
    return _decode(_encode(details))


def canonical(
    seq: int,
    time: float,
    actor: Any,
    action: str,
    subject: str,
    details: dict[str, Any],
    prev_hash: str,
) -> bytes:
    """The bytes an entry's hash covers (module docstring)."""
    return _encode(
        {
            "v": FORMAT,
            "seq": seq,
            "time": time,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
            "prev_hash": prev_hash,
        }
    )


def entry_hash(entry: AuditEntry) -> str:
    """The hash ``entry`` must carry, by its content."""
    body = canonical(
        entry.seq,
        entry.time,
        entry.actor,
        entry.action,
        entry.subject,
        entry.details,
        entry.prev_hash,
    )
    return hashlib.sha256(_DOMAIN + body).hexdigest()


def chain(records: Sequence[AuditRecord], head: AuditHead | None) -> list[AuditEntry]:
    """``records`` as the entries that follow ``head`` (None: the first of the log)."""
    seq, prev = (0, GENESIS) if head is None else (head.seq, head.hash)
    out: list[AuditEntry] = []
    for record in records:
        seq += 1
        entry = AuditEntry(
            seq=seq,
            time=float(record.time),
            actor=record.actor,
            action=record.action.value,
            subject=record.subject,
            details=normalized(record.details),
            prev_hash=prev,
            hash="",
        )
        prev = entry_hash(entry)
        out.append(msgspec.structs.replace(entry, hash=prev))
    return out


def verify(
    entries: Iterable[AuditEntry],
    head: AuditHead | None,
    anchors: Sequence[AuditHead] = (),
) -> AuditVerdict:
    """Check the whole chain, read in seq order, against the head the store recorded
    (None: none recorded) and anchors kept elsewhere (module docstring)."""
    anchored = {a.seq: a.hash for a in anchors}
    expected, prev, count = 1, GENESIS, 0
    last: AuditHead | None = None

    def broken(seq: int, reason: str) -> AuditVerdict:
        return AuditVerdict(ok=False, entries=count, head=last, broken_seq=seq, reason=reason)

    for entry in entries:
        if entry.seq != expected:
            if entry.seq > expected:
                return broken(expected, f"entry {expected} is missing (the next is {entry.seq})")
            return broken(entry.seq, f"entry {entry.seq} appears again or out of order")
        if entry.prev_hash != prev:
            return broken(
                entry.seq,
                f"entry {entry.seq} does not follow entry {entry.seq - 1}: its prev_hash is "
                "not that entry's hash",
            )
        if entry_hash(entry) != entry.hash:
            return broken(entry.seq, f"entry {entry.seq} was changed: its hash does not match")
        if entry.seq in anchored and anchored[entry.seq] != entry.hash:
            return broken(entry.seq, f"entry {entry.seq} is not the one anchored")
        count += 1
        expected += 1
        prev = entry.hash
        last = AuditHead(entry.seq, entry.hash)
    end = 0 if last is None else last.seq
    if head is not None:
        if head.seq > end:
            return broken(
                end + 1,
                f"the log ends at entry {end} but its last append recorded entry {head.seq}: "
                "entries were cut off",
            )
        if head.seq < end:
            return broken(
                head.seq + 1, f"entries after {head.seq}, the last one appended, were added"
            )
        if last is not None and head.hash != last.hash:
            return broken(end, f"entry {end} is not the last one appended")
    beyond = sorted(s for s in anchored if s > end)
    if beyond:
        return broken(
            end + 1,
            f"the log ends at entry {end} but entry {beyond[-1]} was anchored: entries were "
            "cut off",
        )
    return AuditVerdict(ok=True, entries=count, head=last)
