"""The outbox sender against a real webhook receiver on loopback: retries with a seeded,
jittered backoff until the receiver accepts, signatures every attempt that the receiver
verifies, an Idempotency-Key acted on once, dead letters (4xx at once, 5xx after the last
attempt) and their replay, the gate seam, the thread's clean stop, and secrets in no log.

Time is a FixedClock the test moves to the next due message: no sleeps, no timing."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextbest.bootstrap import build_outbox_sender
from nextbest.channels import Delivery, OutboxSender, RetryPolicy, Verdict, verify
from nextbest.channels.webhook import WebhookTransport
from nextbest.clock import FixedClock, SystemClock
from nextbest.settings import Settings, Webhook
from nextbest.store import Outbox, OutboxMessage, OutboxState, Stores, sqlite_stores
from tests.support import T0
from tests.webhook_receiver import SECRET, Arrival, Receiver, fail_first, receiving

POLICY = RetryPolicy(base=1.0, cap=8.0, max_attempts=5)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    made = sqlite_stores(tmp_path / "outbox.sqlite")
    yield made
    made.close()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def settings_for(receiver: Receiver, timeout: float = 5.0) -> Settings:
    """The webhook ``telephony`` at ``receiver``, signed with ``SECRET``."""
    hook = Webhook(name="telephony", url=receiver.url, secret=SECRET, timeout=timeout)
    return Settings(webhooks=(hook,))


def sender_for(
    receiver: Receiver, outbox: Outbox, clock: FixedClock, seed: int = 7, **kw: object
) -> OutboxSender:
    return build_outbox_sender(
        settings_for(receiver), outbox, clock=clock, rng=random.Random(seed), policy=POLICY, **kw
    )  # type: ignore[arg-type]


def call(outbox: Outbox, i: int, destination: str = "telephony") -> OutboxMessage:
    body = b'{"callback": "cb-%d", "phone": "+4512345678", "advisor": "a-7"}' % i
    return outbox.enqueue("telephony", destination, f"callback-{i}-accepted", body, T0)


def drain(sender: OutboxSender, outbox: Outbox, clock: FixedClock, rounds: int = 100) -> None:
    """Send until nothing is pending or delivering, moving the clock to the next due."""
    for _ in range(rounds):
        if sender.send_due().claimed:
            continue
        waiting = [
            m for m in outbox.messages() if m.state in (OutboxState.PENDING, OutboxState.DELIVERING)
        ]
        if not waiting:
            return
        clock.set(max(clock.now(), min(m.next_attempt_at for m in waiting)))
    raise AssertionError("the outbox did not drain")


def test_retries_until_the_receiver_accepts_and_it_acts_once_per_key(
    stores: Stores, clock: FixedClock
):
    with receiving(clock.now, fail_first(2)) as receiver:
        made = [call(stores.outbox, i) for i in range(3)]
        sender = sender_for(receiver, stores.outbox, clock)
        first = sender.send_due()
        assert first.claimed == first.retried == 3
        # the first retries: full jitter under the first bound (1 s), drawn in claim order
        rng = random.Random(7)
        expected = [T0 + rng.uniform(0.0, 1.0) for _ in made]
        assert [m.next_attempt_at for m in stores.outbox.messages()] == expected
        assert {m.last_error for m in stores.outbox.messages()} == {"HTTP 500"}
        drain(sender, stores.outbox, clock)
        sender.stop()
    done = stores.outbox.messages()
    assert [(m.state, m.attempts) for m in done] == [(OutboxState.DELIVERED, 3)] * 3
    assert all(m.delivered_at is not None and m.delivered_at >= T0 for m in done)
    # every attempt arrived signed, verified, with its key and attempt number
    assert all(a.refused is None for a in receiver.arrivals)
    for m in made:
        arrived = [a for a in receiver.arrivals if a.key == m.key]
        assert [a.attempt for a in arrived] == [1, 2, 3]
        assert {a.body for a in arrived} == {m.payload}
        for a in arrived:
            assert verify(SECRET, a.signature, a.body, clock.now()) <= clock.now()
    assert receiver.acted == {m.key: m.payload for m in made}


def test_the_same_seed_gives_the_same_schedule(tmp_path: Path):
    schedules = []
    for run in range(2):
        clock = FixedClock(T0)
        stores = sqlite_stores(tmp_path / f"run{run}.sqlite")
        with receiving(clock.now, fail_first(4)) as receiver:
            for i in range(4):
                call(stores.outbox, i)
            sender = sender_for(receiver, stores.outbox, clock, seed=42)
            seen: list[tuple[int, int, float]] = []
            for _ in range(4):
                sender.send_due()
                seen += [(m.id, m.attempts, m.next_attempt_at) for m in stores.outbox.messages()]
                clock.set(max(m.next_attempt_at for m in stores.outbox.messages()))
            sender.stop()
        stores.close()
        schedules.append(seen)
    assert schedules[0] == schedules[1]
    bounds = [m[2] for m in schedules[0]]
    assert len(set(bounds)) > 4  # jittered: not one delay for all


def test_a_refusal_is_dead_at_once_and_replays_after_the_fix(stores: Stores, clock: FixedClock):
    def refuse(arrival: Arrival, before: int) -> tuple[int, bytes, dict[str, str]]:
        return 422, b"phone\nis not E.164", {}

    with receiving(clock.now, refuse) as receiver:
        (m,) = [call(stores.outbox, 1)]
        sender = sender_for(receiver, stores.outbox, clock)
        assert sender.send_due().dead == 1
        (dead,) = stores.outbox.messages(OutboxState.DEAD)
        assert (dead.attempts, dead.last_error) == (1, "HTTP 422: phone is not E.164")
        clock.advance(3600)
        assert sender.send_due().claimed == 0  # dead is not retried
        receiver.script = fail_first(0)  # the cause fixed
        assert stores.outbox.replay([m.id], clock.now()) == [m.id]
        assert sender.send_due().delivered == 1
        sender.stop()
    (done,) = stores.outbox.messages()
    assert (done.state, done.attempts) == (OutboxState.DELIVERED, 1)
    assert len(receiver.arrivals) == 2
    assert receiver.acted == {m.key: m.payload}


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_these_answers_are_retried(stores: Stores, clock: FixedClock, status: int):
    with receiving(clock.now, fail_first(1, status)) as receiver:
        call(stores.outbox, 1)
        sender = sender_for(receiver, stores.outbox, clock)
        assert sender.send_due().retried == 1
        drain(sender, stores.outbox, clock)
        sender.stop()
    assert [m.state for m in stores.outbox.messages()] == [OutboxState.DELIVERED]


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 410, 422])
def test_these_answers_are_dead_at_once(stores: Stores, clock: FixedClock, status: int):
    with receiving(clock.now, fail_first(1, status)) as receiver:
        call(stores.outbox, 1)
        sender = sender_for(receiver, stores.outbox, clock)
        assert sender.send_due().dead == 1
        sender.stop()
    (m,) = stores.outbox.messages()
    assert m.state is OutboxState.DEAD
    assert m.last_error.startswith(f"HTTP {status}")


def test_a_wrong_secret_is_refused_by_the_receiver_and_dead(stores: Stores, clock: FixedClock):
    with receiving(clock.now, secret="another-secret-0123456789") as receiver:
        call(stores.outbox, 1)
        sender = sender_for(receiver, stores.outbox, clock)  # signs with SECRET
        sender.send_due()
        sender.stop()
    assert receiver.arrivals[0].refused == "Nextbest-Signature does not match the body"
    assert stores.outbox.messages()[0].last_error.startswith("HTTP 401")


def test_retry_after_is_honored_up_to_the_cap(stores: Stores, clock: FixedClock):
    def busy(arrival: Arrival, before: int) -> tuple[int, bytes, dict[str, str]]:
        return (
            429,
            b"slow down",
            {"Retry-After": "5" if arrival.key.startswith("callback-1") else "3600"},
        )

    with receiving(clock.now, busy) as receiver:
        call(stores.outbox, 1)
        call(stores.outbox, 2)
        sender = sender_for(receiver, stores.outbox, clock)
        sender.send_due()
        sender.stop()
    first, second = stores.outbox.messages()
    assert first.next_attempt_at == T0 + 5  # above the jitter's bound of 1 s
    assert second.next_attempt_at == T0 + POLICY.cap


def test_the_last_attempt_failing_makes_a_dead_letter(stores: Stores, clock: FixedClock):
    with receiving(clock.now, fail_first(100, 503)) as receiver:
        call(stores.outbox, 1)
        sender = sender_for(receiver, stores.outbox, clock)
        drain(sender, stores.outbox, clock)
        sender.stop()
    (m,) = stores.outbox.messages()
    assert (m.state, m.attempts) == (OutboxState.DEAD, POLICY.max_attempts)
    assert m.last_error == "HTTP 503 (attempt 5 of 5: given up)"
    assert len(receiver.arrivals) == POLICY.max_attempts
    assert receiver.acted == {}


def test_no_answer_is_retried(stores: Stores, clock: FixedClock):
    """A closed port (connection refused) and a receiver that never answers (timeout)."""
    with receiving(clock.now) as gone:
        url = gone.url
    released = threading.Event()

    def hang(arrival: Arrival) -> None:
        released.wait(30)  # until the test is done: the sender's timeout ends the attempt

    with receiving(clock.now) as slow:
        slow.on_arrival = hang
        hooks = (
            Webhook(name="gone", url=url, secret=SECRET, timeout=5.0),
            Webhook(name="slow", url=slow.url, secret=SECRET, timeout=0.2),
        )
        sender = build_outbox_sender(
            Settings(webhooks=hooks), stores.outbox, clock=clock, rng=random.Random(1)
        )
        call(stores.outbox, 1, destination="gone")
        call(stores.outbox, 2, destination="slow")
        assert sender.send_due().retried == 2
        sender.stop()
        released.set()
    refused, timed_out = stores.outbox.messages()
    assert refused.state is timed_out.state is OutboxState.PENDING
    assert refused.last_error.startswith("no answer: ConnectError")
    assert url not in refused.last_error
    assert timed_out.last_error == "timed out after 0.2 s (ReadTimeout)"


def test_an_unknown_destination_is_a_dead_letter(stores: Stores, clock: FixedClock):
    with receiving(clock.now) as receiver:
        call(stores.outbox, 1, destination="sms")
        sender = sender_for(receiver, stores.outbox, clock)
        assert sender.send_due().dead == 1
        sender.stop()
    assert stores.outbox.messages()[0].last_error == "no webhook named 'sms' is configured"
    assert receiver.arrivals == []


class HoldBack:
    """A gate that holds every destination back a minute (what a breaker or a rate limit
    does), recording what it is told."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []
        self.told: list[Delivery] = []
        self.open = False

    def admit(self, destination: str, now: float) -> float | None:
        self.asked.append((destination, now))
        return None if self.open else now + 60

    def record(self, destination: str, delivery: Delivery, now: float) -> None:
        self.told.append(delivery)


