"""The rate limiter (api.rate_limit): token buckets as one time per name, a bounded table."""

from __future__ import annotations

import pytest

from nextbest.api.rate_limit import RateLimiter, RateLimits
from nextbest.errors import RateLimited
from nextbest.settings import Settings


def test_a_burst_then_one_request_per_interval():
    limiter = RateLimiter(rate=2.0, burst=3, cap=10)
    assert [limiter.wait("k", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("k", 100.0) == pytest.approx(0.5)  # the next token in half a second
    assert limiter.wait("k", 100.25) == pytest.approx(0.25)  # a refused request costs nothing
    assert limiter.wait("k", 100.5) == 0.0
    assert limiter.wait("k", 100.5) == pytest.approx(0.5)


def test_an_idle_bucket_refills_to_its_burst_and_no_further():
    limiter = RateLimiter(rate=1.0, burst=2, cap=10)
    for _ in range(2):
        assert limiter.wait("k", 0.0) == 0.0
    assert limiter.wait("k", 0.0) > 0
    # an hour idle gives back the burst, not 3,600 requests
    assert [limiter.wait("k", 3_600.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_names_have_their_own_buckets():
    limiter = RateLimiter(rate=1.0, burst=1, cap=10)
    assert limiter.wait("a", 0.0) == 0.0
    assert limiter.wait("a", 0.0) > 0
    assert limiter.wait("b", 0.0) == 0.0


def test_the_table_keeps_at_most_cap_names_forgetting_the_least_recently_used():
    limiter = RateLimiter(rate=1.0, burst=1, cap=4)  # two generations of two names
    for name in "ab":
        limiter.wait(name, 0.0)
    limiter.wait("c", 0.0)  # the young generation was full: a and b are now the old one
    assert limiter.wait("a", 0.0) > 0  # refused, and young again: still limited
    limiter.wait("d", 0.0)  # a new generation: b, used least recently, is forgotten
    assert ("a" in limiter, "b" in limiter, "c" in limiter, "d" in limiter) == (
        True,
        False,
        True,
        True,
    )
    assert limiter.evicted == 1
    assert limiter.wait("a", 0.0) > 0
    assert limiter.wait("b", 0.0) == 0.0  # forgotten: a full bucket, never a stricter one
    for i in range(1_000):
        limiter.wait(f"n{i}", 1.0)
        assert len(limiter) <= 4


def test_rate_zero_is_no_limit():
    limits = RateLimits(Settings(key_rate=0, session_rate=0))
    for _ in range(1_000):
        limits.check_key("k", 0.0)
        limits.check_user("u", 0.0)
        limits.check_devices(["a"], 0.0)
    assert (len(limits.keys), len(limits.users), len(limits.devices)) == (0, 0, 0)


def test_over_the_limit_is_rate_limited_with_whole_seconds_to_wait():
    limits = RateLimits(Settings(key_rate=0.25, key_burst=1, session_rate=1, session_burst=1))
    limits.check_key("k", 0.0)
    with pytest.raises(RateLimited, match=r"over its rate of 0\.25 requests a second") as exc:
        limits.check_key("k", 1.0)
    assert exc.value.retry_after == 3.0
    limits.check_devices(["a", "b"], 0.0)
    with pytest.raises(RateLimited, match="this anonymousId"):
        limits.check_devices(["c", "b"], 0.0)
    limits.check_user("b", 0.0)  # a user and an anonymousId of the same name are apart
    with pytest.raises(RateLimited, match="this customer"):
        limits.check_user("b", 0.0)
