"""Decisions between the pipeline and the decision log."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from nextbest.decide.model import Decision
from nextbest.decision_journal import DecisionJournal
from nextbest.errors import StoreUnavailable
from nextbest.store.memory import MemoryDecisionLog
from tests.support import T0


def made(i: int) -> Decision:
    return Decision(
        decision_id=f"d{i:03d}",
        customer_id="u1",
        placement="home",
        timestamp=T0 + i,
        catalog_version="1",
        items=[],
        excluded=[],
        control=[],
        segments=[],
    )


class Failing(MemoryDecisionLog):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def append_decisions(self, decisions: Sequence[Decision]) -> None:
        if self.fail:
            raise StoreUnavailable("down")
        super().append_decisions(decisions)


def test_pending_decisions_are_readable_then_logged_then_recent():
    log = MemoryDecisionLog()
    journal = DecisionJournal(log, recent=2)
    assert [journal.add(made(i)) for i in range(3)] == [1, 2, 3]
    assert journal.get("d001") == made(1)
    assert log.decision("d001") is None
    journal.flush()
    assert journal.pending() == []
    assert [d.decision_id for d in log.decisions()] == ["d000", "d001", "d002"]
    assert journal.get("d000") == made(0)  # older than the recent ones: read from the log
    assert journal.cut() == ([], 3)


def test_a_failed_flush_keeps_the_decisions_pending():
    log = Failing()
    journal = DecisionJournal(log)
    journal.add(made(1))
    with pytest.raises(StoreUnavailable):
        journal.flush()
    assert journal.pending() == [made(1)]
    assert journal.cut() == ([made(1)], 0)
    log.fail = False
    journal.flush()
    assert journal.cut() == ([], 1)


def test_forget_where_drops_pending_and_recent_decisions_never_written_after():
    log = MemoryDecisionLog()
    journal = DecisionJournal(log)
    journal.add(made(1))
    journal.flush()  # recent
    journal.add(made(2))  # pending
    journal.add(made(5))  # taken after the erasure (at T0 + 3)
    assert journal.forget_where(lambda d: d.timestamp <= T0 + 3) == 2
    journal.flush()
    assert [d.decision_id for d in log.decisions()] == ["d001", "d005"]
    assert journal.get("d002") is None
