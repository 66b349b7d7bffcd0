"""The hidden money life behind the bank's service insights (``sim.world`` turns it on).

Each simulated customer may pay overdraft fees while overdrawn, hold subscriptions whose
price may rise, and keep cash idle in the current account; core banking reports all of it
(``Transaction Posted`` with ``category: overdraft_fee`` or a ``merchant``). What the
customer does about it is hidden here too: on their own now and then (``organic``), or
after clicking the bank's insight (``respond``), they switch on an overdraft buffer
(``Overdraft Protection Enabled``: no more fees), move idle cash to savings (``Savings
Transfer``) or review the subscription that went up (``Subscription Reviewed``).

The engine never reads any of this: it sees the events alone. Draws come from the money
life's own ``random.Random``, so the world's own draws stay where they were (though fees and
payments move the balance, and so when an overdraft starts).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["INSIGHT_KPIS", "MoneyLife", "MoneyParams", "Subscription"]

#: each example-bank insight and the event that says the customer acted on it
INSIGHT_KPIS: dict[str, str] = {
    "overdraft_fee_insight": "Overdraft Protection Enabled",
    "idle_cash_insight": "Savings Transfer",
    "price_rise_insight": "Subscription Reviewed",
}
_MERCHANTS = (
    ("StreamFlix", 12.99),
    ("Tunes+", 10.99),
    ("CloudBox", 2.99),
    ("FitClub", 29.0),
    ("NewsDaily", 9.99),
    ("GameHub", 14.99),
)
_DAY = 86_400.0


class MoneyParams(msgspec.Struct, frozen=True, kw_only=True):
    """How the money life goes (the bank knows none of these)."""

    #: the fee for a day begun overdrawn, charged with ``fee_chance`` that day
    fee: float = 12.5
    fee_chance: float = 0.25
    #: subscriptions per customer: each merchant with this chance
    subscription_chance: float = 0.35
    #: a subscription's price rises once, on a day drawn in the first ``rise_within`` days
    rise_chance: float = 0.35
    rise_within: int = 45
    rise_factor: float = 1.2
    #: what counts as idle cash, as the customer sees it (the catalog's trigger is apart)
    idle_cash: float = 3_000.0
    #: the daily chance a customer acts on a true insight by themselves
    organic: float = 0.004
    #: the chance a customer who clicked a true insight acts on it
    act_after_click: float = 0.5
    #: the chance an insight shown is clicked: when it is true for the customer, when not
    click_if_true: float = 0.08
    click_if_not: float = 0.005


class Subscription(msgspec.Struct, kw_only=True):
    merchant: str
    price: float
    day_of_month: int
    rise_day: int | None
    rose_on: int | None = None
    #: the price before any rise; whether a payment was sent yet (the first comes with the
    #: two months before the run, so the bank has seen the price settle)
    base_price: float = 0.0
    paid: bool = False
    reviewed: bool = False


class MoneyLife:
    """One customer's hidden money life. ``day`` adds that day's core-banking messages;
    ``respond`` is what the customer does after clicking an insight."""

    def __init__(self, seed: int, index: int, params: MoneyParams | None = None) -> None:
        self.p = params or MoneyParams()
        self.rng = random.Random(f"money:{seed}:{index}")
        rng = self.rng
        self.subs = [
            Subscription(
                merchant=name,
                price=price,
                base_price=price,
                day_of_month=rng.randint(1, 28),
                rise_day=rng.randint(0, self.p.rise_within)
                if rng.random() < self.p.rise_chance
                else None,
            )
            for name, price in _MERCHANTS
            if rng.random() < self.p.subscription_chance
        ]
        self.fee_days: list[int] = []
        self.buffer = False
        self.low_since: list[tuple[int, float]] = []  # (day, closing balance), 30 days
        self.acted: set[str] = set()
        self.started = False

    def past(
        self,
        base: float,
        balance: float,
        message: Callable[..., tuple[float, dict[str, Any]]],
        out: list[tuple[float, dict[str, Any]]],
    ) -> None:
        """Before the run: the balance stood where it starts for the month before (what
        core banking reported then), so idle cash is known from the first day."""
        self.started = True
        self.low_since = [(d, balance) for d in range(-30, 0)]
        props = {"balance": balance, "currency": "EUR"}
        out.append(message(base - 30 * _DAY - 3600.0, props, "Balance Updated"))

    # ------------------------------------------------------------------ the truth
    def true_insights(self, d: int) -> set[str]:
        """The insights whose facts hold for this customer on day ``d`` and that the
        customer has not acted on yet."""
        return self.facts(d) - self.acted

    def facts(self, d: int) -> set[str]:
        """The insights whose facts hold for this customer on day ``d``."""
        out: set[str] = set()
        if not self.buffer and sum(1 for f in self.fee_days if d - f < 90) >= 2:
            out.add("overdraft_fee_insight")
        lows = [b for day, b in self.low_since if d - day < 30]
        if len(lows) >= 30 and min(lows) >= self.p.idle_cash:
            out.add("idle_cash_insight")
        if any(s.rose_on is not None and d - s.rose_on < 90 and not s.reviewed for s in self.subs):
            out.add("price_rise_insight")
        return out

    # ------------------------------------------------------------------ the day
    def day(
        self,
        d: int,
        today_day: int,
        base: float,
        balance: float,
        overdrawn: bool,
        message: Callable[..., tuple[float, dict[str, Any]]],
        out: list[tuple[float, dict[str, Any]]],
    ) -> float:
        """That day's fees and subscription payments, sent as core banking does; returns
        the balance after them."""
        rng, p = self.rng, self.p
        if not self.started:
            self.past(base, balance, message, out)
        if overdrawn and not self.buffer and rng.random() < p.fee_chance:
            balance = round(balance - p.fee, 2)
            self.fee_days.append(d)
            props = {"amount": -p.fee, "currency": "EUR", "category": "overdraft_fee"}
            out.append(message(base + 5 * 3600, {**props, "balance": balance}))
        for s in self.subs:
            if s.rise_day is not None and s.price == s.base_price and d >= s.rise_day:
                s.price = round(s.price * p.rise_factor, 2)
            if today_day == s.day_of_month:
                at = base + 4 * 3600 + rng.uniform(0, 600)
                if not s.paid:  # the two months before: the price the customer is used to
                    s.paid = True
                    for months in (2, 1):
                        before = {"amount": -s.base_price, "currency": "EUR"}
                        out.append(
                            message(at - months * 30 * _DAY, {**before, "merchant": s.merchant})
                        )
                if s.price != s.base_price and s.rose_on is None:
                    s.rose_on = d  # the customer pays the new price from today
                balance = round(balance - s.price, 2)
                props = {"amount": -s.price, "currency": "EUR", "merchant": s.merchant}
                out.append(message(at, {**props, "balance": balance}))
        self.low_since.append((d, balance))
        del self.low_since[:-31]
        return balance

    def p_click(self, offer: str, d: int) -> float:
        """The chance the customer clicks the insight ``offer`` shown on day ``d``."""
        true = offer in self.true_insights(d)
        return self.p.click_if_true if true else self.p.click_if_not

    def organic(self, d: int) -> list[str]:
        """The insights the customer acts on by themselves on day ``d``."""
        return [i for i in sorted(self.true_insights(d)) if self.rng.random() < self.p.organic]

    def respond(self, offer: str, d: int, rng: random.Random) -> bool:
        """After a click on ``offer``: whether the customer acts on it (only when true)."""
        return offer in self.true_insights(d) and rng.random() < self.p.act_after_click

    def act(self, offer: str, d: int) -> tuple[str, dict[str, Any]]:
        """The customer acts on ``offer``: the KPI event and its properties."""
        self.acted.add(offer)
        if offer == "overdraft_fee_insight":
            self.buffer = True  # the bank also records the product (``world``)
            return INSIGHT_KPIS[offer], {"limit": 500.0, "currency": "EUR"}
        if offer == "idle_cash_insight":
            amount = round(max(0.0, min(b for _, b in self.low_since) - 1_000.0), 2)
            return INSIGHT_KPIS[offer], {"amount": amount, "currency": "EUR"}
        rose = [s for s in self.subs if s.rose_on is not None and not s.reviewed]
        for s in rose:
            s.reviewed = True
        # one merchant reviewed names it; several: the customer reviewed them all
        return INSIGHT_KPIS[offer], {"merchant": rose[0].merchant} if len(rose) == 1 else {}
