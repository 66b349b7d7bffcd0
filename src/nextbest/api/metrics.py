"""What ``GET /metrics`` shows, in Prometheus' text format (the ``prometheus-client`` library).

Metrics (every label value comes from a bounded set: route templates, never raw paths, so no
customer id is ever a label; placements of the catalog; error codes of the error tree):

    nextbest_http_requests_total{route, method, status}        requests by route template
                                                                 and status class (2xx ...)
    nextbest_http_request_duration_seconds{route, method, status}  their latency (histogram)
    nextbest_decide_duration_seconds{placement}                 the engine's decide (lock
                                                                 wait, profile read, pipeline)
                                                                 without HTTP, per placement
    nextbest_events_total{outcome}                               accepted, duplicate,
                                                                 quarantined messages
    nextbest_events_quarantined_total{code}                     quarantined, by rule
    nextbest_ingest_refused_total{code}                         ingestion requests refused
                                                                 whole (nothing stored), by
                                                                 error code
    nextbest_feedback_total{outcome}                             feedback joined to its
                                                                 decision: ``trusted`` (given
                                                                 to the learner) or
                                                                 ``untrusted`` (``learn.trust``)
    nextbest_snapshot_duration_seconds                          state saves (histogram)
    nextbest_snapshot_failures_total                            state saves that failed
    nextbest_learner_waiting_views                              views waiting for a click
    nextbest_learner_pending_conversions                        clicks waiting for their KPI
                                                                 event
    nextbest_learner_examples                                   examples the models learned
                                                                 from (as saved with the state)
    nextbest_profiles                                           live profiles in memory

**Several worker processes.** With ``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory,
writable by every worker, emptied before they start, set before the process starts: the
library reads it at import), each process writes its values to files there and a scrape of
any worker collects them all (``prometheus_client.multiprocess.MultiProcessCollector``);
gauges are summed over the live processes (``livesum``). Without it, the registry is the
process's own, with the process' CPU and memory (``process_*``) besides.

What the scaled topology (issue 17: ``serve --role api|fold``) will add, where it has a
meaning: the fold lag (stream position published against folded), JetStream consumer lag
(pending messages per durable consumer) and PostgreSQL batch latency. In one process an
event is folded in the same call that appends it, so a fold lag would always read zero and
is not shown.
"""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import prometheus_client.metrics
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.utils import INF, floatToGoString

from nextbest.ingestion import IngestResult
from nextbest.service import Service

__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "Metrics"]

#: the environment variable that turns on the multi-process registry (the library's own)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: the classic text format ``generate_latest`` writes (what every Prometheus reads)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: seconds: a decision is ~0.1-1 ms, an ingest request a few ms, a batch tens of ms
_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
_SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
_STATUS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


_REQUESTS = ("nextbest_http_requests", "HTTP requests by route template and status class")
_REQUEST_SECONDS = (
    "nextbest_http_request_duration_seconds",
    "HTTP request latency, from the first byte read to the last byte sent",
)
_REQUEST_LABELS = ("route", "method", "status")
#: a request's labels: route template, method (or ``other``), status class
_Key = tuple[str, str, str]


