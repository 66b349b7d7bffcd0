"""The candidate filters (``decide.pipeline._filter_candidates``, step 4) written out in one
loop for speed hold to the contact policy as ``decide.ranking`` states it.

Differential: on seeded random profiles, requests and audiences, over every offer placement
of the example bank and of the generated 150-rule benchmark catalog, the loop excludes the
same offers for the same first reason, and passes the same offers (with the same interest
views and urgency), as the filters written from ``ranking``'s functions one by one
(``reference`` below: the module docstring's order).
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec

from nextbest.catalog.compiled import Catalog, CompiledOffer
from nextbest.catalog.model import PlacementKind
from nextbest.decide import pipeline, ranking
from nextbest.decide.model import DecisionRequest, Excluded
from nextbest.decide.reasons import Suppression
from nextbest.profile.model import OfferHistory, Profile
from nextbest.rules.expression import RuleOutcome
from nextbest.store.catalog_files import load_catalog
from tests.support import DAY, EXAMPLE_CATALOG, T0
from tests.unit.test_insights import fee, folded
from tests.unit.test_rule_closures import random_profile

#: what the cases must reach, each at least once (the rest of ``Suppression`` is not a
#: filter: a control offer, one outranked, no advisor)
EVERY_FILTER = (
    Suppression.ON_PAGE,
    Suppression.OUT_OF_SCHEDULE,
    Suppression.SECURITY,
    Suppression.NO_CONSENT,
    Suppression.HOLDOUT,
    Suppression.OWNED,
    Suppression.CAPPED,
    Suppression.RECENTLY_CLICKED,
    Suppression.DISMISSED,
    Suppression.FATIGUE,
    Suppression.FADED,
    Suppression.INELIGIBLE,
    Suppression.RULE_ERROR,
)


def excluded_by(
    offer: CompiledOffer,
    view: dict[str, Any] | None,
    urgent: bool,
    rules: Any,
    catalog: Catalog,
    profile: Profile,
    request: DecisionRequest,
    now: float,
    audience: Any,
    owned: set[str],
    fatigued: bool,
) -> Suppression | None:
    """The first filter that excludes ``offer``, each from ``ranking``'s functions."""
    if offer.id in request.exclude:
        return Suppression.ON_PAGE
    if not offer.live_at(now):
        return Suppression.OUT_OF_SCHEDULE
    policy = catalog.policy
    marketing = ranking.marketing(offer)
    if marketing:
        if audience.flagged:
            return Suppression.SECURITY
        if not audience.marketing:
            return Suppression.NO_CONSENT
        if audience.in_holdout:
            return Suppression.HOLDOUT
        if offer.topic in owned:
            return Suppression.OWNED
    if ranking.contact_capped(urgent, offer.insight):
        history = profile.offers.get(offer.id)
        if history is not None and (block := ranking.contact_block(history, policy, now)):
            return block
    if marketing:
        if fatigued:
            return Suppression.FATIGUE
        if view is not None and ranking.faded(view["total"], view["score"], policy):
            return Suppression.FADED
    outcome = rules.env.check(offer.rule)
    if outcome is RuleOutcome.FALSE:
        return Suppression.INELIGIBLE
    if outcome is RuleOutcome.ERROR:
        return Suppression.RULE_ERROR
    return None


def reference(
    catalog: Catalog,
    profile: Profile,
    request: DecisionRequest,
    now: float,
    audience: Any,
    views: Any,
) -> tuple[list[tuple[CompiledOffer, dict[str, Any] | None, bool]], list[Excluded]]:
    policy = catalog.policy
    seen = views.commercial.seen
    owned = pipeline._owned_topics(seen, catalog) if policy.suppress_owned else set()
    shown = ranking.commercial_shown_today(profile.offers, catalog.commercial_offers, now)
    fatigued = ranking.fatigued(shown, policy)
    eligible: list[tuple[CompiledOffer, dict[str, Any] | None, bool]] = []
    excluded: list[Excluded] = []
    for offer in catalog.by_placement[request.placement]:
        rules = views.of(offer)
        view = rules.topic_view(offer.topic) if offer.topic else None
        trigger = offer.urgent_rule
        urgent = trigger is not None and rules.env.check(trigger) is RuleOutcome.TRUE
        why = excluded_by(
            offer, view, urgent, rules, catalog, profile, request, now, audience, owned, fatigued
        )
        if why is None:
            eligible.append((offer, view, urgent))
        else:
            excluded.append(Excluded(offer.id, why))
    return eligible, excluded


