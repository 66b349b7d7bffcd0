"""An API worker's metrics (``serve --role api``): everything ``api.metrics`` shows, and what
only a stateless worker has:

    nextbest_read_your_writes_waits_total{outcome}   decisions that waited for the fold to
                                                     reach their ids' write marks:
                                                     ``caught_up`` or ``timed_out`` (decided
                                                     on what was folded)
    nextbest_read_your_writes_wait_seconds           how long those decisions waited
    nextbest_write_mark_failures_total               groups of events whose write marks
                                                     could not be saved (stored all the same)
    nextbest_model_age_seconds                       since the model copy in use was saved
                                                     by the fold worker (the largest over
                                                     the workers, with several processes)
    nextbest_model_staleness_seconds                 per copy loaded: from the oldest
                                                     learning in it being folded to this
                                                     worker deciding with it
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from nextbest.api.metrics import Metrics
from nextbest.api_worker import ApiWorker
from nextbest.service import Service

__all__ = ["ApiWorkerMetrics"]

_WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_STALENESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class ApiWorkerMetrics(Metrics):
    """``api.metrics.Metrics`` plus the worker's own; hooked to ``worker`` at once."""

    def __init__(
        self, worker: ApiWorker, multiproc_dir: str | None = None, *, from_env: bool = True
    ) -> None:
        super().__init__(multiproc_dir, from_env=from_env)
        own = None if self.multiprocess else self.registry
        self.waits = Counter(
            "nextbest_read_your_writes_waits",
            "Decisions that waited for their ids' write marks: caught_up, timed_out",
            ("outcome",),
            registry=own,
        )
        self.wait_seconds = Histogram(
            "nextbest_read_your_writes_wait_seconds",
            "How long a decision waited for the fold to reach its ids' write marks",
            buckets=_WAIT_BUCKETS,
            registry=own,
        )
        self.mark_failures = Counter(
            "nextbest_write_mark_failures",
            "Groups of published events whose write marks could not be saved",
            registry=own,
        )
        self.model_age = Gauge(
            "nextbest_model_age_seconds",
            "Seconds since the model copy in use was saved by the fold worker",
            registry=own,
            multiprocess_mode="livemax",
        )
        self.model_staleness = Histogram(
            "nextbest_model_staleness_seconds",
            "Per model copy loaded: from its oldest learning being folded to deciding with it",
            buckets=_STALENESS_BUCKETS,
            registry=own,
        )
        self._caught_up = self.waits.labels("caught_up")
        self._timed_out = self.waits.labels("timed_out")
        self._worker = worker
        self._mark_failures_seen = worker.mark_failures
        worker.on_read_wait = self.read_waited
        worker.on_model_loaded = self.model_loaded

    def read_waited(self, seconds: float, timed_out: bool) -> None:
        """The worker's hook (``ApiWorker.on_read_wait``)."""
        (self._timed_out if timed_out else self._caught_up).inc()
        self.wait_seconds.observe(seconds)

    def model_loaded(self, staleness: float | None) -> None:
        """The worker's hook (``ApiWorker.on_model_loaded``)."""
        if staleness is not None:
            self.model_staleness.observe(staleness)

    def sample(self, engine: Service) -> None:
        super().sample(engine)
        worker = self._worker
        age = worker.model_age()
        if age is not None:
            self.model_age.set(age)
        failures = worker.mark_failures
        if failures > self._mark_failures_seen:
            self.mark_failures.inc(failures - self._mark_failures_seen)
            self._mark_failures_seen = failures
