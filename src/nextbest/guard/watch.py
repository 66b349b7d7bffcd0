"""The identity-theft guard's fold: each event of a known customer from a device updates the
session being watched and its risk; a session that ends unflagged teaches the baseline.
Pure: the event's own time, no clock.

**What is watched.** Events of a profile with a userId (an anonymous visitor has nothing to
take over) that carry an anonymousId (a device): page and screen views, track events other
than feedback on what nextbest showed (``Promotion Viewed`` ...), identify (a login: it
brings the device, agent and place, but is not a step). Server-side events (core banking,
no anonymousId) are not the customer at a device and are not watched.

**Sessions.** The guard's session ends after the catalog's ``session_timeout_minutes`` of
quiet, as the profile's does, but counts only watched events. An event from before the
session's start by more than the timeout (a device's old events folded at a login) is not
part of it and is skipped.

**What a session brings** (``profile.baseline``): its devices (anonymousId), agents
(``agent_of``: browser and operating system from ``context.userAgent``, or the app's
operating system and device model from ``context.os`` / ``context.device``, with
``context.locale``), places (``place_of``: ``context.location.country``, else
``context.timezone``), the sensitive kinds it visited (the catalog's URL patterns over the
page path, or event names) and its pace. The risk is ``guard.score.assess`` after every
watched event; the session keeps its highest. When it first reaches the catalog's
``threshold`` the session is flagged, at that step and time.

**Learning.** When a session ends (the next watched event starts another), its devices,
agents and places join the baseline (the most recent last, ``MAX_KNOWN`` kept), its hour
and pace are counted, and so are its sensitive kinds; unless it was flagged: a flagged
session teaches the baseline nothing, so a fraudster's device never becomes usual by use.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from nextbest.events.model import Event, EventType
from nextbest.events.names import EventName
from nextbest.guard.score import assess, pace_counts, pace_of
from nextbest.profile.baseline import (
    MAX_KNOWN,
    MAX_PACES,
    MAX_SESSION_KNOWN,
    PACE_UNIT,
    Baseline,
    GuardState,
    SessionWatch,
)
from nextbest.profile.model import Profile

__all__ = ["Guard", "SensitiveKind", "agent_of", "learn", "place_of", "watches"]

#: the longest text kept of an agent part, a place, a locale
_MAX_TEXT = 64
_FEEDBACK = frozenset(
    {EventName.PROMOTION_VIEWED, EventName.PROMOTION_CLICKED, EventName.PROMOTION_DISMISSED}
)
_WATCHED = frozenset({EventType.PAGE, EventType.SCREEN, EventType.TRACK, EventType.IDENTIFY})
#: URLs whose sensitive kind a guard remembers
_URL_CACHE = 4096

#: (pattern, name): the first that matches a user agent names its browser, then its system
_BROWSERS = tuple(
    (re.compile(p), name)
    for p, name in (
        (r"Edg(e|A|iOS)?/", "Edge"),
        (r"OPR/|Opera", "Opera"),
        (r"SamsungBrowser/", "Samsung"),
        (r"Firefox/|FxiOS/", "Firefox"),
        (r"Chrome/|CriOS/", "Chrome"),
        (r"Safari/", "Safari"),
    )
)
_SYSTEMS = tuple(
    (re.compile(p), name)
    for p, name in (
        (r"Windows", "Windows"),
        (r"iPhone|iPad|iPod|iOS", "iOS"),
        (r"Android", "Android"),
        (r"CrOS", "ChromeOS"),
        (r"Macintosh|Mac OS X", "macOS"),
        (r"Linux", "Linux"),
    )
)


def _first(rules: tuple[tuple[re.Pattern[str], str], ...], text: str) -> str:
    for rx, name in rules:
        if rx.search(text):
            return name
    return "other"


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:_MAX_TEXT]
    return None


@functools.lru_cache(maxsize=4096)
def _browser_family(ua: str) -> str:
    """``Chrome/Windows`` (user agents repeat: each is read once)."""
    return f"{_first(_BROWSERS, ua)}/{_first(_SYSTEMS, ua)}"


def agent_of(context: Mapping[str, Any]) -> str | None:
    """The agent family of an event's ``context``: ``Chrome/Windows``, ``app/iOS/iPhone14,2``
    (an app: ``context.app`` with ``context.os.name`` and ``context.device.model``), then the
    locale (``Chrome/Windows da-DK``); None when the client said nothing of it."""
    app, ua = context.get("app"), context.get("userAgent")
    if isinstance(app, dict):
        os_ = context.get("os")
        device = context.get("device")
        system = _text(os_.get("name")) if isinstance(os_, dict) else None
        model = _text(device.get("model")) if isinstance(device, dict) else None
        family = f"app/{system or 'other'}/{model or 'other'}"
    elif isinstance(ua, str) and ua:
        family = _browser_family(ua[:512])
    else:
        return None
    locale = _text(context.get("locale"))
    return f"{family} {locale}" if locale else family


def place_of(context: Mapping[str, Any]) -> str | None:
    """Where an event came from, as its ``context`` says: ``country:DK`` from
    ``context.location.country`` (the bank's edge may put the caller's country there), else
    ``tz:Europe/Copenhagen`` from ``context.timezone``; None when it says neither."""
    location = context.get("location")
    if isinstance(location, dict):
        country = _text(location.get("country"))
        if country:
            return "country:" + country.upper()
    zone = _text(context.get("timezone"))
    return "tz:" + zone if zone else None


def _with(values: tuple[str, ...], value: str) -> tuple[str, ...] | None:
    """``values`` with ``value`` added, if it is new and there is room; None otherwise."""
    if value in values or len(values) >= MAX_SESSION_KNOWN:
        return None
    return (*values, value)


def _remember(known: tuple[str, ...], values: tuple[str, ...]) -> tuple[str, ...]:
    """``known`` with ``values`` the most recent (at most ``MAX_KNOWN`` kept)."""
    if not values:
        return known
    kept = tuple(v for v in known if v not in values) + values
    return kept[-MAX_KNOWN:]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class SensitiveKind:
    """One kind of sensitive page or event (``payee``): page paths matching its URL patterns
    (globs, as a topic's: ``topics.py``), or track events of its names."""

    __slots__ = ("events", "kind", "url_patterns", "urls")

    def __init__(self, kind: str, url_patterns: Sequence[str], events: Sequence[str]) -> None:
        self.kind = kind
        self.url_patterns = tuple(url_patterns)
        self.events = frozenset(events)
        self.urls = tuple(re.compile(fnmatch.translate(p.lower())) for p in url_patterns)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SensitiveKind):
            return NotImplemented
        return (self.kind, self.url_patterns, self.events) == (
            other.kind,
            other.url_patterns,
            other.events,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.url_patterns, self.events))


