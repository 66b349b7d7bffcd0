"""One simulated customer living day by day: money, life events, needs, sessions.

``CustomerSim.day(d)`` returns that day's Segment-spec messages, each with its epoch time,
exactly as the bank's site, app and core systems would send them. Page views are marked so
the site loop (decide for the page's placements, then respond) can hook in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from nextbest.sim.money import MoneyLife, MoneyParams
from nextbest.sim.needs import (
    LIFE_EVENTS,
    EndReason,
    LifeEventKind,
    LifeEvents,
    Need,
    start_need,
)
from nextbest.sim.population import Customer
from nextbest.sim.response import ResponseModel
from nextbest.sim.site import CALCULATORS, GENERAL_PAGES, PRODUCT_OF, SEARCHES, TOPIC_PAGES
from nextbest.sim.takeover import TakeoverLife

__all__ = ["DAY", "CustomerSim", "Message"]

DAY = 86_400.0
#: (epoch seconds, message) — the message is a Segment-spec dict
Message = tuple[float, dict[str, Any]]
_HOURS = tuple(range(24))
_HOUR_WEIGHTS = (1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 5, 6, 6, 6, 7, 6, 5, 5, 5, 6, 7, 8, 9, 8, 5, 2)
_LIBRARY_WEB = {"name": "analytics.js", "version": "4.1.0"}
_LIBRARY_APP = {"name": "analytics-ios", "version": "4.1.8"}
_LIBRARY_CORE = {"name": "core-banking", "version": "1"}


#: how far back needs already under way at day 0 may have started (longest need: 180 days)
PAST_DAYS = 180.0
#: life events that strike at random (with a daily hazard), in the order they are drawn
_RANDOM_EVENTS = (
    LifeEventKind.MOVING,
    LifeEventKind.BIRTH,
    LifeEventKind.NEW_JOB,
    LifeEventKind.CAR_TROUBLE,
    LifeEventKind.RETIREMENT_APPROACHING,
    LifeEventKind.RENOVATION,
    LifeEventKind.TRAVEL_PLANNING,
    LifeEventKind.WINDFALL,
    LifeEventKind.BACKGROUND,
)
#: life events the bank never hears of (no ``Life Event`` message)
_UNTOLD = frozenset(
    {
        LifeEventKind.BACKGROUND,
        LifeEventKind.CURIOSITY,
        LifeEventKind.BUDGET_SQUEEZE,
        LifeEventKind.TAX_DEADLINE,
        LifeEventKind.INSURANCE_RENEWAL,
    }
)


def _eligible(kind: LifeEventKind, age: int, partner: bool) -> bool:
    """Who a random life event can happen to."""
    match kind:
        case LifeEventKind.MOVING:
            return 20 <= age <= 75
        case LifeEventKind.BIRTH:
            return partner and 24 <= age <= 42
        case LifeEventKind.NEW_JOB:
            return 20 <= age <= 64
        case LifeEventKind.CAR_TROUBLE:
            return 21 <= age <= 80
        case LifeEventKind.RETIREMENT_APPROACHING:
            return 55 <= age <= 66
        case LifeEventKind.RENOVATION:
            return 25 <= age <= 80
        case LifeEventKind.TRAVEL_PLANNING:
            return 18 <= age <= 85
        case LifeEventKind.WINDFALL:
            return age >= 18
        case LifeEventKind.BACKGROUND | LifeEventKind.CURIOSITY | LifeEventKind.BUDGET_SQUEEZE:
            return age >= 18
        case LifeEventKind.TAX_DEADLINE:
            return 25 <= age <= 75
        case LifeEventKind.INSURANCE_RENEWAL:
            return 21 <= age <= 85
    return False


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class CustomerSim:
    """A customer's hidden life; deterministic from the customer and the simulation seed."""

    def __init__(
        self,
        customer: Customer,
        seed: int,
        start: date,
        response: ResponseModel,
        need_rate: float = 1.0,
        life_events: LifeEvents | None = None,
        takeovers: TakeoverLife | None = None,
        money: MoneyParams | None = None,
    ):
        """``need_rate`` scales every random life event's hazard (1: the defaults): a world
        where needs are rarer or more common, to judge a strategy under both.
        ``life_events``: the world's table of life events (default ``LIFE_EVENTS``); kinds
        beyond the default ones are drawn after them, so the default draws stay aligned.
        ``takeovers``: the customer's devices, habits and takeover (``sim.takeover``: off
        unless given; it rewrites each day's visits after the world's own draws).
        ``money``: the hidden money life behind the service insights (``sim.money``: fees,
        subscriptions, idle cash; off unless given; its own draws, after the world's)."""
        self.c = customer
        self.seed = seed
        self.need_rate = need_rate
        self.life_events = LIFE_EVENTS if life_events is None else life_events
        self.random_kinds = _RANDOM_EVENTS + tuple(
            k
            for k, (hazard, _) in self.life_events.items()
            if k not in _RANDOM_EVENTS and hazard is not None
        )
        self.rng = random.Random(f"life:{seed}:{customer.index}")
        self.start = start
        self.t0 = datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()
        self.response = response
        self.needs: list[Need] = []
        self.products = set(customer.products)
        self.balance = customer.balance
        self.overdrawn = self.balance < 0
        self.identified = False
        self.pending: list[tuple[int, str, str]] = []  # (day, event name, product)
        self.takeovers = takeovers
        self.money = MoneyLife(seed, customer.index, money) if money is not None else None
        self._past_needs()

    # ------------------------------------------------------------------ helpers
    def _id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def _message(self, kind: str, ts: float, *, web: bool | None, **fields: Any) -> Message:
        c = self.c
        if web is None:  # core banking: server-side, userId only
            who: dict[str, Any] = {"userId": c.user_id, "anonymousId": None}
            context: dict[str, Any] = {"library": _LIBRARY_CORE}
        else:
            known = self.identified
            who = {"userId": c.user_id if known else None, "anonymousId": c.anonymous_id}
            device = c.device if web or c.device != "desktop" else "mobile"  # apps run on phones
            context = {"library": _LIBRARY_WEB if web else _LIBRARY_APP, "device": {"type": device}}
        return ts, {
            "type": kind,
            "messageId": self._id(),
            "timestamp": iso(ts),
            **who,
            "context": context,
            **fields,
        }

    def strengths(self, day: float) -> dict[str, float]:
        """The true needs by topic (the strongest per topic): what clicks and converts."""
        out: dict[str, float] = {}
        for n in self.needs:
            s = n.strength(day)
            if s > out.get(n.topic, 0.0):
                out[n.topic] = s
        return out

    def browsing(self, day: float) -> dict[str, float]:
        """How strongly each topic shows in page views (topics the site has pages for)."""
        out: dict[str, float] = {}
        for n in self.needs:
            s = n.browsing(day)
            if s > out.get(n.topic, 0.0) and n.topic in TOPIC_PAGES:
                out[n.topic] = s
        return out

    def _has_need(self, topic: str) -> bool:
        return any(n.topic == topic and n.ended is EndReason.ACTIVE for n in self.needs)

    def _start(
        self, kind: LifeEventKind, day: float, out: list[Message], ts: float, known_to_bank: bool
    ) -> None:
        _, specs = self.life_events[kind]
        if known_to_bank:
            out.append(
                self._message(
                    "track", ts, web=None, event="Life Event", properties={"type": kind.value}
                )
            )
        for spec in specs:
            if self._has_need(spec.topic):
                continue
            product = PRODUCT_OF.get(spec.topic)
            if product in self.products and spec.topic != "mortgage":
                continue
            if self.rng.random() < spec.probability:
                self.needs.append(start_need(self.rng, spec, day, kind))

    def _past_needs(self) -> None:
        """Needs already under way when the simulation starts.

        A bank's customers do not all begin life on day 0: at any moment some are moving,
        some just had a child. Life events of the last ``PAST_DAYS`` days are drawn with the
        same hazards as during the run (a Poisson count per event kind), so day 0 starts from
        the steady share of customers with a need rather than from nobody. Needs that would
        have ended before day 0 are dropped; the bank saw none of these events (they happened
        before its log starts). Drawn from a generator of their own, so the daily stream of
        the world is the same with or without a past.
        """
        rng = random.Random(f"past:{self.seed}:{self.c.index}")
        today = self.start
        for kind, (hazard, specs) in self.life_events.items():
            if hazard is None:
                continue
            for _ in range(_poisson(rng, hazard * self.need_rate * PAST_DAYS)):
                day = -rng.uniform(0.0, PAST_DAYS)
                age = self.c.age_on(today + timedelta(days=math.floor(day)))
                if not _eligible(kind, age, self.c.partner):
                    continue
                for spec in specs:
                    if self._has_need(spec.topic) or rng.random() >= spec.probability:
                        continue
                    product = PRODUCT_OF.get(spec.topic)
                    if product in self.products and spec.topic != "mortgage":
                        continue
                    need = start_need(rng, spec, day, kind)
                    if need.over_by(0.0) is None:  # still under way on day 0
                        self.needs.append(need)

    # ------------------------------------------------------------------ the day
    def day(self, d: int) -> list[Message]:
        rng, c = self.rng, self.c
        today = self.start + timedelta(days=d)
        base = self.t0 + d * DAY
        out: list[Message] = []
        age = c.age_on(today)
        self._money(d, today, base, out)
        self._life_events(d, today, age, base, out)
        self._end_needs(d)
        strengths = self.browsing(d)
        self._organic(d, base, out)
        for _step_day, name, product in [p for p in self.pending if p[0] == d]:
            out.append(
                self._message(
                    "track",
                    base + rng.uniform(9, 17) * 3600,
                    web=None,
                    event=name,
                    properties={"product": product},
                )
            )
        self.pending = [p for p in self.pending if p[0] != d]
        total = sum(strengths.values())
        sessions = _poisson(rng, c.sessions_per_week / 7.0 * (1.0 + 1.5 * total))
        for _ in range(sessions):
            self._session(d, base, strengths, out)
        if self.takeovers is not None:
            self.takeovers.day(d, base, out, self.identified)
        return out

    def _money(self, d: int, today: date, base: float, out: list[Message]) -> None:
        rng, c = self.rng, self.c
        if today.day == c.salary_day and c.monthly_income > 0:
            self.balance += c.monthly_income
            ts = base + 6 * 3600 + rng.uniform(0, 3600)
            out.append(
                self._message(
                    "track",
                    ts,
                    web=None,
                    event="Salary Received",
                    properties={"amount": round(c.monthly_income, 2), "currency": "EUR"},
                )
            )
        # lognormal noise with mean 1 (mu = -sigma^2 / 2): spending averages spend_share
        spend = c.monthly_income * c.spend_share / 30.0 * rng.lognormvariate(-0.18, 0.6)
        if rng.random() < 0.003:
            spend += c.monthly_income * rng.uniform(0.3, 1.5)  # a big bill
        self.balance = round(self.balance - spend, 2)
        ts = base + rng.uniform(8, 22) * 3600
        if rng.random() < 0.5:
            out.append(
                self._message(
                    "track",
                    ts,
                    web=None,
                    event="Transaction Posted",
                    properties={
                        "amount": round(-spend, 2),
                        "currency": "EUR",
                        "balance": self.balance,
                    },
                )
            )
        if self.money is not None:
            self._money_life(d, today, base, out)
        if self.balance < 0 and not self.overdrawn:
            self.overdrawn = True
            out.append(
                self._message(
                    "track",
                    ts + 1,
                    web=None,
                    event="Overdraft Started",
                    properties={"balance": self.balance},
                )
            )
            self._start(LifeEventKind.OVERDRAWN, d, out, ts + 1, known_to_bank=False)
        elif self.balance >= 0 and self.overdrawn:
            self.overdrawn = False
            out.append(
                self._message(
                    "track",
                    ts + 1,
                    web=None,
                    event="Overdraft Ended",
                    properties={"balance": self.balance},
                )
            )
            for n in self.needs:
                if n.topic == "overdraft" and n.ended is EndReason.ACTIVE:
                    n.finish(d, EndReason.CONVERTED)

    def _money_life(self, d: int, today: date, base: float, out: list[Message]) -> None:
        """Fees, subscriptions and what the customer does about them on their own."""
        life = self.money
        assert life is not None
        self.balance = life.day(
            d, today.day, base, self.balance, self.overdrawn, self._core_payment, out
        )
        for offer in life.organic(d):
            out.extend(self.act_on_insight(offer, d, base + life.rng.uniform(12, 20) * 3600))

    def _core(self, ts: float, event: str, properties: dict[str, Any]) -> Message:
        """A core-banking message of the money life (ids from its own draws)."""
        assert self.money is not None
        return ts, {
            "type": "track",
            "event": event,
            "messageId": f"{self.money.rng.getrandbits(128):032x}",
            "timestamp": iso(ts),
            "userId": self.c.user_id,
            "anonymousId": None,
            "context": {"library": _LIBRARY_CORE},
            "properties": properties,
        }

    def _core_payment(
        self, ts: float, properties: dict[str, Any], event: str = "Transaction Posted"
    ) -> Message:
        return self._core(ts, event, properties)

    def act_on_insight(self, offer: str, d: int, ts: float) -> list[Message]:
        """The customer acts on the insight ``offer`` (``sim.money``): its KPI event, and
        the money it moves."""
        assert self.money is not None
        event, props = self.money.act(offer, d)
        out = [self._core(ts, event, props)]
        if event == "Overdraft Protection Enabled":
            self.products.add("overdraft_buffer")
            bought = {"product": "overdraft_buffer"}
            out.append(self._core(ts + 1.0, "Product Opened", bought))
        if event == "Savings Transfer" and props["amount"] > 0:
            self.balance = round(self.balance - props["amount"], 2)
            moved = {"amount": -props["amount"], "currency": "EUR", "balance": self.balance}
            out.append(self._core(ts + 1.0, "Transaction Posted", moved))
        return out

    def _life_events(self, d: int, today: date, age: int, base: float, out: list[Message]) -> None:
        rng, c = self.rng, self.c
        ts = base + rng.uniform(7, 20) * 3600
        b = c.birthday
        if age == 18 and (today.month, today.day) == (b.month, b.day):
            self._start(LifeEventKind.TURNING_18, d, out, ts, known_to_bank=True)
        for child in c.children:
            if (today.month, today.day) == (
                child.month,
                child.day,
            ) and today.year - child.year == 18:
                self._start(LifeEventKind.CHILD_TURNING_18, d, out, ts, known_to_bank=True)
        for kind in self.random_kinds:
            hazard = self.life_events[kind][0]
            if (
                _eligible(kind, age, c.partner)
                and hazard is not None
                and rng.random() < hazard * self.need_rate
            ):
                known = kind not in _UNTOLD and rng.random() < 0.5
                self._start(kind, d, out, ts, known_to_bank=known)
                if kind is LifeEventKind.BIRTH:
                    c.children.append(today)

    def _end_needs(self, d: int) -> None:
        for n in self.needs:
            over = n.over_by(d) if n.ended is EndReason.ACTIVE else None
            if over is EndReason.ELSEWHERE:  # a competitor met it first: no draw
                n.finish(d, over)
            elif over is not None:  # its time is up: bought elsewhere after all, or faded
                reason = EndReason.ELSEWHERE if self.rng.random() < n.elsewhere else EndReason.FADED
                n.finish(d, reason)

    def _organic(self, d: int, base: float, out: list[Message]) -> None:
        """Customers convert on their own, without any offer: the control groups' baseline."""
        for n in self.needs:
            s = n.strength(d)
            if s <= 0 or n.topic == "overdraft" or n.topic not in PRODUCT_OF:
                continue
            if self.response.organic(self.rng, topic=n.topic, strength=s):
                self.convert(n, d, base, out)

    def convert(self, need: Need, d: int, base: float, out: list[Message]) -> None:
        """The customer applies today; the product opens a few days later."""
        product = PRODUCT_OF[need.topic]
        need.finish(d, EndReason.CONVERTED)
        ts = base + self.rng.uniform(9, 21) * 3600
        web = self.rng.random() >= self.c.app_share
        if self._log_in(d, ts - 1, web, out):
            ts += 1
        for i, name in enumerate(("Application Started", "Application Submitted")):
            out.append(
                self._message(
                    "track", ts + i * 600, web=web, event=name, properties={"product": product}
                )
            )
        self.pending.append((d + self.rng.randint(1, 5), "Product Opened", product))
        self.products.add(product)

    def _log_in(self, d: int, ts: float, web: bool, out: list[Message]) -> bool:
        """The first login after the anonymous days: an identify with the customer's traits."""
        c = self.c
        if self.identified or d < c.anonymous_days:
            return False
        self.identified = True
        traits = {
            "birthday": c.birthday.isoformat(),
            "products": sorted(self.products),
            "children": len(c.children),
            "consent": {
                "personalization": c.consent_personalization,
                "marketing": c.consent_marketing,
            },
        }
        out.append(self._message("identify", ts, web=web, traits=traits))
        return True

    def _session(
        self, d: int, base: float, strengths: dict[str, float], out: list[Message]
    ) -> None:
        """One visit; ``strengths``: what the customer browses (``browsing``)."""
        rng, c = self.rng, self.c
        ts = base + (rng.choices(_HOURS, _HOUR_WEIGHTS)[0] + rng.random()) * 3600
        web = rng.random() >= c.app_share
        if self._log_in(d, ts, web, out):
            ts += 1
        topics = list(strengths)
        weights = [strengths[t] for t in topics]
        p_topic = min(0.85, sum(weights) * 0.9)
        pages = 1 + min(15, int(rng.expovariate(1 / 3.0)))
        for _ in range(pages):
            ts += rng.uniform(10, 90)
            if topics and rng.random() < p_topic:
                topic = rng.choices(topics, weights)[0]
                path, title = rng.choice(TOPIC_PAGES[topic])
            else:
                topic, (path, title) = None, rng.choice(GENERAL_PAGES)
            url = "https://bank.example" + path
            if web:
                out.append(
                    self._message(
                        "page",
                        ts,
                        web=True,
                        name=title,
                        category=None,
                        properties={"url": url, "path": path, "title": title},
                    )
                )
            else:
                out.append(
                    self._message(
                        "screen", ts, web=False, name=title, properties={"url": url, "path": path}
                    )
                )
            if topic is not None:
                s = strengths[topic]
                if topic in CALCULATORS and rng.random() < 0.3 * s:
                    ts += rng.uniform(20, 120)
                    out.append(
                        self._message(
                            "track",
                            ts,
                            web=web,
                            event="Calculator Used",
                            properties={"topic": topic},
                        )
                    )
                if rng.random() < 0.05 * s:
                    ts += rng.uniform(5, 30)
                    out.append(
                        self._message(
                            "track",
                            ts,
                            web=web,
                            event="Products Searched",
                            properties={"query": rng.choice(SEARCHES[topic])},
                        )
                    )


def messages_of(sims: list[CustomerSim], days: int) -> Iterator[list[Message]]:
    """Every customer's day, day by day: each day's messages in time order."""
    for d in range(days):
        today: list[Message] = []
        for sim in sims:
            today.extend(sim.day(d))
        today.sort(key=lambda m: m[0])
        yield today
