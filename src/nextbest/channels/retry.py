"""When to try a failed delivery again, and what an HTTP answer means.

Exponential backoff with full jitter (the AWS Architecture Blog's "Exponential Backoff And
Jitter"): after attempt ``n`` fails, the next is due a uniformly drawn ``[0, min(cap, base *
2 ** (n - 1))]`` seconds later, drawn from the ``random.Random`` passed in (seeded in tests).
Full jitter spreads the retries of many messages that failed together (a receiver back from
an outage is not hit by all of them at once). After ``max_attempts`` attempts the message is
dead: kept, listed, replayable (``nextbest outbox replay``).
"""

from __future__ import annotations

import math
import random

import msgspec

from nextbest.channels.port import Verdict
from nextbest.errors import ConfigError

__all__ = ["RetryPolicy", "verdict_of_status"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """``base``: the first retry's bound (seconds); ``cap``: no bound above it;
    ``max_attempts``: attempts before a message is dead. The defaults bound the ten attempts'
    delays at 2, 4, 8, ... 512 s: at most ~17 minutes from the first to the tenth attempt,
    about half that on average."""

    base: float = 2.0
    cap: float = 600.0
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap < math.inf):
            raise ConfigError("a retry policy needs 0 < base <= cap (seconds)")
        if self.max_attempts < 1:
            raise ConfigError("a retry policy needs max_attempts >= 1")

    def bound(self, attempt: int) -> float:
        """The largest delay after attempt ``attempt`` (1: the first) failed."""
        exponent = min(max(attempt - 1, 0), 64)  # 2 ** 64 * base is past any cap
        return min(self.cap, self.base * 2.0**exponent)

    def delay(self, attempt: int, rng: random.Random, at_least: float = 0.0) -> float:
        """Seconds to wait after attempt ``attempt`` failed: full jitter under ``bound``,
        raised to ``at_least`` (a receiver's Retry-After) but never past ``cap``."""
        return min(self.cap, max(rng.uniform(0.0, self.bound(attempt)), at_least))

    def next_attempt_at(
        self, attempt: int, now: float, rng: random.Random, at_least: float = 0.0
    ) -> float | None:
        """When to try again after attempt ``attempt`` failed at ``now``, or None: it was the
        last (dead)."""
        if attempt >= self.max_attempts:
            return None
        return now + self.delay(attempt, rng, at_least)


def verdict_of_status(status: int) -> Verdict:
    """What an HTTP status means: 2xx delivered; 408 (timeout), 429 (too many requests) and
    5xx try again; any other answer dead at once: the receiver understood the request and
    refused it (400, 401, 403, 404, 410, 422 ...) or sent it elsewhere (3xx: a webhook URL
    is configured where it is served, redirects are not followed), and sending the same
    bytes again will not change its mind. Fix the cause, then replay."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in (408, 429) or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.DEAD
