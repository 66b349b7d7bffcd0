"""Experiment arms on the stable experiment id (issue #18, item 2): the arm a visitor had
before login is the arm they have after ``identify`` and ``alias``, on every channel, in
every session and after a restart; variants split the treated customers by weight; a
campaign that is not running shows nothing; the universal holdout keeps service messages."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbest.catalog.compiled import Catalog
from nextbest.decide import DecisionRequest, Suppression
from nextbest.engine import Engine
from nextbest.events.model import EventType
from nextbest.events.parse import parse_message
from nextbest.experiments import Arm, assign
from nextbest.experiments.assignment import HOLDOUT_SALT, bucket, variant_index
from nextbest.profile import Profile
from nextbest.profile.fold import fold
from nextbest.store.catalog_files import load_catalog
from nextbest.store.sqlite import sqlite_stores
from tests.support import (
    DAY,
    T0,
    batch,
    counter_ids,
    edited_catalog,
    identify,
    message,
    page,
    track,
)

PENSION = "https://bank.example/pension/check"
CAMPAIGN, SHARE = "pension_awareness", 0.1


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The targeted example bank: pension_check is eligible for anonymous pension readers."""
    folder = tmp_path_factory.mktemp("targeted")
    return load_catalog(edited_catalog(folder, {}, targeted=True))


def split_pair(anon_arm: Arm, user_arm: Arm, salt: str = CAMPAIGN) -> tuple[str, str]:
    """An anonymousId and a userId the hash puts in different arms: before the fix, logging
    in moved the visitor from ``anon_arm`` to ``user_arm``."""
    anon = next(
        f"dev{n}" for n in itertools.count() if assign(f"anon:dev{n}", salt, SHARE) is anon_arm
    )
    user = next(f"u{n}" for n in itertools.count() if assign(f"u{n}", salt, SHARE) is user_arm)
    return anon, user


def arm_of(decision, offer: str = "pension_check") -> Arm | None:
    """The arm ``decision`` put the customer in for ``offer``'s campaign (None: not decided)."""
    if any(i.offer_id == offer for i in decision.items):
        return Arm.TREATMENT
    if any(e.offer_id == offer and e.why is Suppression.CONTROL for e in decision.excluded):
        return Arm.CONTROL
    return None


def hero(engine: Engine, **who: str):
    return engine.decide(DecisionRequest(placement="home_feed"), **who)


@pytest.mark.parametrize(
    ("anon_arm", "user_arm"), [(Arm.CONTROL, Arm.TREATMENT), (Arm.TREATMENT, Arm.CONTROL)]
)
def test_the_arm_before_login_is_kept_after_identify_alias_and_restart(
    catalog: Catalog, clock, tmp_path: Path, anon_arm: Arm, user_arm: Arm
) -> None:
    anon, user = split_pair(anon_arm, user_arm)
    path = tmp_path / "stable.sqlite"
    engine = Engine(catalog, sqlite_stores(path), clock, new_id=counter_ids())
    engine.ingest_batch(batch(*[page(PENSION, anon=anon, at=T0 - DAY + 60 * i) for i in range(3)]))
    assert arm_of(hero(engine, anonymous_id=anon)) is anon_arm
    # login on the web, then on the app: the same customer, the same arm
    engine.ingest_batch(batch(identify({"age": 40}, user=user, anon=anon, at=T0 - 600)))
    assert engine.profile(user).experiment_id == f"anon:{anon}"  # type: ignore[union-attr]
    assert arm_of(hero(engine, user_id=user)) is anon_arm
    assert arm_of(hero(engine, anonymous_id=anon)) is anon_arm  # the device, now stitched
    app = engine.decide(DecisionRequest(placement="app_home"), user_id=user)
    assert arm_of(app) in (anon_arm, None)
    # a new session on a second device
    clock.set(T0 + 3 * 3600)
    engine.ingest_batch(batch(identify({}, user=user, anon="tablet", at=T0 + 3 * 3600)))
    assert arm_of(hero(engine, anonymous_id="tablet")) is anon_arm
    # the bank says the userId was an old CRM id of customer "crm-new"
    engine.ingest_batch(batch(message("alias", previousId=user, user="crm-new", at=T0 + 4 * 3600)))
    assert arm_of(hero(engine, user_id="crm-new")) is anon_arm
    # a restart (from the snapshot, and from the log alone) keeps it
    engine.close()
    again = Engine(catalog, sqlite_stores(path), clock, new_id=counter_ids("e"))
    assert arm_of(hero(again, user_id="crm-new")) is anon_arm
    assert again.replay().identical
    again.close()


def test_a_customer_seen_first_with_the_user_id_keeps_the_user_id_s_arm(
    catalog: Catalog, make_engine: Callable[..., Engine]
) -> None:
    """Two histories merge: the earlier one's arm wins (a known customer on a new device)."""
    anon, user = split_pair(Arm.CONTROL, Arm.TREATMENT)
    engine = make_engine("memory", cat=catalog)
    engine.ingest_batch(
        batch(
            identify({"age": 55}, user=user, at=T0 - 5 * DAY),
            *[page(PENSION, anon=anon, at=T0 - DAY + 60 * i) for i in range(3)],
            identify({}, user=user, anon=anon, at=T0 - 600),
        )
    )
    assert engine.profile(user).experiment_id == user  # type: ignore[union-attr]
    assert arm_of(hero(engine, user_id=user)) is Arm.TREATMENT


