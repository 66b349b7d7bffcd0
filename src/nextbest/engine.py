"""The composition root: catalog + store + profiles + identity wired into one small API.

    ingest(events)  -> durable append to the event log, then fold into live profiles
    decide(...)     -> one profile read, the pure pipeline, the decision logged
    profile(id)     -> the live profile
    replay()        -> every profile rebuilt from the log alone
    close()         -> flush decisions, write a snapshot

All calls hold one lock, so the log order is the fold order and a new event is visible to
the very next decision.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from nextbest.catalog.compiled import Catalog
from nextbest.clock import Clock, SystemClock
from nextbest.decide.feedback import check_feedback, is_feedback
from nextbest.decide.model import Chooser, Decision, DecisionRequest
from nextbest.decide.pipeline import decide as run_pipeline
from nextbest.errors import ValidationError
from nextbest.events.model import Event, EventType
from nextbest.events.parse import DEFAULT_LIMITS, Limits, parse_batch, parse_message
from nextbest.learn.learner import Learner, PlacementModel
from nextbest.profile.fold import fold
from nextbest.profile.identity import ANON_PREFIX, IdentityMap, LinkKind
from nextbest.profile.model import Profile
from nextbest.rules.context import rule_variables
from nextbest.settings import Settings
from nextbest.store import open_store
from nextbest.store.catalog_files import load_catalog
from nextbest.store.port import EventStore, StateRow, StoredEvent
from nextbest.store.sqlite import SQLiteStore

__all__ = ["Engine", "IngestResult", "ReplayReport"]


class IngestResult(msgspec.Struct, frozen=True):
    accepted: int
    duplicates: int


class ReplayReport(msgspec.Struct, frozen=True):
    events: int
    profiles: int
    identical: bool
    differing: list[str]
    #: the learned models (and waiting views, budgets) rebuilt from the logs are identical
    models_identical: bool = True


_PROFILE = "profile"
_LEARNER = "learner"
#: the learner row's companion: where the decision log ended when the learner was saved
_DECISION_LOG = "decision_log_position"
#: flushed decisions kept in memory for feedback joins
_RECENT_DECISIONS = 100_000


class _State:
    """Live profiles and the identity map, folded from the log up to ``seq``.

    ``dirty`` names the (kind, key) rows changed since the last save; ``replace`` says the
    saved rows are stale as a whole (a new catalog, a rebuild) and must all be rewritten.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.learner = Learner(catalog)
        self.profiles: dict[str, Profile] = {}
        self.identity = IdentityMap()
        self.seq = 0
        self.dirty: set[tuple[str, str]] = set()
        self.replace = True


def _new_id() -> str:
    return uuid.uuid4().hex


_encode = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode


