"""The decision log port's contract, over every backend: append, read by id, by time,
positions."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from nextbest.decide.model import Decision
from nextbest.store import DecisionLog, Stores
from tests.support import T0


@pytest.fixture
def log(stores: Stores) -> DecisionLog:
    return stores.decisions


def logged(decision_id: str = "d1", at: float = T0, **fields: Any) -> Decision:
    """A decision with no items, as the log holds it."""
    return Decision(
        decision_id=decision_id,
        customer_id="u1",
        placement="home",
        timestamp=at,
        catalog_version="1",
        items=[],
        excluded=[],
        control=[],
        segments=[],
        **fields,
    )


def test_decisions(log: DecisionLog):
    d = logged()
    log.append_decisions([d])
    assert log.decision("d1") == d
    assert log.decision("nope") is None


def test_decisions_stream_by_time_within_bounds(log: DecisionLog):
    made = [
        logged(
            f"d{i:04d}",
            at=T0 + (i // 3),  # three decisions share each second
            candidates=["a", "b"],
            features={"interest:mortgage": 1.5},
        )
        for i in range(4_500)  # more than one page of the SQLite reader
    ]
    made = [msgspec.structs.replace(d, customer_id=f"u{i % 7}") for i, d in enumerate(made)]
    log.append_decisions(list(reversed(made)))
    assert list(log.decisions()) == made
    assert list(log.decisions(since=T0 + 10, until=T0 + 12)) == made[30:36]
    assert list(log.decisions(since=T0 + 5_000)) == []


def test_decisions_after_a_position_come_in_the_order_they_were_appended(log: DecisionLog):
    def made(i: int) -> Decision:
        return logged(f"d{i:04d}", at=T0 - i)  # not in time order

    assert log.decision_log_position() == 0
    assert list(log.decisions_after(0)) == []
    first = [made(i) for i in range(4_500)]  # more than one page of the SQLite reader
    log.append_decisions(first)
    position = log.decision_log_position()
    assert list(log.decisions_after(0)) == first
    assert list(log.decisions_after(position)) == []
    later = [made(i) for i in range(4_500, 4_510)]
    log.append_decisions(later[:5])
    log.append_decisions(later[5:])
    assert list(log.decisions_after(position)) == later
    end = log.decision_log_position()
    assert end > position
    changed = msgspec.structs.replace(later[-1], customer_id="u2")
    log.append_decisions([first[0], changed])  # logged already: a decision never changes
    assert log.decision_log_position() == end
    assert list(log.decisions_after(position)) == later
    assert log.decision(later[-1].decision_id) == later[-1]


def test_decision_features_read_back_in_the_order_they_were_logged(log: DecisionLog):
    features = {"bias": 1.0, "segment:z": 1.0, "interest:a": 0.5, "prior:o2": 0.1, "prior:o1": 0.2}
    log.append_decisions([logged(candidates=["o2", "o1"], features=features)])
    for read in (log.decision("d1"), *log.decisions(), *log.decisions_after(0)):
        assert read is not None
        assert list(read.features.items()) == list(features.items())
