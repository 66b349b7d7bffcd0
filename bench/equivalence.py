"""Same behaviour across two checkouts: build a store with whichever nextbest is first on the
path, then print digests of its decisions, decision log and saved state.

A refactor that promises no behaviour change runs this once per checkout and compares:

    PYTHONPATH=../before/src .venv/bin/python bench/equivalence.py /tmp/before.sqlite
    PYTHONPATH=src .venv/bin/python bench/equivalence.py /tmp/after.sqlite
    .venv/bin/nextbest replay --data /tmp/before.sqlite   # the new code replays the old store

The run: the synthetic bank's seeded messages (``--customers`` x ``--days``) ingested in batches
on a clock set to each batch's last timestamp, decisions for a few users per batch on two
placements, a Promotion Viewed for every third decision that showed something, then close()
(flush and snapshot).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sqlite3
from datetime import date, datetime
from typing import Any

import msgspec
import orjson

from nextbest.clock import FixedClock
from nextbest.decide.model import DecisionRequest
from nextbest.settings import Settings
from nextbest.sim.generate import generate_lines

PLACEMENTS = ("home_hero", "home_feed")


def _engine(settings: Settings, clock: FixedClock, new_id: Any) -> Any:
    try:
        from nextbest.bootstrap import build_engine
    except ImportError:  # a checkout from before the composition root
        from nextbest.engine import Engine

        return Engine.from_settings(settings, clock, new_id=new_id)  # type: ignore[attr-defined]
    return build_engine(settings, clock, new_id=new_id, freeze_gc=False)


def _viewed(user: str, decision: Any, at: str) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": "Promotion Viewed",
        "messageId": f"fb-{decision.decision_id}",
        "timestamp": at,
        "properties": {
            "promotion_id": decision.items[0].offer_id,
            "decision_id": decision.decision_id,
            "position": 1,
        },
    }


def run(data: str, catalog: str, seed: int, customers: int, days: int) -> tuple[str, int]:
    """Drive an engine on a new store at ``data``; (digest of every decision, profiles)."""
    clock = FixedClock(0.0)
    count = itertools.count(1)
    engine = _engine(Settings(catalog=catalog, data=data), clock, lambda: f"d{next(count):07d}")
    lines = [orjson.loads(x) for x in generate_lines(seed, customers, days, date(2026, 6, 1))]
    digest = hashlib.sha256()
    for start in range(0, len(lines), 50):
        chunk = lines[start : start + 50]
        clock.set(max(datetime.fromisoformat(m["timestamp"]).timestamp() for m in chunk))
        engine.ingest_batch(orjson.dumps({"batch": chunk}))
        for user in sorted({m["userId"] for m in chunk if m.get("userId")})[:3]:
            for placement in PLACEMENTS:
                d = engine.decide(DecisionRequest(placement=placement), user_id=user)
                digest.update(msgspec.json.encode(d))
                if d.items and int(d.decision_id[1:]) % 3 == 0:
                    feedback = _viewed(user, d, chunk[-1]["timestamp"])
                    engine.ingest_batch(orjson.dumps({"batch": [feedback]}))
    engine.close()
    return digest.hexdigest(), engine.profile_count


def stored_digest(data: str) -> str:
    """The saved state (rows and watermark) and the decision log, byte for byte."""
    db = sqlite3.connect(data)
    digest = hashlib.sha256()
    for row in db.execute("SELECT kind, key, body FROM state ORDER BY kind, key"):
        digest.update(repr(row).encode())
    for (body,) in db.execute("SELECT body FROM decisions ORDER BY decision_id"):
        digest.update(body)
    digest.update(repr(db.execute("SELECT seq, version FROM state_watermark").fetchall()).encode())
    db.close()
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a new SQLite file to build")
    parser.add_argument("--catalog", default="examples/bank")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--days", type=int, default=20)
    args = parser.parse_args()
    decisions, profiles = run(args.data, args.catalog, args.seed, args.customers, args.days)
    print(
        f"decisions {decisions[:16]}  stored {stored_digest(args.data)[:16]}  {profiles} profiles"
    )


if __name__ == "__main__":
    main()
