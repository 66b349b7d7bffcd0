"""The benchmarks' harness: machine record, timing loops, percentiles, tables, JSON results.

Benchmarks are scripts, not tests: run them with the project's venv, e.g.
``.venv/bin/python bench/decide.py``. Each writes ``bench/results/<name>.json`` through a
``Run`` (date, command line, machine, git revision, package versions, arguments, elapsed
time), times calls with ``time_calls`` (warm-up, per-call latency, GC collections and
context switches inside the loop) next to a trivial call measured in the same run
(``ratios``), and builds engines through the public API only (``engine_with_rows``: saved
rows restored as a restart does; ``serve``: the real server in this process).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as _dt
import gc
import importlib.metadata
import importlib.util
import io
import os
import platform
import pstats
import resource
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import orjson

from nextbest.catalog.compiled import Catalog
from nextbest.clock import Clock
from nextbest.engine import Engine
from nextbest.settings import Settings
from nextbest.store.port import StateRow, Stores
from nextbest.store.snapshot import learner_rows

__all__ = [
    "BENCH",
    "DAY",
    "EXAMPLE_CATALOG",
    "HTTP_PROTOCOLS",
    "QUANTILES",
    "RESULTS",
    "ROOT",
    "T0",
    "GcWatch",
    "Run",
    "add_run_args",
    "code_measured",
    "command_line",
    "cprofile_top",
    "each_backend",
    "engine_with_rows",
    "free_port",
    "fs_type",
    "hello_server",
    "in_threads",
    "kv_table",
    "latency_summary",
    "load_average",
    "log",
    "machine_info",
    "now_iso",
    "parts_summary",
    "peak_rss_bytes",
    "percentile",
    "proc_cpu_seconds",
    "ratios",
    "rss_bytes",
    "scratch_schema",
    "serve",
    "serve_settings",
    "start_child",
    "stop_child",
    "store_data",
    "table",
    "time_calls",
    "timed",
    "versions",
    "write_results",
    "wrk",
    "wrk_phase",
]

T = TypeVar("T")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
EXAMPLE_CATALOG = ROOT / "examples" / "bank"
#: 2026-09-21T10:00:00Z, a Monday (the same moment as tests/support.py T0)
T0 = 1_790_157_600.0
DAY = 86_400.0


# ------------------------------------------------------------------ machine facts
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    try:
        out = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout
        return int(out.strip())
    except (OSError, ValueError, subprocess.CalledProcessError):
        return len(os.sched_getaffinity(0))


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mem_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("+dirty-src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def versions(*packages: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_measured() -> dict[str, str]:
    """Where the imported ``nextbest`` package lives and a sha256 of its sources (others
    may edit src while a run goes on; benchmarks may also run an exported revision)."""
    import hashlib

    import nextbest

    pkg = Path(nextbest.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes() + b"\0")
    return {"nextbest_path": str(pkg), "src_sha256": h.hexdigest()[:16]}


def machine_info() -> dict[str, Any]:
    return {
        "nproc": nproc(),
        "cpu_model": cpu_model(),
        "mem_total_mb": mem_total_mb(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
        "git_revision": git_revision(),
    }


def command_line() -> str:
    """The exact command line as it was typed (interpreter path relative to the repo)."""
    exe = sys.executable
    with contextlib.suppress(ValueError):
        exe = os.path.relpath(exe, os.getcwd())
    return shlex.join([exe, *sys.argv])


# ------------------------------------------------------------------ memory
def rss_bytes() -> int:
    """Current resident set size (VmRSS) of this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------ statistics
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    if q <= 0:
        return float(sorted_values[0])
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def latency_summary(ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in microseconds, and the count."""
    s = sorted(ns)
    n = len(s)
    mean = sum(s) / n if n else float("nan")
    return {
        "n": n,
        "mean_us": round(mean / 1e3, 2),
        "p50_us": round(percentile(s, 50) / 1e3, 2),
        "p90_us": round(percentile(s, 90) / 1e3, 2),
        "p99_us": round(percentile(s, 99) / 1e3, 2),
        "p99_9_us": round(percentile(s, 99.9) / 1e3, 2),
        "max_us": round((s[-1] if s else float("nan")) / 1e3, 2),
        "min_us": round((s[0] if s else float("nan")) / 1e3, 2),
    }


class GcWatch:
    """Counts cyclic-GC collections (and their pauses) while active."""

    def __init__(self) -> None:
        self.active = False
        self.counts = [0, 0, 0]
        self.collections = 0  # all generations, for "did a collection run inside this call"
        self.total_pause_ns = 0  # all generations
        self.pause_ns = [0, 0, 0]
        self.max_pause_ns = [0, 0, 0]
        self._start = 0

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            gen = info["generation"]
            took = time.perf_counter_ns() - self._start
            self.counts[gen] += 1
            self.collections += 1
            self.total_pause_ns += took
            self.pause_ns[gen] += took
            self.max_pause_ns[gen] = max(self.max_pause_ns[gen], took)

    def __enter__(self) -> GcWatch:
        self.active = True
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
        gc.callbacks.remove(self._cb)

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{g}": {
                "collections": self.counts[g],
                "total_ms": round(self.pause_ns[g] / 1e6, 3),
                "max_ms": round(self.max_pause_ns[g] / 1e6, 3),
            }
            for g in range(3)
        }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


# ------------------------------------------------------------------ output
def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table; numbers right-aligned."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "-"
            if abs(v) >= 100:
                return f"{v:,.0f}"
            if abs(v) >= 10:
                return f"{v:,.1f}"
            return f"{v:,.2f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(
            isinstance(r[i], int | float) and not isinstance(r[i], bool) for r in rows if i < len(r)
        )
        for i in range(len(headers))
    ]
    lines = [title, "-" * len(title)]
    lines.append(
        "  ".join(
            h.rjust(w) if numeric[i] else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    lines.append("  ".join("-" * w for w in widths))
    for row in text:
        lines.append(
            "  ".join(
                c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(row)
            )
        )
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], out: Path = RESULTS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_bytes(
        orjson.dumps(
            payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
    )
    return path


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def kv_table(title: str, rows: dict[str, Any]) -> str:
    """A two-column ``what / value`` table."""
    return table(title, ["what", "value"], [[k, v] for k, v in rows.items()])


def fs_type(path: Path) -> str:
    """The file system a folder is on (an fsync costs what it costs there)."""
    try:
        line = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
        return line.split()[1]
    except (OSError, IndexError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------ timing loops
def time_calls(
    call: Callable[[T], object], inputs: Sequence[T], warmup: Iterable[T] = ()
) -> dict[str, Any]:
    """``call(x)`` for each input, timed one by one (perf_counter_ns) after the untimed
    ``warmup``: the latency summary, calls/s, the GC collections inside the loop, and the
    tail read apart (calls with and without a collection inside, context switches, page
    faults)."""
    for x in warmup:
        call(x)
    pc = time.perf_counter_ns
    lat = [0] * len(inputs)
    with_gc = [False] * len(inputs)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    with GcWatch() as gw:
        start = pc()
        for i, x in enumerate(inputs):
            before = gw.collections
            t = pc()
            call(x)
            lat[i] = pc() - t
            with_gc[i] = gw.collections != before
        wall = (pc() - start) / 1e9
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    yes_gc = [x for x, g in zip(lat, with_gc, strict=True) if g]
    return {
        **latency_summary(lat),
        "calls_per_s": round(len(lat) / wall) if wall else None,
        "gc": gw.summary(),
        "tail": {
            "calls_with_gc_collection": len(yes_gc),
            "latency_calls_without_gc": latency_summary(
                [x for x, g in zip(lat, with_gc, strict=True) if not g]
            ),
            "latency_calls_with_gc": latency_summary(yes_gc) if yes_gc else None,
            "involuntary_context_switches": ru1.ru_nivcsw - ru0.ru_nivcsw,
            "voluntary_context_switches": ru1.ru_nvcsw - ru0.ru_nvcsw,
            "minor_page_faults": ru1.ru_minflt - ru0.ru_minflt,
            "major_page_faults": ru1.ru_majflt - ru0.ru_majflt,
        },
    }


QUANTILES = ("mean_us", "p50_us", "p90_us", "p99_us", "p99_9_us", "max_us")


def load_module(name: str, path: Path) -> ModuleType:
    """The Python file ``path`` imported as module ``name`` (another tree's version of a
    module, for an A/B in one process)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ratios(measured: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """``measured / baseline`` per quantile (both ``latency_summary`` dicts, one run)."""
    return {k: round(measured[k] / baseline[k], 2) if baseline.get(k) else None for k in QUANTILES}


def parts_summary(parts: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """mean / p50 / p99 microseconds of each timed piece (nanosecond lists)."""
    out: dict[str, dict[str, float]] = {}
    for k, ns in parts.items():
        s = sorted(ns)
        out[k] = {
            "mean_us": round(sum(s) / len(s) / 1e3, 2),
            "p50_us": round(percentile(s, 50) / 1e3, 2),
            "p99_us": round(percentile(s, 99) / 1e3, 2),
        }
    return out


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{line}({func})"


def cprofile_top(
    work: Callable[[], object], units: int, unit: str, path: Path, sort: str = "cumulative"
) -> list[dict[str, Any]]:
    """Run ``work`` under cProfile; the full listing goes to ``path``, the top 25 by
    ``sort`` (cumulative or tottime) come back per ``unit`` (``units`` of them ran)."""
    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    out.write(f"cProfile of {units:,} {unit}s\n\n")
    for order in ("cumulative", "tottime"):
        out.write(f"=== top 25 by {order} time ===\n")
        stats.sort_stats(order).print_stats(25)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())
    index = 3 if sort == "cumulative" else 2
    raw = stats.stats  # type: ignore[attr-defined]
    top = sorted(raw.items(), key=lambda kv: -kv[1][index])[:25]
    return [
        {
            "function": _where(key),
            f"calls_per_{unit}": round(nc / units, 3),
            f"own_us_per_{unit}": round(tt / units * 1e6, 3),
            f"cum_us_per_{unit}": round(ct / units * 1e6, 3),
        }
        for key, (_cc, nc, tt, ct, _callers) in top
    ]


# ------------------------------------------------------------------ results
def add_run_args(ap: argparse.ArgumentParser, name: str) -> None:
    """The options every benchmark takes: seed, quick, results name and folder, temp dir."""
    ap.add_argument("--seed", type=int, default=20260921)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--name", default=None, help=f"results name (default {name}[_quick])")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument("--tmpdir", default=None, help="where temp files go (default $TMPDIR)")


class Run:
    """One benchmark run: logs the machine at the start, writes the results with the
    record every result carries (date, command, machine, code, versions, args, time)."""

    def __init__(self, benchmark: str, args: argparse.Namespace, *packages: str) -> None:
        self.benchmark = benchmark
        self.args = args
        self.packages = ("msgspec", *packages)
        self.started = time.perf_counter()
        self.machine = machine_info()
        log(f"{benchmark} benchmark: {command_line()}")
        m = self.machine
        log(
            f"{m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, "
            f"load average {m['load_average_start']}"
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def write(self, payload: dict[str, Any]) -> Path:
        self.machine["load_average_end"] = load_average()
        elapsed = self.elapsed()
        print(
            f"\nload average at start {self.machine['load_average_start']}, at end "
            f"{self.machine['load_average_end']}; total {elapsed:.0f} s; "
            f"peak RSS {peak_rss_bytes() / 2**20:,.0f} MB"
        )
        record = {
            "benchmark": self.benchmark,
            "date": now_iso(),
            "command": command_line(),
            "machine": self.machine,
            "code_measured": code_measured(),
            "versions": versions(*self.packages),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
            **payload,
            "elapsed_seconds": round(elapsed, 1),
            "peak_rss_mb": round(peak_rss_bytes() / 2**20),
        }
        path = write_results(self.args.name, record, self.args.out)
        print(f"results: {path}")
        return path


# ------------------------------------------------------------------ engines and servers
def engine_with_rows(
    catalog: Catalog,
    stores: Stores,
    rows: Sequence[StateRow],
    clock: Clock,
    *,
    learner: bytes | None = None,
    **engine_options: Any,
) -> tuple[Engine, dict[str, float]]:
    """An engine that starts from ``rows`` (``store.snapshot.profile_row`` ...) and, when
    given, a learner's ``to_state`` bytes: they are saved as a snapshot and the engine
    restores them, as a restart does. The seconds of the save and of the restore come back
    apart (setup, not the measured phase)."""
    saved = list(rows)
    if learner is not None:
        saved.extend(learner_rows(learner, stores.decisions.decision_log_position()))
    t = time.perf_counter()
    stores.state.save_state(0, catalog.digest, saved, replace=True)
    save_s = time.perf_counter() - t
    t = time.perf_counter()
    engine = Engine(catalog, stores, clock, **engine_options)
    restore_s = time.perf_counter() - t
    return engine, {"save_seconds": round(save_s, 3), "restore_seconds": round(restore_s, 3)}


def serve(
    catalog: Path,
    data: str,
    port: int,
    synchronous: str,
    write_key: str,
    now: float,
    http: str = "nextbest",
) -> int:
    """The real server on ``data`` (uvicorn + ``create_app`` + ``build_engine``) with a
    fixed clock at ``now``, until SIGTERM (a benchmark's child process); ``http``: uvicorn's
    HTTP protocol (``uvicorn_config``)."""
    settings = Settings(
        catalog=str(catalog),
        data=data,
        port=port,
        write_keys=frozenset({write_key}),
        admin_keys=frozenset({"bench-admin-key"}),
        token_secret="bench-token-secret",
        sqlite_synchronous=synchronous,
    )
    return serve_settings(settings, now, http=http)


def serve_settings(
    settings: Settings, now: float, background: bool = False, http: str = "nextbest"
) -> int:
    """The real server as ``settings`` say, its clock fixed at ``now`` (with what ``nextbest
    serve`` runs beside it if ``background``), until SIGTERM (a benchmark's child process)."""
    import uvicorn

    from nextbest.api.app import create_app
    from nextbest.bootstrap import build_background, build_engine
    from nextbest.clock import FixedClock

    engine = build_engine(settings, FixedClock(now))
    extra = build_background(settings, engine) if background else ()
    app = create_app(engine, settings, background=extra)
    uvicorn.Server(uvicorn_config(app, settings.port, http)).run()
    return 0


#: the HTTP protocols a benchmark server may run on: uvicorn's own httptools protocol, or
#: the one ``nextbest serve`` runs (``api.http_protocol``: a response in one write)
HTTP_PROTOCOLS = ("uvicorn", "nextbest")


def uvicorn_config(app: Any, port: int, http: str = "nextbest") -> Any:
    """The uvicorn settings every benchmark server runs on, nextbest's and the hello-world
    alike: uvicorn's defaults (uvloop), its own access log off and no logging configuration
    of its own (``log_config=None``), as ``nextbest serve`` runs it; ``http``: ``nextbest``
    (``api.http_protocol.serving_protocol(app)``, as ``nextbest serve``: an app with lean
    ingestion routes gets them served by the protocol) or ``uvicorn`` (uvicorn's
    httptools protocol, as it comes). A child
    that writes nextbest's JSON lines (``api.logs.configure``) keeps them so: uvicorn's
    default ``dictConfig`` would close that handler (every line then written and flushed
    by the thread that logs it, unlike ``nextbest serve``)."""
    import uvicorn

    from nextbest.api.http_protocol import serving_protocol

    if http not in HTTP_PROTOCOLS:
        raise SystemExit(f"http protocol {http!r}: one of {', '.join(HTTP_PROTOCOLS)}")
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="on",
        http=serving_protocol(app) if http == "nextbest" else "httptools",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def scratch_schema(url: str, connect_timeout: int | None = None) -> Iterator[str]:
    """``url`` with its ``search_path`` set to a fresh schema, dropped (with all in it) after."""
    from urllib.parse import quote

    import psycopg

    schema = f"bench_{uuid.uuid4().hex}"
    timeout = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    with psycopg.connect(url, autocommit=True, **timeout) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            joiner = "&" if "?" in url else "?"
            yield f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def store_data(backend: str, url: str, tmp: Path, prefix: str) -> Iterator[str | None]:
    """What ``open_stores`` opens for ``backend`` (memory, sqlite: a new file in ``tmp``
    named after ``prefix``, postgresql: a scratch schema on ``url``); None (logged) when
    PostgreSQL is not reachable."""
    import psycopg

    from nextbest.bootstrap import MEMORY

    if backend == "memory":
        yield MEMORY
    elif backend == "sqlite":
        yield str(tmp / f"{prefix}-{uuid.uuid4().hex}.sqlite")
    else:
        with contextlib.ExitStack() as stack:
            try:
                data = stack.enter_context(scratch_schema(url, connect_timeout=3))
            except psycopg.OperationalError as exc:
                log(f"postgresql skipped: not reachable at {url}: {str(exc).strip()[:120]}")
                yield None
                return
            yield data


def in_threads(threads: int, run: Callable[[int], object]) -> float:
    """Wall seconds for ``threads`` threads each calling ``run(t)``, all released at once
    (the clock starts when they are)."""
    start = threading.Barrier(threads + 1)

    def body(t: int) -> None:
        start.wait()
        run(t)

    workers = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    return time.perf_counter() - began


# ------------------------------------------------------------------ servers in child processes
def hello_server(port: int, http: str = "uvicorn") -> int:
    """The stack's hello-world: Starlette on the same uvicorn settings as nextbest, until
    SIGTERM (a benchmark's child process; the floor its HTTP figures are read against);
    ``http``: uvicorn's own protocol by default, as the floor has always been measured."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    uvicorn.Server(uvicorn_config(app, port, http)).run()
    return 0


def start_child(
    script: str, args: list[str], probe: str, src: Path | None = None
) -> subprocess.Popen[bytes]:
    """``script`` run with ``args`` in a new Python process, once ``probe`` (a URL) answers;
    the benchmark ends if it does not within a minute. ``src``: the child's ``PYTHONPATH``
    (another checkout's code; default: this process's environment)."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None
    process = subprocess.Popen([sys.executable, script, *args], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(probe, timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("server child did not start")


def stop_child(process: subprocess.Popen[bytes], wait: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``wait`` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()


def wrk(url: str, seconds: float, connections: int, script: Path | None) -> dict[str, Any]:
    """One ``wrk`` run (one thread, ``connections`` connections, the Lua ``script`` if any):
    its rate, count, non-2xx answers, socket errors and latency percentiles in ms."""
    import re

    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def ms(label: str) -> float | None:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            return None
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return round(float(m.group(1)) * scale, 3)

    return {
        "requests_per_second": rate,
        "requests": total,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
        "latency_ms": {"p50": ms("50"), "p90": ms("90"), "p99": ms("99")},
    }


def wrk_phase(
    name: str, url: str, seconds: float, connections: int, pid: int, script: Path | None
) -> dict[str, Any]:
    """``wrk`` against ``url`` with the CPU the server process ``pid`` spent meanwhile
    (in all and per request); logged as one line."""
    cpu0 = proc_cpu_seconds(pid)
    result = wrk(url, seconds, connections, script)
    result["server_cpu_seconds"] = round(proc_cpu_seconds(pid) - cpu0, 2)
    result["server_cpu_us_per_request"] = round(
        result["server_cpu_seconds"] * 1e6 / max(1, result["requests"])
    )
    log(f"{name}: {result['requests_per_second']:,.0f} req/s, p99 {result['latency_ms']['p99']} ms")
    return result


def each_backend(
    args: argparse.Namespace, prefix: str, what: str, measure: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """``measure(data)`` on each of ``args.backends`` (comma-separated; ``store_data``: a
    SQLite file in ``args.tmpdir``, a scratch schema on ``args.url``), logged as
    ``<backend>: <what>``; a PostgreSQL not reachable is recorded as skipped."""
    import tempfile

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        for backend in args.backends.split(","):
            with store_data(backend, args.url, Path(tmp), prefix) as data:
                if data is None:
                    found[backend] = {"skipped": "PostgreSQL not reachable"}
                    continue
                log(f"{backend}: {what}")
                found[backend] = measure(data)
    return found
