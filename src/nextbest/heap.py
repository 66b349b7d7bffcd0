"""The cyclic garbage collector of a long-running server process (``nextbest serve``, a
fold worker): what start-up built out of its reach, and its youngest generation collected
less often.

CPython collects its youngest generation every 700 net allocations of container objects,
and every collection runs with the GIL held, stopping the event loop and the group-commit
thread alike. A server allocates some 9 such objects a single-event ``POST /v1/track``
that outlive the moment (uvicorn's and asyncio's per-request objects with reference
cycles, the profiles' new entries), so at 9,000 requests a second it collected its young
objects some 115 times a second, its middle generation 11 times and everything not frozen
about once a second, a 28 ms pause each (``BENCHMARKS.md``, issue #15, 2026-12-07 10:42).
Collected every ``YOUNG`` allocations instead, the youngest generation holds little more
live data when it is collected (what is alive then is mostly the requests in flight), so a
collection costs about the same and comes 70 times less often; the older generations keep
CPython's ratios (each collected after 10 collections of the one below), so they too come
70 times less often. Cyclic garbage waits longer to be freed: at most ``YOUNG`` objects'
worth, a few megabytes.
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
