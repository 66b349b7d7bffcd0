"""The synthetic population and its event stream: deterministic, sane, valid Segment-spec."""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from datetime import date

import orjson
import pytest

from nextbest.events import parse_batch
from nextbest.sim.generate import DEFAULT_START, generate_lines, write_ndjson
from nextbest.sim.needs import LIFE_EVENTS
from nextbest.sim.population import make_population
from nextbest.sim.response import ResponseModel, load_params
from nextbest.sim.world import CustomerSim


def digest(seed: int, customers: int = 60, days: int = 20) -> str:
    return hashlib.sha256(b"".join(generate_lines(seed, customers, days))).hexdigest()


def test_same_arguments_same_bytes_and_other_seeds_differ():
    assert digest(7) == digest(7)
    assert digest(7) != digest(8)


def test_write_ndjson_is_byte_identical(tmp_path):
    a, b = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    na = write_ndjson(a, generate_lines(3, 30, 10))
    nb = write_ndjson(b, generate_lines(3, 30, 10))
    assert na == nb > 0
    assert a.read_bytes() == b.read_bytes()


@pytest.fixture(scope="module")
def stream() -> list[dict]:
    return [orjson.loads(line) for line in generate_lines(11, 400, 45)]


def test_every_message_is_valid_segment_spec_in_time_order(stream):
    events = parse_batch(orjson.dumps({"batch": stream[:2000]}), 2_000_000_000.0)
    assert len(events) == 2000
    stamps = [m["timestamp"] for m in stream]
    assert stamps == sorted(stamps)
    assert len({m["messageId"] for m in stream}) == len(stream)


def test_the_stream_has_what_a_bank_sends(stream):
    kinds = Counter(m["type"] for m in stream)
    assert {"page", "screen", "identify", "track"} <= set(kinds)
    names = Counter(m.get("event") for m in stream if m["type"] == "track")
    for name in (
        "Salary Received",
        "Transaction Posted",
        "Calculator Used",
        "Overdraft Started",
        "Application Started",
        "Product Opened",
        "Life Event",
    ):
        assert names[name] > 0, name
    assert any(m.get("properties", {}).get("type") == "turning_18" for m in stream)


def test_anonymous_first_visitors_log_in_later(stream):
    first_seen: dict[str, dict] = {}
    for m in stream:
        if m["anonymousId"] and m["anonymousId"] not in first_seen:
            first_seen[m["anonymousId"]] = m
    anonymous_first = [m for m in first_seen.values() if m["userId"] is None]
    assert anonymous_first
    anon = anonymous_first[0]["anonymousId"]
    stitched = [m for m in stream if m["type"] == "identify" and m["anonymousId"] == anon]
    assert stitched
    assert stitched[0]["userId"]


def test_population_distributions_are_sane():
    people = make_population(5, 5000, DEFAULT_START)
    ages = [p.age_on(DEFAULT_START) for p in people]
    assert min(ages) >= 17
    assert max(ages) <= 90
    assert 40 <= statistics.median(ages) <= 55
    sessions = sorted(p.sessions_per_week for p in people)
    median = statistics.median(sessions)
    assert 1.0 <= median <= 2.2
    assert sessions[int(len(sessions) * 0.99)] > 5 * median  # heavy tail
    assert all(p.sessions_per_week <= 40 for p in people)
    parents = [p for p in people if p.children]
    assert 0.25 < len(parents) / len(people) < 0.7
    assert all(c <= DEFAULT_START for p in parents for c in p.children)
    assert 0.6 < sum(p.consent_marketing for p in people) / len(people) < 0.9
    assert 0.2 < sum(p.anonymous_days > 0 for p in people) / len(people) < 0.4


def test_need_lifetimes_stay_within_their_configured_ranges():
    model = ResponseModel(load_params())
    sims = [CustomerSim(c, 9, DEFAULT_START, model) for c in make_population(9, 600, DEFAULT_START)]
    for d in range(120):
        for s in sims:
            s.day(d)
    needs = [n for s in sims for n in s.needs]
    assert len(needs) > 50
    ranges = {
        (spec.topic, kind): spec for kind, (_, specs) in LIFE_EVENTS.items() for spec in specs
    }
    for n in needs:
        spec = ranges[n.topic, n.cause]
        assert spec.duration_days[0] <= n.duration <= spec.duration_days[1]
        assert spec.peak[0] <= n.peak <= spec.peak[1]
        if n.end_day is not None:
            assert n.end_day - n.start <= n.duration + 1
    assert {n.ended.value for n in needs} >= {"converted", "faded"}
    # a customer may have several needs at once
    assert any(
        sum(1 for n in s.needs if n.strength(d) > 0) > 1 for s in sims for d in range(0, 120, 3)
    )


def test_start_date_is_an_argument():
    a = next(generate_lines(1, 5, 2, start=date(2026, 1, 5)))
    assert orjson.loads(a)["timestamp"].startswith("2026-01-0")


def test_need_rate_scales_how_many_customers_have_needs() -> None:
    model = ResponseModel(load_params())
    people = make_population(4, 3000, DEFAULT_START)

    def with_needs(rate: float) -> int:
        sims = [CustomerSim(c, 4, DEFAULT_START, model, need_rate=rate) for c in people]
        return sum(1 for s in sims if any(n.topic != "overdraft" for n in s.needs))

    none, normal, busy = with_needs(0.0), with_needs(1.0), with_needs(3.0)
    assert none == 0
    assert normal > 50  # a steady share of customers is mid-need on day 0
    assert busy > 2 * normal
