"""Feedback volume per key and per network origin (``learn.volume``), the origin and key id
the HTTP face writes on feedback (``guard.origin``), and the trust rule they feed: counts
slide with server time, stay bounded, and a replay or a restart judges every feedback event
exactly as it was judged live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nextbest.catalog.model import FeedbackTrust
from nextbest.clock import FixedClock
from nextbest.decide import DecisionRequest
from nextbest.engine import Engine
from nextbest.events.model import Event, EventType
from nextbest.guard.origin import key_id, network_origin, stamp
from nextbest.guard.senders import KeyKind, Sender
from nextbest.learn.volume import BUCKET_SECONDS, FeedbackVolume, Verdict
from tests.support import T0, batch, feedback, identify, page

FEED = DecisionRequest(placement="home_feed")


def fb(
    at: float, *, origin: str | None = "203.0.113.0/24", key: str | None = None, click: bool = False
) -> Event:
    name = "Promotion Clicked" if click else "Promotion Viewed"
    return Event(
        message_id=f"m-{at}-{origin}-{key}-{name}",
        type=EventType.TRACK,
        timestamp=at,
        received_at=at,
        anonymous_id="a",
        name=name,
        key_id=key,
        origin=origin,
    )


def over(volume: FeedbackVolume, events: list[Event]) -> list[bool]:
    return [not volume.count(e).trusted for e in events]


# ---------------------------------------------------------------------- per origin


def test_an_origin_is_over_past_its_units_in_the_hour_views_1_clicks_their_weight():
    volume = FeedbackVolume(FeedbackTrust(per_origin_hour=40, click_weight=10))
    flags = over(volume, [fb(T0 + i) for i in range(30)])  # 30 views: 30 units
    assert flags == [False] * 30
    assert over(volume, [fb(T0 + 40, click=True)]) == [False]  # 40: at the bound
    assert over(volume, [fb(T0 + 41)]) == [True]  # 41: over
    assert volume.count(fb(T0 + 42)) == Verdict(key_over=False, origin_over=True)
    # another network is counted on its own
    assert over(volume, [fb(T0 + 43, origin="198.51.100.0/24")]) == [False]


def test_the_window_slides_by_five_minute_buckets_of_server_time():
    volume = FeedbackVolume(FeedbackTrust(per_origin_hour=10))
    start = (T0 // BUCKET_SECONDS) * BUCKET_SECONDS  # the start of a bucket
    over(volume, [fb(start + i) for i in range(10)])  # the first bucket: 10, the bound
    assert over(volume, [fb(start + 55 * 60.0)]) == [True]  # 11 in the last hour
    # an hour after the first bucket began, it has left the window
    assert over(volume, [fb(start + 3_600.0 + i) for i in range(9)]) == [False] * 9
    assert over(volume, [fb(start + 3_600.0 + 10)]) == [True]  # 1 + 10 in the last hour
    # an event that claims an older time is counted now: counts never move back
    assert over(volume, [fb(start)]) == [True]
    # a long quiet time forgets everything
    assert over(volume, [fb(start + 10 * 3_600.0 + i) for i in range(10)]) == [False] * 10


def test_tracked_origins_are_bounded_least_recently_seen_forgotten_first():
    volume = FeedbackVolume(FeedbackTrust(per_origin_hour=2, origins_tracked=2))
    a, b, c = "203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"
    over(volume, [fb(T0, origin=a), fb(T0, origin=a), fb(T0, origin=b)])
    over(volume, [fb(T0 + 1, origin=b)])  # b now the most recently seen
    assert over(volume, [fb(T0 + 2, origin=c)]) == [False]  # a forgotten for c
    assert volume.tracked == (2, 0)
    # a forgotten origin starts from zero: never stricter than remembered
    assert over(volume, [fb(T0 + 3, origin=a), fb(T0 + 4, origin=a)]) == [False, False]
    assert over(volume, [fb(T0 + 5, origin=a)]) == [True]


def test_feedback_without_origin_or_key_is_not_counted():
    volume = FeedbackVolume(FeedbackTrust(per_origin_hour=1))
    assert over(volume, [fb(T0 + i, origin=None) for i in range(5)]) == [False] * 5
    assert volume.tracked == (0, 0)


# ---------------------------------------------------------------------- per key


def test_a_key_under_its_floor_is_never_over_past_it_only_when_surging():
    settings = FeedbackTrust(per_key_hour=100, key_surge=2.0)
    volume = FeedbackVolume(settings)
    k = "browser:0123456789ab"
    hour = (T0 // 3_600.0) * 3_600.0
    # a first hour of 90 units: under the floor
    assert not any(over(volume, [fb(hour + i, origin=None, key=k) for i in range(90)]))
    # then 24 hours at 150 units an hour: over the floor, the first hour past 100 is a surge
    # against a mean of 90 only beyond 180; steady traffic is never over
    flags: list[bool] = []
    for h in range(1, 25):
        flags += over(volume, [fb(hour + h * 3_600.0 + i, origin=None, key=k) for i in range(150)])
    assert not any(flags)
    # a flood of 4x: over once the sliding hour passes 2x the mean of the last day (~150)
    start = hour + 25 * 3_600.0
    flood = over(volume, [fb(start + i * 5.0, origin=None, key=k) for i in range(600)])
    assert not flood[0]
    assert flood.index(True) == 300  # the 301st unit of the hour: 2 x 150 passed
    assert all(flood[300:])


def test_a_flood_does_not_make_itself_the_norm():
    """An hour enters a key's mean at most at the level that would have been over."""
    volume = FeedbackVolume(FeedbackTrust(per_key_hour=10, key_surge=2.0))
    k = "write:0123456789ab"
    hour = (T0 // 3_600.0) * 3_600.0
    for h in range(3):  # 10 an hour: the floor
        over(volume, [fb(hour + h * 3_600.0 + i, origin=None, key=k) for i in range(10)])
    flagged = []
    for h in range(3, 6):  # then 1,000 an hour
        flags = over(volume, [fb(hour + h * 3_600.0 + i, origin=None, key=k) for i in range(1000)])
        flagged.append(sum(flags))
    # the mean grows by at most (surge - 1) / hours known of itself an hour: still a flood
    assert all(n > 900 for n in flagged)


# ---------------------------------------------------------------------- state


def _busy(volume: FeedbackVolume) -> list[bool]:
    events = [
        fb(
            T0 + i * 7.0,
            origin=f"203.0.{i % 7}.0/24",
            key=f"browser:{i % 3:012d}",
            click=i % 5 == 0,
        )
        for i in range(2_000)
    ]
    return over(volume, events)


def test_state_round_trips_and_the_same_events_give_the_same_bytes():
    settings = FeedbackTrust(per_origin_hour=200, per_key_hour=300, origins_tracked=5)
    a, b = FeedbackVolume(settings), FeedbackVolume(settings)
    flags = _busy(a)
    assert any(flags)
    assert not all(flags)
    assert _busy(b) == flags
    assert a.to_state() == b.to_state()
    resumed = FeedbackVolume.from_state(settings, a.to_state())
    assert resumed.to_state() == a.to_state()
    # the same next verdicts, from the resumed counts as from the live ones
    more = [
        fb(T0 + 20_000.0 + i, origin="203.0.3.0/24", key="browser:000000000001") for i in range(50)
    ]
    assert over(resumed, more) == over(a, more)
    assert FeedbackVolume.from_state(settings, b"").tracked == (0, 0)
    smaller = FeedbackVolume.from_state(
        FeedbackTrust(origins_tracked=2, keys_tracked=1), a.to_state()
    )
    assert smaller.tracked == (2, 1)


def test_bytes_per_tracked_origin():
    """About 320 bytes per origin as Python objects (the figure in ``learn.volume``)."""
    import tracemalloc

    volume = FeedbackVolume(FeedbackTrust(origins_tracked=20_000))
    events = [
        fb(T0, origin=f"{10 + i // 65_536}.{i // 256 % 256}.{i % 256}.0/24") for i in range(20_000)
    ]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for e in events:
        volume.count(e)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    names = sum(len(e.origin or "") + 49 for e in events)  # the names, kept by the events here
    per_origin = (grown + names) / 20_000
    assert 250 < per_origin < 600, per_origin


# ---------------------------------------------------------------------- origins, key ids


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        (" 203.0.113.77 ", "203.0.113.0/24"),
        ("2001:db8:1:2::99", "2001:db8:1::/48"),
        ("[2001:db8:1:2::99]", "2001:db8:1::/48"),
        ("fe80::1%eth0", None),
        ("::ffff:203.0.113.9", "203.0.113.0/24"),
        ("127.0.0.1", None),
        ("::1", None),
        ("10.1.2.3", None),
        ("172.20.0.1", None),
        ("192.168.1.1", None),
        ("100.64.3.4", None),
        ("fd00::1", None),
        ("0.0.0.0", None),
        ("224.0.0.1", None),
        ("not an address", None),
        ("", None),
        ("1" * 100, None),
    ],
)
def test_the_network_origin_of_an_address(address: str, network: str | None):
    assert network_origin(address) == network


