"""KPI windows: each campaign KPI's recent events per customer, folded like everything else.

An experiment's pre-exposure covariate (CUPED) is the same KPI in the 30 days before the
customer's first exposure (``experiments.exposure``). The events behind it are folded into
the profile as they arrive, so the covariate can be read at the moment of exposure by
whatever process holds the profile (an embedded engine, an API worker reading Redis, a fold
worker), and a replay folds the same windows from the same log.

For every KPI of the catalog's campaigns (deduplicated: campaigns sharing a KPI share its
window) ``Profile.kpis[key]`` holds the ``(time, value)`` of each matching event (its name,
its ``where`` condition): ``value`` is 1 for a conversion KPI and the summed number property
for a value KPI (an event without a finite number there is not a hit). Bounded: hits older
than ``KEEP_DAYS`` before the newest hit are dropped, and at most ``MAX_HITS`` of the newest
are kept (a customer with more KPI events than that in a month gets a covariate from the
newest ``MAX_HITS``). The window's content depends only on the set of events folded, not
their order (hits are kept sorted by time, then value), so a stitch folding a device's events
late gives what a full refold gives.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from nextbest.events.model import Event
from nextbest.profile.model import Profile
from nextbest.profile.windows import DAY

__all__ = [
    "KEEP_DAYS",
    "MAX_HITS",
    "PRE_EXPOSURE_DAYS",
    "KpiWatch",
    "kpi_key",
    "pre_exposure",
    "record_kpi",
]

#: the covariate's window: the KPI in this many days before the first exposure
PRE_EXPOSURE_DAYS = 30
#: hits are kept this many days before the newest (one day more than the covariate reads)
KEEP_DAYS = PRE_EXPOSURE_DAYS + 1
#: at most this many hits per KPI and customer, the newest
MAX_HITS = 256


def kpi_key(event: str, where: str, value: str | None) -> str:
    """The name a KPI's window has in ``Profile.kpis``: its event, condition and value."""
    return f"{event} | {where}" + (f" | sum {value}" if value is not None else "")


class KpiWatch:
    """One KPI the fold keeps a window of: ``matches`` tells whether an event of its name
    holds its ``where`` condition (the catalog compiles it). Equal when the definitions are
    (``folds_alike`` compares fold settings across catalog reloads)."""

    __slots__ = ("event", "key", "matches", "value", "where")

    def __init__(
        self, event: str, where: str, value: str | None, matches: Callable[[Event], bool]
    ) -> None:
        self.event = event
        self.where = where
        self.value = value
        self.key = kpi_key(event, where, value)
        self.matches = matches

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KpiWatch) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"KpiWatch({self.key!r})"

    def amount(self, event: Event) -> float | None:
        """The event's value for this KPI: 1 for a conversion, the number property for a
        value KPI (None: the event carries no finite number there)."""
        if self.value is None:
            return 1.0
        raw = event.properties.get(self.value)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            return None
        return float(raw)


def record_kpi(profile: Profile, event: Event, watches: tuple[KpiWatch, ...]) -> None:
    """Add ``event`` to the windows of the KPIs in ``watches`` (those of its name) it meets."""
    when = event.timestamp
    for watch in watches:
        amount = watch.amount(event)
        if amount is None or not watch.matches(event):
            continue
        windows = profile.kpis
        if windows is None:
            windows = profile.kpis = {}
        hits = windows.get(watch.key)
        if hits is None:
            hits = windows[watch.key] = []
        if hits and when < hits[-1][0] - KEEP_DAYS * DAY:
            continue  # older than anything kept
        bisect.insort(hits, (when, amount))
        cutoff = hits[-1][0] - KEEP_DAYS * DAY
        drop = bisect.bisect_left(hits, (cutoff, -math.inf))
        drop = max(drop, len(hits) - MAX_HITS)
        if drop > 0:
            del hits[:drop]


def pre_exposure(hits: list[tuple[float, float]] | None, first: float, conversion: bool) -> float:
    """The covariate of a customer first exposed at ``first``: their KPI in the
    ``PRE_EXPOSURE_DAYS`` before it (``first`` excluded: an event at the exposure counts
    after it). A conversion KPI's is 1 or 0 (converted in that window or not), a value
    KPI's the sum of its values there."""
    if not hits:
        return 0.0
    lo = bisect.bisect_left(hits, (first - PRE_EXPOSURE_DAYS * DAY, -math.inf))
    hi = bisect.bisect_left(hits, (first, -math.inf))
    if hi <= lo:
        return 0.0
    if conversion:
        return 1.0
    total = 0.0
    for _, amount in hits[lo:hi]:
        total += amount
    return total
