"""The callback desk: expert call-backs as use cases, over the pure core (``advisors``), the
durable callback queue (``store.port.Callbacks``), the event log (through the engine's
ingestion) and the outbox (click-to-call). The engine builds one (``Engine.callbacks``); the
HTTP face and the simulator call it, and nothing else.

Customers::

    request_callback(customer, topic, mode, phone, *, at, language, decision_id, now)
                                   -> the callback, as routed at once (offered, booked, ...)
    request_callback_with(answer, customer, topic, ...)
                                   -> the same, answered through ``answer`` from the commit
                                      threads (no thread waits: the HTTP face's way)
    callback(id), of_customer(customer)
    cancel(id, *, reason, now)

Advisors and the telephony system::

    set_presence(advisor, presence, *, at) -> PresenceReport (waiting calls routed at once
                                              when someone becomes available)
    accept(id, advisor) / decline(id, advisor) / connect(id) / complete(id, advisor)
    advisor_queue(advisor), advisors(), customer_view(customer), routed_to(customer, advisor)

Timers and the decisions' view::

    sweep(now, limit)  -> SweepReport: lapsed offers on to a colleague, slots that came
                          offered, "now" past its SLA moved to a slot (``advisors.routing``)
    relog()            -> every step of the callbacks in flight in the event log again
                          (what a crash between a save and its append left out)
    board()            -> the AdvisorBoard decisions read (advisor placements)

**Every routing step** is one compare-and-set write of the callback (``save`` with the
version it was read at, and the advisor's ``Capacity`` when it books or offers them); a
``SlotTaken`` (someone else filled that advisor meanwhile) reads that advisor's entry of the
board again from the store and routes again, as if that advisor were busy; a stale version
reads the callback again and retries. A customer has one callback in flight per topic: the
store refuses a second (``InFlight``, atomically with the write, whichever process asks),
answered ``LimitExceeded`` (409, ``$.topic``). Then each step taken (``Transition``) is
appended to the customer's event log as a track event (``Callback Requested``, ``Callback
Assigned``, ... ``Callback Completed``) through the engine's group commit, as any server's
events: profiles, learning and experiments see them (a completed callback can be a campaign
KPI). Its ``messageId`` is ``callback-<id>-<n>``, ``n`` the step's place in the callback's
history, so appending it again is a duplicate. On ``accepted`` a click-to-call request is
enqueued in the outbox (channel and destination ``telephony``, idempotency key
``callback-<id>-accepted-<n>``) and the sender is woken (``on_outbox``).

Writes are serialised in the process by the desk's lock (route, write, board), so the board
is exact for this process's own writes; the store's atomic capacity check is what keeps other
processes from double booking. The events of one write are queued for the group commit under
that lock (in write order) and waited for outside it.

**Several processes** (scaled API workers, ``shared=True``): each desk's board is read again
from the store every ``refresh_seconds`` (``keep_fresh``, on the host's tick: the holds, not
the records), and the store's compare-and-set, capacity check and one-in-flight rule keep the
workers from double booking and from taking two requests about one topic.

**Time.** ``now`` is the engine's clock: the wall clock, or on event time the watermark (a
timer fires once the events' time passed it). Every method takes ``now`` (a simulation on
event time says when); presence reports take their own ``at``.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

import msgspec
import orjson

from nextbest.advisors import routing
from nextbest.advisors.board import LIVE_STATES, AdvisorBoard, board_of
from nextbest.advisors.card import ADVISOR_CONTACT
from nextbest.advisors.model import (
    FINAL_STATES,
    Callback,
    CallbackMode,
    CallbackState,
    Presence,
    Transition,
)
from nextbest.advisors.routing import Routed, Timer
from nextbest.advisors.selection import customer_language
from nextbest.advisors.shift import LocalClock, on_shift
from nextbest.catalog.compiled import Catalog, CompiledAdvisor
from nextbest.clock import Clock, ClockKind
from nextbest.errors import (
    Conflict,
    InFlight,
    LimitExceeded,
    NextbestError,
    NotFound,
    SlotTaken,
    StoreError,
    ValidationError,
)
from nextbest.events.model import Event, EventType
from nextbest.events.parse import Parsed
from nextbest.group_commit import GroupCommit
from nextbest.guard.senders import KeyKind, Sender
from nextbest.ingestion import IngestRequest, IngestResult
from nextbest.profile.identity import ANON_PREFIX
from nextbest.profile.interest import REASON_DAYS, decayed, trend_of, viewed_text
from nextbest.profile.model import Profile
from nextbest.profile.windows import count_between, count_in_days
from nextbest.store.port import Callbacks, CallbackWrite, Capacity, Outbox

__all__ = [
    "CLICK_TO_CALL",
    "E164",
    "AdvisorQueue",
    "AdvisorStatus",
    "CallbackDesk",
    "CustomerView",
    "Host",
    "InterestView",
    "JourneyStep",
    "OfferSeen",
    "PresenceReport",
    "SweepReport",
    "check_phone",
    "customer_key",
    "event_ids",
]

T = TypeVar("T")

#: the outbox channel and destination of click-to-call requests (``NEXTBEST_WEBHOOK_
#: TELEPHONY_URL``)
CLICK_TO_CALL = "telephony"
#: a phone number in E.164: ``+``, then 8 to 15 digits, the first not 0
E164 = re.compile(r"\+[1-9][0-9]{7,14}")
#: routing steps a write is tried again after another writer (a stale version, a slot taken)
_TRIES = 8
#: beyond any ``scheduled_for``: every booking not final
_END = 1e15
_DAY = 86_400.0
#: the journey an advisor sees: the customer's latest events, newest first
_JOURNEY = 30
_LIBRARY = {"library": {"name": "nextbest-callbacks", "version": "1"}}
_SERVER = Sender(KeyKind.SERVER)

Move = Callable[[Callback, AdvisorBoard, Catalog, float], Routed]


class _Write(NamedTuple):
    """A routed write waiting for the next commit, and the steps it takes."""

    write: CallbackWrite
    steps: tuple[Transition, ...]
    #: the advisors whose entry on the board the write moved (read again if refused)
    advisors: tuple[str, ...] = ()


class _Asked(NamedTuple):
    """A customer's request for a callback, checked, as it is routed (again)."""

    customer: str
    topic: str
    mode: CallbackMode
    phone: str
    at: float | None
    language: str | None
    decision_id: str | None
    now: float | None