class _RequestSeries:
    """``nextbest_http_requests_total`` and ``nextbest_http_request_duration_seconds`` of a
    per-process registry, counted without a lock and read at scrape time (a collector of the
    registry): the exposition is the one ``prometheus_client``'s Counter and Histogram write
    for the same requests, at a fifth of the CPU a request (no mutex, no method call per
    bucket and value).

    Each thread counts in rows of its own (``threading.local``): a row is only ever written
    by one thread, so no update is lost; a scrape adds every thread's rows up. A row:
    ``[requests, sum of seconds, count of each bucket]`` (not cumulative). The lock guards
    only what a scrape copies: the threads' tables and a new row's first sight."""

    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self._bounds = (*buckets, INF)
        self._les = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tables: list[dict[_Key, list[Any]]] = []
        #: key -> (order of its first request, its time): the series' order and ``_created``
        self._first: dict[_Key, tuple[int, float]] = {}
        self._order = itertools.count()

    def record(self, key: _Key, seconds: float) -> None:
        try:
            table: dict[_Key, list[Any]] = self._local.table
        except AttributeError:
            table = self._new_table()
        row = table.get(key)
        if row is None:
            row = self._new_row(table, key)
        row[0] += 1
        row[1] += seconds
        if seconds <= INF:  # not NaN, which no bucket counts (as ``Histogram.observe``)
            row[2 + bisect.bisect_left(self._bounds, seconds)] += 1

    def _new_table(self) -> dict[_Key, list[Any]]:
        table: dict[_Key, list[Any]] = {}
        with self._lock:
            self._tables.append(table)
        self._local.table = table
        return table

    def _new_row(self, table: dict[_Key, list[Any]], key: _Key) -> list[Any]:
        row: list[Any] = [0, 0.0, *([0] * len(self._bounds))]
        with self._lock:
            table[key] = row
            if key not in self._first:
                self._first[key] = (next(self._order), time.time())
        return row

    def describe(self) -> list[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(*_REQUESTS, labels=_REQUEST_LABELS),
            HistogramMetricFamily(*_REQUEST_SECONDS, labels=_REQUEST_LABELS),
        )

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            tables = [dict(t) for t in self._tables]
            first = dict(self._first)
        merged: dict[_Key, list[Any]] = {}
        for table in tables:
            for labels, row in table.items():
                total = merged.get(labels)
                if total is None:
                    merged[labels] = list(row)
                else:
                    merged[labels] = [a + b for a, b in zip(total, row, strict=True)]
        counter, histogram = self._families()
        with_created = getattr(prometheus_client.metrics, "_use_created", True)
        name = _REQUEST_SECONDS[0]
        for labels in sorted(merged, key=lambda k: first[k][0]):
            row, when = merged[labels], first[labels][1]
            counter.add_metric(labels, float(row[0]), created=when if with_created else None)
            cumulative = list(itertools.accumulate(row[2:], initial=0.0))[1:]
            histogram.add_metric(labels, list(zip(self._les, cumulative, strict=True)), row[1])
            if with_created:
                histogram.add_sample(
                    f"{name}_created", dict(zip(_REQUEST_LABELS, labels, strict=True)), when
                )
        yield counter
        yield histogram


class _RequestChildren:
    """The same two metrics as ``prometheus_client``'s Counter and Histogram, for the
    multi-process registry (each value written to this process's files as it changes)."""

    def __init__(self) -> None:
        self.requests = Counter(*_REQUESTS, _REQUEST_LABELS, registry=None)
        self.seconds = Histogram(
            *_REQUEST_SECONDS, _REQUEST_LABELS, buckets=_BUCKETS, registry=None
        )
        #: key -> its counter and histogram: ``labels`` once
        self._children: dict[_Key, tuple[Any, Any]] = {}

    def record(self, key: _Key, seconds: float) -> None:
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(*key),
                self.seconds.labels(*key),
            )
        children[0].inc()
        children[1].observe(seconds)


_EVENTS = ("nextbest_events", "Messages received: accepted, duplicate, quarantined")
_OUTCOMES = ("accepted", "duplicate", "quarantined")