def test_a_gate_holds_a_destination_back_without_spending_an_attempt(
    stores: Stores, clock: FixedClock
):
    gate = HoldBack()
    with receiving(clock.now) as receiver:
        call(stores.outbox, 1)
        sender = sender_for(receiver, stores.outbox, clock, gate=gate)
        assert sender.send_due().released == 1
        (held,) = stores.outbox.messages()
        assert (held.state, held.attempts, held.next_attempt_at) == (
            OutboxState.PENDING, 0, T0 + 60,
        )  # fmt: skip
        assert receiver.arrivals == []
        gate.open = True
        clock.advance(60)
        assert sender.send_due().delivered == 1
        sender.stop()
    assert gate.asked == [("telephony", T0), ("telephony", T0 + 60)]
    assert gate.told == [Delivery(Verdict.DELIVERED, "HTTP 200")]
    assert stores.outbox.messages()[0].attempts == 1


class Blocking:
    """A transport twin: its first delivery waits until the sender is stopping."""

    def __init__(self, sender: list[OutboxSender]) -> None:
        self.sender = sender
        self.entered = threading.Event()
        self.delivered: list[str] = []

    def deliver(self, message: OutboxMessage, now: float) -> Delivery:
        self.entered.set()
        deadline = time.monotonic() + 30
        while not self.sender[0].stopping and time.monotonic() < deadline:
            time.sleep(0.005)
        self.delivered.append(message.key)
        return Delivery(Verdict.DELIVERED, "HTTP 200")

    def close(self) -> None:
        return None


