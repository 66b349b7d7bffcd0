"""Feedback volume per key and per network origin: the counters behind the trust rule
"anomalous volume is stored, not learned" (``learn.trust``). Pure: event times drive it.

Every feedback event that came through the HTTP face carries the fingerprint of the key that
sent it and its sender's network origin (``Event.key_id``, ``Event.origin``: written by the
server, kept in the log). ``FeedbackVolume.count`` counts each such event, trusted or not,
and says whether its key and its origin are within bounds.

**Units.** A view or a dismissal counts 1, a click ``click_weight`` (default 30): what each
can teach. A click is learned as a 1 and moves a logistic model by about ``1 - p``; a view
that gets no click, or a dismissal, is learned as a 0 and moves it by about ``p``, the click
rate, some 0.01-0.05 for banners. So one forged click steers the model about as far as 30
forged misses, and an honest visitor, who sees many banners and clicks few, spends little:
an hour on a bank's site (about ten pages with two or three learning placements each, some
30 views and a click) is about 60 units.

- **Per network origin**: at most ``per_origin_hour`` units (default 300) in the last hour
  from one origin (an IPv4 ``/24``, an IPv6 ``/48``: ``guard.origin``): five such visitors
  from one block of addresses in one hour, more than a household or a small office sends.
  A bot farm forging a positive per made-up device (a view and a click: 31 units) gets at
  most 9 clicks an hour taught from a block, however many devices it makes up (the issue's
  attack made 300); enough to move a fresh model's estimates by well under a point, not to
  reorder anyone's offers (``tests/http/test_forged_feedback.py``). A big corporate NAT or a
  carrier-grade NAT can pass the bound honestly: its feedback past it is then only not
  learned for the rest of the hour (its customers' decisions, profiles and caps are
  untouched), a small loss against letting one network steer what every customer is shown.
  Where much of the traffic comes through such networks, raise the bound, or record origins
  per address (``NEXTBEST_ORIGIN_PREFIX_V4=32``).
- **Per key**: relative, since a browser key is shared by every visitor of the bank's pages
  and its honest volume is the bank's whole traffic. A key is over when its units in the
  last hour are above both ``per_key_hour`` (default 100,000, about 1,700 visitor-hours: a
  floor under which no key is ever over, so a quiet or new key is judged by the other rules)
  and ``key_surge`` (default 4) times its mean hourly units over the previous 24 clock hours
  (the hours since it was first seen, up to 24): a sudden flood of several times a key's
  usual volume, as a leaked server key or a bot net of many origins would send, teaches
  nothing while it lasts; a daily peak (commonly 2-3x the day's mean) does not reach it. An
  hour enters the mean at most at the level that would have been over, so a flood does not
  make itself the norm: the mean can grow by at most ``(key_surge - 1) / 24`` of itself an
  hour. A key over its bound stops *all* its feedback from teaching (a bank's one browser
  key: every page's), which is the point: the models keep what they knew until the flood
  ends.

**Windows.** Counts are kept in 5-minute buckets by the time the server received each event
(``received_at``: a client's own clock cannot spread its events out; on a server on event
time each event's own time), so "the last hour" is the current bucket and the 11 before it
(55-60 minutes). An event older than the newest counted falls in the newest bucket: counts
never move backwards.

**Bounded.** At most ``origins_tracked`` origins (default 50,000) and ``keys_tracked`` keys
(default 1,000; only configured keys reach it) are tracked; the least recently seen is
forgotten first, and a forgotten one starts from zero (never stricter). About 320 bytes per
tracked origin as Python objects (its name included; BENCHMARKS.md), ~16 MB at the default
cap, and ~35 bytes each in the learner's snapshot, which holds all of it: a restart resumes
the same counts, and a replay of the log rebuilds them exactly (same events, same order,
same times).
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from nextbest.catalog.model import FeedbackTrust
from nextbest.events.model import Event
from nextbest.events.names import EventName

__all__ = ["BUCKETS", "BUCKET_SECONDS", "HOURS", "WITHIN", "FeedbackVolume", "Verdict"]

#: width of a bucket, buckets in the sliding hour, clock hours in a key's baseline
BUCKET_SECONDS = 300.0
BUCKETS = 12
HOURS = 24
#: a window: [newest bucket, total of the live buckets, bucket counts (BUCKETS of them)]
_Window = list[int]
#: a key's baseline: [clock hour, its count so far, hours known, closed hours (HOURS)]
_Baseline = list[float]


class Verdict(NamedTuple):
    """What ``FeedbackVolume.count`` found: the key's and the origin's volume is anomalous."""

    key_over: bool = False
    origin_over: bool = False

    @property
    def trusted(self) -> bool:
        return not (self.key_over or self.origin_over)


#: a verdict with nothing over its bound
WITHIN = Verdict()


class _State(msgspec.Struct, array_like=True):
    """``FeedbackVolume`` as bytes, least recently seen first (eviction order kept)."""

    origins: list[tuple[str, list[int]]]
    keys: list[tuple[str, list[int], list[float]]]


def _new_window(bucket: int) -> _Window:
    return [bucket, 0, *([0] * BUCKETS)]


def _add(window: _Window, bucket: int, units: int) -> int:
    """Count ``units`` in ``bucket`` (or in the newest, if older); the hour's new total."""
    newest = window[0]
    if bucket > newest:
        if bucket - newest >= BUCKETS:
            window[1:] = [0] * (BUCKETS + 1)
        else:
            total = window[1]
            for b in range(newest + 1, bucket + 1):
                slot = 2 + b % BUCKETS
                total -= window[slot]
                window[slot] = 0
            window[1] = total
        window[0] = newest = bucket
    window[2 + newest % BUCKETS] += units
    window[1] += units
    return window[1]


