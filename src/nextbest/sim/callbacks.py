"""Expert call-backs in the simulator: customers who ask for a call from the advisor card,
and the bank's advisors who take the calls, on the simulated clock.

Two halves, both hidden from the engine like ``response.py``:

- **The customers** (``CallParams``, ``p_ask``, ``p_call_converts``): shown an advisor card
  (a placement of kind ``advisor``), a customer with a live hidden need for the card's topic
  asks for a call with chance ``ask_now x s`` when the card offers "call me now", ``ask_later
  x s`` when it offers only "call me later" / "pick a time" (``s``: the need's true strength;
  ``ask_idle`` without such a need, who never convert). Offered "now", they ask now;
  otherwise they pick one of the card's free slots (``at``), or the earliest one (``later``)
  when that slot was taken meanwhile. A call that reached the customer converts with chance
  ``lift x P(convert | click)`` (the world's conversion after a matched click, ``response``),
  ``lift`` = ``convert_lift_now`` when the call started within ``prompt_minutes`` of the
  request, else ``convert_lift_slot``.
- **The advisors** (``AdvisorFloor``): the catalog's advisors (their working hours in their
  time zones, their ``max_concurrent``) drive the engine's callback desk (``Engine.
  callbacks``, the facade the HTTP routes use) with the simulated clock: an advisor offered a
  call accepts it after ``accept_seconds`` unless on the phone already (then declines at
  once, and the desk offers it to a colleague); the telephony rings the customer
  ``ring_seconds`` later, who answers with chance ``answer_now`` (a "now" call) or
  ``answer_slot`` (a booked slot), else the advisor cancels it; a call lasts a lognormal
  ``call_minutes`` (median), then the advisor completes it. The desk's timers (lapsed offers,
  slots that came, "now" past its SLA) run at the moments they fall due (``CallbackDesk.
  sweep(now)``), as the desk's docs ask of a simulation on event time.

**Presence.** Every advisor reports ``available`` once, when the run starts; their working
hours (the catalog's, in their own time zones) decide when they take calls, as the routing
core checks them (``advisors.shift.on_shift``), and an advisor on the phone declines further
offers. Reports of ``busy`` during calls and ``offline`` at the end of a shift are not
simulated: ``CallbackDesk.set_presence`` sweeps the timers on the engine's clock (on event
time the watermark: the latest event ingested, which in the simulator runs ahead of the
advisors' clock, see the loop), and would fire timers early.

**When.** The site loop plays a day customer by customer, so its times go back and forth
within the day; the desk needs one clock moving forward. The customers' requests of a day are
queued (``ask``) and played with the advisors' own events in time order once every customer
has lived the day (``run_until``): the card a customer saw was decided on the desk's board
as of the day's start (who is on shift decides "call me now", not who is on the phone at
that minute); a customer offered "now" when every expert is busy waits for the desk's SLA,
then is moved to a slot and told, as in production.

**Numbers** (assumptions; docs/worlds.md, "Advisors in the simulator", gives the sources):
immediacy matters (the MIT / InsideSales Lead Response Management study, Oldroyd 2007: the
odds of reaching a web lead called within 5 minutes are 100 times those at 30 minutes, of
qualifying it 21 times), hence a higher answer rate and conversion lift for prompt calls;
the magnitudes are ours.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from typing import NamedTuple

import msgspec

from nextbest.advisors.card import AdvisorCard
from nextbest.advisors.model import CallbackMode, CallbackState, Presence
from nextbest.advisors.routing import Timer, due_at
from nextbest.callbacks import CallbackDesk
from nextbest.catalog.compiled import Catalog
from nextbest.errors import Conflict, LimitExceeded, NotFound, SlotTaken, ValidationError

__all__ = [
    "DEFAULT_CALLS",
    "AdvisorFloor",
    "CallParams",
    "CallRequest",
    "CompletedCall",
    "FloorCounts",
    "p_ask",
    "p_call_converts",
    "phone_of",
]


class CallParams(msgspec.Struct, frozen=True, kw_only=True):
    """The customers' and the advisors' behaviour around the advisor card (assumptions)."""

    #: chance a customer with a need of strength 1 asks for a call when the card offers
    #: "call me now" (times the strength)
    ask_now: float = 0.12
    #: ... when it offers only "call me later" / "pick a time"
    ask_later: float = 0.04
    #: chance a customer without a need for the topic asks anyway (curiosity; never converts)
    ask_idle: float = 0.0005
    #: seconds between seeing the card and the request (typing a phone number)
    request_seconds: float = 20.0
    #: seconds an advisor takes to accept an offered call (uniform)
    accept_seconds: tuple[float, float] = (5.0, 25.0)
    #: seconds an advisor on the phone takes to decline another offer
    decline_seconds: float = 3.0
    #: seconds from accepting to the customer's phone ringing
    ring_seconds: float = 20.0
    #: chance the customer answers a call they asked for "now" / at a booked slot
    answer_now: float = 0.9
    answer_slot: float = 0.75
    #: a call's length: lognormal with this median (minutes) and sigma
    call_minutes: float = 12.0
    call_sigma: float = 0.5
    #: a call that started within this many minutes of the request is a prompt one
    prompt_minutes: float = 10.0
    #: conversion after a call: this times the world's P(convert | click) for the need
    convert_lift_now: float = 1.6
    convert_lift_slot: float = 1.25


DEFAULT_CALLS = CallParams()


def p_ask(params: CallParams, strength: float, now_offered: bool) -> float:
    """The chance a customer shown the card asks for a call; ``strength``: their true need
    for the card's topic (0: none)."""
    if strength <= 0.0:
        return params.ask_idle
    rate = params.ask_now if now_offered else params.ask_later
    return min(1.0, rate * min(1.0, strength))


