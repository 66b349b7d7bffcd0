"""The composition root: the one place that chooses backends and wires an engine.

``build_engine(settings)`` loads the catalog, opens the stores the settings name and builds
the engine over them; ``load_catalog`` (the catalog-files adapter) is what faces compile a
catalog folder with; ``open_stores(data)`` is the backend choice alone (``:memory:`` for the
in-memory twins, otherwise an embedded SQLite file). The scale-out backends (PostgreSQL,
Redis, NATS JetStream) join here, and nowhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from nextbest.catalog.compiled import Catalog
from nextbest.clock import Clock
from nextbest.engine import Engine
from nextbest.settings import Settings
from nextbest.store.catalog_files import load_catalog
from nextbest.store.memory import memory_stores
from nextbest.store.port import Stores
from nextbest.store.sqlite import sqlite_stores

__all__ = ["MEMORY", "build_engine", "load_catalog", "open_stores"]

#: the ``data`` setting that keeps everything in memory (tests, simulations)
MEMORY = ":memory:"


def _new_id() -> str:
    return uuid.uuid4().hex


def open_stores(data: str, synchronous: str = "FULL") -> Stores:
    """The stores ``data`` names: ``:memory:``, or an embedded SQLite file's path."""
    if data == MEMORY:
        return memory_stores()
    return sqlite_stores(data, synchronous=synchronous)


def build_engine(
    settings: Settings,
    clock: Clock | None = None,
    *,
    catalog: Catalog | None = None,
    new_id: Callable[[], str] = _new_id,
    freeze_gc: bool = True,
) -> Engine:
    """An engine on the settings' catalog (or ``catalog``, already compiled) and stores.

    ``freeze_gc`` (a long-running server): what a restore loads is moved out of the cyclic
    collector's reach; a simulation or a short command passes False."""
    compiled = catalog if catalog is not None else load_catalog(settings.catalog)
    stores = open_stores(settings.data, synchronous=settings.sqlite_synchronous)
    try:
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