def test_prefixes_are_settable():
    assert network_origin("203.0.113.77", 32, 64) == "203.0.113.77/32"
    assert network_origin("2001:db8:1:2::99", 32, 64) == "2001:db8:1:2::/64"


def test_a_key_id_names_its_kind_never_the_key():
    kid = key_id("browser", "pk_live_0123456789")
    assert kid.startswith("browser:")
    assert len(kid) == len("browser:") + 12
    assert "0123456789" not in kid
    assert key_id("browser", "pk_live_0123456789") == kid
    assert key_id("browser", "pk_live_0123456788") != kid


def _parsed(*messages: dict[str, Any]) -> list[Event]:
    from nextbest.events.parse import parse_batch

    return parse_batch(batch(*messages), T0)


def test_stamp_a_browser_cannot_say_where_it_is_a_server_relays_it():
    view = {
        "type": "track",
        "messageId": "v1",
        "anonymousId": "a",
        "event": "Promotion Viewed",
        "properties": {"promotion_id": "o", "decision_id": "d"},
        "context": {"ip": "198.51.100.4", "locale": "en"},
    }
    pv = {"type": "page", "messageId": "p1", "anonymousId": "a", "context": {"ip": "198.51.100.4"}}
    browser = Sender(KeyKind.BROWSER, key_id="browser:aaaaaaaaaaaa")
    events = _parsed(view, pv)
    stamp(events, browser, "203.0.113.0/24")
    assert [(e.key_id, e.origin) for e in events] == [
        ("browser:aaaaaaaaaaaa", "203.0.113.0/24"),
        (None, None),  # not feedback: nothing to count
    ]
    assert [e.context for e in events] == [{"locale": "en"}, {}]  # no address kept
    server = Sender(KeyKind.SERVER, key_id="server:bbbbbbbbbbbb")
    events = _parsed(view, pv)
    stamp(events, server, "203.0.113.0/24")
    assert (events[0].key_id, events[0].origin) == ("server:bbbbbbbbbbbb", "198.51.100.0/24")
    assert events[0].context["ip"] == "198.51.100.4"  # a relay's customer address, as sent
    events = _parsed({**view, "context": {}})
    stamp(events, server, None)
    assert events[0].origin is None


