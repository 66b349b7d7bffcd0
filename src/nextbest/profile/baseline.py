"""What the identity-theft guard keeps per customer: a behavioural baseline and the session it
is watching. Data only: ``guard.watch`` folds events into it, ``guard.score`` judges a
session against it. It lives in the profile (``Profile.guard``), so a snapshot saves it, a
replay folds it again from the same events, and erasing the profile erases it.

Bounded, whatever a customer (or a client) sends: ``MAX_KNOWN`` devices, agents and places
(the least recently seen forgotten first), 24 hour counts, ``MAX_PACES`` paces, one count
per sensitive kind of the catalog, and a session of at most ``MAX_SESSION_KNOWN`` of each.
Compact on the wire (``array_like``: no field names, paces as integers), as every known
customer carries one: about 290 bytes (BENCHMARKS.md, "Identity-theft guard"). A field is
added at the end, with a default. Sequences are tuples, replaced when they change: the
cyclic garbage collector stops tracking a tuple of strings or numbers, as it never stops
tracking a list, so a million baselines add nothing to its walks.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "MAX_KNOWN",
    "MAX_PACES",
    "MAX_SESSION_KNOWN",
    "PACE_UNIT",
    "Baseline",
    "GuardState",
    "SessionWatch",
    "Signal",
]

#: devices, agents and places a baseline remembers (each list, the most recent last)
MAX_KNOWN = 8
#: paces (pages a minute) of the last sessions a baseline remembers
MAX_PACES = 16
#: new devices, agents and places one session remembers
MAX_SESSION_KNOWN = 4
#: a baseline's paces are kept in hundredths of log(pages a minute)
PACE_UNIT = 100


class Signal(enum.StrEnum):
    """What the guard found in a session (its reasons, in an alert and in ``security``)."""

    #: an anonymousId the customer's baseline does not hold
    NEW_DEVICE = "new_device"
    #: a browser / operating system / app model / language the customer never used
    NEW_AGENT = "new_agent"
    #: a country (``context.location.country``) or time zone the customer never came from
    NEW_PLACE = "new_place"
    #: an hour of the day at which the customer is rarely seen
    ODD_HOUR = "odd_hour"
    #: pages a minute well above the customer's usual pace
    FAST_PACE = "fast_pace"
    #: a sensitive page or event (payee, limit, contact details ...) the customer rarely visits
    SENSITIVE = "sensitive"
    #: the session went to a sensitive page within its first steps
    STRAIGHT_TO_SENSITIVE = "straight_to_sensitive"


class Baseline(msgspec.Struct, kw_only=True, gc=False, array_like=True):
    """How the customer usually comes: learned from their past sessions that the guard did
    not flag (a flagged session teaches it nothing)."""

    #: sessions learned
    sessions: int = 0
    #: anonymousIds seen, the most recently seen last
    devices: tuple[str, ...] = ()
    #: agent families seen (``guard.watch.agent_of``), the most recently seen last
    agents: tuple[str, ...] = ()
    #: places seen, ``country:DK`` or ``tz:Europe/Copenhagen``, the most recently seen last
    places: tuple[str, ...] = ()
    #: learned sessions (after the first) that brought a new device, agent, place
    new_devices: int = 0
    new_agents: int = 0
    new_places: int = 0
    #: learned sessions by the UTC hour they started in (24 counts; empty before the first)
    hours: tuple[int, ...] = ()
    #: log(pages a minute) x 100, rounded, of the last learned sessions with at least three
    #: steps (``PACE_UNIT``)
    paces: tuple[int, ...] = ()
    #: the median and the median absolute deviation of ``paces``, as log(pages a minute)
    #: (kept, not recomputed)
    pace_median: float = 0.0
    pace_mad: float = 0.0
    #: learned sessions that visited each sensitive kind
    sensitive: dict[str, int] = {}


class SessionWatch(msgspec.Struct, kw_only=True, gc=False, array_like=True):
    """The session being watched: what it brought that the baseline lacks, and its risk."""

    started: float
    last_seen: float
    #: when it ends without another event: its last event plus the session timeout (a
    #: decision after it sees no session)
    expires: float
    #: interactive events (page, screen, and track or identify from a device) so far
    steps: int = 0
    #: the devices, agents and places this session used (at most ``MAX_SESSION_KNOWN`` each)
    devices: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    places: tuple[str, ...] = ()
    #: the sensitive kinds visited, in order, and the step of the first
    kinds: tuple[str, ...] = ()
    first_sensitive: int = 0
    #: the highest risk so far (0-1) and the signals behind it
    risk: float = 0.0
    signals: tuple[Signal, ...] = ()
    #: the step and the event time at which risk first reached the catalog's threshold
    #: (0: not flagged)
    flagged_step: int = 0
    flagged_at: float = 0.0

    @property
    def flagged(self) -> bool:
        return self.flagged_step > 0


class GuardState(msgspec.Struct, kw_only=True, gc=False, array_like=True):
    """A customer's baseline and the session being watched (None before the first)."""

    baseline: Baseline = msgspec.field(default_factory=Baseline)
    session: SessionWatch | None = None

    def live_session(self, now: float) -> SessionWatch | None:
        """The session being watched, if it has not ended by ``now``."""
        s = self.session
        return s if s is not None and now <= s.expires else None