def test_the_universal_holdout_is_kept_through_login_and_keeps_service_messages(
    tmp_path: Path, make_engine: Callable[..., Engine]
) -> None:
    cat = load_catalog(
        edited_catalog(
            tmp_path,
            {"policy.yaml": [("holdout_share: 0.0", "holdout_share: 0.5")]},
            targeted=True,
        )
    )
    anon = next(f"h{i}" for i in range(1000) if bucket(f"anon:h{i}", HOLDOUT_SALT) < 0.5)
    user = next(f"v{i}" for i in range(1000) if bucket(f"v{i}", HOLDOUT_SALT) >= 0.5)
    engine = make_engine("memory", cat=cat)
    engine.ingest_batch(
        batch(
            *[
                page("https://bank.example/mortgages/rates", anon=anon, at=T0 - i * 60)
                for i in range(6)
            ],
            identify({"age": 35}, user=user, anon=anon, at=T0 - 10),
            track("Overdraft Started", {"balance": -5.0}, user=user, at=T0 - 5),
        )
    )
    d = hero(engine, user_id=user)
    assert d.items[0].offer_id == "overdraft_warning"  # a service message: still shown
    assert all(i.kind.value == "service" for i in d.items)
    held = {e.offer_id for e in d.excluded if e.why is Suppression.HOLDOUT}
    assert "mortgage_advice" in held


# ------------------------------------------------------------------ the fold's rule


def _event(kind: str, at: float, user: str | None, anon: str | None):
    fields = {"traits": {}} if kind == "identify" else {"properties": {"url": "/x"}}
    msg = message(kind, at=at, user=user, anon=anon, **fields)
    return parse_message(EventType(kind), orjson.dumps(msg), T0)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "u", "ua"])), min_size=1, max_size=8
    ),
    rng=st.randoms(use_true_random=False),
)
def test_the_experiment_id_is_the_earliest_event_s_key_in_any_fold_order(
    steps: list[tuple[int, str]], rng: random.Random, catalog: Catalog
) -> None:
    """A minimum over the events: folding them in any order (a live stitch folds a device's
    events late; a replay in log order) gives the same id."""
    who = {"a": (None, "a"), "b": (None, "b"), "u": ("u", None), "ua": ("u", "a")}
    events = [_event("identify" if w == "ua" else "page", T0 + t, *who[w]) for t, w in steps]
    expected = min((e.timestamp, e.user_id or f"anon:{e.anonymous_id}") for e in events)[1]
    for order in (events, list(reversed(events)), rng.sample(events, len(events))):
        profile = Profile(customer_id="u", user_id="u")
        for e in order:
            fold(profile, e, catalog.matcher, catalog.fold_config)
        assert profile.experiment_id == expected
        assert profile.experiment_key == expected


def test_a_profile_without_events_is_keyed_by_its_customer_id() -> None:
    assert Profile(customer_id="anon:x").experiment_key == "anon:x"


# ------------------------------------------------------------------ variants and status


VARIANTS = """    variants:
      - id: income
        weight: 3
        content:
          pension_check:
            web: {title: "What will you live on at 67?"}
      - id: plain
"""


def test_variants_split_treated_customers_by_weight_and_show_their_content(
    tmp_path: Path, make_engine: Callable[..., Engine]
) -> None:
    cat = load_catalog(
        edited_catalog(
            tmp_path,
            {
                "campaigns.yaml": [
                    ("    offers: [pension_check]\n", "    offers: [pension_check]\n" + VARIANTS)
                ]
            },
            targeted=True,
        )
    )
    engine = make_engine("memory", cat=cat)
    seen: dict[str, str] = {}
    for n in range(120):
        anon = f"visitor{n}"
        engine.ingest_batch(batch(*[page(PENSION, anon=anon, at=T0 - 60 * i) for i in range(3)]))
        d = hero(engine, anonymous_id=anon)
        item = next((i for i in d.items if i.offer_id == "pension_check"), None)
        if item is None:
            assert arm_of(d) is Arm.CONTROL
            continue
        assert item.variant is not None
        seen[anon] = item.variant
        title = item.content["title"]
        if item.variant == "income":
            assert title == "What will you live on at 67?"
        else:
            assert title == cat.offers["pension_check"].spec.content["web"].title  # type: ignore[index]
        again = hero(engine, anonymous_id=anon)
        assert next(i.variant for i in again.items if i.offer_id == "pension_check") == item.variant
    share = sum(v == "income" for v in seen.values()) / len(seen)
    assert 0.6 < share < 0.9  # weight 3 of 4


def test_variant_index_splits_the_treated_buckets_by_weight() -> None:
    bounds = (0.25, 1.0)
    picks = [variant_index(0.1 + 0.9 * k / 10_000, 0.1, bounds) for k in range(10_000)]
    assert sum(p == 0 for p in picks) == pytest.approx(2_500, abs=2)
    assert variant_index(0.999999, 0.1, bounds) == 1


@pytest.mark.parametrize("status", ["draft", "paused", "stopped"])
def test_a_campaign_that_is_not_running_shows_nothing(
    tmp_path: Path, make_engine: Callable[..., Engine], status: str
) -> None:
    cat = load_catalog(
        edited_catalog(
            tmp_path,
            {
                "campaigns.yaml": [
                    (
                        "    offers: [pension_check]\n",
                        f"    offers: [pension_check]\n    status: {status}\n",
                    )
                ]
            },
            targeted=True,
        )
    )
    engine = make_engine("memory", cat=cat)
    engine.ingest_batch(batch(*[page(PENSION, anon="p", at=T0 - 60 * i) for i in range(3)]))
    d = hero(engine, anonymous_id="p")
    assert all(i.offer_id != "pension_check" for i in d.items)
    assert any(
        e.offer_id == "pension_check" and e.why is Suppression.OUT_OF_SCHEDULE for e in d.excluded
    )
