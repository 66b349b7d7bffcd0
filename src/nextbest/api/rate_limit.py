"""Rate limits per key and per browser session: token buckets in a bounded table.

Each bucket is kept as one float, its *theoretical arrival time* (the generic cell rate
algorithm, GCRA: a token bucket that refills continuously): a request is allowed while the
bucket's time is at most ``burst`` intervals ahead of now, and moves it one interval on. A
bucket whose time has passed is full again, the same as a new one, so forgetting it changes
nothing.

The table is two generations of plain dicts, each of at most half the cap: a name used is
moved into the young one; when the young one is full it becomes the old one and the old one
is dropped whole. So at most ``cap`` buckets are kept, a name used within the last half-cap
of names is never forgotten, and every step is a dict lookup or two (no ordered structure to
maintain). A forgotten name starts over with a full bucket: a cap never makes a limit
stricter. Time is an argument (a monotonic clock in the server), so the limiter is pure.

The server keeps three tables (``RateLimits``): one bucket per key (a browser key's is the
whole site's traffic), and, for browser keys, one per session: per user of a customer token,
and per anonymousId sent or decided for without one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from nextbest.errors import RateLimited
from nextbest.guard.senders import KeyKind, Sender
from nextbest.settings import Settings

#: looked up once: in Python 3.11 each ``KeyKind.X`` read calls the enum metaclass's hook
_BROWSER = KeyKind.BROWSER

__all__ = ["RateLimiter", "RateLimits"]


class RateLimiter:
    """Buckets of ``burst`` requests refilled at ``rate`` per second, one per name, at most
    ``cap`` of them (the least recently used forgotten first). ``rate`` 0: no limit."""

    __slots__ = (
        "_half",
        "_interval",
        "_old",
        "_tolerance",
        "_young",
        "burst",
        "enabled",
        "evicted",
        "rate",
    )

    def __init__(self, rate: float, burst: int, cap: int) -> None:
        if rate < 0 or burst < 1 or cap < 2:
            raise ValueError("a rate limit needs rate >= 0, burst >= 1 and cap >= 2")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate if rate else 0.0
        self._tolerance = self._interval * burst
        #: whether it limits at all (an attribute, not a property: read every request)
        self.enabled = self._interval > 0.0
        self._half = cap // 2
        #: name -> theoretical arrival time, for names used lately, and before that
        self._young: dict[str, float] = {}
        self._old: dict[str, float] = {}
        #: buckets forgotten to keep the table within its cap
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def __contains__(self, name: str) -> bool:
        return name in self._young or name in self._old

    def wait(self, name: str, now: float) -> float:
        """0.0 if ``name`` may make one more request at ``now`` (then counted), else the
        seconds until it may (not counted)."""
        young = self._young
        tat = young.get(name)
        if tat is None:
            tat = self._old.pop(name, now)
            if len(young) >= self._half:  # a new generation; the old one is forgotten
                self.evicted += len(self._old)
                self._old = young
                self._young = young = {}
        if tat < now:
            tat = now
        later = tat + self._interval
        over = later - now - self._tolerance
        if over > 0.0:
            young[name] = tat
            return over
        young[name] = later
        return 0.0


def _retry_after(seconds: float) -> float:
    return max(1.0, math.ceil(seconds))


class RateLimits:
    """The server's limits: a bucket per key, and one per browser session (the user of a
    customer token, or an anonymousId), as ``Settings`` configures them."""

    __slots__ = ("devices", "keys", "users")

    def __init__(self, settings: Settings) -> None:
        # keys are configured, so few: the cap only bounds a misconfiguration
        self.keys = RateLimiter(settings.key_rate, settings.key_burst, 10_000)
        rate, burst, cap = settings.session_rate, settings.session_burst, settings.rate_sessions_max
        self.users = RateLimiter(rate, burst, max(2, cap // 2))
        self.devices = RateLimiter(rate, burst, max(2, cap - cap // 2))

    def check_key(self, key: str, now: float) -> None:
        """RateLimited unless ``key`` may make one more request."""
        keys = self.keys
        if keys.enabled and (wait := keys.wait(key, now)):
            raise RateLimited(
                f"this key is over its rate of {keys.rate:g} requests a second: "
                f"retry in {_retry_after(wait):.0f} s",
                _retry_after(wait),
            )

    def check_user(self, user_id: str, now: float) -> None:
        """RateLimited unless the browser session of ``user_id`` (its customer token's
        user) may make one more request."""
        users = self.users
        if users.enabled and (wait := users.wait(user_id, now)):
            raise _session_limited("this customer", users, wait)

    def check_device(self, anonymous_id: str, now: float) -> None:
        """RateLimited unless the browser session of ``anonymous_id`` may make one more
        request."""
        devices = self.devices
        if devices.enabled and (wait := devices.wait(anonymous_id, now)):
            raise _session_limited("this anonymousId", devices, wait)

    def check_devices(self, anonymous_ids: Iterable[str], now: float) -> None:
        """``check_device`` for each (distinct) anonymousId."""
        for anonymous_id in anonymous_ids:
            self.check_device(anonymous_id, now)

    def charge_devices(self, sender: Sender, anonymous_ids: Iterable[str | None]) -> None:
        """A browser key without a customer token speaks for the anonymousIds it names:
        each is a browser session with its own rate (RateLimited when one is over it)."""
        if sender.kind is _BROWSER and sender.bound_user is None:
            named = dict.fromkeys(a for a in anonymous_ids if a)
            self.check_devices(named, time.monotonic())


def _session_limited(who: str, limiter: RateLimiter, wait: float) -> RateLimited:
    return RateLimited(
        f"{who} is over the browser session rate of {limiter.rate:g} requests a second: "
        f"retry in {_retry_after(wait):.0f} s",
        _retry_after(wait),
    )