class _OutcomeSeries:
    """``nextbest_events_total{outcome}`` of a per-process registry, counted without a lock
    (each thread adds to a row of its own, as ``_RequestSeries``) and read at scrape time:
    the exposition ``prometheus_client``'s Counter writes, without its mutex a request."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._rows: list[list[int]] = []
        self._created = time.time()

    def add(self, accepted: int, duplicates: int, quarantined: int) -> None:
        try:
            row: list[int] = self._local.row
        except AttributeError:
            row = self._local.row = [0, 0, 0]
            with self._lock:
                self._rows.append(row)
        row[0] += accepted
        row[1] += duplicates
        row[2] += quarantined

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(*_EVENTS, labels=("outcome",))]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            rows = [list(r) for r in self._rows]
        family = CounterMetricFamily(*_EVENTS, labels=("outcome",))
        with_created = getattr(prometheus_client.metrics, "_use_created", True)
        for i, outcome in enumerate(_OUTCOMES):
            family.add_metric(
                [outcome],
                float(sum(r[i] for r in rows)),
                created=self._created if with_created else None,
            )
        yield family


class _OutcomeChildren:
    """The same counter for the multi-process registry (``prometheus_client``'s, each value
    written to this process's files as it changes)."""

    def __init__(self) -> None:
        counter = Counter(*_EVENTS, ("outcome",), registry=None)
        self._children = [counter.labels(o) for o in _OUTCOMES]

    def add(self, accepted: int, duplicates: int, quarantined: int) -> None:
        for child, n in zip(self._children, (accepted, duplicates, quarantined), strict=True):
            if n:
                child.inc(n)


class Metrics:
    """One app's metrics. ``multiproc_dir``: the directory of ``PROMETHEUS_MULTIPROC_DIR``
    (default: read from the environment), or None for a per-process registry."""

    def __init__(self, multiproc_dir: str | None = None, *, from_env: bool = True) -> None:
        if multiproc_dir is None and from_env:
            multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        self.multiprocess = multiproc_dir is not None
        if self.multiprocess:
            # the values go to files in the directory; a scrape reads every process's files
            own: CollectorRegistry | None = None
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        else:
            own = self.registry = CollectorRegistry()
            ProcessCollector(registry=own)
        #: the requests' counter and latency histogram (``request``)
        self._requests: _RequestSeries | _RequestChildren
        if own is None:
            self._requests = _RequestChildren()
        else:
            self._requests = _RequestSeries()
            own.register(self._requests)
        self.decide_seconds = Histogram(
            "nextbest_decide_duration_seconds",
            "The engine's decide (lock wait, profile read, pipeline), without HTTP",
            ("placement",),
            buckets=_BUCKETS,
            registry=own,
        )
        #: messages received by outcome (``ingested``)
        self._outcomes: _OutcomeSeries | _OutcomeChildren
        if own is None:
            self._outcomes = _OutcomeChildren()
        else:
            self._outcomes = _OutcomeSeries()
            own.register(self._outcomes)
        self.quarantined = Counter(
            "nextbest_events_quarantined", "Messages quarantined, by rule", ("code",), registry=own
        )
        self.refused = Counter(
            "nextbest_ingest_refused",
            "Ingestion requests refused whole (nothing stored), by error code",
            ("code",),
            registry=own,
        )
        self.feedback = Counter(
            "nextbest_feedback",
            "Feedback joined to its decision: trusted (given to the learner) or untrusted",
            ("outcome",),
            registry=own,
        )
        self.snapshot_seconds = Histogram(
            "nextbest_snapshot_duration_seconds",
            "State saves (snapshots)",
            buckets=_SNAPSHOT_BUCKETS,
            registry=own,
        )
        self.snapshot_failures = Counter(
            "nextbest_snapshot_failures", "State saves that failed", registry=own
        )

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, registry=own, multiprocess_mode="livesum")

        self.waiting_views = gauge(
            "nextbest_learner_waiting_views", "Views the learner waits on for a click"
        )
        self.pending_conversions = gauge(
            "nextbest_learner_pending_conversions", "Clicks waiting for their offer's KPI event"
        )
        self.learned = gauge(
            "nextbest_learner_examples", "Examples the models learned from (saved with the state)"
        )
        self.profiles = gauge("nextbest_profiles", "Live profiles in memory")
        self._trusted = self.feedback.labels("trusted")
        self._untrusted = self.feedback.labels("untrusted")
        self._placements: dict[str, Any] = {}

    # ---------------------------------------------------------------- the hot paths
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` a route template, or ``unmatched`` (no route was
        reached: an unknown path, or a browser request CORS refused before routing)."""
        verb = method if method in _METHODS else "other"
        self._requests.record((route, verb, _STATUS.get(status // 100, "other")), seconds)

    def decided(self, placement: str, seconds: float) -> None:
        """A decision for ``placement`` (a catalog's: the engine refused any other)."""
        child = self._placements.get(placement)
        if child is None:
            child = self._placements[placement] = self.decide_seconds.labels(placement)
        child.observe(seconds)

    def ingested(self, result: IngestResult) -> None:
        self._outcomes.add(result.accepted, result.duplicates, len(result.rejected))
        for r in result.rejected:
            self.quarantined.labels(r.code).inc()

    def feedback_judged(self, trusted: bool) -> None:
        """The engine's hook (``Engine.on_feedback``)."""
        (self._trusted if trusted else self._untrusted).inc()

    # ---------------------------------------------------------------- scrapes
    def sample(self, engine: Service) -> None:
        """Read the engine's gauges (every background tick and every scrape)."""
        self.waiting_views.set(engine.pending_views)
        self.pending_conversions.set(engine.pending_conversions)
        self.learned.set(engine.learner.learned)
        self.profiles.set(engine.profile_count)

    def exposition(self, engine: Service) -> bytes:
        """The text a scrape gets: this process's gauges refreshed, then every metric (of
        every worker, with ``PROMETHEUS_MULTIPROC_DIR``)."""
        self.sample(engine)
        return generate_latest(self.registry)