class _Written(NamedTuple):
    """A write done: the callback as stored, and its events' append."""

    callback: Callback
    logged: Future[IngestResult]


class Host(Protocol):
    """What the desk needs of the engine: the catalog and clock it serves on, the group
    commit of the event log, and a consistent read of one profile."""

    catalog: Catalog
    clock: Clock

    @property
    def clock_kind(self) -> ClockKind: ...

    def wall_now(self) -> float: ...

    def submit(self, request: IngestRequest) -> Future[IngestResult]: ...

    def read_profile(self, customer_id: str, read: Callable[[Profile, float], T]) -> T | None: ...


# ---------------------------------------------------------------------------- answers
class AdvisorStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One advisor as a supervisor's board shows them."""

    id: str
    name: str
    photo_url: str | None
    team: str
    branch: str
    languages: list[str]
    #: topic -> expertise level (1-5)
    expertise: dict[str, int]
    max_concurrent: int
    presence: Presence
    #: when the presence in force was reported (None: never)
    presence_at: float | None
    #: callbacks they hold now: offered to them, accepted or on the phone
    load: int
    #: slots booked with them from now on
    booked: int
    #: within their working hours now
    on_shift: bool
    #: when they were last assigned a callback (None: never)
    last_assigned: float | None


class AdvisorQueue(msgspec.Struct, frozen=True, kw_only=True):
    """An advisor's queue: the callbacks they hold, not final, in queue order (by slot, or
    by request for "now"): offered to them (to accept or decline), accepted, on the phone,
    and booked for later."""

    advisor_id: str
    presence: Presence
    load: int
    max_concurrent: int
    on_shift: bool
    callbacks: list[Callback]


class PresenceReport(msgspec.Struct, frozen=True, kw_only=True):
    """A presence report as recorded: the presence in force after it (an older report than
    the one recorded changes nothing), since when, and the callbacks routed because of it."""

    advisor_id: str
    presence: Presence
    since: float
    routed: int = 0


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    """One sweep of the timers at ``now``: the callbacks due, those that moved, and how many
    of each timer fired (``advisors.routing.Timer``)."""

    now: float
    due: int
    moved: int
    timers: dict[str, int]


class InterestView(msgspec.Struct, frozen=True, kw_only=True):
    """One topic the customer showed interest in, as an advisor reads it."""

    topic: str
    name: str
    #: the decayed interest now
    score: float
    #: not faded (``contact_policy.fade_below``): what an advisor card would act on
    live: bool
    reason: str
    #: ``new``, ``rising``, ``steady``, ``falling`` or ``none`` (last 7 days against the 7
    #: before)
    trend: str
    count_7d: int
    count_14d: int
    count_30d: int
    last_seen: float