class Engine:
    def __init__(
        self,
        catalog: Catalog,
        store: EventStore,
        clock: Clock | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        new_id: Callable[[], str] = _new_id,
        decision_flush_every: int = 10_000,
        snapshot_every: int = 50_000,
        freeze_gc: bool = False,
    ) -> None:
        """``freeze_gc``: after restoring, move everything loaded out of the cyclic
        collector's reach (``gc.freeze``), as a long-running server wants; process-wide."""
        self.catalog = catalog
        self.store = store
        self.clock = clock or SystemClock()
        self.limits = limits
        self._new_id = new_id
        self._lock = threading.RLock()  # live state: fold and decide
        self._write_lock = threading.Lock()  # ingest: log order == fold order
        self._save_lock = threading.Lock()  # one state save at a time, cut and write in order
        self._state = _State(catalog)
        self._pending: dict[str, Decision] = {}
        #: flushes appending outside the lock; a snapshot waits for none (``_flushed``)
        self._flushing = 0
        self._flushed = threading.Condition(self._lock)
        self._recent: OrderedDict[str, Decision] = OrderedDict()
        self._flush_every = decision_flush_every
        self._snapshot_every = snapshot_every
        self._since_snapshot = 0
        self._closed = False
        self._freeze_gc = freeze_gc
        self._restore()

    @classmethod
    def from_settings(
        cls, settings: Settings, clock: Clock | None = None, new_id: Callable[[], str] = _new_id
    ) -> Engine:
        catalog = load_catalog(settings.catalog)
        if settings.data == ":memory:":
            store: EventStore = open_store(":memory:")
        else:
            store = SQLiteStore(settings.data, synchronous=settings.sqlite_synchronous)
        return cls(
            catalog,
            store,
            clock,
            decision_flush_every=settings.decision_flush_every,
            snapshot_every=settings.snapshot_every,
            freeze_gc=True,
            new_id=new_id,
        )

    # ---------------------------------------------------------------- ingest
    def parse_batch(self, body: bytes) -> list[Event]:
        """Validate a ``/v1/batch`` body into events (ValidationError with the field path)."""
        return parse_batch(body, self.clock.now(), self.limits)

    def parse_message(self, kind: EventType, body: bytes) -> Event:
        return parse_message(kind, body, self.clock.now(), self.limits)

    def ingest_batch(self, body: bytes) -> IngestResult:
        """Parse and ingest a ``/v1/batch`` body; all messages are stored or none."""
        return self.ingest(self.parse_batch(body))

    def ingest(self, events: Sequence[Event], prefix: str = "$.batch") -> IngestResult:
        """Check, append durably, then fold. Duplicate messageIds are acknowledged and skipped.

        Feedback must answer a logged decision of the same customer (``check_feedback``);
        one bad event rejects the whole call and nothing is stored. ``prefix`` names where
        the events sit in the request body for error paths (``""``: a single message).
        The durable append holds only the write lock, so decisions go on during the fsync;
        the fold then holds the state lock.
        """
        with self._write_lock:
            joined = self._check_feedback(events, prefix)
            seqs = self.store.append(events)
            accepted = 0
            with self._lock:
                for i, (seq, event) in enumerate(zip(seqs, events, strict=True)):
                    if seq is not None:
                        self._apply(self._state, StoredEvent(seq, event), joined.get(i))
                        accepted += 1
                self._since_snapshot += accepted
            return IngestResult(accepted, len(events) - accepted)

    def _check_feedback(self, events: Sequence[Event], prefix: str) -> dict[int, Decision]:
        """The decision each feedback event answers, by index; ValidationError otherwise."""
        joined: dict[int, Decision] = {}
        for i, event in enumerate(events):
            if not is_feedback(event):
                continue
            decision = self.decision(str(event.properties["decision_id"]))
            same = decision is not None and self._same_customer(decision.customer_id, event)
            check_feedback(event, decision, same, f"{prefix}[{i}]" if prefix else "$")
            joined[i] = decision  # type: ignore[assignment]  # checked above
        return joined

    def _same_customer(self, customer_id: str, event: Event) -> bool:
        """The decision's customer is the event's: the id it was made for, or one profile."""
        if customer_id.startswith(ANON_PREFIX):
            if event.anonymous_id == customer_id[len(ANON_PREFIX) :]:
                return True
        elif event.user_id == customer_id:
            return True
        with self._lock:
            identity = self._state.identity
            return identity.resolve(event.user_id, event.anonymous_id) == identity.resolve_key(
                customer_id
            )

    @property
    def snapshot_due(self) -> bool:
        """``snapshot_every`` events folded since the last save: time to save (the server's
        background task asks, so no ingest request waits for a save)."""
        return self._since_snapshot >= self._snapshot_every

    def _profile_for(self, state: _State, key: str) -> Profile:
        profile = state.profiles.get(key)
        if profile is None:
            user = None if key.startswith(ANON_PREFIX) else key
            profile = state.profiles[key] = Profile(customer_id=key, user_id=user)
        return profile

    def _apply(self, state: _State, stored: StoredEvent, decision: Decision | None = None) -> None:
        event = stored.event
        state.seq = max(state.seq, stored.seq)
        if is_feedback(event) and decision is None:
            decision = self.decision(str(event.properties.get("decision_id")))
        state.learner.observe(event, decision)
        links = state.identity.link(event)
        key = state.identity.resolve(event.user_id, event.anonymous_id)
        state.dirty.add((_PROFILE, key))
        if links:
            state.dirty.update(links)
            self._rebuild(state, key, stored.seq)
            return
        fold(self._profile_for(state, key), event, self.catalog.matcher, self.catalog.fold_config)

    def _rebuild(self, state: _State, user_key: str, upto: int) -> None:
        """After a stitch: the user's profile is the fold of every linked id's events."""
        users, anons = state.identity.ids_of(user_key)
        for gone in [ANON_PREFIX + a for a in anons] + [u for u in users if u != user_key]:
            if state.profiles.pop(gone, None) is not None:
                state.dirty.add((_PROFILE, gone))
        profile = state.profiles[user_key] = Profile(customer_id=user_key, user_id=user_key)
        matcher, cfg = self.catalog.matcher, self.catalog.fold_config
        for stored in self.store.events_of(users, anons, upto):
            # a device's anonymous events, and the user's own: never another user's events
            # that carried the same anonymousId (a shared device)
            if stored.event.user_id is None or stored.event.user_id in users:
                fold(profile, stored.event, matcher, cfg)

    # ---------------------------------------------------------------- decide
    def decide(
        self,
        request: DecisionRequest,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        anonymous_only: bool = False,
        choose: Chooser | None = None,
    ) -> Decision:
        """Decide for a userId, or an anonymousId (resolved to its user once stitched, unless
        ``anonymous_only``: then only what that device did anonymously counts). ``choose``
        picks the items among the ranked eligible offers (default: the placement's learned model
        and exploration policy, or the catalog's order; a simulator's policy, say)."""
        if not user_id and not anonymous_id:
            raise ValidationError("userId or anonymousId is required", "$.userId")
        with self._lock:
            if anonymous_only and anonymous_id:
                key = ANON_PREFIX + anonymous_id
            else:
                key = self._state.identity.resolve(user_id, anonymous_id)
            profile = self._state.profiles.get(key) or Profile(
                customer_id=key, user_id=None if key.startswith(ANON_PREFIX) else key
            )
            decision = run_pipeline(
                self.catalog,
                profile,
                request,
                self.clock.now(),
                self._new_id(),
                choose or self._state.learner.choose,
            )
            self._pending[decision.decision_id] = decision
            if len(self._pending) >= self._flush_every:  # backpressure; normally a timer flushes
                self.flush()
            return decision

    def decision(self, decision_id: str) -> Decision | None:
        with self._lock:
            found = self._pending.get(decision_id) or self._recent.get(decision_id)
        return found if found is not None else self.store.decision(decision_id)

    def flush(self) -> None:
        """Write buffered decisions to the decision log (the server calls this every second)."""
        with self._lock:
            pending = list(self._pending.values())
            if not pending:
                return
            self._flushing += 1
        appended = False
        try:
            self.store.append_decisions(pending)  # on failure they stay buffered
            appended = True
        finally:
            with self._lock:  # logged and no longer pending in one step: a snapshot sees either
                if appended:
                    recent = self._recent
                    for d in pending:
                        self._pending.pop(d.decision_id, None)
                        recent[d.decision_id] = d
                    while len(recent) > _RECENT_DECISIONS:
                        recent.popitem(last=False)
                self._flushing -= 1
                self._flushed.notify_all()

    # ---------------------------------------------------------------- read
    def profile(self, customer_id: str) -> Profile | None:
        with self._lock:
            key = self._state.identity.resolve(customer_id, None)
            return self._state.profiles.get(key)

    def profile_view(self, customer_id: str) -> dict[str, Any] | None:
        """The stored profile and what rules see of it now (interest, lifecycle, ...)."""
        with self._lock:
            profile = self.profile(customer_id)
            if profile is None:
                return None
            now = self.clock.now()
            view = rule_variables(profile, self.catalog.topics, now, {})
            return {
                "customer_id": profile.customer_id,
                "as_of": now,
                "profile": msgspec.to_builtins(profile),
                "view": {k: v for k, v in view.items() if k not in ("context", "now")},
            }

    def models(self, top: int = 10) -> list[PlacementModel]:
        """Each learning placement's model: kind, version, training count, top features."""
        with self._lock:
            return self._state.learner.describe(top)

    def resolve(self, user_id: str | None, anonymous_id: str | None) -> str:
        with self._lock:
            return self._state.identity.resolve(user_id, anonymous_id)

    @property
    def profile_count(self) -> int:
        return len(self._state.profiles)

    def profiles(self) -> Iterable[Profile]:
        with self._lock:
            return list(self._state.profiles.values())

    # ---------------------------------------------------------------- replay, snapshots
    def _fold_log(self, state: _State, after: int = 0) -> int:
        n = 0
        for stored in self.store.scan(after):
            self._apply(state, stored)
            n += 1
        return n

    def _replayed(self) -> tuple[_State, ReplayReport]:
        self.flush()  # the decision log must hold every decision feedback may join
        fresh = _State(self.catalog)
        for decision in self.store.decisions():
            fresh.learner.record_decision(decision)
        n = self._fold_log(fresh)
        live = self._state.profiles
        enc = msgspec.msgpack.encode
        differing = sorted(
            k
            for k in set(live) | set(fresh.profiles)
            if k not in live or k not in fresh.profiles or enc(live[k]) != enc(fresh.profiles[k])
        )
        models_identical = fresh.learner.to_state() == self._state.learner.to_state()
        return fresh, ReplayReport(
            n, len(fresh.profiles), not differing, differing[:20], models_identical
        )

    def replay(self) -> ReplayReport:
        """Rebuild every profile from the log alone and compare with the live ones."""
        with self._write_lock, self._lock:  # no event appended but not yet folded
            return self._replayed()[1]

    def rebuild(self) -> ReplayReport:
        """Replace live state by a replay of the log, then save it whole."""
        with self._write_lock, self._lock:
            fresh, report = self._replayed()
            self._state = fresh  # a fresh state has replace=True: every row is rewritten
        self.snapshot()
        return report

    def snapshot(self) -> None:
        """Save what changed since the last save, so a restart folds only the log's tail.

        Rows are encoded under the state lock (a consistent cut) and written outside it; the
        save lock keeps an older cut from being written after a newer one. Decisions are
        flushed first: saved models never learned from a decision the log lacks. The learner
        is saved with the decision log's position at the cut (``decision_log_position``,
        under kind ``learner``: a version that cannot read it replays), its exploration
        budgets without the decisions still pending then, so that a restart counts exactly
        the decisions logged after that position.
        """
        self.flush()
        with self._save_lock:
            with self._lock:
                # no flush appending now: each decision is in the log or pending, not both
                self._flushed.wait_for(lambda: self._flushing == 0)
                state = self._state
                keys = (
                    {(_PROFILE, k) for k in state.profiles}
                    | {(LinkKind.ANON, a) for a in state.identity.anon_to_user}
                    | {(LinkKind.ALIAS, a) for a in state.identity.alias_to_user}
                    if state.replace
                    else state.dirty
                )
                rows = [self._row(state, kind, key) for kind, key in keys]
                learner = state.learner
                if learner.dirty or state.replace:
                    # budgets as of the log's end now; a restart counts decisions after it
                    body = learner.to_state(unlogged=list(self._pending.values()))
                    rows.append(StateRow(_LEARNER, _LEARNER, body))
                    position = str(self.store.decision_log_position()).encode()
                    rows.append(StateRow(_LEARNER, _DECISION_LOG, position))
                    learner.dirty = False
                replace, seq = state.replace, state.seq
                state.dirty, state.replace = set(), False
                self._since_snapshot = 0
            try:
                self.store.save_state(seq, self.catalog.digest, rows, replace=replace)
            except BaseException:
                with self._lock:  # not saved: save these rows next time
                    state.dirty.update(keys)
                    state.learner.dirty = True
                    state.replace = state.replace or replace
                raise

    @staticmethod
    def _row(state: _State, kind: str, key: str) -> StateRow:
        if kind == _PROFILE:
            profile = state.profiles.get(key)
            return StateRow(kind, key, None if profile is None else _encode(profile))
        target = state.identity.target(kind, key)
        return StateRow(kind, key, None if target is None else target.encode())

    def _restore(self) -> None:
        state = _State(self.catalog)
        saved = self.store.load_state()
        position: int | None = None  # the log position the saved budgets count up to
        if saved is not None and saved.version == self.catalog.digest:
            state.seq, state.replace = saved.seq, False
            for row in saved.rows:
                if row.body is None:
                    continue
                if row.kind == _PROFILE:
                    state.profiles[row.key] = _decode_profile(row.body)
                elif row.kind == _LEARNER and row.key == _DECISION_LOG:
                    with contextlib.suppress(ValueError):  # unreadable: count the whole log
                        position = int(row.body)
                elif row.kind == _LEARNER:
                    try:
                        state.learner = Learner.from_state(self.catalog, row.body)
                    except (msgspec.DecodeError, ValidationError):
                        # a snapshot is a cache: one this version cannot read is replayed
                        state, position = _State(self.catalog), None
                        break
                else:
                    state.identity.load(row.kind, row.key, row.body.decode())
        if state.learner.models:
            # budgets count logged decisions: the saved ones up to ``position`` (saved with
            # them), the log's after it; without both, the whole log is counted
            if position is None:
                state.learner.reset_budgets()
                decisions = self.store.decisions()
            else:
                decisions = self.store.decisions_after(position)
            for decision in decisions:
                state.learner.record_decision(decision)
        self._fold_log(state, state.seq)
        self._state = state
        if self._freeze_gc:  # what was just loaded lives as long as the process
            gc.freeze()

    def close(self) -> None:
        """Flush decisions, write a snapshot and close the store; a second call does nothing."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self.flush()
            self.snapshot()
            self.store.close()
