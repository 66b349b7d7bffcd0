"""Paired A/B of single-event ``POST /v1/track`` over HTTP: two or more servers side by side,
wrk phases taking turns, on a machine whose load moves within seconds.

``bench/track_http.py`` measures each phase once per round; on a shared 2-core VM a phase's
server CPU per request moves by +-20 % from one phase to the next with the neighbours'
load, more than a change of a few microseconds. Here every server (a code tree and an HTTP
protocol) is started once, then ``--pairs`` times each takes a ``--seconds`` wrk phase in
turn (the order reversed every pair); each pair's difference against the first ``--server``
is taken, and the median of the differences is reported beside each server's median.

A tree is a folder with the project's ``src/`` and ``bench/`` (this worktree, or a ``git
archive <commit> src bench`` with ``examples`` linked beside), served by its own
``bench/track_http.py --child-serve`` (SQLite synchronous=FULL, JSON access lines to a file,
as ``--access-log``). ``--server NAME=TREE[:HTTP]``: HTTP, for a tree whose
``track_http.py`` takes one, is ``nextbest`` or ``uvicorn`` (``bench/_common.uvicorn_config``).
``--hello NAME=HTTP``: this tree's hello-world on that protocol (no script: ``GET /``).

    PYTHONPATH=$PWD/src .venv/bin/python bench/track_ab.py --pairs 10 --seconds 3 \\
        --server base=/tmp/base --server head=$PWD:nextbest --server stock=$PWD:uvicorn
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    BENCH,
    Run,
    add_run_args,
    free_port,
    log,
    start_child,
    stop_child,
    table,
    wrk_phase,
)

#: the Lua script of track_http.py (fresh messageIds, one event a request)
_LUA = (BENCH / "track_http.py").read_text().split('_LUA = """')[1].split('"""')[0]
_AUTH = "Basic YmVuY2gtd3JpdGUta2V5Og=="


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "track_ab")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=3.0, help="per phase")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--server", action="append", default=[], help="NAME=TREE[:HTTP]")
    ap.add_argument("--hello", action="append", default=[], help="NAME=HTTP")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.seconds = 2, 1.0
    if len(args.server) + len(args.hello) < 2:
        raise SystemExit("give at least two servers (--server, --hello)")
    args.name = args.name or ("track_ab_quick" if args.quick else "track_ab")
    run = Run("track_ab", args, "starlette", "uvicorn")
    here = BENCH.parent
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp, contextlib.ExitStack() as stack:
        servers: dict[str, tuple[subprocess.Popen[bytes], str, bool]] = {}
        for spec in args.server:
            name, where = spec.split("=", 1)
            tree, _, http = where.partition(":")
            port = free_port()
            data = str(Path(tmp) / f"{name}.sqlite")
            script = str(Path(tree) / "bench" / "track_http.py")
            argv = ["--child-serve", str(port), data, "FULL", *([http] if http else [])]
            argv.append(str(Path(tmp) / f"{name}.log"))
            url = f"http://127.0.0.1:{port}/"
            servers[name] = (start_child(script, argv, url, Path(tree) / "src"), url, False)
            stack.callback(stop_child, servers[name][0], 30)
        for spec in args.hello:
            name, http = spec.split("=", 1)
            port = free_port()
            argv = ["--child-hello", str(port), http]
            url = f"http://127.0.0.1:{port}/"
            hello = start_child(str(BENCH / "track_http.py"), argv, url, here / "src")
            servers[name] = (hello, url, True)
            stack.callback(stop_child, servers[name][0], 30)
        names = list(servers)
        results = {name: [] for name in names}
        for n in range(args.pairs):
            for name in names if n % 2 == 0 else names[::-1]:
                process, url, hello = servers[name]
                script = None
                if not hello:
                    script = Path(tmp) / f"{name}-{n}.lua"
                    values = {"size": 0, "auth": _AUTH, "phase": f"{name}-{n}"}
                    script.write_text(_LUA % values)
                phase = wrk_phase(name, url, args.seconds, args.connections, process.pid, script)
                results[name].append(phase)
    print(table(*_summary(args, names, results)))
    run.write({"results": results, "pairs": _pairs(names, results)})
    return 0


def _pairs(names: list[str], results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each server's pairwise differences against the first: CPU µs a request, req/s ratio."""
    first = results[names[0]]
    out = {}
    for name in names[1:]:
        cpu = [
            b["server_cpu_us_per_request"] - a["server_cpu_us_per_request"]
            for a, b in zip(first, results[name], strict=True)
        ]
        rps = [
            b["requests_per_second"] / a["requests_per_second"]
            for a, b in zip(first, results[name], strict=True)
        ]
        out[name] = {
            "cpu_us_diff": cpu,
            "cpu_us_diff_median": statistics.median(cpu),
            "rps_ratio": rps,
            "rps_ratio_median": statistics.median(rps),
        }
    return out


def _summary(
    args: argparse.Namespace, names: list[str], results: dict[str, list[dict[str, Any]]]
) -> tuple[str, list[str], list[list[str]]]:
    pairs = _pairs(names, results)
    rows = []
    for name in names:
        phases = results[name]
        cpu = [p["server_cpu_us_per_request"] for p in phases]
        rps = statistics.median(p["requests_per_second"] for p in phases)
        against = pairs.get(name)
        rows.append(
            [
                name,
                f"{rps:,.0f}",
                f"{statistics.median(cpu):.0f}",
                " ".join(str(c) for c in cpu),
                f"{against['cpu_us_diff_median']:+.0f}" if against else "",
                f"{against['rps_ratio_median']:.3f}" if against else "",
            ]
        )
    log(f"{args.pairs} pairs of {args.seconds:g} s phases done")
    title = (
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, {args.pairs} pairs, medians; "
        f"paired against {names[0]}"
    )
    heads = ["server", "req/s", "CPU µs/request", "each phase", "CPU diff", "req/s ratio"]
    return title, heads, rows


if __name__ == "__main__":
    raise SystemExit(main())