def test_stop_finishes_the_attempt_and_hands_back_the_rest_of_the_batch(stores: Stores):
    for i in range(5):
        call(stores.outbox, i)
    holder: list[OutboxSender] = []
    twin = Blocking(holder)
    sender = OutboxSender(
        stores.outbox, {"telephony": twin}, clock=SystemClock(), rng=random.Random(3), batch=4
    )
    holder.append(sender)
    sender.start()
    assert twin.entered.wait(30)
    sender.stop(timeout=30)
    assert not sender.running
    assert twin.delivered == ["callback-0-accepted"]
    states = [(m.state, m.attempts) for m in stores.outbox.messages()]
    assert states == [(OutboxState.DELIVERED, 1)] + [(OutboxState.PENDING, 0)] * 4


def test_the_thread_delivers_what_is_enqueued_and_stops_cleanly(stores: Stores):
    with receiving(time.time, fail_first(1)) as receiver:
        sender = build_outbox_sender(
            settings_for(receiver), stores.outbox, rng=random.Random(5),
            policy=RetryPolicy(base=0.05, cap=0.1), poll_seconds=0.05,
        )  # fmt: skip
        sender.start()
        made = [call(stores.outbox, i) for i in range(3)]
        sender.wake()
        deadline = time.monotonic() + 30
        while stores.outbox.counts()[OutboxState.DELIVERED] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        sender.stop(timeout=30)
    assert not sender.running
    assert stores.outbox.counts()[OutboxState.DELIVERED] == 3
    assert receiver.acted == {m.key: m.payload for m in made}


