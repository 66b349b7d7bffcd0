"""The site loop drives a real server on event time over HTTP exactly as a site would, and a
seeded simulated month gives the same figures, the same decision log, the same event log and
the same saved models as the same run in process (byte for byte)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import msgspec
import orjson
import pytest

from nextbest.catalog.compiled import Catalog
from nextbest.clock import ClockKind
from nextbest.decide.feedback import FEEDBACK_EVENTS
from nextbest.decide.model import DecisionRequest
from nextbest.decide.pipeline import greedy
from nextbest.errors import InputError, RemoteError
from nextbest.guard.origin import key_id
from nextbest.sim.engines import LocalEngine, RemoteEngine
from nextbest.sim.loop import Metrics, SiteLoop
from nextbest.sim.policies import make_policy
from tests.conftest import make_settings, serving
from tests.support import SERVER_KEY, T0, WRITE_KEY

SEED, CUSTOMERS, DAYS = 11, 80, 10


#: what the HTTP face writes on feedback about who sent it (``guard.origin``), and the
#: learner's counts of it (``learn.volume``): an in-process run has no sender to record
_SENDER_FIELDS = ("key_id", "origin")


def _without_sender(row: tuple[object, ...]) -> tuple[object, ...]:
    """``row`` of the event log or the state without what only the HTTP face records."""
    if len(row) == 4 and isinstance(row[3], bytes | str):  # an event: its JSON body
        body = orjson.loads(row[3])
        for name in _SENDER_FIELDS:
            body.pop(name, None)
        return (*row[:3], msgspec.json.encode(body))
    if row[:2] == ("learner", "learner") and isinstance(row[2], bytes):
        state = msgspec.msgpack.decode(row[2])
        state.pop("trust", None)
        return (*row[:2], msgspec.msgpack.encode(state))
    return row


def _senders(data: Path) -> tuple[set[tuple[str | None, str | None]], tuple[int, int]]:
    """Who sent the stored feedback (key id, origin), and how many origins and keys the
    saved learner counts."""
    db = sqlite3.connect(data)
    bodies = [orjson.loads(b) for (b,) in db.execute("SELECT body FROM events")]
    (state,) = db.execute("SELECT body FROM state WHERE kind = 'learner' AND key = 'learner'")
    db.close()
    feedback = [b for b in bodies if b.get("name") in FEEDBACK_EVENTS]
    assert feedback
    trust = msgspec.msgpack.decode(msgspec.msgpack.decode(state[0])["trust"])
    return {(b.get("key_id"), b.get("origin")) for b in feedback}, (len(trust[0]), len(trust[1]))


def _digests(data: Path) -> dict[str, str]:
    """The store's decision log, event log and saved state (profiles, models), each hashed,
    without what only the HTTP face records about who sent feedback."""
    db = sqlite3.connect(data)
    queries = {
        "decisions": "SELECT decision_id, body FROM decisions ORDER BY decision_id",
        "events": "SELECT seq, message_id, timestamp, body FROM events ORDER BY seq",
        "state": "SELECT kind, key, body FROM state ORDER BY kind, key",
        "models": "SELECT kind, key, body FROM state WHERE kind LIKE 'learn%' ORDER BY key",
    }
    out = {}
    for name, sql in queries.items():
        digest = hashlib.sha256()
        rows = db.execute(sql).fetchall()
        for row in rows:
            digest.update(repr(_without_sender(row)).encode())
        out[name] = f"{len(rows)} rows {digest.hexdigest()[:16]}"
    db.close()
    return out


def _play(loop: SiteLoop) -> Metrics:
    for d in range(DAYS):
        loop.run_day(d)
    return msgspec.structs.replace(loop.finish(), wall_seconds=0.0)


def test_a_simulated_month_over_http_equals_the_run_in_process(
    catalog: Catalog, tmp_path: Path
) -> None:
    local_data = tmp_path / "local.sqlite"
    policy = make_policy("nextbest")
    local = _play(
        SiteLoop(
            policy,
            catalog,
            SEED,
            CUSTOMERS,
            site_engine=LocalEngine(catalog, str(local_data), id_prefix="nextbest-"),
        )
    )
    settings = make_settings(tmp_path / "server", clock=ClockKind.EVENT)
    with serving(settings, counted_ids=False) as server:  # the ids `nextbest serve` uses
        remote = RemoteEngine(
            server.url, catalog, write_key=WRITE_KEY, server_key=SERVER_KEY, timeout=10
        )
        remote.check()
        over_http = _play(SiteLoop(policy, catalog, SEED, CUSTOMERS, site_engine=remote))
    # views are learned as misses as event time passes their click window, not wall time
    assert server.engine.learner.learned > over_http.impressions * 3 // 4 > 0
    assert local.decisions > 100
    assert local.impressions > 100
    assert local.clicks > 0
    assert over_http == local
    digests = _digests(local_data)
    assert "0 rows" not in digests["models"]
    assert _digests(Path(settings.data)) == digests
    # over HTTP each feedback event names the write key that sent it, no network (the site
    # sends no context.ip), and the learner counts that one key; in process, nothing
    assert _senders(Path(settings.data)) == ({(key_id("write", WRITE_KEY), None)}, (0, 1))
    assert _senders(local_data) == ({(None, None)}, (0, 0))


def test_only_the_engines_own_chooser_runs_over_http(catalog: Catalog, tmp_path: Path) -> None:
    with serving(make_settings(tmp_path, clock=ClockKind.EVENT), counted_ids=False) as server:
        remote = RemoteEngine(server.url, catalog, write_key=WRITE_KEY, server_key=SERVER_KEY)
        request = DecisionRequest(placement="home_feed")
        with pytest.raises(InputError, match="only nextbest runs over HTTP"):
            remote.decide(request, user_id="u-1", anonymous_id=None, at=T0, choose=greedy)
        remote.close()
    assert server.engine.pending_decisions() == []


def test_a_server_on_the_wall_clock_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    with serving(make_settings(tmp_path)) as server:
        remote = RemoteEngine(server.url, catalog, write_key=WRITE_KEY, server_key=SERVER_KEY)
        with pytest.raises(RemoteError, match="--clock event"):
            remote.check()
        remote.close()
    with pytest.raises(RemoteError, match=r"127\.0\.0\.1"):
        RemoteEngine(server.url, catalog).check()  # nobody listens any more
    with pytest.raises(InputError, match="http"):
        RemoteEngine("ftp://example", catalog)
