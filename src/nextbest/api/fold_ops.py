"""The fold worker's HTTP face (``serve --role fold``): it takes no request of its own, only
what operating it needs.

    GET /healthz   liveness: the process and its catalog
    GET /readyz    200 once the bus, the event log, the decision log and the quarantine answer
                   and the last fold step and event log write passed; 503 with the reason
                   otherwise
    GET /metrics   Prometheus text (metrics scope, as on the API workers), adding:

    nextbest_fold_lag_events                  the stream's last sequence minus the folded one
    nextbest_bus_consumer_pending             the durable consumer's unacknowledged messages
    nextbest_fold_events_total{outcome}       folded, duplicate (skipped by messageId); with
                                              several fold workers also forwarded (sent on to
                                              the partition of the customer it belongs to),
                                              frozen (a stitch dissolving a customer homed
                                              here, sent on), deferred (a stitch put back: a
                                              customer it touches is claimed by another);
                                              erased (dropped by a tombstone: an erased
                                              customer's, accepted before the erasure)
    nextbest_fold_redelivered_total           deliveries the bus sent again
    nextbest_fold_failures_total              fold steps that failed (retried)
    nextbest_fraud_alerts_total{outcome}      the guard's alerts enqueued in the outbox after
                                              the save that made them (sent), enqueues that
                                              failed (failed: kept in Redis, retried)
    nextbest_event_log_lag_events             the stream's last sequence minus the logged one
    nextbest_fold_batch_seconds               the fold of one batch
    nextbest_postgres_batch_seconds           the event log append of one batch (PostgreSQL,
                                              behind the state save, off the visibility path)
    nextbest_state_save_seconds               the state save (Redis) of one batch
    nextbest_fold_position                    the stream sequence folded up to
    nextbest_fold_visible_seconds             per event: from its acceptance by an API worker
                                              to the save that shows it to every API worker
                                              (freshness, on the hosts' wall clocks)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson
from prometheus_client import Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextbest.api.auth import authenticate
from nextbest.api.errors import error_response
from nextbest.api.metrics import CONTENT_TYPE, Metrics
from nextbest.errors import NextbestError
from nextbest.fold_worker import FoldStats, FoldWorker
from nextbest.guard.senders import Scope
from nextbest.partitioned_fold import PartitionedFold, PartitionStats
from nextbest.settings import Settings

__all__ = ["FoldMetrics", "create_fold_app"]

_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_VISIBLE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
READY_TIMEOUT = 2.0


class FoldMetrics:
    """The fold worker's metrics, in ``metrics``' registry (multi-process or its own)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        own = None if metrics.multiprocess else metrics.registry

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, registry=own, multiprocess_mode="livesum")

        self.lag = gauge("nextbest_fold_lag_events", "Stream last sequence minus folded")
        self.pending = gauge("nextbest_bus_consumer_pending", "Unacknowledged by the consumer")
        self.position = gauge("nextbest_fold_position", "Stream sequence folded up to")
        self.events = Counter(
            "nextbest_fold_events", "Events folded or skipped", ("outcome",), registry=own
        )
        self.redelivered = Counter(
            "nextbest_fold_redelivered", "Deliveries sent again by the bus", registry=own
        )
        self.failures = Counter("nextbest_fold_failures", "Fold steps that failed", registry=own)
        self.alerts = Counter(
            "nextbest_fraud_alerts",
            "Fraud alerts enqueued in the outbox (sent) or whose enqueue failed",
            ("outcome",),
            registry=own,
        )
        self.log_lag = gauge(
            "nextbest_event_log_lag_events", "Stream last sequence minus logged (PostgreSQL)"
        )
        self.log_seconds = Histogram(
            "nextbest_postgres_batch_seconds",
            "Event log append (PostgreSQL) of one batch, behind the state save",
            buckets=_BATCH_BUCKETS,
            registry=own,
        )
        self.fold_seconds = Histogram(
            "nextbest_fold_batch_seconds",
            "Fold of one batch (the event log's duplicate check included)",
            buckets=_BATCH_BUCKETS,
            registry=own,
        )
        self.save_seconds = Histogram(
            "nextbest_state_save_seconds",
            "State save (Redis) of one batch",
            buckets=_BATCH_BUCKETS,
            registry=own,
        )
        self.visible_seconds = Histogram(
            "nextbest_fold_visible_seconds",
            "Per event: from its acceptance by an API worker to its save (freshness)",
            buckets=_VISIBLE_BUCKETS,
            registry=own,
        )
        self._seen: dict[str, int] = {}

    def stepped(self, stats: FoldStats | PartitionStats) -> None:
        """After each fold step (the worker's ``on_step``)."""
        self.fold_seconds.observe(stats.fold_seconds)
        self.save_seconds.observe(stats.save_seconds)
        for seconds in stats.visible_after:
            self.visible_seconds.observe(seconds)

    def logged(self, stats: FoldStats | PartitionStats) -> None:
        """After each segment the event log writer committed (the worker's ``on_logged``)."""
        self.log_seconds.observe(stats.log_seconds)

    def sample(self, worker: FoldWorker | PartitionedFold) -> None:
        """Counters moved by what the worker did since the last sample; the lag read now."""
        stats = worker.stats
        for outcome, name in _OUTCOMES:
            self.events.labels(outcome).inc(self._moved(name, getattr(stats, name, 0)))
        self.redelivered.inc(self._moved("redelivered", stats.redelivered))
        self.failures.inc(self._moved("failures", stats.failures))
        self.alerts.labels("sent").inc(self._moved("alerts_sent", stats.alerts_sent))
        self.alerts.labels("failed").inc(self._moved("alert_failures", stats.alert_failures))
        self.position.set(worker.position)
        try:
            lag, pending, log_lag = worker.lags()
        except NextbestError:
            return  # the bus is away: readiness says it
        self.lag.set(lag)
        self.pending.set(pending)
        self.log_lag.set(log_lag)

    def _moved(self, name: str, now: int) -> int:
        before = self._seen.get(name, 0)
        self._seen[name] = now
        return max(0, now - before)