class Guard:
    """The guard of one catalog: its sensitive kinds and knobs, and ``observe``, the fold
    (``profile.fold.Watcher``). Equal when its settings are (``folds_alike``)."""

    __slots__ = (
        "_kinds",
        "alert_destination",
        "alerts",
        "min_sessions",
        "sensitive",
        "threshold",
        "timeout",
    )

    def __init__(
        self,
        sensitive: Sequence[SensitiveKind],
        *,
        threshold: float,
        session_timeout: float,
        min_sessions: int = 3,
        alerts: bool = True,
        alert_destination: str = "fraud",
    ) -> None:
        self.sensitive = tuple(sensitive)
        self.threshold = threshold
        self.timeout = session_timeout
        self.min_sessions = min_sessions
        self.alerts = alerts
        self.alert_destination = alert_destination
        #: URL -> its sensitive kind (pages repeat: each URL is matched once), bounded
        self._kinds: dict[str, str | None] = {}

    def _key(self) -> tuple[object, ...]:
        return (self.sensitive, self.threshold, self.timeout, self.min_sessions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Guard):
            return NotImplemented
        # what the fold reads; where alerts go changes no profile
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def sensitive_kind(self, event: Event) -> str | None:
        """The first sensitive kind ``event`` is of, if any."""
        if event.type is EventType.TRACK:
            name = event.name
            for kind in self.sensitive:
                if name in kind.events:
                    return kind.kind
            return None
        if event.type is EventType.PAGE or event.type is EventType.SCREEN:
            url = event.url
            if not url:
                return None
            if url in self._kinds:
                return self._kinds[url]
            found = self._kind_of_path((urlsplit(url).path or "/").lower())
            if len(self._kinds) >= _URL_CACHE:
                self._kinds.clear()
            self._kinds[url] = found
            return found
        return None

    def _kind_of_path(self, path: str) -> str | None:
        for kind in self.sensitive:
            for rx in kind.urls:
                if rx.match(path):
                    return kind.kind
        return None

    def observe(self, profile: Profile, event: Event) -> None:
        """Fold ``event`` into ``profile.guard`` (module docstring)."""
        if not watches(profile, event):
            return
        device = event.anonymous_id
        assert device is not None
        state = profile.guard
        if state is None:
            state = profile.guard = GuardState()
        when = event.timestamp
        s = state.session
        if s is None or when - s.last_seen > self.timeout:
            if s is not None:
                learn(state.baseline, s)
            s = state.session = SessionWatch(
                started=when, last_seen=when, expires=when + self.timeout
            )
        elif when < s.started - self.timeout:
            return  # long before this session: not part of it
        elif when > s.last_seen:
            s.last_seen = when
            s.expires = when + self.timeout
        context = event.context
        grew = False
        if (more := _with(s.devices, device)) is not None:
            s.devices, grew = more, True
        agent = agent_of(context) if context else None
        if agent and (more := _with(s.agents, agent)) is not None:
            s.agents, grew = more, True
        place = place_of(context) if context else None
        if place and (more := _with(s.places, place)) is not None:
            s.places, grew = more, True
        if event.type is not EventType.IDENTIFY:
            s.steps += 1
            kind = self.sensitive_kind(event) if self.sensitive else None
            if kind is not None and kind not in s.kinds:
                s.kinds = (*s.kinds, kind)
                grew = True
                if not s.first_sensitive:
                    s.first_sensitive = s.steps
        # the risk changes only with what the session brought and its pace: when neither
        # moved it, it is below the session's highest already (``guard.score``)
        b = state.baseline
        if grew or (s.steps >= 3 and len(b.paces) >= 3 and pace_counts(b, s)):
            risk, signals = assess(b, s, self.min_sessions)
            if risk > s.risk:
                s.risk, s.signals = risk, signals
        if not s.flagged_step and s.risk >= self.threshold:
            s.flagged_step = max(s.steps, 1)
            s.flagged_at = when