class JourneyStep(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    type: str
    name: str | None
    topics: list[str]


class OfferSeen(msgspec.Struct, frozen=True, kw_only=True):
    """An offer (or advisor card) the customer was shown, and what they did with it."""

    offer_id: str
    impressions: int
    clicks: int
    dismissals: int
    last_shown: float | None
    last_clicked: float | None
    last_decision_id: str | None


class CustomerView(msgspec.Struct, frozen=True, kw_only=True):
    """What an advisor sees of a customer: the same picture every channel decides on."""

    customer_id: str
    as_of: float
    #: a profile exists (events were seen)
    known: bool
    #: hottest first: live topics, then faded ones
    interests: list[InterestView]
    #: the latest events, newest first
    journey: list[JourneyStep]
    #: offers and advisor cards shown, most recently shown first
    offers: list[OfferSeen]
    products: list[str]
    #: purpose -> consent in force (the customer's, else the policy's default; None: unset)
    consent: dict[str, bool | None]
    #: the customer's callbacks, newest first: those in flight and the past ones
    callbacks: list[Callback]


# ---------------------------------------------------------------------------- helpers
def customer_key(user_id: str | None, anonymous_id: str | None) -> str:
    """The customer a callback is for: the userId, else ``anon:<anonymousId>``."""
    if user_id:
        return user_id
    if anonymous_id:
        return ANON_PREFIX + anonymous_id
    raise ValidationError("userId or anonymousId is required", "$.userId")


def _ids_of(customer: str) -> tuple[str | None, str | None]:
    """(userId, anonymousId) of a customer key."""
    if customer.startswith(ANON_PREFIX):
        return None, customer[len(ANON_PREFIX) :]
    return customer, None


def check_phone(phone: str, path: str = "$.phone") -> str:
    """``phone`` if it is an E.164 number (``+4512345678``); ValidationError otherwise."""
    if not E164.fullmatch(phone):
        raise ValidationError(
            "not a phone number in E.164: + and the country code, then the number, 8 to 15 "
            "digits in all, no spaces (+4512345678)",
            path,
        )
    return phone


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()


def event_ids(callback: Callback, steps: int | None = None) -> list[str]:
    """The messageIds of the callback's steps (its whole history, or the last ``steps``)."""
    count = len(callback.history)
    first = 0 if steps is None else count - steps
    return [f"callback-{callback.id}-{n}" for n in range(first + 1, count + 1)]


def _new_id() -> str:
    return uuid.uuid4().hex


#: how far back a start looks for callbacks that ended with steps possibly unlogged (a crash
#: between their write and its append): any crash that was restarted from within a day
RELOG_ENDED_SECONDS = 24 * 3600.0
_RELOG_PAGE = 1_000


# ---------------------------------------------------------------------------- the desk
class CallbackDesk:
    """Expert call-backs for one engine (the module docstring)."""

    def __init__(
        self,
        host: Host,
        store: Callbacks,
        outbox: Outbox,
        *,
        new_id: Callable[[], str] = _new_id,
        refresh_seconds: float = 60.0,
        shared: bool = False,
    ) -> None:
        """``refresh_seconds``: how often a sweep (and ``keep_fresh``) rebuilds the board
        from the store (what another process changed: its presence reports, its bookings).

        ``shared``: other processes route on the same store (scaled API workers, ``serve
        --role api``): the host calls ``keep_fresh`` on its tick (the board is then at most
        ``refresh_seconds`` behind the other workers' writes; the store's compare-and-set and
        capacity check keep them from double booking whatever the board says)."""
        self._host = host
        self._shared = shared
        self._store = store
        self._outbox = outbox
        self._new_id = new_id
        self._refresh_seconds = refresh_seconds
        self._lock = threading.RLock()
        self._board: AdvisorBoard | None = None
        self._built_at = -math.inf
        #: concurrent writes share one durable commit of the callback queue
        self._writes: GroupCommit[_Write, _Written] = GroupCommit(
            self._write_many, lambda w: 1, max_events=256
        )
        #: told when a click-to-call request was enqueued (the outbox sender's ``wake``)
        self.on_outbox: Callable[[], None] | None = None

    @property
    def store(self) -> Callbacks:
        return self._store

    def now(self) -> float:
        return self._host.clock.now()

    def _when(self, now: float | None) -> float:
        return self._host.clock.now() if now is None else now

    # ------------------------------------------------------------------ the board
    def board(self) -> AdvisorBoard:
        """Who is available, how loaded, when last assigned, what is booked: built from the
        store once, then kept current by every write of this desk (``AdvisorBoard.moved``)."""
        board = self._board
        if board is None:
            board = self.refresh_board()
        return board

    def refresh_board(self) -> AdvisorBoard:
        """Rebuild the board from the store now (read without the desk's lock: it is held
        for routing only, never across I/O)."""
        board = self._read_board()
        with self._lock:
            self._board, self._built_at = board, time.monotonic()
        return board

    def keep_fresh(self) -> bool:
        """Rebuild the board from the store if it is ``refresh_seconds`` old (the host's
        tick calls it on a shared store); True if it did."""
        if time.monotonic() - self._built_at < self._refresh_seconds:
            return False
        self.refresh_board()
        return True

    def _read_board(self) -> AdvisorBoard:
        """The board from the store's holds (what the callbacks holding an advisor hold:
        live ones, booked ones; no records read), presences and rotation."""
        store = self._store
        presence = {a: p for a, (p, _) in store.presences().items()}
        return board_of(store.holds(), presence, store.rotation())

    def _reread(self, advisors: Iterable[str]) -> None:
        """These advisors' entries of the board read again from the store (a write moved
        them and the store refused it), the others kept: read, then swapped in under the
        lock."""
        store = self._store
        wanted = sorted(set(advisors))
        if not wanted or self._board is None:
            return
        presence, rotation = store.presences(), store.rotation()
        read = {a: store.holds(a) for a in wanted}
        with self._lock:
            board = self._board
            for advisor_id in wanted:
                reported = presence.get(advisor_id)
                board = board.with_advisor(
                    advisor_id,
                    read[advisor_id],
                    reported[0] if reported is not None else Presence.OFFLINE,
                    rotation.get(advisor_id, 0.0),
                )
            self._board = board

    # ------------------------------------------------------------------ reads
    def callback(self, callback_id: str) -> Callback:
        """The callback; NotFound when there is none."""
        found = self._store.get(callback_id)
        if found is None:
            raise NotFound(f"no callback {callback_id!r}")
        return found

    def of_customer(self, customer: str) -> list[Callback]:
        """The customer's callbacks, oldest request first."""
        return self._store.of_customer(customer)

    def erase_customers(self, customers: Collection[str]) -> int:
        """Delete these customers' callbacks (an erasure), then rebuild the board from the
        store: how many."""
        n = self._store.erase_customers(customers)
        self.refresh_board()
        return n

    def routed_to(self, customer: str, advisor_id: str) -> bool:
        """Some callback of ``customer`` is or was routed to ``advisor_id`` (held, offered,
        declined, booked with them): the customers an advisor may look at."""
        return any(
            c.advisor_id == advisor_id
            or advisor_id in c.declined_by
            or any(t.advisor_id == advisor_id for t in c.history)
            for c in self._store.of_customer(customer)
        )

    def _advisor(self, advisor_id: str) -> CompiledAdvisor:
        advisor = self._host.catalog.advisors.get(advisor_id)
        if advisor is None:
            raise NotFound(f"no advisor {advisor_id!r} in the catalog")
        return advisor

    def advisor_queue(self, advisor_id: str, *, now: float | None = None) -> AdvisorQueue:
        """The callbacks ``advisor_id`` holds, not final, in queue order; NotFound for an
        advisor the catalog lacks."""
        advisor = self._advisor(advisor_id)
        open_states = [s for s in CallbackState if s not in FINAL_STATES]
        held = self._store.of_advisor(advisor_id, open_states)
        state = self.board().state(advisor_id)
        return AdvisorQueue(
            advisor_id=advisor_id,
            presence=state.presence,
            load=state.load,
            max_concurrent=advisor.max_concurrent,
            on_shift=on_shift(advisor, LocalClock(self._when(now))),
            callbacks=held,
        )

    def advisors(self, *, now: float | None = None) -> list[AdvisorStatus]:
        """Every advisor of the catalog with their presence and load now, by id."""
        when = self._when(now)
        board = self.board()
        reported = self._store.presences()
        clock = LocalClock(when)
        out: list[AdvisorStatus] = []
        for advisor_id in sorted(self._host.catalog.advisors):
            advisor = self._host.catalog.advisors[advisor_id]
            spec, state = advisor.spec, board.state(advisor_id)
            at = reported.get(advisor_id)
            out.append(
                AdvisorStatus(
                    id=advisor_id,
                    name=spec.name,
                    photo_url=spec.photo_url,
                    team=spec.team,
                    branch=spec.branch,
                    languages=list(spec.languages),
                    expertise=dict(advisor.levels),
                    max_concurrent=advisor.max_concurrent,
                    presence=state.presence,
                    presence_at=at[1] if at is not None else None,
                    load=state.load,
                    booked=sum(1 for s in board.bookings(advisor_id) if s >= when),
                    on_shift=on_shift(advisor, clock),
                    last_assigned=state.last_assigned or None,
                )
            )
        return out

    def customer_view(self, customer_id: str, *, now: float | None = None) -> CustomerView:
        """What an advisor sees of a customer (``CustomerView``); NotFound when nextbest
        knows nothing of them (no profile, no callback)."""
        catalog = self._host.catalog
        callbacks = sorted(
            self._store.of_customer(customer_id), key=lambda c: (-c.requested_at, c.id)
        )
        view = self._host.read_profile(
            customer_id, lambda p, at: _profile_view(catalog, p, at if now is None else now)
        )
        if view is None:
            if not callbacks:
                raise NotFound(f"nothing is known of customer {customer_id!r}")
            view = _profile_view(catalog, Profile(customer_id=customer_id), self._when(now))
            view = msgspec.structs.replace(view, known=False)
        return msgspec.structs.replace(view, callbacks=callbacks)

    # ------------------------------------------------------------------ customers
    def request_callback(
        self,
        customer: str,
        topic: str,
        mode: CallbackMode,
        phone: str,
        *,
        at: float | None = None,
        language: str | None = None,
        decision_id: str | None = None,
        now: float | None = None,
    ) -> Callback:
        """A customer asks to be called about ``topic``: ``now`` (offered to the best expert
        free now, or waiting for one within the SLA), ``later`` (the earliest free slot) or
        ``at`` (the slot starting at ``at``, epoch seconds). ``customer``: a userId or
        ``anon:<anonymousId>`` (``customer_key``); ``phone`` in E.164.

        ValidationError (field path): a bad phone or language, a time with ``now`` or
        ``later``, none with ``at``, a topic no advisor is expert in, a time no slot starts
        at or outside the bookable window. SlotTaken (409): no free slot (``later``), or
        the one picked is booked up (``at``). LimitExceeded (409, ``$.topic``): the customer
        already has a callback about this topic in flight."""
        done: Future[Callback] = Future()

        def answer(result: Callback | BaseException) -> None:
            if isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)

        self.request_callback_with(
            answer,
            customer,
            topic,
            mode,
            phone,
            at=at,
            language=language,
            decision_id=decision_id,
            now=now,
        )
        return done.result()

    def request_callback_with(
        self,
        answer: Callable[[Callback | BaseException], None],
        customer: str,
        topic: str,
        mode: CallbackMode,
        phone: str,
        *,
        at: float | None = None,
        language: str | None = None,
        decision_id: str | None = None,
        now: float | None = None,
    ) -> None:
        """``request_callback`` with no thread waiting: routed at once (under the desk's
        lock, no I/O), then ``answer`` is called with the callback once it is written and
        its steps are logged, or with the error, from the committing threads (an event loop
        hands it back to itself, as ingestion does). A bad request raises at once."""
        check_phone(phone)
        if language is not None:
            code = customer_language(language)
            if code is None:
                raise ValidationError(
                    "not an ISO 639-1 language code (da, en, sv ...)", "$.language"
                )
            language = code
        if mode is CallbackMode.LATER and at is not None:
            raise ValidationError(
                "call me later takes the earliest free slot: to pick a time, ask for mode at",
                "$.time",
            )
        asked = _Asked(customer, topic, mode, phone, at, language, decision_id, now)
        self.board()  # built (the first time) outside the lock
        self._try_request(asked, answer, 0)

    def _try_request(
        self, asked: _Asked, answer: Callable[[Callback | BaseException], None], attempt: int
    ) -> None:
        """Route ``asked`` and queue its write; a slot another process filled meanwhile
        routes it again (as if that advisor were busy), up to ``_TRIES`` times."""
        try:
            with self._lock:
                when = self._when(asked.now)
                catalog, board = self._host.catalog, self.board()
                fresh = Callback(
                    id=self._new_id(),
                    customer=asked.customer,
                    topic=asked.topic,
                    mode=asked.mode,
                    phone=asked.phone,
                    requested_at=when,
                    scheduled_for=asked.at,
                    language=asked.language,
                    decision_id=asked.decision_id,
                )
                routed = routing.request(fresh, board, catalog, when)
                write = self._prepare(None, routed, board, catalog)
        except NextbestError as refused:
            answer(refused)
            return

        def written(result: _Written | BaseException) -> None:
            if isinstance(result, SlotTaken) and attempt < _TRIES - 1:
                try:
                    self._try_request(asked, answer, attempt + 1)
                except BaseException as exc:  # a bug: to the caller, not the commit thread
                    answer(exc)
            elif isinstance(result, InFlight):
                answer(
                    LimitExceeded(
                        f"this customer already has callback {result.callback_id} about "
                        f"{asked.topic} in flight: cancel it to ask again",
                        "$.topic",
                    )
                )
            elif isinstance(result, BaseException):
                answer(result)
            else:
                result.logged.add_done_callback(lambda _: settled(result))

        def settled(result: _Written) -> None:
            try:
                answer(self._settle(result, routed.transitions))
            except BaseException as exc:  # the event log refused: the caller is told
                answer(exc)

        self._writes.submit_with(write, written)

    def cancel(
        self,
        callback_id: str,
        *,
        reason: str = "cancelled by the customer",
        now: float | None = None,
    ) -> Callback:
        """Withdraw a callback not final yet (Conflict when it is)."""
        return self._step(callback_id, lambda c, b, cat, at: routing.cancel(c, at, reason), now)

    # ------------------------------------------------------------------ advisors
    def set_presence(
        self, advisor_id: str, presence: Presence, *, at: float | None = None
    ) -> PresenceReport:
        """Record the advisor's presence as of ``at`` (default now; a report older than the
        one recorded is ignored: telephony webhooks arrive out of order). Becoming
        available routes the callbacks waiting for someone at once."""
        self._advisor(advisor_id)
        when = self.now() if at is None else at
        in_force, since = self._store.set_presence(advisor_id, presence, when)
        board = self.board()
        with self._lock:
            self._board = (self._board or board).with_presence(advisor_id, in_force)
        routed = 0
        if in_force is Presence.AVAILABLE:
            routed = self.sweep().moved
        return PresenceReport(advisor_id=advisor_id, presence=in_force, since=since, routed=routed)

    def accept(
        self, callback_id: str, advisor_id: str | None = None, *, now: float | None = None
    ) -> Callback:
        """The advisor it is offered to (``advisor_id``; None: whoever it is offered to)
        accepts it before the offer lapses; a click-to-call request goes out."""

        def move(c: Callback, b: AdvisorBoard, cat: Catalog, at: float) -> Routed:
            return routing.accept(c, advisor_id or c.advisor_id or "", cat, at)

        return self._step(callback_id, move, now)

    def decline(
        self, callback_id: str, advisor_id: str | None = None, *, now: float | None = None
    ) -> Callback:
        """The advisor it is offered to declines: it goes on to the next colleague."""

        def move(c: Callback, b: AdvisorBoard, cat: Catalog, at: float) -> Routed:
            return routing.decline(c, advisor_id or c.advisor_id or "", b, cat, at)

        return self._step(callback_id, move, now)

    def connect(self, callback_id: str, *, now: float | None = None) -> Callback:
        """The telephony system reports the call started."""
        return self._step(callback_id, lambda c, b, cat, at: routing.connect(c, at), now)

    def complete(
        self, callback_id: str, advisor_id: str | None = None, *, now: float | None = None
    ) -> Callback:
        """The call ended (from ``accepted``, it passes through ``connected``)."""

        def move(c: Callback, b: AdvisorBoard, cat: Catalog, at: float) -> Routed:
            return routing.complete(c, at, advisor_id=advisor_id)

        return self._step(callback_id, move, now)

    # ------------------------------------------------------------------ timers
    def sweep(self, now: float | None = None, *, limit: int = 1_000) -> SweepReport:
        """Act on every timer due at ``now`` (default: the clock's), at most ``limit``
        callbacks: lapsed offers go on to a colleague, slots that came are offered, "now"
        callbacks are offered to whoever came free or, past their SLA, moved to a slot. A
        callback someone else moved meanwhile is left to them."""
        when = self._when(now)
        if time.monotonic() - self._built_at >= self._refresh_seconds:
            self.refresh_board()
        catalog = self._host.catalog
        found = routing.due(self._store.due(when, limit), catalog.callbacks, when)
        moved = 0
        timers: dict[str, int] = {}
        board = self.board()
        for due in found:
            if (
                due.timer is Timer.WAITING
                and not routing.tick(due.callback, board, catalog, when).transitions
            ):
                continue  # still nobody free for it: nothing to write (the common case)
            try:
                after = self._step(due.callback.id, routing.tick, when)
            except (Conflict, NotFound):
                continue  # moved (or gone) meanwhile: its new state is someone else's
            if after.version != due.callback.version:
                moved += 1
                timers[due.timer.value] = timers.get(due.timer.value, 0) + 1
        return SweepReport(now=when, due=len(found), moved=moved, timers=timers)

    def relog(self) -> int:
        """Append every step of the callbacks in flight, and of those that ended in the
        last ``RELOG_ENDED_SECONDS``, to the event log again, and enqueue the click-to-call
        of those accepted: what a crash between a write and its append left out (the rest
        are duplicates, skipped). The server calls it once as it starts; how many callbacks
        were looked at."""
        store = self._store
        seen: dict[str, Callback] = {}
        for advisor_id in self._host.catalog.advisors:
            for c in store.of_advisor(advisor_id, LIVE_STATES):
                seen[c.id] = c
        for c in [*store.booked(None, 0.0, _END), *store.due(_END)]:
            seen.setdefault(c.id, c)
        # a callback that ended just before a crash: its last steps may be unlogged. The
        # queue has no index by the time of the last step, so this reads it whole, once per
        # start (callbacks are few beside events: thousands a day at a large bank)
        since = self.now() - RELOG_ENDED_SECONDS
        after = ""
        while page := store.scan(after, _RELOG_PAGE):
            for c in page:
                if c.final and c.history and c.history[-1].at >= since:
                    seen.setdefault(c.id, c)
            after = page[-1].id
        for c in seen.values():
            if c.history:
                self._settle(_Written(c, self._log(c, c.history)), c.history)
        return len(seen)

    # ------------------------------------------------------------------ one step
    def _step(self, callback_id: str, move: Move, now: float | None) -> Callback:
        """Read, route (``move``), write with compare-and-set, keep the board, log."""
        for attempt in range(_TRIES):
            before = self.callback(callback_id)  # read without the lock (compare-and-set)
            self.board()
            with self._lock:
                when = self._when(now)
                catalog, board = self._host.catalog, self.board()
                routed = move(before, board, catalog, when)
                if not routed.transitions:
                    return before
                pending = self._writes.submit(self._prepare(before, routed, board, catalog))
            try:
                written = pending.result()
            except SlotTaken:
                if attempt == _TRIES - 1:
                    raise
                continue  # that advisor is full after all: route again, as if busy
            except Conflict:
                stored = self._store.get(callback_id)
                if attempt == _TRIES - 1 or stored is None or stored.version == before.version:
                    raise  # a move the store refuses, not a stale read
                continue  # written meanwhile: read it again
            return self._settle(written, routed.transitions)
        raise AssertionError("unreachable")  # pragma: no cover

    def _prepare(
        self, before: Callback | None, routed: Routed, board: AdvisorBoard, catalog: Catalog
    ) -> _Write:
        """Under the lock: the write for the next group commit, the board moved as if it
        were done (the next routing sees it; a refused write reads its advisors again)."""
        after = routed.callback
        self._board = board.moved(before, after)
        expected = None if before is None else before.version
        moved = {a for a in (after.advisor_id, before and before.advisor_id) if a}
        write = _Write(
            CallbackWrite(after, expected, _capacity(after, catalog)),
            routed.transitions,
            tuple(sorted(moved)),
        )
        return write

    def _write_many(self, writes: Sequence[_Write]) -> list[_Written | NextbestError]:
        """The group commit's step (its thread): every queued write in one commit, then the
        events of those written queued for the event log, in that order."""
        try:
            results = self._store.write_many([w.write for w in writes])
        except BaseException:
            self._forget_board()  # nothing written: the board moved for nothing
            raise
        out: list[_Written | NextbestError] = []
        refused: list[_Write] = []
        for w, done in zip(writes, results, strict=True):
            if isinstance(done, NextbestError):
                refused.append(w)
                out.append(done)
            else:
                out.append(_Written(done, self._log(done, w.steps)))
        moved = {a for w in refused for a in w.advisors}
        if moved:
            self._forget_advisors(moved)
        return out

    def _forget_advisors(self, advisors: Iterable[str]) -> None:
        """Writes the store refused had moved these advisors on the board: read them again
        (the store away: the whole board at the next refresh)."""
        try:
            self._reread(advisors)
        except StoreError:
            self._built_at = -math.inf

    def _forget_board(self) -> None:
        """The board moved for a write the store refused: build it afresh from the store
        (the store away: the next sweep does)."""
        try:
            self.refresh_board()
        except StoreError:
            self._built_at = -math.inf

    def close(self) -> None:
        """Write what is queued, then stop the write thread (the engine closes it first)."""
        self._writes.close()

    def _log(self, callback: Callback, steps: Sequence[Transition]) -> Future[IngestResult]:
        """Queue the steps' track events for the event log's next group commit (in the order
        of the writes); the future says when they are durable."""
        # received when they happened on event time, as every event there is (the
        # learner's click windows follow ``received_at``: a wall-clock one would move them
        # to today); at the wall clock otherwise
        host = self._host
        received = None if host.clock_kind is ClockKind.EVENT else host.wall_now()
        events = _events(callback, steps, received)
        parsed = Parsed(events, list(range(len(events))), [])
        return self._host.submit(IngestRequest(_SERVER, parsed, ""))

    def _settle(self, written: _Written, steps: Sequence[Transition]) -> Callback:
        """Wait for the steps' events to be durable; enqueue the click-to-call of an
        ``accepted`` step and wake the sender."""
        written.logged.result()
        callback = written.callback
        first = len(callback.history) - len(steps)
        enqueued = False
        for i, step in enumerate(steps):
            if step.state is CallbackState.ACCEPTED and callback.state is CallbackState.ACCEPTED:
                self._click_to_call(callback, step, first + i + 1)
                enqueued = True
        if enqueued and self.on_outbox is not None:
            self.on_outbox()
        return callback

    def _click_to_call(self, callback: Callback, step: Transition, n: int) -> None:
        advisor = self._host.catalog.advisors.get(step.advisor_id or "")
        key = f"callback-{callback.id}-accepted-{n}"
        payload: dict[str, Any] = {
            "type": "click_to_call",
            "callback_id": callback.id,
            "advisor_id": step.advisor_id,
            "extension": advisor.spec.extension if advisor is not None else None,
            "advisor_name": advisor.spec.name if advisor is not None else None,
            "phone": callback.phone,
            "customer": callback.customer,
            "topic": callback.topic,
            "language": callback.language,
            "scheduled_for": _iso(callback.scheduled_for) if callback.scheduled_for else None,
            "accepted_at": _iso(step.at),
            "idempotency_key": key,
        }
        self._outbox.enqueue(
            CLICK_TO_CALL,
            CLICK_TO_CALL,
            key,
            orjson.dumps(payload),
            self._host.wall_now(),
            callback.customer,
        )