def p_call_converts(params: CallParams, p_convert_after_click: float, prompt: bool) -> float:
    """The chance a call that reached the customer converts their need."""
    lift = params.convert_lift_now if prompt else params.convert_lift_slot
    return min(1.0, lift * p_convert_after_click)


def phone_of(index: int) -> str:
    """A simulated customer's phone number (E.164, a Danish mobile range)."""
    return f"+45{20_000_000 + index:08d}"


class CallRequest(NamedTuple):
    """A customer asks for a call from the card they saw."""

    at: float
    number: int  #: the customer's place in the population
    customer: str  #: ``callbacks.customer_key``
    topic: str
    card: AdvisorCard
    decision_id: str


class CompletedCall(NamedTuple):
    """A call that reached the customer and ended."""

    number: int  #: the customer's place in the population
    topic: str
    ended_at: float
    #: it started within ``prompt_minutes`` of the request
    prompt: bool
    callback_id: str


class FloorCounts(msgspec.Struct, kw_only=True):
    """What happened on the advisors' floor."""

    requested: int = 0
    requested_now: int = 0
    #: a request the desk refused: a callback about the topic in flight, or no free slot
    refused: int = 0
    offered: int = 0
    declined_busy: int = 0
    accepted: int = 0
    not_answered: int = 0
    completed: int = 0
    prompt: int = 0
    #: "now" requests the desk moved to a slot (nobody free within its SLA)
    rescheduled: int = 0
    expired: int = 0
    #: seconds from request to the call's start, of every completed call
    waits: list[float] = []


_HEAP = tuple[float, int, str, tuple[object, ...]]


