"""What the rate limiter costs a request, beside a trivial call of the same shape.

The HTTP face checks every authenticated request against its key's bucket and, for a browser
key, its session's (the customer token's user, or each anonymousId it names). This times,
in one process and one run:

- ``trivial``: a Python function of the same arguments that does nothing (the floor);
- ``key``: ``RateLimits.check_key`` on a warm key (every request pays this);
- ``browser_token``: ``time.monotonic()`` + the key + the customer's session, as the face
  admits a browser request with a customer token;
- ``browser_device``: the key + ``check_device`` of one anonymousId drawn from ``--sessions``
  distinct ones, with the device table at its cap (``--cap``, half of
  ``rate_sessions_max``): old generations are dropped as new names come, the worst steady
  state;
- ``refused``: a check over the limit, RateLimited raised and caught (a client being turned
  away).

Each is timed twice: a tight loop of ``--calls`` calls divided by the count (no timer in the
loop), and ``--sample`` calls timed one by one (``time_calls``: the distribution, which
includes the timer's own ~0.1 µs, as the trivial call's does). Then the memory of a full
session table (tracemalloc) per entry, with anonymousIds as analytics.js makes them (uuid4).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence

from _common import Run, add_run_args, log, ratios, table, time_calls
from nextbest.api.rate_limit import RateLimits
from nextbest.errors import RateLimited
from nextbest.settings import Settings

#: a rate and burst never reached in the loops (a fixed ``now`` there): the allowed path is
#: what almost every request takes
_UNREACHED = 1e12
_BURST = 10**9


def _loop_us(call: Callable[[int], object], n: int) -> float:
    """Mean microseconds of ``call(i)`` for i in range(n), the loop's own cost included."""
    start = time.perf_counter_ns()
    for i in range(n):
        call(i)
    return (time.perf_counter_ns() - start) / n / 1e3


def _empty_loop_us(n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        pass
    return (time.perf_counter_ns() - start) / n / 1e3


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "rate_limit")
    ap.add_argument("--calls", type=int, default=2_000_000, help="calls per tight loop")
    ap.add_argument("--sample", type=int, default=200_000, help="calls timed one by one")
    ap.add_argument("--sessions", type=int, default=200_000, help="distinct anonymousIds")
    ap.add_argument("--cap", type=int, default=100_000, help="anonymousIds tracked at once")
    ap.add_argument("--repeat", type=int, default=3, help="tight loops per case (best kept)")
    args = ap.parse_args(argv)
    if args.quick:
        args.calls, args.sample, args.sessions, args.cap = 50_000, 5_000, 5_000, 2_000
    args.name = args.name or ("rate_limit_quick" if args.quick else "rate_limit")
    run = Run("rate_limit", args)
    rng = random.Random(args.seed)

    settings = Settings(
        key_rate=_UNREACHED,
        key_burst=_BURST,
        session_rate=_UNREACHED,
        session_burst=_BURST,
        rate_sessions_max=2 * args.cap,  # half of it for anonymousIds
    )
    key = "pk_live_" + uuid.UUID(int=rng.getrandbits(128)).hex
    user = "u-1001"
    devices = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(args.sessions)]
    picks = [devices[rng.randrange(len(devices))] for _ in range(max(args.calls, args.sample))]
    monotonic = time.monotonic
    # each case its own limits (a fixed now in one, the monotonic clock in the others)
    warm, token, device = RateLimits(settings), RateLimits(settings), RateLimits(settings)
    for d in devices:  # fill the table to its cap: every later miss evicts
        device.check_device(d, 0.0)

    def trivial(i: int) -> None:
        _noop(key, 1.0)

    def check_key(i: int) -> None:
        warm.check_key(key, 1.0)

    def browser_token(i: int) -> None:
        now = monotonic()
        token.check_key(key, now)
        token.check_user(user, now)

    def browser_device(i: int) -> None:
        now = monotonic()
        device.check_key(key, now)
        device.check_device(picks[i], now)

    strict = RateLimits(Settings(key_rate=1e-9, key_burst=1))
    strict.check_key(key, 0.0)

    def refused(i: int) -> None:
        with contextlib.suppress(RateLimited):
            strict.check_key(key, 1.0)

    cases: dict[str, Callable[[int], None]] = {
        "trivial": trivial,
        "key": check_key,
        "browser_token": browser_token,
        "browser_device": browser_device,
        "refused": refused,
    }
    empty = min(_empty_loop_us(args.calls) for _ in range(args.repeat))
    loops: dict[str, float] = {}
    for name, call in cases.items():
        call(0)
        loops[name] = min(_loop_us(call, args.calls) for _ in range(args.repeat))
        log(f"{name}: {loops[name]:.3f} µs per call in a loop of {args.calls:,}")
    sampled = {
        name: time_calls(call, range(args.sample), warmup=range(1_000))
        for name, call in cases.items()
    }
    over_trivial = {n: round(loops[n] - loops["trivial"], 3) for n in cases}
    print()
    print(
        table(
            f"rate limiter per request (µs; tight loop of {args.calls:,}, best of "
            f"{args.repeat}; empty loop {empty:.3f} µs)",
            ["case", "loop mean", "over trivial", "p50 (timed)", "p99 (timed)", "p99.9 (timed)"],
            [
                [
                    n,
                    loops[n],
                    over_trivial[n],
                    sampled[n]["p50_us"],
                    sampled[n]["p99_us"],
                    sampled[n]["p99_9_us"],
                ]
                for n in cases
            ],
        )
    )

    # memory of a full session table, entries named as analytics.js names devices
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table_limits = RateLimits(settings)
    names = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(args.cap)]
    for n in names:
        table_limits.check_device(n, 0.0)
    del names  # the table holds its own "a:<id>" strings
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    entries = len(table_limits.devices)
    memory = {
        "entries": entries,
        "bytes": held,
        "bytes_per_entry": round(held / entries),
        "name": "a uuid4 as text (36 characters)",
        "mb_at_cap": round(held / 2**20, 1),
    }
    print(
        f"\nsession table at its cap: {entries:,} entries, {held / 2**20:.1f} MB, "
        f"{held / entries:.0f} bytes per entry (name included)"
    )
    run.write(
        {
            "loop_mean_us": {n: round(v, 3) for n, v in loops.items()},
            "empty_loop_us": round(empty, 3),
            "over_trivial_us": over_trivial,
            "timed": sampled,
            "ratio_to_trivial_timed": {
                n: ratios(sampled[n], sampled["trivial"]) for n in cases if n != "trivial"
            },
            "session_table": memory,
            "evicted_during_run": device.devices.evicted,
        }
    )
    return 0


def _noop(key: str, now: float) -> None:
    return None


if __name__ == "__main__":
    sys.exit(main())