def _capacity(callback: Callback, catalog: Catalog) -> Capacity | None:
    """The capacity of the advisor ``callback`` holds (None: it holds nobody)."""
    advisor = catalog.advisors.get(callback.advisor_id) if callback.advisor_id else None
    if advisor is None:
        return None
    return Capacity(advisor.max_concurrent, catalog.callbacks.slot_minutes * 60.0)


def _events(callback: Callback, steps: Sequence[Transition], received: float | None) -> list[Event]:
    """The track events of ``steps``, the last of the callback's history, received at
    ``received`` (None: each at its own time, on event time)."""
    user, anon = _ids_of(callback.customer)
    ids = event_ids(callback, len(steps))
    out: list[Event] = []
    for message_id, step in zip(ids, steps, strict=True):
        properties: dict[str, Any] = {
            "callback_id": callback.id,
            "topic": callback.topic,
            "mode": callback.mode.value,
            "state": step.state.value,
        }
        if step.advisor_id:
            properties["advisor_id"] = step.advisor_id
        if step.scheduled_for is not None:
            properties["scheduled_for"] = _iso(step.scheduled_for)
        if step.reason:
            properties["reason"] = step.reason
        if callback.decision_id:
            properties["decision_id"] = callback.decision_id
        out.append(
            Event(
                message_id=message_id,
                type=EventType.TRACK,
                timestamp=step.at,
                received_at=step.at if received is None else received,
                user_id=user,
                anonymous_id=anon,
                name=step.event,
                properties=properties,
                context=_LIBRARY,
            )
        )
    return out


