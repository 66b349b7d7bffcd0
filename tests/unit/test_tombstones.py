"""Erasure tombstones (``scaled_erasure.Tombstones``): a keyed hash of each erased id, never
the id; an event an erasure of its ids deletes is dropped when it was accepted at or before
the erasure, kept when it came after (new data) or when another user sent it from an erased
device (theirs, as the event log keeps it); another key makes other hashes."""

from __future__ import annotations

import msgspec

from nextbest.events import parse_batch
from nextbest.scaled_erasure import Tombstones, tombstone_key
from tests.support import T0, batch, page


def _event(user: str | None, anon: str | None, received: float):
    (event,) = parse_batch(batch(page("https://b.example/", user=user, anon=anon)), T0)
    return msgspec.structs.replace(event, received_at=received)


def test_an_erased_id_s_event_accepted_before_the_erasure_is_dropped_after_it_kept():
    stones = Tombstones(tombstone_key("s1"))
    digests = stones.of(["gone"], ["gone-dev"])
    assert all("gone" not in d for d in digests)
    stones.add(dict.fromkeys(digests, T0 + 10))
    assert stones.drops(_event("gone", None, T0 + 5))
    assert stones.drops(_event(None, "gone-dev", T0 + 10))
    assert not stones.drops(_event("someone", "gone-dev", T0 + 5))  # theirs, as in the log
    assert not stones.drops(_event("gone", None, T0 + 11))  # after: new data
    assert not stones.drops(_event("kept", "kept-dev", T0 + 5))
    assert stones.of_customer_key("anon:gone-dev") == digests[1]
    assert stones.of_customer_key("gone") == digests[0]
    assert Tombstones(tombstone_key("s2")).of(["gone"], []) != digests[:1]
    stones.prune(T0 + 10 + 8 * 86_400)
    assert not stones.drops(_event("gone", None, T0 + 5))


class Stream:
    """Messages by stream sequence: their messageIds (``ErasableStream``'s reads)."""

    def __init__(self, ids: dict[int, str]) -> None:
        self.ids = ids

    def message_ids(self, seqs):
        return {s: self.ids[s] for s in seqs if s in self.ids}

    def erase_messages(self, seqs):
        return sum(self.ids.pop(s, None) is not None for s in seqs)

    def purge_learning(self, upto):
        return None


def test_an_erased_event_s_stream_copies_are_followed_back_through_every_hop():
    from nextbest.scaled_erasure import stream_copies

    # 3: an API worker's message; 7: the stitch it became on partition 1; 12: that stitch
    # put back; 20: forwarded on; 21 another customer's forward of 5
    stream = Stream(
        {3: "msg-1", 5: "msg-2", 7: "stitch:1:3", 12: "defer:2:7", 20: "fwd:2:12", 21: "fwd:0:5"}
    )
    assert stream_copies(stream, [20]) == {3, 7, 12, 20}
    assert stream_copies(stream, [20, 99]) == {3, 7, 12, 20, 99}  # 99: gone already
    assert stream.erase_messages(stream_copies(stream, [20])) == 4
    assert sorted(stream.ids) == [5, 21]
