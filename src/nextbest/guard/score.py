"""How likely a session is someone else than the customer: robust per-customer statistics,
each signal a likelihood ratio a person can read. Pure.

The risk is a posterior probability under a small naive-Bayes model: the prior odds that a
session is an account takeover (``PRIOR_ODDS``, 1 in 1000), times, for each signal, how much
more often it shows in a takeover than in *this customer's* own sessions:

    odds = PRIOR_ODDS x LR(device) x LR(agent) x LR(place) x LR(hour) x LR(pace)
                       x LR(each sensitive kind) x LR(straight to sensitive)
    risk = odds / (1 + odds)

- **device, agent, place** (known from the first event): P(new | takeover) is
  ``P_NEW_DEVICE`` 0.95 (a fraudster logs in from their own machine), ``P_NEW_AGENT`` 0.6
  (some fake a common browser), ``P_NEW_PLACE`` 0.6 (some fraudsters are in the victim's
  country). P(new | customer) is how often this customer's own learned sessions brought a new
  one, shrunk towards a prior rate (``DEVICE_PRIOR`` 10 %, ``AGENT_PRIOR`` 10 %,
  ``PLACE_PRIOR`` 5 %) by a Beta prior: a customer who often uses a new browser counts a new
  one less. A signal *absent* counts too: the customer's own device is evidence for them
  (LR = 0.05 / (1 - rate)). An agent or place the client did not send is no evidence.
- **hour**: the session's starting UTC hour and its neighbours in the customer's learned
  sessions against a takeover's flat 3 hours in 24, with half a session of prior per hour;
  bounded to [1/4, 8].
- **pace** (once the session has three steps and the customer three learned paces): log
  pages a minute against the customer's median, in robust units (1.4826 x the median
  absolute deviation, at least 0.3): above 2 such units, exp(units - 2), at most e^2.5.
  Only faster counts.
- **sensitive kinds** (payee, limit, contact details ...: the catalog's ``security``): each
  kind visited, P(kind | takeover) ``P_SENSITIVE`` 0.6 against how often this customer's
  learned sessions visited it (half a session of prior in five); and x3 when the first one
  came within ``STRAIGHT_STEPS`` steps of the session's start.

No baseline, no judgement: with fewer than the catalog's ``min_sessions`` learned sessions
the risk is 0 (a new customer's every device is new).

``novelty`` gives the same findings as plain numbers in [0, 1] (new device, new agent, new
place, hour rarity, pace, sensitive rarity, straight), for a detector that learns what is
usual across customers (``bench/guard.py`` holds river's Half-Space Trees to them).
"""

from __future__ import annotations

import math

from nextbest.profile.baseline import Baseline, SessionWatch, Signal

__all__ = [
    "AGENT_PRIOR",
    "DEVICE_PRIOR",
    "NOVELTY_FEATURES",
    "PLACE_PRIOR",
    "PRIOR_ODDS",
    "P_NEW_AGENT",
    "P_NEW_DEVICE",
    "P_NEW_PLACE",
    "P_SENSITIVE",
    "STRAIGHT_STEPS",
    "assess",
    "novelty",
    "pace_counts",
    "pace_of",
]

#: the prior odds that a session is an account takeover
PRIOR_ODDS = 1 / 1000
_PRIOR = math.log(PRIOR_ODDS)
#: P(signal | takeover)
P_NEW_DEVICE = 0.95
P_NEW_AGENT = 0.6
P_NEW_PLACE = 0.6
P_SENSITIVE = 0.6
#: (a, b) of the Beta prior on a customer's own rate of new devices, agents, places
DEVICE_PRIOR = (1.0, 9.0)
AGENT_PRIOR = (1.0, 9.0)
PLACE_PRIOR = (1.0, 19.0)
_DEVICE_A, _DEVICE_AB = DEVICE_PRIOR[0], sum(DEVICE_PRIOR)
_AGENT_A, _AGENT_AB = AGENT_PRIOR[0], sum(AGENT_PRIOR)
_PLACE_A, _PLACE_AB = PLACE_PRIOR[0], sum(PLACE_PRIOR)
#: a sensitive page within this many steps of a session's start is "straight to" it
STRAIGHT_STEPS = 3
_STRAIGHT = math.log(3.0)
#: the hour: a takeover's chance of the session's 3-hour window, the prior per hour, bounds
_HOUR_FRAUD = 3 / 24
_HOUR_PRIOR = 0.5
_HOUR_LOW, _HOUR_HIGH = math.log(0.25), math.log(8.0)
#: the pace: robust units from the median past which it counts, the most it adds, the least
#: spread
_PACE_FROM = 2.0
_PACE_MOST = 2.5
_PACE_SPREAD = 0.3
#: the sensitive kinds' prior: half a session in five
_KIND_PRIOR = (0.5, 5.0)
#: a finding counts as a signal (is named) from this likelihood ratio on
_NAMED = math.log(2.0)
#: the shortest span a pace is measured over (seconds)
_MIN_SPAN = 10.0

NOVELTY_FEATURES = (
    "new_device",
    "new_agent",
    "new_place",
    "hour_rarity",
    "pace",
    "sensitive_rarity",
    "straight",
)


def _new(seen: tuple[str, ...], known: tuple[str, ...]) -> bool:
    return any(v not in known for v in seen)


def _place_is_new(places: tuple[str, ...], known: tuple[str, ...]) -> bool | None:
    """A place of the session in a kind (``country:``, ``tz:``) the baseline knows and not
    among them; None when no place of the session is of a kind the baseline knows."""
    judged = None
    for place in places:
        kind = place.partition(":")[0] + ":"
        if any(k.startswith(kind) for k in known):
            if place not in known:
                return True
            judged = False
    return judged


