"""What core-banking events say of a customer's money: the features of service insights.

Every feature here is folded from the bank's own systems (``Transaction Posted``, ``Balance
Updated``, ``Overdraft Started`` / ``Ended``): the **transactional** data source, never web
or app behaviour. Consent per data source reads ``TRANSACTIONAL_FEATURES`` (``rules.reads``)
to know which rule fields come from here.

- **Overdraft fees and days overdrawn**: a ``Transaction Posted`` whose ``category`` is
  ``overdraft_fee`` is a fee (its ``amount`` what was paid); overdraft spells run from the
  balance going below 0 (or ``Overdraft Started``) to its return (or ``Overdraft Ended``).
- **Idle cash**: the current account's lowest and closing balance per UTC day, for the last
  ``HORIZON_DAYS`` days (and the day before them, whose closing balance is what the window
  starts from): the least the account held over the last N days is money that sat unused
  all that time. A balance event with ``account: savings`` is the savings balance instead.
- **Subscription price rises**: card payments to the same ``merchant`` about a month apart
  (``MONTHLY``) at the same amount form a streak; a payment above a streak of at least
  ``STREAK`` equal ones is a price rise (the merchant's old and new amount kept for 90 days).

State stays bounded per customer: at most ``HORIZON_DAYS + 2`` days, ``MERCHANTS`` merchants
(the least recently paid one not in a streak leaves first) and ``RISES`` rises.
Pure code: the functions take the event's time and fold in place.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import msgspec

from nextbest.profile.windows import DAY

__all__ = [
    "BANKING_DEFAULTS",
    "BANKING_FEATURES",
    "FEE_CATEGORY",
    "HORIZON_DAYS",
    "MERCHANTS",
    "MONTHLY",
    "RISES",
    "STREAK",
    "Banking",
    "PriceRise",
    "banking_view",
    "days_overdrawn",
    "fees_in",
    "idle_cash",
    "note_balance",
    "note_fee",
    "note_overdrawn",
    "note_payment",
    "note_review",
    "rises_in",
]

#: the ``category`` of a ``Transaction Posted`` that is an overdraft fee
FEE_CATEGORY = "overdraft_fee"
#: how many days of daily balances are kept (the longest idle-cash window)
HORIZON_DAYS = 90
_HORIZON = HORIZON_DAYS * DAY
#: how far apart two payments to a merchant may be and still be monthly (seconds)
MONTHLY = (25 * DAY, 35 * DAY)
#: equal monthly payments before a higher one counts as a price rise
STREAK = 2
#: merchants followed per customer
MERCHANTS = 32
#: price rises kept per customer
RISES = 8
#: a rise smaller than this (in the account's currency) is rounding, not a new price
_MIN_RISE = 0.5


class PriceRise(msgspec.Struct, array_like=True, gc=False):
    at: float
    merchant: str
    before: float
    after: float


class Banking(msgspec.Struct, kw_only=True, gc=False):
    """One customer's money as core banking reports it (transactional source)."""

    #: overdraft fees (time, amount paid) within the last 90 days of the newest
    fees: list[tuple[float, float]] = []
    #: ended overdraft spells (start, end) ending within the last 90 days of the newest
    spells: list[tuple[float, float]] = []
    #: when the open overdraft spell began; None while not overdrawn
    overdrawn_since: float | None = None
    #: the current account per UTC day: [day number, lowest balance, closing balance]
    days: list[list[float]] = []
    #: the savings account's last balance (``account: savings``); None before one
    savings: float | None = None
    #: merchant -> [time of the last payment, its amount, equal monthly payments in a row]
    merchants: dict[str, list[float]] = {}
    #: price rises within the last 90 days of the newest, oldest first
    rises: list[PriceRise] = []


