"""Decisions between the pipeline and the decision log: buffered, flushed in batches, and the
most recent kept in memory so that feedback joins its decision without a read.

A decision is pending (taken, not yet logged) or logged, never both as seen from under the
journal's lock: a flush appends outside the lock, then moves what it appended out of the
pending set in one step. ``cut`` waits until no flush is in flight, so a snapshot sees every
decision either in the log or pending.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection

from nextbest.decide.model import Decision
from nextbest.store.port import DecisionLog

__all__ = ["RECENT_DECISIONS", "DecisionJournal"]

#: flushed decisions kept in memory for feedback joins (about 4.4 KB each: ~90 MB at most);
#: older ones are read from the decision log, so any client filling it costs a read, not
#: memory
RECENT_DECISIONS = 20_000


class DecisionJournal:
    def __init__(self, log: DecisionLog, recent: int = RECENT_DECISIONS) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._pending: dict[str, Decision] = {}
        self._recent: OrderedDict[str, Decision] = OrderedDict()
        self._keep = recent
        #: flushes appending outside the lock; ``cut`` waits for none
        self._flushing = 0
        self._flushed = threading.Condition(self._lock)

    def add(self, decision: Decision) -> int:
        """Buffer a decision; the count now pending (the caller flushes when it is large)."""
        with self._lock:
            self._pending[decision.decision_id] = decision
            return len(self._pending)

    def pending(self) -> list[Decision]:
        with self._lock:
            return list(self._pending.values())

    def get(self, decision_id: str) -> Decision | None:
        """A decision pending, recent, or else read from the log."""
        with self._lock:
            found = self._pending.get(decision_id) or self._recent.get(decision_id)
        return found if found is not None else self.log.decision(decision_id)

    def flush(self) -> None:
        """Append the pending decisions to the log; on failure they stay pending."""
        with self._lock:
            pending = list(self._pending.values())
            if not pending:
                return
            self._flushing += 1
        appended = False
        try:
            self.log.append_decisions(pending)
            appended = True
        finally:
            with self._lock:  # logged and no longer pending in one step
                if appended:
                    recent = self._recent
                    for d in pending:
                        self._pending.pop(d.decision_id, None)
                        recent[d.decision_id] = d
                    while len(recent) > self._keep:
                        recent.popitem(last=False)
                self._flushing -= 1
                self._flushed.notify_all()

    def forget(self, customers: Collection[str]) -> list[str]:
        """Drop the recent (flushed) decisions made for these customer keys (an erasure,
        after a ``flush``): their ids. Pending ones stay pending: flush first."""
        with self._lock:
            gone = [i for i, d in self._recent.items() if d.customer_id in customers]
            for decision_id in gone:
                del self._recent[decision_id]
            return gone

    def forget_where(self, erased: Callable[[Decision], bool]) -> int:
        """Drop the pending and recent decisions ``erased`` says were erased (their customer
        was, after they were taken: a scaled API worker told by the erasures' feed; a
        pending one is never written): how many went."""
        with self._lock:
            self._flushed.wait_for(lambda: self._flushing == 0)
            gone = 0
            for table in (self._pending, self._recent):
                doomed = [i for i, d in table.items() if erased(d)]
                for decision_id in doomed:
                    del table[decision_id]
                gone += len(doomed)
            return gone

    def cut(self) -> tuple[list[Decision], int]:
        """(the decisions pending, the log's position) at one moment with no flush in flight:
        every decision taken so far is in the log up to that position, or in the list."""
        with self._lock:
            self._flushed.wait_for(lambda: self._flushing == 0)
            return list(self._pending.values()), self.log.decision_log_position()
