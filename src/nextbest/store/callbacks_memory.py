"""The in-memory twin of the callback queue (``port.Callbacks``): same contract, no I/O.

A lock makes each write one atomic step, as a transaction does in the SQL backends: threads
racing for one advisor's slot get exactly its capacity of winners here too.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence

from nextbest.advisors.board import Hold
from nextbest.advisors.model import Callback, CallbackState, Presence
from nextbest.errors import Conflict, InputError, NotFound
from nextbest.store import callbacks as rules
from nextbest.store.port import CallbackWrite, Capacity

__all__ = ["MemoryCallbacks"]


def _queue_key(c: Callback) -> tuple[float, str]:
    return (c.requested_at if c.scheduled_for is None else c.scheduled_for), c.id


def _due_key(c: Callback) -> tuple[bool, float, str]:
    """Timers first (an offer lapsed, a slot came, a call not started), then the callbacks
    waiting to be offered; each by when it fell due, then id."""
    timer = rules.timer_of(c)
    waiting = c.state is CallbackState.REQUESTED and c.scheduled_for is None
    return (waiting, *((timer, c.id) if timer is not None else _queue_key(c)))


class MemoryCallbacks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, Callback] = {}
        self._of_customer: dict[str, set[str]] = {}
        self._of_advisor: dict[str, set[str]] = {}
        #: requested or offered: the ones ``due`` looks at
        self._waiting: set[str] = set()
        self._presence: dict[str, tuple[Presence, float]] = {}
        self._rotation: dict[str, float] = {}

    # ------------------------------------------------------------------ writes
    def create(self, callback: Callback, capacity: Capacity | None = None) -> Callback:
        with self._lock:
            return self._create(callback, capacity)

    def _create(self, callback: Callback, capacity: Capacity | None) -> Callback:
        if callback.id in self._callbacks:
            raise Conflict(f"callback {callback.id} exists already")
        mine = (self._callbacks[i] for i in self._of_customer.get(callback.customer, ()))
        refusal = rules.in_flight(callback, mine)
        if refusal is not None:
            raise refusal
        self._check(None, callback, capacity)
        return self._put(None, rules.stored_as(callback, 1))

    def save(
        self, callback: Callback, expected_version: int, capacity: Capacity | None = None
    ) -> Callback:
        with self._lock:
            return self._save(callback, expected_version, capacity)

    def _save(
        self, callback: Callback, expected_version: int, capacity: Capacity | None
    ) -> Callback:
        stored = self._callbacks.get(callback.id)
        refusal = rules.refused(stored, callback, expected_version)
        if refusal is not None:
            raise refusal
        self._check(stored, callback, capacity)
        return self._put(stored, rules.stored_as(callback, expected_version + 1))

    def write_many(self, writes: Sequence[CallbackWrite]) -> list[Callback | InputError]:
        out: list[Callback | InputError] = []
        with self._lock:
            for w in writes:
                try:
                    if w.expected_version is None:
                        out.append(self._create(w.callback, w.capacity))
                    else:
                        out.append(self._save(w.callback, w.expected_version, w.capacity))
                except (Conflict, NotFound) as refused:  # a refused write changes nothing
                    out.append(refused)
        return out

    def _check(self, before: Callback | None, after: Callback, capacity: Capacity | None) -> None:
        def others(advisor: str) -> list[Callback]:
            return [self._callbacks[i] for i in self._of_advisor.get(advisor, ()) if i != after.id]

        def count_live(advisor: str) -> int:
            return sum(1 for c in others(advisor) if rules.live(c))

        def count_slot(advisor: str, at: float, length: float) -> int:
            return sum(
                1
                for c in others(advisor)
                if rules.booked(c)
                and c.scheduled_for is not None
                and rules.in_slot(c.scheduled_for, at, length)
            )

        rules.check_capacity(before, after, capacity, count_live, count_slot)

    def _put(self, before: Callback | None, after: Callback) -> Callback:
        self._replace(before, after)
        assigned = rules.assignment(before, after)
        if assigned is not None:
            advisor, at = assigned
            self._rotation[advisor] = max(at, self._rotation.get(advisor, at))
        return after

    def _replace(self, before: Callback | None, after: Callback) -> None:
        """Hold ``after`` in place of ``before`` (None: nothing held), in every index."""
        if before is not None:
            self._unindex(before)
        self._callbacks[after.id] = after
        self._of_customer.setdefault(after.customer, set()).add(after.id)
        if after.advisor_id is not None:
            self._of_advisor.setdefault(after.advisor_id, set()).add(after.id)
        if after.state in (CallbackState.REQUESTED, CallbackState.OFFERED, CallbackState.ACCEPTED):
            self._waiting.add(after.id)

    def erase_customers(self, customers: Collection[str]) -> int:
        with self._lock:
            gone = [self._callbacks[i] for c in customers for i in self._of_customer.pop(c, ())]
            for callback in gone:
                self._of_customer.setdefault(callback.customer, set())
                self._unindex(callback)
                del self._callbacks[callback.id]
                self._of_customer.pop(callback.customer, None)
            return len(gone)

    def _unindex(self, c: Callback) -> None:
        self._of_customer[c.customer].discard(c.id)
        if c.advisor_id is not None:
            self._of_advisor[c.advisor_id].discard(c.id)
        self._waiting.discard(c.id)

    def set_presence(
        self, advisor_id: str, presence: Presence, at: float
    ) -> tuple[Presence, float]:
        with self._lock:
            held = self._presence.get(advisor_id)
            if held is None or held[1] <= at:
                held = self._presence[advisor_id] = (presence, at)
            return held

    def restore(
        self,
        callbacks: Sequence[Callback],
        presences: Mapping[str, tuple[Presence, float]] | None = None,
        rotation: Mapping[str, float] | None = None,
    ) -> None:
        with self._lock:
            for c in callbacks:
                self._replace(self._callbacks.get(c.id), c)
            self._presence.update(
                (a, (Presence(p), float(at))) for a, (p, at) in (presences or {}).items()
            )
            self._rotation.update((a, float(at)) for a, at in (rotation or {}).items())

    # ------------------------------------------------------------------- reads
    def get(self, callback_id: str) -> Callback | None:
        return self._callbacks.get(callback_id)

    def of_customer(self, customer: str) -> list[Callback]:
        with self._lock:
            found = [self._callbacks[i] for i in self._of_customer.get(customer, ())]
        return sorted(found, key=lambda c: (c.requested_at, c.id))

    def of_advisor(
        self, advisor_id: str, states: Collection[CallbackState] | None = None
    ) -> list[Callback]:
        with self._lock:
            found = [self._callbacks[i] for i in self._of_advisor.get(advisor_id, ())]
        if states is not None:
            wanted = {CallbackState(s) for s in states}
            found = [c for c in found if c.state in wanted]
        return sorted(found, key=_queue_key)

    def open_load(self) -> dict[str, int]:
        with self._lock:
            load = {
                advisor: sum(
                    1
                    for i in ids
                    if rules.live(self._callbacks[i])
                    or (
                        self._callbacks[i].state is CallbackState.REQUESTED
                        and rules.booked(self._callbacks[i])
                    )
                )
                for advisor, ids in self._of_advisor.items()
            }
        return {a: n for a, n in sorted(load.items()) if n}

    def holds(self, advisor_id: str | None = None) -> list[Hold]:
        with self._lock:
            pool = [
                self._callbacks[i]
                for a, ids in self._of_advisor.items()
                if advisor_id is None or a == advisor_id
                for i in ids
            ]
        found = [
            Hold(c.id, c.advisor_id, c.state, c.scheduled_for)
            for c in pool
            if rules.live(c) or rules.booked(c)
        ]
        return sorted(found, key=lambda h: h.id)

    def booked(self, advisor_id: str | None, start: float, end: float) -> list[Callback]:
        with self._lock:
            pool = (
                self._callbacks.values()
                if advisor_id is None
                else [self._callbacks[i] for i in self._of_advisor.get(advisor_id, ())]
            )
            found = [
                c
                for c in pool
                if not c.final and c.scheduled_for is not None and start <= c.scheduled_for < end
            ]
        return sorted(found, key=_queue_key)

    def due(self, now: float, limit: int | None = None) -> list[Callback]:
        with self._lock:
            found = [
                c
                for c in (self._callbacks[i] for i in self._waiting)
                if ((timer := rules.timer_of(c)) is not None and timer <= now)
                or (
                    c.state is CallbackState.REQUESTED
                    and (c.scheduled_for is None or c.scheduled_for <= now)
                )
            ]
        found.sort(key=_due_key)
        return found if limit is None else found[:limit]

    def presences(self) -> dict[str, tuple[Presence, float]]:
        with self._lock:
            return dict(sorted(self._presence.items()))

    def rotation(self) -> dict[str, float]:
        with self._lock:
            return dict(sorted(self._rotation.items()))

    def scan(self, after: str = "", limit: int | None = None) -> list[Callback]:
        with self._lock:
            ids = sorted(i for i in self._callbacks if i > after)
        ids = ids if limit is None else ids[:limit]
        return [self._callbacks[i] for i in ids]

    def count(self) -> int:
        return len(self._callbacks)