def _profile_view(catalog: Catalog, profile: Profile, now: float) -> CustomerView:
    """The profile's part of a customer view, as of ``now`` (no callbacks)."""
    fade = catalog.policy.fade_below
    interests: list[InterestView] = []
    for topic, it in profile.interests.items():
        spec = catalog.topics.get(topic)
        if spec is None or it.total == 0:
            continue
        score = decayed(it.score, it.score_at, now, spec.half_life)
        counts = {d: count_in_days(it.hits, d, now) for d in (7, 14, 30, *REASON_DAYS)}
        previous = count_between(it.hits, now - 14 * _DAY, now - 7 * _DAY)
        name = spec.name.lower()
        interests.append(
            InterestView(
                topic=topic,
                name=spec.name,
                score=round(score, 6),
                live=score >= fade,
                reason=viewed_text(name, counts) or f"interested in {name}",
                trend=trend_of(counts[7], previous).value,
                count_7d=counts[7],
                count_14d=counts[14],
                count_30d=counts[30],
                last_seen=it.last_seen,
            )
        )
    interests.sort(key=lambda i: (not i.live, -i.score, i.topic))
    journey = [
        JourneyStep(at=e.timestamp, type=e.type, name=e.name, topics=list(e.topics))
        for e in reversed(profile.recent[-_JOURNEY:])
    ]
    offers = [
        OfferSeen(
            offer_id=offer_id,
            impressions=h.total_impressions,
            clicks=h.total_clicks,
            dismissals=h.total_dismissals,
            last_shown=h.impressions[-1] if h.impressions else None,
            last_clicked=h.clicks[-1] if h.clicks else None,
            last_decision_id=h.last_decision_id,
        )
        for offer_id, h in profile.offers.items()
    ]
    offers.sort(key=lambda o: (-(o.last_shown or 0.0), o.offer_id))
    return CustomerView(
        customer_id=profile.customer_id,
        as_of=now,
        known=True,
        interests=interests,
        journey=journey,
        offers=offers,
        products=list(profile.products),
        consent=_consent(catalog, profile),
        callbacks=[],
    )


def _consent(catalog: Catalog, profile: Profile) -> dict[str, bool | None]:
    """Each purpose's consent in force: the customer's, else the policy's default (the
    advisor contact purpose, unset, follows marketing, as the advisor card does)."""
    policy = catalog.policy
    purposes: Iterable[str] = {
        "personalization",
        "marketing",
        ADVISOR_CONTACT,
        *policy.consent_defaults,
        *profile.consent,
    }
    out: dict[str, bool | None] = {}
    for purpose in sorted(purposes):
        granted = policy.consented(profile.consent, purpose)
        if granted is None and purpose == ADVISOR_CONTACT:
            granted = policy.consented(profile.consent, "marketing")
        out[purpose] = granted
    return out