# ------------------------------------------------------------------ overdraft
def note_fee(b: Banking, when: float, amount: float) -> None:
    """An overdraft fee of ``amount`` (its sign ignored) at ``when``."""
    fees = b.fees
    if not fees or when >= fees[-1][0]:
        fees.append((when, abs(amount)))  # in time order, as core banking sends them
    else:
        bisect.insort(fees, (when, abs(amount)))
    cutoff = fees[-1][0] - _HORIZON
    if fees[0][0] < cutoff:
        i = 1
        while fees[i][0] < cutoff:
            i += 1
        del fees[:i]


def note_overdrawn(b: Banking, when: float, overdrawn: bool) -> None:
    """The account is (still, or no longer) overdrawn at ``when``."""
    if overdrawn and b.overdrawn_since is None:
        b.overdrawn_since = when
    elif not overdrawn and b.overdrawn_since is not None:
        b.spells.append((b.overdrawn_since, max(when, b.overdrawn_since)))
        b.overdrawn_since = None
        cutoff = when - _HORIZON
        b.spells[:] = [s for s in b.spells if s[1] >= cutoff]


def fees_in(b: Banking, days: float, now: float) -> tuple[int, float]:
    """The overdraft fees in the last ``days`` days up to ``now``: how many, how much."""
    start = now - days * DAY
    n, total = 0, 0.0
    for at, amount in b.fees:
        if start < at <= now:
            n += 1
            total += amount
    return n, round(total, 2)


def days_overdrawn(b: Banking, days: float, now: float) -> float:
    """Days spent overdrawn in the last ``days`` days up to ``now`` (the open spell too)."""
    start = now - days * DAY
    spent = sum(max(0.0, min(end, now) - max(begin, start)) for begin, end in b.spells)
    if b.overdrawn_since is not None:
        spent += max(0.0, now - max(b.overdrawn_since, start))
    return round(spent / DAY, 2)


