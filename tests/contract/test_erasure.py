"""The erasure part of every store port's contract (GDPR art. 17), over every backend: what
a customer's ids name goes, what another customer sent from a shared device stays, and
positions (event seqs, decision log positions) are never handed out again, so a restart from
a saved position skips nothing."""

from __future__ import annotations

from nextbest.decide.model import Decision
from nextbest.events import parse_batch
from nextbest.events.model import Event
from nextbest.store import HeldMessage, Stores
from tests.contract.test_callbacks import callback
from tests.support import T0, batch, page


def _events(*who: dict[str, str], start: int = 0) -> list[Event]:
    return parse_batch(
        batch(*[page(f"https://b.example/{start + i}", at=T0 + i, **w) for i, w in enumerate(who)]),
        T0 + 1000,
    )


def _decision(decision_id: str, customer: str, at: float = T0) -> Decision:
    return Decision(
        decision_id=decision_id,
        customer_id=customer,
        placement="home",
        timestamp=at,
        catalog_version="1",
        items=[],
        excluded=[],
        control=[],
        segments=[],
    )


def test_the_event_log_erases_a_customer_s_ids_and_keeps_a_shared_device_s_other_user(
    stores: Stores,
):
    log = stores.events
    log.append(
        _events(
            {"user": "gone"},
            {"anon": "gone-dev"},
            {"user": "gone", "anon": "gone-dev"},
            {"user": "kept", "anon": "gone-dev"},  # another user on the shared device
            {"user": "kept"},
            {"anon": "gone-dev"},  # the last seq
        )
    )
    last = log.last_seq()
    assert log.erase(["gone"], ["gone-dev"]) == 4
    assert log.erase(["gone"], ["gone-dev"]) == 0  # idempotent
    assert log.count() == 2
    assert {s.event.user_id for s in log.scan()} == {"kept"}
    assert log.events_of(["gone"], ["gone-dev"], last) == [
        s for s in log.scan() if s.event.anonymous_id == "gone-dev"
    ]
    assert log.last_seq() == last  # never goes down
    (seq,) = log.append(_events({"user": "new"}, start=100))
    assert seq is not None
    assert seq > last


def test_a_retried_erased_message_stays_a_duplicate(stores: Stores):
    log = stores.events
    sent = _events({"user": "gone"}, {"anon": "gone-dev"}, {"user": "kept"})
    log.append(sent)
    assert log.erase(["gone"], ["gone-dev"]) == 2
    # the client retries its whole batch after the erasure: only what was kept is known,
    # and nothing erased is stored again
    assert log.append(sent) == [None, None, None]
    assert log.count() == 1
    assert log.events_of(["gone"], ["gone-dev"], log.last_seq()) == []
    (seq,) = log.append(_events({"user": "gone"}, start=50))  # a new message: new data
    assert seq is not None


def test_the_decision_log_erases_a_customer_s_decisions_and_never_reuses_a_position(
    stores: Stores,
):
    log = stores.decisions
    log.append_decisions([_decision("d1", "kept"), _decision("d2", "gone", T0 + 1)])
    log.append_decisions([_decision("d3", "anon:gone-dev", T0 + 2)])
    position = log.decision_log_position()
    assert [d.decision_id for d in log.decisions_of(["gone", "anon:gone-dev"])] == ["d2", "d3"]
    assert sorted(log.erase_decisions(["gone", "anon:gone-dev"])) == ["d2", "d3"]
    assert log.erase_decisions(["gone"]) == []
    assert log.decision("d2") is None
    assert log.decision("d1") is not None
    assert [d.decision_id for d in log.decisions()] == ["d1"]
    assert log.decision_log_position() == position  # never goes down
    log.append_decisions([_decision("d4", "kept", T0 + 3)])
    assert log.decision_log_position() > position
    assert [d.decision_id for d in log.decisions_after(position)] == ["d4"]


def test_the_quarantine_erases_a_customer_s_held_messages(stores: Stores):
    events = _events({"user": "gone"}, {"anon": "gone-dev"}, {"user": "kept", "anon": "gone-dev"})
    stores.quarantine.hold(
        [HeldMessage(0, T0, "missing_property", "needs x", "$", "write", e) for e in events]
    )
    assert stores.quarantine.erase_held(["gone"], ["gone-dev"]) == 2
    (left,) = stores.quarantine.held()
    assert left.event.user_id == "kept"


def test_the_outbox_erases_the_messages_about_or_naming_a_customer(stores: Stores):
    box = stores.outbox
    # about a customer (by index), whatever the payload says
    box.enqueue("webhook", "crm", "cb-1", b'{"topic":"mortgage"}', T0, customer="gone")
    box.enqueue("fraud", "fraud", "guard-1", b"{}", T0, customer="anon:gone-dev")
    box.enqueue("webhook", "crm", "cb-4", b'{"customer":"gone"}', T0, customer="kept")
    # enqueued without a customer: found by what key and payload name
    box.enqueue("webhook", "crm", "cb-2", b'{"customer":"gone","topic":"mortgage"}', T0)
    box.enqueue("webhook", "crm", "cb-3", b'{"customer":"gone-not","x":"gone "}', T0)
    box.enqueue("webhook", "crm", "cb-5", b'{"customer":"kept"}', T0)
    assert box.erase_mentions(["gone", "anon:gone-dev"]) == 3
    assert sorted(m.key for m in box.messages()) == ["cb-3", "cb-4", "cb-5"]


def test_callbacks_erase_a_customer_s_callbacks(stores: Stores):
    cbs = stores.callbacks
    cbs.create(callback("c1", "gone"))
    cbs.create(callback("c2", "kept"))
    cbs.create(callback("c3", "gone", at=T0 + 5))
    assert cbs.erase_customers(["gone", "anon:gone-dev"]) == 2
    assert cbs.of_customer("gone") == []
    assert [c.id for c in cbs.scan()] == ["c2"]
    assert cbs.count() == 1
