"""The committing thread's cost per event, on a load-independent yardstick.

What the group-commit thread runs for single-event ``POST /v1/track`` requests:
``Engine.accept_many`` on groups of ``--group`` requests (the rights check, the append to
SQLite and its commit, the fold, the results), called here from one thread. The bodies are
read and stamped beforehand, as the event loop does before it hands them over. Each request
is one event with a fresh messageId, ``userId`` ``u<n % --customers>``: after ``--warmup``
events, the measured ones go to customers seen before and to new ones.

    PYTHONPATH=$PWD/src .venv/bin/python bench/commit_cost.py            # CPU µs/event
    PYTHONPATH=$PWD/src valgrind --tool=callgrind --collect-atstart=no \\
        --callgrind-out-file=/tmp/cg.out .venv/bin/python bench/commit_cost.py \\
        --toggle /tmp/cg/cgtoggle.so

``--toggle LIB``: a shared library with ``cg_toggle()`` (``CALLGRIND_TOGGLE_COLLECT``, from
``valgrind/callgrind.h``), called around the measured groups only, so callgrind counts the
instructions of the commits and nothing of the start-up, parsing or warm-up. Divide the
total (``callgrind_annotate``'s ``PROGRAM TOTALS``) by ``--events``.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import EXAMPLE_CATALOG

WRITE_KEY = "bench-write-key"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _body(n: int, customers: int, pages: int) -> tuple[bool, bytes]:
    """Request ``n``: a page view every ``pages``-th request (0: none), else a track."""
    if pages and n % pages == 0:
        return True, (
            b'{"type":"page","userId":"u%d","name":"Mortgages","messageId":"c-%d",'
            b'"properties":{"path":"/mortgages"}}' % (n % customers, n)
        )
    return False, (
        b'{"type":"track","userId":"u%d","event":"Clicked","messageId":"c-%d",'
        b'"properties":{"position":1}}' % (n % customers, n)
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=3_200, help="measured events")
    ap.add_argument("--warmup", type=int, default=3_000)
    ap.add_argument("--customers", type=int, default=5_000)
    ap.add_argument("--group", type=int, default=16, help="requests per group commit")
    ap.add_argument("--pages", type=int, default=0, help="a page view every N-th request")
    ap.add_argument("--sync", default="FULL", help="SQLite synchronous setting")
    ap.add_argument("--toggle", default=None, help="callgrind toggle library (cg_toggle)")
    ap.add_argument("--profile", default=None, help="cProfile the measured groups to this file")
    args = ap.parse_args(argv)

    from nextbest.bootstrap import build_engine
    from nextbest.clock import FixedClock
    from nextbest.engine import IngestRequest, IngestResult
    from nextbest.events.model import EventType
    from nextbest.guard.origin import stamp
    from nextbest.guard.senders import KeyKind, Sender
    from nextbest.settings import Settings

    toggle = ctypes.CDLL(args.toggle).cg_toggle if args.toggle else None
    sender = Sender(KeyKind.WRITE, key_id="k-bench")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            catalog=str(EXAMPLE_CATALOG),
            data=str(Path(tmp) / "commit.sqlite"),
            write_keys=frozenset({WRITE_KEY}),
            sqlite_synchronous=args.sync,
        )
        engine = build_engine(settings, FixedClock(time.time()))

        def groups(start: int, count: int) -> list[list[IngestRequest]]:
            requests = []
            for n in range(start, start + count):
                page, body = _body(n, args.customers, args.pages)
                kind = EventType.PAGE if page else EventType.TRACK
                parsed = engine.read_message(kind, body)
                stamp(parsed.events, sender, None)
                requests.append(IngestRequest(sender, parsed, ""))
            it = iter(requests)
            return list(iter(lambda: list(itertools.islice(it, args.group)), []))

        try:
            for group in groups(0, args.warmup):
                engine.accept_many(group)
            measured = groups(args.warmup, args.events)
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started = _cpu()
            if toggle is not None:
                toggle()
            for group in measured:
                for result in engine.accept_many(group):
                    if not isinstance(result, IngestResult) or result.accepted != 1:
                        raise SystemExit(f"unexpected result {result!r}")
            if toggle is not None:
                toggle()
            spent = _cpu() - started
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
        finally:
            engine.close()
    per_event = spent * 1e6 / args.events
    print(f"{args.events} events in groups of {args.group}: {per_event:.1f} µs CPU an event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
