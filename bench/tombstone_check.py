"""The fold's check of each event against the erasure tombstones (``scaled_erasure.Tombstones
.drops``), which every fold worker (one, or several partitioned ones) runs on every event
while a tombstone is held (an erasure in the last 7 days): CPU seconds per event
(``time.process_time``, so less sensitive to other work on the machine than wall time),
with no tombstone held and with one, min and median of 5 rounds of 100,000 events.

    PYTHONPATH=src .venv/bin/python bench/tombstone_check.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import T0, batch, page  # noqa: E402

from nextbest.events import parse_batch  # noqa: E402
from nextbest.scaled_erasure import Tombstones, tombstone_key  # noqa: E402


def main() -> None:
    events = parse_batch(
        batch(*[page("https://b.example/", user=f"u{i}") for i in range(1000)]), T0
    )
    for held in (0, 1):
        stones = Tombstones(tombstone_key("s"))
        if held:
            stones.add({stones.digest("u:gone"): T0})
        rounds = []
        for _ in range(5):
            started = time.process_time()
            for _ in range(100):
                for e in events:
                    stones.drops(e)
            rounds.append((time.process_time() - started) / 100_000 * 1e6)
        rounds.sort()
        print(
            f"tombstones held: {held}: {rounds[0]:.2f} us per event (min), {rounds[2]:.2f} median"
        )


if __name__ == "__main__":
    main()
