"""``nextbest sim generate``: the synthetic bank's event stream as NDJSON.

Byte-identical output for the same arguments: every random draw comes from generators
seeded by (seed, customer), messages are ordered by time (ties by customer order), and
JSON is written by orjson with a fixed key order.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import orjson

from nextbest.sim.population import PopulationParams, make_population
from nextbest.sim.response import ResponseModel
from nextbest.sim.takeover import TakeoverLife, TakeoverParams
from nextbest.sim.world import CustomerSim, messages_of
from nextbest.sim.worlds import DEFAULT_WORLD, world_named, world_response

__all__ = ["DEFAULT_START", "generate_lines", "write_ndjson"]

#: a fixed first day, so the same arguments give the same bytes on any day they are run
DEFAULT_START = date(2026, 6, 1)


def generate_lines(
    seed: int,
    customers: int,
    days: int,
    start: date = DEFAULT_START,
    params: PopulationParams | None = None,
    response: ResponseModel | None = None,
    world: str = DEFAULT_WORLD,
    takeovers: TakeoverParams | None = None,
) -> Iterator[bytes]:
    """One NDJSON line (with its newline) per Segment-spec message, in time order, of the
    customers of ``world`` (``params`` and ``response`` override the world's); with
    ``takeovers``, their devices and habits and some account takeovers (``sim.takeover``)."""
    lives = world_named(world)
    model = response or world_response(lives)
    people = make_population(seed, customers, start, params or lives.population)
    sims = [
        CustomerSim(
            c,
            seed,
            start,
            model,
            lives.need_rate,
            lives.life_events,
            None if takeovers is None else TakeoverLife(c, seed, days, takeovers),
        )
        for c in people
    ]
    dumps = orjson.dumps
    for day in messages_of(sims, days):
        for _, message in day:
            yield dumps(message) + b"\n"


def write_ndjson(path: str | Path, lines: Iterator[bytes]) -> int:
    """Write lines to ``path`` (``-`` is standard output); returns how many."""
    n = 0
    if str(path) == "-":
        import sys

        out = sys.stdout.buffer
        for line in lines:
            out.write(line)
            n += 1
        out.flush()
        return n
    with open(path, "wb") as f:
        buffer: list[bytes] = []
        for line in lines:
            buffer.append(line)
            n += 1
            if len(buffer) >= 4096:
                f.write(b"".join(buffer))
                buffer.clear()
        f.write(b"".join(buffer))
    return n
