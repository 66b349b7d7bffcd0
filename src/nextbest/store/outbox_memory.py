"""The in-memory twin of the outbox port: the same contract, no I/O (tests, simulations)."""

from __future__ import annotations

import threading
from collections.abc import Collection

from nextbest.store.outbox_codec import mention
from nextbest.store.port import OutboxMessage, OutboxState

__all__ = ["MemoryOutbox"]

_LIVE = (OutboxState.PENDING, OutboxState.DELIVERING)


class MemoryOutbox:
    def __init__(self) -> None:
        self._rows: dict[int, OutboxMessage] = {}
        self._by_key: dict[str, int] = {}
        self._last = 0
        #: message id -> the customer it is about (None: not said)
        self._customer: dict[int, str | None] = {}
        self._lock = threading.Lock()  # a sender thread and the faces share it

    def enqueue(
        self,
        channel: str,
        destination: str,
        key: str,
        payload: bytes,
        now: float,
        customer: str | None = None,
    ) -> OutboxMessage:
        with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                return self._rows[found]
            self._last += 1
            row = OutboxMessage(
                self._last, channel, destination, key, bytes(payload),
                OutboxState.PENDING, 0, now, "", now, None,
            )  # fmt: skip
            self._rows[row.id] = row
            self._by_key[key] = row.id
            self._customer[row.id] = customer
            return row

    def claim_due(self, now: float, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        with self._lock:
            due = [r for r in self._rows.values() if r.state in _LIVE and r.next_attempt_at <= now]
            due.sort(key=lambda r: (r.next_attempt_at, r.id))
            claimed = [
                r._replace(
                    state=OutboxState.DELIVERING,
                    attempts=r.attempts + 1,
                    next_attempt_at=now + lease_seconds,
                )
                for r in due[: max(limit, 0)]
            ]
            for r in claimed:
                self._rows[r.id] = r
            return sorted(claimed, key=lambda r: r.id)

    def mark_delivered(self, message_id: int, now: float) -> bool:
        with self._lock:
            row = self._rows.get(message_id)
            if row is None or row.state is OutboxState.DELIVERED:
                return False
            self._rows[message_id] = row._replace(state=OutboxState.DELIVERED, delivered_at=now)
            return True

    def _claimed(self, message_id: int, attempt: int) -> OutboxMessage | None:
        row = self._rows.get(message_id)
        if row is None or row.state is not OutboxState.DELIVERING or row.attempts != attempt:
            return None
        return row

    def mark_failed(
        self, message_id: int, attempt: int, error: str, retry_at: float | None
    ) -> bool:
        with self._lock:
            row = self._claimed(message_id, attempt)
            if row is None:
                return False
            if retry_at is None:
                self._rows[message_id] = row._replace(state=OutboxState.DEAD, last_error=error)
            else:
                self._rows[message_id] = row._replace(
                    state=OutboxState.PENDING, next_attempt_at=retry_at, last_error=error
                )
            return True

    def release(self, message_id: int, attempt: int, retry_at: float) -> bool:
        with self._lock:
            row = self._claimed(message_id, attempt)
            if row is None:
                return False
            self._rows[message_id] = row._replace(
                state=OutboxState.PENDING, attempts=attempt - 1, next_attempt_at=retry_at
            )
            return True

    def messages(
        self, state: OutboxState | None = None, after: int = 0, limit: int | None = None
    ) -> list[OutboxMessage]:
        with self._lock:
            found = [
                r
                for i, r in sorted(self._rows.items())
                if i > after and (state is None or r.state is state)
            ]
        return found if limit is None else found[:limit]

    def counts(self) -> dict[OutboxState, int]:
        with self._lock:
            out = dict.fromkeys(OutboxState, 0)
            for r in self._rows.values():
                out[r.state] += 1
            return out

    def replay(self, message_ids: Collection[int], now: float) -> list[int]:
        with self._lock:
            done: list[int] = []
            for i in sorted(set(message_ids)):
                row = self._rows.get(i)
                if row is not None and row.state is OutboxState.DEAD:
                    self._rows[i] = row._replace(
                        state=OutboxState.PENDING, attempts=0, next_attempt_at=now
                    )
                    done.append(i)
            return done

    def erase_mentions(self, ids: Collection[str]) -> int:
        needles = [mention(i) for i in ids]
        with self._lock:
            about = set(ids)

            def erased(r: OutboxMessage) -> bool:
                customer = self._customer.get(r.id)
                if customer is not None:
                    return customer in about
                return any(n in r.payload or n in r.key.encode() for n in needles)

            gone = [r for r in self._rows.values() if erased(r)]
            for r in gone:
                del self._rows[r.id]
                del self._by_key[r.key]
                del self._customer[r.id]
            return len(gone)
