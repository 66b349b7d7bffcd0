"""Incremental state equals recomputation on every prefix: live profiles == replay of the
log, and a restart from saved state plus the log's tail == live (hypothesis). Feedback
answers decisions made earlier in the same run, as the engine requires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.catalog.compiled import Catalog
from nextbest.clock import FixedClock
from nextbest.decide import Decision, DecisionRequest
from nextbest.engine import Engine
from nextbest.store import memory_stores
from tests.support import DAY, T0, batch, counter_ids, feedback, identify, message, page, track

USERS = ["u1", "u2", "u3"]
DEVICES = ["d1", "d2", "d3"]
URLS = ["/mortgages/a", "/loans/car", "/pension", "/cards", "/other"]
FEEDBACK = ["Promotion Viewed", "Promotion Clicked", "Promotion Dismissed"]


@dataclass(frozen=True)
class Decide:
    """Ask for a decision (home_feed), after the messages before this step are sent."""

    user: str | None
    device: str


@dataclass(frozen=True)
class Answer:
    """Feedback for the ``ref``-th decision made so far that showed anything (nothing, if
    none did), on its ``pick``-th item, from the customer it was made for."""

    ref: int
    pick: int
    event: str
    at: float

    def message(self, made: list[Decision]) -> dict[str, Any] | None:
        if not made:
            return None
        d = made[self.ref % len(made)]
        return feedback(d, self.event, d.items[self.pick % len(d.items)].offer_id, at=self.at)


Step = dict[str, Any] | Decide | Answer


@st.composite
def messages(draw: st.DrawFn) -> Step:
    at = T0 - draw(st.floats(min_value=0, max_value=40 * DAY))
    kind = draw(
        st.sampled_from(["page", "page", "identify", "alias", "track", "decide", "feedback"])
    )
    user = draw(st.sampled_from([*USERS, None]))
    device = draw(st.sampled_from(DEVICES))
    who = {"user": user, "anon": device} if user else {"anon": device}
    if kind == "page":
        return page("https://b.example" + draw(st.sampled_from(URLS)), at=at, **who)
    if kind == "identify":
        return identify({"age": draw(st.integers(17, 80))}, user=user or "u1", anon=device, at=at)
    if kind == "alias":
        return message(
            "alias",
            previousId=draw(st.sampled_from(["old1", "old2", "d1"])),
            user=user or "u2",
            at=at,
        )
    if kind == "decide":
        return Decide(user, device)
    if kind == "feedback":
        return Answer(
            draw(st.integers(0, 7)), draw(st.integers(0, 3)), draw(st.sampled_from(FEEDBACK)), at
        )
    if draw(st.booleans()):  # a KPI event of mortgage_q4 (or not: another product)
        product = draw(st.sampled_from(["mortgage", "car_loan"]))
        return track("Application Submitted", {"product": product}, at=at, **who)
    return track("Calculator Used", {"topic": "mortgage"}, at=at, **who)


def play(engine: Engine, steps: list[Step], made: list[Decision]) -> None:
    """Send the steps' messages in order; a decision sees everything before it, feedback
    answers one made so far."""
    msgs: list[dict[str, Any]] = []
    for step in steps:
        if isinstance(step, Decide):
            if msgs:
                engine.ingest_batch(batch(*msgs))
                msgs = []
            request = DecisionRequest(placement="home_feed")
            d = engine.decide(request, user_id=step.user, anonymous_id=step.device)
            if d.items:
                made.append(d)
        elif isinstance(step, Answer):
            if (msg := step.message(made)) is not None:
                msgs.append(msg)
        else:
            msgs.append(step)
    if msgs:
        engine.ingest_batch(batch(*msgs))


def encoded(engine: Engine) -> dict[str, bytes]:
    return {p.customer_id: msgspec.msgpack.encode(p) for p in engine.profiles()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(messages(), min_size=1, max_size=6), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=7),
)
def test_live_equals_replay_and_restart_on_every_prefix(catalog: Catalog, batches, save_after):
    clock = FixedClock(T0)
    store = memory_stores()
    engine = Engine(catalog, store, clock, new_id=counter_ids())
    made: list[Decision] = []
    for i, steps in enumerate(batches):
        play(engine, steps, made)
        report = engine.replay()
        assert report.identical
        assert report.experiments_identical
        if i == save_after:
            engine.snapshot()
        restarted = Engine(catalog, store, clock)  # saved state (if any) + the log's tail
        assert encoded(restarted) == encoded(engine)
        assert restarted.experiment_state() == engine.experiment_state()