class FeedbackVolume:
    """Sliding per-hour feedback counts per network origin and per key (module docstring)."""

    def __init__(self, settings: FeedbackTrust) -> None:
        self.settings = settings
        #: origin -> window, least recently seen first
        self._origins: dict[str, _Window] = {}
        #: key id -> (window, baseline), least recently seen first
        self._keys: dict[str, tuple[_Window, _Baseline]] = {}

    @property
    def tracked(self) -> tuple[int, int]:
        """(origins, keys) tracked now."""
        return len(self._origins), len(self._keys)

    def count(self, event: Event) -> Verdict:
        """Count ``event`` (feedback: its units) for its key and its origin; whether either
        is now over its bound. An event without either (sent in process, or from the bank's own
        networks) is counted for what it has."""
        key, origin = event.key_id, event.origin
        if key is None and origin is None:
            return WITHIN
        bucket = int(event.received_at // BUCKET_SECONDS)
        s = self.settings
        units = s.click_weight if event.name == EventName.PROMOTION_CLICKED else 1
        origin_over = False
        if origin is not None:
            origins = self._origins
            window = origins.pop(origin, None)
            if window is None:
                window = _new_window(bucket)
                if len(origins) >= s.origins_tracked:
                    del origins[next(iter(origins))]  # the least recently seen
            origins[origin] = window  # now the most recently seen
            origin_over = _add(window, bucket, units) > s.per_origin_hour
        key_over = False
        if key is not None:
            keys = self._keys
            entry = keys.pop(key, None)
            if entry is None:
                entry = (_new_window(bucket), [float(event.received_at // 3600.0), 0.0, 0.0])
                entry[1].extend([0.0] * HOURS)
                if len(keys) >= s.keys_tracked:
                    del keys[next(iter(keys))]
            keys[key] = entry
            window, baseline = entry
            hourly = self._close_hours(baseline, event.received_at)
            in_hour = _add(window, bucket, units)
            baseline[1] += units
            key_over = in_hour > max(s.per_key_hour, s.key_surge * hourly)
        return Verdict(key_over, origin_over) if key_over or origin_over else WITHIN

    def _close_hours(self, baseline: _Baseline, at: float) -> float:
        """Close the clock hours ended before ``at`` into ``baseline``; its mean hourly
        count over the hours known (the previous ``HOURS`` at most)."""
        hour = at // 3600.0
        known = baseline[2]
        if hour > baseline[0]:
            s = self.settings
            mean = sum(baseline[3:]) / known if known else 0.0
            # an hour counts at most at the level that would have been over
            closed = min(baseline[1], max(float(s.per_key_hour), s.key_surge * mean))
            gap = int(hour - baseline[0])
            for h in range(min(gap, HOURS)):  # the hours since, empty; then the one closed
                baseline[3 + (int(baseline[0]) + h) % HOURS] = 0.0
            if gap <= HOURS:
                baseline[3 + int(baseline[0]) % HOURS] = closed
            known = baseline[2] = min(float(HOURS), known + gap)
            baseline[0], baseline[1] = hour, 0.0
        return sum(baseline[3:]) / known if known else 0.0

    def to_state(self) -> bytes:
        """Deterministic bytes: every tracked origin and key, in eviction order."""
        state = _State(
            origins=list(self._origins.items()),
            keys=[(k, w, b) for k, (w, b) in self._keys.items()],
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_state(cls, settings: FeedbackTrust, data: bytes) -> FeedbackVolume:
        """Counts resumed from ``to_state`` bytes (empty bytes: none), under ``settings``
        (a reload's new bounds; the most recently seen kept if the caps shrank)."""
        volume = cls(settings)
        if not data:
            return volume
        state = msgspec.msgpack.decode(data, type=_State)
        for origin, window in state.origins[-settings.origins_tracked :]:
            volume._origins[origin] = window
        for key, window, baseline in state.keys[-settings.keys_tracked :]:
            volume._keys[key] = (window, baseline)
        return volume