class AdvisorFloor:
    """The catalog's advisors working ``desk`` on the simulated clock (the module
    docstring). ``ask`` queues a customer's request; ``run_until(t)`` plays every request,
    advisor answer, call and timer before ``t`` in time order and returns the calls that
    ended, for the loop to draw their conversions."""

    def __init__(
        self,
        desk: CallbackDesk,
        catalog: Catalog,
        seed: int,
        start: float,
        params: CallParams = DEFAULT_CALLS,
    ) -> None:
        self.desk = desk
        self.catalog = catalog
        self.params = params
        self.rng = random.Random(f"advisors:{seed}")
        self.counts = FloorCounts()
        self._heap: list[_HEAP] = []
        self._seq = itertools.count()
        #: callbacks in flight -> how many of their steps were acted on
        self._live: dict[str, int] = {}
        #: callback id -> the customer's index
        self._who: dict[str, int] = {}
        #: advisor -> callbacks they accepted and have not finished
        self._engaged: dict[str, int] = dict.fromkeys(catalog.advisors, 0)
        self._sweeps: set[float] = set()
        self._clock = start
        for advisor_id in sorted(catalog.advisors):
            desk.set_presence(advisor_id, Presence.AVAILABLE, at=start)

    # ------------------------------------------------------------------ queueing
    def _push(self, at: float, kind: str, *data: object) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), kind, data))

    def _sweep_at(self, at: float) -> None:
        at = max(at, self._clock)
        if at not in self._sweeps:
            self._sweeps.add(at)
            self._push(at, "sweep")

    def ask(self, request: CallRequest) -> None:
        """A customer's request, played at ``request.at`` by ``run_until``."""
        self._push(request.at, "request", request)

    # ------------------------------------------------------------------ playing
    def run_until(self, end: float) -> list[CompletedCall]:
        """Play everything due before ``end``, in time order; the calls that ended."""
        ended: list[CompletedCall] = []
        while self._heap and self._heap[0][0] < end:
            at, _, kind, data = heapq.heappop(self._heap)
            self._clock = at
            if kind == "request":
                request = data[0]
                assert isinstance(request, CallRequest)
                self._request(request)
            elif kind == "sweep":
                self._sweeps.discard(at)
                self.desk.sweep(at)
            elif kind == "answer":
                self._answer(str(data[0]), str(data[1]), at)
            elif kind == "ring":
                self._ring(str(data[0]), str(data[1]), at)
            elif kind == "hang_up":
                done = self._hang_up(str(data[0]), str(data[1]), at)
                if done is not None:
                    ended.append(done)
            self._observe(at)
        self._clock = max(self._clock, end)
        return ended

    def _request(self, r: CallRequest) -> None:
        card = r.card
        modes: list[tuple[CallbackMode, float | None]]
        if card.available:
            modes = [(CallbackMode.NOW, None)]
        elif card.slots:
            slot = card.slots[self.rng.randrange(len(card.slots))]
            modes = [(CallbackMode.AT, slot.start), (CallbackMode.LATER, None)]
        else:
            modes = [(CallbackMode.LATER, None)]
        for mode, at in modes:
            try:
                made = self.desk.request_callback(
                    r.customer,
                    r.topic,
                    mode,
                    phone_of(r.number),
                    at=at,
                    decision_id=r.decision_id,
                    now=r.at,
                )
            except (SlotTaken, ValidationError):
                continue  # that slot went meanwhile (or passed): the earliest free one then
            except LimitExceeded:
                break  # one in flight about this topic already
            self.counts.requested += 1
            self.counts.requested_now += mode is CallbackMode.NOW
            self._live[made.id] = 0
            self._who[made.id] = r.number
            return
        self.counts.refused += 1

    def _answer(self, callback_id: str, advisor_id: str, at: float) -> None:
        """The advisor the call is offered to answers the offer."""
        try:
            if self._engaged.get(advisor_id, 0) > 0:
                self.desk.decline(callback_id, advisor_id, now=at)
                self.counts.declined_busy += 1
            else:
                self.desk.accept(callback_id, advisor_id, now=at)
                self._engaged[advisor_id] += 1
                self.counts.accepted += 1
                self._push(at + self.params.ring_seconds, "ring", callback_id, advisor_id)
        except (Conflict, NotFound):
            pass  # the offer lapsed or moved meanwhile

    def _ring(self, callback_id: str, advisor_id: str, at: float) -> None:
        """The telephony rings the customer: the call starts, or nobody answers."""
        c = self.desk.callback(callback_id)
        if c.state is not CallbackState.ACCEPTED:
            self._engaged[advisor_id] -= 1
            return
        prompt = at - c.requested_at <= self.params.prompt_minutes * 60.0
        chance = self.params.answer_now if prompt else self.params.answer_slot
        if self.rng.random() >= chance:
            self.desk.cancel(callback_id, reason="the customer did not answer", now=at)
            self._engaged[advisor_id] -= 1
            self.counts.not_answered += 1
            return
        self.desk.connect(callback_id, now=at)
        self.counts.waits.append(round(at - c.requested_at, 3))
        self.counts.prompt += prompt
        minutes = self.params.call_minutes * math.exp(self.rng.gauss(0.0, self.params.call_sigma))
        self._push(at + minutes * 60.0, "hang_up", callback_id, advisor_id)

    def _hang_up(self, callback_id: str, advisor_id: str, at: float) -> CompletedCall | None:
        self._engaged[advisor_id] -= 1
        try:
            c = self.desk.complete(callback_id, advisor_id, now=at)
        except (Conflict, NotFound):
            return None
        self.counts.completed += 1
        self._sweep_at(at)  # someone came free: the calls waiting for one
        started = next(s.at for s in c.history if s.state is CallbackState.CONNECTED)
        prompt = started - c.requested_at <= self.params.prompt_minutes * 60.0
        return CompletedCall(self._who[callback_id], c.topic, at, prompt, callback_id)

    def _observe(self, at: float) -> None:
        """Act on what the desk did: offers to answer, timers to sweep at, ends to count."""
        for callback_id, seen in list(self._live.items()):
            c = self.desk.callback(callback_id)
            if len(c.history) == seen:
                continue
            self._live[callback_id] = len(c.history)
            self.counts.rescheduled += sum(1 for s in c.history[seen:] if s.rescheduled)
            if c.final:
                del self._live[callback_id]
                if c.state is CallbackState.EXPIRED:
                    self.counts.expired += 1
                continue
            if c.state is CallbackState.OFFERED and c.advisor_id is not None:
                self.counts.offered += 1
                busy = self._engaged.get(c.advisor_id, 0) > 0
                low, high = self.params.accept_seconds
                delay = self.params.decline_seconds if busy else self.rng.uniform(low, high)
                self._push(at + delay, "answer", c.id, c.advisor_id)
            timer = due_at(c, self.catalog.callbacks)
            if timer is None:
                continue
            kind, when = timer
            if kind is Timer.WAITING:  # "now" nobody took yet: by its SLA at the latest
                when = c.requested_at + self.catalog.callbacks.now_sla_seconds
            self._sweep_at(when)
