"""Shared helpers for the benchmarks: machine facts, percentiles, tables, JSON results.

Benchmarks are scripts, not tests: run them with the project's venv, e.g.
``.venv/bin/python bench/decide.py``. Each writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import importlib.metadata
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

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


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