#: the outcome labels of ``nextbest_fold_events_total`` and the stats they count
_OUTCOMES = (
    ("folded", "events"),
    ("duplicate", "duplicates"),
    ("forwarded", "forwarded"),
    ("frozen", "stitches"),
    ("deferred", "stitches_deferred"),
    ("erased", "erased_dropped"),
)


def create_fold_app(
    worker: FoldWorker | PartitionedFold, settings: Settings, metrics: Metrics | None = None
) -> Starlette:
    """The ops app; the worker runs while the app does and is closed on shutdown."""
    fold_metrics = FoldMetrics(metrics if metrics is not None else Metrics())
    worker.on_step = fold_metrics.stepped
    worker.on_logged = fold_metrics.logged
    serving = False

    async def health(request: Request) -> Response:
        body = {"status": "ok", "role": "fold", "catalog": worker.catalog.version}
        return Response(orjson.dumps(body), media_type="application/json")

    async def ready(request: Request) -> Response:
        reason: str | None = None
        if not serving:
            reason = "not serving: starting or shutting down"
        else:
            try:
                checks = await asyncio.wait_for(
                    run_in_threadpool(worker.probe), timeout=READY_TIMEOUT
                )
            except TimeoutError:
                reason = f"the backends did not answer within {READY_TIMEOUT:g} s"
            else:
                reason = "; ".join(f"{n}: {why}" for n, why in checks if why is not None) or None
        if reason is not None:
            body = orjson.dumps({"code": "not_ready", "message": reason})
            return Response(body, 503, headers={"Retry-After": "1"}, media_type="application/json")
        body = orjson.dumps({"status": "ready", "role": "fold", "position": worker.position})
        return Response(body, media_type="application/json")

    async def scrape(request: Request) -> Response:
        try:
            caller = authenticate(request.headers.get("authorization"), None, settings, time.time())
            caller.sender.require(Scope.METRICS)
        except NextbestError as exc:
            return error_response(exc)

        def text() -> bytes:
            fold_metrics.sample(worker)
            return generate_latest(fold_metrics.metrics.registry)

        return Response(await run_in_threadpool(text), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal serving

        async def sampler() -> None:
            while True:
                await asyncio.sleep(1.0)
                await run_in_threadpool(fold_metrics.sample, worker)

        worker.start()
        task = asyncio.create_task(sampler())
        serving = True
        try:
            yield
        finally:
            serving = False
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await run_in_threadpool(worker.close)

    return Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
            Route("/metrics", scrape, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