# ---------------------------------------------------------------------- in the engine


def _forged_round(engine: Engine, clock: FixedClock, n: int, at: float) -> None:
    """Known customers with history, each deciding and then viewing and clicking its first
    item, all from one network as the HTTP face would stamp it."""
    sender = Sender(KeyKind.BROWSER, key_id="browser:cccccccccccc")
    for i in range(n):
        user = f"crowd-{at}-{i}"
        clock.set(at + i)
        history = [identify({"age": 30}, user=user, at=at + i)]
        history += [page("https://bank.example/travel", user=user, at=at + i) for _ in range(5)]
        engine.ingest_batch(batch(*history))
        d = engine.decide(FEED, user_id=user)
        events = engine.parse_batch(
            batch(
                feedback(d, "Promotion Viewed", at=at + i),
                feedback(d, "Promotion Clicked", at=at + i),
            )
        )
        stamp(events, sender, "203.0.113.0/24")
        engine.ingest(events)


def test_an_engine_learns_within_the_bound_and_replays_and_restarts_exactly(
    make_engine: Callable[..., Engine], clock: FixedClock, tmp_path: Path
):
    path = tmp_path / "volume.sqlite"
    engine = make_engine("sqlite", path)
    bound = engine.catalog.spec.profile.feedback
    per_pair = 1 + bound.click_weight
    _forged_round(engine, clock, 20, T0)
    learned = engine.learner.learned
    assert learned == bound.per_origin_hour // per_pair  # then the network is over
    engine.flush()
    engine.snapshot()  # a snapshot midway: the counts are in it
    _forged_round(engine, clock, 5, T0 + 600.0)  # still within the hour: nothing more
    assert engine.learner.learned == learned
    _forged_round(engine, clock, 5, T0 + 2 * 3_600.0)  # a new hour: the network teaches again
    # five clicks, and the miss of the last view the bound let through (its click was not)
    assert engine.learner.learned == learned + 5 + 1
    engine.flush()
    live = engine.model_state()
    assert engine.replay().models_identical

    survivor = make_engine("sqlite", path)  # no close: the snapshot plus the log's tail
    restored = survivor.model_state()
    assert msgspec.msgpack.decode(restored) == msgspec.msgpack.decode(live)
    assert restored == live
