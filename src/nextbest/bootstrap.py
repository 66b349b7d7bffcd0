"""The composition root: the one place that chooses backends and wires an engine.

``build_engine(settings)`` loads the catalog, opens the stores the settings name, chooses the
clock (``make_clock``: the wall clock, or event time) and builds the engine over them;
``load_catalog`` (the catalog-files adapter) is what faces compile a catalog folder with;
``open_stores(data)`` is the backend choice alone (``:memory:`` for the in-memory twins, a
``postgresql://`` URL for a PostgreSQL server, otherwise an embedded SQLite file). The other
scale-out backends (Redis, NATS JetStream) join here, and nowhere else.

The scaled roles (``serve --role api|fold``, docs/scale-out.md) are wired here too:
``build_api_worker`` (a stateless ``ApiWorker``: the decision log and quarantine on
PostgreSQL, point reads of the live profiles on Redis, the bus) and ``build_fold_worker`` (an
``Engine`` on PostgreSQL and Redis fed by the bus through a ``FoldWorker``). Both need all
three: ``NEXTBEST_DATA=postgresql://...``, ``NEXTBEST_PROFILES=redis://...``,
``NEXTBEST_BUS=nats://...``.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import uuid
from collections.abc import Callable
from typing import Protocol

from nextbest.api_worker import ApiWorker
from nextbest.bus.port import EventBus
from nextbest.callback_sweeper import CallbackSweeper
from nextbest.callbacks import CallbackDesk
from nextbest.catalog.compiled import Catalog
from nextbest.channels.port import Gate
from nextbest.channels.retry import RetryPolicy
from nextbest.channels.sender import OutboxSender
from nextbest.clock import Clock, ClockKind, EventClock, SystemClock
from nextbest.engine import Engine
from nextbest.errors import ConfigError
from nextbest.fold_worker import FoldWorker
from nextbest.partitioned_fold import PartitionedFold
from nextbest.partitioned_rebuild import RebuildReport
from nextbest.scaled_erasure import Tombstones, tombstone_key
from nextbest.settings import Settings
from nextbest.store.catalog_files import load_catalog
from nextbest.store.memory import memory_stores
from nextbest.store.port import ErasureLedger, Lease, Outbox, StateReads, Stores, with_state
from nextbest.store.sqlite import sqlite_stores

__all__ = [
    "BUS_SCHEMES",
    "EVENT_TIME_ID_PREFIX",
    "MEMORY",
    "POSTGRES_SCHEMES",
    "REDIS_SCHEMES",
    "build_api_worker",
    "build_background",
    "build_engine",
    "build_fold_worker",
    "build_outbox_sender",
    "load_catalog",
    "make_clock",
    "open_bus",
    "open_stores",
    "sequential_ids",
]

#: the ``data`` setting that keeps everything in memory (tests, simulations)
MEMORY = ":memory:"
#: how a ``data`` setting naming a PostgreSQL server begins
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: the URL schemes of a Redis server for the derived state (``NEXTBEST_PROFILES``)
REDIS_SCHEMES = ("redis://", "rediss://")
#: the URL schemes of a NATS server with JetStream for the bus (``NEXTBEST_BUS``)
BUS_SCHEMES = ("nats://", "tls://")


def _new_id() -> str:
    return uuid.uuid4().hex


def make_clock(settings: Settings) -> Clock:
    """The clock the settings name: the wall clock, or event time (a watermark)."""
    return EventClock() if settings.clock == ClockKind.EVENT else SystemClock()


#: how an engine on event time names its decisions: ``nextbest-00000001`` ...
EVENT_TIME_ID_PREFIX = "nextbest-"


def sequential_ids(after: int, prefix: str = EVENT_TIME_ID_PREFIX) -> Callable[[], str]:
    """Decision ids counted from ``after + 1``: ``{prefix}00000001`` ...

    On event time a run is reproducible only if its decision ids are (each seeds its
    decision's exploration), so an event-time engine counts them, from the decision log's
    position: a restart on the same store never hands out a logged id again (only the ids
    of decisions lost unflushed in a crash)."""
    count = itertools.count(after + 1)
    return lambda: f"{prefix}{next(count):08d}"


def open_stores(data: str, synchronous: str = "FULL", profiles: str = "") -> Stores:
    """The stores ``data`` names: ``:memory:``, a PostgreSQL URL (``postgresql://user@host:
    port/dbname``; StoreUnavailable naming host and port when it cannot be reached), or an
    embedded SQLite file's path. ``profiles``: a ``redis://`` URL keeps the derived state
    (profiles, identity links, models) in Redis instead, the logs staying in ``data``."""
    stores = _open_logs(data, synchronous)
    if not profiles:
        return stores
    if not profiles.startswith(REDIS_SCHEMES):
        stores.close()
        raise ConfigError("NEXTBEST_PROFILES is a redis:// or rediss:// URL")
    try:
        # imported here, like psycopg: only this backend needs it
        from nextbest.store.redis import RedisState

        state = RedisState(profiles)
    except BaseException:
        stores.close()
        raise
    return with_state(stores, state, state.close)


def _open_logs(data: str, synchronous: str) -> Stores:
    if data == MEMORY:
        return memory_stores()
    if data.startswith(POSTGRES_SCHEMES):
        # imported here: psycopg costs ~0.1 s to import, and only this backend needs it
        from nextbest.store.postgres import postgres_stores

        return postgres_stores(data)
    return sqlite_stores(data, synchronous=synchronous)


def build_engine(
    settings: Settings,
    clock: Clock | None = None,
    *,
    catalog: Catalog | None = None,
    new_id: Callable[[], str] | None = None,
    freeze_gc: bool = True,
    id_prefix: str = EVENT_TIME_ID_PREFIX,
) -> Engine:
    """An engine on the settings' catalog (or ``catalog``, already compiled), stores and
    clock (or ``clock``).

    ``new_id``: decision ids; default random (uuid4) on the wall clock, counted
    (``sequential_ids``, named ``id_prefix``...) on event time. ``freeze_gc`` (a
    long-running server): what a restore loads is moved out of the cyclic collector's reach;
    a simulation or a short command passes False."""
    compiled = catalog if catalog is not None else load_catalog(settings.catalog)
    stores = open_stores(
        settings.data, synchronous=settings.sqlite_synchronous, profiles=settings.profiles
    )
    try:
        if clock is None:
            clock = make_clock(settings)
        if new_id is None:
            if isinstance(clock, EventClock):
                after = stores.decisions.decision_log_position() or 0
                new_id = sequential_ids(after, id_prefix)
            else:
                new_id = _new_id
        return Engine(
            compiled,
            stores,
            clock,
            decision_flush_every=settings.decision_flush_every,
            snapshot_every=settings.snapshot_every,
            freeze_gc=freeze_gc,
            new_id=new_id,
        )
    except BaseException:
        stores.close()
        raise


def open_bus(settings: Settings) -> EventBus:
    """The bus ``NEXTBEST_BUS`` names (``nats://host:port/STREAM``)."""
    if not settings.bus.startswith(BUS_SCHEMES):
        raise ConfigError("NEXTBEST_BUS is a nats:// URL (nats://host:port/STREAM)")
    # imported here, like psycopg: only the scaled roles need it
    from nextbest.bus.nats import NatsBus

    return NatsBus(settings.bus, partitions=settings.bus_partitions)


def _require_scaled(settings: Settings, role: str) -> None:
    missing = [
        name
        for name, value, schemes in (
            ("NEXTBEST_DATA=postgresql://...", settings.data, POSTGRES_SCHEMES),
            ("NEXTBEST_PROFILES=redis://...", settings.profiles, REDIS_SCHEMES),
            ("NEXTBEST_BUS=nats://...", settings.bus, BUS_SCHEMES),
        )
        if not value.startswith(schemes)
    ]
    if missing:
        raise ConfigError(f"serve --role {role} needs " + ", ".join(missing))
    if settings.clock == ClockKind.EVENT:
        raise ConfigError(f"serve --role {role} runs on the wall clock (event time is embedded)")


def build_api_worker(settings: Settings, *, catalog: Catalog | None = None) -> ApiWorker:
    """A stateless API worker (``serve --role api``)."""
    _require_scaled(settings, "api")
    compiled = catalog if catalog is not None else load_catalog(settings.catalog)
    from nextbest.store.redis import RedisState

    stores = _open_logs(settings.data, settings.sqlite_synchronous)
    try:
        state = RedisState(settings.profiles)
    except BaseException:
        stores.close()
        raise
    try:
        bus = open_bus(settings)
    except BaseException:
        state.close()
        stores.close()
        raise
    try:
        lease = _sweep_lease(stores)
    except BaseException:
        bus.close()
        state.close()
        stores.close()
        raise
    return ApiWorker(
        compiled,
        stores,
        state,
        state,
        bus,
        SystemClock(),
        decision_flush_every=settings.decision_flush_every,
        close_reads=state.close,
        sweep_lease=lease,
        tombstone_key=tombstone_key(settings.token_secret),
    )


#: how long the callback sweeper's lease lasts without renewal: a dead holder's timers wait
#: at most this long for another worker to take them over
SWEEP_LEASE_SECONDS = 10.0


def _sweep_lease(stores: Stores) -> Lease | None:
    """The lease the API workers' callback sweepers share on PostgreSQL (one sweeps at a
    time), held under this process's own name."""
    from nextbest.store.callbacks_postgres import PostgresCallbacks

    if not isinstance(stores.callbacks, PostgresCallbacks):
        return None
    from nextbest.store.lease_postgres import PostgresLease

    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return PostgresLease(stores.callbacks.db, "callback-sweeper", holder, SWEEP_LEASE_SECONDS)


def build_fold_worker(settings: Settings, *, catalog: Catalog | None = None) -> FoldWorker:
    """The fold worker (``serve --role fold``): an engine on PostgreSQL and Redis, restored
    (the saved state, then the event log's tail), fed by the bus from the saved position."""
    _require_scaled(settings, "fold")
    engine = build_engine(settings, catalog=catalog)
    try:
        bus = open_bus(settings)
    except BaseException:
        engine.release()
        raise
    reads = engine.state_store
    try:
        # the event log is written behind the live state, on a connection of its own (a
        # commit never holds up the fold's reads)
        from nextbest.store.postgres import PostgresDatabase, PostgresEventLog

        db = PostgresDatabase(settings.data)
    except BaseException:
        bus.close()
        engine.release()
        raise
    try:
        ledger = reads if isinstance(reads, ErasureLedger) else None
        key = tombstone_key(settings.token_secret)
        return FoldWorker(
            engine,
            bus,
            reads=reads if isinstance(reads, StateReads) else None,
            writer=PostgresEventLog(db),
            close_writer=db.close,
            erasures=ledger,
            tombstones=Tombstones(key, ledger.tombstones() if ledger is not None else None),
        )
    except BaseException:
        db.close()
        bus.close()
        engine.release()
        raise


def build_outbox_sender(
    settings: Settings,
    outbox: Outbox,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    policy: RetryPolicy | None = None,
    gate: Gate | None = None,
    batch: int = 16,
    poll_seconds: float = 1.0,
    lease_seconds: float | None = None,
) -> OutboxSender:
    """A sender (not started: ``start()``, ``stop()``) delivering ``outbox``'s messages to
    the webhooks the settings name (``NEXTBEST_WEBHOOK_<NAME>_URL`` ...), on the wall clock
    (or ``clock``), with jitter from ``rng`` (default: seeded by the OS). Its lease (default)
    outlasts a batch of attempts that all time out, with a minute to spare; a shorter
    ``lease_seconds`` brings a dead sender's messages back sooner, and must still outlast a
    batch of timeouts (ConfigError)."""
    # imported here, like psycopg: httpx costs ~0.1 s, and only a sender needs it
    from nextbest.channels.webhook import WebhookTransport

    timeouts = {w.name: w.timeout for w in settings.webhooks}
    return OutboxSender(
        outbox,
        {w.name: WebhookTransport(w) for w in settings.webhooks},
        clock=clock or SystemClock(),
        rng=rng or random.Random(),
        policy=policy,
        gate=gate,
        batch=batch,
        lease_seconds=(
            batch * max(timeouts.values(), default=0.0) + 60.0
            if lease_seconds is None
            else lease_seconds
        ),
        poll_seconds=poll_seconds,
        timeouts=timeouts,
    )


class Served(Protocol):
    """What the background loops serve: the embedded engine or a scaled API worker."""

    @property
    def outbox(self) -> Outbox: ...

    @property
    def callbacks(self) -> CallbackDesk: ...


def build_background(
    settings: Settings,
    engine: Served,
    *,
    sender: OutboxSender | None = None,
    lease: Lease | None = None,
) -> list[OutboxSender | CallbackSweeper]:
    """The loops ``serve`` runs beside its requests (not started: the app starts and stops
    them): the outbox sender when webhooks are configured (``sender``: one built already),
    woken by every click-to-call request the callbacks enqueue, and the callback sweeper
    every ``callback_sweep_seconds`` (none at 0: whoever drives time sweeps), sweeping only
    while it holds ``lease`` if given (the scaled API workers: one sweeps at a time)."""
    loops: list[OutboxSender | CallbackSweeper] = []
    if sender is None and settings.webhooks:
        sender = build_outbox_sender(settings, engine.outbox)
    if sender is not None:
        engine.callbacks.on_outbox = sender.wake
        loops.append(sender)
    if settings.callback_sweep_seconds > 0:
        loops.append(
            CallbackSweeper(engine.callbacks, settings.callback_sweep_seconds, lease=lease)
        )
    return loops


def build_partitioned_fold(
    settings: Settings, *, catalog: Catalog | None = None
) -> PartitionedFold:
    """A fold worker of the partitions ``NEXTBEST_FOLD_PARTITIONS`` names (``serve --role
    fold --partitions 0-7``), one of several sharing the bus: its profiles read from Redis
    on demand, the event log on PostgreSQL (a connection for the fold's reads, one for the
    writer). The worker owning partition 0 also runs the deployment's model writer."""
    _require_scaled(settings, "fold")
    compiled = catalog if catalog is not None else load_catalog(settings.catalog)
    from nextbest.model_writer import ModelWriter
    from nextbest.partitioned_fold import (
        Erasures,
        PartitionedFold,
        parse_partitions,
        worker_name,
    )
    from nextbest.store.postgres import PostgresDatabase, PostgresEventLog
    from nextbest.store.redis import RedisState

    partitions = parse_partitions(settings.fold_partitions, settings.bus_partitions)
    owner = settings.fold_name or worker_name()
    opened: list[Callable[[], None]] = []  # closed in reverse if the start fails
    try:
        stores = _open_logs(settings.data, settings.sqlite_synchronous)
        opened.append(stores.close)
        state = RedisState(settings.profiles)
        opened.append(state.close)
        models = None
        if 0 in partitions:
            model_state = RedisState(settings.profiles)
            opened.append(model_state.close)
        bus = open_bus(settings)
        opened.append(bus.close)
        db = PostgresDatabase(settings.data)
        opened.append(db.close)
        if 0 in partitions:
            models = ModelWriter(
                compiled,
                bus,
                model_state,
                stores.decisions,
                owner=owner,
                lease_seconds=settings.fold_lease_seconds,
            )
        stays_open = opened[: opened.index(bus.close)]  # the worker closes the bus and db

        def close() -> None:
            for done in reversed(stays_open):
                done()

        return PartitionedFold(
            compiled,
            bus,
            state,
            stores.events,
            PostgresEventLog(db),
            partitions,
            cache_size=settings.fold_cache,
            close_writer=db.close,
            close=close,
            models=models,
            owner=owner,
            lease_seconds=settings.fold_lease_seconds,
            outbox=stores.outbox,
            erasures=Erasures(
                Tombstones(tombstone_key(settings.token_secret), state.tombstones()),
                stores,
                models=True,
            ),
        )
    except BaseException:
        for done in reversed(opened):
            done()
        raise


def rebuild_partitioned(settings: Settings) -> RebuildReport:
    """``nextbest rebuild-partitioned``: several fold workers' live state in
    ``NEXTBEST_PROFILES`` rebuilt from the event log in ``NEXTBEST_DATA`` (PostgreSQL), the
    bus's partitions from ``NEXTBEST_BUS`` (every fold worker stopped)."""
    _require_scaled(settings, "fold")
    compiled = load_catalog(settings.catalog)
    from nextbest.partitioned_rebuild import rebuild_partitioned_state
    from nextbest.store.memory import MemoryStateStore
    from nextbest.store.redis import RedisState

    logs = _open_logs(settings.data, settings.sqlite_synchronous)
    try:
        state = RedisState(settings.profiles)
        try:
            bus = open_bus(settings)
            try:
                return rebuild_partitioned_state(compiled, logs, state, bus, MemoryStateStore())
            finally:
                bus.close()
        finally:
            state.close()
    finally:
        logs.close()
