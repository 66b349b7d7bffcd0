"""Shared fixtures: the example catalog, a settable clock, engines on real stores, and a real
uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn

from nextbest.api.app import Background, create_app
from nextbest.api.http_protocol import serving_protocol
from nextbest.bootstrap import build_engine
from nextbest.catalog.compiled import Catalog
from nextbest.clock import Clock, FixedClock
from nextbest.engine import Engine
from nextbest.settings import Settings
from nextbest.store import memory_stores, sqlite_stores
from nextbest.store.catalog_files import load_catalog
from tests.support import (
    ADMIN_KEY,
    BROWSER_KEY,
    EXAMPLE_CATALOG,
    ROOT,
    SERVER_KEY,
    T0,
    TOKEN_SECRET,
    WRITE_KEY,
    bayes_catalog,
    counter_ids,
)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture(scope="session")
def bayes_app(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The example bank with app_home on the Beta-Bernoulli model and Thompson sampling."""
    return load_catalog(bayes_catalog(tmp_path_factory.mktemp("bayes_app")))


@pytest.fixture(scope="module")
def catalog_gen() -> Iterator[ModuleType]:
    """``bench/catalog_gen.py``: the generated 150-rule benchmark catalog's writer."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        yield importlib.import_module("catalog_gen")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_engine(
    catalog: Catalog, clock: FixedClock, tmp_path: Path
) -> Iterator[Callable[..., Engine]]:
    """Build engines on the in-memory twin or a real SQLite file; closes them after."""
    made: list[Engine] = []

    def make(kind: str = "sqlite", path: Path | None = None, cat: Catalog | None = None) -> Engine:
        store = (
            memory_stores()
            if kind == "memory"
            else sqlite_stores(path or tmp_path / "nextbest.sqlite")
        )
        engine = Engine(cat or catalog, store, clock, new_id=counter_ids())
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def engine(make_engine: Callable[..., Engine], store_kind: str) -> Engine:
    return make_engine(store_kind)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "catalog": str(EXAMPLE_CATALOG),
        "data": str(tmp_path / "server.sqlite"),
        "write_keys": frozenset({WRITE_KEY}),
        "browser_keys": frozenset({BROWSER_KEY}),
        "server_keys": frozenset({SERVER_KEY}),
        "admin_keys": frozenset({ADMIN_KEY}),
        "token_secret": TOKEN_SECRET,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def uvicorn_thread(app: Any, **config: Any) -> Iterator[int]:
    """``app`` on a real uvicorn server, on a free loopback port in a thread, with the HTTP
    protocol ``nextbest serve`` runs (``config``: more of ``uvicorn.Config``'s settings, an
    ``http`` of its own among them); yields the port once it listens and stops the server on
    the way out."""
    port = free_port()
    config.setdefault("http", serving_protocol(app))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class LiveServer:
    url: str
    engine: Engine
    settings: Settings


#: servings per store: a restart on the same store gets a new prefix and never reuses an id
_SERVINGS: dict[str, itertools.count[int]] = {}


@contextlib.contextmanager
def serving(
    settings: Settings,
    new_id: Callable[[], str] | None = None,
    *,
    counted_ids: bool = True,
    clock: Clock | None = None,
    background: Callable[[Engine], Sequence[Background]] | None = None,
    http: Callable[[Any], Any] | None = None,
) -> Iterator[LiveServer]:
    """A real uvicorn server on a free loopback port, in a thread, on ``settings``
    (``new_id``: the engine's decision ids, which seed its exploration; counted by default, so
    that every run explores alike; ``counted_ids=False``: the ids ``nextbest serve`` would
    use, as the composition root chooses them). ``clock``: the engine's (default: the
    settings'); ``background``: the loops to run beside it, given the engine
    (``bootstrap.build_background`` runs what ``nextbest serve`` runs); ``http``: the
    uvicorn HTTP protocol for the app (default: ``serving_protocol``, as ``nextbest serve``)."""
    if new_id is None and counted_ids:
        serving_no = next(_SERVINGS.setdefault(settings.data, itertools.count(1)))
        new_id = counter_ids(f"srv{serving_no}-")
    engine = build_engine(settings, clock, new_id=new_id)
    loops = background(engine) if background is not None else ()
    app = create_app(engine, settings, flush_interval=0.05, background=loops)
    protocol = (http or serving_protocol)(app)
    with uvicorn_thread(app, log_level="warning", lifespan="on", http=protocol) as port:
        yield LiveServer(f"http://127.0.0.1:{port}", engine, settings)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The example bank served by real uvicorn with a SQLite store in ``tmp_path``."""
    with serving(make_settings(tmp_path)) as server:
        yield server