def busy_day(rng: random.Random) -> OfferHistory:
    """An offer shown a few times in the hours before ``T0``."""
    shown = sorted(T0 - rng.uniform(0, 0.9) * DAY for _ in range(rng.randrange(1, 4)))
    return OfferHistory(impressions=shown, total_impressions=len(shown))


def assert_filters_agree(
    catalog: Catalog, profiles: int, seed: int
) -> Counter[Suppression | str | None]:
    """Both filters on the same random cases, in every offer placement; what excluded the
    offers, counted (``None``: passed; ``"urgent"``; ``"split views"``: decisions whose
    service and commercial views differ)."""
    rng = random.Random(seed)
    topics, offers = list(catalog.topics), list(catalog.offers)
    selling = sorted(catalog.commercial_offers)
    placements = [p for p in catalog.placements.values() if p.kind is not PlacementKind.ADVISOR]
    reasons: Counter[Suppression | str | None] = Counter()
    fees = folded(catalog, *(fee(T0 - d * DAY) for d in (40, 20, 5)))
    for _ in range(profiles):
        profile = random_profile(rng, topics, offers)
        now = T0 + rng.choice((0.0, 0.5 * DAY, rng.uniform(-400, 400) * DAY))
        if rng.random() < 0.3:  # overdraft fees: the fee insight's trigger holds
            profile = msgspec.structs.replace(profile, banking=fees.banking)
        if rng.random() < 0.3:  # a busy day: commercial impressions in the last hours
            now = T0
            busy = {o: busy_day(rng) for o in rng.sample(selling, min(len(selling), 6))}
            profile = msgspec.structs.replace(profile, offers={**profile.offers, **busy})
        if rng.random() < 0.25:  # no personalization: service and commercial views differ
            consent = {"marketing": True, "personalization": False}
            profile = msgspec.structs.replace(profile, consent=consent)
        flagged, holdout = rng.random() < 0.05, rng.random() < 0.05
        for placement in placements:
            exclude = frozenset(o for o in offers if rng.random() < 0.05)
            request = DecisionRequest(placement=placement.id, exclude=exclude)
            audience = pipeline._audience(catalog, profile, now)
            audience = msgspec.structs.replace(
                audience, flagged=flagged, in_holdout=audience.in_holdout or holdout
            )
            views = pipeline._views(catalog, profile, request, now, audience)
            got = pipeline._filter_candidates(catalog, profile, request, now, audience, views)
            want = reference(
                catalog,
                profile,
                request,
                now,
                audience,
                pipeline._views(catalog, profile, request, now, audience),
            )
            assert [(o.id, v, u) for o, v, u in got[0]] == [(o.id, v, u) for o, v, u in want[0]]
            assert got[1] == want[1]
            reasons.update(e.why for e in got[1])
            reasons[None] += len(got[0])  # passed
            reasons["urgent"] += sum(urgent for _, _, urgent in got[0])
            reasons["split views"] += views.service is not views.commercial
    return reasons


def test_the_example_banks_filters_hold_to_the_contact_policy(tmp_path: Path) -> None:
    """The example bank, one offer's rule and the overdraft warning's trigger made to err
    where a trait is missing or odd (``traits.children`` without ``has()``: a trigger that
    errs is not urgent); it has no schedules."""
    shutil.copytree(EXAMPLE_CATALOG, tmp_path / "bank")
    offers = tmp_path / "bank" / "offers.yaml"
    text = offers.read_text()
    assert text.count("eligibility: segments.car_intent && segments.adult") == 1
    assert text.count("urgent: profile.overdrawn\n") == 1
    offers.write_text(
        text.replace(
            "eligibility: segments.car_intent && segments.adult",
            "eligibility: segments.car_intent && traits.children > 0",
        ).replace(
            "urgent: profile.overdrawn\n", "urgent: profile.overdrawn && traits.children >= 0\n"
        )
    )
    reasons = assert_filters_agree(load_catalog(tmp_path / "bank"), 400, 20261208)
    for why in (*EVERY_FILTER, None):
        assert reasons[why] or why is Suppression.OUT_OF_SCHEDULE, (why, reasons)
    assert reasons["urgent"], reasons  # the overdraft warning while overdrawn
    assert reasons["split views"], reasons


def test_the_generated_catalogs_filters_hold_to_the_contact_policy(
    catalog_gen: ModuleType, tmp_path: Path
) -> None:
    catalog_gen.write_catalog(tmp_path, seed=7, placement_offers=60, other_offers=40, broaden=0.3)
    reasons = assert_filters_agree(load_catalog(tmp_path), 200, 11)
    for why in (*EVERY_FILTER, None):
        assert reasons[why] or why is Suppression.RULE_ERROR, (why, reasons)