def test_no_secret_in_any_log_line_error_or_repr(
    stores: Stores, clock: FixedClock, caplog: pytest.LogCaptureFixture
):
    """Every logger at DEBUG (httpx and httpcore included) through retries, a refusal and a
    dead letter: the secret appears nowhere, nor in what the outbox keeps."""
    caplog.set_level(logging.DEBUG)

    def mixed(arrival: Arrival, before: int) -> tuple[int, bytes, dict[str, str]]:
        if arrival.key.startswith("callback-1"):
            return 400, f"bad request from {arrival.signature}".encode(), {}
        return (500, b"oops", {}) if before < 2 else (200, b"ok", {})

    with receiving(clock.now, mixed) as receiver:
        for i in range(3):
            call(stores.outbox, i)
        call(stores.outbox, 9, destination="nowhere")
        settings = Settings.from_env(
            {
                "NEXTBEST_WEBHOOK_TELEPHONY_URL": receiver.url,
                "NEXTBEST_WEBHOOK_TELEPHONY_SECRET": SECRET,
            }
        )
        sender = build_outbox_sender(
            settings, stores.outbox, clock=clock, rng=random.Random(1), policy=POLICY
        )
        drain(sender, stores.outbox, clock)
        sender.stop()
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert any(r.name == "nextbest.outbox" for r in caplog.records)
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record
    assert SECRET not in caplog.text
    for m in stores.outbox.messages():
        assert SECRET not in m.last_error
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.webhooks)
    transport = WebhookTransport(settings.webhooks[0])
    assert SECRET not in repr(transport.webhook)
    transport.close()
