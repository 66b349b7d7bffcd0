"""Account takeovers in the synthetic bank (``sim.takeover``): off by default (the stream is
unchanged), deterministic by seed, and each takeover is a fraudster's login on a new device
going to sensitive pages."""

from __future__ import annotations

from datetime import date, datetime

from nextbest.sim.generate import generate_lines
from nextbest.sim.population import make_population
from nextbest.sim.takeover import SENSITIVE, TakeoverLife, TakeoverParams
from nextbest.sim.world import CustomerSim, messages_of
from nextbest.sim.worlds import DEFAULT_WORLD, world_named, world_response

START = date(2026, 6, 1)


def test_without_takeovers_no_message_carries_a_user_agent() -> None:
    for line in generate_lines(1, 40, 10, START):
        assert b"userAgent" not in line
        assert b"timezone" not in line


def test_the_same_seed_gives_the_same_bytes() -> None:
    params = TakeoverParams(share=0.5, warmup_days=5)
    a = list(generate_lines(4, 30, 20, START, takeovers=params))
    b = list(generate_lines(4, 30, 20, START, takeovers=params))
    assert a == b
    assert a != list(generate_lines(5, 30, 20, START, takeovers=params))


def test_takeovers_log_in_on_a_new_device_and_go_to_sensitive_pages() -> None:
    world = world_named(DEFAULT_WORLD)
    people = make_population(2, 60, START, world.population)
    params = TakeoverParams(share=0.5, warmup_days=5)
    lives = [TakeoverLife(c, 2, 25, params) for c in people]
    sims = [
        CustomerSim(c, 2, START, world_response(world), 1.0, world.life_events, life)
        for c, life in zip(people, lives, strict=True)
    ]
    messages = [m for day in messages_of(sims, 25) for _, m in day]
    takeovers = [t for life in lives for t in life.takeovers]
    assert len(takeovers) >= 10
    paths = {path for path, _, _ in SENSITIVE.values()}
    for t in takeovers:
        assert t.day >= 5
        mine = [m for m in messages if m.get("anonymousId") == t.device]
        assert mine[0]["type"] in ("page", "screen")
        assert mine[0]["userId"] is None  # the login page, before the identify
        assert mine[1]["type"] == "identify"
        assert mine[1]["userId"] == t.user_id
        visited = {m["properties"].get("path") for m in mine if m["type"] in ("page", "screen")}
        assert visited & paths
    # the fraudster's device is new: the victim never used it before
    for t in takeovers:
        before = [
            m
            for m in messages
            if m.get("userId") == t.user_id
            and datetime.fromisoformat(m["timestamp"]).timestamp() < t.started
        ]
        assert t.device not in {m.get("anonymousId") for m in before}
