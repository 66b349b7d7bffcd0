"""Incremental state equals recomputation on every prefix: live profiles == replay of the
log, and a restart from saved state plus the log's tail == live (hypothesis)."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextbest.catalog.load import Catalog
from nextbest.clock import FixedClock
from nextbest.engine import Engine
from nextbest.store import MemoryStore
from tests.support import DAY, T0, batch, identify, message, page, track

USERS = ["u1", "u2", "u3"]
DEVICES = ["d1", "d2", "d3"]
URLS = ["/mortgages/a", "/loans/car", "/pension", "/cards", "/other"]


@st.composite
def messages(draw: st.DrawFn) -> dict:
    at = T0 - draw(st.floats(min_value=0, max_value=40 * DAY))
    kind = draw(st.sampled_from(["page", "page", "identify", "alias", "track", "feedback"]))
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
    if kind == "feedback":
        return track(
            "Promotion Viewed",
            {"promotion_id": "credit_card_offer", "decision_id": "d"},
            at=at,
            **who,
        )
    return track("Calculator Used", {"topic": "mortgage"}, at=at, **who)


def encoded(engine: Engine) -> dict[str, bytes]:
    return {p.customer_id: msgspec.msgpack.encode(p) for p in engine.profiles()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(messages(), min_size=1, max_size=6), min_size=1, max_size=8),
    st.integers(min_value=0, max_value=7),
)
def test_live_equals_replay_and_restart_on_every_prefix(catalog: Catalog, batches, save_after):
    clock = FixedClock(T0)
    store = MemoryStore()
    engine = Engine(catalog, store, clock)
    for i, msgs in enumerate(batches):
        engine.ingest_batch(batch(*msgs))
        assert engine.replay().identical
        if i == save_after:
            engine.snapshot()
        restarted = Engine(catalog, store, clock)  # saved state (if any) + the log's tail
        assert encoded(restarted) == encoded(engine)
