"""The audit chain (``nextbest.audit``): the canonical encoding is pinned, and ``verify``
names the first broken entry whatever was done to the log: an entry edited (with or without
its hash recomputed), one deleted, the tail cut off (caught against the recorded head or an
anchor kept outside), entries added past the head, an anchor contradicted."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from nextbest.audit import (
    GENESIS,
    Actor,
    AuditAction,
    AuditEntry,
    AuditHead,
    AuditRecord,
    actor_of,
    canonical,
    chain,
    consent_change,
    entry_hash,
    verify,
)
from nextbest.guard.senders import KeyKind, Sender

T0 = 1_767_225_600.0  # 2026-01-01


def records(n: int) -> list[AuditRecord]:
    return [
        AuditRecord(
            time=T0 + i,
            actor=Actor(kind="server", key_id="server:0123456789ab"),
            action=AuditAction.PROFILE_READ,
            subject=f"cust-{i % 3}",
            details={"found": True},
        )
        for i in range(n)
    ]


def test_the_canonical_encoding_and_hash_are_pinned():
    (entry,) = chain(
        [
            AuditRecord(
                time=T0 + 0.5,
                actor=Actor(kind="admin", key_id="admin:0123456789ab"),
                action=AuditAction.CONSENT_CHANGED,
                subject="cust-ø",
                details={"after": {"marketing": False}, "before": {}},
            )
        ],
        None,
    )
    body = canonical(
        1,
        T0 + 0.5,
        entry.actor,
        "consent.changed",
        "cust-ø",
        {"before": {}, "after": {"marketing": False}},
        GENESIS,
    )
    assert (
        body
        == (
            '{"action":"consent.changed","actor":{"key_id":"admin:0123456789ab","kind":"admin"},'
            '"details":{"after":{"marketing":false},"before":{}},"prev_hash":"' + GENESIS + '",'
            '"seq":1,"subject":"cust-ø","time":1767225600.5,"v":1}'
        ).encode()
    )
    assert entry.hash == hashlib.sha256(b"nextbest audit\x00" + body).hexdigest()
    assert entry_hash(entry) == entry.hash


def test_a_fresh_chain_verifies_and_reports_its_head():
    made = chain(records(5), None)
    verdict = verify(made, AuditHead(5, made[-1].hash))
    assert verdict.ok
    assert verdict.entries == 5
    assert verdict.head == AuditHead(5, made[-1].hash)
    assert verify([], None).ok
    # a second append chains on the first
    more = chain(records(2), AuditHead(5, made[-1].hash))
    assert [e.seq for e in more] == [6, 7]
    assert verify([*made, *more], AuditHead(7, more[-1].hash)).ok


def _edited(entry: AuditEntry, **fields: object) -> AuditEntry:
    return msgspec.structs.replace(entry, **fields)


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "cust-other"},
        {"time": T0 + 99},
        {"details": {"found": False}},
        {"actor": Actor(kind="admin")},
        {"action": "profile.written"},
    ],
    ids=["subject", "time", "details", "actor", "action"],
)
def test_an_edited_entry_is_named(change: dict[str, object]):
    made = chain(records(5), None)
    made[2] = _edited(made[2], **change)
    verdict = verify(made, AuditHead(5, made[-1].hash))
    assert (verdict.ok, verdict.broken_seq, verdict.entries) == (False, 3, 2)
    assert "changed" in (verdict.reason or "")


def test_an_edit_with_its_hash_recomputed_breaks_the_next_link():
    made = chain(records(5), None)
    forged = _edited(made[2], subject="cust-other")
    made[2] = _edited(forged, hash=entry_hash(forged))
    verdict = verify(made, AuditHead(5, made[-1].hash))
    assert (verdict.ok, verdict.broken_seq) == (False, 4)
    assert "does not follow entry 3" in (verdict.reason or "")


def test_a_deleted_entry_is_named():
    made = chain(records(5), None)
    del made[1]
    verdict = verify(made, AuditHead(5, made[-1].hash))
    assert (verdict.ok, verdict.broken_seq) == (False, 2)
    assert "missing" in (verdict.reason or "")


def test_a_tail_cut_off_shows_against_the_head_or_an_anchor():
    made = chain(records(6), None)
    head = AuditHead(6, made[-1].hash)
    verdict = verify(made[:4], head)
    assert (verdict.ok, verdict.broken_seq) == (False, 5)
    assert "cut off" in (verdict.reason or "")
    # with the recorded head rewritten too, only an anchor kept elsewhere shows it
    assert verify(made[:4], AuditHead(4, made[3].hash)).ok
    anchored = verify(made[:4], AuditHead(4, made[3].hash), [head])
    assert (anchored.ok, anchored.broken_seq) == (False, 5)


def test_an_anchor_that_the_chain_contradicts_is_named():
    made = chain(records(4), None)
    other = chain(records(4)[::-1], None)  # another history of the same length
    verdict = verify(made, AuditHead(4, made[-1].hash), [AuditHead(2, other[1].hash)])
    assert (verdict.ok, verdict.broken_seq) == (False, 2)
    assert verify(made, None, [AuditHead(2, made[1].hash)]).ok


def test_entries_past_the_head_or_out_of_order_are_named():
    made = chain(records(4), None)
    verdict = verify(made, AuditHead(3, made[2].hash))
    assert (verdict.ok, verdict.broken_seq) == (False, 4)
    swapped = [made[0], made[2], made[1], made[3]]
    assert verify(swapped, AuditHead(4, made[-1].hash)).broken_seq == 2
    twice = [made[0], made[1], made[1]]
    assert verify(twice, None).broken_seq == 2
    wrong_head = verify(made, AuditHead(4, made[0].hash))
    assert (wrong_head.ok, wrong_head.broken_seq) == (False, 4)


def test_the_actor_of_a_request_holds_no_secret():
    sender = Sender(KeyKind.BROWSER, bound_user="u-1", key_id="browser:0123456789ab")
    actor = msgspec.json.encode(actor_of(sender))
    assert actor == b'{"kind":"browser","key_id":"browser:0123456789ab","user":"u-1"}'


def test_a_consent_change_names_before_and_after():
    assert consent_change({"marketing": True}, {"marketing": True}) is None
    assert consent_change({}, {"marketing": False, "analytics": True}) == {
        "before": {},
        "after": {"analytics": True, "marketing": False},
    }