# ------------------------------------------------------------------ idle cash
def note_balance(b: Banking, when: float, balance: float, account: Any) -> None:
    """The balance of ``account`` (``savings``, else the current account) at ``when``."""
    if account == "savings":
        b.savings = balance
        return
    day = float(when // DAY)
    days = b.days
    last = days[-1] if days else None
    if last is not None and last[0] == day:
        if balance < last[1]:
            last[1] = balance
        last[2] = balance
    elif last is None or last[0] < day:
        days.append([day, balance, balance])
        # keep the window's days and the one before them (the close the window starts from)
        j = bisect.bisect_left(days, [day - HORIZON_DAYS + 1])
        if j > 1:
            del days[: j - 1]
    else:  # a late balance for an earlier day: its low (its close stays the later one's)
        i = bisect.bisect_left(days, [day])
        if i < len(days) and days[i][0] == day:
            days[i][1] = min(days[i][1], balance)
        elif i > 0:
            days.insert(i, [day, balance, balance])


def idle_cash(b: Banking, days: int, now: float) -> float:
    """The least the current account held over the last ``days`` days up to ``now``: money
    that sat unused all that time (0 when below 0, or when the balance is not known from
    before the window began)."""
    today = float(now // DAY)
    first = today - days + 1  # the window's first day
    rows = b.days
    if not rows or rows[0][0] >= first:
        return 0.0  # nothing known from before the window: the least is unknown
    i = bisect.bisect_left(rows, [first])
    least = rows[i - 1][2]  # the balance the window starts from
    for row in rows[i:]:
        if row[0] > today:
            break
        least = min(least, row[1])
    return round(max(0.0, least), 2)


# ------------------------------------------------------------------ subscriptions
def note_payment(b: Banking, when: float, merchant: str, amount: float) -> None:
    """A payment of ``amount`` (below 0: money out) to ``merchant`` at ``when``."""
    if amount >= 0:
        return
    paid = -amount
    merchants = b.merchants
    seen = merchants.get(merchant)
    if seen is None:
        if len(merchants) >= MERCHANTS:
            del merchants[_evicted(merchants)]
        merchants[merchant] = [when, paid, 1.0]
        return
    last_at, last_paid, streak = seen
    if when <= last_at:
        return  # a late or repeated payment: the streak reads payments in time order
    del merchants[merchant]  # to the end: the dict stays in order of the last payment
    merchants[merchant] = seen
    monthly = MONTHLY[0] <= when - last_at <= MONTHLY[1]
    if monthly and abs(paid - last_paid) < 0.005:
        streak += 1
    elif monthly and paid - last_paid >= _MIN_RISE and streak >= STREAK:
        _note_rise(b, PriceRise(when, merchant, last_paid, paid))
        streak = 1
    else:
        streak = 1
    seen[0], seen[1], seen[2] = when, paid, streak


def _evicted(merchants: dict[str, list[float]]) -> str:
    """The merchant to forget: the least recently paid one not in a streak (a one-off
    shop), else the least recently paid one; the dict is in order of the last payment."""
    for name, (_, _, streak) in merchants.items():
        if streak < STREAK:
            return name
    return next(iter(merchants))


def _note_rise(b: Banking, rise: PriceRise) -> None:
    b.rises.append(rise)
    b.rises.sort(key=lambda r: r.at)
    cutoff = b.rises[-1].at - _HORIZON
    b.rises[:] = [r for r in b.rises if r.at >= cutoff][-RISES:]


def note_review(b: Banking, merchant: Any) -> None:
    """The customer reviewed the subscription to ``merchant`` (any text; not text: all of
    them): its price rises are no longer news."""
    b.rises[:] = [r for r in b.rises if isinstance(merchant, str) and r.merchant != merchant]


def rises_in(b: Banking, days: float, now: float) -> list[PriceRise]:
    """The price rises in the last ``days`` days up to ``now``, oldest first."""
    start = now - days * DAY
    return [r for r in b.rises if start < r.at <= now]


# ------------------------------------------------------------------ what rules read
def _latest_rise(b: Banking, now: float) -> PriceRise | None:
    found = rises_in(b, 90, now)
    return found[-1] if found else None


def _rise_merchant(b: Banking, now: float) -> str:
    r = _latest_rise(b, now)
    return r.merchant if r is not None else ""


def _rise_before(b: Banking, now: float) -> float:
    r = _latest_rise(b, now)
    return r.before if r is not None else 0.0


def _rise_after(b: Banking, now: float) -> float:
    r = _latest_rise(b, now)
    return r.after if r is not None else 0.0


#: each rule field (``profile.<name>``) folded from core-banking events, computed on its own
#: from ``Profile.banking``; ``BANKING_DEFAULTS`` holds its value before any such event
BANKING_FEATURES: dict[str, Callable[[Banking, float], Any]] = {
    "overdraft_fees_90d": lambda b, now: fees_in(b, 90, now)[0],
    "overdraft_fees_paid_90d": lambda b, now: fees_in(b, 90, now)[1],
    "overdrawn_days_90d": lambda b, now: days_overdrawn(b, 90, now),
    "idle_cash_30d": lambda b, now: idle_cash(b, 30, now),
    "idle_cash_90d": lambda b, now: idle_cash(b, 90, now),
    "savings_balance": lambda b, now: b.savings if b.savings is not None else 0.0,
    "price_rises_90d": lambda b, now: len(rises_in(b, 90, now)),
    "price_rise_monthly_90d": lambda b, now: round(
        sum(r.after - r.before for r in rises_in(b, 90, now)), 2
    ),
    "price_rise_merchant": _rise_merchant,
    "price_rise_before": _rise_before,
    "price_rise_after": _rise_after,
}
BANKING_DEFAULTS: dict[str, Any] = {
    name: ""
    if name == "price_rise_merchant"
    else 0
    if name.endswith(("fees_90d", "rises_90d"))
    else 0.0
    for name in BANKING_FEATURES
}


def banking_view(b: Banking | None, now: float) -> dict[str, Any]:
    """Every ``BANKING_FEATURES`` field of ``b`` at ``now`` (the defaults without one)."""
    if b is None:
        return dict(BANKING_DEFAULTS)
    return {name: fn(b, now) for name, fn in BANKING_FEATURES.items()}
