"""The cyclic garbage collector of a long-running server process (``nextbest serve``, a
fold worker): what start-up built out of its reach, and its youngest generation collected
less often.

CPython collects its youngest generation every 700 net allocations of container objects,
and every collection runs with the GIL held, stopping the event loop and the group-commit
thread alike. A server serving single-event ``POST /v1/track`` keeps some 9 such objects a
request until a collection finds them (data that stays, or garbage in reference cycles):
at 9,000 requests a second it collected its young objects some 115 times a second, its
middle generation 11 times, and everything not frozen about once a second, 28 ms each;
4.4 % of its time in all, and its p99 latency (``BENCHMARKS.md``, "Single-event track: the
garbage collector's pauses"). Collected every ``YOUNG`` allocations instead, a young
collection walks more (7-10 ms) but comes 70 times less often, and so do the older
generations, which keep CPython's ratios (each collected after 10 collections of the one
below): 21-32 ms of collecting in 8 s instead of 352. Cyclic garbage waits longer to be
freed: at most ``YOUNG`` objects' worth, a few megabytes.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG", "settle_for_serving"]

#: net allocations of container objects between two collections of the youngest generation
#: (CPython's default: 700)
YOUNG = 50_000


def settle_for_serving() -> None:
    """Move everything allocated so far out of the collector's reach (``gc.freeze``: it
    lives as long as the process) and collect the youngest generation every ``YOUNG`` net
    allocations, the older ones at CPython's ratios; process-wide."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, oldest)
