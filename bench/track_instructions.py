"""Instructions a single-event ``POST /v1/track`` costs the whole process, both threads and
the access line, counted by callgrind: a yardstick the machine's load does not move.

The app is driven in process as ``bench/track_asgi.py`` drives it (32 tasks, fresh
messageIds, 5,000 customers), with nextbest's JSON access lines written to a file as
``nextbest serve`` writes them. ``--requests N`` runs ``--warmup`` requests (2,000), then N.
Under callgrind, the process's whole count includes the imports and the catalog's compile,
so run it twice and take the difference: ``(I(3000) - I(1000)) / 2000`` is a request's
instructions, start-up cancelled out (``--measure`` does that, running valgrind itself):

    PYTHONPATH=$PWD/src .venv/bin/python bench/track_instructions.py --measure
    # or by hand, for another tree's code:
    PYTHONPATH=<tree>/src:bench valgrind --tool=callgrind --callgrind-out-file=/tmp/a.out \\
        .venv/bin/python bench/track_instructions.py --requests 1000

The group commit's groups depend on thread timing, so two runs of the same code differ by
about 1 % (386.1k and 386.1k instructions, once 390.8k, on the same tree).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import track_asgi
from _common import EXAMPLE_CATALOG, ROOT


async def _run(requests: int, warmup: int, tmp: Path) -> None:
    from nextbest.api.app import create_app
    from nextbest.api.logs import configure
    from nextbest.api.metrics import Metrics
    from nextbest.bootstrap import build_engine
    from nextbest.clock import FixedClock
    from nextbest.settings import Settings

    settings = Settings(
        catalog=str(EXAMPLE_CATALOG),
        data=str(tmp / "track.sqlite"),
        write_keys=frozenset({track_asgi.WRITE_KEY}),
        admin_keys=frozenset({"bench-admin-key"}),
        token_secret="bench-token-secret",
        sqlite_synchronous="OFF",
    )
    engine = build_engine(settings, FixedClock(1.79e9))
    app = create_app(engine, settings, metrics=Metrics(from_env=False))
    saved = track_asgi._logging_state()
    with open(tmp / "access.log", "a", buffering=1) as stream:
        writer = configure(stream)
        ids = itertools.count()
        try:
            for name, count in (("warm", warmup), ("measured", requests)):
                await track_asgi._drive(
                    app,
                    "POST",
                    "/v1/track",
                    track_asgi._track_body(name),
                    itertools.islice(ids, count),
                    32,
                )
        finally:
            writer.close()
            engine.close()
            track_asgi._restore_logging(saved)


def _callgrind_total(requests: int, out: Path) -> int:
    """The instructions of a whole run with ``requests`` measured requests."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env["PYTHONPATH"] = os.pathsep.join([env.get("PYTHONPATH", ""), str(ROOT / "bench")])
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--requests",
            str(requests),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000, help="measured, after the warm-up")
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument(
        "--measure", action="store_true", help="run callgrind at 1,000 and 3,000 requests"
    )
    args = ap.parse_args(argv)
    import uvloop

    if not args.measure:
        with tempfile.TemporaryDirectory() as tmp:
            uvloop.run(_run(args.requests, args.warmup, Path(tmp)))
        print(f"{args.requests} track requests after {args.warmup:,}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        low = _callgrind_total(1_000, Path(tmp) / "low.out")
        high = _callgrind_total(3_000, Path(tmp) / "high.out")
    print(f"{(high - low) / 2_000:,.0f} instructions a track request ({low:,} and {high:,})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
