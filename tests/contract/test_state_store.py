"""The state port's contract, over every backend: rows saved with their watermark, only
what changed, replaced whole, streamed back; and the snapshot format on top of it."""

from __future__ import annotations

import pytest

from nextbest.profile.model import Profile
from nextbest.store import StateRow, StateStore, Stores
from nextbest.store.port import StateReads
from nextbest.store.snapshot import learner_rows, link_row, profile_row, read_snapshot


@pytest.fixture
def state(state_stores: Stores) -> StateStore:
    return state_stores.state


def saved(state: StateStore) -> tuple[int, str, dict[tuple[str, str], bytes | None]]:
    got = state.load_state()
    assert got is not None
    return got.seq, got.version, {(r.kind, r.key): r.body for r in got.rows}


def test_state_saves_only_changed_rows(state: StateStore):
    assert state.load_state() is None
    state.save_state(7, "v1", [StateRow("profile", "u1", b"a"), StateRow("anon", "x", b"u1")])
    state.save_state(9, "v1", [StateRow("profile", "u2", b"b"), StateRow("anon", "x", None)])
    assert saved(state) == (9, "v1", {("profile", "u1"): b"a", ("profile", "u2"): b"b"})
    state.save_state(10, "v2", [StateRow("profile", "u3", b"c")], replace=True)
    assert saved(state) == (10, "v2", {("profile", "u3"): b"c"})


def test_state_streams_many_rows(state: StateStore):
    rows = [StateRow("profile", f"u{i:06d}", b"x" * 10) for i in range(25_000)]
    state.save_state(1, "v", rows)
    assert len(saved(state)[2]) == 25_000


def test_a_snapshot_reads_back_as_it_was_saved(state: StateStore):
    profile = Profile(customer_id="u1", user_id="u1", traits={"age": 40})
    rows = [
        profile_row("u1", profile),
        link_row("anon", "dev-1", "u1"),
        link_row("alias", "old", "u1"),
        *learner_rows(b"model bytes", 42),
    ]
    state.save_state(5, "cat-v1", rows)
    snap = read_snapshot(state.load_state(), "cat-v1")
    assert snap is not None
    assert snap.seq == 5
    assert snap.profiles == {"u1": profile}
    assert sorted(snap.links) == [("alias", "old", "u1"), ("anon", "dev-1", "u1")]
    assert (snap.learner, snap.decision_log_position) == (b"model bytes", 42)
    assert read_snapshot(state.load_state(), "another catalog") is None
    state.save_state(6, "cat-v1", [profile_row("u1", None), link_row("anon", "dev-1", None)])
    again = read_snapshot(state.load_state(), "cat-v1")
    assert again is not None
    assert (again.profiles, again.links) == ({}, [("alias", "old", "u1")])


def test_an_unreadable_log_position_counts_the_whole_log(state: StateStore):
    state.save_state(1, "v", [StateRow("learner", "decision_log_position", b"not a number")])
    snap = read_snapshot(state.load_state(), "v")
    assert snap is not None
    assert snap.decision_log_position is None


@pytest.mark.parametrize(
    "bad",
    [
        StateRow("profile", "u1", b"\xc1 not msgpack"),
        StateRow("anon", "dev-1", b"\xff\xfe"),
        StateRow("a kind from a later version", "x", b"1"),
    ],
)
def test_a_snapshot_with_a_row_this_version_cannot_read_is_not_used(
    state: StateStore, bad: StateRow
):
    state.save_state(3, "v", [profile_row("u2", Profile(customer_id="u2", user_id="u2")), bad])
    assert read_snapshot(state.load_state(), "v") is None


def test_an_erasure_s_rows_are_gone_from_the_saved_state(state_stores: Stores):
    """What ``Engine.forget`` marks (a profile, its device and alias links, an exposure) is
    deleted by the next save, on every backend (Redis included: the API workers' reads)."""
    state = state_stores.state
    mine = [
        StateRow("profile", "gone", b"email gone@example.dk"),
        StateRow("anon", "gone-dev", b"gone"),
        StateRow("alias", "gone-old", b"gone"),
        StateRow("exposure", "camp/gone", b"arm"),
    ]
    state.save_state(5, "v", [*mine, StateRow("profile", "kept", b"k")])
    state.save_state(5, "v", [r._replace(body=None) for r in mine])
    assert saved(state) == (5, "v", {("profile", "kept"): b"k"})
    if isinstance(state, StateReads):
        assert state.read_rows([(r.kind, r.key) for r in mine]) == [None] * 4
