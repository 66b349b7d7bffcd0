"""Webhook signatures (``channels.signature``), the retry policy and the verdict of each
HTTP answer (``channels.retry``), and the webhook settings."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from nextbest.channels import (
    RetryPolicy,
    Verdict,
    sign,
    signature_header,
    verdict_of_status,
    verify,
)
from nextbest.errors import AuthError, ConfigError
from nextbest.settings import Settings, webhooks_from_env
from tests.support import ROOT

SECRET = "whsec-unit-0123456789abcdef"
BODY = b'{"callback": "cb-1", "phone": "+4512345678"}'
T = 1_790_157_600


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), b"1790157600." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, T, BODY) == expected
    assert signature_header(SECRET, T, BODY) == f"t=1790157600,v1={expected}"


def test_verify_returns_the_signed_time_within_the_tolerance():
    header = signature_header(SECRET, T, BODY)
    assert verify(SECRET, header, BODY, T) == T
    assert verify(SECRET, header, BODY, T + 300) == T
    assert verify(SECRET, header, BODY, T - 300) == T  # a receiver's clock a little behind
    assert verify(SECRET, header, BODY, T + 10, tolerance=10) == T


def test_several_v1_signatures_any_may_match():
    """A sender rolling its secret signs with both; a receiver knows one of them."""
    header = f"t={T},v1={sign('old-secret-0123456789', T, BODY)},v1={sign(SECRET, T, BODY)}"
    assert verify(SECRET, header, BODY, T) == T


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (None, BODY, T, "no Nextbest-Signature header"),
        ("", BODY, T, "no Nextbest-Signature header"),
        ("garbage", BODY, T, "malformed"),
        (f"v1={'0' * 64}", BODY, T, "malformed"),
        (f"t={T}", BODY, T, "malformed"),
        (f"t=soon,v1={'0' * 64}", BODY, T, "malformed"),
        (f"t={T},t={T},v1={'0' * 64}", BODY, T, "malformed"),
        (f"t={T},v1={'0' * 64}", BODY, T, "does not match"),
        (f"t={T},v1=é", BODY, T, "does not match"),
        ("SIGNED", BODY + b" ", T, "does not match"),  # a body changed on the way
        ("SIGNED", BODY, T + 301, "more than 300 s from now"),  # a replay
        ("SIGNED", BODY, T - 301, "more than 300 s from now"),
        ("SIGNED", BODY, float("nan"), "more than 300 s from now"),
        (f"t={T + 1},v1=SIG", BODY, T, "does not match"),  # the time changed: not signed
    ],
)
def test_verify_refuses_with_the_reason(header: str | None, body: bytes, now: float, reason: str):
    good = sign(SECRET, T, BODY)
    if header is not None:
        header = header.replace("SIGNED", f"t={T},v1={good}").replace("SIG", good)
    with pytest.raises(AuthError, match=reason):
        verify(SECRET, header, body, now)


def test_verify_under_another_secret_fails():
    with pytest.raises(AuthError, match="does not match"):
        verify("another-secret-0123456789", signature_header(SECRET, T, BODY), BODY, T)


# ---------------------------------------------------------------- retries
def test_the_bound_doubles_up_to_the_cap():
    policy = RetryPolicy(base=2.0, cap=600.0, max_attempts=12)
    assert [policy.bound(n) for n in range(1, 12)] == [
        2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600,
    ]  # fmt: skip
    assert policy.bound(10_000) == 600


def test_full_jitter_draws_under_the_bound_from_the_rng_given():
    policy = RetryPolicy(base=1.0, cap=30.0, max_attempts=10)
    for attempt in range(1, 10):
        rng = random.Random(attempt)
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= policy.bound(attempt) for d in delays)
        assert max(delays) > policy.bound(attempt) / 2  # spread over the range, not fixed
    a, b = random.Random(11), random.Random(11)
    assert [policy.delay(3, a) for _ in range(5)] == [policy.delay(3, b) for _ in range(5)]


def test_retry_after_raises_the_delay_but_never_past_the_cap():
    policy = RetryPolicy(base=1.0, cap=30.0)
    assert policy.delay(1, random.Random(0), at_least=20) == 20
    assert policy.delay(1, random.Random(0), at_least=3_600) == 30


def test_after_the_last_attempt_there_is_no_next():
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(0)
    assert policy.next_attempt_at(2, 100.0, rng) is not None
    assert policy.next_attempt_at(3, 100.0, rng) is None
    assert policy.next_attempt_at(4, 100.0, rng) is None


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ({"base": 0}, "0 < base <= cap"),
        ({"base": 10, "cap": 5}, "0 < base <= cap"),
        ({"cap": float("inf")}, "0 < base <= cap"),
        ({"max_attempts": 0}, "max_attempts >= 1"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(policy: dict[str, float], reason: str):
    with pytest.raises(ConfigError, match=reason):
        RetryPolicy(**policy)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED), (201, Verdict.DELIVERED), (202, Verdict.DELIVERED),
        (204, Verdict.DELIVERED), (408, Verdict.RETRY), (429, Verdict.RETRY),
        (500, Verdict.RETRY), (502, Verdict.RETRY), (503, Verdict.RETRY), (504, Verdict.RETRY),
        (100, Verdict.DEAD), (301, Verdict.DEAD), (302, Verdict.DEAD), (400, Verdict.DEAD),
        (401, Verdict.DEAD), (403, Verdict.DEAD), (404, Verdict.DEAD), (409, Verdict.DEAD),
        (410, Verdict.DEAD), (413, Verdict.DEAD), (422, Verdict.DEAD),
    ],
)  # fmt: skip
def test_each_answer_has_a_verdict(status: int, verdict: Verdict):
    assert verdict_of_status(status) is verdict


# ---------------------------------------------------------------- settings
def test_webhooks_come_from_the_environment_by_name():
    env = {
        "NEXTBEST_WEBHOOK_TELEPHONY_URL": "https://pbx.bank.example/hooks/nextbest",
        "NEXTBEST_WEBHOOK_TELEPHONY_SECRET": SECRET,
        "NEXTBEST_WEBHOOK_CLICK_TO_CALL_URL": "http://127.0.0.1:9000/",
        "NEXTBEST_WEBHOOK_CLICK_TO_CALL_SECRET": SECRET + "2",
        "NEXTBEST_WEBHOOK_CLICK_TO_CALL_TIMEOUT": "2.5",
        "NEXTBEST_WEBHOOKS": "ignored",
    }
    hooks = Settings.from_env(env).webhooks
    assert [(h.name, h.url, h.timeout) for h in hooks] == [
        ("click_to_call", "http://127.0.0.1:9000/", 2.5),
        ("telephony", "https://pbx.bank.example/hooks/nextbest", 10.0),
    ]
    assert hooks[1].secret == SECRET
    assert Settings.from_env({}).webhooks == ()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"NEXTBEST_WEBHOOK_PBX_URL": "https://pbx"}, "needs both NEXTBEST_WEBHOOK_PBX_URL"),
        ({"NEXTBEST_WEBHOOK_PBX_SECRET": SECRET}, "needs both"),
        (
            {"NEXTBEST_WEBHOOK_PBX_URL": "ftp://pbx", "NEXTBEST_WEBHOOK_PBX_SECRET": SECRET},
            "NEXTBEST_WEBHOOK_PBX_URL is an http",
        ),
        (
            {"NEXTBEST_WEBHOOK_PBX_URL": "https://pbx", "NEXTBEST_WEBHOOK_PBX_SECRET": "short"},
            "NEXTBEST_WEBHOOK_PBX_SECRET is too short",
        ),
        (
            {
                "NEXTBEST_WEBHOOK_PBX_URL": "https://pbx",
                "NEXTBEST_WEBHOOK_PBX_SECRET": SECRET,
                "NEXTBEST_WEBHOOK_PBX_TIMEOUT": "soon",
            },
            "NEXTBEST_WEBHOOK_PBX_TIMEOUT is seconds",
        ),
        (
            {
                "NEXTBEST_WEBHOOK_PBX_URL": "https://pbx",
                "NEXTBEST_WEBHOOK_PBX_SECRET": SECRET,
                "NEXTBEST_WEBHOOK_PBX_TIMEOUT": "0",
            },
            "NEXTBEST_WEBHOOK_PBX_TIMEOUT is seconds",
        ),
    ],
)
def test_a_bad_webhook_setting_is_refused_naming_the_variable_not_the_value(
    env: dict[str, str], reason: str
):
    with pytest.raises(ConfigError, match=reason) as caught:
        webhooks_from_env(env)
    assert SECRET not in caught.value.message
    assert "short" not in caught.value.message.replace("too short", "")


# ---------------------------------------------------------------- the receivers' guide
def _documented_verifier() -> object:
    """``verify_nextbest_signature`` as docs/outbox.md shows it to receivers."""
    text = (ROOT / "docs" / "outbox.md").read_text()
    (block,) = [
        b.split("```", 1)[0]
        for b in text.split("```python\n")[1:]
        if "def verify_nextbest_signature" in b
    ]
    scope: dict[str, object] = {}
    exec(compile(block, "docs/outbox.md", "exec"), scope)
    return scope["verify_nextbest_signature"]


@pytest.mark.parametrize(
    ("header", "body", "now"),
    [
        ("SIGNED", BODY, T),
        ("SIGNED", BODY, T + 300),
        ("SIGNED", BODY, T + 301),
        ("SIGNED", BODY, T - 301),
        ("SIGNED", BODY + b" ", T),
        (f"t={T},v1={'0' * 64}", BODY, T),
        (f"t={T},v1={'0' * 64},v1=SIG", BODY, T),
        (f"v1={'0' * 64}", BODY, T),
        ("garbage", BODY, T),
        ("", BODY, T),
        (f"t=soon,v1={'0' * 64}", BODY, T),
        (f"t={T},t={T},v1=SIG", BODY, T),
    ],
)
def test_the_documented_verifier_agrees_with_verify(header: str, body: bytes, now: float):
    good = sign(SECRET, T, BODY)
    header = header.replace("SIGNED", f"t={T},v1={good}").replace("SIG", good)
    documented = _documented_verifier()
    try:
        verify(SECRET, header, body, now)
        accepted = True
    except AuthError:
        accepted = False
    assert documented(SECRET, header, body, now) is accepted  # type: ignore[operator]
