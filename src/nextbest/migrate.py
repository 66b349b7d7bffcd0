"""Moving an installation from one store to another (``nextbest migrate``): an embedded
SQLite file to PostgreSQL, say, when one machine is no longer enough.

What is copied, in this order and in batches, through the store ports alone (so any backend
``bootstrap.open_stores`` opens is a source or a target):

1. the event log, every event in seq order. The target hands out its own seqs: they may
   differ numerically from the source's (gaps are not copied) but the order is identical;
2. the decision log, in the order decisions were appended;
3. the quarantine, the held messages oldest first (the target numbers them afresh);
4. the callback queue, every callback as it is (state, history, version), by id, and the
   advisors' presence and rotation facts: not derived from the logs (a callback's
   transitions are in the event log, but its booking and version are its own), so copied
   as they are;
5. the saved state (profiles, identity links, learned models) only as a head start: it is
   derived, the logs are the truth. It is copied when it was folded under the catalog given
   (``--catalog``) and its positions can be translated to the target's (the watermark to the
   target seq of the same event, the learner's decision log position to the target's);
   otherwise nothing is copied and the target folds its logs on its first start. A copied
   state is proved equal to a rebuild: an engine restored from it on the target replays the
   target's logs and must find identical profiles and models.

Then it is verified: each port's row count on the target equals the source's, and a sha256
over its rows, encoded in order, is equal (events: the event bodies in seq order; decisions:
in append order; held messages: reason and event, oldest first; callbacks by id; advisors
by id with their presence and last assignment); and the logs replayed on
each side under the catalog give identical profiles and models. Every mismatch is listed in
``MigrationReport.problems``.

A target that holds anything is refused unless ``resume``: then each port's rows on the target
must be the first rows of the source's, in the same order (compared by messageId / decision
id, one by one), and the copy goes on after them; callbacks and advisors the target holds
as the source does are kept, the others written again. Appends are all or nothing per batch, so an
interrupted copy always leaves such a prefix; messageId dedup on the target makes even a
repeated batch harmless. The source must be at rest (its server stopped): what it receives
during the copy is not copied, and the verification says so.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec

from nextbest.advisors.model import Callback
from nextbest.bootstrap import MEMORY, POSTGRES_SCHEMES, open_stores
from nextbest.catalog.compiled import Catalog
from nextbest.decide.model import Decision
from nextbest.engine import Engine
from nextbest.errors import InputError, NotFound
from nextbest.events.model import Event
from nextbest.experiments.counters import CounterChanges
from nextbest.settings import without_password
from nextbest.store.port import HeldMessage, OutboxState, StateRow, Stores
from nextbest.store.snapshot import (
    experiment_rows,
    learner_rows,
    link_row,
    profile_row,
    read_snapshot,
)

__all__ = [
    "SQLITE_PREFIX",
    "MigrationReport",
    "PortCopy",
    "Progress",
    "ReplayCheck",
    "StateCopy",
    "migrate",
    "store_location",
]

#: how a source or target may name an embedded SQLite file: ``sqlite:PATH`` (or a bare path)
SQLITE_PREFIX = "sqlite:"

#: ``progress(port, rows_done, rows_total)``, after each batch written; raising stops the copy
#: (what was written stays: ``resume`` continues it)
Progress = Callable[[str, int, int], None]

_HELD_PAGE = 5_000


class PortCopy(msgspec.Struct, frozen=True, kw_only=True):
    """One port's copy: rows on each side, what this run wrote, and both digests."""

    port: str
    #: rows on the source, and on the target after the copy
    source_rows: int
    target_rows: int
    #: rows written by this run; rows found on the target already (``resume``)
    copied: int
    kept: int
    #: encoded size of the source's rows (the bodies the stores keep)
    bytes: int
    seconds: float
    #: sha256 over the rows encoded in order, on each side
    source_digest: str
    target_digest: str

    @property
    def matches(self) -> bool:
        return self.source_rows == self.target_rows and self.source_digest == self.target_digest

    @property
    def rows_per_second(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0


class StateCopy(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the saved state was copied (rows, at which target seq) or left to a rebuild."""

    copied: bool
    rows: int = 0
    #: the target log position the copied state was folded up to
    seq: int = 0
    seconds: float = 0.0
    #: why it was not copied, or what was copied
    note: str = ""


class ReplayCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The logs replayed on each side under the catalog: are profiles and models identical?"""

    catalog: str
    events: int
    profiles: int
    #: profiles (and their keys) identical on both sides; the first differing keys
    identical: bool
    differing: list[str]
    models_identical: bool
    #: the target's live state (restored from the copied state, or folded from its log)
    #: equals a replay of the target's logs (``nextbest replay`` on the target)
    target_replay_identical: bool
    seconds: float


class MigrationReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``migrate`` copied and what it checked; ``ok`` when nothing differs."""

    #: where from and where to, passwords masked
    source: str
    target: str
    resumed: bool
    ports: list[PortCopy]
    state: StateCopy
    replay: ReplayCheck
    seconds: float
    #: every mismatch found, in words (empty: the copy is verified)
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rows(self) -> int:
        return sum(p.copied for p in self.ports)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.ports)


def store_location(text: str) -> str:
    """What ``open_stores`` takes for a ``--from`` / ``--to``: ``sqlite:PATH`` (also
    ``sqlite:///abs/path``) is PATH; a URL or a bare path is itself."""
    if text.startswith(SQLITE_PREFIX):
        path = text[len(SQLITE_PREFIX) :]
        return path[2:] if path.startswith("//") else path
    return text


def _is_file(data: str) -> bool:
    return data != MEMORY and not data.startswith(POSTGRES_SCHEMES)


class _Digest:
    """Rows counted, sized and hashed in order."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.rows = 0
        self.bytes = 0

    def add(self, body: bytes) -> None:
        # length-prefixed: two rows never hash like one
        self.sha.update(len(body).to_bytes(8, "big"))
        self.sha.update(body)
        self.rows += 1
        self.bytes += len(body)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


_encode = msgspec.json.Encoder().encode


def _port_copy(
    port: str,
    source: _Digest,
    target_bodies: Iterable[bytes],
    copied: int,
    kept: int,
    began: float,
) -> PortCopy:
    """A port's report: what was read from the source (``source``) against the target's
    rows read back now (``target_bodies``, in the target's order)."""
    seconds = time.perf_counter() - began
    check = _Digest()
    for body in target_bodies:
        check.add(body)
    return PortCopy(
        port=port,
        source_rows=source.rows,
        target_rows=check.rows,
        copied=copied,
        kept=kept,
        bytes=source.bytes,
        seconds=seconds,
        source_digest=source.hexdigest(),
        target_digest=check.hexdigest(),
    )


def _held_body(m: HeldMessage) -> bytes:
    """A held message as the digest sees it: everything but its place in the quarantine."""
    return _encode([m.received_at, m.code, m.reason, m.path, m.sender, m.event])


def _held_all(stores: Stores) -> Iterator[HeldMessage]:
    after = 0
    while True:
        page = stores.quarantine.held(after, _HELD_PAGE)
        yield from page
        if len(page) < _HELD_PAGE:
            return
        after = page[-1].id


class _Prefix:
    """The target's rows, compared one by one with the source's first rows (``resume``)."""

    def __init__(self, port: str, ids: Iterator[tuple[str, int]]) -> None:
        self.port = port
        self.ids = ids
        self.open = True
        self.kept = 0
        #: the target's own position of the last row kept
        self.last = 0

    def covers(self, key: str) -> bool:
        """True while the target holds this row already (the next one of its prefix)."""
        if not self.open:
            return False
        found = next(self.ids, None)
        if found is None:
            self.open = False
            return False
        if found[0] != key:
            raise InputError(
                f"the target's {self.port} are not the first of the source's: row "
                f"{self.kept + 1:,} is {found[0]!r} on the target, {key!r} on the source; "
                "--resume continues only a copy of this source (migrate into an empty store)"
            )
        self.kept += 1
        self.last = found[1]
        return True

    def finish(self) -> None:
        """InputError when the target holds more rows than the source."""
        if self.open and next(self.ids, None) is not None:
            raise InputError(
                f"the target holds more {self.port} than the source ({self.kept:,} match): "
                "--resume continues only a copy of this source"
            )


class _Copied(NamedTuple):
    port: PortCopy
    #: the target position of the source's row at ``mark`` (0: none at or before it)
    mapped: int | None


def _copy_events(
    source: Stores, target: Stores, batch: int, progress: Progress | None, resume: bool, mark: int
) -> _Copied:
    """Every event in seq order; ``mapped``: the target seq of the last event with source
    seq <= ``mark`` (the saved state's watermark)."""
    began = time.perf_counter()
    total = source.events.count()
    prefix = _Prefix(
        "events",
        ((s.event.message_id, s.seq) for s in target.events.scan(0)) if resume else iter(()),
    )
    digest = _Digest()
    pending: list[tuple[int, Event]] = []
    mapped: int | None = 0
    copied = 0
    duplicates = 0

    def flush() -> None:
        nonlocal copied, duplicates, mapped
        seqs = target.events.append([e for _, e in pending])
        for (seq, _), new in zip(pending, seqs, strict=True):
            if new is None:
                duplicates += 1
            elif seq <= mark:
                mapped = new
        copied += len(pending)
        pending.clear()
        if progress is not None:
            progress("events", prefix.kept + copied, total)

    for stored in source.events.scan(0):
        digest.add(_encode(stored.event))
        if prefix.covers(stored.event.message_id):
            if stored.seq <= mark:
                mapped = prefix.last
            continue
        pending.append((stored.seq, stored.event))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    prefix.finish()
    if duplicates:
        mapped = None  # the order on the target is not the source's: no state copy
    bodies = (_encode(stored.event) for stored in target.events.scan(0))
    return _Copied(
        _port_copy("events", digest, bodies, copied - duplicates, prefix.kept, began), mapped
    )


def _copy_decisions(
    source: Stores,
    target: Stores,
    batch: int,
    progress: Progress | None,
    resume: bool,
    mark: int | None,
) -> _Copied:
    """Every decision in append order; ``mapped``: the target's decision log position after
    the decisions the source had logged up to position ``mark`` (the saved learner's), None
    when it cannot be known (they were on the target already)."""
    began = time.perf_counter()
    total = sum(1 for _ in source.decisions.decisions_after(0))
    # how many decisions the source logged up to ``mark``: every one but those after it
    upto = None if mark is None else total - sum(1 for _ in source.decisions.decisions_after(mark))
    target_ids: Iterator[tuple[str, int]] = iter(())
    if resume:
        target_ids = ((d.decision_id, 0) for d in target.decisions.decisions_after(0))
    prefix = _Prefix("decisions", target_ids)
    digest = _Digest()
    pending: list[Decision] = []
    copied = 0
    mapped: int | None = 0 if upto == 0 else None

    def flush() -> None:
        nonlocal copied, mapped
        target.decisions.append_decisions(pending)
        copied += len(pending)
        pending.clear()
        if upto is not None and prefix.kept + copied == upto:
            mapped = target.decisions.decision_log_position()
        if progress is not None:
            progress("decisions", prefix.kept + copied, total)

    for decision in source.decisions.decisions_after(0):
        digest.add(_encode(decision))
        if prefix.covers(decision.decision_id):
            continue  # already there: its target position is not known here (mapped None)
        pending.append(decision)
        # a batch ends where the saved learner's position falls, to read the target's there
        if len(pending) >= batch or prefix.kept + copied + len(pending) == upto:
            flush()
    if pending:
        flush()
    prefix.finish()
    bodies = (_encode(d) for d in target.decisions.decisions_after(0))
    return _Copied(_port_copy("decisions", digest, bodies, copied, prefix.kept, began), mapped)


def _copy_held(
    source: Stores, target: Stores, batch: int, progress: Progress | None, resume: bool
) -> PortCopy:
    began = time.perf_counter()
    total = source.quarantine.held_count()
    target_ids: Iterator[tuple[str, int]] = iter(())
    if resume:
        target_ids = ((m.event.message_id, m.id) for m in _held_all(target))
    prefix = _Prefix("held messages", target_ids)
    digest = _Digest()
    pending: list[HeldMessage] = []
    copied = 0

    def flush() -> None:
        nonlocal copied
        target.quarantine.hold(pending)
        copied += len(pending)
        pending.clear()
        if progress is not None:
            progress("quarantine", prefix.kept + copied, total)

    for m in _held_all(source):
        digest.add(_held_body(m))
        if prefix.covers(m.event.message_id):
            continue
        pending.append(m._replace(id=0))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    prefix.finish()
    bodies = (_held_body(m) for m in _held_all(target))
    return _port_copy("quarantine", digest, bodies, copied, prefix.kept, began)


def _callbacks_all(stores: Stores, page: int) -> Iterator[Callback]:
    after = ""
    while True:
        found = stores.callbacks.scan(after, page)
        yield from found
        if len(found) < page:
            return
        after = found[-1].id


def _copy_callbacks(
    source: Stores, target: Stores, batch: int, progress: Progress | None, resume: bool
) -> PortCopy:
    """Every callback as it is, by id; on ``resume`` one the target holds equal is kept."""
    began = time.perf_counter()
    total = source.callbacks.count()
    digest = _Digest()
    pending: list[Callback] = []
    copied = kept = 0

    def flush() -> None:
        nonlocal copied
        target.callbacks.restore(pending)
        copied += len(pending)
        pending.clear()
        if progress is not None:
            progress("callbacks", kept + copied, total)

    for c in _callbacks_all(source, batch):
        digest.add(_encode(c))
        if resume and target.callbacks.get(c.id) == c:
            kept += 1
            continue
        pending.append(c)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    bodies = (_encode(c) for c in _callbacks_all(target, batch))
    return _port_copy("callbacks", digest, bodies, copied, kept, began)


def _advisor_rows(stores: Stores) -> list[tuple[str, bytes]]:
    """Each advisor's presence and last assignment, by id, encoded."""
    presences, rotation = stores.callbacks.presences(), stores.callbacks.rotation()
    rows = []
    for advisor in sorted(set(presences) | set(rotation)):
        presence, at = presences.get(advisor, (None, None))
        rows.append((advisor, _encode([advisor, presence, at, rotation.get(advisor)])))
    return rows


def _copy_advisors(source: Stores, target: Stores, resume: bool) -> PortCopy:
    """The advisors' presence and rotation facts, all in one write."""
    began = time.perf_counter()
    digest = _Digest()
    for _, body in _advisor_rows(source):
        digest.add(body)
    held = dict(_advisor_rows(target)) if resume else {}
    fresh = {a for a, body in _advisor_rows(source) if held.get(a) != body}
    presences = {a: p for a, p in source.callbacks.presences().items() if a in fresh}
    rotation = {a: t for a, t in source.callbacks.rotation().items() if a in fresh}
    if fresh:
        target.callbacks.restore([], presences, rotation)
    bodies = (body for _, body in _advisor_rows(target))
    return _port_copy("advisors", digest, bodies, len(fresh), digest.rows - len(fresh), began)


class _Marks(NamedTuple):
    """The source's saved state's positions: its watermark and its learner's position."""

    seq: int
    position: int | None


def _saved_marks(source: Stores, catalog: Catalog) -> tuple[_Marks | None, str]:
    """The positions to translate when the saved state can be copied; else why not."""
    saved = source.state.load_state()
    if saved is None:
        return None, "the source saved no state"
    if saved.version != catalog.digest:
        return None, (
            f"the source's state was folded under another catalog ({saved.version[:12]}, "
            f"not {catalog.version})"
        )
    snap = read_snapshot(saved, catalog.digest)
    if snap is None:
        return None, "the source's saved state does not read"
    return _Marks(snap.seq, snap.decision_log_position if snap.learner is not None else None), ""


def _copy_state(
    source: Stores, target: Stores, catalog: Catalog, seq: int, position: int | None
) -> StateCopy:
    """The source's saved state onto the target, its positions the target's."""
    began = time.perf_counter()
    snap = read_snapshot(source.state.load_state(), catalog.digest)
    if snap is None:  # changed since it was read: only a server writing it would
        return StateCopy(copied=False, note="the source's saved state changed during the copy")
    rows: list[StateRow] = [profile_row(key, p) for key, p in snap.profiles.items()]
    rows.extend(link_row(kind, key, user) for kind, key, user in snap.links)
    if snap.learner is not None:
        rows.extend(learner_rows(snap.learner, position or 0))
    if snap.experiments_position is not None:
        # the counters' own position is the learner's or later: from the learner's (or the
        # log's start) the target records some control exposures again, which changes nothing
        changes = CounterChanges(list(snap.experiments), list(snap.exposures), True)
        rows.extend(experiment_rows(changes, position or 0))
    target.state.save_state(seq, catalog.digest, rows, replace=True)
    return StateCopy(
        copied=True,
        rows=len(rows),
        seq=seq,
        seconds=time.perf_counter() - began,
        note=f"{len(snap.profiles):,} profiles"
        + (" and the models" if snap.learner is not None else "")
        + f", as folded up to the source's seq {snap.seq:,}",
    )


def _profiles(engine: Engine) -> dict[str, bytes]:
    enc = msgspec.msgpack.encode
    return {p.customer_id: enc(p) for p in engine.profiles()}


def _replay_check(source: Stores, target: Stores, catalog: Catalog) -> ReplayCheck:
    """Fold the source's logs from nothing (its saved state untouched: the replay's state
    lives in memory), restore an engine on the target (from the copied state, or its logs),
    and compare; then the target replays its own logs (``nextbest replay``)."""
    began = time.perf_counter()
    scratch = open_stores(MEMORY)  # in-memory twins: only their state port is used
    keep_open = source._replace(state=scratch.state, close=lambda: None)
    rebuilt = Engine(catalog, keep_open)
    try:
        want, want_models = _profiles(rebuilt), rebuilt.model_state()
        events = rebuilt.event_log.count()
    finally:
        rebuilt.release()
    live = Engine(catalog, target._replace(close=lambda: None))
    try:
        got, got_models = _profiles(live), live.model_state()
        own = live.replay()
    finally:
        live.release()
    differing = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    return ReplayCheck(
        catalog=catalog.version,
        events=events,
        profiles=len(want),
        identical=not differing,
        differing=differing[:20],
        models_identical=want_models == got_models,
        target_replay_identical=own.identical and own.models_identical,
        seconds=time.perf_counter() - began,
    )


#: outbox states whose messages a migration would lose (the outbox is not copied; delivered
#: and dead messages are history the source keeps)
_UNSENT = (OutboxState.PENDING, OutboxState.DELIVERING)


def _holdings(stores: Stores) -> list[str]:
    """What a store holds, in words (empty: nothing)."""
    found = []
    if n := stores.events.count():
        found.append(f"{n:,} events")
    if n := stores.decisions.decision_log_position():
        found.append(f"a decision log up to position {n:,}")
    if n := stores.quarantine.held_count():
        found.append(f"{n:,} held messages")
    if n := stores.callbacks.count():
        found.append(f"{n:,} callbacks")
    if stores.callbacks.presences() or stores.callbacks.rotation():
        found.append("advisors' presence")
    if stores.state.load_state() is not None:
        found.append("a saved state")
    return found


def migrate(
    source: str,
    target: str,
    catalog: Catalog,
    *,
    batch: int = 5_000,
    resume: bool = False,
    state: bool = True,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy the store ``source`` names (``sqlite:PATH``, a path, a ``postgresql://`` URL)
    into the store ``target`` names, then verify the copy (module docstring). ``catalog``:
    what the logs are replayed under, and the saved state copied only if folded under it
    (``state=False``: never copied, the target folds its logs on its first start).

    NotFound: no SQLite file at ``source``. InputError: source and target are one store,
    ``batch`` < 1, the target holds something (and not ``resume``), or what it holds is not
    the start of the source's logs. StoreUnavailable: a server cannot be reached (its
    password never in the message)."""
    began = time.perf_counter()
    src, dst = store_location(source), store_location(target)
    if batch < 1:
        raise InputError(f"--batch must be at least 1, not {batch}")
    if _is_file(src) and not Path(src).exists():
        raise NotFound(f"no store at {src}")
    same = _is_file(src) and _is_file(dst) and Path(dst).exists()
    if src == dst or (same and Path(src).resolve() == Path(dst).resolve()):
        raise InputError(f"--from and --to name the same store: {without_password(src)}")
    source_stores = open_stores(src)
    try:
        target_stores = open_stores(dst)
        try:
            return _migrate(
                source_stores,
                target_stores,
                catalog,
                (without_password(src), without_password(dst)),
                batch=batch,
                resume=resume,
                state=state,
                progress=progress,
                began=began,
            )
        finally:
            target_stores.close()
    finally:
        source_stores.close()


def _migrate(
    source: Stores,
    target: Stores,
    catalog: Catalog,
    names: tuple[str, str],
    *,
    batch: int,
    resume: bool,
    state: bool,
    progress: Progress | None,
    began: float,
) -> MigrationReport:
    held = _holdings(target)
    if held and not resume:
        raise InputError(
            f"the target {names[1]} is not empty: it holds {', '.join(held)}. Migrate into "
            "an empty store, or pass --resume to continue an interrupted copy of this source"
        )
    unsent = {s: n for s, n in source.outbox.counts().items() if n and s in _UNSENT}
    if unsent:  # the outbox is not copied: what it still has to send would be lost
        raise InputError(
            f"the source's outbox still holds {', '.join(f'{n:,} {s}' for s, n in unsent.items())}"
            " message(s): the outbox is not migrated. Deliver them first (nextbest outbox "
            "send --once; nextbest outbox list), then migrate"
        )
    marks, why_not = _saved_marks(source, catalog) if state else (None, "--no-state")
    events = _copy_events(source, target, batch, progress, resume, marks.seq if marks else 0)
    decisions = _copy_decisions(
        source, target, batch, progress, resume, marks.position if marks else None
    )
    quarantine = _copy_held(source, target, batch, progress, resume)
    callbacks = _copy_callbacks(source, target, batch, progress, resume)
    advisors = _copy_advisors(source, target, resume)
    ports = [events.port, decisions.port, quarantine, callbacks, advisors]
    problems = [
        f"{p.port}: {p.source_rows:,} on the source, {p.target_rows:,} on the target"
        + ("" if p.source_rows != p.target_rows else ", their contents differ (sha256)")
        for p in ports
        if not p.matches
    ]
    if events.port.copied + events.port.kept != events.port.source_rows:
        problems.append(
            f"events: {events.port.source_rows - events.port.copied - events.port.kept:,} "
            "were on the target already elsewhere in its log (its order is not the source's)"
        )
    if target.decisions.decision_log_position() < source.decisions.decision_log_position():
        # an engine on event time counts decision ids from this position: it must not fall
        problems.append(
            "decisions: the target's decision log position is below the source's (an "
            "event-time engine would count decision ids already logged)"
        )
    copy = StateCopy(copied=False, note=why_not)
    if marks is not None and events.mapped is not None and decisions.mapped is not None:
        copy = _copy_state(source, target, catalog, events.mapped, decisions.mapped)
    elif marks is not None:
        copy = StateCopy(
            copied=False, note="its positions on the target are not known after a resume"
        )
    if not copy.copied:
        copy = msgspec.structs.replace(
            copy, note=f"{copy.note}: the target folds its logs on its first start"
        )
    replay = _replay_check(source, target, catalog)
    if not replay.identical:
        problems.append(
            f"replay: profiles differ between source and target: {', '.join(replay.differing)}"
        )
    if not replay.models_identical:
        problems.append("replay: the models rebuilt on the source and the target differ")
    if not replay.target_replay_identical:
        problems.append(
            "replay: the target's state differs from a replay of its logs "
            "(nextbest replay --write on the target rebuilds it)"
        )
    return MigrationReport(
        source=names[0],
        target=names[1],
        resumed=resume,
        ports=ports,
        state=copy,
        replay=replay,
        seconds=time.perf_counter() - began,
        problems=problems,
    )
