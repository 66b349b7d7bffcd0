"""Group commit: concurrent ingest requests share one durable commit.

Every acknowledged event must be on disk, and a durable commit (an fsync) costs far more
than the work of one event, so one request per commit caps a server at a few thousand
requests a second. As PostgreSQL does, requests that arrive while a commit is being written
wait for the next one, and that one commits them all: one thread takes every request queued
(up to ``max_events`` events), hands them to ``accept_many`` (one transaction, one fsync,
then the fold) and answers each request's future. Nobody waits on purpose: under light load
a group is one request, under heavy load it grows by itself.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from nextbest.errors import NextbestError

__all__ = ["GroupCommit"]

R = TypeVar("R")
T = TypeVar("T")


class GroupCommit(Generic[R, T]):
    """Hands queued requests to ``accept_many`` in groups, from one thread.

    ``size`` counts a request's events, so a group stays near ``max_events``; the thread
    starts with the first request and ``close`` stops it once the queue is empty."""

    def __init__(
        self,
        accept_many: Callable[[Sequence[R]], Sequence[T | NextbestError]],
        size: Callable[[R], int],
        max_events: int = 20_000,
    ) -> None:
        self._accept_many = accept_many
        self._size = size
        self._max_events = max_events
        self._queue: queue.SimpleQueue[tuple[R, Callable[[T | BaseException], None]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self._closed = False

    def submit(self, request: R) -> Future[T]:
        """Queue ``request``; its future holds its result, or raises its error."""
        future: Future[T] = Future()

        def answer(result: T | BaseException) -> None:
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.submit_with(request, answer)
        return future

    def submit_with(self, request: R, answer: Callable[[T | BaseException], None]) -> None:
        """Queue ``request``; ``answer`` is called with its result or its error, from the
        committing thread (an event loop's caller hands it back to its loop: one wake-up
        per group, not per request, is the caller's to arrange)."""
        if self._closed:
            answer(NextbestError("the engine is closed"))
            return
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="nextbest-group-commit", daemon=True
                    )
                    self._thread.start()
        self._queue.put((request, answer))

    def close(self) -> None:
        """Commit what is queued, then stop the thread; later submits fail."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def _group(
        self, first: tuple[R, Callable[[T | BaseException], None]]
    ) -> tuple[list[tuple[R, Callable[[T | BaseException], None]]], bool]:
        """``first`` and whatever else is queued, up to ``max_events``; True if a stop came."""
        group, events = [first], self._size(first[0])
        while events < self._max_events:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return group, False
            if item is None:
                return group, True
            group.append(item)
            events += self._size(item[0])
        return group, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            group, stop = self._group(first)
            try:
                results: Sequence[T | BaseException] = self._accept_many([r for r, _ in group])
            except BaseException as exc:  # a bug must reach every caller, not kill the thread
                results = [exc] * len(group)
            for (_, answer), result in zip(group, results, strict=True):
                answer(result)
