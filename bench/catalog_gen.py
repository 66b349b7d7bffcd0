"""A generated benchmark catalog and a synthetic customer population (seeded, deterministic).

The catalog is the example bank's topics and contact policy plus generated segments, offers,
campaigns and placements, written as YAML into a folder and loaded with the real
``nextbest.store.catalog_files.load_catalog``. The benchmark placement ``bench_feed`` (web,
3 slots, both kinds) sees the generated web offers; app-, email- and advisor-only offers are
filtered out of it by channel, and the commercial-only ``web_sidebar`` placement exists too.

``write_catalog(..., learning=...)`` gives ``bench_feed`` a ``learning:`` block (``LEARNING``:
contextual with epsilon-greedy 0.05, the exploration of every earlier decide figure, or
with Thompson sampling, the example bank's since 2026-12-07; or bayes with Thompson sampling);
``broaden`` ORs an age-band segment into that share of the commercial web offers'
eligibility rules (drawn from a separate seeded generator, so ``broaden=0`` writes exactly
the catalog it always wrote), to raise the candidates scored per decision without adding
rules. Only commercial offers: service messages come first in a placement, and more eligible
ones would crowd out the commercial slots where exploration happens.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from _common import DAY, EXAMPLE_CATALOG, T0
from nextbest.events.model import Event, EventType

BENCH_PLACEMENT = "bench_feed"
#: the ``learning:`` block of ``bench_feed`` per ``--learning`` choice (``none``: no block)
LEARNING: dict[str, dict[str, Any]] = {
    "contextual": {"model": "contextual", "explore": {"type": "epsilon_greedy", "epsilon": 0.05}},
    "contextual_thompson": {"model": "contextual", "explore": {"type": "thompson", "n_sim": 200}},
    "bayes": {"model": "bayes", "explore": {"type": "thompson", "n_sim": 200}},
    "bayes_logistic": {"model": "bayes_logistic", "explore": {"type": "thompson", "n_sim": 200}},
    "bayes_logistic_epsilon": {
        "model": "bayes_logistic",
        "explore": {"type": "epsilon_greedy", "epsilon": 0.05},
    },
}
#: the narrow age-band segments ``broaden`` ORs into offer rules (not the 18-130 band)
AGE_BANDS = ("s_age_18_26", "s_age_26_35", "s_age_35_50", "s_age_50_67", "s_age_67_130")

#: topic -> (URL path stems, product that means "already owns it")
TOPIC_PAGES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "mortgage": (
        ("/mortgages", "/mortgages/rates", "/mortgages/first-home", "/hypotheek"),
        "mortgage",
    ),
    "car_loan": (("/loans/car", "/loans/car/calculator", "/loans/car/electric"), "car_loan"),
    "pension": (("/pension", "/pension/plan", "/retirement/income"), "pension_plan"),
    "child_savings": (("/savings/children", "/savings/children/bonus"), "child_savings"),
    "investing": (("/investing", "/investing/funds", "/investing/etf"), "investment_account"),
    "cards": (("/cards", "/cards/gold", "/cards/travel"), "credit_card"),
    "overdraft": (("/help/overdraft",), None),
    "payments": (("/payments", "/payments/packages", "/youth"), "payment_package"),
}
TOPICS = tuple(TOPIC_PAGES)
OTHER_PAGES = ("/", "/accounts", "/accounts/transactions", "/help", "/contact", "/login")
PRODUCTS = (*tuple(p for _, p in TOPIC_PAGES.values() if p), "current_account", "savings")
LIFE_EVENTS = ("moved", "child_born", "married", "new_job", "turning_18", "retired")
LIFECYCLES = ("young_adult", "starter", "family", "established", "pre_retirement", "retired")


# ------------------------------------------------------------------ catalog
def _segments(rng: random.Random) -> list[dict[str, Any]]:
    rules: list[tuple[str, str]] = []
    for t in TOPICS:  # 8 interest-window segments
        d = rng.choice((7, 14, 30))
        k = rng.randint(1, 3)
        rules.append((f"{t}_{d}d_{k}", f"interest.{t}.count_{d}d >= {k}"))
    for t in TOPICS:  # 8 decayed-score segments
        s = rng.choice((0.5, 1.0, 2.0))
        rules.append((f"{t}_score", f"interest.{t}.score >= {s}"))
    for t in rng.sample(TOPICS, 4):  # 4 trend segments
        rules.append((f"{t}_trending", f'interest.{t}.trend in ["new", "rising"]'))
    for lo, hi in ((18, 26), (26, 35), (35, 50), (50, 67), (67, 130), (18, 130)):  # 6 age bands
        rules.append((f"age_{lo}_{hi}", f"profile.age >= {lo} && profile.age < {hi}"))
    rules += [
        ("family_phase", 'profile.lifecycle == "family"'),
        ("engaged", 'profile.engagement in ["medium", "high"]'),
        ("has_card", '"credit_card" in products'),
        ("renter_30plus", '!("mortgage" in products) && profile.age >= 30'),
        ("multi_product", "products.size() >= 3"),
        ("saver", '"investment_account" in products || "pension_plan" in products'),
        ("high_income", "has(traits.income) && traits.income >= 60000"),
        ("parent", "has(traits.children) && traits.children > 0"),
        ("premium", 'has(traits.tier) && traits.tier != "mass"'),
        ("low_income_adult", "has(traits.income) && traits.income < 25000 && profile.age >= 18"),
        ("homeowner", "has(traits.homeowner) && traits.homeowner"),
        ("wealthy_balance", "profile.balance >= 10000.0"),
        ("low_balance", "profile.overdrawn || profile.balance < 100.0"),
        (
            "mortgage_funnel",
            '"mortgage" in profile.funnel && '
            'profile.funnel.mortgage in ["considering", "applying"]',
        ),
        ("applying_any", 'profile.funnel.exists(t, profile.funnel[t] == "applying")'),
        (
            "moved_recently",
            'profile.life_events.exists(e, e.type == "moved" && e.days_ago <= 90.0)',
        ),
        ("new_parent", 'profile.life_events.exists(e, e.type == "child_born")'),
        ("regular_visitor", "profile.sessions >= 3 && profile.events >= 8"),
        ("daytime", "now.hour >= 8 && now.hour < 22"),
        ("marketing_ok", "!has(profile.consent.marketing) || profile.consent.marketing"),
        ("home_buyer", "interest.mortgage.count_30d + interest.investing.count_30d >= 3"),
        ("card_recent", "interest.cards.total > 0 && interest.cards.last_seen_days <= 7.0"),
        ("pension_age", "interest.pension.total >= 2 && profile.age >= 45"),
        ("car_shopper", "interest.car_loan.count_7d >= 1 || interest.car_loan.count_30d >= 3"),
    ]
    assert len(rules) == 50, len(rules)
    return [{"id": f"s_{name}", "name": name.replace("_", " "), "rule": r} for name, r in rules]


def _offer_rule(
    rng: random.Random,
    topic: str | None,
    kind: str,
    seg_ids: list[str],
    by_topic: dict[str, list[str]],
) -> str:
    """An eligibility rule: roughly one in five passes for a typical customer."""
    age_seg = rng.choice([s for s in seg_ids if s.startswith("s_age_")])
    other = rng.choice(seg_ids)
    product = TOPIC_PAGES[topic][1] if topic else None
    if kind == "service":
        return rng.choice(
            (
                "profile.overdrawn",
                "profile.balance < 250.0 && profile.age >= 18",
                f"segments.{other} && segments.s_engaged",
                "segments.s_moved_recently || segments.s_new_parent",
                f'profile.lifecycle == "{rng.choice(LIFECYCLES)}" && profile.events >= 6',
                "segments.s_low_income_adult && segments.s_regular_visitor",
            )
        )
    if topic is None:
        return rng.choice(
            (
                f"segments.{age_seg} && segments.s_marketing_ok && segments.s_engaged",
                f"segments.{other} && segments.{rng.choice(seg_ids)}",
                "segments.s_premium && profile.balance >= 5000.0",
            )
        )
    tsegs = by_topic[topic]
    not_owned = f'!("{product}" in products)' if product else "!profile.overdrawn"
    d = rng.choice((14, 30, 90))
    return rng.choice(
        (
            f"segments.{rng.choice(tsegs)} || segments.{age_seg}",
            f"interest.{topic}.count_{d}d >= 1 && {not_owned}",
            f"segments.{rng.choice(tsegs)} || (segments.{other} && segments.{age_seg})",
            f"interest.{topic}.score >= {rng.choice((0.5, 1.0))} || "
            f'profile.lifecycle == "{rng.choice(LIFECYCLES)}"',
            f'profile.lifecycle == "{rng.choice(LIFECYCLES)}" || interest.{topic}.total >= 2',
            f"has(traits.income) && traits.income >= {rng.choice((45000, 60000, 80000))} "
            f"&& profile.age >= {rng.choice((18, 30, 40))}",
            f"segments.{rng.choice(tsegs)} && {not_owned} && segments.s_marketing_ok",
        )
    )


def write_catalog(
    folder: Path,
    seed: int,
    placement_offers: int,
    other_offers: int,
    *,
    learning: str = "none",
    broaden: float = 0.0,
) -> dict[str, int]:
    """Write the benchmark catalog YAML into ``folder``; returns what it holds.

    ``learning``: ``none`` or a key of ``LEARNING`` for ``bench_feed``; ``broaden``: the
    share of commercial web offers whose rule also passes for one age band (see the module
    docstring).
    """
    rng = random.Random(seed)
    extra = random.Random(seed * 7 + 1)  # broadening only: leaves ``rng``'s draws alone
    broadened = 0
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE_CATALOG / "topics.yaml", folder / "topics.yaml")
    shutil.copy(EXAMPLE_CATALOG / "policy.yaml", folder / "policy.yaml")

    segments = _segments(rng)
    seg_ids = [s["id"] for s in segments]
    by_topic = {t: [s for s in seg_ids if s.startswith(f"s_{t}_")] for t in TOPICS}

    offers: list[dict[str, Any]] = []
    commercial: list[str] = []
    for i in range(placement_offers + other_offers):
        in_web = i < placement_offers
        kind = "service" if rng.random() < 0.2 else "commercial"
        topic = None if rng.random() < 0.08 else TOPICS[i % len(TOPICS)]
        oid = f"o{i:03d}_{topic or 'general'}_{kind[:4]}"
        body = {"title": f"Offer {i}", "body": "Generated benchmark offer.", "cta": "More"}
        if in_web:
            content = {"web": {**body, "url": f"/offers/{i}"}}
            if rng.random() < 0.5:
                content["app"] = body
        else:
            content = {rng.choice(("app", "email", "advisor")): body}
        offer: dict[str, Any] = {
            "id": oid,
            "name": f"Generated offer {i}",
            "kind": kind,
            "value": rng.choice((20, 40, 60, 80, 120, 150, 200, 400)),
            "priority": rng.randint(0, 3),
            "eligibility": _offer_rule(rng, topic, kind, seg_ids, by_topic),
            "kpi_event": "Product Opened" if kind == "commercial" else "Promotion Clicked",
            "content": content,
        }
        if in_web and kind == "commercial" and broaden > 0.0 and extra.random() < broaden:
            offer["eligibility"] = f"({offer['eligibility']}) || segments.{extra.choice(AGE_BANDS)}"
            broadened += 1
        if topic:
            offer["topic"] = topic
        if rng.random() < 0.3:
            offer["prior_ctr"] = round(rng.uniform(0.005, 0.05), 4)
        if rng.random() < 0.1:
            offer["valid_from"] = "2026-01-01"
            offer["valid_until"] = "2027-06-30"
        if kind == "service" and rng.random() < 0.5:
            offer["reason"] = "a service message for you"
        offers.append(offer)
        if kind == "commercial":
            commercial.append(oid)

    rng.shuffle(commercial)
    campaigns: list[dict[str, Any]] = []
    owned = commercial[: int(len(commercial) * 0.8)]
    for c in range(0, len(owned), 3):
        group = owned[c : c + 3]
        camp: dict[str, Any] = {
            "id": f"camp_{c // 3:02d}",
            "name": f"Campaign {c // 3}",
            "owner": "marketing@bank.example",
            "hypothesis": {
                "observation": "Generated benchmark campaign.",
                "change": "Show its offers.",
                "expected": "More products opened.",
            },
            "objective": "cross_sell",
            "category": "offer",
            "kpi": "Product Opened",
            "offers": group,
            "weight": rng.choice((0.8, 1.0, 1.0, 1.2, 1.5)),
            "control_share": rng.choice((0.05, 0.1, 0.1, 0.2)),
        }
        if rng.random() < 0.3:
            camp["start"] = "2026-06-01"
            camp["end"] = "2027-03-31"
        campaigns.append(camp)

    bench: dict[str, Any] = {
        "id": BENCH_PLACEMENT,
        "channel": "web",
        "slots": 3,
        "description": "Benchmark feed",
    }
    if learning != "none":
        bench["learning"] = LEARNING[learning]
    placements = [
        bench,
        {"id": "web_sidebar", "channel": "web", "slots": 2, "kinds": ["commercial"]},
        {"id": "app_home", "channel": "app", "slots": 2},
        {"id": "email_digest", "channel": "email", "slots": 3, "kinds": ["commercial"]},
        {"id": "advisor_panel", "channel": "advisor", "slots": 5},
    ]

    def dump(name: str, data: dict[str, Any]) -> None:
        (folder / name).write_text(yaml.safe_dump(data, sort_keys=False, width=120))

    dump("segments.yaml", {"segments": segments})
    dump("offers.yaml", {"offers": offers})
    dump("campaigns.yaml", {"campaigns": campaigns})
    dump("placements.yaml", {"placements": placements})
    return {
        "segments": len(segments),
        "offers": len(offers),
        "offers_web": placement_offers,
        "offers_other_channels": other_offers,
        "campaigns": len(campaigns),
        "placements": len(placements),
        "offers_broadened": broadened,
    }


# ------------------------------------------------------------------ population
@dataclass
class Customer:
    """Hidden facts of one synthetic customer, from which events are generated."""

    user_id: str
    anonymous_id: str
    age: int
    traits: dict[str, Any]
    interests: list[str]
    offer_ids_by_topic: dict[str, list[str]] = field(default_factory=dict)


def make_customer(rng: random.Random, index: int) -> Customer:
    age = rng.randint(16, 84)
    traits: dict[str, Any] = {
        "income": int(rng.lognormvariate(10.6, 0.5)),
        "tier": rng.choices(("mass", "premium", "private"), (0.8, 0.17, 0.03))[0],
        "city": rng.choice(("Amsterdam", "Utrecht", "Rotterdam", "Eindhoven", "Groningen")),
    }
    if rng.random() < 0.6:
        born_year = 2026 - age
        traits["birthday"] = f"{born_year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    else:
        traits["age"] = age
    if 25 <= age <= 55 and rng.random() < 0.45:
        traits["children"] = rng.randint(1, 3)
    if rng.random() < 0.4:
        traits["homeowner"] = rng.random() < 0.6
    products = ["current_account"] + [p for p in PRODUCTS if rng.random() < 0.15]
    traits["products"] = sorted(set(products))
    r = rng.random()
    if r < 0.05:
        traits["consent"] = {"marketing": False}
    elif r < 0.07:
        traits["consent"] = {"personalization": False, "marketing": True}
    traits["balance"] = round(rng.lognormvariate(7.5, 1.4) - (800 if rng.random() < 0.06 else 0), 2)
    interests = rng.sample(TOPICS, rng.choice((1, 1, 2, 2, 3)))
    uid = f"c{index:07d}"
    return Customer(uid, f"a{index:07d}", age, traits, interests)


def customer_messages(
    rng: random.Random,
    c: Customer,
    n_events: int,
    offer_ids: dict[str, list[str]],
    horizon_days: float = 60.0,
) -> list[dict[str, Any]]:
    """Segment-spec message fields (snake-free, as SDKs send) for one customer, oldest first.

    The first message is an ``identify`` with the customer's traits; the rest are page views
    (mostly on pages of the customer's interest topics), track events and trait updates.
    """
    times = sorted(T0 - rng.random() ** 1.5 * horizon_days * DAY for _ in range(n_events))
    out: list[dict[str, Any]] = [{"type": "identify", "at": times[0] - 60.0, "traits": c.traits}]
    for when in times:
        r = rng.random()
        topic = rng.choice(c.interests) if rng.random() < 0.8 else rng.choice(TOPICS)
        pages, product = TOPIC_PAGES[topic]
        if r < 0.62:
            url = rng.choice(pages) if rng.random() < 0.8 else rng.choice(OTHER_PAGES)
            out.append(
                {"type": "page", "at": when, "url": url, "channel": rng.choice(("web", "app"))}
            )
        elif r < 0.95:
            t = rng.random()
            if t < 0.22:
                ev, props = "Calculator Used", {"topic": topic}
            elif t < 0.30 and product:
                ev, props = "Application Started", {"product": product}
            elif t < 0.50:
                bal = round(c.traits["balance"] + rng.uniform(-500, 500), 2)
                ev = "Transaction Posted"
                props = {
                    "amount": round(rng.uniform(-200, 200), 2),
                    "currency": "EUR",
                    "balance": bal,
                }
            elif t < 0.72 and offer_ids.get(topic):
                ev = "Promotion Viewed" if rng.random() < 0.85 else "Promotion Clicked"
                props = {
                    "promotion_id": rng.choice(offer_ids[topic]),
                    "decision_id": f"d{rng.getrandbits(40):x}",
                }
            elif t < 0.78:
                ev, props = "Life Event", {"type": rng.choice(LIFE_EVENTS)}
            elif t < 0.86:
                ev, props = "Salary Received", {"amount": round(rng.uniform(1800, 7000), 2)}
            elif t < 0.93:
                ev, props = "Products Searched", {"query": topic.replace("_", " ")}
            else:
                ev, props = "Newsletter Opened", {"issue": rng.randint(1, 50)}
            out.append({"type": "track", "at": when, "event": ev, "properties": props})
        else:
            bal = round(c.traits["balance"] + rng.uniform(-300, 300), 2)
            out.append({"type": "identify", "at": when, "traits": {"balance": bal}})
    return out


def to_event(c: Customer, m: dict[str, Any], message_id: str) -> Event:
    """One generated message as the normalized Event that parse would produce."""
    kind = m["type"]
    common: dict[str, Any] = {
        "message_id": message_id,
        "timestamp": m["at"],
        "received_at": m["at"] + 0.2,
        "user_id": c.user_id,
        "anonymous_id": c.anonymous_id,
    }
    if kind == "page":
        return Event(
            type=EventType.PAGE,
            properties={"url": m["url"]},
            context={"channel": m["channel"]},
            **common,
        )
    if kind == "track":
        return Event(
            type=EventType.TRACK,
            name=m["event"],
            properties=m["properties"],
            context={"channel": "web"},
            **common,
        )
    return Event(type=EventType.IDENTIFY, traits=dict(m["traits"]), **common)


def offer_ids_by_topic(offer_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for oid in offer_ids:
        for t in TOPICS:
            if f"_{t}_" in oid:
                out.setdefault(t, []).append(oid)
    return out