def _hour_window(b: Baseline, started: float) -> float:
    """P(the session's 3-hour window) under the customer's learned hours (with the prior)."""
    hour = int(started // 3600) % 24
    hours = b.hours
    seen = hours[hour - 1] + hours[hour] + hours[(hour + 1) % 24] if hours else 0
    return (seen + 3 * _HOUR_PRIOR) / (b.sessions + 24 * _HOUR_PRIOR)


def pace_of(s: SessionWatch) -> float | None:
    """log(pages a minute) of a session of at least three steps."""
    if s.steps < 3:
        return None
    span = max(s.last_seen - s.started, _MIN_SPAN)
    return math.log((s.steps - 1) / (span / 60.0))


def _pace_units(b: Baseline, s: SessionWatch) -> float | None:
    """How many robust units faster than usual the session goes (None: not judged)."""
    if len(b.paces) < 3:
        return None
    pace = pace_of(s)
    if pace is None:
        return None
    return (pace - b.pace_median) / max(1.4826 * b.pace_mad, _PACE_SPREAD)


def pace_counts(b: Baseline, s: SessionWatch) -> bool:
    """The session's pace adds to its risk now (faster than the customer's usual)."""
    units = _pace_units(b, s)
    return units is not None and units > _PACE_FROM


def _kind_rate(b: Baseline, kind: str) -> float:
    a, prior = _KIND_PRIOR
    return (b.sensitive.get(kind, 0) + a) / (b.sessions + prior)


def assess(b: Baseline, s: SessionWatch, min_sessions: int) -> tuple[float, tuple[Signal, ...]]:
    """The session's risk now (0-1) and the signals behind it (module docstring). Written out
    term by term: it runs on the fold's path, at every step that can move the risk."""
    n = b.sessions
    if n < min_sessions:
        return 0.0, ()
    log = math.log
    signals: list[Signal] = []
    since = max(n - 1, 0)  # learned sessions that could bring something new
    known = b.devices
    rate = (b.new_devices + _DEVICE_A) / (since + _DEVICE_AB)
    if any(d not in known for d in s.devices):
        w = log(P_NEW_DEVICE / rate)
        if w >= _NAMED:
            signals.append(Signal.NEW_DEVICE)
    else:
        w = log((1.0 - P_NEW_DEVICE) / (1.0 - rate))
    total = _PRIOR + w
    if s.agents and b.agents:
        known = b.agents
        rate = (b.new_agents + _AGENT_A) / (since + _AGENT_AB)
        if any(a not in known for a in s.agents):
            w = log(P_NEW_AGENT / rate)
            if w >= _NAMED:
                signals.append(Signal.NEW_AGENT)
        else:
            w = log((1.0 - P_NEW_AGENT) / (1.0 - rate))
        total += w
    if s.places and b.places:
        new_place = _place_is_new(s.places, b.places)
        if new_place is not None:
            rate = (b.new_places + _PLACE_A) / (since + _PLACE_AB)
            if new_place:
                w = log(P_NEW_PLACE / rate)
                if w >= _NAMED:
                    signals.append(Signal.NEW_PLACE)
            else:
                w = log((1.0 - P_NEW_PLACE) / (1.0 - rate))
            total += w
    w = min(max(log(_HOUR_FRAUD / _hour_window(b, s.started)), _HOUR_LOW), _HOUR_HIGH)
    total += w
    if w >= _NAMED:
        signals.append(Signal.ODD_HOUR)
    if s.steps >= 3 and len(b.paces) >= 3:
        units = _pace_units(b, s)
        if units is not None and units > _PACE_FROM:
            w = min(units - _PACE_FROM, _PACE_MOST)
            total += w
            if w >= _NAMED:
                signals.append(Signal.FAST_PACE)
    if s.kinds:
        a, prior = _KIND_PRIOR
        for kind in s.kinds:
            w = log(P_SENSITIVE * (n + prior) / (b.sensitive.get(kind, 0) + a))
            total += w
            if w >= _NAMED and Signal.SENSITIVE not in signals:
                signals.append(Signal.SENSITIVE)
        if 0 < s.first_sensitive <= STRAIGHT_STEPS:
            total += _STRAIGHT
            signals.append(Signal.STRAIGHT_TO_SENSITIVE)
    if total > 30.0:
        return 1.0, tuple(signals)
    odds = math.exp(total)
    return odds / (1.0 + odds), tuple(signals)


def novelty(b: Baseline, s: SessionWatch) -> dict[str, float]:
    """The session's findings as numbers in [0, 1] (``NOVELTY_FEATURES``), without the
    customer's rates or the model's weights: what a detector learning across customers
    reads."""
    hour_p = _hour_window(b, s.started) if b.sessions else _HOUR_FRAUD
    units = _pace_units(b, s)
    kinds = [1.0 - min(1.0, _kind_rate(b, k)) for k in s.kinds]
    return {
        "new_device": float(bool(b.devices) and _new(s.devices, b.devices)),
        "new_agent": float(bool(s.agents and b.agents) and _new(s.agents, b.agents)),
        "new_place": float(_place_is_new(s.places, b.places) is True),
        "hour_rarity": max(0.0, 1.0 - hour_p / _HOUR_FRAUD),
        "pace": 0.0 if units is None else min(max(units / 6.0, 0.0), 1.0),
        "sensitive_rarity": max(kinds, default=0.0),
        "straight": float(0 < s.first_sensitive <= STRAIGHT_STEPS),
    }
