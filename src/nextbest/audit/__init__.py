"""The audit log: who read which customer's data, changed a consent or the catalog, as an
append-only chain of entries, each hashed over its content and its predecessor's hash (pure:
the stores append and read, ``audit.chain`` links and checks)."""

from nextbest.audit.chain import GENESIS, canonical, chain, entry_hash, verify
from nextbest.audit.model import (
    Actor,
    AuditAction,
    AuditEntry,
    AuditHead,
    AuditRecord,
    AuditVerdict,
    actor_of,
    consent_change,
)

__all__ = [
    "GENESIS",
    "Actor",
    "AuditAction",
    "AuditEntry",
    "AuditHead",
    "AuditRecord",
    "AuditVerdict",
    "actor_of",
    "canonical",
    "chain",
    "consent_change",
    "entry_hash",
    "verify",
]
