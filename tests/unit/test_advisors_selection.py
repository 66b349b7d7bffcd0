"""Who takes a callback now: expertise, level, language, presence, capacity, working hours,
declines, least loaded, and a fair rotation that spreads 1,000 requests evenly."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest

from nextbest.advisors.board import AdvisorBoard, AdvisorState
from nextbest.advisors.model import Callback, CallbackState, Presence
from nextbest.advisors.routing import accept, complete, request
from nextbest.advisors.selection import best_expert, customer_language, rank_experts
from nextbest.advisors.shift import LocalClock, on_shift
from nextbest.catalog.compiled import Catalog, CompiledAdvisor
from tests.unit.advisor_bank import LDN, advisor, at, available, bank, board, callback

#: a Tuesday, 10:00 in Copenhagen (09:00 in London)
TUESDAY_10 = at("2026-03-24T10:00:00+01:00")

CATALOG = bank(
    [
        advisor("anna", {"mortgage": 5, "cards": 2}, languages=("da", "en")),
        advisor("carl", {"mortgage": 3}, languages=("da",)),
        advisor("bo", {"pension": 5}),
        advisor("dina", {"pension": 4}, languages=("en",), zone=LDN),
        advisor("erik", {"pension": 4}, languages=("da", "sv")),
    ]
)


def ids(found: list[CompiledAdvisor]) -> list[str]:
    return [a.id for a in found]


def best(
    on: AdvisorBoard,
    topic: str = "mortgage",
    now: float = TUESDAY_10,
    *,
    language: str | None = None,
    declined_by: tuple[str, ...] = (),
) -> str | None:
    found = best_expert(CATALOG, topic, on, now, language=language, declined_by=declined_by)
    return found.id if found is not None else None


def test_only_experts_in_the_topic_are_chosen() -> None:
    everyone = available("anna", "carl", "bo", "dina", "erik")
    assert best(everyone, "mortgage") == "anna"
    assert best(everyone, "pension") == "bo"
    assert best(everyone, "cards") == "anna"
    assert best(everyone, "car_loan") is None  # nobody is an expert in it


def test_the_higher_level_first_then_the_customer_s_language() -> None:
    everyone = available("anna", "carl", "bo", "dina", "erik")
    assert ids(rank_experts(CATALOG, "pension", everyone, TUESDAY_10)) == ["bo", "dina", "erik"]
    ranked = rank_experts(CATALOG, "pension", everyone, TUESDAY_10, language="sv")
    assert ids(ranked) == ["bo", "erik", "dina"]  # level 5 first; then the Swedish speaker
    no_bo = available("dina", "erik")
    assert best(no_bo, "pension", language="en") == "dina"
    assert best(no_bo, "pension", language="da") == "erik"


@pytest.mark.parametrize("presence", ["busy", "away", "offline"])
def test_busy_expert_falls_back_to_a_colleague_with_the_same_expertise(presence: str) -> None:
    assert best(board(anna=presence, carl="available")) == "carl"
    assert best(board(anna=presence, carl=presence)) is None


def test_an_advisor_the_board_does_not_name_is_offline() -> None:
    assert best(AdvisorBoard()) is None
    assert best(available("carl")) == "carl"


def test_an_expert_at_capacity_is_passed_over() -> None:
    full = AdvisorBoard(
        {
            "anna": AdvisorState(presence=Presence.AVAILABLE, load=1),
            "carl": AdvisorState(presence=Presence.AVAILABLE),
        }
    )
    assert best(full) == "carl"


def test_an_expert_outside_working_hours_is_passed_over_in_their_own_time_zone() -> None:
    everyone = available("bo", "dina", "erik")
    # 16:30 in London is 17:30 in Copenhagen: only the London advisor is on shift
    late = at("2026-03-24T16:30:00+00:00")
    assert ids(rank_experts(CATALOG, "pension", everyone, late)) == ["dina"]
    # 08:30 in Copenhagen is 07:30 in London: nobody yet
    early = at("2026-03-24T08:30:00+01:00")
    assert rank_experts(CATALOG, "pension", everyone, early) == []
    # the end of a range is exclusive: 17:00 sharp is off shift
    clock = LocalClock(at("2026-03-24T17:00:00+01:00"))
    assert not on_shift(CATALOG.advisors["bo"], clock)
    assert on_shift(CATALOG.advisors["bo"], LocalClock(at("2026-03-24T16:59:59+01:00")))
    # Saturday: a day off
    saturday = at("2026-03-28T10:00:00+01:00")
    assert rank_experts(CATALOG, "pension", everyone, saturday) == []


def test_who_declined_is_not_offered_it_again() -> None:
    everyone = available("anna", "carl")
    assert best(everyone, declined_by=("anna",)) == "carl"
    assert best(everyone, declined_by=("anna", "carl")) is None


def test_the_least_loaded_share_of_capacity_first() -> None:
    catalog = bank(
        [
            advisor("big", {"mortgage": 4}, max_concurrent=3),
            advisor("small", {"mortgage": 4}, max_concurrent=1),
        ]
    )
    states = {
        "big": AdvisorState(presence=Presence.AVAILABLE, load=1),
        "small": AdvisorState(presence=Presence.AVAILABLE, load=0),
    }
    found = best_expert(catalog, "mortgage", AdvisorBoard(states), TUESDAY_10)
    assert found is not None
    assert found.id == "small"
    states["small"] = AdvisorState(presence=Presence.AVAILABLE, load=1)
    found = best_expert(catalog, "mortgage", AdvisorBoard(states), TUESDAY_10)
    assert found is not None
    assert found.id == "big"


def test_rotation_offers_who_waited_longest() -> None:
    catalog = bank([advisor(a, {"mortgage": 4}) for a in ("a", "b", "c")])
    states = {
        "a": AdvisorState(presence=Presence.AVAILABLE, last_assigned=TUESDAY_10 - 10),
        "b": AdvisorState(presence=Presence.AVAILABLE, last_assigned=TUESDAY_10 - 300),
        "c": AdvisorState(presence=Presence.AVAILABLE, last_assigned=TUESDAY_10 - 60),
    }
    ranked = rank_experts(catalog, "mortgage", AdvisorBoard(states), TUESDAY_10)
    assert ids(ranked) == ["b", "c", "a"]
    states["a"] = AdvisorState(presence=Presence.AVAILABLE)  # never assigned: first
    ranked = rank_experts(catalog, "mortgage", AdvisorBoard(states), TUESDAY_10)
    assert ids(ranked) == ["a", "b", "c"]


def test_best_expert_is_the_first_of_the_ranking() -> None:
    rng = random.Random(7)
    names = [f"a{i}" for i in range(12)]
    catalog = bank(
        [
            advisor(n, {"mortgage": rng.randint(1, 5)}, languages=(rng.choice(["da", "en"]),))
            for n in names
        ]
    )
    for _ in range(200):
        states = {
            n: AdvisorState(
                presence=rng.choice(list(Presence)),
                load=rng.randint(0, 1),
                last_assigned=rng.choice([0.0, TUESDAY_10 - rng.randint(1, 999)]),
            )
            for n in names
        }
        language = rng.choice([None, "da", "en"])
        board_ = AdvisorBoard(states)
        ranked = rank_experts(catalog, "mortgage", board_, TUESDAY_10, language=language)
        found = best_expert(catalog, "mortgage", board_, TUESDAY_10, language=language)
        assert (found.id if found else None) == (ranked[0].id if ranked else None)


# ------------------------------------------------------------------ fairness


def _serve(catalog: Catalog, names: list[str], requests: int, hold: list[int]) -> Counter[str]:
    """Route ``requests`` "call me now" callbacks, one every 20 s, each call lasting the
    next of ``hold`` seconds; the board kept as the engine keeps it."""
    board_ = available(*names)
    counts: Counter[str] = Counter()
    ongoing: list[tuple[float, Callback]] = []
    for i in range(requests):
        now = TUESDAY_10 + 20.0 * i
        for end, held in [o for o in ongoing if o[0] <= now]:
            done = complete(held, end)
            board_ = board_.moved(held, done.callback)
            ongoing.remove((end, held))
        new = callback(f"cb{i}", requested_at=now)
        routed = request(new, board_, catalog, now)
        board_ = board_.moved(None, routed.callback)
        cb = routed.callback
        if cb.state is CallbackState.OFFERED:
            assert cb.advisor_id is not None
            counts[cb.advisor_id] += 1
            accepted = accept(cb, cb.advisor_id, catalog, now + 1).callback
            board_ = board_.moved(cb, accepted)
            ongoing.append((now + hold[i % len(hold)], accepted))
    return counts


def test_fair_rotation_over_1000_requests_between_equal_experts() -> None:
    names = ["a", "b", "c"]
    catalog = bank([advisor(n, {"mortgage": 4}, weekly={"tue": ["00:00-24:00"]}) for n in names])
    counts = _serve(catalog, names, 1_000, hold=[5])  # each call over before the next request
    assert sum(counts.values()) == 1_000
    assert max(counts.values()) - min(counts.values()) <= 1  # round robin: 334, 333, 333


def test_fair_rotation_over_1000_requests_with_calls_of_random_length() -> None:
    names = ["a", "b", "c", "d"]
    catalog = bank(
        [
            advisor(n, {"mortgage": 4}, weekly={"tue": ["00:00-24:00"]}, max_concurrent=2)
            for n in names
        ]
    )
    rng = random.Random(19)
    counts = _serve(catalog, names, 1_000, hold=[rng.randint(10, 120) for _ in range(1_000)])
    assert sum(counts.values()) == 1_000  # never all four full at once
    # equal experts: each takes a quarter, give or take 2 %
    assert max(counts.values()) - min(counts.values()) <= 20, counts


def test_the_board_kept_up_to_date_rotates_like_the_store() -> None:
    catalog = bank([advisor(n, {"mortgage": 4}) for n in ("a", "b")])
    board_ = available("a", "b")
    first = request(callback("x", requested_at=TUESDAY_10), board_, catalog, TUESDAY_10)
    board_ = board_.moved(None, first.callback)
    assert board_.state("a") == AdvisorState(Presence.AVAILABLE, load=1, last_assigned=TUESDAY_10)
    second = request(callback("y", requested_at=TUESDAY_10 + 1), board_, catalog, TUESDAY_10 + 1)
    assert second.callback.advisor_id == "b"
    released = complete(
        msgspec.structs.replace(first.callback, state=CallbackState.CONNECTED), TUESDAY_10 + 2
    )
    board_ = board_.moved(first.callback, released.callback)
    assert board_.state("a").load == 0


# ------------------------------------------------------------------ the customer's language


@pytest.mark.parametrize(
    ("hints", "language"),
    [
        (("da",), "da"),
        (("da-DK",), "da"),
        (("en_GB",), "en"),
        (("DE",), "de"),
        ((None, "sv-SE"), "sv"),
        (("danish", "xx", 5, None), None),
        (("zz-ZZ", "fi"), "fi"),
    ],
)
def test_customer_language_from_hints(hints: tuple[object, ...], language: str | None) -> None:
    assert customer_language(*hints) == language
