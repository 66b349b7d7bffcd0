"""The synthetic bank's customers: a seeded population with realistic demographics, money,
products, digital habits and consent. Deterministic from (seed, index).

Nothing here is read by the engine: the engine only ever sees the events the site sends.
"""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

import msgspec

__all__ = ["AGE_BANDS", "Customer", "PopulationParams", "make_customer", "make_population"]

#: share of adult customers per age band (roughly a European retail bank's book)
AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (17, 17, 0.01),  # about to turn 18: the youth account converts during the simulation
    (18, 24, 0.10),
    (25, 34, 0.17),
    (35, 44, 0.17),
    (45, 54, 0.17),
    (55, 64, 0.16),
    (65, 74, 0.13),
    (75, 90, 0.09),
)


class PopulationParams(msgspec.Struct, frozen=True, kw_only=True):
    """Knobs of the population; defaults describe one plausible bank, not the only one."""

    median_sessions_per_week: float = 1.5
    sessions_sigma: float = 1.0  # lognormal: a heavy tail of daily users
    max_sessions_per_week: float = 40.0
    app_share_mean: float = 0.55
    anonymous_first_share: float = 0.3  # browse anonymously for a while before logging in
    max_anonymous_days: int = 14
    consent_personalization: float = 0.9
    consent_marketing: float = 0.75
    median_monthly_income: float = 2_900.0
    income_sigma: float = 0.45


class Customer(msgspec.Struct, kw_only=True):
    """One customer as the simulator knows them (hidden needs live in ``needs.py``)."""

    index: int
    user_id: str
    anonymous_id: str
    birthday: date
    partner: bool
    children: list[date]
    monthly_income: float
    salary_day: int
    balance: float
    spend_share: float  # of income spent in a month, on average
    products: list[str]
    sessions_per_week: float
    app_share: float
    device: str
    consent_personalization: bool
    consent_marketing: bool
    anonymous_days: int

    def age_on(self, day: date) -> int:
        b = self.birthday
        return day.year - b.year - ((day.month, day.day) < (b.month, b.day))


def _age(rng: random.Random) -> int:
    r = rng.random()
    for low, high, share in AGE_BANDS:
        if r < share:
            return rng.randint(low, high)
        r -= share
    return rng.randint(18, 90)


def _birthday(rng: random.Random, age: int, start: date, young: bool) -> date:
    if young:  # turns 18 within the first months of the simulation
        return date(start.year - 18, 1, 1) + timedelta(
            days=(start - date(start.year, 1, 1)).days + rng.randint(1, 60)
        )
    born = start - timedelta(days=int((age + rng.random()) * 365.25))
    return born


def _children(rng: random.Random, age: int, partner: bool, start: date) -> list[date]:
    if age < 22:
        return []
    p_parent = 0.15 if age < 28 else 0.55 if age < 40 else 0.7
    if not partner:
        p_parent *= 0.5
    if rng.random() >= p_parent:
        return []
    out = []
    for _ in range(rng.choices((1, 2, 3), (0.4, 0.45, 0.15))[0]):
        parent_age_at_birth = rng.uniform(22, min(45, age))
        child_age = age - parent_age_at_birth
        out.append(start - timedelta(days=int(child_age * 365.25)))
    return sorted(out)


def _products(rng: random.Random, age: int, income: float, children: list[date]) -> list[str]:
    owned = ["current_account"]
    if age >= 18 and rng.random() < 0.35 + min(0.2, income / 20_000):
        owned.append("credit_card")
    if 28 <= age <= 70 and rng.random() < 0.4:
        owned.append("mortgage")
    if 21 <= age <= 70 and rng.random() < 0.08:
        owned.append("car_loan")
    if age >= 30 and rng.random() < 0.3:
        owned.append("pension_plan")
    if children and rng.random() < 0.3:
        owned.append("child_savings")
    if rng.random() < 0.12 + min(0.2, income / 30_000):
        owned.append("investment_account")
    if age >= 18 and rng.random() < 0.8:
        owned.append("payment_package")
    return sorted(owned)


def make_customer(
    seed: int, index: int, start: date, params: PopulationParams | None = None
) -> Customer:
    """Customer ``index`` of the population ``seed``: the same inputs, the same customer."""
    params = params or PopulationParams()
    rng = random.Random(f"customer:{seed}:{index}")
    age = _age(rng)
    young = age == 17
    partner = age >= 22 and rng.random() < (0.35 if age < 30 else 0.65)
    income_factor = 0.55 if age < 25 else 1.15 if 40 <= age < 60 else 0.8 if age >= 67 else 1.0
    income = (
        params.median_monthly_income * income_factor * math.exp(rng.gauss(0.0, params.income_sigma))
    )
    if young:
        income = rng.uniform(0, 600)
    children = _children(rng, age, partner, start)
    sessions = min(
        params.max_sessions_per_week,
        params.median_sessions_per_week * math.exp(rng.gauss(0.0, params.sessions_sigma)),
    )
    if age >= 75:
        sessions *= 0.4
    app_share = min(1.0, max(0.0, rng.gauss(params.app_share_mean - (age - 45) / 100, 0.2)))
    anonymous_days = (
        rng.randint(1, params.max_anonymous_days)
        if rng.random() < params.anonymous_first_share
        else 0
    )
    return Customer(
        index=index,
        user_id=f"c{index:07d}",
        anonymous_id=f"{rng.getrandbits(64):016x}",
        birthday=_birthday(rng, age, start, young),
        partner=partner,
        children=children,
        monthly_income=round(income, 2),
        salary_day=rng.choice((1, 15, 20, 24, 25, 28)),
        balance=round(income * rng.uniform(0.2, 2.0), 2),
        spend_share=rng.uniform(0.55, 0.98),
        products=_products(rng, age, income, children),
        sessions_per_week=round(sessions, 3),
        app_share=round(app_share, 3),
        device=rng.choices(("mobile", "desktop", "tablet"), (0.62, 0.31, 0.07))[0],
        consent_personalization=rng.random() < params.consent_personalization,
        consent_marketing=rng.random() < params.consent_marketing,
        anonymous_days=anonymous_days,
    )


def make_population(
    seed: int, n: int, start: date, params: PopulationParams | None = None
) -> list[Customer]:
    return [make_customer(seed, i, start, params) for i in range(n)]