def watches(profile: Profile, event: Event) -> bool:
    """The guard watches ``event`` for ``profile``: a known customer, from a device, a page,
    screen, track (not feedback) or identify (module docstring)."""
    if profile.user_id is None or not event.anonymous_id or event.type not in _WATCHED:
        return False
    return not (event.type is EventType.TRACK and event.name in _FEEDBACK)


def learn(b: Baseline, s: SessionWatch) -> None:
    """What an ended session teaches the baseline: nothing if it was flagged."""
    if s.flagged:
        return
    if b.sessions:  # the first session's everything is new: not counted
        b.new_devices += any(d not in b.devices for d in s.devices)
        b.new_agents += bool(s.agents and b.agents) and any(a not in b.agents for a in s.agents)
        b.new_places += bool(s.places and b.places) and any(p not in b.places for p in s.places)
    b.sessions += 1
    b.devices = _remember(b.devices, s.devices)
    b.agents = _remember(b.agents, s.agents)
    b.places = _remember(b.places, s.places)
    hours = list(b.hours or (0,) * 24)
    hours[int(s.started // 3600) % 24] += 1
    b.hours = tuple(hours)
    pace = pace_of(s)
    if pace is not None and math.isfinite(pace):
        b.paces = (*b.paces, round(pace * PACE_UNIT))[-MAX_PACES:]
        paces = [p / PACE_UNIT for p in b.paces]
        b.pace_median = _median(paces)
        b.pace_mad = _median([abs(p - b.pace_median) for p in paces])
    for kind in s.kinds:
        b.sensitive[kind] = b.sensitive.get(kind, 0) + 1
