"""The synthetic bank's web site and app: its pages per product area, and product codes.

This is the site's own map (as a real bank's CMS would have it); the example catalog's topic
URL patterns are configured to recognise it, as a bank's catalog would be.
"""

from __future__ import annotations

__all__ = ["CALCULATORS", "GENERAL_PAGES", "PRODUCT_OF", "SEARCHES", "TOPIC_PAGES"]

TOPIC_PAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "mortgage": (
        ("/mortgages/rates", "Mortgage rates"),
        ("/mortgages/calculator", "How much can I borrow?"),
        ("/mortgages/first-home", "Buying your first home"),
        ("/mortgages/advice", "Mortgage advice"),
    ),
    "car_loan": (
        ("/loans/car", "Car loan"),
        ("/loans/car/rates", "Car loan rates"),
        ("/loans/car/calculator", "Car loan calculator"),
    ),
    "pension": (
        ("/pension/overview", "Your pension"),
        ("/retirement/planning", "Plan your retirement"),
        ("/pension/calculator", "Pension calculator"),
    ),
    "child_savings": (
        ("/savings/children", "Saving for your child"),
        ("/savings/children/rates", "Child savings rates"),
    ),
    "investing": (("/investing/funds", "Funds"), ("/investing/start", "Start investing")),
    "cards": (("/cards", "Credit cards"), ("/cards/compare", "Compare cards")),
    "overdraft": (("/help/overdraft", "Overdraft help"),),
    "payments": (("/youth/turning-18", "Turning 18"), ("/payments/packages", "Payment packages")),
    "personal_loan": (
        ("/loans/personal", "Personal loan"),
        ("/loans/personal/calculator", "What would my loan cost?"),
    ),
    "travel_insurance": (
        ("/insurance/travel", "Travel insurance"),
        ("/insurance/travel/cover", "What travel insurance covers"),
    ),
    "home_insurance": (
        ("/insurance/home", "Home insurance"),
        ("/insurance/home/quote", "Home insurance quote"),
    ),
    "savings": (("/savings/accounts", "Savings accounts"), ("/savings/rates", "Savings rates")),
}
GENERAL_PAGES: tuple[tuple[str, str], ...] = (
    ("/", "Home"),
    ("/accounts", "Accounts"),
    ("/transfers", "Transfers"),
    ("/accounts/statements", "Statements"),
    ("/help/contact", "Contact"),
    ("/savings", "Savings"),
)
CALCULATORS = frozenset({"mortgage", "car_loan", "pension", "investing", "personal_loan"})
PRODUCT_OF: dict[str, str] = {
    "mortgage": "mortgage",
    "car_loan": "car_loan",
    "pension": "pension_plan",
    "child_savings": "child_savings",
    "investing": "investment_account",
    "cards": "credit_card",
    "payments": "payment_package",
    "personal_loan": "personal_loan",
    "travel_insurance": "travel_insurance",
    "home_insurance": "home_insurance",
    "savings": "savings_account",
    # the zoo's shelf (``catalogs/shelf.yaml``): products without pages on the site
    "life_insurance": "life_insurance",
    "car_insurance": "car_insurance",
    "travel_money": "travel_money",
    "premium_account": "premium_account",
}
SEARCHES: dict[str, tuple[str, ...]] = {
    "mortgage": ("mortgage rates", "how much can i borrow", "remortgage"),
    "car_loan": ("car loan", "finance a car"),
    "pension": ("pension", "retirement age"),
    "child_savings": ("savings account child",),
    "investing": ("invest", "funds"),
    "cards": ("credit card", "travel card"),
    "overdraft": ("overdraft", "negative balance"),
    "payments": ("payment package 18",),
    "personal_loan": ("personal loan", "loan for renovation"),
    "travel_insurance": ("travel insurance", "insurance abroad"),
    "home_insurance": ("home insurance", "contents insurance"),
    "savings": ("savings rate", "savings account"),
}
